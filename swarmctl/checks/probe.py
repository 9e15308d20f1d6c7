"""The probe: a short-lived container on one node, attached to a stack's overlay network, that
asks the embedded DNS and connects to what it is told (TCP, ZooKeeper ``srvr``, Kafka Metadata,
KRaft DescribeQuorum).

The checks themselves are ``probe_script.py``, stdlib-only Python passed as the container's
argument, so any image with ``python3`` will do. Probes carry a label and are removed in every
case; leftovers of a crashed run are swept first.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from swarmctl import labels
from swarmctl.errors import HostError, ImageNotFound
from swarmctl.transport.engine import Engine

log = logging.getLogger(__name__)

DEFAULT_IMAGE = "python:3-alpine"
TIMEOUT = 90
PRODUCE_TIMEOUT = 90  # more, for verify --produce: topic creation, leader election, writes, reads


@dataclass(frozen=True)
class ProduceCheck:
    """``verify --produce``: write through each broker with acks=all and read back through the others.

    ``topic`` is created (one partition per broker, ``replication`` replicas) and removed afterwards;
    standalone brokers are each given their own topic, read back through themselves."""

    brokers: list[tuple[str, int, int]]  # advertised host, port, broker id
    topic: str
    replication: int
    standalone: bool = False

    def json(self) -> dict[str, Any]:
        return {
            "brokers": [list(b) for b in self.brokers],
            "topic": self.topic,
            "replication": self.replication,
            "standalone": self.standalone,
        }


@dataclass(frozen=True)
class ProbePlan:
    """What one probe asks: names to resolve and endpoints to try."""

    node_id: str
    network_id: str
    dns: list[str] = field(default_factory=list)
    tcp: list[tuple[str, int]] = field(default_factory=list)
    zookeeper: list[tuple[str, int]] = field(default_factory=list)
    kafka: list[tuple[str, int]] = field(default_factory=list)
    produce: ProduceCheck | None = None
    quorum: list[tuple[str, int]] = field(default_factory=list)  # KRaft controllers: DescribeQuorum

    def json(self) -> str:
        out: dict[str, Any] = {"dns": self.dns, "tcp": self.tcp, "zookeeper": self.zookeeper, "kafka": self.kafka}
        if self.quorum:
            out["quorum"] = self.quorum
        if self.produce:
            out["produce"] = self.produce.json()
        return json.dumps(out)


@cache
def probe_script() -> str:
    return resources.files("swarmctl.checks").joinpath("probe_script.py").read_text(encoding="utf-8")


def run_probe(engine: Engine, stack: str, network: str, plan: ProbePlan, image: str) -> dict[str, Any]:
    """Run one probe container on ``engine``'s node, attached to ``network``; always removed.

    Raises:
        HostError: the probe could not run (no such image on the node) or failed.
    """
    name = f"swarmctl-probe-{stack}-{uuid.uuid4().hex[:8]}"
    try:
        ident = engine.run_container(
            image, ["python3", "-c", probe_script(), plan.json()], network, {labels.PROBE: stack}, name
        )
    except ImageNotFound as e:
        raise HostError(
            engine.name,
            f"the probe image {image} is not on this node: load it there, or set PROBE_IMAGE "
            "(inventory vars) to an image with python3 that the node has",
        ) from e
    try:
        status = engine.wait_container(ident, timeout=TIMEOUT + (PRODUCE_TIMEOUT if plan.produce else 0))
        out = engine.container_output(ident)
        if status != 0:
            err = engine.container_output(ident, stderr=True)
            raise HostError(engine.name, f"the probe failed ({status}): {err.decode(errors='replace')[-300:]}")
        return dict(json.loads(out.decode().strip().splitlines()[-1]))
    finally:
        try:
            engine.remove_container(ident)
        except HostError as e:
            log.warning("%s: could not remove probe %s: %s", engine.name, name, e.message)


def sweep_probes(engine: Engine) -> int:
    """Remove probe containers a crashed run left behind on this node."""
    left = engine.containers(label=labels.PROBE)
    for c in left:
        engine.remove_container(c["Id"])
    return len(left)
