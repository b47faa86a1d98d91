"""Connections from a client to a LogHog daemon: address choice, TCP, UDP and TLS.

This is the client's network edge.  Everything here does socket I/O and reports failure by
raising ``OSError`` (``ssl.SSLError`` and ``socket.gaierror`` are ``OSError`` too).  Both the
background sender (``loghog.sender``) and the ``loghog`` command open their connections here,
so they resolve, encrypt and detect a closed connection the same way.
"""

import errno
import os
import random
import select
import socket
import ssl
import time

TRANSPORTS = ('tcp', 'udp', 'tls')

# A daemon on the LAN answers a SYN in well under a second; 5 s tolerates a slow WAN link while
# still noticing a black-holed address before the sender's queue fills up.
CONNECT_TIMEOUT_S = 5.0

# How long one write may wait for a daemon that stopped reading, before the connection is
# declared dead and its unsent frames go back to the queue.
SEND_TIMEOUT_S = 10.0

# How often a connect in progress checks whether it was cancelled (close() was called).
CANCEL_CHECK_INTERVAL_S = 0.1


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
                    is_cancelled=None):
    """Connect to a daemon and return a ``StreamConnection`` or ``DatagramConnection``.

    ``transport`` is ``'tcp'``, ``'udp'`` or ``'tls'`` (``'tls'`` needs ``ssl_context``).  The
    addresses of ``host`` are tried in random order until one accepts, each within
    ``timeout_s`` (TCP connect, then TLS handshake).  ``is_cancelled()``, when given, is asked
    a few times a second during a TCP connect; once it returns True the attempt stops.  Raises
    the last ``OSError`` when no address accepted (``TimeoutError`` for a cancelled attempt).
    """
    if transport not in TRANSPORTS:
        raise ValueError(f'unknown transport {transport!r}; expected one of {TRANSPORTS}')
    last_error = OSError(f'{host} has no address')
    for family, socktype, proto, _, sockaddr in resolve(host, port, transport):
        sock = socket.socket(family, socktype, proto)
        try:
            _connect(sock, sockaddr, timeout_s, is_cancelled or _never)
            sock.settimeout(timeout_s)
            if transport == 'udp':
                return DatagramConnection(sock, sockaddr)
            if transport == 'tls':
                sock = ssl_context.wrap_socket(sock, server_hostname=host)
            sock.settimeout(SEND_TIMEOUT_S)
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
    """A connected TCP or TLS socket that frames are written to, in order.

    Owned by one thread at a time; not thread-safe.
    """

    def __init__(self, sock, sockaddr):
        self.sock = sock
        self.peer = format_address(sockaddr)

    def send_frames(self, frames):
        """Write ``frames`` (a list of encoded frames) on the stream, in order.

        Returns when all were handed to the kernel.  Raises ``ConnectionLost`` carrying how many
        frames at the start of the list were written whole, when the connection fails or a
        write waits longer than the socket's timeout.
        """
        data = memoryview(b''.join(frames))
        written = 0
        try:
            while written < len(data):
                written += self.sock.send(data[written:])
        except OSError as error:
            raise ConnectionLost(_whole_frames(frames, written), error) from error
        return len(frames)

    def is_closed_by_peer(self):
        """Return True when the daemon has closed or reset the connection.

        Checked before writing, so that frames are not written into a connection the daemon
        already left (they would be lost without an error: the first write after the daemon's
        FIN succeeds).  Bytes the daemon sent are read and discarded; protocol version 1
        defines none.  Never blocks.
        """
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        if not poller.poll(0):
            return False
        timeout_s = self.sock.gettimeout()
        self.sock.settimeout(0)
        try:
            return self.sock.recv(4096) == b''
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False  # only TLS records without application data (session tickets)
        except OSError:
            return True
        finally:
            self._restore_timeout(timeout_s)

    def set_timeout(self, timeout_s):
        """Bound how long a later ``send_frames`` may wait for the daemon to read."""
        self.sock.settimeout(timeout_s)

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

    def _restore_timeout(self, timeout_s):
        try:
            self.sock.settimeout(timeout_s)
        except OSError:
            pass  # the socket was closed under us; the next write reports it


class DatagramConnection:
    """A connected UDP socket: one frame per datagram, delivery never confirmed."""

    def __init__(self, sock, sockaddr):
        self.sock = sock
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


def _whole_frames(frames, written_bytes):
    """Return how many frames at the start of ``frames`` fit entirely in ``written_bytes``."""
    count = 0
    for frame in frames:
        if written_bytes < len(frame):
            break
        written_bytes -= len(frame)
        count += 1
    return count
