"""Per-peer fairness of the connection slots with DEFAULT settings (issue 19).

What a sysadmin relies on: one address that opens connections without end (950 against
max_connections 900) only ever pushes out its own; another address's quiet connections,
opened before the flood and idle since, stay open and keep being served.  Before: the
longest idle connection made room, whoever held it, so the flood closed them first.
"""

import socket

from tests.integration.test_slots import (open_connections, raise_own_descriptor_limit,
                                          send_to_each)
from tests.support import frame, line_body, read_lines, wait_for

OTHER_PEER = '127.0.0.2'   # another loopback address: another peer for the daemon


def bodies(daemon):
    path = daemon.log_file('app')
    return [line_body(line) for line in read_lines(path)] if path.exists() else []


def test_a_flood_of_connections_from_one_address_does_not_close_another_addresss(
        daemon_factory):
    raise_own_descriptor_limit(2000)
    daemon = daemon_factory()
    quiet = []
    for n in range(5):
        sock = socket.create_connection(('127.0.0.1', daemon.tcp_port), timeout=10,
                                        source_address=(OTHER_PEER, 0))
        sock.sendall(frame('app', f'quiet {n} hello'))
        quiet.append(sock)
    wait_for(lambda: len(bodies(daemon)) == 5, message='the quiet peer\'s first lines')
    flood = open_connections(daemon.tcp_port, 950)
    try:
        assert send_to_each(flood, b'') == 950   # every connect done: the slots overflowed
        # A newcomer from the flooding address is served too (it makes room from its own).
        with socket.create_connection(('127.0.0.1', daemon.tcp_port), timeout=10) as sock:
            sock.sendall(frame('app', 'flooder newcomer'))
            wait_for(lambda: 'flooder newcomer' in bodies(daemon), message='newcomer')
        # And one from the other address, which keeps its five as well.
        with socket.create_connection(('127.0.0.1', daemon.tcp_port), timeout=10,
                                      source_address=(OTHER_PEER, 0)) as sock:
            sock.sendall(frame('app', 'other newcomer'))
            wait_for(lambda: 'other newcomer' in bodies(daemon), message='other newcomer')
        for n, sock in enumerate(quiet):
            sock.sendall(frame('app', f'quiet {n} still here'))
        wait_for(lambda: all(f'quiet {n} still here' in bodies(daemon) for n in range(5)),
                 message='a line on each quiet connection')
        evictions = [line for line in daemon.daemon_log.read_text().splitlines()
                     if 'to make room' in line]
        assert evictions and not [line for line in evictions if OTHER_PEER in line]
    finally:
        for sock in flood + quiet:
            sock.close()
    assert daemon.stop(timeout=30) == 0


def test_max_connections_per_peer_makes_an_address_close_its_own_oldest(daemon_factory):
    daemon = daemon_factory(server={'max_connections_per_peer': '10'})
    other = socket.create_connection(('127.0.0.1', daemon.tcp_port), timeout=10,
                                     source_address=(OTHER_PEER, 0))
    flood = [socket.create_connection(('127.0.0.1', daemon.tcp_port), timeout=10)
             for _ in range(15)]
    try:
        flood[-1].sendall(frame('app', 'newest of the flood'))
        other.sendall(frame('app', 'other address'))
        wait_for(lambda: {'newest of the flood', 'other address'} <= set(bodies(daemon)),
                 message='both lines')
        # The five oldest of the flooding address were closed for its newer ones.
        for sock in flood[:5]:
            sock.settimeout(10)
            assert sock.recv(100) == b''
        evictions = [line for line in daemon.daemon_log.read_text().splitlines()
                     if 'max_connections_per_peer' in line]
        assert evictions and not [line for line in evictions if OTHER_PEER in line]
    finally:
        for sock in flood + [other]:
            sock.close()
    assert daemon.stop() == 0
