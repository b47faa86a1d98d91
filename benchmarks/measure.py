"""What the runner measures: a daemon's CPU time and memory, and its output as it lands.

- CPU: utime + stime from ``/proc/PID/stat`` (they include every thread, live or ended)
  for the daemon and any descendants, in seconds.  Resolution is one clock tick (10 ms).
- Peak RSS: ``VmHWM`` from ``/proc/PID/status``, which is the high-water mark since the
  process started; the runner starts a fresh daemon for every measured run.
- The output: ``OutputWatcher`` follows a file, counts complete lines and notes when the
  last one appeared; in latency mode it also reads each line's ``t=`` send stamp and
  records how long after that the line was seen on disk.
"""

import os
import time

_TICKS_PER_S = os.sysconf('SC_CLK_TCK')


def _children(pid):
    """Return the PIDs of ``pid``'s descendants (best effort: processes come and go)."""
    parents = {}
    for name in os.listdir('/proc'):
        if name.isdigit():
            try:
                with open('/proc/%s/stat' % name, 'rb') as handle:
                    fields = handle.read().rsplit(b')', 1)[1].split()
                parents.setdefault(int(fields[1]), []).append(int(name))
            except (OSError, IndexError, ValueError):
                continue
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def _cpu_s(pid):
    with open('/proc/%d/stat' % pid, 'rb') as handle:
        fields = handle.read().rsplit(b')', 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


def _status_kb(pid, key):
    with open('/proc/%d/status' % pid, 'rb') as handle:
        for line in handle:
            if line.startswith(key):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    """CPU seconds (user + system) used so far by ``pid`` and its descendants."""
    total = 0.0
    for each in [pid] + _children(pid):
        try:
            total += _cpu_s(each)
        except (OSError, ValueError, IndexError):
            pass
    return total


def peak_rss_mb(pid):
    """Peak resident memory (VmHWM) of ``pid`` plus its descendants', in MiB."""
    total = 0
    for each in [pid] + _children(pid):
        try:
            total += _status_kb(each, b'VmHWM:')
        except OSError:
            pass
    return total / 1024


def rss_mb(pid):
    """Current resident memory (VmRSS) of ``pid`` plus its descendants', in MiB."""
    total = 0
    for each in [pid] + _children(pid):
        try:
            total += _status_kb(each, b'VmRSS:')
        except OSError:
            pass
    return total / 1024


def open_fds(pid):
    """How many descriptors ``pid`` and its descendants (loghogd's receivers) have open."""
    total = 0
    for each in [pid] + _children(pid):
        try:
            total += len(os.listdir('/proc/%d/fd' % each))
        except OSError:
            pass
    return total


def percentile(values, fraction):
    """The ``fraction`` (0..1) percentile of ``values`` by nearest rank; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(fraction * len(ordered) + 0.5)) - 1))
    return ordered[rank]


class OutputWatcher:
    """Follow the file at ``path`` (which may not exist yet) and count its lines.

    Call ``poll()`` often; it reads what was appended since the last call.  ``lines`` is
    the number of complete lines so far and ``last_line_at`` the ``time.monotonic()`` of
    the poll that saw the latest one.  With ``latency=True`` every new line's ``t=``
    stamp (wall-clock µs) is compared with the wall clock when it was seen;
    ``latencies_ms`` holds the results.
    """

    READ_BYTES = 4 * 1024 * 1024

    def __init__(self, path, latency=False):
        self.path = path
        self.latency = latency
        self.lines = 0
        self.last_line_at = None
        self.latencies_ms = []
        self._handle = None
        self._partial = b''

    def poll(self):
        """Read what is new; return the number of new complete lines."""
        if self._handle is None:
            try:
                self._handle = open(self.path, 'rb')
            except FileNotFoundError:
                return 0
        new = 0
        while True:
            data = self._handle.read(self.READ_BYTES)
            if not data:
                break
            new += data.count(b'\n')
            if self.latency:
                self._stamp(data)
        if new:
            self.lines += new
            self.last_line_at = time.monotonic()
        return new

    def _stamp(self, data):
        seen_us = time.time() * 1e6
        data = self._partial + data
        cut = data.rfind(b'\n') + 1
        self._partial = data[cut:]
        for line in data[:cut].splitlines():
            at = line.find(b' t=')
            if at >= 0:
                try:
                    sent_us = int(line[at + 3:at + 19])
                except ValueError:
                    continue
                if sent_us:
                    self.latencies_ms.append((seen_us - sent_us) / 1000)

    def wait(self, expected, senders_done, timeout_s, quiet_s, poll_s=0.0005):
        """Poll until ``expected`` lines are there, or output stops growing.

        ``senders_done()`` says whether every sender has finished; once it has, output
        that does not grow for ``quiet_s`` seconds is taken as complete (lost messages
        never arrive).  Gives up after ``timeout_s``.  Returns True when all arrived.
        """
        deadline = time.monotonic() + timeout_s
        quiet_since = None
        while time.monotonic() < deadline:
            if self.poll():
                quiet_since = None
            if self.lines >= expected:
                return True
            if senders_done():
                now = time.monotonic()
                quiet_since = quiet_since or now
                if now - quiet_since >= quiet_s:
                    return False
            time.sleep(poll_s)
        return False

    def close(self):
        if self._handle is not None:
            self._handle.close()
            self._handle = None
