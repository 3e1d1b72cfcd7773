/* A simulated application for the tests, writing through core the way the
 * shim makes it: per fd, a source of distinct bytes that it writes in
 * order, and checks on what reached the fake wire.
 *
 * Like the shim, an app makes the "libc" call itself (the fake's sendmsg)
 * when core answers CO_PASSTHROUGH, so what it is told was written must be
 * on the wire or still queued in core, in order: the wire must always be a
 * prefix of src, and the queue the bytes that follow. */
#ifndef CO_TEST_APP_H
#define CO_TEST_APP_H

#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "fake_sys.h"

#define APP_SRC_SIZE (4u << 20)

struct app {
	int fd;
	char *src;
	size_t done; /* Bytes written so far (taken by core or by the "libc" call). */
};

/* One write as the shim makes it: core first, then the fake's sendmsg if
 * core says CO_PASSTHROUGH (or knows fd passes). Returns bytes or -errno. */
ssize_t write_like_shim(struct co_ctx *ctx, int fd, const struct iovec *iov, int iovcnt,
			int flags);

/* Gives a the fake socket fd of the given kind and fresh source bytes. */
void app_open(struct app *a, int fd, enum fake_sock kind, unsigned seed);
void app_close(struct app *a);

/* Makes the first write of a's connection, then sends it and forgets it:
 * core sends a lone write at once, and queues the writes that follow it in
 * the same burst (between two waits of this thread). Afterwards nothing of
 * a is queued, and its next writes are queued. Call fake_forget_sends to
 * forget the byte on the wire. */
void app_start(struct co_ctx *ctx, struct app *a);

/* Writes the next len bytes with flags; returns what the write returns. */
ssize_t app_write(struct co_ctx *ctx, struct app *a, size_t len, int flags);

/* Writes the next len bytes as iovcnt iovecs of (nearly) equal size. */
ssize_t app_writev(struct co_ctx *ctx, struct app *a, size_t len, int iovcnt, int flags);

/* Writes the next len bytes until all are taken, retrying on -EAGAIN and
 * -EINTR and continuing after short counts, as a careful application does.
 * Returns 0, or the first other error. */
ssize_t app_write_all(struct co_ctx *ctx, struct app *a, size_t len, int flags);

/* 1 if fd's wire holds exactly the first len bytes of a's source. */
int app_wire_is(const struct app *a, size_t len);

/* 1 if every byte a wrote is on the wire or queued in core, in order, and
 * nothing else is: wire + queue = src[0, done). */
int app_accounted(struct co_ctx *ctx, const struct app *a);

/* Bytes queued on fd in core (0 if core never saw fd). */
size_t app_queued(struct co_ctx *ctx, int fd);

#endif
