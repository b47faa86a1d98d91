"""The writer's bounded work (issue 15): no fsync on the loop's thread when files close
(SIGHUP's reopen, a reload, rotation, max_open_files), and a bounded number of files
opened per pass, one facility after another."""

import os
import threading
import time

import pytest

from loghogd import writer as writer_module
from loghogd.stats import Counters
from loghogd.writer import Writer


class Facility:
    """What the Writer needs of a facility."""

    def __init__(self, app='app', flush_every=1000, file_per_host=False):
        self.app = app
        self.path = ()
        self.name = 'root'
        self.flush_every = flush_every
        self.file_per_host = file_per_host
        self.key = (app, 'root')

    def file_name(self, host=None):
        return '%s-root.log' % host if host else 'root.log'


class RecordedSync:
    """os.fdatasync, recording the thread of each call."""

    def __init__(self):
        self.threads = []
        self.real = os.fdatasync

    def __call__(self, fd):
        self.threads.append(threading.current_thread().name)
        return self.real(fd)

    def on_loop(self):
        return [name for name in self.threads if not name.startswith('loghogd-syncer')]


@pytest.fixture
def syncs(monkeypatch):
    recorded = RecordedSync()
    monkeypatch.setattr(writer_module.os, 'fdatasync', recorded)
    return recorded


@pytest.fixture
def writer(tmp_path):
    made = Writer(str(tmp_path), Counters())
    made.start_syncer(lambda: None)
    yield made
    made.close(0.0)


def write_files(writer, count, app='app'):
    """One line each in ``count`` files not fsynced by policy (flush_every 1000)."""
    facilities = [Facility('%s%d' % (app, n)) for n in range(count)]
    for facility in facilities:
        writer.add(facility, 'web1', 'a line\n')
    writer.flush(1.0)
    return facilities


def test_sighup_reopen_fsyncs_on_the_syncer_thread_not_the_loop(writer, syncs, tmp_path):
    write_files(writer, 20)
    writer.reopen()
    assert syncs.on_loop() == []
    writer.syncer.close()          # every fsync handed over ends
    writer._take_synced()
    writer.syncer = None
    assert len(syncs.threads) == 20
    assert all(f.fd is None for f in writer.files.values())


def test_closing_files_beyond_max_open_files_never_fsyncs_on_the_loop(tmp_path, syncs):
    # (Only with max_open_files fsyncs in flight does the loop fsync itself: each holds a
    # descriptor, and the limit is raised for twice max_open_files.)
    writer = Writer(str(tmp_path), Counters(), max_open_files=16)
    writer.start_syncer(lambda: None)
    write_files(writer, 30)
    assert len(writer.open_files) == 16
    assert syncs.on_loop() == []
    writer.close(2.0)


def test_a_reload_that_drops_facilities_fsyncs_on_the_syncer_thread(writer, syncs):
    write_files(writer, 10)

    class EmptyTable:
        by_app = {}
    writer.retarget(EmptyTable())
    assert writer.files == {} and syncs.on_loop() == []


def test_files_are_opened_a_few_per_pass_one_facility_after_another(writer):
    fleet = Facility('fleet', flush_every=1, file_per_host=True)
    app = Facility('app', flush_every=1)
    for n in range(200):
        writer.add(fleet, 'host%03d' % n, 'from host %d\n' % n)
    writer.add(app, 'web1', 'the other application\n')
    writer.flush(1.0, open_budget_s=0.0)   # at least one file
    writer.flush(1.0, open_budget_s=0.0)   # the next facility first: round-robin
    app_file = writer.file_for(app, 'web1')
    assert app_file.written_seq == 1
    opened = [f for f in writer.files.values() if f.fd is not None]
    assert len(opened) <= 4
    assert writer.next_deadline() == 0.0    # the rest at once, in the next passes
    passes = 2
    give_up_at = time.monotonic() + 30
    while not all(f.written_seq == 1 for f in writer.files.values()):
        assert time.monotonic() < give_up_at, 'files still waiting after 30 s'
        if writer.next_deadline() != 0.0:
            time.sleep(0.001)   # 8 fsyncs wait: the syncer wakes the daemon's loop
        writer.flush(1.0, open_budget_s=0.0)
        passes += 1
    assert passes >= 100   # bounded per pass: never all 201 files at once


def test_without_a_budget_flush_writes_every_file(writer):
    fleet = Facility('fleet', flush_every=1, file_per_host=True)
    for n in range(50):
        writer.add(fleet, 'host%03d' % n, 'line\n')
    writer.flush(1.0, open_budget_s=0.0)
    writer.flush(1.0)                       # shutdown's and the tools' flush
    assert all(f.written_seq == 1 for f in writer.files.values())


def test_idle_closed_files_are_forgotten_and_opened_again_on_demand(tmp_path, syncs):
    writer = Writer(str(tmp_path), Counters(), max_open_files=16)
    writer.start_syncer(lambda: None)
    fleet = Facility('fleet', flush_every=1, file_per_host=True)
    for n in range(40):
        writer.add(fleet, 'host%02d' % n, 'first\n')
    writer.flush(1.0)
    writer.syncer.close()            # the handed-over fsyncs end (as they would)
    writer._take_synced()
    writer.syncer = None
    later = 1.0 + writer_module.FORGET_AFTER_S + 1
    writer.flush(later, open_budget_s=0.003)
    assert len(writer.files) == 16   # the 24 closed ones are gone from memory
    assert writer.counters.events['files_forgotten'] == 24
    writer.add(fleet, 'host00', 'second\n')
    writer.flush(later, open_budget_s=0.003)
    path = tmp_path / 'fleet' / 'host00-root.log'
    assert path.read_text() == 'first\nsecond\n'
    writer.close(later)
