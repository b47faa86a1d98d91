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
or ``host-web.log``.  A backup that cannot be deleted is a warning (and counted), never
a reason to stop.

Bounded work (issue 15).  Each folder is listed once, at start-up (or when a file
first appears in a folder not listed yet); from then on each file's backups are kept
in memory (their wall times, in order), so a rotation costs a stat, a rename, an open
and what it deletes, never a listing.  The nearest deadlines come from a heap.  ``tick``
does at most TICK_BUDGET_S of rotations per loop pass and leaves the rest due, so the
loop serves its sockets between slices: 10,000 files due at the same minute never hold
it for long.  A wall clock set back by more than CLOCK_BACK_S brings every deadline
forward to the schedule's first time after the new ``now``; so does, at start-up, a saved
period that begins more than CLOCK_BACK_S after ``now`` (the clock was set back while the
daemon was stopped).

State.  ``<workdir>/rotation.json`` keeps, per file, when its period began and when it
last rotated (rotation_state.py: a journal line per change, appended once per loop pass;
the whole file rewritten on a thread now and then).  A file the state does not know
takes its period from its last modification time.
"""

import collections
import functools
import heapq
import itertools
import logging
import os
import time

from .backups import (COMPRESSED_SUFFIXES, backup_wall_time, format_stamp,
                      is_uncompressed_backup, parse_backup_name)
from .rotation_state import RotationState
from .sealing import SUFFIX as SEAL_SUFFIX
from .writer import FILE_MODE

log = logging.getLogger('loghogd.rotation')

INF = float('inf')
# After a rename fails (permissions, a full or read-only disk), try again this much later
# rather than on every flush.
RETRY_S = 60.0
# Rotation work per loop pass (seconds): a good client of another application waits at
# most about this long for a pass (issue 15's target: its p99 under 50 ms).  Work left
# over stays due, and the loop comes back to it right after serving its sockets.  About
# 100 rotations per pass.  benchmarks/bench_rotation_daemon.py --files 10000 measured a
# good client's p99 at 52 ms with 20 ms, 44 ms with 5 ms (a loaded 2-core machine).
TICK_BUDGET_S = 0.005
# A wall clock that goes back by more than this brings the deadlines forward; smaller
# steps are NTP's slewing and the like.
CLOCK_BACK_S = 60.0
# A reload logs the new settings of this many files one by one, then a summary; so does a
# start-up that finds saved periods in the future.
RELOAD_LOG_FILES = 20
# The state is rewritten whole once its journal holds more lines than this or than
# there are files, whichever is more: amortised, a change costs about two lines.
JOURNAL_MIN_LINES = 1000


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
    """One rotated file: its policy, its period, its backups and what writes to it.

    ``owner`` is (app, facility path) for application files, None for the daemon's own
    log; ``log_files`` are the Writer's LogFiles on this path; ``handler`` the logging
    handler writing the daemon's own log.  ``deadline`` is the scheduled end of the
    period (None: size only); ``retry_at`` is set while a failed rename waits.
    ``walls`` are the wall times of its backups, oldest first (None: not known yet);
    ``heap_at`` the time of its entry in the Rotator's heap (None: none).
    """

    __slots__ = ('path', 'policy', 'owner', 'handler', 'log_files', 'period_start',
                 'deadline', 'retry_at', 'last_rotation', 'walls', 'heap_at')

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
        self.walls = None
        self.heap_at = None

    @property
    def wake_at(self):
        """When ``tick`` must look at this file again (Unix time; INF: never)."""
        if self.retry_at is not None:
            return self.retry_at
        return INF if self.deadline is None else self.deadline

    @property
    def backups(self):
        return None if self.walls is None else len(self.walls)

    def state_entry(self):
        app, facility_path = self.owner if self.owner is not None else (None, None)
        return {'period_start': self.period_start, 'last_rotation': self.last_rotation,
                'app': app, 'facility': list(facility_path) if app else None}


# -- the loop task ----------------------------------------------------------------------------

class Rotator:
    """Rotates, prunes and hands to the compressor every file of the Writer, and the
    daemon's own log.  A loop task: ``next_deadline()``/``tick(now)``/``close()``.

    Construct it, ``add_own_log`` if there is one, then ``start(now)`` before serving:
    start-up loads the state, lists the folders once, cleans up after the compressor
    (``Compressor.recover``), rotates files whose deadline passed while the daemon was
    down and prunes.  ``reload(table, now)`` applies a new facility table (after SIGHUP).
    """

    name = 'rotation'

    def __init__(self, writer, table, logdir, workdir, compressor, counters, sealer=None):
        self.writer = writer
        self.sealer = sealer     # sealed files' sidecars follow them (sealer.py)
        self.table = table
        self.logdir = logdir
        self.state = RotationState(workdir)
        self.compressor = compressor
        self.counters = counters
        self.files = {}          # path -> Tracked
        self.compressing = {}    # backup path -> compressor Job
        self._heap = []          # (wake_at, sequence, Tracked); stale entries skipped
        self._sequence = itertools.count()
        # Backups found by the one listing of each folder, for files not tracked yet:
        # folder -> {base name: [wall times, oldest first]}.
        self._listed = {}
        self._dirty = set()      # paths whose state entry changed since the last save
        self._reloading = collections.deque()   # paths the last reload has not looked at
        self._reload_changed = 0
        self._last_now = None
        # Scheduled deadlines at or after this time wait (their files are written on, not
        # rotated): with receiver processes, until every receiver has handed over the
        # lines it received before the deadline (receivers.ReceiverPool, A4-w13).
        self.hold = INF
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
        """Load the state, list the folders, recover, rotate what went stale while down,
        prune; write the state whole."""
        self._last_now = now
        self._adopt_saved(now)
        self._discover(now)
        self._recover()
        for tracked in list(self.files.values()):
            self._check(tracked, now)
            if tracked.walls is None:
                self._prune(tracked)
            self._mirror(tracked)
            self._push(tracked)
        self.state.write_snapshot(self._entries(), wait=True)
        self._dirty.clear()
        self.tick(now)

    # -- the task ---------------------------------------------------------------------------

    def next_deadline(self):
        """0 while the state needs saving or a reload is being applied, else the nearest
        deadline (None: none)."""
        if self._dirty or self._reloading:
            return 0.0
        wake = self._nearest()
        return None if wake == INF or wake >= self.hold else wake

    def nearest(self):
        """The nearest time this task rotates something (INF: none), held or not."""
        return self._nearest()

    def tick(self, now, budget_s=TICK_BUDGET_S):
        """Rotate files whose deadline (or retry time) has come, for about ``budget_s``
        seconds of work at most (the rest stays due for the next pass); save the state."""
        self._note_time(now)
        heap = self._heap
        began = time.perf_counter()
        if self._reloading:
            self._reload_slice(now, began, budget_s)
            if self._reloading:
                heap = ()        # the budget went on the reload: rotations next pass
        while heap and heap[0][0] <= now and heap[0][0] < self.hold:
            wake, _, tracked = heapq.heappop(heap)
            if tracked.heap_at != wake or self.files.get(tracked.path) is not tracked:
                continue     # a stale entry: the file's deadline moved, or it is gone
            tracked.heap_at = None
            self._check(tracked, now)
            self._prune(tracked)     # nothing to do unless backup_count was lowered
            self._mirror(tracked)
            self._push(tracked)
            if time.perf_counter() - began >= budget_s:
                break
        if self._dirty:
            self._save_state()

    def close(self):
        if self._dirty or self.state.journal_lines:
            self.state.write_snapshot(self._entries(), wait=True)
            self._dirty.clear()
        self.state.close()

    def status(self, now):
        wake = self._nearest()
        return {'files': len(self.files), 'compressing': len(self.compressing),
                'next_rotation': None if wake == INF else round(wake, 3)}

    # -- the Writer's hook --------------------------------------------------------------------

    def check(self, log_file, now):
        """Called by the Writer for ``log_file`` when ``now >= log_file.rotate_at`` (before
        writing what was received at ``now``) or ``log_file.size >= log_file.rotate_size``
        (after a write): rotate it if it is due, start tracking it if it is new, and set
        both attributes again."""
        self._note_time(now)
        tracked = self.files.get(log_file.path)
        if tracked is None:
            policy = Policy.of(log_file.facility)
            # While a deadline is held, a new file's first lines were received before it.
            first = now if now < self.hold else self.hold - 1e-6
            tracked = Tracked(log_file.path, policy, (log_file.facility.app, log_file.facility.path),
                              self._first_period(log_file.path, policy, first))
            self.files[log_file.path] = tracked
            self._dirty.add(tracked.path)
        if log_file not in tracked.log_files:
            tracked.log_files.append(log_file)
        size = log_file.size if log_file.fd is not None else None
        self._check(tracked, now, size)
        self._prune(tracked)         # a new file's backups, or a lowered backup_count
        self._mirror(tracked)
        self._push(tracked)

    def forget_file(self, log_file):
        """The Writer forgot ``log_file`` (idle, closed): stop mirroring onto it.  The path
        stays tracked; a new LogFile for it is added by ``check``."""
        tracked = self.files.get(log_file.path)
        if tracked is not None and log_file in tracked.log_files:
            tracked.log_files.remove(log_file)

    # -- reload ------------------------------------------------------------------------------

    def reload(self, table, now):
        """Apply ``table`` (after SIGHUP): new rotate/max_size/backup_count take effect
        from ``tick``'s next slices.

        A changed schedule ends the current period at its first deadline after the
        period began (at once, if that has passed); a lower max_size or backup_count
        rotates or prunes at once.  Files whose facility is gone are no longer tracked.
        Each file is looked at in ``tick``'s 5 ms slices, not here (issue 15: a reload
        that switched 2,000 files to hourly computed their 2,000 deadlines, 0.4 s, in one
        pass, and before that rotated them all in it).  A reload before the last one is
        done starts again from the first file, with the newer table.
        """
        self._note_time(now)
        self.table = table
        self._reloading = collections.deque(self.files)
        self._reload_changed = 0

    def _reload_slice(self, now, began, budget_s):
        """Look at the files of the last reload for about ``budget_s`` from ``began``."""
        queue = self._reloading
        while queue:
            tracked = self.files.get(queue.popleft())
            if tracked is not None:
                self._reload_file(tracked, now)
            if time.perf_counter() - began >= budget_s:
                return
        if self._reload_changed > RELOAD_LOG_FILES:
            log.info('new rotate, max_size or backup_count for %d files (%d more than those '
                     'above)', self._reload_changed, self._reload_changed - RELOAD_LOG_FILES)

    def _reload_file(self, tracked, now):
        if tracked.owner is None:
            return
        app, facility_path = tracked.owner
        facility = self.table.by_app.get(app, {}).get(facility_path)
        if facility is None:
            self._forget(tracked)
            return
        policy = Policy.of(facility)
        if policy == tracked.policy:
            return
        changed_schedule = policy.schedule != tracked.policy.schedule
        tracked.policy = policy
        if changed_schedule:
            tracked.deadline = policy.deadline_after(tracked.period_start)
        self._reload_changed += 1
        if self._reload_changed <= RELOAD_LOG_FILES:
            log.info('%s: rotate = %s, max_size = %s, backup_count = %d from now on',
                     tracked.path, policy.schedule.text, policy.max_size, policy.backup_count)
        self._mirror(tracked)
        self._recheck(tracked, now)
        self._dirty.add(tracked.path)

    def _recheck(self, tracked, now):
        """Have ``tick`` look at ``tracked`` (rotate, prune) at ``now``, in its slices."""
        tracked.heap_at = now
        heapq.heappush(self._heap, (now, next(self._sequence), tracked))

    def _forget(self, tracked):
        """Stop tracking ``tracked`` (its facility is gone); its backups stay known, in
        case the facility comes back."""
        del self.files[tracked.path]
        if tracked.walls is not None:
            folder, base = os.path.split(tracked.path)
            self._listed.setdefault(folder, {})[base] = tracked.walls
        self._dirty.add(tracked.path)

    # -- the clock ---------------------------------------------------------------------------

    def _note_time(self, now):
        """Bring every deadline forward when the wall clock went back (issue 15: after
        the clock was set back an hour, a ``* * * * *`` file waited for its old one)."""
        last, self._last_now = self._last_now, now
        if last is None or now >= last - CLOCK_BACK_S:
            return
        log.warning('the clock went back by %.0f s: rotation deadlines computed again',
                    last - now)
        for tracked in self.files.values():
            if tracked.deadline is not None:
                deadline = tracked.policy.deadline_after(now)
                if deadline is not None and deadline < tracked.deadline:
                    tracked.deadline = deadline
            if tracked.retry_at is not None and tracked.retry_at > now + RETRY_S:
                tracked.retry_at = now + RETRY_S
            self._mirror(tracked)
            self._push(tracked)

    # -- the heap ----------------------------------------------------------------------------

    def _push(self, tracked):
        """Make sure the heap holds ``tracked`` at its wake_at (older entries go stale)."""
        wake = tracked.wake_at
        if wake == INF or tracked.heap_at == wake:
            return
        tracked.heap_at = wake
        heapq.heappush(self._heap, (wake, next(self._sequence), tracked))
        if len(self._heap) > 2 * len(self.files) + 1024:
            self._rebuild_heap()

    def _rebuild_heap(self):
        self._heap = [(t.heap_at, next(self._sequence), t) for t in self.files.values()
                      if t.heap_at is not None]
        heapq.heapify(self._heap)

    def _nearest(self):
        """The nearest wake_at of a tracked file (INF: none); drops stale heap entries."""
        heap = self._heap
        while heap:
            wake, _, tracked = heap[0]
            if tracked.heap_at == wake and self.files.get(tracked.path) is tracked:
                return wake
            heapq.heappop(heap)
        return INF

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
        time_due = (tracked.deadline is not None and now >= tracked.deadline
                    and tracked.deadline < self.hold)
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
        self._dirty.add(tracked.path)

    # -- doing -----------------------------------------------------------------------------

    def _rotate(self, tracked, now, scheduled):
        """Rename the live file to its backup name, start the next period, prune, compress."""
        if tracked.walls is None:
            tracked.walls = self._listed_walls(tracked.path)
        walls = tracked.walls
        wall = backup_wall_time(tracked.period_start, walls[-1] if walls else None)
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
        walls.append(wall)
        self._prune(tracked)
        if walls and walls[-1] == wall:
            self.compressing[backup] = self.compressor.submit(backup, self._compressed)

    def _rename_live(self, tracked, backup):
        """Close the Writer's descriptors, rename, and create the new, empty file."""
        was_open = [log_file for log_file in tracked.log_files if log_file.fd is not None]
        for log_file in was_open:
            # Its fsync runs on the writer's syncer thread (issue 15: not on the loop);
            # the compressor reads the backup's data from the page cache either way.
            self.writer.release(log_file)
        if tracked.handler is None:
            if self.sealer is not None:
                self.sealer.before_rename(tracked.path)
            os.rename(tracked.path, backup)
            if self.sealer is not None:
                self.sealer.after_rename(tracked.path, backup)
        else:
            tracked.handler.acquire()   # no record of our own may land in the backup
            try:
                os.rename(tracked.path, backup)
                tracked.handler.reopenIfNeeded()
            finally:
                tracked.handler.release()
        for log_file in tracked.log_files:
            log_file.size = 0
        _create_empty(tracked, was_open)

    def _prune(self, tracked):
        """Delete the oldest backups of ``tracked`` beyond backup_count (compressed or
        not, or being compressed).  One that cannot be deleted is a warning."""
        if tracked.walls is None:
            tracked.walls = self._listed_walls(tracked.path)
        walls = tracked.walls
        excess = len(walls) - tracked.policy.backup_count
        if excess <= 0:
            return
        doomed = walls[:excess]
        del walls[:excess]
        for wall in doomed:
            stem = '%s.%s' % (tracked.path, format_stamp(wall))
            job = self.compressing.pop(stem, None)
            if job is not None:
                job.cancelled = True     # the worker stops; _compressed deletes a result
            for suffix in ('',) + COMPRESSED_SUFFIXES + (SEAL_SUFFIX,):
                self._delete_backup(stem + suffix, tracked.policy.backup_count)

    def _delete_backup(self, path, backup_count):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            self.counters.count('prune_errors')
            log.warning('cannot delete old backup %s: %s (logging goes on)', path,
                        exc.strerror or exc)
        else:
            log.info('deleted %s (backup_count = %d)', path, backup_count)

    def _compressed(self, job):
        """The compressor finished ``job`` (on the loop's thread)."""
        if self.compressing.get(job.path) is job:
            del self.compressing[job.path]
        if job.cancelled and job.result is not None:
            try:
                os.unlink(job.result)   # pruned while it was being compressed
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning('cannot delete %s: %s', job.result, exc.strerror or exc)

    def _recover(self):
        """Have the compressor clean up after an earlier run, in every folder we write.
        A folder it cannot clean up is a warning: its backups stay as they are."""
        folders = {}
        for tracked in self.files.values():
            if tracked.owner is None:
                folder, base = os.path.split(tracked.path)
                folders.setdefault(folder, set()).add(base)
        for folder in self._listed:
            if os.path.dirname(folder) == self.logdir:
                folders[folder] = None      # an app folder: every *.log file is ours

        for folder, bases in sorted(folders.items()):
            is_backup = functools.partial(is_uncompressed_backup, bases)
            try:
                jobs = self.compressor.recover(folder, is_backup, self._compressed)
            except OSError as exc:
                log.warning('cannot clean up after an earlier compression in %s: %s '
                            '(logging goes on)', folder, exc.strerror or exc)
                continue
            for job in jobs:
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

    # -- the folders, listed once ------------------------------------------------------------

    def _list_folder(self, folder):
        """List ``folder`` (once): remember its backups by base name; return its names.
        A folder that does not exist yet is listed when its first file is tracked."""
        names = _list(folder)
        if names is None:
            return []
        found = {}
        for name in names:
            parsed = parse_backup_name(name)
            if parsed is not None:
                found.setdefault(parsed[0], set()).add(parsed[1])
        self._listed[folder] = {base: sorted(walls) for base, walls in found.items()}
        return names

    def _listed_walls(self, path):
        """The backups of the file at ``path`` found by its folder's listing (the folder
        is listed now if it never was); from then on the Tracked keeps them."""
        folder, base = os.path.split(path)
        if folder not in self._listed:
            self._list_folder(folder)
        return self._listed.get(folder, {}).pop(base, None) or []

    # -- state -----------------------------------------------------------------------------

    def _adopt_saved(self, now):
        """Track the files of the saved state; a period that begins in the future (the
        clock went back while the daemon was stopped) is logged for each file, the first
        RELOAD_LOG_FILES of them, then in a summary."""
        corrected = 0
        for path, entry in self.state.load().items():
            ahead = self._adopt(path, entry, now)
            if ahead:
                corrected += 1
                if corrected <= RELOAD_LOG_FILES:
                    log.warning('%s: the clock went back by %.0f s or more while the daemon '
                                'was stopped: rotation deadlines computed again', path, ahead)
        if corrected > RELOAD_LOG_FILES:
            log.warning('the clock went back while the daemon was stopped: rotation deadlines '
                        'computed again for %d files (%d more than those above)', corrected,
                        corrected - RELOAD_LOG_FILES)

    def _adopt(self, path, entry, now):
        """Track a file known from the state, if its facility (or own log) still exists.

        A saved period that begins more than CLOCK_BACK_S after ``now`` was saved while
        the clock was ahead (attack finding A6-3: a day ahead, an hourly file waited a
        day): the file takes the schedule's period at ``now``, as ``_note_time`` does for
        a clock set back while running.  Returns by how much the saved period was ahead
        (seconds; 0: it was not)."""
        try:
            period_start = float(entry['period_start'])
            last_rotation = entry.get('last_rotation')
            app, facility_path = entry.get('app'), entry.get('facility')
        except (KeyError, TypeError, ValueError, AttributeError):
            return 0
        tracked = self.files.get(path)
        if tracked is None:
            if app is None or facility_path is None:
                return 0
            facility = self.table.by_app.get(app, {}).get(tuple(facility_path))
            if facility is None:
                return 0
            policy = Policy.of(facility)
            tracked = self.files[path] = Tracked(path, policy, (app, facility.path),
                                                 period_start)
        else:
            tracked.period_start = period_start
            tracked.deadline = tracked.policy.deadline_after(period_start)
        tracked.last_rotation = last_rotation
        if period_start <= now + CLOCK_BACK_S:
            return 0
        tracked.period_start = tracked.policy.period_start(now)
        tracked.deadline = tracked.policy.deadline_after(now)
        return period_start - now

    def _discover(self, now):
        """List each app folder once; track the existing files of configured facilities
        that the state does not know (a lost state, files of an older loghogd), so that
        they rotate even if idle."""
        for app, facilities in self.table.by_app.items():
            folder = os.path.join(self.logdir, app)
            plain = {f.file_name(): f for f in facilities.values()}   # and shared files
            per_host = sorted((f for f in facilities.values() if f.file_per_host),
                              key=lambda f: -len(f.name))   # the longest name wins
            for name in self._list_folder(folder):
                if not name.endswith('.log'):
                    continue
                path = os.path.join(folder, name)
                facility = plain.get(name) or next(
                    (f for f in per_host if name.endswith('-' + f.file_name())), None)
                if facility is None or path in self.files or not os.path.isfile(path):
                    continue
                policy = Policy.of(facility)
                self.files[path] = Tracked(path, policy, (app, facility.path),
                                           self._first_period(path, policy, now))

    def _entries(self):
        """(path, state entry) pairs of every file tracked now, made when consumed: on
        the state's thread (rotation_state.py), not the loop (issue 15: 17 ms at 10,000)."""
        files = list(self.files.values())
        return ((tracked.path, tracked.state_entry()) for tracked in files)

    def _save_state(self):
        """Append the changed entries to the journal, or, once the journal has grown
        longer than the file table, have the state rewritten whole (on a thread)."""
        if self.state.journal_lines + len(self._dirty) > max(JOURNAL_MIN_LINES, len(self.files)) \
                and self.state.write_snapshot(self._entries()):
            self._dirty.clear()
            return
        files = self.files
        self.state.append({path: files[path].state_entry() if path in files else None
                           for path in self._dirty})
        self._dirty.clear()    # tried once; a failure is logged, the next change tries again


def _create_empty(tracked, was_open):
    """Create the new live file at once (readers following the name see it at once),
    opening again the descriptors that were open; if that fails, the Writer tries again
    with the next line."""
    try:
        for log_file in was_open:
            log_file.open()
        if not was_open and tracked.handler is None:
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
    """The names in ``folder``; None when there is no such folder."""
    try:
        return os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        log.warning('cannot list %s: %s', folder, exc.strerror or exc)
        return []
