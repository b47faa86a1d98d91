"""Datagrams the kernel refused to send: counted, and said on standard error.

Over UDP nothing is acknowledged, but a send can still fail where the client sees it: a
datagram larger than one can be (EMSGSIZE), or one sent after an earlier one came back as
"port unreachable" (ECONNREFUSED, reported by the next send on a connected socket).  Such a
datagram never leaves the machine.  ``DatagramConnection`` counts them in its ``lost``; the
handler and the ``loghog`` command watch their connections with a ``Refusals``, which says
the first refusal at once and sums up the later ones at most every
``REFUSAL_REPORT_INTERVAL_S`` (attack finding A6-1: they were lost without a word).
"""

import time

from loghog.sender import REJECTION_REPORT_INTERVAL_S
from loghog.transport import DatagramConnection

# As often as the rejections a daemon reports (loghog.sender): a line at the first
# refusal, then one every ten seconds at most while datagrams go on being refused.
REFUSAL_REPORT_INTERVAL_S = REJECTION_REPORT_INTERVAL_S


class Refusals:
    """The datagrams to ``where`` that the kernel refused, over every connection watched.

    ``warn(text)`` writes a line on standard error (the handler's or the command's).
    ``count`` is the total so far.  Only the sender thread counts (``add``); ``say_rest``
    runs once it has stopped.  No lock: a lock held by the sender thread when the
    application forks would stay held in the child for ever.
    """

    def __init__(self, warn, where, clock=time.monotonic):
        self.count = 0
        self._warn = warn
        self._where = where
        self._clock = clock
        self._unreported = 0
        self._next_report_at = None     # None: none said yet

    def watch(self, connection):
        """``connection``, its refused datagrams counted here if it is a datagram one."""
        if isinstance(connection, DatagramConnection):
            return _Watched(connection, self)
        return connection

    def add(self, refused):
        """``refused`` more datagrams were refused: say so, unless said less than an
        interval ago (the count waits for the next line)."""
        self.count += refused
        self._unreported += refused
        now = self._clock()
        if self._next_report_at is not None and now < self._next_report_at:
            return
        first = self._next_report_at is None
        self._next_report_at = now + REFUSAL_REPORT_INTERVAL_S
        self._warn(self._describe(first))

    def say_rest(self):
        """Say the refusals not said yet (at close)."""
        if self._unreported:
            self._warn(self._describe(first=False))    # add() said the first at once

    def _describe(self, first):
        count, self._unreported = self._unreported, 0
        if first:
            what = 'a datagram' if count == 1 else f'{count} datagrams'
            return (f'the kernel refused to send {what} to {self._where} (a message too big '
                    f'for UDP, or nothing listening there): lost')
        return (f'the kernel refused to send {count} more datagrams to {self._where}: lost '
                f'({self.count} in all)')


class _Watched:
    """A ``DatagramConnection`` whose sends report what the kernel refused to a
    ``Refusals``; everything else is the connection's own."""

    def __init__(self, connection, refusals):
        self._connection = connection
        self._refusals = refusals

    def send_frames(self, frames):
        before = self._connection.lost
        sent = self._connection.send_frames(frames)
        refused = self._connection.lost - before
        if refused:
            self._refusals.add(refused)
        return sent

    def __getattr__(self, name):
        return getattr(self._connection, name)
