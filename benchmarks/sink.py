"""A trivial LogHog frame sink: the bare Python ingest path, for testing the harness.

It listens on 127.0.0.1 for TCP and UDP (same port), splits frames, decodes the JSON
(inflating zlib payloads), and appends ``<receive time> - <hostname> - <body>`` lines to
``<logdir>/bench/root.log`` with one write per loop iteration.  It checks no signature,
no facility and no limit: it is the floor under any real daemon's cost, and a stand-in
to run the harness against before loghogd exists.  Like loghogd it writes
``<rundir>/listen.json`` once bound and exits 0 on SIGTERM.

    python benchmarks/sink.py --logdir DIR --rundir DIR
"""

import argparse
import datetime
import json
import os
import selectors
import signal
import socket
import struct
import sys
import zlib

_HEADER = struct.Struct('>II')
_RECV_BYTES = 256 * 1024


def _lines(payloads):
    stamp = datetime.datetime.now().strftime('%Y-%m-%d %H:%M:%S.%f')
    out = []
    for flags, payload in payloads:
        if flags & 1:
            payload = zlib.decompress(payload)
        message = json.loads(payload)
        out.append('%s - %s - %s\n' % (stamp, message['hostname'], message['body']))
    return ''.join(out).encode('utf-8')


def split_frames(buffer):
    """Return ([(flags, payload)], bytes consumed) for the complete frames in ``buffer``."""
    frames, at, end = [], 0, len(buffer)
    while end - at >= 8:
        size, flags = _HEADER.unpack_from(buffer, at)
        if end - at - 8 < size:
            break
        frames.append((flags, bytes(buffer[at + 8:at + 8 + size])))
        at += 8 + size
    return frames, at


class Sink:
    def __init__(self, logdir, rundir):
        os.makedirs(os.path.join(logdir, 'bench'), exist_ok=True)
        self.out = open(os.path.join(logdir, 'bench', 'root.log'), 'ab', buffering=0)
        self.selector = selectors.DefaultSelector()
        self.tcp = socket.create_server(('127.0.0.1', 0), backlog=128)
        port = self.tcp.getsockname()[1]
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.udp.bind(('127.0.0.1', port))
        for sock in (self.tcp, self.udp):
            sock.setblocking(False)
        self.selector.register(self.tcp, selectors.EVENT_READ, self.accept)
        self.selector.register(self.udp, selectors.EVENT_READ, self.read_datagrams)
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        signal.set_wakeup_fd(self.wake_w.fileno())
        signal.signal(signal.SIGTERM, lambda *_: None)
        self.selector.register(self.wake_r, selectors.EVENT_READ, self.stop)
        self.buffers = {}
        self.pending = []
        self.running = True
        listen = {'tcp': [['127.0.0.1', port]], 'udp': [['127.0.0.1', port]], 'tls': []}
        temporary = os.path.join(rundir, 'listen.json.tmp')
        with open(temporary, 'w') as handle:
            json.dump(listen, handle)
        os.replace(temporary, os.path.join(rundir, 'listen.json'))

    def accept(self, sock):
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return
        conn.setblocking(False)
        self.buffers[conn] = bytearray()
        self.selector.register(conn, selectors.EVENT_READ, self.read_stream)

    def read_stream(self, conn):
        data = conn.recv(_RECV_BYTES)
        buffer = self.buffers[conn]
        if not data:
            self.selector.unregister(conn)
            del self.buffers[conn]
            conn.close()
            return
        buffer += data
        frames, used = split_frames(buffer)
        del buffer[:used]
        if frames:
            self.pending.append(_lines(frames))

    def read_datagrams(self, sock):
        frames = []
        for _ in range(1000):
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                break
            frames.extend(split_frames(data)[0])
        if frames:
            self.pending.append(_lines(frames))

    def stop(self, sock):
        sock.recv(64)
        self.running = False

    def run(self):
        while self.running:
            for key, _ in self.selector.select(1.0):
                key.data(key.fileobj)
            if self.pending:
                self.out.write(b''.join(self.pending))
                self.pending = []
        self.out.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--logdir', required=True)
    parser.add_argument('--rundir', required=True)
    args = parser.parse_args(argv)
    Sink(args.logdir, args.rundir).run()
    return 0


if __name__ == '__main__':
    sys.exit(main())
