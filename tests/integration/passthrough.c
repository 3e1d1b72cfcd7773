/* passthrough: what the shim must leave alone.
 *
 * nonsock: under the shim, writes to a pipe (the parent checks, after each
 *   batch, that the bytes are already in the pipe), to a regular file (the
 *   writer checks with fstat after each write that the file has grown) and
 *   to /dev/null all land intact and at once; stats: writes_queued 0 and
 *   passthrough_not_socket counted.
 * disabled: COALESCE_DISABLE=1 on a Unix stream socketpair: after each 2-4
 *   small writes the writer tells the parent over a pipe, and the parent
 *   checks the bytes are already in its socket's receive queue (a Unix
 *   stream write puts them there before returning); every byte arrives; if a
 *   stats file is written, writes_queued is 0.
 * enabled (control for the above): the same exchange without
 *   COALESCE_DISABLE must find bytes held back (not yet there) in most
 *   rounds, and they must arrive once the writer polls: proves the check
 *   above can see queueing. (A lone write may be sent at once by design;
 *   the second write of a round is the one that gets queued.) (The writer waits for the parent's go-ahead in
 *   sigwaitinfo, which the shim has no reason to flush on.)
 * udp: datagrams of 1-1400 bytes through write, send, sendto, sendmsg and
 *   writev on a connected UDP socket arrive one by one, each the size it was
 *   sent with and with the right bytes (no coalescing of datagrams). */
#include "common.h"

#include <errno.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define NAME "passthrough"
#define PIPE_BATCHES 200
#define FILE_BYTES (256 * 1024)
#define DEVNULL_WRITES 5000
#define SYNC_ROUNDS 200
#define DGRAMS 2000
#define DGRAM_BATCH 32
#define MAX_DGRAM 1400

/* The parent acks with SIGUSR1, which the child takes with sigwaitinfo: a
 * wait the shim has no reason to flush on (a read would flush the queue and
 * hide what the parent is checking for). */
static void block_ack(void)
{
	sigset_t s;

	sigemptyset(&s);
	sigaddset(&s, SIGUSR1);
	sigprocmask(SIG_BLOCK, &s, NULL);
}

static void wait_ack(void)
{
	sigset_t s;

	sigemptyset(&s);
	sigaddset(&s, SIGUSR1);
	while (sigwaitinfo(&s, NULL) < 0)
		if (errno != EINTR)
			co_fail("sigwaitinfo: %s", strerror(errno));
}

static void send_ack(const struct co_child *c)
{
	if (kill(c->pid, SIGUSR1) < 0)
		co_fail("kill SIGUSR1: %s", strerror(errno));
}

/* ---- nonsock ---- */

static size_t small_size(struct co_rng *r)
{
	return co_range(r, 1, 300);
}

static void child_nonsock(const char *path)
{
	unsigned char buf[512];
	struct co_rng r;
	uint64_t off = 0;
	int i, j, fd;

	/* Pipe: fd 3 data, fd 4 "written" signal; acks are SIGUSR1. */
	co_rng_init(&r, co_seed, 10);
	for (i = 0; i < PIPE_BATCHES; i++) {
		int n = (int)co_range(&r, 1, 8);

		for (j = 0; j < n; j++) {
			size_t len = small_size(&r);
			struct iovec iov[2];
			ssize_t w;

			co_stream_fill(co_stream_key(10), off, buf, len);
			if (j & 1) {
				iov[0].iov_base = buf;
				iov[0].iov_len = len / 2;
				iov[1].iov_base = buf + len / 2;
				iov[1].iov_len = len - len / 2;
				w = writev(3, iov, 2);
			} else {
				w = write(3, buf, len);
			}
			if (w != (ssize_t)len)
				co_fail("pipe write of %zu returned %zd (%s)", len, w,
					w < 0 ? strerror(errno) : "short");
			off += len;
		}
		/* The parent checks the pipe, then acks. */
		co_write_all(4, "X", 1, "written pipe");
		wait_ack();
		/* A wait with a timeout: the shim flushes before it. */
		{
			struct pollfd p = { .fd = 3, .events = POLLOUT };

			if (poll(&p, 1, 5000) != 1)
				co_fail("poll POLLOUT: %s", strerror(errno));
		}
	}
	close(3);

	/* Regular file. */
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		co_fail("open %s: %s", path, strerror(errno));
	co_rng_init(&r, co_seed, 11);
	for (off = 0; off < FILE_BYTES;) {
		size_t len = small_size(&r);
		struct stat st;

		if (len > FILE_BYTES - off)
			len = FILE_BYTES - off;
		co_stream_fill(co_stream_key(11), off, buf, len);
		if (write(fd, buf, len) != (ssize_t)len)
			co_fail("file write: %s", strerror(errno));
		off += len;
		if (fstat(fd, &st) < 0)
			co_fail("fstat: %s", strerror(errno));
		if ((uint64_t)st.st_size != off)
			co_fail("file size %lld right after writing up to offset %llu: the write to a regular file was held back",
				(long long)st.st_size, (unsigned long long)off);
	}
	if (close(fd) < 0)
		co_fail("close file: %s", strerror(errno));

	/* /dev/null */
	fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		co_fail("open /dev/null: %s", strerror(errno));
	for (i = 0; i < DEVNULL_WRITES; i++) {
		size_t len = small_size(&r);

		if (write(fd, buf, len) != (ssize_t)len)
			co_fail("/dev/null write %d of %zu bytes failed", i, len);
	}
	close(fd);
}

static void parent_nonsock(void)
{
	struct co_child c;
	char path[600];
	const char *args[] = { "nonsock", path, NULL };
	int data[2], wr[2], i, j, fd;
	unsigned char buf[8192];
	struct co_rng r;
	uint64_t off = 0;
	long long v;

	snprintf(path, sizeof(path), "%s/passthrough-file.%d", getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid());
	if (pipe2(data, O_CLOEXEC) < 0 || pipe2(wr, O_CLOEXEC) < 0)
		co_fail("pipe: %s", strerror(errno));
	co_spawn_fds(&c, args, NULL, data[1], wr[1]);
	co_rng_init(&r, co_seed, 10);
	for (i = 0; i < PIPE_BATCHES; i++) {
		int n = (int)co_range(&r, 1, 8);
		size_t want = 0, got, bad;

		int q = 0;
		char ch;

		for (j = 0; j < n; j++)
			want += small_size(&r);
		co_phase("nonsock: pipe batch %d: waiting for the writer", i);
		if (co_read_full(wr[0], &ch, 1, "written pipe") != 1)
			co_fail("nonsock: the writer went away in batch %d", i);
		if (ioctl(data[0], FIONREAD, &q) < 0)
			co_fail("FIONREAD: %s", strerror(errno));
		if ((size_t)q != want)
			co_fail("nonsock: right after the writes of batch %d returned, %d of their %zu bytes were in the pipe: pipe writes were held back",
				i, q, want);
		got = co_read_full(data[0], buf, want, "pipe");
		if (got != want)
			co_fail("nonsock: pipe EOF after %zu of %zu bytes of batch %d", got, want, i);
		bad = co_stream_check(co_stream_key(10), off, buf, want);
		if (bad < want)
			co_stream_mismatch("nonsock pipe", co_stream_key(10), off + bad, buf + bad,
					   want - bad);
		off += want;
		send_ack(&c);
	}
	if (read(data[0], buf, 1) != 0)
		co_fail("nonsock: pipe: expected EOF");
	close(data[0]);
	close(wr[0]);
	co_phase("nonsock: waiting for the writer");
	co_wait_ok(&c, "nonsock");

	co_phase("nonsock: checking the file");
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		co_fail("nonsock: open %s: %s", path, strerror(errno));
	co_recv_verify_stream(fd, co_stream_key(11), FILE_BYTES, "nonsock file");
	close(fd);
	unlink(path);
	if (co_shim_on()) {
		co_stats_dump(&c, "nonsock");
		v = co_stats_need(&c, "writes_queued");
		if (v != 0)
			co_fail("nonsock: stats writes_queued=%lld for writes to a pipe, a file and /dev/null",
				v);
		v = co_stats_need(&c, "passthrough_not_socket");
		if (v < 1)
			co_fail("nonsock: stats passthrough_not_socket=%lld", v);
	}
}

/* ---- disabled / enabled: Unix socketpair, checked after each write ---- */

static void child_sync(void)
{
	unsigned char buf[512];
	struct co_rng r;
	uint64_t off = 0;
	int i, j;

	/* fd 3: socket, fd 4: "written" pipe to the parent; acks are SIGUSR1. */
	co_rng_init(&r, co_seed, 20);
	for (i = 0; i < SYNC_ROUNDS; i++) {
		int n = (int)co_range(&r, 2, 4);

		for (j = 0; j < n; j++) {
			size_t len = small_size(&r);

			co_stream_fill(co_stream_key(20), off, buf, len);
			if (((j & 1) ? send(3, buf, len, 0) : write(3, buf, len)) != (ssize_t)len)
				co_fail("socket write %d.%d: %s", i, j, strerror(errno));
			off += len;
		}
		co_write_all(4, "X", 1, "written pipe");
		wait_ack();
		/* A wait with a timeout: the shim flushes before it. */
		{
			struct pollfd p = { .fd = 3, .events = POLLOUT };

			if (poll(&p, 1, 5000) != 1)
				co_fail("poll POLLOUT: %s", strerror(errno));
		}
	}
	close(3);
}

static void parent_sync(int disabled)
{
	const char *what = disabled ? "disabled" : "enabled";
	struct co_child c;
	const char *args[] = { "sync", NULL };
	const char *env_dis[] = { "COALESCE_DISABLE=1", CO_LONG_DELAY, NULL };
	const char *env_en[] = { CO_LONG_DELAY, NULL };
	int sv[2], wr[2], i, held = 0;
	unsigned char buf[4 * 300];
	struct co_rng r;
	uint64_t off = 0;
	long long v;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 || pipe2(wr, O_CLOEXEC) < 0)
		co_fail("socketpair/pipe: %s", strerror(errno));
	co_spawn_fds(&c, args, disabled ? env_dis : env_en, sv[0], wr[1]);
	co_rng_init(&r, co_seed, 20);
	for (i = 0; i < SYNC_ROUNDS; i++) {
		int n = (int)co_range(&r, 2, 4), j;
		size_t len = 0, bad;
		int q = 0;
		char ch;

		for (j = 0; j < n; j++)
			len += small_size(&r);
		if (len > sizeof(buf))
			co_fail("internal: round of %zu bytes", len);

		co_phase("%s: round %d: waiting for the writer", what, i);
		if (co_read_full(wr[0], &ch, 1, "written pipe") != 1)
			co_fail("%s: the writer went away in round %d", what, i);
		if (ioctl(sv[1], FIONREAD, &q) < 0)
			co_fail("FIONREAD: %s", strerror(errno));
		if ((size_t)q != len) {
			if (disabled)
				co_fail("%s: right after %d writes returned, %d of their %zu bytes were in the receiver's queue: writes were held back although COALESCE_DISABLE=1",
					what, n, q, len);
			held++;
		}
		send_ack(&c);
		/* Bytes held back go out now: the writer polls its socket. */
		co_phase("%s: round %d: waiting for the %zu bytes", what, i, len);
		if (co_read_full(sv[1], buf, len, "socket") != len)
			co_fail("%s: EOF in round %d", what, i);
		bad = co_stream_check(co_stream_key(20), off, buf, len);
		if (bad < len)
			co_stream_mismatch(what, co_stream_key(20), off + bad, buf + bad, len - bad);
		off += len;
	}
	if (read(sv[1], buf, 1) != 0)
		co_fail("%s: expected EOF", what);
	close(sv[1]);
	close(wr[0]);
	co_wait_ok(&c, what);
	if (!co_shim_on())
		return;
	co_stats_dump(&c, what);
	if (disabled) {
		if (co_stats_get(&c, "writes_queued", &v) == 0 && v != 0)
			co_fail("%s: stats writes_queued=%lld with COALESCE_DISABLE=1", what, v);
	} else {
		if (held < SYNC_ROUNDS / 2)
			co_fail("%s: bytes were held back by the shim in only %d of %d rounds: the check cannot tell passthrough from queueing",
				what, held, SYNC_ROUNDS);
		if (co_stats_need(&c, "writes_queued") < held)
			co_fail("%s: stats writes_queued < %d rounds seen held back", what, held);
	}
}

/* ---- UDP ---- */

static size_t dgram_size(struct co_rng *r)
{
	return co_range(r, 1, MAX_DGRAM);
}

static void child_udp(void)
{
	unsigned char buf[MAX_DGRAM];
	struct co_rng r;
	int i;

	co_rng_init(&r, co_seed, 30);
	for (i = 0; i < DGRAMS; i++) {
		size_t len = dgram_size(&r);
		int api = i % 5;
		struct iovec iov[3];
		struct msghdr mh;
		ssize_t w;

		co_stream_fill(co_stream_key(1000 + (uint64_t)i), 0, buf, len);
		iov[0].iov_base = buf;
		iov[0].iov_len = len / 3;
		iov[1].iov_base = buf + len / 3;
		iov[1].iov_len = len / 3;
		iov[2].iov_base = buf + 2 * (len / 3);
		iov[2].iov_len = len - 2 * (len / 3);
		switch (api) {
		case 0:
			w = write(3, buf, len);
			break;
		case 1:
			w = send(3, buf, len, 0);
			break;
		case 2:
			w = sendto(3, buf, len, 0, NULL, 0);
			break;
		case 3:
			memset(&mh, 0, sizeof(mh));
			mh.msg_iov = iov;
			mh.msg_iovlen = 3;
			w = sendmsg(3, &mh, 0);
			break;
		default:
			w = writev(3, iov, 3);
			break;
		}
		if (w != (ssize_t)len)
			co_fail("datagram %d of %zu bytes: returned %zd (%s)", i, len, w,
				w < 0 ? strerror(errno) : "short");
		if (i % DGRAM_BATCH == DGRAM_BATCH - 1) {
			char a;

			/* Flow control: wait for the receiver's ack datagram. */
			if (recv(3, &a, 1, 0) != 1)
				co_fail("ack recv: %s", strerror(errno));
		}
	}
}

static void parent_udp(void)
{
	struct co_child c;
	const char *args[] = { "udp", NULL };
	struct sockaddr_storage a, b;
	socklen_t al = sizeof(a), bl = sizeof(b);
	int s1, s2, i, big = 1 << 20;
	unsigned char buf[MAX_DGRAM + 100];
	struct co_rng r;
	struct sockaddr_in lo;

	memset(&lo, 0, sizeof(lo));
	lo.sin_family = AF_INET;
	lo.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	s1 = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	s2 = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s1 < 0 || s2 < 0 || bind(s1, (struct sockaddr *)&lo, sizeof(lo)) < 0 ||
	    bind(s2, (struct sockaddr *)&lo, sizeof(lo)) < 0 ||
	    getsockname(s1, (struct sockaddr *)&a, &al) < 0 ||
	    getsockname(s2, (struct sockaddr *)&b, &bl) < 0 ||
	    connect(s1, (struct sockaddr *)&b, bl) < 0 || connect(s2, (struct sockaddr *)&a, al) < 0)
		co_fail("udp setup: %s", strerror(errno));
	setsockopt(s2, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
	co_spawn_fds(&c, args, NULL, s1, -1);
	co_rng_init(&r, co_seed, 30);
	for (i = 0; i < DGRAMS; i++) {
		size_t len = dgram_size(&r), bad;
		ssize_t k;

		co_phase("udp: waiting for datagram %d", i);
		do
			k = recv(s2, buf, sizeof(buf), 0);
		while (k < 0 && errno == EINTR);
		if (k < 0)
			co_fail("udp: recv: %s", strerror(errno));
		if ((size_t)k != len)
			co_fail("udp: datagram %d is %zd bytes, sent as %zu: datagram boundaries not preserved",
				i, k, len);
		bad = co_stream_check(co_stream_key(1000 + (uint64_t)i), 0, buf, len);
		if (bad < len)
			co_fail("udp: datagram %d byte %zu differs: expected %02x got %02x", i, bad,
				co_stream_byte(co_stream_key(1000 + (uint64_t)i), bad), buf[bad]);
		if (i % DGRAM_BATCH == DGRAM_BATCH - 1 && send(s2, "a", 1, 0) != 1)
			co_fail("udp: ack send: %s", strerror(errno));
	}
	co_wait_ok(&c, "udp");
	{
		int q = 0;

		if (ioctl(s2, FIONREAD, &q) < 0)
			co_fail("FIONREAD: %s", strerror(errno));
		if (q != 0)
			co_fail("udp: extra datagram(s) after the last one");
	}
	close(s2);
	co_stats_dump(&c, "udp");
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], CO_CHILD_FLAG) == 0) {
		co_child_init(NAME);
		block_ack();
		if (argc == 4 && strcmp(argv[2], "nonsock") == 0)
			child_nonsock(argv[3]);
		else if (argc == 3 && strcmp(argv[2], "sync") == 0)
			child_sync();
		else if (argc == 3 && strcmp(argv[2], "udp") == 0)
			child_udp();
		else
			co_fail("bad arguments");
		return 0;
	}
	co_init(argc, argv, NAME);
	co_watchdog(60);
	parent_nonsock();
	parent_sync(1);
	if (co_shim_on())
		parent_sync(0);
	parent_udp();
	return 0;
}
