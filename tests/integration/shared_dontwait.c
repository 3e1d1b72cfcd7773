/* shared_dontwait: a MSG_DONTWAIT send on a second fd of a socket whose first
 * fd has bytes queued, while the socket is full. The kernel would answer
 * EAGAIN at once (the queued bytes are, for the application, already in the
 * socket); the send must neither block nor drop the queue of the first fd.
 *
 * The writer (under the shim) writes 100-byte records of a stream on fd 3
 * with MSG_DONTWAIT until EAGAIN (its queue and the socket are full: the
 * receiver reads nothing yet), duplicates fd 3, and sends the next record
 * on the duplicate with MSG_DONTWAIT, which must fail with EAGAIN. It says
 * so on its fd 4 (a pipe); only then does the receiver start reading. The
 * writer goes on alternating between both fds, waiting for room with poll
 * after each EAGAIN, until TOTAL bytes are written, and closes both. Every
 * byte must arrive once, in order.
 *
 * Regression test: the send on the duplicate used to stop coalescing fd 3
 * by draining its queue as close does: polling up to the linger time (here
 * 60 s: the receiver's 10-s wait for the writer's word fails first) and
 * then dropping what was left. */
#include "common.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define NAME "shared_dontwait"
#define REC 100
#define TOTAL (40000u * REC)
#define WORD_WAIT_MS 10000

/* Sends the rest of the record at *off on fd with MSG_DONTWAIT; advances
 * *off by what was taken (a short send leaves the rest of the record to
 * the next call). Returns 0, or -1 after EAGAIN. Fails on any other error. */
static int send_record(int fd, uint64_t key, uint64_t *off)
{
	unsigned char buf[REC];
	size_t len = REC - (size_t)(*off % REC);
	ssize_t r;

	co_stream_fill(key, *off, buf, len);
	do
		r = send(fd, buf, len, MSG_DONTWAIT);
	while (r < 0 && errno == EINTR);
	if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return -1;
	if (r <= 0)
		co_fail("send on fd %d at offset %llu: %zd (%s)", fd, (unsigned long long)*off, r,
			r < 0 ? strerror(errno) : "nothing taken");
	*off += (uint64_t)r;
	return 0;
}

static void wait_room(int fd)
{
	struct pollfd pfd = { .fd = fd, .events = POLLOUT };
	int r;

	do
		r = poll(&pfd, 1, WORD_WAIT_MS);
	while (r < 0 && errno == EINTR);
	if (r <= 0)
		co_fail("no room on fd %d within %d ms", fd, WORD_WAIT_MS);
}

static int child_main(int argc, char **argv)
{
	uint64_t key, off = 0;
	int dup_fd, fd, i, small = 16384;

	co_child_init(NAME);
	if (argc != 1)
		co_fail("usage: stream");
	key = co_stream_key(co_arg_u64(argv[0]));
	if (setsockopt(3, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)) < 0)
		co_fail("SO_SNDBUF: %s", strerror(errno));
	co_phase("filling the queue and the socket through fd 3");
	while (send_record(3, key, &off) == 0)
		if (off >= TOTAL / 2)
			co_fail("no EAGAIN after %llu bytes: does the receiver read?",
				(unsigned long long)off);
	dup_fd = dup(3);
	if (dup_fd < 0)
		co_fail("dup: %s", strerror(errno));
	co_phase("a MSG_DONTWAIT send on the duplicate, with fd 3's queue stuck");
	if (send_record(dup_fd, key, &off) == 0)
		co_fail("the send on the duplicate took a record although the socket was full "
			"(offset %llu)", (unsigned long long)off);
	co_write_all(4, "A", 1, "control pipe");
	co_phase("writing through both fds");
	for (i = 0; off < TOTAL; i++) {
		fd = i % 3 == 0 ? dup_fd : 3;
		while (send_record(fd, key, &off) < 0)
			wait_room(fd);
	}
	if (close(dup_fd) < 0 || close(3) < 0)
		co_fail("close: %s", strerror(errno));
	return 0;
}

int main(int argc, char **argv)
{
	static const char *const env[] = { "COALESCE_LINGER_MS=60000", NULL };
	const char *args[] = { "7", NULL };
	struct co_child c;
	struct pollfd pfd;
	int ctl[2], rfd, r;
	char word;

	if (argc > 1 && strcmp(argv[1], CO_CHILD_FLAG) == 0)
		return child_main(argc - 2, argv + 2);
	co_init(argc, argv, NAME);
	co_watchdog(120);
	if (pipe(ctl) < 0)
		co_fail("pipe: %s", strerror(errno));
	co_set_cloexec(ctl[0], 1);
	rfd = co_spawn_on_pair(&c, args, env, ctl[1]);
	co_phase("waiting for the writer's word (its send on the duplicate returned)");
	pfd.fd = ctl[0];
	pfd.events = POLLIN;
	do
		r = poll(&pfd, 1, WORD_WAIT_MS);
	while (r < 0 && errno == EINTR);
	if (r == 0)
		co_fail("no word from the writer in %d ms: its MSG_DONTWAIT send on the duplicate "
			"fd blocked", WORD_WAIT_MS);
	if (co_read_full(ctl[0], &word, 1, "control pipe") != 1 || word != 'A')
		co_fail("the writer ended before its send on the duplicate returned");
	co_phase("receiving and verifying %u bytes", TOTAL);
	co_recv_verify_stream(rfd, co_stream_key(7), TOTAL, "the shared socket's stream");
	close(rfd);
	close(ctl[0]);
	co_wait_ok(&c, "writer");
	return 0;
}
