"""Fuzzing the syslog parser, framing and ingest with hypothesis, for a bounded time.

Whatever a sender sends: the parser returns a message or a typed rejection (never raises),
a line is one record (no bare line break, no control character), the framing splits a
stream the same way however it arrives and never yields more than max_size bytes, and a
bad message costs only itself: the good message after it arrives whole.
"""

import os

from hypothesis import HealthCheck, given, settings, strategies as st

from loghogd.binding import BoundSockets
from loghogd.config import load_config
from loghogd.facilities import load_facilities
from loghogd.lines import CONTINUATION, escape_controls
from loghogd.protocol import Rejection
from loghogd.server import Server
from loghogd.stats import Counters
from loghogd.syslog_framing import SyslogFrameSplitter
from loghogd.syslog_listeners import SyslogReceiver
from loghogd.syslog_parse import REASONS, SyslogMessage, line_text, parse_message
from loghogd.writer import Writer

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
FEW = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
NOW = 1796479200.0   # 2026-12-05 12:00 UTC
LOGDIR = '/nonexistent/loghogd-fuzz'
FACILITIES = os.path.join(os.path.dirname(__file__), '..', 'cases', 'syslog', 'facilities.conf')

# Pieces real messages are made of, shuffled into near-misses.
PIECES = [b'<', b'>', b'<13>', b'<191>', b'<192>', b'<0>', b'1 ', b'1', b' ', b'-', b'- ',
          b'2026-12-05T11:00:00Z', b'2026-12-05T11:00:00.123456+01:00', b'Dec  5 11:00:00',
          b'Feb 30 25:61:61', b'host', b'2001:db8::1', b'myapp', b'myapp:', b'myapp[12]:',
          b'[', b']', b'"', b'\\', b'=', b'[id@1 a="b\\"c\\]d"]', b'[x', b'\xef\xbb\xbf',
          b'\xff', b'\xc3', b'\n', b'\r\n', b'\x00', b'\t', b'\x1b', b'msg', b'\xe2\x80\xa8']
near_misses = st.lists(st.sampled_from(PIECES) | st.binary(max_size=8), max_size=25).map(b''.join)
any_bytes = st.binary(max_size=300) | near_misses


def check_message(message):
    if message.__class__ is Rejection:
        assert message.reason in REASONS
        return
    assert isinstance(message, SyslogMessage)
    assert 0 <= message.pri <= 191
    for name in ('hostname', 'app_name', 'procid', 'msgid', 'structured_data'):
        value = getattr(message, name)
        assert value is None or (isinstance(value, str) and value)
    assert isinstance(message.message, str)
    assert message.timestamp is None or isinstance(message.timestamp, float)
    text = line_text(message, message.app_name or '-')
    # One record: every inner line break is a marked continuation ...
    assert all(part.startswith(CONTINUATION) for part in text.split('\n')[1:])
    # ... and nothing that lines.py escapes is left raw.
    assert escape_controls(text.replace('\n' + CONTINUATION, '')) == text.replace('\n' + CONTINUATION, '')


@FUZZ
@given(any_bytes)
def test_the_parser_never_raises(data):
    check_message(parse_message(data, NOW))


@FUZZ
@given(st.lists(any_bytes, max_size=6), st.lists(st.integers(1, 50), min_size=1, max_size=30))
def test_framing_is_the_same_however_the_stream_arrives(frames, cuts):
    stream = b''.join(frames)
    whole = SyslogFrameSplitter(64).feed(stream)
    splitter = SyslogFrameSplitter(64)
    pieces, start, index = [], 0, 0
    while start < len(stream):
        step = cuts[index % len(cuts)]
        pieces += splitter.feed(stream[start:start + step])
        start += step
        index += 1
    assert pieces == whole
    assert all(len(data) <= 64 for data, _ in whole)


SENTINEL = b'<14>1 - h myapp - - - the sentinel'


@FUZZ
@given(any_bytes, st.sampled_from(['lf', 'nul', 'counted']))
def test_a_bad_message_costs_only_itself(garbage, framing):
    """Whatever one frame holds, the next frame (the sentinel) arrives whole."""
    if framing == 'counted':
        stream = b'%d %s%d %s' % (len(garbage), garbage, len(SENTINEL), SENTINEL)
    else:
        # RFC 6587: a frame that starts with a digit is octet-counted; garbage that starts
        # so is a count, not this framing's message (real messages start with '<').
        if garbage[:1].isdigit():
            garbage = b'<' + garbage
        delimiter = b'\n' if framing == 'lf' else b'\x00'
        stream = garbage.replace(b'\n', b' ').replace(b'\x00', b' ') + delimiter \
            + SENTINEL + delimiter
    frames = SyslogFrameSplitter(128).feed(stream)
    assert frames[-1] == (SENTINEL, False)
    last = parse_message(frames[-1][0], NOW)
    assert (last.app_name, last.message) == ('myapp', 'the sentinel')


@FEW
@given(st.lists(any_bytes, max_size=20))
def test_ingest_never_raises_and_keeps_files_inside_their_app(datas):
    counters = Counters()
    writer = Writer(LOGDIR, counters)
    server = Server(load_config(None), load_facilities(FACILITIES), writer, counters, None,
                    BoundSockets())

    class Peer:
        peer, peer_host, listener, kind, has_client_cert = '10.0.0.1:1', '10.0.0.1', 'udp', \
            'syslog_udp', False
    SyslogReceiver(server, 'catchall').ingest([(data, False) for data in datas], Peer())
    total = sum(len(f.pending) for f in writer.dirty) + sum(counters.rejected.values())
    assert total == len(datas)
    for log_file in writer.dirty:
        relative = os.path.relpath(log_file.path, LOGDIR)
        assert not relative.startswith('..') and relative.count('/') == 1
        assert all(line.endswith('\n') and line.count('\n') == line.count('\n' + CONTINUATION) + 1
                   for line in log_file.pending)
