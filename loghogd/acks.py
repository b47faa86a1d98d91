"""Acknowledged delivery, per connection and per session: pure state, no sockets.

A client that sets ``FLAG_ACK`` on the frames of a stream connection asks the daemon to
answer, on that connection, with ack frames: ``{"ack": N}`` says that the first N frames
of the connection are done, written (and fsynced as the facility's flush_every says) or
rejected; rejected ones are listed as ``"rejected": [[n, "reason"], ...]``.  Frames are
numbered from the connection's first, whatever it was.  Clients that never set the flag
never receive a byte.

A client may start the connection with a session frame (``FLAG_SESSION``: its session id
and the sequence number of the next frame); the daemon then skips a resent message that
it has already written in the same session, so a reconnect after a network cut does not
duplicate lines.  What a session is and what moves it (issue 14):

- A session is bound to its peer: the key is (peer IP address, TLS certificate subject
  or None, session id).  The same id from another peer is another session.
- Only messages the daemon itself queued for writing move a session's position
  (``Session.last_seq``); a session frame never does, so a frame that claims
  ``first = 10**12`` cannot make the daemon skip anything.  The position moves when
  the message is queued, not when it is read or acknowledged, so that two live
  connections of one session read in the same pass never both write it.
- A skipped duplicate is acknowledged only when what its original waits for is done:
  the skipping connection takes over the original's files (written, fsynced as their
  facility asks) and, if those lines turn out lost, is closed unacknowledged too.
- A session table entry is made only when a message of the session is written: session
  frames alone (a flood of them) cost no entry.  The table is bounded per peer and in
  all; when full, the session idle the longest without a live connection goes, but
  never one active within ``SESSION_PROTECT_S``: then the new session is not tracked
  (its messages are written, without duplicate suppression, and counted).
"""

import collections

from loghog.wire import make_ack

# An ack lists at most this many rejected frames; the rest are counted in "more_rejected".
MAX_REJECTED_LISTED = 100
# Sessions remembered for duplicate suppression, in all and per peer (a peer is an IP
# address, with TLS also a certificate subject: one host's processes share it).
MAX_SESSIONS = 10000
MAX_SESSIONS_PER_PEER = 1000
# A session used this recently (or with a live connection) is never evicted for a new
# one: a flood of new sessions then goes untracked instead (a client's resend after a
# cut connection comes within its reconnect backoff, seconds).
SESSION_PROTECT_S = 300.0
# A session without a live connection for this long is forgotten (housekeeping).
SESSION_IDLE_S = 3600.0


class Session:
    """One client session of one peer: how far the daemon has written it."""

    __slots__ = ('key', 'last_seq', 'writers', 'live', 'last_active')

    def __init__(self, key, now):
        self.key = key
        self.last_seq = 0           # highest message number queued for writing (not lost)
        self.writers = {}           # AckState -> its frame number of its last such write
        self.live = 0               # live connections attached to it
        self.last_active = now

    def is_protected(self, now):
        return self.live > 0 or self.writers or now - self.last_active < SESSION_PROTECT_S


class SessionTable:
    """Sessions by key ``(peer identity, session id)``, bounded per peer and in all."""

    def __init__(self, limit=MAX_SESSIONS, per_peer=MAX_SESSIONS_PER_PEER):
        self.limit = limit
        self.per_peer = per_peer
        self.sessions = collections.OrderedDict()   # least recently active first
        self.by_peer = collections.defaultdict(collections.OrderedDict)
        self.untracked = 0          # sessions refused an entry (table full of active ones)
        self.evicted = 0

    def __len__(self):
        return len(self.sessions)

    def get(self, key):
        return self.sessions.get(key)

    def create(self, key, now):
        """A new Session for ``key``, or None when no room can be made (see module doc)."""
        peer = key[0]
        mine = self.by_peer[peer]
        if len(mine) >= self.per_peer and not self._evict_from(mine, now):
            self.untracked += 1
            return None
        if len(self.sessions) >= self.limit and not self._evict_from(self.sessions, now):
            self.untracked += 1
            return None
        session = self.sessions[key] = mine[key] = Session(key, now)
        return session

    def touch(self, session, now):
        """``session`` was used: it moves to the end of the eviction order."""
        session.last_active = now
        key = session.key
        if key in self.sessions:
            self.sessions.move_to_end(key)
            self.by_peer[key[0]].move_to_end(key)

    def _evict_from(self, ordered, now):
        """Forget the least recently active unprotected session of ``ordered``."""
        for key, session in ordered.items():
            if not session.is_protected(now):
                self._remove(key)
                self.evicted += 1
                return True
            if now - session.last_active < SESSION_PROTECT_S and not session.live:
                return False   # the rest are more recent still
        return False

    def expire(self, now, budget=1000):
        """Forget sessions idle for SESSION_IDLE_S without a live connection (at most
        ``budget`` per call: the work of one housekeeping pass stays bounded)."""
        doomed = []
        for key, session in self.sessions.items():
            if len(doomed) >= budget or now - session.last_active < SESSION_IDLE_S:
                break
            if not session.live and not session.writers:
                doomed.append(key)
        for key in doomed:
            self._remove(key)
        return len(doomed)

    def _remove(self, key):
        del self.sessions[key]
        mine = self.by_peer[key[0]]
        del mine[key]
        if not mine:
            del self.by_peer[key[0]]


class AckState:
    """What one acknowledged connection has received and what is not yet acknowledged.

    An ack is a promise about the frames it counts, so it is made in two steps.  After a
    flush in which every frame received so far is written (or rejected), ``take_due``
    takes a *snapshot*: the frame count, the rejections, and for each file those frames
    went to, how far its facility's flush_every wants it fsynced at that moment
    (``LogFile.sync_wanted``).  The ack for the snapshot goes out once those fsyncs are
    done (``LogFile.synced_seq``, raised by the writer's syncer thread).  Frames that
    arrive meanwhile wait for the next snapshot: a connection is never held back by lines
    that other connections keep adding to the same file.

    ``ready`` holds acks due at once, without a write (the answer to a session frame).
    """

    __slots__ = ('received', 'acked', 'files', 'waits', 'rejected', 'more_rejected',
                 'session', 'session_key', 'seq', 'first_seq', 'snapshot', 'acked_seq',
                 'ready', 'written_in', 'connection')

    def __init__(self, received=0, connection=None):
        self.connection = connection
        self.session = None        # the Session, once one of its messages is written here
        self.session_key = None    # (peer, session id) from the last session frame
        self.seq = 0               # the session sequence number of the last frame received
        self.first_seq = 0         # the number before the first message of the session frame
        self.received = received   # frames received on the connection
        self.acked = received      # frames covered by the last ack sent (or not asked for)
        self.acked_seq = None      # session seq as of the last ack sent
        self.files = set()         # LogFiles written to since the last snapshot
        self.waits = []            # [(LogFile, sync_wanted)] taken over from originals
        self.rejected = []         # [frame number, reason] since the last snapshot
        self.more_rejected = 0
        self.ready = []            # ack frames due without a write
        self.written_in = set()    # Sessions this connection wrote messages of, unacked
        # (received, seq, rejected, more_rejected, [(LogFile, sync_wanted)]): written,
        # waiting for those fsyncs; or None.
        self.snapshot = None

    def reject(self, reason):
        if len(self.rejected) < MAX_REJECTED_LISTED:
            self.rejected.append([self.received, reason])
        else:
            self.more_rejected += 1

    def all_files(self):
        """Every file that frames not yet acknowledged went to (or wait for)."""
        files = self.files | {f for f, _ in self.waits}
        if self.snapshot is not None:
            files |= {f for f, _ in self.snapshot[4]}
        return files

    def start_session(self, key, first, session):
        """A session frame (the current frame): messages from the next one are numbered
        from ``first``; ``session`` is the table's entry for ``key`` (or None yet).
        If nothing before it waits, its ack is due at once (handshake rule 2)."""
        self.session_key = key
        self.session = session
        self.seq = self.first_seq = first - 1
        if (self.acked == self.received - 1 and self.snapshot is None and not self.files
                and not self.waits and not self.rejected and not self.more_rejected):
            self.ready.append(make_ack(self.received))
            self.acked = self.received
            self.acked_seq = self.seq

    def wait_for_original(self, session):
        """A duplicate of a message of ``session`` was skipped: its ack waits for what the
        writes of that session not yet acknowledged wait for (files and fsyncs)."""
        for writer, frame in session.writers.items():
            if writer is self or writer.acked >= frame:
                continue
            self.files |= writer.files
            if writer.snapshot is not None:
                self.waits += writer.snapshot[4]
            self.waits += writer.waits

    def wrote(self, session):
        """The current frame, a message of ``session``, was queued for writing."""
        if self.seq > session.last_seq:
            session.last_seq = self.seq
        session.writers[self] = self.received
        self.written_in.add(session)

    def take_due(self):
        """After a flush: return the ack frames due now (a list, most often empty).

        After each one, ``acked`` and ``acked_seq`` say what it covered.
        """
        frames, self.ready = self.ready, []
        while True:
            if self.snapshot is None:
                if self.received == self.acked or any(f.pending or f.unwritten
                                                      for f in self.files):
                    return frames
                waits = [(f, f.sync_wanted) for f in self.files if f.synced_seq < f.sync_wanted]
                waits += [(f, wanted) for f, wanted in self.waits if f.synced_seq < wanted]
                self.snapshot = (self.received, self.seq, self.rejected, self.more_rejected,
                                 waits)
                self.files = set()
                self.waits = []
                self.rejected = []
                self.more_rejected = 0
            received, seq, rejected, more_rejected, waits = self.snapshot
            if any(f.synced_seq < wanted for f, wanted in waits):
                return frames
            frames.append(make_ack(received, rejected, more_rejected))
            self.acked = received
            self.acked_seq = seq
            self.snapshot = None
            self._settle()

    def _settle(self):
        """Sessions no longer wait for this connection's acknowledged writes."""
        if self.written_in:
            for session in [s for s in self.written_in if s.writers.get(self, 0) <= self.acked]:
                del session.writers[self]
                self.written_in.discard(session)

    def is_done(self):
        """True when every frame received has been acknowledged (or would have been)."""
        return self.acked == self.received and not self.ready
