from __future__ import annotations

import socket

import pytest

from iotp.errors import ConfigurationError
from iotp.netutil import choose_port


def _occupied() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, sock.getsockname()[1]


def test_default_port_taken_moves_to_next_free() -> None:
    sock, port = _occupied()
    with sock:
        chosen, moved = choose_port("127.0.0.1", port, explicit=False, what="MQTT")
    assert moved
    assert chosen > port


def test_explicit_port_taken_is_an_error() -> None:
    sock, port = _occupied()
    with sock, pytest.raises(ConfigurationError, match=f"MQTT port {port} .* in use"):
        choose_port("127.0.0.1", port, explicit=True, what="MQTT")


def test_free_port_is_kept() -> None:
    sock, port = _occupied()
    sock.close()
    assert choose_port("127.0.0.1", port, explicit=True, what="HTTP") == (port, False)
