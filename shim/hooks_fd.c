/* Calls that close an fd, give it a new meaning, or must come after its
 * queued bytes. */
#include <fcntl.h>
#include <stdarg.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "shim.h"

/* Sends fd's queue (and that of a duplicate of fd that coalesces its
 * socket) before an operation on it that must follow the bytes, as a write
 * would (blocking on a blocking socket). Returns 0, or -1 with errno set
 * (EAGAIN on a full nonblocking socket) when the operation must not be made
 * now. */
static int flush_first(int fd)
{
	int r;

	if (!co_shim_active() || co_fd_passes(&co_shim_ctx, fd))
		return 0;
	r = co_flush_before_send(&co_shim_ctx, fd, CO_ST_flush_order, 0);
	return (int)co_shim_result(r, MSG_NOSIGNAL);
}

/* Before an operation that never blocks and need not follow the bytes, but
 * changes how later ones go out (TCP_NODELAY, O_NONBLOCK...): sends what the
 * socket takes now, keeping errno. */
static void nudge(int fd)
{
	int saved = errno;

	if (co_shim_active() && !co_fd_passes(&co_shim_ctx, fd))
		co_flush_before(&co_shim_ctx, fd, CO_ST_flush_order, MSG_DONTWAIT);
	errno = saved;
}

/* Before an operation after which fd is no longer coalesced (fdopen,
 * shutdown): sends its queue as close would (bytes queued on a full
 * nonblocking socket wait at most the linger time), counted as reason. */
static void stop_coalescing(int fd, enum co_counter reason)
{
	if (co_shim_active() && !co_fd_passes(&co_shim_ctx, fd))
		co_fd_stop(&co_shim_ctx, fd, reason);
}

static void forget(int fd)
{
	if (co_shim_active() && fd >= 0)
		co_fd_forget(&co_shim_ctx, fd);
}

CO_HOOK int close(int fd)
{
	struct co_fd *f;
	int r;

	if (!co_shim_active())
		return REAL(close)(fd);
	co_uring_fds_closing((unsigned)fd, (unsigned)fd);
	if (co_close_or_hand_over(&co_shim_ctx, fd, &f))
		return 0;
	r = REAL(close)(fd);
	co_close_end(f);
	return r;
}

CO_HOOK int __close(int fd) __attribute__((alias("close")));

static void close_one(int fd, struct co_fd *f, void *arg)
{
	(void)arg;
	if (atomic_load(&f->kind) != CO_FD_UNKNOWN || pending_len(&f->q))
		co_close_end(co_close_begin(&co_shim_ctx, fd));
}

CO_HOOK int close_range(unsigned int first, unsigned int last, int flags)
{
	if (!REAL(close_range)) {
		errno = ENOSYS;
		return -1;
	}
	if (co_shim_active() && !(flags & CLOSE_RANGE_CLOEXEC) && first <= last) {
		co_uring_fds_closing(first, last);
		co_fd_each(&co_shim_ctx.fds, first, last, close_one, NULL);
	}
	return REAL(close_range)(first, last, flags);
}

CO_HOOK void closefrom(int lowfd)
{
	if (co_shim_active() && lowfd >= 0) {
		co_uring_fds_closing((unsigned)lowfd, ~0u);
		co_fd_each(&co_shim_ctx.fds, (unsigned)lowfd, ~0u, close_one, NULL);
	}
	REAL(closefrom)(lowfd);
}

CO_HOOK int shutdown(int fd, int how)
{
	if (how == SHUT_WR || how == SHUT_RDWR)
		stop_coalescing(fd, CO_ST_passthrough_shutdown);
	return REAL(shutdown)(fd, how);
}

/* A duplicate is a new fd of oldfd's socket, which core learns on the
 * duplicate's first write (or sendfile...): oldfd's queue goes first then,
 * as that call would wait for it, and the socket stops being coalesced. A
 * dup itself never waits. */
CO_HOOK int dup(int oldfd)
{
	int r = REAL(dup)(oldfd);

	forget(r);
	return r;
}

/* dup2 and dup3 close newfd first: its queue goes out before. */
static int dup_onto(int oldfd, int newfd, int flags, int use_dup3)
{
	struct co_fd *f;
	int r;

	if (!co_shim_active() || oldfd == newfd)
		return use_dup3 ? REAL(dup3)(oldfd, newfd, flags) : REAL(dup2)(oldfd, newfd);
	co_uring_fds_closing((unsigned)newfd, (unsigned)newfd);
	f = co_close_begin(&co_shim_ctx, newfd);
	r = use_dup3 ? REAL(dup3)(oldfd, newfd, flags) : REAL(dup2)(oldfd, newfd);
	co_close_end(f);
	return r;
}

CO_HOOK int dup2(int oldfd, int newfd)
{
	return dup_onto(oldfd, newfd, 0, 0);
}

CO_HOOK int dup3(int oldfd, int newfd, int flags)
{
	return dup_onto(oldfd, newfd, flags, 1);
}

/* Handles what fcntl does to the fd table; arg is the call's third argument. */
static int fcntl_common(int fd, int cmd, void *arg, int (*real)(int, int, ...))
{
	int r;

	if (!co_shim_active())
		return real(fd, cmd, arg);
	switch (cmd) {
	case F_DUPFD:
	case F_DUPFD_CLOEXEC:
		r = real(fd, cmd, arg);
		forget(r);
		return r;
	case F_SETFL:
		nudge(fd);
		return real(fd, cmd, arg);
	default:
		return real(fd, cmd, arg);
	}
}

CO_HOOK int fcntl(int fd, int cmd, ...)
{
	va_list ap;
	void *arg;

	va_start(ap, cmd);
	arg = va_arg(ap, void *);
	va_end(ap);
	return fcntl_common(fd, cmd, arg, REAL(fcntl));
}

CO_HOOK int fcntl64(int fd, int cmd, ...)
{
	va_list ap;
	void *arg;

	va_start(ap, cmd);
	arg = va_arg(ap, void *);
	va_end(ap);
	return fcntl_common(fd, cmd, arg, REAL(fcntl64));
}

CO_HOOK int ioctl(int fd, unsigned long request, ...)
{
	va_list ap;
	void *arg;

	va_start(ap, request);
	arg = va_arg(ap, void *);
	va_end(ap);
	if (request == FIONBIO)
		nudge(fd);
	return REAL(ioctl)(fd, request, arg);
}

/* On a datagram socket an option (IP_TOS, a TTL, the send buffer...) applies
 * to the datagrams sent after it: the queued ones go first, and the socket
 * is looked at again (its limits may change). */
CO_HOOK int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
	int r, saved;

	if (co_shim_active() && co_fd_is_dgram(&co_shim_ctx, fd)) {
		if (flush_first(fd) < 0)
			return -1;
		r = REAL(setsockopt)(fd, level, name, val, len);
		saved = errno;
		forget(fd);
		errno = saved;
		return r;
	}
	nudge(fd);
	return REAL(setsockopt)(fd, level, name, val, len);
}

/* SO_ERROR: an error a flush took from the socket is the application's,
 * and reading it clears it, as in the kernel. */
CO_HOOK int getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
	int err;

	if (co_shim_active() && level == SOL_SOCKET && name == SO_ERROR && val && len &&
	    *len >= (socklen_t)sizeof(int) && (err = co_fd_error(&co_shim_ctx, fd, 1))) {
		*(int *)val = err;
		*len = sizeof(int);
		return 0;
	}
	return REAL(getsockopt)(fd, level, name, val, len);
}

CO_HOOK ssize_t sendfile(int out_fd, int in_fd, off_t *offset, size_t count)
{
	if (flush_first(out_fd) < 0)
		return -1;
	return REAL(sendfile)(out_fd, in_fd, offset, count);
}

CO_HOOK ssize_t sendfile64(int out_fd, int in_fd, off_t *offset, size_t count)
{
	if (flush_first(out_fd) < 0)
		return -1;
	return REAL(sendfile64)(out_fd, in_fd, offset, count);
}

CO_HOOK ssize_t splice(int fd_in, loff_t *off_in, int fd_out, loff_t *off_out, size_t len,
		       unsigned int flags)
{
	if (flush_first(fd_out) < 0)
		return -1;
	return REAL(splice)(fd_in, off_in, fd_out, off_out, len, flags);
}

CO_HOOK ssize_t copy_file_range(int fd_in, loff_t *off_in, int fd_out, loff_t *off_out,
				size_t len, unsigned int flags)
{
	if (flush_first(fd_out) < 0)
		return -1;
	return REAL(copy_file_range)(fd_in, off_in, fd_out, off_out, len, flags);
}

CO_HOOK int socket(int domain, int type, int protocol)
{
	int r = REAL(socket)(domain, type, protocol);

	forget(r);
	return r;
}

CO_HOOK int socketpair(int domain, int type, int protocol, int sv[2])
{
	int r = REAL(socketpair)(domain, type, protocol, sv);

	if (r == 0) {
		forget(sv[0]);
		forget(sv[1]);
	}
	return r;
}

/* stdio writes through glibc's internal write, which the shim cannot see:
 * from here on this fd is not coalesced. */
CO_HOOK FILE *fdopen(int fd, const char *mode)
{
	stop_coalescing(fd, CO_ST_passthrough_stdio);
	return REAL(fdopen)(fd, mode);
}
