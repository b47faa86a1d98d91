"""Adversarial round 8, unit level: the daemon's event loop under concurrent thread
wake-ups (the syncer threads' fsync results, A8-8) and the client's flush() while another
thread logs (A8-7); both fixed, each test failed on the code before."""

import logging
import threading
import time

from loghog import LoghogHandler, wire
from loghogd.loop import EventLoop
from tests.unit.test_client_fakes import FrameServer, decode_frames


def test_a_wake_up_that_comes_while_the_loop_drains_does_not_silence_later_ones(monkeypatch):
    """The interleaving, made deterministic: the drain's recv() lets go of the GIL, and a
    syncer thread finishing an fsync calls wake() right then (by hand: 4 threads waking
    for 0.5 s hit it nearly every time; 2 clients flooding a real daemon for 1.5 s, too)."""
    import loghogd.loop as loop_module

    loop = EventLoop()
    real_drain = loop_module._drain
    raced = []

    def drain_while_a_syncer_wakes(sock):
        if sock is loop._thread_read and not raced:
            raced.append(True)
            syncer = threading.Thread(target=loop.wake)   # an fsync result, right now
            syncer.start()
            syncer.join()
        real_drain(sock)

    try:
        loop.wake()
        monkeypatch.setattr(loop_module, '_drain', drain_while_a_syncer_wakes)
        loop.run_once(1.0)
        monkeypatch.setattr(loop_module, '_drain', real_drain)
        assert raced and loop.thread_woken
        loop.run_once(0)                              # anything still pending
        loop.thread_woken = False
        waker = threading.Timer(0.01, loop.wake)      # the next fsync result, later
        began = time.monotonic()
        waker.start()
        loop.run_once(1.0)
        waker.join()
        took_s = time.monotonic() - began
    finally:
        loop.close()
    assert loop.thread_woken and took_s < 0.5, took_s


# -- A8-7: flush() while another thread logs ------------------------------------------------

class SlowSyncServer(FrameServer):
    """A daemon whose acks come 100 ms after the lines (its fsync on a busy disk: writer.py
    says an fdatasync takes from half a millisecond to hundreds)."""

    def _read(self, sock):
        buffer = b''
        received = 0
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    sock.close()
                    break
                decoded, buffer = decode_frames(buffer + data)
                self.record(decoded)
                received += len(decoded)
                if decoded:
                    time.sleep(0.1)
                    sock.sendall(wire.make_ack(received))
        except OSError as error:
            if not self.is_stopping:
                self.errors.append(error)


def test_flush_returns_once_the_records_logged_before_it_are_acknowledged():
    server = SlowSyncServer()
    handler = LoghogHandler('app', '127.0.0.1', server.port)
    stop = threading.Event()

    def requests():                  # another thread of the application: 200 lines/s
        n = 0
        while not stop.is_set():
            handler.handle(logging.makeLogRecord({'name': 'web', 'msg': f'request {n}'}))
            n += 1
            time.sleep(0.005)

    worker = threading.Thread(target=requests)
    worker.start()
    outcome = {}
    try:
        server.wait_for(10)

        def flush():
            began = time.monotonic()
            outcome['flushed'] = handler.flush()
            outcome['took_s'] = time.monotonic() - began

        flusher = threading.Thread(target=flush)
        flusher.start()
        flusher.join(1.0)
        finished_in_time = not flusher.is_alive()
    finally:
        stop.set()
        worker.join()
        handler.close()
        server.stop()
    assert finished_in_time and outcome['flushed'] is True, outcome
