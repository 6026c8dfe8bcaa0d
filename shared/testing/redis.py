"""Is a Redis answering at an address? (Used by the test fixtures and the benchmarks.)"""

from __future__ import annotations

import socket


def redis_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when ``PING`` on ``host:port`` gets ``+PONG`` within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False
