"""Writing a service and waiting until swarm made it true: convergence, judged from tasks.

``assess`` is pure: a service and its tasks (as the API lists them) in, a :class:`Progress` out.
``wait_converged`` polls the engine and asks ``assess`` until every service converged, one failed
or rolled back, or the deadline passed. ``write_service`` is the one way a service update is
written (and its write time read back, so that an update status is known to be ours).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from swarmctl.errors import Busy, ClusterError, TimeoutExpired, Unavailable
from swarmctl.facts.daemon import read_daemon_info
from swarmctl.facts.nodes import NodeView, node_names, placement_allows, read_nodes
from swarmctl.facts.services import desired_tasks, is_job, is_running, read_services, service_view, task_state
from swarmctl.facts.tasks import current, read_tasks, task_views
from swarmctl.plan import Notify, quiet
from swarmctl.spec import parse_time, task_runs_spec
from swarmctl.transport.engine import Engine
from swarmctl.wait import Pending, until

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 300.0
DEFAULT_MONITOR_NS = 5 * 10**9  # swarmkit's default update monitor window
FAILURES_BEFORE_GIVING_UP = 3
FAILED_STATES = ("failed", "rejected")
ROLLBACK_STATES = ("paused", "rollback_started", "rollback_paused", "rollback_completed")

# Progress.state
PENDING = "pending"
UPDATING = "updating"
CONVERGED = "converged"
FAILED = "failed"
ROLLED_BACK = "rolled back"


@dataclass
class Progress:
    service: str
    running: int = 0
    desired: int = 0
    state: str = PENDING  # pending | updating | converged | failed | rolled back
    message: str = ""

    def json(self) -> dict[str, Any]:
        return {"name": self.service, "running": self.running, "desired": self.desired, "state": self.state}


OnProgress = Callable[[Progress], None]


def no_progress(_: Progress) -> None:
    """An OnProgress that shows nothing."""


def task_error(task: Mapping[str, Any], names: Mapping[str, str]) -> str:
    st = task.get("Status", {})
    node = names.get(task.get("NodeID", ""), task.get("NodeID", "")[:12] or "no node")
    err = st.get("Err") or st.get("Message") or st.get("State")
    return f"task {task['ID'][:12]} on {node}: {st.get('State')}: {err}"


def _restarts(spec: Mapping[str, Any]) -> bool:
    policy = (spec.get("TaskTemplate") or {}).get("RestartPolicy") or {}
    return policy.get("Condition", "any") != "none"


def assess(
    svc: Mapping[str, Any],
    tasks: Iterable[Mapping[str, Any]],
    written_at: float | None,
    since: float,
    now: float,
    names: Mapping[str, str],
    nodes: Sequence[NodeView],
) -> Progress:
    """How far one service is (pure).

    Args:
        svc: the service as listed with ``status=True``; tasks: its tasks.
        written_at: engine time at which this run wrote the service (0 for a creation), None if
            it did not: an update status counts only when it started then or later.
        since: engine time the wait began: task failures before it are history.
        now: engine time now (monitor windows are measured on it).
        names: node ID -> name, for task errors.
        nodes: the swarm's nodes: a global service written in this run that wants and has no
            task is converged only when no ready, active node may run it (``unmade``).
    """
    spec = svc["Spec"]
    p = Progress(spec["Name"])
    status = svc.get("UpdateStatus") or {}
    was_updated = written_at is not None
    # a rollback moves UpdatedAt but keeps the update's StartedAt: compare with our own write
    ours = was_updated and bool(written_at) and parse_time(status.get("StartedAt")) >= (written_at or 0) - 1
    state = status.get("State", "") if ours else ""
    tasks = list(tasks)
    p.desired = desired_tasks(svc, tasks)
    current = [t for t in tasks if task_runs_spec(t, svc)]
    running = [t for t in current if is_running(t)]
    p.running = len(running)
    if state in ROLLBACK_STATES:
        p.state = ROLLED_BACK if state.startswith("rollback") else FAILED
        p.message = f"update {state.replace('_', ' ')}: {status.get('Message', '')}".strip()
        if state == "rollback_started":
            p.state = UPDATING  # the rollback is still running; report it when it ends
            p.message = f"rolling back: {status.get('Message', '')}"
        elif state == "rollback_completed":
            p.state = ROLLED_BACK
        return p
    recent_failures = [
        t for t in current if task_state(t) in FAILED_STATES and parse_time(t.get("CreatedAt")) >= since - 1
    ]
    if is_job(spec):
        p.running = sum(1 for t in current if task_state(t) == "complete")
        if p.running >= p.desired and p.desired > 0:
            p.state, p.message = CONVERGED, "job complete"
            return p
    elif unmade(spec, p.desired, current, was_updated, nodes):
        p.state, p.message = UPDATING, "waiting for swarm to create its tasks"
        return p
    else:
        monitor = int((spec.get("UpdateConfig") or {}).get("Monitor") or DEFAULT_MONITOR_NS) / 1e9
        stable = all(now - parse_time(t.get("Status", {}).get("Timestamp")) >= monitor for t in running)
        if p.running >= p.desired and (state in ("", "completed")) and stable:
            p.state, p.message = CONVERGED, ""
            return p
        if p.running >= p.desired and not stable:
            p.state, p.message = UPDATING, f"running; watching for {monitor:g}s"
            return p
    if len(recent_failures) >= FAILURES_BEFORE_GIVING_UP or (
        recent_failures
        and not any(
            t.get("DesiredState") in ("running", "ready", "complete") and task_state(t) not in FAILED_STATES
            for t in current
        )
        and not _restarts(spec)
    ):
        latest = sorted(recent_failures, key=lambda t: parse_time(t.get("Status", {}).get("Timestamp")))[-2:]
        p.state = FAILED
        p.message = "; ".join(task_error(t, names) for t in latest)
        return p
    p.state = UPDATING if state == "updating" or was_updated else PENDING
    waiting = [t for t in current if t.get("DesiredState") == "running" and task_state(t) != "running"]
    if waiting:
        t = sorted(waiting, key=lambda t: parse_time(t.get("Status", {}).get("Timestamp")))[-1]
        st = t.get("Status", {})
        p.message = f"{st.get('State')}" + (f": {st.get('Err')}" if st.get("Err") else "")
    elif recent_failures:
        p.message = task_error(recent_failures[-1], names)
    return p


def unmade(spec: Mapping[str, Any], desired: int, current: Sequence[Mapping[str, Any]], written: bool,
           nodes: Sequence[NodeView]) -> bool:  # fmt: skip
    """A global service this run wrote, that wants no task (``DesiredTasks`` 0) and has none of its
    spec, while a ready, active node may run it (pure): swarm has not made its tasks yet (its
    desired count says 0 until it has), so 0 of 0 running proves nothing. As ``docker service
    create`` does, it waits for the tasks; unlike it, not when no node can run them (judged as
    swarm judges constraints: ``placement_allows``)."""
    if not written or current or desired or "Global" not in (spec.get("Mode") or {}):
        return False
    constraints = ((spec.get("TaskTemplate") or {}).get("Placement") or {}).get("Constraints") or []
    return any(n.ready and n.availability == "active" and placement_allows(constraints, n) for n in nodes)


def wait_converged(
    engine: Engine,
    services: Iterable[str],
    written: Mapping[str, float],
    timeout: float = DEFAULT_TIMEOUT,
    on_progress: OnProgress = no_progress,
    poll: float = 0.5,
    max_poll: float = 2.0,
) -> dict[str, Progress]:
    """Wait until every service's up-to-date tasks run (healthy where checked) for its monitor window.

    Each poll is two API calls (services, then the tasks of all watched services at once), every
    ``poll`` seconds while something changes and backing off to ``max_poll`` while nothing does: a
    manager on a slow machine or link is not kept busy answering the wait. A manager that cannot
    answer for a moment (no leader while the managers elect one: ``Unavailable``; its store timing
    out under load: ``Busy``) is asked again at the next poll, up to the deadline.

    Args:
        services: full service names to watch.
        written: names created or updated in this run -> when (engine time) we wrote them.

    Raises:
        ClusterError: a service rolled back, paused, or its tasks keep failing (with task errors).
        TimeoutExpired: naming the services not converged and their last task errors.
    """
    watched = list(services)
    since = parse_time(read_daemon_info(engine).system_time)
    local_start = time.monotonic()
    nodes = read_nodes(engine)
    names = node_names(nodes)
    progress = {n: Progress(n) for n in watched}
    last_seen: dict[str, tuple[Any, ...]] = {}

    def converged() -> dict[str, Progress] | Pending:
        now = since + (time.monotonic() - local_start)
        listed = {s["Spec"]["Name"]: s for s in read_services(engine)}
        ids = [listed[n]["ID"] for n in watched if n in listed]
        by_service: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
        for t in engine.tasks(filters={"service": ids}) if ids else []:
            by_service.setdefault(t.get("ServiceID", ""), []).append(t)
        pending = []
        changed = False
        for name in watched:
            svc = listed.get(name)
            if svc is None:
                p = Progress(name, state=FAILED, message="service disappeared")
            else:
                p = assess(svc, by_service[svc["ID"]], written.get(name), since, now, names, nodes)
            progress[name] = p
            key = (p.running, p.desired, p.state, p.message)
            if last_seen.get(name) != key:
                last_seen[name] = key
                changed = True
                on_progress(p)
            if p.state != CONVERGED:
                pending.append(p)
        failed = [p for p in pending if p.state in (FAILED, ROLLED_BACK)]
        if failed and all(p.state in (FAILED, ROLLED_BACK, CONVERGED) for p in progress.values()):
            raise ClusterError("; ".join(f"{p.service} {p.state}: {p.message}" for p in failed))
        if not pending:
            return progress
        detail = "; ".join(
            f"{p.service} ({p.running}/{p.desired} running{': ' + p.message if p.message else ''})" for p in pending
        )
        return Pending(detail, moving=changed)

    def late(seen: str) -> TimeoutExpired:
        return TimeoutExpired(f"not converged after {timeout:g}s: {seen}")

    # a manager between leaders (Unavailable) or with its store timing out (Busy) is asked again
    return until("convergence", converged, timeout, first=poll, cap=max(poll, max_poll),
                 retry=(Unavailable, Busy), error=late)  # fmt: skip


def write_service(
    engine: Engine,
    ident: str,
    spec: Mapping[str, Any],
    rollback: bool = False,
    what: str = "",
    registry_auth: str | None = None,
) -> tuple[float, list[str]]:
    """Write a service's spec at its current version (or ask swarm to roll it back);
    ``registry_auth``: the X-Registry-Auth of its image's registry, so every node can pull.

    Returns:
        The engine's UpdatedAt of the write (an update status that started before it is not
        ours) and the engine's warnings.
    """
    current = engine.inspect_service(ident)
    answer = engine.update_service(
        current["ID"], current["Version"]["Index"], spec, rollback=rollback, what=what, registry_auth=registry_auth
    )
    after = engine.inspect_service(current["ID"])
    return parse_time(after.get("UpdatedAt")), list(answer.get("Warnings") or [])


def last_task_error(engine: Engine, service_id: str) -> str:
    """The newest failed task's error of a service, or ""."""
    tasks = engine.tasks(filters={"service": [service_id]})
    failed = [t for t in tasks if task_state(t) in ("failed", "rejected", "complete")]
    failed.sort(key=lambda t: parse_time((t.get("Status") or {}).get("Timestamp")))
    if not failed:
        return ""
    st = failed[-1]["Status"]
    return f"{st.get('State')}: {st.get('Err') or st.get('Message', '')}".strip()


SERVICES_POLL = 1.0


def wait_services_running(
    engine: Engine, timeout: float, notify: Notify = quiet, watch: Callable[[], None] | None = None
) -> dict[str, str]:
    """Poll until every replicated/global service runs as many tasks as it wants; name -> "running/desired".
    ``watch`` is called before each look; what it raises ends the wait (a caller's own stall test)."""

    def running() -> dict[str, str] | Pending:
        if watch is not None:
            watch()
        raw = read_services(engine)
        views = [service_view(s) for s in raw]
        counts = {v.name: f"{v.running}/{v.desired}" for v in views}
        behind = sorted(v.name for v in views if not v.mode.endswith("-job") and v.running < v.desired)
        if not behind:
            return counts
        why = _why_behind(engine, [s for s in raw if s.get("Spec", {}).get("Name") in behind])
        return Pending(f"{len(views) - len(behind)}/{len(views)} running all their tasks; behind: "
                       + ", ".join(f"{n} ({counts[n]}{why.get(n, '')})" for n in behind))  # fmt: skip

    return until("every service to run its tasks", running, timeout, first=SERVICES_POLL, cap=SERVICES_POLL,
                 on_wait=lambda seen: notify("services: " + seen.split(";")[0]))  # fmt: skip


def _why_behind(engine: Engine, services: list[dict[str, Any]]) -> dict[str, str]:
    """Service name -> ``: TASK STATE: ERROR`` of its tasks that should run and do not (what a
    timeout then names: "pending: no suitable node", "rejected: ...")."""
    out: dict[str, list[str]] = {}
    for t in current(task_views(read_tasks(engine, services), services)):
        if t.desired == "running" and not t.running:
            out.setdefault(t.service, []).append(f"{t.name} {t.state}: {t.error or t.message}")
    return {name: ": " + "; ".join(why) for name, why in out.items()}
