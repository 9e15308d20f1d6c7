"""`swarmctl history` and `rollback` on the lab: revisions recorded in the swarm by deploy and
rollback, the difference between them, a rollback that gives back v1's specs field by field, and
history that outlives `swarmctl rm`."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from swarmctl.spec import diff_paths
from tests.e2e.conftest import Lab
from tests.helpers import assert_no_traceback, swarmctl, wait_for

STACK = "hist"
V2_TAG = "py3-hist-v2"
V1 = """
services:
  app:
    image: swarmctl-lab/probe:py3
    command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]
    environment: [COLOR=blue]
    deploy:
      replicas: 2
      update_config: {parallelism: 1, monitor: 2s}
  side:
    image: swarmctl-lab/probe:py3
    command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]
"""
# another image tag (the same image, tagged on every host: the lab has no Docker Hub) and COLOR changed
V2 = V1.replace("probe:py3\n    command", f"probe:{V2_TAG}\n    command", 1).replace("COLOR=blue", "COLOR=green")


@pytest.fixture(scope="module")
def files(swarm: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    for name in swarm.names:
        with swarm.docker(name) as api:
            api.tag("swarmctl-lab/probe:py3", "swarmctl-lab/probe", V2_TAG)
    d = tmp_path_factory.mktemp("history")
    out = {}
    for version, body in (("v1", V1), ("v2", V2)):
        out[version] = d / f"{version}.yml"
        out[version].write_text(textwrap.dedent(body))
    yield out
    swarmctl("rm", STACK, "-i", str(swarm.inventory))
    with swarm.docker("lab1") as api:
        for c in api.configs(filters={"label": f"io.swarmctl.history.stack={STACK}"}):
            api.remove_config(c["ID"])


def run(lab: Lab, *args: str) -> Any:
    result = swarmctl(*args, "-i", str(lab.inventory), timeout=600)
    assert_no_traceback(result)
    return result


def specs(lab: Lab) -> dict[str, dict[str, Any]]:
    """The stack's service specs as the engine stores them, network IDs as names (as test_stack_parity)."""
    with lab.docker("lab1") as api:
        names = {n["Id"]: n["Name"] for n in api.networks()}
        out = {}
        for svc in api.services(filters={"label": f"com.docker.stack.namespace={STACK}"}):
            spec = svc["Spec"]
            for net in spec["TaskTemplate"].get("Networks", []):
                net["Target"] = names.get(net["Target"], net["Target"])
            out[spec["Name"]] = spec
        return out


def converged(lab: Lab) -> bool:
    with lab.docker("lab1") as api:
        for svc in api.services(filters={"label": f"com.docker.stack.namespace={STACK}"}):
            state = (svc.get("UpdateStatus") or {}).get("State", "completed")
            if state not in ("completed", "rollback_completed"):
                return False
        return True


def test_deploy_deploy_history_rollback_history(swarm: Lab, files: dict[str, Path]) -> None:
    first = run(swarm, "deploy", STACK, "-f", str(files["v1"]), "--no-verify", "--json")
    assert first.rc == 0 and first.json()["revision"] == 1, str(first)
    v1 = specs(swarm)
    second = run(swarm, "deploy", STACK, "-f", str(files["v2"]), "--no-verify", "--json")
    assert second.rc == 0 and second.json()["revision"] == 2, str(second)
    v2 = specs(swarm)
    assert v2[f"{STACK}_app"]["TaskTemplate"]["ContainerSpec"]["Image"].startswith(f"swarmctl-lab/probe:{V2_TAG}")

    # a deploy that changes nothing records nothing
    again = run(swarm, "deploy", STACK, "-f", str(files["v2"]), "--no-verify", "--json")
    assert again.rc == 0 and again.json()["revision"] is None, str(again)

    history = run(swarm, "history", STACK, "--json")
    assert history.rc == 0, str(history)
    revisions = history.json()["revisions"]
    assert [(r["revision"], r["command"]) for r in revisions] == [(1, "deploy"), (2, "deploy")]
    assert revisions[0]["files_digest"] != revisions[1]["files_digest"] and "@" in revisions[0]["who"]
    [difference] = revisions[1]["differences"]
    assert (difference["name"], difference["action"]) == ("app", "update")
    assert {"TaskTemplate.ContainerSpec.Image", "TaskTemplate.ContainerSpec.Env"} <= set(difference["fields"])
    assert f"probe:py3 -> swarmctl-lab/probe:{V2_TAG}" in difference["detail"]
    assert "COLOR=blue -> green" in difference["detail"]
    table = run(swarm, "history", STACK)
    assert "env COLOR=blue -> green" in table.stdout, str(table)

    # bad revisions: one line, exit 2, naming the revisions there are; nothing changes
    missing = run(swarm, "rollback", STACK, "9")
    assert missing.rc == 2 and missing.stderr.strip() == f"error: stack {STACK} has no revision 9 (its revisions: 1, 2)"
    assert specs(swarm) == v2

    plan = run(swarm, "rollback", STACK, "--plan", "--json")
    assert plan.rc == 0 and plan.json()["target"] == 1, str(plan)
    assert [c["name"] for c in plan.json()["changes"]] == ["app"]
    assert specs(swarm) == v2  # --plan changed nothing

    back = run(swarm, "rollback", STACK, "--json")
    assert back.rc == 0, str(back)
    assert back.json()["revision"] == 3 and [s["result"] for s in back.json()["services"]] == ["updated"]
    wait_for("the rollback to settle", lambda: converged(swarm), bool, timeout=120)
    now = specs(swarm)
    differences = [f"{name} {path}" for name in v1 for path in diff_paths(now[name], v1[name])]
    assert differences == [], differences
    # and the stack file of v1 sees nothing to do
    plan_v1 = run(swarm, "deploy", STACK, "-f", str(files["v1"]), "--plan", "--json")
    assert plan_v1.json()["changes"] == [], str(plan_v1)

    after = run(swarm, "history", STACK, "--json").json()["revisions"]
    assert [(r["revision"], r["command"], r["restores"]) for r in after] == [
        (1, "deploy", None), (2, "deploy", None), (3, "rollback", 1)
    ]  # fmt: skip
    assert after[2]["files_digest"] == after[0]["files_digest"]
    assert "COLOR=green -> blue" in after[2]["differences"][0]["detail"]


def test_history_outlives_rm_and_a_rollback_to_services_gone_is_refused(swarm: Lab, files: dict[str, Path]) -> None:
    removed = run(swarm, "rm", STACK)
    assert removed.rc == 0, str(removed)
    listed = run(swarm, "history", STACK, "--json")
    assert [r["revision"] for r in listed.json()["revisions"]] == [1, 2, 3], str(listed)
    refused = run(swarm, "rollback", STACK, "1")
    assert refused.rc == 2, str(refused)
    assert refused.stderr.strip() == (
        f"error: revision 1 of stack {STACK} has services that no longer exist: app, side (rollback changes "
        "existing services; deploy them first); its revisions: 1, 2, 3"
    )
    assert specs(swarm) == {}
