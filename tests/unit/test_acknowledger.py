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


def test_a_rejected_message_resent_after_a_cut_is_rejected_again(rig):
    """Issue 14 (attack): the session kept only its highest number written, so a rejected
    number below it, resent after a cut, was skipped as a duplicate and acked as done."""
    first = Connection()
    rig.feed(first, make_session('S', 1) + message('m1') + message('x', app='nope')
             + message('m3'))
    rig.pass_()
    first.closed = True
    rig.server.acknowledger.closed(first)
    again = Connection()
    rig.feed(again, make_session('S', 1) + message('m1') + message('x', app='nope')
             + message('m3'))
    rig.pass_()
    assert again.acks_received()[-1] == {'ack': 4, 'rejected': [[3, 'unknown_app']]}
    assert rig.lines() == ['m1', 'm3']


def test_a_rejected_number_resent_after_a_reload_that_accepts_it_is_written(rig, tmp_path):
    first = Connection()
    rig.feed(first, make_session('S', 1) + message('m1') + message('n2', app='nope')
             + message('m3'))
    rig.pass_()
    conf = tmp_path / 'facilities.conf'
    conf.write_text(open(FACILITIES).read() + '\n[nope]\nrotate = daily\nbackup_count = 1\n')
    rig.server.table = load_facilities(str(conf))      # what a reload does
    rig.writer.retarget(rig.server.table)
    again = Connection()
    rig.feed(again, make_session('S', 1) + message('m1') + message('n2', app='nope')
             + message('m3'))
    rig.pass_()
    assert again.acks_received()[-1] == {'ack': 4}
    assert rig.lines() == ['m1', 'm3']
    assert [line.rsplit(' - ', 1)[1] for line in
            (rig.path.parent.parent / 'nope' / 'root.log').read_text().splitlines()] == ['n2']
    assert rig.counters.events['duplicates_skipped'] == 2


def test_a_session_remembers_ranges_of_numbers_written_and_forgets_the_lowest_first():
    from loghogd.acks import MAX_RANGES, Session
    session = Session('k', 0.0)
    for seq in (1, 2, 3, 5, 6, 4, 10):
        session.add(seq)
    assert (session.starts, session.ends) == ([1, 10], [6, 10])
    assert [n for n in range(12) if session.written(n)] == [1, 2, 3, 4, 5, 6, 10]
    session.forget_after(5)
    assert (session.starts, session.ends) == ([1], [5])
    for seq in range(100, 100 + 2 * (MAX_RANGES + 5), 2):
        session.add(seq)
    assert len(session.starts) == MAX_RANGES and not session.written(1)


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


def test_a_full_table_gives_a_new_peer_an_entry_from_the_peer_that_holds_the_most():
    """Issue 14 (attack): ten peers at their quota filled the table, all "protected" for
    SESSION_PROTECT_S, and a new client elsewhere went untracked: its resend written twice."""
    table = SessionTable(limit=100, per_peer=40, fair_share=5)
    now = 1000.0
    for n in range(40):
        table.create(('big', 'b%d' % n), now)
    for peer in range(6):
        for n in range(10):
            table.create(('p%d' % peer, 's%d' % n), now)
    assert len(table) == 100 and table.largest == 40
    busy = table.get(('big', 'b0'))
    busy.live = 1                                    # a live connection: never taken
    new = table.create(('newcomer', 's'), now + 1)
    assert new is not None and table.evicted == 1
    assert table.get(('big', 'b0')) is busy and table.get(('big', 'b1')) is None
    for n in range(29):                              # more newcomers: the big one shrinks
        assert table.create(('n%d' % n, 's'), now + 1) is not None
    assert len(table.by_peer['big']) == 10 and len(table) == 100
    # Every peer is now at 10 or less but "p*" at exactly 10 (> fair share 5) and one
    # more than newcomers: they give up one each to a peer holding none, never below 6.
    while table.create(('late%d' % table.evicted, 's'), now + 2) is not None:
        pass
    assert all(len(mine) >= 1 for mine in table.by_peer.values())
    assert min(len(table.by_peer[p]) for p in ['big'] + ['p%d' % i for i in range(6)]) >= 5
    assert table.untracked == 1


def test_a_peer_at_or_under_the_fair_share_never_loses_a_session_to_another():
    table = SessionTable(limit=10, per_peer=10, fair_share=5)
    for n in range(5):
        table.create(('a', n), 0.0)
        table.create(('b', n), 0.0)
    assert table.create(('c', 0), 1.0) is None
    assert len(table.by_peer) == 2 and table.untracked == 1 and table.evicted == 0


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


def test_a_half_closed_connection_gets_its_acks_then_closes_and_waits_at_most_its_bound(
        tmp_path):
    """Issue 14 (attack): on the peer's EOF (shutdown(SHUT_WR)) the connection was closed
    before its acks were due.  Now it stays open for writing until they are sent, and no
    longer than HALF_CLOSED_ACK_TIMEOUT_S when they never come."""
    import socket
    from loghogd.connections import READ, StreamConnection
    from loghogd.loop import EventLoop
    rig = Rig(tmp_path)
    rig.server.loop = loop = EventLoop()
    rig.server.now = 100.0
    try:
        results = []
        for acked in (True, False):
            ours, theirs = socket.socketpair()
            ours.setblocking(False)
            connection = StreamConnection(rig.server, ours, ('127.0.0.1', 1), 'tcp')
            connection.start()
            theirs.sendall(make_session('H%s' % acked, 1) + message('m1') + message('m2'))
            theirs.shutdown(socket.SHUT_WR)
            connection.on_event(READ)          # the frames
            connection.on_event(READ)          # the EOF: still open, not reading
            assert not connection.closed and connection.half_closed_at == 100.0
            if acked:
                rig.pass_()                    # written: the acks go out, then it closes
            else:
                connection.check_timeouts(
                    100.0 + StreamConnection.HALF_CLOSED_ACK_TIMEOUT_S + 1, 30.0, 10.0, None)
            assert connection.closed
            theirs.settimeout(5)
            data = b''
            while True:
                chunk = theirs.recv(65536)
                if not chunk:
                    break
                data += chunk
            results.append(data)
            theirs.close()
        acks = []
        while results[0]:
            size, flags = HEADER.unpack_from(results[0])
            acks.append(parse_ack(flags, results[0][8:8 + size]))
            results[0] = results[0][8 + size:]
        assert acks[-1] == {'ack': 3}
        assert results[1] == b''      # nothing was due: closed at the bound, unacked
    finally:
        loop.close()


def test_two_connections_racing_one_sessions_messages_keep_their_waits_small(tmp_path, gated):
    """Each skipped duplicate added its original's waits (and the original's own, taken
    from the other connection) to its connection's list: two connections of one session
    sending the same messages (a reconnect while the old connection is still read, or a
    client that does it on purpose) doubled each other's lists in turn, every frame, while
    an fsync ran: the daemon spent its time copying lists (one such test stalled for 30 s).
    What an ack waits for is one fsync per file at most."""
    import threading
    woken = threading.Event()
    rig = Rig(tmp_path, woken.set)
    try:
        a, b = Connection(), Connection()
        rig.feed(a, make_session('S', 1))
        rig.feed(b, make_session('S', 1))
        for round_ in range(8):
            first, second = (a, b) if round_ % 2 == 0 else (b, a)
            data = b''.join(message('m%d' % n) for n in range(10 * round_ + 1,
                                                              10 * round_ + 11))
            rig.feed(first, data)
            rig.feed(second, data)          # all duplicates: they wait for first's
            rig.pass_(1.0 + round_ / 10)    # the fsync is held: nothing is acked
        sizes = []
        for connection in (a, b):
            acks = connection.acks
            sizes.append(len(acks.waits) + (len(acks.snapshot[4]) if acks.snapshot else 0))
        assert max(sizes) <= 2, sizes
        gated.release(100)
        assert woken.wait(10)
        rig.pass_(3.0)
        assert rig.lines() == ['m%d' % n for n in range(1, 81)]
    finally:
        gated.release(100)
        rig.writer.close(4.0)


def test_a_stop_closes_a_peer_that_goes_on_sending_within_the_grace_and_one_that_closes_at_once(
        tmp_path):
    """README: a clean stop ends a connection still sending with a FIN after its acks and
    reads what the client sends until it closes its end, "half a second at most for all of
    them" (connections.close_at_stop, CLOSE_GRACE_S); one that closes when it reads the FIN
    is closed as soon as it does."""
    import socket
    import threading
    import time
    from loghogd.connections import CLOSE_GRACE_S, StreamConnection, close_at_stop
    from loghogd.loop import EventLoop
    rig = Rig(tmp_path)
    rig.server.loop = loop = EventLoop()
    stop = threading.Event()
    try:
        pairs = [socket.socketpair() for _ in range(2)]
        connections = []
        for ours, _ in pairs:
            ours.setblocking(False)
            connection = StreamConnection(rig.server, ours, ('127.0.0.1', 1), 'tcp')
            connection.start()
            connections.append(connection)
        stubborn, polite = pairs[0][1], pairs[1][1]

        def flood():             # never reads, never closes
            try:
                while not stop.is_set():
                    stubborn.send(b'x' * 4096)
            except OSError:
                pass

        ended = []

        def close_on_fin():      # sends, then closes when it reads the daemon's FIN
            polite.sendall(b'y' * 1000)
            try:
                while polite.recv(65536):
                    pass
                ended.append('fin')
            except ConnectionResetError:
                ended.append('reset')
            polite.close()
        threads = [threading.Thread(target=flood, daemon=True),
                   threading.Thread(target=close_on_fin, daemon=True)]
        for thread in threads:
            thread.start()
        time.sleep(0.05)         # both have bytes unread by the daemon
        began = time.monotonic()
        close_at_stop(rig.server.connections, time.monotonic)
        took = time.monotonic() - began
        assert all(c.closed for c in connections)
        assert CLOSE_GRACE_S <= took < CLOSE_GRACE_S + 0.5, took   # the flooder's wait
        threads[1].join(5)
        assert ended == ['fin']             # the polite one read a FIN, not a reset
    finally:
        stop.set()
        loop.close()
