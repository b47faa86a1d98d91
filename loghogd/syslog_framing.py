"""Splitting a syslog TCP or TLS stream into messages (RFC 6587).  Pure.

Each frame is read the way it starts: a digit means octet-counting (``LEN SP MSG``),
anything else non-transparent framing, ended by LF, CRLF or NUL (Python's SysLogHandler
over TCP sends ``<PRI>msg\\0``).  A sender may switch from one frame to the next.

A frame longer than ``max_size`` bytes is cut: its first ``max_size`` bytes are delivered
as a message (marked cut, for a counter), the rest is skipped up to the end of that frame,
and the frames after it are read as usual: an over-long message never costs the
connection's next ones.
"""

# Digits of an octet count: a count of 10 digits is already beyond any max_size.
MAX_COUNT_DIGITS = 10
_DELIMITERS = b'\n\x00'


class SyslogFrameSplitter:
    """Feed it bytes as they arrive; it returns the complete messages.

    ``feed(data)`` returns a list of (message bytes, was_cut) in order.  ``is_mid_frame``
    is true while a frame has started but not ended (for the frame timeout);
    ``skip_remaining`` is how many bytes of a cut octet-counted frame are still to be
    skipped.  ``lost`` is always false: every byte sequence can be framed (the stream
    connection's interface).
    """

    lost = False

    def __init__(self, max_size):
        self.max_size = max_size
        self.buffer = bytearray()
        self.skip_remaining = 0        # bytes of a cut octet-counted frame still to skip
        self.skipping_to_delimiter = False   # a cut non-transparent frame: skip to its end

    @property
    def is_mid_frame(self):
        return bool(self.buffer) or self.skip_remaining > 0 or self.skipping_to_delimiter

    def feed(self, data):
        """Return [(message, was_cut)] for every frame that ``data`` completes."""
        out = []
        buffer = self.buffer
        buffer += data
        start = 0
        size = len(buffer)
        max_size = self.max_size
        while start < size:
            if self.skip_remaining:
                taken = min(self.skip_remaining, size - start)
                self.skip_remaining -= taken
                start += taken
                continue
            if self.skipping_to_delimiter:
                end = _find_delimiter(buffer, start)
                if end < 0:
                    start = size
                    break
                self.skipping_to_delimiter = False
                start = end + 1
                continue
            first = buffer[start]
            if 0x30 <= first <= 0x39:
                length, body_start = _octet_count(buffer, start, size)
                if length is None:
                    break                  # the count is not complete yet
                if length is not False:
                    if length > max_size:
                        if body_start + max_size > size:
                            break          # wait for the part we keep
                        out.append((bytes(buffer[body_start:body_start + max_size]), True))
                        self.skip_remaining = length - max_size
                        start = body_start + max_size
                        continue
                    if body_start + length > size:
                        break
                    out.append((bytes(buffer[body_start:body_start + length]), False))
                    start = body_start + length
                    continue
                # Digits not followed by a space: a message without PRI, non-transparent.
            end = _find_delimiter(buffer, start)
            if end < 0:
                if size - start > max_size:
                    out.append((bytes(buffer[start:start + max_size]), True))
                    self.skipping_to_delimiter = True
                    start = size
                break
            if end - start > max_size:
                out.append((bytes(buffer[start:start + max_size]), True))
            elif end > start:
                frame = bytes(buffer[start:end])
                if frame != b'\r':
                    out.append((frame, False))
            start = end + 1
        del buffer[:start]
        return out


def _find_delimiter(buffer, start):
    """The index of the first LF or NUL at or after ``start``, or -1."""
    newline = buffer.find(b'\n', start)
    nul = buffer.find(b'\x00', start, newline if newline >= 0 else len(buffer))
    return nul if nul >= 0 else newline


def _octet_count(buffer, start, size):
    """(length, index after 'LEN SP') for an octet count at ``start``; (None, None) if
    more bytes are needed; (False, None) if the digits are not an octet count."""
    index = start
    limit = min(size, start + MAX_COUNT_DIGITS + 1)
    while index < limit and 0x30 <= buffer[index] <= 0x39:
        index += 1
    if index == limit:
        if limit == size and index - start <= MAX_COUNT_DIGITS:
            return None, None
        return False, None
    if buffer[index] != 0x20:
        return False, None
    return int(buffer[start:index]), index + 1
