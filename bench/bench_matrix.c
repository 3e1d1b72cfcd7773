/* bench_matrix: one sender process writes MESSAGES messages of SIZE bytes, one write()
 * each, round-robin over CONNS TCP loopback connections (message m goes to connection
 * m % CONNS), to a receiver process that drains every connection with epoll and verifies the
 * byte count and a checksum of each connection's stream. Prints one line:
 *   RESULT size=S conns=N messages=M bytes=B ns_per_msg=X mb_per_s=Y elapsed_ms=Z
 * and exits 0, or prints "ERROR ..." and exits 1 (wrong byte count, wrong content, syscall
 * failure).
 *
 * usage: bench_matrix SIZE CONNS MESSAGES [--listen PORT] [--connect PORT]
 *
 * SIZE must be a multiple of 8, at least 16. The sender's sockets are nonblocking with
 * TCP_NODELAY, as in an event-driven server: a write that the kernel does not take in full
 * waits in poll() for POLLOUT on that connection and then writes the rest. The receiver is
 * this binary re-executed without LD_PRELOAD, so under the shim only the sender is shimmed.
 * By default the receiver listens on an ephemeral loopback port and the sender connects to
 * it; --listen and --connect let a relay (socat) sit between them: the receiver listens on
 * 127.0.0.1:LISTEN and the sender connects to 127.0.0.1:CONNECT.
 *
 * Timing runs from the first write until the receiver has seen end-of-file on every
 * connection (the sender shuts down each write side after its last message) and has sent
 * its answer over a pipe: the total byte count and an order-independent combination of the
 * per-connection checksums.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

#define MAX_SIZE (1 << 20)
#define RECV_BUF (256 * 1024)

static uint64_t splitmix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* The checksum of one connection's stream, taken as 8-byte words: the sum of word[k] * (2k+1).
 * It depends on every byte and its position, not on how the stream was cut into reads. */
struct stream_sum {
    uint64_t words, sum, bytes;
};

/* What the receiver reports for all connections: the checksums are combined by a sum of
 * hashes, so the sender can compute the same value without knowing which connection the
 * receiver accepted first. */
static uint64_t combine(const struct stream_sum *s)
{
    return splitmix(s->sum ^ splitmix(s->bytes));
}

/* The first 8 bytes of every message hold its connection and its sequence number on that
 * connection; the other bytes come from a template shared by all messages. */
static uint64_t header(uint64_t conn, uint64_t seq)
{
    return (conn << 40) ^ seq ^ 0x5a5a000000000000ull;
}

static void fill_template(unsigned char *t, size_t size)
{
    uint64_t x = 42;
    for (size_t i = 0; i < size; i++) {
        x = splitmix(x);
        t[i] = (unsigned char)x;
    }
}

/* ---- receiver ---------------------------------------------------------------------------- */

struct rconn {
    int fd;
    unsigned char carry[8];
    size_t ncarry;
    struct stream_sum s;
};

static void absorb(struct rconn *c, const unsigned char *p, size_t n)
{
    c->s.bytes += n;
    while (c->ncarry > 0 && c->ncarry < 8 && n > 0) {
        c->carry[c->ncarry++] = *p++;
        n--;
    }
    if (c->ncarry == 8) {
        uint64_t w;
        memcpy(&w, c->carry, 8);
        c->s.sum += w * (2 * c->s.words++ + 1);
        c->ncarry = 0;
    }
    uint64_t k = c->s.words, sum = c->s.sum;
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        sum += w * (2 * k++ + 1);
    }
    c->s.words = k;
    c->s.sum = sum;
    memcpy(c->carry + c->ncarry, p, n);
    c->ncarry += n;
}

static int receiver(int lfd, int ctl, int conns)
{
    struct rconn *cs = calloc((size_t)conns, sizeof *cs);
    unsigned char *buf = malloc(RECV_BUF);
    int ep = epoll_create1(0);
    if (!cs || !buf) die("receiver malloc");
    if (ep < 0) die("epoll_create1");
    for (int i = 0; i < conns; i++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
        if (fd < 0) die("accept");
        cs[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
    }
    close(lfd);
    unsigned char ready = 1;
    if (write(ctl, &ready, 1) != 1) die("receiver write ready");

    int open = conns;
    struct epoll_event evs[256];
    while (open > 0) {
        int n = epoll_wait(ep, evs, 256, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int e = 0; e < n; e++) {
            struct rconn *c = &cs[evs[e].data.u32];
            ssize_t r = read(c->fd, buf, RECV_BUF);
            if (r > 0) {
                absorb(c, buf, (size_t)r);
            } else if (r == 0) {
                close(c->fd);
                open--;
            } else if (errno != EAGAIN && errno != EINTR) {
                die("receiver read");
            }
        }
    }
    /* total bytes, combined checksums, connections whose stream ended inside a word */
    uint64_t ans[3] = {0, 0, 0};
    for (int i = 0; i < conns; i++) {
        ans[0] += cs[i].s.bytes;
        ans[1] += combine(&cs[i].s);
        ans[2] += cs[i].ncarry != 0;
    }
    if (write(ctl, ans, sizeof ans) != (ssize_t)sizeof ans) die("receiver write answer");
    return 0;
}

/* ---- sender ------------------------------------------------------------------------------ */

static int parse_port(const char *s)
{
    char *end;
    long v = strtol(s, &end, 10);
    return (*end || v < 0 || v > 65535) ? -1 : (int)v;
}

static void raise_fd_limit(int conns)
{
    struct rlimit rl;
    rlim_t need = (rlim_t)conns + 64;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) die("getrlimit");
    if (rl.rlim_cur >= need) return;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
        printf("ERROR %d connections need %llu file descriptors, the hard limit is %llu\n", conns,
               (unsigned long long)need, (unsigned long long)rl.rlim_max);
        exit(1);
    }
    rl.rlim_cur = need;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0) die("setrlimit");
}

/* Writes all of p to the nonblocking fd: what the kernel does not take at once is written
 * after poll() reports room. */
static void send_all(int fd, const unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd pf = {.fd = fd, .events = POLLOUT};
            if (poll(&pf, 1, -1) < 0 && errno != EINTR) die("poll");
        } else if (w < 0 && errno != EINTR) {
            die("write");
        }
    }
}

/* The checksum a connection's stream of `count` messages must have. The messages differ only
 * in their first word, so the template's words are summed once: a message starting at word
 * K adds header * (2K+1) + A + 2K*B, with A = sum of t[j] * (2j+1) and B = sum of t[j] over
 * the template's words j >= 1. */
static struct stream_sum expected(uint64_t conn, uint64_t count, const unsigned char *tmpl,
                                  size_t size)
{
    uint64_t a = 0, b = 0, nw = size / 8;
    for (uint64_t j = 1; j < nw; j++) {
        uint64_t w;
        memcpy(&w, tmpl + 8 * j, 8);
        a += w * (2 * j + 1);
        b += w;
    }
    struct stream_sum s = {0, 0, 0};
    for (uint64_t seq = 0; seq < count; seq++) {
        uint64_t k = s.words;
        s.sum += header(conn, seq) * (2 * k + 1) + a + 2 * k * b;
        s.words += nw;
    }
    s.bytes = count * size;
    return s;
}

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], "--recv") == 0)
        return receiver(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
    if (argc < 4) {
        fprintf(stderr, "usage: %s SIZE CONNS MESSAGES [--listen PORT] [--connect PORT]\n", argv[0]);
        return 2;
    }
    size_t size = strtoul(argv[1], NULL, 10);
    int conns = atoi(argv[2]);
    uint64_t msgs = strtoull(argv[3], NULL, 10);
    int listen_port = 0, connect_port = -1;
    for (int i = 4; i < argc; i += 2) {
        int *dst = !strcmp(argv[i], "--listen") ? &listen_port
                   : !strcmp(argv[i], "--connect") ? &connect_port : NULL;
        if (!dst || i + 1 >= argc || (*dst = parse_port(argv[i + 1])) < 0) {
            fprintf(stderr, "bad argument %s\n", argv[i]);
            return 2;
        }
    }
    if (size < 16 || size > MAX_SIZE || size % 8 || conns < 1 || msgs < (uint64_t)conns) {
        fprintf(stderr, "SIZE must be a multiple of 8 in 16..%d, CONNS >= 1, MESSAGES >= CONNS\n",
                MAX_SIZE);
        return 2;
    }
    raise_fd_limit(conns);

    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (lfd < 0) die("socket");
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                            .sin_port = htons((uint16_t)listen_port)};
    socklen_t al = sizeof a;
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
    if (listen(lfd, conns < 4096 ? 4096 : conns) < 0) die("listen");
    if (getsockname(lfd, (struct sockaddr *)&a, &al) < 0) die("getsockname");
    if (connect_port >= 0) a.sin_port = htons((uint16_t)connect_port);

    int ctl[2];
    if (pipe(ctl) < 0) die("pipe");
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        unsetenv("LD_PRELOAD");
        unsetenv("COALESCE_STATS");
        close(ctl[0]);
        char lbuf[16], cbuf[16], nbuf[16];
        snprintf(lbuf, sizeof lbuf, "%d", lfd);
        snprintf(cbuf, sizeof cbuf, "%d", ctl[1]);
        snprintf(nbuf, sizeof nbuf, "%d", conns);
        execl("/proc/self/exe", argv[0], "--recv", lbuf, cbuf, nbuf, (char *)NULL);
        _exit(127);
    }
    close(lfd);
    close(ctl[1]);

    int *fds = malloc(sizeof *fds * (size_t)conns);
    unsigned char *tmpl = malloc(size);
    if (!fds || !tmpl) die("malloc");
    fill_template(tmpl, size);
    for (int i = 0; i < conns; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (fds[i] < 0) die("socket");
        if (connect(fds[i], (struct sockaddr *)&a, sizeof a) < 0) die("connect");
        if (setsockopt(fds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0) die("TCP_NODELAY");
        if (fcntl(fds[i], F_SETFL, O_NONBLOCK) < 0) die("O_NONBLOCK");
    }
    unsigned char ready;
    if (read(ctl[0], &ready, 1) != 1) die("wait for receiver");

    uint64_t t0 = now_ns();
    for (uint64_t m = 0; m < msgs; m++) {
        uint64_t c = m % (uint64_t)conns, h = header(c, m / (uint64_t)conns);
        memcpy(tmpl, &h, 8);
        send_all(fds[c], tmpl, size);
    }
    for (int i = 0; i < conns; i++)
        if (shutdown(fds[i], SHUT_WR) < 0) die("shutdown");
    uint64_t ans[3];
    size_t got = 0;
    while (got < sizeof ans) {
        ssize_t r = read(ctl[0], (char *)ans + got, sizeof ans - got);
        if (r <= 0) {
            if (r < 0 && errno == EINTR) continue;
            die("read receiver answer");
        }
        got += (size_t)r;
    }
    uint64_t t1 = now_ns();
    for (int i = 0; i < conns; i++) close(fds[i]);

    int st;
    if (waitpid(pid, &st, 0) < 0) die("waitpid");
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        printf("ERROR receiver failed (status 0x%x)\n", st);
        return 1;
    }
    fill_template(tmpl, size);
    uint64_t want_bytes = msgs * size, want_mix = 0;
    for (int c = 0; c < conns; c++) {
        uint64_t count = msgs / (uint64_t)conns + ((uint64_t)c < msgs % (uint64_t)conns);
        struct stream_sum s = expected((uint64_t)c, count, tmpl, size);
        want_mix += combine(&s);
    }
    if (ans[0] != want_bytes) {
        printf("ERROR size=%zu conns=%d: receiver got %llu bytes, sent %llu\n", size, conns,
               (unsigned long long)ans[0], (unsigned long long)want_bytes);
        return 1;
    }
    if (ans[2] != 0 || ans[1] != want_mix) {
        printf("ERROR size=%zu conns=%d: content checksum differs\n", size, conns);
        return 1;
    }
    double ns = (double)(t1 - t0);
    printf("RESULT size=%zu conns=%d messages=%llu bytes=%llu ns_per_msg=%.2f mb_per_s=%.1f "
           "elapsed_ms=%.1f\n",
           size, conns, (unsigned long long)msgs, (unsigned long long)want_bytes,
           ns / (double)msgs, (double)want_bytes / ns * 1e3, ns / 1e6);
    return 0;
}
