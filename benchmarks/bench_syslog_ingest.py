"""CPU per message of the two ingest paths, in-process, without sockets (issue 16).

The same 100-byte bodies, 20,000 of them, go through:

- syslog: SyslogFrameSplitter (RFC 6587 octet-counted RFC 5424 records, as rsyslog is fed
  in benchmarks/run.py), then SyslogReceiver.ingest (parse, route, build the line, queue);
- loghog: protocol.FrameSplitter, then Server.ingest (decode the JSON, route, build the
  line, queue);

and, with ``--shapes``, the syslog path with other shapes real senders send:

- syslog-lf: the same RFC 5424 records ended by LF (rsyslog's default TCP framing);
- syslog-nul: '<14>bench: body' ended by NUL (Python's SysLogHandler over TCP);
- syslog-3164: '<14>Dec  5 02:40:00 benchhost bench[42]: body' ended by LF;
- syslog-sev: RFC 5424 with the severity changing every message (info, warning, err);
- syslog-hosts: RFC 5424 from 50 hosts in turn (a relay): a new shape every message;

in 256 KiB reads, with the queued lines dropped (no file is written). Prints the best of
``--repeat`` runs of process CPU time per message for each.  ``--reference`` parses every
syslog message (SyslogReceiver(fast=False), SyslogFrameSplitter(fast=False)): the general
path that the fast paths are compared with in tests/unit/test_syslog_fast.py.

    .venv/bin/python benchmarks/bench_syslog_ingest.py [--messages 20000] [--repeat 5] \
        [--shapes] [--reference]
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from loghog.wire import encode_message  # noqa: E402
from loghogd.binding import BoundSockets  # noqa: E402
from loghogd.config import load_config  # noqa: E402
from loghogd.facilities import load_facilities  # noqa: E402
from loghogd.protocol import FrameSplitter  # noqa: E402
from loghogd.server import Server  # noqa: E402
from loghogd.stats import Counters  # noqa: E402
from loghogd.syslog_framing import SyslogFrameSplitter  # noqa: E402
from loghogd.syslog_listeners import SyslogReceiver  # noqa: E402
from loghogd.writer import Writer  # noqa: E402

READ_BYTES = 256 * 1024
BODY = 'LHB r=abcdef c=1 s=%06d t=0 h=deadbeef ' + 'x' * 55


class Peer:
    peer, peer_host, listener, kind, has_client_cert, acks = \
        '127.0.0.1:1', '127.0.0.1', 'tcp', 'tcp', False, None


def make_server(folder):
    path = os.path.join(folder, 'facilities.conf')
    with open(path, 'w') as handle:
        handle.write('[bench]\nrotate = daily\nbackup_count = 3\nsyslog_programs = bench\n')
    counters = Counters()
    writer = Writer(os.path.join(folder, 'log'), counters)
    return Server(load_config(None), load_facilities(path), writer, counters, None,
                  BoundSockets())


def syslog_stream(count):
    records = (('<14>1 2026-12-05T02:40:00.%06dZ benchhost bench - - - %s'
                % (i, BODY % i)).encode() for i in range(count))
    return b''.join(b'%d %s' % (len(r), r) for r in records)


def delimited(records, delimiter):
    return b''.join(record.encode() + delimiter for record in records)


SHAPES = {
    'syslog-lf': lambda count: delimited(
        ('<14>1 2026-12-05T02:40:00.%06dZ benchhost bench - - - %s' % (i, BODY % i)
         for i in range(count)), b'\n'),
    'syslog-nul': lambda count: delimited(
        ('<14>bench: %s' % (BODY % i) for i in range(count)), b'\x00'),
    'syslog-3164': lambda count: delimited(
        ('<14>Dec  5 02:40:%02d benchhost bench[42]: %s' % (i % 60, BODY % i)
         for i in range(count)), b'\n'),
    'syslog-sev': lambda count: delimited(
        ('<%d>1 2026-12-05T02:40:00.%06dZ benchhost bench - - - %s'
         % ((14, 12, 11)[i % 3], i, BODY % i) for i in range(count)), b'\n'),
    'syslog-hosts': lambda count: delimited(
        ('<14>1 2026-12-05T02:40:00.%06dZ host%d bench - - - %s' % (i, i % 50, BODY % i)
         for i in range(count)), b'\n'),
}


def loghog_stream(count):
    return b''.join(encode_message('bench', 'root', 1700000000, i, 'benchhost', BODY % i)
                    for i in range(count))


def run(server, data, splitter, ingest):
    writer = server.writer
    start = time.process_time()
    for offset in range(0, len(data), READ_BYTES):
        frames = splitter.feed(memoryview(data)[offset:offset + READ_BYTES])
        if frames:
            ingest(frames, Peer())
        for log_file in writer.dirty:
            log_file.pending.clear()
        writer.dirty.clear()
    return time.process_time() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--messages', type=int, default=20000)
    parser.add_argument('--repeat', type=int, default=5)
    parser.add_argument('--shapes', action='store_true', help='also the other syslog shapes')
    parser.add_argument('--reference', action='store_true',
                        help='parse every syslog message (no fast paths)')
    args = parser.parse_args(argv)
    fast = not args.reference
    with tempfile.TemporaryDirectory() as folder:
        server = make_server(folder)
        receiver = SyslogReceiver(server, '', fast=fast)
        syslog_splitter = lambda: SyslogFrameSplitter(server.max_message_size, fast=fast)
        paths = {
            'syslog': (syslog_stream(args.messages), syslog_splitter, receiver.ingest),
            'loghog': (loghog_stream(args.messages),
                       lambda: FrameSplitter(server.max_message_size), server.ingest),
        }
        if args.shapes:
            paths.update((name, (make(args.messages), syslog_splitter, receiver.ingest))
                         for name, make in SHAPES.items())
        best = {name: min(run(server, data, make(), ingest) for _ in range(args.repeat))
                for name, (data, make, ingest) in paths.items()}
        accepted = server.counters.accepted[('bench', 'root')]
        assert accepted == len(paths) * args.messages * args.repeat, accepted
    for name, seconds in best.items():
        print('%-11s %.2f µs CPU per message (best of %d runs of %d)%s'
              % (name, seconds / args.messages * 1e6, args.repeat, args.messages,
                 ' [reference: no fast paths]' if args.reference and name != 'loghog' else ''))


if __name__ == '__main__':
    main()
