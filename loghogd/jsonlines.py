"""What a record looks like in a ``format = json`` facility.  Pure: values in, a line out.

One record is one line: a JSON object, ASCII only (every line break, control character,
bidi control and non-ASCII character inside a value is a ``\\uXXXX`` escape), so that
``jq``, Loki or Elasticsearch read it and no value can look like a second record::

    {"time": "2026-12-05T03:14:15.926535+01:00", "host": "web1", "app": "shop",
     "module": "shop.orders", "level": "ERROR", "logger": "shop.orders",
     "message": "boom\\nTraceback ...", "request_id": "r-42", "lineno": 17, ...}

- ``time``: when the daemon received the record (the time a text line starts with),
  RFC 3339 with microseconds and the local offset.
- ``host``, ``app``, ``module``: the message's host name, application and module.
- ``level`` and ``logger``: the sender's ``levelname`` and ``name`` fields (the Python
  client sends them); without them ``level`` is left out and ``logger`` is the module.
- ``message``: the body, trailing line breaks dropped (as in a text line).
- Then the sender's other fields as they came.  One whose name is one of ours is kept
  under ``PREFIX`` (``field_host``), never over ours.  Fields the daemon dropped
  (protocol.sender_fields) leave ``fields_dropped``: the reason.
"""

import json
import math
import time
from json.encoder import encode_basestring_ascii as _quote

OURS = frozenset(('time', 'host', 'app', 'module', 'level', 'logger', 'message'))
PREFIX = 'field_'
# The sender's fields that become ours (the Python client's names, LogRecord's).
LEVEL_FIELD = 'levelname'
LOGGER_FIELD = 'name'

_encode = json.JSONEncoder(allow_nan=False).encode


def rfc3339(now):
    """``now`` (Unix time) as local time, RFC 3339 with microseconds and the offset:
    '2026-12-05T03:14:15.926535+01:00'.  (Formatted from the struct_time: strftime costs
    a microsecond more per line.)"""
    seconds = int(now)
    local = time.localtime(seconds)
    offset_min = local.tm_gmtoff // 60
    sign = '+' if offset_min >= 0 else '-'
    offset_min = abs(offset_min)
    return '%04d-%02d-%02dT%02d:%02d:%02d.%06d%s%02d:%02d' % (
        local.tm_year, local.tm_mon, local.tm_mday, local.tm_hour, local.tm_min, local.tm_sec,
        int((now - seconds) * 1e6), sign, offset_min // 60, offset_min % 60)


def format_json_line(now, host, app, module, body, fields=None):
    """The line (ending in '\n') for one record received at ``now``; ``fields`` as
    ``protocol.sender_fields`` returned it (a dict, a reason it was dropped, or None).

    The usual record (no field named like ours, every number finite) is written with one
    %-format of parts quoted by json's own C escaper, and the fields in one encoder call:
    the same text as ``json.dumps`` of the whole object, in about half the time."""
    level = None
    logger = module
    extra = ''
    if fields.__class__ is dict:
        if fields:
            rest = dict(fields)
            level = rest.pop(LEVEL_FIELD, None)
            name = rest.pop(LOGGER_FIELD, None)
            if name.__class__ is str:
                logger = name
            if rest:
                if not OURS.isdisjoint(rest):
                    return _format_slowly(now, host, app, module, body, fields)
                try:
                    extra = ', ' + _encode(rest)[1:-1]
                except ValueError:   # NaN or Infinity, which Python's JSON decoder accepts
                    return _format_slowly(now, host, app, module, body, fields)
    elif fields is not None:
        extra = ', "fields_dropped": ' + _quote(fields)
    return '{"time": "%s", "host": %s, "app": %s, "module": %s%s, "logger": %s, "message": %s%s}\n' % (
        rfc3339(now), _quote(host), _quote(app), _quote(module),
        ', "level": ' + _quote(level) if level.__class__ is str else '', _quote(logger),
        _quote(body.rstrip('\r\n')), extra)


def _format_slowly(now, host, app, module, body, fields):
    """``format_json_line`` for fields that need renaming or cleaning, one at a time."""
    record = {'time': rfc3339(now), 'host': host, 'app': app, 'module': module}
    level = fields.get(LEVEL_FIELD)
    if level.__class__ is str:
        record['level'] = level
    name = fields.get(LOGGER_FIELD)
    record['logger'] = name if name.__class__ is str else module
    record['message'] = body.rstrip('\r\n')
    for key, value in fields.items():
        if key == LEVEL_FIELD or key == LOGGER_FIELD:
            continue
        while key in OURS or key in record:   # ours, or a field kept under the prefix
            key = PREFIX + key
        record[key] = value
    try:
        return _encode(record) + '\n'
    except ValueError:
        return _encode(_finite(record)) + '\n'


def _finite(value):
    """``value`` with every non-finite float written as its text ('nan', 'inf')."""
    if value.__class__ is float and not math.isfinite(value):
        return repr(value)
    if value.__class__ is dict:
        return {key: _finite(item) for key, item in value.items()}
    if value.__class__ is list:
        return [_finite(item) for item in value]
    return value
