"""
Free loopback ports, for tests and benchmarks that must name a port
before something listens on it (endpoint strings, child processes).
"""

from __future__ import annotations

import socket


def freePort() -> int:
    """
    A TCP port free on 127.0.0.1 right now (the caller binds it a moment
    later).
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
