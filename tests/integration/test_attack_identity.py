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


@pytest.mark.xfail(strict=True, reason='A4-8: syslog over TLS is written to a facility that '
                                       'requires v2 signatures')
def test_unsigned_syslog_over_tls_is_refused_where_v2_signatures_are_required(tmp_path, pki):
    """A4-8: README: "require_signature = v2 refuses v1 and unsigned messages";
    docs/security.md: a v2 signature covers every byte, host name included.  Syslog
    carries no signature, yet any certificate of the CA (allowed_clients unset, the
    default) writes unsigned lines, under any HOSTNAME, into such a facility that claims a
    syslog program.  Fix (syslog_listeners.py, where ``found.secret`` is checked): refuse
    a facility with ``require_signature`` as ``v2_signature_required``."""
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


@pytest.mark.xfail(strict=True, reason="A4-9: v2 replay memory is keyed by session alone, "
                                       "across facilities and secrets")
def test_a_session_used_for_another_facility_does_not_make_a_clients_messages_replays(
        daemon_factory):
    """A4-9: the daemon remembers which (session, number) of v2 messages it wrote, keyed by
    the session alone, whatever the facility and secret.  A client of app ``other`` (it
    knows only other's secret) that saw a victim's session id (sent in clear in the session
    frame on plain TCP, and the numbers count from 1) signs frames for its own app with that
    session and the next numbers: the victim's messages to ``strict`` are then refused as
    ``replayed``.  Fix: key the memory by the facility's secret (its rate_key, or the signer)
    and the session: server.take_signed would pass the facility (server.py)."""
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
