/* The libc functions the shim wraps, resolved once with dlsym(RTLD_NEXT).
 * Every hook calls the real function through REAL(name). */
#ifndef CO_SHIM_REAL_H
#define CO_SHIM_REAL_H

#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#define CO_REAL_FUNCTIONS(X)                                                              \
	X(ssize_t, write, (int, const void *, size_t))                                    \
	X(ssize_t, send, (int, const void *, size_t, int))                                \
	X(ssize_t, sendto, (int, const void *, size_t, int, const struct sockaddr *,     \
			    socklen_t))                                                   \
	X(ssize_t, sendmsg, (int, const struct msghdr *, int))                            \
	X(int, sendmmsg, (int, struct mmsghdr *, unsigned int, int))                      \
	X(ssize_t, writev, (int, const struct iovec *, int))                              \
	X(ssize_t, read, (int, void *, size_t))                                           \
	X(ssize_t, readv, (int, const struct iovec *, int))                               \
	X(ssize_t, recv, (int, void *, size_t, int))                                      \
	X(ssize_t, recvfrom, (int, void *, size_t, int, struct sockaddr *, socklen_t *))  \
	X(ssize_t, recvmsg, (int, struct msghdr *, int))                                  \
	X(int, recvmmsg, (int, struct mmsghdr *, unsigned int, int, struct timespec *))   \
	X(ssize_t, __read_chk, (int, void *, size_t, size_t))                             \
	X(ssize_t, __recv_chk, (int, void *, size_t, size_t, int))                        \
	X(ssize_t, __recvfrom_chk, (int, void *, size_t, size_t, int, struct sockaddr *,  \
				    socklen_t *))                                         \
	X(int, poll, (struct pollfd *, nfds_t, int))                                      \
	X(int, ppoll, (struct pollfd *, nfds_t, const struct timespec *, const sigset_t *)) \
	X(int, __poll_chk, (struct pollfd *, nfds_t, int, size_t))                        \
	X(int, __ppoll_chk, (struct pollfd *, nfds_t, const struct timespec *,            \
			     const sigset_t *, size_t))                                   \
	X(int, select, (int, fd_set *, fd_set *, fd_set *, struct timeval *))             \
	X(int, pselect, (int, fd_set *, fd_set *, fd_set *, const struct timespec *,      \
			 const sigset_t *))                                               \
	X(int, epoll_wait, (int, struct epoll_event *, int, int))                         \
	X(int, epoll_pwait, (int, struct epoll_event *, int, int, const sigset_t *))      \
	X(int, epoll_pwait2, (int, struct epoll_event *, int, const struct timespec *,    \
			      const sigset_t *))                                          \
	X(int, accept, (int, struct sockaddr *, socklen_t *))                             \
	X(int, accept4, (int, struct sockaddr *, socklen_t *, int))                       \
	X(int, connect, (int, const struct sockaddr *, socklen_t))                        \
	X(int, socket, (int, int, int))                                                   \
	X(int, socketpair, (int, int, int, int *))                                        \
	X(int, close, (int))                                                              \
	X(int, close_range, (unsigned int, unsigned int, int))                            \
	X(void, closefrom, (int))                                                         \
	X(int, shutdown, (int, int))                                                      \
	X(int, dup, (int))                                                                \
	X(int, dup2, (int, int))                                                          \
	X(int, dup3, (int, int, int))                                                     \
	X(int, fcntl, (int, int, ...))                                                    \
	X(int, fcntl64, (int, int, ...))                                                  \
	X(int, ioctl, (int, unsigned long, ...))                                          \
	X(int, setsockopt, (int, int, int, const void *, socklen_t))                      \
	X(int, getsockopt, (int, int, int, void *, socklen_t *))                          \
	X(ssize_t, sendfile, (int, int, off_t *, size_t))                                 \
	X(ssize_t, sendfile64, (int, int, off_t *, size_t))                               \
	X(ssize_t, splice, (int, loff_t *, int, loff_t *, size_t, unsigned int))          \
	X(ssize_t, copy_file_range, (int, loff_t *, int, loff_t *, size_t, unsigned int)) \
	X(FILE *, fdopen, (int, const char *))                                            \
	X(int, execve, (const char *, char *const[], char *const[]))                      \
	X(int, execv, (const char *, char *const[]))                                      \
	X(int, execvp, (const char *, char *const[]))                                     \
	X(int, execvpe, (const char *, char *const[], char *const[]))                     \
	X(int, fexecve, (int, char *const[], char *const[]))                              \
	X(void, _exit, (int))                                                             \
	X(void, _Exit, (int))                                                             \
	X(int, sigaction, (int, const struct sigaction *, struct sigaction *))            \
	X(sighandler_t, signal, (int, sighandler_t))

/* Functions core needs that the shim does not interpose. */
#define CO_REAL_HELPERS(X)                                                                \
	X(int, getpeername, (int, struct sockaddr *, socklen_t *))

struct co_real {
#define CO_REAL_FIELD(ret, name, params) ret(*name) params;
	CO_REAL_FUNCTIONS(CO_REAL_FIELD)
	CO_REAL_HELPERS(CO_REAL_FIELD)
#undef CO_REAL_FIELD
};

extern struct co_real co_real;

/* Resolves every real function. Aborts if dlsym hands back a hook. */
void co_real_resolve(void);

#define REAL(name) (__builtin_expect(co_real.name != NULL, 1) ? co_real.name \
							     : (co_real_resolve(), co_real.name))

#endif
