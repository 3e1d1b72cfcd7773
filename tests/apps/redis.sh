#!/usr/bin/env bash
# Real-application regression test: Redis under the coalesce shim.
#
# The same scenario runs in four variants and every variant's transcript must equal the run
# without the shim:
#   plain    no shim anywhere (baseline; also checked against fixed expectations)
#   server   shim in redis-server only
#   client   shim in redis-cli and redis-benchmark only
#   both     shim in server and clients
# The scenario (all against a fresh redis-server on a free loopback port):
#   1. SET/GET of known values (short, quoted, 100 KiB and 1 MiB values via -x)
#   2. a pipeline of 10,000 commands through `redis-cli --pipe` (must report
#      "errors: 0, replies: 10000"), then the resulting data set is read back
#   3. 3,000 commands, one by one, through `redis-cli` reading stdin; all replies recorded
#   4. the same 10,000 commands as a raw pipeline over a bash /dev/tcp connection; the reply
#      byte stream must be identical in every variant
#   5. redis-benchmark -n 20000 with -P 1 and with -P 16 (set,get,incr,lpush,lpop,mset):
#      must exit 0, print no error, report every test; then the counters it left are checked
#   6. DEBUG DIGEST of the final data set
# When the shim is loaded, the shimmed processes must leave COALESCE_STATS files and must
# have queued writes (otherwise the shim did not intercept, and the test proves nothing).
#
# Env:  COALESCE_LIB  path of the library (default ./build/libcoalesce.so)
#       KEEP_TMP=1    keep the work directory (transcripts, logs, stats) for inspection
#       REDIS_TEST_BUDGET  seconds before the whole script gives up (default 200)
# Other COALESCE_* settings in the environment reach the shimmed processes unchanged.
# Exit: 0 pass, 1 fail, 77 skipped (redis-server / redis-cli / redis-benchmark missing).
# Takes about 10 s.
# Re-run under bash when started as `sh script` (the test runner does that).
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -u
. "$(dirname "${BASH_SOURCE[0]}")/lib.bash"

N_PIPE=10000
N_BENCH=20000

app_require redis-server redis-cli redis-benchmark timeout sha256sum base64 awk
app_find_lib

SPID=""
PORT=""
BUDGET=${REDIS_TEST_BUDGET:-200}   # seconds for the whole script; the runner allows 300
app_stop_children() {   # the server, if one is still running
    if [ -n "$SPID" ]; then
        kill "$SPID" 2>/dev/null
        wait "$SPID" 2>/dev/null
    fi
}
app_start redis

# ---- helpers ------------------------------------------------------------------------------

# Every client command is bounded. The first one that times out marks the variant as hung:
# the variant's remaining client commands are skipped (so a shim that never flushes costs one
# time-out per variant, not one per command).
HUNG=""
bounded() {   # bounded SECONDS CMD...
    local rc
    if [ -n "$HUNG" ]; then return 124; fi
    timeout -k 2 "$@"; rc=$?
    if [ $rc = 124 ] || [ $rc = 137 ]; then
        HUNG="timed out: ${*:2}"
        echo "    $VARIANT: $HUNG" >&2
    fi
    return $rc
}
cli() {   # cli ARGS...: redis-cli with the client-side shim setting of the variant
    set_env "$CSHIM" "$VARIANT.cli"
    bounded 10 "${ENVCMD[@]}" redis-cli -p "$PORT" "$@"
}
plain_cli() {   # redis-cli without the shim, for set-up and tear-down
    timeout -k 1 3 env -u LD_PRELOAD redis-cli -p "$PORT" "$@"
}

start_server() {   # start_server SHIM: up to 3 tries (another process may take the port)
    local try log deadline
    for try in 1 2 3; do
        PORT=$(free_port) || return 1
        log=$TMP/server.$VARIANT.log
        set_env "$1" "$VARIANT.server"
        timeout -k 5 "$BUDGET" "${ENVCMD[@]}" redis-server --port "$PORT" --bind 127.0.0.1 \
            --save '' --appendonly no --daemonize no --enable-debug-command yes \
            --loglevel warning >"$log" 2>&1 &
        SPID=$!
        deadline=$((SECONDS + 10))
        while [ $SECONDS -lt $deadline ]; do
            if [ "$(plain_cli ping 2>/dev/null)" = PONG ]; then return 0; fi
            kill -0 "$SPID" 2>/dev/null || break
            sleep 0.05
        done
        if kill -0 "$SPID" 2>/dev/null; then
            echo "    redis-server runs but does not answer PING within 10 s"
            kill "$SPID" 2>/dev/null; wait "$SPID" 2>/dev/null; SPID=""
            return 1
        fi
        wait "$SPID" 2>/dev/null; SPID=""
    done
    echo "    redis-server did not start; log:"; sed 's/^/    /' "$log"
    return 1
}

stop_server() {
    local deadline
    [ -n "$SPID" ] || return 0
    plain_cli shutdown nosave >/dev/null 2>&1
    deadline=$((SECONDS + 5))
    while [ $SECONDS -lt $deadline ] && kill -0 "$SPID" 2>/dev/null; do sleep 0.05; done
    if kill -0 "$SPID" 2>/dev/null; then
        echo "    redis-server did not stop on SHUTDOWN, sending SIGTERM"
        kill "$SPID" 2>/dev/null
        deadline=$((SECONDS + 5))
        while [ $SECONDS -lt $deadline ] && kill -0 "$SPID" 2>/dev/null; do sleep 0.05; done
        kill -KILL "$SPID" 2>/dev/null
    fi
    wait "$SPID" 2>/dev/null
    SPID=""
}

# ---- fixed inputs -------------------------------------------------------------------------

head -c 76800 /dev/urandom | base64 -w0 > "$TMP/val100k"          # 102,400 chars
head -c 786432 /dev/urandom | base64 -w0 > "$TMP/val1m"           # 1,048,576 chars
SHA_100k=$( (cat "$TMP/val100k"; echo) | sha256sum | cut -d' ' -f1)
SHA_1m=$( (cat "$TMP/val1m"; echo) | sha256sum | cut -d' ' -f1)

# 10,000 commands in RESP: 4000 SET, 3000 INCR, 2000 RPUSH, 1000 GET
awk -v n=$N_PIPE 'function cmd(a, b, c,   s) {
        if (c == "") { printf "*%d\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", 2, length(a), a, length(b), b }
        else { printf "*3\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(a), a, length(b), b, length(c), c }
    }
    BEGIN {
        for (i = 0; i < n; i++) {
            m = i % 10
            if (m < 4)      cmd("SET", "pk:" i, "value-" i "-" sprintf("%0" (i % 50) "d", 0))
            else if (m < 7) cmd("INCR", "pctr")
            else if (m < 9) cmd("RPUSH", "plist", "e" i)
            else            cmd("GET", "pk:" (i - 9))
        }
    }' > "$TMP/pipe.resp"
{ cat "$TMP/pipe.resp"; printf '*1\r\n$4\r\nQUIT\r\n'; } > "$TMP/pipe_quit.resp"

# 3,000 inline commands for redis-cli reading stdin (one round trip each)
awk 'BEGIN {
        for (i = 0; i < 3000; i++) {
            m = i % 6
            if (m == 0)      print "SET ik:" i " \"v " i "\""
            else if (m == 1) print "GET ik:" (i - 1)
            else if (m == 2) print "INCRBY ictr " i
            else if (m == 3) print "LPUSH ilist x" i
            else if (m == 4) print "EXISTS ik:" (i - 4) " nokey"
            else             print "HSET ih f" i " " i
        }
    }' > "$TMP/inline.txt"

# ---- one variant ----------------------------------------------------------------------------

check_bench_output() {   # check_bench_output CSV ERR RC PIPELINE -> appends to transcript
    local csv=$1 err=$2 rc=$3 p=$4 t
    if [ "$rc" != 0 ]; then fail "$VARIANT: redis-benchmark -P $p exited $rc"; sed 's/^/    /' "$err" | tail -n 5; return 1; fi
    if grep -qi "error" "$err" "$csv"; then fail "$VARIANT: redis-benchmark -P $p reported errors"; grep -i error "$err" "$csv" | head -n 5 | sed 's/^/    /'; return 1; fi
    for t in SET GET INCR LPUSH LPOP "MSET (10 keys)"; do
        if ! grep -q "^\"$t\",\"[0-9.]*\"" "$csv"; then
            fail "$VARIANT: redis-benchmark -P $p: no result for $t"; sed 's/^/    /' "$csv" "$err" | tail -n 10; return 1
        fi
    done
    echo "    redis-benchmark -P $p:" $(awk -F'"' 'NR > 1 { printf "%s=%.0f/s ", $2, $4 }' "$csv")
    return 0
}

run_variant() {   # run_variant NAME SERVER_SHIM CLIENT_SHIM
    VARIANT=$1; local sshim=$2; CSHIM=$3; HUNG=""
    local tr=$TMP/transcript.$VARIANT out rc bad=0 t0 p
    t0=$(date +%s%N)
    : > "$tr"
    if ! start_server "$sshim"; then fail "$VARIANT: redis-server did not start"; return; fi

    # 1. SET/GET of known values
    {
        echo "## set/get"
        cli SET k1 hello
        cli GET k1
        cli SET "k 2" 'with spaces and "quotes" and \backslash'
        cli GET "k 2"
        cli SET k3 "$(printf 'caf\xc3\xa9 \xe2\x82\xac')"
        cli GET k3
        cli -x SET big100k < "$TMP/val100k"
        echo "big100k $(cli --raw GET big100k | sha256sum | cut -d' ' -f1)"
        cli -x SET big1m < "$TMP/val1m"
        echo "big1m $(cli --raw GET big1m | sha256sum | cut -d' ' -f1)"
        cli STRLEN big1m
        cli GET nosuchkey
    } >> "$tr" 2>&1

    # 2. pipeline via redis-cli --pipe
    out=$(cli --pipe < "$TMP/pipe.resp" 2>&1); rc=$?
    if [ $rc != 0 ] || ! printf '%s\n' "$out" | grep -q "errors: 0, replies: $N_PIPE"; then
        fail "$VARIANT: redis-cli --pipe (exit $rc): $(printf '%s' "$out" | tr '\n' ' ')"; bad=1
    fi
    {
        echo "## pipe"
        printf '%s\n' "$out" | grep "errors:"
        cli GET pctr
        cli LLEN plist
        echo "plist $(cli LRANGE plist 0 -1 | sha256sum | cut -d' ' -f1)"
        cli GET pk:0
        cli GET pk:9990
        cli STRLEN pk:43
        cli DBSIZE
    } >> "$tr" 2>&1

    # 3. inline commands one by one
    {
        echo "## inline"
        cli < "$TMP/inline.txt" > "$TMP/inline.$VARIANT.out" 2>&1
        echo "exit $?"
        echo "lines $(wc -l < "$TMP/inline.$VARIANT.out")"
        echo "replies $(sha256sum < "$TMP/inline.$VARIANT.out" | cut -d' ' -f1)"
        cli GET ictr
    } >> "$tr" 2>&1

    # 4. raw pipeline: all commands (then QUIT) written at once by one process while another
    #    reads every reply until the server closes
    set_env "$CSHIM" "$VARIANT.rawpipe"
    bounded 20 "${ENVCMD[@]}" bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 2
        cat "$2" >&3 &
        cat <&3 > "$3"
        wait' _ "$PORT" "$TMP/pipe_quit.resp" "$TMP/raw.$VARIANT.out"
    rc=$?
    [ $rc = 0 ] || { fail "$VARIANT: raw pipeline exited $rc"; bad=1; }
    {
        echo "## raw pipeline"
        echo "reply lines $(tr -cd '\n' < "$TMP/raw.$VARIANT.out" | wc -c)"
        echo "replies $(sha256sum < "$TMP/raw.$VARIANT.out" | cut -d' ' -f1)"
        cli GET pctr
    } >> "$tr" 2>&1

    # 5. redis-benchmark, -P 1 and -P 16
    echo "## benchmark" >> "$tr"
    for p in 1 16; do
        set_env "$CSHIM" "$VARIANT.bench"
        bounded 60 "${ENVCMD[@]}" redis-benchmark -p "$PORT" -n $N_BENCH -P $p --csv \
            -t set,get,incr,lpush,lpop,mset > "$TMP/bench.$VARIANT.$p.csv" 2> "$TMP/bench.$VARIANT.$p.err"
        rc=$?
        check_bench_output "$TMP/bench.$VARIANT.$p.csv" "$TMP/bench.$VARIANT.$p.err" $rc $p || bad=1
        {
            echo "-P $p exit $rc"
            cli GET counter:__rand_int__
            cli LLEN mylist
            cli GET key:__rand_int__
        } >> "$tr" 2>&1
    done

    # 6. digest of everything
    { echo "## digest"; cli DEBUG DIGEST; cli DBSIZE; } >> "$tr" 2>&1

    stop_server
    if [ -n "$HUNG" ]; then fail "$VARIANT: a client command hung ($HUNG); later steps skipped"; bad=1; fi
    local ms=$(( ($(date +%s%N) - t0) / 1000000 ))

    # the shim must have been active where it was loaded: a stats file, and socket writes
    # handled (any "writes_*" counter: queued, or sent directly by the shim's own policy)
    local p pname
    CASE=$VARIANT; STATS_NOTE=""
    for p in server cli bench; do
        case $p in
            server) [ "$sshim" = 1 ] || continue; pname=redis-server ;;
            cli)    [ "$CSHIM" = 1 ] || continue; pname=redis-cli ;;
            bench)  [ "$CSHIM" = 1 ] || continue; pname=redis-benchmark ;;
        esac
        check_stats "$VARIANT.$p" "$pname" 1 || bad=1
    done

    if [ "$VARIANT" = plain ]; then
        # the baseline itself is checked against what Redis must answer
        local e
        for e in "^hello$" "^52$" "^3000$" "^2000$" "^1048576$" \
                 "^big100k $SHA_100k$" "^big1m $SHA_1m$" "^lines 3000$" "^exit 0$" \
                 "^reply lines $((N_PIPE + N_PIPE / 10 + 1))$" "^$((N_BENCH * 2))$"; do
            if ! grep -q -- "$e" "$tr"; then fail "plain: baseline transcript lacks /$e/"; bad=1; fi
        done
    else
        if ! diff -u "$TMP/transcript.plain" "$tr" > "$TMP/diff.$VARIANT"; then
            fail "$VARIANT: results differ from the run without the shim:"
            sed 's/^/    /' "$TMP/diff.$VARIANT" | head -n 40
            bad=1
        fi
    fi
    [ $bad = 0 ] && pass "$VARIANT: transcript equal to baseline ($(wc -l < "$tr") lines, ${ms} ms)$STATS_NOTE"
}

echo "redis: $(redis-server --version | awk '{print $3}'), library: $LIB"
run_variant plain 0 0
run_variant server 1 0
run_variant client 0 1
run_variant both 1 1
app_finish
