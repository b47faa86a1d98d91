"""The fast paths of syslog ingest give exactly what the general path gives.

SyslogReceiver.ingest parses a message only when its shape changes (syslog_parse.shape_5424);
the messages after it that share the shape are checked with byte comparisons.  Whatever the
messages (same shape or near misses: another PRI, a TIMESTAMP that is not one, a BOM,
STRUCTURED-DATA, bytes that are not UTF-8, control characters, trailing NUL/CR/LF, another
program or host), the lines, their files and order, and every counter are those of the
reference (``fast=False``: every message parsed).
"""

import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from loghogd.binding import BoundSockets
from loghogd.config import load_config
from loghogd.facilities import load_facilities
from loghogd.server import Server, format_receive_time
from loghogd.stats import Counters
from loghogd.syslog_framing import SyslogFrameSplitter
from loghogd.syslog_listeners import SHAPES_LEARNT, SyslogReceiver
from loghogd import syslog_parse
from loghogd.writer import Writer

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
FEW = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
NOW = 1796479200.0   # 2026-12-05 12:00 UTC
LOGDIR = '/nonexistent/loghogd-fast'
FACILITIES = '''
[web]
rotate = daily
backup_count = 3
syslog_programs = myapp, app*

[web:nginx]
syslog_programs = nginx
rotate = daily
backup_count = 3

[perhost]
rotate = daily
backup_count = 3
file_per_host = yes
syslog_programs = perhost

[signed]
rotate = daily
backup_count = 3
secret = s3cret
syslog_programs = signedprog

[structured]
rotate = daily
backup_count = 3
format = json
syslog_programs = jsonprog

[catchall]
rotate = daily
backup_count = 3
'''

PRIS = [b'<14>', b'<13>', b'<014>', b'<191>', b'<192>', b'<0>', b'<14', b'14>', b'']
VERSIONS = [b'1 ', b'1 ', b'1 ', b'2 ', b'1', b'']
STAMPS = [b'2026-12-05T11:00:00Z', b'2026-12-05T11:00:00.123456Z', b'2026-12-05T11:00:01.5+01:00',
          b'2026-12-05T11:00:02.000001-05:30', b'-', b'-', b'2026-12-05T11:00:00',
          b'2026-13-05T11:00:00Z', b'2026-12-05t11:00:00z', b'-x', b'--', b'Dec  5 11:00:00',
          b'2026-12-05T11:00:00.1234567Z', b'2026-12-05T11:00:00+0100']
HOSTS = [b'h1', b'h1', b'h2', b'-', b'2001:db8::1', b'bad\xffhost', b'h\x1bx', b'h' * 256]
APPS = [b'myapp', b'myapp', b'app-2', b'nginx', b'perhost', b'signedprog', b'jsonprog',
        b'nobody', b'-', b'a' * 49, b'my\tapp']
PROCIDS = [b'-', b'-', b'12', b'p' * 129]
MSGIDS = [b'-', b'-', b'ID47', b'm' * 33]
SDS = [b'- ', b'- ', b'- ', b'-', b'[x@1 a="b\\"c"] ', b'[x@1 a="b"]', b'-x ', b'']
BODIES = st.lists(st.sampled_from([b'msg', b'two words', b'\xef\xbb\xbf', b'\xff', b'\xc3',
                                   b'\n', b'\r\n', b'\x00', b'\t', b'\x1b[31m', b'\xe2\x80\xa8',
                                   b'caf\xc3\xa9', b' ', b'- ', b'1 ', b'<14>'])
                  | st.binary(max_size=6),
                  max_size=6).map(b''.join)
# A body often starts with what the header's end decides about (a BOM, a space).
BODIES = st.tuples(st.sampled_from([b'', b'', b'\xef\xbb\xbf', b' ']), BODIES).map(b''.join)
# What ends a frame that the splitter leaves on it (CRLF's CR, a NUL after an LF).
ENDS = st.sampled_from([b'', b'', b'', b'\r', b'\x00', b'\n\x00', b'\r\n', b' \x00'])


BSD_STAMPS = [b'Dec  5 11:00:00', b'Dec  5 11:00:01', b'Jan  1 00:00:00', b'Dec 05 11:00:00',
              b'Feb 30 25:61:61', b'Dec  5 11:00', b'2026-12-05T11:00:00Z', b'Dec  5 11:00:00:']
TAGS = [b'myapp: ', b'myapp: ', b'myapp[12]: ', b'nginx[1] ', b'perhost: ', b'jsonprog: ',
        b'myapp:', b'myapp[12]:', b'myapp[1 2]: ', b'my app: ', b'a' * 65 + b': ',
        b'myapp[' + b'p' * 130 + b']: ', b'nobody: ', b'postfix/smtpd[7]: ', b'-: ', b'12: ']
BSD_HOSTS = [b'h1 ', b'h1 ', b'', b'', b'bad\xffhost ', b'2001:db8::1 ', b'h:x ']


def pieces(good):
    """The pieces of an RFC 5424 header: ``good`` ones (without STRUCTURED-DATA, the shape
    the fast path takes), or any (near misses included)."""
    return [PRIS[:3], VERSIONS[:1], STAMPS[:5], HOSTS[:5], APPS[:9], PROCIDS[:3], MSGIDS[:3],
            SDS[:1]] if good else [PRIS, VERSIONS, STAMPS, HOSTS, APPS, PROCIDS, MSGIDS, SDS]


@st.composite
def template(draw, good=False):
    """(before the timestamp, the timestamps it may have, after it): an RFC 5424 header
    or an RFC 3164 one (with or without a time and a host), of ``good`` pieces or any."""
    form = draw(st.sampled_from(['5424', '5424', '3164', 'bare']))
    if form == '5424':
        pri, version, stamp, host, app, procid, msgid, sd = (
            draw(st.sampled_from(choices)) for choices in pieces(good))
        return (pri + version, STAMPS,
                b''.join([b' ', host, b' ', app, b' ', procid, b' ', msgid, b' ', sd]))
    pri = draw(st.sampled_from(PRIS[:3] if good else PRIS))
    tag = draw(st.sampled_from(TAGS[:8] if good else TAGS))
    if form == 'bare':
        return pri, [b''], tag
    host = draw(st.sampled_from(BSD_HOSTS[:4] if good else BSD_HOSTS))
    return pri, BSD_STAMPS, b' ' + host + tag


@st.composite
def message(draw, good=False):
    before, stamps, after = draw(template(good))
    return before + draw(st.sampled_from(stamps)) + after + draw(BODIES) + draw(ENDS)


mostly_good = message(good=True) | message(good=True) | message()
mostly_good_templates = template(good=True) | template(good=True) | template()


# A batch: messages of a few templates, so that the next messages share a shape, and
# differ where senders' messages do (their time, their text).
@st.composite
def batch_of(draw, templates):
    out = []
    for index in draw(st.lists(st.integers(0, len(templates) - 1), max_size=40)):
        before, stamps, after = templates[index]
        out.append(before + draw(st.sampled_from(stamps)) + after + draw(BODIES) + draw(ENDS))
    return out


def make_receiver(folder, fast):
    path = os.path.join(folder, 'facilities.conf')
    if not os.path.exists(path):
        with open(path, 'w') as handle:
            handle.write(FACILITIES)
    counters = Counters()
    server = Server(load_config(None), load_facilities(path), Writer(LOGDIR, counters), counters,
                    None, BoundSockets())
    server.now = NOW
    server.line_prefix = format_receive_time(NOW)
    return server, SyslogReceiver(server, 'catchall', fast=fast)


class Peer:
    def __init__(self, listener, has_client_cert):
        self.peer, self.peer_host = '10.0.0.9:1', '10.0.0.9'
        self.listener, self.kind = listener, 'syslog_' + listener
        self.has_client_cert = has_client_cert


def outcome(server):
    files = {os.path.relpath(f.path, LOGDIR): list(f.pending) for f in server.writer.dirty}
    counters = server.counters
    return (files, dict(counters.rejected), dict(counters.events), dict(counters.accepted),
            dict(counters.accepted_bytes))


def both(folder, batches, has_client_cert=False):
    """The outcome of ``batches`` (each a list of messages, one ingest each) with the fast
    paths and with the reference."""
    results = []
    for fast in (True, False):
        server, receiver = make_receiver(folder, fast)
        peer = Peer('tcp', has_client_cert)
        for batch in batches:
            receiver.ingest([(data, False) for data in batch], peer)
        results.append(outcome(server))
    return results


@FUZZ
@given(st.lists(mostly_good_templates, min_size=1, max_size=6), st.data(), st.booleans())
def test_the_fast_path_gives_the_lines_and_counters_of_the_reference(tmp_path_factory, templates,
                                                                      data, cert):
    batches = [data.draw(batch_of(templates)) for _ in range(data.draw(st.integers(1, 3)))]
    fast, reference = both(str(tmp_path_factory.getbasetemp()), batches, cert)
    assert fast == reference


@FEW
@given(st.lists(mostly_good, max_size=30))
def test_any_messages_give_the_lines_of_the_reference(tmp_path_factory, batch):
    fast, reference = both(str(tmp_path_factory.getbasetemp()), [batch])
    assert fast == reference


SENDERS = {
    # logger --rfc5424, rsyslog's RFC 5424 template: time, BOM, trailing LF vary.
    '5424': (1, lambda i: b'<14>1 2026-12-05T11:00:%02d.%06dZ h1 myapp 42 - - %smessage %d%s'
             % (i % 60, i, b'\xef\xbb\xbf' if i % 3 else b'', i, b'\n' if i % 5 else b'')),
    # logger --rfc3164, rsyslog's default forwarding: the time varies.
    '3164': (1, lambda i: b'<14>Dec  5 11:%02d:%02d h1 myapp[42]: message %d'
             % (i // 60, i % 60, i)),
    # Python's SysLogHandler: no time, no host.
    'bare': (1, lambda i: b'<14>myapp: message %d' % i),
    # One program's info, warning and err in turn: a shape each.
    'severities': (3, lambda i: b'<%d>1 2026-12-05T11:00:00Z h1 myapp - - - message %d'
                   % ((14, 12, 11)[i % 3], i)),
}


@pytest.mark.parametrize('sender', sorted(SENDERS))
def test_messages_of_a_few_shapes_are_parsed_once_per_shape(tmp_path, monkeypatch, sender):
    """The point of the fast path: 100 messages of a sender cost one parse per shape, and
    their lines are those of the reference."""
    shapes, make = SENDERS[sender]
    calls = []
    parse = syslog_parse.parse_message

    def counting(data, now):
        calls.append(data)
        return parse(data, now)
    batch = [make(i) for i in range(100)]
    reference = both(str(tmp_path), [batch])[1]
    monkeypatch.setattr('loghogd.syslog_listeners.parse_message', counting)
    server, receiver = make_receiver(str(tmp_path), True)
    receiver.ingest([(data, False) for data in batch], Peer('tcp', False))
    assert len(calls) == shapes
    assert outcome(server) == reference
    assert reference[0]['web/root.log'][-1].endswith(' message 99\n')


def counted(monkeypatch, name):
    """Calls of syslog_listeners' ``name`` (parse_message, shape_of), counted."""
    calls = []
    function = getattr(syslog_parse, name)
    monkeypatch.setattr('loghogd.syslog_listeners.' + name,
                        lambda *args: calls.append(args) or function(*args))
    return calls


@pytest.mark.parametrize('form', [b'<14>1 - host%d myapp - - - message %d',
                                  b'<14>Dec  5 11:00:00 host%d myapp: message %d'])
def test_a_relays_hosts_in_turn_are_parsed_once_each(tmp_path, monkeypatch, form):
    batch = [form % (i % 50, i) for i in range(500)]
    reference = both(str(tmp_path), [batch])[1]
    parsed = counted(monkeypatch, 'parse_message')
    server, receiver = make_receiver(str(tmp_path), True)
    receiver.ingest([(data, False) for data in batch], Peer('tcp', False))
    assert len(parsed) == 50
    assert outcome(server) == reference


def test_a_relays_hosts_and_severities_in_turn_give_the_lines_of_the_reference(tmp_path):
    """A host's last shape may have another PRI than the message: it is not that one's."""
    turn = [b'<14>1 - h1 myapp - - - one', b'<14>1 - h2 myapp - - - two',
            b'<13>1 - h1 myapp - - - three', b'<14>1 - h2 myapp - - - four',
            b'<14>1 - h1 myapp - - - five']
    fast, reference = both(str(tmp_path), [turn * 3])
    assert fast == reference
    assert reference[0]['web/root.log'][4].endswith(' - h1 - myapp user.info: five\n')


def test_a_new_shape_every_message_stops_the_shapes(tmp_path, monkeypatch):
    """When most messages need a parse anyway (every host new), no shape is made (or
    looked up) any more after the first SHAPES_LEARNT; the lines are the reference's."""
    batch = [b'<14>1 - host%d myapp - - - message %d' % (i, i) for i in range(500)]
    reference = both(str(tmp_path), [batch])[1]
    made = counted(monkeypatch, 'shape_of')
    server, receiver = make_receiver(str(tmp_path), True)
    receiver.ingest([(data, False) for data in batch], Peer('tcp', False))
    assert SHAPES_LEARNT <= len(made) <= SHAPES_LEARNT + 1
    assert outcome(server) == reference


# -- framing: a run of delimited frames split at once ----------------------------------------

FRAME_PIECES = [b'<14>1 - h myapp - - - msg', b'<13>x', b'<13>', b'<', b'abc', b'12', b'7 ',
                b'0', b'\n', b'\r\n', b'\r', b'\x00', b'\n<', b'\x00<', b'\x003', b'\n3',
                b'a' * 70, b' ']
frame_bodies = st.lists(st.sampled_from(FRAME_PIECES) | st.binary(max_size=5),
                        max_size=8).map(b''.join)


@st.composite
def stream(draw):
    """Frames, each delimited or octet-counted as a sender may, one sender switching."""
    out = b''
    for body in draw(st.lists(frame_bodies, max_size=12)):
        ending = draw(st.sampled_from(['lf', 'lf', 'crlf', 'nul', 'nul', 'counted', 'none']))
        if ending == 'counted':
            out += b'%d %s' % (len(body), body)
        else:
            out += body + {'lf': b'\n', 'crlf': b'\r\n', 'nul': b'\x00', 'none': b''}[ending]
    return out


def split(data, cuts, fast):
    splitter = SyslogFrameSplitter(64, fast=fast)
    frames, start, index = [], 0, 0
    while start < len(data):
        step = cuts[index % len(cuts)]
        frames += splitter.feed(memoryview(data)[start:start + step])
        frames.append(('mid', splitter.is_mid_frame, splitter.nul_framed))
        start += step
        index += 1
    frames.append(splitter.take_rest())
    return frames


@FUZZ
@given(stream(), st.lists(st.integers(1, 300), min_size=1, max_size=10))
def test_splitting_a_run_at_once_gives_the_frames_of_one_by_one(data, cuts):
    assert split(data, cuts, True) == split(data, cuts, False)


def test_a_run_of_delimited_frames_is_split_at_once():
    """LF-ended frames (NUL-ended ones once the sender is known to end with NUL) are cut
    out of a read with one split, not found one by one; the run stops before a frame
    the one-by-one reading must decide (a digit: octet counting)."""
    splitter = SyslogFrameSplitter(64)
    runs = []
    split_run = splitter._split_run
    splitter._split_run = lambda *args: runs.append(split_run(*args)) or runs[-1]
    lf = b''.join(b'<14>message %d\n' % i for i in range(50))
    assert [data for data, _ in splitter.feed(lf)] == lf.split(b'\n')[:-1]
    assert runs == [len(lf)]
    assert splitter.feed(b'<14>first\x00') == [(b'<14>first', False)]
    nul = b''.join(b'<14>message %d\nline 2\x00' % i for i in range(50))
    assert [data for data, _ in splitter.feed(nul)] == nul.split(b'\x00')[:-1]
    mixed = nul + b'11 <14>counted<14>x\x00'
    frames = splitter.feed(mixed)
    assert [data for data, _ in frames] == nul.split(b'\x00')[:-1] + [b'<14>counted', b'<14>x']
    # Not NUL-framed yet (the general path learns it); the run; a run that holds a
    # special frame: one by one, and no second look at the rest of that read.
    assert runs == [len(lf), 0, len(nul), 0]


def test_each_message_of_a_rate_limited_facility_takes_a_token(tmp_path):
    """Shapes skip routing: a facility with a rate_limit learns none, so that every message
    takes a token (issue 19), and a datagram past the rate is refused, shapes or not."""
    (tmp_path / 'facilities.conf').write_text(
        '[limited]\nrotate = daily\nbackup_count = 1\nsyslog_programs = limited\n'
        'rate_limit = 10/s burst 10\n\n'
        '[free]\nrotate = daily\nbackup_count = 1\nsyslog_programs = free\n')
    server, receiver = make_receiver(str(tmp_path), True)
    peer = Peer('udp', False)
    batch = []
    for program in (b'free', b'limited', b'free'):   # runs of one shape each
        for n in range(25 if program == b'free' else 50):
            batch.append(b'<14>1 2026-12-05T11:00:00.%06dZ h1 %s 42 - - message %d'
                         % (n, program, n))
    receiver.ingest([(data, False) for data in batch], peer)
    files = {os.path.basename(os.path.dirname(f.path)): len(f.pending)
             for f in server.writer.dirty}
    assert files == {'limited': 10, 'free': 50}
    assert server.counters.rejected['rate_limited'] == 40
