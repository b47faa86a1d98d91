"""msgspec's path leaves a message's ``fields`` undecoded until a JSON line asks for them
(protocol.StructDecoder.lazy_fields and resolve, used by Server.ingest): whatever the
fields, every message must be decided, and every line written, exactly as the full decode
(decode_fields) and the standard library decide and write them."""

import json
import os
import tempfile

import pytest
from hypothesis import given, settings, strategies as st

from loghog.wire import make_frame
from loghogd import protocol
from loghogd.binding import BoundSockets
from loghogd.config import load_config
from loghogd.facilities import load_facilities
from loghogd.protocol import FrameSplitter
from loghogd.server import Server
from loghogd.stats import Counters
from loghogd.writer import Writer
from tests.unit.test_protocol import json_values

msgspec = pytest.importorskip('msgspec')

MAX = 65536
STRUCT = protocol.StructDecoder()
GOOD = {'version': 1, 'app_id': 'text', 'module': 'root', 'stamp': 1, 'nsecs': 2,
        'hostname': 'h', 'body': 'hello'}
AWKWARD = ['9' * 4300, '9' * 4301, '-' + '9' * 4301, '1e400', 'NaN', '"\\ud800"', '"\\u0000"',
           '"caf\u00e9"', '"\\u00e9"', '[' * 990 + ']' * 990, '[' * 2000 + ']' * 2000,
           '{"a": 1, "a": 2}', '{"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {}}}}}}}}}',
           '[1, 2,]', '{"a" 1}', '"\\x"', '01', '1 2', '[]', '"text"', 'null', 'true']


def payloads_with(fields_text):
    for where in ('"fields": %s', '"fields": {"x": %s}', '"fields": {"a": 1}, "fields": %s'):
        yield (json.dumps(GOOD)[:-1] + ', ' + where % fields_text + '}').encode(
            'utf-8', 'surrogatepass')


def check_lazy_against_full(data):
    full = protocol.decode_fields(0, data, MAX, STRUCT)
    lazy = STRUCT.lazy_fields(data)
    if lazy is None:
        return    # the daemon decodes it in full
    assert full.__class__ is tuple, (data[:80], full)
    assert lazy[:7] == full[:7]
    if lazy[7] is None:
        assert full[7] is None
        return
    resolved = STRUCT.resolve(lazy[7])
    if resolved is not None:     # else the daemon asks decode_fields
        assert repr(resolved) == repr(full[7]), data[:80]


@pytest.mark.parametrize('text', AWKWARD)
def test_awkward_fields_left_undecoded_decide_as_the_full_decode(text):
    for data in payloads_with(text):
        check_lazy_against_full(data)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=6), json_values, max_size=5), st.booleans())
def test_any_fields_left_undecoded_decide_as_the_full_decode(fields, ensure_ascii):
    text = json.dumps(fields, ensure_ascii=ensure_ascii)
    for data in payloads_with(text):
        check_lazy_against_full(data)


def test_a_payload_that_is_not_ascii_is_decoded_in_full():
    """msgspec does not check the UTF-8 of a Raw's strings: such payloads are not taken."""
    data = (json.dumps(GOOD)[:-1] + ', "fields": {"a": "\xff"}}').encode('latin-1')
    assert STRUCT.lazy_fields(data) is None
    assert protocol.decode_fields(0, data, MAX, STRUCT).reason == protocol.BAD_UTF8


def test_server_ingest_refuses_bad_utf8_in_fields_it_leaves_undecoded():
    """Server.ingest makes lazy_fields' decision inline: the same refusal."""
    data = (json.dumps(GOOD)[:-1] + ', "fields": {"a": "\xff"}}').encode('latin-1')
    for app in ('text', 'json'):
        payload = data.replace(b'"app_id": "text"', b'"app_id": "%s"' % app.encode())
        lines, accepted, rejected = ingest([payload], STRUCT)
        assert (lines, accepted, rejected) == ({}, {}, {protocol.BAD_UTF8: 1}), app


FACILITIES = ('[text]\nrotate = daily\nbackup_count = 1\n'
              '[json]\nrotate = daily\nbackup_count = 1\nformat = json\n')


class Peer:
    peer, peer_host, listener, kind, has_client_cert, acks = \
        '127.0.0.1:1', '127.0.0.1', 'tcp', 'tcp', False, None


def ingest(payloads, loads):
    """Lines per file and the counters, for ``payloads`` through Server.ingest."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, 'facilities.conf')
        with open(path, 'w') as stream:
            stream.write(FACILITIES)
        counters = Counters()
        writer = Writer(os.path.join(folder, 'log'), counters)
        server = Server(load_config(None), load_facilities(path), writer, counters, None,
                        BoundSockets(), loads=loads)
        frames = FrameSplitter(MAX).feed(b''.join(make_frame(p) for p in payloads))
        server.ingest(frames, Peer())
        prefix = server.line_prefix
        lines = {os.path.basename(os.path.dirname(f.path)): [
            line.replace(prefix, '<t>', 1) for line in f.pending] for f in writer.dirty}
        for line in lines.get('json', []):
            json.loads(line)
        return lines, dict(counters.accepted), dict(counters.rejected)


def test_text_and_json_lines_are_those_of_the_standard_library():
    payloads = []
    for text in AWKWARD:
        for data in payloads_with(text):
            payloads.append(data)
            payloads.append(data.replace(b'"app_id": "text"', b'"app_id": "json"'))
    # (The JSON line's time field would differ from one run to the next: it is replaced.)
    lazy, accepted, rejected = ingest(payloads, STRUCT)
    reference = ingest(payloads, protocol.fast_loads)
    assert accepted == reference[1] and rejected == reference[2]
    for app in ('text', 'json'):
        assert _untimed(lazy.get(app)) == _untimed(reference[0].get(app)), app


def _untimed(lines):
    if lines is None:
        return None
    out = []
    for line in lines:
        if line.startswith('{'):
            record = json.loads(line)
            record.pop('time', None)
            line = json.dumps(record, sort_keys=True)
        out.append(line)
    return out


# Bodies whose line the msgspec path writes without asking str.isprintable (an ASCII
# payload without a backslash or DEL, Server.ingest's ``plain``) and bodies it must ask
# about: raw DEL, escaped controls, escapes of printable and unprintable characters.
BODIES = [b'hello', b'a\x7fb', b'\x7f', b'tab\\there', b'line\\nbreak', b'nul\\u0000',
          b'del\\u007f', b'nel\\u0085', b'ls\\u2028', b'quote\\"', b'back\\\\slash',
          b'e\\u00e9', b'~ !#$%&()*+,-./:;<=>?@[]^_`{|}', b'bell\\u0007 and \x7f']


@pytest.mark.parametrize('body', BODIES)
def test_a_text_line_is_the_standard_librarys_whatever_the_body(body):
    payload = (json.dumps(GOOD)[:-1].replace('"body": "hello"', '"body": "%s"')
               .encode() % body + b'}')
    assert STRUCT.lazy_fields(payload) is not None    # the path under test
    lazy = ingest([payload], STRUCT)
    reference = ingest([payload], protocol.fast_loads)
    assert lazy == reference
    [line] = lazy[0]['text']
    assert line.count('\n') == body.count(b'\\n') + 1 and '\x7f' not in line, line
