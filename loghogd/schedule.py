"""When a file rotates: ``rotate = hourly | daily | ... | <cron> | size``.

A schedule is a five-field cron expression over local wall-clock time.  Its deadlines
are the instants at which the local wall clock first reaches each matching minute:

- a wall time that happens twice (the hour repeated when daylight saving ends) is a
  deadline once, the first time;
- a wall time that never happens (the hour skipped when daylight saving starts) is a
  deadline at the instant the clock jumps past it, and several such times are one
  deadline.

So every matching minute of the calendar rotates a file exactly once: no double
rotation, no skipped one, no rotation loop, in any time zone.

croniter is only asked about naive wall times, never about time zones: Debian's
croniter 1.3.5 has been seen to return the same instant again and again around a DST
change when given aware datetimes.  Turning a wall time into Unix time is done here
(``first_instant``), with the C library's ``localtime`` (so ``TZ`` and ``tzset``
apply).  Whatever croniter returns, the search only trusts a step that moves strictly
forward (or backward), and a deadline that is strictly later than ``now``.
"""

import calendar
import datetime
import time

from croniter import croniter

NAMED = {
    'hourly': '0 * * * *',
    'daily': '0 0 * * *',
    'midnight': '0 0 * * *',
    'weekly': '0 0 * * 1',       # midnight between Sunday and Monday
    'monthly': '0 0 1 * *',
    'yearly': '0 0 1 1 *',
    'annually': '0 0 1 1 *',
}
SIZE = 'size'

# How many croniter steps a search may take.  Steps beyond the first are only needed
# for wall times that map to an instant not after ``now`` (the repeated or skipped hour
# of a DST change: at most 60 per hour of shift for a per-minute schedule) or when
# croniter fails to advance; this bound covers a two-hour shift with a wide margin.
_MAX_STEPS = 1500
_ONE_MINUTE = datetime.timedelta(minutes=1)
# Results remembered per Schedule (see Schedule._found).
_CACHE_LIMIT = 256
# UTC offsets change at most twice a year: the offsets in force two days either side of
# a wall time are all the offsets that wall time can have.
_PROBE_S = 2 * 86400


class Schedule:
    """A parsed ``rotate`` value.

    ``text`` is what the configuration said; ``expression`` is the five-field cron
    expression, or None for ``rotate = size``.  Two schedules are equal when their
    expressions are (``daily`` equals ``0 0 * * *``).
    """

    def __init__(self, text, expression):
        self.text = text
        self.expression = expression
        # Results by ``now``: the files of a facility that rotate together all ask about
        # the same instants, and croniter takes about 0.1 ms per question (issue 15).
        self._found = {}

    @property
    def is_size_only(self):
        return self.expression is None

    def __eq__(self, other):
        return isinstance(other, Schedule) and other.expression == self.expression

    def __hash__(self):
        return hash(self.expression)

    def __repr__(self):
        return 'Schedule(%r)' % self.text

    def next_after(self, now):
        """Return the first deadline (Unix time) strictly after ``now`` (Unix time).

        Returns None for size-only schedules.  Raises ValueError when the schedule
        never fires again (croniter finds no date, or the search does not advance).
        """
        found = self._next(now)
        return None if found is None else found[1]

    def previous_at_or_before(self, now):
        """Return the latest deadline (Unix time) at or before ``now``, or None.

        None for size-only schedules and for a schedule that never fired before.
        ``next_after(previous_at_or_before(now)) == next_after(now)`` always holds.
        """
        key = ('previous', now)
        if key not in self._found:
            if len(self._found) >= _CACHE_LIMIT:
                self._found.clear()
            self._found[key] = self._search_previous(now)
        return self._found[key]

    def _search_previous(self, now):
        found = self._next(now)
        if found is None:
            return None
        wall, deadline = found
        for _ in range(_MAX_STEPS):
            try:
                earlier = croniter(self.expression, wall).get_prev(datetime.datetime)
            except Exception:   # croniter's own errors: no earlier date exists
                return None
            if earlier >= wall:
                # croniter did not move back: step one minute back ourselves.
                earlier = wall.replace(second=0, microsecond=0)
                if earlier == wall:
                    earlier -= _ONE_MINUTE
                if not croniter.match(self.expression, earlier):
                    wall = earlier
                    continue
            instant = first_instant(earlier)
            if instant < deadline:
                return instant     # the first deadline after it is ``deadline``: <= now
            wall = earlier         # a skipped wall time that maps to ``deadline`` too
        return None

    def _next(self, now):
        """(wall time, deadline) of the first deadline strictly after ``now``."""
        if self.expression is None:
            return None
        found = self._found.get(now)
        if found is None:
            if len(self._found) >= _CACHE_LIMIT:
                self._found.clear()
            found = self._found[now] = self._search(now)
        return found

    def _search(self, now):
        start = wall_time(now)
        for _ in range(_MAX_STEPS):
            try:
                candidate = croniter(self.expression, start).get_next(datetime.datetime)
            except Exception as exc:   # croniter's own errors for dates that never come
                raise ValueError('schedule %r has no date after %s (%s)'
                                 % (self.text, start, exc)) from None
            if candidate <= start:
                # croniter did not advance (seen with 1.3.5): step one minute ourselves.
                candidate = start.replace(second=0, microsecond=0) + _ONE_MINUTE
                if not croniter.match(self.expression, candidate):
                    start = candidate
                    continue
            deadline = first_instant(candidate)
            if deadline > now:
                return candidate, deadline
            start = candidate
        raise ValueError('schedule %r does not advance past %s' % (self.text, wall_time(now)))


def wall_time(instant):
    """The naive local wall-clock datetime of Unix time ``instant`` (microseconds kept)."""
    seconds = int(instant // 1)
    fields = time.localtime(seconds)
    micro = int(round((instant - seconds) * 1e6))
    if micro >= 1000000:
        return wall_time(seconds + 1)
    return datetime.datetime(*fields[:6], microsecond=micro)


def first_instant(wall):
    """The Unix time at which the local wall clock first reaches the naive datetime ``wall``.

    A wall time that happens twice gives its first occurrence; one that never happens
    (skipped forward) gives the instant of the jump.
    """
    naive_s = calendar.timegm(wall.timetuple())        # wall time read as if it were UTC
    fraction = wall.microsecond / 1e6
    offsets = {time.localtime(naive_s + probe).tm_gmtoff for probe in (-_PROBE_S, 0, _PROBE_S)}
    valid = [naive_s - offset for offset in offsets
             if time.localtime(naive_s - offset).tm_gmtoff == offset]
    if valid:
        return min(valid) + fraction
    # Skipped: the first second whose wall time is at or past ``wall``.
    low = naive_s - max(offsets)        # before the jump: wall time earlier than ``wall``
    high = naive_s - min(offsets)       # after the jump: wall time later than ``wall``
    while high - low > 1:
        middle = (low + high) // 2
        if middle + time.localtime(middle).tm_gmtoff >= naive_s:
            high = middle
        else:
            low = middle
    return float(high)


def parse_rotate(text):
    """Parse a ``rotate`` value into a Schedule, or raise ValueError saying why."""
    value = ' '.join(text.split())
    lowered = value.lower()
    if lowered == SIZE:
        return Schedule(value, None)
    if lowered in NAMED:
        return Schedule(value, NAMED[lowered])
    if lowered.startswith('@'):
        raise ValueError('%r is not supported: use hourly, daily, weekly, monthly, yearly, '
                         'size or a five-field cron expression' % text)
    fields = value.split(' ')
    if len(fields) != 5:
        counted = '' if len(fields) == 1 else ' (this one has %d fields)' % len(fields)
        raise ValueError('%r is not a rotation schedule: use hourly, daily, weekly, monthly, '
                         'yearly, size or a five-field cron expression such as "0 0 * * *"%s'
                         % (text, counted))
    if not croniter.is_valid(value):
        raise ValueError('%r is not a valid cron expression' % text)
    schedule = Schedule(value, value)
    try:
        schedule.next_after(time.time())
    except ValueError as exc:
        raise ValueError('%r never happens (%s)' % (text, exc)) from None
    return schedule
