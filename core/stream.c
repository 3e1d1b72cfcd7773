/* The write path: classifying an fd once, queueing small writes, sending
 * large ones along with the queue. */
#include "stream.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>

#include "dgram.h"
#include "send.h"

/* Flags a queued write may carry: the rest need the kernel to see the call. */
#define CO_QUEUE_FLAGS (MSG_DONTWAIT | MSG_NOSIGNAL | MSG_MORE)

static int sockopt_int(struct co_ctx *ctx, int fd, int name, int *val)
{
	socklen_t len = sizeof(*val);

	return ctx->sys.getsockopt(fd, SOL_SOCKET, name, val, &len);
}

/* Tells sockmap_claim whether fd still holds socket id. */
static int still_holds(void *ctxp, int fd, uint64_t id)
{
	struct co_fd *f = co_fd_find(&((struct co_ctx *)ctxp)->fds, fd);

	return f && atomic_load_explicit(&f->sock_id, memory_order_relaxed) == id;
}

void co__release_id(struct co_ctx *ctx, int fd, struct co_fd *f)
{
	uint64_t id = atomic_load_explicit(&f->sock_id, memory_order_relaxed);

	if (id) {
		sockmap_release(&ctx->socks, id, fd);
		atomic_store_explicit(&f->sock_id, 0, memory_order_relaxed);
	}
}

int co__pass_socket(struct co_ctx *ctx, int fd, struct co_fd *f)
{
	uint64_t id = f ? atomic_load_explicit(&f->sock_id, memory_order_relaxed) : 0;
	int recorded, owner;

	if (!id && (ctx->sys.socket_id(fd, &id) < 0 || id == 0))
		return -1;
	owner = sockmap_pass(&ctx->socks, &ctx->sys, id, f ? fd : -1, still_holds, ctx, &recorded);
	if (f && recorded)
		atomic_store_explicit(&f->sock_id, id, memory_order_relaxed);
	return owner;
}

void co__classify(struct co_ctx *ctx, int fd, struct co_fd *f)
{
	struct sockaddr_storage peer;
	socklen_t len = sizeof(peer);
	int type, domain, protocol, r, other, recorded;
	uint64_t id;

	r = sockopt_int(ctx, fd, SO_TYPE, &type);
	if (r == -ENOTSOCK) {
		co_stat_add(&ctx->stats, CO_ST_passthrough_not_socket, 1);
		atomic_store(&f->kind, CO_FD_PASS);
		return;
	}
	if (r < 0)
		return;
	if ((type != SOCK_STREAM && type != SOCK_DGRAM) ||
	    sockopt_int(ctx, fd, SO_DOMAIN, &domain) < 0 ||
	    sockopt_int(ctx, fd, SO_PROTOCOL, &protocol) < 0 ||
	    !(domain == AF_UNIX ||
	      ((domain == AF_INET || domain == AF_INET6) &&
	       protocol == (type == SOCK_STREAM ? IPPROTO_TCP : IPPROTO_UDP)))) {
		co_stat_add(&ctx->stats, CO_ST_passthrough_not_stream, 1);
		atomic_store(&f->kind, CO_FD_PASS);
		return;
	}
	/* A stream socket is coalesced once connected; a datagram socket
	 * either way (its sends may name their destination). */
	r = ctx->sys.getpeername(fd, (struct sockaddr *)&peer, &len);
	if (r < 0 && type == SOCK_STREAM) {
		co_stat_add(&ctx->stats, CO_ST_passthrough_not_connected, 1);
		return;
	}
	if (ctx->sys.socket_id(fd, &id) < 0 || id == 0) {
		co_stat_add(&ctx->stats, CO_ST_passthrough_not_stream, 1);
		atomic_store(&f->kind, CO_FD_PASS);
		return;
	}
	other = sockmap_claim(&ctx->socks, &ctx->sys, id, fd, still_holds, ctx, &recorded);
	if (recorded)
		atomic_store_explicit(&f->sock_id, id, memory_order_relaxed);
	if (other == CO_SOCK_MINE && type == SOCK_STREAM) {
		f->tcp = domain != AF_UNIX;
		atomic_store(&f->kind, CO_FD_STREAM);
		return;
	}
	if (other == CO_SOCK_MINE && co__dgram_setup(ctx, fd, f, domain, r == 0) == 0) {
		atomic_store(&f->kind, CO_FD_DGRAM);
		return;
	}
	co_stat_add(&ctx->stats, recorded && other != CO_SOCK_MINE ? CO_ST_passthrough_dup
								   : CO_ST_passthrough_nomem, 1);
	f->behind = other;
	atomic_store(&f->kind, other >= 0 ? CO_FD_BEHIND : CO_FD_PASS);
}

/* Returns the counter for why a write on a stream socket cannot be queued,
 * or CO_ST_COUNT if it can. An address on a connected TCP socket is ignored
 * by the kernel (sockperf sends that way); on a Unix one it is an error. */
static enum co_counter unsupported(const struct co_fd *f, int flags, unsigned how, int iovcnt,
				   size_t total)
{
	if (how & CO_WRITE_CONTROL)
		return CO_ST_passthrough_control;
	if ((how & CO_WRITE_ADDR) && !f->tcp)
		return CO_ST_passthrough_address;
	if ((flags & ~CO_QUEUE_FLAGS) || iovcnt < 0 || iovcnt > IOV_MAX || total > SSIZE_MAX)
		return CO_ST_passthrough_flags;
	return CO_ST_COUNT;
}

/* After a send that took only part of the caller's bytes: returns 1 if
 * the rest is to be queued, so that the caller sees its small write taken
 * whole, as it would have without the queue: the kernel splitting a
 * nonblocking write (it takes a small write whole or not at all), or a
 * blocking send interrupted by a signal (or a send timeout) after part of
 * it, a wait that the queue sent along made likely. 0 after an error or a
 * close meanwhile: the caller sees the short count. fd's lock is held. */
static int short_send_splits(struct co_fd *f)
{
	return !f->deferred_err && !atomic_load_explicit(&f->close_pending, memory_order_acquire);
}

/* Sends the queue and the caller's bytes together, without copying them.
 * If the kernel is full, or takes only part of a small write, and the rest
 * fits in the queue after all, queues it: a small write is not split (the
 * kernel takes a small write on a Unix socket whole or not at all, and
 * another thread's bytes, or a signal handler's, must not land inside it).
 * Returns what co_write returns. */
static ssize_t write_through(struct co_ctx *ctx, int fd, struct co_fd *f,
			     const struct iovec *iov, int iovcnt, size_t total, int flags)
{
	enum co_counter trigger = total >= ctx->cfg.large_bytes ? CO_ST_flush_large : CO_ST_flush_size;
	size_t sent;
	ssize_t r;

	co_stat_add(&ctx->stats, trigger, 1);
	r = co__send_queue(ctx, fd, f, iov, iovcnt, total, flags & MSG_DONTWAIT);
	sent = r > 0 ? (size_t)r : 0;
	if ((r == -EAGAIN || (r >= 0 && sent < total && short_send_splits(f))) &&
	    total < ctx->cfg.large_bytes &&
	    pending_len(&f->q) + total - sent <= ctx->cfg.max_bytes &&
	    pending_append_from(&f->q, &ctx->sys, iov, iovcnt, sent, total - sent) == 0) {
		f->writes++;
		f->wbytes += total - sent;
		r = (ssize_t)total;
	}
	co__sync_mark(ctx, fd, f);
	return r;
}

/* Decides whether a write should skip the queue because it is alone.
 *
 * A request/response client writes a request, then waits for the answer;
 * queueing that one write gains nothing and costs the deadline machinery.
 * Writes on an fd between two reads or waits of the writing thread form a
 * burst. When the previous burst was a single write, the first write of
 * the next one is sent at once (the queue being empty); any further write in
 * the same burst is queued. fd's lock is held. Returns 1 to send at once. */
int co__send_at_once(struct co_fd *f)
{
	unsigned epoch = co__wait_epoch;

	if (f->burst_epoch != epoch || f->burst == 0) {
		f->direct = f->burst <= 1;
		f->burst = 0;
		f->burst_epoch = epoch;
	}
	if (f->burst < UINT_MAX)
		f->burst++;
	return f->direct && f->burst == 1 && pending_len(&f->q) == 0;
}

/* Writes between two looks at the clock by a writer whose queue grows. */
#define CO_DEADLINE_CHECK 64u

/* Queues a write on a stream socket, or sends it with the queue. fd's lock
 * is held. Returns what co_write returns. */
static ssize_t stream_write(struct co_ctx *ctx, int fd, struct co_fd *f,
			    const struct iovec *iov, int iovcnt, int flags, unsigned how)
{
	enum co_counter reason;
	size_t total = 0;
	int i, err;

	err = co__take_error(ctx, f);
	if (err) {
		/* The connection is broken: from now on the kernel answers
		 * every write itself (EPIPE), as it would have. */
		atomic_store(&f->kind, CO_FD_PASS);
		return -err;
	}
	for (i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len > SSIZE_MAX - total) {
			total = (size_t)SSIZE_MAX + 1;
			break;
		}
		total += iov[i].iov_len;
	}
	reason = unsupported(f, flags, how, iovcnt, total);
	if (reason == CO_ST_COUNT && atomic_load_explicit(&ctx->exiting, memory_order_relaxed))
		reason = CO_ST_passthrough_exiting;
	if (reason != CO_ST_COUNT) {
		err = co__flush_locked(ctx, fd, f, CO_ST_flush_order, flags & MSG_DONTWAIT);
		if (err)
			return err;
		co_stat_add(&ctx->stats, reason, 1);
		return CO_PASSTHROUGH;
	}
	if (total == 0)
		return 0;
	if (ctx->cfg.direct && co__send_at_once(f)) {
		co_stat_add(&ctx->stats, CO_ST_writes_direct, 1);
		return CO_PASSTHROUGH;
	}
	if (total >= ctx->cfg.large_bytes || pending_len(&f->q) + total >= ctx->cfg.max_bytes)
		return write_through(ctx, fd, f, iov, iovcnt, total, flags);
	if (pending_append(&f->q, &ctx->sys, iov, iovcnt, total) < 0) {
		err = co__flush_locked(ctx, fd, f, CO_ST_flush_order, flags & MSG_DONTWAIT);
		if (err)
			return err;
		co_stat_add(&ctx->stats, CO_ST_passthrough_nomem, 1);
		return CO_PASSTHROUGH;
	}
	f->writes++;
	f->wbytes += total;
	co__sync_mark(ctx, fd, f);
	/* A writer that keeps a queue growing sends it itself once it is due:
	 * with every core busy, the deadline flusher may not run in time. One
	 * clock read every CO_DEADLINE_CHECK writes. */
	if ((f->writes & (CO_DEADLINE_CHECK - 1)) == 0 &&
	    ctx->sys.now_ns() >= f->first_ns + ctx->cfg.delay_ns)
		co__flush_deferred(ctx, fd, f, CO_ST_flush_deadline, flags & MSG_DONTWAIT);
	return (ssize_t)total;
}

/* A signal handler writes on fd while its own thread, interrupted, holds
 * fd's lock. Keeps the bytes in this thread's co__signal_writes if they fit
 * (no allocation, no lock: this runs in the handler), to be queued after the
 * interrupted operation. Returns how many bytes were kept (all of them),
 * or -1 if they must go to libc. */
static ssize_t keep_signal_write(struct co_ctx *ctx, int fd, const struct iovec *iov, int iovcnt,
			     int flags, unsigned how)
{
	size_t total = 0, len = co__signal_writes.len;
	int i;

	if (how || (flags & ~CO_QUEUE_FLAGS) || iovcnt < 0 ||
	    ((len || co__signal_writes.stop) && co__signal_writes.fd != fd) ||
	    (len && co__signal_writes.dgram))
		return -1;
	for (i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len > CO_SIGNAL_WRITES_MAX - len - total)
			return -1;
		total += iov[i].iov_len;
	}
	for (i = 0; i < iovcnt; i++) {
		memcpy(co__signal_writes.buf + len, iov[i].iov_base, iov[i].iov_len);
		len += iov[i].iov_len;
	}
	co__signal_writes.ctx = ctx;
	co__signal_writes.fd = fd;
	co__signal_writes.len = len;
	co_stat_add(&ctx->stats, CO_ST_writes_from_signal_handlers, 1);
	return (ssize_t)total;
}

/* A signal handler's kept bytes (co__signal_writes) that cannot join fd's
 * queue (memory ran out, or fd no longer coalesces): sends the queue and
 * them as the handler's blocking write would have, waiting at most the
 * linger time on a nonblocking socket; what goes out leaves the buffer.
 * What cannot be sent is dropped and counted. fd's lock is held. */
static void send_kept(struct co_ctx *ctx, int fd, struct co_fd *f)
{
	uint64_t deadline = ctx->sys.now_ns() + ctx->cfg.linger_ns;
	struct iovec rest = { .iov_base = co__signal_writes.buf };
	ssize_t n;

	while (co__signal_writes.len) {
		rest.iov_len = co__signal_writes.len;
		n = co__send_queue(ctx, fd, f, &rest, 1, co__signal_writes.len, 0);
		if (n > 0) {
			memmove(co__signal_writes.buf, co__signal_writes.buf + n,
				co__signal_writes.len - (size_t)n);
			co__signal_writes.len -= (size_t)n;
		} else if (!co__wait_room(ctx, fd, n, deadline)) {
			break;
		}
	}
	if (co__signal_writes.len) {
		co__discard_locked(ctx, fd, f);
		co_stat_add(&ctx->stats, CO_ST_bytes_dropped, co__signal_writes.len);
		co_log(ctx, CO_LOG_ERROR, "fd %d: %zu bytes a signal handler wrote could not be sent",
		       fd, co__signal_writes.len);
		co__signal_writes.len = 0;
	}
	co__sync_mark(ctx, fd, f);
}

/* Queues the writes kept in co__signal_writes for fd (f, whose lock this
 * thread holds, every signal blocked) after f's queue, and empties it. */
static void queue_kept_locked(struct co_ctx *ctx, int fd, struct co_fd *f)
{
	struct iovec iov = { .iov_base = co__signal_writes.buf, .iov_len = co__signal_writes.len };

	if (iov.iov_len == 0)
		return;
	if (co__signal_writes.dgram) {
		co__dgram_queue_kept(ctx, fd, f);
	} else if (atomic_load(&f->kind) == CO_FD_STREAM &&
		   pending_append(&f->q, &ctx->sys, &iov, 1, iov.iov_len) == 0) {
		co__signal_writes.len = 0;
		f->writes++;
		f->wbytes += iov.iov_len;
		co__sync_mark(ctx, fd, f);
		/* Full: sent as the handler's blocking write would have. */
		if (pending_len(&f->q) >= ctx->cfg.max_bytes)
			co__drain_locked(ctx, fd, f, CO_ST_flush_size,
					 ctx->sys.now_ns() + ctx->cfg.linger_ns);
	} else {
		co_stat_add(&ctx->stats, CO_ST_writes_queued, 1);
		co_stat_add(&ctx->stats, CO_ST_bytes_queued, iov.iov_len);
		send_kept(ctx, fd, f);
	}
	co__signal_writes.len = 0;
}

void co__queue_signal_writes(void)
{
	struct co_ctx *ctx = co__signal_writes.ctx;
	int fd = co__signal_writes.fd;
	struct co_fd *f = co_fd_find(&ctx->fds, fd);
	sigset_t all, old;
	int stop;

	/* Still inside the handler, under the interrupted operation: that
	 * operation's own unlock comes later. */
	if (!f || co__lock_fd(f, fd) != 0)
		return;
	/* No handler may add to the buffer while it is being emptied. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	stop = co__signal_writes.stop;
	co__signal_writes.stop = 0;
	queue_kept_locked(ctx, fd, f);
	co__unlock_fd(f);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (stop)
		co_fd_stop(ctx, fd, CO_ST_passthrough_dup);
}

/* fd's lock just taken by a write: what a signal handler kept for fd while
 * this thread held it came first, and goes first. (A handler that comes
 * between the interrupted operation's unlock and its co__queue_signal_writes
 * takes the lock itself, with the kept write still waiting.) */
static void queue_kept_first(struct co_ctx *ctx, int fd, struct co_fd *f)
{
	sigset_t all, old;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	if (co__signal_writes.fd == fd && co__signal_writes.ctx == ctx)
		queue_kept_locked(ctx, fd, f);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* Keeps a signal handler's write for fd, whose lock the handler's own
 * thread holds (stream bytes, or a datagram with its destination, by fd's
 * kind), to be queued after the interrupted operation; with stop, fd is a
 * socket's owner that the handler's write on another fd of the socket
 * found, and is to stop coalescing then. Every signal is blocked meanwhile:
 * a handler that interrupted this one would write into the same buffer.
 * Returns the bytes kept, or -1 (the write goes to libc). */
static ssize_t keep_blocked(struct co_ctx *ctx, int fd, const struct iovec *iov, int iovcnt,
			    int flags, unsigned how, const struct sockaddr *addr,
			    socklen_t addrlen, int stop)
{
	struct co_fd *f = co_fd_find(&ctx->fds, fd);
	int kind = f ? atomic_load(&f->kind) : CO_FD_UNKNOWN;
	sigset_t all, old;
	ssize_t r = -1;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	if (stop && !((co__signal_writes.len || co__signal_writes.stop) &&
		      co__signal_writes.fd != fd)) {
		co__signal_writes.ctx = ctx;
		co__signal_writes.fd = fd;
		co__signal_writes.stop = 1;
	}
	if (kind == CO_FD_DGRAM)
		r = co__dgram_keep(ctx, fd, iov, iovcnt, flags, how, addr, addrlen);
	else if (kind == CO_FD_STREAM)
		r = keep_signal_write(ctx, fd, iov, iovcnt, flags, how);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return r;
}

/* A signal handler's write on fd found that fd shares its socket with
 * owner, the fd its own interrupted thread holds: owner cannot be stopped
 * (its queue sent) now. Keeps the bytes (or the datagram), if they fit, to
 * be queued on owner after the interrupted operation, and has owner
 * stopped then. Returns what co_sendto returns. */
static ssize_t keep_for_held_owner(struct co_ctx *ctx, int owner, const struct iovec *iov,
				   int iovcnt, int flags, unsigned how,
				   const struct sockaddr *addr, socklen_t addrlen)
{
	ssize_t r = keep_blocked(ctx, owner, iov, iovcnt, flags, how, addr, addrlen, 1);

	if (r >= 0)
		return r;
	co_stat_add(&ctx->stats, CO_ST_passthrough_reentrant, 1);
	return CO_PASSTHROUGH;
}

/* Takes owner's lock for a write with flags on another fd of its socket.
 * A MSG_DONTWAIT write waits at most CO_CLOSE_WAIT_NS: a holder that keeps
 * it longer is most likely blocked in a send on the full socket, and then
 * the write fails with -EAGAIN, as it would have found no room either; if
 * the socket has room after all, the holder is merely slow and is waited
 * for (an EAGAIN without a full socket would leave an edge-triggered
 * writer waiting for an edge that never comes). Returns 0, -EAGAIN, or
 * -EDEADLK (this thread holds it). */
static int lock_owner(struct co_ctx *ctx, int owner, struct co_fd *f, int flags)
{
	struct pollfd pfd = { .fd = owner, .events = POLLOUT };
	int r;

	if (!(flags & MSG_DONTWAIT))
		return co__lock_fd(f, owner);
	r = co__timedlock_fd(f, owner, ctx->sys.now_ns() + CO_CLOSE_WAIT_NS);
	if (r != -ETIMEDOUT)
		return r;
	if (ctx->sys.poll(&pfd, 1, 0) == 0)
		return -EAGAIN;
	return co__lock_fd(f, owner);
}

/* fd, just found to share its socket with owner (which coalesces it), is
 * about to write with flags: owner's queue goes first, sent as this write
 * would wait for room (never longer), and owner then stops coalescing. A
 * failure that drops owner's queue is kept for owner's next call.
 * Returns 0 when owner's queue is out (or owner had none), or -errno when
 * it could not all be sent without waiting longer than this write would
 * (-EAGAIN: the socket is full): owner keeps coalescing, and the caller
 * returns that error, as the kernel would have for a socket full of those
 * bytes. */
static int stop_owner_before(struct co_ctx *ctx, int owner, int flags)
{
	struct co_fd *f = co_fd_find(&ctx->fds, owner);
	int r;

	if (!f)
		return 0;
	r = lock_owner(ctx, owner, f, flags);
	if (r == -EAGAIN)
		return r;
	if (r == 0) {
		do {
			r = co__flush_deferred(ctx, owner, f, CO_ST_flush_order,
					       flags & MSG_DONTWAIT);
		} while (r == -EINTR && !(flags & MSG_DONTWAIT));
		r = pending_len(&f->q) ? r : 0;
		co__unlock_fd(f);
		if (r)
			return r;
	}
	co_fd_stop(ctx, owner, CO_ST_passthrough_dup);
	return 0;
}

/* fd (f, unlocked) was CO_FD_BEHIND owner: stops owner as a call on fd
 * with flags would wait for it (stop_owner_before), then fd passes. Returns
 * 0, or the error of stop_owner_before: fd is then UNKNOWN again, forgotten
 * by the socket map, and its next call looks at it anew. Until then other
 * threads' calls on fd come here too, and none reaches libc before owner's
 * queue has gone. */
static int settle_behind(struct co_ctx *ctx, int fd, struct co_fd *f, int owner, int flags)
{
	int err = stop_owner_before(ctx, owner, flags);

	if (co__lock_fd(f, fd) != 0)
		return err;
	if (atomic_load(&f->kind) == CO_FD_BEHIND) {
		if (err)
			co__release_id(ctx, fd, f);
		atomic_store(&f->kind, err ? CO_FD_UNKNOWN : CO_FD_PASS);
	}
	co__unlock_fd(f);
	return err;
}

/* fd has no table entry (out of range, or no memory): its socket must not
 * be coalesced through any fd from now on. What its owner queued goes
 * first, as far as a call on fd with flags would wait (stop_owner_before);
 * if it cannot, nothing is recorded. Returns 0, that error, or -EDEADLK
 * when this thread holds the owner (a signal handler; alone or in a
 * batch), which cannot be stopped now: *held is then the owner. */
static int pass_without_entry(struct co_ctx *ctx, int fd, int flags, int *held)
{
	uint64_t id;
	int owner = ctx->sys.socket_id(fd, &id) == 0 && id != 0
			    ? sockmap_owner(&ctx->socks, id, still_holds, ctx)
			    : -1;
	int r;

	*held = owner;
	if (owner >= 0 && co__holds(owner))
		return -EDEADLK;
	r = owner >= 0 ? stop_owner_before(ctx, owner, flags) : 0;
	if (r)
		return r;
	owner = co__pass_socket(ctx, fd, NULL);
	if (owner >= 0)
		co_fd_stop(ctx, owner, CO_ST_passthrough_dup);
	return 0;
}

int co_flush_before_send(struct co_ctx *ctx, int fd, enum co_counter trigger, int flags)
{
	struct co_fd *f = fd >= 0 ? co_fd_get(&ctx->fds, &ctx->sys, fd) : NULL;
	int owner = -1, err;

	if (!f) {
		/* A signal handler's operation on fd, whose socket's owner its
		 * thread holds, goes ahead: the owner's queue cannot go now. */
		err = fd >= 0 ? pass_without_entry(ctx, fd, flags, &owner) : 0;
		return err == -EDEADLK ? 0 : err;
	}
	if (atomic_load(&f->kind) != CO_FD_STREAM && atomic_load(&f->kind) != CO_FD_DGRAM &&
	    atomic_load(&f->kind) != CO_FD_PASS && co__lock_fd(f, fd) == 0) {
		if (atomic_load(&f->kind) == CO_FD_UNKNOWN)
			co__classify(ctx, fd, f);
		if (atomic_load(&f->kind) == CO_FD_BEHIND)
			owner = f->behind;
		co__unlock_fd(f);
	}
	if (owner >= 0) {
		err = settle_behind(ctx, fd, f, owner, flags);
		if (err)
			return err;
	}
	return co_flush_before(ctx, fd, trigger, flags);
}

ssize_t co_sendto(struct co_ctx *ctx, int fd, const struct iovec *iov, int iovcnt, int flags,
		  unsigned how, const struct sockaddr *addr, socklen_t addrlen, struct co_fd **held)
{
	unsigned api = CO_WRITE_API_OF(how);
	struct co_fd *f;
	int owner = -1;
	ssize_t r;

	*held = NULL;
	how &= CO_WRITE_ADDR | CO_WRITE_CONTROL;
	f = co_fd_get(&ctx->fds, &ctx->sys, fd);
	if (!f) {
		if (fd < 0)
			return CO_PASSTHROUGH;
		co_stat_add(&ctx->stats, fd >= CO_FD_LIMIT ? CO_ST_passthrough_fd_range
							    : CO_ST_passthrough_nomem, 1);
		r = pass_without_entry(ctx, fd, flags, &owner);
		if (r == -EDEADLK)
			return keep_for_held_owner(ctx, owner, iov, iovcnt, flags, how, addr, addrlen);
		return r ? r : CO_PASSTHROUGH;
	}
	if (atomic_load_explicit(&f->kind, memory_order_relaxed) == CO_FD_PASS)
		return CO_PASSTHROUGH;
	if (co__lock_fd(f, fd) != 0) {
		/* A signal handler interrupted this thread inside the shim on
		 * fd: its write is kept for after the interrupted operation. */
		r = keep_blocked(ctx, fd, iov, iovcnt, flags, how, addr, addrlen, 0);
		if (r >= 0)
			return r;
		co_stat_add(&ctx->stats, CO_ST_passthrough_reentrant, 1);
		return CO_PASSTHROUGH;
	}
	if (atomic_load_explicit(&f->kind, memory_order_relaxed) == CO_FD_UNKNOWN)
		co__classify(ctx, fd, f);
	if (__builtin_expect(co__signal_writes.len != 0, 0) && co__signal_writes.fd == fd)
		queue_kept_first(ctx, fd, f);
	if (atomic_load_explicit(&f->kind, memory_order_relaxed) == CO_FD_BEHIND)
		owner = f->behind;
	if (atomic_load_explicit(&f->kind, memory_order_relaxed) == CO_FD_STREAM ||
	    atomic_load_explicit(&f->kind, memory_order_relaxed) == CO_FD_DGRAM) {
		if (api < CO_API_COUNT)
			f->calls[api]++;
		r = f->dg ? co__dgram_write(ctx, fd, f, iov, iovcnt, flags, how, addr, addrlen)
			  : stream_write(ctx, fd, f, iov, iovcnt, flags, how);
		if (r == CO_PASSTHROUGH) {
			*held = f;
			return r;
		}
	} else {
		r = CO_PASSTHROUGH;
	}
	co__unlock_fd(f);
	if (owner < 0)
		return r;
	/* fd shares its socket with owner: what owner queued goes first. */
	if (co__holds(owner)) {
		co_fd_stop(ctx, fd, CO_ST_passthrough_dup);
		return keep_for_held_owner(ctx, owner, iov, iovcnt, flags, how, addr, addrlen);
	}
	r = settle_behind(ctx, fd, f, owner, flags);
	return r ? r : CO_PASSTHROUGH;
}
