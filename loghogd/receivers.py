"""The main process's side of the receivers ([server] workers > 1, issue 18).

    listening sockets (inherited, shared)
        │ the kernel gives each connection / datagram to one receiver
        ▼
    receiver 1 … receiver N   (receiver.py: read, split, inflate, decode, verify, route,
        │                      format; one Server and loop each)
        │ a socketpair each: batches of lines per file, and what became of each frame
        │ of acknowledged connections  ◄── acks (and "close this one") come back
        ▼
    main process: ReceiverPool ──► Writer (files, fsync) ─► Acknowledger (sessions, acks)
                                   Rotator, Compressor, status, signals, reload

The main process accepts TCP and TLS connections and hands each to a receiver in turn; it
keeps its copy until the receiver says it took it (one out of file descriptors gives it
back: it goes to another, A4-w10).

The main process keeps everything that must have one owner.  ``ReceiverPool`` forks the
receivers, reads their channels in the main loop, queues their lines in the writer, and
replays their acknowledged connections' frames into the one ``Acknowledger``
(``RemoteConnection`` stands for such a connection there), which decides duplicates
across receivers and sends the acks back once the lines are written and synced.  The
replay check of v2-signed lines is made here too, with the one ReplayGuard and the
sessions (``_take_signed``): a receiver checks the MAC and the clock only.  A scheduled
rotation waits until every receiver has handed over the lines it received before its
deadline (the watermark, A4-w13: see "rotation's watermark" below).

A receiver that dies is logged and started again (at most once a second per slot); its
connections are gone, so their clients resend what was not acknowledged.  SIGHUP is the
main process's: it reads and parses facilities.conf, applies it, then sends the very bytes
it loaded to every receiver (a generation number with them); each parses them on a thread,
swaps its table and says so; "reloaded" is logged once every receiver routes with the new
table, so that a message sent after that line is routed with it (attack findings A4-w2,
A4-w3, A4-w14: receivers read the file at their own time on a SIGHUP passed on, and one
started during a parse never got it).  SIGTERM stops the receivers first (they drain
their peers into the writer), then the main process writes, syncs and stops.
"""

import collections
import logging
import os
import resource
import signal
import time

from loghog.wire import FLAG_SESSION

from . import protocol
from .binding import BoundSockets
from .channel import Channel, channel_pair, hand_off, handoff_pair, max_message_bytes
from .connections import StreamListener
from .protocol import Rejection

log = logging.getLogger('loghogd.receivers')

RESTART_INTERVAL_S = 1.0
# A receiver that has not applied a reload this long after the main process sent it is
# started again (with the new table: it is forked from the main process).  Parsing 20,000
# facilities took a receiver 1.5-3 s.
RELOAD_CONFIRM_S = 30.0
# A receiver whose channel closed is exiting: its status is awaited this long (for the log
# line), then collected later (``tick``).
REAP_PATIENCE_S = 0.1
# Accepted connections kept while no receiver can take them (all being restarted, or
# their hand-off sockets full), and how often they are offered again.
MAX_WAITING = 256
WAITING_RETRY_S = 0.002
# A receiver that refused a connection (out of file descriptors, A4-w10) is offered none
# for this long; then it is tried again.
FULL_BACKOFF_S = 0.5
# After SIGTERM, receivers have this long to drain their peers and exit (server.py's
# DRAIN_TIME_S plus their wait for final acks); then they are killed, so that the
# daemon's 10 s bound holds.
STOP_RECEIVERS_S = 9.0
# The kinds of socket receivers read themselves: UDP, each receiver its own socket of
# every address (binding.py binds one per receiver with SO_REUSEPORT; the kernel hashes
# a sender's addresses and ports to one of them, so a sender's datagrams keep their
# order: one socket shared by two receivers wrote one sender's datagrams out of order,
# 593 of 2000 in make bench's udp-paced-10k).  TCP and TLS connections are accepted by
# the main process and handed off, one receiver after the other (measured: with the
# listening socket shared, the first receiver to wake took all 8 connections of tcp8
# and did 90% of the work).  The [syslog] listeners stay in the main process.
RECEIVER_KINDS = ('udp',)
# The listeners whose connections are handed to receivers.
HANDED_OFF = ('tcp', 'tls')
# What a receiver's reports hold (receiver.StatsReporter): the counters (Counters
# attributes, str keys, int values) and its figures with their types; anything else is
# a broken receiver.
REPORTED_COUNTERS = frozenset(('events', 'accepted', 'accepted_bytes', 'rejected',
                               'rejected_by_peer', 'connections_accepted'))
REPORTED_FIGURES = {'pid': (int,), 'connections': (int,), 'open': (dict,), 'messages': (int,),
                    'cpu_s': (int, float), 'max_rss_kb': (int,)}
# How long the main process holds a scheduled rotation, once its deadline has passed, for
# a receiver that has not yet said it handed over every line it received before the
# deadline (A4-w13; they say so within a loop pass, a millisecond or so): a stopped or
# stuck receiver cannot hold rotation longer; it is logged and counted.
WATERMARK_WAIT_S = 1.0
# Counted by each receiver for itself, not for the daemon: not added up.
OWN_EVENTS = ('reloads', 'reloads_failed')
# The frame an event stands for, for Acknowledger.take_frame (a message, not a session).
_MESSAGE_FRAME = (0, b'')
# A v2-signed line's mark as ``Server.take_signed`` reads it (an envelope's fields).
SignedMark = collections.namedtuple('SignedMark', 'session seq time_ms')


def split_bound(bound):
    """(the receivers' BoundSockets, the main process's): UDP for receivers."""
    receivers, main = BoundSockets(), BoundSockets()
    for part in (receivers, main):
        part.tls_context = bound.tls_context
    for kind, sock in bound.sockets:
        (receivers if kind in RECEIVER_KINDS else main).sockets.append((kind, sock))
    return receivers, main


class HandOffListener(StreamListener):
    """A TCP or TLS listening socket of the main process: each connection it accepts goes
    to a receiver (``ReceiverPool.hand_off``), which owns it from then on."""

    def __init__(self, pool, listener):
        super().__init__(listener.server, listener.sock, listener.kind, listener.tls_context)
        self.pool = pool

    def _open(self, sock, address):
        self.pool.hand_off(sock, self.kind, address)


class RemoteConnection:
    """An acknowledged connection of a receiver, as the Acknowledger sees it."""

    kind = 'tcp'

    def __init__(self, receiver, cid, identity, peer, peer_host):
        self.receiver = receiver
        self.cid = cid
        self.identity = tuple(identity)
        self.peer = peer
        self.peer_host = peer_host
        self.closed = False
        self.acks = None

    def send(self, data):
        if not self.closed:
            self.receiver.channel.send(('acks', self.cid, data, self.acks.acked))
            self.receiver.channel.flush()

    def close(self, reason):
        if self.closed:
            return
        self.receiver.channel.send(('close', self.cid, reason))
        self.receiver.channel.flush()
        self.receiver.pool.connection_closed(self.receiver, self)


class RemotePeer:
    """The sender of a v2-signed line of a receiver's plain connection or datagram, as
    ``Server.take_signed`` and ``Server.reject`` see it."""

    __slots__ = ('identity', 'peer', 'peer_host')
    kind = 'tcp'

    def __init__(self, identity, peer, peer_host):
        self.identity = identity
        self.peer = peer
        self.peer_host = peer_host


def _signed_mark(value):
    """A line's v2 mark (session, number, time) as a receiver sent it."""
    if (value.__class__ is not tuple or len(value) != 3 or value[0].__class__ is not bytes
            or value[1].__class__ is not int or value[2].__class__ is not int):
        raise BrokenReceiver('a signed mark of the wrong shape')
    return SignedMark(*value)


def _marks_by_key(signed):
    """{key: {index: (SignedMark, RemotePeer)}} from a batch's ``signed``."""
    if signed.__class__ is not list:
        raise BrokenReceiver('a batch of the wrong shape')
    marks = {}
    for entry in signed:
        if (entry.__class__ is not tuple or len(entry) != 8 or entry[0].__class__ is not tuple
                or entry[1].__class__ is not int or entry[5].__class__ is not tuple
                or entry[6].__class__ is not str or entry[7].__class__ is not str):
            raise BrokenReceiver('a signed line of the wrong shape')
        marks.setdefault(entry[0], {})[entry[1]] = (
            _signed_mark(entry[2:5]), RemotePeer(entry[5], entry[6], entry[7]))
    return marks


class BrokenReceiver(Exception):
    """A receiver sent what no receiver sends."""


def _host(facility, key):
    """The host of a receiver's line key for ``facility`` in this process's table: a line
    a receiver routed with the table before a reload that turned file_per_host on has no
    host (its facility had one file): it goes to the "unknown" host's file rather than
    stop the daemon (attack finding A4-w1)."""
    host = key[2]
    if host is None and facility.file_per_host:
        return ''
    return host


class Receiver:
    """One receiver process as the main process knows it."""

    def __init__(self, pool, slot, pid, channel, handoff=None):
        self.pool = pool
        self.slot = slot
        self.pid = pid
        self.channel = channel
        self.handoff = handoff  # the socket connections are handed over
        self.proxies = {}       # cid -> RemoteConnection
        self.done = False       # said it sent its last batch
        self.exited = False     # channel closed
        self.reaped = False
        self.stats = {}         # its last figures (pid, connections, messages, CPU)
        self.generation = 0     # the generation of the table it routes with (reloads)
        self.last_counts = {}   # its counters as last reported (cumulative)
        # Rotation's watermark (A4-w13): every line it received before this time (its
        # clock) has been handed over; its messages after the one that said so, kept
        # here (its channel not read) until the held deadline is let go.
        self.stamped = 0.0
        self.parked = None
        # Connections handed over, kept open here until it says it took them:
        # {number: (socket, kind, address)}; and until when it is offered none (full).
        self.handing = {}
        self.full_until = 0.0

    def on_event(self, mask):
        self.pool.read(self)


class ReceiverPool:
    """Forks ``workers`` receivers and is the main process's end of their channels.

    ``attach(server)`` forks them (before the main process starts any thread) and hooks
    the pool into the server: its TCP and TLS listeners hand their connections off,
    channels in its loop, SIGHUP passed on, SIGTERM draining the receivers first.
    ``make_receiver_server(channel, handoff, bound)`` builds,
    in a new receiver, its own Server (receiver.py) and runs it; its result is the exit
    status.
    """

    def __init__(self, workers, bound, make_receiver_server):
        self.workers = workers
        self.bound = bound
        self.make_receiver_server = make_receiver_server
        self.server = None
        self.receivers = {}          # slot -> Receiver
        self.restart_at = {}         # slot -> when it may be started again
        self.restarts = 0
        self.stopping = False
        self._by_key = {}
        self._table = None
        self.max_message_bytes = None   # set by attach (channel.max_message_bytes)
        # Reloads: the generation of the main process's table (one more per new table it
        # applied), and the "reloaded" line waiting for every receiver: (sentence,
        # generation, when receivers that have not answered are started again).
        self.generation = 0
        self._announcing = None
        self._next_slot = 0
        self.waiting = collections.deque()   # accepted connections no receiver took yet
        self._listeners_open = True
        self._retry_at = 0.0        # when waiting connections are offered again
        self._reap_at = 0.0         # when an exited receiver's status is asked for again
        # Rotation's watermark (A4-w13): the deadline held until every receiver has handed
        # over what it received before it; when the hold gives up on a late one; the
        # last deadline let go.
        self.held = None
        self._held_until = None
        self._passed = float('-inf')
        self._parked = []           # the receivers whose messages wait, in that order
        self._handoffs = 0          # the number of the last connection handed over

    # -- start, restart, stop ----------------------------------------------------------

    def attach(self, server):
        self.server = server
        self.max_message_bytes = max_message_bytes(server.max_message_size)
        server.reloader.announce = self.announce_reload
        server.stop_hooks.append(self.stop)
        server.tasks.append(self)
        server.receivers = self
        # Our protocol's TCP and TLS listeners hand off; the [syslog] ones stay in this
        # process (a syslog connection handed to a receiver killed it: A4-w9).
        server.listeners = [HandOffListener(self, listener) if listener.kind in HANDED_OFF
                            else listener for listener in server.listeners]
        for slot in range(self.workers):
            self.spawn(slot)

    def spawn(self, slot):
        main_end, receiver_end = channel_pair()
        main_handoff, receiver_handoff = handoff_pair()
        pid = os.fork()
        if pid == 0:   # the new receiver
            status = 1
            try:
                main_end.close()
                main_handoff.close()
                own = self.bound_for(slot)
                self._leave_main_process(slot)
                status = self.make_receiver_server(Channel(receiver_end), receiver_handoff,
                                                   own)
            except BaseException:
                log.exception('receiver %d (pid %d) failed', slot, os.getpid())
            finally:
                for handler in logging.getLogger().handlers:
                    try:
                        handler.flush()
                    except Exception:
                        pass
                os._exit(status)
        receiver_end.close()
        receiver_handoff.close()
        receiver = Receiver(self, slot, pid, Channel(main_end), main_handoff)
        receiver.generation = self.generation   # forked with the main process's table
        receiver.started_at = receiver.stamped = self.server.clock()
        if self.held is not None:
            receiver.channel.send(('deadline', self.held))
            receiver.channel.flush()
        self.receivers[slot] = receiver
        self.server.loop.register(main_end, 1, receiver.on_event)   # EVENT_READ
        log.info('receiver %d started (pid %d)', slot, pid)
        self._hand_off_waiting()
        return receiver

    def _leave_main_process(self, slot):
        """In new receiver ``slot``: drop the main process's loop, the other channels and
        the other receivers' UDP sockets."""
        signal.set_wakeup_fd(-1)
        for signum in self.server.SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        for receiver in self.receivers.values():
            receiver.channel.close()
            receiver.handoff.close()
        for listener in self.server.listeners:
            listener.sock.close()
        for group in self.bound.udp_groups():   # the other receivers' UDP sockets
            for other, sock in enumerate(group):
                if other != slot:
                    sock.close()
        for sock, _, _ in self.waiting:
            sock.close()
        self.waiting.clear()
        for receiver in self.receivers.values():
            for sock, _, _ in receiver.handing.values():
                sock.close()   # a copy here would keep the connection open past its close
        # What the running main process holds open that a receiver has no use for: its
        # log files (a rotated, deleted file kept its disk space while the receiver ran)
        # and its own connections ([syslog]: their peers missed the close) (A4-w7).
        for log_file in list(self.server.writer.files.values()):
            if getattr(log_file, 'fd', None) is not None:
                try:
                    os.close(log_file.fd)
                except OSError:
                    pass
                log_file.fd = None
        for connection in list(self.server.connections):
            try:
                connection.sock.close()
            except OSError:
                pass
        self.server.loop.close()

    def bound_for(self, slot):
        """The sockets receiver ``slot`` reads itself: its own UDP socket of each address
        (the main process keeps them all open: a receiver started again gets its slot's
        sockets back, with what the kernel queued there while none read them).  With
        one socket per address (no SO_REUSEPORT), the first receiver reads it."""
        bound = BoundSockets()
        bound.tls_context = self.bound.tls_context
        bound.sockets = [('udp', group[slot]) for group in self.bound.udp_groups()
                         if slot < len(group)]
        return bound

    # -- reload: the main process's table, sent to every receiver ----------------------------

    def announce_reload(self, sentence, content):
        """The main process applied a reload (Reloader.announce): send a new table's bytes
        to every receiver, and log ``sentence`` once they all route with it."""
        if content is not None:
            self.generation += 1
            for receiver in self.receivers.values():
                if not receiver.exited:
                    receiver.channel.send(('reload', self.generation, content))
                    receiver.channel.flush()
        if self._announcing is not None:
            log.info('%s', self._announcing[0])   # the one before: superseded, said now
        self._announcing = (sentence, self.generation,
                            self.server.clock() + RELOAD_CONFIRM_S)
        self._check_announcement()

    def _check_announcement(self):
        if self._announcing is None:
            return
        sentence, generation, _ = self._announcing
        if all(r.generation >= generation for r in self.receivers.values() if not r.exited):
            self._announcing = None
            log.info('%s', sentence)

    def _reloaded(self, receiver, generation, applied):
        if applied.__class__ is not bool or generation.__class__ is not int:
            raise BrokenReceiver('a reload answer of the wrong shape')
        if not applied:
            log.error('receiver %d (pid %d) could not apply the reloaded facilities: '
                      'starting a new one (it starts with them)', receiver.slot, receiver.pid)
            self._kill(receiver)
            return
        receiver.generation = max(receiver.generation, min(generation, self.generation))
        self._check_announcement()

    def _kill(self, receiver):
        """Kill ``receiver``; it is started again (``_exited``), with the current table."""
        try:
            os.kill(receiver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._exited(receiver)
        self._check_announcement()

    def stop(self):
        """SIGTERM: receivers are told to stop (on their channel: one "received SIGTERM"
        in the log), drain their peers and exit, while the main process goes on writing and
        acknowledging what they send; after STOP_RECEIVERS_S they are killed."""
        self.stopping = True
        if self.held is not None:
            self._let_go()    # the receivers' channels are all read from now on
        for listener in self.server.listeners:
            listener.pause()
        while self.waiting:
            self.waiting.popleft()[0].close()   # unread: the client sees a reset and resends
        for receiver in self.receivers.values():
            if not receiver.exited:
                receiver.channel.send(('stop',))
                receiver.channel.flush()
        server = self.server
        deadline = time.monotonic() + STOP_RECEIVERS_S
        while (any(not r.exited for r in self.receivers.values())
               and time.monotonic() < deadline):
            server.run_once(max_wait_s=deadline - time.monotonic())
        for receiver in self.receivers.values():
            if not receiver.exited:
                log.warning('receiver %d (pid %d) did not stop in %gs: killed', receiver.slot,
                            receiver.pid, STOP_RECEIVERS_S)
                try:
                    os.kill(receiver.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self._exited(receiver)
            if not receiver.reaped:
                self._reap(receiver, block=True)

    def next_deadline(self):
        pending = [] if self.stopping else list(self.restart_at.values())
        if self._announcing is not None:
            pending.append(self._announcing[2])
        pending += [0.0 for r in self.receivers.values() if r.channel.outgoing and not r.exited]
        if any(r.exited and not r.reaped for r in self.receivers.values()):
            pending.append(self._reap_at)
        if self.waiting and not self.stopping:
            pending.append(self._retry_at)
        watermark = self._watermark_deadline()
        if watermark is not None:
            pending.append(watermark)
        return min(pending) if pending else None

    def tick(self, now):
        self._reap_at = now + REAP_PATIENCE_S
        self._watch_rotation(now)
        if self._announcing is not None and now >= self._announcing[2]:
            generation = self._announcing[1]
            for receiver in list(self.receivers.values()):
                if not receiver.exited and receiver.generation < generation:
                    log.warning('receiver %d (pid %d) did not take the reloaded facilities '
                                'in %gs: starting a new one', receiver.slot, receiver.pid,
                                RELOAD_CONFIRM_S)
                    self._kill(receiver)
            self._check_announcement()
        if self.waiting and now >= self._retry_at:
            self._hand_off_waiting()
            self._retry_at = now + WAITING_RETRY_S
            live = [r for r in self.receivers.values() if not (r.exited or r.done)]
            if live and all(now < r.full_until for r in live):
                self._retry_at = min(r.full_until for r in live)   # all out of descriptors
        for receiver in list(self.receivers.values()):
            if receiver.channel.outgoing and not receiver.exited:
                receiver.channel.flush()
            if receiver.exited and not receiver.reaped:
                self._reap(receiver, patience_s=0)
        for slot, when in list(self.restart_at.items()):
            if now >= when and not self.stopping:
                del self.restart_at[slot]
                self.restarts += 1
                self.server.counters.count('receivers_restarted')
                self.spawn(slot)

    def _exited(self, receiver):
        """``receiver``'s channel closed: its connections are gone."""
        if receiver.exited:
            return
        receiver.exited = True
        self.server.loop.unregister(receiver.channel.sock)
        receiver.channel.close()
        if receiver.handoff is not None:
            receiver.handoff.close()
        for proxy in list(receiver.proxies.values()):
            self.connection_closed(receiver, proxy)
        # Connections it had not answered for: it may have read from them, so they are not
        # given to another (its clients resend what was not acknowledged).
        for sock, _, _ in receiver.handing.values():
            sock.close()
        receiver.handing.clear()
        self._reap(receiver)
        if not self.stopping:
            # Whatever it said before (a receiver that got a SIGTERM of its own says it is
            # done, and was never started again: A4-w4), only the pool stops receivers.
            log.error('receiver %d (pid %d) exited unexpectedly (%s); starting a new one',
                      receiver.slot, receiver.pid, receiver.exit_status
                      if receiver.reaped else 'status not known yet')
            now = self.server.clock()
            self.restart_at[receiver.slot] = max(now, getattr(receiver, 'started_at', 0.0)
                                                 + RESTART_INTERVAL_S)
        self._check_announcement()   # it no longer holds a reload's line back

    def _reap(self, receiver, block=False, patience_s=REAP_PATIENCE_S):
        """Collect ``receiver``'s exit status: at once, within ``patience_s`` (its
        channel closed: it is exiting), or (``block``) whenever it comes."""
        give_up_at = time.monotonic() + patience_s
        while True:
            try:
                pid, status = os.waitpid(receiver.pid, 0 if block else os.WNOHANG)
            except ChildProcessError:
                pid, status = receiver.pid, None
            if pid:
                receiver.reaped = True
                receiver.exit_status = describe_status(status)
                return
            if time.monotonic() >= give_up_at:
                return
            time.sleep(0.001)

    # -- rotation's watermark (A4-w13) ----------------------------------------------------
    #
    # A receiver stamps a line when it reads it and hands it over later; the main process
    # rotates by its own clock.  So the main process holds a scheduled rotation (the
    # Rotator's ``hold``) until every live receiver has said, after its clock passed the
    # deadline, that it handed over all it received before (receiver.Watermark: its
    # ('stamped', time) message).  The lines a receiver sends after saying so wait in
    # ``parked`` (its channel is not read), and the lines of the others are written to the
    # file of the period before, until all have said it (or WATERMARK_WAIT_S after the
    # main process saw the deadline pass: logged); then the hold is let go, the files
    # rotate, and the parked lines go to the new ones.

    def _watermark_deadline(self):
        """When ``tick`` has watermark work (None: none)."""
        rotation = self.server.writer.rotation if self.server is not None else None
        if rotation is None or self.stopping:
            return None
        nearest = rotation.nearest()
        if self.held is None:
            if self.server.now < self._passed:
                return 0.0      # the clock went back: that deadline can come again
            return 0.0 if self._passed < nearest < float('inf') else None
        if nearest < self.held or self._all_stamped(self.held):
            return 0.0
        return self.held if self._held_until is None else self._held_until

    def _all_stamped(self, deadline):
        return all(r.stamped >= deadline or r.done
                   for r in self.receivers.values() if not r.exited)

    def _watch_rotation(self, now):
        rotation = self.server.writer.rotation
        if rotation is None or self.stopping:
            return
        if now < self._passed:
            self._passed = float('-inf')
        if self.held is not None:
            if self._all_stamped(self.held):
                self._let_go()
            elif now >= self.held and self._held_until is None:
                self._held_until = now + WATERMARK_WAIT_S
            elif self._held_until is not None and now >= self._held_until:
                late = ['%d (pid %d)' % (r.slot, r.pid) for r in self.receivers.values()
                        if not (r.exited or r.done or r.stamped >= self.held)]
                self.server.counters.count('rotation_watermark_timeouts')
                log.warning('rotating without waiting longer for receiver %s: it did not '
                            'hand over the lines it received before the deadline within '
                            '%gs (they may be written to the next file)', ', '.join(late),
                            WATERMARK_WAIT_S)
                self._let_go()
        nearest = rotation.nearest()
        if self._passed < nearest < float('inf') and (self.held is None
                                                       or nearest < self.held):
            self._hold(nearest)

    def _hold(self, deadline):
        """Hold the rotations due at ``deadline`` (and later) until every receiver has
        handed over what it received before it."""
        self.held = deadline
        self._held_until = None
        self.server.writer.rotation.hold = deadline
        for receiver in self.receivers.values():
            if not receiver.exited:
                receiver.channel.send(('deadline', deadline))
                receiver.channel.flush()

    def _stamped(self, receiver, stamped):
        if stamped.__class__ is not float:
            raise BrokenReceiver('a watermark that is not a time')
        receiver.stamped = max(receiver.stamped, stamped)
        if self.held is not None and stamped >= self.held and receiver.parked is None:
            receiver.parked = []     # what it sent after: received after the deadline
            self._parked.append(receiver)
            self.server.loop.unregister(receiver.channel.sock)

    def _let_go(self):
        """Let the held rotations happen (the next flush or the Rotator's tick rotates
        before it writes), then take the parked messages."""
        self._passed = self.held
        self.held = self._held_until = None
        self.server.writer.rotation.hold = float('inf')
        parked_in_order, self._parked = self._parked, []
        for receiver in parked_in_order:    # in the order they said it
            parked, receiver.parked = receiver.parked, None
            if parked is None or receiver.exited:
                continue
            self.server.loop.register(receiver.channel.sock, 1, receiver.on_event)
            try:
                self._take_all(receiver, parked)
            except Exception as exc:
                self._broken(receiver, exc)

    # -- connections to receivers -------------------------------------------------------

    def hand_off(self, sock, kind, address):
        """Give an accepted connection to the next receiver that can take it (round
        robin; with max_connections_per_peer, its address's receiver first); the main
        process's copy of it is closed once the receiver took it.  While none can (all are being
        restarted), it waits here, MAX_WAITING at most."""
        if not self.waiting and self._give(sock, kind, address):
            return
        if len(self.waiting) < MAX_WAITING and not self.stopping:
            # The receivers are being restarted, or their hand-off sockets are full (a
            # storm of connections): this one waits here, and the listeners stop accepting
            # (the kernel's backlog holds the next ones) until the receivers take it.
            if not self.waiting:
                self._retry_at = self.server.clock() + WAITING_RETRY_S
            self.waiting.append((sock, kind, address))
            self._accepting(False)
            return
        sock.close()
        self.server.counters.count('connections_lost_at_accept')
        self.server.warn('hand_off', 'closed a new connection from %s: no receiver could '
                         'take it', address)

    def _give(self, sock, kind, address):
        """Hand ``sock`` to the next receiver that can take it; it stays open here until
        that receiver says it took it (``_handed``)."""
        slots = sorted(self.receivers)
        now = self.server.clock()
        # With max_connections_per_peer, an address's connections all go to one receiver,
        # whose slots count them (A4-w8: in turn, one address held workers x the cap).
        pinned = self.server.config.server.max_connections_per_peer is not None
        first = hash(address[0]) % len(slots) if pinned else self._next_slot
        for offset in range(len(slots)):
            slot = slots[(first + offset) % len(slots)]
            receiver = self.receivers[slot]
            if receiver.exited or receiver.done or now < receiver.full_until:
                continue
            self._handoffs += 1
            if hand_off(receiver.handoff, sock, kind, address, self._handoffs):
                if not pinned:
                    self._next_slot = (first + offset + 1) % len(slots)
                receiver.handing[self._handoffs] = (sock, kind, address)
                return True
        return False

    def _handed(self, receiver, taken, refused):
        """``receiver``'s answer for connections handed to it: those it took are closed
        here; those it refused (out of file descriptors) go to another receiver, or wait
        here with accepting paused, and it is offered none for FULL_BACKOFF_S."""
        if (taken.__class__ is not list or refused.__class__ is not list
                or not all(n.__class__ is int for n in taken + refused)):
            raise BrokenReceiver('a hand-off answer of the wrong shape')
        for number in taken:
            handed = receiver.handing.pop(number, None)
            if handed is not None:
                handed[0].close()
        if not refused:
            return
        receiver.full_until = self.server.clock() + FULL_BACKOFF_S
        for number in refused:
            handed = receiver.handing.pop(number, None)
            if handed is not None:
                self.server.counters.count('handoffs_refused')
                self.hand_off(*handed)

    def _hand_off_waiting(self):
        while self.waiting:
            sock, kind, address = self.waiting[0]
            if not self._give(sock, kind, address):
                return
            self.waiting.popleft()
        self._accepting(True)

    def _accepting(self, accepting):
        """Pause or resume the main process's listeners while connections wait here."""
        if accepting == self._listeners_open or self.stopping:
            return
        self._listeners_open = accepting
        for listener in self.server.listeners:
            if accepting and self.server.can_accept():
                listener.start()
            elif not accepting:
                listener.pause()

    # -- what receivers send -------------------------------------------------------------

    def read(self, receiver):
        """Take what ``receiver`` sent.  A receiver runs our code, but it is the process
        that parses what peers send: what no receiver sends (not marshal data, a message
        too big, a value of the wrong shape, a counter it does not keep) costs that
        receiver, killed and started again, never the main process (attack findings
        A4-w5, A4-w6)."""
        try:
            self._take_all(receiver, receiver.channel.receive(self.max_message_bytes))
        except Exception as exc:
            self._broken(receiver, exc)
            return
        if receiver.channel.eof and receiver.parked is None:
            self._exited(receiver)

    def _take_all(self, receiver, messages):
        for index, message in enumerate(messages):
            if receiver.parked is not None:   # its watermark passed a held deadline
                receiver.parked += messages[index:]
                return
            self._take(receiver, message)

    def _take(self, receiver, message):
        if message.__class__ is not tuple or not message:
            raise BrokenReceiver('not a message: %s' % type(message).__name__)
        kind = message[0]
        if kind == 'batch' and len(message) == 4:
            lines, events = message[1], message[2]
            if lines.__class__ is not dict or events.__class__ is not list:
                raise BrokenReceiver('a batch of the wrong shape')
            self._apply_lines(lines, _marks_by_key(message[3]) if message[3] else None)
            if events:
                self._apply_events(receiver, events)
        elif kind == 'stats' and len(message) == 3:
            self._apply_stats(receiver, message[1], message[2])
        elif kind == 'done' and len(message) == 1:
            receiver.done = True
        elif kind == 'reloaded' and len(message) == 3:
            self._reloaded(receiver, message[1], message[2])
        elif kind == 'stamped' and len(message) == 2:
            self._stamped(receiver, message[1])
        elif kind == 'handoff' and len(message) == 3:
            self._handed(receiver, message[1], message[2])
        else:
            raise BrokenReceiver('an unknown message %r' % (str(kind)[:40],))

    def _broken(self, receiver, exc):
        log.error('receiver %d (pid %d) sent what no receiver sends (%s): killed, starting '
                  'a new one', receiver.slot, receiver.pid, str(exc)[:200] or
                  type(exc).__name__)
        try:
            os.kill(receiver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._exited(receiver)

    def _facility(self, key):
        """The facility named by a receiver's line key (app, name, host), or None."""
        if (key.__class__ is not tuple or len(key) != 3 or key[0].__class__ is not str
                or key[1].__class__ is not str or not (key[2] is None
                                                       or key[2].__class__ is str)):
            raise BrokenReceiver('a line key of the wrong shape')
        table = self.server.table
        if table is not self._table:
            self._by_key = {facility.key: facility for facility in table}
            self._table = table
        return self._by_key.get((key[0], key[1]))

    def _apply_lines(self, lines, marks=None):
        """Queue a batch's lines; ``marks``: the v2 marks of some ({key: {index: mark}}),
        whose replay check is made here (``_take_signed``)."""
        queue_for = self.server.writer.queue_for
        for key, batch in lines.items():
            facility = self._facility(key)
            if batch.__class__ is not list or not all(line.__class__ is str for line in batch):
                raise BrokenReceiver('lines that are not text')
            if facility is None:
                self._routed_to_removed(key, len(batch))
                continue
            signed = marks.get(key) if marks is not None else None
            if signed and facility.secret is not None:
                batch = [line for index, line in enumerate(batch) if index not in signed
                         or self._take_signed(facility, *signed[index])]
            queue_for(facility, _host(facility, key)).pending.extend(batch)

    def _take_signed(self, facility, mark, source, acks=None):
        """The replay check of a v2-signed line a receiver routed to ``facility``, made
        here for every receiver, as one process makes it (Server.take_signed: the
        acknowledger's numbering of ``acks`` tells a resend from a replay): True if it is
        to be written; else it is refused (counted, logged, in its acks)."""
        server = self.server
        rejection = server.take_signed(mark, source, acks, facility)
        if rejection is None:
            return True
        server.counters.accepted[facility.key] -= 1   # counted by the receiver
        rejection.detail += ' (%s:%s)' % (facility.app, facility.name)
        server.reject(rejection, source, acks)
        return False

    def _routed_to_removed(self, key, count):
        """Lines a receiver routed with the table before a reload, to a facility the new
        table no longer has: rejected as unknown_app, as if they had come after it."""
        counters = self.server.counters
        counters.accepted[(key[0], key[1])] -= count
        counters.rejected[protocol.UNKNOWN_APP] += count
        self.server.warn('removed_facility', 'rejected %d messages routed to %s:%s, which '
                         'the reload removed', count, key[0], key[1])

    def _apply_events(self, receiver, events):
        """Replay what became of acknowledged connections' frames, in order, into the
        Acknowledger, as Server.ingest does for the connections of this process."""
        server = self.server
        acknowledger = server.acknowledger
        take_frame = acknowledger.take_frame
        queue_for = server.writer.queue_for
        proxies = receiver.proxies
        for event in events:
            kind = event[0]
            if kind == 'start':
                proxy = RemoteConnection(receiver, event[1], event[3], event[4], event[5])
                proxy.acks = acknowledger.start(proxy, event[2])
                proxies[event[1]] = proxy
                continue
            proxy = proxies.get(event[1])
            if proxy is None:
                continue    # closed here already (its lines were lost)
            acks = proxy.acks
            if kind == 'line':
                take_frame(acks, _MESSAGE_FRAME)
                key = event[2]
                facility = self._facility(key)
                if facility is None:
                    self._routed_to_removed(key, 1)
                    acks.reject(protocol.UNKNOWN_APP)
                    continue
                if acks.session_key is not None and acknowledger.duplicate(acks):
                    server.counters.accepted[facility.key] -= 1   # counted by the receiver
                    continue
                if event[3].__class__ is not str:
                    raise BrokenReceiver('a line that is not text')
                if (len(event) == 5 and facility.secret is not None
                        and not self._take_signed(facility, _signed_mark(event[4]), proxy,
                                                  acks)):
                    continue
                log_file = queue_for(facility, _host(facility, key))
                log_file.pending.append(event[3])
                acks.files.add(log_file)
                if acks.session_key is not None:
                    acknowledger.wrote(acks)
            elif kind == 'rejected':
                take_frame(acks, _MESSAGE_FRAME)
                acks.reject(event[2])
            elif kind == 'frame':
                take_frame(acks, _MESSAGE_FRAME)
            elif kind == 'session':
                result = take_frame(acks, (FLAG_SESSION, event[2]))
                if result.__class__ is Rejection:
                    server.reject(result, proxy, acks)
            elif kind == 'closed':
                self.connection_closed(receiver, proxy)

    def connection_closed(self, receiver, proxy):
        receiver.proxies.pop(proxy.cid, None)
        if not proxy.closed:
            proxy.closed = True
            self.server.acknowledger.closed(proxy)

    def _apply_stats(self, receiver, counts, figures):
        """Add what ``receiver``'s counters gained since its last report."""
        if counts.__class__ is not dict or figures.__class__ is not dict or not all(
                name in REPORTED_COUNTERS and values.__class__ is dict
                and all(key.__class__ is str and value.__class__ is int
                        for key, value in values.items())
                for name, values in counts.items()):
            raise BrokenReceiver('counters it does not keep')
        if not all(key in REPORTED_FIGURES and value.__class__ in REPORTED_FIGURES[key]
                   for key, value in figures.items()):
            raise BrokenReceiver('figures it does not keep')
        if not all(kind.__class__ is str and count.__class__ is int
                   for kind, count in figures.get('open', {}).items()):
            raise BrokenReceiver('figures it does not keep')
        counters = self.server.counters
        last = receiver.last_counts
        for name, values in counts.items():
            target = getattr(counters, name)
            before = last.get(name, {})
            for key, value in values.items():
                gained = value - before.get(key, 0)
                if not gained or (name == 'events' and key in OWN_EVENTS):
                    continue
                if name.startswith('accepted'):
                    key = tuple(key.split('\0', 1))
                target[key] += gained
        receiver.last_counts = counts
        receiver.stats = figures

    # -- status ----------------------------------------------------------------------------

    name = 'receivers'

    def udp_sockets(self):
        """[(socket, slot of the receiver that reads it)]: every UDP socket of the
        receivers (for their kernel drops in ``loghogd status``)."""
        return [(sock, slot) for group in self.bound.udp_groups()
                for slot, sock in enumerate(group)]

    def open_connections(self):
        """{kind: connections open} over the receivers, as they last reported."""
        total = {}
        for receiver in self.receivers.values():
            if not receiver.exited:
                for kind, count in receiver.stats.get('open', {}).items():
                    total[kind] = total.get(kind, 0) + count
        return total

    def status(self, now):
        """For ``loghogd status`` (a task's part): each receiver (pid, connections,
        messages accepted, CPU seconds, as it last reported) and the main process, which
        writes."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        result = {'main': 'pid %d (writer), CPU %.1fs' % (os.getpid(),
                                                           usage.ru_utime + usage.ru_stime),
                  'restarts': self.restarts}
        for slot, receiver in sorted(self.receivers.items()):
            stats = receiver.stats
            result['receiver_%d' % slot] = '%s%d, %d connections, %d messages, CPU %.1fs' % (
                'pid ' if not receiver.exited else 'exited, was pid ', receiver.pid,
                stats.get('connections', 0), stats.get('messages', 0), stats.get('cpu_s', 0.0))
        return result


def describe_status(status):
    if status is None:
        return 'unknown status'
    if os.WIFSIGNALED(status):
        return 'killed by %s' % signal.Signals(os.WTERMSIG(status)).name
    return 'exit status %d' % os.WEXITSTATUS(status)
