"""loghogd.conf: the daemon's own settings, each declared once with its default and help.

Defaults are safe: loopback only, conservative limits.  Relative paths are relative to
the folder of the configuration file.  Command-line options override the file.
"""

import os

from . import converters as conv
from . import syslog_settings
from .errors import ConfigError
from .inifile import IniFile, Setting
from .schedule import parse_rotate

def _own_log_schedule(text):
    """A ``rotate`` schedule for the daemon's own log: any but ``size``, which would never
    rotate it (the own log has no max_size)."""
    schedule = parse_rotate(text)
    if schedule.is_size_only:
        raise ValueError("'size' needs a max_size, which the daemon's own log does not have: "
                         "use hourly, daily, weekly, monthly, yearly or a five-field cron "
                         "expression")
    return schedule


SECTIONS = {
    'main': [
        Setting('logdir', conv.text, '/var/log/loghogd', 'Where application logs are written.'),
        Setting('workdir', conv.text, '/var/lib/loghogd', 'State kept across restarts (rotation times).'),
        Setting('rundir', conv.text, '/run/loghogd', 'Pidfile, listen.json and status snapshots.'),
        Setting('facilities_config', conv.text, 'facilities.conf', 'The facilities file.'),
        Setting('pidfile', conv.text, '', 'Pidfile (default: <rundir>/loghogd.pid).'),
        Setting('user', conv.text, '', 'Drop privileges to this user after binding (empty: stay).'),
        Setting('daemon', conv.boolean, 'no', 'Detach into the background.'),
    ],
    'log': [
        Setting('filename', conv.text, '', "The daemon's own log (default: <logdir>/loghogd.log; "
                                            "'-' for none)."),
        Setting('level', conv.log_level, 'INFO', 'DEBUG, INFO, WARNING or ERROR.'),
        Setting('when', _own_log_schedule, 'daily', "When the daemon's own log rotates "
                "(any rotate value but size)."),
        Setting('backup_count', conv.integer_in(0, 100000), '14', "Rotated own logs to keep."),
    ],
    'compressor': [
        Setting('format', conv.choice('xz', 'gzip', 'bzip2'), 'xz', 'xz, gzip or bzip2.'),
        Setting('level', conv.integer_in(0, 9), '6', '0 (fastest) to 9 (smallest).'),
    ],
    'server': [
        Setting('listen_ipv4', conv.address_list(4, None), '127.0.0.1',
                'IPv4 addresses for TCP and UDP: "127.0.0.1, 10.0.0.5:25566".'),
        Setting('listen_ipv6', conv.address_list(6, None), '[::1]',
                'IPv6 addresses for TCP and UDP: "[::1], [::]:25566".'),
        Setting('default_port', conv.integer_in(0, 65535), '5566', 'Port where an address names none.'),
        Setting('listen_ipv4_ssl', conv.address_list(4, None), '', 'IPv4 addresses for TLS.'),
        Setting('listen_ipv6_ssl', conv.address_list(6, None), '', 'IPv6 addresses for TLS.'),
        Setting('default_port_ssl', conv.integer_in(0, 65535), '5577', 'TLS port where none is named.'),
        Setting('pemfile', conv.text, '', "The server's key and certificate, in one PEM file."),
        Setting('cacert', conv.text, '', 'The CA that client certificates must be signed by.'),
        # 64 KiB holds any sane log record, tracebacks included, yet keeps a single
        # connection's buffer small; the original allowed only 8 KB.
        Setting('max_message_size', conv.size_bytes, '64K',
                'Largest message, after decompression.'),
        # Below the usual 1024-descriptor soft limit once files and listeners are counted.
        Setting('max_connections', conv.integer_in(1, 1000000), '900',
                'Stream connections at once; beyond it, the longest idle one with nothing '
                'in flight makes room for a new one.'),
        # No cap by default: clients behind one NAT address, and a pre-forking server's
        # hundreds of workers, are one peer.  When the slots are full the address holding
        # the most connections makes room first (slots.py), so one address cannot push
        # out the others' connections whatever this says (issue 19).
        Setting('max_connections_per_peer', conv.optional(conv.integer_in(1, 1000000)), '',
                'Stream connections one IP address may hold; beyond it, its own longest '
                'idle one makes room (empty: no cap).'),
        # A real client finishes its TLS handshake in milliseconds; a peer that opens
        # handshakes and never finishes them must not hold every slot (issue 15).
        Setting('max_handshakes', conv.integer_in(1, 1000000), '128',
                'TLS handshakes in progress at once; beyond it, the oldest makes room.'),
        # A frame that takes longer than this to arrive is a slow or hostile peer.
        Setting('frame_timeout', conv.positive_float, '30',
                'Seconds a started frame may take to complete.'),
        Setting('handshake_timeout', conv.positive_float, '10', 'Seconds for a TLS handshake.'),
        # Idle connections are normal for a quiet application: don't cut them by default.
        Setting('idle_timeout', conv.optional(conv.positive_float), '',
                'Close a connection silent for this many seconds (empty: never).'),
        # Protocol v2 signatures carry the client's time: a captured frame is refused once
        # it is older than this (issue 19).  NTP keeps clocks within a second; five minutes
        # is the usual bound (Kerberos) and keeps the replay table small.
        Setting('max_clock_skew', conv.positive_float, '300',
                'Seconds a v2-signed message\'s time may differ from the daemon\'s clock.'),
        Setting('udp_receive_buffer', conv.size_bytes, '4M', 'SO_RCVBUF for UDP sockets.'),
        # msgspec (pip install 'loghog[fast]') or orjson, where installed, decode faster
        # (benchmarks/README.md); the standard library's decoder is always there, is the
        # reference every wire case is checked against, and is what 'stdlib' forces.
        Setting('json_decoder', conv.choice('auto', 'stdlib', 'orjson', 'msgspec'), 'auto',
                "JSON decoder: auto (msgspec, else orjson, if installed), stdlib, orjson "
                "or msgspec."),
        # Receiver processes (issue 18): 1 keeps everything in one process.
        Setting('workers', conv.workers, '1',
                'Receiver processes that read, decode and route messages (1: none, the '
                'main process does it all; auto: one per core).'),
        Setting('max_backlog', conv.size_bytes, '64M',
                'Bytes of lines kept in memory while a file cannot be written.'),
        # file_per_host can make a file per sending host: a bound on the descriptors.
        Setting('max_open_files', conv.integer_in(16, 1000000), '512',
                'Log files kept open at once; the least recently written are closed and '
                'opened again when a line comes.'),
    ],
    'stats': [
        # A snapshot costs the loop about 0.2 ms (2.5 ms with 200 files open; see
        # docs/status.md): every 5 s is invisible on the ingest path, fresh enough for a person.
        Setting('interval', conv.positive_float, '5',
                'Seconds between status snapshots (<rundir>/status.json, prometheus_file).'),
        Setting('prometheus_file', conv.text, '',
                'Also write the counters here in Prometheus text format, for node_exporter\'s '
                'textfile collector (a name ending in .prom; empty: off).'),
    ],
    'syslog': syslog_settings.SETTINGS,   # receiving syslog (issue 16)
    'seal': [
        # A minute: what an intruder can rewrite unnoticed is at most the last epoch (the
        # key of an ended epoch is gone), and a seal a minute costs each sealed file about
        # 150 bytes of its sidecar and two fsyncs.
        Setting('interval', conv.integer_in(1, 86400), '60',
                'Seconds per sealing epoch: every sealed file is sealed and the key moves on '
                'this often (fixed by loghogd seal-init; see docs/security.md).'),
    ],
}

PATH_KEYS = {('main', 'logdir'), ('main', 'workdir'), ('main', 'rundir'),
             ('main', 'facilities_config'), ('main', 'pidfile'), ('log', 'filename'),
             ('server', 'pemfile'), ('server', 'cacert'), ('stats', 'prometheus_file')}
PATH_KEYS |= syslog_settings.PATH_KEYS


class Config:
    """The daemon's settings: ``config.section.key`` (e.g. ``config.server.max_connections``).

    ``path`` is the absolute path of the file read (None for built-in defaults).
    """

    def __init__(self, path, values):
        self.path = path
        for section, settings in values.items():
            setattr(self, section, _Section(settings))

    def listen_addresses(self):
        """Return [(kind, host, port)] with kind 'plain' (TCP+UDP) or 'tls'."""
        server = self.server
        result = []
        for kind, keys, port in (('plain', ('listen_ipv4', 'listen_ipv6'), server.default_port),
                                 ('tls', ('listen_ipv4_ssl', 'listen_ipv6_ssl'), server.default_port_ssl)):
            for key in keys:
                for host, given_port in getattr(server, key):
                    result.append((kind, host, port if given_port is None else given_port))
        return result


class _Section:
    def __init__(self, values):
        self.__dict__.update(values)

    def __repr__(self):
        return repr(self.__dict__)


def _resolve(base, value):
    if not value or value == '-' or os.path.isabs(value):
        return value
    return os.path.normpath(os.path.join(base, value))


def load_config(path, overrides=None):
    """Read loghogd.conf (``path`` may be None for the defaults) and return a Config.

    ``overrides`` maps (section, key) to raw strings from the command line; they win over
    the file.  Raises ConfigError listing every mistake.
    """
    ini = IniFile(os.path.abspath(path) if path else '<defaults>')
    if path:
        ini.read()
        if ini.errors:
            raise ConfigError(ini.errors)  # syntax errors: nothing more can be trusted
        for section in ini.sections():
            if section not in SECTIONS:
                ini.error(section, None, 'unknown section (known: %s)' % ', '.join(SECTIONS))
    for (section, key), value in (overrides or {}).items():
        if not ini.parser.has_section(section):
            ini.parser.add_section(section)
        ini.parser.set(section, key, value)
    base = os.path.dirname(ini.path) if path else os.getcwd()
    values = {}
    for section, settings in SECTIONS.items():
        table = {s.name: s for s in settings}
        converted, _ = ini.convert_section(section, table)
        for key in list(converted):
            if (section, key) in PATH_KEYS:
                converted[key] = _resolve(base, converted[key])
        values[section] = converted
    if ini.errors:
        error = ConfigError(ini.errors)
        # Where facilities.conf is, if that much could be read: its mistakes are worth
        # reporting in the same run.
        error.facilities_config = values['main'].get('facilities_config')
        raise error
    main = values['main']
    main['pidfile'] = main['pidfile'] or os.path.join(main['rundir'], 'loghogd.pid')
    if not values['log']['filename']:
        values['log']['filename'] = os.path.join(main['logdir'], 'loghogd.log')
    own_log = values['log']['filename']
    if own_log != '-' and conv.file_name_room(os.path.basename(own_log)) < 0:
        ini.error('log', 'filename', '%s: the name of the file is too long for its backups '
                  '(at most %d bytes with .YYYY-MM-DD-HH-MM-SS-ffffff.bz2.partial)'
                  % (own_log, conv.NAME_MAX))
    config = Config(ini.path if path else None, values)
    _check_tls(ini, config)
    syslog_settings.check_settings(ini, config)
    if ini.errors:
        error = ConfigError(ini.errors)
        error.facilities_config = main['facilities_config']
        raise error
    return config


def _check_tls(ini, config):
    """TLS addresses need a readable pemfile and cacert (their content is checked at bind)."""
    if not any(kind == 'tls' for kind, _, _ in config.listen_addresses()):
        return
    for key in ('pemfile', 'cacert'):
        value = getattr(config.server, key)
        if not value:
            ini.error('server', key, 'required when listen_ipv4_ssl or listen_ipv6_ssl is set')
        elif not os.path.exists(value):
            ini.error('server', key, '%s: no such file' % value)
        elif not os.access(value, os.R_OK):
            ini.error('server', key, '%s cannot be read (permission denied)' % value)
