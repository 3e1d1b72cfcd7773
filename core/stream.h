/* Coalescing of writes on connected stream sockets: the interface the shim
 * calls. Results are >= 0 or -errno, or CO_PASSTHROUGH. */
#ifndef CO_STREAM_H
#define CO_STREAM_H

#include <stdatomic.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "ctx.h"

/* "Not handled here: make the call to libc yourself." Whatever was queued on
 * the fd has been sent first. Outside the range of -errno. */
#define CO_PASSTHROUGH (-4096 - 1)

/* What else a write call carries, besides bytes and flags. */
#define CO_WRITE_ADDR 1u    /* a destination address */
#define CO_WRITE_CONTROL 2u /* control data (SCM_RIGHTS...) */
/* The API of the call (enum co_api), counted per fd; CO_API_COUNT for a
 * message of a sendmmsg call after its first, which is no call of its own. */
#define CO_WRITE_API(api) ((unsigned)(api) << 8)
#define CO_WRITE_API_OF(how) ((how) >> 8)

/* Returns 1 if fd is known to be one that is never coalesced: the fast path
 * for pipes, files and everything else, without a lock. */
static inline int co_fd_passes(struct co_ctx *ctx, int fd)
{
	struct co_fd *f = co_fd_find(&ctx->fds, fd);

	return f && atomic_load_explicit(&f->kind, memory_order_relaxed) == CO_FD_PASS;
}

/* Returns 1 if fd is a datagram socket core queues for. */
static inline int co_fd_is_dgram(struct co_ctx *ctx, int fd)
{
	struct co_fd *f = co_fd_find(&ctx->fds, fd);

	return f && atomic_load_explicit(&f->kind, memory_order_relaxed) == CO_FD_DGRAM;
}

/* Handles one application write of the bytes in iov on fd (to addr, on a
 * datagram socket; CO_WRITE_ADDR in how without addr means an address core
 * is not shown), made with the API CO_WRITE_API_OF(how). Small writes are
 * copied into fd's queue; a large one, or one that fills the queue, goes out
 * with the queue in one sendmsg. Returns the number of bytes taken, -errno
 * (a deferred error of an earlier flush, or the kernel's), or
 * CO_PASSTHROUGH. In that last case *held is fd's entry, still locked, or
 * NULL: the caller makes the libc call, then calls co_write_end(*held), so
 * that no other thread's bytes land between the queue and this call's. */
ssize_t co_sendto(struct co_ctx *ctx, int fd, const struct iovec *iov, int iovcnt, int flags,
		  unsigned how, const struct sockaddr *addr, socklen_t addrlen, struct co_fd **held);

static inline ssize_t co_write(struct co_ctx *ctx, int fd, const struct iovec *iov, int iovcnt,
			       int flags, unsigned how, struct co_fd **held)
{
	return co_sendto(ctx, fd, iov, iovcnt, flags, how, NULL, 0, held);
}

/* A datagram socket learns the destinations the kernel accepted (dgram.c). */
void co__dgram_learn(struct co_fd *f, ssize_t r);

/* Ends a write handed back to libc, which returned r. */
static inline void co_write_end(struct co_fd *held, ssize_t r)
{
	if (held) {
		if (held->dg)
			co__dgram_learn(held, r);
		co__unlock_fd(held);
	}
}

/* After the flush before a read on fd: a failure of a flush on fd that the
 * kernel would have reported to this read too (a reset, a timeout; not
 * EPIPE, which only writes see), since the flush's sendmsg took it from the
 * socket. Returns it as -errno, once, or 0. */
int co_take_read_error(struct co_ctx *ctx, int fd);

/* The error a flush took from fd's socket and keeps for the application
 * (the kernel would have shown it in SO_ERROR and POLLERR): returns it (a
 * positive errno) or 0; with take, clears it as reading SO_ERROR does.
 * One load when no fd holds one. */
int co_fd_error(struct co_ctx *ctx, int fd, int take);

static inline int co_any_fd_error(struct co_ctx *ctx)
{
	return atomic_load_explicit(&ctx->fds.error_count, memory_order_relaxed) != 0;
}

/* Folds the calls counted in every fd entry into ctx->stats, before they
 * are written out; an entry another thread holds is folded next time.
 * Never waits. */
void co_collect_calls(struct co_ctx *ctx);

/* Flushes every queue without blocking, skipping queues another thread holds.
 * Costs one load when nothing is queued. trigger counts why. */
void co_flush_all_nowait(struct co_ctx *ctx, enum co_counter trigger);

static inline void co_flush_if_pending(struct co_ctx *ctx, enum co_counter trigger)
{
	if (atomic_load_explicit(&ctx->fds.pending_count, memory_order_relaxed) > 0)
		co_flush_all_nowait(ctx, trigger);
}

/* Flushes every queue, waiting as a blocking write would on blocking sockets
 * and at most the linger time on nonblocking ones; what still cannot be sent
 * is dropped and counted. For exit and exec. From then on, writes are sent
 * at once (after their fd's queue), until co_exit_cancelled. */
void co_flush_all_final(struct co_ctx *ctx, enum co_counter trigger);

/* An exec failed: the process goes on, and coalesces again. */
static inline void co_exit_cancelled(struct co_ctx *ctx)
{
	atomic_store(&ctx->exiting, 0);
}

/* Before an operation that must come after fd's queued bytes (sendfile,
 * splice, setsockopt...): sends the queue as a write on fd with these flags
 * (MSG_DONTWAIT or 0) would. Returns 0, or -EAGAIN / -EINTR when bytes are
 * still queued, in which case an operation that must follow them must not
 * be made now. */
int co_flush_before(struct co_ctx *ctx, int fd, enum co_counter trigger, int flags);

/* Before an operation that sends on fd's socket where the shim cannot see
 * it (sendfile, splice, copy_file_range): as co_flush_before, but an fd not
 * classified yet is classified first, so that what another fd of the same
 * socket (a duplicate) queued goes first too, as a write on fd with flags
 * would wait for it; that fd then stops coalescing. Returns 0, or -errno
 * (-EAGAIN...) when bytes that must go first are still queued. */
int co_flush_before_send(struct co_ctx *ctx, int fd, enum co_counter trigger, int flags);

/* Called before close(fd): sends what is queued (waiting as for exit), then
 * forgets fd. Returns the entry, still locked, so that no other thread can
 * queue on fd until co_close_end, called after the real close; or NULL. */
struct co_fd *co_close_begin(struct co_ctx *ctx, int fd);
void co_close_end(struct co_fd *f);

/* As co_close_begin, for close() itself, which must not wait for another
 * thread blocked in a send on fd (a full blocking socket: a plain close
 * would return at once). If fd's lock is not free within CO_CLOSE_WAIT_NS,
 * the socket moves to a private fd and fd's number gets a placeholder
 * (sys.hand_over); the holder sends what is queued through the private fd,
 * as its blocked write would have, and when it lets go of the lock closes
 * both. The number cannot be reused before, so nothing queued for the old
 * socket can reach a new one. Returns 1 in that case (the caller makes no
 * close of its own and reports success); else 0, with *held as
 * co_close_begin returns. At the fd limit there is no fd for the private
 * one: then the holder sends nothing more (the rest of its queue is
 * dropped, counted) and the caller closes fd itself at once. */
int co_close_or_hand_over(struct co_ctx *ctx, int fd, struct co_fd **held);

#define CO_CLOSE_WAIT_NS 10000000ull

/* fd now names a new file (socket, accept, dup target): forgets what was
 * known of the old one. Bytes still queued for it cannot be sent anywhere
 * and are dropped and counted. */
void co_fd_forget(struct co_ctx *ctx, int fd);

/* From now on fd is never coalesced, until it is closed or forgotten;
 * counted as reason if it was a socket that could have been. What it had
 * queued is sent first (waiting as for close). */
void co_fd_stop(struct co_ctx *ctx, int fd, enum co_counter reason);

/* One round of the deadline flusher: flushes, without blocking, each queue
 * whose deadline has passed. Fills stalled (at most max) with fds whose
 * socket was full. Returns the earliest deadline still ahead, or 0 if none. */
uint64_t co_flush_due(struct co_ctx *ctx, uint64_t now, int *stalled, int max,
		      int *nstalled);

/* In the parent before fork: sends every queue as a write would, so that
 * what the child writes on a shared socket comes after it; a full
 * nonblocking socket keeps its queue (the parent sends it later: the child
 * drops its copy), and a queue another thread holds for longer than the
 * delay is left to it. Never waits otherwise. */
void co_flush_all_before_fork(struct co_ctx *ctx);

/* In the child after fork: the parent owns every queued byte; the child
 * starts with empty queues and fresh locks. */
void co_after_fork_child(struct co_ctx *ctx);

#endif
