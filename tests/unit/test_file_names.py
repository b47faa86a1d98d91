"""Operator slips refused before they cost a line: every name the daemon makes fits in a
file name (NAME_MAX, backups and compression included), and no app clashes with the
daemon's own log."""

import os

import pytest

from loghogd import cli
from loghogd import converters as conv
from loghogd.facilities import load_facilities

LONGEST_SUFFIX = '.2026-11-26-00-00-00-000000.bz2.partial'


def write_pair(tmp_path, facilities, log_filename=None):
    (tmp_path / 'facilities.conf').write_text(facilities)
    path = tmp_path / 'loghogd.conf'
    log = '[log]\nfilename = %s\n' % log_filename if log_filename else ''
    path.write_text('[main]\nlogdir = log\nworkdir = lib\nrundir = run\n' + log +
                    '[server]\nlisten_ipv4 = 127.0.0.1:0\nlisten_ipv6 =\n')
    return path


def check(tmp_path, capsys, facilities, log_filename=None):
    path = write_pair(tmp_path, facilities, log_filename)
    code = cli.main(['--check-config', '--config', str(path)])
    return code, capsys.readouterr().err.splitlines()


def section(name, per_host=False):
    return '[%s]\nrotate = daily\nbackup_count = 3\n%s' % (
        name, 'file_per_host = yes\n' if per_host else '')


def test_module_names_too_long_for_a_file_name_fail_check_config(tmp_path, capsys):
    module = '.'.join(['m' * 100] * 3)
    code, err = check(tmp_path, capsys, section('app') + section('app:' + module))
    assert code == 78
    assert len(err) == 1
    assert err[0].startswith('loghogd: %s:4: [app:mmm' % (tmp_path / 'facilities.conf'))
    assert 'bytes too long' in err[0] and '255' in err[0]


def test_the_longest_accepted_names_fit_with_every_backup_suffix(tmp_path):
    two = '.'.join(['m' * 100] * 2)
    table = load_facilities(str(write_facilities(tmp_path, section('a' * 100)
                                                 + section('%s:%s' % ('a' * 100, two)))))
    for facility in table:
        assert len(facility.file_name() + LONGEST_SUFFIX) <= 255


def write_facilities(tmp_path, text):
    path = tmp_path / 'facilities.conf'
    path.write_text(text)
    return path


def test_file_per_host_needs_room_for_a_host_name(tmp_path, capsys):
    two = '.'.join(['m' * 100] * 2)
    code, err = check(tmp_path, capsys, section('app', per_host=True) + section('app:' + two))
    assert code == 78 and '<host>-' in err[0] and ':5: [app:' in err[0]
    code, err = check(tmp_path, capsys, section('app') + section('app:' + two))
    assert (code, err) == (0, [])


@pytest.mark.parametrize('host', ['h' * 100, 'h' * 255, 'x.' * 120, '\u00e9' * 200, 'a' * 70000])
def test_long_host_names_are_shortened_with_a_hash_to_fit(tmp_path, host):
    module = 'm' * 100 + '.' + 'n' * 60       # leaves less than 100 bytes for the host
    table = load_facilities(str(write_facilities(
        tmp_path, section('app', per_host=True) + section('app:' + module))))
    facility = table.lookup('app', module)
    name = facility.file_name(conv.safe_host(host))
    assert len((name + LONGEST_SUFFIX).encode()) <= 255
    assert name.endswith('-%s.log' % module)
    assert os.sep not in name
    assert facility.file_name(conv.safe_host(host)) == name                 # the same every time
    assert facility.file_name(conv.safe_host(host[:-1] + 'Z')) != name      # others differ


def test_short_host_names_keep_the_names_they_always_had():
    assert conv.safe_host('web1.example.com') == 'web1.example.com'
    assert conv.safe_host('../../etc/cron.d/x') == '_.._etc_cron.d_x'
    assert conv.safe_host('..') == 'unknown'
    assert conv.safe_host('h' * 100) == 'h' * 100
    long = conv.safe_host('h' * 101)
    assert len(long) == 100 and long.startswith('h' * 89 + '-')


def test_an_app_folder_that_is_the_daemons_own_log_fails_check_config(tmp_path, capsys):
    code, err = check(tmp_path, capsys, section('app') + section('loghogd.log'))
    assert code == 78 and len(err) == 1
    assert err[0].startswith('loghogd: %s:4: [loghogd.log]' % (tmp_path / 'facilities.conf'))
    assert "daemon's own log" in err[0]


def test_the_daemons_own_log_inside_an_app_folder_fails_check_config(tmp_path, capsys):
    code, err = check(tmp_path, capsys, section('app'), log_filename='log/app/root.log')
    assert code == 78 and ':1: [app]' in err[0] and 'move it' in err[0]
    code, err = check(tmp_path, capsys, section('app'), log_filename='log/loghogd.log')
    assert (code, err) == (0, [])


def test_an_own_log_name_too_long_for_its_backups_fails_check_config(tmp_path, capsys):
    code, err = check(tmp_path, capsys, section('app'), log_filename='x' * 230 + '.log')
    assert code == 78 and '[log] filename' in err[0] and 'too long' in err[0]
