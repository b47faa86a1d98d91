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
import time

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
_DIGITS = frozenset(b'0123456789')
_TAG_BYTES = frozenset(b'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-./@')
_TRAILING = b'\r\n\x00'
# RFC 5424 PRINTUSASCII (33..126): deleting these from a header field must leave nothing.
_PRINTUSASCII = bytes(range(33, 127))


class SyslogMessage:
    """One parsed message.  Text fields are str or None (absent or ``-``).

    ``pri`` is facility * 8 + severity; ``timestamp`` the sender's time in Unix seconds
    (None without one); ``structured_data`` the SD elements as sent (escapes kept, as
    they appear in a line) or None; ``replaced`` is true when bytes that were not UTF-8
    were replaced; ``format`` is '5424', '3164' or 'bare' (no header after the PRI).
    """

    __slots__ = ('pri', 'timestamp', 'hostname', 'app_name', 'procid', 'msgid',
                 'structured_data', 'message', 'replaced', 'format')

    def __init__(self, pri, timestamp, hostname, app_name, procid, msgid, structured_data,
                 message, replaced, format):
        self.pri = pri
        self.timestamp = timestamp
        self.hostname = hostname
        self.app_name = app_name
        self.procid = procid
        self.msgid = msgid
        self.structured_data = structured_data
        self.message = message
        self.replaced = replaced
        self.format = format

    @property
    def facility(self):
        return self.pri >> 3

    @property
    def severity(self):
        return self.pri & 7

    def fields(self):
        """A dict of every field (for tests and the fixture file)."""
        return {name: getattr(self, name) for name in self.__slots__}

    def __repr__(self):
        return 'SyslogMessage(%r)' % self.fields()


def parse_message(data, now):
    """Parse one message (``data``: bytes, its frame's delimiter already removed).

    ``now`` (Unix seconds) picks the year of RFC 3164 timestamps, which have none.
    Returns a SyslogMessage, or a Rejection (reason EMPTY) for a message with nothing in
    it at all.  Never raises for any input.
    """
    data = bytes(data).rstrip(_TRAILING)
    if not data:
        return Rejection(EMPTY, 'empty syslog message')
    pri, rest = _split_pri(data)
    if pri is None:
        pri, rest = DEFAULT_PRI, data
    elif rest[:2] == b'1 ':
        message = _parse_5424(pri, rest[2:])
        if message is not None:
            return message
    return _parse_3164(pri, rest, now)


def _split_pri(data):
    """(pri, rest) for '<PRI>rest', or (None, None) when there is no valid PRI."""
    if data[:1] != b'<':
        return None, None
    end = data.find(b'>', 1, 5)
    if end < 2:
        return None, None
    digits = data[1:end]
    if not _DIGITS.issuperset(digits):
        return None, None
    pri = int(digits)
    if pri > 191:
        return None, None
    return pri, data[end + 1:]


def _decode(raw):
    """(text, replaced): UTF-8, with what is not replaced by U+FFFD."""
    try:
        return raw.decode('utf-8'), False
    except UnicodeDecodeError:
        return raw.decode('utf-8', 'replace'), True


def _field(raw, limit):
    """A header field: None for '-', else ASCII text; False if it cannot be one."""
    if raw == b'-':
        return None
    if not raw or len(raw) > limit or raw.translate(None, _PRINTUSASCII):
        return False
    return raw.decode('ascii')


# -- RFC 5424 ----------------------------------------------------------------------------------

def _parse_5424(pri, rest):
    """The fields after '<PRI>1 ', or None when the header is not RFC 5424's."""
    parts = rest.split(b' ', 5)
    if len(parts) < 6:
        if len(parts) == 5:
            parts.append(b'')   # nothing after MSGID: a frame cut right after the header
        else:
            return None
    stamp_raw, host_raw, app_raw, procid_raw, msgid_raw, tail = parts
    timestamp = None if stamp_raw == b'-' else parse_rfc3339(stamp_raw)
    if timestamp is False:
        return None
    hostname = _field(host_raw, MAX_HOSTNAME)
    app_name = _field(app_raw, MAX_APP_NAME)
    procid = _field(procid_raw, MAX_PROCID)
    msgid = _field(msgid_raw, MAX_MSGID)
    if hostname is False or app_name is False or procid is False or msgid is False:
        return None
    if tail[:1] == b'-':
        structured_data = None
        body = tail[1:]
    elif tail[:1] == b'[':
        end = _structured_data_end(tail)
        if end is None:
            return None
        structured_data, body = tail[:end], tail[end:]
    else:
        return None
    if body:
        if body[:1] != b' ':
            return None
        body = body[1:]
    if body[:3] == BOM:
        body = body[3:]
    if structured_data is not None:
        sd_text, sd_replaced = _decode(structured_data)
    else:
        sd_text, sd_replaced = None, False
    message, replaced = _decode(body)
    return SyslogMessage(pri, timestamp, hostname, app_name, procid, msgid, sd_text, message,
                         replaced or sd_replaced, '5424')


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
    if len(raw) < 20 or raw[4:5] != b'-' or raw[7:8] != b'-' or raw[10:11] not in (b'T', b't') \
            or raw[13:14] != b':' or raw[16:17] != b':':
        return False
    try:
        year, month, day = int(raw[0:4]), int(raw[5:7]), int(raw[8:10])
        hour, minute, second = int(raw[11:13]), int(raw[14:16]), int(raw[17:19])
        rest = raw[19:]
        fraction = 0.0
        if rest[:1] == b'.':
            end = 1
            while end < len(rest) and rest[end] in _DIGITS:
                end += 1
            if end == 1 or end > 7:   # RFC 5424: 1 to 6 digits
                return False
            fraction = int(rest[1:end]) / 10 ** (end - 1)
            rest = rest[end:]
        if rest in (b'Z', b'z'):
            offset = 0
        elif len(rest) == 6 and rest[:1] in (b'+', b'-') and rest[3:4] == b':':
            offset = int(rest[1:3]) * 3600 + int(rest[4:6]) * 60
            if rest[:1] == b'-':
                offset = -offset
        else:
            return False
        if not (1 <= month <= 12 and 1 <= day <= 31 and hour <= 23 and minute <= 59
                and second <= 60):
            return False
    except ValueError:
        return False
    return calendar.timegm((year, month, day, hour, minute, second)) - offset + fraction


# -- RFC 3164 ----------------------------------------------------------------------------------

def _parse_3164(pri, rest, now):
    """What follows the PRI in the BSD format (or the whole message when there was none)."""
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
    message, replaced = _decode(after)
    return SyslogMessage(pri, timestamp, hostname, app_name, procid, None, None, message,
                         replaced, '3164' if timestamp is not None or app_name else 'bare')


def _tag_end(data):
    """For 'tag[pid]: msg' or 'tag: msg' (or 'tag[pid] msg'): (end of tag, start of msg);
    None when ``data`` does not start with a tag."""
    limit = min(len(data), MAX_TAG + MAX_PROCID + 3)
    index = 0
    while index < limit and data[index] in _TAG_BYTES:
        index += 1
    if index == 0:
        return None
    if index < limit and data[index] == 0x5B:   # '[pid]'
        close = data.find(b']', index, limit)
        if close < 0 or not data[index + 1:close].isascii() or b' ' in data[index + 1:close]:
            return None
        index = close + 1
        if data[index:index + 1] == b':':
            return index, _skip_space(data, index + 1)
        if data[index:index + 1] == b' ':
            return index, index + 1
        return None
    if index > MAX_TAG:
        return None
    if data[index:index + 1] == b':' and data[index + 1:index + 2] in (b' ', b''):
        return index, _skip_space(data, index + 1)
    return None


def _skip_space(data, index):
    return index + 1 if data[index:index + 1] == b' ' else index


def _bsd_timestamp(data, now):
    """(Unix seconds, the rest) for 'Mmm dd hh:mm:ss ' (or an RFC 3339 time) at the start
    of ``data``; (None, data) when there is none."""
    month = MONTHS.get(data[:3])
    if month is not None and len(data) >= 15 and data[3:4] == b' ' and data[15:16] in (b' ', b''):
        day_raw = data[4:6]
        clock = data[7:15]
        if (data[6:7] == b' ' and clock[2:3] == b':' and clock[5:6] == b':'
                and day_raw.strip().isdigit() and clock[:2].isdigit() and clock[3:5].isdigit()
                and clock[6:8].isdigit()):
            day, hour, minute, second = (int(day_raw), int(clock[:2]), int(clock[3:5]),
                                         int(clock[6:8]))
            if 1 <= day <= 31 and hour <= 23 and minute <= 59 and second <= 60:
                return year_closest_to(now, month, day, hour, minute, second), data[16:]
    elif data[:1] in b'12' and data[:1]:
        space = data.find(b' ', 0, 40)
        stamp = parse_rfc3339(data[:space] if space > 0 else data[:40])
        if stamp is not False and space > 0:
            return stamp, data[space + 1:]
    return None, data


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

def line_text(message, program):
    """What follows '<receive time> - <host> - ' in the file for ``message``:

        PROGRAM[PID] FACILITY.SEVERITY[ MSGID]: [SD] MSG

    ``program`` is the routed name ('-' when the message had none).  The PID, MSGID and
    STRUCTURED-DATA parts appear only when the message has them.  Kept in one function so
    that the escaping of issue 15 (loghogd/lines.py) can take over the body.
    """
    head = program if message.procid is None else '%s[%s]' % (program, message.procid)
    head = '%s %s' % (head, PRI_NAMES[message.pri])
    if message.msgid is not None:
        head = '%s %s' % (head, message.msgid)
    body = message.message
    if message.structured_data is not None:
        body = '%s %s' % (message.structured_data, body) if body else message.structured_data
    return '%s: %s' % (head, escape_body(body))


def escape_body(text):
    """A message body as one record: inner line breaks become a newline and a tab (the
    continuation lines of a multi-line message are marked by their leading tab), other
    control characters visible escapes (NUL would make grep call the file binary)."""
    if text.isprintable():
        return text
    out = []
    for char in text.rstrip('\r\n').replace('\r\n', '\n'):
        if char.isprintable() or char == '\t':
            out.append(char)
        elif char == '\n':
            out.append('\n\t')
        else:
            out.append('\\x%02x' % ord(char) if ord(char) < 0x100 else '\\u%04x' % ord(char))
    return ''.join(out)
