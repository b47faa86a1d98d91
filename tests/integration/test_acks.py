"""Acknowledged delivery, daemon side: acks only when asked, after the write, with rejections."""

import os
import signal
import socket
import uuid

from loghog.wire import FLAG_ACK, HEADER, encode_message, parse_ack
from tests.support import frame, line_body, read_lines, wait_for_lines


def ack_frame(body, app='app', sid=None, seq=None):
    """A frame asking for acks; with sid/seq, as the loghog client sends them."""
    data = encode_message(app, 'root', 1, 0, 'h', body, flags=FLAG_ACK)
    if sid is None:
        return data
    payload = data[8:-1] + (', "sid": "%s", "seq": %d}' % (sid, seq)).encode()
    return HEADER.pack(len(payload), FLAG_ACK) + payload


class AckReader:
    def __init__(self, sock):
        self.sock = sock
        self.buffer = b''

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
    sock.settimeout(0.3)
    try:
        data = sock.recv(100)
    except socket.timeout:
        data = None
    assert data is None
    sock.close()


def test_resent_messages_of_a_session_are_not_written_twice(daemon):
    sid = uuid.uuid4().hex
    first = socket.create_connection(('127.0.0.1', daemon.tcp_port))
    first.sendall(b''.join(ack_frame('m%d' % i, sid=sid, seq=i) for i in range(1, 11)))
    AckReader(first).until(10)
    first.close()
    # The client lost the ack of 6..10 (say) and resends them with 11..12 on a new connection.
    second = socket.create_connection(('127.0.0.1', daemon.tcp_port))
    second.sendall(b''.join(ack_frame('m%d' % i, sid=sid, seq=i) for i in range(6, 13)))
    AckReader(second).until(7)
    bodies = [line_body(l) for l in read_lines(daemon.log_file('app'))]
    assert bodies == ['m%d' % i for i in range(1, 13)]
    second.close()
    daemon.stop()


def test_sigterm_acks_what_it_wrote_before_closing(daemon):
    sock = socket.create_connection(('127.0.0.1', daemon.tcp_port))
    sock.sendall(b''.join(ack_frame('m%d' % i) for i in range(2000)))
    daemon.signal(signal.SIGTERM)
    reader = AckReader(sock)
    acked = 0
    try:
        acked = reader.until(2000)[-1]['ack']
    except AssertionError:
        pass  # closed before everything was acked: what was acked must be on disk
    assert daemon.proc.wait(20) == 0
    lines = read_lines(daemon.log_file('app'))
    assert len(lines) >= acked
    assert [line_body(l) for l in lines] == ['m%d' % i for i in range(len(lines))]
