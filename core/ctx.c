/* Context set-up and logging. */
#include "ctx.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void co_ctx_init(struct co_ctx *ctx, const struct co_sys *sys, const struct co_config *cfg)
{
	memset(&ctx->stats, 0, sizeof(ctx->stats));
	ctx->sys = *sys;
	ctx->cfg = *cfg;
	ctx->on_pending = NULL;
	atomic_store(&ctx->exiting, 0);
	atomic_store(&ctx->ring_off, cfg->backend == CO_BACKEND_WRITEV || !sys->ring_send_batch);
	memset(&ctx->socks, 0, sizeof(ctx->socks));
	pthread_mutex_init(&ctx->socks.lock, NULL);
	co_fdtable_init(&ctx->fds);
}

void co_log(struct co_ctx *ctx, enum co_log_level level, const char *fmt, ...)
{
	static const char *const names[] = { "", "error", "info", "debug" };
	char buf[512];
	va_list ap;
	int n;

	if (level > ctx->cfg.log_level || !ctx->sys.log_write)
		return;
	n = snprintf(buf, sizeof(buf), "coalesce: %s: ", names[level]);
	va_start(ap, fmt);
	n += vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	ctx->sys.log_write(buf, (size_t)n);
}
