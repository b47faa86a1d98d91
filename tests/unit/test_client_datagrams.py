"""Datagrams the kernel refuses to send (loghog/datagrams.py, attack finding A6-1): real UDP
sockets on loopback, so the refusals are the kernel's own (EMSGSIZE)."""

import re

from loghog import wire
from loghog.datagrams import REFUSAL_REPORT_INTERVAL_S, Refusals
from loghog.transport import open_connection
from tests.unit.test_client_fakes import DatagramServer, FrameServer


def frame_of(size, body_char='x'):
    """A message frame of exactly ``size`` bytes."""
    overhead = len(wire.encode_message('app', 'm', 1, 2, 'h', ''))
    return wire.encode_message('app', 'm', 1, 2, 'h', body_char * (size - overhead))


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_the_first_refusal_is_said_at_once_later_ones_summed_up_per_interval():
    said = []
    clock = Clock()
    refusals = Refusals(said.append, 'udp://127.0.0.1:9', clock=clock)
    with DatagramServer() as udp:
        connection = refusals.watch(open_connection('127.0.0.1', udp.port, 'udp'))
        largest = frame_of(wire.MAX_DATAGRAM_BYTES)
        assert len(largest) == wire.MAX_DATAGRAM_BYTES
        too_big = frame_of(wire.MAX_DATAGRAM_BYTES + 1, 'y')
        assert connection.send_frames([too_big, largest, too_big]) == 3
        assert [len(m['body']) for m in udp.wait_for(1)] == [len(largest) - len(frame_of(0))]
        assert refusals.count == 2
        assert said == ['the kernel refused to send 2 datagrams to udp://127.0.0.1:9 (a '
                        'message too big for UDP, or nothing listening there): lost']
        clock.now += REFUSAL_REPORT_INTERVAL_S - 1
        connection.send_frames([too_big])
        connection.send_frames([too_big])
        assert refusals.count == 4 and len(said) == 1      # said at most once an interval
        clock.now += 1
        connection.send_frames([too_big])
        assert said[1:] == ['the kernel refused to send 3 more datagrams to '
                            'udp://127.0.0.1:9: lost (5 in all)']
        connection.send_frames([too_big])
        refusals.say_rest()
        refusals.say_rest()          # nothing more to say
        assert said[2:] == ['the kernel refused to send 1 more datagrams to '
                            'udp://127.0.0.1:9: lost (6 in all)']
        assert connection.peer == f'127.0.0.1:{udp.port}'
        connection.close()


def test_nothing_refused_nothing_said_and_a_stream_is_not_watched():
    said = []
    refusals = Refusals(said.append, 'somewhere')
    refusals.say_rest()
    with DatagramServer() as udp:
        connection = refusals.watch(open_connection('127.0.0.1', udp.port, 'udp'))
        connection.send_frames([frame_of(100)])
        udp.wait_for(1)
        connection.close()
    with FrameServer() as server:
        stream = open_connection('127.0.0.1', server.port, 'tcp')
        assert refusals.watch(stream) is stream
        stream.close()
    assert said == [] and refusals.count == 0


def test_one_refusal_is_said_as_one_datagram():
    said = []
    Refusals(said.append, 'there').add(1)
    assert len(said) == 1 and re.match(r'the kernel refused to send a datagram to there ',
                                       said[0])
