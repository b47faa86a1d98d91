"""loghogd.conf's [syslog] section, declared once (see config.py), and its checks."""

from . import converters as conv
from .inifile import IniFile, Setting

# The standard ports where an address names none (RFC 5426/6587: 514; RFC 5425: 6514).
DEFAULT_PORT = 514
DEFAULT_TLS_PORT = 6514


def address_list(default_port):
    """Converter for 'addr[:port], [v6addr]:port, ...' (IPv4 and IPv6 mixed)."""
    ipv4, ipv6 = conv.address_list(4, None), conv.address_list(6, None)

    def convert(value):
        result = []
        for item in (part.strip() for part in value.split(',')):
            if item:
                result += (ipv6 if item.startswith('[') else ipv4)(item)
        return [(host, default_port if port is None else port) for host, port in result]
    return convert


def file_mode(value):
    """An octal permission mode such as 0660."""
    try:
        mode = int(value.strip(), 8)
    except ValueError:
        raise ValueError('%r is not an octal mode such as 0660' % value) from None
    if not 0 <= mode <= 0o777:
        raise ValueError('%r: a mode is 0000 to 0777' % value)
    return mode


SETTINGS = [
    Setting('listen_udp', address_list(DEFAULT_PORT), '',
            'Syslog over UDP (RFC 5426): "127.0.0.1:5514, [::1]:5514" (empty: off).'),
    Setting('listen_tcp', address_list(DEFAULT_PORT), '',
            'Syslog over TCP (RFC 6587, octet-counting or LF/CRLF/NUL framing; empty: off).'),
    Setting('listen_tls', address_list(DEFAULT_TLS_PORT), '',
            "Syslog over TLS (RFC 5425) with [server] pemfile and cacert (empty: off)."),
    Setting('tls_client_certs', conv.choice('required', 'optional'), 'required',
            'required or optional: client certificates on listen_tls.'),
    Setting('unix_socket', conv.text, '',
            'A unix datagram socket for local programs, like /dev/log (empty: off).'),
    # Like a log file's group access: local users of the daemon's group may log.
    Setting('unix_socket_mode', file_mode, '0660', 'Permissions of unix_socket.'),
    Setting('default_app', conv.text, '',
            'The application whose root facility takes programs no facility claims '
            '(empty: they are refused and counted).'),
]
PATH_KEYS = {('syslog', 'unix_socket')}


def check_settings(ini, config):
    """listen_tls needs the server's pemfile and cacert (their content is checked at bind)."""
    if config.syslog.listen_tls:
        for key in ('pemfile', 'cacert'):
            if not getattr(config.server, key):
                ini.error('syslog', 'listen_tls', 'needs [server] %s' % key)


def check_default_app(config, table):
    """Errors (sentences) when [syslog] default_app names no application of ``table``:
    loghogd.conf's file and line, and the facilities file that lacks the section."""
    app = config.syslog.default_app
    if app and table.lookup(app, '') is None:
        where = '%s: [syslog] default_app' % config.path
        if config.path:
            ini = IniFile(config.path).read()   # the line (Config keeps values only)
            if not ini.errors:
                where = ini.where('syslog', 'default_app')
        return ['%s = %s: %s has no [%s] section'
                % (where, app, config.main.facilities_config, app)]
    return []
