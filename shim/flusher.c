/* The deadline flusher: one background thread, started on the first queued
 * write, that sends each queue when its oldest byte has waited the configured
 * delay.
 *
 * It costs the write path nothing in steady state: a write that makes a
 * queue non-empty reads one flag, and only writes to the eventfd when the
 * thread has parked after a long idle spell. While the process is busy the
 * thread sleeps until the earliest deadline; while nothing is queued it
 * polls every delay for a while, then parks. Queues whose socket was full
 * are watched for POLLOUT. The thread blocks every signal. */
#include <pthread.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "shim.h"

#define CO_FLUSHER_MAX_STALLED 64
#define CO_FLUSHER_PARK_NS 50000000ull /* idle this long before parking */
#define CO_FLUSHER_STALLED_NS 50000000ull /* recheck full sockets this often */

static _Atomic int co_flusher_state; /* 0: none, 1: starting or running */
static _Atomic int co_flusher_parked;
static int co_flusher_wake_fd = -1;

static struct timespec to_timespec(uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000u),
			       .tv_nsec = (long)(ns % 1000000000u) };
	return ts;
}

static void drain_wake_fd(void)
{
	uint64_t v;

	if (REAL(read)(co_flusher_wake_fd, &v, sizeof(v)) < 0)
		return;
}

/* Sleeps until timeout_ns from now (forever if 0), a stalled socket
 * becoming writable, or a wake-up. */
static void wait_for_work(const int *stalled, int nstalled, uint64_t timeout_ns)
{
	struct pollfd pfd[CO_FLUSHER_MAX_STALLED + 1];
	struct timespec ts;
	int i;

	pfd[0].fd = co_flusher_wake_fd;
	pfd[0].events = POLLIN;
	for (i = 0; i < nstalled; i++) {
		pfd[i + 1].fd = stalled[i];
		pfd[i + 1].events = POLLOUT;
	}
	ts = to_timespec(timeout_ns);
	if (REAL(ppoll)(pfd, (nfds_t)nstalled + 1, timeout_ns ? &ts : NULL, NULL) > 0 &&
	    (pfd[0].revents & POLLIN))
		drain_wake_fd();
}

static void *flusher_main(void *unused)
{
	struct co_ctx *ctx = &co_shim_ctx;
	int stalled[CO_FLUSHER_MAX_STALLED];
	uint64_t now, next, idle_since = 0;
	int nstalled;

	(void)unused;
	prctl(PR_SET_TIMERSLACK, 1000UL);
	for (;;) {
		now = ctx->sys.now_ns();
		next = co_flush_due(ctx, now, stalled, CO_FLUSHER_MAX_STALLED, &nstalled);
		if (next) {
			idle_since = 0;
			wait_for_work(stalled, nstalled, next > now ? next - now : 1);
		} else if (nstalled) {
			idle_since = 0;
			wait_for_work(stalled, nstalled, CO_FLUSHER_STALLED_NS);
		} else if (!idle_since || now - idle_since < CO_FLUSHER_PARK_NS) {
			if (!idle_since)
				idle_since = now;
			wait_for_work(NULL, 0, ctx->cfg.delay_ns);
		} else {
			atomic_store(&co_flusher_parked, 1);
			if (atomic_load(&ctx->fds.pending_count) == 0)
				wait_for_work(NULL, 0, 0);
			atomic_store(&co_flusher_parked, 0);
			idle_since = 0;
		}
	}
	return NULL;
}

static void flusher_start(void)
{
	sigset_t all, old;
	pthread_attr_t attr;
	pthread_t thread;

	co_flusher_wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (co_flusher_wake_fd < 0) {
		co_log(&co_shim_ctx, CO_LOG_ERROR, "no eventfd for the flusher; "
						   "queues are flushed by the application's calls only");
		return;
	}
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 64 * 1024);
	if (pthread_create(&thread, &attr, flusher_main, NULL) != 0)
		co_log(&co_shim_ctx, CO_LOG_ERROR, "cannot start the flusher thread");
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

void co_flusher_notify(struct co_ctx *ctx)
{
	uint64_t one = 1;
	int expected = 0, saved = errno;

	(void)ctx;
	if (atomic_load_explicit(&co_flusher_state, memory_order_relaxed) == 0 &&
	    atomic_compare_exchange_strong(&co_flusher_state, &expected, 1))
		flusher_start();
	else if (atomic_load(&co_flusher_parked) && atomic_exchange(&co_flusher_parked, 0))
		REAL(write)(co_flusher_wake_fd, &one, sizeof(one));
	errno = saved;
}

void co_flusher_after_fork_child(void)
{
	if (co_flusher_wake_fd >= 0)
		REAL(close)(co_flusher_wake_fd);
	co_flusher_wake_fd = -1;
	atomic_store(&co_flusher_parked, 0);
	atomic_store(&co_flusher_state, 0);
}
