"""README promises about the running daemon that no other test held it to, with defaults.

"The command line": ``--version`` prints ``loghogd 0.8.0``; ``[main] user: no such user``
exits 71.  "Signals": SIGUSR1 writes ``status: {"accepted": ..., "connections": ...,
"files": ..., "rejected": ...}`` into the daemon's own log; SIGHUP reopens every log file
"including the daemon's own"; ``loghogd.conf`` is read only at start.  "How errors are
reported": a refused reload writes the ``--check-config`` lines into the daemon's log,
each prefixed ``reload:``, and a start with the same files prints them and exits 78.

Each daemon runs with the defaults but for what a test must set: its folders, a port
chosen at run time, and the log level the README's examples are written at (INFO, the
default; the shared fixture's is DEBUG).
"""

import json
import os
import re
import signal
import subprocess
import sys

from tests.support import ROOT, frame, line_body, send_tcp, wait_for, wait_for_lines

DEFAULT_LEVEL = {'log': {'filename': 'daemon.log', 'level': 'INFO'}}


def readme():
    with open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as stream:
        return ' '.join(stream.read().split())


def own_log(daemon):
    """The daemon's own log file ([log] filename), not its standard error."""
    try:
        return daemon.daemon_log.read_text()
    except FileNotFoundError:
        return ''


def loghogd(*args):
    return subprocess.run([sys.executable, '-m', 'loghogd', *args], cwd=str(ROOT),
                          capture_output=True, text=True, timeout=60)


def test_version_prints_what_the_readme_says():
    said = re.search(r'\| `--version` \| print `([^`]+)` and exit \|', readme())
    assert said, 'README: the --version row is gone'
    run = loghogd('--version')
    assert (run.returncode, run.stdout.strip()) == (0, said.group(1))


def test_a_user_that_does_not_exist_exits_71_and_says_so(daemon_factory, tmp_path):
    said = re.search(r'\| 71 \| the OS refused something at start-up: .*?, `([^`]+)` \|', readme())
    assert said and said.group(1) == '[main] user: no such user'
    daemon = daemon_factory(name='configured')        # a valid configuration, then stopped
    assert daemon.stop() == 0
    run = loghogd('--config', str(daemon.config_path), '--user', 'no-such-user-4242')
    assert run.returncode == 71
    assert run.stderr.startswith('loghogd: %s' % said.group(1)), run.stderr


def test_sigusr1_writes_the_one_line_summary_into_the_daemons_own_log(daemon_factory):
    daemon = daemon_factory(sections=DEFAULT_LEVEL)
    send_tcp(daemon.tcp_port, frame('app', 'one') + frame('app', 'two') + frame('nobody', 'x'))
    wait_for_lines(daemon.log_file('app'), 2)
    wait_for(lambda: "unknown application 'nobody'" in own_log(daemon), message='the refusal')
    example = re.search(r'e\.g\. `status: (\{[^`]*\})`', readme())
    assert example, 'README: the SIGUSR1 example is gone'
    daemon.signal(signal.SIGUSR1)
    wait_for(lambda: 'status: {' in own_log(daemon), message='the summary line')
    line = [l for l in own_log(daemon).splitlines() if 'status: {' in l][0]
    summary = json.loads(line.split('status: ', 1)[1])
    assert set(summary) == set(json.loads(example.group(1)))
    assert (summary['accepted'], summary['rejected'], summary['files']) == (2, 1, 1)
    assert daemon.stop() == 0


def test_sighup_reopens_the_daemons_own_log_moved_away(daemon_factory):
    daemon = daemon_factory(sections=DEFAULT_LEVEL)
    moved = daemon.base / 'daemon.log.moved'
    os.rename(daemon.daemon_log, moved)
    daemon.reload()                                          # waits for the reload's line
    send_tcp(daemon.tcp_port, frame('nobody', 'after the move'))
    wait_for(lambda: "unknown application 'nobody'" in own_log(daemon), message='a new own log')
    assert "unknown application 'nobody'" not in moved.read_text()
    assert daemon.stop() == 0


def test_loghogd_conf_is_read_only_at_start(daemon_factory):
    daemon = daemon_factory(sections=DEFAULT_LEVEL)
    config = daemon.config_path.read_text()
    assert 'logdir = log\n' in config
    daemon.config_path.write_text(config.replace('logdir = log\n', 'logdir = elsewhere\n'))
    daemon.reload()
    send_tcp(daemon.tcp_port, frame('app', 'after the edit'))
    assert [line_body(l) for l in wait_for_lines(daemon.log_file('app'), 1)] == ['after the edit']
    assert not (daemon.base / 'elsewhere').exists()
    assert daemon.stop() == 0


def test_a_refused_reload_logs_the_check_config_lines_prefixed_reload(daemon_factory):
    daemon = daemon_factory(sections=DEFAULT_LEVEL)
    daemon.facilities_path.write_text('[app]\nrotate = dayly\nbackup_count = 3\nflush_evry = 1\n'
                                      '[other:cron]\nrotate = daily\nbackup_count = 1\n')
    check = loghogd('--check-config', '--config', str(daemon.config_path))
    assert check.returncode == 78
    errors = [line[len('loghogd: '):] for line in check.stderr.splitlines()]
    assert len(errors) == 3 and all(str(daemon.facilities_path) in e for e in errors), errors
    daemon.reload()
    wait_for(lambda: 'still using the facilities loaded before' in own_log(daemon),
             message='the refused reload')
    logged = [l.split(' ERROR: ', 1)[1] for l in own_log(daemon).splitlines() if ' ERROR: reload: ' in l]
    assert set('reload: ' + e for e in errors) <= set(logged)
    send_tcp(daemon.tcp_port, frame('app', 'still served'))
    assert [line_body(l) for l in wait_for_lines(daemon.log_file('app'), 1)] == ['still served']
    assert daemon.stop() == 0
    start = loghogd('--config', str(daemon.config_path))
    assert (start.returncode, start.stderr) == (78, check.stderr)


def test_make_run_shows_the_first_screen_the_readme_shows(tmp_path):
    # README, "Running from source": what `make run` prints (the Makefile's lines), then
    # what the daemon says on conf/dev/loghogd.conf.  The copy here differs only in its
    # ports (0: chosen at run time) and in where ../../var is.
    text = open(os.path.join(ROOT, 'README.md'), encoding='utf-8').read()
    block = text[text.index('    loghogd, from source'):]
    screen = [line[4:] for line in block[:block.index('\n\n')].splitlines()]
    makefile = open(os.path.join(ROOT, 'Makefile'), encoding='utf-8').read()
    run_target = makefile[makefile.index('\nrun:'):makefile.index('\ncheck-config:')]
    echoed = [line.replace('$(VENV)', '.venv') for line in
              re.findall(r'^\t@echo "(.*)"$', run_target, re.M)]
    assert screen[:len(echoed)] == echoed
    dev = tmp_path / 'conf' / 'dev'
    dev.mkdir(parents=True)
    source = os.path.join(ROOT, 'conf', 'dev')
    config = open(os.path.join(source, 'loghogd.conf'), encoding='utf-8').read()
    (dev / 'loghogd.conf').write_text(re.sub(r':5514\b', ':0', config.replace(
        'default_port = 5566', 'default_port = 0')))
    (dev / 'facilities.conf').write_text(
        open(os.path.join(source, 'facilities.conf'), encoding='utf-8').read())
    process = subprocess.Popen([sys.executable, '-m', 'loghogd', '--config', str(dev / 'loghogd.conf')],
                               cwd=str(tmp_path), stderr=subprocess.PIPE, text=True)
    try:
        said = []
        while len(said) < len(screen) - len(echoed):
            line = process.stderr.readline()
            assert line, 'loghogd ended: %s' % said
            said.append(line.rstrip('\n'))
        wait_for(lambda: (tmp_path / 'var' / 'run' / 'loghogd' / 'listen.json').exists(),
                 message='listen.json')
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()

    def shape(line):
        line = re.sub(r'^\S+ \S+ ', '', line)             # the time
        line = re.sub(r'\[\d+\]', '[PID]', line)
        return re.sub(r'(\d|\]):\d+\b', r'\1:PORT', line)
    assert [shape(line) for line in said] == [shape(line) for line in screen[len(echoed):]]


def test_the_files_and_permissions_table_of_security_md(daemon_factory):
    # docs/security.md, "Files and permissions": folders 0750; log files, the own log,
    # listen.json and status.json 0640; rotation.json 0600; the pidfile and the Prometheus
    # file 0644.
    daemon = daemon_factory(sections=dict(DEFAULT_LEVEL, stats={'prometheus_file': 'loghogd.prom'}))
    prometheus_file = daemon.base / 'loghogd.prom'
    send_tcp(daemon.tcp_port, frame('app', 'one line'))
    wait_for_lines(daemon.log_file('app'), 1)
    status_file = daemon.rundir / 'status.json'
    wait_for(status_file.exists, message='status.json')
    mode = lambda path: os.stat(path).st_mode & 0o777
    assert {path.name: mode(path) for path in (daemon.logdir, daemon.workdir, daemon.rundir,
                                               daemon.logdir / 'app')} == dict.fromkeys(
        ('log', 'lib', 'run', 'app'), 0o750)
    assert {path.name: mode(path) for path in (daemon.log_file('app'), daemon.daemon_log,
                                               daemon.rundir / 'listen.json', status_file)} == dict.fromkeys(
        ('root.log', 'daemon.log', 'listen.json', 'status.json'), 0o640)
    assert mode(daemon.rundir / 'loghogd.pid') == 0o644
    wait_for(prometheus_file.exists, message='the Prometheus file')
    assert mode(prometheus_file) == 0o644
    assert daemon.stop() == 0
    assert mode(daemon.workdir / 'rotation.json') == 0o600


def test_a_log_folder_that_cannot_be_created_exits_71_and_says_which(daemon_factory, tmp_path):
    # README, exit status 71: "a folder that cannot be created".  A file where a parent
    # folder should be stops even root.
    daemon = daemon_factory(name='configured')
    assert daemon.stop() == 0
    (tmp_path / 'not-a-folder').write_text('a file\n')
    run = loghogd('--config', str(daemon.config_path), '-L', str(tmp_path / 'not-a-folder' / 'log'))
    assert run.returncode == 71, run.stderr
    assert run.stderr.startswith('loghogd: ') and 'not-a-folder' in run.stderr, run.stderr
    assert not (daemon.rundir / 'listen.json').exists()


def test_out_of_descriptors_the_daemon_warns_pauses_accepting_and_resumes(tmp_path):
    # docs/security.md: "If even the hard limit is too low, it warns; accepting then pauses
    # on EMFILE"; "running out of file descriptors (EMFILE) | stops accepting for a second,
    # logged".  The daemon runs under a hard limit of 64 descriptors (prlimit).
    import shutil
    import socket
    import pytest
    from tests.support import Daemon
    if shutil.which('prlimit') is None:
        pytest.skip('needs prlimit (util-linux)')

    class Limited(Daemon):
        def command(self):
            return ['prlimit', '--nofile=64:64', '--'] + super().command()

    daemon = Limited(tmp_path, '[app]\nrotate = daily\nbackup_count = 1\n').start()
    held = []
    try:
        assert 'but the limit is 64' in daemon.output()
        for _ in range(80):
            held.append(socket.create_connection(('127.0.0.1', daemon.tcp_port), timeout=10))
        wait_for(lambda: 'cannot accept connections: Too many open files; pausing for 1s'
                 in daemon.output(), message='the EMFILE pause')
        for sock in held:
            sock.close()
        held = []
        send_tcp(daemon.tcp_port, frame('app', 'after the pause'))
        assert [line_body(l) for l in wait_for_lines(daemon.log_file('app'), 1)] == ['after the pause']
        # "logged once each way"
        assert 'not accepting new connections for now' in daemon.output()
        assert 'accepting connections again' in daemon.output()
        assert daemon.stop() == 0
    finally:
        for sock in held:
            sock.close()
        daemon.kill()


def test_rejections_are_said_on_stderr_at_most_every_10_s_and_summed(daemon, capfd):
    # README, The Python client: "Messages the daemon rejects are said on standard error
    # (at most every 10 s)"; docs/client.md: "summed up at most every 10 s".  Five rejected
    # records acknowledged one by one within a second or two: one line at once, the rest
    # summed at close, never a line per record.
    import logging as logging_module
    from loghog import LoghogHandler
    handler = LoghogHandler('nowhere', '127.0.0.1', daemon.tcp_port)
    said = []

    def reports():
        said.append(capfd.readouterr().err)
        return re.findall(r'the daemon rejected (\d+) messages: unknown_app \((\d+)\)', ''.join(said))
    try:
        handler.handle(logging_module.makeLogRecord({'msg': 'rejected 0'}))
        assert handler.flush()
        wait_for(reports, message='the first report')
        for n in range(1, 5):
            handler.handle(logging_module.makeLogRecord({'msg': 'rejected %d' % n}))
            assert handler.flush()
        assert reports() == [('1', '1')]
    finally:
        handler.close()
    assert reports() == [('1', '1'), ('4', '4')]
    assert handler.rejected == 5
