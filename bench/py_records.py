"""A real workload for the demo: Python's own socket code, unmodified.

Sends COUNT records of SIZE bytes over TCP loopback with TCP_NODELAY, one
socket.send() each, to a receiver in a child process that runs without the
shim and checks every byte. Prints the sender's elapsed seconds.

Usage: python3 py_records.py COUNT SIZE
"""
import hashlib
import os
import socket
import sys
import time


def record(i, size):
    return b"%0*d\n" % (size - 1, i)


def expected_digest(count, size):
    h = hashlib.sha256()
    for i in range(count):
        h.update(record(i, size))
    return h.hexdigest()


def receive(listener, count, size):
    conn, _ = listener.accept()
    h = hashlib.sha256()
    total = 0
    while True:
        data = conn.recv(1 << 16)
        if not data:
            break
        h.update(data)
        total += len(data)
    ok = total == count * size and h.hexdigest() == expected_digest(count, size)
    os._exit(0 if ok else 1)


def main():
    count, size = int(sys.argv[1]), int(sys.argv[2])
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    os.set_inheritable(listener.fileno(), True)
    # The receiver must not run under the shim: it is started from a clean
    # environment with the same interpreter.
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    pid = os.fork()
    if pid == 0:
        os.execve(sys.executable, [sys.executable, __file__, "--receive",
                  str(listener.fileno()), str(count), str(size)], env)
    records = [record(i, size) for i in range(count)]
    conn = socket.create_connection(listener.getsockname())
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    start = time.perf_counter()
    for r in records:
        conn.send(r)
    conn.close()
    elapsed = time.perf_counter() - start
    _, status = os.waitpid(pid, 0)
    if status != 0:
        print("receiver: data differed", file=sys.stderr)
        sys.exit(1)
    print("%.6f" % elapsed)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--receive":
        fd, count, size = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
        receive(socket.socket(fileno=fd), count, size)
    else:
        main()
