"""The syslog shapes of tests/cases/syslog/shapes.json, through the daemon's real path:
framing (whole and in small pieces) or the datagram cut, parsing, routing by the claims of
that folder's facilities.conf, line formatting and the Writer's file naming."""

import datetime
import json
import os
import time

import pytest

from loghogd.binding import BoundSockets
from loghogd.config import load_config
from loghogd.facilities import load_facilities
from loghogd.server import Server, format_receive_time
from loghogd.stats import Counters
from loghogd.syslog_framing import SyslogFrameSplitter
from loghogd.syslog_listeners import SyslogDatagramListener, SyslogReceiver
from loghogd.syslog_parse import parse_message
from loghogd.writer import Writer

HERE = os.path.join(os.path.dirname(__file__), '..', 'cases', 'syslog')
CASES = json.load(open(os.path.join(HERE, 'shapes.json')))
LOGDIR = '/nonexistent/logdir'
RECV_BUFFER = 256 * 1024


class Peer:
    def __init__(self, host, listener):
        self.peer = '%s:1' % host
        self.peer_host = host
        self.listener = listener
        self.kind = 'syslog_' + listener
        self.has_client_cert = False


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    monkeypatch.setenv('TZ', 'UTC')
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def piece_bytes(pieces):
    data = b''
    for piece in pieces:
        raw = piece['text'].encode('utf-8') if 'text' in piece else bytes.fromhex(piece['hex'])
        data += raw * piece.get('repeat', 1)
    return data


def make_receiver(case):
    counters = Counters()
    writer = Writer(LOGDIR, counters)
    server = Server(load_config(None), load_facilities(os.path.join(HERE, 'facilities.conf')),
                    writer, counters, None, BoundSockets())
    now = datetime.datetime.fromisoformat(case['now'].replace('Z', '+00:00')).timestamp()
    server.now = now
    server.line_prefix = format_receive_time(now)
    return server, SyslogReceiver(server, case.get('default_app', 'catchall'))


def outcome(server, rejected_before):
    """The written lines in order of writing, with rejections (by reason) in between is
    not knowable from the writer; so: lines per file, and rejections counted."""
    prefix = server.line_prefix
    files = {}
    for log_file in server.writer.dirty:
        lines = [line[len(prefix):-1] for line in log_file.pending]
        assert all(line.startswith(prefix) for line in log_file.pending)
        files[os.path.relpath(log_file.path, LOGDIR)] = lines
    return files, dict(server.counters.rejected)


def expected(case):
    files, rejected = {}, {}
    for item in case['expect']:
        if 'reject' in item:
            rejected[item['reject']] = rejected.get(item['reject'], 0) + 1
        else:
            files.setdefault(item['path'], []).append(item['line'])
    return files, rejected


def check_counters(case, server):
    for name, value in case.get('counters', {}).items():
        assert server.counters.events[name] == value, name


def run_stream(case, chunk=None):
    server, receiver = make_receiver(case)
    data = piece_bytes(case['stream'])
    splitter = SyslogFrameSplitter(server.max_message_size)
    peer = Peer(case.get('peer', '127.0.0.1'), 'tcp')
    step = chunk or len(data)
    for start in range(0, len(data), step):
        frames = splitter.feed(memoryview(data)[start:start + step])
        if frames:
            receiver.ingest(frames, peer)
    rest = splitter.take_rest()   # the peer closes: what it did not end is a message too
    if rest is not None:
        receiver.ingest([rest], peer)
    assert not splitter.is_mid_frame
    return server


def run_datagrams(case):
    server, receiver = make_receiver(case)
    peer = Peer(case.get('peer', '127.0.0.1'), 'udp')
    buffer = bytearray(RECV_BUFFER)
    for pieces in case['datagrams']:
        data = piece_bytes(pieces)
        buffer[:len(data)] = data
        receiver.ingest([SyslogDatagramListener.frame(buffer, len(data),
                                                      server.max_message_size)], peer)
    return server


STREAM_CASES = [c for c in CASES if 'stream' in c]
DATAGRAM_CASES = [c for c in CASES if 'datagrams' in c]


@pytest.mark.parametrize('case', STREAM_CASES, ids=[c['name'] for c in STREAM_CASES])
def test_stream_case(case):
    for chunk in (None, 7):
        server = run_stream(case, chunk)
        assert outcome(server, {}) == expected(case)
        check_counters(case, server)
        assert server.counters.events['syslog_messages_tcp'] == len(case['expect'])


@pytest.mark.parametrize('case', DATAGRAM_CASES, ids=[c['name'] for c in DATAGRAM_CASES])
def test_datagram_case(case):
    server = run_datagrams(case)
    assert outcome(server, {}) == expected(case)
    check_counters(case, server)
    assert server.counters.events['syslog_messages_udp'] == len(case['datagrams'])


def iso(stamp):
    if stamp is None:
        return None
    micros = round(stamp * 1e6)
    return datetime.datetime.fromtimestamp(micros // 10**6, datetime.timezone.utc).strftime(
        '%Y-%m-%dT%H:%M:%S') + '.%06dZ' % (micros % 10**6)


FIELD_CASES = [c for c in CASES if 'fields' in c]


@pytest.mark.parametrize('case', FIELD_CASES, ids=[c['name'] for c in FIELD_CASES])
def test_parsed_fields(case):
    now = datetime.datetime.fromisoformat(case['now'].replace('Z', '+00:00')).timestamp()
    messages = case['datagrams'] if 'datagrams' in case else [case['stream']]
    for pieces, fields in zip(messages, case['fields']):
        message = parse_message(piece_bytes(pieces), now).fields()
        message['timestamp'] = iso(message['timestamp'])
        assert {key: message[key] for key in fields} == fields


def test_a_mixed_batch_lands_line_by_line_where_it_belongs():
    """What the receiver remembers from one message to the next (program, facility, host,
    file) never carries a line into the wrong file or gives it the wrong host."""
    case = {'now': '2026-12-05T12:00:00Z'}
    server, receiver = make_receiver(case)
    batch = [b'<14>1 - h1 myapp - - - one', b'<14>1 - h1 nginx - - - two',
             b'<14>1 - h2 nginx - - - three', b'<14>1 - h2 nobody - - - four',
             b'<14>1 - h2 perhost - - - five', b'<14>1 - h3 perhost - - - six',
             b'<14>1 - h3 signedprog - - - seven', b'<14>1 - h3 perhost - - - eight',
             b'<14>1 - bad\xffhost myapp - - - nine', b'<14>1 - h1 myapp - - - ten']
    receiver.ingest([(data, False) for data in batch], Peer('10.0.0.9', 'udp'))
    files, rejected = outcome(server, {})
    assert files == {
        'web/root.log': ['h1 - myapp user.info: one', 'h1 - myapp user.info: ten'],
        'web/nginx.log': ['h1 - nginx user.info: two', 'h2 - nginx user.info: three'],
        # A HOSTNAME that is not ASCII: not an RFC 5424 header, so all of it is text.
        'catchall/root.log': ['h2 - nobody user.info: four',
                              '10.0.0.9 - - user.info: 1 - bad\ufffdhost myapp - - - nine'],
        'perhost/h2-root.log': ['h2 - perhost user.info: five'],
        'perhost/h3-root.log': ['h3 - perhost user.info: six', 'h3 - perhost user.info: eight'],
    }
    assert rejected == {'syslog_needs_client_cert': 1}
    assert server.counters.accepted[('perhost', 'root')] == 3
