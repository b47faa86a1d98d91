"""file_per_host's max_hosts: beyond it, lines of new host names go to the facility's
shared file, host name in the line; nothing is lost and it is counted."""

import pytest

from loghogd.errors import ConfigError
from loghogd.facilities import DEFAULT_MAX_HOSTS, HostCap, load_facilities
from loghogd.stats import Counters
from loghogd.writer import Writer

FLEET = """
[fleet]
rotate = daily
backup_count = 3
file_per_host = yes
max_hosts = 2

[fleet:web]
rotate = daily
backup_count = 3

[other]
rotate = daily
backup_count = 3
file_per_host = yes
"""


def load(tmp_path, text=FLEET):
    path = tmp_path / 'facilities.conf'
    path.write_text(text)
    return load_facilities(str(path))


def test_max_hosts_is_inherited_and_has_a_default(tmp_path):
    table = load(tmp_path)
    assert table.lookup('fleet', 'root').max_hosts == 2
    assert table.lookup('fleet', 'web').max_hosts == 2
    assert table.lookup('other', 'root').max_hosts == DEFAULT_MAX_HOSTS == 1000


def test_max_hosts_must_be_a_positive_number(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, FLEET.replace('max_hosts = 2', 'max_hosts = 0'))
    assert ':6: [fleet] max_hosts: 0 is out of range' in info.value.errors[0]


def test_the_first_max_hosts_host_names_keep_their_files(tmp_path):
    table = load(tmp_path)
    fleet, web = table.lookup('fleet', 'root'), table.lookup('fleet', 'web')
    counters = Counters()
    cap = HostCap(counters)
    assert [cap.route(fleet, h) for h in ('a', 'b', 'c', 'a', 'd', 'c')] == \
        ['a', 'b', None, 'a', None, None]
    assert cap.route(web, 'c') == 'c'                  # each facility has its own cap
    assert counters.events['hosts_over_max_hosts'] == 2   # c and d, each counted once


def test_lines_of_hosts_beyond_max_hosts_land_in_the_shared_file(tmp_path):
    table = load(tmp_path)
    fleet = table.lookup('fleet', 'root')
    counters = Counters()
    writer = Writer(str(tmp_path / 'log'), counters)
    for host in ('web1', 'web2', 'web3', 'web1', 'web4', 'web3'):
        writer.add(fleet, host, '%s - hello\n' % host)
    writer.flush(1.0)
    folder = tmp_path / 'log' / 'fleet'
    assert sorted(p.name for p in folder.iterdir()) == ['root.log', 'web1-root.log',
                                                        'web2-root.log']
    assert (folder / 'root.log').read_text() == 'web3 - hello\nweb4 - hello\nweb3 - hello\n'
    assert (folder / 'web1-root.log').read_text() == 'web1 - hello\nweb1 - hello\n'
    assert counters.events['hosts_over_max_hosts'] == 2
    writer.close(2.0)


def test_the_count_is_a_prometheus_counter():
    from loghogd.prometheus import render
    from tests.unit.status_sample import sample
    snapshot = sample()
    snapshot['events'] = dict(snapshot.get('events', {}), hosts_over_max_hosts=7)
    assert 'loghogd_hosts_over_max_hosts_total 7' in render(snapshot).splitlines()
