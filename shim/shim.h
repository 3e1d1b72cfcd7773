/* Internal interface between the shim's files. */
#ifndef CO_SHIM_H
#define CO_SHIM_H

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/socket.h>

#include "../core/stream.h"
#include "real.h"

#define CO_HOOK __attribute__((visibility("default")))

extern struct co_ctx co_shim_ctx;

/* Non-zero while the shim coalesces: set by the constructor unless
 * COALESCE_DISABLE=1, cleared by the destructor. Atomic: the destructor
 * runs in the thread that called exit while others may be in a hook.
 * Relaxed: nothing else is published through it. */
extern _Atomic int co_shim_on;

static inline int co_shim_active(void)
{
	return atomic_load_explicit(&co_shim_on, memory_order_relaxed);
}

/* The pid this process had at start or fork: differs in a vfork child,
 * which shares our memory and must not touch the queues. */
extern pid_t co_shim_pid;

int co_shim_in_vfork_child(void);

/* Turns a core result into the libc convention: sets errno and returns -1
 * for -errno, and raises SIGPIPE for EPIPE unless the call said
 * MSG_NOSIGNAL, as the kernel would have. */
static inline ssize_t co_shim_result(ssize_t r, int flags)
{
	if (r >= 0)
		return r;
	if (r == -EPIPE && !(flags & MSG_NOSIGNAL))
		raise(SIGPIPE);
	errno = (int)-r;
	return -1;
}

/* Starts the deadline flusher on first need and wakes it if it sleeps. */
void co_flusher_notify(struct co_ctx *ctx);

/* In a forked child: the flusher thread is gone; start afresh on demand. */
void co_flusher_after_fork_child(void);

/* Catches the default-disposition fatal signals (shim/hooks_signal.c). */
void co_signals_init(void);
int co_signals_take_over(int sig);

/* The io_uring ring (shim/uring.c): sys.ring_send_batch; told by the close
 * hooks that the fds first..last are being closed; dropped in a forked
 * child. */
int co_uring_send_batch(struct co_ring_req *reqs, int n);
void co_uring_fds_closing(unsigned first, unsigned last);
void co_uring_after_fork_child(void);

/* Writes the statistics file if COALESCE_STATS names one. */
void co_shim_write_stats(void);

#endif
