"""``loghogd status``: what the running daemon last published, for a person or a script.

Finds the run directory from loghogd.conf (or ``--run-dir``), reads ``status.json`` and
prints a table (``--json``: the snapshot itself; ``--brief``: one line, for the init
script).  Exit status as LSB ``status`` wants it: 0 running, 3 not running (no snapshot,
its PID has gone, or it is stale: the daemon stopped publishing), 4 unknown (the
configuration or the snapshot cannot be read).

Rendering is pure (``render_table``, ``render_brief``: snapshot and ``now`` in, text out).
"""

import argparse
import json
import os
import sys
import time

from .config import SECTIONS, load_config
from .daemon import is_loghogd_alive
from .errors import ConfigError
from .inifile import IniFile
from .status import SNAPSHOT_NAME

# LSB init-script status codes (not sysexits: `status` answers a question, it does no work).
STATUS_RUNNING = 0
STATUS_NOT_RUNNING = 3
STATUS_UNKNOWN = 4

DEFAULT_CONFIG = '/etc/loghogd/loghogd.conf'
# A snapshot older than this many intervals (plus a margin for a busy machine) means the
# daemon has stopped publishing: stopped (SIGSTOP), hung or gone.
STALE_INTERVALS = 3
STALE_MARGIN_S = 10.0


class NotRunning(Exception):
    """No daemon answers: the message says why (exit status 3)."""


class Unknown(Exception):
    """The status cannot be known: the message says why (exit status 4)."""


def build_parser():
    parser = argparse.ArgumentParser(
        prog='loghogd status', description="Show what the running loghogd last published "
        "(<rundir>/status.json): counters since start and over the last minute, rejections, "
        "connections, UDP drops, files and the process.  Exit status 0 running, 3 not running, "
        "4 unknown.")
    parser.add_argument('-c', '--config', default=DEFAULT_CONFIG, metavar='FILE',
                        help='loghogd.conf, to find [main] rundir (default: %(default)s)')
    parser.add_argument('--run-dir', dest='rundir', metavar='DIR',
                        help='the run directory (default: [main] rundir)')
    output = parser.add_mutually_exclusive_group()
    output.add_argument('--json', action='store_true', help='print the snapshot as JSON')
    output.add_argument('--brief', action='store_true', help='print one line (for init scripts)')
    return parser


def main(argv=None):
    """Run ``loghogd status``; return the exit status (0, 3 or 4; 2 for bad usage)."""
    args = build_parser().parse_args(argv)
    try:
        snapshot = read_status(find_rundir(args.config, args.rundir), time.time())
    except NotRunning as exc:
        print('loghogd is not running: %s' % exc, file=sys.stderr if args.json else sys.stdout)
        return STATUS_NOT_RUNNING
    except Unknown as exc:
        print('loghogd status: %s' % exc, file=sys.stderr)
        return STATUS_UNKNOWN
    if args.json:
        print(json.dumps(snapshot, indent=2, sort_keys=True))
    elif args.brief:
        print(render_brief(snapshot, time.time()))
    else:
        sys.stdout.write(render_table(snapshot, time.time()))
    return STATUS_RUNNING


def find_rundir(config_path, rundir=None):
    """The run directory: ``rundir`` if given, else [main] rundir of ``config_path``."""
    if rundir is not None:
        return os.path.abspath(rundir)
    if not os.path.exists(config_path):
        raise Unknown('%s: no such file (use --config FILE or --run-dir DIR)' % config_path)
    try:
        return load_config(config_path).main.rundir
    except ConfigError as exc:
        errors = exc.errors
    # Only [main] rundir matters here: a mistake elsewhere (an edit not yet loaded, a
    # pemfile only root may read) must not hide the running daemon from its group.
    ini = IniFile(os.path.abspath(config_path)).read()
    if ini.errors:   # unreadable, or a syntax error: nothing in it can be trusted
        raise Unknown('; '.join(errors))
    values, _ = ini.convert_section('main', {s.name: s for s in SECTIONS['main']})
    if 'rundir' not in values:
        raise Unknown('; '.join(errors))
    return os.path.join(os.path.dirname(ini.path), values['rundir'])


def read_status(rundir, now, is_alive=is_loghogd_alive):
    """Read and check ``<rundir>/status.json``; return the snapshot of a running daemon.

    Raises NotRunning (no file, PID gone, snapshot stale) or Unknown (unreadable).
    ``is_alive(pid)`` says whether that PID is a live loghogd.
    """
    path = os.path.join(rundir, SNAPSHOT_NAME)
    try:
        with open(path, encoding='utf-8') as stream:
            snapshot = json.load(stream)
    except FileNotFoundError:
        raise NotRunning('no status in %s (not started, or stopped cleanly)' % rundir) from None
    except PermissionError:
        raise Unknown('%s: permission denied (run as root or as a member of the daemon\'s '
                      'group)' % path) from None
    except (OSError, ValueError) as exc:
        raise Unknown('%s: cannot be read: %s' % (path, getattr(exc, 'strerror', None) or exc)) \
            from None
    try:
        pid, written_at = snapshot['daemon']['pid'], snapshot['written_at']
        interval_s = snapshot['interval_s']
    except (KeyError, TypeError):
        raise Unknown('%s: not a loghogd status snapshot' % path) from None
    age_s = now - written_at
    if not is_alive(pid):
        raise NotRunning('PID %d, which wrote %s %s, has gone (the file is stale)'
                         % (pid, path, describe_age(age_s)))
    if age_s > STALE_INTERVALS * interval_s + STALE_MARGIN_S:
        raise NotRunning('PID %d last wrote its status %s (every %gs until then): it is stopped '
                         'or hung' % (pid, describe_age(age_s), interval_s))
    return snapshot


# -- human units (pure) ------------------------------------------------------------------------

def human_size(n):
    """1023 -> '1023 B', 1536 -> '1.5 KiB', 3 * 2**30 -> '3.0 GiB'."""
    if n is None:
        return '-'
    if n < 1024:
        return '%d B' % n
    for unit in ('KiB', 'MiB', 'GiB', 'TiB'):
        n /= 1024.0
        if n < 1024 or unit == 'TiB':
            return '%.1f %s' % (n, unit)


def human_duration(seconds):
    """45 -> '45s', 125 -> '2m 5s', 7380 -> '2h 3m', 200000 -> '2d 7h'."""
    seconds = int(max(0, seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return '%dd %dh' % (days, hours)
    if hours:
        return '%dh %dm' % (hours, minutes)
    if minutes:
        return '%dm %ds' % (minutes, secs)
    return '%ds' % secs


def describe_age(age_s):
    return 'just now' if age_s < 1 else '%s ago' % human_duration(age_s)


def local_time(when):
    return '-' if when is None else time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(when))


def relative_time(when, now):
    """'3m 2s ago', 'in 5h 1m' or '-'."""
    if when is None:
        return '-'
    if when > now + 0.5:
        return 'in %s' % human_duration(when - now)
    return describe_age(now - when)


def window_label(window_s):
    """Column title for the last-minute figures: 'LAST MIN', or 'LAST 12s' while younger."""
    return 'LAST MIN' if window_s >= 59.5 else 'LAST %ds' % window_s


def window_phrase(window_s):
    return 'the last minute' if window_s >= 59.5 else 'the last %ds' % window_s


def cpu_time(seconds):
    return '%.1fs' % seconds if seconds < 60 else human_duration(seconds)


def count(n):
    return '{:,}'.format(n)


def rate(n):
    """Messages per second: '1,234', '12.5', '0.02', '0'."""
    if n >= 100:
        return '{:,.0f}'.format(n)
    if n >= 1:
        return '%.1f' % n
    return '%.2f' % n if n else '0'


def format_table(header, rows, left=1):
    """Align ``rows`` (lists of str) under ``header``: the first ``left`` columns to the left,
    the others (numbers) to the right, two spaces between columns.  Returns lines."""
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    lines = []
    for row in [header] + rows:
        cells = [cell.ljust(width) if i < left else cell.rjust(width)
                 for i, (cell, width) in enumerate(zip(row, widths))]
        lines.append('  '.join(cells).rstrip())
    return lines


# -- the table and the line (pure) -------------------------------------------------------------

# Event counters that mean lines lost or at risk, or work that failed (issue 14: the text
# showed none of them): key in status.json's "events", and what the text calls it.
LOSS_EVENTS = (
    ('write_errors', 'write errors'),
    ('sync_errors', 'fsync errors'),
    ('dropped_backlog', 'lines lost (backlog dropped)'),
    ('ack_connections_closed_on_loss', 'ack connections closed on loss'),
    ('rotation_errors', 'rotation errors'),
    ('prune_errors', 'backup delete errors'),
    ('udp_errors', 'UDP read errors'),
    ('connections_lost_at_accept', 'connections lost at accept'),
    ('internal_errors', 'internal errors'),
    ('sessions_untracked', 'sessions untracked (no duplicate suppression)'),
    ('sessions_evicted', 'sessions evicted'),
    ('rate_limited_datagrams', 'datagrams refused over rate_limit'),
    ('seal_errors', 'sealing errors'),
)


def losses(snapshot):
    """[(label, count)] for every loss/error counter, in LOSS_EVENTS order."""
    events = snapshot.get('events') or {}
    return [(label, events.get(key, 0)) for key, label in LOSS_EVENTS]

def render_brief(snapshot, now):
    """One line: 'PID 123, up 2h 3m: 52.1 msg/s, 0.0 rejected/s (last minute); 4 connections;
    UDP drops 0'."""
    totals, connections = snapshot['totals'], snapshot['connections']
    drops = snapshot['udp']['kernel_drops']
    return ('PID %d, up %s: %s msg/s, %s rejected/s over %s; %d connections; UDP kernel drops %s'
            % (snapshot['daemon']['pid'], human_duration(snapshot['daemon']['uptime_s']),
               rate(totals['accepted_per_s']), rate(totals['rejected_per_s']),
               window_phrase(snapshot['window_s']), sum(connections['open'].values()),
               '?' if drops is None else count(drops)) + _losses_brief(snapshot))


def _losses_brief(snapshot):
    counted = [(label, n) for label, n in losses(snapshot) if n]
    if not counted:
        return ''
    return '; LOSSES/ERRORS: ' + ', '.join('%s %s' % (label, count(n)) for label, n in counted)


def render_table(snapshot, now):
    """The whole human-readable status, sections separated by blank lines."""
    sections = [_head(snapshot, now), _losses(snapshot), _accepted(snapshot), _rejected(snapshot),
                _syslog(snapshot), _connections(snapshot), _files(snapshot, now),
                _seals(snapshot, now), _tasks(snapshot, now)]
    return '\n\n'.join('\n'.join(lines) for lines in sections if lines) + '\n'


def _head(snapshot, now):
    daemon, config, process = snapshot['daemon'], snapshot['config'], snapshot['process']
    last = config['last_reload']
    if last is None:
        reload_text = 'none since the start'
    else:
        reload_text = '%s (%s failed); the last one, %s, %s' % (
            count(config['reloads'] + config['reloads_failed']), count(config['reloads_failed']),
            local_time(last['at']),
            'succeeded' if last['ok'] else 'FAILED: the facilities loaded before are still used')
    fds = '-' if process.get('open_fds') is None else count(process['open_fds'])
    return [
        'loghogd %s running as PID %d, up %s (since %s); status written %s'
        % (daemon['version'], daemon['pid'], human_duration(daemon['uptime_s']),
           local_time(daemon['started_at']), describe_age(now - snapshot['written_at'])),
        'config      %s' % (config['file'] or '(built-in defaults)'),
        'facilities  %s: %d facilities, loaded %s'
        % (config['facilities_file'], config['facilities'], local_time(config['loaded_at'])),
        'reloads     %s' % reload_text,
        'process     RSS %s, %s open descriptors (limit %s), CPU %s'
        % (human_size(process.get('rss_bytes')), fds, count(process['max_fds']),
           cpu_time(process.get('cpu_s') or 0.0)),
    ]


def _losses(snapshot):
    """Loss and error counters since the start: one line when all are 0, else a block
    that starts with a capitalised warning, the non-zero ones first."""
    counted = losses(snapshot)
    if not any(n for _, n in counted):
        return ['losses      none since the start (writes, fsyncs, rotations, reads, backlog)']
    rows = [['  ' + label, count(n)] for label, n in counted if n]
    rows += [['  ' + label, '0'] for label, n in counted if not n]
    return (['LOSSES/ERRORS since the start (see the daemon\'s log for which files):']
            + format_table(['  EVENT', 'COUNT'], rows))


def _accepted(snapshot):
    totals = snapshot['totals']
    window = window_label(snapshot['window_s'])
    header = ['APP', 'FACILITY', 'ACCEPTED', 'BYTES', window, 'BYTES', 'MSG/S']
    per_s = lambda n: rate(n / snapshot['window_s']) if snapshot['window_s'] else '0.0'
    rows = [[r['app'], r['facility'], count(r['messages']), human_size(r['bytes']),
             count(r['messages_last_minute']), human_size(r['bytes_last_minute']),
             per_s(r['messages_last_minute'])] for r in snapshot['accepted']]
    rows.append(['total', '', count(totals['accepted']), human_size(totals['accepted_bytes']),
                 count(totals['accepted_last_minute']),
                 human_size(totals['accepted_bytes_last_minute']), rate(totals['accepted_per_s'])])
    return format_table(header, rows, left=2)


def _rejected(snapshot):
    if not snapshot['rejected']:
        return ['rejected    none']
    rows = [[r['reason'], count(r['messages']), count(r['messages_last_minute'])]
            for r in snapshot['rejected']]
    lines = format_table(['REASON', 'REJECTED', window_label(snapshot['window_s'])], rows)
    peers = [[p['peer'], count(p['messages'])] for p in snapshot['rejected_by_peer']]
    if peers:
        lines += [''] + format_table(['PEER', 'REJECTED'], peers)
    clients = [[c['client'], count(c['messages'])] for c in snapshot.get('refused_clients', ())]
    if clients:   # allowed_clients refusals by certificate name (issue 19)
        lines += [''] + format_table(['CLIENT CERTIFICATE', 'REFUSED'], clients)
    return lines


def _syslog(snapshot):
    """Syslog received per listener (issue 16); nothing without syslog listeners."""
    events = snapshot.get('events', {})
    listeners = sorted((name[len('syslog_messages_'):], value) for name, value in events.items()
                       if name.startswith('syslog_messages_'))
    if not listeners:
        return []
    return ['syslog      %s received; %s cut at max_message_size, %s with bytes that were '
            'not UTF-8 replaced' % (', '.join('%s %s' % (name, count(value))
                                              for name, value in listeners),
                                    count(events.get('syslog_cut', 0)),
                                    count(events.get('syslog_replaced_utf8', 0)))]


def _connections(snapshot):
    connections, udp = snapshot['connections'], snapshot['udp']
    window = window_phrase(snapshot['window_s'])
    rows = [[kind, count(connections['open'][kind]), count(connections['accepted'][kind]),
             count(connections['accepted_last_minute'][kind])] for kind in connections['open']]
    lines = format_table(['TRANSPORT', 'OPEN', 'ACCEPTED', window_label(snapshot['window_s'])],
                         rows)
    if not connections['accepting']:
        lines.append('not accepting new connections now (max_connections or out of descriptors)')
    lines.append('TLS handshakes failed: %s' % count(connections['tls_handshake_failures']))
    if udp['sockets'] is None:
        lines.append('UDP datagrams read: %s (%s in %s); kernel drops unknown '
                     '(/proc/net/udp unreadable)' % (count(udp['datagrams']),
                                                     count(udp['datagrams_last_minute']), window))
    elif udp['sockets']:
        lines += [''] + _udp_sockets_table(udp['sockets'])
        lines.append('UDP datagrams read: %s (%s in %s); kernel drops in all: %s'
                     % (count(udp['datagrams']), count(udp['datagrams_last_minute']), window,
                        count(udp['kernel_drops'])))
    return lines


def _udp_sockets_table(sockets):
    """One row per UDP socket; with receivers, which one reads it (each has its own
    socket of every address, issue 18)."""
    if not any('receiver' in s for s in sockets):
        return format_table(['UDP SOCKET', 'QUEUED', 'KERNEL DROPS'],
                            [[s['address'], human_size(s['queue_bytes']), count(s['drops'])]
                             for s in sockets])
    return format_table(['UDP SOCKET', 'RECEIVER', 'QUEUED', 'KERNEL DROPS'],
                        [[s['address'], str(s.get('receiver', 'main')),
                          human_size(s['queue_bytes']), count(s['drops'])] for s in sockets])


def _files(snapshot, now):
    if not snapshot['files']:
        return ['files       none open yet']
    tracked = snapshot['rotation_tracked']
    header = ['FILE', 'SIZE', 'LAST WRITE', 'ROTATE', 'KEEP']
    if tracked:
        header += ['LAST ROTATION', 'NEXT ROTATION', 'BACKUPS']
    rows = []
    for f in snapshot['files']:
        row = [f['path'] + (' (FAILING)' if f['failing'] else ''), human_size(f['size']),
               relative_time(f['last_write'], now), f['rotate'], str(f['backup_count'])]
        if tracked:
            backups = f.get('backups')
            row += [relative_time(f.get('last_rotation'), now),
                    relative_time(f.get('next_rotation'), now),
                    '-' if backups is None else str(len(backups) if isinstance(backups, list)
                                                    else backups)]
        rows.append(row)
    lines = format_table(header, rows)
    if not tracked:
        lines.append('(last and next rotation are not tracked by this version of loghogd)')
    return lines


def _seals(snapshot, now):
    """The latest seal of each sealed file: what an operator notes off the machine to
    anchor it (loghogd verify --anchor EPOCH:CHAIN)."""
    seals = (snapshot['tasks'].get('sealing') or {}).get('seals')
    if not seals:
        return []
    rows = [[s['path'], '-' if s['epoch'] is None else str(s['epoch']),
             relative_time(s['time'], now), '-' if s['lines'] is None else count(s['lines']),
             s['chain'] or '-'] for s in seals]
    return format_table(['SEALED FILE', 'EPOCH', 'LAST SEAL', 'LINES', 'CHAIN'], rows)


def _tasks(snapshot, now):
    """What other loop tasks report (rotation, compressor): 'name  key value, ...'."""
    lines = []
    for name, status in sorted(snapshot['tasks'].items()):
        if status:
            lines.append('%-11s %s' % (name, ', '.join(
                '%s %s' % (key.replace('_', ' '), _task_value(key, value, now))
                for key, value in status.items() if not isinstance(value, list))))
    return lines


def _task_value(key, value, now):
    if value is None:
        return '-'
    if isinstance(value, (int, float)) and not isinstance(value, bool) and (
            'rotation' in key or key.endswith('_at')):
        return relative_time(value, now)   # a point in time
    if isinstance(value, int) and not isinstance(value, bool):
        return count(value)
    return str(value)
