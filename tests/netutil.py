"""Network helpers shared by tests that start servers (Ray heads, dashboards)."""

from __future__ import annotations

import socket


def free_ports(n: int, host: str = "") -> list[int]:
    """``n`` distinct TCP ports free right now (all held open together, so none repeats)."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind((host, 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports
