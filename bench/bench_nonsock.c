/* bench_nonsock: the cost of write() on a descriptor that is not a socket, which the shim
 * must hand to libc after one table lookup. write() of 1 byte in a tight loop to:
 *   null   /dev/null
 *   pipe   a pipe whose read end this process empties, 4096 bytes at a time, every 4096
 *          writes (the reads are in the timed loop: one per 4096 writes)
 *   file   a new regular file in DIR (default /dev/shm, a tmpfs), rewound to its start every
 *          1 MiB so that it stays small; removed at the end
 * Prints one line:
 *   RESULT target=T calls=N ns_per_call=X
 * or "ERROR ..." and exits 1.
 *
 * usage: bench_nonsock null|pipe|file CALLS [DIR]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

#define WARMUP 100000
#define PIPE_CHUNK 4096
#define FILE_WRAP (1024 * 1024)

/* One write of one byte, then whatever the target needs every so often to stay bounded: the
 * pipe is emptied, the file rewound. */
static void one(int fd, int drain, int wrap, long i)
{
    static char buf[PIPE_CHUNK];
    if (write(fd, "x", 1) != 1) die("write");
    if (drain >= 0 && (i + 1) % PIPE_CHUNK == 0 && read(drain, buf, sizeof buf) != sizeof buf)
        die("read pipe");
    if (wrap && (i + 1) % FILE_WRAP == 0 && lseek(fd, 0, SEEK_SET) < 0) die("lseek");
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: %s null|pipe|file CALLS [DIR]\n", argv[0]);
        return 2;
    }
    const char *target = argv[1];
    long n = atol(argv[2]);
    int fd, drain = -1, wrap = 0;
    char path[4096] = "";
    if (n <= 0) return 2;
    if (!strcmp(target, "null")) {
        if ((fd = open("/dev/null", O_WRONLY)) < 0) die("open /dev/null");
    } else if (!strcmp(target, "pipe")) {
        int p[2];
        if (pipe(p) < 0) die("pipe");
        fd = p[1];
        drain = p[0];
    } else if (!strcmp(target, "file")) {
        snprintf(path, sizeof path, "%s/bench_nonsock.XXXXXX", argc > 3 ? argv[3] : "/dev/shm");
        if ((fd = mkstemp(path)) < 0) die("mkstemp");
        wrap = 1;
    } else {
        fprintf(stderr, "unknown target %s\n", target);
        return 2;
    }
    /* The warm-up is a whole number of pipe chunks, so the pipe is empty when timing starts. */
    for (long i = 0; i < WARMUP / PIPE_CHUNK * PIPE_CHUNK; i++) one(fd, drain, wrap, i);
    if (wrap && lseek(fd, 0, SEEK_SET) < 0) die("lseek");
    uint64_t t0 = now_ns();
    for (long i = 0; i < n; i++) one(fd, drain, wrap, i);
    uint64_t t1 = now_ns();
    if (path[0]) unlink(path);
    printf("RESULT target=%s calls=%ld ns_per_call=%.2f\n", target, n, (double)(t1 - t0) / (double)n);
    return 0;
}
