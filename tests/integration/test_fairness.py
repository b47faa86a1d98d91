"""One loop pass is shared fairly (issue 15): 8 connections flooding refused frames, or
valid messages, do not hold up a good client of another application, and SIGTERM during
the flood stops the daemon within its 10 s bound.

Before: each connection's turn was one 256 KiB read whatever it cost (26,000 refused
frames: 43 ms), so a good client waited for all eight every pass: acknowledgements took
about 4 s; and SIGTERM drained the flooders for the whole 10 s bound and more.

The target is p99 < 50 ms (benchmarks/bench_fairness.py measures it); the bound here is
looser for a loaded 2-core machine (p99 < 200 ms, median < 40 ms), far from what the old
loop did (refused: one ack in 3.7 s; valid: median 95 ms, p99 194 ms).

A peer that sends MALFORMED_IN_A_ROW malformed frames in a row is closed (the flooders
here connect again at once); a client with a wrong app name is never closed.
"""

import json
import socket
import time

import pytest

from benchmarks.bench_fairness import FACILITIES, probe, start_flood, written
from benchmarks.good_client import percentile
from loghog.wire import HEADER
from loghogd.server import MALFORMED_IN_A_ROW
from tests.support import frame, read_lines, stop_within_bound, wait_for


def status_json(daemon):
    try:
        return json.loads((daemon.rundir / 'status.json').read_text())
    except (OSError, ValueError):
        return {}

P99_BOUND_S = 0.2
# The old loop's median under the valid flood was 95 ms (a pass read 8 x 256 KiB); a fair
# pass answers in a few turns of 0.5 ms.
MEDIAN_BOUND_S = 0.04


@pytest.mark.parametrize('valid', [False, True], ids=['refused', 'valid'])
def test_eight_flooding_connections_do_not_hold_up_a_good_client(daemon_factory, valid):
    daemon = daemon_factory(FACILITIES, sections={'log': {'level': 'WARNING'}})
    child = start_flood(daemon.tcp_port, 60, valid)
    try:
        time.sleep(0.5)   # not a proof of anything: lets the flood get under way first
        delays = probe(daemon, 3.0, 0.005)
        assert written(daemon, len(delays)) == len(delays)
        p99 = percentile(delays, 0.99)
        print('\n%s flood: %d probes, median %.1f ms, p99 %.1f ms, max %.1f ms'
              % ('valid' if valid else 'refused', len(delays), percentile(delays, 0.5) * 1000,
                 p99 * 1000, max(delays) * 1000))
        assert p99 < P99_BOUND_S
        assert percentile(delays, 0.5) < MEDIAN_BOUND_S
        assert child.is_alive(), 'the flood ended before SIGTERM'
        print('SIGTERM during the flood: stopped in %.2fs' % stop_within_bound(daemon))
    finally:
        child.terminate()
        child.join()


def refused(count):
    """``count`` frames no LogHog client ever sends: a payload that is not JSON."""
    return (HEADER.pack(2, 0) + b'no') * count


def closed_by_daemon(sock, timeout_s=10.0):
    """Read until the daemon closes ``sock`` (True) or ``timeout_s`` passes (False)."""
    sock.settimeout(timeout_s)
    try:
        while sock.recv(4096):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_a_peer_sending_only_malformed_frames_is_closed_counted_and_logged(daemon_factory):
    """No LogHog client sends a frame that is not UTF-8 JSON: a peer that sends
    MALFORMED_IN_A_ROW of them in a row is closed (a flooder of refusals must reconnect
    to go on, and costs the loop a read each time), counted and logged."""
    daemon = daemon_factory(FACILITIES)
    with socket.create_connection(('127.0.0.1', daemon.tcp_port)) as sock:
        sock.sendall(refused(MALFORMED_IN_A_ROW + 10))
        assert closed_by_daemon(sock)
    wait_for(lambda: 'malformed frames in a row' in daemon.output(), 10,
             message='the warning')
    status = wait_for(lambda: (lambda s: s if s.get('events', {}).get(
        'connections_closed_malformed') else None)(status_json(daemon)), 20,
        message='the counter in status.json')
    assert status['events']['connections_closed_malformed'] == 1


def test_a_misconfigured_app_name_never_gets_its_connection_closed(daemon_factory):
    """A client with a wrong app name has every message refused, in a row, for as long
    as it runs: it is not closed (it would reconnect and resend for ever); its messages
    are refused and counted, and a message it sends after is written."""
    daemon = daemon_factory(FACILITIES)
    with socket.create_connection(('127.0.0.1', daemon.tcp_port)) as sock:
        sock.sendall(b''.join(frame('no-such-app', 'x') for _ in range(MALFORMED_IN_A_ROW * 3)))
        sock.sendall(frame('app', 'after the refused ones'))
        wait_for(lambda: 'after the refused ones' in ''.join(read_lines(daemon.log_file('app'))),
                 10, message='the sentinel')
        sock.settimeout(0.0)
        with pytest.raises(BlockingIOError):
            sock.recv(1)     # still open: no EOF, nothing to read
