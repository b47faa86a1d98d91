"""facilities.conf: which applications may log, and where each module's lines go.

A section ``[app]`` is an application's root facility; ``[app:web.requests]`` is a
facility for the module path ``web.requests`` (``root.web.requests`` is the same).
A message lands in the most specific facility configured for its app and module.
"""

import logging
import os

from loghog.signing import V2Signer
from loghog.wire import Signer

from . import converters as conv
from .errors import ConfigError
from .identity import client_globs
from .ratelimit import parse_rate_limit
from .inifile import IniFile, Setting
from .schedule import parse_rotate
from .syslog_routing import check_claims, program_list

# file_per_host's default max_hosts (see the setting).
DEFAULT_MAX_HOSTS = 1000

SETTINGS = {s.name: s for s in [
    Setting('rotate', parse_rotate, None,
            'When to rotate: hourly, daily, weekly, monthly, yearly, a cron expression, or size.'),
    Setting('backup_count', conv.integer_in(0, 100000), None,
            'How many rotated files to keep.'),
    Setting('max_size', conv.optional(conv.size_bytes), '',
            'Rotate when the file reaches this size (bytes; K, M, G suffixes).'),
    Setting('flush_every', conv.integer_in(1, 1000000), '1',
            'At most this many messages of a file are ever not yet fsynced.'),
    Setting('file_per_host', conv.boolean, 'no',
            'One file per sending host: <host>-<module>.log.'),
    Setting('secret', conv.text, '',
            'Shared secret: messages must carry a valid HMAC-MD5 signature.'),
    # Host names are not signed: one peer can invent endless ones.  A thousand files
    # rotating at the same minute cost about 50 ms of loop time, in 5 ms slices
    # (benchmarks/bench_rotation.py); real fleets rarely have more hosts per app.
    Setting('max_hosts', conv.integer_in(1, 1000000), str(DEFAULT_MAX_HOSTS),
            'With file_per_host: host names that get a file of their own; lines from '
            'further ones go to the shared <module>.log, host name in the line.'),
    Setting('format', conv.choice('text', 'json'), 'text',
            'text: a line per record, as always; json: a JSON object per line, with the '
            "sender's fields (loghogd/jsonlines.py)."),
    Setting('sealed', conv.boolean, 'no',
            'Keep a hash chain and timed seals beside each file (<file>.seal), so that '
            'loghogd verify shows tampering (needs loghogd seal-init).'),
    Setting('syslog_programs', program_list, '',
            'Syslog programs (APP-NAME or TAG; globs) whose messages this facility takes.'),
    # Identities bound to apps (issue 19, identity.py).
    Setting('allowed_clients', client_globs, '',
            'TLS client certificate names (CN globs) that may log here; empty: any.'),
    Setting('rate_limit', parse_rate_limit, '',
            'Messages a second this app may send, e.g. "1000/s burst 5000"; beyond it TCP '
            'and TLS senders wait, UDP messages are refused.  Empty: no limit.'),
    Setting('require_signature', conv.optional(conv.choice('v2')), '',
            'v2: refuse v1-signed and unsigned messages (needs a secret); empty: either '
            'signature form.'),
]}

# Settings a sub-facility takes from its app's root facility unless it sets them itself.
INHERITED = ('max_size', 'flush_every', 'file_per_host', 'secret', 'max_hosts', 'format',
             'allowed_clients', 'require_signature', 'rate_limit', 'sealed')

log = logging.getLogger('loghogd.facilities')

# Bound on the (app, module) -> facility cache, so that a peer sending endless
# distinct module names cannot grow the daemon's memory.
_CACHE_LIMIT = 4096


def module_path(module, limit=None):
    """Normalise a module name to a path tuple: 'root.web.requests.' -> ('web', 'requests').

    With ``limit``, at most its first ``limit`` parts.
    """
    parts = [part for part in module.split('.') if part]
    if parts and parts[0] == 'root':
        parts = parts[1:]
    return tuple(parts if limit is None else parts[:limit])


class Facility:
    """One facility: where its lines go and how its file is rotated and synced."""

    __slots__ = ('app', 'path', 'rotate', 'backup_count', 'max_size', 'flush_every',
                 'file_per_host', 'max_hosts', 'secret', 'section', 'key', 'signer', 'where',
                 'format', 'syslog_programs', 'allowed_clients', 'signer_v2',
                 'require_signature', 'rate_limit', 'rate_key', 'sealed')

    def __init__(self, app, path, section, values, where=None):
        self.app = app
        self.path = path
        self.section = section
        self.where = where or '[%s]' % section   # 'file:line: [section]', for messages
        self.rotate = values['rotate']
        self.backup_count = values['backup_count']
        self.max_size = values.get('max_size') or None
        self.flush_every = values['flush_every']
        self.file_per_host = values['file_per_host']
        self.max_hosts = values.get('max_hosts', DEFAULT_MAX_HOSTS)
        self.secret = values['secret'] or None
        self.signer = Signer(self.secret) if self.secret else None
        self.signer_v2 = V2Signer(self.secret) if self.secret else None
        self.require_signature = values.get('require_signature')   # 'v2' or None
        self.rate_limit = values.get('rate_limit')   # a ratelimit.RateLimit, or None
        self.key = (app, self.name)   # (app, facility name): how counters name it
        # Whose bucket: the facility that declares the limit (its app's root when inherited).
        self.rate_key = values.get('rate_scope', self.key)
        self.format = values.get('format', 'text')   # 'text' or 'json'
        self.syslog_programs = values.get('syslog_programs', ())
        self.allowed_clients = values.get('allowed_clients')   # CN globs, or None: any
        self.sealed = values.get('sealed', False)

    @property
    def name(self):
        """The facility's file name stem: 'root' or 'web.requests'."""
        return '.'.join(self.path) if self.path else 'root'

    def file_name(self, host=None):
        """The log file name inside the app's folder (``host`` already made safe by
        ``converters.safe_host``).  A host part too long for the name to fit in NAME_MAX
        with its backups' suffixes is shortened with a hash (``converters.shorten``)."""
        if self.file_per_host and host is not None:
            stem = '%s.log' % self.name
            return '%s-%s' % (conv.shorten(host, conv.file_name_room(stem) - 1), stem)
        return '%s.log' % self.name

    def name_problem(self):
        """Why this facility's files cannot exist (a sentence), or None."""
        stem = '%s.log' % self.name
        room = conv.file_name_room(stem)
        if self.file_per_host:
            room -= len('-') + conv.HOST_PART_MIN
        if room >= 0:
            return None
        longest = stem + '.YYYY-MM-DD-HH-MM-SS-ffffff.bz2.partial'
        if self.file_per_host:
            longest = '<host>-' + longest
        return ('its file names would be %d bytes too long: a file name holds at most %d '
                '(%s); use a shorter module path' % (-room, conv.NAME_MAX, longest))

    def settings(self):
        """The values that decide rotation and syncing, to compare across reloads."""
        return (self.rotate, self.backup_count, self.max_size, self.flush_every,
                self.file_per_host, self.max_hosts, self.secret)

    def __repr__(self):
        return 'Facility(%s:%s)' % (self.app, self.name)


class FacilityTable:
    """All facilities, with a bounded cache for the (app, module) lookup."""

    def __init__(self, facilities, source=None):
        self.source = source
        self.by_app = {}
        for facility in facilities:
            self.by_app.setdefault(facility.app, {})[facility.path] = facility
        # The deepest facility path configured per app: no longer prefix can match.
        self.depth = {app: max(len(path) for path in paths)
                      for app, paths in self.by_app.items()}
        self._cache = {}
        # Counted once: summing 20,000 apps' dicts took 7 ms of the loop per status line.
        self._count = sum(len(f) for f in self.by_app.values())

    def __iter__(self):
        for app_facilities in self.by_app.values():
            yield from app_facilities.values()

    def __len__(self):
        return self._count

    def lookup(self, app, module):
        """Return the most specific Facility for ``app`` and ``module``, or None."""
        key = (app, module)
        try:
            return self._cache[key]
        except KeyError:
            pass
        facility = self._find(app, module)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = facility
        return facility

    def _find(self, app, module):
        """Try the prefixes of ``module``'s path, longest first, from the app's deepest
        configured depth down: ``a.b.c.d...`` with only ``[app:a]`` tries 2, not all."""
        app_facilities = self.by_app.get(app)
        if app_facilities is None:
            return None
        path = module_path(module, self.depth[app])
        for length in range(len(path), -1, -1):
            facility = app_facilities.get(path[:length])
            if facility is not None:
                return facility
        return None


class HostCap:
    """Which host names get a file of their own in a ``file_per_host`` facility: the
    first ``facility.max_hosts`` seen since the daemon started (per app and facility
    name, across reloads).  Lines of any further host go to the facility's shared file,
    ``<module>.log``, which holds the host name in each line: nothing is lost, and a
    peer inventing host names cannot make the daemon open, track and rotate endless
    files (issue 15).

    The count never shrinks while the daemon runs, by choice: forgetting the names of
    files forgotten when idle would let a peer cycling through names make max_hosts new
    files every FORGET_AFTER_S (writer.py), without end; files from before a restart
    are not counted (a restart admits max_hosts names again: the files on disk are the
    operator's to delete).

    ``route(facility, safe_host)`` is asked once per new (facility, host) by the
    Writer; ``counters`` counts ``hosts_over_max_hosts``: distinct host names sent to a
    shared file (exactly up to REFUSED_LIMIT of them, then every lookup).
    """

    REFUSED_LIMIT = 100000

    def __init__(self, counters=None):
        self.counters = counters
        self.admitted = {}     # facility key -> set of safe host names with a file
        self.refused = set()   # (facility key, safe host name), bounded
        self.full = set()      # facility keys whose cap was reached (logged once)

    def route(self, facility, safe_host):
        """``safe_host`` if it has, or may have, a file of its own; else None (the
        shared file)."""
        hosts = self.admitted.setdefault(facility.key, set())
        if safe_host in hosts:
            return safe_host
        if len(hosts) < getattr(facility, 'max_hosts', DEFAULT_MAX_HOSTS):
            hosts.add(safe_host)
            return safe_host
        self._refuse(facility, safe_host)
        return None

    def _refuse(self, facility, safe_host):
        if facility.key not in self.full:
            self.full.add(facility.key)
            log.warning('[%s]: max_hosts = %d host names have a file; lines of further host '
                        'names go to %s', facility.section, facility.max_hosts,
                        facility.file_name())
        key = (facility.key, safe_host)
        if key in self.refused:
            return
        if len(self.refused) < self.REFUSED_LIMIT:
            self.refused.add(key)
        if self.counters is not None:
            self.counters.count('hosts_over_max_hosts')


def _parse_section_name(ini, section):
    """'app' or 'app:module.path' -> (app, path); records an error and returns None if bad."""
    app, _, module = section.partition(':')
    try:
        conv.safe_name(app)
    except ValueError as exc:
        ini.error(section, None, 'application name: %s' % exc)
        return None
    path = module_path(module)
    if ':' in section and not module.strip('.'):
        ini.error(section, None, 'empty module path after ":"')
        return None
    for part in path:
        try:
            conv.safe_name(part)
        except ValueError as exc:
            ini.error(section, None, 'module name: %s' % exc)
            return None
    return app, path


def load_facilities(path, data=None):
    """Read facilities.conf (or parse ``data``, its bytes read before) and return a
    FacilityTable, or raise ConfigError with every mistake."""
    ini = IniFile(path).read(data)
    try:
        return _build_table(ini, path)
    finally:
        ini.close()   # frees the parser without the cyclic GC (inifile.py, issue 15)


def _build_table(ini, path):
    """load_facilities' work on the read ``ini``."""
    if ini.errors:
        raise ConfigError(ini.errors)  # syntax errors: nothing more can be trusted
    parsed = []
    for section in ini.sections():
        names = _parse_section_name(ini, section)
        values, given = ini.convert_section(section, SETTINGS)
        if names is not None:
            parsed.append((names, section, values, given))
    roots = {names[0]: values for names, _, values, _ in parsed if not names[1]}
    seen = {}
    facilities = []
    for (app, path), section, values, given in parsed:
        if (app, path) in seen:
            ini.error(section, None, 'the same facility as [%s]' % seen[(app, path)])
            continue
        seen[(app, path)] = section
        if path:
            root = roots.get(app)
            if root is None:
                ini.error(section, None, 'sub-facility without its application: add a [%s] section' % app)
                continue
            for name in INHERITED:
                if name not in given and name in root:
                    values[name] = root[name]
            if 'rate_limit' not in given:
                values['rate_scope'] = (app, 'root')   # the app's bucket, shared
        if any(name not in values for name in SETTINGS):
            continue  # a missing or bad value: already reported
        if values['rotate'].is_size_only and not values.get('max_size'):
            ini.error(section, 'rotate', 'rotate = size needs max_size (for example max_size = 10M)')
            continue
        if values.get('require_signature') and not values['secret']:
            ini.error(section, 'require_signature', 'require_signature = v2 needs a secret '
                      '(here or in the application\'s root facility)')
            continue
        facility = Facility(app, path, section, values, ini.where(section))
        problem = facility.name_problem()
        if problem is not None:
            ini.error(section, None, problem)
            continue
        facilities.append(facility)
    for section, error in check_claims(facilities):
        ini.error(section, 'syslog_programs', error)
    if ini.errors:
        raise ConfigError(ini.errors)
    return FacilityTable(facilities, source=ini.path)   # (path is a facility's by now)


def own_log_clashes(table, logdir, own_log):
    """Errors (sentences naming file and line) for applications whose folder is the
    daemon's own log ``own_log`` (a path, or '' / '-' for none), or whose folder holds
    it as a ``*.log`` file (every such file there is the app's to rotate and compress)."""
    if not own_log or own_log == '-':
        return []
    own_log = os.path.normpath(own_log)
    errors = []
    for app, facilities in sorted(table.by_app.items()):
        folder = os.path.normpath(os.path.join(logdir, app))
        root = facilities.get(()) or next(iter(facilities.values()))
        if own_log == folder:
            errors.append('%s: the folder of application %r would be the daemon\'s own log '
                          '%s ([log] filename): rename one of them' % (root.where, app, own_log))
        elif os.path.dirname(own_log) == folder and own_log.endswith('.log'):
            errors.append('%s: the daemon\'s own log %s ([log] filename) is in the folder of '
                          'application %r, where every *.log file is the application\'s: '
                          'move it' % (root.where, own_log, app))
    return errors
