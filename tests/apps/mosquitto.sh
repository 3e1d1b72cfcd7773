#!/usr/bin/env bash
# Real-application regression test: the mosquitto MQTT broker and its clients under the
# coalesce shim.
#
# The same scenario runs in four variants and every variant's transcript must equal the run
# without the shim:
#   plain    no shim anywhere (baseline; also checked against the expected messages)
#   broker   shim in mosquitto only
#   clients  shim in mosquitto_pub and mosquitto_sub only
#   both     shim in the broker and the clients
# Each variant starts a fresh broker on a free loopback port (a minimal config: one listener
# on 127.0.0.1, anonymous clients allowed, no persistence, no limit on queued messages) and:
#   fanout    for QoS 0, 1 and 2: three subscribers on one topic; one publisher sends 980
#             messages of 1 B .. 64 KiB (log-uniform sizes, random bytes except NUL and
#             newline) through `mosquitto_pub -l`, then 20 binary payloads (NUL and newline
#             included) one by one alternately with `-f FILE` and `-s` (stdin), then "END":
#             every subscriber must print (as "%l %x": length and hex) exactly the 1,001
#             messages in order, byte-identical (compared with the expected file). Each
#             publisher must have disconnected cleanly (the broker's log) before the next
#             starts: MQTT keeps order within a connection only
#   retained  a retained message overwritten by another (binary, 64 KiB) must be what a new
#             subscriber gets, with the retain flag; once cleared (`-r -n`), a subscriber to
#             the cleared topic and another retained topic must get only the other
#   will      a client killed with SIGKILL must have its will published; one that received a
#             message and disconnected cleanly must not
# Where the shim is loaded, each shimmed program must leave a COALESCE_STATS file and must
# have handled socket writes (the client killed with SIGKILL leaves none and is not checked).
#
# Env:  COALESCE_LIB  path of the library (default ./build/libcoalesce.so)
#       KEEP_TMP=1    keep the work directory (outputs, logs, stats) for inspection
#       MOSQUITTO_TEST_BUDGET  seconds before the whole script gives up (default 200)
# Other COALESCE_* settings in the environment reach the shimmed processes unchanged.
# Exit: 0 pass, 1 fail, 77 skipped (mosquitto, mosquitto_pub/_sub or python3 missing).
# Takes about 20 s.
# Re-run under bash when started as `sh script` (the test runner does that).
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -u
. "$(dirname "${BASH_SOURCE[0]}")/lib.bash"

# the broker is in /usr/sbin, which is not on every user's PATH
PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
app_require mosquitto mosquitto_pub mosquitto_sub python3 timeout sha256sum cmp
app_find_lib

N_LINES=980            # messages through mosquitto_pub -l
N_BIN=20               # binary-safe messages, one mosquitto_pub each
N_MSG=$((N_LINES + N_BIN + 1))   # and "END"

SPID=""
PORT=""
BGPIDS=()
BUDGET=${MOSQUITTO_TEST_BUDGET:-200}   # seconds for the whole script; the runner allows 300
app_stop_children() {   # the broker and any client still running
    local p
    for p in ${BGPIDS[@]+"${BGPIDS[@]}"} $SPID; do kill "$p" 2>/dev/null; done
    for p in ${BGPIDS[@]+"${BGPIDS[@]}"} $SPID; do wait "$p" 2>/dev/null; done
}
app_start mosquitto

# ---- payloads and the expected output -----------------------------------------------------

mkdir -p "$TMP/pl"
python3 - "$TMP/pl" "$N_LINES" "$N_BIN" <<'PY' || { echo "FAIL: payload generator failed"; exit 1; }
# lines: N_LINES payloads, one per line (no NUL, no newline); binNN: binary payloads (NUL and
# newline inside); expected: "LENGTH HEX" per message, as mosquitto_sub -F '%l %x' prints
# them, in publishing order; ret*: retained payloads and what the subscribers must print
import math, os, random, sys
d, n_lines, n_bin = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(7)
no_nul_nl = bytes([1] + list(range(1, 10)) + [11] + list(range(11, 256)))   # 0->1, 10->11


def size(i, n):   # log-uniform in 1..65536, the first 1 and the last 65536
    if i == 0:
        return 1
    if i == n - 1:
        return 65536
    return max(1, int(math.exp(rnd.uniform(0, math.log(65536)))))


def binary(n):
    p = bytearray(rnd.randbytes(n))
    p[0] = 0
    if n > 1:
        p[-1] = 10
    if n > 2:
        p[n // 2] = 0
        p[n // 3] = 10
    return bytes(p)


with open(os.path.join(d, "expected"), "w") as exp, open(os.path.join(d, "lines"), "wb") as f:
    for i in range(n_lines):
        p = rnd.randbytes(size(i, n_lines)).translate(no_nul_nl)
        f.write(p + b"\n")
        exp.write("%d %s\n" % (len(p), p.hex()))
    for i in range(n_bin):
        p = binary(size(i, n_bin))
        with open(os.path.join(d, "bin%02d" % i), "wb") as b:
            b.write(p)
        exp.write("%d %s\n" % (len(p), p.hex()))
    exp.write("3 %s\n" % b"END".hex())
ret = {"retA": binary(1000), "retB": binary(65536), "retC": binary(777)}
for k, p in ret.items():
    with open(os.path.join(d, k), "wb") as b:
        b.write(p)
# topic, retain flag, QoS (min of publish and subscription), length, hex
with open(os.path.join(d, "ret1.expected"), "w") as e:
    e.write("r/a 1 1 %d %s\n" % (len(ret["retB"]), ret["retB"].hex()))
with open(os.path.join(d, "ret2.expected"), "w") as e:
    e.write("r/b 1 0 %d %s\n" % (len(ret["retC"]), ret["retC"].hex()))
PY
SHA_EXPECTED=$(sha256sum < "$TMP/pl/expected" | cut -d' ' -f1)

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
pub() {   # pub ARGS...: mosquitto_pub with the client-side shim setting of the variant; its
          # stderr is collected in $TMP/pub.VARIANT.err (shown, not judged, after the variant)
    set_env "$CSHIM" "$VARIANT.pub"
    bounded 20 "${ENVCMD[@]}" mosquitto_pub -h 127.0.0.1 -p "$PORT" "$@" 2>> "$TMP/pub.$VARIANT.err"
}
# sub_bg TAG OUT ARGS...: mosquitto_sub in the background (SUBPID), at most 30 s (-W), its
# stdout in OUT, stderr in OUT.err
sub_bg() {
    local tag=$1 out=$2
    shift 2
    set_env "$CSHIM" "$VARIANT.$tag"
    timeout -k 2 40 "${ENVCMD[@]}" mosquitto_sub -h 127.0.0.1 -p "$PORT" -W 30 "$@" \
        > "$out" 2> "$out.err" &
    SUBPID=$!; BGPIDS+=("$SUBPID")
}
forget() {   # forget PID: no longer in BGPIDS
    local p keep=()
    for p in "${BGPIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    BGPIDS=(${keep[@]+"${keep[@]}"})
}
wait_bg() {   # wait_bg PID: its exit code; a time-out marks the variant as hung
    local pid=$1 rc
    wait "$pid"; rc=$?
    forget "$pid"
    if [ $rc = 124 ] || [ $rc = 137 ] || [ $rc = 27 ]; then   # 27: mosquitto_sub -W ran out
        [ -n "$HUNG" ] || HUNG="a subscriber timed out (exit $rc)"
    fi
    return $rc
}
# wait_log REGEX: the broker's log (log_type notice and subscribe) has a matching line
wait_log() {
    local i
    for i in $(seq 1 1000); do
        grep -Eq "^[0-9]+: $1\$" "$BLOG" 2>/dev/null && return 0
        kill -0 "$SPID" 2>/dev/null || return 1
        sleep 0.01
    done
    return 1
}

disconnected() {   # disconnected CLIENT_ID: the broker logged its clean disconnection
    [ -n "$HUNG" ] && return 1
    wait_log "Client $1 disconnected\\." && return 0
    fail "$VARIANT: the broker did not log the DISCONNECT of $1 within 10 s"
    return 1
}

start_broker() {   # start_broker SHIM: up to 3 tries (another process may take the port)
    local try deadline
    for try in 1 2 3; do
        PORT=$(free_port) || return 1
        BLOG=$TMP/broker.$VARIANT.log
        {
            echo "listener $PORT 127.0.0.1"
            echo "allow_anonymous true"
            echo "persistence false"
            echo "max_queued_messages 0"          # no limit: nothing may be dropped
            echo "user $(id -un)"                 # as root, do not switch to user mosquitto
            echo "log_dest stderr"
            for t in error warning notice subscribe; do echo "log_type $t"; done
        } > "$TMP/broker.conf"
        set_env "$1" "$VARIANT.broker"
        timeout -k 5 "$BUDGET" "${ENVCMD[@]}" mosquitto -c "$TMP/broker.conf" > "$BLOG" 2>&1 &
        SPID=$!
        deadline=$((SECONDS + 10))
        while [ $SECONDS -lt $deadline ]; do
            kill -0 "$SPID" 2>/dev/null || break
            if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return 0; fi
            sleep 0.05
        done
        if kill -0 "$SPID" 2>/dev/null; then
            echo "    mosquitto runs but does not listen within 10 s"
            kill "$SPID" 2>/dev/null; wait "$SPID" 2>/dev/null; SPID=""
            return 1
        fi
        wait "$SPID" 2>/dev/null; SPID=""
    done
    echo "    mosquitto did not start; log:"; sed 's/^/    /' "$BLOG"
    return 1
}

stop_broker() {   # SIGTERM: mosquitto leaves its loop and exits (the shim writes its stats)
    local deadline rc
    [ -n "$SPID" ] || return 0
    kill -TERM "$SPID" 2>/dev/null
    deadline=$((SECONDS + 5))
    while [ $SECONDS -lt $deadline ] && kill -0 "$SPID" 2>/dev/null; do sleep 0.05; done
    if kill -0 "$SPID" 2>/dev/null; then
        fail "$VARIANT: mosquitto did not exit within 5 s of SIGTERM"
        kill -KILL "$SPID" 2>/dev/null
    fi
    wait "$SPID" 2>/dev/null; rc=$?
    SPID=""
    return $rc
}

# compare_out WHAT OUT EXPECTED: OUT must equal EXPECTED (one line per message); appends
# a line to the transcript; returns 1 (after failing the variant) if not
compare_out() {
    local what=$1 out=$2 want=$3 got n m
    n=$(wc -l < "$out")
    got=$(sha256sum < "$out" | cut -d' ' -f1)
    echo "$what: $n messages, sha256 $got" >> "$TR"
    if ! cmp -s "$want" "$out"; then
        m=$(cmp "$want" "$out" 2>&1 | sed -n 's/.* line \([0-9]*\).*/\1/p')
        fail "$VARIANT: $what: received $n messages ($(wc -c < "$out") bytes), expected $(wc -l < "$want")" \
             "($(wc -c < "$want") bytes); first difference at message ${m:-?}" \
             "(got: $(sed -n "${m:-1}p" "$out" | cut -c1-40)...)"
        return 1
    fi
    return 0
}

# ---- the cases ------------------------------------------------------------------------------

fanout() {   # fanout QOS
    local q=$1 k i rc bad=0 pids=() t0
    [ -n "$HUNG" ] && return 1
    t0=$(date +%s%N)
    for k in 1 2 3; do
        sub_bg sub "$TMP/out.$VARIANT.q$q.$k" -t "t/$q" -q "$q" -C "$N_MSG" -F '%l %x' -i "sub$k-q$q"
        pids+=("$SUBPID")
    done
    for k in 1 2 3; do
        wait_log "sub$k-q$q $q t/$q" || { fail "$VARIANT: qos $q: subscriber $k did not subscribe"; bad=1; }
    done
    # MQTT orders the messages of one connection only, and at QoS 0 mosquitto_pub may exit
    # while the broker has yet to read its last messages: before the next publisher starts,
    # the broker must have logged the DISCONNECT of the last one (so it has routed everything
    # that came before it). That also checks that each publisher's DISCONNECT arrived.
    if [ $bad = 0 ]; then
        pub -t "t/$q" -q "$q" -i "pubL-q$q" -l < "$TMP/pl/lines"; rc=$?
        [ $rc = 0 ] || { fail "$VARIANT: qos $q: mosquitto_pub -l exited $rc"; bad=1; }
        disconnected "pubL-q$q" || bad=1
        for ((i = 0; i < N_BIN && bad == 0; i++)); do
            if [ $((i % 2)) = 0 ]; then
                pub -t "t/$q" -q "$q" -i "pub$i-q$q" -f "$(printf '%s/pl/bin%02d' "$TMP" $i)"
            else
                pub -t "t/$q" -q "$q" -i "pub$i-q$q" -s < "$(printf '%s/pl/bin%02d' "$TMP" $i)"
            fi
            rc=$?; [ $rc = 0 ] || { fail "$VARIANT: qos $q: mosquitto_pub of binary message $i exited $rc"; bad=1; }
            disconnected "pub$i-q$q" || bad=1
        done
        [ $bad = 0 ] && { pub -t "t/$q" -q "$q" -m END || { fail "$VARIANT: qos $q: mosquitto_pub -m END exited $?"; bad=1; }; }
    fi
    for k in 1 2 3; do
        wait_bg "${pids[$((k - 1))]}"; rc=$?
        echo "qos $q subscriber $k: exit $rc" >> "$TR"
        if [ $rc != 0 ]; then
            fail "$VARIANT: qos $q: subscriber $k exited $rc: $(head -c 300 "$TMP/out.$VARIANT.q$q.$k.err")"; bad=1
        fi
        compare_out "qos $q subscriber $k" "$TMP/out.$VARIANT.q$q.$k" "$TMP/pl/expected" || bad=1
        [ -n "${KEEP_TMP:-}" ] || rm -f "$TMP/out.$VARIANT.q$q.$k"
    done
    echo "    $VARIANT: qos $q fan-out: $(( ($(date +%s%N) - t0) / 1000000 )) ms"
    return $bad
}

retained() {
    local rc bad=0 out=$TMP/out.$VARIANT.ret
    [ -n "$HUNG" ] && return 1
    pub -t r/a -q 1 -r -f "$TMP/pl/retA" || { fail "$VARIANT: retained: publish A exited $?"; bad=1; }
    pub -t r/a -q 1 -r -s < "$TMP/pl/retB" || { fail "$VARIANT: retained: publish B exited $?"; bad=1; }
    sub_bg sub "$out.1" -t r/a -q 1 -C 1 -F '%t %r %q %l %x' -i ret1
    wait_bg "$SUBPID"; rc=$?
    echo "retained 1: exit $rc" >> "$TR"
    [ $rc = 0 ] || { fail "$VARIANT: retained: subscriber 1 exited $rc"; bad=1; }
    compare_out "retained 1 (last of two)" "$out.1" "$TMP/pl/ret1.expected" || bad=1
    pub -t r/a -q 1 -r -n || { fail "$VARIANT: retained: clearing exited $?"; bad=1; }
    pub -t r/b -q 0 -r -f "$TMP/pl/retC" || { fail "$VARIANT: retained: publish C exited $?"; bad=1; }
    sub_bg sub "$out.2" -t r/a -t r/b -q 1 -C 1 -F '%t %r %q %l %x' -i ret2
    wait_bg "$SUBPID"; rc=$?
    echo "retained 2: exit $rc" >> "$TR"
    [ $rc = 0 ] || { fail "$VARIANT: retained: subscriber 2 exited $rc"; bad=1; }
    compare_out "retained 2 (after clearing)" "$out.2" "$TMP/pl/ret2.expected" || bad=1
    return $bad
}

will() {
    local rc bad=0 out=$TMP/out.$VARIANT.will wpid w1 w2
    [ -n "$HUNG" ] && return 1
    printf 'w/1 0 1 16 will of client 1\nw/end 0 1 3 end\n' > "$TMP/will.expected"
    sub_bg sub "$out" -t 'w/#' -q 1 -C 2 -F '%t %r %q %l %p' -i watcher
    wpid=$SUBPID
    # will1 is killed with SIGKILL: started without `timeout` so that $! is mosquitto_sub
    # itself (env execs it); -W bounds it
    set_env "$CSHIM" "$VARIANT.will1"
    "${ENVCMD[@]}" mosquitto_sub -h 127.0.0.1 -p "$PORT" -W 30 -t ping/1 -q 1 -i will1 \
        --will-topic w/1 --will-payload "will of client 1" --will-qos 1 > /dev/null 2>&1 &
    w1=$!; BGPIDS+=("$w1")
    sub_bg sub "$out.w2" -t ping/2 -q 1 -C 1 -i will2 \
        --will-topic w/2 --will-payload "will of client 2" --will-qos 1
    w2=$SUBPID
    for c in "watcher 1 w/#" "will1 1 ping/1" "will2 1 ping/2"; do
        wait_log "$c" || { fail "$VARIANT: will: no subscription '$c' in the broker's log"; bad=1; }
    done
    pub -t ping/2 -q 1 -m hello || { fail "$VARIANT: will: publish to ping/2 exited $?"; bad=1; }
    wait_bg "$w2"; rc=$?
    echo "will: client 2 exit $rc, got '$(cat "$out.w2")'" >> "$TR"
    [ $rc = 0 ] || { fail "$VARIANT: will: client 2 exited $rc"; bad=1; }
    wait_log "Client will2 disconnected\." || { fail "$VARIANT: will: client 2 did not disconnect cleanly"; bad=1; }
    kill -KILL "$w1" 2>/dev/null
    wait "$w1" 2>/dev/null; forget "$w1"
    wait_log "Client will1 closed its connection\." || { fail "$VARIANT: will: the broker did not see client 1 go"; bad=1; }
    pub -t w/end -q 1 -m end || { fail "$VARIANT: will: publish to w/end exited $?"; bad=1; }
    wait_bg "$wpid"; rc=$?
    echo "will: watcher exit $rc" >> "$TR"
    [ $rc = 0 ] || { fail "$VARIANT: will: the watcher exited $rc"; bad=1; }
    compare_out "will (killed client: published; clean one: not)" "$out" "$TMP/will.expected" || bad=1
    return $bad
}

# ---- one variant ----------------------------------------------------------------------------

run_variant() {   # run_variant NAME BROKER_SHIM CLIENT_SHIM
    VARIANT=$1; local bshim=$2; CSHIM=$3; HUNG=""
    TR=$TMP/transcript.$VARIANT
    local bad=0 t0 q rc
    t0=$(date +%s%N)
    : > "$TR"
    if ! start_broker "$bshim"; then fail "$VARIANT: mosquitto did not start"; return; fi
    for q in 0 1 2; do fanout "$q" || bad=1; done
    retained || bad=1
    will || bad=1
    stop_broker; rc=$?
    [ $rc = 0 ] || { fail "$VARIANT: mosquitto exited $rc; log: $(tail -n 3 "$BLOG" | tr '\n' ' ')"; bad=1; }
    # With COALESCE_DIRECT=0 the shim logs "1 queued bytes could not be sent" in many a
    # mosquitto_pub: libmosquitto closes the reading end of its internal wake-up socketpair
    # before the writing end, whose queued wake-up byte then gets EPIPE. Shown, not judged.
    if [ -s "$TMP/pub.$VARIANT.err" ]; then
        echo "    $VARIANT: mosquitto_pub stderr ($(wc -l < "$TMP/pub.$VARIANT.err") lines): $(sort "$TMP/pub.$VARIANT.err" | uniq -c | head -n 3 | tr -s ' \n' ' ')"
    fi
    if [ -n "$HUNG" ]; then fail "$VARIANT: a client command hung ($HUNG); later steps skipped"; bad=1; fi
    local ms=$(( ($(date +%s%N) - t0) / 1000000 ))

    # the shim must have been active where it was loaded (will1 died of SIGKILL: no stats)
    CASE=$VARIANT; STATS_NOTE=""
    [ "$bshim" = 1 ] && { check_stats "$VARIANT.broker" mosquitto 1 || bad=1; }
    if [ "$CSHIM" = 1 ]; then
        check_stats "$VARIANT.pub" mosquitto_pub 1 || bad=1
        check_stats "$VARIANT.sub" mosquitto_sub 1 || bad=1
    fi

    if [ "$VARIANT" = plain ]; then
        if [ "$(grep -c "messages, sha256 $SHA_EXPECTED$" "$TR")" != 9 ]; then
            fail "plain: not every subscriber got the expected messages"; bad=1
        fi
    elif ! diff -u "$TMP/transcript.plain" "$TR" > "$TMP/diff.$VARIANT"; then
        fail "$VARIANT: results differ from the run without the shim:"
        sed 's/^/    /' "$TMP/diff.$VARIANT" | head -n 40
        bad=1
    fi
    [ $bad = 0 ] && pass "$VARIANT: transcript equal to baseline ($(wc -l < "$TR") lines, ${ms} ms)$STATS_NOTE"
}

echo "mosquitto: $(mosquitto -h 2>/dev/null | sed -n 's/^mosquitto version \([^ ]*\).*/\1/p'), library: $LIB"
echo "    $N_MSG messages per subscriber, $(wc -c < "$TMP/pl/expected") bytes as hex"
run_variant plain 0 0
run_variant broker 1 0
run_variant clients 0 1
run_variant both 1 1
app_finish
