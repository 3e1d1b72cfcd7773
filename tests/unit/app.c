/* The simulated application of the tests: ordered writes from a source of
 * distinct bytes, made the way the shim makes them, and the checks against
 * the fake wire. */
#include "app.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "stream.h"

ssize_t write_like_shim(struct co_ctx *ctx, int fd, const struct iovec *iov, int iovcnt,
			int flags)
{
	struct msghdr msg = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt };
	struct co_fd *held = NULL;
	ssize_t r = CO_PASSTHROUGH;

	if (!co_fd_passes(ctx, fd))
		r = co_write(ctx, fd, iov, iovcnt, flags, 0, &held);
	if (r == CO_PASSTHROUGH)
		r = fake_sys()->sendmsg(fd, &msg, flags);
	co_write_end(held, r);
	return r;
}

void app_open(struct app *a, int fd, enum fake_sock kind, unsigned seed)
{
	a->fd = fd;
	a->done = 0;
	if (!a->src) {
		a->src = malloc(APP_SRC_SIZE);
		if (!a->src)
			abort();
	}
	fill_pattern(a->src, APP_SRC_SIZE, seed);
	fake_socket(fd, kind);
}

void app_close(struct app *a)
{
	free(a->src);
	a->src = NULL;
}

void app_start(struct co_ctx *ctx, struct app *a)
{
	static char hello = 'h';
	struct iovec iov = { .iov_base = &hello, .iov_len = 1 };

	if (write_like_shim(ctx, a->fd, &iov, 1, 0) != 1 ||
	    co_flush_before(ctx, a->fd, CO_ST_flush_order, 0) != 0)
		abort();
}

ssize_t app_writev(struct co_ctx *ctx, struct app *a, size_t len, int iovcnt, int flags)
{
	struct iovec *iov = calloc((size_t)(iovcnt > 0 ? iovcnt : 1), sizeof(*iov));
	size_t off = 0;
	ssize_t r;
	int i;

	if (!iov || a->done + len > APP_SRC_SIZE)
		abort();
	for (i = 0; i < iovcnt; i++) {
		size_t part = (len - off) / (size_t)(iovcnt - i);

		iov[i].iov_base = a->src + a->done + off;
		iov[i].iov_len = part;
		off += part;
	}
	r = write_like_shim(ctx, a->fd, iov, iovcnt, flags);
	free(iov);
	if (r > 0)
		a->done += (size_t)r;
	return r;
}

ssize_t app_write(struct co_ctx *ctx, struct app *a, size_t len, int flags)
{
	return app_writev(ctx, a, len, 1, flags);
}

ssize_t app_write_all(struct co_ctx *ctx, struct app *a, size_t len, int flags)
{
	size_t end = a->done + len;
	int tries = 0;
	ssize_t r;

	while (a->done < end) {
		r = app_write(ctx, a, end - a->done, flags);
		if (r == -EAGAIN || r == -EINTR) {
			if (++tries > 10000)
				return r;
			continue;
		}
		if (r <= 0)
			return r;
	}
	return 0;
}

int app_wire_is(const struct app *a, size_t len)
{
	size_t wire_len;
	const char *wire = fake_wire(a->fd, &wire_len);

	return wire_len == len && memcmp(wire, a->src, len) == 0;
}

int app_accounted(struct co_ctx *ctx, const struct app *a)
{
	struct co_fd *f = co_fd_find(&ctx->fds, a->fd);
	size_t wire_len, queued = f ? pending_len(&f->q) : 0;
	const char *wire = fake_wire(a->fd, &wire_len);

	if (wire_len + queued != a->done || memcmp(wire, a->src, wire_len) != 0)
		return 0;
	return queued == 0 || memcmp(f->q.data + f->q.head, a->src + wire_len, queued) == 0;
}

size_t app_queued(struct co_ctx *ctx, int fd)
{
	struct co_fd *f = co_fd_find(&ctx->fds, fd);

	return f ? pending_len(&f->q) : 0;
}
