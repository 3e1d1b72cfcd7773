/* Death by a signal whose disposition is the default (docker stop sends
 * SIGTERM): without care the process dies with its queues. Where the
 * application leaves one of the signals below at SIG_DFL, the shim catches
 * it, flushes every queue without blocking, restores SIG_DFL and raises the
 * signal again, so that the process dies as it would have, with the same
 * signal, status and core dump.
 *
 * The application never sees this: sigaction and signal report the
 * disposition it set (SIG_DFL here), and a handler it installs replaces the
 * shim's. Not done for pid 1 (the kernel ignores default-disposition
 * signals sent to a namespace's init: a caught one would only interrupt its
 * system calls). SIGKILL and abort() cannot be caught: the deadline bounds
 * what they lose. */
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "shim.h"

static const int co_fatal_signals[] = {
	SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGALRM, SIGPIPE,
};

/* Per signal: 1 while the shim's handler stands in for the application's
 * SIG_DFL, and the disposition the application set, as it set it. */
static _Atomic int co_sig_ours[NSIG];
static struct sigaction co_sig_app[NSIG];

static void on_fatal_signal(int sig)
{
	struct sigaction dfl;
	sigset_t set;
	int saved = errno;

	if (co_shim_active() && !co_shim_in_vfork_child()) {
		co_flush_all_nowait(&co_shim_ctx, CO_ST_flush_signal);
		/* No destructor runs after this signal: the counters now. */
		co_shim_write_stats();
	}
	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	REAL(sigaction)(sig, &dfl, NULL);
	sigemptyset(&set);
	sigaddset(&set, sig);
	raise(sig);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	/* Still here: the default action ignores it (a stopped or init
	 * process). Stand in again. */
	co_signals_take_over(sig);
	errno = saved;
}

/* Puts the shim's handler in place of SIG_DFL for sig. Returns 0 or -1. */
int co_signals_take_over(int sig)
{
	struct sigaction act;

	memset(&act, 0, sizeof(act));
	act.sa_handler = on_fatal_signal;
	act.sa_flags = SA_RESTART;
	sigfillset(&act.sa_mask);
	if (REAL(sigaction)(sig, &act, NULL) < 0)
		return -1;
	atomic_store(&co_sig_ours[sig], 1);
	return 0;
}

static int is_fatal_signal(int sig)
{
	size_t i;

	for (i = 0; i < sizeof(co_fatal_signals) / sizeof(co_fatal_signals[0]); i++)
		if (co_fatal_signals[i] == sig)
			return 1;
	return 0;
}

static int is_default(const struct sigaction *act)
{
	return !(act->sa_flags & SA_SIGINFO) && act->sa_handler == SIG_DFL;
}

void co_signals_init(void)
{
	struct sigaction old;
	size_t i;
	int sig;

	if (getpid() == 1)
		return;
	for (i = 0; i < sizeof(co_fatal_signals) / sizeof(co_fatal_signals[0]); i++) {
		sig = co_fatal_signals[i];
		if (REAL(sigaction)(sig, NULL, &old) == 0 && is_default(&old)) {
			co_sig_app[sig] = old;
			co_signals_take_over(sig);
		}
	}
}

CO_HOOK int sigaction(int sig, const struct sigaction *act, struct sigaction *oldact)
{
	struct sigaction app_old;

	if (sig <= 0 || sig >= NSIG || !is_fatal_signal(sig) || !co_shim_active() || getpid() == 1)
		return REAL(sigaction)(sig, act, oldact);
	if (!atomic_load(&co_sig_ours[sig])) {
		/* The application's own disposition is in place. */
		if (REAL(sigaction)(sig, act, oldact) < 0)
			return -1;
		if (act && is_default(act)) {
			co_sig_app[sig] = *act;
			co_signals_take_over(sig);
		}
		return 0;
	}
	app_old = co_sig_app[sig];
	if (act && !is_default(act)) {
		if (REAL(sigaction)(sig, act, NULL) < 0)
			return -1;
		atomic_store(&co_sig_ours[sig], 0);
	} else if (act) {
		co_sig_app[sig] = *act;
	}
	if (oldact)
		*oldact = app_old;
	return 0;
}

CO_HOOK sighandler_t signal(int sig, sighandler_t handler)
{
	struct sigaction act, old;

	memset(&act, 0, sizeof(act));
	act.sa_handler = handler;
	act.sa_flags = SA_RESTART;
	if (sigaction(sig, &act, &old) < 0)
		return SIG_ERR;
	return old.sa_handler;
}
