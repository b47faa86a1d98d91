#!/usr/bin/env python3
"""``loghogd logs`` against ``xzcat | grep`` on a history of xz backups (issue 17).

Writes, in a temporary log folder, ``--backups`` hourly xz backups of ``--size-mb`` MB of
text lines each (as loghogd writes them) plus a live file, then times, best of
``--repeat``:

- ``xzcat <every backup> | grep -c PATTERN`` (the shell's way),
- ``loghogd logs APP --grep PATTERN -o raw | wc -l`` over the same files,
- ``loghogd logs APP --since T --until T+1h -o raw`` for one hour in the middle, and how
  many files it opened (from the reader's own list).

    .venv/bin/python benchmarks/bench_logs.py [--backups 30] [--size-mb 30] [--repeat 3]
"""

import argparse
import datetime
import io
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from loghogd import logs  # noqa: E402

START = datetime.datetime(2026, 11, 1)
PATTERN = 'id=r-0042424'


def make_history(folder, backups, size_mb):
    """Hourly backups ``root.log.<stamp>.xz`` and a live ``root.log``; lines spread evenly."""
    os.makedirs(folder)
    size = size_mb * 1000 * 1000
    serial = 0
    for hour in range(backups + 1):
        begin = START + datetime.timedelta(hours=hour)
        out = io.StringIO()
        written = 0
        lines = []
        while written < size:
            line = '%s - web%d - INFO - GET /api/orders/%d took %d ms id=r-%07d\n' % (
                (begin + datetime.timedelta(microseconds=serial % 3_600_000_000 // 1000 * 997)
                 ).strftime('%Y-%m-%d %H:%M:%S.%f'), serial % 7, serial, serial % 500, serial)
            lines.append(line)
            written += len(line)
            serial += 1
        lines.sort()
        out.write(''.join(lines))
        data = out.getvalue().encode()
        if hour == backups:
            with open(os.path.join(folder, 'root.log'), 'wb') as stream:
                stream.write(data[:size // 10])
        else:
            name = 'root.log.%s.xz' % begin.strftime('%Y-%m-%d-%H-%M-%S-%f')
            with open(os.path.join(folder, name), 'wb') as stream:
                stream.write(lzma.compress(data, preset=0))
        print('  wrote hour %d of %d' % (hour + 1, backups + 1), file=sys.stderr, flush=True)


def best(command, repeat):
    times = []
    output = None
    for _ in range(repeat):
        started = time.perf_counter()
        output = subprocess.run(command, shell=True, capture_output=True, check=False).stdout
        times.append(time.perf_counter() - started)
    return min(times), output.decode().strip()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--backups', type=int, default=30)
    parser.add_argument('--size-mb', type=int, default=30)
    parser.add_argument('--repeat', type=int, default=3)
    args = parser.parse_args(argv)
    base = tempfile.mkdtemp(prefix='bench-logs-')
    try:
        folder = os.path.join(base, 'log', 'app')
        make_history(folder, args.backups, args.size_mb)
        with open(os.path.join(base, 'loghogd.conf'), 'w') as stream:
            stream.write('[main]\nlogdir = %s\nfacilities_config = %s\n'
                         % (os.path.join(base, 'log'), os.path.join(base, 'facilities.conf')))
        with open(os.path.join(base, 'facilities.conf'), 'w') as stream:
            stream.write('[app]\nrotate = hourly\nbackup_count = 1000\n')
        python = sys.executable
        conf = os.path.join(base, 'loghogd.conf')
        xz_files = ' '.join(sorted(n for n in os.listdir(folder) if n.endswith('.xz')))
        shell, shell_count = best('cd %s && xzcat %s | grep -c %s' % (folder, xz_files, PATTERN),
                                  args.repeat)
        ours, ours_count = best('%s -m loghogd logs -c %s app --grep %s -o raw | wc -l'
                                % (python, conf, PATTERN), args.repeat)
        middle = START + datetime.timedelta(hours=args.backups // 2, minutes=10)
        window = (middle.strftime('%Y-%m-%dT%H:%M'),
                  (middle + datetime.timedelta(hours=1)).strftime('%Y-%m-%dT%H:%M'))
        hour, hour_count = best('%s -m loghogd logs -c %s app --since %s --until %s -o raw | wc -l'
                                % ((python, conf) + window), args.repeat)
        files = logs.LogFiles(folder, 'root', per_host=False)
        opened = []
        since, until = (datetime.datetime.fromisoformat(t) for t in window)
        for _ in logs.history(files, since, until, None, opened):
            pass
        total_mb = args.backups * args.size_mb
        print('history: %d xz backups of %d MB of text (%d MB), Python %s, %d CPUs'
              % (args.backups, args.size_mb, total_mb, sys.version.split()[0], os.cpu_count()))
        print('%-58s %8s %8s' % ('command', 'best s', 'lines'))
        print('%-58s %8.2f %8s' % ('xzcat ... | grep -c %s' % PATTERN, shell, shell_count))
        print('%-58s %8.2f %8s' % ('loghogd logs --grep %s -o raw' % PATTERN, ours, ours_count))
        print('%-58s %8.2f %8s' % ('loghogd logs --since/--until (one hour)', hour, hour_count))
        print('files the one-hour window opened: %d of %d (%s)'
              % (len(opened), args.backups + 1, ', '.join(os.path.basename(p) for p in opened)))
    finally:
        shutil.rmtree(base)


if __name__ == '__main__':
    main()
