"""Waiting for a condition that another process makes true (a drain, a readiness line)."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.5) -> bool:
    """Ask ``condition()`` every ``interval`` seconds until it is true or ``timeout`` passed;
    its last answer, so a condition met at the deadline still counts."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True
