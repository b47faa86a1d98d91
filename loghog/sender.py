"""The client's delivery engine: a bounded queue of frames and the thread that delivers them.

``LoghogHandler.emit()`` encodes a record and calls ``Sender.put()``, which appends to a
queue and returns (it waits only when the buffer is full, see ``EMIT_WAIT_S``); the
``loghog`` command queues its lines the same way.  One daemon thread per sender (started at
the first ``put()``) takes the frames off the queue in batches and writes them to the
daemon, connecting and reconnecting as needed.

Delivery order is the order of ``put()``.  A frame leaves the sender's hands in one of three
ways: it is done (written whole to a plain connection, or acknowledged by the daemon on an
acknowledged one), it is pushed out of a full queue (dropped, the oldest first, and
announced in the log file before the next delivered record, see ``loghog.gaps``), or it is
still waiting when ``close()`` gives up (reported on standard error).  Frames that a failed
connection did not take whole go back to the front of the queue and are sent again on the
next connection.

With acknowledgements (issue 8, see ``loghog.acks``) a written frame is kept, numbered in the
sender's session, until an ack covers it; every new connection starts with a session frame,
written alone and answered by the daemon before anything else, and then writes the
unacknowledged frames again before any new one.  Waiting frames, queued, in flight or
unacknowledged, are bounded together by ``max_frames`` and ``max_bytes``.
"""

import atexit
import collections
import functools
import logging  # noqa: F401 (first: its exit hook, logging.shutdown, runs after ours)
import os
import random
import signal
import sys
import threading
import time
import weakref

from loghog import wire
from loghog.acks import (CLOCK_SKEW, HANDSHAKE_TIMEOUT_S, ConnectionAcks, Unacknowledged,
                         describe_rejections, new_session_id, rejected_frames, rejections)
from loghog.buffer import FrameQueue
from loghog.gaps import Gaps
from loghog.signing import session_bytes
from loghog.transport import CONNECT_TIMEOUT_S, SEND_TIMEOUT_S, ConnectionLost

# One write of up to 64 KiB: large enough to amortize the syscall over hundreds of typical
# messages, small enough that a failed write sends little again.
MAX_BATCH_BYTES = 64 * 1024

# The buffer's bounds (issue 13).  10,000 records of a few hundred bytes absorb a burst
# without making emit() wait, and a few seconds of a busy application's logging while the
# daemon restarts; 8 MiB keeps a buffer of large records (tracebacks) from growing the
# application's memory without limit.
MAX_BUFFER_FRAMES = 10_000
MAX_BUFFER_BYTES = 8 * 1024 * 1024

# How long emit() may wait for room in a full buffer while the daemon is connected and
# taking messages.  A file handler's write blocks on a slow disk too; a daemon that takes
# nothing for this long is stalled (stopped, its disk full), and from then on emit() drops
# the oldest records instead of waiting, until the daemon takes messages again.  Long
# enough for a daemon's fsync on a busy disk, short enough that a stopped daemon costs an
# application one pause, not one per record.
EMIT_WAIT_S = 5.0

# The reconnection backoff: the first attempt right after a connection is lost, then
# 0.05 s, doubling up to 1 s.  A refused connection costs microseconds, so a second-long
# cap is cheap, and a daemon that comes back (a restart takes ~1 s) is found within a
# second, which is what keeps a restart from dropping records.
RETRY_MIN_S = 0.05
RETRY_MAX_S = 1.0

# Each retry waits 75-100 % of the nominal backoff, so that the children of a pre-forking
# server do not all reconnect in the same instant.
RETRY_JITTER = 0.25

# How long a handler may take to deliver its records at exit (logging.shutdown): ample for
# tens of thousands of records to a healthy daemon, and the wait ends at once when the
# daemon is found unreachable.
EXIT_TIMEOUT_S = 10.0

# close() waits this much beyond its deadline for the thread to finish its last step.
CLOSE_GRACE_S = 0.25

# A sender opened again by a record logged after close() (A8-3) closes again once it has
# delivered it; another record within this long after that close keeps it open: a thread
# logging on after close then has one sender thread for all its records, not one each.
# A second is an eternity for a loop, and one record after close (an old handler that
# dictConfig closed under a logging thread) does not recur so soon.
REOPEN_KEEP_S = 1.0

# After writing a batch, the thread waits this long for the application's next message
# before it watches the socket for acks (see Sender._wait_for_acks).
ACK_COALESCE_S = 0.005

# How often a handshake in progress checks whether close() ran out of time.
HANDSHAKE_POLL_S = 0.1

# A fork child of multiprocessing closes its senders in a finalizer of this priority
# (>= 0: run by multiprocessing's exit function before the process's os._exit).
MULTIPROCESSING_EXIT_PRIORITY = 5

# Rejections reported by acks are summed up on standard error at most this often.
REJECTION_REPORT_INTERVAL_S = 10.0

# A connection lost sooner than this after it was opened did not prove the daemon healthy:
# the next attempt waits the backoff (a peer that answers the handshake and then closes,
# resets or sends garbage must not get thousands of connections a second).  One lost later
# (a daemon restart) is opened again at once.
HEALTHY_CONNECTION_S = 1.0

# The longest wait ``close()`` accepts (``loghog --timeout inf``): a week is "for ever"
# for a command, and stays within what ``Thread.join`` and ``poll`` take.
MAX_CLOSE_TIMEOUT_S = 7 * 24 * 3600.0

# In a child forked from a thread other than the main one, the sender thread checks this
# often whether that thread (the child's main thread now) has ended: the process then ends
# without running ``atexit`` and must not be kept alive by the sender thread.
MAIN_THREAD_WATCH_S = 0.25

# How long a fork waits for each sender to write what it has queued (``_write_before_fork``):
# a few milliseconds when the daemon takes messages; the bound is for one that is slow.
FORK_WRITE_S = 0.5

# A multiprocessing child's SIGTERM delivery (``_deliver_at_sigterm``): when the main thread
# has not started the handler this long after the signal came, the watcher thread delivers
# in its place, then signals the main thread again this often, for this long; then it kills.
SIGTERM_HANDLER_WAIT_S = 0.1
SIGTERM_NUDGE_S = 0.05
SIGTERM_NUDGE_FOR_S = 1.0

# Every live sender, for the exit hook that starts the shared exit deadline.
_SENDERS = weakref.WeakSet()

# Whether the fork in progress was made by the main thread (set by a before-fork hook).
_FORK = {'from_main_thread': True}

# A lock per process id, for starting over after a fork that Python's at-fork hooks did not
# see (``Sender._check_fork``): one made in the new process, so never held by a thread the
# fork left behind, as any lock of the parent's may be.
_FORK_LOCKS = {}


class _SignedAgain(bytes):
    """A message frame written again after a clock_skew refusal (``Sender._sign_again``):
    a second refusal of it is final."""

    __slots__ = ()


class Sender:
    """Delivers frames to one daemon from a background thread, in order.

    The one delivery engine of the client (DESIGN.md): ``LoghogHandler`` and the ``loghog``
    command both queue their frames here.

    ``connect(timeout_s, is_cancelled, prefer=None)`` opens a connection (see
    ``loghog.transport.open_connection``; ``prefer``: the address to try first) or raises
    ``OSError``.  ``report(text)`` receives
    one line for each change of state (connected, connection lost, retrying); ``warn(text)``
    receives the lines a user must see whatever the settings (a daemon that does not answer
    the handshake, records dropped, records rejected by the daemon unless
    ``reports_rejections`` is false, a record put after close and not delivered (see
    ``put()``), records not delivered at close).  ``warn`` is only called with no sender
    lock held, the exit report by the thread that called ``close()``: it may end up in
    ``logging`` (a standard error redirected into it) and so in this sender's ``put()``.
    ``where`` names the daemon in those lines.

    Bounds (see docs/client.md, "Bounds"):

    - The buffer holds at most ``max_frames`` frames and ``max_bytes`` bytes, queued or
      written and awaiting acknowledgement.  When it is full, ``put()`` waits for room while
      the daemon takes messages, up to ``emit_wait_s``; when the daemon is unreachable, or
      took nothing for ``emit_wait_s``, the oldest queued frames are dropped instead, and
      announced by ``make_notice(module, text)`` (a frame) before the next one delivered.
    - After a connection that lasted ``HEALTHY_CONNECTION_S`` is lost the thread reconnects
      at once; after a failed attempt, or a connection lost sooner, it waits
      ``retry_min_s``, doubling up to ``retry_max_s`` (with jitter).
    - With ``acknowledged`` (stream connections; the frames must carry ``FLAG_ACK``) each
      connection starts with a session frame written alone, and no message is written on it
      until the daemon has answered it, within ``handshake_timeout_s``; otherwise the
      connection is given up (the frames kept) and the failure reported through ``warn``.
      A written frame counts as delivered only once an ack covers it.
    - ``close()`` waits for delivery within its own bound (see there).

    With ``signer_v2`` (a ``loghog.signing.V2Signer``) each frame is signed with a protocol
    v2 signature as it is written, numbered in the session (a resend keeps its number and
    gets a new time): ``signature='auto'`` when the daemon's answer to the session frame
    says it checks them, ``'v2'`` always, ``'v1'`` never.

    In a child made by ``os.fork()`` the sender starts over empty: the parent's waiting
    frames stay with the parent (which still sends them), and the child gets its own lock,
    queue, session, connection and thread, started at its first ``put()``.  A child of
    ``multiprocessing`` (which leaves through ``os._exit``, skipping ``atexit``) closes
    the sender in a ``multiprocessing.util.Finalize``, within ``exit_timeout_s``; a child
    forked by a thread other than the main one closes it, within ``exit_timeout_s``, when
    that thread ends (the process then ends without ``atexit``).  At interpreter exit
    ``flush()`` and ``close()`` share one deadline, ``exit_timeout_s`` after exit began.
    """

    def __init__(self, connect, max_frames, retry_min_s=RETRY_MIN_S, retry_max_s=RETRY_MAX_S,
                 report=None, acknowledged=False, prepare=None, *, max_bytes=None,
                 warn=None, where='the daemon', make_notice=None, emit_wait_s=EMIT_WAIT_S,
                 handshake_timeout_s=HANDSHAKE_TIMEOUT_S, exit_timeout_s=EXIT_TIMEOUT_S,
                 reports_rejections=True, signer_v2=None, signature='auto'):
        self._connect = connect
        # Protocol v2 signatures (issue 19, loghog/signing.py): each frame is signed as it is
        # written, with its number in the session and the time of that write (a resend after
        # a reconnect is signed again: same number, new time).  'auto': when the daemon's
        # answer to the session frame says it checks them; 'v2': always (also over UDP and
        # without acks, where the daemon cannot say); 'v1': never.
        self._signer_v2 = signer_v2
        self._signature = signature
        self._signs_v2 = False
        # Applied to each frame on the sender thread as it leaves the queue (compression:
        # off the application's thread).  Must be idempotent: unsent frames are queued
        # again and taken a second time.
        self._prepare = prepare
        self._max_frames = max_frames
        self._max_bytes = max_bytes
        self._retry_min_s = retry_min_s
        self._retry_max_s = retry_max_s
        self._report = report or _ignore
        self._warn = warn or _ignore
        self.where = where
        self._make_notice = make_notice
        self._emit_wait_s = emit_wait_s
        self._handshake_timeout_s = handshake_timeout_s
        self._exit_timeout_s = exit_timeout_s
        self.acknowledged = bool(acknowledged)
        self._is_fork_child = False
        self._watches_main_thread = False
        self._reports_rejections = reports_rejections
        self._exit_deadline = None        # set by the exit hook: flush and close share it
        self._start_over()
        self._closing = False
        self._registered_after_fork = False   # with multiprocessing.util (A9-7)
        _SENDERS.add(self)
        os.register_at_fork(after_in_child=functools.partial(_start_over_in_child,
                                                             weakref.ref(self)))

    @property
    def dropped(self):
        """How many frames were given up on before being sent: pushed out of a full buffer,
        or still queued at close."""
        return self._queue.dropped

    def put(self, frame):
        """Queue ``frame`` for sending.

        Returns at once while there is room.  When the buffer is full, waits for room while
        the daemon takes messages, up to ``emit_wait_s``; drops the oldest queued frames
        (counted, and announced later) when it is unreachable or stalled.  Never raises for
        network reasons.

        After ``close()`` the sender opens again (see ``_open_again``) and delivers the
        frame before returning, as ``logging.FileHandler`` writes a record after its
        ``close()``: within ``emit_wait_s``, and at interpreter exit within the exit
        deadline.  What it cannot deliver so is given up at once and said (``warn``); for
        ``retry_max_s`` after that, once the exit deadline has passed, or when a
        ``close()`` under way outlives its bound, a frame put after close is dropped,
        counted in ``dropped``, the first such frame said.
        """
        if self._pid != os.getpid():
            self._check_fork()
        deliver_now = False
        with self._lock:
            if self._closing and not self._open_again():
                self._records_queued += 1     # and dropped: flush() counts on both
                self._queue.dropped += 1
                self._given_up_at_close += 1
                self._warn_once('closed', f'1 message logged after close() was dropped, not '
                                          f'sent to {self.where} (any later ones are counted '
                                          f'in the handler\'s dropped)')
            else:
                deliver_now = self._delivers_each
                if self._thread is None:
                    self._start_thread()
                elif self._finalizer is not None and not self._finalizer.still_active():
                    # Process._bootstrap clears the finalizers after the main module's
                    # import, which may have logged (a forkserver or spawn child).
                    self._close_with_multiprocessing()
                elif (self._sigterm_pending
                      and threading.current_thread() is threading.main_thread()):
                    # The child's first record came from another thread (A9-4).
                    self._sigterm_pending = not _deliver_at_sigterm()
                queue = self._queue
                # Frames the thread took (in flight) or wrote (unacknowledged) count too.
                held = len(self._unacked) + self._in_flight
                held_bytes = self._unacked.bytes + self._in_flight_bytes
                if threading.get_ident() in self._room_waiters:
                    # A signal handler that logs while this thread's put() waits for room:
                    # it must neither wait inside that wait (each signal's handler nested
                    # in the one before, until RecursionError in the application) nor push
                    # out a record the waiting put() is holding its place for; it goes in
                    # beyond what is held, within the queue's own bound.
                    held = held_bytes = 0
                elif not queue.has_room(len(frame), held, held_bytes):
                    self._wait_for_room(len(frame))
                    held = len(self._unacked) + self._in_flight
                    held_bytes = self._unacked.bytes + self._in_flight_bytes
                dropped = queue.append(frame, held, held_bytes)
                self._records_queued += 1
                if dropped:
                    self._count_drops(dropped)
                self._work.notify()
                if self._is_waiting_for_acks:
                    self._wake_thread()
        if self._pending_warnings:
            self._say_pending()
        if deliver_now:
            self._deliver_after_close()

    def _open_again(self):
        """put() after close() (under the lock): open the sender again, as
        ``logging.FileHandler`` opens its file again for a record emitted after ``close()``
        (A8-3: ``dictConfig`` run again closes the old handlers while a thread may still be
        in one of them; an ``atexit`` hook that runs after ``logging.shutdown`` logs).
        Return False when the frame is to be dropped instead.

        The sender opens again, put() starts a new thread as at first, and every frame put
        from now on is delivered before put() returns (``_deliver_after_close``): nothing
        may count on a later close (a ``multiprocessing`` child leaves through
        ``os._exit``; after ``logging.shutdown`` nothing closes handlers).  A close under
        way (``logging`` holds the handler's lock while it closes, so only a direct
        ``close()`` from another thread meets a record) is waited for first, within its
        own bound: fed, it would last that whole bound.  Not for ``retry_max_s`` after
        such a delivery failed (no thread per record while the daemon is down), nor once
        the exit deadline passed.
        """
        thread = self._thread
        if thread is not None:
            # A close under way: wait for its end (as a FileHandler's emit() waits for its
            # close(), under the handler's lock), not feed it.
            if thread is threading.current_thread():
                return False
            self._progress.wait_for(
                lambda: self._thread is None,
                max(0.0, self._close_deadline - time.monotonic()) + CLOSE_GRACE_S)
            if self._thread is not None or not self._closing:
                # Opened again meanwhile by another put() (True), or that close outlived
                # the wait (False).
                return not self._closing
        now = time.monotonic()
        if now < self._open_again_after or (self._exit_deadline is not None
                                            and now >= self._exit_deadline):
            return False
        self._closing = False
        self._close_deadline = None
        self._give_up_when_unreachable = True
        self._has_failed_since_close = False
        self._given_up_at_close = 0
        self._is_unreachable = False      # found again by the new thread's first attempt
        self._is_stalled = False
        self._delivers_each = True
        self._closes_when_delivered = now - self._closed_again_at >= REOPEN_KEEP_S
        return True

    def _deliver_after_close(self):
        """Wait until what a sender opened again after close() holds is delivered, at most
        ``emit_wait_s`` (at exit, within the exit deadline); then close it again, unless
        records keep coming after close.

        One record (an old handler that ``dictConfig`` closed while a thread was in it, a
        late ``atexit`` hook) leaves no thread or connection behind.  A record within
        ``REOPEN_KEEP_S`` of such a close opens it for good (a thread that logs on after
        close: one thread for all its records, not one each), until the exit hook closes
        it (``_close_opened_again``).  What cannot be delivered is given up at once and
        said, as close() says it, rather than left to a thread that may die with the
        process unheard."""
        if self._thread is threading.current_thread() or self._lock._is_owned():
            # The thread itself logged (a warn into logging): it cannot wait for itself; or
            # a signal handler logged inside put(): the outer put() waits.
            return
        delivered = self.flush(self._emit_wait_s)
        with self._lock:
            now = time.monotonic()
            if not delivered:
                self._open_again_after = now + self._retry_max_s
            elif (self._closing or self._has_waiting_frames()
                    or not self._closes_when_delivered):
                return
            else:
                self._closed_again_at = now
                thread = self._begin_close(self._emit_wait_s, True)
                self._progress.wait_for(lambda: self._thread is not thread,
                                        self._emit_wait_s + CLOSE_GRACE_S)
        if not delivered:
            self.close(0)
        elif self._pending_warnings:
            self._say_pending()

    def flush(self, timeout_s):
        """Wait up to ``timeout_s`` until every record put before the call is written
        (and, with acknowledgements, acknowledged) or counted as dropped, and the drops
        are announced; return True if so.  Records put meanwhile are not waited for.

        Returns early, with False, when the daemon cannot be reached right now, or is
        stalled (see ``put()``).
        """
        if self._pid != os.getpid():
            self._check_fork()
        timeout_s = self._within_exit_deadline(timeout_s)
        with self._lock:
            # What was logged before this call (A8-7: waiting until nothing at all waits
            # took the whole timeout, and said False, while another thread logged).
            queued = self._records_queued

            def is_flushed():
                return (self._records_done + self._queue.dropped >= queued
                        and not self._has_notices())

            flushed = self._progress.wait_for(
                lambda: is_flushed() or self._is_unreachable or self._is_stalled
                or self._thread is None, timeout_s) and is_flushed()
        if self._pending_warnings:
            self._say_pending()
        return flushed

    def close(self, timeout_s, give_up_when_unreachable=True):
        """Deliver what can be delivered within ``timeout_s``, then stop the thread.

        A sender waiting to reconnect tries once more at once.  With
        ``give_up_when_unreachable`` (the handler at exit) a failed connection attempt after
        the call ends the wait, so that a program whose daemon is down exits at once;
        without it (the ``loghog`` command) the sender keeps retrying until ``timeout_s``.
        Frames still queued when the time is up are dropped (counted in ``dropped``), frames
        written but not acknowledged are counted in ``unconfirmed``, and one line through
        ``warn``, written by the caller's thread once the sender lock is released, says how
        many records were not delivered and where.  Returns True when everything was
        delivered.  Calling it again waits again, and may only shorten the deadline (and
        turn on ``give_up_when_unreachable``): a ``loghog`` command stopped by a signal
        while it waits.  At interpreter exit the wait ends at the exit deadline shared with
        ``flush()`` (see ``_start_exit_deadline``).
        """
        if self._pid != os.getpid():
            self._check_fork()
        timeout_s = self._within_exit_deadline(min(timeout_s, MAX_CLOSE_TIMEOUT_S))
        thread = self._begin_close(timeout_s, give_up_when_unreachable)
        if thread is not None and thread is not threading.current_thread():
            # A little longer than the thread's own deadline, so that it can finish its
            # last step (closing the socket, reporting what was left) before we return.
            # Not Thread.join(): a signal handler that raises (the command's SIGTERM)
            # during join() leaves the Thread marked stopped while it runs (CPython 3.11,
            # the bpo-45274 fix), and a second join() would return at once.
            self._closer_waits = True
            try:
                with self._lock:
                    self._progress.wait_for(lambda: self._thread is not thread,
                                            timeout_s + CLOSE_GRACE_S)
            finally:
                self._closer_waits = False
        with self._lock:
            if self._thread is None and (len(self._queue) or self._gaps):
                # Never started (no thread could be made): give up on what was queued.
                left = self._queue.discard_all()
                self._given_up_at_close += left
                self._stop_report(left, 0)
            delivered = not (self._has_waiting_frames() or self._given_up_at_close)
        self._say_pending()
        return delivered

    def _begin_close(self, timeout_s, give_up_when_unreachable):
        """Start closing (or shorten the deadline of a close in progress); return the thread."""
        with self._lock:
            deadline = time.monotonic() + timeout_s
            if not self._closing:
                self._closing = True
                self._give_up_when_unreachable = give_up_when_unreachable
                self._close_deadline = deadline
            else:
                self._close_deadline = min(self._close_deadline, deadline)
                self._give_up_when_unreachable |= give_up_when_unreachable
            thread = self._thread
            self._work.notify_all()
            self._progress.notify_all()
            if self._is_waiting_for_acks:
                self._wake_thread()
        return thread

    def _within_exit_deadline(self, timeout_s):
        """``timeout_s``, or less once the interpreter exits: flush() and close() share the
        one exit deadline, ``exit_timeout_s`` after exit began."""
        deadline = self._exit_deadline
        if deadline is None:
            return timeout_s
        return max(0.0, min(timeout_s, deadline - time.monotonic()))

    def _warn_later(self, text):
        """Queue a line for ``warn``: it is written once no sender lock is held (``warn`` may
        end up in ``logging``, when standard error is redirected into it, and so in this
        sender's own ``put()``)."""
        self._pending_warnings.append(text)

    def _say_pending(self):
        """Write the queued ``warn`` lines, unless this thread holds the sender lock (a
        signal handler inside put(): the outer call says them)."""
        if self._lock._is_owned():
            return
        pending = self._pending_warnings
        while pending:
            try:
                text = pending.pop(0)
            except IndexError:  # another thread took the last one
                return
            try:
                self._warn(text)
            except Exception:  # noqa: BLE001 (nowhere left to say it; never raise into
                pass           # the application, nor stop the thread)

    # -- state shared with the thread (all under self._lock) --------------------------------

    def _start_over(self):
        """Set up an empty queue, fresh locks, a new session and no thread or connection."""
        # Reentrant: a signal handler that logs may interrupt put() in the same thread.
        self._pid = os.getpid()           # the process this state belongs to
        self._finalizer = None            # the multiprocessing Finalize that closes us
        self._sigterm_pending = False     # _deliver_at_sigterm waits for the main thread
        self._lock = threading.RLock()
        self._work = threading.Condition(self._lock)      # the thread waits for frames here
        self._progress = threading.Condition(self._lock)  # flush() and put() wait here
        self._queue = FrameQueue(self._max_frames, self._max_bytes)
        self._unacked = Unacknowledged()
        self._gaps = Gaps()
        self._session_id = new_session_id()
        self._signed_session = session_bytes(self._session_id)
        self._next_signed_seq = 1         # without acks: the v2 number of the next frame
        self._records_queued = 0          # frames put() queued, ever (for a fork's wait) ...
        self._records_written = 0         # ... and of them, written whole, ever ...
        self._records_done = 0            # ... and acknowledged (or written, without acks)
        self._room_waiters = set()        # threads waiting in put() for room
        self._in_flight = 0               # frames the thread took off the queue, being written
        self._in_flight_bytes = 0
        self._thread = None
        self._wakeup = None               # (read fd, write fd): put() wakes an ack wait
        self._is_waiting_for_acks = False
        self._is_unreachable = False      # the last attempt failed; no connection since
        self._is_stalled = False          # put() waited emit_wait_s for room in vain
        self._closing = False
        self._delivers_each = False       # opened again after close(): see _open_again
        self._open_again_after = 0.0      # monotonic; not before, after a failed delivery
        self._closed_again_at = float('-inf')  # the last close after such a delivery
        self._closes_when_delivered = False    # closes again after its delivery
        self._close_deadline = None
        self._give_up_when_unreachable = True
        self._has_failed_since_close = False
        self._given_up_at_close = 0
        self._closer_waits = False        # close() is joining the thread: it says the report
        self._pending_warnings = []       # lines for warn, said outside the lock
        self._notice_weights = {}         # message number of a written gap notice -> records
        self._in_flight_notices = []      # the gap entries of the notices in the batch
        self._connected_at = 0.0
        # The address of the last connection that shook hands: tried first when connecting
        # again.  The daemon knows a session by the peer's address; a resend over another
        # address of the same name (localhost: 127.0.0.1 and ::1) is another session to it,
        # and what it wrote but had not acknowledged is written again (A6-4).
        self._last_address = None
        self.unconfirmed = 0              # written, never acknowledged, given up at close
        self.rejected = 0                 # acknowledged as rejected by the daemon
        self.rejections = collections.Counter()  # the same, by reason
        self._connection = None
        self._connection_acks = None      # ConnectionAcks while the connection is acknowledged
        self._last_problem = None
        self._has_warned = set()          # kinds of warnings given in the current episode
        self._has_just_written = False
        self._retry_delay_s = None
        self._unreported_rejections = collections.Counter()
        self._next_rejection_report_at = 0.0
        self._started_at = time.monotonic()

    def _start_over_after_fork(self, seen_by_hooks=True):
        """In a fork child: forget the parent's frames, thread and connection."""
        inherited = self._connection
        wakeup = self._wakeup
        self._start_over()
        self._is_fork_child = True
        # After a fork the hooks did not see, every thread of the parent still looks alive
        # to ``threading``: there is no main thread's end to watch for.
        self._watches_main_thread = seen_by_hooks and not _FORK['from_main_thread']
        if inherited is not None:
            # Closing our copy of the descriptor leaves the parent's connection open; a plain
            # close() sends nothing (no TLS close_notify, no FIN while the parent holds it).
            inherited.close()
        _close_pipe(wakeup)

    def _check_fork(self):
        """Start over in a process forked without Python's at-fork hooks (uWSGI forks its
        workers in C unless told --py-call-uwsgi-fork-hooks; a C extension's fork()): the
        sender still held the parent's session, whose numbers the daemon then took for
        resends and skipped, and the parent's thread, which does not exist here (attack
        finding A8-4).  Called when the process id is not ours; one thread starts over,
        without the sender's lock, which the fork may have copied held."""
        pid = os.getpid()
        with _FORK_LOCKS.setdefault(pid, threading.Lock()):
            if self._pid != pid:
                self._start_over_after_fork(seen_by_hooks=False)

    def _write_before_fork(self):
        """Wait, at most FORK_WRITE_S, until the thread has written every frame queued
        when the fork began (not until they are acknowledged: written is delivered unless
        the daemon dies); at once when it cannot (no thread or connection, the daemon
        unreachable or stalled, closing) or when this thread holds the lock (a fork in a
        signal handler that interrupted put())."""
        if (self._thread is None or self._closing or self._pid != os.getpid()
                or self._lock._is_owned()):
            return
        with self._lock:
            # What was queued when the fork began: others may go on logging meanwhile.
            queued = self._records_queued
            self._progress.wait_for(
                lambda: (self._records_written + self._queue.dropped >= queued
                         or self._closing or self._thread is None or self._is_unreachable
                         or self._is_stalled), FORK_WRITE_S)

    def _start_thread(self):
        thread = threading.Thread(target=self._run, name='loghog-sender', daemon=True)
        # Set before start(): a signal handler that logs while start() runs re-enters put()
        # (the lock is reentrant) and must find the thread there, not start a second one.
        self._thread = thread
        try:
            if self.acknowledged:
                self._wakeup = _make_pipe()
            thread.start()
        except (RuntimeError, OSError) as error:  # shutting down, out of threads or fds
            self._thread = None
            self._report(f'cannot start the sender thread: {error}')
            _close_pipe(self._wakeup)
            self._wakeup = None
            return
        if self._is_fork_child or _is_multiprocessing_child():
            self._close_with_multiprocessing()
        multiprocessing = sys.modules.get('multiprocessing')
        util = getattr(multiprocessing, 'util', None)
        if util is not None and not self._registered_after_fork:
            # A spawn or forkserver child's main module logs while it is imported, before
            # the child knows itself one (no parent_process yet), and Process._bootstrap
            # then clears the finalizers: each child's start calls this (attack finding
            # A9-7: such a child's records were lost at its exit, silently).  Once per
            # sender: the registry, like the sender, passes to fork children.
            self._registered_after_fork = True
            util.register_after_fork(self, Sender._close_with_multiprocessing)

    def _close_with_multiprocessing(self):
        """In a child of ``multiprocessing`` (a Pool worker, a Process), which leaves
        through ``os._exit`` after running its own finalizers but not ``atexit`` (fork and
        forkserver children; attack finding A8-1: a forkserver child, whose handler is
        made anew by importing the main module, delivered nothing): close the sender
        (deliver) in one of those finalizers.

        Registered at the child's first ``put()``, not in the fork hook itself:
        ``Process._bootstrap`` clears the finalizer registry right after the fork (and
        after a forkserver or spawn child imported the main module: ``put()`` registers
        it again then).
        """
        if self._pid != os.getpid() or self._thread is None:
            return      # the after-fork call of a fork child: its first put() registers
        multiprocessing = sys.modules.get('multiprocessing')
        util = getattr(multiprocessing, 'util', None)
        if util is None:
            return
        if self._finalizer is None or not self._finalizer.still_active():
            self._finalizer = util.Finalize(
                None, _close_sender, args=(weakref.ref(self), self._exit_timeout_s),
                exitpriority=MULTIPROCESSING_EXIT_PRIORITY)
        self._sigterm_pending = not _deliver_at_sigterm()

    def _wake_thread(self):
        """Interrupt the thread's wait for acks (it polls the socket and this pipe)."""
        self._is_waiting_for_acks = False
        try:
            os.write(self._wakeup[1], b'\0')
        except OSError:  # full (a wakeup is already pending) or closed
            pass

    def _may_wait_for_room(self):
        """True while put() may wait for room: the daemon is (being) connected and takes
        messages, and we are not the sender thread itself (it would wait for itself)."""
        return not (self._is_unreachable or self._is_stalled or self._closing
                    or self._thread is None or self._thread is threading.current_thread())

    def _wait_for_room(self, size):
        """put()'s back-pressure: wait until a frame of ``size`` bytes fits, while waiting
        makes sense, at most ``emit_wait_s``; past that, the daemon counts as stalled."""
        queue = self._queue
        unacked = self._unacked

        def has_room_or_no_hope():
            return (queue.has_room(size, len(unacked) + self._in_flight,
                                   unacked.bytes + self._in_flight_bytes)
                    or not self._may_wait_for_room())

        if not self._may_wait_for_room():
            return
        me = threading.get_ident()
        self._room_waiters.add(me)   # (put() of a signal handler meanwhile: no wait)
        try:
            has_room = self._progress.wait_for(has_room_or_no_hope, self._emit_wait_s)
        finally:
            self._room_waiters.discard(me)
        if not has_room:
            self._is_stalled = True
            self._warn_once('stalled', f'{self.where} took no message for '
                                       f'{self._emit_wait_s:g} s with the buffer full: '
                                       f'dropping the oldest messages until it does')

    def _count_drops(self, frames):
        if self._is_unreachable:
            reason = f'{self.where} was unreachable and the buffer was full'
            self._warn_once('unreachable', f'{self.where} is unreachable '
                                           f'({self._last_problem}) and the buffer is '
                                           f'full: dropping the oldest messages')
        elif self._is_stalled:
            reason = f'{self.where} took no message for {self._emit_wait_s:g} s'
        else:
            reason = 'the buffer was full'
        self._gaps.add(frames, reason)

    def _warn_once(self, kind, text):
        """Warn about ``kind`` once per episode (until the next delivery resets it)."""
        if kind not in self._has_warned:
            self._has_warned.add(kind)
            self._warn_later(text)

    def _has_waiting_frames(self):
        return bool(len(self._queue) or self._in_flight or len(self._unacked)
                    or self._has_notices())

    def _has_notices(self):
        """True when drops wait to be announced (sent even if no record follows)."""
        return bool(self._gaps) and self._make_notice is not None

    def _is_finished(self):
        """True when the thread should stop: closing, and done or out of time (or, at exit,
        the daemon is unreachable)."""
        if not self._closing:
            return False
        return (not self._has_waiting_frames() or time.monotonic() >= self._close_deadline
                or (self._give_up_when_unreachable and self._has_failed_since_close))

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
                if self._pending_warnings and not self._closing:
                    self._say_pending()   # while closing, close() says them after the join
        finally:
            self._stop()

    def _wait_for_work(self):
        """Block until frames wait (queued or unacknowledged); return False when the thread
        should stop."""
        with self._lock:
            if not self._watches_main_thread:
                self._work.wait_for(lambda: self._has_waiting_frames() or self._closing)
            else:
                while not self._work.wait_for(
                        lambda: self._has_waiting_frames() or self._closing,
                        MAIN_THREAD_WATCH_S):
                    self._check_main_thread()
            self._check_main_thread()
            return not self._is_finished()

    def _check_main_thread(self):
        """In a child forked from a thread other than the main one: once that thread (the
        child's main thread) has ended, the process ends without ``atexit`` as soon as this
        thread does.  Close as interpreter exit would (within ``exit_timeout_s``), with no
        caller to say the report: the thread says it."""
        if (self._watches_main_thread and not self._closing
                and not threading.main_thread().is_alive()):
            self._watches_main_thread = False
            self._begin_close(self._exit_timeout_s, True)

    def _step(self):
        """One step: take the acks that came, (re)connect if needed, then write one batch,
        or, when everything is written, wait for acks or new frames."""
        connection = self._connection
        if connection is not None:
            is_closed = connection.is_closed_by_peer()
            self._take_acks()
            if is_closed and self._connection is not None:
                self._lost(f'{connection.peer}: {connection.closed_because}')
        if self._connection is None and not self._open_connection():
            self._wait_before_retry()
            return
        frames, are_new = self._next_batch()
        if frames:
            self._write(frames, are_new)
        else:
            self._wait_for_acks()

    def _next_batch(self):
        """Return (frames, are_new): the unacknowledged frames this connection has not had
        yet, if any (are_new False), else the next frames off the queue, preceded by the
        announcements of records dropped since the last batch."""
        acks = self._connection_acks
        with self._lock:
            if acks is not None and acks.written_through < self._unacked.next_seq - 1:
                return self._unacked.frames_after(acks.written_through, MAX_BATCH_BYTES), False
            if not len(self._queue) and not self._has_notices():
                return [], False
            notices = self._notices()
            room = MAX_BATCH_BYTES - sum(map(len, notices))
            if self._has_notices() or not len(self._queue):
                batch = notices     # more to announce first: the records wait for them
            else:
                batch = notices + self._queue.take(max(room, 1))
            self._in_flight = len(batch)
            self._in_flight_bytes = sum(map(len, batch))
        if self._prepare is not None:
            batch = [self._prepare(frame) for frame in batch]
        return batch, True

    def _notices(self):
        """The frames announcing the drops counted so far (under the lock), at most
        ``MAX_BATCH_BYTES`` of them (at least one): a batch of notices is bounded as one
        of records is, and the rest wait in the gaps for the next batch (A8-6: 290,000
        notices went in one batch).  Their entries are kept in ``_in_flight_notices``:
        each notice stands for many records, until it is delivered (given back to the gaps
        if it is not written)."""
        entries = []
        notices = []
        if not self._gaps or self._make_notice is None:
            self._in_flight_notices = entries
            return notices
        self._has_warned.discard('unreachable')
        self._has_warned.discard('stalled')
        pid = os.getpid()
        size = 0
        while self._gaps:
            taken = self._gaps.take_entries(1)
            module, entry = taken[0]
            notice = self._make_notice(module, Gaps.describe(entry, pid))
            if notices and size + len(notice) > MAX_BATCH_BYTES:
                self._gaps.restore(taken)
                break
            entries += taken
            notices.append(notice)
            size += len(notice)
        self._in_flight_notices = entries
        return notices

    def _write(self, frames, are_new):
        """Write ``frames``; account for what the connection took whole: kept for an ack,
        done, or queued again."""
        self._connection.set_timeout(self._io_timeout_s(SEND_TIMEOUT_S))
        lost = None
        try:
            written = self._connection.send_frames(self._sign(frames) if self._signs_v2
                                                   else frames)
        except ConnectionLost as error:
            written, lost = error.frames_sent, error
        acks = self._connection_acks
        with self._lock:
            if are_new:
                notices = self._in_flight_notices
                self._in_flight_notices = []
                self._records_written += max(0, written - len(notices))
                if acks is None:   # without acknowledgements, written is done
                    self._records_done += max(0, written - len(notices))
                if acks is not None:
                    next_seq = self._unacked.next_seq
                    for index, (_, entry) in enumerate(notices[:written]):
                        self._notice_weights[next_seq + index] = entry[0]
                    self._unacked.add(frames[:written])
                # Unwritten notices go back to the gaps (announced again, counted right);
                # unwritten records back to the queue.
                self._gaps.restore(notices[written:])
                dropped = self._queue.requeue(frames[max(written, len(notices)):],
                                              len(self._unacked), self._unacked.bytes)
                if dropped:
                    self._count_drops(dropped)
                self._in_flight = 0
                self._in_flight_bytes = 0
                if acks is None and written:
                    self._is_stalled = False   # plain: written is all we will know
            if acks is not None:
                acks.written_through += written
            self._progress.notify_all()
        if lost is not None:
            # A daemon that stopped acknowledged what it wrote, then closed: the frames it
            # never read make the kernel reset the connection under this write.  Its last
            # ack is still readable (the kernel keeps received bytes after a reset): take
            # it, or those messages are written again to a daemon that has no memory of
            # them (A5-2: a line twice across a graceful restart).
            peer = self._connection.peer
            self._connection.receive(0)
            self._take_acks()
            if self._connection is not None:   # not already dropped for a bad ack
                self._lost(f'connection to {peer} lost: {lost.cause}')
            return
        self._has_just_written = are_new

    def _sign(self, frames):
        """``frames`` as v2 frames, numbered in the session: on an acknowledged connection
        from the one after the last written on it (a resend keeps its number), else from
        the sender's own count."""
        acks = self._connection_acks
        if acks is not None:
            first = acks.written_through + 1
        else:
            first = self._next_signed_seq
            self._next_signed_seq += len(frames)
        time_ms = int(time.time() * 1000)
        sign, session = self._signer_v2.sign_frame, self._signed_session
        return [sign(frame, session, first + index, time_ms) for index, frame in enumerate(frames)]

    def _wait_for_acks(self):
        """Everything is written and frames await acks: wait until the daemon sends
        something, a frame is queued, or ``close()`` is called or its deadline passes."""
        timeout_s = None
        if self._has_just_written:
            # While the application logs, its next message comes within milliseconds: wait
            # for that first, as a plain sender does, so that a busy stream takes its acks
            # with each batch.  Waking up for every ack instead would write many small
            # batches, each one taking the GIL from the application.
            self._has_just_written = False
            with self._lock:
                if self._work.wait_for(lambda: len(self._queue) or self._closing,
                                       ACK_COALESCE_S):
                    return
        with self._lock:
            if len(self._queue) or not len(self._unacked):
                return
            if self._closing:
                timeout_s = max(0, self._close_deadline - time.monotonic())
            elif self._watches_main_thread:
                timeout_s = MAIN_THREAD_WATCH_S
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
        acks = self._connection_acks
        if not received or acks is None:
            return
        done_through = None
        rejected = collections.Counter()
        skewed = []    # the numbers of messages refused as clock_skew
        try:
            for ack in received:
                done_through = acks.apply(ack)
                counts = rejections(ack)
                if counts.get(CLOCK_SKEW):
                    skewed += [acks.seq_of_frame(number)
                               for number in rejected_frames(ack, CLOCK_SKEW)]
                rejected.update(counts)
        except ValueError as error:
            self._lost(f'{connection.peer} sent a bad acknowledgement ({error})')
        if done_through is not None:
            with self._lock:
                again = self._sign_again(skewed, done_through)
                if again:
                    rejected[CLOCK_SKEW] -= len(again)
                    rejected = +rejected     # without reasons counted down to nothing
                released = self._unacked.release_through(done_through)
                if released:
                    self._is_stalled = False
                if self._notice_weights:
                    notices = [seq for seq in self._notice_weights if seq <= done_through]
                    for seq in notices:
                        del self._notice_weights[seq]
                    released -= len(notices)
                # (A message signed again is not done yet: its copy will be.)
                self._records_done += released - len(again)
                if again:
                    dropped = self._queue.requeue(again, len(self._unacked),
                                                  self._unacked.bytes)
                    if dropped:
                        self._count_drops(dropped)
                    self._work.notify_all()
                self._progress.notify_all()
        if rejected:
            self.rejected += sum(rejected.values())
            self.rejections.update(rejected)
            self._unreported_rejections.update(rejected)
            self._report_rejections(time.monotonic())

    def _sign_again(self, numbers, done_through):
        """The messages among ``numbers`` (refused as clock_skew, held in ``_unacked``) to
        write once more, signed with the time of that write (under the lock).

        The daemon checks a v2 signature's time when it reads the message: one that
        waited longer than its max_clock_skew between being written and being read (a
        daemon stopped or hung for minutes while the connection stayed open) is refused
        though both clocks are right (A7-5).  Signed again now, it passes; refused again,
        the clock is off, and that refusal is final (counted and said).  A message goes
        again once: its copy is a ``_SignedAgain``."""
        again = []
        for seq in dict.fromkeys(numbers):    # once, however often an ack lists it
            if seq is None or seq > done_through:
                continue
            frame = self._unacked.frame(seq)
            if frame is not None and frame.__class__ is not _SignedAgain:
                again.append(_SignedAgain(frame))
        return again

    def _open_connection(self):
        """Connect, and with acks shake hands; return True on success."""
        try:
            connection = self._connect(self._io_timeout_s(CONNECT_TIMEOUT_S),
                                       self._is_out_of_time, prefer=self._last_address)
        except OSError as error:
            self._connection_failed(f'cannot connect to {self.where}: {_describe(error)}')
            return False
        acks = None
        if self.acknowledged:
            with self._lock:
                acks = ConnectionAcks(self._unacked.first_seq)
            problem = self._shake_hands(connection, acks)
            if problem is not None:
                connection.close()
                self._last_address = None     # another address next time, if there is one
                self._connection_failed(problem)
                return False
        self._last_address = getattr(connection, 'sockaddr', None)
        self._connection = connection
        self._connection_acks = acks
        self._signs_v2 = self._signer_v2 is not None and (
            self._signature == 'v2'
            or (self._signature == 'auto' and getattr(connection, 'signs_v2', False)))
        self._connected_at = time.monotonic()
        with self._lock:
            was_unreachable = self._is_unreachable
            self._is_unreachable = False
            self._is_stalled = False
            resending = len(self._unacked)
            self._progress.notify_all()
        self._has_warned.discard('handshake')
        again = f' (sending {resending} unacknowledged messages again)' if resending else ''
        self._report(f'connected to {connection.peer}{again}')
        if was_unreachable:
            self._retry_delay_s = None
        return True

    def _shake_hands(self, connection, acks):
        """Write the session frame alone and wait for the daemon's answer (HANDSHAKE.md);
        return None once answered, else what went wrong."""
        session = wire.make_session(self._session_id, acks.first_seq)
        connection.set_timeout(self._io_timeout_s(SEND_TIMEOUT_S))
        try:
            connection.send_frames([session])
        except ConnectionLost as lost:
            return f'connection to {connection.peer} lost: {lost.cause}'
        acks.first_write_at = time.monotonic()
        deadline = acks.first_write_at + self._handshake_timeout_s
        while True:
            try:
                for ack in connection.take_acks():
                    acks.apply(ack)
            except ValueError as error:
                return f'{connection.peer} sent a bad acknowledgement ({error})'
            if acks.has_acks:
                return None
            if connection.closed_because is not None:
                return f'{connection.peer}: {connection.closed_because} before the handshake'
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                with self._lock:
                    waiting = len(self._queue) + len(self._unacked)
                self._warn_once('handshake', (
                    f'{connection.peer} accepted the connection but did not answer the '
                    f'session frame within {self._handshake_timeout_s:g} s: a stopped daemon, '
                    f'or one older than acknowledgements (then turn them off: '
                    f'acknowledged=False, --no-ack); keeping {waiting} messages, retrying'))
                return f'{connection.peer} did not answer the handshake'
            if self._is_out_of_time():
                return (f'{connection.peer} did not answer the session frame (a stopped '
                        f'daemon, or one older than acknowledgements: then turn them off, '
                        f'acknowledged=False, --no-ack)')
            # Short slices: close() must not wait for the whole handshake bound.
            connection.receive(min(remaining_s, HANDSHAKE_POLL_S))

    def _connection_failed(self, text):
        if not self._is_unreachable:
            self._report(text)
        with self._lock:
            self._last_problem = text
            self._is_unreachable = True
            if self._closing:
                self._has_failed_since_close = True
            self._progress.notify_all()

    def _lost(self, text):
        """The connection failed: report it, drop it.  The next step reconnects at once if
        the connection had lasted (a daemon restart), else after the backoff: a peer that
        answers the handshake and then closes, resets or sends garbage must not be
        hammered."""
        self._report(f'{text}; reconnecting')
        self._last_problem = text
        self._drop_connection()
        if time.monotonic() - self._connected_at < HEALTHY_CONNECTION_S:
            self._wait_before_retry()
        else:
            self._retry_delay_s = None

    def _report_rejections(self, now, force=False):
        """Sum up the rejections since the last report, at most once per interval."""
        if not self._unreported_rejections:
            return
        if self._reports_rejections:
            due = force or now >= self._next_rejection_report_at
        else:
            # The caller says them all in its last line (the command's exit status 65); a
            # long run (a tail -F pipeline) hears of them on the way too, from one
            # interval after the start on.
            due = not force and now >= max(self._next_rejection_report_at,
                                           self._started_at + REJECTION_REPORT_INTERVAL_S)
        if due:
            counts = self._unreported_rejections
            self._warn_later(f'the daemon rejected {sum(counts.values())} messages: '
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

    def _stop(self):
        """Last step of the thread: close the connection, give up on what is left."""
        self._drop_connection()
        self._report_rejections(time.monotonic(), force=True)
        with self._lock:
            left = self._queue.discard_all()
            # A gap notice stands for the records it announces.
            unconfirmed = self._unacked.release_all() + sum(
                count - 1 for count in self._notice_weights.values())
            self._notice_weights = {}
            self.unconfirmed += unconfirmed
            self._given_up_at_close += left + unconfirmed
            self._thread = None
            _close_pipe(self._wakeup)
            self._wakeup = None
            self._progress.notify_all()
            self._stop_report(left, unconfirmed)
        if not self._closer_waits:  # no close() waits to say it (or it gave up waiting)
            self._say_pending()

    def _stop_report(self, left, unconfirmed):
        """One line for ``warn``: what was not delivered, and where (under the lock: said
        once it is released)."""
        dropped = self._gaps.total
        self._gaps = Gaps()
        rejected = self.rejected if self._reports_rejections else 0
        total = left + unconfirmed + dropped + rejected
        if not total:
            return
        parts = [f'{count} {what}' for count, what in (
            (left, 'never sent'), (unconfirmed, 'sent but not acknowledged (maybe written)'),
            (dropped, 'dropped earlier'),
            (rejected, f'rejected by the daemon: {describe_rejections(self.rejections)}'))
            if count]
        why = f': {self._last_problem}' if self._last_problem else ''
        self._warn_later(f'{total} messages not delivered to {self.where} '
                         f'({", ".join(parts)}){why}')


def _note_forking_thread():
    """``os.register_at_fork`` before-hook: is the main thread the one forking?"""
    _FORK['from_main_thread'] = threading.current_thread() is threading.main_thread()


os.register_at_fork(before=_note_forking_thread)


def _write_before_fork():
    """``os.register_at_fork`` before-hook: each sender writes what it has queued into its
    connection, so that a parent that leaves right after the fork through ``os._exit``
    (the first fork of every daemonization, python-daemon's among them) has handed its
    records to the kernel, which delivers them after the process is gone (A8-2: its
    start-up lines were lost; what is queued at a fork is the parent's alone)."""
    for sender in list(_SENDERS):
        sender._write_before_fork()


os.register_at_fork(before=_write_before_fork)


def _start_exit_deadline():
    """``atexit`` hook, run before ``logging.shutdown`` (registered after it: ``logging``
    is imported first): from now on each sender's ``flush()`` and ``close()`` share one
    deadline, ``exit_timeout_s`` away, so that interpreter exit (a flush, then a close)
    takes at most that long in all."""
    now = time.monotonic()
    for sender in list(_SENDERS):
        sender._exit_deadline = now + sender._exit_timeout_s


def _close_opened_again():
    """``atexit`` hook, run right after ``_start_exit_deadline`` (registered before it):
    close the senders that a record opened again after ``close()`` (A8-3), within the exit
    deadline.  ``logging.shutdown`` may not know their handlers any more (``dictConfig``
    took them out of its list when it closed them)."""
    for sender in list(_SENDERS):
        if sender._delivers_each and not sender._closing:
            sender.close(sender._exit_timeout_s)


atexit.register(_close_opened_again)
atexit.register(_start_exit_deadline)


def _is_multiprocessing_child():
    """True in a process that ``multiprocessing`` started (any start method), and while a
    spawn or forkserver child imports the main module, before it knows its parent (and
    while the forkserver preloads it; attack finding A9-7: a spawn child's finalizers are
    not cleared after that import, and a record logged during it registered none)."""
    multiprocessing = sys.modules.get('multiprocessing')
    parent_process = getattr(multiprocessing, 'parent_process', None)
    if parent_process is None:
        return False
    if parent_process() is not None:
        return True
    return bool(getattr(multiprocessing.current_process(), '_inheriting', False))


class _SigtermWatch:
    """A multiprocessing child's SIGTERM delivery (``_deliver_at_sigterm``), for one
    process: the wake-up fd's pipe, and what its handler and its watcher thread did."""

    def __init__(self, pipe):
        self.pid = os.getpid()
        self.pipe = pipe
        self.started = threading.Event()     # the handler runs (in the main thread)
        self.delivered = threading.Event()   # the watcher delivered for it
        self.nudges = 0                      # SIGTERMs the watcher sent the main thread


# The process's ``_SigtermWatch``, or None.
_SIGTERM = {'watch': None}

# ``signal.set_wakeup_fd`` itself: a watch puts ``_set_wakeup_fd_beside_the_watch`` in its
# place.
_SET_WAKEUP_FD = signal.set_wakeup_fd


def _deliver_at_sigterm():
    """In a ``multiprocessing`` child whose SIGTERM does what the kernel does (kills it
    at once): deliver what every sender of the process holds first, then die of the
    signal as before.  ``Pool.terminate()``, and so the ``with Pool(...)`` statement of
    the multiprocessing documentation, ends its workers so: their last records were lost,
    silently (attack finding A8-5).  Only from the main thread (``signal.signal``); a
    handler the application set is left alone.

    A Python signal handler runs only in the main thread, between two bytecodes: a
    SIGTERM that another thread takes, or that comes just before the main thread blocks
    in a C wait (a Pool worker waiting for its queue's lock, which ``terminate()`` holds:
    glibc's ``sem_wait`` goes back to sleep after a stolen wake-up), is only noted, and
    the handler never ran: ``with Pool()`` never returned (1 start in 20).  So the
    handler comes with a wake-up fd (``signal.set_wakeup_fd``, written by whichever thread
    takes the signal) and a thread watching it (``_watch_sigterm``); where the
    application has a wake-up fd of its own (asyncio's signal handling), neither is
    installed and SIGTERM stays the kernel's.

    Returns False when it must be tried again from the main thread (the first record
    came from another one: attack finding A9-4), True otherwise."""
    if threading.current_thread() is not threading.main_thread():
        return False
    watch = _SIGTERM['watch']
    if watch is not None and watch.pid == os.getpid():
        return True
    try:
        if signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
            return True
    except (ValueError, OSError):   # not the main interpreter, or no such signal here
        return True
    pipe = _make_pipe()
    try:
        previous = _SET_WAKEUP_FD(pipe[1], warn_on_full_buffer=False)
        if previous != -1:          # the application's: put back, and leave SIGTERM alone
            _SET_WAKEUP_FD(previous)
            _close_fds(pipe)
            return True
        os.set_blocking(pipe[0], True)
        watch = _SigtermWatch(pipe)
        signal.signal(signal.SIGTERM, _deliver_then_die)
    except (ValueError, OSError):
        _close_fds(pipe)
        return True
    _SIGTERM['watch'] = watch
    signal.set_wakeup_fd = _set_wakeup_fd_beside_the_watch
    threading.Thread(target=_watch_sigterm, args=(watch,), name='loghog-sigterm',
                     daemon=True).start()
    return True


def _set_wakeup_fd_beside_the_watch(fd, /, *, warn_on_full_buffer=True):
    """``signal.set_wakeup_fd`` while a SIGTERM watch runs: the application's wake-up fd
    takes the watch's place (the watcher is blind while it is set, as the SIGTERM handler
    leaves the application's own alone), and when the application gives it up (-1: an
    asyncio loop with signal handlers, closed), the watch takes it back.  It was left
    blind for good: the with Pool() hang came back (attack finding A9-3).
    The watch's own fd is never returned: the application sees -1 where it was."""
    previous = _SET_WAKEUP_FD(fd, warn_on_full_buffer=warn_on_full_buffer)
    watch = _SIGTERM['watch']
    if watch is None or watch.pid != os.getpid():
        return previous
    if fd == -1:
        _SET_WAKEUP_FD(watch.pipe[1], warn_on_full_buffer=False)
    return -1 if previous == watch.pipe[1] else previous


def _deliver_then_die(signum, frame):
    """The SIGTERM handler of ``_deliver_at_sigterm``: a second SIGTERM kills at once;
    the senders close within one exit deadline (``close_timeout_s``; at once when the
    daemon is unreachable), say what they could not deliver, and the process dies of
    the signal, as the one who sent it expects."""
    signal.signal(signum, signal.SIG_DFL)
    watch = _SIGTERM['watch']
    if watch is not None and watch.pid == os.getpid():
        watch.started.set()
        if watch.delivered.is_set():    # the watcher did, while this thread could not
            os.kill(os.getpid(), signum)
            return
    _close_every_sender()
    os.kill(os.getpid(), signum)


def _close_every_sender():
    """Close every sender of this process within one exit deadline (see ``close()``)."""
    _start_exit_deadline()
    pid = os.getpid()
    for sender in list(_SENDERS):
        if sender._pid == pid and sender._thread is not None:
            try:
                sender.close(sender._exit_timeout_s)
            except Exception:  # noqa: BLE001 (dying: never keep the process alive)
                pass


def _watch_sigterm(watch):
    """The watcher thread of ``_deliver_at_sigterm``: reads the signal numbers the
    wake-up fd gets.  At a SIGTERM the main thread has not started the handler for within
    ``SIGTERM_HANDLER_WAIT_S``, deliver in its place (``_deliver_for_the_main_thread``);
    a second SIGTERM meanwhile kills at once.  Either way, kill the process if the
    delivery has not ended it in time: one that cannot even begin (its sender lock held
    by the blocked main thread), or a report that standard error does not take (a pipe
    nobody reads; attack finding A9-6).  A SIGTERM handled by the application (a handler
    of its own, set after ours: A9-1) is none of its business."""
    terms = 0
    killer = None
    delivering = False
    while True:
        try:
            data = os.read(watch.pipe[0], 64)
        except OSError:             # closed: the watch ended
            return
        if not data or watch.pid != os.getpid():
            return
        arrived = data.count(signal.SIGTERM)
        if not arrived or (not watch.started.is_set()
                           and signal.getsignal(signal.SIGTERM) is not _deliver_then_die):
            continue
        terms += arrived
        if killer is None:
            pid = os.getpid()
            limit = max((sender._exit_timeout_s for sender in list(_SENDERS)
                         if sender._pid == pid), default=0.0)
            killer = threading.Timer(limit + CLOSE_GRACE_S + SIGTERM_NUDGE_FOR_S + 1.0,
                                     _kill_now)
            killer.daemon = True
            try:
                killer.start()
            except RuntimeError:    # no thread to be had: the watch goes on without
                pass
        if terms - watch.nudges > 1:    # a second SIGTERM: no waiting any more
            _kill_now()
        if watch.started.is_set():
            continue
        if delivering or watch.started.wait(SIGTERM_HANDLER_WAIT_S):
            continue
        delivering = True
        try:
            threading.Thread(target=_deliver_for_the_main_thread, args=(watch,),
                             name='loghog-sigterm-delivery', daemon=True).start()
        except RuntimeError:        # no thread to be had: deliver here (a second SIGTERM
            _deliver_for_the_main_thread(watch)     # is then not seen until it is done)


def _deliver_for_the_main_thread(watch):
    """Deliver what the main thread's handler would have, then signal the main thread
    again until it runs the handler (which then dies of SIGTERM at once), every
    ``SIGTERM_NUDGE_S`` for ``SIGTERM_NUDGE_FOR_S``; a main thread that still does not
    is killed: the process must end, as the one who sent SIGTERM expects."""
    _close_every_sender()
    watch.delivered.set()
    main = threading.main_thread().ident
    deadline = time.monotonic() + SIGTERM_NUDGE_FOR_S
    while time.monotonic() < deadline:
        if not watch.started.is_set():
            watch.nudges += 1
            try:
                signal.pthread_kill(main, signal.SIGTERM)
            except (OSError, ValueError):   # no such thread any more
                break
        time.sleep(SIGTERM_NUDGE_S)
    _kill_now()


def _kill_now():
    os.kill(os.getpid(), signal.SIGKILL)


def _end_sigterm_watch_in_child():
    """``os.register_at_fork`` after-hook: a fork of a process with a SIGTERM watch
    inherits its handler and its wake-up fd, not its watcher thread: a signal of the
    child's would be read as its parent's by the parent's watcher.  The child starts
    with SIGTERM and the wake-up fd as they were before the watch (its own first record
    installs one again, when it is a ``multiprocessing`` child)."""
    watch = _SIGTERM['watch']
    if watch is None:
        return
    _SIGTERM['watch'] = None
    try:
        if signal.getsignal(signal.SIGTERM) is _deliver_then_die:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        current = _SET_WAKEUP_FD(-1)
        if current not in (-1, watch.pipe[1]):     # set by the application since
            _SET_WAKEUP_FD(current)
    except (ValueError, OSError):
        pass
    _close_fds(watch.pipe)


def _hold_sigterm_over_fork():
    """``os.register_at_fork`` before-hook: while a SIGTERM watch runs, the forking
    thread blocks SIGTERM until each side has done its after-fork hook.  A SIGTERM sent to
    the child before its hook dropped the inherited watch was written into the wake-up
    pipe it shares with its parent, and the parent, never signalled, died of it (attack
    finding A9-2: a worker that ends its forks at once).  Held, it waits in the child
    until SIGTERM is the kernel's again there."""
    _FORK['sigterm_held'] = False
    watch = _SIGTERM['watch']
    if watch is None or watch.pid != os.getpid():
        return
    try:
        before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    except (ValueError, OSError):
        return
    _FORK['sigterm_held'] = signal.SIGTERM not in before


def _release_sigterm_after_fork():
    """``os.register_at_fork`` after-hook of the parent (and, last, of the child)."""
    if _FORK.get('sigterm_held'):
        _FORK['sigterm_held'] = False
        try:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        except (ValueError, OSError):
            pass


def _end_sigterm_watch_then_release():
    _end_sigterm_watch_in_child()
    _release_sigterm_after_fork()


os.register_at_fork(before=_hold_sigterm_over_fork, after_in_parent=_release_sigterm_after_fork,
                    after_in_child=_end_sigterm_watch_then_release)


def _close_fds(fds):
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _start_over_in_child(sender_ref):
    """``os.register_at_fork`` hook; a weak reference, so that senders can be collected."""
    sender = sender_ref()
    if sender is not None:
        sender._start_over_after_fork()


def _close_sender(sender_ref, timeout_s):
    """The ``multiprocessing`` finalizer of a fork child's sender."""
    sender = sender_ref()
    if sender is not None:
        sender.close(timeout_s)


def _ignore(text):
    """The default ``report`` and ``warn``: say nothing."""


def _describe(error):
    """A short human description of a socket error."""
    return getattr(error, 'strerror', None) or str(error) or type(error).__name__


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
