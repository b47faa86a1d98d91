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
