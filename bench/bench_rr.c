/* bench_rr: blocking request/response over TCP loopback (TCP_NODELAY on both ends).
 * The client writes a 64-byte request with one write() and blocks in read() for the 64-byte
 * reply; the server reads a request and writes the reply with one write(). Prints:
 *   RESULT split=0|1 rounds=N mean_us=.. p50_us=.. p99_us=.. max_us=..
 * or "ERROR ..." and exit 1 (short read, wrong reply, syscall failure).
 *
 * usage: bench_rr ROUNDS [server-shim] [split]
 * The server is this binary re-executed in a child; it keeps LD_PRELOAD only when
 * "server-shim" is given, so "shim in client only" and "shim in both" can be run.
 * "split": the client writes each request in two write()s, a 16-byte header then a 48-byte
 * body (as many protocol clients do); the reply is still one 64-byte write.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

#define MSG 64
#define WARMUP 1000

/* returns 1 on success, 0 on EOF before the first byte, -1 on error/short */
static int read_full(int fd, void *p, size_t n)
{
    char *b = p;
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, b + got, n - got);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (r == 0) return got == 0 ? 0 : -1;
        got += (size_t)r;
    }
    return 1;
}

static int write_full(int fd, const void *p, size_t n)
{
    const char *b = p;
    while (n > 0) {
        ssize_t w = write(fd, b, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

static int server(int lfd)
{
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0) die("accept");
    close(lfd);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    unsigned char m[MSG];
    for (;;) {
        int r = read_full(fd, m, MSG);
        if (r == 0) break;
        if (r < 0) die("server read");
        m[8] ^= 0xff; /* the reply differs from the request in a known way */
        if (write_full(fd, m, MSG) < 0) die("server write");
    }
    close(fd);
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--serve") == 0) return server(atoi(argv[2]));
    if (argc < 2) {
        fprintf(stderr, "usage: %s ROUNDS [server-shim] [split]\n", argv[0]);
        return 2;
    }
    long rounds = atol(argv[1]);
    int server_shim = 0, split = 0;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "server-shim") == 0) server_shim = 1;
        else if (strcmp(argv[i], "split") == 0) split = 1;
        else {
            fprintf(stderr, "unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (rounds <= 0) return 2;

    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (lfd < 0) die("socket");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
    if (listen(lfd, 1) < 0) die("listen");
    if (getsockname(lfd, (struct sockaddr *)&a, &al) < 0) die("getsockname");

    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        if (!server_shim) unsetenv("LD_PRELOAD");
        char fdbuf[16];
        snprintf(fdbuf, sizeof fdbuf, "%d", lfd);
        execl("/proc/self/exe", argv[0], "--serve", fdbuf, (char *)NULL);
        _exit(127);
    }

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) die("connect");
    close(lfd);
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0) die("TCP_NODELAY");

    uint64_t *rtt = malloc(sizeof *rtt * (size_t)rounds);
    if (!rtt) die("malloc");
    unsigned char req[MSG], rep[MSG];
    memset(req, 0x5a, MSG);
    for (long i = -WARMUP; i < rounds; i++) {
        uint64_t seq = (uint64_t)(i + WARMUP);
        memcpy(req, &seq, 8);
        uint64_t t0 = now_ns();
        if (split) {
            if (write(fd, req, 16) != 16 || write(fd, req + 16, MSG - 16) != MSG - 16)
                die("client write");
        } else if (write(fd, req, MSG) != MSG) {
            die("client write");
        }
        if (read_full(fd, rep, MSG) != 1) die("client read");
        uint64_t t1 = now_ns();
        req[8] ^= 0xff;
        int bad = memcmp(req, rep, MSG) != 0;
        req[8] ^= 0xff;
        if (bad) {
            printf("ERROR wrong reply at round %ld\n", i);
            return 1;
        }
        if (i >= 0) rtt[i] = t1 - t0;
    }
    shutdown(fd, SHUT_WR);
    close(fd);
    int st;
    if (waitpid(pid, &st, 0) < 0) die("waitpid");
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        printf("ERROR server failed (status 0x%x)\n", st);
        return 1;
    }

    double sum = 0;
    for (long i = 0; i < rounds; i++) sum += (double)rtt[i];
    qsort(rtt, (size_t)rounds, sizeof *rtt, cmp_u64);
    long i50 = rounds / 2, i99 = (long)((double)rounds * 0.99);
    if (i99 >= rounds) i99 = rounds - 1;
    printf("RESULT split=%d rounds=%ld mean_us=%.3f p50_us=%.3f p99_us=%.3f max_us=%.3f\n", split, rounds,
           sum / (double)rounds / 1e3, (double)rtt[i50] / 1e3, (double)rtt[i99] / 1e3,
           (double)rtt[rounds - 1] / 1e3);
    return 0;
}
