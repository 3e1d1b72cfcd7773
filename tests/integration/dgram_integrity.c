/* dgram_integrity: datagrams of random sizes (1 B .. 9000 B, and a run of
 * 64-byte ones) through every send API (send, sendto, sendmsg with one and
 * with several iovecs, write, writev, and sendmmsg by the application, with
 * several destinations in one call), over UDP/IPv4, UDP/IPv6, Unix datagram
 * sockets, and Unix SOCK_DGRAM and SOCK_SEQPACKET socketpairs. Three writer
 * sockets: one unconnected (each datagram to the next of 3-4 receivers in
 * turn), one connected (sometimes with an explicit destination as well),
 * one that the writer connects to one receiver after another.
 *
 * The receivers (in the parent, without the shim) know each datagram's
 * writer by its source address and check, against the plan the writer
 * follows: its size and every byte (a header carries writer, destination,
 * sequence number, length and checksum; datagrams shorter than the header
 * are bytes derived from their sequence number), that it reached the
 * receiver it was addressed to, no duplicates, the order of each writer at
 * each receiver (loopback keeps it), and completeness. A datagram the
 * kernel dropped on a full receive queue (SO_RXQ_OVFL) is reported, not
 * failed; the writer waits for an acknowledgment every few datagrams so
 * that there are none.
 *
 * Last, the writer ends with datagrams still queued (COALESCE_DELAY_US at
 * its maximum, 1 s, so that the deadline cannot send them) by returning from
 * main, exit(), _exit(), SIGTERM at its default disposition and exec of
 * /bin/true: every datagram must arrive. The stats must show datagrams
 * queued (SOCK_DGRAM runs) and, in the 64-byte run, flushes that sent
 * several at once. */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#define NAME "dgram_integrity"
#define MAX_WRITERS 3
#define MAX_MMSG 8
#define MAX_IOVS 6
#define MAX_SIZE 9000
#define IDLE_MS 3000

enum api {
	API_SEND,
	API_SENDTO,
	API_SENDMSG,
	API_SENDMSG_IOVS,
	API_WRITE,
	API_WRITEV,
	API_SENDMMSG,
	API_CONNECT,
};
static const char *const api_names[] = { "send",   "sendto", "sendmsg", "sendmsg (iovecs)",
					 "write",  "writev", "sendmmsg", "connect" };

enum ending { END_RETURN, END_EXIT, END__EXIT, END_SIGTERM, END_EXEC };

enum writer_kind { W_UNCONNECTED, W_CONNECTED, W_RECONNECTING };

struct run {
	const char *name;
	int family;     /* AF_INET, AF_INET6 or AF_UNIX */
	int type;       /* SOCK_DGRAM or SOCK_SEQPACKET */
	int pair;       /* a socketpair: one writer, one receiver */
	int nrx;        /* receivers */
	int window;     /* datagrams between two acknowledgments */
	int dgrams;     /* datagrams in all (the last call may add a few) */
	int same64;     /* 64-byte datagrams from one connected writer */
	int long_delay; /* COALESCE_DELAY_US=1000000 */
	int ending;
};

/* A Unix receiver that nobody reads holds 11 datagrams from a sender it is
 * not connected to (net.unix.max_dgram_qlen), then the sender blocks: the
 * Unix run paces by 8. */
static const struct run runs[] = {
	{ "udp4", AF_INET, SOCK_DGRAM, 0, 4, 64, 20000, 0, 0, END_RETURN },
	{ "udp6", AF_INET6, SOCK_DGRAM, 0, 4, 64, 20000, 0, 0, END_RETURN },
	{ "unix", AF_UNIX, SOCK_DGRAM, 0, 4, 8, 8000, 0, 0, END_RETURN },
	{ "unix-socketpair", AF_UNIX, SOCK_DGRAM, 1, 1, 64, 6000, 0, 0, END_RETURN },
	{ "seqpacket-socketpair", AF_UNIX, SOCK_SEQPACKET, 1, 1, 64, 6000, 0, 0, END_RETURN },
	{ "udp4-64B", AF_INET, SOCK_DGRAM, 0, 1, 64, 16384, 1, 0, END_RETURN },
	{ "end-by-return", AF_INET, SOCK_DGRAM, 0, 3, 64, 600, 0, 1, END_RETURN },
	{ "end-by-exit", AF_INET, SOCK_DGRAM, 0, 3, 64, 600, 0, 1, END_EXIT },
	{ "end-by-_exit", AF_INET, SOCK_DGRAM, 0, 3, 64, 600, 0, 1, END__EXIT },
	{ "end-by-SIGTERM", AF_INET, SOCK_DGRAM, 0, 3, 64, 600, 0, 1, END_SIGTERM },
	{ "end-by-exec", AF_INET, SOCK_DGRAM, 0, 3, 64, 600, 0, 1, END_EXEC },
};
#define NRUNS (int)(sizeof(runs) / sizeof(runs[0]))

/* ---- the plan: the same sequence of calls in writer and receiver ------------------------ */

struct dgram {
	int dest;   /* receiver index */
	int named;  /* sent with an explicit destination address */
	size_t len;
	uint32_t seq;
};

struct op {
	int api;
	int writer;
	int n; /* datagrams in the call */
	struct dgram d[MAX_MMSG];
	int connect_to;
};

struct plan {
	const struct run *run;
	struct co_rng r;
	int nw;
	int kind[MAX_WRITERS];
	int peer[MAX_WRITERS]; /* the receiver a connected writer is connected to */
	unsigned turn;         /* the next receiver of a datagram sent with an address */
	uint32_t seq[MAX_WRITERS][CO_DGRAM_DESTS];
	uint64_t total;        /* datagrams planned so far */
};

static void plan_init(struct plan *p, int run)
{
	memset(p, 0, sizeof(*p));
	p->run = &runs[run];
	co_rng_init(&p->r, co_seed, (uint64_t)run);
	if (p->run->pair || p->run->same64) {
		p->nw = 1;
		p->kind[0] = W_CONNECTED;
		return;
	}
	p->nw = 3;
	p->kind[0] = W_UNCONNECTED;
	p->kind[1] = W_CONNECTED;
	p->kind[2] = W_RECONNECTING;
	p->peer[2] = 1;
}

/* Mostly small, sometimes up to 9000 bytes (a jumbo frame). */
static size_t plan_size(struct plan *p)
{
	unsigned x = (unsigned)co_range(&p->r, 0, 999);

	if (p->run->same64)
		return 64;
	if (x < 600)
		return co_range(&p->r, 1, 200);
	if (x < 850)
		return co_range(&p->r, 201, 1472);
	if (x < 950)
		return co_range(&p->r, 1473, 4096);
	return co_range(&p->r, 4097, MAX_SIZE);
}

static int plan_api(struct plan *p, int kind)
{
	static const int unconnected[] = { API_SENDTO, API_SENDMSG, API_SENDMSG_IOVS, API_SENDMMSG };

	if (kind == W_UNCONNECTED)
		return unconnected[co_range(&p->r, 0, 3)];
	if (kind == W_RECONNECTING && co_chance(&p->r, 1, 40))
		return API_CONNECT;
	return (int)co_range(&p->r, API_SEND, API_SENDMMSG);
}

/* Whether a datagram of a connected writer is sent with an explicit
 * address anyway (allowed on UDP and Unix datagram sockets). */
static int plan_named(struct plan *p, int kind, int api)
{
	if (kind == W_UNCONNECTED)
		return 1;
	if (p->run->pair || kind != W_CONNECTED)
		return 0;
	if (api != API_SENDTO && api != API_SENDMSG && api != API_SENDMSG_IOVS &&
	    api != API_SENDMMSG)
		return 0;
	return co_chance(&p->r, 1, 8);
}

static void plan_next(struct plan *p, struct op *op)
{
	int i, w = (int)co_range(&p->r, 0, (uint64_t)p->nw - 1), kind = p->kind[w];

	memset(op, 0, sizeof(*op));
	op->writer = w;
	op->api = plan_api(p, kind);
	if (op->api == API_CONNECT) {
		p->peer[w] = (p->peer[w] + 1) % p->run->nrx;
		op->connect_to = p->peer[w];
		return;
	}
	op->n = op->api == API_SENDMMSG ? (int)co_range(&p->r, 2, MAX_MMSG) : 1;
	for (i = 0; i < op->n; i++) {
		struct dgram *d = &op->d[i];

		d->named = plan_named(p, kind, op->api);
		d->dest = d->named ? (int)(p->turn++ % (unsigned)p->run->nrx) : p->peer[w];
		d->len = plan_size(p);
		d->seq = p->seq[w][d->dest]++;
	}
	p->total += (uint64_t)op->n;
}

/* Whether the writer waits for an acknowledgment after the call that took
 * the count to total: every window datagrams, but not after the last. */
static int plan_sync(const struct plan *p, uint64_t *next_ack)
{
	if (p->total < *next_ack || p->total >= (uint64_t)p->run->dgrams)
		return 0;
	*next_ack = p->total + (uint64_t)p->run->window;
	return 1;
}

/* ---- the writer (under the shim) --------------------------------------------------------- */

struct writer {
	int fd[MAX_WRITERS];
	int ack;
	struct sockaddr_storage addr[CO_DGRAM_DESTS];
	socklen_t addrlen[CO_DGRAM_DESTS];
	struct co_rng ir; /* how datagrams are cut into iovecs: the writer's own choice */
	unsigned char buf[MAX_MMSG][MAX_SIZE];
	struct iovec iov[MAX_MMSG][MAX_IOVS];
};

/* Cuts len bytes at buf into 1..max pieces (some may be empty). */
static int cut(struct co_rng *r, unsigned char *buf, size_t len, int max, struct iovec *iov)
{
	size_t cuts[MAX_IOVS];
	int k = (int)co_range(r, 1, (uint64_t)max), i, j;

	for (i = 0; i < k - 1; i++) {
		size_t c = co_range(r, 0, len);

		for (j = i; j > 0 && cuts[j - 1] > c; j--)
			cuts[j] = cuts[j - 1];
		cuts[j] = c;
	}
	for (i = 0; i < k; i++) {
		size_t a = i == 0 ? 0 : cuts[i - 1], b = i == k - 1 ? len : cuts[i];

		iov[i].iov_base = buf + a;
		iov[i].iov_len = b - a;
	}
	return k;
}

static int iov_max(int api)
{
	if (api == API_SENDMSG_IOVS || api == API_WRITEV)
		return MAX_IOVS;
	return api == API_SENDMMSG ? 3 : 1;
}

static void fill_msghdr(struct writer *wr, const struct op *op, int i, struct msghdr *mh)
{
	const struct dgram *d = &op->d[i];

	memset(mh, 0, sizeof(*mh));
	if (d->named) {
		mh->msg_name = &wr->addr[d->dest];
		mh->msg_namelen = wr->addrlen[d->dest];
	}
	mh->msg_iov = wr->iov[i];
	mh->msg_iovlen = (size_t)cut(&wr->ir, wr->buf[i], d->len, iov_max(op->api), wr->iov[i]);
}

static ssize_t send_mmsg(int fd, struct writer *wr, const struct op *op)
{
	struct mmsghdr mm[MAX_MMSG];
	int i, done = 0;

	memset(mm, 0, sizeof(mm));
	for (i = 0; i < op->n; i++)
		fill_msghdr(wr, op, i, &mm[i].msg_hdr);
	/* A blocking sendmmsg sends every message; one that stops short is
	 * continued, as an application would. */
	while (done < op->n) {
		int r = sendmmsg(fd, mm + done, (unsigned)(op->n - done), 0);

		if (r <= 0)
			return -1;
		for (i = done; i < done + r; i++)
			if (mm[i].msg_len != op->d[i].len)
				co_fail("sendmmsg: message %d sent %u of %zu bytes", i,
					mm[i].msg_len, op->d[i].len);
		done += r;
	}
	return done;
}

/* Makes the call of op; returns what it returned. */
static ssize_t send_op(struct writer *wr, const struct op *op)
{
	int fd = wr->fd[op->writer];
	const struct dgram *d = &op->d[0];
	struct msghdr mh;

	switch (op->api) {
	case API_SEND:
		return send(fd, wr->buf[0], d->len, 0);
	case API_SENDTO:
		if (d->named)
			return sendto(fd, wr->buf[0], d->len, 0,
				      (struct sockaddr *)&wr->addr[d->dest], wr->addrlen[d->dest]);
		return sendto(fd, wr->buf[0], d->len, 0, NULL, 0);
	case API_SENDMSG:
	case API_SENDMSG_IOVS:
		fill_msghdr(wr, op, 0, &mh);
		return sendmsg(fd, &mh, 0);
	case API_WRITE:
		return write(fd, wr->buf[0], d->len);
	case API_WRITEV:
		fill_msghdr(wr, op, 0, &mh);
		return writev(fd, mh.msg_iov, (int)mh.msg_iovlen);
	default:
		return send_mmsg(fd, wr, op);
	}
}

static void do_op(struct writer *wr, const struct op *op, int opno)
{
	ssize_t r, want;
	int i;

	if (op->api == API_CONNECT) {
		if (connect(wr->fd[op->writer], (struct sockaddr *)&wr->addr[op->connect_to],
			    wr->addrlen[op->connect_to]) < 0)
			co_fail("op %d: connect writer %d to receiver %d: %s", opno, op->writer,
				op->connect_to, strerror(errno));
		return;
	}
	for (i = 0; i < op->n; i++)
		co_dgram_fill(wr->buf[i], op->d[i].len, (unsigned)op->writer,
			      (unsigned)op->d[i].dest, op->d[i].seq);
	r = send_op(wr, op);
	want = op->api == API_SENDMMSG ? op->n : (ssize_t)op->d[0].len;
	if (r != want)
		co_fail("op %d: %s by writer %d returned %zd (%s), expected %zd", opno,
			api_names[op->api], op->writer, r, r < 0 ? strerror(errno) : "short", want);
}

static void end_child(int ending)
{
	char *const true_argv[] = { "true", NULL };

	switch (ending) {
	case END_EXIT:
		exit(0);
	case END__EXIT:
		_exit(0);
	case END_SIGTERM:
		raise(SIGTERM);
		co_fail("still alive after raise(SIGTERM)");
	case END_EXEC:
		execv("/bin/true", true_argv);
		co_fail("execv /bin/true: %s", strerror(errno));
	default:
		break;
	}
}

/* Arguments: the run, then the receivers' addresses. Fds: the writer
 * sockets from 3 on, then the acknowledgment pipe. */
static int child_main(int argc, char **argv)
{
	static struct writer wr;
	struct plan p;
	struct op op;
	uint64_t next_ack;
	int run, i, opno = 0;
	char ack;

	co_child_init(NAME);
	if (argc < 1)
		co_fail("usage: run address...");
	run = (int)co_arg_u64(argv[0]);
	plan_init(&p, run);
	for (i = 1; i < argc && i <= CO_DGRAM_DESTS; i++)
		wr.addrlen[i - 1] = co_addr_parse(argv[i], &wr.addr[i - 1]);
	for (i = 0; i < p.nw; i++)
		wr.fd[i] = 3 + i;
	wr.ack = 3 + p.nw;
	co_rng_init(&wr.ir, co_seed, 1000 + (uint64_t)run);
	for (i = 0; i < p.nw; i++) {
		if (p.kind[i] != W_UNCONNECTED && !p.run->pair &&
		    connect(wr.fd[i], (struct sockaddr *)&wr.addr[p.peer[i]],
			    wr.addrlen[p.peer[i]]) < 0)
			co_fail("connect writer %d: %s", i, strerror(errno));
	}
	next_ack = (uint64_t)p.run->window;
	while (p.total < (uint64_t)p.run->dgrams) {
		plan_next(&p, &op);
		do_op(&wr, &op, opno++);
		if (plan_sync(&p, &next_ack) && co_read_full(wr.ack, &ack, 1, "ack pipe") != 1)
			co_fail("the receiver closed the acknowledgment pipe");
	}
	end_child(p.run->ending);
	return 0;
}

/* ---- the receiver (parent) ---------------------------------------------------------------- */

struct setup {
	int wfd[MAX_WRITERS]; /* handed to the child */
	int nw;
	char addr[CO_DGRAM_DESTS][128];
	const char *args[CO_DGRAM_DESTS + 2];
	char runarg[16];
};

static void unix_pair(int type, struct co_dgram_check *k, struct setup *s)
{
	int sv[2];

	if (socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, sv) < 0)
		co_fail("socketpair: %s", strerror(errno));
	co_dgram_rx_setup(sv[1]);
	co_dgram_add_rx(k, sv[1]);
	co_dgram_add_writer(k, NULL, 0);
	s->wfd[0] = sv[0];
	s->nw = 1;
}

/* Receivers (Unix: half bound to paths, half to abstract names) and writer
 * sockets bound to addresses of their own, by which the receivers know
 * them. */
static void sockets(const struct run *rn, const struct plan *p, struct co_dgram_check *k,
		    struct setup *s)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int i;

	if (rn->pair) {
		unix_pair(rn->type, k, s);
		return;
	}
	for (i = 0; i < rn->nrx; i++) {
		co_dgram_add_receiver(k, rn->family, rn->family == AF_UNIX && i < rn->nrx / 2,
				      s->addr[i], sizeof(s->addr[i]));
		s->args[i + 1] = s->addr[i];
	}
	s->nw = p->nw;
	for (i = 0; i < p->nw; i++) {
		s->wfd[i] = co_dgram_socket(rn->family, 0, &ss, &len);
		co_dgram_add_writer(k, &ss, len);
	}
}

static void spawn(int run, const struct setup *s, int ackfd, struct co_child *c)
{
	const struct run *rn = &runs[run];
	const char *env[] = { CO_LONG_DELAY, NULL };
	struct co_fdmap map[MAX_WRITERS + 1];
	int i;

	for (i = 0; i < s->nw; i++) {
		map[i].from = s->wfd[i];
		map[i].to = 3 + i;
	}
	map[s->nw].from = ackfd;
	map[s->nw].to = 3 + s->nw;
	co_spawn(c, s->args, map, s->nw + 1, rn->long_delay ? env : NULL, 1);
	for (i = 0; i < s->nw; i++)
		close(s->wfd[i]);
	close(ackfd);
}

static void expect_op(struct co_dgram_check *k, const struct op *op)
{
	int i;

	for (i = 0; i < op->n; i++)
		co_dgram_expect(k, (unsigned)op->writer, (unsigned)op->d[i].dest, op->d[i].seq,
				op->d[i].len, -1);
}

static void check_end(const struct run *rn, struct co_child *c)
{
	int st = co_wait(c);

	if (rn->ending == END_SIGTERM) {
		if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGTERM)
			co_fail("%s: the writer %s; expected death by SIGTERM", rn->name,
				co_status_str(st));
		return;
	}
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		co_fail("%s: the writer under the shim %s", rn->name, co_status_str(st));
	/* SIGTERM leaves no stats file, and /bin/true writes its own over
	 * the exec'd writer's. Coalescing SOCK_SEQPACKET is optional: that
	 * run checks correctness only. */
	if (rn->ending != END_EXEC && rn->type == SOCK_DGRAM)
		co_dgram_expect_coalesced(c, rn->same64, rn->name);
}

static void run_one(int run)
{
	const struct run *rn = &runs[run];
	struct co_dgram_check *k = co_dgram_check_new(rn->name);
	struct setup s;
	struct co_child c;
	struct plan p;
	struct op op;
	uint64_t next_ack = (uint64_t)rn->window;
	int ack[2];

	co_phase("%s: setting up", rn->name);
	memset(&s, 0, sizeof(s));
	plan_init(&p, run);
	sockets(rn, &p, k, &s);
	snprintf(s.runarg, sizeof(s.runarg), "%d", run);
	s.args[0] = s.runarg;
	if (pipe2(ack, O_CLOEXEC) < 0)
		co_fail("pipe: %s", strerror(errno));
	spawn(run, &s, ack[0], &c);
	while (p.total < (uint64_t)rn->dgrams) {
		plan_next(&p, &op);
		expect_op(k, &op);
		if (plan_sync(&p, &next_ack)) {
			co_phase("%s: receiving the first %llu datagrams", rn->name,
				 (unsigned long long)p.total);
			co_dgram_recv_until(k, p.total, IDLE_MS);
			co_write_all(ack[1], "a", 1, "ack pipe");
		}
	}
	co_phase("%s: receiving all %llu datagrams (the last ones were queued when the writer ended)",
		 rn->name, (unsigned long long)p.total);
	co_dgram_recv_until(k, p.total, IDLE_MS);
	co_phase("%s: waiting for the writer", rn->name);
	check_end(rn, &c);
	co_phase("%s: checking that nothing else arrives", rn->name);
	co_dgram_finish(k);
	close(ack[1]);
	co_dgram_check_free(k);
	co_info("%s: %llu datagrams checked", rn->name, (unsigned long long)p.total);
}

int main(int argc, char **argv)
{
	const char *v6why;
	int run;

	if (argc > 1 && strcmp(argv[1], CO_CHILD_FLAG) == 0)
		return child_main(argc - 2, argv + 2);
	co_init(argc, argv, NAME);
	co_watchdog(30);
	/* The writer inherits the disposition: SIGTERM must be the default. */
	signal(SIGTERM, SIG_DFL);
	v6why = co_ipv6_unavailable();
	for (run = 0; run < NRUNS; run++) {
		if (runs[run].family == AF_INET6 && v6why) {
			co_note("%s part skipped: %s", runs[run].name, v6why);
			continue;
		}
		run_one(run);
	}
	co_dgram_stats_verdict();
	return 0;
}
