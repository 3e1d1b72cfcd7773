/* hostile_slow_peer: the peer stops reading for 2 s in the middle of a
 * stream, then reads everything. The writer (under the shim) must wait
 * without spinning, then go on; every byte must arrive, in order.
 *
 * Variants, run at the same time (one child each):
 *   TCP, blocking: the writer blocks in a write while the peer stalls;
 *   TCP, nonblocking + edge-triggered epoll: the writer writes until
 *     EAGAIN, then waits for EPOLLOUT (an EAGAIN that the kernel did not
 *     just give would never be followed by an edge: the writer fails after
 *     10 s without one);
 *   Unix stream socketpair, blocking;
 *   Unix stream socketpair, nonblocking + edge-triggered epoll.
 * The writer writes 8 MiB of a stream in calls of random sizes (mostly
 * small, some up to 64 KiB) with write, send and writev. The peer reads the
 * first 1 MiB, stops reading, waits 200 ms (the writer fills the buffers),
 * tells a monitor thread of the writer that the stall begins, waits 2 s,
 * tells it that it ends, and reads the rest.
 *
 * The monitor samples the writing thread's CPU time
 * (pthread_getcpuclockid + clock_gettime), the whole process's CPU time
 * (getrusage: the shim's flusher thread included), each thread's scheduler
 * statistics and the writer's call counter at both ends of the stall (the
 * window opens once the writer's offset has stopped moving). Both CPU
 * times must stay below half of the stall's wall time (a busy loop burns
 * all of it: this is a behaviour check, not a timing one); no thread may
 * have been running or waiting for a CPU (/proc/self/task/TID/schedstat)
 * for 90% of it, which a busy loop is whatever else the machine does,
 * whereas its CPU time shrinks on a loaded machine; and the writer must
 * make fewer than 1000 calls during the stall. */
#include "common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NAME "hostile_slow_peer"
#define TOTAL (8ULL << 20)
#define FIRST_READ (1ULL << 20)
#define FILL_MS 200
#define STALL_MS 2000
#define BUF_SIZE 65536
#define EDGE_WAIT_MS 10000
#define MAX_STALL_CALLS 1000

struct variant {
	int unix_sock;
	int nonblocking;
	const char *name;
};

static const struct variant variants[] = {
	{ 0, 0, "TCP, blocking" },
	{ 0, 1, "TCP, nonblocking + ET epoll" },
	{ 1, 0, "Unix, blocking" },
	{ 1, 1, "Unix, nonblocking + ET epoll" },
};
#define NVARIANTS (int)(sizeof(variants) / sizeof(variants[0]))

/* ---- the writer (child) ----------------------------------------------------------------- */

static atomic_ulong calls;
static _Atomic uint64_t written;
static pthread_t writer_thread;

static uint64_t ts_ns(const struct timespec *ts)
{
	return (uint64_t)ts->tv_sec * 1000000000ULL + (uint64_t)ts->tv_nsec;
}

static uint64_t tv_ns(const struct timeval *tv)
{
	return (uint64_t)tv->tv_sec * 1000000000ULL + (uint64_t)tv->tv_usec * 1000ULL;
}

/* A thread's scheduler statistics (/proc/self/task/TID/schedstat): time
 * spent running and time spent runnable, waiting for a CPU. A thread that
 * spins is one or the other all the time, however busy the machine is. */
struct tsched {
	int tid;
	unsigned long long run, wait;
};

#define MAX_THREADS 64

/* Fills t with every thread of this process; returns how many, or -1 if
 * the kernel does not provide schedstat. */
static int sched_sample(struct tsched *t)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)) && n < MAX_THREADS) {
		char path[300];
		FILE *f;

		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/schedstat", e->d_name);
		f = fopen(path, "r");
		if (!f)
			continue; /* gone meanwhile, or no schedstat */
		if (fscanf(f, "%llu %llu", &t[n].run, &t[n].wait) == 2) {
			t[n].tid = atoi(e->d_name);
			n++;
		}
		fclose(f);
	}
	closedir(d);
	return n > 0 ? n : -1;
}

/* The most time one thread spent running or runnable between b and e
 * (a thread born in between counts with all its time). */
static long long sched_busiest(const struct tsched *b, int nb, const struct tsched *e, int ne)
{
	long long most = 0;
	int i, j;

	if (nb < 0 || ne < 0)
		return -1;
	for (i = 0; i < ne; i++) {
		unsigned long long busy = e[i].run + e[i].wait;

		for (j = 0; j < nb; j++)
			if (b[j].tid == e[i].tid)
				busy -= b[j].run + b[j].wait;
		if ((long long)busy > most)
			most = (long long)busy;
	}
	return most;
}

struct sample {
	uint64_t wall, thread_cpu, proc_cpu, off;
	unsigned long calls;
	struct tsched t[MAX_THREADS];
	int nt;
};

static void take_sample(clockid_t cid, struct sample *s)
{
	struct timespec ts;
	struct rusage ru;

	s->nt = sched_sample(s->t);
	s->wall = co_now_ns();
	if (clock_gettime(cid, &ts) < 0)
		co_fail("clock_gettime(writer's CPU clock): %s", strerror(errno));
	s->thread_cpu = ts_ns(&ts);
	if (getrusage(RUSAGE_SELF, &ru) < 0)
		co_fail("getrusage: %s", strerror(errno));
	s->proc_cpu = tv_ns(&ru.ru_utime) + tv_ns(&ru.ru_stime);
	s->calls = atomic_load(&calls);
	s->off = atomic_load(&written);
}

/* Waits for the peer's 'b' (stall begins) and 'e' (ends) on fd 4 and
 * reports what the writer used in between on fd 5. */
static void *monitor(void *arg)
{
	static struct sample b, e;
	clockid_t cid;
	char ch, line[256];
	int n, i;

	(void)arg;
	if (pthread_getcpuclockid(writer_thread, &cid) != 0)
		co_fail("pthread_getcpuclockid");
	if (co_read_full(4, &ch, 1, "control") != 1 || ch != 'b')
		co_fail("control: expected 'b'");
	/* The window starts once the writer has stopped making progress (on
	 * a busy machine it may still be filling the buffers): its offset
	 * the same 50 ms apart (for at most 1 s). */
	for (i = 0; i < 20; i++) {
		uint64_t w0 = atomic_load(&written);

		co_sleep_ms(50);
		if (atomic_load(&written) == w0)
			break;
	}
	take_sample(cid, &b);
	if (co_read_full(4, &ch, 1, "control") != 1 || ch != 'e')
		co_fail("control: expected 'e'");
	take_sample(cid, &e);
	n = snprintf(line, sizeof(line),
		     "stall wall=%llu thread=%llu proc=%llu busiest=%lld calls=%lu off_begin=%llu off_end=%llu\n",
		     (unsigned long long)(e.wall - b.wall),
		     (unsigned long long)(e.thread_cpu - b.thread_cpu),
		     (unsigned long long)(e.proc_cpu - b.proc_cpu),
		     sched_busiest(b.t, b.nt, e.t, e.nt), e.calls - b.calls,
		     (unsigned long long)b.off, (unsigned long long)e.off);
	co_write_all(5, line, (size_t)n, "status pipe");
	return NULL;
}

static size_t next_size(struct co_rng *r)
{
	unsigned x = (unsigned)co_range(r, 0, 999);

	if (x < 900)
		return co_range(r, 1, 256);
	if (x < 990)
		return co_range(r, 257, 4096);
	return co_range(r, 32768, BUF_SIZE);
}

static ssize_t one_call(int api, const unsigned char *p, size_t len)
{
	struct iovec iov[2];

	switch (api) {
	case 0:
		return write(3, p, len);
	case 1:
		return send(3, p, len, 0);
	default:
		iov[0].iov_base = (void *)p;
		iov[0].iov_len = len / 2;
		iov[1].iov_base = (void *)(p + len / 2);
		iov[1].iov_len = len - len / 2;
		return writev(3, iov, 2);
	}
}

static int child_main(int argc, char **argv)
{
	static unsigned char buf[BUF_SIZE];
	const struct variant *vp;
	struct co_rng r;
	uint64_t key, off = 0;
	unsigned long eagain = 0, waits = 0;
	pthread_t t;
	int v, ep = -1, n;
	char line[128];

	co_child_init(NAME);
	if (argc != 1)
		co_fail("usage: variant");
	v = (int)co_arg_u64(argv[0]);
	if (v < 0 || v >= NVARIANTS)
		co_fail("bad variant %d", v);
	vp = &variants[v];
	key = co_stream_key((uint64_t)v);
	co_rng_init(&r, co_seed, (uint64_t)v);
	writer_thread = pthread_self();
	if (pthread_create(&t, NULL, monitor, NULL) != 0)
		co_fail("pthread_create");
	if (vp->nonblocking) {
		struct epoll_event ev = { .events = EPOLLOUT | EPOLLET, .data.fd = 3 };

		co_set_nonblock(3, 1);
		ep = epoll_create1(EPOLL_CLOEXEC);
		if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, 3, &ev) < 0)
			co_fail("epoll: %s", strerror(errno));
	}
	while (off < TOTAL) {
		size_t len = next_size(&r);
		int api = (int)co_range(&r, 0, 2);
		ssize_t w;

		if (len > TOTAL - off)
			len = (size_t)(TOTAL - off);
		co_stream_fill(key, off, buf, len);
		atomic_fetch_add(&calls, 1);
		w = one_call(api, buf, len);
		if (w > 0) {
			if ((size_t)w > len)
				co_fail("write of %zu returned %zd", len, w);
			off += (uint64_t)w;
			atomic_store(&written, off);
			continue;
		}
		if (w == 0)
			co_fail("write of %zu bytes returned 0", len);
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN || !vp->nonblocking)
			co_fail("write of %zu bytes at offset %llu: %s", len,
				(unsigned long long)off, strerror(errno));
		eagain++;
		for (;;) {
			struct epoll_event ev;
			int k;

			atomic_fetch_add(&calls, 1);
			waits++;
			k = epoll_wait(ep, &ev, 1, EDGE_WAIT_MS);
			if (k < 0 && errno == EINTR)
				continue;
			if (k < 0)
				co_fail("epoll_wait: %s", strerror(errno));
			if (k == 0)
				co_fail("no EPOLLOUT edge within %d ms after EAGAIN at offset %llu: the EAGAIN was not the kernel's",
					EDGE_WAIT_MS, (unsigned long long)off);
			break;
		}
	}
	pthread_join(t, NULL);
	n = snprintf(line, sizeof(line), "done eagain=%lu waits=%lu\n", eagain, waits);
	co_write_all(5, line, (size_t)n, "status pipe");
	if (close(3) < 0)
		co_fail("close: %s", strerror(errno));
	return 0;
}

/* ---- the peer (parent) ------------------------------------------------------------------ */

struct run {
	int v;
	struct co_child c;
	int rfd, ctl, st;
	char stall[256]; /* the writer's report of the stall */
	/* Not a __thread buffer: the child is this same binary, and a large
	 * static TLS block keeps the shim's flusher thread (64 KiB stack)
	 * from starting at all (a separate bug, not what this test is about). */
	unsigned char buf[256 * 1024];
};

/* Reads and verifies the stream from *off up to limit (or EOF if limit is
 * TOTAL): returns at limit. */
static void recv_upto(struct run *run, uint64_t *off, uint64_t limit)
{
	unsigned char *buf = run->buf;
	const size_t bufsize = sizeof(run->buf);
	const struct variant *vp = &variants[run->v];
	uint64_t key = co_stream_key((uint64_t)run->v);

	while (*off < limit) {
		size_t want = bufsize;
		ssize_t k;
		size_t bad;

		if (want > limit - *off)
			want = (size_t)(limit - *off);
		k = read(run->rfd, buf, want);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			co_fail("%s: read at offset %llu: %s", vp->name, (unsigned long long)*off,
				strerror(errno));
		if (k == 0)
			co_fail("%s: EOF after %llu of %llu bytes (%llu lost)", vp->name,
				(unsigned long long)*off, (unsigned long long)TOTAL,
				(unsigned long long)(TOTAL - *off));
		bad = co_stream_check(key, *off, buf, (size_t)k);
		if (bad < (size_t)k)
			co_stream_mismatch(vp->name, key, *off + bad, buf + bad, (size_t)k - bad);
		*off += (uint64_t)k;
	}
}

/* Reads the writer's stall report (one line) from its status pipe. */
static void status_line(struct run *run)
{
	size_t n = 0;

	while (n + 1 < sizeof(run->stall)) {
		if (co_read_full(run->st, run->stall + n, 1, "status pipe") != 1)
			co_fail("%s: the writer ended before it reported the stall",
				variants[run->v].name);
		if (run->stall[n] == '\n')
			break;
		n++;
	}
	run->stall[n] = '\0';
}

static void *peer(void *arg)
{
	struct run *run = arg;
	const struct variant *vp = &variants[run->v];
	uint64_t off = 0;
	char ch;
	ssize_t k;

	recv_upto(run, &off, FIRST_READ);
	co_sleep_ms(FILL_MS);
	co_write_all(run->ctl, "b", 1, "control");
	co_sleep_ms(STALL_MS);
	co_write_all(run->ctl, "e", 1, "control");
	/* Read on only once the writer has taken its sample: a monitor thread
	 * that is slow to wake (a busy machine) must not count the writer's
	 * progress after the stall as made during it. */
	status_line(run);
	recv_upto(run, &off, TOTAL);
	do
		k = read(run->rfd, &ch, 1);
	while (k < 0 && errno == EINTR);
	if (k != 0)
		co_fail("%s: %s after the %llu bytes sent", vp->name,
			k > 0 ? "extra bytes" : strerror(errno), (unsigned long long)TOTAL);
	return NULL;
}

static void make_pair(const struct variant *vp, int *wfd, int *rfd)
{
	int sz = 65536;

	if (vp->unix_sock) {
		int sv[2];

		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
			co_fail("socketpair: %s", strerror(errno));
		*wfd = sv[0];
		*rfd = sv[1];
	} else if (co_tcp_pair(AF_INET, wfd, rfd) < 0) {
		co_fail("tcp pair: %s", strerror(errno));
	}
	if (setsockopt(*wfd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz)) < 0 ||
	    setsockopt(*rfd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz)) < 0)
		co_fail("SO_SNDBUF/SO_RCVBUF: %s", strerror(errno));
}

int main(int argc, char **argv)
{
	static struct run runs[NVARIANTS];
	pthread_t th[NVARIANTS];
	int v;

	if (argc > 1 && strcmp(argv[1], CO_CHILD_FLAG) == 0)
		return child_main(argc - 2, argv + 2);
	co_init(argc, argv, NAME);
	co_watchdog(60);
	for (v = 0; v < NVARIANTS; v++) {
		struct run *run = &runs[v];
		const char *env[] = { NULL };
		static char vs[NVARIANTS][16];
		const char *args[] = { vs[v], NULL };
		struct co_fdmap map[3];
		int wfd, ctl[2], st[2];

		run->v = v;
		snprintf(vs[v], sizeof(vs[v]), "%d", v);
		make_pair(&variants[v], &wfd, &run->rfd);
		if (pipe2(ctl, O_CLOEXEC) < 0 || pipe2(st, O_CLOEXEC) < 0)
			co_fail("pipe: %s", strerror(errno));
		map[0].from = wfd;
		map[0].to = 3;
		map[1].from = ctl[0];
		map[1].to = 4;
		map[2].from = st[1];
		map[2].to = 5;
		co_spawn(&run->c, args, map, 3, env, 1);
		close(wfd);
		close(ctl[0]);
		close(st[1]);
		run->ctl = ctl[1];
		run->st = st[0];
	}
	co_phase("reading 1 MiB, stalling %d ms, reading the rest (all variants at once)",
		 STALL_MS);
	for (v = 0; v < NVARIANTS; v++)
		if (pthread_create(&th[v], NULL, peer, &runs[v]) != 0)
			co_fail("pthread_create");
	for (v = 0; v < NVARIANTS; v++)
		pthread_join(th[v], NULL);

	for (v = 0; v < NVARIANTS; v++) {
		struct run *run = &runs[v];
		const struct variant *vp = &variants[v];
		char sum[512], *done;
		unsigned long long wall, thr, proc, ob, oe;
		long long busiest;
		unsigned long scalls, eagain, waits;
		size_t n;

		co_phase("%s: reading the writer's report", vp->name);
		n = co_read_full(run->st, sum, sizeof(sum) - 1, "status pipe");
		sum[n] = '\0';
		close(run->st);
		close(run->ctl);
		close(run->rfd);
		co_wait_ok(&run->c, vp->name);
		done = strstr(sum, "done ");
		if (sscanf(run->stall, "stall wall=%llu thread=%llu proc=%llu busiest=%lld calls=%lu off_begin=%llu off_end=%llu",
			   &wall, &thr, &proc, &busiest, &scalls, &ob, &oe) != 7 || !done ||
		    sscanf(done, "done eagain=%lu waits=%lu", &eagain, &waits) != 2)
			co_fail("%s: bad report from the writer: \"%s\" then \"%s\"", vp->name,
				run->stall, sum);
		co_info("%s: stall of %.2f s: writer thread CPU %.1f ms, process CPU %.1f ms, busiest thread running or runnable %.1f ms, %lu calls, writer at %llu..%llu; %lu EAGAIN, %lu waits",
			vp->name, wall / 1e9, thr / 1e6, proc / 1e6, busiest / 1e6, scalls, ob, oe,
			eagain, waits);
		if (oe >= TOTAL)
			co_fail("%s: the writer had written everything before the stall ended: the stall tested nothing",
				vp->name);
		if (thr * 2 > wall)
			co_fail("%s: the writing thread burned %.0f ms of CPU during a %.0f ms stall of its peer: it spins",
				vp->name, thr / 1e6, wall / 1e6);
		if (proc * 2 > wall)
			co_fail("%s: the writer process (shim threads included) burned %.0f ms of CPU during a %.0f ms stall of its peer: something spins",
				vp->name, proc / 1e6, wall / 1e6);
		/* 90%: a busy loop is runnable all the time; a thread that
		 * merely wakes often (the shim's flusher looks every
		 * COALESCE_DELAY_US while the writer holds its fd) waits for a
		 * CPU at each wake-up on a busy machine. */
		if (busiest * 10 > (long long)wall * 9)
			co_fail("%s: a thread of the writer process was running or waiting for a CPU during %.0f ms of a %.0f ms stall of its peer: it spins",
				vp->name, busiest / 1e6, wall / 1e6);
		if (busiest < 0)
			co_note("%s: no /proc/self/task/*/schedstat here: only CPU times checked",
				vp->name);
		if (scalls > MAX_STALL_CALLS)
			co_fail("%s: the writer made %lu calls during the stall: it spins", vp->name,
				scalls);
		if (vp->nonblocking && eagain == 0)
			co_fail("%s: the nonblocking writer never saw EAGAIN although its peer stalled for %d ms",
				vp->name, STALL_MS);
		co_stats_expect_coalesced(&run->c, 1000, 4, vp->name);
	}
	return 0;
}
