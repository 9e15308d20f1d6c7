"""Variables a stack generates once and keeps (``x-swarmctl.generate``), as a manager has them.

Each is a swarm config ``swarmctl-generated_<stack>_<VARIABLE>`` labelled with its stack and
variable; its data is the value. Configs live in the swarm's raft store (and so in its backups),
outside the stack: removing the stack keeps them, as it keeps the stack's volumes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from swarmctl import labels
from swarmctl.transport.engine import Engine

PREFIX = "swarmctl-generated"
MAX_NAME = 64  # swarm's limit on an object name


def config_name(stack: str, variable: str) -> str:
    """``swarmctl-generated_<stack>_<VARIABLE>``, shortened with a hash when too long for swarm."""
    name = f"{PREFIX}_{stack}_{variable}"
    if len(name) <= MAX_NAME:
        return name
    tag = hashlib.sha256(f"{stack}/{variable}".encode()).hexdigest()[:16]
    return f"{PREFIX}_{tag}_{variable[: MAX_NAME - len(PREFIX) - len(tag) - 2]}"


def parse_generated(stack: str, configs: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """VARIABLE -> value, from the configs a manager lists (pure); unreadable ones are skipped."""
    out: dict[str, str] = {}
    for c in configs:
        spec = c.get("Spec") or {}
        lab = spec.get("Labels") or {}
        if lab.get(labels.GENERATED_STACK) != stack or not lab.get(labels.GENERATED_VARIABLE):
            continue
        try:
            value = base64.b64decode(spec.get("Data") or "", validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            continue
        if value:
            out[str(lab[labels.GENERATED_VARIABLE])] = value
    return out


def read_generated(engine: Engine, stack: str) -> dict[str, str]:
    filters = {"label": [f"{labels.GENERATED_STACK}={stack}"]}
    return parse_generated(stack, engine.objects("config", filters=filters))


def config_body(stack: str, variable: str, value: str) -> dict[str, Any]:
    return {
        "Name": config_name(stack, variable),
        "Labels": {labels.GENERATED_STACK: stack, labels.GENERATED_VARIABLE: variable},
        "Data": base64.b64encode(value.encode()).decode(),
    }
