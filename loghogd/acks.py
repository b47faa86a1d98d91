"""Acknowledged delivery: a protocol extension for at-least-once delivery over TCP and TLS.

A client that sets ``FLAG_ACK`` on the frames of a stream connection asks the daemon to
answer, on that connection, with ack frames: ``{"ack": N}`` says that the first N frames
of the connection are done, written (and fsynced as the facility's flush_every says) or
rejected; rejected ones are listed as ``"rejected": [[n, "reason"], ...]``.  Clients that
never set the flag never receive a byte.

A client may start the connection with a session frame (``FLAG_SESSION``: its session id
and the sequence number of the next frame); the daemon then skips a resent message that
it has already written in the same session, so a reconnect after a network cut does not
duplicate lines.  A session counts a message once it is written (when its ack is due),
not when it is read: a message held in memory because its file cannot be written, and
perhaps dropped from there, must be written again when the client resends it.
"""

import collections

from loghog.wire import make_ack

# An ack lists at most this many rejected frames; the rest are counted in "more_rejected".
MAX_REJECTED_LISTED = 100
# Sessions remembered for duplicate suppression (least recently used forgotten first).
MAX_SESSIONS = 10000


class AckState:
    """What one acknowledged connection has received and what is not yet acknowledged."""

    __slots__ = ('received', 'acked', 'files', 'rejected', 'more_rejected', 'session', 'seq')

    def __init__(self):
        self.session = None        # the client's session id, once a session frame started it
        self.seq = 0               # the session sequence number of the last frame received
        self.received = 0          # frames received on the connection since acks started
        self.acked = 0             # frames covered by the last ack sent
        self.files = set()         # LogFiles written to since the last ack
        self.rejected = []         # [frame number, reason] since the last ack
        self.more_rejected = 0

    def reject(self, reason):
        if len(self.rejected) < MAX_REJECTED_LISTED:
            self.rejected.append([self.received, reason])
        else:
            self.more_rejected += 1

    def is_due(self):
        """True when frames await an ack and every file they went to has been written."""
        if self.received == self.acked:
            return False
        return self.is_settled()

    def is_settled(self):
        """True when every file that frames since the last ack went to has been written."""
        return not any(f.pending or f.unwritten for f in self.files)

    def take_ack(self):
        """Return the ack frame for everything received so far, and reset."""
        frame = make_ack(self.received, self.rejected, self.more_rejected)
        self.acked = self.received
        self.files = set()
        self.rejected = []
        self.more_rejected = 0
        return frame


class Sessions:
    """The last message number written per client session, for duplicate suppression."""

    def __init__(self, limit=MAX_SESSIONS):
        self.limit = limit
        self.last_seq = collections.OrderedDict()

    def is_duplicate(self, sid, seq):
        """True if message ``seq`` of session ``sid`` was written before."""
        last = self.last_seq.get(sid)
        return last is not None and seq <= last

    def record(self, sid, seq):
        """Messages up to ``seq`` of session ``sid`` are written (or rejected)."""
        last = self.last_seq.get(sid)
        if last is not None:
            self.last_seq.move_to_end(sid)
            if seq <= last:
                return
        elif len(self.last_seq) >= self.limit:
            self.last_seq.popitem(last=False)
        self.last_seq[sid] = seq
