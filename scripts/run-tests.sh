#!/bin/sh
# Runs every test: the unit tests of core (plain, ASan+UBSan, TSan), the
# integration tests under the shim (plain build, and ASan+UBSan build), the
# real-application tests, and the tests of the launcher and its tools. A test
# exits 0 (passed), 77 (skipped, with its reason on stdout) or anything else
# (failed). Prints one line per test and a closing line,
# "N passed, N failed, N skipped".
#
# Usage: scripts/run-tests.sh [BUILD_DIR]   (default: build)
#        TESTS=pattern limits the run to tests whose name matches.
set -u

build=${1:-build}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1
build=$(cd "$build" && pwd) || exit 1
pattern=${TESTS:-}
passed=0 failed=0 skipped=0
failures=""
log_dir="$build/test-logs"
mkdir -p "$log_dir"

# run NAME TIMEOUT_S COMMAND...: runs one test, output kept in its log file.
run() {
	name=$1 limit=$2
	shift 2
	case "$name" in *"$pattern"*) ;; *) return ;; esac
	log="$log_dir/$(echo "$name" | tr '/ ' '__').log"
	timeout -k 5 "$limit" "$@" >"$log" 2>&1
	rc=$?
	case $rc in
	0) passed=$((passed + 1)); echo "PASS  $name" ;;
	77) skipped=$((skipped + 1)); echo "SKIP  $name ($(grep -m1 -i 'skipped' "$log" || echo 'no reason given'))" ;;
	*)
		failed=$((failed + 1)); failures="$failures $name"
		[ $rc -eq 124 ] && echo "FAIL  $name (timed out after ${limit}s)" || echo "FAIL  $name (exit $rc)"
		tail -n 30 "$log" | sed 's/^/      | /'
		;;
	esac
}

lib="$build/libcoalesce.so"
asan_rt=$(cc -print-file-name=libasan.so)
tsan_rt=$(cc -print-file-name=libtsan.so)

for san in plain asan tsan; do
	for t in "$build"/unit-$san/test_*; do
		[ -x "$t" ] || continue
		# TSan needs a fixed address layout on kernels with many mmap random bits.
		if [ $san = tsan ]; then
			run "unit/$san/$(basename "$t")" 120 setarch "$(uname -m)" -R "$t"
		else
			run "unit/$san/$(basename "$t")" 120 "$t"
		fi
	done
done

for t in "$build"/tests/integration/*; do
	[ -x "$t" ] || continue
	run "integration/$(basename "$t")" 120 env COALESCE_LIB="$lib" "$t"
done

# The same integration tests with the shim built with ASan+UBSan. The
# runtime must come first in LD_PRELOAD; leaks in the (uninstrumented)
# test programs themselves are not ours to report.
if [ -f "$build/asan/libcoalesce.so" ]; then
	for t in "$build"/tests/integration/*; do
		[ -x "$t" ] || continue
		run "integration-asan/$(basename "$t")" 180 env \
			COALESCE_LIB="$asan_rt $build/asan/libcoalesce.so" \
			ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1 \
			UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 "$t"
	done
fi

# The integration tests again with the io_uring flush backend used for
# every flush of many fds, however few (COALESCE_BACKEND=uring; where
# io_uring cannot be had, the tests check the fallback instead).
for t in "$build"/tests/integration/*; do
	[ -x "$t" ] || continue
	run "integration-uring/$(basename "$t")" 120 env COALESCE_LIB="$lib" \
		COALESCE_BACKEND=uring "$t"
done

# The integrity stress harness: random mixes of APIs, sizes, threads and
# endings, verified byte for byte (tests/stress/README.md); a few seeds here.
run "stress/quick" 300 env COALESCE_LIB="$lib" STRESS_LOG_DIR="$log_dir/stress" \
	sh tests/stress/run.sh quick
run "stress-uring/quick" 300 env COALESCE_LIB="$lib" STRESS_WRITER_ENV=COALESCE_BACKEND=uring \
	STRESS_LOG_DIR="$log_dir/stress-uring" sh tests/stress/run.sh quick
# With ASan, plans without fork: GCC 12's libasan takes no allocator locks
# around fork, and the child of a multithreaded writer may hang on one (2 to
# 6 runs in 100); the plain and uring steps keep every fork ending.
if [ -f "$build/asan/libcoalesce.so" ]; then
	run "stress-asan/quick" 300 env COALESCE_LIB="$asan_rt $build/asan/libcoalesce.so" \
		ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1 \
		STRESS_NO_FORK=1 STRESS_LOG_DIR="$log_dir/stress-asan" sh tests/stress/run.sh quick
fi
# The shim built with TSan, loaded before the TSan runtime (the other order
# hides the fd locks from TSan: tests/stress/README.md). Plans without fork:
# this TSan cannot follow the child of a multithreaded process (it may hang
# it). halt_on_error makes a report end the writer, so that endings whose
# exit status TSan cannot set (SIGTERM, exec) fail too. atexit_sleep_ms=0:
# TSan's exit otherwise waits a second after the shim's destructor while the
# other threads write, which turns the open exit race (finding 2 there) from
# rare into routine in some plans. tsan.supp says why each of its
# suppressions is there. Then two exit-thread plans that showed the
# co_shim_on race in every replay (a plan is drawn from the seed: pick other
# such seeds if the harness's plans change).
tsan_opts="atexit_sleep_ms=0:halt_on_error=1:suppressions=$root/tests/stress/tsan.supp"
if [ -f "$tsan_rt" ] && [ -f "$build/tsan/libcoalesce.so" ]; then
	run "stress-tsan/quick" 300 env COALESCE_LIB="$build/tsan/libcoalesce.so $tsan_rt" \
		TSAN_OPTIONS="$tsan_opts" STRESS_NO_FORK=1 STRESS_WRAP="setarch $(uname -m) -R" \
		STRESS_RUNS=6 STRESS_LOG_DIR="$log_dir/stress-tsan" sh tests/stress/run.sh quick
	run "stress-tsan/exit-race" 120 env COALESCE_LIB="$build/tsan/libcoalesce.so $tsan_rt" \
		TSAN_OPTIONS="$tsan_opts" STRESS_NO_FORK=1 STRESS_WRAP="setarch $(uname -m) -R" \
		STRESS_SEEDS="0x5bb952d167945254 0x42adf3958d512e4d" STRESS_LOG_DIR="$log_dir/stress-tsan" \
		sh tests/stress/run.sh quick
else
	run "stress-tsan/quick" 10 sh -c 'echo "skipped: no TSan runtime (libtsan.so) or no TSan build of the shim"; exit 77'
fi
# A few seeds with the writer under valgrind's memcheck (any error fails).
if command -v valgrind >/dev/null 2>&1; then
	run "stress-valgrind/quick" 300 env COALESCE_LIB="$lib" STRESS_RUNS=3 STRESS_SCALE=20 \
		STRESS_WRAP="valgrind --trace-children=yes -q --error-exitcode=42" \
		STRESS_LOG_DIR="$log_dir/stress-valgrind" sh tests/stress/run.sh quick
else
	run "stress-valgrind/quick" 10 sh -c 'echo "skipped: valgrind is not installed"; exit 77'
fi

# The core fuzzer: every seed replayed (any compiler), then
# a short libFuzzer run where clang is there (tests/fuzz/README.md).
run "fuzz/replay" 300 sh tests/fuzz/run.sh replay
if command -v clang >/dev/null 2>&1; then
	run "fuzz/core-20s" 300 env FUZZ_SECONDS=20 sh tests/fuzz/run.sh
fi

# Each real application twice: as it comes (a lone write between two reads
# is sent at once), and with every small write queued (COALESCE_DIRECT=0),
# so that the queue is exercised by the real programs too.
for t in tests/apps/*.sh; do
	[ -f "$t" ] || continue
	app=$(basename "$t" .sh)
	run "apps/$app" 300 env COALESCE_LIB="$lib" sh "$t"
	run "apps/$app-queue-all" 300 env COALESCE_LIB="$lib" COALESCE_DIRECT=0 sh "$t"
done

# The launcher, `coalesce ab`, make install and the man page (tests/scripts).
for t in tests/scripts/*.sh; do
	[ -f "$t" ] || continue
	run "scripts/$(basename "$t" .sh)" 120 env COALESCE_LIB="$lib" sh "$t"
done

echo
[ -n "$failures" ] && echo "failed:$failures"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
