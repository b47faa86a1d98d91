import json
import struct
import zlib

import pytest
from hypothesis import given, settings, strategies as st

from loghog.wire import encode_message, make_frame, signature
from loghogd import protocol
from loghogd.protocol import FrameSplitter, Message, Rejection, check_signature, decode_message

MAX = 65536
# Every JSON decoder installed here ([server] json_decoder): each must decide every
# message as the standard library does (the reference).
DECODER_NAMES = protocol.installed_decoders()
DECODERS = [protocol.choose_loads(name) for name in DECODER_NAMES]
each_decoder = pytest.mark.parametrize('loads', DECODERS, ids=DECODER_NAMES)


def payload(**overrides):
    data = {'version': 1, 'app_id': 'app', 'module': 'web', 'stamp': 1, 'nsecs': 2,
            'hostname': 'h', 'body': 'hello'}
    data.update(overrides)
    return json.dumps(data).encode()


def decode(data, flags=0, loads=protocol.fast_loads):
    return decode_message(flags, data, MAX, loads)


def reason(result):
    assert isinstance(result, Rejection), result
    return result.reason


def original_client_frame(app, module, body, secret=None, compress=False):
    """Bytes exactly as loghog 0.7's LoghogHandler._encode built them (py2 json.dumps defaults)."""
    data = {'version': 1, 'app_id': app, 'module': module, 'stamp': 1700000000,
            'nsecs': int(123.456 * 10 ** 6), 'hostname': 'web1', 'body': body}
    if secret:
        fields = ['app_id', 'module', 'stamp', 'nsecs', 'body']
        hashable = ''.join(str(data[f]) for f in fields).encode('utf-8')
        import hashlib, hmac
        data['signature'] = hmac.new(secret.encode(), hashable, hashlib.md5).hexdigest()
    body_bytes = json.dumps(data).encode('ascii')
    if compress:
        body_bytes = zlib.compress(body_bytes)
    size = len(body_bytes)
    return struct.pack('!LL %ds' % size, size, 1 if compress else 0, body_bytes)


@each_decoder
def test_original_client_bytes_decode(loads):
    data = original_client_frame('my-first-app', 'root', 'INFO - Hello w\u00f6rld!', secret='k')
    (flags, body), = FrameSplitter(MAX).feed(data)
    message = decode_message(flags, body, MAX, loads)
    assert (message.app_id, message.module, message.body) == ('my-first-app', 'root', 'INFO - Hello w\u00f6rld!')
    assert check_signature(message, 'k') is None
    assert reason(check_signature(message, 'other')) == protocol.BAD_SIGNATURE


@each_decoder
def test_original_client_compressed_bytes_decode(loads):
    data = original_client_frame('a', 'x.y', 'zipped ' * 50, compress=True)
    (flags, body), = FrameSplitter(MAX).feed(data)
    assert decode_message(flags, body, MAX, loads).body == 'zipped ' * 50


def test_our_encoder_matches_the_protocol_signature_rule():
    assert signature('k', 'a', 'm', 1, 2, 'b') == __import__('hmac').new(
        b'k', b'am12b', __import__('hashlib').md5).hexdigest()


frames_strategy = st.lists(st.tuples(st.text(max_size=50), st.booleans()), min_size=1, max_size=20)


@settings(max_examples=200, deadline=None)
@given(frames_strategy, st.data())
def test_any_split_of_a_stream_yields_the_same_messages(items, data):
    stream = b''.join(encode_message('a', 'm', 1, 2, 'h', body, compress=z) for body, z in items)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=30)))
    splitter = FrameSplitter(MAX)
    frames = []
    start = 0
    for cut in cuts + [len(stream)]:
        frames += splitter.feed(stream[start:cut])
        start = cut
    assert [decode_message(f, p, MAX).body for f, p in frames] == [body for body, _ in items]
    assert not splitter.is_mid_frame


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_never_raises(blob):
    splitter = FrameSplitter(1024)
    for item in splitter.feed(blob):
        if not isinstance(item, Rejection):
            results = [decode_message(item[0], item[1], 1024, loads) for loads in DECODERS]
            assert isinstance(results[0], (Message, Rejection))
            assert [repr(r) for r in results[1:]] == [repr(results[0])] * (len(results) - 1)


def test_oversized_frame_is_skipped_and_the_stream_continues():
    big = make_frame(payload(body='x' * 200))
    good = make_frame(payload(body='ok'))
    splitter = FrameSplitter(150)
    items = splitter.feed(big[:50]) + splitter.feed(big[50:] + good)
    assert reason(items[0]) == protocol.TOO_LARGE
    assert decode_message(*items[1], 150).body == 'ok' and len(items) == 2
    assert not splitter.lost


def test_absurd_size_loses_the_framing():
    splitter = FrameSplitter(MAX)
    items = splitter.feed(b'GET / HTTP/1.1\r\nHost: x\r\n\r\n')
    assert reason(items[0]) == protocol.LOST_FRAMING
    assert splitter.lost and splitter.feed(make_frame(payload())) == []


def test_zlib_bomb_is_refused_without_inflating_it():
    bomb = zlib.compress(b'{' + b' ' * (200 * 1024 * 1024) + b'}', 9)
    assert len(bomb) < 300 * 1024
    assert reason(decode(bomb, flags=1)) == protocol.TOO_LARGE


def test_truncated_zlib():
    data = zlib.compress(payload())
    assert reason(decode(data[:-6], flags=1)) == protocol.BAD_ZLIB
    assert reason(decode(b'not zlib', flags=1)) == protocol.BAD_ZLIB


def test_unknown_flag_bits():
    assert reason(decode(payload(), flags=0x80)) == protocol.BAD_FLAGS


@each_decoder
def test_invalid_utf8_and_json(loads):
    assert reason(decode(b'{"body": "\xff"}', loads=loads)) == protocol.BAD_UTF8
    assert reason(decode(b'{"body": ', loads=loads)) == protocol.BAD_JSON
    assert reason(decode(b'[' * 100000 + b']' * 100000, loads=loads)) in (protocol.BAD_JSON, protocol.BAD_FIELDS)
    assert reason(decode(b'{"stamp": ' + b'9' * 5000 + b'}', loads=loads)) == protocol.BAD_JSON


@each_decoder
def test_wrong_shapes_and_types(loads):
    assert reason(decode(b'[]', loads=loads)) == protocol.BAD_FIELDS
    assert reason(decode(payload(stamp='1'), loads=loads)) == protocol.BAD_FIELDS
    assert reason(decode(payload(stamp=2 ** 80), loads=loads)) == protocol.BAD_FIELDS
    assert reason(decode(payload(stamp=True), loads=loads)) == protocol.BAD_FIELDS
    assert reason(decode(payload(body={'nested': 1}), loads=loads)) == protocol.BAD_FIELDS
    assert reason(decode(payload(version=2), loads=loads)) == protocol.BAD_FIELDS
    assert reason(decode(payload(signature=5), loads=loads)) == protocol.BAD_FIELDS
    data = json.loads(payload())
    del data['hostname']
    result = decode(json.dumps(data).encode(), loads=loads)
    assert reason(result) == protocol.BAD_FIELDS and 'hostname' in result.detail


@each_decoder
def test_signature_rules(loads):
    message = decode(payload(signature=signature('k', 'app', 'web', 1, 2, 'hello')), loads=loads)
    assert check_signature(message, 'k') is None
    assert reason(check_signature(decode(payload(), loads=loads), 'k')) == protocol.MISSING_SIGNATURE
    assert reason(check_signature(message, 'other-facility-secret')) == protocol.BAD_SIGNATURE
    tampered = decode(payload(body='HELLO', signature=signature('k', 'app', 'web', 1, 2, 'hello')), loads=loads)
    assert reason(check_signature(tampered, 'k')) == protocol.BAD_SIGNATURE
    weird = decode(payload(signature='\u00e9\ud800'), loads=loads)
    assert reason(check_signature(weird, 'k')) == protocol.BAD_SIGNATURE


def test_fast_loads_agrees_with_json_loads():
    from loghogd.protocol import fast_loads
    for text in ['{"a": 1}', ' {"a": [1, 2]} ', '{"a": "\\u00e9"}\n', '"x"', '12']:
        assert fast_loads(text) == json.loads(text)
    for bad in ['', '{"a": 1} x', '{"a": }', '{"a": "\x01"}', 'nul']:
        try:
            json.loads(bad)
        except ValueError:
            pass
        else:
            raise AssertionError(bad)
        try:
            fast_loads(bad)
        except ValueError:
            continue
        raise AssertionError('fast_loads accepted %r' % bad)


def test_json_decoder_choice():
    from loghogd.protocol import StructDecoder, choose_loads, fast_loads
    assert choose_loads('stdlib') is fast_loads
    auto = choose_loads('auto')
    if 'msgspec' in DECODER_NAMES:
        assert auto.__class__ is StructDecoder
    elif 'orjson' in DECODER_NAMES:
        assert auto is __import__('orjson').loads
    else:
        assert auto is fast_loads
    for name in ('msgspec', 'orjson'):
        if name not in DECODER_NAMES:
            with pytest.raises(ImportError):
                choose_loads(name)


# decode_fields is the daemon's fast path: for any JSON object (well-formed, unusual or
# broken) and any whitespace around it, it must decide exactly as the plain path does
# (fast_loads, then the field-by-field check).
NEAR_MISSES = [True, False, 1.0, '1', 0, 2**63 - 1, 2**63, -2**63, -2**63 - 1, None, '',
               'x' * 255, 'x' * 256, 'y' * 1024, 'y' * 1025, [], {},
               # Lengths are characters (msgspec checks them as it decodes, in UTF-8)
               '\u00e9' * 255, '\u00e9' * 256, '\U0001f600' * 1024, '\U0001f600' * 1025]
field_values = st.one_of(st.sampled_from(NEAR_MISSES), st.integers(-2**64, 2**64),
                         st.floats(allow_nan=False), st.text(max_size=5))
FIELD_NAMES = ('version', 'app_id', 'module', 'stamp', 'nsecs', 'hostname', 'body',
               'signature', 'extra', 'fields')
GOOD = {'version': 1, 'app_id': 'app', 'module': 'web', 'stamp': 1, 'nsecs': 2,
        'hostname': 'h', 'body': 'hello'}


@st.composite
def message_objects(draw):
    data = dict(GOOD)
    for name in draw(st.lists(st.sampled_from(FIELD_NAMES), max_size=2, unique=True)):
        if draw(st.booleans()):
            data.pop(name, None)
        else:
            data[name] = draw(field_values)
    return data if draw(st.integers(0, 9)) else draw(field_values)


def reference_decision(text):
    """What the protocol (PROTOCOL.md) says of a frame's JSON text, written here from the
    rules and not from protocol.py, so that a wrong check in ``_rejection_for`` (which
    ``decode_fields`` falls back to) cannot agree with itself: the fields tuple, or the
    rejection reason."""
    try:
        data = json.loads(text)
    except ValueError:
        return protocol.BAD_JSON
    if type(data) is not dict:
        return protocol.BAD_FIELDS
    needed = ('version', 'app_id', 'module', 'stamp', 'nsecs', 'hostname', 'body')
    if any(name not in data for name in needed):
        return protocol.BAD_FIELDS
    if type(data['version']) is not int or data['version'] != 1:
        return protocol.BAD_FIELDS
    if any(type(data[name]) is not str for name in ('app_id', 'module', 'hostname', 'body')):
        return protocol.BAD_FIELDS
    if any(type(data[name]) is not int or not -2**63 <= data[name] <= 2**63 - 1
           for name in ('stamp', 'nsecs')):
        return protocol.BAD_FIELDS
    signature = data.get('signature')
    if signature is not None and type(signature) is not str:
        return protocol.BAD_FIELDS
    if len(data['hostname']) > 255 or len(data['module']) > 1024:
        return protocol.BAD_FIELDS
    fields = data.get('fields')
    if fields is not None:
        # An optional object; anything else is dropped (a reason, str), never the message.
        fields = fields if type(fields) is dict else DROPPED
    return (data['app_id'], data['module'], data['stamp'], data['nsecs'], data['hostname'],
            data['body'], signature, fields)


DROPPED = object()


def check_decode_fields(text):
    for loads in DECODERS:
        check_decode_fields_with(text, loads)


def check_decode_fields_with(text, loads):
    expected = reference_decision(text)
    result = protocol.decode_fields(0, text.encode(), MAX, loads)
    if isinstance(expected, str):
        assert isinstance(result, Rejection), (text, result)
        assert result.reason == expected, (text, result)
    else:
        if expected[-1] is DROPPED:
            assert type(result[-1]) is str, (text, result)
            expected = expected[:-1] + (result[-1],)
        assert result == expected, text
        assert [type(v) for v in result] == [type(v) for v in expected]


def test_decode_fields_decides_as_the_field_checks_for_every_near_miss():
    for name in FIELD_NAMES:
        for value in NEAR_MISSES:
            check_decode_fields(json.dumps(dict(GOOD, **{name: value})))
        bad = dict(GOOD)
        bad.pop(name, None)
        check_decode_fields(json.dumps(bad))


@settings(max_examples=400)
@given(message_objects(), st.sampled_from(['', ' ', '\n', '\t ']),
       st.sampled_from(['', ' ', '\r\n', ' x', '{}']))
def test_decode_fields_decides_as_json_loads_and_the_field_checks(obj, before, after):
    check_decode_fields(before + json.dumps(obj) + after)


# What a faster decoder takes into ``fields`` must be what the standard library makes of
# it: any JSON value (numbers of every size, floats, escapes, lone surrogates, duplicate
# keys, nesting to the edge of what the stack allows).
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-10**50, 10**50),
              st.floats(), st.text(max_size=8), st.sampled_from(['\ud800', '\udfff\ud800'])),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=4), inner, max_size=4)),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=6), json_values, max_size=5), st.booleans(),
       st.sampled_from(['', ', "fields": {"a": 1}', ', "body": "again"', ', "x": 1']))
def test_every_decoder_decides_fields_as_the_standard_library(fields, ensure_ascii, extra):
    text = json.dumps(dict(GOOD, fields=fields), ensure_ascii=ensure_ascii)[:-1] + extra + '}'
    data = text.encode('utf-8', 'surrogatepass')
    reference = protocol.decode_fields(0, data, MAX)
    for loads in DECODERS:
        assert repr(protocol.decode_fields(0, data, MAX, loads)) == repr(reference), loads


@pytest.mark.parametrize('text', [
    '9' * 4300, '-' + '9' * 4300, '9' * 4301, '1e400', '-1e400', 'NaN', 'Infinity',
    '-Infinity', '"\\ud800"', '0.1', '1.00000000000000000000001', '123456789012345678901234.5',
    '[' * 990 + ']' * 990, '[' * 996 + ']' * 996, '[' * 2000 + ']' * 2000,
    '{"a": 1, "a": 2}', '"\\u0000"'])
@each_decoder
def test_awkward_values_decode_as_with_the_standard_library(text, loads):
    for where in ('"fields": {"x": %s}', '"fields": %s', '"x": %s', '"body": %s'):
        data = ('{"version": 1, "app_id": "a", "module": "m", "stamp": 1, "nsecs": 2, '
                '"hostname": "h", "body": "b", ' + where % text + '}').encode()
        assert (repr(protocol.decode_fields(0, data, MAX, loads))
                == repr(protocol.decode_fields(0, data, MAX))), where % text[:40]


def test_auto_never_takes_orjson_and_named_orjson_leaves_its_refusals_to_the_stdlib(monkeypatch):
    """README json_decoder: auto is msgspec or the standard library (orjson turns integers
    beyond 64 bits into floats); orjson, when named, leaves what it refuses to the stdlib."""
    import sys
    import types
    fake = types.ModuleType('orjson')

    def refusing_loads(text):
        if '\\ud800' in text:
            raise ValueError('lone surrogate')   # as orjson does
        return json.loads(text)
    fake.loads = refusing_loads
    monkeypatch.setitem(sys.modules, 'orjson', fake)
    monkeypatch.setitem(sys.modules, 'msgspec', None)    # not installed
    assert protocol.choose_loads('auto') is protocol.fast_loads
    loads = protocol.choose_loads('orjson')
    assert loads('{"a": "\\ud800"}') == {'a': '\ud800'}
    assert loads('{"a": 1}') == {'a': 1}
