"""Bootstrap: read facts -> plan (pure) -> apply. Idempotent; a second run changes nothing.

1. Read: preflight on every host in parallel (``facts.host``); the swarm's nodes from the first
   inventory manager that runs one (the anchor). A host that fails is left alone and named.
2. Plan (``plan_bootstrap``, pure): membership - init the swarm on the first manager when no
   inventory manager runs one, join every other host with the token of its role; hosts in another
   swarm are an error unless ``force`` (they leave it first), a half-done join (pending/error) is
   redone - then nodes: roles (promotions before demotions, so quorum never shrinks first), labels
   and availability as the inventory says, predicted for the hosts that are about to join. Nodes
   the inventory does not name are left alone unless ``prune`` (drain, demote, remove).
3. Apply: membership changes (joins in parallel: the managers', then the workers'), then the node
   changes, planned again from the nodes as they are after the joins (they match the plan unless
   something else changed them).
Join tokens stay in memory: never printed, logged or put in an error message.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from swarmctl.errors import ClusterError, EngineError, HostError, NotFound, Refused, TimeoutExpired, message_of
from swarmctl.facts.host import (
    SWARM_PORT,
    HostFacts,
    ahead_targets,
    kernel_warnings,
    port_failure_message,
    probe_all,
    read_hosts,
)
from swarmctl.facts.membership import autolock_on, read_membership, refuse_shared_node_ids
from swarmctl.facts.nodes import NodeView, match_hosts, node_view, read_nodes
from swarmctl.facts.witness import STAMP, SwarmWitness, read_witness, stamp_of
from swarmctl.inventory import Host, Inventory, majority
from swarmctl.ops.autolock import AutolockState, apply_autolock, keyring, plan_autolock, read_autolock
from swarmctl.ops.engine_config import (
    BACK_TIMEOUT,
    EnginePlan,
    EngineState,
    apply_engine,
    engine_state,
    plan_engine,
    registry_cas,
    unlock_keys_for,
)
from swarmctl.plan import Change, Notify, Plan, Report, quiet
from swarmctl.secretstore import KeySource
from swarmctl.transport.engine import Engine, Session
from swarmctl.transport.ssh import Outcome, Started, fan_out
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


def read_state(
    session: Session, cas: Mapping[str, tuple[str, Path]] | None = None, fresh: bool = False
) -> tuple[BootstrapState, EngineState]:
    """Every host read once (preflight facts and engine configuration, in parallel), the swarm
    ports probed between the hosts that answered, and the swarm's nodes read through the anchor.
    ``cas``: the inventory's registry CA files as ``registry_cas`` read them (read here if None).
    ``fresh``: the inventory's first manager runs no swarm (a first bootstrap, most likely): each
    host probes every swarm port of the others in the same round trip as its read, when the
    inventory gives every address as an IP address; the probes are judged as they would be
    after the read (``probe_all``), and a host whose read did not probe what it needs is asked then.

    Raises:
        Refused: two hosts report the same node ID.
    """
    inv = session.inventory
    cas = registry_cas(inv) if cas is None else cas
    reads = read_hosts(session, inv.hosts, sorted(cas), ahead_targets(inv.hosts) if fresh else None)
    unreachable = {name: message_of(o.error) for name, o in reads.items() if o.error is not None}
    answered = {name: o.value for name, o in reads.items() if o.value is not None}
    refuse_shared_node_ids({n: r.facts.node_id for n, r in answered.items()})
    facts: dict[str, HostFacts] = {n: r.facts for n, r in answered.items()}
    # the swarm first, through the anchor the hosts that answered give: the Ready members' ports
    # need no probe among themselves (probe_peers)
    early = frozenset(facts) - set(duplicate_hostnames(inv, facts))
    try:
        found = _swarm_of(session, inv, facts, early)
    except HostError as e:
        log.info("the swarm before the port probes: %s", e.message)
        found = (None, False, False)
    members = ready_members(inv, facts, found[0] if found[1] else None)
    ahead = {n: r.probes for n, r in answered.items() if r.probes is not None}
    probed = probe_all(session, inv.hosts, facts, members, ahead)
    blocked = dict(unreachable)
    for name, o in probed.items():
        if o.value is None:
            blocked[name] = message_of(o.error) if o.error is not None else "no answer"
            continue
        # a probe towards a host that is down says nothing about this host
        bad = o.value.port_failures(ignore=unreachable)
        if bad:
            blocked[name] = port_failure_message(bad)
    blocked.update(duplicate_hostnames(inv, {n: f for n, f in facts.items() if n not in blocked}))
    ready = frozenset(n for n in facts if n not in blocked)
    warnings = (*inv.warnings, *kernel_warnings(facts.values()))
    if found[0] is None or choose_anchor(inv, _only(facts, ready)) != choose_anchor(inv, _only(facts, early)):
        found = _swarm_of(session, inv, facts, ready)  # the anchor is another than before the probes
    nodes, through_anchor, autolock = found
    # the membership plan takes only the anchor's swarm for this one: a manager found otherwise (the
    # engines' plan still needs its nodes) may be a manager of another swarm
    state = BootstrapState(inv, facts, ready, blocked, nodes if through_anchor else None, tuple(warnings))
    engines = engine_state({n: r.engine for n, r in answered.items()}, unreachable, nodes, cas, autolock, inv)
    return state, engines


def _only(facts: Mapping[str, HostFacts], names: frozenset[str]) -> dict[str, HostFacts]:
    return {n: f for n, f in facts.items() if n in names}


def ready_members(
    inventory: Inventory, facts: Mapping[str, HostFacts], nodes: Iterable[NodeView] | None
) -> frozenset[str]:
    """Inventory hosts whose own engine's node is a Ready node of the swarm in the role the
    inventory gives the host, and for a manager reachable by the other managers (pure): members
    whose managers' ports (2377) the swarm itself proves. Between two workers 7946/tcp is not
    proven so (readiness travels to the managers); a rerun does not probe it again."""
    by_id = {n.id: n for n in nodes or ()}
    out = set()
    for host in inventory.hosts:
        f = facts.get(host.name)
        node = by_id.get(f.node_id) if f is not None and f.node_id else None
        if node is None or not node.ready or node.is_manager != host.is_manager:
            continue
        if node.is_manager and node.reachability != "reachable":
            continue  # a manager the others cannot reach: probed as a newcomer is
        out.add(host.name)
    return frozenset(out)


def _swarm_of(
    session: Session, inv: Inventory, facts: Mapping[str, HostFacts], ready: frozenset[str]
) -> tuple[tuple[NodeView, ...] | None, bool, bool]:
    """The swarm's nodes, whether they came through the anchor, and whether the swarm locks its
    managers: through the anchor, or (for the engines' plan) any active manager when no host passed
    preflight as one."""
    anchor = choose_anchor(inv, {n: f for n, f in facts.items() if n in ready})
    managers = [anchor] if anchor is not None else [n for n, f in facts.items() if f.membership.manager]
    for name in managers:
        try:
            engine = session.engine(name)
            return tuple(read_nodes(engine)), name == anchor, autolock_on(engine.inspect_swarm())
        except HostError as e:
            if name == anchor:
                raise
            log.info("%s: cannot list nodes: %s", name, e.message)
    return None, False, False


def refresh(session: Session, state: BootstrapState, restarted: Iterable[str]) -> BootstrapState:
    """The state after engine restarts: the restarted hosts' membership read again (a restart may
    leave a manager locked, or move the leader), and the nodes through the anchor."""
    facts = dict(state.facts)
    again = session.fan_out(lambda h: read_membership(session.engine(h)), [state.inventory.host(n) for n in restarted])
    blocked = dict(state.blocked)
    for name, o in again.items():
        if o.value is not None:
            facts[name] = replace(facts[name], membership=o.value)
        else:
            blocked[name] = message_of(o.error) if o.error is not None else "no answer"
    ready = frozenset(n for n in facts if n not in blocked)
    nodes, through_anchor, _ = _swarm_of(session, state.inventory, facts, ready)
    return replace(state, facts=facts, ready=ready, blocked=blocked, nodes=nodes if through_anchor else None)


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


@dataclass(frozen=True)
class JoinStep:
    """One host joining: its leave of an earlier swarm first, when it is in one."""

    host: str
    role: str
    join: Change
    leave: Change | None = None


@dataclass(frozen=True)
class MembershipSteps:
    """The membership changes, typed, in apply order: the new swarm's init (after its host left an
    earlier swarm), stale nodes removed, then the joins."""

    init: Change | None = None
    init_leave: Change | None = None
    stale: Mapping[str, tuple[Change, ...]] = field(default_factory=dict)  # joining host -> its old node's
    joins: tuple[JoinStep, ...] = ()

    @property
    def changes(self) -> list[Change]:
        out = [c for c in (self.init_leave, self.init) if c is not None]
        out += [c for changes in self.stale.values() for c in changes]
        for j in self.joins:
            out += [c for c in (j.leave, j.join) if c is not None]
        return out


def membership_steps(
    inventory: Inventory,
    m: MembershipPlan,
    stale: Mapping[str, NodeView] | None = None,
    addresses: Mapping[str, str] | None = None,
) -> MembershipSteps:
    """The membership plan as typed steps, each carrying the Change it reports (pure)."""
    init = init_leave = None
    if m.init is not None:
        host = inventory.host(m.init)
        if m.init in m.leave:
            init_leave = Change("swarm", host.name, "leave", detail="its earlier swarm (--force)")
        address = (addresses or {}).get(host.name) or host.address
        init = Change("swarm", host.name, "init", detail=f"new swarm, advertising {address}")
    # stale nodes go first, so the manager count never grows past what the reachable ones carry
    removals = {name: tuple(stale_changes(name, node)) for name, node in (stale or {}).items()}
    joins = tuple(
        JoinStep(
            name,
            role,
            Change("node", name, f"join-{role}", detail=f"as {role}"),
            Change("swarm", name, "leave", detail="its earlier swarm") if name in m.leave else None,
        )
        for name, role in m.join
    )
    return MembershipSteps(init, init_leave, removals, joins)


@dataclass(frozen=True)
class BootstrapPlan:
    membership: MembershipPlan
    nodes: NodePlan
    plan: Plan
    stale: Mapping[str, NodeView] = field(default_factory=dict)  # joining host -> its old node, removed first
    steps: MembershipSteps = field(default_factory=MembershipSteps)


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
    steps = membership_steps(inv, m, stale, addresses)
    changes = (*steps.changes, *node_plan.changes) if m.anchor is not None else ()
    warnings += node_plan.warnings
    blocked.update(node_plan.refused)
    return BootstrapPlan(m, node_plan, Plan(tuple(changes), tuple(dict.fromkeys(warnings)), blocked), stale, steps)


# -- apply -----------------------------------------------------------------------------------------


@dataclass
class BootstrapOutcome:
    """What bootstrap did: its report, and whether a swarm exists whose anchor answers (the
    inventory is then remembered) with how many nodes."""

    report: Report
    swarm_ready: bool = False
    nodes: int = 0

    def json(self) -> dict[str, Any]:
        return {**self.report.json(), "swarm_ready": self.swarm_ready, "nodes": self.nodes}


def bootstrap(
    session: Session,
    force: bool = False,
    prune: bool = False,
    plan_only: bool = False,
    notify: Notify = quiet,
    join_timeout: float = JOIN_TIMEOUT,
    engine_timeout: float = BACK_TIMEOUT,
    witness: bool = True,
) -> BootstrapOutcome:
    """Make the swarm match the inventory, in phases: read every host once; plan (the engines'
    configuration, then membership and nodes - every refusal before any change); the engines
    (daemon.json, registry CAs, restarts: an engine that does not come back stops the run there);
    what the restarts changed read again; membership; nodes; swarm settings (autolock). Failures on
    some hosts do not stop the others. ``witness``: a no-op may be proven by the swarm, and the
    swarm keeps the record of this run (False for recover: its swarm was just forced from a raft
    state, and nothing but the joins is to be written to it; the next bootstrap records it).
    """
    inv = session.inventory
    # autolock keeps the unlock key encrypted: without a secrets key, refuse before any change
    keys = KeySource(os.environ)  # loaded once, and only when autolock needs it
    if inv.autolock:
        keyring(keys)
    cas = registry_cas(inv)  # read once: the fingerprint and the engines' plan see the same files
    mark = fingerprint(inv, {r: sha for r, (sha, _) in cas.items()})
    fresh = False
    if witness and not (force or prune or plan_only):
        proven, fresh = _witnessed(session, mark)
        if proven is not None:
            return proven
    state, engines_state = read_state(session, cas, fresh)
    engines = plan_engine(inv, engines_state, force)
    planned = plan_bootstrap(state, force, prune)  # its refusals come before any change
    if plan_only:
        return _planned(session, engines, planned, state, keys)
    if engines.plan.changes and witness:
        # the swarm stops vouching for the engines' configuration until this run has finished
        # changing it (what else it vouches for, a proven no-op reads from the swarm itself)
        _forget(session, state, planned)
    unlock = unlock_keys_for(engines, engines_state, inv)
    applied = apply_engine(session, engines, engines_state.ca_files, notify, engine_timeout, unlock_keys=unlock)
    if applied.stopped:
        return BootstrapOutcome(applied.report)
    if applied.restarted:  # a restart may have moved the leader or left a manager locked
        state = refresh(session, state, applied.restarted)
        planned = plan_bootstrap(state, force, prune)
    report = _combined(engines, planned, applied.report)
    outcome = BootstrapOutcome(report)
    m = planned.membership
    if m.anchor is None:
        return outcome
    anchor = session.engine(m.anchor)
    calls = threading.BoundedSemaphore(NODE_WRITERS)  # the anchor's calls beside each other, at most its channels
    members = apply_membership(session, anchor, state, planned, report, notify, calls)
    if members is None:
        report.in_plan_order()
        return outcome
    known_ids, joined = members
    stamped: Started[bool] | None = None
    if witness and not report.failures and set(known_ids) >= {h.name for h in inv.hosts}:
        # every host read and all it needed done: the swarm may vouch for it, and for its nodes. The
        # record is written while the joined nodes are waited for and the nodes' phase runs: what
        # it alone vouches for (the engines' configuration on these nodes) is done by now, and a
        # no-op's witness reads the rest from the swarm itself (nodes ready, roles, labels,
        # availability, autolock). A failure from here on takes it back all the same (Ctrl-C
        # does not wait for that).
        text = record(mark, known_ids)
        stamped = Started(lambda: _stamp_quietly(anchor, text, calls), "record the bootstrap")
    try:
        _settle_nodes(anchor, state, known_ids, joined, prune, report, notify, join_timeout, calls, outcome)
        written = stamped is not None and stamped.result()  # before the settings: both write the swarm
        if outcome.swarm_ready:
            apply_swarm_settings(anchor, m.anchor, inv, keys, report, notify)
    except Exception:
        if stamped is not None and stamped.result():
            _stamp_quietly(anchor, "")
        raise
    if written and report.failures:
        _stamp_quietly(anchor, "")
    report.in_plan_order()  # a joined node's labels are written as it joins, listed where planned
    return outcome


def _settle_nodes(
    anchor: Engine,
    state: BootstrapState,
    known_ids: Mapping[str, str],
    joined: set[str],
    prune: bool,
    report: Report,
    notify: Notify,
    join_timeout: float,
    calls: threading.BoundedSemaphore,
    outcome: BootstrapOutcome,
) -> None:
    """The joined nodes waited for (listed ready by the anchor), then the nodes' phase on the
    nodes as listed then; ``outcome`` says whether the swarm is ready, and how many nodes it has."""
    nodes: list[NodeView] | None = None
    try:
        nodes = _wait_registered(anchor, joined, join_timeout) if joined else None
        outcome.swarm_ready = True
    except TimeoutExpired as e:
        report.failures[anchor.name] = str(e)
    if outcome.swarm_ready:
        outcome.nodes = apply_nodes(anchor, state, known_ids, prune, report, notify, nodes, calls)


# -- a no-op proven by the swarm -------------------------------------------------------------------

FINGERPRINT_FORMAT = "1"  # a new meaning of the fingerprint's parts gets a new format


def fingerprint(inv: Inventory, cas: Mapping[str, str]) -> str:
    """What a bootstrap makes true, hashed (pure): every host's name, address, role, labels,
    availability and the daemon.json keys swarmctl owns on it, the registries' CA files (registry ->
    sha256), the daemon.json keys the inventory names anywhere and the autolock setting."""
    hosts = [[h.name, h.ip_address or h.address, h.role, dict(h.labels), h.availability, dict(h.engine)]
             for h in sorted(inv.hosts, key=lambda h: h.name)]  # fmt: skip
    whole = [FINGERPRINT_FORMAT, hosts, dict(cas), sorted(inv.engine_keys), inv.autolock]
    text = json.dumps(whole, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def witnessed(inv: Inventory, witness: SwarmWitness, mark: str) -> str:
    """Why the swarm alone does not prove that a bootstrap has nothing to do ("" when it does) (pure).

    It does when its nodes are the inventory's hosts one for one by address - each Ready, in its
    role, a manager reachable, labels and availability as the inventory says, the manager read
    through being the node its own engine reports - with no other node, and it carries the record
    (``record``) of ``mark`` and of exactly those nodes: the last bootstrap that changed anything
    finished with this inventory on these nodes, so their engines carry its configuration.
    Anything else is for the full read of every host, as on a first bootstrap."""
    if not witness.stamp:
        return "the swarm carries no record of a bootstrap"
    if inv.autolock:
        return "autolock: the stored unlock key is checked against the swarm's"
    if inv.autolock is False and witness.autolock:
        return "autolock is on and the inventory turns it off"
    if len(witness.nodes) != len(inv.hosts):
        return f"{len(witness.nodes)} nodes for {len(inv.hosts)} hosts"
    missing = [h.name for h in inv.hosts if not h.ip_address]
    if missing:
        return f"{', '.join(missing)}: no IP address in the inventory to find its node by"
    members = match_hosts(inv.hosts, witness.nodes, addresses={h.name: h.ip_address for h in inv.hosts})
    for h in inv.hosts:
        node = members.get(h.name)
        if node is None or node.addr != h.ip_address:
            return f"{h.name}: no node at {h.ip_address}"
        if not node.ready or node.role != h.role or (node.is_manager and node.reachability != "reachable"):
            return f"{h.name}: its node is {node.state}, {node.role}, {node.reachability or 'no manager'}"
    if members[witness.through].id != witness.own_id:
        return f"{witness.through}: its engine reports another node than the one at its address"
    if witness.stamp != record(mark, {h: n.id for h, n in members.items()}):
        return "the swarm's record is of another inventory, or of other nodes at these addresses"
    nodes = plan_nodes(inv, members, list(witness.nodes))
    if nodes.updates or nodes.removals or nodes.warnings:
        return "nodes to update"
    return ""


def _witnessed(session: Session, mark: str) -> tuple[BootstrapOutcome | None, bool]:
    """The outcome of a bootstrap the swarm proves has nothing to do (read through one manager),
    or None: then every host is read, as on a first bootstrap; and whether the inventory's first
    manager answered as no manager (no swarm there: a first bootstrap, most likely)."""
    inv = session.inventory
    try:
        witness = read_witness(session)
    except HostError as e:
        log.info("the swarm as witness: %s", e.message)
        return None, False
    why = "its first manager is no active manager" if witness is None else witnessed(inv, witness, mark)
    if witness is None or why:
        log.info("every host is read: %s", why)
        return None, witness is None
    log.info("nothing to do, as the swarm read through %s proves", witness.through)
    report = Report(plan=Plan((), tuple(inv.warnings)), warnings=list(inv.warnings))
    return BootstrapOutcome(report, True, len(witness.nodes)), False


def record(mark: str, node_ids: Mapping[str, str]) -> str:
    """The swarm's record of a bootstrap (pure): the inventory's fingerprint and the node each
    host's own engine reported - a host rebuilt at the same address is another node, whose engine
    was never configured."""
    text = json.dumps([mark, sorted(node_ids.items())], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _forget(session: Session, state: BootstrapState, planned: BootstrapPlan) -> None:
    """The swarm's record removed before anything changes, through the anchor or any active
    manager that answered (none when there is no swarm yet).

    Raises:
        ClusterError: it could not be removed: nothing is changed (a record left in place would
            vouch for an inventory this run is about to make untrue).
    """
    m = planned.membership
    managers = ([m.anchor] if m.anchor is not None and m.init is None else []) + sorted(
        n for n, f in state.facts.items() if f.membership.manager and n not in state.blocked
    )
    for name in dict.fromkeys(managers):
        try:
            _stamp(session.engine(name), "")
            return
        except (HostError, EngineError) as e:
            raise ClusterError(f"nothing was changed: the swarm's record of the last bootstrap could not be removed "
                               f"through {name} ({message_of(e)}); run bootstrap again") from None  # fmt: skip


def _stamp_quietly(anchor: Engine, value: str, calls: threading.BoundedSemaphore | None = None) -> bool:
    """_stamp, its failure only logged (the record is an optimization: without it the next
    bootstrap reads every host); whether it was written. ``calls``: held meanwhile."""
    try:
        with calls or contextlib.nullcontext():
            _stamp(anchor, value)
        return True
    except (HostError, EngineError) as e:
        log.info("the swarm's record of this bootstrap was not %s: %s", "written" if value else "removed", e.message)
        return False


def _stamp(anchor: Engine, value: str) -> None:
    """The swarm's STAMP label set to ``value`` ("" removes it), unless it already is."""
    swarm = anchor.inspect_swarm()
    if stamp_of(swarm) == value:
        return
    spec = dict(swarm.get("Spec") or {})
    labels = {k: v for k, v in dict(spec.get("Labels") or {}).items() if k != STAMP}
    spec["Labels"] = {**labels, STAMP: value} if value else labels
    anchor.update_swarm(int((swarm.get("Version") or {}).get("Index", 0)), spec, what="record the bootstrap")


def _combined(engines: EnginePlan, planned: BootstrapPlan, applied: Report) -> Report:
    """One report of both plans: the engines' changes done, membership's and nodes' to come."""
    plan = Plan(
        (*engines.plan.changes, *planned.plan.changes),
        tuple(dict.fromkeys((*engines.plan.warnings, *planned.plan.warnings))),
        # a host preflight fails is named with preflight's reason (the engine read met the same wall)
        {**engines.plan.blocked, **planned.plan.blocked},
    )
    report = Report(plan=plan, results=list(applied.results), warnings=list(plan.warnings))
    report.failures = {**engines.plan.blocked, **applied.failures, **planned.plan.blocked}
    return report


def _planned(
    session: Session, engines: EnginePlan, planned: BootstrapPlan, state: BootstrapState, keys: KeySource
) -> BootstrapOutcome:
    """--plan: both plans, and the swarm settings' changes."""
    report = _combined(engines, planned, Report())
    m = planned.membership
    if m.anchor is not None:
        fresh = AutolockState("", 0, {}, False, False)
        al = fresh if m.init is not None else read_autolock(session.engine(m.anchor), state.inventory, keys)
        extra = plan_autolock(state.inventory.autolock, al, m.anchor)
        report.plan = replace(report.plan, changes=(*report.plan.changes, *extra))
    return BootstrapOutcome(report, m.anchor is not None and m.init is None, len(state.nodes or ()))


def apply_membership(
    session: Session,
    anchor: Engine,
    state: BootstrapState,
    planned: BootstrapPlan,
    report: Report,
    notify: Notify,
    calls: threading.BoundedSemaphore,
) -> tuple[dict[str, str], set[str]] | None:
    """The new swarm's init, stale nodes removed, the joins: host -> the node ID its own engine
    reports, for every member, and the node IDs of the hosts that joined (for the anchor to list
    as ready: ``_wait_registered``). None when the swarm could not be made (the failures say so).
    ``calls``: held for the calls to the anchor made beside each other (at most its channels)."""
    inv = state.inventory
    m, steps = planned.membership, planned.steps
    known_ids = {name: state.facts[name].node_id for name in m.members}
    first: Started[tuple[Change, ...]] | None = None
    if m.init is not None and steps.init is not None:
        host = inv.host(m.init)
        try:
            if steps.init_leave is not None:
                anchor.leave_swarm(force=True)
                report.done(steps.init_leave, notify=notify)
            # the engine answers init with its node's ID: its own report, as _node_id reads it
            node_id = anchor.init_swarm(state.facts[host.name].advertise or host.address, f"0.0.0.0:{SWARM_PORT}")
        except HostError as e:
            report.failures[host.name] = e.message
            for j in steps.joins:
                report.failures.setdefault(j.host, f"not joined: the swarm could not be initialized on {host.name}")
            return None
        own = known_ids[host.name] = node_id or _node_id(anchor)
        report.done(steps.init, notify=notify)
        # its node's labels are written while the other hosts join
        first = Started(lambda: settle(anchor, inv, host.name, own, calls), f"settle {host.name}")
    try:
        _apply_joins(session, anchor, state, planned, report, notify, calls, known_ids)
    except BaseException as e:
        if first is not None and not isinstance(e, KeyboardInterrupt):  # Ctrl-C waits for nothing
            for c in first.result():
                report.done(c, notify=notify)
        raise
    for c in first.result() if first is not None else ():
        report.done(c, notify=notify)
    return known_ids, {known_ids[j.host] for j in planned.steps.joins if j.host in known_ids}


def _apply_joins(
    session: Session,
    anchor: Engine,
    state: BootstrapState,
    planned: BootstrapPlan,
    report: Report,
    notify: Notify,
    calls: threading.BoundedSemaphore,
    known_ids: dict[str, str],
) -> None:
    """The stale nodes removed, then the joins; ``known_ids`` gets each joined host's node."""
    m, steps = planned.membership, planned.steps
    joins = list(steps.joins)
    for name, node in planned.stale.items():
        try:
            if node.is_manager:
                spec = {**dict(node.spec), "Role": "worker"}
                demote_gone(anchor, node.id, node.version, spec, what=f"{name}'s stale node")
            remove_node(anchor, node.id, what=f"{name}'s stale node")
        except HostError as e:
            report.failures[name] = f"not joined: its stale node {node.id[:12]} could not be removed ({e.message})"
            joins = [j for j in joins if j.host != name]
            continue
        for c in steps.stale.get(name, ()):
            report.done(c, notify=notify)

    if joins:
        joined = _join(session, anchor, m, joins, {n: f.advertise for n, f in state.facts.items()}, calls)
        for j in joins:
            done = joined[j.host]
            if done.error is not None:
                report.failures[j.host] = message_of(done.error)
                continue
            assert done.value is not None
            known_ids[j.host] = done.value.node_id
            if j.leave is not None:
                report.done(j.leave, notify=notify)
            report.done(j.join, done.seconds, notify=notify)
            for c in done.value.settled:
                report.done(c, notify=notify)


def apply_nodes(
    anchor: Engine,
    state: BootstrapState,
    known_ids: Mapping[str, str],
    prune: bool,
    report: Report,
    notify: Notify,
    nodes: list[NodeView] | None = None,
    calls: threading.BoundedSemaphore | None = None,
) -> int:
    """Roles, labels and availability, planned again from the nodes as they are after the joins
    (``nodes``: as the wait for the joined nodes last listed them; read here if None) - they match
    the plan unless something else changed them; how many nodes the swarm has. ``calls``: held for
    each write (the record of the bootstrap may be written meanwhile)."""
    inv = state.inventory
    nodes = read_nodes(anchor) if nodes is None else nodes
    members = match_hosts([inv.host(n) for n in known_ids], nodes, known_ids=known_ids)
    node_plan = plan_nodes(inv, members, nodes, prune, claimed_nodes(state, members, nodes), not state.blocked)
    anchor_id = next((i for n, i in known_ids.items() if n == anchor.name), "")
    node_plan = guard_quorum(node_plan, nodes, anchor_id)
    report.failures.update(node_plan.refused)
    report.warn(node_plan.warnings)

    def write(update: NodeUpdate) -> None:
        with calls or contextlib.nullcontext():
            if update.node_id in node_plan.stale:
                demote_gone(anchor, update.node_id, update.version, dict(update.spec), what=update.host)
            else:
                anchor.update_node(update.node_id, update.version, dict(update.spec), what=update.host)

    # a role changes one node at a time, in the plan's order (promotions first, demotions last);
    # the other nodes' labels and availability are written several at once (on a swarm just made,
    # each write waits on a leader busy with the new nodes: 0.1-0.6 s each at 24 hosts)
    for batch in write_batches(node_plan):
        written = _write_all(inv, batch, write)
        for update in batch:
            done = written[update.host]
            if done.error is not None:
                if not isinstance(done.error, HostError):
                    raise done.error
                report.failures[update.host] = done.error.message
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
    return len(read_nodes(anchor)) if node_plan.removals else len(nodes)


NODE_WRITERS = 4  # node updates written at once through the anchor (its pool keeps 4 API channels)


def write_batches(plan: NodePlan) -> list[list[NodeUpdate]]:
    """The plan's updates in its order, in batches (pure): a role change, and anything done to a node
    on its way out (a gone or stray node's demotion or drain), alone; each run of the other updates
    (an inventory host's labels and availability: one update per host) together."""
    leaving = {n.id for n in plan.removals} | set(plan.stale)
    batches: list[list[NodeUpdate]] = []
    together = False
    for u in plan.updates:
        alone = u.node_id in leaving or any(c.action in ("promote", "demote") for c in u.changes)
        if alone or not together:
            batches.append([u])
        else:
            batches[-1].append(u)
        together = not alone
    return batches


def _write_all(
    inv: Inventory, batch: list[NodeUpdate], write: Callable[[NodeUpdate], None]
) -> dict[str, Outcome[None]]:
    """``write`` each update of a batch (one: in this thread; more: NODE_WRITERS at a time), and
    what became of each, by host; errors other than HostError are raised as they would be alone."""
    if len(batch) == 1:
        u = batch[0]
        try:
            write(u)
            return {u.host: Outcome(u.host)}
        except HostError as e:
            return {u.host: Outcome(u.host, error=e)}
    by_host = {u.host: u for u in batch}  # inventory hosts' updates only (write_batches), one each
    assert len(by_host) == len(batch), "one update per host in a batch"
    return fan_out([inv.host(u.host) for u in batch], lambda h: write(by_host[h.name]), NODE_WRITERS)


def apply_swarm_settings(
    anchor: Engine, anchor_name: str, inv: Inventory, keys: KeySource, report: Report, notify: Notify
) -> None:
    """The swarm-wide settings the inventory names (autolock, and the stored unlock key)."""
    al = read_autolock(anchor, inv, keys)
    extra = plan_autolock(inv.autolock, al, anchor_name)
    if extra:
        report.plan = replace(report.plan, changes=(*report.plan.changes, *extra))
        apply_autolock(anchor, inv, keys, al, extra, report, notify)


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


TOKEN_NOT_TAKEN = "A valid join token is necessary to join this cluster"
# a join whose token no longer matches the swarm's root CA: it was read before a root CA rotation
# ended (the rotation's end writes new tokens); the first from the joining engine, the second from
# its TLS handshake with the manager
CA_MOVED = ("remote CA does not match fingerprint", "certificate signed by unknown authority")
MAX_JOINS = 64  # joins at once: more would only queue at the managers' CA (each gives up after 20 s)
MANAGERS_AHEAD = 10.0  # the longest the workers' joins wait for the managers' (see _join)
JOIN_TOKEN_WAIT = 60.0  # the longest a join is retried with a new token (a refused one, or a CA's end)


@dataclass(frozen=True)
class Joined:
    """A host that joined: the node ID its own engine reports, and its node's changes written already."""

    node_id: str
    settled: tuple[Change, ...] = ()


def settle(
    anchor: Engine, inv: Inventory, name: str, node_id: str, calls: threading.BoundedSemaphore | None = None
) -> tuple[Change, ...]:
    """A node just made gets its labels and availability at once, written while the other hosts
    still join: written after all the joins, each write waited on a leader busy with all the new
    nodes (0.1-0.6 s each at 24 hosts). The changes written; none when the node wants a role
    change, or when reading or writing it failed: the node phase after the joins, planned from the
    nodes as they are then, writes what is left (and names the failure if it fails again).
    ``calls``: held for the anchor's calls (the joins settle at most NODE_WRITERS at a time: the
    anchor's pool keeps that many API channels, and its sshd opens only so many sessions)."""
    host = inv.host(name)
    if not plan_nodes(inv, {name: joined_node(host, host.role)}, []).updates:
        return ()  # what a new node is already: nothing to read
    try:
        with calls or contextlib.nullcontext():
            node = node_view(anchor.inspect_node(node_id))
            wanted = plan_nodes(inv, {name: node}, [node]).updates
            if len(wanted) != 1 or any(c.action in ("promote", "demote") for c in wanted[0].changes):
                return ()
            u = wanted[0]
            anchor.update_node(u.node_id, u.version, dict(u.spec), what=name)
    except HostError as e:
        log.debug("%s: its node's labels are left to the node phase: %s", name, e.message)
        return ()
    return u.changes


def _join(
    session: Session,
    anchor: Engine,
    m: MembershipPlan,
    joins: list[JoinStep],
    addresses: Mapping[str, str],
    calls: threading.BoundedSemaphore,
) -> dict[str, Outcome[Joined]]:
    """Join the hosts, the managers in parallel and then the workers in parallel, each at the
    address it advertises, through the managers' (the joining host resolves no inventory name: the
    names may be known only on this machine); each node is settled (``settle``) as soon as its
    host joined. ``calls``: held for the joins' calls to the anchor (at most its API channels)."""
    inv = session.inventory
    tokens = anchor.inspect_swarm()["JoinTokens"]
    assert m.anchor is not None
    managers = [m.anchor] + [n for n in m.members if inv.host(n).is_manager and n != m.anchor]
    remotes = [f"{addresses.get(n) or inv.host(n).address}:{SWARM_PORT}" for n in managers]
    roles = {j.host: j.role for j in joins}
    asking = threading.Lock()  # the token asked again by one join at a time

    def join_one(host: Host) -> Joined:
        engine = session.engine(host)
        if host.name in m.leave:
            engine.leave_swarm(force=True)
        kind = "Manager" if roles[host.name] == "manager" else "Worker"
        asked = [tokens[kind]]
        last: list[HostError] = []  # the join's last refusal: what a timeout says

        def joined() -> bool | Pending:
            try:
                engine.join_swarm(remotes, asked[-1], addresses.get(host.name) or host.address, f"0.0.0.0:{SWARM_PORT}")
                return True
            except HostError as e:
                refused = TOKEN_NOT_TAKEN in e.message
                if not refused and not any(s in e.message for s in CA_MOVED):
                    raise
                # Seen right after a force-new-cluster (recover): the new leader's CA refused the
                # token it had just reported, for a moment; or the cluster's root CA rotation ended
                # while the host joined, and the token's CA digest is the old root's. The token is
                # asked again; a CA mismatch with the swarm's token unchanged and no rotation
                # running is the token's own (another swarm's): said at once.
                with asking, calls:
                    swarm = anchor.inspect_swarm()
                token = swarm["JoinTokens"][kind]
                if not refused and token == asked[-1] and not swarm.get("RootRotationInProgress"):
                    raise
                last[:] = [e]
                asked.append(token)
                if refused:
                    return Pending(f"the swarm's CA refused its own {kind.lower()} join token; asking again")
                return Pending(f"the swarm's root CA changed or is rotating: {e.message}; asking for a new token")

        until(f"{host.name} to join the swarm", joined, JOIN_TOKEN_WAIT, first=1.0, cap=4.0, retry=(),
              error=lambda _: last[0])  # fmt: skip
        node_id = _node_id(engine)
        return Joined(node_id, settle(anchor, inv, host.name, node_id, calls))

    # the managers at once, then every worker at once: each join waits on the swarm (its CA,
    # raft), not on this machine, over the connection its host's read opened. A manager that joins
    # while the workers do makes raft writes (each new worker's node) wait until it has caught up:
    # at 24 lab hosts (3 managers), the engines took 2.16 s median this way against 3.03 s with
    # every join at once (4 rounds each); at 6 hosts about the same, 1.46 s against 1.43 s. The
    # workers do not wait for a manager's join that takes longer than MANAGERS_AHEAD (one retried
    # with a new token, or stuck): they start then.
    hosts = [inv.host(j.host) for j in joins]
    joining = [h for h in hosts if roles[h.name] == "manager"]
    workers = [h for h in hosts if roles[h.name] != "manager"]
    ahead = Started(lambda: fan_out(joining, join_one, min(len(joining), MAX_JOINS)), "join the managers")
    ahead.wait(MANAGERS_AHEAD if workers else None)
    joined = fan_out(workers, join_one, min(len(workers), MAX_JOINS)) if workers else {}
    joined.update(ahead.result())
    return {h.name: joined[h.name] for h in hosts}


def _node_id(engine: Engine) -> str:
    return read_membership(engine).node_id


def _wait_registered(anchor: Engine, node_ids: set[str], timeout: float) -> list[NodeView]:
    """Poll until every joined node is listed and ready on the anchor manager; the nodes as listed then."""

    def ready() -> list[NodeView] | Pending:
        listed = read_nodes(anchor)
        nodes = {n.id: n for n in listed}
        seen = {i: (nodes[i].state if i in nodes else "not listed") for i in node_ids}
        if all(s == "ready" for s in seen.values()):
            return listed
        return Pending(", ".join(f"{i[:12]}: {s}" for i, s in sorted(seen.items())))

    # the joins have returned: the nodes are usually listed ready within a few tenths of a second
    return until("the joined nodes", ready, timeout, first=0.1, cap=POLL, retry=(),
                 error=lambda seen: TimeoutExpired(f"joined nodes not ready after {timeout:g}s ({seen})"))  # fmt: skip
