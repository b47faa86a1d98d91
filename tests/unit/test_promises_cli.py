"""The README's command-line examples, run as written (only the file names differ).

"How errors are reported" shows what ``loghogd --check-config`` prints for three mistakes
of facilities.conf and one of loghogd.conf; `make check-config` promises silence and 0 for
conf/dev.  These run the real ``main`` on files shaped so that the mistakes are on the
lines the README names.
"""

import os
import re

from loghogd import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The facilities.conf the README's example output describes: [my-first-app] with rotate
# on line 2 and flush_evry on line 4, and [other-app:cron] on line 6.
FACILITIES = """[my-first-app]
rotate = dayly
backup_count = 14
flush_evry = 1

[other-app:cron]
rotate = daily
backup_count = 14
"""


def readme():
    with open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as stream:
        return stream.read()


def readme_check_config_output():
    """The lines the README shows between ``$ loghogd --check-config`` and ``$ echo $?``."""
    text = readme()
    block = text[text.index('    $ loghogd --check-config\n') + len('    $ loghogd --check-config\n'):]
    block = block[:block.index('    $ echo $?\n')]
    status = text[text.index('    $ echo $?\n') + len('    $ echo $?\n'):].splitlines()[0]
    return [line[4:] for line in block.splitlines()], int(status.strip())


def daemon_conf(tmp_path, server_lines=''):
    path = tmp_path / 'loghogd.conf'
    path.write_text('[main]\nlogdir = log\nworkdir = lib\nrundir = run\n[server]\n'
                    + server_lines + 'listen_ipv6 =\n')
    return path


def test_check_config_prints_what_the_readme_shows_and_exits_78(tmp_path, capsys):
    (tmp_path / 'facilities.conf').write_text(FACILITIES)
    conf = daemon_conf(tmp_path, 'listen_ipv4 = 127.0.0.1:0\n')
    lines, status = readme_check_config_output()
    assert len(lines) == 3 and status == 78
    assert cli.main(['--check-config', '--config', str(conf)]) == status
    out, err = capsys.readouterr()
    assert out == ''
    expected = [line.replace('/etc/loghogd/facilities.conf', str(tmp_path / 'facilities.conf'))
                for line in lines]
    assert sorted(err.splitlines()) == sorted(expected)


def test_a_loghogd_conf_mistake_is_reported_as_the_readme_shows(tmp_path, capsys):
    said = re.search(r"\(`(loghogd: /etc/loghogd/loghogd.conf:5: \[server\] listen_ipv4: "
                     r"'localhost' is not an IPv4 address)`\)", ' '.join(readme().split()))
    assert said, 'README: the loghogd.conf example is gone'
    (tmp_path / 'facilities.conf').write_text('[app]\nrotate = daily\nbackup_count = 1\n')
    conf = tmp_path / 'loghogd.conf'
    conf.write_text('[main]\nlogdir = log\nrundir = run\n[server]\nlisten_ipv4 = localhost\n')
    assert cli.main(['--check-config', '--config', str(conf)]) == 78
    assert capsys.readouterr().err.splitlines() == [
        said.group(1).replace('/etc/loghogd/loghogd.conf', str(conf))]


def test_make_check_config_on_conf_dev_is_silent_and_exits_0(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert cli.main(['--check-config', '--config', 'conf/dev/loghogd.conf']) == 0
    assert capsys.readouterr() == ('', '')


def test_a_comment_after_a_value_needs_white_space_before_it(tmp_path, capsys):
    # README: "`;` and `#` start a comment ... after a value when white space precedes them
    # (`backup_count = 14 ; two weeks`); a `secret` therefore cannot contain ` ;` or ` #`."
    from loghogd.facilities import load_facilities
    path = tmp_path / 'facilities.conf'
    path.write_text('[app]\nrotate = daily\nbackup_count = 14 ; two weeks\n'
                    'secret = a;b#c ;the rest is a comment\n')
    table = load_facilities(str(path))
    facility = table.lookup('app', '')
    assert facility.backup_count == 14
    assert facility.secret == 'a;b#c'


def test_command_line_options_name_their_keys_win_and_take_relative_paths_from_the_cwd(
        tmp_path, monkeypatch):
    # README, "The command line": the option table, and "A command-line value wins over the
    # file; relative paths given on the command line are taken from the current folder."
    conf_dir, cwd = tmp_path / 'etc', tmp_path / 'here'
    conf_dir.mkdir()
    cwd.mkdir()
    (conf_dir / 'facilities.conf').write_text('[app]\nrotate = daily\nbackup_count = 1\n')
    (cwd / 'f.conf').write_text('[other]\nrotate = daily\nbackup_count = 1\n')
    conf = conf_dir / 'loghogd.conf'
    conf.write_text('[main]\nlogdir = log\nworkdir = lib\nrundir = run\npidfile = p.pid\n'
                    'daemon = yes\nuser = nobody\n[log]\nfilename = own.log\n')
    monkeypatch.chdir(cwd)
    config, table = cli.load(cli.build_parser().parse_args([
        '-c', str(conf), '-F', 'f.conf', '-L', 'logs', '-l', 'mine.log', '-p', 'x.pid',
        '--work-dir', 'work', '--run-dir', 'rundir', '--user', 'root', '-f']))
    assert (config.main.facilities_config, config.main.logdir, config.log.filename,
            config.main.pidfile, config.main.workdir, config.main.rundir) == tuple(
        str(cwd / name) for name in ('f.conf', 'logs', 'mine.log', 'x.pid', 'work', 'rundir'))
    assert (config.main.user, config.main.daemon) == ('root', False)
    assert table.lookup('other', '') is not None and table.lookup('app', '') is None
    config, _ = cli.load(cli.build_parser().parse_args(['-c', str(conf)]))
    assert (config.main.logdir, config.main.pidfile, config.main.daemon) == (
        str(conf_dir / 'log'), str(conf_dir / 'p.pid'), True)


def test_the_daemons_own_log_takes_every_rotate_value_but_size(tmp_path):
    # README, loghogd.conf: "[log] when ... any `rotate` value of facilities.conf except
    # `size`" (the own log has no max_size: `size` would mean it never rotates).
    from loghogd.config import load_config
    from loghogd.errors import ConfigError
    path = tmp_path / 'loghogd.conf'
    for value in ('hourly', 'daily', 'midnight', 'weekly', 'monthly', 'yearly', 'annually',
                  '*/15 * * * *'):
        path.write_text('[log]\nwhen = %s\n' % value)
        assert load_config(str(path)).log.when.text == value
    path.write_text('[main]\nlogdir = log\n[log]\nwhen = size\n')
    try:
        load_config(str(path))
    except ConfigError as exc:
        assert len(exc.errors) == 1 and exc.errors[0].startswith('%s:4: [log] when: ' % path), exc.errors
    else:
        raise AssertionError('[log] when = size was accepted')


def test_a_second_signal_ends_the_loghog_command_at_once():
    # docs/client.md and loghog(1): stopped by SIGTERM it tries for 2 s more to deliver,
    # "a second signal ends it at once".  Against a daemon that never answers, the first
    # SIGTERM starts those 2 s; the second, in them, must end the command by the signal
    # (status -15), not by the stop's own exit (143).
    import signal
    import subprocess
    import sys
    import time
    from tests.unit.test_client_fakes import FrameServer
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
            process.send_signal(signal.SIGTERM)
            time.sleep(0.3)        # the first is being handled: inside the 2 s of delivery
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert process.returncode == -signal.SIGTERM


def make_dry_run(*targets):
    """The commands `make` would run for ``targets`` (``make -n -B``), run nothing."""
    import shutil
    import subprocess
    if shutil.which('make') is None:
        import pytest
        pytest.skip('needs make')
    return subprocess.run(['make', '-n', '-B', *targets], cwd=ROOT, capture_output=True,
                          text=True, check=True, timeout=60).stdout


def test_make_clean_removes_the_venv_var_and_build():
    # README: "make clean  # removes .venv, var/ and build/"
    removed = [command.split()[2:] for command in make_dry_run('clean').splitlines()
               if command.startswith('rm -rf ')]
    assert {'.venv', 'var', 'build'} <= {name for names in removed for name in names}


def test_make_installs_editable_with_both_extras_and_keeps_pips_output_in_a_log():
    # README, "Running from source": "pip install -e '.[server,test,fast]'; pip's output goes
    # to .venv/install.log, shown only if it fails".
    commands = make_dry_run('.venv/.installed')
    install = [line for line in commands.splitlines()
               if "pip install -e '.[server,test,fast]'" in line]
    assert len(install) == 1
    assert '> .venv/install.log 2>&1 || { tail -n 40 .venv/install.log' in install[0]


def test_make_run_config_listens_for_syslog_where_the_readme_says():
    # README, "Receiving syslog": "make run listens for syslog on 127.0.0.1:5514 (UDP and
    # TCP) and on var/run/loghogd/syslog.sock".
    from loghogd.config import load_config
    dev = load_config(os.path.join(ROOT, 'conf', 'dev', 'loghogd.conf'))
    assert dev.syslog.listen_udp == dev.syslog.listen_tcp == [('127.0.0.1', 5514)]
    assert dev.syslog.unix_socket == os.path.join(ROOT, 'var', 'run', 'loghogd', 'syslog.sock')


def test_loghog_timeout_inf_waits_for_a_late_daemon_and_is_bounded_by_a_week():
    # docs/client.md and loghog(1): "--timeout inf waits as long as it takes (a week at most)".
    import threading
    from loghog import sender
    from loghog.cli import main
    from tests.unit.test_client_fakes import FrameServer, reserve_port
    assert sender.MAX_CLOSE_TIMEOUT_S == 7 * 24 * 3600
    reserved = reserve_port()
    servers = []
    late = threading.Timer(1.5, lambda: servers.append(FrameServer(reserved=reserved)))
    late.start()
    try:
        assert main(['-a', 'app', '-H', '127.0.0.1', '-p', str(reserved.getsockname()[1]),
                     '--timeout', 'inf', 'patience']) == 0
        assert [m['body'] for m in servers[0].wait_for(1)] == ['patience']
    finally:
        late.join()
        for server in servers:
            server.stop()


def test_only_root_may_name_another_user(tmp_path, capsys, monkeypatch):
    # README, loghogd.conf `user`: "bind as root, then run as this user; only root may name
    # another user".  The suite runs as root: the check is asked as an unprivileged uid.
    import pwd
    (tmp_path / 'facilities.conf').write_text('[app]\nrotate = daily\nbackup_count = 1\n')
    conf = daemon_conf(tmp_path, 'listen_ipv4 = 127.0.0.1:0\n')
    other = pwd.getpwnam('daemon')
    monkeypatch.setattr(os, 'geteuid', lambda: other.pw_uid + 1)
    umask = os.umask(0o022)                       # main() sets the daemon's; put ours back
    try:
        assert cli.main(['--config', str(conf), '--user', 'daemon']) == 71
    finally:
        os.umask(umask)
    assert capsys.readouterr().err == (
        'loghogd: [main] user = daemon: only root can switch to another user\n')
    assert not (tmp_path / 'run' / 'listen.json').exists()
