"""Adversarial tests of the daemon's word (issue 14): hostile peers, sloppy operators, bad days.

Every test runs a real daemon with DEFAULT settings and talks to it with raw sockets and the
wire helpers.  Attacks the daemon withstands are ordinary regression tests; an attack that
breaks a promise is marked ``xfail(strict=True, reason='FINDING: ...')`` until it is fixed.

The invariant checked throughout: a message the daemon acknowledged (and did not list as
rejected) is in the file, once, unless it is a documented duplicate (a resend of a
message written but not acknowledged, or a session the table could not track).
"""

import collections
import json
import os
import re
import signal
import socket
import threading
import time
import zlib

import pytest

from loghog.wire import (FLAG_ACK, FLAG_SESSION, FLAG_ZLIB, HEADER, encode_message, make_frame,
                         make_session, parse_ack)
from tests.integration.test_faults import (FACILITIES, STATS, AckStream, accepted,  # noqa: F401
                                           ext4_disk, fail_the_disk, fail_the_disk_between_calls,
                                           events, fill, log_lines,
                                           numbers_of, parse, read_all_lines, rss_kib,
                                           small_disk, snapshot, wait_for_status)
from tests.support import each_workers, line_body, read_lines, wait_for

MAX_MESSAGE_SIZE = 64 * 1024      # the default [server] max_message_size


# -- a hostile peer ----------------------------------------------------------------------------

def msg(body, app='app', flags=FLAG_ACK, compress=False):
    """A message frame asking for acks (as the loghog client sends it)."""
    return encode_message(app, 'root', 1, 0, 'h', body, flags=flags, compress=compress)


def raw_session(payload, flags=FLAG_ACK | FLAG_SESSION):
    """A session frame with any JSON payload (make_session only makes well-formed ones)."""
    if not isinstance(payload, bytes):
        payload = json.dumps(payload).encode()
    return make_frame(payload, flags=flags)


def oversize(flags=FLAG_ACK, size=MAX_MESSAGE_SIZE + 1):
    return HEADER.pack(size, flags) + b'x' * size


def zlib_bomb(megabytes=64, flags=FLAG_ACK):
    """A frame whose payload inflates to ``megabytes`` MiB of spaces (a JSON prefix first)."""
    compressor = zlib.compressobj(9)
    data = compressor.compress(b'{"version": 1, "app_id": "app", "body": "')
    chunk = b' ' * (1024 * 1024)
    for _ in range(megabytes):
        data += compressor.compress(chunk)
    data += compressor.compress(b'"}') + compressor.flush()
    return HEADER.pack(len(data), flags | FLAG_ZLIB) + data


class Peer:
    """One raw TCP connection from a chosen local address; reads acks on demand."""

    def __init__(self, daemon, source='127.0.0.1'):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((source, 0))
        self.sock.connect(('127.0.0.1', daemon.tcp_port))
        self.buffer = b''
        self.acks = []

    def send(self, *frames):
        self.sock.sendall(b''.join(frames))
        return self

    def until(self, count, timeout=10.0):
        """Read acks until one covers ``count`` frames; return the last one."""
        deadline = time.monotonic() + timeout
        while not self.acks or self.acks[-1]['ack'] < count:
            left = deadline - time.monotonic()
            assert left > 0, 'no ack for %d frames within %gs (acks %r)' % (count, timeout,
                                                                            self.acks[-3:])
            self.sock.settimeout(left)
            data = self.sock.recv(65536)
            assert data, 'connection closed after acks %r' % self.acks[-3:]
            self.buffer += data
            self._parse()
        return self.acks[-1]

    def _parse(self):
        while len(self.buffer) >= HEADER.size:
            size, flags = HEADER.unpack_from(self.buffer)
            if len(self.buffer) < HEADER.size + size:
                break
            self.acks.append(parse_ack(flags, self.buffer[HEADER.size:HEADER.size + size]))
            self.buffer = self.buffer[HEADER.size + size:]

    def rejected(self):
        return [r for a in self.acks for r in a.get('rejected', [])]

    def close(self):
        self.sock.close()


def bodies(daemon, app='app'):
    return [line_body(line) for line in read_lines(daemon.log_file(app))]


def sentinel(daemon, text='sentinel', app='app'):
    """Send an acked message on a fresh connection and wait for its ack: everything read
    before it on other connections has been handled."""
    peer = Peer(daemon).send(msg(text, app))
    peer.until(1)
    peer.close()


# -- 1. session frames with odd values ---------------------------------------------------------

ODD_SESSIONS = [
    {'session': 'S', 'first': 0},
    {'session': 'S', 'first': -1},
    {'session': 'S', 'first': True},
    {'session': 'S', 'first': False},
    {'session': 'S', 'first': 1.5},
    {'session': 'S', 'first': 1e3},
    {'session': 'S', 'first': '1'},
    {'session': 'S', 'first': None},
    {'session': 'S', 'first': [1]},
    {'session': 'S'},
    {'first': 1},
    {'session': '', 'first': 1},
    {'session': 'x' * 65, 'first': 1},
    {'session': 7, 'first': 1},
    {'session': ['S'], 'first': 1},
    ['S', 1],
    b'{"session": "S", "first": ' + b'9' * 5000 + b'}',   # beyond int('...') digit limit
    b'{"session": "S", "first": 1, "session": "T"}',       # duplicate key
    b'\xff\xfe',
    b'',
]


@pytest.mark.parametrize('payload', ODD_SESSIONS, ids=range(len(ODD_SESSIONS)))
def test_a_malformed_session_frame_is_rejected_and_skips_nothing(daemon, payload):
    """Each odd session frame is rejected in the ack, and never makes the daemon skip a
    message: the same messages sent twice after it are written twice (no session)."""
    duplicate_key = isinstance(payload, bytes) and b'"T"' in payload
    peer = Peer(daemon).send(raw_session(payload), msg('a1'), msg('a2'))
    ack = peer.until(3)
    if duplicate_key:     # json keeps the last value: a well-formed session 'T'
        assert peer.rejected() == []
    else:
        assert peer.rejected() == [[1, 'bad_fields']], peer.acks
    assert ack['ack'] == 3
    again = Peer(daemon).send(raw_session(payload), msg('a1'), msg('a2'))
    again.until(3)
    expected = ['a1', 'a2'] if duplicate_key else ['a1', 'a2', 'a1', 'a2']
    assert bodies(daemon) == expected
    peer.close()
    again.close()


def test_a_session_frame_with_unknown_flag_bits_or_compressed_is_rejected_not_a_session(daemon):
    peer = Peer(daemon).send(
        raw_session({'session': 'S', 'first': 1}, flags=FLAG_ACK | FLAG_SESSION | 0x100),
        make_frame(json.dumps({'session': 'S', 'first': 1}).encode(), compress=True,
                   flags=FLAG_ACK | FLAG_SESSION),
        msg('m1'))
    assert peer.until(3)['ack'] == 3
    assert [r[0] for r in peer.rejected()] == [1, 2]
    Peer(daemon).send(make_session('S', 1), msg('m1')).until(2)
    assert bodies(daemon) == ['m1', 'm1']      # no session was started by either frame


@pytest.mark.parametrize('first', [1, 2 ** 63, 10 ** 30, 10 ** 4000],
                         ids=['1', '2**63', '10**30', '10**4000'])
def test_huge_first_values_are_ordinary_sessions(daemon, first):
    peer = Peer(daemon).send(make_session('S', first), msg('m1'), msg('m2'))
    assert peer.until(3) == {'ack': 3}
    resend = Peer(daemon).send(make_session('S', first), msg('m1'), msg('m2'), msg('m3'))
    assert resend.until(4) == {'ack': 4}
    assert bodies(daemon) == ['m1', 'm2', 'm3']
    # A lower first from the same peer is a resend of older numbers: nothing new skipped
    # beyond what was written (m3 is number first+2).
    lower = Peer(daemon).send(make_session('S', max(1, first - 5)), msg('old'))
    lower.until(2)
    sentinel(daemon)
    assert bodies(daemon)[-1] == 'sentinel'
    for p in (peer, resend, lower):
        p.close()


# -- 2. session frames in odd places -----------------------------------------------------------

def test_repeated_session_frames_mid_connection_number_correctly(daemon):
    peer = Peer(daemon).send(make_session('S', 1), msg('m1'), msg('m2'),
                             make_session('S', 1), msg('m1'), msg('m2'), msg('m3'),
                             make_session('T', 1), msg('t1'),
                             make_session('S', 3), msg('m3'), msg('m4'))
    assert peer.until(12)['ack'] == 12
    assert peer.rejected() == []
    assert bodies(daemon) == ['m1', 'm2', 'm3', 't1', 'm4']
    peer.close()


def test_a_session_frame_after_plain_messages_counts_them(daemon):
    peer = Peer(daemon).send(msg('p1'), msg('p2'), make_session('S', 1), msg('m1'))
    assert peer.until(4)['ack'] == 4
    resend = Peer(daemon).send(make_session('S', 1), msg('m1'), msg('m2'))
    assert resend.until(3)['ack'] == 3
    assert bodies(daemon) == ['p1', 'p2', 'm1', 'm2']
    # Frames without FLAG_ACK before the first acked one count too.
    mixed = Peer(daemon).send(msg('q1', flags=0), msg('q2', flags=0), make_session('U', 1),
                              msg('u1'))
    assert mixed.until(4)['ack'] == 4
    for p in (peer, resend, mixed):
        p.close()


def test_two_live_connections_of_one_session_interleaved_write_each_message_once(daemon):
    a = Peer(daemon).send(make_session('S', 1))
    b = Peer(daemon).send(make_session('S', 1))
    a.until(1)
    b.until(1)
    for start in range(1, 201, 20):
        a.send(*[msg('m%d' % n) for n in range(start, start + 20)])
        b.send(*[msg('m%d' % n) for n in range(start, start + 20)])
    assert a.until(201)['ack'] == 201
    assert b.until(201)['ack'] == 201
    written = bodies(daemon)
    assert collections.Counter(written) == {'m%d' % n: 1 for n in range(1, 201)}
    a.close()
    b.close()


def test_a_partly_overlapping_resend_writes_each_message_once(daemon):
    a = Peer(daemon).send(make_session('S', 1), *[msg('m%d' % n) for n in range(1, 11)])
    a.close()       # cut before any ack was read
    b = Peer(daemon).send(make_session('S', 6), *[msg('m%d' % n) for n in range(6, 16)])
    assert b.until(11)['ack'] == 11
    c = Peer(daemon).send(make_session('S', 3), *[msg('m%d' % n) for n in range(3, 21)])
    assert c.until(19)['ack'] == 19
    assert bodies(daemon) == ['m%d' % n for n in range(1, 21)]
    b.close()
    c.close()


def test_the_same_session_id_from_another_address_is_another_session(daemon):
    a = Peer(daemon, '127.0.0.1').send(make_session('S', 1), msg('a1'), msg('a2'))
    a.until(3)
    # The intruder writes a message numbered far ahead in "its" S.
    b = Peer(daemon, '127.0.0.3').send(make_session('S', 10 ** 9), msg('intruder'))
    b.until(2)
    a.send(msg('a3'), msg('a4'))
    assert a.until(5) == {'ack': 5}
    resend = Peer(daemon, '127.0.0.1').send(make_session('S', 3), msg('a3'), msg('a4'),
                                            msg('a5'))
    assert resend.until(4) == {'ack': 4}
    assert bodies(daemon) == ['a1', 'a2', 'intruder', 'a3', 'a4', 'a5']
    for p in (a, b, resend):
        p.close()


# -- 3. rejected frames and acknowledgement numbering ------------------------------------------

def test_a_frame_over_max_message_size_first_keeps_the_numbering(daemon):
    peer = Peer(daemon).send(oversize(), msg('good2'), msg('x', app='nope'), msg('good4'))
    assert peer.until(4)['ack'] == 4
    assert peer.rejected() == [[1, 'too_large'], [3, 'unknown_app']]
    assert bodies(daemon) == ['good2', 'good4']
    peer.close()


def test_a_frame_over_max_message_size_first_without_the_ack_flag_is_counted(daemon):
    peer = Peer(daemon).send(oversize(flags=0), make_session('S', 1), msg('m1'))
    assert peer.until(3)['ack'] == 3     # frames before the first acked one count
    assert bodies(daemon) == ['m1']
    peer.close()


def test_rejected_frames_between_good_ones_in_a_session(daemon):
    frames = [make_session('S', 1), msg('m1'), oversize(), msg('m3'), zlib_bomb(),
              msg('m5'), msg('x', app='nope'), make_frame(b'not json', flags=FLAG_ACK),
              msg('m8')]
    peer = Peer(daemon).send(*frames)
    assert peer.until(9)['ack'] == 9
    assert [r[0] for r in peer.rejected()] == [3, 5, 7, 8]
    assert bodies(daemon) == ['m1', 'm3', 'm5', 'm8']
    peer.close()


def test_a_rejected_message_resent_after_a_cut_is_rejected_again_not_acked_as_written(daemon):
    """The client sends m1, an unknown-app message (number 2) and m3; the connection is cut
    before it reads the ack that listed the rejection.  It resends from 1: numbers 1 and 3
    were written, number 2 never was.  The daemon must not answer number 2 as done without
    listing it as rejected (the client then believes it delivered)."""
    a = Peer(daemon).send(make_session('S', 1), msg('m1'), msg('x', app='nope'), msg('m3'))
    sentinel(daemon)
    a.close()
    b = Peer(daemon).send(make_session('S', 1), msg('m1'), msg('x', app='nope'), msg('m3'))
    assert b.until(4)['ack'] == 4
    assert b.rejected() == [[3, 'unknown_app']]
    b.close()


# -- 4. the sessions table -----------------------------------------------------------------

def test_a_flood_of_junk_session_frames_costs_no_memory_and_evicts_nothing(daemon):
    victim = Peer(daemon).send(make_session('V', 1), *[msg('v%d' % n) for n in range(1, 51)])
    assert victim.until(51)['ack'] == 51
    rss_before = rss_kib(daemon.pid)
    flood = Peer(daemon, '127.0.0.1')
    for chunk in range(30):
        flood.send(*[make_session('junk-%d-%d' % (chunk, i), 1) for i in range(1000)])
    flood.until(30000, timeout=20)
    victim.close()       # the cut; the client resends everything
    resend = Peer(daemon).send(make_session('V', 1), *[msg('v%d' % n) for n in range(1, 51)])
    assert resend.until(51)['ack'] == 51
    assert bodies(daemon) == ['v%d' % n for n in range(1, 51)]
    assert rss_kib(daemon.pid) - rss_before < 20 * 1024
    flood.close()
    resend.close()


def flood_sessions(daemon, source, count, tag):
    """One connection from ``source`` that writes one message in each of ``count`` new
    sessions (a session frame switches the session mid-connection)."""
    peer = Peer(daemon, source)
    frames = []
    for i in range(count):
        frames += [make_session('%s-%s-%d' % (tag, source, i), 1), msg('f')]
    peer.send(*frames)
    peer.until(2 * count, timeout=20)
    peer.close()


def test_a_session_flood_from_the_same_and_other_addresses_never_evicts_an_active_client(
        daemon_factory):
    daemon = daemon_factory(FACILITIES, sections=STATS)
    victim = Peer(daemon).send(make_session('V', 1), *[msg('v%d' % n) for n in range(1, 51)])
    assert victim.until(51)['ack'] == 51
    rss_before = rss_kib(daemon.pid)
    threads = [threading.Thread(target=flood_sessions, args=(daemon, '127.0.0.%d' % k, 1100, 'f'))
               for k in range(1, 12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    grown = rss_kib(daemon.pid) - rss_before
    print('session flood: RSS grew %d KiB' % grown)
    assert grown < 30 * 1024, grown      # 10,000 sessions at most
    victim.close()
    resend = Peer(daemon).send(make_session('V', 1), *[msg('v%d' % n) for n in range(1, 51)])
    assert resend.until(51)['ack'] == 51
    assert [b for b in bodies(daemon) if b != 'f'] == ['v%d' % n for n in range(1, 51)]
    status = wait_for_status(daemon, lambda s: events(s, 'sessions_untracked') > 0,
                             'untracked sessions counted')
    assert events(status, 'sessions_untracked') > 0
    resend.close()


def test_a_session_flood_from_other_addresses_leaves_a_new_client_its_duplicate_suppression(
        daemon_factory):
    """docs/security.md: "neither junk session frames nor a flood of sessions from other
    peers can make a client's resend be written twice".  Ten other local addresses write one
    message in each of 1,000 sessions (every per-peer quota, the whole 10,000 table, all
    "active" for 5 minutes).  Then a client on an eleventh address starts: its session is
    not tracked, and its resend after a cut is written twice."""
    daemon = daemon_factory(FACILITIES, sections=STATS)
    threads = [threading.Thread(target=flood_sessions, args=(daemon, '127.0.0.%d' % k, 1000, 'f'))
               for k in range(2, 12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    victim = Peer(daemon, '127.0.0.100').send(make_session('V', 1),
                                              *[msg('v%d' % n) for n in range(1, 21)])
    victim.close()                    # cut before the ack was read
    sentinel(daemon)
    resend = Peer(daemon, '127.0.0.100').send(make_session('V', 1),
                                              *[msg('v%d' % n) for n in range(1, 21)])
    assert resend.until(21)['ack'] == 21
    written = [b for b in bodies(daemon) if b.startswith('v')]
    assert written == ['v%d' % n for n in range(1, 21)], '%d lines for 20 messages' % len(written)
    resend.close()


# -- 5. signals ------------------------------------------------------------------------------

# The documented bound: the drain takes at most DRAIN_TIME_S (10 s) in all, then the last
# write and fsync; the init script's SIGKILL comes at 30 s.  On a loaded 2-core machine the
# pass that was running when the signal came is added; 20 s leaves that room.
STOP_BOUND_S = 20.0


def start_streams(daemon, names, app='app'):
    clients = [AckStream(name, app=app) for name in names]
    threads = [threading.Thread(target=c.run, args=(daemon.tcp_port, 60.0), daemon=True)
               for c in clients]
    for t in threads:
        t.start()
    wait_for(lambda: all(c.acked >= 200 for c in clients), 30, message='every stream acked')
    return clients, threads


def stop_streams(clients, threads):
    for c in clients:
        c.stop.set()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)


def check_acked_once(data, clients):
    """Every acknowledged message of each client is there exactly once; lines are whole.
    (Each client used one connection and never resent: nothing may be twice.)"""
    whole, bad = parse(data)
    assert not bad, bad[:3]
    for c in clients:
        numbers = numbers_of(whole, c.name)
        counts = collections.Counter(numbers)
        missing = [n for n in range(1, c.acked + 1) if not counts[n]]
        assert not missing, '%s: %d acked messages missing (acked %d), first %s' % (
            c.name, len(missing), c.acked, missing[:5])
        assert not [n for n, k in counts.items() if k > 1], c.name
    return whole


def storm(daemon, signals, count, pause_s=0.0):
    for i in range(count):
        daemon.signal(signals[i % len(signals)])
        if pause_s:
            time.sleep(pause_s)


def stop_and_time(daemon, repeat=1):
    sent_at = time.monotonic()
    for _ in range(repeat):
        daemon.signal(signal.SIGTERM)
    code = daemon.proc.wait(STOP_BOUND_S + 10)
    took = time.monotonic() - sent_at
    print('stopped: exit %s after %.2fs' % (code, took))
    return code, took


def test_a_storm_of_sighup_sigusr1_and_sigterm_under_four_acked_streams(daemon_factory):
    daemon = daemon_factory(FACILITIES)
    clients, threads = start_streams(daemon, ['a', 'b', 'c', 'd'])
    storm(daemon, [signal.SIGHUP, signal.SIGUSR1, signal.SIGHUP], 600, pause_s=0.002)
    acked = [c.acked for c in clients]
    wait_for(lambda: all(c.acked > a + 100 for c, a in zip(clients, acked)), 30,
             message='the streams to go on after the storm')
    assert 'reloaded' in daemon.output() and 'status:' in daemon.output()
    code, took = stop_and_time(daemon, repeat=50)
    assert code == 0, daemon.output()[-2000:]
    assert took < STOP_BOUND_S, took
    stop_streams(clients, threads)
    check_acked_once(daemon.log_file('app').read_bytes(), clients)
    assert daemon.output().count('received SIGTERM') == 1


def test_sigterm_while_eight_clients_never_stop_sending_exits_0_within_the_bound(
        daemon_factory):
    daemon = daemon_factory(FACILITIES)
    clients, threads = start_streams(daemon, ['s%d' % i for i in range(8)])
    code, took = stop_and_time(daemon)
    assert code == 0, daemon.output()[-2000:]
    assert took < STOP_BOUND_S, took
    stop_streams(clients, threads)
    check_acked_once(daemon.log_file('app').read_bytes(), clients)


BIG_FACILITIES = 20000


def big_facilities():
    return FACILITIES + ''.join('\n[big%d]\nrotate = daily\nbackup_count = 3\n' % i
                                for i in range(BIG_FACILITIES))


def test_signals_during_the_reload_of_a_big_facilities_conf(daemon_factory):
    daemon = daemon_factory(FACILITIES)
    clients, threads = start_streams(daemon, ['a', 'b'])
    daemon.facilities_path.write_text(big_facilities())
    daemon.signal(signal.SIGHUP)
    storm(daemon, [signal.SIGHUP, signal.SIGUSR1], 20)
    wait_for(lambda: 'reloaded' in daemon.output(), 30, message='the reload')
    peer = Peer(daemon).send(msg('after', app='big%d' % (BIG_FACILITIES - 1)))
    assert peer.until(1, timeout=30) == {'ack': 1}
    peer.close()
    # SIGTERM in the middle of further reloads of the big file.
    storm(daemon, [signal.SIGHUP], 3)
    code, took = stop_and_time(daemon)
    assert code == 0, daemon.output()[-2000:]
    assert took < STOP_BOUND_S, took
    stop_streams(clients, threads)
    check_acked_once(daemon.log_file('app').read_bytes(), clients)


ROTATING = """
[app]
rotate = daily
backup_count = 1000
max_size = 64K
"""


def read_folder(folder):
    """The lines of every file in ``folder``, backups (compressed or not) included.

    A file that does not end with a newline (after a crash, the live file's last, unsynced
    line may be cut short on the disk) ends its own last line here: glued onto the next
    file's first line, it made that acknowledged line look lost (A5-1's "first [1]")."""
    from tests.support import read_backup
    data = b''
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.endswith('.partial') or not os.path.isfile(path):
            continue
        if name.endswith(('.xz', '.gz', '.bz2')):
            if name[:-3].rstrip('.') in os.listdir(folder):
                continue
            data += read_backup(path).encode()
        else:
            with open(path, 'rb') as stream:
                data += stream.read()
        if data and not data.endswith(b'\n'):
            data += b'\n'
    return data


def wait_compressed(folder):
    """Wait until no backup waits for its compression (both forms never count twice)."""
    def settled():
        names = set(os.listdir(folder))
        return not any(n.endswith('.partial') for n in names) and not any(
            n + ext in names for n in names for ext in ('.xz', '.gz', '.bz2'))
    wait_for(settled, 30, message='the compressions to finish')


def test_sighup_storm_during_size_rotation_loses_and_doubles_nothing_acked(daemon_factory):
    daemon = daemon_factory(ROTATING)
    clients, threads = start_streams(daemon, ['a', 'b', 'c'])
    storm(daemon, [signal.SIGHUP], 200, pause_s=0.01)
    code, took = stop_and_time(daemon)        # mid-stream, mid-rotation
    assert code == 0, daemon.output()[-2000:]
    assert took < STOP_BOUND_S, took
    stop_streams(clients, threads)
    folder = daemon.logdir / 'app'
    assert len(os.listdir(folder)) > 5      # it did rotate, many times
    wait_compressed(folder)
    check_acked_once(read_folder(folder), clients)


def test_signals_on_a_full_disk_ack_nothing_unwritten_and_stop_within_the_bound(
        small_disk, daemon_factory):
    daemon = daemon_factory(FACILITIES, sections=STATS, extra_args=['-L', str(small_disk)])
    filler = fill(small_disk)
    peer = Peer(daemon).send(make_session('S', 1), *[msg('m%d' % n) for n in range(1, 201)])
    assert peer.until(1) == {'ack': 1}
    wait_for_status(daemon, lambda s: accepted(s) == 200 and events(s, 'write_errors') >= 1,
                    'the 200 messages read and a failed write')
    storm(daemon, [signal.SIGHUP, signal.SIGUSR1], 100)
    code, took = stop_and_time(daemon)
    assert took < STOP_BOUND_S, took
    # Nothing was written: no ack beyond the session frame's, the connection closed.
    peer.sock.settimeout(10)
    rest = b''
    while True:
        data = peer.sock.recv(65536)
        if not data:
            break
        rest += data
    peer.buffer += rest
    peer._parse()
    assert peer.acks[-1] == {'ack': 1}, peer.acks
    # The loss is visible: the daemon's log names the file and the count.
    assert log_lines(daemon, 'ERROR', '200 lines that could not be written'), \
        daemon.output()[-2000:]
    assert code == 0, daemon.output()[-2000:]      # README: "... and exit 0"
    os.unlink(filler)


# -- 6. fairness where it touches acks -------------------------------------------------------

# Issue 15's target for a good client is a p99 under 50 ms; the promise tested here is the
# weaker one of issue 14's acks: a flood never holds another connection's acks back for
# long.  Bound generously for a loaded 2-core machine.
ACK_LATENCY_BOUND_S = 2.0


def quiet_client_latencies(daemon, count=50, pause_s=0.02):
    peer = Peer(daemon).send(make_session('quiet', 1))
    peer.until(1)
    latencies = []
    for n in range(1, count + 1):
        sent_at = time.monotonic()
        peer.send(msg('q%d' % n))
        peer.until(n + 1, timeout=30)
        latencies.append(time.monotonic() - sent_at)
        time.sleep(pause_s)
    peer.close()
    return sorted(latencies)


def test_four_acked_floods_into_the_same_file_never_hold_back_a_quiet_clients_acks(
        daemon_factory):
    daemon = daemon_factory(FACILITIES)
    clients, threads = start_streams(daemon, ['f1', 'f2', 'f3', 'f4'])
    latencies = quiet_client_latencies(daemon)
    stop_streams(clients, threads)
    print('quiet client ack latency: median %.3fs, p98 %.3fs, worst %.3fs' % (
        latencies[len(latencies) // 2], latencies[-2], latencies[-1]))
    assert latencies[-1] < ACK_LATENCY_BOUND_S, 'worst %.3fs, p98 %.3fs' % (
        latencies[-1], latencies[-2])
    assert [b for b in bodies(daemon) if b.startswith('q')] == ['q%d' % n for n in range(1, 51)]
    assert daemon.stop() == 0


class RefusedFlood:
    """A connection that sends acked frames of an unknown app without end (reads its acks)."""

    def __init__(self, daemon):
        self.peer = Peer(daemon)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        chunk = b''.join(msg('x' * 100, app='nope') for _ in range(200))
        self.peer.sock.setblocking(True)
        drain = threading.Thread(target=self._drain, daemon=True)
        drain.start()
        try:
            while not self.stop.is_set():
                self.peer.sock.sendall(chunk)
        except OSError:
            pass

    def _drain(self):
        try:
            while self.peer.sock.recv(1 << 20):
                pass
        except OSError:
            pass

    def close(self):
        self.stop.set()
        self.peer.sock.shutdown(socket.SHUT_RDWR)
        self.thread.join(10)
        self.peer.close()


def test_eight_floods_of_refused_acked_frames_never_hold_back_a_quiet_clients_acks(
        daemon_factory):
    daemon = daemon_factory(FACILITIES)
    floods = [RefusedFlood(daemon) for _ in range(8)]
    latencies = quiet_client_latencies(daemon)
    for flood in floods:
        flood.close()
    print('quiet client ack latency: median %.3fs, p98 %.3fs, worst %.3fs' % (
        latencies[len(latencies) // 2], latencies[-2], latencies[-1]))
    assert latencies[-1] < ACK_LATENCY_BOUND_S, 'worst %.3fs, p98 %.3fs' % (
        latencies[-1], latencies[-2])
    assert daemon.stop() == 0


# -- 7. fsync and I/O errors at the worst moments ----------------------------------------------

def remount_copy(image, mount_point):
    """Mount a copy of the dead disk's image: what had reached the device."""
    import shutil
    import subprocess
    from tests.integration.test_faults import unmount
    unmount(mount_point)
    shutil.copyfile(image, str(image) + '.copy')
    subprocess.run(['mount', '-o', 'loop', str(image) + '.copy', str(mount_point)], check=True,
                   capture_output=True, timeout=30)


def loghogd_status(daemon, *options):
    import subprocess
    import sys
    result = subprocess.run([sys.executable, '-m', 'loghogd', 'status', '-c',
                             str(daemon.config_path)] + list(options),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


@each_workers
def test_eio_mid_stream_during_rotation_and_sighups_acks_only_what_reached_the_disk(
        ext4_disk, daemon_factory):
    """The disk dies (ext4 shutdown, no log flush: what was not fsynced is gone) while three
    acked clients stream into a file rotating every 64 KiB and SIGHUPs reopen it every
    10 ms: the worst moments (between write and fsync, inside a rotation, inside a reopen)
    come up by the thousand.  Every line acknowledged must be on the disk's copy; the loss
    is in the daemon's log and in `loghogd status`."""
    image, mount_point = ext4_disk
    daemon = daemon_factory(ROTATING, sections=STATS, extra_args=['-L', str(mount_point)])
    clients, threads = start_streams(daemon, ['a', 'b', 'c'])
    stop_storm = threading.Event()

    def hups():
        while not stop_storm.is_set():
            daemon.signal(signal.SIGHUP)
            time.sleep(0.01)
    storm_thread = threading.Thread(target=hups, daemon=True)
    storm_thread.start()
    wait_for(lambda: all(c.acked >= 1500 for c in clients), 30, message='1,500 acked each')
    fail_the_disk_between_calls(daemon, mount_point)
    status = wait_for_status(daemon, lambda s: events(s, 'write_errors') + events(
        s, 'sync_errors') >= 1, 'the failure counted')
    stop_storm.set()
    storm_thread.join(10)
    stop_streams(clients, threads)
    acked = {c.name: c.acked for c in clients}
    assert log_lines(daemon, 'ERROR', str(mount_point / 'app')), daemon.output()[-2000:]
    shown = json.loads(loghogd_status(daemon, '--json'))['events']
    assert shown.get('write_errors', 0) + shown.get('sync_errors', 0) >= 1, shown
    assert daemon.stop() == 0
    remount_copy(image, mount_point)
    data = read_folder(mount_point / 'app')
    whole, bad = parse(data)
    for c in clients:
        numbers = set(numbers_of(whole, c.name))
        missing = [n for n in range(1, acked[c.name] + 1) if n not in numbers]
        assert not missing, '%s: %d of %d acked lines not on disk, first %s (status %s)' % (
            c.name, len(missing), acked[c.name], missing[:5], status['events'])


@each_workers
def test_a_resend_racing_its_original_on_a_dying_disk_is_never_acked_unsynced(
        ext4_disk, daemon_factory):
    """Two connections of one session (same peer) send the same messages at the same time,
    as a client that reconnected while its old connection was still being read: whichever
    is read second skips them as duplicates, and its ack must wait for the original's
    fsync.  The disk dies mid-stream; everything either connection had acked must be on
    the disk's copy."""
    image, mount_point = ext4_disk
    daemon = daemon_factory(FACILITIES, sections=STATS, extra_args=['-L', str(mount_point)])
    # Enough messages that both are still sending when the disk dies (with 30,000, a fast
    # run had written and acknowledged all of them first, and no failure ever came).
    first = AckStream('r', total=150000)
    second = AckStream('r', total=150000)
    first.frame(150000)                # made before the threads share the list
    second.session = first.session
    second.frames = first.frames       # the same numbered messages
    threads = [threading.Thread(target=c.run, args=(daemon.tcp_port, 60.0), daemon=True)
               for c in (first, second)]
    for t in threads:
        t.start()
    wait_for(lambda: min(first.acked, second.acked) >= 3000, 30, message='both acked')
    fail_the_disk_between_calls(daemon, mount_point)
    wait_for_status(daemon, lambda s: events(s, 'write_errors') + events(s, 'sync_errors') >= 1,
                    'the failure counted')
    for c in (first, second):
        c.stop.set()
    for t in threads:
        t.join(30)
    acked = max(first.acked, second.acked)
    assert daemon.stop() == 0
    remount_copy(image, mount_point)
    whole, bad = parse(read_folder(mount_point / 'app'))
    numbers = set(numbers_of(whole, 'r'))
    missing = [n for n in range(1, acked + 1) if n not in numbers]
    assert not missing, '%d of %d acked lines not on disk, first %s' % (len(missing), acked,
                                                                        missing[:5])


def test_the_same_session_id_over_ipv6_loopback_is_another_session(daemon_factory):
    if not socket.has_ipv6:
        pytest.skip('no IPv6')
    try:
        daemon = daemon_factory(server={'listen_ipv6': '[::1]:0'})
    except AssertionError as exc:
        pytest.skip('cannot listen on ::1: %s' % exc)
    port6 = [port for host, port in daemon.addresses['tcp'] if ':' in host][0]
    a = Peer(daemon).send(make_session('S', 1), msg('v4-1'), msg('v4-2'))
    a.until(3)
    six = socket.create_connection(('::1', port6))
    six.sendall(make_session('S', 10 ** 6) + msg('v6'))
    reader = Peer.__new__(Peer)
    reader.sock, reader.buffer, reader.acks = six, b'', []
    reader.until(2)
    a.send(msg('v4-3'))
    assert a.until(4) == {'ack': 4}
    assert bodies(daemon) == ['v4-1', 'v4-2', 'v6', 'v4-3']
    six.close()
    a.close()


def test_peers_refused_a_session_leave_nothing_behind_in_the_session_table():
    """Pure state (no daemon): memory must not grow with the number of peer addresses that
    were refused an entry.  On a network an attacker has as many source addresses as an
    IPv6 /64; each refused one costs an OrderedDict forever (expire never sees it)."""
    from loghogd.acks import SessionTable
    table = SessionTable(limit=10, per_peer=5)
    for i in range(10):
        assert table.create((('10.0.0.%d' % (i // 5), None), 's%d' % i), now=0.0) is not None
    for i in range(1000):
        assert table.create((('2001:db8::%x' % i, None), 'x'), now=1.0) is None
    table.expire(now=10 ** 6)
    assert len(table.by_peer) <= 2, '%d per-peer entries for 2 peers with sessions' % len(
        table.by_peer)


def test_lines_lost_to_a_dead_disk_are_visible_in_loghogd_status(ext4_disk, daemon_factory):
    image, mount_point = ext4_disk
    daemon = daemon_factory(FACILITIES, sections=STATS, extra_args=['-L', str(mount_point)])
    clients, threads = start_streams(daemon, ['a'])
    fail_the_disk(mount_point)
    status = wait_for_status(daemon, lambda s: events(s, 'write_errors') + events(
        s, 'sync_errors') >= 1 and events(s, 'ack_connections_closed_on_loss') >= 1,
        'the failure counted and the client closed unacknowledged')
    stop_streams(clients, threads)
    text = loghogd_status(daemon).replace(str(mount_point.parent), '<tmp>')   # its name says 'lost'
    counted = {k: v for k, v in status['events'].items() if 'error' in k or 'lost' in k}
    assert re.search(r"error|lost", text, re.I), 'status.json has %r; the text shows:\n%s' % (
        counted, text)


def test_a_peer_that_half_closes_after_its_last_frame_still_gets_its_acks(daemon):
    """``shutdown(SHUT_WR)`` is how a stream says "that was all" (loghog's own
    Connection.finish does it); the peer still reads.  The daemon wrote the lines but the
    acks never come, so a client resends: duplicates without a session."""
    peer = Peer(daemon).send(*[msg('m%d' % n) for n in range(1, 11)])
    peer.sock.shutdown(socket.SHUT_WR)
    sentinel(daemon)
    assert bodies(daemon)[:10] == ['m%d' % n for n in range(1, 11)]
    assert peer.until(10) == {'ack': 10}
    peer.close()


BIG_ROTATING = """
[app]
rotate = daily
backup_count = 10
max_size = 8M
"""


def test_sigterm_while_a_big_backup_is_being_compressed_exits_0_within_the_bound(
        daemon_factory):
    """The compressor child works on an 8 MiB backup (xz level 6: seconds) when SIGTERM
    comes: the stop must not wait for it; the backup stays, uncompressed, complete."""
    daemon = daemon_factory(BIG_ROTATING)
    peer = Peer(daemon)
    chunk = b''.join(msg('m%d %s' % (n, 'y' * 200), flags=0) for n in range(5000))
    for _ in range(10):        # about 10 MiB: one rotation at 8 MiB
        peer.sock.sendall(chunk)
    folder = daemon.logdir / 'app'
    wait_for(lambda: any('.partial' in n for n in os.listdir(folder)), 30,
             message='the compression of the backup to start')
    code, took = stop_and_time(daemon)
    assert code == 0, daemon.output()[-2000:]
    assert took < STOP_BOUND_S, took
    peer.close()
    names = os.listdir(folder)
    assert not any(n.endswith('.partial') for n in names), names
    assert read_folder(folder).count(b'\n') == 50000, names



def test_a_sighup_storm_during_a_slow_reload_never_stalls_the_loop_or_the_stop(
        daemon_factory):
    """A sloppy operator (or a tool that signals once per file it changed) sends SIGHUPs
    while a reload of 20,000 facilities runs (about 1-2 s here).  One reload after the last
    SIGHUP reads every edit; the daemon must go on serving and stop within its bound."""
    daemon = daemon_factory(big_facilities())
    stop = threading.Event()

    def hups():
        while not stop.is_set():
            daemon.signal(signal.SIGHUP)
            time.sleep(0.005)
    thread = threading.Thread(target=hups, daemon=True)
    thread.start()
    wait_for(lambda: 'reloaded' in daemon.output(), 30, message='a first reload')
    time.sleep(1.0)     # the storm goes on through the next reload
    stop.set()
    thread.join(10)
    sent_at = time.monotonic()
    peer = Peer(daemon).send(msg('served'))
    try:
        peer.until(1, timeout=5)
        served = '%.1fs' % (time.monotonic() - sent_at)
    except (AssertionError, OSError):
        served = 'not within 5s'
    finally:
        peer.close()
    term_at = time.monotonic()
    daemon.signal(signal.SIGTERM)
    try:
        code = daemon.proc.wait(10)
    except __import__('subprocess').TimeoutExpired:
        code = 'still running'
    took = time.monotonic() - term_at
    reloads = daemon.output().count('reloaded')
    assert served != 'not within 5s' and code == 0, (
        'a message acked: %s; SIGTERM: exit %s after %.1fs; %d reloads so far' % (
            served, code, took, reloads))


def test_the_last_sighup_of_a_storm_always_reads_the_last_edit(daemon_factory):
    """Signals coalesce (in the kernel and in the loop's record): the SIGHUP that follows
    an edit must still lead to a reload that starts after it, storm or not."""
    daemon = daemon_factory(FACILITIES)
    stop = threading.Event()

    def hups():
        while not stop.is_set():
            daemon.signal(signal.SIGHUP)
            time.sleep(0.002)
    thread = threading.Thread(target=hups, daemon=True)
    thread.start()
    wait_for(lambda: 'reloaded' in daemon.output(), 30, message='a first reload')
    daemon.facilities_path.write_text(FACILITIES + '\n[late]\nrotate = daily\n'
                                      'backup_count = 3\n')
    daemon.signal(signal.SIGHUP)
    stop.set()
    thread.join(10)
    daemon.signal(signal.SIGHUP)     # the operator's last one, after the edit

    def accepted_late():
        peer = Peer(daemon).send(msg('late one', app='late'))
        try:
            peer.until(1, timeout=20)
            return not peer.rejected()
        finally:
            peer.close()
    wait_for(accepted_late, 30, interval=0.2, message='the edit to be loaded')
    assert bodies(daemon, 'late')[0] == 'late one'
    code, took = stop_and_time(daemon)
    assert code == 0 and took < STOP_BOUND_S, (code, took)
