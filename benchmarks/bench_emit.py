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

# Accepts TCP connections and reads UDP datagrams on one port, discarding everything.
DISCARD_SERVER = r'''
import selectors, socket, sys
selector = selectors.DefaultSelector()
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
        elif not key.fileobj.recv(1 << 18) and key.data == 'tcp':
            selector.unregister(key.fileobj)
            key.fileobj.close()
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
                # The discarding server never acknowledges: without acknowledged=False
                # each TCP handler would wait its ack fallback at close.  emit() costs
                # the same either way (it only queues); bench_acks.py measures acks.
                ('LoghogHandler TCP', LoghogHandler('bench', '127.0.0.1', port,
                                                    max_buffer_size=room,
                                                    acknowledged=False)),
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
    tcp_mean = next(row[1] for row in rows if row[0] == 'LoghogHandler TCP')
    print(f'LoghogHandler TCP / FileHandler: {tcp_mean / file_mean:.2f}x '
          f'(one run; repeat to judge the noise)')


if __name__ == '__main__':
    sys.exit(main())
