/* The fake system call table: sockets, a recording sendmsg, a clock, poll,
 * allocation and the log, all in process memory. */
#include "fake_sys.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

#define FAKE_STEPS 16
#define FAKE_LOG_SIZE 65536

/* One scripted behaviour, applied to the next count sendmsg calls. */
struct fake_step {
	int count;
	int err;      /* If not 0, the call fails with -err. */
	size_t limit; /* Else it accepts at most this many bytes. */
};

struct fake_fd {
	enum fake_sock kind;
	int dup_of;       /* 1 + the fd this one duplicates, or 0. */
	uint64_t id;      /* The socket's identity (its "inode"). */
	char *wire;
	size_t wire_len;
	size_t wire_cap;
	int send_calls;
	int classify_calls;
	struct fake_step steps[FAKE_STEPS];
	int nsteps;
	int full;
	int polls_until_free; /* -1: poll never frees the socket. */
	int chaos;
	unsigned chaos_state;
	int closes;       /* sys.close calls on this fd. */
	int placeholder;  /* sys.placeholder put an inert socket here. */
	int gso_segments; /* UDP GSO offered, with this limit (0: not offered). */
	int gso_err;      /* Every GSO send fails with -gso_err. */
	uint32_t *dgrams; /* FAKE_UDP: the size of each datagram sent, in order, */
	uint16_t *ports;  /* and the port it was sent to (0: the connected peer). */
	size_t ndgrams, dgrams_cap;
};

static pthread_mutex_t fake_lock = PTHREAD_MUTEX_INITIALIZER;
static struct fake_fd fake_fds[FAKE_MAX_FD];
static int fake_total_calls;
static int fake_empty_calls;
static int fake_writev_count;
static struct fake_send_call fake_last;
static int fake_polls;
static int fake_sendmmsg_count;
static int fake_poll_fd = -1;
static short fake_poll_events;
static char fake_log_buf[FAKE_LOG_SIZE];
static size_t fake_log_len;
static int fake_log_count;

static uint64_t fake_next_id = 1;
static _Atomic uint64_t fake_now;
static _Atomic int fake_alloc_failures;
static _Atomic int fake_realloc_failures;
static _Atomic int fake_alloc_count;
static _Atomic int fake_realloc_count;

/* Returns the socket behind fd (following a dup), or NULL if fd is out of
 * the fake's range. */
static struct fake_fd *fake_fd_get(int fd)
{
	if (fd < 0 || fd >= FAKE_MAX_FD)
		return NULL;
	if (fake_fds[fd].dup_of)
		fd = fake_fds[fd].dup_of - 1;
	return &fake_fds[fd];
}

/* Returns fd's fake entry; a test that names an fd out of the fake's range
 * is itself broken, so that aborts. */
static struct fake_fd *fake_fd_must(int fd)
{
	struct fake_fd *s = fake_fd_get(fd);

	if (!s)
		abort();
	return s;
}

/* Appends len bytes to the wire of s, growing it as needed. */
static void wire_append(struct fake_fd *s, const void *buf, size_t len)
{
	size_t cap;

	if (s->wire_len + len > s->wire_cap) {
		cap = s->wire_cap ? s->wire_cap : 4096;
		while (cap < s->wire_len + len)
			cap *= 2;
		s->wire = realloc(s->wire, cap);
		if (!s->wire)
			abort();
		s->wire_cap = cap;
	}
	memcpy(s->wire + s->wire_len, buf, len);
	s->wire_len += len;
}

/* Records a datagram of len bytes sent on s to port (0: the peer). */
static void dgram_append(struct fake_fd *s, size_t len, int port)
{
	if (s->ndgrams == s->dgrams_cap) {
		s->dgrams_cap = s->dgrams_cap ? 2 * s->dgrams_cap : 256;
		s->dgrams = realloc(s->dgrams, s->dgrams_cap * sizeof(*s->dgrams));
		s->ports = realloc(s->ports, s->dgrams_cap * sizeof(*s->ports));
		if (!s->dgrams || !s->ports)
			abort();
	}
	s->ports[s->ndgrams] = (uint16_t)port;
	s->dgrams[s->ndgrams++] = (uint32_t)len;
}

/* The fake kernel's send: applies the script, then the socket's state.
 * Returns how many bytes it accepts, or -errno. fake_lock is held. */
static ssize_t fake_decide(struct fake_fd *s, const struct iovec *iov, int iovcnt,
			   int flags, size_t offered)
{
	struct fake_step *step;
	ssize_t result;
	unsigned r;

	if (s->nsteps > 0) {
		step = &s->steps[0];
		result = step->err ? -step->err
				   : (ssize_t)(offered < step->limit ? offered : step->limit);
		if (--step->count == 0) {
			memmove(&s->steps[0], &s->steps[1], sizeof(s->steps[0]) * (size_t)(s->nsteps - 1));
			s->nsteps--;
		}
		return result;
	}
	if (s->full)
		return -EAGAIN;
	if (s->chaos && (flags & MSG_DONTWAIT)) {
		/* xorshift32: cheap, and the same run every time for a seed. */
		r = s->chaos_state;
		r ^= r << 13;
		r ^= r >> 17;
		r ^= r << 5;
		s->chaos_state = r;
		if (r % 8 == 0)
			return -EAGAIN;
		if (r % 8 == 1 && iovcnt > 0 && iov[0].iov_len > 1)
			return (ssize_t)(1 + (r >> 8) % (iov[0].iov_len - 1));
	}
	return (ssize_t)offered;
}

/* Shared by sendmsg and writev: records the call and the accepted bytes
 * (on a UDP socket, the datagrams, sent to port, 0 for the peer: those of
 * gso bytes each but the last, or one if gso is 0). A GSO send the socket
 * does not take fails first. */
static ssize_t fake_send(int fd, const struct iovec *iov, int iovcnt, int flags, int had_name,
			 size_t gso, int port)
{
	struct fake_fd *s;
	size_t offered = 0, left;
	ssize_t result;
	int i;

	pthread_mutex_lock(&fake_lock);
	s = fake_fd_get(fd);
	if (!s || s->kind == FAKE_BADF) {
		pthread_mutex_unlock(&fake_lock);
		return -EBADF;
	}
	for (i = 0; i < iovcnt; i++)
		offered += iov[i].iov_len;
	if (gso && s->gso_err)
		result = -s->gso_err;
	else if (gso && (!s->gso_segments || offered > gso * (size_t)s->gso_segments))
		result = -EINVAL;
	else
		result = fake_decide(s, iov, iovcnt, flags, offered);
	if (result > 0) {
		left = (size_t)result;
		for (i = 0; i < iovcnt && left > 0; i++) {
			size_t n = iov[i].iov_len < left ? iov[i].iov_len : left;

			wire_append(s, iov[i].iov_base, n);
			left -= n;
		}
	}
	if (result >= 0 && s->kind == FAKE_UDP) {
		for (left = (size_t)result; gso && left > gso; left -= gso)
			dgram_append(s, gso, port);
		dgram_append(s, left, port);
	}
	s->send_calls++;
	fake_total_calls++;
	if (offered == 0)
		fake_empty_calls++;
	fake_last = (struct fake_send_call){
		.fd = fd,
		.flags = flags,
		.iovcnt = iovcnt,
		.had_name = had_name,
		.offered = offered,
		.result = result,
		.last_base = iovcnt > 0 ? iov[iovcnt - 1].iov_base : NULL,
		.last_len = iovcnt > 0 ? iov[iovcnt - 1].iov_len : 0,
	};
	pthread_mutex_unlock(&fake_lock);
	return result;
}

/* The segment size of a UDP_SEGMENT control message in msg, or 0. */
static size_t gso_size(const struct msghdr *msg)
{
	struct cmsghdr *cm;
	uint16_t seg;

	for (cm = CMSG_FIRSTHDR(msg); cm; cm = CMSG_NXTHDR((struct msghdr *)msg, cm)) {
		if (cm->cmsg_level == SOL_UDP && cm->cmsg_type == UDP_SEGMENT &&
		    cm->cmsg_len == CMSG_LEN(sizeof(seg))) {
			memcpy(&seg, CMSG_DATA(cm), sizeof(seg));
			return seg;
		}
	}
	return 0;
}

static ssize_t fake_sendmsg(int fd, const struct msghdr *msg, int flags)
{
	int inert;

	pthread_mutex_lock(&fake_lock);
	inert = fd >= 0 && fd < FAKE_MAX_FD && fake_fds[fd].placeholder;
	pthread_mutex_unlock(&fake_lock);
	if (inert)
		return -ENOTCONN;
	return fake_send(fd, msg->msg_iov, (int)msg->msg_iovlen, flags,
			 msg->msg_name != NULL || msg->msg_control != NULL, gso_size(msg),
			 msg->msg_name && msg->msg_namelen >= sizeof(struct sockaddr_in)
				 ? ntohs(((const struct sockaddr_in *)msg->msg_name)->sin_port)
				 : 0);
}

/* Each message is one send of its own, recorded like sendmsg's; stops at
 * the first that fails (its error is the result if none went). */
static int fake_sendmmsg(int fd, struct mmsghdr *msgs, unsigned int vlen, int flags)
{
	unsigned int i;
	ssize_t r;

	pthread_mutex_lock(&fake_lock);
	fake_sendmmsg_count++;
	pthread_mutex_unlock(&fake_lock);
	for (i = 0; i < vlen; i++) {
		r = fake_sendmsg(fd, &msgs[i].msg_hdr, flags);
		if (r < 0)
			return i ? (int)i : (int)r;
		msgs[i].msg_len = (unsigned int)r;
	}
	return (int)vlen;
}

int fake_sendmmsg_calls(void)
{
	int n;

	pthread_mutex_lock(&fake_lock);
	n = fake_sendmmsg_count;
	pthread_mutex_unlock(&fake_lock);
	return n;
}

static ssize_t fake_writev(int fd, const struct iovec *iov, int iovcnt)
{
	pthread_mutex_lock(&fake_lock);
	fake_writev_count++;
	pthread_mutex_unlock(&fake_lock);
	return fake_send(fd, iov, iovcnt, 0, 0, 0, 0);
}

/* The socket type, domain and protocol a kind of fake socket reports. */
static void fake_identity(enum fake_sock kind, int *type, int *domain, int *protocol)
{
	*type = SOCK_STREAM;
	*domain = AF_INET;
	*protocol = IPPROTO_TCP;
	switch (kind) {
	case FAKE_TCP6:
		*domain = AF_INET6;
		break;
	case FAKE_UNIX:
		*domain = AF_UNIX;
		*protocol = 0;
		break;
	case FAKE_UNIX_SEQPACKET:
		*type = SOCK_SEQPACKET;
		*domain = AF_UNIX;
		*protocol = 0;
		break;
	case FAKE_SCTP:
		*protocol = IPPROTO_SCTP;
		break;
	case FAKE_UDP:
		*type = SOCK_DGRAM;
		*protocol = IPPROTO_UDP;
		break;
	default:
		break;
	}
}

static int fake_getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
	struct fake_fd *s;
	int type, domain, protocol, answer, gso;

	pthread_mutex_lock(&fake_lock);
	s = fake_fd_get(fd);
	if (s)
		s->classify_calls++;
	if (!s || s->kind == FAKE_BADF) {
		pthread_mutex_unlock(&fake_lock);
		return -EBADF;
	}
	if (s->kind == FAKE_NOT_SOCKET) {
		pthread_mutex_unlock(&fake_lock);
		return -ENOTSOCK;
	}
	fake_identity(s->kind, &type, &domain, &protocol);
	gso = s->gso_segments;
	pthread_mutex_unlock(&fake_lock);
	if (level == SOL_UDP && type == SOCK_DGRAM && *len >= sizeof(int) &&
	    ((name == UDP_SEGMENT && gso) || name == UDP_CORK)) {
		memset(val, 0, sizeof(int));
		*len = sizeof(int);
		return 0;
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
	struct fake_fd *s;
	enum fake_sock kind;

	pthread_mutex_lock(&fake_lock);
	s = fake_fd_get(fd);
	if (s)
		s->classify_calls++;
	kind = s ? s->kind : FAKE_BADF;
	pthread_mutex_unlock(&fake_lock);
	switch (kind) {
	case FAKE_BADF:
		return -EBADF;
	case FAKE_NOT_SOCKET:
		return -ENOTSOCK;
	case FAKE_TCP_UNCONNECTED:
		return -ENOTCONN;
	default:
		break;
	}
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (*len > sizeof(sin))
		*len = sizeof(sin);
	memcpy(addr, &sin, *len);
	*len = sizeof(sin);
	return 0;
}

static int fake_socket_id(int fd, uint64_t *id)
{
	struct fake_fd *s;
	int r = 0;

	pthread_mutex_lock(&fake_lock);
	s = fake_fd_get(fd);
	if (s)
		s->classify_calls++;
	if (!s || s->kind == FAKE_BADF)
		r = -EBADF;
	else if (s->kind == FAKE_NOT_SOCKET)
		r = -ENOTSOCK;
	else
		*id = s->id;
	pthread_mutex_unlock(&fake_lock);
	return r;
}

static int fake_fcntl_getfl(int fd)
{
	struct fake_fd *s;
	int r;

	pthread_mutex_lock(&fake_lock);
	s = fake_fd_get(fd);
	r = !s || s->kind == FAKE_BADF ? -EBADF : O_RDWR;
	pthread_mutex_unlock(&fake_lock);
	return r;
}

static int fake_poll(struct pollfd *fds, nfds_t nfds, int timeout_ms)
{
	struct fake_fd *s;
	nfds_t i;
	int ready = 0;

	pthread_mutex_lock(&fake_lock);
	fake_polls++;
	if (nfds > 0) {
		fake_poll_fd = fds[0].fd;
		fake_poll_events = fds[0].events;
	}
	for (i = 0; i < nfds; i++) {
		fds[i].revents = 0;
		s = fake_fd_get(fds[i].fd);
		if (!s || s->kind == FAKE_BADF) {
			fds[i].revents = POLLNVAL;
			ready++;
			continue;
		}
		if (s->full && s->polls_until_free > 0 && --s->polls_until_free == 0)
			s->full = 0;
		if (!s->full && (fds[i].events & POLLOUT)) {
			fds[i].revents = POLLOUT;
			ready++;
		}
	}
	pthread_mutex_unlock(&fake_lock);
	/* Time passes while poll waits: all of the timeout when nothing is ready. */
	if (timeout_ms > 0 && ready == 0)
		atomic_fetch_add(&fake_now, (uint64_t)timeout_ms * 1000000u);
	return ready;
}

static uint64_t fake_now_ns(void)
{
	return atomic_load(&fake_now);
}

static void fake_log_write(const char *buf, size_t len)
{
	pthread_mutex_lock(&fake_lock);
	if (len > sizeof(fake_log_buf) - 1 - fake_log_len)
		len = sizeof(fake_log_buf) - 1 - fake_log_len;
	memcpy(fake_log_buf + fake_log_len, buf, len);
	fake_log_len += len;
	fake_log_buf[fake_log_len] = '\0';
	fake_log_count++;
	pthread_mutex_unlock(&fake_lock);
}

/* Takes one from *failures if it is positive; returns 1 if it did. */
static int take_failure(_Atomic int *failures)
{
	int n = atomic_load(failures);

	while (n > 0)
		if (atomic_compare_exchange_weak(failures, &n, n - 1))
			return 1;
	return 0;
}

static void *fake_alloc(size_t size)
{
	atomic_fetch_add(&fake_alloc_count, 1);
	return take_failure(&fake_alloc_failures) ? NULL : malloc(size);
}

static void *fake_realloc(void *ptr, size_t size)
{
	atomic_fetch_add(&fake_realloc_count, 1);
	return take_failure(&fake_realloc_failures) ? NULL : realloc(ptr, size);
}

static void fake_free(void *ptr)
{
	free(ptr);
}

static int fake_close(int fd)
{
	pthread_mutex_lock(&fake_lock);
	fake_fds[fd].closes++;
	pthread_mutex_unlock(&fake_lock);
	return 0;
}

/* The private fd of a hand-over: the highest number, a duplicate of fd. */
#define FAKE_PRIVATE_FD (FAKE_MAX_FD - 1)

static int fake_hand_over(int fd)
{
	fake_dup(FAKE_PRIVATE_FD, fd);
	pthread_mutex_lock(&fake_lock);
	fake_fds[fd].placeholder = 1;
	pthread_mutex_unlock(&fake_lock);
	return FAKE_PRIVATE_FD;
}

int fake_private_fd(void)
{
	return FAKE_PRIVATE_FD;
}

int fake_closes(int fd)
{
	int n;

	pthread_mutex_lock(&fake_lock);
	n = fake_fds[fd].closes;
	pthread_mutex_unlock(&fake_lock);
	return n;
}

int fake_is_placeholder(int fd)
{
	int n;

	pthread_mutex_lock(&fake_lock);
	n = fake_fds[fd].placeholder;
	pthread_mutex_unlock(&fake_lock);
	return n;
}

static int locked_int(const int *p);

/* The fake ring: each request is one send through fake_send (so every
 * script of its fd applies), unless the ring is scripted to fail. */
static int fake_ring_count;
static int fake_ring_req_count;
static int fake_ring_err;      /* The error of the next failing call, or 0. */
static int fake_ring_run_first; /* Requests that call still runs. */
static void (*fake_ring_hook)(void *arg);
static void *fake_ring_hook_arg;

static int fake_ring_send_batch(struct co_ring_req *reqs, int n)
{
	int i, err, run;

	pthread_mutex_lock(&fake_lock);
	fake_ring_count++;
	fake_ring_req_count += n;
	err = fake_ring_err;
	run = err ? fake_ring_run_first : n;
	fake_ring_err = 0;
	pthread_mutex_unlock(&fake_lock);
	if (fake_ring_hook)
		fake_ring_hook(fake_ring_hook_arg);
	for (i = 0; i < n && i < run; i++)
		reqs[i].result = fake_send(reqs[i].fd, reqs[i].msg.msg_iov,
					   (int)reqs[i].msg.msg_iovlen,
					   MSG_DONTWAIT | MSG_NOSIGNAL, 0, 0, 0);
	return err ? -err : 0;
}

void fake_ring_fail(int err, int run_first)
{
	pthread_mutex_lock(&fake_lock);
	fake_ring_err = err;
	fake_ring_run_first = run_first;
	pthread_mutex_unlock(&fake_lock);
}

void fake_ring_during(void (*fn)(void *arg), void *arg)
{
	fake_ring_hook = fn;
	fake_ring_hook_arg = arg;
}

int fake_ring_calls(void)
{
	return locked_int(&fake_ring_count);
}

int fake_ring_requests(void)
{
	return locked_int(&fake_ring_req_count);
}

static const struct co_sys fake_table = {
	.sendmsg = fake_sendmsg,
	.writev = fake_writev,
	.getsockopt = fake_getsockopt,
	.getpeername = fake_getpeername,
	.fcntl_getfl = fake_fcntl_getfl,
	.socket_id = fake_socket_id,
	.sendmmsg = fake_sendmmsg,
	.poll = fake_poll,
	.close = fake_close,
	.hand_over = fake_hand_over,
	.now_ns = fake_now_ns,
	.log_write = fake_log_write,
	.ring_send_batch = fake_ring_send_batch,
	.alloc = fake_alloc,
	.realloc = fake_realloc,
	.free = fake_free,
};

const struct co_sys *fake_sys(void)
{
	return &fake_table;
}

void fake_reset(void)
{
	int fd;

	pthread_mutex_lock(&fake_lock);
	for (fd = 0; fd < FAKE_MAX_FD; fd++) {
		free(fake_fds[fd].wire);
		free(fake_fds[fd].dgrams);
		free(fake_fds[fd].ports);
		memset(&fake_fds[fd], 0, sizeof(fake_fds[fd]));
		fake_fds[fd].polls_until_free = -1;
	}
	fake_next_id = 1;
	fake_total_calls = 0;
	fake_empty_calls = 0;
	fake_writev_count = 0;
	fake_sendmmsg_count = 0;
	memset(&fake_last, 0, sizeof(fake_last));
	fake_polls = 0;
	fake_poll_fd = -1;
	fake_poll_events = 0;
	fake_log_len = 0;
	fake_log_buf[0] = '\0';
	fake_log_count = 0;
	fake_ring_count = 0;
	fake_ring_req_count = 0;
	fake_ring_err = 0;
	fake_ring_hook = NULL;
	pthread_mutex_unlock(&fake_lock);
	atomic_store(&fake_now, FAKE_CLOCK_START);
	atomic_store(&fake_alloc_failures, 0);
	atomic_store(&fake_realloc_failures, 0);
	atomic_store(&fake_alloc_count, 0);
	atomic_store(&fake_realloc_count, 0);
}

void fake_socket(int fd, enum fake_sock kind)
{
	int i, heir = -1;

	pthread_mutex_lock(&fake_lock);
	if (fd < 0 || fd >= FAKE_MAX_FD)
		abort();
	/* Duplicates of fd keep the socket fd named until now: the first one
	 * takes it over, and fd starts afresh. */
	for (i = 0; i < FAKE_MAX_FD; i++) {
		if (fake_fds[i].dup_of != fd + 1)
			continue;
		if (heir < 0) {
			heir = i;
			fake_fds[i] = fake_fds[fd];
			fake_fds[i].dup_of = 0;
		} else {
			fake_fds[i].dup_of = heir + 1;
		}
	}
	if (heir >= 0) {
		memset(&fake_fds[fd], 0, sizeof(fake_fds[fd]));
		fake_fds[fd].polls_until_free = -1;
	}
	fake_fds[fd].dup_of = 0;
	fake_fds[fd].kind = kind;
	fake_fds[fd].id = fake_next_id++;
	pthread_mutex_unlock(&fake_lock);
}

void fake_udp_gso(int fd, int max_segments, int err)
{
	struct fake_fd *s;

	pthread_mutex_lock(&fake_lock);
	s = fake_fd_must(fd);
	s->gso_segments = max_segments;
	s->gso_err = err;
	pthread_mutex_unlock(&fake_lock);
}

size_t fake_dgrams(int fd, const uint32_t **lens, const uint16_t **ports)
{
	struct fake_fd *s;
	size_t n;

	pthread_mutex_lock(&fake_lock);
	s = fake_fd_must(fd);
	*lens = s->dgrams;
	if (ports)
		*ports = s->ports;
	n = s->ndgrams;
	pthread_mutex_unlock(&fake_lock);
	return n;
}

void fake_dup(int newfd, int oldfd)
{
	pthread_mutex_lock(&fake_lock);
	if (newfd < 0 || newfd >= FAKE_MAX_FD || !fake_fd_get(oldfd) || newfd == oldfd)
		abort();
	fake_fds[newfd].dup_of = fake_fds[oldfd].dup_of ? fake_fds[oldfd].dup_of : oldfd + 1;
	pthread_mutex_unlock(&fake_lock);
}

void fake_forget_sends(void)
{
	int fd;

	pthread_mutex_lock(&fake_lock);
	for (fd = 0; fd < FAKE_MAX_FD; fd++) {
		fake_fds[fd].wire_len = 0;
		fake_fds[fd].ndgrams = 0;
		fake_fds[fd].send_calls = 0;
	}
	fake_total_calls = 0;
	fake_empty_calls = 0;
	fake_writev_count = 0;
	memset(&fake_last, 0, sizeof(fake_last));
	pthread_mutex_unlock(&fake_lock);
}

/* Adds a step to the end of fd's script. */
static void fake_add_step(int fd, int err, size_t limit, int calls)
{
	struct fake_fd *s;

	if (calls <= 0)
		return;
	pthread_mutex_lock(&fake_lock);
	s = fake_fd_must(fd);
	if (s->nsteps == FAKE_STEPS)
		abort();
	s->steps[s->nsteps++] = (struct fake_step){ .count = calls, .err = err, .limit = limit };
	pthread_mutex_unlock(&fake_lock);
}

void fake_send_limit(int fd, size_t max, int calls)
{
	fake_add_step(fd, 0, max, calls);
}

void fake_send_error(int fd, int err, int calls)
{
	fake_add_step(fd, err, 0, calls);
}

int fake_script_left(int fd)
{
	int n;

	pthread_mutex_lock(&fake_lock);
	n = fake_fd_must(fd)->nsteps;
	pthread_mutex_unlock(&fake_lock);
	return n;
}

void fake_send_full(int fd, int full)
{
	pthread_mutex_lock(&fake_lock);
	fake_fd_must(fd)->full = full;
	fake_fd_must(fd)->polls_until_free = -1;
	pthread_mutex_unlock(&fake_lock);
}

void fake_poll_frees_after(int fd, int polls)
{
	pthread_mutex_lock(&fake_lock);
	fake_fd_must(fd)->polls_until_free = polls;
	pthread_mutex_unlock(&fake_lock);
}

void fake_send_chaos(int fd, unsigned seed)
{
	pthread_mutex_lock(&fake_lock);
	fake_fd_must(fd)->chaos = 1;
	fake_fd_must(fd)->chaos_state = seed ? seed : 1;
	pthread_mutex_unlock(&fake_lock);
}

const char *fake_wire(int fd, size_t *len)
{
	const char *wire;

	pthread_mutex_lock(&fake_lock);
	wire = fake_fd_must(fd)->wire;
	*len = fake_fd_must(fd)->wire_len;
	pthread_mutex_unlock(&fake_lock);
	return wire ? wire : "";
}

size_t fake_wire_len(int fd)
{
	size_t len;

	fake_wire(fd, &len);
	return len;
}

/* Reads one int of the fake's state under its lock. */
static int locked_int(const int *p)
{
	int v;

	pthread_mutex_lock(&fake_lock);
	v = *p;
	pthread_mutex_unlock(&fake_lock);
	return v;
}

int fake_send_calls(int fd)
{
	return locked_int(&fake_fd_must(fd)->send_calls);
}

int fake_send_calls_total(void)
{
	return locked_int(&fake_total_calls);
}

struct fake_send_call fake_last_call(void)
{
	struct fake_send_call c;

	pthread_mutex_lock(&fake_lock);
	c = fake_last;
	pthread_mutex_unlock(&fake_lock);
	return c;
}

int fake_empty_sends(void)
{
	return locked_int(&fake_empty_calls);
}

int fake_writev_calls(void)
{
	return locked_int(&fake_writev_count);
}

int fake_classify_calls(int fd)
{
	return locked_int(&fake_fd_must(fd)->classify_calls);
}

uint64_t fake_clock(void)
{
	return atomic_load(&fake_now);
}

void fake_clock_set(uint64_t ns)
{
	atomic_store(&fake_now, ns);
}

void fake_clock_advance(uint64_t ns)
{
	atomic_fetch_add(&fake_now, ns);
}

int fake_poll_calls(void)
{
	return locked_int(&fake_polls);
}

int fake_poll_last_fd(void)
{
	return locked_int(&fake_poll_fd);
}

short fake_poll_last_events(void)
{
	short v;

	pthread_mutex_lock(&fake_lock);
	v = fake_poll_events;
	pthread_mutex_unlock(&fake_lock);
	return v;
}

void fake_fail_alloc(int calls)
{
	atomic_store(&fake_alloc_failures, calls);
}

void fake_fail_realloc(int calls)
{
	atomic_store(&fake_realloc_failures, calls);
}

int fake_alloc_calls(void)
{
	return atomic_load(&fake_alloc_count);
}

int fake_realloc_calls(void)
{
	return atomic_load(&fake_realloc_count);
}

const char *fake_log(void)
{
	/* Tests read the log from one thread once the writers are done. */
	return fake_log_buf;
}

int fake_log_calls(void)
{
	return locked_int(&fake_log_count);
}

void fake_config(struct co_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->direct = 1;
	cfg->delay_ns = (uint64_t)CO_DEFAULT_DELAY_US * 1000;
	cfg->max_bytes = CO_DEFAULT_MAX_BYTES;
	cfg->large_bytes = CO_DEFAULT_LARGE_BYTES;
	cfg->linger_ns = (uint64_t)CO_DEFAULT_LINGER_MS * 1000000;
	cfg->max_msgs = CO_DEFAULT_MAX_MSGS;
	cfg->log_level = CO_LOG_ERROR;
}

struct co_ctx *fake_ctx_new(const struct co_config *cfg)
{
	struct co_config defaults;
	struct co_ctx *ctx = calloc(1, sizeof(*ctx));

	if (!ctx)
		abort();
	if (!cfg) {
		fake_config(&defaults);
		cfg = &defaults;
	}
	co_ctx_init(ctx, fake_sys(), cfg);
	return ctx;
}

void fake_ctx_free(struct co_ctx *ctx)
{
	struct co_fd *chunk;
	int i, j;

	if (!ctx)
		return;
	for (i = 0; i < CO_FD_CHUNKS; i++) {
		chunk = atomic_load(&ctx->fds.chunk[i]);
		if (!chunk)
			continue;
		for (j = 0; j < CO_FD_CHUNK_SIZE; j++) {
			free(chunk[j].q.data);
			free(chunk[j].dg);
			pthread_mutex_destroy(&chunk[j].lock);
		}
		free(chunk);
	}
	free(ctx->socks.slots);
	pthread_mutex_destroy(&ctx->socks.lock);
	free(ctx);
}

ssize_t co_write_now(struct co_ctx *ctx, int fd, const struct iovec *iov, int iovcnt,
		     int flags, unsigned how)
{
	struct co_fd *held;
	ssize_t r = co_write(ctx, fd, iov, iovcnt, flags, how, &held);

	co_write_end(held, r);
	return r;
}

ssize_t test_write(struct co_ctx *ctx, int fd, const void *buf, size_t len, int flags)
{
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };

	return co_write_now(ctx, fd, &iov, 1, flags, 0);
}

void fill_pattern(void *buf, size_t len, unsigned seed)
{
	unsigned char *p = buf;
	uint32_t x = seed * 2654435761u + 12345u;
	size_t i;

	for (i = 0; i < len; i++) {
		x = x * 1103515245u + 12345u;
		p[i] = (unsigned char)((x >> 16) ^ (uint32_t)i);
	}
}
