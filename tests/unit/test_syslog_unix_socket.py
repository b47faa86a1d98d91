"""[syslog] unix_socket at bind time (as root, before privileges are dropped): a live
socket of another program is never taken over (attack finding A3-20), a stale one is
replaced, and the socket gets its mode as it is made, with no chmod() by path that a
symbolic link swapped in could redirect (A3-22)."""

import errno
import os
import socket
import stat

import pytest

from loghogd.errors import StartupError
from loghogd.syslog_listeners import bind_unix_socket


def test_the_socket_is_made_with_its_mode_and_never_chmodded(tmp_path, monkeypatch):
    def no_chmod(*args, **kwargs):
        raise AssertionError('chmod by path as root')
    monkeypatch.setattr(os, 'chmod', no_chmod)
    monkeypatch.setattr(os, 'lchmod', no_chmod, raising=False)
    before = os.umask(0o022)
    try:
        for mode in (0o660, 0o666, 0o600):
            path = tmp_path / ('s%o' % mode)
            sock = bind_unix_socket(str(path), mode, 65536)
            sock.close()
            assert stat.S_IMODE(os.lstat(path).st_mode) == mode
            assert os.umask(0o022) == 0o022   # the daemon's umask is back
    finally:
        os.umask(before)


def test_a_live_socket_is_refused_and_left_alone(tmp_path):
    path = str(tmp_path / 'dev-log')
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_UNIX, kind) as owner:
            owner.bind(path)
            if kind == socket.SOCK_STREAM:
                owner.listen()
            with pytest.raises(StartupError) as caught:
                bind_unix_socket(path, 0o660, 65536)
            assert caught.value.errno == errno.EADDRINUSE and path in str(caught.value)
            assert caught.value.exit_code == 71
            assert stat.S_ISSOCK(os.lstat(path).st_mode)
        os.unlink(path)


def test_a_stale_socket_is_replaced(tmp_path):
    path = str(tmp_path / 'dev-log')
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as old:
        old.bind(path)          # closed: nobody listens any more
    sock = bind_unix_socket(path, 0o660, 65536)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.sendto(b'<14>pl: to the new one', path)
        assert sock.recv(100) == b'<14>pl: to the new one'
    finally:
        sock.close()
