"""The server: the loop's owner.  Turns frames into lines, and signals into actions.

``run_once`` is one iteration: wait for sockets or the nearest deadline, decode and
route what arrived, write it (one write per file), then act on signals and deadlines.
"""

import json
import logging
import signal
import time

from loghog.signing import split_envelope
from loghog.wire import FLAG_ACK, FLAG_SIGNED_V2

from . import protocol
from .acknowledger import Acknowledger
from .connections import READ, DatagramListener, StreamListener, close_at_stop
from .identity import ClientCheck
from .jsonlines import format_json_line
from .lines import format_body
from .protocol import (LAZY_FIELDS_BYTES, Rejection, StructDecoder, decode_fields,
                       verify_signature)
from .ratelimit import RATE_LIMITED, RateLimits, Throttle
from .reloader import Reloader
from .signature_v2 import ReplayGuard, check_signature_v2
from .slots import Slots
from .writer import OPEN_BUDGET_S
from .stats import RateLimiter

log = logging.getLogger('loghogd.server')

HOUSEKEEPING_INTERVAL_S = 1.0
# A wall clock set back more than this: every task ticks, to compute its deadlines again.
CLOCK_BACK_S = 60.0
# On SIGTERM, read at most this much more from each connection before closing it.
DRAIN_LIMIT_BYTES = 16 * 1024 * 1024
# ... and stop draining after this long: clients that never stop sending must not keep
# the daemon past the init script's 30 s before SIGKILL (an acked client resends), nor
# past SIGTERM's 10 s bound once the last writes and fsyncs are counted (issue 15).
DRAIN_TIME_S = 8.0
# Bytes a client's kernel may still hold for us after its send() returned: Linux's
# default tcp_wmem maximum (4 MiB).  The drain reads up to this much beyond our own
# receive queue at SIGTERM.
PEER_SEND_BUFFER_BYTES = 4 * 1024 * 1024
# One pass of the loop reads from ready connections for about this long; those not
# reached go first in the next pass (loop.py), after the writes and acks of this one.
PASS_BUDGET_S = 0.002
# After EMFILE, stop accepting for this long.
ACCEPT_PAUSE_S = 1.0
# A stream peer that sends this many malformed frames in a row (not UTF-8, not JSON, bad
# zlib: nothing a LogHog client of any version sends) is closed, the rest of that read
# unread: a flooder of refusals then costs the loop about one turn (connections.TURN_S:
# 100 refusals take 0.45 ms) per connection it makes, not its turn in every pass for
# ever (issue 15).  Frames refused for what they say (an unknown app, a bad signature,
# a protocol version or flag this daemon does not know, a size over max_message_size)
# are a misconfigured client's: those reset the count, and such a client is never
# closed (it would reconnect and resend).  An accepted message resets it too (counted
# per read: a peer mixing garbage with messages in one read is no LogHog client).
MALFORMED_IN_A_ROW = 100
MALFORMED = frozenset((protocol.BAD_UTF8, protocol.BAD_JSON, protocol.BAD_ZLIB))


def format_receive_time(now):
    """'YYYY-MM-DD HH:MM:SS.ffffff - ' in local time: the prefix of every line."""
    seconds = int(now)
    return '%s.%06d - ' % (time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(seconds)),
                           int((now - seconds) * 1e6))


def printable_host(host):
    """A host name as it appears inside a line: control characters cannot break the line."""
    if host.isprintable():
        return host
    return ''.join(c if c.isprintable() else '?' for c in host)


class Server:
    """Owns the loop, the listeners and connections, the facility table and the writer.

    ``tasks`` are objects with ``next_deadline()`` (Unix time or None) and
    ``tick(now)``, run after the writer has flushed (rotation, stats publishing).
    """

    def __init__(self, config, table, writer, counters, loop, bound, tasks=(), clock=time.time,
                 loads=protocol.fast_loads):
        self.started = False
        self.config = config
        self.table = table
        self.writer = writer
        self.counters = counters
        self.loop = loop
        # The reload of facilities.conf: parsed on a thread, applied as a task (issue 15).
        self.reloader = Reloader(self)
        self.tasks = [self.reloader] + list(tasks)
        self.reload_hooks = []
        # With receiver processes (receivers.py): called with each signal before it is
        # acted on, and at the start of shutdown (the receivers drain first).
        self.signal_hooks = []
        self.stop_hooks = []
        self.receivers = None     # the ReceiverPool, for status
        # Functions of a new FacilityTable returning errors that refuse a reload.
        self.table_checks = []
        self.clock = clock
        self.loads = loads
        self.max_message_size = config.server.max_message_size
        self.recv_buffer = bytearray(256 * 1024)
        # Open stream connections, least recently active first (slots.py).
        # TLS connections whose TLS layer holds bytes beyond their last turn's read: the
        # selector cannot see them, so the next pass comes back for them.
        self.tls_pending = set()
        self.connections = Slots(config.server.max_connections, config.server.max_handshakes,
                                 config.server.max_connections_per_peer)
        # Acknowledgement state of every acknowledged connection, and the sessions.
        self.acknowledger = Acknowledger(counters)
        self.listeners = []
        self.datagram_listeners = []
        self.stopping = False
        self.stopped_at = None     # when shutdown began (clock())
        self.now = clock()
        self.started_at = self.now
        # When facilities.conf was last loaded, and the last reload: (time, succeeded) or None.
        self.loaded_at = self.now
        self.last_reload = None
        self.line_prefix = format_receive_time(self.now)
        self.limiter = RateLimiter()
        self.client_check = ClientCheck()   # allowed_clients (issue 19)
        self.replays = ReplayGuard(config.server.max_clock_skew)   # v2 signatures (issue 19)
        self.rate_limits = RateLimits()     # rate_limit (issue 19): buckets, and the
        self.throttle = Throttle()          # connections waiting for theirs
        self.tasks.append(self.throttle)
        self._accept_paused_until = None
        self._listeners_paused = False
        self._slots_full = False     # nobody could make room for the last newcomer
        self._next_housekeeping = 0.0
        self._last_pass_at = 0.0
        for kind, sock in bound.sockets:
            if kind.startswith('syslog_'):
                continue   # syslog_listeners.attach makes those
            if kind == 'udp':
                self.datagram_listeners.append(DatagramListener(self, sock))
            else:
                context = bound.tls_context if kind == 'tls' else None
                self.listeners.append(StreamListener(self, sock, kind, context))

    # -- start and stop ------------------------------------------------------------------

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)
    # Errors, not signals: a write beyond RLIMIT_FSIZE must fail with EFBIG (the lines are
    # kept and retried) instead of killing the daemon, and a peer that went away is an
    # EPIPE on its own connection.  CPython ignores both at start-up; an interpreter
    # embedded or started by something else may not.
    IGNORED_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)

    def start(self):
        """Signal handlers, the syncer thread and the listeners; ``run`` calls it if the
        caller has not (the daemon calls it first, before its slower start-up work, so that
        a SIGTERM then is a clean stop, not Python's default death)."""
        if self.started:
            return
        self.started = True
        # fsyncs from now on run on the writer's thread, which wakes the loop when done.
        self.writer.start_syncer(self.loop.wake)
        for signum in self.IGNORED_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        self.loop.install_signal_handlers(self.SIGNALS)
        for listener in self.listeners + self.datagram_listeners:
            listener.start()

    def run(self):
        """Serve until SIGTERM or SIGINT, then drain, write, sync and return."""
        self.start()   # if not done yet
        while not self.stopping:
            self.run_once()
        self.shutdown()

    def shutdown(self):
        """Stop accepting, read what clients already sent, write and fsync everything."""
        # One bound for the whole drain, the receivers' included (stop hooks: with
        # [server] workers they take up to receivers.STOP_RECEIVERS_S, while this process
        # goes on reading its own connections): SIGTERM took 8 s more than that (A4-w15).
        self.stopped_at = self.clock()
        stop_draining_at = self.stopped_at + DRAIN_TIME_S
        for hook in self.stop_hooks:
            hook()
        for listener in self.listeners:
            listener.close()
        for listener in self.datagram_listeners:
            self._drain_datagrams(listener)
            listener.close()
        self.now = self.clock()
        self.line_prefix = format_receive_time(self.now)
        # Written read by read, so that memory never holds every drained line and the
        # time bound covers the writing too: a read of lines for thousands of new files
        # costs seconds (issue 14: the init script's SIGKILL comes at 30 s).
        # What each peer had sent when we stopped (our receive queue, and what its send
        # buffer can still hold), not what it keeps sending; read in turns, so that the
        # peers that are done are read to the end while flooders use up the time bound
        # (issue 15: 8 peers flooding refused frames held SIGTERM for 10 s).
        left = {connection: min(DRAIN_LIMIT_BYTES,
                                connection.queued_bytes() + PEER_SEND_BUFFER_BYTES)
                for connection in self.connections}
        while left:
            for connection, limit in list(left.items()):
                count = connection.drain_once()
                # A read of refused frames only: a flood of them, nothing to lose.
                if not count or count >= limit or connection.refused_only:
                    del left[connection]
                else:
                    left[connection] = limit - count
                self.writer.flush(self.clock())
                if self.clock() >= stop_draining_at:
                    log.warning('stopped draining connections after %gs', DRAIN_TIME_S)
                    left = None
                    break
        self.writer.close(self.clock())
        self.acknowledger.forget_lost(self.writer.take_lost())
        self.acknowledger.send_acks()   # best effort: what is not acked now will be resent
        close_at_stop(self.connections, self.clock)
        for task in self.tasks:
            close = getattr(task, 'close', None)
            if close is not None:
                close()
        self.loop.restore_signal_handlers(self.SIGNALS)

    def _drain_datagrams(self, listener):
        listener.on_event(None)

    # -- one iteration -------------------------------------------------------------------

    def run_once(self, max_wait_s=None):
        """Wait for input or the nearest deadline (at most ``max_wait_s``), process it,
        write it, act on signals."""
        timeout = self._timeout()
        if max_wait_s is not None:
            timeout = min(timeout, max(0.0, max_wait_s))
        self.loop.run_once(timeout, self._read_clock, PASS_BUDGET_S)
        if self.tls_pending:
            pending, self.tls_pending = self.tls_pending, set()
            for connection in pending:
                connection.on_event(READ)
        # Written with the time the lines were stamped with: a deadline that passed while
        # they were being handled must not move them into the next period's file.  The
        # rotation due at that deadline happens right after, in the writer or its task.
        self.writer.flush(self.now, OPEN_BUDGET_S)
        now = self._read_clock()
        if self.writer.lost:
            self.acknowledger.forget_lost(self.writer.take_lost())
        if self.acknowledger:
            self.acknowledger.now = now
            self.acknowledger.send_acks()
        for signum in self.loop.pop_signals():
            self._guarded(self.handle_signal, signum)
        clock_went_back, self._last_pass_at = now < self._last_pass_at - CLOCK_BACK_S, now
        if now >= self._next_housekeeping or clock_went_back:
            self._guarded(self._housekeeping, now)
        for task in self.tasks:
            deadline = task.next_deadline()
            if deadline is not None and (now >= deadline or clock_went_back):
                self._guarded(task.tick, now)

    def _guarded(self, action, *args):
        """Run one piece of the loop's own work; a bug in it is logged, never fatal."""
        try:
            action(*args)
        except Exception as exc:
            # A bug that repeats every tick must not fill the log: the same error from the
            # same action is logged (with its traceback) as the other rate-limited warnings.
            name = getattr(action, '__qualname__', action)
            allowed, suppressed = self.limiter.allow(('internal', name, type(exc)), self.now)
            if allowed:
                more = ' (%d more like it were not logged)' % suppressed if suppressed else ''
                log.exception('internal error in %s (carrying on)%s', name, more)

    def _read_clock(self):
        """One clock reading per batch: the receive time of every line in it."""
        now = self.now = self.clock()
        self.line_prefix = format_receive_time(now)
        return now

    def _timeout(self):
        now = self.now = self.clock()
        deadlines = [self._next_housekeeping, self.writer.next_deadline()]
        deadlines += [task.next_deadline() for task in self.tasks]
        nearest = min(d for d in deadlines if d is not None)
        if self.tls_pending:
            return 0.0
        # Never longer than housekeeping's interval: a wall clock set back must not make
        # the loop sleep until a deadline it computed before (issue 15).
        return min(HOUSEKEEPING_INTERVAL_S, max(0.0, nearest - now))

    def _housekeeping(self, now):
        self._next_housekeeping = now + HOUSEKEEPING_INTERVAL_S
        server = self.config.server
        for connection in list(self.connections):
            connection.check_timeouts(now, server.frame_timeout, server.handshake_timeout,
                                      server.idle_timeout)
        self.acknowledger.expire(now)
        if self._accept_paused_until is not None and now >= self._accept_paused_until:
            self._accept_paused_until = None
            self._update_accepting()
        if self._slots_full:
            # Connections whose frames were in flight may have been acknowledged since:
            # the next newcomer tries again to find one that makes room.
            self._slots_full = False
            self._update_accepting()

    # -- signals ---------------------------------------------------------------------------

    def handle_signal(self, signum):
        for hook in self.signal_hooks:
            hook(signum)
        if signum in (signal.SIGTERM, signal.SIGINT):
            if not self.stopping:
                log.info('received %s: finishing writes and stopping', signal.Signals(signum).name)
            self.stopping = True
        elif signum == signal.SIGHUP:
            if self.stopping:   # a stop taken in the same pass comes first (loop.py)
                log.info('received SIGHUP while stopping: not reloading')
            else:
                self.reload()
        elif signum == signal.SIGUSR1:
            log.info('status: %s', json.dumps(self.summary(), sort_keys=True))

    def reload(self):
        """SIGHUP: re-read facilities.conf on a thread and apply it in a later pass
        (reloader.py); a bad file keeps the running table.  Files are reopened then."""
        self.reloader.request()

    def summary(self):
        """A short dict of the main counters (for SIGUSR1 and status)."""
        connections = len(self.connections)
        if self.receivers is not None:   # the clients' connections are theirs (A4-w11)
            connections += sum(self.receivers.open_connections().values())
        return {
            'connections': connections,
            'accepted': sum(self.counters.accepted.values()),
            'rejected': sum(self.counters.rejected.values()),
            'files': len(self.writer.files),
        }

    # -- connections -----------------------------------------------------------------------

    def add_connection(self, connection):
        """A new stream connection: take it, and if the slots are full close the one
        that must make room (slots.py).  If nobody can (every other connection has frames
        in flight), keep it anyway and stop accepting until a slot frees."""
        connections = self.connections
        connections.add(connection)
        self.counters.count('connections_accepted')
        self.counters.connections_accepted[connection.kind] += 1
        if connections.is_over_peer_cap(connection) and not self._make_room_in_peer(connection):
            return
        while connections.is_full(connection.handshaking):
            victim = connections.victim(connection)
            if victim is None:
                self._slots_full = True
                self._update_accepting()
                return
            self._evict(victim)

    def _make_room_in_peer(self, connection):
        """``connection``'s peer is over max_connections_per_peer: its own longest idle
        connection makes room, or, if each has something in flight, the newcomer is
        closed.  Returns False when the newcomer was closed."""
        cap = self.connections.max_per_peer
        victim = self.connections.own_victim(connection)
        if victim is None:
            self.counters.count('connections_refused_per_peer')
            self.warn('peer_cap', 'closed a new connection from %s: its address holds '
                      'max_connections_per_peer (%d), none idle', connection.peer, cap)
            connection.close('over max_connections_per_peer')
            return False
        victim.drain_once()   # what it sent is read and written first, as in _evict
        self.counters.count('connections_evicted_per_peer')
        self.warn('peer_evicted', 'closed the longest idle connection from %s to make room '
                  'for its newer one (max_connections_per_peer %d)', victim.peer, cap)
        victim.close('longest idle of its address, over max_connections_per_peer')
        return True

    def _evict(self, victim):
        if victim.handshaking:
            self.counters.count('handshakes_evicted')
            self.warn('handshake_evicted', 'closed an unfinished TLS handshake from %s to '
                      'make room (max_handshakes %d)', victim.peer, self.connections.max_handshakes)
            victim.close('unfinished handshake, making room for a newcomer')
        else:
            # What the peer sent before it is closed is read and written first: a client
            # without acknowledgements that sent a record and went quiet loses nothing.
            victim.drain_once()
            self.counters.count('connections_evicted')
            self.warn('connection_evicted', 'closed the longest idle connection (from %s, '
                      'idle %.0fs) to make room (max_connections %d)', victim.peer,
                      self.now - victim.last_activity, self.connections.max_connections)
            victim.close('longest idle, making room for a newcomer')

    malformed_limit = MALFORMED_IN_A_ROW

    def closing_malformed(self, connection):
        """``connection`` sent MALFORMED_IN_A_ROW malformed frames in a row: close it,
        counted (``connections_closed_malformed``) and logged (rate-limited)."""
        self.counters.count('connections_closed_malformed')
        self.warn('closed_malformed', 'closed the connection from %s after %d malformed '
                  'frames in a row (not a LogHog client?)', connection.peer,
                  connection.malformed_in_a_row)
        connection.close('%d malformed frames in a row' % connection.malformed_in_a_row)

    def connection_active(self, connection):
        """``connection`` brought an accepted message: it is the last one to make room."""
        self.connections.touch(connection)

    def handshake_done(self, connection):
        self.connections.handshake_done(connection)

    def remove_connection(self, connection):
        self.connections.remove(connection)
        self.throttle.forget(connection)
        if connection.acks is not None:
            self.acknowledger.closed(connection)
        if self._slots_full and len(self.connections) < self.connections.max_connections:
            self._slots_full = False
        if self._listeners_paused:
            self._update_accepting()

    def can_accept(self):
        return not self.stopping and self._accept_paused_until is None and not self._slots_full

    def out_of_descriptors(self, exc):
        log.error('cannot accept connections: %s; pausing for %gs', exc.strerror, ACCEPT_PAUSE_S)
        self._accept_paused_until = self.clock() + ACCEPT_PAUSE_S
        self._update_accepting()

    def _update_accepting(self):
        accepting = self.can_accept()
        if accepting == (not self._listeners_paused):
            return
        for listener in self.listeners:
            (listener.start if accepting else listener.pause)()
        self._listeners_paused = not accepting
        if accepting:
            log.warning('accepting connections again (%d open)', len(self.connections))
        else:
            log.warning('not accepting new connections for now (%d open, max_connections %d)',
                        len(self.connections), self.config.server.max_connections)

    # -- messages --------------------------------------------------------------------------

    def ingest(self, frames, source):
        """Decode, route and queue ``frames`` from ``source`` (a connection or UDP peer).

        The per-message path: what the messages of one read share (their facility, their
        host's part of the line, their file) is looked up again only when it changes, and
        counters are added up once per run of messages to one facility.
        Returns how many messages were accepted (refused frames are not a peer's activity).
        """
        max_size = self.max_message_size
        loads = self.loads
        if loads.__class__ is StructDecoder:
            decode_lazy, lazy_errors = loads.decode_lazy, loads.errors
        else:
            decode_lazy = lazy_errors = None
        lookup = self.table.lookup
        queue_for = self.writer.queue_for
        prefix = self.line_prefix
        acks = getattr(source, 'acks', None)
        may_ack = source.kind != 'udp'
        take_frame = self.acknowledger.take_frame
        # The last message's app and module, facility, host, line head and file.
        last_app = last_module = last_host = facility = signer = log_file = append = None
        refusal = None       # why ``source`` may not log to ``facility`` (allowed_clients)
        bucket = overdrawn = None   # ``facility``'s rate_limit bucket; one this read overdrew
        head = None
        count = size = 0     # messages and bytes accepted for ``facility`` not yet counted
        accepted = 0         # messages accepted before those
        try:
            for frame in frames:
                if frame.__class__ is not tuple:   # a Rejection from the frame splitter
                    if acks is None and frame.flags & FLAG_ACK and may_ack:
                        acks = self.start_acks(source, frames, frame)
                    if acks is None or not take_frame(acks, frame):
                        self.reject(frame, source, acks)
                    continue
                flags, payload = frame
                if flags:
                    if acks is None and flags & FLAG_ACK and may_ack:
                        acks = self.start_acks(source, frames, frame)
                if acks is not None:
                    resent = take_frame(acks, frame)
                    if resent:
                        if resent.__class__ is Rejection:   # a malformed session frame
                            self.reject(resent, source, acks)
                        continue
                envelope = None
                plain = False    # every string of it is known printable (no need to look)
                if flags & FLAG_SIGNED_V2:   # a v2 signature before the payload (issue 19)
                    envelope = split_envelope(payload)
                    if envelope is None:
                        self.reject(Rejection(protocol.BAD_FIELDS, 'v2 frame shorter than its '
                                              'signature envelope'), source, acks)
                        continue
                    fields = decode_fields(flags & ~FLAG_SIGNED_V2, envelope.body, max_size,
                                           loads)
                elif decode_lazy is not None and not flags & ~FLAG_ACK:
                    # StructDecoder.lazy_fields, inline (a call less: 90 ns a message):
                    # decode_fields' msgspec path with the sender's fields left undecoded
                    # until a JSON line asks for them; what it refuses goes the standard
                    # library's way, as it would.
                    fields = None
                    if payload.isascii():
                        try:
                            m = decode_lazy(payload)
                        except lazy_errors:
                            pass
                        else:
                            sent_fields = m.fields
                            if sent_fields is None or len(sent_fields) <= LAZY_FIELDS_BYTES:
                                fields = (m.app_id, m.module, m.stamp, m.nsecs, m.hostname,
                                          m.body, m.signature, sent_fields)
                    if fields is None:
                        fields = decode_fields(flags, payload, max_size, loads)
                    else:
                        # An ASCII payload's strings hold no control character but
                        # escaped ones (raw ones are bad JSON) and DEL: without a
                        # backslash (92) or DEL (127) its body is printable (two memchr:
                        # 40 ns; str.isprintable: 225 for 100 characters).
                        plain = 92 not in payload and 127 not in payload
                else:
                    fields = decode_fields(flags, payload, max_size, loads)
                if fields.__class__ is Rejection:
                    if self.reject(fields, source, acks):
                        break    # malformed frames only: closed after this (connections.py)
                    continue
                app_id, module, stamp, nsecs, host, body, signature, sent_fields = fields
                if module != last_module or app_id != last_app:
                    found = lookup(app_id, module)
                    if found is None:
                        self.reject(Rejection(protocol.UNKNOWN_APP, 'unknown application %r'
                                              % app_id[:100]), source, acks)
                        continue
                    last_app, last_module = app_id, module
                    if found is not facility:
                        if count:
                            self._count_accepted(facility, count, size)
                            accepted += count
                            count = size = 0
                        facility = found
                        signer = facility.signer if facility.secret is not None else None
                        refusal = (None if facility.allowed_clients is None
                                   else self.client_check.refusal(facility, source))
                        bucket = (None if facility.rate_limit is None
                                  else self.rate_limits.bucket(facility, self.now))
                        log_file = None
                if refusal is not None:
                    self.refuse_client(refusal, source, acks)
                    continue
                if signer is not None:
                    if envelope is None and facility.require_signature is None:
                        rejection = verify_signature(signer, signature, app_id, module, stamp,
                                                     nsecs, body)
                    else:
                        rejection = check_signature_v2(facility, flags, envelope, self.now,
                                                       self.config.server.max_clock_skew)
                    if rejection is not None:
                        rejection.detail += ' (%s:%s)' % (facility.app, facility.name)
                        self.reject(rejection, source, acks)
                        continue
                if (acks is not None and acks.session_key is not None
                        and self.acknowledger.duplicate(acks)):
                    continue   # written before in its session (checked only now: acks.py)
                if bucket is not None and bucket.tokens < 1 and not may_ack:
                    self.rate_limited(facility, source)   # rate_limit: datagrams cannot wait
                    continue
                if envelope is not None and signer is not None:
                    rejection = self.take_signed(envelope, source, acks, facility, host)
                    if rejection is not None:
                        self.reject(rejection, source, acks)
                        continue
                if bucket is not None:   # a stream that overdraws waits (ratelimit.py)
                    bucket.tokens -= 1
                    if bucket.tokens < 0:
                        overdrawn = bucket
                if host != last_host:
                    last_host = host
                    head = prefix + (host if host.isprintable() else printable_host(host)) + ' - '
                    if facility.file_per_host:
                        log_file = None
                if log_file is None:
                    log_file = queue_for(facility, host)
                    append = log_file.pending.append
                if facility.format == 'text':
                    # One record, one line (lines.py); a printable body is as it is.
                    append(head + (body if plain or body.isprintable() else format_body(body))
                           + '\n')
                else:
                    if sent_fields is not None and sent_fields.__class__ is not dict \
                            and sent_fields.__class__ is not str:
                        sent_fields = self._resolve_fields(sent_fields, flags, payload)
                    append(format_json_line(self.now, host, app_id, module, body, sent_fields))
                if acks is not None:
                    acks.files.add(log_file)
                    if acks.session_key is not None:
                        self.acknowledger.wrote(acks)
                count += 1
                size += len(payload)
        finally:
            if count:
                self._count_accepted(facility, count, size)
            if overdrawn is not None and may_ack:
                self.throttle.pause(source, overdrawn, self.now)
        return accepted + count

    def _resolve_fields(self, raw, flags, payload):
        """A JSON line's fields, left undecoded by StructDecoder.lazy_fields: what the
        full decode gives (decode_fields), the same dict, or its reason for dropping them."""
        fields = self.loads.resolve(raw)
        if fields is None:
            decided = decode_fields(flags, payload, self.max_message_size, self.loads)
            fields = (decided[7] if decided.__class__ is tuple
                      else 'fields the decoder cannot take')
        return fields

    def _count_accepted(self, facility, count, size):
        key = facility.key
        self.counters.accepted[key] += count
        self.counters.accepted_bytes[key] += size

    def take_signed(self, envelope, source, acks, facility, host=None):
        """A v2-signed message about to be queued (to ``host``'s line): None, or a
        ``replayed`` Rejection (signature_v2.py); sessions are remembered per
        ``facility``'s secret.  The acknowledger decides for a resend that its session
        frame numbers as the signature does.  (A receiver passes the decision on to the
        main process instead: receiver.ForwardingWriter.take_signed.)"""
        numbered = (acks is not None and acks.session_key is not None
                    and acks.seq == envelope.seq and acks.session_key[1] == envelope.session.hex())
        identity = getattr(source, 'identity', None) or (source.peer_host, None)
        evicted = self.replays.evicted
        rejection = self.replays.take(envelope, identity, numbered, self.now, facility.secret)
        if self.replays.evicted > evicted:
            self.counters.count('signed_sessions_evicted')
        return rejection

    def rate_limited(self, facility, source):
        """A datagram past its app's rate_limit: refused, and counted as lost."""
        self.counters.count('rate_limited_datagrams')
        self.reject(Rejection(RATE_LIMITED, '[%s] is over its rate_limit (%s)'
                              % (facility.section, facility.rate_limit.text)), source)

    def refuse_client(self, refusal, source, acks=None):
        """A message refused by its facility's allowed_clients (identity.py): counted by
        reason and by certificate name too."""
        self.counters.refuse_client(refusal.client)
        self.reject(refusal, source, acks)

    def reject(self, rejection, source, acks=None):
        """Count and (rate-limited) log a refused frame of ``source``.  Returns True when
        ``source`` (a stream connection) has now sent MALFORMED_IN_A_ROW malformed frames
        in a row: the rest of its read is not looked at, and it is closed."""
        reason = rejection.reason
        self.counters.reject(reason, source.peer_host)
        if acks is not None:
            acks.reject(reason)
        allowed, suppressed = self.limiter.allow(reason, self.now)
        if allowed:
            more = ' (%d more like it were not logged)' % suppressed if suppressed else ''
            log.warning('rejected a message from %s: %s: %s%s', source.peer, rejection.reason,
                        rejection.detail, more)
        in_a_row = getattr(source, 'malformed_in_a_row', None)   # stream connections only
        if in_a_row is None:
            return False
        in_a_row = source.malformed_in_a_row = in_a_row + 1 if reason in MALFORMED else 0
        return in_a_row >= self.malformed_limit

    # -- acknowledgements ------------------------------------------------------------------

    def start_acks(self, connection, frames, frame):
        """Switch ``connection`` to acknowledged mode at ``frame`` (the first of its
        frames with FLAG_ACK, in this read's ``frames``): the acknowledger numbers its
        frames from the connection's first."""
        # An equal frame earlier in ``frames`` would have had FLAG_ACK too: index() finds
        # this one (Rejections compare by identity).
        before = connection.frames_before + frames.index(frame)
        connection.acks = self.acknowledger.start(connection, before)
        return connection.acks

    def warn(self, key, message, *args):
        """A warning that could repeat per peer: rate-limited per ``key``."""
        allowed, suppressed = self.limiter.allow(key, self.now)
        if allowed:
            if suppressed:
                message += ' (%d more like it were not logged)' % suppressed
            log.warning(message, *args)
