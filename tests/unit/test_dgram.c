/* Datagram queues (core/dgram.c): records of equal-size datagrams sent as
 * one UDP GSO send, short runs and other sizes with sendmmsg, the kernel's
 * segment limit, GSO refused, sendmmsg stopping inside a record, a refused
 * datagram, and a queue dropped at exit. Every test checks the size of each
 * datagram that reached the fake socket and the bytes, in order. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <stdatomic.h>

#include <cmocka.h>

#include "app.h"
#include "fake_sys.h"
#include "stream.h"

#define FD 30

struct fixture {
	struct co_ctx *ctx;
	struct app a; /* fd FD, a connected UDP socket */
};

/* Makes a context (cfg NULL: the defaults) and a UDP socket whose GSO
 * support is given as to fake_udp_gso, and makes its first, lone write: the
 * next ones are queued. Wires and counters then start from nothing. */
static struct co_ctx *start(struct fixture *fx, const struct co_config *cfg, int gso_segments,
			    int gso_err)
{
	fake_ctx_free(fx->ctx);
	app_close(&fx->a);
	fake_reset();
	app_open(&fx->a, FD, FAKE_UDP, 7);
	fake_udp_gso(FD, gso_segments, gso_err);
	fx->ctx = fake_ctx_new(cfg);
	app_start(fx->ctx, &fx->a);
	fake_forget_sends();
	memset(&fx->ctx->stats, 0, sizeof(fx->ctx->stats));
	return fx->ctx;
}

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	if (!fx)
		return -1;
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;

	fake_ctx_free(fx->ctx);
	app_close(&fx->a);
	free(fx);
	fake_reset();
	return 0;
}

static uint64_t stat_of(struct co_ctx *ctx, enum co_counter c)
{
	return co_stat_get(&ctx->stats, c);
}

/* Queues one datagram per size, each taken whole without a system call. */
static void queue_sizes(struct co_ctx *ctx, struct app *a, const size_t *sizes, size_t n)
{
	int calls = fake_send_calls(a->fd);
	size_t i;

	for (i = 0; i < n; i++)
		assert_int_equal(app_write(ctx, a, sizes[i], 0), (ssize_t)sizes[i]);
	assert_int_equal(fake_send_calls(a->fd), calls);
}

static void queue_equal(struct co_ctx *ctx, struct app *a, size_t n, size_t len)
{
	size_t *sizes = malloc(n * sizeof(*sizes)), i;

	assert_non_null(sizes);
	for (i = 0; i < n; i++)
		sizes[i] = len;
	queue_sizes(ctx, a, sizes, n);
	free(sizes);
}

/* Checks that the datagrams on the wire since the start have these sizes,
 * in order, and that their bytes are the application's, from skip on. */
static void check_dgrams(const struct app *a, size_t skip, const size_t *sizes, size_t n)
{
	const uint32_t *lens;
	const char *wire;
	size_t i, total = 0, len;

	assert_int_equal(fake_dgrams(a->fd, &lens, NULL), n);
	for (i = 0; i < n; i++) {
		assert_int_equal(lens[i], sizes[i]);
		total += sizes[i];
	}
	wire = fake_wire(a->fd, &len);
	assert_int_equal(len, total);
	assert_memory_equal(wire, a->src + skip, total);
}

static void check_equal_dgrams(const struct app *a, size_t n, size_t len)
{
	size_t *sizes = malloc(n * sizeof(*sizes)), i;

	assert_non_null(sizes);
	for (i = 0; i < n; i++)
		sizes[i] = len;
	check_dgrams(a, 0, sizes, n);
	free(sizes);
}

/* 128 equal datagrams (the default COALESCE_MAX_MSGS) go out when the
 * last is queued, as one GSO send of one buffer. */
static void test_equal_datagrams_go_as_one_gso_send(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = start(fx, NULL, 128, 0);

	queue_equal(ctx, &fx->a, 127, 64);
	assert_int_equal(fake_send_calls(FD), 0);
	assert_int_equal(app_write(ctx, &fx->a, 64, 0), 64);
	assert_int_equal(fake_send_calls(FD), 1);
	assert_int_equal(fake_last_call().iovcnt, 1);
	assert_int_equal(fake_last_call().offered, 128 * 64);
	check_equal_dgrams(&fx->a, 128, 64);
	assert_int_equal(app_queued(ctx, FD), 0);
	assert_int_equal(stat_of(ctx, CO_ST_dgram_flush_gso), 1);
	assert_int_equal(stat_of(ctx, CO_ST_dgram_flush_sendmmsg), 0);
	assert_int_equal(stat_of(ctx, CO_ST_dgrams_queued), 128);
}

/* A shorter datagram ends a GSO run (it is its last segment); a longer
 * one starts the next. */
static void test_shorter_datagram_ends_a_gso_run(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = start(fx, NULL, 128, 0);
	static const size_t sizes[] = { 100, 100, 100, 40, 100, 100, 7, 9 };

	queue_sizes(ctx, &fx->a, sizes, 8);
	co_flush_all_nowait(ctx, CO_ST_flush_read);
	check_dgrams(&fx->a, 0, sizes, 8);
	/* 100 100 100 40 | 100 100 7 | 9 */
	assert_int_equal(stat_of(ctx, CO_ST_dgram_flush_gso), 2);
	assert_int_equal(stat_of(ctx, CO_ST_dgram_flush_sendmmsg), 1);
	assert_int_equal(app_queued(ctx, FD), 0);
}

/* Datagrams of other sizes go with one sendmmsg, which takes short GSO
 * runs along (their own system call would cost more than GSO saves) and
 * stops before a long one. */
static void test_sendmmsg_stops_before_a_long_gso_run(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = start(fx, NULL, 128, 0);
	static const size_t sizes[] = { 1, 64, 100, 30, 30, 30, 30, 30, 30, 30, 30, 30, 500 };

	queue_sizes(ctx, &fx->a, sizes, 13);
	co_flush_all_nowait(ctx, CO_ST_flush_read);
	check_dgrams(&fx->a, 0, sizes, 13);
	/* 1 64 100 30 (sendmmsg) | 30 x 8 (GSO) | 500 (sendmmsg) */
	assert_int_equal(stat_of(ctx, CO_ST_dgram_flush_sendmmsg), 2);
	assert_int_equal(stat_of(ctx, CO_ST_dgram_flush_gso), 1);
	assert_int_equal(fake_sendmmsg_calls(), 2);
	assert_int_equal(fake_send_calls(FD), 4 + 1 + 1);
}

/* A kernel that takes 64 segments per GSO send: the first send of 128 is
 * refused with EINVAL and the same datagrams go as two sends of 64; later
 * flushes send 64 at a time at once. GSO stays on. */
static void test_older_kernel_gets_64_segments_per_send(void **state)
{
	struct fixture *fx = *state;
	struct co_config cfg;
	struct co_ctx *ctx;

	fake_config(&cfg);
	cfg.log_level = CO_LOG_INFO;
	ctx = start(fx, &cfg, 64, 0);

	queue_equal(ctx, &fx->a, 127, 20);
	assert_int_equal(app_write(ctx, &fx->a, 20, 0), 20);
	assert_int_equal(fake_send_calls(FD), 3);
	check_equal_dgrams(&fx->a, 128, 20);
	assert_int_equal(stat_of(ctx, CO_ST_dgram_flush_gso), 2);
	assert_int_equal(stat_of(ctx, CO_ST_dgram_gso_fallbacks), 0);
	assert_non_null(strstr(fake_log(), "64 segments"));
	queue_equal(ctx, &fx->a, 127, 20);
	assert_int_equal(app_write(ctx, &fx->a, 20, 0), 20);
	assert_int_equal(fake_send_calls(FD), 5);
	check_equal_dgrams(&fx->a, 256, 20);
	assert_int_equal(stat_of(ctx, CO_ST_dgram_flush_gso), 4);
}

/* The same with a shorter last datagram in a record of 101: the send of
 * its first 64 carries 64 full segments; the short one ends the next. */
static void test_older_kernel_split_keeps_the_short_last_datagram(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = start(fx, NULL, 64, 0);
	size_t sizes[101], i;

	for (i = 0; i < 100; i++)
		sizes[i] = 20;
	sizes[100] = 10;
	queue_sizes(ctx, &fx->a, sizes, 101);
	co_flush_all_nowait(ctx, CO_ST_flush_read);
	check_dgrams(&fx->a, 0, sizes, 101);
	assert_int_equal(stat_of(ctx, CO_ST_dgram_flush_gso), 2);
}

/* EINVAL for another reason than the count (the kernel refuses 64 too):
 * GSO stops on that socket only; other sockets keep sending 128. */
static void test_einval_for_another_reason_stops_gso_on_that_socket(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = start(fx, NULL, 128, EINVAL);

	queue_equal(ctx, &fx->a, 100, 20);
	co_flush_all_nowait(ctx, CO_ST_flush_read);
	check_equal_dgrams(&fx->a, 100, 20);
	assert_int_equal(stat_of(ctx, CO_ST_dgram_gso_fallbacks), 1);
	assert_int_equal(stat_of(ctx, CO_ST_dgram_flush_gso), 0);
	assert_int_equal(atomic_load(&ctx->gso_segments_low), 0);
}

/* GSO refused (EIO: no checksum offload on the way out): the same
 * datagrams go one by one with sendmmsg, and GSO is not tried again on
 * that socket. */
static void test_gso_refused_sends_one_by_one_from_then_on(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = start(fx, NULL, 128, EIO);

	queue_equal(ctx, &fx->a, 10, 50);
	co_flush_all_nowait(ctx, CO_ST_flush_read);
	check_equal_dgrams(&fx->a, 10, 50);
	assert_int_equal(stat_of(ctx, CO_ST_dgram_gso_fallbacks), 1);
	assert_int_equal(fake_sendmmsg_calls(), 1);
	assert_int_equal(fake_send_calls(FD), 1 + 10);
	queue_equal(ctx, &fx->a, 10, 50);
	co_flush_all_nowait(ctx, CO_ST_flush_read);
	check_equal_dgrams(&fx->a, 20, 50);
	assert_int_equal(fake_send_calls(FD), 1 + 20);
	assert_int_equal(stat_of(ctx, CO_ST_dgram_gso_fallbacks), 1);
}

/* sendmmsg sends part of a record, then the socket is full: the rest stays
 * queued, more datagrams join it, and the next flush sends each exactly
 * once, in order. */
static void test_sendmmsg_resumes_inside_a_record(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = start(fx, NULL, 0, 0);

	queue_equal(ctx, &fx->a, 10, 30);
	fake_send_limit(FD, 1000, 3);
	fake_send_error(FD, EAGAIN, 2);
	co_flush_all_nowait(ctx, CO_ST_flush_read);
	check_equal_dgrams(&fx->a, 3, 30);
	assert_true(app_queued(ctx, FD) > 0);
	assert_int_equal(stat_of(ctx, CO_ST_flush_eagain), 1);
	queue_equal(ctx, &fx->a, 2, 30);
	co_flush_all_nowait(ctx, CO_ST_flush_read);
	check_equal_dgrams(&fx->a, 12, 30);
	assert_int_equal(app_queued(ctx, FD), 0);
	assert_int_equal(stat_of(ctx, CO_ST_dgrams_dropped), 0);
}

/* The kernel refuses the first datagram of a GSO run (ICMP port
 * unreachable): that one alone is lost and its error goes to the next
 * call; the rest of the run still goes as one GSO send. */
static void test_refused_first_datagram_of_a_gso_run(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = start(fx, NULL, 128, 0);
	static const size_t rest[] = { 20, 20, 20, 20 };

	queue_equal(ctx, &fx->a, 5, 20);
	fake_send_error(FD, ECONNREFUSED, 1);
	co_flush_all_nowait(ctx, CO_ST_flush_read);
	check_dgrams(&fx->a, 20, rest, 4);
	assert_int_equal(stat_of(ctx, CO_ST_dgrams_dropped), 1);
	assert_int_equal(stat_of(ctx, CO_ST_bytes_dropped), 20);
	assert_int_equal(stat_of(ctx, CO_ST_dgram_flush_gso), 1);
	assert_int_equal(test_write(ctx, FD, "x", 1, 0), -ECONNREFUSED);
	assert_int_equal(test_write(ctx, FD, "x", 1, 0), 1);
}

/* At exit, a socket that stays full past the linger time: what is left of
 * a partly sent record is dropped and counted, datagrams and bytes. */
static void test_dropped_queue_counts_what_was_not_sent(void **state)
{
	struct fixture *fx = *state;
	struct co_config cfg;
	struct co_ctx *ctx;

	fake_config(&cfg);
	cfg.linger_ns = 1000000;
	ctx = start(fx, &cfg, 0, 0);
	queue_equal(ctx, &fx->a, 10, 30);
	fake_send_limit(FD, 1000, 3);
	fake_send_error(FD, EAGAIN, 2);
	co_flush_all_nowait(ctx, CO_ST_flush_read);
	check_equal_dgrams(&fx->a, 3, 30);
	fake_send_full(FD, 1);
	co_flush_all_final(ctx, CO_ST_flush_exit);
	assert_int_equal(stat_of(ctx, CO_ST_dgrams_dropped), 7);
	assert_int_equal(stat_of(ctx, CO_ST_bytes_dropped), 7 * 30);
	assert_int_equal(app_queued(ctx, FD), 0);
	check_equal_dgrams(&fx->a, 3, 30);
}

/* Random sequences: datagrams of sizes that often repeat (runs) or shrink
 * (closing runs), flushes by reads and by the deadline, allocations that
 * fail (the datagram then goes to libc after the queue), and a fake kernel
 * that takes part of a batch, says EAGAIN or ENOBUFS (the queue stays),
 * refuses a datagram (ECONNREFUSED, EHOSTUNREACH: that one is lost), offers
 * GSO or not, takes 64 or 128 segments, or refuses GSO; the end is a last
 * flush or a close. Whatever happens, the datagrams on the wire are those
 * the application was told were taken, in order, each whole and at most
 * once, and every missing one is counted as dropped. */
#define RANDOM_SEEDS 60
#define RANDOM_OPS 400
#define RANDOM_MAX_DGRAMS (RANDOM_OPS + 1)

static uint32_t next_random(uint32_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 17;
	*x ^= *x << 5;
	return *x;
}

/* Checks the wire of a against the datagrams it was told were taken
 * (offset and size in its source each): the wire's datagrams are those, in
 * order, some missing; returns how many are missing. */
static size_t check_subsequence(const struct app *a, const size_t *off, const size_t *len,
				size_t n)
{
	const uint32_t *lens;
	const char *wire;
	size_t nwire = fake_dgrams(a->fd, &lens, NULL), wlen, w = 0, i = 0, j, missing = 0;

	wire = fake_wire(a->fd, &wlen);
	for (j = 0; j < nwire; j++) {
		while (i < n && (len[i] != lens[j] || w + len[i] > wlen ||
				 memcmp(wire + w, a->src + off[i], len[i]) != 0)) {
			missing++;
			i++;
		}
		assert_true(i < n);
		w += lens[j];
		i++;
	}
	assert_int_equal(w, wlen);
	return missing + (n - i);
}

/* After a datagram of size, the size of the next: often the same (a run),
 * sometimes smaller (a run's shorter last one), else any from 1 to max. */
static size_t next_size(uint32_t *x, size_t size, size_t max)
{
	uint32_t i = next_random(x) % 10;

	if (i >= 6)
		return 1 + next_random(x) % max;
	if (i >= 4 && size > 1)
		return 1 + next_random(x) % (size - 1);
	return size;
}

/* One of the disturbances of the random tests, by kind: 0 a flush as a
 * read makes, 1 a scripted kernel on fd (a few sends taken, then an error
 * from errs), 2 the deadline passing, 3 an allocation that fails. */
static void disturb(struct co_ctx *ctx, const struct co_config *cfg, int fd, uint32_t *x,
		    unsigned kind, const int *errs, unsigned nerrs)
{
	int stalled[4], nstalled;

	switch (kind) {
	case 0:
		co_flush_all_nowait(ctx, CO_ST_flush_read);
		break;
	case 1:
		if (fake_script_left(fd) > 0)
			break;
		fake_send_limit(fd, 1u << 20, (int)(next_random(x) % 6));
		fake_send_error(fd, errs[next_random(x) % nerrs], 1);
		break;
	case 2:
		fake_clock_advance(cfg->delay_ns);
		co_flush_due(ctx, fake_clock(), stalled, 4, &nstalled);
		break;
	default:
		if (next_random(x) % 2)
			fake_fail_realloc(1);
		else
			fake_fail_alloc(1);
	}
}

static void random_sequence(struct fixture *fx, uint32_t seed)
{
	static const int errs[] = { EAGAIN, ENOBUFS, ECONNREFUSED, EHOSTUNREACH };
	static const int gso_modes[][2] = { { 0, 0 }, { 128, 0 }, { 64, 0 }, { 128, EIO } };
	size_t off[RANDOM_MAX_DGRAMS], len[RANDOM_MAX_DGRAMS], n = 0, size = 100;
	uint32_t x = seed * 2654435761u + 1;
	struct co_config cfg;
	struct co_ctx *ctx;
	const int *mode;
	ssize_t r;
	unsigned long_run = 0, kind;
	int op, i, err;

	fake_config(&cfg);
	cfg.max_msgs = 2 + next_random(&x) % 160;
	mode = gso_modes[next_random(&x) % 4];
	ctx = start(fx, &cfg, mode[0], mode[1]);
	for (op = 0; op < RANDOM_OPS; op++) {
		kind = long_run ? 4 : next_random(&x) % 12;
		if (kind < 4) {
			disturb(ctx, &cfg, FD, &x, kind, errs, 4);
			continue;
		}
		if (long_run) {
			/* A run longer than one GSO send of older kernels,
			 * ended by a shorter datagram. */
			if (--long_run == 0 && size > 1)
				size = 1 + next_random(&x) % (size - 1);
		} else if (next_random(&x) % 40 == 0) {
			long_run = 65 + next_random(&x) % 70;
		} else {
			size = next_size(&x, size, 1500);
		}
		r = app_write(ctx, &fx->a, size, 0);
		if (r == (ssize_t)size) {
			off[n] = fx->a.done - size;
			len[n++] = size;
		} else {
			assert_true(r == -EAGAIN || r == -ENOBUFS || r == -ECONNREFUSED ||
				    r == -EHOSTUNREACH);
		}
	}
	fake_fail_alloc(0);
	fake_fail_realloc(0);
	if (next_random(&x) % 2) {
		/* A close sends the queue as the blocking socket takes it. */
		co_close_end(co_close_begin(ctx, FD));
	} else {
		/* Whatever the script still holds runs out within these. */
		for (i = 0; i < 64 && app_queued(ctx, FD) > 0; i++)
			co_flush_all_nowait(ctx, CO_ST_flush_read);
	}
	assert_int_equal(app_queued(ctx, FD), 0);
	err = (int)stat_of(ctx, CO_ST_dgrams_dropped);
	assert_int_equal(check_subsequence(&fx->a, off, len, n), err);
}

static void test_random_sequences_keep_every_datagram_whole_and_in_order(void **state)
{
	uint32_t seed;

	for (seed = 1; seed <= RANDOM_SEEDS; seed++)
		random_sequence(*state, seed);
}

/* Random sequences over two sockets: S1, a connected UDP socket behind fd
 * LC_FD and, while a duplicate is open, LC_DUP too (both write; a write
 * through one must not overtake the other's queue); S2 (LC_FD2), sending to
 * three destinations in turn or to its peer. Besides the operations of
 * random_sequence: duplicates opened and closed, and the flush before a
 * sendfile or a setsockopt. The same check, per socket, and the ports. */
#define LC_FD 30
#define LC_DUP 31
#define LC_FD2 40
#define LC_SRC (1u << 20)
#define LC_MAX_DGRAMS (RANDOM_OPS + 1)

struct lc_sock {
	char *src;   /* what the application writes on the socket, in order */
	size_t used; /* bytes of src written so far */
	size_t n;    /* datagrams the application was told were taken: */
	size_t off[LC_MAX_DGRAMS], len[LC_MAX_DGRAMS];
	uint16_t port[LC_MAX_DGRAMS];
};

/* One send as the shim makes it, to port (0: no address), like sendto. */
static ssize_t lc_send(struct co_ctx *ctx, int fd, const char *buf, size_t len, int port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct co_fd *held = NULL;
	ssize_t r = CO_PASSTHROUGH;

	if (port) {
		msg.msg_name = &sin;
		msg.msg_namelen = sizeof(sin);
	}
	if (!co_fd_passes(ctx, fd))
		r = co_sendto(ctx, fd, &iov, 1, 0,
			      CO_WRITE_API(CO_API_SENDTO) | (port ? CO_WRITE_ADDR : 0),
			      port ? (struct sockaddr *)&sin : NULL, port ? sizeof(sin) : 0, &held);
	if (r == CO_PASSTHROUGH)
		r = fake_sys()->sendmsg(fd, &msg, 0);
	co_write_end(held, r);
	return r;
}

/* Checks the datagrams on fd's wire against what s was told went (as
 * check_subsequence, with their ports); returns how many are missing. */
static size_t lc_check(int fd, const struct lc_sock *s)
{
	const uint32_t *lens;
	const uint16_t *ports;
	const char *wire;
	size_t nwire = fake_dgrams(fd, &lens, &ports), wlen, w = 0, i = 0, j, missing = 0;

	wire = fake_wire(fd, &wlen);
	for (j = 0; j < nwire; j++) {
		while (i < s->n && (s->len[i] != lens[j] || s->port[i] != ports[j] ||
				    w + s->len[i] > wlen ||
				    memcmp(wire + w, s->src + s->off[i], s->len[i]) != 0)) {
			missing++;
			i++;
		}
		assert_true(i < s->n);
		w += lens[j];
		i++;
	}
	assert_int_equal(w, wlen);
	return missing + (s->n - i);
}

static void lifecycle_sequence(struct lc_sock *sk, uint32_t seed)
{
	static const int errs[] = { EAGAIN, ENOBUFS, ECONNREFUSED };
	uint32_t x = seed * 2246822519u + 7;
	size_t size = 64, missing;
	struct co_config cfg;
	struct co_ctx *ctx;
	struct lc_sock *s;
	int op, i, fd, port, dup_open = 0;
	unsigned kind;
	ssize_t r;

	fake_reset();
	fake_config(&cfg);
	cfg.max_msgs = 2 + next_random(&x) % 160;
	cfg.direct = (int)(next_random(&x) % 2);
	fake_socket(LC_FD, FAKE_UDP);
	fake_socket(LC_FD2, FAKE_UDP);
	fake_udp_gso(LC_FD, next_random(&x) % 2 ? 128 : 64, next_random(&x) % 4 ? 0 : EIO);
	fake_udp_gso(LC_FD2, 128, 0);
	for (i = 0; i < 2; i++)
		sk[i].used = sk[i].n = 0;
	ctx = fake_ctx_new(&cfg);
	for (op = 0; op < RANDOM_OPS; op++) {
		kind = next_random(&x) % 16;
		if (kind < 4) {
			fd = next_random(&x) % 2 ? LC_FD : LC_FD2;
			disturb(ctx, &cfg, fd, &x, kind, errs, 3);
			continue;
		}
		switch (kind) {
		case 4:
			if (dup_open) {
				co_close_end(co_close_begin(ctx, LC_DUP));
				fake_socket(LC_DUP, FAKE_BADF);
			} else {
				fake_dup(LC_DUP, LC_FD);
			}
			dup_open = !dup_open;
			break;
		case 5:
			fd = dup_open && next_random(&x) % 2 ? LC_DUP : LC_FD;
			co_flush_before_send(ctx, fd, CO_ST_flush_order, 0);
			break;
		default:
			size = next_size(&x, size, 1400);
			i = (int)(next_random(&x) % 3);
			fd = i == 0 ? LC_FD : i == 1 && dup_open ? LC_DUP : LC_FD2;
			s = &sk[fd == LC_FD2];
			port = fd == LC_FD2 && next_random(&x) % 4 ? 1000 + (int)(next_random(&x) % 3)
								    : 0;
			assert_true(s->used + size <= LC_SRC && s->n < LC_MAX_DGRAMS);
			r = lc_send(ctx, fd, s->src + s->used, size, port);
			if (r == (ssize_t)size) {
				s->off[s->n] = s->used;
				s->len[s->n] = size;
				s->port[s->n++] = (uint16_t)port;
				s->used += size;
			} else {
				assert_true(r == -EAGAIN || r == -ENOBUFS || r == -ECONNREFUSED);
			}
		}
	}
	fake_fail_alloc(0);
	fake_fail_realloc(0);
	if (dup_open)
		co_close_end(co_close_begin(ctx, LC_DUP));
	co_close_end(co_close_begin(ctx, LC_FD));
	co_close_end(co_close_begin(ctx, LC_FD2));
	assert_int_equal(atomic_load(&ctx->fds.pending_count), 0);
	missing = lc_check(LC_FD, &sk[0]) + lc_check(LC_FD2, &sk[1]);
	assert_int_equal(missing, stat_of(ctx, CO_ST_dgrams_dropped));
	fake_ctx_free(ctx);
}

static void test_random_lifecycles_keep_every_socket_in_order(void **state)
{
	struct lc_sock *sk = calloc(2, sizeof(*sk));
	uint32_t seed;

	(void)state;
	assert_non_null(sk);
	for (seed = 0; seed < 2; seed++) {
		sk[seed].src = malloc(LC_SRC);
		assert_non_null(sk[seed].src);
		fill_pattern(sk[seed].src, LC_SRC, 17 + seed);
	}
	for (seed = 1; seed <= RANDOM_SEEDS; seed++)
		lifecycle_sequence(sk, seed);
	free(sk[0].src);
	free(sk[1].src);
	free(sk);
}

/* "A signal handler" that sends a datagram while its thread holds the
 * lock of the fd being written (on_pending runs under it). */
static struct {
	int fd;
	const char *buf;
	size_t len;
	ssize_t result;
	int calls;
} handler;

static void handler_sends(struct co_ctx *ctx)
{
	if (handler.calls++)
		return;
	handler.result = lc_send(ctx, handler.fd, handler.buf, handler.len, 0);
}

/* Writes A (30 bytes) on FD with the handler sending H (20 bytes from
 * src + 100) on handler_fd meanwhile, then B (30 bytes); flushes. */
static void write_around_handler(struct co_ctx *ctx, struct fixture *fx, int handler_fd)
{
	memset(&handler, 0, sizeof(handler));
	handler.fd = handler_fd;
	handler.buf = fx->a.src + 100;
	handler.len = 20;
	ctx->on_pending = handler_sends;
	assert_int_equal(app_write(ctx, &fx->a, 30, 0), 30);
	ctx->on_pending = NULL;
	assert_int_equal(handler.calls, 1);
	assert_int_equal(handler.result, 20);
	assert_int_equal(stat_of(ctx, CO_ST_writes_from_signal_handlers), 1);
	assert_int_equal(app_write(ctx, &fx->a, 30, 0), 30);
	co_flush_all_nowait(ctx, CO_ST_flush_read);
}

/* Checks the wire: A, H, B, each whole. */
static void check_a_h_b(const struct fixture *fx)
{
	static const size_t sizes[] = { 30, 20, 30 };
	const uint32_t *lens;
	const char *wire;
	size_t len, i;

	assert_int_equal(fake_dgrams(FD, &lens, NULL), 3);
	for (i = 0; i < 3; i++)
		assert_int_equal(lens[i], sizes[i]);
	wire = fake_wire(FD, &len);
	assert_int_equal(len, 80);
	assert_memory_equal(wire, fx->a.src, 30);
	assert_memory_equal(wire + 30, fx->a.src + 100, 20);
	assert_memory_equal(wire + 50, fx->a.src + 30, 30);
}

/* A datagram a signal handler sends on the fd its thread is writing is
 * kept and queued after the interrupted write's, never sent ahead of the
 * queue. */
static void test_signal_handler_datagram_goes_after_the_interrupted_one(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = start(fx, NULL, 128, 0);

	write_around_handler(ctx, fx, FD);
	check_a_h_b(fx);
	assert_int_equal(stat_of(ctx, CO_ST_passthrough_reentrant), 0);
}

/* The same through a duplicate of the fd: the datagram is kept for the
 * owner (whose queue is neither dropped nor overtaken), and the socket
 * passes from then on. */
static void test_signal_handler_datagram_on_a_duplicate(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = start(fx, NULL, 128, 0);

	fake_dup(FD + 1, FD);
	write_around_handler(ctx, fx, FD + 1);
	check_a_h_b(fx);
	assert_true(co_fd_passes(ctx, FD));
	assert_int_equal(stat_of(ctx, CO_ST_dgrams_dropped), 0);
}

/* A handler's datagram the kernel could refuse at once (a destination the
 * socket never sent to, a size over what the queue takes) is not kept: it
 * goes to libc, where the handler sees the kernel's answer. */
static void handler_sends_odd(struct co_ctx *ctx)
{
	if (handler.calls++)
		return;
	handler.result = lc_send(ctx, handler.fd, handler.buf, handler.len, 9999);
}

static void test_signal_handler_datagram_to_a_new_destination_is_not_kept(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = start(fx, NULL, 128, 0);
	const uint16_t *ports;
	const uint32_t *lens;

	memset(&handler, 0, sizeof(handler));
	handler.fd = FD;
	handler.buf = fx->a.src + 100;
	handler.len = 20;
	ctx->on_pending = handler_sends_odd;
	assert_int_equal(app_write(ctx, &fx->a, 30, 0), 30);
	ctx->on_pending = NULL;
	assert_int_equal(handler.result, 20);
	assert_int_equal(stat_of(ctx, CO_ST_writes_from_signal_handlers), 0);
	assert_int_equal(stat_of(ctx, CO_ST_passthrough_reentrant), 1);
	assert_int_equal(fake_dgrams(FD, &lens, &ports), 1);
	assert_int_equal(ports[0], 9999);
	co_flush_all_nowait(ctx, CO_ST_flush_read);
	assert_int_equal(fake_dgrams(FD, &lens, &ports), 2);
	assert_int_equal(lens[1], 30);
}

static void handler_sends_large(struct co_ctx *ctx)
{
	if (handler.calls++)
		return;
	handler.result = lc_send(ctx, handler.fd, handler.buf, handler.len, 0);
}

static void test_signal_handler_datagram_over_the_size_limit_is_not_kept(void **state)
{
	struct fixture *fx = *state;
	struct co_config cfg;
	struct co_ctx *ctx;

	fake_config(&cfg);
	cfg.large_bytes = 1000;
	ctx = start(fx, &cfg, 128, 0);
	memset(&handler, 0, sizeof(handler));
	handler.fd = FD;
	handler.buf = fx->a.src + 100000;
	handler.len = 1500;
	ctx->on_pending = handler_sends_large;
	assert_int_equal(app_write(ctx, &fx->a, 30, 0), 30);
	ctx->on_pending = NULL;
	assert_int_equal(handler.result, 1500);
	assert_int_equal(stat_of(ctx, CO_ST_writes_from_signal_handlers), 0);
	assert_int_equal(stat_of(ctx, CO_ST_passthrough_reentrant), 1);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_equal_datagrams_go_as_one_gso_send),
		T(test_shorter_datagram_ends_a_gso_run),
		T(test_sendmmsg_stops_before_a_long_gso_run),
		T(test_older_kernel_gets_64_segments_per_send),
		T(test_older_kernel_split_keeps_the_short_last_datagram),
		T(test_einval_for_another_reason_stops_gso_on_that_socket),
		T(test_gso_refused_sends_one_by_one_from_then_on),
		T(test_sendmmsg_resumes_inside_a_record),
		T(test_refused_first_datagram_of_a_gso_run),
		T(test_dropped_queue_counts_what_was_not_sent),
		T(test_random_sequences_keep_every_datagram_whole_and_in_order),
		T(test_random_lifecycles_keep_every_socket_in_order),
		T(test_signal_handler_datagram_goes_after_the_interrupted_one),
		T(test_signal_handler_datagram_on_a_duplicate),
		T(test_signal_handler_datagram_to_a_new_destination_is_not_kept),
		T(test_signal_handler_datagram_over_the_size_limit_is_not_kept),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
