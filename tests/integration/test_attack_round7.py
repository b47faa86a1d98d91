"""Adversarial round 7: receiver processes ([server] workers = 2), v2 signatures, TLS,
JSON facilities and the `loghog` command, everything else at its DEFAULT.

Real loghogd processes on loopback (ports chosen at run time) and the real client.  Tests
marked ``xfail(strict=..., reason='A7-N: ...')`` are open findings; the others are attacks
that found nothing, kept as cheap guards of a real promise.
"""

import collections
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest

from loghog import LoghogHandler
from loghog.wire import FLAG_ACK, MessageEncoder, make_session
from tests.integration.test_acks import AckReader
from tests.integration.test_attack_workers import open_paths
from tests.integration.test_attack_round5 import LIBFAKETIME
from tests.integration.test_receivers import receiver_pids
from tests.unit.test_client_acks import StoppingDaemon
from tests.unit.test_client_fakes import FrameServer
from tests.support import (ROOT, Stream, free_port, line_body, make_certs, read_lines, stopped,
                           wait_for)

APP = """
[app]
rotate = daily
backup_count = 3
"""
WORKERS_2 = {'workers': '2'}


def counts(*paths, word='msg'):
    """Counter of n for every '<word> n' line in ``paths``."""
    found = collections.Counter()
    for path in paths:
        for line in read_lines(path):
            parts = line_body(line).split()
            if len(parts) == 2 and parts[0] == word:
                found[int(parts[1])] += 1
    return found


def two_receivers(daemon):
    return wait_for(lambda: (lambda pids: pids if len(pids) == 2 else None)(
        receiver_pids(daemon)), message='two receivers')


def alive(pid):
    try:
        with open('/proc/%d/stat' % pid) as handle:
            return handle.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


# -- workers = 2: the main process killed mid stream -----------------------------------------

def test_the_main_process_killed_mid_stream_loses_no_acked_line_and_leaves_no_receiver(
        daemon_factory, make_logger):
    port = free_port()
    server = dict(WORKERS_2, listen_ipv4='127.0.0.1:%d' % port)
    first = daemon_factory(APP, server=server)
    receivers = two_receivers(first)
    handlers = [LoghogHandler('app', '127.0.0.1', port) for _ in range(2)]
    streams = [Stream(make_logger(h, logging.INFO), rate=1500) for h in handlers]
    leftover = []
    try:
        wait_for(lambda: len(read_lines(first.log_file('app'))) >= 1000, 20, message='1000')
        first.kill()
        leftover = [pid for pid in receivers if alive(pid)]
        wait_for(lambda: not any(alive(pid) for pid in receivers), 10,
                 message='the receivers to exit once the main process is gone')
        second = daemon_factory(APP, server=server, name='d2')
        wait_for(lambda: len(read_lines(second.log_file('app'))) >= 1000, 20, message='1000')
    finally:
        totals = [s.stop() for s in streams]
        for pid in receivers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    for handler in handlers:   # one may be waiting out its reconnect backoff (up to 1 s)
        wait_for(handler.flush, 20, message='the handler to flush')
    found = counts(first.log_file('app'), second.log_file('app'))
    # two streams write the same numbers: each n twice (once per handler), more after a crash
    missing = [n for n in range(max(totals)) if found[n] < sum(t > n for t in totals)]
    assert missing == []
    assert second.stop() == 0


# -- workers = 2: a resend on the other receiver while the old connection's lines wait -------

def holder_of(daemon, receivers, client_port, daemon_port):
    """The receiver whose descriptors hold the daemon's end of the loopback connection
    from ``client_port`` to ``daemon_port`` (or None)."""
    wanted = '0100007F:%04X' % client_port
    inode = None
    with open('/proc/net/tcp') as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[1] == '0100007F:%04X' % daemon_port and fields[2] == wanted:
                inode = 'socket:[%s]' % fields[9]
    if inode is None or inode == 'socket:[0]':
        return None
    for pid in receivers:
        if inode in open_paths(pid):
            return pid
    return None


def holder(daemon, receivers, sock):
    return holder_of(daemon, receivers, sock.getsockname()[1], daemon.tcp_port)


SESSION_ID = '00112233445566778899aabbccddeeff'


def acked(body):
    return MessageEncoder('app', 'web1', flags=FLAG_ACK).encode('root', 1700000000, 0, body)


def test_a_resend_on_the_other_receiver_before_the_first_read_the_originals_writes_each_once(
        daemon_factory):
    """A client's connection is cut while the receiver that holds it is not scheduled (a
    loaded machine): the messages it sent wait in that connection's socket.  The client
    reconnects, lands on the other receiver, resends them on its session and gets them
    acknowledged.  Then the first receiver runs again and reads the originals: they are
    duplicates of the session and must not be written again."""
    daemon = daemon_factory(APP, server=WORKERS_2)
    receivers = two_receivers(daemon)
    first = socket.create_connection(('127.0.0.1', daemon.tcp_port), timeout=10)
    first.sendall(make_session(SESSION_ID, 1) + acked('m1'))
    AckReader(first).until(2)
    old = wait_for(lambda: holder(daemon, receivers, first), message='the first receiver')
    daemon_end = (first.getsockname()[1], daemon.tcp_port)
    with stopped([old]):
        first.sendall(b''.join(acked('m%d' % n) for n in (2, 3, 4, 5)))
        first.close()      # the client gave it up (its kernel sent what it had)
        second = socket.create_connection(('127.0.0.1', daemon.tcp_port), timeout=10)
        new = wait_for(lambda: holder(daemon, receivers, second), message='the other')
        assert new != old
        second.sendall(make_session(SESSION_ID, 2)
                       + b''.join(acked('m%d' % n) for n in (2, 3, 4, 5)))
        AckReader(second).until(5)
        second.close()
    # The first receiver runs again: it reads the originals, then the end of the stream,
    # and closes its end (no receiver holds it any more).
    wait_for(lambda: holder_of(daemon, receivers, *daemon_end) is None,
             message='the first receiver to read the old connection to its end')
    with socket.create_connection(('127.0.0.1', daemon.tcp_port), timeout=10) as third:
        third.sendall(acked('sentinel'))
        AckReader(third).until(1)
    bodies = [line_body(line) for line in read_lines(daemon.log_file('app'))]
    assert collections.Counter(bodies) == collections.Counter(
        ['m1', 'm2', 'm3', 'm4', 'm5', 'sentinel']), bodies
    assert daemon.stop() == 0


# -- workers = 2: SIGHUP storm while receivers are killed and restarted --------------------

def test_sighups_while_receivers_are_killed_and_restarted_lose_and_double_no_acked_line(
        daemon_factory, make_logger):
    daemon = daemon_factory(APP, server=WORKERS_2)
    two_receivers(daemon)
    handlers = [LoghogHandler('app', '127.0.0.1', daemon.tcp_port) for _ in range(2)]
    streams = [Stream(make_logger(h, logging.INFO), rate=1500) for h in handlers]
    try:
        wait_for(lambda: len(read_lines(daemon.log_file('app'))) >= 500, 20, message='500')
        for round_ in range(4):
            pids = receiver_pids(daemon)
            if pids:
                os.kill(pids[round_ % len(pids)], signal.SIGKILL)
            for _ in range(3):
                daemon.signal(signal.SIGHUP)
                time.sleep(0.05)
            time.sleep(0.2)
        count = len(read_lines(daemon.log_file('app')))
        wait_for(lambda: len(read_lines(daemon.log_file('app'))) >= count + 500, 20,
                 message='500 more')
    finally:
        totals = [s.stop() for s in streams]
    for handler in handlers:   # one may be waiting out its reconnect backoff
        wait_for(handler.flush, 20, message='the handler to flush')
    found = counts(daemon.log_file('app'))
    wrong = {n: found[n] for n in range(max(totals)) if found[n] != sum(t > n for t in totals)}
    assert wrong == {}
    assert daemon.proc.poll() is None
    assert daemon.stop() == 0


# -- format = json: a record whose extra= field is nested deeper than Python recurses --------

JSON_APP = """
[app]
rotate = daily
backup_count = 3
format = json
"""


def nested(depth):
    top = inner = {}
    for _ in range(depth):
        inner['a'] = {}
        inner = inner['a']
    return top


def test_a_record_with_a_deeply_nested_extra_field_is_delivered_and_emit_does_not_raise(
        daemon_factory, make_logger):
    """README: every extra= key is sent, "values JSON can hold as they are, others as their
    repr()"; a fields object nested deeper than 8 is dropped by the daemon, "never the
    record".  A 5,000-deep dict (a tree, a linked structure) in extra=."""
    daemon = daemon_factory(JSON_APP)
    handler = LoghogHandler('app', '127.0.0.1', daemon.tcp_port)
    logger = make_logger(handler, logging.INFO)
    logger.info('deep record', extra={'tree': nested(5000)})
    logger.info('sentinel')
    assert handler.flush()
    messages = [json.loads(line)['message'] for line in read_lines(daemon.log_file('app'))]
    assert messages == ['deep record', 'sentinel']
    assert daemon.stop() == 0


# -- TLS: the last ack before a graceful stop's reset (A5-2 over TLS) ---------------------------

def tls_server_context(pki):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(pki / 'loghog-server.pem'))
    context.load_verify_locations(str(pki / 'loghog-ca.cert'))
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def test_over_tls_an_ack_received_before_the_stopping_daemons_reset_is_taken(
        tmp_path, make_logger):
    """A5-2, fixed over plain TCP (sender.py: the ack still in the socket is read before a
    connection that failed under a write is dropped), with the same fake daemon speaking
    TLS: it reads 200 frames, waits until the client is blocked writing, acknowledges all
    it read and closes with the rest unread (the kernel resets the connection).  The
    client must go on, on the next daemon, from the first message that ack did not cover.
    """
    pki = make_certs(tmp_path / 'pki', 'web1')
    context = tls_server_context(pki)
    daemon = StoppingDaemon(lambda raw: context.wrap_socket(raw, server_side=True))
    port = daemon.port
    handler = LoghogHandler('app', '127.0.0.1', port, retry_min_s=0.05, retry_max_s=0.2,
                            ssl_info={'pemfile': str(pki / 'web1.pem'),
                                      'cacert': str(pki / 'loghog-ca.cert')})
    logger = make_logger(handler, logging.INFO)
    for n in range(5000):
        logger.info('message %d %s', n, 'x' * 2000)
    acked = daemon.join()
    with FrameServer(port=port, ssl_context=context) as second:
        wait_for(lambda: second.sessions, 10, message='the session frame on the next daemon')
        assert second.sessions[0]['first'] == acked


class Detached:
    """An ORM object whose session is gone: its repr() raises (SQLAlchemy's
    DetachedInstanceError, a Django lazy object before settings are configured)."""

    def __repr__(self):
        raise RuntimeError('instance is not bound to a session')


def test_a_record_with_an_extra_field_whose_repr_raises_is_delivered(
        daemon_factory, make_logger, monkeypatch):
    monkeypatch.setattr(logging, 'raiseExceptions', False)
    daemon = daemon_factory(JSON_APP)
    handler = LoghogHandler('app', '127.0.0.1', daemon.tcp_port)
    logger = make_logger(handler, logging.INFO)
    logger.info('user logged in', extra={'user': Detached()})
    logger.info('sentinel')
    assert handler.flush()
    messages = [json.loads(line)['message'] for line in read_lines(daemon.log_file('app'))]
    assert messages == ['user logged in', 'sentinel']
    assert daemon.stop() == 0


# -- workers = 2: a graceful stop while an fsync is slow --------------------------------------

SLOW_SYNC_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <unistd.h>

/* The first fsync or fdatasync after the file named by A7_SLOW_SYNC_FLAG appears takes
   2 s (it removes the file): a busy disk, in the processes this is preloaded in. */
static void maybe_slow(void) {
    const char *flag = getenv("A7_SLOW_SYNC_FLAG");
    if (flag && unlink(flag) == 0)
        usleep(2000000);
}
int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    maybe_slow();
    return real(fd);
}
int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    maybe_slow();
    return real(fd);
}
"""


@pytest.fixture
def slow_sync(tmp_path, monkeypatch):
    """In daemons started from now on, the first fsync/fdatasync after the returned path
    is created takes 2 s (an LD_PRELOAD shim, built here with cc)."""
    compiler = shutil.which('cc') or shutil.which('gcc')
    if compiler is None:
        pytest.skip('needs a C compiler')
    source = tmp_path / 'slow_sync.c'
    source.write_text(SLOW_SYNC_C)
    library = tmp_path / 'slow_sync.so'
    subprocess.run([compiler, '-shared', '-fPIC', '-o', str(library), str(source), '-ldl'],
                   check=True, capture_output=True, timeout=60)
    flag = tmp_path / 'slow'
    monkeypatch.setenv('LD_PRELOAD', str(library))
    monkeypatch.setenv('A7_SLOW_SYNC_FLAG', str(flag))
    return flag


@pytest.mark.parametrize('workers', [
    pytest.param(1, id='workers1'),
    pytest.param(2, id='workers2')])
def test_a_graceful_stop_while_the_disk_syncs_slowly_acknowledges_what_it_wrote(
        daemon_factory, make_logger, slow_sync, workers):
    """A busy disk: an fsync takes 2 s.  SIGTERM while written lines wait for it:
    README, "A clean stop acknowledges what it wrote" (the delivery table: duplicates only
    after a crash, a failed fsync, max_backlog or an untracked session).  The client
    must not send them again to the next daemon."""
    port = free_port()
    server = dict(listen_ipv4='127.0.0.1:%d' % port)
    if workers == 2:
        server.update(WORKERS_2)
    first = daemon_factory(APP, server=server, name='d0')
    handler = LoghogHandler('app', '127.0.0.1', port)
    logger = make_logger(handler, logging.INFO)
    for n in range(500):
        logger.info('msg %d', n)
    assert handler.flush()
    slow_sync.touch()
    for n in range(500, 1000):
        logger.info('msg %d', n)
    wait_for(lambda: len(read_lines(first.log_file('app'))) == 1000, 20,
             message='all written (their fsync pending)')
    assert first.stop() == 0
    assert not slow_sync.exists()    # the slow fsync happened
    second = daemon_factory(APP, server=server, name='d1')
    wait_for(handler.flush, 20, message='the handler to flush')
    found = counts(first.log_file('app'), second.log_file('app'))
    assert set(found) == set(range(1000))
    twice = sorted(n for n in found if found[n] > 1)
    assert twice == [], '%d written twice (%d..%d)' % (len(twice), twice[0], twice[-1])
    assert second.stop() == 0


# -- the loghog command on a pipe across daemon restarts ---------------------------------------

def test_loghog_reading_a_pipe_across_a_restart_and_a_kill_delivers_every_line(daemon_factory):
    """`tail -F file | loghog -a app`: the daemon is restarted (SIGTERM) and then killed
    (kill -9) and started again while lines keep coming; the pipe then ends: exit 0, every
    line written (twice only for what was in flight at the kill)."""
    port = free_port()
    server = dict(listen_ipv4='127.0.0.1:%d' % port)
    daemons = [daemon_factory(APP, server=server, name='d0')]
    command = subprocess.Popen(
        [sys.executable, '-m', 'loghog', '-a', 'app', '-H', '127.0.0.1', '-p', str(port)],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(ROOT))
    sent = 0
    try:
        for round_ in range(3):
            for _ in range(300):
                command.stdin.write(b'msg %d\n' % sent)
                sent += 1
            command.stdin.flush()
            wait_for(lambda: len(read_lines(daemons[-1].log_file('app'))) >= 100, 20,
                     message='lines reaching the daemon')
            if round_ == 0:
                assert daemons[-1].stop() == 0
            elif round_ == 1:
                daemons[-1].kill()
            else:
                break
            for _ in range(300):    # while no daemon listens
                command.stdin.write(b'msg %d\n' % sent)
                sent += 1
            command.stdin.flush()
            daemons.append(daemon_factory(APP, server=server, name='d%d' % (round_ + 1)))
        command.stdin.close()
        assert command.wait(30) == 0, command.stderr.read()
    finally:
        if command.poll() is None:
            command.kill()
            command.wait()
    found = counts(*[d.log_file('app') for d in daemons])
    assert [n for n in range(sent) if not found[n]] == []
    assert daemons[-1].stop() == 0


# -- v2 signatures with two receivers: restarts and a fork child --------------------------------

SIGNED_APP = """
[app]
rotate = daily
backup_count = 3
secret = s3cret
require_signature = v2
"""


def test_a_v2_signed_stream_across_sigterm_and_kill_with_a_fork_child_loses_nothing(
        daemon_factory, make_logger):
    """workers = 2, require_signature = v2: a signing handler's stream across a SIGTERM
    restart and a kill -9 restart (resends are signed again, never refused as replays),
    and a fork child of the same handler (a new session: nothing refused as replayed)."""
    port = free_port()
    server = dict(WORKERS_2, listen_ipv4='127.0.0.1:%d' % port)
    daemons = [daemon_factory(SIGNED_APP, server=server, name='d0')]
    handler = LoghogHandler('app', '127.0.0.1', port, secret='s3cret')
    logger = make_logger(handler, logging.INFO)
    stream = Stream(logger, rate=1500)
    try:
        for n, how in enumerate(('stop', 'kill')):
            wait_for(lambda: len(read_lines(daemons[-1].log_file('app'))) >= 500, 20,
                     message='500 lines')
            if how == 'stop':
                assert daemons[-1].stop() == 0
            else:
                daemons[-1].kill()
            daemons.append(daemon_factory(SIGNED_APP, server=server, name='d%d' % (n + 1)))
        wait_for(lambda: len(read_lines(daemons[-1].log_file('app'))) >= 500, 20,
                 message='500 lines')
        pid = os.fork()
        if pid == 0:     # the child: its own records, then out (flushing on its way)
            status = 1
            try:
                for k in range(300):
                    logger.info('child %d', k)
                status = 0 if handler.flush() else 3
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        total = stream.stop()
    wait_for(handler.flush, 20, message='the handler to flush')
    assert handler.rejected == 0
    paths = [d.log_file('app') for d in daemons]
    found = counts(*paths)
    assert [n for n in range(total) if not found[n]] == []
    assert sorted(counts(*paths, word='child')) == list(range(300))
    assert 'replayed' not in daemons[-1].output()
    assert daemons[-1].stop() == 0


def test_json_records_with_odd_text_huge_and_colliding_fields_each_make_one_valid_line(
        daemon_factory, make_logger):
    """format = json through the handler: a message and a field with undecodable bytes
    (os.fsdecode's surrogates), a 40 KB field, a 100 KB message, fields named like the
    line's own keys, twice over (time and field_time), a NaN, a non-str key: one valid
    JSON object per record, ASCII, nothing lost silently."""
    daemon = daemon_factory(JSON_APP)
    handler = LoghogHandler('app', '127.0.0.1', daemon.tcp_port)
    logger = make_logger(handler, logging.INFO)
    odd = os.fsdecode(b'caf\xe9 \xff\xfe end')
    logger.info('odd %s', odd, extra={'path': odd})
    logger.info('big field', extra={'blob': 'x' * 40000})
    logger.info('big message %s', 'y' * 100000)
    logger.info('collide', extra={'time': 'mine', 'field_time': 'also', 'host': 'h',
                                  'fields_dropped': 'no', 'nan': float('nan')})
    logger.info('keys', extra={'d': {1: 'a', (2, 3): 'b'}})
    logger.info('sentinel')
    assert handler.flush()
    raw = daemon.log_file('app').read_bytes()
    assert raw.isascii()
    records = [json.loads(line) for line in raw.decode().splitlines()]
    assert [r['message'].split()[0] for r in records] == [
        'odd', 'big', 'big', 'collide', 'keys', 'sentinel']
    assert records[0]['message'] == 'odd ' + odd
    assert records[0]['path'] == odd
    assert records[1].get('blob') == 'x' * 40000 or 'loghog_fields_cut' in records[1]
    # Both kept (which gets which name depends on the order: A7-3, tests/unit).
    assert {records[3]['field_time'], records[3]['field_field_time']} == {'mine', 'also'}
    assert records[3]['field_host'] == 'h'
    assert daemon.stop() == 0


# -- v2: frames that waited in the kernel while the daemon was stopped ---------------------------

STALLED_CLIENT = r"""
import logging, sys
from loghog import LoghogHandler
handler = LoghogHandler('app', '127.0.0.1', int(sys.argv[1]), secret='s3cret')
logger = logging.getLogger('stalled')
logger.addHandler(handler)
logger.setLevel(logging.INFO)
logger.info('msg 0')
assert handler.flush()
print('ready', flush=True)
sys.stdin.readline()
for n in range(1, 101):
    logger.info('msg %d', n)
print('logged', flush=True)
sys.stdin.readline()
logger.info('msg 101')
print(handler.flush(), handler.rejected, flush=True)
handler.close()
"""


@pytest.mark.skipif(LIBFAKETIME is None, reason='needs libfaketime (apt-get install faketime)')
def test_v2_frames_written_before_a_long_stall_of_the_daemon_are_not_lost(
        daemon_factory, tmp_path):
    """A7-5.  require_signature = v2.  The daemon is stopped (SIGSTOP, a frozen VM, a
    debugger) for more than max_clock_skew (300 s): the frames the client had written into
    the connection meanwhile were signed before the stall, and the daemon, reading them
    after it, refused them as clock_skew though both clocks were right: all 100, every
    run, counted in handler.rejected and said on standard error, but lost.  The client
    signs a message refused as clock_skew again with the time of a new write, once.
    Here the stall's 301 s pass for both clocks at once (libfaketime in both processes)."""
    offset = tmp_path / 'offset'
    offset.write_text('+0\n')
    environment = ['LD_PRELOAD=' + LIBFAKETIME, 'FAKETIME_TIMESTAMP_FILE=%s' % offset,
                   'FAKETIME_NO_CACHE=1', 'FAKETIME_DONT_FAKE_MONOTONIC=1']
    daemon = daemon_factory(SIGNED_APP)
    daemon.kill()
    command = daemon.command
    daemon.command = lambda: ['env'] + environment + command()
    daemon.start()
    client = subprocess.Popen(
        ['env'] + environment + [sys.executable, '-c', STALLED_CLIENT, str(daemon.tcp_port)],
        cwd=str(ROOT), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout.readline() == 'ready\n'
        path = daemon.log_file('app')
        with daemon.stopped():
            client.stdin.write('go\n')
            client.stdin.flush()
            assert client.stdout.readline() == 'logged\n'
            time.sleep(0.3)   # the sender thread writes them into the connection
            offset.write_text('+301\n')   # 301 s pass, for the daemon and the client
        wait_for(lambda: len(read_lines(path)) == 101, 20, message='what waited, written')
        client.stdin.write('last\n')
        client.stdin.flush()
        assert client.stdout.readline() == 'True 0\n'
        assert client.wait(20) == 0
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert sorted(counts(daemon.log_file('app'))) == list(range(102))
    assert 'clock_skew' in daemon.output()   # the first reading refused them
    assert daemon.stop() == 0
