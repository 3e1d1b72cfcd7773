/* The io_uring backend of the flushes of many fds (core/batch.c), on the
 * fake ring: which flushes use it (auto threshold, writev, uring), the bytes
 * on each wire, the queues and counters after each kind of result (all
 * sent, short send, EAGAIN, EPIPE, ENOBUFS), the fallback to fd by fd when
 * the ring fails now or for good, and the deadline flusher's batch. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "app.h"
#include "batch.h"
#include "fake_sys.h"
#include "stream.h"

#define FIRST_FD 10
#define MAX_FDS 100
#define MSG 50

static uint8_t sent_bytes[MAX_FDS][4 * MSG]; /* What each fd's app wrote. */
static size_t sent_len[MAX_FDS];

/* A context with every small write queued and the given backend. */
static struct co_ctx *ctx_with(enum co_backend backend)
{
	struct co_config cfg;

	fake_config(&cfg);
	cfg.direct = 0;
	cfg.backend = backend;
	return fake_ctx_new(&cfg);
}

/* Opens nfds fake TCP sockets (or keeps them) and queues one more write of
 * MSG bytes on each, with a pattern of its own. */
static void queue_on(struct co_ctx *ctx, int nfds)
{
	int i;

	for (i = 0; i < nfds; i++) {
		if (sent_len[i] == 0)
			fake_socket(FIRST_FD + i, FAKE_TCP);
		fill_pattern(sent_bytes[i] + sent_len[i], MSG, (unsigned)(i * 7 + sent_len[i]));
		assert_int_equal(test_write(ctx, FIRST_FD + i, sent_bytes[i] + sent_len[i], MSG, 0),
				 MSG);
		sent_len[i] += MSG;
	}
}

/* fd number i's wire holds exactly what its app wrote, in order. */
static void assert_wire_complete(int i)
{
	size_t len;
	const char *wire = fake_wire(FIRST_FD + i, &len);

	assert_int_equal(len, sent_len[i]);
	assert_memory_equal(wire, sent_bytes[i], len);
}

static uint64_t stat(struct co_ctx *ctx, enum co_counter c)
{
	return co_stat_get(&ctx->stats, c);
}

static int setup(void **state)
{
	(void)state;
	fake_reset();
	memset(sent_len, 0, sizeof(sent_len));
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	fake_reset();
	return 0;
}

static void test_uring_sends_every_queue_in_one_submission(void **state)
{
	struct co_ctx *ctx = ctx_with(CO_BACKEND_URING);
	int i;

	(void)state;
	queue_on(ctx, 20);
	co_flush_all_nowait(ctx, CO_ST_flush_wait);
	assert_int_equal(fake_ring_calls(), 1);
	assert_int_equal(fake_ring_requests(), 20);
	for (i = 0; i < 20; i++) {
		assert_wire_complete(i);
		assert_int_equal(fake_send_calls(FIRST_FD + i), 1);
	}
	assert_int_equal(fake_last_call().flags, MSG_DONTWAIT | MSG_NOSIGNAL);
	assert_int_equal(atomic_load(&ctx->fds.pending_count), 0);
	assert_int_equal(stat(ctx, CO_ST_flush_syscalls), 1);
	assert_int_equal(stat(ctx, CO_ST_uring_submits), 1);
	assert_int_equal(stat(ctx, CO_ST_uring_sends), 20);
	assert_int_equal(stat(ctx, CO_ST_flush_wait), 20);
	assert_int_equal(stat(ctx, CO_ST_flush_bytes), 20 * MSG);
	assert_int_equal(stat(ctx, CO_ST_writes_queued), 20);
	assert_int_equal(ctx->stats.batch[0], 20);
	fake_ctx_free(ctx);
}

/* Each kind of answer, one fd each; the other fds take everything. */
static void test_results_are_taken_as_one_sendmsg_would_be(void **state)
{
	struct co_ctx *ctx = ctx_with(CO_BACKEND_URING);
	enum { SHORT, AGAIN, PIPE, NOBUFS };
	int i;

	(void)state;
	queue_on(ctx, 8);
	fake_send_limit(FIRST_FD + SHORT, 10, 1);
	fake_send_error(FIRST_FD + AGAIN, EAGAIN, 1);
	fake_send_error(FIRST_FD + PIPE, EPIPE, 1);
	fake_send_error(FIRST_FD + NOBUFS, ENOBUFS, 1);
	co_flush_all_nowait(ctx, CO_ST_flush_read);
	assert_int_equal(fake_ring_calls(), 1);
	/* Never a second send for an fd in one batch. */
	for (i = 0; i < 8; i++)
		assert_int_equal(fake_send_calls(FIRST_FD + i), 1);
	assert_int_equal(fake_wire_len(FIRST_FD + SHORT), 10);
	assert_memory_equal(fake_wire(FIRST_FD + SHORT, &(size_t){ 0 }), sent_bytes[SHORT], 10);
	assert_int_equal(fake_wire_len(FIRST_FD + AGAIN), 0);
	assert_int_equal(fake_wire_len(FIRST_FD + PIPE), 0);
	assert_int_equal(fake_wire_len(FIRST_FD + NOBUFS), 0);
	for (i = NOBUFS + 1; i < 8; i++)
		assert_wire_complete(i);
	assert_int_equal(stat(ctx, CO_ST_flush_eagain), 1);
	assert_int_equal(stat(ctx, CO_ST_flush_nobufs), 1);
	assert_int_equal(stat(ctx, CO_ST_deferred_errors), 1);
	assert_int_equal(stat(ctx, CO_ST_bytes_dropped), MSG);
	assert_int_equal(stat(ctx, CO_ST_flush_bytes), 10 + 4 * MSG);
	assert_int_equal(co_fd_error(ctx, FIRST_FD + PIPE, 0), EPIPE);
	/* Kept queues: the rest of the short send, EAGAIN, ENOBUFS. */
	assert_int_equal(atomic_load(&ctx->fds.pending_count), 3);
	/* The next flush sends what was kept, after what went. */
	co_flush_all_nowait(ctx, CO_ST_flush_read);
	assert_wire_complete(SHORT);
	assert_wire_complete(AGAIN);
	assert_wire_complete(NOBUFS);
	assert_int_equal(atomic_load(&ctx->fds.pending_count), 0);
	/* The dropped queue's error comes back on the next write. */
	assert_int_equal(test_write(ctx, FIRST_FD + PIPE, "x", 1, 0), -EPIPE);
	fake_ctx_free(ctx);
}

static void test_auto_uses_the_ring_from_the_threshold_on(void **state)
{
	struct co_ctx *ctx = ctx_with(CO_BACKEND_AUTO);
	int i;

	(void)state;
	queue_on(ctx, CO_URING_AUTO_MIN - 1);
	co_flush_all_nowait(ctx, CO_ST_flush_wait);
	assert_int_equal(fake_ring_calls(), 0);
	assert_int_equal(fake_send_calls_total(), CO_URING_AUTO_MIN - 1);
	assert_int_equal(stat(ctx, CO_ST_flush_syscalls), CO_URING_AUTO_MIN - 1);
	queue_on(ctx, CO_URING_AUTO_MIN);
	co_flush_all_nowait(ctx, CO_ST_flush_wait);
	assert_int_equal(fake_ring_calls(), 1);
	assert_int_equal(fake_ring_requests(), CO_URING_AUTO_MIN);
	for (i = 0; i < CO_URING_AUTO_MIN; i++)
		assert_wire_complete(i);
	fake_ctx_free(ctx);
}

static void test_writev_backend_never_uses_the_ring(void **state)
{
	struct co_ctx *ctx = ctx_with(CO_BACKEND_WRITEV);
	int i;

	(void)state;
	queue_on(ctx, 40);
	co_flush_all_nowait(ctx, CO_ST_flush_wait);
	assert_int_equal(fake_ring_calls(), 0);
	for (i = 0; i < 40; i++)
		assert_wire_complete(i);
	assert_int_equal(stat(ctx, CO_ST_flush_syscalls), 40);
	assert_int_equal(stat(ctx, CO_ST_uring_sends), 0);
	fake_ctx_free(ctx);
}

static void test_more_than_one_submission(void **state)
{
	struct co_ctx *ctx = ctx_with(CO_BACKEND_URING);
	int i;

	(void)state;
	queue_on(ctx, 2 * CO_BATCH_MAX + 4);
	co_flush_all_nowait(ctx, CO_ST_flush_wait);
	assert_int_equal(fake_ring_calls(), 3);
	assert_int_equal(fake_ring_requests(), 2 * CO_BATCH_MAX + 4);
	for (i = 0; i < 2 * CO_BATCH_MAX + 4; i++)
		assert_wire_complete(i);
	assert_int_equal(stat(ctx, CO_ST_uring_submits), 3);
	assert_int_equal(stat(ctx, CO_ST_flush_syscalls), 3);
	fake_ctx_free(ctx);
}

/* The ring fails for good after running some requests: those count, the
 * rest go fd by fd, and no later flush tries the ring. */
static void test_ring_lost_falls_back_fd_by_fd(void **state)
{
	struct co_ctx *ctx = ctx_with(CO_BACKEND_URING);
	int i;

	(void)state;
	queue_on(ctx, 20);
	fake_ring_fail(EBADF, 5);
	co_flush_all_nowait(ctx, CO_ST_flush_wait);
	for (i = 0; i < 20; i++) {
		assert_wire_complete(i);
		assert_int_equal(fake_send_calls(FIRST_FD + i), 1);
	}
	assert_int_equal(stat(ctx, CO_ST_uring_unavailable), 1);
	assert_int_equal(stat(ctx, CO_ST_uring_sends), 5);
	assert_int_equal(stat(ctx, CO_ST_flush_syscalls), 1 + 15);
	queue_on(ctx, 20);
	co_flush_all_nowait(ctx, CO_ST_flush_wait);
	assert_int_equal(fake_ring_calls(), 1);
	for (i = 0; i < 20; i++)
		assert_wire_complete(i);
	assert_int_equal(stat(ctx, CO_ST_uring_unavailable), 1);
	fake_ctx_free(ctx);
}

/* "Not now" (a vfork child): this flush goes fd by fd, the next one uses
 * the ring again. */
static void test_ring_busy_falls_back_this_time_only(void **state)
{
	struct co_ctx *ctx = ctx_with(CO_BACKEND_URING);
	int i;

	(void)state;
	queue_on(ctx, 3);
	fake_ring_fail(EAGAIN, 0);
	co_flush_all_nowait(ctx, CO_ST_flush_wait);
	for (i = 0; i < 3; i++)
		assert_wire_complete(i);
	assert_int_equal(stat(ctx, CO_ST_uring_sends), 0);
	assert_int_equal(stat(ctx, CO_ST_uring_unavailable), 0);
	queue_on(ctx, 3);
	co_flush_all_nowait(ctx, CO_ST_flush_wait);
	assert_int_equal(fake_ring_calls(), 2);
	assert_int_equal(stat(ctx, CO_ST_uring_sends), 3);
	for (i = 0; i < 3; i++)
		assert_wire_complete(i);
	fake_ctx_free(ctx);
}

/* The deadline flusher's batch: only due queues, a full socket is
 * reported stalled, one short of buffers is looked at after one delay. */
static void test_deadline_batch(void **state)
{
	struct co_ctx *ctx = ctx_with(CO_BACKEND_URING);
	uint64_t delay = ctx->cfg.delay_ns, t0 = fake_clock(), next;
	int stalled[8], nstalled, i;

	(void)state;
	queue_on(ctx, 6);
	fake_clock_advance(delay / 2);
	fake_socket(FIRST_FD + 6, FAKE_TCP);
	fill_pattern(sent_bytes[6], MSG, 99);
	assert_int_equal(test_write(ctx, FIRST_FD + 6, sent_bytes[6], MSG, 0), MSG);
	sent_len[6] = MSG;
	fake_send_error(FIRST_FD + 1, EAGAIN, 1);
	fake_send_error(FIRST_FD + 2, ENOBUFS, 1);
	next = co_flush_due(ctx, t0 + delay, stalled, 8, &nstalled);
	assert_int_equal(fake_ring_calls(), 1);
	assert_int_equal(fake_ring_requests(), 6);
	assert_int_equal(nstalled, 1);
	assert_int_equal(stalled[0], FIRST_FD + 1);
	/* The young queue's deadline comes before the retry of ENOBUFS. */
	assert_int_equal(next, t0 + delay / 2 + delay);
	assert_int_equal(fake_wire_len(FIRST_FD + 6), 0);
	for (i = 0; i < 6; i++)
		if (i != 1 && i != 2)
			assert_wire_complete(i);
	assert_int_equal(stat(ctx, CO_ST_flush_deadline), 6);
	next = co_flush_due(ctx, t0 + 3 * delay, stalled, 8, &nstalled);
	assert_int_equal(next, 0);
	assert_int_equal(nstalled, 0);
	for (i = 0; i < 7; i++)
		assert_wire_complete(i);
	fake_ctx_free(ctx);
}

/* What "a signal handler" writes during the batch: on fd 0 of the batch,
 * whose lock the batch holds, and on an fd outside it. */
static void write_during_batch(void *arg)
{
	struct co_ctx *ctx = arg;

	fill_pattern(sent_bytes[0] + sent_len[0], 30, 1234);
	assert_int_equal(test_write(ctx, FIRST_FD, sent_bytes[0] + sent_len[0], 30, 0), 30);
	sent_len[0] += 30;
	fill_pattern(sent_bytes[9], 20, 4321);
	assert_int_equal(test_write(ctx, FIRST_FD + 9, sent_bytes[9], 20, 0), 20);
	sent_len[9] = 20;
}

/* A write on an fd the batch holds must not wait for the batch's own
 * thread: it is kept and queued after the batch, behind what was queued. */
static void test_write_on_a_held_fd_during_the_batch(void **state)
{
	struct co_ctx *ctx = ctx_with(CO_BACKEND_URING);
	int i;

	(void)state;
	queue_on(ctx, 5);
	fake_socket(FIRST_FD + 9, FAKE_TCP);
	fake_ring_during(write_during_batch, ctx);
	co_flush_all_nowait(ctx, CO_ST_flush_wait);
	fake_ring_during(NULL, NULL);
	assert_int_equal(stat(ctx, CO_ST_writes_from_signal_handlers), 1);
	assert_int_equal(fake_wire_len(FIRST_FD), MSG);
	/* The kept write and the other fd's write wait in their queues. */
	assert_int_equal(atomic_load(&ctx->fds.pending_count), 2);
	co_flush_all_nowait(ctx, CO_ST_flush_wait);
	assert_wire_complete(0);
	assert_wire_complete(9);
	for (i = 1; i < 5; i++)
		assert_wire_complete(i);
	assert_int_equal(co__held_fd, -1);
	fake_ctx_free(ctx);
}

/* The fd "a signal handler" writes on during the batch: a duplicate of
 * the batch's first fd (one socket behind both numbers). */
static int dup_fd;

static void write_on_dup_during_batch(void *arg)
{
	struct co_ctx *ctx = arg;
	struct iovec iov = { .iov_base = sent_bytes[0] + sent_len[0], .iov_len = 20 };

	fill_pattern(iov.iov_base, 20, 99);
	assert_int_equal(write_like_shim(ctx, dup_fd, &iov, 1, 0), 20);
	sent_len[0] += 20;
}

/* A write on a duplicate of an fd the batch holds: the owner cannot be
 * stopped from inside the batch, so the write is kept and goes after the
 * owner's queue, never ahead of it; then the socket passes. dup_at is the
 * duplicate's number; alloc_fails makes its table entry fail too. */
static void check_write_on_dup_during_batch(int dup_at, int alloc_fails)
{
	struct co_ctx *ctx = ctx_with(CO_BACKEND_URING);
	int i;

	queue_on(ctx, 5);
	dup_fd = dup_at;
	fake_dup(dup_fd, FIRST_FD);
	if (alloc_fails)
		fake_fail_alloc(1000);
	fake_ring_during(write_on_dup_during_batch, ctx);
	co_flush_all_nowait(ctx, CO_ST_flush_wait);
	fake_ring_during(NULL, NULL);
	fake_fail_alloc(0);
	assert_int_equal(stat(ctx, CO_ST_writes_from_signal_handlers), 1);
	for (i = 0; i < 5; i++)
		assert_wire_complete(i);
	assert_true(co_fd_passes(ctx, FIRST_FD));
	assert_int_equal(atomic_load(&ctx->fds.pending_count), 0);
	assert_int_equal(co__held_fd, -1);
	fake_ctx_free(ctx);
}

static void test_write_on_a_duplicate_of_a_held_fd_during_the_batch(void **state)
{
	(void)state;
	check_write_on_dup_during_batch(FIRST_FD + 20, 0);
}

/* The same from an fd without a table entry (its chunk cannot be made). */
static void test_write_on_a_duplicate_without_entry_during_the_batch(void **state)
{
	(void)state;
	check_write_on_dup_during_batch(1500, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_uring_sends_every_queue_in_one_submission,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_results_are_taken_as_one_sendmsg_would_be,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_auto_uses_the_ring_from_the_threshold_on,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_writev_backend_never_uses_the_ring, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_more_than_one_submission, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ring_lost_falls_back_fd_by_fd, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ring_busy_falls_back_this_time_only, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_deadline_batch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_on_a_held_fd_during_the_batch, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_write_on_a_duplicate_of_a_held_fd_during_the_batch,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_on_a_duplicate_without_entry_during_the_batch,
						setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
