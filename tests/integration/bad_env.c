/* bad_env: bad settings must not break the program. With
 * COALESCE_DELAY_US=garbage, -5, 99999999999 or empty, COALESCE_MAX_BYTES=abc,
 * and two bad variables at once, a writer under the shim makes small writes
 * from two threads on two sockets; every byte must arrive, the writer's
 * stderr (captured through a pipe) must name each bad variable on exactly
 * one line, and the shim must go on coalescing with its defaults. A control
 * case with good values must print nothing about them. */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define NAME "bad_env"
#define WRITES 2000

struct bad_case {
	const char *env[3];
	const char *bad[2]; /* variables that must be named once each */
};

static const struct bad_case cases[] = {
	{ { "COALESCE_DELAY_US=garbage" }, { "COALESCE_DELAY_US" } },
	{ { "COALESCE_DELAY_US=-5" }, { "COALESCE_DELAY_US" } },
	{ { "COALESCE_DELAY_US=99999999999" }, { "COALESCE_DELAY_US" } },
	{ { "COALESCE_DELAY_US=" }, { "COALESCE_DELAY_US" } },
	{ { "COALESCE_MAX_BYTES=abc" }, { "COALESCE_MAX_BYTES" } },
	{ { "COALESCE_DELAY_US=12x", "COALESCE_MAX_BYTES=abc" },
	  { "COALESCE_DELAY_US", "COALESCE_MAX_BYTES" } },
	/* control: good values, nothing to say */
	{ { "COALESCE_DELAY_US=500", "COALESCE_MAX_BYTES=8192" }, { NULL } },
};
#define NCASES (int)(sizeof(cases) / sizeof(cases[0]))

static void *writer(void *arg)
{
	int fd = (int)(intptr_t)arg, i;
	unsigned char buf[128];
	struct co_rng r;
	uint64_t key = co_stream_key((uint64_t)fd), off = 0;

	co_rng_init(&r, co_seed, (uint64_t)fd);
	for (i = 0; i < WRITES; i++) {
		size_t len = co_range(&r, 1, 100);

		co_stream_fill(key, off, buf, len);
		if (write(fd, buf, len) != (ssize_t)len)
			co_fail("fd %d write %d: %s", fd, i, strerror(errno));
		off += len;
	}
	if (close(fd) < 0)
		co_fail("close: %s", strerror(errno));
	return NULL;
}

static int child_main(void)
{
	pthread_t t;

	co_child_init(NAME);
	if (pthread_create(&t, NULL, writer, (void *)(intptr_t)4) != 0)
		co_fail("pthread_create");
	writer((void *)(intptr_t)3);
	pthread_join(t, NULL);
	return 0;
}

/* Number of lines of text that contain word. */
static int lines_naming(const char *text, const char *word)
{
	int n = 0;
	const char *line = text;

	while (*line) {
		const char *end = strchr(line, '\n');
		size_t len = end ? (size_t)(end - line) : strlen(line);
		char tmp[1024];

		snprintf(tmp, sizeof(tmp), "%.*s", (int)(len < sizeof(tmp) - 1 ? len : sizeof(tmp) - 1),
			 line);
		if (strstr(tmp, word))
			n++;
		line += len + (end ? 1 : 0);
	}
	return n;
}

int main(int argc, char **argv)
{
	int k;

	if (argc > 1 && strcmp(argv[1], CO_CHILD_FLAG) == 0)
		return child_main();
	co_init(argc, argv, NAME);
	co_watchdog(60);
	for (k = 0; k < NCASES; k++) {
		const struct bad_case *bc = &cases[k];
		struct co_child c;
		struct co_fdmap map[3];
		char errtext[16384], what[128];
		int s3[2], s4[2], ep[2], i, j;
		size_t n = 0;

		snprintf(what, sizeof(what), "%s%s%s", bc->env[0], bc->env[1] ? " " : "",
			 bc->env[1] ? bc->env[1] : "");
		if (co_tcp_pair(AF_INET, &s3[0], &s3[1]) < 0 || co_tcp_pair(AF_INET, &s4[0], &s4[1]) < 0)
			co_fail("tcp pair: %s", strerror(errno));
		if (pipe2(ep, O_CLOEXEC) < 0)
			co_fail("pipe: %s", strerror(errno));
		map[0].from = s3[0];
		map[0].to = 3;
		map[1].from = s4[0];
		map[1].to = 4;
		map[2].from = ep[1];
		map[2].to = 2;
		co_spawn(&c, NULL, map, 3, bc->env, 1);
		close(s3[0]);
		close(s4[0]);
		close(ep[1]);
		for (i = 0; i < 2; i++) {
			struct co_rng r;
			uint64_t total = 0;
			int fd = 3 + i;
			char sw[160];

			co_rng_init(&r, co_seed, (uint64_t)fd);
			for (j = 0; j < WRITES; j++)
				total += co_range(&r, 1, 100);
			snprintf(sw, sizeof(sw), "%s: socket %d", what, fd);
			co_phase("%s: receiving", sw);
			co_recv_verify_stream(i ? s4[1] : s3[1], co_stream_key((uint64_t)fd), total, sw);
			close(i ? s4[1] : s3[1]);
		}
		co_phase("%s: reading the writer's stderr", what);
		for (;;) {
			ssize_t r = read(ep[0], errtext + n, sizeof(errtext) - 1 - n);

			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				break;
			n += (size_t)r;
			if (n == sizeof(errtext) - 1)
				break;
		}
		errtext[n] = '\0';
		close(ep[0]);
		{
			int st = co_wait(&c);

			if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
				co_fail("%s: the writer %s; its stderr:\n%s", what, co_status_str(st),
					errtext);
		}
		if (!co_shim_on())
			continue;
		for (i = 0; i < 2 && bc->bad[i]; i++) {
			int m = lines_naming(errtext, bc->bad[i]);

			if (m != 1)
				co_fail("%s: the writer's stderr names %s on %d lines, expected exactly 1; its stderr:\n%s",
					what, bc->bad[i], m, errtext);
		}
		if (!bc->bad[0]) {
			if (lines_naming(errtext, "COALESCE_DELAY_US") ||
			    lines_naming(errtext, "COALESCE_MAX_BYTES"))
				co_fail("%s: good values, but the writer's stderr complains:\n%s", what,
					errtext);
		}
		co_info("%s: stderr: %s", what, errtext);
		/* Bad values fall back to the defaults: still coalescing. */
		co_stats_expect_coalesced(&c, WRITES, 4, what);
	}
	return 0;
}
