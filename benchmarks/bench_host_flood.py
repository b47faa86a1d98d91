#!/usr/bin/env python3
"""Does a host-name flood on a file_per_host facility hold up another application? (issue 15)

A real loghogd (this checkout): ``[fleet]`` (``file_per_host``, daily, default
``max_hosts``) and ``[app]`` (daily).  One plain TCP sender floods ``[fleet]`` for
``--seconds`` with a new host name in every message (host names are not signed); a good
client of ``[app]`` sends one message every ``--interval-ms`` meanwhile.  Reported: the
good client's delays (receive time - send time: median, p99, max), whether all of its
messages were written, how many files the flood made, and how long SIGTERM took.

    .venv/bin/python benchmarks/bench_host_flood.py
    .venv/bin/python benchmarks/bench_host_flood.py --seconds 10 --json /tmp/flood.json
"""

import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.good_client import StampedClient, summary   # noqa: E402
from tests.support import Daemon, frame                       # noqa: E402

FACILITIES = """
[fleet]
rotate = daily
backup_count = 3
file_per_host = yes

[app]
rotate = daily
backup_count = 3
"""


def flood(port, seconds, counts, same_host=False):
    stop = time.monotonic() + seconds
    with socket.create_connection(('127.0.0.1', port)) as sock:
        n = 0
        while time.monotonic() < stop:
            sock.sendall(b''.join(frame('fleet', 'x', host='h%09d.example.com'
                                        % (0 if same_host else n + i)) for i in range(100)))
            n += 100
    counts.append(n)


def run(seconds, interval_s, base, same_host=False):
    with Daemon(base, FACILITIES, sections={'log': {'level': 'WARNING'}}) as daemon:
        port = daemon.tcp_port
        counts = []
        flooder = threading.Thread(target=flood, args=(port, seconds, counts, same_host))
        flooder.start()
        client = StampedClient(port, interval_s).start()
        flooder.join()
        sent = client.stop()
        pairs = client.delays(daemon.log_file('app'))
        folder = daemon.logdir / 'fleet'
        files = len(os.listdir(folder)) if folder.exists() else 0
        began = time.monotonic()
        code = daemon.stop(60)
        stop_s = time.monotonic() - began
    delays = [d for d, _ in pairs]
    first_sent = min(sent_at for _, sent_at in pairs)
    state = os.path.join(base, 'lib', 'rotation.json')
    result = {'flood_messages': counts[0], 'files': files, 'probes': sent,
              'probes_written': len(pairs)}
    result.update(summary(delays))
    result.update({'sigterm_s': round(stop_s, 2), 'exit': code,
                   'worst_ms_at_s': [(round(d * 1000, 1), round(t - first_sent, 2))
                                     for d, t in sorted(pairs, reverse=True)[:3]],
                   'rotation_json_bytes': os.path.getsize(state)
                   if os.path.exists(state) else None})
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--seconds', type=float, default=10.0)
    parser.add_argument('--interval-ms', type=float, default=2.0)
    parser.add_argument('--json', metavar='FILE')
    parser.add_argument('--same-host', action='store_true',
                        help='the same host name in every message: the flood without new files')
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix='bench-host-flood-') as base:
        result = run(args.seconds, args.interval_ms / 1000, base, args.same_host)
    for key, value in result.items():
        print('%-20s %s' % (key, value))
    if args.json:
        with open(args.json, 'w') as stream:
            json.dump(result, stream, indent=1)


if __name__ == '__main__':
    main()
