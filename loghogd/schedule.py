"""When a file rotates: ``rotate = hourly | daily | ... | <cron> | size``.

Schedules are cron expressions evaluated on naive local wall-clock time, then turned
into Unix time with the C library's ``mktime``.  Working on naive times keeps croniter
out of time zone arithmetic, where Debian's croniter 1.3.5 has been seen to return the
same instant again and again around a DST change.  Whatever croniter returns, a next
deadline is only trusted when it is strictly later than the previous one.
"""

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

# How many croniter steps we try before deciding that a schedule never fires again.
_MAX_STEPS = 64


class Schedule:
    """A parsed ``rotate`` value.

    ``expression`` is the five-field cron expression, or None for ``rotate = size``.
    """

    def __init__(self, text, expression):
        self.text = text
        self.expression = expression

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

        Returns None for size-only schedules.
        """
        if self.expression is None:
            return None
        wall = datetime.datetime.fromtimestamp(now).replace(microsecond=0, tzinfo=None)
        cron = croniter(self.expression, wall)
        for _ in range(_MAX_STEPS):
            candidate = cron.get_next(datetime.datetime)
            deadline = _local_to_unix(candidate)
            if deadline > now:
                return deadline
        raise ValueError('schedule %r does not advance past %s' % (self.text, wall))

    def previous_at_or_before(self, now):
        """Return the latest deadline (Unix time) at or before ``now``, or None."""
        if self.expression is None:
            return None
        wall = datetime.datetime.fromtimestamp(now).replace(tzinfo=None)
        cron = croniter(self.expression, wall + datetime.timedelta(seconds=1))
        for _ in range(_MAX_STEPS):
            candidate = _local_to_unix(cron.get_prev(datetime.datetime))
            if candidate <= now:
                return candidate
        return None


def _local_to_unix(wall):
    """Naive local wall time to Unix time; a time in a DST gap maps past the gap."""
    return time.mktime(wall.timetuple()[:8] + (-1,))


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
        raise ValueError('%r is not a rotation schedule: use hourly, daily, weekly, monthly, '
                         'yearly, size or a five-field cron expression such as "0 0 * * *" '
                         '(found %d fields)' % (text, len(fields)))
    if not croniter.is_valid(value):
        raise ValueError('%r is not a valid cron expression' % text)
    schedule = Schedule(value, value)
    try:
        schedule.next_after(time.time())
    except Exception as exc:  # croniter raises its own errors for impossible dates
        raise ValueError('%r never happens (%s)' % (text, exc)) from None
    return schedule
