"""The last-minute figures: what the counters gained over the window, from the loop's samples."""

from loghogd.stats import Counters, RecentTotals


def accept(counters, n, key=('app', 'root'), size=100):
    counters.accepted[key] += n
    counters.accepted_bytes[key] += n * size


def test_before_the_first_tick_the_gains_are_the_totals():
    counters = Counters()
    accept(counters, 3)
    recent = RecentTotals(counters, window_s=60.0, step_s=5.0)
    assert recent.next_deadline() == 0.0
    seconds, gained = recent.gained(1000.0)
    assert seconds == 0.0
    assert gained['accepted'] == {('app', 'root'): 3}


def test_a_young_daemon_counts_everything_since_its_first_sample():
    counters = Counters()
    recent = RecentTotals(counters, window_s=60.0, step_s=5.0)
    recent.tick(1000.0)
    assert recent.next_deadline() == 1005.0
    accept(counters, 7)
    counters.reject('bad_json', '10.0.0.1')
    seconds, gained = recent.gained(1012.0)
    assert seconds == 12.0
    assert gained['accepted'] == {('app', 'root'): 7}
    assert gained['accepted_bytes'] == {('app', 'root'): 700}
    assert gained['rejected'] == {'bad_json': 1}


def test_only_the_last_minute_counts_once_the_daemon_is_older():
    counters = Counters()
    recent = RecentTotals(counters, window_s=60.0, step_s=5.0)
    now = 1000.0
    for _ in range(40):             # 200 s, 10 messages per 5 s step
        recent.tick(now)
        accept(counters, 10)
        now += 5.0
    recent.tick(now)
    seconds, gained = recent.gained(now + 2.0)
    # The base is the newest sample at least 60 s old: the one taken at 1140.
    assert seconds == 62.0
    assert gained['accepted'][('app', 'root')] == 10 * 12
    assert sum(counters.accepted.values()) == 400


def test_a_quiet_facility_shows_zero_not_nothing():
    counters = Counters()
    recent = RecentTotals(counters, window_s=60.0, step_s=5.0)
    accept(counters, 5, key=('app', 'web'))
    recent.tick(1000.0)
    for step in range(1, 20):
        recent.tick(1000.0 + 5 * step)
    seconds, gained = recent.gained(1100.0)
    assert gained['accepted'] == {('app', 'web'): 0}


def test_memory_stays_bounded():
    counters = Counters()
    recent = RecentTotals(counters, window_s=60.0, step_s=5.0)
    for step in range(10000):
        recent.tick(1000.0 + 5 * step)
    assert len(recent._samples) <= 60 / 5 + 2


def test_the_clock_going_back_starts_the_window_again():
    counters = Counters()
    recent = RecentTotals(counters, window_s=60.0, step_s=5.0)
    recent.tick(5000.0)
    accept(counters, 4)
    recent.tick(1000.0)            # the wall clock was set back by more than an hour
    accept(counters, 1)
    seconds, gained = recent.gained(1003.0)
    assert seconds == 3.0
    assert gained['accepted'] == {('app', 'root'): 1}


def test_connections_and_events_are_tracked_per_name():
    counters = Counters()
    recent = RecentTotals(counters)
    recent.tick(0.0)
    counters.connections_accepted['tls'] += 2
    counters.count('udp_datagrams', 9)
    _, gained = recent.gained(1.0)
    assert gained['connections_accepted'] == {'tls': 2}
    assert gained['events'] == {'udp_datagrams': 9}
