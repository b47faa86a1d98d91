"""``loghogd verify --key KEYFILE PATH...``: check sealed log files against their sidecars.

Each PATH is a log file (live, backup, compressed backup) or a folder (every history in
it).  Files are grouped into histories (a live file and its backups, by name) and each
history is walked oldest first, streaming: the chain is recomputed chunk by chunk from
the log's (decompressed) bytes, every seal is checked against the chain, its key epoch
(derived from the verification key) and its time.  Memory stays flat whatever the size.

Exit status: 0 every file is intact and sealed; 1 something broke (the first file and line
where it does are printed); 2 nothing broke but a file was never sealed ("not sealed" is
never "intact"); 66 a file could not be read (permissions); 64 usage.
"""

import argparse
import bz2
import contextlib
import copy
import gzip
import hashlib
import io
import lzma
import os
import stat
import sys
import time

from . import sealing
from .backups import COMPRESSED_SUFFIXES, parse_backup_name

EX_INTACT = 0
EX_BROKEN = 1
EX_NOT_SEALED = 2
EX_USAGE = 64
EX_NOINPUT = 66      # a file could not be read (permissions): not checked
READ_BYTES = 1 << 20
# The daemon keeps a seal file it found damaged under this name (sealer.py).
DAMAGED_SUFFIX = '.damaged'
# Keys.at keeps every this-many-th epoch's key.
KEY_CHECKPOINT = 1024
# The fewest hex digits of a chain hash --anchor takes: the Prometheus file's 48 bits.
MIN_ANCHOR_DIGITS = 12
# The longest sidecar record: a seal is about 190 bytes, a start record holds a file name.
MAX_RECORD_BYTES = 4096
_OPENERS = {'.xz': lzma.open, '.gz': gzip.open, '.bz2': bz2.open}


class Broken(Exception):
    """Where a history breaks: ``path`` and ``line`` (1-based; None: the whole file)."""

    def __init__(self, path, line, reason):
        super().__init__(reason)
        self.path, self.line, self.reason = path, line, reason

    def __str__(self):
        where = self.path if self.line is None else '%s:%d' % (self.path, self.line)
        return '%s: %s' % (where, self.reason)


class Keys:
    """The key of any epoch, derived forward from k0 (kept: derivation only goes forward).

    Every KEY_CHECKPOINT-th key derived is kept, so that going back (the next history
    begins before the last one ended) starts from the nearest one below, not from k0: one
    SHA-256 an epoch, half a million for a year of 60-s epochs, per history (attack
    finding A4-11).  32 bytes per checkpoint: 4 KiB for a year."""

    def __init__(self, k0, t0, interval):
        self.k0, self.t0, self.interval = k0, t0, interval
        self._epoch, self._key = 0, k0
        self._checkpoints = {0: k0}

    def at(self, epoch):
        if epoch < self._epoch:
            self._epoch = epoch - epoch % KEY_CHECKPOINT
            self._key = self._checkpoints[self._epoch]
        key = self._key
        for number in range(self._epoch + 1, epoch + 1):
            key = sealing.evolve(key)
            if not number % KEY_CHECKPOINT:
                self._checkpoints[number] = key
        self._key, self._epoch = key, epoch
        return key

    def epoch_of(self, moment):
        return sealing.epoch_of(moment, self.t0, self.interval)


class History:
    """The running state of one history's check: its chain hash, line and byte counts
    within the current file, and its last seal."""

    def __init__(self, keys, anchor=None, now=None):
        self.keys = keys
        # No seal can be from after this (Unix time): a forged far-future epoch would
        # also make deriving its key take for ever.
        self.latest = (time.time() if now is None else now) + keys.interval
        self.anchor = anchor            # (epoch, hash hex prefix) or None
        self.anchor_seen = False
        self.last = None                # the chain hash after the previous file (None: none)
        self.last_path = None
        self.seal = None                # the last Seal seen, and where
        self.seal_path = None
        self.sealed_files = 0
        self.notes = []
        self.unsealed_tail = None       # (path, first line, last line) after the last seal
        self.name = None                # what the history is sealed under (check_file's)

    def trial(self):
        """A copy to check another form of the same file with (its notes are dropped)."""
        trial = copy.copy(self)
        trial.notes = []
        return trial

    def check_file(self, path, name, stream, sidecar_lines, is_last):
        """Check one file (``stream``: its uncompressed bytes; ``sidecar_lines``: its
        sidecar, bytes lines) whose history is called ``name``.  Raises Broken."""
        records = _bounded_lines(sidecar_lines)
        try:
            start = sealing.parse_record(next(records, b''), True)
        except ValueError as exc:
            raise Broken(path + sealing.SUFFIX, 1, str(exc)) from None
        self.name = name
        if start.name != name:
            raise Broken(path, None, 'its seal file belongs to %r, not %r (a history of '
                         'another application or file put in its place; for copies kept '
                         'outside the application\'s folder, give --app)' % (start.name, name))
        if self.last is not None and start.prev != self.last:
            raise Broken(path, 1, 'does not continue the chain of %s: a file between them is '
                         'missing, or one of them was replaced' % self.last_path)
        if self.last is None and start.prev != sealing.GENESIS:
            self.notes.append('%s: the history begins here (older files were pruned, or '
                              'not given)' % path)
        last, lines, size = start.prev, 0, 0
        adopted = start.prev == sealing.GENESIS    # until a record says otherwise
        for number, raw in enumerate(records, 2):
            try:
                record = sealing.parse_record(raw, False)
            except ValueError as exc:
                if is_last and not raw.endswith(b'\n') and next(records, None) is None:
                    break     # a record cut by a crash of the daemon, at the very end
                raise Broken(path + sealing.SUFFIX, number, str(exc)) from None
            if record.kind == 'chunk':
                last = self._check_chunk(path, stream, record, last, lines)
                lines += record.n_lines
                size += record.n_bytes
                adopted = adopted and record.recovered
                if adopted:
                    # Lines chained as found in the file when its seal file was started
                    # (sealed = yes turned on, or the seal file lost or deleted: A4-18).
                    self._note_adopted(path, lines, start.time_us)
                if self.unsealed_tail is None:
                    self.unsealed_tail = (path, record.first_line)
            else:
                self._check_seal(path, record, last, lines, size)
                self.unsealed_tail = None
                adopted = False
        rest, rest_lines = _drain(stream)
        if rest:
            if not is_last:
                raise Broken(path, lines + 1, '%d lines (%d bytes) after the end of its chain: '
                             'added after it was rotated' % (rest_lines, rest))
            self.notes.append('%s: lines %d-%d were written after the last record of its chain '
                              '(not sealed yet)' % (path, lines + 1, lines + rest_lines))
        if self.unsealed_tail is not None and is_last:
            self.notes.append('%s: line %d and what follows it are chained but not sealed yet '
                              '(written after the last seal)' % self.unsealed_tail)
        self.last, self.last_path = last, path

    def _note_adopted(self, path, lines, time_us):
        note = ('%s: lines 1-%d were in the file when its seal file was started (%s): '
                'sealed as found then, not as written (sealed = yes turned on, or its seal '
                'file was lost or deleted)' % (path, lines, _format_time(time_us / 1e6)))
        if self.notes and self.notes[-1].startswith('%s: lines 1-' % path):
            self.notes[-1] = note
        else:
            self.notes.append(note)

    def _check_chunk(self, path, stream, chunk, last, lines):
        if chunk.first_line != lines + 1:
            raise Broken(path + sealing.SUFFIX, None, 'a chunk record for line %d where line %d '
                         'comes next' % (chunk.first_line, lines + 1))
        digest = hashlib.sha256(last)
        got, newlines, tail = _take(stream, chunk.n_bytes, digest)
        end = chunk.first_line + chunk.n_lines - 1
        if got < chunk.n_bytes:
            raise Broken(path, lines + newlines + 1, 'the file ends here, but its chain goes '
                         'on to line %d: it was cut short' % end)
        digest.update(sealing.RANGE.pack(chunk.first_line, chunk.n_lines, chunk.n_bytes))
        if newlines != chunk.n_lines or tail != b'\n' or digest.digest() != chunk.digest:
            raise Broken(path, chunk.first_line, 'lines %d-%d do not match the chain: a line '
                         'was changed, inserted, removed or reordered' % (chunk.first_line, end))
        return chunk.digest

    def _check_seal(self, path, seal, last, lines, size):
        where = (path, lines or None)
        if (seal.lines, seal.size, seal.chain_hash) != (lines, size, last):
            raise Broken(*where, 'the seal of epoch %d does not match the chain here'
                         % seal.last_epoch)
        moment = seal.time_us / 1e6
        if moment > self.latest:
            raise Broken(*where, 'the seal of epoch %d says it was made at %s, in the future '
                         '(forged, or the clock of the machine that made it ran ahead)'
                         % (seal.last_epoch, _format_time(moment)))
        # The first seal of a history failing is what the wrong key looks like, too: an
        # operator must not read "forged" alone then (attack finding A4-17).
        hint = (' (or the key given is not the verification key these files were sealed '
                'with)' if self.seal is None else '')
        if self.keys.epoch_of(moment) != seal.last_epoch + 1:
            raise Broken(*where, 'the seal of epoch %d says it was made at %s, which is not '
                         'right after that epoch: its time or epoch is forged%s'
                         % (seal.last_epoch, _format_time(moment), hint))
        if not sealing.check_seal_mac(self.keys.at(seal.first_epoch), self.name, seal):
            raise Broken(*where, 'the seal of epoch %d was not made with that epoch\'s key: '
                         'forged (with a later key?) or altered%s' % (seal.first_epoch, hint))
        previous = self.seal
        if previous is not None and seal.first_epoch != previous.last_epoch + 1:
            if seal.first_epoch > previous.last_epoch + 1:
                raise Broken(*where, 'epochs %d to %d were never sealed (after the seal of '
                             'epoch %d in %s): lines were cut and the file went on'
                             % (previous.last_epoch + 1, seal.first_epoch - 1,
                                previous.last_epoch, self.seal_path))
            raise Broken(*where, 'a seal of epoch %d after one of epoch %d: seals out of order'
                         % (seal.first_epoch, previous.last_epoch))
        if seal.last_epoch > seal.first_epoch:
            self.notes.append('%s: epochs %d to %d were sealed together at %s (loghogd was '
                              'not running, or late)' % (path, seal.first_epoch, seal.last_epoch,
                                                         _format_time(moment)))
        if self.anchor is not None and seal.first_epoch <= self.anchor[0] <= seal.last_epoch:
            if not seal.chain_hash.hex().startswith(self.anchor[1]):
                raise Broken(*where, 'the seal of epoch %d differs from the anchored one (%s)'
                             % (self.anchor[0], self.anchor[1]))
            self.anchor_seen = True
        self.seal, self.seal_path = seal, path


def _chains_lines(sidecar):
    """True when the seal file ``sidecar`` has a chunk record (its file had lines)."""
    with _open_regular(sidecar) as stream:
        return any(line[:2] in (b'c ', b'r ') for line in _bounded_lines(stream))


def _open_regular(path):
    """``path`` open for reading (binary); raises Broken for what is not a regular file:
    a FIFO put in the place of a log or seal file blocked verify for ever, and a device
    never ends (attack finding A4-10)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise Broken(path, None, 'not a regular file (a FIFO, device or socket was put in '
                         'its place)')
        os.set_blocking(fd, True)
        return open(fd, 'rb')
    except BaseException:
        os.close(fd)
        raise


def _bounded_lines(stream):
    """The lines of ``stream``, none longer than MAX_RECORD_BYTES (a longer one comes in
    pieces, which do not parse): memory stays bounded whatever a sidecar holds."""
    while True:
        line = stream.readline(MAX_RECORD_BYTES)
        if not line:
            return
        yield line


def _name_of(path, app=None):
    """The name the daemon seals a file's history under: its application (``app``, else
    the folder the file is in) and the live file's name (sealing.history_name)."""
    name = os.path.basename(path)
    stem = _strip_compression(name)
    parsed = parse_backup_name(stem)
    folder = app or os.path.basename(os.path.dirname(os.path.abspath(path)))
    return sealing.history_name(folder, parsed[0] if parsed else stem)


def _strip_compression(path):
    for suffix in COMPRESSED_SUFFIXES:
        if path.endswith(suffix):
            return path[:-len(suffix)]
    return path


def _take(stream, count, digest):
    """Read ``count`` bytes from ``stream`` into ``digest``; (bytes read, newlines, last byte)."""
    got = newlines = 0
    tail = b''
    while got < count:
        piece = stream.read(min(READ_BYTES, count - got))
        if not piece:
            break
        digest.update(piece)
        newlines += piece.count(b'\n')
        got += len(piece)
        tail = piece[-1:]
    return got, newlines, tail


def _drain(stream):
    """Bytes and newlines left in ``stream``."""
    rest = lines = 0
    while True:
        piece = stream.read(READ_BYTES)
        if not piece:
            return rest, lines
        rest += len(piece)
        lines += piece.count(b'\n')


def _format_time(moment):
    return time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(moment))


# -- files and histories ---------------------------------------------------------------------

def histories(paths):
    """{(folder, live name): [paths, oldest first, the live file last]} for ``paths``
    (files and folders).  Other files in folders are left out; seal files are not log
    files (a shell glob such as ``root.log*`` gives them: attack finding A4-14), but one
    whose log file is gone in every form puts that file's path in its history, where
    check_history reports it deleted (A4-15)."""
    found = {}
    sidecars = []
    for given in paths:
        if os.path.isdir(given):   # an app folder, or the log folder with app folders
            names = [os.path.join(folder, n) for folder, _, files in sorted(os.walk(given))
                     for n in sorted(files)]
            sidecars.extend(n for n in names if n.endswith(sealing.SUFFIX))
            names = [n for n in names if _is_log(n)]
        elif given.endswith(sealing.SUFFIX):
            sidecars.append(given)
            continue
        elif given.endswith(sealing.SUFFIX + DAMAGED_SUFFIX):
            continue     # check_history finds it beside its log file
        else:
            names = [given]
        for path in names:
            key, order = _history_of(path)
            found.setdefault(key, {})[order] = path
    for sidecar in sidecars:
        stem = sidecar[:-len(sealing.SUFFIX)]
        if _is_log_name(os.path.basename(stem)) and not any(
                os.path.lexists(stem + suffix) for suffix in ('',) + COMPRESSED_SUFFIXES):
            key, order = _history_of(stem)
            found.setdefault(key, {}).setdefault(order, stem)
    return {key: [files[order] for order in sorted(files)] for key, files in found.items()}


def _is_log(path):
    if os.path.isdir(path):
        return False    # a FIFO or device named like a log is checked, and refused
    return _is_log_name(os.path.basename(path))


def _is_log_name(name):
    if name.endswith('.log'):
        return True
    parsed = parse_backup_name(name)
    return parsed is not None and parsed[0].endswith('.log')


def _history_of(path):
    folder, name = os.path.split(os.path.abspath(path))
    parsed = parse_backup_name(name)
    if parsed is None:
        return (folder, name), (1, '', name)
    # Every form of a backup (compressed or not) is kept: each is checked (check_history).
    return (folder, parsed[0]), (0, parsed[1].isoformat(), name)


def _forms(files):
    """``files`` (a history, oldest first) as lists of the forms of one file: a backup
    present compressed and not (a compression under way, or a copy planted beside it)."""
    groups = []
    for path in files:
        if groups and _strip_compression(groups[-1][0]) == _strip_compression(path):
            groups[-1].append(path)
        else:
            groups.append([path])
    return groups


def check_history(files, keys, anchor=None, out=None, app=None):
    """Check one history (of application ``app``, else of the folder its files are in);
    return its exit status, printing what was found."""
    out = out or sys.stdout
    history = History(keys, anchor)
    name = _name_of(files[-1], app)
    not_sealed = []
    status = EX_INTACT
    groups = _forms(files)
    path = files[0]
    try:
        for index, forms in enumerate(groups):
            path = forms[0]
            sidecar = _strip_compression(path) + sealing.SUFFIX
            missing = not os.path.lexists(path)   # only its seal file is left (histories)
            if missing and index < len(groups) - 1 and all(
                    not os.path.lexists(older[0]) for older in groups[:index]):
                # Pruning deletes the seal file last: a crash in between (or a seal file
                # it could not delete) leaves it, before the oldest file still there.
                history.notes.append('%s is gone, its seal file is left (pruned, and a '
                                     'crash came before its seal file went?)' % path)
                continue
            if missing and _chains_lines(sidecar):
                raise Broken(path, None, 'the file is gone, but its seal file %s is here: the '
                             'file was deleted' % sidecar)
            if os.path.lexists(sidecar + DAMAGED_SUFFIX):
                # The daemon found the seal file damaged at start and sealed the file
                # afresh, lines and all: what the old one covered cannot be checked
                # any more (attack finding A4-18).
                raise Broken(path, None, 'the daemon found its seal file damaged (kept as %s) '
                             'and sealed the file afresh: its lines before that cannot be '
                             'checked' % (sidecar + DAMAGED_SUFFIX))
            if not os.path.exists(sidecar):
                if history.last is not None:
                    raise Broken(path, None, 'its seal file %s is missing, but %s before it is '
                                 'sealed' % (sidecar, history.last_path)) from None
                not_sealed.extend(forms)
                continue
            if not_sealed and not_sealed[-1] in groups[index - 1]:
                history.notes.append('%s: the files before it were not sealed' % path)
            # Each form must hold what the seals say: a reader may pick any of them
            # (attack finding A4-3); the state goes on from the last.
            for number, path in enumerate(forms):
                target = history if number == len(forms) - 1 else history.trial()
                opener = _OPENERS.get(os.path.splitext(path)[1])
                with contextlib.ExitStack() as files_open:
                    sidecar_stream = files_open.enter_context(_open_regular(sidecar))
                    if missing:      # a file with no line yet (rotation makes it at once)
                        stream = io.BytesIO()
                    else:
                        stream = files_open.enter_context(_open_regular(path))
                    if opener is not None and not missing:
                        stream = files_open.enter_context(opener(stream, 'rb'))
                    target.check_file(path, name, stream, sidecar_stream,
                                      index == len(groups) - 1)
            history.sealed_files += 1
    except Broken as exc:
        print('BROKEN %s' % exc, file=out)
        status = EX_BROKEN
    except PermissionError as exc:
        # Neither intact nor tampered: not checked (reading logs takes the loghog group).
        print('NOT CHECKED %s: %s' % (exc.filename or path, exc.strerror), file=out)
        status = EX_NOINPUT
    except (OSError, EOFError, lzma.LZMAError) as exc:
        print('BROKEN %s: cannot be read: %s' % (path, exc), file=out)
        status = EX_BROKEN
    for note in history.notes:
        print('  note: %s' % note, file=out)
    if status != EX_BROKEN:
        if history.seal is None and history.sealed_files:
            print('NOT SEALED %s: chained, but no seal yet' % files[-1], file=out)
            status = EX_NOT_SEALED
        elif anchor is not None and not history.anchor_seen:
            print('BROKEN %s: no seal of the anchored epoch %d: the history was cut short or '
                  'rebuilt' % (files[-1], anchor[0]), file=out)
            status = EX_BROKEN
        elif history.seal is not None:
            seal = history.seal
            print('OK %s: %d files; sealed through epoch %d at %s, %d lines, chain %s'
                  % (os.path.join(*_history_key(files[-1])), history.sealed_files,
                     seal.last_epoch, _format_time(seal.time_us / 1e6), seal.lines,
                     seal.chain_hash.hex()[:16]), file=out)
    for path in not_sealed:
        print('NOT SEALED %s: it has no seal file' % path, file=out)
        if status == EX_INTACT:
            status = EX_NOT_SEALED
    return status


def _history_key(path):
    return _history_of(path)[0]


def build_parser():
    parser = argparse.ArgumentParser(
        prog='loghogd verify', description='Check sealed log files (and their backups, '
        'compressed or not) against their seals. Exit 0: intact; 1: tampered (the first '
        'file and line where it breaks are printed); 2: a file was never sealed.')
    parser.add_argument('--key', required=True, metavar='KEYFILE',
                        help='a file holding the verification key printed by loghogd seal-init')
    parser.add_argument('--anchor', metavar='EPOCH:HASH',
                        help='a seal noted off the machine earlier (loghogd status shows the '
                        'latest): the history must contain it, so cutting the end shows')
    parser.add_argument('--app', metavar='NAME',
                        help='the application the files belong to, for copies kept outside '
                        'its folder (default: the name of the folder each file is in)')
    parser.add_argument('paths', nargs='+', metavar='PATH',
                        help='log files, or folders (one per application)')
    return parser


def main(argv=None):
    """Run ``loghogd verify``; return 0, 1, 2, 66 or 64."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EX_USAGE if exc.code else 0
    try:
        with open(args.key) as stream:
            keys = Keys(*sealing.parse_verification_key(stream.read()))
    except (OSError, ValueError) as exc:
        print('loghogd verify: %s: %s' % (args.key, exc), file=sys.stderr)
        return EX_USAGE
    anchor = None
    if args.anchor:
        epoch, _, prefix = args.anchor.partition(':')
        try:
            anchor = (int(epoch), prefix.lower())
            # A short prefix matches chains by chance, an empty one every chain (attack
            # finding A4-4): at least the 12 digits the Prometheus file gives.
            if not MIN_ANCHOR_DIGITS <= len(prefix) <= 64:
                raise ValueError(prefix)
            bytes.fromhex(prefix if len(prefix) % 2 == 0 else prefix + '0')
        except ValueError:
            print('loghogd verify: --anchor EPOCH:HASH, with at least %d hex digits of the '
                  'chain hash (as loghogd status shows it)' % MIN_ANCHOR_DIGITS,
                  file=sys.stderr)
            return EX_USAGE
    missing = [path for path in args.paths if not os.path.exists(path)]
    if missing:
        print('loghogd verify: %s: no such file or folder' % missing[0], file=sys.stderr)
        return EX_USAGE
    found = histories(args.paths)
    if not found:
        print('loghogd verify: no log files in %s' % ', '.join(args.paths), file=sys.stderr)
        return EX_NOT_SEALED
    if anchor is not None and len(found) > 1:
        # An anchor is the seal of one file's history (loghogd status shows one per
        # file): required of every history in a folder, it failed the others (A4-5).
        names = [os.path.join(*key) for key in sorted(found)]
        print('loghogd verify: --anchor is the seal of one history, and %s hold %d (%s): '
              'give the files of the one it was noted for, such as %s*'
              % (', '.join(args.paths), len(names), ', '.join(names[:3])
                 + (', ...' if len(names) > 3 else ''), names[0]), file=sys.stderr)
        return EX_USAGE
    statuses = [check_history(files, keys, anchor, app=args.app)
                for _, files in sorted(found.items())]
    for status in (EX_BROKEN, EX_NOINPUT, EX_NOT_SEALED):
        if status in statuses:
            return status
    return EX_INTACT
