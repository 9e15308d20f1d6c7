"""One builder at a time for each of the lab's caches (~/.cache/swarmctl/...): labs side by side (the
test suite's workers) all need the same images, registry binary and VM root image on first use;
the first one builds it, the others wait for it and then find it built."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from swarmctl.errors import TimeoutExpired
from swarmctl.wait import Pending, until

WAIT = 1800.0  # the longest build a cache takes here (a cold VM root image: a few minutes) and then some


@contextlib.contextmanager
def locked(directory: Path, what: str, timeout: float = WAIT) -> Iterator[None]:
    """Hold the cache's lock (an flock on DIR/.lock) for the block, waiting for another builder."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:

        def taken() -> bool | Pending:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return Pending(f"another lab is building {what}")

        def late(seen: str) -> TimeoutExpired:
            return TimeoutExpired(f"{seen}, and did not finish within {timeout:g}s (lock {directory / '.lock'})")

        until(f"the cache of {what}", taken, timeout, first=0.2, cap=2.0, retry=(), error=late)
        yield
    finally:
        os.close(fd)  # releases the lock
