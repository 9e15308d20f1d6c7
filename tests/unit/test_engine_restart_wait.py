"""The wait before a manager's engine restarts (ops/engine._majority_refusal), over node lists
recorded from the lab (tests/recorded/nodes.json: 3 managers, all ready and reachable).

After a leader change swarmkit's new dispatcher marks every node "unknown" until its agent reports
to it; on Docker 26 the lab's second roll of engine restarts came right after the leader's restart
and was refused with "0 others reachable". The same rule must still refuse when the majority
never shows. The session stands in for SSH and the engines (only their answers matter here); the
e2e path is tests/e2e/test_engine.py.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any

import pytest

from swarmctl.ops import engine_config as ops_engine
from tests.unit.fakeengine import recorded

NODES = recorded("nodes")
MANAGERS = ["lab1", "lab2", "lab3"]


def change(name: str) -> ops_engine.HostChange:
    """A manager's restart, its node the one its own engine reported."""
    node_id = next(n["ID"] for n in NODES if n["Description"]["Hostname"] == name)
    return ops_engine.HostChange(name, None, None, (), (), True, in_swarm=True, manager=True, node_id=node_id)


def unknown(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same nodes as a new leader's dispatcher first lists them."""
    out = copy.deepcopy(nodes)
    for n in out:
        n["Status"]["State"] = "unknown"
    return out


class Answers:
    """Each engine answers info() as a reachable manager, and nodes() from a script of node lists."""

    def __init__(self, script: list[list[dict[str, Any]]]):
        self.script = script
        self.asked = 0

    def info(self) -> dict[str, Any]:
        return {"Swarm": {"ControlAvailable": True, "LocalNodeState": "active"}}

    def nodes(self) -> list[dict[str, Any]]:
        self.asked += 1
        return self.script[min(self.asked, len(self.script)) - 1]


def session(answers: Answers) -> Any:
    addresses = {n["Description"]["Hostname"]: n["Status"]["Addr"] for n in NODES}
    inventory = SimpleNamespace(host=lambda name: SimpleNamespace(name=name, address=addresses[name]))
    return SimpleNamespace(inventory=inventory, engine=lambda name: answers)


@pytest.fixture(autouse=True)
def fast_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ops_engine, "POLL", 0.01)


def test_a_majority_unknown_after_a_leader_change_is_waited_for() -> None:
    answers = Answers([unknown(NODES), unknown(NODES), NODES])
    told: list[str] = []
    assert ops_engine._majority_refusal(session(answers), MANAGERS, change("lab1"), 5.0, told.append) == ""
    assert answers.asked == 3
    assert told == ["waiting for a majority of the other managers to be seen ready before restarting lab1"]


def test_a_majority_that_never_shows_is_refused_with_the_wait() -> None:
    answers = Answers([unknown(NODES)])
    why = ops_engine._majority_refusal(session(answers), MANAGERS, change("lab1"), 0.2, lambda _: None)
    assert why.startswith("refusing to restart the engine of lab1: of 3 managers only 0 others are reachable")
    assert why.endswith("(waited 0.2s for them)")
    assert answers.asked > 2  # asked again until the deadline


def test_a_ready_majority_is_not_waited_for() -> None:
    answers = Answers([NODES])
    told: list[str] = []
    assert ops_engine._majority_refusal(session(answers), MANAGERS, change("lab2"), 5.0, told.append) == ""
    assert answers.asked == 1 and told == []
