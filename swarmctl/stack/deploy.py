"""Deploy a stack: read what the swarm has -> plan (pure) -> apply -> wait for convergence; and rm.

Unlike ``docker stack deploy``, an unchanged object is not written at all (a redeploy restarts
nothing and bumps no version), changes swarm cannot apply in place are refused before anything
is touched, ``prune`` covers networks, secrets and configs too, and a rollback is a failure.
"""

from __future__ import annotations

import base64
import copy
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from swarmctl.engine import Engine
from swarmctl.errors import ClusterError, HostError, InputError, SwarmctlError, TimeoutExpired
from swarmctl.stack.convert import (
    DIGEST_LABEL,
    IMAGE_LABEL,
    NAMESPACE_LABEL,
    SECRET_LABEL,
    DesiredStack,
    FileObject,
)

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 300.0
DEFAULT_MONITOR_NS = 5 * 10**9  # swarmkit's default update monitor window
FAILURES_BEFORE_GIVING_UP = 3
FAILED_STATES = ("failed", "rejected")
ROLLBACK_STATES = ("paused", "rollback_started", "rollback_paused", "rollback_completed")


@dataclass(frozen=True)
class Change:
    kind: str  # network | secret | config | service
    name: str
    action: str  # create | update | remove
    fields: tuple[str, ...] = ()

    def describe(self) -> str:
        text = f"{self.action} {self.kind} {self.name}"
        return text + (f" ({', '.join(self.fields)})" if self.fields else "")


@dataclass
class Current:
    """The stack's objects as the swarm has them (raw API dicts), by name."""

    networks: dict[str, dict[str, Any]] = field(default_factory=dict)
    secrets: dict[str, dict[str, Any]] = field(default_factory=dict)
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    foreign_networks: dict[str, dict[str, Any]] = field(default_factory=dict)  # same name, other owner
    missing_external: list[str] = field(default_factory=list)
    network_names: dict[str, str] = field(default_factory=dict)  # every network's ID -> name


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...]
    services: dict[str, dict[str, Any]]  # full service name -> the spec to send (creates and updates)

    @property
    def empty(self) -> bool:
        return not self.changes


def _label_filter(stack: str) -> dict[str, Any]:
    return {"label": [f"{NAMESPACE_LABEL}={stack}"]}


def read_current(engine: Engine, desired: DesiredStack) -> Current:
    """The stack's networks, secrets, configs and services on the swarm, and checks of externals."""
    stack = desired.name
    cur = Current()
    api = engine.api
    everything = {n["Name"]: n for n in engine.call("list networks", api.networks)}
    cur.network_names = {n["Id"]: name for name, n in everything.items()}
    for name, n in everything.items():
        if (n.get("Labels") or {}).get(NAMESPACE_LABEL) == stack:
            cur.networks[name] = n
    for name in set(desired.networks) - set(cur.networks):
        if name in everything:
            cur.foreign_networks[name] = everything[name]
    for name in desired.external_networks:
        net = everything.get(name)
        if net is None:
            cur.missing_external.append(f"network {name}")
        elif net.get("Scope") != "swarm":
            cur.missing_external.append(f"network {name} (scope {net.get('Scope')}, not swarm)")
    for kind, listing, have, external, wanted in (
        ("secret", api.secrets, cur.secrets, desired.external_secrets, desired.secrets),
        ("config", api.configs, cur.configs, desired.external_configs, desired.configs),
    ):
        for obj in engine.call(f"list {kind}s", listing, filters=_label_filter(stack)):
            have[obj["Spec"]["Name"]] = obj
        if not (external or wanted):
            continue
        # external objects, and objects of this stack made by another tool without the label
        everyone = {o["Spec"]["Name"]: o for o in engine.call(f"list {kind}s", listing)}
        for name in external:
            if name not in everyone:
                cur.missing_external.append(f"{kind} {name}")
            else:
                have.setdefault(name, everyone[name])
        for name in wanted:
            if name in everyone:
                have.setdefault(name, everyone[name])
    for svc in engine.call("list services", api.services, filters=_label_filter(stack), status=True):
        cur.services[svc["Spec"]["Name"]] = svc
    return cur


# -- planning (pure) -------------------------------------------------------------------------------


def normalize(value: Any) -> Any:
    """Drop empty values (None, "", 0, False, [], {}) as the engine's JSON omits them."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            nv = normalize(v)
            if nv in (None, "", 0, False, [], {}) and not (nv == 0 and k == "Replicas"):
                continue
            out[k] = nv
        return out
    if isinstance(value, list):
        return [normalize(v) for v in value]
    return value


def diff_paths(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two normalized specs differ (lists compare whole)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += diff_paths(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else key)
        return out
    return [] if a == b else [prefix or "."]


def _service_spec_for(
    desired: dict[str, Any], current: dict[str, Any] | None, ids: Mapping[str, str]
) -> dict[str, Any]:
    """The spec to send: secret/config IDs filled in; for an existing service its ForceUpdate and,
    when the stack file's image is unchanged, its (possibly digest-pinned) image kept - as docker does."""
    spec = copy.deepcopy(desired)
    container = spec["TaskTemplate"]["ContainerSpec"]
    for ref in container.get("Secrets", []):
        ref["SecretID"] = ids.get("secret:" + ref["SecretName"], "")
    for ref in container.get("Configs", []):
        ref["ConfigID"] = ids.get("config:" + ref["ConfigName"], "")
    cred = container.get("Privileges", {}).get("CredentialSpec") or {}
    if "Config" in cred:
        cred["Config"] = ids.get("config:" + cred["Config"], cred["Config"])
    if current is not None:
        cspec = current["Spec"]
        spec["TaskTemplate"]["ForceUpdate"] = cspec.get("TaskTemplate", {}).get("ForceUpdate", 0)
        # docker compares the file's image (the label) with the label of the running service
        if spec["Labels"].get(IMAGE_LABEL) == (cspec.get("Labels") or {}).get(IMAGE_LABEL):
            container["Image"] = cspec["TaskTemplate"]["ContainerSpec"]["Image"]
    return spec


def comparable_task(task: Mapping[str, Any], network_names: Mapping[str, str]) -> Any:
    """A TaskSpec as compared: normalized, network IDs as names, engine-side defaults dropped."""
    t = normalize(copy.deepcopy(dict(task)))
    if t.get("Runtime") == "container":
        del t["Runtime"]
    container = t.get("ContainerSpec", {})
    if container.get("Isolation") == "default":
        del container["Isolation"]
    nets = t.get("Networks", [])
    for n in nets:
        n["Target"] = network_names.get(n["Target"], n["Target"])
    if nets:
        t["Networks"] = sorted(nets, key=lambda n: n["Target"])
    return normalize(t)


def comparable(spec: Mapping[str, Any], network_names: Mapping[str, str]) -> Any:
    """A service spec as compared for changes: normalized, engine-side defaults dropped."""
    raw = copy.deepcopy(dict(spec))
    replicated = (raw.get("Mode") or {}).get("Replicated")
    if replicated is not None and replicated.get("Replicas") is None:
        replicated["Replicas"] = 1  # the engine stores the default replica count
    job = (raw.get("Mode") or {}).get("ReplicatedJob")
    if job is not None:
        # and a job's defaults: one at a time, as many completions as may run at once
        job.setdefault("MaxConcurrent", 1)
        job.setdefault("TotalCompletions", job["MaxConcurrent"])
    s = normalize(raw)
    if "TaskTemplate" in s:
        s["TaskTemplate"] = comparable_task(s["TaskTemplate"], network_names)
    for key in ("UpdateConfig", "RollbackConfig"):
        cfg = s.get(key, {})
        # the engine stores enums: an unset failure action or order comes back as its default
        if cfg.get("FailureAction") == "pause":
            del cfg["FailureAction"]
        if cfg.get("Order") == "stop-first":
            del cfg["Order"]
    endpoint = s.get("EndpointSpec", {})
    if endpoint.get("Mode") == "vip":
        del endpoint["Mode"]
    for port in endpoint.get("Ports", []):
        if port.get("PublishMode") == "ingress":
            del port["PublishMode"]
        if port.get("Protocol") == "tcp":
            del port["Protocol"]
    if not endpoint and "EndpointSpec" in s:
        del s["EndpointSpec"]
    return normalize(s)


def plan_stack(
    desired: DesiredStack, current: Current, prune: bool = False, ids: Mapping[str, str] | None = None
) -> Plan:
    """What to create, update and remove (pure).

    Raises:
        InputError: a change swarm cannot make in place, or a missing external object; says what to do.
    """
    if current.missing_external:
        raise InputError(
            "declared external but not found on the swarm: "
            + ", ".join(current.missing_external)
            + " (create it first, e.g. `docker network create -d overlay NAME`)"
        )
    problems: list[str] = []
    changes: list[Change] = []
    for name in sorted(current.foreign_networks):
        problems.append(f"network {name} exists but is not part of stack {desired.name}: remove or rename it")
    for name, body in sorted(desired.networks.items()):
        have = current.networks.get(name)
        if have is None:
            if name not in current.foreign_networks:
                changes.append(Change("network", name, "create"))
            continue
        fields = _network_differences(body, have)
        if fields:
            problems.append(
                f"network {name} differs in {', '.join(fields)}, which swarm cannot change on an existing network: "
                f"remove the stack (`swarmctl rm {desired.name}`) and deploy again, or give the network a new name"
            )
    ids = dict(ids or {})
    for kind, wanted, have_map in (
        ("secret", desired.secrets, current.secrets),
        ("config", desired.configs, current.configs),
    ):
        for name, obj in sorted(wanted.items()):
            have = have_map.get(name)
            if have is None:
                changes.append(Change(kind, name, "create"))
                continue
            ids[f"{kind}:{name}"] = have["ID"]
            if _data_changed(kind, obj, have):
                problems.append(
                    f"{kind} {name} has new content, but swarm {kind}s are immutable: give it a new name "
                    f"(`name: {name}_v2` in the stack file)"
                    + (
                        " or keep it encrypted in secrets/, where swarmctl versions it by content"
                        if kind == "secret"
                        else ""
                    )
                )
            elif (have["Spec"].get("Labels") or {}) != obj.spec["Labels"]:
                changes.append(Change(kind, name, "update", ("Labels",)))
        for name in desired.external_secrets if kind == "secret" else desired.external_configs:
            if name in have_map:
                ids[f"{kind}:{name}"] = have_map[name]["ID"]
    if problems:
        raise InputError("; ".join(problems))

    services: dict[str, dict[str, Any]] = {}
    for name, spec in sorted(desired.services.items()):
        have = current.services.get(name)
        to_send = _service_spec_for(spec, have, ids)
        if have is None:
            changes.append(Change("service", name, "create"))
            services[name] = to_send
            continue
        fields = diff_paths(comparable(to_send, current.network_names), comparable(have["Spec"], current.network_names))
        if fields:
            changes.append(Change("service", name, "update", tuple(fields)))
            services[name] = to_send
    if prune:
        for kind, have_map, wanted_names in (
            ("service", current.services, desired.services),
            ("network", current.networks, desired.networks),
            ("secret", current.secrets, set(desired.secrets) | set(desired.external_secrets)),
            ("config", current.configs, set(desired.configs) | set(desired.external_configs)),
        ):
            for name, existing in sorted(have_map.items()):
                owner = existing if kind == "network" else existing.get("Spec", {})
                labels = owner.get("Labels") or {}
                if name in wanted_names or labels.get(NAMESPACE_LABEL) != desired.name:
                    continue
                if kind == "secret" and labels.get(SECRET_LABEL) in _versioned_bases(desired):
                    continue  # an earlier version: removed once the services moved off it
                changes.append(Change(kind, name, "remove"))
    return Plan(tuple(changes), services)


def _versioned_bases(desired: DesiredStack) -> set[str]:
    return {o.spec["Labels"][SECRET_LABEL] for o in desired.secrets.values() if SECRET_LABEL in o.spec["Labels"]}


def superseded_secrets(desired: DesiredStack, current: Current, in_use: set[str]) -> list[str]:
    """Earlier versions of the stack's versioned secrets that no service uses any more (pure)."""
    bases = _versioned_bases(desired)
    out = []
    for name, s in sorted(current.secrets.items()):
        labels = s["Spec"].get("Labels") or {}
        if (
            labels.get(NAMESPACE_LABEL) == desired.name
            and labels.get(SECRET_LABEL) in bases
            and name not in desired.secrets
            and name not in in_use
        ):
            out.append(name)
    return out


def remove_superseded(engine: Engine, desired: DesiredStack, report: Report, timeout: float = 120) -> list[str]:
    """After the services converged: remove earlier versions of versioned secrets nothing uses."""
    current = read_current(engine, desired)
    in_use = {
        ref["SecretName"]
        for svc in current.services.values()
        for ref in svc["Spec"]["TaskTemplate"]["ContainerSpec"].get("Secrets") or []
    }
    removed = []
    for name in superseded_secrets(desired, current, in_use):
        _retry_remove(engine, f"remove secret {name}", "/secrets/{0}", current.secrets[name]["ID"], timeout)
        report(f"remove secret {name} (superseded)")
        removed.append(name)
    return removed


def _network_differences(body: Mapping[str, Any], have: Mapping[str, Any]) -> list[str]:
    fields = []
    if (body.get("Driver") or "overlay") != have.get("Driver"):
        fields.append("driver")
    if (body.get("Options") or {}) != {
        k: v
        for k, v in (have.get("Options") or {}).items()
        if not k.startswith("com.docker.network.driver.overlay.vxlanid")
    }:
        fields.append("driver_opts")
    if bool(body.get("Internal")) != bool(have.get("Internal")):
        fields.append("internal")
    if bool(body.get("Attachable")) != bool(have.get("Attachable")):
        fields.append("attachable")
    wanted_subnets = sorted(c["Subnet"] for c in (body.get("IPAM") or {}).get("Config", []))
    have_subnets = sorted(c.get("Subnet", "") for c in ((have.get("IPAM") or {}).get("Config") or []))
    if wanted_subnets and wanted_subnets != have_subnets:
        fields.append("ipam")
    if (body.get("Labels") or {}) != (have.get("Labels") or {}):
        fields.append("labels")
    return fields


def _data_changed(kind: str, obj: FileObject, have: Mapping[str, Any]) -> bool:
    if kind == "config":
        data = base64.b64decode(have["Spec"].get("Data") or b"")
        return data != obj.data
    digest = (have["Spec"].get("Labels") or {}).get(DIGEST_LABEL)
    # a secret made by docker stack deploy carries no digest: its content cannot be compared
    return digest is not None and digest != obj.digest


# -- apply -----------------------------------------------------------------------------------------

Report = Callable[[str], None]


def apply_plan(
    engine: Engine,
    desired: DesiredStack,
    current: Current,
    plan: Plan,
    report: Report,
    update_services: bool = True,
    ids: dict[str, str] | None = None,
) -> dict[str, float]:
    """Make the changes, in dependency order.

    Args:
        update_services: False leaves service updates to the caller (the rollout engine).
        ids: filled with "secret:NAME"/"config:NAME" -> ID, for specs built afterwards.

    Returns:
        service name -> the engine's UpdatedAt of our write (0 for a creation), for every service
        created or updated: an update status that started before that is not ours.
    """
    ids = {} if ids is None else ids
    for c in plan.changes:
        if c.kind == "network" and c.action == "create":
            engine.request(f"create network {c.name}", "POST", "/networks/create", desired.networks[c.name])
            report(c.describe())
    for kind, objects, have_map in (
        ("secret", desired.secrets, current.secrets),
        ("config", desired.configs, current.configs),
    ):
        for name, have in have_map.items():
            ids[f"{kind}:{name}"] = have["ID"]
        for c in plan.changes:
            if c.kind != kind:
                continue
            if c.action == "create":
                res = engine.request(f"create {kind} {c.name}", "POST", f"/{kind}s/create", objects[c.name].body())
                ids[f"{kind}:{c.name}"] = res["ID"]
                report(c.describe())
            elif c.action == "update":
                have = have_map[c.name]
                spec = {**have["Spec"], "Labels": objects[c.name].spec["Labels"]}
                engine.request(
                    f"update {kind} {c.name}",
                    "POST",
                    f"/{kind}s/{{0}}/update",
                    spec,
                    params={"_args": (have["ID"],), "version": have["Version"]["Index"]},
                )
                report(c.describe())
    touched: dict[str, float] = {}
    for c in plan.changes:
        if c.kind != "service" or c.action == "remove" or (c.action == "update" and not update_services):
            continue
        # IDs of secrets/configs created just now are known only here
        spec = _service_spec_for(desired.services[c.name], current.services.get(c.name), ids)
        if c.action == "create":
            res = engine.request(f"create service {c.name}", "POST", "/services/create", spec)
            touched[c.name] = 0.0
        else:
            have = current.services[c.name]
            res = engine.request(
                f"update service {c.name}",
                "POST",
                "/services/{0}/update",
                spec,
                params={"_args": (have["ID"],), "version": have["Version"]["Index"]},
            )
            after = engine.call(f"inspect service {c.name}", engine.api.inspect_service, have["ID"])
            touched[c.name] = _parse_time(after.get("UpdatedAt"))
        for w in (res or {}).get("Warnings") or []:
            if "could not be accessed on a registry to record its digest" not in w:
                report(f"warning: {c.name}: {w}")
        report(c.describe())
    removals = [c for c in plan.changes if c.action == "remove"]
    if removals:
        _remove(engine, current, removals, report)
    return touched


def _remove(engine: Engine, current: Current, removals: list[Change], report: Report, timeout: float = 120) -> None:
    services = [c for c in removals if c.kind == "service"]
    for c in services:
        engine.request(
            f"remove service {c.name}", "DELETE", "/services/{0}", params={"_args": (current.services[c.name]["ID"],)}
        )
        report(c.describe())
    if services:
        _wait_tasks_gone(engine, [current.services[c.name]["ID"] for c in services], timeout)
    for c in removals:
        if c.kind == "service":
            continue
        obj = {"network": current.networks, "secret": current.secrets, "config": current.configs}[c.kind][c.name]
        path = {"network": "/networks/{0}", "secret": "/secrets/{0}", "config": "/configs/{0}"}[c.kind]
        _retry_remove(engine, f"remove {c.kind} {c.name}", path, str(obj.get("ID") or obj.get("Id")), timeout)
        report(c.describe())


def _retry_remove(engine: Engine, action: str, path: str, ident: str, timeout: float) -> None:
    """Removing a network or secret fails while a task still uses it: retry until it goes or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            engine.request(action, "DELETE", path, params={"_args": (ident,)})
            return
        except HostError as e:
            if "not found" in e.message.lower() or "no such" in e.message.lower():
                return
            if time.monotonic() > deadline:
                raise
            last = e
        log.debug("%s: %s; retrying", action, last)
        time.sleep(0.5)


def _wait_tasks_gone(engine: Engine, service_ids: list[str], timeout: float) -> None:
    """Wait until no task of the removed services runs (their containers hold networks and secrets)."""
    deadline = time.monotonic() + timeout
    ids = set(service_ids)
    while True:
        # all tasks, filtered here: a filter on a removed service's ID is an error, not an empty list
        left = [
            t
            for t in engine.call("list tasks", engine.api.tasks)
            if t.get("ServiceID") in ids
            and t.get("Status", {}).get("State")
            in ("new", "pending", "assigned", "accepted", "preparing", "ready", "starting", "running")
        ]
        if not left:
            return
        if time.monotonic() > deadline:
            raise TimeoutExpired(f"{len(left)} tasks of removed services still running after {timeout:g}s")
        time.sleep(0.5)


# -- convergence -------------------------------------------------------------------------------------


@dataclass
class Progress:
    service: str
    running: int = 0
    desired: int = 0
    state: str = "pending"  # pending | updating | converged | failed | rolled back
    message: str = ""


def _parse_time(text: str | None) -> float:
    if not text:
        return 0.0
    # Docker prints RFC 3339 with nanoseconds; Python parses microseconds
    main, _, frac = text.rstrip("Z").partition(".")
    frac = (frac[:6] if frac else "0").ljust(6, "0")
    tz = timezone.utc
    stamp = datetime.strptime(main[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=tz)
    return stamp.timestamp() + int(frac) / 1e6


def _task_spec_matches(task: Mapping[str, Any], service: Mapping[str, Any]) -> bool:
    """Whether a task runs the service's current spec (an update replaces the others)."""
    return bool(
        comparable_task(task.get("Spec", {}), {}) == comparable_task(service["Spec"].get("TaskTemplate", {}), {})
    )


def _task_error(task: Mapping[str, Any], node_names: Mapping[str, str]) -> str:
    st = task.get("Status", {})
    node = node_names.get(task.get("NodeID", ""), task.get("NodeID", "")[:12] or "no node")
    err = st.get("Err") or st.get("Message") or st.get("State")
    return f"task {task['ID'][:12]} on {node}: {st.get('State')}: {err}"


def wait_converged(
    engine: Engine,
    services: Iterable[str],
    updated: Mapping[str, float],
    timeout: float = DEFAULT_TIMEOUT,
    on_progress: Callable[[Progress], None] = lambda p: None,
    poll: float = 0.5,
) -> dict[str, Progress]:
    """Wait until every service's up-to-date tasks run (healthy where checked) for its monitor window.

    Args:
        services: full service names to watch.
        updated: names created or updated in this run -> when (engine time) we wrote them; an
            update status is ours only when it started then or later.

    Raises:
        ClusterError: a service rolled back, paused, or its tasks keep failing (with task errors).
        TimeoutExpired: naming the services not converged and their last task errors.
    """
    names = list(services)
    info = engine.info()
    server_start = _parse_time(info.get("SystemTime"))
    local_start = time.monotonic()
    node_names = {
        n["ID"]: (n.get("Description") or {}).get("Hostname", "") for n in engine.call("list nodes", engine.api.nodes)
    }
    progress = {n: Progress(n) for n in names}
    last_seen: dict[str, tuple[Any, ...]] = {}
    deadline = local_start + timeout
    while True:
        server_now = server_start + (time.monotonic() - local_start)
        listed = {s["Spec"]["Name"]: s for s in engine.call("list services", engine.api.services, status=True)}
        pending = []
        for name in names:
            svc = listed.get(name)
            p = progress[name]
            if svc is None:
                p.state, p.message = "failed", "service disappeared"
            else:
                _assess(engine, svc, p, updated.get(name), server_start, server_now, node_names)
            key = (p.running, p.desired, p.state, p.message)
            if last_seen.get(name) != key:
                last_seen[name] = key
                on_progress(p)
            if p.state not in ("converged",):
                pending.append(p)
        failed = [p for p in pending if p.state in ("failed", "rolled back")]
        if failed and all(p.state in ("failed", "rolled back", "converged") for p in progress.values()):
            raise ClusterError("; ".join(f"{p.service} {p.state}: {p.message}" for p in failed))
        if not pending:
            return progress
        if time.monotonic() > deadline:
            detail = "; ".join(
                f"{p.service} ({p.running}/{p.desired} running{': ' + p.message if p.message else ''})" for p in pending
            )
            raise TimeoutExpired(f"not converged after {timeout:g}s: {detail}")
        time.sleep(poll)


def _assess(
    engine: Engine,
    svc: Mapping[str, Any],
    p: Progress,
    written_at: float | None,
    server_start: float,
    server_now: float,
    node_names: Mapping[str, str],
) -> None:
    spec = svc["Spec"]
    mode = spec.get("Mode", {})
    status = svc.get("UpdateStatus") or {}
    was_updated = written_at is not None
    # a rollback moves UpdatedAt but keeps the update's StartedAt: compare with our own write
    ours = was_updated and bool(written_at) and _parse_time(status.get("StartedAt")) >= (written_at or 0) - 1
    state = status.get("State", "") if ours else ""
    if state in ROLLBACK_STATES:
        p.state = "rolled back" if state.startswith("rollback") else "failed"
        p.message = f"update {state.replace('_', ' ')}: {status.get('Message', '')}".strip()
        if state in ("rollback_started",):
            p.state = "updating"  # the rollback is still running; report it when it ends
            p.message = f"rolling back: {status.get('Message', '')}"
        elif state == "rollback_completed":
            p.state = "rolled back"
        return
    tasks = engine.call(f"list tasks of {spec['Name']}", engine.api.tasks, filters={"service": svc["ID"]})
    is_job = "ReplicatedJob" in mode or "GlobalJob" in mode
    if "Replicated" in mode:
        p.desired = int(mode["Replicated"].get("Replicas", 1))
    elif "ReplicatedJob" in mode:
        p.desired = int(mode["ReplicatedJob"].get("TotalCompletions", 1) or 1)
    else:
        p.desired = int((svc.get("ServiceStatus") or {}).get("DesiredTasks", 0))
        if is_job:
            p.desired = len({t.get("NodeID") for t in tasks if t.get("NodeID")}) or p.desired
    current = [t for t in tasks if _task_spec_matches(t, svc)]
    recent_failures = [
        t
        for t in current
        if t.get("Status", {}).get("State") in FAILED_STATES and _parse_time(t.get("CreatedAt")) >= server_start - 1
    ]
    if is_job:
        done = [t for t in current if t.get("Status", {}).get("State") == "complete"]
        p.running = len(done)
        if p.running >= p.desired and p.desired > 0:
            p.state, p.message = "converged", "job complete"
            return
    else:
        running = [
            t for t in current if t.get("DesiredState") == "running" and t.get("Status", {}).get("State") == "running"
        ]
        p.running = len(running)
        monitor = int((spec.get("UpdateConfig") or {}).get("Monitor") or DEFAULT_MONITOR_NS) / 1e9
        stable = all(server_now - _parse_time(t.get("Status", {}).get("Timestamp")) >= monitor for t in running)
        if p.running >= p.desired and (state in ("", "completed")) and stable:
            p.state, p.message = "converged", ""
            return
        if p.running >= p.desired and not stable:
            p.state, p.message = "updating", f"running; watching for {monitor:g}s"
            return
    if len(recent_failures) >= FAILURES_BEFORE_GIVING_UP or (
        recent_failures
        and not any(
            t.get("DesiredState") in ("running", "ready", "complete")
            and t.get("Status", {}).get("State") not in FAILED_STATES
            for t in current
        )
        and not _restarts(spec)
    ):
        latest = sorted(recent_failures, key=lambda t: _parse_time(t.get("Status", {}).get("Timestamp")))[-2:]
        p.state = "failed"
        p.message = "; ".join(_task_error(t, node_names) for t in latest)
        return
    p.state = "updating" if state == "updating" or was_updated else "pending"
    waiting = [
        t for t in current if t.get("DesiredState") == "running" and t.get("Status", {}).get("State") != "running"
    ]
    if waiting:
        t = sorted(waiting, key=lambda t: _parse_time(t.get("Status", {}).get("Timestamp")))[-1]
        st = t.get("Status", {})
        p.message = f"{st.get('State')}" + (f": {st.get('Err')}" if st.get("Err") else "")
    elif recent_failures:
        p.message = _task_error(recent_failures[-1], node_names)
    else:
        p.message = ""


def _restarts(spec: Mapping[str, Any]) -> bool:
    policy = (spec.get("TaskTemplate") or {}).get("RestartPolicy") or {}
    return policy.get("Condition", "any") != "none"


# -- the whole command ---------------------------------------------------------------------------------


@dataclass
class DeployResult:
    changes: list[Change]
    progress: dict[str, Progress] = field(default_factory=dict)
    waited: bool = False
    seconds: float = 0.0
    superseded: list[str] = field(default_factory=list)  # old secret versions removed after convergence
    rollout: list[Any] = field(default_factory=list)  # rollout.StepResult of each updated service


def deploy_stack(
    engine: Engine,
    desired: DesiredStack,
    *,
    prune: bool = False,
    plan_only: bool = False,
    wait: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    report: Report = lambda _: None,
    on_progress: Callable[[Progress], None] = lambda p: None,
    gates: Any = None,
) -> DeployResult:
    """Plan and (unless ``plan_only``) apply a stack, then wait for it to converge.

    Updates of existing services go through the rollout engine: one service at a time, behind
    health and application gates (``gates``: rollout.AppGates), unless ``wait`` is off.
    """
    from swarmctl.rollout import Step, roll_out

    t0 = time.monotonic()
    current = read_current(engine, desired)
    plan = plan_stack(desired, current, prune)
    result = DeployResult(list(plan.changes))
    if plan_only:
        return result
    ids: dict[str, str] = {}
    updated = apply_plan(engine, desired, current, plan, report, update_services=not wait, ids=ids)
    if wait:
        steps = [
            Step(c.name, c.name.removeprefix(f"{desired.name}_"), current.services[c.name],
                 _service_spec_for(desired.services[c.name], current.services[c.name], ids), c.fields)
            for c in plan.changes
            if c.kind == "service" and c.action == "update"
        ]  # fmt: skip
        result.rollout = roll_out(engine, steps, gates, timeout, report, on_progress)
    if wait and desired.services:
        result.waited = True
        result.progress = wait_converged(engine, sorted(desired.services), updated, timeout, on_progress)
    if wait and _versioned_bases(desired):
        result.superseded = remove_superseded(engine, desired, report)
    result.seconds = time.monotonic() - t0
    return result


def remove_stack(engine: Engine, stack: str, report: Report = lambda _: None, timeout: float = 120) -> list[Change]:
    """Remove every object labelled with the stack; wait until its tasks and networks are gone."""
    empty = DesiredStack(stack, {}, [], {}, {}, {})
    current = read_current(engine, empty)
    if not any((current.services, current.networks, current.secrets, current.configs)):
        raise ClusterError(f"no stack {stack!r} on this swarm (nothing is labelled {NAMESPACE_LABEL}={stack})")
    plan = plan_stack(empty, current, prune=True)
    removals = [c for c in plan.changes if c.action == "remove"]
    _remove(engine, current, removals, report, timeout)
    deadline = time.monotonic() + timeout
    while True:
        left = [n["Name"] for n in engine.call("list networks", engine.api.networks, filters=_label_filter(stack))]
        if not left:
            return removals
        if time.monotonic() > deadline:
            raise TimeoutExpired(f"networks still present after {timeout:g}s: {', '.join(left)}")
        time.sleep(0.5)


__all__ = [
    "Change",
    "DeployResult",
    "Plan",
    "Progress",
    "SwarmctlError",
    "deploy_stack",
    "plan_stack",
    "read_current",
    "remove_stack",
    "wait_converged",
]
