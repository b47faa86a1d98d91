"""Adversarial round 5: "nothing lost, nothing written twice", with DEFAULT settings.

Real loghogd processes on loopback (ports chosen at run time), restarted in the SAME
folders (as an init script restarts the packaged daemon: its rotation state, backups and
compressions in progress are all still there), and the real client.

Tests marked ``xfail(strict=..., reason='A6-N: ...')`` are open findings; the others are
attacks that found nothing, kept as cheap guards of a real promise.
"""

import collections
import fcntl
import json
import logging
import os
import re
import socket
import struct
import subprocess
import sys
import termios
import time

import pytest

from loghog import LoghogHandler
from loghog.handler import record_fields
from loghog.wire import make_ack as ack
from tests.integration.test_client_acks import CuttableProxy
from tests.integration.attack.peers import Peer, answer_handshake
from tests.support import (Stream, backup_names, file_history, free_port, line_body, read_lines,
                           wait_for)


SIZE_ROTATED = """
[app]
rotate = size
max_size = 64K
backup_count = 1000
"""

MSG_RE = re.compile(r'^msg (\d+)$')


def numbers_in_history(folder, base='root.log'):
    """Counter of n for every 'msg n' line of ``base``'s whole history (backups and live)."""
    found = collections.Counter()
    for _, line in file_history(folder, base):
        parts = line.split(' - ', 2)
        if len(parts) == 3:
            match = MSG_RE.match(parts[2])
            if match:
                found[int(match.group(1))] += 1
    return found


def restartable(daemon_factory, facilities, **server):
    """A daemon on a fixed loopback port (chosen now), restarted in its own folders."""
    port = free_port()
    server = dict(server, listen_ipv4='127.0.0.1:%d' % port)
    return daemon_factory(facilities, server=server), port


def leftovers(folder):
    return sorted(name for name in os.listdir(folder) if name.endswith('.partial'))


# -- 1. kill -9 while files rotate and compress, restarted in the same folders ----------------

def test_kill_9_during_size_rotation_and_compression_restarted_in_place_loses_nothing(
        daemon_factory, make_logger):
    """A 64K file rotating many times a second, its backups compressed by child processes:
    kill -9 three times at random moments (mid-rename, mid-compression), each time restarted
    in the same folders.  Every record is in the history once the handler is flushed; only
    records in flight at a kill may be there twice; no compression is left half done."""
    daemon, port = restartable(daemon_factory, SIZE_ROTATED)
    folder = daemon.logdir / 'app'
    handler = LoghogHandler('app', '127.0.0.1', port)
    logger = make_logger(handler, logging.INFO)
    stream = Stream(logger, rate=3000)
    try:
        for _ in range(3):
            target = stream.count + 1500
            wait_for(lambda: stream.count > target, timeout=20, message='1500 more records')
            wait_for(lambda: len(backup_names(folder)) >= 1, timeout=20, message='a backup')
            daemon.kill()
            daemon.start()
        wait_for(lambda: stream.count > target + 1500, timeout=20, message='more records')
    finally:
        total = stream.stop()
    # flush() returns at once while the client has not yet reconnected (README): ask again.
    wait_for(handler.flush, timeout=30, message='every record acknowledged')
    assert daemon.stop() == 0
    counts = numbers_in_history(folder)
    missing = [n for n in range(total) if not counts[n]]
    assert not missing, '%d of %d records missing, first %s' % (len(missing), total, missing[:5])
    twice = sum(1 for c in counts.values() if c > 1)
    # At most what was in flight at each of the three kills (3,000 records a second).
    assert twice < 3 * 3000, twice
    assert not leftovers(folder)


# -- 2. reloads that add and remove the facility an acked stream writes to --------------------

WITH_WEB = """
[app]
rotate = daily
backup_count = 3

[app:web]
rotate = daily
backup_count = 3
"""

WITHOUT_WEB = """
[app]
rotate = daily
backup_count = 3
"""


def module_logger(name, handler):
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return logger


def test_reloads_that_remove_and_restore_a_module_facility_mid_stream_write_each_line_once(
        daemon_factory):
    """An acked stream into [app:web] while SIGHUPs take the facility away (its records go
    to [app]'s root.log) and give it back, six times: no crash, so every record is in
    web.log or root.log exactly once."""
    daemon = daemon_factory(WITH_WEB)
    handler = LoghogHandler('app', '127.0.0.1', daemon.tcp_port)
    logger = module_logger('web.round5', handler)
    stream = Stream(logger, rate=3000)
    try:
        for index in range(6):
            target = stream.count + 300
            wait_for(lambda: stream.count > target, timeout=20, message='300 more records')
            daemon.reload(WITHOUT_WEB if index % 2 == 0 else WITH_WEB)
    finally:
        total = stream.stop()
        logger.removeHandler(handler)
    assert handler.flush()
    handler.close()
    assert daemon.stop() == 0
    counts = numbers_in_history(daemon.logdir / 'app', 'web.log') + numbers_in_history(
        daemon.logdir / 'app', 'root.log')
    missing = [n for n in range(total) if not counts[n]]
    twice = sorted(n for n, c in counts.items() if c > 1)
    assert not missing and not twice, (len(missing), missing[:5], len(twice), twice[:5])


# -- 4. UDP: a record just under the size limit does not fit in a datagram -------------------

# The most an IPv4 UDP datagram carries: 65,535 bytes less the IP and UDP headers.
MAX_UDP_PAYLOAD = 65_535 - 20 - 8


def test_a_record_just_under_the_size_limit_over_udp_is_delivered_or_its_loss_said(
        daemon, make_logger, capfd):
    handler = LoghogHandler('app', '127.0.0.1', daemon.udp_port, stream=False)
    logger = make_logger(handler, logging.INFO)
    # A record whose frame is 65,520 bytes, as the handler encodes it.
    size = 65_000
    for _ in range(3):
        record = logger.makeRecord(logger.name, logging.INFO, __file__, 1, 'x' * size, None, None)
        frame = handler._encoder.encode(record.name, int(record.created),
                                        int(record.msecs * 10**6), 'x' * size,
                                        record_fields(record, {}))
        size += 65_520 - len(frame)
    assert MAX_UDP_PAYLOAD < len(frame) <= 8 + 64 * 1024, len(frame)
    logger.handle(record)
    logger.info('after the big one')
    path = daemon.log_file('app')
    wait_for(lambda: any(line.endswith(' - after the big one') for line in read_lines(path)),
             timeout=10, message='the sentinel')
    handler.close()
    bodies = [line_body(line) for line in read_lines(path)]
    err = capfd.readouterr().err
    assert bodies[0].startswith('xxxx') or re.search(r'(lost|not delivered|too big)', err), (
        [b[:20] for b in bodies], err)


# -- 5. an outside tool moves the live file away, then SIGHUP ---------------------------------

def test_live_file_moved_away_then_sighup_mid_stream_writes_each_line_once(daemon, make_logger):
    """README: SIGHUP reopens every log file "so that an outside tool may move them".  Four
    times in a 3,000 records/s acked stream: mv root.log away, SIGHUP.  No crash: every
    record is in the moved files or the new root.log, exactly once."""
    handler = LoghogHandler('app', '127.0.0.1', daemon.tcp_port)
    logger = make_logger(handler, logging.INFO)
    stream = Stream(logger, rate=3000)
    path = daemon.log_file('app')
    moved = []
    try:
        for index in range(4):
            wait_for(lambda: len(read_lines(path)) > 300, timeout=20, message='300 lines')
            moved.append(path.with_name('moved-%d' % index))
            os.rename(path, moved[-1])
            daemon.reload()
        wait_for(lambda: len(read_lines(path)) > 300, timeout=20, message='300 lines')
    finally:
        total = stream.stop()
    assert handler.flush()
    assert daemon.stop() == 0
    counts = collections.Counter()
    for name in moved + [path]:
        for line in read_lines(name):
            match = MSG_RE.match(line.split(' - ', 2)[2])
            if match:
                counts[int(match.group(1))] += 1
    missing = [n for n in range(total) if not counts[n]]
    twice = sorted(n for n, c in counts.items() if c > 1)
    assert not missing and not twice, (len(missing), missing[:5], len(twice), twice[:5])


# -- 6. the wall clock jumps back and forth under size + time rotation ------------------------

LIBFAKETIME = next((path for path in ('/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1',
                                      '/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1',
                                      '/usr/lib/faketime/libfaketime.so.1')
                    if os.path.exists(path)), None)

SIZE_AND_HOURLY = """
[app]
rotate = hourly
max_size = 64K
backup_count = 1000
"""


@pytest.mark.skipif(LIBFAKETIME is None, reason='needs libfaketime (apt-get install faketime)')
def test_wall_clock_jumps_under_size_and_hourly_rotation_lose_and_double_nothing(
        daemon_factory, make_logger, tmp_path):
    """The daemon's wall clock (libfaketime, an offset read from a file at every call; the
    monotonic clock untouched) jumps back 2 h, then forward 3 h, while a 3,000
    records/s acked stream fills a 64K hourly file: every record once in the history, no
    backup overwritten (as many backups as rotations logged)."""
    offset = tmp_path / 'offset'
    offset.write_text('+0\n')
    environment = ['LD_PRELOAD=' + LIBFAKETIME, 'FAKETIME_TIMESTAMP_FILE=%s' % offset,
                   'FAKETIME_NO_CACHE=1', 'FAKETIME_DONT_FAKE_MONOTONIC=1']
    daemon = daemon_factory(SIZE_AND_HOURLY, extra_args=[])
    daemon.kill()
    command = daemon.command
    daemon.command = lambda: ['env'] + environment + command()
    daemon.start()
    folder = daemon.logdir / 'app'
    handler = LoghogHandler('app', '127.0.0.1', daemon.tcp_port)
    logger = make_logger(handler, logging.INFO)
    stream = Stream(logger, rate=3000)
    try:
        for jump in ('-7200', '+3600'):
            target = stream.count + 1000
            wait_for(lambda: stream.count > target, timeout=20, message='1000 more records')
            offset.write_text(jump + '\n')
        target = stream.count + 1000
        wait_for(lambda: stream.count > target, timeout=20, message='1000 more records')
    finally:
        total = stream.stop()
    assert handler.flush()
    assert daemon.stop() == 0
    counts = numbers_in_history(folder)
    missing = [n for n in range(total) if not counts[n]]
    twice = sorted(n for n, c in counts.items() if c > 1)
    assert not missing and not twice, (len(missing), missing[:5], len(twice), twice[:5])
    own_log = daemon.daemon_log.read_text()
    assert 'the clock went back' in own_log, 'the jump did not reach the daemon'
    assert len(backup_names(folder)) == own_log.count('rotated ')


# -- 7. a full disk whose backlog overflows: the lines kept are written, and resent -----------

@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs to fill up (root only; unmounted at the end)."""
    if os.geteuid() != 0:
        pytest.skip('needs root to mount a small file system')
    mount_point = tmp_path / 'small-disk'
    mount_point.mkdir()
    result = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=1m,mode=0755', 'tmpfs',
                             str(mount_point)], capture_output=True, text=True, timeout=30)
    if result.returncode:
        pytest.skip('cannot mount a tmpfs: %s' % result.stderr.strip())
    try:
        yield mount_point
    finally:
        if subprocess.run(['umount', str(mount_point)], capture_output=True).returncode:
            subprocess.run(['umount', '-l', str(mount_point)], capture_output=True)


def fill(folder):
    """Fill the file system of ``folder``; return the filler's path."""
    path = os.path.join(folder, 'filler')
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b'\0' * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    return path


@pytest.mark.xfail(strict=True, reason=(
    'A6-2 (a known limit, in README since: max_backlog and the delivery table): a backlog '
    'overflow on a full disk writes hundreds of acked clients\' lines twice '
    '(about 300 of 800 here, every run) without any crash: Writer._bound_backlog '
    '(loghogd/writer.py:749-770) drops only the OLDEST lines and keeps the rest, but marks the '
    'whole file lost; Acknowledger.forget_lost (loghogd/acknowledger.py:138-163) then closes '
    'every acked connection waiting on that file and rewinds its session to its last ack, so '
    'its client resends all it had waiting, and the kept lines are written once from the '
    'backlog and once more from the resend. Fix: drop from the backlog the lines of the '
    'connections that are rewound (they will be resent), or keep in each file the line '
    'number dropped through and rewind only connections whose waits in it are at or below it '
    '(and to no further than their first dropped message); or say in README (the delivery '
    'table: duplicates only after ...) that a backlog overflow duplicates what it kept'))
def test_a_backlog_overflow_on_a_full_disk_writes_no_line_twice(small_disk, daemon_factory,
                                                                make_logger):
    """A full disk: an acked client's lines wait in memory; a second client's 600 KB push
    the backlog over max_backlog (lowered to 256K to keep the test short), and the oldest
    lines are dropped.  README: duplicates only "after a crash of the daemon, a failed
    fsync, or for a session the daemon could not track".  Space comes back; both clients
    resend what was never acknowledged: every record once."""
    daemon = daemon_factory(WITHOUT_WEB, server={'max_backlog': '256K'},
                            extra_args=['-L', str(small_disk)])
    path = small_disk / 'app' / 'root.log'
    quiet = LoghogHandler('app', '127.0.0.1', daemon.tcp_port)
    busy = LoghogHandler('app', '127.0.0.1', daemon.tcp_port)
    quiet_logger, busy_logger = make_logger(quiet, logging.INFO), make_logger(busy, logging.INFO)
    quiet_logger.info('first')
    assert quiet.flush()
    filler = fill(small_disk)
    for n in range(200):
        quiet_logger.info('quiet %d', n)
    for n in range(600):
        busy_logger.info('busy %d %s', n, 'x' * 1000)
    wait_for(lambda: 'dropping the oldest' in daemon.daemon_log.read_text(), timeout=20,
             message='lines dropped from the backlog')
    os.unlink(filler)
    assert quiet.flush() and busy.flush()
    assert daemon.stop() == 0
    counts = collections.Counter(' '.join(line_body(line).split()[:2])
                                 for line in read_lines(path))
    missing = [key for key in ['quiet %d' % n for n in range(200)] +
               ['busy %d' % n for n in range(600)] if not counts[key]]
    twice = [key for key, count in counts.items() if count > 1]
    assert not missing, (len(missing), missing[:5])
    assert not twice, '%d records written twice (%d quiet, %d busy: %s ... %s); %s' % (
        len(twice), sum(1 for key in twice if key.startswith('quiet')),
        sum(1 for key in twice if key.startswith('busy')), twice[:3], twice[-3:],
        re.findall(r'\(\d+ older lines were dropped meanwhile\)', daemon.daemon_log.read_text()))


# -- 8. reloads while a full disk holds lines in memory ---------------------------------------

OTHER_THEN_APP = '''
[other]
rotate = daily
backup_count = 3

[app]
rotate = hourly
backup_count = 3
'''


@pytest.mark.parametrize('facilities', [OTHER_THEN_APP], ids=['app-changed'])
def test_a_reload_while_lines_wait_for_a_full_disk_keeps_them_and_writes_each_once(
        small_disk, daemon_factory, make_logger, facilities):
    """Disk full, 300 acked records wait in memory; SIGHUP gives [app] another schedule,
    which rotates it at once (a new facility object, a rename with lines waiting; with [app]
    removed instead the test passed too); space comes back: every record is written once
    and acknowledged."""
    daemon = daemon_factory(WITHOUT_WEB, extra_args=['-L', str(small_disk)])
    path = small_disk / 'app' / 'root.log'
    handler = LoghogHandler('app', '127.0.0.1', daemon.tcp_port)
    logger = make_logger(handler, logging.INFO)
    logger.info('first')
    assert handler.flush()
    filler = fill(small_disk)
    for n in range(300):
        logger.info('msg %d', n)
    wait_for(lambda: 'keeping its lines in memory' in daemon.daemon_log.read_text(),
             timeout=20, message='the lines held in memory')
    daemon.reload(facilities)
    os.unlink(filler)
    wait_for(handler.flush, timeout=30, message='every record acknowledged')
    assert daemon.stop() == 0
    counts = numbers_in_history(path.parent)      # a new schedule may have rotated it
    missing = [n for n in range(300) if not counts[n]]
    twice = sorted(n for n, count in counts.items() if count > 1)
    assert not missing and not twice, (len(missing), missing[:5], len(twice), twice[:5])


def test_loghog_udp_with_a_line_just_under_the_size_limit_delivers_or_says_so(daemon):
    text = 'x' * 65_390
    result = subprocess.run([sys.executable, '-m', 'loghog', '-a', 'app', '-H', '127.0.0.1',
                             '-p', str(daemon.udp_port), '--udp'],
                            input=text + '\nafter the big one\n', capture_output=True,
                            text=True, timeout=30)
    path = daemon.log_file('app')
    wait_for(lambda: any(line.endswith(' - after the big one') for line in read_lines(path)),
             timeout=10, message='the sentinel')
    delivered = line_body(read_lines(path)[0]).startswith('xxxx')
    assert delivered or (result.returncode != 0 and result.stderr), (result.returncode,
                                                                    result.stderr)


# -- 9. a restart after the clock was corrected back ------------------------------------------

HOURLY = """
[app]
rotate = hourly
backup_count = 3
"""


def status_json(daemon):
    result = subprocess.run([sys.executable, '-m', 'loghogd', 'status', '--json', '-c',
                             str(daemon.config_path)], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.skipif(LIBFAKETIME is None, reason='needs libfaketime (apt-get install faketime)')
def test_a_restart_after_the_clock_was_set_back_keeps_the_rotation_schedule(daemon_factory):
    daemon = daemon_factory(HOURLY, sections={'stats': {'interval': '0.2'}})
    daemon.kill()
    command = daemon.command
    daemon.command = lambda: ['env', 'LD_PRELOAD=' + LIBFAKETIME, 'FAKETIME=+1d',
                              'FAKETIME_DONT_FAKE_MONOTONIC=1'] + command()
    daemon.start()
    handler = LoghogHandler('app', '127.0.0.1', daemon.tcp_port)
    logger = logging.getLogger('round5.clock')
    logger.addHandler(handler)
    try:
        logger.warning('written while the clock was a day ahead')
        assert handler.flush()
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert daemon.stop() == 0
    daemon.command = command            # the clock is right again
    daemon.start()
    began = time.time()
    status = wait_for(lambda: (lambda s: s if s['written_at'] > began else None)(
        status_json(daemon)), timeout=10, message='a status written after the start')
    next_rotation = status['tasks']['rotation']['next_rotation']
    assert next_rotation <= began + 3600 + 60, 'next rotation of an hourly file in %.1f h' % (
        (next_rotation - began) / 3600)


# -- 10. localhost is 127.0.0.1 and ::1: a reconnect may come from the other address ---------

def free_port_on_both():
    for _ in range(50):
        port = free_port()
        try:
            with socket.create_server(('::1', port), family=socket.AF_INET6):
                return port
        except OSError:
            continue
    pytest.skip('no port free on both 127.0.0.1 and ::1')


def test_a_cut_connection_resent_over_the_other_loopback_address_writes_nothing_twice(
        daemon_factory, make_logger, monkeypatch):
    """Debian's /etc/hosts gives localhost both 127.0.0.1 and ::1; loghogd listens on both
    by default, and LoghogHandler's default host is 'localhost': each connection picks one
    of its addresses at random (docs/client.md).  A cut connection (the daemon keeps
    running) whose resend goes out over the other address: README promises no duplicate
    after a cut ("a cut connection, none")."""
    if not socket.has_ipv6:
        pytest.skip('no IPv6')
    try:
        daemon = daemon_factory(WITHOUT_WEB, server={'listen_ipv6': '[::1]:0'})
    except AssertionError as exc:
        pytest.skip('cannot listen on ::1: %s' % exc)
    ports = {('6' if ':' in host else '4'): port for host, port in daemon.addresses['tcp']}
    port = free_port_on_both()
    # Relays on one port of both addresses to the daemon's address of the same family (so
    # the daemon sees the client's loopback address of that family).
    proxies = {'4': CuttableProxy(ports['4'], ('127.0.0.1', port), '127.0.0.1'),
               '6': CuttableProxy(ports['6'], ('::1', port), '::1')}
    real_getaddrinfo = socket.getaddrinfo

    def debian_hosts(host, *args, **kwargs):     # /etc/hosts: 127.0.0.1 and ::1 localhost
        if host != 'localhost':
            return real_getaddrinfo(host, *args, **kwargs)
        return (real_getaddrinfo('127.0.0.1', *args, **kwargs)
                + real_getaddrinfo('::1', *args, **kwargs))
    monkeypatch.setattr(socket, 'getaddrinfo', debian_hosts)
    path = daemon.log_file('app')
    handler = LoghogHandler('app', 'localhost', port)
    logger = make_logger(handler, logging.INFO)
    stream = Stream(logger, rate=3000)

    def family_in_use():
        return wait_for(lambda: [f for f, p in proxies.items() if p.pairs], timeout=20,
                        message='a connection through a proxy')[0]
    try:
        # Six cuts: with the addresses in random order at each connection (before the fix)
        # the resend changed address at least once in 63 runs of 64.
        for _ in range(6):
            target = len(read_lines(path)) + 300
            wait_for(lambda: len(read_lines(path)) > target, timeout=20, message='300 lines')
            family_in_use()                          # connected (through a proxy)
            # The acks of the next 100 lines written are lost in the network, then the cut.
            for proxy in proxies.values():
                proxy.hold_acks()
            target = len(read_lines(path)) + 100
            wait_for(lambda: len(read_lines(path)) > target, timeout=20, message='100 lines')
            for proxy in proxies.values():
                proxy.cut()
    finally:
        total = stream.stop()
    wait_for(handler.flush, timeout=30, message='every record acknowledged')
    for proxy in proxies.values():
        proxy.stop()
    counts = collections.Counter(int(MSG_RE.match(line_body(line)).group(1))
                                 for line in read_lines(path))
    missing = [n for n in range(total) if not counts[n]]
    twice = sorted(n for n, c in counts.items() if c > 1)
    assert not missing, (len(missing), missing[:5])
    assert not twice, '%d of %d records written twice after a cut: %s' % (
        len(twice), total, twice[:5])


# -- 11. an ack that arrived just before the daemon's reset ----------------------------------

def test_an_ack_received_before_a_reset_that_cuts_a_write_counts(make_logger):
    """What a daemon's SIGTERM does to a busy client: it stops reading, sends the ack of all
    it has written, and closes with the client's later frames unread (the kernel sends a
    reset).  The client, blocked writing, gets the reset from its send; the ack is in its
    socket's receive queue (Linux keeps received data after a reset).  It must count: the
    next connection's session frame starts after the acknowledged messages, or they are
    sent again and a new daemon writes them twice."""
    state = {'acked': None}

    def daemon_that_stops(peer, sock):
        reader = answer_handshake(peer, sock)
        if peer.accepted > 1:
            return                              # the session frame is all we need
        while reader.count < 201:               # the session frame and 200 messages
            frames = reader.read(10)
            assert frames is not None
            peer.record(frames)
        # Stop reading; once the client is blocked writing (our receive queue no longer
        # grows), acknowledge what was read and reset the connection.
        queued = lambda: struct.unpack('i', fcntl.ioctl(sock.fileno(), termios.FIONREAD,
                                                        b'\0\0\0\0'))[0]
        last, stable_since = -1, time.monotonic()
        while time.monotonic() - stable_since < 0.3:
            now_queued = queued()
            if now_queued != last:
                last, stable_since = now_queued, time.monotonic()
            time.sleep(0.02)
        state['acked'] = reader.count - 1
        sock.sendall(ack(reader.count))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
        sock.close()

    peer = Peer(daemon_that_stops)
    # A small receive buffer: the client fills the connection long before its own bounds
    # (10,000 records, 8 MiB) make it stop and wait for acks.
    peer.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    handler = LoghogHandler('app', '127.0.0.1', peer.port)
    logger = make_logger(handler, logging.INFO)
    # 5 MB: more than the kernel's buffers hold (the client's send buffer grows to 4 MiB at
    # most, tcp_wmem), less than the handler's own bounds: it ends up blocked writing.
    for n in range(4500):
        logger.info('msg %d %s', n, 'x' * 1000)
    try:
        peer.wait(lambda p: len(p.sessions) >= 2, timeout_s=30)
    finally:
        peer.stop()
    first = peer.sessions[1]['first']
    assert first == state['acked'] + 1, (
        'the reconnection starts at message %d: the %d messages acknowledged before the '
        'reset are sent again' % (first, state['acked']))
