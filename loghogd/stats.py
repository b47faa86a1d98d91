"""Counters an operator can read, and a rate limiter for warnings that could repeat.

Plain objects constructed by the server and passed to whoever counts; no globals.
"""

import collections


class Counters:
    """Totals since start: accepted messages per (app, facility), rejections per reason
    and per peer address, and named events (connections, write errors, ...)."""

    # Peers tracked for the rejection top list; beyond it new peers are not tracked.
    MAX_PEERS = 1000

    def __init__(self):
        self.events = collections.Counter()
        self.accepted = collections.Counter()
        self.accepted_bytes = collections.Counter()
        self.rejected = collections.Counter()
        self.rejected_by_peer = collections.Counter()

    def count(self, name, amount=1):
        self.events[name] += amount

    def reject(self, reason, peer_host):
        self.rejected[reason] += 1
        if peer_host in self.rejected_by_peer or len(self.rejected_by_peer) < self.MAX_PEERS:
            self.rejected_by_peer[peer_host] += 1

    def snapshot(self):
        """A JSON-ready copy of every counter."""
        return {
            'events': dict(self.events),
            'accepted': {'%s:%s' % key: n for key, n in self.accepted.items()},
            'accepted_bytes': {'%s:%s' % key: n for key, n in self.accepted_bytes.items()},
            'rejected': dict(self.rejected),
            'rejected_by_peer': dict(self.rejected_by_peer.most_common(10)),
        }


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
