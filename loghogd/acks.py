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
- A session remembers the numbers of the messages the daemon itself queued for
  writing (``Session.written``, ranges of numbers); a session frame adds none, so a
  frame that claims ``first = 10**12`` cannot make the daemon skip anything.  A number
  is added when its message is queued, not when it is read or acknowledged, so that two
  live connections of one session read in the same pass never both write it.
- Only a frame that passes decoding, routing and its signature check is looked up as a
  duplicate: a resent frame that is rejected is rejected again (and listed in the ack),
  and a number that was rejected is not among those written, so the same message resent
  after a reload that makes it acceptable is written.  At most ``MAX_RANGES`` ranges
  of numbers are kept per session; the lowest go first (their resends would be written
  again: a duplicate, never a loss).
- A skipped duplicate is acknowledged only when what its original waits for is done:
  the skipping connection takes over the original's files (written, fsynced as their
  facility asks) and, if those lines turn out lost, is closed unacknowledged too.
- A session table entry is made only when a message of the session is written: session
  frames alone (a flood of them) cost no entry.  The table is bounded per peer
  (``MAX_SESSIONS_PER_PEER``) and in all (``MAX_SESSIONS``).  A peer at its own bound
  makes room only by evicting its own session idle the longest, if that one has no live
  connection and was not used within ``SESSION_PROTECT_S``.  When the whole table is
  full, a session idle that long goes first; if there is none, the peer that holds the
  most entries gives one up to a peer that holds fewer (fair shares, issue 14): it
  must hold more than ``SESSIONS_FAIR_SHARE`` entries and at least two more than the
  new session's peer, and the session it gives up is its least recently active one
  without a live connection or a write not yet acknowledged.  Otherwise the new session
  is not tracked (its messages are written, without duplicate suppression, and
  counted).  So a peer's first ``SESSIONS_FAIR_SHARE`` sessions are never taken by
  another peer, and a flood from other addresses leaves a new client an entry unless
  every peer with sessions holds at most that many (``MAX_SESSIONS`` /
  ``SESSIONS_FAIR_SHARE`` addresses flooding).
"""

import collections
import itertools

from loghog.wire import make_ack

from . import ranges

# An ack lists at most this many rejected frames; the rest are counted in "more_rejected".
MAX_REJECTED_LISTED = 100
# Sessions remembered for duplicate suppression, in all and per peer (a peer is an IP
# address, with TLS also a certificate subject: one host's processes share it).
MAX_SESSIONS = 10000
MAX_SESSIONS_PER_PEER = 1000
# A peer holding at most this many entries never gives one up for another peer's session.
SESSIONS_FAIR_SHARE = 10
# A session used this recently (or with a live connection) is never evicted for a new
# one: a flood of new sessions then goes untracked instead (a client's resend after a
# cut connection comes within its reconnect backoff, seconds).
SESSION_PROTECT_S = 300.0
# A session without a live connection for this long is forgotten (housekeeping).
SESSION_IDLE_S = 3600.0
# Ranges of message numbers written remembered per session (a range per run of numbers
# written without a rejected one between: one for an ordinary client).
MAX_RANGES = 64


class Session:
    """One client session of one peer: which of its message numbers the daemon wrote."""

    __slots__ = ('key', 'starts', 'ends', 'writers', 'live', 'last_active')

    def __init__(self, key, now):
        self.key = key
        self.starts = []            # written: the ranges starts[i]..ends[i] (inclusive),
        self.ends = []              # sorted, apart (queued for writing, not lost)
        self.writers = {}           # AckState -> its frame number of its last such write
        self.live = 0               # live connections attached to it
        self.last_active = now

    def is_protected(self, now):
        return self.live > 0 or self.writers or now - self.last_active < SESSION_PROTECT_S

    def written(self, seq):
        """True if message number ``seq`` of this session was queued for writing."""
        return ranges.contains(self.starts, self.ends, seq)

    def add(self, seq):
        """Message number ``seq`` was queued for writing (the lowest range beyond
        MAX_RANGES is forgotten: its resends would be written again, never lost)."""
        ranges.add(self.starts, self.ends, seq, MAX_RANGES)

    def forget_after(self, position):
        """Numbers above ``position`` may not be written after all (lines lost)."""
        starts, ends = self.starts, self.ends
        while starts and starts[-1] > position:
            del starts[-1], ends[-1]
        if ends and ends[-1] > position:
            ends[-1] = position


class SessionTable:
    """Sessions by key ``(peer identity, session id)``, bounded per peer and in all."""

    def __init__(self, limit=MAX_SESSIONS, per_peer=MAX_SESSIONS_PER_PEER,
                 fair_share=SESSIONS_FAIR_SHARE):
        self.limit = limit
        self.per_peer = per_peer
        self.fair_share = fair_share
        self.sessions = collections.OrderedDict()   # least recently active first
        self.by_peer = {}           # peer -> OrderedDict of its sessions (never empty)
        self.peers_by_size = {}     # n -> set of the peers holding n entries
        self.largest = 0            # the most entries any peer holds
        self.untracked = 0          # sessions refused an entry (table full of active ones)
        self.evicted = 0

    def __len__(self):
        return len(self.sessions)

    def get(self, key):
        return self.sessions.get(key)

    def create(self, key, now):
        """A new Session for ``key``, or None when no room can be made (see module doc).
        A refused peer leaves nothing behind."""
        peer = key[0]
        mine = self.by_peer.get(peer)
        held = len(mine) if mine is not None else 0
        if held >= self.per_peer and not self._evict_from(mine, now):
            self.untracked += 1
            return None
        if (len(self.sessions) >= self.limit and not self._evict_from(self.sessions, now)
                and not self._evict_for_fairness(held)):
            self.untracked += 1
            return None
        mine = self.by_peer.get(peer)   # an eviction may have removed an emptied one
        if mine is None:
            mine = self.by_peer[peer] = collections.OrderedDict()
        session = self.sessions[key] = mine[key] = Session(key, now)
        self._resized(peer, len(mine) - 1, len(mine))
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

    def _evict_for_fairness(self, held):
        """The table is full of sessions in use: take one from the peer holding the most
        entries, if it holds more than the fair share and two more than ``held``."""
        if self.largest <= max(self.fair_share, held + 1):
            return False
        for peer in self.peers_by_size[self.largest]:
            for key, session in self.by_peer[peer].items():
                if not session.live and not session.writers:
                    self._remove(key)
                    self.evicted += 1
                    return True
        return False

    def _remove(self, key):
        del self.sessions[key]
        peer = key[0]
        mine = self.by_peer[peer]
        del mine[key]
        self._resized(peer, len(mine) + 1, len(mine))
        if not mine:
            del self.by_peer[peer]

    def _resized(self, peer, before, after):
        """Keep ``peers_by_size`` and ``largest`` (sizes move by one at a time)."""
        if before:
            peers = self.peers_by_size[before]
            peers.discard(peer)
            if not peers:
                del self.peers_by_size[before]
                if self.largest == before and after < before:
                    self.largest = after
        if after:
            self.peers_by_size.setdefault(after, set()).add(peer)
            if after > self.largest:
                self.largest = after


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
        # {LogFile: sync_wanted} taken over from originals: one entry per file, the
        # highest (a list grew by the original's list at every duplicate frame, and two
        # connections racing one session's messages doubled each other's: A5-3).
        self.waits = {}
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
        files = self.files | set(self.waits)
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
            # FLAG_SIGNED_V2 on this ack tells the client that this daemon checks v2
            # signatures (issue 19; a client older than them ignores the bit).
            self.ready.append(make_ack(self.received, signs_v2=True))
            self.acked = self.received
            self.acked_seq = self.seq

    def wait_for_original(self, session):
        """A duplicate of a message of ``session`` was skipped: its ack waits for what the
        writes of that session not yet acknowledged wait for (files and fsyncs)."""
        waits = self.waits
        for writer, frame in session.writers.items():
            if writer is self or writer.acked >= frame:
                continue
            self.files |= writer.files
            theirs = writer.waits.items()
            if writer.snapshot is not None:
                theirs = itertools.chain(writer.snapshot[4], theirs)
            for log_file, wanted in theirs:
                if waits.get(log_file, 0) < wanted:
                    waits[log_file] = wanted

    def wrote(self, session):
        """The current frame, a message of ``session``, was queued for writing."""
        session.add(self.seq)
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
                waits = {f: f.sync_wanted for f in self.files if f.synced_seq < f.sync_wanted}
                for f, wanted in self.waits.items():
                    if f.synced_seq < wanted and waits.get(f, 0) < wanted:
                        waits[f] = wanted
                self.snapshot = (self.received, self.seq, self.rejected, self.more_rejected,
                                 list(waits.items()))
                self.files = set()
                self.waits = {}
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
