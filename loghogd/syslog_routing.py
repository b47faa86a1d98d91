"""Which facility a syslog program's messages go to: the ``syslog_programs`` claims.  Pure.

A facility of facilities.conf may claim programs by name (RFC 5424 APP-NAME, RFC 3164
TAG) with shell-style globs: ``syslog_programs = nginx, postgres*``.  The most specific
claim wins: first the deepest facility (``[web:nginx]`` over ``[web]``, as for the
app:module lookup), then an exact name over a glob, then the glob with the most literal
characters.  Two claims that tie on all three for the same name cannot be ordered: the
configuration is refused (``check_claims``).  Unclaimed programs go to ``default_app``'s
root facility when it is set, else they are refused and counted.
"""

import fnmatch

# Bound on the program -> facility cache: senders choose program names freely.
_CACHE_LIMIT = 4096
_GLOB_CHARS = '*?['


def _literal_chars(pattern):
    return sum(1 for char in pattern if char not in _GLOB_CHARS)


class Claim:
    """One pattern of one facility, with how specific it is (a sortable key)."""

    __slots__ = ('pattern', 'facility', 'is_glob', 'rank')

    def __init__(self, pattern, facility):
        self.pattern = pattern
        self.facility = facility
        self.is_glob = any(char in pattern for char in _GLOB_CHARS)
        self.rank = (len(facility.path), not self.is_glob, _literal_chars(pattern))

    def matches(self, program):
        if self.is_glob:
            return fnmatch.fnmatchcase(program, self.pattern)
        return program == self.pattern


class SyslogRouter:
    """Maps a program name to its Facility (or None), from a FacilityTable's claims.

    ``default_app``: the application whose root facility takes unclaimed programs ('' for
    none).  ``lookup(program)`` takes the program name ('' when the message had none).
    """

    def __init__(self, table, default_app=''):
        self.exact = {}
        self.globs = []
        for facility in table:
            for pattern in getattr(facility, 'syslog_programs', ()) or ():
                claim = Claim(pattern, facility)
                if claim.is_glob:
                    self.globs.append(claim)
                else:
                    best = self.exact.get(pattern)
                    if best is None or claim.rank > best.rank:
                        self.exact[pattern] = claim
        self.globs.sort(key=lambda claim: claim.rank, reverse=True)
        self.default = table.lookup(default_app, '') if default_app else None
        self._cache = {}

    @property
    def claims(self):
        return len(self.exact) + len(self.globs)

    def lookup(self, program):
        """The Facility for ``program``; the default app's when nobody claims it; or None."""
        try:
            return self._cache[program]
        except KeyError:
            pass
        best = self.exact.get(program)
        for claim in self.globs:
            if best is not None and claim.rank <= best.rank:
                break      # globs are sorted: none further can beat it
            if claim.matches(program):
                best = claim
                break
        facility = best.facility if best is not None else self.default
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[program] = facility
        return facility


def check_claims(facilities):
    """Return (section, sentence) for claims that cannot be ordered: the same pattern
    claimed by two facilities of the same depth (globs that merely overlap are ordered by
    rank)."""
    seen = {}
    errors = []
    for facility in facilities:
        for pattern in getattr(facility, 'syslog_programs', ()) or ():
            key = (pattern, len(facility.path))
            other = seen.get(key)
            if other is not None and other is not facility:
                errors.append((facility.section, '%r is claimed by [%s] too, at the same '
                               'depth: say which facility it belongs to'
                               % (pattern, other.section)))
            seen.setdefault(key, facility)
    return errors


def program_list(value):
    """Converter for ``syslog_programs``: 'nginx, postgres*' -> ('nginx', 'postgres*')."""
    names = tuple(part.strip() for part in value.replace('\n', ',').split(','))
    names = tuple(name for name in names if name)
    for name in names:
        if any(char.isspace() for char in name) or not name.isprintable():
            raise ValueError('%r: a program name or glob has no spaces or control characters'
                             % name)
        if len(name) > 128:
            raise ValueError('%r...: longer than 128 characters' % name[:20])
    return names
