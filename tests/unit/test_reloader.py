"""SIGHUP's reload (loghogd/reloader.py) on a real in-process Server: parsed on a thread,
applied by the loop in a later pass; SIGHUPs during a parse cost one more reload that
starts after the last of them; a bad file keeps the running table and logs every error
(issue 15: a reload of 20,000 facilities held every application's lines for 1.5-3 s)."""

import logging
import os
import threading
import time

import pytest

from loghogd.reloader import parse

from tests.unit.test_status_snapshot import Peer, message, serving

FACILITIES = '[app]\nrotate = daily\nbackup_count = 3\n'
ADDED = FACILITIES + '\n[added]\nrotate = hourly\nbackup_count = 2\n'


@pytest.fixture
def server(tmp_path):
    yield from serving(tmp_path, FACILITIES)


def write_facilities(server, text):
    with open(server.config.main.facilities_config, 'w') as stream:
        stream.write(text)


def reload_and_wait(server):
    """SIGHUP's action, then loop passes until the reload is applied."""
    server.reload()
    wait_applied(server)


def wait_applied(server, timeout_s=10.0):
    """Loop passes until the reload asked for is applied."""
    deadline = time.monotonic() + timeout_s
    while getattr(server, 'reloader', None) is not None and server.reloader.running:
        assert time.monotonic() < deadline, 'the reload was not applied'
        server.run_once()


class GatedParse:
    """The real parse, each call waiting for ``release`` first; records when each began."""

    def __init__(self):
        self.gate = threading.Semaphore(0)
        self.started = []

    def __call__(self, config, last_content):
        self.started.append(time.monotonic())
        assert self.gate.acquire(timeout=10)
        return parse(config, last_content)


def test_a_reload_is_parsed_off_the_loop_and_applied_in_a_later_pass(server, caplog):
    gated = server.reloader.parse = GatedParse()
    old = server.table
    write_facilities(server, ADDED)
    server.reload()                       # returns at once: the parse waits on its gate
    assert server.table is old
    # The loop goes on serving meanwhile: a line of [app] is written.
    server.ingest([message(body='during the reload')], Peer())
    server.run_once()
    with open(os.path.join(server.config.main.logdir, 'app', 'root.log')) as stream:
        assert 'during the reload' in stream.read()
    assert server.table is old and server.reloader.running
    gated.gate.release()
    with caplog.at_level(logging.INFO, logger='loghogd'):
        wait_applied(server)
    assert server.table is not old and server.table.lookup('added', '') is not None
    assert server.counters.events['reloads'] == 1
    assert 'reloaded' in caplog.text


def test_sighups_during_a_parse_cost_one_more_reload_that_starts_after_the_last(server):
    gated = server.reloader.parse = GatedParse()
    server.reload()
    while not gated.started:
        time.sleep(0.001)
    for _ in range(5):                    # a storm while the first parse runs
        server.reload()
    last_sighup = time.monotonic()
    write_facilities(server, ADDED)       # the edit the last SIGHUP was about
    gated.gate.release()
    gated.gate.release()
    wait_applied(server)
    # One more after the first, started after the last SIGHUP: it read the edit.
    assert len(gated.started) == 2 and gated.started[1] >= last_sighup
    assert server.table.lookup('added', '') is not None
    assert server.counters.events['reloads'] == 2


def test_a_bad_file_logs_every_error_and_keeps_the_running_table(server, caplog):
    old = server.table
    write_facilities(server, FACILITIES + '\n[bad1]\nrotate = never\nbackup_count = 1\n'
                     '\n[bad2]\nrotate = daily\nbackup_count = lots\n')
    with caplog.at_level(logging.INFO, logger='loghogd'):
        reload_and_wait(server)
    assert server.table is old
    assert server.counters.events['reloads_failed'] == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any('[bad1] rotate' in e for e in errors), errors
    assert any('[bad2] backup_count' in e for e in errors), errors
    assert any('still using the facilities loaded before' in e for e in errors)


def test_a_reload_that_puts_the_own_log_in_an_app_folder_is_refused(server, caplog):
    """The start refuses an application whose folder is the daemon's own log (or holds
    it); a reload took it before, and the next own-log rotation compressed the app's
    files or failed (issue 15)."""
    old = server.table
    write_facilities(server, FACILITIES + '\n[loghogd.log]\nrotate = daily\nbackup_count = 1\n')
    with caplog.at_level(logging.INFO, logger='loghogd'):
        reload_and_wait(server)
    assert server.table is old
    assert server.counters.events['reloads_failed'] == 1
    assert "the daemon's own log" in caplog.text


def test_an_unchanged_file_is_not_parsed_again(server):
    write_facilities(server, ADDED)
    reload_and_wait(server)
    table = server.table
    reload_and_wait(server)
    assert server.table is table
    assert server.counters.events['reloads'] == 2


# -- the rotator's part of a reload: in its slices -------------------------------------------

from tests.unit.rotation_harness import harness, local  # noqa: E402,F401 (a fixture)

DAILY_FLEET = '[fleet]\nrotate = daily\nbackup_count = 5\nfile_per_host = yes\nmax_hosts = 300\n'
HOURLY_FLEET = DAILY_FLEET.replace('daily', 'hourly')


def test_a_reload_that_changes_many_files_computes_nothing_per_file_in_its_pass(harness):
    """Issue 15: a reload that switched 2,000 files to hourly computed their 2,000
    deadlines (a croniter each: 0.4 s) in the pass that applied it.  Now reload() only
    takes the table; the files are looked at in tick's slices."""
    t = local(2024, 5, 14, 10, 0, 30)
    h = harness(DAILY_FLEET, now=t)
    for n in range(300):
        h.writer.add(h.table.lookup('fleet', 'root'), 'web%03d' % n, 'hello\n')
    h.writer.flush(t)
    h.run_tasks(t)
    files = [f for f in h.writer.files.values() if f.facility.app == 'fleet']
    assert len(files) == 300 and {f.next_rotation for f in files} == {local(2024, 5, 15)}
    h.configure(HOURLY_FLEET)
    h.writer.retarget(h.table)
    h.rotator.reload(h.table, t + 1)
    # Nothing per file yet: every file still has its daily deadline ...
    assert {f.next_rotation for f in files} == {local(2024, 5, 15)}
    # ... and slices of the loop's budget apply the new schedule to all of them.
    h.rotator.tick(t + 1, budget_s=0.0)
    assert sum(f.next_rotation != local(2024, 5, 15) for f in files) == 1
    while h.rotator.next_deadline() is not None and h.rotator.next_deadline() <= t + 1:
        h.run_tasks(t + 1)
    # Hourly from the period's start (midnight): due at once, rotated, next at 11:00.
    assert {f.next_rotation for f in files} == {local(2024, 5, 14, 11)}
    assert h.counters.events['rotations'] == 300
