/* bench_stream: N records of 64 bytes over TCP loopback, one write() per record (or, in
 * "ideal" mode, memcpy into a 64 KiB buffer and one write() per 64 KiB), to a draining
 * receiver. Prints one line:
 *   RESULT mode=... records=N bytes=B ns_per_record=X elapsed_ms=Y
 * and exits 0, or prints "ERROR ..." and exits 1 (wrong byte count, wrong content, syscall
 * failure).
 *
 * usage: bench_stream MODE RECORDS        MODE: nodelay | nagle | cork | ideal
 *
 * The receiver is this same binary, re-executed in a child with LD_PRELOAD removed from its
 * environment, so that when the benchmark runs under the shim only the sender is shimmed.
 * Timing runs from the first write until the receiver has confirmed the byte count (the
 * sender shuts down its write side and reads the receiver's 16-byte answer: the count of
 * bytes and a checksum of everything received).
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

#define REC 64
#define IDEAL_BUF (64 * 1024)

/* record i: 8-byte little-endian sequence number, then 56 bytes derived from it */
static void make_record(unsigned char *r, uint64_t i)
{
    memcpy(r, &i, 8);
    memset(r + 8, (int)(i * 7 + 1) & 0xff, REC - 8);
}

/* checksum over the stream as 8-byte words: sum of word[k] * (2k+1) */
typedef struct { uint64_t k, sum; } cks_t;
static inline void cks_word(cks_t *c, uint64_t w)
{
    c->sum += w * (2 * c->k + 1);
    c->k++;
}

static int write_all(int fd, const void *p, size_t n)
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

static int read_all(int fd, void *p, size_t n)
{
    char *b = p;
    while (n > 0) {
        ssize_t r = read(fd, b, n);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (r == 0) return -1;
        b += r;
        n -= (size_t)r;
    }
    return 0;
}

static int receiver(int lfd)
{
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0) die("accept");
    close(lfd);
    unsigned char ready = 1;
    if (write_all(fd, &ready, 1) < 0) die("receiver write ready");
    size_t cap = 256 * 1024;
    unsigned char *buf = malloc(cap + 8);
    if (!buf) die("malloc");
    uint64_t total = 0;
    size_t carry = 0;
    cks_t c = {0, 0};
    for (;;) {
        ssize_t r = read(fd, buf + carry, cap);
        if (r < 0) {
            if (errno == EINTR) continue;
            die("receiver read");
        }
        if (r == 0) break;
        total += (uint64_t)r;
        size_t have = carry + (size_t)r, words = have / 8;
        for (size_t w = 0; w < words; w++) {
            uint64_t v;
            memcpy(&v, buf + 8 * w, 8);
            cks_word(&c, v);
        }
        carry = have - words * 8;
        memmove(buf, buf + words * 8, carry);
    }
    uint64_t ans[2] = {total, c.sum};
    if (write_all(fd, ans, sizeof ans) < 0) die("receiver write answer");
    close(fd);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--recv") == 0)
        return receiver(atoi(argv[2]));
    if (argc != 3) {
        fprintf(stderr, "usage: %s nodelay|nagle|cork|ideal RECORDS\n", argv[0]);
        return 2;
    }
    const char *mode = argv[1];
    uint64_t n = strtoull(argv[2], NULL, 10);
    int m_nodelay = !strcmp(mode, "nodelay"), m_nagle = !strcmp(mode, "nagle"),
        m_cork = !strcmp(mode, "cork"), m_ideal = !strcmp(mode, "ideal");
    if (!(m_nodelay || m_nagle || m_cork || m_ideal) || n == 0) {
        fprintf(stderr, "bad mode or count\n");
        return 2;
    }

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
        unsetenv("LD_PRELOAD");
        unsetenv("COALESCE_STATS");
        char fdbuf[16];
        snprintf(fdbuf, sizeof fdbuf, "%d", lfd);
        execl("/proc/self/exe", argv[0], "--recv", fdbuf, (char *)NULL);
        _exit(127);
    }

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) die("connect");
    close(lfd);
    int one = 1;
    if (m_nodelay && setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
        die("TCP_NODELAY");
    if (m_cork && setsockopt(fd, IPPROTO_TCP, TCP_CORK, &one, sizeof one) < 0) die("TCP_CORK");
    unsigned char ready;
    if (read_all(fd, &ready, 1) < 0) die("wait for receiver");

    unsigned char rec[REC];
    unsigned char *ibuf = NULL;
    size_t ifill = 0;
    if (m_ideal && !(ibuf = malloc(IDEAL_BUF))) die("malloc");

    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < n; i++) {
        make_record(rec, i);
        if (m_ideal) {
            memcpy(ibuf + ifill, rec, REC);
            ifill += REC;
            if (ifill == IDEAL_BUF) {
                if (write_all(fd, ibuf, ifill) < 0) die("write");
                ifill = 0;
            }
        } else {
            ssize_t w = write(fd, rec, REC);
            if (w != REC) {
                if (w < 0 && errno != EINTR) die("write");
                if (write_all(fd, rec + (w > 0 ? w : 0), REC - (size_t)(w > 0 ? w : 0)) < 0)
                    die("write");
            }
        }
    }
    if (m_ideal && ifill && write_all(fd, ibuf, ifill) < 0) die("write");
    int zero = 0;
    if (m_cork && setsockopt(fd, IPPROTO_TCP, TCP_CORK, &zero, sizeof zero) < 0) die("uncork");
    if (shutdown(fd, SHUT_WR) < 0) die("shutdown");
    uint64_t ans[2];
    if (read_all(fd, ans, sizeof ans) < 0) die("read receiver answer");
    uint64_t t1 = now_ns();
    close(fd);

    int st;
    if (waitpid(pid, &st, 0) < 0) die("waitpid");
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        printf("ERROR receiver failed (status 0x%x)\n", st);
        return 1;
    }

    /* expected checksum, computed the same way over the records sent */
    cks_t c = {0, 0};
    for (uint64_t i = 0; i < n; i++) {
        make_record(rec, i);
        for (int w = 0; w < REC / 8; w++) {
            uint64_t v;
            memcpy(&v, rec + 8 * w, 8);
            cks_word(&c, v);
        }
    }
    uint64_t want = n * REC;
    if (ans[0] != want) {
        printf("ERROR mode=%s receiver got %llu bytes, sent %llu\n", mode,
               (unsigned long long)ans[0], (unsigned long long)want);
        return 1;
    }
    if (ans[1] != c.sum) {
        printf("ERROR mode=%s content checksum differs (%llx != %llx)\n", mode,
               (unsigned long long)ans[1], (unsigned long long)c.sum);
        return 1;
    }
    printf("RESULT mode=%s records=%llu bytes=%llu ns_per_record=%.2f elapsed_ms=%.1f\n", mode,
           (unsigned long long)n, (unsigned long long)want, (double)(t1 - t0) / (double)n,
           (double)(t1 - t0) / 1e6);
    return 0;
}
