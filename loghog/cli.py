"""The ``loghog`` command: logger(1) for LogHog, so shell scripts and cron jobs can log too.

    loghog -a my-app [-m cron] [-H host] [-p port] [--udp] [--tls --pem FILE --ca FILE]
           [--secret S] [--hostname H] [--no-ack] [--timeout S] [message ...]

The arguments, joined by spaces, are one message; without arguments each line of standard
input is a message (sent as it is read, so ``tail -f file | loghog -a app`` works; empty lines
are skipped).  The command uses the handler's delivery engine (``loghog.sender``): over TCP
and TLS it waits, after the last message, until the daemon has acknowledged every message
(written it to disk, or rejected it), at most ``--timeout`` seconds, connecting and
reconnecting within that time.  A connection lost on the way (a daemon restart under
``tail -F file | loghog``) is opened again at once and the unacknowledged messages written
again (see ``loghog.acks``).
"""

import argparse
import io
import os
import signal
import socket
import sys
import threading
import time

from loghog import signing, wire
from loghog.acks import describe_rejections
from loghog.datagrams import Refusals
from loghog.sender import MAX_BUFFER_BYTES, MAX_BUFFER_FRAMES, Sender
from loghog.transport import make_ssl_context, open_connection

# Exit statuses, in the spirit of sysexits.h (the daemon uses 78 for a configuration error).
EXIT_OK = 0
EXIT_USAGE = 2           # bad options (argparse's own status)
EXIT_DATA = 65           # the daemon rejected a message (unknown app, bad signature, ...)
EXIT_NO_INPUT = 66       # a certificate file cannot be read
EXIT_UNAVAILABLE = 69    # a message could not be delivered (TCP/TLS: or was not acknowledged;
                         # UDP: the kernel refused to send its datagram)

DEFAULT_PORT = 5566
DEFAULT_TLS_PORT = 5577

# How long to keep trying to deliver after the last message, unless --timeout says
# otherwise: connecting (again), and waiting for acknowledgements.  A daemon answers in
# milliseconds and restarts in about a second; ten seconds ride out a restart and a busy
# disk without making a cron job hang for long on a daemon that is down.
ACK_TIMEOUT_S = 10.0

# Stopped by SIGTERM or SIGINT (systemd stopping a pipeline, Ctrl-C): how long to try to
# deliver what was read before saying what is lost and exiting 128 + the signal's number.
# Short, as a stop must be; long enough for a connected daemon to take and acknowledge
# the buffer.  A second signal ends the command at once.
STOP_TIMEOUT_S = 2.0


class Stopped(BaseException):
    """SIGTERM or SIGINT arrived (raised by the signal handler in the main thread)."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


class DeliveryError(Exception):
    """A message could not be delivered; ``str()`` says so, for standard error, unless
    ``is_reported`` (the delivery engine has written the line already)."""

    def __init__(self, text, is_reported=False):
        super().__init__(text)
        self.is_reported = is_reported


class RejectedError(DeliveryError):
    """The daemon acknowledged every message, but rejected some of them."""


def main(argv=None):
    """Run the ``loghog`` command with ``argv`` (``sys.argv[1:]`` by default).

    Returns the exit status: 0 when every message was delivered (TCP/TLS: acknowledged by the
    daemon, or with ``--no-ack`` handed to it; UDP: sent), 2 for bad options, 65 when the
    daemon rejected a message, 66 when a TLS file cannot be read, 69 when a TCP/TLS message
    could not be delivered or was not acknowledged in time, or the kernel refused to send a
    UDP datagram.  Errors are written to standard error, one line each.
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
    messages = [' '.join(options.message)] if options.message else read_lines(_stdin())
    previous = _handle_stop_signals()
    try:
        send_messages(options, ssl_context, messages)
    except Stopped as stop:
        return 128 + stop.signum
    except RejectedError as error:
        print(f'loghog: {error}', file=sys.stderr)
        return EXIT_DATA
    except DeliveryError as error:
        if not error.is_reported:
            print(f'loghog: {error}', file=sys.stderr)
        return EXIT_UNAVAILABLE
    finally:
        _restore_signals(previous)
    return EXIT_OK


def _stop(signum, frame):
    """SIGTERM, SIGINT: stop reading; a second signal ends the command at once."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    raise Stopped(signum)


def _handle_stop_signals():
    """Catch SIGTERM and SIGINT (main thread only); return the previous handlers."""
    if threading.current_thread() is threading.main_thread():
        return {signum: signal.signal(signum, _stop) for signum in (signal.SIGTERM,
                                                                     signal.SIGINT)}
    return {}


def _restore_signals(previous):
    for signum, handler in previous.items():
        signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def _stdin():
    """Standard input as text that never fails to decode: bytes that are not text in the
    locale's encoding become surrogates (then ``\\xNN`` escapes, see ``encode``)."""
    buffer = getattr(sys.stdin, 'buffer', None)
    if buffer is None:
        return sys.stdin
    return io.TextIOWrapper(buffer, encoding=sys.stdin.encoding or 'utf-8',
                            errors='surrogateescape')


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
    parser.add_argument('--signature', choices=('auto', 'v1', 'v2'), default='auto',
                        help='with --secret: auto signs v1, and v2 too when the daemon says it '
                             'checks them; v2 always signs v2 only (UDP, --no-ack); v1 never '
                             'v2 (default: auto)')
    parser.add_argument('--compress', action='store_true', help='zlib-compress each message')
    parser.add_argument('--hostname', default=socket.gethostname(),
                        help='host name written in the log (default: this host)')
    parser.add_argument('--no-ack', dest='acknowledged', action='store_false',
                        help='do not ask the daemon to acknowledge the messages (for a loghogd '
                             'older than acknowledgements); exit 0 then only means sent')
    parser.add_argument('--timeout', type=float, default=ACK_TIMEOUT_S, metavar='SECONDS',
                        help='after the last message, how long to keep trying to deliver '
                             f'(connect, wait for acknowledgements) (default: {ACK_TIMEOUT_S:g})')
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
    if not options.timeout > 0:
        return f'--timeout {options.timeout:g} must be a positive number of seconds'
    if options.signature == 'v2' and not options.secret:
        return '--signature v2 needs a secret (--secret or $LOGHOG_SECRET)'
    return None


def read_lines(stream):
    """Yield each non-empty line of ``stream`` without its line ending, as it is read."""
    for line in stream:
        line = line.rstrip('\r\n')
        if line:
            yield line


def send_messages(options, ssl_context, messages, report=None):
    """Send each message of ``messages`` (an iterable of strings) to the daemon, in order.

    The messages go through the handler's delivery engine (``loghog.sender.Sender``): a
    background thread connects, shakes hands, writes, takes acknowledgements, reconnects
    at once when a connection is lost (a daemon restart in a ``tail -F | loghog``
    pipeline) and writes the unacknowledged messages again.  Reading waits only when the
    buffer is full and the daemon takes messages.  After the last message the call waits
    up to ``--timeout`` seconds for every message to be acknowledged (over TCP and TLS,
    unless ``--no-ack``), connecting and reconnecting as often as it takes within that
    time.  Raises ``DeliveryError`` when a message was not delivered (its line on
    standard error is written already), ``RejectedError`` when all were acknowledged but
    the daemon rejected some.
    """
    transport = 'udp' if options.udp else 'tls' if options.tls else 'tcp'
    port = options.port or (DEFAULT_TLS_PORT if options.tls else DEFAULT_PORT)
    where = f'{transport}://{options.host}:{port}'

    refusals = Refusals(_warn, where)

    def connect(timeout_s, is_cancelled, prefer=None):
        return refusals.watch(open_connection(options.host, port, transport, ssl_context,
                                              timeout_s, is_cancelled, prefer))

    acknowledged = options.acknowledged and transport != 'udp'
    flags = wire.FLAG_ACK if acknowledged else 0
    sender = Sender(connect, MAX_BUFFER_FRAMES, report=report, acknowledged=acknowledged,
                    prepare=wire.compress_frame if options.compress else None,
                    max_bytes=MAX_BUFFER_BYTES, warn=_warn, where=where,
                    # The command says the rejections in its last line (exit status 65).
                    reports_rejections=False,
                    make_notice=lambda module, text: encode(options, text, flags=flags),
                    signer_v2=signing.V2Signer(options.secret) if options.secret else None,
                    signature=options.signature)
    count = 0
    try:
        for body in messages:
            sender.put(encode(options, body, flags=flags))
            count += 1
        delivered = sender.close(options.timeout, give_up_when_unreachable=False)
    except BaseException:
        # Stopped by a signal (or a bug): deliver what can be within a short bound, then
        # say what is lost (the sender's line on standard error).
        sender.close(STOP_TIMEOUT_S)
        raise
    if not delivered:
        raise DeliveryError(f'{count} messages read, not all delivered', is_reported=True)
    if sender.dropped:
        raise DeliveryError(f'{sender.dropped} of {count} messages dropped while {where} '
                            f'could not take them (announced in the log file)')
    if refusals.count:
        raise DeliveryError(f'{refusals.count} of {count} messages not sent: the kernel '
                            f'refused their datagrams to {where}')
    if sender.rejections:
        raise RejectedError(f'{where} rejected {sum(sender.rejections.values())} of '
                            f'{count} messages: {describe_rejections(sender.rejections)}')


def _warn(text):
    try:
        print(f'loghog: {text}', file=sys.stderr, flush=True)
    except (OSError, ValueError, AttributeError):  # standard error closed, or its reader gone
        pass


def encode(options, body, now_ns=None, flags=0):
    """Return the frame for one message ``body``, stamped ``now_ns`` (default: now); a body
    longer than the daemon's message size, or with ``--udp`` than fits one datagram, is cut,
    visibly (``wire.encode_within``)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    stamp, nsecs = divmod(now_ns, 10**9)
    body = utf8_text(body)

    v2_only = getattr(options, 'signature', 'auto') == 'v2'

    def encode_body(module, stamp, nsecs, text):
        return wire.encode_message(options.app, module, stamp, nsecs, options.hostname, text,
                                   None if v2_only else options.secret, options.compress, flags)

    # A v2 signature's envelope goes in front of the payload: leave room for it.
    room = signing.ENVELOPE_SIZE if options.secret and not getattr(
        options, 'signature', 'auto') == 'v1' else 0
    transport = 'udp' if getattr(options, 'udp', False) else 'tcp'
    return wire.encode_within(encode_body, options.module, stamp, nsecs, body,
                              wire.max_payload(transport, room))


def utf8_text(text):
    """``text``, with what has no UTF-8 form (lone surrogates: bytes of standard input or
    of an argument that were not text in the locale's encoding) written as ``\\xNN``
    escapes of the original bytes, so that the line can be sent, and signed."""
    try:
        text.encode('utf-8')
    except UnicodeEncodeError:
        try:
            raw = text.encode('utf-8', 'surrogateescape')
        except UnicodeEncodeError:  # a surrogate that stands for no byte
            return text.encode('utf-8', 'backslashreplace').decode('utf-8')
        return raw.decode('utf-8', 'backslashreplace')
    return text
