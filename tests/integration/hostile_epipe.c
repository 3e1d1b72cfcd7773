/* hostile_epipe: the peer goes away while the writer (under the shim) has
 * bytes queued, and the writer must see what it would have seen without the
 * shim: the same kind of error, the same SIGPIPE behaviour, and no hang.
 *
 * Every variant runs twice, with the same seed: once without the shim (the
 * reference: what the kernel alone does) and once under it, and the two
 * outcomes must be of the same kind (died of SIGPIPE or not; which errors;
 * whether a handler ran). Under TEST_NO_SHIM=1 both runs are references.
 *
 * Each run: the writer makes 50 small writes (deadline 1 s, COALESCE_DIRECT=0:
 * under the shim they are all queued), says so on a pipe, and waits for the
 * peer without reading and without a blocking wait (poll with timeout 0 and
 * nanosleep: neither flushes). The peer then either drains what arrived and
 * closes ("close": a FIN, or a reset if bytes were left unread), or resets
 * the connection (SO_LINGER 0, "reset"), and tells the writer on a pipe.
 *
 * Write variants (the writer then goes on writing records of mixed sizes,
 * with write, send, writev and sendmsg in turn, until it sees EPIPE):
 *   ignore:   SIGPIPE ignored: calls fail with EPIPE (ECONNRESET may come
 *             first, as the kernel does); no signal;
 *   handler:  a SIGPIPE handler: each call that returns EPIPE ran the
 *             handler exactly once, and no other call ran it;
 *   default:  SIGPIPE default: the writer dies of SIGPIPE, and no call ever
 *             returns EPIPE;
 *   nosignal: SIGPIPE default, every call send/sendmsg(MSG_NOSIGNAL): no
 *             death, EPIPE returned.
 * Read variants (SIGPIPE ignored, peer reset, the bytes still queued):
 *   read:     the writer reads the socket: without the shim read fails with
 *             ECONNRESET; it must not become a clean EOF under the shim;
 *   poll:     the writer polls the socket for POLLIN, then reads SO_ERROR:
 *             POLLERR and SO_ERROR=ECONNRESET must be what they are without
 *             the shim.
 * The writer reports each error and a summary on a status pipe (pipe writes
 * are not coalesced). */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NAME "hostile_epipe"
#define FIRST_WRITES 50
#define MAX_WRITES 200000
#define GIVE_UP_NS (8ULL * 1000000000ULL)
#define MAX_OK_AFTER_ERROR 2000
#define BIG_MAX (100 * 1024)

enum sigmode { SM_IGNORE, SM_HANDLER, SM_DEFAULT, SM_NOSIGNAL };
enum peermode { PM_CLOSE, PM_RESET };
enum action { ACT_WRITE, ACT_READ, ACT_POLL };

struct variant {
	enum sigmode sig;
	enum peermode peer;
	enum action act;
	const char *name;
};

static const struct variant variants[] = {
	{ SM_IGNORE, PM_CLOSE, ACT_WRITE, "ignore/close" },
	{ SM_IGNORE, PM_RESET, ACT_WRITE, "ignore/reset" },
	{ SM_HANDLER, PM_CLOSE, ACT_WRITE, "handler/close" },
	{ SM_HANDLER, PM_RESET, ACT_WRITE, "handler/reset" },
	{ SM_DEFAULT, PM_CLOSE, ACT_WRITE, "default/close" },
	{ SM_DEFAULT, PM_RESET, ACT_WRITE, "default/reset" },
	{ SM_NOSIGNAL, PM_CLOSE, ACT_WRITE, "nosignal/close" },
	{ SM_NOSIGNAL, PM_RESET, ACT_WRITE, "nosignal/reset" },
	{ SM_IGNORE, PM_RESET, ACT_READ, "read-after-reset" },
	{ SM_IGNORE, PM_RESET, ACT_POLL, "poll-after-reset" },
};
#define NVARIANTS (int)(sizeof(variants) / sizeof(variants[0]))

/* Child exit codes besides 0 (reported by name in the parent). */
#define EXIT_EPIPE_NOSIG 20  /* default: a call returned EPIPE and the writer lived */
#define EXIT_NEVER_FAILED 21 /* no call failed although the peer was gone */
#define EXIT_SURVIVED 22     /* default: still alive at the end */
#define EXIT_BAD_ERRNO 23    /* an error other than EPIPE/ECONNRESET */
#define EXIT_BAD_SIGNAL 24   /* handler: SIGPIPE without EPIPE, or EPIPE without SIGPIPE */
#define EXIT_NO_EPIPE 25     /* EPIPE never came */
#define EXIT_SWALLOWED 26    /* too many writes succeeded after an error */

/* ---- the writer (child) ----------------------------------------------------------------- */

static volatile sig_atomic_t sigpipes;

static void on_sigpipe(int sig)
{
	(void)sig;
	sigpipes++;
}

static void status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void status(const char *fmt, ...)
{
	char line[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0 || n >= (int)sizeof(line))
		_exit(2);
	co_write_all(5, line, (size_t)n, "status pipe");
}

/* Waits until the control pipe (fd 4) is readable, without reading it and
 * without any call that flushes: poll with a zero timeout, then sleep. */
static void wait_ctl_without_flush(void)
{
	uint64_t start = co_now_ns();

	for (;;) {
		struct pollfd p = { .fd = 4, .events = POLLIN };

		if (poll(&p, 1, 0) == 1)
			return;
		if (co_now_ns() - start > 10ULL * 1000000000ULL)
			co_fail("the peer never said it was gone");
		co_sleep_ms(1);
	}
}

static size_t record_size(struct co_rng *r)
{
	unsigned x = (unsigned)co_range(r, 0, 99);

	if (x < 80)
		return co_range(r, 1, 200);
	if (x < 95)
		return co_range(r, 201, 8192);
	return co_range(r, 32768, BIG_MAX);
}

/* One call writing len bytes of buf with api n % 4 (nosignal: n % 2). */
static ssize_t one_write(enum sigmode sm, unsigned long n, unsigned char *buf, size_t len)
{
	struct iovec iov[2];
	struct msghdr msg;
	size_t half = len / 2;

	iov[0].iov_base = buf;
	iov[0].iov_len = half;
	iov[1].iov_base = buf + half;
	iov[1].iov_len = len - half;
	memset(&msg, 0, sizeof(msg));
	msg.msg_iov = iov;
	msg.msg_iovlen = 2;
	if (sm == SM_NOSIGNAL)
		return (n & 1) ? sendmsg(3, &msg, MSG_NOSIGNAL) : send(3, buf, len, MSG_NOSIGNAL);
	switch (n % 4) {
	case 0:
		return write(3, buf, len);
	case 1:
		return send(3, buf, len, 0);
	case 2:
		return writev(3, iov, 2);
	default:
		return sendmsg(3, &msg, 0);
	}
}

static int child_write_on(const struct variant *vp, uint64_t key, uint64_t off, struct co_rng *r)
{
	static unsigned char buf[BIG_MAX];
	uint64_t start = co_now_ns();
	unsigned long n, ok_after = 0, max_ok_run = 0, run = 0;
	int errors = 0, first = 0, saw_epipe = 0, saw_reset = 0, bad_signal = 0;

	for (n = 0; n < MAX_WRITES && co_now_ns() - start < GIVE_UP_NS; n++) {
		size_t len = record_size(r);
		sig_atomic_t before = sigpipes, ran;
		ssize_t w;
		int e;

		co_stream_fill(key, off, buf, len);
		w = one_write(vp->sig, n, buf, len);
		e = errno;
		ran = sigpipes - before;
		if (vp->sig == SM_HANDLER &&
		    ran != ((w < 0 && e == EPIPE) ? 1 : 0)) {
			bad_signal++;
			status("B call %lu returned %zd (%s) and ran the SIGPIPE handler %d times\n", n,
			       w, w < 0 ? strerror(e) : "ok", (int)ran);
		}
		if (w >= 0) {
			if ((size_t)w > len)
				co_fail("write %lu of %zu bytes returned %zd", n, len, w);
			off += (uint64_t)w;
			if (errors) {
				ok_after++;
				if (++run > max_ok_run)
					max_ok_run = run;
			}
			continue;
		}
		if (e == EINTR || e == EAGAIN)
			co_fail("write %lu: %s on a blocking socket without signals", n, strerror(e));
		run = 0;
		status("E %d\n", e);
		if (!errors)
			first = e;
		errors++;
		if (e != EPIPE && e != ECONNRESET) {
			status("R errors=%d first=%d epipe=%d reset=%d sigpipes=%d bad=%d okafter=%lu maxrun=%lu\n",
			       errors, first, saw_epipe, saw_reset, (int)sigpipes, bad_signal, ok_after,
			       max_ok_run);
			return EXIT_BAD_ERRNO;
		}
		if (e == ECONNRESET)
			saw_reset = 1;
		if (e == EPIPE) {
			/* (SIGPIPE default: returned EPIPE and still alive.) */
			saw_epipe = 1;
			break;
		}
	}
	status("R errors=%d first=%d epipe=%d reset=%d sigpipes=%d bad=%d okafter=%lu maxrun=%lu\n",
	       errors, first, saw_epipe, saw_reset, (int)sigpipes, bad_signal, ok_after, max_ok_run);
	if (vp->sig == SM_DEFAULT)
		return saw_epipe ? EXIT_EPIPE_NOSIG : EXIT_SURVIVED;
	if (!errors)
		return EXIT_NEVER_FAILED;
	if (bad_signal)
		return EXIT_BAD_SIGNAL;
	if (!saw_epipe)
		return EXIT_NO_EPIPE;
	if (max_ok_run > MAX_OK_AFTER_ERROR)
		return EXIT_SWALLOWED;
	return 0;
}

static int child_main(int argc, char **argv)
{
	static unsigned char buf[256];
	const struct variant *vp;
	struct co_rng r;
	uint64_t key, off = 0;
	int v, i;

	co_child_init(NAME);
	if (argc != 1)
		co_fail("usage: variant");
	v = (int)co_arg_u64(argv[0]);
	if (v < 0 || v >= NVARIANTS)
		co_fail("bad variant %d", v);
	vp = &variants[v];
	key = co_stream_key((uint64_t)v);
	co_rng_init(&r, co_seed, (uint64_t)v);
	if (vp->sig == SM_IGNORE)
		signal(SIGPIPE, SIG_IGN);
	if (vp->sig == SM_HANDLER) {
		struct sigaction sa;

		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = on_sigpipe;
		sigemptyset(&sa.sa_mask);
		sigaction(SIGPIPE, &sa, NULL);
	}

	/* Queued under the shim (deadline 1 s, no direct sends). */
	for (i = 0; i < FIRST_WRITES; i++) {
		size_t len = co_range(&r, 1, 200);
		ssize_t w;

		co_stream_fill(key, off, buf, len);
		w = (i & 1) ? send(3, buf, len, vp->sig == SM_NOSIGNAL ? MSG_NOSIGNAL : 0)
			    : (vp->sig == SM_NOSIGNAL ? send(3, buf, len, MSG_NOSIGNAL)
						      : write(3, buf, len));
		if (w != (ssize_t)len)
			co_fail("first writes: write %d of %zu bytes returned %zd (%s)", i, len, w,
				w < 0 ? strerror(errno) : "short");
		off += len;
	}
	status("Q\n");
	wait_ctl_without_flush();
	co_sleep_ms(20);

	if (vp->act == ACT_READ) {
		char ch;
		ssize_t rr = read(3, &ch, 1);
		int e = errno;

		status("D read=%zd errno=%d\n", rr, rr < 0 ? e : 0);
		return 0;
	}
	if (vp->act == ACT_POLL) {
		struct pollfd p = { .fd = 3, .events = POLLIN };
		int k = poll(&p, 1, 2000), err = 0;
		socklen_t el = sizeof(err);

		if (getsockopt(3, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
			co_fail("getsockopt(SO_ERROR): %s", strerror(errno));
		status("D poll=%d revents=%d soerror=%d\n", k, k > 0 ? p.revents : 0, err);
		return 0;
	}
	return child_write_on(vp, key, off, &r);
}

/* ---- the peer (parent) ------------------------------------------------------------------ */

struct outcome {
	int status;
	int has_r, errors, first, epipe, reset, sigpipes, bad;
	unsigned long okafter, maxrun;
	int has_d;
	long read_ret;
	int read_errno, poll_ret, revents, soerror;
	char bad_line[256];
};

static void parse_status(const char *buf, struct outcome *o)
{
	const char *p = buf;

	while (p && *p) {
		const char *nl = strchr(p, '\n');

		if (p[0] == 'R')
			o->has_r = sscanf(p, "R errors=%d first=%d epipe=%d reset=%d sigpipes=%d bad=%d okafter=%lu maxrun=%lu",
					  &o->errors, &o->first, &o->epipe, &o->reset,
					  &o->sigpipes, &o->bad, &o->okafter, &o->maxrun) == 8;
		else if (p[0] == 'D' && !strncmp(p, "D read=", 7))
			o->has_d = sscanf(p, "D read=%ld errno=%d", &o->read_ret, &o->read_errno) == 2;
		else if (p[0] == 'D')
			o->has_d = sscanf(p, "D poll=%d revents=%d soerror=%d", &o->poll_ret,
					  &o->revents, &o->soerror) == 3;
		else if (p[0] == 'E' && !o->has_r) {
			/* Per error, for a writer that dies before its summary. */
			int e = atoi(p + 2);

			o->errors++;
			if (!o->first)
				o->first = e;
			o->epipe |= e == EPIPE;
			o->reset |= e == ECONNRESET;
		}
		else if (p[0] == 'B' && !o->bad_line[0])
			snprintf(o->bad_line, sizeof(o->bad_line), "%.*s",
				 (int)(nl ? nl - p : (long)strlen(p)), p);
		p = nl ? nl + 1 : NULL;
	}
}

static const char *exit_meaning(int code)
{
	switch (code) {
	case 0:
		return "ok";
	case EXIT_EPIPE_NOSIG:
		return "a call returned EPIPE without killing the writer (SIGPIPE default)";
	case EXIT_NEVER_FAILED:
		return "no call failed although the peer was gone";
	case EXIT_SURVIVED:
		return "the writer survived (SIGPIPE default): no SIGPIPE";
	case EXIT_BAD_ERRNO:
		return "a call failed with an error other than EPIPE or ECONNRESET";
	case EXIT_BAD_SIGNAL:
		return "the SIGPIPE handler ran for a call that did not return EPIPE, or not for one that did";
	case EXIT_NO_EPIPE:
		return "EPIPE never came";
	case EXIT_SWALLOWED:
		return "too many writes succeeded after an error";
	default:
		return "failed";
	}
}

static void describe(const struct variant *vp, const struct outcome *o, char *buf, size_t len)
{
	int n;

	if (WIFSIGNALED(o->status))
		n = snprintf(buf, len, "%s", co_status_str(o->status));
	else
		n = snprintf(buf, len, "exited %d (%s)", WEXITSTATUS(o->status),
			     exit_meaning(WEXITSTATUS(o->status)));
	if (n < 0 || (size_t)n >= len)
		return;
	if (vp->act == ACT_READ)
		n += snprintf(buf + n, len - (size_t)n, "; read returned %ld%s%s", o->read_ret,
			      o->read_ret < 0 ? " errno " : "",
			      o->read_ret < 0 ? strerror(o->read_errno) : "");
	else if (vp->act == ACT_POLL)
		n += snprintf(buf + n, len - (size_t)n, "; poll returned %d, revents 0x%x, SO_ERROR %d (%s)",
			      o->poll_ret, o->revents, o->soerror, strerror(o->soerror));
	else
		n += snprintf(buf + n, len - (size_t)n,
			      "; %d errors, first %s, EPIPE %s, ECONNRESET %s, handler ran %d times, %lu writes succeeded after the first error",
			      o->errors, o->first ? strerror(o->first) : "none",
			      o->epipe ? "yes" : "no", o->reset ? "yes" : "no", o->sigpipes,
			      o->okafter);
	if (o->bad_line[0] && n > 0 && (size_t)n < len)
		snprintf(buf + n, len - (size_t)n, "; %s", o->bad_line);
}

/* Starts a run of variant v, with the shim (shim=1) or as the reference. */
static void run_one(int v, int shim, struct outcome *o)
{
	const struct variant *vp = &variants[v];
	static char sbuf[1 << 16];
	const char *env[] = { CO_LONG_DELAY, "COALESCE_DIRECT=0", NULL };
	char vs[16], q;
	const char *args[] = { vs, NULL };
	const char *saved = getenv("TEST_NO_SHIM");
	char saved_copy[64] = "";
	struct co_child c;
	struct co_fdmap map[3];
	int wfd, rfd, ctl[2], st[2];
	size_t n;

	memset(o, 0, sizeof(*o));
	snprintf(vs, sizeof(vs), "%d", v);
	if (co_tcp_pair(AF_INET, &wfd, &rfd) < 0)
		co_fail("tcp pair: %s", strerror(errno));
	if (pipe2(ctl, O_CLOEXEC) < 0 || pipe2(st, O_CLOEXEC) < 0)
		co_fail("pipe: %s", strerror(errno));
	map[0].from = wfd;
	map[0].to = 3;
	map[1].from = ctl[0];
	map[1].to = 4;
	map[2].from = st[1];
	map[2].to = 5;
	/* The reference run: the same program, without LD_PRELOAD. */
	if (saved)
		snprintf(saved_copy, sizeof(saved_copy), "%s", saved);
	if (!shim)
		setenv("TEST_NO_SHIM", "1", 1);
	co_spawn(&c, args, map, 3, env, shim && co_shim_on());
	if (!shim) {
		if (saved)
			setenv("TEST_NO_SHIM", saved_copy, 1);
		else
			unsetenv("TEST_NO_SHIM");
	}
	close(wfd);
	close(ctl[0]);
	close(st[1]);

	co_phase("%s (%s): waiting for the first writes", vp->name, shim ? "shim" : "reference");
	if (co_read_full(st[0], &q, 1, "status pipe") != 1 || q != 'Q')
		co_fail("%s (%s): the writer ended before its first writes were done", vp->name,
			shim ? "shim" : "reference");
	if (vp->peer == PM_CLOSE) {
		static unsigned char rbuf[65536];
		uint64_t got = 0;
		ssize_t k;

		/* Drain what arrived (all of it without the shim, usually
		 * nothing with it), checking it, then close. */
		while ((k = recv(rfd, rbuf, sizeof(rbuf), MSG_DONTWAIT)) > 0) {
			size_t bad = co_stream_check(co_stream_key((uint64_t)v), got, rbuf,
						     (size_t)k);

			if (bad < (size_t)k)
				co_stream_mismatch(vp->name, co_stream_key((uint64_t)v), got + bad,
						   rbuf + bad, (size_t)k - bad);
			got += (uint64_t)k;
		}
		co_info("%s (%s): %llu bytes had arrived when the peer closed", vp->name,
			shim ? "shim" : "reference", (unsigned long long)got);
	} else {
		struct linger lg = { 1, 0 };

		if (setsockopt(rfd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) < 0)
			co_fail("SO_LINGER: %s", strerror(errno));
	}
	close(rfd);
	co_write_all(ctl[1], "C", 1, "control pipe");
	co_phase("%s (%s): waiting for the writer to notice", vp->name,
		 shim ? "shim" : "reference");
	n = co_read_full(st[0], sbuf, sizeof(sbuf) - 1, "status pipe");
	sbuf[n] = '\0';
	close(st[0]);
	close(ctl[1]);
	o->status = co_wait(&c);
	parse_status(sbuf, o);
	if (co_verbose) {
		char d[768];

		describe(vp, o, d, sizeof(d));
		co_info("%s (%s): %s", vp->name, shim ? "shim" : "reference", d);
	}
	if (shim && co_shim_on())
		co_stats_dump(&c, vp->name);
}

static int exited(const struct outcome *o, int code)
{
	return WIFEXITED(o->status) && WEXITSTATUS(o->status) == code;
}

/* What the kernel alone must do in each variant; a reference that does not
 * do it means the test's premise is wrong here. */
static void check_expected(const struct variant *vp, const struct outcome *o, const char *who)
{
	char d[768];

	describe(vp, o, d, sizeof(d));
	if (vp->act != ACT_WRITE) {
		if (!exited(o, 0) || !o->has_d)
			co_fail("%s (%s): the writer %s", vp->name, who, d);
		return;
	}
	if (vp->sig == SM_DEFAULT) {
		if (!WIFSIGNALED(o->status) || WTERMSIG(o->status) != SIGPIPE)
			co_fail("%s (%s): the writer should have died of SIGPIPE; it %s", vp->name,
				who, d);
		if (o->epipe)
			co_fail("%s (%s): a call returned EPIPE although SIGPIPE has its default action: %s",
				vp->name, who, d);
		return;
	}
	if (!exited(o, 0) || !o->has_r)
		co_fail("%s (%s): the writer %s", vp->name, who, d);
	if (vp->sig == SM_HANDLER && o->sigpipes < 1)
		co_fail("%s (%s): the SIGPIPE handler never ran: %s", vp->name, who, d);
	if (vp->sig != SM_HANDLER && o->sigpipes)
		co_fail("%s (%s): SIGPIPE handler count %d without a handler", vp->name, who,
			o->sigpipes);
}

static const char *read_class(const struct outcome *o, char *buf, size_t len)
{
	if (o->read_ret > 0)
		snprintf(buf, len, "data");
	else if (o->read_ret == 0)
		snprintf(buf, len, "0 (EOF)");
	else
		snprintf(buf, len, "-1 (%s)", strerror(o->read_errno));
	return buf;
}

/* A variant whose outcome under the shim differs from the reference: said
 * at once; the test goes on with the other variants and fails at the end. */
static int ndiffer;

static void differ(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void differ(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "DIFF %s: ", NAME);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (seed=%llu)\n", (unsigned long long)co_seed);
	ndiffer++;
}

/* Returns 1 if the two runs had the same kind of outcome, else says how
 * they differ (differ) and returns 0. */
static int compare(const struct variant *vp, const struct outcome *ref,
		   const struct outcome *sh)
{
	char dr[768], ds[768], a[64], b[64];

	describe(vp, ref, dr, sizeof(dr));
	describe(vp, sh, ds, sizeof(ds));
	switch (vp->act) {
	case ACT_READ:
		if (strcmp(read_class(ref, a, sizeof(a)), read_class(sh, b, sizeof(b))) == 0)
			return 1;
		differ("%s: after the peer reset the connection (bytes still queued), read() returned %s under the shim, but %s without it: the application is told a different story",
		       vp->name, b, a);
		return 0;
	case ACT_POLL:
		if ((ref->revents & POLLERR) == (sh->revents & POLLERR) &&
		    ref->soerror == sh->soerror)
			return 1;
		differ("%s: after the peer reset the connection (bytes still queued), poll() gave revents 0x%x and SO_ERROR %d (%s) under the shim, but revents 0x%x and SO_ERROR %d (%s) without it",
		       vp->name, sh->revents, sh->soerror, strerror(sh->soerror), ref->revents,
		       ref->soerror, strerror(ref->soerror));
		return 0;
	case ACT_WRITE:
		break;
	}
	if (WIFSIGNALED(ref->status) != WIFSIGNALED(sh->status) ||
	    (WIFSIGNALED(ref->status) && WTERMSIG(ref->status) != WTERMSIG(sh->status))) {
		differ("%s: different outcome: under the shim the writer %s; without it %s",
		       vp->name, ds, dr);
		return 0;
	}
	if (WIFSIGNALED(ref->status))
		return 1;
	if ((ref->errors > 0) != (sh->errors > 0) || ref->epipe != sh->epipe ||
	    (ref->sigpipes > 0) != (sh->sigpipes > 0)) {
		differ("%s: different outcome: under the shim %s; without it %s", vp->name, ds, dr);
		return 0;
	}
	return 1;
}

int main(int argc, char **argv)
{
	int v;

	if (argc > 1 && strcmp(argv[1], CO_CHILD_FLAG) == 0)
		return child_main(argc - 2, argv + 2);
	co_init(argc, argv, NAME);
	co_watchdog(60);
	for (v = 0; v < NVARIANTS; v++) {
		const struct variant *vp = &variants[v];
		struct outcome ref, sh;

		run_one(v, 0, &ref);
		check_expected(vp, &ref, "reference, without the shim");
		run_one(v, 1, &sh);
		if (co_shim_on() && vp->act == ACT_WRITE && !WIFSIGNALED(sh.status) && sh.has_r)
			co_info("%s: %lu writes succeeded after the first error under the shim (longest run %lu), %lu without it",
				vp->name, sh.okafter, sh.maxrun, ref.okafter);
		if (compare(vp, &ref, &sh))
			check_expected(vp, &sh, co_shim_on() ? "under the shim" : "second reference");
	}
	if (ndiffer)
		co_fail("%d of %d variants behave differently under the shim (DIFF lines above)",
			ndiffer, NVARIANTS);
	return 0;
}
