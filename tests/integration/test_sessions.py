"""Sessions with real daemons: bound to the peer, moved only by what the daemon wrote.

Issue 14: a second connection's session frame ``{"session": S, "first": 10**12}`` made
the daemon acknowledge the victim's next messages without writing them.  Loopback gives
two peers: 127.0.0.1 and 127.0.0.2 reach a daemon listening on 127.0.0.1.
"""

import os
import socket

from loghog.wire import make_session
from tests.integration.test_acks import AckReader, ack_frame
from tests.integration.test_faults import (FACILITIES, STATS, accepted, events, fill,  # noqa: F401
                                           small_disk, wait_for_status)
from tests.support import each_workers, line_body, read_lines

pytestmark = each_workers


def connect(daemon, source='127.0.0.1'):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.connect(('127.0.0.1', daemon.tcp_port))
    return sock


def bodies(daemon):
    return [line_body(line) for line in read_lines(daemon.log_file('app'))]


def test_a_session_frame_from_another_connection_cannot_make_the_daemon_skip_messages(daemon):
    victim = connect(daemon)
    victim_acks = AckReader(victim)
    victim.sendall(make_session('S', 1) + b''.join(ack_frame('v%d' % i) for i in range(1, 11)))
    assert victim_acks.until(11)[-1] == {'ack': 11}
    # The same id and a huge first number: from the same address (session frame alone)
    # and from another address (with a message of its own).
    for source, extra in (('127.0.0.1', b''), ('127.0.0.2', ack_frame('intruder'))):
        other = connect(daemon, source)
        other.sendall(make_session('S', 10 ** 12) + extra)
        assert AckReader(other).until(1 + bool(extra))[-1] == {'ack': 1 + bool(extra)}
        other.close()
    victim.sendall(b''.join(ack_frame('v%d' % i) for i in range(11, 21)))
    assert victim_acks.until(21)[-1] == {'ack': 21}
    written = bodies(daemon)
    assert [b for b in written if b.startswith('v')] == ['v%d' % i for i in range(1, 21)]
    assert written.count('intruder') == 1
    victim.close()


def test_a_resend_from_another_address_is_its_own_session(daemon):
    first = connect(daemon, '127.0.0.1')
    first.sendall(make_session('S', 1) + ack_frame('m1'))
    AckReader(first).until(2)
    other = connect(daemon, '127.0.0.2')
    other.sendall(make_session('S', 1) + ack_frame('m1'))
    AckReader(other).until(2)
    assert bodies(daemon) == ['m1', 'm1']
    # ... and from the first address again it is the first session's resend: skipped.
    again = connect(daemon, '127.0.0.1')
    again.sendall(make_session('S', 1) + ack_frame('m1') + ack_frame('m2'))
    assert AckReader(again).until(3)[-1] == {'ack': 3}
    assert bodies(daemon) == ['m1', 'm1', 'm2']
    for sock in (first, other, again):
        sock.close()


def test_a_session_frame_is_answered_at_once_while_the_messages_after_it_wait_for_a_full_disk(
        small_disk, daemon_factory):
    """Handshake rule 2: the session frame needs no write, so its ack does not wait for
    the frames read with it; theirs comes only once they are written."""
    daemon = daemon_factory(FACILITIES, sections=STATS, extra_args=['-L', str(small_disk)])
    filler = fill(small_disk)
    sock = connect(daemon)
    reader = AckReader(sock)
    sock.sendall(make_session('S', 1) + b''.join(ack_frame('m%d' % i) for i in range(1, 21)))
    assert reader.until(1) == [{'ack': 1}]
    wait_for_status(daemon, lambda s: accepted(s) == 20 and events(s, 'write_errors') >= 1,
                    'the 20 messages read and a failed write')
    os.unlink(filler)
    assert reader.until(21) == [{'ack': 21}]          # nothing in between
    assert bodies_in(small_disk) == ['m%d' % i for i in range(1, 21)]
    sock.close()
    assert daemon.stop() == 0


def bodies_in(folder):
    return [line_body(line) for line in read_lines(folder / 'app' / 'root.log')]
