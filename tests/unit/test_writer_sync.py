"""fsync off the loop's thread: the Writer's Syncer, and acks that wait for it.

``os.fdatasync`` is replaced by a gate that the test opens, so that a sync can be held
"in flight" while the loop's side carries on.
"""

import os
import threading

import pytest

from loghogd import writer as writer_module
from loghogd.acks import AckState
from loghogd.stats import Counters
from loghogd.writer import Writer


class Facility:
    """What the Writer needs of a facility."""

    def __init__(self, flush_every=1, name='root'):
        self.app = 'app'
        self.path = ()
        self.name = name
        self.flush_every = flush_every
        self.file_per_host = False
        self.key = ('app', name)

    def file_name(self, host=None):
        return '%s.log' % self.name


class GatedSync:
    """Stands in for os.fdatasync: records each call and blocks until released."""

    def __init__(self, fail=False):
        self.calls = []
        self.entered = threading.Semaphore(0)
        self.gate = threading.Semaphore(0)
        self.fail = fail
        self.threads = set()

    def __call__(self, fd):
        self.calls.append(fd)
        self.threads.add(threading.current_thread().name)
        self.entered.release()
        assert self.gate.acquire(timeout=10), 'the test never released the sync'
        if self.fail:
            raise OSError(5, 'Input/output error')

    def release(self, n=1):
        for _ in range(n):
            self.gate.release()


@pytest.fixture
def gated(monkeypatch):
    def make(fail=False):
        gate = GatedSync(fail)
        monkeypatch.setattr(writer_module.os, 'fdatasync', gate)
        return gate
    return make


@pytest.fixture
def threaded(tmp_path):
    writers = []

    def make():
        woken = threading.Event()
        writer = Writer(str(tmp_path), Counters())
        writer.start_syncer(woken.set)
        writer.woken = woken
        writers.append(writer)
        return writer
    yield make
    for writer in writers:
        if writer.syncer is not None:
            for jobs in writer.syncer._queues:
                jobs.put(None)


def wait_synced(writer, now):
    """Wait for the syncer's wakeup, then let the loop's side take the result."""
    assert writer.woken.wait(10)
    writer.woken.clear()
    writer.flush(now)


def add(writer, facility, acks, text):
    log_file = writer.add(facility, 'host', text + '\n')
    acks.received += 1
    acks.files.add(log_file)
    return log_file


def one_line_flushed(threaded, gated, **gate_options):
    """A threaded Writer with a gated fsync, one line of a flush_every=1 facility written and
    flushed: (gate, writer, acks, log_file)."""
    gate = gated(**gate_options)
    writer = threaded()
    acks = AckState()
    log_file = add(writer, Facility(flush_every=1), acks, 'one')
    writer.flush(1.0)
    return gate, writer, acks, log_file


def test_flush_returns_while_the_fsync_runs_on_the_syncer_thread_and_the_ack_waits(
        threaded, gated):
    gate, writer, acks, log_file = one_line_flushed(threaded, gated)                       # returns although the fsync is blocked
    assert gate.entered.acquire(timeout=10)
    assert [name.rsplit('-', 1)[0] for name in gate.threads] == ['loghogd-syncer']
    assert open(log_file.path).read() == 'one\n'           # written ...
    assert acks.take_due() == []                           # ... not fsynced: no ack
    assert log_file.synced_seq < log_file.sync_wanted == 1
    gate.release()
    wait_synced(writer, 1.1)
    [frame] = acks.take_due()
    assert b'"ack":1' in frame and acks.acked == 1


def test_lines_below_flush_every_are_acked_once_written_as_before(threaded, gated):
    gate = gated()
    writer = threaded()
    facility = Facility(flush_every=1000)
    acks = AckState()
    add(writer, facility, acks, 'one')
    writer.flush(1.0)
    assert len(acks.take_due()) == 1
    assert gate.calls == []


def test_a_connection_is_not_held_back_by_lines_others_keep_adding_to_its_file(
        threaded, gated):
    gate = gated()
    writer = threaded()
    facility = Facility(flush_every=1)
    mine, other = AckState(), AckState()
    add(writer, facility, mine, 'mine')
    writer.flush(1.0)
    assert mine.take_due() == []            # a snapshot, waiting for the first fsync
    assert gate.entered.acquire(timeout=10)
    for n in range(3):                      # someone else keeps the file busy
        add(writer, facility, other, 'other %d' % n)
        writer.flush(1.0 + n / 10)
        assert other.take_due() == []
    gate.release()                          # the first fsync ends: 'mine' was in it
    wait_synced(writer, 2.0)
    assert len(mine.take_due()) == 1
    assert other.take_due() == []           # theirs need the second one, started now
    assert gate.entered.acquire(timeout=10)
    assert len(gate.calls) == 2             # one more fsync covers all three: coalesced
    gate.release()
    wait_synced(writer, 2.1)
    frames = other.take_due()    # its first snapshot (1 frame), then one of all 3
    assert b'"ack":3' in frames[-1] and other.is_done()


def test_a_failed_fsync_on_the_thread_reports_the_file_as_lost(threaded, gated):
    gate, writer, acks, log_file = one_line_flushed(threaded, gated, fail=True)
    gate.release()
    wait_synced(writer, 1.1)
    assert writer.take_lost() == {log_file}
    assert writer.counters.events['sync_errors'] == 1
    assert log_file.sync_failing
    assert log_file in acks.all_files()     # the server closes this connection, unacked


def test_closing_a_file_while_its_fsync_runs_is_safe_the_thread_syncs_a_duplicate(
        threaded, gated):
    gate, writer, acks, log_file = one_line_flushed(threaded, gated)
    assert gate.entered.acquire(timeout=10)
    thread_fd = gate.calls[0]
    assert thread_fd != log_file.fd
    gate.release()              # for close()'s own fdatasync, made on the loop's thread
    log_file.close()            # what rotation and SIGHUP do
    assert log_file.fd is None
    gate.release()
    wait_synced(writer, 1.1)
    with pytest.raises(OSError):
        os.fstat(thread_fd)     # the thread closed its duplicate
    assert len(acks.take_due()) == 1


def test_close_waits_for_every_fsync_started(threaded, gated):
    gate, writer, acks, log_file = one_line_flushed(threaded, gated)
    assert gate.entered.acquire(timeout=10)
    threading.Timer(0.2, gate.release).start()
    writer.close(1.2)
    assert writer.syncer is None and log_file.fd is None
    assert log_file.synced_seq == log_file.written_seq == 1
    assert len(acks.take_due()) == 1


def test_close_runs_an_fsync_wanted_after_the_last_one_started_itself(threaded, gated):
    """One wanted while the last ran (sync_again) used to go to the stopped thread and
    never end; only the close's own fsync hid it, until that no longer counted."""
    gate, writer, acks, log_file = one_line_flushed(threaded, gated)
    assert gate.entered.acquire(timeout=10)
    add(writer, Facility(flush_every=1), acks, 'two')
    writer.flush(1.1)                       # a second fsync is wanted: after the first
    assert log_file.sync_again
    threading.Timer(0.2, gate.release, (5,)).start()
    writer.close(1.2)
    assert log_file.synced_seq == log_file.written_seq == 2
    assert b'"ack":2' in b''.join(acks.take_due())


def test_without_a_syncer_the_fsync_runs_inline(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(writer_module.os, 'fdatasync', calls.append)
    writer = Writer(str(tmp_path), Counters())
    acks = AckState()
    add(writer, Facility(flush_every=2), acks, 'one')
    writer.flush(1.0)
    assert calls == [] and len(acks.take_due()) == 1
    add(writer, Facility(flush_every=2), acks, 'two')
    writer.flush(1.1)
    assert len(calls) == 1 and len(acks.take_due()) == 1


class ThreadFails(GatedSync):
    """The syncer thread's fdatasync waits for the gate and fails; the loop's succeeds at
    once (as when the thread's call took the error both descriptors share)."""

    def __call__(self, fd):
        if not threading.current_thread().name.startswith('loghogd-syncer'):
            self.calls.append(fd)
            return
        self.fail = True
        super().__call__(fd)


def test_an_inline_close_during_the_syncers_fsync_cannot_consume_its_error(
        threaded, monkeypatch):
    """Issue 14: a duplicate descriptor shares the file's fsync error state.  When the
    thread's fdatasync fails, the close's own (rotation, SIGHUP) may see success: that
    success must not let the lines be acknowledged before the thread reports."""
    gate = ThreadFails()
    monkeypatch.setattr(writer_module.os, 'fdatasync', gate)
    writer = threaded()
    acks = AckState()
    log_file = add(writer, Facility(flush_every=1), acks, 'one')
    writer.flush(1.0)
    assert gate.entered.acquire(timeout=10)
    log_file.close()            # what rotation and SIGHUP do: its fdatasync "succeeds"
    assert acks.take_due() == []
    gate.release()              # the thread's fails
    wait_synced(writer, 1.1)
    assert writer.take_lost() == {log_file}
    assert log_file in acks.all_files()     # the acknowledger closes it, unacked


# -- file_per_host: one file per safe host name, and a cap on open descriptors ------------

class PerHost(Facility):

    def __init__(self, flush_every=1000):
        super().__init__(flush_every)
        self.file_per_host = True

    def file_name(self, host=None):
        return '%s-root.log' % host


def open_descriptors():
    return len(os.listdir('/proc/self/fd'))


def test_host_names_that_make_the_same_file_name_share_one_file(tmp_path):
    writer = Writer(str(tmp_path), Counters())
    facility = PerHost()
    one = writer.add(facility, 'web/1', 'a\n')
    two = writer.add(facility, 'web 1', 'b\n')
    assert one is two and len(writer.files) == 1
    writer.flush(1.0)
    assert (tmp_path / 'app' / 'web_1-root.log').read_text() == 'a\nb\n'
    writer.close(2.0)


def test_beyond_max_open_files_the_least_recently_written_are_closed_and_reopened(tmp_path):
    before = open_descriptors()
    writer = Writer(str(tmp_path), Counters(), max_open_files=3)
    facility = PerHost()
    for round_ in range(3):
        for host in ('h1', 'h2', 'h3', 'h4', 'h5'):
            writer.add(facility, host, '%s %d\n' % (host, round_))
            writer.flush(1.0 + round_)
            assert open_descriptors() - before <= 3
            assert sum(f.fd is not None for f in writer.files.values()) <= 3
    assert writer.files[('app', (), 'h5')].fd is not None     # the most recent stay open
    assert writer.files[('app', (), 'h1')].fd is None
    writer.close(5.0)
    assert open_descriptors() == before
    for host in ('h1', 'h2', 'h3', 'h4', 'h5'):     # reopened appending: nothing lost
        assert (tmp_path / 'app' / ('%s-root.log' % host)).read_text() == \
            ''.join('%s %d\n' % (host, r) for r in range(3))


def test_a_file_closed_for_the_cap_is_fsynced_by_the_syncer_not_the_loop(threaded, gated):
    gate = gated()
    writer = threaded()
    writer.max_open_files = 1
    facility = PerHost(flush_every=1000)          # lines written, not yet fsynced
    first = writer.add(facility, 'h1', 'one\n')
    writer.flush(1.0)
    fd = first.fd
    writer.add(facility, 'h2', 'two\n')
    writer.flush(1.1)                             # h1 is closed: returns at once
    assert first.fd is None
    assert gate.entered.acquire(timeout=10)
    assert gate.calls == [fd] and [n.rsplit('-', 1)[0] for n in gate.threads] == ['loghogd-syncer']
    gate.release()
    wait_synced(writer, 1.2)
    assert first.synced_seq == first.written_seq == 1
    with pytest.raises(OSError):
        os.fstat(fd)                              # the thread closed it
    gate.release(5)                               # the closing fsyncs of close()
    writer.close(2.0)


# -- A5-1: a file's fsyncs end in order, whatever happens to its facility ------------------

class RecordedSync(GatedSync):
    """A gated fdatasync that also records the descriptors whose fdatasync has returned."""

    def __init__(self):
        super().__init__()
        self.returned = []

    def __call__(self, fd):
        super().__call__(fd)
        self.returned.append(fd)


def test_a_files_fsyncs_end_in_order_when_a_reload_gives_it_a_new_facility_object(
        threaded, monkeypatch):
    """A5-1: the syncer took a file's fsyncs one facility object after another, and every
    reload (SIGHUP) makes new facility objects.  Descriptors of a file released by
    rotations and reopens, queued under the old object, and one under the new came back
    out of order: the new one's result raised ``synced_seq`` over lines only a later old
    one covers, and their ack went out before the fsync of the inode they are in (a
    rotated backup left empty on the disk after a crash, with acked lines)."""
    gate = RecordedSync()
    monkeypatch.setattr(writer_module.os, 'fdatasync', gate)
    writer = threaded()
    before = Facility(flush_every=1)
    add(writer, before, AckState(), 'a')
    writer.flush(1.0)                    # fsync A (a duplicate) starts and is held
    assert gate.entered.acquire(timeout=10)
    log_file = writer.files[('app', (), None)]
    mine = AckState()
    for n, text in enumerate(['b1', 'b2', 'c']):     # B1, B2, B3: reopens, rotations
        add(writer, before, mine if text == 'c' else AckState(), text)
        writer.flush(1.1 + n / 10)
        c_fd = log_file.fd
        writer.release(log_file)
    gate.release()                       # A ends; the thread takes B1, B2, B3 and runs B1
    assert gate.entered.acquire(timeout=10)
    after = Facility(flush_every=1)      # a reload: same app and file, a new object
    writer.retarget(type('Table', (), {'by_app': {'app': {(): after}}})())
    assert log_file.facility is after
    add(writer, after, AckState(), 'd')
    writer.flush(1.5)
    writer.release(log_file)             # C, the descriptor of 'd'
    for n in range(1, 6):                # B1, B2, B3, C end, one at a time
        while len(gate.returned) < n:
            writer.woken.wait(0.01)
        wait_synced(writer, 2.0 + n)
        if mine.take_due():
            assert c_fd in gate.returned, (
                "'c' acknowledged before the fsync of its descriptor ended (ended: %s, "
                "c's: %s)" % (gate.returned, c_fd))
            break
        gate.release()
        if n < 4:
            assert gate.entered.acquire(timeout=10)
    else:
        pytest.fail("'c' was never acknowledged")


class ThreadHeld(RecordedSync):
    """The syncer thread's fdatasync waits for the gate; the loop's returns at once."""

    def __call__(self, fd):
        if not threading.current_thread().name.startswith('loghogd-syncer'):
            self.calls.append(fd)
            return
        super().__call__(fd)


def test_an_inline_fsync_never_vouches_for_an_earlier_descriptor_still_syncing(
        threaded, monkeypatch):
    """A5-1: ``syncing`` was a flag, cleared by the first result while a second
    descriptor of the file (handed over by a rotation or reopen) was still being synced;
    an inline fsync of the new descriptor then (the syncer full, or out of descriptors)
    raised ``synced_seq`` over the older descriptor's lines, and acked them unsynced."""
    gate = ThreadHeld()
    monkeypatch.setattr(writer_module.os, 'fdatasync', gate)
    writer = threaded()
    facility = Facility(flush_every=1)
    add(writer, facility, AckState(), 'a')
    writer.flush(1.0)                    # A, a duplicate, held
    assert gate.entered.acquire(timeout=10)
    log_file = writer.files[('app', (), None)]
    mine = AckState()
    add(writer, facility, mine, 'b')
    writer.flush(1.1)
    b_fd = log_file.fd
    writer.release(log_file)             # a rotation: B, the descriptor of 'b'
    gate.release()                       # A ends; B starts and is held
    assert gate.entered.acquire(timeout=10)
    wait_synced(writer, 1.2)
    assert mine.take_due() == []
    writer.max_open_files = 1            # the syncer is full: the next fsync runs inline
    add(writer, facility, AckState(), 'c')
    writer.flush(1.3)
    assert gate.calls                    # it did
    assert mine.take_due() == [], "'b' acknowledged while its descriptor's fsync runs"
    gate.release()
    while b_fd not in gate.returned:
        writer.woken.wait(0.01)
    wait_synced(writer, 1.4)
    assert len(mine.take_due()) == 1
