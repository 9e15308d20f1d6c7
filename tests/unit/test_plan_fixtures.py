"""Plans from fixtures, pyinfra style: a state in (JSON) -> the plan out (JSON), pure, no root.

``tests/unit/plans/bootstrap/*.json``: an inventory, what each host reported (facts), which hosts
were blocked and why, the swarm's nodes as the API lists them, the options -> ``plan``, exactly as
``swarmctl bootstrap --plan --json`` prints it.

``tests/unit/plans/engine/*.json``: an inventory with ``engine:``/``registries:``, what each host's
daemon.json and swarmctl's record hold, the swarm's nodes -> ``plan`` as ``swarmctl bootstrap
--plan --json`` prints its engine part, and ``restarts``: the hosts whose engine restarts, in order.

``tests/unit/plans/deploy/*.json``: stack files, the swarm's objects as recorded from the lab
(``tests/recorded``), and edits -> ``plan`` as ``swarmctl deploy --plan --json`` prints it.

Regenerate after a deliberate change with ``UPDATE_PLANS=1 pytest tests/unit/test_plan_fixtures.py``
and review the diff: each fixture says in ``about`` what it is for.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from swarmctl.compose.convert import convert_stack
from swarmctl.compose.loader import load_stack
from swarmctl.errors import InputError, Refused
from swarmctl.facts.engine_config import EngineFacts
from swarmctl.facts.host import HostFacts
from swarmctl.facts.membership import Membership
from swarmctl.facts.nodes import node_view
from swarmctl.facts.stack import StackObjects
from swarmctl.inventory import load_inventory
from swarmctl.ops.bootstrap import BootstrapState, plan_bootstrap
from swarmctl.ops.deploy import plan_stack
from swarmctl.ops.engine_config import EngineState, plan_engine
from swarmctl_lab.images import lab_vars

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PLANS = HERE / "plans"
RECORDED = ROOT / "tests" / "recorded"


def fixtures(kind: str) -> list[Path]:
    return sorted((PLANS / kind).glob("*.json"))


def check(path: Path, case: dict[str, Any], got: dict[str, Any]) -> None:
    if os.environ.get("UPDATE_PLANS") == "1":
        case["plan"] = got
        path.write_text(json.dumps(case, indent=1) + "\n")
    assert "plan" in case, f"{path.name} has no expected plan: run with UPDATE_PLANS=1 and review it"
    assert got == case["plan"], case["about"]


def host_facts(name: str, f: dict[str, Any]) -> HostFacts:
    return HostFacts(
        name=name,
        engine_version="20.10.24",
        hostname=f.get("hostname", name),
        membership=Membership(f["swarm_state"], f["node_id"], f["cluster_id"], f["control_available"]),
        ipvs="yes",
        esp="yes",
        can_probe_ports=True,
    )


@pytest.mark.parametrize("path", fixtures("bootstrap"), ids=lambda p: p.stem)
def test_bootstrap_plan(path: Path, tmp_path: Path) -> None:
    case = json.loads(path.read_text())
    (tmp_path / "hosts.yml").write_text(json.dumps(case["inventory"]))  # JSON is YAML
    inv = load_inventory(tmp_path / "hosts.yml")
    facts = {n: host_facts(n, f) for n, f in case["facts"].items()}
    blocked = dict(case["blocked"])
    nodes = None if case["nodes"] is None else tuple(node_view(n) for n in case["nodes"])
    state = BootstrapState(inv, facts, frozenset(set(facts) - set(blocked)), blocked, nodes, inv.warnings)
    try:
        got: dict[str, Any] = plan_bootstrap(state, **case["options"]).plan.json()
    except Refused as e:
        got = {"refused": str(e)}
    check(path, case, got)


CA_TEXT = b"-----BEGIN CERTIFICATE-----\nnot checked here\n-----END CERTIFICATE-----\n"


@pytest.mark.parametrize("path", fixtures("engine"), ids=lambda p: p.stem)
def test_engine_plan(path: Path, tmp_path: Path) -> None:
    case = json.loads(path.read_text())
    (tmp_path / "ca.crt").write_bytes(CA_TEXT)
    digest = hashlib.sha256(CA_TEXT).hexdigest()
    (tmp_path / "hosts.yml").write_text(json.dumps(case["inventory"]))
    inv = load_inventory(tmp_path / "hosts.yml")
    facts = {}
    for name, f in case["facts"].items():
        cas = {r: digest if d == "CA_DIGEST" else d for r, d in f["cas"].items()}
        facts[name] = EngineFacts(
            name,
            f["config"],
            f["owned"],
            cas,
            f["systemctl"],
            Membership(f.get("swarm_state", "active" if f["node_id"] else "inactive"), f["node_id"],
                       control_available=f["manager"]),
            tuple(f.get("log_drivers", ())),
        )  # fmt: skip
    ca_files = {r.host: (digest, r.ca_file) for r in inv.registries.values() if r.ca_file is not None}
    nodes = None if case["nodes"] is None else tuple(node_view(n) for n in case["nodes"])
    planned = plan_engine(inv, EngineState(facts, case["blocked"], nodes, ca_files), **case["options"])
    got = {**planned.plan.json(), "restarts": [h.host for h in planned.restarts]}
    check(path, case, got)


def recorded(name: str) -> dict[str, Any]:
    return dict(json.loads((RECORDED / f"{name}.json").read_text().replace("<ROOT>", str(ROOT))))


def objects(data: dict[str, Any]) -> StackObjects:
    return StackObjects(
        networks=data["networks"],
        secrets=data["secrets"],
        configs=data["configs"],
        services=data["services"],
        network_names=data["network_names"],
    )


PARITY = ["container", "deploy", "network", "storage", "override", "jobs"]


@pytest.mark.parametrize("case", PARITY)
def test_a_redeploy_of_every_parity_stack_writes_nothing(case: str) -> None:
    """The specs as swarm stores them (recorded after a deploy) against the same files converted
    again: no needless write, which would restart every task of the service."""
    data = recorded(f"parity-{case}")
    config = load_stack("parity", [ROOT / f for f in data["files"]], lab_vars(), {})
    plan = plan_stack(convert_stack(config), objects(data))
    assert plan.json()["changes"] == []


@pytest.mark.parametrize("path", fixtures("deploy"), ids=lambda p: p.stem)
def test_deploy_plan(path: Path) -> None:
    case = json.loads(path.read_text())
    env = {**lab_vars(), **case.get("env", {})}
    config = load_stack("parity", [ROOT / f for f in case["files"]], env, {})
    data = recorded(case["recorded"]) if case.get("recorded") else {
        "networks": {}, "secrets": {}, "configs": {}, "services": {}, "network_names": {}}  # fmt: skip
    for name in case.get("drop", []):
        for kind in ("services", "networks", "secrets", "configs"):
            data[kind].pop(name, None)
    try:
        got: dict[str, Any] = plan_stack(convert_stack(config), objects(data), **case.get("options", {})).json()
    except InputError as e:
        got = {"refused": str(e)}
    check(path, case, got)
