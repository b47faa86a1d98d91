"""CPU per message of Server.ingest with each JSON decoder, in-process, without sockets (issue 18).

20,000 messages (the benchmark's 100-byte bodies, with and without the ``fields`` object that
LoghogHandler sends beside each record) go through protocol.FrameSplitter and Server.ingest
(decode, route, build the line, queue; the queued lines are dropped) once per decoder
installed ([server] json_decoder: stdlib, msgspec, orjson).  Also times the bare ``loads``
of python3-ujson (Debian's candidate accelerator) when it is importable, beside the others.
Prints the best of ``--repeat`` runs of process CPU time per message.

    .venv/bin/python benchmarks/bench_decoders.py [--messages 20000] [--repeat 5]
"""

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from loghog.wire import make_frame, make_payload  # noqa: E402
from loghogd.binding import BoundSockets  # noqa: E402
from loghogd.config import load_config  # noqa: E402
from loghogd.facilities import load_facilities  # noqa: E402
from loghogd.protocol import (FrameSplitter, choose_loads, decode_fields,  # noqa: E402
                              installed_decoders)
from loghogd.server import Server  # noqa: E402
from loghogd.stats import Counters  # noqa: E402
from loghogd.writer import Writer  # noqa: E402

READ_BYTES = 256 * 1024
BODY = 'LHB r=abcdef c=1 s=%06d t=0 h=deadbeef ' + 'x' * 55
FIELDS = json.dumps({'levelname': 'INFO', 'lineno': 42, 'funcName': 'handle',
                     'pathname': '/srv/app/views.py', 'process': 1234, 'thread': 5678})


class Peer:
    peer, peer_host, listener, kind, has_client_cert, acks = \
        '127.0.0.1:1', '127.0.0.1', 'tcp', 'tcp', False, None


def make_server(folder, loads):
    path = os.path.join(folder, 'facilities.conf')
    with open(path, 'w') as handle:
        handle.write('[bench]\nrotate = daily\nbackup_count = 3\n')
    counters = Counters()
    writer = Writer(os.path.join(folder, 'log'), counters)
    return Server(load_config(None), load_facilities(path), writer, counters, None,
                  BoundSockets(), loads=loads)


def stream(count, fields):
    frames = []
    for i in range(count):
        payload = make_payload('bench', 'root', 1700000000, i, 'benchhost', BODY % i)
        if fields is not None:
            payload = payload[:-1] + b', "fields": ' + fields.encode() + b'}'
        frames.append(make_frame(payload))
    return b''.join(frames)


def run(server, data):
    writer = server.writer
    splitter = FrameSplitter(server.max_message_size)
    start = time.process_time()
    for offset in range(0, len(data), READ_BYTES):
        frames = splitter.feed(memoryview(data)[offset:offset + READ_BYTES])
        if frames:
            server.ingest(frames, Peer())
        for log_file in writer.dirty:
            log_file.pending.clear()
        writer.dirty.clear()
    return time.process_time() - start


def bare_loads(loads, data, max_size):
    """Process CPU of decoding every frame's payload with ``loads`` (str in) alone."""
    frames = FrameSplitter(max_size).feed(data)
    start = time.process_time()
    for _, payload in frames:
        loads(payload.decode('utf-8'))
    return time.process_time() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--messages', type=int, default=20000)
    parser.add_argument('--repeat', type=int, default=5)
    args = parser.parse_args(argv)
    n = args.messages
    streams = {'plain': stream(n, None), 'fields': stream(n, FIELDS)}
    with tempfile.TemporaryDirectory() as folder:
        for name in installed_decoders():
            server = make_server(folder, choose_loads(name))
            for kind, data in streams.items():
                best = min(run(server, data) for _ in range(args.repeat))
                print('ingest %-8s %-7s %.2f µs CPU per message' % (name, kind, best / n * 1e6))
            assert server.counters.accepted[('bench', 'root')] == 2 * n * args.repeat
    loaders = {'stdlib json.loads': json.loads}
    try:
        import ujson
        loaders['ujson.loads'] = ujson.loads
    except ImportError:
        print('(ujson is not installed: apt-get install python3-ujson, or pip install ujson)')
    for name, loads in loaders.items():
        for kind, data in streams.items():
            best = min(bare_loads(loads, data, 65536) for _ in range(args.repeat))
            print('bare   %-17s %-7s %.2f µs CPU per message' % (name, kind, best / n * 1e6))
    print('(best of %d runs of %d messages; decode_fields is %s.%s)'
          % (args.repeat, n, decode_fields.__module__, decode_fields.__name__))


if __name__ == '__main__':
    main()
