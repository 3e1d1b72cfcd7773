/* libFuzzer target for core: the input is a sequence of operations on one
 * co_ctx built with a small deterministic fake system call table, checked
 * against a reference model of what each peer must receive.
 *
 * The fake (single-threaded, no globals shared with tests/unit) has eight
 * fds, each naming a fake socket (TCP, TCP6, Unix, UDP-Lite, SEQPACKET, SCTP,
 * unconnected TCP, not a socket, or closed). Datagram queues (UDP, Unix
 * datagrams) are not modelled here: UDP-Lite stands for a datagram socket
 * core never coalesces; tests/unit and tests/integration cover datagrams. A socket has a "wire": every
 * byte it accepted, in order. Its sendmsg can be scripted (accept at most k
 * bytes, or fail with EAGAIN, EINTR, EPIPE, ECONNRESET, ETIMEDOUT, ENOBUFS;
 * the fatal ones kill the socket), can be full
 * (nonblocking sends get EAGAIN until the peer reads), and allocation can be
 * made to fail.
 *
 * The model keeps, per socket, the bytes owed to the peer that are not on the
 * wire yet: an application write that core says it took (n >= 0) owes the
 * first n bytes of the call; -errno owes nothing; for CO_PASSTHROUGH the
 * model makes the "libc" call itself (the fake's sendmsg, scripted like any
 * other) and owes what that call accepted. Checked at every send and after
 * every operation (see docs in README.md):
 *   - every byte reaching a wire is the next owed byte (never one not owed,
 *     never out of order, never twice);
 *   - the queue core holds for the socket is exactly the owed bytes not yet
 *     on the wire, or empty when they were dropped, which is allowed only
 *     after an error from the fake on a send core made, a linger timeout, or
 *     co_fd_forget: the whole not-yet-sent suffix goes, never part of it;
 *   - a hard error on a deferred flush is given back once: by the next
 *     co_write on that fd, a read on it or SO_ERROR; co_write returns no
 *     error the fake did not give; a passing ENOBUFS/ENOMEM must not drop
 *     queued bytes of a live connection (a hole in the stream);
 *   - operations that must not block never send without MSG_DONTWAIT on a
 *     blocking socket and never poll;
 *   - fd table invariants (pending bits and count, queue bounds, kinds,
 *     socket identities, locks), counters (flush_syscalls, flush_bytes,
 *     bytes_dropped, writes/bytes_queued, deferred_errors), deadlines;
 *   - fork: the child copy of the context has no queue left.
 *
 * FUZZ_TRACE=1 in the environment prints each operation and its result.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>

#include "ctx.h"
#include "stream.h"

#define NFD 8
#define NSOCK 32
#define NSTEPS 8
#define UNLIMITED SIZE_MAX
#define SRC_SIZE (1u << 20)
#define MAX_WRITE (300u * 1024)
#define MAX_OPS 3000
#define MAX_TOTAL_BYTES (24u << 20)
#define FAKE_IOV_MAX 1024
#define CLOCK_START 1000000000000ull

/* The fd numbers the fake knows: a few in the first word of the pending
 * bitmap, two across a word boundary, one in a second fd table chunk. */
static const int fd_num[NFD] = { 3, 4, 5, 6, 7, 63, 64, 1030 };

enum kind { K_BADF, K_TCP, K_TCP6, K_UNIX, K_UDP, K_SEQPACKET, K_SCTP, K_UNCONN, K_NOTSOCK };

static const char *const kind_name[] = { "closed", "tcp", "tcp6", "unix", "udplite",
					 "seqpacket", "sctp", "unconnected", "not-a-socket" };

struct step {
	int err;      /* fail with -err, or */
	size_t limit; /* accept at most limit bytes */
	int count;
};

struct sock {
	int refs;     /* fds naming it; 0: free slot */
	enum kind kind;
	uint64_t id;
	int nonblock;
	int dead;     /* reset, broken or shut down: every send fails with EPIPE */
	size_t space; /* bytes a nonblocking send can still place, or UNLIMITED */
	int polls_until_free;
	struct step steps[NSTEPS];
	int nsteps;
	/* The model: owed bytes not yet on the wire. */
	unsigned char *owed;
	size_t head, tail, cap;
	uint64_t since;      /* fake time when owed[head, tail) became non-empty */
	uint64_t wire_bytes; /* bytes the wire has received */
	/* The application call in progress on this socket: its bytes may reach
	 * the wire (sent along with the queue) before the model knows how many
	 * of them the call took. */
	const unsigned char *tent;
	size_t tent_len, tent_sent;
	/* A signal handler's write, queued by core while the write it
	 * interrupted was handed back to libc, may reach the wire after that
	 * libc call (as if the signal had come after the system call): the
	 * owed bytes not yet on the wire are then only the handler's. */
	int handler_may_follow;
	/* Why a drop of owed bytes would be legitimate during this operation. */
	int perm_hard, perm_transient, perm_again, perm_forget;
};

/* ---- global state of one run ------------------------------------------ */

static struct co_ctx g_ctx;
static struct co_ctx *ctx = &g_ctx;
static struct sock socks[NSOCK];
static int fd_sock[NFD];            /* index in socks, or -1 */
static int pend[NFD];               /* deferred error the next co_write must return */
static uint64_t next_id;
static uint64_t now_ns;
static int fail_alloc, fail_realloc;
static int in_libc;                 /* the model's own "libc" call is running */
static int trace;

static struct sock *sock_of(int i);

/* What the current operation allows and what happened during it. */
static int op_drain;       /* may drop after EAGAIN once the linger time passed */
static int op_nonblocking; /* must not block: no blocking send, no poll */
static int op_nopoll;      /* must not poll */
static uint64_t op_start_ns;
static uint64_t op_calls;  /* core_calls when the operation began */
static long op_index;

/* Per fd: the last error the fake gave a send core made, and when (in
 * core_calls). */
static int hard_err[NFD], soft_err[NFD];
static uint64_t hard_at[NFD], soft_at[NFD];

/* Totals to check the counters against. */
static uint64_t core_calls, core_bytes, model_dropped, model_app_writes, model_app_bytes,
	model_deferred;
static uint64_t total_written;
static uint64_t on_pending_calls, model_became_pending;

/* The signal-handler operation armed for the next write handed back to libc. */
static int sig_armed, sig_type, sig_fd, sig_flags;
static size_t sig_len;

static unsigned char *src;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "\nfuzz_core: model violation at operation %ld: ", op_index);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n(replay with FUZZ_TRACE=1 to see the operations)\n");
	abort();
}

#define T(...)                                                                 \
	do {                                                                   \
		if (trace)                                                     \
			fprintf(stderr, __VA_ARGS__);                          \
	} while (0)

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond))                                                   \
			fail(__VA_ARGS__);                                     \
	} while (0)

static int fd_index(int fd)
{
	int i;

	for (i = 0; i < NFD; i++)
		if (fd_num[i] == fd)
			return i;
	return -1;
}

static struct sock *sock_of(int i)
{
	return i >= 0 && fd_sock[i] >= 0 ? &socks[fd_sock[i]] : NULL;
}

static struct sock *sock_of_fd(int fd)
{
	return sock_of(fd_index(fd));
}

static struct co_fd *ent(int i)
{
	return co_fd_find(&ctx->fds, fd_num[i]);
}

static int ent_kind(int i)
{
	struct co_fd *f = ent(i);

	return f ? atomic_load(&f->kind) : CO_FD_UNKNOWN;
}

static size_t ent_qlen(int i)
{
	struct co_fd *f = ent(i);

	return f ? pending_len(&f->q) : 0;
}

static int is_stream_kind(enum kind k)
{
	return k == K_TCP || k == K_TCP6 || k == K_UNIX;
}

/* ---- the model ---------------------------------------------------------- */

static size_t inflight(const struct sock *s)
{
	return s->tail - s->head;
}

static void owed_append(struct sock *s, const unsigned char *p, size_t n)
{
	if (n == 0)
		return;
	if (inflight(s) == 0) {
		model_became_pending++;
		s->head = s->tail = 0;
		s->since = now_ns;
	}
	if (s->tail + n > s->cap) {
		size_t len = inflight(s), cap = s->cap ? s->cap : 4096;

		if (len)
			memmove(s->owed, s->owed + s->head, len);
		s->head = 0;
		s->tail = len;
		while (cap < len + n)
			cap *= 2;
		if (cap != s->cap) {
			s->owed = realloc(s->owed, cap);
			if (!s->owed)
				abort();
			s->cap = cap;
		}
	}
	memcpy(s->owed + s->tail, p, n);
	s->tail += n;
}

static int sock_slot(const struct sock *s)
{
	return (int)(s - socks);
}

/* Bytes arriving on s's wire must be the next owed ones: first what earlier
 * calls owe, then the call in progress. */
static void wire_arrive(struct sock *s, const struct iovec *iov, size_t iovcnt, size_t n)
{
	size_t i, k, len;
	const unsigned char *p;

	for (i = 0; i < iovcnt && n > 0; i++) {
		p = iov[i].iov_base;
		len = iov[i].iov_len < n ? iov[i].iov_len : n;
		n -= len;
		while (len > 0) {
			if (s->head < s->tail) {
				k = len < inflight(s) ? len : inflight(s);
				CHECK(memcmp(p, s->owed + s->head, k) == 0,
				      "socket %d: wire byte %llu is not the next owed byte (queued "
				      "bytes sent out of order, twice, or altered)",
				      sock_slot(s), (unsigned long long)s->wire_bytes);
				s->head += k;
				if (s->head == s->tail)
					s->head = s->tail = 0;
			} else if (s->tent && s->tent_sent < s->tent_len) {
				k = len < s->tent_len - s->tent_sent ? len : s->tent_len - s->tent_sent;
				CHECK(memcmp(p, s->tent + s->tent_sent, k) == 0,
				      "socket %d: wire byte %llu is not the next byte of the call in "
				      "progress", sock_slot(s), (unsigned long long)s->wire_bytes);
				s->tent_sent += k;
			} else {
				fail("socket %d: %zu bytes reached the wire that nobody owed (wire at %llu)",
				     sock_slot(s), len, (unsigned long long)s->wire_bytes);
			}
			p += k;
			len -= k;
			s->wire_bytes += k;
		}
	}
}

/* The queue core keeps for s must be the owed bytes not yet on the wire; an
 * empty queue with owed bytes left means core dropped them, which is
 * allowed only for a reason the operation gave. */
/* Bytes core keeps for s outside its queue, to be queued after it: a signal
 * handler's write on the fd its own thread held (co__signal_writes, where
 * this checkout's core has it). */
static const unsigned char *kept_for(const struct sock *s, size_t *len)
{
#ifdef FUZZ_HAVE_SIGNAL_WRITES
	struct co_signal_writes *w = &co__signal_writes;
	int j;

	*len = 0;
	if (!w->len || w->ctx != ctx || (j = fd_index(w->fd)) < 0 || fd_sock[j] != sock_slot(s))
		return NULL;
	*len = w->len;
	return (const unsigned char *)w->buf;
#else
	(void)s;
	*len = 0;
	return NULL;
#endif
}

static void reconcile(struct sock *s)
{
	const unsigned char *qd = NULL, *kd;
	size_t ql = 0, kl, in = inflight(s);
	int i, holders = 0, holder = -1;

	for (i = 0; i < NFD; i++) {
		struct co_fd *f;

		if (fd_sock[i] != sock_slot(s) || !(f = ent(i)) || pending_len(&f->q) == 0)
			continue;
		holders++;
		holder = fd_num[i];
		qd = (const unsigned char *)f->q.data + f->q.head;
		ql = pending_len(&f->q);
	}
	CHECK(holders <= 1, "socket %d: two fds hold a queue for it", sock_slot(s));
	kd = kept_for(s, &kl);
	if (ql + kl == in && (ql == 0 || memcmp(qd, s->owed + s->head, ql) == 0) &&
	    (kl == 0 || memcmp(kd, s->owed + s->head + ql, kl) == 0))
		return;
	if (ql + kl == 0) {
		int ok = s->perm_hard || s->perm_forget;

		if (!ok && op_drain && (s->perm_again || s->perm_transient)) {
			CHECK(now_ns >= op_start_ns + ctx->cfg.linger_ns,
			      "socket %d: %zu queued bytes dropped before the linger time "
			      "(waited %llu ns of %llu)", sock_slot(s), in,
			      (unsigned long long)(now_ns - op_start_ns),
			      (unsigned long long)ctx->cfg.linger_ns);
			ok = 1;
		}
		CHECK(ok || !s->perm_transient,
		      "socket %d: %zu queued bytes dropped after a passing ENOBUFS/ENOMEM on a live "
		      "connection: later bytes reach the peer after a hole", sock_slot(s), in);
		CHECK(ok, "socket %d: %zu owed bytes vanished from the queue without an error, "
		      "a linger timeout or a forget", sock_slot(s), in);
		T("    model: socket %d lost %zu queued bytes (allowed)\n", sock_slot(s), in);
		model_dropped += in;
		s->head = s->tail = 0;
		return;
	}
	if (ql + kl < in)
		fail("socket %d: fd %d's queue holds %zu bytes (+%zu kept from a signal handler) but "
		     "%zu owed bytes are not on the wire (only part of them dropped)", sock_slot(s),
		     holder, ql, kl, in);
	fail("socket %d: fd %d's queue (%zu bytes, +%zu kept from a signal handler) is not the %zu "
	     "owed bytes not yet on the wire", sock_slot(s), holder, ql, kl, in);
}

static void reconcile_all(void)
{
	int k;

	for (k = 0; k < NSOCK; k++)
		if (socks[k].refs)
			reconcile(&socks[k]);
}

/* ---- the fake kernel ---------------------------------------------------- */

static ssize_t kern_send(struct sock *s, size_t offered, int flags)
{
	if (offered == 0)
		return 0;
	if (s->dead)
		return -EPIPE;
	if (s->nsteps > 0) {
		struct step st = s->steps[0];

		if (--s->steps[0].count == 0) {
			memmove(&s->steps[0], &s->steps[1], sizeof(s->steps[0]) * (size_t)(s->nsteps - 1));
			s->nsteps--;
		}
		/* A reset or broken connection stays broken, as in the kernel;
		 * ENOBUFS and ENOMEM are passing shortages. */
		if (st.err == EPIPE || st.err == ECONNRESET || st.err == ETIMEDOUT)
			s->dead = 1;
		if (st.err)
			return -st.err;
		return (ssize_t)(offered < st.limit ? offered : st.limit);
	}
	if (s->nonblock || (flags & MSG_DONTWAIT)) {
		size_t n;

		if (s->space == 0)
			return -EAGAIN;
		n = offered < s->space ? offered : s->space;
		if (s->space != UNLIMITED)
			s->space -= n;
		return (ssize_t)n;
	}
	/* A blocking socket waits for the peer to read: takes everything. */
	return (ssize_t)offered;
}

static size_t iov_total(const struct iovec *iov, size_t cnt)
{
	size_t i, t = 0;

	for (i = 0; i < cnt; i++)
		t += iov[i].iov_len;
	return t;
}

static ssize_t fake_sendmsg(int fd, const struct msghdr *msg, int flags)
{
	int i = fd_index(fd);
	struct sock *s = sock_of(i);
	size_t offered;
	ssize_t n;

	CHECK(!in_libc, "core called sendmsg during the application's own libc call");
	CHECK(i >= 0, "core sent on fd %d, which the application never used", fd);
	CHECK(s, "core sent on fd %d, which is closed", fd);
	CHECK(is_stream_kind(s->kind), "core sent on fd %d, a %s (never coalesced)", fd,
	      kind_name[s->kind]);
	CHECK((flags & MSG_NOSIGNAL) && !(flags & ~(MSG_NOSIGNAL | MSG_DONTWAIT)),
	      "core sent on fd %d with flags %#x", fd, flags);
	CHECK(!msg->msg_name && !msg->msg_control, "core sent an address or control data");
	CHECK(msg->msg_iovlen >= 1 && msg->msg_iovlen <= FAKE_IOV_MAX,
	      "core sent %zu iovecs", (size_t)msg->msg_iovlen);
	offered = iov_total(msg->msg_iov, msg->msg_iovlen);
	CHECK(offered > 0, "core made a sendmsg of no bytes on fd %d", fd);
	CHECK(!op_nonblocking || (flags & MSG_DONTWAIT) || s->nonblock,
	      "a blocking send on blocking fd %d during an operation that must not block", fd);
	reconcile(s);
	n = kern_send(s, offered, flags);
	core_calls++;
	if (n < 0) {
		if (n == -EAGAIN || n == -EINTR || n == -ENOBUFS || n == -ENOMEM) {
			/* Core keeps the queue and sends it later; a drain may
			 * drop it once the linger time is over. */
			if (n == -ENOBUFS || n == -ENOMEM)
				s->perm_transient = 1;
			else
				s->perm_again = 1;
			soft_err[i] = (int)-n;
			soft_at[i] = core_calls;
		} else {
			s->perm_hard = 1;
			hard_err[i] = (int)-n;
			hard_at[i] = core_calls;
		}
	} else {
		core_bytes += (uint64_t)n;
		wire_arrive(s, msg->msg_iov, msg->msg_iovlen, (size_t)n);
	}
	T("    sendmsg(fd %d, %zu iov, %zu bytes, %s) = %zd\n", fd, (size_t)msg->msg_iovlen,
	  offered, flags & MSG_DONTWAIT ? "DONTWAIT" : "blocking", n);
	return n;
}

/* The application's own call, made when core hands a write back. */
static ssize_t libc_send(int i, const struct iovec *iov, int cnt, int flags, unsigned how)
{
	struct sock *s = sock_of(i);
	size_t offered = iov_total(iov, (size_t)cnt);
	ssize_t n;

	unsigned char *stash = NULL;
	size_t stash_len = 0;

	if (!s)
		return -EBADF;
	reconcile(s);
	if (s->handler_may_follow && inflight(s)) {
		stash_len = inflight(s);
		stash = malloc(stash_len);
		if (!stash)
			abort();
		memcpy(stash, s->owed + s->head, stash_len);
		s->head = s->tail = 0;
		T("    model: the handler's %zu queued bytes may follow this call\n", stash_len);
	}
	if (cnt > FAKE_IOV_MAX) {
		n = -EMSGSIZE;
	} else if (s->kind == K_NOTSOCK) {
		n = flags || how ? -ENOTSOCK : (ssize_t)offered; /* write() on a pipe */
	} else if (s->kind == K_UNCONN) {
		n = -ENOTCONN;
	} else {
		in_libc = 1;
		n = kern_send(s, offered, flags);
		in_libc = 0;
	}
	if (n > 0)
		wire_arrive(s, iov, (size_t)cnt, (size_t)n);
	if (stash) {
		uint64_t since = s->since;

		CHECK(inflight(s) == 0, "owed bytes appeared during a libc call");
		owed_append(s, stash, stash_len);
		s->since = since;
		free(stash);
	}
	T("    libc send(fd %d, %d iov, %zu bytes, flags %#x%s) = %zd\n", fd_num[i], cnt, offered,
	  flags, how ? ", addr/control" : "", n);
	return n;
}

static int fake_getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
	struct sock *s = sock_of_fd(fd);
	int type = SOCK_STREAM, domain = AF_INET, protocol = IPPROTO_TCP, answer;

	if (!s)
		return -EBADF;
	if (s->kind == K_NOTSOCK)
		return -ENOTSOCK;
	switch (s->kind) {
	case K_TCP6:
		domain = AF_INET6;
		break;
	case K_UNIX:
		domain = AF_UNIX;
		protocol = 0;
		break;
	case K_UDP:
		type = SOCK_DGRAM;
		protocol = IPPROTO_UDPLITE;
		break;
	case K_SEQPACKET:
		type = SOCK_SEQPACKET;
		domain = AF_UNIX;
		protocol = 0;
		break;
	case K_SCTP:
		protocol = IPPROTO_SCTP;
		break;
	default:
		break;
	}
	if (level != SOL_SOCKET || *len < sizeof(int))
		return -EINVAL;
	switch (name) {
	case SO_TYPE:
		answer = type;
		break;
	case SO_DOMAIN:
		answer = domain;
		break;
	case SO_PROTOCOL:
		answer = protocol;
		break;
	default:
		return -ENOPROTOOPT;
	}
	memcpy(val, &answer, sizeof(answer));
	*len = sizeof(answer);
	return 0;
}

static int fake_getpeername(int fd, struct sockaddr *addr, socklen_t *len)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(4242) };
	struct sock *s = sock_of_fd(fd);

	if (!s)
		return -EBADF;
	if (s->kind == K_NOTSOCK)
		return -ENOTSOCK;
	if (s->kind == K_UNCONN)
		return -ENOTCONN;
	if (*len > sizeof(sin))
		*len = sizeof(sin);
	memcpy(addr, &sin, *len);
	*len = sizeof(sin);
	return 0;
}

static int fake_socket_id(int fd, uint64_t *id)
{
	struct sock *s = sock_of_fd(fd);

	if (!s)
		return -EBADF;
	if (s->kind == K_NOTSOCK)
		return -ENOTSOCK;
	*id = s->id;
	return 0;
}

static int fake_fcntl_getfl(int fd)
{
	struct sock *s = sock_of_fd(fd);

	return s ? O_RDWR | (s->nonblock ? O_NONBLOCK : 0) : -EBADF;
}

static ssize_t fake_writev(int fd, const struct iovec *iov, int iovcnt)
{
	(void)iov;
	(void)iovcnt;
	fail("core called writev on fd %d (it sends with sendmsg only)", fd);
}

static int fake_poll(struct pollfd *fds, nfds_t nfds, int timeout_ms)
{
	nfds_t k;
	int ready = 0;

	CHECK(!op_nonblocking && !op_nopoll, "core polled during an operation that must not wait");
	for (k = 0; k < nfds; k++) {
		struct sock *s = sock_of_fd(fds[k].fd);

		fds[k].revents = 0;
		if (!s) {
			fds[k].revents = POLLNVAL;
			ready++;
			continue;
		}
		if (s->space == 0 && s->nonblock && s->polls_until_free > 0 &&
		    --s->polls_until_free == 0)
			s->space = UNLIMITED;
		if ((!s->nonblock || s->space > 0 || s->dead) && (fds[k].events & POLLOUT)) {
			fds[k].revents = s->dead ? POLLOUT | POLLERR : POLLOUT;
			ready++;
		}
	}
	if (timeout_ms > 0 && ready == 0)
		now_ns += (uint64_t)timeout_ms * 1000000u;
	T("    poll(fd %d, %d ms) = %d\n", nfds ? fds[0].fd : -1, timeout_ms, ready);
	return ready;
}

static uint64_t fake_now(void)
{
	return now_ns;
}

static void fake_log_write(const char *buf, size_t len)
{
	T("    log: %.*s", (int)len, buf);
}

/* fd table chunks are too big for the allocator's caches: fresh pages for
 * each input would cost more than the rest of the run. Keep a few. */
#define CHUNK_BYTES (sizeof(struct co_fd) * CO_FD_CHUNK_SIZE)
static void *chunk_cache[8];
static int chunk_cached;

static void *chunk_get(void)
{
	void *p = chunk_cached ? chunk_cache[--chunk_cached] : malloc(CHUNK_BYTES);

	if (!p)
		abort();
	return p;
}

static void chunk_put(void *p)
{
	if (chunk_cached < (int)(sizeof(chunk_cache) / sizeof(chunk_cache[0])))
		chunk_cache[chunk_cached++] = p;
	else
		free(p);
}

static void *fake_alloc(size_t size)
{
	if (fail_alloc > 0) {
		fail_alloc--;
		T("    alloc(%zu) fails\n", size);
		return NULL;
	}
	return size == CHUNK_BYTES ? chunk_get() : malloc(size);
}

static void *fake_realloc(void *p, size_t size)
{
	if (fail_realloc > 0) {
		fail_realloc--;
		T("    realloc(%zu) fails\n", size);
		return NULL;
	}
	return realloc(p, size);
}

static void fake_free(void *p)
{
	free(p);
}

/* Members of struct co_sys that only a close handed over to another thread
 * uses (tests/fuzz/run.sh defines FUZZ_SYS_<name> for those this checkout's
 * core/sys.h has): this run has one thread, so any call is a failure. */
static __attribute__((unused)) int fake_unexpected(int fd)
{
	fail("core called a hand-over system call on fd %d in a single-threaded run", fd);
}

/* ctx->on_pending: called, fd lock held, when a queue becomes non-empty. */
static void fake_on_pending(struct co_ctx *c)
{
	CHECK(c == ctx, "on_pending with another context");
	CHECK(co__held_fd >= 0, "on_pending called without an fd lock held");
	on_pending_calls++;
}

static const struct co_sys fake_table = {
	.sendmsg = fake_sendmsg,
	.writev = fake_writev,
	.getsockopt = fake_getsockopt,
	.getpeername = fake_getpeername,
	.fcntl_getfl = fake_fcntl_getfl,
	.socket_id = fake_socket_id,
	.poll = fake_poll,
#ifdef FUZZ_SYS_close
	.close = fake_unexpected,
#endif
#ifdef FUZZ_SYS_placeholder
	.placeholder = fake_unexpected,
#endif
#ifdef FUZZ_SYS_hand_over
	.hand_over = fake_unexpected,
#endif
	.now_ns = fake_now,
	.log_write = fake_log_write,
	.alloc = fake_alloc,
	.realloc = fake_realloc,
	.free = fake_free,
};

/* ---- sockets ------------------------------------------------------------ */

static int sock_new(enum kind kind)
{
	int k;

	for (k = 0; k < NSOCK; k++) {
		struct sock *s = &socks[k];

		if (s->refs)
			continue;
		free(s->owed);
		memset(s, 0, sizeof(*s));
		s->refs = 1;
		s->kind = kind;
		s->id = ++next_id;
		s->space = UNLIMITED;
		s->polls_until_free = -1;
		return k;
	}
	abort(); /* NFD fds never need more than NFD sockets */
}

/* fd i stops naming its socket; the socket goes when no fd names it. */
static void fd_unbind(int i)
{
	struct sock *s = sock_of(i);

	if (!s)
		return;
	fd_sock[i] = -1;
	if (--s->refs == 0) {
		CHECK(inflight(s) == 0, "socket %d went away with %zu owed bytes unsent",
		      sock_slot(s), inflight(s));
		s->tent = NULL;
	}
}

static void fd_bind_new(int i, enum kind kind)
{
	fd_unbind(i);
	if (kind != K_BADF)
		fd_sock[i] = sock_new(kind);
}

/* ---- invariants ----------------------------------------------------------- */

/* Returns 1 if fd is socket id's owner and no fd of it is recorded as
 * passing. */
static int sockmap_owns(uint64_t id, int fd)
{
	size_t k;

	for (k = 0; k < ctx->socks.cap; k++)
		if (ctx->socks.slots[k].id == id)
			return ctx->socks.slots[k].owner == fd && ctx->socks.slots[k].passing == 0;
	return 0;
}

static void check_invariants(void)
{
	uint64_t writes = 0, wbytes = 0;
	int i, bits = 0, errors = 0;
	struct co_stats *st = &ctx->stats;
	size_t max_queue = ctx->cfg.max_bytes;

	CHECK(co__held_fd == -1, "fd %d is still held after the operation", co__held_fd);
#ifdef FUZZ_HAVE_SIGNAL_WRITES
	CHECK(co__signal_writes.len == 0, "%zu bytes of a signal handler's write still kept",
	      co__signal_writes.len);
#endif
	for (i = 0; i < NFD; i++) {
		struct co_fd *f = ent(i);
		int fd = fd_num[i], kind, bit;
		size_t ql;

		if (!f)
			continue;
		CHECK(pthread_mutex_trylock(&f->lock) == 0, "fd %d's lock is still taken", fd);
		pthread_mutex_unlock(&f->lock);
		kind = atomic_load(&f->kind);
		ql = pending_len(&f->q);
		bit = (atomic_load(&ctx->fds.pending_bits[(unsigned)fd / CO_FD_WORD_BITS]) >>
		       ((unsigned)fd % CO_FD_WORD_BITS)) & 1;
		bits += bit;
		CHECK(bit == (ql > 0), "fd %d: pending bit %d but %zu bytes queued", fd, bit, ql);
		CHECK(!bit || atomic_load(&ctx->fds.pending_top) >= fd,
		      "fd %d pending above pending_top %d", fd, atomic_load(&ctx->fds.pending_top));
		CHECK(f->q.head <= f->q.tail && f->q.tail <= f->q.cap, "fd %d: queue bounds broken", fd);
		CHECK(ql <= max_queue, "fd %d: %zu bytes queued, more than max_bytes %zu", fd, ql,
		      ctx->cfg.max_bytes);
		CHECK(f->q.cap <= (max_queue > 4096 ? 2 * max_queue : 4096),
		      "fd %d: queue buffer of %zu bytes for max_bytes %zu", fd, f->q.cap,
		      ctx->cfg.max_bytes);
		CHECK(kind == CO_FD_STREAM || ql == 0, "fd %d: %zu bytes queued on a %s fd", fd, ql,
		      kind == CO_FD_PASS ? "PASS" : "UNKNOWN");
		CHECK(f->writes == 0 || (ql > 0 && f->wbytes <= ql),
		      "fd %d: %u writes (%zu bytes) counted for a queue of %zu", fd, f->writes,
		      f->wbytes, ql);
		writes += f->writes;
		wbytes += f->wbytes;
		CHECK(f->deferred_err == pend[i], "fd %d: deferred error %d, model expects %d", fd,
		      (int)f->deferred_err, pend[i]);
		errors += f->deferred_err != 0;
		if (kind == CO_FD_UNKNOWN) {
			CHECK(atomic_load(&f->sock_id) == 0, "fd %d: UNKNOWN but holds socket id %llu",
			      fd, (unsigned long long)atomic_load(&f->sock_id));
			CHECK(f->deferred_err == 0, "fd %d: UNKNOWN with a deferred error", fd);
		}
		if (kind == CO_FD_STREAM) {
			struct sock *s = sock_of(i);

			CHECK(s && is_stream_kind(s->kind), "fd %d is coalesced but names a %s", fd,
			      s ? kind_name[s->kind] : "closed fd");
			CHECK(atomic_load(&f->sock_id) == s->id,
			      "fd %d is coalesced with socket id %llu, but names socket %llu", fd,
			      (unsigned long long)atomic_load(&f->sock_id), (unsigned long long)s->id);
			CHECK(sockmap_owns(s->id, fd), "fd %d: socket id %llu not mapped to it alone", fd,
			      (unsigned long long)s->id);

			if (ql)
				CHECK(f->first_ns <= s->since,
				      "fd %d: queue stamped at %llu, its oldest owed byte was taken at %llu",
				      fd, (unsigned long long)f->first_ns, (unsigned long long)s->since);
		}
	}
	CHECK(atomic_load(&ctx->fds.pending_count) == bits, "pending_count %d, %d queues non-empty",
	      atomic_load(&ctx->fds.pending_count), bits);
#ifdef FUZZ_HAVE_FD_ERROR
	CHECK(atomic_load(&ctx->fds.error_count) == errors, "error_count %d, %d fds hold an error",
	      atomic_load(&ctx->fds.error_count), errors);
#else
	(void)errors;
#endif
	/* The deadline flusher is told at least when the model sees owed bytes
	 * start waiting (a queue can refill before its bit is cleared). */
	CHECK(on_pending_calls <= model_became_pending,
	      "on_pending called %llu times, queues became non-empty %llu times",
	      (unsigned long long)on_pending_calls, (unsigned long long)model_became_pending);
	CHECK(co_stat_get(st, CO_ST_flush_syscalls) == core_calls,
	      "flush_syscalls %llu, core made %llu sendmsg calls",
	      (unsigned long long)co_stat_get(st, CO_ST_flush_syscalls),
	      (unsigned long long)core_calls);
	CHECK(co_stat_get(st, CO_ST_flush_bytes) == core_bytes,
	      "flush_bytes %llu, core's sendmsg calls placed %llu",
	      (unsigned long long)co_stat_get(st, CO_ST_flush_bytes),
	      (unsigned long long)core_bytes);
	CHECK(co_stat_get(st, CO_ST_bytes_dropped) == model_dropped,
	      "bytes_dropped %llu, the model saw %llu dropped",
	      (unsigned long long)co_stat_get(st, CO_ST_bytes_dropped),
	      (unsigned long long)model_dropped);
	CHECK(co_stat_get(st, CO_ST_writes_queued) + writes == model_app_writes,
	      "writes_queued %llu + %llu unfolded, the model saw %llu writes queued",
	      (unsigned long long)co_stat_get(st, CO_ST_writes_queued), (unsigned long long)writes,
	      (unsigned long long)model_app_writes);
	CHECK(co_stat_get(st, CO_ST_bytes_queued) + wbytes == model_app_bytes,
	      "bytes_queued %llu + %llu unfolded, the model saw %llu bytes queued",
	      (unsigned long long)co_stat_get(st, CO_ST_bytes_queued), (unsigned long long)wbytes,
	      (unsigned long long)model_app_bytes);
	CHECK(co_stat_get(st, CO_ST_deferred_errors) == model_deferred,
	      "deferred_errors %llu, the model saw %llu",
	      (unsigned long long)co_stat_get(st, CO_ST_deferred_errors),
	      (unsigned long long)model_deferred);
}

/* ---- operations ------------------------------------------------------------ */

static void op_begin(int drain, int nonblocking)
{
	int k;

	op_drain = drain;
	op_nonblocking = nonblocking;
	op_nopoll = 0;
	op_start_ns = now_ns;
	op_calls = core_calls;
	for (k = 0; k < NSOCK; k++)
		socks[k].perm_hard = socks[k].perm_transient = socks[k].perm_again =
			socks[k].perm_forget = 0;
}

/* A flush on behalf of no application call (read, wait, deadline, order,
 * fork, signal): a hard error on fd i is kept for its next write. */
static void note_deferred(uint64_t calls_before)
{
	int i;

	for (i = 0; i < NFD; i++) {
		if (hard_at[i] <= calls_before)
			continue;
		pend[i] = hard_err[i];
		model_deferred++;
		T("    model: fd %d owes its next write error %d\n", fd_num[i], hard_err[i]);
	}
}

static void op_end(void)
{
	int i;

	(void)i;
	reconcile_all();
	check_invariants();
}

/* Reads the input. Past its end, every byte is 0. */
struct rd {
	const uint8_t *p;
	size_t n, i;
};

static uint8_t u8(struct rd *r)
{
	return r->i < r->n ? r->p[r->i++] : 0;
}

static size_t write_size(int i, uint8_t s0, uint8_t s1)
{
	size_t max = ctx->cfg.max_bytes, large = ctx->cfg.large_bytes, n;
	long d = (long)(s1 % 5) - 2;

	switch (s0 >> 5) {
	case 0:
		n = 0;
		break;
	case 1:
		n = 1 + (s1 & 15u);
		break;
	case 2:
		n = 1 + (size_t)s1;
		break;
	case 3:
		n = 1 + ((((size_t)s0 & 31) << 8 | s1) % 4096);
		break;
	case 4: /* what brings the queue to max_bytes, give or take */
		n = (size_t)((long)(max - ent_qlen(i)) + d);
		break;
	case 5:
		n = (size_t)((long)large + d);
		break;
	case 6:
		n = ((((size_t)s0 & 31) << 8) | s1) * 37;
		break;
	default:
		n = 1 + (s1 & 63u);
		break;
	}
	if ((long)n < 0)
		n = 0;
	return n > MAX_WRITE ? MAX_WRITE : n;
}

/* One array per nesting level: a signal handler's write must not clobber the
 * iovecs of the write it interrupted. */
static struct iovec iov_levels[2][FAKE_IOV_MAX + 2];

/* Splits [p, p + total) into cnt iovecs, some of them empty if seed says so. */
static void split(struct iovec *iovs, const unsigned char *p, size_t total, int cnt,
		  unsigned seed)
{
	uint32_t x = seed * 2654435761u + 1;
	size_t off = 0;
	int k;

	for (k = 0; k < cnt; k++) {
		size_t part;

		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		if (k == cnt - 1)
			part = total - off;
		else if ((seed & 4) && x % 4 == 0)
			part = 0;
		else if (seed & 4)
			part = (total - off) / (size_t)(cnt - k) + (x >> 8) % 3;
		else
			part = (total - off) / (size_t)(cnt - k) + ((x >> 8) % 3 == 0 && seed & 8);
		if (part > total - off)
			part = total - off;
		iovs[k].iov_base = (void *)(p + off);
		iovs[k].iov_len = part;
		off += part;
	}
}

static void do_signal_op(void);

/* Returns 1 if, since calls_before, a send on another fd of fd i's socket
 * failed with err and kept its queue (EAGAIN...): the queue that fd i's
 * write had to wait behind, which fails the write as a full socket would. */
static int sibling_said(int i, uint64_t calls_before, int err)
{
	int j;

	for (j = 0; j < NFD; j++)
		if (j != i && sock_of(j) && sock_of(j) == sock_of(i) && soft_at[j] > calls_before &&
		    soft_err[j] == err)
			return 1;
	return 0;
}

/* One application write on fd i, made the way the shim makes it. */
static void do_write(int i, size_t total, int cnt, unsigned seed, int flags, unsigned how,
		     int nested)
{
	static uint64_t serial;
	int fd = fd_num[i];
	struct sock *s = sock_of(i);
	const unsigned char *p, *outer_tent = NULL;
	size_t outer_len = 0, accepted = 0;
	uint64_t calls_before = core_calls, core_end;
	int reentrant = co__held_fd == fd, passes, plain, j;
	/* A deferred error is for the next write core sees on a coalesced fd. */
	int expect_err = !reentrant && ent_kind(i) == CO_FD_STREAM ? pend[i] : 0;
	struct co_fd *held = NULL;
	ssize_t r = CO_PASSTHROUGH;
	struct iovec *iovs = iov_levels[nested ? 1 : 0];
	int saved_nonblocking = op_nonblocking, saved_drain = op_drain;

	/* A write must not block when it says MSG_DONTWAIT, not even one that
	 * stops coalescing another fd of its socket: that fd's queue goes
	 * first, as far as the socket takes it, or the write fails as a full
	 * socket would. A signal handler's nested write on a shared socket
	 * may have the socket's owner (its own thread holds it) stopped when
	 * the interrupted operation ends, which drains it as close does. */
	op_nonblocking = flags & MSG_DONTWAIT;
	if (s && s->refs > 1 && nested)
		op_drain = 1;

	if (cnt == 0)
		total = 0;
	serial++;
	p = src + (serial * 104729u + total * 31u) % (SRC_SIZE - total);
	split(iovs, p, total, cnt, seed);
	total_written += total;
	if (s) {
		if (s->tent) { /* a signal handler writing during a write to the same socket */
			CHECK(s->tent_sent == 0, "socket %d: bytes of a write handed back to libc were "
			      "sent before libc was called", sock_slot(s));
			outer_tent = s->tent;
			outer_len = s->tent_len;
		}
		s->tent = p;
		s->tent_len = total;
		s->tent_sent = 0;
	}
	T("  %swrite(fd %d, %zu bytes in %d iov, flags %#x%s%s)\n", nested ? "signal handler: " : "",
	  fd, total, cnt, flags, how & CO_WRITE_ADDR ? ", addr" : "",
	  how & CO_WRITE_CONTROL ? ", control" : "");
	/* With direct sends off, a plain write on a coalesced fd is queued or
	 * sent along: never handed to libc (unless memory runs out, or after
	 * the final flush, when every write goes out at once). */
	plain = !ctx->cfg.direct && !reentrant && ent_kind(i) == CO_FD_STREAM && total > 0 &&
		!atomic_load(&ctx->exiting) &&
		cnt <= IOV_MAX && !(flags & ~(MSG_DONTWAIT | MSG_NOSIGNAL | MSG_MORE)) && !how &&
		!expect_err && !fail_alloc && !fail_realloc;
	passes = co_fd_passes(ctx, fd);
	if (!passes)
		r = co_write(ctx, fd, iovs, cnt, flags, how, &held);
	core_end = core_calls;
	if (r == CO_PASSTHROUGH)
		T("    = PASSTHROUGH%s\n", held ? " (fd held)" : "");
	else
		T("    = %zd\n", r);
	if (r == CO_PASSTHROUGH) {
		ssize_t n;

		CHECK(!expect_err, "fd %d: a write went to libc instead of returning the deferred "
		      "error %d", fd, expect_err);
		CHECK(!plain, "fd %d: a plain write on a coalesced fd handed to libc with direct "
		      "sends off", fd);
		if (held) {
			CHECK(held == ent(i) && co__held_fd == fd, "fd %d: held is not fd's locked entry",
			      fd);
			CHECK(pending_len(&held->q) == 0, "fd %d: a write handed back to libc with %zu "
			      "bytes still queued", fd, pending_len(&held->q));
		} else {
			CHECK(reentrant || ent_kind(i) != CO_FD_STREAM,
			      "fd %d: a write on a coalesced fd handed back to libc unlocked", fd);
		}
		CHECK(!s || s->tent_sent == 0, "fd %d: core sent part of a write it handed back", fd);
		if (sig_armed && !nested) {
			int may_follow = s && inflight(s) == 0;

			sig_armed = 0;
			do_signal_op();
			if (s)
				s->handler_may_follow = may_follow;
		}
		n = libc_send(i, iovs, cnt, flags, how);
		if (s)
			s->handler_may_follow = 0;
		/* Releasing fd may send what a signal handler wrote meanwhile: that
		 * write (flags 0) may block as it would have in the handler, and
		 * on a full nonblocking socket give up after the linger time. */
		op_nonblocking = 0;
		op_drain = 1;
		co_write_end(held, n);
		accepted = n > 0 ? (size_t)n : 0;
		CHECK(!s || s->tent_sent == accepted, "fd %d: libc took %zu bytes, %zu reached the wire",
		      fd, accepted, s ? s->tent_sent : 0);
	} else {
		CHECK(!held, "fd %d: held set without CO_PASSTHROUGH", fd);
		if (expect_err) {
			CHECK(r == -expect_err, "fd %d: the deferred error %d was not returned (got %zd)", fd,
			      expect_err, r);
			CHECK(core_calls == calls_before, "fd %d: sent before returning a deferred error", fd);
			pend[i] = 0;
		} else if (r < 0) {
			int e = (int)-r;

			CHECK((hard_at[i] > calls_before && hard_err[i] == e) ||
			      (soft_at[i] > calls_before && soft_err[i] == e) ||
			      sibling_said(i, calls_before, e),
			      "fd %d: co_write returned %zd, which the fake did not say during the call",
			      fd, r);
		} else {
			CHECK((size_t)r <= total, "fd %d: co_write took %zd of %zu bytes", fd, r, total);
			accepted = (size_t)r;
		}
		if (!expect_err && hard_at[i] > calls_before && r != -hard_err[i]) {
			pend[i] = hard_err[i];
			T("    model: fd %d owes its next write error %d\n", fd, hard_err[i]);
		}
	}
	/* Another fd of the socket whose queue had to go first in core's
	 * part of this call, and failed (dropped), owes that error to its own
	 * next call. */
	for (j = 0; j < NFD; j++)
		if (j != i && s && sock_of(j) == s && hard_at[j] > calls_before &&
		    hard_at[j] <= core_end) {
			pend[j] = hard_err[j];
			model_deferred++;
			T("    model: fd %d owes its next write error %d\n", fd_num[j], hard_err[j]);
		}
	if (s) {
		CHECK(s->tent_sent <= accepted, "fd %d: %zu bytes of the call reached the wire, but "
		      "the call was told %zu", fd, s->tent_sent, accepted);
		if (accepted > s->tent_sent) {
			/* The part of the call not sent was queued: all of it. */
			CHECK(accepted == total,
			      "fd %d: %zu of %zu bytes sent, %zu more counted as taken", fd, s->tent_sent,
			      total, accepted - s->tent_sent);
			owed_append(s, p + s->tent_sent, accepted - s->tent_sent);
			model_app_writes++;
			model_app_bytes += accepted - s->tent_sent;
		}
		s->tent = outer_tent;
		s->tent_len = outer_len;
		s->tent_sent = 0;
		reconcile(s);
	} else {
		CHECK(accepted == 0, "fd %d is closed, yet %zu bytes were taken", fd, accepted);
	}
	op_nonblocking = saved_nonblocking;
	op_drain = saved_drain;
}

/* What a signal handler does in the middle of a write handed back to libc:
 * writes (perhaps on the same fd, whose lock this thread holds), or flushes
 * as the fatal-signal handler and the read hooks do. */
static void do_signal_op(void)
{
	uint64_t before = core_calls;
	int saved_nb = op_nonblocking;

	switch (sig_type % 3) {
	case 0:
		do_write(sig_fd, sig_len, 1 + (int)(sig_len % 3), 7, sig_flags, 0, 1);
		break;
	case 1:
		T("  signal: flush_all_nowait\n");
		op_nonblocking = 1;
		co_flush_all_nowait(ctx, CO_ST_flush_signal);
		op_nonblocking = saved_nb;
		note_deferred(before);
		break;
	default:
		T("  signal: read\n");
		op_nonblocking = 1;
		co_note_wait();
		co_flush_if_pending(ctx, CO_ST_flush_read);
		op_nonblocking = saved_nb;
		note_deferred(before);
		break;
	}
}

#ifdef FUZZ_HAVE_FD_ERROR
/* A read on fd after the flush: it gets the error a flush took from the
 * socket, unless that is EPIPE (which only writes see). */
static void do_read_error(int i)
{
	int e = pend[i], r = co_take_read_error(ctx, fd_num[i]);

	T("    take_read_error(fd %d) = %d\n", fd_num[i], r);
	if (e && e != EPIPE) {
		CHECK(r == -e, "fd %d: a read got %d, the error kept is %d", fd_num[i], r, e);
		pend[i] = 0;
		CHECK(ent_kind(i) == CO_FD_PASS,
		      "fd %d: still coalesced after its read got error %d", fd_num[i], e);
	} else {
		CHECK(r == 0, "fd %d: a read got %d, the model keeps error %d", fd_num[i], r, e);
	}
}

/* getsockopt(SO_ERROR) takes the kept error; poll's POLLERR only looks. */
static void do_fd_error(int i, int take)
{
	int r = co_fd_error(ctx, fd_num[i], take);

	T("    fd_error(fd %d, %s) = %d\n", fd_num[i], take ? "take" : "look", r);
	CHECK(r == pend[i], "fd %d: co_fd_error says %d, the kept error is %d", fd_num[i], r,
	      pend[i]);
	if (take)
		pend[i] = 0;
}
#endif

static void check_after_close(int i)
{
	struct co_fd *f = ent(i);

	if (!f)
		return;
	CHECK(pending_len(&f->q) == 0, "fd %d: %zu bytes still queued after close", fd_num[i],
	      pending_len(&f->q));
	CHECK(atomic_load(&f->kind) == CO_FD_UNKNOWN, "fd %d: kind %d after close", fd_num[i],
	      atomic_load(&f->kind));
}

static void do_close(int i, int variant)
{
	struct co_fd *f = NULL;

	pend[i] = 0;
#ifdef FUZZ_HAVE_CLOSE_OR_HAND_OVER
	if (variant & 1) {
		int handed = co_close_or_hand_over(ctx, fd_num[i], &f);

		CHECK(!handed, "fd %d: close handed over in a single-threaded run", fd_num[i]);
	} else
#endif
	{
		(void)variant;
		f = co_close_begin(ctx, fd_num[i]);
	}
	T("  close(fd %d)\n", fd_num[i]);
	if (f || ent(i))
		check_after_close(i);
	{
		struct sock *s = sock_of(i);

		if (s)
			reconcile(s);
	}
	fd_unbind(i);
	co_close_end(f);
}

static enum kind kind_from(uint8_t b)
{
	static const enum kind kinds[16] = { K_TCP,  K_TCP,	 K_TCP,	    K_TCP6,   K_UNIX,    K_UNIX,
					     K_TCP,  K_UDP,	 K_NOTSOCK, K_UNCONN, K_SEQPACKET, K_SCTP,
					     K_UNIX, K_TCP6, K_TCP,	    K_UDP };

	return kinds[b & 15];
}

static void do_stop(int i, enum co_counter reason)
{
	struct co_fd *f;

	co_fd_stop(ctx, fd_num[i], reason);
	f = ent(i);
	if (f) {
		CHECK(pending_len(&f->q) == 0, "fd %d: bytes still queued after co_fd_stop", fd_num[i]);
		CHECK(atomic_load(&f->kind) == CO_FD_PASS, "fd %d: not PASS after co_fd_stop",
		      fd_num[i]);
	}
	/* A deferred error stays, for a read or SO_ERROR. */
}

/* fork: the parent sends what it can, keeps the rest; a copy of the context
 * plays the child, which must start with nothing queued. */
static void do_fork(void)
{
	static struct co_ctx child_storage;
	struct co_ctx *child = &child_storage;
	int c, i;
	unsigned char kinds[NFD];

	op_nopoll = 1;
	co_flush_all_before_fork(ctx);
	op_nopoll = 0;
	T("  fork\n");
	memcpy(child, ctx, sizeof(*child));
	for (c = 0; c < CO_FD_CHUNKS; c++) {
		struct co_fd *chunk = atomic_load(&ctx->fds.chunk[c]), *copy;
		int j;

		if (!chunk)
			continue;
		copy = chunk_get();
		memcpy(copy, chunk, CHUNK_BYTES);
		for (j = 0; j < CO_FD_CHUNK_SIZE; j++) {
			if (!chunk[j].q.data)
				continue;
			copy[j].q.data = malloc(chunk[j].q.cap);
			if (!copy[j].q.data)
				abort();
			memcpy(copy[j].q.data, chunk[j].q.data, chunk[j].q.cap);
		}
		atomic_store(&child->fds.chunk[c], copy);
	}
	if (ctx->socks.slots) {
		child->socks.slots = malloc(ctx->socks.cap * sizeof(*ctx->socks.slots));
		if (!child->socks.slots)
			abort();
		memcpy(child->socks.slots, ctx->socks.slots, ctx->socks.cap * sizeof(*ctx->socks.slots));
	}
	for (i = 0; i < NFD; i++)
		kinds[i] = (unsigned char)ent_kind(i);
	{
		uint64_t calls = core_calls;

		op_nonblocking = 1;
		co_after_fork_child(child);
		op_nonblocking = 0;
		CHECK(core_calls == calls, "the child sent bytes the parent owns");
	}
	CHECK(atomic_load(&child->fds.pending_count) == 0, "the child has %d pending queues",
	      atomic_load(&child->fds.pending_count));
	for (i = 0; i < NFD; i++) {
		struct co_fd *f = co_fd_find(&child->fds, fd_num[i]);

		if (!f)
			continue;
		CHECK(pending_len(&f->q) == 0 && f->writes == 0 && f->wbytes == 0,
		      "fd %d: the child kept a queue", fd_num[i]);
		CHECK(atomic_load(&f->kind) == kinds[i], "fd %d: the child changed its kind", fd_num[i]);
		CHECK(pthread_mutex_trylock(&f->lock) == 0, "fd %d: locked in the child", fd_num[i]);
		pthread_mutex_unlock(&f->lock);
	}
	for (c = 0; c < CO_FD_CHUNKS; c++) {
		struct co_fd *chunk = atomic_load(&child->fds.chunk[c]);
		int j;

		if (!chunk)
			continue;
		for (j = 0; j < CO_FD_CHUNK_SIZE; j++) {
			CHECK(!(atomic_load(&child->fds.pending_bits[(unsigned)(c * CO_FD_CHUNK_SIZE + j) /
								  CO_FD_WORD_BITS]) &
				(1UL << ((unsigned)(c * CO_FD_CHUNK_SIZE + j) % CO_FD_WORD_BITS))),
			      "fd %d: pending in the child", c * CO_FD_CHUNK_SIZE + j);
			free(chunk[j].q.data);
			pthread_mutex_destroy(&chunk[j].lock);
		}
		chunk_put(chunk);
	}
	free(child->socks.slots);
	pthread_mutex_destroy(&child->socks.lock);
}

static void do_due(uint8_t amount, uint8_t maxb)
{
	uint64_t delay = ctx->cfg.delay_ns, adv, next;
	int stalled[8], nstalled = 0, max = maxb % 9, i, k;

	switch (amount & 7) {
	case 0:
		adv = 0;
		break;
	case 1:
		adv = delay - 1;
		break;
	case 2:
		adv = delay;
		break;
	case 3:
		adv = delay + 1;
		break;
	case 4:
		adv = (uint64_t)(amount >> 3) * 1000;
		break;
	case 5:
		adv = (uint64_t)(amount >> 3) * (delay / 8);
		break;
	case 6:
		adv = ctx->cfg.linger_ns + 1;
		break;
	default:
		adv = (uint64_t)(amount >> 3) * 1000000;
		break;
	}
	now_ns += adv;
	next = co_flush_due(ctx, now_ns, stalled, max, &nstalled);
	T("  +%llu ns, flush_due(max %d) = next %llu, %d stalled\n", (unsigned long long)adv, max,
	  (unsigned long long)(next ? next - CLOCK_START : 0), nstalled);
	CHECK(nstalled >= 0 && nstalled <= max, "flush_due reported %d stalled of at most %d",
	      nstalled, max);
	for (i = 0; i < NFD; i++) {
		struct co_fd *f = ent(i);
		uint64_t due;
		int listed = 0;

		if (!f || pending_len(&f->q) == 0)
			continue;
		due = f->first_ns + delay;
		if (due > now_ns) {
			CHECK(next && next <= due, "fd %d: due at %llu, flush_due says next %llu",
			      fd_num[i], (unsigned long long)due, (unsigned long long)next);
			continue;
		}
		for (k = 0; k < nstalled; k++)
			listed |= stalled[k] == fd_num[i];
		/* Short of buffers, core tries again after one delay. */
		if ((soft_err[i] == ENOBUFS || soft_err[i] == ENOMEM) && soft_at[i] > op_calls) {
			CHECK(next && next <= now_ns + delay, "fd %d: overdue queue kept after "
			      "ENOBUFS/ENOMEM with no retry within a delay (next %llu)", fd_num[i],
			      (unsigned long long)next);
			continue;
		}
		CHECK(listed || nstalled == max,
		      "fd %d: overdue queue neither sent nor reported stalled", fd_num[i]);
		CHECK(soft_at[i] > op_calls, "fd %d: overdue queue left without an EAGAIN", fd_num[i]);
	}
	for (k = 0; k < nstalled; k++) {
		int j = fd_index(stalled[k]);

		CHECK(j >= 0 && ent_qlen(j) > 0, "flush_due reported fd %d stalled, with no queue",
		      stalled[k]);
	}
}

/* Bytes queued on fd i and on every other fd of its socket. */
static size_t socket_qlen(int i)
{
	size_t n = ent_qlen(i);
	int j;

	for (j = 0; j < NFD; j++)
		if (j != i && sock_of(i) && sock_of(j) == sock_of(i))
			n += ent_qlen(j);
	return n;
}

/* co_flush_before (for an operation that must follow fd i's bytes), or with
 * send, co_flush_before_send (for one that sends on fd i's socket: the
 * bytes of every fd of the socket go first). */
static void do_flush_before(int i, int flags, int send)
{
	struct co_fd *f;
	int r = send ? co_flush_before_send(ctx, fd_num[i], CO_ST_flush_order, flags)
		     : co_flush_before(ctx, fd_num[i], CO_ST_flush_order, flags);

	T("  flush_before%s(fd %d, %s) = %d\n", send ? "_send" : "", fd_num[i],
	  flags ? "DONTWAIT" : "blocking", r);
	f = ent(i);
	if (r == 0) {
		CHECK(!f || atomic_load(&f->kind) != CO_FD_STREAM || pending_len(&f->q) == 0,
		      "fd %d: flush_before returned 0 with %zu bytes queued", fd_num[i], ent_qlen(i));
		CHECK(!send || socket_qlen(i) == 0,
		      "fd %d: flush_before_send returned 0 with %zu bytes queued on its socket",
		      fd_num[i], socket_qlen(i));
		return;
	}
	CHECK(r == -EAGAIN || r == -ENOBUFS || r == -ENOMEM || (r == -EINTR && !flags),
	      "fd %d: flush_before returned %d", fd_num[i], r);
	CHECK((soft_at[i] > op_calls && soft_err[i] == -r) || (send && sibling_said(i, op_calls, -r)),
	      "fd %d: flush_before returned %d, which the fake did not say", fd_num[i], r);
	CHECK(send ? socket_qlen(i) > 0 : ent_qlen(i) > 0,
	      "fd %d: flush_before returned %d with nothing queued", fd_num[i], r);
}

static void push_step(int i, int err, size_t limit, int count)
{
	struct sock *s = sock_of(i);

	if (!s || s->nsteps == NSTEPS)
		return;
	s->steps[s->nsteps++] = (struct step){ .err = err, .limit = limit, .count = count };
}

static void setup(const uint8_t *data, size_t size, struct rd *r)
{
	static const size_t maxes[4] = { 65536, 512, 4096, 70000 };
	static const uint64_t delays_us[4] = { 200, 1, 1000, 50 };
	static const uint64_t lingers_ms[4] = { 1000, 0, 1, 5 };
	static const enum kind special[NFD] = { K_UDP,	    K_NOTSOCK, K_UNCONN, K_SEQPACKET,
						K_SCTP,	    K_BADF,    K_UDP,	 K_NOTSOCK };
	struct co_config cfg;
	uint8_t b0, b1, b2, b3;
	size_t large;
	int i;

	r->p = data;
	r->n = size;
	r->i = 0;
	b0 = u8(r);
	b1 = u8(r);
	b2 = u8(r);
	b3 = u8(r);
	memset(&cfg, 0, sizeof(cfg));
	cfg.direct = !((b0 >> 5) & 1);
	cfg.max_bytes = maxes[b0 & 3];
	switch ((b0 >> 2) & 7) {
	case 0:
		large = CO_DEFAULT_LARGE_BYTES;
		break;
	case 1:
		large = 1;
		break;
	case 2:
		large = 100;
		break;
	case 3:
		large = 1000;
		break;
	case 4:
		large = cfg.max_bytes / 2;
		break;
	case 5:
		large = cfg.max_bytes - 1;
		break;
	case 6:
		large = cfg.max_bytes;
		break;
	default:
		large = 16u << 20;
		break;
	}
	cfg.large_bytes = large < cfg.max_bytes ? large : cfg.max_bytes; /* as co_config_load */
	cfg.delay_ns = delays_us[b1 & 3] * 1000;
	cfg.linger_ns = lingers_ms[(b1 >> 2) & 3] * 1000000;
	cfg.log_level = (b1 >> 4) & 1 ? CO_LOG_DEBUG : CO_LOG_ERROR;

	now_ns = CLOCK_START;
	fail_alloc = fail_realloc = 0;
	in_libc = 0;
	next_id = 1000;
	core_calls = core_bytes = model_dropped = model_app_writes = model_app_bytes = 0;
	model_deferred = 0;
	total_written = 0;
	sig_armed = 0;
	op_index = 0;
	co__wait_epoch = 0;
#ifdef FUZZ_HAVE_SIGNAL_WRITES
	co__signal_writes.len = 0;
#endif
	memset(hard_err, 0, sizeof(hard_err));
	memset(soft_err, 0, sizeof(soft_err));
	memset(hard_at, 0, sizeof(hard_at));
	memset(soft_at, 0, sizeof(soft_at));
	memset(pend, 0, sizeof(pend));
	for (i = 0; i < NSOCK; i++) {
		free(socks[i].owed);
		memset(&socks[i], 0, sizeof(socks[i]));
	}
	for (i = 0; i < NFD; i++) {
		unsigned sel = ((unsigned)(i < 4 ? b2 : b3) >> (2 * (i & 3))) & 3;
		enum kind k = sel == 0 ? K_TCP : sel == 1 ? K_UNIX : sel == 2 ? K_TCP6 : special[i];

		fd_sock[i] = -1;
		if (k != K_BADF)
			fd_sock[i] = sock_new(k);
	}
	co_ctx_init(ctx, &fake_table, &cfg);
	ctx->on_pending = fake_on_pending;
	on_pending_calls = model_became_pending = 0;
	T("config: max %zu, large %zu, direct %d, delay %llu us, linger %llu ms\n", cfg.max_bytes,
	  cfg.large_bytes, cfg.direct, (unsigned long long)cfg.delay_ns / 1000,
	  (unsigned long long)cfg.linger_ns / 1000000);
	for (i = 0; i < NFD; i++)
		T("  fd %d: %s\n", fd_num[i], sock_of(i) ? kind_name[sock_of(i)->kind] : "closed");
}

static void teardown(void)
{
	int c, i;

	for (c = 0; c < CO_FD_CHUNKS; c++) {
		struct co_fd *chunk = atomic_load(&ctx->fds.chunk[c]);

		if (!chunk)
			continue;
		for (i = 0; i < CO_FD_CHUNK_SIZE; i++) {
			free(chunk[i].q.data);
			pthread_mutex_destroy(&chunk[i].lock);
		}
		chunk_put(chunk);
	}
	free(ctx->socks.slots);
	pthread_mutex_destroy(&ctx->socks.lock);
	for (i = 0; i < NSOCK; i++) {
		free(socks[i].owed);
		socks[i].owed = NULL;
	}
}

/* The end of the run: every socket writable, everything flushed as at exit;
 * then every owed byte must be on its wire (except on sockets shut down,
 * whose sends fail). */
static void final_check(void)
{
	int k, i;

	op_index++;
	T("end: every socket writable, flush_all_final\n");
	fail_alloc = fail_realloc = 0;
	for (k = 0; k < NSOCK; k++) {
		socks[k].nsteps = 0;
		socks[k].space = UNLIMITED;
	}
	op_begin(1, 0);
	co_flush_all_final(ctx, CO_ST_flush_exit);
	op_end();
	CHECK(atomic_load(&ctx->fds.pending_count) == 0, "queues left after flush_all_final");
	for (i = 0; i < NFD; i++) {
		struct sock *s = sock_of(i);

		CHECK(!s || inflight(s) == 0, "fd %d: owed bytes not on the wire at exit", fd_num[i]);
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	uint32_t x = 2463534242u;
	size_t k;

	(void)argc;
	(void)argv;
	trace = getenv("FUZZ_TRACE") && *getenv("FUZZ_TRACE") && strcmp(getenv("FUZZ_TRACE"), "0");
	src = malloc(SRC_SIZE);
	if (!src)
		abort();
	for (k = 0; k < SRC_SIZE; k++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		src[k] = (unsigned char)(x >> 11);
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const int flag_sel[8] = { 0, 0, MSG_NOSIGNAL, MSG_DONTWAIT, MSG_MORE, MSG_OOB,
					 MSG_DONTWAIT | MSG_NOSIGNAL, 0 };
	struct rd r;

	if (!src)
		LLVMFuzzerInitialize(NULL, NULL);
	setup(data, size, &r);
	while (r.i < r.n && op_index < MAX_OPS) {
		uint8_t op = u8(&r);
		int i = u8(&r) & (NFD - 1);

		op_index++;
		if (op < 100) {
			uint8_t fb = u8(&r), s0 = u8(&r), s1 = u8(&r), v = u8(&r);
			int flags = flag_sel[fb & 7], cnt;
			unsigned how = 0;
			size_t total = write_size(i, s0, s1);
			static const int cnts[8] = { 1, 1, 1, 2, 3, 8, 0, -1 };

			if (((fb >> 3) & 7) == 6)
				how = CO_WRITE_ADDR;
			else if (((fb >> 3) & 7) == 7)
				how = CO_WRITE_CONTROL;
			cnt = cnts[v & 7];
			if (cnt < 0)
				cnt = (v >> 3) & 1 ? FAKE_IOV_MAX : (v >> 4) & 1 ? FAKE_IOV_MAX + 1 : 100;
			if (total_written + total > MAX_TOTAL_BYTES)
				total = total & 255;
			op_begin(0, 0);
			do_write(i, total, cnt, v >> 3, flags, how, 0);
		} else if (op < 112) {
			uint8_t a = u8(&r);
			int v = a % 6;
			uint64_t before = core_calls;

			op_begin(0, 1);
			T("  %s\n", v == 0 ? "read" : v == 1 ? "blocking wait" : v == 2 ? "zero-timeout wait"
				   : v == 3 ? "flush_all_nowait" : v == 4 ? "read on fd" : "SO_ERROR/POLLERR");
			if (v <= 4)
				co_note_wait();
			if (v == 0 || v == 4)
				co_flush_if_pending(ctx, CO_ST_flush_read);
			else if (v == 1)
				co_flush_if_pending(ctx, CO_ST_flush_wait);
			else if (v == 3)
				co_flush_all_nowait(ctx, CO_ST_flush_wait);
			note_deferred(before);
#ifdef FUZZ_HAVE_FD_ERROR
			if (v == 4)
				do_read_error(i);
			else if (v == 5)
				do_fd_error(i, (a / 6) & 1);
#endif
		} else if (op < 118) {
			op_begin(0, 1);
			T("  note_wait x%d\n", 1 + i);
			for (int k = 0; k <= i; k++)
				co_note_wait();
		} else if (op < 120) {
			/* The counters as JSON, into a buffer of exactly the given size. */
			size_t size = (size_t)u8(&r) * (i + 1) * 4, len;
			char *buf = malloc(size ? size : 1);

			op_begin(0, 1);
			if (!buf)
				abort();
			len = co_stats_format(&ctx->stats, 1234, buf, size);
			T("  stats into %zu bytes: %zu\n", size, len);
			CHECK(size == 0 ? len == 0 : len < size && strlen(buf) == len,
			      "co_stats_format into %zu bytes returned %zu", size, len);
			free(buf);
		} else if (op < 135) {
			uint8_t amount = u8(&r), maxb = u8(&r);
			uint64_t before = core_calls;

			op_begin(0, 1);
			do_due(amount, maxb);
			note_deferred(before);
		} else if (op < 140) {
			op_begin(0, 1);
			now_ns += (uint64_t)i * ctx->cfg.delay_ns / 3 + 1;
			T("  clock now +%llu ns\n", (unsigned long long)(now_ns - CLOCK_START));
		} else if (op < 150) {
			uint8_t v = u8(&r);
			int flags = v & 1 ? MSG_DONTWAIT : 0;
			uint64_t before = core_calls;

			op_begin(0, flags != 0);
			do_flush_before(i, flags, v & 2);
			note_deferred(before);
		} else if (op < 158) {
			uint8_t v = u8(&r);

			op_begin(1, 0);
			do_close(i, v);
			if (v & 2) {
				fd_bind_new(i, kind_from(v >> 2));
				co_fd_forget(ctx, fd_num[i]);
				T("  reopen fd %d as %s\n", fd_num[i], kind_name[sock_of(i)->kind]);
			}
		} else if (op < 166) {
			uint8_t v = u8(&r);
			struct sock *s = sock_of(i);

			op_begin(0, 0);
			if (s) {
				/* fd gets a new meaning the shim learns from socket/accept: forget. */
				s->perm_forget = 1;
				co_fd_forget(ctx, fd_num[i]);
				reconcile(s);
			}
			fd_bind_new(i, kind_from(v));
			if (v & 16)
				co_fd_forget(ctx, fd_num[i]);
			pend[i] = 0;
			T("  %s fd %d as %s\n", s ? "replace" : "open", fd_num[i],
			  kind_name[sock_of(i)->kind]);
		} else if (op < 170) {
			/* The shim forgets an fd when its number gets a new file: accept
			 * or socket returning a number whose close it did not see. */
			struct sock *s = sock_of(i);
			enum kind k = s ? s->kind : K_TCP;

			op_begin(0, 0);
			if (s) {
				s->perm_forget = 1;
				co_fd_forget(ctx, fd_num[i]);
				reconcile(s);
			}
			fd_bind_new(i, k);
			co_fd_forget(ctx, fd_num[i]);
			pend[i] = 0;
			T("  fd %d is a new %s (accept): forget(fd %d)\n", fd_num[i], kind_name[k], fd_num[i]);
		} else if (op < 174) {
			uint8_t v = u8(&r) % 3;
			enum co_counter reason = v == 0 ? CO_ST_passthrough_dup
						 : v == 1 ? CO_ST_passthrough_shutdown
							  : CO_ST_passthrough_stdio;
			struct sock *s = sock_of(i);

			op_begin(1, 0);
			T("  stop(fd %d, %s)\n", fd_num[i], v == 0 ? "dup" : v == 1 ? "shutdown" : "fdopen");
			do_stop(i, reason);
			if (reason == CO_ST_passthrough_shutdown && s) {
				reconcile(s);
				s->dead = 1;
			}
		} else if (op < 178) {
			int j = u8(&r) & (NFD - 1);
			struct co_fd *f;

			op_begin(1, 0);
			if (j == i || !sock_of(i))
				continue; /* dup2 of a closed fd fails before the shim touches anything */
			/* fd j is closed, then names fd i's socket: core learns
			 * that on fd j's first write. */
			T("  dup2(fd %d, fd %d)\n", fd_num[i], fd_num[j]);
			f = co_close_begin(ctx, fd_num[j]);
			if (f || ent(j))
				check_after_close(j);
			if (sock_of(j))
				reconcile(sock_of(j));
			pend[j] = 0;
			fd_unbind(j);
			fd_sock[j] = fd_sock[i];
			socks[fd_sock[i]].refs++;
			co_close_end(f);
		} else if (op < 182) {
			int j = u8(&r) & (NFD - 1);

			op_begin(0, 0);
			/* A duplicate the shim never saw (inherited, or made by a raw
			 * system call), onto an fd core knows nothing about. */
			if (j == i || !sock_of(i) || ent_kind(j) != CO_FD_UNKNOWN || ent_qlen(j))
				continue;
			T("  fd %d becomes a duplicate of fd %d behind the shim's back\n", fd_num[j],
			  fd_num[i]);
			fd_unbind(j);
			fd_sock[j] = fd_sock[i];
			socks[fd_sock[i]].refs++;
		} else if (op < 185) {
			op_begin(1, 0);
			T("  flush_all_final\n");
			co_flush_all_final(ctx, i & 1 ? CO_ST_flush_exec : CO_ST_flush_exit);
			CHECK(atomic_load(&ctx->fds.pending_count) == 0,
			      "%d queues left after flush_all_final", atomic_load(&ctx->fds.pending_count));
		} else if (op < 190) {
			uint64_t before = core_calls;

			op_begin(0, 0);
			do_fork();
			note_deferred(before);
		} else if (op < 215) {
			uint8_t t = u8(&r), a = u8(&r);
			static const int errs[8] = { 0,		0,	     EAGAIN,  EINTR,
						     EPIPE,	ECONNRESET, ENOBUFS, ETIMEDOUT };
			int kind = t % 8, count = 1 + (t / 8) % 3;
			size_t limit = kind == 0 ? 1 + (size_t)(a % 64) : 1 + (size_t)a * 257;

			op_begin(0, 0);
			push_step(i, errs[kind], limit, count);
			if (errs[kind])
				T("  fake: next %d sends on fd %d fail with %d\n", count, fd_num[i], errs[kind]);
			else
				T("  fake: next %d sends on fd %d take at most %zu bytes\n", count, fd_num[i],
				  limit);
		} else if (op < 222) {
			op_begin(0, 0);
			if (i & 1)
				fail_realloc = 1 + (i >> 1) % 3;
			else
				fail_alloc = 1 + (i >> 1) % 3;
			T("  fake: next %d %s fail\n", 1 + (i >> 1) % 3, i & 1 ? "reallocs" : "allocs");
		} else if (op < 232) {
			uint8_t a = u8(&r);
			struct sock *s = sock_of(i);

			op_begin(0, 0);
			if (!s)
				continue;
			switch (a % 4) {
			case 0:
				s->space = 0;
				break;
			case 1:
				s->space = 1 + (size_t)a * 16;
				break;
			case 2:
				s->space = UNLIMITED;
				break;
			default:
				if (s->space != UNLIMITED)
					s->space += (size_t)a * 256;
				break;
			}
			T("  fake: fd %d can take %zu bytes without blocking\n", fd_num[i], s->space);
		} else if (op < 238) {
			uint8_t a = u8(&r);
			struct sock *s = sock_of(i);
			uint64_t before = core_calls;

			/* fcntl(F_SETFL): the shim sends what the socket takes first. */
			op_begin(0, 1);
			co_flush_before(ctx, fd_num[i], CO_ST_flush_order, MSG_DONTWAIT);
			note_deferred(before);
			if (s)
				s->nonblock = a & 1;
			T("  fcntl(fd %d, F_SETFL, %s)\n", fd_num[i], a & 1 ? "O_NONBLOCK" : "0");
		} else if (op < 242) {
			struct sock *s = sock_of(i);
			int polls = 1 + (int)(u8(&r) % 4);

			op_begin(0, 0);
			if (s)
				s->polls_until_free = polls;
			T("  fake: fd %d frees at the %d-th poll\n", fd_num[i], polls);
		} else if (op < 246) {
			struct sock *s = sock_of(i);

			op_begin(0, 0);
			if (s && s->kind == K_UNCONN) {
				s->kind = K_TCP;
				T("  fd %d connects\n", fd_num[i]);
			}
		} else if (op < 250) {
			uint8_t a = u8(&r), b = u8(&r);
			static const int sig_flag_sel[4] = { 0, 0, MSG_NOSIGNAL, MSG_OOB };

			op_begin(0, 0);
			sig_armed = 1;
			sig_type = a % 3;
			sig_flags = sig_flag_sel[(a >> 2) & 3];
			sig_fd = i;
			sig_len = (a >> 4) & 1 ? 1 + (size_t)b * 16 : 1 + (size_t)b;
			T("  armed a signal handler (%d) for the next write handed to libc\n", sig_type);
		} else {
			uint64_t before = core_calls;

			op_begin(0, 1);
			T("  fatal signal: flush_all_nowait\n");
			co_flush_all_nowait(ctx, CO_ST_flush_signal);
			note_deferred(before);
		}
		op_end();
	}
	final_check();
	teardown();
	return 0;
}
