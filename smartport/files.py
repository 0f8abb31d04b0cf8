"""Reading and writing files given by users, safely: bounded reads, no symlink followed."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from smartport.errors import InputRejected


def read_bounded(path: Path, limit: int, what: str) -> bytes:
    """``path``'s bytes, or InputRejected when it is missing, unreadable or over ``limit``."""
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise InputRejected(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(data) > limit:
        raise InputRejected(f"{path} is over {limit:,} bytes: too large for {what}")
    return data


def write_new(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``path`` (replacing a regular file) without following a symlink planted there."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputRejected(f"{path} is a symbolic link: refusing to write through it; "
                                "remove it and try again") from None
        raise InputRejected(f"cannot write {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), mode)  # O_CREAT's mode does not apply to an existing file
        handle.write(data)
