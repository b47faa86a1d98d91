"""A good client of another application, timed: the one timing loop of the daemon
benchmarks (issue 15: fairness, host flood, rotation, reload) and of their tests.

Two ways to time it:

- ``StampedClient``: one message every ``interval_s`` on its own connection, without
  acknowledgements, its send time in the body.  The daemon stamps each line with its
  receive time, so ``line_delay`` (receive - send, the same clock) is how long the line
  waited for the loop; a stall of one second delays every line sent during it.
- ``acked_probes``: one acknowledged message at a time, timed from send to
  acknowledgement (written and synced as its facility asks).
"""

import socket
import threading
import time

from loghog.wire import FLAG_ACK, HEADER, encode_message
from tests.support import frame, read_lines, wait_for


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summary(delays):
    """median, p99 and max of ``delays`` (seconds), in milliseconds."""
    return {'median_ms': round(percentile(delays, 0.5) * 1000, 2),
            'p99_ms': round(percentile(delays, 0.99) * 1000, 2),
            'max_ms': round(max(delays) * 1000, 2)}


def line_delay(line):
    """(receive time - send time, send time) of one of a StampedClient's lines, in seconds."""
    stamp, _, rest = line.partition(' - ')
    received = time.mktime(time.strptime(stamp[:19], '%Y-%m-%d %H:%M:%S')) + float(stamp[19:])
    sent = float(rest.rsplit(' ', 1)[1])
    return received - sent, sent


class StampedClient:
    """Sends ``probe <n> <send time>`` to ``app`` every ``interval_s`` from a thread,
    from ``start()`` until ``stop()`` (which returns how many it sent)."""

    def __init__(self, port, interval_s=0.002, app='app'):
        self.port = port
        self.interval_s = interval_s
        self.app = app
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def _run(self):
        with socket.create_connection(('127.0.0.1', self.port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while not self._stop.is_set():
                sock.sendall(frame(self.app, 'probe %d %.6f' % (self.sent, time.time())))
                self.sent += 1
                time.sleep(self.interval_s)

    def stop(self):
        self._stop.set()
        self._thread.join(30)
        return self.sent

    def delays(self, live, since=None, timeout_s=120):
        """Wait until every line sent is in the file ``live``; return (delay, send time)
        pairs of those sent at or after ``since`` (Unix time)."""
        wait_for(lambda: len(read_lines(live)) >= self.sent, timeout_s, 0.1, 'every probe')
        pairs = [line_delay(line) for line in read_lines(live) if line.split(' - ')[-1]
                 .startswith('probe ')]
        return [(d, s) for d, s in pairs if since is None or s >= since]


def read_exactly(sock, size):
    data = b''
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError('the daemon closed the connection')
        data += chunk
    return data


def acked_probes(port, seconds, interval_s, app='app'):
    """Send acknowledged probes one at a time for ``seconds``; return each one's delay
    (send to acknowledgement: written and synced as its facility asks), in seconds."""
    delays = []
    stop = time.monotonic() + seconds
    first = True
    with socket.create_connection(('127.0.0.1', port), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while first or time.monotonic() < stop:
            first = False
            began = time.monotonic()
            sock.sendall(encode_message(app, 'root', 1700000000, 0, 'probe',
                                        'probe %d' % len(delays), flags=FLAG_ACK))
            size, _ = HEADER.unpack(read_exactly(sock, HEADER.size))
            read_exactly(sock, size)
            delays.append(time.monotonic() - began)
            time.sleep(interval_s)
    return delays
