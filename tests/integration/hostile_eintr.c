/* hostile_eintr: an EINTR storm. A second thread of the writer (under the
 * shim) sends the writing thread SIGUSR1 every ~50 us while it writes
 * numbered records (16-byte header: magic, sequence, length, checksum; then
 * a payload of 0 to 64 KiB, mostly small) to a TCP socket with small
 * buffers, read by a peer that is slow first, then fast. The handler is
 * installed with or without SA_RESTART.
 *
 * Every call that returns -1/EINTR is retried by the writer with the same
 * bytes, a short write is continued from where it stopped, and a record's
 * sequence number advances only once all its bytes were taken. The peer
 * checks each record: whole, in order, exactly once (a record whose bytes
 * went out although its call said EINTR would arrive twice; a lost or
 * reordered byte breaks the header or the checksum).
 *
 * Variants:
 *   blocking, SA_RESTART / no SA_RESTART: write, send, writev and sendmsg in
 *     turn on a blocking socket;
 *   nonblocking+poll, SA_RESTART / no SA_RESTART: the same on an O_NONBLOCK
 *     socket; after EAGAIN the writer waits for POLLOUT with poll (which
 *     fails with EINTR whatever SA_RESTART says, and is retried);
 *   read-flush, SA_RESTART / no SA_RESTART: the handler is a no-op; the
 *     writer writes a burst of small records, then blocks in read() on
 *     another socket until the peer has received the whole burst and sends
 *     one byte. The deadline is 1 s, so only the flush made by the
 *     interrupted (or restarted) read can send the burst in time: a lost
 *     flush shows as a hang (watchdog), a lost byte as a bad record.
 * The signal count is checked (the storm really happened) and, with the
 * shim, that the small records were queued. */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NAME "hostile_eintr"
#define MAGIC 0x52434f43u /* "COCR" */
#define HDR 16
#define MAX_PAYLOAD (64 * 1024)
#define RECORDS 3000
#define ROUNDS 300
#define SIG_PERIOD_NS 50000L
#define SMALL_BUF 32768
#define SLOW_BYTES (512 * 1024)
#define POLL_WAIT_MS 5000
#define MIN_SIGNALS 100

enum mode { M_BLOCKING, M_NONBLOCKING, M_READ };

struct variant {
	enum mode mode;
	int restart;
	const char *name;
};

static const struct variant variants[] = {
	{ M_BLOCKING, 1, "blocking, SA_RESTART" },
	{ M_BLOCKING, 0, "blocking, no SA_RESTART" },
	{ M_NONBLOCKING, 1, "nonblocking+poll, SA_RESTART" },
	{ M_NONBLOCKING, 0, "nonblocking+poll, no SA_RESTART" },
	{ M_READ, 1, "read-flush, SA_RESTART" },
	{ M_READ, 0, "read-flush, no SA_RESTART" },
};
#define NVARIANTS (int)(sizeof(variants) / sizeof(variants[0]))

/* ---- records ---------------------------------------------------------------------------- */

/* Payload size of the next record: mostly small, sometimes a few KiB, one
 * in twenty 8-64 KiB (32 KiB and more is not copied by the shim). */
static size_t payload_size(struct co_rng *r, int small_only)
{
	unsigned x = (unsigned)co_range(r, 0, 99);

	if (x < 70 || small_only)
		return co_range(r, 0, small_only ? 400 : 200);
	if (x < 95)
		return co_range(r, 201, 4096);
	return co_range(r, 8192, MAX_PAYLOAD);
}

static uint64_t payload_key(int v, uint32_t seq)
{
	return co_mix64(co_stream_key((uint64_t)v) + seq);
}

/* Builds record seq (payload len) in buf; returns its total size. */
static size_t make_record(unsigned char *buf, int v, uint32_t seq, size_t len)
{
	uint32_t h[4];

	co_stream_fill(payload_key(v, seq), 0, buf + HDR, len);
	h[0] = MAGIC;
	h[1] = seq;
	h[2] = (uint32_t)len;
	h[3] = co_fnv32(buf + HDR, len);
	memcpy(buf, h, HDR);
	return HDR + len;
}

/* Records per round of the read-flush variants. */
static unsigned round_records(struct co_rng *r)
{
	return (unsigned)co_range(r, 1, 30);
}

/* ---- the writer (child) ----------------------------------------------------------------- */

static atomic_ulong signals_seen;
static atomic_int stop_storm;
static pthread_t writer_thread;
static unsigned long sent_signals;

static void on_usr1_count(int sig)
{
	(void)sig;
	atomic_fetch_add_explicit(&signals_seen, 1, memory_order_relaxed);
}

static void on_usr1_noop(int sig)
{
	(void)sig;
}

static void *storm(void *arg)
{
	struct timespec ts = { 0, SIG_PERIOD_NS };

	(void)arg;
	while (!atomic_load(&stop_storm)) {
		if (pthread_kill(writer_thread, SIGUSR1) == 0)
			sent_signals++;
		nanosleep(&ts, NULL);
	}
	return NULL;
}

struct wstats {
	unsigned long eintr_write, eintr_wait, eagain, partial, calls;
};

/* One call writing len bytes at p with api n % 4. */
static ssize_t one_call(unsigned long n, int fd, const unsigned char *p, size_t len)
{
	struct iovec iov[3];
	struct msghdr msg;
	size_t a = len / 3, b = len / 2;

	iov[0].iov_base = (void *)p;
	iov[0].iov_len = a;
	iov[1].iov_base = (void *)(p + a);
	iov[1].iov_len = b - a;
	iov[2].iov_base = (void *)(p + b);
	iov[2].iov_len = len - b;
	switch (n % 4) {
	case 0:
		return write(fd, p, len);
	case 1:
		return send(fd, p, len, 0);
	case 2:
		return writev(fd, iov, 3);
	default:
		memset(&msg, 0, sizeof(msg));
		msg.msg_iov = iov;
		msg.msg_iovlen = 3;
		return sendmsg(fd, &msg, 0);
	}
}

/* Waits for room after EAGAIN; retries poll's EINTR. */
static void wait_room(int fd, struct wstats *ws, uint32_t seq)
{
	uint64_t start = co_now_ns();

	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLOUT };
		int k = poll(&p, 1, POLL_WAIT_MS);

		if (k > 0)
			return;
		if (k < 0 && errno == EINTR) {
			ws->eintr_wait++;
			if (co_now_ns() - start < (uint64_t)POLL_WAIT_MS * 1000000ULL)
				continue;
		}
		if (k < 0 && errno != EINTR)
			co_fail("poll: %s", strerror(errno));
		co_fail("record %u: no POLLOUT within %d ms after EAGAIN", seq, POLL_WAIT_MS);
	}
}

/* Writes all len bytes of one record, continuing short writes and
 * retrying EINTR (and EAGAIN after poll). */
static void write_record(int fd, const unsigned char *buf, size_t len, uint32_t seq,
			 struct wstats *ws)
{
	size_t off = 0;

	while (off < len) {
		ssize_t w = one_call(ws->calls++, fd, buf + off, len - off);

		if (w < 0 && errno == EINTR) {
			ws->eintr_write++;
			continue;
		}
		if (w < 0 && errno == EAGAIN) {
			ws->eagain++;
			wait_room(fd, ws, seq);
			continue;
		}
		if (w < 0)
			co_fail("record %u: write at byte %zu of %zu: %s", seq, off, len,
				strerror(errno));
		if (w == 0 || (size_t)w > len - off)
			co_fail("record %u: write of %zu bytes returned %zd", seq, len - off, w);
		if ((size_t)w < len - off)
			ws->partial++;
		off += (size_t)w;
	}
}

static int child_main(int argc, char **argv)
{
	static unsigned char buf[HDR + MAX_PAYLOAD];
	const struct variant *vp;
	struct sigaction sa;
	struct wstats ws = { 0 };
	struct co_rng r;
	pthread_t t;
	char line[256];
	int v, n;
	uint32_t seq = 0;
	uint64_t start;

	co_child_init(NAME);
	if (argc != 1)
		co_fail("usage: variant");
	v = (int)co_arg_u64(argv[0]);
	if (v < 0 || v >= NVARIANTS)
		co_fail("bad variant %d", v);
	vp = &variants[v];
	co_rng_init(&r, co_seed, 100 + (uint64_t)v);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = vp->mode == M_READ ? on_usr1_noop : on_usr1_count;
	sa.sa_flags = vp->restart ? SA_RESTART : 0;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGUSR1, &sa, NULL) < 0)
		co_fail("sigaction: %s", strerror(errno));
	if (vp->mode == M_NONBLOCKING)
		co_set_nonblock(3, 1);
	writer_thread = pthread_self();
	start = co_now_ns();
	if (pthread_create(&t, NULL, storm, NULL) != 0)
		co_fail("pthread_create");

	if (vp->mode != M_READ) {
		for (seq = 0; seq < RECORDS; seq++) {
			size_t len = make_record(buf, v, seq, payload_size(&r, 0));

			write_record(3, buf, len, seq, &ws);
		}
	} else {
		unsigned round;

		for (round = 0; round < ROUNDS; round++) {
			unsigned k = round_records(&r), i;
			char ch;
			ssize_t got;

			for (i = 0; i < k; i++, seq++) {
				size_t len = make_record(buf, v, seq, payload_size(&r, 1));

				write_record(3, buf, len, seq, &ws);
			}
			/* Blocks until the peer has every record of the burst. */
			for (;;) {
				got = read(4, &ch, 1);
				if (got < 0 && errno == EINTR) {
					ws.eintr_wait++;
					continue;
				}
				break;
			}
			if (got != 1 || ch != 'g')
				co_fail("round %u: read of the go byte returned %zd (%s)", round, got,
					got < 0 ? strerror(errno) : "EOF or wrong byte");
		}
	}
	atomic_store(&stop_storm, 1);
	pthread_join(t, NULL);
	n = snprintf(line, sizeof(line),
		     "records=%u sent=%lu seen=%lu eintr_write=%lu eintr_wait=%lu eagain=%lu partial=%lu calls=%lu ms=%llu\n",
		     seq, sent_signals, atomic_load(&signals_seen), ws.eintr_write, ws.eintr_wait,
		     ws.eagain, ws.partial, ws.calls,
		     (unsigned long long)((co_now_ns() - start) / 1000000));
	co_write_all(5, line, (size_t)n, "status pipe");
	if (close(3) < 0)
		co_fail("close: %s", strerror(errno));
	return 0;
}

/* ---- the peer (parent) ------------------------------------------------------------------ */

struct reader {
	int fd;
	int slow;          /* small reads with a pause after each */
	uint64_t total;    /* bytes received so far */
	struct co_rng r;
	const char *what;
};

/* Reads exactly len bytes (fails on EOF). */
static void rd(struct reader *rr, void *p, size_t len, uint32_t seq)
{
	unsigned char *q = p;
	size_t got = 0;

	while (got < len) {
		size_t want = len - got;
		ssize_t k;

		if (rr->slow) {
			size_t lim = (size_t)co_range(&rr->r, 256, 4096);

			if (want > lim)
				want = lim;
		}
		k = read(rr->fd, q + got, want);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			co_fail("%s: read in record %u: %s", rr->what, seq, strerror(errno));
		if (k == 0)
			co_fail("%s: EOF inside record %u (after %llu bytes): bytes lost", rr->what,
				seq, (unsigned long long)(rr->total + got));
		got += (size_t)k;
		if (rr->slow) {
			co_sleep_ms(1);
			if (rr->total + got >= SLOW_BYTES)
				rr->slow = 0;
		}
	}
	rr->total += len;
}

/* Receives and checks record seq, of payload size len. */
static void recv_record(struct reader *rr, int v, uint32_t seq, size_t len)
{
	static unsigned char buf[MAX_PAYLOAD];
	uint32_t h[4];
	size_t bad;

	rd(rr, h, HDR, seq);
	if (h[0] != MAGIC)
		co_fail("%s: record %u: bad magic 0x%08x at stream offset %llu (seq field %u, length field %u): bytes lost, duplicated or reordered",
			rr->what, seq, h[0], (unsigned long long)(rr->total - HDR), h[1], h[2]);
	if (h[1] != seq)
		co_fail("%s: expected record %u, got record %u (%s)", rr->what, seq, h[1],
			h[1] < seq ? "a record arrived twice: a call that reported EINTR had sent it"
				   : "records were lost or reordered");
	if (h[2] != len)
		co_fail("%s: record %u: length %u, expected %zu", rr->what, seq, h[2], len);
	rd(rr, buf, len, seq);
	bad = co_stream_check(payload_key(v, seq), 0, buf, len);
	if (bad < len)
		co_stream_mismatch(rr->what, payload_key(v, seq), bad, buf + bad, len - bad);
	if (co_fnv32(buf, len) != h[3])
		co_fail("%s: record %u: checksum mismatch", rr->what, seq);
}

static void expect_eof(struct reader *rr, uint32_t records)
{
	char ch;
	ssize_t k;

	do
		k = read(rr->fd, &ch, 1);
	while (k < 0 && errno == EINTR);
	if (k != 0)
		co_fail("%s: %s after the last record (%u)", rr->what,
			k > 0 ? "extra bytes" : strerror(errno), records);
}

static void run_variant(int v)
{
	const struct variant *vp = &variants[v];
	const char *env[] = { CO_LONG_DELAY, NULL };
	char vs[16], sum[512];
	const char *args[] = { vs, NULL };
	struct co_child c;
	struct co_fdmap map[3];
	struct reader rr;
	struct co_rng r;
	int wfd, rfd, st[2], go[2] = { -1, -1 }, nmap = 0, sz = SMALL_BUF;
	unsigned long records = 0, sent = 0, seen = 0, eintr_w = 0, eintr_wait = 0, eagain = 0,
		      partial = 0, calls = 0, ms = 0;
	uint32_t seq = 0;
	size_t n;

	snprintf(vs, sizeof(vs), "%d", v);
	if (co_tcp_pair(AF_INET, &wfd, &rfd) < 0)
		co_fail("tcp pair: %s", strerror(errno));
	if (vp->mode != M_READ &&
	    (setsockopt(wfd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz)) < 0 ||
	     setsockopt(rfd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz)) < 0))
		co_fail("SO_SNDBUF/SO_RCVBUF: %s", strerror(errno));
	if (pipe2(st, O_CLOEXEC) < 0)
		co_fail("pipe: %s", strerror(errno));
	if (vp->mode == M_READ && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, go) < 0)
		co_fail("socketpair: %s", strerror(errno));
	map[nmap].from = wfd;
	map[nmap++].to = 3;
	if (go[0] >= 0) {
		map[nmap].from = go[0];
		map[nmap++].to = 4;
	}
	map[nmap].from = st[1];
	map[nmap++].to = 5;
	co_spawn(&c, args, map, nmap, env, 1);
	close(wfd);
	close(st[1]);
	if (go[0] >= 0)
		close(go[0]);

	memset(&rr, 0, sizeof(rr));
	rr.fd = rfd;
	rr.slow = vp->mode != M_READ;
	rr.what = vp->name;
	co_rng_init(&rr.r, co_seed, 5000 + (uint64_t)v);
	co_rng_init(&r, co_seed, 100 + (uint64_t)v);
	if (vp->mode != M_READ) {
		co_phase("%s: receiving %d records, slowly at first", vp->name, RECORDS);
		for (seq = 0; seq < RECORDS; seq++)
			recv_record(&rr, v, seq, payload_size(&r, 0));
	} else {
		unsigned round;

		for (round = 0; round < ROUNDS; round++) {
			unsigned k = round_records(&r), i;

			co_phase("%s: round %u: waiting for the %u records the writer wrote before blocking in read() (a read that does not flush costs 1 s per round)",
				 vp->name, round, k);
			for (i = 0; i < k; i++, seq++)
				recv_record(&rr, v, seq, payload_size(&r, 1));
			/* Let the storm hit the writer while it is blocked in read(). */
			co_sleep_ms(1);
			co_write_all(go[1], "g", 1, "go socket");
		}
	}
	co_phase("%s: waiting for EOF after %u records", vp->name, seq);
	expect_eof(&rr, seq);
	close(rfd);
	if (go[1] >= 0)
		close(go[1]);
	n = co_read_full(st[0], sum, sizeof(sum) - 1, "status pipe");
	sum[n] = '\0';
	close(st[0]);
	co_wait_ok(&c, vp->name);
	if (sscanf(sum,
		   "records=%lu sent=%lu seen=%lu eintr_write=%lu eintr_wait=%lu eagain=%lu partial=%lu calls=%lu ms=%lu",
		   &records, &sent, &seen, &eintr_w, &eintr_wait, &eagain, &partial, &calls,
		   &ms) != 9)
		co_fail("%s: bad summary from the writer: \"%s\"", vp->name, sum);
	if (records != seq)
		co_fail("%s: the writer wrote %lu records, %u arrived", vp->name, records, seq);
	co_info("%s: %lu ms, %lu records, %lu bytes; %lu signals sent, %lu handled; %lu EINTR from writes, %lu from waits; %lu EAGAIN, %lu short writes, %lu calls",
		vp->name, ms, records, (unsigned long)rr.total, sent, seen, eintr_w, eintr_wait,
		eagain, partial, calls);
	if (sent < MIN_SIGNALS)
		co_fail("%s: only %lu signals were sent: no storm", vp->name, sent);
	if (vp->mode != M_READ && seen < MIN_SIGNALS)
		co_fail("%s: only %lu signals reached the handler: no storm", vp->name, seen);
	if (co_shim_on()) {
		long long wq, fs, fe;

		co_stats_dump(&c, vp->name);
		wq = co_stats_need(&c, "writes_queued");
		fs = co_stats_need(&c, "flush_syscalls");
		fe = co_stats_need(&c, "flush_eagain");
		/* Most small records queued; each send of the shim carried
		 * several of them, not counting the sends that failed with
		 * EAGAIN (the shim tries the full socket again before each
		 * wait), nor the application's calls that failed with EINTR
		 * or were short (the kernel sees those with or without the
		 * shim). */
		if (wq < (long long)records / 4)
			co_fail("%s: stats writes_queued=%lld for %lu records: the small writes were not queued",
				vp->name, wq, records);
		if (fs - fe > wq / 2 + (long long)(eintr_w + eagain + partial))
			co_fail("%s: no coalescing: stats flush_syscalls=%lld (%lld of them EAGAIN) for writes_queued=%lld (%lu EINTR, %lu EAGAIN, %lu short writes)",
				vp->name, fs, fe, wq, eintr_w, eagain, partial);
		if (vp->mode == M_READ && co_stats_need(&c, "flush_read") < ROUNDS / 2)
			co_fail("%s: stats flush_read=%lld for %d rounds: the reads did not flush",
				vp->name, co_stats_need(&c, "flush_read"), ROUNDS);
	}
}

int main(int argc, char **argv)
{
	int v;

	if (argc > 1 && strcmp(argv[1], CO_CHILD_FLAG) == 0)
		return child_main(argc - 2, argv + 2);
	co_init(argc, argv, NAME);
	co_watchdog(60);
	for (v = 0; v < NVARIANTS; v++)
		run_variant(v);
	return 0;
}
