/* nonblocking_epoll_et: a writer on an O_NONBLOCK TCP socket driven by
 * edge-triggered epoll: it writes until EAGAIN, then waits for EPOLLOUT. The
 * receiver does not read at all until the writer has seen EAGAIN (so EAGAIN
 * really happens, and a nonblocking write that blocks shows up as a hang),
 * then reads slowly, then fast. A second variant has big socket buffers and
 * a fast reader from the start: the queue fills long before the socket
 * does. Every byte must arrive, and the writer must never wait for an edge
 * that does not come (an EAGAIN the kernel did not say loses the edge: the
 * writer then hangs in epoll_wait). The stats must show coalescing.
 *
 * Only the writer's calls and its wait for room are this test's own; the
 * writer's loop and the whole receiver are shared with msg_dontwait
 * (co_eagain_write and co_eagain_run in common.c). */
#include "common.h"

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define NAME "nonblocking_epoll_et"

/* The writer's own part: plain calls on an O_NONBLOCK socket. */
static ssize_t nonblock_write(void *arg, int fd, unsigned char *buf, size_t size, int api)
{
	struct iovec iov[2];
	size_t n = size / 2;

	(void)arg;
	if (api == 0)
		return write(fd, buf, size);
	if (api == 1)
		return send(fd, buf, size, 0);
	iov[0].iov_base = buf;
	iov[0].iov_len = n;
	iov[1].iov_base = buf + n;
	iov[1].iov_len = size - n;
	return writev(fd, iov, 2);
}

/* Waits for the next EPOLLOUT edge; arg is the epoll fd. */
static void nonblock_wait_room(void *arg, int fd, unsigned long eagain, uint64_t off)
{
	int ep = *(int *)arg;
	struct epoll_event ev;

	(void)fd;
	for (;;) {
		int k = epoll_wait(ep, &ev, 1, CO_EAGAIN_WAIT_MS);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			co_fail("epoll_wait: %s", strerror(errno));
		if (k == 0)
			co_fail("no EPOLLOUT edge within %d ms after EAGAIN number %lu at offset %llu: the edge was lost (EAGAIN without a full socket?)",
				CO_EAGAIN_WAIT_MS, eagain, (unsigned long long)off);
		break;
	}
}

static int child_main(int argc, char **argv)
{
	struct epoll_event ev;
	int fd = 3, ep;
	struct co_eagain_ops ops = { nonblock_write, nonblock_wait_room, &ep };

	co_child_init(NAME);
	if (argc != 1)
		co_fail("usage: stream");
	co_set_nonblock(fd, 1);
	ep = epoll_create1(0);
	if (ep < 0)
		co_fail("epoll_create1: %s", strerror(errno));
	ev.events = EPOLLOUT | EPOLLET;
	ev.data.fd = fd;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
		co_fail("epoll_ctl: %s", strerror(errno));
	co_eagain_write(co_arg_u64(argv[0]), &ops);
	return 0;
}

#define BLOCKED "a nonblocking write"

static const struct co_eagain_variant variants[] = {
	{ 0, NULL, "small buffers, slow reader", 0, BLOCKED },
	{ 1, NULL, "big buffers, fast reader", 1, BLOCKED },
};

int main(int argc, char **argv)
{
	size_t v;

	if (argc > 1 && strcmp(argv[1], CO_CHILD_FLAG) == 0)
		return child_main(argc - 2, argv + 2);
	co_init(argc, argv, NAME);
	co_watchdog(60);
	for (v = 0; v < sizeof(variants) / sizeof(variants[0]); v++)
		co_eagain_run(&variants[v]);
	return 0;
}
