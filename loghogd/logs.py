"""``loghogd logs``: print what the daemon wrote, across rotated and compressed backups.

    loghogd logs [-c FILE] APP[:MODULE] [--host GLOB] [-n N] [-f] [--since T] [--until T]
                 [--level LEVEL] [--grep REGEX] [--where KEY=VALUE ...] [-o text|json|raw]

The order of work: find the facility (facilities.conf, when this user can read it) and its
folder (loghogd.conf), read its records in time order (logfiles.py: backups outside
--since/--until skipped by their names, compressed ones decompressed on the fly, the hosts'
files merged), filter them here, print them; with -f, then follow the live files across
rotations.  ``-o raw`` prints exactly the bytes the file holds.
"""

import argparse
import datetime
import fnmatch
import json
import os
import re
import select
import sys
import time
from collections import deque

from .errors import EX_CONFIG, EX_OK, EX_USAGE, ConfigError
from .facilities import module_path
from .lines import CONTINUATION, escape_controls, format_body
from .logfiles import (EX_NOINPUT, LogFiles, LogsError, Record, permission_error, history,
                       record_key, start_following)

__all__ = ['main', 'parse_time', 'Selection', 'render', 'follow', 'LogFiles', 'history',
           'EX_NOINPUT']

DEFAULT_CONFIG = '/etc/loghogd/loghogd.conf'
FOLLOW_INTERVAL_S = 0.2
FULL_CHECK_S = 2.0
_LEVELS = {'DEBUG': 10, 'INFO': 20, 'WARN': 30, 'WARNING': 30, 'ERROR': 40, 'CRITICAL': 50,
           'FATAL': 50}
# A text line's level: the first word of the message when it is a level name (the
# formatter '%(levelname)s - %(message)s' and most others put it first).
_TEXT_LEVEL_RE = re.compile(rb'^.{26} - [^ ]* - \W*(DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL|FATAL)\b')
# A --grep pattern made only of these characters is a literal that a JSON line holds as
# it is (never escaped), so that whole chunks without it are skipped unread.
_LITERAL_RE = re.compile(r'[A-Za-z0-9 _\-:/,=@#%!&;<>~`\']+')


# -- times -----------------------------------------------------------------------------------

_RELATIVE_RE = re.compile(r'^([+-])\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)$|'
                          r'^(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)\s+ago$')
_UNITS_S = {'s': 1, 'sec': 1, 'm': 60, 'min': 60, 'h': 3600, 'd': 86400, 'w': 604800}


def parse_time(text, now):
    """A --since/--until value as a naive local datetime; ``now`` is a naive local datetime.

    Takes ISO times ('2026-12-05', '2026-12-05 03:00', '2026-12-05T03:00:00.5'), relative
    ones as journalctl does ('-1h', '-30min', '+2d', '2h ago') and the words 'now',
    'today', 'yesterday', 'tomorrow' (midnight).  Raises ValueError with a sentence.
    """
    value = text.strip().lower()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    words = {'now': now, 'today': midnight, 'yesterday': midnight - datetime.timedelta(days=1),
             'tomorrow': midnight + datetime.timedelta(days=1)}
    if value in words:
        return words[value]
    match = _RELATIVE_RE.match(value)
    if match:
        sign, number, unit = match.group(1, 2, 3) if match.group(1) else ('-',) + match.group(4, 5)
        try:
            delta = datetime.timedelta(seconds=float(number) * _UNITS_S[unit])
            return now - delta if sign == '-' else now + delta
        except OverflowError:
            raise ValueError('%r is out of range: a time between the years 1 and 9999 is '
                             'needed' % text) from None
    try:
        moment = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError('%r is not a time: use an ISO time (2026-12-05 03:00), a relative one '
                         '(-1h, -30min, 2d ago) or today, yesterday, now' % text) from None
    if moment.tzinfo is not None:
        moment = moment.astimezone().replace(tzinfo=None)
    return moment


def time_key(moment):
    """The sortable bytes a record's time is compared as: 'YYYY-MM-DD HH:MM:SS.ffffff'
    (the year always four digits: strftime's %Y does not pad years before 1000)."""
    return ('%04d-%02d-%02d %02d:%02d:%02d.%06d' % (
        moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second,
        moment.microsecond)).encode()


# -- filters and output ----------------------------------------------------------------------

class Selection:
    """The record filters of the command line.  ``accepts(record)`` decides."""

    def __init__(self, since=None, until=None, level=None, grep=None, wheres=(), host=None):
        self.since = time_key(since) if since else None
        self.until = time_key(until) if until else None
        self.level = level
        self.grep = re.compile(grep.encode(), re.MULTILINE) if grep else None
        self.wheres = [where.split('=', 1) for where in wheres]
        self.host = host

    def chunk_filter(self):
        """A cheap test on a whole chunk (None: none): False when no record in it can match
        --grep.  Valid for text lines always, for JSON lines when the pattern is a literal
        that JSON does not escape."""
        if self.grep is None:
            return None
        pattern = self.grep.pattern.decode()
        search = self.grep.search
        if _LITERAL_RE.fullmatch(pattern):
            return lambda data, end: search(data, 0, end) is not None
        return lambda data, end: search(data, 0, end) is not None or data[:1] == b'{'

    def accepts(self, record):
        key = record.key
        if self.since is not None and key < self.since:
            return False
        if self.until is not None and key > self.until:
            return False
        if self.grep is not None and not self._grep(record):
            return False
        if self.level is not None and level_of(record) < self.level:
            return False
        if self.host is not None and not fnmatch.fnmatchcase(host_of(record), self.host):
            return False
        for key, value in self.wheres:
            if not record.is_json or not _field_matches(record.data, key, value):
                return False
        return True

    def _grep(self, record):
        if record.is_json:
            message = record.data.get('message')
            return isinstance(message, str) and self.grep.search(
                message.encode('utf-8', 'backslashreplace')) is not None
        return self.grep.search(record.raw) is not None


def level_of(record):
    """The record's level number; -1 when it has none."""
    if record.is_json:
        return _LEVELS.get(str(record.data.get('level', '')).upper(), -1)
    match = _TEXT_LEVEL_RE.match(record.raw)
    return _LEVELS[match.group(1).decode()] if match else -1


def host_of(record):
    if record.is_json:
        return str(record.data.get('host', ''))
    return record.raw[29:].split(b' - ', 1)[0].decode('utf-8', 'replace')


def _field_matches(data, key, value):
    found = data
    for part in ([key] if key in data else key.split('.')):
        if not isinstance(found, dict) or part not in found:
            return False
        found = found[part]
    if isinstance(found, str):
        return found == value
    return json.dumps(found) == value


def render(record, mode, app, module):
    """The bytes printed for ``record`` (no final newline) in output ``mode``."""
    if mode == 'raw':
        return record.raw
    if mode == 'json':
        if record.is_json:
            return record.raw
        lines = record.raw.decode('utf-8', 'replace').split('\n')
        head = lines[0]
        host, _, message = head[29:].partition(' - ')
        message = '\n'.join([message] + [line[len(CONTINUATION):] for line in lines[1:]])
        return json.dumps({'time': head[:10] + 'T' + head[11:26], 'host': host, 'app': app,
                           'module': module, 'message': message}).encode()
    if not record.is_json:
        return record.raw
    data = record.data
    if not data:   # a line that is not JSON (cut short by a crash): shown, escaped
        return escape_controls(record.raw.decode('utf-8', 'replace')).encode()
    # The sender's values are escaped as the daemon escapes a text line's (lines.py): a
    # JSON record can never print as two records, nor drive the reader's terminal.
    moment = escape_controls(str(data.get('time', '')))
    level = data.get('level')
    text = '%s %s - %s - %s%s' % (moment[:10], moment[11:26],
                                  escape_controls(str(data.get('host', ''))),
                                  '%s - ' % escape_controls(str(level)) if level else '',
                                  format_body(str(data.get('message', ''))))
    # A lone surrogate was escaped above; 'backslashreplace' is the last resort.
    return text.encode('utf-8', 'backslashreplace')


def follow(files, selection, write, is_reader_gone, sleep=time.sleep, stop=None,
           followers=None, clock=time.monotonic):
    """Print what is added to ``files``' live files until ``stop()`` is true or the reader
    of the output is gone; new hosts' files are picked up as they appear.  ``followers``
    are those ``history`` read the live files with (None: start at the files' ends).

    Each pass reads what was appended through the open files; the folder is listed, and
    each file looked at for a rotation, only when the folder changed (a rotation renames
    and creates: the folder's mtime moves) or did in the last FULL_CHECK_S, and every
    FULL_CHECK_S anyway: with 1,000 hosts' files, a pass was 1,000 stats and a listing
    every 0.2 s (attack finding A3-25)."""
    if followers is None:
        followers = {base: files.follower(base) for base in files.list()}
    folder_seen = _folder_mtime(files.folder)
    checked_at = clock()
    try:
        while not (stop and stop()):
            now = clock()
            folder_now = _folder_mtime(files.folder)
            # A change within the same timestamp tick as the last one leaves the mtime
            # as it was: a folder changed in the last FULL_CHECK_S is looked at each pass.
            look = (folder_now != folder_seen or now - checked_at >= FULL_CHECK_S
                    or folder_now is None
                    or time.time_ns() - folder_now < FULL_CHECK_S * 1e9)
            if look:
                folder_seen, checked_at = folder_now, now
                for base in files.list():
                    if base not in followers:
                        followers[base] = files.follower(base, False)
            for follower in followers.values():
                for raw in follower.poll(look):
                    record = Record(raw, record_key(raw))
                    if selection.accepts(record):
                        write(record)
            if is_reader_gone():
                return
            sleep(FOLLOW_INTERVAL_S)
    finally:
        for follower in followers.values():
            follower.close()


def _folder_mtime(folder):
    try:
        return os.stat(folder).st_mtime_ns
    except OSError:
        return None


def _reader_gone_check(stream):
    """A function telling whether the pipe ``stream`` writes to lost its reader (`| head`
    exited), so that -f stops even when no new line comes."""
    try:
        poller = select.poll()
        poller.register(stream.fileno(), 0)
    except (OSError, ValueError, AttributeError):
        return lambda: False
    return lambda: any(event & (select.POLLERR | select.POLLHUP)
                       for _, event in poller.poll(0))


# -- the command -----------------------------------------------------------------------------

def build_parser():
    parser = argparse.ArgumentParser(
        prog='loghogd logs', description='Print the lines of an application facility: its live '
        'file and its backups in time order, compressed ones decompressed on the fly.')
    parser.add_argument('-c', '--config', default=DEFAULT_CONFIG, metavar='FILE',
                        help='loghogd.conf (default: %s): where the logs are' % DEFAULT_CONFIG)
    parser.add_argument('target', metavar='APP[:MODULE]',
                        help='the application and the facility (default: its root facility)')
    parser.add_argument('--host', metavar='GLOB', help='only lines of hosts matching GLOB')
    parser.add_argument('-n', '--lines', type=int, metavar='N', help='only the last N records')
    parser.add_argument('-f', '--follow', action='store_true',
                        help='then wait for new lines, across rotations (Ctrl-C stops)')
    parser.add_argument('--since', metavar='TIME', help='from TIME: ISO, -1h, 2d ago, yesterday')
    parser.add_argument('--until', metavar='TIME', help='up to TIME (same forms)')
    parser.add_argument('--level', metavar='LEVEL', help='LEVEL and above (text lines: the '
                        'level word that starts the message; lines without one are left out)')
    parser.add_argument('--grep', metavar='REGEX', help='records matching REGEX (JSON lines: '
                        'their message)')
    parser.add_argument('--where', action='append', default=[], metavar='KEY=VALUE',
                        help='JSON facilities: records whose field KEY (a.b for nested) is VALUE')
    parser.add_argument('-o', '--output', choices=('text', 'json', 'raw'), default='text',
                        help='text (default), json (one JSON object per line, for jq) or raw '
                        '(the bytes of the file)')
    return parser


def main(argv, stdout=None, now=None, stop=None):
    """Run ``loghogd logs``; return the exit status (0, 64 usage, 66 no input or a file
    that could not be read through, 77 no permission, 78 config).  ``stdout`` (a binary stream), ``now`` and ``stop`` are for
    tests."""
    parser = build_parser()
    try:
        args = parser.parse_args(_join_time_values(argv))
    except SystemExit as exc:
        return EX_OK if exc.code == 0 else EX_USAGE
    out = stdout if stdout is not None else sys.stdout.buffer
    try:
        return run(args, out, now or datetime.datetime.now(), stop)
    except LogsError as exc:
        print('loghogd logs: %s' % exc, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python from complaining
        # when it flushes stdout at exit.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return EX_OK


def _join_time_values(argv):
    """``argv`` with ``--since -1h`` made ``--since=-1h``: argparse would take a value that
    starts with '-' for an option, and journalctl users write it that way."""
    joined = []
    args = iter(argv)
    for arg in args:
        if arg in ('--since', '--until'):
            value = next(args, None)
            joined.append(arg if value is None else '%s=%s' % (arg, value))
        else:
            joined.append(arg)
    return joined


def run(args, out, now, stop):
    app, _, module = args.target.partition(':')
    stem = '.'.join(module_path(module)) or 'root'
    logdir, facility = _locate(args.config, app, module or 'root')
    try:
        since = parse_time(args.since, now) if args.since else None
        until = parse_time(args.until, now) if args.until else None
    except ValueError as exc:
        raise LogsError(str(exc)) from None
    level = None
    if args.level:
        level = _LEVELS.get(args.level.upper())
        if level is None:
            raise LogsError('--level %s: use DEBUG, INFO, WARNING, ERROR or CRITICAL' % args.level)
    for where in args.where:
        if '=' not in where:
            raise LogsError('--where %s: use KEY=VALUE' % where)
    if args.where and facility is not None and facility.format != 'json':
        raise LogsError('--where needs a JSON facility: [%s] has format = %s (use --grep)'
                        % (facility.section, facility.format))
    if args.grep:
        try:
            re.compile(args.grep)
        except re.error as exc:
            raise LogsError('--grep %s: %s' % (args.grep, exc)) from None
    files = LogFiles(os.path.join(logdir, app), stem, args.host,
                     per_host=facility is None or facility.file_per_host)
    selection = Selection(since, until, level, args.grep, args.where, args.host)
    opened = []
    unreadable = []

    def warn(path, reason):
        unreadable.append(path)
        out.flush()   # what came before it is printed first
        print('loghogd logs: %s: %s' % (path, reason), file=sys.stderr, flush=True)

    def write(record):
        out.write(render(record, args.output, app, stem) + b'\n')

    followers = start_following(files) if args.follow else None
    try:
        records = (record for record in history(files, since, until, selection.chunk_filter(),
                                                opened, followers, warn)
                   if selection.accepts(record))
        if args.lines is not None:
            records = deque(records, maxlen=min(max(args.lines, 0), sys.maxsize))
        for record in records:
            write(record)
        out.flush()
        if args.follow:
            is_gone = _reader_gone_check(out)

            def write_now(record):
                write(record)
                out.flush()
            follow(files, selection, write_now, is_gone, stop=stop, followers=followers)
    finally:
        for follower in (followers or {}).values():
            follower.close()
    return EX_NOINPUT if unreadable else EX_OK


def _locate(config_path, app, module):
    """(logdir, the Facility or None when facilities.conf cannot be read) for ``app``."""
    from .config import load_config
    from .facilities import load_facilities
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise LogsError('%s' % exc, EX_CONFIG) from None
    except PermissionError:
        raise permission_error(config_path) from None
    facility = None
    try:
        table = load_facilities(config.main.facilities_config)
    except (ConfigError, OSError):
        table = None   # unreadable to this user (it holds secrets): files are found by name
    if table is not None:
        if app not in table.by_app:
            raise LogsError('no application %r in %s' % (app, config.main.facilities_config),
                            EX_NOINPUT)
        facility = table.by_app[app].get(module_path(module))
        if facility is None:
            raise LogsError('no facility [%s:%s] in %s: name a facility (its file stem)'
                            % (app, module, config.main.facilities_config), EX_NOINPUT)
    return config.main.logdir, facility

