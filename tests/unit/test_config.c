/* Settings from the environment: defaults, valid values, and bad values that
 * are reported once each and replaced by the default. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"

#define MAX_VARS 16
#define MAX_REPORTS 16

/* The environment a test hands to co_config_load, and what it reported. */
static struct {
	const char *name[MAX_VARS];
	const char *value[MAX_VARS];
	int nvars;
	char report[MAX_REPORTS][256];
	int nreports;
	int lookups;
} env;

static const char *env_get(const char *name)
{
	int i;

	env.lookups++;
	for (i = 0; i < env.nvars; i++)
		if (strcmp(env.name[i], name) == 0)
			return env.value[i];
	return NULL;
}

static void env_report(const char *msg)
{
	if (env.nreports < MAX_REPORTS)
		snprintf(env.report[env.nreports], sizeof(env.report[0]), "%s", msg);
	env.nreports++;
}

static void env_clear(void)
{
	memset(&env, 0, sizeof(env));
}

static void env_set(const char *name, const char *value)
{
	env.name[env.nvars] = name;
	env.value[env.nvars] = value;
	env.nvars++;
}

/* 1 if exactly one report names name. */
static int reported_once(const char *name)
{
	int i, n = 0;

	for (i = 0; i < env.nreports && i < MAX_REPORTS; i++)
		n += strstr(env.report[i], name) != NULL;
	return n == 1;
}

/* Loads the settings from env; returns the number of bad values. */
static int load(struct co_config *cfg)
{
	memset(cfg, 0xa5, sizeof(*cfg));
	return co_config_load(cfg, env_get, env_report);
}

static void assert_defaults(const struct co_config *cfg)
{
	assert_int_equal(cfg->disabled, 0);
	assert_int_equal(cfg->direct, 1);
	assert_int_equal(cfg->delay_ns, 200000);
	assert_int_equal(cfg->max_bytes, 65536);
	assert_int_equal(cfg->large_bytes, 32768);
	assert_int_equal(cfg->linger_ns, 1000000000ull);
	assert_int_equal(cfg->log_level, CO_LOG_ERROR);
	assert_int_equal(cfg->backend, CO_BACKEND_AUTO);
	assert_null(cfg->log_file);
	assert_null(cfg->stats_path);
}

static void test_defaults_without_environment(void **state)
{
	struct co_config cfg;

	(void)state;
	env_clear();
	assert_int_equal(load(&cfg), 0);
	assert_int_equal(env.nreports, 0);
	assert_defaults(&cfg);
	/* Every setting was looked up. */
	assert_true(env.lookups >= 9);
}

static void test_defaults_match_the_documented_constants(void **state)
{
	(void)state;
	assert_int_equal(CO_DEFAULT_DELAY_US, 200);
	assert_int_equal(CO_DEFAULT_MAX_BYTES, 65536);
	assert_int_equal(CO_DEFAULT_LARGE_BYTES, 32768);
	assert_int_equal(CO_DEFAULT_LINGER_MS, 1000);
}

/* One valid setting, and the field it must produce. */
struct valid_case {
	const char *name;
	const char *value;
	size_t field;   /* offsetof in struct co_config */
	int is_size;    /* The field is a size_t, else a uint64_t. */
	uint64_t expect;
};

static void test_valid_numbers(void **state)
{
	static const struct valid_case cases[] = {
		{ "COALESCE_DELAY_US", "1", offsetof(struct co_config, delay_ns), 0, 1000 },
		{ "COALESCE_DELAY_US", "200", offsetof(struct co_config, delay_ns), 0, 200000 },
		{ "COALESCE_DELAY_US", "1000000", offsetof(struct co_config, delay_ns), 0, 1000000000ull },
		{ "COALESCE_DELAY_US", "0050", offsetof(struct co_config, delay_ns), 0, 50000 },
		{ "COALESCE_MAX_BYTES", "512", offsetof(struct co_config, max_bytes), 1, 512 },
		{ "COALESCE_MAX_BYTES", "100000", offsetof(struct co_config, max_bytes), 1, 100000 },
		{ "COALESCE_MAX_BYTES", "16777216", offsetof(struct co_config, max_bytes), 1, 16777216 },
		{ "COALESCE_LARGE_BYTES", "1", offsetof(struct co_config, large_bytes), 1, 1 },
		{ "COALESCE_LARGE_BYTES", "4096", offsetof(struct co_config, large_bytes), 1, 4096 },
		{ "COALESCE_LARGE_BYTES", "65536", offsetof(struct co_config, large_bytes), 1, 65536 },
		{ "COALESCE_LINGER_MS", "0", offsetof(struct co_config, linger_ns), 0, 0 },
		{ "COALESCE_LINGER_MS", "25", offsetof(struct co_config, linger_ns), 0, 25000000ull },
		{ "COALESCE_LINGER_MS", "600000", offsetof(struct co_config, linger_ns), 0, 600000000000ull },
		{ "COALESCE_MAX_MSGS", "2", offsetof(struct co_config, max_msgs), 1, 2 },
		{ "COALESCE_MAX_MSGS", "1024", offsetof(struct co_config, max_msgs), 1, 1024 },
		{ "COALESCE_STATS_INTERVAL_MS", "0", offsetof(struct co_config, stats_interval_ns), 0, 0 },
		{ "COALESCE_STATS_INTERVAL_MS", "1000", offsetof(struct co_config, stats_interval_ns), 0,
		  1000000000ull },
	};
	struct co_config cfg;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *field;
		uint64_t got;

		env_clear();
		env_set(cases[i].name, cases[i].value);
		assert_int_equal(load(&cfg), 0);
		assert_int_equal(env.nreports, 0);
		field = (const char *)&cfg + cases[i].field;
		if (cases[i].is_size) {
			size_t v;

			memcpy(&v, field, sizeof(v));
			got = v;
		} else {
			memcpy(&got, field, sizeof(got));
		}
		if (got != cases[i].expect)
			fail_msg("%s=%s gave %llu, expected %llu", cases[i].name, cases[i].value,
				 (unsigned long long)got, (unsigned long long)cases[i].expect);
	}
}

static void test_valid_disable_flag(void **state)
{
	struct co_config cfg;

	(void)state;
	env_clear();
	env_set("COALESCE_DISABLE", "1");
	assert_int_equal(load(&cfg), 0);
	assert_int_equal(cfg.disabled, 1);

	env_clear();
	env_set("COALESCE_DISABLE", "0");
	assert_int_equal(load(&cfg), 0);
	assert_int_equal(cfg.disabled, 0);

	/* An empty value is the same as not setting it (VAR= command). */
	env_clear();
	env_set("COALESCE_DISABLE", "");
	assert_int_equal(load(&cfg), 0);
	assert_int_equal(cfg.disabled, 0);
	assert_int_equal(env.nreports, 0);
}

static void test_valid_direct_flag(void **state)
{
	struct co_config cfg;

	(void)state;
	env_clear();
	env_set("COALESCE_DIRECT", "0");
	assert_int_equal(load(&cfg), 0);
	assert_int_equal(cfg.direct, 0);

	env_clear();
	env_set("COALESCE_DIRECT", "1");
	assert_int_equal(load(&cfg), 0);
	assert_int_equal(cfg.direct, 1);

	/* Empty is "not set": the default, on. */
	env_clear();
	env_set("COALESCE_DIRECT", "");
	assert_int_equal(load(&cfg), 0);
	assert_int_equal(cfg.direct, 1);
	assert_int_equal(env.nreports, 0);
}

static void test_paths(void **state)
{
	struct co_config cfg;

	(void)state;
	env_clear();
	env_set("COALESCE_LOG_FILE", "/tmp/coalesce.log");
	env_set("COALESCE_STATS", "/tmp/coalesce-%p.json");
	assert_int_equal(load(&cfg), 0);
	assert_string_equal(cfg.log_file, "/tmp/coalesce.log");
	assert_string_equal(cfg.stats_path, "/tmp/coalesce-%p.json");

	/* Empty paths mean "not set". */
	env_clear();
	env_set("COALESCE_LOG_FILE", "");
	env_set("COALESCE_STATS", "");
	assert_int_equal(load(&cfg), 0);
	assert_null(cfg.log_file);
	assert_null(cfg.stats_path);
	assert_int_equal(env.nreports, 0);
}

static void test_log_levels(void **state)
{
	static const struct {
		const char *text;
		enum co_log_level level;
	} cases[] = {
		{ "off", CO_LOG_OFF },
		{ "error", CO_LOG_ERROR },
		{ "info", CO_LOG_INFO },
		{ "debug", CO_LOG_DEBUG },
	};
	struct co_config cfg;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		env_clear();
		env_set("COALESCE_LOG", cases[i].text);
		assert_int_equal(load(&cfg), 0);
		assert_int_equal(env.nreports, 0);
		assert_int_equal(cfg.log_level, cases[i].level);
	}
}

static void test_bad_log_level(void **state)
{
	static const char *const bad[] = { "verbose", "", "2", "debugx", " info" };
	struct co_config cfg;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		env_clear();
		env_set("COALESCE_LOG", bad[i]);
		assert_int_equal(load(&cfg), 1);
		assert_int_equal(env.nreports, 1);
		assert_int_equal(cfg.log_level, CO_LOG_ERROR);
		assert_non_null(strstr(env.report[0], "COALESCE_LOG"));
		assert_non_null(strstr(env.report[0], "error"));
	}
}

static void test_backends(void **state)
{
	static const struct {
		const char *text;
		enum co_backend backend;
	} cases[] = {
		{ "auto", CO_BACKEND_AUTO },
		{ "writev", CO_BACKEND_WRITEV },
		{ "uring", CO_BACKEND_URING },
	};
	struct co_config cfg;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		env_clear();
		env_set("COALESCE_BACKEND", cases[i].text);
		assert_int_equal(load(&cfg), 0);
		assert_int_equal(env.nreports, 0);
		assert_int_equal(cfg.backend, cases[i].backend);
	}
}

static void test_bad_backend(void **state)
{
	static const char *const bad[] = { "io_uring", "", "URING", "1", "writev " };
	struct co_config cfg;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		env_clear();
		env_set("COALESCE_BACKEND", bad[i]);
		env_set("COALESCE_LOG", "info");
		assert_int_equal(load(&cfg), 1);
		assert_int_equal(env.nreports, 1);
		assert_int_equal(cfg.backend, CO_BACKEND_AUTO);
		assert_int_equal(cfg.log_level, CO_LOG_INFO);
		assert_non_null(strstr(env.report[0], "COALESCE_BACKEND"));
		assert_non_null(strstr(env.report[0], "default, auto"));
	}
}

static void test_bad_flags(void **state)
{
	static const char *const bad[] = { "yes", "2", "true", "-1", "on", "no" };
	struct co_config cfg;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		env_clear();
		env_set("COALESCE_DISABLE", bad[i]);
		assert_int_equal(load(&cfg), 1);
		assert_int_equal(env.nreports, 1);
		assert_int_equal(cfg.disabled, 0);
		assert_non_null(strstr(env.report[0], "COALESCE_DISABLE"));
		assert_non_null(strstr(env.report[0], "default, 0"));

		env_clear();
		env_set("COALESCE_DIRECT", bad[i]);
		assert_int_equal(load(&cfg), 1);
		assert_int_equal(env.nreports, 1);
		assert_int_equal(cfg.direct, 1);
		assert_non_null(strstr(env.report[0], "COALESCE_DIRECT"));
		assert_non_null(strstr(env.report[0], "default, 1"));
	}
}

/* A numeric variable, values it must refuse, and what its default reads as. */
struct numeric_var {
	const char *name;
	const char *default_text;
	const char *const *out_of_range;
};

static const char *const delay_out[] = { "0", "1000001", NULL };
static const char *const max_out[] = { "0", "511", "16777217", NULL };
static const char *const large_out[] = { "0", "16777217", NULL };
static const char *const linger_out[] = { "600001", NULL };
static const char *const msgs_out[] = { "0", "1", "1025", NULL };
static const char *const interval_out[] = { "86400001", NULL };

static const struct numeric_var numeric_vars[] = {
	{ "COALESCE_DELAY_US", "200", delay_out },
	{ "COALESCE_MAX_BYTES", "65536", max_out },
	{ "COALESCE_LARGE_BYTES", "32768", large_out },
	{ "COALESCE_LINGER_MS", "1000", linger_out },
	{ "COALESCE_MAX_MSGS", "128", msgs_out },
	{ "COALESCE_STATS_INTERVAL_MS", "0", interval_out },
};

/* Garbage, negative, empty and huge texts, refused by every numeric variable. */
static const char *const bad_numbers[] = {
	"abc", "12abc", "-5", "-0", "", " 5", "5 ", "+5", "0x10", "1.5", "1e3",
	"18446744073709551616", "99999999999999999999999999", "4294967296",
};

/* Checks that value for var was reported once, naming the variable, the bad
 * value and the default, and that the default was used. */
static void check_refused(const struct numeric_var *var, const char *value)
{
	struct co_config cfg, defaults;
	int bad;

	env_clear();
	assert_int_equal(load(&defaults), 0);
	env_clear();
	env_set(var->name, value);
	bad = load(&cfg);
	if (bad != 1 || env.nreports != 1)
		fail_msg("%s=\"%s\": %d bad, %d reports; expected 1 and 1", var->name, value,
			 bad, env.nreports);
	if (!strstr(env.report[0], var->name))
		fail_msg("report does not name %s: %s", var->name, env.report[0]);
	if (!strstr(env.report[0], var->default_text))
		fail_msg("report does not name the default %s: %s", var->default_text,
			 env.report[0]);
	if (*value && strlen(value) < 60 && !strstr(env.report[0], value))
		fail_msg("report does not quote the value \"%s\": %s", value, env.report[0]);
	assert_int_equal(strncmp(env.report[0], "coalesce: ", 10), 0);
	assert_true(memcmp(&cfg.delay_ns, &defaults.delay_ns, sizeof(cfg.delay_ns)) == 0);
	assert_int_equal(cfg.max_bytes, defaults.max_bytes);
	assert_int_equal(cfg.large_bytes, defaults.large_bytes);
	assert_int_equal(cfg.linger_ns, defaults.linger_ns);
	assert_int_equal(cfg.disabled, 0);
	assert_int_equal(cfg.direct, 1);
	assert_int_equal(cfg.log_level, CO_LOG_ERROR);
}

static void test_bad_numbers_are_reported_and_replaced(void **state)
{
	size_t v, i;

	(void)state;
	for (v = 0; v < sizeof(numeric_vars) / sizeof(numeric_vars[0]); v++) {
		for (i = 0; i < sizeof(bad_numbers) / sizeof(bad_numbers[0]); i++)
			check_refused(&numeric_vars[v], bad_numbers[i]);
		for (i = 0; numeric_vars[v].out_of_range[i]; i++)
			check_refused(&numeric_vars[v], numeric_vars[v].out_of_range[i]);
	}
}

static void test_each_bad_value_is_reported_once(void **state)
{
	struct co_config cfg;
	int i;

	(void)state;
	env_clear();
	env_set("COALESCE_DISABLE", "maybe");
	env_set("COALESCE_DIRECT", "sometimes");
	env_set("COALESCE_DELAY_US", "-1");
	env_set("COALESCE_MAX_BYTES", "lots");
	env_set("COALESCE_LARGE_BYTES", "");
	env_set("COALESCE_LINGER_MS", "99999999999999999999");
	env_set("COALESCE_LOG", "loud");
	assert_int_equal(load(&cfg), 7);
	assert_int_equal(env.nreports, 7);
	assert_defaults(&cfg);
	/* One message per variable, each one complete. */
	for (i = 0; i < 7; i++) {
		size_t len = strlen(env.report[i]);

		assert_true(len > 0);
		assert_int_equal(env.report[i][len - 1], '\n');
		assert_ptr_equal(strchr(env.report[i], '\n'), env.report[i] + len - 1);
	}
	assert_true(reported_once("COALESCE_DISABLE"));
	assert_true(reported_once("COALESCE_DIRECT"));
	assert_true(reported_once("COALESCE_DELAY_US"));
	assert_true(reported_once("COALESCE_MAX_BYTES"));
	assert_true(reported_once("COALESCE_LARGE_BYTES"));
	assert_true(reported_once("COALESCE_LINGER_MS"));
	assert_true(reported_once("COALESCE_LOG="));
}

static void test_bad_value_leaves_other_settings_alone(void **state)
{
	struct co_config cfg;

	(void)state;
	env_clear();
	env_set("COALESCE_DELAY_US", "oops");
	env_set("COALESCE_MAX_BYTES", "4096");
	env_set("COALESCE_LINGER_MS", "5");
	env_set("COALESCE_LOG", "debug");
	assert_int_equal(load(&cfg), 1);
	assert_int_equal(env.nreports, 1);
	assert_int_equal(cfg.delay_ns, 200000);
	assert_int_equal(cfg.max_bytes, 4096);
	assert_int_equal(cfg.large_bytes, 2048);
	assert_int_equal(cfg.linger_ns, 5000000);
	assert_int_equal(cfg.log_level, CO_LOG_DEBUG);
}

static void test_very_long_bad_value_is_reported_in_one_message(void **state)
{
	char value[2000];
	struct co_config cfg;

	(void)state;
	memset(value, 'x', sizeof(value) - 1);
	value[sizeof(value) - 1] = '\0';
	env_clear();
	env_set("COALESCE_MAX_BYTES", value);
	assert_int_equal(load(&cfg), 1);
	assert_int_equal(env.nreports, 1);
	assert_non_null(strstr(env.report[0], "COALESCE_MAX_BYTES"));
	assert_non_null(strstr(env.report[0], "65536"));
	assert_int_equal(cfg.max_bytes, 65536);
}

static void test_large_bytes_clamped_to_max_bytes(void **state)
{
	struct co_config cfg;

	(void)state;
	/* A large threshold above the queue size is brought down to it. */
	env_clear();
	env_set("COALESCE_MAX_BYTES", "1024");
	env_set("COALESCE_LARGE_BYTES", "4096");
	assert_int_equal(load(&cfg), 0);
	assert_int_equal(env.nreports, 0);
	assert_int_equal(cfg.max_bytes, 1024);
	assert_int_equal(cfg.large_bytes, 1024);

	env_clear();
	env_set("COALESCE_LARGE_BYTES", "16777216");
	assert_int_equal(load(&cfg), 0);
	assert_int_equal(cfg.large_bytes, 65536);

	/* Equal is kept. */
	env_clear();
	env_set("COALESCE_MAX_BYTES", "2048");
	env_set("COALESCE_LARGE_BYTES", "2048");
	assert_int_equal(load(&cfg), 0);
	assert_int_equal(cfg.large_bytes, 2048);
}

static void test_large_bytes_default_follows_max_bytes(void **state)
{
	struct co_config cfg;

	(void)state;
	/* Without a setting, the large threshold is half the queue, at most 32768. */
	env_clear();
	env_set("COALESCE_MAX_BYTES", "1024");
	assert_int_equal(load(&cfg), 0);
	assert_int_equal(cfg.large_bytes, 512);

	env_clear();
	env_set("COALESCE_MAX_BYTES", "1000000");
	assert_int_equal(load(&cfg), 0);
	assert_int_equal(cfg.large_bytes, 32768);

	/* A bad value reports the default that applies to this queue size. */
	env_clear();
	env_set("COALESCE_MAX_BYTES", "1024");
	env_set("COALESCE_LARGE_BYTES", "big");
	assert_int_equal(load(&cfg), 1);
	assert_int_equal(env.nreports, 1);
	assert_non_null(strstr(env.report[0], "COALESCE_LARGE_BYTES"));
	assert_non_null(strstr(env.report[0], "512"));
	assert_int_equal(cfg.large_bytes, 512);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults_without_environment),
		cmocka_unit_test(test_defaults_match_the_documented_constants),
		cmocka_unit_test(test_valid_numbers),
		cmocka_unit_test(test_valid_disable_flag),
		cmocka_unit_test(test_valid_direct_flag),
		cmocka_unit_test(test_paths),
		cmocka_unit_test(test_log_levels),
		cmocka_unit_test(test_bad_log_level),
		cmocka_unit_test(test_backends),
		cmocka_unit_test(test_bad_backend),
		cmocka_unit_test(test_bad_flags),
		cmocka_unit_test(test_bad_numbers_are_reported_and_replaced),
		cmocka_unit_test(test_each_bad_value_is_reported_once),
		cmocka_unit_test(test_bad_value_leaves_other_settings_alone),
		cmocka_unit_test(test_very_long_bad_value_is_reported_in_one_message),
		cmocka_unit_test(test_large_bytes_clamped_to_max_bytes),
		cmocka_unit_test(test_large_bytes_default_follows_max_bytes),
	};

	return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
