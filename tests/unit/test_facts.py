"""Every fact's parse, from outputs recorded on real lab hosts (pyinfra style): the command, what
it printed, the fact swarmctl makes of it. No host involved; `python -m tests.recorded.facts`
records them again (root, its own lab), and the diff is reviewed like a golden file's."""

from __future__ import annotations

import contextlib
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


def test_the_port_probes_go_on_past_a_silent_target_and_name_it_a_timeout() -> None:
    """_PORTS_SCRIPT run by this machine's bash against ports of this machine: one listening, one
    closed (refused: the path is open), and one silent - a listener whose accept queue is full
    drops every new SYN, as a firewall's DROP does. The targets after the silent one in the list
    still get their own verdicts (the pass in turn stops at it; the rest are probed at once)."""
    import socket
    import subprocess
    import time

    with contextlib.ExitStack() as stack:
        listening = stack.enter_context(socket.socket())
        listening.bind(("127.0.0.1", 0))
        listening.listen(8)
        silent = stack.enter_context(socket.socket())
        silent.bind(("127.0.0.1", 0))
        silent.listen(0)
        for _ in range(2):  # the accept queue (backlog + 1) filled: later SYNs are dropped
            filler = stack.enter_context(socket.socket())
            filler.setblocking(False)
            filler.connect_ex(silent.getsockname())
        with socket.socket() as s:  # a port nothing listens on: bound, then closed
            s.bind(("127.0.0.1", 0))
            closed = s.getsockname()[1]
        quiet, up = silent.getsockname()[1], listening.getsockname()[1]
        targets = [
            ("127.0.0.1", closed),
            ("127.0.0.1", quiet),
            ("127.0.0.1", up),
        ]
        t0 = time.monotonic()
        proc = subprocess.run(host.probe_command(targets), capture_output=True, text=True, timeout=30)
        took = time.monotonic() - t0
    assert proc.returncode == 0, proc
    assert host.parse_ports(proc.stdout) == {
        ("127.0.0.1", str(closed)): "refused",
        ("127.0.0.1", str(quiet)): "timeout",
        ("127.0.0.1", str(up)): "open",
    }, proc.stdout
    assert took < 8, f"the probes took {took:.1f}s"  # about 4 s: 1 s for the pass in turn, 3 s at once
