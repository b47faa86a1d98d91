"""The background sender: a bounded queue of frames and the thread that delivers them.

``LoghogHandler.emit()`` encodes a record and calls ``Sender.put()``, which only appends to a
queue and returns.  One daemon thread per sender (started at the first ``put()``) takes the
frames off the queue in batches and writes them to the daemon, connecting and reconnecting
as needed.  The application thread never waits on the network.

Delivery order is the order of ``put()``.  A frame leaves the sender's hands in one of three
ways: it is done (written whole to a plain connection, or acknowledged by the daemon on an
acknowledged one), it is pushed out of a full queue (dropped, the oldest first), or it is
still waiting when ``close()`` gives up.  Frames that a failed connection did not take whole
go back to the front of the queue and are sent again on the next connection.

With acknowledgements (issue 8, see ``loghog.acks``) a written frame is kept, numbered in the
sender's session, until an ack covers it; every new connection starts with a session frame
and writes the unacknowledged frames again before any new one.  Waiting frames, queued or
unacknowledged, are bounded together by ``max_frames``.
"""

import collections
import functools
import os
import random
import threading
import time
import weakref

from loghog import wire
from loghog.acks import (ACK_FALLBACK_S, ConnectionAcks, Unacknowledged, describe_rejections,
                         new_session_id, rejections)
from loghog.transport import CONNECT_TIMEOUT_S, SEND_TIMEOUT_S, ConnectionLost

# One write of up to 64 KiB: large enough to amortize the syscall over hundreds of typical
# messages, small enough that a failed write sends little again.
MAX_BATCH_BYTES = 64 * 1024

# Each retry waits 75-100 % of the nominal backoff, so that the children of a pre-forking
# server do not all reconnect in the same instant.
RETRY_JITTER = 0.25

# close() waits this much beyond its deadline for the thread to finish its last step.
CLOSE_GRACE_S = 0.25

# After writing a batch, the thread waits this long for the application's next message
# before it watches the socket for acks (see Sender._wait_for_acks).
ACK_COALESCE_S = 0.005

# Rejections reported by acks are summed up on standard error at most this often.
REJECTION_REPORT_INTERVAL_S = 10.0


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

    def append(self, frame, held=0):
        """Add ``frame`` at the end, dropping the oldest queued frame if the queue is full.

        ``held`` frames kept elsewhere (written, awaiting acknowledgement) count against the
        bound too; when they alone fill it, ``frame`` itself is the one dropped.
        """
        if len(self._frames) + held >= self.max_frames:
            self.dropped += 1
            if not self._frames:
                return
            self._frames.popleft()
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

    def requeue(self, frames, held=0):
        """Put ``frames`` (taken earlier, in order) back at the front.

        They are the oldest frames, so if the queue filled up meanwhile they are the ones
        dropped.  ``held`` is as for ``append``.
        """
        self._frames.extendleft(reversed(frames))
        while self._frames and len(self._frames) + held > self.max_frames:
            self._frames.popleft()
            self.dropped += 1

    def discard_all(self):
        """Drop every queued frame (counted in ``dropped``)."""
        self.dropped += len(self._frames)
        self._frames.clear()


class Sender:
    """Delivers frames to one daemon from a background thread, in order, never blocking.

    ``connect(timeout_s, is_cancelled)`` opens a connection (see
    ``loghog.transport.open_connection``) or raises ``OSError``.  ``report(text)`` receives
    one line for each change of state (connected, connection lost, retrying, messages
    dropped or rejected); it must not log through ``logging``.

    After a failed connection attempt the thread waits ``retry_min_s``, then twice as long
    after each further failure, up to ``retry_max_s``; the wait starts over once a batch is
    sent.  A connection that the daemon closes is noticed before the next write and replaced
    at once.

    With ``acknowledged`` (stream connections only; the frames must carry ``FLAG_ACK``)
    every connection starts with a session frame, written frames are kept until the daemon
    acknowledges them and written again on the next connection if it fails first, and
    ``flush()`` and ``close()`` wait for the acks.  If a connection stays silent for
    ``ack_fallback_s`` after its first frame and this sender has never received an ack, the
    daemon is taken for one that does not speak acks: the frames kept count as sent and
    the rest of that connection is plain (the next connection asks again).

    In a child made by ``os.fork()`` the sender starts over empty: the parent's waiting
    frames stay with the parent (which still sends them), and the child gets its own lock,
    queue, session, connection and thread, started at its first ``put()``.
    """

    def __init__(self, connect, max_frames, retry_min_s=1.0, retry_max_s=30.0, report=None,
                 acknowledged=False, ack_fallback_s=ACK_FALLBACK_S, prepare=None):
        self._connect = connect
        # Applied to each frame on the sender thread as it leaves the queue (compression:
        # off the application's thread).  Must be idempotent: unsent frames are queued
        # again and taken a second time.
        self._prepare = prepare
        self._max_frames = max_frames
        self._retry_min_s = retry_min_s
        self._retry_max_s = retry_max_s
        self._report = report or _ignore
        self.acknowledged = bool(acknowledged)
        self._ack_fallback_s = ack_fallback_s
        self._closing = False
        self._start_over()
        os.register_at_fork(after_in_child=functools.partial(_start_over_in_child,
                                                             weakref.ref(self)))

    @property
    def dropped(self):
        """How many frames were given up on before being sent: pushed out of a full buffer,
        or still queued at close."""
        return self._queue.dropped

    def put(self, frame):
        """Queue ``frame`` for sending and return at once; never raises for network reasons.

        After ``close()`` the frame is dropped (and counted).
        """
        with self._lock:
            if self._closing:
                self._queue.dropped += 1
                return
            self._queue.append(frame, len(self._unacked))
            if self._thread is None:
                self._start_thread()
            self._work.notify()
            if self._is_waiting_for_acks:
                self._wake_thread()

    def flush(self, timeout_s):
        """Wait up to ``timeout_s`` until every queued frame is written (and, with
        acknowledgements, acknowledged); return True if so.

        Returns early, with False, when the daemon cannot be reached right now: waiting for a
        reconnection (up to 30 s) is not worth stalling the caller for.
        """
        with self._lock:
            return self._progress.wait_for(self._is_flushed_or_stuck, timeout_s) and \
                not self._has_waiting_frames()

    def close(self, timeout_s):
        """Send what can be sent within ``timeout_s``, then stop the thread.

        A sender waiting to reconnect tries once more at once; one waiting for acks waits
        for them within the same bound.  Frames still queued when the time is up are
        dropped (counted in ``dropped``), frames written but not acknowledged are counted
        in ``unconfirmed``.  Returns True when everything was sent (and acknowledged).
        Calling it again does nothing more.
        """
        with self._lock:
            if not self._closing:
                self._closing = True
                self._close_deadline = time.monotonic() + timeout_s
            thread = self._thread
            self._work.notify_all()
            if self._is_waiting_for_acks:
                self._wake_thread()
        if thread is not None and thread is not threading.current_thread():
            # A little longer than the thread's own deadline, so that it can finish its
            # last step (closing the socket, reporting what was left) before we return.
            thread.join(timeout_s + CLOSE_GRACE_S)
        with self._lock:
            return not (self._has_waiting_frames() or self._given_up_at_close)

    # -- state shared with the thread (all under self._lock) --------------------------------

    def _start_over(self):
        """Set up an empty queue, fresh locks, a new session and no thread or connection."""
        # Reentrant: a signal handler that logs may interrupt put() in the same thread.
        self._lock = threading.RLock()
        self._work = threading.Condition(self._lock)      # the thread waits for frames here
        self._progress = threading.Condition(self._lock)  # flush() waits for the thread here
        self._queue = FrameQueue(self._max_frames)
        self._unacked = Unacknowledged()
        self._session_id = new_session_id()
        self._in_flight = 0
        self._thread = None
        self._wakeup = None               # (read fd, write fd): put() wakes an ack wait
        self._is_waiting_for_acks = False
        self._is_unreachable = False
        self._close_deadline = None
        self._given_up_at_close = 0
        self.unconfirmed = 0              # written, never acknowledged, given up at close
        self.rejected = 0                 # acknowledged as rejected by the daemon
        self._connection = None
        self._connection_acks = None      # ConnectionAcks while the connection is acknowledged
        self._pending_session = None      # the session frame, until it is written
        self._has_seen_ack = False
        self._has_sent_on_connection = False
        self._has_just_written = False
        self._retry_delay_s = None
        self._reported_dropped = 0
        self._unreported_rejections = collections.Counter()
        self._next_rejection_report_at = 0.0

    def _start_over_after_fork(self):
        """In a fork child: forget the parent's frames, thread and connection."""
        inherited = self._connection
        wakeup = self._wakeup
        self._start_over()
        if inherited is not None:
            # Closing our copy of the descriptor leaves the parent's connection open; a plain
            # close() sends nothing (no TLS close_notify, no FIN while the parent holds it).
            inherited.close()
        _close_pipe(wakeup)

    def _start_thread(self):
        thread = threading.Thread(target=self._run, name='loghog-sender', daemon=True)
        try:
            if self.acknowledged:
                self._wakeup = _make_pipe()
            thread.start()
        except (RuntimeError, OSError) as error:  # shutting down, out of threads or fds
            self._report(f'cannot start the sender thread: {error}')
            _close_pipe(self._wakeup)
            self._wakeup = None
            return
        self._thread = thread

    def _wake_thread(self):
        """Interrupt the thread's wait for acks (it polls the socket and this pipe)."""
        self._is_waiting_for_acks = False
        try:
            os.write(self._wakeup[1], b'\0')
        except OSError:  # full (a wakeup is already pending) or closed
            pass

    def _has_waiting_frames(self):
        return bool(len(self._queue) or self._in_flight or len(self._unacked))

    def _is_flushed_or_stuck(self):
        return (not self._has_waiting_frames() or self._is_unreachable
                or self._thread is None)

    def _is_finished(self):
        """True when the thread should stop: closing, and done or out of time."""
        if not self._closing:
            return False
        return not self._has_waiting_frames() or time.monotonic() >= self._close_deadline

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
            while self._wait_for_work():
                try:
                    self._step()
                except Exception as error:  # a bug must not silently stop delivery
                    self._report(f'unexpected error, reconnecting: {error!r}')
                    self._drop_connection()
                    self._wait_before_retry()
        finally:
            self._stop()

    def _wait_for_work(self):
        """Block until frames wait (queued or unacknowledged); return False when the thread
        should stop."""
        with self._lock:
            self._work.wait_for(lambda: self._has_waiting_frames() or self._closing)
            return not self._is_finished()

    def _step(self):
        """One step: take the acks that came, (re)connect if needed, then write one batch,
        or, when everything is written, wait for acks or new frames."""
        connection = self._connection
        if connection is not None:
            is_closed = connection.is_closed_by_peer()
            self._take_acks()
            if is_closed and self._connection is not None:
                self._report(f'{connection.peer}: {connection.closed_because}; reconnecting')
                self._drop_connection()
        if self._connection is None and not self._open_connection():
            self._wait_before_retry()
            return
        acks = self._connection_acks
        if acks is not None and not self._has_seen_ack and \
                acks.is_silent_too_long(time.monotonic(), self._ack_fallback_s):
            self._fall_back()
        frames, are_new = self._next_batch()
        if frames or self._pending_session is not None:
            self._write(frames, are_new)
        else:
            self._wait_for_acks()

    def _next_batch(self):
        """Return (frames, are_new): the unacknowledged frames this connection has not had
        yet, if any (are_new False), else the next frames off the queue."""
        acks = self._connection_acks
        with self._lock:
            if acks is not None and acks.written_through < self._unacked.next_seq - 1:
                return self._unacked.frames_after(acks.written_through, MAX_BATCH_BYTES), False
            if not len(self._queue):
                return [], False
            batch = self._queue.take(MAX_BATCH_BYTES)
            self._in_flight = len(batch)
        if self._prepare is not None:
            batch = [self._prepare(frame) for frame in batch]
        return batch, True

    def _write(self, frames, are_new):
        """Write the pending session frame (if any) and ``frames``; account for what the
        connection took whole: kept for an ack, done, or queued again."""
        session = self._pending_session
        self._connection.set_timeout(self._io_timeout_s(SEND_TIMEOUT_S))
        lost = None
        try:
            written = self._connection.send_frames([session] + frames if session else frames)
        except ConnectionLost as error:
            written, lost = error.frames_sent, error
        acks = self._connection_acks
        if session is not None and written:
            self._pending_session = None
            acks.first_write_at = time.monotonic()
            written -= 1
        with self._lock:
            if are_new:
                if acks is not None:
                    self._unacked.add(frames[:written])
                self._queue.requeue(frames[written:], len(self._unacked))
                self._in_flight = 0
            if acks is not None:
                acks.written_through += written
            self._progress.notify_all()
        if lost is not None:
            self._report(f'connection to {self._connection.peer} lost: {lost.cause}')
            self._drop_connection()
            if not self._has_sent_on_connection:
                # A daemon that accepts and then fails every write must not be hammered.
                self._wait_before_retry()
            return
        self._has_sent_on_connection = True
        self._has_just_written = are_new
        self._retry_delay_s = None
        self._report_drops()

    def _wait_for_acks(self):
        """Everything is written and frames await acks: wait until the daemon sends
        something, a frame is queued, ``close()`` is called, or a deadline (the fallback,
        the close) passes."""
        timeouts = []
        acks = self._connection_acks
        if acks is not None and not self._has_seen_ack and not acks.has_acks:
            timeouts.append(acks.first_write_at + self._ack_fallback_s - time.monotonic())
        timeout_s = max(0, min(timeouts)) if timeouts else None
        if self._has_just_written:
            # While the application logs, its next message comes within milliseconds: wait
            # for that first, as a plain sender does, so that a busy stream takes its acks
            # with each batch.  Waking up for every ack instead would write many small
            # batches, each one taking the GIL from the application.
            self._has_just_written = False
            first_s = ACK_COALESCE_S if timeout_s is None else min(ACK_COALESCE_S, timeout_s)
            with self._lock:
                if self._work.wait_for(lambda: len(self._queue) or self._closing, first_s):
                    return
            timeout_s = None if timeout_s is None else max(0, timeout_s - first_s)
        with self._lock:
            if len(self._queue) or not len(self._unacked):
                return
            if self._closing:
                close_s = max(0, self._close_deadline - time.monotonic())
                timeout_s = close_s if timeout_s is None else min(timeout_s, close_s)
            self._is_waiting_for_acks = True
        try:
            self._connection.receive(timeout_s, self._wakeup[0])
        finally:
            with self._lock:
                self._is_waiting_for_acks = False
            _drain_pipe(self._wakeup)

    def _take_acks(self):
        """Release the frames that the acks received on the connection cover."""
        connection = self._connection
        received = connection.take_acks()
        if not received or not self.acknowledged:
            return
        self._has_seen_ack = True  # even on a fallen-back connection: this daemon speaks acks
        acks = self._connection_acks
        if acks is None:
            return
        done_through = None
        rejected = collections.Counter()
        try:
            for ack in received:
                done_through = acks.apply(ack)
                rejected.update(rejections(ack))
        except ValueError as error:
            self._report(f'{connection.peer} sent a bad acknowledgement ({error}); reconnecting')
            self._drop_connection()
        if done_through is not None:
            with self._lock:
                self._unacked.release_through(done_through)
                self._progress.notify_all()
        if rejected:
            self.rejected += sum(rejected.values())
            self._unreported_rejections.update(rejected)
            self._report_rejections(time.monotonic())

    def _fall_back(self):
        """This connection's daemon does not acknowledge: the frames kept count as sent."""
        with self._lock:
            released = self._unacked.release_all()
            self._progress.notify_all()
        self._connection_acks = None
        self._report(f'no acknowledgement from {self._connection.peer} within '
                     f'{self._ack_fallback_s:g} s: an older daemon? Sending without '
                     f'acknowledgements on this connection ({released} messages unconfirmed)')

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
            resending = len(self._unacked)
            if self.acknowledged:
                first_seq = self._unacked.first_seq
                self._connection_acks = ConnectionAcks(first_seq)
                self._pending_session = wire.make_session(self._session_id, first_seq)
        again = f' (sending {resending} unacknowledged messages again)' if resending else ''
        self._report(f'connected to {connection.peer}{again}')
        self._report_drops()
        return True

    def _report_drops(self):
        dropped = self._queue.dropped
        if dropped > self._reported_dropped:
            self._report(f'{dropped - self._reported_dropped} messages dropped '
                         f'(buffer of {self._max_frames} full)')
            self._reported_dropped = dropped

    def _report_rejections(self, now, force=False):
        """Sum up the rejections since the last report, at most once per interval."""
        if self._unreported_rejections and (force or now >= self._next_rejection_report_at):
            counts = self._unreported_rejections
            self._report(f'the daemon rejected {sum(counts.values())} messages: '
                         f'{describe_rejections(counts)}')
            self._unreported_rejections = collections.Counter()
            self._next_rejection_report_at = now + REJECTION_REPORT_INTERVAL_S

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
            self._connection_acks = None
            self._pending_session = None

    def _stop(self):
        """Last step of the thread: close the connection, give up on what is left."""
        self._drop_connection()
        with self._lock:
            left = len(self._queue)
            self._queue.discard_all()
            unconfirmed = self._unacked.release_all()
            self.unconfirmed += unconfirmed
            self._given_up_at_close += left + unconfirmed
            self._thread = None
            _close_pipe(self._wakeup)
            self._wakeup = None
            self._progress.notify_all()
        self._report_rejections(time.monotonic(), force=True)
        if left:
            self._report(f'closing: {left} messages could not be sent')
        if unconfirmed:
            self._report(f'closing: {unconfirmed} messages sent but not acknowledged '
                         f'(they may or may not have been written)')


def _start_over_in_child(sender_ref):
    """``os.register_at_fork`` hook; a weak reference, so that senders can be collected."""
    sender = sender_ref()
    if sender is not None:
        sender._start_over_after_fork()


def _ignore(text):
    """The default ``report``: say nothing."""


def _make_pipe():
    """A non-blocking pipe (close-on-exec, as every descriptor Python makes)."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)
    return read_fd, write_fd


def _drain_pipe(pipe):
    try:
        while os.read(pipe[0], 64):
            pass
    except OSError:  # BlockingIOError: empty
        pass


def _close_pipe(pipe):
    if pipe is not None:
        for fd in pipe:
            os.close(fd)
