"""The certificate commands scripts/loghog-server-cert and scripts/loghog-client-cert.

Each test runs the real scripts (and the real openssl) in a temporary folder and checks what a
sysadmin would see: the files, their modes, openssl's verdict, and whether Python's ssl with
VERIFY_X509_STRICT (the default from Python 3.13) completes a mutual TLS handshake with them.
"""

import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / 'scripts'
SERVER_CERT = SCRIPTS / 'loghog-server-cert'
CLIENT_CERT = SCRIPTS / 'loghog-client-cert'
TIMEOUT_S = 30

pytestmark = pytest.mark.skipif(shutil.which('openssl') is None, reason='needs the openssl command')


def run(script, *args, cwd, env=None, umask=0o022):
    """Run a cert script in `cwd`; return the CompletedProcess (never raises on failure)."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([str(script), *args], cwd=cwd, env=full_env, umask=umask,
                          capture_output=True, text=True, timeout=TIMEOUT_S)


def run_ok(script, *args, cwd, **kwargs):
    result = run(script, *args, cwd=cwd, **kwargs)
    assert result.returncode == 0, result.stderr
    return result


def mode(path):
    return path.stat().st_mode & 0o777


def openssl_text(path):
    return subprocess.run(['openssl', 'x509', '-in', str(path), '-noout', '-text'],
                          capture_output=True, text=True, check=True).stdout


def extension(text, name):
    """The header line and value line of one X.509v3 extension in `openssl x509 -text` output."""
    match = re.search(r'X509v3 %s:( critical)? *\n\s*(.*)\n' % re.escape(name), text)
    assert match, f'no {name} extension in:\n{text}'
    return bool(match.group(1)), match.group(2).strip()


@pytest.fixture(scope='module')
def pki(tmp_path_factory):
    """One CA with a server certificate and a client certificate, made by the scripts."""
    folder = tmp_path_factory.mktemp('pki')
    run_ok(SERVER_CERT, cwd=folder)
    run_ok(CLIENT_CERT, 'app1', cwd=folder)
    return folder


@pytest.fixture(scope='module')
def other_pki(tmp_path_factory):
    """A second, unrelated CA with its own client certificate."""
    folder = tmp_path_factory.mktemp('other-pki')
    run_ok(SERVER_CERT, cwd=folder)
    run_ok(CLIENT_CERT, 'intruder', cwd=folder)
    return folder


def server_context(pki):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    ctx.load_verify_locations(pki / 'loghog-ca.cert')
    ctx.load_cert_chain(pki / 'loghog-server.pem')
    return ctx


def client_context(ca_cert, client_pem=None):
    ctx = ssl.create_default_context(cafile=str(ca_cert))
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    if client_pem is not None:
        ctx.load_cert_chain(client_pem)
    return ctx


def handshake(server_ctx, client_ctx, server_hostname):
    """Run one TLS connection over 127.0.0.1; return (server_outcome, client_outcome).

    The server accepts one connection in a thread and sends b'ok'. Each outcome is the peer's
    certificate subject (server side) or the bytes received (client side), or the exception.
    """
    outcome = {}

    def serve(listener):
        conn, _ = listener.accept()
        conn.settimeout(TIMEOUT_S)
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                outcome['server'] = dict(pair[0] for pair in tls.getpeercert()['subject'])
                tls.sendall(b'ok')
                tls.recv(1)                     # wait for the client to close
        except (ssl.SSLError, OSError) as exc:
            outcome['server'] = exc
        finally:
            conn.close()

    with socket.create_server(('127.0.0.1', 0)) as listener:
        thread = threading.Thread(target=serve, args=(listener,))
        thread.start()
        try:
            with socket.create_connection(listener.getsockname(), timeout=TIMEOUT_S) as raw:
                try:
                    with client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
                        # With TLS 1.3 the server checks the client's certificate after the
                        # client's handshake has finished: a refusal arrives on the first read.
                        outcome['client'] = tls.recv(2)
                except (ssl.SSLError, OSError) as exc:
                    outcome['client'] = exc
        finally:
            thread.join(TIMEOUT_S)
    assert not thread.is_alive()
    return outcome['server'], outcome['client']


# loghog-server-cert

def test_server_cert_creates_ca_and_server_files_private_even_with_umask_0(tmp_path):
    result = run_ok(SERVER_CERT, cwd=tmp_path, umask=0)

    assert sorted(p.name for p in tmp_path.iterdir()) == [
        'loghog-ca.cert', 'loghog-ca.key', 'loghog-server.pem']      # nothing half-made left
    assert mode(tmp_path / 'loghog-ca.key') == 0o600
    assert mode(tmp_path / 'loghog-server.pem') == 0o600
    assert mode(tmp_path / 'loghog-ca.cert') == 0o644
    assert 'loghog-client-cert' in result.stdout                       # says what to do next


def test_server_pem_holds_key_and_certificate(pki):
    pem = (pki / 'loghog-server.pem').read_text()
    assert 'PRIVATE KEY-----' in pem and '-----BEGIN CERTIFICATE-----' in pem
    ca_key = (pki / 'loghog-ca.key').read_text()
    assert 'PRIVATE KEY-----' in ca_key and 'CERTIFICATE' not in ca_key


def test_server_cert_uses_the_given_domain(tmp_path):
    run_ok(SERVER_CERT, 'logs.example.com', cwd=tmp_path)

    assert sorted(p.name for p in tmp_path.iterdir()) == [
        'logs.example.com-ca.cert', 'logs.example.com-ca.key', 'logs.example.com-server.pem']
    _, san = extension(openssl_text(tmp_path / 'logs.example.com-server.pem'),
                       'Subject Alternative Name')
    assert 'DNS:logs.example.com' in san


def test_server_cert_refuses_to_overwrite_an_existing_ca(tmp_path):
    run_ok(SERVER_CERT, cwd=tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    result = run(SERVER_CERT, cwd=tmp_path)

    assert result.returncode != 0
    assert 'loghog-ca.key already exists' in result.stderr and '--force' in result.stderr
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_server_cert_refuses_when_only_the_ca_certificate_exists(tmp_path):
    (tmp_path / 'loghog-ca.cert').write_text('my precious CA\n')

    result = run(SERVER_CERT, cwd=tmp_path)

    assert result.returncode != 0
    assert (tmp_path / 'loghog-ca.cert').read_text() == 'my precious CA\n'
    assert [p.name for p in tmp_path.iterdir()] == ['loghog-ca.cert']


def test_server_cert_force_replaces_the_ca(tmp_path):
    run_ok(SERVER_CERT, cwd=tmp_path)
    old_ca = (tmp_path / 'loghog-ca.cert').read_bytes()

    run_ok(SERVER_CERT, '--force', cwd=tmp_path)

    assert (tmp_path / 'loghog-ca.cert').read_bytes() != old_ca
    assert mode(tmp_path / 'loghog-ca.key') == 0o600
    assert len(list(tmp_path.iterdir())) == 3


@pytest.mark.parametrize('domain', ['../evil', 'a/b', '-x', '', 'a b', 'a;b'])
def test_server_cert_rejects_domains_that_are_not_names(tmp_path, domain):
    result = run(SERVER_CERT, '--', domain, cwd=tmp_path)

    assert result.returncode != 0
    assert list(tmp_path.iterdir()) == []


def test_server_cert_help_and_bad_usage(tmp_path):
    assert 'usage: loghog-server-cert' in run_ok(SERVER_CERT, '--help', cwd=tmp_path).stdout
    assert run(SERVER_CERT, '--bogus', cwd=tmp_path).returncode == 2
    assert run(SERVER_CERT, 'a', 'b', cwd=tmp_path).returncode == 2


def test_ca_certificate_extensions(pki):
    text = openssl_text(pki / 'loghog-ca.cert')

    assert 'Version: 3 (0x2)' in text
    assert extension(text, 'Basic Constraints') == (True, 'CA:TRUE')
    assert extension(text, 'Key Usage') == (True, 'Certificate Sign, CRL Sign')
    assert extension(text, 'Subject Key Identifier')


def test_server_certificate_extensions(pki):
    text = openssl_text(pki / 'loghog-server.pem')

    assert extension(text, 'Basic Constraints') == (True, 'CA:FALSE')
    assert extension(text, 'Key Usage') == (True, 'Digital Signature, Key Encipherment')
    assert extension(text, 'Extended Key Usage') == (False, 'TLS Web Server Authentication')
    _, san = extension(text, 'Subject Alternative Name')
    for name in ('DNS:loghog', 'DNS:localhost', 'IP Address:127.0.0.1',
                 'IP Address:0:0:0:0:0:0:0:1', 'DNS:' + socket.gethostname()):
        assert name in san
    assert extension(text, 'Subject Key Identifier')
    assert extension(text, 'Authority Key Identifier')
    assert int(re.search(r'Public-Key: \((\d+) bit\)', text).group(1)) >= 2048


def test_certificates_are_valid_for_1000_years(pki):
    for name in ('loghog-ca.cert', 'loghog-server.pem', 'app1.pem'):
        end = subprocess.run(['openssl', 'x509', '-in', str(pki / name), '-noout', '-enddate'],
                             capture_output=True, text=True, check=True).stdout
        year = int(end.split()[-2])                 # notAfter=Mar 30 00:02:38 3026 GMT
        assert year >= 3020, end


def test_openssl_strict_verification_accepts_the_certificates(pki):
    for pem, purpose in (('loghog-server.pem', 'sslserver'), ('app1.pem', 'sslclient')):
        result = subprocess.run(
            ['openssl', 'verify', '-x509_strict', '-purpose', purpose,
             '-CAfile', str(pki / 'loghog-ca.cert'), str(pki / pem)],
            capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip() == f'{pki / pem}: OK'


def test_leaf_purposes_are_not_interchangeable(pki):
    result = subprocess.run(
        ['openssl', 'verify', '-x509_strict', '-purpose', 'sslclient',
         '-CAfile', str(pki / 'loghog-ca.cert'), str(pki / 'loghog-server.pem')],
        capture_output=True, text=True)
    assert result.returncode != 0


# loghog-client-cert

def test_client_certificate_extensions(pki):
    text = openssl_text(pki / 'app1.pem')

    # OpenSSL 3.0 (bookworm) prints 'O = LogHog', 3.5 (trixie) 'O=LogHog'.
    assert re.search(r'Subject: O ?= ?LogHog, CN ?= ?app1\n', text)
    assert extension(text, 'Basic Constraints') == (True, 'CA:FALSE')
    assert extension(text, 'Key Usage') == (True, 'Digital Signature, Key Encipherment')
    assert extension(text, 'Extended Key Usage') == (False, 'TLS Web Client Authentication')
    assert extension(text, 'Subject Alternative Name') == (False, 'DNS:app1')
    assert extension(text, 'Authority Key Identifier')
    assert extension(text, 'Subject Key Identifier')


def test_client_cert_is_private_even_with_umask_0(pki, tmp_path):
    run_ok(CLIENT_CERT, 'app2', str(pki), cwd=tmp_path, umask=0)

    assert [p.name for p in tmp_path.iterdir()] == ['app2.pem']
    assert mode(tmp_path / 'app2.pem') == 0o600


def test_client_cert_finds_the_ca_in_the_given_path_with_the_given_name(tmp_path):
    ca_dir = tmp_path / 'ca'
    ca_dir.mkdir()
    run_ok(SERVER_CERT, 'example.org', cwd=ca_dir)
    work = tmp_path / 'work'
    work.mkdir()

    result = run_ok(CLIENT_CERT, 'web1', str(ca_dir), 'example.org', cwd=work)

    assert str(ca_dir / 'example.org-ca.cert') in result.stdout
    verify = subprocess.run(['openssl', 'verify', '-x509_strict', '-CAfile',
                             str(ca_dir / 'example.org-ca.cert'), str(work / 'web1.pem')],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_client_cert_without_a_ca_says_where_it_looked(tmp_path):
    result = run(CLIENT_CERT, 'web1', '.', 'no-such-test-ca', cwd=tmp_path)

    assert result.returncode != 0
    assert 'no-such-test-ca-ca.key' in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_client_cert_search_path_names_the_standard_folders(tmp_path):
    result = run(CLIENT_CERT, 'web1', cwd=tmp_path)
    if result.returncode == 0:
        pytest.skip('a LogHog CA is installed on this machine')
    for folder in ('/etc/loghogd', '/etc/loghogd/certs', '/usr/local/etc/loghogd'):
        assert folder in result.stderr


def test_client_cert_refuses_to_overwrite_unless_forced(pki, tmp_path):
    run_ok(CLIENT_CERT, 'app3', str(pki), cwd=tmp_path)
    before = (tmp_path / 'app3.pem').read_bytes()

    result = run(CLIENT_CERT, 'app3', str(pki), cwd=tmp_path)
    assert result.returncode != 0 and 'already exists' in result.stderr
    assert (tmp_path / 'app3.pem').read_bytes() == before

    run_ok(CLIENT_CERT, '--force', 'app3', str(pki), cwd=tmp_path)
    assert (tmp_path / 'app3.pem').read_bytes() != before
    assert [p.name for p in tmp_path.iterdir()] == ['app3.pem']


@pytest.mark.parametrize('name', ['../evil', 'a/b', '', '.hidden', 'a b'])
def test_client_cert_rejects_names_that_are_not_names(pki, tmp_path, name):
    result = run(CLIENT_CERT, '--', name, str(pki), cwd=tmp_path)

    assert result.returncode != 0
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason='chown to another user needs root')
def test_client_cert_through_sudo_belongs_to_the_sudo_user(pki, tmp_path):
    run_ok(CLIENT_CERT, 'app4', str(pki), cwd=tmp_path,
           env={'SUDO_UID': '4242', 'SUDO_GID': '4343', 'SUDO_USER': 'someone'})

    info = (tmp_path / 'app4.pem').stat()
    assert (info.st_uid, info.st_gid) == (4242, 4343)
    assert mode(tmp_path / 'app4.pem') == 0o600


@pytest.mark.skipif(os.geteuid() == 0, reason='root can read any CA key')
def test_client_cert_with_an_unreadable_ca_key_asks_for_root(pki, tmp_path):
    ca_dir = tmp_path / 'ca'
    ca_dir.mkdir()
    for name in ('loghog-ca.key', 'loghog-ca.cert'):
        shutil.copy(pki / name, ca_dir / name)
    (ca_dir / 'loghog-ca.key').chmod(0)

    result = run(CLIENT_CERT, 'app5', str(ca_dir), cwd=tmp_path)

    assert result.returncode != 0 and 'sudo' in result.stderr


# Mutual TLS with Python's ssl, strict X.509 checking on both sides

@pytest.mark.parametrize('server_hostname', ['loghog', 'localhost', '127.0.0.1', '::1'])
def test_mutual_tls_handshake_with_strict_verification(pki, server_hostname):
    server, client = handshake(server_context(pki),
                               client_context(pki / 'loghog-ca.cert', pki / 'app1.pem'),
                               server_hostname)

    assert server == {'organizationName': 'LogHog', 'commonName': 'app1'}
    assert client == b'ok'


def test_client_refuses_a_server_name_not_in_the_certificate(pki):
    server, client = handshake(server_context(pki),
                               client_context(pki / 'loghog-ca.cert', pki / 'app1.pem'),
                               'elsewhere.example.com')

    assert isinstance(client, ssl.SSLCertVerificationError)
    assert isinstance(server, (ssl.SSLError, OSError))


def test_server_refuses_a_client_certificate_from_another_ca(pki, other_pki):
    server, client = handshake(server_context(pki),
                               client_context(pki / 'loghog-ca.cert', other_pki / 'intruder.pem'),
                               'loghog')

    assert isinstance(server, ssl.SSLError)
    assert 'certificate verify failed' in str(server)
    assert client != b'ok'


def test_server_refuses_a_client_without_a_certificate(pki):
    server, client = handshake(server_context(pki), client_context(pki / 'loghog-ca.cert'),
                               'loghog')

    assert isinstance(server, ssl.SSLError)
    assert client != b'ok'


def test_client_refuses_a_server_from_another_ca(pki, other_pki):
    server, client = handshake(server_context(other_pki),
                               client_context(pki / 'loghog-ca.cert', pki / 'app1.pem'),
                               'loghog')

    assert isinstance(client, ssl.SSLCertVerificationError)
