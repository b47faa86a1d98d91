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

Issue 19: the connection that makes room comes first from the peer address holding the
most connections (its own longest idle one with nothing in flight), so that one address
opening connections without end only ever pushes out its own; only when that peer has none
to give does the longest idle connection of anyone make room.  With
``max_connections_per_peer`` a peer over its cap makes room from its own connections, or
its newcomer is closed.

What it costs a legitimate quiet client: its connection may be closed while it has
nothing in flight; it reconnects on its next record and, with acknowledgements, loses
nothing (docs/security.md).  Clients behind one NAT address count as one peer: they are
the first to make room when the slots are full.

The table holds no sockets and reads no clock: connections are any objects with
``handshaking``, ``peer_host`` and ``is_evictable()``.
"""

from collections import OrderedDict


class Slots:
    """The open stream connections, least recently active first, and the handshakes in
    progress, oldest first.  Every operation is O(1) except ``victim``'s scan past
    connections with something in flight."""

    def __init__(self, max_connections, max_handshakes, max_per_peer=None):
        self.max_connections = max_connections
        self.max_handshakes = max_handshakes
        self.max_per_peer = max_per_peer
        self._by_activity = OrderedDict()   # connection -> None, least recently active first
        self._handshakes = OrderedDict()    # handshaking connection -> None, oldest first
        self._by_peer = {}                  # peer_host -> OrderedDict, as _by_activity
        self._peers_by_size = {}            # n -> set of the peers holding n connections
        self._largest = 0                   # the most connections any peer holds

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
        peer = _peer(connection)
        mine = self._by_peer.get(peer)
        if mine is None:
            mine = self._by_peer[peer] = OrderedDict()
        mine[connection] = None
        self._resized(peer, len(mine) - 1, len(mine))

    def remove(self, connection):
        if connection not in self._by_activity:
            return
        del self._by_activity[connection]
        self._handshakes.pop(connection, None)
        peer = _peer(connection)
        mine = self._by_peer[peer]
        del mine[connection]
        self._resized(peer, len(mine) + 1, len(mine))
        if not mine:
            del self._by_peer[peer]

    def held_by(self, peer_host):
        """How many connections ``peer_host`` holds."""
        return len(self._by_peer.get(peer_host, ()))

    def is_over_peer_cap(self, connection):
        """True when ``connection``'s peer holds more than ``max_per_peer``."""
        return (self.max_per_peer is not None
                and self.held_by(_peer(connection)) > self.max_per_peer)

    def own_victim(self, newcomer):
        """The longest idle connection of ``newcomer``'s peer that can make room for it,
        or None (every other one has something in flight)."""
        for connection in self._by_peer.get(_peer(newcomer), ()):
            if connection is not newcomer and connection.is_evictable():
                return connection
        return None

    def handshake_done(self, connection):
        self._handshakes.pop(connection, None)

    def touch(self, connection):
        """``connection`` brought an accepted message: it is the most recently active."""
        if connection in self._by_activity:
            self._by_activity.move_to_end(connection)
            self._by_peer[_peer(connection)].move_to_end(connection)

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
        if self._largest > 1:
            # The peers holding the most connections give one up first (issue 19).
            for peer in list(self._peers_by_size[self._largest]):
                for connection in self._by_peer[peer]:
                    if connection is not newcomer and connection.is_evictable():
                        return connection
        for connection in self._by_activity:
            if connection is not newcomer and connection.is_evictable():
                return connection
        return None

    def _resized(self, peer, before, after):
        """Keep ``_peers_by_size`` and ``_largest`` (sizes move by one at a time)."""
        if before:
            peers = self._peers_by_size[before]
            peers.discard(peer)
            if not peers:
                del self._peers_by_size[before]
                if self._largest == before and after < before:
                    self._largest = after
        if after:
            self._peers_by_size.setdefault(after, set()).add(peer)
            if after > self._largest:
                self._largest = after

    def _oldest_handshake(self, newcomer):
        for connection in self._handshakes:
            if connection is not newcomer:
                return connection
        return None


def _peer(connection):
    """The address a connection counts against (None for a test's plain object)."""
    return getattr(connection, 'peer_host', None)
