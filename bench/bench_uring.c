/* Fan-out of small replies: an epoll server answers N TCP clients with one
 * 64-byte reply each per round, the case the io_uring backend is for (the
 * flush before epoll_wait finds N queues). Arms, alternated run by run:
 * plain write() (no shim), the shim with COALESCE_BACKEND=writev, =uring and
 * =auto (all with COALESCE_DIRECT=0, so that every reply is queued).
 *
 * The driver (this process, never under the shim) opens N connections to a
 * server it starts as "bench_uring --server N" with the arm's environment,
 * then in each round writes one request byte on every connection and reads
 * every reply. The server reads all the requests epoll_wait reported, then
 * writes the replies, so that no read comes between two replies. Reported
 * per reply: wall time of the measured rounds, and the server's CPU time
 * (all its threads, CLOCK_PROCESS_CPUTIME_ID between the first measured
 * request and the end marker); medians of the runs.
 *
 * Usage: bench_uring LIB [REPS [N...]]   (default: 5 runs, N = 16 256 1024)
 * Prints one table per N and a "RESULT" line per N and arm. With
 * BENCH_URING_STATS=PREFIX the servers write their counters to
 * PREFIX.BACKEND.N.PID.json. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

#define REPLY 64
#define WARMUP_ROUNDS 20
#define MAX_RUNS 15
#define TOTAL_REPLIES 200000

enum { ARM_PLAIN, ARM_WRITEV, ARM_URING, ARM_AUTO, NARMS };
static const char *const arm_name[NARMS] = { "plain write()", "shim, writev", "shim, uring",
					     "shim, auto" };
static const char *const arm_backend[NARMS] = { NULL, "writev", "uring", "auto" };

/* Reads every request epoll_wait reported, then answers each. */
static int serve_events(struct epoll_event *ev, int k, int *ready, uint64_t *cpu0,
			uint64_t *cpu1)
{
	static const char reply[REPLY];
	char buf[16];
	int i, j, nready = 0, closed = 0, fd;
	ssize_t r;

	for (i = 0; i < k; i++) {
		fd = ev[i].data.fd;
		r = read(fd, buf, sizeof(buf));
		if (r <= 0) {
			close(fd);
			closed++;
			continue;
		}
		for (j = 0; j < r; j++) {
			if (buf[j] == 'm' && !*cpu0)
				*cpu0 = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
			if (buf[j] == 'e' && !*cpu1)
				*cpu1 = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
			ready[nready++] = fd;
		}
	}
	for (i = 0; i < nready; i++)
		if (write(ready[i], reply, REPLY) != REPLY)
			die("server write");
	return closed;
}

static int server_main(int n)
{
	struct epoll_event *ev = calloc((size_t)n, sizeof(*ev)), one;
	int *ready = calloc((size_t)n * 16, sizeof(int)), ep = epoll_create1(0), i, c, open = n;
	int yes = 1;
	uint64_t cpu0 = 0, cpu1 = 0;

	if (!ev || !ready || ep < 0)
		die("server set-up");
	for (i = 0; i < n; i++) {
		c = accept(3, NULL, NULL);
		if (c < 0)
			die("accept");
		setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof(yes));
		one.events = EPOLLIN;
		one.data.fd = c;
		if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &one) < 0)
			die("epoll_ctl");
	}
	while (open > 0) {
		c = epoll_wait(ep, ev, n, -1);
		if (c < 0 && errno != EINTR)
			die("epoll_wait");
		if (c > 0)
			open -= serve_events(ev, c, ready, &cpu0, &cpu1);
	}
	printf("cpu_ns=%llu\n", (unsigned long long)(cpu1 - cpu0));
	return 0;
}

/* Starts the server for arm with n connections on listening socket lfd;
 * its stdout is *out. */
static pid_t start_server(const char *self, const char *lib, int arm, int n, int lfd, int *out)
{
	char nbuf[16], preload[4200], backend[64], stats[4200];
	char *argv[] = { (char *)self, "--server", nbuf, NULL };
	char *envp[8];
	int p[2], ne = 0;
	pid_t pid;

	snprintf(nbuf, sizeof(nbuf), "%d", n);
	if (arm_backend[arm]) {
		snprintf(preload, sizeof(preload), "LD_PRELOAD=%s", lib);
		snprintf(backend, sizeof(backend), "COALESCE_BACKEND=%s", arm_backend[arm]);
		envp[ne++] = preload;
		envp[ne++] = backend;
		envp[ne++] = "COALESCE_DIRECT=0";
		if (getenv("BENCH_URING_STATS")) {
			snprintf(stats, sizeof(stats), "COALESCE_STATS=%s.%s.%d.%%p.json",
				 getenv("BENCH_URING_STATS"), arm_backend[arm], n);
			envp[ne++] = stats;
		}
	}
	envp[ne] = NULL;
	if (pipe(p) < 0)
		die("pipe");
	pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		dup2(lfd, 3);
		dup2(p[1], 1);
		execve(self, argv, envp);
		_exit(127);
	}
	close(p[1]);
	*out = p[0];
	return pid;
}

/* Sends one request byte on each client, then reads every reply. */
static void round_trip(const int *cl, int n, int ep, struct epoll_event *ev, char kind)
{
	char buf[4096];
	long want = (long)n * REPLY;
	int i, k;
	ssize_t r;

	for (i = 0; i < n; i++)
		if (write(cl[i], &kind, 1) != 1)
			die("client write");
	while (want > 0) {
		k = epoll_wait(ep, ev, n, -1);
		for (i = 0; i < k; i++) {
			r = read(ev[i].data.fd, buf, sizeof(buf));
			if (r <= 0)
				die("client read");
			want -= r;
		}
	}
}

/* Connects n nonblocking clients to port, all watched by ep. */
static void connect_clients(int *cl, int n, int port, int ep)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct epoll_event one = { .events = EPOLLIN };
	int i, yes = 1;

	for (i = 0; i < n; i++) {
		cl[i] = socket(AF_INET, SOCK_STREAM, 0);
		if (cl[i] < 0 || connect(cl[i], (struct sockaddr *)&a, sizeof(a)) < 0)
			die("connect");
		setsockopt(cl[i], IPPROTO_TCP, TCP_NODELAY, &yes, sizeof(yes));
		one.data.fd = cl[i];
		if (epoll_ctl(ep, EPOLL_CTL_ADD, cl[i], &one) < 0)
			die("epoll_ctl");
	}
}

static int listen_any(int n, int *port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int lfd = socket(AF_INET, SOCK_STREAM, 0);

	if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(lfd, n) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&a, &len) < 0)
		die("listen");
	*port = ntohs(a.sin_port);
	return lfd;
}

/* One run of one arm: ns per reply (wall) and the server's CPU ns per reply. */
static void run_once(const char *self, const char *lib, int arm, int n, double *wall,
		     double *cpu)
{
	int *cl = calloc((size_t)n, sizeof(int)), port, lfd = listen_any(n, &port), out, i;
	int rounds = TOTAL_REPLIES / n < 200 ? 200 : TOTAL_REPLIES / n, ep = epoll_create1(0);
	struct epoll_event *ev = calloc((size_t)n, sizeof(*ev));
	unsigned long long cpu_ns = 0;
	char line[128] = "";
	uint64_t t0, t1;
	FILE *f;
	pid_t pid;

	if (!cl || !ev || ep < 0)
		die("set-up");
	pid = start_server(self, lib, arm, n, lfd, &out);
	close(lfd);
	connect_clients(cl, n, port, ep);
	for (i = 0; i < WARMUP_ROUNDS; i++)
		round_trip(cl, n, ep, ev, 'w');
	t0 = now_ns();
	for (i = 0; i < rounds; i++)
		round_trip(cl, n, ep, ev, 'm');
	t1 = now_ns();
	round_trip(cl, n, ep, ev, 'e');
	for (i = 0; i < n; i++)
		close(cl[i]);
	f = fdopen(out, "r");
	if (!f || !fgets(line, sizeof(line), f) || sscanf(line, "cpu_ns=%llu", &cpu_ns) != 1)
		fprintf(stderr, "bench_uring: no result from the server (%s)\n", arm_name[arm]);
	fclose(f);
	waitpid(pid, NULL, 0);
	close(ep);
	*wall = (double)(t1 - t0) / ((double)rounds * n);
	*cpu = (double)cpu_ns / ((double)rounds * n);
	free(cl);
	free(ev);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void bench_size(const char *self, const char *lib, int reps, int n)
{
	double wall[NARMS][MAX_RUNS], cpu[NARMS][MAX_RUNS], w[NARMS], c[NARMS];
	int r, a;

	for (r = 0; r < reps; r++)
		for (a = 0; a < NARMS; a++)
			run_once(self, lib, (a + r) % NARMS, n, &wall[(a + r) % NARMS][r],
				 &cpu[(a + r) % NARMS][r]);
	printf("N=%d clients, one %d-byte reply each per round; median of %d runs\n", n, REPLY,
	       reps);
	printf("  %-16s %14s %16s %14s\n", "arm", "ns/reply", "server CPU ns", "CPU vs writev");
	for (a = 0; a < NARMS; a++) {
		w[a] = median(wall[a], reps);
		c[a] = median(cpu[a], reps);
	}
	for (a = 0; a < NARMS; a++) {
		printf("  %-16s %14.0f %16.0f %13.2fx\n", arm_name[a], w[a], c[a],
		       c[a] / c[ARM_WRITEV]);
		printf("RESULT n=%d arm=%s ns_per_reply=%.0f cpu_ns_per_reply=%.0f\n", n,
		       arm_backend[a] ? arm_backend[a] : "plain", w[a], c[a]);
	}
}

int main(int argc, char **argv)
{
	struct rlimit rl;
	int reps, i;

	if (argc == 3 && strcmp(argv[1], "--server") == 0)
		return server_main(atoi(argv[2]));
	if (argc < 2) {
		fprintf(stderr, "usage: bench_uring LIB [REPS [N...]]\n");
		return 2;
	}
	reps = argc > 2 ? atoi(argv[2]) : 5;
	if (reps < 1 || reps > MAX_RUNS)
		reps = 5;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc <= 3) {
		bench_size("/proc/self/exe", argv[1], reps, 16);
		bench_size("/proc/self/exe", argv[1], reps, 256);
		bench_size("/proc/self/exe", argv[1], reps, 1024);
	}
	for (i = 3; i < argc; i++)
		bench_size("/proc/self/exe", argv[1], reps, atoi(argv[i]));
	return 0;
}
