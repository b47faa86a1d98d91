"""Binding: what the kernel actually grants is checked, and a shortfall is said."""

import os
import socket

from loghogd.binding import _check_receive_buffer, bind_all
from loghogd.config import load_config


def test_a_receive_buffer_smaller_than_asked_gives_a_warning_naming_the_setting():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
        got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        warning = _check_receive_buffer(sock, 64 * 1024 * 1024)
        assert warning is not None
        assert '127.0.0.1:%d' % port in warning and 'udp_receive_buffer' in warning
        assert '%d bytes' % got in warning
        assert _check_receive_buffer(sock, got) is None


def test_ipv6_addresses_are_bracketed_in_the_warning():
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.bind(('::1', 0))
        port = sock.getsockname()[1]
        assert '[::1]:%d' % port in _check_receive_buffer(sock, 1 << 30)


# -- one UDP socket per receiver (issue 18) ---------------------------------------------------

def bound_with(tmp_path, workers, ipv6='[::1]:0', receive_buffer='4M'):
    """bind_all on loopback, port 0, with ``workers``; the caller closes the result."""
    (tmp_path / 'facilities.conf').write_text('[app]\nrotate = daily\nbackup_count = 1\n')
    (tmp_path / 'loghogd.conf').write_text(
        '[main]\nlogdir = log\nworkdir = lib\nrundir = run\nfacilities_config = facilities.conf\n'
        '[server]\nlisten_ipv4 = 127.0.0.1:0\nlisten_ipv6 = %s\nworkers = %d\n'
        'udp_receive_buffer = %s\n' % (ipv6, workers, receive_buffer))
    return bind_all(load_config(str(tmp_path / 'loghogd.conf')))


def udp_of(bound):
    return [sock for kind, sock in bound.sockets if kind == 'udp']


def groups_of(bound):
    """[[socket, ...]]: the UDP sockets bound to each address, in the order bound."""
    groups = {}
    for sock in udp_of(bound):
        groups.setdefault(sock.getsockname(), []).append(sock)
    return list(groups.values())


def reuse_port(sock):
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)


def test_one_process_binds_one_udp_socket_per_address_without_reuseport(tmp_path):
    bound = bound_with(tmp_path, 1)
    try:
        udp = udp_of(bound)
        assert [sock.family for sock in udp] == [socket.AF_INET, socket.AF_INET6]
        assert not any(reuse_port(sock) for sock in udp)
        assert [len(group) for group in groups_of(bound)] == [1, 1]
    finally:
        bound.close()


def test_each_receiver_gets_its_own_udp_socket_of_every_address_on_the_port_of_the_first(
        tmp_path):
    bound = bound_with(tmp_path, 3)
    try:
        tcp = {sock.getsockname()[:2] for kind, sock in bound.sockets if kind == 'tcp'}
        groups = groups_of(bound)
        assert len(groups) == 2                      # IPv4 and IPv6
        for group in groups:
            assert len(group) == 3                   # one per receiver
            names = {sock.getsockname()[:2] for sock in group}
            assert len(names) == 1 and names <= tcp  # all on the TCP port picked for port 0
            assert all(reuse_port(sock) for sock in group)
            # Each got udp_receive_buffer (Linux reports twice what was set).
            assert [sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) for sock in group] \
                == [2 * _granted(4 << 20)] * 3
        assert bound.udp_groups() == groups          # what the receivers get, by slot
        # listen.json names each address once.
        assert sorted(map(tuple, bound.addresses()['udp'])) == sorted(
            (host, port) for host, port in tcp)
    finally:
        bound.close()


def _granted(size):
    """What the kernel grants a socket that asks ``size`` bytes of receive buffer: all of
    it as root (SO_RCVBUFFORCE), at most net.core.rmem_max otherwise."""
    if os.geteuid() == 0:
        return size
    with open('/proc/sys/net/core/rmem_max') as stream:
        return min(size, int(stream.read()))


def test_the_kernel_gives_each_sender_to_one_socket_of_the_group_and_keeps_its_order(tmp_path):
    bound = bound_with(tmp_path, 2)
    try:
        for group in groups_of(bound):               # IPv4, then IPv6
            assert_senders_spread_in_order(group)
    finally:
        bound.close()


def assert_senders_spread_in_order(group):
    """16 senders, 5 datagrams each, to ``group``'s address: each sender's datagrams are
    all in one socket of the group, in order, and both sockets get some."""
    host, port = group[0].getsockname()[:2]
    senders = [socket.socket(group[0].family, socket.SOCK_DGRAM) for _ in range(16)]
    try:
        for number in range(5):
            for index, sender in enumerate(senders):
                sender.sendto(b'%d %d' % (index, number), (host, port))
        read = [[] for _ in group]
        for slot, sock in enumerate(group):
            sock.setblocking(False)
            while True:
                try:
                    read[slot].append(tuple(map(int, sock.recv(100).split())))
                except BlockingIOError:
                    break
        assert len(read) == 2 and all(read), \
            'both sockets get senders (16 senders: all on one is 1 in 32768)'
        for slot in range(2):
            by_sender = {}
            for index, number in read[slot]:
                by_sender.setdefault(index, []).append(number)
            assert all(numbers == list(range(5)) for numbers in by_sender.values())
        assert sorted(read[0] + read[1]) == [(i, n) for i in range(16) for n in range(5)]
    finally:
        for sender in senders:
            sender.close()
