"""``loghogd logs`` against a real daemon's folder: -f across real rotations (nothing lost,
nothing repeated), Ctrl-C, and a reader that goes away (``| head``)."""

import json
import os
import select
import signal
import subprocess
import sys
import time

from loghog import wire
from tests.support import ROOT, file_history, send_tcp, wait_for

FACILITIES = """
[app]
rotate = daily
backup_count = 1000
max_size = 2K
format = json
"""


def logs_command(daemon, *args):
    return [sys.executable, '-m', 'loghogd', 'logs', '-c', str(daemon.config_path)] + list(args)


class LineReader:
    """Lines of a process's stdout pipe, each waited for at most ``timeout`` seconds (a
    missing line fails the test instead of hanging it)."""

    def __init__(self, stream):
        self.fd = stream.fileno()
        self.buffer = b''

    def line(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while b'\n' not in self.buffer:
            left = deadline - time.monotonic()
            assert left > 0 and select.select([self.fd], [], [], left)[0], 'no line in time'
            data = os.read(self.fd, 65536)
            assert data, 'the command ended'
            self.buffer += data
        line, self.buffer = self.buffer.split(b'\n', 1)
        return line


def send(daemon, first, count):
    encoder = wire.MessageEncoder('app', 'web1')
    send_tcp(daemon.tcp_port, b''.join(
        encoder.encode('root', 1, 0, 'message %04d' % n, '{"levelname": "INFO", "n": %d}' % n)
        for n in range(first, first + count)))


def test_follow_reads_every_line_once_across_rotations_and_stops_on_ctrl_c(daemon_factory):
    daemon = daemon_factory(FACILITIES, sections={'compressor': {'format': 'gzip'}})
    folder = daemon.logdir / 'app'
    send(daemon, 0, 5)
    wait_for(lambda: len(file_history(folder)) == 5, 10, message='the first lines')
    # Ctrl-C as a terminal sends it: not ignored, whatever this test's parent ignores (a job
    # started with & in a non-interactive shell ignores SIGINT, and so do its children).
    reader = subprocess.Popen(logs_command(daemon, 'app', '-f', '-o', 'raw'), cwd=str(ROOT),
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        lines = LineReader(reader.stdout)
        got = [json.loads(lines.line())['n'] for _ in range(5)]
        total = 5
        for _ in range(8):   # batches of ~4 KiB: a rotation or two each, while it follows
            send(daemon, total, 20)
            total += 20
            wait_for(lambda: len(file_history(folder)) == total, 10, message='a batch')
        backups = {name for name, _ in file_history(folder) if name != 'live'}
        assert len(backups) >= 8
        while len(got) < total:
            got.append(json.loads(lines.line())['n'])
        assert got == list(range(total))
        reader.send_signal(signal.SIGINT)
        assert reader.wait(10) == 130
        assert lines.buffer + reader.stdout.read() == b''      # no line twice
        assert reader.stderr.read() == b''      # no traceback
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
        reader.stdout.close()
        reader.stderr.close()
    assert daemon.stop() == 0


def test_a_closed_pipe_stops_follow_cleanly_even_with_no_new_line(daemon_factory):
    daemon = daemon_factory(FACILITIES)
    send(daemon, 0, 10)
    wait_for(lambda: len(file_history(daemon.logdir / 'app')) == 10, 10, message='lines')
    reader = subprocess.Popen(logs_command(daemon, 'app', '-f'), cwd=str(ROOT),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = subprocess.Popen(['head', '-n', '3'], stdin=reader.stdout, stdout=subprocess.PIPE)
    reader.stdout.close()
    try:
        assert head.communicate(timeout=10)[0].decode().count('message') == 3
        assert reader.wait(10) == 0      # no new line came: it saw the reader go
        assert reader.stderr.read() == b''
    finally:
        for process in (reader, head):
            if process.poll() is None:
                process.kill()
                process.wait()
        reader.stderr.close()
    assert daemon.stop() == 0
