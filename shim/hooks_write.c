/* The write side: write, send, sendto, sendmsg, writev and glibc's exported
 * aliases. A write on an fd known not to be coalesced costs one table
 * lookup before libc; the rest goes to core. */
#include <unistd.h>

#include "shim.h"

/* Runs a write through core; falls back to libc when core says so. */
#define CO_WRITE_THROUGH_CORE(fd, iov, iovcnt, flags, how, libc_call)             \
	do {                                                                          \
		ssize_t r_;                                                           \
		if (!co_shim_on || co_fd_passes(&co_shim_ctx, fd))                   \
			return libc_call;                                             \
		r_ = co_write(&co_shim_ctx, fd, iov, iovcnt, flags, how);            \
		if (r_ == CO_PASSTHROUGH)                                             \
			return libc_call;                                             \
		return co_shim_result(r_, flags);                                     \
	} while (0)

CO_HOOK ssize_t write(int fd, const void *buf, size_t len)
{
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };

	CO_WRITE_THROUGH_CORE(fd, &iov, 1, 0, 0, REAL(write)(fd, buf, len));
}

CO_HOOK ssize_t __write(int fd, const void *buf, size_t len) __attribute__((alias("write")));

CO_HOOK ssize_t send(int fd, const void *buf, size_t len, int flags)
{
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };

	CO_WRITE_THROUGH_CORE(fd, &iov, 1, flags, 0, REAL(send)(fd, buf, len, flags));
}

CO_HOOK ssize_t __send(int fd, const void *buf, size_t len, int flags)
	__attribute__((alias("send")));

CO_HOOK ssize_t sendto(int fd, const void *buf, size_t len, int flags,
		       const struct sockaddr *addr, socklen_t addrlen)
{
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };

	CO_WRITE_THROUGH_CORE(fd, &iov, 1, flags, addr ? CO_WRITE_ADDR : 0,
			      REAL(sendto)(fd, buf, len, flags, addr, addrlen));
}

CO_HOOK ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
	unsigned how;

	if (!msg)
		return REAL(sendmsg)(fd, msg, flags);
	how = (msg->msg_name ? CO_WRITE_ADDR : 0) | (msg->msg_controllen ? CO_WRITE_CONTROL : 0);

	CO_WRITE_THROUGH_CORE(fd, msg->msg_iov, (int)msg->msg_iovlen, flags, how,
			      REAL(sendmsg)(fd, msg, flags));
}

CO_HOOK ssize_t writev(int fd, const struct iovec *iov, int iovcnt)
{
	CO_WRITE_THROUGH_CORE(fd, iov, iovcnt, 0, 0, REAL(writev)(fd, iov, iovcnt));
}

/* sendmmsg on a stream socket is rare: send the queue first, then let libc
 * have it. */
CO_HOOK int sendmmsg(int fd, struct mmsghdr *msgs, unsigned int vlen, int flags)
{
	int r;

	if (co_shim_on && !co_fd_passes(&co_shim_ctx, fd)) {
		r = co_flush_before(&co_shim_ctx, fd, CO_ST_flush_order, flags & MSG_DONTWAIT);
		if (r < 0)
			return (int)co_shim_result(r, flags);
	}
	return REAL(sendmmsg)(fd, msgs, vlen, flags);
}
