/* hostile_fds: high fd numbers and a process at its fd limit.
 *
 * The parent raises RLIMIT_NOFILE (soft to the hard limit; the hard limit
 * to 11000 if it is lower and may be raised; else the test is skipped);
 * each child then uses at most the first LIMIT = min(soft, 16384) fds.
 *
 * Part 1, "spread": the writer (under the shim) opens ~10,000 pipes, Unix
 * socketpairs and unconnected TCP sockets, then connects three sockets to
 * the parent (fds just above 10000), fills every remaining fd, frees the
 * very last one (LIMIT - 1) and two of the lowest ones and connects there
 * too: six connections, at the bottom, above 10000 and at the top of the fd
 * range, in a process at its fd limit. One thread writes each connection's
 * stream in small pieces (sometimes a large one), the connections in random
 * order, and waits in poll now and then; the parent reads all of them at
 * once and checks every byte and each EOF. Stats: the writes were queued,
 * none passed through for its fd number.
 *
 * Part 2, "full": the parent hands the writer two connections (fds 3, 4),
 * a listening socket (5), a control pipe (6), a status pipe (7) and a third
 * connection with small buffers (8). The writer fills every other fd up to
 * its limit, then:
 *   - socket(), pipe() and accept() (the parent connects first) fail with
 *     EMFILE: the process really is at its limit;
 *   - 20 rounds: small writes on fds 3 and 4, then read() of the control
 *     pipe, which the parent answers once it has received every byte of the
 *     round (deadline 1 s: the read's flush must send them; stats
 *     flush_read);
 *   - a few small writes on fd 4, then nanosleep 2 s: only the deadline
 *     flusher (a thread started at the fd limit) can send them, and they
 *     must arrive while the writer sleeps;
 *   - small writes on fd 3, then close(3): everything arrives, then EOF;
 *   - a second thread writes 100-byte records on fd 8 (the parent does not
 *     read) until it blocks with bytes queued; the main thread closes fd 8.
 *     As without the shim, close() must return while the other thread is
 *     blocked (the parent waits 5 s for the writer to say so before it
 *     reads anything); then a signal ends the blocked write, and every
 *     record whose write succeeded must arrive whole and in order, then
 *     EOF.
 * Nothing in this part may need a new fd in the shim. The writer frees its
 * filler fds before exit (the stats file needs one). */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NAME "hostile_fds"
#define WANT_LIMIT 11000
#define CAP_LIMIT 16384
#define HIGH_FD 10000
#define NCONN 6
#define PER_CONN (512 * 1024)
#define ROUNDS 20
#define RECORD 100
#define CLOSE_WAIT_MS 5000
#define DEADLINE_SLEEP_MS 2000

/* ---- filling the fd table (child) ------------------------------------------------------- */

static unsigned char *is_filler; /* by fd */
static int limit;
static int fillers;

static void mark(int fd)
{
	if (fd < 0 || fd >= limit)
		co_fail("fd %d outside 0..%d", fd, limit - 1);
	is_filler[fd] = 1;
	fillers++;
}

/* Opens one or two filler fds; returns 0, or -1 with errno (EMFILE when full). */
static int open_filler(unsigned n)
{
	int p[2], fd;

	switch (n % 4) {
	case 0:
		if (pipe2(p, O_CLOEXEC) < 0)
			return -1;
		mark(p[0]);
		mark(p[1]);
		return 0;
	case 1:
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p) < 0)
			return -1;
		mark(p[0]);
		mark(p[1]);
		return 0;
	case 2:
		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		break;
	default:
		fd = open("/dev/null", O_RDWR | O_CLOEXEC);
		break;
	}
	if (fd < 0)
		return -1;
	mark(fd);
	return 0;
}

/* Opens fillers until the lowest free fd is at least below (or the table
 * is full, below = limit). */
static void fill(int below)
{
	unsigned n = 0;
	int misses = 0;

	for (;;) {
		int probe = fcntl(0, F_DUPFD_CLOEXEC, 0);

		if (probe < 0 && errno == EMFILE)
			return;
		if (probe < 0)
			co_fail("F_DUPFD: %s", strerror(errno));
		close(probe);
		if (probe >= below)
			return;
		if (open_filler(n++) < 0) {
			if (errno != EMFILE && errno != ENFILE)
				co_fail("opening filler fds: %s", strerror(errno));
			if (errno == ENFILE)
				co_skip("the system's file table is full (ENFILE) after %d fds",
					fillers);
			/* One fd left: pairs do not fit, singles do. */
			if (++misses > 8)
				return;
		}
	}
}

static void free_filler(int fd)
{
	if (!is_filler[fd])
		co_fail("fd %d is not a filler", fd);
	if (close(fd) < 0)
		co_fail("close(%d): %s", fd, strerror(errno));
	is_filler[fd] = 0;
	fillers--;
}

static void free_all_fillers(void)
{
	int fd;

	for (fd = 0; fd < limit; fd++)
		if (is_filler[fd])
			free_filler(fd);
}

/* Fails unless every fd below limit is in use. */
static void expect_full(const char *what)
{
	int fd = fcntl(0, F_DUPFD_CLOEXEC, 0), p[2];

	if (fd >= 0)
		co_fail("%s: fd %d is still free", what, fd);
	if (errno != EMFILE)
		co_fail("%s: F_DUPFD: %s (expected EMFILE)", what, strerror(errno));
	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd >= 0 || errno != EMFILE)
		co_fail("%s: socket() returned %d (%s), expected EMFILE", what, fd,
			fd < 0 ? strerror(errno) : "an fd");
	if (pipe(p) == 0 || errno != EMFILE)
		co_fail("%s: pipe() did not fail with EMFILE", what);
}

static void child_set_limit(const char *arg)
{
	struct rlimit rl;

	limit = (int)co_arg_u64(arg);
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		co_fail("getrlimit: %s", strerror(errno));
	rl.rlim_cur = (rlim_t)limit;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		co_fail("setrlimit(RLIMIT_NOFILE, %d): %s", limit, strerror(errno));
	is_filler = calloc((size_t)limit, 1);
	if (!is_filler)
		co_fail("calloc");
}

static int connect_to(int port)
{
	struct sockaddr_in a;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		co_fail("socket: %s", strerror(errno));
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a.sin_port = htons((uint16_t)port);
	while (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		if (errno != EINTR)
			co_fail("connect: %s", strerror(errno));
	return fd;
}

/* ---- part 1: spread (child) ------------------------------------------------------------- */

static size_t piece(struct co_rng *r)
{
	unsigned x = (unsigned)co_range(r, 0, 999);

	if (x < 900)
		return co_range(r, 1, 200);
	if (x < 995)
		return co_range(r, 201, 4096);
	return co_range(r, 32768, 65536);
}

static int child_spread(int port)
{
	static unsigned char buf[65536];
	int fds[NCONN], i, low = 0, left = NCONN;
	uint64_t off[NCONN] = { 0 };
	struct co_rng r;
	unsigned long calls = 0;
	char line[256];

	/* About 10,000 fillers, then three connections above 10000. */
	fill(HIGH_FD + 1);
	for (i = 0; i < 3; i++)
		fds[i] = connect_to(port);
	/* Every other fd, then free the top one and two low ones. */
	fill(limit);
	expect_full("spread");
	free_filler(limit - 1);
	fds[3] = connect_to(port);
	for (i = 4; i < NCONN; i++) {
		while (low < limit && !is_filler[low])
			low++;
		free_filler(low);
		fds[i] = connect_to(port);
	}
	expect_full("spread, connected");
	if (fds[3] != limit - 1 || fds[0] <= HIGH_FD || fds[4] >= 64)
		co_fail("connections at unexpected fds %d %d %d %d %d %d", fds[0], fds[1], fds[2],
			fds[3], fds[4], fds[5]);
	co_rng_init(&r, co_seed, 1);
	for (i = 0; i < NCONN; i++) {
		uint32_t idx = (uint32_t)i;

		co_write_all(fds[i], &idx, sizeof(idx), "index");
	}
	while (left > 0) {
		int c = (int)co_range(&r, 0, NCONN - 1);
		size_t len;
		ssize_t w;

		if (off[c] >= PER_CONN)
			continue;
		len = piece(&r);
		if (len > PER_CONN - off[c])
			len = (size_t)(PER_CONN - off[c]);
		co_stream_fill(co_stream_key((uint64_t)c), off[c], buf, len);
		w = (calls & 1) ? send(fds[c], buf, len, 0) : write(fds[c], buf, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			co_fail("write on fd %d: %s", fds[c], w < 0 ? strerror(errno) : "returned 0");
		off[c] += (uint64_t)w;
		if (off[c] == PER_CONN) {
			if (close(fds[c]) < 0)
				co_fail("close(%d): %s", fds[c], strerror(errno));
			left--;
		}
		if (++calls % 128 == 0) {
			/* A wait: flushes every queue, at fds far apart. */
			struct pollfd p = { .fd = fds[c], .events = POLLOUT };

			if (off[c] < PER_CONN && poll(&p, 1, 1000) < 0 && errno != EINTR)
				co_fail("poll: %s", strerror(errno));
		}
	}
	snprintf(line, sizeof(line), "fds %d %d %d %d %d %d, %d fillers, %lu calls", fds[0],
		 fds[1], fds[2], fds[3], fds[4], fds[5], fillers, calls);
	co_info("%s", line);
	free_all_fillers();
	return 0;
}

/* ---- part 2: full (child) --------------------------------------------------------------- */

static atomic_int race_closed;
static uint32_t race_records;
static size_t race_partial;

static void on_usr1(int sig)
{
	(void)sig;
}

static void fill_record(unsigned char *buf, uint32_t n)
{
	memcpy(buf, &n, sizeof(n));
	co_stream_fill(co_mix64(n + 0x5eed), 0, buf + sizeof(n), RECORD - sizeof(n));
}

static void *race_writer(void *arg)
{
	unsigned char buf[RECORD];
	uint32_t n;

	(void)arg;
	for (n = 0; !atomic_load(&race_closed); n++) {
		ssize_t w;

		fill_record(buf, n);
		w = write(8, buf, RECORD);
		if (w != RECORD) {
			if (w > 0)
				race_partial = (size_t)w;
			break;
		}
		race_records = n + 1;
	}
	return NULL;
}

static void status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void status(const char *fmt, ...)
{
	char line[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	co_write_all(7, line, (size_t)n, "status pipe");
}

static void write_stream(int fd, uint64_t key, uint64_t *off, struct co_rng *r, unsigned writes)
{
	unsigned char buf[256];
	unsigned i;

	for (i = 0; i < writes; i++) {
		size_t len = co_range(r, 1, 200);
		ssize_t w;

		co_stream_fill(key, *off, buf, len);
		w = write(fd, buf, len);
		if (w != (ssize_t)len)
			co_fail("write on fd %d: %zd (%s)", fd, w, w < 0 ? strerror(errno) : "short");
		*off += len;
	}
}

/* Writes per round on each of fds 3 and 4. */
static unsigned round_writes(struct co_rng *r)
{
	return (unsigned)co_range(r, 10, 100);
}

static int child_full(void)
{
	struct co_rng r;
	uint64_t off3 = 0, off4 = 0;
	struct sigaction sa;
	pthread_t t;
	char ch;
	int i, fd;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGUSR1, &sa, NULL) < 0)
		co_fail("sigaction: %s", strerror(errno));
	/* Every fd from here on: the shim gets none for itself. */
	fill(limit);
	expect_full("full");
	status("F\n");
	/* The parent has connected to our listener (fd 5). */
	if (co_read_full(6, &ch, 1, "control") != 1 || ch != 'c')
		co_fail("control: expected 'c'");
	fd = accept(5, NULL, NULL);
	if (fd >= 0)
		co_fail("accept() returned fd %d in a process at its fd limit", fd);
	status("A %d\n", errno);

	co_rng_init(&r, co_seed, 2);
	for (i = 0; i < ROUNDS; i++) {
		write_stream(3, co_stream_key(3), &off3, &r, round_writes(&r));
		write_stream(4, co_stream_key(4), &off4, &r, round_writes(&r));
		if (co_read_full(6, &ch, 1, "control") != 1 || ch != 'k')
			co_fail("round %d: control: expected 'k'", i);
	}
	expect_full("full, after the rounds");

	/* Only the deadline flusher can send these. */
	write_stream(4, co_stream_key(4), &off4, &r, 5);
	status("S %llu\n", (unsigned long long)off4);
	co_sleep_ms(DEADLINE_SLEEP_MS);
	status("W\n");

	/* Close flushes. */
	write_stream(3, co_stream_key(3), &off3, &r, 50);
	if (close(3) < 0)
		co_fail("close(3): %s", strerror(errno));
	status("C %llu\n", (unsigned long long)off3);
	/* (fd 3 is free now: take it again, the table stays full.) */
	if (open("/dev/null", O_RDONLY | O_CLOEXEC) != 3)
		co_fail("could not take fd 3 again");
	expect_full("full, after close");

	/* A close while another thread is blocked writing the same socket. */
	if (pthread_create(&t, NULL, race_writer, NULL) != 0)
		co_fail("pthread_create");
	co_sleep_ms(300);
	atomic_store(&race_closed, 1);
	if (close(8) < 0)
		co_fail("close(8): %s", strerror(errno));
	status("X\n");
	pthread_kill(t, SIGUSR1);
	pthread_join(t, NULL);
	status("N %u %zu\n", race_records, race_partial);

	free_all_fillers();
	return 0;
}

static int child_main(int argc, char **argv)
{
	co_child_init(NAME);
	if (argc < 2)
		co_fail("usage: part limit [port]");
	child_set_limit(argv[1]);
	if (!strcmp(argv[0], "spread") && argc == 3)
		return child_spread((int)co_arg_u64(argv[2]));
	if (!strcmp(argv[0], "full"))
		return child_full();
	co_fail("bad part %s", argv[0]);
}

/* ---- the parent ------------------------------------------------------------------------- */

static int raise_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		co_fail("getrlimit: %s", strerror(errno));
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < WANT_LIMIT) {
		struct rlimit want = { WANT_LIMIT, WANT_LIMIT };

		if (setrlimit(RLIMIT_NOFILE, &want) < 0)
			co_skip("RLIMIT_NOFILE hard limit is %llu (< %d) and cannot be raised: %s",
				(unsigned long long)rl.rlim_max, WANT_LIMIT, strerror(errno));
		rl = want;
	}
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		co_skip("cannot raise RLIMIT_NOFILE to %llu: %s", (unsigned long long)rl.rlim_max,
			strerror(errno));
	if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > CAP_LIMIT)
		return CAP_LIMIT;
	return (int)rl.rlim_cur;
}

static void run_spread(int lim)
{
	struct co_child c;
	char ls[16], ps[16];
	const char *args[] = { "spread", ls, ps, NULL };
	struct pollfd pfd[NCONN + 1];
	int conn_idx[NCONN + 1];
	uint64_t got[NCONN] = { 0 };
	int port, lfd, n = 1, done = 0, i, seen[NCONN] = { 0 };
	static unsigned char buf[256 * 1024];

	lfd = co_tcp_listen(AF_INET, &port);
	if (lfd < 0)
		co_fail("listen: %s", strerror(errno));
	snprintf(ls, sizeof(ls), "%d", lim);
	snprintf(ps, sizeof(ps), "%d", port);
	co_spawn(&c, args, NULL, 0, NULL, 1);
	pfd[0].fd = lfd;
	pfd[0].events = POLLIN;
	co_phase("spread: receiving %d streams of %d bytes from fds around 5, %d and %d",
		 NCONN, PER_CONN, HIGH_FD, lim - 1);
	while (done < NCONN) {
		int k = poll(pfd, (nfds_t)n, 20000);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			co_fail("spread: nothing happened for 20 s");
		if (pfd[0].revents & POLLIN) {
			if (n > NCONN)
				co_fail("spread: more than %d connections", NCONN);
			pfd[n].fd = co_accept(lfd, "spread");
			pfd[n].events = POLLIN;
			pfd[n].revents = 0;
			conn_idx[n] = -1;
			n++;
		}
		for (i = 1; i < n; i++) {
			ssize_t r;
			size_t bad;
			int ci;

			if (pfd[i].fd < 0 || !(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			if (conn_idx[i] < 0) {
				uint32_t idx;

				if (co_read_full(pfd[i].fd, &idx, sizeof(idx), "index") != sizeof(idx) ||
				    idx >= NCONN || seen[idx])
					co_fail("spread: bad connection index");
				seen[idx] = 1;
				conn_idx[i] = (int)idx;
				continue;
			}
			ci = conn_idx[i];
			r = read(pfd[i].fd, buf, sizeof(buf));
			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0)
				co_fail("spread: read on stream %d: %s", ci, strerror(errno));
			if (r == 0) {
				if (got[ci] != PER_CONN)
					co_fail("spread: stream %d: EOF after %llu of %d bytes", ci,
						(unsigned long long)got[ci], PER_CONN);
				close(pfd[i].fd);
				pfd[i].fd = -1;
				done++;
				continue;
			}
			if (got[ci] + (uint64_t)r > PER_CONN)
				co_fail("spread: stream %d: more than %d bytes", ci, PER_CONN);
			bad = co_stream_check(co_stream_key((uint64_t)ci), got[ci], buf, (size_t)r);
			if (bad < (size_t)r) {
				char what[32];

				snprintf(what, sizeof(what), "spread stream %d", ci);
				co_stream_mismatch(what, co_stream_key((uint64_t)ci), got[ci] + bad,
						   buf + bad, (size_t)r - bad);
			}
			got[ci] += (uint64_t)r;
		}
	}
	close(lfd);
	co_wait_ok(&c, "spread");
	if (co_shim_on()) {
		co_stats_expect_coalesced(&c, 1000, 4, "spread");
		if (co_stats_need(&c, "passthrough_fd_range") != 0)
			co_fail("spread: stats passthrough_fd_range=%lld: writes on high fds were not coalesced",
				co_stats_need(&c, "passthrough_fd_range"));
	}
}

/* Reads a status line (up to '\n') from fd; fails on EOF. */
static void status_line(int fd, char *buf, size_t len, const char *what)
{
	size_t n = 0;

	while (n + 1 < len) {
		if (co_read_full(fd, buf + n, 1, "status pipe") != 1)
			co_fail("full: the writer ended while the parent waited for %s", what);
		if (buf[n] == '\n')
			break;
		n++;
	}
	buf[n] = '\0';
}

static void recv_exact(int fd, uint64_t key, uint64_t *off, uint64_t len, const char *what)
{
	static unsigned char buf[65536];

	while (len > 0) {
		size_t want = len < sizeof(buf) ? (size_t)len : sizeof(buf);
		size_t got = co_read_full(fd, buf, want, what), bad;

		if (got == 0)
			co_fail("%s: EOF at offset %llu", what, (unsigned long long)*off);
		bad = co_stream_check(key, *off, buf, got);
		if (bad < got)
			co_stream_mismatch(what, key, *off + bad, buf + bad, got - bad);
		*off += got;
		len -= got;
	}
}

static void run_full(int lim)
{
	struct co_child c;
	char ls[16], line[256];
	const char *args[] = { "full", ls, NULL };
	const char *env[] = { CO_LONG_DELAY, NULL };
	struct co_fdmap map[6];
	struct co_rng r;
	int w3, r3, w4, r4, w8, r8, lfd, port, ctl[2], st[2], i, cfd, sz = 16384, e;
	uint64_t off3 = 0, off4 = 0, want;
	unsigned long long s_off4, c_off3;
	unsigned races, partial;
	struct pollfd p;

	if (co_tcp_pair(AF_INET, &w3, &r3) < 0 || co_tcp_pair(AF_INET, &w4, &r4) < 0 ||
	    co_tcp_pair(AF_INET, &w8, &r8) < 0)
		co_fail("tcp pair: %s", strerror(errno));
	if (setsockopt(w8, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz)) < 0 ||
	    setsockopt(r8, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz)) < 0)
		co_fail("SO_SNDBUF/SO_RCVBUF: %s", strerror(errno));
	lfd = co_tcp_listen(AF_INET, &port);
	if (lfd < 0 || pipe2(ctl, O_CLOEXEC) < 0 || pipe2(st, O_CLOEXEC) < 0)
		co_fail("listen or pipe: %s", strerror(errno));
	map[0] = (struct co_fdmap){ w3, 3 };
	map[1] = (struct co_fdmap){ w4, 4 };
	map[2] = (struct co_fdmap){ lfd, 5 };
	map[3] = (struct co_fdmap){ ctl[0], 6 };
	map[4] = (struct co_fdmap){ st[1], 7 };
	map[5] = (struct co_fdmap){ w8, 8 };
	snprintf(ls, sizeof(ls), "%d", lim);
	co_spawn(&c, args, map, 6, env, 1);
	close(w3);
	close(w4);
	close(w8);
	close(lfd);
	close(ctl[0]);
	close(st[1]);

	co_phase("full: waiting for the writer to fill its fd table (%d fds)", lim);
	status_line(st[0], line, sizeof(line), "F");
	if (strcmp(line, "F") != 0)
		co_fail("full: unexpected status \"%s\"", line);
	cfd = co_tcp_connect(AF_INET, port);
	if (cfd < 0)
		co_fail("connect to the writer's listener: %s", strerror(errno));
	co_write_all(ctl[1], "c", 1, "control");
	status_line(st[0], line, sizeof(line), "accept's result");
	if (sscanf(line, "A %d", &e) != 1 || e != EMFILE)
		co_fail("full: accept() at the fd limit: \"%s\", expected errno %d (EMFILE)", line,
			EMFILE);

	co_rng_init(&r, co_seed, 2);
	for (i = 0; i < ROUNDS; i++) {
		uint64_t n3 = 0, n4 = 0;
		unsigned k, j;

		co_phase("full: round %d: waiting for bytes the writer queued before blocking in read() (deadline 1 s)",
			 i);
		for (k = round_writes(&r), j = 0; j < k; j++)
			n3 += co_range(&r, 1, 200);
		for (k = round_writes(&r), j = 0; j < k; j++)
			n4 += co_range(&r, 1, 200);
		recv_exact(r3, co_stream_key(3), &off3, n3, "full: fd 3");
		recv_exact(r4, co_stream_key(4), &off4, n4, "full: fd 4");
		co_write_all(ctl[1], "k", 1, "control");
	}

	co_phase("full: waiting for writes that only the deadline flusher can send");
	status_line(st[0], line, sizeof(line), "S");
	if (sscanf(line, "S %llu", &s_off4) != 1)
		co_fail("full: unexpected status \"%s\"", line);
	recv_exact(r4, co_stream_key(4), &off4, s_off4 - off4, "full: fd 4 (deadline)");
	p.fd = st[0];
	p.events = POLLIN;
	if (poll(&p, 1, 0) == 1)
		co_fail("full: the bytes queued before a %d ms sleep arrived only after the writer woke up: the deadline flusher did not send them (at the fd limit)",
			DEADLINE_SLEEP_MS);
	status_line(st[0], line, sizeof(line), "W");

	co_phase("full: close(3) with bytes queued");
	status_line(st[0], line, sizeof(line), "C");
	if (sscanf(line, "C %llu", &c_off3) != 1)
		co_fail("full: unexpected status \"%s\"", line);
	want = c_off3 - off3;
	recv_exact(r3, co_stream_key(3), &off3, want, "full: fd 3 (close)");
	{
		char ch;

		if (co_read_full(r3, &ch, 1, "fd 3") != 0)
			co_fail("full: fd 3: bytes after the last one written before close");
	}

	co_phase("full: close(8) while another thread of the writer is blocked writing fd 8 (at the fd limit): waiting %d ms for close() to return, reading nothing",
		 CLOSE_WAIT_MS);
	p.fd = st[0];
	p.events = POLLIN;
	while ((i = poll(&p, 1, CLOSE_WAIT_MS)) < 0 && errno == EINTR)
		;
	if (i == 0)
		co_fail("full: close() did not return within %d ms while another thread was blocked writing the same socket (the process is at its fd limit); without the shim it returns at once",
			CLOSE_WAIT_MS);
	status_line(st[0], line, sizeof(line), "X");
	if (strcmp(line, "X") != 0)
		co_fail("full: unexpected status \"%s\"", line);
	co_phase("full: draining fd 8");
	{
		unsigned char buf[RECORD], want_rec[RECORD];
		uint32_t n = 0;
		size_t got;

		while ((got = co_read_full(r8, buf, RECORD, "fd 8")) == RECORD) {
			fill_record(want_rec, n);
			if (memcmp(buf, want_rec, RECORD) != 0)
				co_fail("full: fd 8: record %u arrived wrong (or out of order)", n);
			n++;
		}
		status_line(st[0], line, sizeof(line), "N");
		if (sscanf(line, "N %u %u", &races, &partial) != 2)
			co_fail("full: unexpected status \"%s\"", line);
		if (n != races || got != partial)
			co_fail("full: fd 8: %u whole records and %zu bytes arrived; the writer wrote %u whole records and %u bytes",
				n, got, races, partial);
		if (got) {
			fill_record(want_rec, n);
			if (memcmp(buf, want_rec, got) != 0)
				co_fail("full: fd 8: the partial last record arrived wrong");
		}
	}
	close(r8);
	close(r3);
	close(r4);
	close(cfd);
	close(ctl[1]);
	close(st[0]);
	co_wait_ok(&c, "full");
	if (co_shim_on()) {
		co_stats_dump(&c, "full");
		if (co_stats_need(&c, "writes_queued") < ROUNDS * 20)
			co_fail("full: stats writes_queued=%lld: the writes at the fd limit were not queued",
				co_stats_need(&c, "writes_queued"));
		if (co_stats_need(&c, "flush_read") < ROUNDS / 2)
			co_fail("full: stats flush_read=%lld for %d rounds", co_stats_need(&c, "flush_read"),
				ROUNDS);
		if (co_stats_need(&c, "flush_deadline") < 1)
			co_fail("full: stats flush_deadline=0");
		if (co_stats_need(&c, "flush_close") < 1)
			co_fail("full: stats flush_close=0");
	}
}

int main(int argc, char **argv)
{
	int lim;

	if (argc > 1 && strcmp(argv[1], CO_CHILD_FLAG) == 0)
		return child_main(argc - 2, argv + 2);
	co_init(argc, argv, NAME);
	co_watchdog(60);
	lim = raise_limit();
	co_info("fd limit %d", lim);
	run_spread(lim);
	run_full(lim);
	return 0;
}
