"""Decoding LogHog frames and messages: bytes in, messages or rejections out.

Pure code: no sockets, no files, no clock.  Expected bad input is a value (a
``Rejection`` with a reason code that feeds counters and logs), never an exception.
"""

import hmac
import json
import json.scanner
import typing
import zlib

from loghog.wire import FLAG_ACK, FLAG_ZLIB, HEADER, HEADER_SIZE, VERSION, Signer

from .salvage import without_fields

# Flags a message frame may carry (FLAG_SESSION marks a session frame, which is no message
# and is handled before decoding, on acknowledged connections only).
MESSAGE_FLAGS = FLAG_ZLIB | FLAG_ACK

# Reasons a frame or message is rejected; counters and logs use these names.
BAD_FLAGS = 'bad_flags'
TOO_LARGE = 'too_large'
BAD_ZLIB = 'bad_zlib'
BAD_UTF8 = 'bad_utf8'
BAD_JSON = 'bad_json'
BAD_FIELDS = 'bad_fields'
UNKNOWN_APP = 'unknown_app'
MISSING_SIGNATURE = 'missing_signature'
BAD_SIGNATURE = 'bad_signature'
LOST_FRAMING = 'lost_framing'

REASONS = (BAD_FLAGS, TOO_LARGE, BAD_ZLIB, BAD_UTF8, BAD_JSON, BAD_FIELDS, UNKNOWN_APP,
           MISSING_SIGNATURE, BAD_SIGNATURE, LOST_FRAMING)

# A declared frame size above this is not a log message that is merely too big: the
# stream is garbage (or a TLS/HTTP client on the wrong port) and the framing is lost.
SKIP_LIMIT = 16 * 1024 * 1024

# Longest host name accepted (a DNS name has at most 253 characters; Linux's
# HOST_NAME_MAX is 64).  Host names become part of file names with file_per_host.
MAX_HOSTNAME_CHARS = 255
# Longest module (logger) name accepted.  Routing tries every prefix of the dotted
# path, so an unbounded name would cost time quadratic in its length per message.
MAX_MODULE_CHARS = 1024

_STRING_FIELDS = ('app_id', 'module', 'hostname', 'body')
# stamp and nsecs must fit a signed 64-bit integer.
_INT_MIN = -(1 << 63)
_INT_LIMIT = 1 << 63
_INT_FIELDS = ('stamp', 'nsecs')


class Rejection:
    """Why one frame or message was not accepted: ``reason`` (a code) and ``detail`` (text).

    ``flags`` are the frame header's when a frame was skipped whole (too large): a client
    that asks for acks sets FLAG_ACK there too, and its acks count that frame.
    """

    __slots__ = ('reason', 'detail', 'flags')

    def __init__(self, reason, detail, flags=0):
        self.reason = reason
        self.detail = detail
        self.flags = flags

    def __repr__(self):
        return 'Rejection(%r, %r)' % (self.reason, self.detail)


class Message:
    """One decoded, well-formed message (not yet routed or checked for a signature)."""

    __slots__ = ('app_id', 'module', 'stamp', 'nsecs', 'hostname', 'body', 'signature',
                 'fields')

    def __init__(self, app_id, module, stamp, nsecs, hostname, body, signature=None,
                 fields=None):
        self.app_id = app_id
        self.module = module
        self.stamp = stamp
        self.nsecs = nsecs
        self.hostname = hostname
        self.body = body
        self.signature = signature
        self.fields = fields   # see sender_fields: None, a dict, or why it was dropped (str)

    def __repr__(self):
        return 'Message(%r, %r, %r)' % (self.app_id, self.module, self.body)


class FrameSplitter:
    """Splits a byte stream into (flags, payload) frames.

    ``feed(data)`` returns a list whose items are ``(flags, payload)`` tuples or
    ``Rejection`` values for frames that were skipped whole (too large).  Once the
    framing is lost (an absurd size), ``lost`` is set and the caller must close the
    stream; nothing more is returned.
    """

    def __init__(self, max_size):
        self.max_size = max_size
        self.buffer = bytearray()
        self.skip_remaining = 0
        self.lost = False

    @property
    def is_mid_frame(self):
        """True while part of a frame has arrived and the rest has not."""
        return bool(self.buffer) or self.skip_remaining > 0

    def feed(self, data):
        if self.lost:
            return []
        if self.skip_remaining:
            skipped = min(self.skip_remaining, len(data))
            self.skip_remaining -= skipped
            data = data[skipped:]
        # One immutable copy per read, so that each payload is a single slice (a bytearray
        # slice would be copied twice); only the unfinished tail is kept between reads.
        if self.buffer:
            pending = self.buffer
            pending += data
            if self._is_still_unfinished(pending):
                # Copying the unfinished frame on every read would cost time quadratic
                # in its size for a peer that sends it a few bytes at a time.
                return []
            buffer = bytes(pending)
        else:
            buffer = bytes(data)
        frames = []
        offset = 0
        end = len(buffer)
        max_size = self.max_size
        unpack_from = HEADER.unpack_from
        while end - offset >= HEADER_SIZE:
            size, flags = unpack_from(buffer, offset)
            if size > max_size:
                if size > SKIP_LIMIT:
                    self.lost = True
                    frames.append(Rejection(LOST_FRAMING, 'frame size %d bytes' % size))
                    self.buffer = bytearray()
                    return frames
                frames.append(Rejection(TOO_LARGE, 'frame of %d bytes (max %d)' % (size, max_size),
                                        flags))
                available = end - offset - HEADER_SIZE
                if available >= size:
                    offset += HEADER_SIZE + size
                    continue
                self.skip_remaining = size - available
                offset = end
                break
            start = offset + HEADER_SIZE
            if end - start < size:
                break
            frames.append((flags, buffer[start:start + size]))
            offset = start + size
        self.buffer = bytearray(buffer[offset:]) if offset < end else bytearray()
        return frames

    def _is_still_unfinished(self, pending):
        """True when ``pending`` (the kept tail plus new bytes) holds no whole frame yet."""
        if len(pending) < HEADER_SIZE:
            return True
        size = HEADER.unpack_from(pending)[0]
        return size <= self.max_size and len(pending) < HEADER_SIZE + size


def inflate(payload, max_size):
    """zlib-decompress ``payload`` producing at most ``max_size`` bytes, or a Rejection."""
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(payload, max_size + 1)
    except zlib.error as exc:
        return Rejection(BAD_ZLIB, 'zlib: %s' % exc)
    if len(data) > max_size or inflater.unconsumed_tail:
        return Rejection(TOO_LARGE, 'message inflates to more than %d bytes' % max_size)
    if not inflater.eof:
        return Rejection(BAD_ZLIB, 'zlib stream is truncated')
    return data


_DECODER = json.JSONDecoder()
_scan_once = json.scanner.make_scanner(_DECODER)


def fast_loads(text):
    """``json.loads`` for one JSON document in ``text``, without its Python-level wrappers.

    Calls the C scanner directly (about 0.5 µs less per message than json.loads, which
    adds two Python calls and two regular expression matches); same results, same
    ValueError family for bad input.
    """
    if text[:1] in _WHITESPACE or not text:
        return json.loads(text)
    try:
        value, end = _scan_once(text, 0)
    except StopIteration as exc:
        raise json.JSONDecodeError('Expecting value', text, exc.value) from None
    if end != len(text) and text[end:].strip(_WHITESPACE):
        raise json.JSONDecodeError('Extra data', text, end)
    return value


_WHITESPACE = ' \t\n\r'


# Names of ``[server] json_decoder``; 'auto' takes the first of these that is installed.
DECODERS = ('msgspec', 'orjson', 'stdlib')


def choose_loads(name):
    """Return the JSON decoder for ``[server] json_decoder`` ('auto', 'stdlib', 'orjson',
    'msgspec').

    Raises ImportError for 'orjson' or 'msgspec' when it is not installed; 'auto' takes
    msgspec, else orjson, else the standard library.  orjson's ``loads`` raises ValueError
    subclasses for bad input, which the decoder turns into a bad_json rejection; msgspec
    is a ``StructDecoder`` that ``decode_fields`` calls on the payload's bytes.
    """
    if name == 'stdlib':
        return fast_loads
    # 'auto' never takes orjson: it turns integers beyond 64 bits into floats (digits of an
    # id lost), which no fallback can see (attack finding A3-21).
    for candidate in (('msgspec',) if name == 'auto' else (name,)):
        try:
            if candidate == 'msgspec':
                return StructDecoder()
            if candidate == 'orjson':
                import orjson
                return _or_stdlib(orjson.loads)
        except ImportError:
            if name != 'auto':
                raise
    return fast_loads


def _or_stdlib(loads):
    """``loads`` (orjson's), with the standard library deciding what it refuses: a lone
    surrogate (os.fsdecode of a file name), 1e400, which the reference takes."""
    def loads_or_stdlib(text):
        try:
            return loads(text)
        except ValueError:
            return fast_loads(text)
    return loads_or_stdlib


def installed_decoders():
    """The names of ``DECODERS`` that can be used here (always 'stdlib')."""
    names = []
    for name in DECODERS:
        try:
            choose_loads(name)
        except ImportError:
            continue
        names.append(name)
    return names


# Fields longer than this are decoded in full (lazy_fields): what the standard library
# refuses in them (an integer of more than 4,300 digits: the message is refused) or cannot
# take (nesting near its recursion limit: salvage.py) needs thousands of bytes, and the
# fields LoghogHandler sends are a few hundred.
LAZY_FIELDS_BYTES = 2048


class StructDecoder:
    """msgspec (the ``fast`` extra) decoding a payload's bytes straight into the message's
    fields: no UTF-8 pass of our own, no dict, unknown keys skipped (but still checked to
    be valid JSON).

    Only a payload it accepts is taken from it; anything it refuses (bad JSON or UTF-8,
    a field of the wrong type, NaN, lone surrogates, an unknown key, ``fields`` that are
    dropped) goes the standard library's way in ``decode_fields``, which is the reference
    and says exactly why.  What it accepts, the standard library accepts with the same
    values (tests/cases runs every wire case with each decoder; test_protocol compares
    them on generated messages): the last of duplicate keys wins in both, integers decode
    to int up to the same 4300 digits, floats round the same.
    """

    def __init__(self):
        import msgspec

        # The protocol's bounds, checked by msgspec as it decodes (in Python they cost 190
        # ns a message); a value out of them is refused here and goes the standard
        # library's way, which says which.  Lengths are in characters, as len() counts.
        integer = typing.Annotated[int, msgspec.Meta(ge=_INT_MIN, le=_INT_LIMIT - 1)]
        host_name = typing.Annotated[str, msgspec.Meta(max_length=MAX_HOSTNAME_CHARS)]
        module_name = typing.Annotated[str, msgspec.Meta(max_length=MAX_MODULE_CHARS)]

        def wire_message(fields_type):
            # Unknown keys are refused, not skipped: msgspec skips any number, where the
            # standard library refuses integers of more than 4300 digits.
            class WireMessage(msgspec.Struct, gc=False, forbid_unknown_fields=True):
                version: typing.Literal[VERSION]
                app_id: str
                module: module_name
                stamp: integer
                nsecs: integer
                hostname: host_name
                body: str
                signature: typing.Optional[str] = None
                fields: fields_type = None
            return WireMessage

        self.decode = msgspec.json.Decoder(wire_message(typing.Any)).decode
        # The same message with ``fields`` left as its JSON text (checked to be JSON, not
        # decoded): a text line never holds the fields, and LoghogHandler sends them with
        # every record (bench_decoders.py: 2.7 µs a message with them, 1.4 without).
        self.decode_lazy = msgspec.json.Decoder(wire_message(msgspec.Raw)).decode
        self.decode_any = msgspec.json.decode
        # ValidationError is a DecodeError; deep nesting raises RecursionError.
        self.errors = (msgspec.DecodeError, RecursionError)

    def fields(self, payload):
        """The fields tuple of ``decode_fields`` for a well-formed message, else None."""
        try:
            m = self.decode(payload)
        except self.errors:
            return None
        fields = m.fields
        if fields is not None:
            fields = sender_fields(fields)
            if fields.__class__ is str:
                # Dropped (nested too deep, say): whether the standard library could
                # decode it at all depends on the stack's depth (about 1000 levels).
                return None
        return m.app_id, m.module, m.stamp, m.nsecs, m.hostname, m.body, m.signature, fields

    def lazy_fields(self, payload):
        """``fields`` with the 8th value left as a ``msgspec.Raw`` (None: no fields): for a
        text facility, which never reads it; ``resolve`` makes it what ``fields`` gives.
        (Server.ingest makes the same decision inline; tests/unit/test_lazy_fields.py
        holds the two equal.)
        None for anything ``fields`` might decide otherwise: a payload that is not ASCII
        (msgspec does not check the UTF-8 of a Raw's strings), one with fields over
        LAZY_FIELDS_BYTES, or one it refuses."""
        if not payload.isascii():
            return None
        try:
            m = self.decode_lazy(payload)
        except self.errors:
            return None
        fields = m.fields
        if fields is not None and len(fields) > LAZY_FIELDS_BYTES:
            return None
        return m.app_id, m.module, m.stamp, m.nsecs, m.hostname, m.body, m.signature, fields

    def resolve(self, raw):
        """The fields dict ``fields`` would have given for a message whose ``lazy_fields``
        gave ``raw`` (a ``msgspec.Raw``), or None when only the full decode can say (fields
        that are bad or dropped: ``decode_fields`` says why)."""
        try:
            fields = sender_fields(self.decode_any(raw))
        except self.errors + (ValueError, TypeError):
            return None
        return fields if fields.__class__ is dict else None

    def __call__(self, text):
        """``json.loads``' contract, for callers that want a plain value."""
        return fast_loads(text)


def decode_message(flags, payload, max_size, loads=fast_loads):
    """Decode one frame's payload into a Message, or return a Rejection.

    ``loads`` may be a faster JSON decoder with json.loads' contract for ``str`` input,
    or a ``StructDecoder`` (``choose_loads``).
    """
    fields = decode_fields(flags, payload, max_size, loads)
    if fields.__class__ is Rejection:
        return fields
    return Message(*fields)


def decode_fields(flags, payload, max_size, loads=fast_loads):
    """``decode_message`` without the Message: the tuple ``(app_id, module, stamp, nsecs,
    hostname, body, signature, fields)``, or a Rejection.  The daemon's per-message path.
    ``fields`` is the optional ``fields`` object as ``sender_fields`` checked it: a bad
    one is dropped (said so in the value), never the message.

    With the standard library (``loads`` is ``fast_loads``) the C scanner is called
    here directly, and a well-formed message is checked in one expression; anything
    unusual (leading or trailing whitespace, a missing or mistyped field) takes the
    slower path that says exactly what is wrong.
    """
    if flags & ~FLAG_ACK:
        if flags & ~MESSAGE_FLAGS:
            return Rejection(BAD_FLAGS, 'unknown flag bits 0x%x' % (flags & ~MESSAGE_FLAGS))
        payload = inflate(payload, max_size)
        if payload.__class__ is Rejection:
            return payload
    if loads.__class__ is StructDecoder:
        fields = loads.fields(payload)
        if fields is not None:
            return fields
        loads = fast_loads   # refused: the reference decides, and says why
    try:
        text = payload.decode('utf-8')
    except UnicodeDecodeError as exc:
        return Rejection(BAD_UTF8, 'invalid UTF-8 at byte %d' % exc.start)
    try:
        if loads is fast_loads:
            try:
                data, end = _scan_once(text, 0)
            except StopIteration:
                data = end = None   # whitespace first, or no JSON value: fast_loads says
            if end != len(text):
                data = fast_loads(text)
        else:
            data = loads(text)
    except (ValueError, RecursionError) as exc:
        data = without_fields(text)   # fields too deep or too big for the decoder: dropped
        if data is None:
            return Rejection(BAD_JSON, 'invalid JSON: %s' % str(exc)[:80])
        fields = _rejection_for(data)
        if fields.__class__ is tuple:
            fields = fields[:7] + ('fields the decoder cannot take (%s)' % str(exc)[:60],)
        return fields
    if data.__class__ is dict:
        try:
            version, app_id, module = data['version'], data['app_id'], data['module']
            stamp, nsecs, hostname, body = (data['stamp'], data['nsecs'], data['hostname'],
                                            data['body'])
        except KeyError:
            return _rejection_for(data)
        sig = data.get('signature')
        if (version == VERSION and version.__class__ is int and app_id.__class__ is str
                and module.__class__ is str and hostname.__class__ is str
                and body.__class__ is str and stamp.__class__ is int
                and nsecs.__class__ is int and _INT_MIN <= stamp < _INT_LIMIT
                and _INT_MIN <= nsecs < _INT_LIMIT and (sig is None or sig.__class__ is str)
                and len(hostname) <= MAX_HOSTNAME_CHARS and len(module) <= MAX_MODULE_CHARS):
            fields = data.get('fields')
            if fields is not None:
                fields = sender_fields(fields)
            return app_id, module, stamp, nsecs, hostname, body, sig, fields
    return _rejection_for(data)


def message_from_object(data):
    """Check the shape and types of a decoded JSON object; return a Message or a Rejection."""
    fields = _rejection_for(data)
    if fields.__class__ is Rejection:
        return fields
    return Message(*fields)


def _rejection_for(data):
    """Check a decoded object field by field: the fields tuple of ``decode_fields``, or a
    Rejection that says exactly what is wrong."""
    if type(data) is not dict:
        return Rejection(BAD_FIELDS, 'payload is not a JSON object')
    try:
        if data['version'] != VERSION or type(data['version']) is not int:
            return Rejection(BAD_FIELDS, 'unsupported protocol version %s'
                             % _shorten(repr(data['version'])))
        for name in _STRING_FIELDS:
            if type(data[name]) is not str:
                return Rejection(BAD_FIELDS, 'field %s is not a string' % name)
        for name in _INT_FIELDS:
            value = data[name]
            if type(value) is not int or not _INT_MIN <= value < _INT_LIMIT:
                return Rejection(BAD_FIELDS, 'field %s is not an integer' % name)
    except KeyError as exc:
        return Rejection(BAD_FIELDS, 'missing field %s' % exc.args[0])
    sig = data.get('signature')
    if sig is not None and type(sig) is not str:
        return Rejection(BAD_FIELDS, 'field signature is not a string')
    if len(data['hostname']) > MAX_HOSTNAME_CHARS:
        return Rejection(BAD_FIELDS, 'hostname longer than %d characters' % MAX_HOSTNAME_CHARS)
    if len(data['module']) > MAX_MODULE_CHARS:
        return Rejection(BAD_FIELDS, 'module name longer than %d characters' % MAX_MODULE_CHARS)
    fields = data.get('fields')
    return (data['app_id'], data['module'], data['stamp'], data['nsecs'], data['hostname'],
            data['body'], sig, None if fields is None else sender_fields(fields))


# The optional ``fields`` object (an extension: a record's structure, which a 0.7 daemon
# ignores like any unknown key; v1 signatures do not cover it).  Its size is already bounded
# by max_message_size; these bound what a JSON line holds of it.
MAX_FIELDS = 100            # keys of the object
MAX_FIELD_NAME_CHARS = 128  # a key becomes a JSON key in the line, and --where's KEY
MAX_FIELD_DEPTH = 8         # nesting below the object (extra={'a': {'b': [...]}})


def sender_fields(value):
    """Check a message's ``fields`` value: return it (a dict) when it is an object within
    the bounds above, else a sentence saying why it is dropped (str).  Never rejects the
    message: the body is what the sender signed and what the text line holds."""
    if value.__class__ is not dict:
        return 'fields is not a JSON object'
    if len(value) > MAX_FIELDS:
        return 'more than %d fields' % MAX_FIELDS
    for key, item in value.items():
        if len(key) > MAX_FIELD_NAME_CHARS:
            return 'a field name is longer than %d characters' % MAX_FIELD_NAME_CHARS
        if item.__class__ in (dict, list) and _depth(item, 1) > MAX_FIELD_DEPTH:
            return 'fields nested deeper than %d' % MAX_FIELD_DEPTH
    return value


def _depth(value, level):
    """How deep ``value`` (a dict or list at ``level``) nests; stops past the limit."""
    if level > MAX_FIELD_DEPTH:
        return level
    items = value.values() if value.__class__ is dict else value
    deepest = level
    for item in items:
        if item.__class__ in (dict, list):
            deepest = max(deepest, _depth(item, level + 1))
            if deepest > MAX_FIELD_DEPTH:
                break
    return deepest


def _shorten(text, limit=60):
    """Peer-supplied text cut to ``limit`` characters for a log line."""
    return text if len(text) <= limit else text[:limit] + '...'


def decode_session(payload):
    """Decode a session frame's payload into (session id, first sequence number) or a Rejection."""
    try:
        data = json.loads(payload.decode('utf-8'))
        sid, first = data['session'], data['first']
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError):
        return Rejection(BAD_FIELDS, 'malformed session frame')
    if type(sid) is not str or not 0 < len(sid) <= 64 or type(first) is not int or first < 1:
        return Rejection(BAD_FIELDS, 'malformed session frame')
    return sid, first


def check_signature(message, signer):
    """Return None when ``message`` is validly signed, else a Rejection.

    ``signer`` is a ``loghog.wire.Signer`` for the facility's secret (or the secret itself).
    """
    if not isinstance(signer, Signer):
        signer = Signer(signer)
    return verify_signature(signer, message.signature, message.app_id, message.module,
                            message.stamp, message.nsecs, message.body)


def verify_signature(signer, signature, app_id, module, stamp, nsecs, body):
    """``check_signature`` on a message's fields; ``signer`` is a ``loghog.wire.Signer``."""
    if not signature:
        return Rejection(MISSING_SIGNATURE, 'message is not signed')
    try:
        expected = signer.sign(app_id, module, stamp, nsecs, body)
    except UnicodeEncodeError:
        # JSON can carry lone surrogates ("\ud800"), which have no UTF-8 form: no
        # client can have signed such a message.
        return Rejection(BAD_SIGNATURE, 'message holds unpaired surrogates and cannot be signed')
    given = signature.lower()
    # compare_digest takes str when both are ASCII; a signature that is not cannot match.
    if not given.isascii() or not hmac.compare_digest(expected, given):
        return Rejection(BAD_SIGNATURE, 'signature does not match')
    return None
