/* event_loop_server: the server runs under the shim: a level-triggered epoll
 * loop on nonblocking sockets that accepts 64 clients and answers each
 * request with several small writes (write, send or writev), keeping what
 * the kernel does not take for EPOLLOUT. The clients (the parent, plain)
 * pipeline 1-3 requests at a time for 100 rounds, then take turns: one
 * client at a time makes one request and waits for the reply (5 turns
 * each), and every reply byte is checked. The server's deadline is set to
 * its maximum (1 s). In the turns, the server has read the request before it
 * writes the reply and has nothing else to read: only the flush before
 * epoll_wait can send the reply, and without it every turn waits for the
 * deadline and the test runs into its watchdog. (While all clients are busy,
 * the server's reads on other connections flush too.) The stats must show
 * the small writes of a reply went out together. */
#include "common.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define NAME "event_loop_server"
#define CLIENTS 64
#define ROUNDS 100     /* pipelined rounds per client, all clients at once */
#define TURNS 5        /* then rounds where one client at a time makes one request */
#define SEQS (ROUNDS + TURNS)
#define MAGIC 0x45564c50u
#define REQ 16
#define MAX_PARTS 10
#define MAX_PART 100
#define STALL_MS 10000

static void put32(unsigned char *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

static uint32_t get32(const unsigned char *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return v;
}

static uint64_t reply_key(unsigned client, unsigned seq)
{
	return co_mix64(co_seed ^ ((uint64_t)client << 32) ^ seq ^ 0xe7e7);
}

/* ---- the server (child, under the shim) ---- */

struct conn {
	int fd;
	unsigned char in[4096];
	size_t inlen;
	unsigned char *out; /* bytes the kernel did not take yet */
	size_t outlen, outcap;
	int want_out;
};

static int ep;
static unsigned long replies, reply_writes;

static void conn_watch(struct conn *c, int want_out)
{
	struct epoll_event ev;

	if (c->want_out == want_out)
		return;
	ev.events = EPOLLIN | (want_out ? EPOLLOUT : 0);
	ev.data.ptr = c;
	if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
		co_fail("epoll_ctl MOD: %s", strerror(errno));
	c->want_out = want_out;
}

static void out_append(struct conn *c, const unsigned char *p, size_t n)
{
	if (c->outlen + n > c->outcap) {
		c->outcap = (c->outlen + n) * 2;
		c->out = realloc(c->out, c->outcap);
		if (!c->out)
			co_fail("realloc");
	}
	memcpy(c->out + c->outlen, p, n);
	c->outlen += n;
}

/* Sends from the out buffer; returns when it is empty or the kernel is full. */
static void out_drain(struct conn *c)
{
	while (c->outlen > 0) {
		ssize_t w = write(c->fd, c->out, c->outlen);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN)
			break;
		if (w <= 0)
			co_fail("write of the out buffer: %s", w < 0 ? strerror(errno) : "returned 0");
		memmove(c->out, c->out + w, c->outlen - (size_t)w);
		c->outlen -= (size_t)w;
	}
	conn_watch(c, c->outlen > 0);
}

/* Writes one piece of a reply, or queues it behind what is already waiting. */
static void send_piece(struct conn *c, const unsigned char *p, size_t n, int api)
{
	ssize_t w;

	reply_writes++;
	if (c->outlen > 0) {
		out_append(c, p, n);
		return;
	}
	for (;;) {
		if (api == 0) {
			w = write(c->fd, p, n);
		} else if (api == 1) {
			w = send(c->fd, p, n, 0);
		} else {
			struct iovec iov[2] = { { (void *)p, n / 2 }, { (void *)(p + n / 2), n - n / 2 } };

			w = writev(c->fd, iov, 2);
		}
		if (w < 0 && errno == EINTR)
			continue;
		break;
	}
	if (w < 0 && errno != EAGAIN)
		co_fail("reply write of %zu bytes: %s", n, strerror(errno));
	if (w == 0)
		co_fail("reply write of %zu bytes returned 0", n);
	if (w < 0)
		w = 0;
	if ((size_t)w < n) {
		out_append(c, p + w, n - (size_t)w);
		conn_watch(c, 1);
	}
}

static void answer(struct conn *c, const unsigned char *req)
{
	unsigned char buf[MAX_PARTS * MAX_PART];
	uint32_t client = get32(req + 4), seq = get32(req + 8), spec = get32(req + 12);
	size_t len = spec & 0xffff, parts = spec >> 16, done = 0, i;
	struct co_rng r;

	if (get32(req) != MAGIC || parts < 1 || parts > MAX_PARTS || len < parts ||
	    len > sizeof(buf))
		co_fail("bad request (magic %08x client %u seq %u spec %08x)", get32(req), client,
			seq, spec);
	co_stream_fill(reply_key(client, seq), 0, buf, len);
	co_rng_init(&r, co_seed, ((uint64_t)client << 32) | seq);
	for (i = 0; i < parts; i++) {
		size_t n = i == parts - 1 ? len - done
					  : co_range(&r, 1, (len - done) - (parts - 1 - i));

		if (n > MAX_PART && i < parts - 1)
			n = MAX_PART;
		send_piece(c, buf + done, n, (int)co_range(&r, 0, 2));
		done += n;
	}
	replies++;
}

static int child_main(int argc, char **argv)
{
	int lfd = 3, closed = 0, i;
	struct epoll_event ev, evs[64];

	(void)argv;
	co_child_init(NAME);
	if (argc != 0)
		co_fail("usage: (no arguments)");
	co_set_nonblock(lfd, 1);
	ep = epoll_create1(0);
	if (ep < 0)
		co_fail("epoll_create1: %s", strerror(errno));
	ev.events = EPOLLIN;
	ev.data.ptr = NULL;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0)
		co_fail("epoll_ctl: %s", strerror(errno));
	while (closed < CLIENTS) {
		int n = epoll_wait(ep, evs, 64, -1);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			co_fail("epoll_wait: %s", strerror(errno));
		for (i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;

			if (!c) {
				for (;;) {
					int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);

					if (fd < 0 && (errno == EAGAIN || errno == EINTR ||
						       errno == ECONNABORTED))
						break;
					if (fd < 0)
						co_fail("accept4: %s", strerror(errno));
					c = calloc(1, sizeof(*c));
					if (!c)
						co_fail("calloc");
					c->fd = fd;
					ev.events = EPOLLIN;
					ev.data.ptr = c;
					if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
						co_fail("epoll_ctl ADD: %s", strerror(errno));
				}
				continue;
			}
			if (evs[i].events & EPOLLOUT)
				out_drain(c);
			if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
				ssize_t r;
				size_t off = 0;

				do
					r = read(c->fd, c->in + c->inlen, sizeof(c->in) - c->inlen);
				while (r < 0 && errno == EINTR);
				if (r < 0 && errno == EAGAIN)
					continue;
				if (r < 0)
					co_fail("read: %s", strerror(errno));
				if (r == 0) {
					if (c->outlen > 0)
						co_fail("client closed with %zu reply bytes unsent",
							c->outlen);
					epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
					if (close(c->fd) < 0)
						co_fail("close: %s", strerror(errno));
					free(c->out);
					free(c);
					closed++;
					continue;
				}
				c->inlen += (size_t)r;
				while (c->inlen - off >= REQ) {
					answer(c, c->in + off);
					off += REQ;
				}
				memmove(c->in, c->in + off, c->inlen - off);
				c->inlen -= off;
			}
		}
	}
	printf("replies=%lu writes=%lu\n", replies, reply_writes);
	return 0;
}

/* ---- the clients (parent, plain) ---- */

struct client {
	int fd;
	unsigned id;
	unsigned next_seq;   /* next request to send */
	unsigned recv_seq;   /* request whose reply is being received */
	unsigned pending;    /* requests sent, replies not complete */
	size_t lens[SEQS];   /* reply length of each request */
	size_t got;          /* bytes of the current reply received */
	struct co_rng r;
};

static void send_batch(struct client *cl, unsigned n, unsigned limit)
{
	unsigned char buf[3 * REQ];
	unsigned i;
	size_t len = 0;

	for (i = 0; i < n && cl->next_seq < limit; i++) {
		unsigned parts = (unsigned)co_range(&cl->r, 2, MAX_PARTS);
		size_t rlen = co_range(&cl->r, parts, parts * 40);

		cl->lens[cl->next_seq] = rlen;
		put32(buf + len, MAGIC);
		put32(buf + len + 4, cl->id);
		put32(buf + len + 8, cl->next_seq);
		put32(buf + len + 12, (uint32_t)(rlen | parts << 16));
		len += REQ;
		cl->next_seq++;
		cl->pending++;
	}
	co_write_all(cl->fd, buf, len, "request");
}

/* Reads what is there for cl and checks it against the replies it awaits. */
static void recv_replies(struct client *cl)
{
	unsigned char buf[8192];
	ssize_t r = read(cl->fd, buf, sizeof(buf));
	size_t pos = 0;

	if (r < 0 && errno == EINTR)
		return;
	if (r < 0)
		co_fail("client %u: read: %s", cl->id, strerror(errno));
	if (r == 0)
		co_fail("client %u: EOF from the server", cl->id);
	while (pos < (size_t)r) {
		size_t want, take, bad;

		if (!cl->pending)
			co_fail("client %u: %zd unexpected bytes after the reply to request %u", cl->id,
				r - (ssize_t)pos, cl->recv_seq);
		want = cl->lens[cl->recv_seq] - cl->got;
		take = (size_t)r - pos < want ? (size_t)r - pos : want;
		bad = co_stream_check(reply_key(cl->id, cl->recv_seq), cl->got, buf + pos, take);
		if (bad < take)
			co_fail("client %u: reply to request %u: byte %zu of %zu differs: expected %02x got %02x",
				cl->id, cl->recv_seq, cl->got + bad, cl->lens[cl->recv_seq],
				co_stream_byte(reply_key(cl->id, cl->recv_seq), cl->got + bad),
				buf[pos + bad]);
		cl->got += take;
		pos += take;
		if (cl->got == cl->lens[cl->recv_seq]) {
			cl->got = 0;
			cl->recv_seq++;
			cl->pending--;
		}
	}
}

int main(int argc, char **argv)
{
	static struct client cls[CLIENTS];
	struct co_child c;
	struct co_fdmap map[1];
	int lfd, port, cep, i, t, done = 0;
	struct epoll_event ev, evs[CLIENTS];
	long long total_writes_min = 0;
	char summary[128];
	int out[2];
	unsigned long replies_srv = 0, writes_srv = 0;
	size_t n;

	if (argc > 1 && strcmp(argv[1], CO_CHILD_FLAG) == 0)
		return child_main(argc - 2, argv + 2);
	co_init(argc, argv, NAME);
	co_watchdog(30);
	lfd = co_tcp_listen(AF_INET, &port);
	if (lfd < 0)
		co_fail("listen: %s", strerror(errno));
	if (pipe(out) < 0)
		co_fail("pipe: %s", strerror(errno));
	map[0].from = lfd;
	map[0].to = 3;
	{
		struct co_fdmap m2[2] = { map[0], { out[1], 1 } };

		const char *env[] = { CO_LONG_DELAY, NULL };

		co_spawn(&c, NULL, m2, 2, env, 1);
	}
	close(lfd);
	close(out[1]);
	cep = epoll_create1(EPOLL_CLOEXEC);
	if (cep < 0)
		co_fail("epoll_create1: %s", strerror(errno));
	co_phase("connecting %d clients", CLIENTS);
	for (i = 0; i < CLIENTS; i++) {
		struct client *cl = &cls[i];

		cl->id = (unsigned)i;
		co_rng_init(&cl->r, co_seed, 5000 + (uint64_t)i);
		cl->fd = co_tcp_connect(AF_INET, port);
		if (cl->fd < 0)
			co_fail("client %d: connect: %s", i, strerror(errno));
		ev.events = EPOLLIN;
		ev.data.ptr = cl;
		if (epoll_ctl(cep, EPOLL_CTL_ADD, cl->fd, &ev) < 0)
			co_fail("epoll_ctl: %s", strerror(errno));
		send_batch(cl, (unsigned)co_range(&cl->r, 1, 3), ROUNDS);
	}
	while (done < CLIENTS) {
		int k;

		co_phase("clients waiting for replies (%d of %d clients done; if this is slow rather than stuck, each reply waited for the 1 s deadline: the server's epoll_wait did not flush)",
			 done, CLIENTS);
		k = epoll_wait(cep, evs, CLIENTS, STALL_MS);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			co_fail("epoll_wait: %s", strerror(errno));
		if (k == 0) {
			for (i = 0; i < CLIENTS; i++)
				if (cls[i].pending)
					break;
			co_fail("no reply byte for %d s: %d clients done; e.g. client %d waits for the reply to request %u (%zu of %zu bytes received): the server left replies queued while it waited",
				STALL_MS / 1000, done, i, i < CLIENTS ? cls[i].recv_seq : 0,
				i < CLIENTS ? cls[i].got : 0,
				i < CLIENTS ? cls[i].lens[cls[i].recv_seq] : 0);
		}
		for (i = 0; i < k; i++) {
			struct client *cl = evs[i].data.ptr;

			recv_replies(cl);
			if (!cl->pending) {
				if (cl->next_seq < ROUNDS) {
					send_batch(cl, (unsigned)co_range(&cl->r, 1, 3), ROUNDS);
				} else {
					epoll_ctl(cep, EPOLL_CTL_DEL, cl->fd, NULL);
					done++;
				}
			}
		}
	}
	for (t = 0; t < TURNS; t++) {
		for (i = 0; i < CLIENTS; i++) {
			struct client *cl = &cls[i];
			struct pollfd pfd = { .fd = cl->fd, .events = POLLIN };

			co_phase("turn %d, client %d: waiting for the reply to its one request (if this is slow rather than stuck, each reply waited for the 1 s deadline: the server's epoll_wait did not flush)",
				 t, i);
			send_batch(cl, 1, SEQS);
			while (cl->pending) {
				int pr = poll(&pfd, 1, STALL_MS);

				if (pr < 0 && errno == EINTR)
					continue;
				if (pr == 0)
					co_fail("turn %d: client %d got no reply byte in %d s", t, i,
						STALL_MS / 1000);
				recv_replies(cl);
			}
		}
	}
	for (i = 0; i < CLIENTS; i++)
		close(cls[i].fd);
	co_phase("waiting for the server to exit");
	n = co_read_full(out[0], summary, sizeof(summary) - 1, "server summary");
	summary[n] = '\0';
	if (sscanf(summary, "replies=%lu writes=%lu", &replies_srv, &writes_srv) != 2)
		co_fail("bad summary from the server: \"%s\"", summary);
	co_wait_ok(&c, "server");
	if (replies_srv != CLIENTS * SEQS)
		co_fail("server answered %lu requests, expected %d", replies_srv, CLIENTS * SEQS);
	total_writes_min = (long long)writes_srv;
	co_info("server: %lu replies in %lu writes", replies_srv, writes_srv);
	/* Most reply writes queued; at least 3 of them per flush syscall. */
	co_stats_expect_coalesced(&c, total_writes_min / 2, 3, "server");
	return 0;
}
