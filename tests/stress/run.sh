#!/bin/sh
# Runs the integrity stress harness (tests/stress/stress.c) for many seeds:
# one line per seed, then the failing seeds with the command that replays
# each. Exits 0 only if every seed passed.
#
# Usage: tests/stress/run.sh [quick]
#   quick               8 seeds, 20 s limit each (for `make test`)
# Environment:
#   STRESS_RUNS         number of seeds (default 30; quick: 8)
#   STRESS_SEEDS        explicit seeds instead ("0x1f 42 ..."): replays them
#   STRESS_RUN_TIMEOUT  limit per seed in seconds (default 120; quick: 60: seeds
#                       with slow receivers need 15 s on a busy 2-core machine)
#   COALESCE_LIB        the library, or a space-separated list (default build/libcoalesce.so)
#   STRESS_NO_SHIM=1    run the writers without the shim (checks the harness itself)
#   STRESS_NO_FORK=1    plans without fork (TSan: see README.md)
#   STRESS_SCALE        data volume in percent of the default (default 100)
#   STRESS_WRAP         command prefix for the writer ("valgrind --trace-children=yes ...")
#   STRESS_BIN          the harness binary (default build/tests/stress/stress, built if stale)
#   STRESS_LOG_DIR      where each failing seed's output is kept (default build/test-logs/stress)
set -u

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root" || exit 2

case "${1:-}" in
quick) runs=${STRESS_RUNS:-8} limit=${STRESS_RUN_TIMEOUT:-60} ;;
"") runs=${STRESS_RUNS:-30} limit=${STRESS_RUN_TIMEOUT:-120} ;;
*) echo "usage: $0 [quick]" >&2; exit 2 ;;
esac

bin=${STRESS_BIN:-build/tests/stress/stress}
if [ -z "${STRESS_BIN:-}" ] && { [ ! -x "$bin" ] || [ tests/stress/stress.c -nt "$bin" ]; }; then
	mkdir -p "$(dirname "$bin")"
	${CC:-cc} -O2 -g -Wall -Wextra -Werror -D_GNU_SOURCE -pthread \
		-o "$bin" tests/stress/stress.c || exit 2
fi

COALESCE_LIB=${COALESCE_LIB:-$root/build/libcoalesce.so}
export COALESCE_LIB
if [ -z "${STRESS_NO_SHIM:-}" ] || [ "${STRESS_NO_SHIM:-}" = 0 ]; then
	for l in $COALESCE_LIB; do
		[ -f "$l" ] || { echo "$0: $l not found (run make)" >&2; exit 2; }
	done
	# TSan's runtime before the shim makes TSan blind to the fd locks taken
	# in the waits it intercepts: false races (tests/stress/README.md).
	case " $COALESCE_LIB " in
	*/libtsan.so*" "*libcoalesce*)
		echo "$0: COALESCE_LIB: list the TSan runtime after the shim, not before" >&2
		exit 2
		;;
	esac
fi
# The harness reports its own timeout (what each thread was doing) before ours.
STRESS_TIMEOUT=${STRESS_TIMEOUT:-$((limit > 15 ? limit - 5 : limit))}
export STRESS_TIMEOUT

log_dir=${STRESS_LOG_DIR:-build/test-logs/stress}
mkdir -p "$log_dir"

seeds=${STRESS_SEEDS:-}
if [ -z "$seeds" ]; then
	i=0
	while [ "$i" -lt "$runs" ]; do
		seeds="$seeds 0x$(od -An -N8 -tx8 /dev/urandom | tr -d ' \n')"
		i=$((i + 1))
	done
fi

# The settings a replay needs besides the seed.
replay_env="COALESCE_LIB='$COALESCE_LIB'"
for v in STRESS_NO_SHIM STRESS_NO_FORK STRESS_SCALE STRESS_WRAP STRESS_WRITER_ENV ASAN_OPTIONS \
	UBSAN_OPTIONS TSAN_OPTIONS; do
	eval "val=\${$v:-}"
	[ -n "$val" ] && replay_env="$replay_env $v='$val'"
done

passed=0 failed=0 failures=""
start=$(date +%s)
for seed in $seeds; do
	log="$log_dir/$seed.log"
	STRESS_SEED=$seed timeout -k 5 "$limit" "$bin" >"$log" 2>&1
	rc=$?
	summary=$(grep -E '^(PASS|FAIL) seed=' "$log" | tail -n 1)
	if [ $rc -eq 0 ]; then
		passed=$((passed + 1))
		echo "$summary"
		grep -E '^  note:' "$log" | sed 's/^/    /'
		rm -f "$log"
		continue
	fi
	failed=$((failed + 1))
	failures="$failures $seed"
	if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
		echo "FAIL seed=$seed (killed after ${limit}s)"
	else
		echo "${summary:-FAIL seed=$seed (exit $rc)}"
	fi
	grep -v -E '^(PASS|FAIL) seed=' "$log" | head -n 40 | sed 's/^/    | /'
	echo "    | (full output: $log)"
done

echo
echo "$passed passed, $failed failed ($(($(date +%s) - start)) s)"
if [ $failed -gt 0 ]; then
	echo "failing seeds:$failures"
	echo "replay one:  $replay_env STRESS_SEED=<seed> STRESS_VERBOSE=1 $bin"
	echo "replay all:  $replay_env STRESS_SEEDS='${failures# }' $0"
	exit 1
fi
exit 0
