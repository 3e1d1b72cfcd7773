/* Everything core knows about one process: the system call table, the
 * settings, the counters and the fd table. The shim owns one; each unit
 * test makes its own. */
#ifndef CO_CTX_H
#define CO_CTX_H

#include "config.h"
#include "fdtable.h"
#include "sockmap.h"
#include "stats.h"
#include "sys.h"

struct co_ctx {
	struct co_sys sys;
	struct co_config cfg;
	struct co_stats stats;
	/* Called (fd lock held) each time a queue becomes non-empty, so that
	 * the deadline gets enforced. Must be cheap: it runs once per batch. */
	void (*on_pending)(struct co_ctx *ctx);
	/* Set by the final flush (exit, exec): from then on a write sends its
	 * queue and itself at once, since no flush will come after it. */
	_Atomic int exiting;
	/* Set when flushes of many fds must not use sys.ring_send_batch: the
	 * backend is writev, there is no ring, or it failed for good. */
	_Atomic int ring_off;
	/* Set once the kernel refused a UDP GSO send of more segments than
	 * older kernels take (64), and took 64: later ones stay within that. */
	_Atomic int gso_segments_low;
	struct co_sockmap socks;
	struct co_fdtable fds;
};

/* Prepares ctx with the given table and settings: counters zero, fd table empty. */
void co_ctx_init(struct co_ctx *ctx, const struct co_sys *sys, const struct co_config *cfg);

/* Formats a message and hands it to sys.log_write if level is enabled. */
void co_log(struct co_ctx *ctx, enum co_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
