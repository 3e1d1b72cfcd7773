/* bench_devnull: cost of write() on a non-socket fd. write() of 1 byte to /dev/null in a
 * tight loop; prints
 *   RESULT calls=N ns_per_call=X
 * or "ERROR ..." and exit 1.
 *
 * usage: bench_devnull CALLS
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

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 3000000;
    if (n <= 0) return 2;
    int fd = open("/dev/null", O_WRONLY);
    if (fd < 0) {
        printf("ERROR open /dev/null: %s\n", strerror(errno));
        return 1;
    }
    char c = 'x';
    for (long i = 0; i < 100000; i++) /* warm-up */
        if (write(fd, &c, 1) != 1) goto fail;
    uint64_t t0 = now_ns();
    for (long i = 0; i < n; i++)
        if (write(fd, &c, 1) != 1) goto fail;
    uint64_t t1 = now_ns();
    printf("RESULT calls=%ld ns_per_call=%.2f\n", n, (double)(t1 - t0) / (double)n);
    return 0;
fail:
    printf("ERROR write to /dev/null: %s\n", strerror(errno));
    return 1;
}
