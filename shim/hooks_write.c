/* The write side: write, send, sendto, sendmsg, writev and glibc's exported
 * aliases. A write on an fd known not to be coalesced (a file, a pipe, a
 * UDP socket...) costs one table lookup before libc: each hook tests that
 * first and tail-calls libc, and keeps the rest out of line. */
#include <unistd.h>

#include "shim.h"

/* Returns 1 when fd's writes go straight to libc. */
static inline int passes(int fd)
{
	return !co_shim_on || co_fd_passes(&co_shim_ctx, fd);
}

/* Hands a write to core; returns its result in the libc convention, or
 * CO_PASSTHROUGH for the caller to make the libc call and then release
 * *held with co_write_end. */
static __attribute__((noinline)) ssize_t through_core(int fd, const struct iovec *iov,
						      int iovcnt, int flags, unsigned how,
						      struct co_fd **held)
{
	ssize_t r = co_write(&co_shim_ctx, fd, iov, iovcnt, flags, how, held);

	return r == CO_PASSTHROUGH ? r : co_shim_result(r, flags);
}

/* Ends a write that core handed back: r is libc's result. */
static inline ssize_t passed(struct co_fd *held, ssize_t r)
{
	int saved = errno;

	co_write_end(held);
	errno = saved;
	return r;
}

static __attribute__((noinline)) ssize_t write_slow(int fd, const void *buf, size_t len,
						    int flags)
{
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct co_fd *held;
	ssize_t r = through_core(fd, &iov, 1, flags, 0, &held);

	if (r != CO_PASSTHROUGH)
		return r;
	return passed(held, flags ? REAL(send)(fd, buf, len, flags) : REAL(write)(fd, buf, len));
}

CO_HOOK ssize_t write(int fd, const void *buf, size_t len)
{
	if (passes(fd))
		return REAL(write)(fd, buf, len);
	return write_slow(fd, buf, len, 0);
}

CO_HOOK ssize_t __write(int fd, const void *buf, size_t len) __attribute__((alias("write")));

CO_HOOK ssize_t send(int fd, const void *buf, size_t len, int flags)
{
	if (passes(fd))
		return REAL(send)(fd, buf, len, flags);
	return write_slow(fd, buf, len, flags);
}

CO_HOOK ssize_t __send(int fd, const void *buf, size_t len, int flags)
	__attribute__((alias("send")));

CO_HOOK ssize_t sendto(int fd, const void *buf, size_t len, int flags,
		       const struct sockaddr *addr, socklen_t addrlen)
{
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct co_fd *held;
	ssize_t r;

	if (passes(fd))
		return REAL(sendto)(fd, buf, len, flags, addr, addrlen);
	r = through_core(fd, &iov, 1, flags, addr ? CO_WRITE_ADDR : 0, &held);
	if (r != CO_PASSTHROUGH)
		return r;
	return passed(held, REAL(sendto)(fd, buf, len, flags, addr, addrlen));
}

CO_HOOK ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
	struct co_fd *held;
	ssize_t r;

	if (passes(fd) || !msg)
		return REAL(sendmsg)(fd, msg, flags);
	r = through_core(fd, msg->msg_iov, (int)msg->msg_iovlen, flags,
			 (msg->msg_name ? CO_WRITE_ADDR : 0) |
				 (msg->msg_controllen ? CO_WRITE_CONTROL : 0),
			 &held);
	if (r != CO_PASSTHROUGH)
		return r;
	return passed(held, REAL(sendmsg)(fd, msg, flags));
}

CO_HOOK ssize_t writev(int fd, const struct iovec *iov, int iovcnt)
{
	struct co_fd *held;
	ssize_t r;

	if (passes(fd))
		return REAL(writev)(fd, iov, iovcnt);
	r = through_core(fd, iov, iovcnt, 0, 0, &held);
	if (r != CO_PASSTHROUGH)
		return r;
	return passed(held, REAL(writev)(fd, iov, iovcnt));
}

/* sendmmsg on a stream socket is rare: send the queue first, then let libc
 * have it. */
CO_HOOK int sendmmsg(int fd, struct mmsghdr *msgs, unsigned int vlen, int flags)
{
	int r;

	if (!passes(fd)) {
		r = co_flush_before(&co_shim_ctx, fd, CO_ST_flush_order, flags & MSG_DONTWAIT);
		if (r < 0)
			return (int)co_shim_result(r, flags);
	}
	return REAL(sendmmsg)(fd, msgs, vlen, flags);
}
