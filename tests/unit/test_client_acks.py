"""Acknowledged delivery, client side: the bookkeeping (pure) and the handler against fakes.

The real daemon's side of the story (crash, restart, cut connections) is in
tests/integration/test_client_acks.py.
"""

import contextlib
import os
import socket
import threading
import time

import pytest

from loghog import LoghogHandler, wire
from loghog.acks import (ConnectionAcks, Unacknowledged, describe_rejections, rejections)
from loghog.buffer import FrameQueue
from tests.support import Loggers
from tests.unit.test_client_fakes import FrameServer, decode_frames, wait_until

FAST_RETRY = {'retry_min_s': 0.05, 'retry_max_s': 0.2}


# -- numbering and releasing (pure) ----------------------------------------------------------

def test_frames_are_numbered_from_one_in_the_order_written_and_released_by_number():
    kept = Unacknowledged()
    kept.add([b'a', b'b', b'c'])
    assert (kept.first_seq, kept.next_seq, len(kept)) == (1, 4, 3)
    assert kept.release_through(2) == 2
    assert (kept.first_seq, len(kept)) == (3, 1)
    assert kept.release_through(2) == 0  # an old ack again: nothing more
    kept.add([b'd'])
    assert kept.frames_after(2, 100) == [b'c', b'd']
    assert kept.release_all() == 2 and kept.next_seq == 5 and len(kept) == 0


def test_frames_to_write_again_respect_the_byte_limit_but_are_never_none():
    kept = Unacknowledged(first_seq=10)
    kept.add([b'x' * 50, b'y' * 30, b'z' * 30])
    assert kept.frames_after(9, 10) == [b'x' * 50]
    assert kept.frames_after(10, 60) == [b'y' * 30, b'z' * 30]
    assert kept.frames_after(12, 60) == []


def test_an_ack_counts_the_session_frame_as_frame_one():
    acks = ConnectionAcks(first_seq=7)  # the session frame announced message 7 next
    acks.first_write_at = 100.0
    acks.written_through = 9             # messages 7, 8, 9 written after it
    assert acks.frames_written == 4
    assert acks.apply({'ack': 1}) == 6   # only the session frame: no message done
    assert acks.apply({'ack': 3}) == 8
    assert acks.apply({'ack': 4}) == 9
    assert acks.seq_of_frame(1) is None and acks.seq_of_frame(2) == 7


@pytest.mark.parametrize('count', [5, 2])
def test_an_ack_beyond_what_was_written_or_going_backwards_is_refused(count):
    acks = ConnectionAcks(first_seq=1)
    acks.first_write_at = 0.0
    acks.written_through = 3
    acks.apply({'ack': 3})
    with pytest.raises(ValueError, match='acknowledgement of'):
        acks.apply({'ack': count})


def test_rejections_are_summed_by_reason():
    counts = rejections({'ack': 9, 'rejected': [[2, 'unknown_app'], [5, 'bad_signature'],
                                               [6, 'unknown_app'], 'junk'],
                         'more_rejected': 3})
    assert describe_rejections(counts) == \
        'other (3), unknown_app (2), bad_signature (1), unknown (1)'
    assert rejections({'ack': 1}) == {}


def test_frames_awaiting_acks_count_against_the_buffer_bound():
    queue = FrameQueue(4)
    queue.append(b'1', held=2)
    queue.append(b'2', held=2)
    queue.append(b'3', held=2)           # 2 held + 2 queued: the oldest queued goes
    assert (queue.take(100), queue.dropped) == ([b'2', b'3'], 1)
    queue.append(b'4', held=4)           # all room held by unacknowledged frames
    assert (len(queue), queue.dropped) == (0, 2)
    queue.append(b'5', held=1)
    queue.requeue([b'0', b'x', b'y'], held=1)  # back in front, but only 3 fit
    assert queue.take(100) == [b'x', b'y', b'5'] and queue.dropped == 3


# -- the handler against fake daemons ------------------------------------------------------

@pytest.fixture
def make_handler(request):
    """``make(**options)``: a LoghogHandler for a fresh logger, closed at the end."""
    loggers = Loggers(f'acks.{request.node.name}')

    def make(port, **options):
        handler = LoghogHandler('app', '127.0.0.1', port, **options)
        return handler, loggers(handler)

    yield make
    loggers.close()
    wait_until(lambda: not [t for t in threading.enumerate() if t.name == 'loghog-sender'])


def test_acknowledged_is_on_for_streams_off_for_udp_and_refused_with_udp():
    assert LoghogHandler('app').acknowledged is True
    assert LoghogHandler('app', stream=False).acknowledged is False
    assert LoghogHandler('app', acknowledged=False).acknowledged is False
    with pytest.raises(ValueError, match='acknowledgements need a stream'):
        LoghogHandler('app', stream=False, acknowledged=True)


def test_flush_returns_once_everything_is_acknowledged(make_handler):
    with FrameServer() as server:
        handler, logger = make_handler(server.port, max_buffer_size=5000)
        for n in range(2000):
            logger.info('message %d', n)
        assert handler.flush()  # True: nothing left waiting for an ack
        assert server.bodies() == [f'message {n}' for n in range(2000)]
        assert set(server.flags) == {wire.FLAG_ACK} and len(server.sessions) == 1
        assert (handler.dropped, handler.unconfirmed, handler.rejected) == (0, 0, 0)


def test_unacknowledged_messages_are_written_again_after_a_reconnect(make_handler):
    first = FrameServer()
    first.ack_limit = 3  # the session frame and messages 1 and 2; 3..5 never acknowledged
    handler, logger = make_handler(first.port, **FAST_RETRY)
    for n in range(1, 6):
        logger.info('message %d', n)
    first.wait_for(5)
    wait_until(lambda: len(handler._sender._unacked) == 3)
    first.stop()
    with FrameServer(port=first.port) as second:
        logger.info('message 6')
        second.wait_for(4)
        handler.flush()
        assert second.bodies() == ['message 3', 'message 4', 'message 5', 'message 6']
        # The same session, numbered from the oldest unacknowledged message.
        assert [s['first'] for s in first.sessions + second.sessions] == [1, 3]
        assert second.sessions[0]['session'] == first.sessions[0]['session']
    assert first.bodies() == [f'message {n}' for n in range(1, 6)]
    assert (handler.dropped, handler.unconfirmed) == (0, 0)


def test_a_daemon_that_never_answers_the_handshake_gets_no_message_and_it_is_said(
        make_handler, capsys, monkeypatch):
    """A daemon older than acknowledgements (or a stopped one) never answers the session
    frame: nothing is written to it, nothing counts as delivered, and the user is told on
    standard error without print_debug.  Talking to it is an explicit choice."""
    monkeypatch.setattr('loghog.handler.HANDSHAKE_TIMEOUT_S', 0.3)
    with FrameServer(answers_acks=False) as old_daemon:
        handler, logger = make_handler(old_daemon.port)
        for n in range(10):
            logger.info('message %d', n)
        seen = []
        wait_until(lambda: seen.append(capsys.readouterr().err) or
                   'did not answer' in ''.join(seen))
        assert not handler.flush()  # kept, not counted as sent
        assert old_daemon.messages == [] and old_daemon.sessions
        plain, plain_logger = make_handler(old_daemon.port, acknowledged=False)
        plain_logger.info('plain')
        assert plain.flush() and old_daemon.wait_for(1)
        assert old_daemon.bodies() == ['plain']
    err = ''.join(seen)
    assert 'did not answer the session frame within 0.3 s' in err
    assert 'acknowledged=False' in err


def test_a_daemon_that_stops_acknowledging_keeps_the_messages_until_close(make_handler):
    with FrameServer() as server:
        handler, logger = make_handler(server.port, flush_timeout_s=0.4, close_timeout_s=0.3)
        logger.info('acknowledged')
        assert handler.flush()
        server.ack_limit = 2      # a daemon whose disk is full: reads, acknowledges nothing
        logger.info('kept until acknowledged')
        server.wait_for(2)
        assert not handler.flush()
        handler.close()
    assert handler.unconfirmed == 1


def test_close_gives_up_on_acks_within_its_bound_and_says_so(make_handler, capsys):
    with FrameServer() as server:
        server.ack_limit = 1      # the handshake, and nothing after it
        handler, logger = make_handler(server.port, close_timeout_s=0.3)
        logger.info('never acknowledged')
        server.wait_for(1)
        started = time.monotonic()
        handler.close()
        assert time.monotonic() - started < 1.0
    assert (handler.unconfirmed, handler.dropped) == (1, 0)
    assert capsys.readouterr().err == (
        f'loghog (app): 1 messages not delivered to tcp://127.0.0.1:{server.port} '
        '(1 sent but not acknowledged (maybe written))\n')


def test_a_queued_message_is_sent_at_once_while_the_sender_waits_for_acks(make_handler):
    with FrameServer() as server:
        server.ack_limit = 1      # nothing but the session frame is ever acknowledged
        handler, logger = make_handler(server.port, close_timeout_s=0.1)
        logger.info('first')
        server.wait_for(1)
        wait_until(lambda: handler._sender._is_waiting_for_acks)  # polling the socket
        started = time.monotonic()
        logger.info('second')
        server.wait_for(2)
        assert time.monotonic() - started < 0.5


class StoppingDaemon:
    """A fake daemon that stops as loghogd does: it reads 200 frames (answering the session
    frame), waits until the client is blocked writing, acknowledges all it read, stops
    listening and closes with the rest unread (the kernel resets the connection).
    ``wrap(socket)`` makes the accepted socket TLS; ``read`` holds the count it acked."""

    def __init__(self, wrap=lambda sock: sock):
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(('127.0.0.1', 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.read = []
        self.wrap = wrap
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        raw, _ = self.listener.accept()
        sock = self.wrap(raw)
        buffer, received = b'', 0
        while received < 200:
            frames, buffer = decode_frames(buffer + sock.recv(65536))
            if received == 0 and frames:
                sock.sendall(wire.make_ack(1))       # the session frame's answer
            received += len(frames)
        time.sleep(0.5)                  # the client fills the buffers and waits to write
        sock.sendall(wire.make_ack(received))        # everything read was written
        self.read.append(received)
        self.listener.close()            # stopped: no one listens until the next one
        sock.close()                     # unread frames: the kernel resets the connection

    def join(self):
        self.thread.join(10)
        assert self.read, 'the fake daemon never read 200 frames'
        return self.read[0]


def test_an_ack_that_came_just_before_a_reset_is_taken_not_written_again(make_handler):
    """A5-2: a daemon that stops (SIGTERM) acknowledges what it wrote and closes; frames it
    did not read make the kernel answer the client's next write with a reset.  The client,
    blocked writing, saw the reset and reconnected without reading that last ack, which
    was waiting in its socket: it wrote those messages again, to a daemon with no memory
    of them (a line written twice across a graceful restart)."""
    daemon = StoppingDaemon()
    port = daemon.port
    handler, logger = make_handler(port, **FAST_RETRY)
    for n in range(5000):
        logger.info('message %d %s', n, 'x' * 2000)
    acked = daemon.join()
    with FrameServer(port=port) as second:
        wait_until(lambda: second.sessions, 10)
        # Messages are numbered from 1 (the session frame is frame 1 of the connection):
        # the new connection goes on from the first one the ack did not cover.
        assert second.sessions[0]['first'] == acked


class SkewingDaemon:
    """A fake daemon that checks v2 signatures (it says so in its handshake answer) and
    refuses message frames as clock_skew while ``refuses(body, times_seen)`` says so.
    ``taken`` holds the bodies it accepted, ``seen`` every body it read, in order."""

    def __init__(self, refuses):
        self.refuses = refuses
        self.listener = socket.socket()
        self.listener.bind(('127.0.0.1', 0))
        self.listener.listen(4)
        self.port = self.listener.getsockname()[1]
        self.taken, self.seen, self.times = [], [], []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        import json
        import zlib
        from loghog.signing import split_envelope
        sock, _ = self.listener.accept()
        buffer, number, rejected = b'', 0, []
        with sock:
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                buffer += data
                answered = number
                while len(buffer) >= wire.HEADER_SIZE:
                    size, flags = wire.HEADER.unpack_from(buffer)
                    if len(buffer) < wire.HEADER_SIZE + size:
                        break
                    payload = buffer[wire.HEADER_SIZE:wire.HEADER_SIZE + size]
                    buffer = buffer[wire.HEADER_SIZE + size:]
                    number += 1
                    if number == 1:                      # the session frame
                        continue
                    assert flags & wire.FLAG_SIGNED_V2, flags
                    envelope = split_envelope(payload)
                    self.times.append(envelope.time_ms)
                    body = envelope.body
                    if flags & wire.FLAG_ZLIB:
                        body = zlib.decompress(body)
                    body = json.loads(body)['body']
                    self.seen.append(body)
                    if self.refuses(body, self.seen.count(body)):
                        rejected.append([number, 'clock_skew'])
                    else:
                        self.taken.append(body)
                if number > answered:
                    sock.sendall(wire.make_ack(number, rejected, signs_v2=number == 1))
                    rejected = []


@pytest.mark.parametrize('compression', [False, True])
def test_a_v2_message_refused_as_clock_skew_is_signed_again_once_and_taken(
        make_handler, compression):
    """A7-5: the daemon checks a v2 signature's time when it reads the message; one that
    waited in the connection longer than max_clock_skew (a daemon stopped for minutes) was
    refused and lost, with both clocks right.  Signed again with the time of the new
    write, it is taken; nothing is counted as rejected."""
    daemon = SkewingDaemon(lambda body, seen: seen == 1 and body.startswith('old'))
    handler, logger = make_handler(daemon.port, secret='s3cret', compression=compression)
    for n in range(50):
        logger.info('old %d', n)
    logger.info('new')
    assert handler.flush()
    assert sorted(daemon.taken) == sorted(['old %d' % n for n in range(50)] + ['new'])
    assert [b for b in daemon.seen if b.startswith('old')] == \
        ['old %d' % n for n in range(50)] * 2   # in order, each twice: once refused
    assert (handler.rejected, handler.dropped, handler.unconfirmed) == (0, 0, 0)


def test_a_second_clock_skew_refusal_is_final_counted_and_said(make_handler, capsys):
    """A client whose clock is off: each message is tried once more, then reported as
    rejected (no endless resending)."""
    daemon = SkewingDaemon(lambda body, seen: True)
    handler, logger = make_handler(daemon.port, secret='s3cret', compression=True)
    for n in range(20):
        logger.info('skewed %d', n)
    assert handler.flush() is not None
    wait_until(lambda: handler.rejected == 20, 10)
    time.sleep(0.3)                       # nothing more comes: each went twice, no more
    assert sorted(daemon.seen) == sorted(['skewed %d' % n for n in range(20)] * 2)
    handler.close()
    assert 'rejected 20 messages: clock_skew (20)' in capsys.readouterr().err


# -- a fork: the parent's queued records are written first (A8-2) -----------------------------

def _fork_and_exit_child():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)


DAEMONIZING = """
import logging, os, sys
from loghog import LoghogHandler
log = logging.getLogger('daemonizing')
log.addHandler(LoghogHandler('app', '127.0.0.1', int(sys.argv[1]), acknowledged=False))
log.setLevel(logging.INFO)
for n in range(200):
    log.info('before the fork %d', n)
if os.fork():
    os._exit(0)     # the parent of every daemonization: no atexit, no logging.shutdown
os._exit(0)         # (the child's own records are the child's)
"""


@pytest.mark.parametrize('acknowledged', [False, True])
def test_a_parent_that_leaves_through_os_exit_after_a_fork_has_written_its_records(
        acknowledged):
    """A8-2: what a process had queued when it forked was lost if it then left through
    os._exit (the first fork of every daemonization).  A fork now waits (FORK_WRITE_S at
    most) until it is written into the connection, which the kernel delivers after the
    process is gone."""
    import subprocess
    import sys
    from tests.support import ROOT
    script = DAEMONIZING if not acknowledged else DAEMONIZING.replace(
        ', acknowledged=False', '')
    with FrameServer() as server:
        result = subprocess.run([sys.executable, '-c', script, str(server.port)],
                                cwd=str(ROOT), capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        server.wait_for(200)
        assert server.bodies() == ['before the fork %d' % n for n in range(200)]


@contextlib.contextmanager
def logging_all_along(logger, threads):
    """``threads`` threads logging to ``logger`` in a tight loop while the block runs."""
    stop = threading.Event()

    def log_all_along():
        n = 0
        while not stop.is_set():
            logger.info('meanwhile %d', n)
            n += 1

    running = [threading.Thread(target=log_all_along) for _ in range(threads)]
    for thread in running:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in running:
            thread.join()


def test_a_fork_does_not_wait_for_records_logged_while_it_waits(make_handler):
    """Another thread that logs all along must not hold every fork for FORK_WRITE_S."""
    from loghog.sender import FORK_WRITE_S
    with FrameServer() as server:
        handler, logger = make_handler(server.port)
        with logging_all_along(logger, threads=4):
            time.sleep(0.1)
            took = []
            for _ in range(5):
                started = time.monotonic()
                _fork_and_exit_child()
                took.append(time.monotonic() - started)
        assert handler.flush()
        assert max(took) < FORK_WRITE_S * 0.8, took


def test_a_fork_does_not_wait_while_the_daemon_is_unreachable(make_handler):
    server = FrameServer()
    port = server.port
    server.stop()
    handler, logger = make_handler(port, **FAST_RETRY)
    logger.info('nobody listens')
    wait_until(lambda: handler._sender._is_unreachable)
    started = time.monotonic()
    _fork_and_exit_child()
    assert time.monotonic() - started < 0.2


def test_flush_waits_for_what_was_logged_before_it_not_for_what_others_log_meanwhile(
        make_handler):
    """A8-7: flush() waited until nothing at all was waiting: with another thread logging,
    always its whole timeout, then False."""
    with FrameServer() as server:
        handler, logger = make_handler(server.port)
        for n in range(1000):
            logger.info('before %d', n)
        with logging_all_along(logger, threads=1):
            started = time.monotonic()
            assert handler.flush() is True
            took = time.monotonic() - started
            # Acknowledged: the daemon has every record logged before the call.
            assert server.bodies()[:1000] == ['before %d' % n for n in range(1000)]
        assert took < 2.0, took
        assert handler.flush() is True


POOL_WITH = """
import logging, multiprocessing, sys
from loghog import LoghogHandler
log = logging.getLogger('pool')
log.addHandler(LoghogHandler('app', '127.0.0.1', int(sys.argv[2])))
log.setLevel(logging.INFO)


def work(n):
    log.info('task %d', n)
    return n


if __name__ == '__main__':
    # The multiprocessing documentation's idiom: __exit__ is terminate(), SIGTERM.
    with multiprocessing.get_context(sys.argv[1]).Pool(2) as pool:
        print(sum(pool.map(work, range(2000))))
"""


@pytest.mark.parametrize('method', ['fork', 'forkserver'])
def test_the_with_pool_idiom_delivers_every_task_line(tmp_path, method):
    """A8-5: Pool.terminate() (the with statement's exit) kills the workers with SIGTERM:
    what their handlers still held was lost, silently (by hand, 351, 1362 or 0 of 2,000).
    A multiprocessing child's SIGTERM now delivers first, then kills."""
    import subprocess
    import sys
    script = tmp_path / 'pool_with.py'
    script.write_text(POOL_WITH)
    with FrameServer() as server:
        for _ in range(2):
            before = len(server.bodies())
            result = subprocess.run([sys.executable, str(script), method, str(server.port)],
                                    capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, result.stderr
            assert result.stdout.strip() == str(sum(range(2000)))
            bodies = server.bodies()[before:]
            assert sorted(bodies) == sorted('task %d' % n for n in range(2000)), \
                (len(bodies), result.stderr)
            assert 'loghog' not in result.stderr, result.stderr


NESTED_SIGNALS = """
import logging, signal, sys
from loghog import LoghogHandler
handler = LoghogHandler('app', '127.0.0.1', int(sys.argv[1]), emit_wait_s=1.0,
                        close_timeout_s=0.5)
log = logging.getLogger('nested')
log.addHandler(handler)
log.setLevel(logging.INFO)
fired = 0


def on_alarm(signum, frame):
    global fired
    fired += 1
    log.info('sig %d', fired)


signal.signal(signal.SIGALRM, on_alarm)
signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)
for n in range(12000):          # past the buffer's 10,000: put() waits for room
    log.info('msg %d', n)
signal.setitimer(signal.ITIMER_REAL, 0)
print(fired, handler.dropped)
"""


def test_a_signal_handler_that_logs_while_emit_waits_for_room_does_not_nest_without_end():
    """A daemon that takes messages but acknowledges none: the buffer fills and put()
    waits for room; a signal handler logging every 0.5 ms meanwhile waited inside that
    wait, each inside the one before, until RecursionError killed the program.  Now a
    put() nested in its own thread's wait does not wait: it drops the oldest, counted."""
    import subprocess
    import sys
    from tests.support import ROOT
    with FrameServer() as server:
        server.ack_limit = 1              # the handshake only: no message is acknowledged
        result = subprocess.run([sys.executable, '-c', NESTED_SIGNALS, str(server.port)],
                                cwd=str(ROOT), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'RecursionError' not in result.stderr and 'Traceback' not in result.stderr
    fired, dropped = map(int, result.stdout.split())
    assert fired > 100 and dropped > 0
    assert 'not delivered' in result.stderr    # the loss is said


SIGTERM_CHILD = """
import logging, multiprocessing, os, signal, sys, time
from loghog import LoghogHandler


def child(port, own_handler, ready):
    if own_handler:
        signal.signal(signal.SIGTERM, lambda *_: os._exit(42))   # the application's own
    log = logging.getLogger('child')
    log.addHandler(LoghogHandler('app', '127.0.0.1', port))
    log.setLevel(logging.INFO)
    log.info('waits for an ack that never comes')
    ready.set()
    time.sleep(60)


if __name__ == '__main__':
    port, own_handler = int(sys.argv[1]), sys.argv[2] == 'own'
    ready = multiprocessing.Event()
    process = multiprocessing.get_context('fork').Process(target=child,
                                                          args=(port, own_handler, ready))
    process.start()
    ready.wait(10)
    time.sleep(0.3)                  # the record is written, its ack awaited
    started = time.monotonic()
    os.kill(process.pid, signal.SIGTERM)
    time.sleep(0.3)
    os.kill(process.pid, signal.SIGTERM)   # a second SIGTERM: no waiting any more
    process.join(20)
    print(process.exitcode, round(time.monotonic() - started, 1))
"""


@pytest.mark.parametrize('own', ['own', 'default'])
def test_a_multiprocessing_childs_sigterm_handler_of_its_own_stays_and_a_second_kills(
        tmp_path, own):
    """docs/client.md (A8-5): the handler's SIGTERM delivery is installed only where
    SIGTERM does what the kernel does (an application's own handler is left alone), and a
    second SIGTERM kills at once, though the first is still waiting for a daemon that never
    acknowledges (close_timeout_s, 10 s)."""
    import subprocess
    import sys
    script = tmp_path / 'sigterm_child.py'
    script.write_text(SIGTERM_CHILD)
    with FrameServer() as server:
        server.ack_limit = 1              # the handshake only
        result = subprocess.run([sys.executable, str(script), str(server.port), own],
                                capture_output=True, text=True, timeout=60)
    exitcode, took = result.stdout.split()
    if own == 'own':
        assert exitcode == '42', result.stderr     # the application's handler ran
    else:
        assert exitcode == '-15', result.stderr    # died of the signal, as before
    assert float(took) < 5, took


SIGTERM_TAKEN_BY_ANOTHER_THREAD = """
import logging, multiprocessing, os, signal, sys, threading, time
from loghog import LoghogHandler


def child(port, ready):
    handler = LoghogHandler('app', '127.0.0.1', port, %(handler_args)s)
    log = logging.getLogger('child')
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    for n in range(%(records)d):
        log.info('line %%d', n)
    ready.set()
    if %(hold_the_sender)s:
        handler._sender._lock.acquire()   # blocked inside the sender: no delivery can begin
    # The SIGTERM from terminate() lands on a thread other than the main one (or on the
    # main one just before it blocks, glibc's sem_wait retrying a stolen wake-up): CPython
    # only notes it, and the main thread, blocked in a C wait, never runs the handler.
    taker = threading.Thread(target=lambda: (time.sleep(0.3),
                                             signal.pthread_kill(threading.get_ident(),
                                                                 signal.SIGTERM)))
    taker.start()
    lock = threading.Lock()
    lock.acquire()
    lock.acquire()          # a Pool worker waiting for the queue's lock, forever


if __name__ == '__main__':
    ready = multiprocessing.Event()
    process = multiprocessing.get_context('fork').Process(target=child,
                                                          args=(int(sys.argv[1]), ready))
    process.start()
    ready.wait(10)
    started = time.monotonic()
    process.join(20)
    if process.exitcode is None:
        process.kill()
        process.join()
        print('hung', round(time.monotonic() - started, 1))
    else:
        print(process.exitcode, round(time.monotonic() - started, 1))
"""


def test_a_sigterm_the_main_thread_cannot_run_still_delivers_and_ends_the_child(tmp_path):
    """CI, test_the_with_pool_idiom_delivers_every_task_line: `with Pool()` never returned
    (1 start in 20): a worker blocked on the queue's lock got terminate()'s SIGTERM where
    the main thread could not run the Python handler, so the handler the client installed
    (A8-5) replaced a kill that always works with one that never ran.  Now a watcher thread
    sees the signal (the wake-up fd) and, when the main thread does not take it, delivers
    and makes the main thread run the handler (or kills)."""
    import subprocess
    import sys
    script = tmp_path / 'sigterm_taken.py'
    script.write_text(SIGTERM_TAKEN_BY_ANOTHER_THREAD % {'records': 300, 'handler_args': '',
                                                         'hold_the_sender': False})
    with FrameServer() as server:
        result = subprocess.run([sys.executable, str(script), str(server.port)],
                                capture_output=True, text=True, timeout=60)
        exitcode, took = result.stdout.split()
        assert exitcode == '-15', result.stderr    # died of the signal, as before
        assert float(took) < 5, took
        assert sorted(server.bodies()) == sorted('line %d' % n for n in range(300))
    assert 'loghog' not in result.stderr, result.stderr


def test_a_sigterm_whose_delivery_cannot_begin_still_ends_the_child(tmp_path):
    """The watcher's delivery needs the sender's lock: a main thread blocked while holding
    it would keep that delivery, and so the process, waiting for ever.  The watcher kills
    the process once the delivery has had its time (close_timeout_s lowered to 1 s, from
    10, so that the test takes seconds: the bound is close_timeout_s + 2.25 s)."""
    import subprocess
    import sys
    script = tmp_path / 'sigterm_held.py'
    script.write_text(SIGTERM_TAKEN_BY_ANOTHER_THREAD % {
        'records': 10, 'handler_args': 'close_timeout_s=1.0', 'hold_the_sender': True})
    with FrameServer() as server:
        result = subprocess.run([sys.executable, str(script), str(server.port)],
                                capture_output=True, text=True, timeout=60)
    exitcode, took = result.stdout.split()
    assert exitcode == '-9', result.stderr      # killed: the process must end
    assert float(took) < 8, took

FORK_OF_A_WORKER = """
import logging, multiprocessing, os, signal, sys, time
from loghog import LoghogHandler


def child(port):
    log = logging.getLogger('child')
    log.addHandler(LoghogHandler('app', '127.0.0.1', port))
    log.setLevel(logging.INFO)
    log.info('before the fork')
    pid = os.fork()
    if pid == 0:
        # A grandchild with a SIGTERM handler of its own, terminated: its signal must not
        # reach the worker's delivery of a SIGTERM (an inherited wake-up fd would).
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        os._exit(1)
    os.waitpid(pid, 0)
    time.sleep(0.5)
    log.info('after the fork')


if __name__ == '__main__':
    process = multiprocessing.get_context('fork').Process(target=child,
                                                          args=(int(sys.argv[1]),))
    process.start()
    process.join(20)
    print(process.exitcode)
"""


def test_a_signal_in_a_fork_of_a_worker_is_not_the_workers(tmp_path):
    """The watcher of a worker's SIGTERM reads the wake-up fd; a fork of the worker
    inherits that fd: a SIGTERM the grandchild handles itself must not end the worker."""
    import subprocess
    import sys
    script = tmp_path / 'fork_of_worker.py'
    script.write_text(FORK_OF_A_WORKER)
    with FrameServer() as server:
        result = subprocess.run([sys.executable, str(script), str(server.port)],
                                capture_output=True, text=True, timeout=60)
        assert result.stdout.strip() == '0', result.stderr
        assert server.bodies() == ['before the fork', 'after the fork']
    assert 'loghog' not in result.stderr, result.stderr


WAKEUP_FD_OF_ITS_OWN = """
import logging, multiprocessing, os, signal, sys
from loghog import LoghogHandler


def child(port, queue):
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd)          # the application's (asyncio's signal handling)
    log = logging.getLogger('child')
    log.addHandler(LoghogHandler('app', '127.0.0.1', port))
    log.setLevel(logging.INFO)
    log.info('one line')
    queue.put((signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
               signal.set_wakeup_fd(-1) == write_fd))


if __name__ == '__main__':
    queue = multiprocessing.get_context('fork').SimpleQueue()
    process = multiprocessing.get_context('fork').Process(target=child,
                                                          args=(int(sys.argv[1]), queue))
    process.start()
    print(*queue.get())
    process.join(20)
"""


def test_a_wakeup_fd_of_the_applications_own_is_left_alone(tmp_path):
    """docs/client.md: where the application has a wake-up fd of its own, the handler
    neither replaces it nor installs its SIGTERM delivery (it needs the wake-up fd)."""
    import subprocess
    import sys
    script = tmp_path / 'wakeup_own.py'
    script.write_text(WAKEUP_FD_OF_ITS_OWN)
    with FrameServer() as server:
        result = subprocess.run([sys.executable, str(script), str(server.port)],
                                capture_output=True, text=True, timeout=60)
        assert result.stdout.split() == ['True', 'True'], result.stderr
        server.wait_for(1)


LOGS_AT_IMPORT_ONLY = """
import logging, multiprocessing, sys
from loghog import LoghogHandler
log = logging.getLogger('mod')
log.setLevel(logging.INFO)
log.addHandler(LoghogHandler('app', '127.0.0.1', int(sys.argv[1])))
log.info('imported in %s', multiprocessing.current_process().name)


def child():
    pass                    # logs nothing more: its import's line is all it has


if __name__ == '__main__':
    ctx = multiprocessing.get_context('forkserver')
    ctx.set_forkserver_preload([])      # each child imports the main module itself
    processes = [ctx.Process(target=child) for _ in range(3)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(20)
    print(*(process.exitcode for process in processes))
"""


def test_a_forkserver_childs_line_logged_while_it_imports_the_main_module_is_delivered(
        tmp_path):
    """A9-7: a forkserver child (no preload) imports the main module, whose record starts
    the sender before the child knows its parent; Process._bootstrap then cleared the
    finalizers, and the child, which leaves through os._exit, lost that line silently."""
    import subprocess
    import sys
    script = tmp_path / 'import_only.py'
    script.write_text(LOGS_AT_IMPORT_ONLY)
    with FrameServer() as server:
        result = subprocess.run([sys.executable, str(script), str(server.port)],
                                capture_output=True, text=True, timeout=60)
        assert result.stdout.split() == ['0', '0', '0'], result.stderr
        expected = ['imported in MainProcess'] + [
            'imported in ForkServerProcess-%d' % n for n in (1, 2, 3)]
        server.wait_for(4)
        assert sorted(server.bodies()) == sorted(expected)
    assert 'loghog' not in result.stderr, result.stderr
