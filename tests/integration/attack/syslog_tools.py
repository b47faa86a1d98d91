"""Helpers for the syslog attack tests: a daemon with syslog listeners, senders, and floods
in a child process (its own interpreter, so that it never holds the test's GIL)."""

import multiprocessing
import socket
import time

from tests.support import Daemon, frame

FACILITIES = """
[plain]
rotate = daily
backup_count = 3
syslog_programs = pl

[signed]
rotate = daily
backup_count = 3
secret = s3cret
syslog_programs = sig

[fph]
rotate = daily
backup_count = 3
file_per_host = yes
syslog_programs = fh

[js]
rotate = daily
backup_count = 3
format = json
syslog_programs = js

[app]
rotate = daily
backup_count = 3

[flood]
rotate = daily
backup_count = 3
syslog_programs = fl
"""


def start(tmp_path, facilities=FACILITIES, server=None, level='INFO', **syslog):
    """A loghogd with syslog over TCP and UDP on 127.0.0.1 (ports chosen at run time) and
    otherwise default settings (``server``: [server] keys)."""
    options = {'listen_tcp': '127.0.0.1:0', 'listen_udp': '127.0.0.1:0'}
    options.update(syslog)
    return Daemon(tmp_path, facilities, server, sections={'syslog': options,
                                                          'log': {'level': level}}).start()


def send_tcp(daemon, data, kind='syslog_tcp'):
    with socket.create_connection(('127.0.0.1', daemon.port(kind)), timeout=10) as sock:
        sock.sendall(data)


def send_udp(daemon, data):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(data, ('127.0.0.1', daemon.port('syslog_udp')))


def unread_bytes(local_port, remote_port):
    """Bytes the kernel holds unread on the daemon's side of a loopback TCP connection
    (its rx_queue in /proc/net/tcp), or None when the connection is not listed."""
    wanted = ('0100007F:%04X' % local_port, '0100007F:%04X' % remote_port)
    with open('/proc/net/tcp') as stream:
        for line in stream.readlines()[1:]:
            fields = line.split()
            if (fields[1], fields[2]) == wanted:
                return int(fields[4].split(':')[1], 16)
    return None


def octet(message):
    return b'%d %s' % (len(message), message)


def expensive_message(size=60000, program=b'fl'):
    """An RFC 5424 message of ``size`` bytes that is all structured data: ``[x]`` elements
    (each costs the parser a Python-level loop turn per byte)."""
    head = b'<14>1 - - %s - - ' % program
    return head + b'[x]' * ((size - len(head) - 3) // 3) + b' sd'


def _flood(kind, port, stop_at):
    if kind.startswith('udp'):
        data = {'udp_sd': expensive_message(),
                'udp_sd_unclaimed': expensive_message(program=b'nobody'),
                'udp_big': b'<14>1 - - fl - - - ' + b'x' * 60000,
                'udp_small': b'<14>1 - - fl - - - flood message',
                'udp_own_big': frame('flood', 'x' * 60000)}[kind]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            while time.time() < stop_at:
                try:
                    sock.sendto(data, ('127.0.0.1', port))
                except OSError:
                    time.sleep(0.001)
        return
    if kind.startswith('tcp_newlines'):
        # NUL-framed first, then frames of line breaks only (each a scan of the buffer)
        blob = (b'\n' * 60000 + b'\x00') * 4
        count = int(kind[len('tcp_newlines'):] or 8)
        socks = [socket.create_connection(('127.0.0.1', port)) for _ in range(count)]
        for sock in socks:
            sock.sendall(b'<14>fl: nul framed\x00')
        return _pump(socks, blob, stop_at)
    if kind == 'tcp_valid':
        blob = b''.join(octet(b'<14>1 - - fl - - - flood message %d' % n) for n in range(2000))
    else:
        blob = octet(expensive_message()) * 4
    socks = [socket.create_connection(('127.0.0.1', port)) for _ in range(8)]
    return _pump(socks, blob, stop_at)


def _pump(socks, blob, stop_at):
    """Send ``blob`` over and over on every one of ``socks`` until ``stop_at``."""
    import selectors
    selector = selectors.DefaultSelector()
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_WRITE, [0])
    while time.time() < stop_at:
        for key, _ in selector.select(0.1):
            offset = key.data
            try:
                offset[0] = (offset[0] + key.fileobj.send(blob[offset[0]:])) % len(blob)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                selector.unregister(key.fileobj)
    for sock in socks:
        sock.close()


def start_flood(kind, port, seconds):
    """Flood ``port`` for ``seconds`` from a child process. UDP, one socket as fast as it
    sends: 'udp_sd' (60 KB datagrams of structured data for [flood]), 'udp_sd_unclaimed'
    (the same for a program nobody claims: refused, nothing written), 'udp_big' (60 KB
    plain messages), 'udp_small', 'udp_own_big' (60 KB frames of our own protocol, for
    the daemon's UDP port). TCP, 8 connections: 'tcp_valid' (small octet-counted
    messages), 'tcp_sd' (60 KB structured-data messages), 'tcp_newlines[N]' (N
    connections, default 8: a NUL-ended message, then NUL-ended frames of line breaks)."""
    context = multiprocessing.get_context('spawn')
    child = context.Process(target=_flood, args=(kind, port, time.time() + seconds), daemon=True)
    child.start()
    return child
