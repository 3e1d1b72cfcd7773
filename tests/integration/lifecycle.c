/* lifecycle: the writer queues small writes (deadline 1 s, so only the
 * lifecycle flush can get them out in time), then:
 *   fork, and the child ends with exit(), _exit() or exec: nothing is sent
 *   twice (the child must not send the parent's queue) and nothing is lost;
 *   vfork + _exit and posix_spawn: the child shares or skips the parent's
 *   memory and must not touch its queues;
 *   _exit(), _Exit() or exec of another program by the writer itself:
 *   everything queued arrives (no destructor runs there).
 * The receiver checks every byte and that the stream ends exactly there. */
#include "common.h"

#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define NAME "lifecycle"
#define WRITES 2000

extern char **environ;

static const char *const variants[] = {
	"fork-child-exit", "fork-child-_exit", "fork-child-exec", "vfork-child-_exit",
	"posix_spawn", "_exit", "_Exit", "exec",
};
#define NVARIANTS (int)(sizeof(variants) / sizeof(variants[0]))

static uint64_t key, off;
static struct co_rng r;

static size_t size_of(struct co_rng *rr)
{
	return co_range(rr, 1, 120);
}

static void write_some(int n)
{
	unsigned char buf[128];
	int i;

	for (i = 0; i < n; i++) {
		size_t len = size_of(&r);
		ssize_t w;

		co_stream_fill(key, off, buf, len);
		w = write(3, buf, len);
		if (w != (ssize_t)len)
			co_fail("write %d of %zu bytes returned %zd (%s)", i, len, w,
				w < 0 ? strerror(errno) : "short");
		off += len;
	}
}

/* Forks (or vforks, or spawns) with writes queued, and ends the child in
 * the variant's way; returns in the parent once the child is gone. */
static void split(int v)
{
	char *const true_argv[] = { "true", NULL };
	int status;
	pid_t pid;

	switch (v) {
	case 3:
		pid = vfork();
		if (pid == 0)
			_exit(0);
		break;
	case 4:
		if (posix_spawn(&pid, "/bin/true", NULL, NULL, true_argv, environ) != 0)
			co_fail("posix_spawn: %s", strerror(errno));
		break;
	default:
		pid = fork();
		if (pid == 0) {
			if (v == 0)
				exit(0);
			if (v == 1)
				_exit(0);
			execv("/bin/true", true_argv);
			_exit(127);
		}
		break;
	}
	if (pid < 0)
		co_fail("%s: %s", variants[v], strerror(errno));
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		co_fail("%s: the child ended badly: %s", variants[v], co_status_str(status));
}

static int child_main(int argc, char **argv)
{
	char *const true_argv[] = { "true", NULL };
	int v;

	co_child_init(NAME);
	if (argc != 1)
		co_fail("usage: variant");
	v = (int)co_arg_u64(argv[0]);
	key = co_stream_key((uint64_t)v);
	co_rng_init(&r, co_seed, (uint64_t)v);
	write_some(WRITES / 2);
	if (v <= 4) {
		split(v);
		write_some(WRITES / 2);
		return 0;
	}
	write_some(WRITES / 2);
	if (v == 5)
		_exit(0);
	if (v == 6)
		_Exit(0);
	execv("/bin/true", true_argv);
	co_fail("execv /bin/true: %s", strerror(errno));
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
		long long n;
		int i;

		snprintf(vs, sizeof(vs), "%d", v);
		co_rng_init(&pr, co_seed, (uint64_t)v);
		for (i = 0; i < WRITES; i++)
			total += size_of(&pr);
		co_spawn_recv_stream(&c, args, env, co_stream_key((uint64_t)v), total, variants[v]);
		co_phase("%s: waiting for the writer", variants[v]);
		co_wait_ok(&c, variants[v]);
		/* An exec'd writer leaves its statistics to the new program. */
		if (v == 7 || !co_shim_on())
			continue;
		co_stats_expect_coalesced(&c, WRITES / 2, 4, variants[v]);
		if (v <= 2 && (n = co_stats_need(&c, "flush_fork")) < 1)
			co_fail("%s: flush_fork=%lld, expected the parent to flush before fork",
				variants[v], n);
		if (v >= 5 && (n = co_stats_need(&c, "flush_exit")) < 1)
			co_fail("%s: flush_exit=%lld, expected the exit flush", variants[v], n);
	}
	return 0;
}
