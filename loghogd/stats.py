"""Counters an operator can read, what they gained over the last minute, and a rate
limiter for warnings that could repeat.

Plain objects constructed by the server and passed to whoever counts; no globals.  The
only per-message cost is a counter increment: rates come from samples the loop takes.
"""

import collections


class Counters:
    """Totals since start: accepted messages per (app, facility), rejections per reason
    and per peer address, connections accepted per transport ('tcp', 'tls') and named
    events (write errors, TLS handshake failures, UDP datagrams, ...)."""

    # Peers tracked for the rejection top list; beyond it new peers are not tracked.
    MAX_PEERS = 1000
    # Certificate names tracked for client_not_allowed refusals (issue 19); any further
    # name is counted under OTHER_CLIENTS: a CA may sign endless names.
    MAX_CLIENTS = 1000
    OTHER_CLIENTS = '(other)'

    def __init__(self):
        self.events = collections.Counter()
        self.accepted = collections.Counter()
        self.accepted_bytes = collections.Counter()
        self.rejected = collections.Counter()
        self.rejected_by_peer = collections.Counter()
        self.connections_accepted = collections.Counter()
        self.refused_clients = collections.Counter()   # CN (or '(none)') -> refusals

    def count(self, name, amount=1):
        self.events[name] += amount

    def reject(self, reason, peer_host):
        self.rejected[reason] += 1
        if peer_host in self.rejected_by_peer or len(self.rejected_by_peer) < self.MAX_PEERS:
            self.rejected_by_peer[peer_host] += 1

    def refuse_client(self, name):
        """A message refused by ``allowed_clients``; ``name`` is the certificate's CN or
        None (no certificate)."""
        name = '(none)' if name is None else name
        if name not in self.refused_clients and len(self.refused_clients) >= self.MAX_CLIENTS:
            name = self.OTHER_CLIENTS
        self.refused_clients[name] += 1

    def snapshot(self):
        """A JSON-ready copy of every counter."""
        return {
            'events': dict(self.events),
            'accepted': {'%s:%s' % key: n for key, n in self.accepted.items()},
            'accepted_bytes': {'%s:%s' % key: n for key, n in self.accepted_bytes.items()},
            'rejected': dict(self.rejected),
            'rejected_by_peer': dict(self.rejected_by_peer.most_common(10)),
            'connections_accepted': dict(self.connections_accepted),
            'refused_clients': dict(self.refused_clients.most_common(10)),
        }


class RecentTotals:
    """What the counters gained over about the last ``window_s`` seconds.

    Nothing is done per message: the loop calls ``tick(now)`` when ``next_deadline()``
    has come (every ``step_s`` seconds), and each tick keeps a copy of the cumulative
    counters.  ``gained(now)`` compares the live counters with the newest copy at least
    ``window_s`` old (the oldest one while the daemon is younger than that), so the
    window it reports is between ``window_s`` and ``window_s + step_s`` seconds long,
    and exact: counts since the start while the daemon is younger than the window.
    Memory: about ``window_s / step_s + 2`` copies of the counters.
    """

    TRACKED = ('accepted', 'accepted_bytes', 'rejected', 'connections_accepted', 'events')

    def __init__(self, counters, window_s=60.0, step_s=5.0):
        self.counters = counters
        self.window_s = window_s
        self.step_s = step_s
        self._samples = collections.deque()   # (time, {name: dict}) oldest first
        self._next_sample = 0.0               # the first tick takes the starting sample

    def next_deadline(self):
        return self._next_sample

    def tick(self, now):
        """Keep a copy of the counters; forget copies no longer needed as a base."""
        samples = self._samples
        if samples and now < samples[-1][0]:
            samples.clear()   # the clock went back: older samples would give nonsense
        samples.append((now, {name: dict(getattr(self.counters, name)) for name in self.TRACKED}))
        while len(samples) >= 2 and samples[1][0] <= now - self.window_s:
            samples.popleft()
        self._next_sample = now + self.step_s

    def gained(self, now):
        """Return (seconds, {name: {key: increase}}) for every tracked counter.

        ``seconds`` is the time the increases cover (0.0 before the first tick, when
        the increases are the totals).  Every key of the live counter is present, with
        0 where nothing happened in the window.
        """
        base_time, base = now, {}
        for sample_time, sample in self._samples:
            if sample_time > now - self.window_s and base:
                break
            base_time, base = sample_time, sample
        result = {}
        for name in self.TRACKED:
            old = base.get(name, {})
            result[name] = {key: value - old.get(key, 0)
                            for key, value in getattr(self.counters, name).items()}
        return max(0.0, now - base_time), result


class RateLimiter:
    """Allows ``burst`` events per key in each ``interval_s`` window and counts the rest.

    ``allow(key, now)`` returns (allowed, suppressed): ``suppressed`` is how many events
    of that key were held back since the last one allowed, so the next message can say so.
    """

    def __init__(self, burst=5, interval_s=60.0):
        self.burst = burst
        self.interval_s = interval_s
        self._windows = {}

    def allow(self, key, now):
        window = self._windows.get(key)
        if window is None or now - window[0] >= self.interval_s:
            suppressed = window[2] if window else 0
            if len(self._windows) > 10000:
                self._windows.clear()
            self._windows[key] = [now, 1, 0]
            return True, suppressed
        if window[1] < self.burst:
            window[1] += 1
            suppressed, window[2] = window[2], 0
            return True, suppressed
        window[2] += 1
        return False, 0
