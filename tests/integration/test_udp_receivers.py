"""UDP with receiver processes ([server] workers = 2, issue 18): each receiver reads its own
socket of every address (SO_REUSEPORT), the kernel gives each sender to one of them, so
several senders are read by both receivers, each sender's lines in order; a receiver that
dies is started again on the same socket, and reads what the kernel kept there meanwhile;
`loghogd status` counts the kernel drops of every socket."""

import os
import re
import signal
import socket
import threading
import time

from tests.integration.test_status import wait_for_snapshot
from tests.support import frame, line_body, read_lines, wait_for

APP = """
[app]
rotate = daily
backup_count = 3
"""
WORKERS_2 = {'workers': '2'}
STATS = {'stats': {'interval': '0.2'}}
# Senders, each its own socket (source port): the kernel hashes each to one receiver's
# socket; with 16, all on one of two sockets is 1 chance in 32768.
SENDERS = 16
# Between two datagrams of the senders in turn: about 2,000 a second, a modest paced rate.
PACE_S = 0.0005


def receiver_figures(snapshot, slot):
    """(pid, messages) of receiver ``slot`` as `loghogd status` shows it, or None."""
    text = snapshot['tasks'].get('receivers', {}).get('receiver_%d' % slot, '')
    found = re.match(r'pid (\d+), \d+ connections, (\d+) messages', text)
    return (int(found.group(1)), int(found.group(2))) if found else None


def slot_pid(daemon, slot):
    """The pid of receiver ``slot`` as the main process last logged it."""
    marker = 'receiver %d started (pid ' % slot
    lines = [line for line in daemon.output().splitlines() if marker in line]
    return int(lines[-1].split(marker, 1)[1].split(')', 1)[0]) if lines else None


def open_senders(count, host='127.0.0.1'):
    family = socket.AF_INET6 if ':' in host else socket.AF_INET
    senders = []
    for _ in range(count):
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.bind((host, 0))     # its own source port, kept for the whole test
        senders.append(sock)
    return senders


def send_paced(senders, port, numbers, tag='s', host='127.0.0.1'):
    """Each sender sends 'TAG INDEX NUMBER' for ``numbers``, the senders in turn, one
    datagram every PACE_S."""
    for number in numbers:
        for index, sock in enumerate(senders):
            sock.sendto(frame('app', '%s %d %s' % (tag, index, number)), (host, port))
            time.sleep(PACE_S)


def by_sender(daemon, tag='s'):
    """{sender index: [its numbers in the order written]} from app's file."""
    result = {}
    for line in read_lines(daemon.log_file('app')):
        parts = line_body(line).split()
        if len(parts) == 3 and parts[0] == tag:
            result.setdefault(int(parts[1]), []).append(parts[2])
    return result


def written(daemon, expected, tag='s'):
    """Whether every sender's lines of ``expected`` ({index: [numbers]}) are written."""
    found = by_sender(daemon, tag)
    return all(len(found.get(index, ())) >= len(numbers)
               for index, numbers in expected.items())


def test_several_udp_senders_are_read_by_both_receivers_each_in_order(daemon_factory):
    daemon = daemon_factory(APP, server=dict(WORKERS_2, listen_ipv6='[::1]:0'),
                            sections=STATS)
    families = [('127.0.0.1', daemon.port('udp', 0)), ('::1', daemon.port('udp', 1))]
    senders = {host: open_senders(SENDERS, host) for host, _ in families}
    try:
        for host, port in families:
            send_paced(senders[host], port, [str(n) for n in range(25)], tag=host, host=host)
        for host, _ in families:
            expected = {index: [str(n) for n in range(25)] for index in range(SENDERS)}
            wait_for(lambda: written(daemon, expected, host), 15,
                     message='every line from %s' % host)
            assert by_sender(daemon, host) == expected    # nothing lost, each in order
    finally:
        for sock in senders['127.0.0.1'] + senders['::1']:
            sock.close()
    total = 2 * SENDERS * 25
    snapshot = wait_for_snapshot(
        daemon, lambda s: sum((receiver_figures(s, slot) or (0, 0))[1]
                              for slot in (0, 1)) == total,
        'the receivers to report %d messages' % total)
    counts = [receiver_figures(snapshot, slot)[1] for slot in (0, 1)]
    assert all(counts), 'both receivers read datagrams: %s' % counts
    # One socket per receiver for each address, each named with its reader.
    rows = snapshot['udp']['sockets']
    assert sorted((row['address'], row['receiver']) for row in rows) == sorted(
        (address, slot) for address in {row['address'] for row in rows} for slot in (0, 1))
    assert len(rows) == 4
    assert daemon.stop() == 0


def test_datagrams_queued_for_a_killed_receiver_are_read_by_the_next_one_in_order(
        daemon_factory):
    daemon = daemon_factory(APP, server=WORKERS_2, sections=STATS)
    port = daemon.udp_port
    senders = open_senders(SENDERS)
    try:
        send_paced(senders, port, [str(n) for n in range(10)])
        wait_for(lambda: written(daemon, {i: range(10) for i in range(SENDERS)}), 15,
                 message='the first lines')
        # Stopped first, with all it had read handed over (every line above is written):
        # the lines it would lose when killed are then only those the kernel could not
        # keep (none here with the default 4 MB buffer; counted as kernel drops where
        # net.core.rmem_max keeps it smaller).
        # ... and counted: a receiver's counters may go to the main process a loop pass
        # after its lines, and a killed one's last are lost.
        wait_for_snapshot(daemon, lambda s: s['totals']['accepted'] == 10 * SENDERS,
                          'status to count the first lines')
        victim = wait_for(lambda: slot_pid(daemon, 1), message='receiver 1')
        os.kill(victim, signal.SIGSTOP)
        stop = threading.Event()
        rounds = []      # the numbers sent, by the thread, until the new receiver runs

        def send_until_stopped():
            def numbers():
                number = 10
                while not stop.is_set():
                    rounds.append(str(number))
                    yield str(number)
                    number += 1
            send_paced(senders, port, numbers())

        sending = threading.Thread(target=send_until_stopped)
        sending.start()
        try:
            # Datagrams wait in its socket (the other receiver reads its own senders).
            wait_for_snapshot(daemon, lambda s: any(
                row.get('receiver') == 1 and row['queue_bytes'] > 0
                for row in s['udp']['sockets']), 'datagrams queued for receiver 1')
            os.kill(victim, signal.SIGKILL)
            wait_for(lambda: slot_pid(daemon, 1) not in (None, victim), 15,
                     message='receiver 1 started again')
            # The senders go on until the new one has read some: what waited for it and
            # what came after.
            wait_for_snapshot(daemon, lambda s: (receiver_figures(s, 1) or (victim, 0))[0]
                              != victim and receiver_figures(s, 1)[1] > 0,
                              'the new receiver 1 to read')
        finally:
            stop.set()
            sending.join()
        # Sentinels once every queue is empty: the kernel has room for them.
        wait_for_snapshot(daemon, lambda s: not any(row['queue_bytes']
                                                    for row in s['udp']['sockets']),
                          'the queues read')
        send_paced(senders, port, ['end'])
        wait_for(lambda: all('end' in numbers for numbers in by_sender(daemon).values()),
                 15, message='every sentinel')
    finally:
        for sock in senders:
            sock.close()
    expected = {index: [str(n) for n in range(10)] + rounds + ['end']
                for index in range(SENDERS)}
    found = by_sender(daemon)
    for index, numbers in expected.items():   # each sender in order, none twice
        kept = set(found[index])
        assert found[index] == [n for n in numbers if n in kept], index
    lost = sum(len(expected[i]) - len(found[i]) for i in expected)
    snapshot = wait_for_snapshot(
        daemon, lambda s: s['totals']['accepted'] == sum(map(len, found.values())),
        'status to count every line')
    assert lost == snapshot['udp']['kernel_drops']   # nothing lost beyond the kernel's
    assert lost == 0 or _rmem_max() < (4 << 20)      # with 4 MB there was room for all
    assert 'receiver 1 (pid %d) exited unexpectedly' % victim in daemon.output()
    assert daemon.stop() == 0


def _rmem_max():
    """The receive buffer a socket of a daemon not started as root can have at most."""
    if os.geteuid() == 0:
        return float('inf')     # SO_RCVBUFFORCE
    with open('/proc/sys/net/core/rmem_max') as stream:
        return int(stream.read())


def test_status_counts_the_kernel_drops_of_every_receivers_socket(daemon_factory):
    daemon = daemon_factory(APP, server=dict(WORKERS_2, udp_receive_buffer='4K'),
                            sections=STATS)
    port = daemon.udp_port
    victim = wait_for(lambda: slot_pid(daemon, 1), message='receiver 1')
    senders = open_senders(SENDERS)
    sent = 0
    try:
        # Receiver 1 stopped: its socket fills, then the kernel drops (30 datagrams of a
        # sender are more than 4K of buffer holds); receiver 0 reads its own senders.
        os.kill(victim, signal.SIGSTOP)
        try:
            for number in range(30):
                for index, sock in enumerate(senders):
                    sock.sendto(frame('app', 'flood %d %d %s' % (index, number, 'x' * 100)),
                                ('127.0.0.1', port))
                    sent += 1
            wait_for_snapshot(daemon, lambda s: any(
                row.get('receiver') == 1 and row['drops'] > 0
                for row in s['udp']['sockets']), 'kernel drops on receiver 1\'s socket')
        finally:
            os.kill(victim, signal.SIGCONT)
    finally:
        for sock in senders:
            sock.close()
    snapshot = wait_for_snapshot(
        daemon, lambda s: s['totals']['accepted'] + (s['udp']['kernel_drops'] or 0) == sent,
        'accepted + kernel drops == sent')
    rows = snapshot['udp']['sockets']
    assert sorted(row['receiver'] for row in rows) == [0, 1]
    assert snapshot['udp']['kernel_drops'] == sum(row['drops'] for row in rows)
    assert [row['drops'] > 0 for row in rows if row['receiver'] == 1] == [True]
    assert daemon.stop() == 0
