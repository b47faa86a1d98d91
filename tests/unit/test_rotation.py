"""Rotation with an injected clock: when files rotate, what the backups are called and
hold, what retention keeps, and what a restart or a reload changes.  The writer, the
rotator and the compressor are the real ones; only ``now`` is ours."""

import json
import logging
import logging.handlers
import os

import pytest

from loghogd.backups import backup_wall_time, format_stamp, parse_backup_name, to_prune
from tests.unit.rotation_harness import (  # noqa: F401 (harness: a fixture)
    BERLIN, DAILY, Harness, harness, local, read_backup)


SIZE = """
[app]
rotate = size
max_size = 100
backup_count = 50
"""


# -- when ------------------------------------------------------------------------------------

def test_a_daily_file_rotates_at_midnight_into_a_backup_named_after_its_day(harness):
    h = harness()
    h.write(local(2024, 5, 14, 10), 'morning', 'noon')
    h.write(local(2024, 5, 14, 23, 59, 59) + 0.5, 'late')
    assert h.rotator.next_deadline() == local(2024, 5, 15)
    h.run_tasks(local(2024, 5, 15) + 0.002)          # nobody writes: the loop's own wake-up
    h.settle(local(2024, 5, 15, 0, 0, 1))
    assert h.names() == ['root.log', 'root.log.2024-05-14-00-00-00-000000.gz']
    assert h.text('root.log.2024-05-14-00-00-00-000000.gz') == 'morning\nnoon\nlate\n'
    assert h.text('root.log') == ''                  # the new file exists at once, empty
    h.write(local(2024, 5, 15, 0, 0, 1), 'next day')
    assert h.text('root.log') == 'next day\n'


def test_lines_received_at_the_deadline_begin_the_next_file(harness):
    h = harness()
    h.write(local(2024, 5, 14, 23, 59, 59) + 0.999, 'before')
    h.write(local(2024, 5, 15), 'at midnight')       # no tick in between: the flush decides
    h.settle(local(2024, 5, 15))
    assert h.text('root.log.2024-05-14-00-00-00-000000.gz') == 'before\n'
    assert h.text('root.log') == 'at midnight\n'


def test_an_empty_file_is_not_rotated_and_its_period_moves_on(harness):
    h = harness()
    h.write(local(2024, 5, 14, 10), 'tuesday')
    h.run_tasks(local(2024, 5, 15))
    h.run_tasks(local(2024, 5, 16))                   # empty all Wednesday: no backup
    h.write(local(2024, 5, 16, 12), 'thursday')
    h.run_tasks(local(2024, 5, 17))
    h.settle(local(2024, 5, 17))
    assert h.backups() == ['root.log.2024-05-14-00-00-00-000000.gz',
                           'root.log.2024-05-16-00-00-00-000000.gz']
    assert h.text('root.log.2024-05-16-00-00-00-000000.gz') == 'thursday\n'


def test_size_rotation_keeps_every_line_once_and_in_order(harness):
    h = harness(SIZE)
    now = local(2024, 5, 14, 10)
    for batch in range(40):
        now += 0.25
        h.write(now, *('line %03d-%d' % (batch, i) for i in range(3)))
    h.settle(now)
    assert len(h.backups()) >= 10
    assert os.path.getsize(h.logdir / 'app' / 'root.log') < 100
    assert h.history() == ['line %03d-%d' % (b, i) for b in range(40) for i in range(3)]


def test_names_never_collide_and_sort_in_rotation_order_within_one_microsecond(harness):
    h = harness(SIZE)
    now = local(2024, 5, 14, 10)
    for batch in range(12):                           # the clock does not move at all
        h.write(now, 'x' * 60 + ' %02d' % batch, 'y' * 60 + ' %02d' % batch)
    h.settle(now)
    backups = h.backups()
    assert len(backups) == 12 and len(set(backups)) == 12
    assert backups[0] == 'root.log.2024-05-14-10-00-00-000000.gz'
    assert backups[1] == 'root.log.2024-05-14-10-00-00-000001.gz'
    assert [h.text(b).split()[1] for b in backups] == ['%02d' % b for b in range(12)]


def test_with_a_schedule_and_max_size_whichever_comes_first_rotates(harness):
    h = harness(DAILY + 'max_size = 100\n')
    h.write(local(2024, 5, 14, 10), 'a' * 120)                    # size
    h.write(local(2024, 5, 14, 15, 30), 'small')
    h.run_tasks(local(2024, 5, 15))                                # schedule
    h.settle(local(2024, 5, 15))
    # the size rotation at 10:00 ends the first file; the second began then
    assert h.backups() == ['root.log.2024-05-14-00-00-00-000000.gz',
                           'root.log.2024-05-14-10-00-00-000000.gz']
    assert h.text('root.log.2024-05-14-10-00-00-000000.gz') == 'small\n'


def test_the_loop_wakes_for_the_nearest_deadline_of_all_files(harness):
    h = harness(DAILY + '[app:web]\nrotate = 0 * * * *\nbackup_count = 1\n')
    h.write(local(2024, 5, 14, 10, 20), 'a')
    h.write(local(2024, 5, 14, 10, 21), 'w', module='web')
    assert h.rotator.next_deadline() == local(2024, 5, 14, 11)
    h.run_tasks(local(2024, 5, 14, 11))
    assert h.rotator.next_deadline() == local(2024, 5, 14, 12)
    h.settle(local(2024, 5, 14, 11))
    assert h.backups('web.log') == ['web.log.2024-05-14-10-00-00-000000.gz']
    assert h.backups('root.log') == []


# -- retention -------------------------------------------------------------------------------

RETENTION = """
[app]
rotate = size
max_size = 10
backup_count = 2

[app:web]
rotate = size
backup_count = 2

[app:web.requests]
rotate = size
backup_count = 2

[hosts]
rotate = size
max_size = 10
backup_count = 1
file_per_host = yes
"""


def test_retention_keeps_the_newest_backups_of_that_file_and_touches_nothing_else(harness):
    h = harness(RETENTION)
    folder = h.logdir / 'app'
    folder.mkdir()
    others = ['web.requests.log.2020-01-01-00-00-00-000000.gz', 'web.log.1', 'notes.txt',
              'root.log.old', 'web1-web.log.2020-01-01-00-00-00-000000']
    for name in others:
        (folder / name).write_text('keep me\n')
    (h.logdir / 'hosts').mkdir()
    (h.logdir / 'hosts' / 'web2-root.log.2020-01-01-00-00-00-000000').write_text('other host\n')
    now = local(2024, 5, 14, 10)
    for n in range(5):              # every line reaches max_size: one rotation each
        now += 60
        h.write(now, 'web line %d' % n, module='web')
        h.write(now, 'host line %d' % n, app='hosts')
    h.settle(now)
    # a backup is named after the start of its period: the rotation before it
    assert h.backups('web.log') == ['web.log.1', 'web.log.2024-05-14-10-03-00-000000.gz',
                                    'web.log.2024-05-14-10-04-00-000000.gz']
    assert h.text('web.log.2024-05-14-10-04-00-000000.gz') == 'web line 4\n'
    assert all((folder / name).exists() for name in others)
    assert h.names('hosts') == ['web1-root.log', 'web1-root.log.2024-05-14-10-04-00-000000.gz',
                                'web2-root.log.2020-01-01-00-00-00-000000']
    assert h.history('web1-root.log', 'hosts') == ['host line 4']


def test_backup_count_zero_keeps_no_backup(harness):
    h = harness('[app]\nrotate = size\nmax_size = 10\nbackup_count = 0\n')
    h.write(local(2024, 5, 14, 10), 'first line')
    h.write(local(2024, 5, 14, 10, 1), 'second line')
    h.settle(local(2024, 5, 14, 10, 1))
    assert h.names() == ['root.log']


# -- restarts and the state ----------------------------------------------------------------

def test_a_restart_rotates_what_went_stale_while_the_daemon_was_down(harness):
    h = harness()
    h.write(local(2024, 5, 14, 10), 'tuesday')
    h.restart(local(2024, 5, 16, 9))                 # down across two midnights
    h.settle(local(2024, 5, 16, 9))
    assert h.backups() == ['root.log.2024-05-14-00-00-00-000000.gz']
    assert h.rotator.next_deadline() == local(2024, 5, 17)
    h.write(local(2024, 5, 16, 10), 'thursday')
    h.run_tasks(local(2024, 5, 17))
    h.settle(local(2024, 5, 17))
    assert h.backups()[-1] == 'root.log.2024-05-16-00-00-00-000000.gz'


def test_a_restart_within_the_period_neither_forgets_nor_repeats_a_rotation(harness):
    h = harness()
    h.write(local(2024, 5, 14, 10), 'a')
    h.run_tasks(local(2024, 5, 15))
    h.write(local(2024, 5, 15, 8), 'b')
    h.restart(local(2024, 5, 15, 9))
    h.settle(local(2024, 5, 15, 9))
    assert h.backups() == ['root.log.2024-05-14-00-00-00-000000.gz']
    assert h.rotator.next_deadline() == local(2024, 5, 16)
    state = json.loads((h.workdir / 'rotation.json').read_text())
    entry = state['files'][str(h.logdir / 'app' / 'root.log')]
    assert entry['period_start'] == local(2024, 5, 15)
    assert entry['last_rotation'] == local(2024, 5, 15)


def test_a_restart_after_the_clock_was_set_back_takes_the_period_of_now(harness, caplog):
    """A6-3: a daemon that ran a day ahead saved tomorrow's period; restarted with the right
    clock, an hourly file waited a day for its next rotation.  A saved period more than
    CLOCK_BACK_S ahead is the schedule's period at the new start, said once per file."""
    h = harness('[app]\nrotate = hourly\nbackup_count = 5\n', now=local(2024, 5, 15, 10))
    h.write(local(2024, 5, 15, 10, 20), 'written a day ahead')
    assert h.rotator.next_deadline() == local(2024, 5, 15, 11)
    with caplog.at_level(logging.WARNING, logger='loghogd.rotation'):
        h.restart(local(2024, 5, 14, 10, 30))        # the clock is right again
    path = str(h.logdir / 'app' / 'root.log')
    assert [r.getMessage() for r in caplog.records] == [
        f'{path}: the clock went back by 84600 s or more while the daemon was stopped: '
        f'rotation deadlines computed again']
    assert h.rotator.next_deadline() == local(2024, 5, 14, 11)
    state = json.loads((h.workdir / 'rotation.json').read_text())
    assert state['files'][path]['period_start'] == local(2024, 5, 14, 10)
    h.write(local(2024, 5, 14, 10, 40), 'the next line')
    h.run_tasks(local(2024, 5, 14, 11))
    h.settle(local(2024, 5, 14, 11))
    # Named after the period that was ahead, and so after the newest backup (none here).
    assert h.backups() == ['root.log.2024-05-14-10-00-00-000000.gz']
    assert h.text('root.log.2024-05-14-10-00-00-000000.gz') == (
        'written a day ahead\nthe next line\n')
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger='loghogd.rotation'):
        h.restart(local(2024, 5, 14, 11, 30))        # a later restart: nothing to correct
        h.restart(local(2024, 5, 14, 11, 29))        # nor within a minute (NTP's steps)
    assert caplog.records == []


def test_many_periods_in_the_future_are_said_one_by_one_then_in_a_summary(harness, caplog):
    folders = ''.join(f'[app:m{n}]\nrotate = hourly\nbackup_count = 5\n' for n in range(25))
    h = harness('[app]\nrotate = hourly\nbackup_count = 5\n' + folders,
                now=local(2024, 5, 15, 10))
    for n in range(25):
        h.write(local(2024, 5, 15, 10, 20), 'ahead', module=f'm{n}')
    with caplog.at_level(logging.WARNING, logger='loghogd.rotation'):
        h.restart(local(2024, 5, 14, 10, 30))
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 21 and all('while the daemon was stopped' in m for m in messages)
    assert messages[-1] == ('the clock went back while the daemon was stopped: rotation '
                            'deadlines computed again for 25 files (5 more than those above)')
    assert h.rotator.next_deadline() == local(2024, 5, 14, 11)


def test_a_file_the_state_does_not_know_rotates_by_its_modification_time(harness, tmp_path):
    folder = tmp_path / 'log' / 'app'
    folder.mkdir(parents=True)
    (folder / 'root.log').write_text('from an older loghogd\n')
    os.utime(folder / 'root.log', (local(2024, 5, 12, 18), local(2024, 5, 12, 18)))
    h = harness(now=local(2024, 5, 14, 10))
    h.settle(local(2024, 5, 14, 10))
    assert h.backups() == ['root.log.2024-05-12-00-00-00-000000.gz']


def test_an_unreadable_state_is_reported_and_rotation_goes_on(harness, tmp_path, caplog):
    (tmp_path / 'lib').mkdir()
    (tmp_path / 'lib' / 'rotation.json').write_text('{not json')
    with caplog.at_level(logging.WARNING, logger='loghogd.rotation'):
        h = harness()
    assert 'rotation.json cannot be read' in caplog.text
    h.write(local(2024, 5, 14, 10), 'a')
    h.run_tasks(local(2024, 5, 15))
    h.settle(local(2024, 5, 15))
    assert h.backups() == ['root.log.2024-05-14-00-00-00-000000.gz']
    assert json.loads((tmp_path / 'lib' / 'rotation.json').read_text())['format'] == 1


# -- reload --------------------------------------------------------------------------------

def test_a_new_schedule_ends_the_current_period_at_its_first_deadline(harness):
    h = harness()
    h.write(local(2024, 5, 14, 10, 20), 'a')
    h.reload('[app]\nrotate = hourly\nbackup_count = 5\n', local(2024, 5, 14, 10, 30))
    h.settle(local(2024, 5, 14, 10, 30))
    # the daily period began at midnight; hourly, it ended at 01:00: rotate now
    assert h.backups() == ['root.log.2024-05-14-00-00-00-000000.gz']
    assert h.rotator.next_deadline() == local(2024, 5, 14, 11)
    h.write(local(2024, 5, 14, 10, 40), 'b')
    h.run_tasks(local(2024, 5, 14, 11))
    h.settle(local(2024, 5, 14, 11))
    assert h.backups()[-1] == 'root.log.2024-05-14-10-00-00-000000.gz'


def test_a_lower_max_size_and_backup_count_apply_at_reload(harness):
    h = harness('[app]\nrotate = size\nmax_size = 1000\nbackup_count = 5\n')
    now = local(2024, 5, 14, 10)
    for n in range(3):
        now += 1
        h.write(now, 'x' * 1000)
    h.write(now + 1, 'y' * 200)
    h.settle(now + 1)
    assert len(h.backups()) == 3
    h.reload('[app]\nrotate = size\nmax_size = 100\nbackup_count = 1\n', now + 2)
    h.settle(now + 2)
    assert len(h.backups()) == 1
    assert h.text(h.backups()[0]) == 'y' * 200 + '\n'


def test_a_removed_facility_is_no_longer_rotated(harness):
    h = harness(DAILY + '[app:web]\nrotate = hourly\nbackup_count = 1\n')
    h.write(local(2024, 5, 14, 10), 'w', module='web')
    h.reload(DAILY, local(2024, 5, 14, 10, 30))
    h.run_tasks(local(2024, 5, 14, 11))
    assert h.backups('web.log') == []
    assert str(h.logdir / 'app' / 'web.log') not in h.rotator.files


# -- daylight saving -----------------------------------------------------------------------

def test_hourly_names_across_both_berlin_changes(harness, zone):
    zone(BERLIN)
    h = harness('[app]\nrotate = hourly\nbackup_count = 20\n', now=local(2024, 3, 31, 0, 30))
    for moment in [local(2024, 3, 31, 0, 30), local(2024, 3, 31, 1, 30), local(2024, 3, 31, 3, 30)]:
        h.write(moment, 'spring %s' % moment)
        h.run_tasks(moment + 3600)
    h.settle(local(2024, 3, 31, 5))
    assert h.backups() == ['root.log.2024-03-31-00-00-00-000000.gz',
                           'root.log.2024-03-31-01-00-00-000000.gz',
                           'root.log.2024-03-31-03-00-00-000000.gz']


def test_size_rotations_in_the_repeated_hour_keep_names_in_rotation_order(harness, zone):
    zone(BERLIN)
    first = 1729989000.0          # 2024-10-27 02:30 CEST; an hour later it is 02:30 CET
    h = harness(SIZE, now=first)
    moments = [first, first + 1200, first + 3600 - 600, first + 3600 + 60]
    for n, moment in enumerate(moments):
        h.write(moment, '%d %s' % (n, 'z' * 100))
    h.settle(moments[-1])
    backups = h.backups()
    assert [h.text(b).split()[0] for b in backups] == ['0', '1', '2', '3']
    assert backups[-1].startswith('root.log.2024-10-27-02-50-00-000001')   # after 02:50 CEST


# -- the daemon's own log, the status ------------------------------------------------------

def test_the_daemons_own_log_rotates_on_its_schedule(harness, tmp_path):
    from loghogd.schedule import parse_rotate
    path = tmp_path / 'daemon.log'
    handler = logging.handlers.WatchedFileHandler(str(path))
    logger = logging.getLogger('test_rotation.own_log')
    logger.addHandler(handler)
    logger.propagate = False
    try:
        h = Harness(tmp_path, DAILY)
        h.rotator.add_own_log(str(path), parse_rotate('daily'), 3, handler, local(2024, 5, 14, 10))
        h.start(local(2024, 5, 14, 10))
        logger.warning('before midnight')
        h.run_tasks(local(2024, 5, 15))
        logger.warning('after midnight')
        h.settle(local(2024, 5, 15))
        assert read_backup(str(tmp_path / 'daemon.log.2024-05-14-00-00-00-000000.gz')) == \
            'before midnight\n'
        assert path.read_text() == 'after midnight\n'
    finally:
        logger.removeHandler(handler)
        handler.close()
        h.compressor.close()


def test_log_files_show_their_rotation_in_the_status(harness):
    h = harness()
    h.write(local(2024, 5, 14, 10), 'a')
    h.run_tasks(local(2024, 5, 15))
    log_file = next(iter(h.writer.files.values()))
    assert log_file.last_rotation == local(2024, 5, 15)
    assert log_file.next_rotation == local(2024, 5, 16)
    assert log_file.backups == 1


# -- names (pure) --------------------------------------------------------------------------

def test_backup_names_parse_back(zone):
    zone('UTC0')
    wall = backup_wall_time(local(2024, 2, 29, 23, 59, 59) + 0.5, None)
    name = 'web.requests.log.' + format_stamp(wall)
    assert name == 'web.requests.log.2024-02-29-23-59-59-500000'
    assert parse_backup_name(name + '.xz') == ('web.requests.log', wall, '.xz')
    assert parse_backup_name(name + '.xz.partial') is None
    assert parse_backup_name('web.log.1') is None
    assert backup_wall_time(local(2024, 1, 1), wall) == wall.replace(microsecond=500001)


def test_to_prune_keeps_the_newest():
    assert to_prune([3, 1, 2, 5], 2) == [1, 2]
    assert to_prune([3, 1], 5) == []
    assert to_prune([3, 1], 0) == [1, 3]
