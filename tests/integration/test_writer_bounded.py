"""A host-name flood (one plain TCP sender, a new host name in every message, default
settings: max_hosts files) does not hold up another application's acknowledged client,
and SIGTERM during it stops the daemon within its 10 s bound (issue 15).

Before: the passes that created the flood's files (hundreds per pass, each first fsync
queued on the one syncer thread ahead of the other application's) held its acks for
0.6-2.6 s.  Now a few files are opened per pass, one facility after another, and none
while 8 fsyncs wait.  The target is p99 < 50 ms (benchmarks/bench_fairness.py --hosts);
the bound here is looser for a loaded 2-core machine.
"""

import time

from benchmarks.bench_fairness import FACILITIES, probe, start_flood, written
from benchmarks.good_client import percentile
from tests.support import stop_within_bound

P99_BOUND_S = 0.2
MAX_BOUND_S = 0.5


def test_a_host_name_flood_does_not_hold_up_another_application(daemon_factory):
    daemon = daemon_factory(FACILITIES, sections={'log': {'level': 'WARNING'}})
    # The other application's file exists before the flood (its first line is no probe).
    probe(daemon, 0.0, 0.0)
    child = start_flood(daemon.tcp_port, 60, 'hosts', 1)
    try:
        time.sleep(0.5)   # not a proof of anything: lets the flood get under way first
        delays = probe(daemon, 5.0, 0.005)
        assert written(daemon, len(delays) + 1) == len(delays) + 1
        print('\nhost-name flood: %d probes, median %.1f ms, p99 %.1f ms, max %.1f ms, %d files'
              % (len(delays), percentile(delays, 0.5) * 1000, percentile(delays, 0.99) * 1000,
                 max(delays) * 1000, len(list((daemon.logdir / 'fleet').iterdir()))))
        assert percentile(delays, 0.99) < P99_BOUND_S
        assert max(delays) < MAX_BOUND_S
        assert child.is_alive(), 'the flood ended before SIGTERM'
        print('SIGTERM during the flood: stopped in %.2fs' % stop_within_bound(daemon))
    finally:
        child.terminate()
        child.join()
