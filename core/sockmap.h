/* Which fd each coalesced socket was classified on, keyed by the socket's
 * identity (its inode number). Two fds that share one socket, duplicated
 * before the program started (inetd, systemd Accept=yes, socat EXEC give a
 * child its connection as both fd 0 and fd 1), must not keep two queues:
 * bytes written through one would overtake bytes queued on the other. */
#ifndef CO_SOCKMAP_H
#define CO_SOCKMAP_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "sys.h"

struct co_sockmap_slot {
	uint64_t id; /* 0: empty */
	int fd;
};

struct co_sockmap {
	pthread_mutex_t lock;
	struct co_sockmap_slot *slots;
	size_t cap; /* a power of two, or 0 */
	size_t count;
};

/* Records that fd holds socket id, unless another fd that still holds it
 * (per still_holds) is recorded: returns that fd. Returns -1 once recorded,
 * or -ENOMEM-like -2 when the map could not grow (fd is then not recorded). */
int sockmap_claim(struct co_sockmap *m, const struct co_sys *sys, uint64_t id, int fd,
		  int (*still_holds)(void *arg, int fd, uint64_t id), void *arg);

/* Forgets that fd holds socket id. */
void sockmap_release(struct co_sockmap *m, uint64_t id, int fd);

#endif
