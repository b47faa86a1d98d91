"""A real loghogd's syslog listeners: SIGHUP reloads the claims, TLS with client certificates
guards the facilities that have a secret, the unix socket gets its mode, and refusals are
counted and logged with their reason."""

import json
import os
import shutil
import socket
import ssl
import stat

import pytest

from tests.integration.attack import syslog_tools
from tests.integration.attack.syslog_tools import send_tcp
from tests.support import Daemon, make_certs, read_lines, wait_for, wait_for_lines

FACILITIES = """
[plain]
rotate = daily
backup_count = 3
syslog_programs = pl

[signed]
rotate = daily
backup_count = 3
secret = s3cret
syslog_programs = sig
"""


def start(tmp_path, facilities=FACILITIES, server=None, **syslog):
    """attack/syslog_tools.start, with this module's facilities."""
    return syslog_tools.start(tmp_path, facilities, server, **syslog)


def test_sighup_reloads_the_claims(tmp_path):
    daemon = start(tmp_path)
    try:
        send_tcp(daemon, b'<14>newprog: before the reload\n<14>pl: sentinel 1\n')
        wait_for_lines(daemon.log_file('plain'), 1)
        wait_for(lambda: 'syslog_unclaimed' in daemon.output(), message='the refusal logged')
        daemon.reload(FACILITIES + '\n[new]\nrotate = daily\nbackup_count = 3\n'
                      'syslog_programs = newprog\n')
        send_tcp(daemon, b'<14>newprog: after the reload\n')
        lines = wait_for_lines(daemon.log_file('new'), 1)
        assert lines[0].endswith(' - newprog user.info: after the reload')
        assert not [l for l in read_lines(daemon.log_file('plain')) if 'newprog' in l]
    finally:
        assert daemon.stop() == 0


def test_unix_socket_mode_and_removal(tmp_path):
    path = tmp_path / 'run' / 'log.sock'
    daemon = start(tmp_path, unix_socket='run/log.sock', unix_socket_mode='0620')
    try:
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o620
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(b'<13>pl: local', str(path))
        assert wait_for_lines(daemon.log_file('plain'), 1)[0].endswith(
            ' - localhost - pl user.notice: local')
    finally:
        assert daemon.stop() == 0
    assert not path.exists()


@pytest.fixture(scope='module')
def pki(tmp_path_factory):
    if shutil.which('openssl') is None:
        pytest.skip('needs the openssl command')
    base = make_certs(tmp_path_factory.mktemp('syslog-pki'), 'web1')
    return {'ca': base / 'loghog-ca.cert', 'server': base / 'loghog-server.pem',
            'client': base / 'web1.pem'}


def tls_send(daemon, pki, data, with_cert):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cafile=str(pki['ca']))
    if with_cert:
        context.load_cert_chain(str(pki['client']))
    raw = socket.create_connection(('127.0.0.1', daemon.port('syslog_tls')), timeout=10)
    with context.wrap_socket(raw) as sock:
        sock.sendall(data)


@pytest.mark.parametrize('client_certs', ['optional', 'required'])
def test_a_facility_with_a_secret_takes_syslog_only_over_tls_with_a_client_certificate(
        tmp_path, pki, client_certs):
    server = {'pemfile': str(pki['server']), 'cacert': str(pki['ca'])}
    daemon = start(tmp_path, server=server, listen_tls='127.0.0.1:0',
                   tls_client_certs=client_certs)
    try:
        send_tcp(daemon, b'<14>sig: over plain tcp\n')
        tls_send(daemon, pki, b'<14>sig: with a certificate\n', with_cert=True)
        if client_certs == 'optional':
            tls_send(daemon, pki, b'<14>sig: no certificate\n<14>pl: no certificate\n',
                     with_cert=False)
            wait_for_lines(daemon.log_file('plain'), 1)
        else:
            try:   # TLS 1.3: the refusal comes after the client's handshake is done
                tls_send(daemon, pki, b'<14>pl: no certificate\n', with_cert=False)
            except (ssl.SSLError, ConnectionError):
                pass
            wait_for(lambda: 'TLS handshake with' in daemon.output(), message='the refusal')
        tls_send(daemon, pki, b'<14>sig: sentinel\n', with_cert=True)
        lines = wait_for_lines(daemon.log_file('signed'), 2)
        assert [l.split(' - ', 2)[2] for l in lines] == ['sig user.info: with a certificate',
                                                          'sig user.info: sentinel']
        if client_certs == 'required':
            assert not daemon.log_file('plain').exists()
        refused = 2 if client_certs == 'optional' else 1
        wait_for(lambda: daemon.output().count('syslog_needs_client_cert') >= refused,
                 message='refusals logged')
    finally:
        assert daemon.stop() == 0


def free_privileged_port():
    """A port below 1024 free for both TCP and UDP on 127.0.0.1 (as root)."""
    for port in range(700, 1000):
        try:
            with socket.socket() as tcp, socket.socket(type=socket.SOCK_DGRAM) as udp:
                tcp.bind(('127.0.0.1', port))
                udp.bind(('127.0.0.1', port))
                return port
        except OSError:
            continue
    pytest.fail('no free port below 1024')


@pytest.mark.skipif(os.geteuid() != 0, reason='privileged ports and dropping privileges need root')
def test_privileged_ports_are_bound_before_privileges_are_dropped():
    import tempfile
    from pathlib import Path
    # World-traversable, so that the daemon running as nobody can reach its folders.
    base = Path(tempfile.mkdtemp(prefix='loghogd-syslog-'))
    os.chmod(base, 0o755)
    port = free_privileged_port()
    daemon = Daemon(base, FACILITIES, sections={
        'main': {'user': 'nobody'},
        'syslog': {'listen_udp': '127.0.0.1:%d' % port, 'listen_tcp': '127.0.0.1:%d' % port,
                   'unix_socket': 'run/syslog.sock'}})
    try:
        daemon.start()
        status = open('/proc/%d/status' % daemon.pid).read()
        assert '\nUid:\t65534\t65534\t65534\t65534\n' in status
        assert daemon.addresses['syslog_udp'] == [['127.0.0.1', port]]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b'<14>pl: over udp to a privileged port', ('127.0.0.1', port))
        send_tcp(daemon, b'<14>pl: over tcp to a privileged port\n')
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(b'<14>pl: over the unix socket', str(daemon.rundir / 'syslog.sock'))
        lines = wait_for_lines(daemon.log_file('plain'), 3)
        assert sorted(l.split(': ', 1)[1] for l in lines) == [
            'over tcp to a privileged port', 'over the unix socket',
            'over udp to a privileged port']
        assert daemon.stop() == 0, daemon.output()
        assert not (daemon.rundir / 'syslog.sock').exists()   # nobody could remove it
    finally:
        daemon.kill()
        shutil.rmtree(base, ignore_errors=True)


def test_ipv6_listeners(tmp_path):
    daemon = start(tmp_path, listen_udp='[::1]:0', listen_tcp='[::1]:0')
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.sendto(b'<14>pl: udp over ipv6', ('::1', daemon.port('syslog_udp')))
        with socket.create_connection(('::1', daemon.port('syslog_tcp')), timeout=10) as sock:
            sock.sendall(b'<14>pl: tcp over ipv6\n')
        lines = wait_for_lines(daemon.log_file('plain'), 2)
        assert sorted(l.split(' - ', 1)[1] for l in lines) == [
            '::1 - pl user.info: tcp over ipv6', '::1 - pl user.info: udp over ipv6']
    finally:
        assert daemon.stop() == 0


def test_an_unended_last_message_is_written_when_the_daemon_stops(tmp_path):
    daemon = start(tmp_path)
    with socket.create_connection(('127.0.0.1', daemon.port('syslog_tcp')), timeout=10) as sock:
        sock.sendall(b'<14>pl: first\n<14>pl: not ended by LF')
        wait_for_lines(daemon.log_file('plain'), 1)   # both were read: they came together
        assert daemon.stop() == 0
    assert [l.split(' - ', 2)[2] for l in read_lines(daemon.log_file('plain'))] == [
        'pl user.info: first', 'pl user.info: not ended by LF']


def test_a_frame_that_never_ends_is_cut_off_by_frame_timeout_and_kept(tmp_path):
    """A sender that stops in the middle of a frame loses its connection after
    frame_timeout, as on our own protocol; what it sent is written (an octet-counted
    frame that stopped short is counted as cut)."""
    daemon = start(tmp_path, server={'frame_timeout': '1'})
    try:
        with socket.create_connection(('127.0.0.1', daemon.port('syslog_tcp')),
                                      timeout=10) as sock:
            sock.sendall(b'<14>pl: whole\n40 <14>pl: stopped short')
            sock.settimeout(15)
            assert sock.recv(1) == b''   # closed by the daemon
        lines = wait_for_lines(daemon.log_file('plain'), 2)
        assert [l.split(' - ', 2)[2] for l in lines] == ['pl user.info: whole',
                                                          'pl user.info: stopped short']
        wait_for(lambda: 'frame_timeout' in daemon.output(), message='the timeout logged')
    finally:
        assert daemon.stop() == 0


def test_random_bytes_cost_only_themselves(tmp_path):
    """Whatever arrives on the syslog listeners, the daemon carries on: the sentinel sent
    after a megabyte of random bytes (TCP) and random datagrams (UDP) is written."""
    import random
    generator = random.Random(16)
    noise = bytes(generator.getrandbits(8) for _ in range(1 << 20))
    daemon = start(tmp_path, default_app='')
    try:
        send_tcp(daemon, noise + b'\n<14>pl: after the noise, same connection\n')
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for offset in range(0, 200 * 1000, 1000):
                sock.sendto(noise[offset:offset + generator.randrange(1, 1000)],
                            ('127.0.0.1', daemon.port('syslog_udp')))
            sock.sendto(b'<14>pl: sentinel over udp', ('127.0.0.1', daemon.port('syslog_udp')))
        send_tcp(daemon, b'<14>pl: sentinel over tcp\n')
        found = wait_for(lambda: (lambda lines: lines if len(lines) >= 3 else None)(
            [l for l in read_lines(daemon.log_file('plain'))
             if 'sentinel' in l or 'after the noise' in l]), message='the sentinels')
        assert len(found) == 3
        assert daemon.proc.poll() is None
        assert 'internal error' not in daemon.output()
    finally:
        assert daemon.stop() == 0


def octet_counted(message):
    return b'%d %s' % (len(message), message)


def test_a_json_facility_writes_syslog_as_json_lines_with_its_fields(tmp_path):
    facilities = ('[web]\nrotate = daily\nbackup_count = 3\nformat = json\n'
                  'syslog_programs = nginx\n')
    daemon = start(tmp_path, facilities)
    try:
        send_tcp(daemon, b'<187>1 2026-12-05T03:14:15.926Z web1.example.com nginx 4242 ID47 '
                         b'[req@32473 id="7" path="/a\\"b"] upstream timed out\n'
                         + octet_counted(b'<13>Dec  5 03:14:15 web2 nginx: two\nlines'))
        lines = wait_for_lines(daemon.log_file('web'), 2)
    finally:
        assert daemon.stop() == 0
    first, second = (json.loads(line) for line in lines)
    assert first['host'] == 'web1.example.com' and first['app'] == 'web'
    assert first['message'] == 'upstream timed out'
    assert (first['program'], first['pid'], first['msgid']) == ('nginx', '4242', 'ID47')
    assert (first['facility'], first['severity'], first['level']) == ('local7', 'err', 'ERROR')
    assert first['logger'] == 'nginx'
    assert first['structured_data'] == '[req@32473 id="7" path="/a\\"b"]'
    assert second['host'] == 'web2' and second['severity'] == 'notice'
    assert second['message'] == 'two\nlines' and 'pid' not in second


def published(daemon):
    try:
        return json.loads((daemon.rundir / 'status.json').read_text())
    except (FileNotFoundError, ValueError):
        return None


def test_a_nul_framed_senders_message_ended_by_lf_comes_when_it_goes_quiet(tmp_path):
    """Python's SysLogHandler ends its messages with NUL; a message from the same
    connection that ends with an LF is written after a quiet second, not held until the
    next byte or frame_timeout, and the connection stays open: status counts it under
    its syslog listener, not under our protocol's tcp."""
    daemon = start(tmp_path)
    try:
        with socket.create_connection(('127.0.0.1', daemon.port('syslog_tcp')),
                                      timeout=10) as sock:
            sock.sendall(b'<14>pl: NUL-framed\x00')
            wait_for_lines(daemon.log_file('plain'), 1)
            sock.sendall(b'<14>pl: ended by LF\n')
            lines = wait_for_lines(daemon.log_file('plain'), 2)
            assert lines[1].endswith(' - pl user.info: ended by LF')
            snapshot = wait_for(lambda: (lambda s: s if s and s['connections']['open'].get(
                'syslog_tcp') == 1 else None)(published(daemon)), message='the open connection')
            assert snapshot['connections']['open'].get('tcp', 0) == 0
            assert snapshot['connections']['accepted']['syslog_tcp'] >= 1
            sock.sendall(b'<14>pl: same connection\x00')
            assert wait_for_lines(daemon.log_file('plain'), 3)[2].endswith(' - pl user.info: '
                                                                           'same connection')
        assert 'frame_timeout' not in daemon.output()
    finally:
        assert daemon.stop() == 0


def test_sysloghandlers_traceback_as_a_connections_first_message_is_one_record(tmp_path):
    """Python's SysLogHandler over TCP ends its messages with NUL, and the first message
    of its connection may be a traceback: one record with continuation lines."""
    import logging
    import logging.handlers
    daemon = start(tmp_path)
    handler = logging.handlers.SysLogHandler(address=('127.0.0.1', daemon.port('syslog_tcp')),
                                             socktype=socket.SOCK_STREAM)
    handler.ident = 'pl: '
    logger = logging.getLogger('test_syslog.first_traceback')
    logger.propagate = False
    logger.addHandler(handler)
    try:
        try:
            1 / 0
        except ZeroDivisionError:
            logger.exception('first')
        logger.error('second')
        lines = wait_for(lambda: (lambda lines: lines if any('second' in l for l in lines)
                                  else None)(read_lines(daemon.log_file('plain'))),
                         message='the second message')
    finally:
        logger.removeHandler(handler)
        handler.close()
        assert daemon.stop() == 0
    assert lines[0].endswith(' - pl user.err: first')
    assert lines[1] == '  | Traceback (most recent call last):'
    assert lines[-2] == '  | ZeroDivisionError: division by zero'
    assert lines[-1].endswith(' - pl user.err: second')
    assert all(line.startswith('  | ') for line in lines[1:-1])


def test_a_tls_senders_last_message_taken_at_close_keeps_its_certificate(tmp_path, pki):
    """What a TLS sender with a client certificate left unended when it closed is taken at
    the close, into its facility with a secret (the TLS socket no longer tells its peer's
    certificate then: the handshake's is kept)."""
    server = {'pemfile': str(pki['server']), 'cacert': str(pki['ca'])}
    daemon = start(tmp_path, server=server, listen_tls='127.0.0.1:0')
    try:
        tls_send(daemon, pki, b'<14>sig: not ended by LF', with_cert=True)
        lines = wait_for_lines(daemon.log_file('signed'), 1)
        assert lines[0].endswith(' - sig user.info: not ended by LF')
        assert 'internal error' not in daemon.output()
    finally:
        assert daemon.stop() == 0
