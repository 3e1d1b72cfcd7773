/* Counters and their JSON form. */
#include "stats.h"

#include <stdio.h>

static const char *const co_counter_names[CO_ST_COUNT] = {
#define CO_STATS_NAME(name) #name,
	CO_STATS_COUNTERS(CO_STATS_NAME)
#undef CO_STATS_NAME
};

void co_stats_batch(struct co_stats *st, uint64_t writes)
{
	int bucket = 0;

	while (writes > 1 && bucket < CO_BATCH_BUCKETS - 1) {
		writes >>= 1;
		bucket++;
	}
	atomic_fetch_add_explicit(&st->batch[bucket], 1, memory_order_relaxed);
}

void co_stats_delay(struct co_stats *st, uint64_t waited_ns, uint64_t writes)
{
	uint64_t us = waited_ns / 1000, max = atomic_load_explicit(&st->delay_max_ns,
								     memory_order_relaxed);
	int bucket = 0;

	while (us > 0 && bucket < CO_DELAY_BUCKETS - 1) {
		us >>= 1;
		bucket++;
	}
	atomic_fetch_add_explicit(&st->delay[bucket], writes, memory_order_relaxed);
	while (waited_ns > max &&
	       !atomic_compare_exchange_weak_explicit(&st->delay_max_ns, &max, waited_ns,
						      memory_order_relaxed, memory_order_relaxed))
		;
}

/* Appends to buf at *len, never past size - 1. */
static void append(char *buf, size_t size, size_t *len, const char *fmt,
		   const char *key, unsigned long long value)
{
	int n;

	if (*len + 1 >= size)
		return;
	n = snprintf(buf + *len, size - *len, fmt, key, value);
	if (n < 0)
		return;
	*len += (size_t)n < size - *len ? (size_t)n : size - *len - 1;
}

size_t co_stats_format(struct co_stats *st, long pid, char *buf, size_t size)
{
	char key[32];
	size_t len = 0;
	int i;

	if (size == 0)
		return 0;
	buf[0] = '\0';
	append(buf, size, &len, "{\n  \"%s\": %llu", "pid", (unsigned long long)pid);
	for (i = 0; i < CO_ST_COUNT; i++)
		append(buf, size, &len, ",\n  \"%s\": %llu", co_counter_names[i],
		       (unsigned long long)co_stat_get(st, (enum co_counter)i));
	for (i = 0; i < CO_BATCH_BUCKETS; i++) {
		snprintf(key, sizeof(key), "batch_%u", 1u << i);
		append(buf, size, &len, ",\n  \"%s\": %llu", key,
		       (unsigned long long)atomic_load_explicit(&st->batch[i],
								memory_order_relaxed));
	}
	for (i = 0; i < CO_DELAY_BUCKETS; i++) {
		snprintf(key, sizeof(key), "delay_us_%u", 1u << i);
		append(buf, size, &len, ",\n  \"%s\": %llu", key,
		       (unsigned long long)atomic_load_explicit(&st->delay[i],
								memory_order_relaxed));
	}
	append(buf, size, &len, ",\n  \"%s\": %llu", "delay_us_max",
	       (unsigned long long)atomic_load_explicit(&st->delay_max_ns, memory_order_relaxed) /
		       1000);
	append(buf, size, &len, "%s\n}\n", "", 0);
	return len;
}
