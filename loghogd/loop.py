"""The event loop: one selector, callbacks on the registered objects, signals via a wakeup fd.

The loop knows nothing about TCP, TLS or UDP: each registered file object carries its
own callback, called with the ready event mask.  Signal handlers do nothing at all;
``signal.set_wakeup_fd`` writes the signal number into a socketpair that the selector
watches, and the loop hands the numbers to whoever asks (``pop_signals``).  Other
threads (the compressor) wake the loop with ``wake``.
"""

import selectors
import signal
import socket

_THREAD_WAKE = b'\x00'   # signal numbers are 1..64, so 0 means "a thread woke us"


class EventLoop:
    """A selector plus the wakeup socketpair.  ``run_once(timeout_s)`` dispatches events."""

    def __init__(self):
        self.selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._wake_write.setblocking(False)
        self._signals = []
        self.thread_woken = False
        self.register(self._wake_read, selectors.EVENT_READ, self._on_wakeup)

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
        """Route ``signums`` to the loop: handlers only cause a wakeup byte to be written."""
        signal.set_wakeup_fd(self._wake_write.fileno(), warn_on_full_buffer=False)
        for signum in signums:
            signal.signal(signum, _ignore)

    def restore_signal_handlers(self, signums):
        for signum in signums:
            signal.signal(signum, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)

    def wake(self):
        """Wake the loop from another thread."""
        try:
            self._wake_write.send(_THREAD_WAKE)
        except (BlockingIOError, OSError):
            pass  # the loop is already due to wake up

    def pop_signals(self):
        """Return the signal numbers received since the last call, in order."""
        signums, self._signals = self._signals, []
        return signums

    def run_once(self, timeout_s, before_dispatch=None):
        """Wait up to ``timeout_s`` (None: forever) and run the callbacks of ready objects.

        ``before_dispatch`` is called once after the wait, before any callback, when
        there is something to dispatch (the server reads the clock there).
        """
        events = self.selector.select(timeout_s)
        if events and before_dispatch is not None:
            before_dispatch()
        for key, mask in events:
            key.data(mask)

    def _on_wakeup(self, mask):
        try:
            data = self._wake_read.recv(4096)
        except BlockingIOError:
            return
        for byte in data:
            if byte:
                self._signals.append(byte)
            else:
                self.thread_woken = True

    def close(self):
        self.selector.close()
        self._wake_read.close()
        self._wake_write.close()


def _ignore(signum, frame):
    """A signal handler that does nothing: the wakeup fd carries the signal to the loop."""
