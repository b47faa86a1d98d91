"""The ``loghogd`` command: options, --check-config, bind, run, and exit codes.

``main(argv)`` returns an exit code; the console script, ``python -m loghogd`` and the
tests all call it.
"""

import argparse
import errno
import logging
import logging.handlers
import os
import signal
import sys
import traceback

from . import __version__
from .errors import (EX_CONFIG, EX_OK, EX_OSERR, EX_SOFTWARE, EX_USAGE, ConfigError, LoghogError,
                     StartupError, describe_os_error)

# The daemon's own dependencies come with `pip install 'loghog[server]'` (setup.py), so that an
# application's `pip install loghog` is the client alone. Without them loghogd says so in one
# line, not with a traceback.
SERVER_EXTRA_MODULES = ('daemon', 'lockfile', 'dateutil', 'croniter')
EX_UNAVAILABLE = 69      # sysexits.h: a service (here: a dependency) is unavailable
try:
    from . import daemon, status_command
    from .binding import bind_all, make_tls_context, write_listen_file
    from .config import load_config
    from .facilities import load_facilities, own_log_clashes
    from . import seal_keys
    from .files import format_address
    from .loop import EventLoop
    from .compressor import Compressor
    from .protocol import choose_loads
    from .rotation import Rotator
    from .server import Server
    from .status import StatusPublisher
    from .stats import Counters
    from .writer import Writer
    from . import syslog_listeners, syslog_settings
    from . import receiver
    from .receivers import ReceiverPool, split_bound
except ModuleNotFoundError as exc:
    if (exc.name or '').partition('.')[0] not in SERVER_EXTRA_MODULES:
        raise
    MISSING_SERVER_MODULE = exc.name
else:
    MISSING_SERVER_MODULE = None

log = logging.getLogger('loghogd')

DEFAULT_CONFIG = '/etc/loghogd/loghogd.conf'
LOG_FORMAT = '%(asctime)s %(name)s[%(process)d] %(levelname)s: %(message)s'

# Command-line options that override a key of loghogd.conf: dest -> (section, key).
OVERRIDES = {
    'facilities_config': ('main', 'facilities_config'),
    'logdir': ('main', 'logdir'),
    'logfile': ('log', 'filename'),
    'pidfile': ('main', 'pidfile'),
    'user': ('main', 'user'),
    'workdir': ('main', 'workdir'),
    'rundir': ('main', 'rundir'),
}


class _Parser(argparse.ArgumentParser):
    """argparse with the sysexits status for a bad command line (64), not its own 2."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, '%s: error: %s\n' % (self.prog, message))


def build_parser():
    parser = _Parser(
        prog='loghogd', description='LogHog log daemon: receives log messages over TCP, UDP '
        'and TLS, writes one file per application facility, rotates and compresses them.',
        epilog='loghogd status [-c FILE] [--run-dir DIR] [--json | --brief] shows what the '
        'running daemon is doing (see loghogd status --help); loghogd logs APP[:MODULE] ... '
        'prints what it wrote (see loghogd logs --help); loghogd seal-init [-c FILE] [--force] '
        'creates the sealing key; loghogd verify --key KEYFILE PATH... checks sealed files.')
    parser.add_argument('-c', '--config', default=None, metavar='FILE',
                        help='loghogd.conf (default: %s)' % DEFAULT_CONFIG)
    parser.add_argument('-F', '--facilities-config', dest='facilities_config', metavar='FILE',
                        help='facilities.conf (default: [main] facilities_config)')
    parser.add_argument('--check-config', action='store_true',
                        help='check both files, print the errors, exit 0 or 78')
    parser.add_argument('-d', '--daemon', action='store_true', default=None,
                        help='detach into the background')
    parser.add_argument('-f', '--foreground', dest='daemon', action='store_false',
                        help='stay in the foreground even if the config says daemon = yes')
    parser.add_argument('-L', '--log-dir', dest='logdir', metavar='DIR', help='[main] logdir')
    parser.add_argument('-l', '--log', dest='logfile', metavar='FILE', help='[log] filename')
    parser.add_argument('-p', '--pid', dest='pidfile', metavar='FILE', help='[main] pidfile')
    parser.add_argument('--user', metavar='USER', help='[main] user')
    parser.add_argument('--work-dir', dest='workdir', metavar='DIR', help='[main] workdir')
    parser.add_argument('--run-dir', dest='rundir', metavar='DIR', help='[main] rundir')
    parser.add_argument('--version', action='version', version='loghogd %s' % __version__)
    return parser


def _overrides(args):
    """Command-line values as raw config strings, made absolute against the cwd."""
    result = {}
    for dest, key in OVERRIDES.items():
        value = getattr(args, dest)
        if value is not None:
            result[key] = os.path.abspath(value) if dest != 'user' else value
    if args.daemon is not None:
        result[('main', 'daemon')] = 'yes' if args.daemon else 'no'
    return result


def load(args):
    """Load and check both files; return (config, table) or raise ConfigError with all errors."""
    path = args.config
    if path is None:
        path = DEFAULT_CONFIG
    if not os.path.exists(path):
        raise ConfigError('%s: no such file (use --config FILE)' % path)
    try:
        config = load_config(path, _overrides(args))
    except ConfigError as exc:
        # Report facilities.conf's mistakes in the same run, when it can be found.
        facilities = getattr(exc, 'facilities_config', None)
        if facilities and os.path.isfile(facilities):
            try:
                load_facilities(facilities)
            except ConfigError as more:
                exc.errors += more.errors
        raise
    errors = []
    try:
        table = load_facilities(config.main.facilities_config)
        errors += own_log_clashes(table, config.main.logdir, config.log.filename)
    except ConfigError as exc:
        errors += exc.errors
        table = None
    if table is not None:
        errors += syslog_settings.check_default_app(config, table)
        errors += seal_keys.check(config, table)
    if any(kind == 'tls' for kind, _, _ in config.listen_addresses()) or config.syslog.listen_tls:
        try:
            make_tls_context(config.server.pemfile, config.server.cacert)
        except ConfigError as exc:
            errors += exc.errors
    try:
        choose_loads(config.server.json_decoder)
    except ImportError:
        name = config.server.json_decoder
        errors.append('%s: [server] json_decoder = %s, but %s is not installed '
                      '(pip install %s, or use auto)'
                      % (config.path, name, name,
                         "'loghog[fast]'" if name == 'msgspec' else name))
    if errors:
        raise ConfigError(errors)
    return config, table


def setup_logging(config, foreground):
    """The daemon's own log: [log] filename, and stderr while in the foreground."""
    root = logging.getLogger('loghogd')
    root.setLevel(config.log.level)
    root.propagate = False
    formatter = logging.Formatter(LOG_FORMAT)
    handlers = []
    if foreground:
        handlers.append(logging.StreamHandler(sys.stderr))
    if config.log.filename and config.log.filename != '-':
        os.makedirs(os.path.dirname(config.log.filename), mode=0o750, exist_ok=True)
        handlers.append(logging.handlers.WatchedFileHandler(config.log.filename))
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    return handlers


def main(argv=None):
    """Run loghogd; return the exit status (0 ok, 64 usage, 78 config, 71 OS, ...)."""
    if argv is None:
        argv = sys.argv[1:]
    if MISSING_SERVER_MODULE:
        print("loghogd: the daemon's dependencies are not installed (no module named %r): "
              "pip install 'loghog[server]'" % MISSING_SERVER_MODULE, file=sys.stderr)
        return EX_UNAVAILABLE
    if argv and argv[0] == 'status':
        return status_command.main(argv[1:])
    if argv and argv[0] == 'logs':
        from . import logs
        return logs.main(argv[1:])
    if argv and argv[0] == 'seal-init':
        return seal_keys.init_main(argv[1:], DEFAULT_CONFIG)
    if argv and argv[0] == 'verify':
        from . import verify
        return verify.main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config, table = load(args)
    except ConfigError as exc:
        for error in exc.errors:
            print('loghogd: %s' % error, file=sys.stderr)
        return EX_CONFIG
    if args.check_config:
        return check_as_user(config)
    os.umask(daemon.UMASK)
    try:
        return start(config, table)
    except LoghogError as exc:
        message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        print('loghogd: %s' % message, file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print('loghogd: %s' % describe_os_error(exc), file=sys.stderr)
        return EX_OSERR
    except Exception:
        # A bug: say so, with the traceback, in the daemon's log (if it is set up) and on
        # stderr, and exit 70 rather than Python's anonymous 1.
        log.critical('internal error, stopping', exc_info=True)
        if not any(isinstance(h, logging.StreamHandler) and getattr(h, 'stream', None) is sys.stderr
                   for h in log.handlers):
            traceback.print_exc()
        print('loghogd: internal error (a bug; the traceback is above and in the daemon\'s log)',
              file=sys.stderr)
        return EX_SOFTWARE


def check_as_user(config):
    """The end of --check-config: as root with a [main] user, read facilities.conf again
    as that user, as the daemon will on SIGHUP (a file root can read and the user cannot
    would pass root's check and then be refused by the reload).  Drops privileges for good:
    the process exits next."""
    name = config.main.user
    if os.geteuid() != 0 or not name:
        return EX_OK
    try:
        uid, gid = daemon.lookup_user(name)
        if uid == 0:
            return EX_OK
        daemon.drop_privileges(name, uid, gid)
        load_facilities(config.main.facilities_config)
    except ConfigError as exc:
        for error in exc.errors:
            print('loghogd: as user %s (the daemon reloads facilities.conf as it): %s'
                  % (name, error), file=sys.stderr)
        return EX_CONFIG
    except OSError as exc:
        print('loghogd: %s' % describe_os_error(exc), file=sys.stderr)
        return EX_CONFIG
    return EX_OK


def start(config, table):
    """Everything that can fail happens here, in the foreground; then detach (if asked) and run.

    Order: pidfile check, folders, bind, log files, ownership; detach; serve.
    """
    # A signal during the start-up work below (binding, detaching) is kept and handed to
    # the loop once its handlers are in (run): a SIGTERM then is a clean stop, not
    # Python's default death with the pidfile left behind.
    early_signals = []
    for signum in Server.SIGNALS:
        signal.signal(signum, lambda signum, frame: early_signals.append(signum))
    detaching = config.main.daemon
    pidfile = daemon.PidFile(config.main.pidfile)
    pidfile.check()
    uid = gid = None
    if config.main.user:
        uid, gid = daemon.lookup_user(config.main.user)
        if os.geteuid() != 0 and uid != os.geteuid():
            raise StartupError(errno.EPERM, '[main] user = %s: only root can switch to another user'
                               % config.main.user)
    for folder in (config.main.logdir, config.main.workdir, config.main.rundir):
        os.makedirs(folder, mode=0o750, exist_ok=True)
    bound = bind_all(config)
    try:
        handlers = setup_logging(config, foreground=not detaching)
        for warning in bound.warnings:
            log.warning('%s', warning)
        if uid is not None and os.geteuid() == 0:
            owned = [config.main.logdir, config.main.workdir, config.main.rundir]
            if config.log.filename not in ('', '-'):
                owned.append(config.log.filename)
            daemon.give_to_user(owned, uid, gid)
        if uid is not None:
            daemon.drop_privileges(config.main.user, uid, gid)
        if detaching:
            preserve = [sock for _, sock in bound.sockets]
            preserve += [h.stream for h in handlers if getattr(h, 'stream', None) is not None]
            daemon.detach(pidfile, config.main.workdir, preserve)
        else:
            pidfile.acquire()
    except BaseException:
        bound.close()
        raise
    try:
        return run(config, table, bound, handlers, early_signals)
    finally:
        pidfile.release()


def run(config, table, bound, handlers, early_signals=()):
    """Serve on the sockets already bound until stopped.  Returns 0 after a clean stop."""
    counters = Counters()
    loop = EventLoop()
    writer = Writer(config.main.logdir, counters, config.server.max_backlog,
                    config.server.max_open_files)
    loads = choose_loads(config.server.json_decoder)
    own_logs = [h for h in handlers if isinstance(h, logging.handlers.WatchedFileHandler)]
    pool = None
    if config.server.workers > 1:
        # Receiver processes take the TCP, UDP and TLS sockets (receivers.py); they are
        # forked now, before the main process starts any thread.
        receivers_bound, main_bound = split_bound(bound)
        server = Server(config, table, writer, counters, loop, main_bound, loads=loads)
        pool = ReceiverPool(config.server.workers, receivers_bound,
                            lambda channel, handoff, own_bound: _serve_receiver(
                                config, server, own_bound, own_logs, channel, handoff))
    else:
        server = Server(config, table, writer, counters, loop, bound, loads=loads)
    syslog_listeners.attach(server, bound, config)
    if pool is not None:
        pool.attach(server)
    # Signal handlers first: a SIGTERM during the start-up work below (rotation's recovery
    # can take a while) stops the daemon cleanly once the loop runs, instead of killing it.
    server.start()
    for signum in early_signals:
        loop.record_signal(signum)
    server.tasks.append(StatusPublisher(server, config.main.rundir, config.stats.interval,
                                        config.stats.prometheus_file))
    server.reload_hooks.append(lambda: [h.reopenIfNeeded() for h in own_logs])
    # Rotation and compression: the compressor's thread reports back through loop.wake().
    compressor = Compressor(config.compressor.format, config.compressor.level, loop.wake)
    sealer = start_sealing(config, table, writer, counters, server)
    rotator = Rotator(writer, table, config.main.logdir, config.main.workdir, compressor,
                      counters, sealer)
    for handler in own_logs:
        rotator.add_own_log(handler.baseFilename, config.log.when, config.log.backup_count,
                            handler, server.clock())
    compressor.start()
    rotator.start(server.clock())
    server.tasks += [rotator, compressor]
    server.reload_hooks.append(lambda: rotator.reload(server.table, server.clock()))
    listen_file = write_listen_file(config.main.rundir, bound)
    log.info('loghogd %s started: %d facilities; listening on %s', __version__, len(table),
             ', '.join('%s %s' % (kind, _address(a)) for kind, addresses in
                       bound.addresses().items() for a in addresses) or 'nothing')
    try:
        server.run()
    finally:
        loop.close()
        try:
            os.unlink(listen_file)
        except OSError:
            pass
    log.info('loghogd stopped')
    return EX_OK


def _serve_receiver(config, main_server, bound, own_logs, channel, handoff):
    """In a new receiver process: its own loop, counters and Server on ``bound`` (the UDP
    sockets) and the connections handed over ``handoff``, with the main process's current
    facilities; serve until stopped.  Returns the exit status."""
    server = Server(config, main_server.table, receiver.ForwardingWriter(channel), Counters(),
                    EventLoop(), bound, loads=main_server.loads)
    server.facilities_content = getattr(main_server, 'facilities_content', None)
    server.reloader.last_content = main_server.reloader.last_content
    server.reload_hooks.append(lambda: [h.reopenIfNeeded() for h in own_logs])
    return receiver.serve(server, channel, handoff, bound.tls_context)


def start_sealing(config, table, writer, counters, server):
    """The Sealer (a loop task) when the work folder has a key (it moves on every interval,
    files to seal or not); None otherwise.  A reload that seals a facility without a key is refused (server.py's
    table checks)."""
    from .sealer import Sealer
    try:
        seal_key = seal_keys.load(seal_keys.key_path(config.main.workdir))
    except ConfigError as exc:   # no facility is sealed (load() checked): nothing to seal
        log.error('%s; not sealing', exc)
        seal_key = None
    if seal_key is None:
        server.table_checks.append(lambda new: seal_keys.check_unsealed(config, new))
        return None
    server.table_checks.append(lambda new: seal_keys.check(config, new, seal_key))
    sealer = Sealer(writer, table, config.main.logdir, seal_key, counters)
    sealer.start(server.clock())
    server.tasks.append(sealer)
    server.reload_hooks.append(lambda: sealer.reload(server.table))
    return sealer


def _address(pair):
    return format_address(*pair)
