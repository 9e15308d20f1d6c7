"""An Engine that replays API responses recorded from the lab (tests/recorded), for the unit tier.

It answers the calls the convergence and rollout code makes - info, nodes, services, tasks,
inspect/update service, networks - from recorded snapshots, and keeps swarm configs (a stack's
revisions) in memory, with swarm's rule that a config's name is taken once. Each service moves between recorded
phases when it is written, as swarm moved it when the recording was made:

    before --update (outcome "ok")--> updated
    before --update (outcome "fail")--> rolled_back     (swarm's failure_action rollback)
    any    --update rollback=previous--> reverted       (rolled_back, its spec the one before)

It stands in for a swarm only where the unit tier tests pure logic over real answers; the same
paths run against a real swarm in tests/e2e.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swarmctl.errors import Conflict, NotFound
from swarmctl.spec import parse_time
from swarmctl.transport.engine import Engine

RECORDED = Path(__file__).resolve().parents[1] / "recorded"


def recorded(name: str) -> Any:
    return json.loads((RECORDED / f"{name}.json").read_text().replace("<ROOT>", str(RECORDED.parents[1])))


def _rename(snapshot: Mapping[str, Any], ident: str, name: str, labels: Mapping[str, str]) -> dict[str, Any]:
    snap = copy.deepcopy(dict(snapshot))
    old = snap["service"]["ID"]
    snap["service"]["ID"] = ident
    snap["service"]["Spec"]["Name"] = name
    snap["service"]["Spec"]["Labels"] = {**(snap["service"]["Spec"].get("Labels") or {}), **labels}
    for t in snap["tasks"]:
        t["ServiceID"] = ident
        t["ID"] = t["ID"].replace(old[:8], ident[:8])
    return snap


@dataclass
class FakeService:
    phases: dict[str, dict[str, Any]]  # before | updated | rolled_back | reverted -> recorded snapshot
    outcome: str = "ok"  # what an update leads to: ok | fail
    phase: str = "before"
    just_written: str | None = None  # UpdatedAt to answer with right after a write

    @property
    def snap(self) -> dict[str, Any]:
        return self.phases[self.phase]


@dataclass
class FakeEngine:
    services_by_id: dict[str, FakeService] = field(default_factory=dict)
    node_list: list[dict[str, Any]] = field(default_factory=lambda: recorded("nodes"))
    writes: list[tuple[str, str]] = field(default_factory=list)  # (service name, "update" | "rollback")
    auths: list[str | None] = field(default_factory=list)  # the X-Registry-Auth sent with each write
    name: str = "lab1"
    # swarm configs (a stack's revisions: ops.history), kept as the API lists them; secrets: none
    config_store: dict[str, dict[str, Any]] = field(default_factory=dict)
    configs_made: int = 0  # IDs are never reused, as swarm's

    @classmethod
    def rollout(cls, services: Iterable[tuple[str, Mapping[str, str], str]]) -> FakeEngine:
        """Services cloned from the recorded rollout: (name, labels, outcome) each."""
        data = recorded("rollout")
        engine = cls()
        for i, (name, labels, outcome) in enumerate(services):
            ident = f"svc{i:02d}" + "x" * 19
            phases = {p: _rename(data[p], ident, name, labels) for p in ("before", "updated", "rolled_back")}
            for p in ("updated", "rolled_back"):
                phases[p]["written_at"] = data[p]["written_at"]
            # an explicit rollback returns to the spec before the rollout (the recording rolled back
            # from a second update, so its spec is the first update's)
            phases["reverted"] = copy.deepcopy(phases["rolled_back"])
            phases["reverted"]["service"]["Spec"] = copy.deepcopy(phases["before"]["service"]["Spec"])
            engine.services_by_id[ident] = FakeService(phases, outcome)
        return engine

    def _find(self, ident: str) -> FakeService:
        for sid, s in self.services_by_id.items():
            if ident in (sid, s.snap["service"]["Spec"]["Name"]):
                return s
        raise NotFound(self.name, f"inspect service {ident}: service {ident} not found")

    def info(self) -> dict[str, Any]:
        now = max((s.snap["now"] for s in self.services_by_id.values()), key=parse_time, default="")
        return {"SystemTime": now, "Swarm": {"ControlAvailable": True, "LocalNodeState": "active"}}

    def nodes(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self.node_list)

    def services(self, filters: Mapping[str, Iterable[str]] | None = None, status: bool = False) -> list[Any]:
        out = [copy.deepcopy(s.snap["service"]) for s in self.services_by_id.values()]
        for wanted in (filters or {}).get("label", []):
            key, _, value = wanted.partition("=")
            out = [svc for svc in out if (svc["Spec"].get("Labels") or {}).get(key) == value]
        return out

    def inspect_service(self, ident: str) -> dict[str, Any]:
        s = self._find(ident)
        svc = copy.deepcopy(s.snap["service"])
        if s.just_written is not None:
            svc["UpdatedAt"], s.just_written = s.just_written, None
        return svc

    def update_service(
        self,
        ident: str,
        version: int,
        spec: Mapping[str, Any],
        rollback: bool = False,
        what: str = "",
        registry_auth: str | None = None,
    ) -> dict[str, Any]:
        s = self._find(ident)
        name = s.snap["service"]["Spec"]["Name"]
        self.writes.append((name, "rollback" if rollback else "update"))
        self.auths.append(registry_auth)
        s.phase = "reverted" if rollback else "rolled_back" if s.outcome == "fail" else "updated"
        s.just_written = s.snap["written_at"]
        return {}

    def tasks(self, filters: Mapping[str, Iterable[str]] | None = None) -> list[dict[str, Any]]:
        ids = set((filters or {}).get("service", self.services_by_id))
        out = []
        for sid in ids:
            if sid in self.services_by_id:
                out += copy.deepcopy(self.services_by_id[sid].snap["tasks"])
        return out

    def networks(self, filters: Mapping[str, Iterable[str]] | None = None) -> list[dict[str, Any]]:
        return []

    # -- the rest of the Engine protocol: what the tier that uses this fake never asks ---------------
    # (each says so when asked: a test that needs one adds a recorded answer, never a guess)

    def _unrecorded(self, what: str) -> NotImplementedError:
        return NotImplementedError(f"the fake engine has no recorded answer to {what}")

    def version(self) -> dict[str, Any]:
        return {"Version": "20.10.24+dfsg1", "ApiVersion": "1.41"}

    def inspect_swarm(self) -> dict[str, Any]:
        raise self._unrecorded("inspect_swarm")

    def init_swarm(
        self,
        advertise_addr: str,
        listen_addr: str,
        force_new_cluster: bool = False,
        autolock: bool = False,
        spec: Mapping[str, Any] | None = None,
    ) -> str:
        raise self._unrecorded("init_swarm")

    def update_swarm(
        self,
        version: int,
        spec: Mapping[str, Any],
        rotate_worker_token: bool = False,
        rotate_manager_token: bool = False,
        rotate_unlock_key: bool = False,
        what: str = "update the swarm",
    ) -> None:
        raise self._unrecorded("update_swarm")

    def unlock_key(self) -> str:
        raise self._unrecorded("unlock_key")

    def unlock_swarm(self, key: str) -> None:
        raise self._unrecorded("unlock_swarm")

    def join_swarm(self, remote_addrs: list[str], token: str, advertise_addr: str, listen_addr: str) -> None:
        raise self._unrecorded("join_swarm")

    def leave_swarm(self, force: bool = False) -> None:
        raise self._unrecorded("leave_swarm")

    def inspect_node(self, node_id: str) -> dict[str, Any]:
        for n in self.node_list:
            if n["ID"] == node_id:
                return copy.deepcopy(n)
        raise NotFound(self.name, f"read node {node_id[:12]}: node {node_id} not found")

    def update_node(self, node_id: str, version: int, spec: Mapping[str, Any], what: str = "") -> None:
        raise self._unrecorded("update_node")

    def remove_node(self, node_id: str, force: bool = False, what: str = "") -> None:
        raise self._unrecorded("remove_node")

    def create_service(self, spec: Mapping[str, Any], registry_auth: str | None = None) -> dict[str, Any]:
        raise self._unrecorded("create_service")

    def remove_service(self, ident: str, what: str = "") -> None:
        raise self._unrecorded("remove_service")

    def images(self) -> list[dict[str, Any]]:
        return []

    def inspect_image(self, ref: str) -> dict[str, Any]:
        raise NotFound(self.name, f"inspect image {ref}: no such image")

    def tag_image(self, image_id: str, ref: str) -> None:
        raise self._unrecorded("tag_image")

    def login(self, auth: Mapping[str, str]) -> None:
        raise self._unrecorded("login")

    def distribution(self, image: str, registry_auth: str | None = None) -> dict[str, Any]:
        raise self._unrecorded("distribution")

    def create_network(self, body: Mapping[str, Any]) -> dict[str, Any]:
        raise self._unrecorded("create_network")

    def remove_network(self, ident: str, what: str = "") -> None:
        raise self._unrecorded("remove_network")

    def objects(self, kind: str, filters: Mapping[str, Iterable[str]] | None = None) -> list[dict[str, Any]]:
        out = [copy.deepcopy(c) for c in self.config_store.values()] if kind == "config" else []
        for wanted in (filters or {}).get("label", []):
            key, _, value = wanted.partition("=")
            out = [o for o in out if (o["Spec"].get("Labels") or {}).get(key) == value]
        return out

    def create_object(self, kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
        if kind != "config":
            raise self._unrecorded(f"create_object {kind}")
        if any(c["Spec"]["Name"] == body["Name"] for c in self.config_store.values()):
            # as swarmkit answers a name in use (codes.AlreadyExists -> HTTP 409)
            raise Conflict(self.name, f"create config {body['Name']}: config {body['Name']} already exists")
        self.configs_made += 1
        ident = f"cfg{self.configs_made:04d}" + "x" * 21
        self.config_store[ident] = {"ID": ident, "Version": {"Index": 1}, "Spec": copy.deepcopy(dict(body))}
        return {"ID": ident}

    def update_object(self, kind: str, ident: str, version: int, spec: Mapping[str, Any], what: str = "") -> None:
        raise self._unrecorded("update_object")

    def remove_object(self, kind: str, ident: str, what: str = "") -> None:
        if kind != "config" or ident not in self.config_store:
            raise NotFound(self.name, f"remove {kind} {what or ident}: not found")
        del self.config_store[ident]

    def containers(self, label: str) -> list[dict[str, Any]]:
        return []

    def run_container(self, image: str, command: list[str], network: str, labels: Mapping[str, str], name: str) -> str:
        raise self._unrecorded("run_container")

    def wait_container(self, ident: str, timeout: float) -> int:
        raise self._unrecorded("wait_container")

    def container_output(self, ident: str, stderr: bool = False) -> bytes:
        raise self._unrecorded("container_output")

    def remove_container(self, ident: str) -> None:
        raise self._unrecorded("remove_container")

    def close(self) -> None:
        return None


def _conforms(engine: FakeEngine) -> Engine:
    """mypy checks here that FakeEngine implements the Engine protocol (no cast, no ignore)."""
    return engine


@dataclass
class FakeGates:
    """Application gates with scripted answers: who goes last, and which services fail their gate."""

    last: set[str] = field(default_factory=set)
    unhealthy_before: set[str] = field(default_factory=set)
    failing: set[str] = field(default_factory=set)
    unsafe: set[str] = field(default_factory=set)  # never safe to stop (a quorum or min ISR would be lost)
    events: list[str] = field(default_factory=list)

    def refresh(self) -> None:
        self.events.append("refresh")

    def goes_last(self) -> set[str]:
        return set(self.last)

    def check(self, short: str) -> tuple[bool, str]:
        ok = short not in self.unhealthy_before
        return ok, f"{short}: {'follower' if ok else 'no answer'}"

    def wait(self, short: str, timeout: float) -> str:
        from swarmctl.errors import TimeoutExpired

        self.events.append(f"gate {short}")
        if short in self.failing:
            raise TimeoutExpired(f"application check of {short} did not pass in {timeout:g}s: {short}: no answer")
        return f"{short}: follower"

    def safe_to_stop(self, short: str, timeout: float) -> str:
        from swarmctl.errors import TimeoutExpired

        self.events.append(f"ready {short}")
        if short in self.unsafe:
            raise TimeoutExpired(f"{short} was not safe to stop within {timeout:g}s: a majority would be lost")
        return "safe"
