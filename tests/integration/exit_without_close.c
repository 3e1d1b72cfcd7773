/* exit_without_close: the writer makes many small writes and then ends
 * without closing the socket or reading: by returning from main, by
 * calling exit(), by calling exit() from a second thread, and by making its
 * last writes in an atexit handler. The deadline is set to its maximum (1 s),
 * so the tail still queued at exit can only get out through the exit flush.
 * Every byte must arrive before EOF; the stats must show the writes were
 * queued (and, where the library reports it, an exit flush). */
#include "common.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define NAME "exit_without_close"
#define WRITES 3000

static const char *const variants[] = { "return", "exit", "exit-from-thread", "atexit-writes" };
#define NVARIANTS (int)(sizeof(variants) / sizeof(variants[0]))

static uint64_t key, off;
static struct co_rng r;

static size_t size_of(struct co_rng *rr)
{
	return co_range(rr, 1, 100);
}

static void write_some(int n)
{
	unsigned char buf[128];
	int i;

	for (i = 0; i < n; i++) {
		size_t len = size_of(&r);
		ssize_t w;

		co_stream_fill(key, off, buf, len);
		w = (i & 1) ? send(3, buf, len, 0) : write(3, buf, len);
		if (w != (ssize_t)len)
			co_fail("write %d of %zu bytes returned %zd (%s)", i, len, w,
				w < 0 ? strerror(errno) : "short");
		off += len;
	}
}

static void at_exit_writer(void)
{
	write_some(WRITES / 2);
}

static void *thread_exit(void *arg)
{
	(void)arg;
	write_some(WRITES / 2);
	exit(0);
}

static int child_main(int argc, char **argv)
{
	int v;

	co_child_init(NAME);
	if (argc != 1)
		co_fail("usage: variant");
	v = (int)co_arg_u64(argv[0]);
	key = co_stream_key((uint64_t)v);
	co_rng_init(&r, co_seed, (uint64_t)v);
	switch (v) {
	case 0:
		write_some(WRITES);
		return 0;
	case 1:
		write_some(WRITES);
		exit(0);
	case 2: {
		pthread_t t;

		write_some(WRITES / 2);
		if (pthread_create(&t, NULL, thread_exit, NULL) != 0)
			co_fail("pthread_create");
		pthread_join(t, NULL);
		co_fail("exit() in the thread returned");
	}
	default:
		atexit(at_exit_writer);
		write_some(WRITES / 2);
		return 0;
	}
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
		long long fe;
		int i;

		snprintf(vs, sizeof(vs), "%d", v);
		co_rng_init(&pr, co_seed, (uint64_t)v);
		for (i = 0; i < (v == 0 || v == 1 ? WRITES : WRITES / 2 * 2); i++)
			total += size_of(&pr);
		co_spawn_recv_stream(&c, args, env, co_stream_key((uint64_t)v), total, variants[v]);
		co_phase("%s: waiting for the writer", variants[v]);
		co_wait_ok(&c, variants[v]);
		co_stats_expect_coalesced(&c, WRITES / 2, 4, variants[v]);
		if (co_shim_on() && co_stats_get(&c, "flush_exit", &fe) == 0 && fe < 1)
			co_fail("%s: stats flush_exit=%lld, expected the exit flush to send the tail",
				variants[v], fe);
	}
	return 0;
}
