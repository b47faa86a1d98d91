"""Connections from a client to a LogHog daemon: address choice, TCP, UDP and TLS.

This is the client's network edge.  Everything here does socket I/O and reports failure by
raising ``OSError`` (``ssl.SSLError`` and ``socket.gaierror`` are ``OSError`` too).  Both the
background sender (``loghog.sender``) and the ``loghog`` command open their connections here,
so they resolve, encrypt and detect a closed connection the same way.
"""

import encodings.idna  # noqa: F401  (see below)
import errno
import os
import random
import select
import socket
import ssl
import time

from loghog import wire

# Fork safety (issue 13): everything the sender thread uses is imported here, when the
# application imports loghog, never lazily on that thread.  socket.getaddrinfo() encodes
# its host with the 'idna' codec, whose first use imports encodings.idna (and stringprep,
# unicodedata); a pre-forking server (gunicorn --preload) that forked while the parent's
# thread was inside that import gave children in which every connect failed with
# "LookupError: unknown encoding: idna", for ever.  tests/integration/test_client_fork.py
# watches the sender thread's imports with an audit hook.
TRANSPORTS = ('tcp', 'udp', 'tls')

# A daemon on the LAN answers a SYN in well under a second; 5 s tolerates a slow WAN link while
# still noticing a black-holed address before the sender's queue fills up.
CONNECT_TIMEOUT_S = 5.0

# How long one write may wait for a daemon that stopped reading, before the connection is
# declared dead and its unsent frames go back to the queue.
SEND_TIMEOUT_S = 10.0

# How often a connect in progress checks whether it was cancelled (close() was called).
CANCEL_CHECK_INTERVAL_S = 0.1

# Acks are about 20 bytes; one read takes thousands of them.
RECEIVE_BYTES = 64 * 1024
# An ack listing 100 rejections with their reasons stays far below this; anything bigger
# is not an ack, and the connection is given up rather than buffered without limit.
MAX_ACK_BYTES = 64 * 1024


class LoghogError(Exception):
    """Base class of the client's own errors."""


class ConnectionLost(LoghogError, OSError):
    """A stream connection failed while frames were being written.

    ``frames_sent`` frames at the start of the batch were handed whole to the kernel before the
    failure; the rest (including a frame that was cut in the middle) were not delivered.
    """

    def __init__(self, frames_sent, cause):
        super().__init__(f'{cause} (after {frames_sent} frames)')
        self.frames_sent = frames_sent
        self.cause = cause


def make_ssl_context(pemfile, cacert, check_hostname=False):
    """Return a client ``ssl.SSLContext`` for mutually authenticated TLS with the daemon.

    ``cacert`` is the private LogHog CA that signed the daemon's certificate; ``pemfile`` holds
    this client's certificate and private key (one PEM file, as ``loghog-client-cert`` writes
    it).  TLS 1.2 is the oldest version accepted.

    The daemon's certificate must chain to ``cacert`` and be usable as a server certificate
    (OpenSSL refuses a certificate whose extended key usage lacks serverAuth, so a client
    certificate from the same CA cannot stand in for the daemon).  Its host name is not
    checked unless ``check_hostname`` is true: the original client did not check it, and the
    certificates made by ``loghog-server-cert`` need not name every address clients use.

    Raises ``OSError`` (``FileNotFoundError``, ``ssl.SSLError``) when a file is missing or
    unreadable or does not hold what it should.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = bool(check_hostname)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=cacert)
    context.load_cert_chain(pemfile)
    return context


def resolve(host, port, transport, rng=random):
    """Return the addresses of ``host`` for ``transport``, in random order.

    Each item is a ``getaddrinfo`` tuple ``(family, type, proto, canonname, sockaddr)``; IPv4
    and IPv6 addresses are both returned.  A random order spreads clients over several
    daemons behind one name, as the original client did.  Raises ``socket.gaierror``.
    """
    socktype = socket.SOCK_DGRAM if transport == 'udp' else socket.SOCK_STREAM
    infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socktype)
    infos = list(dict.fromkeys(infos))
    rng.shuffle(infos)
    return infos


def open_connection(host, port, transport, ssl_context=None, timeout_s=CONNECT_TIMEOUT_S,
                    is_cancelled=None, prefer=None):
    """Connect to a daemon and return a ``StreamConnection`` or ``DatagramConnection``.

    ``transport`` is ``'tcp'``, ``'udp'`` or ``'tls'`` (``'tls'`` needs ``ssl_context``).  The
    addresses of ``host`` are tried in random order until one accepts, each within
    ``timeout_s`` (TCP connect, then TLS handshake); ``prefer``, the address of the last
    connection that worked, first when the name still has it (see ``Sender``).
    ``is_cancelled()``, when given, is asked a few times a second during a TCP connect; once it
    returns True the attempt stops.  Raises the last ``OSError`` when no address accepted
    (``TimeoutError`` for a cancelled attempt).
    """
    if transport not in TRANSPORTS:
        raise ValueError(f'unknown transport {transport!r}; expected one of {TRANSPORTS}')
    last_error = OSError(f'{host} has no address')
    infos = resolve(host, port, transport)
    if prefer is not None:
        infos.sort(key=lambda info: info[4] != prefer)   # stable: the rest stay shuffled
    for family, socktype, proto, _, sockaddr in infos:
        sock = socket.socket(family, socktype, proto)
        try:
            _connect(sock, sockaddr, timeout_s, is_cancelled or _never)
            sock.settimeout(timeout_s)
            if transport == 'udp':
                return DatagramConnection(sock, sockaddr)
            if transport == 'tls':
                sock = ssl_context.wrap_socket(sock, server_hostname=host)
            return StreamConnection(sock, sockaddr)
        except OSError as error:
            sock.close()
            last_error = error
    raise last_error


def _connect(sock, sockaddr, timeout_s, is_cancelled):
    """Connect ``sock`` within ``timeout_s``, giving up early once ``is_cancelled()``.

    A plain blocking connect to a black-holed address would hold the sender thread for the
    whole timeout even after ``close()``; polling in short slices lets it stop promptly.
    """
    deadline = time.monotonic() + timeout_s
    sock.setblocking(False)
    error = sock.connect_ex(sockaddr)
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    while error in (errno.EINPROGRESS, errno.EALREADY, errno.EAGAIN):
        remaining_s = deadline - time.monotonic()
        if remaining_s <= 0 or is_cancelled():
            raise TimeoutError(errno.ETIMEDOUT, 'timed out connecting')
        if poller.poll(min(remaining_s, CANCEL_CHECK_INTERVAL_S) * 1000):
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if error:
        raise OSError(error, os.strerror(error))


def _never():
    return False


def format_address(sockaddr):
    """Return ``host:port`` for an IPv4 address, ``[host]:port`` for an IPv6 one."""
    host, port = sockaddr[0], sockaddr[1]
    return f'[{host}]:{port}' if ':' in host else f'{host}:{port}'


class StreamConnection:
    """A connected TCP or TLS socket that frames are written to, in order, and acks read from.

    The socket is non-blocking; ``send_frames`` waits for it with ``poll()`` up to the
    timeout given to ``set_timeout`` (``SEND_TIMEOUT_S`` at first).  So no call changes the
    socket's mode on the way, and reading the daemon's acks before each write costs a
    single ``recv``.  Owned by one thread at a time; not thread-safe.
    """

    def __init__(self, sock, sockaddr):
        sock.setblocking(False)
        self.sock = sock
        self.sockaddr = sockaddr
        self.peer = format_address(sockaddr)
        self.timeout_s = SEND_TIMEOUT_S
        self.acks = []                # acks received and not yet taken by the owner
        self.signs_v2 = False         # an ack said the daemon checks v2 signatures (issue 19)
        self.closed_because = None    # why the connection is over, once it is
        self._incoming = bytearray()  # the start of an ack not yet complete

    def send_frames(self, frames):
        """Write ``frames`` (a list of encoded frames) on the stream, in order.

        Returns when all were handed to the kernel.  Raises ``ConnectionLost`` carrying how many
        frames at the start of the list were written whole, when the connection fails or the
        daemon takes nothing for longer than the timeout (see ``set_timeout``).
        """
        data = memoryview(b''.join(frames))
        written = 0
        deadline = None
        try:
            while written < len(data):
                try:
                    written += self.sock.send(data[written:])
                    deadline = None
                except (BlockingIOError, ssl.SSLWantWriteError):
                    deadline = deadline or time.monotonic() + self.timeout_s
                    self._wait_for(select.POLLOUT, deadline)
                except ssl.SSLWantReadError:  # TLS wants to read first (key update)
                    deadline = deadline or time.monotonic() + self.timeout_s
                    self._wait_for(select.POLLIN, deadline)
        except OSError as error:
            raise ConnectionLost(_whole_frames(frames, written), error) from error
        return len(frames)

    def _wait_for(self, events, deadline):
        remaining_s = deadline - time.monotonic()
        poller = select.poll()
        poller.register(self.sock, events)
        if remaining_s <= 0 or not poller.poll(remaining_s * 1000):
            raise TimeoutError(errno.ETIMEDOUT, 'timed out: the daemon does not read')

    def is_closed_by_peer(self):
        """Return True when the daemon has closed or reset the connection (or broke the
        protocol).  Never blocks.

        Checked before writing, so that frames are not written into a connection the daemon
        already left (they would be lost without an error: the first write after the daemon's
        FIN succeeds).  Acks that the daemon sent are read and kept in ``acks``.
        """
        return self.receive(0)

    def receive(self, timeout_s, wakeup_fd=None):
        """Read what the daemon sent; return True once it has closed the connection.

        Waits up to ``timeout_s`` (0: not at all; None: no limit) for the socket, or
        ``wakeup_fd`` when given, to become readable, then reads what is there.  Every
        complete ack is appended to ``acks`` (dicts, see ``wire.parse_ack``) for the caller
        to take.  After a close, a reset or bytes that are not an ack, ``closed_because``
        says why and every later call returns True at once.  Never raises ``OSError``.
        """
        if self.closed_because is not None:
            return True
        if timeout_s != 0 and not self._has_buffered_bytes():
            poller = select.poll()
            poller.register(self.sock, select.POLLIN)
            if wakeup_fd is not None:
                poller.register(wakeup_fd, select.POLLIN)
            ready = poller.poll(None if timeout_s is None else max(0, timeout_s) * 1000)
            if not any(fd == self.sock.fileno() for fd, _ in ready):
                return False
        self._read_available()
        return self.closed_because is not None

    def take_acks(self):
        """Return the acks received so far (oldest first) and forget them."""
        acks, self.acks = self.acks, []
        return acks

    def _has_buffered_bytes(self):
        """TLS may hold decrypted bytes that poll() cannot see."""
        return isinstance(self.sock, ssl.SSLSocket) and self.sock.pending() > 0

    def _read_available(self):
        while True:
            try:
                data = self.sock.recv(RECEIVE_BYTES)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError,
                    ssl.SSLWantWriteError):
                return  # nothing more for now (or TLS records without data: tickets)
            except OSError as error:
                self.closed_because = _describe_error(error)
                return
            if not data:
                self.closed_because = 'closed by the daemon'
                return
            self._incoming += data
            try:
                self._split_acks()
            except ValueError as error:
                self.closed_because = f'not an acknowledgement: {error}'
                return
            if len(data) < RECEIVE_BYTES and not self._has_buffered_bytes():
                return  # all there was: spare the recv() that would say so

    def _split_acks(self):
        buffer = self._incoming
        offset = 0
        while len(buffer) - offset >= wire.HEADER_SIZE:
            size, flags = wire.HEADER.unpack_from(buffer, offset)
            if size > MAX_ACK_BYTES:
                raise ValueError(f'a frame of {size} bytes')
            end = offset + wire.HEADER_SIZE + size
            if len(buffer) < end:
                break
            self.acks.append(wire.parse_ack(flags, bytes(buffer[offset + wire.HEADER_SIZE:end])))
            if flags & wire.FLAG_SIGNED_V2:
                self.signs_v2 = True
            offset = end
        del buffer[:offset]

    def set_timeout(self, timeout_s):
        """Bound how long a later ``send_frames`` may wait for the daemon to read."""
        self.timeout_s = timeout_s

    def close(self):
        """Close the socket, without waiting and without raising."""
        try:
            self.sock.close()
        except OSError:
            pass

    def finish(self, timeout_s):
        """End the connection cleanly and wait up to ``timeout_s`` for the daemon to close.

        Raises ``OSError`` when the daemon resets the connection (it did not take all the data)
        or the TLS shutdown fails; returns normally on a clean close or when the wait times out.
        Used by the ``loghog`` command, which exits right after.
        """
        self.sock.settimeout(timeout_s)
        try:
            if isinstance(self.sock, ssl.SSLSocket):
                self.sock = self.sock.unwrap()
            self.sock.shutdown(socket.SHUT_WR)
            while self.sock.recv(4096):
                pass
        except (TimeoutError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
            pass
        finally:
            self.close()


class DatagramConnection:
    """A connected UDP socket: one frame per datagram, delivery never confirmed."""

    def __init__(self, sock, sockaddr):
        self.sock = sock
        self.sockaddr = sockaddr
        self.peer = format_address(sockaddr)
        self.lost = 0

    def send_frames(self, frames):
        """Send each frame as one datagram; return ``len(frames)``.

        A datagram the kernel refuses (too big, or an ICMP error from an earlier one reported
        now) is lost and counted in ``lost``; UDP offers nothing better, and it never raises.
        """
        for frame in frames:
            try:
                self.sock.send(frame)
            except OSError:
                self.lost += 1
        return len(frames)

    def is_closed_by_peer(self):
        """Always False: UDP has no connection to lose."""
        return False

    def take_acks(self):
        """Always empty: nothing is acknowledged over UDP."""
        return []

    def set_timeout(self, timeout_s):
        """Bound how long a datagram write may block."""
        self.sock.settimeout(timeout_s)

    def close(self):
        """Close the socket, without raising."""
        try:
            self.sock.close()
        except OSError:
            pass

    def finish(self, timeout_s):
        """Close the socket: there is nothing to wait for over UDP."""
        self.close()


def _describe_error(error):
    return getattr(error, 'strerror', None) or str(error) or type(error).__name__


def _whole_frames(frames, written_bytes):
    """Return how many frames at the start of ``frames`` fit entirely in ``written_bytes``."""
    count = 0
    for frame in frames:
        if written_bytes < len(frame):
            break
        written_bytes -= len(frame)
        count += 1
    return count
