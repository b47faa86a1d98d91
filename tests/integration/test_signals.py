"""Signals under load: SIGHUP and SIGTERM are acted on whatever the loop is busy with.

Issue 14: the syncer thread woke the loop with one byte per fsync through the socketpair
that also carried the signals; under a burst of new files it filled (278 bytes), Python's
wake-up write failed silently and the no-op handler recorded nothing: no reload, no stop.
"""

import signal
import socket
import threading
import time

from tests.support import each_workers, frame, line_body, read_lines, wait_for, wait_for_lines

pytestmark = each_workers

PER_HOST = """
[perhost]
rotate = daily
backup_count = 3
file_per_host = yes

[app]
rotate = daily
backup_count = 3
"""
# The init script sends SIGKILL 30 s after SIGTERM: the daemon must be gone by then
# (the drain's 10 s, the pass that was running, the last write and fsync, on a loaded
# 2-core machine).
STOP_BOUND_S = 30.0
# A signal is acted on at the next loop pass; a pass is bounded by one read per connection.
ACTED_ON_S = 10.0


class Burst:
    """Sends ``count`` messages, one new host name each, on one connection (a thread)."""

    def __init__(self, port, count, prefix, hosts=None):
        self.data = b''.join(frame('perhost', 'm%d' % n, host='%s-%d' % (prefix, n % (hosts or count)))
                             for n in range(count))
        self.port = port
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._send, daemon=True)
        self.thread.start()

    def _send(self):
        try:
            with socket.create_connection(('127.0.0.1', self.port), timeout=60) as sock:
                half = len(self.data) // 4
                sock.sendall(self.data[:half])
                self.started.set()
                sock.sendall(self.data[half:])
        except OSError:
            self.started.set()   # the daemon stopped: what it read is what counts

    def join(self):
        self.thread.join(60)


def files_in(daemon):
    folder = daemon.logdir / 'perhost'
    return len(list(folder.iterdir())) if folder.exists() else 0


def written(daemon):
    folder = daemon.logdir / 'perhost'
    return sum(len(read_lines(p)) for p in folder.iterdir()) if folder.exists() else 0


def test_sighup_during_a_burst_of_new_host_names_is_acted_on(daemon_factory):
    daemon = daemon_factory(PER_HOST)
    burst = Burst(daemon.tcp_port, 6000, 'a')
    assert burst.started.wait(30)
    wait_for(lambda: files_in(daemon) >= 300, 30, message='the burst to be written')
    daemon.facilities_path.write_text(PER_HOST + '\n[added]\nrotate = daily\nbackup_count = 3\n')
    daemon.signal(signal.SIGHUP)
    burst.join()
    # The reload happened: the facility it added takes messages (a sentinel, waited for).
    wait_for(lambda: 'reloaded' in daemon.output(), 30, message='the reload')
    with socket.create_connection(('127.0.0.1', daemon.tcp_port)) as sock:
        sock.sendall(frame('added', 'after the reload'))
    # (Behind the rest of the burst: thousands of new files take a while on a loaded machine.)
    assert line_body(wait_for_lines(daemon.log_file('added'), 1, timeout=90)[0]) == \
        'after the reload'
    assert daemon.stop() == 0


def test_sigterm_during_a_burst_of_new_host_names_stops_within_the_drain_bound(daemon_factory):
    daemon = daemon_factory(PER_HOST)
    first = Burst(daemon.tcp_port, 3000, 'a')
    first.join()
    # Lines, not files: past max_hosts (1,000 by default) new host names share the file.
    wait_for(lambda: written(daemon) >= 3000, 60, message='the first burst to be written')
    burst = Burst(daemon.tcp_port, 6000, 'b')
    assert burst.started.wait(30)
    wait_for(lambda: written(daemon) >= 3300, 30, message='the second burst to arrive')
    sent_at = time.monotonic()
    daemon.signal(signal.SIGTERM)
    # Acted on at once (on main it never was: the daemon ran on, idle, until a second
    # SIGTERM), and the drain's bound covers writing what it reads.
    wait_for(lambda: 'received SIGTERM' in daemon.output(), ACTED_ON_S,
             message='the SIGTERM to be acted on')
    assert daemon.proc.wait(60) == 0
    assert time.monotonic() - sent_at < STOP_BOUND_S
    burst.join()


def test_sigterm_during_a_burst_of_30000_messages_exits_0_within_the_drain_bound(
        daemon_factory):
    daemon = daemon_factory(PER_HOST)
    burst = Burst(daemon.tcp_port, 30000, 'c', hosts=1500)
    assert burst.started.wait(30)
    wait_for(lambda: written(daemon) >= 3000, 60, message='the burst to be written')
    sent_at = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.proc.wait(60) == 0
    assert time.monotonic() - sent_at < STOP_BOUND_S
    burst.join()
    bodies = [line_body(line) for path in (daemon.logdir / 'perhost').iterdir()
              for line in read_lines(path)]
    assert 3000 <= len(bodies) <= 30000 and len(set(bodies)) == len(bodies)
