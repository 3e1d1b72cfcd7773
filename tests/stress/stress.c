/* Integrity stress test of coalesce (issue 3: "never lose, duplicate or
 * reorder a byte").
 *
 * One program, two roles. The parent is the receiver: it never runs under
 * the shim. It draws a plan from the seed, makes the connections, and
 * re-executes itself (/proc/self/exe --stress-writer ...) with LD_PRELOAD set
 * to the library: that child is the writer. The writer's threads write
 * records on every connection through a mix of write APIs, blocking and
 * nonblocking, and end in the way the plan says (return from main, exit()
 * from a thread, _exit, SIGTERM, exec, fork, close of every fd, shutdown).
 * The receiver reads every connection and checks every byte of every record.
 *
 * A record: a 24-byte header (magic, writer thread, connection, sequence
 * number per (thread, connection), payload length, CRC-32 of the payload,
 * CRC-32 of the header) and a payload that is a pure function of (seed,
 * thread, connection, sequence), so that the receiver checks each byte
 * without state. Each record is written by one call, except on connections
 * that one thread owns (or that an application mutex serialises), where it
 * may be cut in up to 8 pieces of any size, down to one byte.
 *
 * The writer publishes, in memory shared with the receiver, how many records
 * of each (thread, connection) it started and completed (the write call
 * returned). When the writer ends at a known point, every planned record
 * must arrive exactly once, in order, intact. When it is cut off at an
 * unknown point (a SIGTERM while writing, exit/_exit/exec from one thread
 * while others write), what arrived per (thread, connection) must be an
 * exact prefix, containing at least every completed record: see
 * tests/stress/README.md for the exact rules and why.
 *
 * Environment: STRESS_SEED (decimal or 0x hex; default: a fresh one),
 * COALESCE_LIB (default build/libcoalesce.so; may be a list separated by
 * spaces), STRESS_NO_SHIM=1, STRESS_NO_FORK=1, STRESS_SCALE (percent of the default data
 * volume, default 100), STRESS_TIMEOUT (seconds, default 120), STRESS_WRAP
 * (a command prefix for the writer, e.g. "valgrind --trace-children=yes"),
 * STRESS_WRITER_ENV (extra NAME=VALUE words for the writer), STRESS_VERBOSE,
 * STRESS_KEEP. Exit: 0 pass, 1 fail, 2 harness error. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 6
#define MAX_CONNS 16
#define NT (MAX_THREADS + 1) /* writer threads, then the fork child */
#define NC (MAX_CONNS + 1)   /* connections, then the fork child's own */
#define FORK_TID MAX_THREADS
#define FORK_CONN MAX_CONNS
#define HDR 24
#define MAX_REC (1u << 20)  /* largest record, header included */
#define ATOMIC_MAX 4096     /* largest record on an unlocked shared Unix connection */
#define MAX_PIECES 8
#define FD_PIPE 4           /* writer -> receiver: "S" started, "D" done */
#define FD_SHM 5            /* the shared counters (memfd) */
#define FD_BASE 10          /* the writer's end of connection i is FD_BASE + i */
#define MAGIC 0x74536f43u
#define WAIT_MS 20000       /* longest wait for room after EAGAIN */
#define WRITER_FLAG "--stress-writer"

enum { K_TCP4, K_TCP6, K_UNIX };
/* How a connection is shared between writer threads:
 * EXCL    one thread;
 * LOCKED  several, each record written under an application mutex;
 * ATOMIC  several, Unix socket, records <= 4 KiB, no mutex: the kernel
 *         queues each such write as one skb, whole or not at all;
 * SHIM    several, blocking TCP, no mutex: relies on the shim's per-call
 *         contiguity; without the shim (STRESS_NO_SHIM) the writer takes
 *         the mutex, as for LOCKED. */
enum { S_EXCL, S_LOCKED, S_ATOMIC, S_SHIM };
enum { E_RETURN, E_EXIT_THREAD, E_UEXIT, E_SIGTERM, E_EXEC, E_FORK, E_CLOSE_ALL, E_SHUTDOWN,
       E_COUNT };
enum { A_WRITE, A_SEND, A_SENDTO, A_SENDMSG, A_WRITEV, A_COUNT };

static const char *const kind_name[] = { "tcp4", "tcp6", "unix" };
static const char *const mode_name[] = { "excl", "locked", "atomic", "shim-contiguous" };
static const char *const ending_name[] = { "return",   "exit-thread", "_exit",     "sigterm",
					   "exec",     "fork",        "close-all", "shutdown" };
static const char *const api_name[] = { "write", "send", "sendto", "sendmsg", "writev" };
static const char *const close_name[] = { "close-loop", "close_range", "closefrom" };
static const char *const fork_end_name[] = { "exit(11)", "_exit(11)", "pthread_exit" };

/* ---- PRNG, payload, checksums ----------------------------------------------------------- */

struct rng {
	uint64_t s;
};

static uint64_t fmix64(uint64_t k)
{
	k ^= k >> 33;
	k *= 0xff51afd7ed558ccdULL;
	k ^= k >> 33;
	k *= 0xc4ceb9fe1a85ec53ULL;
	k ^= k >> 33;
	return k;
}

static void rseed(struct rng *r, uint64_t seed, uint64_t stream)
{
	r->s = fmix64(seed ^ fmix64(stream * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL));
}

static uint64_t rnext(struct rng *r)
{
	__uint128_t t;

	r->s += 0xa0761d6478bd642fULL;
	t = (__uint128_t)r->s * (r->s ^ 0xe7037ed1a0b428dbULL);
	return (uint64_t)(t >> 64) ^ (uint64_t)t;
}

/* Uniform in [lo, hi]. */
static uint64_t rrange(struct rng *r, uint64_t lo, uint64_t hi)
{
	return lo + rnext(r) % (hi - lo + 1);
}

static int rchance(struct rng *r, unsigned pct)
{
	return rnext(r) % 100 < pct;
}

static uint64_t payload_key(uint64_t seed, int tid, int conn, uint32_t seq)
{
	return fmix64(seed ^ fmix64(((uint64_t)tid << 48) ^ ((uint64_t)conn << 32) ^ seq ^
				    0x5bd1e9955bd1e995ULL));
}

static inline uint64_t payload_word(uint64_t key, uint64_t idx)
{
	return fmix64(key + idx * 0x9e3779b97f4a7c15ULL);
}

static void put_le64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le64(const unsigned char *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static void put_le32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void fill_payload(uint64_t key, unsigned char *p, uint32_t len)
{
	uint32_t i;
	uint64_t w;

	for (i = 0; i + 8 <= len; i += 8)
		put_le64(p + i, payload_word(key, i >> 3));
	if (i < len) {
		w = payload_word(key, i >> 3);
		for (; i < len; i++)
			p[i] = (unsigned char)(w >> (8 * (i & 7)));
	}
}

static unsigned char expected_byte(uint64_t key, uint64_t pos)
{
	return (unsigned char)(payload_word(key, pos >> 3) >> (8 * (pos & 7)));
}

/* Index of the first byte of b (payload bytes pos..pos+n-1) that differs
 * from the expected payload, or n. */
static size_t check_payload(uint64_t key, uint64_t pos, const unsigned char *b, size_t n)
{
	size_t i = 0;

	while (i < n) {
		uint64_t off = pos + i, w = payload_word(key, off >> 3);
		unsigned k = (unsigned)(off & 7);

		if (k == 0 && n - i >= 8) {
			if (get_le64(b + i) != w)
				for (; k < 8; k++, i++)
					if (b[i] != (unsigned char)(w >> (8 * k)))
						return i;
			i += k == 0 ? 8 : 0;
			continue;
		}
		for (; k < 8 && i < n; k++, i++)
			if (b[i] != (unsigned char)(w >> (8 * k)))
				return i;
	}
	return n;
}

static uint32_t crc_table[256];

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
		crc_table[i] = c;
	}
}

/* CRC-32 (IEEE), in pieces: start with 0xffffffff, end with ^ 0xffffffff. */
static uint32_t crc_update(uint32_t c, const unsigned char *p, size_t n)
{
	while (n--)
		c = crc_table[(c ^ *p++) & 0xff] ^ (c >> 8);
	return c;
}

static uint32_t crc32_of(const unsigned char *p, size_t n)
{
	return crc_update(0xffffffffu, p, n) ^ 0xffffffffu;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_us(unsigned us)
{
	struct timespec ts = { .tv_sec = us / 1000000, .tv_nsec = (long)(us % 1000000) * 1000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* ---- the plan: everything a seed decides ---------------------------------------------- */

struct conn_plan {
	int kind;
	int nonblock;        /* the writer's end starts O_NONBLOCK */
	int slow;            /* the receiver pauses its reads for a while */
	int sndbuf, rcvbuf;  /* SO_SNDBUF (writer) / SO_RCVBUF (receiver), 0: default */
	int writer_connects; /* the writer connects to the receiver's listener itself */
	int writer_is_client;
	int cloexec;
	int mode;
	unsigned owners;     /* bit t: thread t writes on it */
};

struct plan {
	uint64_t seed;
	int nconn, nthreads;
	struct conn_plan conn[NC];
	int ending, racing, exit_thread, close_how, shut_how;
	int fork_on, fork_tid, fork_exit_how, fork_close_inherited;
	uint32_t fork_at;
	uint32_t nrec[NT];
	uint64_t budget[NT];
	unsigned delay_us, max_bytes, large_bytes, direct;
	unsigned slow_ms, sigterm_after_ms;
};

static int is_tcp(int kind)
{
	return kind == K_TCP4 || kind == K_TCP6;
}

/* STRESS_NO_FORK=1: no plan forks, for a runtime that cannot follow the child
 * of a multithreaded process (ThreadSanitizer: tests/stress/README.md). The
 * receiver and the writer both read it, so that they draw the same plan. */
static int no_fork_wanted(void)
{
	const char *env = getenv("STRESS_NO_FORK");

	return env && *env && strcmp(env, "0");
}

static void plan_make(struct plan *p, uint64_t seed, unsigned scale, int v6_ok, int no_fork)
{
	struct rng r;
	uint64_t total;
	unsigned u;
	int c, t, strict_term;

	memset(p, 0, sizeof(*p));
	p->seed = seed;
	rseed(&r, seed, 1);
	p->nconn = (int)rrange(&r, 1, MAX_CONNS);
	p->nthreads = (int)rrange(&r, 1, MAX_THREADS);
	p->ending = (int)rrange(&r, 0, E_COUNT - 1);
	if (p->ending == E_EXIT_THREAD || p->ending == E_UEXIT || p->ending == E_EXEC)
		p->racing = rchance(&r, 35);
	else if (p->ending == E_SIGTERM)
		p->racing = rchance(&r, 50);
	p->exit_thread = (int)rrange(&r, 0, (uint64_t)p->nthreads - 1);
	p->close_how = (int)rrange(&r, 0, 2);
	p->shut_how = rchance(&r, 30) ? SHUT_RDWR : SHUT_WR;
	p->fork_on = p->ending == E_FORK || rchance(&r, 20);
	p->fork_tid = (int)rrange(&r, 0, (uint64_t)p->nthreads - 1);
	p->fork_at = (uint32_t)rrange(&r, 0, 300);
	p->fork_exit_how = (int)rrange(&r, 0, 2);
	p->fork_close_inherited = rchance(&r, 50);

	u = (unsigned)rrange(&r, 0, 99);
	p->delay_us = u < 40 ? 200 : u < 65 ? 1000000 : (unsigned)rrange(&r, 10, 5000);
	p->max_bytes = rchance(&r, 50) ? 65536 : (unsigned)rrange(&r, 512, 262144);
	p->large_bytes = rchance(&r, 50) ? 32768 : (unsigned)rrange(&r, 256, 65536);
	p->direct = rchance(&r, 75);
	/* SIGTERM after "done": every queue must go out in the signal
	 * handler's one nonblocking pass, into empty sockets (see README). */
	strict_term = p->ending == E_SIGTERM && !p->racing;
	if (strict_term && p->max_bytes > 65536)
		p->max_bytes = 65536;
	p->slow_ms = (unsigned)rrange(&r, 100, 500);
	p->sigterm_after_ms = (unsigned)rrange(&r, 0, 400);

	total = rrange(&r, 1u << 20, 40u << 20) * scale / 100;
	if (total < 65536)
		total = 65536;
	for (t = 0; t < p->nthreads; t++) {
		p->nrec[t] = (uint32_t)(rrange(&r, 100, 3000) * scale / 100);
		if (p->nrec[t] < 10)
			p->nrec[t] = 10;
		p->budget[t] = total / (uint64_t)p->nthreads;
	}
	p->nrec[FORK_TID] = (uint32_t)rrange(&r, 20, 500);
	p->budget[FORK_TID] = rrange(&r, 65536, 4u << 20) * scale / 100 + 4096;

	for (c = 0; c < NC; c++) {
		struct conn_plan *cp = &p->conn[c];
		int small;

		cp->kind = (int)rrange(&r, 0, 2);
		if (cp->kind == K_TCP6 && !v6_ok)
			cp->kind = K_TCP4;
		cp->nonblock = rchance(&r, 50);
		cp->slow = rchance(&r, c == FORK_CONN ? 20 : 30);
		small = cp->slow ? rchance(&r, 60) : rchance(&r, 10);
		if (strict_term)
			small = 0;
		cp->sndbuf = small ? (int)rrange(&r, 4096, 32768) : strict_term ? 1 << 20 : 0;
		cp->rcvbuf = small ? (int)rrange(&r, 4096, 32768) : 0;
		cp->writer_connects = c == FORK_CONN || rchance(&r, 35);
		cp->writer_is_client = rchance(&r, 50);
		cp->cloexec = rchance(&r, 50);
		if (c == FORK_CONN) {
			cp->owners = 1u << FORK_TID;
			cp->mode = S_EXCL;
			continue;
		}
		if (c >= p->nconn)
			continue;
		cp->owners = 1u << rrange(&r, 0, (uint64_t)p->nthreads - 1);
		if (p->nthreads > 1 && rchance(&r, 30)) {
			for (t = 0; t < p->nthreads; t++)
				if (rchance(&r, 50))
					cp->owners |= 1u << t;
			while (__builtin_popcount(cp->owners) < 2)
				cp->owners |= 1u << rrange(&r, 0, (uint64_t)p->nthreads - 1);
		}
	}
	/* Every thread writes somewhere. */
	for (t = 0; t < p->nthreads; t++) {
		for (c = 0; c < p->nconn; c++)
			if (p->conn[c].owners & (1u << t))
				break;
		if (c == p->nconn)
			p->conn[rrange(&r, 0, (uint64_t)p->nconn - 1)].owners |= 1u << t;
	}
	/* Left out after every draw, so that the rest of the plan is the one
	 * the seed gives without STRESS_NO_FORK. */
	if (no_fork) {
		p->fork_on = 0;
		if (p->ending == E_FORK)
			p->ending = E_RETURN;
	}
	for (c = 0; c < p->nconn; c++) {
		struct conn_plan *cp = &p->conn[c];

		if (__builtin_popcount(cp->owners) == 1)
			cp->mode = S_EXCL;
		else if (cp->kind == K_UNIX)
			cp->mode = rchance(&r, 60) ? S_ATOMIC : S_LOCKED;
		else if (!cp->nonblock)
			cp->mode = rchance(&r, 60) ? S_SHIM : S_LOCKED;
		else
			cp->mode = S_LOCKED;
		/* One skb per record needs sndbuf/2 - 64 >= 4 KiB. */
		if (cp->mode == S_ATOMIC && cp->sndbuf && cp->sndbuf < 16384)
			cp->sndbuf = 16384;
	}
}

/* One record as the plan has it. */
struct rec_plan {
	int conn;
	uint32_t seq, len; /* len: payload bytes */
	int pieces;
	uint32_t cut[MAX_PIECES + 1];
	int api[MAX_PIECES], flags[MAX_PIECES];
	uint64_t layout;
};

struct plan_iter {
	const struct plan *p;
	int tid, last, nowned;
	struct rng r;
	uint32_t i;
	uint64_t bytes;
	uint32_t seq[NC];
	int owned[NC];
};

static void plan_iter_init(struct plan_iter *it, const struct plan *p, int tid)
{
	memset(it, 0, sizeof(*it));
	it->p = p;
	it->tid = tid;
	it->last = -1;
	rseed(&it->r, p->seed, 100 + (uint64_t)tid);
	for (int c = 0; c < NC; c++)
		if ((c < p->nconn || c == FORK_CONN) && (p->conn[c].owners & (1u << tid)))
			it->owned[it->nowned++] = c;
}

static int pick_flags(struct rng *r, int mode)
{
	static const int choice[] = {
		0, 0, MSG_DONTWAIT, MSG_NOSIGNAL, MSG_MORE, MSG_DONTWAIT | MSG_NOSIGNAL,
		MSG_MORE | MSG_NOSIGNAL, MSG_DONTWAIT | MSG_MORE,
	};
	int f = choice[rrange(r, 0, sizeof(choice) / sizeof(choice[0]) - 1)];

	/* A shim-contiguous connection must stay blocking: a nonblocking call
	 * may be short, and its continuation is another call. */
	return mode == S_SHIM ? f & ~MSG_DONTWAIT : f;
}

static int plan_next(struct plan_iter *it, struct rec_plan *rp)
{
	const struct plan *p = it->p;
	const struct conn_plan *cp;
	uint32_t total, k, tmp;
	unsigned u;
	int c, i, j;

	if (it->i >= p->nrec[it->tid] || it->bytes >= p->budget[it->tid] || it->nowned == 0)
		return 0;
	if (it->last >= 0 && rchance(&it->r, 60))
		c = it->last;
	else
		c = it->owned[rrange(&it->r, 0, (uint64_t)it->nowned - 1)];
	it->last = c;
	cp = &p->conn[c];
	u = (unsigned)rrange(&it->r, 0, 99);
	if (u < 80)
		total = (uint32_t)rrange(&it->r, HDR, 256);
	else if (u < 95)
		total = (uint32_t)rrange(&it->r, 257, 16384);
	else
		total = (uint32_t)rrange(&it->r, 16385, MAX_REC);
	if (cp->mode == S_ATOMIC && total > ATOMIC_MAX)
		total = (uint32_t)rrange(&it->r, HDR, ATOMIC_MAX);
	rp->conn = c;
	rp->seq = it->seq[c]++;
	rp->len = total - HDR;
	rp->pieces = 1;
	if ((cp->mode == S_EXCL || cp->mode == S_LOCKED) && rchance(&it->r, 15))
		rp->pieces = (int)rrange(&it->r, 2, MAX_PIECES);
	rp->cut[0] = 0;
	rp->cut[rp->pieces] = total;
	for (k = 1; k < (uint32_t)rp->pieces; k++)
		rp->cut[k] = (uint32_t)rrange(&it->r, 1, total - 1);
	for (i = 1; i < rp->pieces; i++) /* sort the cuts; equal ones make empty pieces */
		for (j = i; j > 1 && rp->cut[j - 1] > rp->cut[j]; j--) {
			tmp = rp->cut[j];
			rp->cut[j] = rp->cut[j - 1];
			rp->cut[j - 1] = tmp;
		}
	for (i = 0; i < rp->pieces; i++) {
		rp->api[i] = (int)rrange(&it->r, 0, A_COUNT - 1);
		rp->flags[i] = rp->api[i] == A_SEND || rp->api[i] == A_SENDTO || rp->api[i] == A_SENDMSG
				       ? pick_flags(&it->r, cp->mode)
				       : 0;
	}
	rp->layout = rnext(&it->r);
	it->bytes += total;
	it->i++;
	return 1;
}

static void build_record(unsigned char *buf, uint64_t seed, int tid, int conn, uint32_t seq,
			 uint32_t len)
{
	fill_payload(payload_key(seed, tid, conn, seq), buf + HDR, len);
	put_le32(buf, MAGIC);
	buf[4] = (unsigned char)tid;
	buf[5] = 0;
	buf[6] = (unsigned char)conn;
	buf[7] = 0;
	put_le32(buf + 8, seq);
	put_le32(buf + 12, len);
	put_le32(buf + 16, crc32_of(buf + HDR, len));
	put_le32(buf + 20, crc32_of(buf, 20));
}

/* ---- memory shared by the writer (and its fork child) with the receiver -------------- */

struct tc_count {
	_Atomic uint32_t started, completed;
};

struct shared {
	struct tc_count tc[NT][NC];
	_Atomic uint64_t calls, small_calls, eagain, partial, waits_poll, waits_epoll, waits_et,
		interleaved, toggles, atomic_splits;
	_Atomic int thread_done[NT];
	_Atomic int fork_pid, fork_status, fork_status_known;
	_Atomic uint64_t where[NT]; /* record index << 32 | conn << 8 | state */
	_Atomic int error_set;
	char error[1024];
};

enum { W_IDLE, W_WRITE, W_POLL, W_EPOLL, W_LOCK, W_OP, W_DONE, W_FORK, W_ENDING };
static const char *const where_name[] = { "idle",  "writing", "in poll after EAGAIN",
					  "in epoll_wait after EAGAIN", "waiting for the conn mutex",
					  "interleaved op", "done", "forking", "ending" };

static struct shared *sh;

/* ---- the writer --------------------------------------------------------------------------- */

struct wconn {
	int id, fd, nonblock;
	const struct conn_plan *cp;
	pthread_mutex_t mu;
};

struct wthread {
	int tid;
	pthread_t th;
	struct rng ops;
	unsigned char *buf;
	int ep[NC];    /* one epoll instance per connection, made on first need */
	int ep_et[NC]; /* registered edge-triggered */
};

static struct {
	struct plan p;
	int noshim, pipe_r, pipe_w;
	pid_t ppid;
	int port[NC];
	struct wconn conn[NC];
	struct wthread th[NT];
} W;

__attribute__((noreturn, format(printf, 1, 2))) static void wfail(const char *fmt, ...)
{
	char msg[900];
	va_list ap;
	int expected = 0;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "stress writer (pid %ld, seed 0x%016" PRIx64 "): %s\n", (long)getpid(),
		W.p.seed, msg);
	if (sh && atomic_compare_exchange_strong(&sh->error_set, &expected, 1))
		snprintf(sh->error, sizeof(sh->error), "%s", msg);
	_exit(99);
}

static void say(const char *what)
{
	if (write(FD_PIPE, what, strlen(what)) < 0)
		wfail("write to the side pipe: %s", strerror(errno));
}

static void set_where(int tid, uint32_t idx, int conn, int state)
{
	atomic_store_explicit(&sh->where[tid], (uint64_t)idx << 32 | (uint64_t)conn << 8 | (unsigned)state,
			      memory_order_relaxed);
}

/* Splits [p, p+n) into 1..max iovecs at random cuts (some empty). */
static int make_iov(struct iovec *iov, int max, const unsigned char *p, size_t n, struct rng *lay)
{
	int cnt = (int)rrange(lay, 1, (uint64_t)max), i;
	size_t at = 0, len;

	for (i = 0; i < cnt; i++) {
		size_t left = n - at;

		if (i == cnt - 1)
			len = left;
		else if (rchance(lay, 10))
			len = 0;
		else
			len = left ? (size_t)rrange(lay, 0, left < 2 * (n / cnt + 1) ? left : 2 * (n / cnt + 1)) : 0;
		iov[i].iov_base = (void *)(p + at);
		iov[i].iov_len = len;
		at += len;
	}
	return cnt;
}

static void wait_room(struct wthread *t, struct wconn *c, uint32_t idx)
{
	struct epoll_event ev;
	int r, how = (int)rrange(&t->ops, 0, 2);

	if (how == 0) {
		struct pollfd pfd = { .fd = c->fd, .events = POLLOUT };

		set_where(t->tid, idx, c->id, W_POLL);
		atomic_fetch_add(&sh->waits_poll, 1);
		do
			r = poll(&pfd, 1, WAIT_MS);
		while (r < 0 && errno == EINTR);
		if (r < 0)
			wfail("poll on conn %d: %s", c->id, strerror(errno));
		if (r == 0)
			wfail("thread %d: no POLLOUT on conn %d within %d ms after EAGAIN (record %u)",
			      t->tid, c->id, WAIT_MS, idx);
		if (pfd.revents & (POLLERR | POLLHUP | POLLNVAL))
			wfail("poll on conn %d: revents 0x%x", c->id, pfd.revents);
		return;
	}
	if (t->ep[c->id] < 0) {
		t->ep[c->id] = epoll_create1(EPOLL_CLOEXEC);
		if (t->ep[c->id] < 0)
			wfail("epoll_create1: %s", strerror(errno));
		t->ep_et[c->id] = rchance(&t->ops, 50);
		ev.events = EPOLLOUT | (t->ep_et[c->id] ? EPOLLET : 0);
		ev.data.fd = c->fd;
		if (epoll_ctl(t->ep[c->id], EPOLL_CTL_ADD, c->fd, &ev) < 0)
			wfail("epoll_ctl on conn %d: %s", c->id, strerror(errno));
	}
	set_where(t->tid, idx, c->id, W_EPOLL);
	atomic_fetch_add(t->ep_et[c->id] ? &sh->waits_et : &sh->waits_epoll, 1);
	do
		r = epoll_wait(t->ep[c->id], &ev, 1, WAIT_MS);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		wfail("epoll_wait on conn %d: %s", c->id, strerror(errno));
	if (r == 0)
		wfail("thread %d: no %s EPOLLOUT on conn %d within %d ms after EAGAIN (record %u)",
		      t->tid, t->ep_et[c->id] ? "edge-triggered" : "level-triggered", c->id, WAIT_MS,
		      idx);
}

/* Writes len bytes with one API, continuing short writes and waiting for
 * room after EAGAIN. atomic: the kernel alone never splits this write. */
static void put(struct wthread *t, struct wconn *c, uint32_t idx, const unsigned char *buf,
		size_t len, int api, int flags, struct rng *lay, int atomic)
{
	struct iovec iov[64];
	struct msghdr msg;
	size_t done = 0;

	while (done < len) {
		const unsigned char *p = buf + done;
		size_t n = len - done;
		int may_block = !c->nonblock && !(flags & MSG_DONTWAIT);
		ssize_t r;

		set_where(t->tid, idx, c->id, W_WRITE);
		switch (api) {
		case A_WRITE:
			r = write(c->fd, p, n);
			break;
		case A_SEND:
			r = send(c->fd, p, n, flags);
			break;
		case A_SENDTO:
			r = sendto(c->fd, p, n, flags, NULL, 0);
			break;
		case A_SENDMSG:
			memset(&msg, 0, sizeof(msg));
			msg.msg_iov = iov;
			msg.msg_iovlen = (size_t)make_iov(iov, 16, p, n, lay);
			r = sendmsg(c->fd, &msg, flags);
			break;
		default:
			r = writev(c->fd, iov, make_iov(iov, 64, p, n, lay));
			break;
		}
		atomic_fetch_add_explicit(&sh->calls, 1, memory_order_relaxed);
		if (n <= 256)
			atomic_fetch_add_explicit(&sh->small_calls, 1, memory_order_relaxed);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				if (may_block)
					wfail("thread %d: %s of %zu bytes (flags 0x%x) on blocking conn %d "
					      "returned EAGAIN",
					      t->tid, api_name[api], n, flags, c->id);
				atomic_fetch_add_explicit(&sh->eagain, 1, memory_order_relaxed);
				wait_room(t, c, idx);
				continue;
			}
			wfail("thread %d: %s of %zu bytes (flags 0x%x) on conn %d: %s", t->tid,
			      api_name[api], n, flags, c->id, strerror(errno));
		}
		if (r == 0 || (size_t)r > n)
			wfail("thread %d: %s of %zu bytes on conn %d returned %zd", t->tid,
			      api_name[api], n, c->id, r);
		if ((size_t)r < n) {
			atomic_fetch_add_explicit(&sh->partial, 1, memory_order_relaxed);
			if (may_block)
				wfail("thread %d: %s of %zu bytes on blocking conn %d returned %zd "
				      "(short, without a signal)",
				      t->tid, api_name[api], n, c->id, r);
			if (atomic) {
				atomic_fetch_add(&sh->atomic_splits, 1);
				fprintf(stderr,
					"stress writer: thread %d: %s of a %zu-byte record on shared "
					"nonblocking unix conn %d returned %zd (the kernel alone takes it "
					"whole or not at all)\n",
					t->tid, api_name[api], n, c->id, r);
			}
		}
		done += (size_t)r;
	}
}

static void interleave(struct wthread *t, struct wconn *c, uint32_t idx)
{
	char b[64];
	struct pollfd pfd;
	int v, r;

	set_where(t->tid, idx, c->id, W_OP);
	atomic_fetch_add_explicit(&sh->interleaved, 1, memory_order_relaxed);
	switch (rrange(&t->ops, 0, 8)) {
	case 0:
		sleep_us((unsigned)rrange(&t->ops, 1, 300));
		break;
	case 1: /* a read elsewhere: the shim flushes every queue before it */
		if (read(W.pipe_r, b, sizeof(b)) < 0 && errno != EAGAIN)
			wfail("read of the internal pipe: %s", strerror(errno));
		break;
	case 2:
		if (write(W.pipe_w, "x", 1) < 0 && errno != EAGAIN)
			wfail("write of the internal pipe: %s", strerror(errno));
		break;
	case 3:
		pfd.fd = W.pipe_r;
		pfd.events = POLLIN;
		if (poll(&pfd, 1, (int)rrange(&t->ops, 0, 1)) < 0)
			wfail("poll of the internal pipe: %s", strerror(errno));
		break;
	case 4: /* the receiver never writes: nothing to read, ever */
		r = (int)recv(c->fd, b, sizeof(b), MSG_DONTWAIT);
		if (r >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
			wfail("recv(MSG_DONTWAIT) on conn %d returned %d (%s)", c->id, r,
			      r < 0 ? strerror(errno) : "data or EOF from a silent peer");
		break;
	case 5:
		if (is_tcp(c->cp->kind)) {
			v = (int)rrange(&t->ops, 0, 1);
			if (setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &v, sizeof(v)) < 0)
				wfail("setsockopt(TCP_NODELAY) on conn %d: %s", c->id, strerror(errno));
			atomic_fetch_add(&sh->toggles, 1);
		}
		break;
	case 6:
		if (c->cp->mode == S_EXCL) {
			int fl = fcntl(c->fd, F_GETFL);

			if (fl < 0 || fcntl(c->fd, F_SETFL, fl ^ O_NONBLOCK) < 0)
				wfail("fcntl(F_SETFL) on conn %d: %s", c->id, strerror(errno));
			c->nonblock = !c->nonblock;
			atomic_fetch_add(&sh->toggles, 1);
		}
		break;
	case 7: {
		fd_set rs;
		struct timeval tv = { 0, (long)rrange(&t->ops, 0, 1) * 1000 };

		FD_ZERO(&rs);
		FD_SET(W.pipe_r, &rs);
		if (select(W.pipe_r + 1, &rs, NULL, NULL, &tv) < 0)
			wfail("select: %s", strerror(errno));
		break;
	}
	default:
		sched_yield();
		break;
	}
}

static void write_record(struct wthread *t, const struct rec_plan *rp, uint32_t idx)
{
	struct wconn *c = &W.conn[rp->conn];
	int lock = c->cp->mode == S_LOCKED || (c->cp->mode == S_SHIM && W.noshim);
	struct tc_count *cnt = &sh->tc[t->tid][rp->conn];
	struct rng lay;
	int i;

	build_record(t->buf, W.p.seed, t->tid, rp->conn, rp->seq, rp->len);
	rseed(&lay, rp->layout, 7);
	if (lock) {
		set_where(t->tid, idx, c->id, W_LOCK);
		pthread_mutex_lock(&c->mu);
	}
	atomic_store(&cnt->started, rp->seq + 1);
	for (i = 0; i < rp->pieces; i++)
		if (rp->cut[i + 1] > rp->cut[i])
			put(t, c, idx, t->buf + rp->cut[i], rp->cut[i + 1] - rp->cut[i], rp->api[i],
			    rp->flags[i], &lay, c->cp->mode == S_ATOMIC);
	atomic_store(&cnt->completed, rp->seq + 1);
	if (lock)
		pthread_mutex_unlock(&c->mu);
}

static void thread_init(struct wthread *t, int tid)
{
	t->tid = tid;
	rseed(&t->ops, W.p.seed, 200 + (uint64_t)tid);
	t->buf = malloc(MAX_REC);
	if (!t->buf)
		wfail("out of memory");
	for (int c = 0; c < NC; c++)
		t->ep[c] = -1;
}

/* Writes every record the plan gives thread tid; fork_hook runs before
 * record fork_at of the forking thread. */
static void run_records(struct wthread *t, void (*fork_hook)(struct wthread *))
{
	struct plan_iter it;
	struct rec_plan rp;
	uint32_t idx = 0;
	int forked = fork_hook == NULL;

	plan_iter_init(&it, &W.p, t->tid);
	while (plan_next(&it, &rp)) {
		if (!forked && idx == W.p.fork_at) {
			forked = 1;
			fork_hook(t);
		}
		if (rchance(&t->ops, 3))
			interleave(t, &W.conn[rp.conn], idx);
		write_record(t, &rp, idx);
		idx++;
	}
	if (!forked)
		fork_hook(t);
	set_where(t->tid, idx, 0, W_DONE);
}

static int connect_to(int kind, int port, int conn)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int fd;

	memset(&ss, 0, sizeof(ss));
	if (kind == K_UNIX) {
		struct sockaddr_un *un = (struct sockaddr_un *)&ss;

		un->sun_family = AF_UNIX;
		snprintf(un->sun_path + 1, sizeof(un->sun_path) - 1, "coalesce-stress.%ld.%d",
			 (long)W.ppid, conn);
		len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(un->sun_path + 1));
	} else if (kind == K_TCP4) {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;

		in->sin_family = AF_INET;
		in->sin_port = htons((uint16_t)port);
		in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		len = sizeof(*in);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;

		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		in6->sin6_addr = in6addr_loopback;
		len = sizeof(*in6);
	}
	fd = socket(ss.ss_family, SOCK_STREAM, 0);
	if (fd < 0)
		wfail("socket: %s", strerror(errno));
	while (connect(fd, (struct sockaddr *)&ss, len) < 0)
		if (errno != EINTR)
			wfail("connect for conn %d (%s): %s", conn, kind_name[kind], strerror(errno));
	return fd;
}

/* Puts the writer's end of connection c in the state the plan says. */
static void setup_conn(int c, int fd)
{
	struct wconn *wc = &W.conn[c];
	const struct conn_plan *cp = &W.p.conn[c];
	int fl;

	wc->id = c;
	wc->fd = fd;
	wc->cp = cp;
	wc->nonblock = cp->nonblock;
	pthread_mutex_init(&wc->mu, NULL);
	if (cp->writer_connects && cp->sndbuf &&
	    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &cp->sndbuf, sizeof(cp->sndbuf)) < 0)
		wfail("SO_SNDBUF: %s", strerror(errno));
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, cp->nonblock ? fl | O_NONBLOCK : fl & ~O_NONBLOCK) < 0)
		wfail("fcntl on conn %d (fd %d): %s", c, fd, strerror(errno));
	if (fcntl(fd, F_SETFD, cp->cloexec ? FD_CLOEXEC : 0) < 0)
		wfail("F_SETFD: %s", strerror(errno));
}

static void do_exec(void)
{
	execl("/bin/true", "true", (char *)NULL);
	wfail("exec /bin/true: %s", strerror(errno));
}

static void fork_child_main(struct wthread *parent_thread)
{
	struct wthread *t = &W.th[FORK_TID];
	int c, fd;

	(void)parent_thread;
	atomic_store(&sh->fork_pid, (int)getpid());
	if (W.p.fork_close_inherited)
		for (c = 0; c < W.p.nconn; c++)
			close(W.conn[c].fd);
	fd = connect_to(W.p.conn[FORK_CONN].kind, W.port[FORK_CONN], FORK_CONN);
	setup_conn(FORK_CONN, fd);
	thread_init(t, FORK_TID);
	run_records(t, NULL);
	switch (W.p.fork_exit_how) {
	case 0:
		exit(11);
	case 1:
		_exit(11);
	default:
		pthread_exit(NULL); /* the last thread: the process exits with 0 */
	}
}

static void fork_hook(struct wthread *t)
{
	pid_t pid;

	set_where(t->tid, 0, 0, W_FORK);
	pid = fork();
	if (pid < 0)
		wfail("fork: %s", strerror(errno));
	if (pid == 0)
		fork_child_main(t);
	atomic_store(&sh->fork_pid, (int)pid);
}

static void reap_fork_child(void)
{
	int pid = atomic_load(&sh->fork_pid), st;

	if (!pid)
		return;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			wfail("waitpid(fork child %d): %s", pid, strerror(errno));
	atomic_store(&sh->fork_status, st);
	atomic_store(&sh->fork_status_known, 1);
}

static void *thread_main(void *arg)
{
	struct wthread *t = arg;
	int i;

	run_records(t, W.p.fork_on && t->tid == W.p.fork_tid ? fork_hook : NULL);
	atomic_store(&sh->thread_done[t->tid], 1);
	if (t->tid != W.p.exit_thread)
		return NULL;
	switch (W.p.ending) {
	case E_EXIT_THREAD:
		if (!W.p.racing) {
			for (i = 0; i < W.p.nthreads; i++)
				while (!atomic_load(&sh->thread_done[i]))
					sleep_us(500);
			reap_fork_child();
			say("D\n");
		}
		set_where(t->tid, 0, 0, W_ENDING);
		exit(3);
	case E_UEXIT:
		if (W.p.racing) {
			set_where(t->tid, 0, 0, W_ENDING);
			_exit(5);
		}
		break;
	case E_EXEC:
		if (W.p.racing) {
			set_where(t->tid, 0, 0, W_ENDING);
			do_exec();
		}
		break;
	}
	return NULL;
}

static void close_everything(int how)
{
	int fd;

	switch (how) {
	case 0:
		for (fd = 3; fd < 1024; fd++)
			close(fd);
		break;
	case 1:
		if (close_range(3, ~0u, 0) < 0)
			wfail("close_range: %s", strerror(errno));
		break;
	default:
		closefrom(3);
		break;
	}
}

static int writer_main(int argc, char **argv)
{
	struct sigaction old;
	int c, t, p[2];
	char *s, *end;

	if (argc < 8)
		wfail("usage: %s %s SEED SCALE V6 NOSHIM PPID PORTS", argv[0], WRITER_FLAG);
	plan_make(&W.p, strtoull(argv[2], NULL, 0), (unsigned)strtoul(argv[3], NULL, 0),
		  atoi(argv[4]), no_fork_wanted());
	W.noshim = atoi(argv[5]);
	W.ppid = (pid_t)atol(argv[6]);
	for (s = argv[7], c = 0; c < NC && *s; c++, s = *end ? end + 1 : end)
		W.port[c] = (int)strtol(s, &end, 10);
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED, FD_SHM, 0);
	if (sh == MAP_FAILED) {
		sh = NULL;
		wfail("mmap of the shared counters: %s", strerror(errno));
	}
	/* The application never touched SIGTERM: the shim must say SIG_DFL. */
	if (sigaction(SIGTERM, NULL, &old) < 0 || (old.sa_flags & SA_SIGINFO) ||
	    old.sa_handler != SIG_DFL)
		wfail("sigaction(SIGTERM) does not report SIG_DFL");
	for (c = 0; c < W.p.nconn; c++)
		setup_conn(c, W.p.conn[c].writer_connects
				      ? connect_to(W.p.conn[c].kind, W.port[c], c)
				      : FD_BASE + c);
	if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0)
		wfail("pipe2: %s", strerror(errno));
	W.pipe_r = p[0];
	W.pipe_w = p[1];
	say("S\n");
	for (t = 0; t < W.p.nthreads; t++) {
		thread_init(&W.th[t], t);
		if (pthread_create(&W.th[t].th, NULL, thread_main, &W.th[t]) != 0)
			wfail("pthread_create failed");
	}
	for (t = 0; t < W.p.nthreads; t++)
		pthread_join(W.th[t].th, NULL);
	/* Every thread is done (an exit-thread or racing ending never gets here). */
	reap_fork_child();
	say("D\n");
	switch (W.p.ending) {
	case E_UEXIT:
		_exit(5);
	case E_EXEC:
		do_exec();
		break;
	case E_SIGTERM:
		for (;;)
			pause(); /* not a wait the shim flushes before: the signal must */
	case E_CLOSE_ALL:
		close_everything(W.p.close_how);
		exit(7);
	case E_SHUTDOWN:
		for (c = 0; c < W.p.nconn; c++)
			if (shutdown(W.conn[c].fd, W.p.shut_how) < 0)
				wfail("shutdown of conn %d: %s", c, strerror(errno));
		exit(9);
	}
	return 0;
}

/* ---- the receiver ----------------------------------------------------------------------- */

enum { ST_HDR, ST_PAY, ST_SYNC };
#define MAX_NOTES 10
#define RBUF (256 * 1024)

/* Records of one thread on one connection. */
struct track {
	uint8_t *seen; /* by seq: 0 never, 1 arrived */
	uint32_t cap, next, planned, arrived, ok, dup, late, corrupt, gaps;
	uint32_t *lens; /* planned payload length by seq */
	int64_t trunc_seq; /* a record cut off at EOF, or -1 */
	uint32_t trunc_got;
};

struct rconn {
	int id, fd, lfd, present, eof, parent_made;
	int port;
	unsigned char *buf;
	size_t blen;
	uint64_t boff, bytes, resume_ns, sync_from;
	int st;
	/* the record being read */
	int tid;
	uint32_t seq, len, psum, pdone, crc;
	uint64_t key, rec_off, bad_at;
	int bad;
	uint32_t ok, bad_records, headers_bad;
	char *notes[MAX_NOTES];
	int nnotes, more;
};

static struct {
	struct plan p;
	uint64_t seed;
	unsigned scale;
	int noshim, verbose, keep, v6_ok;
	char lib[4096];
	char tmpdir[256];
	struct rconn conn[NC];
	struct track trk[NT][NC];
	pid_t writer;
	int writer_status, writer_reaped;
	int fork_status_seen, fork_status;
	int started, done, killed, pipe_fd, failures;
	uint64_t t0, started_ns, done_ns, last_data_ns, kill_ns;
	struct rng rr;
	char pipe_buf[256];
	size_t pipe_len;
	char writer_msgs[1024];
} R;

__attribute__((format(printf, 1, 2))) static void fail(const char *fmt, ...)
{
	va_list ap;

	R.failures++;
	printf("  FAIL: ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
}

__attribute__((format(printf, 1, 2))) static void info(const char *fmt, ...)
{
	va_list ap;

	printf("  note: ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
}

__attribute__((noreturn, format(printf, 1, 2))) static void die(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "ERROR seed=0x%016" PRIx64 ": ", R.seed);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	if (R.writer > 0)
		kill(-R.writer, SIGKILL);
	exit(2);
}

__attribute__((format(printf, 2, 3))) static void cnote(struct rconn *c, const char *fmt, ...)
{
	va_list ap;

	if (c->nnotes == MAX_NOTES) {
		c->more++;
		return;
	}
	va_start(ap, fmt);
	if (vasprintf(&c->notes[c->nnotes], fmt, ap) >= 0)
		c->nnotes++;
	va_end(ap);
}

static void track_mark(struct track *k, uint32_t seq)
{
	if (seq >= k->cap) {
		uint32_t cap = k->cap ? k->cap : 1024;

		while (cap <= seq)
			cap *= 2;
		k->seen = realloc(k->seen, cap);
		if (!k->seen)
			die("out of memory");
		memset(k->seen + k->cap, 0, cap - k->cap);
		k->cap = cap;
	}
	k->seen[seq] = 1;
}

static int track_seen(const struct track *k, uint32_t seq)
{
	return seq < k->cap && k->seen[seq];
}

/* Checks a header that passed magic and CRC; starts the record. Returns 0,
 * or -1 if its fields make no sense on this connection. */
static int rx_start(struct rconn *c, const unsigned char *h)
{
	int tid = h[4], conn = h[6];
	uint32_t seq = get_le32(h + 8), len = get_le32(h + 12);
	struct track *k;

	if (tid >= NT || conn != c->id || h[5] || h[7] || len > MAX_REC - HDR ||
	    !(R.p.conn[c->id].owners & (1u << tid))) {
		cnote(c, "offset %" PRIu64 ": header of thread %d conn %d seq %u len %u does not "
			 "belong on conn %d",
		      c->boff, tid, conn, seq, len, c->id);
		return -1;
	}
	k = &R.trk[tid][conn];
	if (seq == k->next) {
		k->next++;
	} else if (seq > k->next) {
		k->gaps++;
		cnote(c, "offset %" PRIu64 ": thread %d seq %u arrived where seq %u was due "
			 "(seq %u..%u missing here)",
		      c->boff, tid, seq, k->next, k->next, seq - 1);
		k->next = seq + 1;
	} else if (track_seen(k, seq)) {
		k->dup++;
		cnote(c, "offset %" PRIu64 ": thread %d seq %u DUPLICATED (next due %u)", c->boff,
		      tid, seq, k->next);
	} else {
		k->late++;
		cnote(c, "offset %" PRIu64 ": thread %d seq %u arrived late, REORDERED (next due %u)",
		      c->boff, tid, seq, k->next);
	}
	if (!track_seen(k, seq))
		k->arrived++;
	track_mark(k, seq);
	c->tid = tid;
	c->seq = seq;
	c->len = len;
	c->psum = get_le32(h + 16);
	c->pdone = 0;
	c->crc = 0xffffffffu;
	c->key = payload_key(R.seed, tid, conn, seq);
	c->rec_off = c->boff;
	c->bad = 0;
	return 0;
}

static void rx_finish(struct rconn *c)
{
	struct track *k = &R.trk[c->tid][c->id];
	uint32_t crc = c->crc ^ 0xffffffffu;

	if (c->bad || crc != c->psum) {
		k->corrupt++;
		c->bad_records++;
		if (c->bad)
			cnote(c, "offset %" PRIu64 ": thread %d seq %u (%u payload bytes) CORRUPT from "
				 "payload byte %" PRIu64 " (stream offset %" PRIu64 ")",
			      c->rec_off, c->tid, c->seq, c->len, c->bad_at,
			      c->rec_off + HDR + c->bad_at);
		else
			cnote(c, "offset %" PRIu64 ": thread %d seq %u: payload CRC 0x%08x, header "
				 "says 0x%08x",
			      c->rec_off, c->tid, c->seq, crc, c->psum);
	} else {
		k->ok++;
		c->ok++;
	}
	c->st = ST_HDR;
}

static int header_ok(const unsigned char *h)
{
	return get_le32(h) == MAGIC && get_le32(h + 20) == crc32_of(h, 20);
}

/* Parses what is in c->buf; keeps an incomplete header for later. */
static void rx_parse(struct rconn *c)
{
	size_t pos = 0;

	while (pos < c->blen) {
		if (c->st == ST_PAY) {
			size_t n = c->blen - pos, bad;

			if (n > c->len - c->pdone)
				n = c->len - c->pdone;
			if (!c->bad) {
				bad = check_payload(c->key, c->pdone, c->buf + pos, n);
				if (bad < n) {
					c->bad = 1;
					c->bad_at = c->pdone + bad;
					if (c->nnotes < MAX_NOTES)
						cnote(c, "offset %" PRIu64 ": payload byte %" PRIu64
							 " of thread %d seq %u: expected 0x%02x, got 0x%02x",
						      c->boff + pos + bad, c->bad_at, c->tid, c->seq,
						      expected_byte(c->key, c->bad_at), c->buf[pos + bad]);
				}
			}
			c->crc = crc_update(c->crc, c->buf + pos, n);
			c->pdone += (uint32_t)n;
			pos += n;
			c->boff += n;
			if (c->pdone == c->len)
				rx_finish(c);
			continue;
		}
		if (c->blen - pos < HDR)
			break;
		if (c->st == ST_HDR) {
			if (header_ok(c->buf + pos) && rx_start(c, c->buf + pos) == 0) {
				pos += HDR;
				c->boff += HDR;
				c->st = ST_PAY;
				if (c->len == 0)
					rx_finish(c);
				continue;
			}
			c->headers_bad++;
			if (header_ok(c->buf + pos) == 0)
				cnote(c, "offset %" PRIu64 ": no valid record header (bytes %02x %02x %02x "
					 "%02x...): a record was cut, interleaved or corrupted",
				      c->boff, c->buf[pos], c->buf[pos + 1], c->buf[pos + 2],
				      c->buf[pos + 3]);
			c->st = ST_SYNC;
			c->sync_from = c->boff;
			pos++;
			c->boff++;
			continue;
		}
		/* ST_SYNC: look for the next valid header, for the report's sake. */
		if (header_ok(c->buf + pos)) {
			cnote(c, "offset %" PRIu64 ": next valid header after %" PRIu64 " unparsable bytes",
			      c->boff, c->boff - c->sync_from);
			c->st = ST_HDR;
			continue;
		}
		pos++;
		c->boff++;
	}
	memmove(c->buf, c->buf + pos, c->blen - pos);
	c->blen -= pos;
}

static void rx_eof(struct rconn *c)
{
	c->eof = 1;
	if (c->st == ST_PAY) {
		struct track *k = &R.trk[c->tid][c->id];

		k->trunc_seq = c->seq;
		k->trunc_got = c->pdone;
		cnote(c, "offset %" PRIu64 ": EOF inside thread %d seq %u: %u of %u payload bytes "
			 "arrived",
		      c->boff, c->tid, c->seq, c->pdone, c->len);
	} else if (c->st == ST_SYNC || c->blen) {
		cnote(c, "EOF after %zu bytes that are not a whole record", c->blen);
		/* A record may be cut inside its header: one in flight when a
		 * racing exec, _exit or exit ended the process (the kernel may
		 * have taken part of a write that never returned), or, with
		 * the shim, the tail of a completed record in a queue a racing
		 * SIGTERM's one nonblocking pass could not send (the
		 * documented loss, at most one queue). A completed record cut
		 * so is counted as lost by the final check, where it is
		 * allowed only for that SIGTERM. */
		if (!(R.p.racing && c->st != ST_SYNC &&
		      (R.p.ending == E_EXEC || R.p.ending == E_UEXIT || R.p.ending == E_EXIT_THREAD ||
		       (R.p.ending == E_SIGTERM && !R.noshim))))
			c->headers_bad++;
	}
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

/* Reads once from c. Returns bytes read, 0 at EOF, -1 if nothing now. */
static ssize_t rx_read(struct rconn *c, size_t want)
{
	ssize_t r;

	if (want > RBUF - c->blen)
		want = RBUF - c->blen;
	r = read(c->fd, c->buf + c->blen, want);
	if (r < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return -1;
		cnote(c, "read error: %s", strerror(errno));
		c->headers_bad++;
		rx_eof(c);
		return 0;
	}
	if (r == 0) {
		rx_eof(c);
		return 0;
	}
	c->blen += (size_t)r;
	c->bytes += (uint64_t)r;
	R.last_data_ns = now_ns();
	rx_parse(c);
	return r;
}

static int slow_now(const struct rconn *c, uint64_t now)
{
	return R.p.conn[c->id].slow && !R.done && now < R.started_ns + (uint64_t)R.p.slow_ms * 1000000u;
}

static void rx_ready(struct rconn *c, uint64_t now)
{
	int i;

	if (slow_now(c, now)) {
		if (rx_read(c, (size_t)rrange(&R.rr, 1, 4096)) > 0 && rchance(&R.rr, 25))
			c->resume_ns = now + rrange(&R.rr, 1, 60) * 1000000u;
		return;
	}
	for (i = 0; i < 8 && c->fd >= 0; i++)
		if (rx_read(c, RBUF) <= 0)
			break;
}

/* ---- receiver setup ------------------------------------------------------------------------ */

static void set_buf(int fd, int opt, int val)
{
	if (val && setsockopt(fd, SOL_SOCKET, opt, &val, sizeof(val)) < 0)
		die("setsockopt(%d): %s", opt, strerror(errno));
}

static int family_of(int kind)
{
	return kind == K_TCP4 ? AF_INET : kind == K_TCP6 ? AF_INET6 : AF_UNIX;
}

/* A listener for connection conn; returns fd, *port. */
static int make_listener(int kind, int conn, int rcvbuf, int *port)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int fd = socket(family_of(kind), SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

	if (fd < 0)
		die("socket: %s", strerror(errno));
	memset(&ss, 0, sizeof(ss));
	if (kind == K_UNIX) {
		struct sockaddr_un *un = (struct sockaddr_un *)&ss;

		un->sun_family = AF_UNIX;
		snprintf(un->sun_path + 1, sizeof(un->sun_path) - 1, "coalesce-stress.%ld.%d",
			 (long)getpid(), conn);
		len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(un->sun_path + 1));
	} else if (kind == K_TCP4) {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;

		in->sin_family = AF_INET;
		in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		len = sizeof(*in);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;

		in6->sin6_family = AF_INET6;
		in6->sin6_addr = in6addr_loopback;
		len = sizeof(*in6);
	}
	if (kind != K_UNIX)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	set_buf(fd, SO_RCVBUF, rcvbuf);
	if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 8) < 0)
		die("bind/listen for conn %d (%s): %s", conn, kind_name[kind], strerror(errno));
	*port = 0;
	if (kind != K_UNIX) {
		len = sizeof(ss);
		getsockname(fd, (struct sockaddr *)&ss, &len);
		*port = ntohs(kind == K_TCP4 ? ((struct sockaddr_in *)&ss)->sin_port
					     : ((struct sockaddr_in6 *)&ss)->sin6_port);
	}
	return fd;
}

static int tcp_connect_port(int kind, int port, int rcvbuf, int sndbuf)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int fd = socket(family_of(kind), SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		die("socket: %s", strerror(errno));
	set_buf(fd, SO_RCVBUF, rcvbuf);
	set_buf(fd, SO_SNDBUF, sndbuf);
	memset(&ss, 0, sizeof(ss));
	if (kind == K_TCP4) {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;

		in->sin_family = AF_INET;
		in->sin_port = htons((uint16_t)port);
		in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		len = sizeof(*in);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;

		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		in6->sin6_addr = in6addr_loopback;
		len = sizeof(*in6);
	}
	if (connect(fd, (struct sockaddr *)&ss, len) < 0)
		die("connect: %s", strerror(errno));
	return fd;
}

/* Makes connection c when the receiver makes it; returns the writer's end. */
static int make_pair(int c)
{
	const struct conn_plan *cp = &R.p.conn[c];
	struct rconn *rc = &R.conn[c];
	int sv[2], l, port, cl, sv_fd;

	if (cp->kind == K_UNIX) {
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
			die("socketpair: %s", strerror(errno));
		set_buf(sv[0], SO_SNDBUF, cp->sndbuf);
		set_buf(sv[1], SO_RCVBUF, cp->rcvbuf);
		rc->fd = sv[1];
		return sv[0];
	}
	l = make_listener(cp->kind, c, cp->writer_is_client ? cp->rcvbuf : 0, &port);
	cl = tcp_connect_port(cp->kind, port, cp->writer_is_client ? 0 : cp->rcvbuf,
			      cp->writer_is_client ? cp->sndbuf : 0);
	sv_fd = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	if (sv_fd < 0)
		die("accept: %s", strerror(errno));
	close(l);
	if (cp->writer_is_client) {
		rc->fd = sv_fd;
		return cl;
	}
	set_buf(sv_fd, SO_SNDBUF, cp->sndbuf);
	rc->fd = cl;
	return sv_fd;
}

static int ipv6_ok(void)
{
	struct sockaddr_in6 in6;
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0), ok;

	if (fd < 0)
		return 0;
	memset(&in6, 0, sizeof(in6));
	in6.sin6_family = AF_INET6;
	in6.sin6_addr = in6addr_loopback;
	ok = bind(fd, (struct sockaddr *)&in6, sizeof(in6)) == 0;
	close(fd);
	return ok;
}

static void resolve_lib(void)
{
	const char *env = getenv("COALESCE_LIB");
	char copy[4096], *tok, *save = NULL, real[PATH_MAX];
	size_t len = 0;

	snprintf(copy, sizeof(copy), "%s", env && *env ? env : "build/libcoalesce.so");
	for (tok = strtok_r(copy, " :", &save); tok; tok = strtok_r(NULL, " :", &save)) {
		if (!realpath(tok, real))
			die("COALESCE_LIB: %s: %s", tok, strerror(errno));
		len += (size_t)snprintf(R.lib + len, sizeof(R.lib) - len, "%s%s", len ? " " : "", real);
		if (len >= sizeof(R.lib))
			die("COALESCE_LIB too long");
	}
}

static void push_env(char ***envp, size_t *n, size_t *cap, char *s)
{
	if (*n + 2 > *cap) {
		*cap = *cap ? *cap * 2 : 64;
		*envp = realloc(*envp, *cap * sizeof(char *));
		if (!*envp)
			die("out of memory");
	}
	(*envp)[(*n)++] = s;
	(*envp)[*n] = NULL;
}

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (r < 0)
		die("out of memory");
	return s;
}

extern char **environ;

struct fdmap {
	int from, to;
};

static void spawn_writer(const char *self, const struct fdmap *map, int nmap, const char *ports)
{
	char **envp = NULL, **argv = NULL, **e;
	size_t ne = 0, ce = 0, na = 0, ca = 0;
	const char *wrap = getenv("STRESS_WRAP"), *extra = getenv("STRESS_WRITER_ENV");
	char *copy, *tok, *save = NULL;
	int i, tmp[64];
	pid_t pid;

	for (e = environ; *e; e++)
		if (strncmp(*e, "LD_PRELOAD=", 11) && strncmp(*e, "COALESCE_", 9) &&
		    strncmp(*e, "STRESS_ROLE=", 12))
			push_env(&envp, &ne, &ce, *e);
	if (!R.noshim)
		push_env(&envp, &ne, &ce, xasprintf("LD_PRELOAD=%s", R.lib));
	push_env(&envp, &ne, &ce, "STRESS_ROLE=writer");
	push_env(&envp, &ne, &ce, xasprintf("COALESCE_STATS=%s/stats.%%p.json", R.tmpdir));
	push_env(&envp, &ne, &ce, xasprintf("COALESCE_DELAY_US=%u", R.p.delay_us));
	push_env(&envp, &ne, &ce, xasprintf("COALESCE_MAX_BYTES=%u", R.p.max_bytes));
	push_env(&envp, &ne, &ce, xasprintf("COALESCE_LARGE_BYTES=%u", R.p.large_bytes));
	push_env(&envp, &ne, &ce, xasprintf("COALESCE_DIRECT=%u", R.p.direct));
	if (extra && *extra) {
		copy = strdup(extra);
		for (tok = strtok_r(copy, " ", &save); tok; tok = strtok_r(NULL, " ", &save))
			push_env(&envp, &ne, &ce, tok);
	}
	if (wrap && *wrap) {
		copy = strdup(wrap);
		for (tok = strtok_r(copy, " ", &save); tok; tok = strtok_r(NULL, " ", &save))
			push_env(&argv, &na, &ca, tok);
	}
	push_env(&argv, &na, &ca, (char *)self);
	push_env(&argv, &na, &ca, WRITER_FLAG);
	push_env(&argv, &na, &ca, xasprintf("0x%016" PRIx64, R.seed));
	push_env(&argv, &na, &ca, xasprintf("%u", R.scale));
	push_env(&argv, &na, &ca, xasprintf("%d", R.v6_ok));
	push_env(&argv, &na, &ca, xasprintf("%d", R.noshim));
	push_env(&argv, &na, &ca, xasprintf("%ld", (long)getpid()));
	push_env(&argv, &na, &ca, (char *)ports);

	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0) {
		setpgid(0, 0);
		/* Move every source out of the way first, then into place. */
		for (i = 0; i < nmap; i++)
			if ((tmp[i] = fcntl(map[i].from, F_DUPFD, 200)) < 0)
				_exit(120);
		for (i = 0; i < nmap; i++)
			if (dup2(tmp[i], map[i].to) < 0)
				_exit(121);
		for (int fd = 3; fd < 1024; fd++) {
			int keep = 0;

			for (i = 0; i < nmap; i++)
				keep |= map[i].to == fd;
			if (!keep)
				close(fd);
		}
		if (wrap && *wrap)
			execvpe(argv[0], argv, envp);
		else
			execve(self, argv, envp);
		fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	setpgid(pid, pid);
	R.writer = pid;
}

/* ---- the receive loop ------------------------------------------------------------------- */

static void read_pipe(void)
{
	ssize_t r = read(R.pipe_fd, R.pipe_buf + R.pipe_len, sizeof(R.pipe_buf) - 1 - R.pipe_len);
	char *nl;

	if (r <= 0) {
		if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
			close(R.pipe_fd);
			R.pipe_fd = -1;
		}
		return;
	}
	R.pipe_len += (size_t)r;
	R.pipe_buf[R.pipe_len] = 0;
	while ((nl = strchr(R.pipe_buf, '\n'))) {
		*nl = 0;
		if (!strcmp(R.pipe_buf, "S")) {
			R.started = 1;
			R.started_ns = now_ns();
		} else if (!strcmp(R.pipe_buf, "D")) {
			R.done = 1;
			R.done_ns = now_ns();
		}
		R.pipe_len -= (size_t)(nl + 1 - R.pipe_buf);
		memmove(R.pipe_buf, nl + 1, R.pipe_len + 1);
	}
}

static void reap(int *no_children)
{
	int st;
	pid_t pid;

	for (;;) {
		pid = waitpid(-1, &st, WNOHANG);
		if (pid < 0 && errno == EINTR)
			continue;
		if (pid < 0) {
			*no_children = errno == ECHILD;
			return;
		}
		if (pid == 0)
			return;
		if (pid == R.writer) {
			R.writer_reaped = 1;
			R.writer_status = st;
		} else if (pid == atomic_load(&sh->fork_pid)) {
			R.fork_status_seen = 1;
			R.fork_status = st;
		}
	}
}

static const char *status_str(int st)
{
	static char buf[128];

	if (WIFEXITED(st))
		snprintf(buf, sizeof(buf), "exited %d", WEXITSTATUS(st));
	else if (WIFSIGNALED(st))
		snprintf(buf, sizeof(buf), "killed by signal %d (%s)", WTERMSIG(st),
			 strsignal(WTERMSIG(st)));
	else
		snprintf(buf, sizeof(buf), "status 0x%x", st);
	return buf;
}

/* What each thread and connection is doing, and what is still alive. */
static void state_report(void)
{
	int t, c;

	for (t = 0; t < NT; t++) {
		uint64_t w = atomic_load(&sh->where[t]);

		if (t >= R.p.nthreads && t != FORK_TID)
			continue;
		if (t == FORK_TID && !atomic_load(&sh->fork_pid))
			continue;
		printf("    thread %s: record %u, conn %u, %s\n",
		       t == FORK_TID ? "fork" : (char[]){ (char)('0' + t), 0 }, (unsigned)(w >> 32),
		       (unsigned)(w >> 8 & 0xff), where_name[(w & 0xff) < 9 ? (w & 0xff) : 0]);
	}
	for (c = 0; c < NC; c++)
		if (R.conn[c].present || R.conn[c].lfd >= 0)
			printf("    conn %d: %" PRIu64 " bytes received, %s\n", c, R.conn[c].bytes,
			       R.conn[c].eof ? "EOF" : R.conn[c].present ? "open" : "not connected");
	/* What is still alive, thread by thread (state, blocked signals). */
	for (int w = 0; w < 2; w++) {
		int pid = w == 0 ? (R.writer_reaped ? 0 : R.writer) : atomic_load(&sh->fork_pid);
		char path[320], line[256];
		DIR *d;
		struct dirent *e;

		if (pid <= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task", pid);
		if (!(d = opendir(path)))
			continue;
		printf("    %s (pid %d) is still alive:\n", w == 0 ? "the writer" : "the fork child", pid);
		while ((e = readdir(d))) {
			FILE *f;

			if (e->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "/proc/%d/task/%s/status", pid, e->d_name);
			if (!(f = fopen(path, "r")))
				continue;
			printf("      task %s:", e->d_name);
			while (fgets(line, sizeof(line), f))
				if (!strncmp(line, "State:", 6) || !strncmp(line, "SigBlk:", 7) ||
				    !strncmp(line, "ShdPnd:", 7)) {
					line[strcspn(line, "\n")] = 0;
					printf(" %s", line);
				}
			printf("\n");
			fclose(f);
		}
		closedir(d);
	}
}

/* Killed from outside (the driver's timeout, ^C): take the writer along. */
static void on_outside_signal(int sig)
{
	if (R.writer > 0)
		kill(-R.writer, SIGKILL);
	if (sh && atomic_load(&sh->fork_pid))
		kill(atomic_load(&sh->fork_pid), SIGKILL);
	signal(sig, SIG_DFL);
	raise(sig);
}

/* Returns 1 if pid's main thread has ended (zombie) while others live on:
 * a process whose last application thread called pthread_exit must end. */
static void timeout_report(unsigned secs)
{
	fail("timed out after %u s (writer %s, started %d, done %d, SIGTERM sent %d)", secs,
	     R.writer_reaped ? status_str(R.writer_status) : "still running", R.started, R.done,
	     R.killed);
	state_report();
}

static int zombie_leader(int pid)
{
	char path[64], line[128];
	FILE *f;
	int z = 0, threads = 0;

	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	if (!(f = fopen(path, "r")))
		return 0;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, "State:", 6))
			z = strchr(line, 'Z') != NULL;
		if (!strncmp(line, "Threads:", 8))
			threads = atoi(line + 8);
	}
	fclose(f);
	return z && threads > 1;
}

static void receive_loop(void)
{
	struct pollfd pfd[2 * NC + 2];
	int who[2 * NC + 2], n, i, r, no_children = 0;
	unsigned limit = 120;
	const char *tl = getenv("STRESS_TIMEOUT");
	uint64_t now, deadline, kill_at = 0, end_since = 0, next_check = 0, zombie_since = 0;

	if (tl && *tl)
		limit = (unsigned)strtoul(tl, NULL, 10);
	deadline = R.t0 + (uint64_t)limit * 1000000000u;
	for (;;) {
		now = now_ns();
		if (now > deadline) {
			timeout_report(limit);
			kill(-R.writer, SIGKILL);
			if (atomic_load(&sh->fork_pid))
				kill(atomic_load(&sh->fork_pid), SIGKILL);
			while (!R.writer_reaped) {
				int st;
				pid_t pid = waitpid(-1, &st, 0);

				if (pid < 0 && errno != EINTR)
					break;
				if (pid == R.writer) {
					R.writer_reaped = 1;
					R.writer_status = st;
				}
			}
			return;
		}
		if (R.p.ending == E_SIGTERM && !R.killed && !R.writer_reaped) {
			int go = 0;

			if (R.p.racing && R.started) {
				if (!kill_at)
					kill_at = R.started_ns + (uint64_t)R.p.sigterm_after_ms * 1000000u;
				go = now >= kill_at;
			} else if (!R.p.racing && R.done) {
				/* Quiet for 30 ms: the kernel has delivered all it holds. */
				go = now - (R.last_data_ns > R.done_ns ? R.last_data_ns : R.done_ns) >=
				     30000000u;
			}
			if (go) {
				kill(R.writer, SIGTERM);
				R.killed = 1;
				R.kill_ns = now;
			}
		}
		if (now >= next_check) {
			int fp = atomic_load(&sh->fork_pid);

			next_check = now + 250000000u;
			if (fp > 0 && zombie_leader(fp)) {
				if (!zombie_since) {
					zombie_since = now;
				} else if (now - zombie_since > 3000000000u) {
					fail("the fork child (pid %d) ended with pthread_exit in its last "
					     "thread, but the process did not end: another thread lives on",
					     fp);
					state_report();
					kill(fp, SIGKILL);
					zombie_since = 0;
				}
			}
		}
		reap(&no_children);
		if (R.writer_reaped && no_children) {
			int open = 0;

			for (i = 0; i < NC; i++)
				open += R.conn[i].present && !R.conn[i].eof;
			if (!open)
				break;
			if (!end_since)
				end_since = now;
			else if (now - end_since > 10000000000ull) {
				for (i = 0; i < NC; i++)
					if (R.conn[i].present && !R.conn[i].eof)
						fail("conn %d: no EOF 10 s after every writer process "
						     "ended",
						     i);
				return;
			}
		}
		n = 0;
		if (R.pipe_fd >= 0) {
			pfd[n].fd = R.pipe_fd;
			pfd[n].events = POLLIN;
			who[n++] = -1;
		}
		int wait_ms = 20;
		for (i = 0; i < NC; i++) {
			struct rconn *c = &R.conn[i];

			if (!c->present && c->lfd >= 0) {
				pfd[n].fd = c->lfd;
				pfd[n].events = POLLIN;
				who[n++] = NC + i;
			}
			if (c->present && !c->eof) {
				if (c->resume_ns > now && slow_now(c, now)) {
					uint64_t ms = (c->resume_ns - now) / 1000000u + 1;

					if (ms < (uint64_t)wait_ms)
						wait_ms = (int)ms;
					continue;
				}
				pfd[n].fd = c->fd;
				pfd[n].events = POLLIN;
				who[n++] = i;
			}
		}
		r = poll(pfd, (nfds_t)n, wait_ms);
		if (r < 0 && errno != EINTR)
			die("poll: %s", strerror(errno));
		if (r <= 0)
			continue;
		now = now_ns();
		for (i = 0; i < n; i++) {
			if (!pfd[i].revents)
				continue;
			if (who[i] == -1) {
				read_pipe();
			} else if (who[i] >= NC) {
				struct rconn *c = &R.conn[who[i] - NC];
				int fd = accept4(c->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

				if (fd >= 0) {
					c->fd = fd;
					c->present = 1;
					close(c->lfd);
					c->lfd = -1;
				}
			} else {
				rx_ready(&R.conn[who[i]], now);
			}
		}
	}
	/* A connection may still wait in a listener's backlog (the fork child
	 * connected, wrote and exited): take it and read it to the end. */
	for (i = 0; i < NC; i++) {
		struct rconn *c = &R.conn[i];
		int fd;

		if (c->present || c->lfd < 0)
			continue;
		fd = accept4(c->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		c->fd = fd;
		c->present = 1;
		while (c->fd >= 0)
			rx_read(c, RBUF);
	}
}

/* ---- verdict ------------------------------------------------------------------------------ */

static int stats_get(const char *path, const char *key, long long *val)
{
	char buf[8192], pat[64], *p;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(buf, pat);
	if (!p)
		return -2;
	*val = strtoll(p + strlen(pat), NULL, 10);
	return 0;
}

static void describe_conn(int c, char *out, size_t size)
{
	const struct conn_plan *cp = &R.p.conn[c];
	char owners[64] = "";
	size_t len = 0;

	for (int t = 0; t < NT; t++)
		if (cp->owners & (1u << t))
			len += (size_t)snprintf(owners + len, sizeof(owners) - len, "%s%s", len ? "," : "",
						t == FORK_TID ? "fork" : (char[]){ (char)('0' + t), 0 });
	snprintf(out, size, "%s %s%s%s%s%s threads=%s %s", kind_name[cp->kind],
		 cp->nonblock ? "nonblocking" : "blocking", cp->slow ? " slow" : "",
		 cp->sndbuf ? " sndbuf" : "", cp->writer_connects ? " writer-connected" : "",
		 cp->cloexec ? " cloexec" : "", owners, mode_name[cp->mode]);
}

static int expected_exit(int *code)
{
	switch (R.p.ending) {
	case E_EXIT_THREAD:
		*code = 3;
		return 1;
	case E_UEXIT:
		*code = 5;
		return 1;
	case E_CLOSE_ALL:
		*code = 7;
		return 1;
	case E_SHUTDOWN:
		*code = 9;
		return 1;
	case E_SIGTERM:
		*code = SIGTERM;
		return 0;
	default:
		*code = 0;
		return 1;
	}
}

static void verdict(void)
{
	int c, t, code, exited, forked = atomic_load(&sh->fork_pid) != 0;
	long long queued = -1, flushes = -1, dropped = -1;
	char stats[512], desc[256];
	uint64_t lost_bytes[NC] = { 0 };
	uint32_t lost_recs[NC] = { 0 };

	/* The writer's own complaints. */
	if (atomic_load(&sh->error_set))
		fail("the writer failed: %s", sh->error);
	exited = expected_exit(&code);
	if (!R.writer_reaped)
		fail("the writer did not end");
	else if (exited ? !(WIFEXITED(R.writer_status) && WEXITSTATUS(R.writer_status) == code)
			: !(WIFSIGNALED(R.writer_status) && WTERMSIG(R.writer_status) == code))
		fail("the writer %s; ending %s expects %s %d", status_str(R.writer_status),
		     ending_name[R.p.ending], exited ? "exit status" : "death by signal", code);
	if (R.p.ending == E_SIGTERM && !R.killed && R.writer_reaped)
		fail("the writer ended before SIGTERM was sent");
	if (forked) {
		int st = 0, known = 0, want = R.p.fork_exit_how == 2 ? 0 : 11;

		if (atomic_load(&sh->fork_status_known)) {
			st = atomic_load(&sh->fork_status);
			known = 1;
		} else if (R.fork_status_seen) {
			st = R.fork_status;
			known = 1;
		}
		if (known && !(WIFEXITED(st) && WEXITSTATUS(st) == want))
			fail("the fork child %s, expected exit status %d (%s)", status_str(st), want,
			     fork_end_name[R.p.fork_exit_how]);
		if (!known)
			info("the fork child's exit status was not seen");
	}

	/* Every connection. */
	for (c = 0; c < NC; c++) {
		struct rconn *rc = &R.conn[c];

		if (c >= R.p.nconn && c != FORK_CONN)
			continue;
		if (c == FORK_CONN && R.p.fork_on && !forked && !R.p.racing)
			fail("the writer never forked (thread %d, before record %u)", R.p.fork_tid,
			     R.p.fork_at);
		if (c == FORK_CONN && (!R.p.fork_on || (!forked && !rc->present)))
			continue;
		if (!rc->present)
			fail("conn %d: the writer never connected", c);
	}

	/* Every (thread, connection). */
	for (t = 0; t < NT; t++) {
		for (c = 0; c < NC; c++) {
			struct track *k = &R.trk[t][c];
			int cut_off = R.p.racing && t != FORK_TID;
			uint32_t started = atomic_load(&sh->tc[t][c].started);
			uint32_t completed = atomic_load(&sh->tc[t][c].completed);
			uint32_t lo, hi, s, first_lost = UINT32_MAX, nlost = 0, last_seen = 0;
			int any_seen = 0;

			if (t == FORK_TID && !forked)
				continue;
			if (!k->planned && !k->arrived)
				continue;
			if (!cut_off) {
				lo = hi = k->planned;
				if (completed != k->planned && !atomic_load(&sh->error_set))
					fail("thread %d conn %d: the writer completed %u of %u records",
					     t, c, completed, k->planned);
			} else {
				lo = completed < k->planned ? completed : k->planned;
				hi = started;
			}
			for (s = 0; s < k->cap; s++)
				if (k->seen[s]) {
					any_seen = 1;
					last_seen = s;
				}
			if (any_seen && last_seen >= hi)
				fail("thread %d conn %d: seq %u arrived but only %u were %s", t, c,
				     last_seen, hi, cut_off ? "started" : "planned");
			for (s = 0; s < lo; s++) {
				int partial = k->trunc_seq == (int64_t)s;

				if (!track_seen(k, s) || partial) {
					if (first_lost == UINT32_MAX)
						first_lost = s;
					nlost++;
					lost_bytes[c] += HDR + k->lens[s] - (partial ? k->trunc_got : 0);
				}
			}
			/* Whatever arrived must be a prefix: nothing after a hole. */
			for (s = 0; any_seen && s < last_seen; s++)
				if (!track_seen(k, s)) {
					fail("thread %d conn %d: seq %u missing while later seq %u "
					     "arrived (a hole, not a cut-off tail)",
					     t, c, s, last_seen);
					break;
				}
			if (k->trunc_seq >= 0 && !cut_off)
				fail("thread %d conn %d: record %" PRId64 " cut off at EOF", t, c,
				     k->trunc_seq);
			if (k->dup || k->late || k->corrupt)
				fail("thread %d conn %d: %u duplicated, %u reordered, %u corrupt records",
				     t, c, k->dup, k->late, k->corrupt);
			if (nlost) {
				lost_recs[c] += nlost;
				if (!cut_off || R.p.ending != E_SIGTERM || R.noshim)
					fail("thread %d conn %d: %u records LOST (first seq %u; %u "
					     "arrived of %u %s)",
					     t, c, nlost, first_lost, k->arrived, lo,
					     cut_off ? "completed" : "planned");
			}
		}
	}
	/* SIGTERM while writing: the handler sends queues in one nonblocking
	 * pass; a full socket keeps the rest (documented), and other threads
	 * go on writing until the signal is raised again (the race of README
	 * finding 2). At most one queue (COALESCE_MAX_BYTES) per connection may
	 * be lost. */
	if (R.p.racing && R.p.ending == E_SIGTERM && !R.noshim)
		for (c = 0; c < NC; c++) {
			if (!lost_recs[c])
				continue;
			if (lost_bytes[c] > R.p.max_bytes)
				fail("conn %d: %u completed records (%" PRIu64 " bytes) lost at SIGTERM, "
				     "more than one queue (COALESCE_MAX_BYTES=%u)",
				     c, lost_recs[c], lost_bytes[c], R.p.max_bytes);
			else
				info("conn %d: %u completed records (%" PRIu64 " bytes, <= one queue) "
				     "lost at SIGTERM while writing (allowed: a full socket, or a write "
				     "queued after the handler's flush)",
				     c, lost_recs[c], lost_bytes[c]);
		}
	for (c = 0; c < NC; c++)
		if (R.conn[c].headers_bad)
			fail("conn %d: %u places where the stream was not a valid record", c,
			     R.conn[c].headers_bad);

	/* Coalescing really happened. */
	snprintf(stats, sizeof(stats), "%s/stats.%ld.json", R.tmpdir, (long)R.writer);
	if (!R.noshim && R.p.ending != E_SIGTERM && R.p.ending != E_EXEC) {
		uint64_t small = atomic_load(&sh->small_calls), calls = atomic_load(&sh->calls);
		int r1 = stats_get(stats, "writes_queued", &queued);
		int r2 = stats_get(stats, "flush_syscalls", &flushes);

		stats_get(stats, "bytes_dropped", &dropped);
		if (r1 || r2) {
			if (!R.p.racing)
				fail("no stats in %s (writer %s)", stats, status_str(R.writer_status));
		} else if (small >= 200) {
			long long batched = 0, b;
			char key[32];

			for (int i = 1; i < 40; i++) {
				snprintf(key, sizeof(key), "batch_%llu", 1ull << i);
				if (stats_get(stats, key, &b) == 0)
					batched += b;
			}
			/* Small writes nearly all: fewer flush syscalls than queued writes. */
			/* Not where EAGAIN retries and large writes dominate the
			 * flush count: those each cost a send of their own. */
			if (small >= 9 * (calls - small) && (queued <= 0 || flushes >= queued))
				fail("no coalescing: %lld writes queued, %lld flush syscalls, for %" PRIu64
				     " small write calls of %" PRIu64,
				     queued, flushes, small, calls);
			/* Always: some flush carried several writes. */
			if (queued <= 0 || batched == 0)
				fail("no coalescing: %lld writes queued, no flush carried two writes or "
				     "more, for %" PRIu64 " small write calls",
				     queued, small);
		}
		if (dropped > 0)
			(R.p.racing ? info : fail)("the shim dropped %lld bytes (bytes_dropped)", dropped);
	}

	if (R.failures || R.verbose) {
		for (c = 0; c < NC; c++) {
			struct rconn *rc = &R.conn[c];
			uint32_t planned = 0;

			if (c >= R.p.nconn && !(c == FORK_CONN && forked))
				continue;
			for (t = 0; t < NT; t++)
				planned += R.trk[t][c].planned;
			describe_conn(c, desc, sizeof(desc));
			printf("  conn %2d %s: %" PRIu64 " bytes, %u of %u records ok, %u bad\n", c,
			       desc, rc->bytes, rc->ok, planned, rc->bad_records);
			for (int i = 0; i < rc->nnotes; i++)
				printf("      %s\n", rc->notes[i]);
			if (rc->more)
				printf("      ... and %d more\n", rc->more);
		}
		for (t = 0; t < NT; t++)
			for (c = 0; c < NC; c++) {
				struct track *k = &R.trk[t][c];

				if (!k->planned && !k->arrived)
					continue;
				if (t == FORK_TID && !forked)
					continue;
				printf("    thread %s conn %d: planned %u, started %u, completed %u, "
				       "arrived %u (ok %u, dup %u, late %u, corrupt %u)%s\n",
				       t == FORK_TID ? "fork" : (char[]){ (char)('0' + t), 0 }, c,
				       k->planned, atomic_load(&sh->tc[t][c].started),
				       atomic_load(&sh->tc[t][c].completed), k->arrived, k->ok, k->dup,
				       k->late, k->corrupt, k->trunc_seq >= 0 ? ", last cut off" : "");
			}
		printf("  writer: %" PRIu64 " calls (%" PRIu64 " small), %" PRIu64 " EAGAIN, %" PRIu64
		       " short, waits poll %" PRIu64 " epoll %" PRIu64 " epoll-ET %" PRIu64
		       ", %" PRIu64 " interleaved ops, %" PRIu64 " toggles, %" PRIu64
		       " split atomic writes; stats: queued %lld, flush syscalls %lld, dropped %lld\n",
		       (uint64_t)sh->calls, (uint64_t)sh->small_calls, (uint64_t)sh->eagain,
		       (uint64_t)sh->partial, (uint64_t)sh->waits_poll, (uint64_t)sh->waits_epoll,
		       (uint64_t)sh->waits_et, (uint64_t)sh->interleaved, (uint64_t)sh->toggles,
		       (uint64_t)sh->atomic_splits, queued, flushes, dropped);
	}
	R.writer_msgs[0] = 0;
	if (queued >= 0 && flushes >= 0)
		snprintf(R.writer_msgs, sizeof(R.writer_msgs), "queued/flushes=%lld/%lld", queued,
			 flushes);
	else
		snprintf(R.writer_msgs, sizeof(R.writer_msgs), "no-stats");
}

static void print_plan(void)
{
	char desc[256];
	int c, t;

	printf("plan seed=0x%016" PRIx64 ": %d conns, %d threads, ending %s%s", R.seed, R.p.nconn,
	       R.p.nthreads, ending_name[R.p.ending], R.p.racing ? " (racing the writers)" : "");
	if (R.p.ending == E_EXIT_THREAD || R.p.racing)
		printf(" by thread %d", R.p.exit_thread);
	if (R.p.ending == E_CLOSE_ALL)
		printf(" via %s", close_name[R.p.close_how]);
	if (R.p.ending == E_SHUTDOWN)
		printf(" (%s)", R.p.shut_how == SHUT_WR ? "SHUT_WR" : "SHUT_RDWR");
	if (R.p.ending == E_SIGTERM && R.p.racing)
		printf(" %u ms after start", R.p.sigterm_after_ms);
	printf("\n  shim: DELAY_US=%u MAX_BYTES=%u LARGE_BYTES=%u DIRECT=%u%s\n", R.p.delay_us,
	       R.p.max_bytes, R.p.large_bytes, R.p.direct, R.noshim ? " (not loaded)" : "");
	if (R.p.fork_on)
		printf("  fork: thread %d before its record %u; child %s inherited fds, connects "
		       "(%s), ends with %s\n",
		       R.p.fork_tid, R.p.fork_at, R.p.fork_close_inherited ? "closes" : "keeps",
		       kind_name[R.p.conn[FORK_CONN].kind], fork_end_name[R.p.fork_exit_how]);
	for (c = 0; c < R.p.nconn; c++) {
		describe_conn(c, desc, sizeof(desc));
		printf("  conn %2d: %s\n", c, desc);
	}
	for (t = 0; t < NT; t++) {
		uint32_t n = 0;
		uint64_t b = 0;

		if (t >= R.p.nthreads && !(t == FORK_TID && R.p.fork_on))
			continue;
		for (c = 0; c < NC; c++) {
			n += R.trk[t][c].planned;
			for (uint32_t s = 0; s < R.trk[t][c].planned; s++)
				b += HDR + R.trk[t][c].lens[s];
		}
		printf("  thread %s: %u records, %" PRIu64 " bytes\n",
		       t == FORK_TID ? "fork" : (char[]){ (char)('0' + t), 0 }, n, b);
	}
	fflush(stdout);
}

static void remove_tmpdir(void)
{
	char path[600];
	struct dirent *e;
	DIR *d = opendir(R.tmpdir);

	if (d) {
		while ((e = readdir(d)))
			if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
				snprintf(path, sizeof(path), "%s/%s", R.tmpdir, e->d_name);
				unlink(path);
			}
		closedir(d);
	}
	rmdir(R.tmpdir);
}

int main(int argc, char **argv)
{
	const char *env;
	char self[PATH_MAX], ports[NC * 8] = "";
	struct fdmap map[NC + 2];
	int nmap = 0, c, t, pipefd[2], memfd;
	size_t plen = 0;
	uint64_t total_bytes = 0;
	uint32_t total_recs = 0;
	double secs;

	crc_init();
	if (argc > 1 && !strcmp(argv[1], WRITER_FLAG))
		return writer_main(argc, argv);

	/* A writer that lost its flag (a wrapper that rewrote argv) must not
	 * become a receiver and spawn writers of its own. */
	env = getenv("STRESS_ROLE");
	if (env && !strcmp(env, "writer")) {
		fprintf(stderr, "stress: started as the writer without %s\n", WRITER_FLAG);
		return 2;
	}
	/* The receiver never runs under the shim. */
	env = getenv("LD_PRELOAD");
	if (env && strstr(env, "coalesce")) {
		unsetenv("LD_PRELOAD");
		execv("/proc/self/exe", argv);
	}
	{
		ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

		if (n < 0)
			die("readlink /proc/self/exe: %s", strerror(errno));
		self[n] = 0;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	R.t0 = now_ns();
	env = getenv("STRESS_SEED");
	if (env && *env) {
		R.seed = strtoull(env, NULL, 0);
	} else {
		int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);

		if (fd < 0 || read(fd, &R.seed, sizeof(R.seed)) != sizeof(R.seed))
			R.seed = now_ns() ^ (uint64_t)getpid() << 32;
		if (fd >= 0)
			close(fd);
	}
	env = getenv("STRESS_SCALE");
	R.scale = env && *env ? (unsigned)strtoul(env, NULL, 10) : 100;
	if (R.scale == 0)
		R.scale = 1;
	env = getenv("STRESS_NO_SHIM");
	R.noshim = env && *env && strcmp(env, "0");
	env = getenv("STRESS_VERBOSE");
	R.verbose = env && *env && strcmp(env, "0");
	env = getenv("STRESS_KEEP");
	R.keep = env && *env && strcmp(env, "0");
	if (!R.noshim)
		resolve_lib();
	R.v6_ok = ipv6_ok();
	plan_make(&R.p, R.seed, R.scale, R.v6_ok, no_fork_wanted());
	rseed(&R.rr, R.seed, 3);
	if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
		die("PR_SET_CHILD_SUBREAPER: %s", strerror(errno));
	signal(SIGPIPE, SIG_IGN);

	/* What the writer will write: planned records per (thread, conn). */
	for (t = 0; t < NT; t++) {
		struct plan_iter it;
		struct rec_plan rp;

		for (c = 0; c < NC; c++)
			R.trk[t][c].trunc_seq = -1;
		if (t >= R.p.nthreads && !(t == FORK_TID && R.p.fork_on))
			continue;
		plan_iter_init(&it, &R.p, t);
		while (plan_next(&it, &rp)) {
			struct track *k = &R.trk[t][rp.conn];

			if (k->planned % 1024 == 0) {
				k->lens = realloc(k->lens, (k->planned + 1024) * sizeof(uint32_t));
				if (!k->lens)
					die("out of memory");
			}
			k->lens[k->planned++] = rp.len;
			total_recs++;
			total_bytes += HDR + rp.len;
		}
	}
	if (R.verbose)
		print_plan();

	snprintf(R.tmpdir, sizeof(R.tmpdir), "/tmp/coalesce-stress.XXXXXX");
	if (!mkdtemp(R.tmpdir))
		die("mkdtemp: %s", strerror(errno));
	memfd = memfd_create("coalesce-stress", MFD_CLOEXEC);
	if (memfd < 0 || ftruncate(memfd, sizeof(struct shared)) < 0)
		die("memfd: %s", strerror(errno));
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	if (sh == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	if (pipe2(pipefd, O_CLOEXEC) < 0)
		die("pipe: %s", strerror(errno));
	R.pipe_fd = pipefd[0];
	fcntl(R.pipe_fd, F_SETFL, O_NONBLOCK);
	map[nmap++] = (struct fdmap){ pipefd[1], FD_PIPE };
	map[nmap++] = (struct fdmap){ memfd, FD_SHM };

	for (c = 0; c < NC; c++) {
		struct rconn *rc = &R.conn[c];
		const struct conn_plan *cp = &R.p.conn[c];
		int port = 0;

		rc->id = c;
		rc->fd = rc->lfd = -1;
		if (c >= R.p.nconn && !(c == FORK_CONN && R.p.fork_on)) {
			plen += (size_t)snprintf(ports + plen, sizeof(ports) - plen, "%s0", c ? "," : "");
			continue;
		}
		rc->buf = malloc(RBUF);
		if (!rc->buf)
			die("out of memory");
		if (cp->writer_connects) {
			rc->lfd = make_listener(cp->kind, c, cp->rcvbuf, &port);
			fcntl(rc->lfd, F_SETFL, O_NONBLOCK);
		} else {
			map[nmap].from = make_pair(c);
			map[nmap++].to = FD_BASE + c;
			rc->present = rc->parent_made = 1;
			fcntl(rc->fd, F_SETFL, O_NONBLOCK);
		}
		plen += (size_t)snprintf(ports + plen, sizeof(ports) - plen, "%s%d", c ? "," : "", port);
	}

	signal(SIGTERM, on_outside_signal);
	signal(SIGINT, on_outside_signal);
	signal(SIGHUP, on_outside_signal);
	spawn_writer(self, map, nmap, ports);
	for (int i = 0; i < nmap; i++)
		if (map[i].from != memfd)
			close(map[i].from);
	close(memfd);
	receive_loop();
	verdict();

	secs = (double)(now_ns() - R.t0) / 1e9;
	if (R.failures) {
		printf("FAIL seed=0x%016" PRIx64 " ending=%s%s conns=%d threads=%d%s: %d problems "
		       "(%.1f s)\n",
		       R.seed, ending_name[R.p.ending], R.p.racing ? "(racing)" : "", R.p.nconn,
		       R.p.nthreads, R.p.fork_on ? " fork" : "", R.failures, secs);
		printf("  replay: STRESS_SEED=0x%016" PRIx64 "%s%s%s%s%s %s\n", R.seed,
		       no_fork_wanted() ? " STRESS_NO_FORK=1" : "",
		       R.noshim ? " STRESS_NO_SHIM=1" : "", R.noshim ? "" : " COALESCE_LIB='",
		       R.noshim ? "" : R.lib, R.noshim ? "" : "'", self);
		printf("  stats and logs kept in %s\n", R.tmpdir);
		return 1;
	}
	printf("PASS seed=0x%016" PRIx64 " ending=%s%s conns=%d threads=%d%s records=%u "
	       "MB=%.1f %s (%.1f s)\n",
	       R.seed, ending_name[R.p.ending], R.p.racing ? "(racing)" : "", R.p.nconn, R.p.nthreads,
	       R.p.fork_on ? " fork" : "", total_recs, (double)total_bytes / 1e6, R.writer_msgs, secs);
	if (atomic_load(&sh->atomic_splits))
		printf("  note: %" PRIu64 " short writes of small records on shared nonblocking Unix "
		       "connections (the kernel alone never splits them)\n",
		       (uint64_t)atomic_load(&sh->atomic_splits));
	if (!R.keep)
		remove_tmpdir();
	return 0;
}
