/* Chunked fd table and the bitmap of non-empty queues. */
#include "fdtable.h"

#include <string.h>

__thread int co__held_fd = -1;
__thread unsigned co__wait_epoch;
__thread struct co_signal_writes co__signal_writes;

void co_fdtable_init(struct co_fdtable *t)
{
	memset(t, 0, sizeof(*t));
	atomic_store(&t->pending_top, -1);
}

struct co_fd *co_fd_get(struct co_fdtable *t, const struct co_sys *sys, int fd)
{
	struct co_fd *chunk, *expected = NULL;
	unsigned idx;
	int i;

	if ((unsigned)fd >= CO_FD_LIMIT)
		return NULL;
	idx = (unsigned)fd >> CO_FD_CHUNK_BITS;
	chunk = atomic_load_explicit(&t->chunk[idx], memory_order_acquire);
	if (!chunk) {
		chunk = sys->alloc(sizeof(struct co_fd) * CO_FD_CHUNK_SIZE);
		if (!chunk)
			return NULL;
		memset(chunk, 0, sizeof(struct co_fd) * CO_FD_CHUNK_SIZE);
		for (i = 0; i < CO_FD_CHUNK_SIZE; i++)
			pthread_mutex_init(&chunk[i].lock, NULL);
		if (!atomic_compare_exchange_strong_explicit(&t->chunk[idx], &expected, chunk,
							     memory_order_acq_rel,
							     memory_order_acquire)) {
			sys->free(chunk);
			chunk = expected;
		}
	}
	return &chunk[fd & (CO_FD_CHUNK_SIZE - 1)];
}

int co_fd_mark(struct co_fdtable *t, int fd, int nonempty)
{
	_Atomic unsigned long *word = &t->pending_bits[(unsigned)fd / CO_FD_WORD_BITS];
	unsigned long bit = 1UL << ((unsigned)fd % CO_FD_WORD_BITS);
	int top;

	if (nonempty) {
		if (atomic_load_explicit(word, memory_order_relaxed) & bit)
			return 0;
		top = atomic_load_explicit(&t->pending_top, memory_order_relaxed);
		while (fd > top &&
		       !atomic_compare_exchange_weak(&t->pending_top, &top, fd))
			;
		atomic_fetch_or(word, bit);
		atomic_fetch_add(&t->pending_count, 1);
		return 1;
	}
	if (atomic_load_explicit(word, memory_order_relaxed) & bit) {
		atomic_fetch_and(word, ~bit);
		atomic_fetch_sub(&t->pending_count, 1);
	}
	return 0;
}

void co_fd_each_pending(struct co_fdtable *t, void (*fn)(int fd, void *arg), void *arg)
{
	int top = atomic_load(&t->pending_top);
	unsigned w, last;
	unsigned long bits;

	if (top < 0)
		return;
	last = (unsigned)top / CO_FD_WORD_BITS;
	for (w = 0; w <= last; w++) {
		bits = atomic_load_explicit(&t->pending_bits[w], memory_order_acquire);
		while (bits) {
			int b = __builtin_ctzl(bits);

			bits &= bits - 1;
			fn((int)(w * CO_FD_WORD_BITS + (unsigned)b), arg);
		}
	}
}

void co_fd_each(struct co_fdtable *t, unsigned first, unsigned last,
		void (*fn)(int fd, struct co_fd *f, void *arg), void *arg)
{
	unsigned fd;

	if (last >= CO_FD_LIMIT)
		last = CO_FD_LIMIT - 1;
	for (fd = first; fd <= last;) {
		struct co_fd *chunk = atomic_load_explicit(&t->chunk[fd >> CO_FD_CHUNK_BITS],
							   memory_order_acquire);
		unsigned end = (fd | (CO_FD_CHUNK_SIZE - 1));

		if (end > last)
			end = last;
		if (chunk)
			for (; fd <= end; fd++)
				fn((int)fd, &chunk[fd & (CO_FD_CHUNK_SIZE - 1)], arg);
		fd = end + 1;
		if (fd == 0)
			break;
	}
}
