"""Listeners and connections: bytes off the sockets, frames into the server.

Every socket is non-blocking.  A bad peer costs its own connection and nothing more:
errors are caught at the per-connection boundary, counted and the connection closed.
TLS handshakes are a state of the connection that flips read/write interest.
"""

import errno
import logging
import selectors
import socket
import ssl

from loghog.wire import HEADER, HEADER_SIZE

from .protocol import FrameSplitter, Rejection, TOO_LARGE

log = logging.getLogger('loghogd.server')

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE
RECV_SIZE = 256 * 1024
# Accept at most this many connections per readiness event, so that a connection
# storm cannot starve clients that are already sending.
ACCEPT_BATCH = 64
# Datagrams read per readiness event: drain the socket, but let others run too.
UDP_BATCH = 1024
BAD_DATAGRAM = 'bad_datagram'


def peer_name(address):
    """'host:port' (or '[v6]:port') for logs."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return '[%s]:%s' % (host, port) if ':' in host else '%s:%s' % (host, port)
    return str(address)


class StreamListener:
    """A listening TCP socket (``kind`` 'tcp' or 'tls') that hands new connections to the server."""

    def __init__(self, server, sock, kind, tls_context=None):
        self.server = server
        self.sock = sock
        self.kind = kind
        self.tls_context = tls_context
        self.accepting = False

    def start(self):
        if not self.accepting:
            self.server.loop.register(self.sock, READ, self.on_event)
            self.accepting = True

    def pause(self):
        if self.accepting:
            self.server.loop.unregister(self.sock)
            self.accepting = False

    def on_event(self, mask):
        for _ in range(ACCEPT_BATCH):
            if not self.server.can_accept():
                return
            try:
                sock, address = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.server.out_of_descriptors(exc)
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                raise
            sock.setblocking(False)
            StreamConnection(self.server, sock, address, self.kind, self.tls_context).start()

    def close(self):
        self.pause()
        self.sock.close()


class StreamConnection:
    """One TCP or TLS client: reads bytes, splits frames, gives them to the server."""

    def __init__(self, server, sock, address, kind, tls_context=None):
        self.server = server
        self.sock = sock
        self.address = address
        self.peer = peer_name(address)
        self.peer_host = address[0] if isinstance(address, tuple) else str(address)
        self.kind = kind
        self.splitter = FrameSplitter(server.max_message_size)
        now = server.now
        self.opened_at = now
        self.last_activity = now
        self.frame_started_at = None
        self.handshaking = False
        self.closed = False
        if tls_context is not None:
            self.sock = tls_context.wrap_socket(sock, server_side=True,
                                                do_handshake_on_connect=False)
            self.handshaking = True

    def start(self):
        self.server.add_connection(self)
        self.server.loop.register(self.sock, READ, self.on_event)

    def on_event(self, mask):
        try:
            if self.handshaking:
                self._handshake()
            else:
                self._read()
        except (ConnectionError, TimeoutError) as exc:
            self.close('connection error: %s' % (exc.strerror or exc))
        except ssl.SSLError as exc:
            self.close('TLS error: %s' % (exc.reason or exc))
        except OSError as exc:
            self.close('socket error: %s' % (exc.strerror or exc))
        except Exception:
            # A bug must cost this connection only, never the daemon.
            log.exception('internal error on the connection from %s; closing it', self.peer)
            self.close(None)

    def _handshake(self):
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            self.server.loop.modify(self.sock, READ, self.on_event)
            return
        except ssl.SSLWantWriteError:
            self.server.loop.modify(self.sock, WRITE, self.on_event)
            return
        except (ssl.SSLError, ssl.CertificateError, OSError) as exc:
            self.server.counters.count('tls_handshakes_failed')
            self.server.warn('tls_handshake', 'TLS handshake with %s failed: %s',
                             self.peer, getattr(exc, 'reason', None) or exc)
            self.close(None)
            return
        self.handshaking = False
        self.server.counters.count('tls_handshakes')
        self.server.loop.modify(self.sock, READ, self.on_event)
        self._read()

    def _read(self):
        buffer = self.server.recv_buffer
        try:
            count = self.sock.recv_into(buffer)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
            return
        except ssl.SSLWantWriteError:
            return
        if not count:
            self.close('closed by peer' if not self.splitter.is_mid_frame
                       else 'closed by peer in the middle of a frame')
            return
        self._feed(memoryview(buffer)[:count])
        # TLS may hold decrypted bytes that the selector cannot see.
        while not self.closed and self.kind == 'tls' and self.sock.pending():
            count = self.sock.recv_into(buffer, min(len(buffer), self.sock.pending()))
            if not count:
                break
            self._feed(memoryview(buffer)[:count])

    def _feed(self, data):
        server = self.server
        self.last_activity = server.now
        frames = self.splitter.feed(data)
        if frames:
            server.ingest(frames, self)
        if self.splitter.lost:
            self.close('framing lost (not a LogHog stream?)')
            return
        if self.splitter.is_mid_frame:
            if self.frame_started_at is None:
                self.frame_started_at = server.now
        else:
            self.frame_started_at = None

    def check_timeouts(self, now, frame_timeout_s, handshake_timeout_s, idle_timeout_s):
        """Close the connection if it is too slow; called about once a second."""
        if self.handshaking:
            if now - self.opened_at > handshake_timeout_s:
                self.server.counters.count('tls_handshakes_failed')
                self.close('TLS handshake took longer than %gs' % handshake_timeout_s)
        elif self.frame_started_at is not None and now - self.frame_started_at > frame_timeout_s:
            self.server.counters.count('frame_timeouts')
            self.close('a frame took longer than %gs to arrive' % frame_timeout_s)
        elif idle_timeout_s and now - self.last_activity > idle_timeout_s:
            self.close('idle for more than %gs' % idle_timeout_s)

    def drain(self, max_bytes):
        """At shutdown: read what the peer already sent (up to ``max_bytes``), then stop."""
        buffer = self.server.recv_buffer
        total = 0
        while not self.closed and not self.handshaking and total < max_bytes:
            try:
                count = self.sock.recv_into(buffer)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except (OSError, ssl.SSLError):
                return
            if not count:
                return
            total += count
            self._feed(memoryview(buffer)[:count])

    def close(self, reason):
        if self.closed:
            return
        self.closed = True
        if reason:
            log.debug('connection from %s closed: %s', self.peer, reason)
        self.server.loop.unregister(self.sock)
        self.server.remove_connection(self)
        try:
            self.sock.close()
        except OSError:
            pass


class DatagramListener:
    """A UDP socket: one datagram is one frame."""

    def __init__(self, server, sock):
        self.server = server
        self.sock = sock

    def start(self):
        self.server.loop.register(self.sock, READ, self.on_event)

    def on_event(self, mask):
        server = self.server
        buffer = server.recv_buffer
        max_size = server.max_message_size
        for _ in range(UDP_BATCH):
            try:
                count, address = self.sock.recvfrom_into(buffer)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                server.counters.count('udp_errors')
                return
            server.counters.count('udp_datagrams')
            peer = _DatagramPeer(address)
            if count < HEADER_SIZE:
                server.ingest([Rejection(BAD_DATAGRAM, 'datagram of %d bytes' % count)], peer)
                continue
            size, flags = HEADER.unpack_from(buffer)
            if size != count - HEADER_SIZE:
                reason = TOO_LARGE if size > max_size else BAD_DATAGRAM
                server.ingest([Rejection(reason, 'frame says %d bytes, datagram holds %d'
                                         % (size, count - HEADER_SIZE))], peer)
                continue
            if size > max_size:
                server.ingest([Rejection(TOO_LARGE, 'frame of %d bytes' % size)], peer)
                continue
            server.ingest([(flags, bytes(buffer[HEADER_SIZE:count]))], peer)

    def close(self):
        self.server.loop.unregister(self.sock)
        self.sock.close()


class _DatagramPeer:
    """What ``Server.ingest`` needs to know about a UDP sender."""

    __slots__ = ('peer', 'peer_host')
    kind = 'udp'

    def __init__(self, address):
        self.peer = peer_name(address)
        self.peer_host = address[0]
