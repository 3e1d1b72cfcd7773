/* The per-fd byte queue: append, consume, growth, compaction, many iovecs,
 * and a failed append that leaves the queue as it was. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fake_sys.h"
#include "pending.h"

/* A queue and a reference copy of what it must hold, in the same order. */
struct model {
	struct co_pending q;
	char *expect;
	size_t expect_len;
};

static int setup(void **state)
{
	struct model *m = calloc(1, sizeof(*m));

	fake_reset();
	m->expect = malloc(1 << 22);
	*state = m;
	return m && m->expect ? 0 : -1;
}

static int teardown(void **state)
{
	struct model *m = *state;

	pending_release(&m->q, fake_sys());
	free(m->expect);
	free(m);
	return 0;
}

/* Appends len pattern bytes as one iovec; returns pending_append's result. */
static int append_bytes(struct model *m, size_t len, unsigned seed)
{
	char *buf = malloc(len ? len : 1);
	struct iovec iov = { .iov_base = buf, .iov_len = len };
	int r;

	fill_pattern(buf, len, seed);
	r = pending_append(&m->q, fake_sys(), &iov, 1, len);
	if (r == 0) {
		memcpy(m->expect + m->expect_len, buf, len);
		m->expect_len += len;
	}
	free(buf);
	return r;
}

static void consume_bytes(struct model *m, size_t n)
{
	pending_consume(&m->q, n);
	memmove(m->expect, m->expect + n, m->expect_len - n);
	m->expect_len -= n;
}

/* The queue holds exactly the model's bytes. */
static void assert_queue_matches(const struct model *m)
{
	assert_int_equal(pending_len(&m->q), m->expect_len);
	assert_true(m->q.head <= m->q.tail);
	assert_true(m->q.tail <= m->q.cap);
	if (m->expect_len)
		assert_memory_equal(m->q.data + m->q.head, m->expect, m->expect_len);
}

static void test_empty_queue(void **state)
{
	struct model *m = *state;

	assert_int_equal(pending_len(&m->q), 0);
	/* Appending nothing needs no buffer. */
	assert_int_equal(append_bytes(m, 0, 1), 0);
	assert_int_equal(pending_len(&m->q), 0);
	assert_int_equal(fake_realloc_calls(), 0);
	assert_int_equal(pending_discard(&m->q), 0);
}

static void test_append_then_consume(void **state)
{
	struct model *m = *state;

	assert_int_equal(append_bytes(m, 100, 1), 0);
	assert_int_equal(append_bytes(m, 200, 2), 0);
	assert_queue_matches(m);
	assert_int_equal(pending_len(&m->q), 300);

	consume_bytes(m, 50);
	assert_queue_matches(m);
	assert_int_equal(m->q.head, 50);

	assert_int_equal(append_bytes(m, 10, 3), 0);
	assert_queue_matches(m);

	/* Consuming everything rewinds the queue to the start of its buffer. */
	consume_bytes(m, pending_len(&m->q));
	assert_int_equal(pending_len(&m->q), 0);
	assert_int_equal(m->q.head, 0);
	assert_int_equal(m->q.tail, 0);
}

static void test_grows_by_doubling_and_keeps_bytes(void **state)
{
	struct model *m = *state;
	size_t cap;

	assert_int_equal(append_bytes(m, 1000, 1), 0);
	cap = m->q.cap;
	assert_true(cap >= 1000);
	assert_int_equal(append_bytes(m, cap, 2), 0);
	assert_queue_matches(m);
	assert_true(m->q.cap >= 1000 + cap);
	/* The buffer grows geometrically, not by the exact amount. */
	assert_int_equal(m->q.cap % cap, 0);

	/* A large append at once. */
	assert_int_equal(append_bytes(m, 1 << 20, 3), 0);
	assert_queue_matches(m);
	assert_true(m->q.cap >= m->expect_len);
}

static void test_growth_after_consume_keeps_order(void **state)
{
	struct model *m = *state;
	size_t cap;

	assert_int_equal(append_bytes(m, 3000, 1), 0);
	cap = m->q.cap;
	consume_bytes(m, 1000);
	/* More than the buffer can hold even after moving: must grow, and the
	 * bytes at the head must survive the move and the growth. */
	assert_int_equal(append_bytes(m, cap, 2), 0);
	assert_true(m->q.cap > cap);
	assert_queue_matches(m);
}

static void test_compaction_reuses_the_buffer(void **state)
{
	struct model *m = *state;
	size_t cap;
	char *data;
	int reallocs;

	assert_int_equal(append_bytes(m, 1000, 1), 0);
	cap = m->q.cap;
	data = m->q.data;
	assert_int_equal(append_bytes(m, cap - 1000, 2), 0);
	assert_int_equal(m->q.tail, cap);
	consume_bytes(m, cap - 500);
	reallocs = fake_realloc_calls();

	/* 500 bytes queued at the end of the buffer; room for cap - 500 more
	 * once they move to the front. */
	assert_int_equal(append_bytes(m, cap - 500, 3), 0);
	assert_int_equal(fake_realloc_calls(), reallocs);
	assert_ptr_equal(m->q.data, data);
	assert_int_equal(m->q.cap, cap);
	assert_int_equal(m->q.head, 0);
	assert_int_equal(m->q.tail, cap);
	assert_queue_matches(m);
}

static void test_many_iovecs(void **state)
{
	struct model *m = *state;
	enum { N = 1024 };
	struct iovec iov[N];
	char *buf = malloc(N * 37);
	size_t total = 0, off = 0;
	int i;

	fill_pattern(buf, N * 37, 7);
	for (i = 0; i < N; i++) {
		size_t len = (size_t)(i * 13) % 37; /* Includes empty iovecs. */

		iov[i].iov_base = buf + off;
		iov[i].iov_len = len;
		off += len;
		total += len;
	}
	assert_int_equal(append_bytes(m, 5, 1), 0);
	assert_int_equal(pending_append(&m->q, fake_sys(), iov, N, total), 0);
	memcpy(m->expect + m->expect_len, buf, total);
	m->expect_len += total;
	assert_queue_matches(m);
	free(buf);
}

static void test_failed_growth_leaves_queue_unchanged(void **state)
{
	struct model *m = *state;
	size_t cap, len;

	assert_int_equal(append_bytes(m, 3000, 1), 0);
	consume_bytes(m, 700);
	cap = m->q.cap;
	len = pending_len(&m->q);

	fake_fail_realloc(1);
	assert_int_equal(append_bytes(m, cap, 2), -ENOMEM);
	assert_int_equal(pending_len(&m->q), len);
	assert_int_equal(m->q.cap, cap);
	assert_queue_matches(m);

	/* The next append, with memory back, works and keeps everything. */
	assert_int_equal(append_bytes(m, cap, 3), 0);
	assert_queue_matches(m);
}

static void test_failed_first_allocation(void **state)
{
	struct model *m = *state;

	fake_fail_realloc(1);
	assert_int_equal(append_bytes(m, 10, 1), -ENOMEM);
	assert_int_equal(pending_len(&m->q), 0);
	assert_null(m->q.data);
	assert_int_equal(m->q.cap, 0);
	assert_int_equal(append_bytes(m, 10, 2), 0);
	assert_queue_matches(m);
}

static void test_discard_and_release(void **state)
{
	struct model *m = *state;

	assert_int_equal(append_bytes(m, 123, 1), 0);
	consume_bytes(m, 23);
	assert_int_equal(pending_discard(&m->q), 100);
	assert_int_equal(pending_len(&m->q), 0);
	m->expect_len = 0;

	/* After a discard the queue is usable again. */
	assert_int_equal(append_bytes(m, 50, 2), 0);
	assert_queue_matches(m);

	pending_discard(&m->q);
	pending_release(&m->q, fake_sys());
	assert_null(m->q.data);
	assert_int_equal(m->q.cap, 0);
	assert_int_equal(m->q.head, 0);
	assert_int_equal(m->q.tail, 0);
	m->expect_len = 0;

	/* And after a release too. */
	assert_int_equal(append_bytes(m, 70, 3), 0);
	assert_queue_matches(m);
}

/* Random appends and consumes against the model. */
static void test_random_operations(void **state)
{
	struct model *m = *state;
	unsigned x = 12345;
	int i;

	for (i = 0; i < 5000; i++) {
		x = x * 1103515245u + 12345u;
		if ((x >> 16) % 3 == 0 && m->expect_len) {
			consume_bytes(m, (x >> 4) % (m->expect_len + 1));
		} else if (m->expect_len < (1 << 20)) {
			if ((x >> 20) % 50 == 0)
				fake_fail_realloc(1);
			append_bytes(m, (x >> 8) % 6000, (unsigned)i);
			fake_fail_realloc(0);
		}
		assert_queue_matches(m);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_empty_queue, setup, teardown),
		cmocka_unit_test_setup_teardown(test_append_then_consume, setup, teardown),
		cmocka_unit_test_setup_teardown(test_grows_by_doubling_and_keeps_bytes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_growth_after_consume_keeps_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_compaction_reuses_the_buffer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many_iovecs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_failed_growth_leaves_queue_unchanged, setup, teardown),
		cmocka_unit_test_setup_teardown(test_failed_first_allocation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_discard_and_release, setup, teardown),
		cmocka_unit_test_setup_teardown(test_random_operations, setup, teardown),
	};

	return cmocka_run_group_tests_name("pending", tests, NULL, NULL);
}
