"""logs: every task's log, read on the task's own node over SSH (``docker logs`` there) and merged
here - not ``docker service logs``, whose stream from a manager aborts as a whole when one node is
lost ("incomplete log stream", moby/moby#33183).

Which containers to read is pure (``sources``): each slot's task that counts now (for global
services, each node's), through the newest task of it that has a container - so a task that keeps
failing shows its last attempt. Reading is one ``docker logs --timestamps`` per container, each on
a channel of its host's one SSH connection; lines are ordered by the engines' timestamps (exactly,
in nanoseconds) within what has arrived.

Following (``-f``): a reader that ends is told apart by asking the host's engine (a container that
ended on a live node is just gone; its replacement is found by the next read of the tasks). A node
whose engine or SSH does not answer is named once, asked again every ``RETRY`` seconds, named
again when it answers, and its tasks' logs go on from the last line seen (``--since``).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import select
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from swarmctl.errors import HostError, InputError, SwarmctlError
from swarmctl.facts.tasks import current, parse_time
from swarmctl.ops.ps import Placed, Placement
from swarmctl.transport.engine import Session

log = logging.getLogger(__name__)

RETRY = 2.0  # seconds between reads of the tasks, and between asks of a lost node, while following
HOLD = 0.2  # seconds a line waits for lines of other nodes that are older
IDLE = 60.0  # without -f: the longest a node may send nothing before it is named as failed
PROBE_TIMEOUT = 5.0


@dataclass(frozen=True)
class LogLine:
    time_ns: int  # 0 when the line had no timestamp
    time: str  # as the engine wrote it
    source: Placed
    stream: str  # stdout | stderr
    text: str

    def json(self) -> dict[str, Any]:
        t = self.source.task
        return {"time": self.time, "service": t.short, "slot": t.slot or None, "host": self.source.host,
                "stream": self.stream, "line": self.text}  # fmt: skip


# -- pure ----------------------------------------------------------------------------------------


_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|ms|s|m|h))+$")
_UNIX = re.compile(r"^\d+(\.\d{1,9})?$")
_DATE = re.compile(r"^\d{4}-\d\d-\d\d([T ]\d\d:\d\d(:\d\d(\.\d{1,9})?)?(Z|[+-]\d\d:\d\d)?)?$")


def check_since(value: str) -> str:
    """``--since``: a duration (``10m``, ``1h30m``), an RFC 3339 date or time, or a Unix time, as
    ``docker logs`` takes them (pure).

    Raises:
        InputError: anything else.
    """
    v = value.strip()
    if _DURATION.match(v) or _UNIX.match(v) or _DATE.match(v):
        return v
    raise InputError(f"--since {value!r}: give a duration (10m, 1h30m), a time (2026-12-05T10:00:00Z) or a Unix time")


def check_tail(value: str) -> str:
    """``--tail``: a number of lines, or ``all`` (pure)."""
    if value == "all" or (value.isdigit() and len(value) < 10):
        return value
    raise InputError(f"--tail {value!r}: give a number of lines, or all")


def sources(placement: Placement) -> list[Placed]:
    """The containers to read (pure): for each slot (global services: each node), the newest task
    that has a container, preferring the one swarm wants running (``facts.tasks.current`` among the
    tasks with a container) - so a task that keeps failing shows its last attempt."""
    chosen = current(t for t in placement.tasks if t.container_id and t.node_id)
    # only nodes the inventory names can be reached: the others are named by ``outside``
    out = [Placed(t, placement.names[t.node_id]) for t in chosen if t.node_id in placement.names]
    return sorted(out, key=lambda s: (s.task.stack, s.task.short, s.task.slot, s.host))


def outside(placement: Placement) -> list[str]:
    """The running tasks on nodes the inventory does not name (``task@node``): their logs cannot be
    read, since swarmctl reaches a node only as an inventory host (pure)."""
    return sorted({f"{t.name}@{placement.host_of(t)}" for t in placement.tasks
                   if t.running and t.node_id and t.node_id not in placement.names})  # fmt: skip


def split(raw: str) -> tuple[int, str, str]:
    """A ``docker logs --timestamps`` line -> (nanoseconds, the time as written, the line) (pure)."""
    stamp, sep, text = raw.partition(" ")
    ns = parse_time(stamp) if sep else None
    if ns is None:
        return 0, "", raw
    return ns, stamp, text


def merged(lines: Iterable[LogLine]) -> list[LogLine]:
    """Lines in time order (pure); lines without a time keep their place after the one before."""
    out = list(lines)
    last = 0
    keyed = []
    for i, line in enumerate(out):
        last = line.time_ns or last
        keyed.append((last, i, line))
    keyed.sort(key=lambda k: (k[0], k[1]))
    return [k[2] for k in keyed]


def argv(container: str, tail: str = "", since: str = "", follow: bool = False) -> list[str]:
    out = ["docker", "logs", "--timestamps"]
    if tail and tail != "all":
        out += ["--tail", tail]
    if since:
        out += ["--since", since]
    if follow:
        out.append("--follow")
    return [*out, container]


def next_since(time_text: str) -> str:
    """The ``--since`` that resumes after a line of this time: Docker's since is inclusive, so one
    nanosecond later, as seconds.nanoseconds (pure)."""
    ns = parse_time(time_text)
    if ns is None:
        return ""
    ns += 1
    return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"


# -- reading -------------------------------------------------------------------------------------


class _Ended:
    """A reader's end: how its command ended, or the error that ended it."""

    def __init__(self, source: Placed, rc: int, error: str):
        self.source, self.rc, self.error = source, rc, error


class Readers:
    """``docker logs`` of many containers, each on its host's SSH connection, lines into one queue."""

    def __init__(self, session: Session):
        self.session = session
        self.queue: queue.Queue[LogLine | _Ended] = queue.Queue()
        self.stop = threading.Event()
        self.last: dict[str, str] = {}  # container ID -> the time of its last line seen
        self.said: dict[str, str] = {}  # container ID -> the docker CLI's last message (an error)

    def start(self, source: Placed, command: list[str]) -> None:
        threading.Thread(target=self._read, args=(source, command), daemon=True,
                         name=f"logs {source.label}").start()  # fmt: skip

    def _read(self, source: Placed, command: list[str]) -> None:
        rc, error = -1, ""
        try:
            rc = self._pump(source, command)
            if rc != 0:
                error = self.said.get(source.task.container_id, "") or f"docker logs exited {rc}"
        except HostError as e:
            error = e.message
        except Exception as e:  # paramiko's own errors, a channel closed under it (Ctrl-C)
            error = f"{type(e).__name__}: {e}"
        self.queue.put(_Ended(source, rc, error))

    def _pump(self, source: Placed, command: list[str]) -> int:
        channel = self.session.pool.connection(source.host).open_channel(command)
        partial = {"stdout": b"", "stderr": b""}
        try:
            channel.shutdown_write()
            while not self.stop.is_set():
                got = False
                for stream, ready, recv in (("stdout", channel.recv_ready, channel.recv),
                                            ("stderr", channel.recv_stderr_ready, channel.recv_stderr)):  # fmt: skip
                    if ready():
                        got = True
                        data = partial[stream] + recv(65536)
                        *whole, partial[stream] = data.split(b"\n")
                        for raw in whole:
                            self._line(source, stream, raw)
                if got:
                    continue
                if channel.exit_status_ready() or channel.closed:
                    break  # nothing was ready above: the output is drained
                select.select([channel], [], [], 0.5)
            for stream, rest in partial.items():
                if rest:
                    self._line(source, stream, rest)
            return channel.recv_exit_status() if channel.exit_status_ready() else -1
        finally:
            channel.close()

    def _line(self, source: Placed, stream: str, raw: bytes) -> bool:
        """A line of the container's log (True), or - on stderr without a time - the docker CLI's
        own message (False: kept as why the reader ended, not printed as the task's)."""
        ns, stamp, text = split(raw.decode("utf-8", "replace").rstrip("\r"))
        if not stamp and stream == "stderr":
            self.said[source.task.container_id] = text
            return False
        if stamp:
            self.last[source.task.container_id] = stamp
        self.queue.put(LogLine(ns, stamp, source, stream, text))
        return True

    def probe(self, host: str) -> str:
        """ "" when the host's engine answers, else why not."""
        try:
            res = self.session.pool.connection(host).run(["docker", "version", "--format", "{{.Server.Version}}"],
                                                         timeout=PROBE_TIMEOUT)  # fmt: skip
        except HostError as e:
            return e.message
        if res.rc != 0:
            return (res.stderr.strip().splitlines() or [f"docker version exited {res.rc}"])[-1]
        return ""


def read(
    session: Session, chosen: Sequence[Placed], tail: str = "", since: str = ""
) -> tuple[list[LogLine], dict[str, str]]:
    """Every chosen container's log up to now, in time order, and the hosts that failed (and why)."""
    readers = Readers(session)
    for s in chosen:
        readers.start(s, argv(s.task.container_id, tail, since))
    lines: list[LogLine] = []
    failed: dict[str, str] = {}
    left = len(chosen)
    while left:
        try:
            item = readers.queue.get(timeout=IDLE)
        except queue.Empty:
            readers.stop.set()
            for s in chosen:
                failed.setdefault(s.host, f"sent nothing for {IDLE:g}s")
            break
        if isinstance(item, LogLine):
            lines.append(item)
            continue
        left -= 1
        if item.error:
            failed[item.source.host] = f"{item.source.label}: {item.error}"
    return merged(lines), failed


def follow(
    session: Session,
    placement: Placement,
    refresh: Callable[[], Placement],
    emit: Callable[[LogLine], None],
    tell: Callable[[str], None],
    tail: str = "",
    since: str = "",
    clock: Callable[[], float] = time.monotonic,
    stop: threading.Event | None = None,
) -> None:
    """Print every chosen container's log and follow it, until interrupted (Ctrl-C) or ``stop``.

    ``refresh`` reads the tasks again (every ``RETRY`` s): new tasks' containers are followed from
    their first line. A node that stops answering is named once through ``tell``, asked again every
    ``RETRY`` s, named again when it answers.
    """
    readers = Readers(session)
    following: dict[str, Placed] = {}  # container ID -> source, while its reader runs
    known: set[str] = set()  # containers read since the start: a new one is read from its first line
    lost: dict[str, str] = {}  # host -> why
    probing: set[str] = set()
    lock = threading.Lock()
    pending: list[tuple[float, LogLine]] = []

    def begin(s: Placed, first: bool) -> None:
        cid = s.task.container_id
        resume = next_since(readers.last[cid]) if cid in readers.last else ""
        if resume:
            command = argv(cid, since=resume, follow=True)
        elif first:
            command = argv(cid, tail, since, follow=True)
        else:
            command = argv(cid, follow=True)  # a container that came after the start: all of it
        following[cid] = s
        known.add(cid)
        readers.start(s, command)

    def check(host: str) -> None:
        """Ask the host's engine (in a thread of its own): lost, or back."""

        def run() -> None:
            why = readers.probe(host)
            with lock:
                probing.discard(host)
                if why and host not in lost:
                    lost[host] = why
                    tell(f"{host}: lost ({why}); following the other nodes")
                elif not why and host in lost:
                    del lost[host]
                    tell(f"{host}: back; following it again")

        with lock:
            if host in probing:
                return
            probing.add(host)
        threading.Thread(target=run, daemon=True, name=f"probe {host}").start()

    def start_new(found: Sequence[Placed], first: bool) -> None:
        with lock:
            down = set(lost)
        for s in found:
            if s.task.container_id not in following and s.host not in down and s.task.running:
                begin(s, first or s.task.container_id in known)

    start_new(sources(placement), first=True)
    next_refresh = clock() + RETRY
    reading_failed = False
    try:
        while stop is None or not stop.is_set():
            try:
                item = readers.queue.get(timeout=0.1)
            except queue.Empty:
                item = None
            now = clock()
            if isinstance(item, LogLine):
                pending.append((now, item))
            elif isinstance(item, _Ended):
                following.pop(item.source.task.container_id, None)
                check(item.source.host)
            # lines older than HOLD go out, in time order with the others that came meanwhile
            ready = [line for at, line in pending if now - at >= HOLD]
            if ready:
                pending = [(at, line) for at, line in pending if now - at < HOLD]
                for line in merged(ready):
                    emit(line)
            if now >= next_refresh:
                next_refresh = now + RETRY
                with lock:
                    down = list(lost)
                for host in down:
                    check(host)
                try:
                    placement = refresh()
                except SwarmctlError as e:
                    if not reading_failed:
                        tell(f"cannot read the tasks from a manager ({e}); following the containers found before")
                    reading_failed = True
                    continue
                if reading_failed:
                    tell("reading the tasks again")
                    reading_failed = False
                start_new(sources(placement), first=False)
    finally:
        readers.stop.set()
        with contextlib.suppress(Exception):
            for line in merged(line for _, line in pending):
                emit(line)
