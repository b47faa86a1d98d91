#!/usr/bin/env python3
"""Is one loop pass shared fairly between connections? (issue 15)

A real loghogd (this checkout, default settings): 8 connections (from a child process)
flood refused frames (10 bytes each: a header and a payload that is not JSON; each
connects again at once when the daemon closes it) or valid
messages of ``[flood]`` for ``--seconds``; a good client of ``[app]`` sends one message
every ``--interval-ms`` meanwhile, with acknowledgements.  Reported: the good client's
delays (send to acknowledgement: median, p99, max), whether all of its messages were written, and how long
SIGTERM took (sent while the flood still runs).

    .venv/bin/python benchmarks/bench_fairness.py
    .venv/bin/python benchmarks/bench_fairness.py --valid --seconds 10
"""

import argparse
import multiprocessing
import os
import socket
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.good_client import acked_probes, summary  # noqa: E402
from loghog.wire import HEADER                                        # noqa: E402
from tests.support import Daemon, frame, read_lines, wait_for        # noqa: E402

FACILITIES = """
[flood]
rotate = daily
backup_count = 1

[app]
rotate = daily
backup_count = 1

[fleet]
rotate = daily
backup_count = 1
file_per_host = yes
"""
FLOODERS = 8


def flood_blob(valid):
    if valid:
        return b''.join(frame('flood', 'x' * 40) for _ in range(500))
    return (HEADER.pack(2, 0) + b'no') * 6000


def _flood_hosts(port, stop_at):
    """One plain TCP sender, a new host name in every message (issue 15's host flood)."""
    with socket.create_connection(('127.0.0.1', port)) as sock:
        n = 0
        while time.time() < stop_at:
            try:
                sock.sendall(b''.join(frame('fleet', 'x', host='h%09d.example.com' % (n + i))
                                      for i in range(100)))
            except OSError:
                return   # the daemon stopped
            n += 100


def _flood(port, valid, stop_at, flooders):
    import selectors
    if valid == 'hosts':
        return _flood_hosts(port, stop_at)
    blob = flood_blob(valid)
    selector = selectors.DefaultSelector()

    def connect():
        # The daemon closes a peer after MALFORMED_IN_A_ROW malformed frames: a
        # determined flooder connects again at once (and so does this one).
        try:
            sock = socket.create_connection(('127.0.0.1', port))
        except OSError:
            return   # the daemon stopped
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_WRITE, [0])

    for _ in range(flooders):
        connect()
    reconnects = 0
    while time.time() < stop_at and selector.get_map():
        for key, _ in selector.select(0.1):
            offset = key.data
            try:
                offset[0] = (offset[0] + key.fileobj.send(blob[offset[0]:])) % len(blob)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                selector.unregister(key.fileobj)
                key.fileobj.close()
                reconnects += 1
                connect()
    for key in list(selector.get_map().values()):
        key.fileobj.close()


def start_flood(port, seconds, valid, flooders=FLOODERS):
    """The flood in a child process (its own interpreter, so it never holds our GIL)."""
    context = multiprocessing.get_context('spawn')
    child = context.Process(target=_flood, args=(port, valid, time.time() + seconds, flooders), daemon=True)
    child.start()
    return child


def probe(daemon, seconds, interval_s):
    """The good client (good_client.acked_probes): each probe's delay, send to ack."""
    return acked_probes(daemon.tcp_port, seconds, interval_s)


def written(daemon, sent, timeout_s=60):
    live = daemon.log_file('app')
    return len(wait_for(lambda: (lambda ls: ls if len(ls) >= sent else None)(read_lines(live)),
                        timeout_s, 0.1, 'every probe'))


def run(seconds, interval_s, base, valid, flooders=FLOODERS):
    with Daemon(base, FACILITIES, sections={'log': {'level': 'WARNING'}}) as daemon:
        child = start_flood(daemon.tcp_port, seconds + 30, valid, flooders)
        time.sleep(0.5)   # the flood under way
        delays = probe(daemon, seconds, interval_s)
        sent = len(delays)
        lines = written(daemon, sent)
        began = time.monotonic()
        code = daemon.stop(60)   # the flood still runs
        stop_s = time.monotonic() - began
        child.terminate()
        child.join()
    kind = 'new host names' if valid == 'hosts' else 'valid' if valid else 'refused'
    result = {'flood': '%d x %s' % (flooders, kind), 'probes': sent,
              'probes_written': lines}
    result.update(summary(delays))
    result.update({'sigterm_s': round(stop_s, 2), 'exit': code})
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--seconds', type=float, default=10.0)
    parser.add_argument('--interval-ms', type=float, default=5.0)
    parser.add_argument('--valid', action='store_true', help='flood valid messages')
    parser.add_argument('--hosts', action='store_true',
                        help='one sender of new host names to a file_per_host facility')
    parser.add_argument('--flooders', type=int, default=FLOODERS, help='0: the baseline')
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix='bench-fairness-') as base:
        result = run(args.seconds, args.interval_ms / 1000, base,
                     'hosts' if args.hosts else args.valid, 1 if args.hosts else args.flooders)
    for key, value in result.items():
        print('%-16s %s' % (key, value))


if __name__ == '__main__':
    main()
