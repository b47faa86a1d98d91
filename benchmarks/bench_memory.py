"""The daemon's memory under hostile load: thousands of idle connections, and zlib bombs.

    .venv/bin/python benchmarks/bench_memory.py                      # 5,000 TCP + 500 TLS idle, 2,000 bombs
    .venv/bin/python benchmarks/bench_memory.py --idle 10000 --tls 0 --bombs 0 --json out.json

Starts one loghogd from this checkout (in a temporary folder, on loopback, ports chosen at
run time) with ``max_connections`` sized for the run, and measures from /proc/<pid>/status:

1. after start-up and 100 messages (the baseline);
2. while ``--bombs`` zlib bombs arrive (each under 64 KiB on the wire, inflating to 60 MiB
   over TCP from 8 connections, 40 MiB over UDP), sampled every 50 ms, plus how long the
   daemon took to refuse them all;
3. with ``--idle`` plain TCP connections open and silent, then also ``--tls`` idle mutual-TLS
   connections (certificates made by scripts/loghog-server-cert and loghog-client-cert);
4. after all of them are closed.

Throughout, a well-behaved client is served: its round trip to the file is timed.

VmRSS is resident memory now; VmHWM is its high-water mark since start.  The daemon is
started with a soft RLIMIT_NOFILE of 1024, so it must raise its own limit to fit
max_connections.  Every process started here is stopped by its PID.
"""

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import zlib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from loghog.wire import HEADER, encode_message  # noqa: E402

START_TIMEOUT_S = 30


def status_kib(pid):
    """{'VmRSS': KiB, 'VmHWM': KiB} of ``pid``."""
    result = {}
    with open('/proc/%d/status' % pid) as stream:
        for line in stream:
            key, _, value = line.partition(':')
            if key in ('VmRSS', 'VmHWM'):
                result[key] = int(value.split()[0])
    return result


def nofile_limit(pid):
    with open('/proc/%d/limits' % pid) as stream:
        for line in stream:
            if line.startswith('Max open files'):
                return int(line.split()[3])
    return None


def wait_for(condition, timeout_s, what, interval_s=0.02):
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError('timed out after %gs waiting for %s' % (timeout_s, what))
        time.sleep(interval_s)


def count_lines(path):
    try:
        with open(path, 'rb') as stream:
            return stream.read().count(b'\n')
    except FileNotFoundError:
        return 0


def make_certs(folder):
    for argv in (['loghog-server-cert'], ['loghog-client-cert', 'bench']):
        subprocess.run([os.path.join(REPO, 'scripts', argv[0])] + argv[1:], cwd=folder,
                       check=True, capture_output=True, timeout=60)
    return {'ca': os.path.join(folder, 'loghog-ca.cert'),
            'server': os.path.join(folder, 'loghog-server.pem'),
            'client': os.path.join(folder, 'bench.pem')}


class Daemon:
    def __init__(self, folder, max_connections, certs):
        self.folder = folder
        with open(os.path.join(folder, 'facilities.conf'), 'w') as stream:
            stream.write('[app]\nrotate = daily\nbackup_count = 1\n')
        tls = ''
        if certs:
            tls = ('listen_ipv4_ssl = 127.0.0.1:0\npemfile = %s\ncacert = %s\n'
                   % (certs['server'], certs['ca']))
        self.conf = os.path.join(folder, 'loghogd.conf')
        with open(self.conf, 'w') as stream:
            stream.write('[main]\nlogdir = log\nworkdir = lib\nrundir = run\n'
                         'facilities_config = facilities.conf\n[log]\nfilename = own.log\n'
                         '[stats]\ninterval = 0.5\n'
                         '[server]\nlisten_ipv4 = 127.0.0.1:0\nlisten_ipv6 =\n'
                         'max_connections = %d\n%s' % (max_connections, tls))
        self.output = os.path.join(folder, 'log', 'app', 'root.log')
        self.process = None

    def start(self):
        def low_limit():
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
        listen = os.path.join(self.folder, 'run', 'listen.json')
        self.stderr = open(os.path.join(self.folder, 'stderr.txt'), 'wb')
        self.process = subprocess.Popen([sys.executable, '-m', 'loghogd', '-c', self.conf],
                                        cwd=REPO, stdout=self.stderr, stderr=self.stderr,
                                        preexec_fn=low_limit)

        def ready():
            if self.process.poll() is not None:
                raise RuntimeError('loghogd exited with %s' % self.process.returncode)
            try:
                with open(listen) as stream:
                    return json.load(stream)
            except (FileNotFoundError, ValueError):
                return None
        self.ports = wait_for(ready, START_TIMEOUT_S, 'loghogd to listen')
        return self

    @property
    def pid(self):
        return self.process.pid

    def port(self, kind):
        return self.ports[kind][0][1]

    def status(self):
        with open(os.path.join(self.folder, 'run', 'status.json')) as stream:
            return json.load(stream)

    def open_connections(self):
        return sum(self.status()['connections']['open'].values())

    def refused(self):
        return self.status()['totals']['rejected']

    def udp_drops(self):
        return self.status()['udp']['kernel_drops'] or 0

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.stderr.close()
        return self.process.returncode


def zlib_bomb(inflated_bytes):
    compressor = zlib.compressobj(9)
    chunk = b' ' * (1024 * 1024)
    parts = [compressor.compress(b'{"version": 1, "app_id": "app", "body": "')]
    parts += [compressor.compress(chunk) for _ in range(inflated_bytes // len(chunk))]
    parts.append(compressor.flush())
    return b''.join(parts)


class Sampler(threading.Thread):
    """Samples VmRSS every 50 ms until stopped; ``peak_kib`` is the largest seen."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kib = 0
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            try:
                self.peak_kib = max(self.peak_kib, status_kib(self.pid)['VmRSS'])
            except OSError:
                return
            self.done.wait(0.05)

    def stop(self):
        self.done.set()
        self.join()
        return self.peak_kib


def round_trip_s(daemon, sock, number):
    """Send one message on ``sock`` and time until it is in the file."""
    before = count_lines(daemon.output)
    started = time.monotonic()
    sock.sendall(encode_message('app', 'root', 1, 0, 'bench', 'probe %d' % number))
    wait_for(lambda: count_lines(daemon.output) > before, 30, 'the probe message', 0.001)
    return time.monotonic() - started


def open_idle(daemon, count, tls_context=None):
    sockets = []
    kind = 'tls' if tls_context else 'tcp'
    for _ in range(count):
        sock = socket.create_connection(('127.0.0.1', daemon.port(kind)), timeout=30)
        if tls_context:
            sock = tls_context.wrap_socket(sock)
        sockets.append(sock)
    return sockets


def measure(args):
    results = {'idle_tcp': args.idle, 'idle_tls': args.tls, 'bombs': args.bombs}
    needed = args.idle + args.tls + 200
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
    folder = tempfile.mkdtemp(prefix='loghog-bench-memory-', dir=args.tmpdir)
    certs = make_certs(folder) if args.tls else None
    daemon = Daemon(folder, args.idle + args.tls + 100, certs).start()
    idle = []
    try:
        results['daemon_nofile_limit'] = nofile_limit(daemon.pid)
        probe = socket.create_connection(('127.0.0.1', daemon.port('tcp')), timeout=30)
        probe.sendall(b''.join(encode_message('app', 'root', 1, 0, 'bench', 'warm %d' % i)
                               for i in range(100)))
        wait_for(lambda: count_lines(daemon.output) >= 100, 30, 'the first 100 messages')
        results['baseline'] = status_kib(daemon.pid)
        results['probe_baseline_s'] = round_trip_s(daemon, probe, 0)

        if args.bombs:
            stream_bomb = zlib_bomb(60 * 1024 * 1024)
            datagram_bomb = zlib_bomb(40 * 1024 * 1024)
            results['bomb_bytes'] = {'stream': len(stream_bomb), 'datagram': len(datagram_bomb),
                                     'inflates_to_mib': {'stream': 60, 'datagram': 40}}
            stream_frame = HEADER.pack(len(stream_bomb), 1) + stream_bomb
            datagram_frame = HEADER.pack(len(datagram_bomb), 1) + datagram_bomb
            senders = [socket.create_connection(('127.0.0.1', daemon.port('tcp')), timeout=60)
                       for _ in range(8)]
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sampler = Sampler(daemon.pid)
            sampler.start()
            started = time.monotonic()
            for i in range(args.bombs):
                if i % 2:
                    senders[i % 8].sendall(stream_frame)
                else:
                    try:
                        udp.sendto(datagram_frame, ('127.0.0.1', daemon.port('udp')))
                    except OSError:
                        pass
                if i % 500 == 0:
                    results.setdefault('probe_during_bombs_s', []).append(
                        round_trip_s(daemon, probe, 3 + i))
            tcp_bombs = args.bombs // 2
            # Refused means counted: every TCP bomb, and every UDP one the kernel delivered.
            wait_for(lambda: daemon.refused() >= tcp_bombs
                     and daemon.refused() + daemon.udp_drops() >= args.bombs, 120,
                     'the bombs to be refused')
            results['bombs_s'] = time.monotonic() - started
            results['bombs_refused'] = daemon.refused()
            results['bombs_dropped_by_kernel'] = daemon.udp_drops()
            for sock in senders:
                sock.close()
            udp.close()
            results['probe_after_bombs_s'] = round_trip_s(daemon, probe, 10 ** 6)
            results['bombs_peak_rss_kib'] = sampler.stop()
            results['after_bombs'] = status_kib(daemon.pid)
        started = time.monotonic()
        idle += open_idle(daemon, args.idle)
        wait_for(lambda: daemon.open_connections() >= args.idle + 1, 60, 'the idle connections')
        results['open_idle_tcp_s'] = time.monotonic() - started
        results['with_idle_tcp'] = status_kib(daemon.pid)
        results['probe_with_idle_tcp_s'] = round_trip_s(daemon, probe, 1)

        if args.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.load_verify_locations(certs['ca'])
            context.load_cert_chain(certs['client'])
            started = time.monotonic()
            idle += open_idle(daemon, args.tls, context)
            wait_for(lambda: daemon.open_connections() >= args.idle + args.tls + 1, 60,
                     'the idle TLS connections')
            results['open_idle_tls_s'] = time.monotonic() - started
            results['with_idle_tcp_and_tls'] = status_kib(daemon.pid)
            results['probe_with_idle_tls_s'] = round_trip_s(daemon, probe, 2)

        for sock in idle:
            sock.close()
        idle = []
        wait_for(lambda: daemon.open_connections() <= 1, 60, 'the idle connections to close')
        results['after_closing'] = status_kib(daemon.pid)

        probe.close()
        results['written_lines'] = count_lines(daemon.output)
    finally:
        for sock in idle:
            sock.close()
        results['exit_code'] = daemon.stop()
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            results['folder'] = folder
    return results


def report(r):
    def mib(kib):
        return '%.1f MiB' % (kib / 1024)
    base = r['baseline']['VmRSS']
    lines = ['loghogd memory (VmRSS now / VmHWM peak since start)',
             '  baseline (started, 100 messages):  %s / %s' % (mib(base), mib(r['baseline']['VmHWM'])),
             '  daemon soft RLIMIT_NOFILE:         %s (started with 1024)' % r['daemon_nofile_limit']]
    if r['bombs']:
        probes = r['probe_during_bombs_s']
        lines.append('  %5d zlib bombs (%d B on TCP -> 60 MiB, %d B on UDP -> 40 MiB): peak VmRSS '
                     '%s, after %s / %s; %d refused (%d UDP dropped by the kernel) in %.1f s; a '
                     'message lands in at most %.0f ms meanwhile'
                     % (r['bombs'], r['bomb_bytes']['stream'], r['bomb_bytes']['datagram'],
                        mib(r['bombs_peak_rss_kib']), mib(r['after_bombs']['VmRSS']),
                        mib(r['after_bombs']['VmHWM']), r['bombs_refused'],
                        r['bombs_dropped_by_kernel'], r['bombs_s'],
                        max(probes + [r['probe_after_bombs_s']]) * 1000))
    if r['idle_tcp']:
        now = r['with_idle_tcp']
        lines.append('  %5d idle TCP connections:       %s / %s  (+%.2f KiB per connection; '
                     'opened in %.1f s; a message still lands in %.0f ms)'
                     % (r['idle_tcp'], mib(now['VmRSS']), mib(now['VmHWM']),
                        (now['VmRSS'] - base) / r['idle_tcp'], r['open_idle_tcp_s'],
                        r['probe_with_idle_tcp_s'] * 1000))
    if r['idle_tls']:
        now, before = r['with_idle_tcp_and_tls'], r['with_idle_tcp']
        lines.append('  + %5d idle TLS connections:     %s / %s  (+%.1f KiB per TLS connection; '
                     'handshaken in %.1f s; a message still lands in %.0f ms)'
                     % (r['idle_tls'], mib(now['VmRSS']), mib(now['VmHWM']),
                        (now['VmRSS'] - before['VmRSS']) / r['idle_tls'], r['open_idle_tls_s'],
                        r['probe_with_idle_tls_s'] * 1000))
    lines.append('  after closing them:                %s / %s'
                 % (mib(r['after_closing']['VmRSS']), mib(r['after_closing']['VmHWM'])))
    lines.append('  lines written: %d (100 + probes; nothing from the bombs); exit code %s'
                 % (r['written_lines'], r['exit_code']))
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--idle', type=int, default=5000, help='idle TCP connections (5000)')
    parser.add_argument('--tls', type=int, default=500, help='idle TLS connections (500)')
    parser.add_argument('--bombs', type=int, default=2000, help='zlib bombs to send (2000)')
    parser.add_argument('--json', metavar='FILE', help='also write the raw results here')
    parser.add_argument('--tmpdir', help='where to make the run folder')
    parser.add_argument('--keep', action='store_true', help='keep the run folder')
    args = parser.parse_args(argv)
    results = measure(args)
    print(report(results))
    if args.json:
        with open(args.json, 'w') as stream:
            json.dump(results, stream, indent=2)
    return 0 if results['exit_code'] == 0 else 1


if __name__ == '__main__':
    sys.exit(main())
