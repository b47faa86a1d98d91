"""Acknowledged delivery, daemon side: acks only when asked, after the write, with rejections."""

import signal
import socket
import uuid

from loghog.wire import (FLAG_ACK, FLAG_SESSION, HEADER, encode_message, make_frame, make_session,
                         parse_ack)
from tests.support import each_workers, frame, line_body, read_lines, wait_for_lines

pytestmark = each_workers


def ack_frame(body, app='app'):
    """A message frame asking for acks, as the loghog client sends it."""
    return encode_message(app, 'root', 1, 0, 'h', body, flags=FLAG_ACK)


class AckReader:
    def __init__(self, sock):
        self.sock = sock
        self.buffer = b''
        self.seen = []      # every ack read, also by a call that then failed

    def until(self, count, timeout=10):
        """Read acks until one covers ``count`` frames; return all acks read."""
        self.sock.settimeout(timeout)
        acks = []
        while not acks or acks[-1]['ack'] < count:
            data = self.sock.recv(65536)
            assert data, 'connection closed after acks %r' % acks
            self.buffer += data
            while len(self.buffer) >= 8:
                size, flags = HEADER.unpack_from(self.buffer)
                if len(self.buffer) < 8 + size:
                    break
                acks.append(parse_ack(flags, self.buffer[8:8 + size]))
                self.seen.append(acks[-1])
                self.buffer = self.buffer[8 + size:]
        return acks


def test_acks_cover_written_and_rejected_frames(daemon):
    sock = socket.create_connection(('127.0.0.1', daemon.tcp_port))
    sock.sendall(b''.join(ack_frame('m%d' % i) for i in range(500)) + ack_frame('x', app='nope')
                 + ack_frame('last'))
    acks = AckReader(sock).until(502)
    assert [a['ack'] for a in acks] == sorted(a['ack'] for a in acks)
    assert [r for a in acks for r in a.get('rejected', [])] == [[501, 'unknown_app']]
    # Everything acknowledged is already in the file.
    lines = read_lines(daemon.log_file('app'))
    assert [line_body(l) for l in lines] == ['m%d' % i for i in range(500)] + ['last']
    sock.close()


def test_a_client_that_does_not_ask_never_receives_a_byte(daemon):
    sock = socket.create_connection(('127.0.0.1', daemon.tcp_port))
    sock.sendall(b''.join(frame('app', 'm%d' % i) for i in range(100)) + frame('nope', 'x'))
    wait_for_lines(daemon.log_file('app'), 100)
    # The sentinel asks for acks: the first bytes the client ever receives are its ack,
    # which counts the 101 frames before it (numbered from the connection's first).
    sock.sendall(ack_frame('sentinel'))
    assert AckReader(sock).until(102) == [{'ack': 102}]
    sock.close()


def test_resent_messages_of_a_session_are_not_written_twice(daemon):
    sid = uuid.uuid4().hex
    first = socket.create_connection(('127.0.0.1', daemon.tcp_port))
    first.sendall(make_session(sid, 1) + b''.join(ack_frame('m%d' % i) for i in range(1, 11)))
    assert AckReader(first).until(11)[-1] == {'ack': 11}
    first.close()
    # Say the client lost the acks of 6..10: it resends them, then 11 and 12, on a new connection.
    second = socket.create_connection(('127.0.0.1', daemon.tcp_port))
    second.sendall(make_session(sid, 6) + b''.join(ack_frame('m%d' % i) for i in range(6, 13)))
    AckReader(second).until(8)
    bodies = [line_body(l) for l in read_lines(daemon.log_file('app'))]
    assert bodies == ['m%d' % i for i in range(1, 13)]
    # Another session's numbers are its own.
    third = socket.create_connection(('127.0.0.1', daemon.tcp_port))
    third.sendall(make_session('other', 1) + ack_frame('other 1'))
    AckReader(third).until(2)
    assert line_body(read_lines(daemon.log_file('app'))[-1]) == 'other 1'
    second.close()
    third.close()


def test_a_malformed_session_frame_is_rejected_in_the_ack(daemon):
    sock = socket.create_connection(('127.0.0.1', daemon.tcp_port))
    sock.sendall(make_frame(b'{"session": 5}', flags=FLAG_ACK | FLAG_SESSION) + ack_frame('after'))
    acks = AckReader(sock).until(2)
    assert [r for a in acks for r in a.get('rejected', [])] == [[1, 'bad_fields']]
    assert line_body(wait_for_lines(daemon.log_file('app'), 1)[0]) == 'after'
    sock.close()


def test_sigterm_acks_what_it_wrote_before_closing(daemon):
    sock = socket.create_connection(('127.0.0.1', daemon.tcp_port))
    sock.sendall(b''.join(ack_frame('m%d' % i) for i in range(2000)))
    daemon.signal(signal.SIGTERM)
    # Every ack until the daemon closes the connection: the last one must cover every
    # line it wrote (none acked without being written, none written and left unacked).
    reader = AckReader(sock)
    try:
        reader.until(2001, timeout=20)   # more than it can ack: read until it closes
    except (AssertionError, ConnectionError):
        pass
    assert daemon.proc.wait(20) == 0
    acks = reader.seen
    lines = read_lines(daemon.log_file('app'))
    assert acks, 'the daemon closed without acknowledging what it wrote'
    assert acks[-1]['ack'] == len(lines) > 0
    assert [line_body(l) for l in lines] == ['m%d' % i for i in range(len(lines))]


def test_a_stop_ends_a_busy_acked_connection_with_a_close_not_a_reset(daemon):
    """SIGTERM while an acked client keeps sending: the daemon acknowledges what it wrote,
    then ends the connection with a close (FIN) after those acks, reading and dropping what
    the client sends meanwhile until the client closes too.  It closed with the client's
    frames unread, and the kernel then sends a reset, which over a real network discards
    whatever of the last acks is still in flight (those messages are then written twice by
    the next daemon: A5-2's daemon side).  Like LoghogHandler, this client stops writing and
    closes when it reads the daemon's close."""
    import threading
    sock = socket.create_connection(('127.0.0.1', daemon.tcp_port))
    sock.sendall(make_session('S', 1))
    chunk = b''.join(ack_frame('m') for _ in range(5000))   # its receive queue never empty
    stop = threading.Event()

    def flood():
        try:
            while not stop.is_set():
                sock.sendall(chunk)
        except OSError as exc:
            flood_error.append(exc)     # a broken pipe once we shut it down: as it should
    flood_error = []
    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    reader = AckReader(sock)
    reader.until(1000)                   # the daemon reads and acknowledges
    daemon.signal(signal.SIGTERM)
    ending = None
    sock.settimeout(20)
    try:
        while sock.recv(65536):
            pass
        ending = 'close'
    except ConnectionResetError:
        ending = 'reset'
    stop.set()
    try:
        sock.shutdown(socket.SHUT_RDWR)  # as the client does on the daemon's close
    except OSError:
        pass
    flooder.join(10)
    sock.close()
    assert daemon.proc.wait(20) == 0
    if any(isinstance(exc, ConnectionResetError) for exc in flood_error):
        ending = 'reset'     # the kernel reports a reset once: to the writer, if first
    assert ending == 'close', 'the daemon reset the connection of a client still sending'
