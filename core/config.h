/* Settings, read once from the environment. */
#ifndef CO_CONFIG_H
#define CO_CONFIG_H

#include <stddef.h>
#include <stdint.h>

enum co_log_level { CO_LOG_OFF, CO_LOG_ERROR, CO_LOG_INFO, CO_LOG_DEBUG };

/* How a flush of many fds at once sends their queues (COALESCE_BACKEND):
 * auto uses io_uring for large flushes when the kernel allows it, writev
 * always sends fd by fd, uring uses io_uring for every such flush. */
enum co_backend { CO_BACKEND_AUTO, CO_BACKEND_WRITEV, CO_BACKEND_URING };

struct co_config {
	int disabled;           /* COALESCE_DISABLE: pure passthrough. */
	int direct;             /* COALESCE_DIRECT: send a lone write at once. */
	uint64_t delay_ns;      /* COALESCE_DELAY_US: longest time a byte stays queued. */
	size_t max_bytes;       /* COALESCE_MAX_BYTES: queue size that triggers a flush. */
	size_t large_bytes;     /* COALESCE_LARGE_BYTES: writes this big are not copied. */
	uint64_t linger_ns;     /* COALESCE_LINGER_MS: how long close waits on a full nonblocking socket. */
	size_t max_msgs;        /* COALESCE_MAX_MSGS: datagrams queued that trigger a flush. */
	uint64_t stats_interval_ns; /* COALESCE_STATS_INTERVAL_MS: rewrite the stats file this often (0: at exit only). */
	enum co_log_level log_level; /* COALESCE_LOG */
	enum co_backend backend; /* COALESCE_BACKEND */
	/* These two point into the environment: copy them if it may change. */
	const char *log_file;   /* COALESCE_LOG_FILE, or NULL for stderr. */
	const char *stats_path; /* COALESCE_STATS, or NULL. */
};

#define CO_DEFAULT_DELAY_US 200
#define CO_DEFAULT_MAX_BYTES 65536
#define CO_DEFAULT_LARGE_BYTES 32768
#define CO_DEFAULT_LINGER_MS 1000
#define CO_DEFAULT_MAX_MSGS 128
#define CO_MAX_MSGS_LIMIT 1024 /* UIO_MAXIOV: one sendmmsg at most */

/* Looks up one environment variable; returns NULL when it is not set. */
typedef const char *(*co_getenv_fn)(const char *name);
/* Receives one complete message about a bad setting. */
typedef void (*co_report_fn)(const char *msg);

/* Fills cfg from the environment. Each bad value is reported once through
 * report, naming the variable and the default used instead. Returns the
 * number of bad values. */
int co_config_load(struct co_config *cfg, co_getenv_fn get, co_report_fn report);

#endif
