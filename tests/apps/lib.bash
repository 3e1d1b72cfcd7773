# Shared by the real-application tests (socat.sh, redis.sh); sourced, never run. It is
# named .bash, not .sh, so that scripts/run-tests.sh (which runs every tests/apps/*.sh)
# does not take it for a test. The scripts run it under bash with `set -u`.
#
# A script sources this file, then:
#   app_require TOOL...       skips the test (exit 77) unless every TOOL is installed
#   app_find_lib              sets LIB to the absolute path of the library, or fails
#   app_start NAME            work directory $TMP (stats files in $TMP/stats), traps, and a
#                             watchdog that ends the script after $BUDGET seconds
#   fail MSG / pass MSG       count a failed / passed case (FAILS, PASSES, FAIL_MSGS)
#   app_finish                prints the summary and exits 0 (all passed) or 1
# and may redefine two hooks (each is a no-op here):
#   app_stop_children         called at exit, before $TMP is removed: stop background jobs
#   app_on_fail MSG           called by fail after the failure is counted

# ---- set-up and tear-down -------------------------------------------------------------------

app_require() {   # app_require TOOL...
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null 2>&1 || { echo "skipped: $t not installed"; exit 77; }
    done
}

# COALESCE_LIB may be a space-separated list, as LD_PRELOAD takes it (the ASan runtime first,
# then the ASan build of the library): every entry must exist, each is made absolute
app_find_lib() {   # sets LIB from COALESCE_LIB (default ./build/libcoalesce.so)
    local l out=""
    for l in ${COALESCE_LIB:-./build/libcoalesce.so}; do
        if [ ! -f "$l" ]; then
            echo "FAIL: library not found: $l (set COALESCE_LIB or run make)"
            exit 1
        fi
        out="$out $(cd "$(dirname "$l")" && pwd)/$(basename "$l")"
    done
    LIB=${out# }
    [ -n "$LIB" ] || { echo "FAIL: COALESCE_LIB is empty"; exit 1; }
}

app_stop_children() { :; }
app_on_fail() { :; }

app_cleanup() {
    [ -n "$WDPID" ] && kill "$WDPID" 2>/dev/null
    app_stop_children
    if [ -n "${KEEP_TMP:-}" ]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
}

app_start() {   # app_start NAME: NAME names the work directory and the summary; needs BUDGET
    APP=$1
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/coalesce-$APP.XXXXXX")
    mkdir -p "$TMP/stats"
    WDPID=""
    trap app_cleanup EXIT
    trap 'echo "FAIL: interrupted (or over the ${BUDGET}s budget)"; exit 1' INT TERM HUP
    # watchdog: whatever hangs, the script ends within its budget (plus one bounded command)
    ( trap 'kill $sp 2>/dev/null; exit 0' TERM; sleep "$BUDGET" & sp=$!; wait $sp
      kill -TERM $$ 2>/dev/null ) </dev/null >/dev/null 2>&1 &
    WDPID=$!
}

# ---- results --------------------------------------------------------------------------------

FAILS=0
PASSES=0
FAIL_MSGS=()
fail() {
    echo "FAIL: $*"; FAILS=$((FAILS + 1)); FAIL_MSGS+=("$(printf '%s' "$*" | cut -c1-160)")
    app_on_fail "$*"
}
pass() { echo "ok:   $*"; PASSES=$((PASSES + 1)); }

app_finish() {
    local m
    if [ $FAILS != 0 ]; then
        echo "failures:"
        for m in "${FAIL_MSGS[@]}"; do echo "  - $m"; done
    fi
    echo "$APP: $PASSES passed, $FAILS failed"
    [ $FAILS = 0 ] || exit 1
    exit 0
}

# ---- free loopback ports --------------------------------------------------------------------

USED_PORTS=" "
port_busy() {
    if command -v ss >/dev/null 2>&1; then
        ss -Htan "( sport = :$1 )" 2>/dev/null | grep -q .
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
    fi
}
free_port() {   # prints a free port not handed out before, or returns 1
    local p i
    for i in $(seq 1 200); do
        p=$(( 10000 + (RANDOM * 32768 + RANDOM) % 22000 ))   # below the ephemeral range
        case "$USED_PORTS" in *" $p "*) continue ;; esac
        if ! port_busy "$p"; then USED_PORTS="$USED_PORTS$p "; echo "$p"; return 0; fi
    done
    return 1
}

# ---- the shim and its stats files -----------------------------------------------------------

# set_env SHIM TAG: sets ENVCMD, the command prefix that runs a program with the shim on (1)
# or off (0). Stats files land in $TMP/stats/TAG.<pid>.json.
set_env() {
    if [ "$1" = 1 ]; then
        ENVCMD=(env LD_PRELOAD="$LIB" COALESCE_STATS="$TMP/stats/$2.%p.json")
    else
        ENVCMD=(env -u LD_PRELOAD -u COALESCE_STATS)
    fi
}

stat_sum() {   # stat_sum TAG KEY_REGEX: sum over the tag's stats files of the matching keys
    local tag=$1 key=$2 f v sum=0 n=0
    for f in "$TMP/stats/$tag".*.json; do
        [ -e "$f" ] || continue
        n=$((n + 1))
        for v in $(sed -n "s/^[[:space:]]*\"$key\"[[:space:]]*:[[:space:]]*\([0-9][0-9]*\).*/\1/p" "$f"); do
            sum=$((sum + v))
        done
    done
    if [ $n = 0 ]; then echo none; else echo $sum; fi
}
# one-line summary of the write counters of a tag: every "writes_*" key, and flush_syscalls
stat_note() {
    local tag=$1 f keys k out=""
    f=$(ls "$TMP/stats/$tag".*.json 2>/dev/null | head -n1)
    [ -n "$f" ] || { echo "no stats"; return; }
    keys=$(sed -n 's/^[[:space:]]*"\(writes_[a-z_]*\)".*/\1/p' "$f")
    for k in $keys flush_syscalls; do out="$out $k=$(stat_sum "$tag" "$k")"; done
    echo "${out# }"
}

# check_stats TAG WHAT MUST_SEE: the shimmed process WHAT must have written its stats file,
# and (if MUST_SEE=1) its shim must have handled at least one socket write (any "writes_*"
# counter: queued, or sent directly by the shim's own policy). Adds the counters to
# STATS_NOTE; on failure fails the case $CASE and returns 1.
STATS_NOTE=""
check_stats() {
    local tag=$1 what=$2 must=$3 seen
    seen=$(stat_sum "$tag" 'writes_[a-z_]*')
    STATS_NOTE="$STATS_NOTE [$what: $(stat_note "$tag")]"
    if [ "$seen" = none ]; then
        fail "$CASE: no COALESCE_STATS file from the shimmed $what (library not loaded, or no stats at exit)"
        return 1
    fi
    if [ "$must" = 1 ] && [ "$seen" -le 0 ]; then
        fail "$CASE: the shim in $what handled no socket write (all writes_* counters 0): it never intercepted"
        return 1
    fi
    return 0
}
