"""Per-app rate limits (issue 19) against a real daemon.

What a sysadmin relies on: an application flooding past its ``rate_limit`` over TCP is
slowed to that rate (its connections wait: back-pressure), loses nothing, and does not
starve another application's client (our handler, acknowledged), whose messages the daemon
reads within milliseconds of ``emit()`` and all of which are written; over UDP, where
nothing can wait, messages past the rate are refused and counted as lost.
"""

import datetime
import json
import logging
import re
import subprocess
import sys
import time

from loghog.handler import LoghogHandler
from tests.support import ROOT, Loggers, frame, line_body, read_lines, send_udp, wait_for

RATE, BURST = 1000, 1000
# The quiet client's messages (at 200 a second, within the flood's 7 s).  Their delay is
# measured from emit() to the daemon's read (the line's receive time), not to the ack: an
# ack waits for an fsync, which on a shared machine waits for other processes' writes (up to
# 130 ms measured here with no flood at all).
QUIET = 250
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


# The flooder: a process of its own (its sends must not take the GIL from the quiet
# client's threads), two connections, each sending all of its frames as fast as the daemon
# reads them.
FLOODER = """
import socket, sys, threading
sys.path.insert(0, %r)
from tests.support import frame
port, per_connection = int(sys.argv[1]), int(sys.argv[2])
def flood(k):
    data = b''.join(frame('noisy', 'flood %%d %%d' %% (k, n), module='web' if k else 'root')
                    for n in range(per_connection))
    with socket.create_connection(('127.0.0.1', port)) as sock:
        sock.sendall(data)   # blocks while the daemon does not read: back-pressure
threads = [threading.Thread(target=flood, args=(k,)) for k in range(2)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
""" % str(ROOT)


def receive_delays(path):
    """{n: seconds from the client's emit() to the daemon's read} of the lines 'quiet <n>
    <emit time>': the line's receive time (stamped by the daemon when its loop woke up to read)
    minus the time in its body."""
    delays = {}
    for line in read_lines(path):
        received = datetime.datetime.strptime(line[:26], '%Y-%m-%d %H:%M:%S.%f').timestamp()
        _, n, sent = line_body(line).split()
        delays[int(n)] = received - float(sent)
    return delays


def test_an_app_flooding_past_its_rate_waits_and_another_apps_client_keeps_low_latency(
        daemon_factory, request):
    daemon = daemon_factory(FACILITIES, sections={'stats': {'interval': '0.2'}})
    per_connection = 4000
    total = 2 * per_connection
    started = time.monotonic()
    flooder = subprocess.Popen([sys.executable, '-c', FLOODER, str(daemon.tcp_port),
                                str(per_connection)])
    loggers = Loggers(f'rate-limit.{request.node.name}')
    try:
        # Another app's client, our handler with its defaults (acknowledged), at 200 a second.
        handler = LoghogHandler('quiet', '127.0.0.1', daemon.tcp_port)
        logger = loggers(handler, logging.INFO)
        # Connected first (the connection and its handshake are not what is measured), and
        # measured once the flood flows: the flooder's start (an interpreter, 8,000 frames
        # made) took the shared CPU for 40 ms, which is not the daemon's doing.
        logger.info('quiet -1 %.6f', time.time())
        assert handler.flush()
        wait_for(lambda: count_lines(daemon.log_file('noisy'))
                 + count_lines(daemon.log_file('noisy', 'web')) >= BURST,
                 interval=0.01, message='the flood\'s burst written')
        for n in range(QUIET):
            logger.info('quiet %d %.6f', n, time.time())
            time.sleep(0.005)
        assert handler.flush(), 'the quiet client\'s messages were not all acknowledged'
        assert (handler.dropped, handler.rejected, handler.unconfirmed) == (0, 0, 0)
        flooded_meanwhile = (count_lines(daemon.log_file('noisy'))
                             + count_lines(daemon.log_file('noisy', 'web')))
    finally:
        loggers.close()
        assert flooder.wait(60) == 0
    # Every flood message is written, none refused, at no more than the rate: the two
    # facilities share their app's bucket.
    wait_for(lambda: count_lines(daemon.log_file('noisy'))
             + count_lines(daemon.log_file('noisy', 'web')) == total, timeout=30,
             interval=0.05, message='every flood message')
    elapsed = time.monotonic() - started
    assert elapsed >= (total - BURST) / RATE * 0.9, f'{total} messages in {elapsed:.1f}s'
    assert flooded_meanwhile < total, 'the flood was over before the quiet client finished'
    delays = receive_delays(daemon.log_file('quiet'))
    assert sorted(delays) == list(range(-1, QUIET))   # nothing lost, nothing twice
    del delays[-1]
    latencies = sorted(delays.values())
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    print(f'quiet p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, '
          f'max {latencies[-1] * 1000:.1f} ms; flood of {total} in {elapsed:.1f}s')
    assert p99 < 0.050, f'p99 {p99 * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms'
    status = wait_for(lambda: (lambda s: s if s and s['totals']['accepted'] == total + QUIET + 1
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
    shown = subprocess.run([sys.executable, '-m', 'loghogd', 'status', '-c',
                            str(daemon.config_path)], cwd=str(ROOT), capture_output=True,
                           text=True, timeout=30).stdout
    assert 'LOSSES/ERRORS' in shown and re.search(r'datagrams refused over rate_limit\s+3', shown)
    assert daemon.stop() == 0
