"""Listeners and connections: bytes off the sockets, frames into the server.

Every socket is non-blocking.  A bad peer costs its own connection and nothing more:
errors are caught at the per-connection boundary, counted and the connection closed.
TLS handshakes are a state of the connection that flips read/write interest.
"""

import errno
import fcntl
import logging
import select
import selectors
import socket
import ssl
import struct
import termios
import time

from loghog.wire import HEADER, HEADER_SIZE

from .protocol import FrameSplitter, Rejection, TOO_LARGE

log = logging.getLogger('loghogd.server')

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE
RECV_SIZE = 256 * 1024
# A connection's turn in a loop pass: one read, whose size adapts so that handling it
# takes about this long (issue 15: 8 connections flooding refused frames took a second a
# pass with 256 KiB reads, and a good client waited for all of it).  Reads shrink to at
# least MIN_READ_SIZE; a small read costs a syscall per MIN_READ_SIZE, nothing more.
TURN_S = 0.0005
MIN_READ_SIZE = 512
# A new connection starts here (a 256 KiB first read of refused frames took 43 ms) and
# doubles with every full read handled quickly.
FIRST_READ_SIZE = 4096
# Accept at most this many connections per readiness event, so that a connection
# storm cannot starve clients that are already sending.
ACCEPT_BATCH = 64
# Datagrams read per readiness event at most (a turn's byte budget, read_size, usually
# ends it first): drain the socket, but let others run too.
UDP_BATCH = 1024
# At most this much of a datagram turn's time beyond TURN_S is paid back (a stall of the
# whole process must not silence the listener for thousands of passes).
DATAGRAM_OWED_MAX_S = 0.01
# UDP senders whose peer names are kept (for counters and logs) between datagrams.
UDP_PEER_CACHE = 1024
BAD_DATAGRAM = 'bad_datagram'
# Acks a peer may leave unread before it is cut off (acks are tiny: this is thousands).
MAX_OUTGOING_BYTES = 1024 * 1024
# At shutdown, read this much at a time and write it before the next read: the drain's
# time bound is checked between reads, and a read of lines for a thousand new files
# took 11 s to write under load (issue 14; a quarter of the loop's own read size).
DRAIN_READ_BYTES = 64 * 1024
# At a stop, after the last acks: how long the daemon reads and drops what clients still
# send, waiting for them to close their end (close_at_stop), for all of them together.
CLOSE_GRACE_S = 0.5


def log_internal_error(server, peer):
    """Log the exception being handled (a bug) with its traceback, rate-limited.

    A bug that a peer can trigger at will must not become a way to fill the disk.
    """
    server.counters.count('internal_errors')
    allowed, suppressed = server.limiter.allow('internal_error', server.now)
    if allowed:
        more = ' (%d more not logged)' % suppressed if suppressed else ''
        log.exception('internal error on input from %s; dropped it%s', peer, more)


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
                # Anything else (ENETDOWN, EPERM from a firewall, ...) is about one
                # connection attempt: never let it escape into the loop.
                self.server.warn('accept', 'accept() on %s failed: %s', self.kind,
                                 exc.strerror or exc)
                return
            self._open(sock, address)

    def _open(self, sock, address):
        try:
            sock.setblocking(False)
            connection = StreamConnection(self.server, sock, address, self.kind, self.tls_context)
        except OSError as exc:
            # wrap_socket() asks for the peer's address and raises if the peer is
            # already gone (or sent data and reset): that costs this connection only.
            self.server.counters.count('connections_lost_at_accept')
            log.debug('connection from %s lost at accept: %s', peer_name(address),
                      getattr(exc, 'reason', None) or exc.strerror or exc)
            sock.close()
            return
        connection.start()

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
        self.kind = kind              # what status counts it under ('tcp', 'syslog_tls', ...)
        self.tls = tls_context is not None
        self.splitter = FrameSplitter(server.max_message_size)
        now = server.now
        self.opened_at = now
        self.last_activity = now
        self.frame_started_at = None
        self.handshaking = False
        self.closed = False
        self.acks = None              # AckState once the client asks for acknowledgements
        self.frames_before = 0        # frames handed to the server before this read's
        # Who the peer is, for its sessions (acks.py): the IP address, and with TLS the
        # certificate subject (set after the handshake).
        self.identity = (self.peer_host, None)
        self.outgoing = bytearray()   # acks not yet taken by the kernel
        self.waiting_to_send = False
        self.refused_only = False     # the last read held frames, all of them refused
        self.malformed_in_a_row = 0   # counted by server.reject (MALFORMED_IN_A_ROW)
        self.read_size = FIRST_READ_SIZE   # bytes read per turn (adapts to TURN_S)
        if tls_context is not None:
            self.sock = tls_context.wrap_socket(sock, server_side=True,
                                                do_handshake_on_connect=False)
            self.handshaking = True

    def start(self):
        self.server.add_connection(self)
        if not self.closed:   # over its address's max_connections_per_peer
            self.server.loop.register(self.sock, READ, self.on_event)

    def on_event(self, mask):
        if self.closed:
            return   # closed earlier in this pass (to make room), its event still listed
        try:
            if self.handshaking:
                self._handshake()
                return
            if mask & WRITE and self.outgoing:
                self._send_outgoing()
            if mask & READ and not self.closed and not self.reading_paused:
                self._read()
        except (ConnectionError, TimeoutError) as exc:
            self.close('connection error: %s' % (exc.strerror or exc))
        except ssl.SSLError as exc:
            self.close('TLS error: %s' % (exc.reason or exc))
        except OSError as exc:
            self.close('socket error: %s' % (exc.strerror or exc))
        except Exception:
            # A bug must cost this connection only, never the daemon.
            log_internal_error(self.server, self.peer)
            self.close('internal error')

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
            reason = getattr(exc, 'reason', None) or exc
            if getattr(exc, 'verify_message', None):
                reason = '%s (%s)' % (reason, exc.verify_message)
            self.server.warn('tls_handshake', 'TLS handshake with %s failed: %s', self.peer, reason)
            self.close(None)
            return
        self.handshaking = False
        self.server.handshake_done(self)
        self.server.counters.count('tls_handshakes')
        certificate = self.sock.getpeercert()
        if certificate:
            self.identity = (self.peer_host, certificate.get('subject'))
        if log.isEnabledFor(logging.DEBUG):
            log.debug('TLS connection from %s: %s, %s, client %s', self.peer, self.sock.version(),
                      self.sock.cipher()[0], _subject(self.sock.getpeercert()))
        self.server.loop.modify(self.sock, READ, self.on_event)
        self._read(after_handshake=True)

    def _read(self, after_handshake=False):
        """This connection's turn: one read of at most ``read_size`` bytes (TLS: and what
        the TLS layer already holds, within the same size), handed to the server."""
        buffer = self.server.recv_buffer
        budget = self.read_size
        started = time.perf_counter()
        try:
            count = self.sock.recv_into(buffer, budget)
        except (BlockingIOError, InterruptedError):
            return
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            # Readable, yet no data: bytes arrived but not a whole TLS record.  A record
            # that never completes (a TLS slowloris) is timed like a frame that never
            # completes.  (Right after the handshake there may simply be nothing yet.)
            if not after_handshake and self.frame_started_at is None:
                self.frame_started_at = self.server.now
            return
        if not count:
            self._end_of_input('closed by peer' if not self.splitter.is_mid_frame
                               else 'closed by peer in the middle of a frame')
            return
        self._feed(memoryview(buffer)[:count])
        read = count
        # TLS may hold decrypted bytes that the selector cannot see (the loop comes back
        # for them: ``has_pending``).
        while not self.closed and self.tls and read < budget and self.sock.pending():
            count = self.sock.recv_into(buffer, min(budget - read, self.sock.pending()))
            if not count:
                break
            read += count
            self._feed(memoryview(buffer)[:count])
        self._adapt_read_size(read, time.perf_counter() - started)
        if self.tls and not self.closed and self.sock.pending():
            self.server.tls_pending.add(self)

    def _adapt_read_size(self, read, elapsed_s):
        """Shrink the next read when handling this one took longer than a turn, grow it
        back (doubling) when a full read took far less."""
        if elapsed_s > TURN_S:
            self.read_size = max(MIN_READ_SIZE, min(self.read_size, int(read * TURN_S / elapsed_s)))
        elif read >= self.read_size and elapsed_s < TURN_S / 4:
            self.read_size = min(RECV_SIZE, self.read_size * 2)

    # -- a peer that half-closes (issue 14): its acks still go out ----------------------------
    # After the peer's EOF (shutdown(SHUT_WR): "that was all", loghog's Connection.finish)
    # the connection stays open for writing only, until the acks of what it sent are sent
    # (after their fsync), at most HALF_CLOSED_ACK_TIMEOUT_S; then it is closed.
    HALF_CLOSED_ACK_TIMEOUT_S = 30.0
    half_closed_at = None      # when the peer's EOF came, while acks were still due

    def _end_of_input(self, reason):
        self.eof_reason = reason
        if self.acks is None or (self.acks.is_done() and not self.outgoing):
            self.close(reason)
            return
        self.half_closed_at = self.server.now
        self._interest(bool(self.outgoing))   # never READ again: EOF stays readable

    def _interest(self, waiting):
        """Register for what the connection waits for: READ (and WRITE while acks wait
        for the kernel); after the peer's EOF or while reading is paused, WRITE only, and
        after the EOF close once all is sent."""
        loop = self.server.loop
        if self.half_closed_at is None and not self.reading_paused:
            loop.modify(self.sock, READ | WRITE if waiting else READ, self.on_event)
            return
        loop.unregister(self.sock)
        if waiting:
            loop.register(self.sock, WRITE, self.on_event)
        elif self.half_closed_at is not None and self.acks.is_done():
            self.close(self.eof_reason + ', after its last acknowledgements')

    def _feed(self, data):
        server = self.server
        splitter = self.splitter
        was_skipping = splitter.skip_remaining > 0
        frames = splitter.feed(data)
        self.refused_only = False
        if frames:
            try:
                accepted = server.ingest(frames, self)
            finally:
                self.frames_before += len(frames)
            self.refused_only = not accepted
            if self.malformed_in_a_row >= server.malformed_limit:
                server.closing_malformed(self)   # the server stopped reading at the last
                return
            if accepted:
                # Only accepted messages are activity: a peer that sends a refused frame
                # now and then must not hold its slot for ever (issue 15).
                self.last_activity = server.now
                server.connection_active(self)
                self.malformed_in_a_row = 0
        if splitter.lost:
            self.close('framing lost (not a LogHog stream?)')
            return
        if not splitter.is_mid_frame:
            self.frame_started_at = None
        elif (self.frame_started_at is None or frames
              or (was_skipping and not splitter.skip_remaining)):
            # A frame ended in this read, so the unfinished one started in it: the
            # timer is per frame, and a busy stream that never pauses between frames
            # must not be cut.
            self.frame_started_at = server.now

    # -- back-pressure (ratelimit.py): reading stops while the app's bucket is in debt ----------
    reading_paused = False

    def pause_reading(self):
        """Read nothing more until ``resume_reading``; acks still go out."""
        if self.closed or self.reading_paused or self.half_closed_at is not None:
            return
        self.reading_paused = True
        self._interest(self.waiting_to_send)

    def resume_reading(self):
        if not self.reading_paused:
            return
        self.reading_paused = False
        if self.closed or self.half_closed_at is not None:
            return
        loop = self.server.loop
        loop.unregister(self.sock)
        loop.register(self.sock, READ | WRITE if self.waiting_to_send else READ, self.on_event)
        if self.frame_started_at is not None:
            self.frame_started_at = self.server.now   # the wait was ours, not the peer's
        if self.kind == 'tls' and self.sock.pending():
            self.server.tls_pending.add(self)

    def is_evictable(self):
        """True when closing the connection loses nothing: no frame unacknowledged and no
        ack unsent (or a handshake not finished)."""
        return self.handshaking or (not self.outgoing
                                    and (self.acks is None or self.acks.is_done()))

    def send(self, data):
        """Queue ``data`` (an ack) for the peer and send what the kernel takes now."""
        if self.closed:
            return
        self.outgoing += data
        try:
            self._send_outgoing()
        except (OSError, ssl.SSLError) as exc:
            self.close('cannot send acknowledgements: %s' % (getattr(exc, 'strerror', None) or exc))

    def _send_outgoing(self):
        try:
            sent = self.sock.send(self.outgoing)
        except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            sent = 0
        del self.outgoing[:sent]
        if len(self.outgoing) > MAX_OUTGOING_BYTES:
            self.close('the peer does not read its acknowledgements')
            return
        waiting = bool(self.outgoing)
        if waiting != self.waiting_to_send or self.half_closed_at is not None:
            self.waiting_to_send = waiting
            self._interest(waiting)

    def check_timeouts(self, now, frame_timeout_s, handshake_timeout_s, idle_timeout_s):
        """Close the connection if it is too slow; called about once a second."""
        server = self.server
        if self.half_closed_at is not None:
            if now - self.half_closed_at > self.HALF_CLOSED_ACK_TIMEOUT_S:
                self.close('%s; its acknowledgements not due within %gs' % (
                    self.eof_reason, self.HALF_CLOSED_ACK_TIMEOUT_S))
        elif self.handshaking:
            if now - self.opened_at > handshake_timeout_s:
                server.counters.count('tls_handshakes_failed')
                server.counters.count('handshake_timeouts')
                server.warn('handshake_timeout', 'closed the connection from %s: no TLS '
                            'handshake within handshake_timeout (%gs)', self.peer,
                            handshake_timeout_s)
                self.close('TLS handshake took longer than %gs' % handshake_timeout_s)
        elif (self.frame_started_at is not None and not self.reading_paused
              and now - self.frame_started_at > frame_timeout_s):
            server.counters.count('frame_timeouts')
            server.warn('frame_timeout', 'closed the connection from %s: a frame took longer '
                        'than frame_timeout (%gs) to arrive', self.peer, frame_timeout_s)
            self.close('a frame took longer than %gs to arrive' % frame_timeout_s)
        elif idle_timeout_s and now - self.last_activity > idle_timeout_s:
            server.counters.count('idle_timeouts')
            self.close('idle for more than %gs' % idle_timeout_s)

    def queued_bytes(self):
        """Bytes the peer has sent that are not read yet (the kernel's receive queue, and
        for TLS what the TLS layer holds); 0 if unknown."""
        if self.closed:
            return 0
        try:
            queued = struct.unpack('i', fcntl.ioctl(self.sock.fileno(), termios.FIONREAD,
                                                    b'\0\0\0\0'))[0]
            if self.tls and not self.handshaking:
                queued += self.sock.pending()
        except (OSError, ValueError):
            return 0
        return queued

    def end_writing(self, clock, deadline):
        """At a stop, after the last acks: send what is left of them (until ``deadline``),
        then end this side of the connection (a FIN after them).  False if that failed."""
        poller = None
        try:
            while self.outgoing:
                try:
                    sent = self.sock.send(self.outgoing)
                except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError,
                        ssl.SSLWantReadError):
                    left = deadline - clock()
                    if left <= 0:
                        return False
                    if poller is None:
                        poller = select.poll()
                        poller.register(self.sock, select.POLLOUT)
                    poller.poll(min(left, 0.05) * 1000)
                    continue
                del self.outgoing[:sent]
            self.sock.shutdown(socket.SHUT_WR)   # TLS: the socket is plain from here on
        except (OSError, ValueError):
            return False
        return True

    def drop_input(self):
        """At a stop, after ``end_writing``: read and drop what the peer still sends (never
        acknowledged: it sends it again); False once the peer has closed its end."""
        try:
            return bool(self.sock.recv_into(self.server.recv_buffer, DRAIN_READ_BYTES))
        except (BlockingIOError, InterruptedError):
            return True
        except (OSError, ValueError):
            return False

    def drain_once(self):
        """At shutdown: one read of what the peer already sent; return the byte count
        (0: nothing more now, the peer closed, or the connection is closed)."""
        if self.closed or self.handshaking:
            return 0
        buffer = self.server.recv_buffer
        try:
            count = self.sock.recv_into(buffer, DRAIN_READ_BYTES)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return 0
        except (OSError, ssl.SSLError):
            return 0
        if count:
            self._feed(memoryview(buffer)[:count])
        return count

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
    """A UDP socket: one datagram is one frame.

    Each readiness event is a turn like a stream connection's (issue 15): it reads until
    the socket is empty (EAGAIN), at most UDP_BATCH datagrams and about ``read_size``
    bytes, a budget that adapts as a stream connection's read does so that handling the
    turn takes about TURN_S (attack finding A3-9: 1024 datagrams of 60 KB a turn held
    every other client for seconds, and SIGTERM past its bound).  One datagram may cost
    more than a turn (3 ms to parse 60 KB of syslog structured data): the time beyond
    TURN_S is paid back, a turn of TURN_S per pass let go by.  Each sender's
    datagrams of a turn go to the server together, in the order they came: one
    ``ingest`` per sender and turn, not one per datagram (senders that take turns, as a
    flood from several does, cost 2.9 µs a datagram one by one, 1.5 in runs of 8: most
    of a short ``ingest``'s cost is its setup).  Datagrams of different senders are not
    kept in order among themselves (nothing orders them: they came by different paths);
    each sender's are.  What the turn leaves stays in the kernel's queue (the socket stays
    readable: its next turn comes in the next pass); the kernel's drops are counted as
    before (status: /proc/net/udp).
    """

    def __init__(self, server, sock):
        self.server = server
        self.sock = sock
        self.peers = {}     # address -> _DatagramPeer (bounded: senders are unbounded)
        self.read_size = FIRST_READ_SIZE   # bytes read per turn (adapts to TURN_S)
        self.owed_s = 0.0                  # a turn's time beyond TURN_S, still to pay back

    def start(self):
        self.server.loop.register(self.sock, READ, self.on_event)

    def on_event(self, mask):
        if mask is not None and self.owed_s > 0:
            self.owed_s -= TURN_S   # this pass's turn pays for a longer one before
            return
        server = self.server
        buffer = server.recv_buffer
        view = memoryview(buffer)
        max_size = server.max_message_size
        recvfrom_into = self.sock.recvfrom_into
        frame_of = self._frame
        senders = {}         # address -> its frames of this turn, in order
        frames = sender = None
        received = 0
        # At shutdown (no mask) one last read, bounded by bytes rather than by time.
        budget = self.read_size if mask is not None else RECV_SIZE
        read = 0
        started = time.perf_counter()
        try:
            while received < UDP_BATCH and read < budget:
                try:
                    count, address = recvfrom_into(buffer)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    server.counters.count('udp_errors')
                    break
                received += 1
                read += count
                if address != sender:
                    sender = address
                    frames = senders.get(address)
                    if frames is None:
                        frames = senders[address] = []
                frames.append(frame_of(buffer, count, max_size, view))
        finally:
            for address, frames in senders.items():
                self._ingest(frames, address)
            if received:
                server.counters.count('udp_datagrams', received)
        if mask is not None:
            # The stream connections' rule, on this listener's read_size.
            elapsed = time.perf_counter() - started
            StreamConnection._adapt_read_size(self, read, elapsed)
            self.owed_s = min(elapsed - TURN_S, DATAGRAM_OWED_MAX_S)

    def _ingest(self, frames, address):
        peer = self.peers.get(address)
        if peer is None:
            if len(self.peers) >= UDP_PEER_CACHE:
                self.peers.clear()
            peer = self.peers[address] = _DatagramPeer(address)
        try:
            self.server.ingest(frames, peer)
        except Exception:
            # A bug must cost these datagrams (one sender's, of one read) only, never
            # the daemon.
            log_internal_error(self.server, peer.peer)

    @staticmethod
    def _frame(buffer, count, max_size, view=None):
        """The datagram's (flags, payload), or a Rejection."""
        if count < HEADER_SIZE:
            return Rejection(BAD_DATAGRAM, 'datagram of %d bytes' % count)
        size, flags = HEADER.unpack_from(buffer)
        if size != count - HEADER_SIZE:
            reason = TOO_LARGE if size > max_size else BAD_DATAGRAM
            return Rejection(reason, 'frame says %d bytes, datagram holds %d'
                             % (size, count - HEADER_SIZE))
        if size > max_size:
            return Rejection(TOO_LARGE, 'frame of %d bytes' % size)
        if view is None:
            view = memoryview(buffer)
        return (flags, view[HEADER_SIZE:count].tobytes())

    def close(self):
        self.server.loop.unregister(self.sock)
        self.sock.close()


def _subject(certificate):
    """The commonName of a peer certificate (as ``getpeercert()`` returns it), for logs."""
    for rdn in (certificate or {}).get('subject', ()):
        for key, value in rdn:
            if key == 'commonName':
                return repr(value)
    return '(no common name)'


class _DatagramPeer:
    """What ``Server.ingest`` needs to know about a UDP sender."""

    __slots__ = ('peer', 'peer_host')
    kind = 'udp'

    def __init__(self, address):
        self.peer = peer_name(address)
        self.peer_host = address[0]


def close_at_stop(connections, clock, grace_s=CLOSE_GRACE_S):
    """Close ``connections`` at a stop, once their last acks are queued.

    A connection closed with bytes of its peer unread is reset by the kernel, and a reset
    discards what of the last acks is still on its way over a real network (the client then
    sends those messages again, and the next daemon writes them twice).  So a connection
    with unread bytes is ended in order: the rest of its acks, a FIN after them, then what
    its peer still sends is read and dropped until the peer closes its end too (loghog's
    client does when it reads the FIN), for at most ``grace_s`` for all of them together;
    the others are closed at once.
    """
    deadline = clock() + grace_s
    waiting = selectors.DefaultSelector()
    try:
        for connection in list(connections):
            if connection.closed:
                continue
            if connection.queued_bytes() and connection.end_writing(clock, deadline):
                waiting.register(connection.sock, READ, connection)
            else:
                connection.close(None)
        while waiting.get_map():
            left = deadline - clock()
            if left <= 0:
                break
            for key, _ in waiting.select(min(left, 0.05)):
                if not key.data.drop_input():
                    waiting.unregister(key.fileobj)
                    key.data.close(None)
        for key in list(waiting.get_map().values()):
            waiting.unregister(key.fileobj)
            key.data.close(None)
    finally:
        waiting.close()
