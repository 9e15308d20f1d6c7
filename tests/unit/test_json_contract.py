"""One JSON contract for every command: with --json, exactly one JSON document on stdout - on
success and on failure (the error and the failed hosts in it) - valid against its definition in
swarmctl/schemas/output.json, and nothing else on stdout.

Here every command meets bad input (an inventory that does not exist) and an unreachable host (a
port on 127.0.0.1 nothing listens on); tests/e2e/test_json_contract.py runs them on the lab, for
their success and --plan documents.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

SCHEMA = json.loads(resources.files("swarmctl").joinpath("schemas/output.json").read_text())

# command line (after `swarmctl`) -> its definition in the schema
COMMANDS: list[tuple[list[str], str]] = [
    (["bootstrap", "INV"], "bootstrap"),
    (["bootstrap", "INV", "--plan"], "bootstrap"),
    (["status"], "status"),
    (["ps"], "ps"),
    (["ps", "kafka", "--grid"], "ps"),
    (["logs", "kafka"], "logs"),
    (["diff"], "diff"),
    (["diff", "kafka", "--exit-code"], "diff"),
    (["deploy", "kafka"], "deploy"),
    (["deploy", "kafka", "--plan"], "deploy"),
    (["verify", "kafka"], "verify"),
    (["update", "kafka", "--force"], "update"),
    (["update", "kafka", "--force", "--plan"], "update"),
    (["history", "kafka"], "history"),
    (["rollback", "kafka"], "rollback"),
    (["rollback", "kafka", "2", "--plan"], "rollback"),
    (["rotate", "tokens"], "rotate"),
    (["rotate", "ca"], "rotate"),
    (["rotate", "unlock-key"], "rotate"),
    (["unlock"], "unlock"),
    (["unlock", "--plan"], "unlock"),
    (["backup"], "backup"),
    (["backup", "--plan"], "backup"),
    (["recover"], "recover"),
    (["recover", "--plan"], "recover"),
    (["images", "ls", "kafka"], "images"),
    (["host-keys"], "host-keys"),
    (["host-keys", "--plan"], "host-keys"),
]


def validate(stdout: str, definition: str) -> dict[str, Any]:
    """The one document on stdout, checked against its definition."""
    doc = json.loads(stdout)  # one document and nothing else: a second one or a line more fails here
    jsonschema.validate(doc, {**SCHEMA, "$ref": f"#/$defs/{definition}"})
    return dict(doc)


KEY = "SWARMCTL_SECRETS_KEY"


def run(args: list[str], cwd: Path, key: bool = False) -> subprocess.CompletedProcess[str]:
    """The real command line: no remembered inventory; a secrets key only when ``key``."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), **({KEY: base64.b64encode(b"k" * 32).decode()} if key else {})}
    return subprocess.run([sys.executable, "-m", "swarmctl", *args, "--json"], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120)  # fmt: skip


@pytest.fixture(scope="module")
def unreachable(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("json")
    (d / "hosts.yml").write_text(
        "ssh: {known_hosts: ./known_hosts, port: 1, connect_timeout: 2}\n"
        "hosts:\n  mgr: {address: 127.0.0.1, role: manager}\n"
    )
    return d


@pytest.mark.parametrize(("args", "definition"), COMMANDS, ids=lambda x: " ".join(x) if isinstance(x, list) else x)
def test_an_unreachable_host_is_one_document_naming_it(unreachable: Path, args: list[str], definition: str) -> None:
    line = [str(unreachable / "hosts.yml") if a == "INV" else a for a in args]
    proc = run([*line, "-i", str(unreachable / "hosts.yml")], unreachable, key=True)
    doc = validate(proc.stdout, definition)
    assert proc.returncode != 0 and doc["exit_status"] == proc.returncode and doc["ok"] is False, proc.stderr
    assert doc["error"], doc
    named = {f["host"] for f in doc["failures"]}
    assert "mgr" in named or "mgr" in doc["error"], doc  # the host that failed is named


@pytest.mark.parametrize(("args", "definition"), COMMANDS, ids=lambda x: " ".join(x) if isinstance(x, list) else x)
def test_bad_input_is_one_document_with_exit_status_2(tmp_path: Path, args: list[str], definition: str) -> None:
    line = [str(tmp_path / "nope.yml") if a == "INV" else a for a in args]
    proc = run([*line, "-i", str(tmp_path / "nope.yml")], tmp_path)
    doc = validate(proc.stdout, definition)
    assert proc.returncode == 2 and doc["exit_status"] == 2 and not doc["ok"] and "nope.yml" in doc["error"]


@pytest.mark.parametrize(
    ("args", "definition"),
    [
        (["backup", "--list", "missing.swarmctl"], "backup"),
        (["secrets", "list"], "secrets"),
        (["lab", "status", "--dir", "no-lab-here"], "lab"),
        (["init", ".", "--hosts", "10.0.0.1,10.0.0.2"], "init"),
    ],
    ids=lambda x: " ".join(x) if isinstance(x, list) else x,
)
def test_commands_without_an_inventory_fail_with_one_document(tmp_path: Path, args: list[str], definition: str) -> None:
    proc = run(args, tmp_path)
    doc = validate(proc.stdout, definition)
    assert proc.returncode in (1, 2) and doc["exit_status"] == proc.returncode and doc["error"], proc.stderr


def test_init_succeeds_with_one_document_and_plan_shows_the_same(tmp_path: Path) -> None:
    plan = run(["init", "p", "--hosts", "10.0.0.1,10.0.0.2,10.0.0.3", "--plan"], tmp_path)
    planned = validate(plan.stdout, "init")
    assert plan.returncode == 0 and planned["ok"] and not (tmp_path / "p" / "hosts.yml").exists()
    done = run(["init", "p", "--hosts", "10.0.0.1,10.0.0.2,10.0.0.3"], tmp_path)
    doc = validate(done.stdout, "init")
    assert done.returncode == 0 and doc["ok"] and doc["changes"] == planned["changes"]


def test_a_usage_error_is_one_document_too(tmp_path: Path) -> None:
    proc = run(["deploy", "--no-such-option"], tmp_path)
    doc = validate(proc.stdout, "deploy")
    assert proc.returncode == 2 and "no such option" in doc["error"].lower()


def test_every_json_command_names_a_definition_in_its_help() -> None:
    """--help says which definition a command's --json follows, and every definition exists."""
    from click.testing import CliRunner

    from swarmctl.cli import cli

    defs = set(SCHEMA["$defs"]) - {"change", "failure", "logline"}  # logline: the lines of logs --json
    seen = set()
    for args in (["bootstrap"], ["status"], ["ps"], ["logs"], ["diff"], ["deploy"], ["verify"], ["update"],
                 ["history"], ["rollback"], ["rotate", "tokens"], ["rotate", "ca"], ["rotate", "unlock-key"],
                 ["unlock"], ["backup"], ["recover"],
                 ["images", "push"], ["images", "ls"], ["lab", "status"], ["secrets", "list"], ["init"],
                 ["host-keys"], ["maintain"], ["drain"], ["activate"]):  # fmt: skip
        out = CliRunner().invoke(cli, [*args, "--help"]).output
        text = " ".join(out.split())
        assert "swarmctl/schemas/output.json, $defs/" in text, args
        seen.add(text.split("$defs/")[1].split(")")[0])
    assert seen == defs
