/* A memcached load generator with many connections and exact latency
 * percentiles, for the uring_apps scenario of bench/run.sh (memcaslap, the
 * Debian load generator, reports latencies only in power-of-two buckets).
 *
 * One thread, epoll, CONNS nonblocking TCP connections (TCP_NODELAY), each a
 * closed loop: one ASCII-protocol request, wait for its whole reply, the next
 * request. A connection first sets its KEYS keys, then each request is a
 * set (SET_PERCENT of them, pseudo-random per connection) or a get of one of
 * its keys, so the reply is known in advance and every reply is checked byte
 * for byte: a get returns the value this connection last set for that key,
 * a set "STORED". Each connection sends its first
 * request once all are connected; after SECONDS every connection finishes
 * its request in flight and stops.
 *
 * Usage: bench_mcload HOST PORT CONNS SECONDS [VALUE_SIZE [SET_PERCENT]]
 *        (defaults: 64-byte values, 10% sets)
 * Prints "RESULT ops=N rps=R sets=S gets=G avg_us p50_us p99_us
 * max_us elapsed_s" and exits 0; on a wrong reply, a closed connection or
 * an error it prints what and exits 1. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

#define KEYS 8
#define MAX_VALUE 1024
#define BUF (MAX_VALUE + 128)

struct conn {
	int fd, id;
	uint32_t rng;
	uint32_t ver[KEYS];    /* version last set per key, 0: never */
	char want[BUF];        /* the expected reply */
	size_t want_len, got;
	char rbuf[BUF];
	uint64_t sent_ns;
	int busy;
	unsigned nreq;         /* requests sent */
};

static size_t value_size = 64;
static int set_percent = 10;
static uint64_t *lat;
static size_t nlat, cap_lat;
static unsigned long long sets, gets;

static uint32_t next_rand(struct conn *c)
{
	c->rng = c->rng * 1103515245u + 12345u;
	return c->rng >> 8;
}

/* The value of key k of connection c at version v: printable, different
 * for every (connection, key, version). */
static void make_value(char *out, int id, int k, uint32_t v)
{
	size_t i;
	uint32_t h = (uint32_t)id * 2654435761u ^ (uint32_t)k * 40503u ^ v * 2246822519u;

	for (i = 0; i < value_size; i++) {
		h = h * 1664525u + 1013904223u;
		out[i] = (char)('a' + (h >> 24) % 26);
	}
}

static void send_request(struct conn *c)
{
	char req[BUF], key[32], val[MAX_VALUE];
	int k = (int)(next_rand(c) % KEYS), n, vl;
	ssize_t w;

	if (c->nreq < KEYS)   /* each connection sets its keys first */
		k = c->nreq;
	c->nreq++;
	snprintf(key, sizeof(key), "c%dk%d", c->id, k);
	if (c->ver[k] == 0 || (int)(next_rand(c) % 100) < set_percent) {
		c->ver[k]++;
		make_value(val, c->id, k, c->ver[k]);
		n = snprintf(req, sizeof(req), "set %s 0 0 %zu\r\n", key, value_size);
		memcpy(req + n, val, value_size);
		memcpy(req + n + value_size, "\r\n", 2);
		n += (int)value_size + 2;
		c->want_len = (size_t)snprintf(c->want, sizeof(c->want), "STORED\r\n");
		sets++;
	} else {
		n = snprintf(req, sizeof(req), "get %s\r\n", key);
		make_value(val, c->id, k, c->ver[k]);
		vl = snprintf(c->want, sizeof(c->want), "VALUE %s 0 %zu\r\n", key, value_size);
		memcpy(c->want + vl, val, value_size);
		memcpy(c->want + vl + value_size, "\r\nEND\r\n", 7);
		c->want_len = (size_t)vl + value_size + 7;
		gets++;
	}
	c->got = 0;
	c->sent_ns = now_ns();
	c->busy = 1;
	w = write(c->fd, req, (size_t)n);
	if (w != n) {   /* one small request in flight per socket: never short */
		if (w >= 0)
			errno = EIO;
		die("write");
	}
}

static void record(uint64_t ns)
{
	if (nlat == cap_lat) {
		cap_lat = cap_lat ? 2 * cap_lat : 1 << 16;
		lat = realloc(lat, cap_lat * sizeof(*lat));
		if (!lat)
			die("realloc");
	}
	lat[nlat++] = ns;
}

/* Reads what c's socket has; returns 1 when the reply is complete and right. */
static int read_reply(struct conn *c)
{
	ssize_t r = read(c->fd, c->rbuf + c->got, sizeof(c->rbuf) - c->got);

	if (r < 0 && errno == EAGAIN)
		return 0;
	if (r < 0)
		die("read");
	if (r == 0) {
		fprintf(stderr, "bench_mcload: connection %d closed by the server\n", c->id);
		exit(1);
	}
	c->got += (size_t)r;
	if (c->got > c->want_len || memcmp(c->rbuf, c->want, c->got) != 0) {
		fprintf(stderr, "bench_mcload: connection %d: wrong reply: got '%.*s', want '%.*s'\n",
			c->id, (int)c->got, c->rbuf, (int)c->want_len, c->want);
		exit(1);
	}
	return c->got == c->want_len;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static double pct(double p)
{
	size_t i = (size_t)(p / 100.0 * (double)(nlat - 1) + 0.5);

	return (double)lat[i] / 1000.0;
}

int main(int argc, char **argv)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	struct epoll_event ev, evs[256];
	struct rlimit rl;
	struct conn *cs;
	int nconn, i, k, ep, one = 1, active;
	double secs, sum = 0;
	uint64_t t0, t_end, t1;

	if (argc < 5) {
		fprintf(stderr, "usage: bench_mcload HOST PORT CONNS SECONDS [VALUE_SIZE [SET_PERCENT]]\n");
		return 2;
	}
	if (inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1) {
		fprintf(stderr, "bench_mcload: bad IPv4 address %s\n", argv[1]);
		return 2;
	}
	sa.sin_port = htons((uint16_t)atoi(argv[2]));
	nconn = atoi(argv[3]);
	secs = atof(argv[4]);
	if (argc > 5)
		value_size = (size_t)atoi(argv[5]);
	if (argc > 6)
		set_percent = atoi(argv[6]);
	if (nconn < 1 || secs <= 0 || value_size < 1 || value_size > MAX_VALUE || set_percent < 0 ||
	    set_percent > 100) {
		fprintf(stderr, "bench_mcload: bad arguments\n");
		return 2;
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)nconn + 64) {
		rl.rlim_cur = (rlim_t)nconn + 64;
		if (rl.rlim_max < rl.rlim_cur)
			rl.rlim_max = rl.rlim_cur;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			die("setrlimit(RLIMIT_NOFILE)");
	}
	cs = calloc((size_t)nconn, sizeof(*cs));
	ep = epoll_create1(0);
	if (!cs || ep < 0)
		die("set-up");
	for (i = 0; i < nconn; i++) {
		cs[i].id = i;
		cs[i].rng = 0x9e3779b9u ^ (uint32_t)i * 7919u;
		cs[i].fd = socket(AF_INET, SOCK_STREAM, 0);
		if (cs[i].fd < 0)
			die("socket");
		if (connect(cs[i].fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
			die("connect");
		setsockopt(cs[i].fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (fcntl(cs[i].fd, F_SETFL, O_NONBLOCK) != 0)
			die("fcntl");
		ev.events = EPOLLIN;
		ev.data.ptr = &cs[i];
		if (epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev) != 0)
			die("epoll_ctl");
	}
	t0 = now_ns();
	t_end = t0 + (uint64_t)(secs * 1e9);
	for (i = 0; i < nconn; i++)
		send_request(&cs[i]);
	active = nconn;
	while (active > 0) {
		int n = epoll_wait(ep, evs, 256, 10000);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die("epoll_wait");
		if (n == 0) {
			fprintf(stderr, "bench_mcload: no reply for 10 s (%d requests in flight)\n", active);
			return 1;
		}
		for (k = 0; k < n; k++) {
			struct conn *c = evs[k].data.ptr;
			uint64_t t;

			if (!c->busy || !read_reply(c))
				continue;
			t = now_ns();
			record(t - c->sent_ns);
			c->busy = 0;
			if (t < t_end)
				send_request(c);
			else
				active--;
		}
	}
	t1 = now_ns();
	for (i = 0; i < nconn; i++)
		close(cs[i].fd);
	qsort(lat, nlat, sizeof(*lat), cmp_u64);
	for (size_t j = 0; j < nlat; j++)
		sum += (double)lat[j];
	printf("RESULT ops=%zu rps=%.0f sets=%llu gets=%llu avg_us=%.1f p50_us=%.1f "
	       "p99_us=%.1f max_us=%.1f elapsed_s=%.3f\n",
	       nlat, (double)nlat * 1e9 / (double)(t1 - t0), sets, gets,
	       sum / (double)nlat / 1000.0, pct(50), pct(99), pct(100), (double)(t1 - t0) / 1e9);
	return 0;
}
