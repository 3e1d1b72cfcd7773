/* ThreadSanitizer does not intercept pthread_mutex_clocklock (GCC 12's
 * libtsan, and LLVM's, know pthread_mutex_timedlock only), so a lock core
 * takes with it is invisible to TSan: the unlock is reported as "unlock of an
 * unlocked mutex", and whatever the lock protects looks unprotected.
 *
 * In the TSan build of the tests, this definition takes the place of libc's:
 * it waits with pthread_mutex_timedlock, which TSan does see, converting the
 * deadline from the requested clock to CLOCK_REALTIME. Other builds use
 * libc's own. */
#include <errno.h>
#include <pthread.h>
#include <time.h>

#if defined(__SANITIZE_THREAD__)

static long long timespec_ns(const struct timespec *ts)
{
	return (long long)ts->tv_sec * 1000000000LL + ts->tv_nsec;
}

int pthread_mutex_clocklock(pthread_mutex_t *restrict mutex, clockid_t clockid,
			    const struct timespec *restrict abstime)
{
	struct timespec now, real;
	long long left, when;

	if (clockid == CLOCK_REALTIME)
		return pthread_mutex_timedlock(mutex, abstime);
	if (clockid != CLOCK_MONOTONIC)
		return EINVAL;
	clock_gettime(CLOCK_MONOTONIC, &now);
	left = timespec_ns(abstime) - timespec_ns(&now);
	clock_gettime(CLOCK_REALTIME, &real);
	when = timespec_ns(&real) + (left > 0 ? left : 0);
	real.tv_sec = (time_t)(when / 1000000000LL);
	real.tv_nsec = (long)(when % 1000000000LL);
	return pthread_mutex_timedlock(mutex, &real);
}

#else

/* ISO C wants at least one declaration in a file. */
typedef int tsan_clocklock_unused;

#endif
