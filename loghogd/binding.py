"""Binding the configured addresses: TCP and UDP on each plain address, TCP for TLS.

Everything that can fail at start-up happens here, before the daemon detaches, so that
the error reaches the terminal (and the init script) with a non-zero exit status.
"""

import errno
import json
import os
import resource
import socket
import ssl

from .errors import ConfigError, StartupError, describe_os_error
from .files import format_address, write_atomically

LISTEN_BACKLOG = 1024
# Descriptors needed beside the connections and the log files: listeners, the daemon's
# own log, the wakeup socketpair, the compressor's pipes and temporary files.
RESERVED_DESCRIPTORS = 256
# TLS 1.2 suites with forward secrecy and AEAD only (TLS 1.3's suites are all fine and
# are configured apart by OpenSSL).
TLS_CIPHERS = 'ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20'
# Rounds of the in-memory handshake that checks the server certificate at start-up.
_CHECK_ROUNDS = 10
# Binding port 0 on TCP then asking UDP for the same number can collide with another
# program's UDP socket: try a few times.
_PORT_ZERO_TRIES = 20


def _family(host):
    return socket.AF_INET6 if ':' in host else socket.AF_INET


def _stream_socket(host, port):
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _datagram_socket(host, port, receive_buffer, reuse_port=False):
    sock = socket.socket(_family(host), socket.SOCK_DGRAM)
    try:
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        _set_receive_buffer(sock, receive_buffer)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _set_receive_buffer(sock, size):
    """Ask for ``size`` bytes of UDP receive buffer; as root, beyond net.core.rmem_max."""
    force = getattr(socket, 'SO_RCVBUFFORCE', None)
    if force is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
            return
        except PermissionError:
            pass
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def _check_receive_buffer(sock, size):
    """A warning when the kernel gave ``sock`` less receive buffer than ``size`` asked."""
    # Linux reports twice what was set (the other half is its bookkeeping), capped by
    # net.core.rmem_max unless SO_RCVBUFFORCE (root) was allowed.
    got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    if got >= size:
        return None
    host, port = sock.getsockname()[:2]
    return ('UDP %s: the kernel gave a receive buffer of %d bytes, not the %d of '
            '[server] udp_receive_buffer (raise net.core.rmem_max, or start loghogd as root); '
            'bursts beyond it are dropped by the kernel' % (format_address(host, port), got, size))


def udp_sockets_per_address(workers):
    """How many UDP sockets each plain address gets: one per receiver when there are
    receivers ([server] workers > 1) and the system has SO_REUSEPORT, else one."""
    if workers > 1 and hasattr(socket, 'SO_REUSEPORT'):
        return workers
    return 1


def _bind_plain(host, port, receive_buffer, udp_count=1):
    """Bind TCP and ``udp_count`` UDP sockets on one address and port; port 0 picks one
    free for all.  Returns (tcp, [udp, ...]).

    With ``udp_count`` > 1 every UDP socket has SO_REUSEPORT, one per receiver (issue
    18): the kernel hashes a sender's addresses and ports to one socket of the group, so
    each sender's datagrams are read by one receiver, in order (one socket shared by two
    receivers wrote one sender's datagrams out of order: 593 of 2000 in make bench's
    udp-paced-10k).  The group is fixed once bound: the main process keeps every socket
    open, so a sender's socket does not change when its receiver dies, and what the
    kernel queued for that receiver waits for the next one.
    """
    tries = _PORT_ZERO_TRIES if port == 0 else 1
    for attempt in range(tries):
        tcp = _stream_socket(host, port)
        bound_port = tcp.getsockname()[1]
        udp = []
        try:
            for _ in range(udp_count):
                udp.append(_datagram_socket(host, bound_port, receive_buffer,
                                            reuse_port=udp_count > 1))
        except OSError as exc:
            tcp.close()
            for sock in udp:
                sock.close()
            if port == 0 and exc.errno == errno.EADDRINUSE and attempt + 1 < tries:
                continue
            raise
        return tcp, udp
    raise AssertionError('unreachable')


def make_tls_context(pemfile, cacert):
    """A server context: TLS 1.2+, modern ciphers, client certificates required.

    Raises ConfigError with a sentence a sysadmin can act on when ``pemfile`` (key and
    certificate in one PEM file) or ``cacert`` cannot be read or loaded, when the key is
    protected by a passphrase, when the key does not belong to the certificate, or when
    the server's certificate would not be accepted by clients that trust ``cacert``.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    # No TLS compression (CRIME); the server picks the suite; no client-initiated
    # renegotiation (a cheap way to make the server do expensive work).
    context.options |= (ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
                        | getattr(ssl, 'OP_NO_RENEGOTIATION', 0))
    context.set_ciphers(TLS_CIPHERS)
    try:
        # Without a callback OpenSSL would ask for a passphrase on the terminal.
        context.load_cert_chain(pemfile, password=_refuse_passphrase)
    except _PassphraseNeeded:
        raise ConfigError('[server] pemfile: %s: the private key is encrypted with a passphrase; '
                          'loghogd needs it unencrypted (openssl pkey -in FILE -out NEW.pem)'
                          % pemfile) from None
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError('[server] pemfile: %s: cannot load the key and certificate: %s'
                          % (pemfile, _describe_pem_error(pemfile, exc))) from None
    try:
        context.load_verify_locations(cafile=cacert)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError('[server] cacert: %s: cannot load the CA certificate: %s'
                          % (cacert, _describe_ca_error(exc))) from None
    problem = check_server_certificate(context, cacert)
    if problem:
        raise ConfigError('[server] pemfile: %s: clients that trust cacert %s would refuse this '
                          'certificate: %s' % (pemfile, cacert, problem))
    return context


class _PassphraseNeeded(Exception):
    pass


def _refuse_passphrase():
    raise _PassphraseNeeded()


def _describe_pem_error(path, exc):
    if not isinstance(exc, ssl.SSLError):
        return describe_os_error(exc).replace('%s: ' % path, '', 1)
    if exc.reason == 'KEY_VALUES_MISMATCH':
        return 'the private key does not belong to the certificate'
    try:
        with open(path, 'rb') as stream:
            text = stream.read(1024 * 1024)
    except OSError:
        text = b''
    if b'PRIVATE KEY-----' not in text:
        return 'it holds no PEM private key (it must hold the key and the certificate)'
    if b'-----BEGIN CERTIFICATE-----' not in text:
        return 'it holds no PEM certificate (it must hold the key and the certificate)'
    return exc.reason or str(exc)


def _describe_ca_error(exc):
    if not isinstance(exc, ssl.SSLError):
        return describe_os_error(exc)
    if exc.reason == 'NO_CERTIFICATE_OR_CRL_FOUND':
        return 'it holds no PEM certificate'
    return exc.reason or str(exc)


def check_server_certificate(server_context, cacert):
    """Return None if a client trusting ``cacert`` accepts the server's certificate, else why.

    Runs a handshake in memory between ``server_context`` and a client context that
    trusts only ``cacert`` (as loghog clients do), without a client certificate: the
    client checks the server's certificate (chain, dates, serverAuth usage) before the
    server gets to refuse the missing client certificate.
    """
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.check_hostname = False
    client_context.load_verify_locations(cafile=cacert)
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    from_server, from_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context.wrap_bio(to_client, from_client, server_hostname=None)
    server = server_context.wrap_bio(to_server, from_server, server_side=True)
    for _ in range(_CHECK_ROUNDS):
        try:
            client.do_handshake()
            return None
        except ssl.SSLCertVerificationError as exc:
            return exc.verify_message or exc.reason or str(exc)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError:
            return None  # the server ended it (no client certificate): its own was accepted
        to_server.write(from_client.read())
        try:
            server.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLError):
            pass
        to_client.write(from_server.read())
    return None


def raise_descriptor_limit(max_connections, max_open_files=0):
    """Raise the soft RLIMIT_NOFILE (up to the hard limit) so that ``max_connections``
    and ``max_open_files`` fit (each open log file may have a duplicate descriptor on the
    syncer thread for a moment: two each).

    Returns a warning (str) when even the hard limit is too low, else None.
    """
    needed = max_connections + 2 * max_open_files + RESERVED_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        if target > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            except (OSError, ValueError):
                target = soft
        if target < needed:
            return ('max_connections %d and max_open_files %d need about %d file descriptors, '
                    'but the limit is %d: beyond that, accepting pauses and log files fail to '
                    'open (raise "ulimit -n" / LimitNOFILE)'
                    % (max_connections, max_open_files, needed, target))
    return None


class BoundSockets:
    """The sockets bound at start-up: (kind, socket) pairs, kind 'tcp', 'udp' or 'tls'.

    With receivers, each plain address has one UDP socket per receiver, bound to the same
    address and port with SO_REUSEPORT, in receiver order (``udp_groups``).
    """

    def __init__(self):
        self.sockets = []
        self.tls_context = None
        self.warnings = []   # for the daemon's log, once it is set up

    def addresses(self):
        """{'tcp': [[host, port]], 'udp': [...], 'tls': [...]} as actually bound, each
        address once (the UDP sockets of one address share it)."""
        result = {'tcp': [], 'udp': [], 'tls': []}
        for kind, sock in self.sockets:
            name = sock.getsockname()
            if isinstance(name, tuple):   # not the [syslog] unix socket, a path
                address = list(name[:2])
                if address not in result.setdefault(kind, []):
                    result[kind].append(address)
        return result

    def udp_groups(self):
        """[[socket, ...]]: the UDP sockets of each address, in the order bound (one per
        receiver when there are receivers)."""
        groups = {}
        for kind, sock in self.sockets:
            if kind == 'udp' and sock.fileno() >= 0:   # not closed (at shutdown)
                groups.setdefault(sock.getsockname(), []).append(sock)
        return list(groups.values())

    def close(self):
        for _, sock in self.sockets:
            sock.close()
        self.sockets = []


def bind_all(config):
    """Bind every configured address; raise StartupError (or ConfigError for TLS files)."""
    bound = BoundSockets()
    warning = raise_descriptor_limit(config.server.max_connections,
                                     config.server.max_open_files)
    if warning:
        bound.warnings.append(warning)
    addresses = config.listen_addresses()
    if any(kind == 'tls' for kind, _, _ in addresses):
        bound.tls_context = make_tls_context(config.server.pemfile, config.server.cacert)
    udp_count = udp_sockets_per_address(config.server.workers)
    try:
        for kind, host, port in addresses:
            try:
                if kind == 'plain':
                    tcp, udp = _bind_plain(host, port, config.server.udp_receive_buffer,
                                           udp_count)
                    bound.sockets += [('tcp', tcp)] + [('udp', sock) for sock in udp]
                    # Each asked the same: the first tells for all.
                    warning = _check_receive_buffer(udp[0], config.server.udp_receive_buffer)
                    if warning:
                        bound.warnings.append(warning)
                else:
                    bound.sockets.append(('tls', _stream_socket(host, port)))
            except OSError as exc:
                raise StartupError(exc.errno, 'cannot listen on %s: %s'
                                   % (format_address(host, port), describe_os_error(exc))) from None
        from .syslog_listeners import bind_syslog   # here: it imports the server
        bind_syslog(config, bound)
    except BaseException:
        bound.close()
        raise
    return bound


def write_listen_file(rundir, bound):
    """Atomically write <rundir>/listen.json with the addresses actually bound."""
    path = os.path.join(rundir, 'listen.json')
    write_atomically(path, json.dumps(bound.addresses()).encode('utf-8'), 0o640)
    return path
