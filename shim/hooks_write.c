/* The write side: write, send, sendto, sendmsg, writev and glibc's exported
 * aliases. A write on an fd known not to be coalesced (a file, a pipe, a
 * UDP socket...) costs one table lookup before libc: each hook tests that
 * first and tail-calls libc, and keeps the rest out of line. */
#include <unistd.h>

#include "shim.h"

/* Returns 1 when fd's writes go straight to libc. */
static inline int passes(int fd)
{
	return !co_shim_active() || co_fd_passes(&co_shim_ctx, fd);
}

/* Hands a write to core; returns its result in the libc convention, or
 * CO_PASSTHROUGH for the caller to make the libc call and then release
 * *held with co_write_end. */
static __attribute__((noinline)) ssize_t through_core(int fd, const struct iovec *iov,
						      int iovcnt, int flags, unsigned how,
						      const struct sockaddr *addr, socklen_t addrlen,
						      struct co_fd **held)
{
	ssize_t r = co_sendto(&co_shim_ctx, fd, iov, iovcnt, flags, how, addr, addrlen, held);

	return r == CO_PASSTHROUGH ? r : co_shim_result(r, flags);
}

/* Ends a write that core handed back: r is libc's result. */
static inline ssize_t passed(struct co_fd *held, ssize_t r)
{
	int saved = errno;

	co_write_end(held, r);
	errno = saved;
	return r;
}

/* write and send (api: CO_API_WRITE or CO_API_SEND). */
static __attribute__((noinline)) ssize_t write_slow(int fd, const void *buf, size_t len,
						    int flags, enum co_api api)
{
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct co_fd *held;
	ssize_t r = through_core(fd, &iov, 1, flags, CO_WRITE_API(api), NULL, 0, &held);

	if (r != CO_PASSTHROUGH)
		return r;
	return passed(held, flags ? REAL(send)(fd, buf, len, flags) : REAL(write)(fd, buf, len));
}

CO_HOOK ssize_t write(int fd, const void *buf, size_t len)
{
	if (passes(fd))
		return REAL(write)(fd, buf, len);
	return write_slow(fd, buf, len, 0, CO_API_WRITE);
}

CO_HOOK ssize_t __write(int fd, const void *buf, size_t len) __attribute__((alias("write")));

CO_HOOK ssize_t send(int fd, const void *buf, size_t len, int flags)
{
	if (passes(fd))
		return REAL(send)(fd, buf, len, flags);
	return write_slow(fd, buf, len, flags, CO_API_SEND);
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
	r = through_core(fd, &iov, 1, flags,
			 CO_WRITE_API(CO_API_SENDTO) | (addr ? CO_WRITE_ADDR : 0), addr, addrlen,
			 &held);
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
			 CO_WRITE_API(CO_API_SENDMSG) | (msg->msg_name ? CO_WRITE_ADDR : 0) |
				 (msg->msg_controllen ? CO_WRITE_CONTROL : 0),
			 msg->msg_name, msg->msg_namelen, &held);
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
	r = through_core(fd, iov, iovcnt, 0, CO_WRITE_API(CO_API_WRITEV), NULL, 0, &held);
	if (r != CO_PASSTHROUGH)
		return r;
	return passed(held, REAL(writev)(fd, iov, iovcnt));
}

/* sendmmsg: each message is one send of its own, in order (on a datagram
 * socket, one datagram to its own destination). Returns how many went, or
 * -1 with errno if none did, as the kernel does. */
static __attribute__((noinline)) int sendmmsg_slow(int fd, struct mmsghdr *msgs,
						   unsigned int vlen, int flags)
{
	struct co_fd *held;
	struct msghdr *m;
	unsigned int i;
	ssize_t r;

	for (i = 0; i < vlen; i++) {
		m = &msgs[i].msg_hdr;
		r = co_sendto(&co_shim_ctx, fd, m->msg_iov, (int)m->msg_iovlen, flags,
			      CO_WRITE_API(i ? CO_API_COUNT : CO_API_SENDMMSG) |
				      (m->msg_name ? CO_WRITE_ADDR : 0) |
				      (m->msg_controllen ? CO_WRITE_CONTROL : 0),
			      m->msg_name, m->msg_namelen, &held);
		if (r == CO_PASSTHROUGH)
			r = passed(held, REAL(sendmsg)(fd, m, flags));
		else if (r < 0)
			r = i ? r : co_shim_result(r, flags);
		if (r < 0)
			return i ? (int)i : -1;
		msgs[i].msg_len = (unsigned int)r;
	}
	return (int)vlen;
}

CO_HOOK int sendmmsg(int fd, struct mmsghdr *msgs, unsigned int vlen, int flags)
{
	if (passes(fd) || !msgs)
		return REAL(sendmmsg)(fd, msgs, vlen, flags);
	/* The kernel sends at most UIO_MAXIOV messages per call. */
	return sendmmsg_slow(fd, msgs, vlen < UIO_MAXIOV ? vlen : UIO_MAXIOV, flags);
}
