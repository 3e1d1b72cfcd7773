#!/bin/sh
# Installs what building and testing coalesce needs, when it is missing.
# Debian packages only; needs root (or sudo) the first time on a fresh machine.
set -eu

missing=""
need_header() { [ -e "/usr/include/$1" ] || missing="$missing $2"; }
need_cmd() { command -v "$1" >/dev/null 2>&1 || missing="$missing $2"; }

need_cmd cc gcc
need_cmd make make
need_header cmocka.h libcmocka-dev
need_header liburing.h liburing-dev
need_cmd python3 python3
need_cmd socat socat
need_cmd redis-server redis-server
need_cmd redis-cli redis-tools
need_cmd redis-benchmark redis-tools
need_cmd memcached memcached
# The broker lives in /usr/sbin, which a non-root PATH may lack.
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$missing mosquitto"
need_cmd mosquitto_pub mosquitto-clients
need_cmd mosquitto_sub mosquitto-clients
need_cmd memccapable libmemcached-tools
need_cmd memcaslap libmemcached-tools
# clang with its libFuzzer runtime, for tests/fuzz.
need_cmd clang "clang libclang-rt-14-dev"
need_cmd timeout coreutils
need_cmd valgrind valgrind

# ---- benchmark only: `scripts/setup-deps.sh --bench` (make bench) ------------------------
# The programs that bench/run.sh's "apps" scenario runs under the shim, besides those above.
# Without --bench this section adds nothing.
if [ "${1:-}" = --bench ]; then
	need_cmd sockperf sockperf
	need_cmd taskset util-linux
fi

[ -z "$missing" ] && exit 0
# One package may be named more than once.
missing=$(printf '%s\n' $missing | sort -u | tr '\n' ' ')
echo "setup-deps: installing:$missing"
if [ "$(id -u)" -eq 0 ]; then
	sudo=""
elif command -v sudo >/dev/null 2>&1; then
	sudo="sudo"
else
	echo "setup-deps: not root and no sudo; install these packages:$missing" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# shellcheck disable=SC2086
$sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
# The Debian package starts a redis service where an init system runs; the
# tests start their own servers on free ports.
if command -v service >/dev/null 2>&1 && [ -z "$sudo" ]; then
	for s in redis-server memcached mosquitto; do
		service "$s" stop >/dev/null 2>&1 || true
	done
fi
