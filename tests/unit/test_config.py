import pytest

from loghogd.config import load_config
from loghogd.errors import ConfigError


def write(tmp_path, text, name='loghogd.conf'):
    path = tmp_path / name
    path.write_text(text)
    return path


def errors_of(path, overrides=None):
    with pytest.raises(ConfigError) as info:
        load_config(str(path), overrides)
    return info.value.errors


def test_defaults_listen_on_localhost_only(tmp_path):
    config = load_config(str(write(tmp_path, '')))
    assert config.listen_addresses() == [('plain', '127.0.0.1', 5566), ('plain', '::1', 5566)]
    assert config.main.logdir == '/var/log/loghogd'
    assert config.main.pidfile == '/run/loghogd/loghogd.pid'
    assert config.server.max_message_size == 65536


def test_address_lists_with_ports_and_brackets(tmp_path):
    path = write(tmp_path, '[server]\nlisten_ipv4 = 127.0.0.1, 192.168.1.10:25566\n'
                 'listen_ipv6 = [::1], [::0]:25577, ::2\ndefault_port = 6000\n'
                 'listen_ipv4_ssl = 127.0.0.1\ndefault_port_ssl = 7000\n'
                 'pemfile = loghogd.conf\ncacert = loghogd.conf\n')
    config = load_config(str(path))
    assert config.listen_addresses() == [
        ('plain', '127.0.0.1', 6000), ('plain', '192.168.1.10', 25566),
        ('plain', '::1', 6000), ('plain', '::', 25577), ('plain', '::2', 6000),
        ('tls', '127.0.0.1', 7000)]


def test_empty_address_list_listens_nowhere(tmp_path):
    config = load_config(str(write(tmp_path, '[server]\nlisten_ipv4 =\nlisten_ipv6 =\n')))
    assert config.listen_addresses() == []


def test_relative_paths_are_relative_to_the_config_folder(tmp_path):
    config = load_config(str(write(tmp_path, '[main]\nlogdir = logs\nrundir = /abs/run\n')))
    assert config.main.logdir == str(tmp_path / 'logs')
    assert config.main.rundir == '/abs/run'
    assert config.main.pidfile == '/abs/run/loghogd.pid'
    assert config.main.facilities_config == str(tmp_path / 'facilities.conf')


def test_command_line_overrides_win(tmp_path):
    path = write(tmp_path, '[main]\nlogdir = logs\n')
    config = load_config(str(path), {('main', 'logdir'): '/elsewhere'})
    assert config.main.logdir == '/elsewhere'


@pytest.mark.parametrize('text, line, expected', [
    ('[main]\nlogdir = x\n[mian]\n', 3, '[mian]: unknown section'),
    ('[main]\nlogdri = x\n', 2, '[main] logdri: unknown key'),
    ('[server]\n\nmax_connections = many\n', 3, "[server] max_connections: 'many' is not a whole number"),
    ('[server]\nmax_connections = 0\n', 2, 'max_connections: 0 is out of range'),
    ('[server]\nlisten_ipv4 = 127.0.0.1, localhost\n', 2, "'localhost' is not an IPv4 address"),
    ('[server]\nlisten_ipv6 = [::1\n', 2, 'missing "]"'),
    ('[server]\nlisten_ipv4 = 127.0.0.1:99999\n', 2, 'out of range'),
    ('[server]\nlisten_ipv4 = ::1\n', 2, 'is not an IPv4 address'),
    ('[compressor]\nlevel = 10\n', 2, '[compressor] level: 10 is out of range: must be from 0 to 9'),
    ('[compressor]\nformat = zip\n', 2, "'zip' is not one of: xz, gzip, bzip2"),
    ('[main]\ndaemon = maybe\n', 2, "'maybe' is not a boolean"),
    ('[log]\nlevel = LOUD\n', 2, 'is not a log level'),
    ('[server]\nmax_message_size = 10Q\n', 2, 'is not a size'),
    ('[main]\nlogdir = a\nlogdir = b\n', 3, 'key appears twice'),
    ('logdir = a\n', 1, 'a setting before any [section]'),
    ('[server]\nworkers = 0\n', 2, '[server] workers: 0 is out of range: must be from 1 to 64 '
     '(or auto: one per core)'),
    ('[server]\nworkers = all\n', 2, "'all' is not a whole number (or auto: one per core)"),
])
def test_each_mistake_names_file_line_section_and_key(tmp_path, text, line, expected):
    path = write(tmp_path, text)
    errors = errors_of(path)
    assert len(errors) == 1, errors
    assert errors[0].startswith('%s:%d: ' % (path, line)), errors
    assert expected in errors[0]


def test_all_mistakes_are_reported_in_one_pass(tmp_path):
    path = write(tmp_path, '[main]\nbogus = 1\n[server]\ndefault_port = -1\nmax_connections = x\n')
    assert len(errors_of(path)) == 3


def test_tls_addresses_need_readable_pem_and_ca(tmp_path):
    path = write(tmp_path, '[server]\nlisten_ipv4_ssl = 127.0.0.1\npemfile = missing.pem\n')
    errors = errors_of(path)
    assert any('pemfile: %s: no such file' % (tmp_path / 'missing.pem') in e for e in errors)
    assert any('cacert: required when listen_ipv4_ssl' in e for e in errors)


def test_sizes_take_suffixes(tmp_path):
    config = load_config(str(write(tmp_path, '[server]\nmax_message_size = 8K\nmax_backlog = 1G\n')))
    assert config.server.max_message_size == 8192
    assert config.server.max_backlog == 1024 ** 3


def test_the_packaged_configuration_is_valid_and_safe():
    from pathlib import Path
    from loghogd.facilities import load_facilities
    conf = Path(__file__).resolve().parents[2] / 'conf'
    config = load_config(str(conf / 'loghogd.conf'))
    assert config.listen_addresses() == [('plain', '127.0.0.1', 5566), ('plain', '::1', 5566)]
    assert config.main.user == 'loghog'
    assert len(load_facilities(str(conf / 'facilities.conf'))) == 0
    dev = load_config(str(conf / 'dev' / 'loghogd.conf'))
    assert dev.main.user == '' and dev.main.logdir == str(conf.parent / 'var' / 'log' / 'loghogd')
    assert len(load_facilities(dev.main.facilities_config)) == 1


def test_workers_auto_is_one_per_core_this_process_may_use(tmp_path):
    import os
    path = write(tmp_path, '[server]\nworkers = auto\n')
    cores = len(os.sched_getaffinity(0))
    assert load_config(str(path)).server.workers == max(1, min(64, cores))
    assert load_config(str(write(tmp_path, ''))).server.workers == 1   # the default


def test_workers_auto_follows_the_cpu_affinity_not_the_machine(tmp_path):
    """A container's or taskset's share of the cores, not os.cpu_count()."""
    import os
    import subprocess
    import sys
    path = write(tmp_path, '[server]\nworkers = auto\n')
    code = ('import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); '
            'from loghogd.config import load_config; '
            'print(load_config(%r).server.workers)' % str(path))
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                             os.path.abspath(__file__)))))
    assert out.stdout.strip() == '1'
