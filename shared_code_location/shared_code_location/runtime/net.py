"""Loopback helpers for the CLI, the load test and the tests that start servers. Standard library only."""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Callable


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether `port` can be bound on `host` now (connections of a server that just stopped, in TIME_WAIT, do not
    count: servers bind with SO_REUSEADDR too)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
        return True


def wait_until(ready: Callable[[], bool], timeout: float, alive: Callable[[], bool] = lambda: True) -> bool:
    """Poll `ready()` every 0.2 s until it is true (True), `timeout` seconds pass or `alive()` turns false (False).

    `ready` may raise `OSError` (a server not listening yet): that counts as not ready.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        try:
            if ready():
                return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def http_ok(url: str) -> bool:
    """Whether GET `url` answers 2xx within a second."""
    with urllib.request.urlopen(url, timeout=1) as response:
        return 200 <= response.status < 300
