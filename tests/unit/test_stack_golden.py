"""Golden files: stack files -> the exact Docker API objects (pure conversion, no engine).

Regenerate after a deliberate change with `UPDATE_GOLDEN=1 pytest tests/unit/test_stack_golden.py`
and review the diff.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from swarmctl.compose.convert import convert_stack
from swarmctl.compose.loader import load_stack
from swarmctl.secretstore import KEY_ENV as SECRETS_KEY_ENV
from swarmctl.secretstore import KeySource

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent / "golden"
CASES = {
    "container": [ROOT / "tests/stacks/parity/container.yml"],
    "deploy": [ROOT / "tests/stacks/parity/deploy.yml"],
    "network": [ROOT / "tests/stacks/parity/network.yml"],
    "storage": [ROOT / "tests/stacks/parity/storage.yml"],
    "override": [ROOT / "tests/stacks/parity/override-base.yml", ROOT / "tests/stacks/parity/override.yml"],
    "jobs-and-newer-keys": [GOLDEN / "jobs-and-newer-keys.yml"],
    "interpolation": [GOLDEN / "interpolation.yml"],
    "kafka": [ROOT / "stacks/kafka/stack.yml"],
    "kafka-external": [ROOT / "stacks/kafka/stack.yml", ROOT / "stacks/kafka/external.yml"],
    "jobs": [ROOT / "tests/stacks/parity/jobs.yml"],
}
ENV = {
    "PROBE_IMAGE": "swarmctl-lab/probe:1",
    "TAG": "2.1",  # set: `${TAG-latest}` takes it (set but empty would be an empty tag, refused)
    "EMPTY": "",
    "REPLICAS": "3",
    "NAME": "env",
    "HOME": "/home/x",
    **{f"KAFKA_EXTERNAL_HOST_{i}": f"10.0.0.1{i}" for i in (1, 2, 3)},
}
VARS = {"FROM_INVENTORY": "inventory", "FROM_DOTENV": "shadowed by .env", "REPLICAS": "9"}


# a fixed secrets key, so that the keyed content labels of secrets are the same on every run
KEYS = KeySource({SECRETS_KEY_ENV: base64.b64encode(bytes(range(32))).decode()})


def render(case: str) -> dict[str, Any]:
    config = load_stack("golden", CASES[case], ENV, VARS)
    desired = convert_stack(config, KEYS)
    data = {
        "warnings": [w.replace(str(ROOT), "<ROOT>") for w in config.warnings],
        "networks": desired.networks,
        "external_networks": desired.external_networks,
        "secrets": {n: {"spec": o.spec, "keyed_digest": o.digest} for n, o in desired.secrets.items()},
        "configs": {n: {"spec": o.spec, "data": o.data.decode()} for n, o in desired.configs.items()},
        "services": desired.services,
    }
    return json.loads(json.dumps(data).replace(str(ROOT), "<ROOT>"))


@pytest.mark.parametrize("case", sorted(CASES))
def test_conversion_matches_golden_file(case: str) -> None:
    path = GOLDEN / f"{case}.json"
    got = render(case)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    assert path.is_file(), f"no golden file {path}: run with UPDATE_GOLDEN=1 and review it"
    assert got == json.loads(path.read_text())
