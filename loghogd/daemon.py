"""Becoming a classic Unix daemon: pidfile, ownership, privilege drop, detaching.

Everything that can fail is done before ``detach`` (the parent's exit status is the
only thing an init script sees), then python-daemon's DaemonContext does the rest in
its own order: umask, working directory, owner change, detach, close other files,
redirect stdio, pidfile.  We give it our own signal map: its default SIGTERM handler
raises SystemExit at whatever line is running, which is not acceptable mid-write.
"""

import errno
import os
import pwd
import signal
import stat

from daemon import DaemonContext
from daemon.pidfile import TimeoutPIDLockFile

from .errors import AlreadyRunning, StartupError

UMASK = 0o027
# The pidfile is readable by all (0644), as init scripts run by non-root users expect.
PIDFILE_UMASK = 0o022


class PidFile:
    """The pidfile through lockfile's PIDLockFile: one running loghogd per pidfile."""

    def __init__(self, path):
        self.path = os.path.abspath(path)
        self.lock = TimeoutPIDLockFile(self.path, acquire_timeout=0)

    def check(self):
        """Refuse to start if a live process holds the pidfile; remove a stale one.

        Raises AlreadyRunning naming the PID.
        """
        try:
            pid = self.lock.read_pid()
        except (OSError, ValueError):
            pid = None
        if pid is None:
            if os.path.exists(self.path):
                self.lock.break_lock()   # empty or garbage: nobody can own it
            return
        if pid != os.getpid() and is_loghogd_alive(pid):
            raise AlreadyRunning(errno.EEXIST, 'already running as PID %d (pidfile %s)'
                                 % (pid, self.path))
        self.lock.break_lock()

    def acquire(self):
        """Write our PID (foreground mode; DaemonContext does it when detaching)."""
        self.check()
        previous = os.umask(PIDFILE_UMASK)
        try:
            self.lock.acquire()
        except Exception as exc:  # lockfile raises its own LockError family
            raise StartupError(errno.EEXIST, 'cannot create pidfile %s: %s' % (self.path, exc))
        finally:
            os.umask(previous)

    def release(self):
        try:
            if self.lock.i_am_locking():
                self.lock.release()
        except Exception:
            pass


def is_loghogd_alive(pid):
    """True if ``pid`` is a running loghogd (not a zombie, not a PID reused by another program)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open('/proc/%d/stat' % pid, 'rb') as stream:
            if stream.read().rsplit(b')', 1)[1].split()[0] in (b'Z', b'X'):
                return False   # killed, waiting for init to reap it
        with open('/proc/%d/cmdline' % pid, 'rb') as stream:
            return b'loghogd' in stream.read()
    except (OSError, IndexError):
        return True   # no /proc: trust kill(0)


def lookup_user(name):
    """Return (uid, gid, home) of ``name``; raise StartupError if there is no such user."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise StartupError(errno.ENOENT, '[main] user: no such user %r' % name) from None
    return entry.pw_uid, entry.pw_gid


def give_to_user(paths, uid, gid):
    """chown the daemon's own folders (and what is in them) to the user it will run as.

    Only as root, and only where the owner differs, so a large log tree costs a walk of
    its folders once at start-up.  The group is changed only where it is root's, so an
    administrator's choice (Debian's /var/log/loghogd is loghog:adm) is kept.

    The walk goes by file descriptor (issue 15): each folder is opened with O_NOFOLLOW
    relative to its parent's descriptor, and what is in it is changed relative to that
    descriptor without following symbolic links.  A path walk let a compromised daemon
    account swap a folder for a symbolic link between the listing and the chown, and get
    root to chown root's files.  Symbolic links are left alone.
    """
    for top in paths:
        try:
            fd = os.open(top, _OPEN_NO_FOLLOW)
        except FileNotFoundError:
            continue
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                continue   # a symbolic link: not ours to give
            raise StartupError(exc.errno, 'cannot give %s to uid %d: %s'
                               % (top, uid, exc.strerror)) from None
        try:
            _give_fd(fd, top, uid, gid)
        finally:
            os.close(fd)


# Opens a folder or a file as it is, never through a symbolic link, without blocking on
# a FIFO.
_OPEN_NO_FOLLOW = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def _give_fd(fd, path, uid, gid):
    """Give the open file or folder ``fd`` (named ``path`` in errors), and if a folder
    what is in it, to ``uid``."""
    try:
        info = os.fstat(fd)
        if info.st_uid != uid or info.st_gid == 0:
            os.fchown(fd, uid, gid if info.st_gid == 0 else -1)
        if not stat.S_ISDIR(info.st_mode):
            return
        names = os.listdir(fd)
    except OSError as exc:
        raise StartupError(exc.errno, 'cannot give %s to uid %d: %s'
                           % (path, uid, exc.strerror)) from None
    for name in names:
        _give_entry(fd, name, os.path.join(path, name), uid, gid)


def _give_entry(folder_fd, name, path, uid, gid):
    """One entry of an open folder: a folder is opened and walked, anything else changed
    in place; symbolic links and entries gone meanwhile are skipped."""
    try:
        info = os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
        if stat.S_ISLNK(info.st_mode):
            return
        if stat.S_ISDIR(info.st_mode):
            fd = os.open(name, _OPEN_NO_FOLLOW | os.O_DIRECTORY, dir_fd=folder_fd)
            try:
                _give_fd(fd, path, uid, gid)
            finally:
                os.close(fd)
        elif info.st_uid != uid or info.st_gid == 0:
            os.chown(name, uid, gid if info.st_gid == 0 else -1, dir_fd=folder_fd,
                     follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
            return   # gone, or swapped for a link or a file since it was listed: skipped
        raise StartupError(exc.errno, 'cannot give %s to uid %d: %s'
                           % (path, uid, exc.strerror)) from None


def drop_privileges(name, uid, gid):
    """Become ``name`` (uid, gid and that user's supplementary groups), for good.

    Done by us rather than by DaemonContext: python-daemon 3.x with ``initgroups=True``
    sets the supplementary groups but never the primary gid, leaving the process in
    group root (seen with 3.1.2).
    """
    if uid == os.geteuid() and gid == os.getegid():
        return
    try:
        os.initgroups(name, gid)
        os.setgid(gid)
        os.setuid(uid)
    except OSError as exc:
        raise StartupError(exc.errno, 'cannot switch to user %s: %s' % (name, exc.strerror)) from None


def detach(pidfile, working_directory, files_preserve):
    """Detach into the background; returns in the daemon process (the parent exits 0).

    ``files_preserve`` lists the files and sockets opened before detaching (listeners,
    log files) that must stay open.  Drop privileges first (``drop_privileges``).
    """
    context = DaemonContext(
        working_directory=working_directory,
        umask=PIDFILE_UMASK,   # the pidfile is created inside open(); UMASK is set after
        detach_process=True,
        files_preserve=files_preserve,
        pidfile=pidfile.lock,
        # Only job-control signals are ours to ignore here; the event loop installs
        # SIGTERM/SIGINT/SIGHUP/SIGUSR1 handlers that only record the signal (loop.py).
        signal_map={signal.SIGTTIN: None, signal.SIGTTOU: None, signal.SIGTSTP: None},
    )
    context.open()
    os.umask(UMASK)
    return context
