/* msg_dontwait: like nonblocking_epoll_et, but the socket stays blocking and
 * every call passes MSG_DONTWAIT (send, sendto, sendmsg): such a call must
 * never block and must return EAGAIN only when the kernel said so. The
 * receiver does not read until the writer has seen EAGAIN (a MSG_DONTWAIT
 * call that blocks shows up as a hang), then reads slowly, then fast. The
 * writer waits for room with poll (level-triggered) or edge-triggered epoll.
 * A third variant has big socket buffers and a fast reader from the start:
 * the queue fills long before the socket, so an EAGAIN the kernel did not
 * say would leave the edge-triggered writer without an edge (a hang). Every
 * byte must arrive; the stats must show coalescing.
 *
 * Only the writer's calls and its wait for room are this test's own; the
 * writer's loop and the whole receiver are shared with nonblocking_epoll_et
 * (co_eagain_write and co_eagain_run in common.c). */
#include "common.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#define NAME "msg_dontwait"

/* The writer's own part: every call passes MSG_DONTWAIT on a blocking socket. */
static ssize_t dontwait_write(void *arg, int fd, unsigned char *buf, size_t size, int api)
{
	struct iovec iov[2];
	struct msghdr mh;
	size_t n = size / 2;

	(void)arg;
	if (api == 0)
		return send(fd, buf, size, MSG_DONTWAIT);
	if (api == 1)
		return sendto(fd, buf, size, MSG_DONTWAIT, NULL, 0);
	iov[0].iov_base = buf;
	iov[0].iov_len = n;
	iov[1].iov_base = buf + n;
	iov[1].iov_len = size - n;
	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = iov;
	mh.msg_iovlen = 2;
	return sendmsg(fd, &mh, MSG_DONTWAIT);
}

struct waiter {
	int ep;       /* epoll instance with fd 3 edge-triggered for EPOLLOUT */
	int use_poll; /* wait with poll (level-triggered) instead */
};

static void dontwait_wait_room(void *arg, int fd, unsigned long eagain, uint64_t off)
{
	struct waiter *wt = arg;
	struct epoll_event ev;

	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLOUT };
		int k = wt->use_poll ? poll(&pfd, 1, CO_EAGAIN_WAIT_MS)
				     : epoll_wait(wt->ep, &ev, 1, CO_EAGAIN_WAIT_MS);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			co_fail("%s: %s", wt->use_poll ? "poll" : "epoll_wait", strerror(errno));
		if (k == 0)
			co_fail("%s: no POLLOUT/EPOLLOUT within %d ms after EAGAIN number %lu at offset %llu: the socket never got room (EAGAIN without a full socket?)",
				wt->use_poll ? "poll" : "epoll_wait", CO_EAGAIN_WAIT_MS, eagain,
				(unsigned long long)off);
		break;
	}
}

static int child_main(int argc, char **argv)
{
	struct waiter wt;
	struct co_eagain_ops ops = { dontwait_write, dontwait_wait_room, &wt };
	struct epoll_event ev;
	int fd = 3;

	co_child_init(NAME);
	if (argc != 2)
		co_fail("usage: stream poll|epoll");
	wt.use_poll = strcmp(argv[1], "poll") == 0;
	wt.ep = epoll_create1(0);
	if (wt.ep < 0)
		co_fail("epoll_create1: %s", strerror(errno));
	ev.events = EPOLLOUT | EPOLLET; /* used by the epoll variant */
	ev.data.fd = fd;
	if (epoll_ctl(wt.ep, EPOLL_CTL_ADD, fd, &ev) < 0)
		co_fail("epoll_ctl: %s", strerror(errno));
	co_eagain_write(co_arg_u64(argv[0]), &ops);
	return 0;
}

#define BLOCKED "a MSG_DONTWAIT send"

static const struct co_eagain_variant variants[] = {
	{ 0, "poll", "poll, small buffers, slow reader", 0, BLOCKED },
	{ 1, "epoll", "epoll ET, small buffers, slow reader", 0, BLOCKED },
	{ 2, "epoll", "epoll ET, big buffers, fast reader", 1, BLOCKED },
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
