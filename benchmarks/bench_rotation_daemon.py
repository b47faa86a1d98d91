#!/usr/bin/env python3
"""Does rotating many files at the same minute hold up another application? (issue 15)

A real loghogd (this checkout) with two facilities: ``[fleet]`` (``file_per_host``,
``rotate = * * * * *``, ``max_hosts`` = ``--files``) and ``[app]`` (daily).  First one
message from each of ``--files`` host names makes that many per-host files; then, across
the next minute boundary, where they all rotate, a good client sends one message every
``--interval-ms`` to ``[app]`` on its own connection.  The daemon stamps each line with
its receive time, so for each of the client's messages

    delay = receive time - send time   (the same clock: same machine)

is how long it waited for the loop.  Reported for the messages sent from 2 s before the
boundary to ``--after-s`` after it: count, median, p99, max; and how many backups were
made (all files must rotate).

    .venv/bin/python benchmarks/bench_rotation_daemon.py --files 10000
    .venv/bin/python benchmarks/bench_rotation_daemon.py --files 3000 --json /tmp/r.json

Waits for the next minute boundary (up to a minute).  Not part of ``make test``.
"""

import argparse
import json
import os
import socket
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.good_client import StampedClient, summary    # noqa: E402
from tests.support import Daemon, frame, wait_for             # noqa: E402


def run(files, interval_s, after_s, base, max_hosts=True):
    facilities = ('[fleet]\nrotate = * * * * *\nbackup_count = 3\nfile_per_host = yes\n%s'
                  '\n[app]\nrotate = daily\nbackup_count = 3\n'
                  % ('max_hosts = %d\n' % files if max_hosts else ''))
    daemon = Daemon(base, facilities, sections={'log': {'level': 'WARNING'}})
    with daemon:
        port = daemon.tcp_port
        folder = daemon.logdir / 'fleet'
        began = time.monotonic()
        with socket.create_connection(('127.0.0.1', port)) as sock:
            for start in range(0, files, 500):
                sock.sendall(b''.join(frame('fleet', 'hello', host='host%05d.example.com' % n)
                                      for n in range(start, min(files, start + 500))))
        wait_for(lambda: len(os.listdir(folder)) >= files if folder.exists() else False,
                 600, 0.2, 'the per-host files')
        setup_s = time.monotonic() - began
        boundary = (int(time.time()) // 60 + 1) * 60
        if boundary - time.time() < 4:
            boundary += 60
        time.sleep(max(0.0, boundary - 3 - time.time()))
        client = StampedClient(port, interval_s).start()
        time.sleep(max(0.0, boundary + after_s - time.time()))
        client.stop()
        pairs = client.delays(daemon.log_file('app'), since=boundary - 2)
        backups = wait_for(lambda: (lambda n: n if n >= files else None)(
            sum(1 for name in os.listdir(folder) if '-root.log.' in name)), 600, 0.5,
            'every file rotated')
        code = daemon.stop(60)
    delays = [d for d, _ in pairs]
    worst = sorted(pairs, reverse=True)[:5]
    result = {'files': files, 'setup_s': round(setup_s, 1), 'probes': len(delays)}
    result.update(summary(delays))
    result.update({'backups': backups, 'exit': code,
                   'worst_ms_at_s': [(round(d * 1000, 1), round(s - boundary, 2))
                                     for d, s in worst]})
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--files', type=int, default=10000)
    parser.add_argument('--interval-ms', type=float, default=2.0)
    parser.add_argument('--after-s', type=float, default=10.0)
    parser.add_argument('--json', metavar='FILE')
    parser.add_argument('--no-max-hosts', action='store_true',
                        help='for a loghogd from before max_hosts (issue 15)')
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix='bench-rotation-daemon-') as base:
        result = run(args.files, args.interval_ms / 1000, args.after_s, base,
                     not args.no_max_hosts)
    for key, value in result.items():
        print('%-10s %s' % (key, value))
    if args.json:
        with open(args.json, 'w') as stream:
            json.dump(result, stream, indent=1)


if __name__ == '__main__':
    main()
