"""Time rotation with real daemons on a clock the test sets: libfaketime starts each
daemon's clock a few seconds before a deadline, and it runs at normal speed from there.

Needs Debian's ``faketime`` package (libfaketime); skipped without it.
"""

import calendar
import lzma
import os
import socket
import threading

import pytest

from loghogd.rotation_state import RotationState

from tests.support import Daemon, file_history, frame, line_body, read_lines, send_tcp, wait_for

LIBFAKETIME = next((path for path in ('/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1',
                                      '/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1',
                                      '/usr/lib/faketime/libfaketime.so.1')
                    if os.path.exists(path)), None)
pytestmark = pytest.mark.skipif(LIBFAKETIME is None,
                                reason='libfaketime is not installed (apt-get install faketime)')

BERLIN = 'CET-1CEST,M3.5.0,M10.5.0/3'
# How long before the deadline each daemon's clock starts: room for the start-up and for
# a few lines before it, even on a busy machine.
LEAD_S = 4


class ClockedDaemon(Daemon):
    """A loghogd whose clock starts at ``start_at`` (local time, 'YYYY-MM-DD HH:MM:SS')."""

    def __init__(self, base, facilities, start_at, tz='UTC0', own_log=None, sections=None,
                 **options):
        sections = dict(sections or {}, log=own_log or {})
        super().__init__(base, facilities, sections=sections, **options)
        self.environment = ['FAKETIME=@' + start_at, 'LD_PRELOAD=' + LIBFAKETIME, 'TZ=' + tz]

    def command(self):
        return ['env'] + self.environment + super().command()


@pytest.fixture
def clocked(tmp_path):
    started = []

    def start(facilities, start_at, name='d', **options):
        base = tmp_path / name
        base.mkdir()
        daemon = ClockedDaemon(base, facilities, start_at, **options)
        started.append(daemon)
        return daemon.start()
    yield start
    for daemon in started:
        daemon.kill()


class Stream:
    """Sends numbered messages on one connection, one every ``interval_s``, until stopped."""

    def __init__(self, port, interval_s=0.005):
        self.sock = socket.create_connection(('127.0.0.1', port))
        self.interval_s = interval_s
        self.sent = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self):
        while not self.stopping.wait(self.interval_s):   # a steady pace, not a burst
            self.sock.sendall(frame('app', 'message %05d' % self.sent))
            self.sent += 1

    def stop(self):
        self.stopping.set()
        self.thread.join()
        self.sock.close()
        return self.sent


def test_an_hourly_file_and_the_daemons_own_log_rotate_when_daylight_saving_starts(clocked):
    """Berlin, 2024-03-31: at 02:00 CET the clock jumps to 03:00 CEST.  A steady stream
    crosses the jump: every line is kept once, in order; the backup is named after the
    hour it holds (01:00) and holds only lines of that hour."""
    daemon = clocked('[app]\nrotate = hourly\nbackup_count = 3\n', '2024-03-31 01:59:%02d'
                     % (60 - LEAD_S), tz=BERLIN,
                     own_log={'when': 'hourly', 'backup_count': '2'})
    stream = Stream(daemon.tcp_port)
    folder = daemon.logdir / 'app'
    backup = 'root.log.2024-03-31-01-00-00-000000.xz'
    wait_for(lambda: (folder / backup).exists(), LEAD_S + 10, message=backup)
    wait_for(lambda: len(read_lines(folder / 'root.log')) >= 20, 10, message='lines after it')
    # The daemon's own backup is compressed after app's or before it: a stop first would leave
    # it for the next start (seen once in a loaded `make test`).
    own_backup = daemon.base / 'daemon.log.2024-03-31-01-00-00-000000.xz'
    wait_for(own_backup.exists, 20, message=own_backup.name)
    sent = stream.stop()
    wait_for(lambda: len(file_history(folder)) >= sent, 10, message='every line')
    assert daemon.stop() == 0
    lines = file_history(folder)
    assert [line_body(line) for _, line in lines] == ['message %05d' % n for n in range(sent)]
    assert {name for name, _ in lines} == {backup, 'live'}
    assert all(line.startswith('2024-03-31 01:') for name, line in lines if name == backup)
    # The live file starts at the jump, 03:00 CEST: lines are written with the time they
    # were stamped with, so none from before the jump lands after the rotation.
    live = [line for name, line in lines if name == 'live']
    assert live and all(line >= '2024-03-31 03:00:00' for line in live)
    own = [n for n in os.listdir(daemon.base) if n.startswith('daemon.log.')]
    assert own == ['daemon.log.2024-03-31-01-00-00-000000.xz']
    with lzma.open(daemon.base / own[0]) as stream_in:
        assert b'started' in stream_in.read()


MIDNIGHT_OF_THE_16TH = calendar.timegm((2024, 5, 16, 0, 0, 0))   # the daemons' TZ is UTC


def period_start(daemon, path):
    """When the period of ``path`` began, as ``daemon``'s rotation state last saved it."""
    files = RotationState(str(daemon.workdir)).load()   # rotation.json and its journals
    return files.get(str(path), {}).get('period_start')


def test_an_idle_file_rotates_at_midnight_and_an_empty_one_does_not(clocked):
    daemon = clocked('[app]\nrotate = daily\nbackup_count = 3\n[quiet]\nrotate = daily\n'
                     'backup_count = 3\n', '2024-05-14 23:59:%02d' % (60 - LEAD_S),
                     sections={'compressor': {'format': 'gzip'}})
    send_tcp(daemon.tcp_port, frame('app', 'before midnight') + frame('quiet', 'only line'))
    wait_for(lambda: read_lines(daemon.log_file('quiet')), 5, message='the lines')
    folder = daemon.logdir / 'app'
    backup = 'root.log.2024-05-14-00-00-00-000000.gz'
    # nothing is sent any more: the daemon wakes up for the deadline by itself
    wait_for(lambda: (folder / backup).exists(), LEAD_S + 10, message=backup)
    assert [line_body(line) for _, line in file_history(folder)] == ['before midnight']
    assert (folder / 'root.log').read_bytes() == b''
    quiet = daemon.logdir / 'quiet'
    wait_for(lambda: (quiet / 'root.log.2024-05-14-00-00-00-000000.gz').exists(), 5,
             message='quiet rotated')
    send_tcp(daemon.tcp_port, frame('app', 'after midnight'))
    wait_for(lambda: read_lines(folder / 'root.log'), 5, message='a line in the new file')
    assert daemon.stop() == 0
    assert [line_body(line) for line in read_lines(folder / 'root.log')] == ['after midnight']
    # The same folders just before the next midnight, the 16th's: app's file (one line) is
    # rotated again; quiet's, empty since the 14th's rotation, only starts its next period.
    second = ClockedDaemon(daemon.base, daemon.facilities_path.read_text(),
                           '2024-05-15 23:59:%02d' % (60 - LEAD_S),
                           sections={'compressor': {'format': 'gzip'}})
    second.start()
    try:
        backup = 'root.log.2024-05-15-00-00-00-000000.gz'
        wait_for(lambda: (folder / backup).exists(), LEAD_S + 10, message=backup)
        # The sentinel: the rotation state shows quiet's deadline passed, so the daemon has
        # decided about it.
        wait_for(lambda: period_start(second, quiet / 'root.log') == MIDNIGHT_OF_THE_16TH, 10,
                 message="quiet's period of the 16th in the rotation state")
        assert second.stop() == 0
    finally:
        second.kill()
    assert [line_body(line) for _, line in file_history(folder)] == [
        'before midnight', 'after midnight']
    # no empty backup: only the one of the 14th exists
    assert sorted(os.listdir(quiet)) == ['root.log', 'root.log.2024-05-14-00-00-00-000000.gz']


def test_a_daemon_down_across_midnight_rotates_at_start_and_remembers(clocked):
    first = clocked('[app]\nrotate = daily\nbackup_count = 3\n', '2024-05-14 10:00:00',
                    name='monday')
    send_tcp(first.tcp_port, frame('app', 'written on the 14th'))
    wait_for(lambda: read_lines(first.log_file('app')), 5, message='the line')
    assert first.stop() == 0
    # the same folders, two days later
    second = ClockedDaemon(first.base, '[app]\nrotate = daily\nbackup_count = 3\n',
                           '2024-05-16 09:00:00')
    second.start()
    try:
        folder = first.logdir / 'app'
        backup = 'root.log.2024-05-14-00-00-00-000000.xz'
        wait_for(lambda: (folder / backup).exists(), 10, message=backup)
        send_tcp(second.tcp_port, frame('app', 'written on the 16th'))
        wait_for(lambda: read_lines(folder / 'root.log'), 5, message='the new line')
        assert second.stop() == 0
    finally:
        second.kill()
    assert [(name, line_body(line)) for name, line in file_history(folder)] == [
        (backup, 'written on the 14th'), ('live', 'written on the 16th')]
    assert sorted(os.listdir(folder)) == ['root.log', backup]
