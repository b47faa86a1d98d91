"""Visible gaps: the records a client dropped, counted per module until it can say so.

When the buffer is full and the daemon cannot take messages, the sender drops the oldest
queued frames (issue 13).  Those records must not vanish silently: ``Gaps`` counts them per
module (the module names the file they would have gone to), with the time of the first and
last one and why they were dropped, and ``take()`` turns each module's count into one line
of text that the sender sends, as an ordinary message of the same app and module, just
before the next record it delivers.  So the gap is announced in the file where it is::

    [loghog] 1234 records dropped by this process (pid 4242) between 2026-12-05 02:01:40
    and 2026-12-05 02:02:40 UTC: the daemon was unreachable

Past ``MAX_MODULES`` modules (a logger per job, request or tenant) the records of every
further module are counted together in one entry, announced in the app's root file with
how many modules they were of: the bookkeeping stays within bounds while the buffer drops,
and every dropped record is still counted in exactly one announcement (A8-6).

Pure bookkeeping: frames and reasons in, text out; no sockets, and times come from the
frames themselves (their ``stamp``).
"""

import itertools
import json
import time
import zlib

from loghog import wire

# Every announcement starts with this, so that a reader (or a grep) tells it from the
# application's own lines.
MARK = '[loghog]'


# How many modules get an announcement of their own.  An application logs under tens of
# modules (its facilities); past a hundred, the names are made per job, request or tenant,
# where a line per name would bury the file in announcements and the bookkeeping would grow
# with every name while the buffer drops (A8-6: +118 MiB for 290,000 names).  A hundred
# entries take a few KiB, and their announcements (~250 bytes each) fit one batch.
MAX_MODULES = 100

# The records of every further module are counted in one entry, which also counts how many
# modules they were of, exactly up to this many names (kept to tell a new name from one
# already counted: ~100 bytes each, at most ~1 MiB, an eighth of the buffer's 8 MiB), and
# as "more than" that beyond.  As many as the buffer holds records (10,000).
MAX_OTHER_NAMES = 10_000

# The module of the announcement that counts the other modules together: the app's root
# facility, its main file.
OTHERS_MODULE = 'root'

# Both client encoders write the module, then the stamp: '..."module": "web", "stamp": 17...'.
_MODULE_KEY = b'"module": '
_STAMP_KEY = b', "stamp": '


def describe_frame(frame, modules=None):
    """Return ``(module, stamp)`` of a message frame (``('root', None)`` if it is not one).

    Called for each dropped frame, on the application's thread while the daemon is
    unreachable: the two fields are found with ``bytes.find`` and the module's quoted
    name looked up in ``modules`` (a dict, a cache of names already decoded) when given:
    1.9 µs against 5.2 µs for ``json.loads`` of a typical payload (timeit, loaded 2-CPU
    machine, 2026-12-05).  Anything unexpected (a compressed frame requeued by the thread)
    takes the slow path.
    """
    flags = wire.HEADER.unpack_from(frame)[1]
    if not flags & wire.FLAG_ZLIB:
        start = frame.find(_MODULE_KEY)
        end = frame.find(_STAMP_KEY, start)
        stamp_end = frame.find(b',', end + len(_STAMP_KEY))
        if 0 < start < end < stamp_end:
            quoted = frame[start + len(_MODULE_KEY):end]
            try:
                module = modules[quoted] if modules is not None and quoted in modules \
                    else json.loads(quoted)
                stamp = int(frame[end + len(_STAMP_KEY):stamp_end])
            except (ValueError, TypeError):
                pass
            else:
                if isinstance(module, str):
                    if modules is not None and len(modules) < 1000:
                        modules[quoted] = module
                    return module or 'root', stamp
    try:
        payload = frame[wire.HEADER_SIZE:]
        if flags & wire.FLAG_ZLIB:
            payload = zlib.decompress(payload)
        data = json.loads(payload)
        return str(data.get('module') or 'root'), data.get('stamp')
    except (ValueError, TypeError, AttributeError, zlib.error):
        return 'root', None


class Gaps:
    """Dropped records not yet announced, per module (at most ``MAX_MODULES``; the records
    of any further module are counted together, see ``MAX_OTHER_NAMES``).

    ``total`` is how many records the pending announcements cover (0: nothing to say).
    An entry is ``[count, first stamp, last stamp, reasons]``; the one of the other modules
    also holds their names, ``[count, first, last, reasons, names]`` (a set of at most
    ``MAX_OTHER_NAMES + 1``: one more means "more than").
    """

    def __init__(self):
        self._by_module = {}   # module -> [count, first stamp, last stamp, reasons]
        self._others = None    # the records of modules past MAX_MODULES, counted together
        self.total = 0
        self._modules = {}     # quoted module name in a frame -> the name

    def __bool__(self):
        return bool(self.total)

    def add(self, frames, reason, now=None):
        """Count ``frames`` (dropped, oldest first) as dropped because of ``reason``."""
        for frame in frames:
            module, stamp = describe_frame(frame, self._modules)
            if stamp is None:
                stamp = int(time.time() if now is None else now)
            entry = self._by_module.get(module)
            if entry is None:           # a new module, or one past MAX_MODULES
                self._count(module, 1, stamp, stamp, (reason,))
                continue
            entry[0] += 1               # the usual case, inline: a record of a known module
            if stamp < entry[1]:
                entry[1] = stamp
            if stamp > entry[2]:
                entry[2] = stamp
            if reason not in entry[3]:
                entry[3].append(reason)
            self.total += 1

    def _count(self, module, count, first, last, reasons):
        entry = self._by_module.get(module)
        if entry is None:
            if len(self._by_module) < MAX_MODULES:
                self._by_module[module] = [count, first, last, list(reasons)]
                self.total += count
                return
            entry = self._others
            if entry is None:
                entry = self._others = [0, first, last, [], set()]
            _add_names(entry[4], (module,))
        _merge(entry, count, first, last, reasons)
        self.total += count

    def take(self, pid):
        """Return ``[(module, text)]``, one announcement per module, and forget them."""
        return [(module, self.describe(entry, pid)) for module, entry in self.take_entries()]

    def take_entries(self, limit=None):
        """Return ``[(module, entry)]`` (the first ``limit`` of them, or all) and forget
        them; ``entry[0]`` is how many records the module's announcement stands for.  The
        other modules' entry comes last, under ``OTHERS_MODULE``.  ``restore()`` takes them
        back (a notice that could not be written)."""
        entries = []
        if limit is None or limit >= len(self._by_module):
            entries = list(self._by_module.items())
            self._by_module = {}
        else:
            for module in list(itertools.islice(self._by_module, limit)):
                entries.append((module, self._by_module.pop(module)))
        if self._others is not None and (limit is None or len(entries) < limit):
            entries.append((OTHERS_MODULE, self._others))
            self._others = None
        self.total -= sum(entry[0] for _, entry in entries)
        return entries

    def restore(self, entries):
        """Count again the ``(module, entry)`` pairs of ``take_entries()``."""
        for module, entry in entries:
            count, first, last, reasons = entry[:4]
            if len(entry) == 4:
                self._count(module, count, first, last, reasons)
                continue
            if self._others is None:    # the other modules' entry: merged whole
                self._others = [0, first, last, [], set()]
            _add_names(self._others[4], entry[4])
            _merge(self._others, count, first, last, reasons)
            self.total += count

    @staticmethod
    def describe(entry, pid):
        """The announcement's text for one module's ``entry`` (or the other modules')."""
        count, first, last, reasons = entry[:4]
        text = (f'{MARK} {count} records dropped by this process (pid {pid}) between '
                f'{_utc(first)} and {_utc(last)} UTC: {"; ".join(reasons)}')
        if len(entry) == 4:
            return text
        names = len(entry[4])
        modules = f'more than {MAX_OTHER_NAMES}' if names > MAX_OTHER_NAMES else names
        return (f'{text} (in {modules} other modules: past {MAX_MODULES} modules, one '
                f'line counts the records of all the others)')


def _merge(entry, count, first, last, reasons):
    """Add ``count`` records from ``first`` to ``last`` dropped for ``reasons`` to ``entry``."""
    entry[0] += count
    if first < entry[1]:
        entry[1] = first
    if last > entry[2]:
        entry[2] = last
    for reason in reasons:
        if reason not in entry[3]:
            entry[3].append(reason)


def _add_names(names, more):
    """Add ``more`` to the other modules' ``names``, up to one past MAX_OTHER_NAMES."""
    for name in more:
        if len(names) > MAX_OTHER_NAMES:
            return
        names.add(name)


def _utc(stamp):
    return time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(stamp))
