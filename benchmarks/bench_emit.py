#!/usr/bin/env python3
"""What a ``logger.info()`` call costs the application with LoghogHandler attached (issue 6).

Each case attaches one handler to a fresh logger, warms up, then times ``--count`` calls of
``logger.info('request %s took %d ms', path, n)`` with the formatter ``%(levelname)s -
%(message)s``.  ``mean`` is the loop's time divided by the calls; ``p99`` and ``max`` come
from a second, per-call timed loop.  ``drain`` is how long ``flush()`` then took to get the
queue out, ``dropped`` the handler's counter.  The receiving end is a separate process that
reads and discards (so the numbers are the client's cost, not a daemon's), on 127.0.0.1.

    .venv/bin/python benchmarks/bench_emit.py [--count 20000]
"""

import argparse
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from loghog import LoghogHandler  # noqa: E402

# Accepts TCP connections and reads UDP datagrams on one port, discarding everything; a
# connection whose frames ask for acknowledgements gets one per read, as loghogd answers
# (``{"ack": N}``: the first N frames of the connection), written or not.
DISCARD_SERVER = r'''
import json, selectors, socket, struct, sys
HEADER = struct.Struct('>II')
selector = selectors.DefaultSelector()
states = {}

def take(conn, data):
    state = states.setdefault(conn, [bytearray(), 0, False])
    buffer = state[0]
    buffer += data
    offset = 0
    while len(buffer) - offset >= 8:
        size, flags = HEADER.unpack_from(buffer, offset)
        if len(buffer) - offset < 8 + size:
            break
        offset += 8 + size
        state[1] += 1
        state[2] = state[2] or bool(flags & 2)
    del buffer[:offset]
    if offset and state[2]:
        payload = json.dumps({'ack': state[1]}).encode()
        conn.sendall(HEADER.pack(len(payload), 2) + payload)

tcp = socket.create_server(('127.0.0.1', 0), backlog=64)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
udp.bind(tcp.getsockname())
selector.register(tcp, selectors.EVENT_READ, 'accept')
selector.register(udp, selectors.EVENT_READ, 'udp')
print(tcp.getsockname()[1], flush=True)
while True:
    for key, _ in selector.select():
        if key.data == 'accept':
            conn, _ = tcp.accept()
            selector.register(conn, selectors.EVENT_READ, 'tcp')
        else:
            data = key.fileobj.recv(1 << 18)
            if key.data == 'tcp' and not data:
                selector.unregister(key.fileobj)
                states.pop(key.fileobj, None)
                key.fileobj.close()
            elif key.data == 'tcp':
                take(key.fileobj, data)
'''


class FormatOnlyHandler(logging.Handler):
    """The floor: what logging itself costs with a formatted record and no output."""

    def emit(self, record):
        self.format(record)


def time_calls(logger, count):
    """Return (mean_s, p99_s, max_s) for ``count`` logger.info calls."""
    started = time.perf_counter()
    for n in range(count):
        logger.info('request %s took %d ms', '/api/items', n)
    mean_s = (time.perf_counter() - started) / count
    durations = []
    for n in range(count):
        before = time.perf_counter()
        logger.info('request %s took %d ms', '/api/items', n)
        durations.append(time.perf_counter() - before)
    durations.sort()
    return mean_s, durations[int(len(durations) * 0.99)], durations[-1]


def measure(name, handler, count):
    """Time one handler; return a row of the table."""
    handler.setFormatter(logging.Formatter('%(levelname)s - %(message)s'))
    logger = logging.getLogger(f'bench.{name}')
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        time_calls(logger, min(count, 2000))  # warm up: connection, caches
        mean_s, p99_s, max_s = time_calls(logger, count)
        started = time.perf_counter()
        handler.flush()
        drain_s = time.perf_counter() - started
        dropped = getattr(handler, 'dropped', 0)
    finally:
        logger.removeHandler(handler)
        handler.close()
    return (name, mean_s * 1e6, p99_s * 1e6, max_s * 1e6, drain_s * 1e3, dropped)


def unused_port():
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--count', type=int, default=20000, help='calls per case (default 20000)')
    options = parser.parse_args(argv)
    count = options.count
    # Room for every call of a case (warm-up and both timed loops), so that what is
    # measured is queueing, not dropping; the unreachable case shows the dropping cost.
    room = 2 * count + 2 * min(count, 2000) + 1000   # every call of the run: nothing dropped
    server = subprocess.Popen([sys.executable, '-c', DISCARD_SERVER], stdout=subprocess.PIPE,
                              text=True)
    try:
        port = int(server.stdout.readline())
        with tempfile.TemporaryDirectory() as folder:
            cases = [
                ('format only (floor)', FormatOnlyHandler()),
                ('logging.FileHandler', logging.FileHandler(os.path.join(folder, 'bench.log'))),
                # Plain TCP with room for every call: the cost of queueing alone.
                ('LoghogHandler TCP', LoghogHandler('bench', '127.0.0.1', port,
                                                    max_buffer_size=room,
                                                    acknowledged=False)),
                # Every default (acknowledgements, a buffer of 10,000): the loop outruns
                # the buffer, and emit() waits for room (back-pressure, issue 13).
                ('LoghogHandler TCP defaults', LoghogHandler('bench', '127.0.0.1', port)),
                ('LoghogHandler TCP signed+zlib', LoghogHandler(
                    'bench', '127.0.0.1', port, secret='s3cret', compression=True,
                    max_buffer_size=room, acknowledged=False)),
                ('LoghogHandler UDP', LoghogHandler('bench', '127.0.0.1', port, stream=False,
                                                    max_buffer_size=room)),
                ('LoghogHandler unreachable', LoghogHandler('bench', '127.0.0.1', unused_port(),
                                                            close_timeout_s=0.1)),
            ]
            rows = [measure(name, handler, count) for name, handler in cases]
    finally:
        server.kill()
        server.wait()
    print_table(rows, count)
    return 0


def print_table(rows, count):
    print(f'logger.info() cost, {count} calls per case, Python {sys.version.split()[0]}, '
          f'{os.cpu_count()} CPUs')
    print(f'{"handler":<32}{"mean µs":>9}{"p99 µs":>9}{"max µs":>10}{"drain ms":>10}'
          f'{"dropped":>9}')
    for name, mean_us, p99_us, max_us, drain_ms, dropped in rows:
        print(f'{name:<32}{mean_us:>9.2f}{p99_us:>9.2f}{max_us:>10.0f}{drain_ms:>10.1f}'
              f'{dropped:>9}')
    file_mean = next(row[1] for row in rows if row[0] == 'logging.FileHandler')
    for name in ('LoghogHandler TCP', 'LoghogHandler TCP defaults'):
        mean = next(row[1] for row in rows if row[0] == name)
        print(f'{name} / FileHandler: {mean / file_mean:.2f}x '
              f'(one run; repeat to judge the noise)')


if __name__ == '__main__':
    sys.exit(main())
