#!/usr/bin/env python3
"""What protocol v2 signatures cost (issue 19), per message, best of five repeats.

- client: signing a ~250-byte frame (``V2Signer.sign_frame``, on the sender thread) against
  the v1 signature (``wire.Signer.sign``, in ``emit()``);
- daemon: ``Server.ingest`` of a read of 1,000 messages (no sockets, lines only queued) to a
  facility without a secret, with v1 signatures, and with v2 signatures (checked, clock
  window, replay table), per message.

    .venv/bin/python benchmarks/bench_signature_v2.py
"""

import os
import sys
import tempfile
import timeit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from loghog import wire  # noqa: E402
from loghog.signing import V2Signer  # noqa: E402
from loghogd.binding import BoundSockets  # noqa: E402
from loghogd.config import load_config  # noqa: E402
from loghogd.facilities import load_facilities  # noqa: E402
from loghogd.server import Server  # noqa: E402
from loghogd.stats import Counters  # noqa: E402
from loghogd.writer import Writer  # noqa: E402

NUMBER = 100000
READ = 1000
NOW = 1_700_000_000.0
BODY = 'GET /api/items/42 HTTP/1.1 200 1532 0.004s "Mozilla/5.0 (X11; Linux x86_64)"'
FACILITIES = """
[plain]
rotate = daily
backup_count = 1
[v1]
rotate = daily
backup_count = 1
secret = s3cret
[v2]
rotate = daily
backup_count = 1
secret = s3cret
require_signature = v2
"""


class Peer:
    peer = '127.0.0.1:4242'
    peer_host = '127.0.0.1'
    identity = ('127.0.0.1', None)
    kind = 'bench'
    acks = None
    frames_before = 0


def per_call_us(function, number=NUMBER):
    return min(timeit.repeat(function, number=number, repeat=5)) / number * 1e6


def server(folder):
    path = os.path.join(folder, 'facilities.conf')
    with open(path, 'w') as stream:
        stream.write(FACILITIES)
    counters = Counters()
    writer = Writer(os.path.join(folder, 'never-written'), counters)
    return Server(load_config(None), load_facilities(path), writer, counters, None,
                  BoundSockets(), clock=lambda: NOW), writer


def frames_for(app, kind, first_seq):
    signer = V2Signer('s3cret')
    frames = []
    for n in range(READ):
        frame = wire.encode_message(app, 'root', int(NOW), n, 'web1.example.org', BODY,
                                    secret='s3cret' if kind == 'v1' else None)
        if kind == 'v2':
            frame = signer.sign_frame(frame, bytes(16), first_seq + n, int(NOW * 1000))
        size, flags = wire.HEADER.unpack_from(frame)
        frames.append((flags, frame[wire.HEADER_SIZE:]))
    return frames


def ingest_us(app, kind):
    with tempfile.TemporaryDirectory() as folder:
        daemon, writer = server(folder)
        reads = [frames_for(app, kind, 1 + k * READ) for k in range(10)]   # new numbers
        timings = []
        for frames in reads:
            def run(frames=frames):
                accepted = daemon.ingest(frames, Peer())
                assert accepted == READ, accepted
                for log_file in writer.dirty:
                    log_file.pending = []
                writer.dirty = []
            timings.append(timeit.timeit(run, number=1) / READ * 1e6)
        return min(timings)


def main():
    frame = wire.encode_message('shop', 'web.requests', int(NOW), 0, 'web1.example.org', BODY)
    v1 = wire.Signer('s3cret')
    v2 = V2Signer('s3cret')
    with open('/proc/loadavg') as stream:
        load = stream.read().split()[0]
    print('frame of %d bytes; load average %s' % (len(frame), load))
    print('client v1 sign (emit)         %6.2f µs' % per_call_us(
        lambda: v1.sign('shop', 'web.requests', int(NOW), 0, BODY)))
    print('client v2 sign_frame (sender) %6.2f µs' % per_call_us(
        lambda: v2.sign_frame(frame, bytes(16), 7, int(NOW * 1000))))
    for app, kind in (('plain', 'unsigned'), ('v1', 'v1'), ('v2', 'v2')):
        print('daemon ingest, %-9s      %6.2f µs per message' % (kind, ingest_us(app, kind)))


if __name__ == '__main__':
    main()
