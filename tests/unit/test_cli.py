"""The loghogd command's exit statuses: sysexits, never Python's anonymous 1 or 2."""

import logging
import os
import signal

import pytest

from loghogd import cli

FACILITIES = '[app]\nrotate = daily\nbackup_count = 3\n'


def config_pair(tmp_path):
    (tmp_path / 'facilities.conf').write_text(FACILITIES)
    path = tmp_path / 'loghogd.conf'
    path.write_text('[main]\nlogdir = log\nworkdir = lib\nrundir = run\n[log]\nfilename = -\n'
                    '[server]\nlisten_ipv4 = 127.0.0.1:0\nlisten_ipv6 =\n')
    return path


@pytest.mark.parametrize('argv', [['--bogus'], ['-c'], ['--config', 'a', 'extra']])
def test_a_bad_command_line_exits_64_with_the_usage(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 64
    err = capsys.readouterr().err
    assert err.startswith('usage: loghogd') and 'error:' in err


def test_a_bug_at_start_exits_70_and_says_it_is_one(tmp_path, monkeypatch, capsys):
    def broken(config, table):
        raise KeyError('something nobody expected')
    monkeypatch.setattr(cli, 'start', broken)
    assert cli.main(['--config', str(config_pair(tmp_path))]) == 70
    err = capsys.readouterr().err
    assert "KeyError: 'something nobody expected'" in err     # the traceback
    assert 'loghogd: internal error' in err


def test_check_config_of_a_good_pair_is_silent_and_exits_0(tmp_path, capsys):
    assert cli.main(['--check-config', '--config', str(config_pair(tmp_path))]) == 0
    assert capsys.readouterr() == ('', '')


def test_check_config_reports_the_mistakes_of_both_files_in_one_run(tmp_path, capsys):
    path = config_pair(tmp_path)
    path.write_text(path.read_text() + 'max_conections = 10\n')
    (tmp_path / 'facilities.conf').write_text(FACILITIES + '[other]\nrotate = daily\n')
    assert cli.main(['--check-config', '--config', str(path)]) == 78
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert err[0].startswith('loghogd: %s:10: [server] max_conections' % path)
    assert err[1].startswith('loghogd: %s:4: [other]: required key "backup_count"' % (tmp_path / 'facilities.conf'))


@pytest.fixture
def own_logger_restored():
    """main() configures the 'loghogd' logger for a daemon: put it back for other tests."""
    logger = logging.getLogger('loghogd')
    saved = (logger.handlers[:], logger.propagate, logger.level)
    yield
    logger.handlers[:], logger.propagate, logger.level = saved


def test_sigterm_is_handled_before_listen_json_says_the_daemon_is_up(tmp_path, monkeypatch,
                                                                     own_logger_restored):
    """Init scripts and tests take listen.json as "started"; a SIGTERM from then on must
    be a clean stop (exit 0), never Python's default death."""
    real = cli.write_listen_file
    seen = []

    def write_listen_file(rundir, bound):
        seen.append(signal.getsignal(signal.SIGTERM))
        path = real(rundir, bound)
        if seen[-1] in (signal.SIG_DFL, None):
            raise RuntimeError('SIGTERM would kill the daemon here')
        os.kill(os.getpid(), signal.SIGTERM)     # handled: the loop stops cleanly
        return path

    monkeypatch.setattr(cli, 'write_listen_file', write_listen_file)
    assert cli.main(['--config', str(config_pair(tmp_path))]) == 0
    assert seen and seen[0] not in (signal.SIG_DFL, None)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL   # restored at the end
