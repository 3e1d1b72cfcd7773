/* The system calls core needs, as a table of function pointers.
 *
 * core never calls libc I/O itself: the shim fills this table with the real
 * libc functions (wrapped so that they return -errno), and the unit tests fill
 * it with fakes. Every function returns a non-negative result or -errno. */
#ifndef CO_SYS_H
#define CO_SYS_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

/* One send of a batch (sys.ring_send_batch): a sendmsg of msg on fd, made
 * with MSG_DONTWAIT | MSG_NOSIGNAL. msg describes iov (core fills both). */
struct co_ring_req {
	int fd;
	struct msghdr msg;
	struct iovec iov;
	ssize_t result; /* Bytes sent or -errno; CO_RING_UNSENT until it ran. */
};

/* The result of a request the ring never ran. Outside the range of -errno. */
#define CO_RING_UNSENT (-4096 - 2)

struct co_sys {
	ssize_t (*sendmsg)(int fd, const struct msghdr *msg, int flags);
	ssize_t (*writev)(int fd, const struct iovec *iov, int iovcnt);
	/* Returns how many messages went, or -errno if none did. */
	int (*sendmmsg)(int fd, struct mmsghdr *msgs, unsigned int vlen, int flags);
	int (*getsockopt)(int fd, int level, int name, void *val, socklen_t *len);
	int (*getpeername)(int fd, struct sockaddr *addr, socklen_t *len);
	int (*fcntl_getfl)(int fd);
	/* Sets *id to what identifies the socket behind fd (its inode number);
	 * -ENOTSOCK if fd is not a socket. */
	int (*socket_id)(int fd, uint64_t *id);
	int (*poll)(struct pollfd *fds, nfds_t nfds, int timeout_ms);
	int (*close)(int fd);
	/* For a close that cannot wait: duplicates fd's socket to a new
	 * private fd, then puts an inert socket at fd's number in one step
	 * (dup3), so that the number stays taken but nothing sent there
	 * reaches anyone. Returns the private fd. */
	int (*hand_over)(int fd);
	/* Monotonic time in nanoseconds. */
	uint64_t (*now_ns)(void);
	/* Writes a diagnostic line (the log destination). */
	void (*log_write)(const char *buf, size_t len);
	/* Sends the n requests with one io_uring submission and waits until
	 * each has completed (every send is nonblocking, so none stays in
	 * flight), filling each result. Returns 0; or -EAGAIN if the ring
	 * cannot be used now (the requests that did not run keep
	 * CO_RING_UNSENT); or another -errno if it can never be used (the
	 * errno says why). NULL if there is no ring. */
	int (*ring_send_batch)(struct co_ring_req *reqs, int n);
	void *(*alloc)(size_t size);
	void *(*realloc)(void *ptr, size_t size);
	void (*free)(void *ptr);
};

#endif
