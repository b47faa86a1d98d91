"""The background sender: a bounded queue of frames and the thread that delivers them.

``LoghogHandler.emit()`` encodes a record and calls ``Sender.put()``, which only appends to a
queue and returns.  One daemon thread per sender (started at the first ``put()``) takes the
frames off the queue in batches and writes them to the daemon, connecting and reconnecting
as needed.  The application thread never waits on the network.

Delivery order is the order of ``put()``.  A frame leaves the sender's hands in one of three
ways: it is written whole to a connection (sent), it is pushed out of a full queue (dropped,
the oldest first), or it is still queued when ``close()`` gives up (dropped too).  Frames that
a failed connection did not take whole go back to the front of the queue and are sent again
on the next connection.  (Acknowledged delivery, issue 8, will keep written frames aside
until the daemon acknowledges them and requeue them the same way.)
"""

import collections
import functools
import os
import random
import threading
import time
import weakref

from loghog.transport import CONNECT_TIMEOUT_S, SEND_TIMEOUT_S, ConnectionLost

# One write of up to 64 KiB: large enough to amortize the syscall over hundreds of typical
# messages, small enough that a failed write sends little again.
MAX_BATCH_BYTES = 64 * 1024

# Each retry waits 75-100 % of the nominal backoff, so that the children of a pre-forking
# server do not all reconnect in the same instant.
RETRY_JITTER = 0.25

# close() waits this much beyond its deadline for the thread to finish its last step.
CLOSE_GRACE_S = 0.25


class FrameQueue:
    """A bounded FIFO of encoded frames that drops its oldest frame when full.

    Not thread-safe by itself: the ``Sender`` guards it with its lock.  ``dropped`` counts
    every frame given up on.
    """

    def __init__(self, max_frames):
        if max_frames < 1:
            raise ValueError(f'max_buffer_size must be at least 1, not {max_frames}')
        self.max_frames = max_frames
        self.dropped = 0
        self._frames = collections.deque()

    def __len__(self):
        return len(self._frames)

    def append(self, frame):
        """Add ``frame`` at the end, dropping the oldest frame if the queue is full."""
        if len(self._frames) >= self.max_frames:
            self._frames.popleft()
            self.dropped += 1
        self._frames.append(frame)

    def take(self, max_bytes):
        """Remove and return the oldest frames, at least one, up to ``max_bytes`` in total."""
        batch = [self._frames.popleft()]
        size = len(batch[0])
        while self._frames and size + len(self._frames[0]) <= max_bytes:
            frame = self._frames.popleft()
            size += len(frame)
            batch.append(frame)
        return batch

    def requeue(self, frames):
        """Put ``frames`` (taken earlier, in order) back at the front.

        They are the oldest frames, so if the queue filled up meanwhile they are the ones
        dropped.
        """
        self._frames.extendleft(reversed(frames))
        while len(self._frames) > self.max_frames:
            self._frames.popleft()
            self.dropped += 1

    def discard_all(self):
        """Drop every queued frame (counted in ``dropped``)."""
        self.dropped += len(self._frames)
        self._frames.clear()


class Sender:
    """Delivers frames to one daemon from a background thread, in order, never blocking.

    ``connect(timeout_s, is_cancelled)`` opens a connection (see
    ``loghog.transport.open_connection``) or raises ``OSError``.  ``report(text)`` receives one line for each change of state (connected,
    connection lost, retrying, messages dropped); it must not log through ``logging``.

    After a failed connection attempt the thread waits ``retry_min_s``, then twice as long
    after each further failure, up to ``retry_max_s``; the wait starts over once a batch is
    sent.  A connection that the daemon closes is noticed before the next write and replaced
    at once.

    In a child made by ``os.fork()`` the sender starts over empty: the parent's queued frames
    stay with the parent (which still sends them), and the child gets its own lock, queue,
    connection and thread, started at its first ``put()``.
    """

    def __init__(self, connect, max_frames, retry_min_s=1.0, retry_max_s=30.0, report=None):
        self._connect = connect
        self._max_frames = max_frames
        self._retry_min_s = retry_min_s
        self._retry_max_s = retry_max_s
        self._report = report or _ignore
        self._closing = False
        self._start_over()
        os.register_at_fork(after_in_child=functools.partial(_start_over_in_child,
                                                             weakref.ref(self)))

    @property
    def dropped(self):
        """How many frames were given up on: pushed out of a full queue or left at close."""
        return self._queue.dropped

    def put(self, frame):
        """Queue ``frame`` for sending and return at once; never raises for network reasons.

        After ``close()`` the frame is dropped (and counted).
        """
        with self._lock:
            if self._closing:
                self._queue.dropped += 1
                return
            self._queue.append(frame)
            if self._thread is None:
                self._start_thread()
            self._work.notify()

    def flush(self, timeout_s):
        """Wait up to ``timeout_s`` until every queued frame is written; return True if so.

        Returns early, with False, when the daemon cannot be reached right now: waiting for a
        reconnection (up to 30 s) is not worth stalling the caller for.
        """
        with self._lock:
            return self._progress.wait_for(self._is_flushed_or_stuck, timeout_s) and \
                not (len(self._queue) or self._in_flight)

    def close(self, timeout_s):
        """Send what can be sent within ``timeout_s``, then stop the thread.

        A sender waiting to reconnect tries once more at once.  Frames still queued when the
        time is up are dropped.  Returns True when everything queued was sent.  Calling it
        again does nothing more.
        """
        with self._lock:
            if not self._closing:
                self._closing = True
                self._close_deadline = time.monotonic() + timeout_s
            thread = self._thread
            self._work.notify_all()
        if thread is not None and thread is not threading.current_thread():
            # A little longer than the thread's own deadline, so that it can finish its
            # last step (closing the socket, reporting what was left) before we return.
            thread.join(timeout_s + CLOSE_GRACE_S)
        with self._lock:
            return not (len(self._queue) or self._in_flight)

    # -- state shared with the thread (all under self._lock) --------------------------------

    def _start_over(self):
        """Set up an empty queue, fresh locks and no thread or connection."""
        # Reentrant: a signal handler that logs may interrupt put() in the same thread.
        self._lock = threading.RLock()
        self._work = threading.Condition(self._lock)      # the thread waits for frames here
        self._progress = threading.Condition(self._lock)  # flush() waits for the thread here
        self._queue = FrameQueue(self._max_frames)
        self._in_flight = 0
        self._thread = None
        self._is_unreachable = False
        self._close_deadline = None
        self._connection = None
        self._has_sent_on_connection = False
        self._retry_delay_s = None
        self._reported_dropped = 0

    def _start_over_after_fork(self):
        """In a fork child: forget the parent's frames, thread and connection."""
        inherited = self._connection
        self._start_over()
        if inherited is not None:
            # Closing our copy of the descriptor leaves the parent's connection open; a plain
            # close() sends nothing (no TLS close_notify, no FIN while the parent holds it).
            inherited.close()

    def _start_thread(self):
        thread = threading.Thread(target=self._run, name='loghog-sender', daemon=True)
        try:
            thread.start()
        except RuntimeError as error:  # interpreter shutting down, or out of threads
            self._report(f'cannot start the sender thread: {error}')
            return
        self._thread = thread

    def _is_flushed_or_stuck(self):
        return (not (len(self._queue) or self._in_flight) or self._is_unreachable
                or self._thread is None)

    def _is_finished(self):
        """True when the thread should stop: closing, and done or out of time."""
        if not self._closing:
            return False
        return not len(self._queue) or time.monotonic() >= self._close_deadline

    def _is_out_of_time(self):
        """True once ``close()`` was called and its deadline has passed (read without lock:
        the flag and the deadline are each set once, before the wakeup)."""
        return self._closing and time.monotonic() >= self._close_deadline

    def _io_timeout_s(self, normal_s):
        """The timeout for the next socket operation: ``normal_s``, or less when closing."""
        with self._lock:
            if not self._closing:
                return normal_s
            return max(0.01, min(normal_s, self._close_deadline - time.monotonic()))

    # -- the thread ------------------------------------------------------------------------

    def _run(self):
        try:
            while self._wait_for_frames():
                try:
                    self._send_next_batch()
                except Exception as error:  # a bug must not silently stop delivery
                    self._report(f'unexpected error, reconnecting: {error!r}')
                    self._drop_connection()
                    self._wait_before_retry()
        finally:
            self._stop()

    def _wait_for_frames(self):
        """Block until there are frames to send; return False when the thread should stop."""
        with self._lock:
            self._work.wait_for(lambda: len(self._queue) or self._closing)
            return not self._is_finished()

    def _send_next_batch(self):
        if self._connection is not None and self._connection.is_closed_by_peer():
            self._report(f'{self._connection.peer} closed the connection; reconnecting')
            self._drop_connection()
        if self._connection is None and not self._open_connection():
            self._wait_before_retry()
            return
        self._connection.set_timeout(self._io_timeout_s(SEND_TIMEOUT_S))
        with self._lock:
            batch = self._queue.take(MAX_BATCH_BYTES)
            self._in_flight = len(batch)
        sent = 0
        try:
            sent = self._connection.send_frames(batch)
        except ConnectionLost as lost:
            sent = lost.frames_sent
            self._report(f'connection to {self._connection.peer} lost: {lost.cause}')
            self._drop_connection()
        finally:
            with self._lock:
                self._queue.requeue(batch[sent:])
                self._in_flight = 0
                self._progress.notify_all()
        if self._connection is not None:
            self._has_sent_on_connection = True
            self._retry_delay_s = None
            self._report_drops()
        elif not self._has_sent_on_connection:
            # A daemon that accepts and then fails every write must not be hammered.
            self._wait_before_retry()

    def _open_connection(self):
        """Try to connect; return True on success.  Reports failures and recoveries."""
        try:
            connection = self._connect(self._io_timeout_s(CONNECT_TIMEOUT_S),
                                       self._is_out_of_time)
        except OSError as error:
            if not self._is_unreachable:
                self._report(f'cannot connect: {error}')
            with self._lock:
                self._is_unreachable = True
                self._progress.notify_all()
            return False
        self._connection = connection
        self._has_sent_on_connection = False
        with self._lock:
            self._is_unreachable = False
        self._report(f'connected to {connection.peer}')
        self._report_drops()
        return True

    def _report_drops(self):
        dropped = self._queue.dropped
        if dropped > self._reported_dropped:
            self._report(f'{dropped - self._reported_dropped} messages dropped '
                         f'(buffer of {self._max_frames} full)')
            self._reported_dropped = dropped

    def _wait_before_retry(self):
        """Sleep for the next backoff delay; wake early (once) when close() is called."""
        if self._retry_delay_s is None:
            self._retry_delay_s = self._retry_min_s
        else:
            self._retry_delay_s = min(self._retry_delay_s * 2, self._retry_max_s)
        delay_s = self._retry_delay_s * random.uniform(1 - RETRY_JITTER, 1)
        with self._lock:
            was_closing = self._closing
            if was_closing:
                delay_s = min(delay_s, max(0, self._close_deadline - time.monotonic()))
            self._work.wait_for(lambda: self._closing and not was_closing, delay_s)

    def _drop_connection(self):
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _stop(self):
        """Last step of the thread: close the connection, give up on what is left."""
        self._drop_connection()
        with self._lock:
            left = len(self._queue)
            self._queue.discard_all()
            self._thread = None
            self._progress.notify_all()
        if left:
            self._report(f'closing: {left} messages could not be sent')


def _start_over_in_child(sender_ref):
    """``os.register_at_fork`` hook; a weak reference, so that senders can be collected."""
    sender = sender_ref()
    if sender is not None:
        sender._start_over_after_fork()


def _ignore(text):
    """The default ``report``: say nothing."""
