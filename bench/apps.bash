# The "apps" scenario of bench/run.sh: real programs, unmodified, with their own load
# generators, plain and under the shim, alternating; and the "uring_apps" scenario (at the
# end of this file): redis and memcached with 1000 clients under the shim's flush backends.
# Sourced by bench/run.sh, never run; it uses run.sh's helpers (shim_env, record, runfail,
# med, vals, div, counter, stats_line, BGPIDS).
#
#   sockperf   `sockperf tp` (throughput, 64-byte messages, Nagle as sockperf sets it, and
#              again with TCP_NODELAY) and `sockperf pp` (ping-pong latency); shim in the client;
#              BENCH_QUICK=1 leaves out the Nagle variant (a sockperf run takes 3 s more than
#              asked: it waits 2 s before it starts, and its server 1 s to exit)
#   redis      redis-benchmark SET and GET, 50 and 1000 clients, without and with -P 16 (quick:
#              50 clients only); shim in redis-server
#   memcached  memcaslap (Debian's name for memaslap, libmemcached-tools), 50 connections,
#              64-byte values, 10% of gets verified; shim in memcached
#   mosquitto  one mosquitto_pub -l publishing many 31-byte messages, 4 mosquitto_sub
#              subscribers, QoS 0; shim in the broker; every subscriber must print every message
#   socat      bench_matrix's sender writes 64-byte records (TCP_NODELAY) to socat, which relays
#              them to bench_matrix's receiver; shim in socat
# Every server is started by this file on a loopback port found free, once per run, and is
# stopped after the run; what is still running when the script ends is stopped by run.sh's
# EXIT trap. A program that is not installed makes its part print "skipped: <reason>".

# the brokers and daemons are in /usr/sbin, which is not on every user's PATH
PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
APP_SECONDS=$(q 2 1)                      # seconds per sockperf and memcaslap run
MOSQ_MSGS=$(q 50000 20000)                # messages published per mosquitto run
MOSQ_SUBS=4
SOCAT_MSGS=$(q 300000 100000)             # 64-byte records per socat run

have() {   # have PART TOOL...: every TOOL is installed, or PART prints why it is skipped
    local part=$1 t
    shift
    for t in "$@"; do
        if ! command -v "$t" >/dev/null 2>&1; then
            echo "$part: skipped: $t is not installed (scripts/setup-deps.sh --bench installs it)"
            return 1
        fi
    done
}

raise_nofile() {   # 1000 clients need more descriptors than a default soft limit of 1024
    [ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge 8192 ] || ulimit -n 8192 2>/dev/null ||
        ulimit -n "$(ulimit -Hn)"
}

# ---- ports and background processes ---------------------------------------------------------

port_state() {   # port_state PORT STATES: a local TCP socket on PORT is in one of STATES (hex)
    local hex
    hex=$(printf '%04X' "$1")
    awk -v p=":$hex" -v s=" $2 " '$2 ~ p "$" && index(s, " " $4 " ") { f = 1 } END { exit !f }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

USED_PORTS=" "
free_port() {   # prints a port below the ephemeral range that no socket uses, or returns 1
    local p _
    for _ in $(seq 1 200); do
        p=$(( 10000 + (RANDOM * 32768 + RANDOM) % 22000 ))
        case "$USED_PORTS" in *" $p "*) continue ;; esac
        if ! port_state "$p" "01 02 03 04 05 06 07 08 09 0A 0B"; then
            USED_PORTS="$USED_PORTS$p "
            echo "$p"
            return 0
        fi
    done
    return 1
}

# wait_listen PORT PID: PORT is listening within 10 s while PID lives (checked in /proc, not
# by connecting: a probe connection would be a client to socat or sockperf)
wait_listen() {
    local _
    for _ in $(seq 1 200); do
        port_state "$1" 0A && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# start_bg SHIM ARM LOG CMD...: CMD in the background, at most 600 s, shim as shim_env says;
# sets BGPID
start_bg() {
    local shim=$1 arm=$2 log=$3
    shift 3
    shim_env "$shim" "$arm"
    timeout -k 5 600 "${ENVC[@]}" "$@" > "$log" 2>&1 &
    BGPID=$!
    BGPIDS+=("$BGPID")
}

wait_bg() {   # wait_bg PID: waits for a background process (bounded by its `timeout`)
    local pid=$1 rc keep=() p
    wait "$pid" 2>/dev/null; rc=$?
    for p in "${BGPIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
    BGPIDS=(${keep[@]+"${keep[@]}"})
    return $rc
}

# stop_bg PID SIGNAL: sends SIGNAL (through `timeout`, which passes it on; 0 sends nothing),
# kills the process if it still runs 10 s later; returns its exit status
stop_bg() {
    local pid=$1 _
    kill -"$2" "$pid" 2>/dev/null
    for _ in $(seq 1 200); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null
    wait_bg "$pid"
}

wait_closed() {   # wait_closed PORT: no connection on local PORT is open (at most 10 s)
    local _
    for _ in $(seq 1 200); do
        port_state "$1" "01 08" || return 0
        sleep 0.05
    done
    return 1
}

nocolor() { sed 's/\x1b\[[0-9;]*m//g'; }

# app_table UNIT HIGHER ROW...: one row per "label:plain_arm:shim_arm:KEY"; HIGHER=1 when a
# higher value is better. ratio: above 1, the shim is better (throughput shim/plain, time
# plain/shim).
app_table() {
    local unit=$1 higher=$2 row label pa sa key pv sv ratio
    shift 2
    printf '  %-34s %12s %12s %7s   %s\n' "" "plain $unit" "shim $unit" ratio "runs: plain | shim"
    for row in "$@"; do
        IFS=: read -r label pa sa key <<< "$row"
        pv=$(med "$pa" "$key"); sv=$(med "$sa" "$key")
        if [ "$higher" = 1 ]; then ratio=$(div "$sv" "$pv"); else ratio=$(div "$pv" "$sv"); fi
        printf '  %-34s %12s %12s %6sx   %s | %s\n' "$label" "$(fmt "$pv")" "$(fmt "$sv")" "$ratio" \
            "$(vals "$pa" "$key")" "$(vals "$sa" "$key")"
    done
}

# ---- sockperf ---------------------------------------------------------------------------------

# sockperf_run ARM SHIM MODE [ARGS...]: a plain `sockperf sr` server, the client (tp or pp)
# with or without the shim; tp must have every message sent counted by the server, pp must
# report no dropped, duplicated or reordered message. pp's client and server are pinned as
# rr's are (BENCH_RR_PIN), for the same reason: cross-CPU wake-ups make round trips bimodal.
sockperf_run() {
    local arm=$1 shim=$2 mode=$3 port srv out rc sent got avg p50 p99 pin=()
    shift 3
    [ "$mode" = pp ] && pin=(${PIN[@]+"${PIN[@]}"})
    port=$(free_port) || { runfail "$arm" "no free port"; return; }
    start_bg 0 "$arm.srv" "$TMP/sockperf.srv" ${pin[@]+"${pin[@]}"} sockperf sr --tcp -i 127.0.0.1 -p "$port"
    srv=$BGPID
    if ! wait_listen "$port" "$srv"; then
        runfail "$arm" "sockperf sr did not listen: $(head -c 300 "$TMP/sockperf.srv")"
        stop_bg "$srv" KILL
        return
    fi
    shim_env "$shim" "$arm"
    out=$(timeout -k 5 60 ${pin[@]+"${pin[@]}"} "${ENVC[@]}" sockperf "$mode" --tcp -i 127.0.0.1 -p "$port" -m 64 \
          -t "$APP_SECONDS" "$@" 2>&1 | nocolor); rc=${PIPESTATUS[0]}
    wait_closed "$port"
    stop_bg "$srv" INT
    if [ "$rc" != 0 ]; then runfail "$arm" "sockperf $mode exited $rc: $(tail -n 5 <<< "$out")"; return; fi
    if [ "$mode" = tp ]; then
        sent=$(sed -n 's/.*Total of \([0-9]*\) messages sent.*/\1/p' <<< "$out")
        got=$(nocolor < "$TMP/sockperf.srv" | sed -n 's/.*Total \([0-9]*\) messages received.*/\1/p')
        if [ -z "$sent" ] || [ "$sent" != "$got" ]; then
            runfail "$arm" "client sent ${sent:-?} messages, server received ${got:-?}"
            return
        fi
        record "$arm" "RESULT msgs_per_s=$(sed -n 's/.*Message Rate is \([0-9]*\).*/\1/p' <<< "$out") sent=$sent"
    else
        if ! grep -q 'dropped messages = 0; # duplicated messages = 0; # out-of-order messages = 0' <<< "$out"; then
            runfail "$arm" "sockperf pp: $(grep 'dropped messages' <<< "$out")"
            return
        fi
        avg=$(sed -n 's/.*Summary: Latency is \([0-9.]*\).*/\1/p' <<< "$out")
        p50=$(sed -n 's/.*percentile 50.000 = *\([0-9.]*\).*/\1/p' <<< "$out")
        p99=$(sed -n 's/.*percentile 99.000 = *\([0-9.]*\).*/\1/p' <<< "$out")
        record "$arm" "RESULT avg_us=$avg p50_us=$p50 p99_us=$p99"
    fi
}

app_sockperf() {
    have sockperf sockperf || return
    local _
    printf 'sockperf %s: tp and pp over TCP, 64-byte messages, %s s per run, shim in the client, pp pinned to CPU %s ' \
        "$(sockperf --version 2>&1 | sed -n 's/.*version \([^ ,]*\).*/\1/p' | head -n1)" "$APP_SECONDS" "$RR_PIN"
    for _ in $(seq 1 "$REPS"); do
        if [ "$QUICK" = 0 ]; then
            sockperf_run a_sp_tp_plain 0 tp
            sockperf_run a_sp_tp_shim  1 tp
        fi
        sockperf_run a_sp_tpn_plain 0 tp --tcp-avoid-nodelay
        sockperf_run a_sp_tpn_shim  1 tp --tcp-avoid-nodelay
        sockperf_run a_sp_pp_plain  0 pp
        sockperf_run a_sp_pp_shim   1 pp
    done
    echo
    local tp=("tp, TCP_NODELAY:a_sp_tpn_plain:a_sp_tpn_shim:msgs_per_s")
    [ "$QUICK" = 1 ] || tp=("tp, Nagle (sockperf's default):a_sp_tp_plain:a_sp_tp_shim:msgs_per_s" "${tp[@]}")
    app_table msg/s 1 "${tp[@]}"
    app_table us 0 "pp, average latency:a_sp_pp_plain:a_sp_pp_shim:avg_us" \
                   "pp, p50:a_sp_pp_plain:a_sp_pp_shim:p50_us" \
                   "pp, p99:a_sp_pp_plain:a_sp_pp_shim:p99_us"
    echo "  shim stats (tp, TCP_NODELAY, last run): $(stats_line a_sp_tpn_shim)"
    echo "    -> $(why a_sp_tpn_shim)"
    echo "  shim stats (pp, last run): $(stats_line a_sp_pp_shim)"
    echo "    -> $(why a_sp_pp_shim)"
}

# ---- redis ------------------------------------------------------------------------------------

# redis_run ARM SHIM PIPELINE CLIENTS REQUESTS: a fresh redis-server (shim or not),
# redis-benchmark -t set,get; the server must have run exactly REQUESTS of each
redis_run() {
    local arm=$1 shim=$2 pipe=$3 clients=$4 n=$5 port srv out rc calls set get
    port=$(free_port) || { runfail "$arm" "no free port"; return; }
    start_bg "$shim" "$arm" "$TMP/redis.log" redis-server --port "$port" --bind 127.0.0.1 \
        --save "" --appendonly no --protected-mode no --maxclients 4096
    srv=$BGPID
    if ! wait_listen "$port" "$srv"; then
        runfail "$arm" "redis-server did not listen: $(tail -n 3 "$TMP/redis.log")"
        stop_bg "$srv" KILL
        return
    fi
    out=$(timeout -k 5 120 env -u LD_PRELOAD redis-benchmark -h 127.0.0.1 -p "$port" -c "$clients" \
          -n "$n" -P "$pipe" -t set,get --csv 2>&1); rc=$?
    calls=$(timeout 10 env -u LD_PRELOAD redis-cli -h 127.0.0.1 -p "$port" info commandstats 2>&1)
    stop_bg "$srv" TERM
    set=$(sed -n 's/^"SET","\([0-9.]*\)".*/\1/p' <<< "$out")
    get=$(sed -n 's/^"GET","\([0-9.]*\)".*/\1/p' <<< "$out")
    if [ $rc != 0 ] || [ -z "$set" ] || [ -z "$get" ]; then
        runfail "$arm" "redis-benchmark exited $rc: $(tail -n 3 <<< "$out")"
        return
    fi
    if ! grep -q "^cmdstat_set:calls=$n," <<< "$calls" || ! grep -q "^cmdstat_get:calls=$n," <<< "$calls"; then
        runfail "$arm" "the server did not run $n SET and $n GET: $(grep -E 'cmdstat_(set|get):' <<< "$calls" | tr '\n' ' ')"
        return
    fi
    record "${arm}_set" "RESULT rps=$set"
    record "${arm}_get" "RESULT rps=$get"
}

app_redis() {
    have redis redis-server redis-benchmark redis-cli || return
    local cfg pipe clients n rows=()
    # requests per test, so that a plain run takes about a second
    local cfgs
    cfgs=$(q "1:50:50000 1:1000:30000 16:50:500000 16:1000:500000" "1:50:20000 16:50:200000")
    printf 'redis %s: redis-benchmark -t set,get, shim in redis-server ' \
        "$(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')"
    for _ in $(seq 1 "$REPS"); do
        for cfg in $cfgs; do
            IFS=: read -r pipe clients n <<< "$cfg"
            redis_run "a_redis_P${pipe}_c${clients}_plain" 0 "$pipe" "$clients" "$n"
            redis_run "a_redis_P${pipe}_c${clients}_shim"  1 "$pipe" "$clients" "$n"
        done
    done
    echo
    for cfg in $cfgs; do
        IFS=: read -r pipe clients n <<< "$cfg"
        for t in set get; do
            rows+=("$(echo $t | tr a-z A-Z), -P $pipe, $clients clients, n=$n:a_redis_P${pipe}_c${clients}_plain_$t:a_redis_P${pipe}_c${clients}_shim_$t:rps")
        done
    done
    app_table req/s 1 "${rows[@]}"
    for cfg in $cfgs; do
        IFS=: read -r pipe clients n <<< "$cfg"
        echo "  shim stats (-P $pipe, $clients clients, last run): $(stats_line "a_redis_P${pipe}_c${clients}_shim")"
        echo "    -> $(why "a_redis_P${pipe}_c${clients}_shim")"
    done
}

# ---- memcached --------------------------------------------------------------------------------

memcached_run() {   # memcached_run ARM SHIM: a fresh memcached, memcaslap for APP_SECONDS
    local arm=$1 shim=$2 port srv out rc tps user=()
    port=$(free_port) || { runfail "$arm" "no free port"; return; }
    [ "$(id -u)" = 0 ] && user=(-u root)
    start_bg "$shim" "$arm" "$TMP/memcached.log" memcached -l 127.0.0.1 -p "$port" -U 0 -t 2 -c 4096 "${user[@]}"
    srv=$BGPID
    if ! wait_listen "$port" "$srv"; then
        runfail "$arm" "memcached did not listen: $(tail -n 3 "$TMP/memcached.log")"
        stop_bg "$srv" KILL
        return
    fi
    out=$(timeout -k 5 60 env -u LD_PRELOAD memcaslap -s "127.0.0.1:$port" -T 2 -c 50 -X 64 -v 0.1 \
          -t "${APP_SECONDS}s" 2>&1); rc=$?
    stop_bg "$srv" TERM
    tps=$(sed -n 's/.*TPS: \([0-9]*\).*/\1/p' <<< "$out" | tail -n1)
    if [ $rc != 0 ] || [ -z "$tps" ]; then
        runfail "$arm" "memcaslap exited $rc: $(tail -n 3 <<< "$out")"
        return
    fi
    if ! grep -q '^verify_failed: 0$' <<< "$out"; then
        runfail "$arm" "memcaslap found wrong values: $(grep -E '^verify_' <<< "$out" | tr '\n' ' ')"
        return
    fi
    record "$arm" "RESULT tps=$tps"
}

app_memcached() {
    have memcached memcached memcaslap || return
    local _
    printf 'memcached %s: memcaslap, 2 threads, 50 connections, 64-byte values, 90%% get / 10%% set, %s s per run, shim in memcached ' \
        "$(memcached -V 2>&1 | awk '{print $2}')" "$APP_SECONDS"
    for _ in $(seq 1 "$REPS"); do
        memcached_run a_mc_plain 0
        memcached_run a_mc_shim  1
    done
    echo
    app_table ops/s 1 "get+set, 50 connections:a_mc_plain:a_mc_shim:tps"
    echo "  shim stats (last run): $(stats_line a_mc_shim)"
    echo "    -> $(why a_mc_shim)"
}

# ---- mosquitto --------------------------------------------------------------------------------

# mosquitto_run ARM SHIM: a fresh broker; MOSQ_SUBS subscribers; one publisher sends the
# MOSQ_MSGS lines of $TMP/mosq.msgs; timed from the publisher's start until every subscriber
# has printed every message; each subscriber's output must equal the published lines
mosquitto_run() {
    local arm=$1 shim=$2 port srv k pids=() rc t0 t1 bad=""
    port=$(free_port) || { runfail "$arm" "no free port"; return; }
    {
        echo "listener $port 127.0.0.1"
        echo "allow_anonymous true"
        echo "persistence false"
        echo "max_queued_messages 0"
        echo "user $(id -un)"
        echo "log_dest stderr"
        echo "log_type error"
        echo "log_type subscribe"
    } > "$TMP/mosq.conf"
    start_bg "$shim" "$arm" "$TMP/mosq.log" mosquitto -c "$TMP/mosq.conf"
    srv=$BGPID
    if ! wait_listen "$port" "$srv"; then
        runfail "$arm" "mosquitto did not listen: $(tail -n 3 "$TMP/mosq.log")"
        stop_bg "$srv" KILL
        return
    fi
    for k in $(seq 1 $MOSQ_SUBS); do
        timeout -k 5 120 env -u LD_PRELOAD mosquitto_sub -h 127.0.0.1 -p "$port" -t bench -q 0 \
            -C "$MOSQ_MSGS" -W 100 -i "sub$k" > "$TMP/mosq.out.$k" 2>&1 &
        pids+=($!); BGPIDS+=($!)
    done
    for _ in $(seq 1 200); do
        [ "$(grep -c ' sub[0-9]* 0 bench$' "$TMP/mosq.log")" -ge $MOSQ_SUBS ] && break
        sleep 0.05
    done
    t0=$(date +%s%N)
    timeout -k 5 120 env -u LD_PRELOAD mosquitto_pub -h 127.0.0.1 -p "$port" -t bench -q 0 -i pub -l \
        < "$TMP/mosq.msgs" || bad="mosquitto_pub exited $?"
    for k in $(seq 1 $MOSQ_SUBS); do
        wait_bg "${pids[$((k - 1))]}"; rc=$?
        [ $rc = 0 ] || bad="$bad subscriber $k exited $rc"
    done
    t1=$(date +%s%N)
    stop_bg "$srv" TERM
    for k in $(seq 1 $MOSQ_SUBS); do
        cmp -s "$TMP/mosq.msgs" "$TMP/mosq.out.$k" ||
            bad="$bad subscriber $k printed $(wc -l < "$TMP/mosq.out.$k") lines, not the $MOSQ_MSGS published"
    done
    if [ -n "$bad" ]; then runfail "$arm" "$bad"; return; fi
    record "$arm" "RESULT msgs_per_s=$(( MOSQ_MSGS * MOSQ_SUBS * 1000000000 / (t1 - t0) )) elapsed_ms=$(( (t1 - t0) / 1000000 ))"
}

app_mosquitto() {
    have mosquitto mosquitto mosquitto_pub mosquitto_sub || return
    local _
    awk -v n="$MOSQ_MSGS" 'BEGIN { for (i = 0; i < n; i++) printf "%031d\n", i }' > "$TMP/mosq.msgs"
    printf 'mosquitto %s: 1 publisher, %s x 31-byte messages, QoS 0, %s subscribers, shim in the broker ' \
        "$(mosquitto -h 2>/dev/null | sed -n 's/^mosquitto version \([^ ]*\).*/\1/p')" "$MOSQ_MSGS" "$MOSQ_SUBS"
    for _ in $(seq 1 "$REPS"); do
        mosquitto_run a_mosq_plain 0
        mosquitto_run a_mosq_shim  1
    done
    echo
    app_table msg/s 1 "messages delivered per second:a_mosq_plain:a_mosq_shim:msgs_per_s"
    echo "  every subscriber printed all $MOSQ_MSGS messages, in order, in every run that is shown"
    echo "  shim stats (last run): $(stats_line a_mosq_shim)"
    echo "    -> $(why a_mosq_shim)"
}

# ---- socat ------------------------------------------------------------------------------------

# socat_run ARM SHIM: socat (shim or not) relays one connection from bench_matrix's sender to
# its receiver, which checks every byte
socat_run() {
    local arm=$1 shim=$2 p1 p2 srv out rc line
    p1=$(free_port) && p2=$(free_port) || { runfail "$arm" "no free port"; return; }
    start_bg "$shim" "$arm" "$TMP/socat.log" socat "TCP-LISTEN:$p1,bind=127.0.0.1,reuseaddr" "TCP:127.0.0.1:$p2"
    srv=$BGPID
    if ! wait_listen "$p1" "$srv"; then
        runfail "$arm" "socat did not listen: $(tail -n 3 "$TMP/socat.log")"
        stop_bg "$srv" KILL
        return
    fi
    out=$(timeout -k 5 120 env -u LD_PRELOAD "$OUT/bench_matrix" 64 1 "$SOCAT_MSGS" --listen "$p2" \
          --connect "$p1" 2>&1); rc=$?
    stop_bg "$srv" 0
    line=$(grep '^RESULT ' <<< "$out")
    if [ $rc != 0 ] || [ -z "$line" ]; then
        runfail "$arm" "exit $rc: $out $(tail -n 2 "$TMP/socat.log")"
        return
    fi
    record "$arm" "$line"
}

app_socat() {
    have socat socat || return
    local _
    printf 'socat %s: relays %s x 64-byte records (one write() each, TCP_NODELAY) between two TCP connections, shim in socat ' \
        "$(socat -V 2>/dev/null | sed -n 's/^socat version \([^ ]*\).*/\1/p')" "$SOCAT_MSGS"
    for _ in $(seq 1 "$REPS"); do
        socat_run a_socat_plain 0
        socat_run a_socat_shim  1
    done
    echo
    app_table ns/rec 0 "records relayed, sender to receiver:a_socat_plain:a_socat_shim:ns_per_msg"
    echo "  shim stats (last run): $(stats_line a_socat_shim)"
    echo "    -> $(why a_socat_shim)"
}

# ---- the scenario -----------------------------------------------------------------------------

scenario_apps() {
    local a t0
    raise_nofile
    echo "apps: real programs, unmodified, plain and under the shim, alternating; ratio > 1: the shim is better"
    echo
    for a in $APPS; do
        case $a in
            sockperf|redis|memcached|mosquitto|socat)
                t0=$SECONDS
                "app_$a"
                echo "  ($a took $((SECONDS - t0)) s)"
                echo
                ;;
            *) echo "apps: unknown program '$a' in BENCH_APPS"; echo ;;
        esac
    done
}

# ---- uring_apps: the io_uring flush backend under redis and memcached, 1000 clients ----------
#
# Five arms, alternated run by run (A B C D E A B C D E ...), one fresh server per run:
#   plain   no shim
#   shim    the shim with its defaults (COALESCE_BACKEND=auto, COALESCE_DIRECT=1)
#   writev  COALESCE_BACKEND=writev COALESCE_DIRECT=0
#   uring   COALESCE_BACKEND=uring  COALESCE_DIRECT=0
#   auto    COALESCE_BACKEND=auto   COALESCE_DIRECT=0
# With COALESCE_DIRECT=1 an event-loop server's lone reply is sent at once, no batch of many
# queues forms and the backend is never used; DIRECT=0 queues every reply, so that the flush
# before epoll_wait (or a read) finds the replies of the whole loop turn. Per arm: requests
# per second, p50 and p99 latency (the load generator's), and the server's CPU time (utime +
# stime of all its threads, /proc/PID/stat, sampled before and after the load; clock ticks of
# 1/CLK_TCK s) per request served. The shim's counters of every run are kept; a uring arm
# whose server made no io_uring submission (or lost its ring) is flagged: its figures are
# writev's, not io_uring's.
#   redis      redis-benchmark -c 1000 -t set, then -t get, without and with -P 16 (one server
#              for SET and GET of each -P; BENCH_QUICK=1: without only); its --csv gives rps
#              and latency percentiles
#   memcached  bench_mcload (bench/bench_mcload.c): 1000 connections, closed loop, 90% get /
#              10% set of 64-byte values, every reply checked; memcached -t 2
UA_ARMS="plain shim writev uring auto"
UA_APPS=${BENCH_URING_APPS:-redis memcached}
UA_CLIENTS=${BENCH_URING_APPS_CLIENTS:-1000}
UA_REDIS_N1=$(q 60000 30000)              # requests per redis-benchmark test, -P 1
UA_REDIS_N16=1000000                      # the same, -P 16 (not run with BENCH_QUICK=1)
UA_PIPES=$(q "1 16" "1")
UA_MC_SECONDS=$(q 2 1)                    # seconds per bench_mcload run
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)

ua_label() {
    case $1 in
        plain)  echo "plain (no shim)" ;;
        shim)   echo "shim, defaults (auto, DIRECT=1)" ;;
        writev) echo "shim, writev, DIRECT=0" ;;
        uring)  echo "shim, uring, DIRECT=0" ;;
        auto)   echo "shim, auto, DIRECT=0" ;;
    esac
}

# ua_start ARM ARMDIR LOG CMD...: starts a server in the background as start_bg does, with the
# settings of ARM; sets BGPID (the `timeout` wrapping it)
ua_start() {
    local arm=$1 dir=$2 log=$3 shim=1
    shift 3
    case $arm in
        plain)  shim=0; SHIM_EXTRA=() ;;
        shim)   SHIM_EXTRA=(COALESCE_BACKEND=auto COALESCE_DIRECT=1) ;;
        *)      SHIM_EXTRA=(COALESCE_BACKEND="$arm" COALESCE_DIRECT=0) ;;
    esac
    start_bg "$shim" "$dir" "$log" "$@"
    # shellcheck disable=SC2034   # read by run.sh's shim_env
    SHIM_EXTRA=()
}

# child_pid PID: the process `timeout` PID runs (the server itself: env execs it)
child_pid() { awk '{ print $1; exit }' "/proc/$1/task/$1/children" 2>/dev/null; }

cpu_ticks() {   # cpu_ticks PID: utime + stime of every thread of PID, living or ended
    sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{ print $12 + $13 }'
}

us_per_req() {   # us_per_req TICKS REQUESTS
    awk -v t="$1" -v n="$2" -v hz="$CLK_TCK" 'BEGIN { if (n + 0 == 0 || t == "") print "-"; else printf "%.2f", t * 1e6 / hz / n }'
}

# ua_keep_stats ARM DIR: records the counters of the run just done (stats files in $TMP/st/DIR)
# as one "RESULT" line of "DIR_st"
ua_keep_stats() {
    local dir=$2 k line="RESULT"
    [ "$1" = plain ] && return
    for k in writes_queued writes_direct flush_syscalls flush_wait flush_read flush_deadline \
             uring_submits uring_sends uring_unavailable flush_eagain flush_nobufs deferred_errors \
             bytes_dropped closes_handed_over passthrough_reentrant; do
        line="$line $k=$(counter "$dir" "$k" | sed 's/^-$/0/')"
    done
    line="$line files=$(ls "$TMP/st/$dir"/*.json 2>/dev/null | wc -l)"
    echo "$line" >> "$TMP/res.${dir}_st"
}

ua_sum() {   # ua_sum NAME KEY: KEY summed over the recorded runs of NAME
    [ -s "$TMP/res.$1" ] || { echo 0; return; }
    sed -n "s/.* $2=\([0-9.]*\).*/\1/p" "$TMP/res.$1" | awk '{ s += $1 } END { print s + 0 }'
}

# ua_redis_run ARM PIPE N: a fresh redis-server with ARM's settings; redis-benchmark -t set,
# then -t get, each N requests from UA_CLIENTS clients, the server's CPU sampled around each;
# the server must have run exactly N SET and N GET
ua_redis_run() {
    local arm=$1 pipe=$2 n=$3 dir="ua_r_P$2_$1" port srv pid t c0 c1 out rc calls rps p50 p99
    cut -d' ' -f1 /proc/loadavg >> "$TMP/ua.load"
    port=$(free_port) || { runfail "$dir" "no free port"; return; }
    ua_start "$arm" "$dir" "$TMP/redis.log" redis-server --port "$port" --bind 127.0.0.1 \
        --save "" --appendonly no --protected-mode no --maxclients 4096
    srv=$BGPID
    if ! wait_listen "$port" "$srv" || ! pid=$(child_pid "$srv") || [ -z "$pid" ]; then
        runfail "$dir" "redis-server did not listen: $(tail -n 3 "$TMP/redis.log")"
        stop_bg "$srv" KILL
        return
    fi
    for t in set get; do
        c0=$(cpu_ticks "$pid")
        out=$(timeout -k 5 120 env -u LD_PRELOAD redis-benchmark -h 127.0.0.1 -p "$port" \
              -c "$UA_CLIENTS" -n "$n" -P "$pipe" -t "$t" --csv 2>&1); rc=$?
        c1=$(cpu_ticks "$pid")
        # "SET","rps","avg","min","p50","p95","p99","max" (milliseconds)
        IFS=, read -r rps p50 p99 <<< "$(sed -n 's/^"[A-Z]*","\([0-9.]*\)","[0-9.]*","[0-9.]*","\([0-9.]*\)","[0-9.]*","\([0-9.]*\)".*/\1,\2,\3/p' <<< "$out")"
        if [ $rc != 0 ] || [ -z "$rps" ] || [ -z "$p99" ]; then
            runfail "$dir" "redis-benchmark -t $t exited $rc: $(tail -n 3 <<< "$out")"
            stop_bg "$srv" KILL
            return
        fi
        record "${dir}_$t" "RESULT rps=$rps p50_ms=$p50 p99_ms=$p99 cpu_us=$(us_per_req $((c1 - c0)) "$n") ticks=$((c1 - c0))"
    done
    calls=$(timeout 10 env -u LD_PRELOAD redis-cli -h 127.0.0.1 -p "$port" info commandstats 2>&1)
    stop_bg "$srv" TERM
    ua_keep_stats "$arm" "$dir"
    if ! grep -q "^cmdstat_set:calls=$n," <<< "$calls" || ! grep -q "^cmdstat_get:calls=$n," <<< "$calls"; then
        runfail "$dir" "the server did not run $n SET and $n GET: $(grep -E 'cmdstat_(set|get):' <<< "$calls" | tr '\n' ' ')"
    fi
}

# ua_mc_run ARM: a fresh memcached with ARM's settings, bench_mcload for UA_MC_SECONDS
ua_mc_run() {
    local arm=$1 dir="ua_mc_$1" port srv pid c0 c1 out rc line ops user=()
    port=$(free_port) || { runfail "$dir" "no free port"; return; }
    [ "$(id -u)" = 0 ] && user=(-u root)
    cut -d' ' -f1 /proc/loadavg >> "$TMP/ua.load"
    ua_start "$arm" "$dir" "$TMP/memcached.log" memcached -l 127.0.0.1 -p "$port" -U 0 -t 2 \
        -c 4096 -b 2048 "${user[@]}"
    srv=$BGPID
    if ! wait_listen "$port" "$srv" || ! pid=$(child_pid "$srv") || [ -z "$pid" ]; then
        runfail "$dir" "memcached did not listen: $(tail -n 3 "$TMP/memcached.log")"
        stop_bg "$srv" KILL
        return
    fi
    c0=$(cpu_ticks "$pid")
    out=$(timeout -k 5 60 env -u LD_PRELOAD "$OUT/bench_mcload" 127.0.0.1 "$port" "$UA_CLIENTS" \
          "$UA_MC_SECONDS" 64 10 2>&1); rc=$?
    c1=$(cpu_ticks "$pid")
    stop_bg "$srv" TERM
    ua_keep_stats "$arm" "$dir"
    line=$(grep '^RESULT ' <<< "$out")
    ops=$(sed -n 's/.* ops=\([0-9]*\).*/\1/p' <<< "$line")
    if [ $rc != 0 ] || [ -z "$ops" ]; then
        runfail "$dir" "bench_mcload exited $rc: $(tail -n 3 <<< "$out")"
        return
    fi
    record "$dir" "$line cpu_us=$(us_per_req $((c1 - c0)) "$ops") ticks=$((c1 - c0))"
}

# pratio ARM_A ARM_B KEY: median over i of (run i of B / run i of A) (run.sh's pairwise)
pratio() { pairwise "$1" "$2" "$3" 'if (a + 0 > 0) print b / a' '%.2f'; }

# ua_fell NAME: how many recorded runs of NAME (a "_st" record) made no io_uring submission
# or lost the ring
ua_fell() {
    [ -s "$TMP/res.$1" ] || { echo 0; return; }
    awk '/ uring_submits=0 / || / uring_unavailable=[1-9]/ || / files=0/ { c++ } END { print c + 0 }' "$TMP/res.$1"
}

# ua_table TITLE NAME_PATTERN RPS P50 P99 STATS_PATTERN: one table, NAME_PATTERN with ARM
# where the arm goes; STATS_PATTERN names the arm's counters (a uring arm that did not use
# io_uring in some run is marked)
ua_table() {
    local title=$1 pat=$2 krps=$3 kp50=$4 kp99=$5 spat=$6 arm name pl label
    pl=${pat//ARM/plain}
    echo "  $title"
    printf '    %-32s %9s %6s %8s %8s %6s %8s %6s   %s\n' arm req/s x "p50 $UA_UNIT" "p99 $UA_UNIT" x \
        "CPU us/r" x "runs: req/s | p99 | CPU us/req"
    for arm in $UA_ARMS; do
        name=${pat//ARM/$arm}
        label=$(ua_label "$arm")
        [ "$arm" != uring ] || [ "$(ua_fell "${spat//ARM/$arm}")" = 0 ] || label="$label FELL BACK"
        printf '    %-32s %9s %6s %8s %8s %6s %8s %6s   %s | %s | %s\n' "$label" \
            "$(fmt "$(med "$name" "$krps")")" "$(pratio "$pl" "$name" "$krps")" "$(fmt "$(med "$name" "$kp50")")" \
            "$(fmt "$(med "$name" "$kp99")")" "$(pratio "$pl" "$name" "$kp99")" "$(fmt "$(med "$name" cpu_us)")" \
            "$(pratio "$pl" "$name" cpu_us)" "$(vals "$name" "$krps")" "$(vals "$name" "$kp99")" "$(vals "$name" cpu_us)"
    done
}

# ua_stats NAME_PATTERN: what the shim did in each shimmed arm, summed over its runs; flags a
# uring arm that did not send through io_uring
ua_stats() {
    local pat=$1 arm st q d f s u un runs fell k v
    for arm in $UA_ARMS; do
        [ "$arm" = plain ] && continue
        st="${pat//ARM/$arm}_st"
        runs=$( [ -s "$TMP/res.$st" ] && wc -l < "$TMP/res.$st" || echo 0)
        q=$(ua_sum "$st" writes_queued); d=$(ua_sum "$st" writes_direct); f=$(ua_sum "$st" flush_syscalls)
        s=$(ua_sum "$st" uring_submits); u=$(ua_sum "$st" uring_sends); un=$(ua_sum "$st" uring_unavailable)
        {
            printf '%-7s %s runs: %s writes queued, %s sent at once; %s send calls, %s of them io_uring submissions' \
                "$arm:" "$runs" "$q" "$d" "$f" "$s"
            if [ "$s" != 0 ]; then
                printf ' carrying %s sends (%s per submission); ring share of sends %s%%' "$u" "$(div "$u" "$s")" \
                    "$(awk -v u="$u" -v f="$f" -v s="$s" 'BEGIN { printf "%.0f", 100 * u / (u + f - s) }')"
            fi
            [ "$un" = 0 ] || printf '; io_uring unavailable/lost in %s process(es)' "$un"
            [ "$q" = 0 ] || printf '; queues flushed by a wait %s, by a read %s, by the deadline %s' \
                "$(ua_sum "$st" flush_wait)" "$(ua_sum "$st" flush_read)" "$(ua_sum "$st" flush_deadline)"
            for k in flush_eagain flush_nobufs deferred_errors bytes_dropped closes_handed_over passthrough_reentrant; do
                v=$(ua_sum "$st" "$k")
                [ "$v" = 0 ] || printf '; %s %s' "$k" "$v"
            done
            echo
        } | fold -s -w 104 | sed 's/ *$//; s/^/    /; 2,$s/^/        /'
        if [ "$arm" = uring ]; then
            fell=$(ua_fell "$st")
            if [ "$fell" != 0 ] || [ "$runs" = 0 ]; then
                echo "    WARNING: the uring arm fell back to writev in $fell of $runs runs (no io_uring submission,"
                echo "    ring lost, or no counters written): its figures above are NOT io_uring's"
                UA_FELL=1
            else
                echo "    confirmed: every uring run sent its batches through io_uring (uring_submits > 0, ring never lost)"
            fi
        fi
    done
}

scenario_uring_apps() {
    local _ pipe n arm t have_redis=1 have_mc=1
    raise_nofile
    UA_FELL=0
    echo "uring_apps: redis-server and memcached with $UA_CLIENTS clients: plain, shim with its defaults, and"
    echo "  the writev / uring / auto flush backends with COALESCE_DIRECT=0; arms alternated, one fresh"
    echo "  server per run; load average $(cut -d' ' -f1-3 /proc/loadavg), ulimit -n $(ulimit -n)"
    case " $UA_APPS " in *" redis "*) have "uring_apps: redis" redis-server redis-benchmark redis-cli || have_redis=0 ;;
                         *) have_redis=0 ;; esac
    case " $UA_APPS " in *" memcached "*) have "uring_apps: memcached" memcached || have_mc=0 ;;
                         *) have_mc=0 ;; esac
    [ $have_redis = 1 ] || [ $have_mc = 1 ] || return 0
    printf '  runs '
    : > "$TMP/ua.load"
    for _ in $(seq 1 "$REPS"); do
        if [ $have_redis = 1 ]; then
            for pipe in $UA_PIPES; do
                n=$UA_REDIS_N1; [ "$pipe" = 1 ] || n=$UA_REDIS_N16
                for arm in $UA_ARMS; do ua_redis_run "$arm" "$pipe" "$n"; done
            done
        fi
        if [ $have_mc = 1 ]; then
            for arm in $UA_ARMS; do ua_mc_run "$arm"; done
        fi
    done
    echo
    echo "  median of $REPS runs per arm; x: the median over the repetitions of (the arm's run / plain's"
    echo "  run of the same repetition) (req/s: above 1 is better; p99 and CPU: below 1 is better);"
    echo "  CPU us/r: server CPU time (all threads, user + system, ticks of 1/$CLK_TCK s) per request"
    echo "  served; 1-minute load average over the runs: $(sort -g "$TMP/ua.load" | sed -n '1p;$p' | tr '\n' ' ' |
        awk '{ printf "%s to %s", $1, $2 }'), now $(cut -d' ' -f1-3 /proc/loadavg)"
    if [ $have_redis = 1 ]; then
        UA_UNIT=ms
        for pipe in $UA_PIPES; do
            n=$UA_REDIS_N1; [ "$pipe" = 1 ] || n=$UA_REDIS_N16
            for t in set get; do
                ua_table "redis $(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p'): redis-benchmark -c $UA_CLIENTS -n $n -P $pipe -t $t" \
                    "ua_r_P${pipe}_ARM_$t" rps p50_ms p99_ms "ua_r_P${pipe}_ARM_st"
            done
            echo "  shim counters, -P $pipe (SET and GET servers):"
            ua_stats "ua_r_P${pipe}_ARM"
        done
    fi
    if [ $have_mc = 1 ]; then
        UA_UNIT=us
        ua_table "memcached $(memcached -V 2>&1 | awk '{print $2}') -t 2: bench_mcload, $UA_CLIENTS connections, $UA_MC_SECONDS s, 90% get / 10% set, 64 B values, every reply checked" \
            "ua_mc_ARM" rps p50_us p99_us "ua_mc_ARM_st"
        echo "  shim counters:"
        ua_stats "ua_mc_ARM"
    fi
    [ $UA_FELL = 0 ] || echo "  WARNING: some uring runs did not use io_uring (see above): their figures measure writev"
}
