#!/usr/bin/env python3
"""Throughput, CPU, memory, loss and latency of loghogd beside rsyslog (issue 7).

For every workload and every run (K runs, default 3) each system gets a fresh daemon
(so that VmHWM is that run's peak), in alternating order; the table shows medians.
See benchmarks/README.md for what each column means.

    make bench BENCH_ARGS='--quick'
    .venv/bin/python benchmarks/run.py --workloads tcp8,udp-flood --systems loghogd --runs 5
"""

import argparse
import dataclasses
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import checker, loadgen, measure, pyspy, systems  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Workload:
    """What the load generator sends; ``rate`` in messages/s over all connections."""
    name: str
    transport: str = 'tcp'
    connections: int = 1
    rate: float = None
    signed: bool = False
    zlib: bool = False
    idle_connections: int = 0
    note: str = ''
    syslog3164: bool = False   # syslog systems get RFC 3164 (BSD) records, not RFC 5424
    sealed: bool = False       # loghogd seals the file (issue 19): chain and seals

    @property
    def lossy(self):
        """Loss is a measurement here (UDP), not a failure."""
        return self.transport == 'udp'

    @property
    def latency(self):
        return self.rate is not None


WORKLOADS = {w.name: w for w in [
    Workload('tcp1', 'tcp', 1),
    Workload('tcp8', 'tcp', 8),
    Workload('tcp8-signed', 'tcp', 8, signed=True,
             note='rsyslog has no signatures: it gets the same messages unsigned'),
    Workload('tcp8-zlib', 'tcp', 8, zlib=True,
             note='rsyslog has no per-message zlib: it gets the same messages plain'),
    Workload('tcp8-sealed', 'tcp', 8, sealed=True,
             note='loghogd seals the file (sealed = yes); rsyslog has no sealing: plain'),
    Workload('tls8', 'tls', 8),
    Workload('udp-paced-10k', 'udp', 1, rate=10_000),
    # One flat-out sender: a UDP sender never blocks, so on 2 cores a second one would
    # take the daemon's core and measure the scheduler rather than the daemon.
    Workload('udp-flood', 'udp', 1),
    # Issue 18's target: 8 senders flat out, each its own source port (SO_REUSEPORT
    # spreads them over the receivers); on 2 cores they compete with the daemon.
    Workload('udp8-flood', 'udp', 8),
    Workload('tcp-paced-10k', 'tcp', 1, rate=10_000),
    Workload('udp3164-paced-10k', 'udp', 1, rate=10_000, syslog3164=True,
             note='syslog systems get RFC 3164 datagrams; loghogd its own frames'),
    Workload('idle-5k', 'tcp', idle_connections=5000),
]}
DEFAULT_WORKLOADS = list(WORKLOADS)
DEFAULT_SYSTEMS = ['loghogd', 'loghogd-w2', 'loghogd-syslog', 'rsyslog']
# Paced runs take messages/rate seconds each; this many keeps them at 10 s.
PACED_MESSAGES = 100_000
QUIET_S = {'udp': 1.0, 'tcp': 5.0, 'tls': 5.0}


def log(text):
    print(text, file=sys.stderr, flush=True)


def run_load(system, workload, instance, messages, certs):
    """One measured run against a started daemon; returns a dict of measurements."""
    transport = workload.transport
    spec = loadgen.LoadSpec(
        '127.0.0.1', instance.ports[transport][1], transport,
        'syslog3164' if workload.syslog3164 and system.fmt == 'syslog' else system.fmt, messages,
        workload.connections, workload.rate,
        loadgen.SECRET if workload.signed and system.fmt == 'loghog' else None,
        workload.zlib and system.fmt == 'loghog',
        certs['client'] if transport == 'tls' else None)
    watcher = measure.OutputWatcher(instance.output, latency=workload.latency)
    load = loadgen.Load(spec)
    try:
        # Read before the start: scanning /proc takes milliseconds the daemon would
        # spend working unaccounted.  It is idle until go().
        cpu_before = measure.cpu_seconds(instance.pid)
        runner_before = time.process_time()
        load.go()
        timeout_s = 60 + messages / (workload.rate or 5000)
        watcher.wait(messages, load.is_done, timeout_s, QUIET_S[transport])
        runner_cpu_s = time.process_time() - runner_before   # what polling cost us
        cpu_after = measure.cpu_seconds(instance.pid)
        peak_mb = measure.peak_rss_mb(instance.pid)
    finally:
        sent = load.finish()
        watcher.close()
    exit_code = instance.stop()
    result = checker.check_files(checker.output_files(instance.output), spec.tag, spec.counts(),
                                 loadgen.HOSTNAME)
    elapsed = (watcher.last_line_at - sent['start']) if watcher.last_line_at and sent['start'] else None
    received = result.received
    latencies = watcher.latencies_ms
    return {
        'messages': messages, 'received': received, 'elapsed_s': elapsed,
        'msgs_per_s': received / elapsed if elapsed and received else 0.0,
        'cpu_us_per_msg': (cpu_after - cpu_before) / received * 1e6 if received else None,
        'peak_rss_mb': peak_mb,
        'loss': result.missing, 'loss_pct': 100.0 * result.missing / messages,
        'duplicated': result.duplicated, 'garbled': result.garbled,
        'order_violations': result.order_violations,
        'lat_p50_ms': measure.percentile(latencies, 0.50),
        'lat_p99_ms': measure.percentile(latencies, 0.99),
        'lat_max_ms': max(latencies) if latencies else None,
        'runner_cpu_s': runner_cpu_s, 'refused_by_kernel': sent['refused'], 'sender_errors': sent['errors'],
        'exit_code': exit_code, 'examples': result.examples,
        'ok': result.ok(allow_loss=workload.lossy and not workload.rate,
                        allow_reorder=system.name == 'rsyslog')
        and not sent['errors'] and exit_code == 0,
    }


def run_idle(instance, workload):
    """Open ``workload.idle_connections`` connections and see what they cost in memory."""
    time.sleep(0.5)
    idle_mb = measure.rss_mb(instance.pid)
    host, port = instance.ports['tcp']
    sockets, errors = [], []
    try:
        for _ in range(workload.idle_connections):
            try:
                sockets.append(socket.create_connection((host, port), timeout=5))
            except OSError as exc:
                errors.append(str(exc))
                break
        # The daemon accepts in its own time: wait until it holds every connection (one
        # descriptor each) and its memory has settled.
        previous, deadline = -1.0, time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now_mb = measure.rss_mb(instance.pid)
            if measure.open_fds(instance.pid) >= len(sockets) and now_mb == previous:
                break
            previous = now_mb
        accepted = measure.open_fds(instance.pid) >= len(sockets)
        busy_mb = measure.rss_mb(instance.pid)
    finally:
        for sock in sockets:
            sock.close()
    # Let the daemon see every connection close before it is told to stop (rsyslog
    # 8.2302 has crashed on SIGTERM amid thousands of closing sessions).
    deadline = time.monotonic() + 15
    while measure.open_fds(instance.pid) >= len(sockets) // 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    exit_code = instance.stop()
    return {'idle_rss_mb': idle_mb, 'rss_with_connections_mb': busy_mb,
            'added_mb': busy_mb - idle_mb, 'connections': len(sockets),
            'sender_errors': errors[:1] + ([] if accepted else ['not all connections accepted']),
            'exit_code': exit_code, 'ok': not errors and accepted and exit_code == 0}


def run_one(system, workload, messages, root, certs, index, keep, profile_dir=None):
    folder = tempfile.mkdtemp(prefix='%s-%s-%d-' % (system.name, workload.name, index), dir=root)
    instance = system.start(folder, workload, certs)
    profiler = None
    if profile_dir and system.name.startswith('loghogd') and not workload.idle_connections:
        profile = os.path.join(profile_dir, '%s-%d.txt' % (workload.name, index + 1))
        profiler = pyspy.start(instance.pid, profile)
        time.sleep(0.5)     # let py-spy attach before the load starts
    try:
        if workload.idle_connections:
            result = run_idle(instance, workload)
        else:
            result = run_load(system, workload, instance, messages, certs)
            result['idle_rss_mb'] = None
    except BaseException:
        instance.stop()
        raise
    finally:
        if profiler is not None:
            try:
                profiler.wait(30)   # py-spy ends with the daemon and writes its file
            except subprocess.TimeoutExpired:
                profiler.kill()
                profiler.wait(5)
    if profiler is not None:
        result['profile'] = profile
    if not result['ok']:
        result['stderr'] = instance.stderr_tail()
        keep = True
    if keep:
        result['folder'] = folder
    else:
        shutil.rmtree(folder, ignore_errors=True)
    return result


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise(runs):
    """Medians of the runs (worst case for loss, order and failures)."""
    keys = ('msgs_per_s', 'cpu_us_per_msg', 'peak_rss_mb', 'lat_p50_ms', 'lat_p99_ms',
            'idle_rss_mb', 'rss_with_connections_mb', 'added_mb', 'loss', 'loss_pct')
    summary = {key: median([r.get(key) for r in runs]) for key in keys}
    for key in ('loss', 'order_violations', 'duplicated', 'garbled'):
        summary[key + '_max'] = max((r.get(key) or 0) for r in runs)
    summary['failed_runs'] = sum(1 for r in runs if not r['ok'])
    summary['runs'] = len(runs)
    return summary


def _fmt(value, pattern):
    return '-' if value is None else pattern % value


def table(results, workloads, names):
    """The results table as Markdown."""
    head = ('| workload | system | msgs/s | CPU µs/msg | peak RSS MB | loss | order viol. '
            '| latency p50/p99 ms | loghogd/rsyslog | checks |')
    lines = [head, '|' + '---|' * 10]
    for workload in workloads:
        by_system = {name: summarise(results[(workload.name, name)]) for name in names
                     if results.get((workload.name, name))}
        for name, s in by_system.items():
            ratio = '-'
            other = by_system.get('rsyslog')
            if name.startswith('loghogd') and other and s['msgs_per_s'] and other['msgs_per_s']:
                ratio = '%.2f' % (s['msgs_per_s'] / other['msgs_per_s'])
            checks = 'ok' if not s['failed_runs'] else 'FAIL %d/%d' % (s['failed_runs'], s['runs'])
            if workload.idle_connections:
                lines.append('| %s | %s | - | - | %s → %s (+%s) | - | - | - | - | %s |' % (
                    workload.name, name, _fmt(s['idle_rss_mb'], '%.1f'),
                    _fmt(s['rss_with_connections_mb'], '%.1f'), _fmt(s['added_mb'], '%.1f'),
                    checks))
                continue
            loss = _fmt(s['loss'], '%.0f')
            if s['loss']:
                loss += ' (%.2f%%)' % s['loss_pct']
            latency = '-' if s['lat_p99_ms'] is None else '%.2f / %.2f' % (
                s['lat_p50_ms'], s['lat_p99_ms'])
            lines.append('| %s | %s | %s | %s | %s | %s | %d | %s | %s | %s |' % (
                workload.name, name, '-' if s['msgs_per_s'] is None else '{:,.0f}'.format(s['msgs_per_s']),
                _fmt(s['cpu_us_per_msg'], '%.2f'), _fmt(s['peak_rss_mb'], '%.1f'), loss,
                s['order_violations_max'], latency, ratio, checks))
    if not lines[2:]:
        lines.append('| (no results) |')
    return '\n'.join(lines)


def machine(system_objects):
    """A description of the machine and the versions, for the README."""
    model = 'unknown'
    with open('/proc/cpuinfo') as handle:
        for line in handle:
            if line.startswith('model name'):
                model = line.split(':', 1)[1].strip()
                break
    info = {'nproc': os.cpu_count(), 'cpu': model, 'kernel': platform.release(),
            'python': platform.python_version(), 'load_average': os.getloadavg(),
            'checkout': checkout()}
    for system in system_objects:
        try:
            info[system.name] = system.version()
        except (OSError, subprocess.SubprocessError) as exc:
            info[system.name] = 'unknown (%s)' % exc
    return info


def checkout():
    """The commit measured, '+ changes' when loghogd/ or loghog/ differ from it."""
    def git(*argv):
        try:
            result = subprocess.run(['git'] + list(argv), cwd=systems.REPO,
                                    capture_output=True, text=True)
        except OSError:
            return ''
        return result.stdout.strip() if result.returncode == 0 else ''
    commit = git('rev-parse', '--short', 'HEAD')
    if not commit:
        return 'unknown'
    dirty = git('status', '--porcelain', '--', 'loghogd', 'loghog')
    return commit + (' + uncommitted changes in loghogd/loghog' if dirty else '')


def raise_fd_limit(wanted):
    """Idle-connection runs need many descriptors in us and in the daemons we start."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--messages', type=int, default=None,
                        help='messages per run (default 200,000; paced runs: at most %d)'
                        % PACED_MESSAGES)
    parser.add_argument('--runs', type=int, default=None,
                        help='runs per workload and system (default 3)')
    parser.add_argument('--workloads', default=','.join(DEFAULT_WORKLOADS),
                        help='comma-separated, from: %s' % ', '.join(WORKLOADS))
    parser.add_argument('--systems', default=','.join(DEFAULT_SYSTEMS),
                        help='comma-separated, from: %s' % ', '.join(systems.SYSTEMS))
    parser.add_argument('--quick', action='store_true',
                        help='20,000 messages and 1 run unless given: does everything work?')
    parser.add_argument('--json', metavar='FILE', help='also write every run to FILE')
    parser.add_argument('--keep', action='store_true', help='keep every run folder')
    parser.add_argument('--tmpdir', help='where run folders go (default: system temp)')
    parser.add_argument('--profile', metavar='DIR',
                        help='sample every loghogd with py-spy into DIR and summarise '
                        '(slows it down: use a separate run for the table)')
    args = parser.parse_args(argv)
    quick = args.quick
    args.messages = args.messages or (20_000 if quick else 200_000)
    args.runs = args.runs or (1 if quick else 3)
    names = [n for n in args.workloads.split(',') if n]
    for name in names:
        if name not in WORKLOADS:
            parser.error('unknown workload %r' % name)
    args.workloads = [WORKLOADS[n] for n in names]
    if args.profile and not pyspy.find_pyspy():
        parser.error('--profile needs py-spy: pip install py-spy')
    args.systems = [n for n in args.systems.split(',') if n]
    for name in args.systems:
        if name not in systems.SYSTEMS:
            parser.error('unknown system %r' % name)
    return args


def pick_systems(names):
    """The systems that can run here; says why any other is skipped."""
    chosen = []
    for name in names:
        system = systems.SYSTEMS[name]()
        problem = system.problem()
        if problem:
            log('skipping %s: %s' % (name, problem))
        else:
            chosen.append(system)
    return chosen


def run_all(args, chosen, root):
    """Every run of every workload on every system, alternating the systems' order.

    Returns ({(workload, system): [result, ...]}, [(workload, system, failed result)]).
    """
    results, failures = {}, []
    certs = systems.make_certs(os.path.join(root, 'certs'))
    for index in range(args.runs):
        for workload in args.workloads:
            order = chosen if index % 2 == 0 else chosen[::-1]
            messages = args.messages if not workload.rate else min(args.messages, PACED_MESSAGES)
            for system in order:
                if system.name == 'sink' and workload.transport == 'tls':
                    continue
                started = time.monotonic()
                try:
                    result = run_one(system, workload, messages, root, certs, index,
                                     args.keep, args.profile)
                except RuntimeError as exc:
                    result = {'ok': False, 'error': str(exc)}
                results.setdefault((workload.name, system.name), []).append(result)
                log('run %d %-14s %-8s %s (%.1f s)' % (
                    index + 1, workload.name, system.name, _brief(result),
                    time.monotonic() - started))
                if not result['ok']:
                    failures.append((workload.name, system.name, result))
    return results, failures


def report(args, argv, info, names, results, failures):
    """Print the command, the machine, the table, notes, profiles and failures."""
    print('\n' + command_line(argv))
    print('machine: %d cores, %s; Linux %s; Python %s; %s; load average at start %.2f' % (
        info['nproc'], info['cpu'], info['kernel'], info['python'],
        '; '.join('%s: %s' % (name, info[name]) for name in names), info['load_average'][0]))
    print('checkout: %s' % info['checkout'])
    print('messages per run: %d (paced: %d); medians of %d runs\n' % (
        args.messages, min(args.messages, PACED_MESSAGES), args.runs))
    print(table(results, args.workloads, names))
    for workload in args.workloads:
        if workload.note and 'rsyslog' in names:
            print('- %s: %s' % (workload.name, workload.note))
    if args.profile:
        for workload in args.workloads:
            for result in results.get((workload.name, 'loghogd'), [])[:1]:
                if result.get('profile') and os.path.exists(result['profile']):
                    print('\n' + pyspy.summarise(result['profile']))
    for workload_name, system_name, result in failures:
        print('\nFAILED %s on %s: %s' % (workload_name, system_name, json.dumps(
            {k: v for k, v in result.items() if k in (
                'error', 'examples', 'sender_errors', 'exit_code', 'stderr', 'folder',
                'loss', 'duplicated', 'garbled', 'order_violations')}, indent=1)))
    if args.json:
        with open(args.json, 'w') as handle:
            json.dump({'machine': info, 'command': command_line(argv),
                       'results': {'%s/%s' % key: runs for key, runs in results.items()}},
                      handle, indent=1, default=str)


def main(argv=None):
    """Run the benchmark; return 0, 1 when a loghogd run failed a check, 2 when none could run."""
    args = parse_args(argv)
    chosen = pick_systems(args.systems)
    if not chosen:
        log('no system to benchmark')
        return 2
    raise_fd_limit(max([w.idle_connections for w in args.workloads] + [0]) + 1024)
    info = machine(chosen)
    log('machine: %s' % json.dumps(info))
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
    root = tempfile.mkdtemp(prefix='loghog-bench-', dir=args.tmpdir)
    results, failures = {}, []
    try:
        results, failures = run_all(args, chosen, root)
    finally:
        if not args.keep and not failures:
            shutil.rmtree(root, ignore_errors=True)
        elif failures:
            log('run folders kept under %s' % root)
    report(args, argv, info, [s.name for s in chosen], results, failures)
    return 1 if any(system.startswith('loghogd') for _, system, _ in failures) else 0


def _brief(result):
    if 'error' in result:
        return 'ERROR: %s' % result['error'].splitlines()[0]
    if 'msgs_per_s' not in result:
        return 'idle %.1f MB, with %d connections %.1f MB%s' % (
            result['idle_rss_mb'], result['connections'], result['rss_with_connections_mb'],
            '' if result['ok'] else ' FAIL')
    text = '%9.0f msgs/s %6.2f µs/msg %6.1f MB loss %d order %d' % (
        result['msgs_per_s'], result['cpu_us_per_msg'] or 0, result['peak_rss_mb'],
        result['loss'], result['order_violations'])
    if result['lat_p99_ms'] is not None:
        text += ' p99 %.2f ms' % result['lat_p99_ms']
    return text + ('' if result['ok'] else ' FAIL')


def command_line(argv):
    return 'command: benchmarks/run.py %s' % ' '.join(sys.argv[1:] if argv is None else argv)


if __name__ == '__main__':
    sys.exit(main())
