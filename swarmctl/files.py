"""Crash-safe files: every file swarmctl writes goes through ``write_atomic``.

A reader sees the old file or the new one, never a half-written one, across crashes, power loss and
SIGKILL: the data goes to a temporary file beside the target, created with ``O_EXCL`` and the final
mode (a stale temporary file is never reused, and a key is never readable by others even for a
moment), is fsynced, renamed over the target, and the directory is fsynced so the rename itself is
durable.

Every file a user hands swarmctl is read through ``read_regular`` (or ``open_regular``): a regular
file of bounded size, or bad input naming it. A link to /dev/zero never ends and a FIFO nobody
writes to never opens; either would hang a command that merely meant to read a stack file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path
from typing import BinaryIO

from swarmctl.errors import InputError

TMP_MARK = ".swarmctl-tmp-"
_NOT_REGULAR = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def open_regular(path: Path) -> BinaryIO:
    """Open a file for reading only if it is a regular file, checked on the opened file (what is
    read is what was checked, even if the path changes meanwhile).

    The open is non-blocking, so a FIFO without a writer is refused instead of waited on; on a
    regular file the flag changes nothing.

    Raises:
        OSError: as open(2) does (FileNotFoundError when there is none), for the caller to word.
        InputError: a directory, FIFO, device or socket, naming the file.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise InputError(f"{_NOT_REGULAR.get(stat.S_IFMT(mode), 'a special file')}, not a regular file", path)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def read_limited(f: BinaryIO, limit: int, path: Path, what: str = "files") -> bytes:
    """All of ``f`` if it holds at most ``limit`` bytes (one more is read to tell); ``what`` (plural)
    names the kind of file in the error.

    Raises:
        InputError: larger than ``limit``, or a read error, naming the file.
    """
    try:
        data = f.read(limit + 1)
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror or e}", path) from None
    if len(data) > limit:
        raise InputError(f"larger than {limit} bytes: swarmctl reads {what} of at most {limit} bytes", path)
    return data


def read_regular(path: Path, limit: int, what: str = "files") -> bytes:
    """The content of a regular file of at most ``limit`` bytes: the one way swarmctl reads a file a
    user gave it (stack, inventory, .env, secret, config, key, backup files).

    Raises:
        InputError: naming the file - missing, unreadable, not a regular file, or too large.
    """
    try:
        with open_regular(path) as f:
            return read_limited(f, limit, path, what)
    except FileNotFoundError:
        raise InputError("no such file", path) from None
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror or e}", path) from None


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
