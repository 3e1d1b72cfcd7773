/* Sending queued bytes with sendmsg, with partial sends, EAGAIN and errors. */
#include "send.h"

#include "dgram.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

#define CO_IOV_MAX 1024

/* How long the oldest byte of f's queue has waited, in ns. */
static uint64_t waited(struct co_ctx *ctx, struct co_fd *f)
{
	uint64_t now = ctx->sys.now_ns();

	return now > f->first_ns ? now - f->first_ns : 0;
}

void co__fold_writes(struct co_ctx *ctx, struct co_fd *f, int along)
{
	co_stats_batch(&ctx->stats, (uint64_t)f->writes + (unsigned)along);
	if (f->writes)
		co_stats_delay(&ctx->stats, waited(ctx, f), f->writes);
	co_stat_add(&ctx->stats, CO_ST_writes_queued, f->writes);
	co_stat_add(&ctx->stats, CO_ST_bytes_queued, f->wbytes);
	if (f->dg)
		co_stat_add(&ctx->stats, CO_ST_dgrams_queued, f->writes);
	if (along)
		co_stat_add(&ctx->stats, CO_ST_writes_sent_along, 1);
	f->writes = 0;
	f->wbytes = 0;
}

void co__fold_calls(struct co_ctx *ctx, struct co_fd *f)
{
	int api;

	for (api = 0; api < CO_API_COUNT; api++) {
		if (f->calls[api]) {
			co_stat_add(&ctx->stats, (enum co_counter)(CO_ST_calls_write + api),
				    f->calls[api]);
			f->calls[api] = 0;
		}
	}
}

/* Fills iov with the queue and the part of extra not yet sent. Returns the
 * number of entries used. */
static int build_iov(struct iovec *iov, struct co_fd *f, const struct iovec *extra,
		     int extra_cnt, size_t skip)
{
	int n = 0, i;

	if (pending_len(&f->q)) {
		iov[n].iov_base = f->q.data + f->q.head;
		iov[n].iov_len = pending_len(&f->q);
		n++;
	}
	for (i = 0; i < extra_cnt && n < CO_IOV_MAX; i++) {
		if (skip >= extra[i].iov_len) {
			skip -= extra[i].iov_len;
			continue;
		}
		iov[n].iov_base = (char *)extra[i].iov_base + skip;
		iov[n].iov_len = extra[i].iov_len - skip;
		skip = 0;
		n++;
	}
	return n;
}

void co__keep_error(struct co_ctx *ctx, struct co_fd *f, int err)
{
	if (!f->deferred_err)
		atomic_fetch_add(&ctx->fds.error_count, 1);
	f->deferred_err = err;
}

int co__take_error(struct co_ctx *ctx, struct co_fd *f)
{
	int err = f->deferred_err;

	if (err) {
		f->deferred_err = 0;
		atomic_fetch_sub(&ctx->fds.error_count, 1);
	}
	return err;
}

void co__discard_locked(struct co_ctx *ctx, int fd, struct co_fd *f)
{
	size_t n = f->dg ? co__dgram_discard(ctx, f) : pending_discard(&f->q);

	co_stat_add(&ctx->stats, CO_ST_writes_queued, f->writes);
	co_stat_add(&ctx->stats, CO_ST_bytes_queued, f->wbytes);
	if (f->dg)
		co_stat_add(&ctx->stats, CO_ST_dgrams_queued, f->writes);
	f->writes = 0;
	f->wbytes = 0;
	if (n) {
		co_stat_add(&ctx->stats, CO_ST_bytes_dropped, n);
		co_log(ctx, CO_LOG_ERROR, "fd %d: %zu queued bytes could not be sent", fd, n);
	}
	co__sync_mark(ctx, fd, f);
}

ssize_t co__send_queue(struct co_ctx *ctx, int fd, struct co_fd *f,
		       const struct iovec *extra, int extra_cnt, size_t extra_len, int flags)
{
	/* Sized to the call, not to CO_IOV_MAX: signal handlers may run on a small stack. */
	struct iovec iov[extra_cnt < CO_IOV_MAX ? extra_cnt + 1 : CO_IOV_MAX];
	struct msghdr msg;
	size_t sent_extra = 0, qlen, offered;
	ssize_t n;
	int along = extra_len > 0, i, to;

	if (f->dg)
		return co__dgram_send_queue(ctx, fd, f, flags);
	for (;;) {
		qlen = pending_len(&f->q);
		if (qlen == 0 && sent_extra == extra_len)
			return (ssize_t)sent_extra;
		memset(&msg, 0, sizeof(msg));
		msg.msg_iov = iov;
		msg.msg_iovlen = (size_t)build_iov(iov, f, extra, extra_cnt, sent_extra);
		for (offered = 0, i = 0; i < (int)msg.msg_iovlen; i++)
			offered += iov[i].iov_len;
		/* Closed by another thread meanwhile: fd's number holds a
		 * placeholder, and the socket is at private_fd; or, with no
		 * fd to spare for that, fd is gone and nothing more is sent. */
		to = fd;
		if (atomic_load_explicit(&f->close_pending, memory_order_acquire)) {
			if (f->private_fd < 0) {
				co__discard_locked(ctx, fd, f);
				return sent_extra ? (ssize_t)sent_extra : -EBADF;
			}
			to = f->private_fd;
		}
		n = ctx->sys.sendmsg(to, &msg, flags | MSG_NOSIGNAL);
		co_stat_add(&ctx->stats, CO_ST_flush_syscalls, 1);
		if (f->writes || along) {
			co__fold_writes(ctx, f, along);
			along = 0;
		}
		if (n < 0) {
			if (n == -EINTR && (flags & MSG_DONTWAIT))
				continue;
			if (n == -EAGAIN)
				co_stat_add(&ctx->stats, CO_ST_flush_eagain, 1);
			else if (n == -ENOBUFS || n == -ENOMEM)
				co_stat_add(&ctx->stats, CO_ST_flush_nobufs, 1);
			else if (n != -EINTR)
				co__discard_locked(ctx, fd, f);
			if (sent_extra == 0)
				return n;
			if (!co__keeps_queue(n))
				co__keep_error(ctx, f, (int)-n);
			return (ssize_t)sent_extra;
		}
		if (n == 0)
			return sent_extra ? (ssize_t)sent_extra : -EAGAIN;
		co_stat_add(&ctx->stats, CO_ST_flush_bytes, (uint64_t)n);
		if ((size_t)n <= qlen) {
			pending_consume(&f->q, (size_t)n);
		} else {
			pending_consume(&f->q, qlen);
			sent_extra += (size_t)n - qlen;
			/* A short send of the caller's own bytes is the caller's
			 * result; a full one of fewer iovecs than it has is not. */
			if (sent_extra < extra_len && (size_t)n < offered)
				return (ssize_t)sent_extra;
		}
	}
}

void co__sync_mark(struct co_ctx *ctx, int fd, struct co_fd *f)
{
	if (co_fd_mark(&ctx->fds, fd, pending_len(&f->q) > 0)) {
		f->first_ns = ctx->sys.now_ns();
		if (ctx->on_pending)
			ctx->on_pending(ctx);
	}
}

int co__flush_locked(struct co_ctx *ctx, int fd, struct co_fd *f,
		     enum co_counter trigger, int flags)
{
	ssize_t r;

	if (pending_len(&f->q) == 0)
		return 0;
	if (trigger != CO_ST_COUNT)
		co_stat_add(&ctx->stats, trigger, 1);
	r = co__send_queue(ctx, fd, f, NULL, 0, 0, flags);
	co__sync_mark(ctx, fd, f);
	return r < 0 ? (int)r : 0;
}

/* A deferred flush failed with r and dropped the queue: keeps the error
 * for the next call on fd (counted, logged at info). */
static void defer_error(struct co_ctx *ctx, int fd, struct co_fd *f, int r)
{
	co__keep_error(ctx, f, -r);
	co_stat_add(&ctx->stats, CO_ST_deferred_errors, 1);
	co_log(ctx, CO_LOG_INFO, "fd %d: deferred flush failed: error %d", fd, -r);
}

int co__flush_deferred(struct co_ctx *ctx, int fd, struct co_fd *f,
		       enum co_counter trigger, int flags)
{
	int r = co__flush_locked(ctx, fd, f, trigger, flags);

	if (r < 0 && !co__keeps_queue(r))
		defer_error(ctx, fd, f, r);
	return r;
}

int co__take_batch_result(struct co_ctx *ctx, int fd, struct co_fd *f,
			  enum co_counter trigger, ssize_t n)
{
	int r;

	co_stat_add(&ctx->stats, trigger, 1);
	if (f->writes)
		co__fold_writes(ctx, f, 0);
	if (n > 0) {
		co_stat_add(&ctx->stats, CO_ST_flush_bytes, (uint64_t)n);
		pending_consume(&f->q, (size_t)n);
		/* A short send: the socket is full; the rest waits. */
		r = pending_len(&f->q) ? -EAGAIN : 0;
	} else {
		r = n == 0 ? -EAGAIN : (int)n;
		if (r == -EAGAIN && n < 0)
			co_stat_add(&ctx->stats, CO_ST_flush_eagain, 1);
		else if (r == -ENOBUFS || r == -ENOMEM)
			co_stat_add(&ctx->stats, CO_ST_flush_nobufs, 1);
		if (!co__keeps_queue(r)) {
			co__discard_locked(ctx, fd, f);
			defer_error(ctx, fd, f, r);
		}
	}
	co__sync_mark(ctx, fd, f);
	return r;
}

int co__wait_room(struct co_ctx *ctx, int fd, ssize_t err, uint64_t deadline_ns)
{
	struct pollfd pfd = { .fd = fd, .events = POLLOUT };
	uint64_t now = ctx->sys.now_ns();

	if (!co__keeps_queue(err) || now >= deadline_ns)
		return 0;
	/* Short of buffers, the socket may well be writable: wait a moment
	 * instead of for POLLOUT. */
	if (err == -ENOBUFS || err == -ENOMEM)
		ctx->sys.poll(NULL, 0, 1);
	else
		ctx->sys.poll(&pfd, 1, (int)((deadline_ns - now + 999999) / 1000000));
	return 1;
}

int co__drain_locked(struct co_ctx *ctx, int fd, struct co_fd *f,
		     enum co_counter trigger, uint64_t deadline_ns)
{
	int r;

	for (;; trigger = CO_ST_COUNT) {
		r = co__flush_locked(ctx, fd, f, trigger, 0);
		if (r == 0 || !co__keeps_queue(r))
			return r;
		if (!co__wait_room(ctx, fd, r, deadline_ns)) {
			co__discard_locked(ctx, fd, f);
			return r;
		}
	}
}
