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
. "$(dirname "${BASH_SOURCE[0]}")/lib.bash"

MIB=${SOCAT_MIB:-4}
LINES=${SOCAT_LINES:-1000}
T=(timeout -k 2 20)          # every socat run is bounded (a normal case takes < 1 s)
BUDGET=${SOCAT_TEST_BUDGET:-200}   # seconds for the whole script; the runner allows 300

app_require socat timeout sha256sum
app_find_lib

BGPIDS=()
app_stop_children() {   # every socat still in the background
    local p
    for p in "${BGPIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${BGPIDS[@]}"; do wait "$p" 2>/dev/null; done
}
app_start socat

# A failed case that timed out counts towards too_many (below).
TIMEOUTS=0
app_on_fail() {
    case "$1" in *"exit 124"*|*"exit 137"*|*"within 5 s"*) TIMEOUTS=$((TIMEOUTS + 1)) ;; esac
}

# ---- helpers ------------------------------------------------------------------------------

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

# start_listener SHIM TAG LOG WHAT SOCAT_ARGS...: starts the listening socat of the case (WHAT
# in messages) in the background, bounded by T, with the shim on or off (stats tagged TAG) and
# its stderr in LOG; sets LPID, and waits until it listens. If it does not, fails the case
# (showing LOG) and returns 1.
start_listener() {
    local shim=$1 tag=$2 log=$3 what=$4
    shift 4
    set_env "$shim" "$tag"
    "${T[@]}" "${ENVCMD[@]}" socat "$@" 2>"$log" &
    LPID=$!; BGPIDS+=("$LPID")
    if ! wait_listen "$log" "$LPID"; then
        fail "$CASE: $what did not start listening"; sed 's/^/    /' "$log"; return 1
    fi
    return 0
}

# wait for a background pid; returns its exit code
wait_bg() {
    local pid=$1 rc
    wait "$pid"; rc=$?
    BGPIDS=("${BGPIDS[@]/$pid}")
    return $rc
}

# exits_ok WHAT1 RC1 LOG1 WHAT2 RC2 LOG2: both processes of the case must have exited 0; if
# not, fails the case (showing the end of both logs) and returns 1
exits_ok() {
    if [ "$2" != 0 ] || [ "$5" != 0 ]; then
        fail "$CASE: $1 exit $2, $4 exit $5"
        tail -n 5 "$3" "$6" | sed 's/^/    /'
        return 1
    fi
    return 0
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

    start_listener "$rs" "$name.recv" "$log.recv" receiver \
        -d -d -u "$LISTEN" "OPEN:$out,creat,trunc" || return
    rpid=$LPID
    set_env "$ss" "$name.send"
    "${T[@]}" "${ENVCMD[@]}" socat -b "$bs" -u "OPEN:$data" "$CONNECT" 2>"$log.send"
    src=$?
    wait_bg "$rpid"; rrc=$?
    local ms=$(( ($(date +%s%N) - t0) / 1000000 ))

    exits_ok sender $src "$log.send" receiver $rrc "$log.recv" || return
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

    start_listener "$ss" "$name.server" "$log.server" server \
        -d -d -t 10 -b "$bs" "$LISTEN" EXEC:cat || return
    spid=$LPID
    set_env "$cs" "$name.client"
    "${T[@]}" "${ENVCMD[@]}" socat -t 10 -b "$bs" - "$CONNECT" < "$TMP/small" > "$out" 2>"$log.client"
    crc=$?
    wait_bg "$spid"; src=$?
    local ms=$(( ($(date +%s%N) - t0) / 1000000 ))

    exits_ok client $crc "$log.client" server $src "$log.server" || return
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

    start_listener "$ss" "$name.server" "$log.server" server \
        -d -d -t 5 "$LISTEN" EXEC:cat || return
    spid=$LPID
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
    exits_ok client $crc "$log.client" server $src "$log.server" || return
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

    start_listener "$ss" "$name.server" "$log.server" server \
        -d -d -t 5 "$LISTEN" "EXEC:perl $script" || return
    spid=$LPID
    set_env "$cs" "$name.client"
    "${T[@]}" "${ENVCMD[@]}" socat -u "$CONNECT" "OPEN:$out,creat,trunc" 2>"$log.client"
    crc=$?
    wait_bg "$spid"; src=$?
    local ms=$(( ($(date +%s%N) - t0) / 1000000 ))

    exits_ok client $crc "$log.client" server $src "$log.server" || return
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
app_finish
