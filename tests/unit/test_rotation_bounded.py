"""Rotation's work stays bounded (issue 15): no folder listing per rotation, slices of
at most a time budget per loop pass, a state that grows by a line per change, deadlines
computed again when the clock goes back, and a backup that cannot be deleted is only a
warning.  The real Writer, Rotator and Compressor; ``now`` is ours."""

import json
import logging
import os

import pytest

from loghogd import rotation
from tests.unit.rotation_harness import DAILY, Harness, harness, local  # noqa: F401 (a fixture)

MINUTELY_PER_HOST = """
[fleet]
rotate = * * * * *
backup_count = 2
file_per_host = yes
"""



def write_hosts(h, now, hosts):
    for host in hosts:
        h.writer.add(h.table.lookup('fleet', 'root'), host, 'from %s\n' % host)
    h.writer.flush(now)
    drain(h, now)


def drain(h, now):
    """Loop passes until nothing is due at ``now`` (each rotates at most a slice)."""
    h.run_tasks(now)
    while h.rotator.next_deadline() is not None and h.rotator.next_deadline() <= now:
        h.run_tasks(now)


def test_rotations_list_no_folder_once_the_daemon_runs(harness, monkeypatch):
    t = local(2024, 5, 14, 10, 0, 30)
    h = harness(MINUTELY_PER_HOST, now=t)
    hosts = ['web%03d' % n for n in range(50)]
    write_hosts(h, t, hosts)
    listed = []
    real_listdir = os.listdir
    monkeypatch.setattr(os, 'listdir', lambda path='.': listed.append(path) or real_listdir(path))
    for minute in range(1, 5):                      # 4 rotations of 50 files, and pruning
        now = t + 60 * minute
        write_hosts(h, now, hosts)
    monkeypatch.undo()
    h.settle(now)
    assert listed == []
    names = h.names('fleet')
    assert len([n for n in names if n.startswith('web007-root.log.')]) == 2   # backup_count
    assert len(names) == 50 * 3


def test_many_files_due_at_once_rotate_in_slices_of_the_budget(harness):
    t = local(2024, 5, 14, 10, 0, 30)
    h = harness(MINUTELY_PER_HOST, now=t)
    write_hosts(h, t, ['web%03d' % n for n in range(40)])
    now = t + 60
    h.rotator.tick(now, budget_s=0.0)                # one rotation, then the pass ends
    assert h.counters.events['rotations'] == 1
    assert h.rotator.next_deadline() <= now          # the rest stays due, for the next pass
    passes = 1
    while h.rotator.next_deadline() is not None and h.rotator.next_deadline() <= now:
        h.rotator.tick(now, budget_s=0.0)
        passes += 1
    assert h.counters.events['rotations'] == 40
    assert passes >= 40
    assert h.rotator.next_deadline() == local(2024, 5, 14, 10, 2)


def journal_lines(h):
    """Every line of the rotation journals, oldest generation first."""
    names = sorted((n for n in os.listdir(h.workdir) if n.startswith('rotation.json.journal-')),
                   key=lambda n: int(n.rsplit('-', 1)[1]))
    return [line for n in names for line in (h.workdir / n).read_text().splitlines()]


def test_a_rotation_appends_a_line_to_the_journal_not_the_whole_state(harness):
    t = local(2024, 5, 14, 10, 0, 30)
    h = harness(MINUTELY_PER_HOST, now=t)
    write_hosts(h, t, ['web%03d' % n for n in range(20)])
    state = h.workdir / 'rotation.json'
    before = state.stat()
    write_hosts(h, t + 60, ['web005'])               # the 20 files rotate
    after = state.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    changes = [json.loads(line) for line in journal_lines(h)]
    rotated = {path: entry for path, entry in changes if entry['last_rotation']}
    assert len(rotated) == 20 and len(changes) <= 2 * 20
    assert {e['last_rotation'] for e in rotated.values()} == {t + 60}
    # A restart reads rotation.json, then the journal's lines over it.
    h.restart(t + 61)
    files = json.loads(state.read_text())['files']
    assert {files[path]['last_rotation'] for path in rotated} == {t + 60}
    assert journal_lines(h) == []                    # folded into rotation.json


def test_a_journal_left_by_a_crash_is_read_over_the_state(harness):
    t = local(2024, 5, 14, 10, 0, 30)
    h = harness(MINUTELY_PER_HOST, now=t)
    write_hosts(h, t, ['web1'])
    write_hosts(h, t + 60, ['web1'])
    h.rotator.state.close()          # a crash: no stop, rotation.json not rewritten
    h.compressor.close()
    h._build()
    h.start(t + 61)
    path = str(h.logdir / 'fleet' / 'web1-root.log')
    assert h.rotator.files[path].last_rotation == t + 60
    h.settle(t + 61)
    assert len([n for n in h.names('fleet') if n.startswith('web1-root.log.')]) == 1


def test_the_state_is_rewritten_once_the_journal_outgrows_the_files(harness, monkeypatch):
    monkeypatch.setattr(rotation, 'JOURNAL_MIN_LINES', 10)
    t = local(2024, 5, 14, 10, 0, 30)
    h = harness(MINUTELY_PER_HOST, now=t)
    hosts = ['web%03d' % n for n in range(5)]
    write_hosts(h, t, hosts)
    for minute in range(1, 8):
        write_hosts(h, t + 60 * minute, hosts)
        h.rotator.state.close()                      # let a snapshot's thread finish
    assert len(journal_lines(h)) <= 10 + 5
    assert json.loads((h.workdir / 'rotation.json').read_text())['generation'] > 1
    h.restart(t + 60 * 7 + 1)
    files = json.loads((h.workdir / 'rotation.json').read_text())['files']
    assert sorted(e['last_rotation'] for e in files.values()) == [t + 60 * 7] * 5


def test_a_clock_set_back_brings_a_minutely_deadline_forward(harness):
    t = local(2024, 5, 14, 10, 0, 30)
    h = harness(MINUTELY_PER_HOST, now=t)
    write_hosts(h, t, ['web1'])
    assert h.rotator.next_deadline() == local(2024, 5, 14, 10, 1)
    back = t - 3600                                  # the clock is set back an hour
    h.rotator.tick(back)                             # the loop ticks every task then
    assert h.rotator.next_deadline() == local(2024, 5, 14, 9, 1)
    write_hosts(h, back + 60, ['web1'])              # and the file rotates a minute later
    h.settle(back + 60)
    assert len([n for n in h.names('fleet') if n.startswith('web1-root.log.')]) == 1


def test_a_small_step_back_of_the_clock_changes_nothing(harness):
    t = local(2024, 5, 14, 10, 0, 30)
    h = harness(DAILY, now=t)
    h.write(t, 'a')
    h.rotator.tick(t - 5)
    assert h.rotator.next_deadline() == local(2024, 5, 15)


def test_a_backup_that_cannot_be_deleted_is_a_warning_and_logging_goes_on(harness, caplog):
    h = harness(DAILY)
    folder = h.logdir / 'app'
    stuck = folder / 'root.log.2024-01-01-00-00-00-000000'
    h.write(local(2024, 5, 14, 10), 'a')
    stuck.mkdir()                                    # unlink() fails: EISDIR / EPERM
    (stuck / 'x').write_text('keep me')
    h.restart(local(2024, 5, 14, 11))
    with caplog.at_level(logging.WARNING, logger='loghogd.rotation'):
        h.reload(DAILY.replace('backup_count = 5', 'backup_count = 0'), local(2024, 5, 14, 12))
        h.write(local(2024, 5, 15, 0, 0, 1), 'b')
    h.settle(local(2024, 5, 15, 0, 0, 1))
    assert stuck.is_dir()
    assert h.counters.events['prune_errors'] >= 1
    assert 'cannot delete old backup' in caplog.text
    assert (folder / 'root.log').read_text().endswith(' - web1 - b\n') or \
        (folder / 'root.log').read_text() == 'b\n'


def test_a_reload_that_changes_many_files_rotates_them_in_the_loops_slices(harness):
    daily = MINUTELY_PER_HOST.replace('* * * * *', 'daily').replace('backup_count = 2',
                                                                   'backup_count = 5')
    t = local(2024, 5, 14, 10, 0, 30)
    h = harness(daily, now=t)
    write_hosts(h, t, ['web%03d' % n for n in range(30)])
    h.writer.flush(t + 120)
    h.configure(MINUTELY_PER_HOST)                   # SIGHUP: every minute from now on
    h.writer.retarget(h.table)
    h.rotator.reload(h.table, t + 120)
    assert h.counters.events['rotations'] == 0       # nothing done inside the reload
    assert h.rotator.next_deadline() <= t + 120      # but all of it due at once
    for _ in range(29):                              # one file's new settings per pass
        h.rotator.tick(t + 120, budget_s=0.0)
    assert h.counters.events['rotations'] == 0
    h.rotator.tick(t + 120, budget_s=0.0)            # the last file's, then a rotation
    assert h.counters.events['rotations'] == 1       # a slice per pass
    drain(h, t + 120)
    assert h.counters.events['rotations'] == 30
    assert h.rotator.next_deadline() == local(2024, 5, 14, 10, 3)
