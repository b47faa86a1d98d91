"""Rotating log files: when, under which name, how many backups remain, and the state
that makes a restart neither forget nor repeat a rotation.

When.  Each file has a period: it began at ``period_start`` (Unix time) and ends at the
schedule's next deadline after it (schedule.py), or earlier when the file reaches its
facility's ``max_size``.  The loop wakes up for the nearest deadline, so files rotate on
time even when nobody writes to them.  A file whose deadline passed while the daemon
was down is rotated at start-up.  An empty (or missing) file is never rotated: its
period just moves on.

Where the work happens.  The Writer calls ``check`` for a file before writing lines
received at or after its deadline (so that they start the next file), and after a write
that brought it to ``max_size``: two comparisons per file per flush, nothing per
message.  Files nobody writes to are handled by ``tick``, this object being a loop task.

Names (backups.py).  A rotated file is renamed ``<file>.<YYYY-MM-DD-HH-MM-SS-ffffff>``:
the local time at which the period it holds began (for a schedule, the deadline that
began it; after a rotation for size, the moment of that rotation), as the original
loghogd named them.  The compressor then appends ``.xz``, ``.gz`` or ``.bz2``.  A new
name is always later than the newest backup of the same file: when the period's time
is not (the clock was set back, or the hour repeated when DST ends), the name takes
that backup's time plus one microsecond.  So names never collide, and sorting them
sorts backups by age.

Retention.  After each rotation (and at start-up, and after a reload), the newest
``backup_count`` backups of that file remain, compressed or not; older ones are deleted
(a compression still running on one is cancelled).  Only names of the form above with
the file's own name before the dot count: ``web.log`` never touches ``web.requests.log``
or ``host-web.log``.

State.  ``<workdir>/rotation.json`` keeps, per file, when its period began and when it
last rotated.  It is written through a temporary file, fsync and rename whenever it
changed, at most once per loop iteration.  A file the state does not know takes its
period from its last modification time.
"""

import functools
import json
import logging
import os

from .backups import (backup_wall_time, backups_of, format_stamp, is_uncompressed_backup,
                      to_prune)
from .files import write_atomically
from .writer import FILE_MODE

log = logging.getLogger('loghogd.rotation')

INF = float('inf')
STATE_NAME = 'rotation.json'
STATE_FORMAT = 1
# After a rename fails (permissions, a full or read-only disk), try again this much later
# rather than on every flush.
RETRY_S = 60.0


class Policy:
    """How one file rotates: ``schedule`` (a Schedule), ``backup_count``, ``max_size``
    (bytes, or None)."""

    __slots__ = ('schedule', 'backup_count', 'max_size')

    def __init__(self, schedule, backup_count, max_size=None):
        self.schedule = schedule
        self.backup_count = backup_count
        self.max_size = max_size

    @classmethod
    def of(cls, facility):
        return cls(facility.rotate, facility.backup_count, facility.max_size)

    def __eq__(self, other):
        return isinstance(other, Policy) and (self.schedule, self.backup_count, self.max_size) \
            == (other.schedule, other.backup_count, other.max_size)

    def period_start(self, moment):
        """The start of the period that ``moment`` (Unix time) falls in: the latest
        deadline at or before it (``moment`` itself for size-only schedules)."""
        previous = self.schedule.previous_at_or_before(moment)
        return moment if previous is None else previous

    def deadline_after(self, moment):
        """The first scheduled deadline strictly after ``moment``, or None."""
        try:
            return self.schedule.next_after(moment)
        except ValueError as exc:
            log.error('%s: not rotating on a schedule any more', exc)
            return None


class Tracked:
    """One rotated file: its policy, its period and what writes to it.

    ``owner`` is (app, facility path) for application files, None for the daemon's own
    log; ``log_files`` are the Writer's LogFiles on this path; ``handler`` the logging
    handler writing the daemon's own log.  ``deadline`` is the scheduled end of the
    period (None: size only); ``retry_at`` is set while a failed rename waits.
    """

    def __init__(self, path, policy, owner, period_start, handler=None):
        self.path = path
        self.policy = policy
        self.owner = owner
        self.handler = handler
        self.log_files = []
        self.period_start = period_start
        self.deadline = policy.deadline_after(period_start)
        self.retry_at = None
        self.last_rotation = None
        self.backups = None

    @property
    def wake_at(self):
        """When ``tick`` must look at this file again (Unix time; INF: never)."""
        if self.retry_at is not None:
            return self.retry_at
        return INF if self.deadline is None else self.deadline


# -- the loop task ----------------------------------------------------------------------------

class Rotator:
    """Rotates, prunes and hands to the compressor every file of the Writer, and the
    daemon's own log.  A loop task: ``next_deadline()``/``tick(now)``/``close()``.

    Construct it, ``add_own_log`` if there is one, then ``start(now)`` before serving:
    start-up loads the state, cleans up after the compressor (``Compressor.recover``),
    rotates files whose deadline passed while the daemon was down and prunes.
    ``reload(table, now)`` applies a new facility table (after SIGHUP).
    """

    name = 'rotation'

    def __init__(self, writer, table, logdir, workdir, compressor, counters):
        self.writer = writer
        self.table = table
        self.logdir = logdir
        self.state_path = os.path.join(workdir, STATE_NAME)
        self.compressor = compressor
        self.counters = counters
        self.files = {}          # path -> Tracked
        self.compressing = {}    # backup path -> compressor Job
        self._next = INF
        self._state_dirty = False
        self._state_failing = False
        writer.rotation = self

    def add_own_log(self, path, schedule, backup_count, handler, now):
        """Rotate the daemon's own log at ``path`` (written by the logging ``handler``,
        a WatchedFileHandler) on ``schedule``, keeping ``backup_count`` backups."""
        if schedule.is_size_only:
            log.warning('[log] when = size: the daemon\'s own log has no max_size, so it '
                        'is not rotated')
            return
        policy = Policy(schedule, backup_count)
        self.files[path] = Tracked(path, policy, None, self._first_period(path, policy, now),
                                   handler)

    def start(self, now):
        """Load the state, recover, rotate what went stale while down, prune; save."""
        for path, entry in self._load_state().items():
            self._adopt(path, entry)
        self._discover(now)
        self._recover()
        for tracked in list(self.files.values()):
            self._check(tracked, now)
            if tracked.backups is None:
                self._prune(tracked)
            self._mirror(tracked)
        self._state_dirty = True
        self.tick(now)

    # -- the task ---------------------------------------------------------------------------

    def next_deadline(self):
        """0 while the state needs saving, else the nearest deadline (None: none)."""
        if self._state_dirty:
            return 0.0
        return None if self._next == INF else self._next

    def tick(self, now):
        """Rotate every file whose deadline (or retry time) has come; save the state."""
        for tracked in list(self.files.values()):
            if now >= tracked.wake_at:
                self._check(tracked, now)
                self._mirror(tracked)
        if self._state_dirty:
            self._save_state()
        self._refresh_next()

    def close(self):
        if self._state_dirty:
            self._save_state()

    def status(self, now):
        return {'files': len(self.files), 'compressing': len(self.compressing),
                'next_rotation': None if self._next == INF else round(self._next, 3)}

    # -- the Writer's hook --------------------------------------------------------------------

    def check(self, log_file, now):
        """Called by the Writer for ``log_file`` when ``now >= log_file.rotate_at`` (before
        writing what was received at ``now``) or ``log_file.size >= log_file.rotate_size``
        (after a write): rotate it if it is due, start tracking it if it is new, and set
        both attributes again."""
        tracked = self.files.get(log_file.path)
        if tracked is None:
            policy = Policy.of(log_file.facility)
            tracked = Tracked(log_file.path, policy, (log_file.facility.app, log_file.facility.path),
                              self._first_period(log_file.path, policy, now))
            self.files[log_file.path] = tracked
            self._state_dirty = True
        if log_file not in tracked.log_files:
            tracked.log_files.append(log_file)
        size = log_file.size if log_file.fd is not None else None
        self._check(tracked, now, size)
        if tracked.backups is None:
            self._prune(tracked)
        self._mirror(tracked)
        self._refresh_next()

    # -- reload ------------------------------------------------------------------------------

    def reload(self, table, now):
        """Apply ``table`` (after SIGHUP): new rotate/max_size/backup_count take effect now.

        A changed schedule ends the current period at its first deadline after the
        period began (at once, if that has passed); a lower max_size or backup_count
        rotates or prunes at once.  Files whose facility is gone are no longer tracked.
        """
        self.table = table
        live = {id(log_file) for log_file in self.writer.files.values()}
        for path, tracked in list(self.files.items()):
            tracked.log_files = [f for f in tracked.log_files if id(f) in live]
            if tracked.owner is None:
                continue
            app, facility_path = tracked.owner
            facility = table.by_app.get(app, {}).get(facility_path)
            if facility is None:
                del self.files[path]
                self._state_dirty = True
                continue
            policy = Policy.of(facility)
            if policy == tracked.policy:
                continue
            changed_schedule = policy.schedule != tracked.policy.schedule
            tracked.policy = policy
            if changed_schedule:
                tracked.deadline = policy.deadline_after(tracked.period_start)
            log.info('%s: rotate = %s, max_size = %s, backup_count = %d from now on', path,
                     policy.schedule.text, policy.max_size, policy.backup_count)
            self._check(tracked, now)
            self._prune(tracked)
            self._mirror(tracked)
        self._state_dirty = True
        self._refresh_next()

    # -- deciding --------------------------------------------------------------------------

    def _first_period(self, path, policy, now):
        """Period start of a file the state does not know: from its last modification, or
        ``now`` for an empty or missing file."""
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            stat = None
        moment = stat.st_mtime if stat is not None and stat.st_size else now
        return policy.period_start(min(moment, now))

    def _check(self, tracked, now, size=None):
        """Rotate ``tracked`` if its deadline has come or it reached max_size."""
        if tracked.retry_at is not None:
            if now < tracked.retry_at:
                return
            tracked.retry_at = None
        max_size = tracked.policy.max_size
        time_due = tracked.deadline is not None and now >= tracked.deadline
        if size is None and (time_due or max_size is not None):
            size = _size_on_disk(tracked.path)
        size_due = max_size is not None and size >= max_size
        if not (time_due or size_due):
            return
        if size:
            self._rotate(tracked, now, time_due)
        else:   # nothing to keep: the period just moves on
            self._new_period(tracked, now, time_due)

    def _new_period(self, tracked, now, scheduled):
        """Start the next period at ``now``: the deadline's period, or ``now`` itself."""
        tracked.period_start = tracked.policy.period_start(now) if scheduled else now
        tracked.deadline = tracked.policy.deadline_after(now)
        self._state_dirty = True

    # -- doing -----------------------------------------------------------------------------

    def _rotate(self, tracked, now, scheduled):
        """Rename the live file to its backup name, start the next period, prune, compress."""
        folder, base = os.path.split(tracked.path)
        existing = backups_of(base, _list(folder))
        wall = backup_wall_time(tracked.period_start, max(existing) if existing else None)
        backup = '%s.%s' % (tracked.path, format_stamp(wall))
        try:
            self._rename_live(tracked, backup)
        except FileNotFoundError:
            self._new_period(tracked, now, scheduled)   # removed under us: nothing to keep
            return
        except OSError as exc:
            tracked.retry_at = now + RETRY_S
            self.counters.count('rotation_errors')
            log.error('cannot rotate %s: %s; trying again in %ds', tracked.path,
                      exc.strerror or exc, RETRY_S)
            return
        tracked.last_rotation = now
        self._new_period(tracked, now, scheduled)
        self.counters.count('rotations')
        log.info('rotated %s to %s (%s)', tracked.path, os.path.basename(backup),
                 'schedule %s' % tracked.policy.schedule.text if scheduled else
                 'max_size %d bytes' % tracked.policy.max_size)
        existing[wall] = [os.path.basename(backup)]
        kept = self._prune(tracked, existing)
        if wall in kept:
            self.compressing[backup] = self.compressor.submit(backup, self._compressed)

    def _rename_live(self, tracked, backup):
        """Close the Writer's descriptors, rename, and open the new, empty file."""
        for log_file in tracked.log_files:
            try:
                log_file.close()     # syncs: the backup is complete on disk
            except OSError as exc:
                log.error('closing %s: %s', log_file.path, exc.strerror or exc)
        if tracked.handler is None:
            os.rename(tracked.path, backup)
        else:
            tracked.handler.acquire()   # no record of our own may land in the backup
            try:
                os.rename(tracked.path, backup)
                tracked.handler.reopenIfNeeded()
            finally:
                tracked.handler.release()
        for log_file in tracked.log_files:
            log_file.size = 0
        _create_empty(tracked)

    def _prune(self, tracked, existing=None):
        """Delete the oldest backups of ``tracked`` beyond backup_count; return the kept ones."""
        folder, base = os.path.split(tracked.path)
        if existing is None:
            existing = backups_of(base, _list(folder))
        doomed = to_prune(existing, tracked.policy.backup_count)
        for wall in doomed:
            for name in existing.pop(wall):
                path = os.path.join(folder, name)
                job = self.compressing.pop(path, None)
                if job is not None:
                    job.cancelled = True     # the worker stops; _compressed deletes a result
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    log.error('cannot delete old backup %s: %s', path, exc.strerror or exc)
                else:
                    log.info('deleted %s (backup_count = %d)', path, tracked.policy.backup_count)
        tracked.backups = len(existing)
        return existing

    def _compressed(self, job):
        """The compressor finished ``job`` (on the loop's thread)."""
        if self.compressing.get(job.path) is job:
            del self.compressing[job.path]
        if job.cancelled and job.result is not None:
            try:
                os.unlink(job.result)   # pruned while it was being compressed
            except FileNotFoundError:
                pass

    def _recover(self):
        """Have the compressor clean up after an earlier run, in every folder we write."""
        folders = {}
        for tracked in self.files.values():
            if tracked.owner is None:
                folder, base = os.path.split(tracked.path)
                folders.setdefault(folder, set()).add(base)
        for name in _list(self.logdir):
            folder = os.path.join(self.logdir, name)
            if os.path.isdir(folder):
                folders[folder] = None      # an app folder: every *.log file is ours

        for folder, bases in sorted(folders.items()):
            is_backup = functools.partial(is_uncompressed_backup, bases)
            for job in self.compressor.recover(folder, is_backup, self._compressed):
                self.compressing[job.path] = job

    def _mirror(self, tracked):
        """Copy what the Writer and the status snapshot need onto the LogFiles."""
        rotate_size = tracked.policy.max_size
        if rotate_size is None or tracked.retry_at is not None:
            rotate_size = INF
        for log_file in tracked.log_files:
            log_file.rotate_at = tracked.wake_at
            log_file.rotate_size = rotate_size
            log_file.last_rotation = tracked.last_rotation
            log_file.next_rotation = tracked.deadline
            log_file.backups = tracked.backups

    def _refresh_next(self):
        self._next = min((tracked.wake_at for tracked in self.files.values()), default=INF)

    # -- state -----------------------------------------------------------------------------

    def _adopt(self, path, entry):
        """Track a file known from the state, if its facility (or own log) still exists."""
        try:
            period_start = float(entry['period_start'])
            last_rotation = entry.get('last_rotation')
            app, facility_path = entry.get('app'), entry.get('facility')
        except (KeyError, TypeError, ValueError, AttributeError):
            return
        tracked = self.files.get(path)
        if tracked is None:
            if app is None or facility_path is None:
                return
            facility = self.table.by_app.get(app, {}).get(tuple(facility_path))
            if facility is None:
                return
            policy = Policy.of(facility)
            tracked = self.files[path] = Tracked(path, policy, (app, facility.path),
                                                 period_start)
        else:
            tracked.period_start = period_start
            tracked.deadline = tracked.policy.deadline_after(period_start)
        tracked.last_rotation = last_rotation

    def _discover(self, now):
        """Track the existing files of configured facilities that the state does not know
        (a lost state, files of an older loghogd), so that they rotate even if idle."""
        for app, facilities in self.table.by_app.items():
            folder = os.path.join(self.logdir, app)
            plain = {f.file_name(): f for f in facilities.values() if not f.file_per_host}
            per_host = sorted((f for f in facilities.values() if f.file_per_host),
                              key=lambda f: -len(f.name))   # the longest name wins
            for name in _list(folder):
                path = os.path.join(folder, name)
                facility = plain.get(name) or next(
                    (f for f in per_host if name.endswith('-' + f.file_name())), None)
                if facility is None or path in self.files or not os.path.isfile(path):
                    continue
                policy = Policy.of(facility)
                self.files[path] = Tracked(path, policy, (app, facility.path),
                                           self._first_period(path, policy, now))

    def _load_state(self):
        try:
            with open(self.state_path, encoding='utf-8') as stream:
                data = json.load(stream)
            files = data['files']
            if data.get('format') != STATE_FORMAT or not isinstance(files, dict):
                raise ValueError('unknown format')
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning('%s cannot be read (%s): rotation periods start again from the '
                        'files\' modification times', self.state_path, exc)
            return {}
        return files

    def _save_state(self):
        files = {}
        for path, tracked in sorted(self.files.items()):
            app, facility_path = tracked.owner if tracked.owner is not None else (None, None)
            files[path] = {'period_start': tracked.period_start,
                           'last_rotation': tracked.last_rotation,
                           'app': app, 'facility': list(facility_path) if app else None}
        data = json.dumps({'format': STATE_FORMAT, 'files': files}, indent=1, sort_keys=True)
        try:
            write_atomically(self.state_path, data.encode('utf-8'), durable=True)
        except OSError as exc:
            if not self._state_failing:
                log.error('cannot save rotation state to %s: %s', self.state_path,
                          exc.strerror or exc)
            self._state_failing = True
        else:
            if self._state_failing:
                log.warning('saving rotation state to %s again', self.state_path)
            self._state_failing = False
        self._state_dirty = False


def _create_empty(tracked):
    """Open the new live file at once (readers following the name see it at once); if
    that fails, the Writer tries again with the next line."""
    try:
        if tracked.log_files:
            for log_file in tracked.log_files:
                log_file.open()
        elif tracked.handler is None:
            os.close(os.open(tracked.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
                             | os.O_NOFOLLOW, FILE_MODE))
    except OSError as exc:
        log.warning('cannot create %s again yet: %s', tracked.path, exc.strerror or exc)


def _size_on_disk(path):
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _list(folder):
    try:
        return os.listdir(folder)
    except FileNotFoundError:
        return []
