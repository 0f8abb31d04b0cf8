"""Starting, finding and stopping the stack's background processes (pid files, logs, ports)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from smartport.errors import StackError


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def read_pid(pid_path: Path) -> int | None:
    """The pid in ``pid_path`` if that process is still alive, else None."""
    try:
        pid = int(pid_path.read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    except PermissionError:
        return pid
    return pid


def spawn(argv: Sequence[str], log_path: Path, pid_path: Path, cwd: Path | None = None) -> int:
    """Start ``argv`` detached from our session, logging to ``log_path``; returns its pid."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,  # survives our exit; stopped by `stack down`
        )
    pid_path.write_text(f"{process.pid}\n")
    return process.pid


def stop(pid_path: Path, timeout: float = 20.0) -> bool:
    """SIGTERM the process in ``pid_path``, SIGKILL it after ``timeout``. False if none ran."""
    pid = read_pid(pid_path)
    if pid is None:
        pid_path.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
    pid_path.unlink(missing_ok=True)
    return True


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        # Reap it if it is our child; a zombie would otherwise look alive.
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_until(
    check: Callable[[], bool],
    *,
    timeout: float,
    service: str,
    log_path: Path,
    pid_path: Path | None = None,
) -> None:
    """Poll ``check`` until it passes; raise a StackError naming the service and its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if pid_path is not None and read_pid(pid_path) is None:
            raise StackError(
                f"{service} exited during start-up; see its log {log_path}:\n{tail(log_path)}"
            )
        time.sleep(0.25)
    raise StackError(
        f"{service} did not become healthy within {timeout:.0f} s; see its log {log_path}:\n"
        f"{tail(log_path)}"
    )


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log written)"
