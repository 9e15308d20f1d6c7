"""Every fact's parse, from outputs recorded on real lab hosts (pyinfra style): the command, what
it printed, the fact swarmctl makes of it. No host involved; `python -m tests.recorded.facts`
records them again (root, its own lab), and the diff is reviewed like a golden file's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from swarmctl.facts import engine_config, host, raft
from swarmctl.facts.membership import parse_membership

FACTS = Path(__file__).resolve().parent / "facts"


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: vars(o) if hasattr(o, "__dict__") else str(o)))


PARSES = {
    "membership": lambda out: parse_membership(json.loads(out)).json(),
    "engine_config": lambda out: _jsonable(engine_config.parse_config_read(out)),
    "data_roots": raft.parse_data_roots,
    "raft": lambda out: {r: vars(v) for r, v in raft.parse_raft_by_root(out).items()},
    "host": host.parse_facts_script,
    "ports": lambda out: {f"{a} {p}": r for (a, p), r in host.parse_ports(out).items()},
}


def cases() -> list[Path]:
    return sorted(FACTS.glob("*.json"))


def test_every_fact_has_recorded_cases() -> None:
    recorded = {json.loads(p.read_text())["fact"] for p in cases()}
    assert recorded == set(PARSES), f"facts without a recorded case: {set(PARSES) - recorded}"


@pytest.mark.parametrize("path", cases(), ids=lambda p: p.stem)
def test_a_recorded_output_gives_its_fact(path: Path) -> None:
    case = json.loads(path.read_text())
    got = _jsonable(PARSES[case["fact"]](case["output"]))
    assert got == _jsonable(case["expected"]), case["about"]
