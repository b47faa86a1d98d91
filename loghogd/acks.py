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
    """What one acknowledged connection has received and what is not yet acknowledged.

    An ack is a promise about the frames it counts, so it is made in two steps.  After a
    flush in which every frame received so far is written (or rejected), ``take_due``
    takes a *snapshot*: the frame count, the session position, the rejections, and for
    each file those frames went to, how far its facility's flush_every wants it fsynced
    at that moment (``LogFile.sync_wanted``).  The ack for the snapshot goes out once
    those fsyncs are done (``LogFile.synced_seq``, raised by the writer's syncer
    thread).  Frames that arrive meanwhile wait for the next snapshot: a connection is
    never held back by lines that other connections keep adding to the same file.
    """

    __slots__ = ('received', 'acked', 'files', 'rejected', 'more_rejected', 'session', 'seq',
                 'snapshot', 'acked_seq', 'written_seq')

    def __init__(self):
        self.session = None        # the client's session id, once a session frame started it
        self.seq = 0               # the session sequence number of the last frame received
        self.received = 0          # frames received on the connection since acks started
        self.acked = 0             # frames covered by the last ack sent
        self.acked_seq = None      # (session, seq) as of the last ack sent
        self.written_seq = None    # (session, seq) as of the last snapshot: all written
        self.files = set()         # LogFiles written to since the last snapshot
        self.rejected = []         # [frame number, reason] since the last snapshot
        self.more_rejected = 0
        # (received, (session, seq), rejected, more_rejected, [(LogFile, sync_wanted)]):
        # written, waiting for those fsyncs; or None.
        self.snapshot = None

    def reject(self, reason):
        if len(self.rejected) < MAX_REJECTED_LISTED:
            self.rejected.append([self.received, reason])
        else:
            self.more_rejected += 1

    def all_files(self):
        """Every file that frames not yet acknowledged went to."""
        if self.snapshot is None:
            return self.files
        return self.files | {f for f, _ in self.snapshot[4]}

    def take_due(self):
        """After a flush: return the ack frames due now (a list, most often empty).

        After each one, ``acked`` and ``acked_seq`` say what it covered.  ``written_seq``
        is the session position of the last snapshot (written, perhaps not yet fsynced).
        """
        frames = []
        while True:
            if self.snapshot is None:
                if self.received == self.acked or any(f.pending or f.unwritten
                                                      for f in self.files):
                    return frames
                waits = [(f, f.sync_wanted) for f in self.files if f.synced_seq < f.sync_wanted]
                self.written_seq = (self.session, self.seq)
                self.snapshot = (self.received, self.written_seq, self.rejected,
                                 self.more_rejected, waits)
                self.files = set()
                self.rejected = []
                self.more_rejected = 0
            received, position, rejected, more_rejected, waits = self.snapshot
            if any(f.synced_seq < wanted for f, wanted in waits):
                return frames
            frames.append(make_ack(received, rejected, more_rejected))
            self.acked = received
            self.acked_seq = position
            self.snapshot = None

    def is_done(self):
        """True when every frame received has been acknowledged (or would have been)."""
        return self.acked == self.received


class Sessions:
    """The last message number written per client session, for duplicate suppression."""

    def __init__(self, limit=MAX_SESSIONS):
        self.limit = limit
        self.last_seq = collections.OrderedDict()

    def is_duplicate(self, sid, seq):
        """True if message ``seq`` of session ``sid`` was written before."""
        last = self.last_seq.get(sid)
        return last is not None and seq <= last

    def forget_after(self, sid, seq):
        """Messages after ``seq`` of session ``sid`` may be lost: write them if resent."""
        last = self.last_seq.get(sid)
        if last is not None and last > seq:
            self.last_seq[sid] = seq

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
