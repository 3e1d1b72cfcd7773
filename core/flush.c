/* Flush triggers other than the write path: waits, reads, the deadline,
 * close and the other operations that must come after queued bytes, exit
 * and fork. */
#include <errno.h>

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

	if (!f || pthread_mutex_trylock(&f->lock) != 0)
		return;
	co__flush_locked(arg->ctx, fd, f, arg->trigger, MSG_DONTWAIT);
	pthread_mutex_unlock(&f->lock);
}

void co_flush_all_nowait(struct co_ctx *ctx, enum co_counter trigger)
{
	struct flush_arg arg = { .ctx = ctx, .trigger = trigger };

	co_fd_each_pending(&ctx->fds, flush_one_nowait, &arg);
}

static void flush_one_final(int fd, void *argp)
{
	struct flush_arg *arg = argp;
	struct co_fd *f = co_fd_find(&arg->ctx->fds, fd);

	if (!f)
		return;
	pthread_mutex_lock(&f->lock);
	co__drain_locked(arg->ctx, fd, f, arg->trigger, arg->now + arg->ctx->cfg.linger_ns);
	pthread_mutex_unlock(&f->lock);
}

void co_flush_all_final(struct co_ctx *ctx, enum co_counter trigger)
{
	struct flush_arg arg = { .ctx = ctx, .trigger = trigger };

	if (atomic_load(&ctx->fds.pending_count) == 0)
		return;
	arg.now = ctx->sys.now_ns();
	co_fd_each_pending(&ctx->fds, flush_one_final, &arg);
}

int co_flush_before(struct co_ctx *ctx, int fd, enum co_counter trigger,
		    enum co_counter stop_reason)
{
	struct co_fd *f = co_fd_find(&ctx->fds, fd);
	int r;

	if (!f || atomic_load(&f->kind) != CO_FD_STREAM)
		return 0;
	pthread_mutex_lock(&f->lock);
	r = co__flush_locked(ctx, fd, f, trigger, 0);
	if (r == 0 && stop_reason != CO_ST_COUNT &&
	    atomic_load(&f->kind) == CO_FD_STREAM) {
		atomic_store(&f->kind, CO_FD_PASS);
		co_stat_add(&ctx->stats, stop_reason, 1);
	}
	pthread_mutex_unlock(&f->lock);
	return r == -EINTR || r == -EAGAIN ? r : 0;
}

struct co_fd *co_close_begin(struct co_ctx *ctx, int fd)
{
	struct co_fd *f = co_fd_find(&ctx->fds, fd);

	if (!f)
		return NULL;
	pthread_mutex_lock(&f->lock);
	if (pending_len(&f->q))
		co__drain_locked(ctx, fd, f, CO_ST_flush_close,
				 ctx->sys.now_ns() + ctx->cfg.linger_ns);
	pending_release(&f->q, &ctx->sys);
	f->deferred_err = 0;
	atomic_store(&f->kind, CO_FD_UNKNOWN);
	return f;
}

void co_close_end(struct co_fd *f)
{
	if (f)
		pthread_mutex_unlock(&f->lock);
}

void co_fd_forget(struct co_ctx *ctx, int fd)
{
	struct co_fd *f = co_fd_find(&ctx->fds, fd);

	if (!f || (atomic_load(&f->kind) == CO_FD_UNKNOWN && pending_len(&f->q) == 0))
		return;
	pthread_mutex_lock(&f->lock);
	co__discard_locked(ctx, fd, f);
	pending_release(&f->q, &ctx->sys);
	f->deferred_err = 0;
	atomic_store(&f->kind, CO_FD_UNKNOWN);
	pthread_mutex_unlock(&f->lock);
}

void co_fd_stop(struct co_ctx *ctx, int fd, enum co_counter reason)
{
	struct co_fd *f = co_fd_get(&ctx->fds, &ctx->sys, fd);

	if (!f)
		return;
	pthread_mutex_lock(&f->lock);
	if (atomic_load(&f->kind) == CO_FD_UNKNOWN)
		co__classify(ctx, fd, f);
	if (atomic_load(&f->kind) != CO_FD_PASS) {
		co__discard_locked(ctx, fd, f);
		atomic_store(&f->kind, CO_FD_PASS);
		co_stat_add(&ctx->stats, reason, 1);
	}
	pthread_mutex_unlock(&f->lock);
}

static void flush_one_due(int fd, void *argp)
{
	struct flush_arg *arg = argp;
	struct co_ctx *ctx = arg->ctx;
	struct co_fd *f = co_fd_find(&ctx->fds, fd);
	uint64_t due;
	int r;

	if (!f)
		return;
	if (pthread_mutex_trylock(&f->lock) != 0) {
		/* The owner is writing or flushing it; look again soon. */
		due = arg->now + ctx->cfg.delay_ns / 4;
		if (!arg->next || due < arg->next)
			arg->next = due;
		return;
	}
	if (pending_len(&f->q) == 0) {
		co__sync_mark(ctx, fd, f);
		pthread_mutex_unlock(&f->lock);
		return;
	}
	due = f->first_ns + ctx->cfg.delay_ns;
	if (due <= arg->now) {
		r = co__flush_locked(ctx, fd, f, CO_ST_flush_deadline, MSG_DONTWAIT);
		if (r == -EAGAIN && arg->nstalled < arg->max)
			arg->stalled[arg->nstalled++] = fd;
	} else if (!arg->next || due < arg->next) {
		arg->next = due;
	}
	pthread_mutex_unlock(&f->lock);
}

uint64_t co_flush_due(struct co_ctx *ctx, uint64_t now, int *stalled, int max,
		      int *nstalled)
{
	struct flush_arg arg = {
		.ctx = ctx, .now = now, .stalled = stalled, .max = max,
	};

	co_fd_each_pending(&ctx->fds, flush_one_due, &arg);
	*nstalled = arg.nstalled;
	return arg.next;
}

static void reset_in_child(int fd, struct co_fd *f, void *argp)
{
	struct co_ctx *ctx = argp;

	pthread_mutex_init(&f->lock, NULL);
	pending_discard(&f->q);
	pending_release(&f->q, &ctx->sys);
	f->writes = 0;
	co_fd_mark(&ctx->fds, fd, 0);
}

void co_after_fork_child(struct co_ctx *ctx)
{
	co_fd_each(&ctx->fds, 0, CO_FD_LIMIT - 1, reset_in_child, ctx);
}
