/* Internal: queues of datagrams. Each application call stays one datagram,
 * with its own destination; a flush sends runs of equal-size datagrams to
 * one destination as one UDP GSO send, and the rest with sendmmsg. Every
 * function here expects the fd's lock to be held. */
#ifndef CO_DGRAM_H
#define CO_DGRAM_H

#include <sys/socket.h>

#include "ctx.h"

/* Destinations of an unconnected socket that the kernel accepted once. */
#define CO_DGRAM_DESTS 4

struct co_dgram {
	int family;              /* AF_INET, AF_INET6 or AF_UNIX */
	unsigned char connected; /* sends without an address go to the peer */
	unsigned char gso;       /* UDP GSO may be used on this socket */
	unsigned char gso_fewer; /* the kernel refused a GSO send of more than 64 segments */
	/* A send with MSG_MORE went to libc: the kernel holds a datagram
	 * open, which the next send completes. A GSO send would be appended
	 * to it whole: the next datagram goes alone. */
	unsigned char corked;
	size_t max_len;          /* larger datagrams are passed to libc */
	size_t seg_max;          /* larger ones never go in a GSO send */
	unsigned msgs;           /* datagrams queued */
	size_t last;             /* size of the queue's last record (0: none) */
	unsigned ndest, next_dest;
	socklen_t dest_len[CO_DGRAM_DESTS];
	struct sockaddr_storage dest[CO_DGRAM_DESTS];
	/* The destination of a send handed to libc, learnt if it succeeds. */
	socklen_t probe_len;
	struct sockaddr_storage probe;
};

/* Makes fd (a UDP or Unix datagram socket of the given family) a datagram
 * fd: reads what limits its sends. Returns 0, or -ENOMEM. */
int co__dgram_setup(struct co_ctx *ctx, int fd, struct co_fd *f, int family, int connected);

/* Forgets f's datagram state (its queue is empty or discarded). */
void co__dgram_release(struct co_ctx *ctx, struct co_fd *f);

/* Queues one application send on a datagram fd, or hands it back. Returns
 * what co_sendto returns. */
ssize_t co__dgram_write(struct co_ctx *ctx, int fd, struct co_fd *f, const struct iovec *iov,
			int iovcnt, int flags, unsigned how, const struct sockaddr *addr,
			socklen_t addrlen);

/* Sends f's datagrams, until all are sent or the socket is full. A
 * datagram the kernel refuses (ECONNREFUSED, EHOSTUNREACH...) is dropped
 * and its error kept for the application's next call, as the kernel keeps
 * it; the rest go on. Returns 0 once the queue is empty, or -errno of a
 * condition that leaves it in place (co__keeps_queue). */
int co__dgram_send_queue(struct co_ctx *ctx, int fd, struct co_fd *f, int flags);

/* A signal handler's send on fd while its own thread holds fd's lock (or
 * the lock of fd's socket's owner: then fd is that owner): keeps the
 * datagram whole, with its destination, in co__signal_writes, to be queued
 * after the interrupted operation (co__dgram_queue_kept). Returns its size,
 * or -1 if it cannot be kept (flags or control data a queue does not keep,
 * no room, writes of another fd kept already): it then goes to libc. */
ssize_t co__dgram_keep(struct co_ctx *ctx, int fd, const struct iovec *iov, int iovcnt,
		       int flags, unsigned how, const struct sockaddr *addr, socklen_t addrlen);

/* Queues the datagrams co__dgram_keep kept, after f's queue, and empties
 * co__signal_writes. One that cannot be queued (f no longer queues
 * datagrams, no memory) is sent at once, after the queue; one that cannot
 * be sent either is dropped and counted. fd's lock is held. */
void co__dgram_queue_kept(struct co_ctx *ctx, int fd, struct co_fd *f);

/* Drops f's queue, counting datagrams and their bytes. Returns the bytes. */
size_t co__dgram_discard(struct co_ctx *ctx, struct co_fd *f);

/* Forgets f's queued datagrams once its byte queue has been emptied
 * without them being sent or counted (in a forked child). */
static inline void co__dgram_forget(struct co_fd *f)
{
	f->dg->msgs = 0;
	f->dg->last = 0;
}

#endif
