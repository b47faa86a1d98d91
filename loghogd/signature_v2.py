"""Checking protocol v2 signatures (loghog/signing.py) and refusing replays (issue 19).

Pure: values in, a Rejection or None out; the clock is an argument.

For a message that lands in a facility with a ``secret``:

- a v2 frame must carry a valid MAC (``bad_signature``), and the client's time must be
  within ``[server] max_clock_skew`` of the daemon's (``clock_skew``): a captured frame is
  worth nothing after that;
- within that window, ``ReplayGuard`` refuses a (session, seq) that the daemon already
  queued for writing (``replayed``), from any peer;
- ``require_signature = v2`` refuses v1-signed and unsigned messages
  (``v2_signature_required``).

A resent duplicate is not a replay.  After a reconnect our client writes its unacknowledged
messages again, each with its own session and number, signed afresh (a new time, the same
numbers).  The acknowledger skips those it already wrote, silently, as before: that check
comes first and is keyed by (peer, session).  A resend of a message that was *not* written
(lost with its file, so its session was rewound, see ``Acknowledger.forget_lost``) must be
written: it is, when it comes from the peer that first wrote in the session, on an
acknowledged connection whose session frame names the same session and places the message
at its signed number: that is, when the acknowledger's numbering and the signature agree,
the acknowledger decides.  Anything else already seen (another peer, a plain connection, a
made-up session frame) is a replay.  So a client whose address changed between a cut and its
resend sees its resends of written messages refused as ``replayed`` (nothing lost: they were
written), and a replay from the same address needs the session frame and numbering of the
original, which makes it a duplicate that is skipped.

What is remembered is bounded: ``MAX_SESSIONS`` sessions, least recently used first out; a
session is forgotten once its newest message is older than the clock window (its frames
are refused as ``clock_skew`` from then on), else it is evicted and counted
(``signed_sessions_evicted``: a replay of that session within its window would be
written).  Per session, ``MAX_RANGES`` runs of numbers; older numbers fold into a floor below
which every number counts as seen.  A daemon restart forgets everything: frames younger than
``max_clock_skew`` could then be replayed once (docs/security.md).
"""

import collections

from . import ranges
from .protocol import BAD_SIGNATURE, Rejection

V2_REQUIRED = 'v2_signature_required'
CLOCK_SKEW = 'clock_skew'
REPLAYED = 'replayed'
REASONS = (V2_REQUIRED, CLOCK_SKEW, REPLAYED)

MAX_SESSIONS = 50000
MAX_RANGES = 64


def check_signature_v2(facility, flags, envelope, now_s, max_skew_s):
    """The v2 checks that need no memory, for a message routed to ``facility``:
    None when it may go on (to ``ReplayGuard``), else a Rejection.

    ``envelope`` is the frame's ``loghog.signing.Envelope`` (None for a v1 frame); ``flags``
    the frame header's.  Call only when the facility has a secret or requires v2.
    """
    signer = facility.signer_v2
    if envelope is None:
        return Rejection(V2_REQUIRED, '[%s] takes only protocol v2 signatures '
                         '(require_signature = v2)' % facility.section)
    if signer is None:
        return None   # no secret: nothing to check the signature against, as with v1
    if not signer.is_valid(envelope, flags):
        return Rejection(BAD_SIGNATURE, 'v2 signature does not match (%s:%s)'
                         % (facility.app, facility.name))
    skew_s = now_s - envelope.time_ms / 1000.0
    if abs(skew_s) > max_skew_s:
        return Rejection(CLOCK_SKEW, 'signed %s than max_clock_skew allows (%.0fs %s, '
                         'max %gs)' % ('earlier' if skew_s > 0 else 'later',
                                       abs(skew_s), 'ago' if skew_s > 0 else 'ahead',
                                       max_skew_s))
    return None


class _Seen:
    """The numbers of one signed session queued for writing: ranges above a floor."""

    __slots__ = ('owner', 'floor', 'starts', 'ends', 'newest_ms')

    def __init__(self, owner):
        self.owner = owner
        self.floor = -1           # every number up to this one counts as seen
        self.starts = []
        self.ends = []
        self.newest_ms = None

    def has(self, seq):
        return seq <= self.floor or ranges.contains(self.starts, self.ends, seq)

    def add(self, seq):
        if seq <= self.floor:
            return
        dropped = ranges.add(self.starts, self.ends, seq, MAX_RANGES)
        if dropped is not None:
            self.floor = dropped   # every number up to the dropped range counts as seen


class ReplayGuard:
    """Which (session, seq) of v2-signed messages were queued for writing, and by whom."""

    def __init__(self, max_skew_s, limit=MAX_SESSIONS):
        self.max_skew_ms = max_skew_s * 1000.0
        self.limit = limit
        self.sessions = collections.OrderedDict()   # (scope, session) -> _Seen, LRU first
        self.evicted = 0     # sessions forgotten while still inside the clock window

    def __len__(self):
        return len(self.sessions)

    def take(self, envelope, owner, numbered_by_acks, now_s, scope=None):
        """Decide on a message that passed every other check and will be queued for
        writing if this returns None; remember it.  Returns a ``replayed`` Rejection when
        its (session, seq) was queued before (see the module's doc for the rule).

        ``owner`` is the peer (its ``identity``); ``numbered_by_acks`` is true when the
        message came on an acknowledged connection whose session frame names this session
        and places the message at its signed number (the acknowledger already skipped it
        if it had been written).  ``scope`` is the secret the signature was checked with:
        a session's numbers are remembered per secret, so that a client of another
        application, which signs with its own secret, cannot use up the numbers of a
        session it saw (attack finding A4-9: its victim's messages were then refused).
        """
        key = (scope, envelope.session)
        seen = self.sessions.get(key)
        if seen is None:
            seen = self._create(key, owner, now_s)
        else:
            self.sessions.move_to_end(key)
            if seen.has(envelope.seq) and not (numbered_by_acks and seen.owner == owner):
                return Rejection(REPLAYED, 'session %s message %d was written before'
                                 % (envelope.session.hex()[:12], envelope.seq))
        seen.add(envelope.seq)
        if seen.newest_ms is None or envelope.time_ms > seen.newest_ms:
            seen.newest_ms = envelope.time_ms
        return None

    def _create(self, key, owner, now_s):
        sessions = self.sessions
        now_ms = now_s * 1000.0
        # A couple of expired sessions go each time one is made: the table shrinks as fast
        # as sessions come, with bounded work per message.
        for _ in range(2):
            if not sessions:
                break
            oldest_key, oldest = next(iter(sessions.items()))
            if oldest.newest_ms is not None and oldest.newest_ms + self.max_skew_ms >= now_ms:
                break
            del sessions[oldest_key]
        if len(sessions) >= self.limit:
            sessions.popitem(last=False)
            self.evicted += 1
        seen = sessions[key] = _Seen(owner)
        return seen
