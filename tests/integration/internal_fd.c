/* internal_fd: the application closes every fd above its own (close_range or
 * closefrom, as daemons do at start-up), which takes the shim's internal
 * fds with it (the deadline flusher's wake-up eventfd), then opens a new
 * connection, which gets one of their numbers. The shim must neither touch
 * the application's new fd (no bytes written to or read from it) nor lose
 * its deadline flusher.
 *
 * Writer fds: 3 = connection A, 4 = wake-up pipe (both kept); everything
 * from 5 up is closed after the flusher has started and gone idle. Then the
 * writer connects B (lowest free number: a closed internal one), writes one
 * small message on A and sleeps 1 s. The receiver must get it while the
 * writer sleeps (before the wake-up byte), and on B exactly the bytes the
 * writer wrote there after waking.
 *
 * Regression test: the shim's flusher used to park on an eventfd; after the
 * application closed it, the flusher stayed parked for good (queued bytes
 * waited for the application's next call) and the next wake-up wrote 8
 * bytes (01 00 00 00 00 00 00 00) into the application's new connection. */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NAME "internal_fd"
#define MSG 40
#define BMSG 64

static const char *const variants[] = { "close_range(5, ~0U)", "closefrom(5)" };
#define NVARIANTS (int)(sizeof(variants) / sizeof(variants[0]))

static int child_main(int argc, char **argv)
{
	unsigned char buf[BMSG];
	uint64_t key;
	int v, port, b;
	struct timespec ts = { 1, 0 };

	co_child_init(NAME);
	if (argc != 2)
		co_fail("usage: variant port");
	v = (int)co_arg_u64(argv[0]);
	port = (int)co_arg_u64(argv[1]);
	key = co_stream_key((uint64_t)v);
	/* First queued write: the shim starts its flusher (and its fds). */
	co_stream_fill(key, 0, buf, MSG);
	if (write(3, buf, MSG) != MSG)
		co_fail("write: %s", strerror(errno));
	co_sleep_ms(300); /* sent by the deadline; the flusher goes idle */
	if (v == 0) {
		if (close_range(5, ~0U, 0) < 0)
			co_fail("close_range: %s", strerror(errno));
	} else {
		closefrom(5);
	}
	b = co_tcp_connect(AF_INET, port);
	if (b < 0)
		co_fail("connect B: %s", strerror(errno));
	/* Queued; only the deadline flusher can send it while we sleep. */
	co_stream_fill(key, MSG, buf, MSG);
	if (write(3, buf, MSG) != MSG)
		co_fail("write: %s", strerror(errno));
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
	co_write_all(4, "W", 1, "wake-up pipe");
	co_stream_fill(co_stream_key(100 + (uint64_t)v), 0, buf, BMSG);
	co_write_all(b, buf, BMSG, "B");
	return 0;
}

int main(int argc, char **argv)
{
	int v;

	if (argc > 1 && strcmp(argv[1], CO_CHILD_FLAG) == 0)
		return child_main(argc - 2, argv + 2);
	co_init(argc, argv, NAME);
	co_watchdog(60);
	for (v = 0; v < NVARIANTS; v++) {
		struct co_child c;
		char vs[16], ps[16];
		const char *args[] = { vs, ps, NULL };
		unsigned char buf[2 * MSG + BMSG + 16];
		uint64_t key = co_stream_key((uint64_t)v);
		int ra, lfd, port, rb, ctl[2], flusher_dead;
		size_t got, bad;
		struct pollfd pfd;

		snprintf(vs, sizeof(vs), "%d", v);
		lfd = co_tcp_listen(AF_INET, &port);
		if (lfd < 0 || pipe2(ctl, O_CLOEXEC) < 0)
			co_fail("listen/pipe: %s", strerror(errno));
		snprintf(ps, sizeof(ps), "%d", port);
		/* Connection A is the writer's fd 3, the wake-up pipe its fd 4. */
		ra = co_spawn_on_pair(&c, args, NULL, ctl[1]);

		co_phase("%s: waiting for the first message on A", variants[v]);
		if (co_read_full(ra, buf, MSG, "A") != MSG)
			co_fail("%s: EOF on A", variants[v]);
		co_phase("%s: accepting B", variants[v]);
		rb = co_accept(lfd, variants[v]);
		close(lfd);
		co_phase("%s: waiting for the second message on A (written before the sleep)",
			 variants[v]);
		if (co_read_full(ra, buf + MSG, MSG, "A") != MSG)
			co_fail("%s: EOF on A before the second message", variants[v]);
		pfd.fd = ctl[0];
		pfd.events = POLLIN;
		flusher_dead = poll(&pfd, 1, 0) != 0;
		bad = co_stream_check(key, 0, buf, 2 * MSG);
		if (bad < 2 * MSG)
			co_stream_mismatch(variants[v], key, bad, buf + bad, 2 * MSG - bad);
		co_phase("%s: reading B", variants[v]);
		got = co_read_full(rb, buf, sizeof(buf), "B");
		bad = co_stream_check(co_stream_key(100 + (uint64_t)v), 0, buf, got < BMSG ? got : BMSG);
		if (got != BMSG || bad < BMSG) {
			char hex[64] = "";
			size_t i;

			for (i = 0; i < 8 && i < got; i++)
				snprintf(hex + 3 * i, sizeof(hex) - 3 * i, "%02x ", buf[i]);
			co_fail("%s: the application's new connection (its fd number had been the shim's) carried %zu bytes, expected the %d the application wrote; first bytes: %s%s",
				variants[v], got, BMSG, hex,
				flusher_dead ? "; also, the message queued on A after the close arrived only after the writer woke up: the deadline flusher no longer works"
					     : "");
		}
		if (flusher_dead)
			co_fail("%s: the message queued after %s arrived only after the writer woke up: the deadline flusher no longer works",
				variants[v], variants[v]);
		close(rb);
		close(ra);
		close(ctl[0]);
		co_wait_ok(&c, variants[v]);
	}
	return 0;
}
