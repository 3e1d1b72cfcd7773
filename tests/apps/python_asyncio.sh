#!/usr/bin/env bash
# Real-application regression test: Python asyncio servers and clients under the coalesce
# shim (the programs are in asyncio_peer.py, beside this script).
#
# Two servers, each answering every request line with several small writes:
#   streams   asyncio.start_server: writer.write of each piece, then await writer.drain()
#   protocol  asyncio.Protocol: transport.write of each piece from data_received
# each run in four variants whose transcripts must equal the run without the shim:
#   plain    no shim anywhere (baseline; the client also checks every reply)
#   server   shim in the server only
#   client   shim in the clients only
#   both     shim in server and clients
# Against each server (a fresh one per variant, on a port the kernel picks), four clients:
#   pipeline  a streams client pipelines 5,000 requests (one write each) and checks every reply
#   protocol  the same from an asyncio.Protocol client (transport.write / data_received)
#   close     the server writes 0 B .. 3 MiB in small pieces and closes at once (streams:
#             writer.close(); protocol: transport.close()); 40 sizes, then 20 with 50
#             pipelined requests before the close: the client must get every byte, then EOF
#   many      200 concurrent connections, each pipelining 50 requests
# Where the shim is loaded, each shimmed process must leave a COALESCE_STATS file and must
# have handled socket writes.
#
# Env:  COALESCE_LIB  path of the library (default ./build/libcoalesce.so)
#       KEEP_TMP=1    keep the work directory (transcripts, logs, stats) for inspection
#       ASYNCIO_TEST_BUDGET  seconds before the whole script gives up (default 200)
# Other COALESCE_* settings in the environment reach the shimmed processes unchanged.
# Exit: 0 pass, 1 fail, 77 skipped (python3 missing). Takes about 25 s.
# Re-run under bash when started as `sh script` (the test runner does that).
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -u
. "$(dirname "${BASH_SOURCE[0]}")/lib.bash"

PEER=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/asyncio_peer.py
app_require python3 timeout
app_find_lib
# the interpreter itself, not a wrapper script (pyenv's shims run several processes)
PY=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null)
[ -x "$PY" ] || { echo "skipped: python3 not installed (no usable interpreter)"; exit 77; }
"$PY" -c 'import asyncio, random; random.Random(1).randbytes(1)' 2>/dev/null \
    || { echo "skipped: python3 too old (needs asyncio and random.randbytes, 3.9+)"; exit 77; }
[ -f "$PEER" ] || { echo "FAIL: $PEER missing"; exit 1; }

SPID=""
BUDGET=${ASYNCIO_TEST_BUDGET:-200}   # seconds for the whole script; the runner allows 300
app_stop_children() {   # the server, if one is still running
    if [ -n "$SPID" ]; then
        kill "$SPID" 2>/dev/null
        wait "$SPID" 2>/dev/null
    fi
}
app_start python_asyncio

# ---- helpers ------------------------------------------------------------------------------

# Every client command is bounded. The first one that times out marks the variant as hung:
# the variant's remaining client commands are skipped.
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

start_server() {   # start_server KIND SHIM: sets SPID and PORT
    local kind=$1 pf=$TMP/port.$VARIANT deadline
    rm -f "$pf"
    set_env "$2" "$VARIANT.server"
    timeout -k 5 "$BUDGET" "${ENVCMD[@]}" "$PY" "$PEER" server "$kind" "$pf" \
        > "$TMP/server.$VARIANT.log" 2>&1 &
    SPID=$!
    deadline=$((SECONDS + 10))
    while [ $SECONDS -lt $deadline ]; do
        if [ -s "$pf" ]; then PORT=$(cat "$pf"); return 0; fi
        kill -0 "$SPID" 2>/dev/null || break
        sleep 0.05
    done
    echo "    the $kind server did not start; log:"; sed 's/^/    /' "$TMP/server.$VARIANT.log"
    kill "$SPID" 2>/dev/null; wait "$SPID" 2>/dev/null; SPID=""
    return 1
}

stop_server() {   # SIGTERM: the server's handler stops the loop; it exits 0
    local deadline rc
    [ -n "$SPID" ] || return 0
    kill -TERM "$SPID" 2>/dev/null
    deadline=$((SECONDS + 5))
    while [ $SECONDS -lt $deadline ] && kill -0 "$SPID" 2>/dev/null; do sleep 0.05; done
    if kill -0 "$SPID" 2>/dev/null; then
        fail "$VARIANT: the server did not exit within 5 s of SIGTERM"
        kill -KILL "$SPID" 2>/dev/null
    fi
    wait "$SPID" 2>/dev/null; rc=$?
    SPID=""
    return $rc
}

# ---- one variant ----------------------------------------------------------------------------

run_variant() {   # run_variant KIND NAME SERVER_SHIM CLIENT_SHIM
    local kind=$1 name=$2 sshim=$3 cshim=$4
    VARIANT=$kind-$name; HUNG=""
    local tr=$TMP/transcript.$VARIANT rc bad=0 t0 mode
    t0=$(date +%s%N)
    : > "$tr"
    if ! start_server "$kind" "$sshim"; then fail "$VARIANT: the server did not start"; return; fi

    for mode in pipeline protocol close many; do
        set_env "$cshim" "$VARIANT.client"
        echo "## $mode" >> "$tr"
        bounded 60 "${ENVCMD[@]}" "$PY" "$PEER" client "$mode" "$PORT" \
            >> "$tr" 2> "$TMP/client.$VARIANT.$mode.err"
        rc=$?
        if [ $rc != 0 ]; then
            fail "$VARIANT: client $mode exited $rc: $(head -c 600 "$TMP/client.$VARIANT.$mode.err" | tr '\n' ' ')"
            bad=1
        fi
        echo "exit $rc" >> "$tr"
    done

    stop_server; rc=$?
    [ $rc = 0 ] || { fail "$VARIANT: the server exited $rc: $(tail -n 3 "$TMP/server.$VARIANT.log" | tr '\n' ' ')"; bad=1; }
    if [ -s "$TMP/server.$VARIANT.log" ]; then
        echo "    $VARIANT: server stderr: $(head -n 3 "$TMP/server.$VARIANT.log" | tr '\n' ' ')"
    fi
    if [ -n "$HUNG" ]; then fail "$VARIANT: a client hung ($HUNG); later steps skipped"; bad=1; fi
    local ms=$(( ($(date +%s%N) - t0) / 1000000 ))

    CASE=$VARIANT; STATS_NOTE=""
    [ "$sshim" = 1 ] && { check_stats "$VARIANT.server" "$kind server" 1 || bad=1; }
    [ "$cshim" = 1 ] && { check_stats "$VARIANT.client" clients 1 || bad=1; }

    if [ "$name" = plain ]; then
        local e
        for e in "^pipeline: 5000 replies" "^protocol client: 5000 replies" \
                 "^close 39: 0 replies" "^close 119: 50 replies" "^many: 200 connections"; do
            if ! grep -q -- "$e" "$tr"; then fail "$VARIANT: baseline transcript lacks /$e/"; bad=1; fi
        done
        if [ "$(grep -c '^exit 0$' "$tr")" != 4 ]; then fail "$VARIANT: a baseline client failed"; bad=1; fi
    elif ! diff -u "$TMP/transcript.$kind-plain" "$tr" > "$TMP/diff.$VARIANT"; then
        fail "$VARIANT: results differ from the run without the shim:"
        sed 's/^/    /' "$TMP/diff.$VARIANT" | head -n 40
        bad=1
    fi
    [ $bad = 0 ] && pass "$VARIANT: transcript equal to baseline ($(wc -l < "$tr") lines, ${ms} ms)$STATS_NOTE"
}

echo "python: $("$PY" -V 2>&1 | awk '{print $2}') ($PY), library: $LIB"
for kind in streams protocol; do
    run_variant "$kind" plain 0 0
    run_variant "$kind" server 1 0
    run_variant "$kind" client 0 1
    run_variant "$kind" both 1 1
done
app_finish
