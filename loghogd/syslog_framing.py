"""Splitting a syslog TCP or TLS stream into messages (RFC 6587).  Pure.

Each frame is read the way it starts: a digit means octet-counting (``LEN SP MSG``),
anything else non-transparent framing, ended by LF, CRLF or NUL (Python's SysLogHandler
over TCP sends ``<PRI>msg\\0``, and its messages may hold line breaks: a traceback).  A
sender may switch from one frame to the next.

Which byte ends a non-transparent frame depends on what the connection has shown:

- LF framing (an LF has ended a frame, and no NUL has): the first LF or NUL.
- NUL framing (a NUL has ended a frame), and a connection's frames until one of them
  tells (its first): the first NUL, or the first LF followed by a new message, a PRI
  (``<`` 1 to 3 digits ``>``, what rsyslog's framing.delimiter.regex looks for).  Any
  other LF is a line break inside the message (``<?xml`` or ``<Envelope>`` is no PRI).
  The first frame that ends so decides the framing: at a NUL, NUL framing; at an LF,
  LF framing.  So the first message of a SysLogHandler connection keeps its traceback,
  and an LF sender's first message ends as soon as the second one starts.  Before the
  framing is known, a frame that would so be longer than max_size ends at its first LF
  if one comes within max_size (LF framing: a sender of lines without PRI loses none).

Which byte ends a frame depends only on the bytes of the stream, never on how it was
cut into reads.  An LF at the end of what has arrived waits for the bytes after it
(a PRI would end the frame there); when the sender goes quiet instead, the connection
ends the frame at that LF (``take_waiting_line``; an undecided connection then counts as
LF-framed).

A frame longer than ``max_size`` bytes is cut: its first ``max_size`` bytes are delivered
as a message (marked cut, for a counter), the rest is skipped up to the end of that frame,
and the frames after it are read as usual: an over-long message never costs the
connection's next ones.
"""

import re
from itertools import repeat

# Digits of an octet count: a count of 10 digits is already beyond any max_size.
MAX_COUNT_DIGITS = 10
_DIGIT_AFTER_LF = re.compile(b'\n[0-9]')
_DIGIT_AFTER_NUL = re.compile(b'\x00[0-9]')
# An LF before a new message (a PRI, or an octet count and a PRI); the same without the
# LF; an LF at the end of the bytes so far that may still be one (at most 17 bytes).
_PRI_AFTER_LF = re.compile(b'\n(?:[0-9]{1,10} )?<[0-9]{1,3}>')
_PRI = re.compile(b'(?:[0-9]{1,10} )?<[0-9]{1,3}>')
_MAYBE_PRI_AFTER_LF = re.compile(
    b'\n(?:[0-9]{0,10}|[0-9]{1,10} |(?:[0-9]{1,10} )?<[0-9]{0,3})\\Z')
MAYBE_PRI_BYTES = 17
# How many distinct octet counts a connection remembers (a sender's lengths repeat).
COUNTS_CACHED = 1024


class SyslogFrameSplitter:
    """Feed it bytes as they arrive; it returns the complete messages.

    ``feed(data)`` returns a list of (message bytes, was_cut) in order.  ``is_mid_frame``
    is true while a frame has started but not ended (for the frame timeout);
    ``skip_remaining`` is how many bytes of a cut octet-counted frame are still to be
    skipped.  ``nul_framed`` and ``lf_framed`` are what the connection has shown (module
    docstring).  ``lost`` is always false: every byte sequence can be framed (the stream
    connection's interface).
    """

    lost = False

    def __init__(self, max_size, fast=True):
        self.max_size = max_size
        self.fast = fast               # split runs of delimited frames at once (_split_run)
        self.buffer = bytearray()
        self.skip_remaining = 0        # bytes of a cut octet-counted frame still to skip
        self.skipping_to_delimiter = False   # a cut non-transparent frame: skip to its end
        self.nul_framed = False        # this sender ends its frames with NUL
        self.lf_framed = False         # ... with LF (an LF ended a frame, no NUL has)
        self.counts = {}               # octet counts seen (bytes -> int): most repeat
        # In the read being split: the next NUL, LF, and LF before a PRI at or after the
        # frame being read (-1: none up to the end, or for the PRI up to _pri_to; -2: not
        # looked for yet), so that each byte is searched once however the frames end
        # (attack finding A3-16: a walk over every LF per read was quadratic).
        self._nul_at = self._newline_at = self._pri_at = -2
        self._pri_to = 0
        # Where the bytes start that may still end the frame (an LF at the end of the
        # read, waiting for a PRI after it): what a skip keeps (A3-10).
        self._wait_from = 0
        # Bytes at the start of ``buffer`` (the unfinished frame) in which no LF before
        # a PRI starts: the next read's search resumes there (A3-16: a frame of 60 KB of
        # LFs read 512 bytes at a time was searched from its start at every read).
        self._searched = 0

    @property
    def is_mid_frame(self):
        return bool(self.buffer) or self.skip_remaining > 0 or self.skipping_to_delimiter

    def feed(self, data):
        """Return [(message, was_cut)] for every frame that ``data`` completes."""
        out = []
        append = out.append
        if self.buffer:
            self.buffer += data
            data = self.buffer
        # The frames are sliced out of one bytes object: one copy of the read, and one
        # allocation per message (slices of a bytearray would need two).
        buffer = bytes(data)
        find = buffer.find
        self._nul_at = self._newline_at = -2
        if self._searched and data is self.buffer:
            self._pri_at, self._pri_to = -1, self._searched
        else:
            self._pri_at, self._pri_to = -2, 0
        self._searched = 0
        fast = self.fast
        start = 0
        size = len(buffer)
        max_size = self.max_size
        counts = self.counts
        while start < size:
            if self.skip_remaining:
                taken = min(self.skip_remaining, size - start)
                self.skip_remaining -= taken
                start += taken
                continue
            if self.skipping_to_delimiter:
                end = self._find_delimiter(buffer, start, size, skipping=True)
                if end < 0:
                    # Keep an LF at the end: the bytes after it decide (A3-10).
                    start = self._wait_from
                    break
                self.skipping_to_delimiter = False
                start = end + 1
                continue
            first = buffer[start]
            if 0x30 <= first <= 0x39:
                # The common case first, inline: octet-counted frames one after another
                # (saves about 0.5 µs a frame over the general path below).  Digits
                # followed by a space are a count (isdigit: ASCII digits only).
                space = find(b' ', start, start + MAX_COUNT_DIGITS + 1)
                while space > start:
                    length = counts.get(buffer[start:space])
                    if length is None:
                        digits = buffer[start:space]
                        if not digits.isdigit():
                            break
                        length = int(digits)
                        if len(counts) < COUNTS_CACHED:
                            counts[digits] = length
                    end = space + 1 + length
                    if length > max_size or end > size:
                        break
                    append((buffer[space + 1:end], False))
                    start = end
                    space = find(b' ', start, start + MAX_COUNT_DIGITS + 1)
                if start >= size or not 0x30 <= buffer[start] <= 0x39:
                    continue
                length, body_start = _octet_count(buffer, start, size)
                if length is None:
                    break                  # the count is not complete yet
                if length is not False:
                    if length > max_size:
                        if body_start + max_size > size:
                            break          # wait for the part we keep
                        append((buffer[body_start:body_start + max_size], True))
                        self.skip_remaining = length - max_size
                        start = body_start + max_size
                        continue
                    if body_start + length > size:
                        break
                    append((buffer[body_start:body_start + length], False))
                    start = body_start + length
                    continue
                # Digits not followed by a space: a message without PRI, non-transparent.
            elif fast:
                after = self._split_run(buffer, start, out)
                if after:
                    start = after
                    continue
                fast = False   # one by one for the rest of this read: no scan twice
            end = self._find_delimiter(buffer, start, size)
            if end < 0:
                # Over max_size unless an LF that waits for the bytes after it ends it.
                if self._wait_from - start > max_size:
                    append((buffer[start:start + max_size], True))
                    self.skipping_to_delimiter = True
                    start = self._wait_from
                elif not self.lf_framed or self.nul_framed:
                    self._searched = self._wait_from - start
                break
            if end - start > max_size:
                append((buffer[start:start + max_size], True))
            elif end > start:
                frame = buffer[start:end]
                if frame != b'\r':
                    append((frame, False))
            start = end + 1
        self.buffer = bytearray(buffer[start:]) if start < size else bytearray()
        return out

    def _split_run(self, buffer, start, out):
        """Append the frames from ``start`` to the read's last delimiter at once, when they
        all end the same way and none is special: none starts with a digit (octet
        counting), none is over max_size, and the delimiter cannot change (no NUL among
        LF-ended frames; no LF before a PRI among NUL-ended ones).  Return where the next
        frame starts, or 0 to read the frames one by one (the same frames either way)."""
        if self.nul_framed:
            last = buffer.rfind(b'\x00', start)
            if last <= start:
                return 0
            run = buffer[start:last]
            if _PRI_AFTER_LF.search(run) or _DIGIT_AFTER_NUL.search(run):
                return 0
            frames = run.split(b'\x00')
        else:
            if not self.lf_framed:
                # Undecided: LF framing if the first LF comes before a PRI (and no NUL
                # before it: checked with the run's below).
                newline = buffer.find(b'\n', start)
                if newline < 0 or not _PRI.match(buffer, newline + 1):
                    return 0
            last = buffer.rfind(b'\n', start)
            if last <= start:
                return 0
            run = buffer[start:last]
            if b'\x00' in run or _DIGIT_AFTER_LF.search(run):
                return 0
            frames = run.split(b'\n')
        if max(map(len, frames)) > self.max_size:
            return 0
        if not self.nul_framed:
            self.lf_framed = True
        if b'' in frames or b'\r' in frames:
            frames = [frame for frame in frames if frame and frame != b'\r']
        out += zip(frames, repeat(False))
        return last + 1

    def _find_delimiter(self, buffer, start, size, skipping=False):
        """The index of the byte that ends the frame at ``start``, or -1 (not known yet;
        ``_wait_from`` then says where an LF that may end it starts).  LF-framed: the
        first NUL or LF.  Otherwise the first NUL or LF before a PRI, and the one found
        decides the framing (module docstring).  Before the framing is known, a frame
        that this would make longer than max_size ends at its first LF if one comes
        within max_size (a sender of lines without PRI: its lines are not lost in a
        skip), else at its first NUL or LF (``skipping``: the rest of such a frame)."""
        self._wait_from = size
        nul = self._nul_at
        if nul < start and nul != -1:
            nul = self._nul_at = buffer.find(b'\x00', start)
        if (self.lf_framed or skipping) and not self.nul_framed:
            newline = self._newline_at
            if newline < start and newline != -1:
                newline = self._newline_at = buffer.find(b'\n', start)
            if nul >= 0 and (newline < 0 or nul < newline):
                self.nul_framed = True
                return nul
            if newline >= 0:
                self.lf_framed = True
            return newline
        limit = nul if nul >= 0 else size
        pri = self._pri_at
        if pri < start and (pri != -1 or self._pri_to < limit):
            # A match ends before ``limit`` (a NUL cannot be inside one): searched once.
            found = _PRI_AFTER_LF.search(buffer, max(start, self._pri_to) if pri == -1
                                         else start, limit)
            pri = self._pri_at = found.start() if found else -1
            self._pri_to = limit
        end = pri if pri >= 0 else nul
        if end < 0:
            waiting = _MAYBE_PRI_AFTER_LF.search(buffer, max(start, size - MAYBE_PRI_BYTES), size)
            if waiting:
                self._wait_from = waiting.start()
        if not self.nul_framed:
            window = start + self.max_size
            if end > window or (end < 0 and self._wait_from > window):
                self._wait_from = size
                return self._find_delimiter(buffer, start, size, skipping=True) \
                    if buffer.find(b'\n', start, window + 1) < 0 else self._lf_ends(buffer, start)
            if end == pri and pri >= 0:
                self.lf_framed = True
        if end == nul and nul >= 0:
            self.nul_framed = True
        return end

    def _lf_ends(self, buffer, start):
        """Before the framing is known: the frame at ``start`` ends at its first LF (which
        comes within max_size), and the connection is LF-framed."""
        self.lf_framed = True
        newline = self._newline_at
        if newline < start and newline != -1:
            newline = self._newline_at = buffer.find(b'\n', start)
        return newline

    def take_waiting_line(self):
        """When the sender has gone quiet (the caller's clock): a frame that ends with an
        LF waits only for the bytes after it (a PRI would end the frame at that LF); none
        is coming, so the LF ends it.  A connection whose framing was not decided yet is
        LF-framed from then on.  Returns [(message, False)], or [] when the unfinished
        frame is not such a one (the rest of a cut frame is skipped to that LF)."""
        buffer = self.buffer
        if not buffer.endswith(b'\n') or self.skip_remaining \
                or (self.lf_framed and not self.nul_framed):
            return []
        if self.skipping_to_delimiter:
            if not buffer.strip(b'\n'):   # kept only the LF that ends the skipped frame
                buffer.clear()
                self.skipping_to_delimiter = False
            return []
        if 0x30 <= buffer[0] <= 0x39 and _octet_count(buffer, 0, len(buffer))[0] is not False:
            return []   # an octet-counted frame that happens to hold an LF so far
        frame = bytes(buffer[:-1])
        buffer.clear()
        self._searched = 0
        if not self.nul_framed:
            self.lf_framed = True
        return [(frame, False)] if frame and frame != b'\r' else []

    def take_rest(self):
        """At the end of the stream: the unfinished frame as (message, was_cut), or None.

        A frame without its trailer is a whole message; an octet-counted one that stops
        short of its count is cut."""
        rest = bytes(self.buffer)
        self.buffer.clear()
        self._searched = 0
        if not rest.strip(b'\r\n\x00') or self.skip_remaining or self.skipping_to_delimiter:
            self.skip_remaining = 0
            self.skipping_to_delimiter = False
            return None
        first = rest[0]
        if 0x30 <= first <= 0x39:
            length, body_start = _octet_count(rest, 0, len(rest))
            if length:
                return rest[body_start:body_start + self.max_size], True
        if rest.endswith(b'\n'):
            rest = rest[:-1]   # an LF that waited for the bytes after it ends the frame
        return rest[:self.max_size], False


def _octet_count(buffer, start, size):
    """(length, index after 'LEN SP') for an octet count at ``start``; (None, None) if
    more bytes are needed; (False, None) if the digits are not an octet count."""
    limit = min(size, start + MAX_COUNT_DIGITS + 1)
    space = buffer.find(b' ', start, limit)
    if space < 0:
        digits = buffer[start:limit]
        if limit == size and len(digits) <= MAX_COUNT_DIGITS and digits.isdigit():
            return None, None
        return False, None
    digits = buffer[start:space]
    if not digits.isdigit():
        return False, None
    return int(digits), space + 1
