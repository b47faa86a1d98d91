"""Which byte ends a non-transparent syslog frame (loghogd/syslog_framing.py): NUL framing
is decided by a connection's first frame, an LF ends a NUL-framed message only before a
PRI, each byte is searched a bounded number of times, and a cut frame's end is found
however the stream was cut into reads (attack findings A3-26, A3-27, A3-16, A3-10)."""

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from loghogd.syslog_framing import SyslogFrameSplitter

TRACEBACK = (b'<11>pl: startup failed\nTraceback (most recent call last):\n'
             b'  File "x.py", line 1, in <module>\nZeroDivisionError: division by zero')


def messages(frames):
    return [data for data, _ in frames]


def test_the_first_message_of_a_nul_framed_connection_keeps_its_line_breaks():
    """A3-26: SysLogHandler over TCP, a traceback as the connection's first record."""
    splitter = SyslogFrameSplitter(1024)
    assert splitter.feed(TRACEBACK + b'\x00<11>pl: sentinel\x00') == [
        (TRACEBACK, False), (b'<11>pl: sentinel', False)]
    assert splitter.nul_framed
    # The same, a byte at a time.
    splitter = SyslogFrameSplitter(1024)
    frames = []
    for byte in TRACEBACK + b'\x00':
        frames += splitter.feed(bytes([byte]))
    assert frames == [(TRACEBACK, False)]


def test_an_lf_senders_first_message_ends_when_the_next_one_starts():
    splitter = SyslogFrameSplitter(1024)
    assert splitter.feed(b'<14>pl: one\n') == []          # the bytes after the LF decide
    assert splitter.is_mid_frame
    # The PRI after it: LF framing, and from then on every LF ends a message at once,
    # as RFC 6587 says.
    assert splitter.feed(b'<14>pl: two\n') == [(b'<14>pl: one', False), (b'<14>pl: two', False)]
    assert splitter.lf_framed and not splitter.nul_framed
    assert splitter.feed(b'<14>pl: three\nno pri\n') == [
        (b'<14>pl: three', False), (b'no pri', False)]


def test_an_undecided_message_is_taken_when_the_sender_goes_quiet():
    splitter = SyslogFrameSplitter(1024)
    assert splitter.feed(b'<14>pl: only one\n') == []
    assert splitter.take_waiting_line() == [(b'<14>pl: only one', False)]
    assert splitter.lf_framed and not splitter.is_mid_frame
    assert splitter.feed(b'<14>pl: next\n') == [(b'<14>pl: next', False)]
    # At the end of the stream, the same message.
    splitter = SyslogFrameSplitter(1024)
    splitter.feed(b'<14>pl: last\n')
    assert splitter.take_rest() == (b'<14>pl: last', False)


def test_a_nul_framed_message_keeps_lines_that_start_with_lt():
    """A3-27: XML or HTML lines are no new message; only a PRI after an LF is."""
    soap = b"<14>pl: SOAP response:\n<?xml version='1.0'?>\n<Envelope>\n  <Body/>\n</Envelope>"
    for first in (b'<14>pl: first\x00', b''):
        splitter = SyslogFrameSplitter(1024)
        assert messages(splitter.feed(first + soap + b'\x00<14>pl: next\x00')) == \
            ([first[:-1]] if first else []) + [soap, b'<14>pl: next']
    splitter = SyslogFrameSplitter(1024)
    assert messages(splitter.feed(b'<14>pl: a\x00<14>pl: lf then\n<14>pl: new\x00')) == \
        [b'<14>pl: a', b'<14>pl: lf then', b'<14>pl: new']


def test_line_breaks_cost_linear_time():
    """A3-16: 60 KB frames of LFs fed in 512-byte reads (the smallest adaptive read) took
    about 1.5 s each, every LF of the unfinished frame walked at every read; linear, it
    is milliseconds (the bound is for a loaded machine)."""
    data = b'<14>pl: nul framed\x00' + (b'\n' * 60000 + b'\x00') * 4
    splitter = SyslogFrameSplitter(65536)
    began = time.process_time()
    frames = []
    for start in range(0, len(data), 512):
        frames += splitter.feed(data[start:start + 512])
    used = time.process_time() - began
    assert len(frames) == 5
    assert used < 0.3, used


PIECES = [b'<14>', b'<14>pl: x', b'<?x', b'<1', b'4>', b'<', b'>', b'1', b'12 ', b'\n', b'\r\n',
          b'\x00', b'y' * 15, b'a', b' ']


@settings(max_examples=600, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=30).map(b''.join),
       st.lists(st.integers(1, 9), min_size=1, max_size=10))
def test_frames_do_not_depend_on_how_the_stream_was_cut(data, cuts):
    """A3-10: with a small max_size, frames are cut and skipped often; fed whole, in
    pieces or a byte at a time, the same frames come out, and the same rest."""
    def run(steps):
        splitter = SyslogFrameSplitter(10)
        out, start, index = [], 0, 0
        while start < len(data):
            step = steps[index % len(steps)]
            out += splitter.feed(data[start:start + step])
            start += step
            index += 1
        return out, splitter.take_rest(), splitter.nul_framed
    whole = run([len(data) or 1])
    assert run(cuts) == whole
    assert run([1]) == whole


def test_a_cut_frame_ending_at_an_lf_read_alone_does_not_swallow_the_next():
    """A3-10 as the attacker sent it: the cut frame's LF, then the next message."""
    splitter = SyslogFrameSplitter(64)
    assert splitter.feed(b'<14>pl: first\x00') == [(b'<14>pl: first', False)]
    assert splitter.feed(b'<14>pl: long ' + b'y' * 100) == [
        ((b'<14>pl: long ' + b'y' * 100)[:64], True)]
    assert splitter.feed(b'\n') == []
    assert splitter.feed(b'<14>pl: next message\x00') == [(b'<14>pl: next message', False)]
    # And when the sender goes quiet after that LF, the skipped frame is over.
    splitter.feed(b'<14>pl: long ' + b'y' * 100 + b'\n')
    assert splitter.take_waiting_line() == [] and not splitter.is_mid_frame


def test_a_sender_of_lines_without_pri_loses_no_line():
    """Before the framing is known, a message may hold line breaks up to max_size; lines
    that never show a PRI or a NUL (`tail -f | nc`) are LF-framed then, each a message,
    rather than one cut message and the rest skipped."""
    lines = [b'plain line %d' % n for n in range(20)]
    data = b'\n'.join(lines) + b'\n'
    for step in (len(data), 7, 1):
        splitter = SyslogFrameSplitter(64)
        frames = []
        for start in range(0, len(data), step):
            frames += splitter.feed(data[start:start + step])
        assert messages(frames) == lines
        assert splitter.lf_framed and not splitter.is_mid_frame
