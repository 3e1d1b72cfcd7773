#!/bin/sh
# Test of the launcher (scripts/coalesce) and of `coalesce ab` (scripts/coalesce-ab):
#   1. launcher: --dry-run prints the environment (an existing LD_PRELOAD kept
#      after the library), warns for static and setuid targets; --version; a
#      bad option or a missing value exits 2 with a message
#   2. ab's usage errors exit 2 with a message
#   3. ab --runs 3 --warmup 1 --json on bench/py_records.py (a small count):
#      valid JSON, both arms, 3 counted runs each, the shim's statistics merged
#      with writes_queued > 0; --plot writes an SVG
#   4. --metric: the number a command prints is read for every run
#   5. the statistics merge, on the fixtures: sums, _max, the delay percentiles
#   6. a failing command: ab exits 1 and names the run; --allow-fail exits 0
#   7. --server/--client: redis-server under the shim, redis-benchmark as the
#      client; the server's statistics are collected (skipped without redis)
#   8. make install into a temporary PREFIX: the installed `coalesce ab` uses
#      the installed library, and `man -l` renders the page (skipped without man)
# No timing is asserted. Takes about 10 s.
#
# Env:  COALESCE_LIB  the library (default build/libcoalesce.so)
# Exit: 0 pass, 1 fail, 77 skipped (python3 missing).
set -u

root=$(cd "$(dirname "$0")/../.." && pwd)
here="$root/tests/scripts"
co="$root/scripts/coalesce"
lib=${COALESCE_LIB:-$root/build/libcoalesce.so}
command -v python3 >/dev/null 2>&1 || { echo "skipped: python3 not installed"; exit 77; }
[ -f "$lib" ] || { echo "FAIL: library not found: $lib (run make)"; exit 1; }
lib=$(cd "$(dirname "$lib")" && pwd)/$(basename "$lib")
# The interpreter itself: pyenv's wrapper scripts would be timed too.
py=$(python3 -c 'import sys; print(sys.executable)')
tmp=$(mktemp -d "${TMPDIR:-/tmp}/coalesce-ab-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
failures=0

fail() {
	echo "FAIL: $*"
	failures=$((failures + 1))
}
pass() { echo "ok:   $*"; }

# expect NAME STATUS COMMAND...: runs COMMAND, output in $tmp/out and $tmp/err,
# and checks its exit status.
expect() {
	name=$1 want=$2
	shift 2
	"$@" >"$tmp/out" 2>"$tmp/err"
	got=$?
	if [ "$got" -eq "$want" ]; then
		pass "$name (exit $got)"
		return 0
	fi
	fail "$name: exit $got, expected $want"
	sed 's/^/      | /' "$tmp/out" "$tmp/err" | tail -n 20
	return 1
}

# has NAME FILE TEXT: checks that FILE holds the fixed string TEXT.
has() {
	if grep -qF -- "$3" "$2"; then pass "$1"; else fail "$1: no \"$3\" in $(basename "$2")"; fi
}

# json_check NAME FILE PYTHON: runs PYTHON with d bound to the JSON in FILE;
# its assert statements make the check.
json_check() {
	if "$py" - "$2" "$3" >"$tmp/py.err" 2>&1 <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
exec(sys.argv[2])
PY
	then
		pass "$1"
	else
		fail "$1"
		sed 's/^/      | /' "$tmp/py.err"
	fi
}

echo "== 1. launcher"
expect "dry run" 0 env LD_PRELOAD="$lib" "$co" --lib "$lib" -n --delay-us 500 --max-msgs 7 --no-direct -- true
has "dry run keeps an existing LD_PRELOAD after the library" "$tmp/out" "LD_PRELOAD=$lib $lib"
has "dry run prints --delay-us" "$tmp/out" "COALESCE_DELAY_US=500"
has "dry run prints --max-msgs" "$tmp/out" "COALESCE_MAX_MSGS=7"
has "dry run prints --no-direct" "$tmp/out" "COALESCE_DIRECT=0"
has "dry run prints the command" "$tmp/out" "command: true"
if [ -f /sbin/ldconfig ] && LC_ALL=C ldd /sbin/ldconfig 2>&1 | grep -q 'statically linked'; then
	expect "dry run of a static binary" 0 "$co" --lib "$lib" -n -- /sbin/ldconfig
	has "warns for a static binary" "$tmp/err" "statically linked"
fi
if [ -u /usr/bin/su ]; then
	expect "dry run of a setuid binary" 0 "$co" --lib "$lib" -n -- /usr/bin/su
	has "warns for a setuid binary" "$tmp/err" "setuid"
fi
expect "--version" 0 "$co" --version
has "--version prints the version" "$tmp/out" "coalesce 0."
expect "--help" 0 "$co" --help
[ "$(wc -l <"$tmp/out")" -le 24 ] && pass "--help fits one screen" || fail "--help is longer than 24 lines"
expect "a bad option" 2 "$co" --no-such-option -- true
has "a bad option is named" "$tmp/err" "unknown option --no-such-option"
expect "an option without its value" 2 "$co" --delay-us -- true
has "the missing value is named" "$tmp/err" "option --delay-us needs a value"
expect "the command runs" 0 "$co" --lib "$lib" -- sh -c 'echo "$LD_PRELOAD"'
has "the command runs with the library" "$tmp/out" "$lib"

echo "== 2. ab: usage errors"
expect "ab --help" 0 "$co" ab --help
has "ab --help" "$tmp/out" "Usage: coalesce ab"
[ "$(wc -l <"$tmp/out")" -le 28 ] && pass "ab --help fits one screen" || fail "ab --help is too long"
expect "ab without a command" 2 "$co" ab
has "ab says what is missing" "$tmp/err" "no command"
expect "ab --runs 0" 2 "$co" ab --runs 0 -- true
expect "ab: a launcher option it refuses" 2 "$co" ab --stats x -- true
expect "ab: a bad launcher option" 2 "$co" ab --lib "$lib" --no-such-option -- true
has "ab passes the launcher's message on" "$tmp/err" "unknown option --no-such-option"
expect "ab: --metric without a group" 2 "$co" ab --metric 'rate' -- true
expect "ab: --server without --client" 2 "$co" ab --server 'sleep 1' --ready-delay 1

echo "== 3. ab on bench/py_records.py"
if expect "ab --runs 3 --json --plot" 0 "$co" ab --runs 3 --warmup 1 --lib "$lib" \
	--json "$tmp/ab.json" --plot "$tmp/ab.svg" -- "$py" "$root/bench/py_records.py" 3000 64; then
	has "the table has arm A" "$tmp/out" "A: plain"
	has "the table names the interval's method" "$tmp/out" "bootstrap of the ratio of medians"
	has "the table shows the statistics" "$tmp/out" "syscalls saved"
	has "the table shows the calls caught" "$tmp/out" "calls caught"
	json_check "JSON: both arms, 3 counted runs and 1 warm-up each" "$tmp/ab.json" '
for arm in "AB":
    counted = [r for r in d["runs"] if r["arm"] == arm and not r["warmup"]]
    warm = [r for r in d["runs"] if r["arm"] == arm and r["warmup"]]
    assert len(counted) == 3 and len(warm) == 1, (arm, len(counted), len(warm))
    assert all(r["ok"] and r["wall_s"] > 0 and r["maxrss_mib"] > 0 for r in counted)
assert [r["arm"] for r in d["runs"]] == list("ABABABAB")'
	json_check "JSON: summaries with a ratio and an interval" "$tmp/ab.json" '
for key in ("wall_s", "cpu_s", "maxrss_mib"):
    s = d["summary"][key]
    assert s["A"]["n"] == 3 and s["B"]["n"] == 3, s
    assert s["ratio"] > 0 and len(s["ci95"]) == 2 and s["verdict"], s
assert d["interval"]["method"].startswith("bootstrap")'
	json_check "JSON: the B runs' statistics merged, writes_queued > 0" "$tmp/ab.json" '
assert d["stats_sums"]["writes_queued"] > 0, d["stats_sums"]
assert d["stats"]["files"] >= 3 and d["stats"]["runs_without_files"] == 0, d["stats"]
assert d["stats"]["syscalls_saved"] > 0 and d["arm_b_environment"]["LD_PRELOAD"]
# Every write the shim queued or sent is a call it caught.
assert d["stats"]["calls_caught"] >= d["stats"]["writes_caught"] > 0, d["stats"]'
	if "$py" -c 'import sys, xml.dom.minidom as m; m.parse(sys.argv[1])' "$tmp/ab.svg" 2>/dev/null &&
		grep -q '<circle' "$tmp/ab.svg"; then
		pass "--plot writes a well-formed SVG with the runs"
	else
		fail "--plot did not write a well-formed SVG with the runs"
	fi
fi

echo "== 4. ab --metric"
if expect "ab --metric" 0 "$co" ab --runs 2 --warmup 0 --lib "$lib" --json "$tmp/metric.json" \
	--metric 'rate: ([0-9.]+) ops' --metric-name rate --higher-is-better -- sh -c 'echo "rate: 42.5 ops/s"'; then
	has "the table labels the metric" "$tmp/out" "rate"
	has "the table says which way is better" "$tmp/out" "higher"
	json_check "JSON: the metric read in every run" "$tmp/metric.json" '
assert [r["metric"] for r in d["runs"]] == [42.5] * 4, d["runs"]
s = d["summary"]["metric"]
assert s["better"] == "higher" and s["ratio"] == 1 and s["verdict"] == "no significant difference", s'
fi
expect "a metric that is not found fails the run" 1 "$co" ab --runs 2 --lib "$lib" --metric 'rate: ([0-9]+)' -- echo nothing
has "the failure says the metric was not found" "$tmp/err" "no match for --metric"

echo "== 5. the statistics merge"
if "$py" -B - "$root/scripts/coalesce-ab" "$here/fixtures" >"$tmp/py.err" 2>&1 <<'PY'
import importlib.machinery, importlib.util, os, sys
loader = importlib.machinery.SourceFileLoader("coalesce_ab", sys.argv[1])
ab = importlib.util.module_from_spec(importlib.util.spec_from_loader("coalesce_ab", loader))
loader.exec_module(ab)
files = [os.path.join(sys.argv[2], f) for f in ("stats-1.json", "stats-2.json")]
sums, read = ab.merge_stats(files)
assert read == 2 and "pid" not in sums, sums
assert sums["writes_queued"] == 100 and sums["delay_us_max"] == 300, sums
d = ab.derive_stats(sums, read, 0)
assert d["writes_caught"] == 115 and d["syscalls_saved"] == 90 and d["mean_batch"] == 5.5, d
assert d["calls_caught"] == 117, d
assert d["calls_per_api"] == {"write": 80, "send": 20, "sendto": 10, "sendmsg": 5, "sendmmsg": 2}, d
assert d["flush_triggers"] == {"deadline": 4, "read": 10, "size": 6}, d["flush_triggers"]
assert d["passthroughs"] == {"not_socket": 3}, d["passthroughs"]
assert (d["delay_p50_us"], d["delay_p99_us"], d["delay_max_us"]) == (128, 256, 300), d
text = "\n".join(ab.stats_report(d, 2))
assert "p50 <= 128 us, p99 <= 256 us, max 300 us" in text, text
assert "calls caught     117 on coalesced sockets: send 20, sendmmsg 2, sendmsg 5, sendto 10, write 80" in text, text
old = {k: v for k, v in sums.items() if not k.startswith("delay_us_")}
assert "not reported" in ab.delay_text(ab.derive_stats(old, 2, 0))
PY
then
	pass "sums, _max and the delay percentiles of the fixtures"
else
	fail "the statistics merge"
	sed 's/^/      | /' "$tmp/py.err"
fi

echo "== 6. a failing command"
expect "a failing run makes ab exit 1" 1 "$co" ab --runs 2 --lib "$lib" -- sh -c 'echo boom >&2; exit 3'
has "the failure names the run and its status" "$tmp/err" "run 1 (A) failed: exit 3"
has "the failure shows the command's stderr" "$tmp/err" "boom"
expect "--allow-fail exits 0" 0 "$co" ab --runs 2 --warmup 0 --lib "$lib" --allow-fail -- sh -c 'exit 3'
has "--allow-fail lists the failed runs" "$tmp/out" "runs failed and were kept"

echo "== 7. ab --server/--client"
if command -v redis-server >/dev/null 2>&1 && command -v redis-benchmark >/dev/null 2>&1; then
	port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	if expect "ab with redis-server and redis-benchmark" 0 "$co" ab --runs 2 --warmup 0 --lib "$lib" \
		--json "$tmp/server.json" --ready-port "$port" \
		--server "redis-server --port $port --bind 127.0.0.1 --save '' --appendonly no" \
		--client "redis-benchmark -p $port -n 2000 -q -t set" \
		--metric 'SET: ([0-9.]+) requests per second' --higher-is-better; then
		has "the table has the server's CPU time" "$tmp/out" "server CPU time"
		json_check "JSON: the server's figures and statistics" "$tmp/server.json" '
runs = [r for r in d["runs"] if not r["warmup"]]
assert len(runs) == 4 and all(r["server_cpu_s"] > 0 and r["metric"] > 0 for r in runs), runs
assert all(r["stats_files"] >= 1 for r in runs if r["arm"] == "B"), runs
assert d["stats"]["writes_caught"] > 0, d["stats"]'
	fi
else
	echo "skipped part: redis-server or redis-benchmark not installed"
fi
expect "a server that ends early fails the run" 1 "$co" ab --runs 1 --lib "$lib" --server 'sleep 0.1' \
	--client 'sleep 1' --ready-delay 0.01
has "the failure says the server ended" "$tmp/err" "the server ended"

echo "== 8. make install"
if expect "make install PREFIX=... DESTDIR=" 0 make -s -C "$root" install PREFIX="$tmp/prefix" DESTDIR=; then
	installed="$tmp/prefix/bin/coalesce"
	expect "the installed coalesce ab --help" 0 "$installed" ab --help
	has "the installed coalesce ab --help" "$tmp/out" "Usage: coalesce ab"
	expect "the installed coalesce ab runs" 0 "$installed" ab --runs 2 --warmup 0 --json "$tmp/inst.json" -- true
	json_check "the installed ab preloads the installed library" "$tmp/inst.json" "
assert d['arm_b_environment']['LD_PRELOAD'] == '$tmp/prefix/lib/libcoalesce.so', d['arm_b_environment']"
	if command -v man >/dev/null 2>&1; then
		expect "man -l renders coalesce.1" 0 man -l "$tmp/prefix/share/man/man1/coalesce.1"
		has "the man page covers coalesce ab" "$tmp/out" "A/B EXPERIMENTS"
		has "the man page lists COALESCE_STATS_INTERVAL_MS" "$tmp/out" "COALESCE_STATS_INTERVAL_MS"
	else
		echo "skipped part: man not installed"
	fi
fi

echo
if [ "$failures" -ne 0 ]; then
	echo "$failures checks failed"
	exit 1
fi
echo "all checks passed"
