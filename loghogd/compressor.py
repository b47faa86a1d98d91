"""Compressing rotated files off the event loop: xz, gzip or bzip2, one file at a time.

The rotation code ``submit``s a backup.  A worker thread runs ``python -m
loghogd.compressor`` on it (``compress_file`` below, with the standard library's
``lzma``, ``zlib`` or ``bz2``), which writes ``<backup><suffix>.partial``, fsyncs it,
gives it the backup's modification time, renames it to ``<backup><suffix>`` and deletes
the backup: a crash never leaves a half-written file under a final name.  Then the
worker queues the finished job and wakes the loop (``wake``, the loop's thread-safe
wakeup); this object is a loop task, so the loop's ``tick`` hands each finished job to
its ``on_done`` callback on the loop's own thread.  The loop never waits for any of it:
``submit`` only appends to a queue.

Why a process and not the thread itself: a compressor in the daemon's process shares
the GIL with the loop, and creating an xz compressor holds the GIL for 8 ms at level 6
and 30 ms at level 9 (it sets up its match finder's tables), which stopped the loop that
long at the start of every file (benchmarks/bench_compress_pause.py: 39 ms at level 9 in
a thread, 8 ms in a child process).  A child process shares nothing with the loop; it
checks between chunks that the daemon is still its parent, and stops if not.

A backup deleted while it is being compressed (an operator's ``rm``) stays deleted: the
compressed copy is removed rather than left behind as ``<backup><suffix>``.

At start-up, ``recover`` finishes what a crash or a stop left behind in a folder:
partial files are removed, a backup whose compressed copy is complete is deleted, and
the other uncompressed backups are compressed again.
"""

import argparse
import bz2
import collections
import errno
import logging
import os
import queue
import subprocess
import sys
import threading
import time
import zlib

try:
    import lzma
except ImportError:      # Python built without liblzma: fall back to gzip (see Compressor)
    lzma = None

log = logging.getLogger('loghogd.compressor')

SUFFIXES = {'xz': '.xz', 'gzip': '.gz', 'bzip2': '.bz2'}
PARTIAL = '.partial'
# Read this much of a backup per step; between steps the child checks its parent.
CHUNK_BYTES = 256 * 1024
# How often the worker looks for a cancel or a stop while a child works.
POLL_S = 0.05
# How long ``close`` waits for the worker and its child to stop.
STOP_WAIT_S = 5.0
FILE_MODE = 0o640
# Exit statuses of ``python -m loghogd.compressor``.
EXIT_FAILED = 1
EXIT_ORPHANED = 3
EXIT_GONE = 4
# The folder holding the loghogd package, for the child's sys.path.
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _new_compressor(fmt, level):
    """A streaming compressor object (``compress``/``flush``) for ``fmt`` at ``level`` 0..9."""
    if fmt == 'xz':
        return lzma.LZMACompressor(format=lzma.FORMAT_XZ, preset=level)
    if fmt == 'gzip':
        return zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)   # gzip framing
    return bz2.BZ2Compressor(max(1, level))   # bzip2 has no level 0: 1 is its fastest


class Job:
    """One backup to compress.

    ``path`` is the uncompressed backup; ``result`` the compressed file once done (None
    if it failed, was cancelled, the daemon stopped first or the backup was deleted meanwhile:
    ``gone``); ``error`` a sentence when it failed.  Setting ``cancelled`` (from the loop's thread) makes the worker stop its
    child; a file the child still completed is the owner's to delete.
    """

    __slots__ = ('path', 'on_done', 'cancelled', 'result', 'error', 'gone', 'bytes_in',
                 'bytes_out', 'seconds')

    def __init__(self, path, on_done):
        self.path = path
        self.on_done = on_done
        self.cancelled = False
        self.result = None
        self.error = None
        self.gone = False
        self.bytes_in = 0
        self.bytes_out = 0
        self.seconds = 0.0

    def __repr__(self):
        return 'Job(%r)' % self.path


class Compressor:
    """The background compressor: a loop task owning one worker thread, which runs one
    child process per backup, one at a time.

    ``fmt`` is 'xz', 'gzip' or 'bzip2' ('xz' becomes 'gzip', with a warning, where
    Python has no lzma); ``level`` 0..9; ``wake`` is called from the worker after each
    job (``EventLoop.wake``).  ``start()`` starts the thread; ``close()`` stops it and
    its child.
    """

    name = 'compressor'

    def __init__(self, fmt, level, wake):
        if fmt == 'xz' and lzma is None:
            log.warning('[compressor] format = xz, but this Python has no lzma module: '
                        'using gzip')
            fmt = 'gzip'
        self.format = fmt
        self.level = level
        self.suffix = SUFFIXES[fmt]
        self.wake = wake
        self._queue = queue.SimpleQueue()
        self._finished = collections.deque()
        self._waiting = 0          # submitted, not yet handed back (loop thread only)
        self._current = None       # the job the worker is on (worker writes, status reads)
        self._stopping = threading.Event()
        self._thread = None
        self.compressed = 0
        self.failed = 0

    # -- the loop's side -------------------------------------------------------------------

    def start(self):
        self._thread = threading.Thread(target=self._work, name='loghogd-compressor',
                                        daemon=True)
        self._thread.start()

    def submit(self, path, on_done):
        """Queue ``path`` (an uncompressed backup); ``on_done(job)`` runs on the loop's
        thread when it is finished.  Returns the Job (to cancel it)."""
        job = Job(path, on_done)
        self._waiting += 1
        self._queue.put(job)
        return job

    def recover(self, folder, is_backup, on_done):
        """Start-up clean-up of ``folder``; returns the jobs submitted.

        ``is_backup(name)`` says whether a file name is an uncompressed backup (the
        rotation's naming).  Partial files of backups are removed; a backup with a
        complete compressed copy (a crash between the rename and the delete) is
        deleted; every other backup is submitted with ``on_done``.
        """
        try:
            names = set(os.listdir(folder))
        except FileNotFoundError:
            return []
        jobs = []
        compressed = tuple(SUFFIXES.values())
        # Partial files first: the worker may start on a backup as soon as it is submitted.
        for name in sorted(names):
            stem = name[:-len(PARTIAL)]
            if name.endswith(PARTIAL) and stem.endswith(compressed) \
                    and is_backup(stem[:stem.rindex('.')]):
                _remove(os.path.join(folder, name))
                log.info('removed %s, left over by an interrupted compression',
                         os.path.join(folder, name))
        for name in sorted(names):
            if name.endswith(compressed + (PARTIAL,)) or not is_backup(name):
                continue
            path = os.path.join(folder, name)
            done = [name + suffix for suffix in compressed if name + suffix in names]
            if done:
                _remove(path)
                log.info('removed %s: %s was already complete', path, done[0])
            else:
                log.info('compressing %s, left uncompressed by an earlier run', path)
                jobs.append(self.submit(path, on_done))
        return jobs

    def next_deadline(self):
        return 0.0 if self._finished else None

    def tick(self, now):
        """Hand every finished job to its ``on_done`` (on the loop's thread)."""
        while self._finished:
            job = self._finished.popleft()
            self._waiting -= 1
            if job.result is not None:
                self.compressed += 1
                log.info('compressed %s (%d -> %d bytes, %.1fs)', job.result, job.bytes_in,
                         job.bytes_out, job.seconds)
            elif job.gone:
                log.info('%s was deleted while being compressed: nothing kept', job.path)
            elif job.error is not None:
                self.failed += 1
                log.error('cannot compress %s: %s; it stays uncompressed and is tried '
                          'again at the next start', job.path, job.error)
            job.on_done(job)

    def status(self, now):
        current = self._current
        return {'format': self.format, 'level': self.level, 'waiting': self._waiting,
                'working_on': current.path if current is not None else None,
                'compressed': self.compressed, 'failed': self.failed}

    def close(self):
        """Stop the worker and its child (the file they were on stays uncompressed, for
        the next start to compress)."""
        self._stopping.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(STOP_WAIT_S)
            if self._thread.is_alive():
                log.warning('the compressor did not stop within %gs', STOP_WAIT_S)

    # -- the worker thread ------------------------------------------------------------------

    def _work(self):
        while True:
            job = self._queue.get()
            if job is None:
                return
            if not (self._stopping.is_set() or job.cancelled):
                self._current = job
                started = time.monotonic()
                try:
                    self._compress(job)
                except OSError as exc:
                    job.error = '%s: %s' % (exc.filename or job.path, exc.strerror or exc)
                except Exception as exc:   # a bug must not kill the worker: report and go on
                    job.error = 'internal error: %r' % exc
                job.seconds = time.monotonic() - started
                self._current = None
            if self._stopping.is_set():
                return
            self._finished.append(job)
            self.wake()

    def _compress(self, job):
        """Run the child on ``job.path``; stop it on a cancel or a stop."""
        path = os.path.abspath(job.path)     # the child runs in /
        job.bytes_in = os.stat(path).st_size
        target = path + self.suffix
        child = subprocess.Popen(
            [sys.executable, '-m', 'loghogd.compressor', '--format', self.format, '--level',
             str(self.level), '--parent', str(os.getpid()), path],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=_child_environment(), cwd='/',
            start_new_session=True)   # a Ctrl-C meant for the daemon is the daemon's to act on
        errors = b''
        while True:
            try:
                errors += child.communicate(timeout=POLL_S)[1] or b''
                break
            except subprocess.TimeoutExpired:
                if job.cancelled or self._stopping.is_set():
                    child.terminate()
                    child.wait()
                    _remove(target + PARTIAL)
                    return
        if child.returncode == 0:
            job.result = job.path + self.suffix
            job.bytes_out = os.stat(target).st_size
        elif child.returncode == EXIT_GONE:
            job.gone = True
        else:
            lines = errors.decode('utf-8', 'replace').strip().splitlines()
            job.error = lines[-1] if lines else 'exit status %d' % child.returncode
            _remove(target + PARTIAL)


def _child_environment():
    """The daemon's environment, plus the folder loghogd was imported from when Python
    would not find it by itself (a source tree the daemon was started in with -m)."""
    env = dict(os.environ)
    if _PACKAGE_ROOT not in sys.path[1:]:
        env['PYTHONPATH'] = os.pathsep.join([_PACKAGE_ROOT] + (
            [env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    return env


# -- the child process ------------------------------------------------------------------------

class Orphaned(Exception):
    """The daemon that started this compression is gone: stop, leave it to the next one."""


class BackupGone(Exception):
    """The backup was deleted (or replaced) while it was being compressed: keep nothing."""


def compress_file(path, fmt, level, should_stop=lambda: False):
    """Compress ``path`` to ``<path><suffix>``: partial file, fsync, the source's times,
    rename, delete ``path``, fsync the folder.  Returns the compressed file's path.

    ``should_stop()`` is asked between chunks; when it is true, the partial file is
    removed (if it is still this call's) and Orphaned is raised.  When ``path`` was deleted
    meanwhile, nothing is left and BackupGone is raised.  Raises OSError.
    """
    target = path + SUFFIXES[fmt]
    partial = target + PARTIAL
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
    with open(path, 'rb') as source, open(os.open(partial, flags, FILE_MODE), 'wb') as output:
        try:
            engine = _new_compressor(fmt, level)
            while chunk := source.read(CHUNK_BYTES):
                if should_stop():
                    raise Orphaned(path)
                output.write(engine.compress(chunk))
            output.write(engine.flush())
            output.flush()
            os.fsync(output.fileno())
            stat = os.fstat(source.fileno())
            os.utime(output.fileno(), ns=(stat.st_atime_ns, stat.st_mtime_ns))
            if not _is_same_file(partial, output.fileno()):
                raise Orphaned(path)    # a newer daemon started over on this backup
            if not _is_same_file(path, source.fileno()):
                raise BackupGone(path)  # deleted under us: compressing it would revive it
        except BaseException:
            if _is_same_file(partial, output.fileno()):
                _remove(partial)
            raise
    os.rename(partial, target)
    try:
        os.unlink(path)
    except FileNotFoundError:           # deleted between the check and the rename
        _remove(target)
        raise BackupGone(path) from None
    _sync_folder(os.path.dirname(target))
    return target


def _is_same_file(path, fd):
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (on_disk.st_ino, on_disk.st_dev) == (mine.st_ino, mine.st_dev)


def main(argv=None):
    """``python -m loghogd.compressor --format F --level N --parent PID BACKUP``: exit 0
    when compressed, 1 with a sentence on stderr when not, 3 when the parent is gone, 4 when
    the backup was deleted meanwhile (nothing is left of it)."""
    parser = argparse.ArgumentParser(prog='python -m loghogd.compressor')
    parser.add_argument('--format', choices=sorted(SUFFIXES), required=True)
    parser.add_argument('--level', type=int, choices=range(10), required=True)
    parser.add_argument('--parent', type=int, required=True)
    parser.add_argument('backup')
    args = parser.parse_args(argv)
    try:
        compress_file(args.backup, args.format, args.level,
                      should_stop=lambda: os.getppid() != args.parent)
    except Orphaned:
        return EXIT_ORPHANED
    except BackupGone:
        return EXIT_GONE
    except OSError as exc:
        print('%s: %s' % (exc.filename or args.backup, exc.strerror or exc), file=sys.stderr)
        return EXIT_FAILED
    return 0


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:   # never a reason not to start (issue 15)
        log.warning('cannot delete %s: %s', path, exc.strerror or exc)


def _sync_folder(folder):
    """fsync a folder so that a rename in it survives a crash (best effort)."""
    try:
        fd = os.open(folder or '.', os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EROFS):
            raise
    finally:
        os.close(fd)


if __name__ == '__main__':
    sys.exit(main())
