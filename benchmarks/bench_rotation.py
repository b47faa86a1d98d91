#!/usr/bin/env python3
"""How long does rotating many files at the same minute hold the event loop? (issue 15)

The rotator alone, in this process, on a temporary folder: ``--files`` per-host files of
one ``file_per_host`` facility (``rotate = * * * * *``), each with one line, all due at
the same minute.  The loop is played as the daemon plays it: after a flush, a task whose
``next_deadline()`` has come gets ``tick(now)``; the benchmark calls ``tick`` until
nothing is due and reports

- ``start_s``: Rotator.start (load state, list folders, recover, prune),
- ``total_s``: every rotation done (all ticks together),
- ``longest_tick_ms``: the longest single tick: how long the loop is held at once,
- ``ticks``: how many loop passes the work took,

plus ``first_write_s``: the first line of each of the files through Writer.flush, which
asks the rotator about each new file (before issue 15: the state was rewritten whole,
with two fsyncs, and every rotation listed the folder).

Compression is replaced by a stub (the backups stay uncompressed): compression runs in a
child process and is measured by bench_compress_pause.py.

    .venv/bin/python benchmarks/bench_rotation.py --files 10000
    .venv/bin/python benchmarks/bench_rotation.py --files 3000 --json /tmp/rot.json
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from loghogd.facilities import load_facilities   # noqa: E402
from loghogd.rotation import Rotator             # noqa: E402
from loghogd.stats import Counters               # noqa: E402
from loghogd.writer import Writer                # noqa: E402


class StubJob:
    def __init__(self, path):
        self.path = path
        self.cancelled = False
        self.result = None


class StubCompressor:
    """Takes jobs and never does them: the rotator's own work only."""

    def __init__(self):
        self.jobs = 0

    def submit(self, path, on_done):
        self.jobs += 1
        return StubJob(path)

    def recover(self, folder, is_backup, on_done):
        return []


def run(files, base):
    logdir, workdir = os.path.join(base, 'log'), os.path.join(base, 'lib')
    os.makedirs(logdir)
    os.makedirs(workdir)
    conf = os.path.join(base, 'facilities.conf')
    with open(conf, 'w') as stream:
        stream.write('[fleet]\nrotate = * * * * *\nbackup_count = 3\nfile_per_host = yes\n'
                     'max_hosts = %d\n' % files)
    table = load_facilities(conf)
    facility = table.lookup('fleet', 'root')
    counters = Counters()
    writer = Writer(logdir, counters)
    compressor = StubCompressor()
    rotator = Rotator(writer, table, logdir, workdir, compressor, counters)
    minute = (int(time.time()) // 60 + 10) * 60     # a minute boundary, in the future
    now = minute - 30.0
    began = time.perf_counter()
    rotator.start(now)
    start_s = time.perf_counter() - began
    began = time.perf_counter()
    for index in range(files):
        writer.add(facility, 'host%05d.example.com' % index, 'a line\n')
        if index % 500 == 499:       # the loop flushes what one pass read
            writer.flush(now)
            _tick_due(rotator, now)
    writer.flush(now)
    _tick_due(rotator, now)
    first_write_s = time.perf_counter() - began
    ticks, longest, began, durations = 0, 0.0, time.perf_counter(), []
    now = minute + 0.5
    while True:
        deadline = rotator.next_deadline()
        if deadline is None or now < deadline:
            break
        tick_began = time.perf_counter()
        rotator.tick(now)
        durations.append(time.perf_counter() - tick_began)
        longest = max(longest, durations[-1])
        ticks += 1
    total_s = time.perf_counter() - began
    writer.close(now)
    rotator.close()
    backups = sum(1 for name in os.listdir(os.path.join(logdir, 'fleet')) if '.log.' in name)
    return {'files': files, 'backups': backups, 'start_s': round(start_s, 3),
            'first_write_s': round(first_write_s, 3), 'total_s': round(total_s, 3),
            'longest_tick_ms': round(longest * 1000, 1), 'ticks': ticks,
            'median_tick_ms': round(sorted(durations)[len(durations) // 2] * 1000, 1)
            if durations else None,
            'ticks_over_50ms': sum(1 for d in durations if d > 0.05),
            'compress_jobs': compressor.jobs}


def _tick_due(rotator, now):
    deadline = rotator.next_deadline()
    while deadline is not None and now >= deadline:
        rotator.tick(now)
        deadline = rotator.next_deadline()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--files', type=int, default=10000)
    parser.add_argument('--json', metavar='FILE')
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix='bench-rotation-')
    try:
        result = run(args.files, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    for key, value in result.items():
        print('%-16s %s' % (key, value))
    if args.json:
        with open(args.json, 'w') as stream:
            json.dump(result, stream, indent=1)


if __name__ == '__main__':
    main()
