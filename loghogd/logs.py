"""``loghogd logs``: read what the daemon wrote, across rotated and compressed backups.

    loghogd logs [-c FILE] APP[:MODULE] [--host GLOB] [-n N] [-f] [--since T] [--until T]
                 [--level LEVEL] [--grep REGEX] [--where KEY=VALUE ...] [-o text|json|raw]

The order of work: find the facility's files (its live file and its backups, named as
backups.py names them; with file_per_host one set per host), skip the backups whose period
lies outside --since/--until by their names alone, read the rest oldest first
(decompressing on the fly), merge the hosts' files by time, filter, print; with -f, then
follow the live files across rotations.  Everything is read as bytes: ``-o raw`` prints
exactly what the file holds.

A record is a line of a JSON facility, or a text line with its continuation lines
(lines.py).  Both know their receive time: the text line's first 26 characters, the JSON
line's ``time`` (written first, so it is read without decoding the line).
"""

import argparse
import bz2
import datetime
import fnmatch
import gzip
import heapq
import json
import lzma
import os
import queue
import re
import select
import sys
import threading
import time
from collections import deque

from .backups import COMPRESSED_SUFFIXES, parse_backup_name
from .errors import EX_CONFIG, EX_OK, EX_USAGE, ConfigError
from .facilities import module_path
from .lines import CONTINUATION

EX_NOINPUT = 66   # sysexits.h: an input file does not exist or cannot be read
EX_NOPERM = 77    # sysexits.h: permission denied
DEFAULT_CONFIG = '/etc/loghogd/loghogd.conf'
CHUNK_BYTES = 1 << 20
FOLLOW_INTERVAL_S = 0.2
# A backup's name gives the start of its period; the next one's, its end.  Lines are
# stamped when their batch was read and rotation happens after it: a minute of slack
# keeps a backup whose edge is near the window (it costs at most one more file read).
PERIOD_SLACK = datetime.timedelta(seconds=60)

_OPENERS = {'': open, '.xz': lzma.open, '.gz': gzip.open, '.bz2': bz2.open}
_CONTINUATION = CONTINUATION.encode()
_JSON_HEAD = b'{"time": "'
_LEVELS = {'DEBUG': 10, 'INFO': 20, 'WARN': 30, 'WARNING': 30, 'ERROR': 40, 'CRITICAL': 50,
           'FATAL': 50}
# A text line's level: the first word of the message when it is a level name (the
# formatter '%(levelname)s - %(message)s' and most others put it first).
_TEXT_LEVEL_RE = re.compile(rb'^.{26} - [^ ]* - \W*(DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL|FATAL)\b')
# A --grep pattern made only of these characters is a literal that a JSON line holds as
# it is (never escaped), so that whole chunks without it are skipped unread.
_LITERAL_RE = re.compile(r'[A-Za-z0-9 _\-:/,=@#%!&;<>~`\']+')


class LogsError(Exception):
    """Something the user must fix; ``exit_code`` says what kind (sysexits.h)."""

    def __init__(self, message, exit_code=EX_USAGE):
        super().__init__(message)
        self.exit_code = exit_code


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
        delta = datetime.timedelta(seconds=float(number) * _UNITS_S[unit])
        return now - delta if sign == '-' else now + delta
    try:
        moment = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError('%r is not a time: use an ISO time (2026-12-05 03:00), a relative one '
                         '(-1h, -30min, 2d ago) or today, yesterday, now' % text) from None
    if moment.tzinfo is not None:
        moment = moment.astimezone().replace(tzinfo=None)
    return moment


def time_key(moment):
    """The sortable bytes a record's time is compared as: 'YYYY-MM-DD HH:MM:SS.ffffff'."""
    return moment.strftime('%Y-%m-%d %H:%M:%S.%f').encode()


# -- records ---------------------------------------------------------------------------------

class Record:
    """One record: ``raw`` (its bytes, lines joined, no final newline) and ``key`` (its
    time as ``time_key`` bytes).  ``data`` (the JSON object) is decoded when needed."""

    __slots__ = ('raw', 'key', '_data')

    def __init__(self, raw, key):
        self.raw = raw
        self.key = key
        self._data = None

    @property
    def is_json(self):
        return self.raw[:1] == b'{'

    @property
    def data(self):
        if self._data is None:
            try:
                self._data = json.loads(self.raw)
            except ValueError:
                self._data = {}
        return self._data


def record_key(raw):
    if raw[:10] == _JSON_HEAD:
        return raw[10:20] + b' ' + raw[21:36]
    if raw[:1] == b'{':
        moment = str(json.loads(raw).get('time', ''))
        return (moment[:10] + ' ' + moment[11:26]).encode()
    return raw[:26]


def split_records(data, final):
    """(records' raw bytes, the unfinished rest) of ``data``: whole lines, a text line
    with its continuation lines.  With ``final`` the rest is a record too."""
    lines = data.split(b'\n')
    rest = lines.pop()
    records = []
    for line in lines:
        if line[:4] == _CONTINUATION and records:
            records[-1] += b'\n' + line
        elif line:
            records.append(line)
    if final and rest:
        records.append(rest)
        rest = b''
    return records, rest


def read_records(path, chunk_filter=None):
    """The records of one file (compressed or not), oldest first.  ``chunk_filter(data,
    end)`` False skips a chunk's records unsplit (--grep on a chunk without a match: most of a
    search's time is then decompression).  A file deleted meanwhile (a backup replaced by
    its compressed form) raises FileNotFoundError."""
    suffix = os.path.splitext(path)[1]
    opener = _OPENERS.get(suffix, open)
    with opener(path, 'rb') as stream:
        rest = b''
        chunks = _read_ahead(stream) if suffix else iter(
            lambda: stream.read(CHUNK_BYTES), None)
        while True:
            chunk = next(chunks)
            data = rest + chunk
            cut = _last_record_start(data) if chunk else len(data)
            # No slice of the chunk unless it is split: a copy per MB is measurable here.
            if cut and (chunk_filter is None or chunk_filter(data, cut)):
                for raw in split_records(data[:cut], True)[0]:
                    yield Record(raw, record_key(raw))
            rest = data[cut:]
            if not chunk:
                return


def _read_ahead(stream):
    """The chunks of a compressed ``stream`` (b'' at its end), decompressed one ahead in a
    thread: the decompressors let go of the GIL, so reading overlaps the search as in
    ``xzcat | grep`` (measured in benchmarks/README.md).  The thread stops when the
    generator is closed."""
    chunks = queue.Queue(maxsize=2)
    stop = threading.Event()

    def work():
        try:
            while not stop.is_set():
                chunk = stream.read(CHUNK_BYTES)
                chunks.put(chunk)
                if not chunk:
                    return
        except Exception as exc:   # handed to the reader, raised there
            chunks.put(exc)

    thread = threading.Thread(target=work, name='loghogd-logs-read', daemon=True)
    thread.start()
    try:
        while True:
            chunk = chunks.get()
            if isinstance(chunk, Exception):
                raise chunk
            yield chunk
            if not chunk:
                return
    finally:
        stop.set()
        while thread.is_alive():   # unblock a put() on a full queue, then let it end
            try:
                chunks.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()


def _last_record_start(data):
    """Where the last record that may go on in the next chunk starts: after the last line
    break followed by the start of a record, which is never a space (a text record starts
    with its time, a JSON one with '{', a continuation line with two spaces); 0: none yet."""
    end = len(data)
    while True:
        end = data.rfind(b'\n', 0, end)
        if end < 0:
            return 0
        if data[end + 1:end + 2] not in (b'', b' '):
            return end + 1


# -- files -----------------------------------------------------------------------------------

class LogFiles:
    """The files of one facility in its app folder: ``bases`` are the live file names
    (``<stem>.log`` and, with file_per_host, ``<host>-<stem>.log``), ``backups[base]``
    the ordered (wall datetime, path) of each one's backups."""

    def __init__(self, folder, stem, host_glob=None, per_host=True):
        self.folder = folder
        self.stem = stem
        self.host_glob = host_glob
        self.per_host = per_host

    def list(self):
        """{base: [(wall, path), ...]} for every base with any file now."""
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            raise LogsError('%s: no such folder (no line of this application was written '
                            'yet, or the wrong --config)' % self.folder, EX_NOINPUT) from None
        except PermissionError:
            raise _permission_error(self.folder) from None
        found = {}
        for name in names:
            parsed = parse_backup_name(name)
            base, wall, suffix = parsed if parsed else (name, None, '')
            if not self.is_base(base):
                continue
            entries = found.setdefault(base, {})
            if wall is not None:
                entries.setdefault(wall, []).append(name)
        result = {}
        for base, walls in found.items():
            backups = []
            for wall in sorted(walls):
                names = walls[wall]
                # Both forms present: a compression under way; the compressed one is whole.
                compressed = [n for n in names if os.path.splitext(n)[1] in COMPRESSED_SUFFIXES]
                backups.append((wall, os.path.join(self.folder, (compressed or names)[0])))
            result[base] = backups
        return result

    def follower(self, base, start_at_end=True):
        """A Follower of the live file ``base``."""
        return Follower(os.path.join(self.folder, base),
                        lambda: self.list().get(base, []), start_at_end)

    def is_base(self, name):
        own = self.stem + '.log'
        if name == own:
            return True   # the shared file: --host filters its lines
        if not (self.per_host and name.endswith('-' + own)):
            return False
        host = name[:-len(own) - 1]
        return self.host_glob is None or fnmatch.fnmatchcase(host, self.host_glob)


def _permission_error(path):
    return LogsError('cannot read %s: permission denied (reading logs takes membership of the '
                     'loghog group, or root)' % path, EX_NOPERM)


def in_window(backups, since, until):
    """The backups (wall, path) whose period may hold lines in [since, until]."""
    kept = []
    for index, (wall, path) in enumerate(backups):
        end = backups[index + 1][0] if index + 1 < len(backups) else None
        if since is not None and end is not None and end + PERIOD_SLACK <= since:
            continue
        if until is not None and wall - PERIOD_SLACK > until:
            continue
        kept.append((wall, path))
    return kept


def history(files, since, until, chunk_filter, opened, followers=None):
    """Every record of ``files`` (a LogFiles) in time order; ``opened`` collects the paths
    read (the benchmark and the tests look at it).

    With ``followers`` ({base: Follower} opened before this call, at the start of the live
    files), the live files' records are the followers' first reads, and a backup that is
    the very file a follower holds (rotated since) is left to it: the history and what
    follows it meet without a gap or a repeat.
    """
    streams = []
    listed = files.list()
    for base in followers or ():
        listed.setdefault(base, [])
    for base, backups in sorted(listed.items()):
        backups = in_window(backups, since, until)
        live = None
        if followers is not None:
            follower = followers.get(base)
            known = follower.known if follower is not None else None
            backups = [entry for entry in backups if known is not None and entry[0] <= known]
            live = [Record(raw, record_key(raw)) for raw in follower.poll()] \
                if follower is not None else []
        streams.append(_file_set(files.folder, base, backups, chunk_filter, opened, live))
    if len(streams) == 1:
        return streams[0]
    return heapq.merge(*streams, key=lambda record: record.key)


def _file_set(folder, base, backups, chunk_filter, opened, live_records=None):
    for _, path in backups:
        # Compressed meanwhile, or being compressed: the same lines under the other name.
        for candidate in _candidates(path):
            try:
                opened.append(candidate)
                yield from read_records(candidate, chunk_filter)
                break
            except FileNotFoundError:
                opened.pop()
                continue
            except PermissionError:
                raise _permission_error(candidate) from None
    if live_records is not None:
        yield from live_records
        return
    live = os.path.join(folder, base)
    try:
        opened.append(live)
        yield from read_records(live, chunk_filter)
    except FileNotFoundError:
        pass
    except PermissionError:
        raise _permission_error(live) from None


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
    moment = str(data.get('time', ''))
    level = data.get('level')
    message = str(data.get('message', '')).split('\n')
    text = '%s %s - %s - %s%s' % (moment[:10], moment[11:26], data.get('host', ''),
                                  '%s - ' % level if level else '', message[0])
    # A lone surrogate (JSON can hold one) is printed as its escape, never an error.
    return ('\n'.join([text] + [CONTINUATION + line for line in message[1:]])).encode(
        'utf-8', 'backslashreplace')


# -- following -------------------------------------------------------------------------------

class Follower:
    """Follows one live file like ``tail -F``, and better: reads what is added; when the
    name points to a new file (rotated), reads the old one to its end through the open
    descriptor, then every backup made since that is not the old file (several rotations
    between two polls), then the new live file from its start: no line lost or repeated.

    ``list_backups()`` returns the base's backups now, [(wall, path)] oldest first.  A
    backup is told from the file held open by its first line (a receive time with
    microseconds and the record: unique in practice); ``known`` is the newest backup that
    existed, and was not the held file, when it was opened.
    """

    def __init__(self, path, list_backups, start_at_end=True):
        self.path = path
        self.list_backups = list_backups
        self.stream = None
        self.identity = None
        self.known = None
        self.rest = b''
        self._open(start_at_end)

    def _open(self, at_end):
        try:
            stream = open(self.path, 'rb')
        except FileNotFoundError:
            self.stream = None
            self.known = self._newest(self.list_backups(), None)
            return
        except PermissionError:
            raise _permission_error(self.path) from None
        if at_end:
            stream.seek(0, os.SEEK_END)
        self.stream = stream
        stat = os.fstat(stream.fileno())
        self.identity = (stat.st_dev, stat.st_ino)
        self.known = self._newest(self.list_backups(), self._first_line())

    def _first_line(self):
        head = os.pread(self.stream.fileno(), 65536, 0)
        return head.split(b'\n', 1)[0] if head else None

    @staticmethod
    def _newest(backups, first_line):
        walls = [wall for wall, path in backups
                 if first_line is None or _first_line_of(path) != first_line]
        return max(walls) if walls else None

    def poll(self):
        """The whole records added since the last poll."""
        raws = []
        if self.stream is not None:
            raws += self._read()
        try:
            stat = os.stat(self.path)
            identity = (stat.st_dev, stat.st_ino)
        except FileNotFoundError:
            identity = None
        if identity is not None and identity != self.identity:
            first_line = None
            if self.stream is not None:
                raws += self._read()    # the rotated file's last lines
                raws += self._flush_rest()
                first_line = self._first_line()
                self.stream.close()
            for wall, path in self.list_backups():
                if self.known is not None and wall <= self.known:
                    continue
                if first_line is not None and _first_line_of(path) == first_line:
                    continue    # the file just read through its descriptor
                raws += [record.raw for record in _read_backup(path)]
            self._open(False)
            if self.stream is not None:
                raws += self._read()
        return raws

    def _read(self):
        data = self.rest + self.stream.read()
        records, self.rest = split_records(data, False)
        return records

    def _flush_rest(self):
        rest, self.rest = self.rest, b''
        return [rest] if rest else []

    def close(self):
        if self.stream is not None:
            self.stream.close()


def _candidates(path):
    """``path`` and the names the same backup has before or after its compression."""
    stem, suffix = os.path.splitext(path)
    if suffix not in COMPRESSED_SUFFIXES:
        stem = path
    return [path] + [stem + other for other in ('',) + COMPRESSED_SUFFIXES
                     if stem + other != path]


def _read_backup(path):
    for candidate in _candidates(path):
        try:
            return list(read_records(candidate))
        except FileNotFoundError:
            continue
        except PermissionError:
            raise _permission_error(candidate) from None
    return []


def _first_line_of(path):
    for candidate in _candidates(path):
        try:
            with _OPENERS.get(os.path.splitext(candidate)[1], open)(candidate, 'rb') as stream:
                return stream.readline().rstrip(b'\n')
        except FileNotFoundError:
            continue
        except (OSError, EOFError, lzma.LZMAError):
            return None   # a compressed file still being written: not the held one's twin
    return None


def start_following(files):
    """{base: Follower} for ``files``' live files, each at its start (see ``history``)."""
    return {base: files.follower(base, False) for base in files.list()}


def follow(files, selection, write, is_reader_gone, sleep=time.sleep, stop=None,
           followers=None):
    """Print what is added to ``files``' live files until ``stop()`` is true or the reader
    of the output is gone; new hosts' files are picked up as they appear.  ``followers``
    are those ``history`` read the live files with (None: start at the files' ends)."""
    if followers is None:
        followers = {base: files.follower(base) for base in files.list()}
    try:
        while not (stop and stop()):
            for base in files.list():
                if base not in followers:
                    followers[base] = files.follower(base, False)
            for follower in followers.values():
                for raw in follower.poll():
                    record = Record(raw, record_key(raw))
                    if selection.accepts(record):
                        write(record)
            if is_reader_gone():
                return
            sleep(FOLLOW_INTERVAL_S)
    finally:
        for follower in followers.values():
            follower.close()


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
    """Run ``loghogd logs``; return the exit status (0, 64 usage, 66 no input, 77 no
    permission, 78 config).  ``stdout`` (a binary stream), ``now`` and ``stop`` are for
    tests."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
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

    def write(record):
        out.write(render(record, args.output, app, stem) + b'\n')

    followers = start_following(files) if args.follow else None
    try:
        records = (record for record in history(files, since, until, selection.chunk_filter(),
                                                opened, followers) if selection.accepts(record))
        if args.lines is not None:
            records = deque(records, maxlen=max(args.lines, 0))
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
    return EX_OK


def _locate(config_path, app, module):
    """(logdir, the Facility or None when facilities.conf cannot be read) for ``app``."""
    from .config import load_config
    from .facilities import load_facilities
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise LogsError('%s' % exc, EX_CONFIG) from None
    except PermissionError:
        raise _permission_error(config_path) from None
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

