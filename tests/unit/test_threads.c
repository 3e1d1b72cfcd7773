/* Several threads writing records through co_write, on one shared fd and on
 * fds of their own, while another thread runs the deadline flusher and the
 * flush-all calls. At the end every record must be on its wire whole, and
 * each thread's records in the order it wrote them.
 *
 * This is the test ThreadSanitizer checks: core's locking and the fake's
 * own locking must be free of races. The known-bug tests at the end replay,
 * step by step, an interleaving in which a record does get split. */
#include <errno.h>
#include <pthread.h>
#include <unistd.h>
#include <sched.h>
#include <semaphore.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "app.h"
#include "fake_sys.h"
#include "stream.h"

#define WRITERS 6
#define RECORDS 4000
#define SHARED_FD 10
/* Each writer's own fd, in a second fd table chunk, so that the writers
 * race to create it. */
#define OWN_FD(t) (CO_FD_CHUNK_SIZE + 100 + (t))

#define RECORD_MAGIC 0xc5
#define HEADER_SIZE 10
#define RECORD_MAX 6000

struct run {
	struct co_ctx *ctx;
	_Atomic int writers_done;
	_Atomic int failures;
	char failure[256];
	pthread_mutex_t failure_lock;
	_Atomic int on_pending_calls;
};

struct writer {
	struct run *run;
	int id;
	pthread_t thread;
};

static struct run *the_run;

static void record_failure(struct run *run, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Keeps the first failure's description; cmocka is not thread-safe, so
 * threads report here and the main thread asserts. */
static void record_failure(struct run *run, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&run->failure_lock);
	if (atomic_fetch_add(&run->failures, 1) == 0) {
		va_start(ap, fmt);
		vsnprintf(run->failure, sizeof(run->failure), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&run->failure_lock);
}

static unsigned char payload_byte(int thread, uint32_t seq, size_t i)
{
	return (unsigned char)(thread * 31 + seq * 7 + i * 13 + (i >> 8));
}

/* A record: magic, thread, sequence number, payload length, payload. */
static size_t make_record(unsigned char *buf, int thread, uint32_t seq, size_t payload)
{
	uint32_t len = (uint32_t)payload;
	size_t i;

	buf[0] = RECORD_MAGIC;
	buf[1] = (unsigned char)thread;
	memcpy(buf + 2, &seq, 4);
	memcpy(buf + 6, &len, 4);
	for (i = 0; i < payload; i++)
		buf[HEADER_SIZE + i] = payload_byte(thread, seq, i);
	return HEADER_SIZE + payload;
}

/* Mostly small records, some large enough to be sent with the queue, a few
 * larger than the queue. */
static size_t record_payload(unsigned *x)
{
	*x = *x * 1103515245u + 12345u;
	switch ((*x >> 16) % 20) {
	case 0:
		return 4096 + (*x >> 4) % 1500;
	case 1:
	case 2:
		return 1024 + (*x >> 4) % 2000;
	default:
		return (*x >> 4) % 200;
	}
}

/* Writes one whole record on the shared fd, as the shim does (core, or the
 * "libc" call when core hands it back): a blocking write, which the fake
 * kernel always takes whole, so no other thread can come between its
 * bytes. */
static void write_shared(struct writer *w, const unsigned char *rec, size_t len)
{
	struct iovec iov[2] = {
		{ .iov_base = (void *)rec, .iov_len = HEADER_SIZE },
		{ .iov_base = (void *)(rec + HEADER_SIZE), .iov_len = len - HEADER_SIZE },
	};
	ssize_t r = write_like_shim(w->run->ctx, SHARED_FD, iov, 2, 0);

	if (r != (ssize_t)len)
		record_failure(w->run, "writer %d: the write on the shared fd returned %zd for %zu",
			       w->id, r, len);
}

/* Writes one record on the writer's own fd, nonblocking half of the time:
 * the fake kernel may say EAGAIN or take part, and the writer carries on
 * as an application does. */
static void write_own(struct writer *w, const unsigned char *rec, size_t len, int flags)
{
	size_t done = 0;
	long tries = 0;
	ssize_t r;

	while (done < len) {
		struct iovec iov = { .iov_base = (void *)(rec + done), .iov_len = len - done };

		r = write_like_shim(w->run->ctx, OWN_FD(w->id), &iov, 1, flags);
		if (r == -EAGAIN) {
			if (++tries > 1000000) {
				record_failure(w->run, "writer %d: EAGAIN forever", w->id);
				return;
			}
			sched_yield();
			continue;
		}
		if (r <= 0) {
			record_failure(w->run, "writer %d: the write on its fd returned %zd", w->id, r);
			return;
		}
		done += (size_t)r;
	}
}

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	unsigned char *rec = malloc(RECORD_MAX + HEADER_SIZE);
	unsigned x = 1000u + (unsigned)w->id;
	uint32_t seq;

	if (!rec)
		abort();
	for (seq = 0; seq < RECORDS; seq++) {
		size_t len = make_record(rec, w->id, seq, record_payload(&x));

		write_shared(w, rec, len);
		len = make_record(rec, w->id, seq, record_payload(&x));
		write_own(w, rec, len, (x >> 9) & 1 ? MSG_DONTWAIT : 0);
		/* Now and then the writer waits for an answer: its next lone
		 * write may be sent at once. */
		if ((x >> 12) % 8 == 0)
			co_note_wait();
		if (seq % 64 == 0)
			sched_yield();
	}
	free(rec);
	atomic_fetch_add(&w->run->writers_done, 1);
	return NULL;
}

/* The deadline flusher and the other flush triggers, until the writers are
 * done. */
static void *flusher_main(void *arg)
{
	struct run *run = arg;
	struct co_ctx *ctx = run->ctx;
	int stalled[8], nstalled;
	unsigned x = 77, round = 0;

	while (atomic_load(&run->writers_done) < WRITERS) {
		x = x * 1103515245u + 12345u;
		fake_clock_advance((x >> 8) % (ctx->cfg.delay_ns + 1));
		co_flush_due(ctx, fake_clock(), stalled, 8, &nstalled);
		if (round % 3 == 0)
			co_flush_all_nowait(ctx, CO_ST_flush_read);
		if (round % 7 == 0)
			co_flush_if_pending(ctx, CO_ST_flush_wait);
		/* A final flush for an exec that then fails: writes meanwhile
		 * go out at once, and coalescing resumes. */
		if (round % 101 == 100) {
			co_flush_all_final(ctx, CO_ST_flush_exec);
			sched_yield();
			co_exit_cancelled(ctx);
		}
		round++;
		sched_yield();
	}
	return NULL;
}

static void count_on_pending(struct co_ctx *ctx)
{
	(void)ctx;
	atomic_fetch_add(&the_run->on_pending_calls, 1);
}

/* Checks that fd's wire is a sequence of whole records, each writer's in
 * order, and that it holds expect records from each writer in writers.
 * Returns NULL or a description of the first fault. */
static const char *check_wire(int fd, const int *writers, int nwriters, uint32_t expect)
{
	static char why[256];
	uint32_t next[WRITERS] = { 0 };
	size_t len, off = 0, i;
	const unsigned char *wire = (const unsigned char *)fake_wire(fd, &len);
	int t, k;

	while (off < len) {
		uint32_t seq, plen;

		if (len - off < HEADER_SIZE || wire[off] != RECORD_MAGIC) {
			snprintf(why, sizeof(why), "fd %d: no record header at %zu", fd, off);
			return why;
		}
		t = wire[off + 1];
		memcpy(&seq, wire + off + 2, 4);
		memcpy(&plen, wire + off + 6, 4);
		for (k = 0; k < nwriters && writers[k] != t; k++)
			;
		if (k == nwriters) {
			snprintf(why, sizeof(why), "fd %d: record of writer %d at %zu", fd, t, off);
			return why;
		}
		if (seq != next[t]) {
			snprintf(why, sizeof(why), "fd %d: writer %d record %u where %u was due, at %zu",
				 fd, t, seq, next[t], off);
			return why;
		}
		if (plen > RECORD_MAX || len - off - HEADER_SIZE < plen) {
			snprintf(why, sizeof(why), "fd %d: record cut short at %zu", fd, off);
			return why;
		}
		for (i = 0; i < plen; i++) {
			if (wire[off + HEADER_SIZE + i] != payload_byte(t, seq, i)) {
				snprintf(why, sizeof(why),
					 "fd %d: writer %d record %u broken at byte %zu (bytes of another record inside?)",
					 fd, t, seq, i);
				return why;
			}
		}
		next[t]++;
		off += HEADER_SIZE + plen;
	}
	for (k = 0; k < nwriters; k++) {
		if (next[writers[k]] != expect) {
			snprintf(why, sizeof(why), "fd %d: %u of writer %d's %u records arrived", fd,
				 next[writers[k]], writers[k], expect);
			return why;
		}
	}
	return NULL;
}

/* Runs the writers and the flusher to the end, with lone writes sent at
 * once (direct) or not, and the shared fd's kernel taking part of a
 * nonblocking send now and then (shared_chaos) or never. Returns NULL if
 * every record arrived whole and in order, or what went wrong. */
static const char *run_writers(int direct, int shared_chaos)
{
	static char why[512];
	struct writer writers[WRITERS];
	int all[WRITERS], t;
	pthread_t flusher;
	struct co_config cfg;
	struct run run;
	const char *fault = NULL;
	struct co_stats *st;

	fake_reset();
	memset(&run, 0, sizeof(run));
	pthread_mutex_init(&run.failure_lock, NULL);
	fake_config(&cfg);
	cfg.direct = direct;
	cfg.delay_ns = 50000;
	cfg.max_bytes = 4096;
	cfg.large_bytes = 1024;
	run.ctx = fake_ctx_new(&cfg);
	the_run = &run;
	run.ctx->on_pending = count_on_pending;

	fake_socket(SHARED_FD, FAKE_TCP);
	if (shared_chaos)
		fake_send_chaos(SHARED_FD, 1);
	for (t = 0; t < WRITERS; t++) {
		fake_socket(OWN_FD(t), t % 2 ? FAKE_UNIX : FAKE_TCP6);
		fake_send_chaos(OWN_FD(t), 100u + (unsigned)t);
	}

	for (t = 0; t < WRITERS; t++) {
		writers[t].run = &run;
		writers[t].id = t;
		if (pthread_create(&writers[t].thread, NULL, writer_main, &writers[t]) != 0)
			abort();
	}
	if (pthread_create(&flusher, NULL, flusher_main, &run) != 0)
		abort();
	for (t = 0; t < WRITERS; t++)
		pthread_join(writers[t].thread, NULL);
	pthread_join(flusher, NULL);
	co_flush_all_final(run.ctx, CO_ST_flush_exit);

	st = &run.ctx->stats;
	if (atomic_load(&run.failures)) {
		snprintf(why, sizeof(why), "%d failures; the first: %s",
			 atomic_load(&run.failures), run.failure);
		fault = why;
	} else if (atomic_load(&run.ctx->fds.pending_count) != 0) {
		fault = "bytes still queued after the final flush";
	} else if (co_stat_get(st, CO_ST_bytes_dropped) || co_stat_get(st, CO_ST_deferred_errors)) {
		fault = "bytes dropped, or an error, with a kernel that never fails";
	} else if (fake_empty_sends()) {
		fault = "a sendmsg with nothing to send";
	} else if (co_stat_get(st, CO_ST_writes_queued) == 0 ||
		   atomic_load(&run.on_pending_calls) == 0) {
		/* Small records must have been queued and batched. */
		snprintf(why, sizeof(why), "nothing was queued (writes_queued %llu, on_pending %d)",
			 (unsigned long long)co_stat_get(st, CO_ST_writes_queued),
			 atomic_load(&run.on_pending_calls));
		fault = why;
	} else if (direct && co_stat_get(st, CO_ST_writes_direct) == 0) {
		fault = "no lone write was sent at once";
	} else if (!direct && co_stat_get(st, CO_ST_writes_direct) != 0) {
		fault = "a write was sent at once with COALESCE_DIRECT=0";
	}
	for (t = 0; t < WRITERS; t++)
		all[t] = t;
	if (!fault)
		fault = check_wire(SHARED_FD, all, WRITERS, RECORDS);
	for (t = 0; t < WRITERS && !fault; t++)
		fault = check_wire(OWN_FD(t), &all[t], 1, RECORDS);

	fake_ctx_free(run.ctx);
	pthread_mutex_destroy(&run.failure_lock);
	fake_reset();
	return fault;
}

/* Every write goes through core under the fd's lock: the kernel may take
 * part of any nonblocking send, and still no record is ever split. */
static void test_concurrent_writers_and_flushers(void **state)
{
	const char *fault;

	(void)state;
	fault = run_writers(0, 1);
	if (fault)
		fail_msg("%s", fault);
}

/* The default settings: lone writes are handed back and sent by the
 * caller, outside core's lock. With a shared socket that always takes a
 * whole send, records stay whole and in order. */
static void test_concurrent_writers_with_lone_writes(void **state)
{
	const char *fault;

	(void)state;
	fault = run_writers(1, 0);
	if (fault)
		fail_msg("%s", fault);
}

/* Known bugs */

/* What a thread does between co_write and its "libc" call, in slow motion. */
struct slow_writer {
	struct co_ctx *ctx;
	int fd;
	const char *buf;
	size_t len;
	int flags;
	ssize_t decided; /* co_write's answer */
	ssize_t sent;    /* What the write finally returned. */
	sem_t has_decided;
	sem_t may_send;
	pthread_t thread;
};

static void *slow_writer_main(void *arg)
{
	struct slow_writer *w = arg;
	struct iovec iov = { .iov_base = (void *)w->buf, .iov_len = w->len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };

	struct co_fd *held;

	w->decided = co_write(w->ctx, w->fd, &iov, 1, w->flags, 0, &held);
	sem_post(&w->has_decided);
	sem_wait(&w->may_send);
	w->sent = w->decided == CO_PASSTHROUGH ? fake_sys()->sendmsg(w->fd, &msg, w->flags)
					       : w->decided;
	co_write_end(held, w->sent);
	return NULL;
}

/* A plain write of len bytes from buf on fd, from a new thread (whose wait
 * epoch is where every thread's starts). */
struct quick_writer {
	struct co_ctx *ctx;
	int fd;
	const char *buf;
	size_t len;
	ssize_t sent;
	_Atomic int done;
};

static void *quick_writer_main(void *arg)
{
	struct quick_writer *w = arg;
	struct iovec iov = { .iov_base = (void *)w->buf, .iov_len = w->len };

	w->sent = write_like_shim(w->ctx, w->fd, &iov, 1, 0);
	atomic_store(&w->done, 1);
	return NULL;
}

/* Thread A's write is handed back by core (CO_PASSTHROUGH) and A is about
 * to make the libc call; meanwhile thread B writes a record. B must wait
 * until A's call is over (core keeps the fd locked until co_write_end): were
 * B's record queued, and partly sent by the flusher before the socket
 * filled, A's call would land in the middle of it. Returns 1 if B waited and
 * the wire holds the two records whole. */
static int passthrough_keeps_records_whole(int a_flags, int direct)
{
	static const char a[] = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
	static const char b[] = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
	struct slow_writer sa = { .fd = SHARED_FD, .buf = a, .len = sizeof(a) - 1, .flags = a_flags };
	struct quick_writer qb = { .fd = SHARED_FD, .buf = b, .len = sizeof(b) - 1 };
	char expect1[sizeof(a) + sizeof(b)], expect2[sizeof(a) + sizeof(b)];
	struct co_config cfg;
	struct co_ctx *ctx;
	pthread_t tb;
	size_t len;
	const char *wire;
	int whole, held_back;

	fake_reset();
	fake_config(&cfg);
	cfg.direct = direct;
	ctx = fake_ctx_new(&cfg);
	fake_socket(SHARED_FD, FAKE_TCP);
	sa.ctx = qb.ctx = ctx;
	sem_init(&sa.has_decided, 0, 0);
	sem_init(&sa.may_send, 0, 0);

	pthread_create(&sa.thread, NULL, slow_writer_main, &sa);
	sem_wait(&sa.has_decided);
	if (sa.decided != CO_PASSTHROUGH)
		print_message("not the case this test is about: A got %zd\n", sa.decided);
	pthread_create(&tb, NULL, quick_writer_main, &qb);
	/* Give B every chance to get in; it must not. (A slow machine can only
	 * make this pass when it should fail, never the reverse.) */
	usleep(20000);
	held_back = !atomic_load(&qb.done);
	if (!held_back) {
		/* B got in: the flusher sends 20 bytes of its record, then the
		 * kernel is full, and A's call lands after those 20. */
		fake_send_limit(SHARED_FD, 20, 1);
		fake_send_full(SHARED_FD, 1);
		co_flush_all_nowait(ctx, CO_ST_flush_deadline);
		fake_send_full(SHARED_FD, 0);
	}
	sem_post(&sa.may_send);
	pthread_join(sa.thread, NULL);
	pthread_join(tb, NULL);
	co_flush_all_final(ctx, CO_ST_flush_exit);

	memcpy(expect1, a, sizeof(a) - 1);
	memcpy(expect1 + sizeof(a) - 1, b, sizeof(b) - 1);
	memcpy(expect2, b, sizeof(b) - 1);
	memcpy(expect2 + sizeof(b) - 1, a, sizeof(a) - 1);
	wire = fake_wire(SHARED_FD, &len);
	whole = held_back && sa.sent == (ssize_t)sizeof(a) - 1 && qb.sent == (ssize_t)sizeof(b) - 1 &&
		len == sizeof(a) + sizeof(b) - 2 &&
		(memcmp(wire, expect1, len) == 0 || memcmp(wire, expect2, len) == 0);
	if (!whole)
		print_message("wire: %.*s\n", (int)len, wire);
	sem_destroy(&sa.has_decided);
	sem_destroy(&sa.may_send);
	fake_ctx_free(ctx);
	fake_reset();
	return whole;
}

/* A lone write that core hands back to be sent at once (send_at_once,
 * counted as writes_direct) is sent while core still holds the fd: had
 * another thread's record been queued in between and partly sent, the lone
 * write would land in the middle of it ("b"x20 + "A"x30 + "b"x40; without
 * coalesce each small write reaches the socket whole). */
static void test_lone_write_keeps_records_whole(void **state)
{
	(void)state;
	assert_true(passthrough_keeps_records_whole(0, 1));
}

/* The same with a write that core cannot queue (MSG_OOB here, or an
 * address, control data, no memory): core sends the queue and keeps the fd
 * until the caller's call is over. (With COALESCE_DIRECT=0.) */
static void test_passthrough_write_keeps_records_whole(void **state)
{
	(void)state;
	assert_true(passthrough_keeps_records_whole(MSG_OOB, 0));
}

/* A close while another thread holds the fd (here: in the middle of a
 * write handed back to libc; in life: blocked in a send on a full blocking
 * socket) does not wait for it: the socket moves to a private fd, fd's
 * number gets a placeholder at once (a send there fails), and the holder
 * closes both when it lets go. */
static void test_close_does_not_wait_for_a_blocked_writer(void **state)
{
	static const char a[] = "AAAAAAAAAA";
	struct slow_writer sa = { .fd = SHARED_FD, .buf = a, .len = sizeof(a) - 1 };
	struct co_config cfg;
	struct co_ctx *ctx;
	struct co_fd *held;

	(void)state;
	fake_reset();
	fake_config(&cfg);
	ctx = fake_ctx_new(&cfg);
	fake_socket(SHARED_FD, FAKE_TCP);
	sa.ctx = ctx;
	sem_init(&sa.has_decided, 0, 0);
	sem_init(&sa.may_send, 0, 0);
	pthread_create(&sa.thread, NULL, slow_writer_main, &sa);
	sem_wait(&sa.has_decided);
	assert_int_equal(sa.decided, CO_PASSTHROUGH);

	assert_int_equal(co_close_or_hand_over(ctx, SHARED_FD, &held), 1);
	assert_null(held);
	assert_true(fake_is_placeholder(SHARED_FD));
	assert_int_equal(fake_closes(SHARED_FD), 0);
	assert_int_equal(co_stat_get(&ctx->stats, CO_ST_closes_handed_over), 1);

	sem_post(&sa.may_send);
	pthread_join(sa.thread, NULL);
	assert_int_equal(sa.sent, -ENOTCONN);
	assert_int_equal(fake_closes(SHARED_FD), 1);
	assert_int_equal(fake_closes(fake_private_fd()), 1);
	assert_int_equal(co_fd_find(&ctx->fds, SHARED_FD)->kind, CO_FD_UNKNOWN);
	assert_int_equal(fake_send_calls(SHARED_FD), 0);
	sem_destroy(&sa.has_decided);
	sem_destroy(&sa.may_send);
	fake_ctx_free(ctx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_concurrent_writers_and_flushers),
		cmocka_unit_test(test_concurrent_writers_with_lone_writes),
		cmocka_unit_test(test_lone_write_keeps_records_whole),
		cmocka_unit_test(test_passthrough_write_keeps_records_whole),
		cmocka_unit_test(test_close_does_not_wait_for_a_blocked_writer),
	};

	return cmocka_run_group_tests_name("threads", tests, NULL, NULL);
}
