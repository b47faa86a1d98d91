"""The event loop: one selector, callbacks on the registered objects, signals recorded by
their handlers.

The loop knows nothing about TCP, TLS or UDP: each registered file object carries its
own callback, called with the ready event mask.

Signals (issue 14): a signal handler records the signal number and nothing else; the
server takes the recorded numbers at every loop pass (``pop_signals``).  What counts is
the record, never a byte in a pipe: ``signal.set_wakeup_fd`` only makes the selector
return, on a socketpair of its own that nothing else writes to.  Other threads (the
syncer, the compressor) wake the loop with ``wake`` through a second socketpair, with at
most one byte pending however often they call it: before, one byte per fsync shared the
signals' socketpair, which filled after 278 bytes under a burst of new files, and the
signals that came then were lost.  Each signal is pending at most once, and they are
taken a stop first (``SIGNAL_ORDER``): a storm of SIGHUPs during a slow reload costs one
more reload, in the next pass, never a queue of them.
"""

import selectors
import signal
import socket
import threading
import time

# The order in which recorded signals are acted on: a stop first, then a status line, then
# a reload.  Each is recorded once however often it came (issue 14: a storm of SIGHUPs
# during a slow reload once queued up to 64 reloads for one loop pass).
SIGNAL_ORDER = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP)


class EventLoop:
    """A selector plus two wakeup socketpairs (signals, threads).

    ``run_once(timeout_s)`` dispatches events; ``pop_signals()`` returns the signals
    recorded since the last call.
    """

    def __init__(self):
        self.selector = selectors.DefaultSelector()
        self._signal_read, self._signal_write = _nonblocking_pair()
        self._thread_read, self._thread_write = _nonblocking_pair()
        self._signals = []               # appended to by the handlers, in order
        self._thread_lock = threading.Lock()
        self._thread_wake_pending = False
        self.thread_woken = False
        self._skipped = []               # fds ready but not reached by the last pass
        self.register(self._signal_read, selectors.EVENT_READ, self._on_signal_wakeup)
        self.register(self._thread_read, selectors.EVENT_READ, self._on_thread_wakeup)

    def register(self, fileobj, events, callback):
        self.selector.register(fileobj, events, callback)

    def modify(self, fileobj, events, callback):
        self.selector.modify(fileobj, events, callback)

    def unregister(self, fileobj):
        try:
            self.selector.unregister(fileobj)
        except (KeyError, ValueError):
            pass

    def install_signal_handlers(self, signums):
        """Record ``signums`` when they arrive (``pop_signals``) and wake the loop."""
        signal.set_wakeup_fd(self._signal_write.fileno(), warn_on_full_buffer=False)
        for signum in signums:
            signal.signal(signum, self._record_signal)

    def restore_signal_handlers(self, signums):
        for signum in signums:
            signal.signal(signum, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)

    def record_signal(self, signum):
        """Record ``signum`` as if it had just arrived (one that came before the handlers
        were installed: cli.start keeps them)."""
        self._record_signal(signum, None)

    def _record_signal(self, signum, frame):
        """The handler: record the signal; the loop acts on it.  No I/O, no exceptions.

        A signal already recorded and not yet taken is not recorded again: at most one
        of each is pending, and one taken after the last arrival still follows it."""
        signals = self._signals
        if signum not in signals:
            signals.append(signum)

    def wake(self):
        """Wake the loop from another thread; at most one byte is ever pending."""
        with self._thread_lock:
            if self._thread_wake_pending:
                return
            self._thread_wake_pending = True
        try:
            self._thread_write.send(b'\x00')
        except OSError:
            pass   # cannot happen with one byte pending; the loop wakes anyway

    def pop_signals(self):
        """Return the signals recorded since the last call, each once, a stop first
        (``SIGNAL_ORDER``; others after those, in arrival order).

        A signal that arrives after this call is recorded for the next one: a reload
        acted on after a SIGHUP taken here starts after that SIGHUP and reads every edit
        made before it."""
        signums, self._signals = self._signals, []
        rank = {s: i for i, s in enumerate(SIGNAL_ORDER)}
        return sorted(signums, key=lambda s: rank.get(s, len(rank)))

    def run_once(self, timeout_s, before_dispatch=None, budget_s=None):
        """Wait up to ``timeout_s`` (None: forever) and run the callbacks of ready objects.

        ``before_dispatch`` is called once after the wait, before any callback, when
        there is something to dispatch (the server reads the clock there).  A signal
        recorded before the wait makes it return at once.

        With ``budget_s``, callbacks stop once the pass has run that long; the ready
        objects not reached go first in the next pass (which does not wait), so that
        one pass stays short and every ready object gets its turn (issue 15: 8 floods
        held a good client's line for a second).
        """
        if self._signals or self._skipped:
            timeout_s = 0
        events = self.selector.select(timeout_s)
        if events and before_dispatch is not None:
            before_dispatch()
        if self._skipped:
            # Still ready and skipped last time: first now.  (Level-triggered: an object
            # not ready any more is simply not in ``events``.)
            order = {fd: n for n, fd in enumerate(self._skipped)}
            last = len(order)
            events.sort(key=lambda event: order.get(event[0].fd, last))
            self._skipped = []
        started = time.monotonic() if budget_s is not None else None
        for index, (key, mask) in enumerate(events):
            if started is not None and index and time.monotonic() - started > budget_s:
                self._skipped = [key.fd for key, _ in events[index:]]
                return
            key.data(mask)

    def _on_signal_wakeup(self, mask):
        _drain(self._signal_read)   # the bytes carry nothing: the handler recorded it

    def _on_thread_wakeup(self, mask):
        # Read, then cleared (attack finding A8-8): cleared first, a wake() in between
        # (recv lets other threads run) set the flag again and sent a byte that this read
        # took, and the flag stayed set with no byte pending: every later wake() returned
        # early, for ever, and fsync results waited for the loop's 1 s timeout.  A wake()
        # that finds the flag still set here has put its result where this pass looks
        # (after its callbacks); one after the clear sends a byte of its own.
        _drain(self._thread_read)
        with self._thread_lock:
            self._thread_wake_pending = False
        self.thread_woken = True

    def close(self):
        self.selector.close()
        for sock in (self._signal_read, self._signal_write, self._thread_read,
                     self._thread_write):
            sock.close()


def _nonblocking_pair():
    pair = socket.socketpair()
    for sock in pair:
        sock.setblocking(False)
    return pair


def _drain(sock):
    try:
        while sock.recv(4096):
            pass
    except (BlockingIOError, InterruptedError):
        pass
