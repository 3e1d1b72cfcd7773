/* msg_dontwait: like nonblocking_epoll_et, but the socket stays blocking and
 * every call passes MSG_DONTWAIT (send, sendto, sendmsg): such a call must
 * never block and must return EAGAIN only when the kernel said so. The
 * receiver does not read until the writer has seen EAGAIN (a MSG_DONTWAIT
 * call that blocks shows up as a hang), then reads slowly, then fast. The
 * writer waits for room with poll (level-triggered) or edge-triggered epoll.
 * A third variant has big socket buffers and a fast reader from the start:
 * the queue fills long before the socket, so an EAGAIN the kernel did not
 * say would leave the edge-triggered writer without an edge (a hang). Every
 * byte must arrive; the stats must show coalescing. */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define NAME "msg_dontwait"
#define TOTAL (8u << 20)
#define EDGE_WAIT_MS 5000 /* an edge that has not come by then never will */

static size_t next_size(struct co_rng *r)
{
	unsigned x = (unsigned)co_range(r, 0, 999);

	if (x < 900)
		return co_range(r, 1, 256);
	if (x < 990)
		return co_range(r, 257, 4096);
	return co_range(r, 32768, 65536); /* not copied: goes out with the queue */
}

static int child_main(int argc, char **argv)
{
	static unsigned char buf[65536];
	uint64_t off = 0, key;
	struct co_rng r;
	struct epoll_event ev;
	unsigned long eagain = 0, calls = 0, partial = 0;
	int fd = 3, ctl = 4, ep, use_poll;
	char line[128];

	co_child_init(NAME);
	if (argc != 2)
		co_fail("usage: stream poll|epoll");
	key = co_stream_key(co_arg_u64(argv[0]));
	use_poll = strcmp(argv[1], "poll") == 0;
	co_rng_init(&r, co_seed, 77 + co_arg_u64(argv[0]));
	ep = epoll_create1(0);
	if (ep < 0)
		co_fail("epoll_create1: %s", strerror(errno));
	ev.events = EPOLLOUT | EPOLLET; /* used by the epoll variant */
	ev.data.fd = fd;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
		co_fail("epoll_ctl: %s", strerror(errno));

	while (off < TOTAL) {
		size_t size = next_size(&r), n;
		ssize_t w;
		int api = (int)co_range(&r, 0, 2);
		struct iovec iov[2];

		if (size > TOTAL - off)
			size = TOTAL - off;
		co_stream_fill(key, off, buf, size);
		calls++;
		if (api == 0) {
			w = send(fd, buf, size, MSG_DONTWAIT);
		} else if (api == 1) {
			w = sendto(fd, buf, size, MSG_DONTWAIT, NULL, 0);
		} else {
			struct msghdr mh;

			n = size / 2;
			iov[0].iov_base = buf;
			iov[0].iov_len = n;
			iov[1].iov_base = buf + n;
			iov[1].iov_len = size - n;
			memset(&mh, 0, sizeof(mh));
			mh.msg_iov = iov;
			mh.msg_iovlen = 2;
			w = sendmsg(fd, &mh, MSG_DONTWAIT);
		}
		if (w > 0) {
			if ((size_t)w > size)
				co_fail("write of %zu returned %zd", size, w);
			if ((size_t)w < size)
				partial++;
			off += (uint64_t)w;
			continue;
		}
		if (w == 0)
			co_fail("write of %zu bytes at offset %llu returned 0", size,
				(unsigned long long)off);
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			co_fail("write of %zu bytes at offset %llu: %s", size,
				(unsigned long long)off, strerror(errno));
		if (eagain++ == 0)
			co_write_all(ctl, "A", 1, "control pipe");
		for (;;) {
			struct pollfd pfd = { .fd = fd, .events = POLLOUT };
			int k = use_poll ? poll(&pfd, 1, EDGE_WAIT_MS)
					 : epoll_wait(ep, &ev, 1, EDGE_WAIT_MS);

			if (k < 0 && errno == EINTR)
				continue;
			if (k < 0)
				co_fail("%s: %s", use_poll ? "poll" : "epoll_wait", strerror(errno));
			if (k == 0)
				co_fail("%s: no POLLOUT/EPOLLOUT within %d ms after EAGAIN number %lu at offset %llu: the socket never got room (EAGAIN without a full socket?)",
					use_poll ? "poll" : "epoll_wait", EDGE_WAIT_MS, eagain,
					(unsigned long long)off);
			break;
		}
	}
	snprintf(line, sizeof(line), "eagain=%lu calls=%lu partial=%lu\n", eagain, calls, partial);
	co_write_all(ctl, line, strlen(line), "control pipe");
	if (close(fd) < 0)
		co_fail("close: %s", strerror(errno));
	return 0;
}

/* Reads and verifies up to max bytes (one read call); returns 0 at EOF. */
static size_t recv_some(int fd, uint64_t key, uint64_t *off, size_t max)
{
	static unsigned char buf[256 * 1024];
	ssize_t r;
	size_t bad;

	if (max > sizeof(buf))
		max = sizeof(buf);
	do
		r = read(fd, buf, max);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		co_fail("read at offset %llu: %s", (unsigned long long)*off, strerror(errno));
	if (*off + (uint64_t)r > TOTAL)
		co_fail("received more than the %u bytes sent", TOTAL);
	bad = co_stream_check(key, *off, buf, (size_t)r);
	if (bad < (size_t)r)
		co_stream_mismatch("stream", key, *off + bad, buf + bad, (size_t)r - bad);
	*off += (uint64_t)r;
	return (size_t)r;
}

static void run_variant(int v, const char *how, int big)
{
	struct co_child c;
	struct co_fdmap map[2];
	char stream[16];
	const char *mode = strncmp(how, "poll", 4) == 0 ? "poll" : "epoll";
	const char *args[] = { stream, mode, NULL };
	int wfd, rfd, ctl[2], i;
	uint64_t key, off = 0;
	struct pollfd pfd;
	char sum[256], *p;
	size_t n;
	unsigned long eagain = 0, calls = 0, partial = 0;

	snprintf(stream, sizeof(stream), "%d", v);
	key = co_stream_key((uint64_t)v);
	if (co_tcp_pair(AF_INET, &wfd, &rfd) < 0)
		co_fail("tcp pair: %s", strerror(errno));
	/* Small buffers: many EAGAIN / EPOLLOUT cycles while the reader is
	 * slow. Big ones, with a fast reader: the queue fills long before the
	 * socket does, and an EAGAIN there would be the shim's own (no edge
	 * would follow). */
	{
		int sz = big ? 4 << 20 : 16384;

		if (setsockopt(wfd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz)) < 0 ||
		    setsockopt(rfd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz)) < 0)
			co_fail("setsockopt SO_SNDBUF/SO_RCVBUF: %s", strerror(errno));
	}
	if (pipe2(ctl, O_CLOEXEC) < 0)
		co_fail("pipe: %s", strerror(errno));
	map[0].from = wfd;
	map[0].to = 3;
	map[1].from = ctl[1];
	map[1].to = 4;
	co_spawn(&c, args, map, 2, NULL, 1);
	close(wfd);
	close(ctl[1]);

	if (!big) {
		co_phase("%s: not reading: waiting for the writer to report its first EAGAIN", how);
		pfd.fd = ctl[0];
		pfd.events = POLLIN;
		for (;;) {
			int k = poll(&pfd, 1, 10000);
			char ch;

			if (k < 0 && errno == EINTR)
				continue;
			if (k == 0)
				co_fail("%s: the writer never got EAGAIN within 10 s although nobody read its socket: a MSG_DONTWAIT send blocked (or the shim queues without bound)",
					how);
			if (read(ctl[0], &ch, 1) != 1 || ch != 'A')
				co_fail("%s: the writer exited before reporting EAGAIN", how);
			break;
		}
		co_phase("%s: slow reads (offset %llu)", how, (unsigned long long)off);
		for (i = 0; i < 250; i++) {
			struct co_rng r;

			co_rng_init(&r, co_seed, 1000 + (uint64_t)i);
			if (recv_some(rfd, key, &off, co_range(&r, 512, 4096)) == 0)
				break;
			co_sleep_ms(2);
		}
	}
	co_phase("%s: fast reads (offset %llu)", how, (unsigned long long)off);
	while (recv_some(rfd, key, &off, 256 * 1024) > 0)
		;
	if (off != TOTAL)
		co_fail("%s: EOF after %llu bytes, expected %u (%llu lost)", how,
			(unsigned long long)off, TOTAL, (unsigned long long)(TOTAL - off));
	close(rfd);

	co_phase("%s: reading the writer's summary", how);
	n = co_read_full(ctl[0], sum, sizeof(sum) - 1, "control pipe");
	sum[n] = '\0';
	p = sum[0] == 'A' ? sum + 1 : sum;
	if (sscanf(p, "eagain=%lu calls=%lu partial=%lu", &eagain, &calls, &partial) != 3)
		co_fail("%s: bad summary from the writer: \"%s\"", how, sum);
	co_wait_ok(&c, how);
	co_info("%s: writer: %lu calls, %lu EAGAIN, %lu partial writes", how, calls, eagain,
		partial);
	if (!big && eagain == 0)
		co_fail("%s: the writer never saw EAGAIN: the test did not exercise it", how);
	co_stats_expect_coalesced(&c, (long long)calls / 4, 4, how);
	close(ctl[0]);
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], CO_CHILD_FLAG) == 0)
		return child_main(argc - 2, argv + 2);
	co_init(argc, argv, NAME);
	co_watchdog(60);
	run_variant(0, "poll, small buffers, slow reader", 0);
	run_variant(1, "epoll ET, small buffers, slow reader", 0);
	run_variant(2, "epoll ET, big buffers, fast reader", 1);
	return 0;
}
