/* Shared helpers for the integration tests (the .c files beside this one).
 *
 * Every test is one program that runs twice: as the parent (never under the
 * shim: it sets things up, receives and verifies every byte) and, re-executed
 * from /proc/self/exe with argv[1] == CO_CHILD_FLAG and LD_PRELOAD set to the
 * library, as the child that exercises the shim.
 *
 * Environment understood by every test:
 *   COALESCE_LIB   path of the library (default ./build/libcoalesce.so)
 *   TEST_SEED      seed (decimal or 0x hex); default: a fresh one per run
 *   TEST_NO_SHIM=1 run the children without LD_PRELOAD and skip the stats
 *                  checks: shows that a test's byte checks hold without the
 *                  shim (a sanity check of the test itself)
 *   TEST_VERBOSE=1 print the stats read and other details
 *   TEST_KEEP=1    keep the stats files (they are kept anyway on failure)
 * Exit: 0 pass, 77 skipped, anything else fail. */
#ifndef CO_TEST_COMMON_H
#define CO_TEST_COMMON_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#define CO_CHILD_FLAG "--co-child"
#define CO_SKIP 77

/* The largest COALESCE_DELAY_US the library accepts (1 s). Tests that must
 * not be rescued by the deadline flusher use it. */
#define CO_LONG_DELAY "COALESCE_DELAY_US=1000000"

/* ---- process-wide state and reporting -------------------------------------------------- */

extern const char *co_name;   /* test name, for messages */
extern uint64_t co_seed;      /* the run's seed */
extern int co_is_child;       /* 1 in the re-executed child */
extern int co_verbose;

/* Parent side: call first in main. Reads TEST_SEED, COALESCE_LIB; re-executes
 * itself without LD_PRELOAD if it was started under the coalesce library. */
void co_init(int argc, char **argv, const char *name);
/* Child side: call first in the child's main (args after the flag). */
void co_child_init(const char *name);

/* Prints "FAIL <name>: <msg> (seed=...)" (or "child FAIL..." in the child),
 * kills the children the parent started, and exits 1. */
__attribute__((noreturn, format(printf, 1, 2))) void co_fail(const char *fmt, ...);
/* Prints "skipped: <msg>" and exits 77. */
__attribute__((noreturn, format(printf, 1, 2))) void co_skip(const char *fmt, ...);
/* Prints an informational line to stderr (only if TEST_VERBOSE, unless force). */
__attribute__((format(printf, 1, 2))) void co_info(const char *fmt, ...);
__attribute__((format(printf, 1, 2))) void co_note(const char *fmt, ...);


/* What the test is doing now; printed when the watchdog fires or on co_fail. */
__attribute__((format(printf, 1, 2))) void co_phase(const char *fmt, ...);
/* Fails the test (killing the children) if it is still running after seconds. */
void co_watchdog(unsigned seconds);

/* ---- deterministic PRNG and byte streams ------------------------------------------------ */

struct co_rng {
	uint64_t s;
};

static inline uint64_t co_mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static inline void co_rng_init(struct co_rng *r, uint64_t seed, uint64_t stream)
{
	r->s = co_mix64(seed ^ co_mix64(stream + 0x9e3779b97f4a7c15ULL));
}

static inline uint64_t co_rand(struct co_rng *r)
{
	r->s += 0x9e3779b97f4a7c15ULL;
	return co_mix64(r->s);
}

/* Uniform in [lo, hi] (inclusive). */
static inline uint64_t co_range(struct co_rng *r, uint64_t lo, uint64_t hi)
{
	return lo + co_rand(r) % (hi - lo + 1);
}

/* Returns 1 with probability num/den. */
static inline int co_chance(struct co_rng *r, unsigned num, unsigned den)
{
	return co_rand(r) % den < num;
}

/* A byte stream determined by key: the byte at offset off is a pure function
 * of (key, off), so the receiver can check any byte without state. */
void co_stream_fill(uint64_t key, uint64_t off, void *buf, size_t len);
/* Returns the index of the first byte of buf that differs from the stream at
 * off, or len if all match. */
size_t co_stream_check(uint64_t key, uint64_t off, const void *buf, size_t len);
static inline unsigned char co_stream_byte(uint64_t key, uint64_t off)
{
	return (unsigned char)(co_mix64(key ^ co_mix64(off >> 3)) >> ((off & 7) * 8));
}
/* Key of stream number n of this run. */
static inline uint64_t co_stream_key(uint64_t n)
{
	return co_mix64(co_seed * 31 + n + 1);
}

/* 32-bit FNV-1a, for record checksums. */
uint32_t co_fnv32(const void *buf, size_t len);

/* ---- I/O helpers ---------------------------------------------------------------------- */

/* write() all of buf, retrying short writes and EINTR; fails the test on error. */
void co_write_all(int fd, const void *buf, size_t len, const char *what);
/* Reads exactly len bytes, retrying EINTR. Returns len, or fewer if EOF came
 * first; fails the test on errors. */
size_t co_read_full(int fd, void *buf, size_t len, const char *what);
/* Reads until EOF, verifying each byte against stream key from offset 0;
 * fails (with offset, expected and got) on the first difference, on an early
 * EOF or on extra bytes. what names the stream in messages. */
void co_recv_verify_stream(int fd, uint64_t key, uint64_t expected_total, const char *what);
/* Describes a mismatch at off (received bytes at buf, avail of them) and fails. */
__attribute__((noreturn)) void co_stream_mismatch(const char *what, uint64_t key, uint64_t off,
						  const unsigned char *buf, size_t avail);
void co_set_nonblock(int fd, int on);
void co_set_cloexec(int fd, int on);

/* ---- sockets ---------------------------------------------------------------------------- */

/* A TCP listener on the loopback address of family (AF_INET or AF_INET6),
 * port chosen by the kernel. Returns the fd, or -1 with errno set (e.g. no
 * IPv6); *port gets the port. */
int co_tcp_listen(int family, int *port);
/* Connects to loopback:port; returns the fd or -1 with errno. */
int co_tcp_connect(int family, int port);
/* A connected TCP pair over loopback. Returns 0, or -1 with errno. */
int co_tcp_pair(int family, int *client, int *server);
/* Returns NULL if IPv6 loopback works, else a reason. */
const char *co_ipv6_unavailable(void);
/* accept() with a hang check: fails the test if nothing connects in time. */
int co_accept(int lfd, const char *what);

/* ---- spawning the child under the shim ------------------------------------------------ */

/* The library's absolute path (fails if it does not exist), or NULL if
 * TEST_NO_SHIM is set. */
const char *co_lib(void);
/* Whether the children run under the shim (TEST_NO_SHIM unset). */
int co_shim_on(void);

struct co_fdmap {
	int from; /* fd in the parent */
	int to;   /* fd number in the child */
};

struct co_child {
	pid_t pid;
	char stats[640]; /* the stats file (after exit), "" if not requested */
};

/* Starts the child: /proc/self/exe CO_CHILD_FLAG args... with the fds in map
 * (n entries) at their given numbers, stdin/stdout/stderr kept unless mapped,
 * every other fd closed, LD_PRELOAD set to the library, every inherited
 * COALESCE_* variable removed, then env (NULL-terminated "NAME=VALUE" list)
 * added, and COALESCE_STATS=<dir>/NAME.%p.json if want_stats. */
void co_spawn(struct co_child *c, const char *const *args, const struct co_fdmap *map, int n,
	      const char *const *env, int want_stats);
/* Waits for the child; returns the raw wait status. */
int co_wait(struct co_child *c);
/* Waits and fails unless the child exited with status 0. */
void co_wait_ok(struct co_child *c, const char *what);
/* Describes a wait status ("exited 3", "killed by signal 13 (Broken pipe)"). */
const char *co_status_str(int status);

/* Starts the child (co_spawn, with a stats file) with fd3 as its fd 3 and,
 * unless fd4 is -1, fd4 as its fd 4, then closes fd3 and fd4 in the parent:
 * they are handed over to the child, and the parent keeps no copy. */
void co_spawn_fds(struct co_child *c, const char *const *args, const char *const *env, int fd3,
		  int fd4);
/* Makes a TCP pair over IPv4 loopback (fails the test if it cannot) and
 * starts the child (co_spawn_fds) with one end as its fd 3 and fd4 (or -1)
 * as its fd 4. Returns the other end, on which the parent receives what the
 * child writes to its fd 3. */
int co_spawn_on_pair(struct co_child *c, const char *const *args, const char *const *env,
		     int fd4);
/* Starts the child on a TCP pair (co_spawn_on_pair, no fd 4), receives what
 * it writes until EOF and verifies it (co_recv_verify_stream: total bytes
 * of stream key; what names the stream in messages and in the phase), then
 * closes the receiving end. Fails the test on any difference; waiting for
 * the child is left to the caller. */
void co_spawn_recv_stream(struct co_child *c, const char *const *args, const char *const *env,
			  uint64_t key, uint64_t total, const char *what);

/* ---- stats ------------------------------------------------------------------------------ */

/* Reads key from the child's stats file. Returns 0 and sets *val, -1 if the
 * file is missing/unreadable, -2 if the key is not in it. */
int co_stats_get(const struct co_child *c, const char *key, long long *val);
/* Same, but fails the test if the file or key is missing. */
long long co_stats_need(const struct co_child *c, const char *key);
/* Checks that coalescing happened: writes_queued >= min_queued and
 * flush_syscalls * ratio <= writes_queued. No-op when the shim is off. */
void co_stats_expect_coalesced(const struct co_child *c, long long min_queued, long long ratio,
			       const char *what);
/* Prints the interesting counters (verbose mode). */
void co_stats_dump(const struct co_child *c, const char *what);

/* ---- a writer that meets EAGAIN (nonblocking_epoll_et, msg_dontwait) --------------------- */

/* The two tests differ only in the writer's calls. The child writes
 * CO_EAGAIN_TOTAL bytes of a stream to its fd 3 (a TCP socket) in random
 * sizes, mostly small, with calls that must never block, and waits for room
 * after each EAGAIN. It reports its first EAGAIN on its fd 4 (a pipe) and at
 * the end sends a summary there. The parent reads nothing until that first
 * EAGAIN (so a call that blocks shows up as a hang), then reads slowly,
 * then fast, and verifies every byte. */
#define CO_EAGAIN_TOTAL (8u << 20)
/* An edge (or POLLOUT) that has not come by then never will. */
#define CO_EAGAIN_WAIT_MS 5000

/* What the child of such a test does in its own way. */
struct co_eagain_ops {
	/* Makes one call that writes size bytes of buf to fd and must not
	 * block; api (0, 1 or 2, drawn at random for each call) picks which
	 * call. Returns what that call returned, with its errno. */
	ssize_t (*write)(void *arg, int fd, unsigned char *buf, size_t size, int api);
	/* Waits for room on fd after EAGAIN number eagain at stream offset
	 * off; fails the test if none comes within CO_EAGAIN_WAIT_MS. */
	void (*wait_room)(void *arg, int fd, unsigned long eagain, uint64_t off);
	void *arg;
};

/* Child side: writes stream number stream (co_stream_key) to fd 3 through
 * ops until CO_EAGAIN_TOTAL bytes have been written, continuing short
 * writes, retrying EINTR and waiting for room after EAGAIN; writes "A" to
 * fd 4 at the first EAGAIN and the summary "eagain=N calls=N partial=N"
 * at the end, then closes fd 3. Fails the test on any other error. */
void co_eagain_write(uint64_t stream, const struct co_eagain_ops *ops);

/* One variant, as the parent runs it. */
struct co_eagain_variant {
	int stream;          /* stream number: the child's first argument */
	const char *mode;    /* the child's second argument, or NULL for none */
	const char *how;     /* names the variant in messages */
	int big;             /* big socket buffers, and a fast reader from the start */
	const char *blocked; /* the call named if no EAGAIN comes: "a nonblocking write" */
};

/* Parent side: starts the child (arguments: the stream number, then mode if
 * not NULL) on a TCP pair with 16 KiB socket buffers (4 MiB if big) and a
 * control pipe; unless big, reads nothing until the child reports its first
 * EAGAIN (fails after 10 s without it), then makes 250 slow reads of
 * 512-4096 bytes; then reads fast until EOF. Verifies every byte and that
 * exactly CO_EAGAIN_TOTAL arrived, that the child exited 0, that it saw
 * EAGAIN (unless big), and that the stats show coalescing: at least a
 * quarter of its calls queued, at least 4 queued writes per flush. */
void co_eagain_run(const struct co_eagain_variant *v);

/* ---- misc ------------------------------------------------------------------------------- */

uint64_t co_now_ns(void);
void co_sleep_ms(unsigned ms);
/* Parses an argument as unsigned 64-bit (decimal or 0x). */
uint64_t co_arg_u64(const char *s);

#endif
