/* close_race: one thread of the writer writes records on a blocking socket
 * whose peer does not read, until it blocks inside the shim's send with
 * bytes queued; then the main thread closes that fd. The close must return
 * at once, as it does without the shim (an alarm kills the writer if it
 * hangs), and a socket the writer opens right after must never receive any
 * of the old socket's bytes. The writing thread stops once its blocked
 * write returns (writing on after the close would be the program's own
 * race); a signal (handler without SA_RESTART) interrupts that blocked write
 * after the close, so that what the shim had queued must still go out
 * through the socket the close took away from the fd number. The parent
 * then drains the old socket: every record whose write succeeded must
 * arrive whole and in order, then EOF. */
#include "common.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define NAME "close_race"
#define RECORD 100

static _Atomic int closed;
static uint32_t written;

/* Record n: its number, then bytes derived from it. */
static void fill_record(unsigned char *buf, uint32_t n)
{
	memcpy(buf, &n, sizeof(n));
	co_stream_fill(n, 0, buf + sizeof(n), RECORD - sizeof(n));
}

static void on_usr1(int sig)
{
	(void)sig;
}

static void *writer(void *arg)
{
	unsigned char buf[RECORD];
	uint32_t n;

	(void)arg;
	for (n = 0; !atomic_load(&closed); n++) {
		fill_record(buf, n);
		if (write(3, buf, RECORD) != RECORD)
			break;
		written = n + 1;
	}
	return NULL;
}

static int child_main(void)
{
	char none;
	pthread_t t;
	int sv[2];

	struct sigaction sa;

	co_child_init(NAME);
	alarm(20);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	if (pthread_create(&t, NULL, writer, NULL) != 0)
		co_fail("pthread_create");
	/* Long enough for the writer to fill the socket and block. */
	co_sleep_ms(300);
	atomic_store(&closed, 1);
	if (close(3) != 0)
		co_fail("close: %s", strerror(errno));
	/* The writer is still blocked (nobody reads yet): interrupt it. */
	pthread_kill(t, SIGUSR1);
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
		co_fail("socketpair: %s", strerror(errno));
	co_write_all(4, "c", 1, "closed pipe");
	pthread_join(t, NULL);
	co_write_all(4, &written, sizeof(written), "closed pipe");
	if (recv(sv[1], &none, 1, MSG_DONTWAIT) != -1 || errno != EAGAIN)
		co_fail("the new socket received bytes meant for the closed one");
	return 0;
}

int main(int argc, char **argv)
{
	unsigned char buf[RECORD], want[RECORD];
	struct co_child c;
	struct co_fdmap map[2];
	const char *env[] = { CO_LONG_DELAY, NULL };
	const char *args[] = { NULL };
	char closed_byte;
	uint32_t n = 0, ok;
	size_t got;
	int sv[2], pipefd[2];

	if (argc > 1 && strcmp(argv[1], CO_CHILD_FLAG) == 0)
		return child_main();
	co_init(argc, argv, NAME);
	co_watchdog(60);
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0 || pipe(pipefd) != 0)
		co_fail("socketpair or pipe: %s", strerror(errno));
	map[0].from = sv[0];
	map[0].to = 3;
	map[1].from = pipefd[1];
	map[1].to = 4;
	co_spawn(&c, args, map, 2, env, 0);
	close(sv[0]);
	close(pipefd[1]);
	co_phase("waiting for the writer's close to return");
	if (co_read_full(pipefd[0], &closed_byte, 1, "closed pipe") != 1)
		co_fail("the writer ended before its close returned");
	co_phase("draining the closed socket");
	while ((got = co_read_full(sv[1], buf, RECORD, "old socket")) == RECORD) {
		fill_record(want, n);
		if (memcmp(buf, want, RECORD) != 0)
			co_fail("record %u arrived wrong (or out of order)", n);
		n++;
	}
	if (got != 0)
		co_fail("the old socket ended in the middle of record %u (%zu bytes)", n, got);
	if (co_read_full(pipefd[0], &ok, sizeof(ok), "closed pipe") != sizeof(ok))
		co_fail("the writer did not say how many writes succeeded");
	if (ok != n)
		co_fail("%u writes succeeded but %u records arrived", ok, n);
	co_wait_ok(&c, "writer");
	co_note("%u whole records arrived before EOF", n);
	return 0;
}
