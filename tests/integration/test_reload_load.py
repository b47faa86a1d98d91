"""A reload of 20,000 facilities does not hold up another application (issue 15).

Before, SIGHUP parsed facilities.conf on the loop thread: 1.5-3 s during which no line of
any application was written (a good client's p99 about 2 s, benchmarks/bench_reload.py).
Now the file is parsed on a thread (loghogd/reloader.py) and the loop applies the result.
The target is p99 < 50 ms (the benchmark measures it); the bound here is looser for a
loaded 2-core machine, and far below what a parse on the loop costs.
"""

import signal
import time

from benchmarks.bench_reload import facilities_conf, make_files, reloaded
from benchmarks.good_client import StampedClient, percentile
from tests.support import stop_within_bound, wait_for

FACILITIES = 20000
FILES = 200          # files that switch from daily to hourly with the reload
P99_BOUND_S = 0.2


def test_a_reload_of_20000_facilities_does_not_hold_up_a_good_client(daemon_factory):
    daemon = daemon_factory(facilities_conf(FACILITIES))
    make_files(daemon, FILES)
    client = StampedClient(daemon.tcp_port, 0.002).start()
    try:
        wait_for(lambda: client.sent > 50, 10, message='the client under way')
        before = reloaded(daemon)
        daemon.facilities_path.write_text(facilities_conf(FACILITIES, hourly=FILES))
        hup_at = time.time()
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: reloaded(daemon) > before, 60, message='the reload')
        reload_s = time.time() - hup_at
        # The rotations the reload asks for (200 files, now hourly) happen after it.
        wait_for(lambda: daemon.output().count('rotate = hourly') >= 20, 30,
                 message='the new settings applied')
    finally:
        client.stop()
    delays = [d for d, _ in client.delays(daemon.log_file('app'), since=hup_at)]
    p99 = percentile(delays, 0.99)
    print('\nreload of %d facilities: %.2fs; %d probes: median %.1f ms, p99 %.1f ms, max %.1f ms'
          % (FACILITIES, reload_s, len(delays), percentile(delays, 0.5) * 1000, p99 * 1000,
             max(delays) * 1000))
    assert p99 < P99_BOUND_S
    # SIGTERM while a further reload of the big file runs.
    daemon.facilities_path.write_text(facilities_conf(FACILITIES))
    daemon.signal(signal.SIGHUP)
    stop_within_bound(daemon)
