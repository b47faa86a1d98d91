"""Attacks on the receiver processes of issue 18 ([server] workers = 2, everything else
default): what the main process does when a receiver routes with another table than its
own, dies or exits in an unexpected way, or sends what no receiver sends.

Each finding is a test marked xfail(strict=True) with its id (A4-wN): it fails today for
the reason it names and passes once that is fixed.  The other tests check promises of the
receivers that no test checked before.
"""

import calendar
import ctypes
import errno
import json
import logging
import marshal
import os
import resource
import select
import signal
import socket
import struct
import threading
import time

import pytest

from loghog import LoghogHandler
from loghog.signing import V2Signer
from loghog.wire import FLAG_ACK, MessageEncoder, make_session
from tests.integration.test_acks import AckReader
from tests.integration.test_client_delivery import numbered, wait_for_count
from tests.integration.test_receivers import receiver_pids
from tests.integration.test_rotation_clock import LIBFAKETIME, ClockedDaemon
from tests.support import (Stream, file_history, frame, line_body, make_certs, read_lines,
                           stopped, wait_for)

WORKERS_2 = {'workers': '2'}
APP = """
[app]
rotate = daily
backup_count = 3
"""
# Enough facilities that parsing them takes a while (about 0.1-0.3 s here): the window in
# which one process has reloaded and another has not is then wider than a loop pass.
FILLER = ''.join('[filler%d]\nrotate = daily\nbackup_count = 1\n\n' % n for n in range(3000))


def logged_by(daemon, pid, text):
    """Whether process ``pid`` of ``daemon`` logged ``text`` (lines say '<logger>[pid]')."""
    return any(('[%d] ' % pid) in line and text in line
               for line in daemon.output().splitlines())


def main_logged(daemon, text):
    """Whether the main process itself (not a receiver) logged ``text``."""
    return logged_by(daemon, daemon.pid, text)

def assert_each_receiver_routes_to_the_added_app(daemon):
    """Two connections, one to each receiver in turn, each with a message to the app the
    reload added: both are written (none refused as unknown_app)."""
    assert send_on_new_connection(daemon, frame('added', 'first'))
    assert send_on_new_connection(daemon, frame('added', 'second'))
    wait_for(lambda: set(bodies_under(daemon, 'added')) == {'first', 'second'}
             or 'unknown_app' in daemon.output(), 15, message='the two messages')
    assert sorted(bodies_under(daemon, 'added')) == ['first', 'second'], \
        daemon.output()[-2000:]



def within(condition, timeout_s):
    """Whether ``condition()`` became true within ``timeout_s`` (no failure if not)."""
    try:
        wait_for(condition, timeout_s)
    except AssertionError:
        return False
    return True


def reload_with_receivers_stopped(daemon, facilities):
    """Write ``facilities`` and SIGHUP the main process while the receivers are stopped
    (not scheduled, as on a loaded machine); leave them stopped until the main process has
    logged its reload, or for at most 3 s (a daemon that waits for its receivers before it
    says it reloaded logs only once they run again)."""
    daemon.facilities_path.write_text(facilities)
    daemon.signal(signal.SIGHUP)
    within(lambda: main_logged(daemon, 'reloaded'), 3.0)


def two_receivers(daemon):
    return wait_for(lambda: (lambda pids: pids if len(pids) == 2 else None)(
        receiver_pids(daemon)), message='two receivers')


def lines_under(daemon, app):
    """Every line of every file of ``app`` (any host)."""
    folder = daemon.logdir / app
    if not folder.exists():
        return []
    return [line for path in sorted(folder.iterdir()) for line in read_lines(path)]


def bodies_under(daemon, app):
    return [line_body(line) for line in lines_under(daemon, app)]


def wait_written_or_dead(daemon, app, bodies, timeout=15):
    """Wait until every one of ``bodies`` is in ``app``'s files or the daemon exited."""
    wait_for(lambda: daemon.proc.poll() is not None
             or set(bodies) <= set(bodies_under(daemon, app)), timeout,
             message='%s in %s' % (bodies, app))


def send_on_new_connection(daemon, data):
    """Send ``data`` on a new connection; False if the daemon is gone (refused)."""
    try:
        with socket.create_connection(('127.0.0.1', daemon.tcp_port), timeout=10) as sock:
            sock.sendall(data)
    except (ConnectionRefusedError, ConnectionResetError, BrokenPipeError):
        return False
    return True


# -- A4-w1: a reload that changes file_per_host kills the main process ----------------------

def test_a_reload_turning_on_file_per_host_while_receivers_route_old_lines_keeps_the_daemon_up(
        daemon_factory):
    daemon = daemon_factory(APP + FILLER, server=WORKERS_2)
    receivers = two_receivers(daemon)
    with stopped(receivers):
        # A receiver that has not taken the SIGHUP yet (stopped here: on a loaded machine,
        # not scheduled) holds a line it will route with the table it has.
        send_on_new_connection(daemon, frame('app', 'before the reload', host='h1'))
        reload_with_receivers_stopped(daemon, APP + 'file_per_host = yes\n' + FILLER)
    wait_for(lambda: daemon.proc.poll() is not None or 'before the reload' in
             bodies_under(daemon, 'app'), 15, message='the line routed before the reload')
    send_on_new_connection(daemon, frame('app', 'sentinel', host='h2'))
    wait_written_or_dead(daemon, 'app', ['sentinel'])
    assert daemon.proc.poll() is None, daemon.output()[-3000:]
    assert daemon.stop() == 0


# -- A4-w2: a message to an app the reload added, sent once the reload is logged, is refused --

def test_a_message_to_an_app_the_reload_added_sent_once_the_reload_is_logged_is_written(
        daemon_factory):
    daemon = daemon_factory(APP + FILLER, server=WORKERS_2)
    receivers = two_receivers(daemon)
    with stopped(receivers):
        reload_with_receivers_stopped(daemon, APP + FILLER + '[added]\n'
                                      'rotate = daily\nbackup_count = 1\n')
    wait_for(lambda: main_logged(daemon, 'reloaded'), 30, message='the reload to be logged')
    # The reload is logged: the client sends to the new app at once (one connection to
    # each receiver, in turn).
    assert_each_receiver_routes_to_the_added_app(daemon)
    assert daemon.stop() == 0


# -- A4-w3: a receiver restarted during a reload keeps the old table for good --------------

def is_zombie(pid):
    try:
        with open('/proc/%d/stat' % pid, 'rb') as handle:
            return handle.read().rsplit(b')', 1)[1].split()[0] == b'Z'
    except OSError:
        return True


def test_a_receiver_restarted_during_a_reload_routes_with_the_reloaded_table(daemon_factory):
    daemon = daemon_factory(APP + FILLER, server=WORKERS_2)
    first, second = two_receivers(daemon)
    # A receiver that ran a second is started again at once when it dies.
    began = time.monotonic()
    wait_for(lambda: time.monotonic() - began > 1.2, message='a second of uptime')
    with stopped([daemon.pid]):
        daemon.facilities_path.write_text(APP + FILLER + '[added]\nrotate = daily\n'
                                          'backup_count = 1\n')
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: is_zombie(first), message='the receiver to die')
        daemon.signal(signal.SIGHUP)
    wait_for(lambda: main_logged(daemon, 'reloaded') and logged_by(daemon, second, 'reloaded'),
             30, message='the main process and the surviving receiver to reload')
    wait_for(lambda: len(receiver_pids(daemon)) == 2 and first not in receiver_pids(daemon),
             message='the new receiver')
    assert_each_receiver_routes_to_the_added_app(daemon)
    assert daemon.stop() == 0


# -- A4-w4: a receiver stopped by a SIGTERM of its own is never started again ---------------

def slot_pid(daemon, slot):
    """The pid of receiver ``slot`` as the main process last logged it."""
    marker = 'receiver %d started (pid ' % slot
    lines = [line for line in daemon.output().splitlines() if marker in line]
    return int(lines[-1].split(marker, 1)[1].split(')', 1)[0]) if lines else None


def udp_written(daemon, body, timeout_s):
    """Send ``body`` by UDP every 50 ms until it is written (True) or ``timeout_s``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        def sent_and_written():
            sock.sendto(frame('app', body), ('127.0.0.1', daemon.udp_port))
            return body in bodies_under(daemon, 'app')
        try:
            wait_for(sent_and_written, timeout_s, interval=0.05)
        except AssertionError:
            return False
    return True


def test_a_receiver_stopped_by_its_own_sigterm_is_started_again_and_udp_is_read(
        daemon_factory):
    daemon = daemon_factory(APP, server=WORKERS_2)
    first = two_receivers(daemon)
    assert udp_written(daemon, 'udp before', 10)
    for pid in first:     # each reads its own UDP socket: a sender's goes to one of them
        os.kill(pid, signal.SIGTERM)
    wait_for(lambda: all(pid not in receiver_pids(daemon) or is_zombie(pid) for pid in first),
             message='the receivers to exit')
    assert udp_written(daemon, 'udp after', 3), daemon.output()[-2000:]
    wait_for(lambda: not {slot_pid(daemon, 0), slot_pid(daemon, 1)} & set(first),
             message='both started again')
    assert daemon.stop() == 0


# -- A4-w5: a receiver can make the main process exit ----------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
SYS_PIDFD_GETFD = 438     # Linux 5.6 and later, the same number on every architecture


def take_fd(pid, fd):
    """A copy of ``pid``'s descriptor ``fd`` in this process (pidfd_getfd(2)): what code
    running in that process could use."""
    pidfd = os.pidfd_open(pid)
    try:
        copy = _libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
        if copy < 0:
            error = ctypes.get_errno()
            if error in (errno.ENOSYS, errno.EPERM):   # an older kernel, or Yama's ptrace_scope
                pytest.skip('pidfd_getfd: %s' % os.strerror(error))
            raise OSError(error, os.strerror(error))
        return copy
    finally:
        os.close(pidfd)


def channel_of(daemon, pid):
    """Receiver ``pid``'s end of its channel to the main process: its Unix stream socket
    whose other end the main process made (SO_PEERCRED)."""
    for name in os.listdir('/proc/%d/fd' % pid):
        if not os.readlink('/proc/%d/fd/%s' % (pid, name)).startswith('socket:'):
            continue
        sock = socket.socket(fileno=take_fd(pid, int(name)))
        if sock.family == socket.AF_UNIX and sock.type == socket.SOCK_STREAM:
            cred = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
            if struct.unpack('3i', cred)[0] == daemon.pid:
                return sock
        sock.close()
    raise AssertionError('no channel found in receiver %d' % pid)


def send_as_receiver(daemon, pid, data):
    """Write ``data`` on receiver ``pid``'s channel, the receiver stopped meanwhile (so that
    nothing of its own comes between)."""
    with stopped([pid]):
        with channel_of(daemon, pid) as sock:
            sock.sendall(data)


def channel_message(message):
    payload = marshal.dumps(message)
    return struct.pack('!I', len(payload)) + payload


def sentinel_written(daemon):
    """Two sentinels on new connections (one to each receiver, in turn): True once one is
    written, False if the daemon exited first."""
    bodies = ['sentinel %d' % n for n in range(2)]
    for body in bodies:
        send_on_new_connection(daemon, frame('app', body))
    wait_for(lambda: daemon.proc.poll() is not None
             or set(bodies) & set(bodies_under(daemon, 'app')), 15, message='a sentinel')
    return daemon.proc.poll() is None


@pytest.mark.parametrize('message', [
    struct.pack('!I', 4) + b'\xff\xfe\xfd\xfc',                    # not marshal data
    channel_message(('stats', {'__class__': {'x': 1}}, {})),       # a counter it has not
], ids=['not-marshal', 'stats-of-no-counter'])
def test_what_no_receiver_sends_on_its_channel_costs_that_receiver_not_the_daemon(
        daemon_factory, message):
    daemon = daemon_factory(APP, server=WORKERS_2)
    first, _ = two_receivers(daemon)
    send_as_receiver(daemon, first, message)
    assert sentinel_written(daemon), daemon.output()[-2000:]
    assert daemon.stop() == 0


PER_HOST = APP + """
[perhost]
rotate = daily
backup_count = 3
file_per_host = yes
"""


def test_lines_a_receiver_sends_for_no_facility_or_a_path_like_host_stay_in_the_log_folder(
        daemon_factory, tmp_path):
    daemon = daemon_factory(PER_HOST, server=WORKERS_2)
    first, _ = two_receivers(daemon)
    before = set(os.listdir(tmp_path))
    send_as_receiver(daemon, first, channel_message(('batch', {
        ('nope', 'root', None): ['for no facility\n'],
        ('../../../..', 'root', None): ['for a path\n'],
        ('perhost', 'root', '../../../../escaped'): ['path-like host\n'],
        ('perhost', 'root', '/tmp/absolute'): ['absolute host\n'],
    }, [], [])))
    assert sentinel_written(daemon), daemon.output()[-2000:]
    wait_for(lambda: len(lines_under(daemon, 'perhost')) == 2, message='the perhost lines')
    names = sorted(os.listdir(daemon.logdir / 'perhost'))
    assert names == ['_.._.._.._escaped-root.log', '_tmp_absolute-root.log']
    assert sorted(os.listdir(daemon.logdir)) == ['app', 'perhost']
    assert set(os.listdir(tmp_path)) == before
    assert daemon.stop() == 0


def rss_kb(pid):
    with open('/proc/%d/status' % pid) as status:
        for line in status:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    raise AssertionError('no VmRSS for %d' % pid)


def test_a_receiver_cannot_make_the_main_process_hold_what_it_sends(daemon_factory):
    daemon = daemon_factory(APP, server=WORKERS_2)
    first, _ = two_receivers(daemon)
    assert sentinel_written(daemon)
    before_kb = rss_kb(daemon.pid)
    chunk = bytes(1024 * 1024)
    with stopped([first]):
        with channel_of(daemon, first) as sock:
            sock.settimeout(10)
            try:
                sock.sendall(struct.pack('!I', 0xfffffff0))
                for _ in range(96):    # 96 MiB of a message said to be 4 GiB long
                    sock.sendall(chunk)
            except OSError:
                pass     # the main process closed the channel: it refused the message
        grown_mb = (rss_kb(daemon.pid) - before_kb) / 1024
    assert daemon.proc.poll() is None
    assert grown_mb < 32, 'the main process grew by %.0f MB' % grown_mb


# -- A4-w7: a receiver started again holds the main process's log files open ----------------

def open_paths(pid):
    paths = []
    for name in os.listdir('/proc/%d/fd' % pid):
        try:
            paths.append(os.readlink('/proc/%d/fd/%s' % (pid, name)))
        except OSError:
            pass
    return paths


def has_own_loop(pid):
    """Whether receiver ``pid`` made its own loop (the socketpairs it makes itself, after
    it left the main process's): a Unix socket whose peer is ``pid`` itself."""
    for name in os.listdir('/proc/%d/fd' % pid):
        try:
            if not os.readlink('/proc/%d/fd/%s' % (pid, name)).startswith('socket:'):
                continue
            sock = socket.socket(fileno=take_fd(pid, int(name)))
        except OSError:
            continue
        with sock:
            if sock.family == socket.AF_UNIX:
                cred = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
                if struct.unpack('3i', cred)[0] == pid:
                    return True
    return False


def test_a_receiver_started_again_holds_no_log_file_open(daemon_factory):
    daemon = daemon_factory(APP, server=WORKERS_2)
    first, second = two_receivers(daemon)
    assert sentinel_written(daemon)
    log_file = str(daemon.log_file('app'))
    assert log_file in open_paths(daemon.pid)     # the writer holds it open
    os.kill(first, signal.SIGKILL)
    new, = wait_for(lambda: (lambda pids: pids if len(pids) == 1 else None)(
        [pid for pid in receiver_pids(daemon) if pid not in (first, second)]),
        message='the new receiver')
    wait_for(lambda: has_own_loop(new), message='the new receiver to run its own loop')
    logdir = str(daemon.logdir) + os.sep
    assert [path for path in open_paths(new) if path.startswith(logdir)] == []
    assert daemon.stop() == 0


# -- A4-w8: max_connections_per_peer holds per receiver, not per address --------------------

def test_max_connections_per_peer_is_what_one_address_holds_with_two_receivers(daemon_factory):
    daemon = daemon_factory(APP, server=dict(WORKERS_2, max_connections_per_peer='1'))
    two_receivers(daemon)
    with socket.create_connection(('127.0.0.1', daemon.tcp_port), timeout=10) as older:
        older.sendall(frame('app', 'older'))
        wait_for(lambda: 'older' in bodies_under(daemon, 'app'), message='the older line')
        # A newer connection from the same address is over the cap: the older one, idle,
        # makes room for it.
        assert send_on_new_connection(daemon, frame('app', 'newer'))
        wait_for(lambda: 'newer' in bodies_under(daemon, 'app'), message='the newer line')
        readable, _, _ = select.select([older], [], [], 1.0)
        assert readable and older.recv(100) == b''
    assert daemon.stop() == 0


# -- promises that hold: restarts are rate-limited, logged, and leak nothing -----------------

def start_times(daemon, slot):
    """When receiver ``slot`` was started, as the main process logged it (seconds)."""
    marker = 'receiver %d started (pid ' % slot
    times = []
    for line in daemon.output().splitlines():
        if marker in line:
            stamp = time.strptime(line[:19], '%Y-%m-%d %H:%M:%S')
            times.append(time.mktime(stamp) + int(line[20:23]) / 1000)
    return times


def children_of(pid):
    with open('/proc/%d/task/%d/children' % (pid, pid)) as children:
        return [int(child) for child in children.read().split()]


def test_a_storm_of_receiver_kills_is_rate_limited_logged_and_leaks_nothing(daemon_factory):
    daemon = daemon_factory(APP, server=WORKERS_2)
    two_receivers(daemon)
    assert sentinel_written(daemon)
    descriptors = len(os.listdir('/proc/%d/fd' % daemon.pid))
    killed = []
    for _ in range(2):
        pids = wait_for(lambda: (lambda pids: pids if len(pids) == 2 and not set(pids) & set(
            killed) else None)(receiver_pids(daemon)), message='two new receivers')
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        killed += pids
    wait_for(lambda: len([pid for pid in children_of(daemon.pid) if pid not in killed]) == 2,
             message='two receivers after the storm')
    # Every death logged, every receiver reaped (no zombie), no descriptor left behind.
    assert daemon.output().count('exited unexpectedly (killed by SIGKILL)') == 4
    assert not set(children_of(daemon.pid)) & set(killed)
    wait_for(lambda: len(os.listdir('/proc/%d/fd' % daemon.pid)) == descriptors,
             message='the descriptors of the main process back to %d' % descriptors)
    # At most one start a second per slot, however fast they die.
    for slot in (0, 1):
        starts = start_times(daemon, slot)
        assert len(starts) == 3
        assert min(b - a for a, b in zip(starts, starts[1:])) > 0.9, starts
    assert sentinel_written(daemon)
    assert daemon.stop() == 0


def test_a_flood_on_one_receiver_does_not_hold_up_the_client_of_the_other(daemon_factory):
    daemon = daemon_factory(APP, server=WORKERS_2)
    two_receivers(daemon)
    flood = b''.join(frame('app', 'flood %d' % n) for n in range(20000))
    stop = threading.Event()

    def send_flood(sock):
        try:
            while not stop.is_set():
                sock.sendall(flood)
        except OSError:
            pass

    flooder = socket.create_connection(('127.0.0.1', daemon.tcp_port), timeout=30)
    thread = threading.Thread(target=send_flood, args=(flooder,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(read_lines(daemon.log_file('app'))) > 50000, 30,
                 message='the flood to be written')
        # The next connection goes to the other receiver; its line waits behind the
        # flood's lines in the main process only, not behind the flooder's receiver.
        began = time.monotonic()
        assert send_on_new_connection(daemon, frame('app', 'quiet client'))
        wait_for(lambda: 'quiet client' in ''.join(read_lines(daemon.log_file('app'))[-200000:]),
                 10, interval=0.01, message="the quiet client's line")
        waited = time.monotonic() - began
    finally:
        stop.set()
        flooder.close()
        thread.join(30)
    assert waited < 2.0, 'the quiet client waited %.2fs' % waited
    assert daemon.stop() == 0


def test_receivers_killed_while_the_main_process_is_stopped_cost_an_acknowledging_client_nothing(
        daemon_factory, make_logger):
    daemon = daemon_factory(APP, server=WORKERS_2)
    receivers = two_receivers(daemon)
    handler = LoghogHandler('app', '127.0.0.1', daemon.tcp_port)
    stream = Stream(make_logger(handler, logging.INFO), rate=1000)
    try:
        wait_for_count(daemon.log_file('app'), 300)
        with stopped([daemon.pid]):
            # Batches the main process has not read yet, acks it has not sent: the
            # receivers die with them.
            wait_for(lambda: stream.count > len(numbered(daemon.log_file('app'))) + 100,
                     message='messages sent while the main process is stopped')
            for pid in receivers:
                os.kill(pid, signal.SIGKILL)
            wait_for(lambda: all(is_zombie(pid) for pid in receivers), message='both dead')
        wait_for(lambda: not set(receivers) & set(receiver_pids(daemon))
                 and len(receiver_pids(daemon)) == 2, message='two new receivers')
        wait_for_count(daemon.log_file('app'), len(numbered(daemon.log_file('app'))) + 300)
    finally:
        total = stream.stop()
    assert handler.flush()
    assert numbered(daemon.log_file('app')) == list(range(total))
    assert daemon.stop() == 0


# -- A4-w9: a syslog TCP connection kills the receiver it is handed to ----------------------

SYSLOG_APP = APP + 'syslog_programs = myprog\n'


def test_a_syslog_tcp_line_with_two_receivers_is_written_by_the_main_process(daemon_factory):
    daemon = daemon_factory(SYSLOG_APP, server=WORKERS_2,
                            sections={'syslog': {'listen_tcp': '127.0.0.1:0'}})
    receivers = two_receivers(daemon)
    for n in range(2):     # (were it handed off: once to each receiver)
        with socket.create_connection(('127.0.0.1', daemon.port('syslog_tcp')),
                                      timeout=10) as sock:
            sock.sendall(b'<13>Dec  5 08:00:00 web1 myprog: syslog line %d\n' % n)
    wait_for(lambda: len(lines_under(daemon, 'app')) == 2
             or 'exited unexpectedly' in daemon.output(), 15, message='the syslog lines')
    assert sorted(body.rsplit(' ', 1)[-1] for body in bodies_under(daemon, 'app')) == \
        ['0', '1'], daemon.output()[-2000:]
    assert receiver_pids(daemon) == receivers
    assert daemon.stop() == 0


def test_datagrams_sent_while_the_udp_receiver_is_dead_are_read_by_the_next_one_in_order(
        daemon_factory):
    daemon = daemon_factory(APP, server=WORKERS_2)
    readers = two_receivers(daemon)
    assert udp_written(daemon, 'udp before', 10)
    for pid in readers:     # each reads its own UDP socket: the sender's is one of them
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: all(is_zombie(pid) or pid not in receiver_pids(daemon) for pid in readers),
             message='the UDP readers to die')
    # Until the next one starts (a second at most) the kernel keeps them.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for n in range(200):
            sock.sendto(frame('app', 'udp %d' % n), ('127.0.0.1', daemon.udp_port))
    wait_for(lambda: 'udp 199' in bodies_under(daemon, 'app'), message='the datagrams')
    assert [body for body in bodies_under(daemon, 'app') if body.startswith('udp ')
            and body != 'udp before'] == ['udp %d' % n for n in range(200)]
    wait_for(lambda: not {slot_pid(daemon, 0), slot_pid(daemon, 1)} & set(readers),
             message='both started again')
    assert daemon.stop() == 0


# -- A4-w10: a receiver out of descriptors drops the connections it is handed, silently ----

def lowest_free_fd(pid):
    used = {int(name) for name in os.listdir('/proc/%d/fd' % pid)}
    return min(set(range(len(used) + 1)) - used)


def test_a_receiver_out_of_descriptors_costs_no_connection(daemon_factory):
    daemon = daemon_factory(APP, server=WORKERS_2)
    four_clients_with_the_first_receiver_out_of_descriptors(daemon)
    assert sorted(bodies_under(daemon, 'app')) == ['client %d' % n for n in range(4)]
    assert daemon.stop() == 0


def test_a_connection_refused_by_a_receiver_out_of_descriptors_is_logged(daemon_factory):
    """A receiver out of descriptors is visible: it logs that it is, and `loghogd status`
    counts the connections it gave back (handoffs_refused, README)."""
    daemon = daemon_factory(APP, server=WORKERS_2, sections={'stats': {'interval': '0.2'}})
    four_clients_with_the_first_receiver_out_of_descriptors(daemon)
    wait_for(lambda: 'out of file descriptors' in daemon.output(), 10, message='the loss logged')

    def counted():
        try:
            status = json.loads((daemon.rundir / 'status.json').read_text())
        except (FileNotFoundError, ValueError):
            return False
        return status['events'].get('handoffs_refused', 0) >= 1
    wait_for(counted, 10, message='the refusal counted in status')
    assert daemon.stop() == 0


def four_clients_with_the_first_receiver_out_of_descriptors(daemon):
    """Four clients, one line each, in turn to each receiver, while the first has every
    descriptor number below its limit taken; returns once the four lines are written or a
    client was reset."""
    two_receivers(daemon)
    full = slot_pid(daemon, 0)
    # Every descriptor number below its limit is taken: as with a hard limit below what
    # max_connections needs (the daemon's start-up warning says "beyond that, accepting
    # pauses"), or with the log files a receiver started again inherits (A4-w7).
    limit = lowest_free_fd(full)
    _, hard = resource.prlimit(full, resource.RLIMIT_NOFILE)
    resource.prlimit(full, resource.RLIMIT_NOFILE, (limit, hard))
    clients = []
    try:
        for n in range(4):       # in turn to each receiver
            client = socket.create_connection(('127.0.0.1', daemon.tcp_port), timeout=10)
            clients.append(client)
            client.sendall(frame('app', 'client %d' % n))
            client.setblocking(False)

        def written_or_reset():
            if len(bodies_under(daemon, 'app')) == 4:
                return True
            for client in clients:
                try:
                    client.recv(1)
                except BlockingIOError:
                    pass
                except ConnectionResetError:
                    return True
            return False
        wait_for(written_or_reset, 15, message='the four lines')
    finally:
        for client in clients:
            client.close()


# -- A4-w11: SIGUSR1's summary counts no connection of the receivers -------------------------

def test_the_sigusr1_summary_counts_the_connections_the_receivers_hold(daemon_factory):
    daemon = daemon_factory(APP, server=WORKERS_2)
    two_receivers(daemon)
    clients = [socket.create_connection(('127.0.0.1', daemon.tcp_port), timeout=10)
               for _ in range(2)]
    try:
        for n, client in enumerate(clients):
            client.sendall(frame('app', 'open %d' % n))
        wait_for(lambda: len(bodies_under(daemon, 'app')) == 2, message='the two lines')
        # (Each receiver's first batch carries its report: counters and open connections.)
        daemon.signal(signal.SIGUSR1)
        line = wait_for(lambda: [line for line in daemon.output().splitlines()
                                 if 'status: {' in line], message='the summary')[-1]
    finally:
        for client in clients:
            client.close()
    summary = json.loads(line.split('status: ', 1)[1])
    assert summary['accepted'] == 2
    assert summary['connections'] == 2, line
    assert daemon.stop() == 0


# -- A4-w12: a v2 resend that lands on the same receiver is refused as a replay -------------

SIGNED = """
[strict]
rotate = daily
backup_count = 3
secret = s3cret
require_signature = v2
"""
SESSION = bytes.fromhex('00112233445566778899aabbccddeeff')


def signed_ack_frame(body, seq):
    """A v2-signed message asking for acks, as our client sends it (signed now)."""
    frame_v1 = MessageEncoder('strict', 'web1', flags=FLAG_ACK).encode('root', 1700000000, 0,
                                                                        body)
    return V2Signer('s3cret').sign_frame(frame_v1, SESSION, seq, int(time.time() * 1000))


def test_a_v2_resend_after_a_cut_that_lands_on_the_same_receiver_is_skipped_not_refused(
        daemon_factory):
    daemon = daemon_factory(SIGNED, server=WORKERS_2)
    two_receivers(daemon)
    session = make_session(SESSION.hex(), 1)
    with socket.create_connection(('127.0.0.1', daemon.tcp_port), timeout=10) as first:
        first.sendall(session + b''.join(signed_ack_frame('m%d' % n, n) for n in (1, 2, 3)))
        wait_for(lambda: bodies_under(daemon, 'strict') == ['m1', 'm2', 'm3'],
                 message='the first three')
    # The connection was cut before the acks reached the client.  Another client connects
    # meanwhile (to the other receiver, in turn): the client's new connection lands on the
    # receiver that had its first one; it sends its unacknowledged messages again.
    assert send_on_new_connection(daemon, b'')
    with socket.create_connection(('127.0.0.1', daemon.tcp_port), timeout=10) as second:
        second.sendall(session + b''.join(signed_ack_frame('m%d' % n, n) for n in (1, 2, 3, 4)))
        acks = AckReader(second).until(5)
    assert [r for a in acks for r in a.get('rejected', [])] == []
    assert bodies_under(daemon, 'strict') == ['m1', 'm2', 'm3', 'm4']
    assert daemon.stop() == 0


def test_a_captured_v2_frame_replayed_on_the_other_receiver_is_refused(daemon_factory):
    """docs/security.md listed it as a limit of workers > 1: each receiver kept its own
    table of written (session, number), so a frame replayed over a connection that landed
    on the other receiver was written again.  The main process decides now."""
    daemon = daemon_factory(SIGNED, server=WORKERS_2)
    two_receivers(daemon)
    plain = V2Signer('s3cret').sign_frame(
        MessageEncoder('strict', 'web1').encode('root', 1700000000, 0, 'signed once'),
        SESSION, 1, int(time.time() * 1000))
    assert send_on_new_connection(daemon, plain)
    wait_for(lambda: bodies_under(daemon, 'strict') == ['signed once'], message='the original')
    # The next connection goes to the other receiver (in turn): the same bytes again.
    sentinel = V2Signer('s3cret').sign_frame(
        MessageEncoder('strict', 'web1').encode('root', 1700000000, 0, 'sentinel'),
        SESSION, 2, int(time.time() * 1000))
    assert send_on_new_connection(daemon, plain + sentinel)
    wait_for(lambda: 'sentinel' in bodies_under(daemon, 'strict'), message='the sentinel')
    assert bodies_under(daemon, 'strict') == ['signed once', 'sentinel']
    assert 'replayed: session 001122334455 message 1 was written before' in daemon.output()
    assert daemon.stop() == 0


# -- A4-w13: lines received before a rotation land in the next period's file ---------------

@pytest.mark.skipif(LIBFAKETIME is None, reason='libfaketime is not installed')
def test_lines_received_before_midnight_are_not_written_after_the_rotation(tmp_path):
    daemon = ClockedDaemon(tmp_path, APP, '2024-05-15 23:59:56', server=WORKERS_2)
    daemon.start()
    folder = daemon.logdir / 'app'
    # The daemon's clock against ours: a line's stamp when we first see it written.
    assert send_on_new_connection(daemon, frame('app', 'probe'))
    line = wait_for(lambda: read_lines(folder / 'root.log'), interval=0.002)[0]
    seen_at = time.time()
    stamp = calendar.timegm(time.strptime(line[:19], '%Y-%m-%d %H:%M:%S')) + float(line[19:26])
    midnight = calendar.timegm((2024, 5, 16, 0, 0, 0)) - (stamp - seen_at)   # our clock
    assert time.time() < midnight - 0.5, 'the daemon started too late: %s' % line
    stop = threading.Event()

    def stream(sock):
        with sock:
            n = 0
            while not stop.is_set():   # a steady stream across midnight
                sock.sendall(frame('app', 'message %06d' % n))
                n += 1
                time.sleep(0.002)

    threads = [threading.Thread(target=stream, daemon=True, args=(
        socket.create_connection(('127.0.0.1', daemon.tcp_port), timeout=10),))
        for _ in range(2)]    # one to each receiver
    for thread in threads:
        thread.start()
    try:
        # The main process is not scheduled around midnight (a loaded machine): the
        # receivers go on reading and stamping, and hand the lines over once it runs.
        wait_for(lambda: time.time() >= midnight - 0.3, 5, interval=0.005,
                 message='0.3 s before midnight')
        with stopped([daemon.pid]):
            wait_for(lambda: time.time() >= midnight + 0.3, 5, interval=0.005,
                     message='0.3 s after midnight')
        wait_for(lambda: any(line >= '2024-05-16 00:00:00.4'
                             for line in read_lines(folder / 'root.log')), 15,
                 message='lines after midnight')
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert daemon.stop() == 0
    lines = file_history(folder)
    # The backup, compressed or not yet (the stop does not wait for the compressor).
    assert {name.split('.xz')[0] for name, _ in lines} == {
        'root.log.2024-05-15-00-00-00-000000', 'live'}
    early = [line for name, line in lines if name == 'live' and line < '2024-05-16']
    assert early == [], '%d lines of the 15th in the file of the 16th: %s' % (
        len(early), early[:3])
    # The rotation waited for the receivers' watermark, not for its bound.
    assert 'rotating without waiting longer' not in daemon.output()


# -- A4-w14: the receivers and the main process each read facilities.conf, at their own time --

def test_every_process_routes_with_the_table_the_main_process_reloaded(daemon_factory):
    daemon = daemon_factory(APP + FILLER, server=WORKERS_2)
    receivers = two_receivers(daemon)
    added = APP + FILLER + '[added]\nrotate = daily\nbackup_count = 1\n'
    with stopped(receivers):
        reload_with_receivers_stopped(daemon, added)
        # The administrator goes on editing (saved half-way, no SIGHUP), before the
        # receivers were scheduled again.
        daemon.facilities_path.write_text(added + '[half-written]\nrotate = dai')
    wait_for(lambda: main_logged(daemon, 'reloaded'), 30, message='the reload to be logged')
    wait_for(lambda: all(logged_by(daemon, pid, 'reload') for pid in receivers), 30,
             message='the receivers to read the file')
    assert_each_receiver_routes_to_the_added_app(daemon)
    assert daemon.stop() == 0


def held_by_receivers(daemon, receivers, port, peer_ports):
    """Whether the daemon's ends of the loopback connections from ``peer_ports`` to
    ``port`` are all open in ``receivers`` (/proc/net/tcp: their inodes)."""
    wanted = {'0100007F:%04X' % peer for peer in peer_ports}
    inodes = set()
    with open('/proc/net/tcp') as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[1] == '0100007F:%04X' % port and fields[2] in wanted:
                inodes.add('socket:[%s]' % fields[9])
    held = {path for pid in receivers for path in open_paths(pid)}
    return len(inodes) == len(wanted) and inodes <= held


def test_receivers_killed_mid_handshake_cost_a_tls_client_nothing(daemon_factory, tmp_path,
                                                                   make_logger):
    pki = make_certs(tmp_path / 'pki', 'web1')
    daemon = daemon_factory(APP, server=dict(
        WORKERS_2, listen_ipv4_ssl='127.0.0.1:0', pemfile=str(pki / 'loghog-server.pem'),
        cacert=str(pki / 'loghog-ca.cert')))
    receivers = two_receivers(daemon)
    handler = LoghogHandler('app', '127.0.0.1', daemon.tls_port, ssl_info={
        'pemfile': str(pki / 'web1.pem'), 'cacert': str(pki / 'loghog-ca.cert')})
    stream = Stream(make_logger(handler, logging.INFO), rate=1000)
    stalled = []
    try:
        wait_for_count(daemon.log_file('app'), 200)
        # Handshakes in progress in both receivers (peers that connect and say nothing yet)
        # when they die, beside the client's established connection.
        stalled = [socket.create_connection(('127.0.0.1', daemon.tls_port), timeout=10)
                   for _ in range(4)]
        wait_for(lambda: held_by_receivers(daemon, receivers, daemon.tls_port,
                                           [sock.getsockname()[1] for sock in stalled]),
                 message='the handshakes handed to the receivers')
        for pid in receivers:
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not set(receivers) & set(receiver_pids(daemon))
                 and len(receiver_pids(daemon)) == 2, message='two new receivers')
        wait_for_count(daemon.log_file('app'), len(numbered(daemon.log_file('app'))) + 200)
    finally:
        total = stream.stop()
        for sock in stalled:
            sock.close()
    assert handler.flush()
    assert numbered(daemon.log_file('app')) == list(range(total))
    assert 'exited unexpectedly (killed by SIGKILL)' in daemon.output()
    assert daemon.stop() == 0
