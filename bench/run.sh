#!/usr/bin/env bash
# Benchmark of the coalesce shim: plain vs shim, side by side, in one run.
# See bench/README.md for what each scenario measures; (d), the io_uring
# backend, is described in docs/design.md.
#
# Env (all optional):
#   COALESCE_LIB          library to test (default ./build/libcoalesce.so)
#   BENCH_REPS            runs per arm, alternating arms (default 3; (c) uses 2*BENCH_REPS-1)
#   BENCH_RECORDS         records per run in (a) (default 1000000)
#   BENCH_RR_ROUNDS       round trips per run in (b) (default 20000)
#   BENCH_DEVNULL_CALLS   write() calls per run in (c) (default 3000000)
#   BENCH_RR_PIN          CPU list for (b), via taskset (default 0: client and server on one
#                         CPU; cross-CPU wake-ups in a VM make round trips bimodal); "none"
#                         to not pin
#   BENCH_OUT             build directory for the binaries (default ./build/bench)
# Exit: 0 if every run completed and verified its data (targets are reported, not enforced),
#       1 if a run failed, 2 on a set-up error.
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
LIB=${COALESCE_LIB:-./build/libcoalesce.so}
REPS=${BENCH_REPS:-3}
RECORDS=${BENCH_RECORDS:-1000000}
RR_ROUNDS=${BENCH_RR_ROUNDS:-20000}
DN_CALLS=${BENCH_DEVNULL_CALLS:-3000000}
RR_PIN=${BENCH_RR_PIN:-0}
OUT=${BENCH_OUT:-./build/bench}
CC=${CC:-cc}

if [ ! -f "$LIB" ]; then
    echo "bench: library not found: $LIB (set COALESCE_LIB or run make)" >&2
    exit 2
fi
LIB=$(cd "$(dirname "$LIB")" && pwd)/$(basename "$LIB")

mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
for p in bench_stream bench_rr bench_devnull bench_uring; do
    if ! $CC -O2 -Wall -o "$OUT/$p" "$HERE/$p.c"; then
        echo "bench: failed to compile $HERE/$p.c" >&2
        exit 2
    fi
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/coalesce-bench.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
trap 'echo "interrupted"; exit 1' INT TERM HUP
FAILED=0

PIN=()
if [ "$RR_PIN" != none ] && command -v taskset >/dev/null 2>&1 && taskset -c "$RR_PIN" true 2>/dev/null; then
    PIN=(taskset -c "$RR_PIN")
else
    RR_PIN=none
fi

# run ARM SHIM(0|1|off) CMD...  -> appends the RESULT line to $TMP/ARM
#   SHIM=1 shim loaded, SHIM=off shim loaded with COALESCE_DISABLE=1, 0 no shim
run() {
    local arm=$1 shim=$2; shift 2
    local envc out rc
    case $shim in
        1)   envc=(env LD_PRELOAD="$LIB" COALESCE_STATS="$TMP/stats.$arm.%p.json") ;;
        off) envc=(env LD_PRELOAD="$LIB" COALESCE_DISABLE=1) ;;
        *)   envc=(env -u LD_PRELOAD -u COALESCE_STATS) ;;
    esac
    out=$(timeout -k 5 120 "${envc[@]}" "$@" 2>&1); rc=$?
    local line
    line=$(printf '%s\n' "$out" | grep '^RESULT ' | tail -n1)
    if [ $rc != 0 ] || [ -z "$line" ]; then
        echo "  RUN FAILED: $arm (exit $rc): $(printf '%s' "$out" | tr '\n' ' ' | cut -c1-300)"
        FAILED=1
        return 1
    fi
    echo "$line" >> "$TMP/$arm"
    printf '.'
}

# median of field KEY over the RESULT lines of ARM; "-" if none
med() {
    local arm=$1 key=$2
    [ -s "$TMP/$arm" ] || { echo "-"; return; }
    sed -n "s/.* $key=\([0-9.]*\).*/\1/p" "$TMP/$arm" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# all values of KEY, for showing the spread
vals() {
    local arm=$1 key=$2
    [ -s "$TMP/$arm" ] || { echo "-"; return; }
    sed -n "s/.* $key=\([0-9.]*\).*/\1/p" "$TMP/$arm" | tr '\n' ' ' | sed 's/ $//'
}
div() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-") print "-"; else printf "%+.1f", a - b }'; }
stat_of() {   # stat_of ARM KEY: value from the last stats file of ARM
    local f v
    f=$(ls -t "$TMP"/stats."$1".*.json 2>/dev/null | head -n1)
    [ -n "$f" ] || { echo "-"; return; }
    v=$(sed -n "s/.*\"$2\"[[:space:]]*:[[:space:]]*\([0-9][0-9]*\).*/\1/p" "$f" | head -n1)
    echo "${v:--}"
}
verdict() {   # verdict VALUE le|ge LIMIT -> met / NOT met / n/a
    [ "$1" = "-" ] && { echo "n/a"; return; }
    awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN { ok = (op == "le") ? (v + 0 <= t + 0) : (v + 0 >= t + 0); exit !ok }' \
        && echo "met" || echo "NOT met"
}

# ---- header -------------------------------------------------------------------------------
cpu=$(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo | head -n1)
echo "coalesce benchmark  $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "machine: nproc=$(nproc), cpu: ${cpu:-unknown}, kernel: $(uname -sr), $(ldd --version 2>/dev/null | head -n1 | sed 's/^ldd //')"
echo "library: $LIB ($(stat -c %s "$LIB") bytes)"
echo "settings: reps=$REPS records=$RECORDS rr_rounds=$RR_ROUNDS devnull_calls=$DN_CALLS rr_pin=$RR_PIN" \
     "COALESCE_MAX_BYTES=${COALESCE_MAX_BYTES:-default} COALESCE_DELAY_US=${COALESCE_DELAY_US:-default}"
echo

# ---- (a) stream of 64-byte records --------------------------------------------------------
printf '(a) stream: %s x 64-byte records, TCP loopback, one write() each ' "$RECORDS"
for r in $(seq 1 "$REPS"); do
    run a_nodelay 0 "$OUT/bench_stream" nodelay "$RECORDS"
    run a_shim    1 "$OUT/bench_stream" nodelay "$RECORDS"
    run a_nagle   0 "$OUT/bench_stream" nagle   "$RECORDS"
    run a_cork    0 "$OUT/bench_stream" cork    "$RECORDS"
    run a_ideal   0 "$OUT/bench_stream" ideal   "$RECORDS"
done
echo

# ---- (b) request/response -----------------------------------------------------------------
printf '(b) request/response: %s round trips of 64 B / 64 B (and b2: request in 2 writes) ' "$RR_ROUNDS"
for r in $(seq 1 "$REPS"); do
    run b_plain  0 "${PIN[@]}" "$OUT/bench_rr" "$RR_ROUNDS"
    run b_client 1 "${PIN[@]}" "$OUT/bench_rr" "$RR_ROUNDS"
    run b_both   1 "${PIN[@]}" "$OUT/bench_rr" "$RR_ROUNDS" server-shim
    run b2_plain  0 "${PIN[@]}" "$OUT/bench_rr" "$RR_ROUNDS" split
    run b2_client 1 "${PIN[@]}" "$OUT/bench_rr" "$RR_ROUNDS" split
done
echo

# ---- (c) write() to /dev/null -------------------------------------------------------------
printf '(c) non-socket write: %s x write(/dev/null, 1 byte) ' "$DN_CALLS"
for r in $(seq 1 $((2 * REPS - 1))); do
    run c_plain 0   "$OUT/bench_devnull" "$DN_CALLS"
    run c_shim  1   "$OUT/bench_devnull" "$DN_CALLS"
    run c_off   off "$OUT/bench_devnull" "$DN_CALLS"
done
echo
echo

# ---- report -------------------------------------------------------------------------------
base=$(med a_nodelay ns_per_record)
echo "(a) 64-byte records over TCP loopback, draining receiver; median of $REPS runs"
printf '  %-36s %12s %10s   %s\n' "sender" "ns/record" "vs NODELAY" "runs (ns/record)"
for arm in a_nodelay:"plain, TCP_NODELAY, write() each" a_shim:"shim, TCP_NODELAY, write() each" \
           a_nagle:"plain, Nagle (default), write() each" a_cork:"plain, TCP_CORK, write() each" \
           a_ideal:"ideal: memcpy, write() per 64 KiB"; do
    k=${arm%%:*}; label=${arm#*:}
    v=$(med "$k" ns_per_record)
    printf '  %-36s %12s %9sx   %s\n' "$label" "$v" "$(div "$base" "$v")" "$(vals "$k" ns_per_record)"
done
sa=$(div "$base" "$(med a_shim ns_per_record)")
wq=$(stat_of a_shim writes_queued); fs=$(stat_of a_shim flush_syscalls)
echo "  shim stats (last run): writes_queued=$wq flush_syscalls=$fs records/flush=$(div "$wq" "$fs")"
echo "  target: shim >= 20x plain NODELAY: ${sa}x -> $(verdict "$sa" ge 20)"
echo

pm=$(med b_plain mean_us)
echo "(b) blocking request/response, 64 B each way, TCP_NODELAY; median of $REPS runs (us)"
printf '  %-26s %9s %9s %9s %9s %11s\n' "arm" "mean" "p50" "p99" "max" "mean ratio"
for arm in b_plain:"plain" b_client:"shim in client" b_both:"shim in client+server"; do
    k=${arm%%:*}; label=${arm#*:}
    printf '  %-26s %9s %9s %9s %9s %10sx\n' "$label" "$(med "$k" mean_us)" "$(med "$k" p50_us)" \
        "$(med "$k" p99_us)" "$(med "$k" max_us)" "$(div "$(med "$k" mean_us)" "$pm")"
done
echo "  runs (mean us): plain [$(vals b_plain mean_us)] client [$(vals b_client mean_us)] both [$(vals b_both mean_us)]"
rc_=$(div "$(med b_client mean_us)" "$pm"); rb_=$(div "$(med b_both mean_us)" "$pm")
echo "  target: within 5% of plain: client ${rc_}x -> $(verdict "$rc_" le 1.05), both ${rb_}x -> $(verdict "$rb_" le 1.05)"
pm2=$(med b2_plain mean_us)
echo "  (b2) the request in two writes (16 B header + 48 B body), reply in one; ratio vs its own plain:"
for arm in b2_plain:"plain, 2 writes/request" b2_client:"shim in client, 2 writes"; do
    k=${arm%%:*}; label=${arm#*:}
    printf '  %-26s %9s %9s %9s %9s %10sx\n' "$label" "$(med "$k" mean_us)" "$(med "$k" p50_us)" \
        "$(med "$k" p99_us)" "$(med "$k" max_us)" "$(div "$(med "$k" mean_us)" "$pm2")"
done
wq=$(stat_of b2_client writes_queued); fs=$(stat_of b2_client flush_syscalls)
echo "  shim stats (b2, last run): writes_queued=$wq flush_syscalls=$fs"
echo

cp_=$(med c_plain ns_per_call); cs_=$(med c_shim ns_per_call); co_=$(med c_off ns_per_call)
echo "(c) write() of 1 byte to /dev/null; median of $((2 * REPS - 1)) runs"
printf '  %-32s %10s %10s   %s\n' "arm" "ns/call" "added ns" "runs"
printf '  %-32s %10s %10s   %s\n' "plain" "$cp_" "" "$(vals c_plain ns_per_call)"
printf '  %-32s %10s %10s   %s\n' "shim" "$cs_" "$(sub "$cs_" "$cp_")" "$(vals c_shim ns_per_call)"
printf '  %-32s %10s %10s   %s\n' "shim, COALESCE_DISABLE=1" "$co_" "$(sub "$co_" "$cp_")" "$(vals c_off ns_per_call)"
d=$(sub "$cs_" "$cp_")
echo "  target: at most 10 ns added: ${d} ns -> $(verdict "$d" le 10)"
echo

# ---- (d) fan-out: the io_uring flush backend (arms alternated inside) ---------------------
echo "(d) fan-out: 64-byte replies to N clients, plain / shim writev / uring / auto (docs/design.md)"
if ! fan=$("$OUT/bench_uring" "$LIB" "$REPS" 2>&1); then
    echo "  RUN FAILED: bench_uring"
    FAILED=1
fi
printf '%s\n' "$fan" | grep -v '^RESULT '
echo

if [ $FAILED != 0 ]; then
    echo "bench: some runs FAILED (see above)"
    exit 1
fi
exit 0
