/* dgram_errors: the errors and options of datagram sends, under the shim
 * as without it.
 *
 * upfront: sends that fail at once without the shim fail at once under it,
 *   with the same errno (the parent makes every call itself first, without
 *   the shim, to learn the result): no destination on an unconnected socket
 *   (EDESTADDRREQ, ENOTCONN), too large (EMSGSIZE: over 65507 bytes on
 *   UDP/IPv4, 65527 on IPv6, over the send buffer on Unix), broadcast
 *   without SO_BROADCAST (EACCES), a bad address family or length (EINVAL,
 *   EAFNOSUPPORT), port 0, Unix names nobody has (ENOENT, ECONNREFUSED),
 *   MSG_OOB, 1025 iovecs; and the calls that succeed although they look
 *   odd (NULL address with a length, AF_UNSPEC, 65507 bytes, 1024 iovecs,
 *   an IPv4 address on an IPv6 socket, broadcast with SO_BROADCAST, a
 *   sendmmsg of 1030 messages, which sends 1024), including sendmmsg with a
 *   bad message in the middle (the messages before it are sent). Each call
 *   comes between datagrams on the same socket, which must arrive in order
 *   around the call's own, if it succeeded.
 * refused: UDP connected to a closed port. ECONNREFUSED (the kernel's ICMP
 *   answer, sticky on the socket) must come back on some later send, never
 *   hang, and the datagrams to a live destination on another socket arrive,
 *   before and after; once the error is reported, the port opened again and
 *   SO_ERROR read, the same socket delivers everything. A Unix datagram
 *   socket whose peer closes, and a SOCK_SEQPACKET one, must report
 *   ECONNREFUSED/ENOTCONN and EPIPE.
 * flags: MSG_CONFIRM, MSG_DONTROUTE, MSG_DONTWAIT and MSG_NOSIGNAL are
 *   accepted, empty datagrams are datagrams, MSG_MORE and UDP_CORK join
 *   pieces into one UDP datagram (and MSG_MORE does not on Unix): everything
 *   arrives in order with the rest.
 * tos: setsockopt(IP_TOS / IPV6_TCLASS) between sends, and a TOS control
 *   message on single sends: each datagram carries the value in force when
 *   it was sent.
 * eagain: a nonblocking Unix socketpair whose reader does not read: sends
 *   succeed at least as long as the kernel alone takes them, then EAGAIN,
 *   and again EAGAIN while nothing is read; after that every datagram
 *   accepted arrives, once, in order.
 * Every part that sends datagrams that could be queued requires the stats
 * to show datagrams queued. */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define NAME "dgram_errors"
#define IDLE_MS 3000
#define GIVE_UP_NS 3000000000ULL /* a sticky error must come back within 3 s */

static int have6;

/* ---- shared by the writers ---------------------------------------------------------------- */

static void sleep_us(long us)
{
	struct timespec ts = { 0, us * 1000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Reads a line (at most size - 1 bytes) from fd; fails at EOF. */
static void read_line(int fd, char *buf, size_t size, const char *what)
{
	size_t n = 0;

	while (n < size - 1) {
		if (co_read_full(fd, buf + n, 1, what) != 1)
			co_fail("%s: closed", what);
		if (buf[n] == '\n')
			break;
		n++;
	}
	buf[n] = '\0';
}

static void wait_ack(int fd)
{
	char ack;

	if (co_read_full(fd, &ack, 1, "ack pipe") != 1)
		co_fail("the receiver closed the acknowledgment pipe");
}

static void send_ack(int fd)
{
	co_write_all(fd, "a", 1, "ack pipe");
}

/* A datagram of the test: fills buf and sends it on fd, to addr unless
 * NULL; fails unless it was sent whole. */
static void send_dgram(int fd, const struct sockaddr_storage *addr, socklen_t alen,
		       unsigned writer, unsigned dest, uint32_t seq, size_t len)
{
	unsigned char buf[2048];
	ssize_t r;

	co_dgram_fill(buf, len, writer, dest, seq);
	if (addr)
		r = sendto(fd, buf, len, 0, (const struct sockaddr *)addr, alen);
	else
		r = send(fd, buf, len, 0);
	if (r != (ssize_t)len)
		co_fail("writer %u: datagram %u of %zu bytes to receiver %u returned %zd (%s)", writer,
			seq, len, dest, r, r < 0 ? strerror(errno) : "short");
}

static const char *errname(int e)
{
	const char *s = strerrorname_np(e);

	if (e == 0)
		return "no error";
	return s ? s : "an unknown errno";
}

/* ---- upfront: errors a send reports at once ------------------------------------------------ */

/* Receivers by role: the dest id of a datagram is its role. RXB is bound to
 * 0.0.0.0 (broadcast reaches it); RXS is a Unix stream listener. */
enum role { RX4, RX6, RXU, RXB, RXS, NROLES };

enum call { C_SEND, C_WRITE, C_SENDTO, C_SENDMSG, C_WRITEV, C_SENDMMSG };

enum addr_kind {
	A_NONE,    /* no address */
	A_DEST,    /* the destination's address */
	A_NULL16,  /* a NULL pointer with length 16 (the kernel ignores it) */
	A_LEN0,    /* the destination's address with length 0 */
	A_INET6,   /* an IPv6 address */
	A_INET,    /* an IPv4 address (on a Unix socket) */
	A_SHORT,   /* the destination's address, cut short */
	A_LONG,    /* length 129: more than a sockaddr_storage */
	A_UNSPEC,  /* the destination's address, family AF_UNSPEC */
	A_PORT0,   /* loopback, port 0 */
	A_BCAST,   /* 127.255.255.255, RXB's port */
	A_MISSING, /* a Unix path that does not exist */
	A_NOBODY,  /* an abstract Unix name nobody has */
	A_STREAM,  /* a Unix stream listener */
};

enum prep { P_NONE, P_BROADCAST, P_SNDBUF };

/* One byte more than the send buffer of the socket. */
#define OVER_SNDBUF ((size_t)-1)

struct xcase {
	const char *name;
	int family;    /* of the sending socket */
	int dest;      /* the role its datagrams go to */
	int connected; /* it connects to dest first */
	int prep;
	int call;
	int addr;
	size_t len;    /* of the call's datagram(s) */
	int flags;
	int count;     /* iovecs (C_SENDMSG, C_WRITEV) or messages (C_SENDMMSG) */
	int bad;       /* C_SENDMMSG: the message (from 1) that differs */
	int badaddr;
	size_t badlen;
};

static const struct xcase cases[] = {
	{ "udp4 send, unconnected", AF_INET, RX4, 0, P_NONE, C_SEND, A_NONE, 64, 0, 1, 0, 0, 0 },
	{ "udp4 write, unconnected", AF_INET, RX4, 0, P_NONE, C_WRITE, A_NONE, 64, 0, 1, 0, 0, 0 },
	{ "udp4 sendmsg without address, unconnected", AF_INET, RX4, 0, P_NONE, C_SENDMSG, A_NONE,
	  64, 0, 1, 0, 0, 0 },
	{ "udp4 sendto NULL address of length 16, unconnected", AF_INET, RX4, 0, P_NONE, C_SENDTO,
	  A_NULL16, 64, 0, 1, 0, 0, 0 },
	{ "udp4 sendto NULL address of length 16, connected", AF_INET, RX4, 1, P_NONE, C_SENDTO,
	  A_NULL16, 64, 0, 1, 0, 0, 0 },
	{ "udp4 sendmsg NULL name of length 16, connected", AF_INET, RX4, 1, P_NONE, C_SENDMSG,
	  A_NULL16, 64, 0, 1, 0, 0, 0 },
	{ "udp4 sendmsg name of length 0, connected", AF_INET, RX4, 1, P_NONE, C_SENDMSG, A_LEN0,
	  64, 0, 1, 0, 0, 0 },
	{ "udp4 sendto address of length 0, connected", AF_INET, RX4, 1, P_NONE, C_SENDTO, A_LEN0,
	  64, 0, 1, 0, 0, 0 },
	{ "udp4 sendto 65507 bytes", AF_INET, RX4, 0, P_NONE, C_SENDTO, A_DEST, 65507, 0, 1, 0, 0,
	  0 },
	{ "udp4 sendto 65508 bytes", AF_INET, RX4, 0, P_NONE, C_SENDTO, A_DEST, 65508, 0, 1, 0, 0,
	  0 },
	{ "udp4 send 65508 bytes, connected", AF_INET, RX4, 1, P_NONE, C_SEND, A_NONE, 65508, 0, 1,
	  0, 0, 0 },
	{ "udp4 writev of 65508 bytes in 3 iovecs, connected", AF_INET, RX4, 1, P_NONE, C_WRITEV,
	  A_NONE, 65508, 0, 3, 0, 0, 0 },
	{ "udp4 writev of 1024 iovecs, connected", AF_INET, RX4, 1, P_NONE, C_WRITEV, A_NONE, 1024,
	  0, 1024, 0, 0, 0 },
	{ "udp4 writev of 1025 iovecs, connected", AF_INET, RX4, 1, P_NONE, C_WRITEV, A_NONE, 1025,
	  0, 1025, 0, 0, 0 },
	{ "udp4 sendmsg of 1025 iovecs, connected", AF_INET, RX4, 1, P_NONE, C_SENDMSG, A_NONE,
	  1025, 0, 1025, 0, 0, 0 },
	{ "udp4 sendto 127.255.255.255 without SO_BROADCAST", AF_INET, RXB, 0, P_NONE, C_SENDTO,
	  A_BCAST, 64, 0, 1, 0, 0, 0 },
	{ "udp4 sendto 127.255.255.255 with SO_BROADCAST", AF_INET, RXB, 0, P_BROADCAST, C_SENDTO,
	  A_BCAST, 64, 0, 1, 0, 0, 0 },
	{ "udp4 sendto an IPv6 address", AF_INET, RX4, 0, P_NONE, C_SENDTO, A_INET6, 64, 0, 1, 0, 0,
	  0 },
	{ "udp4 sendto an address of length 4", AF_INET, RX4, 0, P_NONE, C_SENDTO, A_SHORT, 64, 0,
	  1, 0, 0, 0 },
	{ "udp4 sendto an address of length 129", AF_INET, RX4, 0, P_NONE, C_SENDTO, A_LONG, 64, 0,
	  1, 0, 0, 0 },
	{ "udp4 sendto an AF_UNSPEC address", AF_INET, RX4, 0, P_NONE, C_SENDTO, A_UNSPEC, 64, 0, 1,
	  0, 0, 0 },
	{ "udp4 sendto port 0", AF_INET, RX4, 0, P_NONE, C_SENDTO, A_PORT0, 64, 0, 1, 0, 0, 0 },
	{ "udp4 send MSG_OOB, connected", AF_INET, RX4, 1, P_NONE, C_SEND, A_NONE, 64, MSG_OOB, 1,
	  0, 0, 0 },
	{ "udp4 sendmmsg [ok, 65508 bytes, ok], connected", AF_INET, RX4, 1, P_NONE, C_SENDMMSG,
	  A_NONE, 64, 0, 3, 2, A_NONE, 65508 },
	{ "udp4 sendmmsg [65508 bytes, ok], connected", AF_INET, RX4, 1, P_NONE, C_SENDMMSG, A_NONE,
	  64, 0, 2, 1, A_NONE, 65508 },
	{ "udp4 sendmmsg [ok, IPv6 address, ok], unconnected", AF_INET, RX4, 0, P_NONE, C_SENDMMSG,
	  A_DEST, 64, 0, 3, 2, A_INET6, 64 },
	{ "udp4 sendmmsg of 1030 messages, connected", AF_INET, RX4, 1, P_NONE, C_SENDMMSG, A_NONE,
	  20, 0, 1030, 0, 0, 0 },
	{ "udp6 send, unconnected", AF_INET6, RX6, 0, P_NONE, C_SEND, A_NONE, 64, 0, 1, 0, 0, 0 },
	{ "udp6 sendto 65527 bytes", AF_INET6, RX6, 0, P_NONE, C_SENDTO, A_DEST, 65527, 0, 1, 0, 0,
	  0 },
	{ "udp6 sendto 65528 bytes", AF_INET6, RX6, 0, P_NONE, C_SENDTO, A_DEST, 65528, 0, 1, 0, 0,
	  0 },
	{ "udp6 sendto an address of length 20", AF_INET6, RX6, 0, P_NONE, C_SENDTO, A_SHORT, 64, 0,
	  1, 0, 0, 0 },
	{ "udp6 sendto port 0", AF_INET6, RX6, 0, P_NONE, C_SENDTO, A_PORT0, 64, 0, 1, 0, 0, 0 },
	{ "udp6 sendto an IPv4 address", AF_INET6, RX4, 0, P_NONE, C_SENDTO, A_DEST, 64, 0, 1, 0, 0,
	  0 },
	{ "unix send, unconnected", AF_UNIX, RXU, 0, P_NONE, C_SEND, A_NONE, 64, 0, 1, 0, 0, 0 },
	{ "unix sendto a missing path", AF_UNIX, RXU, 0, P_NONE, C_SENDTO, A_MISSING, 64, 0, 1, 0,
	  0, 0 },
	{ "unix sendto an abstract name nobody has", AF_UNIX, RXU, 0, P_NONE, C_SENDTO, A_NOBODY,
	  64, 0, 1, 0, 0, 0 },
	{ "unix sendto a stream socket", AF_UNIX, RXU, 0, P_NONE, C_SENDTO, A_STREAM, 64, 0, 1, 0,
	  0, 0 },
	{ "unix sendto an AF_INET address", AF_UNIX, RXU, 0, P_NONE, C_SENDTO, A_INET, 64, 0, 1, 0,
	  0, 0 },
	{ "unix sendto an address of length 129", AF_UNIX, RXU, 0, P_NONE, C_SENDTO, A_LONG, 64, 0,
	  1, 0, 0, 0 },
	{ "unix sendto one byte over the send buffer", AF_UNIX, RXU, 0, P_SNDBUF, C_SENDTO, A_DEST,
	  OVER_SNDBUF, 0, 1, 0, 0, 0 },
	{ "unix send one byte over the send buffer, connected", AF_UNIX, RXU, 1, P_SNDBUF, C_SEND,
	  A_NONE, OVER_SNDBUF, 0, 1, 0, 0, 0 },
	{ "unix sendmmsg [ok, missing path, ok]", AF_UNIX, RXU, 0, P_NONE, C_SENDMMSG, A_DEST, 64,
	  0, 3, 2, A_MISSING, 64 },
};
#define NCASES (int)(sizeof(cases) / sizeof(cases[0]))
#define XMAX 1030 /* datagrams of one call */

struct env {
	struct sockaddr_storage a[NROLES];
	socklen_t len[NROLES];
};

/* The call under test: its datagrams (numbered from 2: two come before). */
struct xcall {
	int n;
	size_t len[XMAX];
	unsigned char *data[XMAX];
	struct sockaddr_storage addr[XMAX];
	socklen_t alen[XMAX];
	int nullname[XMAX];
	struct mmsghdr mm[XMAX];
	struct iovec iov[1025];
};

static int case_skipped(int i)
{
	return !have6 && (cases[i].family == AF_INET6 || cases[i].dest == RX6);
}

/* The sizes of the two datagrams before the call (k 0, 1) and after it
 * (k 2, 3). */
static size_t around_len(int i, int k)
{
	struct co_rng r;
	size_t len = 0;
	int j;

	co_rng_init(&r, co_seed, 500 + (uint64_t)i);
	for (j = 0; j <= k; j++)
		len = co_range(&r, CO_DGRAM_HDR, 300);
	return len;
}

/* Builds the address kind for a socket of family going to dest. */
static void build_addr(int kind, int family, int dest, const struct env *e,
		       struct sockaddr_storage *ss, socklen_t *len, int *null)
{
	struct sockaddr_in *in = (struct sockaddr_in *)ss;

	*null = kind == A_NULL16 || kind == A_NONE;
	memset(ss, 0, sizeof(*ss));
	*len = kind == A_NULL16 ? 16 : 0;
	switch (kind) {
	case A_DEST:
	case A_LEN0:
	case A_SHORT:
	case A_UNSPEC:
	case A_LONG:
		memcpy(ss, &e->a[dest], e->len[dest]);
		*len = kind == A_LEN0 ? 0 : kind == A_LONG ? 129 : e->len[dest];
		if (kind == A_SHORT)
			*len = family == AF_INET6 ? 20 : 4;
		if (kind == A_UNSPEC)
			ss->ss_family = AF_UNSPEC;
		break;
	case A_INET6:
		*len = co_addr_parse("6:9", ss);
		break;
	case A_INET:
		*len = co_addr_parse("4:9", ss);
		break;
	case A_PORT0:
		*len = co_addr_parse(family == AF_INET6 ? "6:0" : "4:0", ss);
		break;
	case A_BCAST:
		memcpy(ss, &e->a[RXB], e->len[RXB]);
		in->sin_addr.s_addr = htonl(0x7fffffff);
		*len = sizeof(*in);
		break;
	case A_MISSING:
		*len = co_addr_parse("u:/nonexistent-coalesce-test/socket", ss);
		break;
	case A_NOBODY:
		*len = co_addr_parse("u:@coalesce-it-nobody-listens-here", ss);
		break;
	case A_STREAM:
		memcpy(ss, &e->a[RXS], e->len[RXS]);
		*len = e->len[RXS];
		break;
	default:
		break;
	}
}

/* Prepares the call's datagram j: len bytes, address kind. */
static void xcall_add(struct xcall *x, int i, size_t len, int kind, const struct env *e)
{
	const struct xcase *c = &cases[i];
	int j = x->n++;

	x->len[j] = len;
	x->data[j] = malloc(len ? len : 1);
	if (!x->data[j])
		co_fail("out of memory");
	co_dgram_fill(x->data[j], len, (unsigned)i, (unsigned)c->dest, (uint32_t)(2 + j));
	build_addr(kind, c->family, c->dest, e, &x->addr[j], &x->alen[j], &x->nullname[j]);
}

static void xcall_free(struct xcall *x)
{
	int j;

	for (j = 0; j < x->n; j++)
		free(x->data[j]);
	x->n = 0;
}

/* Splits datagram 0 into count iovecs (the last takes the rest). */
static int xcall_iov(struct xcall *x, int count)
{
	size_t each = x->len[0] / (size_t)count, off = 0;
	int k;

	for (k = 0; k < count; k++) {
		x->iov[k].iov_base = x->data[0] + off;
		x->iov[k].iov_len = k == count - 1 ? x->len[0] - off : each;
		off += x->iov[k].iov_len;
	}
	return count;
}

static void xcall_msghdr(struct xcall *x, int j, struct msghdr *mh, struct iovec *iov, int n)
{
	memset(mh, 0, sizeof(*mh));
	mh->msg_name = x->nullname[j] ? NULL : &x->addr[j];
	mh->msg_namelen = x->alen[j];
	mh->msg_iov = iov;
	mh->msg_iovlen = (size_t)n;
}

static ssize_t make_call(int fd, int i, struct xcall *x)
{
	const struct xcase *c = &cases[i];
	const struct sockaddr *sa = x->nullname[0] ? NULL : (struct sockaddr *)&x->addr[0];
	struct iovec one[XMAX];
	struct msghdr mh;
	int j;

	switch (c->call) {
	case C_SEND:
		return send(fd, x->data[0], x->len[0], c->flags);
	case C_WRITE:
		return write(fd, x->data[0], x->len[0]);
	case C_SENDTO:
		return sendto(fd, x->data[0], x->len[0], c->flags, sa, x->alen[0]);
	case C_SENDMSG:
		xcall_msghdr(x, 0, &mh, x->iov, xcall_iov(x, c->count));
		return sendmsg(fd, &mh, c->flags);
	case C_WRITEV:
		return writev(fd, x->iov, xcall_iov(x, c->count));
	default:
		for (j = 0; j < x->n; j++) {
			one[j].iov_base = x->data[j];
			one[j].iov_len = x->len[j];
			xcall_msghdr(x, j, &x->mm[j].msg_hdr, &one[j], 1);
		}
		return sendmmsg(fd, x->mm, (unsigned)x->n, c->flags);
	}
}

static int case_socket(int i, const struct env *e)
{
	const struct xcase *c = &cases[i];
	int fd = socket(c->family, SOCK_DGRAM | SOCK_CLOEXEC, 0), one = 1, small = 4096;

	if (fd < 0)
		co_fail("%s: socket: %s", c->name, strerror(errno));
	if (c->prep == P_BROADCAST &&
	    setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof(one)) < 0)
		co_fail("%s: SO_BROADCAST: %s", c->name, strerror(errno));
	if (c->prep == P_SNDBUF && setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)) < 0)
		co_fail("%s: SO_SNDBUF: %s", c->name, strerror(errno));
	if (c->connected && connect(fd, (struct sockaddr *)&e->a[c->dest], e->len[c->dest]) < 0)
		co_fail("%s: connect: %s", c->name, strerror(errno));
	return fd;
}

static void send_around(int fd, int i, const struct env *e, uint32_t seq, int k)
{
	const struct xcase *c = &cases[i];

	send_dgram(fd, c->connected ? NULL : &e->a[c->dest], e->len[c->dest], (unsigned)i,
		   (unsigned)c->dest, seq, around_len(i, k));
}

/* Runs case i: two datagrams, the call, two datagrams, on one socket.
 * Leaves the call's datagrams in x; returns its result and errno. */
static ssize_t run_case(int i, const struct env *e, struct xcall *x, int *err)
{
	const struct xcase *c = &cases[i];
	int fd = case_socket(i, e), j;
	size_t len = c->len;
	ssize_t r;

	if (len == OVER_SNDBUF) {
		int sb = 0;
		socklen_t l = sizeof(sb);

		if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sb, &l) < 0)
			co_fail("getsockopt(SO_SNDBUF): %s", strerror(errno));
		len = (size_t)sb - 31; /* the kernel refuses more than sndbuf - 32 */
	}
	send_around(fd, i, e, 0, 0);
	send_around(fd, i, e, 1, 1);
	for (j = 0; j < c->count && (c->call == C_SENDMMSG || j == 0); j++) {
		if (j + 1 == c->bad)
			xcall_add(x, i, c->badlen, c->badaddr, e);
		else
			xcall_add(x, i, len, c->addr, e);
	}
	errno = 0;
	r = make_call(fd, i, x);
	*err = r < 0 ? errno : 0;
	send_around(fd, i, e, (uint32_t)(2 + x->n), 2);
	send_around(fd, i, e, (uint32_t)(3 + x->n), 3);
	if (close(fd) < 0)
		co_fail("%s: close: %s", c->name, strerror(errno));
	return r;
}

/* The datagrams of case i that must arrive, given the call's result. */
static uint64_t expect_case(struct co_dgram_check *k, int i, const struct xcall *x, ssize_t r)
{
	const struct xcase *c = &cases[i];
	int arrived = c->call == C_SENDMMSG ? (r > 0 ? (int)r : 0) : r >= 0, j;
	unsigned d = (unsigned)c->dest, w = (unsigned)i;
	uint64_t total;

	co_dgram_expect(k, w, d, 0, around_len(i, 0), -1);
	co_dgram_expect(k, w, d, 1, around_len(i, 1), -1);
	for (j = 0; j < arrived; j++)
		co_dgram_expect(k, w, d, (uint32_t)(2 + j), x->len[j], -1);
	co_dgram_expect(k, w, d, (uint32_t)(2 + x->n), around_len(i, 2), -1);
	total = co_dgram_expect(k, w, d, (uint32_t)(3 + x->n), around_len(i, 3), -1);
	return total;
}

/* Arguments: the addresses of the roles ("-" for none). Fds: 3 the result
 * pipe, 4 the acknowledgment pipe. */
static void upfront_child(char **argv)
{
	static struct xcall x;
	struct env e;
	char line[128];
	ssize_t r;
	int i, err;

	memset(&e, 0, sizeof(e));
	for (i = 0; i < NROLES; i++)
		if (strcmp(argv[i], "-") != 0)
			e.len[i] = co_addr_parse(argv[i], &e.a[i]);
	have6 = e.len[RX6] && e.a[RX6].ss_family == AF_INET6;
	for (i = 0; i < NCASES; i++) {
		if (case_skipped(i))
			continue;
		r = run_case(i, &e, &x, &err);
		xcall_free(&x);
		snprintf(line, sizeof(line), "%d %zd %d\n", i, r, err);
		co_write_all(3, line, strlen(line), "result pipe");
		wait_ack(4);
	}
}

/* The receivers of one pass (RX6 is a stand-in IPv4 socket, unused, when
 * there is no IPv6, so that roles stay dest ids). */
struct rxset {
	struct co_dgram_check *k;
	struct env e;
	char text[NROLES][128];
	int listener;
};

static void rxset_open(struct rxset *s, const char *what)
{
	struct sockaddr_storage any;
	int fd, role;

	memset(s, 0, sizeof(*s));
	s->k = co_dgram_check_new(what);
	for (role = RX4; role <= RXB; role++) {
		if (role == RXB) {
			fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
			co_addr_parse("4:0", &any);
			((struct sockaddr_in *)&any)->sin_addr.s_addr = htonl(INADDR_ANY);
			if (fd < 0 || bind(fd, (struct sockaddr *)&any, sizeof(struct sockaddr_in)) < 0)
				co_fail("bind 0.0.0.0: %s", strerror(errno));
		} else {
			fd = co_dgram_socket(role == RX4 || (role == RX6 && !have6) ? AF_INET
						: role == RX6 ? AF_INET6 : AF_UNIX,
					     0, NULL, NULL);
		}
		co_dgram_rx_setup(fd);
		co_dgram_add_rx(s->k, fd);
		s->e.len[role] = sizeof(s->e.a[role]);
		if (getsockname(fd, (struct sockaddr *)&s->e.a[role], &s->e.len[role]) < 0)
			co_fail("getsockname: %s", strerror(errno));
		co_addr_format(&s->e.a[role], s->e.len[role], s->text[role], sizeof(s->text[0]));
	}
	/* A Unix stream listener, bound to an abstract name of the kernel's
	 * choice (autobind). */
	s->listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	s->e.a[RXS].ss_family = AF_UNIX;
	if (s->listener < 0 ||
	    bind(s->listener, (struct sockaddr *)&s->e.a[RXS], sizeof(sa_family_t)) < 0 ||
	    listen(s->listener, 1) < 0)
		co_fail("unix stream listener: %s", strerror(errno));
	s->e.len[RXS] = sizeof(s->e.a[RXS]);
	if (getsockname(s->listener, (struct sockaddr *)&s->e.a[RXS], &s->e.len[RXS]) < 0)
		co_fail("getsockname: %s", strerror(errno));
	co_addr_format(&s->e.a[RXS], s->e.len[RXS], s->text[RXS], sizeof(s->text[0]));
	if (!have6)
		snprintf(s->text[RX6], sizeof(s->text[RX6]), "-");
}

static void rxset_close(struct rxset *s)
{
	co_dgram_finish(s->k);
	co_dgram_check_free(s->k);
	close(s->listener);
}

/* Every call first without the shim, in the parent (which learns the
 * results and checks its own receivers), then by the child under the
 * shim, which reports each result and waits for the receiver to have
 * checked that case's datagrams. */
static void upfront(void)
{
	static struct xcall x;
	static ssize_t plain_r[NCASES];
	static int plain_err[NCASES];
	static uint64_t upto[NCASES];
	struct rxset p, s;
	struct co_child c;
	struct co_fdmap map[2];
	const char *args[NROLES + 2];
	char line[128];
	long long r;
	int res[2], ack[2], i, ci, err;
	uint64_t ptotal;

	rxset_open(&p, "upfront without the shim");
	rxset_open(&s, "upfront");
	for (i = 0; i < NCASES; i++) {
		if (case_skipped(i))
			continue;
		co_phase("upfront: %s, without the shim", cases[i].name);
		plain_r[i] = run_case(i, &p.e, &x, &plain_err[i]);
		ptotal = expect_case(p.k, i, &x, plain_r[i]);
		upto[i] = expect_case(s.k, i, &x, plain_r[i]);
		xcall_free(&x);
		co_dgram_recv_until(p.k, ptotal, IDLE_MS);
		co_info("upfront: %s: %zd %s", cases[i].name, plain_r[i], errname(plain_err[i]));
	}
	rxset_close(&p);

	args[0] = "upfront";
	for (i = 0; i < NROLES; i++)
		args[1 + i] = s.text[i];
	args[1 + NROLES] = NULL;
	if (pipe2(res, O_CLOEXEC) < 0 || pipe2(ack, O_CLOEXEC) < 0)
		co_fail("pipe: %s", strerror(errno));
	map[0].from = res[1];
	map[0].to = 3;
	map[1].from = ack[0];
	map[1].to = 4;
	co_spawn(&c, args, map, 2, NULL, 1);
	close(res[1]);
	close(ack[0]);
	for (i = 0; i < NCASES; i++) {
		if (case_skipped(i))
			continue;
		co_phase("upfront: %s, under the shim", cases[i].name);
		read_line(res[0], line, sizeof(line), "result pipe");
		if (sscanf(line, "%d %lld %d", &ci, &r, &err) != 3 || ci != i)
			co_fail("upfront: bad result line \"%s\" for case %d", line, i);
		if (r != plain_r[i] || err != plain_err[i])
			co_fail("upfront: %s: without the shim the call returned %zd (%s), under the shim %lld (%s)",
				cases[i].name, plain_r[i], errname(plain_err[i]), r, errname(err));
		co_dgram_recv_until(s.k, upto[i], IDLE_MS);
		send_ack(ack[1]);
	}
	co_wait_ok(&c, "upfront");
	rxset_close(&s);
	co_dgram_expect_coalesced(&c, 0, "upfront");
	close(res[0]);
	close(ack[1]);
}

/* ---- refused: deferred errors ---------------------------------------------------------------- */

/* Writer ids: L the live destination, X the closed port, Y the same socket
 * once the port is open again. Dest ids: 0 live, 1 the reopened port. */
enum { W_L, W_X, W_Y };

static int connected_socket(const struct sockaddr_storage *a, socklen_t len)
{
	int fd = socket(a->ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (fd < 0 || connect(fd, (const struct sockaddr *)a, len) < 0)
		co_fail("connected datagram socket: %s", strerror(errno));
	return fd;
}

/* Clears what is pending in SO_ERROR (the kernel's, and any the shim kept). */
static void clear_so_error(int fd)
{
	int e = 1, tries = 0;
	socklen_t l;

	while (e != 0 && tries++ < 100) {
		l = sizeof(e);
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &l) < 0)
			co_fail("getsockopt(SO_ERROR): %s", strerror(errno));
	}
	if (e)
		co_fail("SO_ERROR still %s after 100 reads", errname(e));
}

/* The size of datagram seq to the live receiver (and, from 1000 on, to the
 * reopened port). */
static size_t live_len(uint32_t seq)
{
	return CO_DGRAM_HDR + co_mix64(co_seed ^ seq) % 49;
}

/* Sends on the live socket and on the one connected to the closed port,
 * 100 us apart, until a send on the latter fails with ECONNREFUSED.
 * Returns how many datagrams went to the live one; *xsent gets how many
 * sends to the closed port succeeded, *us how long it took. */
static uint32_t until_refused(int l, int x, uint32_t *xsent, uint64_t *us)
{
	uint64_t t0 = co_now_ns();
	uint32_t nl = 0, nx = 0;
	unsigned char buf[64];
	ssize_t r;

	for (;;) {
		send_dgram(l, NULL, 0, W_L, 0, nl, live_len(nl));
		nl++;
		co_dgram_fill(buf, sizeof(buf), W_X, 1, nx);
		r = send(x, buf, sizeof(buf), 0);
		if (r < 0 && errno == ECONNREFUSED)
			break;
		if (r != (ssize_t)sizeof(buf))
			co_fail("send to the closed port returned %zd (%s), expected success or ECONNREFUSED",
				r, r < 0 ? strerror(errno) : "short");
		nx++;
		if (co_now_ns() - t0 > GIVE_UP_NS)
			co_fail("no ECONNREFUSED after %u sends to a closed port in 3 s", nx);
		sleep_us(100);
	}
	*xsent = nx;
	*us = (co_now_ns() - t0) / 1000;
	return nl;
}

/* Arguments: the live address, the closed one. Fds: 3 report pipe, 4 ack
 * pipe. */
static void refused_udp_child(char **argv)
{
	struct sockaddr_storage live, closed;
	socklen_t llen = co_addr_parse(argv[0], &live), clen = co_addr_parse(argv[1], &closed);
	int l = connected_socket(&live, llen), x = connected_socket(&closed, clen), i;
	uint32_t nl, nx;
	uint64_t us;
	char line[64];

	nl = until_refused(l, x, &nx, &us);
	for (i = 0; i < 10; i++, nl++)
		send_dgram(l, NULL, 0, W_L, 0, nl, live_len(nl));
	/* A wait sends whatever is queued; late ICMP answers have 20 ms to
	 * come back, then the error is read away. */
	poll(NULL, 0, 20);
	clear_so_error(x);
	snprintf(line, sizeof(line), "%u %u %llu\n", nl, nx, (unsigned long long)us);
	co_write_all(3, line, strlen(line), "report pipe");
	wait_ack(4);
	for (i = 0; i < 50; i++)
		send_dgram(x, NULL, 0, W_Y, 1, (uint32_t)i, live_len((uint32_t)i + 1000));
	for (i = 0; i < 10; i++, nl++)
		send_dgram(l, NULL, 0, W_L, 0, nl, live_len(nl));
}

/* Sends on fd until a send fails; the errno must be ok1 or ok2. */
static int until_error(int fd, int flags, int ok1, int ok2, const char *what)
{
	uint64_t t0 = co_now_ns();
	unsigned n = 0;

	for (;;) {
		ssize_t r = send(fd, "datagram", 8, flags);

		if (r < 0) {
			if (errno != ok1 && errno != ok2)
				co_fail("%s: send failed with %s, expected %s or %s", what,
					errname(errno), errname(ok1), errname(ok2));
			return errno;
		}
		if (co_now_ns() - t0 > GIVE_UP_NS)
			co_fail("%s: %u sends in 3 s and none failed", what, n);
		n++;
		sleep_us(100);
	}
}

static void peer_gone_child(void)
{
	struct sockaddr_storage a;
	socklen_t len;
	int rx = co_dgram_socket(AF_UNIX, 0, &a, &len), s = connected_socket(&a, len), sv[2], i;

	for (i = 0; i < 5; i++)
		send_dgram(s, NULL, 0, 0, 0, (uint32_t)i, 32);
	close(rx);
	co_info("unix datagram, peer closed: %s",
		errname(until_error(s, 0, ECONNREFUSED, ENOTCONN, "unix datagram, peer closed")));
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		co_fail("socketpair: %s", strerror(errno));
	for (i = 0; i < 5; i++)
		send_dgram(sv[0], NULL, 0, 0, 0, (uint32_t)i, 32);
	close(sv[1]);
	until_error(sv[0], MSG_NOSIGNAL, EPIPE, ECONNRESET, "seqpacket, peer closed");
	if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv) < 0)
		co_fail("socketpair: %s", strerror(errno));
	for (i = 0; i < 5; i++)
		send_dgram(sv[0], NULL, 0, 0, 0, (uint32_t)i, 32);
	close(sv[1]);
	until_error(sv[0], 0, ECONNREFUSED, ENOTCONN, "unix datagram socketpair, peer closed");
}

/* Binds a fresh socket to the address a closed socket had: the port is
 * open again. */
static int reopen(const struct sockaddr_storage *a, socklen_t len)
{
	int fd = socket(a->ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (fd < 0 || bind(fd, (const struct sockaddr *)a, len) < 0)
		co_fail("refused: binding the closed port again: %s", strerror(errno));
	co_dgram_rx_setup(fd);
	return fd;
}

static void refused_udp(int family, const char *what)
{
	struct co_dgram_check *k = co_dgram_check_new(what);
	struct sockaddr_storage live, closed;
	socklen_t llen, clen;
	char ltext[128], ctext[128], line[64];
	const char *args[] = { "refused", ltext, ctext, NULL };
	struct co_fdmap map[2];
	struct co_child c;
	int rep[2], ack[2], fd;
	uint32_t nl, nx, i;
	unsigned long long us;
	uint64_t total = 0;

	co_phase("%s: setting up", what);
	fd = co_dgram_socket(family, 0, &live, &llen);
	co_dgram_rx_setup(fd);
	co_dgram_add_rx(k, fd);
	close(co_dgram_socket(family, 0, &closed, &clen));
	co_addr_format(&live, llen, ltext, sizeof(ltext));
	co_addr_format(&closed, clen, ctext, sizeof(ctext));
	if (pipe2(rep, O_CLOEXEC) < 0 || pipe2(ack, O_CLOEXEC) < 0)
		co_fail("pipe: %s", strerror(errno));
	map[0].from = rep[1];
	map[0].to = 3;
	map[1].from = ack[0];
	map[1].to = 4;
	co_spawn(&c, args, map, 2, NULL, 1);
	close(rep[1]);
	close(ack[0]);
	co_phase("%s: waiting for ECONNREFUSED to come back to the writer", what);
	read_line(rep[0], line, sizeof(line), "report pipe");
	if (sscanf(line, "%u %u %llu", &nl, &nx, &us) != 3)
		co_fail("%s: bad report \"%s\"", what, line);
	co_info("%s: ECONNREFUSED came back after %u datagrams to the closed port, %llu us", what,
		nx, us);
	for (i = 0; i < nl + 10; i++)
		total = co_dgram_expect(k, W_L, 0, i, live_len(i), -1);
	co_dgram_add_rx(k, reopen(&closed, clen));
	for (i = 0; i < 50; i++)
		total = co_dgram_expect(k, W_Y, 1, i, live_len(i + 1000), -1);
	send_ack(ack[1]);
	co_phase("%s: receiving (the port is open again)", what);
	co_dgram_recv_until(k, total, IDLE_MS);
	co_wait_ok(&c, what);
	co_dgram_finish(k);
	co_dgram_expect_coalesced(&c, 0, what);
	co_dgram_check_free(k);
	close(rep[0]);
	close(ack[1]);
}

static void refused(void)
{
	const char *args[] = { "peer-gone", NULL };
	struct co_child c;

	refused_udp(AF_INET, "refused udp4");
	if (have6)
		refused_udp(AF_INET6, "refused udp6");
	co_phase("refused: unix peers that close");
	co_spawn(&c, args, NULL, 0, NULL, 1);
	co_wait_ok(&c, "refused: unix peers that close");
}

/* ---- flags, empty datagrams, MSG_MORE, UDP_CORK; and TOS ------------------------------------ */

/* Two writers: 0 connected to receiver 0, 1 unconnected, sending to
 * receiver 1. Fds 3 and 4, the acknowledgment pipe 5. */
struct pair_writer {
	int fd[2];
	struct sockaddr_storage addr[2];
	socklen_t len[2];
	int family;
	uint32_t seq[2];
};

enum fkind { F_PLAIN, F_CONFIRM, F_DONTROUTE, F_BOTH, F_DONTWAIT, F_NOSIGNAL, F_EMPTY, F_MORE,
	     F_CORK, F_KINDS };
static const int fkind_flags[] = { 0, MSG_CONFIRM, MSG_DONTROUTE, MSG_CONFIRM | MSG_DONTROUTE,
				   MSG_DONTWAIT, MSG_NOSIGNAL, 0, MSG_MORE, 0 };
#define FLAG_OPS 500
#define FLAG_WINDOW 8

/* One call (or, for MSG_MORE and UDP_CORK, a group of calls). */
struct fop {
	int kind;
	int writer;
	int pieces;
	size_t piece[4];
	int dgrams;          /* datagrams it makes */
	size_t dlen[4];
};

static void fop_next(struct co_rng *r, int family, struct fop *f)
{
	int i;

	memset(f, 0, sizeof(*f));
	f->writer = (int)co_range(r, 0, 1);
	f->kind = (int)co_range(r, 0, F_KINDS - 1);
	if (f->kind == F_CORK && family == AF_UNIX)
		f->kind = F_PLAIN; /* UDP_CORK is UDP's */
	f->pieces = f->kind == F_MORE || f->kind == F_CORK ? (int)co_range(r, 2, 4) : 1;
	for (i = 0; i < f->pieces; i++)
		f->piece[i] = f->kind == F_EMPTY ? 0 : co_range(r, 1, 500);
	/* MSG_MORE and UDP_CORK make one UDP datagram of the pieces; a Unix
	 * socket ignores MSG_MORE. */
	if (f->pieces > 1 && family != AF_UNIX) {
		f->dgrams = 1;
		for (i = 0; i < f->pieces; i++)
			f->dlen[0] += f->piece[i];
	} else {
		f->dgrams = f->pieces;
		for (i = 0; i < f->pieces; i++)
			f->dlen[i] = f->piece[i];
	}
}

static void set_cork(int fd, int on)
{
	if (setsockopt(fd, IPPROTO_UDP, UDP_CORK, &on, sizeof(on)) < 0)
		co_fail("setsockopt(UDP_CORK, %d): %s", on, strerror(errno));
}

/* Sends one piece with flags; a MSG_DONTWAIT send that finds the receiver
 * full (a Unix receiver holds a few datagrams) waits and tries again. */
static void send_piece(struct pair_writer *pw, int w, const unsigned char *buf, size_t len,
		       int flags)
{
	const struct sockaddr *a = w ? (const struct sockaddr *)&pw->addr[1] : NULL;
	ssize_t r;

	for (;;) {
		r = sendto(pw->fd[w], buf, len, flags, a, w ? pw->len[1] : 0);
		if (r == (ssize_t)len)
			return;
		if (r < 0 && errno == EAGAIN && (flags & MSG_DONTWAIT)) {
			co_sleep_ms(1);
			continue;
		}
		co_fail("writer %d: send of %zu bytes with flags 0x%x returned %zd (%s)", w, len,
			flags, r, r < 0 ? strerror(errno) : "short");
	}
}

/* The pieces of a joined datagram are consecutive slices of it; otherwise
 * each piece is a datagram of its own. */
static void flags_do(struct pair_writer *pw, const struct fop *f)
{
	unsigned char buf[2048];
	size_t off = 0;
	int i, w = f->writer, joined = f->dgrams == 1 && f->pieces > 1, flags;

	if (f->kind == F_CORK)
		set_cork(pw->fd[w], 1);
	if (joined)
		co_dgram_fill(buf, f->dlen[0], (unsigned)w, (unsigned)w, pw->seq[w]++);
	for (i = 0; i < f->pieces; i++) {
		if (!joined)
			co_dgram_fill(buf, f->piece[i], (unsigned)w, (unsigned)w, pw->seq[w]++);
		flags = f->kind == F_MORE && i == f->pieces - 1 ? 0 : fkind_flags[f->kind];
		send_piece(pw, w, buf + (joined ? off : 0), f->piece[i], flags);
		off += f->piece[i];
	}
	if (f->kind == F_CORK)
		set_cork(pw->fd[w], 0);
}

static void pair_writer_init(struct pair_writer *pw, char **argv)
{
	int i;

	memset(pw, 0, sizeof(*pw));
	for (i = 0; i < 2; i++) {
		pw->fd[i] = 3 + i;
		pw->len[i] = co_addr_parse(argv[i], &pw->addr[i]);
	}
	pw->family = pw->addr[0].ss_family;
	if (connect(pw->fd[0], (struct sockaddr *)&pw->addr[0], pw->len[0]) < 0)
		co_fail("connect: %s", strerror(errno));
}

/* Arguments: the two receivers' addresses. */
static void flags_child(char **argv)
{
	struct pair_writer pw;
	struct co_rng r;
	struct fop f;
	int i, since = 0;

	pair_writer_init(&pw, argv);
	co_rng_init(&r, co_seed, 700 + (uint64_t)pw.family);
	for (i = 0; i < FLAG_OPS; i++) {
		fop_next(&r, pw.family, &f);
		flags_do(&pw, &f);
		since += f.dgrams;
		if (since >= FLAG_WINDOW && i < FLAG_OPS - 1) {
			wait_ack(5);
			since = 0;
		}
	}
}

/* Starts a child of part (its arguments: the two receivers) with two
 * writer sockets of family, known to k by their addresses. */
static void spawn_pair(struct co_dgram_check *k, int family, const char *part, int ackfd,
		       struct co_child *c)
{
	struct sockaddr_storage ss;
	socklen_t len;
	char text[2][128];
	const char *args[] = { part, text[0], text[1], NULL };
	struct co_fdmap map[3];
	int i, fd;

	for (i = 0; i < 2; i++) {
		fd = co_dgram_socket(family, 0, &ss, &len);
		co_dgram_rx_setup(fd);
		co_dgram_add_rx(k, fd);
		co_addr_format(&ss, len, text[i], sizeof(text[i]));
		map[i].from = co_dgram_socket(family, 0, &ss, &len);
		map[i].to = 3 + i;
		co_dgram_add_writer(k, &ss, len);
	}
	map[2].from = ackfd;
	map[2].to = 5;
	co_spawn(c, args, map, 3, NULL, 1);
	for (i = 0; i < 3; i++)
		close(map[i].from);
}

static void flags_run(int family, const char *what)
{
	struct co_dgram_check *k = co_dgram_check_new(what);
	uint32_t seq[2] = { 0, 0 };
	uint64_t total = 0;
	struct co_child c;
	struct co_rng r;
	struct fop f;
	int ack[2], i, j, since = 0;

	co_phase("%s: setting up", what);
	if (pipe2(ack, O_CLOEXEC) < 0)
		co_fail("pipe: %s", strerror(errno));
	spawn_pair(k, family, "flags", ack[0], &c);
	co_rng_init(&r, co_seed, 700 + (uint64_t)family);
	for (i = 0; i < FLAG_OPS; i++) {
		fop_next(&r, family, &f);
		for (j = 0; j < f.dgrams; j++)
			total = co_dgram_expect(k, (unsigned)f.writer, (unsigned)f.writer,
						seq[f.writer]++, f.dlen[j], -1);
		since += f.dgrams;
		if (since >= FLAG_WINDOW && i < FLAG_OPS - 1) {
			co_phase("%s: receiving the first %llu datagrams", what,
				 (unsigned long long)total);
			co_dgram_recv_until(k, total, IDLE_MS);
			send_ack(ack[1]);
			since = 0;
		}
	}
	co_phase("%s: receiving all %llu datagrams", what, (unsigned long long)total);
	co_dgram_recv_until(k, total, IDLE_MS);
	co_wait_ok(&c, what);
	co_dgram_finish(k);
	co_dgram_expect_coalesced(&c, 0, what);
	co_dgram_check_free(k);
	close(ack[1]);
}

/* TOS values in turn (ECN bits clear); 0x88 rides in a control message. */
static const int tos_phases[] = { 0x00, 0x20, 0x48, 0xb8, 0x10 };
#define TOS_PHASES (int)(sizeof(tos_phases) / sizeof(tos_phases[0]))
#define TOS_CMSG 0x88
#define TOS_OPS 40

enum tos_api { T_SEND, T_SENDMSG, T_SENDMMSG, T_CMSG };

struct top {
	int api;
	int writer;
	int n;
	size_t len[4];
};

static void top_next(struct co_rng *r, struct top *t)
{
	int i;

	t->writer = (int)co_range(r, 0, 1);
	t->api = co_chance(r, 1, 8) ? T_CMSG : (int)co_range(r, T_SEND, T_SENDMMSG);
	t->n = t->api == T_SENDMMSG ? (int)co_range(r, 2, 4) : 1;
	for (i = 0; i < t->n; i++)
		t->len[i] = co_range(r, 1, 1000);
}

static void set_tos(int fd, int family, int tos)
{
	int level = family == AF_INET6 ? IPPROTO_IPV6 : IPPROTO_IP;
	int name = family == AF_INET6 ? IPV6_TCLASS : IP_TOS;

	if (setsockopt(fd, level, name, &tos, sizeof(tos)) < 0)
		co_fail("setsockopt(TOS 0x%x): %s", tos, strerror(errno));
}

static void tos_cmsg(struct msghdr *mh, char *ctl, size_t size, int family)
{
	struct cmsghdr *c;
	int tos = TOS_CMSG;

	mh->msg_control = ctl;
	mh->msg_controllen = size;
	c = CMSG_FIRSTHDR(mh);
	c->cmsg_level = family == AF_INET6 ? IPPROTO_IPV6 : IPPROTO_IP;
	c->cmsg_type = family == AF_INET6 ? IPV6_TCLASS : IP_TOS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &tos, sizeof(tos));
	mh->msg_controllen = CMSG_SPACE(sizeof(int));
}

static void tos_do(struct pair_writer *pw, const struct top *t)
{
	static unsigned char buf[4][1024];
	union {
		char b[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov[4];
	struct mmsghdr mm[4];
	int i, w = t->writer;

	memset(mm, 0, sizeof(mm));
	for (i = 0; i < t->n; i++) {
		co_dgram_fill(buf[i], t->len[i], (unsigned)w, (unsigned)w, pw->seq[w]++);
		iov[i].iov_base = buf[i];
		iov[i].iov_len = t->len[i];
		mm[i].msg_hdr.msg_iov = &iov[i];
		mm[i].msg_hdr.msg_iovlen = 1;
		mm[i].msg_hdr.msg_name = w ? &pw->addr[1] : NULL;
		mm[i].msg_hdr.msg_namelen = w ? pw->len[1] : 0;
	}
	if (t->api == T_SEND) {
		send_piece(pw, w, buf[0], t->len[0], 0);
		return;
	}
	if (t->api == T_SENDMMSG) {
		if (sendmmsg(pw->fd[w], mm, (unsigned)t->n, 0) != t->n)
			co_fail("writer %d: sendmmsg of %d: %s", w, t->n, strerror(errno));
		return;
	}
	if (t->api == T_CMSG)
		tos_cmsg(&mm[0].msg_hdr, ctl.b, sizeof(ctl.b), pw->family);
	if (sendmsg(pw->fd[w], &mm[0].msg_hdr, 0) != (ssize_t)t->len[0])
		co_fail("writer %d: sendmsg of %zu bytes: %s", w, t->len[0], strerror(errno));
}

/* Arguments: the two receivers' addresses. */
static void tos_child(char **argv)
{
	struct pair_writer pw;
	struct co_rng r;
	struct top t;
	int p, i;

	pair_writer_init(&pw, argv);
	co_rng_init(&r, co_seed, 800 + (uint64_t)pw.family);
	for (p = 0; p < TOS_PHASES; p++) {
		if (p > 0) {
			set_tos(pw.fd[0], pw.family, tos_phases[p]);
			set_tos(pw.fd[1], pw.family, tos_phases[p]);
		}
		for (i = 0; i < TOS_OPS; i++) {
			top_next(&r, &t);
			tos_do(&pw, &t);
		}
		wait_ack(5);
	}
}

static void tos_run(int family, const char *what)
{
	struct co_dgram_check *k = co_dgram_check_new(what);
	uint32_t seq[2] = { 0, 0 };
	uint64_t total = 0;
	struct co_child c;
	struct co_rng r;
	struct top t;
	int ack[2], p, i, j;

	co_phase("%s: setting up", what);
	if (pipe2(ack, O_CLOEXEC) < 0)
		co_fail("pipe: %s", strerror(errno));
	spawn_pair(k, family, "tos", ack[0], &c);
	co_rng_init(&r, co_seed, 800 + (uint64_t)family);
	for (p = 0; p < TOS_PHASES; p++) {
		for (i = 0; i < TOS_OPS; i++) {
			top_next(&r, &t);
			for (j = 0; j < t.n; j++)
				total = co_dgram_expect(k, (unsigned)t.writer, (unsigned)t.writer,
							seq[t.writer]++, t.len[j],
							t.api == T_CMSG ? TOS_CMSG : tos_phases[p]);
		}
		co_phase("%s: receiving phase %d (TOS 0x%02x)", what, p, tos_phases[p]);
		co_dgram_recv_until(k, total, IDLE_MS);
		send_ack(ack[1]);
	}
	co_wait_ok(&c, what);
	co_dgram_finish(k);
	co_dgram_expect_coalesced(&c, 0, what);
	co_dgram_check_free(k);
	close(ack[1]);
}

/* ---- eagain: a nonblocking socket whose receiver does not read -------------------------------- */

#define EAGAIN_SNDBUF 16384
#define EAGAIN_BOUND 100000 /* sends without EAGAIN after which the shim queues without bound */

static size_t eagain_len(struct co_rng *r)
{
	return co_range(r, 100, 400);
}

/* How many datagrams of the plan a fresh socketpair takes, without the
 * shim, before EAGAIN. */
static uint32_t kernel_capacity(void)
{
	unsigned char buf[512] = { 0 };
	struct co_rng r;
	uint32_t n = 0;
	int sv[2], sb = EAGAIN_SNDBUF;

	if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0 ||
	    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sb, sizeof(sb)) < 0)
		co_fail("eagain: socketpair: %s", strerror(errno));
	co_rng_init(&r, co_seed, 900);
	while (send(sv[0], buf, eagain_len(&r), 0) > 0)
		n++;
	if (errno != EAGAIN)
		co_fail("eagain: without the shim: %s", strerror(errno));
	close(sv[0]);
	close(sv[1]);
	return n;
}

/* One nonblocking send of datagram seq by one of four calls. */
static ssize_t eagain_send(int fd, unsigned char *buf, size_t len, uint32_t seq)
{
	struct iovec iov = { buf, len };
	struct msghdr mh;

	co_dgram_fill(buf, len, 0, 0, seq);
	switch (seq % 4) {
	case 0:
		return send(fd, buf, len, 0);
	case 1:
		return write(fd, buf, len);
	case 2:
		return sendto(fd, buf, len, 0, NULL, 0);
	default:
		memset(&mh, 0, sizeof(mh));
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		return sendmsg(fd, &mh, 0);
	}
}

/* Arguments: the kernel's capacity. Fds: 3 the socket, 4 the report pipe. */
static void eagain_child(char **argv)
{
	uint32_t cap = (uint32_t)co_arg_u64(argv[0]), seq = 0, total, i;
	unsigned char buf[512];
	struct pollfd p = { .fd = 3, .events = POLLOUT };
	struct co_rng r;
	size_t len;
	char line[64];
	ssize_t w;

	co_set_nonblock(3, 1);
	co_rng_init(&r, co_seed, 900);
	len = eagain_len(&r);
	while (eagain_send(3, buf, len, seq) == (ssize_t)len) {
		if (++seq > cap + EAGAIN_BOUND)
			co_fail("eagain: %u datagrams accepted and no EAGAIN although nobody reads: unbounded queueing",
				seq);
		len = eagain_len(&r);
	}
	if (errno != EAGAIN)
		co_fail("eagain: send %u: %s", seq, strerror(errno));
	for (i = 0; i < 10; i++)
		if (eagain_send(3, buf, len, seq) >= 0 || errno != EAGAIN)
			co_fail("eagain: a send right after EAGAIN, with nothing read, returned %s",
				errno == EAGAIN ? "success" : strerror(errno));
	snprintf(line, sizeof(line), "%u\n", seq);
	co_write_all(4, line, strlen(line), "report pipe");
	for (total = seq + 3 * cap; seq < total;) {
		w = eagain_send(3, buf, len, seq);
		if (w == (ssize_t)len) {
			seq++;
			len = eagain_len(&r);
			continue;
		}
		if (w >= 0 || errno != EAGAIN)
			co_fail("eagain: send %u: %zd (%s)", seq, w, strerror(errno));
		if (poll(&p, 1, 5000) != 1)
			co_fail("eagain: no POLLOUT within 5 s after EAGAIN at datagram %u", seq);
	}
}

static void eagain(void)
{
	struct co_dgram_check *k = co_dgram_check_new("eagain");
	uint32_t cap = kernel_capacity(), accepted, i;
	char capt[32], line[64];
	const char *args[] = { "eagain", capt, NULL };
	struct co_child c;
	struct co_rng r;
	uint64_t total = 0;
	int sv[2], rep[2], sb = EAGAIN_SNDBUF;

	co_phase("eagain: the writer sends until EAGAIN while nobody reads");
	if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv) < 0 ||
	    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sb, sizeof(sb)) < 0 ||
	    pipe2(rep, O_CLOEXEC) < 0)
		co_fail("eagain: setting up: %s", strerror(errno));
	co_dgram_rx_setup(sv[1]);
	co_dgram_add_rx(k, sv[1]);
	snprintf(capt, sizeof(capt), "%u", cap);
	co_spawn_fds(&c, args, NULL, sv[0], rep[1]);
	read_line(rep[0], line, sizeof(line), "report pipe");
	accepted = (uint32_t)co_arg_u64(line);
	co_info("eagain: the kernel alone takes %u datagrams; the writer's first EAGAIN came after %u",
		cap, accepted);
	if (accepted < cap)
		co_fail("eagain: EAGAIN after %u datagrams, but the kernel alone takes %u: an EAGAIN the kernel would not have returned",
			accepted, cap);
	co_rng_init(&r, co_seed, 900);
	for (i = 0; i < accepted + 3 * cap; i++)
		total = co_dgram_expect(k, 0, 0, i, eagain_len(&r), -1);
	co_phase("eagain: reading everything");
	co_dgram_recv_until(k, total, IDLE_MS);
	co_wait_ok(&c, "eagain");
	co_dgram_finish(k);
	co_dgram_expect_coalesced(&c, 0, "eagain");
	co_dgram_check_free(k);
	close(rep[0]);
}

/* ---- main ------------------------------------------------------------------------------------ */

static int child_main(int argc, char **argv)
{
	co_child_init(NAME);
	if (argc < 1)
		co_fail("usage: part arguments...");
	if (!strcmp(argv[0], "upfront") && argc == 1 + NROLES)
		upfront_child(argv + 1);
	else if (!strcmp(argv[0], "refused") && argc == 3)
		refused_udp_child(argv + 1);
	else if (!strcmp(argv[0], "peer-gone"))
		peer_gone_child();
	else if (!strcmp(argv[0], "flags") && argc == 3)
		flags_child(argv + 1);
	else if (!strcmp(argv[0], "tos") && argc == 3)
		tos_child(argv + 1);
	else if (!strcmp(argv[0], "eagain") && argc == 2)
		eagain_child(argv + 1);
	else
		co_fail("bad arguments (part %s)", argv[0]);
	return 0;
}

int main(int argc, char **argv)
{
	const char *v6why;

	if (argc > 1 && strcmp(argv[1], CO_CHILD_FLAG) == 0)
		return child_main(argc - 2, argv + 2);
	co_init(argc, argv, NAME);
	co_watchdog(30);
	v6why = co_ipv6_unavailable();
	have6 = v6why == NULL;
	if (!have6)
		co_note("IPv6 parts skipped: %s", v6why);
	upfront();
	refused();
	flags_run(AF_INET, "flags udp4");
	if (have6)
		flags_run(AF_INET6, "flags udp6");
	flags_run(AF_UNIX, "flags unix");
	tos_run(AF_INET, "tos udp4");
	if (have6)
		tos_run(AF_INET6, "tos udp6");
	eagain();
	co_dgram_stats_verdict();
	return 0;
}
