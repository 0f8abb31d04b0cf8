"""Clean shutdown of our long-running processes on SIGTERM/SIGINT."""

from __future__ import annotations

import signal
import threading
from types import FrameType


def stop_on_signals(stop: threading.Event) -> None:
    """Set ``stop`` on SIGTERM or SIGINT (only the main thread may install handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
