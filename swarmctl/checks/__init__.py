"""Application checks: the probe that runs inside a stack's overlay network, and pure judges of
what it saw (ZooKeeper, Kafka, TCP). ``verify`` and the rollout gates ask the same judges."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    """A judge's answer: whether it holds, what was expected, what was seen, and why it matters."""

    ok: bool
    expected: str = ""
    got: str = ""
    detail: str = ""
