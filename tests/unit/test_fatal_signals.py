"""A crash in any thread ends the process, with every thread's Python traceback, also once chDB
is loaded: ClickHouse's own fatal-signal handlers, which importing chDB installs, leave the
crashed thread frozen and the rest of the process running (a sink alive, ready and deaf)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from smartport.settings import PROJECT_ROOT

# A store opened and used by both of its sessions, then a fatal signal to one worker thread:
# what a crash in a librdkafka or chDB thread looks like to the process.
CRASHING_CHILD = """
import ctypes, signal, sys, threading, time
from streams.analytics.store import open_store

store = open_store(sys.argv[1])
store.query("SELECT 1")
store.read("SELECT 1")

def worker():
    while True:
        time.sleep(0.05)

thread = threading.Thread(target=worker, daemon=True)
thread.start()
ctypes.CDLL(None).pthread_kill(ctypes.c_ulong(thread.ident), getattr(signal, sys.argv[2]))
time.sleep(20)
print("still running 20 s after the crash")
"""


@pytest.mark.parametrize("fatal", ["SIGSEGV", "SIGABRT", "SIGBUS"])
def test_a_crashed_thread_ends_a_process_with_chdb_open(tmp_path: Path, fatal: str) -> None:
    finished = subprocess.run(
        [sys.executable, "-c", CRASHING_CHILD, f"chdb://{tmp_path / 'chdb'}", fatal],
        check=False, capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT)
    output = finished.stdout + finished.stderr
    assert "still running" not in finished.stdout, output
    assert finished.returncode == -getattr(signal, fatal), output
    assert "Fatal Python error" in finished.stderr, output
    assert "in worker" in finished.stderr, output  # the crashed thread's traceback
