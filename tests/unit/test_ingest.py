"""Server.ingest on a batch that mixes facilities, hosts, files and rejections: what it
remembers from one message to the next (facility, host, file) must never carry a line
into the wrong file, give it the wrong host, or count it for the wrong facility."""

import os

from loghog.wire import encode_message
from loghogd.binding import BoundSockets
from loghogd.config import load_config
from loghogd.facilities import load_facilities
from loghogd.protocol import FrameSplitter
from loghogd.server import Server
from loghogd.stats import Counters
from loghogd.writer import Writer

FACILITIES = os.path.join(os.path.dirname(__file__), '..', 'cases', 'facilities.conf')
LOGDIR = '/nonexistent/logdir'


class Peer:
    peer = '127.0.0.1:1'
    peer_host = '127.0.0.1'
    kind = 'tcp'


def ingest(messages):
    counters = Counters()
    writer = Writer(LOGDIR, counters)
    server = Server(load_config(None), load_facilities(FACILITIES), writer, counters, None,
                    BoundSockets())
    data = b''.join(encode_message(app, module, 1, 2, host, body, secret)
                    for app, module, host, body, secret in messages)
    splitter = FrameSplitter(server.max_message_size)
    server.ingest(splitter.feed(memoryview(data)), Peer())
    prefix = server.line_prefix
    files = {}
    for log_file in writer.dirty:
        assert all(line.startswith(prefix) for line in log_file.pending)
        files[os.path.relpath(log_file.path, LOGDIR)] = [line[len(prefix):]
                                                        for line in log_file.pending]
    assert sorted(files) == sorted(os.path.relpath(f.path, LOGDIR)
                                   for f in writer.files.values() if f.pending)
    return files, counters


def test_a_mixed_batch_lands_line_by_line_where_it_belongs():
    files, counters = ingest([
        ('app', 'root', 'h1', 'one', None),
        ('app', 'web.requests', 'h1', 'two', None),      # the sub-facility [app:web]
        ('app', 'root', 'h2', 'three', None),            # same file, another host
        ('nope', 'root', 'h2', 'unknown app', None),
        ('perhost', 'x', 'h2', 'four', None),            # file per host
        ('perhost', 'x', 'h3', 'five', None),
        ('perhost', 'x', 'h2', 'six\n', None),
        ('signed', 'root', 'h1', 'seven', 's3cret'),
        ('signed', 'root', 'h1', 'forged', 'wrong'),
        ('signed', 'own', 'h1', 'eight', 'own-secret'),  # same app, own secret
        ('signed', 'own', 'h1', 'unsigned', None),
        ('app', 'web', 'bad\nhost', 'nine', None),
        ('app', 'root', 'h1', 'ten', None),
    ])
    assert files == {
        'app/root.log': ['h1 - one\n', 'h2 - three\n', 'h1 - ten\n'],
        'app/web.log': ['h1 - two\n', 'bad?host - nine\n'],
        'perhost/h2-root.log': ['h2 - four\n', 'h2 - six\n'],
        'perhost/h3-root.log': ['h3 - five\n'],
        'signed/root.log': ['h1 - seven\n'],
        'signed/own.log': ['h1 - eight\n'],
    }
    assert dict(counters.accepted) == {('app', 'root'): 3, ('app', 'web'): 2,
                                       ('perhost', 'root'): 3, ('signed', 'root'): 1,
                                       ('signed', 'own'): 1}
    assert dict(counters.rejected) == {'unknown_app': 1, 'bad_signature': 1,
                                       'missing_signature': 1}
    assert counters.accepted_bytes[('perhost', 'root')] > 3 * 100


def test_a_udp_read_drains_the_socket_in_one_event_and_keeps_each_sender_apart():
    import socket
    from loghogd.connections import DatagramListener
    counters = Counters()
    writer = Writer(LOGDIR, counters)
    server = Server(load_config(None), load_facilities(FACILITIES), writer, counters, None,
                    BoundSockets())
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(('127.0.0.1', 0))
    receiver.setblocking(False)
    one = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    two = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    two.bind(('127.0.0.2', 0))
    listener = DatagramListener(server, receiver)
    try:
        sends = [(one, 'a1'), (one, 'a2'), (two, 'b1'), (two, None), (one, 'a3')] * 40
        for sock, body in sends:
            frame = encode_message('app', 'root', 1, 2, 'h', body) if body else b'\0\0\0\xff'
            sock.sendto(frame, receiver.getsockname())
        calls = []
        ingest = server.ingest
        server.ingest = lambda frames, peer: calls.append(peer.peer) or ingest(frames, peer)
        listener.on_event(None)          # everything, until the socket is empty
        [log_file] = writer.dirty
        # Each sender's datagrams in the order sent, one ingest per sender and turn (not
        # one per run of a sender's datagrams: 80 here); senders apart, in turn order.
        assert [line.split(' - ')[-1] for line in log_file.pending] == \
            ['a1\n', 'a2\n', 'a3\n'] * 40 + ['b1\n'] * 40
        assert calls == ['127.0.0.1:%d' % one.getsockname()[1],
                         '127.0.0.2:%d' % two.getsockname()[1]]
        assert counters.events['udp_datagrams'] == 200
        assert dict(counters.rejected_by_peer) == {'127.0.0.2': 40}
        assert counters.accepted[('app', 'root')] == 160
        listener.on_event(None)          # nothing more: returns at once
        assert counters.events['udp_datagrams'] == 200
    finally:
        for sock in (receiver, one, two):
            sock.close()
