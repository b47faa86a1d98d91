"""The daemon's exception family and its exit codes, decided in one place."""

import os

EX_OK = 0
EX_USAGE = 64          # bad command line
EX_SOFTWARE = 70       # a bug: an exception nobody expected
EX_OSERR = 71          # the OS refused something at start-up (bind, open, fork)
EX_TEMPFAIL = 75       # another instance holds the pidfile
EX_CONFIG = 78         # bad configuration (sysexits.h EX_CONFIG)


class LoghogError(Exception):
    """Base class of every error loghogd raises on purpose."""

    exit_code = EX_SOFTWARE


class ConfigError(LoghogError, ValueError):
    """One or more configuration mistakes.

    ``errors`` is the list of messages, each naming the file, the line where known,
    the section and the key, so that the whole list can be printed at once.
    """

    exit_code = EX_CONFIG

    def __init__(self, errors):
        if isinstance(errors, str):
            errors = [errors]
        self.errors = list(errors)
        super().__init__('\n'.join(self.errors))


class StartupError(LoghogError, OSError):
    """The OS refused something the daemon needs to start (a port, a folder, a file)."""

    exit_code = EX_OSERR


class AlreadyRunning(LoghogError, OSError):
    """Another loghogd holds the pidfile."""

    exit_code = EX_TEMPFAIL


def describe_os_error(exc):
    """Return 'what: why' for an OSError, without Python's '[Errno N]' noise."""
    reason = exc.strerror or (os.strerror(exc.errno) if exc.errno else str(exc))
    where = exc.filename if exc.filename is not None else ''
    return '%s: %s' % (where, reason) if where else reason
