"""The ``loghog`` command: logger(1) for LogHog, so shell scripts and cron jobs can log too.

    loghog -a my-app [-m cron] [-H host] [-p port] [--udp] [--tls --pem FILE --ca FILE]
           [--secret S] [--hostname H] [message ...]

The arguments, joined by spaces, are one message; without arguments each line of standard
input is a message (sent as it is read, so ``tail -f file | loghog -a app`` works; empty lines
are skipped).  Sending is synchronous: the command connects, writes, ends the connection
cleanly and waits briefly for the daemon to close its side.
"""

import argparse
import os
import socket
import sys
import time

from loghog import wire
from loghog.transport import CONNECT_TIMEOUT_S, make_ssl_context, open_connection

# Exit statuses, in the spirit of sysexits.h (the daemon uses 78 for a configuration error).
EXIT_OK = 0
EXIT_USAGE = 2           # bad options (argparse's own status)
EXIT_NO_INPUT = 66       # a certificate file cannot be read
EXIT_UNAVAILABLE = 69    # a TCP/TLS message could not be delivered

DEFAULT_PORT = 5566
DEFAULT_TLS_PORT = 5577

# How long to wait, after the last message, for the daemon to close the connection.
FINISH_TIMEOUT_S = 5.0


class DeliveryError(Exception):
    """A message could not be handed to the daemon; ``str()`` says why, for standard error."""


def main(argv=None):
    """Run the ``loghog`` command with ``argv`` (``sys.argv[1:]`` by default).

    Returns the exit status: 0 when every message was handed to the daemon (UDP: sent), 2 for
    bad options, 66 when a TLS file cannot be read, 69 when a TCP/TLS message could not be
    delivered.  Errors are written to standard error, one line each.
    """
    parser = build_parser()
    try:
        options = parser.parse_args(argv)
    except SystemExit as exit_request:  # --help, or a usage error already printed
        return exit_request.code
    problem = check_options(options)
    if problem:
        parser.print_usage(sys.stderr)
        print(f'loghog: error: {problem}', file=sys.stderr)
        return EXIT_USAGE
    try:
        ssl_context = make_ssl_context(options.pem, options.ca) if options.tls else None
    except OSError as error:
        print(f'loghog: cannot load the TLS files: {error}', file=sys.stderr)
        return EXIT_NO_INPUT
    messages = [' '.join(options.message)] if options.message else read_lines(sys.stdin)
    try:
        send_messages(options, ssl_context, messages)
    except DeliveryError as error:
        print(f'loghog: {error}', file=sys.stderr)
        return EXIT_UNAVAILABLE
    return EXIT_OK


def build_parser():
    """Return the ``argparse`` parser of the ``loghog`` command."""
    parser = argparse.ArgumentParser(
        prog='loghog', description='Send log messages to a LogHog daemon (loghogd).',
        epilog='Without MESSAGE, each line of standard input is sent as one message.')
    parser.add_argument('-a', '--app', required=True, help='application name (app_id)')
    parser.add_argument('-m', '--module', default='root',
                        help='module (facility) name, e.g. cron (default: root)')
    parser.add_argument('-H', '--host', default='localhost', help='daemon host (default: localhost)')
    parser.add_argument('-p', '--port', type=int,
                        help=f'daemon port (default: {DEFAULT_PORT}, {DEFAULT_TLS_PORT} with --tls)')
    parser.add_argument('--udp', action='store_true', help='send over UDP (delivery unconfirmed)')
    parser.add_argument('--tls', action='store_true', help='send over TLS (needs --pem and --ca)')
    parser.add_argument('--pem', help='client certificate and key (PEM) for --tls')
    parser.add_argument('--ca', help='LogHog CA certificate for --tls')
    parser.add_argument('--secret', default=os.environ.get('LOGHOG_SECRET'),
                        help='sign messages with this secret (default: $LOGHOG_SECRET; '
                             'prefer the variable, arguments are visible in ps)')
    parser.add_argument('--compress', action='store_true', help='zlib-compress each message')
    parser.add_argument('--hostname', default=socket.gethostname(),
                        help='host name written in the log (default: this host)')
    parser.add_argument('message', nargs='*', help='the message (words joined by spaces)')
    return parser


def check_options(options):
    """Return a sentence describing what is wrong with ``options``, or None."""
    if options.udp and options.tls:
        return '--udp and --tls cannot be combined (TLS needs a stream)'
    if options.tls and not (options.pem and options.ca):
        return '--tls needs --pem FILE and --ca FILE'
    if not options.tls and (options.pem or options.ca):
        return '--pem and --ca are only used with --tls'
    if options.port is not None and not 0 < options.port < 65536:
        return f'--port {options.port} is not a port number (1-65535)'
    return None


def read_lines(stream):
    """Yield each non-empty line of ``stream`` without its line ending, as it is read."""
    for line in stream:
        line = line.rstrip('\r\n')
        if line:
            yield line


def send_messages(options, ssl_context, messages):
    """Send each message of ``messages`` (an iterable of strings) to the daemon, in order.

    One connection serves all of them; if the daemon closed it between two messages (a
    restart while lines trickle in from standard input), it is opened again once.  Raises
    ``DeliveryError`` when a TCP/TLS message could not be delivered.
    """
    transport = 'udp' if options.udp else 'tls' if options.tls else 'tcp'
    port = options.port or (DEFAULT_TLS_PORT if options.tls else DEFAULT_PORT)
    where = f'{transport}://{options.host}:{port}'

    def connect():
        try:
            return open_connection(options.host, port, transport, ssl_context,
                                   CONNECT_TIMEOUT_S)
        except OSError as error:
            raise DeliveryError(f'cannot connect to {where}: {_describe(error)}') from error

    connection = connect()
    sent = 0
    try:
        for body in messages:
            if connection.is_closed_by_peer():
                connection.close()
                connection = connect()
            connection.send_frames([encode(options, body)])
            sent += 1
        connection.finish(FINISH_TIMEOUT_S)
    except OSError as error:
        raise DeliveryError(f'delivery to {where} failed after {sent} messages: '
                            f'{_describe(error)}') from error
    finally:
        connection.close()


def encode(options, body, now_ns=None):
    """Return the frame for one message ``body``, stamped ``now_ns`` (default: now)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    stamp, nsecs = divmod(now_ns, 10**9)
    return wire.encode_message(options.app, options.module, stamp, nsecs, options.hostname,
                               body, options.secret, options.compress)


def _describe(error):
    """A short human description of a socket error (``str(ConnectionLost)`` already is)."""
    cause = getattr(error, 'cause', error)
    return getattr(cause, 'strerror', None) or str(cause) or type(cause).__name__
