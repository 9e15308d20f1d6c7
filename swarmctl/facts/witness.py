"""The swarm as its own witness: what one manager can tell of every node, for a bootstrap that may
have nothing to do.

A bootstrap that changed nothing, or finished all it changed, records a fingerprint of the
inventory it made true in the swarm's own labels (``STAMP``); a later run reads that and the node
list through the first inventory manager alone (``read_witness``), and when both still match the
inventory it has proven there is nothing to do without asking each host (ops.bootstrap).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from swarmctl.facts.membership import autolock_on, read_membership
from swarmctl.facts.nodes import NodeView, read_nodes
from swarmctl.transport.engine import Session

STAMP = "io.swarmctl.bootstrap"  # the swarm spec's label that carries the fingerprint


@dataclass(frozen=True)
class SwarmWitness:
    """The swarm as one of its managers sees it."""

    through: str  # the inventory host read through
    own_id: str  # the node ID that host's own engine reports
    nodes: tuple[NodeView, ...]
    stamp: str  # the fingerprint the swarm carries ("" none)
    autolock: bool


def stamp_of(swarm: Mapping[str, Any]) -> str:
    """``GET /swarm`` -> the fingerprint it carries, "" for none (pure)."""
    return str(((swarm.get("Spec") or {}).get("Labels") or {}).get(STAMP, ""))


def read_witness(session: Session) -> SwarmWitness | None:
    """Through the inventory's first manager only: None when it is no active manager (the full read
    then says why). Raises HostError when it cannot be asked."""
    host = session.inventory.managers[0]
    engine = session.engine(host)
    own = read_membership(engine)
    if not own.manager:
        return None
    swarm = engine.inspect_swarm()
    return SwarmWitness(host.name, own.node_id, tuple(read_nodes(engine)), stamp_of(swarm), autolock_on(swarm))
