"""Receiving syslog: the [syslog] settings, binding, the listeners and the ingest path.

Listeners (each off unless configured): UDP (RFC 5426, one message per datagram), TCP
(RFC 6587, framing detected per frame), TLS (RFC 5425, the server's pemfile and cacert,
client certificates required or optional) and a unix datagram socket (like /dev/log).
They are bound with the daemon's own, before privileges are dropped, and join the
server's listener lists: the same loop, limits (max_message_size, max_connections,
timeouts) and shutdown drain as the LogHog protocol.

Per message: parse (syslog_parse), route by program (syslog_routing), format the line,
queue it for the writer.  Counters: ``syslog_messages_<listener>`` per listener,
``syslog_cut`` (over max_message_size, cut), ``syslog_replaced_utf8``, and rejections per
reason (``syslog_unclaimed``, ``syslog_needs_client_cert``, ``syslog_empty``).
"""

import errno
import logging
import os
import socket
import ssl
import stat
import time

from .connections import (DATAGRAM_OWED_MAX_S, FIRST_READ_SIZE, READ, RECV_SIZE, TURN_S,
                          UDP_BATCH, StreamConnection, StreamListener, log_internal_error,
                          peer_name)
from .errors import StartupError, describe_os_error
from .files import format_address
from .jsonlines import format_json_line
from .lines import ALL_PRINTABLE, PRINTABLE_ASCII, format_body
from .protocol import Rejection
from .signature_v2 import V2_REQUIRED
from .server import printable_host
from .syslog_framing import SyslogFrameSplitter
from .syslog_parse import (BOM, STAMP_5424, STAMP_BSD, TRAILING, json_fields, line_head,
                           line_text, parse_message, shape_of, valid_bsd_stamp, valid_stamp)
from .syslog_routing import SyslogRouter

log = logging.getLogger('loghogd.syslog')

UNCLAIMED = 'syslog_unclaimed'
NEEDS_CLIENT_CERT = 'syslog_needs_client_cert'
KINDS = ('syslog_udp', 'syslog_tcp', 'syslog_tls', 'syslog_unix')
# A message that ends with an LF and waits for the bytes after it (a NUL-framed sender's,
# or a connection's first) is taken after this long without bytes (a traceback's lines
# come in the same send(), microseconds apart).
QUIET_S = 1.0
# Shapes a batch learns before it judges whether they pay (a relay's hosts in turn: one
# shape each); beyond, shapes are made only while most messages are not parsed.
SHAPES_LEARNT = 64


# -- binding (before privileges are dropped) -------------------------------------------------

def bind_syslog(config, bound):
    """Bind the [syslog] listeners into ``bound.sockets`` (kinds in KINDS); raise
    StartupError (or ConfigError for TLS files) naming the address."""
    from .binding import _check_receive_buffer, _datagram_socket, _stream_socket, make_tls_context
    settings = config.syslog
    receive_buffer = config.server.udp_receive_buffer
    if settings.listen_tls:
        context = make_tls_context(config.server.pemfile, config.server.cacert)
        if settings.tls_client_certs == 'optional':
            context.verify_mode = ssl.CERT_OPTIONAL
        bound.syslog_tls_context = context
    for kind, addresses in (('syslog_udp', settings.listen_udp),
                            ('syslog_tcp', settings.listen_tcp),
                            ('syslog_tls', settings.listen_tls)):
        for host, port in addresses:
            try:
                if kind == 'syslog_udp':
                    sock = _datagram_socket(host, port, receive_buffer)
                    warning = _check_receive_buffer(sock, receive_buffer)
                    if warning:
                        bound.warnings.append(warning)
                else:
                    sock = _stream_socket(host, port)
            except OSError as exc:
                raise StartupError(exc.errno, '[syslog] cannot listen on %s: %s'
                                   % (format_address(host, port), describe_os_error(exc))) from None
            bound.sockets.append((kind, sock))
    if settings.unix_socket:
        bound.sockets.append(('syslog_unix', bind_unix_socket(settings.unix_socket,
                                                              settings.unix_socket_mode,
                                                              receive_buffer)))


def bind_unix_socket(path, mode, receive_buffer):
    """A unix datagram socket at ``path`` with ``mode``.  A stale socket there (nobody
    listening) is replaced; a live one is another program's (rsyslog's /dev/log, attack
    finding A3-20): an error, like an address in use; anything else there is an error.

    The socket is made with its mode (a umask around bind()), never chmod()ed by path:
    this runs as root, and the folder may belong to the daemon's user, who could swap
    the new socket for a symbolic link to a file of root's (A3-22)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(info.st_mode):
            raise StartupError(errno.EEXIST, '[syslog] unix_socket: %s exists and is not a socket'
                               % path)
        if _socket_is_live(path):
            raise StartupError(errno.EADDRINUSE, '[syslog] unix_socket: %s is in use: another '
                               'program listens on it (rsyslog or journald on /dev/log?); '
                               'stop it or choose another path' % path)
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        except OSError:
            pass
        # bind() makes the file with 0777 less the umask: exactly ``mode``.  (The daemon
        # starts no thread before binding, so the umask is nobody else's meanwhile.)
        umask = os.umask(~mode & 0o777)
        try:
            sock.bind(path)
        finally:
            os.umask(umask)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise StartupError(exc.errno, '[syslog] unix_socket: cannot bind %s: %s'
                           % (path, describe_os_error(exc))) from None
    return sock


def _socket_is_live(path):
    """True when a program listens on the unix socket at ``path`` (a connect() succeeds;
    a stale socket refuses it).  Datagram first, as /dev/log is; then stream."""
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_UNIX, kind) as probe:
            try:
                probe.connect(path)
            except OSError as exc:
                if exc.errno == errno.EPROTOTYPE:
                    continue   # the other kind of socket: try that
                # Refused: stale.  Anything else: not known to be stale, left alone.
                return exc.errno != errno.ECONNREFUSED
            return True
    return False


def attach(server, bound, config):
    """Make the listeners for the syslog sockets of ``bound`` and give them to ``server``
    (before ``server.start()``).  Returns the SyslogReceiver (None without listeners)."""
    sockets = [(kind, sock) for kind, sock in bound.sockets if kind in KINDS]
    if not sockets:
        return None
    receiver = SyslogReceiver(server, config.syslog.default_app)
    for kind, sock in sockets:
        if kind in ('syslog_udp', 'syslog_unix'):
            server.datagram_listeners.append(SyslogDatagramListener(server, sock, kind, receiver))
        else:
            context = getattr(bound, 'syslog_tls_context', None) if kind == 'syslog_tls' else None
            server.listeners.append(SyslogStreamListener(server, sock, kind, context, receiver))
    server.reload_hooks.append(receiver.refresh)
    return receiver


# -- the per-message path ----------------------------------------------------------------------

class SyslogReceiver:
    """Parses, routes, formats and queues syslog messages for the server's writer."""

    def __init__(self, server, default_app, fast=True):
        self.server = server
        self.fast = fast
        self.default_app = default_app
        self.table = None
        self.router = None
        self.refresh()

    def refresh(self):
        """After a reload: route with the server's current facility table."""
        table = self.server.table
        if table is self.table:
            return
        self.table = table
        self.router = SyslogRouter(table, self.default_app)
        self.heads = {}   # line_text's cache: bounded in ingest
        if self.default_app and self.router.default is None:
            log.warning('[syslog] default_app = %s: no such application in %s; unclaimed '
                        'syslog messages are refused', self.default_app, table.source)
        elif not self.default_app and not self.router.claims:
            log.warning('syslog: no facility claims a program (syslog_programs) and there is '
                        'no [syslog] default_app: every syslog message is refused')
        log.info('syslog: %d program claims', self.router.claims)

    def ingest(self, frames, source):
        """Queue the lines of ``frames`` ([(bytes, was_cut)]) from ``source``.

        As in Server.ingest, what consecutive messages share (their facility, host part
        of the line and file) is looked up again only when it changes.  And most senders
        send one shape of message after another (syslog_parse.shape_of): once a message
        of a shape has been parsed and routed, the next ones that share it are checked
        with a few byte comparisons, and their line is the shape's head plus their text
        (``fast = False`` parses every message: the reference the tests compare with).
        """
        server = self.server
        counters = server.counters
        now = server.now
        prefix = server.line_prefix
        lookup = self.router.lookup
        queue_for = server.writer.queue_for
        peer_host = source.peer_host
        heads = self.heads
        fast = self.fast
        all_printable = ALL_PRINTABLE.startswith
        if len(heads) > 4096:   # senders choose programs and pids freely
            heads.clear()
        received = cut = replaced = count = size = parsed = 0
        last_program = last_host = facility = log_file = append = head = None
        # The shapes of this batch by their lead ('<PRI>' or '<PRI>1 '), and the current
        # one: its lead, stamp kind, header and line head.  A shape also holds what the
        # parsed path's state was for it (program, facility, host, head, file).
        shapes = {}
        by_host = {}   # the same by the word after the time: ' HOSTNAME' (or ' tag:')
        lead = header = shape_head = None
        lead_size = header_size = kind = 0
        stamp = b'1970-01-01T00:00:00'   # the last RFC 5424 TIMESTAMP start found valid
        bsd_stamp = b'Jan  1 00:00:00'   # the last RFC 3164 time, if valid_bsd_stamp says so
        bucket = overdrawn = None   # rate_limit (issue 19): streams wait, datagrams refused
        is_stream = hasattr(source, 'pause_reading')
        try:
            for data, was_cut in frames:
                received += 1
                if was_cut:
                    cut += 1
                if shapes:
                    matched = data.startswith(lead)
                    if not matched:
                        shape = shapes.get(data[:data.find(b'>', 1, 5) + 1])
                        if shape is not None and data.startswith(shape[0]):
                            if shape[6] is not facility and count:
                                server._count_accepted(facility, count, size)
                                count = size = 0
                            (lead, lead_size, kind, header, header_size, shape_head,
                             facility, last_program, last_host, head, log_file, append) = shape
                            bucket = None   # a shape's facility has no rate_limit (below)
                            matched = True
                    if matched:
                        if kind == STAMP_5424:
                            stamp_end = data.find(b' ', lead_size)
                            length = stamp_end - lead_size
                            if length > 19:
                                if not data.startswith(stamp, lead_size):
                                    if valid_stamp(data[lead_size:lead_size + 19]):
                                        stamp = data[lead_size:lead_size + 19]
                                    else:
                                        stamp_end = -1
                            elif length != 1 or data[lead_size] != 0x2D:   # '-'
                                stamp_end = -1
                        elif kind == STAMP_BSD:
                            stamp_end = lead_size + 15
                            if not data.startswith(bsd_stamp, lead_size):
                                if valid_bsd_stamp(data[lead_size:stamp_end], now):
                                    bsd_stamp = data[lead_size:stamp_end]
                                else:
                                    stamp_end = -1
                        else:
                            stamp_end = lead_size
                        if stamp_end > 0 and not data.startswith(header, stamp_end):
                            # Another host (a relay's)? Its shape, by the word after the time.
                            shape = by_host.get(data[stamp_end:data.find(b' ', stamp_end + 1)]) \
                                if kind else None
                            # (Only stamped kinds are there; the lead tells 5424 from 3164.)
                            if (shape is not None and shape[0] == lead
                                    and data.startswith(shape[3], stamp_end)):
                                if shape[6] is not facility and count:
                                    server._count_accepted(facility, count, size)
                                    count = size = 0
                                (lead, lead_size, kind, header, header_size, shape_head,
                                 facility, last_program, last_host, head, log_file,
                                 append) = shape
                                bucket = None
                            else:
                                stamp_end = -1
                        if stamp_end > 0:
                            start = stamp_end + header_size
                            if kind == STAMP_5424 and data.startswith(BOM, start):
                                start += 3
                            body = data[start:].rstrip(TRAILING)
                            if all_printable(body.translate(PRINTABLE_ASCII)):
                                append(shape_head + body.decode('ascii') + '\n')
                                count += 1
                                size += len(data)
                                continue
                            try:
                                text = body.decode('utf-8')
                            except UnicodeDecodeError:
                                pass   # parsed below: replaced and counted
                            else:
                                append(shape_head + (text if text.isprintable()
                                                     else format_body(text)) + '\n')
                                count += 1
                                size += len(data)
                                continue
                # Parsed: the state below is this message's, no shape's until it makes one.
                lead = b'\xff'   # matches no message: shapes are looked up again
                parsed += 1
                message = parse_message(data, now)
                if message.__class__ is Rejection:
                    server.reject(message, source)
                    continue
                if message.replaced:
                    replaced += 1
                program = message.app_name or ''
                if program != last_program:
                    found = lookup(program)
                    if found is None:
                        server.reject(Rejection(UNCLAIMED, 'no facility claims syslog program '
                                                '%r' % program[:100]), source)
                        continue
                    if found.require_signature is not None:
                        # Syslog carries no signature (A4-8): not even over TLS.
                        server.reject(Rejection(V2_REQUIRED, '[%s] has require_signature = '
                                                '%s: syslog carries no signature'
                                                % (found.section, found.require_signature)),
                                      source)
                        continue
                    if found.secret is not None and not source.has_client_cert:
                        server.reject(Rejection(NEEDS_CLIENT_CERT, '[%s] has a secret: its '
                                                'syslog comes only over TLS with a client '
                                                'certificate' % found.section), source)
                        continue
                    refusal = server.client_check.refusal(found, source)
                    if refusal is not None:   # allowed_clients (issue 19)
                        server.refuse_client(refusal, source)
                        continue
                    last_program = program
                    if found is not facility:
                        if count:
                            server._count_accepted(facility, count, size)
                            count = size = 0
                        facility = found
                        log_file = None
                        bucket = (None if facility.rate_limit is None
                                  else server.rate_limits.bucket(facility, now))
                if bucket is not None:
                    if bucket.tokens < 1 and not is_stream:
                        server.rate_limited(facility, source)
                        continue
                    bucket.tokens -= 1
                    if bucket.tokens < 0:
                        overdrawn = bucket
                host = message.hostname or peer_host
                if host != last_host:
                    last_host = host
                    head = '%s%s - ' % (prefix, host if host.isprintable() else printable_host(host))
                    if facility.file_per_host:
                        log_file = None
                if log_file is None:
                    log_file = queue_for(facility, host)
                    append = log_file.pending.append
                if facility.format == 'text':
                    append(head + line_text(message, program or '-', heads) + '\n')
                    # A new shape, while shapes pay: most messages so far were not parsed
                    # (else none is looked up: a new shape every message costs a parse).
                    # No shape for a facility with a rate_limit: each of its messages takes
                    # a token here (issue 19), which the shapes' path does not.
                    if (not fast or bucket is not None
                            or (parsed > SHAPES_LEARNT and parsed * 2 > received)):
                        shapes.clear()
                        by_host.clear()
                    else:
                        shape = shape_of(data, message, now)
                        if shape is not None:
                            lead, kind, header = shape
                            lead_size, header_size = len(lead), len(header)
                            shape_head = head + line_head(message, program or '-', heads)
                            if len(by_host) >= SHAPES_LEARNT:
                                shapes.clear()
                                by_host.clear()
                            shapes[data[:data.find(b'>', 1, 5) + 1]] = shape = (
                                lead, lead_size, kind, header, header_size, shape_head,
                                facility, last_program, last_host, head, log_file, append)
                            if kind:
                                by_host[header[:header.find(b' ', 1)]] = shape
                else:
                    append(format_json_line(now, host, facility.app, facility.name,
                                            message.message, json_fields(message, program or '-')))
                count += 1
                size += len(data)
        finally:
            if count:
                server._count_accepted(facility, count, size)
            if overdrawn is not None and is_stream:
                server.throttle.pause(source, overdrawn, now)
            counters.events['syslog_messages_' + source.listener] += received
            if cut:
                counters.events['syslog_cut'] += cut
            if replaced:
                counters.events['syslog_replaced_utf8'] += replaced


# -- listeners ---------------------------------------------------------------------------------

class SyslogStreamListener(StreamListener):
    """A TCP or TLS syslog listener: its connections frame by RFC 6587."""

    def __init__(self, server, sock, kind, tls_context, receiver):
        super().__init__(server, sock, kind, tls_context)
        self.receiver = receiver

    def _open(self, sock, address):
        try:
            sock.setblocking(False)
            connection = SyslogConnection(self.server, sock, address, self.kind,
                                          self.tls_context, self.receiver)
        except OSError:
            self.server.counters.count('connections_lost_at_accept')
            sock.close()
            return
        connection.start()


class SyslogConnection(StreamConnection):
    """One syslog sender over TCP or TLS."""

    def __init__(self, server, sock, address, kind, tls_context, receiver):
        # Counted under its listener's kind in status (connections open and accepted).
        super().__init__(server, sock, address, kind, tls_context)
        self.listener = kind[len('syslog_'):]
        self.receiver = receiver
        self.splitter = SyslogFrameSplitter(server.max_message_size)

    @property
    def has_client_cert(self):
        """A client certificate was verified in the handshake (the stream connection keeps
        its subject: after the peer's close, the TLS socket no longer tells)."""
        return self.tls and not self.handshaking and self.identity[1] is not None

    def check_timeouts(self, now, *limits):
        """About once a second: after QUIET_S without bytes, a message that ends with an
        LF is taken (a NUL-framed sender's, or a connection's first before its framing
        is known: it waited for the bytes after the LF, a PRI would have ended it there,
        anything else continues it); then the stream connection's timeouts."""
        splitter = self.splitter
        if splitter.buffer and now - self.last_activity >= QUIET_S:
            frames = splitter.take_waiting_line()
            if frames:
                try:
                    self.receiver.ingest(frames, self)
                except Exception:
                    log_internal_error(self.server, self.peer)
                if not splitter.is_mid_frame:
                    self.frame_started_at = None
        super().check_timeouts(now, *limits)

    def close(self, reason):
        """Close; a last message that the peer did not end (no LF at the end of the
        stream) is still a message."""
        if not self.closed:
            self._take_rest()
        super().close(reason)

    def drain_once(self):
        """At shutdown: one read of what the peer sent; when there is no more, take an
        unended last message, before the writer closes (``close`` comes after that)."""
        count = super().drain_once()
        if not count:
            self._take_rest()
        return count

    def _take_rest(self):
        splitter = self.splitter
        if splitter.buffer:
            frames = splitter.take_waiting_line()
            rest = splitter.take_rest()
            if rest is not None:
                frames.append(rest)
            if frames:
                try:
                    self.receiver.ingest(frames, self)
                except Exception:
                    log_internal_error(self.server, self.peer)

    def _feed(self, data):
        server = self.server
        splitter = self.splitter
        self.last_activity = server.now
        frames = splitter.feed(data)
        if frames:
            rejected = server.counters.rejected
            before = rejected.total()
            self.receiver.ingest(frames, self)
            if rejected.total() - before < len(frames):
                # An accepted message: a busy relay is not the idle one to close at
                # max_connections (A3-15); refused ones are no activity (issue 15).
                server.connection_active(self)
        if not splitter.is_mid_frame:
            self.frame_started_at = None
        elif self.frame_started_at is None or frames:
            # Per frame, as for our protocol: a busy stream is never cut.
            self.frame_started_at = server.now


class SyslogDatagramListener:
    """A UDP or unix datagram socket: one datagram is one message."""

    def __init__(self, server, sock, kind, receiver):
        self.server = server
        self.sock = sock
        self.kind = kind
        self.receiver = receiver
        self.path = sock.getsockname() if sock.family == socket.AF_UNIX else None
        self.peers = {}
        self.read_size = FIRST_READ_SIZE   # a turn's bytes, as connections.DatagramListener
        self.owed_s = 0.0                  # a turn's time beyond TURN_S, still to pay back

    def start(self):
        self.server.loop.register(self.sock, READ, self.on_event)

    def on_event(self, mask):
        if mask is not None and self.owed_s > 0:
            self.owed_s -= TURN_S   # this pass's turn pays for a longer one before
            return
        server = self.server
        buffer = server.recv_buffer
        max_size = server.max_message_size
        frames = []
        sender = None
        # A turn, as our protocol's datagram listener takes it (A3-9): about TURN_S of
        # work (the time beyond it paid back in the next passes), then the other ready
        # sockets; at shutdown (no mask) one bounded read.
        budget = self.read_size if mask is not None else RECV_SIZE
        received = read = 0
        started = time.perf_counter()
        try:
            while received < UDP_BATCH and read < budget:
                try:
                    count, address = self.sock.recvfrom_into(buffer)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    server.counters.count('udp_errors')
                    break
                received += 1
                read += count
                if address != sender:
                    if frames:
                        self._ingest(frames, sender)
                        frames = []
                    sender = address
                frames.append(self.frame(buffer, count, max_size))
        finally:
            if frames:
                self._ingest(frames, sender)
        if mask is not None:
            elapsed = time.perf_counter() - started
            StreamConnection._adapt_read_size(self, read, elapsed)
            self.owed_s = min(elapsed - TURN_S, DATAGRAM_OWED_MAX_S)

    @staticmethod
    def frame(buffer, count, max_size):
        """(message, was_cut) for a datagram of ``count`` bytes read into ``buffer``."""
        # A datagram that filled the buffer may have been cut by the kernel already.
        if count > max_size or count == len(buffer):
            return bytes(buffer[:min(count, max_size)]), True
        return bytes(buffer[:count]), False

    def _ingest(self, frames, address):
        peer = self.peers.get(address)
        if peer is None:
            if len(self.peers) >= 1024:
                self.peers.clear()
            peer = self.peers[address] = _DatagramPeer(address, self.kind)
        try:
            self.receiver.ingest(frames, peer)
        except Exception:
            log_internal_error(self.server, peer.peer)

    def close(self):
        self.server.loop.unregister(self.sock)
        self.sock.close()
        if self.path:
            try:
                os.unlink(self.path)
            except OSError:
                pass


class _DatagramPeer:
    """What the receiver and ``Server.reject`` need to know about a datagram sender."""

    __slots__ = ('peer', 'peer_host', 'listener', 'kind')
    has_client_cert = False

    def __init__(self, address, kind):
        self.kind = kind
        self.listener = kind[len('syslog_'):]
        if isinstance(address, tuple):
            self.peer = peer_name(address)
            self.peer_host = address[0]
        else:
            # A unix socket's sender is this machine (its address is usually unnamed).
            self.peer = 'unix:%s' % (address or 'local')
            self.peer_host = 'localhost'
