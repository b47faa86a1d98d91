"""Identities bound to apps (issue 19): ``allowed_clients`` against a real daemon over TLS.

What a sysadmin relies on: a certificate of our CA whose name is not in an app's
allowed_clients cannot log to that app or its sub-facilities (refused, counted by reason and
by certificate name, nothing in the file), while a matching one is written; a plain TCP
sender has no identity and is refused there too; apps without the option are as before.
"""

import json
import logging
import re
import shutil
import socket
import subprocess
import sys

import pytest

from loghog.handler import LoghogHandler
from loghog.wire import FLAG_ACK, HEADER, parse_ack
from tests.integration.test_tls import client_context, tls_connect, tls_options
from tests.support import ROOT, frame, line_body, make_certs, read_lines, send_tcp, wait_for

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
    shown = subprocess.run([sys.executable, '-m', 'loghogd', 'status', '-c',
                            str(daemon.config_path)], cwd=str(ROOT), capture_output=True,
                           text=True, timeout=30).stdout
    assert re.search(r'CLIENT CERTIFICATE\s+REFUSED\n\s*intruder-1\s+2\n\s*\(none\)\s+1',
                     shown), shown
    assert daemon.stop() == 0


def syslog_over_tls(daemon, pki, name, data):
    context = client_context(pki, name)
    raw = socket.create_connection(('127.0.0.1', daemon.port('syslog_tls')), timeout=10)
    with context.wrap_socket(raw) as sock:
        sock.sendall(data)


def test_syslog_over_tls_is_bound_to_allowed_clients_too_and_plain_syslog_refused(
        daemon_factory, pki):
    facilities = FACILITIES.replace('allowed_clients = shop-*',
                                    'allowed_clients = shop-*\nsyslog_programs = shopd')
    facilities = facilities.replace('[open]', '[open]\nsyslog_programs = openprog')
    daemon = daemon_factory(facilities, server=tls_options(pki), sections={
        'syslog': {'listen_tcp': '127.0.0.1:0', 'listen_tls': '127.0.0.1:0'}})
    syslog_over_tls(daemon, pki, 'shop', b'<14>shopd: from shop-1\n')
    syslog_over_tls(daemon, pki, 'intruder', b'<14>shopd: from intruder-1\n')
    with socket.create_connection(('127.0.0.1', daemon.port('syslog_tcp')), timeout=10) as sock:
        sock.sendall(b'<14>shopd: plain tcp\n<14>openprog: sentinel\n')
    wait_for(lambda: any('sentinel' in line for line in read_lines(daemon.log_file('open'))
                         if daemon.log_file('open').exists()), message='sentinel')
    wait_for(lambda: daemon.daemon_log.read_text().count('client_not_allowed') >= 2,
             message='both refusals logged')
    lines = read_lines(daemon.log_file('shop'))
    assert len(lines) == 1 and lines[0].endswith('shopd user.info: from shop-1')
    assert daemon.stop() == 0


def test_our_handler_over_tls_sees_its_refusal_and_a_reload_can_allow_it(daemon_factory, pki,
                                                                          capsys):
    daemon = daemon_factory(FACILITIES, server=tls_options(pki))
    ssl_info = {'pemfile': str(pki['intruder']), 'cacert': str(pki['ca'])}
    handler = LoghogHandler('shop', '127.0.0.1', daemon.tls_port, ssl_info=ssl_info)
    try:
        handler.handle(logging.makeLogRecord({'msg': 'refused'}))
        assert handler.flush() and handler.rejected == 1
        daemon.reload(FACILITIES.replace('shop-*', 'shop-*, intruder-1'))
        handler.handle(logging.makeLogRecord({'msg': 'allowed after the reload'}))
        assert handler.flush() and handler.rejected == 1
    finally:
        handler.close()
    assert re.search(r'the daemon rejected 1 messages: client_not_allowed \(1\)',
                     capsys.readouterr().err)
    assert bodies(daemon.log_file('shop')) == ['allowed after the reload']
    assert daemon.stop() == 0
