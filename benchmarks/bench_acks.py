#!/usr/bin/env python3
"""What acknowledged delivery costs: a stream through LoghogHandler with and without acks (issue 8).

Each run starts a fresh loghogd from this checkout (127.0.0.1, port 0, facility ``[bench]``
with the given ``flush_every``) and a client process that attaches a ``LoghogHandler`` to a
logger, sends one warm-up record and waits until it is on disk (the connection is up), then,
on the runner's signal, calls ``logger.info()`` ``--messages`` times as fast as it can and
``flush()``es.  The runner follows the output file.  The modes alternate run by run (plain
first on odd runs), and the table shows medians:

- msgs/s: messages ÷ (time the last line was seen on disk − time the first call began);
  the file is polled every millisecond.  Both modes are timed to the disk, so a plain
  handler's ``flush()``, which only waits for the kernel to take the bytes, does not
  flatter it.
- emit µs: the client's mean time per ``logger.info()`` call (what the application pays).
- flush ms: how long the client's ``flush()`` took after the last call (acks: until all
  were acknowledged).
- client CPU µs/msg: the client process's CPU time (all threads: the application's calls
  and the sender) from the first call until ``flush()`` returned ÷ messages.
- daemon CPU µs/msg: the daemon's user + system CPU over the run ÷ messages.
- acks/plain: the median of the ratios of each run's pair (acks run ÷ the plain run next
  to it), which is steadier than the ratio of medians on a busy machine.

The CPU columns are the robust measure on a shared machine: wall-clock rates swing with
whatever else runs, CPU time per message much less.

Every run must deliver every message exactly once and in order; a run that does not fails
the benchmark (exit status 1).  The handler's buffer has room for the whole stream, so
nothing is dropped in either mode.

    .venv/bin/python benchmarks/bench_acks.py [--messages 100000] [--runs 5]
                                              [--flush-every 1,1000] [--tls]
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks import measure, systems  # noqa: E402
from benchmarks.run import checkout  # noqa: E402

START_TIMEOUT_S = 20
# A run that has not delivered everything by then has failed.
RUN_TIMEOUT_S = 120

# The client: its own interpreter, so that the runner's polling never takes its GIL.
CLIENT = r'''
import json, logging, sys, time
from loghog import LoghogHandler
port, count, acknowledged, tls = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == 'acks', sys.argv[4]
ssl_info = json.loads(tls) if tls != '-' else None
handler = LoghogHandler('bench', '127.0.0.1', port, ssl_info=ssl_info, acknowledged=acknowledged,
                        max_buffer_size=count + 1000, flush_timeout_s=60, close_timeout_s=10,
                        print_debug=True)
handler.setFormatter(logging.Formatter('%(message)s'))
logger = logging.getLogger('bench')
logger.propagate = False
logger.setLevel(logging.INFO)
logger.addHandler(handler)
logger.info('warm-up')
handler.flush()
print('ready', flush=True)
sys.stdin.readline()
info = logger.info
cpu_started = time.process_time()
started = time.monotonic()
for n in range(count):
    info('bench message %08d with some more text to make a typical log line of ~100 bytes', n)
emitted = time.monotonic()
handler.flush()
flushed = time.monotonic()
cpu_s = time.process_time() - cpu_started
handler.close()
print(json.dumps({'started': started, 'emit_s': emitted - started, 'flush_s': flushed - emitted,
                  'client_cpu_s': cpu_s,
                  'dropped': handler.dropped, 'unconfirmed': handler.unconfirmed}), flush=True)
'''


def write_config(folder, flush_every, certs):
    with open(os.path.join(folder, 'facilities.conf'), 'w') as handle:
        handle.write('[bench]\nrotate = daily\nbackup_count = 3\nflush_every = %d\n' % flush_every)
    tls = ''
    if certs:
        tls = ('listen_ipv4_ssl = 127.0.0.1:0\npemfile = %s\ncacert = %s\n'
               % (certs['server_pem'], certs['ca']))
    path = os.path.join(folder, 'loghogd.conf')
    with open(path, 'w') as handle:
        handle.write('[main]\nlogdir = log\nworkdir = work\nrundir = run\n'
                     'facilities_config = facilities.conf\n\n'
                     '[log]\nfilename = own/loghogd.log\nlevel = INFO\n\n'
                     '[server]\nlisten_ipv4 = 127.0.0.1:0\nlisten_ipv6 =\n%s' % tls)
    return path


def start_daemon(folder, flush_every, certs):
    """Start loghogd in ``folder``; return (process, port, output file)."""
    conf = write_config(folder, flush_every, certs)
    env = dict(os.environ, PYTHONPATH=REPO)
    with open(os.path.join(folder, 'stderr.txt'), 'wb') as err:
        process = subprocess.Popen([sys.executable, '-m', 'loghogd', '--config', conf],
                                   stdin=subprocess.DEVNULL, stdout=err, stderr=err, cwd=folder,
                                   env=env)
    listen = os.path.join(folder, 'run', 'listen.json')
    deadline = time.monotonic() + START_TIMEOUT_S
    while not os.path.exists(listen):
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            raise RuntimeError('loghogd did not start:\n' + tail(folder))
        time.sleep(0.02)
    time.sleep(0.01)  # the file is written whole, but be sure it is complete
    with open(listen) as handle:
        ports = json.load(handle)
    port = ports['tls' if certs else 'tcp'][0][1]
    return process, port, os.path.join(folder, 'log', 'bench', 'root.log')


def stop(process):
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def tail(folder):
    try:
        with open(os.path.join(folder, 'stderr.txt'), errors='replace') as handle:
            return handle.read()[-2000:]
    except OSError:
        return ''


def run_once(mode, messages, flush_every, certs, root):
    """One measured run; return a dict of results (``problem`` set when it failed)."""
    folder = tempfile.mkdtemp(prefix=f'{mode}-', dir=root)
    process, port, output = start_daemon(folder, flush_every, certs)
    tls = json.dumps({'pemfile': certs['client_pem'], 'cacert': certs['ca']}) if certs else '-'
    client = subprocess.Popen([sys.executable, '-c', CLIENT, str(port), str(messages), mode, tls],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO))
    result = {'mode': mode}
    try:
        if client.stdout.readline().strip() != 'ready':
            raise RuntimeError('the client did not start:\n' + client.stderr.read()[-2000:])
        watcher = measure.OutputWatcher(output)
        watcher.poll()  # the warm-up line
        cpu_before = measure.cpu_seconds(process.pid)
        client.stdin.write('go\n')
        client.stdin.flush()
        expected = messages + 1
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while watcher.lines < expected and time.monotonic() < deadline:
            if not watcher.poll():
                time.sleep(0.001)
        cpu_s = measure.cpu_seconds(process.pid) - cpu_before
        report = json.loads(client.stdout.readline() or '{}')
        client.wait(30)
        result.update(report)
        if watcher.lines >= expected:
            result['msgs_per_s'] = messages / (watcher.last_line_at - report['started'])
            result['cpu_us'] = cpu_s * 1e6 / messages
        result['problem'] = check(output, messages) or (
            None if client.returncode == 0 else 'client exited %s' % client.returncode)
        stderr = client.stderr.read()
        if 'no acknowledgement' in stderr or 'lost' in stderr:
            result['problem'] = result['problem'] or stderr.strip()[-300:]
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        for stream in (client.stdin, client.stdout, client.stderr):
            stream.close()
        code = stop(process)
        if code != 0:
            result['problem'] = result.get('problem') or 'loghogd exited %s' % code
    if result.get('problem') is None:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        result['problem'] += ' (kept %s)' % folder
    return result


def check(output, messages):
    """None when the file holds the warm-up line and every message once, in order."""
    with open(output, 'rb') as handle:
        lines = handle.read().splitlines()
    numbers = [int(line.split(b'bench message ')[1][:8]) for line in lines[1:]]
    if numbers != list(range(messages)):
        missing = messages - len(set(numbers))
        return '%d lines for %d messages: %d missing, %d duplicated' % (
            len(numbers), messages, missing, len(numbers) - len(set(numbers)))
    return None


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--messages', type=int, default=100_000, help='per run (default 100000)')
    parser.add_argument('--runs', type=int, default=5, help='per mode and flush_every (default 5)')
    parser.add_argument('--flush-every', default='1,1000',
                        help="the facility's flush_every values to measure (default 1,1000)")
    parser.add_argument('--tls', action='store_true', help='over TLS instead of TCP')
    options = parser.parse_args(argv)
    root = tempfile.mkdtemp(prefix='bench-acks-')
    certs = None
    if options.tls:
        made = systems.make_certs(os.path.join(root, 'certs'))
        certs = {'server_pem': made['server_pem'], 'ca': made['ca'],
                 'client_pem': os.path.join(root, 'certs', 'client-combined.pem')}
        with open(certs['client_pem'], 'w') as out:
            for name in ('client.key', 'client.pem'):
                with open(os.path.join(root, 'certs', name)) as handle:
                    out.write(handle.read())
    failed = False
    rows = []
    try:
        for flush_every in [int(v) for v in options.flush_every.split(',')]:
            results = {'plain': [], 'acks': []}
            for index in range(options.runs):
                order = ('plain', 'acks') if index % 2 == 0 else ('acks', 'plain')
                for mode in order:
                    result = run_once(mode, options.messages, flush_every, certs, root)
                    results[mode].append(result)
                    print('  flush_every=%d run %d %-5s %s' % (
                        flush_every, index + 1, mode,
                        '%.0f msgs/s' % result['msgs_per_s'] if result.get('msgs_per_s')
                        else 'no rate'), file=sys.stderr, flush=True)
                    if result.get('problem'):
                        failed = True
                        print('    FAILED: %s' % result['problem'], file=sys.stderr)
            rows.append((flush_every, results))
    finally:
        if not failed:
            shutil.rmtree(root, ignore_errors=True)
    print_table(rows, options)
    return 1 if failed else 0


def print_table(rows, options):
    print('LoghogHandler stream, %d messages per run, %d runs per cell (median), %s, '
          'Python %s, %d CPUs, commit %s' % (options.messages, options.runs,
                                             'TLS' if options.tls else 'TCP',
                                             sys.version.split()[0], os.cpu_count(), checkout()))
    print('%-12s %-6s %10s %17s %9s %9s %11s %11s %7s' % (
        'flush_every', 'mode', 'msgs/s', 'range', 'emit µs', 'flush ms', 'client CPU',
        'daemon CPU', 'failed'))
    print('%-12s %-6s %10s %17s %9s %9s %11s %11s' % ('', '', '', '', '', '', 'µs/msg', 'µs/msg'))
    for flush_every, results in rows:
        for mode in ('plain', 'acks'):
            runs = results[mode]
            rates = [r['msgs_per_s'] for r in runs if r.get('msgs_per_s')]
            emit = median([r['emit_s'] * 1e6 / options.messages for r in runs if 'emit_s' in r])
            flush = median([r['flush_s'] * 1e3 for r in runs if 'flush_s' in r])
            client = median([r['client_cpu_s'] * 1e6 / options.messages
                             for r in runs if 'client_cpu_s' in r])
            cpu = median([r.get('cpu_us') for r in runs])
            print('%-12d %-6s %10s %17s %9s %9s %11s %11s %7d' % (
                flush_every, mode, '%.0f' % median(rates) if rates else '-',
                '%.0f-%.0f' % (min(rates), max(rates)) if rates else '-',
                _fmt(emit, '%.2f'), _fmt(flush, '%.1f'), _fmt(client, '%.2f'), _fmt(cpu, '%.2f'),
                sum(1 for r in runs if r.get('problem'))))
        ratios = [a['msgs_per_s'] / p['msgs_per_s'] for p, a in zip(results['plain'], results['acks'])
                  if a.get('msgs_per_s') and p.get('msgs_per_s')]
        if ratios:
            print('%-12s acks/plain throughput: %.2f (median of %d pairs, %.2f-%.2f; target: '
                  'at least 0.80)' % ('', median(ratios), len(ratios), min(ratios), max(ratios)))


def _fmt(value, pattern):
    return '-' if value is None else pattern % value


if __name__ == '__main__':
    sys.exit(main())
