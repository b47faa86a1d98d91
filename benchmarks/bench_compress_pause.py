#!/usr/bin/env python3
"""Does compressing a big backup pause loghogd's event loop? (issue 3)

A real loghogd (this checkout) runs with two facilities.  One TCP client sends a steady
stream to ``[stream]``: one message every ``--interval-ms``, numbered.  ``[big]``'s file
is planted before the start at 500 MB, one byte short of its ``max_size``; once the
stream runs, one more message to ``[big]`` makes it rotate, and the 500 MB backup goes
to the compressor (xz level 6 by default) while the stream goes on.  The daemon stamps
every line with its receive time, so for each message of the stream

    delay = receive time - send time   (the same clock: same machine)

is how long it waited for the loop, and the largest delay while the file compresses is
the loop's longest pause.  The send time is taken when ``sendall`` has returned, so that
a pause of the client itself (the machine is shared) does not count as the daemon's.
The same stream goes on once the compression is done, as long as it took (at most
``--after-s`` seconds), as a baseline: what the machine does to any process,
compression or not (the machine may be shared).

``--in-process`` measures the other way, without sockets: the daemon's real Compressor
(its worker thread, and the child process that thread runs) works on the file while this
process's main thread, standing in for the event loop, sleeps 0.5 ms at a time and notes
the longest gap between two wake-ups: what compressing costs the loop through the GIL.

    .venv/bin/python benchmarks/bench_compress_pause.py               # 500 MB, xz level 6
    .venv/bin/python benchmarks/bench_compress_pause.py --size-mb 50 --format gzip --level 9
    .venv/bin/python benchmarks/bench_compress_pause.py --in-process --size-mb 20 --level 9

Prints a table; ``--json FILE`` writes the numbers.  Not part of ``make test``: it takes
a few minutes (``tests/integration/test_rotation.py`` runs a 5 MB version).
"""

import argparse
import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from loghog.wire import encode_message  # noqa: E402

APP = 'stream'
BIG = 'big'
SUFFIXES = {'xz': '.xz', 'gzip': '.gz', 'bzip2': '.bz2'}
START_TIMEOUT_S = 30


def write_backup(path, size_mb):
    """A backup of ``size_mb`` MiB of log-like lines: a few kinds of request, varying
    numbers; xz -6 packs it about 15:1, like a web server's log."""
    paths = ['/api/items', '/api/users/%d', '/static/app.js', '/login', '/api/orders/%d/lines']
    line = '2024-01-01 %02d:%02d:%02d.%06d - web%d - INFO - GET %s 200 %d ms user=%d\n'
    target = size_mb * 1024 * 1024
    written = 0
    n = 0
    with open(path, 'w') as stream:
        while written < target:
            chunk = ''.join(
                line % ((i // 36000) % 24, (i // 600) % 60, (i // 10) % 60, (i % 10) * 100003,
                        i % 4, paths[i % 5] % (i % 5000) if '%' in paths[i % 5] else paths[i % 5],
                        (i * 7) % 300, i % 20000)
                for i in range(n, n + 10000))
            stream.write(chunk)
            written += len(chunk)
            n += 10000
    return written


def write_config(folder, fmt, level, max_size):
    with open(os.path.join(folder, 'facilities.conf'), 'w') as stream:
        stream.write('[%s]\nrotate = daily\nbackup_count = 5\nflush_every = 1000\n' % APP)
        stream.write('[%s]\nrotate = daily\nbackup_count = 5\nmax_size = %d\n' % (BIG, max_size))
    conf = os.path.join(folder, 'loghogd.conf')
    with open(conf, 'w') as stream:
        stream.write('[main]\nlogdir = log\nworkdir = work\nrundir = run\n'
                     'facilities_config = facilities.conf\n'
                     '[log]\nfilename = own/loghogd.log\nlevel = INFO\n'
                     '[compressor]\nformat = %s\nlevel = %d\n'
                     '[server]\nlisten_ipv4 = 127.0.0.1:0\nlisten_ipv6 =\n' % (fmt, level))
    return conf


def start_daemon(folder, conf):
    listen = os.path.join(folder, 'run', 'listen.json')
    output = open(os.path.join(folder, 'stderr.txt'), 'wb')
    process = subprocess.Popen([sys.executable, '-m', 'loghogd', '--config', conf],
                               cwd=REPO, stdout=output, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not os.path.exists(listen):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError('loghogd did not start:\n' + open(output.name).read()[-2000:])
        time.sleep(0.02)
    with open(listen) as stream:
        port = json.load(stream)['tcp'][0][1]
    return process, output, port


class Stream:
    """One connection, one message every ``interval_s``, numbered; ``sent_at[n]`` is when
    the client's ``sendall`` of message n returned."""

    def __init__(self, port, interval_s):
        self.sock = socket.create_connection(('127.0.0.1', port))
        self.interval_s = interval_s
        self.stopping = threading.Event()
        self.sent_at = []
        self.longest_send_gap_s = 0.0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def sent(self):
        return len(self.sent_at)

    def _run(self):
        previous = time.time()
        while not self.stopping.wait(self.interval_s):
            self.sock.sendall(encode_message(APP, 'root', int(previous), 0, 'bench',
                                             'message %d' % len(self.sent_at)))
            now = time.time()
            self.sent_at.append(now)
            self.longest_send_gap_s = max(self.longest_send_gap_s, now - previous)
            previous = now

    def stop(self):
        self.stopping.set()
        self.thread.join()
        self.sock.close()


def receive_time(line):
    """The daemon's receive stamp of a line, as Unix time (local time, microseconds)."""
    stamp = datetime.datetime.strptime(line[:26], '%Y-%m-%d %H:%M:%S.%f')
    return time.mktime(stamp.timetuple()) + stamp.microsecond / 1e6


def delays(path, sent_at, start, end):
    """(receive - send) of every line received in [start, end); never below 0 (the
    daemon may stamp a message before the client's sendall returns)."""
    found = []
    with open(path) as stream:
        for line in stream:
            received = receive_time(line)
            if start <= received < end:
                found.append(max(0.0, received - sent_at[int(line.rsplit(' ', 1)[1])]))
    return found


def summary(values):
    if not values:
        return {'messages': 0}
    ordered = sorted(values)
    return {'messages': len(values), 'max_ms': round(ordered[-1] * 1000, 2),
            'p999_ms': round(ordered[int(len(ordered) * 0.999)] * 1000, 2),
            'p99_ms': round(ordered[int(len(ordered) * 0.99)] * 1000, 2),
            'median_ms': round(ordered[len(ordered) // 2] * 1000, 3),
            'over_10ms': sum(1 for v in values if v > 0.010),
            'over_50ms': sum(1 for v in values if v > 0.050)}


def run(size_mb=500, fmt='xz', level=6, interval_s=0.001, after_s=60.0, folder=None,
        timeout_s=1800):
    """One measurement; returns a dict of the numbers.  ``folder`` (made if None) is
    removed afterwards."""
    own_folder = folder is None
    folder = folder or tempfile.mkdtemp(prefix='loghog-compress-pause.')
    try:
        big_folder = os.path.join(folder, 'log', BIG)
        os.makedirs(big_folder)
        size = write_backup(os.path.join(big_folder, 'root.log'), size_mb)
        # The planted file is hundreds of MB of dirty page cache: on ext4, every fsync of
        # the daemon would wait for the kernel to write it out (a commit of the journal
        # flushes the data it orders).  That is this benchmark's doing, not the daemon's.
        os.sync()
        conf = write_config(folder, fmt, level, max_size=size + 1)
        process, output, port = start_daemon(folder, conf)
        try:
            stream = Stream(port, interval_s)
            time.sleep(0.5)
            started = time.time()
            with socket.create_connection(('127.0.0.1', port)) as sock:   # over max_size
                sock.sendall(encode_message(BIG, 'root', int(started), 0, 'bench', 'rotate'))
            deadline = time.monotonic() + timeout_s
            while not (compressed := _compressed(big_folder, SUFFIXES[fmt])):
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError('the compression did not finish')
                time.sleep(0.05)
            finished = time.time()
            after_s = min(after_s, finished - started)
            time.sleep(after_s)
            stream.stop()
            time.sleep(0.2)   # the last lines reach the file
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(60)
            output.close()
        live = os.path.join(folder, 'log', APP, 'root.log')
        during = delays(live, stream.sent_at, started, finished)
        after = delays(live, stream.sent_at, finished, finished + after_s)
        return {
            'size_mb': round(size / 2**20, 1), 'format': fmt, 'level': level,
            'compressed_mb': round(os.path.getsize(compressed) / 2**20, 2),
            'compress_s': round(finished - started, 2), 'exit_code': code,
            'baseline_s': round(after_s, 2),
            'sent': stream.sent, 'received': len(delays(live, stream.sent_at, 0, float('inf'))),
            'during': summary(during), 'after': summary(after),
            'longest_send_gap_ms': round(stream.longest_send_gap_s * 1000, 2),
        }
    finally:
        if own_folder:
            shutil.rmtree(folder, ignore_errors=True)


def _compressed(folder, suffix):
    """The compressed backup in ``folder`` once it is complete (no uncompressed one left)."""
    names = os.listdir(folder)
    done = [n for n in names if n.startswith('root.log.') and n.endswith(suffix)]
    pending = [n for n in names if n.startswith('root.log.') and not n.endswith(suffix)]
    return os.path.join(folder, done[0]) if done and not pending else None


def longest_gap(seconds, busy=None):
    """Sleep 0.5 ms at a time for ``seconds`` (or while ``busy()``); the longest gap
    between two wake-ups, in seconds."""
    longest = 0.0
    last = time.perf_counter()
    end = last + seconds
    while (busy() if busy is not None else last < end):
        time.sleep(0.0005)
        now = time.perf_counter()
        longest = max(longest, now - last)
        last = now
    return longest


def run_in_process(size_mb=20, fmt='xz', level=6, after_s=60.0):
    """The GIL's share: the real Compressor in its thread, this thread as the loop."""
    from loghogd.compressor import Compressor
    folder = tempfile.mkdtemp(prefix='loghog-compress-gil.')
    try:
        backup = os.path.join(folder, 'root.log.2024-01-01-00-00-00-000000')
        size = write_backup(backup, size_mb)
        finished = []
        compressor = Compressor(fmt, level, lambda: None)
        compressor.start()
        started = time.time()
        compressor.submit(backup, finished.append)
        during = longest_gap(0, busy=lambda: compressor.next_deadline() is None)
        took = time.time() - started
        compressor.tick(time.time())
        compressor.close()
        return {'size_mb': round(size / 2**20, 1), 'format': fmt, 'level': level,
                'compress_s': round(took, 2), 'ok': bool(finished and finished[0].result),
                'longest_gap_during_ms': round(during * 1000, 2),
                'longest_gap_after_ms': round(longest_gap(min(after_s, took)) * 1000, 2)}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--size-mb', type=int, default=500)
    parser.add_argument('--format', choices=sorted(SUFFIXES), default='xz')
    parser.add_argument('--level', type=int, default=6)
    parser.add_argument('--interval-ms', type=float, default=1.0)
    parser.add_argument('--after-s', type=float, default=60.0)
    parser.add_argument('--in-process', action='store_true',
                        help='measure the GIL alone: the Compressor in a thread, no daemon')
    parser.add_argument('--json', metavar='FILE')
    args = parser.parse_args(argv)
    if args.in_process:
        result = run_in_process(args.size_mb, args.format, args.level, args.after_s)
        print('%s MB, %s level %d, compressed in %.1f s: longest gap of the main thread '
              '%.1f ms while compressing, %.1f ms after' % (
                  result['size_mb'], result['format'], result['level'], result['compress_s'],
                  result['longest_gap_during_ms'], result['longest_gap_after_ms']))
        if args.json:
            with open(args.json, 'w') as stream:
                json.dump(result, stream, indent=1)
        return 0 if result['ok'] else 1
    result = run(args.size_mb, args.format, args.level, args.interval_ms / 1000, args.after_s)
    print('%s MB backup, %s level %d: compressed to %s MB in %.1f s'
          % (result['size_mb'], result['format'], result['level'], result['compressed_mb'],
             result['compress_s']))
    print('messages sent %d, written %d; daemon exit code %d'
          % (result['sent'], result['received'], result['exit_code']))
    print('| delay receive - send | messages | median ms | p99 ms | p99.9 ms | max ms '
          '| > 10 ms | > 50 ms |')
    print('|---|---|---|---|---|---|---|---|')
    for name, title in (('during', 'while compressing'),
                        ('after', 'after, %.0f s' % result['baseline_s'])):
        row = result[name]
        print('| %s | %d | %s | %s | %s | %s | %s | %s |' % (
            title, row['messages'], *(row.get(key, '-') for key in (
                'median_ms', 'p99_ms', 'p999_ms', 'max_ms', 'over_10ms', 'over_50ms'))))
    print('longest gap between two sends of the client: %.1f ms' % result['longest_send_gap_ms'])
    if args.json:
        with open(args.json, 'w') as stream:
            json.dump(result, stream, indent=1)
    return 0 if result['received'] == result['sent'] and result['exit_code'] == 0 else 1


if __name__ == '__main__':
    sys.exit(main())
