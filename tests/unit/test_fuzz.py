"""Fuzzing the decoder, the parser and the ingest path with hypothesis, for a bounded time.

Whatever a peer sends, the pure code returns a message or a rejection (never raises), splits
a stream the same way however it arrives, never inflates more than max_message_size, and
never names a file outside the app's folder.  Each test runs a fixed number of examples
(a few seconds in all); a failure prints the smallest input that shows it.
"""

import json
import os
import time
import zlib

from hypothesis import HealthCheck, given, settings, strategies as st

from loghog.wire import (FLAG_ACK, FLAG_SESSION, FLAG_ZLIB, HEADER, KNOWN_FLAGS, make_frame,
                         signature)
from loghogd import protocol
from loghogd.binding import BoundSockets
from loghogd.config import load_config
from loghogd.facilities import load_facilities
from loghogd.protocol import (FrameSplitter, Message, Rejection, check_signature, decode_message,
                              decode_session, inflate)
from loghogd.server import Server
from loghogd.stats import Counters
from loghogd.writer import Writer

MAX = 4096
LOGDIR = '/nonexistent/loghogd-fuzz'
REASONS = set(protocol.REASONS)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
FEW = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))

json_scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
                | st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)
names = st.sampled_from(['app', 'perhost', 'signed', 'nobody', '', '../x', 'app/..'])
hosts = st.text(max_size=40) | st.sampled_from(['../../etc/cron.d/x', '/', '..', '.', '\x00',
                                                'a/b', 'x' * 300, '-rf', '.hidden'])
modules = st.text(max_size=30) | st.sampled_from(['root', 'web.requests', '../../etc', '/', '.'])


def good_message(**overrides):
    data = {'version': 1, 'app_id': 'app', 'module': 'root', 'stamp': 1, 'nsecs': 0,
            'hostname': 'h', 'body': 'b'}
    data.update(overrides)
    return data


@st.composite
def messages(draw):
    """Mostly well-formed message objects, with fields replaced, dropped or added at random."""
    data = good_message(app_id=draw(names), module=draw(modules), hostname=draw(hosts),
                        body=draw(st.text(max_size=50)),
                        stamp=draw(st.integers(-(1 << 64), 1 << 64)),
                        nsecs=draw(st.integers(-(1 << 64), 1 << 64)))
    for key in draw(st.lists(st.sampled_from(sorted(data) + ['signature', 'extra']), max_size=3)):
        action = draw(st.sampled_from(['replace', 'drop']))
        if action == 'drop':
            data.pop(key, None)
        else:
            data[key] = draw(json_values)
    if draw(st.booleans()) and type(data.get('body')) is str and type(data.get('module')) is str:
        try:
            data['signature'] = signature(draw(st.sampled_from(['s3cret', 'other'])),
                                          str(data.get('app_id')), data['module'],
                                          data.get('stamp'), data.get('nsecs'), data['body'])
        except UnicodeEncodeError:
            pass
    return data


@st.composite
def frames(draw):
    """One frame's bytes: a message (maybe compressed) or arbitrary bytes, maybe mislabelled."""
    kind = draw(st.sampled_from(['message', 'bytes', 'zlib-bytes']))
    flags = draw(st.sampled_from([0, 1, 2, 3, 4, 8, 0x80000000]) | st.integers(0, 2 ** 32 - 1))
    if kind == 'message':
        payload = json.dumps(draw(messages())).encode('utf-8', 'surrogatepass')
        if flags & FLAG_ZLIB:
            payload = zlib.compress(payload)
    elif kind == 'zlib-bytes':
        payload = zlib.compress(draw(st.binary(max_size=200)))[:draw(st.integers(0, 300))]
    else:
        payload = draw(st.binary(max_size=200))
    return make_frame(payload, flags=flags)


def check_result(result):
    assert result.__class__ in (Message, Rejection), result
    if result.__class__ is Rejection:
        assert result.reason in REASONS and isinstance(result.detail, str)
        assert len(result.detail) < 300, result.detail   # goes into the daemon's log
    return result


def split(data, cuts):
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0] + points, points + [len(data)])]


def feed_all(pieces, max_size=MAX):
    splitter = FrameSplitter(max_size)
    out = []
    for piece in pieces:
        for item in splitter.feed(memoryview(piece)):
            out.append(item.reason if item.__class__ is Rejection else (item[0], bytes(item[1])))
    return out, splitter.lost, splitter.is_mid_frame


@FUZZ
@given(st.lists(frames(), max_size=6), st.binary(max_size=30), st.lists(st.integers(0, 10 ** 6),
                                                                     max_size=12))
def test_a_stream_splits_the_same_however_it_arrives(frame_list, tail, cuts):
    data = b''.join(frame_list) + tail
    whole = feed_all([data])
    assert feed_all(split(data, cuts)) == whole
    assert feed_all([data[i:i + 1] for i in range(len(data))]) == whole


@FUZZ
@given(st.binary(max_size=300), st.lists(st.integers(0, 10 ** 6), max_size=8))
def test_garbage_streams_never_raise(data, cuts):
    out, lost, _ = feed_all(split(data, cuts))
    for item in out:
        if isinstance(item, str):
            assert item in (protocol.TOO_LARGE, protocol.LOST_FRAMING)
        else:
            check_result(decode_message(item[0], item[1], MAX))
    assert not lost or out[-1] == protocol.LOST_FRAMING


@FUZZ
@given(st.integers(0, 2 ** 32 - 1), st.binary(max_size=400))
def test_any_payload_decodes_to_a_message_or_a_rejection(flags, payload):
    check_result(decode_message(flags, payload, MAX))


@FUZZ
@given(messages(), st.sampled_from([0, 1, 2, 3]))
def test_any_json_object_is_checked_field_by_field(data, flags):
    payload = json.dumps(data).encode('utf-8', 'surrogatepass')
    if flags & FLAG_ZLIB:
        payload = zlib.compress(payload)
    result = check_result(decode_message(flags, payload, 1 << 20))
    if result.__class__ is Message:
        assert data['version'] == 1 and type(data['version']) is int
        for name in ('app_id', 'module', 'hostname', 'body'):
            assert type(data[name]) is str
        for name in ('stamp', 'nsecs'):
            assert type(data[name]) is int and -(1 << 63) <= data[name] < (1 << 63)
        assert len(data['hostname']) <= protocol.MAX_HOSTNAME_CHARS
        assert len(data['module']) <= protocol.MAX_MODULE_CHARS


@FEW
@given(json_values)
def test_any_json_value_is_a_message_or_a_rejection(value):
    check_result(decode_message(0, json.dumps(value).encode('utf-8', 'surrogatepass'), MAX))


@FUZZ
@given(st.binary(max_size=2000), st.integers(0, 5000))
def test_inflate_never_gives_more_than_the_limit(data, max_size):
    for payload in (zlib.compress(data), zlib.compress(data)[:len(data) // 2], data):
        result = inflate(payload, max_size)
        if result.__class__ is not Rejection:
            assert len(result) <= max_size


@FUZZ
@given(st.text(), st.text(), st.text(), st.text(), st.integers(), st.integers())
def test_signature_checks_never_raise(secret, app, module, body, stamp, nsecs):
    message = Message(app, module, stamp, nsecs, 'h', body, signature=body[:40] or None)
    result = check_signature(message, secret or 'x')
    assert result is None or result.reason in (protocol.MISSING_SIGNATURE, protocol.BAD_SIGNATURE)


class _Peer:
    peer = '127.0.0.1:1'
    peer_host = '127.0.0.1'
    identity = ('127.0.0.1', None)
    kind = 'tcp'
    acks = None
    frames_before = 0
    closed = False

    def send(self, data):
        pass


def _ingest_harness():
    facilities = os.path.join(os.path.dirname(__file__), '..', 'cases', 'facilities.conf')
    counters = Counters()
    writer = Writer(LOGDIR, counters)
    server = Server(load_config(None), load_facilities(facilities), writer, counters, None,
                    BoundSockets())
    return server, writer, counters


@FUZZ
@given(st.lists(frames(), min_size=1, max_size=8))
def test_ingest_never_raises_and_never_names_a_file_outside_the_app_folder(frame_list):
    server, writer, counters = _ingest_harness()
    out, _, _ = feed_all([b''.join(frame_list)], max_size=server.max_message_size)
    items = [protocol.Rejection(item, 'x') if isinstance(item, str) else item for item in out]
    server.ingest(items, _Peer())
    # On an acknowledged connection (from its first frame with FLAG_ACK), session frames
    # carry no message: they are neither written nor rejected.
    sessions, acked = 0, False
    for item in items:
        if item.__class__ is not Rejection:
            acked = acked or bool(item[0] & FLAG_ACK)
            sessions += (acked and item[0] & FLAG_SESSION and not item[0] & ~KNOWN_FLAGS
                         and decode_session(item[1]).__class__ is not Rejection)
    written = sum(len(f.pending) for f in writer.files.values())
    # A second session frame may number later messages as ones written before: skipped.
    skipped = counters.events['duplicates_skipped']
    assert written + sum(counters.rejected.values()) + sessions + skipped == len(items)
    for log_file in writer.files.values():
        relative = os.path.relpath(log_file.path, LOGDIR)
        app, name = relative.split(os.sep)
        assert app in ('app', 'perhost', 'signed')
        assert name.endswith('.log') and not name.startswith(('.', '-'))
        assert os.path.normpath(log_file.path) == log_file.path
        for line in log_file.pending:
            host = line.split(' - ', 2)[1]
            assert line.endswith('\n') and '\n' not in host and '\r' not in host


def test_a_frame_dripped_one_byte_per_read_costs_linear_time():
    """Half a megabyte a byte at a time: a quadratic buffer would take tens of seconds."""
    data = HEADER.pack(512 * 1024, 0) + b'x' * (512 * 1024)
    splitter = FrameSplitter(1024 * 1024)
    view = memoryview(data)
    started = time.perf_counter()
    frames_out = []
    for i in range(len(data)):
        frames_out += splitter.feed(view[i:i + 1])
    assert len(frames_out) == 1 and len(frames_out[0][1]) == 512 * 1024
    assert time.perf_counter() - started < 8
