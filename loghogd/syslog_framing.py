"""Splitting a syslog TCP or TLS stream into messages (RFC 6587).  Pure.

Each frame is read the way it starts: a digit means octet-counting (``LEN SP MSG``),
anything else non-transparent framing, ended by LF, CRLF or NUL (Python's SysLogHandler
over TCP sends ``<PRI>msg\\0``).  A sender may switch from one frame to the next.
Once a connection has ended a frame with NUL, an LF ends a frame only when a new message
('<') follows it: the messages of such senders may hold line breaks (a traceback).  Which
byte ends a frame depends only on the bytes before it (and the one after an LF), never on
how the stream was cut into reads; when the sender goes quiet right after an LF, the
connection ends that frame (``take_waiting_line``).

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
# How many distinct octet counts a connection remembers (a sender's lengths repeat).
COUNTS_CACHED = 1024


class SyslogFrameSplitter:
    """Feed it bytes as they arrive; it returns the complete messages.

    ``feed(data)`` returns a list of (message bytes, was_cut) in order.  ``is_mid_frame``
    is true while a frame has started but not ended (for the frame timeout);
    ``skip_remaining`` is how many bytes of a cut octet-counted frame are still to be
    skipped.  ``lost`` is always false: every byte sequence can be framed (the stream
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
        self.framing_known = False     # a frame has ended: the first one is read apart
        self.counts = {}               # octet counts seen (bytes -> int): most repeat
        # In the read being split: the next NUL and LF at or after the frame being read
        # (-1: none up to the end, -2: not looked for yet), so that each byte is searched
        # once however the frames end.
        self._nul_at = self._newline_at = -2

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
                end = self._find_delimiter(buffer, start, size)
                if end < 0:
                    start = size
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
            elif fast and (start or self.framing_known):
                after = self._split_run(buffer, start, out)
                if after:
                    start = after
                    continue
                fast = False   # one by one for the rest of this read: no scan twice
            end = self._find_delimiter(buffer, start, size)
            if end < 0:
                if size - start > max_size:
                    append((buffer[start:start + max_size], True))
                    self.skipping_to_delimiter = True
                    start = size
                break
            if end - start > max_size:
                append((buffer[start:start + max_size], True))
            elif end > start:
                frame = buffer[start:end]
                if frame != b'\r':
                    append((frame, False))
            start = end + 1
        if start:
            self.framing_known = True   # a frame ended before the one left unfinished
        self.buffer = bytearray(buffer[start:]) if start < size else bytearray()
        return out

    def _split_run(self, buffer, start, out):
        """Append the frames from ``start`` to the read's last delimiter at once, when they
        all end the same way and none is special: none starts with a digit (octet
        counting), none is over max_size, and the delimiter cannot change (no NUL among
        LF-ended frames; no LF before '<' among NUL-ended ones).  Return where the next
        frame starts, or 0 to read the frames one by one (the same frames either way)."""
        if self.nul_framed:
            last = buffer.rfind(b'\x00', start)
            if last <= start:
                return 0
            run = buffer[start:last]
            if b'\n<' in run or _DIGIT_AFTER_NUL.search(run):
                return 0
            frames = run.split(b'\x00')
        else:
            last = buffer.rfind(b'\n', start)
            if last <= start:
                return 0
            run = buffer[start:last]
            if b'\x00' in run or _DIGIT_AFTER_LF.search(run):
                return 0
            frames = run.split(b'\n')
        if max(map(len, frames)) > self.max_size:
            return 0
        if b'' in frames or b'\r' in frames:
            frames = [frame for frame in frames if frame and frame != b'\r']
        out += zip(frames, repeat(False))
        return last + 1

    def _find_delimiter(self, buffer, start, size):
        """The index of the byte that ends the frame at ``start``, or -1 (not yet known):
        the first NUL or LF; once NUL-framed, the first NUL or LF before '<'; for the
        connection's first frame, see _first_frame_end."""
        nul = self._nul_at
        if nul < start and nul != -1:
            nul = self._nul_at = buffer.find(b'\x00', start)
        newline = self._newline_at
        if newline < start and newline != -1:
            newline = self._newline_at = buffer.find(b'\n', start)
        if nul >= 0 and (newline < 0 or nul < newline):
            self.nul_framed = True
            return nul
        if not self.nul_framed:
            if self.framing_known or start or newline < 0:
                return newline
            return self._first_frame_end(buffer, newline, nul, size)
        while newline >= 0:
            if newline + 1 >= size:
                return -1              # the byte after it decides
            if buffer[newline + 1] == 0x3C:   # '<': a new message
                return newline
            newline = buffer.find(b'\n', newline + 1, nul if nul >= 0 else size)
        return nul

    def _first_frame_end(self, buffer, newline, nul, size):
        """The end of the connection's first frame, which holds an LF before any NUL.

        An LF ends it when the next message starts after it ('<', or a digit: octet
        counting), as with every LF-framed sender; a NUL that comes first ends it, with its
        line breaks (SysLogHandler's traceback as a first message: the sender ends its
        messages with NUL).  Only the NULs and LFs among the frame's first max_size bytes
        decide; when they have not, the frame ends at its first LF.
        Returns -1 while the bytes that decide have not all arrived."""
        limit = self.max_size          # the frame starts at 0 here
        if nul < 0 or nul >= limit:
            nul = -1
        probe = newline
        while 0 <= probe < limit and (nul < 0 or probe < nul):
            if probe + 1 >= size:
                return -1              # the byte after it decides
            if buffer[probe + 1] == 0x3C or 0x30 <= buffer[probe + 1] <= 0x39:
                return newline         # a new message: an LF-framed sender
            probe = buffer.find(b'\n', probe + 1, size)
        if nul >= 0:
            self.nul_framed = True
            return nul
        if size < limit:
            return -1                  # not decided yet
        return newline                 # LF-framed (over max_size: the caller cuts it)

    def take_waiting_line(self):
        """When the sender has gone quiet or closed (the caller's clock): what waits only
        for a byte that is not coming.  A NUL-framed connection's frame that ends with an
        LF waits for the byte after it ('<' would end the frame at that LF): the LF ends
        it.  A connection's first frame that holds an LF waits for a NUL or a new message
        (_first_frame_end): its LFs end frames.  Returns [(message, was_cut)], or []."""
        buffer = self.buffer
        if not buffer or self.skip_remaining or self.skipping_to_delimiter:
            return []
        if not (self.framing_known or self.nul_framed):
            if b'\n' not in buffer or (0x30 <= buffer[0] <= 0x39 and _octet_count(
                    buffer, 0, len(buffer))[0] is not False):
                return []
            self.framing_known = True
            return self.feed(b'')
        if not (self.nul_framed and buffer.endswith(b'\n')):
            return []
        if 0x30 <= buffer[0] <= 0x39 and _octet_count(buffer, 0, len(buffer))[0] is not False:
            return []   # an octet-counted frame that happens to hold an LF so far
        frame = bytes(buffer[:-1])
        buffer.clear()
        return [(frame, False)] if frame and frame != b'\r' else []

    def take_rest(self):
        """At the end of the stream: the unfinished frame as (message, was_cut), or None.

        A frame without its trailer is a whole message; an octet-counted one that stops
        short of its count is cut."""
        rest = bytes(self.buffer)
        self.buffer.clear()
        if not rest.strip(b'\r\n\x00') or self.skip_remaining or self.skipping_to_delimiter:
            self.skip_remaining = 0
            self.skipping_to_delimiter = False
            return None
        first = rest[0]
        if 0x30 <= first <= 0x39:
            length, body_start = _octet_count(rest, 0, len(rest))
            if length:
                return rest[body_start:body_start + self.max_size], True
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
