"""Status: the swarm's nodes (named by inventory host) and services, as the first answering manager sees them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from swarmctl.facts.membership import find_manager, read_locks
from swarmctl.facts.nodes import NodeView, match_hosts, read_nodes
from swarmctl.facts.services import ServiceView, read_services, service_view
from swarmctl.transport.engine import Session


@dataclass(frozen=True)
class ClusterStatus:
    manager: str  # the inventory host that answered
    nodes: tuple[NodeView, ...]
    services: tuple[ServiceView, ...]
    names: Mapping[str, str]  # node ID -> inventory host name
    skipped: Mapping[str, str]  # managers that did not answer before this one, and why
    locked: tuple[str, ...] = ()  # inventory managers whose swarm is locked (autolock)

    def json(self) -> dict[str, Any]:
        return {
            "manager": self.manager,
            "nodes": [
                {
                    "name": self.names.get(n.id, ""),
                    "id": n.id,
                    "hostname": n.hostname,
                    "address": n.addr,
                    "role": n.role,
                    "leader": n.leader,
                    "state": n.state,
                    "availability": n.availability,
                    "engine_version": n.engine_version,
                    "labels": dict(n.labels),
                }
                for n in self.nodes
            ],
            "services": [s.json() for s in self.services],
            "skipped": [{"host": h, "error": e} for h, e in sorted(self.skipped.items())],
            "locked": list(self.locked),
        }


def read_status(session: Session) -> ClusterStatus:
    """Nodes and services as the first answering manager sees them."""
    engine = find_manager(session)
    nodes = read_nodes(engine)
    names = {node.id: host for host, node in match_hosts(session.inventory.hosts, nodes).items()}
    services = sorted((service_view(s) for s in read_services(engine)), key=lambda s: s.name)
    nodes.sort(key=lambda n: (n.role != "manager", n.hostname))
    # a locked manager is just "down" to the others: ask each manager itself
    locked = read_locks(session).locked
    return ClusterStatus(engine.name, tuple(nodes), tuple(services), names, dict(session.skipped), locked)
