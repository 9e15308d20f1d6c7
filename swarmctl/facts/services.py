"""Services and their tasks as a manager reports them: modes, desired and running task counts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from swarmctl import labels
from swarmctl.transport.engine import Engine

RUNNING = "running"


def mode_of(spec: Mapping[str, Any]) -> str:
    """replicated | global | replicated-job | global-job."""
    mode = spec.get("Mode") or {}
    for key, name in (("ReplicatedJob", "replicated-job"), ("GlobalJob", "global-job"), ("Global", "global")):
        if key in mode:
            return name
    return "replicated"


def is_job(spec: Mapping[str, Any]) -> bool:
    return mode_of(spec).endswith("-job")


def desired_tasks(service: Mapping[str, Any], tasks: Iterable[Mapping[str, Any]] = ()) -> int:
    """How many tasks the service wants: running ones, or for a job, completions.

    Replicated: its replica count (the engine's default is 1). A replicated job: its total
    completions. Global services: what the manager says (``ServiceStatus``, needs ``status=True``);
    a global job, once its tasks exist, one per node that got one.
    """
    spec = service.get("Spec") or {}
    mode = spec.get("Mode") or {}
    if "Replicated" in mode:
        return int((mode["Replicated"] or {}).get("Replicas", 1))
    if "ReplicatedJob" in mode:
        return int((mode["ReplicatedJob"] or {}).get("TotalCompletions") or 1)
    reported = int((service.get("ServiceStatus") or {}).get("DesiredTasks", 0))
    if "GlobalJob" in mode:
        nodes = {t.get("NodeID") for t in tasks if t.get("NodeID")}
        return len(nodes) or reported
    return reported


def task_state(task: Mapping[str, Any]) -> str:
    return str((task.get("Status") or {}).get("State", ""))


def is_running(task: Mapping[str, Any]) -> bool:
    """A task that should run and does."""
    return task.get("DesiredState") == RUNNING and task_state(task) == RUNNING


@dataclass(frozen=True)
class ServiceView:
    """A service as `status` shows it."""

    name: str
    mode: str
    running: int
    desired: int
    image: str
    stack: str

    def json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "stack": self.stack,
            "mode": "job" if self.mode.endswith("-job") else self.mode,
            "running": self.running,
            "desired": self.desired,
            "image": self.image,
        }


def service_view(raw: Mapping[str, Any]) -> ServiceView:
    spec = raw.get("Spec") or {}
    image = str(((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Image", ""))
    return ServiceView(
        name=str(spec.get("Name", raw.get("ID", ""))),
        mode=mode_of(spec),
        running=int((raw.get("ServiceStatus") or {}).get("RunningTasks", 0)),
        desired=desired_tasks(raw),
        image=image.split("@", 1)[0],
        stack=str((spec.get("Labels") or {}).get(labels.NAMESPACE, "")),
    )


def stack_filter(stack: str) -> dict[str, list[str]]:
    return {"label": [f"{labels.NAMESPACE}={stack}"]}


def read_services(engine: Engine, stack: str | None = None) -> list[dict[str, Any]]:
    """Every service (of ``stack`` when given), with task counts (``ServiceStatus``)."""
    return engine.services(filters=stack_filter(stack) if stack else None, status=True)
