"""What a recovery needs to know of every host: its swarm state in its engine's own words, and on
managers the raft state on disk, where that engine keeps it - read even while the engine is
stopped (facts.raft); then, when no manager has quorum, that watched over a window longer than a
raft election, because one sample taken between leaders says "no quorum" too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from swarmctl.errors import HostError, Unavailable, Unreachable, message_of
from swarmctl.facts.daemon import read_daemon_info
from swarmctl.facts.membership import INACTIVE, refuse_shared_node_ids
from swarmctl.facts.raft import Raft, read_data_roots, read_raft
from swarmctl.inventory import Host, Inventory
from swarmctl.transport.engine import Session
from swarmctl.wait import seen_within

POLL = 1.0
# How long "no quorum" must hold before it is believed: longer than a raft election. swarmkit's
# default election timeout is 10 ticks of 1 s (docker info: Raft: Election Tick), and a contested
# election takes a few rounds of it.
QUORUM_WINDOW = 15.0

STOPPED = "stopped"  # the host answers over SSH, its engine does not


@dataclass(frozen=True)
class HostState:
    name: str
    state: str  # the engine's LocalNodeState (inactive | pending | active | error | locked), or stopped
    node_id: str
    manager: bool  # ControlAvailable
    quorum: bool  # it lists the swarm's nodes
    root: str  # its data root (DockerRootDir; for a stopped engine, where its state was found)
    raft: Raft | None  # managers: their raft state on disk


@dataclass(frozen=True)
class RecoverState:
    inventory: Inventory
    hosts: Mapping[str, HostState]
    unreachable: Mapping[str, str]
    quorum_seen: str = ""  # a manager that listed the nodes while "no quorum" was watched, "" none
    window: float = 0.0  # how long no quorum was watched for


def read_recover(session: Session, window: float = QUORUM_WINDOW) -> RecoverState:
    """Every host's swarm state and, on managers, their raft state on disk (where the host's own
    engine keeps it); then, when no manager has quorum, that watched for ``window`` seconds.

    Raises:
        Refused: two hosts report the same node ID.
    """

    def one(host: Host) -> HostState:
        engine = session.engine(host)
        conn = session.pool.connection(host)
        try:
            daemon = read_daemon_info(engine)
        except Unreachable:
            # SSH answers (or this raises), the engine does not: a stopped engine, and its state on disk
            root, raft = read_raft(conn, read_data_roots(conn))
            return HostState(host.name, STOPPED, "", False, False, root, raft)
        own, root = daemon.membership, daemon.root
        quorum = False
        if own.control_available:
            try:
                engine.nodes()
                quorum = True
            except Unavailable:
                quorum = False
        raft = None
        if host.is_manager:
            root, raft = read_raft(conn, [root] if root else read_data_roots(conn))
        return HostState(host.name, own.state, own.node_id, own.control_available, quorum, root, raft)

    seen = session.fan_out(one)
    hosts = {n: o.value for n, o in seen.items() if o.value is not None}
    unreachable = {n: message_of(o.error) for n, o in seen.items() if o.error}
    refuse_shared_node_ids({n: h.node_id for n, h in hosts.items()})
    quorum_seen = ""
    if window > 0 and not any(h.quorum for h in hosts.values()):
        managers = {m.name for m in session.inventory.managers}
        answering = [n for n, h in hosts.items() if n in managers and h.state not in (STOPPED, INACTIVE)]
        found: list[str] = []

        def lists_nodes() -> bool:
            for name in answering:
                try:
                    session.engine(name).nodes()
                except HostError:
                    continue
                found.append(name)
                return True
            return False

        if answering and seen_within(lists_nodes, window, first=POLL, cap=POLL):
            quorum_seen = found[0]
    return RecoverState(session.inventory, hosts, unreachable, quorum_seen, window)
