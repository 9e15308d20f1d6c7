"""diff on the lab: hand edits of a service and of a node are drift, named with what undoes them;
deploy and bootstrap --prune undo them; the swarm is only read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Lab
from tests.helpers import edit_node, swarmctl

STACK = """services:
  app:
    image: swarmctl-lab/probe:py3
    command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]
"""


@pytest.fixture(scope="module")
def drift(swarm: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, Path]]:
    stack = tmp_path_factory.mktemp("drift") / "drift.yml"
    stack.write_text(STACK)
    run = swarmctl("deploy", "drift", "-f", str(stack), "--no-verify", "-i", str(swarm.inventory))
    assert run.rc == 0, str(run)
    yield swarm, stack
    swarmctl("rm", "drift", "-i", str(swarm.inventory))
    with swarm.docker("lab1") as api:  # the hand label, if the test stopped before removing it
        edit_node(api, "lab2", lambda spec: (spec.get("Labels") or {}).pop("hand", None))


def test_hand_edits_are_drift_until_deploy_and_bootstrap_undo_them(drift: tuple[Lab, Path]) -> None:
    lab, stack = drift
    diff = ["diff", "drift", "-f", str(stack), "--exit-code", "-i", str(lab.inventory)]
    clean = swarmctl(*diff)
    assert clean.rc == 0 and "no drift" in clean.stdout, str(clean)

    with lab.docker("lab1") as api:  # what `docker service update --env-add` and `docker node update --label-add` do
        svc = api.inspect_service("drift_app")
        spec = svc["Spec"]
        spec["TaskTemplate"]["ContainerSpec"]["Env"] = ["X=1"]
        api.update_service(svc["ID"], svc["Version"]["Index"], task_template=spec["TaskTemplate"], name=spec["Name"],
                           labels=spec.get("Labels"), mode=spec.get("Mode"), networks=spec.get("TaskTemplate", {}).get(
                               "Networks"), endpoint_spec=spec.get("EndpointSpec"))  # fmt: skip
        edit_node(api, "lab2", lambda spec: spec.update(Labels={**(spec.get("Labels") or {}), "hand": "1"}))

    found = swarmctl(*diff)
    assert found.rc == 3, str(found)
    assert "update service drift_app (TaskTemplate.ContainerSpec.Env)" in found.stdout, found.stdout
    assert "swarmctl deploy drift --prune" in found.stdout
    assert "node lab2" in found.stdout and "hand" in found.stdout, found.stdout
    doc = swarmctl(*diff, "--json")
    assert doc.rc == 3 and doc.json()["drift"] is True and doc.json()["changes"] == [], str(doc)
    assert {d["name"] for d in doc.json()["differences"]} >= {"drift_app", "lab2"}
    with lab.docker("lab1") as api:  # diff changed nothing
        assert api.inspect_service("drift_app")["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"] == ["X=1"]

    assert swarmctl("deploy", "drift", "-f", str(stack), "--no-verify", "-i", str(lab.inventory)).rc == 0
    assert swarmctl("bootstrap", str(lab.inventory), "--prune").rc == 0
    again = swarmctl(*diff)
    assert again.rc == 0 and "no drift" in again.stdout, str(again)
