"""lines.py: a message body inside a text line can never look like a second record."""

import re
import unicodedata

import pytest
from hypothesis import given, settings, strategies as st

from loghogd.lines import (ALL_PRINTABLE, CONTINUATION, PRINTABLE_ASCII, escape_controls,
                           format_body)

FORGED = ('hello\n2026-12-05 03:14:15.926535 - db1.example.com - ERROR - root password '
          'changed by admin')
BIDI = '\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069'


def is_forbidden(char):
    """Characters that must never reach a line raw (TAB is allowed, '\\n' only before
    CONTINUATION, checked separately)."""
    if char == '\t':
        return False
    category = unicodedata.category(char)
    return category in ('Cc', 'Zl', 'Zp', 'Cs') or char in BIDI


def assert_one_record(text):
    """The property: no character a tool or a terminal takes as a line break or a control,
    except each '\\n' that starts a marked continuation line."""
    parts = text.split('\n')
    for index, part in enumerate(parts):
        if index:
            assert part.startswith(CONTINUATION), repr(text)
        assert not any(is_forbidden(c) for c in part), repr(part)
        assert len(part.splitlines()) <= 1, repr(part)   # \v, \f, \x1c-\x1e, U+0085, ...


def test_a_printable_body_is_written_as_it_is():
    assert format_body('GET /index.html 200 \u00e9t\u00e9 \u2603 emoji \U0001f600') == \
        'GET /index.html 200 \u00e9t\u00e9 \u2603 emoji \U0001f600'
    assert format_body('') == ''


def test_a_forged_record_becomes_a_marked_continuation_line():
    assert format_body(FORGED) == ('hello\n  | 2026-12-05 03:14:15.926535 - db1.example.com - '
                                   'ERROR - root password changed by admin')


def test_a_traceback_stays_readable():
    body = ('ERROR - boom\nTraceback (most recent call last):\n  File "x.py", line 1, in f\n'
            '\tat Java.style(Frame.java:1)\nValueError: x\n')
    assert format_body(body).split('\n') == [
        'ERROR - boom',
        '  | Traceback (most recent call last):',
        '  |   File "x.py", line 1, in f',
        '  | \tat Java.style(Frame.java:1)',
        '  | ValueError: x',
    ]


def test_crlf_is_a_line_break_and_trailing_breaks_are_dropped():
    assert format_body('one\r\ntwo\r\n\r\n') == 'one\n  | two'
    assert format_body('one\n\ntwo\n') == 'one\n  | \n  | two'


@pytest.mark.parametrize('raw, shown', [
    ('a\rb', 'a\\x0db'),
    ('a\x00b', 'a\\x00b'),
    ('\x1b[31mred\x1b[0m', '\\x1b[31mred\\x1b[0m'),
    ('\x7f', '\\x7f'),
    ('a\x85b', 'a\\x85b'),
    ('\x9b', '\\x9b'),
    ('a\u2028b\u2029c', 'a\\u2028b\\u2029c'),
    ('user \u202eexe.txt', 'user \\u202eexe.txt'),
    ('\u2066x\u2069', '\\u2066x\\u2069'),
    ('\v\f\x1c\x1d\x1e', '\\x0b\\x0c\\x1c\\x1d\\x1e'),
    ('a\ud800b', 'a\\ud800b'),
    ('tab\tstays', 'tab\tstays'),
])
def test_controls_are_written_as_visible_escapes(raw, shown):
    assert format_body(raw) == shown


@pytest.mark.parametrize('char', [chr(c) for c in list(range(0x20)) + list(range(0x7f, 0xa0))]
                         + list(BIDI) + ['\u2028', '\u2029'])
def test_every_control_character_is_escaped_alone_and_between_lines(char):
    for body in (char, 'a%sb' % char, 'a\n%s\nb' % char, char + '\n' + char):
        assert_one_record(format_body(body))


def test_the_escape_names_the_code_point():
    for code in list(range(0x20)) + list(range(0x7f, 0xa0)):
        if chr(code) not in '\t\n':
            assert re.fullmatch(r'\\x[0-9a-f]{2}', escape_controls(chr(code)))
            assert int(escape_controls(chr(code))[2:], 16) == code


# Any character, with the dangerous ones made frequent (and lone surrogates, which some
# hypothesis versions never draw).
ANY_CHARACTER = st.one_of(st.characters(blacklist_categories=()), st.sampled_from(
    ['\n', '\r', '\t', '\x00', '\x1b', '\x85', '\x9b', '\u2028', '\u2029', '\u202e',
     '\u2066', '\ud800', '\udfff', '\v', '\f', '\x1c', ' ', '|']))


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=ANY_CHARACTER))
def test_property_no_line_break_but_marked_continuations(body):
    assert_one_record(format_body(body))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=('Cc', 'Cs', 'Zl', 'Zp'),
                                                blacklist_characters=BIDI)), min_size=1))
def test_property_printable_lines_are_kept_one_per_line(lines):
    """Nothing is lost from a body without controls: its lines come back as they were."""
    body = '\n'.join(lines).rstrip('\r\n')
    result = format_body(body).split('\n')
    assert result[0] + ''.join('\n' + part[len(CONTINUATION):] for part in result[1:]) == body


def printable_ascii_by_table(data):
    return ALL_PRINTABLE.startswith(data.translate(PRINTABLE_ASCII))


def printable_ascii_by_python(data):
    return data.isascii() and data.decode('ascii').isprintable()


def test_the_syslog_paths_byte_table_agrees_with_isprintable_on_every_byte():
    """The syslog shapes' path takes a body as it is when the table says printable ASCII:
    exactly when str.isprintable() would (so format_body would not change it)."""
    for code in range(256):
        for data in (bytes([code]), b'abc' + bytes([code]), bytes([code]) + b'xyz'):
            assert printable_ascii_by_table(data) == printable_ascii_by_python(data), data


@settings(max_examples=500)
@given(st.binary(max_size=300) | st.text(max_size=300).map(lambda text: text.encode('utf-8', 'surrogatepass')))
def test_the_byte_table_agrees_with_isprintable_on_any_bytes(data):
    assert printable_ascii_by_table(data) == printable_ascii_by_python(data)
    if printable_ascii_by_table(data):
        assert format_body(data.decode('ascii')) == data.decode('ascii')


def test_a_body_longer_than_the_table_is_left_to_isprintable():
    data = b'x' * (len(ALL_PRINTABLE) + 1)
    assert not printable_ascii_by_table(data)   # the caller's slow path decides: still printable
    assert format_body(data.decode()) == data.decode()
