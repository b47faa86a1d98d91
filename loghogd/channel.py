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
# A receiver's socket buffer towards the main process: a few batches in flight.
BUFFER_BYTES = 4 * 1024 * 1024


def handoff_pair():
    """(main's end, receiver's end) for handing accepted connections to a receiver: one
    datagram per connection (its kind and address), with its descriptor (SCM_RIGHTS)."""
    ends = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for end in ends:
        end.setblocking(False)
    return ends


def hand_off(sock, connection, kind, address):
    """Send ``connection`` (an accepted socket) over ``sock``; False if it cannot be sent
    now (the receiver is far behind)."""
    try:
        socket.send_fds(sock, [marshal.dumps((kind, address))], [connection.fileno()])
    except (BlockingIOError, InterruptedError, OSError):
        return False
    return True


def take_handed_off(sock, budget=64):
    """[(socket, kind, address)] handed over ``sock`` (at most ``budget``)."""
    taken = []
    for _ in range(budget):
        try:
            data, fds, _, _ = socket.recv_fds(sock, 4096, 1)
        except (BlockingIOError, InterruptedError):
            break
        if not data:
            break
        kind, address = marshal.loads(data)
        for fd in fds:
            taken.append((socket.socket(fileno=fd), kind, address))
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

    def receive(self):
        """The messages that arrived whole since the last call."""
        incoming = self.incoming
        while True:
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
            if end - offset - 4 < size:
                break
            messages.append(marshal.loads(incoming[offset + 4:offset + 4 + size]))
            offset += 4 + size
        if offset:
            del incoming[:offset]
        return messages

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
