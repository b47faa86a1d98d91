"""What survives a bad day (issue 8): each promise proven against real loghogd processes.

Clients here are raw sockets, so that the daemon's promises are tested on their own: an
``AckStream`` behaves as the loghog client does in acknowledged mode (it keeps every
message until it is acknowledged, and on a new connection starts a session at the first
unacknowledged one and resends from there); plain streams are the original fire-and-forget
protocol.  Every line the tests write is ``<client> n<number> x... end``, so a line that
was cut, glued onto another, lost or written twice is seen.
"""

import collections
import errno
import fcntl
import glob
import gzip
import json
import os
import re
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid

import pytest

from loghog.wire import FLAG_ACK, HEADER, encode_message, make_session, parse_ack
from tests.support import each_workers, Daemon, stopped, wait_for

pytestmark = each_workers

FACILITIES = """
[app]
rotate = daily
backup_count = 3
"""

STATS = {'stats': {'interval': '0.2'}}
LINE_RE = re.compile(rb'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} - h - ([a-z]+\d*) n(\d+) x* end$')
PAD = 60


# -- messages and what is on disk ------------------------------------------------------------

def message(client, number, pad=PAD):
    return '%s n%d %s end' % (client, number, 'x' * pad)


def plain_frame(client, number, app='app', pad=PAD):
    return encode_message(app, 'root', 1, 0, 'h', message(client, number, pad))


def parse(data):
    """Split a log file's bytes into [(client, number)] and the lines that are not whole.

    Bad lines are (index, bytes); a last line without its newline counts as bad.
    """
    whole, bad = [], []
    lines = data.split(b'\n')
    tail = lines.pop()
    for index, line in enumerate(lines):
        match = LINE_RE.match(line)
        if match:
            whole.append((match.group(1).decode(), int(match.group(2))))
        else:
            bad.append((index, line[:120]))
    if tail:
        bad.append((len(lines), tail[:120]))
    return whole, bad


def numbers_of(whole, client):
    return [number for name, number in whole if name == client]


def read_all_lines(folder):
    """Bytes of every file in ``folder``: the live file and its backups (gzip ones inflated;
    a compression in progress, ``*.partial``, is not a file of its own)."""
    data = b''
    for path in sorted(glob.glob(os.path.join(folder, '*'))):
        if path.endswith('.partial'):
            continue
        if path.endswith('.gz'):
            with gzip.open(path, 'rb') as stream:
                data += stream.read()
        elif os.path.isfile(path):
            with open(path, 'rb') as stream:
                data += stream.read()
    return data


# -- the daemon from outside -----------------------------------------------------------------

def snapshot(daemon):
    """The status snapshot the daemon last published (needs [stats] interval), or None."""
    try:
        return json.loads((daemon.rundir / 'status.json').read_text())
    except (FileNotFoundError, ValueError):
        return None


def wait_for_status(daemon, condition, message, timeout=20.0):
    return wait_for(lambda: (lambda s: s if s and condition(s) else None)(snapshot(daemon)),
                    timeout, interval=0.05, message=message)


def accepted(status):
    return status['totals']['accepted']


def events(status, name):
    return status['events'].get(name, 0)


def rss_kib(pid):
    with open('/proc/%d/status' % pid) as stream:
        for line in stream:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    raise AssertionError('no VmRSS for %d' % pid)


def fd_count(pid):
    return len(os.listdir('/proc/%d/fd' % pid))


def cpu_seconds(pid):
    with open('/proc/%d/stat' % pid) as stream:
        fields = stream.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def log_lines(daemon, level, text):
    """Lines of the daemon's own log at ``level`` that contain ``text``."""
    try:
        content = daemon.daemon_log.read_text(errors='replace')
    except FileNotFoundError:
        return []
    return [line for line in content.splitlines() if (' %s: ' % level) in line and text in line]


# -- clients ---------------------------------------------------------------------------------

class AckStream:
    """One client in acknowledged mode.

    ``run(port)`` is one connection: a session frame, then messages from the first
    unacknowledged one up to ``total`` (None: without end, until the connection breaks
    or ``stop`` is set), then it waits for their acks (or until ``stop`` is set).  ``acked`` only grows; the frames
    of every message are kept (``frames[n - 1]`` is message n) for resending.
    """

    CHUNK = 100

    def __init__(self, name, app='app', total=None, pad=PAD):
        self.name = name
        self.app = app
        self.total = total
        self.pad = pad
        self.session = '%s-%s' % (name, uuid.uuid4().hex)
        self.frames = []
        self.acked = 0
        self.sent = 0
        self.rejected = []
        self.closed_by_daemon = False
        self.stop = threading.Event()

    def frame(self, number):
        while len(self.frames) < number:
            body = message(self.name, len(self.frames) + 1, self.pad)
            self.frames.append(encode_message(self.app, 'root', 1, 0, 'h', body, flags=FLAG_ACK))
        return self.frames[number - 1]

    def run(self, port, timeout=60.0):
        first = self.acked + 1
        self.closed_by_daemon = False
        self.stop.clear()
        sock = socket.create_connection(('127.0.0.1', port), timeout=timeout)
        reader = threading.Thread(target=self._read_acks, args=(sock, first), daemon=True)
        reader.start()
        number = first
        try:
            sock.sendall(make_session(self.session, first))
            while (self.total is None or number <= self.total) and not self.stop.is_set():
                end = number + self.CHUNK
                if self.total is not None:
                    end = min(end, self.total + 1)
                sock.sendall(b''.join(self.frame(n) for n in range(number, end)))
                number = end
                self.sent = max(self.sent, number - 1)
        except OSError:
            pass
        last = number - 1
        deadline = time.monotonic() + timeout
        while (reader.is_alive() and self.acked < last and time.monotonic() < deadline
               and not self.stop.is_set()):
            time.sleep(0.01)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        reader.join(timeout)
        sock.close()
        return self.acked

    def _read_acks(self, sock, first):
        buffer = b''
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                data = b''
            if not data:
                self.closed_by_daemon = True
                return
            buffer += data
            while len(buffer) >= HEADER.size:
                size, flags = HEADER.unpack_from(buffer)
                if len(buffer) < HEADER.size + size:
                    break
                ack = parse_ack(flags, buffer[HEADER.size:HEADER.size + size])
                buffer = buffer[HEADER.size + size:]
                self.rejected += ack.get('rejected', [])
                # Frame 1 of the connection is the session frame, frame k is message first+k-2.
                self.acked = max(self.acked, first + ack['ack'] - 2)


def ack_sentinel(port):
    """One acknowledged frame for an unknown application, on a connection of its own, and its
    answer: the daemon rejects it at once (nothing to write), so an ack it had decided to send
    on another connection before this one's has been sent by the time this returns."""
    with socket.create_connection(('127.0.0.1', port), timeout=10) as sock:
        sock.sendall(encode_message('no-such-app', 'root', 1, 0, 'h', 'sentinel', flags=FLAG_ACK))
        buffer = b''
        while len(buffer) < HEADER.size or len(buffer) < HEADER.size + HEADER.unpack_from(buffer)[0]:
            data = sock.recv(4096)
            assert data, 'the daemon closed the sentinel connection without an answer'
            buffer += data
    size, flags = HEADER.unpack_from(buffer)
    answer = parse_ack(flags, buffer[HEADER.size:HEADER.size + size])
    assert answer == {'ack': 1, 'rejected': [[1, 'unknown_app']]}, answer


def start_threads(target, items, *args):
    threads = [threading.Thread(target=target, args=(item,) + args, daemon=True) for item in items]
    for thread in threads:
        thread.start()
    return threads


def join_all(threads, timeout=60.0):
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), 'a client thread did not finish'


class PlainStream:
    """A fire-and-forget client: sends messages 1, 2, ... until the connection breaks,
    ``total`` is reached or ``stop`` is set; ``sent`` counts those handed to the kernel."""

    def __init__(self, name, total=None, pad=PAD, chunk=100, pause_s=0.0):
        self.name = name
        self.total = total
        self.pad = pad
        self.chunk = chunk
        self.pause_s = pause_s
        self.sent = 0
        self.stop = threading.Event()

    def run(self, port):
        with socket.create_connection(('127.0.0.1', port), timeout=60) as sock:
            try:
                while (self.total is None or self.sent < self.total) and not self.stop.is_set():
                    end = self.sent + self.chunk
                    if self.total is not None:
                        end = min(end, self.total)
                    sock.sendall(b''.join(plain_frame(self.name, n, pad=self.pad)
                                          for n in range(self.sent + 1, end + 1)))
                    self.sent = end
                    if self.pause_s:
                        time.sleep(self.pause_s)
            except OSError:
                pass


def check_resent_stream(whole, client, acked_before):
    """Everything of ``client`` is on disk; only messages after ``acked_before`` may be twice."""
    counts = collections.Counter(numbers_of(whole, client.name))
    missing = [n for n in range(1, len(client.frames) + 1) if not counts[n]]
    assert not missing, '%s: %d messages missing, first %s' % (client.name, len(missing), missing[:5])
    twice = [n for n, c in counts.items() if c > 1]
    assert all(n > acked_before for n in twice), '%s: acknowledged messages written twice: %s' % (
        client.name, [n for n in twice if n <= acked_before][:5])
    assert max(counts) == len(client.frames)
    return len(twice)


# -- 1. kill -9 ------------------------------------------------------------------------------

def test_kill_9_mid_stream_keeps_lines_whole_and_acked_messages_and_resending_completes(
        daemon_factory):
    daemon = daemon_factory(FACILITIES)
    clients = [AckStream('c%d' % i) for i in range(3)]
    threads = start_threads(AckStream.run, clients, daemon.tcp_port)
    wait_for(lambda: all(c.acked >= 20000 for c in clients), timeout=40,
             message='20000 acknowledged messages per client')
    daemon.kill()   # SIGKILL, in the middle of the stream
    join_all(threads)
    acked_at_kill = {c.name: c.acked for c in clients}
    assert all(c.closed_by_daemon for c in clients)
    assert all(c.acked < len(c.frames) for c in clients), 'the stream ended before the kill'

    path = daemon.log_file('app')
    data = path.read_bytes()
    whole, bad = parse(data)
    # A kill inside write() may cut the last line; nothing else may be cut.
    assert bad in ([], [(data.count(b'\n'), data.rsplit(b'\n', 1)[-1][:120])]), bad[:3]
    for client in clients:
        on_disk = set(numbers_of(whole, client.name))
        missing = [n for n in range(1, client.acked + 1) if n not in on_disk]
        assert not missing, '%s: acknowledged but not on disk: %s' % (client.name, missing[:5])
    if not bad:
        # The kill did not land inside a write: leave on disk what such a kill leaves (the
        # start of a line), so that the restart's repair is proven every time.
        with open(path, 'ab') as stream:
            stream.write(data.rsplit(b'\n', 2)[-2][:40])
    boundary = path.stat().st_size

    daemon.start()
    for client in clients:
        client.total = len(client.frames)
    threads = start_threads(AckStream.run, clients, daemon.tcp_port)
    join_all(threads)
    assert [c.acked for c in clients] == [len(c.frames) for c in clients]
    assert daemon.stop() == 0

    data = path.read_bytes()
    whole, bad = parse(data)
    # The one cut line is the last one before the restart; the next starts on a line of its own.
    assert [index for index, _ in bad] == [data[:boundary].count(b'\n')], bad[:3]
    assert data[boundary:boundary + 1] == b'\n'
    assert all(not c.rejected for c in clients)
    for client in clients:
        check_resent_stream(whole, client, acked_at_kill[client.name])


# -- 2. SIGHUP storm -------------------------------------------------------------------------

def test_sighup_every_50ms_during_a_heavy_stream_from_20_clients_loses_nothing(daemon_factory):
    daemon = daemon_factory(FACILITIES)
    clients = [PlainStream('c%d' % i, chunk=50, pause_s=0.01) for i in range(20)]
    path = daemon.log_file('app')
    done = threading.Event()
    hups = []

    def storm():
        while not done.is_set() and len(hups) < 2000:
            daemon.signal(signal.SIGHUP)
            hups.append(time.monotonic())
            time.sleep(0.05)

    threads = start_threads(PlainStream.run, clients, daemon.tcp_port)
    stormer = threading.Thread(target=storm, daemon=True)
    stormer.start()
    try:
        wait_for(lambda: len(hups) >= 40, timeout=30, message='40 SIGHUPs')
        for client in clients:
            client.stop.set()
        join_all(threads)
        expected = sum(client.sent for client in clients)
        wait_for(lambda: path.read_bytes().count(b'\n') >= expected, timeout=40,
                 message='%d lines' % expected)
    finally:
        done.set()
        stormer.join()
    assert daemon.stop() == 0
    whole, bad = parse(path.read_bytes())
    assert not bad, bad[:3]
    for client in clients:
        assert numbers_of(whole, client.name) == list(range(1, client.sent + 1)), client.name
    assert len(whole) == expected
    # Signals sent close together may arrive as one; most must have been acted on.
    assert len(log_lines(daemon, 'INFO', 'reloaded')) >= 30


# -- 3. SIGTERM under load -------------------------------------------------------------------

def prometheus_total(path, metric):
    total = 0
    for line in path.read_text().splitlines():
        if line.startswith(metric + '{') or line.startswith(metric + ' '):
            total += int(float(line.rsplit(' ', 1)[1]))
    return total


def test_sigterm_under_load_writes_all_it_read_and_ack_clients_resend_the_rest(
        daemon_factory, tmp_path):
    prom = tmp_path / 'loghogd.prom'
    daemon = daemon_factory(FACILITIES, sections={'stats': {'prometheus_file': str(prom)}})
    ack_clients = [AckStream('a%d' % i) for i in range(4)]
    plain_clients = [PlainStream('p%d' % i) for i in range(4)]
    threads = start_threads(AckStream.run, ack_clients, daemon.tcp_port)
    threads += start_threads(PlainStream.run, plain_clients, daemon.tcp_port)
    wait_for(lambda: all(c.acked >= 3000 for c in ack_clients), timeout=40,
             message='3000 acknowledged messages per client')
    daemon.signal(signal.SIGTERM)
    assert daemon.proc.wait(30) == 0
    daemon.stderr.close()
    join_all(threads)
    acked_at_stop = {c.name: c.acked for c in ack_clients}
    assert all(c.closed_by_daemon for c in ack_clients)

    path = daemon.log_file('app')
    whole, bad = parse(path.read_bytes())
    assert not bad, bad[:3]
    # Everything the daemon accepted is on disk, and each stream is there without a hole.
    assert prometheus_total(prom, 'loghogd_messages_total') == len(whole)
    for client in ack_clients + plain_clients:
        numbers = numbers_of(whole, client.name)
        assert numbers == list(range(1, len(numbers) + 1)), client.name
    for client in ack_clients:
        assert len(numbers_of(whole, client.name)) >= client.acked

    daemon.start()
    for client in ack_clients:
        client.total = len(client.frames)
    threads = start_threads(AckStream.run, ack_clients, daemon.tcp_port)
    join_all(threads)
    assert daemon.stop() == 0
    whole, bad = parse(path.read_bytes())
    assert not bad, bad[:3]
    for client in ack_clients:
        assert client.acked == len(client.frames) and not client.rejected
        check_resent_stream(whole, client, acked_at_stop[client.name])


# -- 4. a full disk, a file size limit, I/O errors -------------------------------------------

def mount(args, mount_point):
    """Mount as root (``mount ARGS MOUNT_POINT``) or skip the test, saying why."""
    if os.geteuid() != 0:
        pytest.skip('needs root to mount a small file system (a full disk that CI can build)')
    result = subprocess.run(['mount'] + args + [str(mount_point)], capture_output=True,
                            text=True, timeout=30)
    if result.returncode:
        pytest.skip('cannot mount %s: %s' % (' '.join(args), result.stderr.strip()))


def unmount(mount_point):
    """Unmount; lazily if a process still holds a file there (the daemon is killed after)."""
    if subprocess.run(['umount', str(mount_point)], capture_output=True).returncode:
        subprocess.run(['umount', '-l', str(mount_point)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs to fill up (root only; unmounted at the end)."""
    mount_point = tmp_path / 'small-disk'
    mount_point.mkdir()
    mount(['-t', 'tmpfs', '-o', 'size=1m,mode=0755', 'tmpfs'], mount_point)
    try:
        yield mount_point
    finally:
        unmount(mount_point)


def fill(folder, free_bytes=0):
    """Fill the file system of ``folder`` but for about ``free_bytes``; return the filler."""
    path = os.path.join(folder, 'filler')
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b'\0' * 65536)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    os.truncate(path, max(0, os.path.getsize(path) - free_bytes))
    return path


def check_one_error(daemon, path, fragment='cannot write'):
    """The daemon logged one error about ``path`` (not one per retry) and is still running."""
    errors = log_lines(daemon, 'ERROR', fragment)
    assert len([e for e in errors if str(path) in e]) == 1, errors[:5]
    assert daemon.proc.poll() is None, daemon.output()


def test_disk_full_holds_lines_acks_nothing_unwritten_and_writes_them_in_order_when_space_returns(
        small_disk, daemon_factory):
    daemon = daemon_factory(FACILITIES, sections=STATS, extra_args=['-L', str(small_disk)])
    path = small_disk / 'app' / 'root.log'
    client = AckStream('c', total=200)
    client.run(daemon.tcp_port)
    assert client.acked == 200
    filler = fill(small_disk, free_bytes=24 * 1024)
    client.total = 2000   # about 260 KB more: the disk fills up on the way
    sender = threading.Thread(target=client.run, args=(daemon.tcp_port, 60.0), daemon=True)
    sender.start()
    # The daemon keeps reading while it cannot write, and retries without logging again.
    status = wait_for_status(daemon, lambda s: accepted(s) == 2000 and events(s, 'write_errors') >= 3,
                             'all 2000 messages read and three failed writes')
    assert daemon.proc.poll() is None
    check_one_error(daemon, path)
    acked_when_full = client.acked
    assert 200 <= acked_when_full < 2000
    whole, bad = parse(path.read_bytes())
    assert not bad, bad[:3]   # a write cut short by the full disk is not left on disk cut
    assert numbers_of(whole, 'c')[:acked_when_full] == list(range(1, acked_when_full + 1))
    assert events(status, 'dropped_backlog') == 0
    # The client gives up waiting and resends on a new connection: the resent messages
    # are not acknowledged either, as their first copies are not written yet.
    client.stop.set()
    sender.join(10)
    sender = threading.Thread(target=client.run, args=(daemon.tcp_port, 60.0), daemon=True)
    sender.start()
    resent = 2000 - acked_when_full
    wait_for_status(daemon, lambda s: accepted(s) + events(s, 'duplicates_skipped')
                    == 2000 + resent, 'the resent messages read')
    ack_sentinel(daemon.tcp_port)   # an ack, had the daemon wrongly sent one, went out before
    assert client.acked == acked_when_full

    os.unlink(filler)   # space returns: the backlog is written, by itself, in order
    sender.join(30)
    assert not sender.is_alive() and client.acked == 2000 and not client.rejected
    whole, bad = parse(path.read_bytes())
    assert not bad, bad[:3]
    # The resent ones were skipped as duplicates of the held ones (issue 14: a session
    # counts a message once it is queued), acknowledged once those were written.
    numbers = numbers_of(whole, 'c')
    assert numbers == list(range(1, 2001))
    check_one_error(daemon, path)
    assert len(log_lines(daemon, 'WARNING', 'writing %s again' % path)) == 1
    assert daemon.stop() == 0


def test_a_long_disk_full_keeps_a_bounded_backlog_and_never_acks_dropped_lines(
        small_disk, daemon_factory):
    server = {'max_backlog': '256K'}
    daemon = daemon_factory(FACILITIES, server=server, sections=STATS,
                            extra_args=['-L', str(small_disk)])
    path = small_disk / 'app' / 'root.log'
    AckStream('w', total=1).run(daemon.tcp_port)
    filler = fill(small_disk)
    client = AckStream('c', total=300)
    sender = threading.Thread(target=client.run, args=(daemon.tcp_port, 60.0), daemon=True)
    sender.start()
    wait_for_status(daemon, lambda s: accepted(s) == 301, '300 messages read')
    rss_before = rss_kib(daemon.pid)
    # 48 MB more while the disk is full: far beyond the 256 KB backlog.
    flood = PlainStream('f', total=48000, pad=1000, chunk=500)
    flood.run(daemon.tcp_port)
    status = wait_for_status(daemon, lambda s: accepted(s) == 48301, 'the flood read')
    growth_kib = rss_kib(daemon.pid) - rss_before
    assert growth_kib < 24 * 1024, 'RSS grew by %d KiB' % growth_kib
    assert events(status, 'dropped_backlog') > 40000
    check_one_error(daemon, path)
    check_one_error(daemon, path, 'dropping the oldest')
    # Its lines were dropped: never acknowledged.  Only those that fit in the file's last
    # block before the disk was full may be (a fair loop reads a connection a few KiB at a
    # time, issue 15): then they are in the file.
    acked_while_full = client.acked
    assert acked_while_full < 300
    in_file = numbers_of(parse(path.read_bytes())[0], 'c')
    assert in_file[:acked_while_full] == list(range(1, acked_while_full + 1)), in_file

    os.unlink(filler)
    whole = wait_for(lambda: (lambda w: w if numbers_of(w, 'f')[-1:] == [48000] else None)(
        parse(path.read_bytes())[0]), timeout=20, message='the backlog written')
    flood_lines = numbers_of(whole, 'f')
    assert flood_lines == sorted(flood_lines) and len(flood_lines) < 300   # the newest 256 KB
    # The client either got its connection closed (its lines were dropped) or is told
    # nothing more: in both cases it resends, and then everything is there.
    sender.join(5)
    if sender.is_alive():
        client.stop.set()
    assert client.acked == acked_while_full
    client.run(daemon.tcp_port)
    assert client.acked == 300
    whole, bad = parse(path.read_bytes())
    assert not bad, bad[:3]
    assert set(numbers_of(whole, 'c')) == set(range(1, 301))
    assert daemon.stop() == 0


LIMITED = ('import os, resource, signal, sys; '
           'resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1]))); '
           'signal.signal(signal.SIGXFSZ, signal.SIG_DFL); '
           'os.execv(sys.executable, [sys.executable] + sys.argv[2:])')


class LimitedDaemon(Daemon):
    """A loghogd started with RLIMIT_FSIZE (no file may grow beyond ``fsize_bytes``) and
    SIGXFSZ at its default action (killing the process), as an init system might leave it."""

    fsize_bytes = 256 * 1024

    def command(self):
        return [sys.executable, '-c', LIMITED, str(self.fsize_bytes)] + super().command()[1:]


def is_ignored(pid, signum):
    with open('/proc/%d/status' % pid) as stream:
        for line in stream:
            if line.startswith('SigIgn:'):
                return bool(int(line.split()[1], 16) & (1 << (signum - 1)))
    return False


def test_a_file_size_limit_efbig_is_survived_and_writing_resumes_in_a_new_file(tmp_path):
    base = tmp_path / 'limited'
    base.mkdir()
    daemon = LimitedDaemon(base, FACILITIES, None, STATS)
    try:
        daemon.start()
        assert is_ignored(daemon.pid, signal.SIGXFSZ)
        daemon.signal(signal.SIGXFSZ)
        path = daemon.log_file('app')
        client = AckStream('c', total=3000)   # about 390 KB: beyond the 256 KB limit
        sender = threading.Thread(target=client.run, args=(daemon.tcp_port, 60.0), daemon=True)
        sender.start()
        wait_for_status(daemon, lambda s: accepted(s) == 3000 and events(s, 'write_errors') >= 3,
                        'all read and three failed writes')
        check_one_error(daemon, path)
        assert 'File too large' in log_lines(daemon, 'ERROR', 'cannot write')[0]
        assert path.stat().st_size <= LimitedDaemon.fsize_bytes
        acked_when_full = client.acked
        whole, bad = parse(path.read_bytes())
        assert not bad, bad[:3]
        assert numbers_of(whole, 'c') == list(range(1, len(whole) + 1))
        assert acked_when_full <= len(whole) < 3000

        # The administrator moves the file away: the rest goes to a new file, by itself.
        moved = path.with_name('root.log.1')
        os.rename(path, moved)
        sender.join(30)
        assert not sender.is_alive() and client.acked == 3000
        old, bad = parse(moved.read_bytes())
        assert not bad, bad[:3]
        new, bad = parse(path.read_bytes())
        assert not bad, bad[:3]
        assert numbers_of(old + new, 'c') == list(range(1, 3001))
        assert daemon.stop() == 0
    finally:
        daemon.kill()


@pytest.fixture
def ext4_disk(tmp_path):
    """An 8 MiB ext4 file system on a loop device (root only): ``(image, mount point)``."""
    if shutil.which('mkfs.ext4') is None:
        pytest.skip('needs mkfs.ext4 (e2fsprogs) for an I/O error that CI can build')
    image = tmp_path / 'ext4.img'
    mount_point = tmp_path / 'ext4'
    mount_point.mkdir()
    with open(image, 'wb') as stream:
        stream.truncate(8 * 1024 * 1024)
    subprocess.run(['mkfs.ext4', '-q', '-F', str(image)], check=True, capture_output=True,
                   timeout=60)
    mount(['-o', 'loop', str(image)], mount_point)
    try:
        yield image, mount_point
    finally:
        unmount(mount_point)
        unmount(mount_point)   # the remount, if the test got that far


EXT4_IOC_SHUTDOWN = 0x8004587d       # _IOR('X', 125, __u32)
EXT4_GOING_FLAGS_NOLOGFLUSH = 2


def fail_the_disk(mount_point):
    """Make every further I/O on the file system fail with EIO, as a dead disk does."""
    fd = os.open(mount_point, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack('I', EXT4_GOING_FLAGS_NOLOGFLUSH))
    finally:
        os.close(fd)


def fail_the_disk_between_calls(daemon, mount_point):
    """``fail_the_disk`` at an instant when none of the daemon's threads (and processes:
    receivers, compressors) is inside a system call: each is stopped first.

    For tests that check every acknowledged line reached the disk.  The ext4 shutdown
    ioctl is not a dead disk in one respect: an fdatasync running while it happens can
    return success for data that the disk's copy then lacks (A5-1: traced on Linux 6.18,
    the daemon's fsync of inode 13 through message 15,134 said "ok" 0.1 ms before the next
    one said EIO, and the copy ended, page-aligned, at message 14,655).  A disk that dies
    fails the flush; so the disk here dies between system calls: an fsync either finished
    before (and is on the disk) or starts after (and fails)."""
    pids = daemon.processes()
    with stopped(pids):
        # A thread inside an fsync of the loop device's ext4 stops only when the call
        # returns: 10 s were once not enough on a busy CI disk (the states are said).
        try:
            wait_for(lambda: all(_is_stopped(pid) for pid in pids), 60, interval=0.001)
        except AssertionError:
            raise AssertionError("the daemon's threads did not all stop within 60 s: %s"
                                 % _thread_states(pids)) from None
        fail_the_disk(mount_point)


def _thread_states(pids):
    """Each thread's state and kernel wait channel, for a failure message."""
    states = []
    for pid in pids:
        try:
            tasks = os.listdir('/proc/%d/task' % pid)
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                with open('/proc/%d/task/%s/stat' % (pid, task)) as stream:
                    state = stream.read().rsplit(')', 1)[1].split()[0]
                with open('/proc/%d/task/%s/wchan' % (pid, task)) as stream:
                    wchan = stream.read()
            except OSError:
                continue
            states.append('%s/%s %s %s' % (pid, task, state, wchan))
    return ', '.join(states)


def _is_stopped(pid):
    """True when every thread of ``pid`` is stopped (or has ended, or the process)."""
    try:
        tasks = os.listdir('/proc/%d/task' % pid)
    except FileNotFoundError:
        return True
    for task in tasks:
        try:
            with open('/proc/%d/task/%s/stat' % (pid, task)) as stream:
                state = stream.read().rsplit(')', 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            continue
        if state not in ('T', 't', 'Z', 'X'):    # stopped, or ended (a compressor)
            return False
    return True


def test_io_errors_are_survived_acked_lines_were_fsynced_and_writing_resumes_on_a_new_disk(
        ext4_disk, daemon_factory):
    image, mount_point = ext4_disk
    facilities = FACILITIES + '\n[batched]\nrotate = daily\nbackup_count = 3\nflush_every = 1000\n'
    daemon = daemon_factory(facilities, sections=STATS, extra_args=['-L', str(mount_point)])
    path = mount_point / 'app' / 'root.log'
    client = AckStream('c', total=100)
    client.run(daemon.tcp_port)
    assert client.acked == 100
    # A facility fsynced only every 1000 lines or about a second: its ten lines are
    # acknowledged once written, before their fsync (flush_every allows that), and the disk
    # dies before that fsync.
    batched = AckStream('b', app='batched', total=10)
    batched.run(daemon.tcp_port)
    assert batched.acked == 10

    fail_the_disk(mount_point)
    client.total = 300
    sender = threading.Thread(target=client.run, args=(daemon.tcp_port, 60.0), daemon=True)
    sender.start()
    wait_for_status(daemon, lambda s: accepted(s) == 310 and events(s, 'write_errors') >= 3,
                    'all read and three failed writes')
    # The failing disk costs no busy loop: the daemon waits between retries.
    cpu_before = cpu_seconds(daemon.pid)
    time.sleep(2.0)
    assert cpu_seconds(daemon.pid) - cpu_before < 1.0
    check_one_error(daemon, path)
    assert len(log_lines(daemon, 'ERROR', 'batched')) <= 1
    assert client.acked == 100

    # The administrator mounts a working disk there, holding what the dead one held (a
    # copy of its image: mount would reuse the dead file system for the same image).
    unmount(mount_point)
    shutil.copyfile(image, str(image) + '.copy')
    subprocess.run(['mount', '-o', 'loop', str(image) + '.copy', str(mount_point)], check=True,
                   capture_output=True, timeout=30)
    whole, bad = parse(path.read_bytes())
    # What was acknowledged before the disk died was fsynced: it survived.
    assert numbers_of(whole, 'c')[:100] == list(range(1, 101))
    # The batched lines: on the disk, or their loss reported (once, in the log and the status).
    batched_path = mount_point / 'batched' / 'root.log'
    survived = numbers_of(parse(batched_path.read_bytes())[0], 'b') if batched_path.exists() else []
    assert survived == list(range(1, len(survived) + 1)), survived
    sync_errors = log_lines(daemon, 'ERROR', 'cannot fsync %s' % batched_path)
    if survived != list(range(1, 11)):
        assert len(sync_errors) == 1 and 'may be lost' in sync_errors[0], sync_errors
        assert events(snapshot(daemon), 'sync_errors') == 1
    sender.join(30)
    assert not sender.is_alive() and client.acked == 300
    whole, bad = parse(path.read_bytes())
    assert not bad, bad[:3]
    assert numbers_of(whole, 'c') == list(range(1, 301))
    assert daemon.stop() == 0


# -- 5. folders deleted or moved -------------------------------------------------------------

@pytest.mark.parametrize('action', ['delete the log folder', 'move the log folder',
                                    "delete the app's folder", "move the app's folder"])
def test_a_log_folder_deleted_or_moved_while_running_is_created_again(daemon_factory, action):
    daemon = daemon_factory(FACILITIES)
    path = daemon.log_file('app')
    folder = daemon.logdir if 'log folder' in action else path.parent
    with socket.create_connection(('127.0.0.1', daemon.tcp_port), timeout=10) as sock:
        sock.sendall(plain_frame('c', 1))
        wait_for(path.exists, message='the first line')
        if action.startswith('delete'):
            shutil.rmtree(folder)
        else:
            os.rename(folder, str(folder) + '.moved')
        number = 1
        while not path.exists() and number < 100:   # the writer looks once a second
            number += 1
            sock.sendall(plain_frame('c', number))
            time.sleep(0.1)
        assert path.exists()
        sock.sendall(b''.join(plain_frame('c', n) for n in range(number + 1, number + 11)))
        last = number + 10
        wait_for(lambda: path.read_bytes().count(b'\n') >= last - number + 1, message='the rest')
    assert daemon.stop() == 0
    whole, bad = parse(path.read_bytes())
    assert not bad, bad[:3]
    numbers = numbers_of(whole, 'c')
    assert numbers == list(range(numbers[0], last + 1)) and numbers[0] <= number
    if action.startswith('move'):
        # Nothing lost: the moved file holds what was written before the daemon noticed.
        moved = path.relative_to(folder.parent).parts
        moved = folder.parent.joinpath(moved[0] + '.moved', *moved[1:])
        before, bad = parse(moved.read_bytes())
        assert not bad, bad[:3]
        assert numbers_of(before, 'c') + numbers == list(range(1, last + 1))
    assert len(log_lines(daemon, 'WARNING', 'moved or deleted')) == 1


# -- 6. connection churn while files rotate --------------------------------------------------

class Churn:
    """``clients`` sockets in one selector loop.  Each connects, sends ``per_connection``
    messages, closes, and again.  Odd clients ask for acks and close once all are acked.
    ``sent`` counts, per client name, the messages whose connection completed cleanly."""

    def __init__(self, port, clients, per_connection, app='churn'):
        self.port = port
        self.clients = clients
        self.per_connection = per_connection
        self.app = app
        self.sent = collections.Counter()
        self.connections = 0
        self.errors = collections.Counter()

    def run(self, duration_s):
        selector = selectors.DefaultSelector()
        self.deadline = time.monotonic() + duration_s
        for slot in range(self.clients):
            self._connect(selector, slot)
        stop_at = self.deadline + 60
        while selector.get_map() and time.monotonic() < stop_at:
            for key, mask in selector.select(1.0):
                key.data(selector, key.fileobj, mask)
        assert not selector.get_map(), '%d connections did not finish' % len(selector.get_map())
        selector.close()

    def _connect(self, selector, slot):
        sock = socket.socket()
        sock.setblocking(False)
        err = sock.connect_ex(('127.0.0.1', self.port))
        if err not in (0, errno.EINPROGRESS):
            self.errors[errno.errorcode.get(err, err)] += 1
            sock.close()
            return
        name = 'k%d' % slot
        first = self.sent[name] + 1
        numbers = range(first, first + self.per_connection)
        flags = FLAG_ACK if slot % 2 else 0
        out = b''.join(encode_message(self.app, 'root', 1, 0, 'h', message(name, n, 20),
                                      flags=flags) for n in numbers)
        state = {'slot': slot, 'name': name, 'out': out, 'connected': False, 'acks': b'',
                 'ack': bool(flags)}
        selector.register(sock, selectors.EVENT_WRITE,
                          lambda sel, s, mask: self._on_event(sel, s, mask, state))

    def _finish(self, selector, sock, state, ok):
        selector.unregister(sock)
        sock.close()
        if ok:
            self.sent[state['name']] += self.per_connection
            self.connections += 1
        if time.monotonic() < self.deadline:
            self._connect(selector, state['slot'])

    def _on_event(self, selector, sock, mask, state):
        try:
            if not state['connected']:
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, os.strerror(err))
                state['connected'] = True
            if state['out']:
                sent = sock.send(state['out'])
                state['out'] = state['out'][sent:]
                if state['out']:
                    return
                if state['ack']:
                    selector.modify(sock, selectors.EVENT_READ,
                                    lambda sel, s, m: self._on_event(sel, s, m, state))
                    return
                self._finish(selector, sock, state, True)
                return
            data = sock.recv(4096)
            if not data:
                raise ConnectionResetError('closed before all acks')
            state['acks'] += data
            buffer = state['acks']
            while len(buffer) >= HEADER.size:
                size, flags = HEADER.unpack_from(buffer)
                if len(buffer) < HEADER.size + size:
                    break
                ack = parse_ack(flags, buffer[HEADER.size:HEADER.size + size])
                buffer = buffer[HEADER.size + size:]
                if ack['ack'] >= self.per_connection:
                    self._finish(selector, sock, state, True)
                    return
            state['acks'] = buffer
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.errors[errno.errorcode.get(exc.errno, str(exc))] += 1
            self._finish(selector, sock, state, False)


def daemon_figures(daemon):
    """(VmRSS in KiB, open descriptors) of the daemon once it has no connections left."""
    wait_for_status(daemon, lambda s: sum(s['connections']['open'].values()) == 0,
                    'all connections closed')
    return rss_kib(daemon.pid), fd_count(daemon.pid)


def test_500_clients_connecting_in_a_loop_while_files_rotate_lose_nothing_and_leak_nothing(
        daemon_factory):
    facilities = '[churn]\nrotate = size\nmax_size = 256K\nbackup_count = 100000\n'
    sections = {'compressor': {'format': 'gzip', 'level': '1'}, 'stats': {'interval': '0.2'}}
    daemon = daemon_factory(facilities, sections=sections)
    churn = Churn(daemon.tcp_port, clients=500, per_connection=5)
    churn.run(2.0)   # warm-up: the daemon's memory reaches its working size
    wait_for_status(daemon, lambda s: accepted(s) == sum(churn.sent.values()), 'warm-up written')
    rss_before, fds_before = daemon_figures(daemon)
    warm_up_connections = churn.connections
    churn.run(12.0)
    total = sum(churn.sent.values())
    wait_for_status(daemon, lambda s: accepted(s) == total, 'everything written')
    rss_after, fds_after = daemon_figures(daemon)
    assert churn.connections - warm_up_connections > 5000, churn.connections
    assert not churn.errors, churn.errors
    assert fds_after <= fds_before + 2, (fds_before, fds_after)
    assert rss_after - rss_before < 4 * 1024, (rss_before, rss_after)
    assert daemon.stop() == 0
    whole, bad = parse(read_all_lines(daemon.logdir / 'churn'))
    assert not bad, bad[:3]
    assert len(whole) == total
    for name, count in churn.sent.items():
        assert sorted(numbers_of(whole, name)) == list(range(1, count + 1)), name
