/* The io_uring ring behind sys.ring_send_batch: the flushes that send many
 * fds' queues at once submit one IORING_OP_SENDMSG per fd with a single
 * io_uring_enter. Raw system calls and mmap only, so that the library needs
 * nothing but libc at run time.
 *
 * One ring per process, created on first use under a mutex (that first use
 * is also the probe: io_uring may be disabled by sysctl, refused by seccomp,
 * or short of locked memory). Every send carries MSG_DONTWAIT, so each one
 * completes during the submission and nothing is in flight when a batch
 * returns. The ring fd belongs to the application's fd space: when the
 * application closes it (close, close_range, closefrom, dup2 onto it) the
 * ring is given up for good and flushes go fd by fd; its number may then
 * be reused, so it is never closed or entered again. A forked child drops
 * the parent's ring without closing the fd (it is O_CLOEXEC) and makes its
 * own on demand; a vfork child never uses it. */
#include <linux/io_uring.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../core/batch.h"
#include "shim.h"

struct co_ring {
	int fd;
	unsigned *sq_tail, *sq_mask, *sq_array;
	unsigned *cq_head, *cq_tail, *cq_mask;
	struct io_uring_sqe *sqes;
	struct io_uring_cqe *cqes;
	void *sq_map, *cq_map, *sqe_map;
	size_t sq_len, cq_len, sqe_len;
};

static pthread_mutex_t co_ring_lock = PTHREAD_MUTEX_INITIALIZER;
static struct co_ring co_ring;
/* 0: not made yet; 1: ready; -errno: never to be used in this process. */
static int co_ring_state;
/* The ring's fd number for the close hooks (-1: none), and whether the
 * application closed it. */
static _Atomic int co_ring_fd = -1;
static _Atomic int co_ring_closed;

static int sys_io_uring_setup(unsigned entries, struct io_uring_params *p)
{
	return (int)syscall(SYS_io_uring_setup, entries, p);
}

static int sys_io_uring_enter(int fd, unsigned submit, unsigned wait, unsigned flags)
{
	return (int)syscall(SYS_io_uring_enter, fd, submit, wait, flags, NULL, 0);
}

static void ring_unmap(struct co_ring *r)
{
	if (r->sqe_map && r->sqe_map != MAP_FAILED)
		munmap(r->sqe_map, r->sqe_len);
	if (r->cq_map && r->cq_map != MAP_FAILED && r->cq_map != r->sq_map)
		munmap(r->cq_map, r->cq_len);
	if (r->sq_map && r->sq_map != MAP_FAILED)
		munmap(r->sq_map, r->sq_len);
	r->sq_map = r->cq_map = r->sqe_map = NULL;
}

static void *ring_mmap(int fd, size_t len, off_t what)
{
	return mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, what);
}

/* Maps the rings and the SQE array of a new ring. Returns 0 or -errno. */
static int ring_map(struct co_ring *r, const struct io_uring_params *p)
{
	r->sq_len = p->sq_off.array + p->sq_entries * sizeof(unsigned);
	r->cq_len = p->cq_off.cqes + p->cq_entries * sizeof(struct io_uring_cqe);
	r->sqe_len = p->sq_entries * sizeof(struct io_uring_sqe);
	if (p->features & IORING_FEAT_SINGLE_MMAP) {
		if (r->cq_len > r->sq_len)
			r->sq_len = r->cq_len;
		r->cq_len = r->sq_len;
	}
	r->sq_map = ring_mmap(r->fd, r->sq_len, IORING_OFF_SQ_RING);
	r->cq_map = (p->features & IORING_FEAT_SINGLE_MMAP) || r->sq_map == MAP_FAILED
			    ? r->sq_map
			    : ring_mmap(r->fd, r->cq_len, IORING_OFF_CQ_RING);
	r->sqe_map = r->cq_map == MAP_FAILED ? MAP_FAILED
					     : ring_mmap(r->fd, r->sqe_len, IORING_OFF_SQES);
	if (r->sqe_map == MAP_FAILED) {
		int err = errno;

		ring_unmap(r);
		return -err;
	}
	r->sq_tail = (unsigned *)((char *)r->sq_map + p->sq_off.tail);
	r->sq_mask = (unsigned *)((char *)r->sq_map + p->sq_off.ring_mask);
	r->sq_array = (unsigned *)((char *)r->sq_map + p->sq_off.array);
	r->cq_head = (unsigned *)((char *)r->cq_map + p->cq_off.head);
	r->cq_tail = (unsigned *)((char *)r->cq_map + p->cq_off.tail);
	r->cq_mask = (unsigned *)((char *)r->cq_map + p->cq_off.ring_mask);
	r->cqes = (struct io_uring_cqe *)((char *)r->cq_map + p->cq_off.cqes);
	r->sqes = r->sqe_map;
	return 0;
}

/* With COALESCE_BACKEND=uring the user asked for the ring: say once why
 * there is none. (With auto the fallback is silent: core logs it at info.) */
static void report_unavailable(int err)
{
	char msg[160];
	int n;

	if (co_shim_ctx.cfg.backend != CO_BACKEND_URING)
		return;
	n = snprintf(msg, sizeof(msg),
		     "coalesce: COALESCE_BACKEND=uring: io_uring unavailable (%s); using writev\n",
		     strerror(err));
	if (n > 0)
		REAL(write)(2, msg, (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1);
}

/* Makes the ring. Returns 1, or -errno if io_uring cannot be had. */
static int ring_create(struct co_ring *r)
{
	struct io_uring_params p;
	int err;

	memset(&p, 0, sizeof(p));
	memset(r, 0, sizeof(*r));
	r->fd = sys_io_uring_setup(CO_BATCH_MAX, &p);
	if (r->fd < 0) {
		err = errno;
		report_unavailable(err);
		return -err;
	}
	err = ring_map(r, &p);
	if (err < 0) {
		REAL(close)(r->fd);
		report_unavailable(-err);
		return err;
	}
	atomic_store(&co_ring_fd, r->fd);
	return 1;
}

/* Gives the ring up for good (err says why), without closing its fd: the
 * application closed it, or its number may since have been reused. */
static int ring_lose(struct co_ring *r, int err)
{
	ring_unmap(r);
	atomic_store(&co_ring_fd, -1);
	co_ring_state = err;
	return err;
}

/* Puts one SENDMSG per request in the submission queue. */
static void ring_push(struct co_ring *r, struct co_ring_req *reqs, int n)
{
	unsigned tail = *r->sq_tail, idx;
	struct io_uring_sqe *sqe;
	int i;

	for (i = 0; i < n; i++) {
		idx = (tail + (unsigned)i) & *r->sq_mask;
		sqe = &r->sqes[idx];
		memset(sqe, 0, sizeof(*sqe));
		sqe->opcode = IORING_OP_SENDMSG;
		sqe->fd = reqs[i].fd;
		sqe->addr = (uint64_t)(uintptr_t)&reqs[i].msg;
		sqe->len = 1;
		sqe->msg_flags = MSG_DONTWAIT | MSG_NOSIGNAL;
		sqe->user_data = (uint64_t)i;
		r->sq_array[idx] = idx;
	}
	__atomic_store_n(r->sq_tail, tail + (unsigned)n, __ATOMIC_RELEASE);
}

/* Takes every completion there is into its request. Returns how many. */
static int ring_reap(struct co_ring *r, struct co_ring_req *reqs, int n)
{
	unsigned head = *r->cq_head, tail = __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE);
	struct io_uring_cqe *cqe;
	int count = 0;

	for (; head != tail; head++, count++) {
		cqe = &r->cqes[head & *r->cq_mask];
		if (cqe->user_data < (uint64_t)n)
			reqs[cqe->user_data].result = cqe->res;
	}
	__atomic_store_n(r->cq_head, head, __ATOMIC_RELEASE);
	return count;
}

/* Waits for the completions of the first submitted requests. A failure
 * here leaves requests whose fate is unknown: each is reported as EIO (the
 * connection is given up) rather than sent twice or lost in silence. */
static int ring_wait(struct co_ring *r, struct co_ring_req *reqs, int submitted, int done)
{
	int ret, i;

	while (done < submitted) {
		ret = sys_io_uring_enter(r->fd, 0, (unsigned)(submitted - done),
					 IORING_ENTER_GETEVENTS);
		if (ret < 0 && errno != EINTR) {
			ret = -errno;
			for (i = 0; i < submitted; i++)
				if (reqs[i].result == CO_RING_UNSENT)
					reqs[i].result = -EIO;
			return ring_lose(r, ret);
		}
		done += ring_reap(r, reqs, submitted);
	}
	return 0;
}

/* Submits the n requests and waits for all. Returns 0 or -errno (the ring
 * is then lost; requests not submitted keep CO_RING_UNSENT). */
static int ring_run(struct co_ring *r, struct co_ring_req *reqs, int n)
{
	int submitted = 0, ret, err = 0;

	ring_push(r, reqs, n);
	while (submitted < n) {
		ret = sys_io_uring_enter(r->fd, (unsigned)(n - submitted), 0, 0);
		if (ret < 0 && errno == EINTR)
			continue;
		if (ret <= 0) {
			/* Entries left in the queue: the ring cannot be used again. */
			err = ret < 0 ? -errno : -EBUSY;
			break;
		}
		submitted += ret;
	}
	ret = ring_wait(r, reqs, submitted, ring_reap(r, reqs, n));
	if (err < 0 && ret == 0)
		ret = ring_lose(r, err);
	return ret;
}

/* Brings the ring to a usable state. Returns 1, or -errno. */
static int ring_ready(void)
{
	if (co_ring_state == 1 && atomic_load(&co_ring_closed))
		return ring_lose(&co_ring, -EBADF);
	if (co_ring_state == 0)
		co_ring_state = ring_create(&co_ring);
	return co_ring_state;
}

int co_uring_send_batch(struct co_ring_req *reqs, int n)
{
	int saved = errno, r;

	if (co_shim_in_vfork_child())
		return -EAGAIN;
	pthread_mutex_lock(&co_ring_lock);
	r = ring_ready();
	if (r == 1)
		r = ring_run(&co_ring, reqs, n);
	pthread_mutex_unlock(&co_ring_lock);
	errno = saved;
	return r;
}

void co_uring_fds_closing(unsigned first, unsigned last)
{
	int fd = atomic_load(&co_ring_fd);

	if (fd >= 0 && (unsigned)fd >= first && (unsigned)fd <= last)
		atomic_store(&co_ring_closed, 1);
}

void co_uring_after_fork_child(void)
{
	pthread_mutex_init(&co_ring_lock, NULL);
	if (co_ring_state == 1)
		ring_unmap(&co_ring);
	co_ring_state = 0;
	atomic_store(&co_ring_fd, -1);
	atomic_store(&co_ring_closed, 0);
}
