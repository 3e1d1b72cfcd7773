/* Which fd coalesces each socket, keyed by the socket's identity (its inode
 * number), and which sockets have an fd that passes every call to libc.
 *
 * Two fds that share one socket (duplicated before the program started:
 * inetd, systemd Accept=yes, socat EXEC give a child its connection as both
 * fd 0 and fd 1; or dup, fdopen, shutdown) must not coalesce one of them
 * while the other passes: bytes written through one would overtake bytes
 * queued on the other. So a socket is coalesced through at most one fd
 * (its owner), and only while none of its fds passes. */
#ifndef CO_SOCKMAP_H
#define CO_SOCKMAP_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "sys.h"

struct co_sockmap_slot {
	uint64_t id;       /* 0: empty */
	int owner;         /* the fd that coalesces the socket, or -1 */
	unsigned passing;  /* fds of the socket recorded as passing */
};

struct co_sockmap {
	pthread_mutex_t lock;
	struct co_sockmap_slot *slots;
	size_t cap; /* a power of two, or 0 */
	size_t count;
	/* The map could not record a socket (no memory, or an fd without a
	 * table entry passes): from then on no socket that is not in the map
	 * yet may be coalesced, since a passing fd of it may be unrecorded. */
	int incomplete;
};

/* sockmap_claim's answers besides another fd (>= 0). */
#define CO_SOCK_MINE (-1) /* fd is the socket's owner: it may coalesce. */
#define CO_SOCK_PASS (-2) /* fd must pass: the socket has a passing fd, or the
			   * map is incomplete. */

/* Asks to coalesce socket id through fd. Returns CO_SOCK_MINE (recorded as
 * owner), CO_SOCK_PASS, or the owner, another fd that still holds the socket
 * (per still_holds): fd must then pass, and the caller stops coalescing the
 * owner, which calls sockmap_pass for it. *recorded is set to 1 when fd is
 * recorded (as owner or passing): sockmap_release must be called for it
 * when it no longer holds the socket. */
int sockmap_claim(struct co_sockmap *m, const struct co_sys *sys, uint64_t id, int fd,
		  int (*still_holds)(void *arg, int fd, uint64_t id), void *arg,
		  int *recorded);

/* Records that fd, which holds socket id, passes from now on (stopped, or
 * without a table entry: fd is then -1): no other fd may coalesce the socket
 * while fd holds it. Sets *recorded to 1 if recorded (release it later), 0
 * if not (the map is then marked incomplete). Returns the socket's owner if
 * another fd that still holds it (per still_holds) coalesces it: the caller
 * stops coalescing that fd. Else -1. */
int sockmap_pass(struct co_sockmap *m, const struct co_sys *sys, uint64_t id, int fd,
		 int (*still_holds)(void *arg, int fd, uint64_t id), void *arg, int *recorded);

/* Returns the fd that coalesces socket id (and still holds it, per
 * still_holds), or -1. Records nothing. */
int sockmap_owner(struct co_sockmap *m, uint64_t id,
		  int (*still_holds)(void *arg, int fd, uint64_t id), void *arg);

/* fd, recorded for socket id (as owner or passing), no longer holds it. */
void sockmap_release(struct co_sockmap *m, uint64_t id, int fd);

#endif
