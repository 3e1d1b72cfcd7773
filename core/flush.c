/* Flush triggers other than the write path: waits, reads, the deadline,
 * close and the other operations that must come after queued bytes, exit
 * and fork. */
#include <errno.h>
#include <string.h>

#include "batch.h"
#include "dgram.h"
#include "send.h"
#include "stream.h"

struct flush_arg {
	struct co_ctx *ctx;
	enum co_counter trigger;
	uint64_t now;
	uint64_t next;
	int *stalled;
	int max;
	int nstalled;
};

static void flush_one_nowait(int fd, void *argp)
{
	struct flush_arg *arg = argp;
	struct co_fd *f = co_fd_find(&arg->ctx->fds, fd);

	if (!f || co__trylock_fd(f, fd) != 0)
		return;
	co__flush_deferred(arg->ctx, fd, f, arg->trigger, MSG_DONTWAIT);
	co__unlock_fd(f);
}

int co_take_read_error(struct co_ctx *ctx, int fd)
{
	struct co_fd *f = co_fd_find(&ctx->fds, fd);
	int err;

	/* A reader never waits for the fd's lock: its holder may be blocked
	 * in a send that only this reader's progress can let go on. */
	if (!f || !atomic_load_explicit(&f->deferred_err, memory_order_relaxed) ||
	    co__trylock_fd(f, fd) != 0)
		return 0;
	err = f->deferred_err == EPIPE ? 0 : co__take_error(ctx, f);
	if (err && atomic_load(&f->kind) == CO_FD_STREAM)
		atomic_store(&f->kind, CO_FD_PASS);
	co__unlock_fd(f);
	return -err;
}

int co_fd_error(struct co_ctx *ctx, int fd, int take)
{
	struct co_fd *f;
	int err;

	if (atomic_load_explicit(&ctx->fds.error_count, memory_order_relaxed) == 0)
		return 0;
	f = co_fd_find(&ctx->fds, fd);
	if (!f || !atomic_load_explicit(&f->deferred_err, memory_order_relaxed))
		return 0;
	if (!take)
		return f->deferred_err;
	if (co__trylock_fd(f, fd) != 0)
		return 0;
	err = co__take_error(ctx, f);
	co__unlock_fd(f);
	return err;
}

static void add_one_nowait(int fd, void *argp)
{
	struct co_batch *b = argp;
	struct co_fd *f = co_fd_find(&b->ctx->fds, fd);

	if (f)
		co__batch_trylock(b, fd, f);
}

void co_flush_all_nowait(struct co_ctx *ctx, enum co_counter trigger)
{
	struct flush_arg arg = { .ctx = ctx, .trigger = trigger };
	struct co_batch b;

	/* A signal handler's flush stays fd by fd: it may have interrupted
	 * a batch of its own thread. */
	if (trigger != CO_ST_flush_signal &&
	    co__batch_wanted(ctx, atomic_load(&ctx->fds.pending_count))) {
		co__batch_begin(&b, ctx, trigger, NULL, NULL);
		co_fd_each_pending(&ctx->fds, add_one_nowait, &b);
		co__batch_end(&b);
		return;
	}
	co_fd_each_pending(&ctx->fds, flush_one_nowait, &arg);
}

static void flush_one_final(int fd, void *argp)
{
	struct flush_arg *arg = argp;
	struct co_fd *f = co_fd_find(&arg->ctx->fds, fd);

	uint64_t deadline = arg->now + arg->ctx->cfg.linger_ns;

	if (!f || co__timedlock_fd(f, fd, deadline) != 0)
		return;
	co__drain_locked(arg->ctx, fd, f, arg->trigger, deadline);
	co__unlock_fd(f);
}

void co_flush_all_final(struct co_ctx *ctx, enum co_counter trigger)
{
	struct flush_arg arg = { .ctx = ctx, .trigger = trigger };

	/* Before the scan: a write that queues on an fd the scan has passed
	 * would otherwise wait for a flush that never comes. */
	atomic_store(&ctx->exiting, 1);
	if (atomic_load(&ctx->fds.pending_count) == 0)
		return;
	arg.now = ctx->sys.now_ns();
	co_fd_each_pending(&ctx->fds, flush_one_final, &arg);
}

static void flush_one_before_fork(int fd, void *argp)
{
	struct flush_arg *arg = argp;
	struct co_fd *f = co_fd_find(&arg->ctx->fds, fd);

	if (!f || co__timedlock_fd(f, fd, arg->now + arg->ctx->cfg.delay_ns) != 0)
		return;
	co__flush_deferred(arg->ctx, fd, f, CO_ST_flush_fork, 0);
	co__unlock_fd(f);
}

void co_flush_all_before_fork(struct co_ctx *ctx)
{
	struct flush_arg arg = { .ctx = ctx };

	if (atomic_load(&ctx->fds.pending_count) == 0)
		return;
	arg.now = ctx->sys.now_ns();
	co_fd_each_pending(&ctx->fds, flush_one_before_fork, &arg);
}

int co_flush_before(struct co_ctx *ctx, int fd, enum co_counter trigger, int flags)
{
	struct co_fd *f = co_fd_find(&ctx->fds, fd);
	int r;

	if (!f || (atomic_load(&f->kind) != CO_FD_STREAM && atomic_load(&f->kind) != CO_FD_DGRAM) ||
	    co__lock_fd(f, fd) != 0)
		return 0;
	r = co__flush_deferred(ctx, fd, f, trigger, flags);
	co__unlock_fd(f);
	return co__keeps_queue(r) ? r : 0;
}

/* Returns f to what a never-seen fd has: no queue, no socket identity, no
 * error, no burst history, UNKNOWN. fd's lock is held. */
static void reset_locked(struct co_ctx *ctx, int fd, struct co_fd *f)
{
	pending_release(&f->q, &ctx->sys);
	co__release_id(ctx, fd, f);
	co__take_error(ctx, f);
	if (f->dg)
		co__dgram_release(ctx, f);
	co__fold_calls(ctx, f);
	f->burst = 0;
	f->burst_epoch = 0;
	f->direct = 0;
	f->tcp = 0;
	atomic_store(&f->kind, CO_FD_UNKNOWN);
}

struct co_fd *co_close_begin(struct co_ctx *ctx, int fd)
{
	struct co_fd *f = co_fd_find(&ctx->fds, fd);

	if (!f || co__lock_fd(f, fd) != 0)
		return NULL;
	if (pending_len(&f->q))
		co__drain_locked(ctx, fd, f, CO_ST_flush_close,
				 ctx->sys.now_ns() + ctx->cfg.linger_ns);
	reset_locked(ctx, fd, f);
	return f;
}

void co__finish_handed_over_close(struct co_fd *f, int fd)
{
	struct co_ctx *ctx = f->close_ctx;

	/* Whatever the holder did not send yet goes as a blocking write
	 * would; this thread was blocked on that socket already. */
	if (f->private_fd >= 0)
		co__flush_locked(ctx, fd, f, CO_ST_flush_close, 0);
	co__discard_locked(ctx, fd, f);
	reset_locked(ctx, fd, f);
	if (f->private_fd >= 0) {
		ctx->sys.close(f->private_fd);
		ctx->sys.close(fd);
	}
	atomic_store(&f->close_pending, 0);
}

int co_close_or_hand_over(struct co_ctx *ctx, int fd, struct co_fd **held)
{
	struct co_fd *f = co_fd_find(&ctx->fds, fd);
	int r;

	*held = NULL;
	if (!f)
		return 0;
	r = co__timedlock_fd(f, fd, ctx->sys.now_ns() + CO_CLOSE_WAIT_NS);
	if (r == -ETIMEDOUT) {
		int private_fd = ctx->sys.hand_over(fd);

		f->private_fd = private_fd;
		f->close_ctx = ctx;
		atomic_store(&f->close_pending, 1);
		co_stat_add(&ctx->stats, CO_ST_closes_handed_over, 1);
		/* The holder may have let go just before: then finish here. */
		if (co__trylock_fd(f, fd) == 0)
			co__unlock_fd(f);
		/* Without a private fd (the process is at its fd limit) the
		 * caller closes fd now, and the holder sends no more. */
		return private_fd >= 0;
	}
	if (r != 0)
		return 0;
	if (pending_len(&f->q))
		co__drain_locked(ctx, fd, f, CO_ST_flush_close,
				 ctx->sys.now_ns() + ctx->cfg.linger_ns);
	reset_locked(ctx, fd, f);
	*held = f;
	return 0;
}

void co_close_end(struct co_fd *f)
{
	if (f)
		co__unlock_fd(f);
}

void co_fd_forget(struct co_ctx *ctx, int fd)
{
	struct co_fd *f = co_fd_find(&ctx->fds, fd);

	/* An UNKNOWN entry has no queue: close and forget release it. */
	if (!f || atomic_load(&f->kind) == CO_FD_UNKNOWN || co__lock_fd(f, fd) != 0)
		return;
	co__discard_locked(ctx, fd, f);
	reset_locked(ctx, fd, f);
	co__unlock_fd(f);
}

void co_fd_stop(struct co_ctx *ctx, int fd, enum co_counter reason)
{
	struct co_fd *f = co_fd_get(&ctx->fds, &ctx->sys, fd);

	int other = -1;

	if (!f || co__lock_fd(f, fd) != 0)
		return;
	if (atomic_load(&f->kind) == CO_FD_UNKNOWN)
		co__classify(ctx, fd, f);
	if (atomic_load(&f->kind) == CO_FD_BEHIND) {
		/* Recorded as passing already: only its socket's owner is
		 * left to stop. */
		other = f->behind;
		atomic_store(&f->kind, CO_FD_PASS);
	} else if (atomic_load(&f->kind) != CO_FD_PASS) {
		if (pending_len(&f->q))
			co__drain_locked(ctx, fd, f, CO_ST_flush_order,
					 ctx->sys.now_ns() + ctx->cfg.linger_ns);
		other = co__pass_socket(ctx, fd, f);
		atomic_store(&f->kind, CO_FD_PASS);
		co_stat_add(&ctx->stats, reason, 1);
	}
	co__unlock_fd(f);
	if (other >= 0)
		co_fd_stop(ctx, other, reason);
}

/* The flusher is to look again at due (monotonic ns) at the latest. */
static void due_by(struct flush_arg *arg, uint64_t due)
{
	if (!arg->next || due < arg->next)
		arg->next = due;
}

/* After the deadline flush of fd returned r: a full socket is watched for
 * room; one short of buffers is tried again after one delay. */
static void due_flushed(void *argp, int fd, int r)
{
	struct flush_arg *arg = argp;

	if (r == -EAGAIN && arg->nstalled < arg->max)
		arg->stalled[arg->nstalled++] = fd;
	else if (co__keeps_queue(r))
		due_by(arg, arg->now + arg->ctx->cfg.delay_ns);
}

/* fd's lock is held: returns 1 if its queue is due now, else notes when it
 * will be (and syncs the mark of an empty queue). */
static int is_due(struct flush_arg *arg, int fd, struct co_fd *f)
{
	uint64_t due;

	if (pending_len(&f->q) == 0) {
		co__sync_mark(arg->ctx, fd, f);
		return 0;
	}
	due = f->first_ns + arg->ctx->cfg.delay_ns;
	if (due <= arg->now)
		return 1;
	due_by(arg, due);
	return 0;
}

/* How long the deadline flush waits for a queue's lock before it looks at
 * the next queue. */
#define CO_FLUSHER_LOCK_WAIT_NS 20000ull

static void flush_one_due(int fd, void *argp)
{
	struct flush_arg *arg = argp;
	struct co_ctx *ctx = arg->ctx;
	struct co_fd *f = co_fd_find(&ctx->fds, fd);

	if (!f)
		return;
	/* A writer holds the lock for the time of one write: wait for that,
	 * or the queue would wait one more delay. One blocked in a send on a
	 * full socket is sending the queue: look again after one delay. */
	if (co__timedlock_fd(f, fd, ctx->sys.now_ns() + CO_FLUSHER_LOCK_WAIT_NS) != 0) {
		due_by(arg, arg->now + ctx->cfg.delay_ns);
		return;
	}
	if (is_due(arg, fd, f))
		due_flushed(arg, fd,
			    co__flush_deferred(ctx, fd, f, CO_ST_flush_deadline, MSG_DONTWAIT));
	co__unlock_fd(f);
}

/* As flush_one_due, adding a due queue to the batch instead. */
static void add_one_due(int fd, void *bp)
{
	struct co_batch *b = bp;
	struct flush_arg *arg = b->arg;
	struct co_fd *f = co_fd_find(&b->ctx->fds, fd);

	if (!f)
		return;
	if (co__batch_trylock(b, fd, f) != 0)
		due_by(arg, arg->now + b->ctx->cfg.delay_ns);
	else if (!is_due(arg, fd, f))
		co__batch_drop_last(b);
}

uint64_t co_flush_due(struct co_ctx *ctx, uint64_t now, int *stalled, int max,
		      int *nstalled)
{
	struct flush_arg arg = {
		.ctx = ctx, .now = now, .stalled = stalled, .max = max,
	};
	struct co_batch b;

	if (co__batch_wanted(ctx, atomic_load(&ctx->fds.pending_count))) {
		co__batch_begin(&b, ctx, CO_ST_flush_deadline, due_flushed, &arg);
		co_fd_each_pending(&ctx->fds, add_one_due, &b);
		co__batch_end(&b);
	} else {
		co_fd_each_pending(&ctx->fds, flush_one_due, &arg);
	}
	*nstalled = arg.nstalled;
	return arg.next;
}

static void reset_in_child(int fd, struct co_fd *f, void *argp)
{
	struct co_ctx *ctx = argp;

	pthread_mutex_init(&f->lock, NULL);
	/* A close handed over to a thread that does not exist here. */
	if (atomic_exchange(&f->close_pending, 0)) {
		reset_locked(ctx, fd, f);
		if (f->private_fd >= 0) {
			ctx->sys.close(f->private_fd);
			ctx->sys.close(fd);
		}
	}
	pending_discard(&f->q);
	pending_release(&f->q, &ctx->sys);
	if (f->dg)
		co__dgram_forget(f);
	f->writes = 0;
	f->wbytes = 0;
	memset(f->calls, 0, sizeof(f->calls));
	co_fd_mark(&ctx->fds, fd, 0);
}

void co_after_fork_child(struct co_ctx *ctx)
{
	pthread_mutex_init(&ctx->socks.lock, NULL);
	co_fd_each(&ctx->fds, 0, CO_FD_LIMIT - 1, reset_in_child, ctx);
	/* The child's statistics count the child's own work: the parent
	 * reports everything before the fork. */
	memset(&ctx->stats, 0, sizeof(ctx->stats));
}

static void collect_one(int fd, struct co_fd *f, void *argp)
{
	if (co__trylock_fd(f, fd) == 0) {
		co__fold_calls(argp, f);
		co__unlock_fd(f);
	}
}

void co_collect_calls(struct co_ctx *ctx)
{
	co_fd_each(&ctx->fds, 0, CO_FD_LIMIT - 1, collect_one, ctx);
}
