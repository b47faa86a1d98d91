"""Sealing in the daemon: each sealed file's chain and sidecar, and a seal every epoch.

A loop task (``next_deadline``/``tick``/``close``).  The Writer hands every byte it writes
to a sealed file to that file's FileSeal (``LogFile.chain``): a hash update, nothing more
on the write path.  The chunk records wait in memory and go to the sidecar
``<file>.seal`` at each seal (or once SIDECAR_BATCH records wait), always after an
fdatasync of the log file: a sidecar never describes bytes that a crash of the machine
could take back, so a crash never looks like tampering.

At the end of every epoch (``[seal] interval`` seconds, tied to the key's t0), every
sealed file gets a seal, lines or not (an unsealed empty epoch would let an intruder cut
the file back and go on: journald's CVE-2023-31438), and the key moves on to the next
epoch (seal_keys.py).  After downtime, the first seal covers every epoch missed, made
with the key that was on disk (the daemon never had a later one).

At start-up each sealed file's sidecar is read back; bytes at the end of the file that
the chain does not cover (the daemon was killed between a write and its seal) are
chained then, with a warning.  Rotation (rotation.py) calls ``before_rename`` and
``after_rename``: the old file's records are written out, its sidecar renamed with it,
and the new file's chain starts from the old file's last hash.
"""

import errno
import logging
import os
import stat
import time

from . import sealing
from .backups import backups_of, format_stamp

log = logging.getLogger('loghogd.sealer')

SIDECAR_MODE = 0o640
# Chunk records kept in memory before they go to the sidecar between seals (each about
# 130 bytes of memory: 4 MiB at most per file; under the tcp8 load about 2,000 a second).
SIDECAR_BATCH = 32768
READ_BYTES = 1 << 20
# Sealing work per loop pass (seconds; each seal is a write and one or two fdatasyncs):
# thousands of sealed files are sealed in slices, the loop serving its sockets between
# them (as rotation.TICK_BUDGET_S).
TICK_BUDGET_S = 0.005


class FileSeal:
    """One sealed log file: its chain (sealing.Chain), where its sidecar is, and its last
    seal (a sealing.Seal, or None)."""

    def __init__(self, path, counters):
        self.path = path
        self.sidecar = path + sealing.SUFFIX
        self.name = sealing.history_name(os.path.basename(os.path.dirname(path)),
                                         os.path.basename(path))
        self.counters = counters
        self.chain = sealing.Chain()
        self.last_seal = None
        self.start_record = None      # to write first, in a new sidecar
        self._adopting = False        # a new sidecar for a file that has lines already
        self.short = False            # the file was found shorter than its chain (logged)
        self.failing = False
        self.batches_waiting = 1      # records are written out at this many SIDECAR_BATCHes

    # -- start-up ---------------------------------------------------------------------------

    def load(self):
        """Read the sidecar back (or start one) and chain what the file holds beyond it."""
        state = None
        try:
            _cut_partial_record(self.sidecar)
            with open(self.sidecar, 'rb') as stream:
                state = sealing.read_sidecar_state(stream)
            if state.name is None:
                # Empty: a crash while it was created (or its first record cut off by
                # _cut_partial_record).  It is no seal file: taken for one, its missing
                # hash stopped the daemon from starting (attack finding A4-19).
                log.warning('%s is empty (a crash while it was created): started again',
                            self.sidecar)
                state = None
        except FileNotFoundError:
            pass
        except ValueError as exc:
            damaged = self.sidecar + '.damaged'
            log.error('%s: %s; moved to %s, the file is sealed afresh from here (loghogd '
                      'verify will report the break)', self.sidecar, exc, damaged)
            self.counters.count('seal_errors')
            try:
                os.replace(self.sidecar, damaged)
            except OSError as error:
                log.error('cannot move %s: %s', self.sidecar, error.strerror or error)
        state = self._finish_rotation(state)
        if state is None:
            self.start(sealing.GENESIS, adopting=True)
        elif state.name is None:      # the chain goes on from the newest backup's
            self.start(state.last)
            self.last_seal = state.seal
        else:
            self.name = state.name
            self.chain = sealing.Chain(state.last, state.lines, state.size)
            self.last_seal = state.seal
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return
        try:
            self.catch_up(fd, os.fstat(fd).st_size, at_start=True)
        finally:
            os.close(fd)

    def _finish_rotation(self, state):
        """A rotation renames the log file, then its sidecar, then starts the new file's
        sidecar (Sealer.after_rename).  Cut between those steps by a crash (SIGKILL, or a
        power cut before the folder reached the disk), it left an empty or missing log
        file with the backup's sidecar, or with none: finish it, so that the chain goes
        on from the backup instead of breaking (attack finding A4-12).  Returns the
        SidecarState to go on from (one whose ``name`` is None: a new sidecar after it),
        or ``state``."""
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            size = 0
        if state is not None and size >= state.size:
            return state
        if state is None and size:
            return None                  # lines with no sidecar: not a rotation's doing
        backup = _newest_backup(self.path)
        if backup is None:
            return state
        if state is None:
            try:
                with open(backup + sealing.SUFFIX, 'rb') as stream:
                    previous = sealing.read_sidecar_state(stream)
            except (OSError, ValueError):
                return None
            log.warning('%s: a rotation was cut short (a crash) before its new seal file '
                        'was started: its chain goes on from %s', self.path,
                        os.path.basename(backup))
            previous.name = None
            return previous
        if os.path.lexists(backup + sealing.SUFFIX):
            return state                 # the live file was cut: catch_up reports it
        try:
            if os.stat(backup).st_size < state.size:
                return state             # not the file this sidecar describes
        except FileNotFoundError:
            pass                         # compressed since: verify checks it
        try:
            os.rename(self.sidecar, backup + sealing.SUFFIX)
        except OSError as exc:
            log.error('cannot rename %s with its backup %s: %s', self.sidecar, backup,
                      exc.strerror or exc)
            return state
        log.warning('%s: a rotation was cut short (a crash) before its seal file was renamed '
                    'with it: renamed now', backup)
        state.name = None
        return state

    def start(self, prev, adopting=False):
        """A new sidecar: its chain begins at ``prev``."""
        self.chain = sealing.Chain(prev)
        self.start_record = sealing.encode_start(prev, _now_us(), self.name)
        self._adopting = adopting

    def catch_up(self, fd, size, at_start=False):
        """Chain the bytes of the file (open as ``fd``) beyond what the chain covers, up to
        ``size``: after a restart, those written before a crash and not sealed; when a
        file is opened, a newline the Writer added after a cut line."""
        covered = self.chain.covered
        if size < covered:
            if not self.short:   # once: the file is opened again and again
                self.short = True
                log.error('%s holds %d bytes, but its seal chain covers %d: it was cut '
                          'short outside loghogd (or lost data in a crash); loghogd verify '
                          'will report it', self.path, size, covered)
                self.counters.count('seal_errors')
            return
        if size == covered:
            return
        offset = covered
        while offset < size:
            data = os.pread(fd, min(READ_BYTES, size - offset), offset)
            if not data:
                break
            self.chain.add(data, b'r')
            offset += len(data)
        self.chain.close_chunk(b'r')
        if self._adopting and at_start:
            log.warning('%s: sealing its %d existing bytes from now on (they were not sealed '
                        'before)', self.path, offset - covered)
        elif at_start:
            log.warning('%d bytes at the end of %s were not sealed before the restart; sealed '
                        'now', offset - covered, self.path)
        elif offset - covered > 1:
            log.warning('%d bytes that loghogd did not write appeared at the end of %s; '
                        'sealed now', offset - covered, self.path)
        self._adopting = False

    # -- the Writer's hook ------------------------------------------------------------------

    def add(self, data):
        """The Writer wrote ``data`` to the file (whole lines, in order).  Never raises: a
        sidecar that cannot be written is the seal's problem, not the write's."""
        chain = self.chain
        chain.add(data)
        if len(chain.records) >= SIDECAR_BATCH * self.batches_waiting:
            try:
                self.write_out(sync=False)
            except OSError as exc:
                self.batches_waiting += 1   # tried again a batch later, or at the seal
                self.counters.count('seal_errors')
                log.error('cannot write %s: %s (its records wait in memory)', self.sidecar,
                          exc.strerror or exc)
            else:
                self.batches_waiting = 1

    # -- sidecar ----------------------------------------------------------------------------

    def write_out(self, seal=None, sync=True):
        """Append the waiting records (and ``seal``, a record) to the sidecar, after an
        fdatasync of the log file; fsync the sidecar if ``sync``.  Raises OSError (the
        records stay waiting)."""
        records = self.chain.records
        if records:
            _sync_file(self.path)
        data = b''.join(([self.start_record] if self.start_record else []) + records
                        + ([seal] if seal else []))
        if not data:
            return
        # O_NONBLOCK: a FIFO put in its place would block the loop in open() until someone
        # reads it (attack finding A4-21); anything but a regular file is refused.
        fd = os.open(self.sidecar, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
                     | os.O_NOFOLLOW | os.O_NONBLOCK, SIDECAR_MODE)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, 'not a regular file')
            os.set_blocking(fd, True)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if sync:
                os.fdatasync(fd)
        finally:
            os.close(fd)
        self.start_record = None
        self.chain.records = []

    def seal(self, key, first_epoch, last_epoch, time_us):
        """Seal epochs [first_epoch, last_epoch] with ``key`` (the first one's): everything
        chained so far that ends a line."""
        chain = self.chain
        chain.close_chunk()
        record = sealing.make_seal(key, self.name, first_epoch, last_epoch, chain.lines,
                                   chain.size, time_us, chain.last)
        try:
            self.write_out(record)
        except OSError as exc:
            self.counters.count('seal_errors')
            if not self.failing:
                self.failing = True
                log.error('cannot seal %s: %s (loghogd verify will report the missing '
                          'epochs)', self.sidecar, exc.strerror or exc)
            return
        if self.failing:
            self.failing = False
            log.warning('sealing %s works again', self.path)
        self.last_seal = sealing.parse_record(record, False)

    def status(self):
        seal = self.last_seal
        if seal is None:
            return {'epoch': None, 'time': None, 'chain': None, 'lines': None}
        return {'epoch': seal.last_epoch, 'time': seal.time_us / 1e6, 'lines': seal.lines,
                'chain': seal.chain_hash.hex()[:16]}


class Sealer:
    """Seals every file of the sealed facilities of ``table`` with ``seal_key`` (a
    seal_keys.SealKey).  Construct, ``start(now)``, then a loop task; ``reload(table)``
    after SIGHUP."""

    name = 'sealing'

    def __init__(self, writer, table, logdir, seal_key, counters):
        self.writer = writer
        self.table = table
        self.logdir = logdir
        self.key = seal_key
        self.counters = counters
        self.files = {}              # path -> FileSeal
        # A seal round under way: (first epoch, last epoch, time µs, the key's next
        # epoch, FileSeals still to seal).
        self._round = None
        self._key_failing = False    # the key file could not be written (logged once)
        self._clock_behind = False   # the clock is behind the key's epoch (logged once)
        writer.sealer = self

    def start(self, now):
        """Load every sealed file's sidecar, chain what a crash left unsealed, and seal
        the epochs missed while the daemon was down."""
        self._discover()
        current = self.key.epoch_of(now)
        for file_seal in self.files.values():
            seal = file_seal.last_seal
            if seal is not None and self.key.epoch_of(seal.time_us / 1e6) != seal.last_epoch + 1:
                # Its time is not right after its epoch for this key: made with another
                # key (seal-init --force).  Its epoch number means nothing here: taken for
                # this key's, it moved the key on that far, and nothing was sealed until
                # then (attack finding A4-7).
                log.warning('the seals of %s were made with another key (loghogd seal-init '
                            '--force): verify them with that key\'s verification key; this '
                            'key seals it from epoch %d on', file_seal.path, self.key.epoch)
                file_seal.last_seal = None
            elif seal is not None and seal.last_epoch >= max(current, self.key.epoch + 1):
                # A seal of an epoch that has not ended (nor the key's) was not made here:
                # taken, it moved the key on that far, 10**12 rounds of SHA-256 for a
                # forged record, and the daemon never started (attack finding A4-20).
                log.error('%s: its last seal claims epoch %d, which has not ended (the key '
                          'is at %d): not taken (forged? loghogd verify will say)',
                          file_seal.sidecar, seal.last_epoch, self.key.epoch)
                self.counters.count('seal_errors')
                file_seal.last_seal = None
        # The epochs every file (that goes on from the key's epoch) has sealed already.
        done = [f.last_seal.last_epoch for f in self.files.values()
                if f.last_seal and f.last_seal.last_epoch >= self.key.epoch - 1]
        if done and min(done) >= self.key.epoch:
            # Stopped after sealing and before the key moved on: those epochs are sealed.
            # (Stopped in the middle of a round, some files sealed and some not: the key
            # stays, the next round seals those that are behind: tick.)
            log.warning('the sealing key is at epoch %d but seals up to %d exist: moving '
                        'the key on', self.key.epoch, min(done))
            try:
                self.key.advance(min(done) + 1)
            except OSError as exc:
                self.counters.count('seal_errors')
                log.error('cannot write the sealing key %s: %s', self.key.path,
                          exc.strerror or exc)
        for file_seal in self.files.values():
            seal = file_seal.last_seal
            if seal is not None and seal.last_epoch < self.key.epoch - 1:
                log.warning('the seals of %s stop at epoch %d, the key is at %d: loghogd '
                            'verify will report epochs %d to %d as missing', file_seal.path,
                            seal.last_epoch, self.key.epoch, seal.last_epoch + 1,
                            self.key.epoch - 1)
        if current > self.key.epoch + 1:
            log.info('sealing epochs %d to %d, missed while loghogd was not running',
                     self.key.epoch, current - 1)
        self.tick(now, budget_s=float('inf'))

    def file_seal(self, path):
        """The FileSeal of ``path`` (loaded on first use)."""
        file_seal = self.files.get(path)
        if file_seal is None:
            file_seal = self.files[path] = FileSeal(path, self.counters)
            try:
                file_seal.load()
            except OSError as exc:
                # Its chain starts afresh: verify will show the break, the log says why.
                self.counters.count('seal_errors')
                log.error('cannot read %s to go on with its chain: %s', file_seal.sidecar,
                          exc.strerror or exc)
        return file_seal

    # -- the task ---------------------------------------------------------------------------

    def next_deadline(self):
        return 0.0 if self._round is not None else self.key.epoch_end()

    def tick(self, now, budget_s=TICK_BUDGET_S):
        """Once the key's epoch has ended: seal every file (for about ``budget_s`` per
        pass, the rest in the next passes), then move the key on."""
        if self._round is None:
            current = self.key.epoch_of(now)
            if current <= self.key.epoch:
                if current < self.key.epoch and not self._clock_behind:
                    # The key cannot go back: nothing is sealed until the clock is past
                    # its epoch again, and that must not go unsaid (attack finding A4-13).
                    self._clock_behind = True
                    log.error('the clock (%s) is behind the sealing key, which is at epoch %d '
                              '(it begins at %s): no seal until then; was the clock set '
                              'back, or had it run ahead?', _format_time(now), self.key.epoch,
                              _format_time(self.key.epoch_end(self.key.epoch - 1)))
                return
            self._clock_behind = False
            # One time for the whole round: right after the last epoch sealed, whatever
            # passes the round takes (verify checks the time against the epochs).
            self._round = (self.key.epoch, current - 1, int(now * 1e6), current,
                           list(self.files.values()))
        first, last, time_us, following, waiting = self._round
        key = bytes(self.key.key)
        began = time.perf_counter()
        while waiting:
            file_seal = waiting.pop()
            done = file_seal.last_seal.last_epoch if file_seal.last_seal else -1
            if first <= done < last:
                # Sealed through ``done`` in a round a crash cut short (attack finding
                # A4-2): its seals go on from there, with that epoch's key.
                file_seal.seal(sealing.key_at(key, first, done + 1), done + 1, last, time_us)
            elif done != last:   # (sealed through ``last`` already: that round's end)
                # A last seal beyond ``last`` was not made here (A4-20): sealed all the same.
                file_seal.seal(key, first, last, time_us)
            if waiting and time.perf_counter() - began >= budget_s:
                return
        del key
        self._round = None
        self.counters.count('seals', len(self.files))
        try:
            self.key.advance(following)
        except OSError as exc:
            self.counters.count('seal_errors')
            if not self._key_failing:
                self._key_failing = True
                log.error('cannot write the next sealing key to %s: %s (sealing goes on '
                          'with the key in memory; the file keeps the key of an earlier '
                          'epoch until it can be written)', self.key.path, exc.strerror or exc)
            return
        if self._key_failing:
            self._key_failing = False
            log.warning('the sealing key %s is written again', self.key.path)

    def close(self):
        """At exit (after the Writer wrote and synced everything): finish a seal round
        under way, and write the records waiting to the sidecars."""
        if self._round is not None:
            self.tick(0.0, budget_s=float('inf'))
        for file_seal in self.files.values():
            file_seal.chain.close_chunk()
            try:
                file_seal.write_out()
            except OSError as exc:
                log.error('cannot write %s: %s', file_seal.sidecar, exc.strerror or exc)

    def status(self, now):
        """The key's epoch, the next seal, and each sealed file's last seal (epoch, time,
        lines, chain hash prefix: what an operator notes off the machine to anchor it)."""
        return {'files': len(self.files), 'key_epoch': self.key.epoch,
                'next_seal_at': self.key.epoch_end(),
                'seals': [dict(file_seal.status(), path=path)
                          for path, file_seal in sorted(self.files.items())]}

    # -- rotation's hooks -------------------------------------------------------------------

    def before_rename(self, path):
        """``path`` is about to become a backup: write its records out (after fsyncing it)."""
        file_seal = self.files.get(path)
        if file_seal is None:
            return
        file_seal.chain.close_chunk()
        try:
            file_seal.write_out()
        except OSError as exc:
            # Rotating matters more (a full disk): verify will show these lines unsealed.
            self.counters.count('seal_errors')
            log.error('cannot write %s before rotating it: %s (its last records are lost)',
                      file_seal.sidecar, exc.strerror or exc)

    def after_rename(self, path, backup):
        """``path`` was renamed ``backup``: its sidecar follows; the new file's chain
        starts from the backup's last hash."""
        file_seal = self.files.get(path)
        if file_seal is None:
            return
        try:
            os.rename(file_seal.sidecar, backup + sealing.SUFFIX)
        except FileNotFoundError:
            pass
        except OSError as exc:
            self.counters.count('seal_errors')
            log.error('cannot rename %s with its log file: %s', file_seal.sidecar,
                      exc.strerror or exc)
        file_seal.start(file_seal.chain.last)
        try:
            file_seal.write_out()
        except OSError as exc:
            log.error('cannot start %s: %s (trying again at the next seal)',
                      file_seal.sidecar, exc.strerror or exc)

    # -- reload -----------------------------------------------------------------------------

    def reload(self, table):
        """Seal the files of the facilities sealed in ``table`` from now on; stop sealing
        the others (their records written out first)."""
        self.table = table
        for log_file in self.writer.files.values():
            log_file.chain = self.file_seal(log_file.path) if log_file.facility.sealed else None
        wanted = self._discover()
        for path in [p for p in self.files if p not in wanted]:
            file_seal = self.files.pop(path)
            file_seal.chain.close_chunk()
            try:
                file_seal.write_out()
            except OSError as exc:
                log.error('cannot write %s: %s', file_seal.sidecar, exc.strerror or exc)
            log.info('%s is not sealed any more', path)

    def _discover(self):
        """Load the existing files of sealed facilities; return the set of their paths."""
        found = set()
        for app, facilities in self.table.by_app.items():
            sealed = [f for f in facilities.values() if f.sealed]
            if not sealed:
                continue
            folder = os.path.join(self.logdir, app)
            try:
                names = os.listdir(folder)
            except FileNotFoundError:
                continue
            plain = {f.file_name(): f for f in sealed}
            per_host = [f for f in sealed if f.file_per_host]
            for name in names:
                if not name.endswith('.log'):
                    continue
                if name in plain or any(name.endswith('-' + f.file_name()) for f in per_host):
                    path = os.path.join(folder, name)
                    if os.path.isfile(path):
                        self.file_seal(path)
                        found.add(path)
        return found | {f.path for f in self.writer.files.values() if f.chain is not None}


def _newest_backup(path):
    """The newest backup of ``path`` as rotation named it (without a compression suffix),
    or None."""
    folder, base = os.path.split(path)
    try:
        walls = backups_of(base, os.listdir(folder))
    except OSError:
        return None
    return os.path.join(folder, '%s.%s' % (base, format_stamp(max(walls)))) if walls else None


def _cut_partial_record(sidecar):
    """A crash while appending may leave a record cut short at the end of ``sidecar``:
    cut it off, so that the next record does not land glued to it."""
    with open(sidecar, 'rb+') as stream:
        end = stream.seek(0, os.SEEK_END)
        if not end:
            return
        stream.seek(max(0, end - 4096))
        tail = stream.read()
        if tail.endswith(b'\n'):
            return
        keep = end - len(tail) + tail.rfind(b'\n') + 1
        log.warning('%s: cutting off a record a crash left incomplete (%d bytes)', sidecar,
                    end - keep)
        stream.truncate(keep)


def _sync_file(path):
    """fdatasync the file at ``path`` (its data is on disk before a record describes it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


def _format_time(moment):
    return time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(moment))


def _now_us():
    return int(time.time() * 1e6)
