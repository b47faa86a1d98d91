"""The client's buffer: a FIFO of encoded frames, bounded in count and in bytes.

Pure bookkeeping for the delivery engine (``loghog.sender``): no threads, no sockets.  The
frames the engine holds elsewhere (taken off the queue and being written, or written and
awaiting acknowledgement) count against the same bounds, passed in as ``held`` and
``held_bytes``.
"""

import collections


class FrameQueue:
    """A FIFO of encoded frames bounded in count and in bytes, that drops its oldest frames
    when it must.

    Not thread-safe by itself: the ``Sender`` guards it with its lock.  ``dropped`` counts
    every frame given up on; ``bytes`` is the queued frames' total size.
    """

    def __init__(self, max_frames, max_bytes=None):
        if max_frames < 1:
            raise ValueError(f'max_buffer_size must be at least 1, not {max_frames}')
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f'max_buffer_bytes must be at least 1, not {max_bytes}')
        self.max_frames = max_frames
        self.max_bytes = max_bytes if max_bytes is not None else float('inf')
        self.dropped = 0
        self.bytes = 0
        self._frames = collections.deque()

    def __len__(self):
        return len(self._frames)

    def has_room(self, size, held=0, held_bytes=0):
        """True if a frame of ``size`` bytes fits beside ``held`` frames of ``held_bytes``
        kept elsewhere (written, awaiting acknowledgement).  A frame larger than the byte
        bound fits an empty buffer: it is bounded by the daemon's message size."""
        count = len(self._frames) + held
        return count < self.max_frames and (
            self.bytes + held_bytes + size <= self.max_bytes or not count)

    def append(self, frame, held=0, held_bytes=0):
        """Add ``frame`` at the end, dropping the oldest queued frames until it fits.

        ``held`` frames (``held_bytes``) kept elsewhere count against the bounds too; when
        they alone fill them, ``frame`` itself is the one dropped.  Returns the frames
        dropped, oldest first (empty, nearly always).
        """
        dropped = []
        size = len(frame)
        while not self.has_room(size, held, held_bytes):
            if not self._frames:
                dropped.append(frame)
                self.dropped += len(dropped)
                return dropped
            old = self._frames.popleft()
            self.bytes -= len(old)
            dropped.append(old)
        self._frames.append(frame)
        self.bytes += size
        self.dropped += len(dropped)
        return dropped

    def take(self, max_bytes):
        """Remove and return the oldest frames, at least one, up to ``max_bytes`` in total."""
        batch = [self._frames.popleft()]
        size = len(batch[0])
        while self._frames and size + len(self._frames[0]) <= max_bytes:
            frame = self._frames.popleft()
            size += len(frame)
            batch.append(frame)
        self.bytes -= size
        return batch

    def requeue(self, frames, held=0, held_bytes=0):
        """Put ``frames`` (taken earlier, in order) back at the front.

        They are the oldest frames, so if the queue filled up meanwhile they are the ones
        dropped.  ``held`` and ``held_bytes`` are as for ``append``.  Returns the frames
        dropped.
        """
        if not frames:
            return []
        self._frames.extendleft(reversed(frames))
        self.bytes += sum(map(len, frames))
        dropped = []
        while self._frames and (len(self._frames) + held > self.max_frames or
                                (self.bytes + held_bytes > self.max_bytes and
                                 len(self._frames) + held > 1)):
            old = self._frames.popleft()
            self.bytes -= len(old)
            dropped.append(old)
        self.dropped += len(dropped)
        return dropped

    def discard_all(self):
        """Drop every queued frame (counted in ``dropped``); return how many."""
        count = len(self._frames)
        self.dropped += count
        self._frames.clear()
        self.bytes = 0
        return count
