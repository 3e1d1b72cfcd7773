/* Resolution of the real libc functions: once, in the constructor or on the
 * first hook called before it. */
#include "real.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
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

void co_real_resolve(void)
{
	Dl_info info;
	void *self_base;
	void *p;

	dladdr((void *)co_real_resolve, &info);
	self_base = info.dli_fbase;
#define CO_REAL_RESOLVE(ret, name, params)                                             \
	p = dlsym(RTLD_NEXT, #name);                                                   \
	if (p && dladdr(p, &info) && info.dli_fbase == self_base)                      \
		die(#name, "dlsym(RTLD_NEXT) returned the hook itself");               \
	co_real.name = (ret(*) params)p;
	CO_REAL_FUNCTIONS(CO_REAL_RESOLVE)
#undef CO_REAL_RESOLVE
	if (!co_real.write || !co_real.read || !co_real.close || !co_real.sendmsg)
		die("write/read/close/sendmsg", "not found in the libraries after this one");
}
