"""Attacks on the syslog listeners (issue 16) with default settings: what a hostile or
confused syslog sender can do to the files, to the daemon's other clients and to the
operator's view. Findings are xfail(strict) tests (they pass once fixed); the rest guard
promises that held.
"""

import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest

from benchmarks.good_client import percentile
from loghog.wire import FLAG_ACK, HEADER, encode_message
from tests.integration.attack.syslog_tools import send_tcp, start, start_flood, unread_bytes
from tests.support import ROOT, read_lines, wait_for, wait_for_lines

# A line of a text file: a record's first line starts with its receive time, a
# continuation line with "  | " (README, "Configuration").
RECORD_START = re.compile(r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} - ')


def wait_for_sentinel(daemon, app='plain', word='sentinel'):
    return wait_for(lambda: (lambda lines: lines if any(word in l for l in lines) else None)(
        read_lines(daemon.log_file(app))), message='%s in %s' % (word, app))


def test_host_names_never_leave_the_app_folder(tmp_path):
    """Held: with file_per_host, HOSTNAMEs that are paths or dots become safe file names
    inside the application's folder (README: "it is never a path")."""
    daemon = start(tmp_path)
    try:
        hosts = [b'..', b'.', b'../../etc', b'a/b', b'-rf', b'...', b'.-.-', b'x' * 255]
        data = b''.join(b'<14>1 2026-12-05T00:00:00Z %s fh - - - via %s\n' % (h, h[:20])
                        for h in hosts)
        data += b''.join(b'<14>Dec  5 00:00:00 %s fh: bsd %s\n' % (h, h[:20]) for h in hosts)
        send_tcp(daemon, data + b'<14>1 - - pl - - - sentinel\n')
        wait_for_sentinel(daemon)
        wait_for(lambda: sum(len(read_lines(daemon.logdir / 'fph' / name))
                             for name in os.listdir(daemon.logdir / 'fph')) == 2 * len(hosts),
                 message='every host line')
        for folder, _, names in os.walk(daemon.logdir):
            for name in names:
                parts = os.path.relpath(os.path.join(folder, name), daemon.logdir).split(os.sep)
                assert len(parts) == 2 and parts[0] in ('fph', 'plain'), parts
        assert not [path for path in tmp_path.rglob('*') if path.name == 'etc']
        for name in os.listdir(daemon.logdir / 'fph'):
            assert not name.startswith(('.', '-')) and '/' not in name, name
    finally:
        assert daemon.stop() == 0


def test_no_message_can_forge_a_record(tmp_path):
    """Held: CR, NEL, U+2028, ESC, NUL-free octet-counted line breaks and SD with escaped
    brackets give one record each; every line of the file starts a record or continues one."""
    daemon = start(tmp_path)
    forged = b'2026-12-05 00:00:00.000000 - trusted - pl user.info: forged'
    messages = [b'<14>1 - - pl - - - cr\r' + forged,
                b'<14>1 - - pl - - - nel\xc2\x85' + forged,
                b'<14>1 - - pl - - - ls\xe2\x80\xa8' + forged,
                b'<14>1 - - pl - - - esc \x1b[2J\x1b[1;1H' + forged,
                b'<14>1 - - pl - - [a x="\\"]\n' + forged + b'"] sd',
                b'<14>pl: bsd\n' + forged]
    try:
        send_tcp(daemon, b''.join(b'%d %s' % (len(m), m) for m in messages)
                 + b'<14>pl: sentinel\n')
        lines = wait_for_sentinel(daemon)
        starts = [line for line in lines if RECORD_START.match(line)]
        assert len(starts) == len(messages) + 1, lines
        for line in lines:
            assert RECORD_START.match(line) or line.startswith('  | '), line
            assert not re.search('[\x00-\x08\x0b-\x1f\x7f\x85\u2028]', line), line
        assert not [line for line in lines if line.startswith(forged.decode()[:26])]
    finally:
        assert daemon.stop() == 0


def test_cut_frame_does_not_swallow_the_next_when_split_at_its_lf(tmp_path):
    daemon = start(tmp_path)
    try:
        with socket.create_connection(('127.0.0.1', daemon.port('syslog_tcp'))) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(b'<14>pl: first\x00')
            wait_for_lines(daemon.log_file('plain'), 1)
            sock.sendall(b'<14>pl: long ' + b'y' * 70000)
            wait_for_lines(daemon.log_file('plain'), 2)      # the cut part is written
            sock.sendall(b'\n')
            # The daemon has read the LF alone once the kernel holds nothing unread for it.
            ports = (daemon.port('syslog_tcp'), sock.getsockname()[1])
            wait_for(lambda: unread_bytes(*ports) == 0, message='the daemon to read the LF')
            sock.sendall(b'<14>pl: next message\x00<14>pl: sentinel\x00')
            lines = wait_for_sentinel(daemon)
        assert [l for l in lines if l.endswith('pl user.info: next message')], lines[-2:]
    finally:
        assert daemon.stop() == 0


def probe_acks(daemon, seconds, interval_s=0.005, timeout_s=3.0):
    """Acknowledged messages of [app] over our own TCP protocol, one at a time; each one's
    delay (send to ack). A delay past ``timeout_s`` ends the probing, recorded as inf."""
    delays = []
    stop = time.monotonic() + seconds
    with socket.create_connection(('127.0.0.1', daemon.tcp_port), timeout=timeout_s) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while not delays or time.monotonic() < stop:
            began = time.monotonic()
            sock.sendall(encode_message('app', 'root', 1700000000, 0, 'probe',
                                        'probe %d' % len(delays), flags=FLAG_ACK))
            try:
                data = b''
                while len(data) < HEADER.size:
                    data += sock.recv(HEADER.size - len(data))
                size, _ = HEADER.unpack(data)
                while size:
                    size -= len(sock.recv(size))
            except (socket.timeout, TimeoutError):
                delays.append(float('inf'))
                return delays
            delays.append(time.monotonic() - began)
            time.sleep(interval_s)
    return delays


@pytest.mark.parametrize('flood, port', [('udp_sd_unclaimed', 'syslog_udp'),
                                         ('udp_own_big', 'udp')])
def test_udp_flood_does_not_stall_a_tcp_client(tmp_path, flood, port):
    """One process sends 60 KB syslog datagrams of structured data for a program nobody
    claims (refused: nothing is written), or 60 KB frames of our own protocol to its UDP
    port; a client of another application sends acknowledged messages over our protocol
    meanwhile. test_fairness's bounds for TCP floods: p99 < 200 ms, and SIGTERM during the
    flood stops the daemon within 10 s. (A3-9: a datagram event read up to 1024 datagrams
    whatever they cost: no ack within 2 s, SIGTERM took 17 s.)
    """
    daemon = start(tmp_path, level='WARNING')
    child = start_flood(flood, daemon.port(port), 8)
    try:
        time.sleep(0.5)   # not a proof of anything: lets the flood get under way first
        delays = probe_acks(daemon, 3.0, timeout_s=2.0)
        p99 = percentile(delays, 0.99)
        print('\nudp flood: %d probes, median %.1f ms, p99 %.1f ms'
              % (len(delays), percentile(delays, 0.5) * 1000, p99 * 1000))
        began = time.monotonic()
        code = daemon.stop(timeout=30)
        stop_s = time.monotonic() - began
        print('SIGTERM during the flood: stopped in %.2fs' % stop_s)
        assert p99 < 0.2
        assert code == 0 and stop_s < 10.0   # README: SIGTERM drains for 8 s at most
    finally:
        child.terminate()
        child.join()
        daemon.kill()


def status_json(daemon):
    result = subprocess.run([sys.executable, '-m', 'loghogd', 'status', '-c',
                             str(daemon.config_path), '--json'],
                            cwd=str(ROOT), capture_output=True, timeout=20)
    return json.loads(result.stdout) if result.returncode == 0 else None


def test_status_counts_syslog_connections_as_syslog(tmp_path):
    daemon = start(tmp_path)
    try:
        for n in range(3):
            send_tcp(daemon, b'<14>pl: message %d\n' % n)
        wait_for_lines(daemon.log_file('plain'), 3)
        status = wait_for(lambda: (lambda s: s if s and s['events'].get(
            'syslog_messages_tcp') == 3 else None)(status_json(daemon)), timeout=15,
            message='a status snapshot with the three messages')
        accepted = status['connections']['accepted']
        assert (accepted.get('syslog_tcp'), accepted.get('tcp', 0)) == (3, 0), accepted
    finally:
        assert daemon.stop() == 0


def test_default_app_error_names_both_files_and_the_line(tmp_path):
    (tmp_path / 'loghogd.conf').write_text(
        '[syslog]\ndefault_app = nosuch\nlisten_udp = 127.0.0.1:0\n'
        '[main]\nlogdir = log\nworkdir = lib\nrundir = run\n')
    (tmp_path / 'facilities.conf').write_text('[a]\nrotate = daily\nbackup_count = 1\n')
    result = subprocess.run([sys.executable, '-m', 'loghogd', '-c', str(tmp_path / 'loghogd.conf'),
                             '--check-config'], cwd=str(ROOT), capture_output=True, text=True,
                            timeout=20)
    assert result.returncode == 78
    assert '%s:2:' % (tmp_path / 'loghogd.conf') in result.stderr, result.stderr
    assert str(tmp_path / 'facilities.conf') in result.stderr, result.stderr


@pytest.mark.parametrize('second, evicted', [(b'<14>pl: relay 2\n', False),
                                             (b'<14>nobody: refused\n', True)],
                         ids=['accepted', 'refused'])
def test_a_busy_syslog_relay_is_not_the_idle_one_evicted(tmp_path, second, evicted):
    """README: at max_connections (900) "the connection idle longest with nothing in flight
    is closed to make room". A syslog relay that connected first but has just sent is not
    the idle one: one of the 899 silent connections opened after it is. Only accepted
    messages are activity, as on our protocol (issue 15): a relay whose last message was
    refused is still the idlest."""
    daemon = start(tmp_path, level='INFO')
    relay = socket.create_connection(('127.0.0.1', daemon.port('syslog_tcp')))
    idle = []
    try:
        relay.sendall(b'<14>pl: relay 1\n')
        wait_for_lines(daemon.log_file('plain'), 1)
        idle = [socket.create_connection(('127.0.0.1', daemon.tcp_port)) for _ in range(899)]
        # The daemon has taken them all once a message over the last one is written.
        idle[-1].sendall(encode_message('app', 'root', 1700000000, 0, 'web1', 'last idle'))
        wait_for_lines(daemon.log_file('app'), 1)
        relay.sendall(second)
        if evicted:
            wait_for(lambda: 'syslog_unclaimed' in daemon.output(), message='the refusal')
        else:
            wait_for_lines(daemon.log_file('plain'), 2)
        newcomer = socket.create_connection(('127.0.0.1', daemon.tcp_port))
        idle.append(newcomer)
        line = wait_for(lambda: [l for l in daemon.output().splitlines()
                                 if 'closed the longest idle connection' in l],
                        message='an eviction')[0]
        relay_port = relay.getsockname()[1]
        assert ('127.0.0.1:%d,' % relay_port in line) == evicted, line
    finally:
        relay.close()
        for sock in idle:
            sock.close()
        assert daemon.stop() == 0


def cpu_seconds(pid):
    with open('/proc/%d/stat' % pid) as stream:
        fields = stream.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def test_line_breaks_in_a_nul_framed_stream_cost_linear_time(tmp_path):
    """120 KB over one connection: two NUL-ended frames of line breaks, after a first
    NUL-framed message. Our protocol's path takes MB/s; the bound is generous."""
    daemon = start(tmp_path, level='WARNING')
    try:
        with socket.create_connection(('127.0.0.1', daemon.port('syslog_tcp'))) as sock:
            sock.sendall(b'<14>pl: nul framed\x00')
            wait_for_lines(daemon.log_file('plain'), 1)
            before = cpu_seconds(daemon.pid)
            sock.sendall((b'\n' * 60000 + b'\x00') * 2 + b'<14>pl: sentinel\x00')
            wait_for_sentinel(daemon)
            used = cpu_seconds(daemon.pid) - before
        print('\n120 KB of line breaks in NUL mode: %.2f s of CPU' % used)
        assert used < 0.5
    finally:
        assert daemon.stop() == 0


def test_sighup_during_a_syslog_stream_loses_nothing(tmp_path):
    """Held: SIGHUPs while one TCP sender streams octet-counted messages: every message is
    written once (README: a reload never costs a message)."""
    import threading
    daemon = start(tmp_path)
    count = 20000
    try:
        sock = socket.create_connection(('127.0.0.1', daemon.port('syslog_tcp')))

        def send():
            for first in range(0, count, 500):
                sock.sendall(b''.join(b'%d %s' % (len(m), m) for m in (
                    b'<14>1 - - pl - - - n=%06d' % n for n in range(first, first + 500))))
            sock.sendall(b'<14>pl: sentinel\n')
        sender = threading.Thread(target=send)
        sender.start()
        reloads = 0
        # At least three: on an idle machine the kernel's buffers can take the whole
        # stream before a first check of the sender (CI saw 0 reloads: a test of nothing).
        while reloads < 3 or (sender.is_alive() and reloads < 20):
            daemon.reload()
            reloads += 1
        sender.join()
        sock.close()
        lines = [line for line in wait_for_sentinel(daemon) if 'n=' in line]
        assert len(lines) == len(set(lines)) == count
    finally:
        assert daemon.stop() == 0


def test_a_live_unix_socket_of_another_program_is_not_taken_over(tmp_path):
    (tmp_path / 'run').mkdir()
    path = tmp_path / 'run' / 'dev-log'
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as owner:
        owner.bind(str(path))
        try:
            daemon = start(tmp_path, unix_socket='run/dev-log')
        except AssertionError as exc:   # refused to start: what it should do
            assert 'dev-log' in str(exc)
        else:
            daemon.stop()
            pytest.fail('loghogd took over the socket another program was listening on')
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.sendto(b'<14>pl: still the first owner', str(path))
        owner.settimeout(5)
        assert owner.recv(100) == b'<14>pl: still the first owner'


# A3-26 (a SysLogHandler traceback as a TCP connection's first message was split into
# refused lines): test_syslog_daemon.py's
# test_sysloghandlers_traceback_as_a_connections_first_message_is_one_record checks it, line
# by line.


def test_continuation_lines_starting_with_lt_stay_in_their_record(tmp_path):
    daemon = start(tmp_path)
    try:
        send_tcp(daemon, b'<14>pl: first\x00'
                 b"<14>pl: SOAP response:\n<?xml version='1.0'?>\n<Envelope/>\x00"
                 b'<14>pl: sentinel\x00')
        lines = wait_for_sentinel(daemon)
        assert lines[1].endswith('pl user.info: SOAP response:'), lines
        assert lines[2:4] == ["  | <?xml version='1.0'?>", '  | <Envelope/>'], lines
    finally:
        assert daemon.stop() == 0
