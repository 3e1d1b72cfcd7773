/* Byte queue: append by copy, consume from the head, grow by doubling. */
#include "pending.h"

#include <errno.h>
#include <string.h>

#define CO_PENDING_MIN_CAP 4096

int pending_reserve(struct co_pending *q, const struct co_sys *sys, size_t need)
{
	size_t len = pending_len(q);
	size_t cap;
	char *data;

	if (q->cap - q->tail >= need)
		return 0;
	if (q->head > 0 && q->cap - len >= need) {
		memmove(q->data, q->data + q->head, len);
		q->head = 0;
		q->tail = len;
		return 0;
	}
	cap = q->cap ? q->cap : CO_PENDING_MIN_CAP;
	while (cap - len < need)
		cap *= 2;
	if (q->head > 0) {
		memmove(q->data, q->data + q->head, len);
		q->head = 0;
		q->tail = len;
	}
	data = sys->realloc(q->data, cap);
	if (!data)
		return -ENOMEM;
	q->data = data;
	q->cap = cap;
	return 0;
}

int pending_append_from(struct co_pending *q, const struct co_sys *sys,
			const struct iovec *iov, int iovcnt, size_t skip, size_t total)
{
	size_t len;
	int i, err;

	err = pending_reserve(q, sys, total);
	if (err)
		return err;
	for (i = 0; i < iovcnt; i++) {
		if (skip >= iov[i].iov_len) {
			skip -= iov[i].iov_len;
			continue;
		}
		len = iov[i].iov_len - skip;
		memcpy(q->data + q->tail, (const char *)iov[i].iov_base + skip, len);
		q->tail += len;
		skip = 0;
	}
	return 0;
}

int pending_append(struct co_pending *q, const struct co_sys *sys,
		   const struct iovec *iov, int iovcnt, size_t total)
{
	return pending_append_from(q, sys, iov, iovcnt, 0, total);
}

void pending_consume(struct co_pending *q, size_t n)
{
	q->head += n;
	if (q->head == q->tail)
		q->head = q->tail = 0;
}

size_t pending_discard(struct co_pending *q)
{
	size_t n = pending_len(q);

	q->head = q->tail = 0;
	return n;
}

void pending_release(struct co_pending *q, const struct co_sys *sys)
{
	sys->free(q->data);
	q->data = NULL;
	q->head = q->tail = q->cap = 0;
}
