"""The checker: account for every message of a run in the files a daemon wrote.

Each line must look like ``<prefix> - <hostname> - <body>`` where the body is one that
``loadgen.make_body`` made for this run (right tag, connection and sequence in range,
matching checksum, exact padding).  The result counts lines that are missing,
duplicated, garbled (anything that is not such a line, including another run's) and
order violations: a line whose sequence number is lower than one already seen from the
same connection.  Whether reordering is a failure is the caller's call (loghogd must
keep each connection's order; rsyslog's is reported as a number).

Usable alone: ``python benchmarks/checker.py --tag TAG --counts 25000,25000 FILE...``
"""

import argparse
import bz2
import dataclasses
import gzip
import lzma
import os
import re
import sys
import zlib

_BODY = re.compile(rb'LHB r=([0-9a-f]{8}) c=(\d{3}) s=(\d{7}) t=(\d{16}) h=([0-9a-f]{8}) (x+)')
_HEAD_SIZE = len(b'LHB r=00000000 c=000 s=0000000 t=0000000000000000')
_BODY_SIZE = 100
_OPENERS = {'.gz': gzip.open, '.xz': lzma.open, '.bz2': bz2.open}
EXAMPLES = 5


@dataclasses.dataclass
class CheckResult:
    """What the checker found; ``examples`` holds the first few problems, for humans."""
    expected: int = 0
    lines: int = 0
    received: int = 0           # distinct expected messages found intact
    missing: int = 0
    duplicated: int = 0
    garbled: int = 0
    order_violations: int = 0
    examples: list = dataclasses.field(default_factory=list)

    def ok(self, allow_loss=False, allow_reorder=False):
        """True when nothing is wrong beyond what the caller allows."""
        return (not self.duplicated and not self.garbled
                and (allow_loss or not self.missing)
                and (allow_reorder or not self.order_violations))

    def problems(self):
        """A short human summary: '' when everything is there, once, in order."""
        parts = ['%s %d' % (name, getattr(self, name))
                 for name in ('missing', 'duplicated', 'garbled', 'order_violations')
                 if getattr(self, name)]
        return ', '.join(parts)


class Checker:
    """Feed it lines (bytes, with or without the newline), then read ``result()``.

    ``counts[c]`` is how many messages connection ``c`` sent; ``hostname`` is what every
    line's host field must say (None: don't check it).
    """

    def __init__(self, tag, counts, hostname=None):
        self.tag = tag.encode('ascii')
        self.counts = list(counts)
        self.hostname = hostname.encode('ascii') if hostname else None
        self.seen = [bytearray(count) for count in self.counts]
        self.last = [-1] * len(self.counts)
        self.stats = CheckResult(expected=sum(self.counts))

    def _problem(self, text):
        if len(self.stats.examples) < EXAMPLES:
            self.stats.examples.append(text)

    def _garbled(self, line, why):
        self.stats.garbled += 1
        self._problem('garbled (%s): %r' % (why, line[:160]))

    def feed(self, line):
        """Account for one line."""
        stats = self.stats
        stats.lines += 1
        line = line.rstrip(b'\n')
        at = line.find(b'LHB r=')
        if at < 0:
            return self._garbled(line, 'no body')
        match = _BODY.fullmatch(line, at)
        if match is None or len(line) - at != _BODY_SIZE:
            return self._garbled(line, 'body')
        tag, conn, seq, _, crc, _ = match.groups()
        if tag != self.tag:
            return self._garbled(line, 'another run')
        if int(crc, 16) != zlib.crc32(line[at:at + _HEAD_SIZE]):
            return self._garbled(line, 'checksum')
        # loghogd's syslog lines put 'program facility.severity: ' before the body.
        if self.hostname is not None and b' - %s - ' % self.hostname not in line[:at]:
            return self._garbled(line, 'prefix')
        conn, seq = int(conn), int(seq)
        if conn >= len(self.counts) or seq >= self.counts[conn]:
            return self._garbled(line, 'out of range')
        if self.seen[conn][seq]:
            stats.duplicated += 1
            return self._problem('duplicated: connection %d message %d' % (conn, seq))
        self.seen[conn][seq] = 1
        stats.received += 1
        if seq < self.last[conn]:
            stats.order_violations += 1
            self._problem('out of order: connection %d message %d after %d'
                          % (conn, seq, self.last[conn]))
        else:
            self.last[conn] = seq

    def result(self):
        """Return the CheckResult, with ``missing`` counted now."""
        stats = self.stats
        stats.missing = stats.expected - stats.received
        if stats.missing:
            for conn, seen in enumerate(self.seen):
                first = seen.find(0)
                if first >= 0:
                    self._problem('missing: connection %d message %d (and %d more there)'
                                  % (conn, first, seen.count(0) - 1))
                    break
        return stats


def output_files(path):
    """Return ``path`` and its rotated siblings (``path.*``), oldest first."""
    folder, name = os.path.split(path)
    try:
        names = [n for n in os.listdir(folder or '.') if (n == name or n.startswith(name + '.'))
                 and not n.endswith('.seal')]   # sealing's sidecars (issue 19)
    except FileNotFoundError:
        return []
    paths = [os.path.join(folder, n) for n in names]
    return sorted(paths, key=lambda p: (p == path, os.stat(p).st_mtime, p))


def read_lines(paths):
    """Yield every line of ``paths`` in order, decompressing rotated .gz/.xz/.bz2 files."""
    for path in paths:
        opener = _OPENERS.get(os.path.splitext(path)[1], open)
        with opener(path, 'rb') as handle:
            yield from handle


def check_files(paths, tag, counts, hostname=None):
    """Check every line of ``paths`` (in this order) against a run; return a CheckResult."""
    checker = Checker(tag, counts, hostname)
    for line in read_lines(paths):
        checker.feed(line)
    return checker.result()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--tag', required=True)
    parser.add_argument('--counts', required=True, help='messages per connection: 100,100,...')
    parser.add_argument('--hostname')
    parser.add_argument('files', nargs='+')
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.counts.split(',')]
    result = check_files(args.files, args.tag, counts, args.hostname)
    print(result)
    return 0 if result.ok() else 1


if __name__ == '__main__':
    sys.exit(main())
