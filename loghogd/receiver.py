"""A receiver process ([server] workers > 1, issue 18): sockets in, ready lines out.

A receiver is the daemon's own ``Server`` with its own loop, on the listening sockets it
shares with the other receivers (inherited, as in a classic pre-forking server: the
kernel gives each connection to one receiver, which keeps it for its whole life, so a
connection's order is exact).  It splits, inflates, decodes, verifies, routes and
formats exactly as the single-process daemon does (``Server.ingest``), with two objects
in the place of the writer and the acknowledger:

- ``ForwardingWriter`` collects the lines per file and sends them to the main process
  once per loop pass (a batch), waiting while the main process is behind;
- ``ForwardingAcknowledger`` numbers the frames of acknowledged connections and sends,
  in each batch, what became of every frame (a line, a rejection, a session frame): the
  main process, which owns the sessions and knows when a line is written and synced,
  decides duplicates and sends back the acks, which the receiver passes to the peer.
- ``ForwardingWriter.take_signed`` passes a v2-signed line's (session, number, time)
  on with it: the replay check is the main process's (attack finding A4-w12).

Counters are counted here and sent to the main process every second (``StatsReporter``).
"""

import logging
import os
import resource
import select
import socket

from loghog.wire import FLAG_SESSION, KNOWN_FLAGS

from .channel import BATCH_BYTES, take_handed_off
from .connections import StreamListener
from .files import format_address
from .protocol import Rejection
from .reloader import Reloader, parse_content

log = logging.getLogger('loghogd.receiver')

STATS_INTERVAL_S = 1.0
# A batch goes to the main process once it holds this many lines (and frame events), or
# when its first is this old: the main process then wakes once for many lines.  The delay
# adds at most that to a line's way to the disk: with 2 ms, tcp-paced-10k's latency was
# 2.35 / 19.9 ms (p50 / p99) against 0.54 / 8.5 with workers = 1; with 0.5 ms, 1.05 / 8.6.
BATCH_LINES = 2000
BATCH_DELAY_S = 0.0005
# At shutdown, after its last batch: a receiver waits for the acks of what it sent (the
# main process writes and fsyncs it first) at least FINAL_ACKS_S, and until this long after
# its stop began: the main process kills it at receivers.STOP_RECEIVERS_S (9 s).  With
# 1 s only, a slow fsync (a busy disk) made it close connections whose acks were on their
# way, and their clients sent everything again to the next daemon (A7-2).
FINAL_ACKS_S = 1.0
FINAL_ACKS_WITHIN_S = 8.5


# A batch is cut into messages of about this many characters of text (a character is
# at most 4 bytes in marshal's UTF-8): the main process takes no message over
# channel.max_message_bytes (attack finding A4-w6).
BATCH_CHARS = BATCH_BYTES // 4


def cut_batch(lines, events, signed=()):
    """('batch', lines, events, signed) messages for ``lines`` ({key: [line]}),
    ``events`` (in order) and ``signed`` (the v2 marks of lines: (key, index in
    ``lines[key]``, ...), ``ForwardingWriter.take_signed``), each of about BATCH_CHARS
    characters at most (one line more than that is a message of its own).  One message
    when it fits: the common case costs a sum."""
    signed = list(signed)
    size = sum(sum(map(len, pending)) for pending in lines.values())
    size += sum(len(event[3]) for event in events if event[0] == 'line')
    if size <= BATCH_CHARS:
        return [('batch', lines, events, signed)]
    marks = {(mark[0], mark[1]): mark for mark in signed}
    batches = []
    part, part_marks, part_size = {}, [], 0
    for key, pending in lines.items():
        for index, line in enumerate(pending):
            if part_size + len(line) > BATCH_CHARS and part_size:
                batches.append(('batch', part, [], part_marks))
                part, part_marks, part_size = {}, [], 0
            into = part.setdefault(key, [])
            mark = marks.get((key, index))
            if mark is not None:   # its index in this message's list of the file
                part_marks.append((key, len(into)) + tuple(mark[2:]))
            into.append(line)
            part_size += len(line)
    if part:
        batches.append(('batch', part, [], part_marks))
    part, part_size = [], 0
    for event in events:
        length = len(event[3]) if event[0] == 'line' else 0
        if part_size + length > BATCH_CHARS and part_size:
            batches.append(('batch', {}, part, []))
            part, part_size = [], 0
        part.append(event)
        part_size += length
    if part:
        batches.append(('batch', {}, part, []))
    return batches


class ForwardedFile:
    """Lines of one file (facility and, with file_per_host, host) not yet sent."""

    __slots__ = ('key', 'pending')

    def __init__(self, key):
        self.key = key
        self.pending = []


class ForwardingWriter:
    """The writer's part of ``Server``'s contract, sending lines to the main process."""

    files = {}        # no file is open here (status asks the main process)
    lost = ()

    def __init__(self, channel):
        self.channel = channel
        self.batch_started_at = None
        self.queued = {}
        self.events = []       # what became of acknowledged connections' frames, in order
        self.signed = []       # the v2 marks of queued lines of plain connections

    @staticmethod
    def file_key(facility, host):
        """The key a line of ``facility`` from ``host`` goes under in a batch."""
        return facility.app, facility.name, host if facility.file_per_host else None

    def queue_for(self, facility, host):
        key = self.file_key(facility, host)
        queued = self.queued.get(key)
        if queued is None:
            queued = self.queued[key] = ForwardedFile(key)
        return queued

    def flush(self, now, open_budget_s=None, force=False):
        """Send what is queued as one batch (waiting while the main process is behind),
        once it holds BATCH_LINES lines or its first is BATCH_DELAY_S old (``force``:
        now).  Batches of a loop pass each woke the main process for a few lines: its
        select() and reads cost more than its writing (py-spy, tcp8)."""
        if not self.queued and not self.events:
            return 0
        if self.batch_started_at is None:
            self.batch_started_at = now
        if not force and now < self.batch_started_at + BATCH_DELAY_S:
            size = len(self.events) + sum(len(f.pending) for f in self.queued.values())
            if size < BATCH_LINES:
                return 0
        lines = {key: f.pending for key, f in self.queued.items() if f.pending}
        events, self.events = self.events, []
        signed, self.signed = self.signed, []
        self.queued = {}
        self.batch_started_at = None
        if self.reporter is not None and self.reporter.is_due_with_batch(now):
            self.reporter.report(flush=False)   # the counters of these lines come first
        for batch in cut_batch(lines, events, signed):
            self.channel.send_blocking(batch)
        return 0

    def take_signed(self, envelope, source, acks, facility, host):
        """``Server.take_signed`` in a receiver: a v2 message's replay check is the main
        process's, which sees the messages of every receiver and owns the sessions that
        tell a resend from a replay (attack finding A4-w12: a receiver's own ReplayGuard
        refused a resend that landed where its original had, and let a replay through on
        another receiver).  Its (session, number, time) go with its line, which is
        queued next: in its event (an acknowledged connection) or, with the line's place
        in its file's list and who sent it, in the batch's ``signed``."""
        mark = (bytes(envelope.session), envelope.seq, envelope.time_ms)
        if acks is not None:
            acks.signed = mark
            return None
        key = self.file_key(facility, host)
        queued = self.queued.get(key)
        identity = getattr(source, 'identity', None) or (source.peer_host, None)
        self.signed.append((key, len(queued.pending) if queued is not None else 0) + mark
                           + (identity, source.peer, source.peer_host))
        return None

    finish = None     # set by ``serve``: after the last batch, wait for its acks
    reporter = None   # set by ``serve``: its counters go with each batch

    def close(self, now):
        self.flush(now, force=True)
        if self.finish is not None:
            self.finish()

    def take_lost(self):
        return set()

    def next_deadline(self):
        if self.batch_started_at is None:
            return None
        return self.batch_started_at + BATCH_DELAY_S

    def start_syncer(self, wake):
        pass

    def reopen(self):
        pass

    def retarget(self, table):
        pass


class ForwardedAcks:
    """An acknowledged connection's state as a receiver knows it: frames received, and
    how many the main process has acknowledged (``is_done``: the connection may close)."""

    __slots__ = ('cid', 'events', 'received', 'acked', 'current', 'signed')
    session_key = None     # duplicates (and replays) are decided by the main process

    def __init__(self, cid, events, received):
        self.cid = cid
        self.events = events
        self.received = self.acked = received
        self.current = None     # index in ``events`` of the frame being handled
        self.signed = None      # the current frame's v2 mark (ForwardingWriter.take_signed)

    @property
    def files(self):
        return self

    def add(self, log_file):
        """``Server.ingest`` queued the current frame's line in ``log_file``: it goes in
        the events instead, where the main process decides whether it is a duplicate."""
        line = log_file.pending.pop()
        if self.signed is None:
            self.events[self.current] = ('line', self.cid, log_file.key, line)
        else:
            self.events[self.current] = ('line', self.cid, log_file.key, line, self.signed)
            self.signed = None

    def reject(self, reason):
        if self.current is not None:
            self.events[self.current] = ('rejected', self.cid, reason)

    def is_done(self):
        return self.acked >= self.received


class ForwardingAcknowledger:
    """The acknowledger's part of ``Server``'s contract in a receiver (see module doc)."""

    def __init__(self, writer):
        self.writer = writer
        self.connections = {}    # cid -> connection
        self._next_cid = 0

    def __bool__(self):
        return False    # nothing to send after a flush: acks come from the main process

    def start(self, connection, frames_before):
        self._next_cid += 1
        cid = self._next_cid
        self.connections[cid] = connection
        self.writer.events.append(('start', cid, frames_before, connection.identity,
                                   connection.peer, connection.peer_host))
        return ForwardedAcks(cid, self.writer.events, frames_before)

    def take_frame(self, acks, frame):
        acks.received += 1
        acks.signed = None
        events = acks.events = self.writer.events   # the list of the batch being built
        if (frame.__class__ is not Rejection and frame[0] & FLAG_SESSION
                and not frame[0] & ~KNOWN_FLAGS):
            acks.current = None
            events.append(('session', acks.cid, bytes(frame[1])))
            return True
        acks.current = len(events)
        events.append(('frame', acks.cid))     # neither written nor rejected (yet)
        return False

    def duplicate(self, acks):
        return False

    def closed(self, connection):
        acks = connection.acks
        self.connections.pop(acks.cid, None)
        self.writer.events.append(('closed', acks.cid))

    def send_acks(self):
        pass

    def forget_lost(self, lost):
        pass

    def expire(self, now):
        pass

    def deliver(self, message):
        """A message from the main process: acks to send, or a connection to close."""
        kind, cid = message[0], message[1]
        connection = self.connections.get(cid)
        if connection is None or connection.closed:
            return
        if kind == 'acks':
            connection.acks.acked = message[3]
            connection.send(message[2])
        elif kind == 'close':
            connection.close(message[2])


class StatsReporter:
    """A task of the receiver's server: its counters, with every batch of lines that moved
    them, in the next loop pass when a counter moved without one (a rejection), and every
    second; its own figures (CPU, memory: a system call) at most every second."""

    def __init__(self, server, channel):
        self.server = server
        self.writer = server.writer
        self.channel = channel
        self._next = 0.0
        self._reported = None
        self._usage = None
        self._usage_at = float('-inf')

    def _fingerprint(self):
        counters = self.server.counters
        return (sum(counters.rejected.values()), sum(counters.events.values()),
                sum(counters.accepted.values()))

    def is_due_with_batch(self, now):
        """Whether a batch sent now carries the counters: whenever they moved.  (At most
        every 20 ms, the counters of the batches between went in a report of their own in
        the next pass, one more channel message and main-process wake-up per batch: 10-21%
        of a receiver's busy samples in tcp8; only every 20 ms, they reached the main
        process up to 20 ms after their lines.)"""
        return self._fingerprint() != self._reported

    def next_deadline(self):
        # Counters that moved go with the next batch, or, when none is pending (only
        # rejections), in the next pass.
        if self.writer.batch_started_at is None and self._fingerprint() != self._reported:
            return 0.0
        return self._next

    def tick(self, now):
        self._next = now + STATS_INTERVAL_S
        self.report()

    def report(self, flush=True):
        self._reported = self._fingerprint()
        counters = self.server.counters
        if self.server.now >= self._usage_at + STATS_INTERVAL_S or self._usage is None:
            self._usage = resource.getrusage(resource.RUSAGE_SELF)
            self._usage_at = self.server.now
        usage = self._usage
        open_now = {}
        for connection in self.server.connections:
            open_now[connection.kind] = open_now.get(connection.kind, 0) + 1
        self.channel.send(('stats', {
            'events': dict(counters.events),
            'accepted': {'%s\0%s' % key: n for key, n in counters.accepted.items()},
            'accepted_bytes': {'%s\0%s' % key: n for key, n in counters.accepted_bytes.items()},
            'rejected': dict(counters.rejected),
            'rejected_by_peer': dict(counters.rejected_by_peer),
            'connections_accepted': dict(counters.connections_accepted),
        }, {
            'pid': os.getpid(),
            'connections': len(self.server.connections),
            'open': open_now,
            'messages': sum(counters.accepted.values()),
            'cpu_s': round(usage.ru_utime + usage.ru_stime, 3),
            'max_rss_kb': usage.ru_maxrss,
        }))
        if flush:
            self.channel.flush()


class Watermark:
    """A task of the receiver's server: the main process rotates a file at a deadline once
    every receiver has handed over the lines it received before it (attack finding
    A4-w13).  The main process sends its next deadline; at the first clock reading at or
    after it (the reading its next lines are stamped with), this receiver sends what it
    holds, then ('stamped', that reading): the lines after that message were received
    after the deadline.  The loop wakes at the deadline even with nothing to read."""

    def __init__(self, server, channel):
        self.server = server
        self.channel = channel
        self.deadline = None
        self._read_clock = server._read_clock
        server._read_clock = self.read_clock

    def read_clock(self):
        now = self._read_clock()
        if self.deadline is not None and now >= self.deadline:
            self.deadline = None
            self.server.writer.flush(now, force=True)
            self.channel.send_blocking(('stamped', now))
        return now

    def next_deadline(self):
        return self.deadline

    def tick(self, now):
        self.read_clock()


class ChannelReader:
    """The receiver's end of its channel in its loop: messages from the main process."""

    def __init__(self, server, channel, acknowledger, watermark=None):
        self.server = server
        self.channel = channel
        self.acknowledger = acknowledger
        self.watermark = watermark

    def on_event(self, mask):
        for message in self.channel.receive():
            if message[0] == 'deadline':
                self.watermark.deadline = message[1]
            elif message[0] == 'stop':
                self.server.stopping = True     # the main process's SIGTERM (or SIGINT)
            elif message[0] == 'reload':
                self.server.reloader.take(message[1], message[2])
            else:
                self.acknowledger.deliver(message)
        if self.channel.eof:
            # The main process is gone (or done with us): nothing can be written any more.
            self.server.loop.unregister(self.channel.sock)
            self.server.stopping = True


class ChannelReloader(Reloader):
    """Reloads in a receiver: the main process sends the bytes of facilities.conf it
    loaded, with their generation (receivers.py); they are parsed on a thread as the main
    process's are, the table swapped in a later pass, and the main process told which
    generation this receiver routes with.  A SIGHUP of its own changes nothing: the main
    process's table is the one."""

    def __init__(self, server, channel, last_content):
        super().__init__(server, parse=self._parse_given)
        self.channel = channel
        self.last_content = last_content   # the table it was forked with
        self.given = None      # (generation, content): the latest the main process sent
        self.parsing = None    # the generation of the parse under way

    def take(self, generation, content):
        self.given = (generation, content)
        self.request()

    def request(self):
        if self.given is not None:
            super().request()

    def _parse_given(self, config, last_content):
        self.parsing, content = self.given
        if content == last_content:
            return content, None, []
        return parse_content(config, content)

    def announce(self, sentence, content):
        log.debug('%s (from the main process)', sentence)

    def _apply(self, content, table, errors):
        generation = self.parsing
        try:
            super()._apply(content, table, errors)
        finally:
            self.channel.send(('reloaded', generation, not errors))
            self.channel.flush()


class HandOffReader:
    """Connections the main process accepted and handed to this receiver.  Each is
    answered on the channel: taken, or refused because this receiver is out of file
    descriptors (the kernel closed the copy it could not give us; attack finding A4-w10:
    the connection was lost).  The main process keeps its own copy until the answer and
    gives a refused one to another receiver, or keeps it waiting, as one process keeps
    a connection in the backlog while it has no descriptor for it."""

    def __init__(self, server, sock, tls_context, channel):
        self.server = server
        self.sock = sock
        self.channel = channel
        # Used to open the handed-off sockets only: they listen on nothing here.
        self.listeners = {'tcp': StreamListener(server, None, 'tcp'),
                          'tls': StreamListener(server, None, 'tls', tls_context)}

    def on_event(self, mask):
        taken = take_handed_off(self.sock)
        accepted, refused = [], []
        for sock, kind, address, number in taken:
            listener = self.listeners.get(kind)
            if sock is None or self.server.stopping or listener is None:
                if sock is not None:
                    sock.close()    # stopping: another receiver takes it
                else:
                    self.server.warn('handoff_refused', 'this receiver (pid %d) is out of '
                                     'file descriptors: a %s connection from %s goes to '
                                     'another (raise the limit, or lower max_connections)',
                                     os.getpid(), kind, format_address(*address[:2]))
                refused.append(number)
            else:
                listener._open(sock, address)
                accepted.append(number)
        if taken:
            self.channel.send_blocking(('handoff', accepted, refused))
        else:
            try:
                alive = self.sock.recv(1, socket.MSG_PEEK) != b''
            except (BlockingIOError, InterruptedError):
                alive = True
            except OSError:
                alive = False
            if not alive:
                self.server.loop.unregister(self.sock)


def serve(server, channel, handoff=None, tls_context=None):
    """Run ``server`` (a ``Server`` built on a ``ForwardingWriter``) as a receiver until
    SIGTERM (or the main process goes away); return the exit status.  Connections come
    over ``handoff`` (TLS ones are wrapped with ``tls_context``), datagrams on the UDP
    sockets of ``server``.

    SIGTERM runs ``Server.shutdown``: what peers already sent is read and sent to the main
    process; then (``ForwardingWriter.close``) the receiver says it is done and waits for
    the acks of what it sent (FINAL_ACKS_S at least, up to FINAL_ACKS_WITHIN_S after its stop
    began), before the connections close."""
    writer = server.writer
    reloader = ChannelReloader(server, channel, server.reloader.last_content)
    server.tasks[server.tasks.index(server.reloader)] = reloader
    server.reloader = reloader
    acknowledger = ForwardingAcknowledger(writer)
    server.acknowledger = acknowledger
    server.take_signed = writer.take_signed   # decided in the main process (A4-w12)
    watermark = Watermark(server, channel)
    reader = ChannelReader(server, channel, acknowledger, watermark)
    reporter = writer.reporter = StatsReporter(server, channel)
    server.tasks += [reporter, watermark]
    server.loop.register(channel.sock, 1, reader.on_event)   # selectors.EVENT_READ
    if handoff is not None:
        handoffs = HandOffReader(server, handoff, tls_context, channel)
        server.loop.register(handoff, 1, handoffs.on_event)
    writer.finish = lambda: _wait_for_final_acks(server, channel, reporter, acknowledger)
    server.run()
    return 0


def _wait_for_final_acks(server, channel, reporter, acknowledger):
    reporter.report()
    channel.send_blocking(('done',))
    deadline = server.clock() + FINAL_ACKS_S
    if server.stopped_at is not None:
        deadline = max(deadline, server.stopped_at + FINAL_ACKS_WITHIN_S)
    while not channel.eof and server.clock() < deadline:
        if not any(not c.closed and c.acks is not None and not c.acks.is_done()
                   for c in acknowledger.connections.values()):
            break
        select.select([channel.sock], [], [], 0.05)
        for message in channel.receive():
            acknowledger.deliver(message)
