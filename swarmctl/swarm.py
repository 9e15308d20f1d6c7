"""Bootstrap: read state -> plan (pure) -> apply. Idempotent; a second run changes nothing.

1. Preflight on every host in parallel (preflight.py); a host that fails is left alone and named.
2. Membership: init the swarm on the first manager when no inventory manager runs one, then join
   every other host with the token of its role, in parallel. Hosts in another swarm are an error
   unless ``force`` (they leave it first); a half-done join (pending/error) is redone.
3. Nodes: roles (promotions before demotions, so quorum never shrinks first), labels and
   availability as the inventory says. Nodes the inventory does not name are left alone unless
   ``prune`` (drain, demote, remove).
Join tokens stay in memory: never printed, logged or put in an error message.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from swarmctl.engine import Engine, Session
from swarmctl.errors import HostError, TimeoutExpired
from swarmctl.inventory import Host, Inventory
from swarmctl.preflight import SWARM_PORT, HostFacts, kernel_warnings, port_failure_message, preflight

log = logging.getLogger(__name__)

Report = Callable[[str, str], None]  # (host, message)


@dataclass(frozen=True)
class Change:
    """One thing bootstrap did (or, in a plan, would do) to one host or node."""

    host: str
    action: (
        str  # init | leave | join-manager | join-worker | promote | demote | label | unlabel | availability | remove
    )
    detail: str = ""

    def describe(self) -> str:
        return f"{self.action} {self.detail}".strip()


@dataclass(frozen=True)
class NodeView:
    """A swarm node as a manager reports it."""

    id: str
    hostname: str
    role: str
    availability: str
    labels: Mapping[str, str]
    state: str
    addr: str
    leader: bool
    reachability: str
    engine_version: str
    version: int
    spec: Mapping[str, Any]


def node_view(raw: Mapping[str, Any]) -> NodeView:
    spec = raw.get("Spec") or {}
    manager = raw.get("ManagerStatus") or {}
    addr = (raw.get("Status") or {}).get("Addr", "")
    if addr in ("", "0.0.0.0") and manager.get("Addr"):
        # some engines report 0.0.0.0 for managers here; the raft address is the real one
        addr = str(manager["Addr"]).rsplit(":", 1)[0]
    return NodeView(
        id=raw["ID"],
        hostname=(raw.get("Description") or {}).get("Hostname", ""),
        role=spec.get("Role", "worker"),
        availability=spec.get("Availability", "active"),
        labels=dict(spec.get("Labels") or {}),
        state=(raw.get("Status") or {}).get("State", "unknown"),
        addr=addr,
        leader=bool(manager.get("Leader")),
        reachability=manager.get("Reachability", ""),
        engine_version=((raw.get("Description") or {}).get("Engine") or {}).get("EngineVersion", ""),
        version=int((raw.get("Version") or {}).get("Index", 0)),
        spec=dict(spec),
    )


def read_nodes(engine: Engine) -> list[NodeView]:
    return [node_view(n) for n in engine.call("list swarm nodes", engine.api.nodes)]


# -- planning (pure) -----------------------------------------------------------------------------


@dataclass(frozen=True)
class MembershipPlan:
    anchor: str | None  # the manager the swarm is run through; None: nothing can be done
    init: str | None  # host that initializes a new swarm
    leave: tuple[str, ...]  # hosts that leave their current swarm before joining
    join: tuple[tuple[str, str], ...]  # (host, role)
    members: tuple[str, ...]  # hosts already in the swarm
    errors: Mapping[str, str] = field(default_factory=dict)  # host -> why it is left alone


def choose_anchor(inventory: Inventory, facts: Mapping[str, HostFacts]) -> str | None:
    """The first inventory manager (in file order) that runs a swarm manager (pure)."""
    for host in inventory.managers:
        f = facts.get(host.name)
        if f is not None and f.in_swarm and f.control_available:
            return host.name
    return None


def plan_membership(
    inventory: Inventory,
    facts: Mapping[str, HostFacts],
    cluster_nodes: frozenset[str] | None,
    force: bool = False,
) -> MembershipPlan:
    """Who inits, who leaves, who joins with which role (pure).

    Args:
        facts: hosts that passed preflight; hosts missing here are skipped silently (the caller
            already reports why).
        cluster_nodes: node IDs of the swarm run by the anchor, None when there is no swarm yet.
    """
    errors: dict[str, str] = {}
    leave: list[str] = []
    join: list[tuple[str, str]] = []
    members: list[str] = []
    anchor = choose_anchor(inventory, facts)
    init = None
    if anchor is None:
        first = inventory.managers[0]
        f = facts.get(first.name)
        blocked = None
        if f is None:
            blocked = f"the swarm cannot be initialized: the first manager {first.name} failed preflight"
        elif f.swarm_state == "locked":
            blocked = f"the swarm cannot be initialized: {first.name} is in a locked swarm"
        elif f.in_swarm and not force:
            errors[first.name] = _foreign(f)
            blocked = f"the swarm cannot be initialized: {first.name} is in another swarm"
        if blocked:
            for host in inventory.hosts:
                if host.name in facts and host.name not in errors:
                    errors[host.name] = blocked
            return MembershipPlan(None, None, (), (), (), errors)
        assert f is not None
        init = anchor = first.name
        if f.swarm_state != "inactive":
            leave.append(first.name)
    for host in inventory.hosts:
        f = facts.get(host.name)
        if f is None or host.name == init:
            continue
        if f.swarm_state == "locked":
            errors[host.name] = "its swarm is locked (autolock): run `docker swarm unlock` on it first"
        elif f.in_swarm:
            if cluster_nodes is not None and f.node_id in cluster_nodes:
                members.append(host.name)
            elif force:
                leave.append(host.name)
                join.append((host.name, host.role))
            else:
                errors[host.name] = _foreign(f)
        else:
            if f.swarm_state != "inactive":  # pending/error: a join that never finished
                leave.append(host.name)
            join.append((host.name, host.role))
    return MembershipPlan(anchor, init, tuple(leave), tuple(join), tuple(members), errors)


def _foreign(f: HostFacts) -> str:
    what = f"cluster {f.cluster_id[:12]}" if f.cluster_id else f"node {f.node_id[:12]}"
    return f"already in another swarm ({what}); use --force to make it leave that swarm and join this one"


@dataclass(frozen=True)
class NodeUpdate:
    node_id: str
    host: str
    version: int
    spec: Mapping[str, Any]
    changes: tuple[Change, ...]


@dataclass(frozen=True)
class NodePlan:
    updates: tuple[NodeUpdate, ...]  # in apply order: promotions first, demotions last
    removals: tuple[NodeView, ...]  # nodes to remove after their update (prune)
    warnings: tuple[str, ...] = ()


def plan_nodes(
    inventory: Inventory,
    node_ids: Mapping[str, str],
    nodes: list[NodeView],
    prune: bool = False,
) -> NodePlan:
    """Roles, labels and availability the inventory asks for (pure).

    Args:
        node_ids: inventory host name -> its swarm node ID (hosts that are members).
        nodes: every node of the swarm, as the anchor manager reports it.
    """
    by_id = {n.id: n for n in nodes}
    promote: list[NodeUpdate] = []
    other: list[NodeUpdate] = []
    demote: list[NodeUpdate] = []
    for host in inventory.hosts:
        node = by_id.get(node_ids.get(host.name, ""))
        if node is None:
            continue
        spec = dict(node.spec)
        changes: list[Change] = []
        if node.role != host.role:
            spec["Role"] = host.role
            changes.append(Change(host.name, "promote" if host.is_manager else "demote", f"to {host.role}"))
        labels = dict(node.labels)
        for key, value in host.labels.items():
            if labels.get(key) != value:
                labels[key] = value
                changes.append(Change(host.name, "label", f"{key}={value}"))
        if prune:
            for key in sorted(set(labels) - set(host.labels)):
                del labels[key]
                changes.append(Change(host.name, "unlabel", key))
        spec["Labels"] = labels
        if host.availability and node.availability != host.availability:
            spec["Availability"] = host.availability
            changes.append(Change(host.name, "availability", host.availability))
        if not changes:
            continue
        update = NodeUpdate(node.id, host.name, node.version, spec, tuple(changes))
        if node.role != host.role:
            (promote if host.is_manager else demote).append(update)
        else:
            other.append(update)

    known = set(node_ids.values())
    extras = [n for n in nodes if n.id not in known]
    warnings: list[str] = []
    removals: list[NodeView] = []
    for n in extras:
        label = f"{n.hostname or n.id[:12]} ({n.role}, {n.state}, id {n.id[:12]})"
        if not prune:
            warnings.append(f"node {label} is in the swarm but not in the inventory: left alone (--prune removes it)")
            continue
        spec = dict(n.spec)
        changes = []
        if n.role == "manager":
            spec["Role"] = "worker"
            changes.append(Change(n.hostname or n.id[:12], "demote", "to worker (not in the inventory)"))
        if n.availability != "drain" and n.state == "ready":
            spec["Availability"] = "drain"
            changes.append(Change(n.hostname or n.id[:12], "availability", "drain (not in the inventory)"))
        if changes:
            demote.append(NodeUpdate(n.id, n.hostname or n.id[:12], n.version, spec, tuple(changes)))
        removals.append(n)
    return NodePlan(tuple(promote + other + demote), tuple(removals), tuple(warnings))


def duplicate_hostnames(inventory: Inventory, facts: Mapping[str, HostFacts]) -> dict[str, str]:
    """Hosts reporting a hostname an earlier inventory host already has -> error (pure)."""
    counts = Counter(f.hostname for f in facts.values())
    first: dict[str, str] = {}
    errors = {}
    for host in inventory.hosts:
        f = facts.get(host.name)
        if f is None or counts[f.hostname] < 2:
            continue
        if f.hostname in first:
            errors[host.name] = (
                f"hostname {f.hostname!r} is also the hostname of {first[f.hostname]}: swarm node names "
                "must be unique (set a distinct hostname on each host)"
            )
        else:
            first[f.hostname] = host.name
    return errors


# -- apply ---------------------------------------------------------------------------------------


@dataclass
class BootstrapResult:
    changes: list[Change] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)  # host -> why
    swarm_ready: bool = False  # a swarm exists and the anchor manager answers
    nodes: int = 0


def bootstrap(
    session: Session,
    force: bool = False,
    prune: bool = False,
    report: Report = lambda host, msg: None,
    join_timeout: float = 60.0,
) -> BootstrapResult:
    """Make the swarm match the inventory. Failures on some hosts do not stop the others.

    Returns:
        What changed, warnings, and per-host failures (the caller decides the exit status).
    """
    inv = session.inventory
    result = BootstrapResult()
    result.warnings.extend(inv.warnings)

    checked = preflight(session, inv.hosts)
    for name, o in checked.items():
        if o.error is not None:
            result.failures[name] = _message(o.error)
    unreachable = set(result.failures)
    facts: dict[str, HostFacts] = {}
    for name, o in checked.items():
        if o.value is None:
            continue
        # a probe towards a host that is down says nothing about this host
        bad = o.value.port_failures(ignore=unreachable)
        if bad:
            result.failures[name] = port_failure_message(bad)
        else:
            facts[name] = o.value.facts
    for name, why in duplicate_hostnames(inv, facts).items():
        result.failures[name] = why
        facts.pop(name)
    result.warnings.extend(kernel_warnings(o.value.facts for o in checked.values() if o.value is not None))

    anchor_name = choose_anchor(inv, facts)
    cluster_nodes = None
    if anchor_name is not None:
        nodes = read_nodes(session.engine(anchor_name))
        cluster_nodes = frozenset(n.id for n in nodes)
    plan = plan_membership(inv, facts, cluster_nodes, force)
    result.failures.update(plan.errors)
    if plan.anchor is None:
        return result

    anchor = session.engine(plan.anchor)
    node_ids = {name: facts[name].node_id for name in plan.members}
    if plan.init is not None:
        host = inv.host(plan.init)
        try:
            if plan.init in plan.leave:
                _leave(session.engine(host))
                result.changes.append(Change(host.name, "leave", "its earlier swarm (--force)"))
            _init(anchor, host)
        except HostError as e:
            result.failures[host.name] = e.message
            for name, _ in plan.join:
                result.failures.setdefault(name, f"not joined: the swarm could not be initialized on {host.name}")
            return result
        node_ids[host.name] = _node_id(anchor)
        result.changes.append(Change(host.name, "init", f"new swarm, advertising {host.address}"))
        report(host.name, f"initialized the swarm (advertise address {host.address})")
    result.swarm_ready = True

    if plan.join:
        tokens = anchor.call("read join tokens", anchor.api.inspect_swarm)["JoinTokens"]
        managers = [inv.host(plan.anchor).address] + [
            inv.host(n).address for n in plan.members if inv.host(n).is_manager and n != plan.anchor
        ]
        remotes = [f"{a}:{SWARM_PORT}" for a in managers]
        joins = dict(plan.join)

        def join_one(host: Host) -> str:
            engine = session.engine(host)
            if host.name in plan.leave:
                _leave(engine)
                report(host.name, "left its earlier swarm")
            token = tokens["Manager" if joins[host.name] == "manager" else "Worker"]
            _join(engine, host, remotes, token)
            return _node_id(engine)

        joined = session.fan_out(join_one, [inv.host(n) for n, _ in plan.join])
        for name, done in joined.items():
            if done.error is not None:
                result.failures[name] = _message(done.error)
                continue
            assert done.value is not None
            node_ids[name] = done.value
            if name in plan.leave:
                result.changes.append(Change(name, "leave", "its earlier swarm"))
            result.changes.append(Change(name, f"join-{joins[name]}", f"as {joins[name]}"))
            report(name, f"joined as {joins[name]} in {done.seconds:.1f}s")
        new_ids = {node_ids[n] for n, _ in plan.join if n in node_ids}
        try:
            _wait_registered(anchor, new_ids, join_timeout)
        except TimeoutExpired as e:
            result.failures[plan.anchor] = str(e)
            return result

    nodes = read_nodes(anchor)
    node_plan = plan_nodes(inv, node_ids, nodes, prune)
    result.warnings.extend(node_plan.warnings)
    for update in node_plan.updates:
        try:
            anchor.call(
                f"update node {update.host}", anchor.api.update_node, update.node_id, update.version, dict(update.spec)
            )
        except HostError as e:
            result.failures[update.host] = e.message
            continue
        for c in update.changes:
            result.changes.append(c)
            report(c.host, c.describe())
    for node in node_plan.removals:
        name = node.hostname or node.id[:12]
        try:
            anchor.call(f"remove node {name}", anchor.api.remove_node, node.id, force=True)
        except HostError as e:
            result.failures[name] = e.message
            continue
        result.changes.append(Change(name, "remove", f"node {node.id[:12]} (not in the inventory)"))
        report(name, "removed from the swarm (not in the inventory)")
    result.nodes = len(read_nodes(anchor)) if node_plan.removals else len(nodes)
    return result


def _message(e: BaseException) -> str:
    return e.message if isinstance(e, HostError) else str(e)


def _node_id(engine: Engine) -> str:
    return str((engine.info().get("Swarm") or {}).get("NodeID", ""))


def _init(engine: Engine, host: Host) -> None:
    engine.call(
        "initialize the swarm",
        engine.api.init_swarm,
        advertise_addr=host.address,
        listen_addr=f"0.0.0.0:{SWARM_PORT}",
    )


def _leave(engine: Engine) -> None:
    engine.call("leave the earlier swarm", engine.api.leave_swarm, force=True)


def _join(engine: Engine, host: Host, remotes: list[str], token: str) -> None:
    try:
        engine.call(
            "join the swarm",
            engine.api.join_swarm,
            remote_addrs=remotes,
            join_token=token,
            listen_addr=f"0.0.0.0:{SWARM_PORT}",
            advertise_addr=host.address,
        )
    except HostError as e:
        # the engine's message should never carry the token, but make sure no error ever does
        raise HostError(e.host, e.message.replace(token, "<join token>")) from None


def _wait_registered(anchor: Engine, node_ids: set[str], timeout: float) -> None:
    """Poll until every joined node is listed and ready on the anchor manager."""
    deadline = time.monotonic() + timeout
    seen: dict[str, str] = {}
    while True:
        nodes = {n.id: n for n in read_nodes(anchor)}
        seen = {i: (nodes[i].state if i in nodes else "not listed") for i in node_ids}
        if all(s == "ready" for s in seen.values()):
            return
        if time.monotonic() > deadline:
            detail = ", ".join(f"{i[:12]}: {s}" for i, s in sorted(seen.items()))
            raise TimeoutExpired(f"joined nodes not ready after {timeout:g}s ({detail})")
        time.sleep(0.5)


# -- status --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceView:
    name: str
    mode: str
    running: int
    desired: int
    image: str
    stack: str


@dataclass(frozen=True)
class ClusterStatus:
    manager: str  # the inventory host that answered
    nodes: tuple[NodeView, ...]
    services: tuple[ServiceView, ...]
    names: Mapping[str, str]  # node ID -> inventory host name


def read_status(session: Session) -> ClusterStatus:
    """Nodes and services as the first answering manager sees them."""
    engine = session.manager()
    nodes = read_nodes(engine)
    by_addr = {h.address: h.name for h in session.inventory.hosts}
    by_hostname = {h.name: h.name for h in session.inventory.hosts}
    names = {}
    for n in nodes:
        name = by_addr.get(n.addr) or by_hostname.get(n.hostname)
        if name:
            names[n.id] = name
    services = []
    for s in engine.call("list services", engine.api.services, status=True):
        spec = s.get("Spec") or {}
        mode = "global" if "Global" in (spec.get("Mode") or {}) else "replicated"
        if "ReplicatedJob" in (spec.get("Mode") or {}) or "GlobalJob" in (spec.get("Mode") or {}):
            mode = "job"
        st = s.get("ServiceStatus") or {}
        image = ((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Image", "")
        services.append(
            ServiceView(
                name=spec.get("Name", s["ID"]),
                mode=mode,
                running=int(st.get("RunningTasks", 0)),
                desired=int(st.get("DesiredTasks", 0)),
                image=image.split("@", 1)[0],
                stack=(spec.get("Labels") or {}).get("com.docker.stack.namespace", ""),
            )
        )
    services.sort(key=lambda s: s.name)
    nodes.sort(key=lambda n: (n.role != "manager", n.hostname))
    return ClusterStatus(engine.name, tuple(nodes), tuple(services), names)
