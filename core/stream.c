/* The write path: classifying an fd once, queueing small writes, sending
 * large ones along with the queue. */
#include "stream.h"

#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>

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

int co__classify(struct co_ctx *ctx, int fd, struct co_fd *f)
{
	struct sockaddr_storage peer;
	socklen_t len = sizeof(peer);
	int type, domain, protocol, r, other;
	uint64_t id;

	r = sockopt_int(ctx, fd, SO_TYPE, &type);
	if (r == -ENOTSOCK) {
		co_stat_add(&ctx->stats, CO_ST_passthrough_not_socket, 1);
		atomic_store(&f->kind, CO_FD_PASS);
		return -1;
	}
	if (r < 0)
		return -1;
	if (type != SOCK_STREAM || sockopt_int(ctx, fd, SO_DOMAIN, &domain) < 0 ||
	    sockopt_int(ctx, fd, SO_PROTOCOL, &protocol) < 0 ||
	    !(domain == AF_UNIX ||
	      ((domain == AF_INET || domain == AF_INET6) && protocol == IPPROTO_TCP))) {
		co_stat_add(&ctx->stats, CO_ST_passthrough_not_stream, 1);
		atomic_store(&f->kind, CO_FD_PASS);
		return -1;
	}
	r = ctx->sys.getpeername(fd, (struct sockaddr *)&peer, &len);
	if (r < 0) {
		co_stat_add(&ctx->stats, CO_ST_passthrough_not_connected, 1);
		return -1;
	}
	if (ctx->sys.socket_id(fd, &id) < 0 || id == 0) {
		co_stat_add(&ctx->stats, CO_ST_passthrough_not_stream, 1);
		atomic_store(&f->kind, CO_FD_PASS);
		return -1;
	}
	other = sockmap_claim(&ctx->socks, &ctx->sys, id, fd, still_holds, ctx);
	if (other == -2) {
		co_stat_add(&ctx->stats, CO_ST_passthrough_nomem, 1);
		atomic_store(&f->kind, CO_FD_PASS);
		return -1;
	}
	if (other >= 0) {
		co_stat_add(&ctx->stats, CO_ST_passthrough_dup, 1);
		atomic_store(&f->kind, CO_FD_PASS);
		return other;
	}
	atomic_store_explicit(&f->sock_id, id, memory_order_relaxed);
	atomic_store(&f->kind, CO_FD_STREAM);
	return -1;
}

/* Returns the counter for why a write on a stream socket cannot be queued,
 * or CO_ST_COUNT if it can. */
static enum co_counter unsupported(int flags, unsigned how, int iovcnt, size_t total)
{
	if (how & CO_WRITE_CONTROL)
		return CO_ST_passthrough_control;
	if (how & CO_WRITE_ADDR)
		return CO_ST_passthrough_address;
	if ((flags & ~CO_QUEUE_FLAGS) || iovcnt < 0 || iovcnt > IOV_MAX || total > SSIZE_MAX)
		return CO_ST_passthrough_flags;
	return CO_ST_COUNT;
}

/* Sends the queue and the caller's bytes together, without copying them.
 * If the kernel is full and the bytes fit in the queue after all, queues
 * them. Returns what co_write returns. */
static ssize_t write_through(struct co_ctx *ctx, int fd, struct co_fd *f,
			     const struct iovec *iov, int iovcnt, size_t total, int flags)
{
	enum co_counter trigger = total >= ctx->cfg.large_bytes ? CO_ST_flush_large : CO_ST_flush_size;
	ssize_t r;

	co_stat_add(&ctx->stats, trigger, 1);
	r = co__send_queue(ctx, fd, f, iov, iovcnt, total, flags & MSG_DONTWAIT);
	if (r == -EAGAIN && total < ctx->cfg.large_bytes &&
	    pending_len(&f->q) + total <= ctx->cfg.max_bytes &&
	    pending_append(&f->q, &ctx->sys, iov, iovcnt, total) == 0) {
		f->writes++;
		f->wbytes += total;
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
static int send_at_once(struct co_fd *f)
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
		if (err != ENOBUFS && err != ENOMEM)
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
	reason = unsupported(flags, how, iovcnt, total);
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
	if (ctx->cfg.direct && send_at_once(f)) {
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

	if (how || (flags & ~CO_QUEUE_FLAGS) || iovcnt < 0 || (len && co__signal_writes.fd != fd))
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

void co__queue_signal_writes(void)
{
	struct co_ctx *ctx = co__signal_writes.ctx;
	int fd = co__signal_writes.fd;
	struct iovec iov = { .iov_base = co__signal_writes.buf };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct co_fd *f = co_fd_find(&ctx->fds, fd);
	sigset_t all, old;

	/* Still inside the handler, under the interrupted operation: that
	 * operation's own unlock comes later. */
	if (!f || co__lock_fd(f, fd) != 0)
		return;
	/* No handler may add to the buffer while it is being emptied. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	iov.iov_len = co__signal_writes.len;
	if (atomic_load(&f->kind) == CO_FD_STREAM &&
	    pending_append(&f->q, &ctx->sys, &iov, 1, iov.iov_len) == 0) {
		f->writes++;
		f->wbytes += iov.iov_len;
		co__sync_mark(ctx, fd, f);
	} else {
		co__flush_locked(ctx, fd, f, CO_ST_flush_order, 0);
		if (ctx->sys.sendmsg(fd, &msg, MSG_NOSIGNAL) != (ssize_t)iov.iov_len)
			co_stat_add(&ctx->stats, CO_ST_bytes_dropped, iov.iov_len);
	}
	co__signal_writes.len = 0;
	co__unlock_fd(f);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

ssize_t co_write(struct co_ctx *ctx, int fd, const struct iovec *iov, int iovcnt,
		 int flags, unsigned how, struct co_fd **held)
{
	struct co_fd *f;
	int other = -1;
	ssize_t r;

	*held = NULL;
	f = co_fd_get(&ctx->fds, &ctx->sys, fd);
	if (!f) {
		if (fd >= CO_FD_LIMIT)
			co_stat_add(&ctx->stats, CO_ST_passthrough_fd_range, 1);
		else if (fd >= 0)
			co_stat_add(&ctx->stats, CO_ST_passthrough_nomem, 1);
		return CO_PASSTHROUGH;
	}
	if (atomic_load_explicit(&f->kind, memory_order_relaxed) == CO_FD_PASS)
		return CO_PASSTHROUGH;
	if (co__lock_fd(f, fd) != 0) {
		/* A signal handler interrupted this thread inside the shim on fd. */
		r = keep_signal_write(ctx, fd, iov, iovcnt, flags, how);
		if (r >= 0)
			return r;
		co_stat_add(&ctx->stats, CO_ST_passthrough_reentrant, 1);
		return CO_PASSTHROUGH;
	}
	if (atomic_load_explicit(&f->kind, memory_order_relaxed) == CO_FD_UNKNOWN)
		other = co__classify(ctx, fd, f);
	if (atomic_load_explicit(&f->kind, memory_order_relaxed) == CO_FD_STREAM) {
		r = stream_write(ctx, fd, f, iov, iovcnt, flags, how);
		if (r == CO_PASSTHROUGH) {
			*held = f;
			return r;
		}
	} else {
		r = CO_PASSTHROUGH;
	}
	co__unlock_fd(f);
	/* fd shares its socket with other: what other queued goes first. */
	if (other >= 0)
		co_fd_stop(ctx, other, CO_ST_passthrough_dup);
	return r;
}
