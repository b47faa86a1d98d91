"""The client over TLS, against in-test TLS servers using certificates made by the project's
own scripts (scripts/loghog-server-cert and scripts/loghog-client-cert)."""

import logging
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from loghog import LoghogHandler
from loghog.cli import main
from tests.unit.test_client_fakes import FrameServer

SCRIPTS = Path(__file__).resolve().parents[2] / 'scripts'

pytestmark = pytest.mark.skipif(shutil.which('openssl') is None, reason='needs the openssl command')


def make_ca(folder, domain):
    folder.mkdir()
    subprocess.run(['sh', str(SCRIPTS / 'loghog-server-cert'), domain], cwd=folder, check=True,
                   capture_output=True, timeout=60)
    return folder


@pytest.fixture(scope='module')
def pki(tmp_path_factory):
    """Our CA with a server and a client certificate, and a stranger CA with its own server."""
    base = tmp_path_factory.mktemp('pki')
    ours = make_ca(base / 'ours', 'loghog')
    subprocess.run(['sh', str(SCRIPTS / 'loghog-client-cert'), 'web1', '.'], cwd=ours,
                   check=True, capture_output=True, timeout=60)
    stranger = make_ca(base / 'stranger', 'stranger')
    return {'ca': ours / 'loghog-ca.cert', 'server': ours / 'loghog-server.pem',
            'client': ours / 'web1.pem', 'stranger_server': stranger / 'stranger-server.pem'}


def server_context(pki, server_pem):
    """What loghogd does: present ``server_pem``, require a client certificate from our CA."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(server_pem)
    context.load_verify_locations(pki['ca'])
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def ssl_info(pki):
    return {'pemfile': str(pki['client']), 'cacert': str(pki['ca'])}


def send_one(handler, text):
    """Log ``text`` through ``handler`` and close it (sends what it can, within its bound)."""
    handler.handle(logging.makeLogRecord({'name': 'tls', 'msg': text}))
    handler.close()


@pytest.mark.parametrize('host', ['127.0.0.1', '::1'])
def test_handler_delivers_over_mutual_tls(pki, host):
    with FrameServer(host, ssl_context=server_context(pki, pki['server'])) as server:
        send_one(LoghogHandler('app', host, server.port, ssl_info=ssl_info(pki)), 'secret stuff')
        assert server.wait_for(1)[0]['body'] == 'secret stuff'
        assert server.errors == []


def test_hostname_check_can_be_turned_on(pki):
    with FrameServer(ssl_context=server_context(pki, pki['server'])) as server:
        info = dict(ssl_info(pki), check_hostname=True)
        send_one(LoghogHandler('app', 'localhost', server.port, ssl_info=info), 'checked')
        assert server.wait_for(1)[0]['body'] == 'checked'


@pytest.mark.parametrize('impostor', ['stranger_server', 'client'])
def test_handler_refuses_a_server_our_ca_did_not_certify_as_a_server(pki, impostor, capsys):
    """A server certificate from another CA, or our own client certificate (extended key
    usage clientAuth only) presented by a server, must not receive anything."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki[impostor])
    with FrameServer(ssl_context=context) as server:
        handler = LoghogHandler('app', '127.0.0.1', server.port, ssl_info=ssl_info(pki),
                                print_debug=True, close_timeout_s=0.3)
        send_one(handler, 'must not leak')
    assert server.messages == []
    assert 'certificate verify failed' in capsys.readouterr().err


def test_tls_server_restart_mid_stream(pki):
    context = server_context(pki, pki['server'])
    first = FrameServer(ssl_context=context)
    handler = LoghogHandler('app', '127.0.0.1', first.port, ssl_info=ssl_info(pki),
                            retry_min_s=0.05, retry_max_s=0.2)
    try:
        handler.handle(logging.makeLogRecord({'msg': 'one'}))
        assert handler.flush()  # acknowledged: not sent again to the second server
        first.stop()
        handler.handle(logging.makeLogRecord({'msg': 'two'}))
        with FrameServer(port=first.port, ssl_context=context) as second:
            assert second.wait_for(1)[0]['body'] == 'two'
    finally:
        handler.close()


def test_command_over_tls(pki, capsys):
    with FrameServer(ssl_context=server_context(pki, pki['server'])) as server:
        status = main(['-a', 'app', '-H', '127.0.0.1', '-p', str(server.port), '--tls',
                       '--pem', str(pki['client']), '--ca', str(pki['ca']), 'over', 'TLS'])
        assert status == 0, capsys.readouterr().err
        assert server.wait_for(1)[0]['body'] == 'over TLS'


def test_command_reports_a_refused_certificate(pki, capsys):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki['stranger_server'])
    with FrameServer(ssl_context=context) as server:
        status = main(['-a', 'app', '-H', '127.0.0.1', '-p', str(server.port), '--tls',
                       '--pem', str(pki['client']), '--ca', str(pki['ca']), '--timeout', '0.5',
                       'hello'])
    assert status == 69
    err = capsys.readouterr().err
    assert f'loghog: 1 messages not delivered to tls://127.0.0.1:{server.port} (1 never ' \
        f'sent): cannot connect to tls://127.0.0.1:{server.port}:' in err
    assert 'certificate verify failed' in err


def test_command_reports_unreadable_tls_files(tmp_path, capsys):
    status = main(['-a', 'app', '--tls', '--pem', str(tmp_path / 'nope.pem'),
                   '--ca', str(tmp_path / 'nope.cert'), 'hello'])
    assert status == 66
    assert 'loghog: cannot load the TLS files:' in capsys.readouterr().err
