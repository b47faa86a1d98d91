"""The channel between the main process and one receiver: a socketpair carrying messages.

A message is a tuple of plain values (str, bytes, int, None, tuples, lists, dicts of
those), encoded with ``marshal`` behind a 4-byte length: both ends are the same
interpreter, and marshal builds nothing but those values (it runs no code, unlike
pickle, so a receiver cannot make the main process do anything but read values).

The main process never blocks on a channel (``send`` queues, ``flush`` sends what the
kernel takes).  A receiver's ``send_blocking`` waits until the main process has taken
the batch: that wait is the back-pressure that stops a receiver from reading its peers
faster than the writer writes (the kernel's socket buffers hold a few batches).
"""

import marshal
import select
import socket
import struct

LENGTH = struct.Struct('!I')
READ_BYTES = 1024 * 1024
# Reads per ``receive`` call at most: a peer that sends without pause cannot keep the
# reader in one call (the loop comes back: the socket stays readable).
READS_PER_CALL = 4
# The largest message a receiver sends (a batch is cut at BATCH_BYTES: receiver.py), and
# the largest the main process takes: beyond it the sender is broken (attack finding
# A4-w6: a 4-byte header asking for 4 GiB made the main process hold what came).
BATCH_BYTES = 4 * 1024 * 1024


def max_message_bytes(max_message_size):
    """What the main process takes in one message: a batch, plus the line that began it
    (``max_message_size`` bytes of a message, escaped in a line: up to 6 characters a
    byte, and 4 bytes a character) and marshal's framing."""
    return BATCH_BYTES + 32 * max_message_size + 1024 * 1024


class ChannelError(Exception):
    """The other end sent what the channel does not carry."""
# A receiver's socket buffer towards the main process: a few batches in flight.
BUFFER_BYTES = 4 * 1024 * 1024


def handoff_pair():
    """(main's end, receiver's end) for handing accepted connections to a receiver: one
    datagram per connection (its kind, address and hand-off number), with its descriptor
    (SCM_RIGHTS).  The main process keeps its copy until the receiver says, on its
    channel, that it took it or could not (out of descriptors: receiver.HandOffReader)."""
    ends = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for end in ends:
        end.setblocking(False)
    return ends


def hand_off(sock, connection, kind, address, number):
    """Send ``connection`` (an accepted socket) over ``sock``; False if it cannot be sent
    now (the receiver is far behind)."""
    try:
        socket.send_fds(sock, [marshal.dumps((kind, address, number))], [connection.fileno()])
    except (BlockingIOError, InterruptedError, OSError):
        return False
    return True


def take_handed_off(sock, budget=64):
    """[(socket, kind, address, number)] handed over ``sock`` (at most ``budget``); the
    socket is None for a connection whose descriptor the kernel could not give (this
    process is out of descriptors, MSG_CTRUNC: the main process still has it)."""
    taken = []
    for _ in range(budget):
        try:
            data, fds, flags, _ = socket.recv_fds(sock, 4096, 1)
        except (BlockingIOError, InterruptedError):
            break
        if not data:
            break
        kind, address, number = marshal.loads(data)
        for fd in fds:
            taken.append((socket.socket(fileno=fd), kind, address, number))
        if not fds and flags & socket.MSG_CTRUNC:
            taken.append((None, kind, address, number))
    return taken


def channel_pair():
    """(main's end, receiver's end), both non-blocking, with roomy buffers."""
    ends = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    for end in ends:
        end.setblocking(False)
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            try:
                end.setsockopt(socket.SOL_SOCKET, option, BUFFER_BYTES)
            except OSError:
                pass
    return ends


class Channel:
    """One end of a channel: ``send`` / ``flush`` out, ``receive`` in.

    ``receive()`` returns the messages that arrived whole (a list) and sets ``eof``
    when the other end closed.
    """

    def __init__(self, sock):
        self.sock = sock
        self.incoming = bytearray()
        self.outgoing = bytearray()
        self.eof = False

    def fileno(self):
        return self.sock.fileno()

    def send(self, message):
        """Queue ``message``; ``flush`` (or ``send_blocking``) sends it."""
        data = marshal.dumps(message)
        self.outgoing += LENGTH.pack(len(data))
        self.outgoing += data

    def flush(self):
        """Send what the kernel takes now; return True when nothing is left queued."""
        while self.outgoing:
            try:
                sent = self.sock.send(self.outgoing)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError:
                self.outgoing.clear()   # the other end is gone: its EOF says so
                return True
            del self.outgoing[:sent]
        return True

    def send_blocking(self, message=None):
        """Queue ``message`` (if any) and wait until everything queued is sent."""
        if message is not None:
            self.send(message)
        while not self.flush():
            select.select([], [self.sock], [], 1.0)

    def receive(self, max_bytes=None):
        """The messages that arrived whole since the last call.  Raises ChannelError for a
        message over ``max_bytes`` or one that is not marshal data (what is before it is
        lost then: the caller gives up on the other end)."""
        incoming = self.incoming
        for _ in range(READS_PER_CALL):
            try:
                data = self.sock.recv(READ_BYTES)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                data = b''
            if not data:
                self.eof = True
                break
            incoming += data
            if len(data) < READ_BYTES:
                break
        messages = []
        offset = 0
        end = len(incoming)
        while end - offset >= 4:
            size = LENGTH.unpack_from(incoming, offset)[0]
            if max_bytes is not None and size > max_bytes:
                raise ChannelError('a message of %d bytes (at most %d)' % (size, max_bytes))
            if end - offset - 4 < size:
                break
            try:
                messages.append(marshal.loads(incoming[offset + 4:offset + 4 + size]))
            except (ValueError, EOFError, TypeError) as exc:
                raise ChannelError('not a message: %s' % exc) from None
            offset += 4 + size
        if offset:
            del incoming[:offset]
        return messages

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
