"""The core promise, with real loghogd processes on loopback."""

import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest

from tests.support import (each_workers, ROOT, frame, line_body, read_lines, send_tcp, send_udp, wait_for,
                           wait_for_lines)

pytestmark = each_workers

LINE_RE = re.compile(r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} - web1 - INFO - Hello world!$')

FACILITIES = """
[app]
rotate = daily
backup_count = 3

[app:web]
rotate = hourly
backup_count = 3

[perhost]
rotate = daily
backup_count = 3
file_per_host = yes

[signed]
rotate = daily
backup_count = 3
secret = s3cret

[signed:audit]
rotate = daily
backup_count = 3

[other]
rotate = daily
backup_count = 1
secret = not-the-same
"""


def test_a_message_becomes_one_line_in_the_app_file(daemon):
    send_tcp(daemon.tcp_port, frame('app', 'INFO - Hello world!'))
    lines = wait_for_lines(daemon.log_file('app'), 1)
    assert LINE_RE.match(lines[0]), lines
    mode = os.stat(daemon.log_file('app')).st_mode
    assert stat.S_IMODE(mode) == 0o640
    assert stat.S_IMODE(os.stat(daemon.logdir / 'app').st_mode) == 0o750
    assert daemon.stop() == 0


def test_udp_ipv6_and_zlib(daemon_factory):
    daemon = daemon_factory(server={'listen_ipv6': '[::1]:0'})
    assert daemon.addresses['udp'][1][0] == '::1'
    v6 = daemon.port('udp', 1)
    send_udp(daemon.udp_port, frame('app', 'over udp v4'))
    send_udp(v6, frame('app', 'over udp v6', compress=True), host='::1')
    send_tcp(daemon.port('tcp', 1), frame('app', 'over tcp v6', compress=True), host='::1')
    lines = wait_for_lines(daemon.log_file('app'), 3)
    assert sorted(map(line_body, lines)) == ['over tcp v6', 'over udp v4', 'over udp v6']


def test_routing_to_sub_facilities_and_file_per_host(daemon_factory):
    daemon = daemon_factory(FACILITIES)
    data = (frame('app', 'to web', module='web.requests.api') + frame('app', 'to root', module='cron')
            + frame('app', 'also web', module='root.web.')
            + frame('perhost', 'from athens', host='athens.example.com')
            + frame('perhost', 'from sparta', host='sparta', module='anything')
            + frame('perhost', 'from evil', host='../../etc/cron.d/x'))
    send_tcp(daemon.tcp_port, data)
    assert list(map(line_body, wait_for_lines(daemon.log_file('app', 'web'), 2))) == ['to web', 'also web']
    assert list(map(line_body, wait_for_lines(daemon.log_file('app'), 1))) == ['to root']
    wait_for_lines(daemon.logdir / 'perhost' / 'sparta-root.log', 1)
    names = sorted(os.listdir(daemon.logdir / 'perhost'))
    assert names == ['_.._etc_cron.d_x-root.log', 'athens.example.com-root.log', 'sparta-root.log']
    assert not (daemon.base / 'etc').exists()


def test_signed_messages(daemon_factory):
    daemon = daemon_factory(FACILITIES)
    data = (frame('signed', 'valid', secret='s3cret')
            + frame('signed', 'unsigned')
            + frame('signed', 'forged', secret='wrong')
            + frame('signed', 'other facility secret', secret='not-the-same')
            + frame('signed', 'inherited valid', module='audit', secret='s3cret')
            + frame('signed', 'inherited unsigned', module='audit')
            + frame('nobody', 'unknown app')
            # The sentinel: read after every refused frame of the connection, and written to
            # the same file after any of them that the daemon had wrongly accepted.
            + frame('signed', 'sentinel', secret='s3cret')
            + frame('signed', 'sentinel', module='audit', secret='s3cret'))
    send_udp(daemon.udp_port, frame('signed', 'valid over udp', secret='s3cret'))
    wait_for_lines(daemon.log_file('signed'), 1)   # UDP first: its line's place is then known
    send_tcp(daemon.tcp_port, data)
    for path in (daemon.log_file('signed'), daemon.log_file('signed', 'audit')):
        wait_for(lambda: 'sentinel' in map(line_body, read_lines(path)),
                 message='the sentinel line in %s' % path)
    assert list(map(line_body, read_lines(daemon.log_file('signed')))) == [
        'valid over udp', 'valid', 'sentinel']
    assert list(map(line_body, read_lines(daemon.log_file('signed', 'audit')))) == [
        'inherited valid', 'sentinel']
    assert not (daemon.logdir / 'nobody').exists()
    assert daemon.stop() == 0
    output = daemon.output()
    assert output.count('missing_signature') == 2
    assert output.count('bad_signature') == 2
    assert "unknown_app: unknown application 'nobody'" in output
    assert 's3cret' not in output


def test_sighup_reloads_facilities_and_keeps_them_on_a_bad_file(daemon):
    send_tcp(daemon.tcp_port, frame('new-app', 'before'))
    # Refused before the reload (else the reload could come first and make it welcome).
    wait_for(lambda: "unknown application 'new-app'" in daemon.output(), 10, message='refusal')
    daemon.reload('[app]\nrotate = daily\nbackup_count = 1\n[new-app]\nrotate = daily\nbackup_count = 1\n')
    send_tcp(daemon.tcp_port, frame('new-app', 'after'))
    assert list(map(line_body, wait_for_lines(daemon.log_file('new-app'), 1))) == ['after']
    daemon.reload('[app]\nrotate = sometimes\nbackup_count = 1\n')
    assert 'facilities.conf:2: [app] rotate' in daemon.output()
    assert 'still using the facilities loaded before' in daemon.output()
    send_tcp(daemon.tcp_port, frame('new-app', 'still accepted'))
    assert line_body(wait_for_lines(daemon.log_file('new-app'), 2)[1]) == 'still accepted'
    assert daemon.proc.poll() is None


def test_sighup_reopens_files_moved_away(daemon):
    send_tcp(daemon.tcp_port, frame('app', 'one'))
    wait_for_lines(daemon.log_file('app'), 1)
    os.rename(daemon.log_file('app'), daemon.logdir / 'app' / 'moved.log')
    daemon.reload()
    send_tcp(daemon.tcp_port, frame('app', 'two'))
    assert list(map(line_body, wait_for_lines(daemon.log_file('app'), 1))) == ['two']
    assert list(map(line_body, read_lines(daemon.logdir / 'app' / 'moved.log'))) == ['one']


def test_sigterm_writes_what_was_received(daemon):
    count = 20000
    data = b''.join(frame('app', 'm%d' % i) for i in range(count))
    sock = socket.create_connection(('127.0.0.1', daemon.tcp_port))
    sock.sendall(data)
    daemon.signal(signal.SIGTERM)
    assert daemon.proc.wait(20) == 0
    sock.close()
    lines = read_lines(daemon.log_file('app'))
    assert [line_body(l) for l in lines] == ['m%d' % i for i in range(count)]


def test_bad_input_costs_only_itself(daemon):
    good = socket.create_connection(('127.0.0.1', daemon.tcp_port))
    send_tcp(daemon.tcp_port, b'GET / HTTP/1.1\r\n\r\n' * 10)
    send_tcp(daemon.tcp_port, frame('app', 'x', compress=False)[:-1] + b'\xff' + frame('app', 'after bad utf8'))
    send_udp(daemon.udp_port, b'\x00\x00\x00\x05\x00\x00\x00\x00abc')
    good.sendall(frame('app', 'still here'))
    lines = wait_for_lines(daemon.log_file('app'), 2)
    assert sorted(map(line_body, lines)) == ['after bad utf8', 'still here']
    good.close()
    assert daemon.proc.poll() is None


def test_traceback_body_is_written_whole(daemon):
    body = 'ERROR - boom\nTraceback (most recent call last):\n  File "x", line 1\nValueError: x\n'
    send_tcp(daemon.tcp_port, frame('app', body))
    lines = wait_for_lines(daemon.log_file('app'), 4)
    assert lines[0].endswith(' - web1 - ERROR - boom') and lines[-1] == '  | ValueError: x'


def _sender(port, index, count):
    code = ('import socket,sys; sys.path.insert(0, %r)\n'
            'from loghog.wire import encode_message\n'
            'data = b"".join(encode_message("app", "root", 1, 0, "h%d", "p%d-%%d" %% i) for i in range(%d))\n'
            's = socket.create_connection(("127.0.0.1", %d)); s.sendall(data); s.close()\n'
            % (str(ROOT), index, index, count, port))
    return subprocess.Popen([sys.executable, '-c', code])


def test_fifty_processes_two_thousand_messages_each_into_one_file(daemon):
    processes, per = 50, 2000
    senders = [_sender(daemon.tcp_port, i, per) for i in range(processes)]
    assert all(p.wait(120) == 0 for p in senders)
    path = daemon.log_file('app')
    wait_for(lambda: len(read_lines(path)) >= processes * per, timeout=60, message='100,000 lines')
    assert daemon.stop() == 0
    lines = read_lines(path)
    assert len(lines) == processes * per
    seen = {}
    for line in lines:
        match = re.match(r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} - h(\d+) - p(\d+)-(\d+)$', line)
        assert match, 'garbled line: %r' % line
        host, sender, number = map(int, match.groups())
        assert host == sender
        seen.setdefault(sender, []).append(number)
    assert sorted(seen) == list(range(processes))
    for numbers in seen.values():
        assert numbers == list(range(per))  # none missing, none duplicated, order kept


def test_check_config(tmp_path):
    conf = tmp_path / 'loghogd.conf'
    conf.write_text('[main]\nfacilities_config = f.conf\n')
    (tmp_path / 'f.conf').write_text('[app]\nrotate = daily\nbackup_count = 1\n')
    run = lambda *a: subprocess.run([sys.executable, '-m', 'loghogd', *a], cwd=str(ROOT),
                                    capture_output=True, text=True)
    ok = run('--check-config', '-c', str(conf))
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, '', '')
    (tmp_path / 'f.conf').write_text('[app]\nrotate = daily\n[app:x]\nrotate = daily\nbackup_count = z\n')
    bad = run('--check-config', '--config', str(conf))
    assert bad.returncode == 78
    assert bad.stderr.splitlines() == [
        'loghogd: %s:1: [app]: required key "backup_count" is missing' % (tmp_path / 'f.conf'),
        "loghogd: %s:5: [app:x] backup_count: 'z' is not a whole number" % (tmp_path / 'f.conf')]
    started = run('-c', str(conf))
    assert started.returncode == 78 and 'backup_count' in started.stderr
    missing = run('-c', str(tmp_path / 'nope.conf'))
    assert missing.returncode == 78 and 'no such file' in missing.stderr


def test_port_in_use_is_a_clear_start_up_error(daemon, daemon_factory):
    with pytest.raises(AssertionError) as info:
        daemon_factory(server={'listen_ipv4': '127.0.0.1:%d' % daemon.tcp_port}, name='second')
    assert 'exited with 71' in str(info.value)
    assert 'cannot listen on 127.0.0.1:%d: Address already in use' % daemon.tcp_port in str(info.value)


def open_log_files(daemon):
    """Paths of the files under the log folder that the daemon holds open now."""
    fds = '/proc/%d/fd' % daemon.pid
    found = []
    for fd in os.listdir(fds):
        try:
            target = os.readlink(os.path.join(fds, fd))
        except OSError:
            continue
        if target.startswith(str(daemon.logdir) + os.sep):
            found.append(target)
    return found


def test_many_sending_hosts_keep_at_most_max_open_files_open_and_lose_nothing(daemon_factory):
    daemon = daemon_factory('[perhost]\nrotate = daily\nbackup_count = 3\nfile_per_host = yes\n',
                            server={'max_open_files': '16'})
    hosts = ['host%02d' % n for n in range(40)]
    send_tcp(daemon.tcp_port, b''.join(frame('perhost', 'first from %s' % h, host=h) for h in hosts))
    folder = daemon.logdir / 'perhost'
    for host in hosts:
        wait_for_lines(folder / ('%s-root.log' % host), 1)
    # Open: at most 16 files, plus at most 16 descriptors of fsyncs still in flight, and
    # no more than the 16 files once the fsyncs are done.
    assert len(open_log_files(daemon)) <= 32
    wait_for(lambda: len(open_log_files(daemon)) <= 16, 10, message='at most 16 open')
    # The files that were closed open again, appending, when their host sends again.
    send_tcp(daemon.tcp_port, b''.join(frame('perhost', 'again from %s' % h, host=h)
                                       for h in hosts[:5]))
    for host in hosts[:5]:
        wait_for_lines(folder / ('%s-root.log' % host), 2)
    assert daemon.stop() == 0
    for n, host in enumerate(hosts):
        expected = ['first from %s' % host] + (['again from %s' % host] if n < 5 else [])
        assert [line_body(line) for line in read_lines(folder / ('%s-root.log' % host))] == expected
