/* bench_dgram: COUNT UDP datagrams over loopback from one sender to a receiver process that
 * counts and verifies every datagram. Prints one line:
 *   RESULT mode=M datagrams=N bytes=B ns_per_dgram=X send_ns_per_dgram=Y received=R
 *          rx_bytes=RB dropped=D lost=L send_errors=E
 * and exits 0, or prints "ERROR ..." and exits 1 (a datagram with wrong content or size, one
 * received twice, more received than sent, a syscall failure).
 *
 * usage: bench_dgram MODE COUNT
 *   send    connected socket, one send() of 64 bytes per datagram (run under the shim for the
 *           shim arm)
 *   mmsg    connected socket, sendmmsg() of 64 datagrams of 64 bytes per call
 *   gso     connected socket, UDP GSO: one send of 64 segments of 64 bytes (a UDP_SEGMENT
 *           control message); the receiver, without UDP_GRO, gets 64 separate datagrams
 *   gsomax  as gso, with as many segments per send as the kernel takes (128 on recent
 *           kernels, 64 on older ones; tried on a throwaway socket before the clock starts)
 *   rand    connected socket, one send() per datagram of 1..1400 bytes (pseudo-random)
 *   multi   unconnected socket, one sendto() of 64 bytes per datagram to 4 receiving sockets
 *           in turn
 *
 * UDP has no flow control, so a sender can outrun its receiver. The sender does not pace:
 * the figure is the time from the first send until the last datagram reached the receiver
 * (or, if the receiver already had everything, until the sender's last send returned), per
 * datagram sent; datagrams the kernel dropped because the receiver's buffer was full are
 * counted apart ("dropped", from SO_RXQ_OVFL and, at the end, SO_MEMINFO) from datagrams that
 * vanished otherwise ("lost"). The receiver asks for a large buffer so that drops stay rare.
 * The time of the sender's loop alone is printed too (send_ns_per_dgram).
 *
 * The receiver is this binary re-executed without LD_PRELOAD. After its loop the sender
 * tells the receiver, through a pipe, how many datagrams it sent, then blocks reading the
 * answer (a shim that queues datagrams flushes before such a read). The receiver answers
 * once every datagram is accounted for (received or dropped) or nothing came for 100 ms.
 *
 * Datagram content: of 8 bytes or more, a 4-byte sequence number and the 4-byte length, then
 * byte k = k*7 + length (mod 256); shorter ones have only that pattern. A datagram that two
 * sends were merged into, or that was cut, fails the length or the pattern check.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

#define SMALL 64
#define BATCH 64
#define GSO_MAX 128
#define MAX_DGRAM 1400
#define DESTS 4
#define RCVBUF (32 * 1024 * 1024)
#define QUIET_MS 100

static uint64_t splitmix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static unsigned char pattern(size_t k, size_t len)
{
    return (unsigned char)(k * 7 + len);
}

/* Writes datagram `seq` of `len` bytes to p. Only the header depends on seq: a buffer filled
 * once for a length needs just its first 8 bytes rewritten for each datagram. */
static void fill(unsigned char *p, uint32_t seq, size_t len)
{
    for (size_t k = 0; k < len; k++) p[k] = pattern(k, len);
    if (len >= 8) {
        uint32_t l = (uint32_t)len;
        memcpy(p, &seq, 4);
        memcpy(p + 4, &l, 4);
    }
}

static void set_header(unsigned char *p, uint32_t seq)
{
    memcpy(p, &seq, 4);
}

struct answer {
    uint64_t received, bytes, dropped, t_last;
};

/* ---- receiver ---------------------------------------------------------------------------- */

struct rx {
    uint64_t count, received, bytes, bad, dup, t_last;
    unsigned char *seen;
};

static void check(struct rx *s, const unsigned char *p, size_t len)
{
    s->received++;
    s->bytes += len;
    if (len >= 8) {
        uint32_t seq, l;
        memcpy(&seq, p, 4);
        memcpy(&l, p + 4, 4);
        if (l != len || seq >= s->count) {
            s->bad++;
            return;
        }
        if (s->seen[seq >> 3] & (1u << (seq & 7))) s->dup++;
        s->seen[seq >> 3] |= (unsigned char)(1u << (seq & 7));
    }
    for (size_t k = len >= 8 ? 8 : 0; k < len; k++) {
        if (p[k] != pattern(k, len)) {
            s->bad++;
            return;
        }
    }
}

static int receiver(int ctl_in, int ctl_out, uint64_t count, int nsock, const int *fds)
{
    struct rx s = {.count = count, .seen = calloc(count / 8 + 1, 1)};
    static unsigned char bufs[BATCH][MAX_DGRAM + 1];
    static char ctrl[BATCH][CMSG_SPACE(sizeof(uint32_t))];
    struct mmsghdr mm[BATCH];
    struct iovec iov[BATCH];
    uint32_t ovfl[DESTS] = {0};
    if (!s.seen) die("receiver malloc");

    struct pollfd pf[DESTS + 1];
    for (int i = 0; i < nsock; i++) pf[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
    pf[nsock] = (struct pollfd){.fd = ctl_in, .events = POLLIN};
    unsigned char ready = 1;
    if (write(ctl_out, &ready, 1) != 1) die("receiver write ready");

    uint64_t sent = 0;
    int done = 0;
    for (;;) {
        uint64_t dropped = 0;
        for (int i = 0; i < nsock; i++) dropped += ovfl[i];
        if (done && s.received + dropped >= sent) break;
        int n = poll(pf, (nfds_t)(done ? nsock : nsock + 1), done ? QUIET_MS : -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("receiver poll");
        }
        if (n == 0) break; /* quiet: whatever is missing was dropped or lost */
        if (!done && (pf[nsock].revents & (POLLIN | POLLHUP))) {
            if (read(ctl_in, &sent, sizeof sent) != (ssize_t)sizeof sent) die("receiver read count");
            done = 1;
        }
        for (int i = 0; i < nsock; i++) {
            if (!(pf[i].revents & POLLIN)) continue;
            for (int j = 0; j < BATCH; j++) {
                iov[j] = (struct iovec){bufs[j], sizeof bufs[j]};
                mm[j].msg_hdr = (struct msghdr){.msg_iov = &iov[j], .msg_iovlen = 1,
                                                .msg_control = ctrl[j],
                                                .msg_controllen = sizeof ctrl[j]};
            }
            int r = recvmmsg(fds[i], mm, BATCH, MSG_DONTWAIT, NULL);
            if (r < 0) {
                if (errno == EAGAIN || errno == EINTR) continue;
                die("recvmmsg");
            }
            for (int j = 0; j < r; j++) {
                if (mm[j].msg_hdr.msg_flags & MSG_TRUNC) s.bad++;
                check(&s, bufs[j], mm[j].msg_len);
                for (struct cmsghdr *c = CMSG_FIRSTHDR(&mm[j].msg_hdr); c;
                     c = CMSG_NXTHDR(&mm[j].msg_hdr, c))
                    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL)
                        memcpy(&ovfl[i], CMSG_DATA(c), sizeof ovfl[i]);
            }
            if (r > 0) s.t_last = now_ns();
        }
    }
    if (s.bad || s.dup) {
        printf("ERROR receiver: %llu datagrams with wrong size or content, %llu received twice\n",
               (unsigned long long)s.bad, (unsigned long long)s.dup);
        return 1;
    }
    /* Drops after the last datagram received are in no SO_RXQ_OVFL message: the final count
     * of each socket is read with SO_MEMINFO. */
    struct answer a = {s.received, s.bytes, 0, s.t_last};
    for (int i = 0; i < nsock; i++) {
        uint32_t mem[SK_MEMINFO_VARS];
        socklen_t ml = sizeof mem;
        if (getsockopt(fds[i], SOL_SOCKET, SO_MEMINFO, mem, &ml) == 0 && ml > SK_MEMINFO_DROPS * 4)
            a.dropped += mem[SK_MEMINFO_DROPS] > ovfl[i] ? mem[SK_MEMINFO_DROPS] : ovfl[i];
        else
            a.dropped += ovfl[i];
    }
    if (write(ctl_out, &a, sizeof a) != (ssize_t)sizeof a) die("receiver write answer");
    return 0;
}

/* ---- sender ------------------------------------------------------------------------------ */

static int udp_socket(void)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) die("socket");
    return fd;
}

/* A receiving socket on an ephemeral loopback port, with a large buffer and drop reports. */
static int rx_socket(struct sockaddr_in *a)
{
    int fd = udp_socket(), one = 1, sz = RCVBUF;
    socklen_t al = sizeof *a;
    *a = (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(fd, (struct sockaddr *)a, sizeof *a) < 0) die("bind");
    if (getsockname(fd, (struct sockaddr *)a, &al) < 0) die("getsockname");
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof sz) < 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    if (setsockopt(fd, SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof one) < 0) die("SO_RXQ_OVFL");
    return fd;
}

/* One send() or sendto(): 1 when sent, 0 when the kernel had no room (ENOBUFS, counted by
 * the caller, not fatal). */
static int send_one(int fd, const void *p, size_t len, const struct sockaddr_in *to)
{
    for (;;) {
        ssize_t w = to ? sendto(fd, p, len, 0, (const struct sockaddr *)to, sizeof *to)
                       : send(fd, p, len, 0);
        if (w == (ssize_t)len) return 1;
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && errno == ENOBUFS) return 0;
        die("send");
    }
}

/* How many segments of SMALL bytes one UDP GSO send may carry here: GSO_MAX
 * if the kernel takes that many (tried on a socket of its own, sending to
 * a socket of this process that is then closed), else BATCH. */
static int gso_max_segments(void)
{
    static unsigned char buf[GSO_MAX * SMALL];
    struct sockaddr_in sink;
    int rx = rx_socket(&sink), tx = udp_socket(), segs = BATCH;
    char ctrl[CMSG_SPACE(sizeof(uint16_t))] = {0};
    struct iovec iov = {buf, sizeof buf};
    struct msghdr msg = {.msg_name = &sink, .msg_namelen = sizeof sink, .msg_iov = &iov,
                         .msg_iovlen = 1, .msg_control = ctrl, .msg_controllen = sizeof ctrl};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    uint16_t seg = SMALL;

    cm->cmsg_level = SOL_UDP;
    cm->cmsg_type = UDP_SEGMENT;
    cm->cmsg_len = CMSG_LEN(sizeof seg);
    memcpy(CMSG_DATA(cm), &seg, sizeof seg);
    if (sendmsg(tx, &msg, 0) == (ssize_t)sizeof buf) segs = GSO_MAX;
    close(tx);
    close(rx);
    return segs;
}

int main(int argc, char **argv)
{
    if (argc >= 6 && strcmp(argv[1], "--recv") == 0) {
        int fds[DESTS], n = argc - 5;
        if (n > DESTS) return 2;
        for (int i = 0; i < n; i++) fds[i] = atoi(argv[5 + i]);
        return receiver(atoi(argv[2]), atoi(argv[3]), strtoull(argv[4], NULL, 10), n, fds);
    }
    if (argc != 3) {
        fprintf(stderr, "usage: %s send|mmsg|gso|gsomax|rand|multi COUNT\n", argv[0]);
        return 2;
    }
    const char *mode = argv[1];
    uint64_t count = strtoull(argv[2], NULL, 10);
    int m_send = !strcmp(mode, "send"), m_mmsg = !strcmp(mode, "mmsg"),
        m_gso = !strcmp(mode, "gso") || !strcmp(mode, "gsomax"), m_rand = !strcmp(mode, "rand"),
        m_multi = !strcmp(mode, "multi");
    int per_gso = !strcmp(mode, "gsomax") ? gso_max_segments() : BATCH;
    if (!(m_send || m_mmsg || m_gso || m_rand || m_multi) || count == 0 || count > UINT32_MAX) {
        fprintf(stderr, "bad mode or count\n");
        return 2;
    }
    int nsock = m_multi ? DESTS : 1;
    int rfd[DESTS];
    struct sockaddr_in dst[DESTS];
    for (int i = 0; i < nsock; i++) rfd[i] = rx_socket(&dst[i]);

    int to_rx[2], from_rx[2];
    if (pipe(to_rx) < 0 || pipe(from_rx) < 0) die("pipe");
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        unsetenv("LD_PRELOAD");
        unsetenv("COALESCE_STATS");
        close(to_rx[1]);
        close(from_rx[0]);
        char args[4 + DESTS][24];
        char *av[6 + DESTS];
        int k = 0;
        av[k++] = argv[0];
        av[k++] = "--recv";
        snprintf(args[0], sizeof args[0], "%d", to_rx[0]);
        snprintf(args[1], sizeof args[1], "%d", from_rx[1]);
        snprintf(args[2], sizeof args[2], "%llu", (unsigned long long)count);
        for (int i = 0; i < 3; i++) av[k++] = args[i];
        for (int i = 0; i < nsock; i++) {
            snprintf(args[3 + i], sizeof args[3 + i], "%d", rfd[i]);
            av[k++] = args[3 + i];
        }
        av[k] = NULL;
        execv("/proc/self/exe", av);
        _exit(127);
    }
    for (int i = 0; i < nsock; i++) close(rfd[i]);
    close(to_rx[0]);
    close(from_rx[1]);

    int fd = udp_socket();
    if (!m_multi && connect(fd, (struct sockaddr *)&dst[0], sizeof dst[0]) < 0) die("connect");
    unsigned char ready;
    if (read(from_rx[0], &ready, 1) != 1) die("wait for receiver");

    /* Everything a mode sends is laid out before the clock starts. */
    static unsigned char batch[GSO_MAX][SMALL];
    static unsigned char by_len[MAX_DGRAM + 1][MAX_DGRAM];
    uint16_t *lens = NULL;
    uint64_t total = 0, errors = 0;
    for (int j = 0; j < GSO_MAX; j++) fill(batch[j], 0, SMALL);
    if (m_rand) {
        if (!(lens = malloc(sizeof *lens * count))) die("malloc");
        for (size_t len = 1; len <= MAX_DGRAM; len++) fill(by_len[len], 0, len);
        for (uint64_t i = 0; i < count; i++) {
            lens[i] = (uint16_t)(1 + splitmix(i) % MAX_DGRAM);
            total += lens[i];
        }
    } else {
        total = count * SMALL;
    }
    struct mmsghdr mm[BATCH];
    struct iovec iov[BATCH];
    for (int j = 0; j < BATCH; j++) {
        iov[j] = (struct iovec){batch[j], SMALL};
        mm[j].msg_hdr = (struct msghdr){.msg_iov = &iov[j], .msg_iovlen = 1};
    }
    char gso_ctrl[CMSG_SPACE(sizeof(uint16_t))] = {0};
    struct iovec gso_iov = {batch, sizeof batch};
    struct msghdr gso_msg = {.msg_iov = &gso_iov, .msg_iovlen = 1, .msg_control = gso_ctrl,
                             .msg_controllen = sizeof gso_ctrl};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&gso_msg);
    cm->cmsg_level = SOL_UDP;
    cm->cmsg_type = UDP_SEGMENT;
    cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    uint16_t seg = SMALL;
    memcpy(CMSG_DATA(cm), &seg, sizeof seg);

    uint64_t t0 = now_ns();
    if (m_mmsg || m_gso) {
        int per = m_gso ? per_gso : BATCH;
        for (uint64_t i = 0; i < count; i += (uint64_t)per) {
            int n = count - i < (uint64_t)per ? (int)(count - i) : per;
            for (int j = 0; j < n; j++) set_header(batch[j], (uint32_t)(i + (uint64_t)j));
            if (m_gso) {
                gso_iov.iov_len = (size_t)n * SMALL;
                if (sendmsg(fd, &gso_msg, 0) != (ssize_t)gso_iov.iov_len) die("sendmsg UDP_SEGMENT");
                continue;
            }
            for (int done = 0; done < n;) {
                int w = sendmmsg(fd, mm + done, (unsigned)(n - done), 0);
                if (w < 0 && errno == EINTR) continue;
                if (w <= 0) die("sendmmsg");
                done += w;
            }
        }
    } else if (m_rand) {
        for (uint64_t i = 0; i < count; i++) {
            unsigned char *p = by_len[lens[i]];
            if (lens[i] >= 8) set_header(p, (uint32_t)i);
            if (!send_one(fd, p, lens[i], NULL)) {
                errors++;
                total -= lens[i];
            }
        }
    } else {
        for (uint64_t i = 0; i < count; i++) {
            set_header(batch[0], (uint32_t)i);
            if (!send_one(fd, batch[0], SMALL, m_multi ? &dst[i % DESTS] : NULL)) {
                errors++;
                total -= SMALL;
            }
        }
    }
    uint64_t t_loop = now_ns();
    uint64_t sent = count - errors;
    if (write(to_rx[1], &sent, sizeof sent) != (ssize_t)sizeof sent) die("write count");
    struct answer a;
    ssize_t got = read(from_rx[0], &a, sizeof a);

    int st;
    if (waitpid(pid, &st, 0) < 0) die("waitpid");
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || got != (ssize_t)sizeof a) {
        printf("ERROR receiver failed (status 0x%x)\n", st);
        return 1;
    }
    if (a.received > sent || a.bytes > total) {
        printf("ERROR mode=%s receiver got %llu datagrams (%llu bytes), sent %llu (%llu bytes)\n",
               mode, (unsigned long long)a.received, (unsigned long long)a.bytes,
               (unsigned long long)sent, (unsigned long long)total);
        return 1;
    }
    if (a.received == sent && a.bytes != total) {
        printf("ERROR mode=%s every datagram arrived but %llu bytes of %llu\n", mode,
               (unsigned long long)a.bytes, (unsigned long long)total);
        return 1;
    }
    uint64_t t_end = a.t_last > t_loop ? a.t_last : t_loop;
    uint64_t lost = sent - a.received > a.dropped ? sent - a.received - a.dropped : 0;
    printf("RESULT mode=%s datagrams=%llu bytes=%llu ns_per_dgram=%.2f send_ns_per_dgram=%.2f "
           "received=%llu rx_bytes=%llu dropped=%llu lost=%llu send_errors=%llu\n",
           mode, (unsigned long long)count, (unsigned long long)total,
           (double)(t_end - t0) / (double)count, (double)(t_loop - t0) / (double)count,
           (unsigned long long)a.received, (unsigned long long)a.bytes,
           (unsigned long long)a.dropped, (unsigned long long)lost, (unsigned long long)errors);
    return 0;
}
