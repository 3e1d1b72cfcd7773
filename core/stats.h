/* Process-wide counters, cheap enough to leave on.
 *
 * The write path never touches these: it counts in its fd entry, under the
 * fd lock, and the counts are folded in here: writes once per flush, calls
 * when the fd is closed and before the counters are written out. */
#ifndef CO_STATS_H
#define CO_STATS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define CO_STATS_COUNTERS(X)                                                   \
	X(calls_write)                                                         \
	X(calls_send)                                                          \
	X(calls_sendto)                                                        \
	X(calls_sendmsg)                                                       \
	X(calls_writev)                                                        \
	X(calls_sendmmsg)                                                      \
	X(writes_queued)                                                       \
	X(bytes_queued)                                                        \
	X(writes_sent_along)                                                   \
	X(writes_direct)                                                       \
	X(writes_from_signal_handlers)                                         \
	X(dgrams_queued)                                                       \
	X(flush_syscalls)                                                      \
	X(flush_bytes)                                                         \
	X(flush_eagain)                                                        \
	X(flush_nobufs)                                                        \
	X(flush_size)                                                          \
	X(flush_large)                                                         \
	X(flush_deadline)                                                      \
	X(flush_read)                                                          \
	X(flush_wait)                                                          \
	X(flush_close)                                                         \
	X(flush_order)                                                         \
	X(flush_exit)                                                          \
	X(flush_fork)                                                          \
	X(flush_exec)                                                          \
	X(flush_signal)                                                        \
	X(dgram_flush_sendmmsg)                                                \
	X(uring_submits)                                                       \
	X(uring_sends)                                                         \
	X(uring_unavailable)                                                   \
	X(dgram_flush_gso)                                                     \
	X(dgram_gso_fallbacks)                                                 \
	X(passthrough_not_socket)                                              \
	X(passthrough_not_stream)                                              \
	X(passthrough_not_connected)                                           \
	X(passthrough_flags)                                                   \
	X(passthrough_address)                                                 \
	X(passthrough_control)                                                 \
	X(passthrough_nomem)                                                   \
	X(passthrough_stdio)                                                   \
	X(passthrough_dup)                                                     \
	X(passthrough_shutdown)                                                \
	X(passthrough_fd_range)                                                \
	X(passthrough_reentrant)                                               \
	X(passthrough_exiting)                                                 \
	X(passthrough_dgram_size)                                              \
	X(passthrough_dgram_dest)                                              \
	X(deferred_errors)                                                     \
	X(closes_handed_over)                                                  \
	X(bytes_dropped)                                                       \
	X(dgrams_dropped)

enum co_counter {
#define CO_STATS_ENUM(name) CO_ST_##name,
	CO_STATS_COUNTERS(CO_STATS_ENUM)
#undef CO_STATS_ENUM
	CO_ST_COUNT
};

/* The write calls the shim catches, in the order of the calls_ counters. */
enum co_api {
	CO_API_WRITE,
	CO_API_SEND,
	CO_API_SENDTO,
	CO_API_SENDMSG,
	CO_API_WRITEV,
	CO_API_SENDMMSG,
	CO_API_COUNT
};

_Static_assert(CO_ST_calls_sendmmsg - CO_ST_calls_write == CO_API_COUNT - 1,
	       "one calls_ counter per enum co_api value, in the same order");

/* Writes per flush syscall, in power-of-two buckets: 1, 2-3, 4-7, ... */
#define CO_BATCH_BUCKETS 12

/* Time the oldest queued byte waited when its flush began, in power-of-two
 * buckets of microseconds: < 1, [1, 2), [2, 4), ... (the last takes the
 * rest); counted once per queued write, so each write's delay is at most
 * its bucket's bound. */
#define CO_DELAY_BUCKETS 24

struct co_stats {
	_Atomic uint64_t counter[CO_ST_COUNT];
	_Atomic uint64_t batch[CO_BATCH_BUCKETS];
	_Atomic uint64_t delay[CO_DELAY_BUCKETS];
	_Atomic uint64_t delay_max_ns;
};

static inline void co_stat_add(struct co_stats *st, enum co_counter c, uint64_t n)
{
	atomic_fetch_add_explicit(&st->counter[c], n, memory_order_relaxed);
}

static inline uint64_t co_stat_get(struct co_stats *st, enum co_counter c)
{
	return atomic_load_explicit(&st->counter[c], memory_order_relaxed);
}

/* Records one flush syscall that carried out the given number of writes. */
void co_stats_batch(struct co_stats *st, uint64_t writes);

/* Records that writes queued writes are flushed, the oldest having waited
 * waited_ns. */
void co_stats_delay(struct co_stats *st, uint64_t waited_ns, uint64_t writes);

/* Formats the counters as a flat JSON object, one "key": value per line.
 * Returns the length written (truncated to size - 1 if too small). */
size_t co_stats_format(struct co_stats *st, long pid, char *buf, size_t size);

#endif
