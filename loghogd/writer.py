"""Appending lines to log files: one write per file per loop iteration, fsync by policy.

The Writer maps (facility, host) to a LogFile.  Lines are queued with ``add`` and handed
to the OS by ``flush`` in one ``write`` per file, so that a crash of the daemon loses
nothing it has accepted.  A file is fsynced once ``flush_every`` messages are written
and not yet synced, and at the latest ``SYNC_INTERVAL_S`` after its first unsynced one.
"""

import logging
import os
import re

SYNC_INTERVAL_S = 1.0
# How often a file that is being written is checked for having been moved or deleted.
CHECK_INTERVAL_S = 1.0
# How often a file that could not be written (disk full, I/O error) is tried again.
RETRY_INTERVAL_S = 1.0
DIR_MODE = 0o750
FILE_MODE = 0o640

_UNSAFE_HOST_RE = re.compile(r'[^A-Za-z0-9_.\-]')
_HOST_CACHE_LIMIT = 4096

log = logging.getLogger('loghogd.writer')


def safe_host(host):
    """Turn a peer-supplied host name into a safe file name part (never a path)."""
    safe = _UNSAFE_HOST_RE.sub('_', host[:100]).lstrip('.-') or 'unknown'
    return safe


class LogFile:
    """One open log file and the lines waiting to be written to it."""

    def __init__(self, path, facility):
        self.path = path
        self.facility = facility
        self.fd = None
        self.size = 0
        self.pending = []          # str lines queued since the last flush
        self.unwritten = b''       # bytes a failed write left over, written first next time
        self.unsynced = 0          # messages written but not fsynced
        self.unsynced_since = None
        self.check_at = 0.0
        self.failing = False
        self.last_write = None

    def open(self):
        """Open (creating the folder and file as needed) for appending."""
        folder = os.path.dirname(self.path)
        os.makedirs(folder, mode=DIR_MODE, exist_ok=True)
        # Read access only to look at the last byte (see below); writes always append.
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(self.path, flags, FILE_MODE)
        try:
            self.size = os.fstat(fd).st_size
            if self.size and os.pread(fd, 1, self.size - 1) != b'\n':
                # A crash cut the last line short: never glue the next line onto it.
                os.write(fd, b'\n')
                self.size += 1
        except OSError:
            os.close(fd)
            raise
        self.fd = fd

    def close(self):
        """Sync and close the descriptor; queued lines stay queued."""
        if self.fd is None:
            return
        try:
            self.sync()
        finally:
            os.close(self.fd)
            self.fd = None

    def sync(self):
        if self.fd is not None and self.unsynced:
            os.fdatasync(self.fd)
        self.unsynced = 0
        self.unsynced_since = None

    def has_moved(self):
        """True when the path no longer names the open file (deleted, moved, replaced)."""
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            return True
        mine = os.fstat(self.fd)
        return (on_disk.st_ino, on_disk.st_dev) != (mine.st_ino, mine.st_dev)

    def write_pending(self, now):
        """Write everything queued; returns the number of messages written.

        Raises OSError when the file cannot be opened or written; what was not written
        stays queued (``unwritten``) and is written first on the next call.
        """
        count = len(self.pending)
        if self.pending:
            data = self.unwritten + ''.join(self.pending).encode('utf-8', 'backslashreplace')
            self.pending = []
        else:
            data = self.unwritten
        self.unwritten = data
        if not data:
            return 0
        if self.fd is None or now >= self.check_at:
            self._reopen_if_moved(now)
        view = memoryview(data)
        written = 0
        try:
            while written < len(data):
                written += os.write(self.fd, view[written:])
        finally:
            self.size += written
            self.unwritten = data[written:]
        self.last_write = now
        self.unsynced += count
        if self.unsynced_since is None:
            self.unsynced_since = now
        if self.unsynced >= self.facility.flush_every:
            self.sync()
        return count

    def _reopen_if_moved(self, now):
        self.check_at = now + CHECK_INTERVAL_S
        if self.fd is not None and not self.has_moved():
            return
        if self.fd is not None:
            log.warning('%s was moved or deleted: creating it again', self.path)
            self.close()
        self.open()

    def sync_deadline(self):
        return None if self.unsynced_since is None else self.unsynced_since + SYNC_INTERVAL_S


class Writer:
    """Routes lines to LogFiles under ``logdir`` and flushes them in batches."""

    def __init__(self, logdir, counters, max_backlog_bytes=64 * 1024 * 1024):
        self.logdir = logdir
        self.counters = counters
        self.max_backlog_bytes = max_backlog_bytes
        self.files = {}
        self.dirty = []
        self._hosts = {}
        self.retrying = []       # files whose last write failed, retried at retry_at
        self.retry_at = 0.0
        # The per-message shortcut: facility (or (facility, host)) -> LogFile.
        self._by_facility = {}

    def file_for(self, facility, host):
        """Return the LogFile of ``facility`` (and ``host`` with file_per_host)."""
        key = (facility.app, facility.path, host if facility.file_per_host else None)
        log_file = self.files.get(key)
        if log_file is None:
            log_file = self._new_file(facility, host, key)
        if len(self._by_facility) >= _HOST_CACHE_LIMIT:
            self._by_facility.clear()
        self._by_facility[(facility, host) if facility.file_per_host else facility] = log_file
        return log_file

    def _new_file(self, facility, host, key):
        safe = None
        if facility.file_per_host:
            safe = self._hosts.get(host)
            if safe is None:
                if len(self._hosts) >= _HOST_CACHE_LIMIT:
                    self._hosts.clear()
                safe = self._hosts[host] = safe_host(host)
        path = os.path.join(self.logdir, facility.app, facility.file_name(safe))
        log_file = LogFile(path, facility)
        self.files[key] = log_file
        return log_file

    def add(self, facility, host, line):
        """Queue one complete line (str, ending in a newline) for its file; return the file."""
        log_file = self._by_facility.get((facility, host) if facility.file_per_host else facility)
        if log_file is None:
            log_file = self.file_for(facility, host)
        if not log_file.pending:
            self.dirty.append(log_file)
        log_file.pending.append(line)
        return log_file

    def flush(self, now):
        """Write every queued line (one write per file) and fsync by policy.

        Files that fail keep their lines (up to ``max_backlog_bytes`` in all) and are
        retried on the next flush.  Returns the number of messages written.
        """
        written = 0
        if self.retrying and now >= self.retry_at:
            self.dirty += self.retrying
            self.retrying = []
        dirty, self.dirty = self.dirty, []
        for log_file in dirty:
            written += self._flush_file(log_file, now)
        for log_file in self.files.values():
            deadline = log_file.sync_deadline()
            if deadline is not None and now >= deadline:
                self._sync_file(log_file)
        return written

    def _flush_file(self, log_file, now):
        try:
            count = log_file.write_pending(now)
        except OSError as exc:
            if not log_file.failing:
                log.error('cannot write %s: %s; keeping lines in memory and retrying',
                          log_file.path, exc.strerror or exc)
                log_file.failing = True
            self.counters.count('write_errors')
            self._bound_backlog(log_file)
            if log_file not in self.retrying:
                self.retrying.append(log_file)
            self.retry_at = now + RETRY_INTERVAL_S
            return 0
        if log_file.failing:
            log.warning('writing %s again', log_file.path)
            log_file.failing = False
        return count

    def _sync_file(self, log_file):
        try:
            log_file.sync()
        except OSError as exc:
            log.error('cannot fsync %s: %s', log_file.path, exc.strerror or exc)

    def _bound_backlog(self, log_file):
        excess = len(log_file.unwritten) - self.max_backlog_bytes
        if excess > 0:
            cut = log_file.unwritten.find(b'\n', excess)
            cut = len(log_file.unwritten) if cut < 0 else cut + 1
            dropped = log_file.unwritten[:cut].count(b'\n')
            log_file.unwritten = log_file.unwritten[cut:]
            self.counters.count('dropped_backlog', dropped)
            log.error('%s: backlog over %d bytes, dropped %d oldest lines',
                      log_file.path, self.max_backlog_bytes, dropped)

    def next_deadline(self):
        """The earliest time a flush is needed without new input (sync or retry), or None."""
        deadlines = [d for d in (f.sync_deadline() for f in self.files.values()) if d is not None]
        if self.dirty:
            deadlines.append(0.0)
        if self.retrying:
            deadlines.append(self.retry_at)
        return min(deadlines) if deadlines else None

    def has_backlog(self):
        return any(f.unwritten for f in self.files.values())

    def reopen(self):
        """Close every file (after syncing); each is opened again on its next line.

        Used on SIGHUP so that an outside tool may move files away.
        """
        for log_file in self.files.values():
            try:
                log_file.close()
            except OSError as exc:
                log.error('closing %s: %s', log_file.path, exc.strerror or exc)

    def retarget(self, table):
        """After a reload: point each file at its facility in ``table``.

        A file whose facility is gone (or whose per-host setting changed) is closed,
        unless it still holds lines it could not write: those keep their old facility
        until they are written.
        """
        self._by_facility.clear()
        for key, log_file in list(self.files.items()):
            app, path, host = key
            new = table.by_app.get(app, {}).get(path)
            if new is not None and (host is not None) == new.file_per_host:
                log_file.facility = new
            elif not (log_file.pending or log_file.unwritten):
                del self.files[key]
                try:
                    log_file.close()
                except OSError as exc:
                    log.error('closing %s: %s', log_file.path, exc.strerror or exc)

    def close(self, now):
        """Write what is queued, sync and close every file (at exit)."""
        self.flush(now)
        for log_file in self.files.values():
            try:
                log_file.close()
            except OSError as exc:
                log.error('closing %s: %s', log_file.path, exc.strerror or exc)
