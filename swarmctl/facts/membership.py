"""Which swarm a host's engine is in, as that engine itself says: the one parse of ``info["Swarm"]``.

A host's node is the node ID its own engine reports - never a node found by an address or a
hostname, which real inventories name differently (DNS names, SSH addresses behind NAT, inventory
names that are not hostnames). Two hosts reporting one node ID (a machine cloned from a swarm node)
are refused before anything changes: one of them is not the node it claims to be.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from swarmctl.errors import ClusterError, HostError, Refused, message_of
from swarmctl.facts.nodes import NodeView, match_hosts
from swarmctl.inventory import Host
from swarmctl.transport.engine import Engine, Session

INACTIVE = "inactive"
PENDING = "pending"  # joining, or a manager waiting for its raft peers
ACTIVE = "active"
ERROR = "error"
LOCKED = "locked"  # autolock: a restarted manager waits for its unlock key
STATES = (INACTIVE, PENDING, ACTIVE, ERROR, LOCKED)


@dataclass(frozen=True)
class Membership:
    """One engine's own view of its swarm membership (``docker info``: Swarm)."""

    state: str  # one of STATES ("inactive" when the engine says nothing)
    node_id: str = ""  # "" outside a swarm (and on engines that do not say it while locked)
    cluster_id: str = ""  # only managers know it
    control_available: bool = False  # a manager whose control plane runs here
    error: str = ""  # the engine's own words for state error
    addr: str = ""  # NodeAddr: the address this node advertises

    @property
    def member(self) -> bool:
        """In a swarm in any state (pending, error and locked members are members all the same:
        restarted and counted with the swarm's rules, never as hosts outside it)."""
        return self.state != INACTIVE

    @property
    def active(self) -> bool:
        return self.state == ACTIVE

    @property
    def locked(self) -> bool:
        return self.state == LOCKED

    @property
    def manager(self) -> bool:
        """An active manager (one that can be asked about the swarm)."""
        return self.active and self.control_available

    def json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "node_id": self.node_id,
            "cluster_id": self.cluster_id,
            "control_available": self.control_available,
        }


OUTSIDE = Membership(INACTIVE)  # an engine in no swarm


def parse_membership(info: Mapping[str, Any]) -> Membership:
    """``GET /info`` -> Membership (pure)."""
    swarm = info.get("Swarm") or {}
    state = str(swarm.get("LocalNodeState") or INACTIVE)
    return Membership(
        state=state if state in STATES else ERROR,
        node_id=str(swarm.get("NodeID") or ""),
        cluster_id=str((swarm.get("Cluster") or {}).get("ID") or ""),
        control_available=bool(swarm.get("ControlAvailable")),
        error=str(swarm.get("Error") or ""),
        addr=str(swarm.get("NodeAddr") or ""),
    )


def read_membership(engine: Engine) -> Membership:
    return parse_membership(engine.info())


def shared_node_ids(ids: Mapping[str, str]) -> dict[str, list[str]]:
    """Node IDs that more than one host reports -> those hosts, in the order given (pure)."""
    by_id: dict[str, list[str]] = {}
    for host, node_id in ids.items():
        if node_id:
            by_id.setdefault(node_id, []).append(host)
    return {node_id: hosts for node_id, hosts in by_id.items() if len(hosts) > 1}


def refuse_shared_node_ids(ids: Mapping[str, str]) -> None:
    """Refuse, before any change, when two hosts report the same node ID.

    Raises:
        Refused: naming the hosts and the node ID.
    """
    shared = shared_node_ids(ids)
    if not shared:
        return
    parts = [f"{' and '.join(hosts)} both report node {node_id[:12]}" for node_id, hosts in shared.items()]
    raise Refused(
        "; ".join(parts) + ": at most one of them is that node (a machine cloned from a swarm node keeps its "
        "swarm state). Nothing was changed: make the copy leave the swarm (`docker swarm leave --force` on it, "
        "then remove its /var/lib/docker/swarm), or take it out of the inventory"
    )


def autolock_on(swarm: Mapping[str, Any]) -> bool:
    """``GET /swarm`` -> whether the swarm locks its managers (pure): a manager whose engine
    restarts then comes back locked, until its unlock key is given."""
    spec = swarm.get("Spec") or {}
    return bool((spec.get("EncryptionConfig") or {}).get("AutoLockManagers"))


def ca_rotations(swarm: Mapping[str, Any]) -> int:
    """``GET /swarm`` -> its root CA rotation count, ``CAConfig.ForceRotate`` (pure): each
    ``rotate ca`` adds one; a forced cluster must be given it back (see ops.recover.kept_settings)."""
    return int(((swarm.get("Spec") or {}).get("CAConfig") or {}).get("ForceRotate") or 0)


def find_manager(session: Session) -> Engine:
    """The first inventory manager whose engine is an active swarm manager; the ones passed over
    before it, and why, are kept in ``session.skipped``.

    Raises:
        ClusterError: no manager answered as one; says what each one said, and what to do about it.
    """
    reasons: dict[str, str] = {}
    states: dict[str, str] = {}
    for host in session.inventory.managers:
        try:
            engine = session.engine(host)
            own = read_membership(engine)
        except HostError as e:
            reasons[host.name] = e.message
            continue
        if own.manager:
            session.skipped = dict(reasons)
            return engine
        states[host.name] = own.state
        if own.locked:
            reasons[host.name] = "locked: run `swarmctl unlock`"
        else:
            reasons[host.name] = f"not a swarm manager (swarm state {own.state})"
    raise ClusterError("no reachable swarm manager (" + "; ".join(f"{h}: {r}" for h, r in reasons.items())
                       + f"); {_what_to_do(states, len(session.inventory.managers))}")  # fmt: skip


def _what_to_do(states: Mapping[str, str], managers: int) -> str:
    """What to do when no manager answers as one, by what they said (pure)."""
    if LOCKED in states.values():
        return "run `swarmctl unlock`"
    if len(states) == managers and all(s == INACTIVE for s in states.values()):
        return "run `swarmctl bootstrap` first"
    if len(states) < managers:
        return "bring the managers that did not answer back (their host or engine), then run again"
    return "the managers are in no working swarm: see `swarmctl status`; if a majority is lost, `swarmctl recover`"


def own_node_ids(session: Session, hosts: Iterable[Host] | None = None) -> dict[str, str]:
    """Inventory host -> the node ID its own engine reports ("" outside a swarm), for the hosts
    that answered (asked in parallel).

    Raises:
        Refused: two hosts report the same node ID.
    """
    wanted = list(session.inventory.hosts if hosts is None else hosts)
    own = session.fan_out(lambda h: read_membership(session.engine(h)).node_id, wanted)
    ids = {name: str(o.value) for name, o in own.items() if o.ok}
    refuse_shared_node_ids(ids)
    return ids


def identify(session: Session, nodes: Iterable[NodeView], hosts: Iterable[Host] | None = None) -> dict[str, NodeView]:
    """Inventory host -> its node: by the node ID each host's own engine reports, and only for a
    host that could not be asked, by its address or hostname (a host that answered from outside
    the swarm is no node: never a guess).

    Raises:
        Refused: two hosts report the same node ID.
    """
    wanted = list(session.inventory.hosts if hosts is None else hosts)
    return match_hosts(wanted, list(nodes), known_ids=own_node_ids(session, wanted))


@dataclass(frozen=True)
class LockState:
    locked: tuple[str, ...]  # inventory managers whose swarm is locked
    states: Mapping[str, str]  # manager -> LocalNodeState
    unreachable: Mapping[str, str]


def read_locks(session: Session, hosts: tuple[Host, ...] | None = None) -> LockState:
    """Each inventory manager's local swarm state, in parallel (locked | active | inactive ...)."""
    hosts = session.inventory.managers if hosts is None else hosts

    def one(host: Host) -> str:
        return read_membership(session.engine(host)).state

    seen = session.fan_out(one, hosts)
    states = {n: str(o.value) for n, o in seen.items() if o.value is not None}
    unreachable = {n: message_of(o.error) for n, o in seen.items() if o.error}
    locked = tuple(h.name for h in hosts if states.get(h.name) == LOCKED)
    return LockState(locked, states, unreachable)
