#!/usr/bin/env bash
# Real-application regression test: socat under the coalesce shim.
#
# Moves random data through socat over TCP loopback and UNIX stream sockets with the shim
# in the sender, in the receiver, in both (and in neither, as a sanity baseline), and checks
# that the sha256 of what arrived equals what was sent. Cases:
#   uni    one-way transfer (socat -u), default 8 KiB blocks and 100-byte blocks (many small
#          writes, TCP_NODELAY on), shim in sender / receiver / both
#   echo   two-way transfer through an echo server (socat ... EXEC:cat; the shim, when in the
#          server, is inherited by cat, which writes to a socketpair), shim in client /
#          server / both
#   lines  interactive line-by-line request/response: a line goes out, its echo must come
#          back before the next line is sent (a shim that forgets to flush before a wait
#          shows up as a timeout here)
#   burst  socat EXEC's a perl program (the shim inherited) that writes 64-byte records with
#          syswrite(): short bursts ended by a sleep, one long burst (size flushes), bursts
#          followed by pure computation (deadline flushes), a last burst followed by exit.
#          socat itself issues one write per select(), which a shim may rightly send at
#          once; this case makes sure the queue itself is exercised through socat. Skipped
#          (the case, not the script) when perl is missing.
#   dupfd  as burst, but perl alternates bursts between fd 1 and fd 0, which socat's EXEC
#          (like inetd, sshd, systemd Accept=yes) connects to one and the same socket: two
#          fds, one byte stream, so the order across the two fds must be kept.
#
# Env:  COALESCE_LIB  path of the library (default ./build/libcoalesce.so)
#       SOCAT_MIB     size of the bulk data in MiB (default 4)
#       SOCAT_LINES   round trips in the interactive case (default 1000)
#       KEEP_TMP=1    keep the work directory (logs, stats) for inspection
#       SOCAT_TEST_BUDGET  seconds before the whole script gives up (default 200)
# Other COALESCE_* settings in the environment reach the shimmed processes unchanged.
# Exit: 0 pass, 1 fail, 77 skipped (socat not installed). Takes about 10 s.
# Re-run under bash when started as `sh script` (the test runner does that).
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -u

LIB=${COALESCE_LIB:-./build/libcoalesce.so}
MIB=${SOCAT_MIB:-4}
LINES=${SOCAT_LINES:-1000}
T=(timeout -k 2 20)          # every socat run is bounded (a normal case takes < 1 s)
BUDGET=${SOCAT_TEST_BUDGET:-200}   # seconds for the whole script; the runner allows 300

command -v socat >/dev/null 2>&1 || { echo "skipped: socat not installed"; exit 77; }
for t in timeout sha256sum; do
    command -v $t >/dev/null 2>&1 || { echo "skipped: $t not installed"; exit 77; }
done
if [ ! -f "$LIB" ]; then
    echo "FAIL: library not found: $LIB (set COALESCE_LIB or run make)"
    exit 1
fi
LIB=$(cd "$(dirname "$LIB")" && pwd)/$(basename "$LIB")

TMP=$(mktemp -d "${TMPDIR:-/tmp}/coalesce-socat.XXXXXX")
BGPIDS=()
WDPID=""
cleanup() {
    local p
    [ -n "$WDPID" ] && kill "$WDPID" 2>/dev/null
    for p in "${BGPIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${BGPIDS[@]}"; do wait "$p" 2>/dev/null; done
    if [ -n "${KEEP_TMP:-}" ]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'echo "FAIL: interrupted (or over the ${BUDGET}s budget)"; exit 1' INT TERM HUP
# watchdog: whatever hangs, the script ends within its budget (plus one bounded command)
( trap 'kill $sp 2>/dev/null; exit 0' TERM; sleep "$BUDGET" & sp=$!; wait $sp
  kill -TERM $$ 2>/dev/null ) </dev/null >/dev/null 2>&1 &
WDPID=$!

FAILS=0
PASSES=0
TIMEOUTS=0
FAIL_MSGS=()
fail() {
    echo "FAIL: $*"; FAILS=$((FAILS + 1)); FAIL_MSGS+=("$(printf '%s' "$*" | cut -c1-160)")
    case "$*" in *"exit 124"*|*"exit 137"*|*"within 5 s"*) TIMEOUTS=$((TIMEOUTS + 1)) ;; esac
}
pass() { echo "ok:   $*"; PASSES=$((PASSES + 1)); }

# ---- helpers ------------------------------------------------------------------------------

USED_PORTS=" "
port_busy() {
    if command -v ss >/dev/null 2>&1; then
        ss -Htan "( sport = :$1 )" 2>/dev/null | grep -q .
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
    fi
}
free_port() {
    local p i
    for i in $(seq 1 200); do
        p=$(( 10000 + (RANDOM * 32768 + RANDOM) % 22000 ))   # below the ephemeral range
        case "$USED_PORTS" in *" $p "*) continue ;; esac
        if ! port_busy "$p"; then USED_PORTS="$USED_PORTS$p "; echo "$p"; return 0; fi
    done
    return 1
}

# ENVCMD: the command prefix that runs a program with the shim on (1) or off (0).
# Stats files land in $TMP/stats/<tag>.<pid>.json.
mkdir -p "$TMP/stats"
set_env() {
    if [ "$1" = 1 ]; then
        ENVCMD=(env LD_PRELOAD="$LIB" COALESCE_STATS="$TMP/stats/$2.%p.json")
    else
        ENVCMD=(env -u LD_PRELOAD -u COALESCE_STATS)
    fi
}

# sum of one stats key over all stats files of a tag; prints "none" if there are none
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

# check_stats TAG WHAT MUST_SEE: the shimmed process must have written its stats file, and
# (if MUST_SEE=1) its shim must have handled at least one socket write (any "writes_*"
# counter: queued, or sent directly by the shim's own policy); returns 1 on failure
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

# wait until a socat listener logged "listening on" (it was started with -d -d)
wait_listen() {
    local log=$1 pid=$2 i
    for i in $(seq 1 100); do
        grep -q "listening on" "$log" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# wait for a background pid; returns its exit code
wait_bg() {
    local pid=$1 rc
    wait "$pid"; rc=$?
    BGPIDS=("${BGPIDS[@]/$pid}")
    return $rc
}

# addresses for a family: sets LISTEN and CONNECT
set_addrs() {
    local fam=$1 name=$2 nodelay=$3 port
    if [ "$fam" = tcp ]; then
        port=$(free_port) || { echo "no free port"; return 1; }
        LISTEN="TCP4-LISTEN:$port,bind=127.0.0.1,reuseaddr"
        CONNECT="TCP4:127.0.0.1:$port"
        if [ "$nodelay" = 1 ]; then LISTEN="$LISTEN,nodelay"; CONNECT="$CONNECT,nodelay"; fi
    else
        LISTEN="UNIX-LISTEN:$TMP/sock.$name"
        CONNECT="UNIX-CONNECT:$TMP/sock.$name"
    fi
    return 0
}

# ---- test data ----------------------------------------------------------------------------

head -c $((MIB * 1024 * 1024)) /dev/urandom > "$TMP/big"
head -c $((1024 * 1024 + 777)) /dev/urandom > "$TMP/small"
SHA_big=$(sha256sum < "$TMP/big" | cut -d' ' -f1)
SHA_small=$(sha256sum < "$TMP/small" | cut -d' ' -f1)

HAVE_PERL=0
if command -v perl >/dev/null 2>&1; then
    HAVE_PERL=1
    cat > "$TMP/gen.pl" <<'PERL'
# writes 64-byte records to stdout, one syswrite each, in bursts
use strict;
my $n = 0;
sub rec {
    my $r = sprintf("%08d", $n++) . ("x" x 55) . "\n";
    my $w = syswrite(STDOUT, $r);
    die "short write: $!" unless defined $w && $w == 64;
}
for my $b (1 .. 200) {            # short bursts, each ended by a 1 ms sleep (a wait)
    rec() for 1 .. (($b * 7) % 50 + 1);
    select(undef, undef, undef, 0.001);
}
rec() for 1 .. 20000;             # one long burst: 1.25 MiB, flushed on size
for my $b (1 .. 20) {             # bursts followed by ~1 ms of computation, no syscall
    rec() for 1 .. 10;
    my $x = 0; $x += $_ for 1 .. 30000;
}
rec() for 1 .. 123;               # a last burst, then exit
PERL
    perl "$TMP/gen.pl" > "$TMP/burst.expected" || { echo "FAIL: perl generator failed"; exit 1; }
    cat > "$TMP/dup.pl" <<'PERL'
# writes 64-byte records alternately to fd 1 and fd 0 (the same socket under socat EXEC)
use strict;
open(my $fd0, ">&=", 0) or die "fd 0: $!";
my $n = 0;
sub rec {
    my $fh = shift;
    my $r = sprintf("%08d", $n++) . ("y" x 55) . "\n";
    my $w = syswrite($fh, $r);
    die "short write: $!" unless defined $w && $w == 64;
}
for my $b (1 .. 400) {
    rec(\*STDOUT) for 1 .. ($b % 7 + 1);
    rec($fd0) for 1 .. ($b % 5 + 1);
    select(undef, undef, undef, 0.0005) if $b % 50 == 0;
}
PERL
    perl "$TMP/dup.pl" 1<>"$TMP/dup.expected" 0>&1 || { echo "FAIL: perl generator failed"; exit 1; }
fi

# ---- one-way transfer ---------------------------------------------------------------------

# uni FAMILY SENDER_SHIM RECEIVER_SHIM BLOCKSIZE DATA
uni() {
    local fam=$1 ss=$2 rs=$3 bs=$4 data=$5
    local name="uni-$fam-s$ss-r$rs-b$bs"
    local out=$TMP/out.$name log=$TMP/log.$name rpid src rrc want got nodelay=0
    CASE="$name"; STATS_NOTE=""
    [ "$bs" -lt 1024 ] && nodelay=1
    set_addrs "$fam" "$name" "$nodelay" || { fail "$CASE: set-up"; return; }
    local t0=$(date +%s%N)

    set_env "$rs" "$name.recv"
    "${T[@]}" "${ENVCMD[@]}" socat -d -d -u "$LISTEN" "OPEN:$out,creat,trunc" 2>"$log.recv" &
    rpid=$!; BGPIDS+=("$rpid")
    if ! wait_listen "$log.recv" "$rpid"; then
        fail "$CASE: receiver did not start listening"; sed 's/^/    /' "$log.recv"; return
    fi
    set_env "$ss" "$name.send"
    "${T[@]}" "${ENVCMD[@]}" socat -b "$bs" -u "OPEN:$data" "$CONNECT" 2>"$log.send"
    src=$?
    wait_bg "$rpid"; rrc=$?
    local ms=$(( ($(date +%s%N) - t0) / 1000000 ))

    if [ $src != 0 ] || [ $rrc != 0 ]; then
        fail "$CASE: sender exit $src, receiver exit $rrc"
        tail -n 5 "$log.send" "$log.recv" | sed 's/^/    /'
        return
    fi
    if [ "$data" = "$TMP/big" ]; then want=$SHA_big; else want=$SHA_small; fi
    got=$(sha256sum < "$out" | cut -d' ' -f1)
    if [ "$got" != "$want" ]; then
        fail "$CASE: data differs: sent $(stat -c %s "$data") bytes, received $(stat -c %s "$out") bytes"
        return
    fi
    local ok=1
    # a small-block sender writes 100-byte blocks: the shim must see them
    if [ "$ss" = 1 ]; then check_stats "$name.send" sender "$nodelay" || ok=0; fi
    if [ "$rs" = 1 ]; then check_stats "$name.recv" receiver 0 || ok=0; fi
    [ $ok = 1 ] && pass "$CASE ($(stat -c %s "$out") bytes, ${ms} ms)$STATS_NOTE"
    rm -f "$out"
}

# ---- two-way transfer through an echo server -------------------------------------------

# echo_case FAMILY CLIENT_SHIM SERVER_SHIM BLOCKSIZE
echo_case() {
    local fam=$1 cs=$2 ss=$3 bs=$4
    local name="echo-$fam-c$cs-s$ss-b$bs"
    local out=$TMP/out.$name log=$TMP/log.$name spid crc src got
    CASE="$name"; STATS_NOTE=""
    set_addrs "$fam" "$name" 1 || { fail "$CASE: set-up"; return; }
    local t0=$(date +%s%N)

    set_env "$ss" "$name.server"
    "${T[@]}" "${ENVCMD[@]}" socat -d -d -t 10 -b "$bs" "$LISTEN" EXEC:cat 2>"$log.server" &
    spid=$!; BGPIDS+=("$spid")
    if ! wait_listen "$log.server" "$spid"; then
        fail "$CASE: server did not start listening"; sed 's/^/    /' "$log.server"; return
    fi
    set_env "$cs" "$name.client"
    "${T[@]}" "${ENVCMD[@]}" socat -t 10 -b "$bs" - "$CONNECT" < "$TMP/small" > "$out" 2>"$log.client"
    crc=$?
    wait_bg "$spid"; src=$?
    local ms=$(( ($(date +%s%N) - t0) / 1000000 ))

    if [ $crc != 0 ] || [ $src != 0 ]; then
        fail "$CASE: client exit $crc, server exit $src"
        tail -n 5 "$log.client" "$log.server" | sed 's/^/    /'
        return
    fi
    got=$(sha256sum < "$out" | cut -d' ' -f1)
    if [ "$got" != "$SHA_small" ]; then
        fail "$CASE: echoed data differs: sent $(stat -c %s "$TMP/small") bytes, got back $(stat -c %s "$out")"
        return
    fi
    local ok=1
    if [ "$cs" = 1 ]; then check_stats "$name.client" client 0 || ok=0; fi
    if [ "$ss" = 1 ]; then check_stats "$name.server" "server+cat" 0 || ok=0; fi
    [ $ok = 1 ] && pass "$CASE ($(stat -c %s "$out") bytes echoed, ${ms} ms)$STATS_NOTE"
    rm -f "$out"
}

# ---- interactive line-by-line -------------------------------------------------------------

# lines_case FAMILY CLIENT_SHIM SERVER_SHIM
lines_case() {
    local fam=$1 cs=$2 ss=$3
    local name="lines-$fam-c$cs-s$ss"
    local log=$TMP/log.$name spid crc src i line reply wfd rfd cpid bad=""
    CASE="$name"; STATS_NOTE=""
    set_addrs "$fam" "$name" 1 || { fail "$CASE: set-up"; return; }
    local t0=$(date +%s%N)

    set_env "$ss" "$name.server"
    "${T[@]}" "${ENVCMD[@]}" socat -d -d -t 5 "$LISTEN" EXEC:cat 2>"$log.server" &
    spid=$!; BGPIDS+=("$spid")
    if ! wait_listen "$log.server" "$spid"; then
        fail "$CASE: server did not start listening"; sed 's/^/    /' "$log.server"; return
    fi
    set_env "$cs" "$name.client"
    coproc CLI { exec "${T[@]}" "${ENVCMD[@]}" socat -t 5 - "$CONNECT" 2>"$log.client"; }
    cpid=$CLI_PID; BGPIDS+=("$cpid")
    wfd=${CLI[1]}; rfd=${CLI[0]}
    for ((i = 1; i <= LINES; i++)); do
        line="line $i of $LINES: $RANDOM$RANDOM"
        if ! printf '%s\n' "$line" >&"$wfd"; then bad="write of line $i failed"; break; fi
        if ! IFS= read -r -t 5 reply <&"$rfd"; then
            bad="no echo of line $i within 5 s (queued data not flushed before a wait?)"; break
        fi
        if [ "$reply" != "$line" ]; then bad="line $i: sent '$line', got back '$reply'"; break; fi
    done
    exec {wfd}>&-
    wait_bg "$cpid"; crc=$?
    exec {rfd}<&- 2>/dev/null
    wait_bg "$spid"; src=$?
    local ms=$(( ($(date +%s%N) - t0) / 1000000 ))

    if [ -n "$bad" ]; then
        fail "$CASE: $bad"; tail -n 5 "$log.client" "$log.server" | sed 's/^/    /'; return
    fi
    if [ $crc != 0 ] || [ $src != 0 ]; then
        fail "$CASE: client exit $crc, server exit $src"
        tail -n 5 "$log.client" "$log.server" | sed 's/^/    /'
        return
    fi
    local ok=1
    if [ "$cs" = 1 ]; then check_stats "$name.client" client 1 || ok=0; fi
    if [ "$ss" = 1 ]; then check_stats "$name.server" "server+cat" 1 || ok=0; fi
    [ $ok = 1 ] && pass "$CASE ($LINES round trips, ${ms} ms)$STATS_NOTE"
}

# ---- perl bursts through socat --------------------------------------------------------------

# burst_case KIND FAMILY SERVER_SHIM CLIENT_SHIM: the server socat EXECs perl (which inherits
# the shim) running $TMP/KIND.pl (gen: bursts on fd 1; dup: bursts alternating on fd 1 and
# fd 0); the client receives everything into a file, compared with the program's output
# written to a file without the shim
burst_case() {
    local kind=$1 fam=$2 ss=$3 cs=$4
    local script=$TMP/$kind.pl expected=$TMP/burst.expected
    [ "$kind" = dup ] && expected=$TMP/dup.expected
    local name="$kind-$fam-s$ss-c$cs"
    [ "$kind" = gen ] && name="burst-$fam-s$ss-c$cs"
    [ "$kind" = dup ] && name="dupfd-$fam-s$ss-c$cs"
    local out=$TMP/out.$name log=$TMP/log.$name spid crc src got
    CASE="$name"; STATS_NOTE=""
    set_addrs "$fam" "$name" 1 || { fail "$CASE: set-up"; return; }
    local t0=$(date +%s%N)

    set_env "$ss" "$name.server"
    "${T[@]}" "${ENVCMD[@]}" socat -d -d -t 5 "$LISTEN" "EXEC:perl $script" 2>"$log.server" &
    spid=$!; BGPIDS+=("$spid")
    if ! wait_listen "$log.server" "$spid"; then
        fail "$CASE: server did not start listening"; sed 's/^/    /' "$log.server"; return
    fi
    set_env "$cs" "$name.client"
    "${T[@]}" "${ENVCMD[@]}" socat -u "$CONNECT" "OPEN:$out,creat,trunc" 2>"$log.client"
    crc=$?
    wait_bg "$spid"; src=$?
    local ms=$(( ($(date +%s%N) - t0) / 1000000 ))

    if [ $crc != 0 ] || [ $src != 0 ]; then
        fail "$CASE: client exit $crc, server exit $src"
        tail -n 5 "$log.client" "$log.server" | sed 's/^/    /'
        return
    fi
    if ! cmp -s "$expected" "$out"; then
        fail "$CASE: data differs: expected $(stat -c %s "$expected") bytes, got $(stat -c %s "$out");" \
             "$(cmp "$expected" "$out" 2>&1 | head -n1 | sed 's/^[^ ]* [^ ]* //');" \
             "records in arrival order: $(head -c 2048 "$out" | cut -c1-8 | head -n 12 | tr '\n' ' ')..."
        return
    fi
    local ok=1 q
    if [ "$ss" = 1 ]; then
        check_stats "$name.server" "server+perl" 1 || ok=0
        # perl's long bursts are what a coalescing shim is for: some writes must be queued
        q=$(stat_sum "$name.server" writes_queued)
        if [ "$kind" = gen ] && [ $ok = 1 ] && [ "$q" -le 0 ]; then
            fail "$CASE: the shim in perl queued none of its back-to-back writes (writes_queued=0)"
            ok=0
        fi
    fi
    if [ "$cs" = 1 ]; then check_stats "$name.client" client 0 || ok=0; fi
    [ $ok = 1 ] && pass "$CASE ($(stat -c %s "$out") bytes, ${ms} ms)$STATS_NOTE"
    rm -f "$out"
}

# ---- run ----------------------------------------------------------------------------------

echo "socat: $(socat -V 2>/dev/null | sed -n 's/^socat version \([^ ]*\).*/\1/p'), library: $LIB"
# give up after 3 time-outs: a shim that hangs would otherwise cost ~20 s per case
too_many() {
    if [ $TIMEOUTS -ge 3 ]; then
        echo "FAIL: 3 cases timed out; the remaining cases are skipped"
        FAILS=$((FAILS + 1))
        return 0
    fi
    return 1
}
run_all() {
    local fam v
    for fam in tcp unix; do
        for v in "0 0" "1 0" "0 1" "1 1"; do
            set -- $v
            too_many && return; uni "$fam" "$1" "$2" 8192 "$TMP/big"
            too_many && return; uni "$fam" "$1" "$2" 100 "$TMP/small"
        done
        for v in "1 0" "0 1" "1 1"; do
            set -- $v
            too_many && return; echo_case "$fam" "$1" "$2" 1000
        done
        for v in "0 0" "1 0" "0 1" "1 1"; do
            set -- $v
            too_many && return; lines_case "$fam" "$1" "$2"
        done
        if [ $HAVE_PERL = 1 ]; then
            for v in "0 0" "1 0" "1 1"; do
                set -- $v
                too_many && return; burst_case gen "$fam" "$1" "$2"
            done
            for v in "0 0" "1 0"; do
                set -- $v
                too_many && return; burst_case dup "$fam" "$1" "$2"
            done
        else
            echo "skip: burst-$fam (perl not installed)"
        fi
    done
}
run_all

if [ $FAILS != 0 ]; then
    echo "failures:"
    for m in "${FAIL_MSGS[@]}"; do echo "  - $m"; done
fi
echo "socat: $PASSES passed, $FAILS failed"
[ $FAILS = 0 ] || exit 1
exit 0
