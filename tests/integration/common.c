/* Shared helpers for the integration tests: see common.h. */
#include "common.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

const char *co_name = "test";
uint64_t co_seed;
int co_is_child;
int co_verbose;

static char **co_argv;
static int co_failed;
static char co_phase_buf[256] = "starting";
static char co_alarm_msg[256];
static unsigned co_alarm_secs;

#define CO_MAX_KIDS 256
static volatile pid_t co_kids[CO_MAX_KIDS];

static char co_tmpdir[256];
static int co_stats_counter;

/* ---- reporting -------------------------------------------------------------------------- */

static void co_kill_kids(void)
{
	int i;

	for (i = 0; i < CO_MAX_KIDS; i++) {
		pid_t p = co_kids[i];

		if (p > 0)
			kill(p, SIGKILL);
	}
}

static void co_reap_kids(void)
{
	int i;

	for (i = 0; i < CO_MAX_KIDS; i++) {
		pid_t p = co_kids[i];

		if (p > 0) {
			while (waitpid(p, NULL, 0) < 0 && errno == EINTR)
				;
			co_kids[i] = 0;
		}
	}
}

void co_fail(const char *fmt, ...)
{
	va_list ap;
	char msg[2048];

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	co_failed = 1;
	if (co_is_child) {
		fprintf(stderr, "FAIL %s (child, under the shim): %s (seed=%llu)\n", co_name, msg,
			(unsigned long long)co_seed);
		fflush(stderr);
		exit(1);
	}
	fprintf(stderr, "FAIL %s: %s\n  while: %s\n  seed: %llu (rerun with TEST_SEED=%llu)\n",
		co_name, msg, co_phase_buf, (unsigned long long)co_seed,
		(unsigned long long)co_seed);
	if (co_tmpdir[0])
		fprintf(stderr, "  stats files kept in %s\n", co_tmpdir);
	fflush(stderr);
	co_kill_kids();
	co_reap_kids();
	exit(1);
}

void co_skip(const char *fmt, ...)
{
	va_list ap;

	printf("skipped: ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	co_kill_kids();
	co_reap_kids();
	exit(CO_SKIP);
}

void co_info(const char *fmt, ...)
{
	va_list ap;

	if (!co_verbose)
		return;
	fprintf(stderr, "%s%s: ", co_name, co_is_child ? " (child)" : "");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
}

void co_note(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: note: ", co_name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
}

static void co_build_alarm_msg(void)
{
	snprintf(co_alarm_msg, sizeof(co_alarm_msg),
		 "FAIL %s: timeout (hang) after %u s, seed %llu (rerun with TEST_SEED=%llu); while: ",
		 co_name, co_alarm_secs, (unsigned long long)co_seed,
		 (unsigned long long)co_seed);
}

void co_phase(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(co_phase_buf, sizeof(co_phase_buf), fmt, ap);
	va_end(ap);
	if (co_verbose && !co_is_child)
		fprintf(stderr, "%s: phase: %s\n", co_name, co_phase_buf);
}

static void co_on_alarm(int sig)
{
	ssize_t r;

	(void)sig;
	r = write(2, co_alarm_msg, strlen(co_alarm_msg));
	r = write(2, co_phase_buf, strnlen(co_phase_buf, sizeof(co_phase_buf)));
	r = write(2, "\n", 1);
	(void)r;
	co_kill_kids();
	_exit(1);
}

void co_watchdog(unsigned seconds)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = co_on_alarm;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGALRM, &sa, NULL);
	co_alarm_secs = seconds;
	co_build_alarm_msg();
	alarm(seconds);
}

static void co_cleanup_tmpdir(void)
{
	DIR *d;
	struct dirent *e;
	char path[600];

	if (co_is_child || co_failed || !co_tmpdir[0])
		return;
	if (getenv("TEST_KEEP") && *getenv("TEST_KEEP")) {
		fprintf(stderr, "%s: stats files kept in %s\n", co_name, co_tmpdir);
		return;
	}
	d = opendir(co_tmpdir);
	if (d) {
		while ((e = readdir(d))) {
			if (e->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "%s/%s", co_tmpdir, e->d_name);
			unlink(path);
		}
		closedir(d);
	}
	rmdir(co_tmpdir);
}

uint64_t co_arg_u64(const char *s)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s || *end)
		co_fail("bad number argument \"%s\"", s);
	return v;
}

void co_init(int argc, char **argv, const char *name)
{
	const char *s, *pre;

	(void)argc;
	co_name = name;
	co_argv = argv;
	co_verbose = getenv("TEST_VERBOSE") && *getenv("TEST_VERBOSE") &&
		     strcmp(getenv("TEST_VERBOSE"), "0") != 0;
	/* The parent must never run under the shim. */
	pre = getenv("LD_PRELOAD");
	if (pre && strstr(pre, "coalesce")) {
		unsetenv("LD_PRELOAD");
		execv("/proc/self/exe", argv);
		co_fail("re-exec without LD_PRELOAD failed: %s", strerror(errno));
	}
	s = getenv("TEST_SEED");
	if (s && *s) {
		co_seed = co_arg_u64(s);
	} else {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		co_seed = co_mix64((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^
				   ((uint64_t)getpid() << 40)) % 1000000000000ULL;
	}
	co_build_alarm_msg();
	/* The parent handles EPIPE itself; children get SIG_DFL back in co_spawn. */
	signal(SIGPIPE, SIG_IGN);
	atexit(co_cleanup_tmpdir);
	if (co_shim_on())
		(void)co_lib(); /* fail early if the library is missing */
	co_info("seed %llu", (unsigned long long)co_seed);
}

void co_child_init(const char *name)
{
	const char *s = getenv("CO_TEST_SEED");

	co_is_child = 1;
	co_name = name;
	co_verbose = getenv("TEST_VERBOSE") && *getenv("TEST_VERBOSE") &&
		     strcmp(getenv("TEST_VERBOSE"), "0") != 0;
	if (!s)
		co_fail("CO_TEST_SEED not set (the child must be started by the test)");
	co_seed = co_arg_u64(s);
}

/* ---- streams ---------------------------------------------------------------------------- */

void co_stream_fill(uint64_t key, uint64_t off, void *buf, size_t len)
{
	unsigned char *p = buf;
	size_t i = 0;

	while (i < len && ((off + i) & 7))
		p[i] = co_stream_byte(key, off + i), i++;
	for (; i + 8 <= len; i += 8) {
		uint64_t v = co_mix64(key ^ co_mix64((off + i) >> 3));
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
		memcpy(p + i, &v, 8);
#else
		int k;

		for (k = 0; k < 8; k++)
			p[i + k] = (unsigned char)(v >> (8 * k));
#endif
	}
	for (; i < len; i++)
		p[i] = co_stream_byte(key, off + i);
}

size_t co_stream_check(uint64_t key, uint64_t off, const void *buf, size_t len)
{
	const unsigned char *p = buf;
	size_t i = 0;

	while (i < len && ((off + i) & 7)) {
		if (p[i] != co_stream_byte(key, off + i))
			return i;
		i++;
	}
	for (; i + 8 <= len; i += 8) {
		uint64_t v = co_mix64(key ^ co_mix64((off + i) >> 3)), w;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
		memcpy(&w, p + i, 8);
		if (v != w)
			break;
#else
		int k;

		for (k = 0; k < 8; k++)
			if (p[i + k] != (unsigned char)(v >> (8 * k)))
				goto slow;
#endif
	}
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
slow:
#endif
	for (; i < len; i++)
		if (p[i] != co_stream_byte(key, off + i))
			return i;
	return len;
}

uint32_t co_fnv32(const void *buf, size_t len)
{
	const unsigned char *p = buf;
	uint32_t h = 2166136261u;
	size_t i;

	for (i = 0; i < len; i++) {
		h ^= p[i];
		h *= 16777619u;
	}
	return h;
}

void co_stream_mismatch(const char *what, uint64_t key, uint64_t off, const unsigned char *buf,
			size_t avail)
{
	char exp[64] = "", got[64] = "", where[160] = "";
	size_t n = avail < 12 ? avail : 12, i;
	uint64_t lo, hi, o;

	for (i = 0; i < n; i++) {
		snprintf(exp + 3 * i, sizeof(exp) - 3 * i, "%02x ", co_stream_byte(key, off + i));
		snprintf(got + 3 * i, sizeof(got) - 3 * i, "%02x ", buf[i]);
	}
	/* Where in the stream do the received bytes come from? */
	if (n >= 8) {
		lo = off > (8u << 20) ? off - (8u << 20) : 0;
		hi = off + (8u << 20);
		snprintf(where, sizeof(where), "; the received bytes match no offset within 8 MiB");
		for (o = lo; o < hi; o++) {
			if (co_stream_byte(key, o) != buf[0])
				continue;
			if (co_stream_check(key, o, buf, n) == n) {
				snprintf(where, sizeof(where),
					 "; the received bytes are the stream's bytes at offset %llu (%s %llu bytes)",
					 (unsigned long long)o, o > off ? "skipped" : "repeated",
					 (unsigned long long)(o > off ? o - off : off - o));
				break;
			}
		}
	}
	co_fail("%s: byte mismatch at offset %llu: expected %02x got %02x (next bytes expected [%s] got [%s])%s",
		what, (unsigned long long)off, co_stream_byte(key, off), buf[0], exp, got, where);
}

/* ---- I/O -------------------------------------------------------------------------------- */

void co_write_all(int fd, const void *buf, size_t len, const char *what)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t r = write(fd, p, len);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			co_fail("%s: write failed: %s", what, strerror(errno));
		if (r == 0)
			co_fail("%s: write returned 0 for %zu bytes", what, len);
		p += r;
		len -= (size_t)r;
	}
}

size_t co_read_full(int fd, void *buf, size_t len, const char *what)
{
	char *p = buf;
	size_t got = 0;

	while (got < len) {
		ssize_t r = read(fd, p + got, len - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			co_fail("%s: read failed: %s", what, strerror(errno));
		if (r == 0)
			break;
		got += (size_t)r;
	}
	return got;
}

void co_recv_verify_stream(int fd, uint64_t key, uint64_t expected_total, const char *what)
{
	static unsigned char buf[256 * 1024];
	uint64_t off = 0;

	for (;;) {
		ssize_t r = read(fd, buf, sizeof(buf));
		size_t bad;

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			co_fail("%s: read failed after %llu bytes: %s", what, (unsigned long long)off,
				strerror(errno));
		if (r == 0)
			break;
		if (off + (uint64_t)r > expected_total)
			co_fail("%s: received more than the %llu bytes sent (%llu so far)", what,
				(unsigned long long)expected_total,
				(unsigned long long)(off + (uint64_t)r));
		bad = co_stream_check(key, off, buf, (size_t)r);
		if (bad < (size_t)r)
			co_stream_mismatch(what, key, off + bad, buf + bad, (size_t)r - bad);
		off += (uint64_t)r;
	}
	if (off != expected_total)
		co_fail("%s: EOF after %llu bytes, expected %llu (%llu bytes lost)", what,
			(unsigned long long)off, (unsigned long long)expected_total,
			(unsigned long long)(expected_total - off));
}

void co_set_nonblock(int fd, int on)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK) < 0)
		co_fail("fcntl(O_NONBLOCK) on fd %d: %s", fd, strerror(errno));
}

void co_set_cloexec(int fd, int on)
{
	int fl = fcntl(fd, F_GETFD);

	if (fl < 0 || fcntl(fd, F_SETFD, on ? fl | FD_CLOEXEC : fl & ~FD_CLOEXEC) < 0)
		co_fail("fcntl(FD_CLOEXEC) on fd %d: %s", fd, strerror(errno));
}

/* ---- sockets ---------------------------------------------------------------------------- */

static socklen_t co_loopback(int family, int port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;

		a->sin6_family = AF_INET6;
		a->sin6_addr = in6addr_loopback;
		a->sin6_port = htons((uint16_t)port);
		return sizeof(*a);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)ss;

		a->sin_family = AF_INET;
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		a->sin_port = htons((uint16_t)port);
		return sizeof(*a);
	}
}

int co_tcp_listen(int family, int *port)
{
	struct sockaddr_storage ss;
	socklen_t len = co_loopback(family, 0, &ss);
	int fd, one = 1, e;

	fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 256) < 0)
		goto err;
	len = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		goto err;
	*port = ntohs(family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
					 : ((struct sockaddr_in *)&ss)->sin_port);
	return fd;
err:
	e = errno;
	close(fd);
	errno = e;
	return -1;
}

int co_tcp_connect(int family, int port)
{
	struct sockaddr_storage ss;
	socklen_t len = co_loopback(family, port, &ss);
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0), e;

	if (fd < 0)
		return -1;
	while (connect(fd, (struct sockaddr *)&ss, len) < 0) {
		if (errno == EINTR)
			continue;
		e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

int co_tcp_pair(int family, int *client, int *server)
{
	int port, l = co_tcp_listen(family, &port), c, s, e;

	if (l < 0)
		return -1;
	c = co_tcp_connect(family, port);
	if (c < 0)
		goto err;
	do
		s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	while (s < 0 && errno == EINTR);
	if (s < 0) {
		e = errno;
		close(c);
		errno = e;
		goto err;
	}
	close(l);
	*client = c;
	*server = s;
	return 0;
err:
	e = errno;
	close(l);
	errno = e;
	return -1;
}

const char *co_ipv6_unavailable(void)
{
	static char why[128];
	int c, s;

	if (co_tcp_pair(AF_INET6, &c, &s) < 0) {
		snprintf(why, sizeof(why), "no IPv6 loopback (%s)", strerror(errno));
		return why;
	}
	close(c);
	close(s);
	return NULL;
}

int co_accept(int lfd, const char *what)
{
	int fd;

	for (;;) {
		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd >= 0)
			return fd;
		if (errno != EINTR && errno != ECONNABORTED)
			co_fail("%s: accept: %s", what, strerror(errno));
	}
}

/* ---- spawning --------------------------------------------------------------------------- */

int co_shim_on(void)
{
	const char *s = getenv("TEST_NO_SHIM");

	return !(s && *s && strcmp(s, "0") != 0);
}

/* COALESCE_LIB may list several libraries (spaces or colons between them,
 * as LD_PRELOAD does), e.g. "libasan.so build/asan/libcoalesce.so": each is
 * made absolute, and the list is kept in order. */
const char *co_lib(void)
{
	static char list[4 * PATH_MAX];
	char copy[4 * PATH_MAX], abs[PATH_MAX], *save = NULL, *tok;
	const char *lib;
	size_t len = 0;

	if (!co_shim_on())
		return NULL;
	if (list[0])
		return list;
	lib = getenv("COALESCE_LIB");
	if (!lib || !*lib)
		lib = "./build/libcoalesce.so";
	snprintf(copy, sizeof(copy), "%s", lib);
	for (tok = strtok_r(copy, " :", &save); tok; tok = strtok_r(NULL, " :", &save)) {
		if (!realpath(tok, abs)) {
			list[0] = '\0';
			co_fail("library not found: %s (%s); build it with make, or set COALESCE_LIB",
				tok, strerror(errno));
		}
		if (access(abs, R_OK) < 0)
			co_fail("library not readable: %s: %s", abs, strerror(errno));
		len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%s", len ? " " : "", abs);
		if (len >= sizeof(list))
			co_fail("COALESCE_LIB too long");
	}
	if (!list[0])
		co_fail("COALESCE_LIB is empty");
	return list;
}

static void co_add_kid(pid_t pid)
{
	int i;

	for (i = 0; i < CO_MAX_KIDS; i++) {
		if (co_kids[i] == 0) {
			co_kids[i] = pid;
			return;
		}
	}
}

static void co_del_kid(pid_t pid)
{
	int i;

	for (i = 0; i < CO_MAX_KIDS; i++)
		if (co_kids[i] == pid)
			co_kids[i] = 0;
}

static const char *co_make_tmpdir(void)
{
	const char *base;

	if (co_tmpdir[0])
		return co_tmpdir;
	base = getenv("TMPDIR");
	if (!base || !*base)
		base = "/tmp";
	snprintf(co_tmpdir, sizeof(co_tmpdir), "%s/coalesce-it-%s.XXXXXX", base, co_name);
	if (!mkdtemp(co_tmpdir)) {
		int e = errno;

		co_tmpdir[0] = '\0';
		co_fail("mkdtemp in %s: %s", base, strerror(e));
	}
	return co_tmpdir;
}

/* Returns 1 if env (NULL-terminated, may be NULL) has an entry starting
 * with prefix. */
static int env_sets(const char *const *env, const char *prefix)
{
	for (; env && *env; env++)
		if (!strncmp(*env, prefix, strlen(prefix)))
			return 1;
	return 0;
}

void co_spawn(struct co_child *c, const char *const *args, const struct co_fdmap *map, int n,
	      const char *const *env, int want_stats)
{
	char *argv[64], *envp[512];
	char seedvar[64], preload[PATH_MAX + 16], statsvar[600], tmpl[560];
	int na = 0, ne = 0, i, maxto = 2;
	char **e;
	pid_t pid;

	memset(c, 0, sizeof(*c));
	argv[na++] = co_argv[0];
	argv[na++] = (char *)CO_CHILD_FLAG;
	for (i = 0; args && args[i] && na < 62; i++)
		argv[na++] = (char *)args[i];
	argv[na] = NULL;

	for (e = environ; *e && ne < 480; e++) {
		if (!strncmp(*e, "LD_PRELOAD=", 11) || !strncmp(*e, "CO_TEST_SEED=", 13))
			continue;
		/* The flush backend of the run (run-tests.sh) is kept, unless
		 * the test chooses its own. */
		if (!strncmp(*e, "COALESCE_", 9) &&
		    (strncmp(*e, "COALESCE_BACKEND=", 17) || env_sets(env, "COALESCE_BACKEND=")))
			continue;
		envp[ne++] = *e;
	}
	snprintf(seedvar, sizeof(seedvar), "CO_TEST_SEED=%llu", (unsigned long long)co_seed);
	envp[ne++] = seedvar;
	if (co_shim_on()) {
		snprintf(preload, sizeof(preload), "LD_PRELOAD=%s", co_lib());
		envp[ne++] = preload;
	}
	tmpl[0] = '\0';
	if (want_stats) {
		snprintf(tmpl, sizeof(tmpl), "%s/%s-%d", co_make_tmpdir(), co_name,
			 co_stats_counter++);
		snprintf(statsvar, sizeof(statsvar), "COALESCE_STATS=%s.%%p.json", tmpl);
		envp[ne++] = statsvar;
	}
	for (i = 0; env && env[i] && ne < 510; i++)
		envp[ne++] = (char *)env[i];
	envp[ne] = NULL;
	for (i = 0; i < n; i++)
		if (map[i].to > maxto)
			maxto = map[i].to;

	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0)
		co_fail("fork: %s", strerror(errno));
	if (pid == 0) {
		int tmp[32], fd;
		sigset_t none;

		for (i = 0; i < n && i < 32; i++) {
			tmp[i] = fcntl(map[i].from, F_DUPFD, 1000);
			if (tmp[i] < 0) {
				perror("child setup: F_DUPFD");
				_exit(126);
			}
		}
		for (i = 0; i < n && i < 32; i++) {
			if (dup2(tmp[i], map[i].to) < 0) {
				perror("child setup: dup2");
				_exit(126);
			}
		}
		for (fd = 3; fd <= maxto; fd++) {
			int keep = 0;

			for (i = 0; i < n; i++)
				if (map[i].to == fd)
					keep = 1;
			if (!keep)
				close(fd);
		}
		close_range((unsigned)maxto + 1, ~0U, 0);
		signal(SIGPIPE, SIG_DFL);
		signal(SIGALRM, SIG_DFL);
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		alarm(0);
		execve("/proc/self/exe", argv, envp);
		perror("child setup: execve /proc/self/exe");
		_exit(127);
	}
	c->pid = pid;
	co_add_kid(pid);
	if (want_stats)
		snprintf(c->stats, sizeof(c->stats), "%s.%d.json", tmpl, (int)pid);
}

int co_wait(struct co_child *c)
{
	int st;

	if (c->pid <= 0)
		co_fail("co_wait: no child");
	while (waitpid(c->pid, &st, 0) < 0) {
		if (errno != EINTR)
			co_fail("waitpid(%d): %s", (int)c->pid, strerror(errno));
	}
	co_del_kid(c->pid);
	c->pid = -c->pid;
	return st;
}

const char *co_status_str(int st)
{
	static char buf[128];

	if (WIFEXITED(st))
		snprintf(buf, sizeof(buf), "exited with status %d", WEXITSTATUS(st));
	else if (WIFSIGNALED(st))
		snprintf(buf, sizeof(buf), "was killed by signal %d (%s)%s", WTERMSIG(st),
			 strsignal(WTERMSIG(st)), WCOREDUMP(st) ? ", core dumped" : "");
	else
		snprintf(buf, sizeof(buf), "wait status 0x%x", st);
	return buf;
}

void co_wait_ok(struct co_child *c, const char *what)
{
	int st = co_wait(c);

	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		co_fail("%s: the child under the shim %s", what, co_status_str(st));
}

void co_spawn_fds(struct co_child *c, const char *const *args, const char *const *env, int fd3,
		  int fd4)
{
	struct co_fdmap map[2] = { { fd3, 3 }, { fd4, 4 } };

	co_spawn(c, args, map, fd4 >= 0 ? 2 : 1, env, 1);
	close(fd3);
	if (fd4 >= 0)
		close(fd4);
}

int co_spawn_on_pair(struct co_child *c, const char *const *args, const char *const *env,
		     int fd4)
{
	int wfd, rfd;

	if (co_tcp_pair(AF_INET, &wfd, &rfd) < 0)
		co_fail("tcp pair: %s", strerror(errno));
	co_spawn_fds(c, args, env, wfd, fd4);
	return rfd;
}

void co_spawn_recv_stream(struct co_child *c, const char *const *args, const char *const *env,
			  uint64_t key, uint64_t total, const char *what)
{
	int rfd = co_spawn_on_pair(c, args, env, -1);

	co_phase("%s: receiving %llu bytes, then EOF", what, (unsigned long long)total);
	co_recv_verify_stream(rfd, key, total, what);
	close(rfd);
}

/* ---- stats ------------------------------------------------------------------------------ */

int co_stats_get(const struct co_child *c, const char *key, long long *val)
{
	char buf[16384], pat[128];
	FILE *f;
	size_t n;
	const char *p;

	if (!c->stats[0])
		return -1;
	f = fopen(c->stats, "r");
	if (!f)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	snprintf(pat, sizeof(pat), "\"%s\"", key);
	p = strstr(buf, pat);
	if (!p)
		return -2;
	p += strlen(pat);
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	if (*p != ':')
		return -2;
	p++;
	*val = strtoll(p, NULL, 10);
	return 0;
}

long long co_stats_need(const struct co_child *c, const char *key)
{
	long long v = 0;
	int r = co_stats_get(c, key, &v);

	if (r == -1)
		co_fail("stats file %s missing or unreadable (COALESCE_STATS not honoured, or the child did not exit normally)",
			c->stats[0] ? c->stats : "(not requested)");
	if (r == -2)
		co_fail("stats file %s has no key \"%s\"", c->stats, key);
	return v;
}

void co_stats_dump(const struct co_child *c, const char *what)
{
	static const char *const keys[] = {
		"writes_queued",  "writes_sent_along", "flush_syscalls", "flush_size",
		"flush_large",    "flush_deadline",    "flush_read",     "flush_wait",
		"flush_close",    "flush_order",       "flush_exit",     "flush_eagain",
		"deferred_errors", "passthrough_not_socket", "passthrough_flags", "bytes_dropped",
	};
	char line[1024] = "";
	size_t i, len = 0;
	long long v;

	if (!co_verbose || !co_shim_on())
		return;
	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		if (co_stats_get(c, keys[i], &v) == 0 && len < sizeof(line))
			len += (size_t)snprintf(line + len, sizeof(line) - len, " %s=%lld",
						keys[i], v);
	}
	fprintf(stderr, "%s: stats %s:%s\n", co_name, what, line);
}

void co_stats_expect_coalesced(const struct co_child *c, long long min_queued, long long ratio,
			       const char *what)
{
	long long wq, fs;

	if (!co_shim_on())
		return;
	co_stats_dump(c, what);
	wq = co_stats_need(c, "writes_queued");
	fs = co_stats_need(c, "flush_syscalls");
	if (wq < min_queued)
		co_fail("%s: stats writes_queued=%lld, expected at least %lld: the shim did not queue the small writes",
			what, wq, min_queued);
	if (wq > 0 && fs == 0)
		co_fail("%s: stats flush_syscalls=0 although writes_queued=%lld", what, wq);
	if (fs * ratio > wq)
		co_fail("%s: no coalescing: stats flush_syscalls=%lld for writes_queued=%lld (expected at most 1 flush per %lld queued writes)",
			what, fs, wq, ratio);
}

/* ---- a writer that meets EAGAIN ---------------------------------------------------------- */

/* The size of the writer's next call: mostly 1-256 bytes, sometimes up to
 * 4 KiB, and one in a hundred 32-64 KiB (not copied: goes out with the
 * queue). */
static size_t co_eagain_next_size(struct co_rng *r)
{
	unsigned x = (unsigned)co_range(r, 0, 999);

	if (x < 900)
		return co_range(r, 1, 256);
	if (x < 990)
		return co_range(r, 257, 4096);
	return co_range(r, 32768, 65536);
}

void co_eagain_write(uint64_t stream, const struct co_eagain_ops *ops)
{
	static unsigned char buf[65536];
	uint64_t off = 0, key = co_stream_key(stream);
	struct co_rng r;
	unsigned long eagain = 0, calls = 0, partial = 0;
	int fd = 3, ctl = 4;
	char line[128];

	co_rng_init(&r, co_seed, 77 + stream);
	while (off < CO_EAGAIN_TOTAL) {
		size_t size = co_eagain_next_size(&r);
		int api = (int)co_range(&r, 0, 2);
		ssize_t w;

		if (size > CO_EAGAIN_TOTAL - off)
			size = CO_EAGAIN_TOTAL - off;
		co_stream_fill(key, off, buf, size);
		calls++;
		w = ops->write(ops->arg, fd, buf, size, api);
		if (w > 0) {
			if ((size_t)w > size)
				co_fail("write of %zu returned %zd", size, w);
			if ((size_t)w < size)
				partial++;
			off += (uint64_t)w;
			continue;
		}
		if (w == 0)
			co_fail("write of %zu bytes at offset %llu returned 0", size,
				(unsigned long long)off);
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			co_fail("write of %zu bytes at offset %llu: %s", size,
				(unsigned long long)off, strerror(errno));
		if (eagain++ == 0)
			co_write_all(ctl, "A", 1, "control pipe");
		ops->wait_room(ops->arg, fd, eagain, off);
	}
	snprintf(line, sizeof(line), "eagain=%lu calls=%lu partial=%lu\n", eagain, calls, partial);
	co_write_all(ctl, line, strlen(line), "control pipe");
	if (close(fd) < 0)
		co_fail("close: %s", strerror(errno));
}

/* Reads and verifies up to max bytes (one read call) of the stream at *off;
 * returns 0 at EOF. */
static size_t co_eagain_recv_some(int fd, uint64_t key, uint64_t *off, size_t max)
{
	static unsigned char buf[256 * 1024];
	ssize_t r;
	size_t bad;

	if (max > sizeof(buf))
		max = sizeof(buf);
	do
		r = read(fd, buf, max);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		co_fail("read at offset %llu: %s", (unsigned long long)*off, strerror(errno));
	if (*off + (uint64_t)r > CO_EAGAIN_TOTAL)
		co_fail("received more than the %u bytes sent", CO_EAGAIN_TOTAL);
	bad = co_stream_check(key, *off, buf, (size_t)r);
	if (bad < (size_t)r)
		co_stream_mismatch("stream", key, *off + bad, buf + bad, (size_t)r - bad);
	*off += (uint64_t)r;
	return (size_t)r;
}

/* Reads nothing until the writer reports its first EAGAIN on ctl. */
static void co_eagain_await_first(int ctl, const struct co_eagain_variant *v)
{
	struct pollfd pfd = { .fd = ctl, .events = POLLIN };

	co_phase("%s: not reading: waiting for the writer to report its first EAGAIN", v->how);
	for (;;) {
		int k = poll(&pfd, 1, 10000);
		char ch;

		if (k < 0 && errno == EINTR)
			continue;
		if (k == 0)
			co_fail("%s: the writer never got EAGAIN within 10 s although nobody read its socket: %s blocked (or the shim queues without bound)",
				v->how, v->blocked);
		if (read(ctl, &ch, 1) != 1 || ch != 'A')
			co_fail("%s: the writer exited before reporting EAGAIN", v->how);
		break;
	}
}

void co_eagain_run(const struct co_eagain_variant *v)
{
	struct co_child c;
	char stream[16];
	const char *args[] = { stream, v->mode, NULL };
	const char *how = v->how;
	int wfd, rfd, ctl[2], i, sz = v->big ? 4 << 20 : 16384;
	uint64_t key = co_stream_key((uint64_t)v->stream), off = 0;
	char sum[256], *p;
	size_t n;
	unsigned long eagain = 0, calls = 0, partial = 0;

	snprintf(stream, sizeof(stream), "%d", v->stream);
	if (co_tcp_pair(AF_INET, &wfd, &rfd) < 0)
		co_fail("tcp pair: %s", strerror(errno));
	/* Small buffers: many EAGAIN / EPOLLOUT cycles while the reader is
	 * slow. Big ones, with a fast reader: the queue fills long before the
	 * socket does, and an EAGAIN there would be the shim's own (no edge
	 * would follow). */
	if (setsockopt(wfd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz)) < 0 ||
	    setsockopt(rfd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz)) < 0)
		co_fail("setsockopt SO_SNDBUF/SO_RCVBUF: %s", strerror(errno));
	if (pipe2(ctl, O_CLOEXEC) < 0)
		co_fail("pipe: %s", strerror(errno));
	co_spawn_fds(&c, args, NULL, wfd, ctl[1]);

	if (!v->big) {
		co_eagain_await_first(ctl[0], v);
		co_phase("%s: slow reads (offset %llu)", how, (unsigned long long)off);
		for (i = 0; i < 250; i++) {
			struct co_rng r;

			co_rng_init(&r, co_seed, 1000 + (uint64_t)i);
			if (co_eagain_recv_some(rfd, key, &off, co_range(&r, 512, 4096)) == 0)
				break;
			co_sleep_ms(2);
		}
	}
	co_phase("%s: fast reads (offset %llu)", how, (unsigned long long)off);
	while (co_eagain_recv_some(rfd, key, &off, 256 * 1024) > 0)
		;
	if (off != CO_EAGAIN_TOTAL)
		co_fail("%s: EOF after %llu bytes, expected %u (%llu lost)", how,
			(unsigned long long)off, CO_EAGAIN_TOTAL,
			(unsigned long long)(CO_EAGAIN_TOTAL - off));
	close(rfd);

	co_phase("%s: reading the writer's summary", how);
	n = co_read_full(ctl[0], sum, sizeof(sum) - 1, "control pipe");
	sum[n] = '\0';
	p = sum[0] == 'A' ? sum + 1 : sum;
	if (sscanf(p, "eagain=%lu calls=%lu partial=%lu", &eagain, &calls, &partial) != 3)
		co_fail("%s: bad summary from the writer: \"%s\"", how, sum);
	co_wait_ok(&c, how);
	co_info("%s: writer: %lu calls, %lu EAGAIN, %lu partial writes", how, calls, eagain,
		partial);
	if (!v->big && eagain == 0)
		co_fail("%s: the writer never saw EAGAIN: the test did not exercise it", how);
	co_stats_expect_coalesced(&c, (long long)calls / 4, 4, how);
	close(ctl[0]);
}

/* ---- misc ------------------------------------------------------------------------------- */

uint64_t co_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

void co_sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* ---- datagrams -------------------------------------------------------------------------- */

static uint64_t co_dgram_key(unsigned writer, unsigned dest, uint32_t seq)
{
	return co_mix64(co_seed * 131 + ((uint64_t)writer << 40) + ((uint64_t)dest << 32) + seq + 7);
}

void co_dgram_fill(void *buf, size_t len, unsigned writer, unsigned dest, uint32_t seq)
{
	unsigned char *p = buf;
	uint64_t key = co_dgram_key(writer, dest, seq);
	struct co_dgram_hdr h;

	if (len < CO_DGRAM_HDR) {
		co_stream_fill(key, 0, p, len);
		return;
	}
	co_stream_fill(key, CO_DGRAM_HDR, p + CO_DGRAM_HDR, len - CO_DGRAM_HDR);
	h.magic = CO_DGRAM_MAGIC;
	h.writer = (uint8_t)writer;
	h.dest = (uint8_t)dest;
	h.seq = seq;
	h.len = (uint32_t)len;
	h.sum = co_fnv32(p + CO_DGRAM_HDR, len - CO_DGRAM_HDR);
	memcpy(p, &h, sizeof(h));
}

socklen_t co_addr_parse(const char *text, struct sockaddr_storage *ss)
{
	struct sockaddr_un *u = (struct sockaddr_un *)ss;
	size_t n;

	memset(ss, 0, sizeof(*ss));
	if ((text[0] == '4' || text[0] == '6') && text[1] == ':')
		return co_loopback(text[0] == '6' ? AF_INET6 : AF_INET, (int)co_arg_u64(text + 2),
				   ss);
	n = strlen(text);
	if (text[0] != 'u' || text[1] != ':' || n < 3 || n - 2 >= sizeof(u->sun_path))
		co_fail("bad address \"%s\"", text);
	u->sun_family = AF_UNIX;
	memcpy(u->sun_path, text + 2, n - 2);
	if (text[2] != '@')
		return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n - 1);
	u->sun_path[0] = '\0';
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n - 2);
}

void co_addr_format(const struct sockaddr_storage *ss, socklen_t len, char *buf, size_t size)
{
	const struct sockaddr_un *u = (const struct sockaddr_un *)ss;
	size_t n;

	if (len <= sizeof(sa_family_t)) {
		snprintf(buf, size, "(unnamed)");
	} else if (ss->ss_family == AF_INET) {
		snprintf(buf, size, "4:%d", ntohs(((const struct sockaddr_in *)ss)->sin_port));
	} else if (ss->ss_family == AF_INET6) {
		snprintf(buf, size, "6:%d", ntohs(((const struct sockaddr_in6 *)ss)->sin6_port));
	} else if (ss->ss_family == AF_UNIX) {
		n = len - offsetof(struct sockaddr_un, sun_path);
		if (u->sun_path[0])
			snprintf(buf, size, "u:%.*s", (int)strnlen(u->sun_path, n), u->sun_path);
		else
			snprintf(buf, size, "u:@%.*s", (int)(n - 1), u->sun_path + 1);
	} else {
		snprintf(buf, size, "(family %d)", ss->ss_family);
	}
}

int co_addr_equal(const struct sockaddr_storage *a, socklen_t alen,
		  const struct sockaddr_storage *b, socklen_t blen)
{
	const struct sockaddr_in *a4 = (const void *)a, *b4 = (const void *)b;
	const struct sockaddr_in6 *a6 = (const void *)a, *b6 = (const void *)b;

	if (alen <= sizeof(sa_family_t) || blen <= sizeof(sa_family_t))
		return alen <= sizeof(sa_family_t) && blen <= sizeof(sa_family_t);
	if (a->ss_family != b->ss_family)
		return 0;
	if (a->ss_family == AF_INET)
		return a4->sin_port == b4->sin_port && a4->sin_addr.s_addr == b4->sin_addr.s_addr;
	if (a->ss_family == AF_INET6)
		return a6->sin6_port == b6->sin6_port &&
		       !memcmp(&a6->sin6_addr, &b6->sin6_addr, sizeof(a6->sin6_addr));
	return alen == blen && !memcmp(a, b, alen);
}

int co_dgram_socket(int family, int path, struct sockaddr_storage *ss, socklen_t *len)
{
	static int names;
	struct sockaddr_storage a;
	struct sockaddr_un *u = (struct sockaddr_un *)&a;
	socklen_t l;
	int fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		co_fail("socket(family %d, SOCK_DGRAM): %s", family, strerror(errno));
	memset(&a, 0, sizeof(a));
	if (family != AF_UNIX) {
		l = co_loopback(family, 0, &a);
	} else if (path) {
		char p[PATH_MAX];

		snprintf(p, sizeof(p), "%s/dg-%d", co_make_tmpdir(), names++);
		if (strlen(p) >= sizeof(u->sun_path))
			co_fail("socket path too long: %s", p);
		u->sun_family = AF_UNIX;
		memcpy(u->sun_path, p, strlen(p) + 1);
		l = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(p) + 1);
	} else {
		u->sun_family = AF_UNIX;
		snprintf(u->sun_path + 1, sizeof(u->sun_path) - 1, "coalesce-it-%d-%d",
			 (int)getpid(), names++);
		l = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(u->sun_path + 1));
	}
	if (bind(fd, (struct sockaddr *)&a, l) < 0)
		co_fail("bind a datagram socket (family %d): %s", family, strerror(errno));
	if (ss) {
		*len = sizeof(*ss);
		if (getsockname(fd, (struct sockaddr *)ss, len) < 0)
			co_fail("getsockname: %s", strerror(errno));
	}
	return fd;
}

static int co_sockopt_int(int fd, int level, int name)
{
	int v = 0;
	socklen_t l = sizeof(v);

	if (getsockopt(fd, level, name, &v, &l) < 0)
		co_fail("getsockopt(%d, %d) on fd %d: %s", level, name, fd, strerror(errno));
	return v;
}

void co_dgram_rx_setup(int fd)
{
	int one = 1, size = 8 << 20, family = co_sockopt_int(fd, SOL_SOCKET, SO_DOMAIN);

	if (setsockopt(fd, SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof(one)) < 0)
		co_fail("setsockopt(SO_RXQ_OVFL): %s", strerror(errno));
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size)) < 0 &&
	    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size)) < 0)
		co_fail("setsockopt(SO_RCVBUF): %s", strerror(errno));
	if (family == AF_INET && setsockopt(fd, IPPROTO_IP, IP_RECVTOS, &one, sizeof(one)) < 0)
		co_fail("setsockopt(IP_RECVTOS): %s", strerror(errno));
	if (family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_RECVTCLASS, &one, sizeof(one)) < 0)
		co_fail("setsockopt(IPV6_RECVTCLASS): %s", strerror(errno));
}

static void co_dgram_cmsgs(struct msghdr *mh, struct co_dgram_msg *m)
{
	struct cmsghdr *c;
	int v;

	m->drops = 0;
	m->tos = -1;
	for (c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL) {
			memcpy(&m->drops, CMSG_DATA(c), sizeof(m->drops));
		} else if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_TOS) {
			m->tos = *(const unsigned char *)CMSG_DATA(c);
		} else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_TCLASS) {
			memcpy(&v, CMSG_DATA(c), sizeof(v));
			m->tos = v;
		}
	}
}

/* A SOCK_SEQPACKET socket reads 0 bytes at its end, as for an empty record:
 * the tests send no empty records there, so 0 means the end. */
int co_dgram_recv(int fd, unsigned char *buf, size_t cap, int flags, struct co_dgram_msg *m)
{
	union {
		char b[256];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { buf, cap };
	struct msghdr mh;
	ssize_t r;

	for (;;) {
		memset(&mh, 0, sizeof(mh));
		mh.msg_name = &m->from;
		mh.msg_namelen = sizeof(m->from);
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		mh.msg_control = ctl.b;
		mh.msg_controllen = sizeof(ctl.b);
		r = recvmsg(fd, &mh, flags | MSG_TRUNC);
		if (r >= 0)
			break;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return 0;
		if (errno != EINTR)
			co_fail("recvmsg on fd %d: %s", fd, strerror(errno));
	}
	if (r == 0 && co_sockopt_int(fd, SOL_SOCKET, SO_TYPE) == SOCK_SEQPACKET)
		return 0;
	m->len = (size_t)r;
	m->trunc = (mh.msg_flags & MSG_TRUNC) || (size_t)r > cap;
	m->fromlen = mh.msg_namelen;
	co_dgram_cmsgs(&mh, m);
	return 1;
}

struct co_dgram_exp {
	uint32_t seq;
	uint32_t len;
	int tos;
};

struct co_dgram_list {
	struct co_dgram_exp *v;
	uint32_t n, next, cap;
};

struct co_dgram_check {
	const char *what;
	int nrx, nw;
	int rx[CO_DGRAM_DESTS];
	int rxfamily[CO_DGRAM_DESTS];
	struct sockaddr_storage rxaddr[CO_DGRAM_DESTS];
	socklen_t rxlen[CO_DGRAM_DESTS];
	/* Probe sockets (IPv4, IPv6), opened when first needed. */
	int probe[2];
	struct sockaddr_storage probeaddr[2];
	socklen_t probelen[2];
	struct sockaddr_storage waddr[CO_DGRAM_WRITERS];
	socklen_t wlen[CO_DGRAM_WRITERS];
	struct co_dgram_list exp[CO_DGRAM_WRITERS][CO_DGRAM_DESTS];
	uint32_t drops[CO_DGRAM_DESTS];   /* the highest SO_RXQ_OVFL count seen */
	uint32_t skipped[CO_DGRAM_DESTS]; /* expected datagrams passed over as kernel drops */
	uint64_t expected, received;
	unsigned char buf[CO_DGRAM_MAX], want[CO_DGRAM_MAX];
};

/* What co_dgram_writer_of returns for a probe datagram. */
#define CO_DGRAM_PROBE (-2)

struct co_dgram_check *co_dgram_check_new(const char *what)
{
	struct co_dgram_check *k = calloc(1, sizeof(*k));

	if (!k)
		co_fail("out of memory");
	k->what = what;
	k->probe[0] = k->probe[1] = -1;
	return k;
}

void co_dgram_check_free(struct co_dgram_check *k)
{
	int w, d;

	for (w = 0; w < CO_DGRAM_WRITERS; w++)
		for (d = 0; d < CO_DGRAM_DESTS; d++)
			free(k->exp[w][d].v);
	for (d = 0; d < 2; d++)
		if (k->probe[d] >= 0)
			close(k->probe[d]);
	for (d = 0; d < k->nrx; d++)
		close(k->rx[d]);
	free(k);
}

int co_dgram_add_rx(struct co_dgram_check *k, int fd)
{
	int d = k->nrx;

	if (d == CO_DGRAM_DESTS)
		co_fail("%s: too many receivers", k->what);
	k->rx[d] = fd;
	k->rxfamily[d] = co_sockopt_int(fd, SOL_SOCKET, SO_DOMAIN);
	k->rxlen[d] = sizeof(k->rxaddr[d]);
	if (getsockname(fd, (struct sockaddr *)&k->rxaddr[d], &k->rxlen[d]) < 0)
		co_fail("getsockname: %s", strerror(errno));
	k->nrx++;
	return d;
}

int co_dgram_add_writer(struct co_dgram_check *k, const struct sockaddr_storage *ss,
			socklen_t len)
{
	int w = k->nw;

	if (w == CO_DGRAM_WRITERS)
		co_fail("%s: too many writers", k->what);
	if (len)
		memcpy(&k->waddr[w], ss, len);
	k->wlen[w] = len;
	k->nw++;
	return w;
}

uint64_t co_dgram_expect(struct co_dgram_check *k, unsigned writer, unsigned dest, uint32_t seq,
			 size_t len, int tos)
{
	struct co_dgram_list *l;

	if (writer >= CO_DGRAM_WRITERS || dest >= CO_DGRAM_DESTS || len > CO_DGRAM_MAX)
		co_fail("%s: bad expectation (writer %u, dest %u, %zu bytes)", k->what, writer, dest,
			len);
	l = &k->exp[writer][dest];
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 256;
		l->v = realloc(l->v, l->cap * sizeof(*l->v));
		if (!l->v)
			co_fail("out of memory");
	}
	l->v[l->n].seq = seq;
	l->v[l->n].len = (uint32_t)len;
	l->v[l->n].tos = tos;
	l->n++;
	return ++k->expected;
}

static int co_dgram_is_probe(const struct co_dgram_check *k, const struct co_dgram_msg *m)
{
	int i;

	for (i = 0; i < 2; i++)
		if (k->probe[i] >= 0 &&
		    co_addr_equal(&m->from, m->fromlen, &k->probeaddr[i], k->probelen[i]))
			return 1;
	return 0;
}

static int co_dgram_header(const unsigned char *buf, const struct co_dgram_msg *m,
			   struct co_dgram_hdr *h)
{
	if (m->len < CO_DGRAM_HDR || m->trunc)
		return 0;
	memcpy(h, buf, sizeof(*h));
	return h->magic == CO_DGRAM_MAGIC;
}

/* The writer of a datagram that receiver d got, or CO_DGRAM_PROBE. */
static int co_dgram_writer_of(const struct co_dgram_check *k, int d, const struct co_dgram_msg *m)
{
	struct co_dgram_hdr h;
	char from[128];
	int w;

	if (co_dgram_is_probe(k, m))
		return CO_DGRAM_PROBE;
	co_addr_format(&m->from, m->fromlen, from, sizeof(from));
	if (k->nw > 0) {
		for (w = 0; w < k->nw; w++)
			if (co_addr_equal(&m->from, m->fromlen, &k->waddr[w], k->wlen[w]))
				return w;
		co_fail("%s: receiver %d got a %zu-byte datagram from %s, which is none of the writers",
			k->what, d, m->len, from);
	}
	if (!co_dgram_header(k->buf, m, &h) || h.writer >= CO_DGRAM_WRITERS)
		co_fail("%s: receiver %d got a %zu-byte datagram from %s without a valid header (first bytes %02x %02x %02x %02x)",
			k->what, d, m->len, from, k->buf[0], k->buf[1], k->buf[2], k->buf[3]);
	return h.writer;
}

static int co_dgram_matches(struct co_dgram_check *k, int w, int d, const struct co_dgram_exp *e,
			    const struct co_dgram_msg *m)
{
	if (m->trunc || m->len != e->len)
		return 0;
	co_dgram_fill(k->want, e->len, (unsigned)w, (unsigned)d, e->seq);
	return !memcmp(k->buf, k->want, e->len);
}

/* Explains how a datagram that matches none of those allowed differs from
 * the one expected, then fails. */
__attribute__((noreturn)) static void co_dgram_mismatch(struct co_dgram_check *k, int w, int d,
							 const struct co_dgram_msg *m)
{
	const struct co_dgram_list *l = &k->exp[w][d];
	const struct co_dgram_exp *e = l->next < l->n ? &l->v[l->next] : NULL;
	struct co_dgram_hdr h;
	char exp[128], why[200];
	size_t i;

	if (e)
		snprintf(exp, sizeof(exp), "expected next: seq %u, %u bytes", e->seq, e->len);
	else
		snprintf(exp, sizeof(exp), "expected nothing more (all %u arrived)", l->n);
	if (!co_dgram_header(k->buf, m, &h)) {
		snprintf(why, sizeof(why), "a %zu-byte datagram without a header%s", m->len,
			 m->trunc ? " (truncated)" : "");
	} else if (h.writer != w || h.dest != d) {
		snprintf(why, sizeof(why), "seq %u that writer %u addressed to receiver %u: misdirected",
			 h.seq, h.writer, h.dest);
	} else if (h.len != m->len) {
		snprintf(why, sizeof(why), "seq %u sent as %u bytes but received as %zu: datagram boundaries changed",
			 h.seq, h.len, m->len);
	} else if (e && h.seq == e->seq) {
		co_dgram_fill(k->want, m->len, (unsigned)w, (unsigned)d, h.seq);
		for (i = 0; i < m->len && k->buf[i] == k->want[i]; i++)
			;
		snprintf(why, sizeof(why), "seq %u with %zu bytes, but byte %zu differs (%02x, expected %02x)",
			 h.seq, m->len, i, i < m->len ? k->buf[i] : 0, i < m->len ? k->want[i] : 0);
	} else {
		snprintf(why, sizeof(why), "seq %u (%zu bytes): %s", h.seq, m->len,
			 e && h.seq > e->seq ? "datagrams before it are missing (lost or reordered)"
					     : "a duplicate or out of order");
	}
	co_fail("%s: receiver %d got from writer %d %s; %s (kernel drops on this receiver: %u)",
		k->what, d, w, why, exp, k->drops[d]);
}

/* Checks one datagram that receiver d got (in k->buf). Returns 1 if it was
 * a probe. */
static int co_dgram_take(struct co_dgram_check *k, int d, const struct co_dgram_msg *m)
{
	int w = co_dgram_writer_of(k, d, m);
	struct co_dgram_list *l;
	const struct co_dgram_exp *e;
	uint32_t slack, j;

	if (m->drops > k->drops[d])
		k->drops[d] = m->drops;
	if (w == CO_DGRAM_PROBE)
		return 1;
	l = &k->exp[w][d];
	slack = k->drops[d] - k->skipped[d];
	for (j = 0; j <= slack && l->next + j < l->n; j++) {
		e = &l->v[l->next + j];
		if (!co_dgram_matches(k, w, d, e, m))
			continue;
		if (e->tos >= 0 && m->tos != e->tos)
			co_fail("%s: receiver %d: datagram seq %u of writer %d carried TOS 0x%02x, expected 0x%02x",
				k->what, d, e->seq, w, (unsigned)m->tos, (unsigned)e->tos);
		k->skipped[d] += j;
		l->next += j + 1;
		k->received++;
		return 0;
	}
	co_dgram_mismatch(k, w, d, m);
}

/* Reads what receiver d has now; returns how many datagrams, and sets
 * *probe if one of them was a probe. */
static int co_dgram_drain(struct co_dgram_check *k, int d, int *probe)
{
	struct co_dgram_msg m;
	int n = 0;

	while (co_dgram_recv(k->rx[d], k->buf, sizeof(k->buf), MSG_DONTWAIT, &m)) {
		if (co_dgram_take(k, d, &m))
			*probe = 1;
		n++;
	}
	return n;
}

/* Sends a probe to UDP receiver d from a socket of the check's own and
 * reads until it arrives: everything sent before it has then been read,
 * and the probe carries the receiver's drop count. */
static void co_dgram_probe_one(struct co_dgram_check *k, int d)
{
	int i = k->rxfamily[d] == AF_INET6, seen = 0;
	struct pollfd p = { .fd = k->rx[d], .events = POLLIN };
	uint64_t t0 = co_now_ns();

	if (k->probe[i] < 0)
		k->probe[i] = co_dgram_socket(k->rxfamily[d], 0, &k->probeaddr[i], &k->probelen[i]);
	if (sendto(k->probe[i], "p", 1, 0, (struct sockaddr *)&k->rxaddr[d], k->rxlen[d]) != 1)
		co_fail("%s: probe to receiver %d: %s", k->what, d, strerror(errno));
	while (!seen) {
		co_dgram_drain(k, d, &seen);
		if (seen)
			break;
		if (co_now_ns() - t0 > 2000000000ULL)
			co_fail("%s: the probe datagram sent to receiver %d never arrived", k->what,
				d);
		if (poll(&p, 1, 100) < 0 && errno != EINTR)
			co_fail("poll: %s", strerror(errno));
	}
}

static void co_dgram_probe_all(struct co_dgram_check *k)
{
	int d;

	for (d = 0; d < k->nrx; d++)
		if (k->rxfamily[d] == AF_INET || k->rxfamily[d] == AF_INET6)
			co_dgram_probe_one(k, d);
}

/* Datagrams that arrived or that the kernel reports dropped. */
static uint64_t co_dgram_done(const struct co_dgram_check *k)
{
	uint64_t n = k->received;
	int d;

	for (d = 0; d < k->nrx; d++)
		n += k->drops[d];
	return n;
}

__attribute__((noreturn)) static void co_dgram_fail_missing(const struct co_dgram_check *k,
							     const char *headline)
{
	char list[1200];
	size_t len = 0;
	uint32_t drops = 0;
	int w, d;

	list[0] = '\0';
	for (d = 0; d < k->nrx; d++)
		drops += k->drops[d];
	for (w = 0; w < CO_DGRAM_WRITERS; w++) {
		for (d = 0; d < CO_DGRAM_DESTS; d++) {
			const struct co_dgram_list *l = &k->exp[w][d];

			if (l->next < l->n && len < sizeof(list) - 160)
				len += (size_t)snprintf(list + len, sizeof(list) - len,
							"\n    writer %d -> receiver %d: %u of %u arrived; first missing: seq %u (%u bytes)",
							w, d, l->next, l->n, l->v[l->next].seq,
							l->v[l->next].len);
		}
	}
	co_fail("%s: %s: %llu of the %llu datagrams expected in all arrived, the kernel reports %u dropped:%s",
		k->what, headline, (unsigned long long)k->received, (unsigned long long)k->expected,
		drops, list);
}

void co_dgram_recv_until(struct co_dgram_check *k, uint64_t target, unsigned idle_ms)
{
	struct pollfd p[CO_DGRAM_DESTS];
	uint64_t last = co_now_ns(), idle, probe_at = 20;
	int d, got, probe = 0;
	char headline[128];

	while (co_dgram_done(k) < target) {
		for (d = 0; d < k->nrx; d++) {
			p[d].fd = k->rx[d];
			p[d].events = POLLIN;
			p[d].revents = 0;
		}
		if (poll(p, (nfds_t)k->nrx, 10) < 0 && errno != EINTR)
			co_fail("poll: %s", strerror(errno));
		for (got = 0, d = 0; d < k->nrx; d++)
			if (p[d].revents)
				got += co_dgram_drain(k, d, &probe);
		if (got) {
			last = co_now_ns();
			probe_at = 20;
			continue;
		}
		/* Nothing new: the kernel may have dropped what is missing,
		 * which only a later datagram tells; probes find out. */
		idle = (co_now_ns() - last) / 1000000;
		if (idle > idle_ms) {
			snprintf(headline, sizeof(headline),
				 "no datagram for %u ms while waiting for the first %llu", idle_ms,
				 (unsigned long long)target);
			co_dgram_fail_missing(k, headline);
		}
		if (idle >= probe_at) {
			co_dgram_probe_all(k);
			probe_at = idle + 100;
		} else {
			co_sleep_ms(1); /* a SOCK_SEQPACKET end at EOF polls readable */
		}
	}
}

void co_dgram_finish(struct co_dgram_check *k)
{
	uint64_t missing;
	int w, d, probe = 0;

	co_dgram_probe_all(k);
	for (d = 0; d < k->nrx; d++)
		if (k->rxfamily[d] != AF_INET && k->rxfamily[d] != AF_INET6)
			co_dgram_drain(k, d, &probe);
	for (d = 0; d < k->nrx; d++) {
		for (missing = 0, w = 0; w < CO_DGRAM_WRITERS; w++)
			missing += k->exp[w][d].n - k->exp[w][d].next;
		if (missing > k->drops[d] - k->skipped[d])
			co_dgram_fail_missing(k, "datagrams lost that the kernel did not drop");
		if (k->drops[d])
			co_note("%s: receiver %d: the kernel dropped %u datagram(s) on a full receive queue (SO_RXQ_OVFL); not counted against the shim",
				k->what, d, k->drops[d]);
	}
}

static int co_dgram_shortfalls;
static char co_dgram_first_shortfall[512];

__attribute__((format(printf, 1, 2))) static void co_dgram_shortfall(const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	co_note("stats check: %s", msg);
	if (co_dgram_shortfalls++ == 0)
		snprintf(co_dgram_first_shortfall, sizeof(co_dgram_first_shortfall), "%s", msg);
}

int co_dgram_add_receiver(struct co_dgram_check *k, int family, int path, char *text,
			  size_t size)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int fd = co_dgram_socket(family, path, &ss, &len);

	co_dgram_rx_setup(fd);
	co_addr_format(&ss, len, text, size);
	return co_dgram_add_rx(k, fd);
}

void co_dgram_run_child(struct co_dgram_check *k, const char *const *args,
			const struct co_fdmap *map, int n, const char *const *env, uint64_t total,
			int batched, const char *what)
{
	struct co_child c;
	int i;

	co_spawn(&c, args, map, n, env, 1);
	for (i = 0; i < n; i++)
		close(map[i].from);
	co_phase("%s: receiving %llu datagrams", what, (unsigned long long)total);
	co_dgram_recv_until(k, total, 5000);
	co_phase("%s: waiting for the writer", what);
	co_wait_ok(&c, what);
	co_phase("%s: checking that nothing else arrives", what);
	co_dgram_finish(k);
	co_dgram_expect_coalesced(&c, batched, what);
}

void co_dgram_expect_coalesced(const struct co_child *c, int batched, const char *what)
{
	long long queued = 0, mmsg = 0, gso = 0;
	int r;

	if (!co_shim_on())
		return;
	r = co_stats_get(c, "dgrams_queued", &queued);
	if (r == -1)
		co_fail("%s: stats file %s missing or unreadable (COALESCE_STATS not honoured, or the child did not exit normally)",
			what, c->stats);
	co_stats_get(c, "dgram_flush_sendmmsg", &mmsg);
	co_stats_get(c, "dgram_flush_gso", &gso);
	co_info("%s: stats dgrams_queued=%lld dgram_flush_sendmmsg=%lld dgram_flush_gso=%lld", what,
		queued, mmsg, gso);
	if (r == -2)
		co_dgram_shortfall("%s: no \"dgrams_queued\" in the stats: the shim does not queue datagrams",
				   what);
	else if (queued <= 0)
		co_dgram_shortfall("%s: stats dgrams_queued=%lld: the shim queued no datagram", what,
				   queued);
	else if (batched && mmsg + gso <= 0)
		co_dgram_shortfall("%s: stats dgram_flush_sendmmsg + dgram_flush_gso = 0: no flush sent several datagrams at once",
				   what);
}

void co_dgram_stats_verdict(void)
{
	if (co_dgram_shortfalls == 0)
		return;
	co_phase("checking the stats of every run (datagram coalescing)");
	co_fail("%d run(s) did not show datagram coalescing in the stats; the first: %s",
		co_dgram_shortfalls, co_dgram_first_shortfall);
}
