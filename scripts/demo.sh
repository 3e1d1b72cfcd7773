#!/bin/sh
# The main job: a real program (Python's socket code, unmodified) sends small
# records over TCP, plain and under the shim, alternately (A B A B ...) so
# that drift hits both; every byte is checked by a receiver without the shim.
# Prints the median time of each arm and the ratio.
#
# Usage: scripts/demo.sh [RUNS] [COUNT] [SIZE]   (defaults: 5 200000 64)
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-5} count=${2:-200000} size=${3:-64}
py=$(command -v python3)
stats=$(mktemp)
trap 'rm -f "$stats"' EXIT

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "workload: python3 $($py -c 'import sys; print(sys.version.split()[0])'), $count records of $size bytes," \
	"one socket.send() each, TCP loopback, TCP_NODELAY; $runs runs per arm"
echo "machine:  $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), Linux $(uname -r)"
plain="" shim=""
i=1
while [ $i -le "$runs" ]; do
	a=$("$py" "$root/bench/py_records.py" "$count" "$size")
	b=$("$root/scripts/coalesce" --stats "$stats" -- "$py" "$root/bench/py_records.py" "$count" "$size")
	plain="$plain $a" shim="$shim $b"
	printf '  run %d: plain %.3f s, coalesce %.3f s\n' "$i" "$a" "$b"
	i=$((i + 1))
done
pa=$(printf '%s\n' $plain | median)
sb=$(printf '%s\n' $shim | median)
echo
printf '%-10s %12s %14s\n' arm "median (s)" "records/s"
awk -v c="$count" -v a="$pa" -v b="$sb" 'BEGIN {
	printf "%-10s %12.3f %14.0f\n", "plain", a, c / a
	printf "%-10s %12.3f %14.0f\n", "coalesce", b, c / b
	printf "speed-up: %.2fx (plain time / coalesce time, medians)\n", a / b
}'
queued=$(sed -n 's/.*"writes_queued": \([0-9]*\).*/\1/p' "$stats")
calls=$(sed -n 's/.*"flush_syscalls": \([0-9]*\).*/\1/p' "$stats")
echo "last coalesce run: $queued writes queued, sent in $calls system calls"
