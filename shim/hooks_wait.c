/* Calls that may block waiting for a peer: every queue of the process is
 * flushed first, since the answer the caller waits for may depend on bytes
 * queued on any fd (a client waiting for its reply, a proxy waiting on the
 * other side). When nothing is queued this costs one load.
 *
 * Reads flush whatever their flags; waits (poll, select, epoll) only when
 * their timeout is not zero, since a zero-timeout wait cannot block and
 * flushing there would only cost batching. */
#include <unistd.h>

#include "shim.h"

/* Before a read on fd: flushes, and returns -1 with errno set if a flush
 * on fd took an error from the socket that this read would have got. */
static inline int flush_before_read(int fd)
{
	int err;

	co_note_wait();
	if (!co_shim_active())
		return 0;
	co_flush_if_pending(&co_shim_ctx, CO_ST_flush_read);
	err = co_take_read_error(&co_shim_ctx, fd);
	if (err) {
		errno = -err;
		return -1;
	}
	return 0;
}

static inline void flush_before_wait(int may_block)
{
	co_note_wait();
	if (co_shim_active() && may_block)
		co_flush_if_pending(&co_shim_ctx, CO_ST_flush_wait);
}

/* After poll or ppoll returned r: an fd whose socket error a flush took
 * shows POLLERR, as it would have. Returns the new count of ready fds. */
static int add_pollerr(struct pollfd *fds, nfds_t nfds, int r)
{
	nfds_t i;

	if (r < 0 || !co_shim_active() || !co_any_fd_error(&co_shim_ctx))
		return r;
	for (i = 0; i < nfds; i++) {
		if (fds[i].fd < 0 || !co_fd_error(&co_shim_ctx, fds[i].fd, 0) ||
		    (fds[i].revents & POLLERR))
			continue;
		if (!fds[i].revents)
			r++;
		fds[i].revents |= POLLERR;
	}
	return r;
}

static int timespec_may_block(const struct timespec *ts)
{
	return !ts || ts->tv_sec || ts->tv_nsec;
}

CO_HOOK ssize_t read(int fd, void *buf, size_t len)
{
	if (flush_before_read(fd) < 0)
		return -1;
	return REAL(read)(fd, buf, len);
}

CO_HOOK ssize_t __read(int fd, void *buf, size_t len) __attribute__((alias("read")));

CO_HOOK ssize_t __read_chk(int fd, void *buf, size_t len, size_t buflen)
{
	if (flush_before_read(fd) < 0)
		return -1;
	return REAL(__read_chk)(fd, buf, len, buflen);
}

CO_HOOK ssize_t readv(int fd, const struct iovec *iov, int iovcnt)
{
	if (flush_before_read(fd) < 0)
		return -1;
	return REAL(readv)(fd, iov, iovcnt);
}

CO_HOOK ssize_t recv(int fd, void *buf, size_t len, int flags)
{
	if (flush_before_read(fd) < 0)
		return -1;
	return REAL(recv)(fd, buf, len, flags);
}

CO_HOOK ssize_t __recv_chk(int fd, void *buf, size_t len, size_t buflen, int flags)
{
	if (flush_before_read(fd) < 0)
		return -1;
	return REAL(__recv_chk)(fd, buf, len, buflen, flags);
}

CO_HOOK ssize_t recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *addr,
			 socklen_t *addrlen)
{
	if (flush_before_read(fd) < 0)
		return -1;
	return REAL(recvfrom)(fd, buf, len, flags, addr, addrlen);
}

CO_HOOK ssize_t __recvfrom_chk(int fd, void *buf, size_t len, size_t buflen, int flags,
			       struct sockaddr *addr, socklen_t *addrlen)
{
	if (flush_before_read(fd) < 0)
		return -1;
	return REAL(__recvfrom_chk)(fd, buf, len, buflen, flags, addr, addrlen);
}

CO_HOOK ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
	if (flush_before_read(fd) < 0)
		return -1;
	return REAL(recvmsg)(fd, msg, flags);
}

CO_HOOK int recvmmsg(int fd, struct mmsghdr *msgs, unsigned int vlen, int flags,
		     struct timespec *timeout)
{
	if (flush_before_read(fd) < 0)
		return -1;
	return REAL(recvmmsg)(fd, msgs, vlen, flags, timeout);
}

CO_HOOK int poll(struct pollfd *fds, nfds_t nfds, int timeout)
{
	flush_before_wait(timeout != 0);
	return add_pollerr(fds, nfds, REAL(poll)(fds, nfds, timeout));
}

CO_HOOK int __poll(struct pollfd *fds, nfds_t nfds, int timeout) __attribute__((alias("poll")));

CO_HOOK int __poll_chk(struct pollfd *fds, nfds_t nfds, int timeout, size_t fdslen)
{
	flush_before_wait(timeout != 0);
	return add_pollerr(fds, nfds, REAL(__poll_chk)(fds, nfds, timeout, fdslen));
}

CO_HOOK int ppoll(struct pollfd *fds, nfds_t nfds, const struct timespec *timeout,
		  const sigset_t *sigmask)
{
	flush_before_wait(timespec_may_block(timeout));
	return add_pollerr(fds, nfds, REAL(ppoll)(fds, nfds, timeout, sigmask));
}

CO_HOOK int __ppoll_chk(struct pollfd *fds, nfds_t nfds, const struct timespec *timeout,
			const sigset_t *sigmask, size_t fdslen)
{
	flush_before_wait(timespec_may_block(timeout));
	return add_pollerr(fds, nfds, REAL(__ppoll_chk)(fds, nfds, timeout, sigmask, fdslen));
}

CO_HOOK int select(int nfds, fd_set *rfds, fd_set *wfds, fd_set *efds, struct timeval *timeout)
{
	flush_before_wait(!timeout || timeout->tv_sec || timeout->tv_usec);
	return REAL(select)(nfds, rfds, wfds, efds, timeout);
}

CO_HOOK int pselect(int nfds, fd_set *rfds, fd_set *wfds, fd_set *efds,
		    const struct timespec *timeout, const sigset_t *sigmask)
{
	flush_before_wait(timespec_may_block(timeout));
	return REAL(pselect)(nfds, rfds, wfds, efds, timeout, sigmask);
}

CO_HOOK int epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout)
{
	flush_before_wait(timeout != 0);
	return REAL(epoll_wait)(epfd, events, maxevents, timeout);
}

CO_HOOK int epoll_pwait(int epfd, struct epoll_event *events, int maxevents, int timeout,
			const sigset_t *sigmask)
{
	flush_before_wait(timeout != 0);
	return REAL(epoll_pwait)(epfd, events, maxevents, timeout, sigmask);
}

CO_HOOK int epoll_pwait2(int epfd, struct epoll_event *events, int maxevents,
			 const struct timespec *timeout, const sigset_t *sigmask)
{
	flush_before_wait(timespec_may_block(timeout));
	if (!REAL(epoll_pwait2)) {
		errno = ENOSYS;
		return -1;
	}
	return REAL(epoll_pwait2)(epfd, events, maxevents, timeout, sigmask);
}

CO_HOOK int accept(int fd, struct sockaddr *addr, socklen_t *addrlen)
{
	int r;

	flush_before_wait(1);
	r = REAL(accept)(fd, addr, addrlen);
	if (r >= 0 && co_shim_active())
		co_fd_forget(&co_shim_ctx, r);
	return r;
}

CO_HOOK int accept4(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags)
{
	int r;

	flush_before_wait(1);
	r = REAL(accept4)(fd, addr, addrlen, flags);
	if (r >= 0 && co_shim_active())
		co_fd_forget(&co_shim_ctx, r);
	return r;
}

/* connect on a datagram socket changes where sends without an address go:
 * what was queued goes first, to the old peer, and the socket is looked at
 * again. */
CO_HOOK int connect(int fd, const struct sockaddr *addr, socklen_t addrlen)
{
	int r, saved;

	if (co_shim_active() && co_fd_is_dgram(&co_shim_ctx, fd)) {
		r = co_flush_before(&co_shim_ctx, fd, CO_ST_flush_order, 0);
		if (r < 0)
			return (int)co_shim_result(r, MSG_NOSIGNAL);
		r = REAL(connect)(fd, addr, addrlen);
		saved = errno;
		co_fd_forget(&co_shim_ctx, fd);
		errno = saved;
		return r;
	}
	flush_before_wait(1);
	return REAL(connect)(fd, addr, addrlen);
}

CO_HOOK int __connect(int fd, const struct sockaddr *addr, socklen_t addrlen)
	__attribute__((alias("connect")));
