/* dgram_threads: four threads send datagrams at once on the same three
 * sockets: an unconnected UDP socket (sendto, receiver 0), a UDP socket
 * connected to receiver 1 and a Unix datagram socket connected to receiver
 * 2. Each thread sends runs of datagrams of one size to one receiver (what
 * the shim lays end to end and sends with UDP GSO), of random length and
 * size, a quarter of the runs through the thread's own sendmmsg, and now and
 * then sleeps a little (the deadline flusher then sends). Each thread is a
 * writer of its own in the datagram header.
 *
 * The receiver checks every datagram whole (length and bytes: none merged,
 * cut or altered), each thread's datagrams to each receiver in the order it
 * sent them, no duplicate, and completeness (a loss only as far as the
 * kernel reports drops on a full receive queue). Two runs: the default
 * settings, and queues that only their size or the exit sends
 * (COALESCE_DELAY_US at its maximum, COALESCE_MAX_MSGS 1024). */
#include "common.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NAME "dgram_threads"
#define NRX 3
#define THREADS 4
#define PER_THREAD 10000
#define MAX_SIZE 1400
#define MAX_RUN 48
#define MMSG_MAX 8

/* One thread's plan: runs of datagrams of one size to one receiver. */
struct sender {
	struct co_rng r;
	unsigned writer;
	uint32_t seq[NRX];
	int dest;
	size_t len;
	unsigned run_left;
	int run_mmsg; /* this run goes through sendmmsg */
};

static void sender_init(struct sender *s, int variant, unsigned writer)
{
	memset(s, 0, sizeof(*s));
	s->writer = writer;
	co_rng_init(&s->r, co_seed, (uint64_t)variant * 16 + writer);
}

/* The next datagram: its receiver, size and sequence number. */
static void sender_next(struct sender *s, int *dest, size_t *len, uint32_t *seq)
{
	if (s->run_left == 0) {
		s->dest = (int)co_range(&s->r, 0, NRX - 1);
		s->len = co_chance(&s->r, 1, 2) ? 64 : co_range(&s->r, CO_DGRAM_HDR, MAX_SIZE);
		s->run_left = (unsigned)co_range(&s->r, 1, MAX_RUN);
		s->run_mmsg = co_chance(&s->r, 1, 4);
	}
	s->run_left--;
	*dest = s->dest;
	*len = s->len;
	*seq = s->seq[*dest]++;
}

/* ---- the writer (under the shim) ---------------------------------------------------------- */

/* Fds: 3 unconnected UDP (receiver 0), 4 UDP connected to receiver 1, 5
 * Unix datagram connected to receiver 2. */
static struct sockaddr_storage addr[NRX];
static socklen_t addrlen[NRX];
static int variant;
static pthread_barrier_t start;

static int fd_of(int dest)
{
	return 3 + dest;
}

/* Sends n datagrams (all of one run, to dest) with one sendmmsg call,
 * and again from the first unsent one if it sent fewer. */
static void send_mmsg(unsigned writer, int dest, unsigned char (*buf)[MAX_SIZE], size_t *len,
		      unsigned n)
{
	struct mmsghdr m[MMSG_MAX];
	struct iovec iov[MMSG_MAX];
	unsigned i, done = 0;
	int r;

	memset(m, 0, sizeof(m));
	for (i = 0; i < n; i++) {
		iov[i].iov_base = buf[i];
		iov[i].iov_len = len[i];
		m[i].msg_hdr.msg_iov = &iov[i];
		m[i].msg_hdr.msg_iovlen = 1;
		if (dest == 0) {
			m[i].msg_hdr.msg_name = &addr[0];
			m[i].msg_hdr.msg_namelen = addrlen[0];
		}
	}
	while (done < n) {
		r = sendmmsg(fd_of(dest), m + done, n - done, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			co_fail("writer %u: sendmmsg of %u to receiver %d: %s", writer, n - done, dest,
				r < 0 ? strerror(errno) : "none sent");
		for (i = done; i < done + (unsigned)r; i++)
			if (m[i].msg_len != len[i])
				co_fail("writer %u: sendmmsg sent %u of %zu bytes", writer,
					m[i].msg_len, len[i]);
		done += (unsigned)r;
	}
}

static void *writer_thread(void *arg)
{
	static __thread unsigned char buf[MMSG_MAX][MAX_SIZE];
	struct timespec nap = { 0, 50000 };
	size_t len[MMSG_MAX];
	struct sender s;
	unsigned pending = 0;
	int i, dest = 0, d;
	uint32_t seq;
	ssize_t r;

	sender_init(&s, variant, (unsigned)(uintptr_t)arg);
	pthread_barrier_wait(&start);
	for (i = 0; i < PER_THREAD; i++) {
		sender_next(&s, &d, &len[pending], &seq);
		if (pending && d != dest)
			co_fail("writer %u: a sendmmsg batch across receivers", s.writer);
		dest = d;
		co_dgram_fill(buf[pending], len[pending], s.writer, (unsigned)dest, seq);
		if (s.run_mmsg) {
			/* The run's datagrams go together, MMSG_MAX at a time. */
			if (++pending == MMSG_MAX || s.run_left == 0) {
				send_mmsg(s.writer, dest, buf, len, pending);
				pending = 0;
			}
			continue;
		}
		if (dest == 0)
			r = sendto(3, buf[0], len[0], 0, (struct sockaddr *)&addr[0], addrlen[0]);
		else
			r = send(fd_of(dest), buf[0], len[0], 0);
		if (r != (ssize_t)len[0])
			co_fail("writer %u: datagram %d of %zu bytes to receiver %d returned %zd (%s)",
				s.writer, i, len[0], dest, r, r < 0 ? strerror(errno) : "short");
		if (i % 211 == 210)
			nanosleep(&nap, NULL);
	}
	if (pending)
		send_mmsg(s.writer, dest, buf, len, pending);
	return NULL;
}

/* Arguments: the variant, then the receivers' addresses. */
static int child_main(int argc, char **argv)
{
	pthread_t t[THREADS];
	int i;

	co_child_init(NAME);
	if (argc != 1 + NRX)
		co_fail("usage: variant address x%d", NRX);
	variant = (int)co_arg_u64(argv[0]);
	for (i = 0; i < NRX; i++)
		addrlen[i] = co_addr_parse(argv[1 + i], &addr[i]);
	for (i = 1; i < NRX; i++)
		if (connect(fd_of(i), (struct sockaddr *)&addr[i], addrlen[i]) < 0)
			co_fail("connect: %s", strerror(errno));
	pthread_barrier_init(&start, NULL, THREADS);
	for (i = 0; i < THREADS; i++)
		if (pthread_create(&t[i], NULL, writer_thread, (void *)(uintptr_t)i) != 0)
			co_fail("pthread_create");
	for (i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	return 0;
}

/* ---- the receiver (parent) ---------------------------------------------------------------- */

static const char *const variants[] = { "defaults", "long delay, 1024 datagrams" };

static void run(int v)
{
	struct co_dgram_check *k = co_dgram_check_new(variants[v]);
	const char *env_defaults[] = { NULL };
	const char *env_long[] = { CO_LONG_DELAY, "COALESCE_MAX_MSGS=1024", NULL };
	char vs[16], text[NRX][128];
	const char *args[NRX + 2];
	struct co_fdmap map[NRX];
	struct sender s;
	uint64_t total = 0;
	unsigned w;
	int i, dest;
	size_t dlen;
	uint32_t seq;

	co_phase("%s: setting up", variants[v]);
	snprintf(vs, sizeof(vs), "%d", v);
	args[0] = vs;
	for (i = 0; i < NRX; i++) {
		co_dgram_add_receiver(k, i < 2 ? AF_INET : AF_UNIX, 0, text[i], sizeof(text[i]));
		args[1 + i] = text[i];
	}
	args[1 + NRX] = NULL;
	for (i = 0; i < NRX; i++) {
		map[i].from = co_dgram_socket(i < 2 ? AF_INET : AF_UNIX, 0, NULL, NULL);
		map[i].to = 3 + i;
	}
	for (w = 0; w < THREADS; w++) {
		sender_init(&s, v, w);
		for (i = 0; i < PER_THREAD; i++) {
			sender_next(&s, &dest, &dlen, &seq);
			total = co_dgram_expect(k, w, (unsigned)dest, seq, dlen, -1);
		}
	}
	co_dgram_run_child(k, args, map, NRX, v ? env_long : env_defaults, total, 1, variants[v]);
	co_dgram_check_free(k);
}

int main(int argc, char **argv)
{
	int v;

	if (argc > 1 && strcmp(argv[1], CO_CHILD_FLAG) == 0)
		return child_main(argc - 2, argv + 2);
	co_init(argc, argv, NAME);
	co_watchdog(60);
	for (v = 0; v < 2; v++)
		run(v);
	co_dgram_stats_verdict();
	return 0;
}
