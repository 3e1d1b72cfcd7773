/* Internal: sending a queue, the one place core calls sendmsg. Every
 * function here expects the fd's lock to be held. */
#ifndef CO_SEND_H
#define CO_SEND_H

#include <errno.h>

#include "ctx.h"

/* Returns 1 if a send that failed with err (-errno) leaves the queue in
 * place, to be sent later: the socket is full (EAGAIN), the call was
 * interrupted (EINTR), or the kernel was short of buffers for a moment
 * (ENOBUFS, ENOMEM). Dropping the queue then would leave a hole in a
 * stream that goes on. Any other error breaks the connection. */
static inline int co__keeps_queue(ssize_t err)
{
	return err == -EAGAIN || err == -EINTR || err == -ENOBUFS || err == -ENOMEM;
}

/* Sends f's queue followed by the extra iovecs (not copied), until all is
 * sent, the kernel says EAGAIN, or an error. flags is MSG_DONTWAIT or 0
 * (then the socket's own blocking mode applies); MSG_NOSIGNAL is added.
 * Returns how many extra bytes were sent (all of them once the queue is
 * empty, fewer after a short send), or -errno if none was: errors for which
 * co__keeps_queue is true leave the rest queued; others drop the queue
 * (counted). */
ssize_t co__send_queue(struct co_ctx *ctx, int fd, struct co_fd *f,
		       const struct iovec *extra, int extra_cnt, size_t extra_len, int flags);

/* Sends f's queue (counted as trigger, unless that is CO_ST_COUNT).
 * Returns 0 once the queue is empty, or -errno: bytes remain queued when
 * co__keeps_queue(-errno), else the queue was dropped. */
int co__flush_locked(struct co_ctx *ctx, int fd, struct co_fd *f,
		     enum co_counter trigger, int flags);

/* As co__flush_locked, on behalf of no application call: a failure that
 * dropped the queue is kept and returned by the next write on fd. */
int co__flush_deferred(struct co_ctx *ctx, int fd, struct co_fd *f,
		       enum co_counter trigger, int flags);

/* Takes the outcome n (bytes sent or -errno) of one nonblocking send of
 * f's whole queue made by a batch (batch.c), counted as trigger, as
 * co__flush_deferred takes that of its sendmsg: the bytes that went leave
 * the queue; EAGAIN, EINTR, ENOBUFS and ENOMEM keep it; any other error
 * drops it and is kept for the next call on fd. Returns 0 once the queue
 * is empty, -EAGAIN after a short send (the rest waits for the next flush:
 * never a second send in one batch), or the error. */
int co__take_batch_result(struct co_ctx *ctx, int fd, struct co_fd *f,
			  enum co_counter trigger, ssize_t n);

/* A send on fd just failed with err: waits for room as a blocking send
 * would, but not past deadline_ns (monotonic). Returns 1 to send again, or
 * 0 when err is not worth waiting for or the deadline has passed. */
int co__wait_room(struct co_ctx *ctx, int fd, ssize_t err, uint64_t deadline_ns);

/* Sends f's queue as a blocking write would, waiting until deadline_ns
 * (monotonic) when the socket is nonblocking and full; what is left then is
 * dropped and counted. Returns 0 or -errno. */
int co__drain_locked(struct co_ctx *ctx, int fd, struct co_fd *f,
		     enum co_counter trigger, uint64_t deadline_ns);

/* Keeps err (> 0) as f's deferred error, or takes it back (returns it and
 * clears it): the one place deferred_err changes, so that error_count
 * stays true. fd's lock is held. */
void co__keep_error(struct co_ctx *ctx, struct co_fd *f, int err);
int co__take_error(struct co_ctx *ctx, struct co_fd *f);

/* Drops f's queue (counted as bytes_dropped). */
void co__discard_locked(struct co_ctx *ctx, int fd, struct co_fd *f);

/* Decides, once, whether fd is a connected stream socket that can be
 * coalesced (f->kind = CO_FD_STREAM) or never can be (CO_FD_PASS). Leaves
 * CO_FD_UNKNOWN when the answer may change: a bad fd, a socket not yet
 * connected. When another fd coalesces the same socket, fd is recorded as
 * passing and becomes CO_FD_BEHIND that fd (f->behind): the caller stops
 * coalescing it, then makes fd pass (after releasing fd's lock). */
void co__classify(struct co_ctx *ctx, int fd, struct co_fd *f);

/* fd (f, its entry, locked; or NULL when fd has none) passes from now on:
 * records its socket as having a passing fd, so that no fd coalesces it
 * while fd holds it. Returns another fd that coalesces the socket, which the
 * caller must stop (after releasing fd's lock), or -1. */
int co__pass_socket(struct co_ctx *ctx, int fd, struct co_fd *f);

/* Decides whether a write should skip the queue because it is alone
 * (stream.c). Returns 1 to send at once. */
int co__send_at_once(struct co_fd *f);

/* Forgets f's socket identity (fd's lock held). */
void co__release_id(struct co_ctx *ctx, int fd, struct co_fd *f);

/* Folds the writes queued on f since the last flush (and along, 1 if the
 * caller's own write goes in the same send) into the counters: writes and
 * bytes queued, writes per flush, delay. fd's lock is held. */
void co__fold_writes(struct co_ctx *ctx, struct co_fd *f, int along);

/* Folds the calls counted in f into the counters. fd's lock is held. */
void co__fold_calls(struct co_ctx *ctx, struct co_fd *f);

/* Brings fd's pending bit in line with its queue; when the queue has just
 * become non-empty, stamps its time and tells the deadline flusher. */
void co__sync_mark(struct co_ctx *ctx, int fd, struct co_fd *f);

#endif
