"""A Writer, a Rotator and a real Compressor in a tmp folder, driven like the loop drives
them but with ``now`` passed in: what the rotation unit tests share."""

import bz2
import datetime
import gzip
import lzma
import os
import threading
import time

import pytest

from loghogd.compressor import Compressor
from loghogd.facilities import load_facilities
from loghogd.rotation import Rotator
from loghogd.stats import Counters
from loghogd.writer import Writer

BERLIN = 'CET-1CEST,M3.5.0,M10.5.0/3'
_OPENERS = {'.gz': gzip.open, '.xz': lzma.open, '.bz2': bz2.open}


def local(*fields):
    """Unix time of an unambiguous local wall time."""
    return time.mktime(datetime.datetime(*fields).timetuple())


def read_backup(path):
    """The text of a backup, decompressed by its suffix."""
    opener = _OPENERS.get(os.path.splitext(path)[1], open)
    with opener(path, 'rb') as stream:
        return stream.read().decode('utf-8')


class Harness:
    """The daemon's rotation machinery on ``base``, without sockets or a real clock."""

    def __init__(self, base, facilities, fmt='gzip', level=1):
        self.base = base
        self.logdir = base / 'log'
        self.workdir = base / 'lib'
        self.logdir.mkdir(exist_ok=True)
        self.workdir.mkdir(exist_ok=True)
        self.fmt, self.level = fmt, level
        self.configure(facilities)
        self._build()

    def configure(self, facilities):
        conf = self.base / 'facilities.conf'
        conf.write_text(facilities)
        self.table = load_facilities(str(conf))

    def _build(self):
        self.counters = Counters()
        self.woken = threading.Event()
        self.compressor = Compressor(self.fmt, self.level, self.woken.set)
        self.compressor.start()
        self.writer = Writer(str(self.logdir), self.counters)
        self.rotator = Rotator(self.writer, self.table, str(self.logdir), str(self.workdir),
                               self.compressor, self.counters)

    def start(self, now):
        self.rotator.start(now)
        return self

    def write(self, now, *bodies, app='app', module='root', host='web1'):
        """Receive ``bodies`` at ``now``: queue, flush, and run the due tasks (one loop turn)."""
        facility = self.table.lookup(app, module)
        for body in bodies:
            self.writer.add(facility, host, body + '\n')
        self.writer.flush(now)
        self.run_tasks(now)

    def run_tasks(self, now):
        """What the loop does after its flush: tick every task whose deadline has come,
        pass after pass until none is due (the rotator does a slice of work per pass)."""
        for _ in range(100000):
            due = [task for task in (self.rotator, self.compressor)
                   if task.next_deadline() is not None and now >= task.next_deadline()]
            if not due:
                return
            for task in due:
                task.tick(now)
        raise AssertionError('a task stays due at %r' % now)

    def settle(self, now, timeout=20.0):
        """Wait until every compression handed to the worker is finished and handed back."""
        limit = time.monotonic() + timeout
        while self.rotator.compressing or self.compressor.next_deadline() is not None:
            assert time.monotonic() < limit, 'compression did not finish'
            self.woken.wait(0.05)
            self.woken.clear()
            self.run_tasks(now)

    def reload(self, facilities, now):
        """What SIGHUP does: flush, a new table, retarget, reopen, then the rotation's hook."""
        self.writer.flush(now)
        self.configure(facilities)
        self.writer.retarget(self.table)
        self.writer.reopen()
        self.rotator.reload(self.table, now)
        self.run_tasks(now)

    def restart(self, now):
        """Stop as the daemon stops, and start again at ``now`` on the same folders."""
        self.stop(now)
        self._build()
        return self.start(now)

    def stop(self, now):
        self.writer.close(now)
        self.rotator.close()
        self.compressor.close()

    def names(self, app='app'):
        try:
            return sorted(os.listdir(self.logdir / app))
        except FileNotFoundError:
            return []

    def backups(self, base='root.log', app='app'):
        return [n for n in self.names(app) if n.startswith(base + '.')]

    def text(self, name, app='app'):
        return read_backup(str(self.logdir / app / name))

    def history(self, base='root.log', app='app'):
        """Every line of the file, its backups (oldest first by name) then the live file."""
        text = ''.join(self.text(n, app) for n in self.backups(base, app))
        live = self.logdir / app / base
        if live.exists():
            text += live.read_text()
        return text.splitlines()


# The daily facility most rotation tests use, and the fixture that makes harnesses on it
# (in UTC), closing their compressors afterwards.
DAILY = """
[app]
rotate = daily
backup_count = 5
"""


@pytest.fixture
def harness(tmp_path, zone):
    zone('UTC0')
    made = []

    def make(facilities=DAILY, now=None, **options):
        h = Harness(tmp_path, facilities, **options)
        made.append(h)
        return h.start(local(2024, 5, 14, 10) if now is None else now)
    yield make
    for h in made:
        h.compressor.close()
