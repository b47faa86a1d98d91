"""The names of rotated files, and which of them retention keeps.  Pure: names in,
names out; rotation.py does the renaming and deleting.

A backup of ``<file>`` is ``<file>.<YYYY-MM-DD-HH-MM-SS-ffffff>``, the local wall-clock
time at which the period it holds began, plus ``.xz``, ``.gz`` or ``.bz2`` once
compressed.  The stamp is fixed-width, so names sort like the times they carry.
"""

import datetime
import re

from .compressor import SUFFIXES
from .schedule import wall_time

_STAMP_RE = r'\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d-\d{6}'
COMPRESSED_SUFFIXES = tuple(SUFFIXES.values())
_COMPRESSED_RE = '|'.join(re.escape(suffix) for suffix in COMPRESSED_SUFFIXES)
_BACKUP_RE = re.compile(r'(?P<base>.+)\.(?P<stamp>%s)(?P<suffix>%s)?' % (_STAMP_RE, _COMPRESSED_RE))
_ONE_MICROSECOND = datetime.timedelta(microseconds=1)


def format_stamp(wall):
    """'YYYY-MM-DD-HH-MM-SS-ffffff' for a naive wall-clock datetime."""
    return wall.strftime('%Y-%m-%d-%H-%M-%S-%f')


def parse_backup_name(name):
    """(base name, wall datetime, suffix) for a backup's file name; else None.

    ``suffix`` is '' for an uncompressed backup, else '.xz', '.gz' or '.bz2'.
    """
    match = _BACKUP_RE.fullmatch(name)
    if match is None:
        return None
    try:
        wall = datetime.datetime.strptime(match.group('stamp'), '%Y-%m-%d-%H-%M-%S-%f')
    except ValueError:
        return None
    return match.group('base'), wall, match.group('suffix') or ''


def backups_of(base, names):
    """The backups of the file named ``base`` among ``names``: {wall datetime: [names]}.

    A backup present both compressed and not (a compression under way) is one entry.
    """
    found = {}
    for name in names:
        parsed = parse_backup_name(name)
        if parsed is not None and parsed[0] == base:
            found.setdefault(parsed[1], []).append(name)
    return found


def backup_wall_time(period_start, newest):
    """The wall time naming the backup of a period that began at ``period_start`` (Unix
    time), given the wall time of the file's newest backup (or None): strictly later."""
    wall = wall_time(period_start)
    if newest is not None and wall <= newest:
        wall = newest + _ONE_MICROSECOND
    return wall


def to_prune(stamps, backup_count):
    """Of the backups' wall times ``stamps``, those to delete to keep the newest ``backup_count``."""
    ordered = sorted(stamps)
    return ordered[:max(0, len(ordered) - backup_count)]


def is_uncompressed_backup(bases, name):
    """Is ``name`` an uncompressed backup of one of ``bases`` (None: of any *.log file)?"""
    parsed = parse_backup_name(name)
    if parsed is None or parsed[2]:
        return False
    return parsed[0] in bases if bases is not None else parsed[0].endswith('.log')
