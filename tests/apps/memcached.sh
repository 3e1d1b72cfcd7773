#!/usr/bin/env bash
# Real-application regression test: memcached under the coalesce shim.
#
# The same scenario runs in four variants and every variant's transcript must equal the run
# without the shim:
#   plain    no shim anywhere (baseline; its client also checks every reply against the
#            replies memcached must give)
#   server   shim in memcached only
#   client   shim in the clients only (python3, memccapable, memcaslap)
#   both     shim in server and clients
# The scenario, against a fresh `memcached -p PORT -U 0 -l 127.0.0.1` on a free loopback port:
#   1. basic    text protocol, one command at a time, each command sent as several small
#               writes: set/add/replace/append/prepend/gets/cas/incr/decr/touch/delete,
#               noreply, meta commands (ms/mg/md/mn), 32-bit flags, a 256-byte binary value
#               holding every byte value, a 512 KiB value, an unknown command, quit
#   2. pipe     5,000 random set/get/delete/incr commands (binary-safe values of 0..300
#               bytes) written piece by piece by one thread while another reads every reply;
#               then 5,000 more written in one go (one large write)
#   3. multiget 2,000 `set ... noreply` then `mn`, one `get` of 2,100 keys (100 missing),
#               and 40 pipelined `get`s of 50 keys each
#   4. binary   memcached's binary protocol: set/get/miss/incr/delete, then 2,000 quiet sets
#               (SETQ) sent as 4 small writes each + NOOP, and 2,200 quiet gets (GETKQ, 200
#               misses) + NOOP: exactly the 2,000 hits must come back, in order
#   5. conc     32 connections at once, each pipelining 300 commands from its own thread
#   6. stats    memcached's own counters (cmd_get, get_hits, curr_items...) after 1-5
#   7. memccapable (libmemcached-tools): memcached's ascii and binary conformance tests
#   8. memcaslap (libmemcached-tools): 20,000 operations from 32 concurrent connections,
#      ascii and binary protocol, every get verified (-v 1); its counts (not its timings)
#      go into the transcript
# Steps 7 and 8 are skipped (the steps, not the script) when libmemcached-tools is missing.
# The python3 client (written to the work directory) compares every reply with the expected
# bytes and exits 1 at the first difference; the transcript holds the replies (or their
# sha256), so every variant must also equal the baseline byte for byte.
# Where the shim is loaded, each shimmed program must leave a COALESCE_STATS file and must
# have handled socket writes.
#
# Env:  COALESCE_LIB  path of the library (default ./build/libcoalesce.so)
#       KEEP_TMP=1    keep the work directory (transcripts, logs, stats) for inspection
#       MEMCACHED_TEST_BUDGET  seconds before the whole script gives up (default 200)
# Other COALESCE_* settings in the environment reach the shimmed processes unchanged.
# Exit: 0 pass, 1 fail, 77 skipped (memcached or python3 missing). Takes about 15 s.
# Re-run under bash when started as `sh script` (the test runner does that).
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -u
. "$(dirname "${BASH_SOURCE[0]}")/lib.bash"

# memcached lives in /usr/bin, but look in the sbin directories too (not on a user's PATH)
PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
app_require memcached python3 timeout sha256sum
app_find_lib
# the interpreter itself, not a wrapper script (pyenv's shims run several processes)
PY=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null)
[ -x "$PY" ] || { echo "skipped: python3 not installed (no usable interpreter)"; exit 77; }
HAVE_CAPABLE=0; command -v memccapable >/dev/null 2>&1 && HAVE_CAPABLE=1
HAVE_SLAP=0; command -v memcaslap >/dev/null 2>&1 && HAVE_SLAP=1

SPID=""
PORT=""
BUDGET=${MEMCACHED_TEST_BUDGET:-200}   # seconds for the whole script; the runner allows 300
app_stop_children() {   # the server, if one is still running
    if [ -n "$SPID" ]; then
        kill "$SPID" 2>/dev/null
        wait "$SPID" 2>/dev/null
    fi
}
app_start memcached

# ---- the client ---------------------------------------------------------------------------

cat > "$TMP/mc_client.py" <<'PY'
# mc_client.py PORT MODE: one step of the memcached test. Prints a transcript on stdout;
# exits 1 (reason on stderr) at the first reply that differs from what memcached must send.
# (total_items is not compared: whether incr rewrites an item in place depends on timing.)
import hashlib, random, socket, struct, sys, threading

PORT = int(sys.argv[1])
MODE = sys.argv[2]
TIMEOUT = 20   # seconds for any one reply (a loaded machine can be very slow)


class Fail(Exception):
    pass


def sha(b):
    return hashlib.sha256(b).hexdigest()


def short(b, n=120):
    r = repr(bytes(b))
    return r if len(r) <= n else r[:n] + "...(%d bytes)" % len(b)


class Conn:
    def __init__(self):
        self.s = socket.create_connection(("127.0.0.1", PORT), timeout=TIMEOUT)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def send(self, *pieces):   # one sendall per piece: many small writes
        for p in pieces:
            self.s.sendall(p)

    def fill(self, n):
        while len(self.buf) < n:
            try:
                d = self.s.recv(262144)
            except socket.timeout:
                raise Fail("no reply within %d s (have %d of %d bytes: %s)"
                           % (TIMEOUT, len(self.buf), n, short(self.buf)))
            if not d:
                raise Fail("connection closed (have %d of %d bytes: %s)" % (len(self.buf), n, short(self.buf)))
            self.buf += d

    def read(self, n):
        self.fill(n)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def readline(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                return self.read(i + 2)
            self.fill(len(self.buf) + 1)

    def expect(self, want, what):
        got = self.read(len(want))
        if got != want:
            raise Fail("%s: expected %s, got %s" % (what, short(want), short(got)))
        return got

    def expect_eof(self, what):
        try:
            d = self.s.recv(65536)
        except socket.timeout:
            raise Fail("%s: connection not closed within %d s" % (what, TIMEOUT))
        if self.buf or d:
            raise Fail("%s: unexpected bytes %s" % (what, short(bytes(self.buf) + d)))

    def close(self):
        self.s.close()


def store(cmd, key, flags, data, extra=b""):   # the pieces of a storage command
    return [b"%s %s %d 0 %d%s" % (cmd, key, flags, len(data), extra), b"\r\n", data, b"\r\n"]


def value(key, flags, data):
    return b"VALUE %s %d %d\r\n%s\r\nEND\r\n" % (key, flags, len(data), data)


# ---- 1. basic -----------------------------------------------------------------------------

def basic():
    c = Conn()
    rnd = random.Random(11)
    allbytes = bytes(range(256))
    big = rnd.randbytes(524288)
    steps = [
        (store(b"set", b"k1", 0, b"hello"), b"STORED\r\n"),
        ([b"get k1", b"\r\n"], value(b"k1", 0, b"hello")),
        (store(b"add", b"k1", 0, b"x"), b"NOT_STORED\r\n"),
        (store(b"add", b"k2", 7, b"abc"), b"STORED\r\n"),
        (store(b"replace", b"k3", 0, b"x"), b"NOT_STORED\r\n"),
        (store(b"replace", b"k2", 9, b"abcd"), b"STORED\r\n"),
        (store(b"append", b"k1", 0, b"world!"), b"STORED\r\n"),
        (store(b"prepend", b"k1", 0, b">>"), b"STORED\r\n"),
        ([b"get k1 k2 k3\r\n"], b"VALUE k1 0 13\r\n>>helloworld!\r\nVALUE k2 9 4\r\nabcd\r\nEND\r\n"),
        ("cas", None),
        (store(b"cas", b"nokey", 0, b"x", b" 1"), b"NOT_FOUND\r\n"),
        (store(b"set", b"bin", 4294967295, allbytes), b"STORED\r\n"),
        ([b"get bin\r\n"], value(b"bin", 4294967295, allbytes)),
        (store(b"set", b"big", 3, big), b"STORED\r\n"),
        ([b"get big\r\n"], value(b"big", 3, big)),
        (store(b"set", b"ctr", 0, b"10"), b"STORED\r\n"),
        ([b"incr ctr 5\r\n"], b"15\r\n"),
        ([b"incr ctr 18446744073709551600\r\n"], b"18446744073709551615\r\n"),
        ([b"incr ctr 1\r\n"], b"0\r\n"),
        ([b"incr ctr 100\r\n"], b"100\r\n"),
        ([b"decr ctr 1000\r\n"], b"0\r\n"),
        ([b"incr nokey 1\r\n"], b"NOT_FOUND\r\n"),
        ([b"incr k1 1\r\n"], b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"),
        ([b"touch k2 1000\r\n"], b"TOUCHED\r\n"),
        ([b"touch nokey 1\r\n"], b"NOT_FOUND\r\n"),
        ([b"delete k2\r\n"], b"DELETED\r\n"),
        ([b"delete k2\r\n"], b"NOT_FOUND\r\n"),
        ([b"get k2\r\n"], b"END\r\n"),
        (store(b"set", b"q", 0, b"z", b" noreply"), b""),
        ([b"get q\r\n"], value(b"q", 0, b"z")),
        ([b"ms mk 2\r\n", b"hi\r\n"], b"HD\r\n"),
        ([b"mg mk v\r\n"], b"VA 2\r\nhi\r\n"),
        ([b"md mk\r\n"], b"HD\r\n"),
        ([b"mg mk v\r\n"], b"EN\r\n"),
        ([b"mn\r\n"], b"MN\r\n"),
        ([b"bogus command\r\n"], b"ERROR\r\n"),
        ([b"k" * 250 + b" ignored\r\n"], b"ERROR\r\n"),
        (store(b"set", b"K" * 250, 1, b"longkey"), b"STORED\r\n"),
        ([b"get " + b"K" * 250 + b"\r\n"], value(b"K" * 250, 1, b"longkey")),
    ]
    n = 0
    for pieces, want in steps:
        n += 1
        if pieces == "cas":
            # the cas unique is not known in advance: read it, then use it (good and stale)
            c.send(b"gets k1\r\n")
            line = c.readline()
            f = line.split()
            if len(f) != 5 or f[:4] != [b"VALUE", b"k1", b"0", b"13"]:
                raise Fail("gets k1: unexpected header %s" % short(line))
            c.expect(b">>helloworld!\r\nEND\r\n", "gets k1 data")
            print("step %d gets: VALUE k1 0 13 <cas>" % n)
            cas = f[4]
            c.send(*store(b"cas", b"k1", 0, b"new", b" " + cas))
            c.expect(b"STORED\r\n", "cas with the current unique")
            c.send(*store(b"cas", b"k1", 0, b"old", b" " + cas))
            c.expect(b"EXISTS\r\n", "cas with a stale unique")
            c.send(b"get k1\r\n")
            c.expect(value(b"k1", 0, b"new"), "get after cas")
            print("step %d cas: STORED EXISTS new" % n)
            continue
        c.send(*pieces)
        got = c.expect(want, "basic step %d (%s)" % (n, short(b"".join(pieces)[:60], 70)))
        print("step %d %s -> %s%s" % (n, short(pieces[0], 50), short(got, 70),
                                      " sha256 %s" % sha(got) if len(got) > 100 else ""))
    c.send(b"quit\r\n")
    c.expect_eof("quit")
    c.close()
    print("basic: %d steps, every reply as expected" % n)


# ---- 2. pipelines ----------------------------------------------------------------------------

def make_pipeline(prefix, n, seed):
    """n random commands on keys prefix:*, with the replies a memcached must give."""
    rnd = random.Random(seed)
    model = {}
    cmds, replies = [], []
    for j in range(10):   # counters
        k = b"%s:c%d" % (prefix, j)
        cmds.append(store(b"set", k, 0, b"0"))
        replies.append(b"STORED\r\n")
        model[k] = (0, b"0")
    for i in range(n - 10):
        r = rnd.random()
        if r < 0.4:
            k = b"%s:%d" % (prefix, rnd.randrange(400))
            v = rnd.randbytes(rnd.randrange(301))
            fl = rnd.randrange(1 << 16)
            cmds.append(store(b"set", k, fl, v))
            replies.append(b"STORED\r\n")
            model[k] = (fl, v)
        elif r < 0.75:
            k = b"%s:%d" % (prefix, rnd.randrange(450)) if r < 0.7 else b"%s:c%d" % (prefix, rnd.randrange(10))
            cmds.append([b"get ", k, b"\r\n"])
            replies.append(value(k, *model[k]) if k in model else b"END\r\n")
        elif r < 0.85:
            k = b"%s:%d" % (prefix, rnd.randrange(450))
            cmds.append([b"delete ", k, b"\r\n"])
            replies.append(b"DELETED\r\n" if k in model else b"NOT_FOUND\r\n")
            model.pop(k, None)
        else:
            k = b"%s:c%d" % (prefix, rnd.randrange(10))
            d = rnd.randrange(1, 1000000)
            nv = int(model[k][1]) + d
            cmds.append([b"incr ", k, b" %d\r\n" % d])
            replies.append(b"%d\r\n" % nv)
            model[k] = (0, b"%d" % nv)
    return cmds, replies


def run_pipeline(c, cmds, replies, what, one_go=False):
    """one thread writes every command (piece by piece, or all in one write) while this one
    reads; every reply must be the expected one."""
    err = []

    def writer():
        try:
            if one_go:
                c.send(b"".join(b"".join(p) for p in cmds))
            else:
                for p in cmds:
                    c.send(*p)
        except Exception as e:
            err.append(e)

    t = threading.Thread(target=writer)
    t.start()
    h = hashlib.sha256()
    total = 0
    try:
        for i, want in enumerate(replies):
            h.update(c.expect(want, "%s: reply %d of %d" % (what, i + 1, len(replies))))
            total += len(want)
    finally:
        t.join(TIMEOUT + 5)
    if err:
        raise Fail("%s: writer: %r" % (what, err[0]))
    return "%d commands, %d reply bytes, sha256 %s" % (len(cmds), total, h.hexdigest())


def pipe():
    cmds, replies = make_pipeline(b"p", 5000, 22)
    c = Conn()
    print("pipeline, piece by piece: " + run_pipeline(c, cmds, replies, "pipeline"))
    cmds, replies = make_pipeline(b"o", 5000, 33)
    print("pipeline, one write: " + run_pipeline(c, cmds, replies, "one-go pipeline", one_go=True))
    c.send(b"quit\r\n")
    c.expect_eof("quit")
    c.close()


# ---- 3. multi-get ---------------------------------------------------------------------------

def multiget():
    rnd = random.Random(44)
    model = {}
    c = Conn()
    for i in range(2000):
        k = b"m:%d" % i
        v = rnd.randbytes(rnd.randrange(201))
        model[k] = v
        c.send(*store(b"set", k, i, v, b" noreply"))
    c.send(b"mn\r\n")
    c.expect(b"MN\r\n", "mn after 2000 noreply sets")
    keys = [b"m:%d" % i for i in range(2100)]
    rnd.shuffle(keys)

    def reply(ks):
        return b"".join(b"VALUE %s %d %d\r\n%s\r\n" % (k, int(k[2:]), len(model[k]), model[k])
                        for k in ks if k in model) + b"END\r\n"

    want = reply(keys)
    c.send(b"get", b"".join(b" " + k for k in keys), b"\r\n")
    got = c.expect(want, "get of 2100 keys")
    print("multiget 2100 keys: %d bytes, sha256 %s" % (len(got), sha(got)))
    cmds, replies = [], []
    for j in range(40):
        ks = rnd.sample(keys, 50)
        cmds.append([b"get"] + [b" " + k for k in ks] + [b"\r\n"])
        replies.append(reply(ks))
    print("40 pipelined gets of 50 keys: " + run_pipeline(c, cmds, replies, "multi-get pipeline"))
    c.close()


# ---- 4. binary protocol -----------------------------------------------------------------------

REQ = struct.Struct(">BBHBBHIIQ")   # magic opcode keylen extlen datatype vbucket bodylen opaque cas
GET, SET, DELETE, INCR, NOOP, GETK, GETKQ, SETQ = 0x00, 0x01, 0x04, 0x05, 0x0A, 0x0C, 0x0D, 0x11


def breq(op, key=b"", extras=b"", val=b"", opaque=0):   # the request as 4 small pieces
    return [REQ.pack(0x80, op, len(key), len(extras), 0, 0, len(key) + len(extras) + len(val), opaque, 0),
            extras, key, val]


def bresp(c, what):
    h = c.read(24)
    magic, op, klen, elen, dt, status, blen, opaque, cas = REQ.unpack(h)
    if magic != 0x81:
        raise Fail("%s: bad response magic 0x%02x (header %s)" % (what, magic, short(h)))
    body = c.read(blen)
    return op, status, opaque, body[:elen], body[elen:elen + klen], body[elen + klen:]


def bexpect(c, what, op, status, opaque=0, extras=b"", key=b"", val=None):
    got = bresp(c, what)
    want = (op, status, opaque, extras, key)
    if got[:5] != want or (val is not None and got[5] != val):
        raise Fail("%s: expected op/status/opaque/extras/key %r value %s, got %r value %s"
                   % (what, want, short(val or b""), got[:5], short(got[5])))
    return got


def binary():
    c = Conn()
    out = []
    c.send(*breq(SET, b"b:1", struct.pack(">II", 0xDEADBEEF, 0), b"hello", 1))
    bexpect(c, "set", SET, 0, 1)
    c.send(*breq(GET, b"b:1", opaque=2))
    bexpect(c, "get", GET, 0, 2, struct.pack(">I", 0xDEADBEEF), b"", b"hello")
    c.send(*breq(GETK, b"b:1", opaque=3))
    bexpect(c, "getk", GETK, 0, 3, struct.pack(">I", 0xDEADBEEF), b"b:1", b"hello")
    c.send(*breq(GET, b"b:none", opaque=4))
    r = bexpect(c, "get miss", GET, 1, 4)
    out.append("get miss: status 1 %r" % r[5])
    c.send(*breq(INCR, b"b:ctr", struct.pack(">QQI", 5, 100, 0), opaque=5))
    bexpect(c, "incr (create)", INCR, 0, 5, b"", b"", struct.pack(">Q", 100))
    c.send(*breq(INCR, b"b:ctr", struct.pack(">QQI", 5, 100, 0), opaque=6))
    bexpect(c, "incr", INCR, 0, 6, b"", b"", struct.pack(">Q", 105))
    c.send(*breq(DELETE, b"b:1", opaque=7))
    bexpect(c, "delete", DELETE, 0, 7)
    c.send(*breq(DELETE, b"b:1", opaque=8))
    bexpect(c, "delete again", DELETE, 1, 8)
    out.append("set/get/getk/miss/incr/delete: as expected")

    rnd = random.Random(55)
    model = {}
    for i in range(2000):
        k = b"b:q:%d" % i
        v = rnd.randbytes(rnd.randrange(501))
        model[k] = v
        c.send(*breq(SETQ, k, struct.pack(">II", i, 0), v, 1000 + i))
    c.send(*breq(NOOP, opaque=9))
    bexpect(c, "noop after 2000 SETQ (a quiet set failed?)", NOOP, 0, 9)
    keys = [b"b:q:%d" % i for i in range(2200)]
    rnd.shuffle(keys)
    err = []

    def writer():
        try:
            for j, k in enumerate(keys):
                c.send(*breq(GETKQ, k, opaque=j))
            c.send(*breq(NOOP, opaque=10))
        except Exception as e:
            err.append(e)

    t = threading.Thread(target=writer)
    t.start()
    h = hashlib.sha256()
    hits = 0
    try:
        for j, k in enumerate(keys):
            if k not in model:
                continue
            i = int(k[4:])
            r = bexpect(c, "getkq %d (%s)" % (j, k.decode()), GETKQ, 0, j, struct.pack(">I", i), k, model[k])
            h.update(r[4] + r[5])
            hits += 1
        bexpect(c, "noop after 2200 GETKQ", NOOP, 0, 10)
    finally:
        t.join(TIMEOUT + 5)
    if err:
        raise Fail("binary writer: %r" % err[0])
    out.append("2000 SETQ + NOOP, 2200 GETKQ + NOOP: %d hits in order, sha256 %s" % (hits, h.hexdigest()))
    c.close()
    for l in out:
        print("binary: " + l)


# ---- 5. concurrent connections -------------------------------------------------------------

def conc():
    res = [None] * 32

    def one(j):
        try:
            cmds, replies = make_pipeline(b"t%d" % j, 300, 100 + j)
            c = Conn()
            res[j] = run_pipeline(c, cmds, replies, "connection %d" % j)
            c.close()
        except Exception as e:
            res[j] = e

    ts = [threading.Thread(target=one, args=(j,)) for j in range(32)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(3 * TIMEOUT)
    for j, r in enumerate(res):
        if not isinstance(r, str):
            raise Fail("concurrent connection %d: %r" % (j, r))
        print("conc %d: %s" % (j, r))


# ---- 6. memcached's counters ------------------------------------------------------------------

def stats():
    keys = ("cmd_get cmd_set cmd_touch get_hits get_misses get_expired delete_misses delete_hits "
            "incr_misses incr_hits decr_misses decr_hits cas_misses cas_hits cas_badval "
            "touch_hits touch_misses curr_items").split()
    c = Conn()
    c.send(b"stats\r\n")
    st = {}
    while True:
        line = c.readline()
        if line == b"END\r\n":
            break
        f = line.split()
        if len(f) != 3 or f[0] != b"STAT":
            raise Fail("stats: unexpected line %s" % short(line))
        st[f[1].decode()] = f[2].decode()
    c.close()
    for k in keys:
        print("stat %s %s" % (k, st.get(k, "(missing)")))


try:
    {"basic": basic, "pipe": pipe, "multiget": multiget, "binary": binary, "conc": conc,
     "stats": stats}[MODE]()
except Fail as e:
    print("FAILED: %s" % e)
    print("%s: %s" % (MODE, e), file=sys.stderr)
    sys.exit(1)
sys.stdout.flush()
PY

# ---- helpers ------------------------------------------------------------------------------

# Every client command is bounded. The first one that times out marks the variant as hung:
# the variant's remaining client commands are skipped (so a shim that never flushes costs one
# time-out per variant, not one per command). One second before the time-out, the state of
# the server's connections (ss: queues, timers) is saved and shown if the command does time
# out: bytes a client waits for that are in no socket queue were kept by a shim.
HUNG=""
exec {LOG_FD}>&1
bounded() {   # bounded SECONDS CMD...
    local secs=$1 rc snap
    if [ -n "$HUNG" ]; then return 124; fi
    rm -f "$TMP/hang.ss"
    ( trap 'kill $sp 2>/dev/null; exit 0' TERM; sleep $((secs - 1)) & sp=$!; wait $sp
      ss -tnoi "( sport = :$PORT or dport = :$PORT )" > "$TMP/hang.ss" 2>&1 ) </dev/null >/dev/null 2>&1 &
    snap=$!
    timeout -k 2 "$@"; rc=$?
    kill "$snap" 2>/dev/null; wait "$snap" 2>/dev/null
    if [ $rc = 124 ] || [ $rc = 137 ]; then
        HUNG="timed out: ${*:2}"
        {
            echo "    $VARIANT: $HUNG"
            if [ -s "$TMP/hang.ss" ]; then
                echo "    connections to port $PORT one second before the time-out (ss -tnoi):"
                head -n 80 "$TMP/hang.ss" | sed 's/^/      /'
            fi
        } >&"$LOG_FD"   # the script's output, not the command's
    fi
    return $rc
}

probe() {   # probe: memcached answers `version` (no shim; bash /dev/tcp)
    timeout -k 1 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf "version\r\n" >&3; IFS= read -r -t 1 l <&3; case $l in VERSION*) exit 0;; esac; exit 1' \
        _ "$PORT" 2>/dev/null
}

start_server() {   # start_server SHIM: up to 3 tries (another process may take the port)
    local try log deadline user=()
    [ "$(id -u)" = 0 ] && user=(-u root)   # memcached refuses to run as root without -u
    for try in 1 2 3; do
        PORT=$(free_port) || return 1
        log=$TMP/server.$VARIANT.log
        set_env "$1" "$VARIANT.server"
        timeout -k 5 "$BUDGET" "${ENVCMD[@]}" memcached -p "$PORT" -U 0 -l 127.0.0.1 \
            "${user[@]}" -m 64 -t 4 -c 1024 >"$log" 2>&1 &
        SPID=$!
        deadline=$((SECONDS + 10))
        while [ $SECONDS -lt $deadline ]; do
            probe && return 0
            kill -0 "$SPID" 2>/dev/null || break
            sleep 0.05
        done
        if kill -0 "$SPID" 2>/dev/null; then
            echo "    memcached runs but does not answer within 10 s"
            kill "$SPID" 2>/dev/null; wait "$SPID" 2>/dev/null; SPID=""
            return 1
        fi
        wait "$SPID" 2>/dev/null; SPID=""
    done
    echo "    memcached did not start; log:"; sed 's/^/    /' "$log"
    return 1
}

stop_server() {   # SIGTERM: memcached leaves its event loop and exits (the shim writes its stats)
    local deadline rc
    [ -n "$SPID" ] || return 0
    kill -TERM "$SPID" 2>/dev/null
    deadline=$((SECONDS + 5))
    while [ $SECONDS -lt $deadline ] && kill -0 "$SPID" 2>/dev/null; do sleep 0.05; done
    if kill -0 "$SPID" 2>/dev/null; then
        fail "$VARIANT: memcached did not exit within 5 s of SIGTERM"
        kill -KILL "$SPID" 2>/dev/null
    fi
    wait "$SPID" 2>/dev/null; rc=$?
    SPID=""
    return $rc
}

# ---- one variant ----------------------------------------------------------------------------

run_variant() {   # run_variant NAME SERVER_SHIM CLIENT_SHIM
    VARIANT=$1; local sshim=$2 cshim=$3; HUNG=""
    local tr=$TMP/transcript.$VARIANT rc bad=0 t0 mode out proto args
    t0=$(date +%s%N)
    : > "$tr"
    if ! start_server "$sshim"; then fail "$VARIANT: memcached did not start"; return; fi

    # 1-6: the python3 client, one process per step
    for mode in basic pipe multiget binary conc stats; do
        set_env "$cshim" "$VARIANT.py"
        echo "## $mode" >> "$tr"
        bounded 60 "${ENVCMD[@]}" "$PY" "$TMP/mc_client.py" "$PORT" "$mode" \
            >> "$tr" 2> "$TMP/py.$VARIANT.$mode.err"
        rc=$?
        if [ $rc != 0 ]; then
            fail "$VARIANT: $mode exited $rc: $(head -c 600 "$TMP/py.$VARIANT.$mode.err" | tr '\n' ' ')"
            bad=1
        fi
        echo "exit $rc" >> "$tr"
    done

    # 7. memcached's conformance tests (they flush the server)
    if [ $HAVE_CAPABLE = 1 ]; then
        set_env "$cshim" "$VARIANT.capable"
        bounded 60 "${ENVCMD[@]}" memccapable -h 127.0.0.1 -p "$PORT" -t 10 \
            > "$TMP/capable.$VARIANT.out" 2>&1
        rc=$?
        if [ $rc != 0 ] || ! grep -q "^All tests passed" "$TMP/capable.$VARIANT.out"; then
            fail "$VARIANT: memccapable exited $rc: $(grep -v '\[pass\]' "$TMP/capable.$VARIANT.out" | head -n 5 | tr '\n' ' ')"
            bad=1
        fi
        { echo "## memccapable"; cat "$TMP/capable.$VARIANT.out"; echo "exit $rc"; } >> "$tr"
    fi

    # 8. load, ascii and binary protocol, every get verified
    if [ $HAVE_SLAP = 1 ]; then
        for proto in ascii binary; do
            args=(-s "127.0.0.1:$PORT" -x 20000 -T 2 -c 32 -v 1)
            [ $proto = binary ] && args+=(-B)
            set_env "$cshim" "$VARIANT.slap"
            bounded 60 "${ENVCMD[@]}" memcaslap "${args[@]}" > "$TMP/slap.$VARIANT.$proto" 2>&1
            rc=$?
            out=$TMP/slap.$VARIANT.$proto
            local ops ver
            ops=$(awk '/^cmd_get:/ { g = $2 } /^cmd_set:/ { s = $2 } END { print g + s }' "$out")
            ver=$(awk '/^verify_failed:/ { f = $2 } END { print (f == "" ? "none" : f) }' "$out")
            if [ $rc != 0 ] || [ "$ops" != 20000 ] || [ "$ver" != 0 ]; then
                fail "$VARIANT: memcaslap $proto exited $rc, $ops operations (want 20000), verify_failed $ver"
                tail -n 8 "$out" | sed 's/^/    /'
                bad=1
            fi
            echo "    memcaslap $proto: $(grep -E '^(Run time|get_misses|verify_misses)' "$out" | tr '\n' ' ')"
            { echo "## memcaslap $proto"; echo "exit $rc ops $ops verify_failed $ver"; } >> "$tr"
        done
    fi

    stop_server; rc=$?
    [ $rc = 0 ] || { fail "$VARIANT: memcached exited $rc; log: $(tail -n 3 "$TMP/server.$VARIANT.log" | tr '\n' ' ')"; bad=1; }
    if [ -n "$HUNG" ]; then fail "$VARIANT: a client command hung ($HUNG); later steps skipped"; bad=1; fi
    local ms=$(( ($(date +%s%N) - t0) / 1000000 ))

    # the shim must have been active where it was loaded
    local p pname
    CASE=$VARIANT; STATS_NOTE=""
    for p in server py capable slap; do
        case $p in
            server)  [ "$sshim" = 1 ] || continue; pname=memcached ;;
            py)      [ "$cshim" = 1 ] || continue; pname=python3 ;;
            capable) [ "$cshim" = 1 ] && [ $HAVE_CAPABLE = 1 ] || continue; pname=memccapable ;;
            slap)    [ "$cshim" = 1 ] && [ $HAVE_SLAP = 1 ] || continue; pname=memcaslap ;;
        esac
        check_stats "$VARIANT.$p" "$pname" 1 || bad=1
    done

    if [ "$VARIANT" = plain ]; then
        # the python client checked every reply; the baseline must also hold these lines
        local e
        for e in "^basic: [0-9]* steps, every reply as expected$" "^stat curr_items [1-9]" \
                 "^pipeline, one write: 5000 commands" "^multiget 2100 keys" \
                 "^binary: 2000 SETQ .*: 2000 hits in order" "^conc 31: 300 commands"; do
            if ! grep -q -- "$e" "$tr"; then fail "plain: baseline transcript lacks /$e/"; bad=1; fi
        done
    elif ! diff -u "$TMP/transcript.plain" "$tr" > "$TMP/diff.$VARIANT"; then
        fail "$VARIANT: results differ from the run without the shim:"
        sed 's/^/    /' "$TMP/diff.$VARIANT" | head -n 40
        bad=1
    fi
    [ $bad = 0 ] && pass "$VARIANT: transcript equal to baseline ($(wc -l < "$tr") lines, ${ms} ms)$STATS_NOTE"
}

echo "memcached: $(memcached -V 2>/dev/null | awk '{print $2}'), python: $("$PY" -V 2>&1 | awk '{print $2}'), library: $LIB"
[ $HAVE_CAPABLE = 1 ] || echo "skip: memccapable (libmemcached-tools not installed)"
[ $HAVE_SLAP = 1 ] || echo "skip: memcaslap load (libmemcached-tools not installed)"
run_variant plain 0 0
run_variant server 1 0
run_variant client 0 1
run_variant both 1 1
app_finish
