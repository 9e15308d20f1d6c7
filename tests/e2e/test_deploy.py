"""`swarmctl deploy` and `rm` on the lab: plan, idempotence, waiting, failures, rollback, prune."""

from __future__ import annotations

import base64
import os
import textwrap
from pathlib import Path
from typing import Any

from swarmctl_lab import hosts as labhosts
from tests.e2e.conftest import Lab
from tests.helpers import assert_no_traceback, swarmctl

SLEEP = "[sh, -c, \"trap 'exit 0' TERM; while true; do sleep 1; done\"]"


def write(tmp_path: Path, name: str, body: str) -> Path:
    f = tmp_path / name
    f.write_text(textwrap.dedent(body))
    return f


def deploy(lab: Lab, stack: str, f: Path, *extra: str, env: dict[str, str] | None = None) -> Any:
    return swarmctl("deploy", stack, "-f", str(f), "-i", str(lab.inventory), *extra, timeout=400, env=env)


def services(lab: Lab, stack: str) -> dict[str, dict[str, Any]]:
    with lab.docker("lab1") as api:
        found = api.services(filters={"label": f"com.docker.stack.namespace={stack}"})
        return {s["Spec"]["Name"]: s for s in found}


def running_tasks(lab: Lab, service: str) -> set[str]:
    with lab.docker("lab1") as api:
        return {t["ID"] for t in api.tasks(filters={"service": service, "desired-state": "running"})}


def rm(lab: Lab, stack: str) -> None:
    run = swarmctl("rm", stack, "-i", str(lab.inventory))
    assert run.rc == 0, str(run)


APP = f"""
services:
  app:
    image: ${{PROBE_IMAGE}}
    command: {SLEEP}
    environment: [COLOR=blue]
    deploy:
      replicas: 2
      update_config: {{parallelism: 1, delay: 1s, monitor: 2s}}
    networks: [front]
  side:
    image: ${{PROBE_IMAGE}}
    command: {SLEEP}
networks:
  front: {{}}
"""


def test_plan_deploy_redeploy_and_update(swarm: Lab, tmp_path: Path) -> None:
    f = write(tmp_path, "app.yml", APP)
    plan = deploy(swarm, "app", f, "--plan", "--json")
    assert plan.rc == 0, str(plan)
    assert plan.json()["changes"] == [
        {"kind": "network", "name": "app_default", "action": "create", "fields": [], "detail": ""},
        {"kind": "network", "name": "app_front", "action": "create", "fields": [], "detail": ""},
        {"kind": "service", "name": "app_app", "action": "create", "fields": [], "detail": ""},
        {"kind": "service", "name": "app_side", "action": "create", "fields": [], "detail": ""},
    ]
    assert services(swarm, "app") == {}  # --plan changed nothing

    try:
        first = deploy(swarm, "app", f)
        assert first.rc == 0, str(first)
        assert "app_app: 2/2 converged" in first.stderr and "app_side: 1/1 converged" in first.stderr
        versions = {n: s["Version"]["Index"] for n, s in services(swarm, "app").items()}
        tasks = running_tasks(swarm, "app_app")
        assert len(tasks) == 2

        # docker's own stack commands see a swarmctl stack
        proc = labhosts.host_exec(swarm.spec, "lab1", ["docker", "stack", "services", "app", "--format", "{{.Name}}"])
        assert sorted(proc.stdout.decode().split()) == ["app_app", "app_side"]

        again = deploy(swarm, "app", f, "--json")
        assert again.rc == 0, str(again)
        assert again.json()["changes"] == [] and again.json()["converged"] is True
        assert {n: s["Version"]["Index"] for n, s in services(swarm, "app").items()} == versions
        assert running_tasks(swarm, "app_app") == tasks  # nothing restarted

        f.write_text(f.read_text().replace("COLOR=blue", "COLOR=green").replace("replicas: 2", "replicas: 3"))
        plan = deploy(swarm, "app", f, "--plan", "--json")
        assert plan.json()["changes"] == [
            {
                "kind": "service",
                "name": "app_app",
                "action": "update",
                "fields": ["Mode.Replicated.Replicas", "TaskTemplate.ContainerSpec.Env"],
                "detail": "",
            }
        ]
        assert {n: s["Version"]["Index"] for n, s in services(swarm, "app").items()} == versions
        update = deploy(swarm, "app", f)
        assert update.rc == 0, str(update)
        assert "update service app_app (Mode.Replicated.Replicas, TaskTemplate.ContainerSpec.Env)" in update.stderr
        after = services(swarm, "app")
        assert after["app_side"]["Version"]["Index"] == versions["app_side"]
        assert after["app_app"]["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"] == ["COLOR=green"]
        assert len(running_tasks(swarm, "app_app")) == 3
        assert not running_tasks(swarm, "app_app") & tasks  # every task was replaced by the update
    finally:
        rm(swarm, "app")
    assert services(swarm, "app") == {}
    with swarm.docker("lab1") as api:
        assert not api.networks(filters={"label": "com.docker.stack.namespace=app"})


def test_a_crashing_service_fails_the_deploy_with_its_task_errors(swarm: Lab, tmp_path: Path) -> None:
    f = write(
        tmp_path, "crash.yml", "services:\n  crash:\n    image: ${PROBE_IMAGE}\n    command: [sh, -c, 'exit 1']\n"
    )
    try:
        run = deploy(swarm, "crash", f, "--timeout", "120")
        assert run.rc == 1, str(run)
        assert_no_traceback(run)
        last = run.stderr.strip().splitlines()[-1]
        assert last.startswith("error: crash_crash failed: task ") and "non-zero exit (1)" in last, last
    finally:
        rm(swarm, "crash")


def test_a_missing_image_fails_fast(swarm: Lab, tmp_path: Path) -> None:
    f = write(tmp_path, "noimg.yml", "services:\n  ghost:\n    image: swarmctl-lab/does-not-exist:1\n")
    try:
        run = deploy(swarm, "noimg", f, "--timeout", "120")
        assert run.rc == 1, str(run)
        assert "noimg_ghost failed" in run.stderr and "No such image" in run.stderr, str(run)
    finally:
        rm(swarm, "noimg")


def test_a_rollback_is_a_failure(swarm: Lab, tmp_path: Path) -> None:
    good = f"""
    services:
      roll:
        image: ${{PROBE_IMAGE}}
        command: {SLEEP}
        deploy:
          replicas: 2
          update_config: {{parallelism: 1, failure_action: rollback, monitor: 5s}}
          rollback_config: {{parallelism: 0}}
    """
    f = write(tmp_path, "roll.yml", good)
    try:
        assert deploy(swarm, "roll", f).rc == 0
        f.write_text(textwrap.dedent(good).replace(SLEEP, "[sh, -c, 'sleep 1; exit 3']"))
        run = deploy(swarm, "roll", f, "--timeout", "180")
        assert run.rc == 1, str(run)
        assert "roll_roll rolled back" in run.stderr, str(run)
        spec = services(swarm, "roll")["roll_roll"]["Spec"]
        assert spec["TaskTemplate"]["ContainerSpec"]["Args"][-1].startswith("trap")  # back on the good spec
    finally:
        rm(swarm, "roll")


def test_changes_swarm_cannot_make_in_place_are_refused(swarm: Lab, tmp_path: Path) -> None:
    (tmp_path / "token.txt").write_text("one")
    body = f"""
    services:
      app:
        image: ${{PROBE_IMAGE}}
        command: {SLEEP}
        secrets: [token]
        networks: [net]
    networks:
      net: {{driver_opts: {{com.docker.network.driver.mtu: "1400"}}}}
    secrets:
      token: {{file: ./token.txt}}
    """
    f = write(tmp_path, "imm.yml", body)
    # a changed plain file is told by its keyed content label, which needs the secrets key
    key = {"SWARMCTL_SECRETS_KEY": base64.b64encode(os.urandom(32)).decode()}
    try:
        assert deploy(swarm, "imm", f, env=key).rc == 0
        version = services(swarm, "imm")["imm_app"]["Version"]["Index"]
        (tmp_path / "token.txt").write_text("two")
        run = deploy(swarm, "imm", f, env=key)
        assert run.rc == 2, str(run)
        assert "secret imm_token has new content, but swarm secrets are immutable" in run.stderr
        (tmp_path / "token.txt").write_text("one")
        f.write_text(f.read_text().replace('"1400"', '"1300"'))
        run = deploy(swarm, "imm", f, env=key)
        assert run.rc == 2, str(run)
        assert "network imm_net differs in driver_opts" in run.stderr and "swarmctl rm imm" in run.stderr
        assert services(swarm, "imm")["imm_app"]["Version"]["Index"] == version
    finally:
        rm(swarm, "imm")


def test_prune_removes_what_the_files_no_longer_have(swarm: Lab, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    full = f"""
    services:
      keep:
        image: ${{PROBE_IMAGE}}
        command: {SLEEP}
      drop:
        image: ${{PROBE_IMAGE}}
        command: {SLEEP}
        networks: [extra]
        secrets: [s]
        configs: [c]
    networks:
      extra: {{}}
    secrets:
      s: {{file: ./a.txt}}
    configs:
      c: {{file: ./a.txt}}
    """
    f = write(tmp_path, "full.yml", full)
    small = write(tmp_path, "small.yml", f"services:\n  keep:\n    image: ${{PROBE_IMAGE}}\n    command: {SLEEP}\n")
    try:
        assert deploy(swarm, "pr", f).rc == 0
        plain = deploy(swarm, "pr", small, "--json")
        assert plain.rc == 0 and plain.json()["changes"] == [], str(plain)
        assert set(services(swarm, "pr")) == {"pr_keep", "pr_drop"}
        pruned = deploy(swarm, "pr", small, "--prune", "--json")
        assert pruned.rc == 0, str(pruned)
        assert {(c["kind"], c["name"], c["action"]) for c in pruned.json()["changes"]} == {
            ("service", "pr_drop", "remove"),
            ("network", "pr_extra", "remove"),
            ("secret", "pr_s", "remove"),
            ("config", "pr_c", "remove"),
        }
        assert set(services(swarm, "pr")) == {"pr_keep"}
        with swarm.docker("lab1") as api:
            assert [n["Name"] for n in api.networks(filters={"label": "com.docker.stack.namespace=pr"})] == [
                "pr_default"
            ]
            assert not api.secrets(filters={"label": "com.docker.stack.namespace=pr"})
            assert not api.configs(filters={"label": "com.docker.stack.namespace=pr"})
    finally:
        rm(swarm, "pr")


def test_a_job_converges_when_complete(swarm: Lab, tmp_path: Path) -> None:
    f = write(
        tmp_path,
        "job.yml",
        "services:\n  once:\n    image: ${PROBE_IMAGE}\n    command: [sh, -c, 'echo done']\n"
        "    deploy:\n      mode: replicated-job\n      replicas: 2\n",
    )
    try:
        run = deploy(swarm, "job", f)
        assert run.rc == 0, str(run)
        assert "job_once: 2/2 converged - job complete" in run.stderr
    finally:
        rm(swarm, "job")


def test_rm_of_an_unknown_stack(swarm: Lab) -> None:
    run = swarmctl("rm", "nothing-here", "-i", str(swarm.inventory))
    assert run.rc == 1 and "no stack 'nothing-here'" in run.stderr, str(run)
