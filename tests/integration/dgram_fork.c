/* dgram_fork: a writer with datagrams queued (COALESCE_DELAY_US at its
 * maximum, 1 s, so that only the shim's fork and exit handling can send
 * them in time) forks, vforks or spawns, on three sockets: an unconnected
 * UDP socket (two destinations), a connected UDP socket and a connected
 * Unix datagram socket.
 *   fork, then both processes send on the same sockets, the child ending by
 *   exit(), _exit() or exec of /bin/true;
 *   vfork, then exec of /bin/true or _exit() in the child;
 *   posix_spawn of /bin/true.
 * The receiver knows each process by the writer id in the datagram header
 * (both send from the same sockets) and checks that nothing is duplicated
 * (the child must not send the queue it inherited), nothing lost, and each
 * process's datagrams arrive in its order at each receiver. The stats must
 * show the writer's datagrams queued. */
#include "common.h"

#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define NAME "dgram_fork"
#define NRX 4
#define BEFORE 300 /* datagrams of the writer before the split */
#define DURING 300 /* of each process while both live */
#define AFTER 100  /* of the writer once the child is gone */
#define MAX_SIZE 1400

extern char **environ;

enum variant {
	V_FORK_EXIT,
	V_FORK__EXIT,
	V_FORK_EXEC,
	V_VFORK_EXEC,
	V_VFORK__EXIT,
	V_POSIX_SPAWN,
};
static const char *const variants[] = { "fork-child-exit",  "fork-child-_exit",
					"fork-child-exec",  "vfork-exec",
					"vfork-_exit",      "posix_spawn" };
#define NVARIANTS (int)(sizeof(variants) / sizeof(variants[0]))

/* The forked child sends too. */
static int child_sends(int v)
{
	return v <= V_FORK_EXEC;
}

/* What one process sends: writer 0 is the process the test started,
 * writer 1 its forked child. Both sides draw the same plan. */
struct sender {
	unsigned writer;
	struct co_rng r;
	uint32_t seq[NRX];
};

static void sender_init(struct sender *s, int v, unsigned writer)
{
	memset(s, 0, sizeof(*s));
	s->writer = writer;
	co_rng_init(&s->r, co_seed, (uint64_t)v * 2 + writer);
}

/* The next datagram: its receiver and size (at least a header: the
 * receiver tells the processes apart by it). */
static void sender_next(struct sender *s, int *dest, size_t *len, uint32_t *seq)
{
	*dest = (int)co_range(&s->r, 0, NRX - 1);
	*len = co_range(&s->r, CO_DGRAM_HDR, MAX_SIZE);
	*seq = s->seq[*dest]++;
}

/* ---- the writer (under the shim) ---------------------------------------------------------- */

/* Fds: 3 unconnected UDP (receivers 0 and 1), 4 UDP connected to receiver
 * 2, 5 Unix datagram connected to receiver 3. */
static struct sockaddr_storage addr[NRX];
static socklen_t addrlen[NRX];

static void send_some(struct sender *s, int n)
{
	unsigned char buf[MAX_SIZE];
	int i, dest;
	size_t len;
	uint32_t seq;
	ssize_t r;

	for (i = 0; i < n; i++) {
		sender_next(s, &dest, &len, &seq);
		co_dgram_fill(buf, len, s->writer, (unsigned)dest, seq);
		if (dest < 2)
			r = sendto(3, buf, len, 0, (struct sockaddr *)&addr[dest], addrlen[dest]);
		else
			r = send(dest == 2 ? 4 : 5, buf, len, 0);
		if (r != (ssize_t)len)
			co_fail("writer %u: datagram %d of %zu bytes to receiver %d returned %zd (%s)",
				s->writer, i, len, dest, r, r < 0 ? strerror(errno) : "short");
	}
}

static void wait_ok(pid_t pid, const char *what)
{
	int st;

	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			co_fail("%s: waitpid: %s", what, strerror(errno));
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		co_fail("%s: the child %s", what, co_status_str(st));
}

/* In the forked child: its own datagrams, then its end. */
static void forked_child(int v)
{
	char *const true_argv[] = { "true", NULL };
	struct sender s;

	sender_init(&s, v, 1);
	send_some(&s, DURING);
	if (v == V_FORK_EXIT)
		exit(0);
	if (v == V_FORK__EXIT)
		_exit(0);
	execv("/bin/true", true_argv);
	_exit(127);
}

/* Splits with datagrams queued; returns the child's pid. */
static pid_t split(int v)
{
	char *const true_argv[] = { "true", NULL };
	pid_t pid;
	int e;

	switch (v) {
	case V_VFORK_EXEC:
	case V_VFORK__EXIT:
		pid = vfork();
		if (pid == 0) {
			if (v == V_VFORK_EXEC)
				execv("/bin/true", true_argv);
			_exit(0);
		}
		break;
	case V_POSIX_SPAWN:
		e = posix_spawn(&pid, "/bin/true", NULL, NULL, true_argv, environ);
		if (e)
			co_fail("posix_spawn: %s", strerror(e));
		break;
	default:
		pid = fork();
		if (pid == 0)
			forked_child(v);
		break;
	}
	if (pid < 0)
		co_fail("%s: %s", variants[v], strerror(errno));
	return pid;
}

/* Arguments: the variant, then the four receivers' addresses. */
static int child_main(int argc, char **argv)
{
	struct sender s;
	pid_t pid;
	int v, i;

	co_child_init(NAME);
	if (argc != 1 + NRX)
		co_fail("usage: variant address x%d", NRX);
	v = (int)co_arg_u64(argv[0]);
	for (i = 0; i < NRX; i++)
		addrlen[i] = co_addr_parse(argv[1 + i], &addr[i]);
	if (connect(4, (struct sockaddr *)&addr[2], addrlen[2]) < 0 ||
	    connect(5, (struct sockaddr *)&addr[3], addrlen[3]) < 0)
		co_fail("connect: %s", strerror(errno));
	sender_init(&s, v, 0);
	send_some(&s, BEFORE);
	pid = split(v);
	send_some(&s, DURING);
	wait_ok(pid, variants[v]);
	send_some(&s, AFTER);
	return 0;
}

/* ---- the receiver (parent) ---------------------------------------------------------------- */

static uint64_t expect_sender(struct co_dgram_check *k, int v, unsigned writer, int n)
{
	struct sender s;
	int i, dest;
	size_t len;
	uint32_t seq;
	uint64_t total = 0;

	sender_init(&s, v, writer);
	for (i = 0; i < n; i++) {
		sender_next(&s, &dest, &len, &seq);
		total = co_dgram_expect(k, writer, (unsigned)dest, seq, len, -1);
	}
	return total;
}

static void run(int v)
{
	struct co_dgram_check *k = co_dgram_check_new(variants[v]);
	const char *env[] = { CO_LONG_DELAY, NULL };
	char vs[16], text[NRX][128];
	const char *args[NRX + 2];
	struct co_fdmap map[3];
	uint64_t total;
	int i;

	co_phase("%s: setting up", variants[v]);
	snprintf(vs, sizeof(vs), "%d", v);
	args[0] = vs;
	for (i = 0; i < NRX; i++) {
		co_dgram_add_receiver(k, i < 3 ? AF_INET : AF_UNIX, 0, text[i], sizeof(text[i]));
		args[1 + i] = text[i];
	}
	args[1 + NRX] = NULL;
	map[0].from = co_dgram_socket(AF_INET, 0, NULL, NULL);
	map[1].from = co_dgram_socket(AF_INET, 0, NULL, NULL);
	map[2].from = co_dgram_socket(AF_UNIX, 0, NULL, NULL);
	for (i = 0; i < 3; i++)
		map[i].to = 3 + i;
	total = expect_sender(k, v, 0, BEFORE + DURING + AFTER);
	if (child_sends(v))
		total = expect_sender(k, v, 1, DURING);
	co_dgram_run_child(k, args, map, 3, env, total, 0, variants[v]);
	co_dgram_check_free(k);
}

int main(int argc, char **argv)
{
	int v;

	if (argc > 1 && strcmp(argv[1], CO_CHILD_FLAG) == 0)
		return child_main(argc - 2, argv + 2);
	co_init(argc, argv, NAME);
	co_watchdog(30);
	for (v = 0; v < NVARIANTS; v++)
		run(v);
	co_dgram_stats_verdict();
	return 0;
}
