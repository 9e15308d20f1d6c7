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


def test_the_read_probes_ahead_and_keeps_the_configuration_read_s_exit_status(monkeypatch: pytest.MonkeyPatch) -> None:
    """read_host's command, run by this machine's own sh and bash: the probe section follows the
    configuration read, and the command fails when that read failed (the probes cannot hide it).
    The two read scripts are stood in for (they read this machine's files); the probe goes to a
    closed port on this machine."""
    import socket
    import subprocess

    with socket.socket() as s:  # a port nothing listens on: bound, then closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(host, "_FACTS_SCRIPT", "echo docker_cli=/usr/bin/docker")
    for status, expected in (("true", 0), ("false", 1)):
        monkeypatch.setattr(host, "READ_SCRIPT", f"echo conf $1; {status}")
        script = host.read_script([("127.0.0.1", port)])
        proc = subprocess.run(["sh", "-c", script, "read", "registry.lan"], capture_output=True, text=True, timeout=30)
        assert proc.returncode == expected, proc
        head, _, tail = proc.stdout.partition(host._SEPARATOR + "\n")
        conf, probed, ports = tail.rpartition(host._PROBES_SEPARATOR + "\n")
        assert head == "docker_cli=/usr/bin/docker\n" and conf == "conf registry.lan\n" and probed, proc.stdout
        assert host.parse_ports(ports) == {("127.0.0.1", str(port)): "refused"}
    assert host._PROBES_SEPARATOR not in host.read_script()  # nothing asked ahead: no probe section
