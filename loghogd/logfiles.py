"""Reading what loghogd wrote: a facility's files, their records in time order, and
following the live files across rotations.  The ``loghogd logs`` command (logs.py) filters
and prints what this module reads.

Backups are named as backups.py names them: ``<file>.<YYYY-MM-DD-HH-MM-SS-ffffff>``, the
start of the period they hold, plus ``.xz``, ``.gz`` or ``.bz2`` once compressed.  A record
is a line of a JSON facility, or a text line with its continuation lines (lines.py); both
know their receive time: the text line's first 26 characters, the JSON line's ``time``
(written first, so it is read without decoding the line).  Everything is bytes.
"""

import bz2
import datetime
import errno
import fnmatch
import gzip
import heapq
import json
import lzma
import os
import queue
import resource
import stat
import threading
import zlib

from .backups import COMPRESSED_SUFFIXES, parse_backup_name
from .converters import safe_host
from .errors import EX_USAGE
from .lines import CONTINUATION

EX_NOINPUT = 66   # sysexits.h: an input file does not exist or cannot be read
EX_NOPERM = 77    # sysexits.h: permission denied
CHUNK_BYTES = 1 << 20
# A record is never longer than this (the daemon's longest line is max_message_size, at
# most a few MiB once escaped): a file without line breaks (not the daemon's) is printed
# in pieces of this size instead of being held whole in memory.
MAX_RECORD_BYTES = 16 << 20
# More files than this read at once (file_per_host: one per host, merged by time): no
# read-ahead thread and smaller chunks for each, so memory stays bounded.
MANY_FILES = 16
SMALL_CHUNK_BYTES = 64 << 10
# A backup's name gives the start of its period; the next one's, its end.  Lines are
# stamped when their batch was read and rotation happens after it: a minute of slack
# keeps a backup whose edge is near the window (it costs at most one more file read).
PERIOD_SLACK = datetime.timedelta(seconds=60)

_OPENERS = {'': open, '.xz': lzma.open, '.gz': gzip.open, '.bz2': bz2.open}
_CONTINUATION = CONTINUATION.encode()
_JSON_HEAD = b'{"time": "'


class LogsError(Exception):
    """Something the user must fix; ``exit_code`` says what kind (sysexits.h)."""

    def __init__(self, message, exit_code=EX_USAGE):
        super().__init__(message)
        self.exit_code = exit_code


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
        """The JSON object; {} for a line that is not one (cut short by a crash)."""
        if self._data is None:
            self._data = _json_object(self.raw)
        return self._data


def _json_object(raw):
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def record_key(raw):
    if raw[:10] == _JSON_HEAD:
        return raw[10:20] + b' ' + raw[21:36]
    if raw[:1] == b'{':
        moment = str(_json_object(raw).get('time', ''))
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


def read_records(path, chunk_filter=None, many=False):
    """The records of one file (compressed or not), oldest first.  ``chunk_filter(data,
    end)`` False skips a chunk's records unsplit (--grep on a chunk without a match: most of a
    search's time is then decompression).  A file deleted meanwhile (a backup replaced by
    its compressed form) raises FileNotFoundError; one that is not a regular file (a FIFO,
    a symbolic link) raises NotARegularFile.  ``many``: one of many files read at once
    (smaller chunks, no read-ahead thread)."""
    suffix = os.path.splitext(path)[1]
    compressed = suffix in COMPRESSED_SUFFIXES
    chunk_bytes = SMALL_CHUNK_BYTES if many else CHUNK_BYTES
    # A decompressor does not close the file it was given: both are closed here.
    with open_regular(path) as file, (_OPENERS[suffix](file, 'rb') if compressed
                                      else file) as stream:
        rest = b''
        chunks = _read_ahead(stream) if compressed and not many else iter(
            lambda: stream.read(chunk_bytes), None)
        try:
            while True:
                chunk = next(chunks)
                data = rest + chunk
                cut = _last_record_start(data) if chunk else len(data)
                if not cut and len(data) > MAX_RECORD_BYTES:
                    cut = len(data)   # no line break in 16 MiB: not a line of ours
                # No slice of the chunk unless it is split: a copy per MB is measurable here.
                if cut and (chunk_filter is None or chunk_filter(data, cut)):
                    for raw in split_records(data[:cut], True)[0]:
                        yield Record(raw, record_key(raw))
                rest = data[cut:]
                if not chunk:
                    return
        finally:
            if hasattr(chunks, 'close'):
                chunks.close()   # the read-ahead thread ends before the file is closed


class NotARegularFile(OSError):
    """A name in the log folder that is a FIFO, a device, a folder or a symbolic link:
    never opened (a FIFO would block for ever, a link could point anywhere)."""


def open_regular(path):
    """``path`` opened for reading in binary, if it is a regular file (not followed when
    it is a symbolic link, not blocking when it is a FIFO); else NotARegularFile."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotARegularFile(errno.ELOOP, 'a symbolic link, not read', path) from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotARegularFile(errno.EINVAL, 'not a regular file, not read', path)
        os.set_blocking(fd, True)
        return os.fdopen(fd, 'rb')
    except BaseException:
        os.close(fd)
        raise


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
            raise permission_error(self.folder) from None
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
        return (self.host_glob is None or fnmatch.fnmatchcase(host, self.host_glob)
                or self._is_file_of(host))

    def _is_file_of(self, host_part):
        """Whether ``host_part`` is what the daemon made of the host name --host gave
        (its unsafe characters replaced, a long one shortened with a hash: converters.py)."""
        glob = self.host_glob
        if any(magic in glob for magic in '*?['):
            return False
        return safe_host(glob, max(len(host_part), 1)) == host_part


def permission_error(path):
    """The error for a file or folder this user may not read."""
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


def history(files, since, until, chunk_filter, opened, followers=None, warn=None):
    """Every record of ``files`` (a LogFiles) in time order; ``opened`` collects the paths
    read (the benchmark and the tests look at it).

    With ``followers`` ({base: Follower} opened before this call, at the start of the live
    files), the live files' records are the followers' first reads, and a backup that is
    the very file a follower holds (rotated since) is left to it: the history and what
    follows it meet without a gap or a repeat.

    A file that cannot be read (corrupt or cut short when compressed, not a regular file)
    is passed to ``warn(path, reason)`` (None: raised as a LogsError) and the others are
    read: one bad backup never hides the rest.
    """
    streams = []
    listed = files.list()
    for base in followers or ():
        listed.setdefault(base, [])
    many = len(listed) > MANY_FILES
    if many:
        _allow_descriptors(len(listed))
    for base, backups in sorted(listed.items()):
        backups = in_window(backups, since, until)
        live = None
        if followers is not None:
            follower = followers.get(base)
            known = follower.known if follower is not None else None
            backups = [entry for entry in backups if known is not None and entry[0] <= known]
            live = [Record(raw, record_key(raw)) for raw in follower.poll()] \
                if follower is not None else []
        streams.append(_file_set(files.folder, base, backups, chunk_filter, opened, live,
                                 warn or _raise, many))
    if len(streams) == 1:
        return streams[0]
    return heapq.merge(*streams, key=lambda record: record.key)


# What a compressed file that is corrupt or cut short raises when read.
UNREADABLE = (EOFError, lzma.LZMAError, zlib.error, gzip.BadGzipFile, NotARegularFile)
# Descriptors kept free for everything but the merged files (stdout, the config, Python).
SPARE_DESCRIPTORS = 64


def _raise(path, reason):
    raise LogsError('%s: %s' % (path, reason), EX_NOINPUT)


def _allow_descriptors(files):
    """Raise this process's soft limit on open files (up to the hard limit) so that
    ``files`` files can be open at once, merged by time; a LogsError when even the hard
    limit is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = files + SPARE_DESCRIPTORS
    if needed <= soft:
        return
    if hard != resource.RLIM_INFINITY and needed > hard:
        raise LogsError('%d files to merge by time, more than this process may open (ulimit '
                        '-n %d): choose some hosts with --host GLOB' % (files, hard), EX_USAGE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def _file_set(folder, base, backups, chunk_filter, opened, live_records, warn, many):
    for _, path in backups:
        # Compressed meanwhile, or being compressed: the same lines under the other name.
        for candidate in _candidates(path):
            try:
                opened.append(candidate)
                yield from read_records(candidate, chunk_filter, many)
                break
            except FileNotFoundError:
                opened.pop()
                continue
            except PermissionError:
                raise permission_error(candidate) from None
            except UNREADABLE as exc:
                warn(candidate, _reason(exc))
                break
    if live_records is not None:
        yield from live_records
        return
    live = os.path.join(folder, base)
    try:
        opened.append(live)
        yield from read_records(live, chunk_filter, many)
    except FileNotFoundError:
        pass
    except PermissionError:
        raise permission_error(live) from None
    except UNREADABLE as exc:
        warn(live, _reason(exc))


def _reason(exc):
    if isinstance(exc, NotARegularFile):
        return exc.strerror
    if isinstance(exc, EOFError):
        return 'cut short (%s); its records up to there were printed' % exc
    return 'cannot be decompressed (%s); its records up to there were printed' % exc


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
            stream = open_regular(self.path)
        except (FileNotFoundError, NotARegularFile):
            self.stream = None
            self.known = self._newest(self.list_backups(), None)
            return
        except PermissionError:
            raise permission_error(self.path) from None
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

    def poll(self, look_for_rotation=True):
        """The whole records added since the last poll; with ``look_for_rotation``, also
        whether the name now points to a new file (follow() asks when the folder changed)."""
        raws = []
        if self.stream is not None:
            raws += self._read()
        if not look_for_rotation:
            return raws
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
            raise permission_error(candidate) from None
        except UNREADABLE as exc:
            _raise(candidate, _reason(exc))
    return []


def _first_line_of(path):
    for candidate in _candidates(path):
        try:
            for record in read_records(candidate, many=True):
                return record.raw.split(b'\n', 1)[0]
            return b''
        except FileNotFoundError:
            continue
        except (OSError,) + UNREADABLE:
            return None   # a compressed file still being written: not the held one's twin
    return None


def start_following(files):
    """{base: Follower} for ``files``' live files, each at its start (see ``history``)."""
    return {base: files.follower(base, False) for base in files.list()}
