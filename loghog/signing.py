"""Protocol v2 signatures (issue 19): HMAC-SHA256 over the whole frame, a session, a
sequence number and the client's time.  Shared by the client and the daemon; pure.

A v2 frame sets ``FLAG_SIGNED_V2`` (0x08) in its header, and its payload starts with a
64-byte envelope before the message as v1 sends it (its JSON, zlib-compressed when
``FLAG_ZLIB`` is set)::

    +--------------+-------------+-----------------+-----------+------------------------+
    | session: 16  | seq: u64 BE | time_ms: i64 BE | mac: 32   | body: the v1 payload   |
    +--------------+-------------+-----------------+-----------+------------------------+

    mac = HMAC-SHA256(key  = secret as UTF-8,
                      data = b"loghog-v2\\n" + flags (u32 BE, as in the header)
                             + session + seq (u64 BE) + time_ms (i64 BE) + body)

The MAC covers the body's bytes exactly as sent: every field of the message, the host
name and the sender's ``fields`` included, with no canonical form to agree on (a JSON
encoder in another language signs what it sends, and the daemon checks what it receives).
``session`` is 16 random bytes per client process (the acknowledged session's id, from
32 hex digits); ``seq`` numbers the messages of the session (on an acknowledged connection,
the message's number in the session, so that a resend after a reconnect carries its
original number); ``time_ms`` is the client's clock when it wrote the frame, in
milliseconds since the Unix epoch.  The README's "Protocol v2 signatures" has test vectors
(``tests/cases/signature-v2-vectors.json``).
"""

import hashlib
import hmac
import struct

from loghog.wire import FLAG_SIGNED_V2, HEADER, HEADER_SIZE

LABEL = b'loghog-v2\n'
ENVELOPE = struct.Struct('>16sQq32s')
ENVELOPE_SIZE = ENVELOPE.size          # 64
_SIGNED_HEAD = struct.Struct('>I16sQq')
_TIME_MIN, _TIME_LIMIT = -(1 << 63), 1 << 63


def _key(secret):
    return secret.encode('utf-8') if isinstance(secret, str) else bytes(secret)


_BLOCK = 64   # SHA-256's block size
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


class V2Signer:
    """Makes and checks v2 MACs for one secret: HMAC-SHA256 (RFC 2104) spelled out, as
    ``wire.Signer`` does for v1.  The SHA-256 states after the key's inner block (and the
    label) and its outer block are computed once; each message copies them.  That saves
    about 1 µs a message against copying an ``hmac.HMAC`` (benchmarks/README.md,
    "Protocol v2 signatures"); tests/unit/test_signature_v2.py holds it equal to
    ``hmac.new(key, data, hashlib.sha256)``."""

    def __init__(self, secret):
        key = _key(secret)
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_BLOCK, b'\0')
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._inner.update(LABEL)
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def mac(self, flags, session, seq, time_ms, body):
        """The 32-byte MAC of one frame's fields (``body``: the payload after the envelope)."""
        inner = self._inner.copy()
        inner.update(_SIGNED_HEAD.pack(flags, session, seq, time_ms))
        inner.update(body)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def sign_frame(self, frame, session, seq, time_ms):
        """Return ``frame`` (a v1 message frame, compressed or not) as a v2 frame: the flag
        set and the envelope put in front of its payload.  ``session`` is 16 bytes."""
        flags = HEADER.unpack_from(frame)[1] | FLAG_SIGNED_V2
        body = memoryview(frame)[HEADER_SIZE:]
        mac = self.mac(flags, session, seq, time_ms, body)
        return b''.join((HEADER.pack(ENVELOPE_SIZE + len(body), flags),
                         ENVELOPE.pack(session, seq, time_ms, mac), body))

    def is_valid(self, envelope, flags):
        """True when ``envelope`` (an Envelope) carries the right MAC for ``flags``."""
        expected = self.mac(flags, envelope.session, envelope.seq, envelope.time_ms,
                            envelope.body)
        return hmac.compare_digest(expected, envelope.mac)


class Envelope:
    """The v2 fields of a received frame, and the body after them."""

    __slots__ = ('session', 'seq', 'time_ms', 'mac', 'body')

    def __init__(self, session, seq, time_ms, mac, body):
        self.session = session
        self.seq = seq
        self.time_ms = time_ms
        self.mac = mac
        self.body = body


def split_envelope(payload):
    """An Envelope from a v2 frame's payload, or None when it is shorter than one."""
    if len(payload) < ENVELOPE_SIZE:
        return None
    session, seq, time_ms, mac = ENVELOPE.unpack_from(payload)
    return Envelope(session, seq, time_ms, mac, payload[ENVELOPE_SIZE:])


def session_bytes(session_id):
    """The 16 bytes of a session id of 32 hex digits (``loghog.acks.new_session_id``)."""
    return bytes.fromhex(session_id)
