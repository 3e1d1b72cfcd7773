#!/usr/bin/env python3
"""Writes the seed inputs of tests/fuzz/corpus/ (the input format is
described in tests/fuzz/README.md). Run from anywhere:
    python3 tests/fuzz/make_seeds.py
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))
FD = {3: 0, 4: 1, 5: 2, 6: 3, 7: 4, 63: 5, 64: 6, 1030: 7}


def header(max_idx=0, large_idx=0, direct=True, delay_idx=0, linger_idx=0, debug=False,
           kinds=(0, 0)):
    b0 = max_idx | (large_idx << 2) | ((0 if direct else 1) << 5)
    b1 = delay_idx | (linger_idx << 2) | ((1 if debug else 0) << 4)
    return bytes([b0, b1, kinds[0], kinds[1]])


FLAGS = {0: 0, 'nosignal': 2, 'dontwait': 3, 'more': 4, 'oob': 5, 'dontwait|nosignal': 6}
HOW = {None: 0, 'addr': 6, 'control': 7}
IOV = {1: 0, 2: 3, 3: 4, 8: 5, 0: 6, 100: 7, 1024: 7 | 8, 1025: 7 | 16}


def write(fd, size_class, s1=0, s0_low=0, flags=0, how=None, iov=1, seed=0):
    fb = FLAGS[flags] | (HOW[how] << 3)
    v = IOV[iov] | (seed << 5 if iov not in (100, 1024, 1025) else 0)
    return bytes([0, FD[fd], fb, (size_class << 5) | s0_low, s1, v])


def small(fd, n, **kw):          # 1..256 bytes
    return write(fd, 2, n - 1, **kw)


def big(fd, units, **kw):        # units * 37 bytes (units < 8192)
    return write(fd, 6, units & 255, units >> 8, **kw)


def fill_to_max(fd, delta=0, **kw):
    return write(fd, 4, delta + 2, **kw)


def read():
    return bytes([100, 0, 0])


def read_fd(fd):                 # read on fd: flush, then the error a flush took
    return bytes([100, FD[fd], 4])


def so_error(fd, take=True):     # getsockopt(SO_ERROR) (take) or poll's POLLERR (look)
    return bytes([100, FD[fd], 5 + (6 if take else 0)])


def note_wait(n=1):
    return bytes([112, n - 1])


def stats(size_byte, mult_idx=0):  # co_stats_format into size_byte * (mult_idx + 1) * 4 bytes
    return bytes([118, mult_idx, size_byte])


def due(amount_sel, amount_hi=0, maxst=8):
    return bytes([120, 0, amount_sel | (amount_hi << 3), maxst])


def flush_before(fd, dontwait=False):
    return bytes([140, FD[fd], 1 if dontwait else 0])


def close(fd, hand_over=False, reopen_kind=None):
    v = (1 if hand_over else 0) | ((2 | (reopen_kind << 2)) if reopen_kind is not None else 0)
    return bytes([150, FD[fd], v])


def reopen(fd, kind=0, forget=True):
    return bytes([158, FD[fd], kind | (16 if forget else 0)])


def forget(fd):
    return bytes([166, FD[fd]])


def stop(fd, reason=0):
    return bytes([170, FD[fd], reason])


def dup2(old, new):
    return bytes([174, FD[old], FD[new]])


def inherit_dup(old, new):
    return bytes([178, FD[old], FD[new]])


def final():
    return bytes([182, 0])


def fork():
    return bytes([185, 0])


def fault(fd, kind, count=1, arg=0):
    """kind: 0 at most 1 + arg % 64 bytes, 1 at most 1 + arg * 257 bytes, 2 EAGAIN,
    3 EINTR, 4 EPIPE, 5 ECONNRESET, 6 ENOBUFS, 7 ETIMEDOUT"""
    return bytes([190, FD[fd], kind + 8 * (count - 1), arg])


def alloc_fail(realloc=False, count=1):
    return bytes([215, (1 if realloc else 0) | ((count - 1) << 1)])


def space(fd, sel, a=0):  # sel 0: full, 1: 1 + a*16, 2: unlimited, 3: += a*256
    return bytes([222, FD[fd], (a & ~3) | sel])


def nonblock(fd, on=True):
    return bytes([232, FD[fd], 1 if on else 0])


def poll_frees(fd, n):
    return bytes([238, FD[fd], n - 1])


def connect(fd):
    return bytes([242, FD[fd]])


def signal_arm(fd, kind, n, flags=0, big=False):
    """kind 0: write n bytes (big: 1 + 16 * (n - 1)) on fd with flags
    (0, 2: MSG_NOSIGNAL, 3: MSG_OOB), 1: flush_all_nowait, 2: read"""
    return bytes([246, FD[fd], kind | (flags << 2) | (16 if big else 0), n - 1])


def signal_flush():
    return bytes([250, 0])


SEEDS = {
    # A streaming writer, a request/response pair, the deadline.
    'basic': header() + small(3, 10) + small(3, 20) + small(3, 30) + read()
    + small(3, 5) + note_wait() + small(3, 7) + small(3, 9) + due(2) + due(3)
    + small(4, 100) + small(4, 100) + fill_to_max(4) + read(),
    # Deferred errors: a deadline flush fails, the next write reports it once.
    'deferred_error': header(max_idx=2) + small(3, 50) + small(3, 50) + fault(3, 4)
    + due(3) + small(3, 10) + small(3, 10) + small(3, 10) + fault(3, 5) + read()
    + small(3, 1) + small(3, 1) + fault(3, 0, 2, 5) + flush_before(3) + small(3, 3) + fork(),
    # Large writes, many iovecs, partial sends.
    'large': header(max_idx=2, large_idx=4) + small(5, 100) + small(5, 100)
    + big(5, 3000, iov=3) + fault(5, 1, 3, 7) + small(5, 200) + big(5, 8000, iov=8)
    + small(5, 10, iov=1024) + small(5, 10, iov=1025) + fill_to_max(5, 1)
    + fill_to_max(5, -1, iov=2) + final(),
    # Nonblocking sockets that fill up, EAGAIN, linger at close and exit.
    'nonblocking': header(max_idx=1, linger_idx=2) + nonblock(6) + small(6, 200)
    + small(6, 200) + space(6, 0) + small(6, 200, flags='dontwait') + due(3)
    + fill_to_max(6, flags='dontwait') + poll_frees(6, 2) + close(6) + reopen(6)
    + nonblock(7) + small(7, 10) + small(7, 10) + space(7, 0) + fork() + final(),
    # Close, reopen, forget, dup2, a duplicate the shim never saw, shutdown.
    'lifecycle': header(kinds=(0x00, 0x00)) + small(3, 10) + small(3, 10) + close(3)
    + small(3, 4) + reopen(3, 4) + small(3, 4) + small(3, 4) + forget(3) + small(3, 4)
    + small(4, 8) + small(4, 8) + dup2(4, 5) + small(5, 2) + small(4, 2)
    + close(7) + small(6, 5) + small(6, 5) + inherit_dup(6, 7) + small(7, 5) + small(6, 5)
    + stop(3, 1) + small(3, 1) + close(3, hand_over=True, reopen_kind=0),
    # Every kind of fd, flags and addresses that go to libc.
    'kinds': header(kinds=(0xff, 0xff)) + small(3, 5) + small(4, 5) + small(5, 5)
    + connect(5) + small(5, 5) + small(5, 5) + small(6, 5) + small(7, 5) + small(63, 5)
    + small(64, 5) + small(1030, 5) + small(1030, 5, flags='oob')
    + small(1030, 5, how='addr') + small(1030, 5, how='control') + small(1030, 5, flags='more'),
    # Allocation failures and a signal handler during a write handed to libc.
    'alloc_signal': header(direct=False) + alloc_fail() + small(3, 5) + small(3, 5)
    + alloc_fail(True) + small(3, 5) + small(4, 5) + signal_arm(4, 0, 9)
    + small(4, 7, flags='oob') + signal_arm(3, 1, 1) + small(3, 1, how='addr')
    + signal_flush() + small(1030, 5) + alloc_fail(False, 3) + small(1030, 5)
    + signal_arm(4, 0, 200, big=True) + small(4, 2, flags='oob')
    + signal_arm(4, 0, 5, flags=3) + small(4, 2, flags='oob'),
    # An error after part of a write of 1024 iovecs went out with the queue.
    'error_after_along': header(max_idx=2) + small(5, 100) + small(5, 100)
    + fault(5, 1, 1, 255) + fault(5, 4) + write(5, 3, 0xa0, 15, iov=1024) + small(5, 1)
    + small(5, 1),
    # A flush's error given back to a read, to SO_ERROR, and ENOBUFS.
    'read_error': header() + small(3, 5) + small(3, 5) + fault(3, 5) + due(3) + so_error(3, False)
    + read_fd(3) + small(3, 4) + small(4, 5) + small(4, 5) + fault(4, 4) + read() + read_fd(4)
    + so_error(4) + small(4, 5) + small(5, 5) + small(5, 5) + fault(5, 6) + close(5) + small(6, 5) + small(6, 5) + fault(6, 7) + due(3) + stop(6)
    + read_fd(6),
    # Statistics as JSON into buffers too small, just right and large.
    'stats': header() + small(3, 5) + small(3, 5) + stats(0) + stats(1) + stats(10)
    + stats(60, 3) + stats(255, 7),
}


def main():
    out = os.path.join(HERE, 'corpus')
    os.makedirs(out, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(out, 'seed_' + name), 'wb') as f:
            f.write(data)


if __name__ == '__main__':
    main()
