/* signal_write: a signal handler writes records on the very socket its
 * thread is writing when the signal comes, often while that thread is inside
 * the shim holding the fd. Nothing may deadlock, every record (the main
 * loop's and the handler's) must arrive whole and exactly once, and a
 * handler's record must come after every main record whose write had
 * returned before the handler ran: the handler's bytes must not overtake
 * bytes that were queued before them. A timer (ITIMER_REAL, SIGALRM: the
 * application's own) fires every 100 µs. Run twice: on a TCP connection,
 * and on a Unix datagram socketpair, where each record is one datagram
 * (and an 'E' datagram ends the run, datagram sockets having no EOF). */
#include "common.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define NAME "signal_write"
#define MAIN_RECORDS 40000
#define HEADER 12

/* A record: kind ('M' or 'H'), 3 bytes of padding, sequence number, and for
 * 'M' the payload length then payload, for 'H' the number of main records
 * whose write had returned. */
struct header {
	char kind;
	char pad[3];
	uint32_t seq;
	uint32_t value;
};

static volatile sig_atomic_t completed;
static uint32_t handler_seq;

static void on_alarm(int sig)
{
	struct header h = { .kind = 'H', .seq = handler_seq, .value = (uint32_t)completed };
	int saved = errno;

	(void)sig;
	if (write(3, &h, sizeof(h)) == (ssize_t)sizeof(h))
		handler_seq++;
	errno = saved;
}

static int child_main(int dgram)
{
	struct itimerval every = { .it_interval = { 0, 100 }, .it_value = { 0, 100 } };
	struct itimerval off = { { 0, 0 }, { 0, 0 } };
	struct sigaction sa;
	struct co_rng r;
	unsigned char buf[HEADER + 256];
	uint32_t i;

	co_child_init(NAME);
	co_rng_init(&r, co_seed, 1);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_alarm;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGALRM, &sa, NULL);
	setitimer(ITIMER_REAL, &every, NULL);
	for (i = 0; i < MAIN_RECORDS; i++) {
		struct header h = { .kind = 'M', .seq = i };
		size_t len = (size_t)co_range(&r, 1, 200);

		h.value = (uint32_t)len;
		memcpy(buf, &h, sizeof(h));
		co_stream_fill(co_stream_key(0), i, buf + HEADER, len);
		if (write(3, buf, HEADER + len) != (ssize_t)(HEADER + len))
			co_fail("main write %u: %s", i, strerror(errno));
		completed = (sig_atomic_t)(i + 1);
	}
	setitimer(ITIMER_REAL, &off, NULL);
	if (dgram) {
		struct header end = { .kind = 'E', .seq = MAIN_RECORDS };

		if (write(3, &end, sizeof(end)) != (ssize_t)sizeof(end))
			co_fail("end datagram: %s", strerror(errno));
	}
	return 0;
}

/* Reads the next record into h and, for a main record, its payload into
 * payload; returns 0 at the end (EOF, or the 'E' datagram). Fails on a
 * record cut short or, on a datagram socket, a datagram that is not exactly
 * one record. */
static int next_record(int rfd, int dgram, struct header *h, unsigned char *payload)
{
	unsigned char buf[HEADER + 256 + 1];
	ssize_t n;
	size_t got;

	if (!dgram) {
		got = co_read_full(rfd, h, sizeof(*h), "socket");
		if (got == 0)
			return 0;
		if (got != sizeof(*h))
			co_fail("the stream ended inside a record header");
		if (h->kind == 'M' && h->value >= 1 && h->value <= 200 &&
		    co_read_full(rfd, payload, h->value, "socket") != h->value)
			co_fail("main record %u cut short", h->seq);
		return 1;
	}
	do {
		n = recv(rfd, buf, sizeof(buf), 0);
	} while (n < 0 && errno == EINTR);
	if (n < (ssize_t)HEADER)
		co_fail("a datagram of %zd bytes (%s)", n, n < 0 ? strerror(errno) : "short");
	memcpy(h, buf, sizeof(*h));
	if (h->kind == 'E')
		return 0;
	if (h->kind == 'M' ? (size_t)n != HEADER + h->value : (size_t)n != HEADER)
		co_fail("a '%c' datagram of %zd bytes: two records merged, or one cut", h->kind, n);
	if (h->kind == 'M')
		memcpy(payload, buf + HEADER, h->value);
	return 1;
}

/* Runs the writer on a TCP connection or (dgram) a Unix datagram
 * socketpair and checks what arrives. */
static void run(int dgram)
{
	unsigned char payload[256], want[256];
	struct co_child c;
	struct co_fdmap map[1];
	const char *env[] = { NULL };
	const char *args[] = { dgram ? "dgram" : "stream", NULL };
	uint32_t mains = 0, handlers = 0;
	struct header h;
	int wfd, rfd, sv[2];

	if (dgram) {
		if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) < 0)
			co_fail("socketpair: %s", strerror(errno));
		wfd = sv[0];
		rfd = sv[1];
	} else if (co_tcp_pair(AF_INET, &wfd, &rfd) < 0) {
		co_fail("tcp pair: %s", strerror(errno));
	}
	map[0].from = wfd;
	map[0].to = 3;
	co_spawn(&c, args, map, 1, env, 1);
	close(wfd);
	co_phase("receiving (%s)", args[0]);
	while (next_record(rfd, dgram, &h, payload)) {
		if (h.kind == 'H') {
			if (h.seq != handlers)
				co_fail("handler record %u arrived where %u was due", h.seq, handlers);
			if (h.value > mains)
				co_fail("handler record %u, written after %u main records, arrived "
					"after only %u of them: it overtook queued bytes",
					h.seq, h.value, mains);
			handlers++;
			continue;
		}
		if (h.kind != 'M' || h.seq != mains || h.value < 1 || h.value > 200)
			co_fail("garbled record header after %u main and %u handler records "
				"(kind 0x%02x seq %u)", mains, handlers, (unsigned char)h.kind, h.seq);
		co_stream_fill(co_stream_key(0), mains, want, h.value);
		if (memcmp(payload, want, h.value) != 0)
			co_fail("main record %u corrupt", mains);
		mains++;
	}
	close(rfd);
	if (mains != MAIN_RECORDS)
		co_fail("%u of %u main records arrived", mains, MAIN_RECORDS);
	co_wait_ok(&c, "writer");
	co_note("%s: %u main and %u handler records", args[0], mains, handlers);
	if (co_shim_on()) {
		long long kept = co_stats_need(&c, "writes_from_signal_handlers");

		co_note("%s: handler writes kept while the fd was held: %lld", args[0], kept);
	}
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], CO_CHILD_FLAG) == 0)
		return child_main(argc > 2 && strcmp(argv[2], "dgram") == 0);
	co_init(argc, argv, NAME);
	co_watchdog(120);
	run(0);
	run(1);
	return 0;
}
