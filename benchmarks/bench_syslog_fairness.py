"""Syslog floods beside a good client (attack findings A3-9, A3-16): a real loghogd with
default settings and syslog on TCP and UDP (tests/integration/attack/syslog_tools.py); a
flood from a child process; a good client of another application sends one acknowledged
message of our own protocol every 5 ms and times each until its ack (bench_fairness.probe).
SIGTERM is sent while the flood still runs.

    .venv/bin/python benchmarks/bench_syslog_fairness.py [--seconds 6] [FLOOD ...]

Floods (syslog_tools.start_flood): udp_sd_unclaimed (60 KB datagrams of structured data
for a program nobody claims), udp_big (60 KB plain messages, written), udp_own_big (60 KB
frames of our protocol to its UDP port), tcp_newlines (8 connections: NUL-ended frames of
60 KB of line breaks), none (the baseline).
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.bench_fairness import probe                            # noqa: E402
from benchmarks.good_client import summary                             # noqa: E402
from tests.integration.attack.syslog_tools import start, start_flood   # noqa: E402

FLOODS = {'none': None, 'udp_sd_unclaimed': 'syslog_udp', 'udp_big': 'syslog_udp',
          'udp_own_big': 'udp', 'tcp_newlines': 'syslog_tcp'}


def run(flood, seconds):
    folder = tempfile.mkdtemp(prefix='bench-syslog-fairness-')
    daemon = start(Path(folder), level='WARNING')
    child = None
    try:
        if FLOODS[flood]:
            child = start_flood(flood, daemon.port(FLOODS[flood]), seconds + 10)
            time.sleep(0.5)
        result = summary(probe(daemon, seconds, 0.005))
        began = time.monotonic()
        result['exit'] = daemon.stop(timeout=30)
        result['sigterm_s'] = round(time.monotonic() - began, 2)
        return result
    finally:
        if child is not None:
            child.terminate()
            child.join()
        daemon.kill()
        shutil.rmtree(folder, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--seconds', type=float, default=6.0)
    parser.add_argument('floods', nargs='*', help='of: %s (default: all)' % ', '.join(FLOODS))
    args = parser.parse_args()
    print('load average %.2f %.2f %.2f' % os.getloadavg())
    unknown = set(args.floods) - set(FLOODS)
    if unknown:
        parser.error('unknown flood: %s' % ', '.join(sorted(unknown)))
    for flood in args.floods or list(FLOODS):
        try:
            result = run(flood, args.seconds)
        except (TimeoutError, OSError) as exc:
            result = 'no ack: %s' % exc
        print(flood, result, flush=True)


if __name__ == '__main__':
    main()
