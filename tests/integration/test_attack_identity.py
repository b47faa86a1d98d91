"""Attacks on issue 19's identities and v2 signatures against a real daemon with default
settings: what an outside tester would try first."""

import shutil
import socket
import ssl
import time

import pytest

from loghog import wire
from loghog.signing import V2Signer
from tests.integration.attack import syslog_tools
from tests.support import line_body, make_certs, read_lines, wait_for

STRICT = """
[strict]
rotate = daily
backup_count = 3
secret = s3cret
require_signature = v2
syslog_programs = strict

[plain]
rotate = daily
backup_count = 3
syslog_programs = pl

[other]
rotate = daily
backup_count = 3
secret = 0ther-secret
"""


def bodies(path):
    return [line_body(line) for line in read_lines(path)] if path.exists() else []


@pytest.fixture(scope='module')
def pki(tmp_path_factory):
    if shutil.which('openssl') is None:
        pytest.skip('needs the openssl command')
    base = make_certs(tmp_path_factory.mktemp('attack-identity-pki'), 'web1')
    return {'ca': base / 'loghog-ca.cert', 'server': base / 'loghog-server.pem',
            'client': base / 'web1.pem'}


def test_unsigned_syslog_over_tls_is_refused_where_v2_signatures_are_required(tmp_path, pki):
    """A4-8: README: "require_signature = v2 refuses v1 and unsigned messages";
    docs/security.md: a v2 signature covers every byte, host name included.  Syslog
    carries no signature, yet any certificate of the CA (allowed_clients unset, the
    default) wrote unsigned lines, under any HOSTNAME, into such a facility that claims a
    syslog program.  Now refused as ``v2_signature_required`` (syslog_listeners.py)."""
    server = {'pemfile': str(pki['server']), 'cacert': str(pki['ca'])}
    daemon = syslog_tools.start(tmp_path, STRICT, server, listen_tls='127.0.0.1:0')
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.load_verify_locations(cafile=str(pki['ca']))
        context.load_cert_chain(str(pki['client']))
        raw = socket.create_connection(('127.0.0.1', daemon.port('syslog_tls')), timeout=10)
        with context.wrap_socket(raw) as sock:
            sock.sendall(b'<14>1 - bank-db strict - - - unsigned, with a host name of my choice\n'
                         b'<14>pl: sentinel\n')
        wait_for(lambda: bodies(daemon.log_file('plain')), 10, message='the sentinel')
        assert bodies(daemon.log_file('strict')) == []
        wait_for(lambda: 'v2_signature_required' in daemon.output(), 10,
                 message='the refusal logged')
    finally:
        assert daemon.stop() == 0


def v2_frame(app, secret, session, seq, body):
    frame = wire.MessageEncoder(app, 'web1').encode('root', 1700000000, 0, body, None)
    return V2Signer(secret).sign_frame(frame, session, seq, int(time.time() * 1000))


def test_a_session_used_for_another_facility_does_not_make_a_clients_messages_replays(
        daemon_factory):
    """A4-9: the daemon remembered which (session, number) of v2 messages it wrote, keyed by
    the session alone, whatever the facility and secret.  A client of app ``other`` (it
    knows only other's secret) that saw a victim's session id (sent in clear in the session
    frame on plain TCP, and the numbers count from 1) signs frames for its own app with that
    session and the next numbers: the victim's messages to ``strict`` are then refused as
    ``replayed``.  Now the memory is keyed by the facility's secret and the session
    (signature_v2.ReplayGuard, server.take_signed)."""
    daemon = daemon_factory(STRICT)
    victim_session = bytes.fromhex('00112233445566778899aabbccddeeff')
    with socket.create_connection(('127.0.0.1', daemon.tcp_port)) as sock:
        sock.sendall(b''.join(v2_frame('other', '0ther-secret', victim_session, seq, 'squat %d' % seq)
                              for seq in (1, 2, 3)))
    wait_for(lambda: len(bodies(daemon.log_file('other'))) == 3, 10, message='the squatter')
    with socket.create_connection(('127.0.0.1', daemon.tcp_port),
                                  source_address=('127.0.0.2', 0)) as sock:
        sock.sendall(v2_frame('strict', 's3cret', victim_session, 1, 'the victim writes')
                     + v2_frame('strict', 's3cret', bytes(16), 1, 'sentinel'))
    wait_for(lambda: 'sentinel' in bodies(daemon.log_file('strict')), 10, message='sentinel')
    assert bodies(daemon.log_file('strict')) == ['the victim writes', 'sentinel']


def rejected(daemon):
    import json
    try:
        status = json.loads((daemon.rundir / 'status.json').read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return {r['reason']: r['messages'] for r in status['rejected']}


def test_unsigned_and_stale_frames_are_refused_over_udp_where_v2_is_required(daemon_factory):
    """No finding: over our UDP port, a facility with ``require_signature = v2`` refuses an
    unsigned frame and a v2 frame signed just past ``max_clock_skew`` (300 s: 302 s ago),
    and takes one signed just within it (295 s ago)."""
    daemon = daemon_factory(STRICT, sections={'stats': {'interval': '0.2'}})
    session = bytes.fromhex('0f' * 16)
    now_ms = int(time.time() * 1000)
    unsigned = wire.MessageEncoder('strict', 'web1').encode('root', 1700000000, 0, 'unsigned',
                                                            None)
    frame = wire.MessageEncoder('strict', 'web1').encode('root', 1700000000, 0, 'stale', None)
    stale = V2Signer('s3cret').sign_frame(frame, session, 1, now_ms - 302000)
    frame = wire.MessageEncoder('strict', 'web1').encode('root', 1700000000, 0, 'in time', None)
    in_time = V2Signer('s3cret').sign_frame(frame, session, 2, now_ms - 295000)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for datagram in (unsigned, stale, in_time, v2_frame('strict', 's3cret', session, 3,
                                                             'sentinel')):
            sock.sendto(datagram, ('127.0.0.1', daemon.udp_port))
    wait_for(lambda: 'sentinel' in bodies(daemon.log_file('strict')), 10, message='sentinel')
    assert bodies(daemon.log_file('strict')) == ['in time', 'sentinel']
    wait_for(lambda: sum(rejected(daemon).values()) == 2, 10, message='the refusals')
    assert rejected(daemon) == {'v2_signature_required': 1, 'clock_skew': 1}


def test_max_connections_per_peer_caps_an_ipv6_address_too(daemon_factory):
    """No finding: the per-address cap holds on an IPv6 listener (the default listens on
    [::1] too), and the IPv4 and IPv6 loopback addresses are two peers (listeners are
    IPV6_V6ONLY: no IPv4-mapped address counts as a third)."""
    daemon = daemon_factory(server={'max_connections_per_peer': '3',
                                    'listen_ipv6': '[::1]:0'})
    ports = {host: port for host, port in daemon.addresses['tcp']}
    assert set(ports) == {'127.0.0.1', '::1'}, daemon.addresses
    v4 = socket.create_connection(('127.0.0.1', ports['127.0.0.1']), timeout=10)
    v6 = [socket.create_connection(('::1', ports['::1']), timeout=10) for _ in range(5)]
    try:
        from tests.support import frame
        v6[-1].sendall(frame('app', 'newest over ipv6'))
        v4.sendall(frame('app', 'over ipv4'))
        wait_for(lambda: {'newest over ipv6', 'over ipv4'} <= set(bodies(daemon.log_file('app'))),
                 10, message='both lines')
        for sock in v6[:2]:         # the two oldest of ::1 made room for its newer ones
            sock.settimeout(10)
            assert sock.recv(100) == b''
    finally:
        for sock in v6 + [v4]:
            sock.close()
    assert daemon.stop() == 0
