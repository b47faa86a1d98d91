"""The [syslog] section of loghogd.conf and the syslog_programs claims of facilities.conf."""

import pytest

from loghogd.config import load_config
from loghogd.errors import ConfigError
from loghogd.facilities import load_facilities
from loghogd.syslog_routing import SyslogRouter


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_syslog_listeners_are_off_by_default():
    syslog = load_config(None).syslog
    assert (syslog.listen_udp, syslog.listen_tcp, syslog.listen_tls, syslog.unix_socket) == \
        ([], [], [], '')
    assert (syslog.tls_client_certs, syslog.unix_socket_mode, syslog.default_app) == \
        ('required', 0o660, '')


def test_syslog_section_as_in_the_docs(tmp_path):
    path = write(tmp_path, 'loghogd.conf', '[syslog]\n'
                 'listen_udp = 127.0.0.1:5514, [::1]:5514\n'
                 'listen_tcp = 127.0.0.1\n'
                 'unix_socket = run/syslog.sock\n'
                 'unix_socket_mode = 0666\n'
                 'default_app = misc\n')
    syslog = load_config(path).syslog
    assert syslog.listen_udp == [('127.0.0.1', 5514), ('::1', 5514)]
    assert syslog.listen_tcp == [('127.0.0.1', 514)]
    assert syslog.unix_socket == str(tmp_path / 'run' / 'syslog.sock')
    assert syslog.unix_socket_mode == 0o666


def test_syslog_mistakes_are_reported_together(tmp_path):
    path = write(tmp_path, 'loghogd.conf', '[syslog]\n'
                 'listen_udp = localhost:514\n'
                 'tls_client_certs = maybe\n'
                 'unix_socket_mode = 999\n'
                 'listen_tls = 127.0.0.1\n'
                 'listen_sctp = 1\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = '\n'.join(caught.value.errors)
    for key in ('listen_udp', 'tls_client_certs', 'unix_socket_mode', 'listen_sctp'):
        assert '%s' % key in text
    assert 'unknown key' in text


def test_tls_listener_needs_the_servers_certificates(tmp_path):
    path = write(tmp_path, 'loghogd.conf', '[syslog]\nlisten_tls = 127.0.0.1\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert any('listen_tls' in e and 'pemfile' in e for e in caught.value.errors)


FACILITIES = '''
[a]
rotate = daily
backup_count = 1
syslog_programs = nginx, php*
[b]
rotate = daily
backup_count = 1
syslog_programs = php-fpm*, php*
[a:x]
rotate = daily
backup_count = 1
syslog_programs = php*
'''


def test_the_same_claim_at_the_same_depth_is_an_error_naming_both(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_facilities(write(tmp_path, 'facilities.conf', FACILITIES))
    errors = caught.value.errors
    assert len(errors) == 1 and '[b]' in errors[0] and "'php*'" in errors[0] \
        and '[a]' in errors[0] and 'syslog_programs' in errors[0]


def test_the_most_specific_claim_wins(tmp_path):
    table = load_facilities(write(tmp_path, 'facilities.conf',
                                  FACILITIES.replace('php-fpm*, php*', 'php-fpm*, ph*')))
    router = SyslogRouter(table, default_app='b')
    found = {name: router.lookup(name) for name in ('nginx', 'php', 'php-fpm8.2', 'phx', 'zzz')}
    assert {name: f and repr(f) for name, f in found.items()} == {
        'nginx': 'Facility(a:root)',
        'php': 'Facility(a:x)',          # the deeper facility, though [b] claims php-fpm*
        'php-fpm8.2': 'Facility(a:x)',   # depth first, then exact, then literal characters
        'phx': 'Facility(b:root)',       # ph*
        'zzz': 'Facility(b:root)',       # nobody: the default app
    }
    assert SyslogRouter(table).lookup('zzz') is None


def test_a_program_name_with_a_space_is_refused(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_facilities(write(tmp_path, 'facilities.conf',
                              '[a]\nrotate = daily\nbackup_count = 1\nsyslog_programs = my app\n'))
    assert 'syslog_programs' in caught.value.errors[0]


def test_check_config_refuses_a_default_app_that_does_not_exist(tmp_path):
    from loghogd import cli
    write(tmp_path, 'facilities.conf', '[a]\nrotate = daily\nbackup_count = 1\n')
    conf = write(tmp_path, 'loghogd.conf', '[main]\nfacilities_config = facilities.conf\n'
                 '[syslog]\ndefault_app = misc\n')
    assert cli.main(['--check-config', '--config', conf]) == 78
    write(tmp_path, 'facilities.conf', '[misc]\nrotate = daily\nbackup_count = 1\n')
    assert cli.main(['--check-config', '--config', conf]) == 0
