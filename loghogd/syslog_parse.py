"""Parsing syslog messages: bytes in, a SyslogMessage or a Rejection out.  Pure.

One function, ``parse_message(data, now)``, reads what real senders send:

- RFC 5424: ``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA [MSG]``, every
  header field possibly ``-``, IPv6 hostnames, STRUCTURED-DATA with the ``\\"``, ``\\\\`` and
  ``\\]`` escapes, an optional UTF-8 BOM before MSG;
- RFC 3164 as it exists: ``<PRI>Mmm dd hh:mm:ss host tag[pid]: msg``, with or without the
  hostname, with or without the timestamp (or with an RFC 3339 one, as rsyslog can send),
  ``<PRI>`` alone before a message, or no PRI at all (user.notice, RFC 3164 4.3.3).

Nothing raises on bad input: what cannot be read as a header is message text.  Bytes that
are not UTF-8 are replaced (U+FFFD), and the message says so (``replaced``) for a counter.
The header is split at the bytes level (cheaper than a regex: see benchmarks/README.md).
"""

import calendar
import functools
import time

from .lines import escape_controls, format_body
from .protocol import Rejection

EMPTY = 'syslog_empty'
REASONS = (EMPTY,)

FACILITY_NAMES = ('kern', 'user', 'mail', 'daemon', 'auth', 'syslog', 'lpr', 'news', 'uucp',
                  'cron', 'authpriv', 'ftp', 'ntp', 'security', 'console', 'solaris-cron',
                  'local0', 'local1', 'local2', 'local3', 'local4', 'local5', 'local6', 'local7')
SEVERITY_NAMES = ('emerg', 'alert', 'crit', 'err', 'warning', 'notice', 'info', 'debug')
# 'facility.severity' for each PRI value 0..191.
PRI_NAMES = tuple('%s.%s' % (FACILITY_NAMES[pri >> 3], SEVERITY_NAMES[pri & 7])
                  for pri in range(192))
# RFC 3164 4.3.3: a message without a PRI is user.notice.
DEFAULT_PRI = 13

MONTHS = {name.encode(): number for number, name in enumerate(
    ('Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'), 1)}
BOM = b'\xef\xbb\xbf'
# RFC 5424 6.1 limits of the header fields; longer ones make the header unreadable.
MAX_HOSTNAME = 255
MAX_APP_NAME = 48
MAX_PROCID = 128
MAX_MSGID = 32
# RFC 3164 says 32 characters of TAG; senders go beyond it (long program names).
MAX_TAG = 64
_TAG_CHARS = b'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-./@'
TRAILING = b'\r\n\x00'
# The digits of a valid PRI (0..191, leading zeros tolerated) -> its value: one look-up
# instead of isdigit(), int() and a range check.
_PRI_VALUES = {digits.encode(): pri for pri in range(192)
               for digits in {str(pri), '%02d' % pri, '%03d' % pri}}
# RFC 5424 PRINTUSASCII (33..126): deleting these from a header field must leave nothing.
_PRINTUSASCII = bytes(range(33, 127))


class SyslogMessage:
    """One parsed message.  Text fields are str or None (absent or ``-``).

    ``pri`` is facility * 8 + severity; ``timestamp`` the sender's time in Unix seconds
    (None without one, or when its fraction or offset cannot be read); ``structured_data``
    the SD elements as sent (escapes kept, as they appear in a line) or None; ``replaced``
    is true when bytes that were not UTF-8 were replaced; ``format`` is '5424', '3164' or
    'bare' (no header after the PRI).
    """

    __slots__ = ('pri', '_stamp', 'hostname', 'app_name', 'procid', 'msgid',
                 'structured_data', 'message', 'replaced', 'format')
    FIELDS = ('pri', 'timestamp', 'hostname', 'app_name', 'procid', 'msgid',
              'structured_data', 'message', 'replaced', 'format')

    def __init__(self, pri, stamp, hostname, app_name, procid, msgid, structured_data,
                 message, replaced, format):
        self.pri = pri
        # Seconds, None, or the RFC 3339 bytes: the line does not show the sender's time,
        # so it is computed only when asked for.
        self._stamp = stamp
        self.hostname = hostname
        self.app_name = app_name
        self.procid = procid
        self.msgid = msgid
        self.structured_data = structured_data
        self.message = message
        self.replaced = replaced
        self.format = format

    @property
    def timestamp(self):
        stamp = self._stamp
        if stamp.__class__ is bytes:
            stamp = parse_rfc3339(stamp)
            self._stamp = stamp = None if stamp is False else stamp
        return stamp

    @property
    def facility(self):
        return self.pri >> 3

    @property
    def severity(self):
        return self.pri & 7

    def fields(self):
        """A dict of every field (for tests and the fixture file)."""
        return {name: getattr(self, name) for name in self.FIELDS}

    def __repr__(self):
        return 'SyslogMessage(%r)' % self.fields()


def parse_message(data, now):
    """Parse one message (``data``: bytes, its frame's delimiter already removed).

    ``now`` (Unix seconds) picks the year of RFC 3164 timestamps, which have none.
    Returns a SyslogMessage, or a Rejection (reason EMPTY) for a message with nothing in
    it at all.  Never raises for any input.
    """
    data = bytes(data).rstrip(TRAILING)
    if not data:
        return Rejection(EMPTY, 'empty syslog message')
    pri = None
    if data[0] == 0x3C:   # '<'
        end = data.find(b'>', 1, 5)
        if end > 1:
            pri = _PRI_VALUES.get(data[1:end])
    if pri is None:
        return _parse_3164(DEFAULT_PRI, data, now)
    if data[end + 1:end + 3] == b'1 ':
        message = _parse_5424(pri, data)
        if message is not None:
            return message
    return _parse_3164(pri, data[end + 1:], now)


def _decode(raw):
    """(text, replaced): UTF-8, with what is not replaced by U+FFFD."""
    try:
        return raw.decode('utf-8'), False
    except UnicodeDecodeError:
        return raw.decode('utf-8', 'replace'), True


# -- RFC 5424 ----------------------------------------------------------------------------------

def _parse_5424(pri, data):
    """The fields of '<PRI>1 TIMESTAMP ...', or None when the header is not RFC 5424's.
    The common shapes take the short paths: this runs for every message."""
    parts = data.split(b' ', 6)
    if len(parts) < 7:
        if len(parts) != 6:
            return None
        parts.append(b'')   # nothing after MSGID: a frame cut right after the header
    _, stamp_raw, host_raw, app_raw, procid_raw, msgid_raw, tail = parts
    if stamp_raw == b'-':
        timestamp = None
    elif len(stamp_raw) > 19 and _rfc3339_seconds(stamp_raw[:19]) is not False:
        timestamp = stamp_raw    # the fraction and offset are read if asked for
    else:
        return None
    fields = _header_fields(host_raw, app_raw, procid_raw, msgid_raw)
    if fields is None:
        return None
    hostname, app_name, procid, msgid = fields
    sd_text, sd_replaced = None, False
    first = tail[:1]
    if first == b'-':
        if tail[1:2] == b' ':   # the usual: no SD, a message (fewer slices below)
            body = tail[5:] if tail[2:5] == BOM else tail[2:]
            try:
                return SyslogMessage(pri, timestamp, hostname, app_name, procid, msgid, None,
                                     body.decode('utf-8'), False, '5424')
            except UnicodeDecodeError:
                return SyslogMessage(pri, timestamp, hostname, app_name, procid, msgid, None,
                                     body.decode('utf-8', 'replace'), True, '5424')
        body = tail[1:]
    elif first == b'[':
        end = _structured_data_end(tail)
        if end is None:
            return None
        sd_text, sd_replaced = _decode(tail[:end])
        body = tail[end:]
    else:
        return None
    if body:
        if body[:1] != b' ':
            return None
        body = body[4:] if body[1:4] == BOM else body[1:]
    try:
        message, replaced = body.decode('utf-8'), sd_replaced
    except UnicodeDecodeError:
        message, replaced = body.decode('utf-8', 'replace'), True
    return SyslogMessage(pri, timestamp, hostname, app_name, procid, msgid, sd_text, message,
                         replaced, '5424')


# A sender's HOSTNAME, APP-NAME, PROCID and MSGID repeat from one message to the next:
# cached (bounded), checking and decoding them is one look-up (saves about 1 µs).
@functools.lru_cache(maxsize=1024)
def _header_fields(host_raw, app_raw, procid_raw, msgid_raw):
    """(hostname, app_name, procid, msgid), each None for '-'; None if one is not
    PRINTUSASCII of the length RFC 5424 allows."""
    if (host_raw + app_raw + procid_raw + msgid_raw).translate(None, _PRINTUSASCII) \
            or not (0 < len(host_raw) <= MAX_HOSTNAME and 0 < len(app_raw) <= MAX_APP_NAME
                    and 0 < len(procid_raw) <= MAX_PROCID and 0 < len(msgid_raw) <= MAX_MSGID):
        return None
    return tuple(None if raw == b'-' else raw.decode('ascii')
                 for raw in (host_raw, app_raw, procid_raw, msgid_raw))


def _structured_data_end(data):
    """The index just past the last SD-ELEMENT at the start of ``data``, or None.

    SD-ELEMENT = '[' SD-ID *(SP PARAM-NAME '="' PARAM-VALUE '"') ']'; inside a value '\\'
    escapes the next byte (RFC 5424 6.3.3 names '"', '\\' and ']').
    """
    index, size = 0, len(data)
    while index < size and data[index] == 0x5B:   # '['
        index += 1
        in_value = False
        while True:
            if index >= size:
                return None
            byte = data[index]
            if in_value:
                if byte == 0x5C:      # '\\': the next byte is part of the value
                    index += 1
                elif byte == 0x22:    # '"'
                    in_value = False
            elif byte == 0x22:
                in_value = True
            elif byte == 0x5D:        # ']'
                index += 1
                break
            index += 1
    return index


def unescape_param_value(value):
    """A PARAM-VALUE as sent (str) without its escapes: '\\"' '\\\\' '\\]' -> '"' '\\' ']'.

    A backslash before any other character stays (RFC 5424 6.3.3)."""
    if '\\' not in value:
        return value
    out = []
    index, size = 0, len(value)
    while index < size:
        char = value[index]
        if char == '\\' and index + 1 < size and value[index + 1] in '"\\]':
            out.append(value[index + 1])
            index += 2
            continue
        out.append(char)
        index += 1
    return ''.join(out)


def parse_rfc3339(raw):
    """Unix seconds for an RFC 3339 timestamp (bytes), fraction and offset or 'Z';
    False when it is not one."""
    seconds = _rfc3339_seconds(raw[:19])
    if seconds is False:
        return False
    rest = raw[19:]
    fraction = 0.0
    if rest[:1] == b'.':
        after = rest[1:].lstrip(b'0123456789')
        digits = len(rest) - 1 - len(after)
        if not 1 <= digits <= 6:   # RFC 5424: 1 to 6 digits
            return False
        fraction = int(rest[1:1 + digits]) / _SCALE[digits]
        rest = after
    if rest == b'Z' or rest == b'z':
        return seconds + fraction
    if len(rest) != 6 or rest[3:4] != b':' or rest[:1] not in (b'+', b'-') \
            or not rest[1:3].isdigit() or not rest[4:6].isdigit():
        return False
    offset = int(rest[1:3]) * 3600 + int(rest[4:6]) * 60
    return seconds - (offset if rest[:1] == b'+' else -offset) + fraction


_SCALE = (1, 10, 100, 1000, 10000, 100000, 1000000)


# The date and time part repeats from one message to the next: cached (bounded), it costs
# a dictionary look-up instead of about 2 µs of int() and timegm().
@functools.lru_cache(maxsize=1024)
def _rfc3339_seconds(raw):
    """UTC seconds for 'YYYY-MM-DDTHH:MM:SS' (bytes, without offset), or False."""
    if len(raw) != 19 or raw[4:5] != b'-' or raw[7:8] != b'-' or raw[10:11] not in (b'T', b't') \
            or raw[13:14] != b':' or raw[16:17] != b':':
        return False
    parts = (raw[0:4], raw[5:7], raw[8:10], raw[11:13], raw[14:16], raw[17:19])
    if not all(part.isdigit() for part in parts):
        return False
    year, month, day, hour, minute, second = map(int, parts)
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour <= 23 and minute <= 59
            and second <= 60):
        return False
    return calendar.timegm((year, month, day, hour, minute, second))


# -- RFC 3164 ----------------------------------------------------------------------------------

def _parse_3164(pri, rest, now):
    """What follows the PRI in the BSD format (or the whole message when there was none)."""
    timestamp, hostname, app_name, procid, after = _split_3164(rest, now)
    message, replaced = _decode(after)
    return SyslogMessage(pri, timestamp, hostname, app_name, procid, None, None, message,
                         replaced, '3164' if timestamp is not None or app_name else 'bare')


def _split_3164(rest, now):
    """(timestamp, hostname, app_name, procid, the MSG bytes: the end of ``rest``)."""
    timestamp, after = _bsd_timestamp(rest, now)
    hostname = None
    if timestamp is not None:
        # After a timestamp comes the hostname, unless the first word is already the tag
        # (local senders such as logger on /dev/log leave the hostname out).
        word, _, remainder = after.partition(b' ')
        if word and len(word) <= MAX_HOSTNAME and not word.translate(None, _PRINTUSASCII) \
                and _tag_end(word + b' ') is None:
            hostname = word.decode('ascii')
            after = remainder
    app_name = procid = None
    end = _tag_end(after)
    if end is not None:
        tag, body = after[:end[0]], after[end[1]:]
        bracket = tag.find(b'[')
        if bracket > 0:
            app_name = tag[:bracket].decode('ascii')
            procid = tag[bracket + 1:-1].decode('ascii') or None
        else:
            app_name = tag.decode('ascii')
        after = body
    return timestamp, hostname, app_name, procid, after


def _tag_end(data):
    """For 'tag[pid]: msg' or 'tag: msg' (or 'tag[pid] msg'): (end of tag, start of msg);
    None when ``data`` does not start with a tag."""
    head = data[:MAX_TAG + MAX_PROCID + 3]
    index = len(head) - len(head.lstrip(_TAG_CHARS))
    if index == 0:
        return None
    limit = len(head)
    if index < limit and head[index] == 0x5B:   # '[pid]'
        close = head.find(b']', index)
        if close < 0 or not head[index + 1:close].isascii() or b' ' in head[index + 1:close]:
            return None
        index = close + 1
        after = head[index:index + 1]
        if after == b':':
            return index, _skip_space(data, index + 1)
        if after == b' ':
            return index, index + 1
        return None
    if index > MAX_TAG:
        return None
    if head[index:index + 1] == b':' and head[index + 1:index + 2] in (b' ', b''):
        return index, _skip_space(data, index + 1)
    return None


def _skip_space(data, index):
    return index + 1 if data[index:index + 1] == b' ' else index


def _bsd_timestamp(data, now):
    """(Unix seconds, the rest) for 'Mmm dd hh:mm:ss ' (or an RFC 3339 time) at the start
    of ``data``; (None, data) when there is none."""
    if data[:3] in MONTHS:
        if data[15:16] in (b' ', b''):
            # The year changes its mind only for stamps about six months from now:
            # deciding once per hour of ``now`` is exact enough, and cheap (cached).
            stamp = _bsd_stamp(data[:15], int(now // 3600))
            if stamp is not None:
                return stamp, data[16:]
    elif data[:1] in (b'1', b'2'):
        space = data.find(b' ', 0, 40)
        if space > 19 and _rfc3339_seconds(data[:19]) is not False:
            stamp = parse_rfc3339(data[:space])
            if stamp is not False:
                return stamp, data[space + 1:]
    return None, data


@functools.lru_cache(maxsize=1024)
def _bsd_stamp(raw, now_hour):
    """Unix seconds for 'Mmm dd hh:mm:ss' (15 bytes) in the year closest to ``now_hour``
    (hours since the epoch), or None."""
    month = MONTHS.get(raw[:3])
    day_raw, clock = raw[4:6], raw[7:15]
    if not (month and len(raw) == 15 and raw[3:4] == b' ' and raw[6:7] == b' '
            and clock[2:3] == b':' and clock[5:6] == b':' and day_raw.strip().isdigit()
            and clock[:2].isdigit() and clock[3:5].isdigit() and clock[6:8].isdigit()):
        return None
    day, hour, minute, second = int(day_raw), int(clock[:2]), int(clock[3:5]), int(clock[6:8])
    if not (1 <= day <= 31 and hour <= 23 and minute <= 59 and second <= 60):
        return None
    return year_closest_to(now_hour * 3600 + 1800, month, day, hour, minute, second)


def year_closest_to(now, month, day, hour, minute, second):
    """Unix seconds of a year-less local time: the year that puts it closest to ``now``
    (a December message received on 1 January is last year's)."""
    year = time.localtime(now).tm_year
    best = None
    for candidate in (year - 1, year, year + 1):
        try:
            stamp = time.mktime((candidate, month, day, hour, minute, second, 0, 0, -1))
        except (OverflowError, ValueError):
            continue
        if best is None or abs(stamp - now) < abs(best - now):
            best = stamp
    return best


# -- the line ----------------------------------------------------------------------------------

# Python logging's level for each syslog severity: `loghogd logs --level` works on both.
SEVERITY_LEVELS = ('CRITICAL', 'CRITICAL', 'CRITICAL', 'ERROR', 'WARNING', 'INFO', 'INFO',
                   'DEBUG')


def json_fields(message, program):
    """The fields a JSON facility's line carries for ``message`` (jsonlines.format_json_line):
    the level (from the severity) and logger (the program), then ``program``,
    ``severity``, ``facility``, and when present ``syslog_time`` (the sender's time,
    utc_rfc3339), ``pid``, ``msgid`` and ``structured_data`` (as sent)."""
    pri = message.pri
    fields = {'levelname': SEVERITY_LEVELS[pri & 7], 'name': program, 'program': program,
              'severity': SEVERITY_NAMES[pri & 7], 'facility': FACILITY_NAMES[pri >> 3]}
    stamp = message.timestamp
    if stamp is not None:
        fields['syslog_time'] = utc_rfc3339(stamp)
    if message.procid is not None:
        fields['pid'] = message.procid
    if message.msgid is not None:
        fields['msgid'] = message.msgid
    if message.structured_data is not None:
        fields['structured_data'] = message.structured_data
    return fields


def utc_rfc3339(stamp):
    """Unix seconds as RFC 3339 in UTC with microseconds: '2026-12-05T03:14:15.926000Z'."""
    seconds, micros = divmod(round(stamp * 1e6), 1000000)
    return '%04d-%02d-%02dT%02d:%02d:%02d.%06dZ' % (time.gmtime(seconds)[:6] + (micros,))


def line_text(message, program, heads=None):
    """What follows '<receive time> - <host> - ' in the file for ``message``:

        PROGRAM[PID] FACILITY.SEVERITY[ MSGID]: [SD] MSG

    ``program`` is the routed name ('-' when the message had none).  The PID, MSGID and
    STRUCTURED-DATA parts appear only when the message has them.  ``heads``, a dict the
    caller keeps (and bounds), remembers the part before the SD and message (line_head),
    which repeats from one message to the next.  The body is written as every record's is
    (lines.format_body): continuation lines marked, controls escaped.
    """
    head = line_head(message, program, heads)
    body = message.message
    if message.structured_data is not None:
        body = '%s %s' % (message.structured_data, body) if body else message.structured_data
    return head + format_body(body)


def line_head(message, program, heads=None):
    """'PROGRAM[PID] FACILITY.SEVERITY[ MSGID]: ' of ``message``'s line (see line_text)."""
    key = (program, message.procid, message.pri, message.msgid)
    head = heads.get(key) if heads is not None else None
    if head is None:
        head = program if message.procid is None else '%s[%s]' % (program, message.procid)
        head = '%s %s' % (head, PRI_NAMES[message.pri])
        if message.msgid is not None:
            head = '%s %s' % (head, message.msgid)
        head = escape_controls(head) + ': '
        if heads is not None:
            heads[key] = head
    return head


# -- the shape of the next messages ------------------------------------------------------------
# Most senders send one shape of message after another: the same PRI and header, another
# time and text.  A shape says which bytes a message shares with the one it was taken from;
# the receiver (syslog_listeners.SyslogReceiver.ingest) checks them with a few comparisons
# instead of parsing, and the tests compare that with parse_message on every shape.

# How the TIMESTAMP between a shape's lead and header is checked.
STAMP_5424 = 1   # '-', or longer than 19 bytes of which the first 19 pass valid_stamp
STAMP_BSD = 2    # 15 bytes 'Mmm dd hh:mm:ss' that pass valid_bsd_stamp
NO_STAMP = 0     # none: the header follows the lead


def shape_of(data, message, now):
    """(lead, stamp kind, header) of ``data``, which parse_message read as ``message``
    (at ``now``), or None when the next messages cannot be checked so.

    A message that starts with ``lead``, then a TIMESTAMP as the stamp kind says, then
    ``header``, parses to the PRI and header fields ``message`` has, no STRUCTURED-DATA,
    and as MSG the rest: trailing CR, LF and NUL dropped (and after the header of RFC
    5424 a BOM), decoded as UTF-8 (replaced if it is not).
    """
    if message.structured_data is not None:
        return None
    if message.format == '5424':
        # '<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG': what follows MSGID
        # must be '- ' (SD absent, then the message).
        parts = data.split(b' ', 6)
        if len(parts) < 7 or parts[6][:2] != b'- ':
            return None
        return parts[0] + b' ', STAMP_5424, b' %s %s %s %s - ' % tuple(parts[2:6])
    if message.format != '3164' or message.app_name is None or data[:1] != b'<':
        return None
    end = data.find(b'>', 1, 5)
    if end < 2 or _PRI_VALUES.get(data[1:end]) != message.pri:
        return None
    rest = data[end + 1:].rstrip(TRAILING)
    if rest[:1] in (b'1', b'2'):
        return None   # a 5424 header that did not parse, or an RFC 3339 time
    if message.timestamp is not None:
        if rest[:3] not in MONTHS:
            return None
        kind, stamp_size = STAMP_BSD, 15
    elif rest[:3] in MONTHS:
        return None
    else:
        kind, stamp_size = NO_STAMP, 0
    body = _split_3164(rest, now)[4]
    header = rest[stamp_size:len(rest) - len(body)]
    # The header must end where the tag's decision ends: with the space after it.
    if header[-1:] != b' ':
        return None
    return data[:end + 1], kind, header


def valid_stamp(raw):
    """True when ``raw`` (19 bytes) is the 'YYYY-MM-DDTHH:MM:SS' that RFC 5424 TIMESTAMPs
    start with (cached: it changes once a second)."""
    return _rfc3339_seconds(raw) is not False


def valid_bsd_stamp(raw, now):
    """True when ``raw`` (15 bytes) is an RFC 3164 'Mmm dd hh:mm:ss' read at ``now``."""
    return _bsd_stamp(raw, int(now // 3600)) is not None
