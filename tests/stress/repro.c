/* Minimal reproducers of the shim bugs the stress harness found
 * (tests/stress/README.md, "Findings").
 *
 *   cc -O2 -g -Wall -Wextra -Werror -D_GNU_SOURCE -pthread \
 *      -o build/tests/stress/repro tests/stress/repro.c
 *   COALESCE_LIB=build/libcoalesce.so build/tests/stress/repro CASE
 *
 * CASE:
 *   exit-race, _exit-race, exec-race
 *       Four threads write 16-byte records to one Unix socket, a blocking
 *       write() per record, and count (in memory shared with the receiver)
 *       each record whose write() returned 16. After 20 ms the main thread calls
 *       exit(0) / _exit(0) / execl("/bin/true"). Every counted record must
 *       reach the peer (the kernel had them), each thread's in order, with no
 *       hole. Up to 50 tries.
 *   pthread-exit
 *       The only thread makes three small writes, then pthread_exit(NULL):
 *       the process must end (exit status 0), as it does without the shim.
 *   split-small
 *       Two threads send 2000-byte records with MSG_DONTWAIT on one Unix
 *       socket (SO_SNDBUF 16384, waiting with poll after EAGAIN) while the
 *       receiver reads slowly: the kernel takes each such send whole or not
 *       at all, so every record arrives in one piece. COALESCE_MAX_BYTES=32000
 *       (for every case). Up to 5 tries.
 *
 * The receiver (this program, never under the shim) re-executes itself with
 * LD_PRELOAD=$COALESCE_LIB, COALESCE_DELAY_US=1000000 (so the deadline
 * flusher cannot hide the bug) and COALESCE_STATS=/dev/null (writing the
 * statistics at exit widens the window; REPRO_STATS=COALESCE_STATS=path.%p.json
 * keeps them). Exit 0: no bug shown; 1: bug shown. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WRITERS 4

static _Atomic uint32_t *acked; /* per writer thread: records whose write() returned */

static void *writer(void *arg)
{
	unsigned char rec[16];
	uint32_t tid = (uint32_t)(uintptr_t)arg;

	for (uint32_t i = 0;; i++) {
		memset(rec, 0, sizeof(rec));
		memcpy(rec, &tid, sizeof(tid));
		memcpy(rec + 4, &i, sizeof(i));
		if (write(3, rec, sizeof(rec)) != (ssize_t)sizeof(rec))
			return NULL;
		atomic_store(&acked[tid], i + 1);
	}
}

/* split-small: records of REC bytes, every byte after the 8-byte (thread,
 * seq) header derived from them, so an interleaved record shows. */
#define REC 2000
#define SPLIT_RECORDS 20000

static void fill_rec(unsigned char *rec, uint32_t tid, uint32_t seq)
{
	memcpy(rec, &tid, 4);
	memcpy(rec + 4, &seq, 4);
	for (int i = 8; i < REC; i++)
		rec[i] = (unsigned char)(tid * 131 + seq * 7 + (uint32_t)i);
}

static void *split_writer(void *arg)
{
	uint32_t tid = (uint32_t)(uintptr_t)arg;
	unsigned char rec[REC];

	for (uint32_t seq = 0; seq < SPLIT_RECORDS; seq++) {
		size_t done = 0;

		fill_rec(rec, tid, seq);
		while (done < REC) {
			ssize_t r = send(3, rec + done, REC - done, MSG_DONTWAIT);

			if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
				struct pollfd pfd = { .fd = 3, .events = POLLOUT };

				poll(&pfd, 1, 5000);
				continue;
			}
			if (r <= 0)
				_exit(93);
			if (done == 0 && (size_t)r < REC)
				atomic_fetch_add(&acked[3], 1); /* a short write of a whole small record */
			done += (size_t)r;
		}
	}
	return NULL;
}

static int child(const char *mode)
{
	struct timespec ts = { 0, 20 * 1000 * 1000 };
	pthread_t th[WRITERS];

	acked = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, 4, 0);
	if (acked == MAP_FAILED)
		return 90;
	if (!strcmp(mode, "split-small")) {
		for (uintptr_t i = 0; i < 2; i++)
			pthread_create(&th[i], NULL, split_writer, (void *)i);
		for (int i = 0; i < 2; i++)
			pthread_join(th[i], NULL);
		return 0;
	}
	if (!strcmp(mode, "pthread-exit")) {
		if (write(3, "abc", 3) != 3 || write(3, "def", 3) != 3 || write(3, "ghi", 3) != 3)
			return 91;
		atomic_store(&acked[0], 3);
		pthread_exit(NULL);
	}
	for (uintptr_t i = 0; i < WRITERS; i++)
		pthread_create(&th[i], NULL, writer, (void *)i);
	nanosleep(&ts, NULL);
	if (!strcmp(mode, "exit-race"))
		exit(0);
	if (!strcmp(mode, "_exit-race"))
		_exit(0);
	execl("/bin/true", "true", (char *)NULL);
	return 92;
}

/* split-small: reads slowly, then fast, and checks every record. */
static int check_split(int fd, _Atomic uint32_t *cnt, const char *mode)
{
	unsigned char buf[REC * 64], want[REC];
	uint64_t off = 0, recs = 0, bad = 0;
	size_t have = 0;
	struct timespec ms = { 0, 1000000 };
	ssize_t n;

	nanosleep(&(struct timespec){ 0, 200000000 }, NULL); /* let the socket fill */
	for (;;) {
		size_t want_len = recs < 3000 ? 700 : sizeof(buf) - have;

		if (want_len > sizeof(buf) - have)
			want_len = sizeof(buf) - have;
		n = read(fd, buf + have, want_len);
		if (n <= 0)
			break;
		have += (size_t)n;
		while (have >= REC) {
			uint32_t tid, seq;

			memcpy(&tid, buf, 4);
			memcpy(&seq, buf + 4, 4);
			fill_rec(want, tid, seq);
			if (tid > 1 || memcmp(buf, want, REC)) {
				if (!bad)
					printf("%s: the record at stream offset %llu is not one record: "
					       "another write landed inside it\n",
					       mode, (unsigned long long)off);
				bad++;
			}
			memmove(buf, buf + REC, have - REC);
			have -= REC;
			off += REC;
			recs++;
		}
		if (recs < 3000)
			nanosleep(&ms, NULL);
	}
	if (atomic_load(&cnt[3]))
		printf("%s: %u sends of a whole %d-byte record with MSG_DONTWAIT returned short "
		       "(the kernel takes such a write whole or says EAGAIN)\n",
		       mode, atomic_load(&cnt[3]), REC);
	return bad || atomic_load(&cnt[3]);
}

/* One run: returns 1 if the bug showed. */
static int run(const char *self, const char *lib, const char *mode)
{
	int sv[2], memfd = memfd_create("acked", 0), st = 0, bug = 0;
	_Atomic uint32_t *cnt;
	uint64_t got = 0, arrived[WRITERS] = { 0 }, lost = 0, acks = 0;
	unsigned char buf[65536 + 16];
	size_t have = 0;
	int misordered = 0;
	pid_t pid;
	ssize_t n;
	struct pollfd pfd;

	if (memfd < 0 || ftruncate(memfd, 4096) < 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
		perror("setup");
		exit(2);
	}
	cnt = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	if (!strcmp(mode, "split-small")) {
		int sndbuf = 16384; /* 32 KiB: the kernel cuts a send in ~16 KiB skbs */

		setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	}
	pid = fork();
	if (pid == 0) {
		char pre[4200];

		int a = fcntl(sv[1], F_DUPFD, 100), b = fcntl(memfd, F_DUPFD, 100);

		dup2(a, 3);
		dup2(b, 4);
		snprintf(pre, sizeof(pre), "LD_PRELOAD=%s", lib);
		putenv(pre);
		putenv("COALESCE_DELAY_US=1000000");
		putenv("COALESCE_MAX_BYTES=32000"); /* split-small: queue + record straddle 32640 */
		putenv(getenv("REPRO_STATS") ? getenv("REPRO_STATS") : "COALESCE_STATS=/dev/null");
		execl(self, self, "--child", mode, (char *)NULL);
		_exit(127);
	}
	close(sv[1]);
	if (!strcmp(mode, "split-small")) {
		bug = check_split(sv[0], cnt, mode);
		waitpid(pid, &st, 0);
		if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
			printf("%s: writer status 0x%x\n", mode, st);
			bug = 1;
		}
		close(sv[0]);
		munmap(cnt, 4096);
		close(memfd);
		return bug;
	}
	pfd.fd = sv[0];
	pfd.events = POLLIN;
	for (;;) {
		if (poll(&pfd, 1, 5000) == 0) {
			printf("%s: the writer process (pid %d) has not ended 5 s after it should have\n",
			       mode, pid);
			kill(pid, SIGKILL);
			bug = 1;
			break;
		}
		uint64_t base = got - have; /* stream offset of buf[0] */

		n = read(sv[0], buf + have, sizeof(buf) - have);
		if (n <= 0)
			break;
		got += (uint64_t)n;
		have += (size_t)n;
		for (size_t at = 0; at + 16 <= have; at += 16) {
			uint32_t tid, seq;

			memcpy(&tid, buf + at, sizeof(tid));
			memcpy(&seq, buf + at + 4, sizeof(seq));
			if (tid >= WRITERS)
				continue;
			if (seq != arrived[tid] && !misordered) {
				printf("%s: thread %u: record %u arrived where %llu was due (stream "
				       "offset %llu)\n",
				       mode, tid, seq, (unsigned long long)arrived[tid],
				       (unsigned long long)(base + at));
				misordered = 1;
			}
			arrived[tid] = (uint64_t)seq + 1;
		}
		memmove(buf, buf + have / 16 * 16, have % 16);
		have %= 16;
	}
	waitpid(pid, &st, 0);
	close(sv[0]);
	if (!strcmp(mode, "pthread-exit")) {
		if (!bug && !(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
			printf("%s: writer status 0x%x, expected exit 0\n", mode, st);
			bug = 1;
		}
	} else {
		for (int t = 0; t < WRITERS; t++) {
			acks += atomic_load(&cnt[t]);
			if (arrived[t] < atomic_load(&cnt[t]))
				lost += atomic_load(&cnt[t]) - arrived[t];
		}
		if (lost || misordered) {
			printf("%s: %llu records acknowledged by write(), %llu arrived: %llu LOST\n",
			       mode, (unsigned long long)acks, (unsigned long long)(got / 16),
			       (unsigned long long)lost);
			bug = 1;
		}
	}
	munmap(cnt, 4096);
	close(memfd);
	return bug;
}

int main(int argc, char **argv)
{
	const char *lib = getenv("COALESCE_LIB");
	char self[4096];
	ssize_t n;
	int tries;

	if (argc == 3 && !strcmp(argv[1], "--child"))
		return child(argv[2]);
	if (argc != 2) {
		fprintf(stderr, "usage: COALESCE_LIB=lib %s exit-race|_exit-race|exec-race|pthread-exit|split-small\n",
			argv[0]);
		return 2;
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n < 0)
		return 2;
	self[n] = 0;
	if (!lib)
		lib = "build/libcoalesce.so";
	tries = !strcmp(argv[1], "pthread-exit") ? 1 : !strcmp(argv[1], "split-small") ? 5 : 50;
	for (int i = 1; i <= tries; i++)
		if (run(self, lib, argv[1])) {
			printf("%s: bug shown (try %d)\n", argv[1], i);
			return 1;
		}
	printf("%s: not shown in %d tries\n", argv[1], tries);
	return 0;
}
