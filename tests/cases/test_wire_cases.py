"""Run every wire-format case in this folder (see README.md here for the format).

Each case goes through the daemon's own decoding path, without sockets or files: the
stream through ``FrameSplitter`` (whole, and one byte per read), each datagram through the
UDP listener's check, then ``Server.ingest`` with the facilities of ``facilities.conf``; the
real ``Writer`` names the file each line would go to.  Every case runs with each JSON decoder
installed ([server] json_decoder): each must give the standard library's outcome.
"""

import json
import zlib
from pathlib import Path

import pytest

from loghog.wire import FLAG_ZLIB, HEADER
from loghogd.binding import BoundSockets
from loghogd.config import load_config
from loghogd.connections import DatagramListener
from loghogd.facilities import load_facilities
from loghogd.protocol import LOST_FRAMING, FrameSplitter, choose_loads, installed_decoders
from loghogd.server import Server
from loghogd.stats import Counters
from loghogd.writer import Writer

HERE = Path(__file__).resolve().parent
CASES = sorted(HERE.glob('*.json'))
LOGDIR = '/nonexistent/loghogd-cases'   # never opened: lines are only queued
# The daemon's clock while it decodes the cases: v2 signatures carry the client's time,
# which must be within max_clock_skew (5 minutes) of it.
CASE_CLOCK = 1700000060.0


def payload_of(item):
    if 'json' in item:
        data = json.dumps(item['json']).encode('utf-8')
    elif 'text' in item:
        data = item['text'].encode('utf-8', 'surrogatepass')
    elif 'hex' in item:
        data = bytes.fromhex(item['hex'])
    elif 'parts' in item:
        data = ''.join(text * count for text, count in item['parts']).encode('utf-8')
    else:
        raise ValueError('a frame needs json, text, hex, parts or raw_hex: %r' % item)
    flags = item.get('flags', 0)
    if item.get('zlib'):
        data = zlib.compress(data)
        flags |= FLAG_ZLIB
        if item.get('truncate'):
            data = data[:-item['truncate']]
    if 'envelope_hex' in item:   # a v2 signature's envelope goes before the payload
        data = bytes.fromhex(item['envelope_hex']) + data
    return flags, data


def wire_bytes(item):
    """The bytes of one frame (or of raw_hex) as they go on the wire."""
    if 'raw_hex' in item:
        return bytes.fromhex(item['raw_hex'])
    flags, data = payload_of(item)
    return HEADER.pack(item.get('size', len(data)), flags) + data


class Peer:
    peer = '127.0.0.1:4242'
    peer_host = '127.0.0.1'
    identity = ('127.0.0.1', None)
    kind = 'case'
    acks = None
    frames_before = 0
    closed = False

    def send(self, data):
        pass


class Harness:
    """A Server with no sockets whose writer only queues lines; reports one outcome per frame."""

    def __init__(self, decoder='stdlib'):
        config = load_config(None)
        table = load_facilities(str(HERE / 'facilities.conf'))
        self.counters = Counters()
        self.writer = Writer(LOGDIR, self.counters)
        self.server = Server(config, table, self.writer, self.counters, None, BoundSockets(),
                             loads=choose_loads(decoder), clock=lambda: CASE_CLOCK)
        self.max_size = config.server.max_message_size

    def outcome(self, frame):
        """Ingest one frame (or Rejection); return {'accept': {...}} or {'reject': reason}."""
        before = dict(self.counters.rejected)
        self.server.ingest([frame], Peer())
        lines = []
        for log_file in self.writer.dirty:
            for line in log_file.pending:
                path = Path(log_file.path).relative_to(LOGDIR)
                lines.append({'path': str(path), 'line': self._strip(line)})
            log_file.pending = []
        self.writer.dirty = []
        reasons = [r for r, n in self.counters.rejected.items() if n != before.get(r, 0)]
        assert len(lines) + len(reasons) == 1, (lines, reasons)
        return {'accept': lines[0]} if lines else {'reject': reasons[0]}

    def _strip(self, line):
        prefix = self.server.line_prefix
        assert line.startswith(prefix) and line.endswith('\n'), line
        # As it will be in the file: the writer escapes what UTF-8 cannot hold.
        return line[len(prefix):-1].encode('utf-8', 'backslashreplace').decode('utf-8')

    def run_stream(self, data, read_size=None):
        splitter = FrameSplitter(self.max_size)
        outcomes = []
        reads = [data] if read_size is None else [data[i:i + read_size]
                                                  for i in range(0, len(data), read_size)]
        for chunk in reads:
            for frame in splitter.feed(memoryview(chunk)):
                outcomes.append(self.outcome(frame))
            if splitter.lost:
                assert outcomes[-1] == {'reject': LOST_FRAMING}
                break
        assert splitter.lost or not splitter.is_mid_frame, 'bytes left over at the end'
        return outcomes

    def run_datagrams(self, datagrams):
        outcomes = []
        buffer = bytearray(256 * 1024)
        for datagram in datagrams:
            buffer[:len(datagram)] = datagram
            outcomes.append(self.outcome(DatagramListener._frame(buffer, len(datagram),
                                                                 self.max_size)))
        return outcomes


def load_case(path):
    case = json.loads(path.read_text(encoding='utf-8'))
    assert case.get('about') and case.get('wire') and 'expect' in case, path.name
    return case


def params():
    for decoder in installed_decoders():
        for path in CASES:
            transports = load_case(path).get('transports', ['stream', 'datagram'])
            for transport in transports:
                yield pytest.param(path, transport, decoder,
                                   id='%s-%s-%s' % (path.stem, transport, decoder))


@pytest.mark.parametrize('path, transport, decoder', list(params()))
def test_wire_case(path, transport, decoder):
    case = load_case(path)
    frames = [wire_bytes(item) for item in case['wire']]
    if transport == 'stream':
        data = b''.join(frames)
        assert Harness(decoder).run_stream(data) == case['expect'], case['about']
        assert Harness(decoder).run_stream(data, read_size=1) == case['expect'], 'one byte per read'
    else:
        expected = case.get('expect_datagram', case['expect'])
        assert Harness(decoder).run_datagrams(frames) == expected, case['about']


def test_every_rejection_reason_has_a_case():
    from loghogd import protocol
    reasons = {outcome['reject'] for path in CASES for key in ('expect', 'expect_datagram')
               for outcome in load_case(path).get(key, []) if 'reject' in outcome}
    assert set(protocol.REASONS) | {'bad_datagram'} <= reasons
