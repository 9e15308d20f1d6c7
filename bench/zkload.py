"""A ZooKeeper client load for rolling-update tests and benchmarks (kazoo, a real client).

A writer creates a znode every ``every`` seconds through the ensemble's connection string; a
sampler asks each member ``srvr`` every quarter second. Afterwards: which acknowledged writes are
missing (must be none), how many writes failed and for how long at most, and whether two members
were ever down at once (quorum lost).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from itertools import pairwise

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException
from kazoo.handlers.threading import KazooTimeoutError

# kazoo logs every dropped connection; members restarting on purpose make plenty of those
logging.getLogger("kazoo").setLevel(logging.ERROR)


def srvr(host: str, port: int = 2181, timeout: float = 1.0, again: float = 4.0) -> str:
    """A member's mode (leader/follower/standalone), "not serving", or "down" (no connection:
    nothing listens, or the published port leads nowhere; or no answer even after ``again``
    seconds). A member that connects but does not answer within ``timeout`` is asked once more
    with ``again``: on a loaded machine a starved JVM answered late, and it was up, not down."""
    mode = _srvr(host, port, timeout)
    if mode != "slow" or not again:
        return mode
    mode = _srvr(host, port, again)
    return "down" if mode == "slow" else mode


def _srvr(host: str, port: int, timeout: float) -> str:
    try:
        s = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return "down"
    data = b""
    with s:
        try:
            s.sendall(b"srvr")
            while chunk := s.recv(4096):
                data += chunk
        except TimeoutError:
            return "slow"
        except OSError:
            return "down"  # reset: the member went away while it answered
    for line in data.decode(errors="replace").splitlines():
        if line.startswith("Mode:"):
            return line.split(":", 1)[1].strip()
    return "not serving"


@dataclass
class Report:
    acked: int
    failed: int
    missing: list[str]
    longest_failure: float  # seconds of the longest run of failed writes
    samples: int
    quorum_lost: list[tuple[float, dict[str, str]]]  # samples with fewer than a majority up
    leaderless: float  # seconds sampled without any leader
    longest_leaderless: float = 0.0  # the longest single window without a leader
    windows: list[tuple[float, float]] = field(default_factory=list)  # (start, seconds) of each leaderless window


@dataclass
class ZkLoad:
    members: list[str]  # host addresses, client port 2181
    every: float = 0.2
    base: str = field(default_factory=lambda: f"/swarmctl-load/{uuid.uuid4().hex[:8]}")
    acked: list[str] = field(default_factory=list)
    failed: list[tuple[float, str]] = field(default_factory=list)
    samples: list[tuple[float, dict[str, str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._client = KazooClient(
            hosts=",".join(f"{m}:2181" for m in self.members),
            timeout=10.0,
            connection_retry={"max_tries": -1, "delay": 0.1, "max_delay": 1.0},
        )
        self._threads = [
            threading.Thread(target=self._write, daemon=True),
            threading.Thread(target=self._sample, daemon=True),
        ]

    def __enter__(self) -> ZkLoad:
        self._client.start(timeout=30)
        self._client.ensure_path(self.base)
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()
        self._client.stop()
        self._client.close()

    def _write(self) -> None:
        i = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            i += 1
            path = f"{self.base}/w{i:07d}"
            try:
                self._client.create_async(path, b"x").get(timeout=1.0)
                self.acked.append(path)
            except (KazooException, KazooTimeoutError) as e:
                self.failed.append((time.monotonic(), type(e).__name__))
            next_at += self.every
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), {m: srvr(m) for m in self.members}))
            self._stop.wait(0.25)

    def report(self) -> Report:
        checker = KazooClient(hosts=",".join(f"{m}:2181" for m in self.members), timeout=10.0)
        checker.start(timeout=30)
        try:
            present = set(checker.get_children(self.base))
        finally:
            checker.stop()
            checker.close()
        missing = [p for p in self.acked if p.rsplit("/", 1)[1] not in present]
        longest, start, last = 0.0, None, None
        for t, _ in self.failed:
            # a failed write can take its 1 s timeout: consecutive failures are up to ~1.2 s apart
            if start is None or last is None or t - last > self.every + 1.5:
                start = t
            last = t
            longest = max(longest, last - start + self.every)
        majority = len(self.members) // 2 + 1
        lost = [(t, s) for t, s in self.samples if sum(m != "down" for m in s.values()) < majority]
        leaderless = 0.0
        windows: list[tuple[float, float]] = []
        run_start: float | None = None
        for (t1, s1), (t2, _) in pairwise(self.samples):
            if "leader" not in s1.values():
                leaderless += t2 - t1
                run_start = t1 if run_start is None else run_start
            elif run_start is not None:
                windows.append((run_start, t1 - run_start))
                run_start = None
        if run_start is not None:
            windows.append((run_start, self.samples[-1][0] - run_start))
        return Report(len(self.acked), len(self.failed), missing, longest, len(self.samples), lost, leaderless,
                      max((w for _, w in windows), default=0.0), windows)  # fmt: skip
