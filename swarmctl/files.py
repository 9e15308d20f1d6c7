"""Crash-safe files: every file swarmctl writes goes through ``write_atomic``.

A reader sees the old file or the new one, never a half-written one, across crashes, power loss and
SIGKILL: the data goes to a temporary file beside the target, created with ``O_EXCL`` and the final
mode (a stale temporary file is never reused, and a key is never readable by others even for a
moment), is fsynced, renamed over the target, and the directory is fsynced so the rename itself is
durable.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

TMP_MARK = ".swarmctl-tmp-"


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` (str is written as UTF-8), crash-safe; ``mode`` is the file's mode."""
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TMP_MARK}{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        try:
            os.fchmod(fd, mode)  # the umask may have narrowed it; never widened beyond mode
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def remove_durably(path: Path) -> None:
    """Remove a file (if there) and make the removal durable."""
    try:
        path.unlink()
    except FileNotFoundError:
        return
    fsync_dir(path.parent)


def create_exclusive(path: Path, data: bytes | str, mode: int = 0o600) -> None:
    """Create ``path`` with ``data``, crash-safe, and only if it does not exist (FileExistsError)."""
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TMP_MARK}{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        try:
            os.fchmod(fd, mode)
            os.write(fd, raw)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(tmp, path)  # atomic, and refuses an existing path
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    fsync_dir(path.parent)


def finish_atomic(tmp: Path, path: Path) -> None:
    """Make a file written by someone else (a tar, mmdebstrap's output) durable, then rename it into place."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)
