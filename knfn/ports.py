"""Loopback ports: is one free, and find one that is.

Ports handed out here are taken *below* the kernel's ephemeral range: a port chosen now and bound
a moment later by a child could otherwise be grabbed in between as the source port of some
outgoing connection (SeaweedFS, for one, connects between its components while it starts).
"""

from __future__ import annotations

import errno
import random
import socket
from pathlib import Path

from knfn.errors import PortInUseError

_FLOOR = 20000
_handed_out: set[int] = set()


def is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on host:port and we could bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _ephemeral_start() -> int:
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return max(low, _FLOOR + 1000)


def free_port(host: str = "127.0.0.1") -> int:
    """A free port outside the ephemeral range, not handed out before by this process."""
    ceiling = _ephemeral_start()
    for _ in range(200):
        port = random.randrange(_FLOOR, ceiling)
        if port not in _handed_out and is_free(port, host):
            _handed_out.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        chosen: int = sock.getsockname()[1]
    return chosen


def bind_listeners(wanted: dict[str, int], host: str = "127.0.0.1") -> dict[int, socket.socket]:
    """Bind and listen on each named port now, so it is held until the server serves on it.

    Checking a port and binding it later races; binding it is the check. It listens at once
    because a socket that is only bound does not keep out others that bind with SO_REUSEADDR
    (as most servers do); connections made meanwhile wait in the backlog. The error names the
    option of the first port that is taken; sockets bound before it are closed.
    """
    bound: dict[int, socket.socket] = {}
    for what, port in wanted.items():
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # The same options aiohttp's TCPSite uses: a port in TIME_WAIT is reusable at once.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            if port in bound:
                raise OSError(f"port {port} is given twice")
            sock.bind((host, port))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            for other in bound.values():
                other.close()
            busy = exc.errno == errno.EADDRINUSE
            reason = "is already in use" if busy else f"cannot be bound ({exc.strerror or exc})"
            raise PortInUseError(f"{what}: port {port} on {host} {reason}") from None
        bound[port] = sock
    return bound
