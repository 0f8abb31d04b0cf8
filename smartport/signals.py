"""Clean shutdown of our long-running processes on SIGTERM/SIGINT; crashes that end them."""

from __future__ import annotations

import ctypes
import faulthandler
import signal
import threading
from types import FrameType

# Signals that mean a thread crashed; their default action ends the process.
FATAL_SIGNALS = (signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGILL, signal.SIGFPE,
                 signal.SIGSYS, signal.SIGTRAP)
_SIG_DFL = 0
_libc = ctypes.CDLL(None)


def stop_on_signals(stop: threading.Event) -> None:
    """Set ``stop`` on SIGTERM or SIGINT (only the main thread may install handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)


def crashes_end_the_process() -> None:
    """Make a crash in any thread end the process, after printing every thread's traceback.

    chDB installs ClickHouse's fatal-signal handlers whenever it starts its engine (its first
    connection), and they freeze the crashed thread while the rest of the process runs on: a
    crashed librdkafka thread would leave a process that looks alive and ready but is deaf.
    Call after every ``chdb.connect``; from any thread (the signal module's handlers may only
    be set from the main one, so this goes through libc).
    """
    faulthandler.disable()
    for fatal in FATAL_SIGNALS:
        _libc.signal(fatal, _SIG_DFL)
    faulthandler.enable()  # dumps the tracebacks, then re-raises with the default action
