#!/usr/bin/env bash
# Real-application regression test: socat sending datagrams under the coalesce shim.
#
# A receiver without the shim (python3, written to the work directory) checks every datagram
# against what was sent: its size and bytes, the order, and that none is missing beyond what
# the kernel reports it dropped on a full receive queue (the "drops" column of /proc/net/udp,
# for the receiver's socket and the relay's). Each case runs without the shim (baseline) and
# with it:
#   file    socat -u -b64 - UDP4-SENDTO (UDP6-SENDTO, UNIX-SENDTO) reads a file of 64-byte
#           lines, 64 bytes per read: one 64-byte datagram per line, 5,000 of them
#   perl    socat UDP4-CONNECT ... EXEC:"perl gen.pl",nofork: perl (socat execs it, with the
#           shim) writes the same 64-byte records with syswrite() on the connected UDP socket,
#           in bursts of 1..200 ended by a 1 ms select(); the shim must queue some of them
#           (dgrams_queued > 0). Skipped (the case, not the script) when perl is missing.
#   relay   socat -u UDP4-RECV:P1 UDP4-SENDTO:127.0.0.1:P2 relays 3,000 datagrams of 1..1400
#           bytes that the receiver itself sends to P1, 50 at a time (each group must come back
#           through the relay before the next goes)
# Where the shim is loaded, each shimmed program must leave a COALESCE_STATS file.
#
# Env:  COALESCE_LIB  path of the library (default ./build/libcoalesce.so)
#       KEEP_TMP=1    keep the work directory (logs, stats) for inspection
#       SOCAT_UDP_TEST_BUDGET  seconds before the whole script gives up (default 120)
# Other COALESCE_* settings in the environment reach the shimmed processes unchanged.
# Exit: 0 pass, 1 fail, 77 skipped (socat or python3 not installed). Takes about 5 s.
# Re-run under bash when started as `sh script` (the test runner does that).
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -u
. "$(dirname "${BASH_SOURCE[0]}")/lib.bash"

LINES=5000
RELAYED=3000
T=(timeout -k 2 20)          # every socat and receiver run is bounded (a case takes < 1 s)
BUDGET=${SOCAT_UDP_TEST_BUDGET:-120}   # seconds for the whole script; the runner allows 300

app_require socat python3 timeout
app_find_lib
# the interpreter itself, not a wrapper script (pyenv's shims run several processes)
PY=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null)
[ -x "$PY" ] || { echo "skipped: python3 not installed (no usable interpreter)"; exit 77; }
HAVE_PERL=0; command -v perl >/dev/null 2>&1 && HAVE_PERL=1

BGPIDS=()
app_stop_children() {   # every receiver and socat still in the background
    local p
    for p in "${BGPIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${BGPIDS[@]}"; do wait "$p" 2>/dev/null; done
}
app_start socat_udp

# ---- the receiver -------------------------------------------------------------------------

cat > "$TMP/dgram_peer.py" <<'PY'
# dgram_peer.py MODE ...: the side of the socat_udp test without the shim.
#   lines N FILE              writes N 64-byte lines to FILE
#   recv FAMILY N READY       binds a datagram socket (FAMILY 4, 6 or a Unix socket path),
#                             writes its port (or path) to READY, receives N 64-byte lines
#   relay N READY             binds a UDP socket P2 and picks a free port P1, writes "P1 P2"
#                             to READY, waits until something binds P1, then sends N
#                             datagrams of 1..1400 bytes to P1 in groups of 50, each group
#                             received on P2 before the next is sent
# Checks every datagram in order; allows as many missing as the kernel reports dropped (the
# drops column of /proc/net/udp[6] for our socket and, when relaying, for P1). Prints one
# summary line; exits 1 (reason on stderr) at the first datagram that differs.
import os, socket, sys, time

CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
IDLE = 3.0   # seconds without a datagram before the receiver gives up


def line(i):
    return ("%07d " % i + "".join(CHARS[(i * 7 + j * 13) % 62] for j in range(55)) + "\n").encode()


def sized(i):
    n = 1 + (i * 131) % 1400
    return bytes((i * 7 + j * 31) & 0xFF for j in range(n))


def fail(msg):
    sys.stderr.write("dgram_peer: " + msg + "\n")
    sys.exit(1)


def udp_drops(ports):
    """Datagrams the kernel dropped on the UDP sockets bound to these ports."""
    total = 0
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            rows = open(name).read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            if int(f[1].split(":")[1], 16) in ports:
                total += int(f[-1])
    return total


class Checker:
    """Datagram i must equal expect(i); a gap is allowed only within the kernel's drops."""

    def __init__(self, expect, count, ports):
        self.expect, self.count, self.ports = expect, count, ports
        self.next = self.skipped = self.got = 0

    def take(self, d):
        self.got += 1
        if self.next < self.count and d == self.expect(self.next):
            self.next += 1
            return
        slack = udp_drops(self.ports) - self.skipped
        for k in range(1, slack + 1):
            if self.next + k < self.count and d == self.expect(self.next + k):
                self.skipped += k
                self.next += k + 1
                return
        want = self.expect(self.next) if self.next < self.count else b""
        fail("datagram %d (%d bytes, starts %r) is not the one expected next: number %d "
             "(%d bytes, starts %r); kernel drops: %d"
             % (self.got - 1, len(d), d[:12], self.next, len(want), want[:12],
                udp_drops(self.ports)))

    def done(self):
        """All arrived, or (asked only when nothing more comes) the rest was dropped."""
        return self.next + max(0, udp_drops(self.ports) - self.skipped) >= self.count

    def finish(self, what):
        drops = udp_drops(self.ports)
        missing = self.count - self.next
        if missing > drops - self.skipped:
            fail("%s: %d of %d datagrams missing, the kernel reports %d dropped"
                 % (what, missing, self.count, drops))
        print("%s: %d datagrams checked, %d arrived, kernel drops %d"
              % (what, self.count, self.got, drops))


def bound(family, where):
    if family == "unix":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(where)
        return s, where, []
    fam = socket.AF_INET6 if family == "6" else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)   # SO_RCVBUFFORCE (needs root)
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind(("::1" if family == "6" else "127.0.0.1", 0))
    port = s.getsockname()[1]
    return s, str(port), [port]


def announce(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text + "\n")
    os.rename(path + ".tmp", path)


def receive(s, checker, what, first_wait):
    """Until every datagram arrived, or IDLE s without one (checker.finish judges)."""
    s.settimeout(first_wait)
    while checker.next < checker.count:
        try:
            d = s.recv(70000)
        except socket.timeout:
            break
        checker.take(d)
        s.settimeout(IDLE)
    checker.finish(what)


def do_recv(family, count, ready):
    where = ready + ".sock" if family == "unix" else None
    s, name, ports = bound(family, where)
    announce(ready, name)
    receive(s, Checker(line, count, ports), "recv " + family, 10)


def wait_bound(port):
    end = time.time() + 10
    while time.time() < end:
        for name in ("/proc/net/udp", "/proc/net/udp6"):
            for row in open(name).read().splitlines()[1:]:
                if int(row.split()[1].split(":")[1], 16) == port:
                    return
        time.sleep(0.01)
    fail("nothing bound port %d within 10 s (the relay did not start)" % port)


def do_relay(count, ready):
    s, name, ports = bound("4", None)
    t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    t.bind(("127.0.0.1", 0))
    p1 = t.getsockname()[1]
    t.close()
    announce(ready, "%d %s" % (p1, name))
    wait_bound(p1)
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    checker = Checker(sized, count, ports + [p1])
    s.settimeout(IDLE)
    for start in range(0, count, 50):
        for i in range(start, min(start + 50, count)):
            out.sendto(sized(i), ("127.0.0.1", p1))
        checker.count = min(start + 50, count)
        while checker.next < checker.count:
            try:
                checker.take(s.recv(70000))
            except socket.timeout:
                if checker.done():
                    break
                fail("group at %d: %d of %d datagrams came back through the relay within %d s"
                     % (start, checker.next, checker.count, IDLE))
    checker.finish("relay")


mode = sys.argv[1]
if mode == "lines":
    with open(sys.argv[3], "wb") as f:
        for i in range(int(sys.argv[2])):
            f.write(line(i))
elif mode == "recv":
    do_recv(sys.argv[2], int(sys.argv[3]), sys.argv[4])
elif mode == "relay":
    do_relay(int(sys.argv[2]), sys.argv[3])
else:
    fail("bad mode " + mode)
PY

# perl writes the same lines as dgram_peer.py, in bursts of 1..200 records, each burst ended
# by a 1 ms select() (a wait: the shim sends what it queued)
cat > "$TMP/gen.pl" <<'PL'
my @c = ('a' .. 'z', 'A' .. 'Z', '0' .. '9');
my ($n, $i) = ($ARGV[0], 0);
srand(42);
while ($i < $n) {
    for my $k (1 .. 1 + int(rand(200))) {
        last if $i >= $n;
        my $s = sprintf("%07d ", $i) . join("", map { $c[($i * 7 + $_ * 13) % 62] } 0 .. 54) . "\n";
        syswrite(STDOUT, $s) == 64 or die "write of record $i: $!";
        $i++;
    }
    select(undef, undef, undef, 0.001);
}
PL

"$PY" "$TMP/dgram_peer.py" lines "$LINES" "$TMP/lines" || { echo "FAIL: writing the lines"; exit 1; }

# ---- helpers ------------------------------------------------------------------------------

# start_peer LOG ARGS...: starts dgram_peer.py in the background with ARGS (the last one is its
# READY file), bounded by T; sets PEER_PID and waits for READY, then sets READY_TEXT. If it does
# not come, fails the case (showing LOG) and returns 1.
start_peer() {
    local log=$1 ready=${!#}
    shift
    rm -f "$ready"
    "${T[@]}" "$PY" "$TMP/dgram_peer.py" "$@" >"$log" 2>&1 &
    PEER_PID=$!; BGPIDS+=("$PEER_PID")
    for _ in $(seq 1 200); do
        [ -f "$ready" ] && { READY_TEXT=$(cat "$ready"); return 0; }
        kill -0 "$PEER_PID" 2>/dev/null || break
        sleep 0.025
    done
    fail "$CASE: the receiver did not start"; sed 's/^/    /' "$log"; return 1
}

# finish_case SHIM TAG WHAT PEER_RC SENDER_RC LOG_PEER LOG_SENDER: both must have exited 0;
# then the shimmed program must have left its stats file
finish_case() {
    local shim=$1 tag=$2 what=$3
    if [ "$4" != 0 ] || [ "$5" != 0 ]; then
        fail "$CASE: receiver exit $4, $what exit $5"
        tail -n 5 "$6" "$7" | sed 's/^/    /'
        return 1
    fi
    if [ "$shim" = 1 ]; then
        check_stats "$tag" "$what" 0 || return 1
        STATS_NOTE="$STATS_NOTE [dgrams_queued=$(stat_sum "$tag" dgrams_queued)"
        STATS_NOTE="$STATS_NOTE dgram_flush_sendmmsg=$(stat_sum "$tag" dgram_flush_sendmmsg)"
        STATS_NOTE="$STATS_NOTE dgram_flush_gso=$(stat_sum "$tag" dgram_flush_gso)]"
    fi
    return 0
}

wait_peer() {   # waits for the receiver; returns its exit code
    local rc
    wait "$PEER_PID"; rc=$?
    BGPIDS=("${BGPIDS[@]/$PEER_PID}")
    return $rc
}

# ---- cases --------------------------------------------------------------------------------

# file_case FAMILY SHIM: socat reads the lines file 64 bytes at a time, one datagram per read
file_case() {
    local fam=$1 shim=$2 name="file-$1-s$2" dest src prc
    local log=$TMP/log.$name
    CASE="$name"; STATS_NOTE=""
    start_peer "$log.peer" recv "$fam" "$LINES" "$TMP/ready.$name" || return
    case "$fam" in
    4) dest="UDP4-SENDTO:127.0.0.1:$READY_TEXT" ;;
    6) dest="UDP6-SENDTO:[::1]:$READY_TEXT" ;;
    *) dest="UNIX-SENDTO:$READY_TEXT" ;;
    esac
    set_env "$shim" "$name"
    "${T[@]}" "${ENVCMD[@]}" socat -u -b64 - "$dest" <"$TMP/lines" 2>"$log.socat"
    src=$?
    wait_peer; prc=$?
    finish_case "$shim" "$name" socat "$prc" "$src" "$log.peer" "$log.socat" || return
    pass "$CASE ($(tail -n1 "$log.peer"))$STATS_NOTE"
}

# perl_case SHIM: perl, exec'd by socat with the connected UDP socket as its stdout
perl_case() {
    local shim=$1 name="perl-udp4-s$1" src prc q
    local log=$TMP/log.$name
    CASE="$name"; STATS_NOTE=""
    start_peer "$log.peer" recv 4 "$LINES" "$TMP/ready.$name" || return
    set_env "$shim" "$name"
    "${T[@]}" "${ENVCMD[@]}" socat "UDP4-CONNECT:127.0.0.1:$READY_TEXT" \
        "EXEC:perl $TMP/gen.pl $LINES,nofork" 2>"$log.socat"
    src=$?
    wait_peer; prc=$?
    finish_case "$shim" "$name" "socat+perl" "$prc" "$src" "$log.peer" "$log.socat" || return
    if [ "$shim" = 1 ]; then
        # back-to-back 64-byte datagrams are what datagram coalescing is for
        q=$(stat_sum "$name" dgrams_queued)
        if [ "$q" -le 0 ]; then
            fail "$CASE: the shim in perl queued none of its back-to-back datagrams (dgrams_queued=$q)"
            return
        fi
    fi
    pass "$CASE ($(tail -n1 "$log.peer"))$STATS_NOTE"
}

# relay_case SHIM: socat relays from UDP-RECV to UDP-SENDTO; it ends 2 s after the last datagram
relay_case() {
    local shim=$1 name="relay-udp4-s$1" src prc p1 p2
    local log=$TMP/log.$name
    CASE="$name"; STATS_NOTE=""
    start_peer "$log.peer" relay "$RELAYED" "$TMP/ready.$name" || return
    read -r p1 p2 <<<"$READY_TEXT"
    set_env "$shim" "$name"
    "${T[@]}" "${ENVCMD[@]}" socat -u -T 2 "UDP4-RECV:$p1,bind=127.0.0.1" \
        "UDP4-SENDTO:127.0.0.1:$p2" 2>"$log.socat"
    src=$?
    wait_peer; prc=$?
    finish_case "$shim" "$name" socat "$prc" "$src" "$log.peer" "$log.socat" || return
    pass "$CASE ($(tail -n1 "$log.peer"))$STATS_NOTE"
}

# ---- run ----------------------------------------------------------------------------------

echo "socat: $(socat -V 2>/dev/null | sed -n 's/^socat version \([^ ]*\).*/\1/p'), library: $LIB"
HAVE6=0
"$PY" -c 'import socket; socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).bind(("::1", 0))' \
    2>/dev/null && HAVE6=1
for shim in 0 1; do
    file_case 4 "$shim"
    if [ $HAVE6 = 1 ]; then file_case 6 "$shim"; else echo "skip: file-6-s$shim (no IPv6 loopback)"; fi
    file_case unix "$shim"
    if [ $HAVE_PERL = 1 ]; then perl_case "$shim"; else echo "skip: perl-udp4-s$shim (perl not installed)"; fi
    relay_case "$shim"
done
app_finish
