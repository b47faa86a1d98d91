"""loghogd --daemon from source: detaching, the pidfile, signals, a second instance."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from tests.support import ROOT, frame, line_body, send_tcp, wait_for, wait_for_lines


def is_gone(pid):
    """True once ``pid`` has exited (a zombie waiting for init to reap it counts as gone)."""
    try:
        with open('/proc/%d/stat' % pid) as stream:
            return stream.read().rsplit(')', 1)[1].split()[0] in ('Z', 'X')
    except FileNotFoundError:
        return True


@pytest.fixture
def setup(tmp_path_factory):
    # World-traversable, so that a daemon running as nobody can reach its folders.
    tmp_path = Path(tempfile.mkdtemp(prefix='loghogd-daemon-'))
    os.chmod(tmp_path, 0o755)
    (tmp_path / 'facilities.conf').write_text('[app]\nrotate = daily\nbackup_count = 1\n')
    conf = tmp_path / 'loghogd.conf'
    conf.write_text(textwrap.dedent('''\
        [main]
        logdir = log
        workdir = lib
        rundir = run
        [server]
        listen_ipv4 = 127.0.0.1:0
        listen_ipv6 =
        '''))
    started = []

    def start(*extra):
        result = subprocess.run([sys.executable, '-m', 'loghogd', '-c', str(conf), *extra],
                                cwd=str(ROOT), capture_output=True, text=True, timeout=30)
        if result.returncode == 0:
            pid = wait_for(lambda: _read_pid(tmp_path / 'run' / 'loghogd.pid'), message='pidfile')
            started.append(pid)
            wait_for(lambda: (tmp_path / 'run' / 'listen.json').exists(), message='listen.json')
        return result

    yield tmp_path, conf, start
    for pid in started:
        if not is_gone(pid):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(tmp_path, ignore_errors=True)


def _read_pid(path):
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _port(base):
    return json.loads((base / 'run' / 'listen.json').read_text())['tcp'][0][1]


def test_daemon_detaches_writes_pidfile_reloads_and_stops(setup):
    base, conf, start = setup
    result = start('--daemon')
    assert (result.returncode, result.stdout, result.stderr) == (0, '', '')
    pidfile = base / 'run' / 'loghogd.pid'
    pid = _read_pid(pidfile)
    assert pid != os.getpid() and not is_gone(pid)
    assert os.stat(pidfile).st_mode & 0o777 == 0o644   # init scripts run by anyone read it
    assert os.stat(base / 'log' / 'loghogd.log').st_mode & 0o777 == 0o640
    with open('/proc/%d/stat' % pid) as stream:
        assert stream.read().rsplit(')', 1)[1].split()[3] != str(os.getpid())  # not our child
    send_tcp(_port(base), frame('app', 'from the daemon'))
    assert line_body(wait_for_lines(base / 'log' / 'app' / 'root.log', 1)[0]) == 'from the daemon'

    second = start('--daemon')
    assert second.returncode == 75
    assert 'already running as PID %d' % pid in second.stderr

    (base / 'facilities.conf').write_text('[app]\nrotate = daily\nbackup_count = 1\n'
                                          '[later]\nrotate = daily\nbackup_count = 1\n')
    os.kill(pid, signal.SIGHUP)
    wait_for(lambda: 'reloaded' in (base / 'log' / 'loghogd.log').read_text(), message='reload')
    send_tcp(_port(base), frame('later', 'after reload'))
    wait_for_lines(base / 'log' / 'later' / 'root.log', 1)

    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: is_gone(pid), timeout=20, message='daemon to exit')
    assert not pidfile.exists()
    assert 'loghogd stopped' in (base / 'log' / 'loghogd.log').read_text()


def test_stale_pidfile_does_not_prevent_a_start(setup):
    base, conf, start = setup
    first = start('--daemon')
    assert first.returncode == 0
    pid = _read_pid(base / 'run' / 'loghogd.pid')
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: is_gone(pid), message='killed daemon to exit')
    assert (base / 'run' / 'loghogd.pid').exists()
    again = start('--daemon')
    assert again.returncode == 0, again.stderr
    new_pid = _read_pid(base / 'run' / 'loghogd.pid')
    assert new_pid != pid
    os.kill(new_pid, signal.SIGTERM)
    wait_for(lambda: is_gone(new_pid), timeout=20, message='daemon to exit')


def test_start_up_errors_reach_the_terminal_before_detaching(setup, daemon):
    base, conf, start = setup
    conf.write_text(conf.read_text().replace('127.0.0.1:0', '127.0.0.1:%d' % daemon.tcp_port))
    result = start('--daemon')
    assert result.returncode == 71
    assert 'cannot listen on 127.0.0.1:%d: Address already in use' % daemon.tcp_port in result.stderr
    assert not (base / 'run' / 'loghogd.pid').exists()


@pytest.mark.skipif(os.geteuid() != 0, reason='dropping privileges needs root')
def test_privileges_are_dropped_to_the_configured_user(setup):
    base, conf, start = setup
    result = start('--daemon', '--user', 'nobody')
    assert result.returncode == 0, result.stderr
    pid = _read_pid(base / 'run' / 'loghogd.pid')
    status = open('/proc/%d/status' % pid).read()
    assert '\nUid:\t65534\t65534\t65534\t65534\n' in status
    assert '\nGroups:\t65534 \n' in status or '\nGroups:\t65534\n' in status
    send_tcp(_port(base), frame('app', 'as nobody'))
    path = base / 'log' / 'app' / 'root.log'
    wait_for_lines(path, 1)
    assert os.stat(path).st_uid == 65534 and os.stat(base / 'run' / 'loghogd.pid').st_uid == 65534
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: is_gone(pid), timeout=20, message='daemon to exit')


def test_foreground_pidfile_refuses_a_second_instance(daemon):
    pidfile = daemon.rundir / 'loghogd.pid'
    assert _read_pid(pidfile) == daemon.pid
    second = subprocess.run(daemon.command(), cwd=str(ROOT), capture_output=True, text=True, timeout=30)
    assert second.returncode == 75 and 'already running as PID %d' % daemon.pid in second.stderr
    assert daemon.stop() == 0
    assert not pidfile.exists()
