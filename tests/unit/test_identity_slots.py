"""Per-peer fairness of the connection slots (slots.py, issue 19): the address holding the
most connections makes room first, and max_connections_per_peer caps one address."""

from loghogd.slots import Slots


class Conn:
    def __init__(self, peer_host, name, in_flight=False, handshaking=False):
        self.peer_host = peer_host
        self.name = name
        self.in_flight = in_flight
        self.handshaking = handshaking

    def is_evictable(self):
        return self.handshaking or not self.in_flight

    def __repr__(self):
        return self.name


def test_the_peer_holding_the_most_makes_room_not_the_longest_idle_of_another():
    slots = Slots(max_connections=5, max_handshakes=2)
    quiet = [Conn('10.0.0.2', 'quiet%d' % n) for n in range(2)]
    for conn in quiet:               # the oldest, idle since
        slots.add(conn)
    flood = [Conn('10.0.0.1', 'flood%d' % n) for n in range(3)]
    for conn in flood:
        slots.add(conn)
    newcomer = Conn('10.0.0.1', 'flood3')
    slots.add(newcomer)
    assert slots.is_full(tls=False)
    assert slots.victim(newcomer) is flood[0]
    # A newcomer of the quiet peer is made room for by the flooding peer too (4 against 3).
    slots.remove(flood[0])
    slots.add(Conn('10.0.0.1', 'flood4'))
    other = Conn('10.0.0.2', 'quiet2')
    slots.add(other)
    assert slots.victim(other) is flood[1]


def test_a_peer_whose_connections_are_all_in_flight_leaves_it_to_the_longest_idle():
    slots = Slots(max_connections=3, max_handshakes=2)
    idle = Conn('10.0.0.2', 'idle')
    slots.add(idle)
    busy = [Conn('10.0.0.1', 'busy%d' % n, in_flight=True) for n in range(2)]
    for conn in busy:
        slots.add(conn)
    newcomer = Conn('10.0.0.3', 'new')
    slots.add(newcomer)
    assert slots.victim(newcomer) is idle


def test_activity_moves_a_connection_back_within_its_peer_too():
    slots = Slots(max_connections=3, max_handshakes=2)
    a, b, c = (Conn('10.0.0.1', n) for n in 'abc')
    for conn in (a, b, c):
        slots.add(conn)
    slots.touch(a)
    newcomer = Conn('10.0.0.1', 'new')
    slots.add(newcomer)
    assert slots.victim(newcomer) is b


def test_sizes_follow_adds_and_removes():
    slots = Slots(max_connections=10, max_handshakes=2)
    conns = [Conn('10.0.0.%d' % (n % 3), 'c%d' % n) for n in range(9)]
    for conn in conns:
        slots.add(conn)
    assert [slots.held_by('10.0.0.%d' % n) for n in range(3)] == [3, 3, 3]
    for conn in conns[:6]:
        slots.remove(conn)
    slots.remove(conns[0])   # twice: nothing happens
    assert [slots.held_by('10.0.0.%d' % n) for n in range(3)] == [1, 1, 1]
    assert slots._largest == 1
    for conn in conns[6:]:
        slots.remove(conn)
    assert slots._largest == 0 and not slots._by_peer and len(slots) == 0


def test_the_per_peer_cap_takes_room_from_the_peers_own_connections():
    slots = Slots(max_connections=100, max_handshakes=2, max_per_peer=2)
    first, second = Conn('10.0.0.1', 'first'), Conn('10.0.0.1', 'second')
    other = Conn('10.0.0.2', 'other')
    for conn in (first, other, second):
        slots.add(conn)
    assert not slots.is_over_peer_cap(second)
    third = Conn('10.0.0.1', 'third')
    slots.add(third)
    assert slots.is_over_peer_cap(third) and slots.own_victim(third) is first
    first.in_flight = second.in_flight = True
    assert slots.own_victim(third) is None
    assert not slots.is_over_peer_cap(other)
