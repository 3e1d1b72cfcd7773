# Server and client of tests/apps/python_asyncio.sh (not a test by itself).
#
#   asyncio_peer.py server streams|protocol PORTFILE
#       serves on 127.0.0.1 (a port chosen by the kernel, written to PORTFILE once listening)
#       until SIGTERM, then exits 0 (normally, so that the shim writes its stats file).
#       Requests are lines:
#         REQ I N      reply: "RSP I " + N pieces + "\n", each piece its own write
#                      (streams: writer.write of each piece, then await writer.drain();
#                      protocol: transport.write of each piece)
#         CLOSE I SIZE reply: SIZE bytes in pieces of 1..3000 bytes, each its own write, then
#                      close at once (streams: writer.close(); protocol: transport.close()),
#                      without waiting for anything
#   asyncio_peer.py client MODE PORT
#       pipeline   streams client: 5,000 pipelined REQs (one write each), every reply checked
#       protocol   asyncio.Protocol client: the same through transport.write/data_received
#       close      the CLOSE case for 40 sizes (0 B .. 3 MiB), 8 connections at a time, and
#                  with 50 REQs pipelined before the CLOSE in one write: every byte, then EOF
#       many       200 concurrent connections, each pipelining 50 REQs
#   The client prints a transcript (counts and sha256 of what it received) and exits 1, the
#   reason on stderr, at the first byte that differs from what the server must send.
import asyncio
import hashlib
import os
import random
import signal
import sys

TIMEOUT = 40   # whole client run


def piece(i, j):
    """the j-th piece of the reply to REQ i: 1..40 printable bytes"""
    n = 1 + (i * 7 + j * 13) % 40
    c = 33 + (i + j) % 90
    return bytes([c]) * (n - 1) + b","


def reply(i, n):
    return [b"RSP %d " % i] + [piece(i, j) for j in range(n)] + [b"\n"]


def close_pieces(i, size):
    """SIZE deterministic bytes (all byte values, newlines included) in pieces of 1..3000"""
    rnd = random.Random(i * 1000003 + size)
    data = rnd.randbytes(size)
    out, pos = [], 0
    while pos < size:
        k = min(size - pos, rnd.choice((1, 2, 3, 10, 100, 700, 3000)))
        out.append(data[pos:pos + k])
        pos += k
    return out


def n_pieces(i):
    return 1 + i % 7


def request(i):
    return b"REQ %d %d\n" % (i, n_pieces(i))


def expected(i):
    return b"".join(reply(i, n_pieces(i)))


class Mismatch(Exception):
    pass


def parse(line):
    f = line.split()
    if len(f) != 3 or f[0] not in (b"REQ", b"CLOSE"):
        raise Mismatch("server: bad request %r" % line[:80])
    return f[0], int(f[1]), int(f[2])


# ---- server ----------------------------------------------------------------------------------

async def stream_handler(reader, writer):
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            kind, i, n = parse(line)
            if kind == b"REQ":
                for p in reply(i, n):
                    writer.write(p)
                await writer.drain()
            else:
                for p in close_pieces(i, n):
                    writer.write(p)
                writer.close()          # right after writing: asyncio sends what it holds
                return
    except (ConnectionError, Mismatch) as e:
        print("server: %r" % e, file=sys.stderr)
    writer.close()


class ServerProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.t = transport
        self.buf = b""

    def data_received(self, data):
        self.buf += data
        while self.t is not None:
            k = self.buf.find(b"\n")
            if k < 0:
                return
            line, self.buf = self.buf[:k + 1], self.buf[k + 1:]
            kind, i, n = parse(line)
            if kind == b"REQ":
                for p in reply(i, n):
                    self.t.write(p)
            else:
                for p in close_pieces(i, n):
                    self.t.write(p)
                self.t.close()          # right after writing
                self.t = None

    def connection_lost(self, exc):
        self.t = None


async def serve(kind, portfile):
    loop = asyncio.get_running_loop()
    if kind == "streams":
        server = await asyncio.start_server(stream_handler, "127.0.0.1", 0, backlog=512)
    else:
        server = await loop.create_server(ServerProtocol, "127.0.0.1", 0, backlog=512)
    stop = loop.create_future()

    # `timeout` (which runs this server) forwards one SIGTERM two or three times (to the
    # child, then to its process group, and again when the copy sent to the group reaches
    # timeout itself). A later copy must not kill the process during its orderly exit (status
    # 143, no stats file): asyncio.run restores SIG_DFL for loop.add_signal_handler's handlers,
    # and so does the interpreter's finalization for a Python-level one, but not for SIG_IGN.
    # So the first SIGTERM stops the server and makes the others ignored.
    def on_term(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if not stop.done():
            loop.call_soon_threadsafe(lambda: stop.done() or stop.set_result(None))

    signal.signal(signal.SIGTERM, on_term)
    port = server.sockets[0].getsockname()[1]
    with open(portfile + ".tmp", "w") as f:
        f.write("%d\n" % port)
    os.rename(portfile + ".tmp", portfile)   # the script waits for this file
    await stop
    server.close()
    await server.wait_closed()


# ---- clients ----------------------------------------------------------------------------------

async def read_replies(reader, first, count, h, what):
    for i in range(first, first + count):
        want = expected(i)
        try:
            got = await reader.readexactly(len(want))
        except asyncio.IncompleteReadError as e:
            raise Mismatch("%s: connection closed in reply %d (got %r)" % (what, i, e.partial[:80]))
        if got != want:
            raise Mismatch("%s: reply %d: expected %r, got %r" % (what, i, want[:80], got[:80]))
        h.update(got)


async def pipeline(port, n=5000, first=0, what="pipeline"):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    h = hashlib.sha256()

    async def send():
        for i in range(first, first + n):
            writer.write(request(i))      # one small write per request
            if i % 100 == 99:
                await writer.drain()
        await writer.drain()

    task = asyncio.ensure_future(send())
    await read_replies(reader, first, n, h, what)
    await task
    writer.close()
    await writer.wait_closed()
    return h.hexdigest()


class ClientProtocol(asyncio.Protocol):
    def __init__(self, n, done):
        self.n, self.done = n, done
        self.buf = bytearray()
        self.next = 0
        self.h = hashlib.sha256()

    def connection_made(self, transport):
        for i in range(self.n):
            transport.write(request(i))   # one small write per request

    def data_received(self, data):
        self.buf += data
        while self.next < self.n and not self.done.done():
            want = expected(self.next)
            if len(self.buf) < len(want):
                return
            got = bytes(self.buf[:len(want)])
            del self.buf[:len(want)]
            if got != want:
                self.done.set_exception(Mismatch("protocol client: reply %d: expected %r, got %r"
                                                 % (self.next, want[:80], got[:80])))
                return
            self.h.update(got)
            self.next += 1
        if self.next == self.n and not self.done.done():
            if self.buf:
                self.done.set_exception(Mismatch("protocol client: %d bytes after the last reply" % len(self.buf)))
            else:
                self.done.set_result(self.h.hexdigest())

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_exception(Mismatch("protocol client: connection lost after %d of %d replies (%r)"
                                             % (self.next, self.n, exc)))


async def protocol_client(port, n=5000):
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    transport, _ = await loop.create_connection(lambda: ClientProtocol(n, done), "127.0.0.1", port)
    try:
        return await done
    finally:
        transport.close()


CLOSE_SIZES = [0, 1, 2, 3, 10, 100, 1000, 1447, 4095, 4096, 4097, 8192, 32767, 32768, 32769,
               65535, 65536, 65537, 100000, 131072, 200000, 262144, 500000, 1048576, 3145728]
CLOSE_SIZES += [random.Random(s).randrange(1, 300000) for s in range(40 - len(CLOSE_SIZES))]


async def close_one(port, i, size, reqs):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    h = hashlib.sha256()
    # REQs 0..reqs-1 and the CLOSE in one write
    writer.write(b"".join(request(i * 100 + k) for k in range(reqs)) + b"CLOSE %d %d\n" % (i, size))
    await writer.drain()
    await read_replies(reader, i * 100, reqs, h, "close %d" % i)
    want = b"".join(close_pieces(i, size))
    got = await reader.read()             # until EOF
    if got != want:
        k = next((x for x in range(min(len(got), len(want))) if got[x] != want[x]), min(len(got), len(want)))
        raise Mismatch("close %d (%d bytes after %d replies): got %d bytes, first difference at byte %d"
                       % (i, size, reqs, len(got), k))
    h.update(got)
    writer.close()
    return "close %d: %d replies + %d bytes then EOF, sha256 %s" % (i, reqs, size, h.hexdigest())


async def close_case(port):
    sem = asyncio.Semaphore(8)

    async def one(i, size, reqs):
        async with sem:
            return await close_one(port, i, size, reqs)

    jobs = [one(i, size, 0) for i, size in enumerate(CLOSE_SIZES)]
    jobs += [one(100 + i, size, 50) for i, size in enumerate(CLOSE_SIZES[:20])]
    return await asyncio.gather(*jobs)


async def many(port, conns=200, n=50):
    async def one(c):
        return await pipeline(port, n, c * 1000, "connection %d" % c)

    res = await asyncio.gather(*(one(c) for c in range(conns)))
    return hashlib.sha256("".join(res).encode()).hexdigest()


async def client(mode, port):
    if mode == "pipeline":
        print("pipeline: 5000 replies, sha256 %s" % await pipeline(port))
    elif mode == "protocol":
        print("protocol client: 5000 replies, sha256 %s" % await protocol_client(port))
    elif mode == "close":
        for line in await close_case(port):
            print(line)
    elif mode == "many":
        print("many: 200 connections x 50 replies, sha256 of the sha256s %s" % await many(port))
    else:
        raise SystemExit("unknown mode %s" % mode)


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("server", "client"):
        raise SystemExit(__doc__ if __doc__ else "usage: asyncio_peer.py server KIND PORTFILE | client MODE PORT")
    if sys.argv[1] == "server":
        asyncio.run(serve(sys.argv[2], sys.argv[3]))
        return 0
    try:
        asyncio.run(asyncio.wait_for(client(sys.argv[2], int(sys.argv[3])), TIMEOUT))
    except Mismatch as e:
        print("FAILED: %s" % e)
        print("%s: %s" % (sys.argv[2], e), file=sys.stderr)
        return 1
    except (asyncio.TimeoutError, ConnectionError, OSError) as e:
        print("FAILED: %r" % e)
        print("%s: %r" % (sys.argv[2], e), file=sys.stderr)
        return 1
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
