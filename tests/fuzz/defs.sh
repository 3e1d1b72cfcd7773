#!/bin/sh
# Prints the -D flags fuzz_core.c needs for this checkout's core/, which other
# work changes under it: optional members of struct co_sys (each defined in
# the fake as a call that must not happen in a single-threaded run) and
# optional core features the model knows about.
# Usage: tests/fuzz/defs.sh [CC]   (run from anywhere; default CC: cc)
cc=${1:-cc}
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
defs=""
probe() { # probe NAME C-SNIPPET: NAME if the snippet compiles against core/
	printf '#include "ctx.h"\n#include "stream.h"\n%s\n' "$2" >"$tmp/probe.c"
	if "$cc" -D_GNU_SOURCE -I"$root/core" -fsyntax-only "$tmp/probe.c" 2>/dev/null; then
		defs="$defs -D$1"
	fi
}
for m in close placeholder hand_over; do
	probe "FUZZ_SYS_$m" "int f(struct co_sys *s) { int (*p)(int) = s->$m; return p != 0; }"
done
probe FUZZ_HAVE_SIGNAL_WRITES 'size_t f(void) { return co__signal_writes.len; }'
probe FUZZ_HAVE_FD_ERROR 'int f(struct co_ctx *c) { return co_take_read_error(c, 3) + co_fd_error(c, 3, 1) + c->fds.error_count; }'
probe FUZZ_HAVE_CLOSE_OR_HAND_OVER 'int (*f)(struct co_ctx *, int, struct co_fd **) = co_close_or_hand_over;'
echo "${defs# }"
