"""The LogHog wire format (protocol version 1), shared by the client and the daemon.

A frame is ``size: uint32 BE | flags: uint32 BE | payload: size bytes``.  The payload is
a UTF-8 JSON object, zlib-compressed when ``FLAG_ZLIB`` is set.  See the README's
"Protocol" section.  This module is pure: bytes and values in, bytes and values out.
"""

import functools
import hashlib
import json
import struct
import zlib
from json.encoder import encode_basestring_ascii as _quote

# JSON text of a str (ASCII, every non-ASCII character escaped): the C escaper json uses.
encode_string = _quote

VERSION = 1

HEADER = struct.Struct('>II')
HEADER_SIZE = HEADER.size

FLAG_ZLIB = 0x01
# Extension (not in the original protocol): the client asks the daemon to acknowledge
# the frames of this connection.  See the README's "Acknowledged delivery".
FLAG_ACK = 0x02
# Extension: with FLAG_ACK, a frame that starts a session on the connection (see
# make_session).  Its payload is not a log message.
FLAG_SESSION = 0x04
# Extension (issue 19): the frame is signed with a protocol v2 signature, in an envelope
# before its payload (loghog/signing.py).  Sent only to a daemon that said it checks them
# (``"sign": 2`` in its answer to a session frame) or when the user asks for v2.
FLAG_SIGNED_V2 = 0x08
KNOWN_FLAGS = FLAG_ZLIB | FLAG_ACK | FLAG_SESSION | FLAG_SIGNED_V2

SIGNED_FIELDS = ('app_id', 'module', 'stamp', 'nsecs', 'body')


try:
    # CPython's own MD5 (no OpenSSL EVP layer): about 3x faster than hmac for a short message.
    from _md5 import md5 as _md5
except ImportError:   # a Python built without it
    _md5 = hashlib.md5

_MD5_BLOCK = 64
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


class Signer:
    """Signs messages with one secret: HMAC-MD5 (RFC 2104), as the original client
    computed it.

    The MD5 states after the key's inner and outer blocks are computed once; each
    message copies them, hashes its text into the inner one, and the inner digest into
    the outer one.  That is HMAC itself, spelled out, and about 0.5 µs per ~150-byte
    message against 1.35 µs for copying an ``hmac.HMAC`` (whose OpenSSL copy and
    hexdigest dominate) and 1.7 µs for ``hmac.digest(key, msg, 'md5')``, the one-shot C
    path, which sets up the key every time (measured in benchmarks/README.md).
    tests/unit/test_client_wire.py holds it equal to ``hmac.new(..., hashlib.md5)``.
    """

    def __init__(self, secret):
        if isinstance(secret, str):
            secret = secret.encode('utf-8')
        if len(secret) > _MD5_BLOCK:
            secret = hashlib.md5(secret).digest()
        secret = secret.ljust(_MD5_BLOCK, b'\0')
        self._inner = _md5(secret.translate(_IPAD))
        self._outer = _md5(secret.translate(_OPAD))

    def sign(self, app_id, module, stamp, nsecs, body):
        """Return the lowercase hex signature; ``stamp`` and ``nsecs`` are integers.

        Raises UnicodeEncodeError for text with no UTF-8 form (lone surrogates).
        """
        inner = self._inner.copy()
        inner.update(('%s%s%s%s%s' % (app_id, module, stamp, nsecs, body)).encode('utf-8'))
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()


def signature(secret, app_id, module, stamp, nsecs, body):
    """Return the lowercase hex HMAC-MD5 of a message, as the original client computed it.

    ``stamp`` and ``nsecs`` are integers and are signed in their decimal form.
    """
    return Signer(secret).sign(app_id, module, stamp, nsecs, body)


def make_payload(app_id, module, stamp, nsecs, hostname, body, secret=None):
    """Return the JSON payload (bytes) for one message, signed when ``secret`` is given."""
    data = {
        'version': VERSION,
        'app_id': app_id,
        'module': module,
        'stamp': stamp,
        'nsecs': nsecs,
        'hostname': hostname,
        'body': body,
    }
    if secret:
        data['signature'] = signature(secret, app_id, module, stamp, nsecs, body)
    return json.dumps(data).encode('utf-8')


# Payloads up to this size are compressed with a small window and fixed Huffman codes.
# Measured on ~200-byte log records: zlib.compress costs the client 29-41 µs each, nearly
# all of it setting up its 256 KiB of state, against 7 µs for a 4 KiB window; and a block
# with fixed codes inflates in ~1.0 µs on the daemon against ~2.2 µs for one that carries
# its own (dynamic) code tables, for output 5-9% larger.  Larger payloads (tracebacks)
# gain more from dynamic codes and a full window, and pay the set-up only once per many
# bytes.  Any zlib inflater reads both: the wire format is unchanged.
SMALL_PAYLOAD = 4096


def compress_payload(payload):
    """zlib-compress one payload (a complete zlib stream), cheaply for small ones."""
    if len(payload) <= SMALL_PAYLOAD:
        compressor = zlib.compressobj(6, zlib.DEFLATED, 12, 4, zlib.Z_FIXED)
        return compressor.compress(payload) + compressor.flush()
    return zlib.compress(payload)


def compress_frame(frame):
    """The frame with its payload compressed (flag FLAG_ZLIB); a compressed one as it is."""
    flags = HEADER.unpack_from(frame)[1]
    if flags & FLAG_ZLIB:
        return frame
    return make_frame(frame[HEADER_SIZE:], True, flags)


def make_frame(payload, compress=False, flags=0):
    """Wrap a payload in a frame header; zlib-compress it first when ``compress`` is true."""
    if compress:
        payload = compress_payload(payload)
        flags |= FLAG_ZLIB
    return HEADER.pack(len(payload), flags) + payload


def encode_message(app_id, module, stamp, nsecs, hostname, body, secret=None,
                   compress=False, flags=0):
    """Return one complete frame for a message: the client's whole encoding step."""
    payload = make_payload(app_id, module, stamp, nsecs, hostname, body, secret)
    return make_frame(payload, compress, flags)


class MessageEncoder:
    """Encodes the messages of one client (fixed app, host name, secret and compression).

    ``encode(module, stamp, nsecs, body)`` returns the same frame as ``encode_message`` would
    for those arguments (the same JSON object, the same flags), about five times faster: the
    fixed fields are quoted once, and the rest is quoted by the C string escaper that
    ``json.dumps`` itself uses.  ``stamp`` and ``nsecs`` must be integers.  This is the
    logging handler's hot path; tests/unit/test_client_wire.py holds it equal to
    ``encode_message``.
    """

    def __init__(self, app_id, hostname, secret=None, compress=False, flags=0):
        self.app_id = app_id
        self.secret = secret
        self._signer = Signer(secret) if secret else None
        self.compress = compress
        self.flags = flags
        self._head = '{"version": %d, "app_id": %s, "hostname": %s, "module": ' % (
            VERSION, _quote(app_id), _quote(hostname))

    def encode(self, module, stamp, nsecs, body, fields=None):
        """Return one complete frame for a message.

        ``fields``, when given, is the JSON text of an object (the record's structure, see
        ``loghog.handler.record_fields``), sent as the key ``fields``: an extension that a
        0.7 daemon ignores like any unknown key.  The signature does not cover it (the
        signed text is the protocol's five fields, unchanged).
        """
        text = '%s%s, "stamp": %d, "nsecs": %d, "body": %s' % (
            self._head, _quote(module), stamp, nsecs, _quote(body))
        if fields is not None:
            text += ', "fields": ' + fields
        if self._signer is not None:
            text += ', "signature": "%s"' % self._signer.sign(self.app_id, module, stamp, nsecs,
                                                             body)
        return make_frame((text + '}').encode('ascii'), self.compress, self.flags)


def make_session(session_id, first_seq):
    """The first frame of an acknowledged connection: the frames after it on this connection
    are messages ``first_seq``, ``first_seq + 1``, ... of the client's session ``session_id``.

    The daemon skips a message of a session that it already accepted (a resend after a
    reconnect), so that at-least-once delivery rarely writes a line twice.
    """
    payload = json.dumps({'session': session_id, 'first': first_seq}).encode('ascii')
    return make_frame(payload, flags=FLAG_ACK | FLAG_SESSION)


def make_ack(count, rejected=(), more_rejected=0, signs_v2=False):
    """The daemon's answer on an acknowledged connection: the first ``count`` frames are done.

    ``rejected`` lists ``[frame number, reason]`` pairs among them (1-based numbers).
    ``signs_v2`` (the answer to a session frame): the daemon checks protocol v2 signatures
    (loghog/signing.py), said by FLAG_SIGNED_V2 in the ack's header.
    """
    data = {'ack': count}
    if rejected:
        data['rejected'] = list(rejected)
    if more_rejected:
        data['more_rejected'] = more_rejected
    return make_frame(json.dumps(data, separators=(',', ':')).encode('ascii'),
                      flags=FLAG_ACK | (FLAG_SIGNED_V2 if signs_v2 else 0))


def parse_ack(flags, payload):
    """Decode an ack frame's payload into its dict; raise ValueError if it is not one."""
    if not flags & FLAG_ACK:
        raise ValueError('not an ack frame (flags 0x%x)' % flags)
    data = json.loads(payload.decode('ascii'))
    if type(data) is not dict or type(data.get('ack')) is not int:
        raise ValueError('malformed ack: %r' % (payload[:80],))
    return data


# The daemon's default largest message (``max_message_size``, after decompression).  A
# client's record beyond it would be refused whole; it is cut to fit instead, visibly.
MAX_MESSAGE_BYTES = 64 * 1024

# The most one UDP datagram carries: 65,535 bytes less the IPv4 (20) and UDP (8) headers.
# The kernel refuses a larger one (EMSGSIZE), and nothing reaches the daemon (attack
# finding A6-1: a record just under MAX_MESSAGE_BYTES, not cut, was lost so).  IPv6
# carries 20 bytes more; a record is encoded before its address is chosen, so the one
# bound serves both.
MAX_DATAGRAM_BYTES = 65_507


def max_payload(transport, room=0):
    """The largest payload a client sends over ``transport`` (``'tcp'``, ``'tls'`` or
    ``'udp'``), less ``room`` (bytes added to the payload after encoding: a v2 signature's
    envelope): the daemon's default message size, and over UDP no more than fits one
    datagram with the frame's header."""
    limit = MAX_MESSAGE_BYTES
    if transport == 'udp':
        limit = min(limit, MAX_DATAGRAM_BYTES - HEADER_SIZE)
    return limit - room


def encode_within(encode, module, stamp, nsecs, body, max_payload=MAX_MESSAGE_BYTES,
                  fields=None):
    """Return ``encode(module, stamp, nsecs, body[, fields])``, the body cut to fit
    ``max_payload``.

    A body cut short ends with ``[loghog: cut ...]`` saying how long it was, so that the
    reader of the log file sees that the line is incomplete, not that it is all there was.
    ``fields`` (JSON text) longer than half of ``max_payload`` are replaced by an object
    that says so (``{"loghog_fields_cut": <length>}``).
    """
    if fields is not None:
        if len(fields) > max_payload // 2:
            fields = '{"loghog_fields_cut": %d}' % len(fields)
        encode = functools.partial(_encode_with_fields, encode, fields)
    frame = encode(module, stamp, nsecs, body)
    keep = len(body)
    while len(frame) - HEADER_SIZE > max_payload and keep:
        payload_size = len(frame) - HEADER_SIZE
        # Escaping makes a character up to 12 bytes long: shrink in proportion, then again.
        keep = max(0, min(keep - 1, keep * max_payload // payload_size - 200))
        frame = encode(module, stamp, nsecs,
                       f'{body[:keep]} [loghog: cut to {keep} of {len(body)} characters, '
                       f'the message was longer than {max_payload} bytes]')
    return frame


def _encode_with_fields(encode, fields, module, stamp, nsecs, body):
    return encode(module, stamp, nsecs, body, fields)
