/* The deadline flusher: one background thread, started on the first queued
 * write, that sends each queue when its oldest byte has waited the configured
 * delay.
 *
 * It costs the write path nothing in steady state: a write that makes a
 * queue non-empty reads one flag, and makes a futex wake only when the
 * thread has parked after a long idle spell. While the process is busy the
 * thread sleeps until the earliest deadline; while nothing is queued it
 * looks every delay for a while, then parks. Queues whose socket was full
 * are watched for POLLOUT. The thread blocks every signal, and owns no fd:
 * programs that close every fd they did not open (daemons, closefrom) must
 * not be able to take one from under it, nor have it write into the fd
 * that gets the number next. */
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "shim.h"

#define CO_FLUSHER_MAX_STALLED 64
#define CO_FLUSHER_PARK_NS 50000000ull /* idle this long before parking */
#define CO_FLUSHER_STALLED_NS 50000000ull /* recheck full sockets this often */

static _Atomic int co_flusher_state; /* 0: none, 1: starting or running */
static _Atomic int co_flusher_parked; /* the futex word: 1 while parked */

static struct timespec to_timespec(uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000u),
			       .tv_nsec = (long)(ns % 1000000000u) };
	return ts;
}

/* Sleeps for timeout_ns, or until one of the stalled sockets can take more. */
static void wait_for_work(const int *stalled, int nstalled, uint64_t timeout_ns)
{
	struct pollfd pfd[CO_FLUSHER_MAX_STALLED];
	struct timespec ts = to_timespec(timeout_ns);
	int i;

	for (i = 0; i < nstalled; i++) {
		pfd[i].fd = stalled[i];
		pfd[i].events = POLLOUT;
	}
	REAL(ppoll)(pfd, (nfds_t)nstalled, &ts, NULL);
}

/* Sleeps until co_flusher_notify, unless a queue became non-empty meanwhile. */
static void park(struct co_ctx *ctx)
{
	atomic_store(&co_flusher_parked, 1);
	if (atomic_load(&ctx->fds.pending_count) == 0)
		syscall(SYS_futex, &co_flusher_parked, FUTEX_WAIT_PRIVATE, 1, NULL, NULL, 0);
	atomic_store(&co_flusher_parked, 0);
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
			park(ctx);
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

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	/* The default stack size: glibc carves the program's static TLS out of
	 * it, which a small fixed size may not hold. It is address space only. */
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&thread, &attr, flusher_main, NULL) != 0)
		co_log(&co_shim_ctx, CO_LOG_ERROR, "cannot start the flusher thread; "
						   "queues are flushed by the application's calls only");
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

void co_flusher_notify(struct co_ctx *ctx)
{
	int expected = 0, saved = errno;

	(void)ctx;
	if (atomic_load_explicit(&co_flusher_state, memory_order_relaxed) == 0 &&
	    atomic_compare_exchange_strong(&co_flusher_state, &expected, 1))
		flusher_start();
	else if (atomic_load(&co_flusher_parked) && atomic_exchange(&co_flusher_parked, 0))
		syscall(SYS_futex, &co_flusher_parked, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
	errno = saved;
}

void co_flusher_after_fork_child(void)
{
	atomic_store(&co_flusher_parked, 0);
	atomic_store(&co_flusher_state, 0);
}
