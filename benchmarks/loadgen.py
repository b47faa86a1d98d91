"""The load generator: N messages over C concurrent connections, each its own process.

Every message body is exactly ``BODY_SIZE`` bytes and names the run, the connection and
its sequence number, so that the checker can account for every line written::

    LHB r=<tag:8> c=<conn:3> s=<seq:7> t=<send time, µs:16> h=<crc32 of the head:8> xxx...

Two output formats carry the same bodies: LogHog frames (``loghog.wire``, optionally
signed or zlib-compressed) and syslog for rsyslog (RFC 5424 records; over a stream,
RFC 6587 octet counting ``<len> <record>``; over UDP, one record per datagram).

Flat-out runs encode every frame *before* the clock starts and send a stream in large
``sendall`` writes (``CHUNK_BYTES``); paced runs encode each message when it is due and
stamp the send time into its body (``t=``), which is how latency is measured.

Used by ``run.py``; runnable alone against any listener::

    python benchmarks/loadgen.py --port 5566 --transport tcp -n 200000 -c 8
"""

import argparse
import dataclasses
import multiprocessing
import os
import secrets
import socket
import ssl
import sys
import time
import zlib

if __package__ in (None, ''):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from loghog import wire  # noqa: E402  (after the path fix when run as a script)

BODY_SIZE = 100
HOSTNAME = 'benchhost'
APP_ID = 'bench'
MODULE = 'root'
SECRET = 'bench-secret'
CHUNK_BYTES = 256 * 1024
MAX_MESSAGES = 9_999_999    # the sequence field has 7 digits
MAX_CONNECTIONS = 999       # the connection field has 3 digits
# A sender that cannot connect or send within this long is stuck, not slow.
BARRIER_TIMEOUT_S = 120

_HEAD_FORMAT = 'LHB r=%s c=%03d s=%07d t=%016d'
_HEAD_SIZE = len(_HEAD_FORMAT % ('0' * 8, 0, 0, 0))
_PAD = 'x' * (BODY_SIZE - _HEAD_SIZE - len(' h=00000000 '))


def new_run_tag():
    """Return a fresh 8-character tag that marks every body of one run."""
    return secrets.token_hex(4)


def make_body(tag, conn, seq, stamp_us=0):
    """Return the ``BODY_SIZE``-character body of message ``seq`` of connection ``conn``.

    ``stamp_us`` is the wall-clock send time in microseconds (0 when not measured).
    """
    head = _HEAD_FORMAT % (tag, conn, seq, stamp_us)
    return '%s h=%08x %s' % (head, zlib.crc32(head.encode('ascii')), _PAD)


@dataclasses.dataclass
class TlsFiles:
    """The client's side of mutual TLS: the CA that signed the server, our cert and key."""
    cafile: str
    certfile: str
    keyfile: str


@dataclasses.dataclass
class LoadSpec:
    """One load: where to send, how, and how much.

    ``rate`` is the total messages per second over all connections (None: flat out).
    ``fmt`` is 'loghog' or 'syslog'; ``transport`` is 'tcp', 'udp' or 'tls'.
    """
    host: str
    port: int
    transport: str = 'tcp'
    fmt: str = 'loghog'
    messages: int = 200_000
    connections: int = 1
    rate: float = None
    secret: str = None
    compress: bool = False
    tls: TlsFiles = None
    tag: str = dataclasses.field(default_factory=new_run_tag)

    def __post_init__(self):
        if self.transport not in ('tcp', 'udp', 'tls'):
            raise ValueError('transport must be tcp, udp or tls, not %r' % self.transport)
        if self.fmt not in ('loghog', 'syslog', 'syslog3164'):
            raise ValueError('format must be loghog, syslog or syslog3164, not %r' % self.fmt)
        if not 1 <= self.connections <= MAX_CONNECTIONS:
            raise ValueError('connections must be 1..%d' % MAX_CONNECTIONS)
        if not self.connections <= self.messages <= MAX_MESSAGES:
            raise ValueError('messages must be connections..%d' % MAX_MESSAGES)
        if self.transport == 'tls' and self.tls is None:
            raise ValueError('tls needs TlsFiles')
        if self.fmt != 'loghog' and (self.secret or self.compress):
            raise ValueError('syslog carries neither signatures nor zlib')
        if self.host not in ('127.0.0.1', '::1', 'localhost'):
            raise ValueError('benchmarks only send to loopback, not %r' % self.host)

    @property
    def is_stream(self):
        return self.transport != 'udp'

    def count_for(self, conn):
        """How many messages connection ``conn`` sends (the remainder goes to the first)."""
        share, extra = divmod(self.messages, self.connections)
        return share + (1 if conn < extra else 0)

    def counts(self):
        return [self.count_for(conn) for conn in range(self.connections)]


def encode(spec, conn, seq, stamp_us=0, now=None):
    """Return the bytes that carry one message on the wire for ``spec``."""
    body = make_body(spec.tag, conn, seq, stamp_us)
    now = time.time() if now is None else now
    if spec.fmt == 'loghog':
        stamp = int(now)
        return wire.encode_message(APP_ID, MODULE, stamp, int((now - stamp) * 1e6), HOSTNAME,
                                   body, secret=spec.secret, compress=spec.compress)
    if spec.fmt == 'syslog3164':   # BSD syslog, as most local senders and relays send it
        when = time.strftime('%b %d %H:%M:%S', time.localtime(now))
        when = when[:4] + (' ' + when[5] if when[4] == '0' else when[4:6]) + when[6:]
        record = ('<14>%s %s %s: %s' % (when, HOSTNAME, APP_ID, body)).encode('utf-8')
    else:
        when = time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(now)) + '.%06dZ' % ((now % 1) * 1e6)
        record = ('<14>1 %s %s %s - - - %s' % (when, HOSTNAME, APP_ID, body)).encode('utf-8')
    if spec.is_stream:
        return b'%d %s' % (len(record), record)
    return record


def client_context(tls):
    """Return an ssl client context that presents our certificate and trusts ``tls.cafile``."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.cafile)
    context.load_cert_chain(tls.certfile, tls.keyfile)
    context.check_hostname = False     # certificates name 'localhost'; we dial an address
    return context


def connect(spec):
    """Open one client socket for ``spec`` (a connected UDP socket for udp)."""
    family = socket.AF_INET6 if ':' in spec.host else socket.AF_INET
    kind = socket.SOCK_STREAM if spec.is_stream else socket.SOCK_DGRAM
    sock = socket.socket(family, kind)
    try:
        sock.settimeout(BARRIER_TIMEOUT_S)
        if spec.is_stream:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.connect((spec.host, spec.port))
        if spec.transport == 'tls':
            sock = client_context(spec.tls).wrap_socket(sock, server_hostname='localhost')
        return sock
    except BaseException:
        sock.close()
        raise


def send_stream(sock, data, chunk_bytes=CHUNK_BYTES):
    """Send ``data`` in ``chunk_bytes`` writes."""
    view = memoryview(data)
    for start in range(0, len(view), chunk_bytes):
        sock.sendall(view[start:start + chunk_bytes])


def send_datagrams(sock, datagrams):
    """Send each datagram flat out; return how many the kernel refused (ENOBUFS)."""
    refused = 0
    for datagram in datagrams:
        try:
            sock.send(datagram)
        except OSError:
            refused += 1
    return refused


def send_paced(sock, spec, conn, count, start):
    """Send ``count`` messages at ``spec.rate / connections`` per second, stamped when sent.

    Messages due at the same time go out together (one write on a stream).  Returns the
    number of datagrams the kernel refused.
    """
    rate = spec.rate / spec.connections
    sent = refused = 0
    while sent < count:
        now = time.monotonic()
        due = min(count, int((now - start) * rate) + 1)
        if due <= sent:
            time.sleep(max(0.0, start + sent / rate - now))
            continue
        wall = time.time()
        stamp_us = int(wall * 1e6)
        items = [encode(spec, conn, seq, stamp_us, wall) for seq in range(sent, due)]
        if spec.is_stream:
            sock.sendall(b''.join(items))
        else:
            refused += send_datagrams(sock, items)
        sent = due
    return refused


def close(sock):
    """Close a client socket, letting the kernel deliver what is still queued."""
    try:
        if isinstance(sock, ssl.SSLSocket):
            sock.settimeout(5)     # unwrap waits for the peer's close_notify
            sock.unwrap()
    except (OSError, ValueError):
        pass
    sock.close()


def _sender(spec, conn, barrier, results):
    """One connection's process: encode, connect, wait for the start, send, report."""
    try:
        count = spec.count_for(conn)
        items = None
        if spec.rate is None:
            items = [encode(spec, conn, seq) for seq in range(count)]
            if spec.is_stream:
                items = b''.join(items)
        sock = connect(spec)
        barrier.wait(BARRIER_TIMEOUT_S)
        start = time.monotonic()
        refused = 0
        if spec.rate is not None:
            refused = send_paced(sock, spec, conn, count, start)
        elif spec.is_stream:
            send_stream(sock, items)
        else:
            refused = send_datagrams(sock, items)
        end = time.monotonic()
        close(sock)
        results.put({'conn': conn, 'start': start, 'end': end, 'sent': count,
                     'refused': refused, 'error': None})
    except BaseException as exc:  # report anything, the parent decides
        barrier.abort()
        results.put({'conn': conn, 'error': '%s: %s' % (type(exc).__name__, exc)})


class Load:
    """A prepared load: sender processes connected and waiting for ``go()``.

    Usage: ``load = Load(spec); load.go(); ...; result = load.finish()``.  The clock
    starts at ``go()``; the senders' own first-byte times are in the result.
    """

    def __init__(self, spec):
        self.spec = spec
        context = multiprocessing.get_context('fork')
        self._barrier = context.Barrier(spec.connections + 1)
        self._results = context.Queue()
        self._processes = [
            context.Process(target=_sender, args=(spec, conn, self._barrier, self._results),
                            name='loadgen-%d' % conn, daemon=True)
            for conn in range(spec.connections)]
        for process in self._processes:
            process.start()

    def is_done(self):
        """True once every sender process has ended."""
        return not any(process.is_alive() for process in self._processes)

    def go(self, timeout_s=BARRIER_TIMEOUT_S):
        """Wait until every sender is connected and ready, then release them all."""
        try:
            self._barrier.wait(timeout_s)
        except Exception as exc:
            self.finish(timeout_s=5)
            raise RuntimeError('senders failed to start: %s' % self._errors) from exc

    def finish(self, timeout_s=600):
        """Wait for the senders and return {'start', 'end', 'sent', 'refused', 'errors'}.

        ``start`` is the first sender's first byte, ``end`` the last sender's last byte
        (``time.monotonic()``, which is system-wide on Linux).
        """
        deadline = time.monotonic() + timeout_s
        reports = []
        while len(reports) < len(self._processes) and time.monotonic() < deadline:
            try:
                reports.append(self._results.get(timeout=0.2))
            except Exception:  # queue.Empty
                if not any(p.is_alive() for p in self._processes) and self._results.empty():
                    break
        for process in self._processes:
            process.join(max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(5)
        self._errors = [r['error'] for r in reports if r['error']]
        good = [r for r in reports if not r['error']]
        if len(reports) < len(self._processes):
            self._errors.append('%d senders never reported' % (len(self._processes) - len(reports)))
        return {
            'start': min((r['start'] for r in good), default=None),
            'end': max((r['end'] for r in good), default=None),
            'sent': sum(r['sent'] for r in good),
            'refused': sum(r['refused'] for r in good),
            'errors': self._errors,
        }

    _errors = ()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--transport', default='tcp', choices=('tcp', 'udp', 'tls'))
    parser.add_argument('--format', dest='fmt', default='loghog',
                        choices=('loghog', 'syslog', 'syslog3164'))
    parser.add_argument('-n', '--messages', type=int, default=200_000)
    parser.add_argument('-c', '--connections', type=int, default=1)
    parser.add_argument('--rate', type=float, help='total messages/s (default: flat out)')
    parser.add_argument('--signed', action='store_true', help='sign with %r' % SECRET)
    parser.add_argument('--zlib', action='store_true')
    parser.add_argument('--cafile')
    parser.add_argument('--certfile')
    parser.add_argument('--keyfile')
    args = parser.parse_args(argv)
    tls = TlsFiles(args.cafile, args.certfile, args.keyfile) if args.transport == 'tls' else None
    spec = LoadSpec(args.host, args.port, args.transport, args.fmt, args.messages,
                    args.connections, args.rate, SECRET if args.signed else None, args.zlib, tls)
    load = Load(spec)
    load.go()
    result = load.finish()
    elapsed = (result['end'] - result['start']) if result['start'] is not None else 0
    print('tag %s: sent %d in %.3f s (%.0f msgs/s sending), refused %d, errors %s'
          % (spec.tag, result['sent'], elapsed, result['sent'] / elapsed if elapsed else 0,
             result['refused'], result['errors'] or 'none'))
    return 1 if result['errors'] else 0


if __name__ == '__main__':
    sys.exit(main())
