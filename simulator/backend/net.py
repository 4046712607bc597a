"""Waiting for a server this process started to listen."""

from __future__ import annotations

import socket
import subprocess
import time
from typing import Any


def wait_for_port(
    host: str, port: int, timeout: float, *, alive: subprocess.Popen[Any] | None = None
) -> bool:
    """True once ``host:port`` accepts a connection; False after ``timeout`` seconds, or as soon
    as the process ``alive`` has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and alive.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False
