/* Parsing of the COALESCE_* environment variables. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Parses an unsigned decimal number within [min, max]. Returns 0 on success,
 * -1 when the text is empty, not a plain number, or out of range. */
static int parse_range(const char *text, unsigned long long min,
		       unsigned long long max, unsigned long long *out)
{
	const char *p;
	char *end;
	unsigned long long v;

	if (*text == '\0')
		return -1;
	for (p = text; *p; p++)
		if (*p < '0' || *p > '9')
			return -1;
	errno = 0;
	v = strtoull(text, &end, 10);
	if (errno || *end || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

static void report_bad(co_report_fn report, const char *name, const char *value,
		       const char *expected, const char *fallback)
{
	char msg[256];

	snprintf(msg, sizeof(msg),
		 "coalesce: %s=\"%.64s\" is not %s; using the default, %s\n",
		 name, value, expected, fallback);
	report(msg);
}

/* Reads a numeric setting. Returns 1 if a value was set but bad, else 0. */
static int load_number(co_getenv_fn get, co_report_fn report, const char *name,
		       unsigned long long min, unsigned long long max,
		       unsigned long long def, unsigned long long *out)
{
	const char *text = get(name);
	char expected[96], fallback[32];

	*out = def;
	if (!text)
		return 0;
	if (parse_range(text, min, max, out) == 0)
		return 0;
	snprintf(expected, sizeof(expected), "a whole number from %llu to %llu", min, max);
	snprintf(fallback, sizeof(fallback), "%llu", def);
	report_bad(report, name, text, expected, fallback);
	*out = def;
	return 1;
}

static int load_flag(co_getenv_fn get, co_report_fn report, const char *name, int def,
		     int *out)
{
	const char *text = get(name);

	*out = def;
	if (!text || *text == '\0')
		return 0;
	if (strcmp(text, "0") == 0 || strcmp(text, "1") == 0) {
		*out = text[0] == '1';
		return 0;
	}
	report_bad(report, name, text, "0 or 1", def ? "1" : "0");
	return 1;
}

/* One setting that names one of a few choices. */
struct co_choice {
	const char *name;            /* The variable. */
	const char *const *choices;  /* Its values, in the order of the enum. */
	int count;
	int def;                     /* The index used when it is unset or bad. */
	const char *expected;        /* How a bad value is described. */
};

/* Reads a choice setting into *out (an index into choices). Returns 1 if a
 * value was set but is not one of them, else 0. */
static int load_choice(co_getenv_fn get, co_report_fn report, const struct co_choice *c,
		       int *out)
{
	const char *text = get(c->name);
	int i;

	*out = c->def;
	if (!text)
		return 0;
	for (i = 0; i < c->count; i++) {
		if (strcmp(text, c->choices[i]) == 0) {
			*out = i;
			return 0;
		}
	}
	report_bad(report, c->name, text, c->expected, c->choices[c->def]);
	return 1;
}

static int load_log_level(co_getenv_fn get, co_report_fn report, enum co_log_level *out)
{
	static const char *const names[] = { "off", "error", "info", "debug" };
	static const struct co_choice choice = { "COALESCE_LOG", names, 4, CO_LOG_ERROR,
						 "one of off, error, info, debug" };
	int i, bad = load_choice(get, report, &choice, &i);

	*out = (enum co_log_level)i;
	return bad;
}

static int load_backend(co_getenv_fn get, co_report_fn report, enum co_backend *out)
{
	static const char *const names[] = { "auto", "writev", "uring" };
	static const struct co_choice choice = { "COALESCE_BACKEND", names, 3, CO_BACKEND_AUTO,
						 "one of auto, writev, uring" };
	int i, bad = load_choice(get, report, &choice, &i);

	*out = (enum co_backend)i;
	return bad;
}

static const char *load_path(co_getenv_fn get, const char *name)
{
	const char *text = get(name);

	return text && *text ? text : NULL;
}

int co_config_load(struct co_config *cfg, co_getenv_fn get, co_report_fn report)
{
	unsigned long long delay_us, max_bytes, large_bytes, linger_ms, max_msgs, interval_ms;
	int bad = 0;

	bad += load_flag(get, report, "COALESCE_DISABLE", 0, &cfg->disabled);
	bad += load_flag(get, report, "COALESCE_DIRECT", 1, &cfg->direct);
	bad += load_number(get, report, "COALESCE_DELAY_US", 1, 1000000,
			   CO_DEFAULT_DELAY_US, &delay_us);
	bad += load_number(get, report, "COALESCE_MAX_BYTES", 512, 16u << 20,
			   CO_DEFAULT_MAX_BYTES, &max_bytes);
	bad += load_number(get, report, "COALESCE_LARGE_BYTES", 1, 16u << 20,
			   max_bytes / 2 < CO_DEFAULT_LARGE_BYTES ? max_bytes / 2
								  : CO_DEFAULT_LARGE_BYTES,
			   &large_bytes);
	bad += load_number(get, report, "COALESCE_LINGER_MS", 0, 600000,
			   CO_DEFAULT_LINGER_MS, &linger_ms);
	bad += load_number(get, report, "COALESCE_MAX_MSGS", 2, CO_MAX_MSGS_LIMIT,
			   CO_DEFAULT_MAX_MSGS, &max_msgs);
	bad += load_number(get, report, "COALESCE_STATS_INTERVAL_MS", 0, 86400000, 0,
			   &interval_ms);
	bad += load_log_level(get, report, &cfg->log_level);
	bad += load_backend(get, report, &cfg->backend);
	cfg->delay_ns = delay_us * 1000;
	cfg->max_bytes = max_bytes;
	/* A write that cannot fit in the queue is never copied. */
	cfg->large_bytes = large_bytes < max_bytes ? large_bytes : max_bytes;
	cfg->linger_ns = linger_ms * 1000000;
	cfg->max_msgs = max_msgs;
	cfg->stats_interval_ns = interval_ms * 1000000;
	cfg->log_file = load_path(get, "COALESCE_LOG_FILE");
	cfg->stats_path = load_path(get, "COALESCE_STATS");
	return bad;
}
