"""Record Docker API responses from a real lab swarm, as fixtures for the unit tier.

    python -m tests.recorded.record      (root; builds and removes its own lab; about 3 minutes)

Writes ``tests/recorded/*.json``:

* ``parity-<case>.json``: each parity stack deployed by swarmctl, read back with swarmctl's own
  reader (``facts.stack.read_objects``): what a redeploy compares its converted specs with.
* ``convergence.json``: services caught in a known state - running and stable, starting (health
  check pending), running but inside its monitor window, failing (tasks exit 3), an update paused
  by swarm, an update swarm rolled back, a completed job - each with its tasks, the engine's time
  and when the update was written.
* ``rollout.json``: a replicated service before an update, after it converged, and after a
  failed update that swarm rolled back (with the write time read back right after the write).
* ``global.json``: global services as swarm lists them: one constrained to a label no node has
  (no task, ``DesiredTasks`` 0: also what a new global service shows before swarm made its tasks)
  and one running on every node, with the swarm's nodes (``--global INVENTORY``: from a lab's swarm).
* ``nodes.json``: the nodes of a 3-manager, 1-worker swarm with labels.
* ``placement.json`` (``--placement INVENTORY``, from a lab that runs the Kafka stack): its nodes,
  services and tasks, and which task each host's own engine runs - what ``ps`` must show.

The unit tests replay them through a fake engine (``tests/unit/fakeengine.py``); the same
behaviour is proven end to end on the lab by the e2e tier. Re-record after a Docker upgrade.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from swarmctl.compose.convert import convert_stack
from swarmctl.compose.loader import load_stack
from swarmctl.facts.membership import find_manager
from swarmctl.facts.stack import read_objects
from swarmctl.inventory import load_inventory
from swarmctl.ops.deploy import wanted
from swarmctl.transport.engine import Engine, Session
from swarmctl_lab import hosts as labhosts
from swarmctl_lab import images

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PARITY = ROOT / "tests" / "stacks" / "parity"
CASES = {
    "container": ["container.yml"],
    "deploy": ["deploy.yml"],
    "network": ["network.yml"],
    "storage": ["storage.yml"],
    "override": ["override-base.yml", "override.yml"],
    "jobs": ["jobs.yml"],
}
LAB_DIR = Path(".swarmctl/record-lab")
SLEEP = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]


def swarmctl(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "swarmctl", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"swarmctl {' '.join(args)} failed: {proc.stderr[-2000:]}")


def until(what: str, probe: Callable[[], Any], timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.5)


def save(name: str, data: Any) -> None:
    # bind-mount sources are paths of this checkout: kept as <ROOT>, put back by whoever reads them
    text = json.dumps(data, indent=1, sort_keys=True).replace(str(ROOT), "<ROOT>")
    (HERE / f"{name}.json").write_text(text + "\n")
    print(f"wrote tests/recorded/{name}.json")


def record_parity(inventory: Path) -> None:
    inv = load_inventory(inventory)
    env = {**images.lab_vars()}
    with Session(inv) as session:
        engine = find_manager(session)
        # the externals the parity stacks name (as tests/e2e/test_stack_parity.py makes them)
        engine.create_network({"Name": "parity-external", "Driver": "overlay", "Attachable": True})
        engine.create_object("secret", {"Name": "parity-external-secret", "Data": "ZXh0ZXJuYWw="})
        for case, files in CASES.items():
            paths = [PARITY / f for f in files]
            args = ["deploy", "parity", "--no-wait", "-i", str(inventory)]
            for p in paths:
                args += ["-f", str(p)]
            swarmctl(*args)
            desired = convert_stack(load_stack("parity", paths, env, inv.vars))
            current = read_objects(engine, "parity", wanted(desired))
            save(
                f"parity-{case}",
                {
                    "files": [str(p.relative_to(ROOT)) for p in paths],
                    "networks": current.networks,
                    "secrets": current.secrets,
                    "configs": current.configs,
                    "services": current.services,
                    "network_names": current.network_names,
                },
            )
            swarmctl("rm", "parity", "-i", str(inventory))


def snapshot(engine: Engine, sid: str) -> dict[str, Any]:
    svc = next(s for s in engine.services(status=True) if s["ID"] == sid)
    return {"service": svc, "tasks": engine.tasks(filters={"service": [sid]}), "now": engine.info()["SystemTime"]}


def create(engine: Engine, name: str, image: str, command: list[str], **spec: Any) -> str:
    task = {"ContainerSpec": {"Image": image, "Command": command, **spec.pop("container", {})}}
    if "TaskTemplate_Placement" in spec:
        task["Placement"] = spec.pop("TaskTemplate_Placement")
    if "restart" in spec:
        task["RestartPolicy"] = spec.pop("restart")
    return str(engine.create_service({"Name": name, "TaskTemplate": task, **spec})["ID"])


def tasks_in(engine: Engine, sid: str, state: str, n: int) -> bool:
    return sum(1 for t in engine.tasks(filters={"service": [sid]}) if t["Status"]["State"] == state) >= n


def update_state(engine: Engine, sid: str) -> str:
    return str((engine.inspect_service(sid).get("UpdateStatus") or {}).get("State", ""))


def write(engine: Engine, sid: str, command: list[str]) -> str:
    """Change the service's command (and force an update); returns UpdatedAt read right after."""
    svc = engine.inspect_service(sid)
    spec = svc["Spec"]
    spec["TaskTemplate"]["ContainerSpec"]["Command"] = command
    spec["TaskTemplate"]["ForceUpdate"] = int(spec["TaskTemplate"].get("ForceUpdate", 0)) + 1
    engine.update_service(sid, svc["Version"]["Index"], spec)
    return str(engine.inspect_service(sid)["UpdatedAt"])


def record_convergence(engine: Engine, probe: str) -> None:
    out: dict[str, Any] = {}
    since = engine.info()["SystemTime"]
    watch = {"Parallelism": 1, "Monitor": 2 * 10**9}
    running = create(engine, "rec-running", probe, SLEEP, Mode={"Replicated": {"Replicas": 2}}, UpdateConfig=watch)
    health = {"Test": ["CMD", "true"], "Interval": 60 * 10**9, "StartPeriod": 60 * 10**9}
    starting = create(engine, "rec-starting", probe, SLEEP, container={"Healthcheck": health})
    # restarted after 2 s: the recording is taken between attempts, none of them running
    retry = {"Condition": "any", "Delay": 2 * 10**9}
    failing = create(engine, "rec-failing", probe, ["sh", "-c", "exit 3"], restart=retry)
    job = create(
        engine, "rec-job", probe, ["true"], Mode={"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 2}}
    )

    until("running tasks", lambda: tasks_in(engine, running, "running", 2))
    time.sleep(3)  # past the 2 s monitor window: what "stable" means to the recording, not a test wait
    out["running"] = {**snapshot(engine, running), "since": since, "written_at": None, "expect": "converged"}
    until("a starting task", lambda: tasks_in(engine, starting, "starting", 1))
    out["starting"] = {**snapshot(engine, starting), "since": since, "written_at": None, "expect": "pending"}
    settling = create(engine, "rec-settling", probe, SLEEP, UpdateConfig={"Parallelism": 1, "Monitor": 60 * 10**9})
    until("a running task", lambda: tasks_in(engine, settling, "running", 1))
    out["settling"] = {**snapshot(engine, settling), "since": since, "written_at": 0.0, "expect": "updating"}
    until("3 failed tasks, none running", lambda: tasks_in(engine, failing, "failed", 3)
          and not tasks_in(engine, failing, "running", 1), timeout=180)  # fmt: skip
    out["failing"] = {**snapshot(engine, failing), "since": since, "written_at": None, "expect": "failed"}
    until("a complete job", lambda: tasks_in(engine, job, "complete", 2))
    out["job"] = {**snapshot(engine, job), "since": since, "written_at": 0.0, "expect": "converged"}

    for action, final, key, expect in (("pause", "paused", "paused", "failed"),
                                       ("rollback", "rollback_completed", "rolled-back", "rolled back")):  # fmt: skip
        sid = create(engine, f"rec-{action}", probe, SLEEP,
                     UpdateConfig={"Parallelism": 1, "FailureAction": action, "Monitor": 2 * 10**9},
                     RollbackConfig={"Parallelism": 1, "Monitor": 10**9})  # fmt: skip
        until(f"rec-{action} running", functools.partial(tasks_in, engine, sid, "running", 1))
        written = write(engine, sid, ["sh", "-c", "exit 4"])
        until(f"update {final}", functools.partial(lambda s, f: update_state(engine, s) == f, sid, final))
        out[key] = {**snapshot(engine, sid), "since": since, "written_at": written, "expect": expect}
    save("convergence", out)
    for s in engine.services():
        if s["Spec"]["Name"].startswith("rec-"):
            engine.remove_service(s["ID"])


def record_rollout(engine: Engine, probe: str) -> None:
    sid = create(engine, "rec-roll", probe, SLEEP,
                 Labels={"io.swarmctl.check": "tcp", "io.swarmctl.port": "80"},
                 UpdateConfig={"Parallelism": 1, "FailureAction": "rollback", "Monitor": 2 * 10**9,
                               "Order": "stop-first"},
                 RollbackConfig={"Parallelism": 1, "Monitor": 10**9})  # fmt: skip
    until("rec-roll running", lambda: tasks_in(engine, sid, "running", 1))
    time.sleep(3)
    before = snapshot(engine, sid)
    good = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 2; done"]
    written = write(engine, sid, good)
    until("the update to complete", lambda: update_state(engine, sid) == "completed")
    until("the new task running", lambda: tasks_in(engine, sid, "running", 1))
    time.sleep(3)
    updated = {**snapshot(engine, sid), "written_at": written, "command": good}
    bad = ["sh", "-c", "exit 5"]
    written = write(engine, sid, bad)
    until("the rollback to complete", lambda: update_state(engine, sid) == "rollback_completed")
    time.sleep(2)
    rolled = {**snapshot(engine, sid), "written_at": written, "command": bad}
    save("rollout", {"before": before, "updated": updated, "rolled_back": rolled})
    engine.remove_service(sid)


def record_global(engine: Engine, probe: str) -> None:
    since = engine.info()["SystemTime"]
    glob: dict[str, Any] = {"Global": {}}
    nowhere = create(engine, "rec-nowhere", probe, SLEEP, Mode=glob,
                     TaskTemplate_Placement={"Constraints": ["node.labels.rec-none==1"]})  # fmt: skip
    everywhere = create(engine, "rec-everywhere", probe, SLEEP, Mode=glob, UpdateConfig={"Monitor": 10**9})
    nodes = engine.nodes()
    until("a task on every node", lambda: tasks_in(engine, everywhere, "running", len(nodes)))
    time.sleep(2)  # past the 1 s monitor window: what "stable" means to the recording, not a test wait
    out = {"nodes": nodes, "since": since,
           "everywhere": snapshot(engine, everywhere), "nowhere": snapshot(engine, nowhere)}  # fmt: skip
    save("global", out)
    for sid in (nowhere, everywhere):
        engine.remove_service(sid)


def record_placement(inventory: Path, stack: str = "kafka") -> None:
    """A deployed stack's nodes, services and tasks as a manager lists them, and - from each host's
    own engine - which task runs where: what ``ps`` must show (``placement.json``)."""
    with Session(load_inventory(inventory)) as session:
        engine = find_manager(session)
        services = [s for s in engine.services(status=True)
                    if (s["Spec"].get("Labels") or {}).get("com.docker.stack.namespace") == stack]  # fmt: skip
        tasks = engine.tasks({"service": [s["ID"] for s in services]})
        names = {s["ID"]: s["Spec"]["Name"].removeprefix(f"{stack}_") for s in services}
        slots = {t["ID"]: f"{names[t['ServiceID']]}.{t['Slot']}" for t in tasks}
        expect = []
        for host in session.inventory.hosts:
            for c in session.engine(host).containers("com.docker.swarm.task.id"):
                task_id = (c.get("Labels") or {}).get("com.docker.swarm.task.id", "")
                if task_id in slots and c.get("State") == "running":
                    expect.append([slots[task_id], host.name])
        save("placement", {"nodes": engine.nodes(), "services": services, "tasks": tasks, "expect": sorted(expect)})


def main() -> None:
    if sys.argv[1:2] == ["--placement"]:
        # python -m tests.recorded.record --placement INVENTORY: from a lab where the Kafka stack runs
        record_placement(Path(sys.argv[2]))
        return
    if sys.argv[1:2] == ["--global"]:
        # python -m tests.recorded.record --global INVENTORY: from a lab's swarm
        with Session(load_inventory(Path(sys.argv[2]))) as session:
            record_global(find_manager(session), images.lab_vars()["PROBE_IMAGE"])
        return
    spec = labhosts.plan_lab(LAB_DIR, 4, 3)

    def load(s: labhosts.LabSpec) -> dict[str, str]:
        images.load_into_hosts(s, images.ensure_bundle())
        return images.lab_vars()

    try:
        inventory = labhosts.bring_up(spec, prepare=load)
        swarmctl("bootstrap", str(inventory))
        with Session(load_inventory(inventory)) as session:
            engine = find_manager(session)
            save("nodes", engine.nodes())
            probe = images.lab_vars()["PROBE_IMAGE"]
            record_convergence(engine, probe)
            record_rollout(engine, probe)
            record_global(engine, probe)
        record_parity(inventory)
    finally:
        labhosts.teardown(LAB_DIR)


if __name__ == "__main__":
    main()
