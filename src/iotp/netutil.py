"""Port selection for `iotp serve`."""

from __future__ import annotations

import socket

from iotp.errors import ConfigurationError

PORT_SEARCH_SPAN = 50


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def choose_port(host: str, port: int, *, explicit: bool, what: str) -> tuple[int, bool]:
    """Return (port, moved). A port given explicitly must be free; a default one moves to
    the next free port."""
    if port == 0 or port_free(host, port):
        return port, False
    if explicit:
        raise ConfigurationError(f"{what} port {port} on {host} is already in use")
    for candidate in range(port + 1, port + PORT_SEARCH_SPAN):
        if port_free(host, candidate):
            return candidate, True
    raise ConfigurationError(f"no free {what} port in {port}..{port + PORT_SEARCH_SPAN}")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
