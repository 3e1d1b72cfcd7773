/* fatal_signal: the writer queues small writes (deadline 1 s, so only the
 * shim's signal handling can get them out in time), tells the parent on a
 * pipe, and waits. The parent sends it a signal:
 *   SIGTERM, SIGINT, SIGHUP, SIGUSR1 with the default disposition: the
 *   writer must die of that very signal, and every byte queued before must
 *   arrive;
 *   SIGTERM with a handler of the writer's own, which writes a last record
 *   and calls exit(0): the writer's handler runs (exit status 0), and every
 *   byte, the last record included, arrives.
 * Before waiting, the writer checks that sigaction and signal report the
 * disposition it set itself (SIG_DFL, or its handler), not the shim's. */
#include "common.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define NAME "fatal_signal"
#define WRITES 1500
#define LAST_RECORD 64

static const struct {
	const char *name;
	int sig;
	int own_handler;
} variants[] = {
	{ "SIGTERM", SIGTERM, 0 }, { "SIGINT", SIGINT, 0 },   { "SIGHUP", SIGHUP, 0 },
	{ "SIGUSR1", SIGUSR1, 0 }, { "SIGTERM-own-handler", SIGTERM, 1 },
};
#define NVARIANTS (int)(sizeof(variants) / sizeof(variants[0]))

static uint64_t key, off;
static struct co_rng r;

static size_t size_of(struct co_rng *rr)
{
	return co_range(rr, 1, 100);
}

static void write_bytes(size_t len)
{
	unsigned char buf[128];
	ssize_t w;

	co_stream_fill(key, off, buf, len);
	w = write(3, buf, len);
	if (w != (ssize_t)len)
		_exit(3);
	off += len;
}

static void own_handler(int sig)
{
	(void)sig;
	write_bytes(LAST_RECORD);
	exit(0);
}

/* Fails unless sig's disposition, as the application sees it, is want. */
static void expect_disposition(int sig, void (*want)(int))
{
	struct sigaction sa;
	void (*prev)(int);

	if (sigaction(sig, NULL, &sa) != 0 || sa.sa_handler != want)
		co_fail("sigaction(%d) reports handler %p, the application set %p", sig,
			(void *)sa.sa_handler, (void *)want);
	prev = signal(sig, want);
	if (prev != want)
		co_fail("signal(%d) reports %p, the application set %p", sig, (void *)prev,
			(void *)want);
}

static int child_main(int argc, char **argv)
{
	int v, i;

	co_child_init(NAME);
	if (argc != 1)
		co_fail("usage: variant");
	v = (int)co_arg_u64(argv[0]);
	key = co_stream_key((uint64_t)v);
	co_rng_init(&r, co_seed, (uint64_t)v);
	if (variants[v].own_handler)
		signal(variants[v].sig, own_handler);
	expect_disposition(variants[v].sig, variants[v].own_handler ? own_handler : SIG_DFL);
	for (i = 0; i < WRITES; i++)
		write_bytes(size_of(&r));
	co_write_all(4, "r", 1, "ready pipe");
	for (;;)
		pause();
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
		struct co_fdmap map[2];
		const char *env[] = { CO_LONG_DELAY, NULL };
		char vs[16], ready;
		const char *args[] = { vs, NULL };
		struct co_rng pr;
		uint64_t total = 0;
		int i, wfd, rfd, pipefd[2], status;

		snprintf(vs, sizeof(vs), "%d", v);
		co_rng_init(&pr, co_seed, (uint64_t)v);
		for (i = 0; i < WRITES; i++)
			total += size_of(&pr);
		if (variants[v].own_handler)
			total += LAST_RECORD;
		if (co_tcp_pair(AF_INET, &wfd, &rfd) < 0 || pipe(pipefd) < 0)
			co_fail("tcp pair or pipe: %s", strerror(errno));
		map[0].from = wfd;
		map[0].to = 3;
		map[1].from = pipefd[1];
		map[1].to = 4;
		co_spawn(&c, args, map, 2, env, 1);
		close(wfd);
		close(pipefd[1]);
		co_phase("%s: waiting for the writer to be ready", variants[v].name);
		if (co_read_full(pipefd[0], &ready, 1, "ready pipe") != 1)
			co_fail("%s: the writer ended before it was ready", variants[v].name);
		close(pipefd[0]);
		if (kill(c.pid, variants[v].sig) != 0)
			co_fail("kill: %s", strerror(errno));
		co_phase("%s: receiving %llu bytes", variants[v].name, (unsigned long long)total);
		co_recv_verify_stream(rfd, co_stream_key((uint64_t)v), total, variants[v].name);
		close(rfd);
		status = co_wait(&c);
		if (variants[v].own_handler) {
			if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
				co_fail("%s: the writer's own handler should have exited 0; it %s",
					variants[v].name, co_status_str(status));
		} else if (!WIFSIGNALED(status) || WTERMSIG(status) != variants[v].sig) {
			co_fail("%s: the writer should have died of signal %d; it %s",
				variants[v].name, variants[v].sig, co_status_str(status));
		}
	}
	return 0;
}
