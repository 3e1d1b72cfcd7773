/* peer_reset: the peer goes away while the writer (under the shim) keeps
 * writing small messages. Writes that were queued cannot fail at once; the
 * error of the flush must come back on a later call with the kernel's errno,
 * SIGPIPE must be raised where the application's own call would have raised
 * it, and nothing may hang.
 *
 * Peer behaviour: "stream" variants: the peer reads and checks the first
 * 64 KiB, then closes with unread data (the kernel answers with a reset);
 * "deferred" variants: the writer sends a 32-byte hello (so the shim knows
 * the socket as a connected stream), the peer reads it and resets the
 * connection (SO_LINGER 0); the writer's next write is then queued, the
 * writer sleeps so that the deadline flusher meets the error, and the next
 * write must report it.
 *
 * Variants:
 *   ignore/stream, ignore/deferred: SIGPIPE ignored: a write must fail with
 *     EPIPE or ECONNRESET, and errors must keep coming after the first one
 *     (a write that succeeds after that must be followed by another error);
 *   default/stream, default/deferred: SIGPIPE default: the writer must die
 *     of SIGPIPE, never see EPIPE returned (ECONNRESET, which raises no
 *     signal, may come first);
 *   nosignal/stream, nosignal/deferred: SIGPIPE default but every call is
 *     send(MSG_NOSIGNAL): no signal, EPIPE must be returned eventually. */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NAME "peer_reset"
#define PEER_READS 65536
#define MAX_WRITES 2000000
#define GIVE_UP_NS (15ULL * 1000000000ULL)

enum sigmode { SIG_IGNORE, SIG_DEFAULT, SIG_NOSIGNAL };
static const char *const signames[] = { "ignore", "default", "nosignal" };

struct variant {
	enum sigmode sig;
	int deferred;
};

static const struct variant variants[] = {
	{ SIG_IGNORE, 0 },  { SIG_IGNORE, 1 },   { SIG_DEFAULT, 0 },
	{ SIG_DEFAULT, 1 }, { SIG_NOSIGNAL, 0 }, { SIG_NOSIGNAL, 1 },
};
#define NVARIANTS (int)(sizeof(variants) / sizeof(variants[0]))

/* Child exit codes besides 0. */
#define EXIT_SYNC_FIRST 10 /* deferred variant: the first write after the reset failed at once */
#define HELLO 32

static int is_conn_error(int e)
{
	return e == EPIPE || e == ECONNRESET;
}

static int child_main(int argc, char **argv)
{
	const struct variant *vp;
	unsigned char buf[256];
	struct co_rng r;
	uint64_t key, off = 0, start = co_now_ns();
	unsigned long n, last_err_at = 0;
	int v, errors = 0, first_ok = 0, saw_epipe = 0;

	co_child_init(NAME);
	if (argc != 1)
		co_fail("usage: variant");
	v = (int)co_arg_u64(argv[0]);
	vp = &variants[v];
	key = co_stream_key((uint64_t)v);
	co_rng_init(&r, co_seed, (uint64_t)v);
	if (vp->sig == SIG_IGNORE)
		signal(SIGPIPE, SIG_IGN);
	if (vp->deferred) {
		char ch;

		co_stream_fill(key, 0, buf, HELLO);
		co_write_all(3, buf, HELLO, "hello");
		off = HELLO;
		/* Wait until the peer has reset the connection. */
		if (co_read_full(4, &ch, 1, "control pipe") != 1)
			co_fail("control pipe closed");
		co_sleep_ms(50);
	}
	for (n = 0; n < MAX_WRITES; n++) {
		size_t len = co_range(&r, 1, 200);
		ssize_t w;
		int e;

		if (co_now_ns() - start > GIVE_UP_NS)
			break;
		co_stream_fill(key, off, buf, len);
		if (vp->sig == SIG_NOSIGNAL)
			w = send(3, buf, len, MSG_NOSIGNAL);
		else
			w = (n & 1) ? send(3, buf, len, 0) : write(3, buf, len);
		e = errno;
		if (w >= 0) {
			if (w == 0 || (size_t)w > len)
				co_fail("write %lu of %zu bytes returned %zd", n, len, w);
			off += (uint64_t)w;
			if (vp->deferred && n == 0)
				first_ok = 1;
			if (errors > 0 && n - last_err_at > 50)
				co_fail("after the error at write %lu, %lu more writes succeeded without another error: errors are being swallowed",
					last_err_at, n - last_err_at);
			/* Deferred, and after an error: give the flusher time to meet it. */
			if (vp->deferred || errors > 0)
				co_sleep_ms(vp->deferred ? 100 : 5);
			continue;
		}
		if (e == EINTR)
			continue;
		if (!is_conn_error(e))
			co_fail("write %lu: unexpected error %s (expected EPIPE or ECONNRESET)", n,
				strerror(e));
		if (e == EPIPE && vp->sig == SIG_DEFAULT)
			co_fail("write %lu returned EPIPE but no SIGPIPE was raised (SIGPIPE has its default action)",
				n);
		if (e == EPIPE)
			saw_epipe = 1;
		errors++;
		last_err_at = n;
		co_info("write %lu: %s", n, strerror(e));
		if (vp->sig == SIG_IGNORE && errors >= 2)
			break;
		if (vp->sig == SIG_NOSIGNAL && saw_epipe)
			break;
	}
	if (errors == 0)
		co_fail("no write failed in %lu writes (%.1f s) after the peer was gone", n,
			(double)(co_now_ns() - start) / 1e9);
	if (vp->sig == SIG_DEFAULT)
		co_fail("still alive after %lu writes and %d errors: SIGPIPE never raised", n, errors);
	if (vp->sig == SIG_IGNORE && errors < 2)
		co_fail("only one error in %lu writes: the errors after the first were swallowed", n);
	if (vp->sig == SIG_NOSIGNAL && !saw_epipe)
		co_fail("EPIPE never returned in %lu writes (%d errors)", n, errors);
	if (vp->deferred && !first_ok)
		return EXIT_SYNC_FIRST;
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
		const struct variant *vp = &variants[v];
		struct co_child c;
		char vs[16], vname[64];
		const char *args[] = { vs, NULL };
		int rfd, ctl[2], st;

		snprintf(vs, sizeof(vs), "%d", v);
		snprintf(vname, sizeof(vname), "%s/%s", signames[vp->sig],
			 vp->deferred ? "deferred" : "stream");
		if (pipe2(ctl, O_CLOEXEC) < 0)
			co_fail("pipe: %s", strerror(errno));
		/* The writer waits on the pipe (its fd 4) for the reset. */
		rfd = co_spawn_on_pair(&c, args, NULL, ctl[0]);
		if (vp->deferred) {
			struct linger lg = { 1, 0 };
			unsigned char hello[HELLO];

			co_phase("%s: reading the hello", vname);
			if (co_read_full(rfd, hello, HELLO, "hello") != HELLO)
				co_fail("%s: EOF before the hello", vname);
			if (co_stream_check(co_stream_key((uint64_t)v), 0, hello, HELLO) != HELLO)
				co_fail("%s: the hello is wrong", vname);
			co_phase("%s: resetting the connection", vname);
			if (setsockopt(rfd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) < 0)
				co_fail("SO_LINGER: %s", strerror(errno));
			close(rfd);
			co_write_all(ctl[1], "C", 1, "control pipe");
		} else {
			static unsigned char buf[PEER_READS];
			size_t got, bad;

			co_phase("%s: reading the first %d bytes", vname, PEER_READS);
			got = co_read_full(rfd, buf, PEER_READS, "peer");
			if (got != PEER_READS)
				co_fail("%s: EOF after %zu bytes", vname, got);
			bad = co_stream_check(co_stream_key((uint64_t)v), 0, buf, got);
			if (bad < got)
				co_stream_mismatch(vname, co_stream_key((uint64_t)v), bad, buf + bad,
						   got - bad);
			close(rfd);
		}
		co_phase("%s: waiting for the writer to notice", vname);
		st = co_wait(&c);
		close(ctl[1]);
		if (vp->sig == SIG_DEFAULT) {
			if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGPIPE)
				co_fail("%s: the writer should have died of SIGPIPE, but it %s", vname,
					co_status_str(st));
			continue;
		}
		if (WIFEXITED(st) && WEXITSTATUS(st) == EXIT_SYNC_FIRST) {
			co_info("%s: the first write after the reset failed at once", vname);
			continue;
		}
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			co_fail("%s: the writer %s", vname, co_status_str(st));
		if (co_shim_on()) {
			co_stats_dump(&c, vname);
			if (co_stats_need(&c, "writes_queued") < 1)
				co_fail("%s: stats writes_queued=0: the writes were never queued, so no error could be deferred",
					vname);
			if (vp->deferred && co_stats_need(&c, "deferred_errors") < 1)
				co_fail("%s: the first write was queued and a later one failed, but stats deferred_errors=0",
					vname);
		}
	}
	return 0;
}
