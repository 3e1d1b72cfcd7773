/* Resolution of the real libc functions: once, in the constructor or on the
 * first hook called before it. */
#include "real.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/syscall.h>
#include <unistd.h>

struct co_real co_real;

/* Reports on stderr without going through any hook. */
static void die(const char *name, const char *why)
{
	const char *parts[] = { "coalesce: cannot resolve ", name, ": ", why, "\n" };
	size_t i;

	for (i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
		syscall(SYS_write, 2, parts[i], strlen(parts[i]));
	abort();
}

/* The hooks that no header declares (the rest come from the headers):
 * comparing each resolved address with the hook's own tells a hook that
 * finds itself. */
ssize_t __write(int, const void *, size_t);
ssize_t __read_chk(int, void *, size_t, size_t);
ssize_t __recv_chk(int, void *, size_t, size_t, int);
ssize_t __recvfrom_chk(int, void *, size_t, size_t, int, struct sockaddr *, socklen_t *);
int __poll_chk(struct pollfd *, nfds_t, int, size_t);
int __ppoll_chk(struct pollfd *, nfds_t, const struct timespec *, const sigset_t *, size_t);

void co_real_resolve(void)
{
	void *p;

#define CO_REAL_RESOLVE(ret, name, params)                                             \
	p = dlsym(RTLD_NEXT, #name);                                                   \
	if (p && p == (void *)name)                                                    \
		die(#name, "dlsym(RTLD_NEXT) returned the hook itself");               \
	co_real.name = (ret(*) params)p;
	CO_REAL_FUNCTIONS(CO_REAL_RESOLVE)
#undef CO_REAL_RESOLVE
#define CO_REAL_RESOLVE_HELPER(ret, name, params) co_real.name = (ret(*) params)dlsym(RTLD_NEXT, #name);
	CO_REAL_HELPERS(CO_REAL_RESOLVE_HELPER)
#undef CO_REAL_RESOLVE_HELPER
	if (!co_real.write || !co_real.read || !co_real.close || !co_real.sendmsg ||
	    !co_real.getsockopt || !co_real.getpeername)
		die("write, read, close, sendmsg, getsockopt or getpeername",
		    "not found in the libraries after this one");
}
