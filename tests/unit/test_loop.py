"""The loop's signals and wake-ups (issue 14): a signal is recorded by its handler and
never depends on room in a pipe; thread wake-ups keep at most one byte pending."""

import os
import signal
import threading

import pytest

from loghogd.loop import EventLoop


@pytest.fixture
def loop():
    loop = EventLoop()
    loop.install_signal_handlers([signal.SIGUSR1, signal.SIGHUP])
    yield loop
    loop.restore_signal_handlers([signal.SIGUSR1, signal.SIGHUP])
    loop.close()


def test_a_signal_after_thousands_of_thread_wakeups_is_not_lost(loop):
    """On main: 10,000 syncer wake-ups filled the shared socketpair and the signal's byte,
    the only record of it, was dropped."""
    waker = threading.Thread(target=lambda: [loop.wake() for _ in range(10000)])
    waker.start()
    waker.join()
    os.kill(os.getpid(), signal.SIGUSR1)
    loop.run_once(5.0)
    assert loop.pop_signals() == [signal.SIGUSR1]
    assert loop.thread_woken


def test_thread_wakeups_are_coalesced_and_wake_the_loop_again_after_each_pass(loop):
    for _ in range(1000):
        loop.wake()
    loop.run_once(5.0)
    assert loop.thread_woken
    loop.thread_woken = False
    loop.run_once(0)                   # nothing left pending: one byte had been sent
    assert not loop.thread_woken
    loop.wake()                        # ... and the next wake-up wakes it again
    loop.run_once(5.0)
    assert loop.thread_woken


def test_a_signal_recorded_before_the_wait_makes_the_wait_return_at_once(loop):
    os.kill(os.getpid(), signal.SIGHUP)
    loop.run_once(None)                          # would block forever otherwise
    assert loop.pop_signals() == [signal.SIGHUP]
    assert loop.pop_signals() == []


def test_a_storm_of_sighups_stays_bounded_and_never_hides_a_sigterm(loop):
    loop.install_signal_handlers([signal.SIGTERM])
    try:
        for _ in range(200):
            os.kill(os.getpid(), signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGTERM)
        recorded = loop.pop_signals()
    finally:
        loop.restore_signal_handlers([signal.SIGTERM])
    assert len(recorded) <= 65 and recorded[-1] == signal.SIGTERM
