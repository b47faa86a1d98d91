"""A host-name flood on a file_per_host facility, with a real loghogd: beyond max_hosts
the lines go to the shared file with their host names; nothing is lost; counted in the
status."""

import json

from tests.support import frame, send_tcp, wait_for, wait_for_lines

FACILITIES = """
[fleet]
rotate = daily
backup_count = 3
file_per_host = yes
max_hosts = 3
"""


def test_host_names_beyond_max_hosts_share_the_facilitys_file(daemon_factory):
    daemon = daemon_factory(FACILITIES, sections={'stats': {'interval': '0.2'}})
    data = b''.join(frame('fleet', 'line %d' % n, host='host%02d' % n) for n in range(10))
    send_tcp(daemon.tcp_port, data + frame('fleet', 'sentinel', host='host00'))
    folder = daemon.logdir / 'fleet'
    shared = wait_for_lines(folder / 'root.log', 7)
    assert [line.split(' - ', 1)[1] for line in shared] == \
        ['host%02d - line %d' % (n, n) for n in range(3, 10)]
    wait_for_lines(folder / 'host00-root.log', 2)
    assert sorted(p.name for p in folder.iterdir()) == \
        ['host00-root.log', 'host01-root.log', 'host02-root.log', 'root.log']
    status = daemon.rundir / 'status.json'

    def over_cap():
        events = json.loads(status.read_text())['events'] if status.exists() else {}
        return events.get('hosts_over_max_hosts')
    assert wait_for(over_cap, 10, message='the count in status.json') == 7
    assert 'max_hosts = 3' in daemon.daemon_log.read_text()
    assert daemon.stop() == 0
