#!/usr/bin/env bash
# Benchmark of the coalesce shim: plain and shim side by side in one run, arms alternating
# (A B A B ...), medians, every run's value shown. docs/benchmarks.md describes each scenario
# and how to read the tables.
#
# usage: bench/run.sh [SCENARIO...]     (default: all, in this order)
#   stream   64-byte records over one TCP connection: NODELAY, Nagle, TCP_CORK, ideal, shim
#   matrix   message sizes 16 B..64 KiB x 1..1024 connections, plain vs shim
#   rr       request/response latency
#   nonsock  write() to /dev/null, a pipe and a tmpfs file: what the shim adds
#   apps     real programs: sockperf, redis, memcached, mosquitto, socat (bench/apps.bash)
#   dgram    64-byte UDP datagrams: send, sendmmsg, GSO, shim, random sizes, 4 destinations
#   uring    64-byte replies from an epoll server to N clients: plain, shim with the writev
#            and io_uring flush backends (docs/design.md, "io_uring backend")
#   uring_apps  redis-server and memcached with 1000 clients: plain, shim with its defaults,
#            shim with the writev / uring / auto backends and COALESCE_DIRECT=0 (bench/apps.bash)
#
# Env (all optional):
#   BENCH_ONLY            scenarios to run, separated by commas or spaces (as the arguments)
#   BENCH_QUICK=1         shorter runs and fewer matrix cells: about 2 minutes in all
#   BENCH_REPS            runs per arm (default 3; nonsock makes 4*BENCH_REPS-1 shorter ones)
#   BENCH_RECORDS         records per run in stream (default 1000000, quick 200000)
#   BENCH_MATRIX_MS       run time aimed at for the plain arm of a matrix cell (default 300,
#                         quick 100); BENCH_MATRIX_SIZES, BENCH_MATRIX_CONNS: the cells
#   BENCH_RR_ROUNDS       round trips per run in rr (default 20000, quick 5000)
#   BENCH_RR_PIN          CPU list for rr and sockperf's ping-pong, via taskset
#                         (default 0: client and server on one CPU, since cross-CPU wake-ups
#                         in a VM make round trips bimodal); "none" to not pin
#   BENCH_NONSOCK_CALLS   write() calls per run in nonsock (default 300000, quick 200000)
#   BENCH_NONSOCK_DIR     directory of the regular file in nonsock (default /dev/shm)
#   BENCH_DGRAM_COUNT     datagrams per run in dgram (default 100000, quick 30000)
#   BENCH_APPS            real programs to run in apps (default: sockperf redis memcached
#                         mosquitto socat)
#   BENCH_URING_APPS      programs of uring_apps (default: redis memcached)
#   BENCH_URING_APPS_CLIENTS  clients of redis and memcached in uring_apps (default 1000)
#   BENCH_OUT             build directory for the binaries (default ./build/bench)
#   COALESCE_LIB          library to test (default ./build/libcoalesce.so); it is copied at
#                         start, so a rebuild during the run does not change what is measured
#   COALESCE_*            other settings reach every shimmed process and are printed
# Exit: 0 if every run completed and verified its data (targets are reported, never
#       enforced), 1 if a run failed (crash, time-out, wrong data), 2 on a set-up error.
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
QUICK=${BENCH_QUICK:-0}
[ "$QUICK" = 1 ] || QUICK=0
q() { if [ "$QUICK" = 1 ]; then echo "$2"; else echo "$1"; fi; }   # q DEFAULT QUICK_VALUE
LIB_SRC=${COALESCE_LIB:-./build/libcoalesce.so}
REPS=${BENCH_REPS:-3}
RECORDS=${BENCH_RECORDS:-$(q 1000000 200000)}
MATRIX_MS=${BENCH_MATRIX_MS:-$(q 300 100)}
MATRIX_SIZES=${BENCH_MATRIX_SIZES:-$(q "16 64 256 1024 4096 16384 65536" "16 256 4096 65536")}
MATRIX_CONNS=${BENCH_MATRIX_CONNS:-$(q "1 16 256 1024" "1 16 1024")}
RR_ROUNDS=${BENCH_RR_ROUNDS:-$(q 20000 5000)}
RR_PIN=${BENCH_RR_PIN:-0}
NS_CALLS=${BENCH_NONSOCK_CALLS:-$(q 300000 200000)}
NS_DIR=${BENCH_NONSOCK_DIR:-/dev/shm}
DG_COUNT=${BENCH_DGRAM_COUNT:-$(q 100000 30000)}
APPS=${BENCH_APPS:-sockperf redis memcached mosquitto socat}
OUT=${BENCH_OUT:-./build/bench}
CC=${CC:-cc}
ALL_SCENARIOS="stream matrix rr nonsock apps dgram uring uring_apps"

if [ $# -gt 0 ]; then
    SCENARIOS="$*"
else
    SCENARIOS=${BENCH_ONLY:-$ALL_SCENARIOS}
fi
SCENARIOS=$(echo "$SCENARIOS" | tr ',' ' ')
for s in $SCENARIOS; do
    case " $ALL_SCENARIOS " in
        *" $s "*) ;;
        *) echo "bench: unknown scenario '$s' (known: $ALL_SCENARIOS)" >&2; exit 2 ;;
    esac
done
case "$REPS" in ''|*[!0-9]*|0) echo "bench: BENCH_REPS must be a positive number" >&2; exit 2 ;; esac

if [ ! -f "$LIB_SRC" ]; then
    echo "bench: library not found: $LIB_SRC (set COALESCE_LIB or run make)" >&2
    exit 2
fi
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
for p in bench_stream bench_matrix bench_rr bench_nonsock bench_dgram bench_uring bench_mcload; do
    if ! $CC -O2 -Wall -Wextra -o "$OUT/$p" "$HERE/$p.c"; then
        echo "bench: failed to compile $HERE/$p.c" >&2
        exit 2
    fi
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/coalesce-bench.XXXXXX")
BGPIDS=()
cleanup() {   # every process a scenario left running, then the work directory
    local p
    for p in ${BGPIDS[@]+"${BGPIDS[@]}"}; do kill -TERM "$p" 2>/dev/null; done
    for p in ${BGPIDS[@]+"${BGPIDS[@]}"}; do wait "$p" 2>/dev/null; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'echo; echo "bench: interrupted"; exit 1' INT TERM HUP
cp "$LIB_SRC" "$TMP/libcoalesce.so" || exit 2
LIB=$TMP/libcoalesce.so
FAILED=0

# ---- running arms ---------------------------------------------------------------------------

# shim_env SHIM ARM: sets ENVC, the command prefix for one run of ARM. SHIM=1: the shim,
# writing its stats into $TMP/st/ARM (emptied first, so it holds the last run's files), with
# the settings of the array SHIM_EXTRA (VAR=VALUE...) added; SHIM=off: the shim with
# COALESCE_DISABLE=1; SHIM=0: no shim.
SHIM_EXTRA=()
shim_env() {
    case $1 in
        1)   rm -rf "$TMP/st/$2"; mkdir -p "$TMP/st/$2"
             ENVC=(env LD_PRELOAD="$LIB" COALESCE_STATS="$TMP/st/$2/%p.json" ${SHIM_EXTRA[@]+"${SHIM_EXTRA[@]}"}) ;;
        off) ENVC=(env -u COALESCE_STATS LD_PRELOAD="$LIB" COALESCE_DISABLE=1) ;;
        *)   ENVC=(env -u LD_PRELOAD -u COALESCE_STATS) ;;
    esac
}

runfail() {   # runfail ARM MESSAGE: a run that crashed, timed out or got wrong data
    echo
    echo "  RUN FAILED: $1: $(printf '%s' "$2" | tr '\n' ' ' | cut -c1-400)"
    FAILED=1
}

record() {   # record ARM LINE: keeps one run's "RESULT key=value ..." line
    echo "$2" >> "$TMP/res.$1"
    printf '.'
}

# run ARM SHIM CMD...: runs a benchmark program (at most 300 s) and records its RESULT line
run() {
    local arm=$1 shim=$2 out rc line
    shift 2
    shim_env "$shim" "$arm"
    out=$(timeout -k 5 300 "${ENVC[@]}" "$@" 2>&1); rc=$?
    line=$(printf '%s\n' "$out" | grep '^RESULT ' | tail -n1)
    if [ $rc != 0 ] || [ -z "$line" ]; then
        runfail "$arm" "exit $rc: $out"
        return 1
    fi
    record "$arm" "$line"
}

# ---- medians and formatting -----------------------------------------------------------------

med() {   # med ARM KEY: median of KEY over the recorded runs of ARM; "-" if none
    [ -s "$TMP/res.$1" ] || { echo "-"; return; }
    sed -n "s/.* $2=\([0-9.]*\).*/\1/p" "$TMP/res.$1" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2];
              else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
vals() {   # vals ARM KEY: every run's value, in run order
    [ -s "$TMP/res.$1" ] || { echo "-"; return; }
    sed -n "s/.* $2=\([0-9.]*\).*/\1/p" "$TMP/res.$1" | tr '\n' ' ' | sed 's/ $//'
}
# pairwise ARM_A ARM_B KEY EXPR FORMAT: the median over i of EXPR (awk, of a = run i of A and
# b = run i of B; a pair where EXPR cannot be formed is skipped), printed with FORMAT; "-" when
# there is none. The runs of a pair ran one after the other, under the same load, so this
# resists the machine's drift better than a figure formed from the two medians.
pairwise() {
    [ -s "$TMP/res.$1" ] && [ -s "$TMP/res.$2" ] || { echo "-"; return; }
    paste -d' ' <(sed -n "s/.* $3=\([0-9.]*\).*/\1/p" "$TMP/res.$1") \
                <(sed -n "s/.* $3=\([0-9.]*\).*/\1/p" "$TMP/res.$2") |
        awk "NF == 2 { a = \$1; b = \$2; $4 }" | sort -g |
        awk -v f="$5" '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) printf f "\n", v[(NR + 1) / 2];
              else printf f "\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# paired ARM_A ARM_B KEY: median over i of (run i of B - run i of A)
paired() { pairwise "$1" "$2" "$3" 'print b - a' '%+.1f'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-") print "-"; else printf "%+.1f", a - b }'; }
fmt() { awk -v a="$1" 'BEGIN { if (a == "-") print "-"; else if (a + 0 >= 100) printf "%.0f", a; else printf "%.2f", a }'; }
verdict() {   # verdict VALUE le|ge LIMIT -> met / NOT met / n/a
    [ "$1" = "-" ] && { echo "n/a"; return; }
    awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN { ok = (op == "le") ? (v + 0 <= t + 0) : (v + 0 >= t + 0); exit !ok }' \
        && echo "met" || echo "NOT met"
}

# counter ARM KEYS: the counters whose names match the regular expression KEYS (whole name),
# summed over the stats files of ARM's last shimmed run ("-" if none)
counter() {
    local f
    f=$(ls "$TMP/st/$1"/*.json 2>/dev/null)
    [ -n "$f" ] || { echo "-"; return; }
    # shellcheck disable=SC2086
    awk -v re="^\"($2)\":$" '$1 ~ re { gsub(/[^0-9]/, "", $2); s += $2 } END { print s + 0 }' $f
}
# why ARM: what the shim did to the writes of ARM's last shimmed run, in words
why() {
    local q d p f b1
    q=$(counter "$1" writes_queued)
    [ "$q" != - ] || return 0
    d=$(counter "$1" writes_direct); p=$(counter "$1" 'passthrough_.*')
    f=$(counter "$1" flush_syscalls); b1=$(counter "$1" batch_1)
    if [ "$q" = 0 ]; then
        echo "the shim queued no write ($d sent at once, $p passed through): the program made the same system calls as plain"
    elif [ "$b1" = "$f" ]; then
        echo "$q writes queued, every one of the $f flushes carried one write: no system call saved"
    else
        echo "$q writes queued, sent in $f flushes: $(div "$q" "$f") writes per send"
    fi
}
# stats_line ARM: the non-zero counters of ARM's last shimmed run, summed over its processes
stats_line() {
    local f
    f=$(ls "$TMP/st/$1"/*.json 2>/dev/null)
    [ -n "$f" ] || { echo "no stats file (the shim did not write one)"; return; }
    # shellcheck disable=SC2086
    awk '/^ *"[a-z_0-9]+": *[0-9]+/ {
             k = $1; gsub(/[":]/, "", k); v = $2; gsub(/[^0-9]/, "", v)
             if (k == "pid" || v + 0 == 0) next
             if (!(k in s)) order[n++] = k
             s[k] += v
         }
         END { for (i = 0; i < n; i++) printf "%s%s=%s", (i ? " " : ""), order[i], s[order[i]]; print "" }' $f |
        fold -s -w 100 | sed '2,$s/^/      /'
}

# rr and sockperf's ping-pong run client and server on the CPUs of BENCH_RR_PIN, via taskset
PIN=()
if [ "$RR_PIN" != none ] && command -v taskset >/dev/null 2>&1 && taskset -c "$RR_PIN" true 2>/dev/null; then
    PIN=(taskset -c "$RR_PIN")
else
    RR_PIN=none
fi

# ---- header -----------------------------------------------------------------------------------

cpu=$(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo | head -n1)
glibc="$(getconf GNU_LIBC_VERSION 2>/dev/null) ($(ldd --version 2>/dev/null | head -n1 | sed -n 's/^ldd (\(.*\)) .*/\1/p'))"
mem=$(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
echo "coalesce benchmark  $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "machine: nproc=$(nproc), cpu: ${cpu:-unknown}, memory: $mem, kernel: $(uname -sr), $glibc"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine makes absolute figures noisy;"
echo "  the arms alternate, so the ratios stay fair)"
echo "library: $(cd "$(dirname "$LIB_SRC")" && pwd)/$(basename "$LIB_SRC") ($(stat -c %s "$LIB") bytes)"
settings=$(env | grep '^COALESCE_' | grep -v '^COALESCE_LIB=' | sort | tr '\n' ' ' | sed 's/ $//')
echo "settings: scenarios=[$SCENARIOS] quick=$QUICK reps=$REPS, shim settings: ${settings:-defaults}"
echo

# ---- stream: 64-byte records over one connection ----------------------------------------------

scenario_stream() {
    local base v k label
    printf 'stream: %s x 64-byte records over TCP loopback, one write() each ' "$RECORDS"
    for _ in $(seq 1 "$REPS"); do
        run s_nodelay 0 "$OUT/bench_stream" nodelay "$RECORDS"
        run s_shim    1 "$OUT/bench_stream" nodelay "$RECORDS"
        run s_nagle   0 "$OUT/bench_stream" nagle   "$RECORDS"
        run s_cork    0 "$OUT/bench_stream" cork    "$RECORDS"
        run s_ideal   0 "$OUT/bench_stream" ideal   "$RECORDS"
    done
    echo
    base=$(med s_nodelay ns_per_record)
    echo "  median of $REPS runs; the sender alone is shimmed, the receiver drains and checksums"
    printf '  %-38s %10s %11s   %s\n' "sender" "ns/record" "vs NODELAY" "runs (ns/record)"
    for k in s_nodelay:"plain, TCP_NODELAY, write() each" s_shim:"shim, TCP_NODELAY, write() each" \
             s_nagle:"plain, Nagle (default), write() each" s_cork:"plain, TCP_CORK, write() each" \
             s_ideal:"ideal: memcpy, write() per 64 KiB"; do
        label=${k#*:}; k=${k%%:*}
        v=$(med "$k" ns_per_record)
        printf '  %-38s %10s %10sx   %s\n' "$label" "$(fmt "$v")" "$(div "$base" "$v")" "$(vals "$k" ns_per_record)"
    done
    local sp so
    sp=$(div "$base" "$(med s_shim ns_per_record)")
    so=$(div "$(med s_shim ns_per_record)" "$(med s_ideal ns_per_record)")
    echo "  shim stats (last run): $(stats_line s_shim)"
    echo "  target: shim >= 50x plain NODELAY: ${sp}x -> $(verdict "$sp" ge 50)"
    echo "  target: shim within 2x of ideal: shim takes ${so}x the ideal's time -> $(verdict "$so" le 2)"
}

# ---- matrix: message sizes x connections ------------------------------------------------------

matrix_msgs() {   # matrix_msgs SIZE CONNS: messages per run, so the plain arm takes ~MATRIX_MS
    local size=$1 conns=$2 base m
    # The plain arm's cost per message measured on the reference VM: about 2 us with one
    # connection, growing with the count of connections, plus 0.5 ns per byte.
    if [ "$conns" -le 1 ]; then base=2000
    elif [ "$conns" -le 16 ]; then base=3500
    elif [ "$conns" -le 256 ]; then base=6000
    else base=11000; fi
    m=$(( MATRIX_MS * 1000000 / (base + size / 2) ))
    m=$(( m / conns * conns ))
    [ $m -ge $((4 * conns)) ] || m=$((4 * conns))
    echo $m
}

scenario_matrix() {
    local size conns m k
    echo "matrix: one sender, SIZE-byte messages round-robin over CONNS TCP connections, one write() each,"
    echo "  nonblocking sockets with TCP_NODELAY; the receiver drains with epoll and checks every byte"
    printf '  cells: sizes [%s] x connections [%s], ~%s ms per plain run ' "$MATRIX_SIZES" "$MATRIX_CONNS" "$MATRIX_MS"
    for size in $MATRIX_SIZES; do
        for conns in $MATRIX_CONNS; do
            m=$(matrix_msgs "$size" "$conns")
            for _ in $(seq 1 "$REPS"); do
                run "m_plain_${size}_$conns" 0 "$OUT/bench_matrix" "$size" "$conns" "$m"
                run "m_shim_${size}_$conns"  1 "$OUT/bench_matrix" "$size" "$conns" "$m"
            done
        done
    done
    echo
    echo "  median of $REPS runs; ratio = plain ns/msg / shim ns/msg; writes/flush from the shim's stats"
    printf '  %6s %5s %8s %10s %10s %9s %9s %7s %8s   %s\n' size conns messages "plain ns" "shim ns" \
        "plain MB/s" "shim MB/s" ratio "wr/flush" "runs: plain ns | shim ns"
    for size in $MATRIX_SIZES; do
        for conns in $MATRIX_CONNS; do
            local p="m_plain_${size}_$conns" s="m_shim_${size}_$conns" pn sn
            pn=$(med "$p" ns_per_msg); sn=$(med "$s" ns_per_msg)
            printf '  %6s %5s %8s %10s %10s %9s %9s %6sx %8s   %s | %s\n' "$size" "$conns" \
                "$(matrix_msgs "$size" "$conns")" "$(fmt "$pn")" "$(fmt "$sn")" "$(fmt "$(med "$p" mb_per_s)")" \
                "$(fmt "$(med "$s" mb_per_s)")" "$(div "$pn" "$sn")" \
                "$(div "$(counter "$s" writes_queued)" "$(counter "$s" flush_syscalls)")" "$(vals "$p" ns_per_msg)" "$(vals "$s" ns_per_msg)"
        done
    done
    echo "  ratio grid (rows: message size, columns: connections):"
    printf '  %8s' ""; for conns in $MATRIX_CONNS; do printf ' %8s' "$conns"; done; echo
    for size in $MATRIX_SIZES; do
        printf '  %8s' "$size B"
        for conns in $MATRIX_CONNS; do
            k=$(div "$(med "m_plain_${size}_$conns" ns_per_msg)" "$(med "m_shim_${size}_$conns" ns_per_msg)")
            printf ' %7sx' "$k"
        done
        echo
    done
    for size in $MATRIX_SIZES; do
        for conns in $MATRIX_CONNS; do
            k=$(div "$(med "m_plain_${size}_$conns" ns_per_msg)" "$(med "m_shim_${size}_$conns" ns_per_msg)")
            if [ "$k" != - ] && awk -v k="$k" 'BEGIN { exit !(k < 1) }'; then
                echo "  below 1x: $size B x $conns: shim stats (last run): $(stats_line "m_shim_${size}_$conns")"
            fi
        done
    done
}

# ---- rr: request/response latency -------------------------------------------------------------

scenario_rr() {
    local k label pm pm2 rc_ rb_
    printf 'rr: %s blocking round trips of 64 B / 64 B, TCP_NODELAY, pinned to CPU %s ' "$RR_ROUNDS" "$RR_PIN"
    for _ in $(seq 1 "$REPS"); do
        run r_plain   0 ${PIN[@]+"${PIN[@]}"} "$OUT/bench_rr" "$RR_ROUNDS"
        run r_client  1 ${PIN[@]+"${PIN[@]}"} "$OUT/bench_rr" "$RR_ROUNDS"
        run r_both    1 ${PIN[@]+"${PIN[@]}"} "$OUT/bench_rr" "$RR_ROUNDS" server-shim
        run r2_plain  0 ${PIN[@]+"${PIN[@]}"} "$OUT/bench_rr" "$RR_ROUNDS" split
        run r2_client 1 ${PIN[@]+"${PIN[@]}"} "$OUT/bench_rr" "$RR_ROUNDS" split
    done
    echo
    pm=$(med r_plain mean_us)
    echo "  median of $REPS runs, microseconds; ratio of means to plain"
    printf '  %-28s %8s %8s %8s %8s %7s   %s\n' arm mean p50 p99 max ratio "runs (mean)"
    for k in r_plain:"plain" r_client:"shim in client" r_both:"shim in client+server"; do
        label=${k#*:}; k=${k%%:*}
        printf '  %-28s %8s %8s %8s %8s %6sx   %s\n' "$label" "$(med "$k" mean_us)" "$(med "$k" p50_us)" \
            "$(med "$k" p99_us)" "$(med "$k" max_us)" "$(div "$(med "$k" mean_us)" "$pm")" "$(vals "$k" mean_us)"
    done
    rc_=$(div "$(med r_client p50_us)" "$(med r_plain p50_us)"); rb_=$(div "$(med r_both p50_us)" "$(med r_plain p50_us)")
    echo "  target: p50 within 5% of plain: client ${rc_}x -> $(verdict "$rc_" le 1.05), both ${rb_}x -> $(verdict "$rb_" le 1.05)"
    rc_=$(div "$(med r_client p99_us)" "$(med r_plain p99_us)"); rb_=$(div "$(med r_both p99_us)" "$(med r_plain p99_us)")
    echo "  target: p99 within 5% of plain: client ${rc_}x -> $(verdict "$rc_" le 1.05), both ${rb_}x -> $(verdict "$rb_" le 1.05)"
    pm2=$(med r2_plain mean_us)
    echo "  the request in two writes (16 B header + 48 B body), the reply in one; ratio to its own plain:"
    for k in r2_plain:"plain, 2 writes/request" r2_client:"shim in client, 2 writes"; do
        label=${k#*:}; k=${k%%:*}
        printf '  %-28s %8s %8s %8s %8s %6sx   %s\n' "$label" "$(med "$k" mean_us)" "$(med "$k" p50_us)" \
            "$(med "$k" p99_us)" "$(med "$k" max_us)" "$(div "$(med "$k" mean_us)" "$pm2")" "$(vals "$k" mean_us)"
    done
    echo "  shim stats (two writes, last run): $(stats_line r2_client)"
}

# ---- nonsock: write() on descriptors that are not sockets --------------------------------------

scenario_nonsock() {
    local t n=$((4 * REPS - 1)) cp cs d
    printf 'nonsock: %s x write() of 1 byte to /dev/null, a pipe, a file in %s ' "$NS_CALLS" "$NS_DIR"
    for _ in $(seq 1 "$n"); do
        for t in null pipe file; do
            run "n_plain_$t" 0   "$OUT/bench_nonsock" "$t" "$NS_CALLS" "$NS_DIR"
            run "n_shim_$t"  1   "$OUT/bench_nonsock" "$t" "$NS_CALLS" "$NS_DIR"
            run "n_off_$t"   off "$OUT/bench_nonsock" "$t" "$NS_CALLS" "$NS_DIR"
        done
    done
    echo
    echo "  $n runs per arm, ns per write() call; added: the median of (shim run i - plain run i), the"
    echo "  runs of a pair being back to back; DISABLE=1: the shim loaded with COALESCE_DISABLE=1"
    printf '  %-6s %8s %8s %8s %12s %14s   %s\n' target plain shim added "medians' diff" "DISABLE=1 add" \
        "runs: plain | shim"
    for t in null pipe file; do
        cp=$(med "n_plain_$t" ns_per_call); cs=$(med "n_shim_$t" ns_per_call)
        printf '  %-6s %8s %8s %8s %12s %14s   %s | %s\n' "$t" "$cp" "$cs" "$(paired "n_plain_$t" "n_shim_$t" ns_per_call)" \
            "$(sub "$cs" "$cp")" "$(paired "n_plain_$t" "n_off_$t" ns_per_call)" \
            "$(vals "n_plain_$t" ns_per_call)" "$(vals "n_shim_$t" ns_per_call)"
    done
    for t in null pipe file; do
        d=$(paired "n_plain_$t" "n_shim_$t" ns_per_call)
        echo "  target: at most 10 ns added ($t): ${d} ns -> $(verdict "$d" le 10)"
    done
}

# ---- dgram: UDP datagrams ---------------------------------------------------------------------

scenario_dgram() {
    local k label base
    printf 'dgram: %s UDP datagrams over loopback per run ' "$DG_COUNT"
    for _ in $(seq 1 "$REPS"); do
        run d_send      0 "$OUT/bench_dgram" send  "$DG_COUNT"
        run d_shim      1 "$OUT/bench_dgram" send  "$DG_COUNT"
        run d_mmsg      0 "$OUT/bench_dgram" mmsg  "$DG_COUNT"
        run d_gso       0 "$OUT/bench_dgram" gso   "$DG_COUNT"
        run d_gsomax    0 "$OUT/bench_dgram" gsomax "$DG_COUNT"
        run d_rand      0 "$OUT/bench_dgram" rand  "$DG_COUNT"
        run d_rand_shim 1 "$OUT/bench_dgram" rand  "$DG_COUNT"
        run d_multi     0 "$OUT/bench_dgram" multi "$DG_COUNT"
        run d_multi_shim 1 "$OUT/bench_dgram" multi "$DG_COUNT"
    done
    echo
    echo "  median of $REPS runs; ns/dgram: first send until the last datagram reached the receiver;"
    echo "  send loop: the sender's loop alone; received/dropped/lost: medians; ratio: to the plain arm of the same kind"
    printf '  %-44s %9s %7s %9s %9s %8s %6s   %s\n' arm ns/dgram ratio "send loop" received dropped lost "runs (ns/dgram)"
    for k in d_send:d_send:"64 B, send() each, connected" d_shim:d_send:"64 B, shim (the send() binary)" \
             d_mmsg:d_send:"64 B, sendmmsg() of 64" d_gso:d_send:"64 B, UDP GSO, 64 segments per send" \
             d_gsomax:d_send:"64 B, UDP GSO, the kernel's most segments" \
             d_rand:d_rand:"1..1400 B, send() each" d_rand_shim:d_rand:"1..1400 B, shim" \
             d_multi:d_multi:"64 B, sendto() 4 destinations in turn" d_multi_shim:d_multi:"64 B, 4 destinations, shim"; do
        label=${k#*:}; base=${label%%:*}; label=${label#*:}; k=${k%%:*}
        printf '  %-44s %9s %6sx %9s %9s %8s %6s   %s\n' "$label" "$(fmt "$(med "$k" ns_per_dgram)")" \
            "$(div "$(med "$base" ns_per_dgram)" "$(med "$k" ns_per_dgram)")" "$(fmt "$(med "$k" send_ns_per_dgram)")" \
            "$(med "$k" received)" "$(med "$k" dropped)" "$(med "$k" lost)" "$(vals "$k" ns_per_dgram)"
    done
    echo "  shim stats (64 B, one destination, last run): $(stats_line d_shim)"
    echo "  shim stats (1..1400 B, last run): $(stats_line d_rand_shim)"
    echo "  shim stats (4 destinations, last run): $(stats_line d_multi_shim)"
    local ratio queued
    ratio=$(div "$(med d_send ns_per_dgram)" "$(med d_shim ns_per_dgram)")
    queued=$(counter d_shim writes_queued)
    echo "  target: shim >= 5x plain send(), 64 B to one destination: ${ratio}x -> $(verdict "$ratio" ge 5)" \
         "$([ "$queued" = 0 ] && echo "(the shim queued no datagram: it does not coalesce datagrams yet)")"
}

# ---- uring: the io_uring flush backend (bench_uring alternates its arms itself) ---------------
scenario_uring() {
    local fan
    echo "uring: 64-byte replies from an epoll server to N clients, COALESCE_DIRECT=0," \
        "plain / shim writev / shim uring / auto"
    if ! fan=$("$OUT/bench_uring" "$LIB" "$REPS" 2>&1); then
        echo "  RUN FAILED: bench_uring"
        FAILED=1
    fi
    printf '%s\n' "$fan" | grep -v '^RESULT ' | sed 's/^/  /'
}

# ---- the run ----------------------------------------------------------------------------------

# shellcheck source=bench/apps.bash
. "$HERE/apps.bash"
for s in $SCENARIOS; do
    t0=$SECONDS
    "scenario_$s"
    echo "  ($s took $((SECONDS - t0)) s)"
    echo
done

if [ $FAILED != 0 ]; then
    echo "bench: some runs FAILED (see RUN FAILED above)"
    exit 1
fi
echo "bench: every run completed and verified its data"
exit 0
