"""The sealing key file and ``loghogd seal-init``."""

import os
import stat
import textwrap

import pytest

from loghogd import cli, seal_keys, sealing
from loghogd.config import load_config
from loghogd.errors import ConfigError
from loghogd.facilities import load_facilities


def write_config(tmp_path, interval=None, sealed=True):
    (tmp_path / 'facilities.conf').write_text(textwrap.dedent('''\
        [app]
        rotate = daily
        backup_count = 3
        %s
        [app:web]
        rotate = daily
        backup_count = 3
        ''' % ('sealed = yes' if sealed else '')))
    seal = '[seal]\ninterval = %d\n' % interval if interval else ''
    config = tmp_path / 'loghogd.conf'
    config.write_text('[main]\nlogdir = log\nworkdir = lib\nrundir = run\n'
                      'facilities_config = facilities.conf\n[log]\nfilename = -\n' + seal)
    return config


def test_create_writes_epoch_zero_private_and_refuses_to_replace(tmp_path):
    text = seal_keys.create(str(tmp_path / 'lib'), 60, 1700000000.7)
    k0, t0, interval = sealing.parse_verification_key(text)
    path = seal_keys.key_path(str(tmp_path / 'lib'))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    key = seal_keys.load(path)
    assert (bytes(key.key), key.epoch, key.t0, key.interval) == (k0, 0, 1700000000, 60)
    with pytest.raises(FileExistsError):
        seal_keys.create(str(tmp_path / 'lib'), 60, 1700000000)
    again = seal_keys.create(str(tmp_path / 'lib'), 60, 1700000000, force=True)
    assert again != text


def test_advance_replaces_the_file_and_wipes_the_old_key(tmp_path):
    text = seal_keys.create(str(tmp_path), 10, 1000)
    k0 = sealing.parse_verification_key(text)[0]
    key = seal_keys.load(seal_keys.key_path(str(tmp_path)))
    old = key.key
    key.advance(3)
    assert old == bytearray(32)          # wiped in place
    assert bytes(key.key) == sealing.key_at(k0, 0, 3) and key.epoch == 3
    on_disk = seal_keys.load(key.path)
    assert (on_disk.epoch, bytes(on_disk.key)) == (3, sealing.key_at(k0, 0, 3))
    assert k0.hex() not in open(key.path).read()
    assert stat.S_IMODE(os.stat(key.path).st_mode) == 0o600
    key.advance(2)                         # never backwards
    assert key.epoch == 3
    assert key.epoch_end() == 1000 + 4 * 10 and key.epoch_of(1035) == 3


@pytest.mark.parametrize('content', ['', 'loghog-seal-key 1\nepoch 0\n', 'junk\n',
                                     'loghog-seal-key 1\nepoch 0\nkey 00\nt0 1\ninterval 1\n',
                                     'loghog-seal-key 1\nepoch x\nkey %s\nt0 1\ninterval 1\n'
                                     % ('00' * 32)])
def test_a_damaged_key_file_is_a_config_error(tmp_path, content):
    path = tmp_path / 'seal.key'
    path.write_text(content)
    with pytest.raises(ConfigError, match='damaged sealing key'):
        seal_keys.load(str(path))


def test_missing_key_file_is_none(tmp_path):
    assert seal_keys.load(str(tmp_path / 'seal.key')) is None


def test_check_names_the_sealed_facility_when_there_is_no_key(tmp_path):
    config = load_config(str(write_config(tmp_path)))
    table = load_facilities(config.main.facilities_config)
    errors = seal_keys.check(config, table)
    assert len(errors) == 1
    assert 'facilities.conf:1: [app]' in errors[0] and 'seal-init' in errors[0]
    seal_keys.create(config.main.workdir, 60, 1000)
    assert seal_keys.check(config, table) == []


def test_check_refuses_a_key_made_for_another_interval(tmp_path):
    config = load_config(str(write_config(tmp_path, interval=5)))
    table = load_facilities(config.main.facilities_config)
    seal_keys.create(config.main.workdir, 60, 1000)
    assert 'interval = 5' in seal_keys.check(config, table)[0]


def test_check_ignores_tables_without_sealed_facilities(tmp_path):
    config = load_config(str(write_config(tmp_path, sealed=False)))
    assert seal_keys.check(config, load_facilities(config.main.facilities_config)) == []


def test_sealed_is_inherited_by_sub_facilities(tmp_path):
    config = load_config(str(write_config(tmp_path)))
    table = load_facilities(config.main.facilities_config)
    assert all(f.sealed for f in table) and len(table) == 2


def test_seal_init_prints_the_key_once_and_refuses_without_force(tmp_path, capsys):
    config = write_config(tmp_path, interval=5)
    assert cli.main(['seal-init', '-c', str(config)]) == 0
    out = capsys.readouterr()
    k0, _, interval = sealing.parse_verification_key(out.out)
    assert interval == 5 and 'keep it off this machine' in out.err
    key = seal_keys.load(str(tmp_path / 'lib' / 'seal.key'))
    assert bytes(key.key) == k0
    assert cli.main(['seal-init', '-c', str(config)]) == 1
    out = capsys.readouterr()
    assert out.out == '' and '--force' in out.err
    assert bytes(seal_keys.load(key.path).key) == k0       # untouched
    assert cli.main(['seal-init', '-c', str(config), '--force']) == 0
    assert bytes(seal_keys.load(key.path).key) != k0


def test_daemon_check_config_refuses_a_sealed_facility_without_key(tmp_path, capsys):
    config = write_config(tmp_path)
    assert cli.main(['--check-config', '-c', str(config)]) == 78
    assert 'no sealing key' in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() != 0, reason='only root gives files away')
def test_seal_init_as_root_gives_the_key_to_the_daemon_user(tmp_path, capsys):
    import pwd
    try:
        nobody = pwd.getpwnam('nobody')
    except KeyError:
        pytest.skip('no user nobody')
    config = write_config(tmp_path)
    text = config.read_text().replace('[main]\n', '[main]\nuser = nobody\n')
    config.write_text(text)
    assert cli.main(['seal-init', '-c', str(config)]) == 0
    info = os.stat(tmp_path / 'lib' / 'seal.key')
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (nobody.pw_uid, 0o600)
    assert os.stat(tmp_path / 'lib').st_uid == nobody.pw_uid
