"""Keeping a message whose optional ``fields`` the JSON decoder cannot take.

The ``fields`` object is an extension the body does not depend on (protocol.py: a bad one
is dropped, never the message).  Two kinds of ``fields`` make the decoder fail on the whole
payload before ``sender_fields`` can look at them: nesting beyond the decoder's recursion
limit (``[[[[...`` 10,000 deep fits in a message) and integers beyond Python's digit limit
(4,300 digits).  ``without_fields`` finds the top-level ``fields`` member with a flat scan
(no recursion, linear in the payload), puts ``null`` in its place and decodes again; the
caller then drops the fields with the reason.  Only this rare path pays for it.
"""

import json
import re

# A JSON string (escapes included) or a bracket: what the depth of a position depends on.
_TOKEN_RE = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_MEMBER_COLON_RE = re.compile(r'\s*:\s*')
_SCALAR_END_RE = re.compile(r'[\s,}\]]')


def without_fields(text):
    """The decoded payload ``text`` with its top-level ``fields`` member set to None, or
    None when there is no such member or the payload still does not decode."""
    span = _fields_value_span(text)
    if span is None:
        return None
    start, end = span
    try:
        data = json.loads(text[:start] + 'null' + text[end:])
    except (ValueError, RecursionError):
        return None
    return data if data.__class__ is dict else None


def _fields_value_span(text):
    """(start, end) of the value of the top-level object's key "fields", or None."""
    depth = 0
    tokens = _TOKEN_RE.finditer(text)
    for token in tokens:
        kind = token.group()[0]
        if kind == '"':
            if depth == 1 and token.group() == '"fields"':
                colon = _MEMBER_COLON_RE.match(text, token.end())
                if colon and ':' in colon.group():
                    return _value_span(text, colon.end(), tokens)
        elif kind in '[{':
            depth += 1
        else:
            depth -= 1
    return None


def _value_span(text, start, tokens):
    """(start, end) of the JSON value that begins at ``start``; ``tokens`` goes on from
    the key before it."""
    first = text[start:start + 1]
    if first == '"':
        string = _TOKEN_RE.match(text, start)
        return (start, string.end()) if string else None
    if first not in ('[', '{'):
        end = _SCALAR_END_RE.search(text, start)
        return start, end.start() if end else len(text)
    depth = 0
    for token in tokens:
        kind = token.group()[0]
        if kind in '[{':
            depth += 1
        elif kind in ']}':
            depth -= 1
            if depth == 0:
                return start, token.end()
    return None
