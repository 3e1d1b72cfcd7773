#!/bin/sh
# The main job: a real program (Python's socket code, unmodified) sends small
# records over TCP, plain and under the shim, alternately (A B A B ...) so
# that drift hits both; every byte is checked by a receiver without the shim.
# `coalesce ab` prints the table: the program's own send time, wall and CPU
# time, peak memory, the ratios with their intervals, and the shim's counters.
# It also writes them all to build/demo.json, and a picture to build/demo.svg.
#
# Usage: scripts/demo.sh [RUNS] [COUNT] [SIZE]   (defaults: 10 200000 64)
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-10} count=${2:-200000} size=${3:-64}

command -v python3 >/dev/null 2>&1 || "$root/scripts/setup-deps.sh"
# The interpreter itself, not a wrapper script: pyenv's shims run several
# processes, each of which would be timed and would load the library.
py=$(python3 -c 'import sys; print(sys.executable)')

echo "workload: python3 $("$py" -c 'import sys; print(sys.version.split()[0])'), $count records of $size bytes," \
	"one socket.send() each, TCP loopback, TCP_NODELAY, checked by a receiver process without the shim"
echo "machine:  $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), Linux $(uname -r)"
echo
mkdir -p "$root/build"
"$root/scripts/coalesce" ab --runs "$runs" --warmup 1 \
	--metric '^([0-9.]+)$' --metric-name 'send time (s)' \
	--json "$root/build/demo.json" --plot "$root/build/demo.svg" \
	-- "$py" "$root/bench/py_records.py" "$count" "$size"
echo
echo "every run and counter: build/demo.json; a picture of the runs: build/demo.svg"
