"""The client's side of acknowledged delivery (issue 8): numbering, keeping, releasing.

On a TCP or TLS connection the client asks for acknowledgements by setting ``FLAG_ACK``.
It starts every connection with a session frame (``wire.make_session``): "the frames after
this one are messages ``first``, ``first + 1``, ... of my session", written alone; it writes
no message until the daemon has answered it (the handshake, within ``HANDSHAKE_TIMEOUT_S``).  The daemon answers
``{"ack": N}``: the first N frames of *this connection* (the session frame is frame 1) are
written to disk or rejected.  The client keeps every message it wrote until an ack covers
it; after a reconnect it starts a new connection with a session frame numbered from its
oldest unacknowledged message and writes them all again.  The daemon skips the messages of
a session that it already took, so a cut connection does not duplicate lines (a daemon
restart forgets the sessions: a message written but not yet acknowledged when the daemon
died is written twice).

This module is pure bookkeeping, shared by the background sender and the ``loghog``
command: ``Unacknowledged`` holds the numbered frames, ``ConnectionAcks`` turns one
connection's acks into message numbers.  No sockets, no clocks (times are passed in).
"""

import collections
import uuid

# How long the client waits for the answer to its session frame (the handshake, see the
# README's "Acknowledged delivery") before it gives up on the connection, keeps its messages
# and tries again.  A daemon 0.8+ answers a session frame in the loop pass that reads it,
# with no write and no fsync: milliseconds, even on a loaded machine.  No answer means a
# stopped daemon, or one older than acknowledgements (then ``acknowledged=False``).
HANDSHAKE_TIMEOUT_S = 5.0


# The daemon's reason for a v2 message whose signing time is further from its clock than
# its max_clock_skew (loghogd/signature_v2.py): the one refusal the client tries once more
# (Sender._sign_again).
CLOCK_SKEW = 'clock_skew'


def new_session_id():
    """A random session id (32 hex digits): one per sender, a new one after ``fork()``."""
    return uuid.uuid4().hex


class Unacknowledged:
    """Frames written to the daemon and not yet acknowledged, oldest first.

    The frames are messages ``first_seq``, ``first_seq + 1``, ... ``next_seq - 1`` of the
    session: a frame gets its number when it is first written, so the numbers have no gaps.
    Not thread-safe by itself.
    """

    def __init__(self, first_seq=1):
        self.first_seq = first_seq
        self.bytes = 0                    # the frames' total size, for the buffer's byte bound
        self._frames = collections.deque()

    def __len__(self):
        return len(self._frames)

    @property
    def next_seq(self):
        """The number the next frame added will get."""
        return self.first_seq + len(self._frames)

    def add(self, frames):
        """Keep ``frames`` (just written, in order) as the next numbers."""
        self._frames.extend(frames)
        self.bytes += sum(map(len, frames))

    def release_through(self, seq):
        """Forget every frame numbered ``seq`` or lower (acknowledged); return how many."""
        count = max(0, min(seq - self.first_seq + 1, len(self._frames)))
        popleft = self._frames.popleft
        for _ in range(count):
            self.bytes -= len(popleft())
        self.first_seq += count
        return count

    def frame(self, seq):
        """The frame numbered ``seq``, or None when it is not held (released, or never
        written)."""
        index = seq - self.first_seq
        return self._frames[index] if 0 <= index < len(self._frames) else None

    def release_all(self):
        """Forget every frame (they count as sent without confirmation); return how many."""
        return self.release_through(self.next_seq - 1)

    def frames_after(self, seq, max_bytes):
        """Return the frames numbered above ``seq``, oldest first, at least one (if there are
        any) and up to ``max_bytes`` in total: the next ones to write again after a reconnect.
        """
        start = max(0, seq + 1 - self.first_seq)
        batch = []
        size = 0
        for index in range(start, len(self._frames)):
            frame = self._frames[index]
            if batch and size + len(frame) > max_bytes:
                break
            batch.append(frame)
            size += len(frame)
        return batch


class ConnectionAcks:
    """One acknowledged connection: which messages its acks cover.

    ``first_seq`` is the number its session frame announced; ``written_through`` the number
    of the last message written on it so far (``first_seq - 1`` before any).  ``has_acks``
    turns true at the first ack (the answer to the session frame: the handshake is done).
    ``first_write_at`` (a ``time.monotonic()`` value) is when the session frame was
    written, for the handshake's bound; None before.
    """

    def __init__(self, first_seq):
        self.first_seq = first_seq
        self.written_through = first_seq - 1
        self.acked_frames = 0
        self.has_acks = False
        self.first_write_at = None

    @property
    def frames_written(self):
        """Frames written on the connection, the session frame included (0 before it)."""
        if self.first_write_at is None:
            return 0
        return 1 + self.written_through - self.first_seq + 1

    def seq_of_frame(self, number):
        """The message number of the connection's frame ``number`` (1 is the session frame,
        which has none: None)."""
        return None if number <= 1 else self.first_seq + number - 2

    def apply(self, ack):
        """Take one ack (a dict from ``wire.parse_ack``); return the message number that
        everything up to is now done (acknowledged or rejected).

        Raises ``ValueError`` for an ack that goes backwards or covers frames never written:
        the peer is not a LogHog daemon keeping our count, and the connection is not to be
        trusted.
        """
        count = ack['ack']
        if count < self.acked_frames or count > self.frames_written:
            raise ValueError(f'acknowledgement of {count} frames after {self.acked_frames} '
                             f'with {self.frames_written} written')
        self.acked_frames = count
        self.has_acks = True
        return self.first_seq + count - 2


def rejections(ack):
    """The rejected frames an ack lists, as ``{reason: count}`` (its ``more_rejected``
    beyond the listed ones counted under ``'other'``)."""
    counts = collections.Counter()
    for entry in ack.get('rejected', ()):
        reason = entry[1] if isinstance(entry, list) and len(entry) == 2 else 'unknown'
        counts[str(reason)] += 1
    more = ack.get('more_rejected', 0)
    if isinstance(more, int) and more > 0:
        counts['other'] += more
    return counts


def rejected_frames(ack, reason):
    """The frame numbers (of the connection) an ack lists as rejected for ``reason``."""
    return [entry[0] for entry in ack.get('rejected', ())
            if isinstance(entry, list) and len(entry) == 2 and entry[1] == reason
            and entry[0].__class__ is int]


def describe_rejections(counts):
    """``{'unknown_app': 2, 'bad_signature': 1}`` -> ``'unknown_app (2), bad_signature (1)'``."""
    return ', '.join(f'{reason} ({count})' for reason, count in counts.most_common())
