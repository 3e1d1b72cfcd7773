/* Flushing the queues of many fds with one io_uring submission. */
#include "batch.h"

#include <string.h>

#include "send.h"

/* The batch whose locks this thread holds, for co__batch_holds. */
static __thread struct co_batch *co__held_batch __attribute__((tls_model("initial-exec")));

int co__batch_holds(int fd)
{
	struct co_batch *b = co__held_batch;
	int i;

	for (i = 0; b && i < b->n; i++)
		if (b->fd[i] == fd)
			return 1;
	return 0;
}

/* Returns 1 if n requests are worth a ring submission. */
static int ring_on(struct co_ctx *ctx, int n)
{
	if (n == 0 || atomic_load_explicit(&ctx->ring_off, memory_order_relaxed))
		return 0;
	return ctx->cfg.backend == CO_BACKEND_URING || n >= CO_URING_AUTO_MIN;
}

int co__batch_wanted(struct co_ctx *ctx, int npending)
{
	return co__held_fd == -1 && ring_on(ctx, npending);
}

void co__batch_begin(struct co_batch *b, struct co_ctx *ctx, enum co_counter trigger,
		     co_batch_done_fn done, void *arg)
{
	b->ctx = ctx;
	b->trigger = trigger;
	b->done = done;
	b->arg = arg;
	b->n = 0;
	b->prev_held = co__held_fd;
	co__held_batch = b;
	atomic_signal_fence(memory_order_seq_cst);
	co__held_fd = CO_HELD_BATCH;
	atomic_signal_fence(memory_order_seq_cst);
}

/* Returns 1 if f's queue can be one request of a ring submission: a stream
 * queue with bytes, on an fd whose close was not handed over. */
static int ring_eligible(struct co_fd *f)
{
	return !f->dg && pending_len(&f->q) > 0 &&
	       !atomic_load_explicit(&f->close_pending, memory_order_acquire);
}

static void fill_req(struct co_ring_req *req, int fd, struct co_fd *f)
{
	memset(req, 0, sizeof(*req));
	req->fd = fd;
	req->iov.iov_base = f->q.data + f->q.head;
	req->iov.iov_len = pending_len(&f->q);
	req->msg.msg_iov = &req->iov;
	req->msg.msg_iovlen = 1;
	req->result = CO_RING_UNSENT;
}

/* The ring failed for good: every later flush goes fd by fd. */
static void ring_lost(struct co_ctx *ctx, int err)
{
	if (atomic_exchange(&ctx->ring_off, 1))
		return;
	co_stat_add(&ctx->stats, CO_ST_uring_unavailable, 1);
	co_log(ctx, CO_LOG_INFO, "io_uring unavailable (error %d); queues are sent fd by fd",
	       -err);
}

/* Submits the first nreq requests of b and counts what ran. */
static void ring_send(struct co_batch *b, int nreq)
{
	struct co_ctx *ctx = b->ctx;
	int r = ctx->sys.ring_send_batch(b->req, nreq), ran = 0, j;

	for (j = 0; j < nreq; j++)
		ran += b->req[j].result != CO_RING_UNSENT;
	if (ran) {
		co_stat_add(&ctx->stats, CO_ST_flush_syscalls, 1);
		co_stat_add(&ctx->stats, CO_ST_uring_submits, 1);
		co_stat_add(&ctx->stats, CO_ST_uring_sends, (uint64_t)ran);
	}
	if (r < 0 && r != -EAGAIN)
		ring_lost(ctx, r);
}

/* Finishes a close handed over meanwhile, as co__unlock_fd does; the fd
 * stays in b until it is unlocked. */
void co__batch_drop_last(struct co_batch *b)
{
	int i = b->n - 1;
	struct co_fd *f = b->f[i];

	if (atomic_load_explicit(&f->close_pending, memory_order_acquire))
		co__finish_handed_over_close(f, b->fd[i]);
	pthread_mutex_unlock(&f->lock);
	atomic_signal_fence(memory_order_seq_cst);
	b->n = i;
}

/* Sends the queue of the i-th fd of b: takes the answer of its ring
 * request req when the ring ran it, else makes one sendmsg. */
static int finish_one(struct co_batch *b, int i, struct co_ring_req *req)
{
	if (req && req->result != CO_RING_UNSENT)
		return co__take_batch_result(b->ctx, b->fd[i], b->f[i], b->trigger, req->result);
	return co__flush_deferred(b->ctx, b->fd[i], b->f[i], b->trigger, MSG_DONTWAIT);
}

/* Sends every queue b holds, through the ring where it pays, then releases
 * every lock. */
static void batch_flush(struct co_batch *b)
{
	int idx[CO_BATCH_MAX], nreq = 0, i, j, r;

	for (i = 0; i < b->n; i++)
		if (ring_eligible(b->f[i]))
			idx[nreq++] = i;
	if (!ring_on(b->ctx, nreq))
		nreq = 0;
	for (j = 0; j < nreq; j++)
		fill_req(&b->req[j], b->fd[idx[j]], b->f[idx[j]]);
	if (nreq)
		ring_send(b, nreq);
	for (i = 0, j = 0; i < b->n; i++) {
		r = finish_one(b, i, j < nreq && idx[j] == i ? &b->req[j] : NULL);
		if (j < nreq && idx[j] == i)
			j++;
		if (b->done)
			b->done(b->arg, b->fd[i], r);
	}
	while (b->n)
		co__batch_drop_last(b);
}

int co__batch_trylock(struct co_batch *b, int fd, struct co_fd *f)
{
	int i;

	if (b->n == CO_BATCH_MAX)
		batch_flush(b);
	/* In b before it is locked, so that a signal handler never waits
	 * for a lock this thread holds. */
	i = b->n;
	b->fd[i] = fd;
	b->f[i] = f;
	atomic_signal_fence(memory_order_seq_cst);
	b->n = i + 1;
	atomic_signal_fence(memory_order_seq_cst);
	if (pthread_mutex_trylock(&f->lock) != 0) {
		b->n = i;
		return -EBUSY;
	}
	return 0;
}

void co__batch_end(struct co_batch *b)
{
	batch_flush(b);
	atomic_signal_fence(memory_order_seq_cst);
	co__held_fd = b->prev_held;
	co__held_batch = NULL;
	atomic_signal_fence(memory_order_seq_cst);
	if (co__signal_writes.len != 0 || co__signal_writes.stop)
		co__queue_signal_writes();
}
