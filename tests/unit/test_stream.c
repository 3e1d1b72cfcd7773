/* The write path through co_write: queueing, sending with the queue,
 * classification, passthrough, partial sends, EAGAIN, EINTR, errors and
 * allocation failures. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "app.h"
#include "fake_sys.h"
#include "stream.h"

struct fixture {
	struct co_ctx *ctx;
	struct app a; /* fd 5 */
	struct app b; /* fd 6 */
};

/* Makes the fixture's context with cfg (NULL: the defaults) and starts
 * both connections: their first, lone write has gone out, their next writes
 * are queued. The wires and counters then start from nothing. */
static void start_connections(struct fixture *fx, const struct co_config *cfg)
{
	fake_ctx_free(fx->ctx);
	fx->ctx = fake_ctx_new(cfg);
	app_start(fx->ctx, &fx->a);
	app_start(fx->ctx, &fx->b);
	fake_forget_sends();
	memset(&fx->ctx->stats, 0, sizeof(fx->ctx->stats));
}

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	if (!fx)
		return -1;
	fake_reset();
	app_open(&fx->a, 5, FAKE_TCP, 1);
	app_open(&fx->b, 6, FAKE_TCP, 2);
	*state = fx;
	start_connections(fx, NULL);
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;

	fake_ctx_free(fx->ctx);
	app_close(&fx->a);
	app_close(&fx->b);
	free(fx);
	fake_reset();
	return 0;
}

/* Replaces the fixture's context by one with the given queue size and large
 * write threshold (the other settings at their defaults). */
static struct co_ctx *use_sizes(struct fixture *fx, size_t max_bytes, size_t large_bytes)
{
	struct co_config cfg;

	fake_config(&cfg);
	cfg.max_bytes = max_bytes;
	cfg.large_bytes = large_bytes;
	start_connections(fx, &cfg);
	return fx->ctx;
}

static uint64_t stat_of(struct co_ctx *ctx, enum co_counter c)
{
	return co_stat_get(&ctx->stats, c);
}

static int pending_fds(struct co_ctx *ctx)
{
	return atomic_load(&ctx->fds.pending_count);
}

/* Queues count writes of len bytes each, checking each one is taken whole
 * without a system call. */
static void queue_writes(struct co_ctx *ctx, struct app *a, int count, size_t len)
{
	int calls = fake_send_calls(a->fd), i;

	for (i = 0; i < count; i++)
		assert_int_equal(app_write(ctx, a, len, 0), len);
	assert_int_equal(fake_send_calls(a->fd), calls);
}

/* Queueing */

static void test_small_writes_are_queued(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	struct co_fd *f;

	queue_writes(ctx, &fx->a, 3, 100);
	assert_int_equal(fake_send_calls_total(), 0);
	assert_int_equal(fake_wire_len(5), 0);
	assert_int_equal(app_queued(ctx, 5), 300);
	f = co_fd_find(&ctx->fds, 5);
	assert_non_null(f);
	assert_memory_equal(f->q.data + f->q.head, fx->a.src, 300);
	assert_int_equal(pending_fds(ctx), 1);
	assert_false(co_fd_passes(ctx, 5));

	/* Flushing sends them in one call, in order. */
	co_flush_all_nowait(ctx, CO_ST_flush_read);
	assert_int_equal(fake_send_calls(5), 1);
	assert_true(app_wire_is(&fx->a, 300));
	assert_int_equal(app_queued(ctx, 5), 0);
	assert_int_equal(pending_fds(ctx), 0);
	assert_int_equal(fake_writev_calls(), 0);
}

static void test_queue_flags_are_queued(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;

	assert_int_equal(app_write(ctx, &fx->a, 10, MSG_NOSIGNAL), 10);
	assert_int_equal(app_write(ctx, &fx->a, 10, MSG_MORE), 10);
	assert_int_equal(app_write(ctx, &fx->a, 10, MSG_DONTWAIT), 10);
	assert_int_equal(app_write(ctx, &fx->a, 10, MSG_DONTWAIT | MSG_NOSIGNAL | MSG_MORE), 10);
	assert_int_equal(fake_send_calls_total(), 0);
	assert_int_equal(app_queued(ctx, 5), 40);
}

static void test_zero_length_write(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;

	assert_int_equal(app_write(ctx, &fx->a, 0, 0), 0);
	assert_int_equal(co_write_now(ctx, 5, NULL, 0, 0, 0), 0);
	assert_int_equal(fake_send_calls_total(), 0);
	assert_int_equal(app_queued(ctx, 5), 0);
	assert_int_equal(pending_fds(ctx), 0);
}

static void test_reaching_max_bytes_sends_queue_and_write_in_one_call(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = use_sizes(fx, 1024, 512);
	struct fake_send_call c;

	queue_writes(ctx, &fx->a, 10, 100);
	assert_int_equal(app_queued(ctx, 5), 1000);

	/* 1000 + 100 reaches 1024: queue and write leave together. */
	assert_int_equal(app_write(ctx, &fx->a, 100, 0), 100);
	assert_int_equal(fake_send_calls(5), 1);
	c = fake_last_call();
	assert_int_equal(c.fd, 5);
	assert_int_equal(c.offered, 1100);
	assert_int_equal(c.iovcnt, 2);
	assert_false(c.had_name);
	assert_true(app_wire_is(&fx->a, 1100));
	assert_int_equal(app_queued(ctx, 5), 0);
	assert_int_equal(pending_fds(ctx), 0);
	assert_int_equal(stat_of(ctx, CO_ST_flush_size), 1);

	/* Exactly max_bytes also sends. */
	queue_writes(ctx, &fx->a, 9, 100);
	assert_int_equal(app_write(ctx, &fx->a, 124, 0), 124);
	assert_int_equal(fake_send_calls(5), 2);
	assert_int_equal(fake_last_call().offered, 1024);
	assert_true(app_wire_is(&fx->a, 2124));

	/* One byte short of it does not. */
	queue_writes(ctx, &fx->a, 9, 100);
	queue_writes(ctx, &fx->a, 1, 123);
	assert_int_equal(app_queued(ctx, 5), 1023);
	assert_int_equal(fake_send_calls(5), 2);
}

static void test_large_write_is_not_copied(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	struct fake_send_call c;
	const char *large;
	int reallocs;

	queue_writes(ctx, &fx->a, 3, 10);
	reallocs = fake_realloc_calls();
	large = fx->a.src + fx->a.done;
	assert_int_equal(app_write(ctx, &fx->a, 40000, 0), 40000);
	c = fake_last_call();
	assert_int_equal(fake_send_calls(5), 1);
	assert_int_equal(c.iovcnt, 2);
	assert_int_equal(c.offered, 40030);
	/* The kernel got the caller's own buffer, and nothing grew to hold it. */
	assert_ptr_equal(c.last_base, large);
	assert_int_equal(c.last_len, 40000);
	assert_int_equal(fake_realloc_calls(), reallocs);
	assert_true(app_wire_is(&fx->a, 40030));
	assert_int_equal(app_queued(ctx, 5), 0);
	assert_int_equal(stat_of(ctx, CO_ST_flush_large), 1);

	/* With nothing queued it goes alone. */
	assert_int_equal(app_write(ctx, &fx->a, 32768, 0), 32768);
	assert_int_equal(fake_last_call().iovcnt, 1);
	assert_int_equal(fake_send_calls(5), 2);

	/* Several iovecs that are large together go out with the queue. */
	queue_writes(ctx, &fx->a, 2, 7);
	assert_int_equal(app_writev(ctx, &fx->a, 60000, 3, 0), 60000);
	c = fake_last_call();
	assert_int_equal(c.iovcnt, 4);
	assert_int_equal(c.offered, 60014);
	assert_int_equal(fake_send_calls(5), 3);
	assert_true(app_wire_is(&fx->a, fx->a.done));
}

static void test_small_writev_is_queued_whole(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;

	assert_int_equal(app_writev(ctx, &fx->a, 1000, 17, 0), 1000);
	assert_int_equal(app_writev(ctx, &fx->a, 3, 3, 0), 3);
	assert_int_equal(fake_send_calls_total(), 0);
	co_flush_all_nowait(ctx, CO_ST_flush_read);
	assert_true(app_wire_is(&fx->a, 1003));
}

/* Random writes of every size, some nonblocking against a socket that is
 * sometimes full or takes only part, with flushes in between: whatever
 * co_write says it took must reach the wire once and in order. */
static void test_every_byte_on_the_wire_in_order(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	unsigned x = 99;
	int i, stalled[4], nstalled;

	fake_send_chaos(5, 7);
	fake_send_chaos(6, 8);
	for (i = 0; i < 3000; i++) {
		struct app *a = (i & 1) ? &fx->a : &fx->b;
		size_t len;
		int flags;

		x = x * 1103515245u + 12345u;
		switch ((x >> 16) % 10) {
		case 0:
			len = 32768 + (x >> 4) % 40000;
			break;
		case 1:
		case 2:
			len = 200 + (x >> 4) % 5000;
			break;
		default:
			len = 1 + (x >> 4) % 200;
			break;
		}
		if (fx->a.done + 80000 > APP_SRC_SIZE || fx->b.done + 80000 > APP_SRC_SIZE)
			break;
		flags = (x >> 8) & 1 ? MSG_DONTWAIT : 0;
		if ((x >> 20) % 5 == 0)
			co_note_wait();
		assert_int_equal(app_write_all(ctx, a, len, flags), 0);
		assert_true(app_accounted(ctx, a));
		if ((x >> 12) % 17 == 0)
			co_flush_all_nowait(ctx, CO_ST_flush_read);
		if ((x >> 12) % 13 == 0) {
			fake_clock_advance(ctx->cfg.delay_ns);
			co_flush_due(ctx, fake_clock(), stalled, 4, &nstalled);
		}
	}
	co_flush_all_final(ctx, CO_ST_flush_exit);
	assert_true(fx->a.done > 100000);
	assert_true(app_wire_is(&fx->a, fx->a.done));
	assert_true(app_wire_is(&fx->b, fx->b.done));
	assert_int_equal(stat_of(ctx, CO_ST_bytes_dropped), 0);
	assert_int_equal(fake_empty_sends(), 0);
	assert_int_equal(fake_writev_calls(), 0);
	assert_int_equal(pending_fds(ctx), 0);
	/* Both ways were taken. */
	assert_true(stat_of(ctx, CO_ST_writes_direct) > 0);
	assert_true(stat_of(ctx, CO_ST_writes_queued) > 0);
}

/* Classification. Each test uses an fd core has not seen yet. */

/* A write of 10 bytes from buf on fd, straight to co_write. */
static ssize_t write10(struct co_ctx *ctx, int fd)
{
	static const char buf[10] = "0123456789";

	return test_write(ctx, fd, buf, sizeof(buf), 0);
}

static void test_non_socket_passes_through_and_is_cached(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	int looks;

	fake_socket(30, FAKE_NOT_SOCKET);
	assert_false(co_fd_passes(ctx, 30));
	assert_int_equal(write10(ctx, 30), CO_PASSTHROUGH);
	assert_true(co_fd_passes(ctx, 30));
	assert_int_equal(stat_of(ctx, CO_ST_passthrough_not_socket), 1);
	looks = fake_classify_calls(30);
	assert_true(looks >= 1);

	/* Decided once: later writes do not look again. */
	assert_int_equal(write10(ctx, 30), CO_PASSTHROUGH);
	assert_int_equal(write10(ctx, 30), CO_PASSTHROUGH);
	assert_int_equal(fake_classify_calls(30), looks);
	assert_int_equal(stat_of(ctx, CO_ST_passthrough_not_socket), 1);
	assert_int_equal(fake_send_calls_total(), 0);
	assert_int_equal(app_queued(ctx, 30), 0);
	assert_int_equal(pending_fds(ctx), 0);
}

/* fd 30 of the given kind is never coalesced, counted once as counter. */
static void check_passes_for_good(struct fixture *fx, enum fake_sock kind, enum co_counter counter)
{
	struct co_ctx *ctx = fx->ctx;
	int looks;

	fake_socket(30, kind);
	assert_int_equal(write10(ctx, 30), CO_PASSTHROUGH);
	assert_true(co_fd_passes(ctx, 30));
	assert_int_equal(stat_of(ctx, counter), 1);
	looks = fake_classify_calls(30);
	assert_int_equal(write10(ctx, 30), CO_PASSTHROUGH);
	assert_int_equal(fake_classify_calls(30), looks);
	assert_int_equal(fake_send_calls_total(), 0);
	assert_int_equal(stat_of(ctx, CO_ST_writes_direct), 0);
}

/* A connected UDP socket: each write stays one datagram; after the lone
 * first one (sent at once), the next are queued and go out with one
 * sendmmsg, in order and with their own sizes. */
static void test_udp_datagrams_go_out_with_sendmmsg(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	static const size_t sizes[] = { 1, 64, 100, 7, 64 };
	char buf[128], expect[512];
	size_t i, off = 10, len;

	fake_socket(30, FAKE_UDP);
	fill_pattern(expect, sizeof(expect), 9);
	assert_int_equal(test_write(ctx, 30, expect, 10, 0), CO_PASSTHROUGH);
	fake_sys()->sendmsg(30, &(struct msghdr){ .msg_iov = &(struct iovec){ expect, 10 },
						  .msg_iovlen = 1 }, 0);
	for (i = 0; i < 5; i++) {
		memcpy(buf, expect + off, sizes[i]);
		assert_int_equal(test_write(ctx, 30, buf, sizes[i], 0), (ssize_t)sizes[i]);
		off += sizes[i];
	}
	assert_false(co_fd_passes(ctx, 30));
	assert_int_equal(app_queued(ctx, 30) > 0, 1);
	co_flush_all_nowait(ctx, CO_ST_flush_read);
	assert_int_equal(fake_sendmmsg_calls(), 1);
	/* Counted when they leave the queue. */
	assert_int_equal(stat_of(ctx, CO_ST_dgrams_queued), 5);
	assert_int_equal(fake_send_calls(30), 1 + 5);
	assert_int_equal(fake_last_call().offered, 64);
	assert_memory_equal(fake_wire(30, &len), expect, off);
	assert_int_equal(len, off);
	assert_int_equal(stat_of(ctx, CO_ST_dgram_flush_sendmmsg), 1);
}

/* The kernel refuses one queued datagram (ICMP port unreachable on a
 * connected socket): that one is lost, the rest go, and the application's
 * next send gets the error, as it would have; the socket goes on. */
static void test_udp_refused_datagram_is_reported_on_the_next_send(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	char buf[32] = "abcdefghijklmnopqrstuvwxyz";
	size_t len;

	fake_socket(30, FAKE_UDP);
	assert_int_equal(test_write(ctx, 30, buf, 4, 0), CO_PASSTHROUGH);
	assert_int_equal(test_write(ctx, 30, buf, 4, 0), 4);
	assert_int_equal(test_write(ctx, 30, buf + 4, 4, 0), 4);
	assert_int_equal(test_write(ctx, 30, buf + 8, 4, 0), 4);
	fake_send_error(30, ECONNREFUSED, 1);
	co_flush_all_nowait(ctx, CO_ST_flush_read);
	assert_int_equal(app_queued(ctx, 30), 0);
	assert_memory_equal(fake_wire(30, &len), buf + 4, 8);
	assert_int_equal(len, 8);
	assert_int_equal(stat_of(ctx, CO_ST_dgrams_dropped), 1);
	assert_int_equal(test_write(ctx, 30, buf, 4, 0), -ECONNREFUSED);
	assert_false(co_fd_passes(ctx, 30));
	assert_int_equal(test_write(ctx, 30, buf, 4, 0), 4);
}

/* A datagram larger than the queue takes, or with flags the queue does not
 * keep, goes to libc after the queue. */
static void test_udp_large_or_flagged_datagram_passes_after_the_queue(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	static char big[40000];
	char buf[8] = "12345678";

	fake_socket(30, FAKE_UDP);
	assert_int_equal(test_write(ctx, 30, buf, 8, 0), CO_PASSTHROUGH);
	assert_int_equal(test_write(ctx, 30, buf, 8, 0), 8);
	assert_int_equal(test_write(ctx, 30, big, sizeof(big), 0), CO_PASSTHROUGH);
	assert_int_equal(app_queued(ctx, 30), 0);
	assert_int_equal(stat_of(ctx, CO_ST_passthrough_dgram_size), 1);
	assert_int_equal(test_write(ctx, 30, buf, 8, 0), 8);
	assert_int_equal(test_write(ctx, 30, buf, 8, MSG_CONFIRM), CO_PASSTHROUGH);
	assert_int_equal(app_queued(ctx, 30), 0);
}

static void test_seqpacket_passes_through(void **state)
{
	check_passes_for_good(*state, FAKE_UNIX_SEQPACKET, CO_ST_passthrough_not_stream);
}

static void test_stream_socket_other_than_tcp_passes_through(void **state)
{
	check_passes_for_good(*state, FAKE_SCTP, CO_ST_passthrough_not_stream);
}

/* fd is coalesced: after its lone first write (sent at once), the next
 * write of the burst is queued. */
static void check_coalesced(struct co_ctx *ctx, int fd)
{
	uint64_t direct = stat_of(ctx, CO_ST_writes_direct);

	assert_int_equal(write10(ctx, fd), CO_PASSTHROUGH);
	assert_int_equal(stat_of(ctx, CO_ST_writes_direct), direct + 1);
	assert_int_equal(write10(ctx, fd), 10);
	assert_int_equal(app_queued(ctx, fd), 10);
	assert_false(co_fd_passes(ctx, fd));
}

static void test_unconnected_passes_through_without_being_cached(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;

	fake_socket(30, FAKE_TCP_UNCONNECTED);
	assert_int_equal(write10(ctx, 30), CO_PASSTHROUGH);
	assert_false(co_fd_passes(ctx, 30));
	assert_int_equal(stat_of(ctx, CO_ST_passthrough_not_connected), 1);
	assert_int_equal(write10(ctx, 30), CO_PASSTHROUGH);
	assert_int_equal(stat_of(ctx, CO_ST_passthrough_not_connected), 2);
	assert_int_equal(stat_of(ctx, CO_ST_writes_direct), 0);

	/* Once connected, writes are coalesced. */
	fake_socket(30, FAKE_TCP);
	check_coalesced(ctx, 30);
	assert_int_equal(fake_send_calls_total(), 0);
}

static void test_bad_fd_is_not_cached(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;

	fake_socket(30, FAKE_BADF);
	assert_int_equal(write10(ctx, 30), CO_PASSTHROUGH);
	assert_false(co_fd_passes(ctx, 30));
	fake_socket(30, FAKE_TCP);
	check_coalesced(ctx, 30);
}

static void test_stream_socket_kinds_are_coalesced(void **state)
{
	static const enum fake_sock kinds[] = { FAKE_TCP, FAKE_TCP6, FAKE_UNIX };
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	size_t i;

	for (i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		fake_socket(30 + (int)i, kinds[i]);
		check_coalesced(ctx, 30 + (int)i);
	}
	assert_int_equal(fake_send_calls_total(), 0);
	assert_int_equal(pending_fds(ctx), 3);
}

static void test_fd_out_of_range(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;

	assert_int_equal(write10(ctx, CO_FD_LIMIT), CO_PASSTHROUGH);
	assert_int_equal(stat_of(ctx, CO_ST_passthrough_fd_range), 1);
	assert_int_equal(write10(ctx, INT_MAX), CO_PASSTHROUGH);
	assert_int_equal(stat_of(ctx, CO_ST_passthrough_fd_range), 2);
	/* A negative fd is the kernel's to refuse, not a range problem. */
	assert_int_equal(write10(ctx, -1), CO_PASSTHROUGH);
	assert_int_equal(stat_of(ctx, CO_ST_passthrough_fd_range), 2);
	assert_false(co_fd_passes(ctx, -1));
	assert_false(co_fd_passes(ctx, CO_FD_LIMIT));
}

/* Bursts: a lone write is sent at once */

static void test_first_write_of_a_connection_is_sent_at_once(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	struct app c = { 0 };

	app_open(&c, 30, FAKE_TCP, 3);
	/* core hands the write back; the shim makes it itself. */
	assert_int_equal(test_write(ctx, 30, c.src, 10, 0), CO_PASSTHROUGH);
	assert_int_equal(stat_of(ctx, CO_ST_writes_direct), 1);
	assert_int_equal(app_queued(ctx, 30), 0);
	assert_int_equal(pending_fds(ctx), 0);
	assert_int_equal(fake_send_calls_total(), 0);

	/* The following writes of the same burst are queued. */
	c.done = 10;
	assert_int_equal(app_write(ctx, &c, 10, 0), 10);
	assert_int_equal(app_write(ctx, &c, 10, 0), 10);
	assert_int_equal(app_queued(ctx, 30), 20);
	assert_int_equal(stat_of(ctx, CO_ST_writes_direct), 1);
	app_close(&c);
}

static void test_request_response_writes_are_sent_at_once(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	struct app c = { 0 };
	int i;

	app_open(&c, 30, FAKE_TCP, 3);
	/* One write, then a wait for the answer, over and over. */
	for (i = 0; i < 5; i++) {
		co_note_wait();
		assert_int_equal(app_write(ctx, &c, 10 + (size_t)i, 0), 10 + i);
		assert_int_equal(app_queued(ctx, 30), 0);
		assert_true(app_wire_is(&c, c.done));
	}
	assert_int_equal(stat_of(ctx, CO_ST_writes_direct), 5);
	assert_int_equal(pending_fds(ctx), 0);
	app_close(&c);
}

static void test_burst_after_a_burst_of_several_is_queued(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	struct app c = { 0 };

	app_open(&c, 30, FAKE_TCP, 3);
	assert_int_equal(app_write(ctx, &c, 10, 0), 10); /* at once */
	assert_int_equal(app_write(ctx, &c, 10, 0), 10); /* queued */
	co_flush_all_nowait(ctx, CO_ST_flush_read);
	co_note_wait();
	/* The last burst had two writes: this one is queued from the start. */
	assert_int_equal(app_write(ctx, &c, 10, 0), 10);
	assert_int_equal(app_queued(ctx, 30), 10);
	assert_int_equal(stat_of(ctx, CO_ST_writes_direct), 1);
	assert_true(app_accounted(ctx, &c));
	app_close(&c);
}

static void test_lone_write_never_overtakes_the_queue(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	struct app c = { 0 };

	app_open(&c, 30, FAKE_TCP, 3);
	assert_int_equal(app_write(ctx, &c, 10, 0), 10); /* at once */
	assert_int_equal(app_write(ctx, &c, 10, 0), 10); /* queued */
	co_note_wait();
	assert_int_equal(app_write(ctx, &c, 10, 0), 10); /* queued: a burst of one */
	co_note_wait();
	/* The last burst was one write, but bytes are queued: this one must
	 * not be sent ahead of them. */
	assert_int_equal(test_write(ctx, 30, c.src + c.done, 10, 0), 10);
	c.done += 10;
	assert_int_equal(app_queued(ctx, 30), 30);
	assert_int_equal(stat_of(ctx, CO_ST_writes_direct), 1);
	co_flush_all_nowait(ctx, CO_ST_flush_read);
	assert_true(app_wire_is(&c, 40));
	app_close(&c);
}

static void test_deferred_error_comes_before_a_lone_write(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	struct app c = { 0 };

	app_open(&c, 30, FAKE_TCP, 3);
	assert_int_equal(app_write(ctx, &c, 10, 0), 10); /* at once */
	assert_int_equal(app_write(ctx, &c, 10, 0), 10); /* queued */
	co_note_wait();
	assert_int_equal(app_write(ctx, &c, 10, 0), 10); /* queued: a burst of one */
	fake_send_error(30, EPIPE, 1);
	co_flush_all_nowait(ctx, CO_ST_flush_read);
	assert_int_equal(app_queued(ctx, 30), 0);
	co_note_wait();
	/* This write would go at once, but the error comes first. */
	assert_int_equal(test_write(ctx, 30, "x", 1, 0), -EPIPE);
	assert_int_equal(stat_of(ctx, CO_ST_writes_direct), 1);
	app_close(&c);
}

static void test_without_direct_the_first_write_is_queued(void **state)
{
	struct fixture *fx = *state;
	struct co_config cfg;
	struct co_ctx *ctx;

	fake_config(&cfg);
	cfg.direct = 0;
	ctx = fake_ctx_new(&cfg);
	fake_socket(30, FAKE_TCP);
	assert_int_equal(write10(ctx, 30), 10);
	co_note_wait();
	assert_int_equal(write10(ctx, 30), 10);
	assert_int_equal(app_queued(ctx, 30), 20);
	assert_int_equal(stat_of(ctx, CO_ST_writes_direct), 0);
	assert_int_equal(fake_send_calls_total(), 0);
	fake_ctx_free(ctx);
	(void)fx;
}

/* Sockets behind two fds */

static void test_dup_sends_the_other_queue_first_and_stops_both(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	struct app c = { 0 };

	app_open(&c, 30, FAKE_TCP, 3);
	assert_int_equal(app_write(ctx, &c, 10, 0), 10); /* at once */
	assert_int_equal(app_write(ctx, &c, 10, 0), 10); /* queued */
	assert_int_equal(app_queued(ctx, 30), 10);

	/* fd 31 is the same socket (inetd hands a child its connection as
	 * fd 0 and fd 1). A write on it must come after what fd 30 queued. */
	fake_dup(31, 30);
	c.fd = 31;
	assert_int_equal(app_write(ctx, &c, 10, 0), 10);
	assert_true(app_wire_is(&c, 30));
	assert_int_equal(app_queued(ctx, 30), 0);
	assert_int_equal(pending_fds(ctx), 0);
	assert_true(co_fd_passes(ctx, 31));
	assert_true(co_fd_passes(ctx, 30));
	assert_true(stat_of(ctx, CO_ST_passthrough_dup) >= 1);

	/* From now on both go straight to the kernel, in call order. */
	assert_int_equal(app_write(ctx, &c, 10, 0), 10);
	c.fd = 30;
	assert_int_equal(app_write(ctx, &c, 10, 0), 10);
	assert_true(app_wire_is(&c, 50));
	app_close(&c);
}

/* A MSG_DONTWAIT write on a duplicate, while the socket is full and the
 * first fd has bytes queued: the kernel would say EAGAIN at once. The
 * write must not wait (no poll), nor drop the queue; the first fd keeps
 * coalescing until the queue can go, and the duplicate is looked at again
 * on its next write. */
static void test_dup_dontwait_write_on_a_full_socket_says_eagain(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	struct app c = { 0 };
	int polls;

	app_open(&c, 30, FAKE_TCP, 3);
	assert_int_equal(app_write(ctx, &c, 10, 0), 10); /* at once */
	assert_int_equal(app_write(ctx, &c, 10, 0), 10); /* queued */
	fake_dup(31, 30);
	fake_send_full(30, 1);
	polls = fake_poll_calls();
	c.fd = 31;
	assert_int_equal(app_write(ctx, &c, 10, MSG_DONTWAIT), -EAGAIN);
	assert_int_equal(fake_poll_calls(), polls);
	assert_int_equal(app_queued(ctx, 30), 10);
	assert_false(co_fd_passes(ctx, 30));
	assert_false(co_fd_passes(ctx, 31));
	assert_true(app_wire_is(&c, 10));

	/* Room again: the queue goes first, then the write; both fds pass. */
	fake_send_full(30, 0);
	assert_int_equal(app_write(ctx, &c, 10, MSG_DONTWAIT), 10);
	assert_true(app_wire_is(&c, 30));
	assert_int_equal(app_queued(ctx, 30), 0);
	assert_true(co_fd_passes(ctx, 30));
	assert_true(co_fd_passes(ctx, 31));
	app_close(&c);
}

/* Another thread that holds a mutex until told to let go. */
struct holder {
	pthread_mutex_t *lock;
	pthread_mutex_t gate; /* locked by the test until the holder may let go */
	int taken;
	pthread_t thread;
};

static void *hold_main(void *arg)
{
	struct holder *h = arg;

	pthread_mutex_lock(h->lock);
	__atomic_store_n(&h->taken, 1, __ATOMIC_RELEASE);
	pthread_mutex_lock(&h->gate);
	pthread_mutex_unlock(&h->gate);
	pthread_mutex_unlock(h->lock);
	return NULL;
}

static void hold_start(struct holder *h, pthread_mutex_t *lock)
{
	h->lock = lock;
	h->taken = 0;
	pthread_mutex_init(&h->gate, NULL);
	pthread_mutex_lock(&h->gate);
	assert_int_equal(pthread_create(&h->thread, NULL, hold_main, h), 0);
	while (!__atomic_load_n(&h->taken, __ATOMIC_ACQUIRE))
		sched_yield();
}

static void hold_end(struct holder *h)
{
	pthread_mutex_unlock(&h->gate);
	assert_int_equal(pthread_join(h->thread, NULL), 0);
	pthread_mutex_destroy(&h->gate);
}

/* The same write while another thread holds the first fd (blocked in a
 * send on the full socket, as a MSG_DONTWAIT write cannot tell apart from
 * one about to let go): after a short wait, EAGAIN, since the socket has
 * no room. */
static void test_dup_dontwait_write_while_the_owner_is_held(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	struct app c = { 0 };
	struct holder h;

	app_open(&c, 30, FAKE_TCP, 3);
	assert_int_equal(app_write(ctx, &c, 10, 0), 10);
	assert_int_equal(app_write(ctx, &c, 10, 0), 10);
	fake_dup(31, 30);
	fake_send_full(30, 1);
	hold_start(&h, &co_fd_find(&ctx->fds, 30)->lock);
	c.fd = 31;
	assert_int_equal(app_write(ctx, &c, 10, MSG_DONTWAIT), -EAGAIN);
	hold_end(&h);
	assert_int_equal(app_queued(ctx, 30), 10);
	assert_false(co_fd_passes(ctx, 31));
	assert_true(app_wire_is(&c, 10));
	fake_send_full(30, 0);
	assert_int_equal(app_write(ctx, &c, 10, MSG_DONTWAIT), 10);
	assert_true(app_wire_is(&c, 30));
	app_close(&c);
}

struct dup_writer {
	struct co_ctx *ctx;
	struct app *app;
	ssize_t r;
};

static void *dup_writer_main(void *arg)
{
	struct dup_writer *w = arg;

	w->r = app_write(w->ctx, w->app, 10, 0);
	return NULL;
}

/* A first write on a duplicate waits for the owner (held by a third
 * thread) to send its queue. Meanwhile the duplicate must not pass: another
 * thread's write on it would take the fast path to libc and overtake the
 * owner's queue. */
static void test_dup_does_not_pass_before_the_owner_queue_is_sent(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	struct app c = { 0 };
	struct dup_writer w = { .ctx = ctx, .app = &c };
	struct co_fd *dup;
	struct holder h;
	pthread_t t;

	app_open(&c, 30, FAKE_TCP, 3);
	assert_int_equal(app_write(ctx, &c, 10, 0), 10);
	assert_int_equal(app_write(ctx, &c, 10, 0), 10);
	fake_dup(31, 30);
	dup = co_fd_get(&ctx->fds, fake_sys(), 31);
	assert_non_null(dup);
	hold_start(&h, &co_fd_find(&ctx->fds, 30)->lock);
	c.fd = 31;
	assert_int_equal(pthread_create(&t, NULL, dup_writer_main, &w), 0);
	while (atomic_load(&dup->kind) == CO_FD_UNKNOWN)
		sched_yield();
	assert_false(co_fd_passes(ctx, 31));
	assert_true(app_wire_is(&c, 10));
	hold_end(&h);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(w.r, 10);
	assert_true(app_wire_is(&c, 30));
	assert_true(co_fd_passes(ctx, 31));
	assert_true(co_fd_passes(ctx, 30));
	app_close(&c);
}

/* sendfile or splice on a duplicate: what the first fd queued goes first,
 * as far as a write with the same flags would wait for it. */
static void test_flush_before_send_on_a_dup_sends_the_other_queue(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	struct app c = { 0 };

	app_open(&c, 30, FAKE_TCP, 3);
	assert_int_equal(app_write(ctx, &c, 10, 0), 10);
	assert_int_equal(app_write(ctx, &c, 10, 0), 10);
	fake_dup(31, 30);
	/* An operation that follows fd 31's own bytes only: nothing to do. */
	assert_int_equal(co_flush_before(ctx, 31, CO_ST_flush_order, 0), 0);
	assert_int_equal(app_queued(ctx, 30), 10);

	fake_send_full(30, 1);
	assert_int_equal(co_flush_before_send(ctx, 31, CO_ST_flush_order, MSG_DONTWAIT), -EAGAIN);
	assert_int_equal(app_queued(ctx, 30), 10);
	assert_false(co_fd_passes(ctx, 31));
	fake_send_full(30, 0);
	assert_int_equal(co_flush_before_send(ctx, 31, CO_ST_flush_order, 0), 0);
	assert_int_equal(app_queued(ctx, 30), 0);
	assert_true(app_wire_is(&c, 20));
	assert_true(co_fd_passes(ctx, 30));
	assert_true(co_fd_passes(ctx, 31));
	app_close(&c);
}

/* Three fds on one socket, the third unknown to core so far: once one of
 * them passes, closing the fd that coalesced it must not let the third one
 * coalesce while the second still passes (its bytes would overtake). */
static void test_shared_socket_stays_passing_after_its_owner_closes(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	struct app c = { 0 };
	size_t known = ctx->socks.count;

	app_open(&c, 30, FAKE_TCP, 4);
	fake_dup(31, 30);
	fake_dup(32, 30);
	assert_int_equal(app_write(ctx, &c, 10, 0), 10);
	assert_int_equal(app_write(ctx, &c, 10, 0), 10);
	assert_int_equal(app_queued(ctx, 30), 10);
	c.fd = 31;
	assert_int_equal(app_write(ctx, &c, 10, 0), 10);
	assert_true(app_wire_is(&c, 30));
	co_close_end(co_close_begin(ctx, 30));
	fake_socket(30, FAKE_BADF);

	c.fd = 32;
	assert_int_equal(app_write(ctx, &c, 10, 0), 10);
	assert_int_equal(app_write(ctx, &c, 10, 0), 10);
	assert_true(co_fd_passes(ctx, 32));
	c.fd = 31;
	assert_int_equal(app_write(ctx, &c, 10, 0), 10);
	assert_true(app_wire_is(&c, 60));

	/* When every fd of the socket is closed, its identity is free. */
	co_close_end(co_close_begin(ctx, 31));
	co_close_end(co_close_begin(ctx, 32));
	assert_int_equal(ctx->socks.count, known);
	app_close(&c);
}

/* An fd handed to stdio (or shut down) passes for good: another fd of its
 * socket that core meets later must pass too. */
static void test_stopped_fd_keeps_other_fds_of_its_socket_passing(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;

	fake_socket(30, FAKE_TCP);
	co_fd_stop(ctx, 30, CO_ST_passthrough_stdio);
	assert_true(co_fd_passes(ctx, 30));
	fake_dup(31, 30);
	assert_int_equal(write10(ctx, 31), CO_PASSTHROUGH);
	assert_int_equal(write10(ctx, 31), CO_PASSTHROUGH);
	assert_true(co_fd_passes(ctx, 31));
}

static void test_dup_of_a_closed_fd_is_coalesced(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;

	fake_socket(30, FAKE_TCP);
	fake_dup(31, 30);
	check_coalesced(ctx, 30);
	co_close_end(co_close_begin(ctx, 30));
	fake_socket(30, FAKE_BADF);
	/* fd 31 now holds the socket alone. */
	check_coalesced(ctx, 31);
	assert_int_equal(stat_of(ctx, CO_ST_passthrough_dup), 0);
}

static void test_dup_of_a_forgotten_fd_is_coalesced(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;

	fake_socket(30, FAKE_TCP);
	fake_dup(31, 30);
	check_coalesced(ctx, 30);
	co_flush_all_nowait(ctx, CO_ST_flush_read);
	/* fd 30 becomes something else (a dup2 target): its socket stays
	 * behind fd 31 alone. */
	co_fd_forget(ctx, 30);
	fake_socket(30, FAKE_UDP);
	check_coalesced(ctx, 31);
	assert_int_equal(stat_of(ctx, CO_ST_passthrough_dup), 0);
}

static void test_many_sockets(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	int fd;

	/* More sockets than the socket map's first table holds. */
	for (fd = 100; fd < 400; fd++) {
		fake_socket(fd, fd % 2 ? FAKE_TCP : FAKE_UNIX);
		assert_int_equal(write10(ctx, fd), CO_PASSTHROUGH);
		assert_int_equal(write10(ctx, fd), 10);
	}
	assert_int_equal(pending_fds(ctx), 300);
	assert_int_equal(stat_of(ctx, CO_ST_passthrough_dup), 0);
	/* Each is still told apart from a duplicate of another. */
	fake_dup(500, 250);
	assert_int_equal(write10(ctx, 500), CO_PASSTHROUGH);
	assert_true(co_fd_passes(ctx, 500));
	assert_true(co_fd_passes(ctx, 250));
	assert_int_equal(fake_wire_len(250), 10);
	for (fd = 100; fd < 400; fd++)
		co_close_end(co_close_begin(ctx, fd));
	assert_int_equal(pending_fds(ctx), 0);
	assert_int_equal(stat_of(ctx, CO_ST_bytes_dropped), 0);
}

static void test_socket_map_without_memory(void **state)
{
	struct fixture *fx = *state;
	struct co_config cfg;
	struct co_ctx *ctx;

	(void)fx;
	fake_config(&cfg);
	ctx = fake_ctx_new(&cfg);
	/* The fd table's chunk first, then no memory for the socket map. */
	fake_socket(29, FAKE_NOT_SOCKET);
	assert_int_equal(write10(ctx, 29), CO_PASSTHROUGH);
	fake_socket(30, FAKE_TCP);
	fake_fail_alloc(1);
	assert_int_equal(write10(ctx, 30), CO_PASSTHROUGH);
	assert_int_equal(stat_of(ctx, CO_ST_passthrough_nomem), 1);
	assert_int_equal(app_queued(ctx, 30), 0);
	fake_ctx_free(ctx);
}

/* Passthrough of writes the queue cannot carry */

/* A write on a's fd, with a queue, that core must hand back: the queue is
 * sent first, then CO_PASSTHROUGH, counted as counter; the fd stays
 * coalesced. */
static void check_queue_sent_then_passthrough(struct fixture *fx, int flags, unsigned how,
					      enum co_counter counter)
{
	struct co_ctx *ctx = fx->ctx;
	struct app *a = &fx->a;
	struct iovec iov = { .iov_base = a->src + a->done, .iov_len = 10 };
	size_t before = a->done;
	uint64_t count = stat_of(ctx, counter);
	int calls = fake_send_calls(a->fd);

	queue_writes(ctx, a, 5, 10);
	assert_int_equal(co_write_now(ctx, a->fd, &iov, 1, flags, how), CO_PASSTHROUGH);
	assert_int_equal(fake_send_calls(a->fd), calls + 1);
	assert_true(app_wire_is(a, before + 50));
	assert_int_equal(app_queued(ctx, a->fd), 0);
	assert_int_equal(pending_fds(ctx), 0);
	assert_int_equal(stat_of(ctx, counter), count + 1);
	assert_false(co_fd_passes(ctx, a->fd));

	/* Nothing queued: handed back without a system call. */
	assert_int_equal(co_write_now(ctx, a->fd, &iov, 1, flags, how), CO_PASSTHROUGH);
	assert_int_equal(fake_send_calls(a->fd), calls + 1);
	assert_int_equal(stat_of(ctx, counter), count + 2);
}

static void test_flags_flush_queue_then_pass_through(void **state)
{
	static const int flags[] = { MSG_OOB, MSG_EOR, MSG_CONFIRM, MSG_OOB | MSG_DONTWAIT,
				     MSG_FASTOPEN, MSG_ZEROCOPY };
	struct fixture *fx = *state;
	size_t i;

	for (i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
		check_queue_sent_then_passthrough(fx, flags[i], 0, CO_ST_passthrough_flags);
	/* The fd is still coalesced afterwards. */
	queue_writes(fx->ctx, &fx->a, 2, 10);
	assert_int_equal(app_queued(fx->ctx, 5), 20);
}

/* On a Unix stream socket an address is the kernel's to refuse; on a
 * connected TCP socket the kernel ignores it, and the write is queued. */
static void test_address_flushes_queue_then_passes_through(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx;
	struct iovec iov;

	app_close(&fx->a);
	app_open(&fx->a, 5, FAKE_UNIX, 1);
	start_connections(fx, NULL);
	ctx = fx->ctx;
	iov.iov_base = fx->a.src;
	iov.iov_len = 10;
	check_queue_sent_then_passthrough(fx, 0, CO_WRITE_ADDR, CO_ST_passthrough_address);

	fake_socket(40, FAKE_TCP);
	assert_int_equal(co_write_now(ctx, 40, &iov, 1, 0, 0), CO_PASSTHROUGH);
	assert_int_equal(co_write_now(ctx, 40, &iov, 1, 0, CO_WRITE_ADDR), 10);
	assert_int_equal(app_queued(ctx, 40), 10);
}

static void test_control_flushes_queue_then_passes_through(void **state)
{
	check_queue_sent_then_passthrough(*state, 0, CO_WRITE_CONTROL, CO_ST_passthrough_control);
	check_queue_sent_then_passthrough(*state, MSG_DONTWAIT, CO_WRITE_CONTROL | CO_WRITE_ADDR,
					  CO_ST_passthrough_control);
}

static void test_bad_iovcnt_flushes_queue_then_passes_through(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	struct iovec *iov = calloc(IOV_MAX + 1, sizeof(*iov));

	queue_writes(ctx, &fx->a, 3, 10);
	assert_int_equal(co_write_now(ctx, 5, iov, IOV_MAX + 1, 0, 0), CO_PASSTHROUGH);
	assert_true(app_wire_is(&fx->a, 30));
	assert_int_equal(stat_of(ctx, CO_ST_passthrough_flags), 1);
	assert_int_equal(co_write_now(ctx, 5, iov, -1, 0, 0), CO_PASSTHROUGH);
	assert_int_equal(stat_of(ctx, CO_ST_passthrough_flags), 2);
	free(iov);
}

static void test_passthrough_on_full_nonblocking_socket_says_eagain(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	char oob = '!';
	struct iovec iov = { .iov_base = &oob, .iov_len = 1 };

	queue_writes(ctx, &fx->a, 3, 10);
	fake_send_full(5, 1);
	/* The out-of-band byte must not overtake the queue: the caller is
	 * told to try again, and the queue stays. */
	assert_int_equal(co_write_now(ctx, 5, &iov, 1, MSG_OOB | MSG_DONTWAIT, 0), -EAGAIN);
	assert_int_equal(fake_send_calls(5), 1);
	assert_true(fake_last_call().flags & MSG_DONTWAIT);
	assert_int_equal(app_queued(ctx, 5), 30);
	assert_int_equal(stat_of(ctx, CO_ST_passthrough_flags), 0);

	fake_send_full(5, 0);
	assert_int_equal(co_write_now(ctx, 5, &iov, 1, MSG_OOB | MSG_DONTWAIT, 0), CO_PASSTHROUGH);
	assert_true(app_wire_is(&fx->a, 30));
}

/* MSG_DONTWAIT and MSG_NOSIGNAL */

static void test_dontwait_reaches_the_kernel(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	int flags;

	/* A blocking write blocks in the kernel, without SIGPIPE. */
	assert_int_equal(app_write(ctx, &fx->a, 40000, 0), 40000);
	flags = fake_last_call().flags;
	assert_false(flags & MSG_DONTWAIT);
	assert_true(flags & MSG_NOSIGNAL);

	/* A nonblocking one does not block. */
	queue_writes(ctx, &fx->a, 2, 10);
	assert_int_equal(app_write(ctx, &fx->a, 40000, MSG_DONTWAIT), 40000);
	flags = fake_last_call().flags;
	assert_true(flags & MSG_DONTWAIT);
	assert_true(flags & MSG_NOSIGNAL);
	assert_true(app_wire_is(&fx->a, 80020));
}

static void test_dontwait_retries_eintr(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;

	queue_writes(ctx, &fx->a, 2, 10);
	fake_send_error(5, EINTR, 2);
	assert_int_equal(app_write(ctx, &fx->a, 40000, MSG_DONTWAIT), 40000);
	assert_int_equal(fake_send_calls(5), 3);
	assert_true(app_wire_is(&fx->a, 40020));
}

/* Partial sends */

static void test_partial_sends_continue_where_they_stopped(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;

	queue_writes(ctx, &fx->a, 3, 100);
	fake_send_limit(5, 120, 1);
	fake_send_limit(5, 50, 1);
	fake_send_limit(5, 1, 1);
	assert_int_equal(app_write(ctx, &fx->a, 40000, 0), 40000);
	assert_int_equal(fake_send_calls(5), 4);
	/* The last call carried the rest of the queue and all the write. */
	assert_int_equal(fake_last_call().offered, 300 - 171 + 40000);
	assert_true(app_wire_is(&fx->a, 40300));
	assert_int_equal(app_queued(ctx, 5), 0);
	assert_int_equal(pending_fds(ctx), 0);
}

static void test_partial_deferred_flush_continues(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;

	queue_writes(ctx, &fx->a, 10, 100);
	fake_send_limit(5, 333, 2);
	co_flush_all_nowait(ctx, CO_ST_flush_read);
	assert_int_equal(fake_send_calls(5), 3);
	assert_true(app_wire_is(&fx->a, 1000));
	assert_int_equal(app_queued(ctx, 5), 0);
}

static void test_short_send_of_the_callers_bytes_is_a_short_count(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;

	queue_writes(ctx, &fx->a, 3, 100);
	/* The kernel takes the queue and 700 of the caller's 40000 bytes. */
	fake_send_limit(5, 1000, 1);
	fake_send_full(5, 1);
	assert_int_equal(app_write(ctx, &fx->a, 40000, MSG_DONTWAIT), 700);
	assert_int_equal(app_queued(ctx, 5), 0);
	assert_true(app_wire_is(&fx->a, 1000));

	/* The caller carries on where it stopped. */
	fake_send_full(5, 0);
	assert_int_equal(app_write(ctx, &fx->a, 39300, MSG_DONTWAIT), 39300);
	assert_true(app_wire_is(&fx->a, 40300));
}

/* A blocking send of the queue and a small write, interrupted by a signal
 * after part of the write (the kernel returns what it took): the rest is
 * queued and the caller sees its write taken whole, as it would have
 * without the queue, which made the wait. */
static void test_interrupted_blocking_send_does_not_split_a_small_write(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = use_sizes(fx, 1024, 512);

	queue_writes(ctx, &fx->a, 10, 100);
	fake_send_limit(5, 1010, 1);
	assert_int_equal(app_write(ctx, &fx->a, 200, 0), 200);
	assert_true(app_wire_is(&fx->a, 1010));
	assert_int_equal(app_queued(ctx, 5), 190);
	co_flush_all_nowait(ctx, CO_ST_flush_read);
	assert_true(app_wire_is(&fx->a, 1200));
}

/* A writer that keeps a queue growing past the deadline sends it itself
 * (the flusher may get no core in time): at its next 64th write, not
 * before, and not while the queue is younger than the deadline. */
static void test_writer_sends_a_due_queue_itself(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;

	queue_writes(ctx, &fx->a, 64, 10);
	assert_int_equal(fake_send_calls(5), 0);
	queue_writes(ctx, &fx->a, 10, 10);
	fake_clock_advance(ctx->cfg.delay_ns);
	queue_writes(ctx, &fx->a, 53, 10);
	assert_int_equal(fake_send_calls(5), 0);
	assert_int_equal(app_write(ctx, &fx->a, 10, 0), 10);
	assert_int_equal(fake_send_calls(5), 1);
	assert_true(app_wire_is(&fx->a, 1280));
	assert_int_equal(app_queued(ctx, 5), 0);
	assert_int_equal(stat_of(ctx, CO_ST_flush_deadline), 1);
}

/* EAGAIN */

static void test_eagain_with_full_queue_after_the_kernel_said_so(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = use_sizes(fx, 1024, 512);

	queue_writes(ctx, &fx->a, 10, 100);
	fake_send_full(5, 1);
	/* 1100 bytes do not fit in the queue: the kernel is asked, says EAGAIN,
	 * and so does co_write, keeping the queue. */
	assert_int_equal(app_write(ctx, &fx->a, 100, MSG_DONTWAIT), -EAGAIN);
	assert_int_equal(fake_send_calls(5), 1);
	assert_int_equal(fake_last_call().result, -EAGAIN);
	assert_int_equal(fake_last_call().offered, 1100);
	assert_int_equal(app_queued(ctx, 5), 1000);
	assert_int_equal(fake_wire_len(5), 0);
	assert_int_equal(stat_of(ctx, CO_ST_flush_eagain), 1);
	assert_int_equal(pending_fds(ctx), 1);

	/* A large write on the full socket: EAGAIN too, nothing copied. */
	assert_int_equal(app_write(ctx, &fx->a, 5000, MSG_DONTWAIT), -EAGAIN);
	assert_int_equal(fake_send_calls(5), 2);
	assert_int_equal(app_queued(ctx, 5), 1000);

	/* Once the socket drains, everything goes out in order. */
	fake_send_full(5, 0);
	assert_int_equal(app_write(ctx, &fx->a, 100, MSG_DONTWAIT), 100);
	assert_true(app_wire_is(&fx->a, 1100));
	assert_int_equal(app_queued(ctx, 5), 0);
}

static void test_eagain_queues_a_write_that_still_fits(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = use_sizes(fx, 1024, 512);

	queue_writes(ctx, &fx->a, 10, 100);
	fake_send_full(5, 1);
	/* 1000 + 24 is exactly max_bytes: sent first, and queued after EAGAIN. */
	assert_int_equal(app_write(ctx, &fx->a, 24, MSG_DONTWAIT), 24);
	assert_int_equal(fake_send_calls(5), 1);
	assert_int_equal(app_queued(ctx, 5), 1024);

	fake_send_full(5, 0);
	co_flush_all_nowait(ctx, CO_ST_flush_read);
	assert_true(app_wire_is(&fx->a, 1024));
}

static void test_eagain_after_part_of_the_queue_was_sent(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = use_sizes(fx, 1024, 512);

	queue_writes(ctx, &fx->a, 10, 100);
	fake_send_limit(5, 400, 1);
	fake_send_full(5, 1);
	/* 400 bytes leave; 600 + 100 fit the queue again. */
	assert_int_equal(app_write(ctx, &fx->a, 100, MSG_DONTWAIT), 100);
	assert_int_equal(fake_send_calls(5), 2);
	assert_true(app_wire_is(&fx->a, 400));
	assert_int_equal(app_queued(ctx, 5), 700);

	fake_send_full(5, 0);
	co_flush_all_nowait(ctx, CO_ST_flush_read);
	assert_true(app_wire_is(&fx->a, 1100));
}

static void test_eagain_on_blocking_write_of_nonblocking_socket(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;

	/* O_NONBLOCK set on the socket, no MSG_DONTWAIT in the call: the kernel
	 * still says EAGAIN, and the large write is refused. */
	queue_writes(ctx, &fx->a, 2, 10);
	fake_send_full(5, 1);
	assert_int_equal(app_write(ctx, &fx->a, 40000, 0), -EAGAIN);
	assert_int_equal(app_queued(ctx, 5), 20);
	fake_send_full(5, 0);
	assert_int_equal(app_write(ctx, &fx->a, 40000, 0), 40000);
	assert_true(app_wire_is(&fx->a, 40020));
}

/* EINTR */

static void test_eintr_on_blocking_send(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;

	queue_writes(ctx, &fx->a, 3, 10);
	fake_send_error(5, EINTR, 1);
	assert_int_equal(app_write(ctx, &fx->a, 40000, 0), -EINTR);
	assert_int_equal(fake_wire_len(5), 0);
	assert_int_equal(app_queued(ctx, 5), 30);
	assert_int_equal(stat_of(ctx, CO_ST_bytes_dropped), 0);

	/* The caller tries again and everything arrives once, in order. */
	assert_int_equal(app_write(ctx, &fx->a, 40000, 0), 40000);
	assert_true(app_wire_is(&fx->a, 40030));
	/* And an interrupted flush before a passthrough is reported too. */
	queue_writes(ctx, &fx->a, 1, 10);
	fake_send_error(5, EINTR, 1);
	assert_int_equal(app_write(ctx, &fx->a, 1, MSG_OOB), -EINTR);
	assert_int_equal(app_queued(ctx, 5), 10);
}

/* Errors */

static void test_error_on_direct_send_drops_queue_and_is_returned_once(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;

	queue_writes(ctx, &fx->a, 3, 10);
	fake_send_error(5, EPIPE, 1);
	assert_int_equal(app_write(ctx, &fx->a, 40000, 0), -EPIPE);
	assert_int_equal(app_queued(ctx, 5), 0);
	assert_int_equal(pending_fds(ctx), 0);
	assert_int_equal(stat_of(ctx, CO_ST_bytes_dropped), 30);
	/* Already reported: the next write is a new one. */
	assert_int_equal(test_write(ctx, 5, "abc", 3, 0), 3);
	assert_int_equal(app_queued(ctx, 5), 3);
}

static void test_deferred_error_from_flush_all_is_returned_once(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	int calls;

	queue_writes(ctx, &fx->a, 3, 10);
	queue_writes(ctx, &fx->b, 2, 10);
	fake_send_error(5, EPIPE, 1);
	co_flush_all_nowait(ctx, CO_ST_flush_wait);
	assert_int_equal(fake_wire_len(5), 0);
	assert_true(app_wire_is(&fx->b, 20));
	assert_int_equal(app_queued(ctx, 5), 0);
	assert_int_equal(pending_fds(ctx), 0);
	assert_int_equal(stat_of(ctx, CO_ST_deferred_errors), 1);
	assert_int_equal(stat_of(ctx, CO_ST_bytes_dropped), 30);

	/* The next write on fd 5 gets the error, without a system call; the
	 * other fd knows nothing of it. */
	calls = fake_send_calls_total();
	assert_int_equal(test_write(ctx, 5, "x", 1, 0), -EPIPE);
	assert_int_equal(fake_send_calls_total(), calls);
	assert_int_equal(test_write(ctx, 6, "y", 1, 0), 1);
	/* Once: the connection is broken, and the kernel answers the next
	 * write itself (with EPIPE), as it would have. */
	assert_int_equal(test_write(ctx, 5, "z", 1, 0), CO_PASSTHROUGH);
	assert_true(co_fd_passes(ctx, 5));
	assert_int_equal(app_queued(ctx, 5), 0);
}

static void test_deferred_error_from_flush_due_is_returned_once(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	int stalled[4], nstalled;

	queue_writes(ctx, &fx->a, 3, 10);
	fake_send_error(5, ECONNRESET, 1);
	fake_clock_advance(ctx->cfg.delay_ns);
	co_flush_due(ctx, fake_clock(), stalled, 4, &nstalled);
	assert_int_equal(nstalled, 0);
	assert_int_equal(fake_send_calls(5), 1);
	assert_int_equal(app_queued(ctx, 5), 0);
	assert_int_equal(stat_of(ctx, CO_ST_deferred_errors), 1);

	/* Reported first, even to a write that would have passed through. */
	assert_int_equal(test_write(ctx, 5, "!", 1, MSG_OOB), -ECONNRESET);
	assert_int_equal(test_write(ctx, 5, "!", 1, MSG_OOB), CO_PASSTHROUGH);
}

static void test_deferred_error_is_logged(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;
	int calls;

	ctx->cfg.log_level = CO_LOG_INFO;
	queue_writes(ctx, &fx->a, 3, 10);
	fake_send_error(5, EPIPE, 1);
	co_flush_all_nowait(ctx, CO_ST_flush_wait);
	assert_non_null(strstr(fake_log(), "fd 5"));
	/* The dropped bytes are an error; the log names how many. */
	assert_non_null(strstr(fake_log(), "30 queued bytes"));

	/* With logging off, nothing. */
	calls = fake_log_calls();
	ctx->cfg.log_level = CO_LOG_OFF;
	queue_writes(ctx, &fx->b, 3, 10);
	fake_send_error(6, EPIPE, 1);
	co_flush_all_nowait(ctx, CO_ST_flush_wait);
	assert_int_equal(stat_of(ctx, CO_ST_bytes_dropped), 60);
	assert_int_equal(fake_log_calls(), calls);
}

/* Allocation failure */

static void test_nomem_flushes_queue_then_passes_through(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;

	queue_writes(ctx, &fx->a, 1, 100);
	/* 5000 more bytes need a bigger queue, which cannot be had: core sends
	 * the queue and hands the write back. */
	fake_fail_realloc(1);
	assert_int_equal(test_write(ctx, 5, fx->a.src + 100, 5000, 0), CO_PASSTHROUGH);
	assert_true(app_wire_is(&fx->a, 100));
	assert_int_equal(app_queued(ctx, 5), 0);
	assert_int_equal(stat_of(ctx, CO_ST_passthrough_nomem), 1);
	assert_false(co_fd_passes(ctx, 5));

	/* Through the shim, the write follows the queue on the wire. */
	queue_writes(ctx, &fx->b, 1, 100);
	fake_fail_realloc(1);
	assert_int_equal(app_write(ctx, &fx->b, 5000, 0), 5000);
	assert_true(app_wire_is(&fx->b, 5100));
	assert_int_equal(stat_of(ctx, CO_ST_passthrough_nomem), 2);

	/* Later writes are queued again. */
	assert_int_equal(test_write(ctx, 5, "abc", 3, 0), 3);
	assert_int_equal(app_queued(ctx, 5), 3);
}

static void test_nomem_on_first_write(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;

	fake_fail_realloc(1);
	assert_int_equal(test_write(ctx, 5, "abc", 3, 0), CO_PASSTHROUGH);
	assert_int_equal(fake_send_calls_total(), 0);
	assert_int_equal(stat_of(ctx, CO_ST_passthrough_nomem), 1);
	assert_int_equal(pending_fds(ctx), 0);
}

static void test_nomem_on_full_nonblocking_socket_says_eagain(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;

	queue_writes(ctx, &fx->a, 1, 100);
	fake_send_full(5, 1);
	fake_fail_realloc(1);
	assert_int_equal(test_write(ctx, 5, fx->a.src + 100, 5000, MSG_DONTWAIT), -EAGAIN);
	assert_int_equal(app_queued(ctx, 5), 100);
	assert_int_equal(stat_of(ctx, CO_ST_passthrough_nomem), 0);
}

static void test_fd_table_allocation_failure_passes_through(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;

	/* An fd in a part of the table that does not exist yet. */
	fake_socket(1500, FAKE_TCP);
	fake_fail_alloc(1);
	assert_int_equal(test_write(ctx, 1500, "abc", 3, 0), CO_PASSTHROUGH);
	assert_null(co_fd_find(&ctx->fds, 1500));
	/* Memory is back, but a write on the socket went to libc from an fd
	 * the shim could not remember: another fd of the same socket could be
	 * coalesced and overtaken, so the socket passes for good. */
	assert_int_equal(test_write(ctx, 1500, "abc", 3, 0), CO_PASSTHROUGH);
	assert_true(co_fd_passes(ctx, 1500));
	/* Other sockets are coalesced as before. */
	fake_socket(1501, FAKE_TCP);
	check_coalesced(ctx, 1501);
}

/* Errors met on the way to a passthrough */

/* A failed flush before a passthrough (unsupported flags, an address,
 * control data, or no memory) is returned to the caller, and only to it:
 * the next write is a new one, and nothing counts it as deferred. */
static void test_flush_error_before_passthrough_reported_once(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;

	queue_writes(ctx, &fx->a, 3, 10);
	fake_send_error(5, ECONNRESET, 1);
	assert_int_equal(app_write(ctx, &fx->a, 1, MSG_OOB), -ECONNRESET);
	assert_int_equal(app_queued(ctx, 5), 0);
	/* Reported once: the next write is a new one. */
	assert_int_equal(test_write(ctx, 5, "abc", 3, 0), 3);
}

/* The same through the allocation failure path. */
static void test_flush_error_before_nomem_passthrough_reported_once(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;

	queue_writes(ctx, &fx->a, 1, 100);
	fake_fail_realloc(1);
	fake_send_error(5, EPIPE, 1);
	assert_int_equal(test_write(ctx, 5, fx->a.src + 100, 5000, 0), -EPIPE);
	assert_int_equal(test_write(ctx, 5, "abc", 3, 0), 3);
}

/* When the fd table chunk cannot be allocated, the write passes through,
 * counted as passthrough_nomem (not as an fd beyond CO_FD_LIMIT). */
static void test_fd_table_allocation_failure_counted_as_nomem(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;

	fake_socket(1500, FAKE_TCP);
	fake_fail_alloc(1);
	assert_int_equal(test_write(ctx, 1500, "abc", 3, 0), CO_PASSTHROUGH);
	assert_int_equal(stat_of(ctx, CO_ST_passthrough_fd_range), 0);
	assert_int_equal(stat_of(ctx, CO_ST_passthrough_nomem), 1);
}

/* A large writev of IOV_MAX iovecs on a blocking socket with a non-empty
 * queue: the queue takes one of the 1024 iovec slots of a sendmsg, so the
 * last iovec goes in a second call; the caller still gets the full count,
 * as a blocking writev of 1024 iovecs on a plain socket would. */
static void test_iov_max_writev_with_queue_is_whole(void **state)
{
	struct fixture *fx = *state;
	struct co_ctx *ctx = fx->ctx;

	queue_writes(ctx, &fx->a, 1, 10);
	assert_int_equal(app_writev(ctx, &fx->a, IOV_MAX * 64, IOV_MAX, 0), IOV_MAX * 64);
	assert_true(app_wire_is(&fx->a, 10 + IOV_MAX * 64));
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_small_writes_are_queued),
		T(test_queue_flags_are_queued),
		T(test_zero_length_write),
		T(test_reaching_max_bytes_sends_queue_and_write_in_one_call),
		T(test_large_write_is_not_copied),
		T(test_small_writev_is_queued_whole),
		T(test_every_byte_on_the_wire_in_order),
		T(test_non_socket_passes_through_and_is_cached),
		T(test_udp_datagrams_go_out_with_sendmmsg),
		T(test_udp_refused_datagram_is_reported_on_the_next_send),
		T(test_udp_large_or_flagged_datagram_passes_after_the_queue),
		T(test_seqpacket_passes_through),
		T(test_stream_socket_other_than_tcp_passes_through),
		T(test_unconnected_passes_through_without_being_cached),
		T(test_bad_fd_is_not_cached),
		T(test_stream_socket_kinds_are_coalesced),
		T(test_fd_out_of_range),
		T(test_first_write_of_a_connection_is_sent_at_once),
		T(test_request_response_writes_are_sent_at_once),
		T(test_burst_after_a_burst_of_several_is_queued),
		T(test_lone_write_never_overtakes_the_queue),
		T(test_deferred_error_comes_before_a_lone_write),
		T(test_without_direct_the_first_write_is_queued),
		T(test_dup_sends_the_other_queue_first_and_stops_both),
		T(test_dup_dontwait_write_on_a_full_socket_says_eagain),
		T(test_dup_dontwait_write_while_the_owner_is_held),
		T(test_dup_does_not_pass_before_the_owner_queue_is_sent),
		T(test_flush_before_send_on_a_dup_sends_the_other_queue),
		T(test_dup_of_a_closed_fd_is_coalesced),
		T(test_dup_of_a_forgotten_fd_is_coalesced),
		T(test_shared_socket_stays_passing_after_its_owner_closes),
		T(test_stopped_fd_keeps_other_fds_of_its_socket_passing),
		T(test_many_sockets),
		T(test_socket_map_without_memory),
		T(test_flags_flush_queue_then_pass_through),
		T(test_address_flushes_queue_then_passes_through),
		T(test_control_flushes_queue_then_passes_through),
		T(test_bad_iovcnt_flushes_queue_then_passes_through),
		T(test_passthrough_on_full_nonblocking_socket_says_eagain),
		T(test_dontwait_reaches_the_kernel),
		T(test_dontwait_retries_eintr),
		T(test_partial_sends_continue_where_they_stopped),
		T(test_partial_deferred_flush_continues),
		T(test_short_send_of_the_callers_bytes_is_a_short_count),
		T(test_interrupted_blocking_send_does_not_split_a_small_write),
		T(test_writer_sends_a_due_queue_itself),
		T(test_eagain_with_full_queue_after_the_kernel_said_so),
		T(test_eagain_queues_a_write_that_still_fits),
		T(test_eagain_after_part_of_the_queue_was_sent),
		T(test_eagain_on_blocking_write_of_nonblocking_socket),
		T(test_eintr_on_blocking_send),
		T(test_error_on_direct_send_drops_queue_and_is_returned_once),
		T(test_deferred_error_from_flush_all_is_returned_once),
		T(test_deferred_error_from_flush_due_is_returned_once),
		T(test_deferred_error_is_logged),
		T(test_nomem_flushes_queue_then_passes_through),
		T(test_nomem_on_first_write),
		T(test_nomem_on_full_nonblocking_socket_says_eagain),
		T(test_fd_table_allocation_failure_passes_through),
		T(test_flush_error_before_passthrough_reported_once),
		T(test_flush_error_before_nomem_passthrough_reported_once),
		T(test_fd_table_allocation_failure_counted_as_nomem),
		T(test_iov_max_writev_with_queue_is_whole),
	};

	return cmocka_run_group_tests_name("stream", tests, NULL, NULL);
}
