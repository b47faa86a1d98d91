"""The ``loghog`` command: logger(1) for LogHog, so shell scripts and cron jobs can log too.

    loghog -a my-app [-m cron] [-H host] [-p port] [--udp] [--tls --pem FILE --ca FILE]
           [--secret S] [--hostname H] [--no-ack] [--timeout S] [message ...]

The arguments, joined by spaces, are one message; without arguments each line of standard
input is a message (sent as it is read, so ``tail -f file | loghog -a app`` works; empty lines
are skipped).  Sending is synchronous: the command connects, writes, and over TCP and TLS
waits until the daemon has acknowledged every message (written it to disk, or rejected it),
then ends the connection cleanly.  A connection lost on the way is opened again and the
unacknowledged messages written again (see ``loghog.acks``).
"""

import argparse
import collections
import os
import socket
import sys
import time

from loghog import wire
from loghog.acks import (ConnectionAcks, Unacknowledged, describe_rejections, new_session_id,
                         rejections)
from loghog.transport import CONNECT_TIMEOUT_S, ConnectionLost, make_ssl_context, open_connection

# Exit statuses, in the spirit of sysexits.h (the daemon uses 78 for a configuration error).
EXIT_OK = 0
EXIT_USAGE = 2           # bad options (argparse's own status)
EXIT_DATA = 65           # the daemon rejected a message (unknown app, bad signature, ...)
EXIT_NO_INPUT = 66       # a certificate file cannot be read
EXIT_UNAVAILABLE = 69    # a TCP/TLS message could not be delivered (or was not acknowledged)

DEFAULT_PORT = 5566
DEFAULT_TLS_PORT = 5577

# How long to wait, after the last message, for the daemon to close the connection.
FINISH_TIMEOUT_S = 5.0
# How long to wait for acknowledgements, unless --timeout says otherwise.  A daemon answers
# in milliseconds; seconds mean a very busy disk, or a daemon that does not speak acks.
ACK_TIMEOUT_S = 10.0
# Messages kept for acknowledgement before the command waits for acks to catch up (a
# long standard input, such as ``tail -f``, must not grow the command's memory).
MAX_UNACKED = 1000
# How often a lost connection is opened again before the command gives up.
MAX_RECONNECTS = 3


class DeliveryError(Exception):
    """A message could not be handed to the daemon; ``str()`` says why, for standard error."""


class RejectedError(DeliveryError):
    """The daemon acknowledged every message, but rejected some of them."""


def main(argv=None):
    """Run the ``loghog`` command with ``argv`` (``sys.argv[1:]`` by default).

    Returns the exit status: 0 when every message was delivered (TCP/TLS: acknowledged by the
    daemon, or with ``--no-ack`` handed to it; UDP: sent), 2 for bad options, 65 when the
    daemon rejected a message, 66 when a TLS file cannot be read, 69 when a TCP/TLS message
    could not be delivered or was not acknowledged in time.  Errors are written to standard
    error, one line each.
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
        return EXIT_DATA if isinstance(error, RejectedError) else EXIT_UNAVAILABLE
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
    parser.add_argument('--no-ack', dest='acknowledged', action='store_false',
                        help='do not ask the daemon to acknowledge the messages (for a loghogd '
                             'older than acknowledgements); exit 0 then only means sent')
    parser.add_argument('--timeout', type=float, default=ACK_TIMEOUT_S, metavar='SECONDS',
                        help='how long to wait for acknowledgements '
                             f'(default: {ACK_TIMEOUT_S:g})')
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
    return None


def read_lines(stream):
    """Yield each non-empty line of ``stream`` without its line ending, as it is read."""
    for line in stream:
        line = line.rstrip('\r\n')
        if line:
            yield line


def send_messages(options, ssl_context, messages):
    """Send each message of ``messages`` (an iterable of strings) to the daemon, in order.

    Over TCP and TLS the messages ask for acknowledgements (unless ``--no-ack``) and the
    call returns once all are acknowledged.  Raises ``DeliveryError`` when a TCP/TLS message
    could not be delivered or acknowledged, ``RejectedError`` when all were acknowledged but
    the daemon rejected some.
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

    acknowledged = options.acknowledged and transport != 'udp'
    flags = wire.FLAG_ACK if acknowledged else 0
    delivery = Delivery(connect, where, acknowledged, options.timeout)
    try:
        for body in messages:
            delivery.send(encode(options, body, flags=flags))
        delivery.finish()
    finally:
        delivery.close()


class Delivery:
    """The command's connection to the daemon, opened at once by ``connect()`` (which raises
    ``DeliveryError``).

    ``send(frame)`` writes one frame.  With ``acknowledged``, each connection starts with a
    session frame, written frames are kept until acknowledged, a connection found closed or
    failing is opened again (up to ``MAX_RECONNECTS`` times) and the kept frames written
    again; ``finish()`` waits up to ``timeout_s`` for the last acks.  Without, a connection
    the daemon closed between two messages is opened again once, and a failed write is an
    error.  ``where`` names the daemon in error messages.
    """

    def __init__(self, connect, where, acknowledged, timeout_s):
        self.connect = connect
        self.where = where
        self.acknowledged = acknowledged
        self.timeout_s = timeout_s
        self.session_id = new_session_id()
        self.unacked = Unacknowledged()
        self.acks = None
        self.has_seen_ack = False
        self.sent = 0
        self.rejected = collections.Counter()
        self.reconnects = 0
        self.connection = None
        self._open()

    def send(self, frame):
        """Write ``frame``; with acks, wait first if too many await their ack."""
        self._take_acks()
        if self.connection.is_closed_by_peer():
            self._take_acks()
            self._reconnect(self.connection.closed_because)
        if not self.acknowledged:
            self._write([frame])
            self.sent += 1
            return
        if len(self.unacked) >= MAX_UNACKED:
            self._wait_for_acks(lambda: len(self.unacked) < MAX_UNACKED // 2)
        self.unacked.add([frame])
        self.sent += 1
        self._write_kept()

    def finish(self):
        """Wait for the acks of every message (if asked for), then end the connection."""
        if self.acknowledged:
            self._wait_for_acks(lambda: not len(self.unacked))
        try:
            self.connection.finish(FINISH_TIMEOUT_S)
        except OSError as error:
            if not self.acknowledged:  # everything is acknowledged: a late error loses nothing
                raise self._failed(error) from error
        if self.rejected:
            raise RejectedError(f'{self.where} rejected {sum(self.rejected.values())} of '
                                f'{self.sent} messages: {describe_rejections(self.rejected)}')

    def close(self):
        if self.connection is not None:
            self.connection.close()

    def _open(self):
        self.connection = self.connect()
        if self.acknowledged:
            first_seq = self.unacked.first_seq
            self.acks = acks = ConnectionAcks(first_seq)
            if self._write([wire.make_session(self.session_id, first_seq)]):
                acks.first_write_at = time.monotonic()
                self._write_kept()

    def _write_kept(self):
        """Write the kept frames this connection has not had yet."""
        while self.acks.written_through < self.unacked.next_seq - 1:
            acks = self.acks
            frames = self.unacked.frames_after(acks.written_through, 64 * 1024)
            if self._write(frames):
                acks.written_through += len(frames)

    def _write(self, frames):
        """Write ``frames``; return False if the connection failed and was opened again
        instead (with acks, the new connection has had every kept frame)."""
        try:
            self.connection.send_frames(frames)
        except ConnectionLost as lost:
            if not self.acknowledged:
                raise self._failed(lost) from lost
            self._reconnect(_describe(lost))
            return False
        return True

    def _reconnect(self, reason):
        """Open the connection again; with acks, the kept frames are written again on it.

        With acks, a connection that fails ``MAX_RECONNECTS`` times in a row without a
        single ack in between is an error.
        """
        self.reconnects += 1
        if self.acknowledged and self.reconnects > MAX_RECONNECTS:
            raise DeliveryError(f'delivery to {self.where} failed after {self.sent} messages: '
                                f'{reason}')
        self.connection.close()
        self._open()

    def _take_acks(self):
        for ack in self.connection.take_acks():
            self.has_seen_ack = True
            if self.acks is None:
                continue
            try:
                done_through = self.acks.apply(ack)
            except ValueError as error:
                self._reconnect(f'bad acknowledgement: {error}')
                return
            self.unacked.release_through(done_through)
            self.rejected.update(rejections(ack))
            self.reconnects = 0

    def _wait_for_acks(self, is_done):
        """Read acks until ``is_done()``; reconnect if the connection is lost meanwhile."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            self._take_acks()
            if is_done():
                return
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                hint = '' if self.has_seen_ack else \
                    ' (none came: is the daemon older than acknowledgements? try --no-ack)'
                raise DeliveryError(f'{self.where} did not acknowledge {len(self.unacked)} of '
                                    f'{self.sent} messages within {self.timeout_s:g} s{hint}')
            if self.connection.receive(remaining_s):
                self._take_acks()
                if not is_done():
                    self._reconnect(self.connection.closed_because)

    def _failed(self, error):
        return DeliveryError(f'delivery to {self.where} failed after {self.sent} messages: '
                             f'{_describe(error)}')


def encode(options, body, now_ns=None, flags=0):
    """Return the frame for one message ``body``, stamped ``now_ns`` (default: now)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    stamp, nsecs = divmod(now_ns, 10**9)
    return wire.encode_message(options.app, options.module, stamp, nsecs, options.hostname,
                               body, options.secret, options.compress, flags)


def _describe(error):
    """A short human description of a socket error (``str(ConnectionLost)`` already is)."""
    cause = getattr(error, 'cause', error)
    return getattr(cause, 'strerror', None) or str(cause) or type(cause).__name__
