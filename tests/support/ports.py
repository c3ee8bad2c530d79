"""A TCP port for a test: one the operating system just handed out and nothing listens on."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """Bind port 0 on `host`, note the port, close: for a server to start on in the next moments, or for
    a client that must find it closed (nothing listens there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
