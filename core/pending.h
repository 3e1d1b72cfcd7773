/* A per-fd queue of bytes accepted from the application but not yet sent.
 *
 * The bytes live in one contiguous buffer: data[head, tail). Appending copies;
 * sending consumes from the head. The buffer grows on demand up to a limit. */
#ifndef CO_PENDING_H
#define CO_PENDING_H

#include <stddef.h>
#include <sys/uio.h>

#include "sys.h"

struct co_pending {
	char *data;
	size_t head;
	size_t tail;
	size_t cap;
};

static inline size_t pending_len(const struct co_pending *q)
{
	return q->tail - q->head;
}

/* Makes room for need more bytes after tail, first by moving the queued
 * bytes to the start of the buffer, then by growing it. Returns 0 or
 * -ENOMEM. Appends of at most need bytes then cannot fail. */
int pending_reserve(struct co_pending *q, const struct co_sys *sys, size_t need);

/* After pending_reserve(q, sys, need): where the next bytes go; writing at
 * most need bytes there, then pending_commit(q, n), appends them. */
static inline char *pending_tail(struct co_pending *q)
{
	return q->data + q->tail;
}

static inline void pending_commit(struct co_pending *q, size_t n)
{
	q->tail += n;
}

/* Copies the total bytes described by iov to the end of the queue, growing
 * the buffer if needed. Returns 0, or -ENOMEM if the buffer could not grow
 * (the queue is then unchanged). */
int pending_append(struct co_pending *q, const struct co_sys *sys,
		   const struct iovec *iov, int iovcnt, size_t total);

/* As pending_append, for the bytes of iov after the first skip (total is
 * their number). */
int pending_append_from(struct co_pending *q, const struct co_sys *sys,
			const struct iovec *iov, int iovcnt, size_t skip, size_t total);

/* Drops n bytes (at most pending_len) from the head of the queue. */
void pending_consume(struct co_pending *q, size_t n);

/* Drops every queued byte and returns how many there were. */
size_t pending_discard(struct co_pending *q);

/* Releases the buffer (the queue must be empty or discarded first). */
void pending_release(struct co_pending *q, const struct co_sys *sys);

#endif
