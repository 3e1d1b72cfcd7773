/* The deadline flusher: one background thread, started on the first queued
 * write, that sends each queue when its oldest byte has waited the configured
 * delay.
 *
 * It costs the write path nothing in steady state: a write that makes a
 * queue non-empty reads one flag. While the process is busy the thread
 * sleeps until the earliest deadline; while nothing is queued it looks
 * every delay for a while, then ends, and the next queued write starts a
 * new one. It must end: a program whose last thread calls pthread_exit()
 * exits only when no thread is left, ours included. Queues whose socket was
 * full are watched for POLLOUT. The thread blocks every signal, and owns no
 * fd: programs that close every fd they did not open (daemons, closefrom)
 * must not be able to take one from under it, nor have it write into the
 * fd that gets the number next. With COALESCE_STATS_INTERVAL_MS it also
 * rewrites the statistics file that often while it runs (opening the file
 * for a moment each time). */
#include <pthread.h>
#include <stdatomic.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "shim.h"

#define CO_FLUSHER_MAX_STALLED 64
#define CO_FLUSHER_IDLE_NS 50000000ull /* idle this long before ending */
#define CO_FLUSHER_STALLED_NS 50000000ull /* recheck full sockets this often */

static _Atomic int co_flusher_state; /* 0: none, 1: starting or running */

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

/* After an idle spell: returns 0 if the thread is to end, or 1 if a queue
 * became non-empty meanwhile and no other thread took over. With
 * co_flusher_notify (pending_count raised first, state read after), a
 * queued byte always has a flusher. */
static int keep_going(struct co_ctx *ctx)
{
	int expected = 0;

	atomic_store(&co_flusher_state, 0);
	if (atomic_load(&ctx->fds.pending_count) == 0)
		return 0;
	return atomic_compare_exchange_strong(&co_flusher_state, &expected, 1);
}

static void *flusher_main(void *unused)
{
	struct co_ctx *ctx = &co_shim_ctx;
	int stalled[CO_FLUSHER_MAX_STALLED];
	uint64_t now, next, idle_since = 0, stats_due = 0;
	int nstalled;

	(void)unused;
	prctl(PR_SET_TIMERSLACK, 1000UL);
	for (;;) {
		now = ctx->sys.now_ns();
		if (ctx->cfg.stats_interval_ns && now >= stats_due) {
			co_shim_write_stats();
			stats_due = now + ctx->cfg.stats_interval_ns;
		}
		next = co_flush_due(ctx, now, stalled, CO_FLUSHER_MAX_STALLED, &nstalled);
		if (next) {
			idle_since = 0;
			wait_for_work(stalled, nstalled, next > now ? next - now : 1);
		} else if (nstalled) {
			idle_since = 0;
			wait_for_work(stalled, nstalled, CO_FLUSHER_STALLED_NS);
		} else if (!idle_since || now - idle_since < CO_FLUSHER_IDLE_NS) {
			if (!idle_since)
				idle_since = now;
			wait_for_work(NULL, 0, ctx->cfg.delay_ns);
		} else if (keep_going(ctx)) {
			idle_since = 0;
		} else {
			return NULL;
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
	if (atomic_load(&co_flusher_state) == 0 &&
	    atomic_compare_exchange_strong(&co_flusher_state, &expected, 1))
		flusher_start();
	errno = saved;
}

void co_flusher_after_fork_child(void)
{
	atomic_store(&co_flusher_state, 0);
}
