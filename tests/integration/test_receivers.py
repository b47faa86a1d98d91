"""Receiver processes ([server] workers = 2, issue 18), end to end: a receiver that dies is
logged and started again, and an acknowledging client loses nothing and duplicates nothing;
`loghogd status` shows the receivers and the main process."""

import logging
import os
import signal
import subprocess
import sys

import pytest

from loghog import LoghogHandler
from tests.integration.test_client_delivery import numbered, wait_for_count
from tests.support import ROOT, Loggers, Stream, wait_for


def receiver_pids(daemon):
    """The receivers: the main process's children running loghogd."""
    children = []
    for name in os.listdir('/proc'):
        if name.isdigit():
            try:
                with open('/proc/%s/stat' % name, 'rb') as handle:
                    fields = handle.read().rsplit(b')', 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == daemon.pid:
                children.append(int(name))
    return sorted(children)


@pytest.fixture
def make_logger():
    loggers = Loggers('test.receivers')
    yield loggers
    loggers.close()


def test_a_receiver_killed_mid_stream_is_restarted_and_its_client_loses_and_duplicates_nothing(
        daemon_factory, make_logger):
    daemon = daemon_factory(server={'workers': '2'})
    wait_for(lambda: len(receiver_pids(daemon)) == 2, message='two receivers')
    handler = LoghogHandler('app', '127.0.0.1', daemon.tcp_port)
    stream = Stream(make_logger(handler, logging.INFO), rate=1000)
    try:
        wait_for_count(daemon.log_file('app'), 300)
        before = receiver_pids(daemon)
        for pid in before:          # the client's connection is on one of them
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: len(set(receiver_pids(daemon)) - set(before)) == 2,
                 message='two new receivers')
        count = len(numbered(daemon.log_file('app')))
        wait_for_count(daemon.log_file('app'), count + 300)
    finally:
        total = stream.stop()
    assert handler.flush()
    assert numbered(daemon.log_file('app')) == list(range(total))
    log = daemon.daemon_log.read_text()
    assert log.count('exited unexpectedly (killed by SIGKILL); starting a new one') == 2, log
    line = wait_for(lambda: status_line(daemon, 'restarts 2'), timeout=15,
                    message='the restarts in loghogd status')
    assert 'main pid %d (writer)' % daemon.pid in line
    for pid in receiver_pids(daemon):
        assert 'pid %d, ' % pid in line
    assert daemon.stop() == 0
    assert not [pid for pid in os.listdir('/proc') if pid.isdigit()
                and str(daemon.config_path).encode() in cmdline(pid)]


def status_line(daemon, wanted):
    """The 'receivers' line of `loghogd status`, once it says ``wanted``."""
    result = subprocess.run([sys.executable, '-m', 'loghogd', 'status', '--config',
                             str(daemon.config_path)], cwd=str(ROOT), capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    line, = [line for line in result.stdout.splitlines() if line.startswith('receivers')]
    return line if wanted in line else None


def cmdline(pid):
    try:
        with open('/proc/%s/cmdline' % pid, 'rb') as handle:
            return handle.read()
    except OSError:
        return b''


def test_workers_auto_starts_one_receiver_per_core_the_daemon_may_use(daemon_factory,
                                                                     make_logger):
    cores = min(64, len(os.sched_getaffinity(0)))    # the daemon inherits this affinity
    daemon = daemon_factory(server={'workers': 'auto'})
    wanted = cores if cores > 1 else 0               # one core: one process, no receivers
    wait_for(lambda: len(receiver_pids(daemon)) == wanted, message='%d receivers' % wanted)
    handler = LoghogHandler('app', '127.0.0.1', daemon.tcp_port)
    logger = make_logger(handler, logging.INFO)
    logger.info('through a receiver')
    assert handler.flush()
    wait_for(lambda: 'through a receiver' in daemon.log_file('app').read_text(),
             message='the line')
    if wanted:
        line = status_line(daemon, 'main pid %d' % daemon.pid)
        assert all('pid %d, ' % pid in line for pid in receiver_pids(daemon)), line
    assert daemon.stop() == 0
