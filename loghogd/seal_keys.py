"""The sealing key in the daemon's work folder: created by ``loghogd seal-init``, moved on
one epoch at a time by the daemon, the old key replaced on disk and wiped from memory.

``<workdir>/seal.key`` (mode 0600, owned by the daemon's user) holds::

    loghog-seal-key 1
    epoch <n>
    key <k_n hex>
    t0 <Unix time of epoch 0>
    interval <seconds>

Only k_n, the key of epoch n, is ever on the machine: k_0 (with t0 and the interval) is
printed once by seal-init for the operator to keep elsewhere (sealing.py).
"""

import errno
import os
import stat

from . import sealing
from .errors import ConfigError
from .files import write_atomically

FILE_NAME = 'seal.key'
FILE_MODE = 0o600
_MAGIC = 'loghog-seal-key 1'
# A key file is about 200 bytes: more is not one (and is not read into memory).
MAX_KEY_FILE_BYTES = 4096


def key_path(workdir):
    return os.path.join(workdir, FILE_NAME)


class SealKey:
    """The key of epoch ``epoch`` (a bytearray, wiped when it moves on), with the t0 and
    interval that tie epochs to time, and the file it lives in."""

    def __init__(self, path, epoch, key, t0, interval):
        self.path = path
        self.epoch = epoch
        self.key = bytearray(key)
        self.t0 = t0
        self.interval = interval

    def epoch_of(self, moment):
        return sealing.epoch_of(moment, self.t0, self.interval)

    def epoch_end(self, epoch=None):
        """When ``epoch`` (default: the key's) ends, Unix time."""
        return sealing.epoch_end(self.epoch if epoch is None else epoch, self.t0, self.interval)

    def advance(self, epoch):
        """Move on to the key of ``epoch``: wipe the old one from memory, then write the new
        one (atomically, fsynced, the folder too).  Raises OSError when the file cannot be
        written: the key has moved on in memory all the same, since the seals of the epochs
        before it are made (staying behind would make them again, on every loop pass:
        attack finding A4-1), and the file keeps an older key until the next advance
        writes it (a restart with that file moves on past the epochs sealed: sealer.py)."""
        if epoch <= self.epoch:
            return
        new = bytearray(sealing.key_at(bytes(self.key), self.epoch, epoch))
        old = self.key
        self.key, self.epoch = new, epoch
        old[:] = bytes(len(old))   # best effort: Python may hold copies (see docs/security.md)
        write_atomically(self.path, encode(epoch, new, self.t0, self.interval), FILE_MODE,
                         durable=True)


def encode(epoch, key, t0, interval):
    return ('%s\nepoch %d\nkey %s\nt0 %d\ninterval %d\n'
            % (_MAGIC, epoch, bytes(key).hex(), t0, interval)).encode()


def load(path):
    """The SealKey in ``path``, or None when there is none.  Raises ConfigError for a file
    that is there but unreadable or malformed."""
    try:
        # Without blocking, and a regular file only: a FIFO put in its place would stop
        # the start for ever (as A4-21's seal files); a key is some 200 bytes.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, 'rb') as stream:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, 'not a regular file')
            text = stream.read(MAX_KEY_FILE_BYTES).decode('ascii')
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError('%s: cannot read the sealing key: %s'
                          % (path, getattr(exc, 'strerror', None) or exc)) from None
    lines = text.splitlines()
    try:
        if not lines or lines[0] != _MAGIC:
            raise ValueError('not a LogHog sealing key')
        fields = dict(line.split(' ', 1) for line in lines[1:])
        key = bytes.fromhex(fields['key'])
        if len(key) != sealing.KEY_BYTES:
            raise ValueError('the key is not %d bytes' % sealing.KEY_BYTES)
        epoch, t0, interval = int(fields['epoch']), int(fields['t0']), int(fields['interval'])
        if not 0 <= epoch <= sealing.MAX_T0:
            raise ValueError('epoch out of range')
        sealing.check_key_times(t0, interval)
    except (ValueError, KeyError) as exc:
        raise ConfigError('%s: a damaged sealing key (%s): make a new one with loghogd '
                          'seal-init --force' % (path, exc)) from None
    return SealKey(path, epoch, key, t0, interval)


def create(workdir, interval, now, uid=None, gid=None, force=False):
    """Write a new key of epoch 0 starting at ``now`` (whole seconds) into ``workdir``;
    return the verification key text (sealing.format_verification_key).

    Refuses (FileExistsError) to replace an existing key unless ``force``.  ``uid``/``gid``:
    the daemon's user, who must own the key (it replaces it every epoch).
    """
    path = key_path(workdir)
    if os.path.lexists(path) and not force:
        raise FileExistsError(path)
    os.makedirs(workdir, mode=0o750, exist_ok=True)
    key = sealing.new_key()
    t0 = int(now)
    write_atomically(path, encode(0, key, t0, interval), FILE_MODE, durable=True)
    if uid is not None:
        os.chown(path, uid, gid)
        os.chown(workdir, uid, gid)
    return sealing.format_verification_key(key, t0, interval)


def check(config, table, seal_key=None):
    """Errors (sentences) that stop a daemon from starting or a reload from taking effect:
    a sealed facility without a key, or a key made for another [seal] interval."""
    sealed = [facility for facility in table if facility.sealed]
    if not sealed:
        return []
    path = key_path(config.main.workdir)
    if seal_key is None:
        try:
            seal_key = load(path)
        except ConfigError as exc:
            return exc.errors
    if seal_key is None:
        return ['%s: sealed = yes, but there is no sealing key (%s): run loghogd seal-init '
                'first, and keep the verification key it prints' % (sealed[0].where, path)]
    if seal_key.interval != config.seal.interval:
        return ['%s: [seal] interval = %d, but the sealing key %s was made for %d: set it '
                'back, or make a new key with loghogd seal-init --force'
                % (config.path, config.seal.interval, path, seal_key.interval)]
    return []


def check_unsealed(config, table):
    """For a daemon that started without a key: a reload that seals a facility is
    refused (with a key made since, sealing starts at the next start)."""
    errors = check(config, table)
    sealed = [facility for facility in table if facility.sealed]
    if not errors and sealed:
        errors = ['%s: sealed = yes, but loghogd started without a sealing key: restart it '
                  'to start sealing with %s' % (sealed[0].where, key_path(config.main.workdir))]
    return errors


# -- loghogd seal-init ------------------------------------------------------------------------

EX_REFUSED = 1


def _running_pid(pidfile):
    """The PID of the loghogd holding ``pidfile``, or None."""
    from .daemon import is_loghogd_alive
    try:
        with open(pidfile) as stream:
            pid = int(stream.read().strip() or 0)
    except (OSError, ValueError):
        return None
    return pid if pid > 0 and pid != os.getpid() and is_loghogd_alive(pid) else None


def init_main(argv, default_config):
    """``loghogd seal-init [-c FILE] [--force]``: create the first sealing key in [main]
    workdir and print the verification key once on standard output.  Returns 0, 1 (a key
    exists and no --force, or loghogd is running), 64 (usage), 78 (config) or 71 (the key
    cannot be written)."""
    import argparse
    import sys
    import time

    from .config import load_config
    from .errors import EX_CONFIG, EX_OSERR, EX_USAGE

    parser = argparse.ArgumentParser(
        prog='loghogd seal-init', description='Create the sealing key of sealed facilities in '
        '[main] workdir and print, once, the verification key to keep off this machine '
        '(loghogd verify --key needs it).')
    parser.add_argument('-c', '--config', default=default_config, metavar='FILE',
                        help='loghogd.conf (default: %s)' % default_config)
    parser.add_argument('--force', action='store_true',
                        help='replace an existing key (seals made with it can still be '
                        'verified with its old verification key)')
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EX_USAGE if exc.code else 0
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for error in exc.errors:
            print('loghogd seal-init: %s' % error, file=sys.stderr)
        return EX_CONFIG
    running = _running_pid(config.main.pidfile)
    if running is not None:
        print('loghogd seal-init: loghogd is running (PID %d): stop it first; it replaces the '
              'key every interval and would overwrite a new one' % running, file=sys.stderr)
        return EX_REFUSED
    uid = gid = None
    if config.main.user and os.geteuid() == 0:
        from .daemon import lookup_user
        try:
            uid, gid = lookup_user(config.main.user)
        except Exception as exc:
            print('loghogd seal-init: [main] user = %s: %s' % (config.main.user, exc),
                  file=sys.stderr)
            return EX_CONFIG
    try:
        text = create(config.main.workdir, config.seal.interval, time.time(), uid, gid,
                      args.force)
    except FileExistsError:
        print('loghogd seal-init: %s exists: the daemon seals with it; use --force to replace '
              'it (keep the old verification key to verify what it sealed)'
              % key_path(config.main.workdir), file=sys.stderr)
        return EX_REFUSED
    except OSError as exc:
        print('loghogd seal-init: cannot write %s: %s' % (key_path(config.main.workdir),
                                                          exc.strerror or exc), file=sys.stderr)
        return EX_OSERR
    print(text)
    print('loghogd seal-init: the line above is the verification key: keep it off this '
          'machine (it is not stored here); loghogd verify --key FILE needs it. A running '
          'daemon takes the new key on its next start.', file=sys.stderr)
    return 0
