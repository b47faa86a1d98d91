"""The rotation state on disk: ``<workdir>/rotation.json`` and its journals.

What is kept per file (its state entry: when its period began, when it last rotated, its
app and facility) is rotation.py's business; this module only makes it survive a restart
without costing the loop more than a line per change (issue 15: the whole file was
rewritten, with two fsyncs, for every new file).

- ``append(changes)`` writes the changed entries, one JSON line each, to the current
  journal, ``rotation.json.journal-<generation>``: one ``write``, no fsync.
- ``write_snapshot(entries)`` starts generation + 1 (later changes go to its journal at
  once) and has a thread write ``rotation.json`` whole, ``{"format": 1, "generation":
  <generation + 1>, "files": ...}`` (temporary file, fsync, rename), then delete the
  journals of older generations: the entries are made and encoded on that thread too
  (in pieces that let the loop run between them), the loop only lists its files.
- ``load()`` reads rotation.json, then the journals of its generation and later, in order;
  a line cut short by a crash is skipped.  A snapshot that was never completed leaves
  the older one and its journals, which hold the same changes.

After a crash of the machine (not of the daemon) the last journal lines may be lost: the
files they name then rotate once more at start-up, which names backups in order anyway.
"""

import json
import logging
import os
import re
import threading
import time

from .files import write_atomically

log = logging.getLogger('loghogd.rotation')

STATE_NAME = 'rotation.json'
STATE_FORMAT = 1
JOURNAL_PREFIX = STATE_NAME + '.journal-'
# Entries encoded between two chances for the loop to take the interpreter lock: about
# 0.5 ms of work.
ENCODE_PIECE = 200
_JOURNAL_RE = re.compile(re.escape(JOURNAL_PREFIX) + r'(\d+)$')


class RotationState:
    """``<workdir>/rotation.json`` and its journals (see the module's docstring)."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.path = os.path.join(workdir, STATE_NAME)
        self.generation = 0
        self.journal_lines = 0      # lines in the current generation's journal
        self._writer = None         # the thread writing a snapshot, while it runs
        self._failing = False

    @property
    def journal_path(self):
        return os.path.join(self.workdir, '%s%d' % (JOURNAL_PREFIX, self.generation))

    def load(self):
        """{path: entry} as last saved; {} (and a warning) when rotation.json is unreadable."""
        try:
            with open(self.path, encoding='utf-8') as stream:
                data = json.load(stream)
            files = data['files']
            generation = data.get('generation', 0)
            if data.get('format') != STATE_FORMAT or not isinstance(files, dict) \
                    or not isinstance(generation, int):
                raise ValueError('unknown format')
        except FileNotFoundError:
            files, generation = {}, 0
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning('%s cannot be read (%s): rotation periods start again from the '
                        'files\' modification times', self.path, exc)
            files, generation = {}, 0
        journals = sorted(g for g in self._journals() if g >= generation)
        for number in journals:
            for change in _read_changes(os.path.join(self.workdir, '%s%d' % (JOURNAL_PREFIX,
                                                                              number))):
                if change[1] is None:
                    files.pop(change[0], None)
                else:
                    files[change[0]] = change[1]
        self.generation = max([generation] + journals)
        return files

    def append(self, changes):
        """Append ``changes`` ({path: entry, or None for a file no longer tracked}) to the
        current journal in one write.  Returns False (logged once) if that failed."""
        data = ''.join(json.dumps([path, entry]) + '\n' for path, entry in changes.items())
        try:
            fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                         | os.O_CLOEXEC, 0o640)
            try:
                os.write(fd, data.encode('utf-8'))
            finally:
                os.close(fd)
        except OSError as exc:
            self._failed(exc)
            return False
        self._worked()
        self.journal_lines += len(changes)
        return True

    def is_writing(self):
        return self._writer is not None and self._writer.is_alive()

    def write_snapshot(self, entries, wait=False):
        """Start the next generation and write ``entries`` as rotation.json; on a thread
        unless ``wait``.  Does nothing while an earlier snapshot is being written (returns
        False).

        ``entries`` is a mapping {path: entry} or an iterable of (path, entry) pairs,
        consumed on the thread: rotation.py passes pairs made there from a list of its
        files taken now (an entry changed meanwhile is read newer, and the change is in
        the new generation's journal too, which ``load`` reads after the snapshot).
        """
        if self.is_writing():
            if not wait:
                return False
            self._writer.join()
        self.generation += 1
        self.journal_lines = 0
        if wait:
            self._write(entries, self.generation)
        else:
            self._writer = threading.Thread(target=self._write, args=(entries, self.generation),
                                            name='loghogd-rotation-state', daemon=True)
            self._writer.start()
        return True

    def close(self):
        if self._writer is not None:
            self._writer.join()

    def _write(self, entries, generation):
        data = _encode(entries, generation)
        try:
            write_atomically(self.path, data, durable=True)
        except OSError as exc:
            self._failed(exc)
            return
        self._worked()
        for number in self._journals():
            if number < generation:
                try:
                    os.unlink(os.path.join(self.workdir, '%s%d' % (JOURNAL_PREFIX, number)))
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    log.warning('cannot remove an old rotation journal: %s',
                                exc.strerror or exc)

    def _journals(self):
        try:
            names = os.listdir(self.workdir)
        except OSError:
            return []
        return [int(m.group(1)) for m in map(_JOURNAL_RE.match, names) if m]

    def _failed(self, exc):
        if not self._failing:
            log.error('cannot save rotation state to %s: %s', self.path, exc.strerror or exc)
        self._failing = True

    def _worked(self):
        if self._failing:
            log.warning('saving rotation state to %s again', self.path)
        self._failing = False


def _encode(entries, generation):
    """rotation.json's bytes: ``{"format": 1, "generation": <n>, "files": {...}}``.

    In pieces of ENCODE_PIECE entries, each followed by a ``time.sleep(0)``: one
    json.dumps of the whole table is one C call that holds the interpreter lock
    throughout (23 ms for 10,000 files idle, 70 ms loaded), so the loop thread waited
    for it even on this thread (issue 15), and without the sleep it waits up to Python's
    switch interval (5 ms) for the lock each time it wants it back."""
    if hasattr(entries, 'items'):
        entries = entries.items()
    dumps = json.dumps
    pieces = []
    piece = []
    for path, entry in entries:
        piece.append('%s:%s' % (dumps(path), dumps(entry, separators=(',', ':'))))
        if len(piece) >= ENCODE_PIECE:
            pieces.append(','.join(piece))
            piece = []
            time.sleep(0)    # lets a thread waiting for the lock (the loop) take it now
    pieces.append(','.join(piece))
    files = ','.join(p for p in pieces if p)
    return ('{"format":%d,"generation":%d,"files":{%s}}'
            % (STATE_FORMAT, generation, files)).encode('utf-8')


def _read_changes(path):
    """The (path, entry) pairs of one journal; lines that do not parse are skipped."""
    try:
        with open(path, encoding='utf-8', errors='replace') as stream:
            lines = stream.read().splitlines()
    except OSError:
        return []
    changes = []
    for line in lines:
        try:
            path_, entry = json.loads(line)
            if isinstance(path_, str) and (entry is None or isinstance(entry, dict)):
                changes.append((path_, entry))
        except (ValueError, TypeError):
            continue
    return changes
