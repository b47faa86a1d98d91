"""The daemon side of status: snapshots of a real (in-process) Server, /proc parsing, publishing."""

import json
import os
import socket
import stat

import pytest

from loghog.wire import make_payload
from loghogd.binding import bind_all
from loghogd.config import load_config
from loghogd.facilities import load_facilities
from loghogd.loop import EventLoop
from loghogd.protocol import Rejection
from loghogd.server import Server
from loghogd.stats import Counters
from loghogd.status import (SNAPSHOT_NAME, StatusPublisher, parse_proc_net_udp,
                            read_process, read_udp_sockets)
from loghogd.files import write_atomically
from loghogd.writer import Writer

FACILITIES = """
[app]
rotate = daily
backup_count = 3

[app:web]
rotate = hourly
backup_count = 2
"""


class Peer:
    """What Server.ingest needs to know about a sender."""

    kind = 'udp'

    def __init__(self, host='10.0.0.7'):
        self.peer_host = host
        self.peer = '%s:4000' % host


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def serving(folder, facilities, clock=None):
    """A Server on loopback in ``folder`` with ``facilities`` (a generator for a fixture:
    it yields the server, then closes what it made; a reload still running is waited for)."""
    (folder / 'facilities.conf').write_text(facilities)
    (folder / 'loghogd.conf').write_text(
        '[main]\nlogdir = log\nworkdir = lib\nrundir = run\nfacilities_config = facilities.conf\n'
        '[server]\nlisten_ipv4 = 127.0.0.1:0\nlisten_ipv6 =\n')
    config = load_config(str(folder / 'loghogd.conf'))
    os.makedirs(config.main.rundir)
    counters = Counters()
    loop = EventLoop()
    bound = bind_all(config)
    options = {} if clock is None else {'clock': clock}
    server = Server(config, load_facilities(config.main.facilities_config),
                    Writer(config.main.logdir, counters), counters, loop, bound, **options)
    yield server
    server.reloader.close()
    server.writer.close(server.clock())
    loop.close()
    bound.close()


@pytest.fixture
def server(tmp_path):
    yield from serving(tmp_path, FACILITIES, Clock(1_700_000_000.0))


def message(app='app', module='root', body='hello'):
    return (0, make_payload(app, module, 1700000000, 0, 'web1', body))


def feed(server, frames, peer=None):
    server.ingest(frames, peer or Peer())
    server.writer.flush(server.clock())


def test_snapshot_counts_per_app_facility_and_reason(server):
    publisher = StatusPublisher(server, server.config.main.rundir, 5.0)
    publisher.tick(server.clock())
    feed(server, [message(), message(), message(module='web.api'), message(app='nope'),
                  (0, b'{not json'), Rejection('too_large', 'frame of 1 MiB')],
         Peer('10.0.0.7'))
    feed(server, [(0, b'[]')], Peer('10.0.0.8'))
    server.clock.now += 10
    snapshot = publisher.snapshot(server.clock())
    size = len(message()[1])
    assert snapshot['accepted'] == [
        {'app': 'app', 'facility': 'root', 'messages': 2, 'bytes': 2 * size,
         'messages_last_minute': 2, 'bytes_last_minute': 2 * size},
        {'app': 'app', 'facility': 'web', 'messages': 1, 'bytes': len(message(module='web.api')[1]),
         'messages_last_minute': 1, 'bytes_last_minute': len(message(module='web.api')[1])}]
    assert {r['reason']: r['messages'] for r in snapshot['rejected']} == {
        'bad_fields': 1, 'bad_json': 1, 'too_large': 1, 'unknown_app': 1}
    assert snapshot['rejected_by_peer'] == [{'peer': '10.0.0.7', 'messages': 3},
                                            {'peer': '10.0.0.8', 'messages': 1}]
    assert snapshot['totals']['accepted'] == 3
    assert snapshot['totals']['accepted_per_s'] == 0.3   # 3 messages in the 10 s since start
    assert snapshot['window_s'] == 10.0
    assert snapshot['daemon']['uptime_s'] == 10.0
    assert snapshot['config']['facilities'] == 2
    assert snapshot['config']['last_reload'] is None
    json.dumps(snapshot)    # JSON-ready, nothing else


def test_snapshot_lists_files_with_size_last_write_and_rotation_rule(server):
    publisher = StatusPublisher(server, server.config.main.rundir, 5.0)
    feed(server, [message(body='x' * 10), message(module='web')])
    snapshot = publisher.snapshot(server.clock())
    files = {os.path.basename(f['path']): f for f in snapshot['files']}
    assert set(files) == {'root.log', 'web.log'}
    root = files['root.log']
    assert root['size'] == os.path.getsize(root['path'])
    assert root['last_write'] == server.clock()
    assert (root['rotate'], root['backup_count']) == ('daily', 3)
    assert (files['web.log']['rotate'], files['web.log']['backup_count']) == ('hourly', 2)


def test_snapshot_shows_a_failed_reload(server):
    publisher = StatusPublisher(server, server.config.main.rundir, 5.0)
    with open(server.config.main.facilities_config, 'a') as stream:
        stream.write('[broken\n')
    server.clock.now += 30
    server.reload()
    server.reloader.close()               # the parse ends on its thread ...
    server.reloader.tick(server.clock())  # ... and the loop applies its result
    config = publisher.snapshot(server.clock())['config']
    assert config['last_reload'] == {'at': server.clock(), 'ok': False}
    assert config['reloads_failed'] == 1
    assert config['loaded_at'] == server.clock() - 30


def test_udp_sockets_are_found_by_inode_with_their_kernel_drops(server):
    sockets = [listener.sock for listener in server.datagram_listeners]
    port = sockets[0].getsockname()[1]
    found = read_udp_sockets(sockets)
    assert found == [{'address': '127.0.0.1:%d' % port, 'queue_bytes': 0, 'drops': 0}]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.sendto(b'x' * 100, ('127.0.0.1', port))
    assert read_udp_sockets(sockets)[0]['queue_bytes'] > 0


def test_proc_net_udp_columns():
    text = (
        '   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  '
        'timeout inode ref pointer drops\n'
        '  133: 0100007F:D431 00000000:0000 07 00000000:00000A00 00:00000000 00000000     0'
        '        0 424242 2 0000000000000000 17\n'
        '  134: garbage\n')
    assert parse_proc_net_udp(text) == {424242: (0xA00, 17)}


def test_unreadable_proc_means_unknown_drops_not_zero(server):
    assert read_udp_sockets([listener.sock for listener in server.datagram_listeners],
                            paths=('/nonexistent/udp',)) is None


def test_process_figures():
    process = read_process()
    assert process['pid'] == os.getpid()
    assert process['rss_bytes'] > 1024 * 1024
    assert 3 <= process['open_fds'] < process['max_fds']


def test_status_file_is_written_atomically_for_root_and_group_only(server):
    publisher = StatusPublisher(server, server.config.main.rundir, 5.0)
    publisher.tick(server.clock())
    path = os.path.join(server.config.main.rundir, SNAPSHOT_NAME)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert json.load(open(path))['written_at'] == server.clock()
    assert os.listdir(server.config.main.rundir) == [SNAPSHOT_NAME]   # no temporary left
    assert publisher.next_deadline() == server.clock() + 5.0
    publisher.close()
    assert not os.path.exists(path)


def test_an_unwritable_prometheus_file_is_logged_once_and_retried(server, tmp_path, caplog):
    target = tmp_path / 'missing-folder' / 'loghogd.prom'
    publisher = StatusPublisher(server, server.config.main.rundir, 1.0, str(target))
    for step in range(3):
        publisher.tick(server.clock() + step)
    assert [r.getMessage().split(':')[0] for r in caplog.records] == ['cannot write %s' % target]
    target.parent.mkdir()
    publisher.tick(server.clock() + 3)
    assert target.exists()
    assert caplog.records[-1].getMessage() == 'writing %s again' % target


def test_write_atomically_replaces_and_sets_the_mode(tmp_path):
    path = tmp_path / 'x.prom'
    path.write_text('old')
    write_atomically(str(path), b'new', 0o644)
    assert path.read_text() == 'new'
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert os.listdir(tmp_path) == ['x.prom']


def test_stats_settings_default_to_every_5_s_and_no_prometheus_file(tmp_path):
    (tmp_path / 'loghogd.conf').write_text('')
    config = load_config(str(tmp_path / 'loghogd.conf'))
    assert (config.stats.interval, config.stats.prometheus_file) == (5.0, '')
    (tmp_path / 'loghogd.conf').write_text('[stats]\ninterval = 0.5\nprometheus_file = m/x.prom\n')
    config = load_config(str(tmp_path / 'loghogd.conf'))
    assert (config.stats.interval, config.stats.prometheus_file) == (0.5, str(tmp_path / 'm/x.prom'))
