"""Connection slots: who makes room when ``max_connections`` or ``max_handshakes`` is reached.

Before issue 15 the daemon stopped accepting at ``max_connections``: 950 idle peers (or
peers sending one refused frame now and then) kept every newcomer waiting in the kernel's
backlog for ever, and 2,000 TLS handshakes that never finish kept a good TLS client out.
Now a newcomer is always taken, and someone older makes room:

- a TLS newcomer, when ``max_handshakes`` handshakes are in progress: the oldest
  unfinished handshake (a real client finishes in milliseconds);
- any newcomer, when ``max_connections`` are open: the oldest unfinished handshake if
  there is one, else the connection that has been idle longest among those with nothing
  in flight (no frame unacknowledged, no ack unsent).  "Idle" counts from the last read
  that brought an accepted message: refused frames are not activity.

What it costs a legitimate quiet client: its connection may be closed while it has
nothing in flight; it reconnects on its next record and, with acknowledgements, loses
nothing (docs/security.md).

The table holds no sockets and reads no clock: connections are any objects with
``handshaking`` and ``is_evictable()``.
"""

from collections import OrderedDict


class Slots:
    """The open stream connections, least recently active first, and the handshakes in
    progress, oldest first.  Every operation is O(1) except ``victim``'s scan past
    connections with something in flight."""

    def __init__(self, max_connections, max_handshakes):
        self.max_connections = max_connections
        self.max_handshakes = max_handshakes
        self._by_activity = OrderedDict()   # connection -> None, least recently active first
        self._handshakes = OrderedDict()    # handshaking connection -> None, oldest first

    def __len__(self):
        return len(self._by_activity)

    def __iter__(self):
        return iter(list(self._by_activity))

    def __contains__(self, connection):
        return connection in self._by_activity

    @property
    def handshakes(self):
        """How many TLS handshakes are in progress."""
        return len(self._handshakes)

    def add(self, connection):
        """A new connection: the most recently active."""
        self._by_activity[connection] = None
        if connection.handshaking:
            self._handshakes[connection] = None

    def remove(self, connection):
        self._by_activity.pop(connection, None)
        self._handshakes.pop(connection, None)

    def handshake_done(self, connection):
        self._handshakes.pop(connection, None)

    def touch(self, connection):
        """``connection`` brought an accepted message: it is the most recently active."""
        if connection in self._by_activity:
            self._by_activity.move_to_end(connection)

    def is_full(self, tls):
        """True when a newcomer (a TLS one if ``tls``) needs someone to make room."""
        return (len(self._by_activity) > self.max_connections
                or (tls and len(self._handshakes) > self.max_handshakes))

    def victim(self, newcomer):
        """The connection that must make room for ``newcomer`` (already added), or None
        when there is room, or when nobody can make room (everything else has frames in
        flight: the caller stops accepting for a while)."""
        if newcomer.handshaking and len(self._handshakes) > self.max_handshakes:
            return self._oldest_handshake(newcomer)
        if len(self._by_activity) <= self.max_connections:
            return None
        if len(self._handshakes) > (1 if newcomer.handshaking else 0):
            return self._oldest_handshake(newcomer)
        for connection in self._by_activity:
            if connection is not newcomer and connection.is_evictable():
                return connection
        return None

    def _oldest_handshake(self, newcomer):
        for connection in self._handshakes:
            if connection is not newcomer:
                return connection
        return None
