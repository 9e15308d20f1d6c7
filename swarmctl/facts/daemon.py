"""The engine itself, from ``docker info``: where it keeps its state, its version, its clock, and
(facts.membership's one parse) its swarm."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from swarmctl.facts.membership import Membership, parse_membership
from swarmctl.transport.engine import Engine

DEFAULT_ROOT = "/var/lib/docker"


@dataclass(frozen=True)
class DaemonInfo:
    root: str  # DockerRootDir: its data root
    version: str  # ServerVersion
    system_time: str  # SystemTime, as the engine wrote it (RFC 3339)
    membership: Membership


def parse_daemon_info(info: Mapping[str, Any]) -> DaemonInfo:
    """``GET /info`` -> DaemonInfo (pure)."""
    return DaemonInfo(
        root=str(info.get("DockerRootDir") or DEFAULT_ROOT),
        version=str(info.get("ServerVersion") or ""),
        system_time=str(info.get("SystemTime") or ""),
        membership=parse_membership(info),
    )


def read_daemon_info(engine: Engine) -> DaemonInfo:
    return parse_daemon_info(engine.info())
