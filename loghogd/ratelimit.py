"""Per-app message rate limits (issue 19): token buckets, and who waits for them.

A facility's ``rate_limit = 1000/s`` (or ``1000/s burst 5000``) gives its application one
token bucket: ``rate`` messages a second on average, ``burst`` at once (default: one
second's worth).  Sub-facilities inherit the setting and share their app's bucket; one
that sets its own has its own.

What happens past the rate depends on the transport:

- TCP and TLS (back-pressure, nothing lost): the messages of the read that overdrew the
  bucket are taken (the bucket goes into debt), and the connection reads nothing more
  until the bucket is back above zero.  Its peer's kernel buffer fills, its ``send`` waits,
  and our client's bounded buffer holds its records (``emit()`` waits for room at most 5 s,
  then, if the daemon took nothing for that long, drops the oldest, announced in the file).
  The debt is at most one read per connection of the app; the loop serves everyone else
  meanwhile.
- UDP and the syslog unix socket (no back-pressure exists): messages past the rate are
  refused (``rate_limited``), counted with the rejections and as lost
  (``rate_limited_datagrams``, in ``loghogd status``'s LOSSES).

Pure: times are arguments; ``Throttle`` keeps paused connections, each anything with
``pause_reading()`` and ``resume_reading()``.
"""

import heapq
import re

RATE_LIMITED = 'rate_limited'

_RATE_RE = re.compile(r'^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute)\s*'
                      r'(?:burst\s+(\d+))?\s*$', re.IGNORECASE)
_PER = {'s': 1.0, 'sec': 1.0, 'second': 1.0, 'm': 60.0, 'min': 60.0, 'minute': 60.0}


class RateLimit:
    """A parsed ``rate_limit``: ``per_s`` messages a second, ``burst`` at once."""

    __slots__ = ('per_s', 'burst', 'text')

    def __init__(self, per_s, burst, text):
        self.per_s = per_s
        self.burst = burst
        self.text = text

    def __eq__(self, other):
        return isinstance(other, RateLimit) and (self.per_s, self.burst) == (other.per_s,
                                                                             other.burst)

    def __hash__(self):
        return hash((self.per_s, self.burst))

    def __repr__(self):
        return 'RateLimit(%r)' % self.text


def parse_rate_limit(text):
    """Converter for ``rate_limit``: '1000/s', '1000/s burst 5000', '600/min'; empty: None.

    Raises ValueError with a sentence saying what is expected.
    """
    if not text.strip():
        return None
    match = _RATE_RE.match(text)
    if not match:
        raise ValueError('%r is not a rate: write N/s, optionally with a burst: '
                         '"1000/s burst 5000"' % text)
    per_s = float(match.group(1)) / _PER[match.group(2).lower()]
    if per_s <= 0:
        raise ValueError('%r: the rate must be above zero' % text)
    burst = int(match.group(3)) if match.group(3) else max(1, int(round(per_s)))
    if burst < 1:
        raise ValueError('%r: the burst must be at least 1' % text)
    return RateLimit(per_s, burst, ' '.join(text.split()))


class TokenBucket:
    """``tokens`` (messages that may go now) refill at ``per_s`` up to ``burst``; a stream
    may take more than there are (debt: tokens below zero), a datagram may not."""

    __slots__ = ('per_s', 'burst', 'tokens', 'updated')

    def __init__(self, limit, now):
        self.per_s = limit.per_s
        self.burst = limit.burst
        self.tokens = float(limit.burst)
        self.updated = now

    def set_limit(self, limit):
        """A reload changed the limit: keep the tokens (within the new burst)."""
        self.per_s = limit.per_s
        self.burst = limit.burst
        self.tokens = min(self.tokens, float(limit.burst))

    def refill(self, now):
        elapsed = now - self.updated
        if elapsed > 0:
            self.tokens = min(float(self.burst), self.tokens + elapsed * self.per_s)
        self.updated = now

    def ready_at(self, now):
        """When the tokens are back to zero (``now`` if they are)."""
        self.refill(now)
        return now if self.tokens >= 0 else now - self.tokens / self.per_s


class RateLimits:
    """The buckets, by the key of the facility that declares the limit (its app's root
    facility, or a sub-facility that sets its own): keys come from facilities.conf, never
    from peers, so the table is bounded by the configuration."""

    def __init__(self):
        self.buckets = {}

    def bucket(self, facility, now):
        """The refilled bucket of ``facility``, or None when it has no rate_limit."""
        limit = facility.rate_limit
        if limit is None:
            return None
        key = facility.rate_key
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = TokenBucket(limit, now)
        elif bucket.per_s != limit.per_s or bucket.burst != limit.burst:
            bucket.set_limit(limit)
        bucket.refill(now)
        return bucket


class Throttle:
    """Stream connections that wait for their bucket; a task of the server's loop
    (``next_deadline``, ``tick``, ``status``)."""

    name = 'rate_limit'

    def __init__(self):
        self._heap = []          # (resume time, order, connection, bucket)
        self._order = 0
        self.paused = set()

    def __len__(self):
        return len(self.paused)

    def pause(self, connection, bucket, now):
        """``connection`` overdrew ``bucket``: it reads nothing more until the bucket is
        back to zero.  Returns when that will be."""
        at = bucket.ready_at(now)
        if connection not in self.paused:
            self.paused.add(connection)
            connection.pause_reading()
        self._order += 1
        heapq.heappush(self._heap, (at, self._order, connection, bucket))
        return at

    def next_deadline(self):
        return self._heap[0][0] if self._heap else None

    def tick(self, now):
        """Resume the connections whose bucket is back to zero; one whose bucket was
        overdrawn again meanwhile (by another connection of its app) waits again."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, connection, bucket = heapq.heappop(heap)
            if connection not in self.paused:
                continue   # closed, or a stale entry
            at = bucket.ready_at(now)
            if at > now:
                self._order += 1
                heapq.heappush(heap, (at, self._order, connection, bucket))
                continue
            self.paused.discard(connection)
            connection.resume_reading()

    def status(self, now):
        """For ``loghogd status``: how many connections wait for their app's bucket."""
        return {'paused_connections': len(self.paused)}

    def forget(self, connection):
        """``connection`` closed (its heap entry is skipped when it comes up)."""
        self.paused.discard(connection)
