/* deadline_flush: the writer makes three small writes and then neither
 * writes, reads nor waits on the socket: it sleeps in nanosleep for 2 s (or
 * spins on the clock for 1 s, making no system call the shim could hook).
 * Only the background deadline flusher can send the bytes then. The
 * receiver must get all of them while the writer is still asleep: when they
 * have arrived, the writer has not yet written its wake-up byte to a control
 * pipe (which it does first thing after the sleep) and has not exited. Then
 * the writer sends a marker and exits; everything is checked. The stats must
 * show the writes were queued (else this would pass without a shim).
 * Variants: nanosleep 2 s with the default deadline, spinning 1 s with the
 * default deadline, nanosleep 1 s with COALESCE_DELAY_US=20000.
 * The program carries 256 KiB of static TLS, as some do: glibc takes it out
 * of every thread's stack, the flusher's too (a small fixed stack once kept
 * the flusher from starting at all). */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NAME "deadline_flush"

static __thread char big_tls[256 * 1024] __attribute__((used));
#define MSGS 3
#define MARKER 64

struct variant {
	const char *name;
	int spin;
	const char *env;
	int sleep_s;
};

static const struct variant variants[] = {
	{ "nanosleep 2 s, default deadline", 0, NULL, 2 },
	{ "spin 1 s, default deadline", 1, NULL, 1 },
	{ "nanosleep 1 s, COALESCE_DELAY_US=20000", 0, "COALESCE_DELAY_US=20000", 1 },
};
#define NVARIANTS (int)(sizeof(variants) / sizeof(variants[0]))

static size_t msg_len(struct co_rng *r)
{
	return co_range(r, 5, 60);
}

static int child_main(int argc, char **argv)
{
	unsigned char buf[MARKER];
	struct co_rng r;
	uint64_t key, off = 0;
	int v, i, spin;

	co_child_init(NAME);
	big_tls[sizeof(big_tls) - 1] = 1;
	if (argc != 1)
		co_fail("usage: variant");
	v = (int)co_arg_u64(argv[0]);
	spin = variants[v].spin;
	key = co_stream_key((uint64_t)v);
	co_rng_init(&r, co_seed, (uint64_t)v);
	for (i = 0; i < MSGS; i++) {
		size_t len = msg_len(&r);

		co_stream_fill(key, off, buf, len);
		if (write(3, buf, len) != (ssize_t)len)
			co_fail("write %d: %s", i, strerror(errno));
		off += len;
	}
	if (spin) {
		uint64_t end = co_now_ns() + 1000000000ULL;
		volatile uint64_t x = 0;

		while (co_now_ns() < end)
			x++;
	} else {
		struct timespec ts = { variants[v].sleep_s, 0 };

		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
	}
	co_write_all(4, "W", 1, "control pipe");
	co_stream_fill(key, off, buf, MARKER);
	if (write(3, buf, MARKER) != MARKER)
		co_fail("marker write: %s", strerror(errno));
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
		const char *env[] = { vp->env, NULL };
		char vs[16];
		const char *args[] = { vs, NULL };
		struct co_rng pr;
		unsigned char buf[4096];
		uint64_t key = co_stream_key((uint64_t)v);
		size_t first = 0, got = 0, bad;
		int i, rfd, ctl[2], st;
		struct pollfd pfd;
		pid_t w;
		long long wq;

		snprintf(vs, sizeof(vs), "%d", v);
		co_rng_init(&pr, co_seed, (uint64_t)v);
		for (i = 0; i < MSGS; i++)
			first += msg_len(&pr);
		if (pipe2(ctl, O_CLOEXEC) < 0)
			co_fail("pipe: %s", strerror(errno));
		/* The writer reports its wake-up on the pipe (its fd 4). */
		rfd = co_spawn_on_pair(&c, args, env, ctl[1]);

		co_phase("%s: waiting for the %zu bytes written before the sleep", vp->name, first);
		while (got < first) {
			ssize_t k = read(rfd, buf + got, first - got);

			if (k < 0 && errno == EINTR)
				continue;
			if (k <= 0)
				co_fail("%s: %s after %zu of %zu bytes", vp->name,
					k < 0 ? strerror(errno) : "EOF", got, first);
			got += (size_t)k;
		}
		/* They are here: was the writer still asleep? */
		pfd.fd = ctl[0];
		pfd.events = POLLIN;
		if (poll(&pfd, 1, 0) != 0)
			co_fail("%s: the %zu bytes written before the sleep arrived only after the writer woke up: the deadline flusher did not send them while the writer slept",
				vp->name, first);
		w = waitpid(c.pid, &st, WNOHANG);
		if (w != 0)
			co_fail("%s: the writer had already exited (%s) when the first bytes arrived",
				vp->name, w > 0 ? co_status_str(st) : strerror(errno));
		bad = co_stream_check(key, 0, buf, first);
		if (bad < first)
			co_stream_mismatch(vp->name, key, bad, buf + bad, first - bad);

		co_phase("%s: waiting for the marker after the sleep", vp->name);
		got = co_read_full(rfd, buf, MARKER + 1, "marker");
		if (got != MARKER)
			co_fail("%s: got %zu bytes after the sleep, expected the %d-byte marker then EOF",
				vp->name, got, MARKER);
		bad = co_stream_check(key, first, buf, MARKER);
		if (bad < MARKER)
			co_stream_mismatch(vp->name, key, first + bad, buf + bad, MARKER - bad);
		close(rfd);
		co_wait_ok(&c, vp->name);
		close(ctl[0]);
		if (co_shim_on()) {
			co_stats_dump(&c, vp->name);
			wq = co_stats_need(&c, "writes_queued");
			/* The marker after the sleep may be one of them; a lone first
			 * write may have gone out at once: at least one write before
			 * the sleep must have been queued for the deadline to matter. */
			if (wq < 2)
				co_fail("%s: stats writes_queued=%lld, expected at least 2: none of the writes before the sleep was queued, so the deadline was not tested",
					vp->name, wq);
			if (co_stats_need(&c, "flush_syscalls") < 1)
				co_fail("%s: stats flush_syscalls=0", vp->name);
		}
	}
	return 0;
}
