/* request_response: a blocking client under the shim writes a small request
 * in 1-3 writes, then blocks waiting for the reply from a plain echo server
 * (the parent). The deadline is set to its maximum (1 s), so only the flush
 * before the wait can send the request in time: if a wait does not flush,
 * every round trip stalls for the whole deadline and the test runs into its
 * watchdog (a hang), named by variant and round trip.
 *
 * Variants (2000 round trips for the first five, 300 for the others):
 * read, recv, poll+read, select+read, epoll_wait+read, recvfrom, recvmsg,
 * readv, recvmmsg, __read_chk, __recv_chk, __recvfrom_chk (what fortified
 * binaries call), __poll_chk+read, ppoll+read, pselect+read,
 * epoll_pwait+read, epoll_pwait2+read. Every reply byte is checked, and the
 * stats must show the request writes were queued and sent together. */
#include "common.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* What _FORTIFY_SOURCE builds call instead of read/recv/recvfrom/poll. */
extern ssize_t __read_chk(int fd, void *buf, size_t nbytes, size_t buflen);
extern ssize_t __recv_chk(int fd, void *buf, size_t n, size_t buflen, int flags);
extern ssize_t __recvfrom_chk(int fd, void *buf, size_t n, size_t buflen, int flags,
			      struct sockaddr *addr, socklen_t *addr_len);
extern int __poll_chk(struct pollfd *fds, nfds_t nfds, int timeout, size_t fdslen);

#define NAME "request_response"
#define MAGIC 0x52455155u
#define HDR 12
#define MAX_REQ 300

enum variant {
	V_READ, V_RECV, V_POLL, V_SELECT, V_EPOLL,
	V_RECVFROM, V_RECVMSG, V_READV, V_RECVMMSG, V_READ_CHK, V_RECV_CHK, V_RECVFROM_CHK,
	V_POLL_CHK, V_PPOLL, V_PSELECT, V_EPOLL_PWAIT, V_EPOLL_PWAIT2,
	V_COUNT
};
static const char *const vnames[V_COUNT] = {
	"read", "recv", "poll+read", "select+read", "epoll_wait+read",
	"recvfrom", "recvmsg", "readv", "recvmmsg", "__read_chk", "__recv_chk", "__recvfrom_chk",
	"__poll_chk+read", "ppoll+read", "pselect+read", "epoll_pwait+read", "epoll_pwait2+read",
};

static int rounds(int v)
{
	return v <= V_EPOLL ? 2000 : 300;
}

static void put32(unsigned char *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

static uint32_t get32(const unsigned char *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return v;
}

/* One blocking receive in the variant's way (waiting first for the wait
 * variants); returns what read() would. */
static ssize_t recv_variant(int v, int fd, int ep, unsigned char *buf, size_t len)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	struct epoll_event ev;
	struct timespec ts = { 30, 0 };
	struct msghdr mh;
	struct mmsghdr mm;
	struct iovec iov[2];
	fd_set rs;
	int k = 1;

	switch (v) {
	case V_READ:
		return read(fd, buf, len);
	case V_RECV:
		return recv(fd, buf, len, 0);
	case V_RECVFROM:
		return recvfrom(fd, buf, len, 0, NULL, NULL);
	case V_RECVMSG:
	case V_READV:
		iov[0].iov_base = buf;
		iov[0].iov_len = len / 2;
		iov[1].iov_base = buf + len / 2;
		iov[1].iov_len = len - len / 2;
		if (v == V_READV)
			return readv(fd, iov, 2);
		memset(&mh, 0, sizeof(mh));
		mh.msg_iov = iov;
		mh.msg_iovlen = 2;
		return recvmsg(fd, &mh, 0);
	case V_RECVMMSG:
		iov[0].iov_base = buf;
		iov[0].iov_len = len;
		memset(&mm, 0, sizeof(mm));
		mm.msg_hdr.msg_iov = iov;
		mm.msg_hdr.msg_iovlen = 1;
		k = recvmmsg(fd, &mm, 1, MSG_WAITFORONE, NULL);
		return k < 0 ? -1 : k == 0 ? 0 : (ssize_t)mm.msg_len;
	case V_READ_CHK:
		return __read_chk(fd, buf, len, len);
	case V_RECV_CHK:
		return __recv_chk(fd, buf, len, len, 0);
	case V_RECVFROM_CHK:
		return __recvfrom_chk(fd, buf, len, len, 0, NULL, NULL);
	case V_POLL:
		k = poll(&pfd, 1, -1);
		break;
	case V_POLL_CHK:
		k = __poll_chk(&pfd, 1, 30000, sizeof(pfd));
		break;
	case V_PPOLL:
		k = ppoll(&pfd, 1, &ts, NULL);
		break;
	case V_SELECT:
		FD_ZERO(&rs);
		FD_SET(fd, &rs);
		k = select(fd + 1, &rs, NULL, NULL, NULL);
		break;
	case V_PSELECT:
		FD_ZERO(&rs);
		FD_SET(fd, &rs);
		k = pselect(fd + 1, &rs, NULL, NULL, &ts, NULL);
		break;
	case V_EPOLL:
		k = epoll_wait(ep, &ev, 1, -1);
		break;
	case V_EPOLL_PWAIT:
		k = epoll_pwait(ep, &ev, 1, 30000, NULL);
		break;
	case V_EPOLL_PWAIT2:
		k = epoll_pwait2(ep, &ev, 1, NULL, NULL);
		break;
	}
	if (k < 0)
		return -1;
	if (k == 0)
		co_fail("%s: timed out after 30 s with no reply", vnames[v]);
	return read(fd, buf, len);
}

static int child_main(int argc, char **argv)
{
	int fd = 3, ep, v, i, api;
	unsigned char req[MAX_REQ], rep[MAX_REQ];
	struct co_rng r;
	struct epoll_event ev = { .events = EPOLLIN };
	uint32_t seq = 0;

	(void)argv;
	co_child_init(NAME);
	if (argc != 0)
		co_fail("usage: (no arguments)");
	co_rng_init(&r, co_seed, 1);
	ep = epoll_create1(0);
	ev.data.fd = fd;
	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
		co_fail("epoll: %s", strerror(errno));
	for (v = 0; v < V_COUNT; v++) {
		for (i = 0; i < rounds(v); i++, seq++) {
			size_t len = co_range(&r, HDR, MAX_REQ), done = 0, got = 0;
			int parts = (int)co_range(&r, 1, 3), p;

			put32(req, MAGIC);
			put32(req + 4, seq);
			put32(req + 8, (uint32_t)(len | (unsigned)v << 16));
			co_stream_fill(co_stream_key(seq), 0, req + HDR, len - HDR);
			for (p = 0; p < parts; p++) {
				size_t n = p == parts - 1 ? len - done
							  : co_range(&r, 1, (len - done) / 2 + 1);
				ssize_t w;

				api = (int)co_range(&r, 0, 1);
				w = api ? send(fd, req + done, n, 0) : write(fd, req + done, n);
				if (w != (ssize_t)n)
					co_fail("%s round %d: write of %zu returned %zd (%s)", vnames[v],
						i, n, w, w < 0 ? strerror(errno) : "short");
				done += n;
			}
			while (got < len) {
				ssize_t k = recv_variant(v, fd, ep, rep + got, len - got);

				if (k < 0 && errno == EINTR)
					continue;
				if (k < 0)
					co_fail("%s round %d: %s", vnames[v], i, strerror(errno));
				if (k == 0)
					co_fail("%s round %d: EOF from the echo server", vnames[v], i);
				got += (size_t)k;
			}
			if (memcmp(req, rep, len) != 0) {
				size_t b = 0;

				while (req[b] == rep[b])
					b++;
				co_fail("%s round %d: reply byte %zu of %zu differs: sent %02x got %02x",
					vnames[v], i, b, len, req[b], rep[b]);
			}
		}
	}
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	struct co_child c;
	const char *env[] = { CO_LONG_DELAY, NULL };
	unsigned char buf[MAX_REQ];
	int wfd, sfd, v, i, one = 1;
	uint32_t seq = 0;
	long long writes_min = 0;

	if (argc > 1 && strcmp(argv[1], CO_CHILD_FLAG) == 0)
		return child_main(argc - 2, argv + 2);
	co_init(argc, argv, NAME);
	co_watchdog(60);
	if (co_tcp_pair(AF_INET, &wfd, &sfd) < 0)
		co_fail("tcp pair: %s", strerror(errno));
	/* The echo server answers at once: a stall is the client's. */
	setsockopt(sfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(wfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	co_spawn_fds(&c, NULL, env, wfd, -1);

	for (v = 0; v < V_COUNT; v++) {
		for (i = 0; i < rounds(v); i++, seq++) {
			size_t len;

			co_phase("echo server waiting for request %d of variant %s (a hang here: the client blocked in %s with its request still queued)",
				 i, vnames[v], vnames[v]);
			if (co_read_full(sfd, buf, HDR, "request header") != HDR)
				co_fail("EOF from the client before request %d of %s", i, vnames[v]);
			len = get32(buf + 8) & 0xffff;
			if (get32(buf) != MAGIC || get32(buf + 4) != seq ||
			    (get32(buf + 8) >> 16) != (uint32_t)v || len < HDR || len > MAX_REQ)
				co_fail("%s round %d: bad request header (magic %08x seq %u, expected seq %u)",
					vnames[v], i, get32(buf), get32(buf + 4), seq);
			if (co_read_full(sfd, buf + HDR, len - HDR, "request body") != len - HDR)
				co_fail("EOF inside request %d of %s", i, vnames[v]);
			{
				size_t bad = co_stream_check(co_stream_key(seq), 0, buf + HDR, len - HDR);

				if (bad < len - HDR)
					co_fail("%s round %d: request byte %zu differs", vnames[v], i,
						HDR + bad);
			}
			co_write_all(sfd, buf, len, "echo");
			writes_min++; /* half of the 2 writes per request on average */
		}
	}
	co_phase("waiting for the client's EOF");
	if (read(sfd, buf, 1) != 0)
		co_fail("expected EOF after the last round trip");
	close(sfd);
	co_wait_ok(&c, "client");
	if (co_shim_on()) {
		long long wq = co_stats_need(&c, "writes_queued");
		long long fs = co_stats_need(&c, "flush_syscalls");

		co_stats_dump(&c, "client");
		/* 1-3 writes per request (2 on average): all queued but perhaps
		 * the first (a lone write may go out at once), then one flush
		 * when the client waits. So at least one queued write per
		 * request on average. */
		if (wq < writes_min)
			co_fail("stats writes_queued=%lld, expected at least %lld (half the request writes): the request writes were not queued",
				wq, writes_min);
		if (fs * 3 > wq * 2)
			co_fail("stats flush_syscalls=%lld for writes_queued=%lld: the 1-3 writes of a request were not sent together",
				fs, wq);
	}
	return 0;
}
