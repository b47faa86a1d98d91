"""docs/security.md's event names and TLS log line, and docs/client.md's renewed
certificates, read back from a running daemon.

"Hostile input" names what each defence counts in ``loghogd status --json`` (``events``):
``frame_timeouts``, ``idle_timeouts``, ``handshakes_evicted``; plain text on the TLS port
counts under ``tls_handshake_failures``.  "5. Check it": with ``[log] level = DEBUG`` each TLS
client that gets in is logged with its protocol, cipher and certificate name.  The
behaviour behind each name is tested elsewhere (test_hostile, test_slots, test_tls); this
checks the names an operator greps for.  Defaults throughout, except the two timeouts the
events need (1 s instead of 30 s and never) and a status written every 0.2 s.
"""

import json
import re
import shutil
import socket
import ssl

import pytest

from loghog import LoghogHandler
from tests.support import frame, line_body, make_certs, wait_for, wait_for_lines

pytestmark = pytest.mark.skipif(shutil.which('openssl') is None, reason='needs the openssl command')

MAX_HANDSHAKES = 128     # the default of [server] max_handshakes, not set below


@pytest.fixture(scope='module')
def pki(tmp_path_factory):
    folder = make_certs(tmp_path_factory.mktemp('promises-pki'), 'web1', 'web2')
    return {'ca': folder / 'loghog-ca.cert', 'server': folder / 'loghog-server.pem',
            'client': folder / 'web1.pem', 'renewed': folder / 'web2.pem'}


def status_of(daemon):
    path = daemon.rundir / 'status.json'
    return json.loads(path.read_text()) if path.exists() else {}


def event(daemon, name):
    return status_of(daemon).get('events', {}).get(name, 0)


def test_the_events_and_the_tls_line_security_md_names(daemon_factory, pki):
    daemon = daemon_factory(
        server={'listen_ipv4_ssl': '127.0.0.1:0', 'pemfile': str(pki['server']),
                'cacert': str(pki['ca']), 'frame_timeout': '1', 'idle_timeout': '1'},
        sections={'stats': {'interval': '0.2'}, 'log': {'filename': 'daemon.log', 'level': 'DEBUG'}})
    assert 'max_handshakes' not in daemon.config_path.read_text()
    # A good TLS client gets in and is logged with protocol, cipher and certificate name.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cafile=str(pki['ca']))
    context.load_cert_chain(str(pki['client']))
    with context.wrap_socket(socket.create_connection(('127.0.0.1', daemon.tls_port), timeout=10)) as good:
        good.sendall(frame('app', 'over tls'))
        assert [line_body(l) for l in wait_for_lines(daemon.log_file('app'), 1)] == ['over tls']
        version, cipher = good.version(), good.cipher()[0]
    assert re.search(r"DEBUG: TLS connection from 127\.0\.0\.1:\d+: %s, %s, client 'web1'"
                     % (re.escape(version), re.escape(cipher)), daemon.output()), daemon.output()[-2000:]
    # A frame started and never finished: frame_timeouts.  A connection that sends nothing:
    # idle_timeouts.  Plain text on the TLS port: tls_handshake_failures.
    slow = socket.create_connection(('127.0.0.1', daemon.tcp_port), timeout=10)
    slow.sendall(frame('app', 'never finished')[:6])
    idle = socket.create_connection(('127.0.0.1', daemon.tcp_port), timeout=10)
    plain = socket.create_connection(('127.0.0.1', daemon.tls_port), timeout=10)
    plain.sendall(b'GET / HTTP/1.1\r\nHost: x\r\n\r\n')
    wait_for(lambda: event(daemon, 'frame_timeouts') >= 1 and event(daemon, 'idle_timeouts') >= 1,
             timeout=15, message='frame_timeouts and idle_timeouts')
    wait_for(lambda: status_of(daemon)['connections']['tls_handshake_failures'] >= 1,
             timeout=15, message='tls_handshake_failures')
    # One more handshake in progress than max_handshakes: the oldest makes room.
    held = [socket.create_connection(('127.0.0.1', daemon.tls_port), timeout=10)
            for _ in range(MAX_HANDSHAKES + 1)]
    try:
        wait_for(lambda: event(daemon, 'handshakes_evicted') >= 1, timeout=15,
                 message='handshakes_evicted')
    finally:
        for sock in held + [slow, idle, plain]:
            sock.close()
    assert daemon.stop() == 0


def test_the_client_reads_its_tls_files_again_for_each_new_connection(daemon_factory, pki,
                                                                       tmp_path, make_logger):
    # docs/client.md, TLS: "The files are read again for each new connection, so renewed
    # certificates are picked up without a restart."  The daemon's idle_timeout closes the
    # handler's connection; the record after it comes on a new one, with the new file.
    daemon = daemon_factory(
        server={'listen_ipv4_ssl': '127.0.0.1:0', 'pemfile': str(pki['server']),
                'cacert': str(pki['ca']), 'idle_timeout': '1'},
        sections={'stats': {'interval': '0.2'}, 'log': {'filename': 'daemon.log', 'level': 'DEBUG'}})
    pemfile = tmp_path / 'client.pem'
    shutil.copyfile(pki['client'], pemfile)
    handler = LoghogHandler('app', '127.0.0.1', daemon.tls_port,
                            ssl_info={'pemfile': str(pemfile), 'cacert': str(pki['ca'])})
    logger = make_logger(handler)
    logger.warning('with the first certificate')
    wait_for_lines(daemon.log_file('app'), 1)
    assert "client 'web1'" in daemon.output()
    shutil.copyfile(pki['renewed'], pemfile)               # renewed in place
    wait_for(lambda: event(daemon, 'idle_timeouts') >= 1, timeout=15, message='the idle close')
    logger.warning('with the renewed certificate')
    lines = wait_for_lines(daemon.log_file('app'), 2)
    assert [line.split(' - ', 2)[2] for line in lines] == [
        'with the first certificate', 'with the renewed certificate']
    assert "client 'web2'" in daemon.output()
    assert daemon.stop() == 0
