#!/bin/sh
# Builds the core fuzzer with clang (libFuzzer + ASan + UBSan) into
# build/fuzz/ and runs it for FUZZ_SECONDS (default 30) on a copy of the
# seed corpus. Exits non-zero if the build fails or the fuzzer finds a crash
# (the input is left in build/fuzz/artifacts/).
#
# Usage: tests/fuzz/run.sh [extra libFuzzer options...]
#   FUZZ_SECONDS=600 tests/fuzz/run.sh           a longer run
#   FUZZ_JOBS=2 tests/fuzz/run.sh                 several workers (-fork=N)
#   FUZZ_BUILD_ONLY=1 tests/fuzz/run.sh           build, do not run
#   CLANG=clang-14 tests/fuzz/run.sh              the compiler (default: clang)
#   FUZZ_COVERAGE=1 tests/fuzz/run.sh             coverage of core/ by the corpus
#   tests/fuzz/run.sh build/fuzz/artifacts/crash-...   replay one input
#   tests/fuzz/run.sh replay [INPUT...]           no libFuzzer: build with $CC (default
#       cc) + ASan/UBSan, replay the seeds (or INPUTs)
set -u

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root" || exit 1
out=${FUZZ_OUT:-build/fuzz}
seconds=${FUZZ_SECONDS:-30}
jobs=${FUZZ_JOBS:-1}
clang=${CLANG:-clang}
bin=$out/fuzz_core
mkdir -p "$out/corpus" "$out/artifacts" || exit 1

# core changes under us: adapt to what this checkout's core/ has.
defs=$(tests/fuzz/defs.sh "$clang") || exit 1

if [ "${1:-}" = replay ]; then
	# A regression test for any compiler: every seed once.
	shift
	cc=${CC:-cc}
	mkdir -p "$out/replay" || exit 1
	rdefs=$(tests/fuzz/defs.sh "$cc") || exit 1
	# shellcheck disable=SC2086
	"$cc" -O1 -g -D_GNU_SOURCE -pthread -Wall -Wextra -Werror $rdefs \
		-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
		-Icore -o "$out/replay/fuzz_core_replay" tests/fuzz/fuzz_core.c \
		tests/fuzz/replay_main.c core/*.c || exit 1
	[ $# -gt 0 ] || set -- tests/fuzz/corpus
	ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1} \
		UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1} \
		"$out/replay/fuzz_core_replay" "$@" 2>"$out/replay/replay.log"
	rc=$?
	[ $rc -eq 0 ] || tail -40 "$out/replay/replay.log" >&2
	echo "fuzz_core replay: $(grep -c '^replay ' "$out/replay/replay.log") inputs, exit $rc"
	[ $rc -eq 0 ]
	exit
fi

if [ "${FUZZ_COVERAGE:-0}" = 1 ]; then
	# Source-based coverage of core/ by the working corpus and the seeds.
	ver=$("$clang" --version | sed -n 's/.*version \([0-9]*\).*/\1/p' | head -1)
	profdata=$(command -v llvm-profdata || command -v "llvm-profdata-$ver") || exit 1
	llvmcov=$(command -v llvm-cov || command -v "llvm-cov-$ver") || exit 1
	mkdir -p "$out/cov" || exit 1
	# shellcheck disable=SC2086
	"$clang" -g -O0 -D_GNU_SOURCE -pthread $defs -fsanitize=fuzzer \
		-fprofile-instr-generate -fcoverage-mapping -Icore -o "$out/cov/fuzz_core_cov" \
		tests/fuzz/fuzz_core.c core/*.c || exit 1
	rm -f "$out/cov/cov.profraw"
	LLVM_PROFILE_FILE="$out/cov/cov.profraw" "$out/cov/fuzz_core_cov" -runs=0 \
		"$out/corpus" tests/fuzz/corpus >"$out/cov/run.log" 2>&1 || {
		tail -30 "$out/cov/run.log"
		exit 1
	}
	"$profdata" merge -o "$out/cov/cov.profdata" "$out/cov/cov.profraw" || exit 1
	"$llvmcov" report "$out/cov/fuzz_core_cov" -instr-profile="$out/cov/cov.profdata" core/*.c
	echo "lines never run: $llvmcov show $out/cov/fuzz_core_cov -instr-profile=$out/cov/cov.profdata core/FILE.c"
	exit 0
fi

# shellcheck disable=SC2086
"$clang" -g -O1 -D_GNU_SOURCE -pthread -Wall -Wextra -Werror $defs \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
	-Icore -o "$bin" tests/fuzz/fuzz_core.c core/*.c || exit 1
echo "built $bin ($defs )"
[ "${FUZZ_BUILD_ONLY:-0}" = 1 ] && exit 0


export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

# Arguments that are files: replay them.
if [ $# -gt 0 ] && [ -f "$1" ]; then
	exec "$bin" "$@"
fi

# The working corpus grows in build/fuzz/corpus; the seeds stay as they are.
if [ "$jobs" -gt 1 ]; then
	par="-fork=$jobs"
else
	par=""
fi
# shellcheck disable=SC2086
"$bin" $par -max_total_time="$seconds" -max_len=4096 -timeout=20 -rss_limit_mb=4096 \
	-error_exitcode=1 -timeout_exitcode=1 \
	-print_final_stats=1 -artifact_prefix="$out/artifacts/" "$@" \
	"$out/corpus" tests/fuzz/corpus
rc=$?
if [ $rc -ne 0 ]; then
	echo "fuzz_core: failed (exit $rc); inputs in $out/artifacts/:" >&2
	ls -t "$out/artifacts" >&2
fi
exit $rc
