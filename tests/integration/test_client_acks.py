"""Acknowledged delivery end to end: the loghog client against real loghogd processes.

Each test runs a stream of numbered messages through a ``LoghogHandler`` (from a thread, at a
steady pace, so that the fault lands in the middle of it), breaks something, and then reads
what the daemons wrote: every message that ``emit()`` accepted must be there, each daemon's
lines in the order sent, and duplicates only where the client had to resend to a daemon
that had forgotten its sessions (a restart).
"""

import logging
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from loghog import LoghogHandler
from tests.support import (Loggers, ROOT, Stream, each_workers, free_port, line_body, read_lines,
                           wait_for)

pytestmark = each_workers

FACILITIES = """
[app]
rotate = daily
backup_count = 3
"""

def numbers(path):
    """The message numbers in a daemon's log file, in file order."""
    return [int(line_body(line).split()[1]) for line in read_lines(path)]


def count_lines(path):
    try:
        with open(path, 'rb') as stream:
            return stream.read().count(b'\n')
    except FileNotFoundError:
        return 0


@pytest.fixture
def acked_logger(request):
    """``make(port)``: (handler, logger) with acknowledgements on and every other setting
    at its default, closed at the end."""
    loggers = Loggers(f'client-acks.{request.node.name}')

    def make(port, **options):
        handler = LoghogHandler('app', '127.0.0.1', port, **options)
        assert handler.acknowledged
        return handler, loggers(handler, logging.INFO)

    yield make
    loggers.close()


def wait_for_count(path, count, timeout=20):
    wait_for(lambda: count_lines(path) >= count, timeout, message=f'{count} lines in {path}')


def check_restart(first, second, total):
    """Assert what a client with acks promises across a daemon restart; return the number
    of duplicates (messages written by both daemons)."""
    before, after = numbers(first), numbers(second)
    assert before == list(range(len(before))), 'the first daemon wrote a gap or out of order'
    assert after and after == list(range(after[0], total)), \
        'the second daemon did not get the rest, in order'
    assert after[0] <= len(before), f'messages {len(before)}..{after[0] - 1} are missing'
    return len(before) - after[0]


def restart_on_same_port(daemon_factory, port):
    return daemon_factory(FACILITIES, server={'listen_ipv4': f'127.0.0.1:{port}'}, name='d2')


@pytest.mark.parametrize('how', ['kill -9', 'SIGTERM'])
def test_daemon_dies_mid_stream_and_restarts_nothing_lost(daemon_factory, acked_logger, how):
    """kill -9: what the daemon wrote but had not yet acknowledged is written again by the
    restarted daemon (it forgot the sessions): duplicates, a few.  SIGTERM: the daemon
    acknowledges what it wrote before it closes, and the client sends the rest again."""
    port = free_port()
    first = daemon_factory(FACILITIES, server={'listen_ipv4': f'127.0.0.1:{port}'})
    handler, logger = acked_logger(port)
    stream = Stream(logger)
    try:
        wait_for_count(first.log_file('app'), 3000)
        if how == 'kill -9':
            first.kill()
            assert first.proc.returncode == -signal.SIGKILL
        else:
            assert first.stop() == 0
        second = restart_on_same_port(daemon_factory, port)
        wait_for_count(second.log_file('app'), 3000)
    finally:
        total = stream.stop()
    assert handler.flush(), 'not everything was acknowledged'
    assert (handler.dropped, handler.unconfirmed) == (0, 0)
    duplicates = check_restart(first.log_file('app'), second.log_file('app'), total)
    # The window is the acks in flight when the daemon died: a few batches at most.
    assert duplicates <= 2000, f'{duplicates} of {total} messages written twice'
    if how == 'SIGTERM':
        assert duplicates == 0
    assert second.stop() == 0


class CuttableProxy:
    """A TCP relay from a loopback port to the daemon; ``cut()`` breaks every connection
    going through it at once (the client sees a reset, the daemon a close), as a network
    failure would, while the daemon keeps running; ``hold_acks()`` stops passing the
    daemon's bytes on until the next cut (acks lost in the network).

    It listens on ``listen`` (host, port) and relays to ``target_host``: with ::1 for both,
    the daemon sees the client's IPv6 loopback address."""

    def __init__(self, target_port, listen=('127.0.0.1', 0), target_host='127.0.0.1'):
        self.target = (target_host, target_port)
        self.listener = socket.create_server(
            listen, family=socket.AF_INET6 if ':' in listen[0] else socket.AF_INET)
        self.port = self.listener.getsockname()[1]
        self.pairs = []
        self.threads = []
        self.lock = threading.Lock()
        self.holding = threading.Event()
        self._start(self._accept)

    def _start(self, target, *args):
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.pairs.append((client, upstream))
            self._start(self._pump, client, upstream)
            self._start(self._pump, upstream, client, self.holding)

    def _pump(self, source, sink, held=None):
        try:
            while data := source.recv(65536):
                if held is None or not held.is_set():
                    sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def hold_acks(self):
        self.holding.set()

    def cut(self):
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for pair in pairs:
            for sock in pair:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the pumps blocked in recv()
                except OSError:
                    pass
                sock.close()  # with SO_LINGER 0: a reset
        self.holding.clear()
        return len(pairs)

    def stop(self):
        self.listener.close()
        self.cut()
        for thread in self.threads:
            thread.join(5)


def test_cut_connections_duplicate_nothing_while_the_daemon_stays_up(daemon, acked_logger):
    """The daemon remembers each client session: what the client sends again after a cut,
    because the ack did not reach it, is acknowledged but not written twice."""
    proxy = CuttableProxy(daemon.tcp_port)
    path = daemon.log_file('app')
    try:
        handler, logger = acked_logger(proxy.port)
        stream = Stream(logger)
        try:
            for lines in (2000, 5000, 8000):
                wait_for_count(path, lines)
                assert proxy.cut() == 1
        finally:
            total = stream.stop()
        assert handler.flush(), 'not everything was acknowledged'
        assert (handler.dropped, handler.unconfirmed) == (0, 0)
    finally:
        proxy.stop()
    assert numbers(path) == list(range(total))  # each once, in order
    assert daemon.stop() == 0


def test_rejected_messages_are_acknowledged_counted_and_reported(daemon, capsys):
    handler = LoghogHandler('not-configured', '127.0.0.1', daemon.tcp_port, print_debug=True)
    good = LoghogHandler('app', '127.0.0.1', daemon.tcp_port)
    try:
        for n in range(3):
            handler.handle(logging.makeLogRecord({'msg': f'to nowhere {n}'}))
        good.handle(logging.makeLogRecord({'msg': 'written'}))
        assert handler.flush() and good.flush()  # rejected messages are done: not resent
        assert handler.rejected == 3 and good.rejected == 0
    finally:
        handler.close()
        good.close()
    # One report, or (when the daemon read them in two batches, so two acks) one per ack
    # and the rest at close: the counts add up to the three.
    reports = re.findall(r'the daemon rejected (\d+) messages: unknown_app \((\d+)\)',
                         capsys.readouterr().err)
    assert reports and all(a == b for a, b in reports)
    assert sum(int(a) for a, _ in reports) == 3
    assert [line_body(line) for line in read_lines(daemon.log_file('app'))] == ['written']


# -- the loghog command ------------------------------------------------------------------------

def run_command(*args, stdin=None):
    return subprocess.run([sys.executable, '-m', 'loghog', '-H', '127.0.0.1', *args],
                          input=stdin, cwd=str(ROOT), capture_output=True, text=True, timeout=30)


def test_command_exit_status_with_acks(daemon):
    port = str(daemon.tcp_port)
    lines = ''.join(f'line {n}\n' for n in range(3000))
    result = run_command('-a', 'app', '-p', port, stdin=lines)
    assert (result.returncode, result.stderr) == (0, '')
    # Acknowledged means written: the lines are there as soon as the command returns.
    assert [line_body(line) for line in read_lines(daemon.log_file('app'))] == \
        [f'line {n}' for n in range(3000)]
    result = run_command('-a', 'nope', '-p', port, 'lost', 'in', 'space')
    assert result.returncode == 65
    assert result.stderr == \
        f'loghog: tcp://127.0.0.1:{port} rejected 1 of 1 messages: unknown_app (1)\n'
    # Without acks the daemon's refusal cannot be seen: the message was handed over.
    assert run_command('-a', 'nope', '-p', port, '--no-ack', 'unseen').returncode == 0
    assert daemon.stop() == 0


def test_command_in_a_long_pipeline_says_rejections_on_the_way(daemon, monkeypatch, capsys):
    # A tail -F | loghog pipeline runs for days: rejections are said on the way, at most
    # once per interval (shortened here), and once more in the last line.
    from loghog import cli, sender
    monkeypatch.setattr(sender, 'REJECTION_REPORT_INTERVAL_S', 0.3)

    def slow_lines():
        yield 'first'
        time.sleep(0.6)   # the pipeline runs on past one interval
        yield 'second'

    monkeypatch.setattr(cli, 'read_lines', lambda stream: slow_lines())
    assert cli.main(['-a', 'nope', '-H', '127.0.0.1', '-p', str(daemon.tcp_port)]) == 65
    err = capsys.readouterr().err
    assert re.search(r'the daemon rejected [12] messages: unknown_app \([12]\)', err), err
    assert err.endswith('rejected 2 of 2 messages: unknown_app (2)\n'), err
    assert daemon.stop() == 0
