"""Hostile or broken peers for the client attack tests: a TCP listener on loopback whose
every connection is handled by a function of the test's choice, on its own thread.

``Peer(handle)`` listens on 127.0.0.1 (port 0 unless given) and calls
``handle(peer, sock)`` for each accepted connection; ``peer.accepted`` counts them.
The helpers below read and answer frames the way a (mis)behaving daemon would.
"""

import json
import socket
import threading
import zlib

from loghog import wire


class Peer:
    def __init__(self, handle, port=0):
        self.handle = handle
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(('127.0.0.1', port))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.messages = []          # every message frame received (dicts), in order
        self.sessions = []
        self.changed = threading.Condition()
        self.socks = []
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True, name='attack-peer').start()

    def _accept(self):
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            if self.stopping:
                sock.close()
                return
            with self.changed:
                self.accepted += 1
                self.socks.append(sock)
                self.changed.notify_all()
            threading.Thread(target=self._run, args=(sock,), daemon=True).start()

    def _run(self, sock):
        try:
            self.handle(self, sock)
        except OSError:
            pass
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def record(self, frames):
        with self.changed:
            for flags, message in frames:
                (self.sessions if flags & wire.FLAG_SESSION else self.messages).append(message)
            self.changed.notify_all()

    def wait(self, predicate, timeout_s=10.0):
        with self.changed:
            if not self.changed.wait_for(lambda: predicate(self), timeout_s):
                raise AssertionError('peer: timed out waiting')

    def stop(self):
        """Stop listening and close every connection (a RST if unread data remains)."""
        self.stopping = True
        try:
            self.listener.close()
        except OSError:
            pass
        for sock in list(self.socks):
            try:
                sock.close()
            except OSError:
                pass


class Reader:
    """Reads frames from one connection."""

    def __init__(self, sock):
        self.sock = sock
        self.buffer = b''
        self.count = 0      # frames read on this connection, the session frame included

    def read(self, timeout_s=None):
        """Read once; return the frames completed, as (flags, dict); [] at EOF/timeout;
        None once the peer closed."""
        self.sock.settimeout(timeout_s)
        try:
            data = self.sock.recv(1 << 16)
        except socket.timeout:
            return []
        if not data:
            return None
        self.buffer += data
        frames = []
        while len(self.buffer) >= wire.HEADER_SIZE:
            size, flags = wire.HEADER.unpack_from(self.buffer)
            end = wire.HEADER_SIZE + size
            if len(self.buffer) < end:
                break
            payload = self.buffer[wire.HEADER_SIZE:end]
            self.buffer = self.buffer[end:]
            if flags & wire.FLAG_ZLIB:
                payload = zlib.decompress(payload)
            frames.append((flags, json.loads(payload)))
            self.count += 1
        return frames


def ack(count):
    return wire.make_ack(count)


def answer_handshake(peer, sock):
    """Read the session frame and acknowledge it; return the Reader."""
    reader = Reader(sock)
    while reader.count < 1:
        frames = reader.read(10)
        if frames is None:
            raise OSError('closed before the session frame')
        peer.record(frames)
    sock.sendall(ack(1))
    return reader


class CuttingProxy:
    """A TCP proxy on 127.0.0.1 to ``target_port`` that cuts each client connection (a reset
    to the client, a close to the daemon) once ``cut_after`` bytes came from the client, for
    the first ``cuts`` connections; later ones are relayed whole."""

    def __init__(self, target_port, cut_after, cuts):
        self.target_port = target_port
        self.cut_after = cut_after
        self.cuts = cuts
        self.cut = 0
        self.peer = Peer(self._relay)
        self.port = self.peer.port

    def _relay(self, peer, client):
        import select
        import struct
        upstream = socket.create_connection(('127.0.0.1', self.target_port))
        limit = self.cut_after if self.cut < self.cuts else None
        relayed = 0
        try:
            while True:
                ready, _, _ = select.select([client, upstream], [], [], 30)
                if not ready:
                    return
                if upstream in ready:
                    data = upstream.recv(1 << 16)
                    if not data:
                        return
                    client.sendall(data)
                if client in ready:
                    data = client.recv(1 << 16)
                    if not data:
                        return
                    if limit is not None and relayed + len(data) >= limit:
                        upstream.sendall(data[:limit - relayed])
                        self.cut += 1
                        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                          struct.pack('ii', 1, 0))
                        return
                    upstream.sendall(data)
                    relayed += len(data)
        finally:
            upstream.close()

    def stop(self):
        self.peer.stop()
