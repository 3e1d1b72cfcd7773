/* The shim's process-wide state: the system call table given to core, the
 * constructor and destructor, fork handling and the statistics file. */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "shim.h"

struct co_ctx co_shim_ctx;
_Atomic int co_shim_on;
pid_t co_shim_pid;

/* Each adapter keeps the application's errno and returns -errno. */
#define CO_KEEP_ERRNO(call)                                                    \
	do {                                                                   \
		int saved_ = errno;                                            \
		long r_ = (long)(call);                                        \
		if (r_ < 0)                                                    \
			r_ = -errno;                                           \
		errno = saved_;                                                \
		return r_;                                                     \
	} while (0)

static ssize_t sys_sendmsg(int fd, const struct msghdr *msg, int flags)
{
	CO_KEEP_ERRNO(REAL(sendmsg)(fd, msg, flags));
}

static ssize_t sys_writev(int fd, const struct iovec *iov, int iovcnt)
{
	CO_KEEP_ERRNO(REAL(writev)(fd, iov, iovcnt));
}

static int sys_sendmmsg(int fd, struct mmsghdr *msgs, unsigned int vlen, int flags)
{
	CO_KEEP_ERRNO(REAL(sendmmsg)(fd, msgs, vlen, flags));
}

static int sys_getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
	CO_KEEP_ERRNO(REAL(getsockopt)(fd, level, name, val, len));
}

static int sys_getpeername(int fd, struct sockaddr *addr, socklen_t *len)
{
	CO_KEEP_ERRNO(REAL(getpeername)(fd, addr, len));
}

static int sys_fcntl_getfl(int fd)
{
	CO_KEEP_ERRNO(REAL(fcntl)(fd, F_GETFL));
}

static int sys_socket_id(int fd, uint64_t *id)
{
	struct stat st;
	int saved = errno, r = fstat(fd, &st);

	if (r < 0)
		r = -errno;
	else if (!S_ISSOCK(st.st_mode))
		r = -ENOTSOCK;
	else
		*id = (uint64_t)st.st_ino;
	errno = saved;
	return r;
}

static int sys_close(int fd)
{
	CO_KEEP_ERRNO(REAL(close)(fd));
}

static int sys_hand_over(int fd)
{
	int saved = errno, r = -1, ph, priv;

	priv = REAL(fcntl)(fd, F_DUPFD_CLOEXEC, 0);
	ph = REAL(socket)(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (priv >= 0 && ph >= 0)
		r = REAL(dup3)(ph, fd, O_CLOEXEC);
	if (r < 0) {
		r = -errno;
		if (priv >= 0)
			REAL(close)(priv);
	} else {
		r = priv;
	}
	if (ph >= 0)
		REAL(close)(ph);
	errno = saved;
	return r;
}

static int sys_poll(struct pollfd *fds, nfds_t nfds, int timeout_ms)
{
	CO_KEEP_ERRNO(REAL(poll)(fds, nfds, timeout_ms));
}

static uint64_t sys_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Logs to stderr, or appends to COALESCE_LOG_FILE, opened for each message
 * so that the shim holds no fd the application could close or reuse. */
static void sys_log_write(const char *buf, size_t len)
{
	int saved = errno, fd = 2;

	if (co_shim_ctx.cfg.log_file)
		fd = open(co_shim_ctx.cfg.log_file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd >= 0)
		REAL(write)(fd, buf, len);
	if (fd >= 0 && co_shim_ctx.cfg.log_file)
		REAL(close)(fd);
	errno = saved;
}

static void *sys_alloc(size_t size)
{
	int saved = errno;
	void *p = malloc(size);

	errno = saved;
	return p;
}

static void *sys_realloc(void *ptr, size_t size)
{
	int saved = errno;
	void *p = realloc(ptr, size);

	errno = saved;
	return p;
}

static void sys_free(void *ptr)
{
	int saved = errno;

	free(ptr);
	errno = saved;
}

static const struct co_sys co_shim_sys = {
	.sendmsg = sys_sendmsg,
	.writev = sys_writev,
	.sendmmsg = sys_sendmmsg,
	.getsockopt = sys_getsockopt,
	.getpeername = sys_getpeername,
	.fcntl_getfl = sys_fcntl_getfl,
	.socket_id = sys_socket_id,
	.poll = sys_poll,
	.close = sys_close,
	.hand_over = sys_hand_over,
	.now_ns = sys_now_ns,
	.log_write = sys_log_write,
	.ring_send_batch = co_uring_send_batch,
	.alloc = sys_alloc,
	.realloc = sys_realloc,
	.free = sys_free,
};

static const char *env_lookup(const char *name)
{
	return getenv(name);
}

static void report_to_stderr(const char *msg)
{
	REAL(write)(2, msg, strlen(msg));
}

int co_shim_in_vfork_child(void)
{
	return getpid() != co_shim_pid;
}

static void before_fork(void)
{
	if (co_shim_active())
		co_flush_all_before_fork(&co_shim_ctx);
}

static void in_fork_child(void)
{
	co_shim_pid = getpid();
	co_after_fork_child(&co_shim_ctx);
	co_flusher_after_fork_child();
	co_uring_after_fork_child();
}

/* Replaces each "%p" in pattern with the pid. Returns 0, or -1 if too long. */
static int expand_path(const char *pattern, char *out, size_t size)
{
	size_t len = 0;
	int n;

	for (; *pattern; pattern++) {
		if (pattern[0] == '%' && pattern[1] == 'p') {
			n = snprintf(out + len, size - len, "%ld", (long)getpid());
			if (n < 0 || (size_t)n >= size - len)
				return -1;
			len += (size_t)n;
			pattern++;
			continue;
		}
		if (len + 1 >= size)
			return -1;
		out[len++] = *pattern;
	}
	out[len] = '\0';
	return 0;
}

void co_shim_write_stats(void)
{
	char path[4096], buf[8192];
	size_t len;
	int fd, saved = errno;

	if (!co_shim_ctx.cfg.stats_path)
		return;
	if (expand_path(co_shim_ctx.cfg.stats_path, path, sizeof(path)) < 0) {
		co_log(&co_shim_ctx, CO_LOG_ERROR, "COALESCE_STATS path too long");
		return;
	}
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		co_log(&co_shim_ctx, CO_LOG_ERROR, "cannot write statistics to %s: %s", path,
		       strerror(errno));
		errno = saved;
		return;
	}
	co_collect_calls(&co_shim_ctx);
	len = co_stats_format(&co_shim_ctx.stats, (long)getpid(), buf, sizeof(buf));
	REAL(write)(fd, buf, len);
	REAL(close)(fd);
	errno = saved;
}

__attribute__((constructor(101))) static void co_shim_init(void)
{
	struct co_config cfg;
	int saved = errno;

	co_real_resolve();
	co_config_load(&cfg, env_lookup, report_to_stderr);
	/* Programs rewrite the memory of their environment (setproctitle in
	 * redis, nginx, postgres): keep copies of the strings. */
	if (cfg.stats_path)
		cfg.stats_path = strdup(cfg.stats_path);
	if (cfg.log_file)
		cfg.log_file = strdup(cfg.log_file);
	co_ctx_init(&co_shim_ctx, &co_shim_sys, &cfg);
	co_shim_ctx.on_pending = co_flusher_notify;
	co_shim_pid = getpid();
	pthread_atfork(before_fork, NULL, in_fork_child);
	atomic_store_explicit(&co_shim_on, !cfg.disabled, memory_order_relaxed);
	if (co_shim_active())
		co_signals_init();
	co_log(&co_shim_ctx, CO_LOG_DEBUG, "loaded in pid %ld%s", (long)co_shim_pid,
	       cfg.disabled ? " (disabled)" : "");
	errno = saved;
}

__attribute__((destructor(101))) static void co_shim_fini(void)
{
	int saved = errno;

	/* Other threads write on until the process ends: with ctx->exiting
	 * set, each of their writes sends its fd's queue and itself at once,
	 * under the fd's lock, so none is lost or overtaken. */
	if (co_shim_active() && !co_shim_in_vfork_child())
		co_flush_all_final(&co_shim_ctx, CO_ST_flush_exit);
	co_shim_write_stats();
	errno = saved;
}
