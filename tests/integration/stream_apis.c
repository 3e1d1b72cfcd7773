/* stream_apis: random write sizes (1 B .. 1 MiB, mostly small) through every
 * write API (write, send, sendto with no address, sendmsg without control,
 * writev with up to 1024 iovecs), over TCP v4 and v6 (the child connects
 * itself), TCP v4 and a Unix socketpair (inherited by the child). The receiver
 * checks every byte of the stream and the stats show that the small writes
 * were coalesced. */
#include "common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define NAME "stream_apis"
#define OPS 6000
#define MAX_OP (1u << 20)
#define LARGE 32768 /* COALESCE_LARGE_BYTES default: smaller writes are copied */

enum api { API_WRITE, API_SEND, API_SENDTO, API_SENDMSG, API_WRITEV, API_COUNT };
static const char *const api_names[] = { "write", "send", "sendto", "sendmsg", "writev" };

struct transport {
	const char *name;
	int family;      /* AF_INET / AF_INET6 / AF_UNIX */
	int child_dials; /* the child makes the connection itself */
};

static const struct transport transports[] = {
	{ "tcp4", AF_INET, 1 },
	{ "tcp6", AF_INET6, 1 },
	{ "tcp4-inherited", AF_INET, 0 },
	{ "unix-socketpair", AF_UNIX, 0 },
};

/* One operation of the plan: the same sequence in parent and child. */
static size_t plan_next(struct co_rng *r, int *api)
{
	unsigned x = (unsigned)co_range(r, 0, 999);

	*api = (int)co_range(r, 0, API_COUNT - 1);
	if (co_chance(r, 1, 400))
		return 0; /* a zero-length call now and then */
	if (x < 700)
		return co_range(r, 1, 64);
	if (x < 900)
		return co_range(r, 65, 1024);
	if (x < 970)
		return co_range(r, 1025, 16384);
	if (x < 990)
		return co_range(r, 16385, 65536);
	if (x < 996)
		return co_range(r, 65537, 262144);
	return co_range(r, 262145, MAX_OP);
}

static int cmp_size(const void *a, const void *b)
{
	size_t x = *(const size_t *)a, y = *(const size_t *)b;

	return x < y ? -1 : x > y;
}

/* Splits len bytes into k <= maxk pieces (some may be empty). */
static int split(struct co_rng *r, size_t len, size_t *pieces, int maxk)
{
	static size_t cuts[1024];
	int k, i;

	k = (int)co_range(r, 1, (uint64_t)maxk);
	if ((size_t)k > len)
		k = len > 0 ? (int)len : 1;
	for (i = 0; i < k - 1; i++)
		cuts[i] = co_range(r, 0, len);
	qsort(cuts, (size_t)(k - 1), sizeof(cuts[0]), cmp_size);
	for (i = 0; i < k; i++) {
		size_t a = i == 0 ? 0 : cuts[i - 1], b = i == k - 1 ? len : cuts[i];

		pieces[i] = b - a;
	}
	return k;
}

/* Builds the iovecs for what is left after done bytes. */
static int build_iov(struct iovec *iov, const unsigned char *base, const size_t *pieces, int k,
		     size_t done)
{
	int i, n = 0;
	size_t pos = 0;

	for (i = 0; i < k; i++) {
		size_t a = pos, b = pos + pieces[i];

		pos = b;
		if (b <= done)
			continue;
		if (a < done)
			a = done;
		iov[n].iov_base = (void *)(base + a);
		iov[n].iov_len = b - a;
		n++;
	}
	return n;
}

static void do_op(int fd, int api, const unsigned char *buf, size_t size, struct co_rng *ir,
		  int opno)
{
	static size_t pieces[1024];
	static struct iovec iov[1024];
	size_t done = 0;
	int k = 1;

	if (api == API_SENDMSG)
		k = split(ir, size, pieces, (int)co_range(ir, 1, 64));
	else if (api == API_WRITEV)
		k = split(ir, size, pieces, co_chance(ir, 1, 10) ? 1024 : 16);

	if (size == 0) {
		ssize_t r;

		if (api == API_WRITE)
			r = write(fd, buf, 0);
		else
			r = send(fd, buf, 0, 0);
		if (r != 0)
			co_fail("op %d: zero-length %s returned %zd (%s), expected 0", opno,
				api == API_WRITE ? "write" : "send", r, r < 0 ? strerror(errno) : "");
		return;
	}
	while (done < size) {
		ssize_t r;
		struct msghdr mh;
		int n;

		switch (api) {
		case API_WRITE:
			r = write(fd, buf + done, size - done);
			break;
		case API_SEND:
			r = send(fd, buf + done, size - done, 0);
			break;
		case API_SENDTO:
			r = sendto(fd, buf + done, size - done, 0, NULL, 0);
			break;
		case API_SENDMSG:
			n = build_iov(iov, buf, pieces, k, done);
			memset(&mh, 0, sizeof(mh));
			mh.msg_iov = iov;
			mh.msg_iovlen = (size_t)n;
			r = sendmsg(fd, &mh, 0);
			break;
		default:
			n = build_iov(iov, buf, pieces, k, done);
			r = writev(fd, iov, n);
			break;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			co_fail("op %d: %s of %zu bytes (%zu done) failed: %s", opno, api_names[api],
				size, done, strerror(errno));
		if (r == 0 || (size_t)r > size - done)
			co_fail("op %d: %s of %zu bytes returned %zd", opno, api_names[api],
				size - done, r);
		done += (size_t)r;
	}
}

static int child_main(int argc, char **argv)
{
	int family, fd, i, api;
	uint64_t n, off = 0;
	struct co_rng pr, ir;
	unsigned char *buf;

	co_child_init(NAME);
	if (argc != 3)
		co_fail("usage: family port|-1 stream");
	family = (int)co_arg_u64(argv[0]);
	n = co_arg_u64(argv[2]);
	if (strcmp(argv[1], "-1") == 0) {
		fd = 3;
	} else {
		fd = co_tcp_connect(family, (int)co_arg_u64(argv[1]));
		if (fd < 0)
			co_fail("connect to port %s: %s", argv[1], strerror(errno));
	}
	buf = malloc(MAX_OP);
	if (!buf)
		co_fail("malloc");
	co_rng_init(&pr, co_seed, n);
	co_rng_init(&ir, co_seed, n + 1000);
	for (i = 0; i < OPS; i++) {
		size_t size = plan_next(&pr, &api);

		co_stream_fill(co_stream_key(n), off, buf, size);
		do_op(fd, api, buf, size, &ir, i);
		off += size;
	}
	if (close(fd) < 0)
		co_fail("close: %s", strerror(errno));
	free(buf);
	return 0;
}

int main(int argc, char **argv)
{
	size_t t;
	const char *v6why;
	int ran = 0;

	if (argc > 1 && strcmp(argv[1], CO_CHILD_FLAG) == 0)
		return child_main(argc - 2, argv + 2);
	co_init(argc, argv, NAME);
	co_watchdog(60);
	v6why = co_ipv6_unavailable();

	for (t = 0; t < sizeof(transports) / sizeof(transports[0]); t++) {
		const struct transport *tp = &transports[t];
		struct co_child c;
		struct co_rng pr;
		struct co_fdmap map[1];
		char fam[16], port[16], stream[16];
		const char *args[4] = { fam, port, stream, NULL };
		uint64_t total = 0, small = 0;
		long long calls[API_COUNT] = { 0 };
		int i, api, rfd, lfd = -1, wfd = -1, nmap = 0, sv[2];

		if (tp->family == AF_INET6 && v6why) {
			co_note("%s part skipped: %s", tp->name, v6why);
			continue;
		}
		co_rng_init(&pr, co_seed, t);
		for (i = 0; i < OPS; i++) {
			size_t size = plan_next(&pr, &api);

			total += size;
			/* A zero-length call is a write or a send (do_op). */
			calls[size || api == API_WRITE ? api : API_SEND]++;
			if (size > 0 && size < LARGE)
				small++;
		}
		snprintf(fam, sizeof(fam), "%d", tp->family);
		snprintf(stream, sizeof(stream), "%zu", t);
		co_phase("%s: setting up", tp->name);
		if (tp->child_dials) {
			int p;

			lfd = co_tcp_listen(tp->family, &p);
			if (lfd < 0)
				co_fail("%s: listen: %s", tp->name, strerror(errno));
			snprintf(port, sizeof(port), "%d", p);
		} else {
			snprintf(port, sizeof(port), "-1");
			if (tp->family == AF_UNIX) {
				if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
					co_fail("socketpair: %s", strerror(errno));
			} else if (co_tcp_pair(tp->family, &sv[0], &sv[1]) < 0) {
				co_fail("%s: tcp pair: %s", tp->name, strerror(errno));
			}
			wfd = sv[0];
			rfd = sv[1];
			map[0].from = wfd;
			map[0].to = 3;
			nmap = 1;
		}
		co_spawn(&c, args, map, nmap, NULL, 1);
		if (tp->child_dials) {
			rfd = co_accept(lfd, tp->name);
			close(lfd);
		} else {
			close(wfd);
		}
		co_phase("%s: receiving and verifying %llu bytes from %d writes", tp->name,
			 (unsigned long long)total, OPS);
		{
			char what[64];

			snprintf(what, sizeof(what), "%s stream", tp->name);
			co_recv_verify_stream(rfd, co_stream_key(t), total, what);
		}
		close(rfd);
		co_phase("%s: waiting for the writer", tp->name);
		co_wait_ok(&c, tp->name);
		/* At least half of the small writes were queued, and at least 4
		 * queued writes went out per flush syscall on average. */
		co_stats_expect_coalesced(&c, (long long)small / 2, 4, tp->name);
		/* Every call was caught and counted under its own API (a short
		 * send makes one more). */
		for (api = 0; api < API_COUNT; api++) {
			char key[32];
			long long got;

			snprintf(key, sizeof(key), "calls_%s", api_names[api]);
			got = co_stats_need(&c, key);
			if (got < calls[api])
				co_fail("%s: stats %s=%lld, the child made %lld such calls", tp->name,
					key, got, calls[api]);
		}
		if (co_stats_need(&c, "calls_sendmmsg") != 0)
			co_fail("%s: calls_sendmmsg counted, the child made none", tp->name);
		ran++;
	}
	if (!ran)
		co_skip("no transport available");
	return 0;
}
