/* threads_one_fd: 4-8 threads write records to one TCP socket at the same
 * time, each record in one call (write, send, writev or sendmsg). A record is
 * a 24-byte header (magic, thread id, sequence number, payload length,
 * payload checksum, header checksum) and a payload from a per-record byte
 * stream. The receiver checks that every record arrives whole and
 * contiguous, that each thread's records arrive in order, none missing, and
 * that every payload byte is right. The stats must show coalescing. */
#include "common.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define NAME "threads_one_fd"
#define MAGIC 0xC0A1E5CEu
#define HDR 24
#define RECORDS 4000
#define MAX_PAYLOAD 100000
#define MAX_THREADS 8

static int nthreads;
static int sock_fd = 3;
static pthread_barrier_t barrier;

static int thread_count(void)
{
	struct co_rng r;

	co_rng_init(&r, co_seed, 999);
	return (int)co_range(&r, 4, MAX_THREADS);
}

/* Payload length of the next record of a thread (same sequence on both sides). */
static size_t next_len(struct co_rng *r)
{
	unsigned x = (unsigned)co_range(r, 0, 999);

	if (x < 850)
		return co_range(r, 0, 200);
	if (x < 995)
		return co_range(r, 201, 4000);
	return co_range(r, 32768, MAX_PAYLOAD); /* not copied: goes out with the queue */
}

static uint64_t payload_key(unsigned tid, unsigned seq)
{
	return co_mix64(co_seed ^ ((uint64_t)tid << 40) ^ ((uint64_t)seq << 8) ^ 0x5eed);
}

static void put32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
	p[2] = (unsigned char)(v >> 16);
	p[3] = (unsigned char)(v >> 24);
}

static uint32_t get32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void *writer(void *arg)
{
	unsigned tid = (unsigned)(uintptr_t)arg, seq;
	unsigned char *rec = malloc(HDR + MAX_PAYLOAD);
	struct co_rng r, ar;

	if (!rec)
		co_fail("malloc");
	co_rng_init(&r, co_seed, tid);
	co_rng_init(&ar, co_seed, 100 + tid);
	pthread_barrier_wait(&barrier);
	for (seq = 0; seq < RECORDS; seq++) {
		size_t len = next_len(&r), total = HDR + len;
		int api = (int)co_range(&ar, 0, 3);
		struct iovec iov[3];
		struct msghdr mh;
		ssize_t w;

		co_stream_fill(payload_key(tid, seq), 0, rec + HDR, len);
		put32(rec, MAGIC);
		put32(rec + 4, tid);
		put32(rec + 8, seq);
		put32(rec + 12, (uint32_t)len);
		put32(rec + 16, co_fnv32(rec + HDR, len));
		put32(rec + 20, co_fnv32(rec, 20));
		switch (api) {
		case 0:
			w = write(sock_fd, rec, total);
			break;
		case 1:
			w = send(sock_fd, rec, total, 0);
			break;
		case 2:
			iov[0].iov_base = rec;
			iov[0].iov_len = HDR;
			iov[1].iov_base = rec + HDR;
			iov[1].iov_len = len;
			w = writev(sock_fd, iov, 2);
			break;
		default:
			iov[0].iov_base = rec;
			iov[0].iov_len = 10;
			iov[1].iov_base = rec + 10;
			iov[1].iov_len = HDR - 10 + len / 2;
			iov[2].iov_base = rec + HDR + len / 2;
			iov[2].iov_len = len - len / 2;
			memset(&mh, 0, sizeof(mh));
			mh.msg_iov = iov;
			mh.msg_iovlen = 3;
			w = sendmsg(sock_fd, &mh, 0);
			break;
		}
		/* A blocking stream write returns short only on a signal; none
		 * are sent here, so a short count means the record was split. */
		if (w < 0)
			co_fail("thread %u record %u: write of %zu bytes failed: %s", tid, seq,
				total, strerror(errno));
		if ((size_t)w != total)
			co_fail("thread %u record %u: write of %zu bytes returned %zd", tid, seq,
				total, w);
	}
	free(rec);
	return NULL;
}

static int child_main(int argc, char **argv)
{
	pthread_t th[MAX_THREADS];
	int i;

	(void)argv;
	co_child_init(NAME);
	if (argc != 0)
		co_fail("usage: (no arguments)");
	nthreads = thread_count();
	pthread_barrier_init(&barrier, NULL, (unsigned)nthreads);
	for (i = 0; i < nthreads; i++)
		if (pthread_create(&th[i], NULL, writer, (void *)(uintptr_t)i) != 0)
			co_fail("pthread_create failed");
	for (i = 0; i < nthreads; i++)
		pthread_join(th[i], NULL);
	if (close(sock_fd) < 0)
		co_fail("close: %s", strerror(errno));
	return 0;
}

/* ---- receiver ---- */

static unsigned char rbuf[4 << 20];
static size_t rhead, rtail;
static uint64_t rpos; /* stream offset of rbuf[rhead] */

/* Makes n bytes available at rbuf + rhead; returns 0 at a clean EOF before
 * any of them, fails on EOF in the middle. */
static int need(int fd, size_t n, const char *what)
{
	if (rtail - rhead >= n)
		return 1;
	if (rhead > 0) {
		memmove(rbuf, rbuf + rhead, rtail - rhead);
		rtail -= rhead;
		rhead = 0;
	}
	while (rtail < n) {
		ssize_t r = read(fd, rbuf + rtail, sizeof(rbuf) - rtail);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			co_fail("read at stream offset %llu: %s", (unsigned long long)rpos,
				strerror(errno));
		if (r == 0) {
			if (rtail == 0)
				return 0;
			co_fail("EOF at stream offset %llu in the middle of %s (%zu of %zu bytes)",
				(unsigned long long)(rpos + rtail), what, rtail, n);
		}
		rtail += (size_t)r;
	}
	return 1;
}

int main(int argc, char **argv)
{
	struct co_child c;
	struct co_rng lens[MAX_THREADS];
	unsigned next_seq[MAX_THREADS] = { 0 };
	long long records = 0;
	int rfd, i;

	if (argc > 1 && strcmp(argv[1], CO_CHILD_FLAG) == 0)
		return child_main(argc - 2, argv + 2);
	co_init(argc, argv, NAME);
	co_watchdog(60);
	nthreads = thread_count();
	for (i = 0; i < nthreads; i++)
		co_rng_init(&lens[i], co_seed, (uint64_t)i);
	rfd = co_spawn_on_pair(&c, NULL, NULL, -1);
	co_phase("receiving %d threads x %d records", nthreads, RECORDS);

	for (;;) {
		unsigned char *h;
		uint32_t tid, seq, len;
		size_t exp_len, bad;

		if (!need(rfd, HDR, "a record header"))
			break;
		h = rbuf + rhead;
		if (get32(h) != MAGIC || get32(h + 20) != co_fnv32(h, 20))
			co_fail("no valid record header at stream offset %llu (after %lld records): bytes %02x %02x %02x %02x ...: a record was split, interleaved or lost",
				(unsigned long long)rpos, records, h[0], h[1], h[2], h[3]);
		tid = get32(h + 4);
		seq = get32(h + 8);
		len = get32(h + 12);
		if (tid >= (uint32_t)nthreads)
			co_fail("record at offset %llu: thread id %u out of range", (unsigned long long)rpos, tid);
		if (seq != next_seq[tid])
			co_fail("record at offset %llu: thread %u sequence %u, expected %u (records out of order or lost)",
				(unsigned long long)rpos, tid, seq, next_seq[tid]);
		exp_len = next_len(&lens[tid]);
		if (len != exp_len)
			co_fail("record at offset %llu: thread %u seq %u length %u, expected %zu",
				(unsigned long long)rpos, tid, seq, len, exp_len);
		if (!need(rfd, HDR + len, "a record payload"))
			co_fail("EOF inside a record");
		h = rbuf + rhead; /* need() may have moved the buffer */
		bad = co_stream_check(payload_key(tid, seq), 0, rbuf + rhead + HDR, len);
		if (bad < len)
			co_fail("record at offset %llu (thread %u seq %u, %u payload bytes): payload byte %zu differs: expected %02x got %02x (another write's bytes inside this record?)",
				(unsigned long long)rpos, tid, seq, len, bad,
				co_stream_byte(payload_key(tid, seq), bad), rbuf[rhead + HDR + bad]);
		if (get32(h + 16) != co_fnv32(rbuf + rhead + HDR, len))
			co_fail("record at offset %llu: payload checksum differs", (unsigned long long)rpos);
		next_seq[tid]++;
		records++;
		rhead += HDR + len;
		rpos += HDR + len;
	}
	close(rfd);
	for (i = 0; i < nthreads; i++)
		if (next_seq[i] != RECORDS)
			co_fail("thread %d: %u records arrived, expected %d", i, next_seq[i], RECORDS);
	co_phase("waiting for the writer");
	co_wait_ok(&c, "writer");
	co_info("%lld records from %d threads, %llu bytes", records, nthreads,
		(unsigned long long)rpos);
	co_stats_expect_coalesced(&c, records / 4, 4, "writer");
	return 0;
}
