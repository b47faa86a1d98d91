"""The rotation schedule, driven by an injected clock: named schedules, cron examples,
month and year ends, leap days, and daylight saving in both directions."""

import datetime
import time

import pytest
from croniter import croniter as real_croniter

from loghogd import schedule as schedule_module
from loghogd.schedule import first_instant, parse_rotate, wall_time
from tests.unit.rotation_harness import BERLIN, local

# POSIX TZ strings: the C library needs no zoneinfo files for them.
# BERLIN: 02:00 -> 03:00 on the last Sunday of March, 03:00 -> 02:00 on the last Sunday
# of October.  ``zone`` sets TZ for one test, ``local`` reads a local wall time.
NEW_YORK = 'EST5EDT,M3.2.0,M11.1.0'           # 02:00 -> 03:00 second Sunday of March,
                                              # 02:00 -> 01:00 first Sunday of November


def utc(*fields):
    return datetime.datetime(*fields, tzinfo=datetime.timezone.utc).timestamp()


def walls(instants):
    return [wall_time(t).strftime('%Y-%m-%d %H:%M') for t in instants]


def deadlines(text, start, count):
    """The ``count`` deadlines after ``start``, each searched from the one before."""
    schedule = parse_rotate(text)
    found = []
    now = start
    for _ in range(count):
        now = schedule.next_after(now)
        found.append(now)
    return found


# -- named schedules and cron examples -------------------------------------------------------

@pytest.mark.parametrize('text, start, expected', [
    ('hourly', (2024, 5, 14, 10, 20, 5), ['2024-05-14 11:00', '2024-05-14 12:00']),
    ('daily', (2024, 5, 14, 10, 20), ['2024-05-15 00:00', '2024-05-16 00:00']),
    ('midnight', (2024, 5, 14, 23, 59, 59), ['2024-05-15 00:00', '2024-05-16 00:00']),
    # weekly: midnight between Sunday and Monday (2024-05-19 is a Sunday)
    ('weekly', (2024, 5, 14, 10, 20), ['2024-05-20 00:00', '2024-05-27 00:00']),
    ('weekly', (2024, 5, 19, 23, 59), ['2024-05-20 00:00', '2024-05-27 00:00']),
    ('monthly', (2024, 1, 31, 12, 0), ['2024-02-01 00:00', '2024-03-01 00:00']),
    ('yearly', (2024, 12, 31, 23, 59, 59), ['2025-01-01 00:00', '2026-01-01 00:00']),
    ('annually', (2023, 6, 1), ['2024-01-01 00:00', '2025-01-01 00:00']),
    ('55 22 * * *', (2024, 5, 14, 22, 55), ['2024-05-15 22:55', '2024-05-16 22:55']),
    ('55 22 * * *', (2024, 5, 14, 22, 54, 59), ['2024-05-14 22:55', '2024-05-15 22:55']),
    ('*/15 * * * *', (2024, 5, 14, 10, 50), ['2024-05-14 11:00', '2024-05-14 11:15']),
    # 12:33 Monday to Friday: from Friday afternoon the next one is Monday
    ('33 12 * * 1-5', (2024, 5, 17, 13, 0), ['2024-05-20 12:33', '2024-05-21 12:33']),
    ('0 0 * * mon', (2024, 5, 14), ['2024-05-20 00:00', '2024-05-27 00:00']),
    ('0 6 * * sat,sun', (2024, 5, 14), ['2024-05-18 06:00', '2024-05-19 06:00']),
    ('0 0 1 jan,jul *', (2024, 2, 1), ['2024-07-01 00:00', '2025-01-01 00:00']),
    ('0 8-18/5 * * *', (2024, 5, 14, 9), ['2024-05-14 13:00', '2024-05-14 18:00']),
    # month ends: the 31st skips short months; the 30th skips February
    ('0 0 31 * *', (2024, 1, 31, 1), ['2024-03-31 00:00', '2024-05-31 00:00']),
    ('59 23 30 * *', (2024, 1, 31), ['2024-03-30 23:59', '2024-04-30 23:59']),
    # leap days: every four years
    ('0 0 29 2 *', (2023, 3, 1), ['2024-02-29 00:00', '2028-02-29 00:00']),
    ('0 12 28-29 2 *', (2023, 2, 28, 13), ['2024-02-28 12:00', '2024-02-29 12:00']),
])
def test_named_schedules_and_cron_examples(zone, text, start, expected):
    zone('UTC0')
    assert walls(deadlines(text, local(*start), len(expected))) == expected


def test_the_last_day_of_february_in_a_leap_year_and_the_next(zone):
    zone(BERLIN)
    assert walls(deadlines('0 0 1 3 *', local(2024, 2, 29, 12), 2)) == \
        ['2024-03-01 00:00', '2025-03-01 00:00']
    assert walls(deadlines('daily', local(2024, 2, 28, 12), 3)) == \
        ['2024-02-29 00:00', '2024-03-01 00:00', '2024-03-02 00:00']


def test_a_deadline_itself_is_not_after_itself(zone):
    zone('UTC0')
    daily = parse_rotate('daily')
    midnight = local(2024, 5, 15)
    assert daily.next_after(midnight) == local(2024, 5, 16)
    assert daily.next_after(midnight - 0.000001) == midnight
    assert daily.previous_at_or_before(midnight) == midnight
    assert daily.previous_at_or_before(midnight - 0.5) == local(2024, 5, 14)


def test_size_has_no_deadlines():
    size = parse_rotate('size')
    assert size.is_size_only
    assert size.next_after(time.time()) is None
    assert size.previous_at_or_before(time.time()) is None


def test_names_and_their_cron_expressions_are_the_same_schedule():
    assert parse_rotate('daily') == parse_rotate('0 0 * * *') == parse_rotate('MIDNIGHT')
    assert parse_rotate('hourly') != parse_rotate('daily')


@pytest.mark.parametrize('text, message', [
    ('@reboot', "'@reboot' is not supported"),
    ('@daily', "'@daily' is not supported"),
    ('*/15 * * *', 'this one has 4 fields'),
    ('61 * * * *', 'not a valid cron expression'),
    ('0 0 * * funday', 'not a valid cron expression'),
    ('0 0 30 2 *', 'never happens'),
    ('sometimes', "'sometimes' is not a rotation schedule: use hourly, daily, weekly"),
])
def test_bad_schedules_say_why(text, message):
    with pytest.raises(ValueError) as info:
        parse_rotate(text)
    assert message in str(info.value)


def test_a_single_word_is_not_counted_as_fields():
    with pytest.raises(ValueError) as info:
        parse_rotate('dayly')
    assert str(info.value).endswith('a five-field cron expression such as "0 0 * * *"')


# -- daylight saving ---------------------------------------------------------------------------

def test_berlin_spring_forward_hourly_rotates_every_real_hour(zone):
    zone(BERLIN)   # 2024-03-31 01:00 UTC: 02:00 CET becomes 03:00 CEST
    found = deadlines('hourly', utc(2024, 3, 30, 23, 30), 4)
    assert found == [utc(2024, 3, 31, 0), utc(2024, 3, 31, 1), utc(2024, 3, 31, 2),
                     utc(2024, 3, 31, 3)]
    # 02:00 never happens: it is the jump, which is also 03:00; one rotation, not two
    assert walls(found) == ['2024-03-31 01:00', '2024-03-31 03:00', '2024-03-31 04:00',
                            '2024-03-31 05:00']


def test_berlin_fall_back_hourly_rotates_once_per_wall_clock_hour(zone):
    zone(BERLIN)   # 2024-10-27 01:00 UTC: 03:00 CEST becomes 02:00 CET
    found = deadlines('hourly', utc(2024, 10, 26, 23, 30), 3)
    # 02:00 CEST once; the repeated 02:00 (CET) is not a second rotation; then 03:00 CET
    assert found == [utc(2024, 10, 27, 0), utc(2024, 10, 27, 2), utc(2024, 10, 27, 3)]
    assert walls(found) == ['2024-10-27 02:00', '2024-10-27 03:00', '2024-10-27 04:00']


def test_a_time_inside_the_skipped_hour_fires_at_the_jump(zone):
    zone(BERLIN)
    found = deadlines('30 2 * * *', local(2024, 3, 30, 3), 3)
    assert found == [utc(2024, 3, 31, 1), utc(2024, 4, 1, 0, 30), utc(2024, 4, 2, 0, 30)]


def test_a_time_inside_the_repeated_hour_fires_once(zone):
    zone(BERLIN)
    found = deadlines('30 2 * * *', local(2024, 10, 26, 3), 3)
    assert found == [utc(2024, 10, 27, 0, 30), utc(2024, 10, 28, 1, 30), utc(2024, 10, 29, 1, 30)]


def test_quarter_hours_across_the_new_york_changes(zone):
    zone(NEW_YORK)
    spring = walls(deadlines('*/15 * * * *', utc(2024, 3, 10, 6, 40), 4))   # 01:40 EST
    assert spring == ['2024-03-10 01:45', '2024-03-10 03:00', '2024-03-10 03:15',
                      '2024-03-10 03:30']
    fall = deadlines('*/15 * * * *', utc(2024, 11, 3, 5, 40), 4)             # 01:40 EDT
    # 01:45 EDT, then the clock repeats 01:00-01:59 (EST) without rotating, then 02:00 EST
    assert fall == [utc(2024, 11, 3, 5, 45), utc(2024, 11, 3, 7), utc(2024, 11, 3, 7, 15),
                    utc(2024, 11, 3, 7, 30)]


SPRING, FALL, YEAR = ((2024, 3, 5), 30), ((2024, 10, 22), 16), ((2024, 1, 1), 366)


@pytest.mark.parametrize('tz', [BERLIN, NEW_YORK])
@pytest.mark.parametrize('text, span', [
    ('0 0 * * *', YEAR), ('30 2 * * *', YEAR), ('0 1 * * *', YEAR), ('5 1,2,3 * * *', YEAR),
    ('hourly', SPRING), ('hourly', FALL), ('*/15 * * * *', SPRING), ('*/15 * * * *', FALL),
    ('* 1-3 * * 0', SPRING), ('* 0-3 * * 0', FALL),
])
def test_deadlines_are_strictly_increasing_with_unique_names(zone, tz, text, span):
    """Both changes of each zone fall inside the spans (Berlin late March and October,
    New York early March and November)."""
    zone(tz)
    first_day, days = span
    start = local(*first_day)
    end = start + days * 86400
    schedule = parse_rotate(text)
    found = []
    now = start
    while now < end:
        now = schedule.next_after(now)
        found.append(now)
    assert all(a < b for a, b in zip(found, found[1:]))
    names = walls(found)
    assert len(set(names)) == len(names)           # no wall-clock minute rotates twice
    # every hour of real time gets at least one rotation from a schedule that fires
    # every hour: a DST change never leaves a gap longer than the repeated hour
    if text in ('hourly', '*/15 * * * *'):
        step = 3600 if text == 'hourly' else 900
        assert max(b - a for a, b in zip(found, found[1:])) <= step + 3600


@pytest.mark.parametrize('tz, day', [(BERLIN, (2024, 3, 31)), (BERLIN, (2024, 10, 27)),
                                     (NEW_YORK, (2024, 3, 10)), (NEW_YORK, (2024, 11, 3))])
@pytest.mark.parametrize('text', ['hourly', '*/15 * * * *', '30 2 * * *', '* * * * *'])
def test_previous_and_next_agree_around_a_change(zone, tz, day, text):
    zone(tz)
    schedule = parse_rotate(text)
    start = utc(*day) - 6 * 3600
    for step in range(0, 20 * 3600, 437):    # a prime step: every offset within the minute
        now = start + step + 0.25
        previous = schedule.previous_at_or_before(now)
        following = schedule.next_after(now)
        assert previous <= now < following
        assert schedule.next_after(previous) == following


def test_first_instant_of_wall_times(zone):
    zone(BERLIN)
    assert first_instant(datetime.datetime(2024, 3, 31, 2, 30)) == utc(2024, 3, 31, 1)
    assert first_instant(datetime.datetime(2024, 10, 27, 2, 30)) == utc(2024, 10, 27, 0, 30)
    assert first_instant(datetime.datetime(2024, 10, 27, 3, 0)) == utc(2024, 10, 27, 2)
    assert first_instant(datetime.datetime(2024, 7, 1, 12, 0, 0, 250000)) == \
        utc(2024, 7, 1, 10) + 0.25


class StuckCroniter:
    """croniter as Debian's 1.3.5 was seen to behave around a DST change: the first few
    answers repeat the start instead of moving on."""

    stuck = 3

    def __init__(self, expression, start):
        self.real = real_croniter(expression, start)
        self.start = start

    def get_next(self, kind):
        if StuckCroniter.stuck > 0:
            StuckCroniter.stuck -= 1
            return self.start
        return self.real.get_next(kind)

    def get_prev(self, kind):
        if StuckCroniter.stuck > 0:
            StuckCroniter.stuck -= 1
            return self.start
        return self.real.get_prev(kind)

    is_valid = staticmethod(real_croniter.is_valid)
    match = staticmethod(real_croniter.match)


@pytest.mark.parametrize('now', [utc(2024, 10, 27, 0, 44, 59), utc(2024, 10, 27, 0, 45),
                                 utc(2024, 10, 27, 1, 10, 30), utc(2024, 3, 31, 0, 59, 59) + 0.5])
@pytest.mark.parametrize('stuck', [1, 3, 70])
def test_a_croniter_that_does_not_advance_cannot_cause_a_loop_or_a_skip(zone, monkeypatch,
                                                                        now, stuck):
    zone(BERLIN)
    schedule = parse_rotate('*/15 * * * *')
    expected_next = schedule.next_after(now)
    expected_previous = schedule.previous_at_or_before(now)
    monkeypatch.setattr(schedule_module, 'croniter', StuckCroniter)
    StuckCroniter.stuck = stuck
    assert schedule.next_after(now) == expected_next
    StuckCroniter.stuck = stuck
    assert schedule.previous_at_or_before(now) == expected_previous
