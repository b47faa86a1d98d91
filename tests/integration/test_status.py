"""`loghogd status` and the Prometheus file against real daemons: traffic of a known shape in,
exact counts out."""

import json
import shutil
import socket
import ssl
import subprocess
import sys

import pytest

from loghog.wire import FLAG_ZLIB, HEADER, HEADER_SIZE, make_payload
from tests.support import (each_workers, ROOT, frame, make_certs, read_lines, send_tcp, send_udp, wait_for,
                           wait_for_lines)

pytestmark = each_workers

FACILITIES = """
[app]
rotate = daily
backup_count = 3

[app:web]
rotate = hourly
backup_count = 2

[signed]
rotate = daily
backup_count = 3
secret = s3cret
"""

STATS = {'stats': {'interval': '0.2'}}


def raw(payload, flags=0):
    return HEADER.pack(len(payload), flags) + payload


def status(daemon, *options):
    """Run `loghogd status` as a user would; return (exit status, stdout, stderr)."""
    result = subprocess.run([sys.executable, '-m', 'loghogd', 'status', '-c',
                             str(daemon.config_path), *options], cwd=str(ROOT),
                            capture_output=True, text=True, timeout=30)
    return result.returncode, result.stdout, result.stderr


def published(daemon):
    """The snapshot the daemon last wrote, or None."""
    try:
        return json.loads((daemon.rundir / 'status.json').read_text())
    except (FileNotFoundError, ValueError):
        return None


def wait_for_snapshot(daemon, condition, message, timeout=15.0):
    return wait_for(lambda: (lambda s: s if s and condition(s) else None)(published(daemon)),
                    timeout, message=message)


@pytest.fixture(scope='module')
def pki(tmp_path_factory):
    """A CA, a server and a client certificate (web1), made by the project's scripts."""
    if shutil.which('openssl') is None:
        pytest.skip('needs the openssl command')
    return make_certs(tmp_path_factory.mktemp('pki'), 'web1')


def test_status_counts_every_kind_of_traffic_exactly(daemon_factory, pki, tmp_path):
    prometheus_file = tmp_path / 'textfile' / 'loghogd.prom'   # node_exporter's folder
    prometheus_file.parent.mkdir()
    sections = {'stats': {'interval': '0.2', 'prometheus_file': str(prometheus_file)}}
    daemon = daemon_factory(FACILITIES, sections=sections, server={
        'max_message_size': '1K', 'listen_ipv4_ssl': '127.0.0.1:0',
        'pemfile': str(pki / 'loghog-server.pem'), 'cacert': str(pki / 'loghog-ca.cert')})
    accepted = [frame('app', 'one'), frame('app', 'two'), frame('app', 'three'),
                frame('app', 'w1', module='web'), frame('app', 'w2', module='web.api'),
                frame('signed', 'good', secret='s3cret')]
    rejected = {
        'bad_flags': raw(make_payload('app', 'root', 1, 0, 'web1', 'x'), 0x80),
        'too_large': frame('app', 'x' * 2000),
        'bad_zlib': raw(b'not zlib at all', FLAG_ZLIB),
        'bad_utf8': raw(b'\xff\xfe'),
        'bad_json': raw(b'{'),
        'bad_fields': raw(b'[]'),
        'unknown_app': frame('nope', 'x'),
        'missing_signature': frame('signed', 'unsigned'),
        'bad_signature': frame('signed', 'forged', secret='guess'),
    }
    send_tcp(daemon.tcp_port, b''.join(accepted[:3]) + b''.join(rejected.values())
             + b''.join(accepted[3:]))
    send_tcp(daemon.tcp_port, HEADER.pack(64 * 1024 * 1024, 0))          # lost_framing
    for body in ('udp 1', 'udp 2'):
        send_udp(daemon.udp_port, frame('app', body))
    send_udp(daemon.udp_port, b'abc')                                    # bad_datagram
    with socket.create_connection(('127.0.0.1', daemon.tls_port)) as sock:  # not TLS at all
        sock.sendall(b'GET / HTTP/1.0\r\n\r\n')
        wait_until_closed_by_peer(sock)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(str(pki / 'loghog-ca.cert'))
    context.load_cert_chain(str(pki / 'web1.pem'))
    context.check_hostname = False
    tls_frame = frame('app', 'over tls')
    with context.wrap_socket(socket.create_connection(('127.0.0.1', daemon.tls_port))) as sock:
        sock.sendall(tls_frame)
    held_open = socket.create_connection(('127.0.0.1', daemon.tcp_port))
    try:
        wait_for_lines(daemon.log_file('app'), 6)
        wait_for_snapshot(daemon, lambda s: s['totals']['rejected'] == 11
                          and s['connections']['open'] == {'tcp': 1, 'tls': 0},
                          'all traffic in the snapshot')
        code, out, err = status(daemon, '--json')
        assert code == 0, err
        snapshot = json.loads(out)
        payload = lambda f: len(f) - HEADER_SIZE
        root_bytes = sum(map(payload, accepted[:3])) + 2 * payload(frame('app', 'udp 1')) \
            + payload(tls_frame)
        assert snapshot['accepted'] == [
            {'app': 'app', 'facility': 'root', 'messages': 6, 'bytes': root_bytes,
             'messages_last_minute': 6, 'bytes_last_minute': root_bytes},
            {'app': 'app', 'facility': 'web', 'messages': 2,
             'bytes': payload(accepted[3]) + payload(accepted[4]),
             'messages_last_minute': 2, 'bytes_last_minute': payload(accepted[3])
             + payload(accepted[4])},
            {'app': 'signed', 'facility': 'root', 'messages': 1, 'bytes': payload(accepted[5]),
             'messages_last_minute': 1, 'bytes_last_minute': payload(accepted[5])}]
        expected_reasons = dict.fromkeys(rejected, 1)
        expected_reasons.update(lost_framing=1, bad_datagram=1)
        assert {r['reason']: r['messages'] for r in snapshot['rejected']} == expected_reasons
        assert snapshot['rejected_by_peer'] == [{'peer': '127.0.0.1', 'messages': 11}]
        connections = snapshot['connections']
        assert connections['open'] == {'tcp': 1, 'tls': 0}
        assert connections['accepted'] == {'tcp': 3, 'tls': 2}
        assert connections['tls_handshake_failures'] == 1
        assert snapshot['udp']['datagrams'] == 3
        assert snapshot['udp']['kernel_drops'] == 0
        assert snapshot['daemon']['pid'] == daemon.pid
        assert {f['path'] for f in snapshot['files']} == {
            str(daemon.log_file('app')), str(daemon.log_file('app', 'web')),
            str(daemon.log_file('signed'))}
        assert_prometheus_agrees(prometheus_file, snapshot)

        code, out, err = status(daemon)
        assert code == 0, err
        assert 'running as PID %d' % daemon.pid in out.splitlines()[0]
        assert 'TLS handshakes failed: 1' in out
        code, out, err = status(daemon, '--brief')
        assert code == 0 and out.startswith('PID %d, up ' % daemon.pid) and '1 connections' in out
    finally:
        held_open.close()
    assert daemon.stop() == 0
    assert not (daemon.rundir / 'status.json').exists()
    assert_prometheus_agrees(prometheus_file, snapshot)    # the final counts stay for node_exporter
    code, out, err = status(daemon)
    assert code == 3
    assert out.startswith('loghogd is not running: no status in ')


def wait_until_closed_by_peer(sock):
    sock.settimeout(10)
    try:
        for _ in range(100):
            if not sock.recv(4096):
                return
    except ConnectionResetError:
        return
    raise AssertionError('the daemon kept the connection open')


def assert_prometheus_agrees(path, snapshot):
    parser = pytest.importorskip('prometheus_client.parser')
    values = {}
    for family in parser.text_string_to_metric_families(path.read_text()):
        for s in family.samples:
            values[(s.name, tuple(sorted(s.labels.items())))] = s.value
    for row in snapshot['accepted']:
        labels = (('app', row['app']), ('facility', row['facility']))
        assert values[('loghogd_messages_total', labels)] == row['messages']
        assert values[('loghogd_message_bytes_total', labels)] == row['bytes']
    for row in snapshot['rejected']:
        assert values[('loghogd_rejected_total', (('reason', row['reason']),))] == row['messages']
    assert values[('loghogd_connections_accepted_total', (('transport', 'tls'),))] == 2
    assert values[('loghogd_tls_handshake_failures_total', ())] == 1
    assert values[('loghogd_udp_kernel_drops_total', ())] == 0


def test_udp_beyond_the_receive_buffer_shows_as_kernel_drops(daemon_factory):
    daemon = daemon_factory(sections=STATS, server={'udp_receive_buffer': '4K',
                                                    'listen_ipv6': '[::1]:0'})
    sent = 0
    # The kernel queues until the buffer is full, then drops.  With workers = 2 the
    # receivers read UDP: they are stopped too, or one reads a socket empty while another
    # fills (the run that failed in CI).
    with daemon.stopped():
        for host, port in (('127.0.0.1', daemon.port('udp', 0)), ('::1', daemon.port('udp', 1))):
            family = socket.AF_INET6 if ':' in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                for n in range(150):
                    sock.sendto(frame('app', 'flood %d %s' % (n, 'x' * 100)), (host, port))
                    sent += 1
    snapshot = wait_for_snapshot(
        daemon, lambda s: s['totals']['accepted'] + (s['udp']['kernel_drops'] or 0) == sent,
        'accepted + kernel drops == sent')
    drops = snapshot['udp']['kernel_drops']
    assert 0 < drops < sent
    # IPv4 and IPv6 alike (with workers = 2 each address has a socket per receiver: the
    # one its sender is hashed to has them).
    addresses = {s['address'] for s in snapshot['udp']['sockets']}
    assert len(addresses) == 2
    assert all(sum(s['drops'] for s in snapshot['udp']['sockets'] if s['address'] == address)
               for address in addresses)
    assert snapshot['udp']['datagrams'] == sent - drops
    assert len(wait_for_lines(daemon.log_file('app'), sent - drops)) == sent - drops
    code, out, err = status(daemon)
    assert code == 0, err
    assert 'kernel drops in all: %d' % drops in out
    assert daemon.stop() == 0


def test_status_of_a_killed_daemon_exits_3(daemon_factory):
    daemon = daemon_factory(sections=STATS)
    wait_for(lambda: published(daemon), message='a first snapshot')
    daemon.kill()                      # SIGKILL: no chance to remove status.json
    assert (daemon.rundir / 'status.json').exists()
    code, out, err = status(daemon)
    assert code == 3
    assert 'loghogd is not running: PID %d, which wrote' % daemon.pid in out
    assert 'has gone' in out
    assert read_lines(daemon.daemon_log)   # the daemon did run
