/* Helpers shared by the benchmark programs. Each program is one file that
 * bench/run.sh compiles on its own; this header is all they share. */
#ifndef CO_BENCH_COMMON_H
#define CO_BENCH_COMMON_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Reports a failed call as "ERROR what: reason" on stdout, where the
 * drivers look for results, and exits 1. */
static inline void die(const char *what)
{
    printf("ERROR %s: %s\n", what, strerror(errno));
    fflush(stdout);
    exit(1);
}

/* Reads clock (CLOCK_MONOTONIC, CLOCK_PROCESS_CPUTIME_ID...) in ns. */
static inline uint64_t clock_ns(clockid_t clock)
{
    struct timespec ts;

    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t now_ns(void)
{
    return clock_ns(CLOCK_MONOTONIC);
}

#endif
