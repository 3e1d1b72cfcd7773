/* close_flush: small writes (all fitting in one queue), then the socket is
 * given up without a read or a wait: close(), shutdown(SHUT_WR), dup2() and
 * dup3() of /dev/null onto the socket's fd, close_range(), and close() of a
 * nonblocking socket. The deadline is at its maximum (1 s) and the writer
 * stays alive (waiting for a signal) until the receiver is done, so neither
 * the deadline flusher nor the exit flush can hide a missing flush: every
 * byte must arrive before EOF. After dup2/dup3 the writer also writes to the
 * fd, which is /dev/null now: that must succeed and nothing of it may reach
 * the socket. The stats must show the writes were queued and coalesced. */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define NAME "close_flush"
#define WRITES 1000

static const char *const variants[] = {
	"close", "shutdown(SHUT_WR)", "dup2(/dev/null)", "dup3(/dev/null)", "close_range",
	"close (nonblocking socket)",
};
#define NVARIANTS (int)(sizeof(variants) / sizeof(variants[0]))

static size_t size_of(struct co_rng *r)
{
	return co_range(r, 1, 100);
}

static int child_main(int argc, char **argv)
{
	unsigned char buf[128];
	struct co_rng r;
	uint64_t key, off = 0;
	sigset_t set;
	int v, i, nul;

	co_child_init(NAME);
	if (argc != 1)
		co_fail("usage: variant");
	v = (int)co_arg_u64(argv[0]);
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigprocmask(SIG_BLOCK, &set, NULL);
	key = co_stream_key((uint64_t)v);
	co_rng_init(&r, co_seed, (uint64_t)v);
	if (v == 5)
		co_set_nonblock(3, 1);
	for (i = 0; i < WRITES; i++) {
		size_t len = size_of(&r);
		ssize_t w;

		co_stream_fill(key, off, buf, len);
		w = (i & 1) ? send(3, buf, len, 0) : write(3, buf, len);
		if (w != (ssize_t)len)
			co_fail("write %d of %zu bytes returned %zd (%s)", i, len, w,
				w < 0 ? strerror(errno) : "short");
		off += len;
	}
	switch (v) {
	case 0:
	case 5:
		if (close(3) < 0)
			co_fail("close: %s", strerror(errno));
		break;
	case 1:
		if (shutdown(3, SHUT_WR) < 0)
			co_fail("shutdown: %s", strerror(errno));
		break;
	case 2:
	case 3:
		nul = open("/dev/null", O_WRONLY);
		if (nul < 0)
			co_fail("open /dev/null: %s", strerror(errno));
		if ((v == 2 ? dup2(nul, 3) : dup3(nul, 3, O_CLOEXEC)) != 3)
			co_fail("%s: %s", variants[v], strerror(errno));
		close(nul);
		/* fd 3 is /dev/null now: these bytes must go nowhere. */
		for (i = 0; i < 100; i++) {
			memset(buf, 0xEE, sizeof(buf));
			if (write(3, buf, 100) != 100)
				co_fail("write to /dev/null (fd 3 after %s): %s", variants[v],
					strerror(errno));
		}
		break;
	case 4:
		if (close_range(3, ~0U, 0) < 0)
			co_fail("close_range: %s", strerror(errno));
		break;
	}
	/* Stay alive, without touching the socket, until the receiver is done. */
	while (sigwaitinfo(&set, NULL) < 0)
		if (errno != EINTR)
			co_fail("sigwaitinfo: %s", strerror(errno));
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
		const char *env[] = { CO_LONG_DELAY, NULL };
		char vs[16];
		const char *args[] = { vs, NULL };
		struct co_rng pr;
		uint64_t total = 0;
		int i;

		snprintf(vs, sizeof(vs), "%d", v);
		co_rng_init(&pr, co_seed, (uint64_t)v);
		for (i = 0; i < WRITES; i++)
			total += size_of(&pr);
		co_spawn_recv_stream(&c, args, env, co_stream_key((uint64_t)v), total, variants[v]);
		/* Everything arrived: the writer may end now. */
		if (kill(c.pid, SIGUSR1) < 0)
			co_fail("kill: %s", strerror(errno));
		co_phase("%s: waiting for the writer", variants[v]);
		co_wait_ok(&c, variants[v]);
		co_stats_expect_coalesced(&c, WRITES * 9 / 10, 4, variants[v]);
	}
	return 0;
}
