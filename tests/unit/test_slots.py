"""Who makes room when the slots are full (loghogd/slots.py)."""

from loghogd.slots import Slots


class Peer:
    def __init__(self, name, handshaking=False, in_flight=False):
        self.name = name
        self.handshaking = handshaking
        self.in_flight = in_flight

    def is_evictable(self):
        return self.handshaking or not self.in_flight

    def __repr__(self):
        return self.name


def filled(slots, *peers):
    for peer in peers:
        slots.add(peer)
    return slots


def test_room_left_means_no_victim():
    slots = Slots(max_connections=3, max_handshakes=2)
    a, b, c = Peer('a'), Peer('b'), Peer('c')
    filled(slots, a, b, c)
    assert not slots.is_full(tls=False) and slots.victim(c) is None


def test_the_longest_idle_makes_room_and_activity_moves_a_peer_back():
    slots = filled(Slots(3, 2), *[Peer(n) for n in 'abc'])
    a, b, c = list(slots)
    slots.touch(a)
    newcomer = Peer('new')
    slots.add(newcomer)
    assert slots.is_full(tls=False)
    assert slots.victim(newcomer) is b


def test_a_connection_with_frames_in_flight_is_skipped():
    a, b, c = Peer('a', in_flight=True), Peer('b'), Peer('c')
    slots = filled(Slots(3, 2), a, b, c)
    newcomer = Peer('new')
    slots.add(newcomer)
    assert slots.victim(newcomer) is b


def test_nobody_makes_room_when_everything_is_in_flight():
    slots = filled(Slots(2, 2), Peer('a', in_flight=True), Peer('b', in_flight=True))
    newcomer = Peer('new')
    slots.add(newcomer)
    assert slots.is_full(tls=False) and slots.victim(newcomer) is None


def test_the_oldest_unfinished_handshake_makes_room_for_a_tls_newcomer():
    old, young = Peer('old', handshaking=True), Peer('young', handshaking=True)
    slots = filled(Slots(100, 2), Peer('plain'), old, young)
    newcomer = Peer('new', handshaking=True)
    slots.add(newcomer)
    assert slots.handshakes == 3 and slots.is_full(tls=True)
    assert slots.victim(newcomer) is old
    slots.remove(old)
    assert not slots.is_full(tls=True)


def test_a_finished_handshake_no_longer_counts_and_handshakes_go_first_when_full():
    shaking = Peer('shaking', handshaking=True)
    done = Peer('done', handshaking=True)
    slots = filled(Slots(3, 2), Peer('idle'), done, shaking)
    done.handshaking = False
    slots.handshake_done(done)
    assert slots.handshakes == 1
    newcomer = Peer('new')
    slots.add(newcomer)
    assert slots.victim(newcomer) is shaking
