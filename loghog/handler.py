"""LoghogHandler: the ``logging`` handler that sends records to a LogHog daemon."""

import functools
import json
import logging
import socket
import sys
import time

from loghog import signing, wire
from loghog.acks import HANDSHAKE_TIMEOUT_S
from loghog.datagrams import Refusals
from loghog.sender import (EMIT_WAIT_S, EXIT_TIMEOUT_S, MAX_BUFFER_BYTES, MAX_BUFFER_FRAMES,
                           RETRY_MAX_S, RETRY_MIN_S, Sender)
from loghog.transport import make_ssl_context, open_connection


class LoghogHandler(logging.Handler):
    """A logging handler that sends each record to loghogd from a background thread.

    The constructor is the original loghog 0.7 client's, so existing code and ``dictConfig``
    settings keep working:

    - ``app_name``: the application, a section of the daemon's facilities.conf.
    - ``host``, ``port``: the daemon; a name with several addresses (IPv4 and IPv6 alike) is
      resolved at each connection and one address picked at random.  5577 is the usual TLS port.
    - ``stream``: True for TCP (or TLS), False for UDP (one datagram per record, no delivery
      guarantee, no TLS).
    - ``secret``: sign each message (HMAC-MD5) with the facility's shared secret.
    - ``compression``: zlib-compress each message.
    - ``hostname``: the host name written in the log line; ``socket.gethostname()`` by default.
    - ``ssl_info``: ``{'pemfile': client cert + key, 'cacert': the LogHog CA}`` turns on
      mutually authenticated TLS 1.2+; an optional ``'check_hostname': True`` also checks that
      the daemon's certificate names ``host`` (see ``loghog.transport.make_ssl_context``).
    - ``max_buffer_size``: how many messages may wait, queued or (with acknowledgements)
      written but not yet acknowledged (10,000; the original's 1024 filled in a burst).
      When the buffer is full, see "Bounds" below.
    - ``print_debug``: report every connection change on standard error (never raised).
      What a user must know is written there whatever this says: records dropped, records
      the daemon rejected, a record logged after ``close()`` that could not be delivered,
      records not delivered at exit, a daemon that does not answer the handshake.

    Keyword-only extras, not in the original:

    - ``acknowledged``: ask the daemon to acknowledge every message and keep each one until
      it does, sending it again after a reconnect (at-least-once delivery; see
      ``loghog.acks``).  None (the default) means on for TCP and TLS; it cannot be used with
      UDP.  Turn it off (an explicit choice) for a daemon older than the extension: such a
      daemon never answers the session frame, and the handler keeps its records and says
      so on standard error rather than count them as delivered.
    - ``signature`` (with a ``secret``): ``'auto'`` (the default) signs each message with
      HMAC-MD5 as the original did, and also with a protocol v2 signature (HMAC-SHA256 over
      the whole message, host name and fields included, a session, a number and the time;
      README "The wire protocol") when the daemon's answer to the session frame says it
      checks them; ``'v2'`` always signs v2 only (over UDP or without acknowledgements the
      daemon cannot say; a daemon older than v2 rejects such frames, and the handler says
      so on standard error); ``'v1'`` never signs v2.
    - ``max_buffer_bytes``: the buffer's bound in bytes (8 MiB).
    - ``emit_wait_s``, ``flush_timeout_s``, ``close_timeout_s``, ``retry_min_s``,
      ``retry_max_s``: the bounds below.

    Bounds, and why (docs/client.md, "Bounds"):

    - ``emit()`` formats and encodes the record and queues the frame; a background thread
      sends.  It returns at once while the buffer has room.  When the buffer is full and
      the daemon is connected and taking messages, it waits for room, at most
      ``emit_wait_s`` (5 s): back-pressure, as a file handler's write blocks on a slow disk,
      rather than loss.  When the daemon is unreachable, or took nothing for
      ``emit_wait_s``, it drops the oldest queued record instead (counted in ``dropped``);
      the next record delivered is preceded, in the same file, by a ``[loghog]`` line that
      says how many records this process dropped, between which times, and why.
    - A record longer than the daemon's default message size (64 KiB) is cut to fit, with a
      ``[loghog: cut ...]`` marker at the end; over UDP, to what one datagram carries
      (65,507 bytes, the frame's header included).  A datagram the kernel refuses anyway
      (nothing listening at the port) is lost: the first is said on standard error, later
      ones summed up every 10 s at most.
    - A lost connection that had lasted a second is opened again at once (a daemon
      restart); after a failed attempt, or a connection lost sooner, the handler waits
      ``retry_min_s`` (0.05 s), doubling up to ``retry_max_s`` (1 s), so that a daemon that
      comes back is found within a second and a peer that drops every connection is not
      hammered.
    - An acknowledged connection starts with a handshake: no message is written until the
      daemon answered the session frame, within 5 s.
    - ``flush()`` waits up to ``flush_timeout_s`` (5 s).  ``close()``, and so interpreter
      exit (``logging.shutdown``) and the exit of a ``multiprocessing`` fork child, waits
      until every record is acknowledged, at most ``close_timeout_s`` (10 s), and at once
      gives up when the daemon is found unreachable; at interpreter exit ``flush()`` and
      ``close()`` share that one deadline.  Whatever is not delivered then is
      reported on standard error in one line: how many records, and where to.

    Raises ``ValueError`` for an inconsistent configuration (TLS or acknowledgements over
    UDP, a bad buffer size) and ``OSError`` when the TLS files cannot be loaded, so mistakes
    show at start-up.
    """

    def __init__(self, app_name, host='localhost', port=5566, stream=True, secret=None,
                 compression=False, hostname=None, ssl_info=None,
                 max_buffer_size=MAX_BUFFER_FRAMES, print_debug=False, *, acknowledged=None,
                 max_buffer_bytes=MAX_BUFFER_BYTES, emit_wait_s=EMIT_WAIT_S,
                 flush_timeout_s=5.0, close_timeout_s=EXIT_TIMEOUT_S,
                 retry_min_s=RETRY_MIN_S, retry_max_s=RETRY_MAX_S, signature='auto'):
        super().__init__()
        self.app_name = app_name
        self.host = host
        self.port = int(port)
        self.secret = secret
        self.compression = bool(compression)
        self.hostname = hostname or socket.gethostname()
        self.print_debug = bool(print_debug)
        self.flush_timeout_s = flush_timeout_s
        self.close_timeout_s = close_timeout_s
        self.transport = _choose_transport(stream, ssl_info)
        self.acknowledged = _choose_acknowledged(acknowledged, self.transport)
        # Frames are queued uncompressed and compressed by the sender thread: zlib lets go
        # of the GIL while it works, and in emit() that handed the GIL to the sender thread
        # and back for every record (28-38 µs per call measured, against 5 µs of work).
        self.signature = _choose_signature(signature, secret)
        # With signature='v2' the frame carries no v1 signature inside: a v2 frame stripped
        # of its envelope is then an unsigned message, refused where a secret is set.
        self._encoder = wire.MessageEncoder(app_name, self.hostname,
                                            None if self.signature == 'v2' else secret, False,
                                            wire.FLAG_ACK if self.acknowledged else 0)
        # A frame whose payload may exceed the daemon's message size, or over UDP what a
        # datagram carries (the check is on the frame, header included: one comparison per
        # record; ``encode_within`` checks exactly).  A v2 signature adds its envelope:
        # records are cut to leave room.
        self._max_payload = wire.max_payload(self.transport, signing.ENVELOPE_SIZE
                                             if secret and self.signature != 'v1' else 0)
        self._fields_cache = {}   # see record_fields
        if ssl_info:
            _ssl_context_from_info(ssl_info)  # fail now, in the caller, if the files are bad
        where = f'{self.transport}://{self.host}:{self.port}'
        self._refusals = Refusals(self._warn, where)
        connect = functools.partial(self._connect, ssl_info)
        self._sender = Sender(connect, int(max_buffer_size), retry_min_s, retry_max_s,
                              report=self._report, acknowledged=self.acknowledged,
                              prepare=wire.compress_frame if self.compression else None,
                              max_bytes=int(max_buffer_bytes), warn=self._warn,
                              where=where,
                              make_notice=self._make_notice, emit_wait_s=emit_wait_s,
                              handshake_timeout_s=HANDSHAKE_TIMEOUT_S,
                              exit_timeout_s=close_timeout_s,
                              signer_v2=signing.V2Signer(secret) if secret else None,
                              signature=self.signature)

    @property
    def dropped(self):
        """How many messages were given up on before being sent (buffer full while the
        daemon was unreachable or stalled, or still queued at close)."""
        return self._sender.dropped

    @property
    def rejected(self):
        """With acknowledgements: how many messages the daemon acknowledged as rejected
        (unknown application, bad signature, ...)."""
        return self._sender.rejected

    @property
    def unconfirmed(self):
        """With acknowledgements: how many messages were sent but never acknowledged when
        ``close()`` gave up waiting (they may or may not have been written)."""
        return self._sender.unconfirmed

    def emit(self, record):
        """Queue ``record`` for the daemon; never raises.

        Returns at once while the buffer has room; see the class's "Bounds" for a full one.
        A record that cannot be formatted goes to ``handleError``, like every stdlib handler.
        After ``close()`` the record is still delivered, as ``logging.FileHandler`` opens
        its file again and writes it: the handler connects again and returns once the
        daemon has it (see ``close()``).
        """
        try:
            # A hand-made record may lack a name; '' and 'root' both mean the root facility.
            body = self.format(record)   # first: it sets record.exc_text
            fields = record_fields(record, self._fields_cache)
            frame = self._encoder.encode(record.name or 'root', int(record.created),
                                         int(record.msecs * 10**6), body, fields)
            if len(frame) > self._max_payload:
                frame = wire.encode_within(self._encoder.encode, record.name or 'root',
                                           int(record.created), int(record.msecs * 10**6),
                                           body, self._max_payload, fields=fields)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)
            return
        self._sender.put(frame)

    def flush(self):
        """Wait up to ``flush_timeout_s`` until queued messages are written to the daemon
        (and, with acknowledgements, acknowledged: on its disk).

        Returns early when the daemon is unreachable (the messages stay queued).  Returns
        True when nothing is left waiting (``logging`` itself ignores the result).
        """
        return self._sender.flush(self.flush_timeout_s)

    def close(self):
        """Deliver what can be delivered within ``close_timeout_s`` (giving up at once when
        the daemon is unreachable), then stop the sender thread.  What is left undelivered
        is reported on standard error in one line, and so are datagrams the kernel
        refused that were not said yet.

        A record emitted after ``close()`` (``dictConfig`` run again closes the old
        handlers while a thread may still be in one; an ``atexit`` hook that runs after
        ``logging.shutdown``) is delivered as ``logging.FileHandler`` writes it: the
        handler opens again (a new thread and connection) and ``emit()`` returns once the
        daemon has the record, at most ``emit_wait_s`` later (at interpreter exit, within
        the exit's ``close_timeout_s``), then closes again; a second one within a second
        keeps it open, closed again at interpreter exit.  A record it cannot deliver so is
        said on standard error, and for a second after that (or past the exit deadline)
        later ones are dropped, counted in ``dropped``, the first said."""
        try:
            self._sender.close(self.close_timeout_s)
            self._refusals.say_rest()
        finally:
            super().close()

    def _connect(self, ssl_info, timeout_s, is_cancelled, prefer=None):
        # A new context for each connection: a renewed certificate is picked up without a
        # restart, and a fork child never shares OpenSSL state with its parent's thread.
        ssl_context = _ssl_context_from_info(ssl_info) if ssl_info else None
        return self._refusals.watch(open_connection(self.host, self.port, self.transport,
                                                    ssl_context, timeout_s, is_cancelled,
                                                    prefer))

    def _report(self, text):
        if self.print_debug:
            print(f'loghog: {self.app_name} -> {self.host}:{self.port}: {text}',
                  file=sys.stderr, flush=True)

    def _warn(self, text):
        """What the user must see whatever ``print_debug`` says (losses, a silent daemon)."""
        try:
            print(f'loghog ({self.app_name}): {text}', file=sys.stderr, flush=True)
        except (OSError, ValueError):  # standard error closed
            pass

    def _make_notice(self, module, text):
        """A message of this handler's app in ``module``, stamped now: a gap announcement."""
        stamp, nsecs = divmod(time.time_ns(), 10**9)
        return self._encoder.encode(module, stamp, nsecs, text)

    def __repr__(self):
        level = logging.getLevelName(self.level)
        acks = ', acknowledged' if self.acknowledged else ''
        return (f'<{type(self).__name__} {self.app_name} {self.transport}://'
                f'{self.host}:{self.port} ({level}{acks})>')


# What every LogRecord has (3.11: 20 attributes; 3.12 adds taskName), and what formatting
# adds: any other attribute came from ``extra=`` (logging refuses extra keys among these).
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord('', 0, '', 0, '', (), None).__dict__) | {
    'message', 'asctime'}
_PLAIN_RECORD_SIZE = len(_RECORD_ATTRIBUTES) - 2
# Bound on a handler's cache of record_fields' fixed part (call sites x threads).
CACHE_ENTRIES = 1024
_quote = wire.encode_string


def record_fields(record, cache=None):
    """The JSON text of ``record``'s structure, sent beside the formatted body as ``fields``:
    levelname, name, pathname, lineno, funcName, process, processName, thread, threadName,
    exc_text and stack_info when present, and every ``extra=`` key (values JSON can hold as
    they are, others as their ``repr()``).  A loghogd facility with ``format = json`` writes
    them into the line; a text facility (and a 0.7 daemon) ignores them.

    The nine fixed attributes repeat for every record of one call site in one thread: with
    ``cache`` (a dict the caller keeps; at most CACHE_ENTRIES) their JSON is made once per
    such combination (0.4 µs a record against 1.3 µs, benchmarks/bench_fields.py).  The
    rest is one %-format of parts quoted by json's C escaper; anything unusual takes
    ``json`` itself.
    """
    attributes = record.__dict__
    try:
        key = (record.levelname, record.name, record.pathname, record.lineno, record.funcName,
               record.process, record.processName, record.thread, record.threadName)
        text = cache[key]
    except (KeyError, TypeError):   # not yet seen; no cache, or a value that is unhashable
        try:
            text = ('{"levelname": %s, "name": %s, "pathname": %s, "lineno": %d, '
                    '"funcName": %s, "process": %d, "processName": %s, "thread": %d, '
                    '"threadName": %s') % (
                _quote(record.levelname), _quote(record.name), _quote(record.pathname),
                record.lineno, _quote(record.funcName), record.process,
                _quote(record.processName), record.thread, _quote(record.threadName))
        except TypeError:   # None where a value is turned off (logging.logThreads = False)
            return _fields_slowly(record)
        if cache is not None:
            if len(cache) >= CACHE_ENTRIES:
                cache.clear()
            cache[key] = text
    if record.exc_text:
        text += ', "exc_text": ' + _quote(record.exc_text)
    if record.stack_info:
        text += ', "stack_info": ' + _quote(record.stack_info)
    # Only a record with more attributes than a plain one can hold extras: one len() for
    # most records instead of a set difference (0.6 µs).
    if len(attributes) - ('message' in attributes) - ('asctime' in attributes) \
            > _PLAIN_RECORD_SIZE:
        # In the record's order (extra='s), never a set's: a set's order changes with each
        # process's hash seed, and the daemon names colliding fields in the order they come
        # (A7-3: a field was field_time from one worker and field_field_time from another).
        extras = {key: value for key, value in attributes.items()
                  if key not in _RECORD_ATTRIBUTES}
        text += ', ' + _json_object(extras)[1:-1]
    return text + '}'


def _fields_slowly(record):
    attributes = record.__dict__
    data = {key: getattr(record, key, None) for key in (
        'levelname', 'name', 'pathname', 'lineno', 'funcName', 'process', 'processName',
        'thread', 'threadName')}
    for key in ('exc_text', 'stack_info'):
        if attributes.get(key):
            data[key] = attributes[key]
    data.update((key, value) for key, value in attributes.items()
                if key not in _RECORD_ATTRIBUTES)
    return _json_object(data)


def _json_object(data):
    """JSON text for a dict of str keys: values JSON holds as they are, others (and NaN,
    which not every JSON reader takes) as their repr()."""
    try:
        return _encode_json(data)
    except Exception:   # a cycle, NaN, a non-str key, a repr() that raises, deep nesting
        return '{%s}' % ', '.join('%s: %s' % (_quote(str(key)), _json_value(value))
                                  for key, value in data.items())


def _json_value(value):
    """JSON text for one value: as it is when JSON holds it, else its repr(); a value
    whose repr() raises too (an ORM object detached from its session, a structure nested
    deeper than the recursion limit) is a placeholder that names its type and the error:
    the record is sent whatever its extras hold (attack findings A7-1, A7-4: it was lost,
    or logger.info raised RecursionError into the application)."""
    try:
        return _encode_json(value)
    except Exception:
        try:
            return _quote(repr(value))
        except Exception as exc:
            return _quote('<unrepresentable %s: %s>' % (type(value).__name__,
                                                        type(exc).__name__))


# One encoder made once: json.dumps with any option builds a new one per call (3-4 µs).
_encode_json = json.JSONEncoder(default=repr, allow_nan=False).encode


def _choose_transport(stream, ssl_info):
    if ssl_info and not stream:
        raise ValueError('TLS needs a stream: ssl_info cannot be used with stream=False')
    if ssl_info:
        return 'tls'
    return 'tcp' if stream else 'udp'


def _choose_signature(signature, secret):
    if signature not in ('auto', 'v1', 'v2'):
        raise ValueError(f"signature must be 'auto', 'v1' or 'v2', not {signature!r}")
    if signature == 'v2' and not secret:
        raise ValueError("signature='v2' needs a secret")
    return signature


def _choose_acknowledged(acknowledged, transport):
    if acknowledged is None:
        return transport != 'udp'
    if acknowledged and transport == 'udp':
        raise ValueError('acknowledgements need a stream: acknowledged=True cannot be used '
                         'with stream=False')
    return bool(acknowledged)


def _ssl_context_from_info(ssl_info):
    missing = {'pemfile', 'cacert'} - set(ssl_info)
    if missing:
        raise ValueError(f'ssl_info lacks {", ".join(sorted(missing))}')
    return make_ssl_context(ssl_info['pemfile'], ssl_info['cacert'],
                            ssl_info.get('check_hostname', False))
