"""Running real loghogd processes in tests: config files in a tmp folder, ports chosen at run
time (port 0, read back from <rundir>/listen.json), stopped by PID with the exit code checked.
"""

import bz2
import contextlib
import gzip
import json
import logging
import lzma
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from loghog.wire import encode_message

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / 'scripts'


# Integration test modules that run against the single-process daemon and against the one
# with receiver processes (issue 18) say so with ``pytestmark = each_workers``: their tests
# that start daemons with daemon_factory run once per [server] workers value (conftest.py).
WORKERS = [1, 2]
each_workers = pytest.mark.each_workers


def free_port(host='127.0.0.1'):
    """Return a loopback port that nothing listens on right now (for a process that must bind
    it itself; prefer ``reserve_port`` when the test can hold the socket)."""
    family = socket.AF_INET6 if ':' in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


# README: on SIGTERM the daemon finishes its writes and exits within 10 s.
SIGTERM_BOUND_S = 10.0


def stop_within_bound(daemon, bound_s=SIGTERM_BOUND_S):
    """SIGTERM ``daemon``; assert that it exits 0 within ``bound_s``; return the seconds."""
    began = time.monotonic()
    assert daemon.stop(timeout=30) == 0
    elapsed = time.monotonic() - began
    assert elapsed < bound_s, 'SIGTERM took %.1fs' % elapsed
    return elapsed


def terminate(process, timeout=40):
    """SIGTERM ``process`` and return its exit status; one that has not exited after
    ``timeout`` seconds is killed and the test fails (subprocess.TimeoutExpired)."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


def make_certs(folder, *clients, domain=None):
    """A CA and a server certificate in ``folder`` (``loghog-ca.cert``, ``loghog-server.pem``,
    or ``<domain>-…``) and a ``<name>.pem`` per client, made by the project's own scripts."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    commands = [['loghog-server-cert'] + ([domain] if domain else [])]
    commands += [['loghog-client-cert', name, '.'] for name in clients]
    for command in commands:
        subprocess.run(['sh', str(SCRIPTS / command[0])] + command[1:], cwd=str(folder),
                       check=True, capture_output=True, timeout=60)
    return folder


def log_files(daemon):
    """{path relative to the daemon's log folder: lines} for every file under it."""
    result = {}
    for folder, _, names in os.walk(daemon.logdir):
        for name in names:
            path = os.path.join(folder, name)
            result[os.path.relpath(path, daemon.logdir)] = read_lines(path)
    return result


def wait_for(condition, timeout=10.0, interval=0.02, message='condition'):
    """Poll ``condition()`` until it returns a true value; return it, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError('timed out after %gs waiting for %s' % (timeout, message))
        time.sleep(interval)


def read_lines(path):
    try:
        with open(path, encoding='utf-8', errors='backslashreplace') as stream:
            return stream.read().splitlines()
    except FileNotFoundError:
        return []


def wait_for_lines(path, count, timeout=10.0):
    """Wait until ``path`` holds at least ``count`` lines; return all its lines."""
    return wait_for(lambda: (lambda lines: lines if len(lines) >= count else None)(read_lines(path)),
                    timeout, message='%d lines in %s' % (count, path))


def line_body(line):
    """The body part of a written line: '<time> - <host> - <body>' -> body."""
    return line.split(' - ', 2)[2]


class Daemon:
    """One loghogd process with its own folders under ``base``."""

    def __init__(self, base, facilities, server=None, sections=None, extra_args=()):
        self.base = Path(base)
        self.logdir = self.base / 'log'
        self.workdir = self.base / 'lib'
        self.rundir = self.base / 'run'
        self.config_path = self.base / 'loghogd.conf'
        self.facilities_path = self.base / 'facilities.conf'
        self.extra_args = list(extra_args)
        self.facilities_path.write_text(textwrap.dedent(facilities))
        # Each section once: values given in ``sections`` (or ``server``) override these.
        config = {'main': {'logdir': 'log', 'workdir': 'lib', 'rundir': 'run',
                           'facilities_config': 'facilities.conf'},
                  'log': {'filename': 'daemon.log', 'level': 'DEBUG'},
                  'server': {'listen_ipv4': '127.0.0.1:0', 'listen_ipv6': ''}}
        for name, values in dict(sections or {}, server=server or {}).items():
            config.setdefault(name, {}).update(values)
        self.config_path.write_text(''.join(
            '[%s]\n' % name + ''.join('%s = %s\n' % kv for kv in values.items())
            for name, values in config.items()))
        self.proc = None
        self.addresses = None

    @property
    def pid(self):
        return self.proc.pid

    @property
    def daemon_log(self):
        return self.base / 'daemon.log'

    def command(self):
        return [sys.executable, '-m', 'loghogd', '--config', str(self.config_path)] + self.extra_args

    def start(self, timeout=15.0):
        listen = self.rundir / 'listen.json'
        if listen.exists():
            listen.unlink()
        self.stderr = open(self.base / 'stderr.txt', 'ab')
        self.proc = subprocess.Popen(self.command(), cwd=str(ROOT), stdout=self.stderr,
                                     stderr=subprocess.STDOUT)
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError('loghogd exited with %s:\n%s' % (self.proc.returncode, self.output()))
            return listen.exists()
        wait_for(ready, timeout, message='loghogd to listen')
        self.addresses = json.loads(listen.read_text())
        return self

    def output(self):
        return (self.base / 'stderr.txt').read_text(errors='replace')

    def port(self, kind='tcp', index=0):
        return self.addresses[kind][index][1]

    @property
    def tcp_port(self):
        return self.port('tcp')

    @property
    def udp_port(self):
        return self.port('udp')

    @property
    def tls_port(self):
        return self.port('tls') if self.addresses.get('tls') else None

    def log_file(self, app, name='root'):
        return self.logdir / app / ('%s.log' % name)

    def signal(self, signum):
        os.kill(self.proc.pid, signum)

    def processes(self):
        """The daemon's pid and its children's (the receivers of ``[server] workers``)."""
        pids = [self.proc.pid]
        for task in Path('/proc/%d/task' % self.proc.pid).iterdir():
            try:
                children = (task / 'children').read_text().split()
            except (FileNotFoundError, ProcessLookupError):
                continue    # a thread that ended meanwhile
            pids.extend(int(pid) for pid in children)
        return pids

    def stopped(self):
        """SIGSTOP the daemon and its receivers (the kernel queues, then drops), SIGCONT
        them on leaving."""
        return stopped(self.processes())

    def reload(self, facilities=None, timeout=10.0):
        """Write new facilities (optional), SIGHUP, and wait until the daemon logged the reload."""
        if facilities is not None:
            self.facilities_path.write_text(textwrap.dedent(facilities))
        before = self.output().count('reload')
        self.signal(signal.SIGHUP)
        wait_for(lambda: self.output().count('reload') > before, timeout, message='reload')

    def stop(self, timeout=20.0):
        """SIGTERM, wait, and return the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError('loghogd did not stop within %gs after SIGTERM' % timeout)
        finally:
            self.stderr.close()

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            self.stderr.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        if self.proc is not None and self.proc.poll() is None:
            self.kill()


def start_daemon(base, facilities, **server_options):
    """Start a loghogd with ``facilities`` (facilities.conf text) and [server] options."""
    return Daemon(base, facilities, server_options).start()


def frame(app, body, module='root', host='web1', secret=None, compress=False, stamp=1700000000,
          nsecs=0):
    return encode_message(app, module, stamp, nsecs, host, body, secret=secret, compress=compress)


def send_tcp(port, data, host='127.0.0.1'):
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(data)


def send_udp(port, data, host='127.0.0.1'):
    family = socket.AF_INET6 if ':' in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.sendto(data, (host, port))


_OPENERS = {'.gz': gzip.open, '.xz': lzma.open, '.bz2': bz2.open}
COMPRESSED_SUFFIXES = tuple(_OPENERS)


def backup_names(folder, base='root.log'):
    """Names of the backups of ``base`` in ``folder``, oldest first (their names sort by age)."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    pattern = re.compile(re.escape(base) + r'\.\d{4}(-\d\d){5}-\d{6}(\.xz|\.gz|\.bz2)?')
    return sorted(n for n in names if pattern.fullmatch(n))


def read_backup(path):
    """The text of a backup, compressed or not."""
    opener = _OPENERS.get(os.path.splitext(str(path))[1], open)
    with opener(path, 'rb') as stream:
        return stream.read().decode('utf-8')


def file_history(folder, base='root.log'):
    """(backup name or 'live', line) for every line ever written to ``base``: backups
    oldest first, then the live file.

    The compressor may be working meanwhile: a backup replaced by its compressed form
    between listing and reading is read again, and while both forms exist for a moment
    (the compressed one is complete once renamed into place) only that one is read.
    """
    folder = Path(folder)
    while True:
        names = backup_names(folder, base)
        present = set(names)
        names = [n for n in names if not any(n + ext in present for ext in _OPENERS)]
        try:
            found = [(name, line) for name in names
                     for line in read_backup(folder / name).splitlines()]
        except FileNotFoundError:
            continue
        live = folder / base
        return found + [('live', line) for line in (read_lines(live) if live.exists() else [])]


class Loggers:
    """Fresh loggers named ``<prefix>.<n>``, not propagating, each with one handler;
    ``close()`` detaches and closes every handler (a test fixture's teardown)."""

    def __init__(self, prefix):
        self.prefix = prefix
        self.made = []

    def __call__(self, handler, level=logging.DEBUG):
        logger = logging.getLogger('%s.%d' % (self.prefix, len(self.made)))
        logger.propagate = False
        logger.setLevel(level)
        logger.addHandler(handler)
        self.made.append((logger, handler))
        return logger

    def close(self):
        for logger, handler in self.made:
            logger.removeHandler(handler)
            handler.close()


class Stream:
    """Logs ``msg <n>`` for n = 0, 1, ... from a thread, about ``rate`` a second, until
    ``stop()``; ``count`` is how many were logged."""

    def __init__(self, logger, rate=2000):
        self.logger = logger
        self.count = 0
        self.rate = rate
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name='test-stream')
        self._thread.start()

    def _run(self):
        started = time.monotonic()
        while not self._stopping.is_set():
            self.logger.info('msg %d', self.count)
            self.count += 1
            ahead_s = self.count / self.rate - (time.monotonic() - started)
            if ahead_s > 0:
                time.sleep(ahead_s)

    def stop(self):
        self._stopping.set()
        self._thread.join(30)
        return self.count


@contextlib.contextmanager
def stopped(pids):
    """SIGSTOP ``pids``; SIGCONT them on leaving (never left stopped)."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
