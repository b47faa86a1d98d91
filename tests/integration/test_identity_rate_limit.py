"""Per-app rate limits (issue 19) against a real daemon.

What a sysadmin relies on: an application flooding past its ``rate_limit`` over TCP is
slowed to that rate (its connections wait: back-pressure), loses nothing, and does not
starve another application's client, whose acknowledgements keep coming within
milliseconds; over UDP, where nothing can wait, messages past the rate are refused and
counted as lost.
"""

import json
import socket
import threading
import time

from loghog.wire import FLAG_ACK, HEADER, parse_ack
from tests.support import frame, read_lines, send_udp, wait_for

RATE, BURST = 3000, 3000
FACILITIES = f"""
[noisy]
rotate = daily
backup_count = 3
rate_limit = {RATE}/s burst {BURST}
[noisy:web]
rotate = daily
backup_count = 3
[quiet]
rotate = daily
backup_count = 3
"""


def count_lines(path):
    return len(read_lines(path)) if path.exists() else 0


def snapshot(daemon):
    try:
        return json.loads((daemon.rundir / 'status.json').read_text())
    except (FileNotFoundError, ValueError):
        return None


def flood(port, data):
    with socket.create_connection(('127.0.0.1', port)) as sock:
        sock.sendall(data)   # blocks while the daemon does not read: back-pressure


def acked(app, body):
    data = frame(app, body)
    return HEADER.pack(len(data) - HEADER.size, FLAG_ACK) + data[HEADER.size:]


def round_trip(sock, data, number, buffer):
    """Send one acknowledged frame, wait for its ack; return (seconds, rest of buffer)."""
    started = time.perf_counter()
    sock.sendall(data)
    while True:
        while len(buffer) >= HEADER.size:
            size, flags = HEADER.unpack_from(buffer)
            if len(buffer) < HEADER.size + size:
                break
            ack = parse_ack(flags, bytes(buffer[HEADER.size:HEADER.size + size]))
            buffer = buffer[HEADER.size + size:]
            assert 'rejected' not in ack, ack
            if ack['ack'] >= number:
                return time.perf_counter() - started, buffer
        chunk = sock.recv(4096)
        assert chunk, 'the daemon closed the connection'
        buffer += chunk


def test_an_app_flooding_past_its_rate_waits_and_another_apps_client_keeps_low_latency(
        daemon_factory):
    daemon = daemon_factory(FACILITIES, sections={'stats': {'interval': '0.2'}})
    per_connection = 12000
    total = 2 * per_connection
    floods = [threading.Thread(target=flood, args=(daemon.tcp_port, b''.join(
        frame('noisy', f'flood {k} {n}', module='web' if k else 'root')
        for n in range(per_connection)))) for k in range(2)]
    started = time.monotonic()
    for thread in floods:
        thread.start()
    latencies = []
    try:
        with socket.create_connection(('127.0.0.1', daemon.tcp_port)) as sock:
            buffer = b''
            for n in range(1, 151):
                latency, buffer = round_trip(sock, acked('quiet', f'quiet {n}'), n, buffer)
                latencies.append(latency)
                time.sleep(0.002)
        flooded_meanwhile = (count_lines(daemon.log_file('noisy'))
                             + count_lines(daemon.log_file('noisy', 'web')))
    finally:
        for thread in floods:
            thread.join(60)
    # Every flood message is written, none refused, at no more than the rate: the two
    # facilities share their app's bucket.
    wait_for(lambda: count_lines(daemon.log_file('noisy'))
             + count_lines(daemon.log_file('noisy', 'web')) == total, timeout=30,
             interval=0.05, message='every flood message')
    elapsed = time.monotonic() - started
    assert elapsed >= (total - BURST) / RATE * 0.9, f'{total} messages in {elapsed:.1f}s'
    assert flooded_meanwhile < total, 'the flood was over before the quiet client finished'
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    print(f'quiet p99 {p99 * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms; '
          f'flood of {total} in {elapsed:.1f}s')
    assert p99 < 0.050, f'p99 {p99 * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms'
    assert count_lines(daemon.log_file('quiet')) == 150
    status = wait_for(lambda: (lambda s: s if s and s['totals']['accepted'] == total + 150
                               else None)(snapshot(daemon)), message='status')
    assert status['totals']['rejected'] == 0
    assert daemon.stop() == 0


def test_datagrams_past_the_rate_are_refused_and_counted_as_lost(daemon_factory):
    daemon = daemon_factory(FACILITIES.replace(f'{RATE}/s burst {BURST}', '1/min burst 5'),
                            sections={'stats': {'interval': '0.2'}})
    for n in range(8):
        send_udp(daemon.udp_port, frame('noisy', f'datagram {n}'))
    send_udp(daemon.udp_port, frame('quiet', 'sentinel'))
    wait_for(lambda: count_lines(daemon.log_file('quiet')) == 1, message='sentinel')
    status = wait_for(lambda: (lambda s: s if s and s['totals']['rejected'] == 3 else None)(
        snapshot(daemon)), message='the refusals in status')
    assert count_lines(daemon.log_file('noisy')) == 5
    assert {r['reason']: r['messages'] for r in status['rejected']} == {'rate_limited': 3}
    assert status['events']['rate_limited_datagrams'] == 3
    assert status['tasks']['rate_limit'] == {'paused_connections': 0}
    assert daemon.stop() == 0
