"""Identities bound to apps: which TLS client certificates may log to a facility (issue 19).

A facility's ``allowed_clients`` is a list of globs (``fnmatch`` syntax, case-sensitive)
matched against the subject commonName (CN) of the client certificate that the TLS
handshake verified against ``[server] cacert``.  Unset, any certificate of that CA (and any
plain TCP or UDP sender) may log to it, as before.  Set, a message that lands in the
facility is refused (``client_not_allowed``) unless it came over TLS with a certificate
whose CN matches one of the globs: a plain TCP or UDP sender has no identity and is
refused too.  Sub-facilities inherit the list from their app's root facility.

Pure: values in, values out.  A connection is anything with ``identity``, the pair
``(peer address, certificate subject or None)`` that ``StreamConnection`` keeps (the
subject as ``ssl.SSLSocket.getpeercert()`` gives it); a UDP peer has none.
"""

import fnmatch
import re

from .protocol import Rejection

CLIENT_NOT_ALLOWED = 'client_not_allowed'

# A glob is matched against certificate names, never against paths: keep it to what
# a CN holds, so that a typo (a comma inside, a quote) is a config error.
_GLOB_RE = re.compile(r'^[A-Za-z0-9_.*?\[\]!@\-]{1,255}$')


def client_globs(text):
    """Converter for ``allowed_clients``: 'web-*, api.example.org' -> ('web-*', 'api.example.org').

    Empty means unset (None).  Raises ValueError naming a glob that is not one.
    """
    globs = tuple(item.strip() for item in text.replace('\n', ',').split(',') if item.strip())
    for glob in globs:
        if not _GLOB_RE.match(glob):
            raise ValueError('%r is not a certificate name glob (letters, digits, . _ - @ '
                             'and the glob characters * ? [ ] !)' % glob)
    return globs or None


def common_name(subject):
    """The commonName of a certificate subject (``getpeercert()['subject']``), or None."""
    for rdn in subject or ():
        for key, value in rdn:
            if key == 'commonName':
                return value
    return None


class ClientRefusal(Rejection):
    """A ``client_not_allowed`` Rejection; ``client`` is the certificate's CN (or None)."""

    __slots__ = ('client',)

    def __init__(self, reason, detail, client):
        super().__init__(reason, detail)
        self.client = client


class ClientCheck:
    """Decides, per facility and certificate name, whether a client may log there.

    Results are cached per (allowed_clients tuple, CN): a long-lived connection asks once
    per run of messages to one facility, and the cache is bounded (certificate names
    come from the CA, but a CA may sign many).
    """

    CACHE_LIMIT = 4096

    def __init__(self):
        self._cache = {}

    def refusal(self, facility, source):
        """None when ``source`` may log to ``facility``, else a Rejection saying why
        (a ``ClientRefusal``)."""
        allowed = getattr(facility, 'allowed_clients', None)
        if allowed is None:
            return None
        identity = getattr(source, 'identity', None)
        name = common_name(identity[1]) if identity is not None else None
        if name is not None and self.allows(allowed, name):
            return None
        if name is None:
            detail = ('[%s] takes messages only over TLS from certificates named %s; this '
                      'peer has no client certificate' % (facility.section, ', '.join(allowed)))
        else:
            detail = ('certificate %r may not log to [%s] (allowed_clients = %s)'
                      % (name[:100], facility.section, ', '.join(allowed)))
        return ClientRefusal(CLIENT_NOT_ALLOWED, detail, name)

    def allows(self, allowed, name):
        """True when certificate name ``name`` matches one of the globs ``allowed``."""
        key = (allowed, name)
        try:
            return self._cache[key]
        except KeyError:
            pass
        result = any(fnmatch.fnmatchcase(name, glob) for glob in allowed)
        if len(self._cache) >= self.CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = result
        return result
