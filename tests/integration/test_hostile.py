"""Hostile input against a real loghogd: each attack costs the attacker's own input only.

In every test a well-behaved client keeps being served while the bad input arrives; nothing of
the bad input reaches a file; the daemon counts it (status.json) and warns about it at most a
few times per reason (rate-limited). Memory is read from /proc/<pid>/status.
"""

import errno
import json
import os
import re
import resource
import select
import signal
import socket
import stat
import time
import zlib

import pytest

from loghog.wire import FLAG_ACK, HEADER, encode_message, make_frame, signature
from loghogd.converters import safe_host
from tests.support import frame, line_body, log_files, read_lines, send_tcp, send_udp, wait_for, wait_for_lines

FACILITIES = """
[app]
rotate = daily
backup_count = 1

[perhost]
rotate = daily
backup_count = 1
file_per_host = yes

[signed]
rotate = daily
backup_count = 1
secret = TopSecret-4242

[signed:own]
rotate = daily
backup_count = 1
secret = Another-Secret-77
"""
SECRETS = ('TopSecret-4242', 'Another-Secret-77')
# Status snapshots often enough for a test to read its counters.
FAST_STATUS = {'stats': {'interval': '0.2'}}
# RateLimiter: at most this many warnings per reason per minute.
WARNING_BURST = 5


def start(daemon_factory, facilities=FACILITIES, sections=FAST_STATUS, **server):
    return daemon_factory(facilities, server={k: str(v) for k, v in server.items()},
                          sections=sections)


class GoodClient:
    """A well-behaved client on its own connection: numbered messages, all expected in order."""

    def __init__(self, daemon, app='app'):
        self.daemon = daemon
        self.app = app
        self.sock = socket.create_connection(('127.0.0.1', daemon.tcp_port), timeout=10)
        self.sent = 0

    def send(self, count=1):
        for _ in range(count):
            self.sock.sendall(frame(self.app, 'good %d' % self.sent))
            self.sent += 1

    def check(self):
        """Wait until every message sent is written; fail if any is missing or out of order."""
        lines = wait_for_lines(self.daemon.log_file(self.app), self.sent)
        assert [line_body(l) for l in lines] == ['good %d' % i for i in range(self.sent)]

    def close(self):
        self.sock.close()


def assert_only_good_lines(daemon, good):
    good.check()
    assert list(log_files(daemon)) == [os.path.join(good.app, 'root.log')], log_files(daemon)


def status(daemon, timeout=10):
    """A status snapshot written after this call (status.json, [stats] interval 0.2 s)."""
    after = time.time()
    path = daemon.rundir / 'status.json'

    def fresh():
        try:
            data = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return data if data['written_at'] >= after else None
    return wait_for(fresh, timeout, message='a fresh status.json')


def rejected(snapshot):
    return {row['reason']: row['messages'] for row in snapshot['rejected']}


def warnings_about(daemon, reason):
    return len(re.findall(r'rejected a message from \S+: %s:' % reason, daemon.output()))


def memory_kib(pid):
    """(VmRSS, VmHWM) of a process in KiB."""
    fields = {}
    with open('/proc/%d/status' % pid) as stream:
        for line in stream:
            key, _, value = line.partition(':')
            if key in ('VmRSS', 'VmHWM'):
                fields[key] = int(value.split()[0])
    return fields['VmRSS'], fields['VmHWM']


def is_closed_by_daemon(sock, timeout=10):
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
        return True
    except OSError as exc:
        return not isinstance(exc, socket.timeout)


def raw_frame(payload, flags=0, size=None):
    return HEADER.pack(len(payload) if size is None else size, flags) + payload


def message_json(**overrides):
    data = {'version': 1, 'app_id': 'app', 'module': 'root', 'stamp': 1700000000, 'nsecs': 0,
            'hostname': 'web1', 'body': 'bad'}
    data.update(overrides)
    return json.dumps({k: v for k, v in data.items() if v is not None}).encode()


def raise_descriptor_limit(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip('needs %d file descriptors, the hard limit is %d' % (needed, hard))
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


# -- frame sizes ---------------------------------------------------------------------------------

def test_absurd_sizes_and_sizes_over_max_message_size(daemon_factory):
    daemon = start(daemon_factory, max_message_size='1K')
    good = GoodClient(daemon)
    good.send()
    absurd = []
    for size in (0xFFFFFFFF, 0x7FFFFFFF, 16 * 1024 * 1024 + 1):
        sock = socket.create_connection(('127.0.0.1', daemon.tcp_port), timeout=10)
        sock.sendall(HEADER.pack(size, 0) + b'x' * 100)
        absurd.append(sock)
    # Over max_message_size but plausible: skipped whole, the connection goes on.
    oversized = socket.create_connection(('127.0.0.1', daemon.tcp_port), timeout=10)
    oversized.sendall(raw_frame(b'y' * 1025) * 3 + raw_frame(b'z' * (1024 * 1024)))
    send_udp(daemon.udp_port, raw_frame(message_json(body='u' * 1100)))
    send_udp(daemon.udp_port, raw_frame(b'x' * 10, size=60000))
    good.send()
    for sock in absurd:
        assert is_closed_by_daemon(sock)
        sock.close()
    snapshot = wait_for(lambda: (lambda s: s if rejected(s).get('too_large') == 6 else None)(
        status(daemon)), message='6 too_large')
    assert rejected(snapshot) == {'lost_framing': 3, 'too_large': 6}
    oversized.close()
    good.send()
    assert_only_good_lines(daemon, good)
    assert warnings_about(daemon, 'too_large') == WARNING_BURST  # 6 rejections, 5 warnings
    assert daemon.stop() == 0


# -- zlib bombs ----------------------------------------------------------------------------------

def zlib_bomb(inflated_bytes):
    """A valid zlib stream of a JSON-looking prefix and ``inflated_bytes`` of spaces."""
    compressor = zlib.compressobj(9)
    chunk = b' ' * (1024 * 1024)
    parts = [compressor.compress(b'{"version": 1, "app_id": "app", "body": "')]
    for _ in range(inflated_bytes // len(chunk)):
        parts.append(compressor.compress(chunk))
    parts.append(compressor.flush())
    return b''.join(parts)


def test_zlib_bombs_keep_memory_bounded(daemon_factory):
    daemon = start(daemon_factory)
    good = GoodClient(daemon)
    good.send()
    good.check()
    rss_before, hwm_before = memory_kib(daemon.pid)
    stream_bomb = zlib_bomb(60 * 1024 * 1024)     # 58 KiB on the wire, 60 MiB inflated
    datagram_bomb = zlib_bomb(40 * 1024 * 1024)   # small enough for one datagram
    assert len(stream_bomb) < 65536 and len(datagram_bomb) < 65000
    bombs = 200
    sock = socket.create_connection(('127.0.0.1', daemon.tcp_port), timeout=30)
    for i in range(bombs):
        sock.sendall(raw_frame(stream_bomb, flags=1))
        send_udp(daemon.udp_port, raw_frame(datagram_bomb, flags=1))
        if i % 50 == 0:
            good.send()
    # Truncated bombs: the first half of one (still megabytes), and a cut stream that
    # inflates to little and then ends too soon.
    sock.sendall(raw_frame(stream_bomb[:len(stream_bomb) // 2], flags=1) * 10)
    sock.sendall(raw_frame(zlib.compress(message_json(body='b' * 5000))[:-20], flags=1) * 10)
    good.send()
    snapshot = wait_for(lambda: (lambda s: s if rejected(s).get('bad_zlib') == 10 else None)(
        status(daemon)), timeout=30, message='the bombs to be rejected')
    sock.close()
    counts = rejected(snapshot)
    assert set(counts) == {'too_large', 'bad_zlib'}
    assert bombs + 10 <= counts['too_large'] <= 2 * bombs + 10  # UDP may drop some
    rss_after, hwm_after = memory_kib(daemon.pid)
    print('\nloghogd memory before/after %d stream + %d UDP zlib bombs: VmRSS %d -> %d KiB, '
          'VmHWM %d -> %d KiB' % (bombs, bombs, rss_before, rss_after, hwm_before, hwm_after))
    # Each bomb is inflated to at most max_message_size + 1 bytes (64 KiB): the peak may
    # move by a few buffers, never by the 60 MiB a bomb would inflate to.
    assert hwm_after - hwm_before < 16 * 1024
    assert_only_good_lines(daemon, good)
    assert daemon.stop() == 0


# -- bad payloads --------------------------------------------------------------------------------

BAD_PAYLOADS = {
    'bad_zlib': [(zlib.compress(message_json())[:-6], 1), (message_json(), 1)],
    'bad_utf8': [(message_json(body='\u00e9').replace(b'\\u00e9', b'\xff\xfe'), 0)],
    'bad_json': [(b'{"version": 1, "app_id": "app"', 0), (b'', 0), (b'[' * 50000, 0),
                 (message_json().replace(b'"stamp": 1700000000', b'"stamp": ' + b'9' * 5000), 0)],
    'bad_fields': [(message_json(stamp='1700000000'), 0), (message_json(nsecs='0'), 0),
                   (message_json(version='1'), 0), (message_json(stamp=2 ** 64), 0),
                   (message_json(stamp=1.5), 0), (message_json(stamp=True), 0),
                   (message_json(body={'nested': {'object': [1]}}), 0),
                   (message_json(hostname=['web1']), 0), (message_json(hostname=None), 0),
                   (message_json(body=None), 0), (b'[1, 2, 3]', 0), (b'null', 0), (b'"text"', 0),
                   (message_json(version=2), 0), (message_json(signature=5), 0)],
    'bad_flags': [(message_json(), 0x10), (message_json(), 0x80000000), (message_json(), 0xFF)],
}


def test_invalid_zlib_utf8_json_types_and_flags_are_rejected(daemon_factory):
    daemon = start(daemon_factory)
    good = GoodClient(daemon)
    repeats = 10
    bad = socket.create_connection(('127.0.0.1', daemon.tcp_port), timeout=10)
    expected = {}
    for reason, payloads in BAD_PAYLOADS.items():
        for payload, flags in payloads:
            bad.sendall(raw_frame(payload, flags) * repeats)
            send_udp(daemon.udp_port, raw_frame(payload, flags))
            good.send()
        expected[reason] = len(payloads) * (repeats + 1)
    snapshot = wait_for(lambda: (lambda s: s if rejected(s) == expected else None)(status(daemon)),
                        message='rejections %r' % expected)
    assert rejected(snapshot) == expected
    assert_only_good_lines(daemon, good)
    for reason in expected:
        assert 1 <= warnings_about(daemon, reason) <= WARNING_BURST, reason
    bad.close()
    assert daemon.stop() == 0


# -- names built to leave the log folder ---------------------------------------------------------

def test_host_app_and_module_names_never_leave_the_log_folder(daemon_factory):
    daemon = start(daemon_factory)
    good = GoodClient(daemon)
    hosts = ['../../etc/cron.d/x', '/', '..', '.', '', 'a\x00b', '\x00', '../' * 80, 'x' * 255,
             '/etc/passwd', '-rf', '.hidden', 'a/../../b', '\u043f\u0440\u0438\u043c\u0435\u0440',
             'line\nbreak', 'web1']
    modules = ['../../etc/cron.d/x', '/', '..', 'a/b', '\x00', 'x' * 1024, 'root/../../..']
    data = b''.join(frame('perhost', 'host %r' % h, host=h) for h in hosts)
    data += b''.join(frame('app', 'module %r' % m[:20], module=m) for m in modules)
    refused = [frame('perhost', 'host too long', host='y' * 256),
               frame('perhost', 'host much too long', host='z' * 60000),
               frame('app', 'module too long', module='m.' * 600),
               frame('../../etc', 'app as a path'), frame('/tmp', 'app as a path'),
               frame('app\x00', 'app with NUL')]
    send_tcp(daemon.tcp_port, data + b''.join(refused))
    for item in refused[:3]:
        send_udp(daemon.udp_port, item)
    good.send()
    expected_lines = len(hosts) + len(modules) + 1
    wait_for(lambda: sum(map(len, log_files(daemon).values())) >= expected_lines,
             message='%d lines' % expected_lines)
    files = log_files(daemon)
    for relative in files:
        app, name = relative.split(os.sep)
        assert app in ('app', 'perhost')
        assert re.match(r'^[A-Za-z0-9_][A-Za-z0-9_.\-]*\.log$', name), name
        assert len(name) <= 100 + len('-root.log')
    assert sorted(line_body(l) for l in files[os.path.join('app', 'root.log')]) == sorted(
        ['module %r' % m[:20] for m in modules] + ['good 0'])
    assert files[os.path.join('perhost', '_.._etc_cron.d_x-root.log')][0].split(' - ')[1] == \
        '../../etc/cron.d/x'
    assert files[os.path.join('perhost', 'a_b-root.log')][0].split(' - ')[1] == 'a?b'
    assert files[os.path.join('perhost', safe_host('x' * 255) + '-root.log')]   # 89 x, a hash
    # Nothing was created outside the daemon's own folders.
    assert sorted(os.listdir(daemon.base)) == sorted(
        ['daemon.log', 'facilities.conf', 'lib', 'log', 'loghogd.conf', 'run', 'stderr.txt'])
    assert not any('etc' in dirs or 'cron.d' in dirs for _, dirs, _ in os.walk(daemon.base))
    snapshot = status(daemon)
    assert rejected(snapshot) == {'bad_fields': 6, 'unknown_app': 3}
    assert daemon.stop() == 0


# -- connections: too many, idle, slow, never reading ------------------------------------------

def test_more_connections_than_max_connections_make_room_and_lose_nothing(daemon_factory):
    # Issue 15: beyond max_connections the longest idle connection with nothing in flight
    # makes room (what it sent is read and written first); nobody waits in the backlog.
    daemon = start(daemon_factory, max_connections=20)
    good = GoodClient(daemon)
    good.send()
    good.check()
    hogs = []
    for i in range(40):
        sock = socket.create_connection(('127.0.0.1', daemon.tcp_port), timeout=10)
        sock.sendall(frame('app', 'waiting %d' % i))
        hogs.append(sock)
    lines = wait_for_lines(daemon.log_file('app'), 41)
    assert sorted(line_body(l) for l in lines if 'waiting' in l) == sorted(
        'waiting %d' % i for i in range(40))
    connections = status(daemon)['connections']
    assert connections['open']['tcp'] <= 20 and connections['accepting'] is True, connections
    assert 'to make room (max_connections 20)' in daemon.output()
    send_tcp(daemon.tcp_port, frame('app', 'a newcomer'))
    wait_for_lines(daemon.log_file('app'), 42)
    for sock in hogs:
        sock.close()
    good.close()
    assert daemon.stop() == 0


def test_two_thousand_idle_connections(daemon_factory):
    count = 2000
    raise_descriptor_limit(count + 200)
    daemon = start(daemon_factory, max_connections=count + 100)
    good = GoodClient(daemon)
    good.send()
    good.check()
    rss_before, _ = memory_kib(daemon.pid)
    idle = []
    try:
        for _ in range(count):
            idle.append(socket.create_connection(('127.0.0.1', daemon.tcp_port), timeout=10))
        wait_for(lambda: status(daemon)['connections']['open']['tcp'] == count + 1, timeout=30,
                 message='%d open connections' % (count + 1))
        rss, hwm = memory_kib(daemon.pid)
        print('\nloghogd memory with %d idle connections: VmRSS %d KiB (%d KiB before), '
              'VmHWM %d KiB: %.1f KiB per connection'
              % (count, rss, rss_before, hwm, (rss - rss_before) / count))
        good.send(10)
        good.check()
        # Each idle connection costs a socket and a small object: well under 10 KiB each.
        assert rss - rss_before < count * 10
    finally:
        for sock in idle:
            sock.close()
    wait_for(lambda: status(daemon)['connections']['open']['tcp'] == 1, timeout=30,
             message='the idle connections to be closed')
    assert daemon.stop() == 0


def test_idle_timeout_frees_slots_held_by_idle_peers(daemon_factory):
    daemon = start(daemon_factory, max_connections=10, idle_timeout=1)
    hogs = [socket.create_connection(('127.0.0.1', daemon.tcp_port)) for _ in range(10)]
    started = time.monotonic()
    send_tcp(daemon.tcp_port, frame('app', 'got in once the idle ones were cut'))
    wait_for_lines(daemon.log_file('app'), 1, timeout=10)
    assert time.monotonic() - started < 5
    assert all(is_closed_by_daemon(sock) for sock in hogs)
    for sock in hogs:
        sock.close()
    assert daemon.stop() == 0


def test_slowloris_is_cut_after_frame_timeout_and_a_busy_stream_is_not(daemon_factory):
    daemon = start(daemon_factory, frame_timeout=1)
    good = GoodClient(daemon)
    slow = socket.create_connection(('127.0.0.1', daemon.tcp_port), timeout=10)
    data = frame('app', 'one byte at a time')
    started = time.monotonic()
    closed = False
    for byte in data[:20]:   # bounded: 20 bytes at 4 per second would take 5 s
        try:
            slow.sendall(bytes([byte]))
        except OSError:
            closed = True
            break
        readable, _, _ = select.select([slow], [], [], 0.25)
        if readable:
            closed = True
            break
        good.send()
    assert closed and time.monotonic() - started < 4.5
    assert is_closed_by_daemon(slow)
    slow.close()
    # A client that streams without a pause for longer than frame_timeout, every read ending
    # in the middle of a frame, is busy, not slow.
    busy = socket.create_connection(('127.0.0.1', daemon.tcp_port), timeout=10)
    stream = b''.join(frame('app', 'busy %04d' % i + ' ' * 300) for i in range(400))
    piece = 500   # not a multiple of the frame size: each read ends mid-frame
    started = time.monotonic()
    for offset in range(0, len(stream), piece):
        busy.sendall(stream[offset:offset + piece])
        time.sleep(max(0.0, started + 2.5 * offset / len(stream) - time.monotonic()))
    assert time.monotonic() - started > 2
    busy.close()
    lines = wait_for_lines(daemon.log_file('app'), good.sent + 400)
    assert sorted(line_body(l).rstrip() for l in lines if 'busy' in l) == [
        'busy %04d' % i for i in range(400)]
    assert daemon.output().count('a frame took longer than frame_timeout (1s)') == 1
    assert daemon.stop() == 0


def test_a_client_that_never_reads(daemon_factory):
    daemon = start(daemon_factory)
    good = GoodClient(daemon)
    # Without FLAG_ACK the daemon never writes to a client: not reading costs nothing.
    quiet = socket.socket()
    quiet.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    quiet.connect(('127.0.0.1', daemon.tcp_port))
    quiet.sendall(b''.join(frame('app', 'unread %d' % i) for i in range(1000)))
    # With FLAG_ACK, acks pile up unread: the daemon keeps at most a bounded amount for it,
    # then cuts it off.
    deaf = socket.socket()
    deaf.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    deaf.connect(('127.0.0.1', daemon.tcp_port))
    batch = b''.join(encode_message('nobody', 'root', 1, 0, 'h', 'x' * 10, flags=FLAG_ACK)
                     for _ in range(100))
    rss_before, _ = memory_kib(daemon.pid)
    deadline = time.monotonic() + 20
    cut = False
    deaf.settimeout(5)
    while time.monotonic() < deadline:
        try:
            deaf.sendall(batch)
        except OSError:
            cut = True
            break
        time.sleep(0.001)
        if good.sent < 20:
            good.send()
    rss_after, _ = memory_kib(daemon.pid)
    deaf.close()
    assert cut, 'the daemon kept a client that never reads its acks for 20 s'
    assert rss_after - rss_before < 32 * 1024
    lines = wait_for_lines(daemon.log_file('app'), 1000 + good.sent)
    assert sum(1 for l in lines if 'unread' in l) == 1000
    quiet.close()
    assert daemon.stop() == 0
    assert 'does not read its acknowledgements' in daemon.output()


def test_udp_flood(daemon_factory):
    daemon = start(daemon_factory)
    good = GoodClient(daemon)
    garbage = [b'', b'\x00' * 7, raw_frame(b'not json'), raw_frame(message_json(), 0x40),
               raw_frame(message_json(app_id='nobody')), raw_frame(zlib_bomb(8 * 1024 * 1024), 1),
               raw_frame(message_json(stamp='1')), raw_frame(b'x' * 100, size=5)]
    sent = 0
    flooders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
    started = time.monotonic()
    try:
        for i in range(20000):
            try:
                flooders[i % 4].sendto(garbage[i % len(garbage)], ('127.0.0.1', daemon.udp_port))
                sent += 1
            except OSError as exc:
                assert exc.errno in (errno.ENOBUFS, errno.EAGAIN), exc
            if i % 200 == 0:
                good.send()
    finally:
        for sock in flooders:
            sock.close()
    flood_s = time.monotonic() - started
    good.send()
    good.check()
    # Every datagram was either read and refused by the daemon or dropped by the kernel
    # because the daemon's receive buffer was full; none was written.
    snapshot = wait_for(lambda: (lambda s: s if sum(rejected(s).values())
                                 + s['udp']['kernel_drops'] >= sent else None)(status(daemon)),
                        message='the flood to be counted')
    total = sum(rejected(snapshot).values())
    print('\nUDP flood: %d datagrams in %.2f s; the daemon refused %d, the kernel dropped %d'
          % (sent, flood_s, total, snapshot['udp']['kernel_drops']))
    assert total + snapshot['udp']['kernel_drops'] == sent and total > 0
    assert_only_good_lines(daemon, good)
    for reason in rejected(snapshot):
        assert warnings_about(daemon, reason) <= WARNING_BURST, reason
    assert daemon.proc.poll() is None
    assert daemon.stop() == 0


# -- signed messages (beyond test_core.test_signed_messages) ------------------------------------

def signed_frame(app, body, secret, module='root', tamper=None):
    """A frame signed with ``secret``; ``tamper`` then changes fields after signing."""
    data = {'version': 1, 'app_id': app, 'module': module, 'stamp': 1700000000, 'nsecs': 0,
            'hostname': 'web1', 'body': body,
            'signature': signature(secret, app, module, 1700000000, 0, body)}
    data.update(tamper or {})
    return make_frame(json.dumps(data).encode())


def test_signatures_per_facility_tampering_and_replay(daemon_factory):
    daemon = start(daemon_factory)
    root_secret, own_secret = SECRETS
    valid = signed_frame('signed', 'valid', root_secret)
    upper = signature(root_secret, 'signed', 'root', 1700000000, 0, 'upper').upper()
    send_tcp(daemon.tcp_port, b''.join([
        valid,
        valid,                                                    # a replay is written again
        signed_frame('signed', 'own valid', own_secret, module='own.sub'),
        signed_frame('signed', 'root secret in own', root_secret, module='own'),
        signed_frame('signed', 'own secret in root', own_secret),
        signed_frame('signed', 'tampered', root_secret, tamper={'body': 'tampered body'}),
        signed_frame('signed', 'restamped', root_secret, tamper={'stamp': 1700000001}),
        signed_frame('signed', 'moved', root_secret, tamper={'module': 'own'}),
        signed_frame('signed', 'upper', root_secret, tamper={'signature': upper}),
        signed_frame('signed', 'number', root_secret, tamper={'signature': 12345}),
    ]))
    send_udp(daemon.udp_port, valid)   # the same bytes again over UDP: replayed there too
    wait_for_lines(daemon.log_file('signed'), 4)
    wait_for_lines(daemon.log_file('signed', 'own'), 1)
    snapshot = wait_for(lambda: (lambda s: s if sum(rejected(s).values()) >= 6 else None)(
        status(daemon)), message='6 rejections')
    bodies = sorted(line_body(l) for l in read_lines(daemon.log_file('signed')))
    assert bodies == ['upper', 'valid', 'valid', 'valid']
    assert [line_body(l) for l in read_lines(daemon.log_file('signed', 'own'))] == ['own valid']
    assert rejected(snapshot) == {'bad_signature': 5, 'bad_fields': 1}
    assert daemon.stop() == 0


def test_an_unpaired_surrogate_sent_to_a_signed_facility_over_udp_does_not_stop_the_daemon(
        daemon_factory):
    daemon = start(daemon_factory)
    payload = (b'{"version": 1, "app_id": "signed", "module": "root", "stamp": 1, "nsecs": 0, '
               b'"hostname": "h", "body": "\\ud800", "signature": "0123456789abcdef0123456789abcdef"}')
    send_udp(daemon.udp_port, raw_frame(payload))
    send_tcp(daemon.tcp_port, raw_frame(payload))
    send_udp(daemon.udp_port, signed_frame('signed', 'after', SECRETS[0]))
    assert [line_body(l) for l in wait_for_lines(daemon.log_file('signed'), 1)] == ['after']
    assert rejected(status(daemon)) == {'bad_signature': 2}
    assert daemon.proc.poll() is None
    assert daemon.stop() == 0


# -- the daemon's own files ----------------------------------------------------------------------

def test_files_and_folders_are_private_even_under_umask_0(daemon_factory):
    old_umask = os.umask(0)
    try:
        daemon = start(daemon_factory)
    finally:
        os.umask(old_umask)
    send_tcp(daemon.tcp_port, frame('app', 'x') + frame('perhost', 'y', host='h1')
             + frame('signed', 'z', secret=SECRETS[0]))
    wait_for_lines(daemon.logdir / 'perhost' / 'h1-root.log', 1)
    wait_for_lines(daemon.log_file('signed'), 1)
    status(daemon)
    daemon.reload()
    checked = []
    for top in (daemon.logdir, daemon.workdir, daemon.rundir):
        for folder, dirs, files in os.walk(top):
            mode = stat.S_IMODE(os.stat(folder).st_mode)
            # Log folders are exactly 0750 (the adm group reads logs); the daemon's own
            # folders may be stricter.
            assert mode == 0o750 if top == daemon.logdir else not mode & 0o027, (folder, oct(mode))
            checked.append(folder)
            for name in files:
                path = os.path.join(folder, name)
                if path == str(daemon.rundir / 'loghogd.pid'):
                    continue   # a pidfile is public by convention; its folder is not
                mode = stat.S_IMODE(os.stat(path).st_mode)
                assert mode == 0o640 if top == daemon.logdir else not mode & 0o137, (path, oct(mode))
                assert os.stat(path).st_uid == os.getuid()
                checked.append(path)
    assert stat.S_IMODE(os.stat(daemon.daemon_log).st_mode) == 0o640
    assert any(p.endswith('listen.json') for p in checked)
    assert any(p.endswith('status.json') for p in checked)
    assert daemon.stop() == 0


def test_the_internal_log_never_echoes_a_secret(daemon_factory, tmp_path):
    daemon = start(daemon_factory)   # [log] level = DEBUG
    root_secret, own_secret = SECRETS
    send_tcp(daemon.tcp_port, b''.join([
        signed_frame('signed', 'ok', root_secret),
        frame('signed', 'unsigned'),
        signed_frame('signed', 'wrong', 'guess'),
        signed_frame('signed', 'other facility', own_secret),
        signed_frame('signed', 'own ok', own_secret, module='own'),
        signed_frame('signed', 'root in own', root_secret, module='own'),
    ]))
    send_udp(daemon.udp_port, signed_frame('signed', 'udp', root_secret))
    wait_for_lines(daemon.log_file('signed'), 2)
    daemon.signal(signal.SIGUSR1)
    status(daemon)
    daemon.reload(FACILITIES.replace('backup_count = 1\nsecret = TopSecret',
                                     'backup_count = many\nsecret = TopSecret'))
    assert 'still using the facilities loaded before' in daemon.output()
    texts = {'stderr': daemon.output(), 'daemon.log': daemon.daemon_log.read_text(),
             'status.json': (daemon.rundir / 'status.json').read_text(),
             'listen.json': (daemon.rundir / 'listen.json').read_text()}
    assert daemon.stop() == 0
    texts['stderr at exit'] = daemon.output()
    assert 'bad_signature' in texts['stderr'] and 'missing_signature' in texts['stderr']
    for name, text in texts.items():
        for secret in SECRETS:
            assert secret not in text, (name, secret)
