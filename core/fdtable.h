/* The fd table: per-fd state, indexed by fd number, allocated in chunks on
 * first use and never freed (so a racing close cannot free an entry that
 * another thread is using). */
#ifndef CO_FDTABLE_H
#define CO_FDTABLE_H

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <time.h>
#include <stdatomic.h>
#include <stdint.h>

#include "pending.h"
#include "stats.h"
#include "sys.h"

enum co_fd_kind {
	CO_FD_UNKNOWN = 0, /* Not classified yet: the next write looks. */
	CO_FD_PASS,        /* Never coalesced: every call goes to libc. */
	CO_FD_STREAM,      /* A connected stream socket: writes are queued. */
	CO_FD_DGRAM,       /* A UDP or Unix datagram socket: datagrams are queued. */
	CO_FD_BEHIND,      /* Passes once its socket's owner (behind) has sent its
			    * queue: a call on it stops the owner first. */
};

struct co_dgram;

struct co_fd {
	pthread_mutex_t lock;
	_Atomic unsigned char kind;
	_Atomic int deferred_err; /* errno of a failed deferred flush, for the next call. */
	unsigned writes;    /* Application writes queued since the last flush syscall. */
	size_t wbytes;      /* Their bytes. */
	uint64_t calls[CO_API_COUNT]; /* Calls caught per API, not yet in the counters. */
	uint64_t first_ns;  /* When the oldest queued byte was queued. */
	int held_prev;      /* The holder's co__held_fd before it took this lock. */
	unsigned burst;     /* Writes in the current burst (see co_note_wait). */
	unsigned burst_epoch; /* The writer's wait epoch when the burst began. */
	unsigned char direct; /* The last burst was one write: send the next one at once. */
	unsigned char tcp;    /* A TCP socket: the kernel ignores a send's address. */
	int behind;           /* CO_FD_BEHIND: the fd that coalesces its socket. */
	_Atomic uint64_t sock_id; /* The socket's identity once claimed in ctx->socks, or 0. */
	struct co_dgram *dg;  /* CO_FD_DGRAM: the datagram state (dgram.h). */
	/* Set by a close that could not wait for the holder of the lock (see
	 * co_close_or_hand_over): the holder sends the rest of the queue to
	 * the socket through private_fd, and finishes the close when it
	 * unlocks. */
	_Atomic unsigned char close_pending;
	int private_fd;
	struct co_ctx *close_ctx;
	struct co_pending q;
};

/* The fd whose lock this thread holds, or -1. A signal handler that calls
 * back into the shim on that fd must not wait for its own thread: the lock
 * functions below refuse with -EDEADLK instead. */
extern __thread int co__held_fd __attribute__((tls_model("initial-exec")));

/* Counts this thread's reads and waits. Writes on an fd between two of
 * them form a burst; see stream_write. */
extern __thread unsigned co__wait_epoch __attribute__((tls_model("initial-exec")));

static inline void co_note_wait(void)
{
	co__wait_epoch++;
}

/* co__held_fd while this thread holds the locks of a batch of fds (batch.h);
 * co__batch_holds tells whether fd is one of them. */
#define CO_HELD_BATCH (-2)
int co__batch_holds(int fd);

/* Returns 1 if this thread holds fd's lock, alone or in a batch. */
static inline int co__holds(int fd)
{
	return co__held_fd == fd || (co__held_fd == CO_HELD_BATCH && co__batch_holds(fd));
}

/* The marker co__held_fd covers the whole time the lock may be held: it is
 * set before the lock is taken and cleared only after it is released, so a
 * signal handler that comes in between never waits for its own thread.
 * (A handler that comes while the thread still waits for the lock is told
 * -EDEADLK too: a harmless false alarm.) The signal fences keep the
 * compiler from moving the marker across the lock calls. */
static inline int co__mark_held(int fd, int *prev)
{
	*prev = co__held_fd;
	if (co__holds(fd))
		return -EDEADLK;
	co__held_fd = fd;
	atomic_signal_fence(memory_order_seq_cst);
	return 0;
}

static inline void co__unmark_held(int prev)
{
	atomic_signal_fence(memory_order_seq_cst);
	co__held_fd = prev;
}

/* Takes fd's lock. Returns 0, or -EDEADLK if this thread already holds it. */
static inline int co__lock_fd(struct co_fd *f, int fd)
{
	int prev;

	if (co__mark_held(fd, &prev))
		return -EDEADLK;
	pthread_mutex_lock(&f->lock);
	f->held_prev = prev;
	return 0;
}

/* As co__lock_fd, but returns -EBUSY at once if another thread holds it. */
static inline int co__trylock_fd(struct co_fd *f, int fd)
{
	int prev;

	if (co__mark_held(fd, &prev))
		return -EDEADLK;
	if (pthread_mutex_trylock(&f->lock) != 0) {
		co__unmark_held(prev);
		return -EBUSY;
	}
	f->held_prev = prev;
	return 0;
}

/* As co__lock_fd, but gives up with -ETIMEDOUT at deadline (CLOCK_MONOTONIC):
 * at exit, a thread blocked in a send on a blocking socket must not hold up
 * the whole process. */
static inline int co__timedlock_fd(struct co_fd *f, int fd, uint64_t deadline_ns)
{
	struct timespec ts = { .tv_sec = (time_t)(deadline_ns / 1000000000u),
			       .tv_nsec = (long)(deadline_ns % 1000000000u) };
	int prev;

	if (co__mark_held(fd, &prev))
		return -EDEADLK;
	if (pthread_mutex_clocklock(&f->lock, CLOCK_MONOTONIC, &ts) != 0) {
		co__unmark_held(prev);
		return -ETIMEDOUT;
	}
	f->held_prev = prev;
	return 0;
}

/* Finishes a close handed over to the holder of f's lock (in flush.c). */
void co__finish_handed_over_close(struct co_fd *f, int fd);

/* Writes that signal handlers made on the fd their own thread held: kept
 * here, in order, and queued after the interrupted operation (stream.c). */
#define CO_SIGNAL_WRITES_MAX 2048
struct co_signal_writes {
	struct co_ctx *ctx;
	int fd;
	size_t len;
	/* A handler found that fd shares its socket with an fd that now
	 * passes: fd must stop coalescing once its lock is free. */
	unsigned char stop;
	/* buf holds whole datagrams, each with its destination (dgram.c),
	 * not stream bytes. */
	unsigned char dgram;
	char buf[CO_SIGNAL_WRITES_MAX];
};
extern __thread struct co_signal_writes co__signal_writes
	__attribute__((tls_model("initial-exec")));
void co__queue_signal_writes(void);

static inline void co__unlock_fd(struct co_fd *f)
{
	int prev = f->held_prev;

	if (atomic_load_explicit(&f->close_pending, memory_order_acquire))
		co__finish_handed_over_close(f, co__held_fd);
	pthread_mutex_unlock(&f->lock);
	co__unmark_held(prev);
	if (__builtin_expect(co__signal_writes.len != 0 || co__signal_writes.stop, 0))
		co__queue_signal_writes();
}

#define CO_FD_CHUNK_BITS 10
#define CO_FD_CHUNK_SIZE (1 << CO_FD_CHUNK_BITS)
#define CO_FD_CHUNKS 4096
#define CO_FD_LIMIT (CO_FD_CHUNKS * CO_FD_CHUNK_SIZE)
#define CO_FD_WORD_BITS (sizeof(unsigned long) * CHAR_BIT)

struct co_fdtable {
	_Atomic(struct co_fd *) chunk[CO_FD_CHUNKS];
	/* One bit per fd whose queue is not empty. */
	_Atomic unsigned long pending_bits[CO_FD_LIMIT / CO_FD_WORD_BITS];
	_Atomic int pending_count; /* Number of bits set above. */
	_Atomic int pending_top;   /* Highest fd that ever had a queue, or -1. */
	_Atomic int error_count;   /* Entries holding a deferred error. */
};

void co_fdtable_init(struct co_fdtable *t);

/* Returns fd's entry, or NULL if it was never created (or fd is out of range). */
static inline struct co_fd *co_fd_find(struct co_fdtable *t, int fd)
{
	struct co_fd *chunk;

	if ((unsigned)fd >= CO_FD_LIMIT)
		return NULL;
	chunk = atomic_load_explicit(&t->chunk[fd >> CO_FD_CHUNK_BITS], memory_order_acquire);
	return chunk ? &chunk[fd & (CO_FD_CHUNK_SIZE - 1)] : NULL;
}

/* Returns fd's entry, creating its chunk if needed; NULL if fd is out of
 * range or memory ran out. */
struct co_fd *co_fd_get(struct co_fdtable *t, const struct co_sys *sys, int fd);

/* Records whether fd's queue holds bytes (fd's lock held). Returns 1 when the
 * queue has just become non-empty. */
int co_fd_mark(struct co_fdtable *t, int fd, int nonempty);

/* Calls fn on each fd whose pending bit is set, in fd order. */
void co_fd_each_pending(struct co_fdtable *t, void (*fn)(int fd, void *arg), void *arg);

/* Calls fn on every entry that exists in [first, last]. */
void co_fd_each(struct co_fdtable *t, unsigned first, unsigned last,
		void (*fn)(int fd, struct co_fd *f, void *arg), void *arg);

#endif
