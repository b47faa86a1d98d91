"""The operator's view of a running loghogd, daemon side: snapshots and their publishing.

Every ``[stats] interval`` seconds the loop builds a snapshot (a JSON-ready dict: counters
since start and over the last minute, connections, UDP kernel drops, files, the process)
and writes it atomically to ``<rundir>/status.json`` (mode 0640: root and the daemon's
group), and, with ``[stats] prometheus_file``, the same figures in Prometheus text format.
``loghogd status`` (status_command.py) reads the snapshot; nothing here is on the
per-message path.

``build_snapshot`` is pure (values in, dict out); reading /proc and writing files are the
thin shell around it (``read_process``, ``read_udp_sockets``, and ``files.write_atomically``).
"""

import errno
import json
import logging
import os
import resource

from . import __version__, prometheus
from .files import format_address, write_atomically
from .stats import RecentTotals

log = logging.getLogger('loghogd.status')

SNAPSHOT_NAME = 'status.json'
SNAPSHOT_FORMAT = 1
# The snapshot names applications, peers and file paths: root and the daemon's group only.
SNAPSHOT_MODE = 0o640
# node_exporter runs as its own user and must read the Prometheus file; it holds only
# counters, names of applications and paths of their files.
PROMETHEUS_MODE = 0o644
# The "last minute" figures: counters are sampled every RATE_STEP_S seconds, so the
# window really covers between RATE_WINDOW_S and RATE_WINDOW_S + RATE_STEP_S seconds.
RATE_WINDOW_S = 60.0
RATE_STEP_S = 5.0
# Peers shown in the top list of rejected senders.
TOP_PEERS = 10
# Rotation figures a LogFile may carry (the rotation code sets them); shown where present.
ROTATION_FIELDS = ('last_rotation', 'next_rotation', 'backups')
PROC_NET_UDP = ('/proc/net/udp', '/proc/net/udp6')


# -- the snapshot (pure) ----------------------------------------------------------------------

def build_snapshot(server, recent, now, process, udp_sockets, interval_s):
    """Return the status of ``server`` at ``now`` as a JSON-ready dict.

    ``recent`` is the RecentTotals for the last-minute figures; ``process`` what
    ``read_process`` returned; ``udp_sockets`` what ``read_udp_sockets`` returned (None
    when /proc could not be read).  Times are Unix seconds; sizes are bytes.
    Reads the server's attributes; changes nothing.
    """
    counters = server.counters
    window_s, gained = recent.gained(now)
    per_s = (lambda n: round(n / window_s, 3) if window_s > 0 else 0.0)
    accepted_total = sum(counters.accepted.values())
    accepted_recent = sum(gained['accepted'].values())
    rejected_recent = sum(gained['rejected'].values())
    return {
        'format': SNAPSHOT_FORMAT,
        'written_at': _time(now),
        'interval_s': interval_s,
        'window_s': round(window_s, 3),
        'daemon': {'pid': process['pid'], 'version': __version__,
                   'started_at': _time(server.started_at),
                   'uptime_s': round(max(0.0, now - server.started_at), 3)},
        'config': _config_part(server),
        'process': process,
        'totals': {
            'accepted': accepted_total,
            'accepted_bytes': sum(counters.accepted_bytes.values()),
            'rejected': sum(counters.rejected.values()),
            'accepted_last_minute': accepted_recent,
            'accepted_bytes_last_minute': sum(gained['accepted_bytes'].values()),
            'rejected_last_minute': rejected_recent,
            'accepted_per_s': per_s(accepted_recent),
            'rejected_per_s': per_s(rejected_recent),
        },
        'accepted': _accepted_part(counters, gained),
        'rejected': [{'reason': reason, 'messages': count,
                      'messages_last_minute': gained['rejected'].get(reason, 0)}
                     for reason, count in sorted(counters.rejected.items())],
        'rejected_by_peer': [{'peer': peer, 'messages': count}
                             for peer, count in counters.rejected_by_peer.most_common(TOP_PEERS)],
        'refused_clients': [{'client': name, 'messages': count}
                            for name, count in counters.refused_clients.most_common(TOP_PEERS)],
        'connections': _connections_part(server, gained),
        'udp': _udp_part(counters, gained, udp_sockets),
        'files': [_file_entry(log_file) for log_file in
                  sorted(server.writer.files.values(), key=lambda f: f.path)],
        'rotation_tracked': any(hasattr(f, ROTATION_FIELDS[0])
                                for f in server.writer.files.values()),
        'tasks': _tasks_part(server, now),
        'events': dict(sorted(counters.events.items())),
    }


def _time(value):
    return None if value is None else round(value, 3)


def _config_part(server):
    counters = server.counters
    last = server.last_reload
    return {
        'file': server.config.path,
        'facilities_file': server.config.main.facilities_config,
        'facilities': len(server.table),
        'loaded_at': _time(server.loaded_at),
        'last_reload': None if last is None else {'at': _time(last[0]), 'ok': last[1]},
        'reloads': counters.events.get('reloads', 0),
        'reloads_failed': counters.events.get('reloads_failed', 0),
    }


def _accepted_part(counters, gained):
    rows = []
    for (app, facility), count in sorted(counters.accepted.items()):
        rows.append({'app': app, 'facility': facility, 'messages': count,
                     'bytes': counters.accepted_bytes.get((app, facility), 0),
                     'messages_last_minute': gained['accepted'].get((app, facility), 0),
                     'bytes_last_minute': gained['accepted_bytes'].get((app, facility), 0)})
    return rows


def _connections_part(server, gained):
    receivers = server.receivers     # receiver processes (issue 18), or None
    transports = sorted({listener.kind for listener in server.listeners}
                        | set(server.counters.connections_accepted))
    open_now = dict.fromkeys(transports, 0)
    for connection in server.connections:
        open_now[connection.kind] = open_now.get(connection.kind, 0) + 1
    if receivers is not None:
        for kind, count in receivers.open_connections().items():
            open_now[kind] = open_now.get(kind, 0) + count
    return {
        'open': open_now,
        'accepted': {kind: server.counters.connections_accepted.get(kind, 0) for kind in open_now},
        'accepted_last_minute': {kind: gained['connections_accepted'].get(kind, 0)
                                 for kind in open_now},
        'tls_handshake_failures': server.counters.events.get('tls_handshakes_failed', 0),
        'accepting': server.can_accept(),
    }


def _udp_part(counters, gained, udp_sockets):
    return {
        'datagrams': counters.events.get('udp_datagrams', 0),
        'datagrams_last_minute': gained['events'].get('udp_datagrams', 0),
        'kernel_drops': None if udp_sockets is None else sum(s['drops'] for s in udp_sockets),
        'sockets': udp_sockets,
    }


def _file_entry(log_file):
    facility = log_file.facility
    entry = {
        'path': log_file.path,
        'app': facility.app,
        'facility': facility.name,
        'size': log_file.size,
        'last_write': _time(log_file.last_write),
        'rotate': getattr(facility.rotate, 'text', str(facility.rotate)),
        'backup_count': facility.backup_count,
        'failing': log_file.failing,
    }
    for name in ROTATION_FIELDS:
        if hasattr(log_file, name):
            value = getattr(log_file, name)
            entry[name] = _time(value) if isinstance(value, float) else value
    return entry


def _tasks_part(server, now):
    """Tasks that offer ``status(now)`` (compressor queue, rotation, ...) report under their name."""
    result = {}
    for task in server.tasks:
        describe = getattr(task, 'status', None)
        if callable(describe):
            result[getattr(task, 'name', type(task).__name__)] = describe(now)
    return result


# -- reading /proc (the shell) ----------------------------------------------------------------

def read_process(proc='/proc/self'):
    """The daemon's pid, resident memory, open descriptors and their limit, CPU seconds."""
    result = {'pid': os.getpid(), 'rss_bytes': None, 'open_fds': None,
              'max_fds': resource.getrlimit(resource.RLIMIT_NOFILE)[0]}
    times = os.times()
    result['cpu_s'] = round(times.user + times.system, 2)
    try:
        with open(os.path.join(proc, 'statm'), 'rb') as stream:
            result['rss_bytes'] = int(stream.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
        # listdir's own descriptor is in the list while it reads.
        result['open_fds'] = len(os.listdir(os.path.join(proc, 'fd'))) - 1
    except (OSError, ValueError, IndexError):
        pass
    return result


def parse_proc_net_udp(text):
    """Parse /proc/net/udp or udp6: {inode: (receive queue bytes, drops)}.

    Columns: sl local rem st tx_queue:rx_queue tr:tm retrnsmt uid timeout inode ref
    pointer drops.  Lines that do not parse are skipped.
    """
    result = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 13:
            continue
        try:
            queue = int(fields[4].split(':')[1], 16)
            result[int(fields[9])] = (queue, int(fields[12]))
        except (ValueError, IndexError):
            continue
    return result


def read_udp_sockets(sockets, paths=PROC_NET_UDP, readers=None):
    """Kernel figures of the daemon's own UDP ``sockets``: [{address, queue_bytes, drops}].

    The sockets are matched to /proc/net/udp{,6} lines by inode (fstat of the socket
    itself: cheaper than walking /proc/self/fd, which holds every connection).
    ``readers``: {socket: slot of the receiver that reads it} ([server] workers > 1:
    each address has one socket per receiver, issue 18); their entries say 'receiver'.
    Returns None when /proc/net/udp cannot be read.
    """
    table = {}
    readable = False
    for path in paths:
        try:
            with open(path, encoding='ascii', errors='replace') as stream:
                table.update(parse_proc_net_udp(stream.read()))
            readable = True
        except OSError:
            continue
    if not readable:
        return None
    result = []
    for sock in sockets:
        try:
            inode = os.fstat(sock.fileno()).st_ino
            name = sock.getsockname()
        except OSError:
            continue   # closed (at shutdown)
        if not isinstance(name, tuple):
            continue   # the [syslog] unix socket: a path, not in /proc/net/udp
        host, port = name[:2]
        queue, drops = table.get(inode, (0, 0))
        entry = {'address': format_address(host, port), 'queue_bytes': queue, 'drops': drops}
        if readers is not None and sock in readers:
            entry['receiver'] = readers[sock]
        result.append(entry)
    return result


# -- the loop task ----------------------------------------------------------------------------

class StatusPublisher:
    """A loop task that publishes the snapshot every ``interval_s`` seconds.

    ``tick(now)`` samples the counters for the last-minute figures (every RATE_STEP_S)
    and, when due, writes ``<rundir>/status.json`` and ``prometheus_file`` (if not
    empty).  A file that cannot be written is logged once when it starts failing and
    once when it works again; the daemon carries on.  ``close()`` (at a clean stop)
    writes the Prometheus file a last time and removes status.json: a stopped daemon
    has no status.
    """

    name = 'status'

    def __init__(self, server, rundir, interval_s, prometheus_file=''):
        self.server = server
        self.path = os.path.join(rundir, SNAPSHOT_NAME)
        self.interval_s = interval_s
        self.prometheus_file = prometheus_file
        self.recent = RecentTotals(server.counters, RATE_WINDOW_S, RATE_STEP_S)
        self._next_publish = 0.0
        self._failing = set()

    def next_deadline(self):
        return min(self._next_publish, self.recent.next_deadline())

    def tick(self, now):
        if now >= self.recent.next_deadline():
            self.recent.tick(now)
        if now >= self._next_publish:
            self._next_publish = now + self.interval_s
            self.publish(now)

    def snapshot(self, now):
        """Build the snapshot (reads /proc: a few hundred microseconds)."""
        sockets = [listener.sock for listener in self.server.datagram_listeners]
        readers = None
        if self.server.receivers is not None:   # every receiver's own sockets
            readers = dict(self.server.receivers.udp_sockets())
            sockets += list(readers)
        udp = read_udp_sockets(sockets, readers=readers)
        return build_snapshot(self.server, self.recent, now, read_process(), udp,
                              self.interval_s)

    def publish(self, now):
        snapshot = self.snapshot(now)
        self._write(self.path, json.dumps(snapshot, separators=(',', ':')).encode('utf-8'),
                    SNAPSHOT_MODE)
        if self.prometheus_file:
            self._write(self.prometheus_file, prometheus.render(snapshot).encode('utf-8'),
                        PROMETHEUS_MODE)

    def _write(self, path, data, mode):
        try:
            write_atomically(path, data, mode)
        except OSError as exc:
            if path not in self._failing:
                self._failing.add(path)
                log.error('cannot write %s: %s (will keep trying every %gs)',
                          path, exc.strerror or exc, self.interval_s)
            return
        if path in self._failing:
            self._failing.discard(path)
            log.warning('writing %s again', path)

    def close(self):
        if self.prometheus_file:
            snapshot = self.snapshot(self.server.clock())
            self._write(self.prometheus_file, prometheus.render(snapshot).encode('utf-8'),
                        PROMETHEUS_MODE)
        try:
            os.unlink(self.path)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                log.error('cannot remove %s: %s', self.path, exc.strerror or exc)
