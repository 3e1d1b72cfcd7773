/* Process lifecycle: exec replaces the process image (the queues would be
 * lost), _exit and _Exit skip the destructor. Both flush every queue first,
 * except in a vfork child, which shares the parent's memory. */
#include <stdarg.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "shim.h"

static void flush_before(enum co_counter trigger)
{
	if (co_shim_active() && !co_shim_in_vfork_child())
		co_flush_all_final(&co_shim_ctx, trigger);
}

/* An exec returned: it failed, and the process goes on coalescing. */
static int exec_failed(int r)
{
	int saved = errno;

	co_exit_cancelled(&co_shim_ctx);
	errno = saved;
	return r;
}

static void before_exit(void)
{
	if (co_shim_active() && !co_shim_in_vfork_child()) {
		co_flush_all_final(&co_shim_ctx, CO_ST_flush_exit);
		co_shim_write_stats();
	}
}

CO_HOOK int execve(const char *path, char *const argv[], char *const envp[])
{
	flush_before(CO_ST_flush_exec);
	return exec_failed(REAL(execve)(path, argv, envp));
}

CO_HOOK int execv(const char *path, char *const argv[])
{
	flush_before(CO_ST_flush_exec);
	return exec_failed(REAL(execv)(path, argv));
}

CO_HOOK int execvp(const char *file, char *const argv[])
{
	flush_before(CO_ST_flush_exec);
	return exec_failed(REAL(execvp)(file, argv));
}

CO_HOOK int execvpe(const char *file, char *const argv[], char *const envp[])
{
	flush_before(CO_ST_flush_exec);
	return exec_failed(REAL(execvpe)(file, argv, envp));
}

CO_HOOK int fexecve(int fd, char *const argv[], char *const envp[])
{
	flush_before(CO_ST_flush_exec);
	return exec_failed(REAL(fexecve)(fd, argv, envp));
}

/* Collects the variadic arguments of execl, execlp and execle into an argv.
 * Returns argc, or -1 with errno E2BIG when there are too many. */
#define CO_EXECL_MAX 4096
static int collect_args(const char *arg0, va_list ap, char **argv, char ***envp)
{
	int argc = 0;

	argv[argc++] = (char *)arg0;
	while (arg0) {
		if (argc == CO_EXECL_MAX) {
			errno = E2BIG;
			return -1;
		}
		arg0 = va_arg(ap, const char *);
		argv[argc++] = (char *)arg0;
	}
	if (envp)
		*envp = va_arg(ap, char **);
	return argc;
}

/* The body of execl, execlp and execle: gathers the arguments from arg on
 * into argv, then returns call, which uses argv. */
#define CO_EXECL(arg, envp, call)                                              \
	do {                                                                   \
		char *argv[CO_EXECL_MAX + 1];                                  \
		va_list ap;                                                    \
		int r;                                                         \
		va_start(ap, arg);                                             \
		r = collect_args(arg, ap, argv, envp);                         \
		va_end(ap);                                                    \
		return r < 0 ? -1 : (call);                                    \
	} while (0)

CO_HOOK int execl(const char *path, const char *arg, ...)
{
	CO_EXECL(arg, NULL, execv(path, argv));
}

CO_HOOK int execlp(const char *file, const char *arg, ...)
{
	CO_EXECL(arg, NULL, execvp(file, argv));
}

CO_HOOK int execle(const char *path, const char *arg, ...)
{
	char **envp;

	CO_EXECL(arg, &envp, execve(path, argv, envp));
}

CO_HOOK void _exit(int status)
{
	before_exit();
	if (REAL(_exit))
		REAL(_exit)(status);
	syscall(SYS_exit_group, status);
	__builtin_unreachable();
}

CO_HOOK void _Exit(int status)
{
	before_exit();
	if (REAL(_Exit))
		REAL(_Exit)(status);
	syscall(SYS_exit_group, status);
	__builtin_unreachable();
}
