"""Identities bound to apps (issue 19): ``allowed_clients`` against a real daemon over TLS.

What a sysadmin relies on: a certificate of our CA whose name is not in an app's
allowed_clients cannot log to that app or its sub-facilities (refused, counted by reason and
by certificate name, nothing in the file), while a matching one is written; a plain TCP
sender has no identity and is refused there too; apps without the option are as before.
"""

import json
import shutil

import pytest

from loghog.wire import FLAG_ACK, HEADER, parse_ack
from tests.integration.test_tls import client_context, tls_connect, tls_options
from tests.support import frame, line_body, make_certs, read_lines, send_tcp, wait_for

pytestmark = pytest.mark.skipif(shutil.which('openssl') is None, reason='needs the openssl command')

FACILITIES = """
[shop]
rotate = daily
backup_count = 3
allowed_clients = shop-*
[shop:payments]
rotate = daily
backup_count = 3
[open]
rotate = daily
backup_count = 3
"""


@pytest.fixture(scope='module')
def pki(tmp_path_factory):
    base = make_certs(tmp_path_factory.mktemp('identity-pki'), 'shop-1', 'intruder-1')
    return {'ca': base / 'loghog-ca.cert', 'server': base / 'loghog-server.pem',
            'shop': base / 'shop-1.pem', 'intruder': base / 'intruder-1.pem'}


def bodies(path):
    return [line_body(line) for line in read_lines(path)] if path.exists() else []


def snapshot(daemon):
    try:
        return json.loads((daemon.rundir / 'status.json').read_text())
    except (FileNotFoundError, ValueError):
        return None


def send_with_acks(sock, frames):
    """Send ``frames`` with FLAG_ACK on ``sock`` and return the acks' rejections once every
    frame is acknowledged: {frame number: reason}."""
    data = b''.join(HEADER.pack(len(f) - HEADER.size, FLAG_ACK) + f[HEADER.size:] for f in frames)
    sock.sendall(data)
    rejected, acked, buffer = {}, 0, b''
    while acked < len(frames):
        buffer += sock.recv(65536)
        while len(buffer) >= HEADER.size:
            size, flags = HEADER.unpack_from(buffer)
            if len(buffer) < HEADER.size + size:
                break
            ack = parse_ack(flags, buffer[HEADER.size:HEADER.size + size])
            buffer = buffer[HEADER.size + size:]
            acked = ack['ack']
            rejected.update({n: reason for n, reason in ack.get('rejected', ())})
    return rejected


def test_a_certificate_not_in_allowed_clients_is_refused_and_counted_a_matching_one_written(
        daemon_factory, pki):
    daemon = daemon_factory(FACILITIES, server=tls_options(pki),
                            sections={'stats': {'interval': '0.2'}})
    with tls_connect(daemon.tls_port, client_context(pki, 'shop')) as shop:
        assert send_with_acks(shop, [frame('shop', 'shop root'),
                                     frame('shop', 'shop payment', module='payments.card'),
                                     frame('open', 'shop in open')]) == {}
    with tls_connect(daemon.tls_port, client_context(pki, 'intruder')) as intruder:
        rejected = send_with_acks(intruder, [
            frame('shop', 'intruder root'),
            frame('shop', 'intruder payment', module='payments'),   # inherited by the sub-facility
            frame('open', 'intruder in open')])
    assert rejected == {1: 'client_not_allowed', 2: 'client_not_allowed'}
    # Plain TCP has no identity: refused where allowed_clients is set, the sentinel after
    # it (to an app without the option) is written.
    send_tcp(daemon.tcp_port, frame('shop', 'plain root') + frame('open', 'plain sentinel'))
    wait_for(lambda: 'plain sentinel' in bodies(daemon.log_file('open')), message='sentinel')

    assert bodies(daemon.log_file('shop')) == ['shop root']
    assert bodies(daemon.log_file('shop', 'payments')) == ['shop payment']
    assert bodies(daemon.log_file('open')) == ['shop in open', 'intruder in open',
                                               'plain sentinel']
    status = wait_for(lambda: (lambda s: s if s and s['totals']['rejected'] == 3 else None)(
        snapshot(daemon)), message='the refusals in status.json')
    assert {r['reason']: r['messages'] for r in status['rejected']} == {'client_not_allowed': 3}
    assert {r['client']: r['messages'] for r in status['refused_clients']} == {
        'intruder-1': 2, '(none)': 1}
    assert "certificate 'intruder-1' may not log to [shop]" in daemon.daemon_log.read_text()
    assert daemon.stop() == 0
