"""Tasks as a manager reports them: which service and slot, on which node, in which state, running
which image and container - each task parsed once, here (pure, but for ``read_tasks``)."""

from __future__ import annotations

import calendar
import datetime
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from swarmctl import labels
from swarmctl.facts.services import mode_of
from swarmctl.transport.engine import Engine

# task states in the order a task goes through them (moby api/types/swarm/task.go); the ones from
# "complete" on are final
STATES = (
    "new", "allocated", "pending", "assigned", "accepted", "preparing", "ready", "starting", "running",
    "complete", "shutdown", "failed", "rejected", "remove", "orphaned",
)  # fmt: skip
FINAL = frozenset(STATES[STATES.index("complete") :])


@dataclass(frozen=True)
class TaskView:
    """One task, as `ps`, `logs` and `exec` see it."""

    id: str
    service_id: str
    service: str  # the service's full name (stack_service)
    stack: str  # "" for a service outside any stack
    slot: int  # replicated services: the slot (1..); global ones: 0 (the node is the slot)
    node_id: str
    desired: str  # what swarm wants: running | shutdown | ...
    state: str
    since: str  # when it reached its state (RFC 3339, the engine's clock)
    error: str  # the last error (Status.Err), else ""
    message: str  # Status.Message ("started", "preparing", ...)
    image: str  # as the spec names it, without the digest
    digest: str  # sha256:... the image was pinned to, else ""
    container_id: str  # "" until the node made the container
    spec: str  # current | previous | older: the service's spec the task runs (see ``spec_of``)
    exit_code: int | None = None

    @property
    def short(self) -> str:
        """The service's name inside its stack (``zookeeper-1`` of ``kafka_zookeeper-1``)."""
        return self.service.removeprefix(f"{self.stack}_") if self.stack else self.service

    @property
    def name(self) -> str:
        """How messages name the task: ``service.slot`` (``service@node`` for global services is
        the caller's, who knows the host)."""
        return f"{self.short}.{self.slot}" if self.slot else self.short

    @property
    def running(self) -> bool:
        return self.desired == "running" and self.state == "running"

    @property
    def short_digest(self) -> str:
        return self.digest.removeprefix("sha256:")[:12]


def split_image(ref: str) -> tuple[str, str]:
    """``repo:tag@sha256:...`` -> (``repo:tag``, ``sha256:...``) (pure)."""
    name, _, digest = ref.partition("@")
    return name, digest


def spec_of(task_spec: Mapping[str, Any], service: Mapping[str, Any]) -> str:
    """Which of its service's specs the task runs: ``current`` (the service's task template now),
    ``previous`` (the one before the last update: what a rollback returns to) or ``older`` (pure).

    Swarm copies the task template into each task it makes; the API then shows the service's with
    its defaults filled in (``Runtime: container``) and the task's without them."""
    spec, previous = service.get("Spec") or {}, service.get("PreviousSpec") or {}
    mine = _without_defaults(task_spec)
    if mine == _without_defaults(spec.get("TaskTemplate") or {}):
        return "current"
    if previous and mine == _without_defaults(previous.get("TaskTemplate") or {}):
        return "previous"
    return "older"


_DEFAULTS = {"Runtime": "container", "ForceUpdate": 0}


def _without_defaults(template: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in template.items() if _DEFAULTS.get(k, object()) != v}


def task_view(raw: Mapping[str, Any], services: Mapping[str, Mapping[str, Any]]) -> TaskView:
    """One task of ``GET /tasks``; ``services``: service ID -> the service (``GET /services``)."""
    status = raw.get("Status") or {}
    container = status.get("ContainerStatus") or {}
    spec = raw.get("Spec") or {}
    service = services.get(str(raw.get("ServiceID", ""))) or {}
    sspec = service.get("Spec") or {}
    image, digest = split_image(str((spec.get("ContainerSpec") or {}).get("Image", "")))
    global_mode = mode_of(sspec).startswith("global")
    exit_code = container.get("ExitCode")
    return TaskView(
        id=str(raw.get("ID", "")),
        service_id=str(raw.get("ServiceID", "")),
        service=str(sspec.get("Name", "")) or str(raw.get("ServiceID", ""))[:12],
        stack=str((sspec.get("Labels") or {}).get(labels.NAMESPACE, "")),
        slot=0 if global_mode else int(raw.get("Slot") or 0),
        node_id=str(raw.get("NodeID", "")),
        desired=str(raw.get("DesiredState", "")),
        state=str(status.get("State", "")),
        since=str(status.get("Timestamp", "")),
        error=str(status.get("Err", "")),
        message=str(status.get("Message", "")),
        image=image,
        digest=digest,
        container_id=str(container.get("ContainerID", "")),
        spec=spec_of(spec, service) if service else "older",
        exit_code=int(exit_code) if isinstance(exit_code, int) and status.get("State") in FINAL else None,
    )


def task_views(tasks: Iterable[Mapping[str, Any]], services: Iterable[Mapping[str, Any]]) -> list[TaskView]:
    """Every task, newest first within each slot (pure): ordered by service, slot (or node for
    global services), then from the newest to the oldest."""
    by_id = {str(s.get("ID", "")): s for s in services}
    # a task whose service is gone (removed meanwhile) is not shown: it is on its way out
    views = [(task_view(t, by_id), str(t.get("CreatedAt", ""))) for t in tasks if str(t.get("ServiceID", "")) in by_id]
    views.sort(key=lambda vc: vc[1], reverse=True)
    views.sort(key=lambda vc: (vc[0].service, vc[0].slot, vc[0].node_id if not vc[0].slot else ""))
    return [v for v, _ in views]


def current(tasks: Iterable[TaskView]) -> list[TaskView]:
    """The task of each slot (or, for global services, of each node) that counts now: the one
    swarm wants running, else the newest (pure; ``tasks`` newest first as ``task_views`` gives)."""
    out: dict[tuple[str, int, str], TaskView] = {}
    for t in tasks:
        key = (t.service_id, t.slot, "" if t.slot else t.node_id)
        have = out.get(key)
        if have is None or (have.desired != "running" and t.desired == "running"):
            out[key] = t
    return list(out.values())


def read_tasks(engine: Engine, services: Iterable[Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Every task (of ``services`` when given), as the manager lists them. Tasks carry no stack
    label of their own: they are told apart by their service."""
    if services is None:
        return engine.tasks()
    ids = [str(s.get("ID", "")) for s in services]
    return engine.tasks({"service": ids}) if ids else []


_TIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")


def parse_time(text: str) -> int | None:
    """An engine's RFC 3339 time (nanoseconds, ``Z`` or an offset) -> nanoseconds since the epoch,
    exactly (pure; datetime keeps microseconds only, and two log lines may differ by less)."""
    m = _TIME.match(text.strip())
    if not m:
        return None
    year, month, day, hour, minute, second, frac, zone = m.groups()
    try:
        base = datetime.datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                                 tzinfo=datetime.timezone.utc)  # fmt: skip
    except ValueError:
        return None
    seconds = calendar.timegm(base.utctimetuple())
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return seconds * 1_000_000_000 + int((frac or "0").ljust(9, "0"))
