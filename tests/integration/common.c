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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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
		if (!strncmp(*e, "LD_PRELOAD=", 11) || !strncmp(*e, "COALESCE_", 9) ||
		    !strncmp(*e, "CO_TEST_SEED=", 13))
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
