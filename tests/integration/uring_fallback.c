/* uring_fallback: the io_uring flush backend where io_uring cannot be had,
 * or is lost. A writer on 20 TCP connections queues a few small records on
 * each, then polls (the flush before a wait sends every queue at once), 150
 * rounds, then returns from main.
 *
 * Variants:
 * - "seccomp, uring": the writer installs a seccomp filter that fails
 *   io_uring_setup with EPERM (as Docker's default profile does), then
 *   execs itself under the shim with COALESCE_BACKEND=uring: every byte
 *   arrives, the stats show uring_unavailable and no ring send, and stderr
 *   says once "COALESCE_BACKEND=uring: io_uring unavailable (...)".
 * - "seccomp, auto": the same with the default backend: silent.
 * - "closefrom": io_uring allowed, COALESCE_BACKEND=uring; after the first
 *   round the writer closes every fd above its own (taking the shim's ring
 *   fd with it): every byte still arrives, the ring is given up (counted)
 *   and never entered again. Skipped here when io_uring is unavailable.
 * Skipped as a whole where seccomp filters cannot be installed. */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#define NAME "uring_fallback"
#define CONNS 20
#define ROUNDS 150
#define UNAVAILABLE "COALESCE_BACKEND=uring: io_uring unavailable ("

#if defined(__x86_64__)
#define CO_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define CO_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

enum { V_SECCOMP_URING, V_SECCOMP_AUTO, V_CLOSEFROM, NVARIANTS };
static const char *const variants[NVARIANTS] = { "seccomp, uring", "seccomp, auto",
						 "closefrom" };

/* The records of connection i in round k: their sizes (1 to 3 of 1-100 B). */
static uint64_t round_bytes(struct co_rng *r, size_t *sizes, int *n)
{
	uint64_t total = 0;
	int j;

	*n = (int)co_range(r, 1, 3);
	for (j = 0; j < *n; j++)
		total += sizes[j] = co_range(r, 1, 100);
	return total;
}

/* Fails io_uring_setup with EPERM from now on, in this process and what it
 * execs. Returns 0, or the reason it cannot. */
static const char *forbid_io_uring(void)
{
#ifdef CO_AUDIT_ARCH
	struct sock_filter code[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, CO_AUDIT_ARCH, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof(code) / sizeof(code[0]), .filter = code };

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return "prctl(PR_SET_NO_NEW_PRIVS) failed";
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
		return "seccomp(SECCOMP_SET_MODE_FILTER) failed";
	return NULL;
#else
	return "no seccomp filter for this architecture in the test";
#endif
}

static void write_rounds(int variant)
{
	struct co_rng r[CONNS];
	unsigned char buf[128];
	uint64_t off[CONNS] = { 0 };
	size_t sizes[3];
	struct pollfd p = { .fd = 3, .events = POLLOUT };
	int i, k, j, n;

	for (i = 0; i < CONNS; i++)
		co_rng_init(&r[i], co_seed, (uint64_t)i);
	for (k = 0; k < ROUNDS; k++) {
		for (i = 0; i < CONNS; i++) {
			round_bytes(&r[i], sizes, &n);
			for (j = 0; j < n; j++) {
				co_stream_fill(co_stream_key((uint64_t)i), off[i], buf, sizes[j]);
				co_write_all(3 + i, buf, sizes[j], "record");
				off[i] += sizes[j];
			}
		}
		/* A wait that may block: every queue goes out first. */
		if (poll(&p, 1, 1000) < 0)
			co_fail("poll: %s", strerror(errno));
		if (variant == V_CLOSEFROM && k == 0)
			closefrom(3 + CONNS);
	}
}

static int child_main(int argc, char **argv)
{
	const char *why;
	int v;

	co_child_init(NAME);
	if (argc < 1)
		co_fail("usage: variant [exec'd]");
	v = (int)co_arg_u64(argv[0]);
	if (v != V_CLOSEFROM && argc == 1) {
		why = forbid_io_uring();
		if (why) {
			printf("skipped: %s: %s\n", why, strerror(errno));
			return 77;
		}
		execl("/proc/self/exe", "/proc/self/exe", CO_CHILD_FLAG, argv[0], "exec'd",
		      (char *)NULL);
		co_fail("exec: %s", strerror(errno));
	}
	write_rounds(v);
	return 0;
}

/* Receives and checks every connection's stream, then the writer's stderr. */
static void receive_all(const int *rx, int v, char *errtext, size_t cap, int errfd)
{
	char what[96];
	size_t sizes[3], n = 0;
	uint64_t total;
	struct co_rng r;
	int i, k, m;
	ssize_t got;

	for (i = 0; i < CONNS; i++) {
		co_rng_init(&r, co_seed, (uint64_t)i);
		for (total = 0, k = 0; k < ROUNDS; k++)
			total += round_bytes(&r, sizes, &m);
		snprintf(what, sizeof(what), "%s: connection %d", variants[v], i);
		co_phase("%s: receiving", what);
		co_recv_verify_stream(rx[i], co_stream_key((uint64_t)i), total, what);
		close(rx[i]);
	}
	while ((got = read(errfd, errtext + n, cap - 1 - n)) > 0 ||
	       (got < 0 && errno == EINTR))
		n += got > 0 ? (size_t)got : 0;
	errtext[n] = '\0';
	close(errfd);
}

/* Counts the occurrences of needle in text. */
static int count_of(const char *text, const char *needle)
{
	int n = 0;

	for (; (text = strstr(text, needle)) != NULL; text++)
		n++;
	return n;
}

static void check_stats(const struct co_child *c, int v, const char *errtext)
{
	long long unavailable = co_stats_need(c, "uring_unavailable");
	long long sends = co_stats_need(c, "uring_sends");
	int said = count_of(errtext, UNAVAILABLE);

	co_info("%s: uring_unavailable=%lld uring_sends=%lld stderr: %s", variants[v],
		unavailable, sends, errtext);
	if (unavailable != 1)
		co_fail("%s: uring_unavailable=%lld, expected 1; stderr:\n%s", variants[v],
			unavailable, errtext);
	if (v != V_CLOSEFROM && sends != 0)
		co_fail("%s: uring_sends=%lld under a filter that forbids io_uring", variants[v],
			sends);
	if (v == V_CLOSEFROM && sends < 1)
		co_fail("%s: uring_sends=%lld: the ring was not used before it was closed",
			variants[v], sends);
	if (said != (v == V_SECCOMP_URING))
		co_fail("%s: stderr says \"%s\" %d times; expected %d; stderr:\n%s", variants[v],
			UNAVAILABLE, said, v == V_SECCOMP_URING, errtext);
}

/* Returns whether this process may make an io_uring (the closefrom variant
 * needs one). */
static int io_uring_here(void)
{
	char params[120] = { 0 };
	long fd = syscall(SYS_io_uring_setup, 4, params);

	if (fd < 0)
		return 0;
	close((int)fd);
	return 1;
}

static int run_variant(int v)
{
	const char *envs[NVARIANTS][3] = {
		{ CO_LONG_DELAY, "COALESCE_BACKEND=uring", NULL },
		{ CO_LONG_DELAY, "COALESCE_BACKEND=auto", NULL },
		{ CO_LONG_DELAY, "COALESCE_BACKEND=uring", NULL },
	};
	struct co_fdmap map[CONNS + 2];
	int rx[CONNS], tx, ep[2], out[2], i, st;
	char vs[16], errtext[8192], outtext[256] = "";
	const char *args[] = { vs, NULL };
	struct co_child c;
	ssize_t n;

	snprintf(vs, sizeof(vs), "%d", v);
	for (i = 0; i < CONNS; i++) {
		if (co_tcp_pair(AF_INET, &tx, &rx[i]) < 0)
			co_fail("tcp pair: %s", strerror(errno));
		map[i].from = tx;
		map[i].to = 3 + i;
	}
	if (pipe2(ep, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0)
		co_fail("pipe: %s", strerror(errno));
	map[CONNS] = (struct co_fdmap){ .from = ep[1], .to = 2 };
	map[CONNS + 1] = (struct co_fdmap){ .from = out[1], .to = 1 };
	co_spawn(&c, args, map, CONNS + 2, envs[v], 1);
	for (i = 0; i < CONNS + 2; i++)
		close(map[i].from);
	receive_all(rx, v, errtext, sizeof(errtext), ep[0]);
	n = read(out[0], outtext, sizeof(outtext) - 1);
	outtext[n > 0 ? n : 0] = '\0';
	close(out[0]);
	st = co_wait(&c);
	if (WIFEXITED(st) && WEXITSTATUS(st) == 77) {
		printf("%s", outtext);
		return 77;
	}
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		co_fail("%s: the writer %s; its stderr:\n%s", variants[v], co_status_str(st), errtext);
	if (co_shim_on())
		check_stats(&c, v, errtext);
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
		if (v == V_CLOSEFROM && !io_uring_here()) {
			co_info("closefrom: skipped: io_uring_setup fails here");
			continue;
		}
		co_phase("%s", variants[v]);
		if (run_variant(v) == 77)
			return 77;
	}
	return 0;
}
