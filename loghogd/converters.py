"""Small pure converters for configuration values.

Each takes the raw string and returns a value, or raises ``ValueError`` with a sentence
a sysadmin can act on.  They know nothing about files or sections.
"""

import hashlib
import ipaddress
import logging
import os
import re

_TRUE = {'yes', 'true', 'on', '1'}
_FALSE = {'no', 'false', 'off', '0'}
_SIZE_UNITS = {'': 1, 'k': 1024, 'm': 1024 ** 2, 'g': 1024 ** 3, 't': 1024 ** 4}
_SIZE_RE = re.compile(r'^(\d+)\s*([kmgt]?)(i?b)?$', re.IGNORECASE)

# App and module names become file and folder names: keep them boring.
_SAFE_NAME_RE = re.compile(r'^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}$')

# The longest file name Linux file systems take (NAME_MAX, bytes), and what rotation and
# compression add to a log file's name: '.YYYY-MM-DD-HH-MM-SS-ffffff' (backups.py), then
# '.bz2' (the longest compressed suffix) and '.partial' (compressor.py, while it works).
NAME_MAX = 255
BACKUP_NAME_EXTRA = len('.2026-11-26-00-00-00-000000') + len('.bz2') + len('.partial')
# A host's part of a file name (file_per_host) is at most this long, as it always was.
HOST_PART_MAX = 100
# A host part that had to be shortened ends in '-' and this many hex digits of the
# SHA-256 of the whole name, so that two long names almost never share a file.
_HASH_DIGITS = 10
# Room a file_per_host facility leaves at least for the host part: a few characters of
# the name, and its hash.
HOST_PART_MIN = 6 + 1 + _HASH_DIGITS
_UNSAFE_HOST_RE = re.compile(r'[^A-Za-z0-9_.\-]')


def boolean(text):
    """'yes/no', 'true/false', 'on/off', '1/0' (strict: anything else is an error)."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError('%r is not a boolean: use yes or no' % text)


def integer_in(low, high=None):
    """Return a converter for a whole number in [low, high] (high None: no upper bound)."""
    def convert(text):
        try:
            value = int(text.strip(), 10)
        except ValueError:
            raise ValueError('%r is not a whole number' % text) from None
        if value < low or (high is not None and value > high):
            bound = 'at least %d' % low if high is None else 'from %d to %d' % (low, high)
            raise ValueError('%d is out of range: must be %s' % (value, bound))
        return value
    return convert


def workers(text):
    """``[server] workers``: a whole number from 1 to MAX_WORKERS, or ``auto``: one per
    core this process may run on (its CPU affinity: a container's or taskset's share, not
    the machine's), at most MAX_WORKERS; on one core, 1 (one process, no receivers)."""
    if text.strip().lower() == 'auto':
        return max(1, min(MAX_WORKERS, len(os.sched_getaffinity(0))))
    try:
        return integer_in(1, MAX_WORKERS)(text)
    except ValueError as exc:
        raise ValueError('%s (or auto: one per core)' % exc) from None


MAX_WORKERS = 64


def positive_float(text):
    """A number of seconds (or similar) greater than zero."""
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError('%r is not a number' % text) from None
    if not value > 0 or value != value or value == float('inf'):
        raise ValueError('%r must be a number greater than 0' % text)
    return value


def size_bytes(text):
    """A size in bytes, with an optional K/M/G/T suffix (powers of 1024): '10M', '65536'."""
    match = _SIZE_RE.match(text.strip())
    if not match:
        raise ValueError('%r is not a size: use bytes, or a number with K, M or G' % text)
    value = int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    if value <= 0:
        raise ValueError('%r must be greater than 0' % text)
    return value


def optional(convert):
    """Return a converter that maps an empty value to None and others through ``convert``."""
    def convert_optional(text):
        return convert(text) if text.strip() else None
    return convert_optional


def choice(*allowed):
    """Return a converter accepting one of ``allowed`` (case-insensitive)."""
    def convert(text):
        value = text.strip().lower()
        if value not in allowed:
            raise ValueError('%r is not one of: %s' % (text, ', '.join(allowed)))
        return value
    return convert


def log_level(text):
    """A logging level name: DEBUG, INFO, WARNING, ERROR or CRITICAL."""
    value = text.strip().upper()
    if value not in ('DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL'):
        raise ValueError('%r is not a log level: use DEBUG, INFO, WARNING or ERROR' % text)
    return getattr(logging, value)


def text(value):
    """Any string, surrounding white space removed."""
    return value.strip()


def safe_name(value):
    """A name that is safe as one file or folder name: letters, digits, '_', '.', '-'."""
    if not _SAFE_NAME_RE.match(value) or value in ('.', '..') or '..' in value:
        raise ValueError(
            '%r cannot be used as a folder or file name: use letters, digits, '
            '"_", "." and "-" (at most 100, not starting with "." or "-")' % value)
    return value


def _digest(name):
    return hashlib.sha256(name.encode('utf-8', 'surrogatepass')).hexdigest()[:_HASH_DIGITS]


def shorten(name, room):
    """``name`` if it has at most ``room`` characters, else its first characters, '-' and
    a hash of the whole of it: exactly ``room`` characters (``room >= HOST_PART_MIN``)."""
    if len(name) <= room:
        return name
    return '%s-%s' % (name[:room - _HASH_DIGITS - 1], _digest(name))


def safe_host(host, room=HOST_PART_MAX):
    """A peer-supplied host name as part of a file name: never a path, at most ``room``
    characters.

    Every character but letters, digits, '.', '_' and '-' becomes '_'; leading dots and
    dashes are removed; an empty result is 'unknown'.  A longer result keeps its first
    characters, then '-' and a hash of the whole host name (see ``shorten``).
    """
    head = host[:room + 64]   # a 64 KiB host name is not copied whole
    safe = _UNSAFE_HOST_RE.sub('_', head).lstrip('.-') or 'unknown'
    if len(safe) <= room and len(head) == len(host):
        return safe
    return '%s-%s' % (safe[:room - _HASH_DIGITS - 1], _digest(host))


def file_name_room(name):
    """How many more bytes a log file called ``name`` may take in its own name: its
    backups' suffixes (BACKUP_NAME_EXTRA) counted; negative when it cannot exist."""
    return NAME_MAX - BACKUP_NAME_EXTRA - len(name.encode('utf-8'))


def _split_host_port(item, family):
    """Split one address item into (host, port or None), checking the brackets."""
    if family == 6:
        if item.startswith('['):
            host, sep, rest = item[1:].partition(']')
            if not sep:
                raise ValueError('%r: missing "]"' % item)
            if rest and not rest.startswith(':'):
                raise ValueError('%r: expected ":port" after "]"' % item)
            return host, rest[1:] if rest else None
        return item, None
    host, sep, port = item.partition(':')
    return host, port if sep else None


def address_list(family, default_port):
    """Return a converter for 'addr[:port], ...' lists; IPv6 addresses in brackets.

    The result is a list of (host, port) with host a normalised IP literal.  An empty
    value means "listen nowhere".  ``default_port`` may be a callable, for a port that
    comes from another setting.
    """
    def convert(value):
        result = []
        for item in (part.strip() for part in value.split(',')):
            if not item:
                continue
            host, port_text = _split_host_port(item, family)
            try:
                address = ipaddress.ip_address(host)
            except ValueError:
                raise ValueError('%r is not an IPv%d address' % (item, family)) from None
            if address.version != family:
                raise ValueError('%r is not an IPv%d address' % (item, family))
            if port_text is None:
                port = None
            else:
                port = integer_in(0, 65535)(port_text)
            result.append((str(address), port))
        return result
    return convert
