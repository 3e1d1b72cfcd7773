/* Flushes other than the write path: the deadline flusher, flush-all,
 * exit-time flushes with linger, close, forget, stop, flush-before, fork,
 * and the on_pending callback. */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "app.h"
#include "fake_sys.h"
#include "stream.h"

#define NAPPS 3

struct fixture {
	struct co_ctx *ctx;
	struct app app[NAPPS]; /* fds 5, 6, 7 */
};

/* Makes the fixture's context with cfg (NULL: the defaults) and starts the
 * connections: their first, lone write has gone out, their next writes are
 * queued. The wires and counters then start from nothing. */
static void start_connections(struct fixture *fx, const struct co_config *cfg)
{
	int i;

	fake_ctx_free(fx->ctx);
	fx->ctx = fake_ctx_new(cfg);
	for (i = 0; i < NAPPS; i++)
		app_start(fx->ctx, &fx->app[i]);
	fake_forget_sends();
	memset(&fx->ctx->stats, 0, sizeof(fx->ctx->stats));
}

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));
	int i;

	if (!fx)
		return -1;
	fake_reset();
	for (i = 0; i < NAPPS; i++)
		app_open(&fx->app[i], 5 + i, FAKE_TCP, (unsigned)i + 1);
	*state = fx;
	start_connections(fx, NULL);
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	int i;

	fake_ctx_free(fx->ctx);
	for (i = 0; i < NAPPS; i++)
		app_close(&fx->app[i]);
	free(fx);
	fake_reset();
	return 0;
}

/* Replaces the fixture's context by one with the given linger time. */
static struct co_ctx *use_linger(struct fixture *fx, uint64_t linger_ns)
{
	struct co_config cfg;

	fake_config(&cfg);
	cfg.linger_ns = linger_ns;
	start_connections(fx, &cfg);
	return fx->ctx;
}

static uint64_t stat_of(struct co_ctx *ctx, enum co_counter c)
{
	return co_stat_get(&ctx->stats, c);
}

static int pending_fds(struct co_ctx *ctx)
{
	return atomic_load(&ctx->fds.pending_count);
}

static void queue_bytes(struct co_ctx *ctx, struct app *a, size_t len)
{
	int calls = fake_send_calls(a->fd);

	assert_int_equal(app_write(ctx, a, len, 0), len);
	assert_int_equal(fake_send_calls(a->fd), calls);
}

/* A write of 10 bytes on fd, straight to co_write. */
static ssize_t write10(struct co_ctx *ctx, int fd)
{
	static const char buf[10] = "0123456789";

	return test_write(ctx, fd, buf, sizeof(buf), 0);
}

/* fd is coalesced: after its lone first write (sent at once), the next
 * write of the burst is queued. */
static void check_coalesced(struct co_ctx *ctx, int fd)
{
	assert_int_equal(write10(ctx, fd), CO_PASSTHROUGH);
	assert_int_equal(write10(ctx, fd), 10);
	assert_int_equal(app_queued(ctx, fd), 10);
	assert_false(co_fd_passes(ctx, fd));
}

/* Another thread that holds a lock until told to let go, standing for an
 * application thread in the middle of a write. */
struct holder {
	pthread_mutex_t *lock;
	sem_t held;
	sem_t release;
	pthread_t thread;
};

static void *hold_lock(void *arg)
{
	struct holder *h = arg;

	pthread_mutex_lock(h->lock);
	sem_post(&h->held);
	sem_wait(&h->release);
	pthread_mutex_unlock(h->lock);
	return NULL;
}

static void holder_start(struct holder *h, pthread_mutex_t *lock)
{
	h->lock = lock;
	sem_init(&h->held, 0, 0);
	sem_init(&h->release, 0, 0);
	assert_int_equal(pthread_create(&h->thread, NULL, hold_lock, h), 0);
	sem_wait(&h->held);
}

static void holder_stop(struct holder *h)
{
	sem_post(&h->release);
	pthread_join(h->thread, NULL);
	sem_destroy(&h->held);
	sem_destroy(&h->release);
}

/* Returns 1 if another thread can take lock right now. */
static void *try_lock(void *arg)
{
	pthread_mutex_t *lock = arg;

	if (pthread_mutex_trylock(lock) != 0)
		return (void *)0;
	pthread_mutex_unlock(lock);
	return (void *)1;
}

static int lock_is_free(pthread_mutex_t *lock)
{
	pthread_t t;
	void *r;

	assert_int_equal(pthread_create(&t, NULL, try_lock, lock), 0);
	pthread_join(t, &r);
	return r != NULL;
}

/* The deadline flusher */

static void test_flush_due_waits_for_the_delay(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	uint64_t t0 = fake_clock(), delay = ctx->cfg.delay_ns;
	int stalled[8], nstalled = -1;

	queue_bytes(ctx, &fx->app[0], 10);
	fake_clock_advance(delay / 2);
	queue_bytes(ctx, &fx->app[0], 10);

	/* Not due yet: nothing sent, and the deadline is the oldest byte's. */
	assert_int_equal(co_flush_due(ctx, t0 + delay - 1, stalled, 8, &nstalled), t0 + delay);
	assert_int_equal(nstalled, 0);
	assert_int_equal(fake_send_calls_total(), 0);
	assert_int_equal(stat_of(ctx, CO_ST_flush_deadline), 0);

	/* Due: sent, and nothing is left to wait for. */
	assert_int_equal(co_flush_due(ctx, t0 + delay, stalled, 8, &nstalled), 0);
	assert_int_equal(nstalled, 0);
	assert_int_equal(fake_send_calls(5), 1);
	assert_true(app_wire_is(&fx->app[0], 20));
	assert_int_equal(stat_of(ctx, CO_ST_flush_deadline), 1);
	assert_int_equal(pending_fds(ctx), 0);

	/* A new batch gets a new deadline, from when it started. */
	fake_clock_set(t0 + 5 * delay);
	queue_bytes(ctx, &fx->app[0], 10);
	assert_int_equal(co_flush_due(ctx, t0 + 5 * delay, stalled, 8, &nstalled), t0 + 6 * delay);
	assert_int_equal(fake_send_calls(5), 1);
}

static void test_flush_due_returns_the_earliest_deadline(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	uint64_t t0 = fake_clock(), delay = ctx->cfg.delay_ns, us = 1000;
	int stalled[8], nstalled;

	fake_clock_set(t0 + 120 * us);
	queue_bytes(ctx, &fx->app[2], 10);
	fake_clock_set(t0);
	queue_bytes(ctx, &fx->app[0], 10);
	fake_clock_set(t0 + 50 * us);
	queue_bytes(ctx, &fx->app[1], 10);

	assert_int_equal(co_flush_due(ctx, t0 + 60 * us, stalled, 8, &nstalled), t0 + delay);
	assert_int_equal(fake_send_calls_total(), 0);

	/* fd 5 is due; fd 6 is next. */
	assert_int_equal(co_flush_due(ctx, t0 + delay, stalled, 8, &nstalled), t0 + 50 * us + delay);
	assert_true(app_wire_is(&fx->app[0], 10));
	assert_int_equal(fake_wire_len(6), 0);
	assert_int_equal(fake_wire_len(7), 0);

	assert_int_equal(co_flush_due(ctx, t0 + 10 * delay, stalled, 8, &nstalled), 0);
	assert_true(app_wire_is(&fx->app[1], 10));
	assert_true(app_wire_is(&fx->app[2], 10));
	assert_int_equal(pending_fds(ctx), 0);
}

static void test_flush_due_reports_stalled_fds(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	uint64_t later = fake_clock() + 10 * ctx->cfg.delay_ns;
	int stalled[8], nstalled, i;

	for (i = 0; i < NAPPS; i++)
		queue_bytes(ctx, &fx->app[i], 10);
	fake_send_full(5, 1);
	fake_send_full(7, 1);

	co_flush_due(ctx, later, stalled, 8, &nstalled);
	assert_int_equal(nstalled, 2);
	assert_int_equal(stalled[0], 5);
	assert_int_equal(stalled[1], 7);
	assert_true(app_wire_is(&fx->app[1], 10));
	assert_int_equal(app_queued(ctx, 5), 10);
	assert_int_equal(app_queued(ctx, 7), 10);
	assert_int_equal(pending_fds(ctx), 2);
	assert_int_equal(stat_of(ctx, CO_ST_flush_eagain), 2);
	assert_int_equal(stat_of(ctx, CO_ST_deferred_errors), 0);

	/* No more than max are reported. */
	stalled[1] = -1;
	co_flush_due(ctx, later, stalled, 1, &nstalled);
	assert_int_equal(nstalled, 1);
	assert_int_equal(stalled[0], 5);
	assert_int_equal(stalled[1], -1);

	/* Once writable, they go out and are no longer reported. */
	fake_send_full(5, 0);
	fake_send_full(7, 0);
	assert_int_equal(co_flush_due(ctx, later, stalled, 8, &nstalled), 0);
	assert_int_equal(nstalled, 0);
	assert_true(app_wire_is(&fx->app[0], 10));
	assert_true(app_wire_is(&fx->app[2], 10));
	assert_int_equal(pending_fds(ctx), 0);
}

/* ENOBUFS or ENOMEM is a passing shortage: the queue stays (a drop would
 * leave a hole in a stream that goes on), no error is kept, and the flusher
 * tries again after one delay. */
static void test_flush_due_keeps_the_queue_on_enobufs(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	uint64_t later = fake_clock() + 10 * ctx->cfg.delay_ns, next;
	int stalled[8], nstalled;

	queue_bytes(ctx, &fx->app[0], 10);
	fake_send_error(5, ENOBUFS, 1);
	next = co_flush_due(ctx, later, stalled, 8, &nstalled);
	assert_int_equal(nstalled, 0);
	assert_int_equal(next, later + ctx->cfg.delay_ns);
	assert_int_equal(app_queued(ctx, 5), 10);
	assert_int_equal(stat_of(ctx, CO_ST_flush_nobufs), 1);
	assert_int_equal(stat_of(ctx, CO_ST_deferred_errors), 0);
	assert_int_equal(stat_of(ctx, CO_ST_bytes_dropped), 0);
	assert_int_equal(co_fd_error(ctx, 5, 0), 0);

	assert_int_equal(co_flush_due(ctx, next, stalled, 8, &nstalled), 0);
	assert_true(app_wire_is(&fx->app[0], 10));
	/* The connection goes on, coalesced. */
	assert_false(co_fd_passes(ctx, 5));
	queue_bytes(ctx, &fx->app[0], 10);
	assert_int_equal(app_queued(ctx, 5), 10);
}

/* A close retries a queue that met ENOBUFS (after a short sleep, not a poll
 * for POLLOUT, which would say writable at once). */
static void test_close_retries_after_enobufs(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;

	queue_bytes(ctx, &fx->app[0], 10);
	fake_send_error(5, ENOMEM, 2);
	co_close_end(co_close_begin(ctx, 5));
	assert_true(app_wire_is(&fx->app[0], 10));
	assert_int_equal(stat_of(ctx, CO_ST_bytes_dropped), 0);
	assert_int_equal(fake_poll_calls(), 2);
}

static void test_flush_due_skips_a_busy_fd(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	uint64_t later = fake_clock() + 10 * ctx->cfg.delay_ns, next;
	struct holder h;
	int stalled[8], nstalled;

	queue_bytes(ctx, &fx->app[0], 10);
	queue_bytes(ctx, &fx->app[1], 10);
	holder_start(&h, &co_fd_find(&ctx->fds, 5)->lock);
	/* fd 5 is held by a writer: left alone, and looked at again soon. */
	next = co_flush_due(ctx, later, stalled, 8, &nstalled);
	assert_true(next > later);
	assert_true(next <= later + ctx->cfg.delay_ns);
	assert_int_equal(fake_send_calls(5), 0);
	assert_true(app_wire_is(&fx->app[1], 10));
	holder_stop(&h);

	assert_int_equal(co_flush_due(ctx, later, stalled, 8, &nstalled), 0);
	assert_true(app_wire_is(&fx->app[0], 10));
}

/* Flush-all */

static void test_flush_all_nowait_over_several_fds(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	int i;

	for (i = 0; i < NAPPS; i++)
		queue_bytes(ctx, &fx->app[i], 100 + (size_t)i);
	fake_send_full(6, 1);
	co_flush_all_nowait(ctx, CO_ST_flush_wait);
	assert_true(app_wire_is(&fx->app[0], 100));
	assert_int_equal(fake_wire_len(6), 0);
	assert_true(app_wire_is(&fx->app[2], 102));
	assert_int_equal(app_queued(ctx, 6), 101);
	assert_int_equal(pending_fds(ctx), 1);
	assert_true(stat_of(ctx, CO_ST_flush_wait) >= 2);
	assert_true(fake_last_call().flags & MSG_DONTWAIT);
	/* Never waits for a full socket. */
	assert_int_equal(fake_poll_calls(), 0);

	fake_send_full(6, 0);
	co_flush_all_nowait(ctx, CO_ST_flush_wait);
	assert_true(app_wire_is(&fx->app[1], 101));
	assert_int_equal(pending_fds(ctx), 0);
}

static void test_flush_all_nowait_skips_a_busy_fd(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	struct holder h;

	queue_bytes(ctx, &fx->app[0], 10);
	queue_bytes(ctx, &fx->app[1], 10);
	holder_start(&h, &co_fd_find(&ctx->fds, 6)->lock);
	co_flush_all_nowait(ctx, CO_ST_flush_wait);
	assert_true(app_wire_is(&fx->app[0], 10));
	assert_int_equal(fake_send_calls(6), 0);
	holder_stop(&h);
	assert_int_equal(app_queued(ctx, 6), 10);
	assert_int_equal(pending_fds(ctx), 1);
}

static void test_flush_if_pending(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;

	co_flush_if_pending(ctx, CO_ST_flush_read);
	assert_int_equal(fake_send_calls_total(), 0);
	assert_int_equal(stat_of(ctx, CO_ST_flush_read), 0);

	queue_bytes(ctx, &fx->app[0], 10);
	queue_bytes(ctx, &fx->app[2], 20);
	co_flush_if_pending(ctx, CO_ST_flush_read);
	assert_true(app_wire_is(&fx->app[0], 10));
	assert_true(app_wire_is(&fx->app[2], 20));
	assert_int_equal(stat_of(ctx, CO_ST_flush_read), 2);
	assert_int_equal(pending_fds(ctx), 0);

	co_flush_if_pending(ctx, CO_ST_flush_read);
	assert_int_equal(fake_send_calls_total(), 2);
}

/* Final flushes: exit, fork, exec */

static void test_flush_all_final_on_blocking_sockets(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;

	queue_bytes(ctx, &fx->app[0], 100);
	queue_bytes(ctx, &fx->app[1], 200);
	fake_send_limit(5, 7, 5);
	fake_send_limit(6, 1, 3);
	co_flush_all_final(ctx, CO_ST_flush_exit);
	assert_true(app_wire_is(&fx->app[0], 100));
	assert_true(app_wire_is(&fx->app[1], 200));
	assert_int_equal(stat_of(ctx, CO_ST_bytes_dropped), 0);
	assert_int_equal(pending_fds(ctx), 0);
	/* A blocking send never needs poll. */
	assert_int_equal(fake_poll_calls(), 0);
	assert_false(fake_last_call().flags & MSG_DONTWAIT);
}

static void test_flush_all_final_with_nothing_queued(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	uint64_t t0 = fake_clock();

	co_flush_all_final(ctx, CO_ST_flush_exit);
	assert_int_equal(fake_send_calls_total(), 0);
	assert_int_equal(fake_poll_calls(), 0);
	assert_int_equal(fake_clock(), t0);
}

static void test_flush_all_final_waits_at_most_linger_then_drops(void **state)
{
	struct fixture *fx = *state;
	uint64_t linger = 100 * 1000000ull;
	struct co_ctx *ctx = use_linger(fx, linger);
	uint64_t t0 = fake_clock(), waited;

	queue_bytes(ctx, &fx->app[0], 100);
	queue_bytes(ctx, &fx->app[1], 200);
	queue_bytes(ctx, &fx->app[2], 300);
	fake_send_full(5, 1);
	fake_send_full(7, 1);
	co_flush_all_final(ctx, CO_ST_flush_exit);

	assert_true(app_wire_is(&fx->app[1], 200));
	assert_int_equal(fake_wire_len(5), 0);
	assert_int_equal(fake_wire_len(7), 0);
	assert_int_equal(stat_of(ctx, CO_ST_bytes_dropped), 400);
	assert_int_equal(app_queued(ctx, 5), 0);
	assert_int_equal(app_queued(ctx, 7), 0);
	assert_int_equal(pending_fds(ctx), 0);
	/* It waited for the sockets to drain, with poll, for the linger time
	 * in all (not once per socket). */
	assert_true(fake_poll_calls() >= 1);
	assert_int_equal(fake_poll_last_events(), POLLOUT);
	waited = fake_clock() - t0;
	assert_true(waited >= linger);
	assert_true(waited <= linger + 1000000);
	/* The loss is logged as an error. */
	assert_non_null(strstr(fake_log(), "could not be sent"));
}

static void test_flush_all_final_sends_once_the_socket_drains(void **state)
{
	struct fixture *fx = *state;
	uint64_t linger = 100 * 1000000ull;
	struct co_ctx *ctx = use_linger(fx, linger);
	uint64_t t0 = fake_clock();

	queue_bytes(ctx, &fx->app[0], 100);
	fake_send_full(5, 1);
	/* The first poll finds the socket writable. */
	fake_poll_frees_after(5, 1);
	co_flush_all_final(ctx, CO_ST_flush_exec);
	assert_true(app_wire_is(&fx->app[0], 100));
	assert_int_equal(stat_of(ctx, CO_ST_bytes_dropped), 0);
	assert_int_equal(fake_poll_calls(), 1);
	assert_int_equal(fake_poll_last_fd(), 5);
	assert_true(fake_clock() - t0 < linger);
	assert_int_equal(pending_fds(ctx), 0);
}

static void test_flush_all_final_without_linger_drops_at_once(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = use_linger(fx, 0);

	queue_bytes(ctx, &fx->app[0], 100);
	fake_send_full(5, 1);
	co_flush_all_final(ctx, CO_ST_flush_exec);
	assert_int_equal(stat_of(ctx, CO_ST_bytes_dropped), 100);
	assert_int_equal(fake_poll_calls(), 0);
	assert_int_equal(pending_fds(ctx), 0);
}

/* close */

static void test_close_sends_the_queue_and_forgets_the_fd(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	struct co_fd *f;
	int looks;

	queue_bytes(ctx, &fx->app[0], 100);
	looks = fake_classify_calls(5);
	f = co_close_begin(ctx, 5);
	assert_non_null(f);
	assert_true(app_wire_is(&fx->app[0], 100));
	assert_int_equal(app_queued(ctx, 5), 0);
	assert_int_equal(pending_fds(ctx), 0);
	assert_true(stat_of(ctx, CO_ST_flush_close) >= 1);
	/* No other thread can touch the fd until the real close is done. */
	assert_false(lock_is_free(&f->lock));
	co_close_end(f);
	assert_true(lock_is_free(&f->lock));

	/* The number now names something else, looked at afresh. */
	fake_socket(5, FAKE_NOT_SOCKET);
	assert_int_equal(test_write(ctx, 5, "abc", 3, 0), CO_PASSTHROUGH);
	assert_true(fake_classify_calls(5) > looks);
	assert_true(co_fd_passes(ctx, 5));
}

static void test_close_of_full_socket_waits_at_most_linger(void **state)
{
	struct fixture *fx = *state;
	uint64_t linger = 50 * 1000000ull;
	struct co_ctx *ctx = use_linger(fx, linger);
	uint64_t t0 = fake_clock(), waited;
	struct co_fd *f;

	queue_bytes(ctx, &fx->app[0], 100);
	fake_send_full(5, 1);
	f = co_close_begin(ctx, 5);
	assert_non_null(f);
	co_close_end(f);
	waited = fake_clock() - t0;
	assert_true(waited >= linger);
	assert_true(waited <= linger + 1000000);
	assert_int_equal(fake_wire_len(5), 0);
	assert_int_equal(stat_of(ctx, CO_ST_bytes_dropped), 100);
	assert_int_equal(pending_fds(ctx), 0);
}

static void test_close_of_unknown_and_passthrough_fds(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	struct co_fd *f;

	/* Never seen: nothing to do. */
	assert_null(co_close_begin(ctx, 3000));
	co_close_end(NULL);

	/* A pipe closed, the number reused by a socket: coalesced. */
	fake_socket(40, FAKE_NOT_SOCKET);
	assert_int_equal(test_write(ctx, 40, "abc", 3, 0), CO_PASSTHROUGH);
	assert_true(co_fd_passes(ctx, 40));
	f = co_close_begin(ctx, 40);
	assert_non_null(f);
	co_close_end(f);
	assert_false(co_fd_passes(ctx, 40));
	fake_socket(40, FAKE_TCP);
	check_coalesced(ctx, 40);
}

static void test_close_forgets_a_deferred_error(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;

	queue_bytes(ctx, &fx->app[0], 10);
	fake_send_error(5, EPIPE, 1);
	co_flush_all_nowait(ctx, CO_ST_flush_wait);
	co_close_end(co_close_begin(ctx, 5));
	/* The next socket with this number did nothing wrong. */
	assert_int_equal(app_write(ctx, &fx->app[0], 3, 0), 3);
}

/* forget and stop */

static void test_forget_drops_the_queue(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	ssize_t r;
	int looks;

	queue_bytes(ctx, &fx->app[0], 100);
	looks = fake_classify_calls(5);
	co_fd_forget(ctx, 5);
	assert_int_equal(fake_send_calls_total(), 0);
	assert_int_equal(app_queued(ctx, 5), 0);
	assert_int_equal(pending_fds(ctx), 0);
	assert_int_equal(stat_of(ctx, CO_ST_bytes_dropped), 100);

	/* The fd is looked at again on its next write, which is sent at once
	 * or queued; the dropped bytes are gone for good. */
	r = test_write(ctx, 5, "abc", 3, 0);
	assert_true(r == 3 || r == CO_PASSTHROUGH);
	assert_true(fake_classify_calls(5) > looks);
	assert_int_equal(app_queued(ctx, 5), r == 3 ? 3 : 0);
	assert_int_equal(fake_send_calls_total(), 0);
}

static void test_forget_a_passthrough_fd(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;

	fake_socket(40, FAKE_NOT_SOCKET);
	assert_int_equal(test_write(ctx, 40, "abc", 3, 0), CO_PASSTHROUGH);
	assert_true(co_fd_passes(ctx, 40));
	co_fd_forget(ctx, 40);
	assert_false(co_fd_passes(ctx, 40));
	fake_socket(40, FAKE_TCP);
	check_coalesced(ctx, 40);
}

static void test_forget_an_unknown_fd(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	int allocs = fake_alloc_calls();

	(void)fx;
	co_fd_forget(ctx, 3000);
	co_fd_forget(ctx, -1);
	co_fd_forget(ctx, CO_FD_LIMIT);
	assert_int_equal(fake_alloc_calls(), allocs);
	assert_null(co_fd_find(&ctx->fds, 3000));
	assert_int_equal(stat_of(ctx, CO_ST_bytes_dropped), 0);
}

static void test_forget_clears_a_deferred_error(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;

	queue_bytes(ctx, &fx->app[0], 10);
	fake_send_error(5, ECONNRESET, 1);
	co_flush_all_nowait(ctx, CO_ST_flush_wait);
	co_fd_forget(ctx, 5);
	/* The next socket with this number did nothing wrong. */
	assert_int_equal(app_write(ctx, &fx->app[0], 3, 0), 3);
}

static void test_stop_makes_a_socket_pass_through(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;

	/* Never written to yet. */
	fake_socket(40, FAKE_TCP);
	co_fd_stop(ctx, 40, CO_ST_passthrough_dup);
	assert_true(co_fd_passes(ctx, 40));
	assert_int_equal(stat_of(ctx, CO_ST_passthrough_dup), 1);
	assert_int_equal(write10(ctx, 40), CO_PASSTHROUGH);

	/* Already coalesced, queue sent first as the caller must. */
	queue_bytes(ctx, &fx->app[1], 10);
	assert_int_equal(co_flush_before(ctx, 6, CO_ST_flush_order, 0), 0);
	co_fd_stop(ctx, 6, CO_ST_passthrough_stdio);
	assert_true(co_fd_passes(ctx, 6));
	assert_int_equal(stat_of(ctx, CO_ST_passthrough_stdio), 1);
	assert_int_equal(write10(ctx, 6), CO_PASSTHROUGH);
	assert_true(app_wire_is(&fx->app[1], 10));
	assert_int_equal(pending_fds(ctx), 0);

	/* Stopping again, or stopping what never could be coalesced, is not
	 * counted. */
	co_fd_stop(ctx, 6, CO_ST_passthrough_stdio);
	assert_int_equal(stat_of(ctx, CO_ST_passthrough_stdio), 1);
	fake_socket(41, FAKE_NOT_SOCKET);
	co_fd_stop(ctx, 41, CO_ST_passthrough_stdio);
	assert_true(co_fd_passes(ctx, 41));
	assert_int_equal(stat_of(ctx, CO_ST_passthrough_stdio), 1);

	/* Until forgotten. */
	co_fd_forget(ctx, 40);
	assert_false(co_fd_passes(ctx, 40));
	check_coalesced(ctx, 40);
}

static void test_stop_sends_what_was_queued(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;

	queue_bytes(ctx, &fx->app[2], 100);
	co_fd_stop(ctx, 7, CO_ST_passthrough_dup);
	assert_true(app_wire_is(&fx->app[2], 100));
	assert_int_equal(stat_of(ctx, CO_ST_bytes_dropped), 0);
	assert_int_equal(pending_fds(ctx), 0);
	assert_true(co_fd_passes(ctx, 7));
	/* The next write follows them, through the kernel. */
	assert_int_equal(app_write(ctx, &fx->app[2], 10, 0), 10);
	assert_true(app_wire_is(&fx->app[2], 110));
}

/* flush-before */

static void test_flush_before_sends_the_queue(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;

	queue_bytes(ctx, &fx->app[0], 100);
	assert_int_equal(co_flush_before(ctx, 5, CO_ST_flush_order, 0), 0);
	assert_true(app_wire_is(&fx->app[0], 100));
	assert_int_equal(stat_of(ctx, CO_ST_flush_order), 1);
	assert_int_equal(pending_fds(ctx), 0);
	assert_false(fake_last_call().flags & MSG_DONTWAIT);
	/* Still coalesced. */
	assert_false(co_fd_passes(ctx, 5));
	queue_bytes(ctx, &fx->app[0], 10);

	/* Without blocking, when asked. */
	assert_int_equal(co_flush_before(ctx, 5, CO_ST_flush_order, MSG_DONTWAIT), 0);
	assert_true(fake_last_call().flags & MSG_DONTWAIT);
	assert_true(app_wire_is(&fx->app[0], 110));

	/* Nothing queued: no system call. */
	assert_int_equal(co_flush_before(ctx, 5, CO_ST_flush_order, 0), 0);
	assert_int_equal(fake_send_calls(5), 2);
}

static void test_flush_before_on_full_socket(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;

	queue_bytes(ctx, &fx->app[0], 100);
	fake_send_full(5, 1);
	/* The operation that must follow the queue must not be made yet. */
	assert_int_equal(co_flush_before(ctx, 5, CO_ST_flush_order, MSG_DONTWAIT), -EAGAIN);
	assert_int_equal(app_queued(ctx, 5), 100);
	assert_int_equal(co_flush_before(ctx, 5, CO_ST_flush_order, 0), -EAGAIN);
	assert_int_equal(app_queued(ctx, 5), 100);
	assert_false(co_fd_passes(ctx, 5));

	fake_send_full(5, 0);
	fake_send_error(5, EINTR, 1);
	assert_int_equal(co_flush_before(ctx, 5, CO_ST_flush_order, 0), -EINTR);
	assert_int_equal(app_queued(ctx, 5), 100);
	assert_int_equal(co_flush_before(ctx, 5, CO_ST_flush_order, 0), 0);
	assert_true(app_wire_is(&fx->app[0], 100));
}

static void test_flush_before_on_other_fds(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;

	/* Never seen, or never coalesced: nothing to send. */
	(void)fx;
	assert_int_equal(co_flush_before(ctx, 40, CO_ST_flush_order, 0), 0);
	assert_int_equal(co_flush_before(ctx, 3000, CO_ST_flush_order, 0), 0);
	fake_socket(41, FAKE_UDP);
	assert_int_equal(write10(ctx, 41), CO_PASSTHROUGH);
	assert_int_equal(co_flush_before(ctx, 41, CO_ST_flush_order, 0), 0);
	assert_int_equal(fake_send_calls_total(), 0);
	assert_int_equal(stat_of(ctx, CO_ST_flush_order), 0);
}

static void test_flush_before_error_is_deferred_to_the_next_write(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;

	queue_bytes(ctx, &fx->app[0], 100);
	fake_send_error(5, EPIPE, 1);
	/* The operation itself goes ahead (the kernel will have its say). */
	assert_int_equal(co_flush_before(ctx, 5, CO_ST_flush_order, 0), 0);
	assert_int_equal(app_queued(ctx, 5), 0);
	assert_int_equal(stat_of(ctx, CO_ST_bytes_dropped), 100);
	assert_int_equal(test_write(ctx, 5, "a", 1, 0), -EPIPE);
	/* The connection is broken: the kernel answers from now on. */
	assert_int_equal(test_write(ctx, 5, "a", 1, 0), CO_PASSTHROUGH);
	assert_true(co_fd_passes(ctx, 5));
}

/* fork */

/* Sets the fake clock to CLOCK_MONOTONIC's time: core waits for a busy fd's
 * lock on that clock, with deadlines it computes from sys.now_ns. */
static void align_clock(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	fake_clock_set((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec);
}

static void test_flush_before_fork_sends_every_queue(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	uint64_t t0 = fake_clock();
	int i;

	for (i = 0; i < NAPPS; i++)
		queue_bytes(ctx, &fx->app[i], 100 + (size_t)i);
	fake_send_limit(5, 30, 2);
	fake_send_full(6, 1);
	co_flush_all_before_fork(ctx);
	/* Sent as a write would send them (all of it, on a blocking socket)... */
	assert_true(app_wire_is(&fx->app[0], 100));
	assert_true(app_wire_is(&fx->app[2], 102));
	assert_false(fake_last_call().flags & MSG_DONTWAIT);
	/* ...but a full nonblocking socket keeps its queue, for the parent to
	 * send later: nothing dropped, nothing waited for. */
	assert_int_equal(app_queued(ctx, 6), 101);
	assert_int_equal(pending_fds(ctx), 1);
	assert_int_equal(stat_of(ctx, CO_ST_bytes_dropped), 0);
	assert_int_equal(fake_poll_calls(), 0);
	assert_int_equal(fake_clock(), t0);
	assert_true(stat_of(ctx, CO_ST_flush_fork) >= 2);

	fake_send_full(6, 0);
	co_flush_all_before_fork(ctx);
	assert_true(app_wire_is(&fx->app[1], 101));
	assert_int_equal(pending_fds(ctx), 0);
}

static void test_flush_before_fork_leaves_a_busy_fd(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	struct holder h;

	align_clock();
	queue_bytes(ctx, &fx->app[0], 10);
	queue_bytes(ctx, &fx->app[1], 10);
	holder_start(&h, &co_fd_find(&ctx->fds, 5)->lock);
	/* The thread holding fd 5 sends its queue itself; fork goes on. */
	co_flush_all_before_fork(ctx);
	assert_int_equal(fake_send_calls(5), 0);
	assert_true(app_wire_is(&fx->app[1], 10));
	holder_stop(&h);
	assert_int_equal(app_queued(ctx, 5), 10);
}

static void test_flush_before_fork_with_nothing_queued(void **state)
{
	struct fixture *fx = *state;

	co_flush_all_before_fork(fx->ctx);
	assert_int_equal(fake_send_calls_total(), 0);
	assert_int_equal(stat_of(fx->ctx, CO_ST_flush_fork), 0);
}

static void test_after_fork_child_empties_every_queue(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	int i;

	for (i = 0; i < NAPPS; i++)
		queue_bytes(ctx, &fx->app[i], 50);
	co_after_fork_child(ctx);
	for (i = 0; i < NAPPS; i++)
		assert_int_equal(app_queued(ctx, 5 + i), 0);
	assert_int_equal(pending_fds(ctx), 0);
	/* The parent sends those bytes; the child sends none of them. */
	co_flush_all_final(ctx, CO_ST_flush_exit);
	assert_int_equal(fake_send_calls_total(), 0);

	/* The child's own writes are sent as usual, and only they. */
	assert_int_equal(app_write(ctx, &fx->app[1], 5, 0), 5);
	co_flush_all_final(ctx, CO_ST_flush_exit);
	assert_int_equal(fake_wire_len(6), 5);
	assert_memory_equal(fake_wire(6, &(size_t){ 0 }), fx->app[1].src + 50, 5);
	assert_int_equal(pending_fds(ctx), 0);
}

/* The child's checks, as an exit status: 0 if all hold. */
static int child_after_fork(struct co_ctx *ctx, struct app *a)
{
	size_t len;
	const char *wire;

	alarm(10); /* A lock left held by the parent's thread would hang us. */
	co_after_fork_child(ctx);
	if (app_queued(ctx, a->fd) != 0 || atomic_load(&ctx->fds.pending_count) != 0)
		return 2;
	if (app_write(ctx, a, 5, 0) != 5)
		return 3;
	co_flush_all_final(ctx, CO_ST_flush_exit);
	wire = fake_wire(a->fd, &len);
	if (len != 5 || memcmp(wire, a->src + a->done - 5, 5) != 0)
		return 4;
	return 0;
}

static void test_after_fork_child_frees_locks_held_by_other_threads(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	struct holder h;
	int status;
	pid_t pid;

	queue_bytes(ctx, &fx->app[0], 50);
	holder_start(&h, &co_fd_find(&ctx->fds, 5)->lock);
	pid = fork();
	if (pid == 0)
		_exit(child_after_fork(ctx, &fx->app[0]));
	holder_stop(&h);
	assert_true(pid > 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	/* The parent still has its queue. */
	assert_int_equal(app_queued(ctx, 5), 50);
}

/* on_pending */

static _Atomic int pending_calls;

static void count_pending(struct co_ctx *ctx)
{
	(void)ctx;
	atomic_fetch_add(&pending_calls, 1);
}

static void test_on_pending_once_per_batch(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;

	atomic_store(&pending_calls, 0);
	ctx->on_pending = count_pending;
	queue_bytes(ctx, &fx->app[0], 10);
	assert_int_equal(atomic_load(&pending_calls), 1);
	queue_bytes(ctx, &fx->app[0], 10);
	queue_bytes(ctx, &fx->app[0], 10);
	assert_int_equal(atomic_load(&pending_calls), 1);

	/* Each fd's queue is a batch of its own. */
	queue_bytes(ctx, &fx->app[1], 10);
	assert_int_equal(atomic_load(&pending_calls), 2);

	/* A flush that leaves bytes behind does not start a new batch. */
	fake_send_limit(5, 5, 1);
	fake_send_full(5, 1);
	co_flush_all_nowait(ctx, CO_ST_flush_wait);
	assert_int_equal(app_queued(ctx, 5), 25);
	assert_int_equal(atomic_load(&pending_calls), 2);
	fake_send_full(5, 0);
	queue_bytes(ctx, &fx->app[0], 10);
	assert_int_equal(atomic_load(&pending_calls), 2);

	/* Once emptied, the next write starts one. */
	co_flush_all_nowait(ctx, CO_ST_flush_wait);
	assert_int_equal(pending_fds(ctx), 0);
	queue_bytes(ctx, &fx->app[0], 10);
	assert_int_equal(atomic_load(&pending_calls), 3);

	/* Writes that go straight out start none. */
	assert_int_equal(app_write(ctx, &fx->app[2], 40000, 0), 40000);
	assert_int_equal(atomic_load(&pending_calls), 3);

	/* Neither does dropping a queue; the next queued write does (the
	 * first write after it may be sent at once). */
	co_fd_forget(ctx, 5);
	assert_int_equal(atomic_load(&pending_calls), 3);
	assert_int_equal(app_write(ctx, &fx->app[0], 10, 0), 10);
	assert_int_equal(app_write(ctx, &fx->app[0], 10, 0), 10);
	assert_true(app_queued(ctx, 5) > 0);
	assert_int_equal(atomic_load(&pending_calls), 4);
}

/* Re-entry: on_pending runs with the fd's lock held, as a signal handler
 * interrupting a write would; what it calls must not wait for that lock. */

static struct {
	struct co_ctx *ctx;
	int fd;      /* The fd whose lock is held. */
	int other;   /* Another fd. */
	int entered;
	ssize_t same_write;
	ssize_t big_write;
	ssize_t other_write;
	int flush_before;
	struct co_fd *close;
} reentry;

static void reenter(struct co_ctx *ctx)
{
	static char big[CO_SIGNAL_WRITES_MAX + 1];

	if (reentry.entered++)
		return;
	reentry.same_write = test_write(ctx, reentry.fd, "r", 1, 0);
	reentry.big_write = test_write(ctx, reentry.fd, big, sizeof(big), 0);
	reentry.other_write = test_write(ctx, reentry.other, "o", 1, 0);
	co_flush_all_nowait(ctx, CO_ST_flush_wait);
	co_flush_if_pending(ctx, CO_ST_flush_read);
	co_flush_all_final(ctx, CO_ST_flush_exit);
	reentry.flush_before = co_flush_before(ctx, reentry.fd, CO_ST_flush_order, 0);
	co_fd_forget(ctx, reentry.fd);
	reentry.close = co_close_begin(ctx, reentry.fd);
}

static void test_reentry_on_the_locked_fd_is_queued_after(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	size_t len;

	memset(&reentry, 0, sizeof(reentry));
	reentry.fd = 5;
	reentry.other = 6;
	queue_bytes(ctx, &fx->app[1], 10);
	ctx->on_pending = reenter;
	queue_bytes(ctx, &fx->app[0], 10);
	ctx->on_pending = NULL;

	assert_int_equal(reentry.entered, 1);
	/* A small write on the fd being written is kept, and queued after the
	 * interrupted write once that one lets go of the fd. */
	assert_int_equal(reentry.same_write, 1);
	assert_int_equal(stat_of(ctx, CO_ST_writes_from_signal_handlers), 1);
	/* One too big to keep is handed back (it may overtake the queue). */
	assert_int_equal(reentry.big_write, CO_PASSTHROUGH);
	assert_int_equal(stat_of(ctx, CO_ST_passthrough_reentrant), 1);
	/* The rest leaves the fd alone, without waiting for it. */
	assert_null(reentry.close);
	assert_int_equal(reentry.flush_before, 0);
	assert_int_equal(app_queued(ctx, 5), 11);
	assert_int_equal(fake_send_calls(5), 0);
	assert_false(co_fd_passes(ctx, 5));
	/* Other fds are served as usual. */
	assert_int_equal(reentry.other_write, 1);
	assert_int_equal(app_queued(ctx, 6), 0);
	assert_int_equal(fake_wire_len(6), 11);

	/* Outside, the fd works again: the kept byte goes after the others. */
	co_flush_all_nowait(ctx, CO_ST_flush_wait);
	assert_int_equal(fake_wire_len(5), 11);
	assert_int_equal(fake_wire(5, &len)[10], 'r');
	assert_int_equal(stat_of(ctx, CO_ST_passthrough_reentrant), 1);
}

/* At exit, a thread may sit in a blocking send holding an fd's lock: the
 * final flush gives up on that fd at the linger deadline and carries on. */
static void test_final_flush_does_not_wait_forever_for_a_busy_fd(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = use_linger(fx, 20 * 1000000ull);
	struct holder h;

	align_clock();
	queue_bytes(ctx, &fx->app[0], 10);
	queue_bytes(ctx, &fx->app[1], 10);
	holder_start(&h, &co_fd_find(&ctx->fds, 5)->lock);
	co_flush_all_final(ctx, CO_ST_flush_exit);
	assert_int_equal(fake_send_calls(5), 0);
	assert_true(app_wire_is(&fx->app[1], 10));
	holder_stop(&h);
	assert_int_equal(app_queued(ctx, 5), 10);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_flush_due_waits_for_the_delay),
		T(test_flush_due_returns_the_earliest_deadline),
		T(test_flush_due_reports_stalled_fds),
		T(test_flush_due_keeps_the_queue_on_enobufs),
		T(test_close_retries_after_enobufs),
		T(test_flush_due_skips_a_busy_fd),
		T(test_flush_all_nowait_over_several_fds),
		T(test_flush_all_nowait_skips_a_busy_fd),
		T(test_flush_if_pending),
		T(test_flush_all_final_on_blocking_sockets),
		T(test_flush_all_final_with_nothing_queued),
		T(test_flush_all_final_waits_at_most_linger_then_drops),
		T(test_flush_all_final_sends_once_the_socket_drains),
		T(test_flush_all_final_without_linger_drops_at_once),
		T(test_close_sends_the_queue_and_forgets_the_fd),
		T(test_close_of_full_socket_waits_at_most_linger),
		T(test_close_of_unknown_and_passthrough_fds),
		T(test_close_forgets_a_deferred_error),
		T(test_forget_drops_the_queue),
		T(test_forget_a_passthrough_fd),
		T(test_forget_an_unknown_fd),
		T(test_forget_clears_a_deferred_error),
		T(test_stop_makes_a_socket_pass_through),
		T(test_stop_sends_what_was_queued),
		T(test_flush_before_sends_the_queue),
		T(test_flush_before_on_full_socket),
		T(test_flush_before_on_other_fds),
		T(test_flush_before_error_is_deferred_to_the_next_write),
		T(test_flush_before_fork_sends_every_queue),
		T(test_flush_before_fork_leaves_a_busy_fd),
		T(test_flush_before_fork_with_nothing_queued),
		T(test_after_fork_child_empties_every_queue),
		T(test_after_fork_child_frees_locks_held_by_other_threads),
		T(test_on_pending_once_per_batch),
		T(test_reentry_on_the_locked_fd_is_queued_after),
		T(test_final_flush_does_not_wait_forever_for_a_busy_fd),
	};
	return cmocka_run_group_tests_name("flush", tests, NULL, NULL);
}
