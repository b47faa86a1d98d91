"""Many per-host files rotating at the same minute do not hold up another application
(issue 15), with a real loghogd on a clock the test sets (libfaketime, as in
test_rotation_clock.py): 1,000 files (the default max_hosts) due at one minute, while a
good client of another application sends a message every 2 ms."""

import socket
import threading
import time

import pytest

from tests.integration.test_rotation_clock import LIBFAKETIME, ClockedDaemon
from tests.support import frame, read_lines, wait_for

pytestmark = pytest.mark.skipif(LIBFAKETIME is None,
                                reason='libfaketime is not installed (apt-get install faketime)')

HOSTS = 1000
FACILITIES = """
[fleet]
rotate = * * * * *
backup_count = 3
file_per_host = yes

[app]
rotate = daily
backup_count = 3
"""


class Probe:
    """One message every ``interval_s`` to [app], each carrying its send time."""

    def __init__(self, port, interval_s=0.002):
        self.sock = socket.create_connection(('127.0.0.1', port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.interval_s = interval_s
        self.sent = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self):
        while not self.stopping.wait(self.interval_s):
            self.sock.sendall(frame('app', 'probe %d %.6f' % (self.sent, time.time())))
            self.sent += 1

    def stop(self):
        self.stopping.set()
        self.thread.join()
        self.sock.close()
        return self.sent


def delays(lines):
    """Each probe's receive time minus its send time.  The daemon's clock is faked (a
    constant offset from ours), so the smallest delay is taken as zero."""
    values = []
    for line in lines:
        stamp, _, rest = line.partition(' - ')
        received = time.mktime(time.strptime(stamp[:19], '%Y-%m-%d %H:%M:%S')) + float(stamp[19:])
        values.append(received - float(rest.rsplit(' ', 1)[1]))
    floor = min(values)
    return sorted(v - floor for v in values)


def test_a_thousand_files_rotating_at_one_minute_keep_another_apps_p99_under_50ms(tmp_path):
    daemon = ClockedDaemon(tmp_path, FACILITIES, '2024-05-14 10:00:52')
    with daemon:
        with socket.create_connection(('127.0.0.1', daemon.tcp_port)) as sock:
            sock.sendall(b''.join(frame('fleet', 'hello', host='host%04d' % n)
                                  for n in range(HOSTS)))
        folder = daemon.logdir / 'fleet'
        wait_for(lambda: folder.exists() and len(list(folder.iterdir())) >= HOSTS, 10,
                 message='the per-host files')
        probe = Probe(daemon.tcp_port)
        # At 10:01:00 on the daemon's clock all of them rotate; the probe runs throughout.
        wait_for(lambda: sum(1 for p in folder.iterdir() if '-root.log.' in p.name) >= HOSTS,
                 30, 0.1, 'every file rotated')
        time.sleep(0.5)   # probes after the last rotation, too; not a proof of anything
        sent = probe.stop()
        lines = wait_for(lambda: (lambda ls: ls if len(ls) >= sent else None)(
            read_lines(daemon.log_file('app'))), 10, message='every probe written')
        assert [line.split(' - ', 2)[2].split()[1] for line in lines] == \
            [str(n) for n in range(sent)]
        measured = delays(lines)
        p99 = measured[int(0.99 * len(measured))]
        assert p99 < 0.050, 'p99 %.1f ms, max %.1f ms over %d probes' % (
            p99 * 1000, measured[-1] * 1000, len(measured))
        began = time.monotonic()
        assert daemon.stop() == 0
        assert time.monotonic() - began < 10
