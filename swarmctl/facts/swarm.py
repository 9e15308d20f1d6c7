"""The swarm as a backup records it: the managers (each matched to its node by the ID its own
engine reports), the swarm's ID and objects, and how far its raft log got."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from swarmctl.facts.membership import find_manager, read_membership, refuse_shared_node_ids
from swarmctl.facts.nodes import NodeView, nodes_of, read_nodes
from swarmctl.inventory import Inventory
from swarmctl.transport.engine import Session


@dataclass(frozen=True)
class BackupState:
    inventory: Inventory
    anchor: str  # the manager that answered
    swarm: Mapping[str, Any]
    nodes: tuple[NodeView, ...]
    names: Mapping[str, str]  # node ID -> inventory host
    services: tuple[Mapping[str, Any], ...]
    secrets: tuple[str, ...]
    configs: tuple[str, ...]
    networks: tuple[str, ...]
    raft_index: int


def read_backup_state(session: Session) -> BackupState:
    """The swarm as a manager sees it, and which inventory manager is which node: the node ID each
    manager's own engine reports (a manager that cannot say is not a candidate for the copy).

    Raises:
        Refused: two hosts report the same node ID.
    """
    engine = find_manager(session)
    nodes = read_nodes(engine)
    own = session.fan_out(lambda h: read_membership(session.engine(h)).node_id, session.inventory.managers)
    ids = {name: o.value for name, o in own.items() if o.value}
    refuse_shared_node_ids(ids)
    names = {n.id: h for h, n in nodes_of(ids, nodes).items()}
    swarm = engine.inspect_swarm()
    services = engine.services()
    secrets = engine.objects("secret")
    configs = engine.objects("config")
    networks = [n for n in engine.networks({"driver": "overlay"}) if n.get("Scope") == "swarm"]
    # the store's objects carry the raft index of their last write: the newest is how far it got
    indexes = [int((o.get("Version") or {}).get("Index", 0)) for o in [swarm, *services, *secrets, *configs]]
    indexes += [n.version for n in nodes]
    return BackupState(
        inventory=session.inventory,
        anchor=engine.name,
        swarm=swarm,
        nodes=tuple(nodes),
        names=names,
        services=tuple(services),
        secrets=tuple(sorted(str(s["Spec"]["Name"]) for s in secrets)),
        configs=tuple(sorted(str(c["Spec"]["Name"]) for c in configs)),
        networks=tuple(sorted(str(n.get("Name", "")) for n in networks if n.get("Name") != "ingress")),
        raft_index=max(indexes, default=0),
    )
