"""Appending lines to log files: one write per file per loop iteration, fsync by policy.

The Writer maps (facility, host) to a LogFile.  Lines are queued with ``add`` and handed
to the OS by ``flush`` in one ``write`` per file, so that a crash of the daemon loses
nothing it has accepted.  A file is fsynced once ``flush_every`` messages are written
and not yet synced, and at the latest ``SYNC_INTERVAL_S`` after its first unsynced one.
``flush(now)`` asks the rotation (``Writer.rotation``, rotation.py) about a file before
writing lines received at or after its deadline, and after a write that brings it to
its max_size: two comparisons per file per flush, nothing per message.

In the daemon the fsyncs run on a thread of their own (``Syncer``, started by
``Writer.start_syncer``), so that the loop goes on reading while the disk works: an
fdatasync takes from half a millisecond to hundreds (when other dirty data is flushed
with it).  Each file counts the messages written (``written_seq``) and those known to
be on disk (``synced_seq``); ``sync_wanted`` is how far the facility's flush_every says
the file must be synced before the lines written so far may be acknowledged (acks.py
waits for ``synced_seq >= sync_wanted``).  Without a syncer (tests, tools) the fsyncs
run inline, as before.
"""

import collections
import logging
import os
import queue
import re
import threading
import time

from . import converters
from .facilities import HostCap

SYNC_INTERVAL_S = 1.0
INF = float('inf')
# How often a file that is being written is checked for having been moved or deleted.
CHECK_INTERVAL_S = 1.0
# How often a file that could not be written (disk full, I/O error) is tried again.
RETRY_INTERVAL_S = 1.0
DIR_MODE = 0o750
FILE_MODE = 0o640

_UNSAFE_HOST_RE = re.compile(r'[^A-Za-z0-9_.\-]')
_HOST_CACHE_LIMIT = 4096
# Log files kept open at most; beyond that the least recently written are closed (and
# opened again, appending, on their next line), so that many hosts with file_per_host
# cannot use up the daemon's descriptors (EMFILE would stop it accepting connections).
MAX_OPEN_FILES = 512
# A flush opens (or creates) files for about this long, then leaves the rest of the
# files that need opening, with their lines, to the next pass (issue 15: the first pass
# of a host-name flood created 1,000 files and held another application's ack ~1 s).
OPEN_BUDGET_S = 0.003
# ... and opens none while this many fsyncs wait on the syncer threads (each holds a
# descriptor): a new file's first fsync (flush_every = 1) commits its creation.  The
# threads take fsyncs one facility after another, so another application's waits behind
# at most one per facility (before: behind a thousand, 2.3 s; issue 15).
MAX_SYNCS_WAITING_FOR_OPENS = 64
# fsyncs run on this many threads (a file's always on the same one): a journaling file
# system commits concurrent fsyncs together, so a thousand new files' first fsyncs pass
# about this many times faster than on one thread (issue 15).
SYNC_THREADS = 4
# A closed file not written for this long is forgotten (its LogFile dropped from memory);
# a new line opens it again.  Looked at a bounded number per pass.  (Issue 15: the table
# never forgot a file; 100,000 files cost 12.8 ms per idle pass, now nothing per pass.)
FORGET_AFTER_S = 300.0
FORGET_PER_PASS = 64

log = logging.getLogger('loghogd.writer')


def safe_host(host):
    """Turn a peer-supplied host name into a safe file name part (never a path)."""
    return converters.safe_host(host)   # shortened with a hash when long (issue 15)


class LogFile:
    """One open log file and the lines waiting to be written to it."""

    def __init__(self, path, facility):
        self.path = path
        self.facility = facility
        self.fd = None
        self.size = 0
        self.pending = []          # str lines queued since the last flush
        # Whole lines not written yet (a bytearray once a write failed), written first
        # next time, and how many messages they are.
        self.unwritten = b''
        self.unwritten_lines = 0
        self.unsynced = 0          # messages written since the last fsync was started
        self.unsynced_since = None
        self.written_seq = 0       # messages written since the file object was made
        self.synced_seq = 0        # ... of which these are known to be fsynced
        self.sync_wanted = 0       # ... and these must be before an ack (flush_every)
        # fsyncs of it running on the syncer thread: a count, not a flag (A5-1): a
        # rotation or reopen hands over a second descriptor while one is syncing, and the
        # first one's end must not make an inline fsync vouch for the second's lines.
        self.syncing = 0
        self.sync_again = False    # ... and another is wanted once that one is done
        # An inline fsync (close) made while the thread's ran covered this many: known
        # synced only once the thread's succeeds too (see sync).
        self.synced_inline = 0
        # Called with the OSError when an fdatasync of this file fails (the Writer sets
        # it: the file's unsynced lines may be lost and must never be acknowledged).
        self.on_sync_error = None
        self.check_at = 0.0
        self.failing = False       # writing fails: logged once, until it works again
        self.sync_failing = False  # fdatasync fails: logged once, until it works again
        self.dropped = 0           # lines dropped from the backlog since writing failed
        self.last_write = None
        # Rotation (rotation.py sets these): the Writer calls ``Writer.rotation.check``
        # before writing at or after ``rotate_at`` (Unix time; 0.0: not yet known to
        # the rotation) and after a write that brings ``size`` to ``rotate_size`` bytes.
        self.rotate_at = INF
        self.rotate_size = INF
        # Shown in the status snapshot: Unix times, and how many backups there are.
        self.last_rotation = None
        self.next_rotation = None
        self.backups = None
        # Sealed files (sealer.py): the FileSeal that chains every byte written.
        self.chain = None

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
            if self.chain is not None:
                self.chain.catch_up(fd, self.size)   # e.g. that newline
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
        """fdatasync, on this thread, the lines written and not known to be synced;
        return True if there were any.

        Raises OSError.  Either way the count starts again: after a failed fdatasync the
        kernel may have dropped those pages, so trying again would prove nothing (the
        Writer reports the file's lines as maybe lost instead).  An fsync running on the
        syncer thread at the same time is harmless: it syncs a duplicate descriptor of
        the same file, and its result only ever raises ``synced_seq``.

        But the two descriptors share one error state (issue 14): if the thread's
        fdatasync took the error, this one succeeds.  So while the thread's runs, this
        success counts only once the thread reports success too (``Writer._take_synced``).
        """
        self.unsynced = 0
        self.unsynced_since = None
        seq = self.written_seq
        if self.fd is None or self.synced_seq >= seq:
            return False
        try:
            os.fdatasync(self.fd)
        except OSError as exc:
            if self.on_sync_error is not None:
                self.on_sync_error(self, exc)
            raise
        finally:
            if self.syncing:
                self.synced_inline = max(self.synced_inline, seq)
            else:
                self.synced_seq = seq
        return True

    def synced(self, seq):
        """The fsync that covered the first ``seq`` messages is done (or failed)."""
        if seq > self.synced_seq:
            self.synced_seq = seq

    def has_moved(self):
        """True when the path no longer names the open file (deleted, moved, replaced)."""
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            return True
        mine = os.fstat(self.fd)
        return (on_disk.st_ino, on_disk.st_dev) != (mine.st_ino, mine.st_dev)

    def take_pending(self):
        """Move the queued lines, encoded, onto ``unwritten`` (without writing); return it."""
        if self.pending:
            data = ''.join(self.pending).encode('utf-8', 'backslashreplace')
            self.unwritten_lines += len(self.pending)
            self.pending = []
            if not self.unwritten:
                self.unwritten = data
            else:
                if not isinstance(self.unwritten, bytearray):
                    self.unwritten = bytearray(self.unwritten)
                self.unwritten += data   # a failing file gathers its lines here
        return self.unwritten

    def write_pending(self, now):
        """Write everything queued; return the number of messages written.

        Raises OSError when the file cannot be opened or written.  What was not written
        stays in ``unwritten`` as whole lines, written first on the next call: a write
        cut short in the middle of a line (disk full, file size limit) is taken back, so
        that no cut line stays in the file and none is glued onto later.  Does not
        fsync (the Writer does, by the facility's policy).
        """
        data = self.take_pending()
        if not data:
            return 0
        if self.fd is None or now >= self.check_at:
            try:
                self._reopen_if_moved(now)
            except OSError:
                self._keep_unwritten(data, 0, now)
                raise
        written = 0
        try:
            with memoryview(data) as view:
                while written < len(data):
                    written += os.write(self.fd, view[written:])
        except OSError:
            self._keep_unwritten(data, self._take_back(data, written), now)
            raise
        count = self.unwritten_lines
        self.unwritten = b''
        self.unwritten_lines = 0
        self._count_written(written, count, now)
        if self.chain is not None:
            self.chain.add(data)
        return count

    def _take_back(self, data, written):
        """A write stopped ``written`` bytes into ``data``: if that is inside a line, cut
        the file back to its last whole line (the daemon is the file's only writer).
        Return how many bytes of ``data`` stay written."""
        whole = data.rfind(b'\n', 0, written) + 1
        if whole == written:
            return written
        try:
            os.ftruncate(self.fd, os.fstat(self.fd).st_size - (written - whole))
        except OSError:
            return written   # then the rest of the line follows when writing works again
        return whole

    def _keep_unwritten(self, data, written, now):
        """After a failed write: ``data[written:]`` stays for the next try."""
        count = data.count(b'\n', 0, written) if written else 0
        if written and self.chain is not None:
            self.chain.add(bytes(data[:written]))
        self.unwritten = bytearray(data[written:])
        self.unwritten_lines -= count
        self._count_written(written, count, now)

    def _count_written(self, written, count, now):
        if not written:
            return
        self.size += written
        self.last_write = now
        self.unsynced += count
        self.written_seq += count
        if self.unsynced_since is None:
            self.unsynced_since = now

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


class Syncer:
    """fdatasync on a thread of its own; results handed back to the loop's thread.

    ``submit(log_file, fd, seq)`` queues an fdatasync of ``fd``, a duplicate of the
    file's descriptor that the thread owns and closes when done.  Why a duplicate and
    not the file's own descriptor under a lock: the loop may close the file at any
    moment (rotation renames and closes it, SIGHUP reopens every file, a reload drops
    it), and neither must wait for a slow fsync nor close a descriptor that the thread
    is syncing (a closed number may be reused at once by a new socket or file).  A
    duplicate names the same open file, so its fdatasync flushes the same data and
    reports the same write errors, and it stays valid whatever the loop does.

    The thread appends ``(log_file, seq, error)`` to ``done`` and wakes the loop
    (``wake``, the loop's thread-safe wakeup); the loop calls ``take_done``.  os.fdatasync
    releases the GIL, so the loop runs while the disk works.
    """

    def __init__(self, wake, threads=SYNC_THREADS):
        self.wake = wake
        self.done = collections.deque()
        self.waiting = 0       # submitted, results not yet taken (loop thread only)
        self.closed = False    # the threads are gone: nothing more may be submitted
        # One queue per thread; a file's fsyncs always go to the same one, in order
        # (their results must come back in order: see LogFile.sync).
        self._queues = [queue.SimpleQueue() for _ in range(threads)]
        self._threads = [threading.Thread(target=self._work, args=(jobs,), daemon=True,
                                          name='loghogd-syncer-%d' % n)
                         for n, jobs in enumerate(self._queues)]
        for thread in self._threads:
            thread.start()

    def submit(self, log_file, fd, seq):
        self.waiting += 1
        self._queues[hash(log_file.path) % len(self._queues)].put((log_file, fd, seq))

    def take_done(self):
        """Return the finished ``(log_file, seq, error or None)`` in order."""
        done = self.done
        results = []
        while done:
            results.append(done.popleft())
        self.waiting -= len(results)
        return results

    def close(self):
        """Finish every fsync submitted so far, then stop the threads."""
        for jobs in self._queues:
            jobs.put(None)
        for thread in self._threads:
            thread.join()
        self.closed = True

    def _work(self, jobs):
        """One thread: run the fsyncs of its queue, one facility after another (a flood
        of new files in one facility must not keep another application's fsync, and so
        its ack, waiting behind all of theirs: issue 15); a file's in order."""
        by_facility = collections.OrderedDict()   # (app, path) -> deque of jobs
        stopping = False
        while True:
            if not by_facility:
                if stopping:
                    return
                job = jobs.get()
                stopping = self._take(job, by_facility) or stopping
            while True:   # everything queued meanwhile joins its facility's turn
                try:
                    job = jobs.get_nowait()
                except queue.Empty:
                    break
                stopping = self._take(job, by_facility) or stopping
            if not by_facility:
                continue
            key, waiting = by_facility.popitem(last=False)
            log_file, fd, seq = waiting.popleft()
            if waiting:
                by_facility[key] = waiting    # at the end: the next facility goes first
            error = None
            try:
                os.fdatasync(fd)
            except OSError as exc:
                error = exc
            finally:
                try:
                    os.close(fd)
                except OSError:
                    pass
            self.done.append((log_file, seq, error))
            self.wake()

    @staticmethod
    def _take(job, by_facility):
        """File ``job`` under its facility; return True for the stop marker (None).

        The facility by its name (app, path), never by the object: a reload gives a file
        a new facility object, and its fsyncs queued under the old one and the new must
        still end in order (A5-1: a result raises ``synced_seq`` over every line before
        it, so a later descriptor's fsync ending first acknowledged lines of an earlier
        one, a rotated file, before they were on disk)."""
        if job is None:
            return True
        facility = job[0].facility
        by_facility.setdefault((facility.app, facility.path),
                               collections.deque()).append(job)
        return False


class Writer:
    """Routes lines to LogFiles under ``logdir`` and flushes them in batches."""

    def __init__(self, logdir, counters, max_backlog_bytes=64 * 1024 * 1024,
                 max_open_files=MAX_OPEN_FILES):
        self.logdir = logdir
        self.counters = counters
        self.max_backlog_bytes = max_backlog_bytes
        self.max_open_files = max_open_files
        self.files = {}
        # Files written with their descriptor open, least recently written first.
        self.open_files = collections.OrderedDict()
        # Files written and not yet fsynced (their sync_deadline may come).
        self.unsynced_files = set()
        # Files with lines that wait to be opened (a bounded number is opened per pass):
        # id(facility) -> deque of LogFiles, facilities in round-robin order.
        self.waiting_to_open = collections.OrderedDict()
        # Files closed (release), oldest first: forgotten once idle for FORGET_AFTER_S.
        self.closed_files = collections.OrderedDict()
        self.dirty = []
        self._hosts = {}
        self.host_cap = HostCap(counters)   # file_per_host's max_hosts (facilities.py)
        self.retrying = []       # files whose last write failed, retried at retry_at
        self.retry_at = 0.0
        # Files that may have lost lines (dropped from the backlog, or a failed fsync)
        # since the server last asked: their lines must never be acknowledged.
        self.lost = set()
        # The per-message shortcut: facility (or (facility, host)) -> LogFile.
        self._by_facility = {}
        # The rotation (rotation.Rotator sets itself here), asked about each new file.
        self.rotation = None
        # fsyncs off the loop's thread, once start_syncer is called (the daemon does).
        self.syncer = None
        # Sealing (sealer.Sealer sets itself here): hands a FileSeal to sealed files.
        self.sealer = None

    def start_syncer(self, wake):
        """Run fsyncs on a thread from now on; ``wake()`` wakes the loop (thread-safe)."""
        if self.syncer is None:
            self.syncer = Syncer(wake)

    def file_for(self, facility, host):
        """Return the LogFile of ``facility`` (and ``host`` with file_per_host).

        With file_per_host, files are keyed by the host's safe name (the one in the file
        name): two host names that differ only in what is unsafe share their file.
        """
        safe = self.host_cap.route(facility, self._safe_host(host)) \
            if facility.file_per_host else None   # None beyond max_hosts: the shared file
        key = (facility.app, facility.path, safe)
        log_file = self.files.get(key)
        if log_file is None:
            log_file = self._new_file(facility, safe, key)
        if len(self._by_facility) >= _HOST_CACHE_LIMIT:
            self._by_facility.clear()
        self._by_facility[(facility, host) if facility.file_per_host else facility] = log_file
        return log_file

    def _safe_host(self, host):
        safe = self._hosts.get(host)
        if safe is None:
            if len(self._hosts) >= _HOST_CACHE_LIMIT:
                self._hosts.clear()
            safe = self._hosts[host] = safe_host(host)
        return safe

    def _new_file(self, facility, safe, key):
        path = os.path.join(self.logdir, facility.app, facility.file_name(safe))
        log_file = LogFile(path, facility)
        log_file.key = key
        log_file.on_sync_error = self._sync_failed
        if self.sealer is not None and facility.sealed:
            log_file.chain = self.sealer.file_seal(path)
        if self.rotation is not None:
            log_file.rotate_at = 0.0
        self.files[key] = log_file
        return log_file

    def queue_for(self, facility, host):
        """Return the LogFile that lines of ``facility`` from ``host`` go to, counted as
        dirty: the caller appends at least one line to its ``pending`` right away."""
        log_file = self._by_facility.get((facility, host) if facility.file_per_host else facility)
        if log_file is None:
            log_file = self.file_for(facility, host)
        if not log_file.pending:
            self.dirty.append(log_file)
        return log_file

    def add(self, facility, host, line):
        """Queue one complete line (str, ending in a newline) for its file; return the file."""
        log_file = self.queue_for(facility, host)
        log_file.pending.append(line)
        return log_file

    def flush(self, now, open_budget_s=None):
        """Write every queued line (one write per file) and fsync by policy.

        With ``open_budget_s`` (the loop passes OPEN_BUDGET_S), files that need opening
        are opened for about that long, at least one; the others keep their lines queued
        for the next call (``next_deadline`` is then 0: at once).

        Files that fail keep their lines in memory (``max_backlog_bytes`` in all, the
        oldest dropped beyond that) and are tried again every RETRY_INTERVAL_S; until
        then their new lines are only kept.  Returns the number of messages written.
        """
        written = 0
        if self.syncer is not None and self.syncer.done:
            self._take_synced()
        dirty, self.dirty = self.dirty, []
        if self.retrying and now >= self.retry_at:
            # A failing file with new lines is already dirty.
            dirty += [log_file for log_file in self.retrying if not log_file.pending]
            self.retrying = []
        unsynced = self.unsynced_files
        waiting = self.waiting_to_open
        if open_budget_s is None:
            while waiting:
                dirty.extend(waiting.popitem(last=False)[1])
        for log_file in dirty:
            if log_file.fd is None and not log_file.failing and open_budget_s is not None:
                waiting.setdefault(id(log_file.facility), collections.deque()).append(log_file)
                continue
            written += self._flush_file(log_file, now)
            if log_file.unsynced_since is not None:
                unsynced.add(log_file)
        if waiting:
            for log_file in self._some_to_open(open_budget_s):
                written += self._flush_file(log_file, now)
                if log_file.unsynced_since is not None:
                    unsynced.add(log_file)
        if self.retrying:
            self._bound_backlog()
        if self.closed_files and open_budget_s is not None:
            self._forget_idle(now)
        # Only files written and not yet fsynced (before: every file known, 12.8 ms a
        # pass at 100,000 files).
        for log_file in list(unsynced):
            deadline = log_file.sync_deadline()
            if deadline is None:
                unsynced.discard(log_file)
            elif now >= deadline:
                self._sync_file(log_file)
                if log_file.unsynced_since is None:
                    unsynced.discard(log_file)
        return written

    def _some_to_open(self, budget_s):
        """Yield files waiting to be opened, to open and write now (the caller does,
        between yields): one facility after another (round-robin: a flood of new host
        names in one facility never keeps another application's new file waiting behind
        it), for about ``budget_s`` (at least one), and only while fewer than
        MAX_SYNCS_WAITING_FOR_OPENS fsyncs wait on the syncer thread.  The
        others keep waiting, with their lines, for the next pass."""
        waiting = self.waiting_to_open
        until = time.perf_counter() + budget_s
        while waiting and not self._syncs_backlogged():
            key, files = waiting.popitem(last=False)
            yield files.popleft()
            if files:
                waiting[key] = files   # at the end: the next facility goes first
            if time.perf_counter() > until:
                return

    def _forget_idle(self, now):
        """Forget (at most FORGET_PER_PASS) closed files idle for FORGET_AFTER_S: nothing
        queued, nothing unsynced, no fsync running.  A file in use again is skipped (it
        comes back here when it is closed again)."""
        closed = self.closed_files
        forgotten = 0
        for _ in range(min(FORGET_PER_PASS, len(closed))):
            log_file = next(iter(closed))
            if log_file.last_write is not None and now - log_file.last_write < FORGET_AFTER_S:
                break
            del closed[log_file]
            if (log_file.fd is not None or log_file.pending or log_file.unwritten
                    or log_file.syncing or log_file.synced_seq < log_file.written_seq
                    or log_file.failing):
                continue
            if self.files.get(log_file.key) is log_file:
                del self.files[log_file.key]
            self.unsynced_files.discard(log_file)
            if self.rotation is not None:
                self.rotation.forget_file(log_file)
            forgotten += 1
        if forgotten:
            self._by_facility.clear()   # may name a forgotten file
            self.counters.count('files_forgotten', forgotten)

    def _syncs_backlogged(self):
        """True while MAX_SYNCS_WAITING_FOR_OPENS fsyncs wait on the syncer thread: no
        file is opened then (the syncer wakes the loop as each one ends)."""
        return self.syncer is not None and self.syncer.waiting >= MAX_SYNCS_WAITING_FOR_OPENS

    def _flush_file(self, log_file, now):
        if now >= log_file.rotate_at:
            # Before writing: lines received at or after a deadline begin the next file.
            self._check_rotation(log_file, now)
        if log_file.failing and now < self.retry_at:
            log_file.take_pending()   # kept for the next try
            return 0
        try:
            count = log_file.write_pending(now)
        except OSError as exc:
            if not log_file.failing:
                log.error('cannot write %s: %s; keeping its lines in memory (max_backlog) '
                          'and trying again every %gs', log_file.path, exc.strerror or exc,
                          RETRY_INTERVAL_S)
                log_file.failing = True
            self.counters.count('write_errors')
            if log_file not in self.retrying:
                self.retrying.append(log_file)
            self.retry_at = now + RETRY_INTERVAL_S
            return 0
        if log_file.failing and not count:
            return 0   # nothing was left to write (all dropped): not known to work yet
        if log_file.failing:
            dropped = ' (%d older lines were dropped meanwhile)' % log_file.dropped \
                if log_file.dropped else ''
            log.warning('writing %s again%s', log_file.path, dropped)
            log_file.failing = False
            log_file.dropped = 0
        if log_file.unsynced >= log_file.facility.flush_every:
            # flush_every: these lines are acknowledged only once they are on disk.
            log_file.sync_wanted = log_file.written_seq
            self._sync_file(log_file)
        open_files = self.open_files
        try:
            open_files.move_to_end(log_file)
        except KeyError:
            open_files[log_file] = None
            if len(open_files) > self.max_open_files:
                self._close_idle()
        if log_file.size >= log_file.rotate_size:
            self._check_rotation(log_file, now)
        return count

    def _check_rotation(self, log_file, now):
        """Let the rotation rotate ``log_file`` if due; a bug there never costs a line."""
        try:
            self.rotation.check(log_file, now)
        except Exception:
            log.exception('internal error while rotating %s (carrying on)', log_file.path)
            log_file.rotate_at = log_file.rotate_size = INF

    def _sync_file(self, log_file):
        """fdatasync ``log_file`` (on the syncer thread if there is one); when that fails,
        its unsynced lines count as maybe lost."""
        if self.syncer is not None and not self.syncer.closed and log_file.fd is not None:
            if log_file.syncing:
                log_file.unsynced = 0
                log_file.unsynced_since = None
                log_file.sync_again = True   # covers what is written until that one ends
                return
            if self._syncer_has_room():
                try:
                    fd = os.dup(log_file.fd)
                except OSError:
                    pass   # out of descriptors: sync here, below
                else:
                    self._submit_sync(log_file, fd)
                    return
        try:
            synced = log_file.sync()
        except OSError:
            return   # reported by _sync_failed
        if synced:
            self._sync_worked(log_file)

    def _syncer_has_room(self):
        """True when fsyncs may go to the syncer thread: there is one, and fewer than
        max_open_files are in flight (each holds a descriptor, and the limit is raised for
        twice that); otherwise the loop syncs itself."""
        return (self.syncer is not None and not self.syncer.closed
                and self.syncer.waiting < self.max_open_files)

    def _submit_sync(self, log_file, fd):
        """Hand ``fd`` (the file's, or a duplicate) to the syncer: it fsyncs everything
        written so far, then closes ``fd``."""
        log_file.unsynced = 0
        log_file.unsynced_since = None
        log_file.syncing += 1
        self.syncer.submit(log_file, fd, log_file.written_seq)

    def _sync_failed(self, log_file, exc):
        self.counters.count('sync_errors')
        self.lost.add(log_file)
        if not log_file.sync_failing:
            log_file.sync_failing = True
            log.error('cannot fsync %s: %s; the lines written since its last fsync may '
                      'be lost', log_file.path, exc.strerror or exc)

    def _sync_worked(self, log_file):
        if log_file.sync_failing:
            log_file.sync_failing = False
            log.warning('fsync of %s works again', log_file.path)

    def _close_idle(self):
        """Close the least recently written files beyond ``max_open_files`` (``release``)."""
        open_files = self.open_files
        while len(open_files) > self.max_open_files:
            self.release(next(iter(open_files)))

    def release(self, log_file):
        """Close ``log_file``'s descriptor without the loop waiting for the disk; its
        queued lines stay queued and it opens again on its next write.

        What is written and not known to be fsynced is fsynced by the syncer thread,
        which is handed the descriptor itself and closes it after.  The fsync-error
        semantics of issue 14 hold: the thread's fdatasync is the one that reports an
        error (never an inline one on this thread that could consume it).  Used for
        idle files beyond ``max_open_files``, rotation (before the rename), SIGHUP's
        reopen and files a reload drops (issue 15: up to 512 fdatasyncs in a row on the
        loop at SIGHUP).  Without a syncer, or with max_open_files fsyncs already in
        flight (each holds a descriptor), the fsync runs here as before.
        """
        self.open_files.pop(log_file, None)
        fd = log_file.fd
        if fd is None:
            return
        self.closed_files[log_file] = None
        self.closed_files.move_to_end(log_file)
        if self._syncer_has_room() and (
                log_file.syncing or log_file.written_seq > log_file.synced_seq):
            log_file.fd = None
            log_file.sync_again = False
            self._submit_sync(log_file, fd)   # the thread closes the descriptor
            return
        try:
            log_file.close()
        except OSError as exc:
            log.error('closing %s: %s', log_file.path, exc.strerror or exc)

    def _take_synced(self):
        """Account for the fsyncs the syncer finished: acks may go out, or lines be lost."""
        for log_file, seq, error in self.syncer.take_done():
            log_file.syncing -= 1
            if error is not None:
                self._sync_failed(log_file, error)
            else:
                self._sync_worked(log_file)
            if log_file.synced_inline and not log_file.syncing:
                # Once every fsync that ran beside it is done (each may be the one to
                # take the error both descriptors share), whether they failed or not
                # (failed: those lines count as lost, above).
                seq = max(seq, log_file.synced_inline)
                log_file.synced_inline = 0
            # After a failure too: those lines are reported lost (never acknowledged,
            # see Acknowledger.forget_lost), and later lines need a sync of their own.
            log_file.synced(seq)
            if log_file.sync_again:
                log_file.sync_again = False
                if log_file.written_seq > log_file.synced_seq:
                    self._sync_file(log_file)

    def _bound_backlog(self):
        """Keep the lines of failing files within ``max_backlog_bytes`` in all: drop the
        oldest lines of the largest backlog first.  Logged once per file until it can be
        written again; every dropped line is counted (``dropped_backlog``)."""
        total = sum(len(log_file.unwritten) for log_file in self.retrying)
        while total > self.max_backlog_bytes:
            log_file = max(self.retrying, key=lambda f: len(f.unwritten))
            data = log_file.unwritten
            if not isinstance(data, bytearray):
                data = log_file.unwritten = bytearray(data)
            cut = data.find(b'\n', total - self.max_backlog_bytes - 1) + 1 or len(data)
            dropped = data.count(b'\n', 0, cut)
            del data[:cut]
            total -= cut
            log_file.unwritten_lines -= dropped
            self.counters.count('dropped_backlog', dropped)
            self.lost.add(log_file)
            if not log_file.dropped:
                log.error('%s cannot be written and the lines waiting for it in memory are '
                          'over max_backlog (%d bytes in all): dropping the oldest (counted '
                          'in dropped_backlog)', log_file.path, self.max_backlog_bytes)
            log_file.dropped += dropped

    def take_lost(self):
        """Return and forget the files that may have lost lines since the last call."""
        lost, self.lost = self.lost, set()
        return lost

    def next_deadline(self):
        """The earliest time a flush is needed without new input (sync or retry), or None."""
        deadlines = [d for d in (f.sync_deadline() for f in self.unsynced_files) if d is not None]
        if self.dirty or (self.waiting_to_open and not self._syncs_backlogged()):
            deadlines.append(0.0)
        if self.retrying:
            deadlines.append(self.retry_at)
        return min(deadlines) if deadlines else None

    def has_backlog(self):
        return any(f.unwritten for f in self.files.values())

    def reopen(self):
        """Close every file (fsyncs on the syncer thread: ``release``); each is opened
        again on its next line.

        Used on SIGHUP so that an outside tool may move files away.
        """
        for log_file in list(self.files.values()):
            self.release(log_file)

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
                self.unsynced_files.discard(log_file)
                self.release(log_file)
                if self.rotation is not None:
                    self.rotation.forget_file(log_file)

    def close(self, now):
        """Write what is queued (trying failing files once more), sync and close every
        file (at exit).  Lines that still cannot be written are lost, and logged."""
        self.retry_at = now
        self.flush(now)
        if self.syncer is not None:
            # Every fsync started finishes (and is accounted for) before the files close;
            # one still wanted after those (sync_again) runs here: before, it went to the
            # stopped thread and never ended, which the file's close then papered over.
            self.syncer.close()
            self._take_synced()
            self.syncer = None
        for log_file in [f for f in self.retrying if f.unwritten]:
            log.error('stopping with %d lines that could not be written to %s: they are lost',
                      log_file.unwritten_lines, log_file.path)
            self.lost.add(log_file)
        for log_file in self.files.values():
            try:
                log_file.close()
            except OSError as exc:
                log.error('closing %s: %s', log_file.path, exc.strerror or exc)
