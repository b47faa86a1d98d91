"""Binding: what the kernel actually grants is checked, and a shortfall is said."""

import socket

from loghogd.binding import _check_receive_buffer


def test_a_receive_buffer_smaller_than_asked_gives_a_warning_naming_the_setting():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
        got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        warning = _check_receive_buffer(sock, 64 * 1024 * 1024)
        assert warning is not None
        assert '127.0.0.1:%d' % port in warning and 'udp_receive_buffer' in warning
        assert '%d bytes' % got in warning
        assert _check_receive_buffer(sock, got) is None


def test_ipv6_addresses_are_bracketed_in_the_warning():
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.bind(('::1', 0))
        port = sock.getsockname()[1]
        assert '[::1]:%d' % port in _check_receive_buffer(sock, 1 << 30)
