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

from .connections import (READ, UDP_BATCH, StreamConnection, StreamListener,
                          log_internal_error, peer_name)
from .errors import StartupError, describe_os_error
from .files import format_address
from .jsonlines import format_json_line
from .protocol import Rejection
from .server import printable_host
from .syslog_framing import SyslogFrameSplitter
from .syslog_parse import json_fields, line_text, parse_message
from .syslog_routing import SyslogRouter

log = logging.getLogger('loghogd.syslog')

UNCLAIMED = 'syslog_unclaimed'
NEEDS_CLIENT_CERT = 'syslog_needs_client_cert'
KINDS = ('syslog_udp', 'syslog_tcp', 'syslog_tls', 'syslog_unix')


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
    """A unix datagram socket at ``path`` with ``mode``; a stale socket there is replaced,
    anything else there is an error."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(info.st_mode):
            raise StartupError(errno.EEXIST, '[syslog] unix_socket: %s exists and is not a socket'
                               % path)
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        except OSError:
            pass
        sock.bind(path)
        os.chmod(path, mode)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise StartupError(exc.errno, '[syslog] unix_socket: cannot bind %s: %s'
                           % (path, describe_os_error(exc))) from None
    return sock


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

    def __init__(self, server, default_app):
        self.server = server
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
        of the line and file) is looked up again only when it changes.
        """
        server = self.server
        counters = server.counters
        now = server.now
        prefix = server.line_prefix
        lookup = self.router.lookup
        queue_for = server.writer.queue_for
        peer_host = source.peer_host
        heads = self.heads
        if len(heads) > 4096:   # senders choose programs and pids freely
            heads.clear()
        received = cut = replaced = count = size = 0
        last_program = last_host = facility = log_file = append = head = None
        bucket = overdrawn = None   # rate_limit (issue 19): streams wait, datagrams refused
        is_stream = hasattr(source, 'pause_reading')
        try:
            for data, was_cut in frames:
                received += 1
                if was_cut:
                    cut += 1
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
        # The stream connection's TLS handling keys on kind 'tls'.
        super().__init__(server, sock, address, 'tls' if tls_context is not None else 'tcp',
                         tls_context)
        self.listener = kind[len('syslog_'):]
        self.receiver = receiver
        self.splitter = SyslogFrameSplitter(server.max_message_size)
        self._client_cert = None

    @property
    def has_client_cert(self):
        if self._client_cert is None:
            self._client_cert = (self.kind == 'tls' and not self.handshaking
                                 and bool(self.sock.getpeercert()))
        return self._client_cert

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
        if self.splitter.buffer:
            rest = self.splitter.take_rest()
            if rest is not None:
                try:
                    self.receiver.ingest([rest], self)
                except Exception:
                    log_internal_error(self.server, self.peer)

    def _feed(self, data):
        server = self.server
        splitter = self.splitter
        self.last_activity = server.now
        frames = splitter.feed(data)
        if frames:
            self.receiver.ingest(frames, self)
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

    def start(self):
        self.server.loop.register(self.sock, READ, self.on_event)

    def on_event(self, mask):
        server = self.server
        buffer = server.recv_buffer
        max_size = server.max_message_size
        frames = []
        sender = None
        try:
            for _ in range(UDP_BATCH):
                try:
                    count, address = self.sock.recvfrom_into(buffer)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    server.counters.count('udp_errors')
                    break
                if address != sender:
                    if frames:
                        self._ingest(frames, sender)
                        frames = []
                    sender = address
                frames.append(self.frame(buffer, count, max_size))
        finally:
            if frames:
                self._ingest(frames, sender)

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
