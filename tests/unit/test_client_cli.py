"""The ``loghog`` command, called through ``main(argv)`` and once as a real process."""

import io
import subprocess
import sys
import threading
import time

import pytest

from loghog import wire
from loghog.cli import main
from tests.support import free_port
from tests.unit.test_client_fakes import DatagramServer, FrameServer, reserve_port


@pytest.fixture
def server():
    with FrameServer() as running:
        yield running
    assert running.errors == []


def run(server_port, *args, stdin=None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr('sys.stdin', io.StringIO(stdin))
    return main(['-a', 'my-app', '-H', '127.0.0.1', '-p', str(server_port), *args])


def test_arguments_are_joined_into_one_message(server, capsys):
    assert run(server.port, '-m', 'cron', '--hostname', 'web1', 'backup', 'done:', '42 files') == 0
    [message] = server.wait_for(1)
    assert (message['app_id'], message['module'], message['hostname'], message['body']) == \
        ('my-app', 'cron', 'web1', 'backup done: 42 files')
    assert capsys.readouterr() == ('', '')


def test_each_stdin_line_is_one_message_and_empty_lines_are_skipped(server, monkeypatch):
    assert run(server.port, stdin='first\n\nsecond\r\nthird', monkeypatch=monkeypatch) == 0
    assert [m['body'] for m in server.wait_for(3)] == ['first', 'second', 'third']
    assert [m['module'] for m in server.messages] == ['root'] * 3
    assert server.accepted == 1


def test_text_with_no_utf8_form_is_sent_with_escapes_and_signed():
    from loghog.cli import utf8_text
    assert utf8_text('caf\u00e9') == 'caf\u00e9'
    stray = b'\xff\xfe latin-1'.decode('utf-8', 'surrogateescape')
    assert utf8_text(stray) == '\\xff\\xfe latin-1'
    assert utf8_text('\ud800 lone') == '\\ud800 lone'
    utf8_text(stray).encode('utf-8')


def test_secret_signs_from_the_option_or_the_environment(server, monkeypatch):
    assert run(server.port, '--secret', 'opt', 'one') == 0
    monkeypatch.setenv('LOGHOG_SECRET', 'env')
    assert run(server.port, 'two') == 0
    first, second = server.wait_for(2)
    for message, secret in ((first, 'opt'), (second, 'env')):
        assert message['signature'] == wire.signature(
            secret, 'my-app', 'root', message['stamp'], message['nsecs'], message['body'])


def test_compress_sets_the_zlib_flag(server):
    assert run(server.port, '--compress', 'squeezed') == 0
    assert server.wait_for(1)[0]['body'] == 'squeezed'
    assert server.flags == [wire.FLAG_ZLIB | wire.FLAG_ACK]


def test_tcp_messages_ask_for_acks_in_a_session_and_no_ack_turns_that_off(server):
    assert run(server.port, 'acknowledged') == 0
    assert run(server.port, '--no-ack', 'plain') == 0
    server.wait_for(2)
    assert server.flags == [wire.FLAG_ACK, 0]
    assert [session['first'] for session in server.sessions] == [1]


def test_a_daemon_that_never_acknowledges_exits_69_and_suggests_no_ack(capsys):
    with FrameServer(answers_acks=False) as old_daemon:
        assert run(old_daemon.port, '--timeout', '0.3', 'unconfirmed') == 69
        assert capsys.readouterr().err == (
            f'loghog: 1 messages not delivered to tcp://127.0.0.1:{old_daemon.port} (1 never '
            f'sent): 127.0.0.1:{old_daemon.port} did not answer the session frame (a stopped '
            'daemon, or one older than acknowledgements: then turn them off, '
            'acknowledged=False, --no-ack)\n')
        assert run(old_daemon.port, '--no-ack', 'plain') == 0
        # Nothing is written before the handshake: only the plain message arrived.
        assert [m['body'] for m in old_daemon.wait_for(1)] == ['plain']


def test_connection_refused_exits_69_with_a_clear_message(capsys):
    with reserve_port() as refusing:
        port = refusing.getsockname()[1]
        started = time.monotonic()
        assert run(port, '--timeout', '1', 'hello') == 69
        waited_s = time.monotonic() - started
    assert 1 <= waited_s < 3  # tried again and again within --timeout, then gave up
    assert capsys.readouterr().err == (
        f'loghog: 1 messages not delivered to tcp://127.0.0.1:{port} (1 never sent): '
        f'cannot connect to tcp://127.0.0.1:{port}: Connection refused\n')


def test_a_daemon_that_comes_up_within_the_timeout_gets_the_message(monkeypatch):
    reserved = reserve_port()
    port = reserved.getsockname()[1]
    late = threading.Timer(0.5, lambda: servers.append(FrameServer(reserved=reserved)))
    servers = []
    late.start()
    try:
        assert run(port, 'patience') == 0
        assert [m['body'] for m in servers[0].wait_for(1)] == ['patience']
    finally:
        late.join()
        for server in servers:
            server.stop()


def test_udp_is_sent_and_exits_0_even_without_a_listener(monkeypatch):
    with DatagramServer() as udp:
        assert run(udp.port, '--udp', stdin='a\nb\n', monkeypatch=monkeypatch) == 0
        assert [m['body'] for m in udp.wait_for(2)] == ['a', 'b']
    assert run(free_port(), '--udp', 'into the void') == 0


def test_ipv6(capsys):
    with FrameServer('::1') as server6:
        assert main(['-a', 'app', '-H', '::1', '-p', str(server6.port), 'v6']) == 0
        assert server6.wait_for(1)[0]['body'] == 'v6'


@pytest.mark.parametrize('args, complaint', [
    (['-a', 'app', '--tls', 'x'], '--tls needs --pem FILE and --ca FILE'),
    (['-a', 'app', '--udp', '--tls', '--pem', 'p', '--ca', 'c', 'x'], 'cannot be combined'),
    (['-a', 'app', '--pem', 'p', 'x'], '--pem and --ca are only used with --tls'),
    (['-a', 'app', '-p', '70000', 'x'], 'is not a port number'),
    (['hello'], 'the following arguments are required: -a/--app'),
    (['-a', 'app', '-p', 'http', 'x'], "invalid int value: 'http'"),
    (['-a', 'app', '--timeout', '0', 'x'], '--timeout 0 must be a positive number of seconds'),
])
def test_bad_options_exit_2_and_say_what_is_wrong(args, complaint, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith('usage: loghog') and complaint in err


def test_help_exits_0(capsys):
    assert main(['--help']) == 0
    assert 'Send log messages to a LogHog daemon' in capsys.readouterr().out


def test_installed_command_reads_stdin_and_sets_the_exit_status(server):
    command = [sys.executable, '-m', 'loghog', '-a', 'my-app', '-H', '127.0.0.1']
    result = subprocess.run(command + ['-p', str(server.port)], input='from\na pipe\n',
                            capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stderr) == (0, '')
    assert [m['body'] for m in server.wait_for(2)] == ['from', 'a pipe']
    with reserve_port() as refusing:
        refused = subprocess.run(command + ['-p', str(refusing.getsockname()[1]),
                                            '--timeout', '0.5', 'x'],
                                 capture_output=True, text=True, timeout=30)
    assert refused.returncode == 69 and 'Connection refused' in refused.stderr


def test_terminated_while_waiting_for_acknowledgements_says_what_it_lost():
    # SIGTERM while the command waits after its last message (here: for a daemon that
    # never answers the session frame).  A signal handler that raises inside Thread.join()
    # used to leave the sender thread marked stopped (CPython 3.11): the second wait
    # returned at once and the loss went unsaid.
    with FrameServer(answers_acks=False) as silent:
        process = subprocess.Popen(
            [sys.executable, '-m', 'loghog', '-a', 'my-app', '-H', '127.0.0.1', '-p',
             str(silent.port), '--timeout', '30', 'one message'],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 20
            while not silent.accepted and time.monotonic() < deadline:
                time.sleep(0.02)   # connected: the signal handlers are in place
            assert silent.accepted
            time.sleep(0.2)        # now in the wait after the last message
            started = time.monotonic()
            process.terminate()
            _, err = process.communicate(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert process.returncode == 143
    assert time.monotonic() - started < 10   # STOP_TIMEOUT_S (2 s), not --timeout (30 s)
    assert '1 messages not delivered' in err, err


def test_udp_datagrams_the_kernel_refuses_exit_69_and_are_said(monkeypatch, capsys):
    """A6-1: ``--udp`` exited 0 when the kernel refused a datagram (EMSGSIZE).  Lines are
    cut to fit a datagram now; to see a refusal anyway, the client's limits are raised so
    that a 70,000-byte one is not cut."""
    monkeypatch.setattr(wire, 'MAX_MESSAGE_BYTES', 2 * wire.MAX_MESSAGE_BYTES)
    monkeypatch.setattr(wire, 'MAX_DATAGRAM_BYTES', 2 * wire.MAX_MESSAGE_BYTES)
    with DatagramServer() as udp:
        status = run(udp.port, '--udp', stdin='x' * 70_000 + '\nafter it\n',
                     monkeypatch=monkeypatch)
        assert [m['body'] for m in udp.wait_for(1)] == ['after it']
    where = f'udp://127.0.0.1:{udp.port}'
    assert status == 69
    assert capsys.readouterr().err == (
        f'loghog: the kernel refused to send a datagram to {where} (a message too big for '
        f'UDP, or nothing listening there): lost\n'
        f'loghog: 1 of 2 messages not sent: the kernel refused their datagrams to {where}\n')
