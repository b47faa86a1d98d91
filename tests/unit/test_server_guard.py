"""The loop's own work (tasks, housekeeping, signals) may have a bug: it is logged, never
fatal, and a bug that repeats every tick does not fill the daemon's log."""

import logging

from loghogd.binding import BoundSockets
from loghogd.config import load_config
from loghogd.facilities import load_facilities
from loghogd.server import Server
from loghogd.stats import Counters
from loghogd.writer import Writer


def make_server(tmp_path):
    (tmp_path / 'facilities.conf').write_text('[app]\nrotate = daily\nbackup_count = 3\n')
    counters = Counters()
    return Server(load_config(None), load_facilities(str(tmp_path / 'facilities.conf')),
                  Writer(str(tmp_path / 'log'), counters), counters, None, BoundSockets())


def test_a_task_failing_every_tick_is_logged_a_few_times_a_minute_with_the_count(
        tmp_path, caplog):
    server = make_server(tmp_path)
    ticks = []

    def publish(now):
        ticks.append(now)
        raise LookupError('unknown encoding: ascii')

    caplog.set_level(logging.ERROR, logger='loghogd')
    for second in range(120):            # two minutes, one failing tick a second
        server.now = 1000.0 + second
        server._guarded(publish, server.now)
    assert len(ticks) == 120             # the work is still tried every time
    logged = [r for r in caplog.records if 'internal error in' in r.getMessage()]
    assert len(logged) == 10             # 5 per minute
    assert all(r.exc_info and r.exc_info[0] is LookupError for r in logged)
    assert '(55 more like it were not logged)' in logged[5].getMessage()


def test_different_errors_are_each_logged(tmp_path, caplog):
    server = make_server(tmp_path)
    server.now = 1000.0

    def fails_with(exc):
        raise exc

    caplog.set_level(logging.ERROR, logger='loghogd')
    for exc in [KeyError('a')] * 7 + [ValueError('b')]:
        server._guarded(fails_with, exc)
    kinds = [r.exc_info[0] for r in caplog.records]
    assert kinds.count(KeyError) == 5 and kinds.count(ValueError) == 1
