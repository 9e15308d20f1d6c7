"""`swarmctl update`: rolling the Kafka stack's services one at a time, with a real ZooKeeper client
writing through the ensemble the whole time."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from bench.zkload import ZkLoad, srvr
from swarmctl.spec import parse_time
from tests.e2e.conftest import Lab
from tests.helpers import Run, swarmctl, wait_for

ROOT = Path(__file__).resolve().parents[2]
FILES = ["-f", str(ROOT / "stacks/kafka/stack.yml"), "-f", str(ROOT / "tests/stacks/kafka-fast.yml"),
         "-f", str(ROOT / "tests/stacks/kafka-zk-ports.yml")]  # fmt: skip
RETAG = "swarmctl-lab/zookeeper:3.8-retag"


@pytest.fixture(scope="module")
def kafka(swarm: Lab) -> Iterator[Lab]:
    for name in swarm.names:
        with swarm.docker(name) as api:
            api.tag("swarmctl-lab/zookeeper:3.8", "swarmctl-lab/zookeeper", "3.8-retag")
    run = swarmctl("deploy", "kafka", *FILES, "-i", str(swarm.inventory), timeout=900)
    assert run.rc == 0, str(run)
    yield swarm
    swarmctl("rm", "kafka", "-i", str(swarm.inventory))


def update(lab: Lab, *args: str) -> Run:
    return swarmctl("update", "kafka", *args, "-i", str(lab.inventory), "--json", timeout=900)


def services(lab: Lab) -> dict[str, dict[str, Any]]:
    with lab.docker("lab1") as api:
        found = api.services(filters={"label": "com.docker.stack.namespace=kafka"})
        return {s["Spec"]["Name"].removeprefix("kafka_"): s for s in found}


def running_tasks(lab: Lab, short: str) -> set[str]:
    with lab.docker("lab1") as api:
        return {t["ID"] for t in api.tasks(filters={"service": f"kafka_{short}", "desired-state": "running"})}


def zk_members(lab: Lab) -> list[str]:
    return [lab.host(f"lab{i}").address for i in (1, 2, 3)]


def elections(lab: Lab) -> str:
    """What each ZooKeeper container (the replaced ones too) logged of its elections: for a failure's
    message."""
    try:
        return "\n".join(_elections(lab))
    except Exception as e:  # the report above is what matters; this only adds to it
        return f"(the members' logs could not be read: {e})"


def _elections(lab: Lab) -> list[str]:
    lines = []
    for name in lab.names:
        with lab.docker(name) as api:
            for c in api.containers(all=True, filters={"label": "com.docker.stack.namespace=kafka"}):
                if "zookeeper" in c["Names"][0]:
                    log = api.logs(c["Id"]).decode(errors="replace").splitlines()
                    lines += [f"{name} {c['Names'][0]}: {x}" for x in log if "ELECTION TOOK" in x or "time out" in x]
    return lines


def test_rolling_zookeeper_keeps_quorum_and_every_acknowledged_write(kafka: Lab) -> None:
    members = zk_members(kafka)
    modes = wait_for("a ZooKeeper leader", lambda: [srvr(m) for m in members], lambda ms: "leader" in ms, timeout=60)
    leader_before = f"zookeeper-{modes.index('leader') + 1}"
    images = [f"--image=zookeeper-{i}={RETAG}" for i in (1, 2, 3)]
    with ZkLoad(members) as load:
        run = update(kafka, *images)
    assert run.rc == 0, str(run)
    results = run.json()["services"]
    assert [r["result"] for r in results] == ["updated"] * 3
    assert results[-1]["name"] == leader_before  # the leader goes last
    assert all(r["to"] == RETAG for r in results)
    assert {s["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] for n, s in services(kafka).items()
            if n.startswith("zookeeper")} == {RETAG}  # fmt: skip

    report = load.report()
    assert report.acked > 100 and report.samples > 50
    assert report.missing == [], f"acknowledged writes lost: {report.missing[:5]}"
    assert report.quorum_lost == [], f"two members down at once: {report.quorum_lost[:3]}"
    # writes may fail while the one leader election runs; never for long
    assert report.longest_failure < 15, f"{report}\n{elections(kafka)}"
    assert report.failed < report.acked / 4, report


def test_a_broken_update_rolls_back_and_leaves_the_rest(kafka: Lab) -> None:
    before = services(kafka)
    run = update(kafka, "--image=zookeeper-1=swarmctl-lab/probe:py3", f"--image=zookeeper-3={RETAG}x")
    assert run.rc == 1, str(run)
    data = run.json()
    first = data["services"][0]
    assert first["result"] == "rolled back" and "rolled back" in first["detail"]
    assert [r["result"] for r in data["services"][1:]] == ["not started"]
    assert "left as they were: zookeeper-3" in data["error"]
    after = services(kafka)
    broken = after[first["name"]]["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
    assert broken == before[first["name"]]["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
    for name, svc in after.items():
        if name != first["name"]:
            assert svc["Version"]["Index"] == before[name]["Version"]["Index"], name
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("error: update of ") and "rolled back" in last


def test_updating_one_broker_leaves_the_others_untouched(kafka: Lab) -> None:
    before = services(kafka)
    tasks = {n: running_tasks(kafka, n) for n in ("kafka-1", "kafka-3")}
    run = update(kafka, "--env", "kafka-2:SWARMCTL_TEST=1")
    assert run.rc == 0, str(run)
    assert [r["name"] for r in run.json()["services"]] == ["kafka-2"]
    after = services(kafka)
    assert "SWARMCTL_TEST=1" in after["kafka-2"]["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"]
    for name in before:
        if name != "kafka-2":
            assert after[name]["Version"]["Index"] == before[name]["Version"]["Index"], name
    assert {n: running_tasks(kafka, n) for n in ("kafka-1", "kafka-3")} == tasks


def _restart_window(lab: Lab, short: str) -> tuple[float, float]:
    """(when the replacement task was created, when it started running) for the latest restart."""
    with lab.docker("lab1") as api:
        tasks = api.tasks(filters={"service": f"kafka_{short}"})
    new = max((t for t in tasks if t["DesiredState"] == "running"), key=lambda t: parse_time(t["CreatedAt"]))
    return parse_time(new["CreatedAt"]), parse_time(new["Status"]["Timestamp"])


def test_force_restarts_one_at_a_time(kafka: Lab) -> None:
    before = {n: running_tasks(kafka, n) for n in ("kafka-1", "kafka-2", "kafka-3")}
    run = update(kafka, "kafka-1", "kafka-2", "kafka-3", "--force")
    assert run.rc == 0, str(run)
    order = [r["name"] for r in run.json()["services"]]
    assert sorted(order) == ["kafka-1", "kafka-2", "kafka-3"]
    after = {n: running_tasks(kafka, n) for n in order}
    assert all(after[n] and not after[n] & before[n] for n in order)  # each one restarted
    windows = [_restart_window(kafka, n) for n in order]
    for (_, running), (next_created, _) in pairwise(windows):
        # the next broker's replacement was only created after the previous one ran again
        assert next_created > running


def test_deploy_rolls_changed_services_through_the_same_engine(kafka: Lab, tmp_path: Path) -> None:
    extra = tmp_path / "env.yml"
    extra.write_text("services:\n" + "".join(f"  kafka-{i}:\n    environment: {{DEPLOYED: '2'}}\n" for i in (1, 2, 3)))
    run = swarmctl("deploy", "kafka", *FILES, "-f", str(extra), "-i", str(kafka.inventory), "--json", timeout=900)
    assert run.rc == 0, str(run)
    data = run.json()
    names = [r["name"] for r in data["rollout"]]
    # the brokers get the new variable; members that `update` moved to another image go back to the
    # file's image (the stack file is the declared state); ZooKeeper rolls first (rollout order 1 < 2)
    assert {"kafka-1", "kafka-2", "kafka-3"} <= set(names)
    assert names == sorted(names, key=lambda n: not n.startswith("zookeeper"))
    assert all(r["result"] == "updated" for r in data["rollout"])
    assert data["verify"]["ok"] is True
    windows = [_restart_window(kafka, r["name"]) for r in data["rollout"]]
    for (_, running), (next_created, _) in pairwise(windows):
        assert next_created > running


THREE = """
services:
  a: &svc
    image: ${PROBE_IMAGE}
    command: [python3, -c, "import signal, time; signal.signal(signal.SIGTERM, lambda *a: exit(0)); time.sleep(1e9)"]
    deploy:
      update_config: {parallelism: 1, monitor: 20s, order: stop-first}
  b: *svc
  c: *svc
"""


def test_ctrl_c_rolls_back_the_service_being_updated_and_reports(swarm: Lab, tmp_path: Path) -> None:
    """SIGINT while the second of three services updates: it is rolled back, the third is not
    touched, the report says so, and the command exits 130 within 2 s of the rollback finishing."""
    stack = tmp_path / "three.yml"
    stack.write_text(THREE)
    inv = str(swarm.inventory)
    assert swarmctl("deploy", "three", "-f", str(stack), "-i", inv, "--no-verify").rc == 0
    try:
        with swarm.docker("lab1") as api:
            before = {n: api.inspect_service(f"three_{n}") for n in "abc"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "swarmctl", "update", "three", "--force", "-i", inv, "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        # wait (on what the swarm shows) until b's update is under way, then interrupt
        wait_for("b to be updating", lambda: update_state(swarm, "three_b"), lambda s: s == "updating", timeout=120)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=180)
        exited = time.time()
        assert proc.returncode == 130, out + err
        report = {r["name"]: r for r in json.loads(out)["services"]}
        assert {n: r["result"] for n, r in report.items()} == {"a": "updated", "b": "rolled back", "c": "not started"}
        assert "interrupted" in report["b"]["detail"]
        with swarm.docker("lab1") as api:
            b = api.inspect_service("three_b")
            c = api.inspect_service("three_c")
        assert b["UpdateStatus"]["State"] == "rollback_completed"
        finished = parse_time(b["UpdateStatus"]["CompletedAt"])
        assert exited - finished < 2.0 + 0.5, f"exited {exited - finished:.1f}s after the rollback finished"
        # b runs its previous spec again; c was never written
        spec = b["Spec"]["TaskTemplate"]
        assert spec["ForceUpdate"] == before["b"]["Spec"]["TaskTemplate"]["ForceUpdate"]
        assert c["Version"]["Index"] == before["c"]["Version"]["Index"]
        assert "Traceback" not in err
    finally:
        swarmctl("rm", "three", "-i", inv)


def update_state(lab: Lab, service: str) -> str:
    with lab.docker("lab1") as api:
        return str((api.inspect_service(service).get("UpdateStatus") or {}).get("State", ""))
