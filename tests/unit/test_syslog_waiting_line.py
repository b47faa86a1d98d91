"""A NUL-framed sender's message that ends with an LF: the frame waits for the byte after
the LF ('<' ends the frame there, anything else continues it); when the sender goes quiet,
the connection takes it (SyslogFrameSplitter.take_waiting_line)."""

from loghogd.syslog_framing import SyslogFrameSplitter


def nul_framed():
    splitter = SyslogFrameSplitter(64)
    assert splitter.feed(b'<14>first\x00') == [(b'<14>first', False)]
    return splitter


def test_a_message_ended_by_lf_is_taken_when_the_sender_goes_quiet():
    splitter = nul_framed()
    assert splitter.feed(b'<14>two\nlines\n') == []
    assert splitter.is_mid_frame
    assert splitter.take_waiting_line() == [(b'<14>two\nlines', False)]
    assert not splitter.is_mid_frame
    assert splitter.feed(b'<14>next\x00') == [(b'<14>next', False)]


def test_only_a_frame_that_waits_for_the_byte_after_an_lf_is_taken():
    # Not NUL-framed: an LF ends the frame at once, nothing waits.
    splitter = SyslogFrameSplitter(64)
    assert splitter.feed(b'<14>a\n<14>b') == [(b'<14>a', False)]
    assert splitter.take_waiting_line() == []
    # NUL-framed, but the frame does not end with an LF: it waits for its NUL.
    splitter = nul_framed()
    splitter.feed(b'<14>no end yet')
    assert splitter.take_waiting_line() == []
    assert splitter.take_rest() == (b'<14>no end yet', False)
    # An octet-counted frame whose bytes so far end with an LF waits for its count.
    splitter = nul_framed()
    splitter.feed(b'18 <14>line\n')
    assert splitter.take_waiting_line() == []
    assert splitter.feed(b'more one\x00') == [(b'<14>line\nmore one\x00', False)]
    # The rest of a cut frame is skipped, not taken.
    splitter = nul_framed()
    assert splitter.feed(b'<14>' + b'x' * 70 + b'\n') == [(b'<14>' + b'x' * 60, True)]
    assert splitter.take_waiting_line() == []
    # An empty line is no message.
    splitter = nul_framed()
    splitter.feed(b'\r\n')
    assert splitter.take_waiting_line() == []
    assert not splitter.is_mid_frame


# -- the connection's first frame: NUL-framed or LF-framed is not known yet --------------------

TRACEBACK = (b'<11>myapp: boom\nTraceback (most recent call last):\n  File "x.py", line 1\n'
             b'ValueError')


def pieces(data, step):
    splitter = SyslogFrameSplitter(256)
    frames = []
    for start in range(0, len(data), step):
        frames += splitter.feed(data[start:start + step])
    return splitter, frames


def test_a_first_message_with_line_breaks_from_a_nul_framed_sender_stays_whole():
    """SysLogHandler over TCP: '<PRI>msg\\0'; a traceback as the connection's first
    message is one message, however the stream arrives."""
    data = TRACEBACK + b'\x00<14>myapp: next\x00'
    for step in (len(data), 7, 1):
        splitter, frames = pieces(data, step)
        assert frames == [(TRACEBACK, False), (b'<14>myapp: next', False)]


def test_a_first_message_of_an_lf_framed_sender_ends_at_its_lf():
    """An LF before a new message ('<' or an octet count) ends the first frame there, as
    it always did; lines without PRI continue the first message (they cannot be told from
    a traceback's lines) until the sender goes quiet after an LF, or closes."""
    data = b'<14>one\n<14>two\n9 <14>three<14>four\n'
    for step in (len(data), 5, 1):
        assert pieces(data, step)[1] == [(b'<14>one', False), (b'<14>two', False),
                                         (b'<14>three', False), (b'<14>four', False)]
    splitter, frames = pieces(b'plain line 1\nplain line 2\n', 4)
    assert frames == []
    assert splitter.is_mid_frame
    assert splitter.take_waiting_line() == [(b'plain line 1\nplain line 2', False)]
    splitter, frames = pieces(b'plain line 1\nplain line 2\nplain', 4)
    assert splitter.take_waiting_line() == []
    assert splitter.take_rest() == (b'plain line 1\nplain line 2\nplain', False)


def test_only_the_first_frames_max_size_bytes_decide():
    """No NUL and no new message within max_size bytes: the sender is LF-framed, and a
    first line over max_size is cut as before, the next ones whole."""
    data = b'<14>' + b'a' * 300 + b'\n' + b'b' * 10 + b'\n<14>next\n'
    for step in (len(data), 9):
        splitter, frames = pieces(data, step)
        assert frames == [(data[:256], True), (b'b' * 10, False), (b'<14>next', False)]
    data = b'<14>' + b'a' * 100 + b'\n' + b'b' * 200 + b'\x00<14>next\x00'
    for step in (len(data), 9):
        splitter, frames = pieces(data, step)
        assert frames[0] == (data[:105 - 1], False)
