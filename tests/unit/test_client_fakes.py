"""Small in-test LogHog servers for the client's unit tests, and tests of those fakes.

A ``FrameServer`` listens on loopback (TCP, or TLS with an ``ssl_context``), decodes every frame
it receives with ``loghog.wire.HEADER`` and keeps the messages; it acknowledges frames that ask
for it as loghogd does (``{"ack": N}`` after each read: the first N frames of the connection,
session frames included), unless made with ``answers_acks=False`` (an older daemon); setting
``ack_limit`` caps N (frames received but never acknowledged, as when a daemon dies before
its write).  Session frames are kept apart, in ``sessions``.  A ``DatagramServer`` does the same over UDP.  They are deliberately simple (a thread per connection) and strict: a frame that
does not decode is recorded in ``errors`` so that a test can assert there were none.
"""

import json
import socket
import threading
import time
import zlib

import pytest

from loghog import wire


def decode_frames(buffer):
    """Split ``buffer`` (bytes) into complete frames; return (list of (flags, message), rest)."""
    messages = []
    while len(buffer) >= wire.HEADER_SIZE:
        size, flags = wire.HEADER.unpack_from(buffer)
        if len(buffer) < wire.HEADER_SIZE + size:
            break
        payload = buffer[wire.HEADER_SIZE:wire.HEADER_SIZE + size]
        buffer = buffer[wire.HEADER_SIZE + size:]
        if flags & wire.FLAG_ZLIB:
            payload = zlib.decompress(payload)
        messages.append((flags, json.loads(payload)))
    return messages, buffer


class _Collector:
    """What the fake servers have in common: received messages and waiting on them."""

    def __init__(self):
        self.messages = []
        self.flags = []
        self.sessions = []
        self.errors = []
        self._changed = threading.Condition()

    def record(self, decoded):
        with self._changed:
            for flags, message in decoded:
                if flags & wire.FLAG_SESSION:
                    self.sessions.append(message)
                    continue
                self.flags.append(flags)
                self.messages.append(message)
            self._changed.notify_all()

    def wait_for(self, count, timeout_s=5.0):
        """Wait until at least ``count`` messages arrived; return them (fails on timeout)."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.messages) >= count, timeout_s):
                raise AssertionError(f'{len(self.messages)} messages arrived, expected {count}')
            return list(self.messages)

    def bodies(self):
        with self._changed:
            return [message['body'] for message in self.messages]


class FrameServer(_Collector):
    """A TCP (or TLS) server on ``host`` (127.0.0.1 or ::1), port 0 unless ``port`` is given,
    or listening on the ``reserved`` socket (see ``reserve_port``)."""

    def __init__(self, host='127.0.0.1', port=0, ssl_context=None, reserved=None,
                 answers_acks=True):
        super().__init__()
        self.answers_acks = answers_acks
        self.ack_limit = None
        if reserved is None:
            family = socket.AF_INET6 if ':' in host else socket.AF_INET
            reserved = socket.socket(family, socket.SOCK_STREAM)
            reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            reserved.bind((host, port))
        self.listener = reserved
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.ssl_context = ssl_context
        self.connections = []
        self.accepted = 0
        self.is_stopping = False
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self):
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return  # stopped
            self.connections.append(sock)
            # Counted before the reader starts: a client that gets its acks may already be
            # done, and its test checking ``accepted``, before this thread runs again.
            self.accepted += 1
            thread = threading.Thread(target=self._read, args=(sock,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _read(self, sock):
        buffer = b''
        received = 0
        acknowledged = False
        try:
            if self.ssl_context is not None:
                sock = self.ssl_context.wrap_socket(sock, server_side=True)
                self.connections.append(sock)
            while True:
                data = sock.recv(65536)
                if not data:
                    sock.close()  # like loghogd: the client's end of stream ends the connection
                    break
                decoded, buffer = decode_frames(buffer + data)
                self.record(decoded)
                received += len(decoded)
                acknowledged = acknowledged or any(f & wire.FLAG_ACK for f, _ in decoded)
                count = received if self.ack_limit is None else min(received, self.ack_limit)
                if decoded and acknowledged and self.answers_acks:
                    sock.sendall(wire.make_ack(count))
        except OSError as error:
            if not self.is_stopping:
                self.errors.append(error)
        except ValueError as error:  # JSON or zlib
            self.errors.append(error)

    def wait_until_clients_closed(self, count, timeout_s=5.0):
        """Wait until ``count`` connections were accepted and every one was closed by its
        client, so that everything sent on them has been read."""
        deadline = time.monotonic() + timeout_s
        wait_until(lambda: self.accepted >= count, timeout_s)
        for thread in self._threads[1:]:
            thread.join(max(0, deadline - time.monotonic()))
            if thread.is_alive():
                raise AssertionError('a client connection is still open')

    def stop(self):
        """Close the listener and every connection (the client sees the close), join threads."""
        self.is_stopping = True
        _close_for_good(self.listener)
        for sock in list(self.connections):
            _close_for_good(sock)
        for thread in self._threads:
            thread.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()


class DatagramServer(_Collector):
    """A UDP server on ``host``, port 0: one frame per datagram."""

    def __init__(self, host='127.0.0.1'):
        super().__init__()
        family = socket.AF_INET6 if ':' in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.port = self.sock.getsockname()[1]
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self):
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if data == b'stop':
                return
            decoded, rest = decode_frames(data)
            if rest or len(decoded) != 1:
                self.errors.append(data)
            self.record(decoded)

    def stop(self):
        with socket.socket(self.sock.family, socket.SOCK_DGRAM) as poke:
            poke.sendto(b'stop', self.sock.getsockname())
        self._thread.join(5)
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()


def _close_for_good(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def reserve_port(host='127.0.0.1'):
    """Return a TCP socket bound to a loopback port but not listening.

    Until it listens (``FrameServer(reserved=...)``) or is closed, connections to its port are
    refused, and no other process can take the port.
    """
    family = socket.AF_INET6 if ':' in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


def wait_until(predicate, timeout_s=5.0):
    """Poll ``predicate`` until it is true; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out waiting for {predicate}')
        time.sleep(0.01)


# -- the fakes themselves must be right, or every test built on them proves nothing ---------

def test_frame_server_decodes_frames_split_across_reads():
    frames = [wire.encode_message('app', 'm', 1, 2, 'h', f'line {n}') for n in range(3)]
    stream = b''.join(frames)
    with FrameServer() as server, socket.create_connection(('127.0.0.1', server.port)) as sock:
        for offset in range(0, len(stream), 7):
            sock.sendall(stream[offset:offset + 7])
        assert [m['body'] for m in server.wait_for(3)] == ['line 0', 'line 1', 'line 2']
    assert server.errors == []


def test_decode_frames_keeps_an_incomplete_tail():
    frame = wire.encode_message('app', 'm', 1, 2, 'h', 'body', compress=True)
    decoded, rest = decode_frames(frame + frame[:5])
    assert [(flags, message['body']) for flags, message in decoded] == [(wire.FLAG_ZLIB, 'body')]
    assert rest == frame[:5]


@pytest.mark.parametrize('host', ['127.0.0.1', '::1'])
def test_datagram_server_receives_one_frame_per_datagram(host):
    with DatagramServer(host) as server, \
            socket.socket(server.sock.family, socket.SOCK_DGRAM) as sock:
        sock.sendto(wire.encode_message('app', 'm', 1, 2, 'h', 'hi'), (host, server.port))
        assert server.wait_for(1)[0]['body'] == 'hi'
