"""Binding the configured addresses: TCP and UDP on each plain address, TCP for TLS.

Everything that can fail at start-up happens here, before the daemon detaches, so that
the error reaches the terminal (and the init script) with a non-zero exit status.
"""

import errno
import json
import os
import socket
import ssl

from .errors import ConfigError, StartupError, describe_os_error

LISTEN_BACKLOG = 1024
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


def _datagram_socket(host, port, receive_buffer):
    sock = socket.socket(_family(host), socket.SOCK_DGRAM)
    try:
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
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


def _bind_plain(host, port, receive_buffer):
    """Bind TCP and UDP on one address and port; port 0 picks one free for both."""
    tries = _PORT_ZERO_TRIES if port == 0 else 1
    for attempt in range(tries):
        tcp = _stream_socket(host, port)
        bound_port = tcp.getsockname()[1]
        try:
            udp = _datagram_socket(host, bound_port, receive_buffer)
        except OSError as exc:
            tcp.close()
            if port == 0 and exc.errno == errno.EADDRINUSE and attempt + 1 < tries:
                continue
            raise
        return tcp, udp
    raise AssertionError('unreachable')


def make_tls_context(pemfile, cacert):
    """A server context: TLS 1.2+, modern ciphers, client certificates required."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_ciphers('ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20')
    try:
        context.load_cert_chain(pemfile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError('[server] pemfile: %s: cannot load the key and certificate: %s'
                          % (pemfile, getattr(exc, 'reason', None) or exc)) from None
    try:
        context.load_verify_locations(cafile=cacert)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError('[server] cacert: %s: cannot load the CA certificate: %s'
                          % (cacert, getattr(exc, 'reason', None) or exc)) from None
    return context


class BoundSockets:
    """The sockets bound at start-up: (kind, socket) pairs, kind 'tcp', 'udp' or 'tls'."""

    def __init__(self):
        self.sockets = []
        self.tls_context = None

    def addresses(self):
        """{'tcp': [[host, port]], 'udp': [...], 'tls': [...]} as actually bound."""
        result = {'tcp': [], 'udp': [], 'tls': []}
        for kind, sock in self.sockets:
            result[kind].append(list(sock.getsockname()[:2]))
        return result

    def close(self):
        for _, sock in self.sockets:
            sock.close()
        self.sockets = []


def bind_all(config):
    """Bind every configured address; raise StartupError (or ConfigError for TLS files)."""
    bound = BoundSockets()
    addresses = config.listen_addresses()
    if any(kind == 'tls' for kind, _, _ in addresses):
        bound.tls_context = make_tls_context(config.server.pemfile, config.server.cacert)
    try:
        for kind, host, port in addresses:
            try:
                if kind == 'plain':
                    tcp, udp = _bind_plain(host, port, config.server.udp_receive_buffer)
                    bound.sockets += [('tcp', tcp), ('udp', udp)]
                else:
                    bound.sockets.append(('tls', _stream_socket(host, port)))
            except OSError as exc:
                where = '[%s]:%s' % (host, port) if ':' in host else '%s:%s' % (host, port)
                raise StartupError(exc.errno, 'cannot listen on %s: %s'
                                   % (where, describe_os_error(exc))) from None
    except BaseException:
        bound.close()
        raise
    return bound


def write_listen_file(rundir, bound):
    """Atomically write <rundir>/listen.json with the addresses actually bound."""
    path = os.path.join(rundir, 'listen.json')
    temporary = path + '.tmp'
    with open(temporary, 'w', encoding='utf-8') as stream:
        json.dump(bound.addresses(), stream)
    os.replace(temporary, path)
    return path
