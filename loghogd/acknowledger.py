"""The acknowledger: the one owner of acknowledgement state (DESIGN.md, issue 14).

It keeps, for every acknowledged connection, its ``AckState`` (acks.py); the session
table; and which frames wait for which write and fsync.  ``Server`` routes to it: each
frame of an acknowledged connection (``take_frame``), each message written
(``AckState.wrote``), each loop pass after the writer's flush (``send_acks``), the
files that may have lost lines (``forget_lost``), closed connections (``closed``).

No sockets, no files, no clock: a connection is anything with ``send(data)``,
``close(reason)``, ``closed`` and ``identity`` (who the peer is: its IP address and,
with TLS, its certificate subject); a log file anything with ``pending``,
``unwritten``, ``synced_seq`` and ``sync_wanted``.  Tests drive it with plain objects.
"""

from loghog.wire import FLAG_SESSION, KNOWN_FLAGS

from .acks import AckState, SessionTable
from .protocol import Rejection, decode_session


class Acknowledger:
    """Acknowledgement state of every acknowledged connection, and the session table."""

    def __init__(self, counters, sessions=None):
        self.counters = counters
        self.sessions = SessionTable() if sessions is None else sessions
        # AckStates not yet done: live connections, and closed ones whose lines are not
        # yet written (their sessions must still learn about those writes).
        self.states = {}          # AckState -> connection
        self.now = 0.0

    def __bool__(self):
        return bool(self.states)

    def start(self, connection, frames_before):
        """``connection`` asked for acks; ``frames_before`` frames came before this one
        (they count in its numbering).  Returns its AckState."""
        acks = AckState(frames_before, connection)
        self.states[acks] = connection
        self.counters.count('ack_connections')
        return acks

    def take_frame(self, acks, frame):
        """Count ``frame`` on an acknowledged connection; true if it needs no more work.

        That is a session frame (it only sets the numbering) or a message of the session
        that this daemon already queued for writing.  A malformed session frame gives
        its Rejection (true too), for the caller to count and log.
        """
        acks.received += 1
        if (frame.__class__ is not Rejection and frame[0] & FLAG_SESSION
                and not frame[0] & ~KNOWN_FLAGS):   # unknown bits: bad_flags, later
            return self._start_session(acks, frame[1])
        if acks.session_key is None:
            return False
        acks.seq += 1
        session = acks.session
        if session is None:
            # Another connection of the session may have written since its session frame
            # (two live connections of one session, read in the same pass).
            session = self.sessions.get(acks.session_key)
            if session is not None:
                session.live += 1
                acks.session = session
        if session is not None and acks.seq <= session.last_seq:
            self.counters.count('duplicates_skipped')
            acks.wait_for_original(session)
            return True
        return False

    def _start_session(self, acks, payload):
        decoded = decode_session(payload)
        if decoded.__class__ is Rejection:
            return decoded
        sid, first = decoded
        key = (acks.connection.identity, sid)
        if acks.session is not None:
            acks.session.live -= 1
        session = self.sessions.get(key)
        if session is not None:
            session.live += 1
            self.sessions.touch(session, self.now)
        acks.start_session(key, first, session)
        return True

    def wrote(self, acks):
        """The current frame of ``acks``, a message of its session, was queued."""
        session = acks.session
        if session is None:
            session = self.sessions.get(acks.session_key)
        if session is not None and acks.session is None:
            session.live += 1
            acks.session = session
        if session is None:
            evicted = self.sessions.evicted
            session = self.sessions.create(acks.session_key, self.now)
            if self.sessions.evicted > evicted:
                self.counters.count('sessions_evicted')
            if session is None:
                self.counters.count('sessions_untracked')
                acks.session_key = None   # written without duplicate suppression
                return
            session.live += 1
            acks.session = session
        acks.wrote(session)

    def closed(self, connection):
        """``connection`` closed: its session has one live connection less."""
        acks = connection.acks
        if acks is not None and acks.session is not None:
            acks.session.live -= 1
            self.sessions.touch(acks.session, self.now)

    def send_acks(self):
        """After a flush: send the acks that are due (written, and fsynced as each
        facility's flush_every says).  A closed connection's state stays until its
        frames are done, so that its session learns of its writes."""
        for acks, connection in list(self.states.items()):
            frames = acks.take_due()
            if connection.closed:
                if acks.is_done():
                    self._drop(acks)
                continue
            if frames:
                connection.send(frames[0] if len(frames) == 1 else b''.join(frames))
                if acks.session is not None:
                    self.sessions.touch(acks.session, self.now)

    def forget_lost(self, lost):
        """Lines of the files in ``lost`` may be lost (backlog dropped, fsync failed):
        never acknowledge them.

        Connections with frames not yet acked in those files (their own, or originals
        of duplicates they skipped) are closed without an ack, so that their clients
        resend; their sessions go back to what was acknowledged, so that the resent
        messages are written.  Which lines were lost is not known: a client may resend
        some that were written (at least once, not exactly).
        """
        if not lost:
            return
        for acks, connection in list(self.states.items()):
            files = acks.all_files() & lost
            if not files:
                continue
            self._rewind(acks)
            self._drop(acks)
            if not connection.closed:
                self.counters.count('ack_connections_closed_on_loss')
                connection.close('lines it sent may be lost in %s' % ', '.join(
                    sorted(f.path for f in files)))

    def _rewind(self, acks):
        for session in acks.written_in:
            position = acks.acked_seq if acks.acked_seq is not None else acks.first_seq
            if session.last_seq > position:
                session.last_seq = position
            session.writers.pop(acks, None)
        acks.written_in = set()

    def _drop(self, acks):
        self.states.pop(acks, None)
        for session in acks.written_in:
            session.writers.pop(acks, None)
        acks.written_in = set()

    def expire(self, now):
        """Housekeeping: forget sessions idle for long (bounded work per call)."""
        self.now = now
        return self.sessions.expire(now)

