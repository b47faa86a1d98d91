"""Receivers and the main process without processes (issue 18): a receiver's Server on a
ForwardingWriter and ForwardingAcknowledger sends its batches over a real channel; the
main process's ReceiverPool applies them to a real Writer and the one Acknowledger, and
the acks come back to the receiver's connection."""

import time

import pytest

from loghog.signing import V2Signer
from loghog.wire import FLAG_ACK, MessageEncoder, make_session
from loghogd.binding import BoundSockets
from loghogd.channel import Channel, channel_pair
from loghogd.config import load_config
from loghogd.facilities import load_facilities
from loghogd.receiver import ForwardingAcknowledger, ForwardingWriter
from loghogd.receivers import WATERMARK_WAIT_S, Receiver, ReceiverPool
from loghogd.server import Server
from loghogd.stats import Counters
from loghog.wire import encode_message
from loghogd.receiver import ChannelReader
from tests.unit.test_acknowledger import FACILITIES, Connection, Rig, message


class ReceiverRig:
    """One receiver's Server, and its Receiver in the main process's pool."""

    def __init__(self, pool, slot):
        main_end, receiver_end = channel_pair()
        self.channel = Channel(receiver_end)
        self.writer = ForwardingWriter(self.channel)
        self.server = Server(load_config(None), load_facilities(FACILITIES), self.writer,
                             Counters(), None, BoundSockets())
        self.acknowledger = self.server.acknowledger = ForwardingAcknowledger(self.writer)
        self.server.take_signed = self.writer.take_signed     # as receiver.serve does
        self.server.now = time.time()
        self.receiver = Receiver(pool, slot, 0, Channel(main_end))
        pool.receivers[slot] = self.receiver

    def feed(self, connection, data):
        """One read of ``connection``, sent to the main process as one batch."""
        frames = connection.splitter.feed(memoryview(data))
        self.server.ingest(frames, connection)
        connection.frames_before += len(frames)
        self.writer.flush(1.0, force=True)
        self.receiver.pool.read(self.receiver)

    def take_acks(self):
        for reply in self.channel.receive():
            self.acknowledger.deliver(reply)


class Pool:
    def __init__(self, tmp_path):
        self.main = Rig(tmp_path)
        self.pool = ReceiverPool(2, BoundSockets(), None)
        self.pool.server = self.main.server
        self.receivers = [ReceiverRig(self.pool, slot) for slot in range(2)]
        self.main.server.now = time.time()

    def pass_(self):
        self.main.pass_()
        for receiver in self.receivers:
            receiver.take_acks()


@pytest.fixture
def rig(tmp_path):
    return Pool(tmp_path)


def test_a_client_that_reconnects_to_another_receiver_is_not_written_twice(rig):
    first, second = rig.receivers
    cut = Connection()
    first.feed(cut, make_session('S', 1) + b''.join(message('m%d' % i) for i in (1, 2, 3)))
    # The connection is cut before the acks of m1..m3 reach the client: it reconnects,
    # the kernel hands the new connection to the other receiver, and it resends.
    first.acknowledger.closed(cut)
    cut.closed = True
    again = Connection()
    second.feed(again, make_session('S', 1) + b''.join(message('m%d' % i) for i in (1, 2, 3, 4)))
    rig.pass_()
    assert rig.main.lines() == ['m1', 'm2', 'm3', 'm4']
    assert again.acks_received()[-1] == {'ack': 5}
    assert again.acks.is_done()
    assert rig.main.counters.events['duplicates_skipped'] == 3


def test_acks_come_back_in_order_with_the_rejections_of_their_receiver(rig):
    first, _ = rig.receivers
    client = Connection()
    first.feed(client, message('a') + message('b', app='nobody') + message('c'))
    assert not client.acks.is_done()    # nothing is acknowledged before it is written
    rig.pass_()
    assert client.acks_received() == [{'ack': 3, 'rejected': [[2, 'unknown_app']]}]
    assert client.acks.is_done()
    assert rig.main.lines() == ['a', 'c']


def test_lines_routed_to_a_facility_a_reload_removed_are_rejected_not_lost_silently(rig):
    first, _ = rig.receivers
    client = Connection()
    frames = client.splitter.feed(memoryview(message('before the reload')))
    first.server.ingest(frames, client)
    client.frames_before += 1
    # The main process reloads a table without [app] before this batch arrives.
    rig.main.server.table = load_facilities_text(rig.main, '[other]\nrotate = daily\n'
                                                 'backup_count = 1\n')
    first.writer.flush(1.0, force=True)
    rig.pool.read(first.receiver)
    rig.pass_()
    assert rig.main.lines() == []
    assert client.acks_received() == [{'ack': 1, 'rejected': [[1, 'unknown_app']]}]
    assert rig.main.counters.rejected['unknown_app'] == 1


SESSION = bytes.fromhex('00112233445566778899aabbccddeeff')


def signed(body, seq, flags=FLAG_ACK):
    """A v2-signed message to [strict] (tests/cases/facilities.conf), signed now."""
    frame = MessageEncoder('strict', 'h', flags=flags).encode('root', 1, 0, body)
    return V2Signer('s3cret').sign_frame(frame, SESSION, seq, int(time.time() * 1000))


def strict_lines(rig):
    path = rig.main.path.parent.parent / 'strict' / 'root.log'
    return [line.rsplit(' - ', 1)[1] for line in path.read_text().splitlines()]


def test_a_v2_resend_on_the_receiver_of_its_original_is_skipped_not_refused(rig):
    """A4-w12: the replay check is the main process's, where the session table tells the
    resend (same peer, same session, its signed number) from a replay."""
    first, _ = rig.receivers
    cut = Connection()
    first.feed(cut, make_session(SESSION.hex(), 1) + signed('m1', 1) + signed('m2', 2))
    first.acknowledger.closed(cut)
    cut.closed = True
    again = Connection()
    first.feed(again, make_session(SESSION.hex(), 1) + b''.join(
        signed('m%d' % n, n) for n in (1, 2, 3)))
    rig.pass_()
    assert strict_lines(rig) == ['m1', 'm2', 'm3']
    assert again.acks_received()[-1] == {'ack': 4}
    assert rig.main.counters.rejected['replayed'] == 0
    assert rig.main.counters.events['duplicates_skipped'] == 2


def test_a_v2_replay_on_another_receiver_is_refused(rig):
    """The gap docs/security.md listed: each receiver kept its own table of (session,
    number), so a captured frame replayed on another receiver was written again."""
    first, second = rig.receivers
    captured = signed('once', 1, flags=0)
    first.feed(Connection(), captured + signed('then', 2, flags=0))
    second.feed(Connection('127.0.0.2'), signed('plain', 3, flags=0) + captured)
    replayer = Connection('127.0.0.3')
    second.feed(replayer, make_session(SESSION.hex(), 1) + signed('once', 1))   # acked
    rig.pass_()
    assert strict_lines(rig) == ['once', 'then', 'plain']
    assert rig.main.counters.rejected['replayed'] == 2
    assert replayer.acks_received()[-1] == {'ack': 2, 'rejected': [[2, 'replayed']]}


def test_a_cut_batch_keeps_each_signed_mark_on_its_line():
    from loghogd.receiver import BATCH_CHARS, cut_batch
    key = ('strict', 'root', None)
    line = 'x' * (BATCH_CHARS // 3) + '\n'
    lines = {key: [line + str(n) for n in range(7)]}
    marks = [(key, n, b'S' * 16, n, 0, ('h', None), 'h:1', 'h') for n in (0, 4, 6)]
    batches = cut_batch(lines, [], marks)
    assert len(batches) > 2
    found = [part[key][mark[1]] for _, part, _, part_marks in batches for mark in part_marks]
    assert found == [line + '0', line + '4', line + '6']
    assert [mark[3] for _, _, _, part_marks in batches for mark in part_marks] == [0, 4, 6]


def load_facilities_text(main_rig, text):
    path = main_rig.path.parent.parent / 'reloaded.conf'
    path.write_text(text)
    return load_facilities(str(path))


def test_a_channel_carries_any_line_a_message_can_make():
    main_end, receiver_end = channel_pair()
    sender, reader = Channel(receiver_end), Channel(main_end)
    lines = {('app', 'root', None): ['caf\u00e9 \ud800 \x00\n', 'x' * 300000 + '\n']}
    sender.send_blocking(('batch', lines, [('line', 1, ('app', 'root', 'h'), 'y\n')]))
    received = []
    while not received:
        received = reader.receive()
    assert received == [('batch', lines, [('line', 1, ('app', 'root', 'h'), 'y\n')])]
    sender.close()
    assert reader.receive() == [] and reader.eof


def test_a_batch_is_cut_into_messages_the_main_process_takes_in_order():
    """A4-w6: a receiver's batch is cut at BATCH_CHARS characters of text per message (the
    main process refuses a message over channel.max_message_bytes), lines of each file and
    events in their order; a batch that fits stays one message."""
    from loghogd.receiver import BATCH_CHARS, cut_batch
    small = {('app', 'root', None): ['a\n', 'b\n']}
    assert cut_batch(small, []) == [('batch', small, [], [])]
    line = 'x' * (BATCH_CHARS // 3) + '\n'
    lines = {('app', 'root', None): [line] * 5 + ['last\n'],
             ('app', 'db', None): ['y' * (BATCH_CHARS + 10) + '\n']}
    events = [('line', 7, ('app', 'root', None), line)] * 4 + [('frame', 7)]
    batches = cut_batch(lines, events)
    assert len(batches) > 3
    for _, part, part_events, _ in batches:
        size = sum(len(text) for pending in part.values() for text in pending)
        size += sum(len(event[3]) for event in part_events if event[0] == 'line')
        assert size <= BATCH_CHARS or (len(part) == 1 and len(next(iter(part.values()))) == 1)
    joined = {}
    for _, part, _, _ in batches:
        for key, pending in part.items():
            joined.setdefault(key, []).extend(pending)
    assert joined == lines
    assert [e for _, _, part_events, _ in batches for e in part_events] == events


def test_the_main_end_of_a_channel_refuses_a_message_over_its_bound_and_garbage():
    import socket
    import struct
    from loghogd.channel import Channel, ChannelError
    for data in (struct.pack('!I', 1 << 31) + b'x' * 100, struct.pack('!I', 4) + b'\xff\xfe\xfd\xfc'):
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        try:
            theirs.sendall(data)
            with pytest.raises(ChannelError):
                Channel(ours).receive(max_bytes=1 << 20)
        finally:
            ours.close()
            theirs.close()


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


class WatermarkRig:
    """The main process (Writer, Rotator, Server on a loop, ReceiverPool) and two
    receivers (Server on a ForwardingWriter, with its Watermark), on one fake clock, the
    day before a daily rotation."""

    def __init__(self, tmp_path):
        import datetime

        from loghogd.compressor import Compressor
        from loghogd.loop import EventLoop
        from loghogd.receiver import Watermark
        from loghogd.rotation import Rotator
        from loghogd.writer import Writer
        conf = tmp_path / 'facilities.conf'
        conf.write_text('[app]\nrotate = daily\nbackup_count = 3\n')
        table = load_facilities(str(conf))
        self.folder = tmp_path / 'log' / 'app'
        self.midnight = time.mktime(datetime.datetime(2024, 5, 16).timetuple())
        self.clock = clock = Clock(self.midnight - 10)
        self.counters = Counters()
        (tmp_path / 'log').mkdir()
        (tmp_path / 'lib').mkdir()
        self.writer = Writer(str(tmp_path / 'log'), self.counters)
        self.compressor = Compressor('gzip', 1, lambda: None)
        self.rotator = Rotator(self.writer, table, str(tmp_path / 'log'), str(tmp_path / 'lib'),
                               self.compressor, self.counters)
        self.rotator.start(clock())
        self.loop = EventLoop()
        self.server = main = Server(load_config(None), table, self.writer, self.counters, self.loop,
                      BoundSockets(), clock=clock)
        self.pool = ReceiverPool(2, BoundSockets(), None)
        self.pool.server = main
        self.pool.max_message_bytes = 1 << 26
        self.receivers = []
        for slot in range(2):
            main_end, receiver_end = channel_pair()
            channel = Channel(receiver_end)
            forwarding = ForwardingWriter(channel)
            server = Server(load_config(None), table, forwarding, Counters(), None,
                            BoundSockets(), clock=clock)
            server.acknowledger = ForwardingAcknowledger(forwarding)
            receiver = self.pool.receivers[slot] = Receiver(self.pool, slot, 0, Channel(main_end))
            self.loop.register(main_end, 1, receiver.on_event)
            self.receivers.append((server, forwarding, Watermark(server, channel), receiver))

    def receive(self, slot, body, send):
        """Receiver ``slot`` reads a message at the clock's time (and sends it or not)."""
        server, forwarding = self.receivers[slot][:2]
        server._read_clock()
        server.ingest(Connection().splitter.feed(memoryview(
            encode_message('app', 'root', 1, 0, 'h', body))), Connection())
        if send:
            forwarding.flush(self.clock(), force=True)

    def take_deadline(self, slot):
        """Receiver ``slot`` reads what the main process sent it."""
        server, forwarding, watermark, _ = self.receivers[slot]
        ChannelReader(server, forwarding.channel, server.acknowledger, watermark).on_event(0)
        return watermark.deadline

    def main_pass(self):
        """The main process's loop pass: read the channels, flush, run its tasks."""
        self.loop.run_once(0.05)
        self.writer.flush(self.clock())
        for task in (self.pool, self.rotator):
            deadline = task.next_deadline()
            if deadline is not None and self.clock() >= deadline:
                task.tick(self.clock())

    def close(self):
        self.writer.close(self.clock())
        self.rotator.close()
        self.compressor.close()

    def files(self):
        """{'backup' or 'live': [bodies]}: the backup of the 15th and the live file."""
        import os
        bodies = {}
        for name in os.listdir(self.folder):
            key = 'live' if name == 'root.log' else 'backup'
            assert key == 'live' or name.startswith('root.log.2024-05-15'), name
            bodies[key] = [line.rsplit(' - ', 1)[1]
                           for line in (self.folder / name).read_text().splitlines()]
        return bodies


@pytest.fixture
def watermark(tmp_path):
    rig = WatermarkRig(tmp_path)
    yield rig
    rig.close()


def test_a_rotation_waits_for_every_receiver_to_hand_over_what_it_received_before(watermark):
    """A4-w13: a receiver stamps lines when it reads them and hands them over later; the
    main process holds a deadline's rotation until every receiver has said (after its
    clock passed the deadline) that it handed over what it received before, so the lines
    of the day before go to its file and none of the day after."""
    rig, midnight, clock = watermark, watermark.midnight, watermark.clock
    rig.receive(0, 'day one', send=True)
    rig.main_pass()
    assert rig.pool.held == midnight
    assert [rig.take_deadline(slot) for slot in (0, 1)] == [midnight] * 2
    clock.now = midnight - 0.1
    rig.receive(0, 'late in the day', send=False)      # read before midnight, held back
    clock.now = midnight + 0.2
    rig.main_pass()                                    # the main process's clock passed
    clock.now = midnight + 0.25
    rig.receive(1, 'next day', send=True)    # the other receiver: its watermark first
    rig.main_pass()
    assert rig.pool.held == midnight and rig.receivers[1][3].parked
    clock.now = midnight + 0.3
    rig.receive(0, 'next day too', send=True)
    rig.main_pass()
    rig.main_pass()
    assert rig.pool.held != midnight
    rig.writer.flush(clock())
    assert rig.files() == {'backup': ['day one', 'late in the day'],
                           'live': ['next day', 'next day too']}
    assert rig.counters.events['rotation_watermark_timeouts'] == 0


def test_a_receiver_that_never_hands_over_holds_the_rotation_a_second_at_most(watermark):
    rig, midnight, clock = watermark, watermark.midnight, watermark.clock
    rig.receive(0, 'day one', send=True)
    rig.main_pass()
    rig.take_deadline(0)       # receiver 1 is stuck: it never reads its channel again
    clock.now = midnight + 0.1
    rig.receive(0, 'next day', send=True)
    rig.main_pass()
    rig.main_pass()
    assert rig.pool.held == midnight and rig.files() == {'live': ['day one']}
    clock.now = midnight + 0.1 + WATERMARK_WAIT_S
    rig.main_pass()
    rig.main_pass()
    rig.writer.flush(clock())
    assert rig.files() == {'backup': ['day one'], 'live': ['next day']}
    assert rig.counters.events['rotation_watermark_timeouts'] == 1


def test_a_connection_a_receiver_refuses_goes_to_another_and_stays_open(tmp_path):
    """A4-w10: the main process keeps its copy of a handed-off connection until the
    receiver answers; one it refuses (out of descriptors: the kernel closed the copy it
    could not give) goes to the next receiver, which is then the only holder."""
    import socket

    from loghogd.channel import handoff_pair, take_handed_off
    main = Rig(tmp_path)
    pool = ReceiverPool(2, BoundSockets(), None)
    pool.server = main.server
    ends = []
    for slot in range(2):
        main_end, _ = channel_pair()
        main_handoff, receiver_handoff = handoff_pair()
        pool.receivers[slot] = Receiver(pool, slot, 0, Channel(main_end), main_handoff)
        ends.append(receiver_handoff)
    client, accepted = socket.socketpair()
    with client:
        pool.hand_off(accepted, 'tcp', ('127.0.0.1', 1))
        (lost, _, _, number), = take_handed_off(ends[0])
        lost.close()                  # as the kernel does for a process at its limit
        pool._handed(pool.receivers[0], [], [number])
        assert main.counters.events['handoffs_refused'] == 1
        (taken, kind, address, number), = take_handed_off(ends[1])
        assert accepted.fileno() != -1     # not closed before the second answers
        pool._handed(pool.receivers[1], [number], [])
        assert accepted.fileno() == -1 and pool.receivers[1].handing == {}
        client.sendall(b'still open')
        assert taken.recv(100) == b'still open'
        taken.close()
        assert client.recv(100) == b''     # no copy left behind
    # Offered none while it is full: the next connection goes to the other one.
    other, accepted = socket.socketpair()
    with other:
        pool.hand_off(accepted, 'tcp', ('127.0.0.1', 2))
        assert take_handed_off(ends[0]) == []
        (again, _, _, _), = take_handed_off(ends[1])
        again.close()


def test_a_receiver_that_cannot_apply_a_reload_is_killed_and_started_again(tmp_path):
    """_kill called itself (RecursionError): a receiver that said it could not apply the
    reloaded facilities was killed only by the error's way out (as a broken receiver), and
    one that had not answered in RELOAD_CONFIRM_S was never killed."""
    import subprocess

    from loghogd.loop import EventLoop
    main = Rig(tmp_path)
    main.server.loop = EventLoop()
    pool = ReceiverPool(2, BoundSockets(), None)
    pool.server = main.server
    child = subprocess.Popen(['sleep', '60'])
    main_end, _ = channel_pair()
    receiver = pool.receivers[0] = Receiver(pool, 0, child.pid, Channel(main_end))
    pool.generation = 1
    pool._reloaded(receiver, 1, False)
    assert receiver.exited and receiver.reaped
    assert receiver.exit_status == 'killed by SIGKILL'
    assert 0 in pool.restart_at


def test_a_deadline_that_comes_again_after_the_clock_went_back_is_held_again(watermark):
    rig, midnight, clock = watermark, watermark.midnight, watermark.clock
    rig.receive(0, 'day one', send=True)
    rig.main_pass()
    for slot in (0, 1):
        rig.take_deadline(slot)
    clock.now = midnight + 0.1
    for slot in (0, 1):
        rig.receive(slot, 'next day %d' % slot, send=True)
    rig.main_pass()
    rig.main_pass()
    assert rig.pool.held == midnight + 86400     # let go, and the next one held
    clock.now = midnight - 3600                  # set back an hour
    rig.server.now = clock.now
    rig.rotator.tick(clock())     # (the loop ticks every task when the clock goes back)
    rig.main_pass()
    assert rig.pool.held == midnight


def test_each_receiver_slot_reads_its_own_udp_socket_of_every_address(tmp_path):
    """Issue 18: with workers = 2 each address has a socket per receiver; slot N gets the
    N-th of each (the same after a restart), and status sees them all with their reader."""
    from tests.unit.test_binding import bound_with
    from loghogd.receivers import split_bound
    bound = bound_with(tmp_path, 2)
    try:
        receivers_bound, main_bound = split_bound(bound)
        assert not [kind for kind, _ in main_bound.sockets if kind == 'udp']
        pool = ReceiverPool(2, receivers_bound, None)
        first, second = ([sock for _, sock in pool.bound_for(slot).sockets] for slot in (0, 1))
        assert len(first) == len(second) == 2            # IPv4 and IPv6
        assert not set(first) & set(second)
        assert [sock.getsockname() for sock in first] == [sock.getsockname() for sock in second]
        assert [sock for _, sock in pool.bound_for(1).sockets] == second   # a restart
        assert sorted((sock.fileno(), slot) for sock, slot in pool.udp_sockets()) == sorted(
            [(sock.fileno(), 0) for sock in first] + [(sock.fileno(), 1) for sock in second])
    finally:
        bound.close()


def test_a_batch_carries_the_counters_it_moved_in_one_message_and_cpu_is_read_each_second(
        monkeypatch):
    """Each batch's counters go with it, in the same channel message's turn (a report
    before the batch), not in a report of their own in the next pass: with at most one
    ride every 20 ms, nearly every batch of a flood was followed by one more message and
    main-process wake-up (10-21% of a receiver's busy samples in tcp8).  getrusage (a
    system call) is made at most once a second."""
    import resource
    from loghogd import receiver as receiver_module
    calls = []
    real = resource.getrusage
    monkeypatch.setattr(receiver_module.resource, 'getrusage',
                        lambda who: calls.append(who) or real(who))
    sent = []

    class FakeChannel:
        def send(self, message):
            sent.append(message[0])

        def flush(self):
            pass

    class FakeServer:
        def __init__(self):
            self.counters = Counters()
            self.writer = ForwardingWriter(FakeChannel())
            self.connections = []
            self.now = 1000.0

    server = FakeServer()
    reporter = receiver_module.StatsReporter(server, server.writer.channel)
    server.writer.reporter = reporter
    reporter.tick(server.now)             # the first report; the next tick in a second
    del sent[:]
    for n in range(100):                  # 100 batches within 0.1 s
        server.now += 0.001
        server.counters.accepted[('app', 'root')] += 10
        assert reporter.is_due_with_batch(server.now)
        reporter.report(flush=False)
        sent.append('batch')
        # Nothing left for a report of its own before the next tick:
        assert reporter.next_deadline() == 1000.0 + receiver_module.STATS_INTERVAL_S
    assert sent == ['stats', 'batch'] * 100
    assert len(calls) == 1
    server.now += 1.0
    server.counters.accepted[('app', 'root')] += 1
    reporter.report()
    assert len(calls) == 2
