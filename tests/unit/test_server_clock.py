"""A wall clock set back (an operator's date -s, a bad NTP step): the loop neither sleeps
until a deadline computed before nor leaves its tasks' deadlines where they were."""

import time

from loghogd.binding import BoundSockets
from loghogd.config import load_config
from loghogd.facilities import load_facilities
from loghogd.loop import EventLoop
from loghogd.server import HOUSEKEEPING_INTERVAL_S, Server
from loghogd.stats import Counters
from loghogd.writer import Writer


class Task:
    """A loop task whose deadline is an hour away; records its ticks."""

    def __init__(self, deadline):
        self.deadline = deadline
        self.ticks = []

    def next_deadline(self):
        return self.deadline

    def tick(self, now):
        self.ticks.append(now)


def test_a_clock_set_back_an_hour_ticks_every_task_at_once(tmp_path):
    (tmp_path / 'facilities.conf').write_text('[app]\nrotate = daily\nbackup_count = 3\n')
    clock = [1700000000.0]
    counters = Counters()
    loop = EventLoop()
    server = Server(load_config(None), load_facilities(str(tmp_path / 'facilities.conf')),
                    Writer(str(tmp_path / 'log'), counters), counters, loop, BoundSockets(),
                    clock=lambda: clock[0])
    task = Task(clock[0] + 3600)
    server.tasks.append(task)
    try:
        server.run_once()
        assert task.ticks == []
        clock[0] -= 3600                                     # the clock is set back an hour
        assert server._timeout() <= HOUSEKEEPING_INTERVAL_S  # not an hour's sleep
        began = time.monotonic()
        server.run_once()
        assert time.monotonic() - began < HOUSEKEEPING_INTERVAL_S + 5
        assert task.ticks == [clock[0]]                      # it computes its deadlines again
        server.run_once()
        assert task.ticks == [clock[0]]                      # once
    finally:
        loop.close()
