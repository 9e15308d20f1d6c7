"""Swarm nodes as a manager reports them, and which inventory host each one is."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from swarmctl.inventory import Host
from swarmctl.transport.engine import Engine


@dataclass(frozen=True)
class NodeView:
    """A swarm node as a manager reports it."""

    id: str
    hostname: str
    role: str
    availability: str
    labels: Mapping[str, str]
    state: str  # ready | down | unknown | disconnected
    addr: str
    leader: bool
    reachability: str  # managers: reachable | unreachable | unknown
    engine_version: str
    version: int
    spec: Mapping[str, Any]
    platform: tuple[str, str] = ("", "")  # (os, architecture) the node reports
    status_addr: str = ""  # Status.Addr as reported (0.0.0.0 for some managers): what node.ip is tested on
    engine_labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_manager(self) -> bool:
        return self.role == "manager"

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @property
    def label(self) -> str:
        """How messages name it: its hostname, else the start of its ID."""
        return self.hostname or self.id[:12]


def node_address(raw: Mapping[str, Any]) -> str:
    """The node's address: ``Status.Addr``, else (engines that report 0.0.0.0 for managers) its raft address."""
    addr = str((raw.get("Status") or {}).get("Addr", ""))
    manager = raw.get("ManagerStatus") or {}
    if addr in ("", "0.0.0.0") and manager.get("Addr"):
        addr = str(manager["Addr"]).rsplit(":", 1)[0]
    return addr


def node_view(raw: Mapping[str, Any]) -> NodeView:
    spec = raw.get("Spec") or {}
    manager = raw.get("ManagerStatus") or {}
    description = raw.get("Description") or {}
    platform = description.get("Platform") or {}
    return NodeView(
        id=raw["ID"],
        hostname=str(description.get("Hostname", "")),
        role=str(spec.get("Role", "worker")),
        availability=str(spec.get("Availability", "active")),
        labels=dict(spec.get("Labels") or {}),
        state=str((raw.get("Status") or {}).get("State", "unknown")),
        addr=node_address(raw),
        leader=bool(manager.get("Leader")),
        reachability=str(manager.get("Reachability", "")),
        engine_version=str((description.get("Engine") or {}).get("EngineVersion", "")),
        version=int((raw.get("Version") or {}).get("Index", 0)),
        spec=dict(spec),
        platform=(str(platform.get("OS", "")), str(platform.get("Architecture", ""))),
        status_addr=str((raw.get("Status") or {}).get("Addr", "")),
        engine_labels=dict((description.get("Engine") or {}).get("Labels") or {}),
    )


def read_nodes(engine: Engine) -> list[NodeView]:
    return [node_view(n) for n in engine.nodes()]


def match_hosts(
    hosts: Iterable[Host],
    nodes: Iterable[NodeView],
    known_ids: Mapping[str, str] | None = None,
    hostnames: Mapping[str, str] | None = None,
    addresses: Mapping[str, str] | None = None,
) -> dict[str, NodeView]:
    """Inventory host name -> its swarm node, best evidence first (pure).

    A host's node is the one with the node ID the host itself reported (``known_ids``): the only
    proof, and what every change of membership or engine restart goes by (``nodes_of``). Failing
    that - for a host that could not be asked, to keep its node from being taken for nobody's, or
    to name nodes in a table - the one at the host's address (``addresses``: the address it
    advertises, else its inventory IP address); failing that, the one whose hostname is the
    hostname the host reported (``hostnames``) or its inventory name. A node is given to one host
    at most, in that order of evidence.
    """
    known_ids, hostnames, addresses = dict(known_ids or {}), dict(hostnames or {}), dict(addresses or {})
    hosts, nodes = list(hosts), list(nodes)
    out: dict[str, NodeView] = {}
    taken: set[str] = set()

    def claim(host: Host, node: NodeView | None) -> None:
        if node is not None and node.id not in taken and host.name not in out:
            out[host.name] = node
            taken.add(node.id)

    by_id = {n.id: n for n in nodes}
    for h in hosts:
        claim(h, by_id.get(known_ids.get(h.name, "")))
    for h in hosts:
        if h.name not in known_ids:
            addr = addresses.get(h.name) or h.ip_address or h.address
            claim(h, next((n for n in nodes if n.addr == addr and n.id not in taken), None))
    for h in hosts:
        if h.name not in known_ids:
            name = hostnames.get(h.name, h.name)
            claim(h, next((n for n in nodes if n.hostname == name and n.id not in taken), None))
    return out


def nodes_of(ids: Mapping[str, str], nodes: Iterable[NodeView]) -> dict[str, NodeView]:
    """Inventory host -> its node, for the hosts whose own engine reported a node ID that the swarm
    lists (``ids``: host -> node ID): the only proof of which node a host is (pure)."""
    listed = {n.id: n for n in nodes}
    return {host: listed[node_id] for host, node_id in ids.items() if node_id in listed}


def node_names(nodes: Iterable[NodeView]) -> dict[str, str]:
    """Node ID -> how messages name the node."""
    return {n.id: n.label for n in nodes}


def _ip_matches(want: str, addr: str) -> bool | None:
    """``node.ip``'s test: ``addr`` is the address ``want`` or within its CIDR; None when ``want``
    is neither (swarm then places nowhere)."""
    if "/" in want and not re.fullmatch(r"[^/]+/\d+", want):
        return None  # a netmask where swarm wants a prefix length: not a CIDR to swarm
    try:
        net = ipaddress.ip_network(want, strict=False) if "/" in want else None
        one = None if net else ipaddress.ip_address(want)
    except ValueError:
        return None
    try:
        have = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return have in net if net is not None else have == one


def placement_allows(constraints: Iterable[str], node: NodeView) -> bool:
    """Whether swarm's constraints let a task of the service run on ``node`` (pure), as swarmkit's
    ``constraint.NodeMatches`` judges: keys and values compared without case (label names with),
    a label the node lacks compared as "", ``node.ip`` as an address or a CIDR, and a constraint
    with any other key (or no ``==``/``!=``) matching no node."""
    for c in constraints:
        op = "!=" if "!=" in c else "==" if "==" in c else ""
        if not op:
            return False
        key, _, want = (part.strip() for part in c.partition(op))
        low = key.lower()
        if low == "node.ip":
            hit = _ip_matches(want, node.status_addr)
            if hit is None or hit != (op == "=="):
                return False
            continue
        if low == "node.id":
            have = node.id
        elif low == "node.hostname":
            have = node.hostname
        elif low == "node.role":
            have = node.role
        elif low == "node.platform.os":
            have = node.platform[0]
        elif low == "node.platform.arch":
            have = node.platform[1]
        elif low.startswith("node.labels.") and len(key) > len("node.labels."):
            have = node.labels.get(key[len("node.labels.") :], "")
        elif low.startswith("engine.labels.") and len(key) > len("engine.labels."):
            have = node.engine_labels.get(key[len("engine.labels.") :], "")
        else:
            return False
        if (have.lower() == want.lower()) != (op == "=="):
            return False
    return True
