/* The counters: their flat JSON form, the batch-size buckets, and what the
 * write path counts. */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "app.h"
#include "fake_sys.h"
#include "stats.h"
#include "stream.h"

/* Every key co_stats_format must write, in order. */
static const char *const expected_keys[] = {
	"pid",
	"calls_write", "calls_send", "calls_sendto", "calls_sendmsg", "calls_writev",
	"calls_sendmmsg",
	"writes_queued", "bytes_queued", "writes_sent_along", "writes_direct",
	"writes_from_signal_handlers", "dgrams_queued",
	"flush_syscalls", "flush_bytes", "flush_eagain", "flush_nobufs",
	"flush_size", "flush_large", "flush_deadline", "flush_read", "flush_wait",
	"flush_close", "flush_order", "flush_exit", "flush_fork", "flush_exec", "flush_signal",
	"dgram_flush_sendmmsg", "uring_submits", "uring_sends", "uring_unavailable",
	"dgram_flush_gso", "dgram_gso_fallbacks",
	"passthrough_not_socket", "passthrough_not_stream", "passthrough_not_connected",
	"passthrough_flags", "passthrough_address", "passthrough_control",
	"passthrough_nomem", "passthrough_stdio", "passthrough_dup",
	"passthrough_shutdown", "passthrough_fd_range", "passthrough_reentrant",
	"passthrough_exiting", "passthrough_dgram_size", "passthrough_dgram_dest",
	"deferred_errors", "closes_handed_over", "bytes_dropped", "dgrams_dropped",
	"batch_1", "batch_2", "batch_4", "batch_8", "batch_16", "batch_32",
	"batch_64", "batch_128", "batch_256", "batch_512", "batch_1024", "batch_2048",
	"delay_us_1", "delay_us_2", "delay_us_4", "delay_us_8", "delay_us_16", "delay_us_32", "delay_us_64", "delay_us_128", "delay_us_256", "delay_us_512", "delay_us_1024", "delay_us_2048", "delay_us_4096", "delay_us_8192", "delay_us_16384", "delay_us_32768", "delay_us_65536", "delay_us_131072", "delay_us_262144", "delay_us_524288", "delay_us_1048576", "delay_us_2097152", "delay_us_4194304", "delay_us_8388608",
	"delay_us_max",
};
#define NKEYS (sizeof(expected_keys) / sizeof(expected_keys[0]))

/* One "key": value pair of the parsed output. */
struct pair {
	char key[64];
	unsigned long long value;
};

/* Parses text as a flat JSON object with one "key": number per line, and
 * nothing else: "{\n", pairs joined by ",\n", "\n}\n". Fails the test on
 * anything else. Returns the number of pairs. */
static size_t parse_flat_json(const char *text, struct pair *pairs, size_t max)
{
	const char *p = text;
	size_t n = 0;

	if (strncmp(p, "{\n", 2) != 0)
		fail_msg("does not start with {: %.20s", p);
	p += 2;
	for (;;) {
		const char *key, *end;
		char *num_end;

		if (strncmp(p, "  \"", 3) != 0)
			fail_msg("entry %zu does not start with two spaces and a quote: %.40s", n, p);
		key = p + 3;
		end = strchr(key, '"');
		if (!end || end == key || (size_t)(end - key) >= sizeof(pairs[0].key))
			fail_msg("bad key in entry %zu: %.40s", n, p);
		for (p = key; p < end; p++)
			if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '_'))
				fail_msg("key character '%c' needs escaping or is unexpected", *p);
		if (strncmp(end, "\": ", 3) != 0)
			fail_msg("no \": \" after key %.*s", (int)(end - key), key);
		p = end + 3;
		if (!isdigit((unsigned char)*p))
			fail_msg("value of %.*s is not a number: %.20s", (int)(end - key), key, p);
		if (*p == '0' && isdigit((unsigned char)p[1]))
			fail_msg("value of %.*s has a leading zero", (int)(end - key), key);
		if (n == max)
			fail_msg("more than %zu entries", max);
		memcpy(pairs[n].key, key, (size_t)(end - key));
		pairs[n].key[end - key] = '\0';
		pairs[n].value = strtoull(p, &num_end, 10);
		n++;
		p = num_end;
		if (strncmp(p, ",\n", 2) == 0) {
			p += 2;
			continue;
		}
		if (strcmp(p, "\n}\n") == 0)
			return n;
		fail_msg("after entry %zu: %.20s", n, p);
	}
}

static void test_format_is_flat_json_with_the_expected_keys(void **state)
{
	struct co_stats st;
	struct pair pairs[NKEYS + 8];
	char buf[8192];
	size_t len, n, i, j;

	(void)state;
	memset(&st, 0, sizeof(st));
	len = co_stats_format(&st, 4242, buf, sizeof(buf));
	assert_int_equal(len, strlen(buf));
	n = parse_flat_json(buf, pairs, NKEYS + 8);
	assert_int_equal(n, NKEYS);
	/* Each expected key once (the order does not matter to JSON, but pid
	 * comes first for people reading the file). */
	assert_string_equal(pairs[0].key, "pid");
	for (i = 0; i < NKEYS; i++) {
		int seen = 0;

		for (j = 0; j < n; j++)
			seen += strcmp(pairs[j].key, expected_keys[i]) == 0;
		if (seen != 1)
			fail_msg("key %s appears %d times", expected_keys[i], seen);
	}
	assert_int_equal(pairs[0].value, 4242);
	for (i = 1; i < n; i++)
		assert_int_equal(pairs[i].value, 0);
	/* One pair per line. */
	for (i = 0, j = 0; buf[i]; i++)
		j += buf[i] == '\n';
	assert_int_equal(j, NKEYS + 2);
}

static void test_format_prints_every_value(void **state)
{
	struct co_stats st;
	struct pair pairs[NKEYS];
	char buf[8192];
	int i;

	(void)state;
	memset(&st, 0, sizeof(st));
	for (i = 0; i < CO_ST_COUNT; i++)
		co_stat_add(&st, (enum co_counter)i, 1000u + (uint64_t)i);
	co_stat_add(&st, CO_ST_bytes_dropped, UINT64_MAX - 1000u - CO_ST_bytes_dropped);
	for (i = 0; i < CO_BATCH_BUCKETS; i++)
		atomic_store(&st.batch[i], 7u * (uint64_t)i + 1);
	co_stats_format(&st, 1, buf, sizeof(buf));
	assert_int_equal(parse_flat_json(buf, pairs, NKEYS), NKEYS);
	/* The counters come in enum order, then the buckets, after pid. */
	for (i = 0; i < CO_ST_COUNT; i++) {
		uint64_t expect = i == CO_ST_bytes_dropped ? UINT64_MAX : 1000u + (uint64_t)i;

		assert_string_equal(pairs[1 + i].key, expected_keys[1 + i]);
		if (pairs[1 + i].value != expect)
			fail_msg("%s is %llu, expected %llu", pairs[1 + i].key, pairs[1 + i].value,
				 (unsigned long long)expect);
	}
	for (i = 0; i < CO_BATCH_BUCKETS; i++) {
		assert_string_equal(pairs[1 + CO_ST_COUNT + i].key, expected_keys[1 + CO_ST_COUNT + i]);
		assert_int_equal(pairs[1 + CO_ST_COUNT + i].value, 7u * (uint64_t)i + 1);
	}
}

/* A flush whose oldest byte waited 1.5 us counts its writes in [1, 2) us,
 * reported as delay_us_2; the maximum is kept. */
static void test_delay_buckets_and_max(void **state)
{
	struct co_stats st;

	(void)state;
	memset(&st, 0, sizeof(st));
	co_stats_delay(&st, 1500, 3);
	co_stats_delay(&st, 999, 1);
	co_stats_delay(&st, 250000, 2);
	assert_int_equal(st.delay[0], 1);
	assert_int_equal(st.delay[1], 3);
	/* 250 us: [128, 256), bucket 8, reported as delay_us_256. */
	assert_int_equal(st.delay[8], 2);
	assert_int_equal(st.delay_max_ns, 250000);
	co_stats_delay(&st, UINT64_MAX, 1);
	assert_int_equal(st.delay[CO_DELAY_BUCKETS - 1], 1);
}

static void test_format_truncates_within_the_buffer(void **state)
{
	struct co_stats st;
	char full[8192], buf[8192];
	size_t full_len, size, len;

	(void)state;
	memset(&st, 0, sizeof(st));
	co_stat_add(&st, CO_ST_flush_bytes, 123456789);
	full_len = co_stats_format(&st, 99, full, sizeof(full));

	/* Size 0: nothing written at all. */
	buf[0] = 'X';
	assert_int_equal(co_stats_format(&st, 99, buf, 0), 0);
	assert_int_equal(buf[0], 'X');

	for (size = 1; size <= full_len + 2; size++) {
		memset(buf, 'X', sizeof(buf));
		len = co_stats_format(&st, 99, buf, size);
		assert_int_equal(len, size - 1 < full_len ? size - 1 : full_len);
		assert_int_equal(buf[len], '\0');
		assert_memory_equal(buf, full, len);
		/* Nothing past the buffer. */
		assert_int_equal(buf[size], 'X');
	}
}

/* Returns which bucket co_stats_batch put one batch of writes in. */
static int bucket_of(uint64_t writes)
{
	struct co_stats st;
	int i, found = -1;

	memset(&st, 0, sizeof(st));
	co_stats_batch(&st, writes);
	for (i = 0; i < CO_BATCH_BUCKETS; i++) {
		uint64_t v = atomic_load(&st.batch[i]);

		if (v == 1 && found < 0)
			found = i;
		else if (v != 0)
			return -2;
	}
	return found;
}

static void test_batch_buckets(void **state)
{
	(void)state;
	assert_int_equal(bucket_of(0), 0);
	assert_int_equal(bucket_of(1), 0);
	assert_int_equal(bucket_of(2), 1);
	assert_int_equal(bucket_of(3), 1);
	assert_int_equal(bucket_of(4), 2);
	assert_int_equal(bucket_of(7), 2);
	assert_int_equal(bucket_of(8), 3);
	assert_int_equal(bucket_of(1023), 9);
	assert_int_equal(bucket_of(1024), 10);
	assert_int_equal(bucket_of(2047), 10);
	/* The last bucket takes everything from 2048 up. */
	assert_int_equal(bucket_of(2048), 11);
	assert_int_equal(bucket_of(1000000), 11);
	assert_int_equal(bucket_of(UINT64_MAX), 11);
}

static void test_batch_counts_accumulate(void **state)
{
	struct co_stats st;

	(void)state;
	memset(&st, 0, sizeof(st));
	co_stats_batch(&st, 5);
	co_stats_batch(&st, 6);
	co_stats_batch(&st, 1);
	assert_int_equal(atomic_load(&st.batch[0]), 1);
	assert_int_equal(atomic_load(&st.batch[2]), 2);
}

/* The write path's counters, through co_write. */
static void test_write_path_counts(void **state)
{
	struct co_ctx *ctx;
	struct app a = { 0 };
	int i;

	(void)state;
	fake_reset();
	ctx = fake_ctx_new(NULL);
	app_open(&a, 5, FAKE_TCP, 1);

	/* The connection's lone first write goes at once, by the caller. */
	assert_int_equal(app_write(ctx, &a, 10, 0), 10);
	assert_int_equal(co_stat_get(&ctx->stats, CO_ST_writes_direct), 1);
	assert_int_equal(co_stat_get(&ctx->stats, CO_ST_flush_syscalls), 0);
	fake_forget_sends();
	a.done = 0;

	/* Five queued writes, flushed in one call. */
	for (i = 0; i < 5; i++)
		assert_int_equal(app_write(ctx, &a, 10, 0), 10);
	co_flush_all_nowait(ctx, CO_ST_flush_read);
	assert_int_equal(co_stat_get(&ctx->stats, CO_ST_writes_queued), 5);
	assert_int_equal(co_stat_get(&ctx->stats, CO_ST_flush_syscalls), 1);
	assert_int_equal(co_stat_get(&ctx->stats, CO_ST_flush_bytes), 50);
	assert_int_equal(co_stat_get(&ctx->stats, CO_ST_flush_read), 1);
	assert_int_equal(atomic_load(&ctx->stats.batch[2]), 1);

	/* Three queued, then a large write that takes them along: a batch of 4. */
	for (i = 0; i < 3; i++)
		assert_int_equal(app_write(ctx, &a, 10, 0), 10);
	assert_int_equal(app_write(ctx, &a, 40000, 0), 40000);
	assert_int_equal(co_stat_get(&ctx->stats, CO_ST_writes_queued), 8);
	assert_int_equal(co_stat_get(&ctx->stats, CO_ST_writes_sent_along), 1);
	assert_int_equal(co_stat_get(&ctx->stats, CO_ST_flush_syscalls), 2);
	assert_int_equal(co_stat_get(&ctx->stats, CO_ST_flush_bytes), 40080);
	assert_int_equal(co_stat_get(&ctx->stats, CO_ST_flush_large), 1);
	assert_int_equal(atomic_load(&ctx->stats.batch[2]), 2);

	/* A large write alone: a batch of 1. */
	assert_int_equal(app_write(ctx, &a, 40000, 0), 40000);
	assert_int_equal(atomic_load(&ctx->stats.batch[0]), 1);
	assert_int_equal(co_stat_get(&ctx->stats, CO_ST_writes_sent_along), 2);

	fake_ctx_free(ctx);
	app_close(&a);
	fake_reset();
}

/* bytes_queued counts the bytes of the writes that went through a queue. */
static void test_bytes_queued_is_counted(void **state)
{
	struct co_ctx *ctx;
	struct app a = { 0 };
	uint64_t counted;
	int i;

	(void)state;
	fake_reset();
	ctx = fake_ctx_new(NULL);
	app_open(&a, 5, FAKE_TCP, 1);
	app_start(ctx, &a);
	for (i = 0; i < 3; i++)
		assert_int_equal(app_write(ctx, &a, 100, 0), 100);
	co_flush_all_nowait(ctx, CO_ST_flush_read);
	counted = co_stat_get(&ctx->stats, CO_ST_bytes_queued);
	fake_ctx_free(ctx);
	app_close(&a);
	fake_reset();
	assert_int_equal(counted, 300);
}

/* Calls as the hooks make them: one byte with the given API bits. */
static void call(struct co_ctx *ctx, int fd, unsigned api_bits, int times)
{
	struct iovec iov = { .iov_base = "x", .iov_len = 1 };

	while (times-- > 0)
		assert_int_not_equal(co_write_now(ctx, fd, &iov, 1, 0, api_bits), -EBADF);
}

static uint64_t calls(struct co_ctx *ctx, enum co_api api)
{
	return co_stat_get(&ctx->stats, (enum co_counter)(CO_ST_calls_write + api));
}

/* Calls are counted per API on the sockets the shim coalesces, in the fd
 * entry; they reach the counters when collected or when the fd closes, and
 * a forked child starts from zero. */
static void test_calls_per_api(void **state)
{
	struct co_ctx *ctx;
	struct co_fd *f;
	int api;

	(void)state;
	fake_reset();
	ctx = fake_ctx_new(NULL);
	fake_socket(5, FAKE_TCP);
	fake_socket(6, FAKE_UDP);
	fake_socket(7, FAKE_NOT_SOCKET);
	for (api = 0; api < CO_API_COUNT; api++)
		call(ctx, 5, CO_WRITE_API(api), api + 1);
	call(ctx, 6, CO_WRITE_API(CO_API_SENDTO), 10);
	/* The later messages of one sendmmsg call. */
	call(ctx, 6, CO_WRITE_API(CO_API_COUNT), 3);
	/* Not a socket: not caught, not counted. */
	call(ctx, 7, CO_WRITE_API(CO_API_WRITE), 4);
	for (api = 0; api < CO_API_COUNT; api++)
		assert_int_equal(calls(ctx, api), 0);
	co_collect_calls(ctx);
	for (api = 0; api < CO_API_COUNT; api++)
		assert_int_equal(calls(ctx, api), api + 1 + (api == CO_API_SENDTO ? 10 : 0));
	/* Collected once only. */
	co_collect_calls(ctx);
	assert_int_equal(calls(ctx, CO_API_SENDMMSG), CO_API_SENDMMSG + 1);

	/* Close folds the fd's calls in. */
	call(ctx, 5, CO_WRITE_API(CO_API_WRITEV), 7);
	f = co_close_begin(ctx, 5);
	assert_non_null(f);
	co_close_end(f);
	assert_int_equal(calls(ctx, CO_API_WRITEV), CO_API_WRITEV + 1 + 7);

	/* An entry another thread holds is left for the next collection. */
	call(ctx, 6, CO_WRITE_API(CO_API_SEND), 2);
	f = co_fd_find(&ctx->fds, 6);
	assert_int_equal(pthread_mutex_lock(&f->lock), 0);
	co_collect_calls(ctx);
	assert_int_equal(calls(ctx, CO_API_SEND), CO_API_SEND + 1);
	assert_int_equal(pthread_mutex_unlock(&f->lock), 0);
	co_collect_calls(ctx);
	assert_int_equal(calls(ctx, CO_API_SEND), CO_API_SEND + 1 + 2);

	/* A forked child counts its own calls only. */
	call(ctx, 6, CO_WRITE_API(CO_API_SENDTO), 5);
	co_after_fork_child(ctx);
	co_collect_calls(ctx);
	for (api = 0; api < CO_API_COUNT; api++)
		assert_int_equal(calls(ctx, api), 0);
	assert_int_equal(co_stat_get(&ctx->stats, CO_ST_writes_direct), 0);

	fake_ctx_free(ctx);
	fake_reset();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_format_is_flat_json_with_the_expected_keys),
		cmocka_unit_test(test_format_prints_every_value),
		cmocka_unit_test(test_delay_buckets_and_max),
		cmocka_unit_test(test_format_truncates_within_the_buffer),
		cmocka_unit_test(test_batch_buckets),
		cmocka_unit_test(test_batch_counts_accumulate),
		cmocka_unit_test(test_write_path_counts),
		cmocka_unit_test(test_bytes_queued_is_counted),
		cmocka_unit_test(test_calls_per_api),
	};

	return cmocka_run_group_tests_name("stats", tests, NULL, NULL);
}
