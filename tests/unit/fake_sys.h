/* A scriptable fake of the system call table (struct co_sys) for the unit
 * tests of core.
 *
 * Every fd below FAKE_MAX_FD can be given a fake socket: what it answers to
 * getsockopt(SO_TYPE, SO_DOMAIN, SO_PROTOCOL) and getpeername is chosen by
 * its kind. sendmsg appends what it accepts to the fd's "wire", a growable
 * buffer holding every byte ever sent on the fd in order, and can be
 * scripted call by call: accept at most N bytes, or fail with an errno, for
 * the next k calls. A socket can also be "full" (every call -EAGAIN) until a
 * number of poll calls has passed. The clock only moves when a test (or the
 * fake poll, by its timeout) moves it. Allocation can be made to fail.
 *
 * All of the fake's state is guarded by one mutex, so that it can be used by
 * several threads at once. */
#ifndef CO_TEST_FAKE_SYS_H
#define CO_TEST_FAKE_SYS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ctx.h"
#include "stream.h"
#include "sys.h"

#define FAKE_MAX_FD 2048

/* The clock's value after fake_reset: far from zero, so that a deadline
 * computed from it never looks like "no deadline". */
#define FAKE_CLOCK_START 1000000000000ull

enum fake_sock {
	FAKE_BADF = 0,        /* No such fd: every call fails with -EBADF. */
	FAKE_TCP,             /* A connected TCP socket (AF_INET). */
	FAKE_TCP6,            /* A connected TCP socket (AF_INET6). */
	FAKE_UNIX,            /* A connected Unix stream socket. */
	FAKE_UNIX_SEQPACKET,  /* A connected Unix SOCK_SEQPACKET socket. */
	FAKE_SCTP,            /* A connected SOCK_STREAM socket that is not TCP. */
	FAKE_UDP,             /* A connected UDP socket. */
	FAKE_TCP_UNCONNECTED, /* A TCP socket not connected yet (-ENOTCONN). */
	FAKE_NOT_SOCKET,      /* A pipe or a file (-ENOTSOCK). */
};

/* What one sendmsg (or writev) call was given and what it returned. */
struct fake_send_call {
	int fd;
	int flags;
	int iovcnt;
	int had_name;         /* msg_name or msg_control was set. */
	size_t offered;       /* Total bytes described by the iovecs. */
	ssize_t result;
	const void *last_base; /* Start of the last iovec, to tell copies apart. */
	size_t last_len;
};

/* Forgets every socket, script, wire, counter and log line, and sets the
 * clock to FAKE_CLOCK_START. */
void fake_reset(void);

/* The fake table, to give to co_ctx_init. */
const struct co_sys *fake_sys(void);

/* Makes fd a fake socket of the given kind (FAKE_BADF removes it), with a
 * new identity (what socket_id answers: a new inode). Its wire and script are
 * kept, so that a socket can be "connected" later. */
void fake_socket(int fd, enum fake_sock kind);

/* Makes newfd a duplicate of oldfd (dup2): one socket behind both numbers,
 * with one identity, one wire and one script, until fake_socket(newfd). */
void fake_dup(int newfd, int oldfd);

/* Makes the UDP socket fd offer GSO (getsockopt UDP_SEGMENT succeeds) if
 * max_segments is not 0: a send with a UDP_SEGMENT control message of more
 * segments fails with -EINVAL, as does one on a socket not offering it; if
 * err is not 0, every GSO send fails with -err. To be set before fd is
 * first used. */
void fake_udp_gso(int fd, int max_segments, int err);

/* The size of each datagram sent on the UDP socket fd so far, in order (a
 * GSO send counts as its segments), and, if ports is not NULL, the port of
 * each one's destination (0: no address, the connected peer). The pointers
 * are valid until the next call into the fake. Returns their number. */
size_t fake_dgrams(int fd, const uint32_t **lens, const uint16_t **ports);

/* The next calls sendmsg calls on fd accept at most max bytes each. */
void fake_send_limit(int fd, size_t max, int calls);

/* The next calls sendmsg calls on fd fail with -err (err is positive). */
void fake_send_error(int fd, int err, int calls);

/* The number of script steps (fake_send_limit, fake_send_error) given for
 * fd that its calls have not used up yet. */
int fake_script_left(int fd);

/* While full, every sendmsg on fd that no script step covers fails with
 * -EAGAIN, and poll reports fd as not writable. */
void fake_send_full(int fd, int full);

/* fd stops being full at the polls-th poll call on it from now (1: the next
 * one), which then reports it writable without waiting. */
void fake_poll_frees_after(int fd, int polls);

/* From now on, sendmsg calls on fd that carry MSG_DONTWAIT sometimes fail
 * with -EAGAIN and sometimes accept only part of their first iovec, chosen
 * by a generator seeded with seed. Calls without MSG_DONTWAIT (a blocking
 * socket) always take everything. */
void fake_send_chaos(int fd, unsigned seed);

/* Every byte sent on fd so far, in order. The pointer is valid until the next
 * call into the fake. */
const char *fake_wire(int fd, size_t *len);
size_t fake_wire_len(int fd);

/* Forgets every byte and call sendmsg has seen so far, on every fd (the
 * sockets, their scripts and the rest of the fake stay). */
void fake_forget_sends(void);

/* Number of sendmsg calls made on fd, whatever they returned. */
int fake_send_calls(int fd);

/* How many times core closed fd (sys.close), and whether sys.hand_over put
 * a placeholder there (sends to it then fail); the private fd hand_over
 * moves the socket to (a fake_dup of it). */
int fake_closes(int fd);
int fake_is_placeholder(int fd);
int fake_private_fd(void);

/* Number of sendmsg calls made on every fd; the last one made on any fd. */
int fake_send_calls_total(void);
struct fake_send_call fake_last_call(void);

/* Number of sendmsg calls that described no bytes at all. */
int fake_empty_sends(void);

/* Number of writev calls (core is expected to use sendmsg only). */
int fake_writev_calls(void);
/* sendmmsg calls made (each message is also counted as a send). */
int fake_sendmmsg_calls(void);

/* The fake io_uring (sys.ring_send_batch) sends each request with the
 * fd's fake sendmsg (its scripts apply, and it counts as one of its send
 * calls). fake_ring_fail makes its next call run only the first run_first
 * requests, then return -err (EAGAIN: not now; any other: never again). */
void fake_ring_fail(int err, int run_first);
/* fn(arg) runs inside each ring call, before the requests (as a signal
 * handler would that interrupts the batch); NULL: nothing. */
void fake_ring_during(void (*fn)(void *arg), void *arg);
/* Ring calls so far, and the requests they were given. */
int fake_ring_calls(void);
int fake_ring_requests(void);

/* Number of getsockopt, getpeername and socket_id calls made on fd. */
int fake_classify_calls(int fd);

/* The clock. */
uint64_t fake_clock(void);
void fake_clock_set(uint64_t ns);
void fake_clock_advance(uint64_t ns);

/* poll calls so far; the fd and events of the last one. A poll call that
 * finds no fd ready advances the clock by its whole timeout, as if it had
 * waited; one that finds an fd ready returns at once. */
int fake_poll_calls(void);
int fake_poll_last_fd(void);
short fake_poll_last_events(void);

/* The next calls alloc (or realloc) calls fail. */
void fake_fail_alloc(int calls);
void fake_fail_realloc(int calls);
int fake_alloc_calls(void);
int fake_realloc_calls(void);

/* Everything written through log_write so far, NUL-terminated, and the
 * number of log_write calls. */
const char *fake_log(void);
int fake_log_calls(void);

/* The settings a test starts from: the documented defaults. */
void fake_config(struct co_config *cfg);

/* A context on the fake table with the given settings (NULL: fake_config),
 * and its release (every queue buffer and fd table chunk). */
struct co_ctx *fake_ctx_new(const struct co_config *cfg);
void fake_ctx_free(struct co_ctx *ctx);

/* One application write of len bytes from buf: co_write with one iovec. */
/* co_write, releasing the fd at once when it is handed back: for tests that
 * look only at the decision, not at the libc call that would follow. */
ssize_t co_write_now(struct co_ctx *ctx, int fd, const struct iovec *iov, int iovcnt,
		     int flags, unsigned how);
ssize_t test_write(struct co_ctx *ctx, int fd, const void *buf, size_t len, int flags);

/* Fills buf with bytes that depend on seed and on their position, so that a
 * misplaced or repeated byte shows. */
void fill_pattern(void *buf, size_t len, unsigned seed);

#endif
