#!/usr/bin/env python3
"""Does a reload of a big facilities.conf hold up another application? (issue 15)

A real loghogd (this checkout, default settings) with ``[app]`` and ``--facilities``
more facilities (daily); ``--files`` of them get a file first (one message each).  Then
a good client of ``[app]`` sends a message every ``--interval-ms`` (benchmarks/good_client.py,
receive time - send time) while facilities.conf is rewritten with those files switched
to ``hourly`` and the daemon gets SIGHUP.  Reported: how long until the daemon logged
the reload, the client's delays for the lines sent from the SIGHUP to 2 s after the
reload (median, p99, max), and how long SIGTERM took when sent 0.3 s into a further
reload.

    .venv/bin/python benchmarks/bench_reload.py
    .venv/bin/python benchmarks/bench_reload.py --facilities 20000 --files 2000
"""

import argparse
import os
import signal
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.good_client import StampedClient, summary   # noqa: E402
from tests.support import Daemon, frame, wait_for             # noqa: E402


def facilities_conf(count, hourly=0):
    """``[app]`` and ``[big<n>]`` for n < ``count``; the first ``hourly`` rotate hourly."""
    return '[app]\nrotate = daily\nbackup_count = 3\n' + ''.join(
        '\n[big%d]\nrotate = %s\nbackup_count = 3\n' % (n, 'hourly' if n < hourly else 'daily')
        for n in range(count))


def make_files(daemon, files):
    import socket
    with socket.create_connection(('127.0.0.1', daemon.tcp_port)) as sock:
        for start in range(0, files, 500):
            sock.sendall(b''.join(frame('big%d' % n, 'hello')
                                  for n in range(start, min(files, start + 500))))
    wait_for(lambda: all(daemon.log_file('big%d' % n).exists() for n in range(files)), 120,
             0.2, 'the files')


def reloaded(daemon):
    return daemon.output().count('reloaded ')


def timed_reload(daemon, text):
    """Write ``text``, SIGHUP; return seconds until the daemon logged the reload."""
    before = reloaded(daemon)
    daemon.facilities_path.write_text(text)
    began = time.monotonic()
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: reloaded(daemon) > before, 120, 0.01, 'the reload')
    return time.monotonic() - began


def run(facilities, files, interval_s, base):
    with Daemon(base, facilities_conf(facilities)) as daemon:
        make_files(daemon, files)
        client = StampedClient(daemon.tcp_port, interval_s).start()
        time.sleep(1.0)
        hup_at = time.time()
        reload_s = timed_reload(daemon, facilities_conf(facilities, hourly=files))
        time.sleep(2.0)
        client.stop()
        pairs = client.delays(daemon.log_file('app'), since=hup_at - 0.01)
        delays = [d for d, _ in pairs]
        # SIGTERM while a further reload runs.
        daemon.facilities_path.write_text(facilities_conf(facilities))
        daemon.signal(signal.SIGHUP)
        time.sleep(0.3)
        began = time.monotonic()
        code = daemon.stop(60)
        stop_s = time.monotonic() - began
    result = {'facilities': facilities, 'files_switched': files, 'reload_s': round(reload_s, 2),
              'probes': len(delays)}
    result.update(summary(delays))
    result.update({'worst_ms_at_s': [(round(d * 1000, 1), round(s - hup_at, 2))
                                     for d, s in sorted(pairs, reverse=True)[:4]],
                   'sigterm_in_reload_s': round(stop_s, 2), 'exit': code,
                   'load_average': os.getloadavg()[0]})
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--facilities', type=int, default=20000)
    parser.add_argument('--files', type=int, default=2000)
    parser.add_argument('--interval-ms', type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix='bench-reload-') as base:
        result = run(args.facilities, args.files, args.interval_ms / 1000, base)
    for key, value in result.items():
        print('%-20s %s' % (key, value))


if __name__ == '__main__':
    main()
