"""Bootstrap: read facts -> plan (pure) -> apply. Idempotent; a second run changes nothing.

1. Read: preflight on every host in parallel (``facts.host``); the swarm's nodes from the first
   inventory manager that runs one (the anchor). A host that fails is left alone and named.
2. Plan (``plan_bootstrap``, pure): membership - init the swarm on the first manager when no
   inventory manager runs one, join every other host with the token of its role; hosts in another
   swarm are an error unless ``force`` (they leave it first), a half-done join (pending/error) is
   redone - then nodes: roles (promotions before demotions, so quorum never shrinks first), labels
   and availability as the inventory says, predicted for the hosts that are about to join. Nodes
   the inventory does not name are left alone unless ``prune`` (drain, demote, remove).
3. Apply: membership changes (joins in parallel), then the node changes, planned again from the
   nodes as they are after the joins (they match the plan unless something else changed them).
Join tokens stay in memory: never printed, logged or put in an error message.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from swarmctl.errors import EngineError, HostError, NotFound, Refused, TimeoutExpired, message_of
from swarmctl.facts.host import SWARM_PORT, HostFacts, kernel_warnings, port_failure_message, preflight
from swarmctl.facts.membership import read_membership, refuse_shared_node_ids
from swarmctl.facts.nodes import NodeView, match_hosts, read_nodes
from swarmctl.inventory import Host, Inventory, majority
from swarmctl.ops.autolock import AutolockState, apply_autolock, keyring, plan_autolock, read_autolock
from swarmctl.ops.engine_config import BACK_TIMEOUT, configure_engines
from swarmctl.plan import Change, Notify, Plan, Report, quiet
from swarmctl.secretstore import KeySource
from swarmctl.transport.engine import Engine, Session
from swarmctl.wait import Pending, until

log = logging.getLogger(__name__)

JOIN_TIMEOUT = 60.0
REMOVE_TIMEOUT = 60.0  # a demoted manager leaves raft before its node can be removed
POLL = 0.5

# -- read ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BootstrapState:
    """What bootstrap knows before it changes anything.

    Attributes:
        facts: every host that answered preflight (also those that failed a check after answering).
        ready: hosts that passed preflight: only these are changed.
        blocked: host -> why it fails (unreachable, failed a check).
        nodes: the swarm's nodes as the anchor manager reports them; None without an anchor.
    """

    inventory: Inventory
    facts: Mapping[str, HostFacts]
    ready: frozenset[str]
    blocked: Mapping[str, str]
    nodes: tuple[NodeView, ...] | None
    warnings: tuple[str, ...] = ()

    def usable(self) -> dict[str, HostFacts]:
        return {n: f for n, f in self.facts.items() if n in self.ready}


def read_state(session: Session) -> BootstrapState:
    """Preflight every host (in parallel) and read the swarm's nodes through the anchor manager."""
    inv = session.inventory
    checked = preflight(session, inv.hosts)
    blocked: dict[str, str] = {name: message_of(o.error) for name, o in checked.items() if o.error is not None}
    unreachable = set(blocked)
    facts: dict[str, HostFacts] = {}
    for name, o in checked.items():
        if o.value is None:
            continue
        facts[name] = o.value.facts
        # a probe towards a host that is down says nothing about this host
        bad = o.value.port_failures(ignore=unreachable)
        if bad:
            blocked[name] = port_failure_message(bad)
    refuse_shared_node_ids({n: f.node_id for n, f in facts.items()})
    blocked.update(duplicate_hostnames(inv, {n: f for n, f in facts.items() if n not in blocked}))
    ready = frozenset(n for n in facts if n not in blocked)
    warnings = (*inv.warnings, *kernel_warnings(facts.values()))
    anchor = choose_anchor(inv, {n: f for n, f in facts.items() if n in ready})
    nodes = tuple(read_nodes(session.engine(anchor))) if anchor is not None else None
    return BootstrapState(inv, facts, ready, blocked, nodes, tuple(warnings))


# -- planning (pure) -------------------------------------------------------------------------------


def choose_anchor(inventory: Inventory, facts: Mapping[str, HostFacts]) -> str | None:
    """The first inventory manager (in file order) that runs a swarm manager (pure)."""
    for host in inventory.managers:
        f = facts.get(host.name)
        if f is not None and f.in_swarm and f.control_available:
            return host.name
    return None


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


@dataclass(frozen=True)
class MembershipPlan:
    anchor: str | None  # the manager the swarm is run through; None: nothing can be done
    init: str | None  # host that initializes a new swarm
    leave: tuple[str, ...]  # hosts that leave their current swarm before joining
    join: tuple[tuple[str, str], ...]  # (host, role)
    members: tuple[str, ...]  # hosts already in the swarm
    errors: Mapping[str, str] = field(default_factory=dict)  # host -> why it is left alone


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
        # hosts that say they are in a swarm whose managers cannot be reached (a worker, a locked
        # node: a reachable manager of another swarm is just a foreign swarm, refused per host):
        # a new swarm beside theirs would split the cluster, so init waits for proof that it is
        # gone (--force, every host reachable)
        stranded = sorted(
            n for n, hf in facts.items() if (hf.in_swarm and not hf.control_available) or hf.swarm_state == "locked"
        )
        if f is None:
            blocked = f"the swarm cannot be initialized: the first manager {first.name} failed preflight"
        elif f.swarm_state == "locked":
            blocked = f"the swarm cannot be initialized: {first.name} is locked: run `swarmctl unlock`"
        elif f.in_swarm and not force:
            errors[first.name] = _foreign(f)
            blocked = f"the swarm cannot be initialized: {first.name} is in another swarm"
        elif stranded and not force:
            blocked = (
                f"refusing to initialize a new swarm while {', '.join(stranded)} report being in a swarm whose "
                "managers cannot be reached (a second swarm would split the cluster): bring a manager of that "
                "swarm back, or, if it is gone for good, run with --force (every inventory host reachable)"
            )
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
            errors[host.name] = "locked: run `swarmctl unlock`"
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
    refused: Mapping[str, str] = field(default_factory=dict)  # node -> why its demotion/removal is refused
    stale: Mapping[str, str] = field(default_factory=dict)  # node ID -> the inventory host that replaced it

    @property
    def changes(self) -> list[Change]:
        out = [c for u in self.updates for c in u.changes]
        return out + [removal_change(n, self.stale.get(n.id, "")) for n in self.removals]


def removal_change(node: NodeView, replaced_by: str = "") -> Change:
    if replaced_by:
        return Change("node", node.label, "remove", detail=f"stale node {node.id[:12]} ({node.state}): "
                      f"{replaced_by} is another node now")  # fmt: skip
    return Change("node", node.label, "remove", detail=f"node {node.id[:12]} (not in the inventory)")


def is_gone(node: NodeView) -> bool:
    """Down as far as the swarm can tell: not ready, and not a reachable manager (pure)."""
    return not node.ready and not (node.is_manager and node.reachability == "reachable")


def stale_owner(node: NodeView, members: Mapping[str, NodeView]) -> str:
    """The inventory host a gone node was, when that host is another node now (same address or
    hostname): proof that the node is stale (pure). "" when there is none."""
    if not is_gone(node):
        return ""
    for host, other in members.items():
        if other.id != node.id and (other.addr == node.addr or (node.hostname and other.hostname == node.hostname)):
            return host
    return ""


def plan_nodes(
    inventory: Inventory,
    members: Mapping[str, NodeView],
    nodes: list[NodeView],
    prune: bool = False,
    claimed: frozenset[str] = frozenset(),
    stale_ok: bool = True,
) -> NodePlan:
    """Roles, labels and availability the inventory asks for (pure).

    Args:
        members: inventory host name -> its swarm node (hosts that are, or are about to be, members).
        nodes: every node of the swarm, as the anchor manager reports it.
        claimed: IDs of nodes that belong to inventory hosts left alone this time (unreachable,
            failed preflight): never treated as nodes the inventory does not name.
        stale_ok: remove stale nodes (``stale_owner``) without ``prune``; False while an
            inventory host cannot be checked.
    """
    promote: list[NodeUpdate] = []
    other: list[NodeUpdate] = []
    demote: list[NodeUpdate] = []
    for host in inventory.hosts:
        node = members.get(host.name)
        if node is None:
            continue
        spec = dict(node.spec)
        changes: list[Change] = []
        if node.role != host.role:
            spec["Role"] = host.role
            action = "promote" if host.is_manager else "demote"
            changes.append(Change("node", host.name, action, ("Role",), f"to {host.role}"))
        labels = dict(node.labels)
        for key, value in host.labels.items():
            if labels.get(key) != value:
                labels[key] = value
                changes.append(Change("node", host.name, "label", (f"Labels.{key}",), f"{key}={value}"))
        if prune:
            for key in sorted(set(labels) - set(host.labels)):
                del labels[key]
                changes.append(Change("node", host.name, "unlabel", (f"Labels.{key}",), key))
        spec["Labels"] = labels
        if host.availability and node.availability != host.availability:
            spec["Availability"] = host.availability
            changes.append(Change("node", host.name, "availability", ("Availability",), host.availability))
        if not changes:
            continue
        update = NodeUpdate(node.id, host.name, node.version, spec, tuple(changes))
        if node.role != host.role:
            (promote if host.is_manager else demote).append(update)
        else:
            other.append(update)

    known = {n.id for n in members.values()} | claimed
    warnings: list[str] = []
    removals: list[NodeView] = []
    stale: dict[str, str] = {}
    for n in nodes:
        if n.id in known:
            continue
        what = f"{n.label} ({n.role}, {n.state}, id {n.id[:12]})"
        owner = stale_owner(n, members)
        if owner and not stale_ok:
            warnings.append(f"node {what} is stale ({owner} is another node now): left alone while inventory hosts "
                            "cannot be checked; run bootstrap again once they answer")  # fmt: skip
            continue
        if not prune and not owner:
            warnings.append(f"node {what} is in the swarm but not in the inventory: left alone (--prune removes it)")
            continue
        why = f"stale: {owner} is another node now" if owner else "not in the inventory"
        spec = dict(n.spec)
        changes = []
        if n.role == "manager":
            spec["Role"] = "worker"
            changes.append(Change("node", n.label, "demote", ("Role",), f"to worker ({why})"))
        if n.availability != "drain" and n.state == "ready":
            spec["Availability"] = "drain"
            changes.append(Change("node", n.label, "availability", ("Availability",), f"drain ({why})"))
        if changes:
            demote.append(NodeUpdate(n.id, n.label, n.version, spec, tuple(changes)))
        removals.append(n)
        if owner:
            stale[n.id] = owner
    return NodePlan(tuple(promote + other + demote), tuple(removals), tuple(warnings), stale=stale)


def guard_quorum(plan: NodePlan, nodes: list[NodeView], anchor_id: str) -> NodePlan:
    """The node plan minus every demotion or removal that would leave fewer reachable managers than
    a majority of the managers before it, or would remove the manager swarmctl works through (pure).

    Changes are taken in apply order, promotions first: a promotion counts before a demotion.
    """
    managers = {n.id for n in nodes if n.is_manager}
    reachable = {n.id for n in nodes if n.is_manager and n.ready and n.reachability in ("reachable", "")}
    refused: dict[str, str] = {}

    def refusal(node_id: str, name: str, verb: str) -> str:
        if node_id == anchor_id:
            return f"refusing to {verb} {name}: it is the manager swarmctl works through"
        left = reachable - {node_id}
        if len(left) >= majority(len(managers)):
            return ""
        return (
            f"refusing to {verb} {name}: of {len(managers)} managers {len(reachable)} are reachable, and without it "
            f"{len(left)} would be, fewer than a majority ({majority(len(managers))}): bring the unreachable "
            "managers back (or promote another host first), then run again"
        )

    updates = []
    for u in plan.updates:
        role = next((c.action for c in u.changes if c.action in ("promote", "demote")), "")
        if role == "promote":
            managers.add(u.node_id)
            reachable.add(u.node_id)
        elif role == "demote":
            why = refusal(u.node_id, u.host, "demote")
            if why:
                refused[u.host] = why
                continue
            managers.discard(u.node_id)
            reachable.discard(u.node_id)
        updates.append(u)
    removals = []
    for n in plan.removals:
        if n.label in refused:
            refused[n.label] += "; not removed either"
            continue
        if n.id == anchor_id:
            refused[n.label] = f"refusing to remove {n.label}: it is the manager swarmctl works through"
            continue
        removals.append(n)
    return NodePlan(tuple(updates), tuple(removals), plan.warnings, {**plan.refused, **refused}, plan.stale)


def joined_node(host: Host, role: str, address: str = "") -> NodeView:
    """The node a host becomes right after joining (or initializing) a swarm: no labels, active,
    at ``address`` (the one it advertises; default its inventory address)."""
    return NodeView(
        id=f"(new node of {host.name})",
        hostname=host.name,
        role=role,
        availability="active",
        labels={},
        state="ready",
        addr=address or host.address,
        leader=False,
        reachability="reachable" if role == "manager" else "",
        engine_version="",
        version=0,
        spec={"Role": role, "Availability": "active", "Labels": {}},
    )


def stale_before_join(
    inventory: Inventory, m: MembershipPlan, nodes: list[NodeView], facts: Mapping[str, HostFacts], taken: set[str]
) -> dict[str, NodeView]:
    """Hosts about to join whose earlier node is still listed, gone (a replaced machine): that node,
    matched by the host's address, then hostname, among the nodes no member holds (pure)."""
    joining = [inventory.host(n) for n, _ in m.join]
    hostnames = {h.name: facts[h.name].hostname for h in joining if h.name in facts}
    addresses = {h.name: facts[h.name].advertise for h in joining if h.name in facts}
    matched = match_hosts(joining, [n for n in nodes if n.id not in taken], hostnames=hostnames, addresses=addresses)
    return {h: node for h, node in matched.items() if is_gone(node)}


def stale_changes(host: str, node: NodeView) -> list[Change]:
    what = f"its stale node {node.id[:12]} ({node.state})"
    out = [Change("node", host, "demote", ("Role",), f"{what} to worker")] if node.is_manager else []
    return [*out, Change("node", host, "remove", detail=f"{what}: {host} is a new engine")]


def membership_changes(
    inventory: Inventory,
    m: MembershipPlan,
    stale: Mapping[str, NodeView] | None = None,
    addresses: Mapping[str, str] | None = None,
) -> list[Change]:
    changes = []
    if m.init is not None:
        host = inventory.host(m.init)
        if m.init in m.leave:
            changes.append(Change("swarm", host.name, "leave", detail="its earlier swarm (--force)"))
        address = (addresses or {}).get(host.name) or host.address
        changes.append(Change("swarm", host.name, "init", detail=f"new swarm, advertising {address}"))
    # stale nodes go first, so the manager count never grows past what the reachable ones carry
    for name, node in (stale or {}).items():
        changes += stale_changes(name, node)
    for name, role in m.join:
        if name in m.leave:
            changes.append(Change("swarm", name, "leave", detail="its earlier swarm"))
        changes.append(Change("node", name, f"join-{role}", detail=f"as {role}"))
    return changes


@dataclass(frozen=True)
class BootstrapPlan:
    membership: MembershipPlan
    nodes: NodePlan
    plan: Plan
    stale: Mapping[str, NodeView] = field(default_factory=dict)  # joining host -> its old node, removed first


def claimed_nodes(state: BootstrapState, members: Mapping[str, NodeView], nodes: list[NodeView]) -> frozenset[str]:
    """Nodes of the inventory hosts that are not members this time: a host that could not be asked
    or failed preflight still owns its node (matched by the ID it reported, else address, hostname)."""
    inv = state.inventory
    rest = [h for h in inv.hosts if h.name not in members]
    ids = {n: f.node_id for n, f in state.facts.items() if n not in members and f.node_id}
    hostnames = {n: f.hostname for n, f in state.facts.items()}
    addresses = {n: f.advertise for n, f in state.facts.items() if f.advertise}
    return frozenset(n.id for n in match_hosts(rest, nodes, ids, hostnames, addresses).values())


def plan_bootstrap(state: BootstrapState, force: bool = False, prune: bool = False) -> BootstrapPlan:
    """Everything bootstrap would do, in apply order (pure).

    Raises:
        Refused: two hosts report the same node ID; --prune or --force while an inventory host
            cannot be checked (unreachable, failed preflight): what it would prune or re-join could
            be that host's own node.
    """
    inv = state.inventory
    refuse_shared_node_ids({n: f.node_id for n, f in state.facts.items()})
    if (force or prune) and state.blocked:
        flags = " and ".join(f for f, on in (("--prune", prune), ("--force", force)) if on)
        hosts = "; ".join(f"{h} ({why})" for h, why in sorted(state.blocked.items()))
        raise Refused(
            f"refusing {flags} while inventory hosts cannot be checked: {hosts}. Their nodes could be taken for "
            f"nodes of no one, or their swarm for a foreign one: bring them back or take them out of the "
            f"inventory, or run without {flags} (the other hosts are then bootstrapped)"
        )
    usable = state.usable()
    nodes = list(state.nodes or ())
    cluster = frozenset(n.id for n in nodes) if state.nodes is not None else None
    m = plan_membership(inv, usable, cluster, force)
    blocked = {**state.blocked, **m.errors}
    members = match_hosts(
        [inv.host(n) for n in m.members],
        nodes,
        known_ids={n: usable[n].node_id for n in m.members},
    )
    stale = stale_before_join(inv, m, nodes, usable, {n.id for n in members.values()})
    nodes = [n for n in nodes if n.id not in {s.id for s in stale.values()}]
    warnings: list[str] = list(state.warnings)
    if stale and state.blocked:
        for name, node in stale.items():
            warnings.append(f"{name}: its stale node {node.id[:12]} ({node.state}) is left in the swarm while "
                            "inventory hosts cannot be checked; run bootstrap again once they answer")  # fmt: skip
        stale = {}
    future = dict(members)
    addresses = {n: f.advertise for n, f in usable.items()}
    if m.init is not None:
        future[m.init] = joined_node(inv.host(m.init), "manager", addresses.get(m.init, ""))
    for name, role in m.join:
        future[name] = joined_node(inv.host(name), role, addresses.get(name, ""))
    node_plan = plan_nodes(inv, future, nodes, prune, claimed_nodes(state, future, nodes), not state.blocked)
    anchor_id = future[m.anchor].id if m.anchor in future else ""
    newcomers = [future[n] for n in future if n not in members]
    node_plan = guard_quorum(node_plan, [*nodes, *newcomers], anchor_id)
    changes = (*membership_changes(inv, m, stale, addresses), *node_plan.changes) if m.anchor is not None else ()
    warnings += node_plan.warnings
    blocked.update(node_plan.refused)
    return BootstrapPlan(m, node_plan, Plan(tuple(changes), tuple(dict.fromkeys(warnings)), blocked), stale)


# -- apply -----------------------------------------------------------------------------------------


def bootstrap(
    session: Session,
    force: bool = False,
    prune: bool = False,
    plan_only: bool = False,
    notify: Notify = quiet,
    join_timeout: float = JOIN_TIMEOUT,
    engine_timeout: float = BACK_TIMEOUT,
) -> Report:
    """Make the swarm match the inventory. Failures on some hosts do not stop the others - except
    an engine that does not come back after its configuration changed: the run stops there.

    First the engines' configuration (``ops.engine``: daemon.json, registry CAs, restarts), then
    preflight, membership and nodes.

    Returns:
        A Report: what changed, warnings, and per-host failures (the caller decides the exit
        status); ``data``: ``swarm_ready`` (a swarm exists and its anchor answers), ``nodes``.
    """
    inv = session.inventory
    # autolock keeps the unlock key encrypted: without a secrets key, refuse before any change
    keys = KeySource(os.environ)  # loaded once, and only when autolock needs it
    if inv.autolock:
        keyring(keys)
    if (force or prune) and not plan_only:
        plan_bootstrap(read_state(session), force, prune)  # its refusals come before any change
    engines = configure_engines(session, force, plan_only, notify, back_timeout=engine_timeout)
    if engines.data.get("stopped"):
        engines.data.update(swarm_ready=False, nodes=0)
        return engines
    state = read_state(session)
    planned = plan_bootstrap(state, force, prune)
    plan = Plan(
        (*engines.plan.changes, *planned.plan.changes),
        tuple(dict.fromkeys((*engines.plan.warnings, *planned.plan.warnings))),
        # a host preflight fails is named with preflight's reason (the engine read met the same wall)
        {**engines.plan.blocked, **planned.plan.blocked},
    )
    report = Report(plan=plan, results=list(engines.results), warnings=list(plan.warnings))
    report.failures = {**engines.failures, **planned.plan.blocked}
    report.data.update(swarm_ready=False, nodes=0)
    m = planned.membership
    if plan_only or m.anchor is None:
        if m.anchor is not None:
            fresh = AutolockState("", 0, {}, False, False)
            al = fresh if m.init is not None else read_autolock(session.engine(m.anchor), inv, keys)
            extra = plan_autolock(inv.autolock, al, m.anchor)
            report.plan = replace(report.plan, changes=(*report.plan.changes, *extra))
        report.data["swarm_ready"] = m.anchor is not None and m.init is None
        report.data["nodes"] = len(state.nodes or ())
        return report
    anchor_name = m.anchor
    anchor = session.engine(anchor_name)
    changes = {(c.kind, c.name, c.action): c for c in planned.plan.changes}
    known_ids = {name: state.facts[name].node_id for name in m.members}
    if m.init is not None:
        host = inv.host(m.init)
        try:
            if m.init in m.leave:
                anchor.leave_swarm(force=True)
                report.done(changes[("swarm", host.name, "leave")], notify=notify)
            anchor.init_swarm(state.facts[host.name].advertise or host.address, f"0.0.0.0:{SWARM_PORT}")
        except HostError as e:
            report.failures[host.name] = e.message
            for name, _ in m.join:
                report.failures.setdefault(name, f"not joined: the swarm could not be initialized on {host.name}")
            return report
        known_ids[host.name] = _node_id(anchor)
        report.done(changes[("swarm", host.name, "init")], notify=notify)
    report.data["swarm_ready"] = True

    for name, node in planned.stale.items():
        try:
            if node.is_manager:
                spec = {**dict(node.spec), "Role": "worker"}
                demote_gone(anchor, node.id, node.version, spec, what=f"{name}'s stale node")
            remove_node(anchor, node.id, what=f"{name}'s stale node")
        except HostError as e:
            report.failures[name] = f"not joined: its stale node {node.id[:12]} could not be removed ({e.message})"
            m = replace(m, join=tuple((n, r) for n, r in m.join if n != name))
            continue
        for c in stale_changes(name, node):
            report.done(c, notify=notify)

    if m.join:
        joined = _join(session, anchor, m, {n: f.advertise for n, f in state.facts.items()})
        for name, done in joined.items():
            role = dict(m.join)[name]
            if done.error is not None:
                report.failures[name] = message_of(done.error)
                continue
            assert done.value is not None
            known_ids[name] = done.value
            if name in m.leave:
                report.done(changes[("swarm", name, "leave")], notify=notify)
            report.done(changes[("node", name, f"join-{role}")], done.seconds, notify=notify)
        try:
            _wait_registered(anchor, {known_ids[n] for n, _ in m.join if n in known_ids}, join_timeout)
        except TimeoutExpired as e:
            report.failures[anchor_name] = str(e)
            return report

    nodes = read_nodes(anchor)
    members = match_hosts([inv.host(n) for n in known_ids], nodes, known_ids=known_ids)
    node_plan = plan_nodes(inv, members, nodes, prune, claimed_nodes(state, members, nodes), not state.blocked)
    node_plan = guard_quorum(node_plan, nodes, known_ids.get(anchor_name, ""))
    report.failures.update(node_plan.refused)
    report.warn(node_plan.warnings)
    for update in node_plan.updates:
        try:
            if update.node_id in node_plan.stale:
                demote_gone(anchor, update.node_id, update.version, dict(update.spec), what=update.host)
            else:
                anchor.update_node(update.node_id, update.version, dict(update.spec), what=update.host)
        except HostError as e:
            report.failures[update.host] = e.message
            continue
        for c in update.changes:
            report.done(c, notify=notify)
    for node in node_plan.removals:
        try:
            remove_node(anchor, node.id, what=node.label)
        except HostError as e:
            report.failures[node.label] = e.message
            continue
        report.done(removal_change(node, node_plan.stale.get(node.id, "")), notify=notify)
    report.data["nodes"] = len(read_nodes(anchor)) if node_plan.removals else len(nodes)
    al = read_autolock(anchor, inv, keys)
    extra = plan_autolock(inv.autolock, al, anchor_name)
    if extra:
        report.plan = replace(report.plan, changes=(*report.plan.changes, *extra))
        apply_autolock(anchor, inv, keys, al, extra, report, notify)
    return report


def demote_gone(anchor: Engine, node_id: str, version: int, spec: Mapping[str, Any], what: str) -> None:
    """Demote a gone manager before its removal. One the raft cluster no longer counts (after a
    --force-new-cluster) cannot be demoted, and needs no demotion: its removal follows."""
    try:
        anchor.update_node(node_id, version, spec, what=what)
    except NotFound as e:
        if "raft memberlist" not in e.message:
            raise


def remove_node(anchor: Engine, node_id: str, what: str, timeout: float = REMOVE_TIMEOUT) -> None:
    """Remove a node; a demoted manager is removable once raft let it go, so that is waited for."""
    last: list[EngineError] = []

    def removed() -> bool | Pending:
        try:
            anchor.remove_node(node_id, force=True, what=what)
            return True
        except EngineError as e:
            if "raft" not in e.message and "demoted" not in e.message:
                raise  # a refusal, not raft still letting it go
            last[:] = [e]
            return Pending(e.message)

    until(f"raft to let {what} go", removed, timeout, first=POLL, cap=POLL, retry=(), error=lambda _: last[0])


def _join(session: Session, anchor: Engine, m: MembershipPlan, addresses: Mapping[str, str]) -> Any:
    """Join the hosts in parallel, each at the address it advertises, through the managers' (the
    joining host resolves no inventory name: the names may be known only on this machine)."""
    inv = session.inventory
    tokens = anchor.inspect_swarm()["JoinTokens"]
    assert m.anchor is not None
    managers = [m.anchor] + [n for n in m.members if inv.host(n).is_manager and n != m.anchor]
    remotes = [f"{addresses.get(n) or inv.host(n).address}:{SWARM_PORT}" for n in managers]
    roles = dict(m.join)

    def join_one(host: Host) -> str:
        engine = session.engine(host)
        if host.name in m.leave:
            engine.leave_swarm(force=True)
        token = tokens["Manager" if roles[host.name] == "manager" else "Worker"]
        engine.join_swarm(remotes, token, addresses.get(host.name) or host.address, f"0.0.0.0:{SWARM_PORT}")
        return _node_id(engine)

    return session.fan_out(join_one, [inv.host(n) for n, _ in m.join])


def _node_id(engine: Engine) -> str:
    return read_membership(engine).node_id


def _wait_registered(anchor: Engine, node_ids: set[str], timeout: float) -> None:
    """Poll until every joined node is listed and ready on the anchor manager."""

    def ready() -> bool | Pending:
        nodes = {n.id: n for n in read_nodes(anchor)}
        seen = {i: (nodes[i].state if i in nodes else "not listed") for i in node_ids}
        if all(s == "ready" for s in seen.values()):
            return True
        return Pending(", ".join(f"{i[:12]}: {s}" for i, s in sorted(seen.items())))

    until("the joined nodes", ready, timeout, first=POLL, cap=POLL, retry=(),
          error=lambda seen: TimeoutExpired(f"joined nodes not ready after {timeout:g}s ({seen})"))  # fmt: skip
