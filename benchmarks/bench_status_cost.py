#!/usr/bin/env python3
"""What status publishing costs the ingest path (issue 9).

In-process, with the daemon's real Server, Writer, counters and StatusPublisher (no
sockets: they would only add noise common to every case):

1. **publish**: microseconds per snapshot (build from the counters, read /proc, JSON,
   atomic write of status.json and of the Prometheus file), with 3 and with ``--files``
   log files open.
2. **ingest**: messages per second through ``Server.ingest`` + ``Writer.flush`` in
   batches of ``--batch`` frames, running the due tasks after each batch the way
   ``Server.run_once`` does, for: no publisher at all; the publisher at the default
   ``interval = 5``; and at ``interval = 0.05`` (100 times as often, to make the cost big
   enough to see above the noise).  The cases alternate, ``--runs`` times; medians.
   Rates are per second of this process's CPU time, so that other work on a shared
   machine slows every case alike instead of whichever ran at the wrong moment.

    .venv/bin/python benchmarks/bench_status_cost.py [--messages 300000] [--runs 5]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from loghog.wire import make_payload  # noqa: E402
from loghogd.binding import bind_all  # noqa: E402
from loghogd.config import load_config  # noqa: E402
from loghogd.facilities import load_facilities  # noqa: E402
from loghogd.loop import EventLoop  # noqa: E402
from loghogd.server import Server  # noqa: E402
from loghogd.stats import Counters  # noqa: E402
from loghogd.status import StatusPublisher  # noqa: E402
from loghogd.writer import Writer  # noqa: E402

DEFAULT_INTERVAL_S = 5.0
HOT_INTERVAL_S = 0.05


class Peer:
    kind = 'tcp'
    peer_host = '127.0.0.1'
    peer = '127.0.0.1:40000'


def make_server(folder, apps):
    """A real Server on 127.0.0.1:0 with ``apps`` applications (one file each)."""
    with open(os.path.join(folder, 'facilities.conf'), 'w') as stream:
        for n in range(apps):
            stream.write('[app%d]\nrotate = daily\nbackup_count = 3\nflush_every = 100000\n' % n)
    with open(os.path.join(folder, 'loghogd.conf'), 'w') as stream:
        stream.write('[main]\nlogdir = log\nworkdir = lib\nrundir = run\n'
                     'facilities_config = facilities.conf\n'
                     '[server]\nlisten_ipv4 = 127.0.0.1:0\nlisten_ipv6 = [::1]:0\n')
    config = load_config(os.path.join(folder, 'loghogd.conf'))
    os.makedirs(config.main.rundir, exist_ok=True)
    counters = Counters()
    bound = bind_all(config)
    server = Server(config, load_facilities(config.main.facilities_config),
                    Writer(config.main.logdir, counters), counters, EventLoop(), bound)
    return server, bound


def close_server(server, bound):
    server.writer.close(time.time())
    server.loop.close()
    bound.close()


def frames_for(apps, count):
    """``count`` frames (flags, payload) of about 130 bytes, spread over ``apps`` apps."""
    return [(0, make_payload('app%d' % (n % apps), 'root', 1700000000, n, 'benchhost',
                             'INFO - request %08d took 12 ms' % n)) for n in range(count)]


def measure_publish(folder, apps, repeats):
    server, bound = make_server(folder, apps)
    try:
        server.ingest(frames_for(apps, apps * 3), Peer())
        server.writer.flush(time.time())
        publisher = StatusPublisher(server, server.config.main.rundir, DEFAULT_INTERVAL_S,
                                    os.path.join(folder, 'loghogd.prom'))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            publisher.publish(time.time())
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1e6, sorted(times)[int(len(times) * 0.99)] * 1e6
    finally:
        close_server(server, bound)


def ingest_rate(folder, frames, batch, interval_s):
    """Messages per CPU second through ingest + flush + due tasks (interval_s None: no
    publisher)."""
    server, bound = make_server(folder, 3)
    try:
        if interval_s is not None:
            server.tasks.append(StatusPublisher(server, server.config.main.rundir, interval_s,
                                                os.path.join(folder, 'loghogd.prom')))
        peer = Peer()
        batches = [frames[i:i + batch] for i in range(0, len(frames), batch)]
        ingest, flush, tasks, clock = server.ingest, server.writer.flush, server.tasks, time.time
        start = time.process_time()
        for frames_batch in batches:
            ingest(frames_batch, peer)
            now = clock()
            flush(now)
            for task in tasks:
                deadline = task.next_deadline()
                if deadline is not None and now >= deadline:
                    task.tick(now)
        elapsed = time.process_time() - start
        assert sum(server.counters.accepted.values()) == len(frames)
        return len(frames) / elapsed
    finally:
        close_server(server, bound)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--messages', type=int, default=300_000)
    parser.add_argument('--batch', type=int, default=256, help='frames per loop iteration')
    parser.add_argument('--runs', type=int, default=7)
    parser.add_argument('--files', type=int, default=200, help='files open in the big publish case')
    args = parser.parse_args(argv)
    base = '/dev/shm' if os.access('/dev/shm', os.W_OK) else None   # no disk noise

    print('publish (snapshot + status.json + Prometheus file):')
    for apps in (3, args.files):
        with tempfile.TemporaryDirectory(dir=base) as folder:
            median_us, p99_us = measure_publish(folder, apps, 200)
        print('  %4d files: median %7.0f µs, p99 %7.0f µs  -> %.3f%% of one core at interval 5 s'
              % (apps, median_us, p99_us, median_us / 1e6 / DEFAULT_INTERVAL_S * 100))

    frames = frames_for(3, args.messages)
    cases = [('no publisher', None), ('interval 5 s', DEFAULT_INTERVAL_S),
             ('interval 0.05 s', HOT_INTERVAL_S)]
    rates = {name: [] for name, _ in cases}
    for run in range(args.runs):
        order = cases if run % 2 == 0 else cases[::-1]
        for name, interval_s in order:
            with tempfile.TemporaryDirectory(dir=base) as folder:
                rates[name].append(ingest_rate(folder, frames, args.batch, interval_s))
    print('ingest (%d messages, batches of %d, median of %d runs, per CPU second):'
          % (args.messages, args.batch, args.runs))
    baseline = statistics.median(rates['no publisher'])
    for name, _ in cases:
        rate = statistics.median(rates[name])
        spread = (max(rates[name]) - min(rates[name])) / rate * 100
        print('  %-16s %9.0f msg/s  %+6.2f%%  (spread of the runs %.1f%%)'
              % (name, rate, (rate / baseline - 1) * 100, spread))
    return 0


if __name__ == '__main__':
    sys.exit(main())
