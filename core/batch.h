/* Internal: flushing the queues of many fds with one io_uring submission
 * (sys.ring_send_batch), for the flushes that walk every pending queue: the
 * one before a wait or read, and the deadline flusher's.
 *
 * A batch takes each fd's lock without waiting and keeps it until the
 * ring's answer for that fd has been taken, so that no other thread touches
 * a queue a request points into. Every send is nonblocking and each fd gets
 * at most one per submission, so nothing is in flight once the ring call
 * returns. Datagram sockets, and an fd whose close was handed over, are
 * flushed fd by fd as before (still under the batch). While a batch holds
 * locks, co__held_fd is CO_HELD_BATCH: a signal handler that writes one of
 * those fds is told -EDEADLK, as for the one fd a thread usually holds. */
#ifndef CO_BATCH_H
#define CO_BATCH_H

#include "ctx.h"

/* Requests per ring submission, and locks a batch holds at most (ThreadSanitizer
 * follows at most 64 locks held by one thread). */
#define CO_BATCH_MAX 32

/* With COALESCE_BACKEND=auto, the fewest queues a flush sends through the
 * ring; smaller flushes go fd by fd (measured: docs/design.md, "io_uring
 * backend"). */
#define CO_URING_AUTO_MIN 4

/* Called for each fd of a batch once its flush is done (its lock still
 * held), with the result of co__flush_deferred or co__take_batch_result. */
typedef void (*co_batch_done_fn)(void *arg, int fd, int r);

struct co_batch {
	struct co_ctx *ctx;
	enum co_counter trigger;
	co_batch_done_fn done; /* May be NULL. */
	void *arg;
	int prev_held;   /* co__held_fd before the batch began. */
	volatile int n;  /* fds whose locks are held (read by signal handlers). */
	int fd[CO_BATCH_MAX];
	struct co_fd *f[CO_BATCH_MAX];
	struct co_ring_req req[CO_BATCH_MAX];
};

/* Returns 1 if a flush that will find about npending queues should be made
 * as a batch: the ring may be used, the backend asks for it at this size,
 * and this thread holds no fd lock. */
int co__batch_wanted(struct co_ctx *ctx, int npending);

void co__batch_begin(struct co_batch *b, struct co_ctx *ctx, enum co_counter trigger,
		     co_batch_done_fn done, void *arg);

/* Takes fd's lock without waiting and adds fd to b (sending b first if it
 * is full). Returns 0, or -EBUSY if another thread holds the lock. */
int co__batch_trylock(struct co_batch *b, int fd, struct co_fd *f);

/* Takes the fd added last out of b again and releases its lock: the caller
 * found nothing to send on it. */
void co__batch_drop_last(struct co_batch *b);

/* Sends what b holds and releases every lock. */
void co__batch_end(struct co_batch *b);

#endif
