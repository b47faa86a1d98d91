"""One loop pass is shared fairly (issue 15): 8 connections flooding refused frames, or
valid messages, do not hold up a good client of another application, and SIGTERM during
the flood stops the daemon within its 10 s bound.

Before: each connection's turn was one 256 KiB read whatever it cost (26,000 refused
frames: 43 ms), so a good client waited for all eight every pass: acknowledgements took
about 4 s; and SIGTERM drained the flooders for the whole 10 s bound and more.

The target is p99 < 50 ms (benchmarks/bench_fairness.py measures it); the bound here is
looser for a loaded 2-core machine (p99 < 200 ms, median < 40 ms), far from what the old
loop did (refused: one ack in 3.7 s; valid: median 95 ms, p99 194 ms).
"""

import time

import pytest

from benchmarks.bench_fairness import FACILITIES, percentile, probe, start_flood, written

P99_BOUND_S = 0.2
# The old loop's median under the valid flood was 95 ms (a pass read 8 x 256 KiB); a fair
# pass answers in a few turns of 0.5 ms.
MEDIAN_BOUND_S = 0.04
SIGTERM_BOUND_S = 10.0


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
        began = time.monotonic()
        assert daemon.stop(timeout=30) == 0
        stop_s = time.monotonic() - began
        print('SIGTERM during the flood: stopped in %.2fs' % stop_s)
        assert stop_s < SIGTERM_BOUND_S
    finally:
        child.terminate()
        child.join()
