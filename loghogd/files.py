"""Small file-system helpers shared by the daemon's modules."""

import os
import tempfile


def write_atomically(path, data, mode=None, durable=False):
    """Replace ``path`` with ``data`` (bytes) through a temporary file and a rename.

    Readers see the old file or the new one, never a part.  ``mode``: the new file's
    permissions (else mkstemp's 0600).  ``durable``: fsync the file before the rename and
    the folder after it, so that a crash of the machine, too, leaves the old content or
    the new; without it a crash may lose what is rewritten soon anyway.  Raises OSError.
    """
    folder, name = os.path.split(path)
    # A leading dot and a random tail: never mistaken for the real file (node_exporter
    # only reads names ending in .prom) and never clashing with another writer's.
    fd, temporary = tempfile.mkstemp(prefix='.%s.' % name, dir=folder or '.')
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, 'wb') as stream:
            stream.write(data)
            if durable:
                stream.flush()
                os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    if durable:
        _sync_folder(folder or '.')


def _sync_folder(folder):
    folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(folder_fd)
    except OSError:
        pass     # a file system that cannot sync folders: the rename is all there is
    finally:
        os.close(folder_fd)


def format_address(host, port):
    """``127.0.0.1:5566`` or ``[::1]:5566``."""
    return '[%s]:%s' % (host, port) if ':' in host else '%s:%s' % (host, port)
