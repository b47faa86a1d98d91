"""Real syslog senders that no one here wrote, against a real loghogd: util-linux's logger,
Python's SysLogHandler, rsyslogd relaying, nginx and PHP's Monolog.  Each sender's messages
must all land, whole and in order, in the file its program's claim routes them to.

The programs come from Debian (.ci/run installs them).  Outside CI, as a non-root user, a
missing program skips its test; as root or with CI set, a missing program is a failure.
"""

import contextlib
import logging
import logging.handlers
import os
import shutil
import signal
import socket
import subprocess

import pytest

from tests.support import Daemon, read_lines, wait_for

FACILITIES = """
[senders]
rotate = daily
backup_count = 3
syslog_programs = lg-*, py-*

[senders:logger]
syslog_programs = lg-*
rotate = daily
backup_count = 3

[relay]
rotate = daily
backup_count = 3
syslog_programs = rs-*

[nginx]
rotate = daily
backup_count = 3
syslog_programs = nginx*

[php]
rotate = daily
backup_count = 3
syslog_programs = php-*

[misc]
rotate = daily
backup_count = 3
"""
TIMEOUT = 20.0


def require(program):
    """The path of ``program``; a skip outside CI as a user, a failure as root or in CI."""
    path = shutil.which(program) or (os.path.exists(program) and program)
    if not path:
        message = '%s is not installed (.ci/run installs it)' % program
        if os.geteuid() == 0 or os.environ.get('CI'):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope='module')
def daemon(tmp_path_factory):
    base = tmp_path_factory.mktemp('syslog')
    daemon = Daemon(base, FACILITIES, sections={'syslog': {
        'listen_udp': '127.0.0.1:0', 'listen_tcp': '127.0.0.1:0',
        'unix_socket': 'run/syslog.sock', 'default_app': 'misc'}})
    daemon.rundir.mkdir(parents=True, exist_ok=True)
    daemon.start()
    daemon.socket_path = str(daemon.rundir / 'syslog.sock')
    yield daemon
    assert daemon.stop() == 0, daemon.output()
    assert not os.path.exists(daemon.socket_path)   # removed at exit


def udp(daemon):
    return daemon.port('syslog_udp')


def tcp(daemon):
    return daemon.port('syslog_tcp')


def file_of(daemon, app, name='root'):
    return daemon.logdir / app / ('%s.log' % name)


def run_logger(args, lines):
    subprocess.run([require('logger')] + args, input='\n'.join(lines) + '\n', text=True,
                   check=True, timeout=TIMEOUT, capture_output=True)


# -- logger (util-linux) -------------------------------------------------------------------------

LOGGER_CASES = {
    # name: (arguments, expected line head before the message)
    'udp': (['--udp'], 'user.notice: [timeQuality'),
    'tcp': (['--tcp'], 'user.notice: [timeQuality'),
    'octet': (['--tcp', '--octet-count'], 'user.notice: [timeQuality'),
    'r3164': (['--udp', '--rfc3164', '-p', 'local3.warning'], 'local3.warning: '),
    'sd': (['--tcp', '--octet-count', '--rfc5424', '--msgid', 'ORDER42', '--sd-id', 'shop@32473',
            '--sd-param', 'customer="7"', '--sd-param', 'note="a \\"quoted\\" \\]"',
            '-p', 'local0.err'], 'local0.err ORDER42: [timeQuality'),
}


def records(path):
    """The records of ``path``: a line with its continuation lines (they start '  | ')."""
    found = []
    for line in read_lines(path):
        if line.startswith('  | ') and found:
            found[-1] += '\n' + line
        else:
            found.append(line)
    return found


def lines_of(path, needle, count):
    """Wait for ``count`` records of ``path`` that contain ``needle``; return them."""
    return wait_for(lambda: (lambda found: found if len(found) >= count else None)(
        [record for record in records(path) if needle in record]), TIMEOUT,
        message='%d lines with %r in %s' % (count, needle, path))


@pytest.mark.parametrize('name', sorted(LOGGER_CASES))
def test_logger_over_the_network(daemon, name):
    args, head = LOGGER_CASES[name]
    tag = 'lg-%s' % name
    port = udp(daemon) if '--udp' in args else tcp(daemon)
    messages = ['%s message %d' % (name, i) for i in range(20)]
    run_logger(['-n', '127.0.0.1', '-P', str(port), '-t', tag, '-i'] + args, messages)
    lines = lines_of(file_of(daemon, 'senders', 'logger'), ' - %s[' % tag, 20)
    assert len(lines) == 20
    for line, message in zip(lines, messages):
        text = line.split(' - ', 2)[2]
        assert text.startswith(tag + '['), text
        assert head in text and text.endswith(' ' + message), text
    if name == 'sd':
        assert '[shop@32473 customer="7" note="a \\"quoted\\" \\]"]' in lines[0], lines[0]


def test_logger_to_the_unix_socket(daemon):
    messages = ['unix message %d' % i for i in range(20)]
    run_logger(['--socket', daemon.socket_path, '-t', 'lg-unix', '-p', 'daemon.info'], messages)
    path = file_of(daemon, 'senders', 'logger')
    lines = wait_for(lambda: (lambda found: found if len(found) >= 20 else None)(
        [l for l in read_lines(path) if ' - lg-unix ' in l]), TIMEOUT, message='unix lines')
    assert [line.split(' - ', 2)[2] for line in lines] == [
        'lg-unix daemon.info: %s' % m for m in messages]


def test_an_over_long_tcp_message_is_cut_and_the_next_ones_arrive(daemon):
    """A frame beyond max_message_size (64K by default) costs only itself; the last
    message, which the peer never ended with LF, arrives when it closes."""
    with socket.create_connection(('127.0.0.1', tcp(daemon)), timeout=TIMEOUT) as sock:
        sock.sendall(b'<14>lg-raw: ' + b'x' * 100000 + b'\n<14>lg-raw: after the long one\n')
        sock.sendall(b'<14>lg-raw: the last, no LF')
    lines = lines_of(file_of(daemon, 'senders', 'logger'), ' - lg-raw ', 3)
    texts = [line.split(' - ', 2)[2] for line in lines]
    assert texts[0] == 'lg-raw user.info: ' + 'x' * (65536 - len('<14>lg-raw: '))
    assert texts[1:] == ['lg-raw user.info: after the long one', 'lg-raw user.info: the last, no LF']


# -- Python's SysLogHandler ----------------------------------------------------------------------

@pytest.mark.parametrize('transport', ['udp', 'tcp', 'unix'])
def test_python_sysloghandler(daemon, transport):
    if transport == 'unix':
        handler = logging.handlers.SysLogHandler(address=daemon.socket_path)
    else:
        port = udp(daemon) if transport == 'udp' else tcp(daemon)
        handler = logging.handlers.SysLogHandler(
            address=('127.0.0.1', port),
            socktype=socket.SOCK_DGRAM if transport == 'udp' else socket.SOCK_STREAM)
    handler.ident = 'py-%s: ' % transport
    handler.setFormatter(logging.Formatter('%(levelname)s %(message)s'))
    logger = logging.getLogger('test_syslog.%s' % transport)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        for i in range(20):
            logger.warning('python %s %d', transport, i)
        logger.error('multi\nline')
    finally:
        logger.removeHandler(handler)
        handler.close()
    lines = lines_of(file_of(daemon, 'senders'), ' - py-%s ' % transport, 21)
    assert [line.split(' - ', 2)[-1] for line in lines] == [
        'py-%s user.warning: WARNING python %s %d' % (transport, transport, i) for i in range(20)
    ] + ['py-%s user.err: ERROR multi\n  | line' % transport], lines


# -- rsyslogd relaying -----------------------------------------------------------------------------

RSYSLOG_CONF = """
global(workDirectory="{work}" maxMessageSize="64k")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{socket}" CreatePath="on")
if $programname == "rs-tcp" then {{
    action(type="omfwd" target="127.0.0.1" port="{tcp}" protocol="tcp" TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format")
    stop
}}
if $programname == "rs-udp" then {{
    action(type="omfwd" target="127.0.0.1" port="{udp}" protocol="udp" template="RSYSLOG_TraditionalForwardFormat")
    stop
}}
"""


@contextlib.contextmanager
def running_rsyslogd(folder, conf_text, **values):
    """rsyslogd in the foreground with ``conf_text`` (formatted with ``values``, ``work``
    and ``socket``: its own imuxsock socket, which this yields); stopped by PID."""
    program = require('rsyslogd')
    work = folder / 'work'
    work.mkdir()
    socket_path = folder / 'in.sock'
    conf = folder / 'rsyslog.conf'
    conf.write_text(conf_text.format(work=work, socket=socket_path, **values))
    check = subprocess.run([program, '-N1', '-f', str(conf)], capture_output=True, text=True,
                           timeout=TIMEOUT)
    assert check.returncode == 0, check.stderr + check.stdout
    proc = subprocess.Popen([program, '-n', '-f', str(conf), '-i', str(folder / 'rsyslogd.pid')],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: socket_path.exists() or proc.poll() is not None, TIMEOUT,
                 message='rsyslogd to listen')
        assert proc.poll() is None, proc.stdout.read()
        yield str(socket_path)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


@pytest.fixture
def rsyslogd(daemon, tmp_path):
    with running_rsyslogd(tmp_path, RSYSLOG_CONF, tcp=tcp(daemon), udp=udp(daemon)) as path:
        yield path


@pytest.mark.parametrize('transport', ['tcp', 'udp'])
def test_rsyslogd_relays_to_loghogd(daemon, rsyslogd, transport):
    tag = 'rs-%s' % transport
    messages = ['relayed over %s %d' % (transport, i) for i in range(50)]
    # Sent one by one: rsyslog's imuxsock rate-limits a burst from one process.
    for message in messages:
        run_logger(['--socket', rsyslogd, '-t', tag, '-p', 'local0.info'], [message])
    path = file_of(daemon, 'relay')
    lines = wait_for(lambda: (lambda found: found if len(found) >= 50 else None)(
        [l for l in read_lines(path) if ' - %s' % tag in l]), TIMEOUT,
        message='lines relayed by rsyslogd over %s' % transport)
    hostname = socket.gethostname().split('.')[0]
    assert [line.split(' - ', 2)[1] for line in lines] == [hostname] * 50
    # rsyslog's %msg% keeps the space after 'tag:' (RFC 3164 input), and sends it on.
    assert [line.split(' - ', 2)[2].split(': ', 1)[1].lstrip(' ') for line in lines] == messages
    assert all(' local0.info' in line for line in lines)


RSYSLOG_TLS_CONF = """
global(workDirectory="{work}" maxMessageSize="64k"
       DefaultNetstreamDriverCAFile="{ca}" DefaultNetstreamDriverCertFile="{pem}"
       DefaultNetstreamDriverKeyFile="{pem}")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{socket}" CreatePath="on")
action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp" StreamDriver="ossl"
       StreamDriverMode="1" StreamDriverAuthMode="x509/certvalid"
       TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format")
"""


def test_rsyslogd_relays_over_tls_with_a_client_certificate(tmp_path):
    """RFC 5425: rsyslog's ossl driver with our CA's client certificate reaches a facility
    with a secret, which takes syslog only that way."""
    from tests.support import make_certs
    require('openssl')
    pki = make_certs(tmp_path / 'pki', 'relay1')
    (tmp_path / 'd').mkdir()
    (tmp_path / 'r').mkdir()
    daemon = Daemon(tmp_path / 'd', '[signed]\nrotate = daily\nbackup_count = 3\n'
                    'secret = s3cret\nsyslog_programs = rs-tls\n',
                    {'pemfile': str(pki / 'loghog-server.pem'),
                     'cacert': str(pki / 'loghog-ca.cert')},
                    sections={'syslog': {'listen_tls': '127.0.0.1:0'}})
    daemon.start()
    try:
        with running_rsyslogd(tmp_path / 'r', RSYSLOG_TLS_CONF, port=daemon.port('syslog_tls'),
                              ca=pki / 'loghog-ca.cert', pem=pki / 'relay1.pem') as socket_path:
            messages = ['over tls %d' % i for i in range(20)]
            for message in messages:
                run_logger(['--socket', socket_path, '-t', 'rs-tls', '-p', 'local0.notice'],
                           [message])
            lines = lines_of(file_of(daemon, 'signed'), ' - rs-tls', 20)
        assert [l.split(': ', 1)[1].lstrip(' ') for l in lines] == messages
        assert all(' local0.notice' in line for line in lines)
    finally:
        assert daemon.stop() == 0, daemon.output()


# -- nginx -----------------------------------------------------------------------------------------

NGINX_CONF = """
{user}
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log syslog:server=127.0.0.1:{udp},tag=nginx_error info;
events {{ worker_connections 64; }}
http {{
    access_log syslog:server=127.0.0.1:{udp},tag=nginx_access,severity=info combined;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {prefix}/www;
    }}
}}
"""


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def test_nginx_access_and_error_logs(daemon, tmp_path):
    program = require('nginx')
    (tmp_path / 'www').mkdir()
    (tmp_path / 'www' / 'index.html').write_text('hello\n')
    port = free_port()
    conf = tmp_path / 'nginx.conf'
    # As root, workers would run as nobody, who cannot read pytest's private folders.
    user = 'user root root;' if os.geteuid() == 0 else ''
    conf.write_text(NGINX_CONF.format(prefix=tmp_path, udp=udp(daemon), port=port, user=user))
    proc = subprocess.Popen([program, '-c', str(conf), '-p', str(tmp_path), '-e', 'stderr'],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        def fetch(path):
            try:
                with socket.create_connection(('127.0.0.1', port), timeout=2) as sock:
                    sock.sendall(b'GET %s HTTP/1.0\r\nUser-Agent: loghog-test\r\n\r\n'
                                 % path.encode())
                    return sock.recv(100)
            except OSError:
                return None
        wait_for(lambda: fetch('/index.html') or proc.poll() is not None, TIMEOUT,
                 message='nginx to serve')
        assert proc.poll() is None, proc.stdout.read()
        fetch('/missing-page')
        lines = wait_for(lambda: (lambda found: found if len(found) >= 2 else None)(
            [l for l in read_lines(file_of(daemon, 'nginx')) if ' - nginx_access ' in l
             and '/missing-page' in l or ' - nginx_error ' in l and 'missing-page' in l]),
            TIMEOUT, message='nginx access and error lines')
        access = [l for l in lines if ' - nginx_access ' in l][0]
        error = [l for l in lines if ' - nginx_error ' in l][0]
        assert 'nginx_access local7.info: 127.0.0.1 - - [' in access
        assert '"GET /missing-page HTTP/1.0" 404' in access and 'loghog-test' in access
        assert 'nginx_error local7.err: ' in error and 'No such file or directory' in error
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


# -- PHP Monolog -----------------------------------------------------------------------------------

PHP_SCRIPT = """<?php
require '/usr/share/php/Monolog/autoload.php';
use Monolog\\Logger;
use Monolog\\Handler\\SyslogUdpHandler;
$log = new Logger('shop');
$log->pushHandler(new SyslogUdpHandler($argv[1], (int)$argv[2], LOG_LOCAL1, Logger::DEBUG, true, $argv[3], (int)$argv[4]));
for ($i = 0; $i < 20; $i++) {
    $log->warning("php message $i", ['order' => $i]);
}
"""


@pytest.mark.parametrize('rfc', ['5424', '3164', 'unix'])
def test_php_monolog_syslog_udp_handler(daemon, tmp_path, rfc):
    program = require('php')
    require('/usr/share/php/Monolog/autoload.php')
    script = tmp_path / 'log.php'
    script.write_text(PHP_SCRIPT)
    tag = 'php-%s' % rfc
    if rfc == 'unix':
        target = [daemon.socket_path, '0']
    else:
        target = ['127.0.0.1', str(udp(daemon))]
    result = subprocess.run([program, str(script)] + target + [tag, '0' if rfc == '3164' else '1'],
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    path = file_of(daemon, 'php')
    lines = wait_for(lambda: (lambda found: found if len(found) >= 20 else None)(
        [l for l in read_lines(path) if ' - %s[' % tag in l]), TIMEOUT, message='PHP lines')
    pid = lines[0].split('[', 1)[1].split(']', 1)[0]
    assert [line.split(' - ', 2)[2] for line in lines] == [
        '%s[%s] local1.warning: shop.WARNING: php message %d {"order":%d} []' % (tag, pid, i, i)
        for i in range(20)]
