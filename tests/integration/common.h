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

/* ---- datagrams (dgram_*.c) -------------------------------------------------------------- */

/* A test datagram of CO_DGRAM_HDR bytes or more starts with struct
 * co_dgram_hdr; the rest is a stream keyed by (writer, dest, seq). A
 * shorter one is the first len bytes of that stream, so that even a 1-byte
 * datagram carries a byte derived from its sequence number and can be
 * checked against the datagram expected next. */
#define CO_DGRAM_HDR 16
#define CO_DGRAM_MAGIC 0xd6a7
/* Writers and receivers one check can follow (writer ids fit in a byte). */
#define CO_DGRAM_WRITERS 64
#define CO_DGRAM_DESTS 8
/* Largest datagram received (UDP over IPv4 carries at most 65507 bytes,
 * over IPv6 65527). */
#define CO_DGRAM_MAX 65536

struct co_dgram_hdr {
	uint16_t magic;
	uint8_t writer;
	uint8_t dest;
	uint32_t seq;
	uint32_t len;
	uint32_t sum; /* co_fnv32 of the bytes after the header */
};

/* Fills buf with datagram seq of writer to dest, len bytes long. */
void co_dgram_fill(void *buf, size_t len, unsigned writer, unsigned dest, uint32_t seq);

/* Addresses travel to the child on its command line as text: "4:PORT"
 * (127.0.0.1), "6:PORT" (::1), "u:PATH" or "u:@NAME" (abstract AF_UNIX).
 * co_addr_parse fails the test on a bad text; co_addr_format writes the
 * text of an address got from getsockname or recvmsg. */
socklen_t co_addr_parse(const char *text, struct sockaddr_storage *ss);
void co_addr_format(const struct sockaddr_storage *ss, socklen_t len, char *buf, size_t size);
/* Whether two addresses are the same (unnamed AF_UNIX addresses are equal). */
int co_addr_equal(const struct sockaddr_storage *a, socklen_t alen,
		  const struct sockaddr_storage *b, socklen_t blen);

/* A datagram socket (close-on-exec) bound to the loopback address of family
 * with a port chosen by the kernel (AF_INET, AF_INET6), or for AF_UNIX to a
 * fresh abstract name, or (path != 0) to a fresh path in the test's
 * temporary directory. Fills *ss and *len with its address (if ss is not
 * NULL); fails the test on errors. */
int co_dgram_socket(int family, int path, struct sockaddr_storage *ss, socklen_t *len);
/* Sets up a receiving socket: SO_RXQ_OVFL (so that the kernel tells how
 * many datagrams it dropped on a full receive queue), an 8 MiB receive
 * buffer (SO_RCVBUFFORCE when allowed), and for UDP IP_RECVTOS or
 * IPV6_RECVTCLASS. */
void co_dgram_rx_setup(int fd);

/* One received datagram. */
struct co_dgram_msg {
	size_t len;   /* the datagram's length (even when it did not fit) */
	int trunc;    /* it did not fit in the buffer */
	uint32_t drops; /* SO_RXQ_OVFL: datagrams the kernel dropped on this socket before it */
	int tos;      /* IP_TOS or IPV6_TCLASS it carried, -1 if not reported */
	struct sockaddr_storage from;
	socklen_t fromlen;
};
/* One recvmsg on fd into buf (cap bytes) with flags. Returns 1 with a
 * datagram in *m, 0 on EAGAIN; retries EINTR and fails the test on
 * other errors. */
int co_dgram_recv(int fd, unsigned char *buf, size_t cap, int flags, struct co_dgram_msg *m);

/* The receiving side of a test: what each writer sends to each receiver,
 * in order, and what has arrived. A datagram's writer is known by its
 * source address when writers were added with co_dgram_add_writer, else
 * by its header. Every datagram is checked whole (length, bytes, TOS when
 * expected) against the next one expected from its writer at that
 * receiver, so a lost, duplicated, reordered, misdirected, merged or split
 * datagram fails the test, with a description. Loss is allowed only as far
 * as the kernel reports drops on that receiver (SO_RXQ_OVFL); such drops
 * are reported in a note. */
struct co_dgram_check;

struct co_dgram_check *co_dgram_check_new(const char *what);
/* Frees the check and closes its receiving sockets. */
void co_dgram_check_free(struct co_dgram_check *k);
/* Adds a receiving socket (after co_dgram_rx_setup), which the check then
 * owns; returns its dest id. */
int co_dgram_add_rx(struct co_dgram_check *k, int fd);
/* Adds a writer known by its source address (len 0: unnamed, as a
 * socketpair's end); returns its writer id. */
int co_dgram_add_writer(struct co_dgram_check *k, const struct sockaddr_storage *ss,
			socklen_t len);
/* The next datagram writer sends to dest: number seq, len bytes, carrying
 * TOS tos (-1: not checked). Returns the running count of datagrams
 * expected. */
uint64_t co_dgram_expect(struct co_dgram_check *k, unsigned writer, unsigned dest, uint32_t seq,
			 size_t len, int tos);
/* Receives until target datagrams arrived or are known dropped by the
 * kernel; fails, naming what is missing, after idle_ms without progress. */
void co_dgram_recv_until(struct co_dgram_check *k, uint64_t target, unsigned idle_ms);
/* Once the writers are gone: reads what is left (there must be nothing
 * unexpected), asks each UDP receiver for its final drop count (a probe
 * datagram), and fails unless every expected datagram arrived or the
 * kernel accounts for its loss. */
void co_dgram_finish(struct co_dgram_check *k);

/* A receiving socket for k: co_dgram_socket(family, path), set up
 * (co_dgram_rx_setup) and added (co_dgram_add_rx); its address is written
 * to text (size bytes) for the child's command line. Returns its dest id. */
int co_dgram_add_receiver(struct co_dgram_check *k, int family, int path, char *text,
			  size_t size);

/* The usual run of a datagram test: starts the child (co_spawn, with a
 * stats file) with the fds in map (n entries, closed here once handed
 * over), receives the total datagrams k expects while it runs, waits for
 * it, checks that nothing else arrives, and that it coalesced datagrams
 * (co_dgram_expect_coalesced with batched). what names the run. */
void co_dgram_run_child(struct co_dgram_check *k, const char *const *args,
			const struct co_fdmap *map, int n, const char *const *env, uint64_t total,
			int batched, const char *what);

/* THE datagram-coalescing check. Reads the child's stats and requires
 * "dgrams_queued" > 0 and, if batched, "dgram_flush_sendmmsg" +
 * "dgram_flush_gso" > 0. No-op with TEST_NO_SHIM. It does not stop the
 * test: a shortfall is printed at once and co_dgram_stats_verdict(), called
 * at the end of main, fails the test then. So a shim that passes datagrams
 * straight through still runs every correctness check first. */
void co_dgram_expect_coalesced(const struct co_child *c, int batched, const char *what);
void co_dgram_stats_verdict(void);

#endif
