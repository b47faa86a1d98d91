"""Sealed log files: the hash chain, the seals, the one-way key and the sidecar records.
Pure: bytes and numbers in, bytes and numbers out; sealer.py does the files and the clock,
verify.py the checking.

The chain.  Every byte the daemon writes to a sealed log file is hashed into a chain, a
chunk at a time: a chunk is one or more whole write batches, closed once it holds at least
CHUNK_MIN_BYTES (or at a seal, a rotation, a stop).  For chunk i, holding ``n_lines``
lines (``n_bytes`` bytes) beginning at line ``first_line`` (1-based) of its file::

    h_i = SHA-256(h_(i-1) || bytes || u64(first_line) || u64(n_lines) || u64(n_bytes))

(u64: 8 bytes, big-endian).  A file's first chunk chains from ``prev``, recorded in the
first record of its sidecar: 32 zero bytes for the first file of a history, else the last
hash of the file it was rotated from.  So one chain runs through every file of a history,
backups and live file, and a missing backup breaks it.

The key.  ``seal-init`` draws k_0 at time t0 with an interval I (seconds).  Epoch n is
[t0 + n*I, t0 + (n+1)*I); its key is k_n = SHA-256(KEY_LABEL || k_(n-1)).  The daemon only
ever holds the key of the epoch it is in, so whoever takes the machine cannot make a seal
for an earlier epoch.  The operator keeps k_0, t0 and I off the machine (the
"verification key") and can derive every k_n.

Seals.  Once epoch b has ended, every sealed file gets a seal record: epochs [a, b] (a is
the first epoch not sealed yet: a == b, unless the daemon was down or late), the file's
line and byte count, the time, the chain hash, and HMAC-SHA256 under k_a over all of them
and the history's name (the application's folder and the live file's name: ``history_name``).  Then the key moves on to k_(b+1).  Seals of one history must cover
consecutive epochs with no gap, and each must have been made after its last epoch ended.

The sidecar ``<file>.seal`` is text, one record per line::

    loghog-seal 1 <prev hex> <time µs> <name>          the first line
    c <first_line> <n_lines> <n_bytes> <hash hex>       a chunk ('r': chained at a restart)
    s <a> <b> <lines> <bytes> <time µs> <hash hex> <hmac hex>   a seal
"""

import hashlib
import hmac
import os
import struct

MAGIC = b'loghog-seal'
VERSION = 1
SUFFIX = '.seal'
GENESIS = bytes(32)
KEY_LABEL = b'loghog-seal-key-v1'
MAC_LABEL = b'loghog-seal-v1\n'
KEY_BYTES = 32
# A chunk is closed once it holds this much (or at a seal): verify names the lines of the
# chunk that breaks (about a hundred), and a sidecar costs about 100 bytes per chunk (0.6%
# of the log).  Under load (tcp8: write batches of 5-10 KB, 5,000 a second) a 4 KiB
# minimum made a record per batch, and the records waiting in memory went to the sidecar
# (with an fdatasync of the log first) every second; at 16 KiB, every 15 s.
CHUNK_MIN_BYTES = 16 * 1024
VERIFICATION_KEY_PREFIX = 'loghog-seal-v1'

RANGE = struct.Struct('>QQQ')


# -- the key --------------------------------------------------------------------------------

def evolve(key):
    """The next epoch's key: SHA-256(KEY_LABEL || key)."""
    return hashlib.sha256(KEY_LABEL + bytes(key)).digest()


def key_at(key, epoch, target):
    """The key of epoch ``target`` from ``key``, the key of ``epoch`` (target >= epoch)."""
    if target < epoch:
        raise ValueError('cannot go back from epoch %d to %d' % (epoch, target))
    for _ in range(target - epoch):
        key = evolve(key)
    return key


def epoch_of(moment, t0, interval):
    """The epoch a Unix time falls in (negative before t0)."""
    return int((moment - t0) // interval)


def epoch_end(epoch, t0, interval):
    """The Unix time at which ``epoch`` ends (and the next begins)."""
    return t0 + (epoch + 1) * interval


def new_key():
    """A fresh k_0 from the OS's random source."""
    return os.urandom(KEY_BYTES)


def format_verification_key(key, t0, interval):
    """``loghog-seal-v1:<k0 hex>:<t0>:<interval>``: what the operator keeps off the machine."""
    return '%s:%s:%d:%d' % (VERIFICATION_KEY_PREFIX, key.hex(), t0, interval)


def parse_verification_key(text):
    """(k0, t0, interval) from ``format_verification_key``'s text; raises ValueError."""
    parts = text.strip().split(':')
    if len(parts) != 4 or parts[0] != VERIFICATION_KEY_PREFIX:
        raise ValueError('not a LogHog verification key (expected %s:<key>:<t0>:<interval>)'
                         % VERIFICATION_KEY_PREFIX)
    key = bytes.fromhex(parts[1])
    if len(key) != KEY_BYTES:
        raise ValueError('the key must be %d bytes (%d hex digits)' % (KEY_BYTES, 2 * KEY_BYTES))
    t0, interval = int(parts[2]), int(parts[3])
    check_key_times(t0, interval)
    return key, t0, interval


# Bounds of what a key's t0 and interval can be (a 400-digit t0 made verify die with an
# OverflowError: attack finding A4-17).  Epoch 0 begins within 3,000 years of 1970.
MAX_T0 = 10 ** 11
MAX_INTERVAL = 10 ** 9


def check_key_times(t0, interval):
    """Raise ValueError unless ``t0`` is a Unix time and ``interval`` a number of seconds
    a key can have."""
    if interval < 1:
        raise ValueError('the interval must be at least 1 second')
    if interval > MAX_INTERVAL:
        raise ValueError('the interval must be at most %d seconds' % MAX_INTERVAL)
    if abs(t0) > MAX_T0:
        raise ValueError('t0 is not a Unix time')


# -- the chain ------------------------------------------------------------------------------

def link(prev, data, first_line, n_lines, n_bytes):
    """One chain step over a whole chunk (the streaming form is Chain)."""
    return hashlib.sha256(prev + data + RANGE.pack(first_line, n_lines, n_bytes)).digest()


class Chain:
    """A file's chain as it is written: ``add`` the bytes written, ``close_chunk`` to get
    the records to append to the sidecar.

    ``last`` is the hash of the last closed chunk (``prev`` before any); ``lines`` and
    ``size`` count what closed chunks hold; the open chunk holds ``open_lines`` lines
    (``open_bytes`` bytes) hashed so far.  Records not yet in the sidecar wait in
    ``records`` (bytes, one line each).
    """

    def __init__(self, prev=GENESIS, lines=0, size=0):
        self.last = prev
        self.lines = lines
        self.size = size
        self.records = []
        self._hash = None
        self.open_lines = 0
        self.open_bytes = 0
        self._ends_line = True

    @property
    def covered(self):
        """Bytes of the file the chain knows about (closed and open chunks)."""
        return self.size + self.open_bytes

    def add(self, data, kind=b'c'):
        """Hash ``data`` (bytes written to the file, in order) into the open chunk; close
        it once it holds CHUNK_MIN_BYTES and ends a line."""
        if not data:
            return
        if self._hash is None:
            self._hash = hashlib.sha256(self.last)
        self._hash.update(data)
        self.open_lines += data.count(b'\n')
        self.open_bytes += len(data)
        self._ends_line = data[-1:] == b'\n'
        if self.open_bytes >= CHUNK_MIN_BYTES and self._ends_line:
            self.close_chunk(kind)

    def close_chunk(self, kind=b'c'):
        """Close the open chunk if it ends a line (a write cut inside a line, which the
        writer completes later, stays open); its record joins ``records``."""
        if self._hash is None or not self._ends_line:
            return
        first = self.lines + 1
        self._hash.update(RANGE.pack(first, self.open_lines, self.open_bytes))
        self.last = self._hash.digest()
        self.records.append(encode_chunk(kind, first, self.open_lines, self.open_bytes,
                                         self.last))
        self.lines += self.open_lines
        self.size += self.open_bytes
        self._hash = None
        self.open_lines = self.open_bytes = 0

    def take_records(self):
        """The records waiting for the sidecar, and forget them."""
        records, self.records = self.records, []
        return records


# -- records --------------------------------------------------------------------------------

def history_name(app, live_name):
    """The name a history is sealed under: its application's folder and its live file's
    name (``shop/root.log``), so that a history copied into another application's folder
    does not verify there (attack finding A4-6: all applications share one key)."""
    return '%s/%s' % (app, live_name)


def encode_start(prev, time_us, name):
    return b'%s %d %s %d %s\n' % (MAGIC, VERSION, prev.hex().encode(), time_us, name.encode())


def encode_chunk(kind, first_line, n_lines, n_bytes, digest):
    return b'%s %d %d %d %s\n' % (kind, first_line, n_lines, n_bytes, digest.hex().encode())


def seal_message(name, first_epoch, last_epoch, lines, size, time_us, chain_hash):
    """The bytes a seal's HMAC covers."""
    return MAC_LABEL + name.encode() + b'\n' + b'%d %d %d %d %d %s' % (
        first_epoch, last_epoch, lines, size, time_us, chain_hash.hex().encode())


def make_seal(key, name, first_epoch, last_epoch, lines, size, time_us, chain_hash):
    """The seal record (bytes, one line) of epochs [first_epoch, last_epoch], made with
    ``key`` (the key of ``first_epoch``)."""
    mac = hmac.new(bytes(key), seal_message(name, first_epoch, last_epoch, lines, size, time_us,
                                            chain_hash), hashlib.sha256).hexdigest()
    return b's %d %d %d %d %d %s %s\n' % (first_epoch, last_epoch, lines, size, time_us,
                                          chain_hash.hex().encode(), mac.encode())


def check_seal_mac(key, name, seal):
    """True when ``seal`` (a Seal) carries a valid HMAC under ``key``."""
    expected = hmac.new(bytes(key), seal_message(name, seal.first_epoch, seal.last_epoch,
                                                 seal.lines, seal.size, seal.time_us,
                                                 seal.chain_hash), hashlib.sha256).digest()
    return hmac.compare_digest(expected, seal.mac)


class Start:
    __slots__ = ('prev', 'time_us', 'name')
    kind = 'start'

    def __init__(self, prev, time_us, name):
        self.prev, self.time_us, self.name = prev, time_us, name


class Chunk:
    __slots__ = ('recovered', 'first_line', 'n_lines', 'n_bytes', 'digest')
    kind = 'chunk'

    def __init__(self, recovered, first_line, n_lines, n_bytes, digest):
        self.recovered = recovered
        self.first_line, self.n_lines, self.n_bytes, self.digest = \
            first_line, n_lines, n_bytes, digest


class Seal:
    __slots__ = ('first_epoch', 'last_epoch', 'lines', 'size', 'time_us', 'chain_hash', 'mac')
    kind = 'seal'

    def __init__(self, first_epoch, last_epoch, lines, size, time_us, chain_hash, mac):
        self.first_epoch, self.last_epoch = first_epoch, last_epoch
        self.lines, self.size, self.time_us = lines, size, time_us
        self.chain_hash, self.mac = chain_hash, mac


def _digest(text):
    value = bytes.fromhex(text.decode('ascii'))
    if len(value) != 32:
        raise ValueError('a hash must be 32 bytes')
    return value


def _count(text):
    value = int(text)
    if value < 0:
        raise ValueError('a count cannot be negative')
    return value


def parse_record(line, first):
    """A Start (only as the ``first`` line), Chunk or Seal from one sidecar line (bytes,
    with or without its newline).  Raises ValueError for anything else."""
    if not line.endswith(b'\n'):
        raise ValueError('a record cut short')
    fields = line[:-1].split(b' ')
    try:
        if first:
            if len(fields) < 5 or fields[0] != MAGIC or fields[1] != b'%d' % VERSION:
                raise ValueError('not a LogHog seal file (or a newer version)')
            return Start(_digest(fields[2]), _count(fields[3]),
                         b' '.join(fields[4:]).decode('utf-8', 'surrogateescape'))
        if fields[0] in (b'c', b'r') and len(fields) == 5:
            first_line, n_lines, n_bytes = (_count(f) for f in fields[1:4])
            if first_line < 1 or n_lines < 1 or n_bytes < n_lines:
                raise ValueError('an impossible line range')
            return Chunk(fields[0] == b'r', first_line, n_lines, n_bytes, _digest(fields[4]))
        if fields[0] == b's' and len(fields) == 8:
            first_epoch, last_epoch, lines, size, time_us = (_count(f) for f in fields[1:6])
            if last_epoch < first_epoch:
                raise ValueError('a seal whose epochs run backwards')
            return Seal(first_epoch, last_epoch, lines, size, time_us, _digest(fields[6]),
                        _digest(fields[7]))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError('a malformed record: %s' % exc) from None
    raise ValueError('an unknown record')


class SidecarState:
    """What the daemon needs from an existing sidecar to go on: fold its records in
    order with ``take``.  ``last`` (hash), ``lines``, ``size`` (bytes covered), the name,
    and the last Seal (None: none yet)."""

    def __init__(self):
        self.name = None
        self.prev = None
        self.last = None
        self.lines = 0
        self.size = 0
        self.seal = None

    def take(self, record):
        if record.kind == 'start':
            self.name, self.prev, self.last = record.name, record.prev, record.prev
        elif record.kind == 'chunk':
            self.last = record.digest
            self.lines = record.first_line + record.n_lines - 1
            self.size += record.n_bytes
        else:
            self.seal = record


def read_sidecar_state(lines):
    """A SidecarState from the sidecar's lines (an iterable of bytes); a malformed or cut
    last line (a crash while appending) ends it.  Raises ValueError when the first line
    is not a start record."""
    state = SidecarState()
    for number, line in enumerate(lines):
        try:
            record = parse_record(line, number == 0)
        except ValueError:
            if number == 0:
                raise
            break
        state.take(record)
    return state
