"""What a message body looks like inside a text log line.  Pure: a str in, a str out.

One record is one line plus its continuation lines, and nothing a peer sends can make
it look like two records, or hide part of itself from a person reading the file:

- A multi-line body (a traceback) keeps its lines, each after the first prefixed with
  ``CONTINUATION`` ("  | "), so that it stays readable and a line that starts with a
  receive time is always the start of a record::

      2026-12-05 03:14:15.926535 - web1 - ERROR - boom
        | Traceback (most recent call last):
        |   File "app.py", line 3, in <module>
        | ZeroDivisionError: division by zero

  ``grep -v '^  | '`` keeps only the first line of each record.  A line break is "\\n"
  or "\\r\\n"; trailing line breaks are dropped (``logging`` handlers often add one).

- Every other character that could move the cursor, end a line for some tool, or
  reorder what is shown is written as a visible escape: C0 controls but TAB (NUL, a
  lone CR, ESC of ANSI colour codes, ...), DEL, C1 controls (U+0080 to U+009F, with
  U+0085 NEXT LINE), U+2028 LINE SEPARATOR, U+2029 PARAGRAPH SEPARATOR, the bidi
  controls (U+061C, U+200E, U+200F, U+202A to U+202E, U+2066 to U+2069) and lone
  surrogates.  Code points below U+0100 become ``\\xHH``, others ``\\uHHHH``, in
  lower-case hex.  TAB stays a TAB.  A backslash is not doubled: the escapes are for
  people and ``grep``, not a reversible encoding (a body that holds the four characters
  ``\\x1b`` reads the same as one that held an ESC).
"""

import re

CONTINUATION = '  | '

# What is escaped (see above).  Python's str.isprintable() is False for every one of
# them, so a printable body (almost all of them) is returned as it is.
_ESCAPED_RE = re.compile(
    '[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069'
    '\ud800-\udfff]')
_LINE_BREAK_RE = re.compile('\r?\n')
# For bytes not decoded yet (the syslog path): printable ASCII (0x20 to 0x7E) translates to
# 1, every other byte to 0, so ``ALL_PRINTABLE.startswith(data.translate(PRINTABLE_ASCII))``
# says that ``data`` needs no escape and is ASCII: 131 ns for a 96-byte body, where
# decoding and str.isprintable() take 258 (timeit, Python 3.11).  A body longer than
# ALL_PRINTABLE is simply not found printable here (str.isprintable() decides).
PRINTABLE_ASCII = bytes(1 if 0x20 <= code < 0x7f else 0 for code in range(256))
ALL_PRINTABLE = b'\x01' * 65536


def _escape(match):
    code = ord(match.group())
    return '\\x%02x' % code if code < 0x100 else '\\u%04x' % code


def escape_controls(text):
    """``text`` with every character of _ESCAPED_RE (line breaks included) escaped."""
    if text.isprintable():
        return text
    return _ESCAPED_RE.sub(_escape, text)


def format_body(body):
    """The text a line holds for message ``body``: its continuation lines marked with
    CONTINUATION, trailing line breaks dropped, controls escaped (see the module's
    docstring).  The result holds no line break but the "\\n" before each CONTINUATION."""
    if body.isprintable():   # the fast path: no line break, no control character
        return body
    body = body.rstrip('\r\n')
    if '\n' not in body:
        return escape_controls(body)
    return ('\n' + CONTINUATION).join(escape_controls(part)
                                      for part in _LINE_BREAK_RE.split(body))
