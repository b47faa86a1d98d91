"""The acknowledger without sockets: frames go through ``Server.ingest`` from plain
connection objects, lines into a real Writer in a tmp folder, acks into a list.

Issue 14: sessions bound to their peer, moved only by messages written, duplicates acked
only after their original's fsync, two live connections of one session, ack numbering
from the connection's first frame, a session frame answered at once.
"""

import os

import pytest

from loghog.wire import FLAG_ACK, HEADER, encode_message, make_session, parse_ack
from loghogd import writer as writer_module
from loghogd.acks import SESSION_PROTECT_S, SessionTable
from loghogd.binding import BoundSockets
from loghogd.config import load_config
from loghogd.facilities import load_facilities
from loghogd.protocol import FrameSplitter
from loghogd.server import Server
from loghogd.stats import Counters
from loghogd.writer import Writer
from tests.unit.test_writer_sync import GatedSync

FACILITIES = os.path.join(os.path.dirname(__file__), '..', 'cases', 'facilities.conf')


class Connection:
    """What the server and the acknowledger need of a stream connection."""

    kind = 'tcp'

    def __init__(self, host='127.0.0.1', subject=None):
        self.peer = '%s:1' % host
        self.peer_host = host
        self.identity = (host, subject)
        self.acks = None
        self.frames_before = 0
        self.closed = False
        self.close_reason = None
        self.sent = b''
        self.splitter = FrameSplitter(64 * 1024)

    def send(self, data):
        self.sent += data

    def close(self, reason):
        self.closed = True
        self.close_reason = reason

    def acks_received(self):
        result, data = [], self.sent
        while data:
            size, flags = HEADER.unpack_from(data)
            result.append(parse_ack(flags, data[8:8 + size]))
            data = data[8 + size:]
        return result


def message(body, app='app'):
    return encode_message(app, 'root', 1, 0, 'h', body, flags=FLAG_ACK)


class Rig:
    """A Server on a tmp log folder; ``feed`` is one read of a connection."""

    def __init__(self, logdir, syncer_wake=None):
        self.counters = Counters()
        self.writer = Writer(str(logdir), self.counters)
        if syncer_wake is not None:
            self.writer.start_syncer(syncer_wake)
        self.server = Server(load_config(None), load_facilities(FACILITIES), self.writer,
                             self.counters, None, BoundSockets())
        self.path = logdir / 'app' / 'root.log'

    def feed(self, connection, data):
        frames = connection.splitter.feed(memoryview(data))
        self.server.ingest(frames, connection)
        connection.frames_before += len(frames)

    def pass_(self, now=1.0):
        """What run_once does after reading: flush, forget lost lines, send acks."""
        self.writer.flush(now)
        self.server.acknowledger.forget_lost(self.writer.take_lost())
        self.server.acknowledger.send_acks()

    def lines(self):
        try:
            return [line.rsplit(' - ', 1)[1] for line in self.path.read_text().splitlines()]
        except FileNotFoundError:
            return []


@pytest.fixture
def rig(tmp_path):
    return Rig(tmp_path)


def test_a_session_frame_alone_never_makes_the_daemon_skip_a_message(rig):
    """The hijack: another connection's session frame with first=10**12 made the daemon
    ack the victim's next messages without writing them."""
    victim, attacker = Connection(), Connection()
    rig.feed(victim, make_session('S', 1) + b''.join(message('m%d' % i) for i in range(1, 11)))
    rig.pass_()
    rig.feed(attacker, make_session('S', 10 ** 12))
    rig.pass_()
    assert attacker.acks_received() == [{'ack': 1}]
    rig.feed(victim, b''.join(message('m%d' % i) for i in range(11, 21)))
    rig.pass_()
    assert victim.acks_received()[-1] == {'ack': 21}
    assert rig.lines() == ['m%d' % i for i in range(1, 21)]


def test_the_same_session_id_from_another_peer_is_another_session(rig):
    victim, other_ip = Connection('10.0.0.1'), Connection('10.0.0.2')
    other_cert = Connection('10.0.0.1', subject=((('commonName', 'mallory'),),))
    rig.feed(victim, make_session('S', 1) + message('v1'))
    rig.pass_()
    rig.feed(other_ip, make_session('S', 10 ** 12) + message('x1'))
    rig.feed(other_cert, make_session('S', 10 ** 12) + message('y1'))
    rig.pass_()
    rig.feed(victim, message('v2'))
    # Message 1 of S from a third peer is its own: written.
    rig.feed(Connection('10.0.0.3'), make_session('S', 1) + message('v1 from elsewhere'))
    rig.pass_()
    assert rig.lines() == ['v1', 'x1', 'y1', 'v2', 'v1 from elsewhere']


def test_two_live_connections_of_one_session_read_in_one_pass_write_once(rig):
    first, second = Connection(), Connection()
    data = make_session('S', 1) + b''.join(message('m%d' % i) for i in range(1, 6))
    rig.feed(first, data)
    rig.feed(second, data)          # same pass: nothing flushed in between
    rig.pass_()
    assert rig.lines() == ['m1', 'm2', 'm3', 'm4', 'm5']
    assert first.acks_received()[-1] == second.acks_received()[-1] == {'ack': 6}
    assert rig.counters.events['duplicates_skipped'] == 5


def test_a_first_frame_over_max_message_size_keeps_the_ack_numbering(rig):
    connection = Connection()
    too_large = encode_message('app', 'root', 1, 0, 'h', 'x' * 70000, flags=FLAG_ACK)
    rig.feed(connection, too_large + message('good') + message('bad', app='nope'))
    rig.pass_()
    acks = connection.acks_received()
    assert acks[-1]['ack'] == 3
    assert [r for a in acks for r in a.get('rejected', [])] == [[1, 'too_large'],
                                                               [3, 'unknown_app']]
    assert rig.lines() == ['good']


def test_a_session_frame_is_answered_at_once_even_if_the_frames_after_it_wait(
        rig, tmp_path):
    (tmp_path / 'app').write_text('a file where the folder should be: writing fails')
    connection = Connection()
    rig.feed(connection, make_session('S', 1) + message('m1') + message('m2'))
    rig.pass_()
    assert connection.acks_received() == [{'ack': 1}]      # the messages wait
    assert rig.writer.retrying


def test_junk_session_frames_cost_no_session_and_a_resend_is_not_written_twice(rig):
    client = Connection()
    rig.feed(client, make_session('victim', 1) + b''.join(message('m%d' % i)
                                                          for i in range(1, 51)))
    rig.pass_()
    client.closed = True
    rig.server.acknowledger.closed(client)
    for n in range(10001):           # each on its own connection, as a flood would
        junk = Connection()
        rig.feed(junk, make_session('junk%d' % n, 1))
        rig.pass_()
        junk.closed = True
        rig.server.acknowledger.closed(junk)
    assert len(rig.server.acknowledger.sessions) == 1
    again = Connection()
    rig.feed(again, make_session('victim', 1) + b''.join(message('m%d' % i)
                                                         for i in range(1, 51)))
    rig.pass_()
    assert again.acks_received()[-1] == {'ack': 51}
    assert rig.lines() == ['m%d' % i for i in range(1, 51)]


def test_sessions_are_bounded_per_peer_and_never_evict_an_active_one():
    table = SessionTable(limit=10, per_peer=3)
    now = 1000.0
    mine = table.create(('a', 'mine'), now)
    assert mine is not None
    for n in range(5):                       # a flood from the same peer
        table.create(('a', 'junk%d' % n), now + 1)
    assert table.get(('a', 'mine')) is mine  # used moments ago: kept
    assert table.untracked == 3 and len(table) == 3
    later = now + SESSION_PROTECT_S + 1
    assert table.create(('a', 'new'), later) is not None   # idle ones may go now
    assert table.get(('a', 'mine')) is None and table.evicted == 1
    for n in range(20):                      # other peers fill the table
        table.create(('p%d' % n, 's'), later)
    assert len(table) <= 10


@pytest.fixture
def gated(monkeypatch):
    gate = GatedSync()
    monkeypatch.setattr(writer_module.os, 'fdatasync', gate)
    return gate


def test_a_skipped_duplicate_is_acked_only_once_its_originals_fsync_is_done(tmp_path, gated):
    import threading
    woken = threading.Event()
    rig = Rig(tmp_path, woken.set)
    try:
        first = Connection()
        rig.feed(first, make_session('S', 1) + message('m1') + message('m2'))
        rig.pass_()                              # written; the fsync runs (held)
        assert gated.entered.acquire(timeout=10)
        first.closed = True                      # the client lost its connection
        rig.server.acknowledger.closed(first)
        second = Connection()
        rig.feed(second, make_session('S', 1) + message('m1') + message('m2'))
        rig.pass_(1.1)
        assert second.acks_received() == [{'ack': 1}]   # not the duplicates: not synced
        gated.fail = True
        gated.release()                          # the original's fsync fails
        assert woken.wait(10)
        rig.pass_(1.2)
        assert second.closed and second.acks_received() == [{'ack': 1}]
        # The client resends on a new connection: written again, not skipped.
        gated.fail = False
        third = Connection()
        rig.feed(third, make_session('S', 1) + message('m1') + message('m2'))
        rig.pass_(1.3)
        assert rig.lines() == ['m1', 'm2', 'm1', 'm2']
    finally:
        gated.release(10)
        rig.writer.close(2.0)
