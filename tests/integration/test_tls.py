"""Mutual TLS with real loghogd processes and certificates made by the project's own scripts.

What a sysadmin relies on: clients with a certificate from the LogHog CA are written; a client
with a certificate from another CA, with none, with old TLS or weak ciphers is refused and
nothing of its reaches a file; a peer that talks plain text, stalls or drips bytes costs its own
connection only; bad pemfile/cacert settings stop the daemon at start-up with exit 78.
"""

import os
import select
import shutil
import socket
import ssl
import subprocess
import sys
import time
import warnings

import pytest

from loghog.handler import LoghogHandler
from tests.support import (ROOT, each_workers, frame, line_body, log_files, make_certs, read_lines,
                           wait_for, wait_for_lines)
EX_CONFIG = 78

pytestmark = [each_workers,
              pytest.mark.skipif(shutil.which('openssl') is None, reason='needs the openssl command')]


@pytest.fixture(scope='module')
def pki(tmp_path_factory):
    """Our CA with a server and a client certificate; another CA with its own client."""
    base = tmp_path_factory.mktemp('tls-pki')
    ours = make_certs(base / 'ours', 'web1')
    other = make_certs(base / 'other', 'intruder')
    return {'ca': ours / 'loghog-ca.cert', 'server': ours / 'loghog-server.pem',
            'client': ours / 'web1.pem', 'other_ca': other / 'loghog-ca.cert',
            'other_server': other / 'loghog-server.pem', 'intruder': other / 'intruder.pem',
            'ca_key': ours / 'loghog-ca.key', 'base': base}


def tls_options(pki, **extra):
    options = {'listen_ipv4_ssl': '127.0.0.1:0', 'pemfile': str(pki['server']),
               'cacert': str(pki['ca'])}
    options.update({key: str(value) for key, value in extra.items()})
    return options


def client_context(pki, pemfile='client', cacert='ca'):
    """A client context as the loghog client builds it (TLS 1.2+, server checked by our CA)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.load_verify_locations(cafile=str(pki[cacert]))
    if pemfile:
        context.load_cert_chain(str(pki[pemfile]))
    return context


def tls_connect(port, context, timeout=10):
    raw = socket.create_connection(('127.0.0.1', port), timeout=timeout)
    try:
        return context.wrap_socket(raw)
    except BaseException:
        raw.close()
        raise


def is_closed_by_daemon(sock, timeout=10):
    """True once the daemon has closed ``sock`` (EOF, reset or a TLS alert on read)."""
    sock.settimeout(timeout)
    try:
        while True:
            if not sock.recv(4096):
                return True
    except (ConnectionError, ssl.SSLError, OSError):
        return True
    except socket.timeout:
        return False


def lines_up_to(path, body):
    """The lines of ``path`` once one of them has the body ``body``, else None."""
    lines = read_lines(path)
    return lines if any(line_body(line) == body for line in lines) else None


def try_to_send(port, context, body):
    """Connect, handshake and send one message; return what happened (str), never raise."""
    try:
        sock = tls_connect(port, context)
    except (ssl.SSLError, OSError) as exc:
        return 'refused in handshake: %s' % exc
    with sock:
        try:
            sock.sendall(frame('app', body))
        except (ssl.SSLError, OSError) as exc:
            return 'refused on send: %s' % exc
        # TLS 1.3: the client finishes its side before the daemon has checked its certificate;
        # the refusal arrives as an alert on the next read.
        return 'closed' if is_closed_by_daemon(sock) else 'still open'


def test_clients_of_our_ca_are_written_other_ca_and_no_certificate_are_refused(daemon_factory, pki):
    daemon = daemon_factory(server=tls_options(pki))
    good = tls_connect(daemon.tls_port, client_context(pki))
    assert good.version() in ('TLSv1.3', 'TLSv1.2')
    good.sendall(frame('app', 'over tls 1'))
    outcomes = {
        'other ca': try_to_send(daemon.tls_port, client_context(pki, 'intruder'), 'from other ca'),
        'no certificate': try_to_send(daemon.tls_port, client_context(pki, None), 'no cert'),
        # A client that does not check the daemon (CERT_NONE) still has to show its own.
        'server cert as client cert': try_to_send(daemon.tls_port,
                                                  client_context(pki, 'other_server'), 'other srv'),
    }
    assert all(outcome != 'still open' for outcome in outcomes.values()), outcomes
    # The sentinel: sent after the daemon has closed every refused connection, so a line of
    # theirs, had the daemon read one, would be in the file before it.
    good.sendall(frame('app', 'over tls 2'))
    lines = wait_for(lambda: lines_up_to(daemon.log_file('app'), 'over tls 2'),
                     message='the sentinel line')
    assert log_files(daemon) == {os.path.join('app', 'root.log'): lines}
    assert list(map(line_body, lines)) == ['over tls 1', 'over tls 2']
    good.close()
    assert daemon.stop() == 0
    output = daemon.output()
    assert output.count('TLS handshake with 127.0.0.1:') >= 3
    assert 'CERTIFICATE_VERIFY_FAILED (unable to get local issuer certificate)' in output
    assert 'PEER_DID_NOT_RETURN_A_CERTIFICATE' in output


def test_a_client_that_does_not_trust_the_daemon_sends_nothing(daemon_factory, pki):
    """A client configured with another CA refuses the daemon before any log line leaves it."""
    daemon = daemon_factory(server=tls_options(pki))
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_connect(daemon.tls_port, client_context(pki, 'client', 'other_ca'))
    assert daemon.proc.poll() is None


def test_old_protocol_versions_and_weak_ciphers_are_refused(daemon_factory, pki):
    daemon = daemon_factory(server=tls_options(pki))
    tls12 = client_context(pki)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    with tls_connect(daemon.tls_port, tls12) as sock:
        assert sock.version() == 'TLSv1.2'
        assert sock.cipher()[0].startswith(('ECDHE-', 'DHE-')), sock.cipher()
        assert 'GCM' in sock.cipher()[0] or 'CHACHA20' in sock.cipher()[0]
        sock.sendall(frame('app', 'tls 1.2 with a modern cipher'))
    weak = client_context(pki)
    weak.maximum_version = ssl.TLSVersion.TLSv1_2
    weak.set_ciphers('AES128-SHA:AES256-SHA:AES128-SHA256:ECDHE-RSA-AES128-SHA')
    with pytest.raises(ssl.SSLError):
        tls_connect(daemon.tls_port, weak)
    old = client_context(pki)
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    try:
        old.set_ciphers('ALL:@SECLEVEL=0')
    except ssl.SSLError:
        pass
    with pytest.raises(ssl.SSLError):
        tls_connect(daemon.tls_port, old)
    assert list(map(line_body, wait_for_lines(daemon.log_file('app'), 1))) == [
        'tls 1.2 with a modern cipher']
    assert daemon.stop() == 0
    output = daemon.output()
    assert 'failed: NO_SHARED_CIPHER' in output  # refused by the daemon, not by the client
    assert 'failed: UNSUPPORTED_PROTOCOL' in output or 'failed: TLSV1' in output


def client_hello(pki):
    """The first flight of a TLS client, as bytes (made in memory, never sent by ssl itself)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_context(pki).wrap_bio(incoming, outgoing)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_plain_text_to_the_tls_port_and_tls_to_the_plain_port_cost_one_connection(
        daemon_factory, pki):
    daemon = daemon_factory(server=tls_options(pki))
    good = tls_connect(daemon.tls_port, client_context(pki))
    good.sendall(frame('app', 'before'))
    plain_on_tls = socket.create_connection(('127.0.0.1', daemon.tls_port), timeout=10)
    plain_on_tls.sendall(frame('app', 'plain text on the tls port') * 3)
    tls_on_plain = socket.create_connection(('127.0.0.1', daemon.tcp_port), timeout=10)
    tls_on_plain.sendall(client_hello(pki))
    http_on_tls = socket.create_connection(('127.0.0.1', daemon.tls_port), timeout=10)
    http_on_tls.sendall(b'GET / HTTP/1.1\r\nHost: x\r\n\r\n')
    for sock in (plain_on_tls, tls_on_plain, http_on_tls):
        assert is_closed_by_daemon(sock), sock
        sock.close()
    good.sendall(frame('app', 'after'))
    assert list(map(line_body, wait_for_lines(daemon.log_file('app'), 2))) == ['before', 'after']
    good.close()
    assert daemon.stop() == 0
    output = daemon.output()
    assert 'TLS handshake with 127.0.0.1:' in output
    assert 'lost_framing' in output


def test_silent_slow_and_never_reading_handshakes_are_cut_after_handshake_timeout(
        daemon_factory, pki):
    daemon = daemon_factory(server=tls_options(pki, handshake_timeout=1))
    hello = client_hello(pki)
    silent = socket.create_connection(('127.0.0.1', daemon.tls_port))
    half_hello = socket.create_connection(('127.0.0.1', daemon.tls_port))
    half_hello.sendall(hello[:len(hello) // 2])
    # Sends its hello, then never reads the daemon's answer (and never finishes).
    never_reads = socket.socket()
    never_reads.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    never_reads.connect(('127.0.0.1', daemon.tls_port))
    never_reads.sendall(hello)
    started = time.monotonic()
    good = tls_connect(daemon.tls_port, client_context(pki))
    good.sendall(frame('app', 'served meanwhile'))
    wait_for_lines(daemon.log_file('app'), 1)
    for sock in (silent, half_hello, never_reads):
        assert is_closed_by_daemon(sock, timeout=10)
        sock.close()
    assert time.monotonic() - started < 5
    good.sendall(frame('app', 'still served'))
    wait_for_lines(daemon.log_file('app'), 2)
    good.close()
    assert daemon.stop() == 0
    assert 'no TLS handshake within handshake_timeout (1s)' in daemon.output()


def raw_tls_session(port, context):
    """A TLS session over a plain socket, so the test can send the encrypted bytes itself."""
    sock = socket.create_connection(('127.0.0.1', port), timeout=10)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing)
    for _ in range(20):
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            sock.sendall(outgoing.read())
            data = sock.recv(65536)
            assert data, 'the daemon closed the connection during the handshake'
            incoming.write(data)
    sock.sendall(outgoing.read())
    return sock, tls, outgoing


def test_a_tls_record_sent_one_byte_at_a_time_is_cut_after_frame_timeout(daemon_factory, pki):
    daemon = daemon_factory(server=tls_options(pki, frame_timeout=1))
    sock, tls, outgoing = raw_tls_session(daemon.tls_port, client_context(pki))
    tls.write(frame('app', 'dripped'))
    record = outgoing.read()
    started = time.monotonic()
    closed = False
    for byte in record[:-1]:  # bounded: never the whole record
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            closed = True
            break
        readable, _, _ = select.select([sock], [], [], 0.25)
        if readable:
            try:
                if not sock.recv(65536):  # session tickets, then EOF
                    closed = True
                    break
            except OSError:
                closed = True
                break
    assert closed and time.monotonic() - started < 5
    sock.close()
    assert not read_lines(daemon.log_file('app'))
    assert daemon.stop() == 0
    assert 'frame_timeout (1s)' in daemon.output()


def test_an_idle_tls_client_is_not_mistaken_for_a_slow_one(daemon_factory, pki):
    """After its handshake, a client may stay quiet for longer than frame_timeout."""
    daemon = daemon_factory(server=tls_options(pki, frame_timeout=1))
    sock = tls_connect(daemon.tls_port, client_context(pki))
    time.sleep(2.5)
    sock.sendall(frame('app', 'after a pause'))
    assert list(map(line_body, wait_for_lines(daemon.log_file('app'), 1))) == ['after a pause']
    sock.close()


def test_the_loghog_handler_over_tls(daemon_factory, pki):
    import logging
    daemon = daemon_factory(server=tls_options(pki))
    handler = LoghogHandler(
        'app', '127.0.0.1', daemon.tls_port,
        ssl_info={'pemfile': str(pki['client']), 'cacert': str(pki['ca'])})
    logger = logging.getLogger('test_tls.handler')
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.warning('through the real client')
        wait_for_lines(daemon.log_file('app'), 1)
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert line_body(read_lines(daemon.log_file('app'))[0]).endswith('through the real client')


# -- bad pemfile / cacert: exit 78 at start-up and from --check-config ---------------------------

def write_config(folder, pemfile, cacert):
    folder.mkdir()
    (folder / 'facilities.conf').write_text('[app]\nrotate = daily\nbackup_count = 1\n')
    lines = ['[main]', 'logdir = log', 'workdir = lib', 'rundir = run',
             'facilities_config = facilities.conf', '[log]', 'filename = -', '[server]',
             'listen_ipv4 = 127.0.0.1:0', 'listen_ipv6 =', 'listen_ipv4_ssl = 127.0.0.1:0']
    if pemfile is not None:
        lines.append('pemfile = %s' % pemfile)
    if cacert is not None:
        lines.append('cacert = %s' % cacert)
    (folder / 'loghogd.conf').write_text('\n'.join(lines) + '\n')
    return folder / 'loghogd.conf'


def run_daemon(*args):
    return subprocess.run([sys.executable, '-m', 'loghogd', *args], cwd=str(ROOT),
                          capture_output=True, text=True, timeout=30)


def test_bad_pemfile_or_cacert_is_a_clear_error_and_exit_78(tmp_path, pki):
    base = pki['base']
    (tmp_path / 'key-only.pem').write_text(
        subprocess.run(['openssl', 'pkey', '-in', str(pki['server'])], capture_output=True,
                       text=True, check=True).stdout)
    cert = subprocess.run(['openssl', 'x509', '-in', str(pki['server'])], capture_output=True,
                          text=True, check=True).stdout
    (tmp_path / 'cert-only.pem').write_text(cert)
    other_key = subprocess.run(['openssl', 'pkey', '-in', str(pki['other_server'])],
                               capture_output=True, text=True, check=True).stdout
    (tmp_path / 'mismatch.pem').write_text(other_key + cert)
    encrypted = subprocess.run(['openssl', 'pkey', '-in', str(pki['server']), '-aes256',
                                '-passout', 'pass:secret'], capture_output=True, text=True,
                               check=True).stdout
    (tmp_path / 'encrypted.pem').write_text(encrypted + cert)
    (tmp_path / 'empty.cert').write_text('')
    cases = {
        'no pemfile': (None, pki['ca'], 'pemfile: required when listen_ipv4_ssl'),
        'no cacert': (pki['server'], None, 'cacert: required when listen_ipv4_ssl'),
        'missing pemfile': (tmp_path / 'nope.pem', pki['ca'], 'nope.pem: no such file'),
        'missing cacert': (pki['server'], tmp_path / 'nope.cert', 'nope.cert: no such file'),
        'pemfile is a folder': (base, pki['ca'], 'Is a directory'),
        'key only': (tmp_path / 'key-only.pem', pki['ca'], 'holds no PEM certificate'),
        'certificate only': (tmp_path / 'cert-only.pem', pki['ca'], 'holds no PEM private key'),
        'key of another certificate': (tmp_path / 'mismatch.pem', pki['ca'],
                                       'the private key does not belong to the certificate'),
        'encrypted key': (tmp_path / 'encrypted.pem', pki['ca'], 'encrypted with a passphrase'),
        'cacert holds nothing': (pki['server'], tmp_path / 'empty.cert', 'holds no PEM certificate'),
        'server signed by another CA': (pki['other_server'], pki['ca'],
                                        'would refuse this certificate: unable to get local issuer'),
        'client certificate as server': (pki['client'], pki['ca'],
                                         'would refuse this certificate: unsuitable certificate'),
    }
    for number, (name, (pemfile, cacert, expected)) in enumerate(cases.items()):
        config = write_config(tmp_path / ('case%d' % number), pemfile, cacert)
        checked = run_daemon('--check-config', '-c', str(config))
        assert (checked.returncode, checked.stdout) == (EX_CONFIG, ''), (name, checked.stderr)
        assert expected in checked.stderr, (name, checked.stderr)
        assert checked.stderr.startswith('loghogd: ') and 'Traceback' not in checked.stderr, name
        if name in ('missing pemfile', 'key of another certificate', 'server signed by another CA'):
            started = run_daemon('-c', str(config))
            assert started.returncode == EX_CONFIG and expected in started.stderr, (name, started)
            assert not (config.parent / 'run' / 'listen.json').exists()
    good = write_config(tmp_path / 'good', pki['server'], pki['ca'])
    assert run_daemon('--check-config', '-c', str(good)).returncode == 0
