"""maintain of one worker: wall time from start to the host active again, beside the lab's floor.

On a lab of N hosts (one manager): bootstrap, then `web`, N replicas with a healthcheck (interval
2 s, its first check after start-up). Measured, each the median of --repeat runs:
- `swarmctl maintain WORKER -- true` (a worker carrying one `web` task; each run another worker,
  one task on every node again before it): the real command line, from
  start to exit (the host active again, every service running all its tasks);
- the floor, what swarm itself needs for the same moves: one extra replica started and reported
  running (healthy), then the drained task's slot started again elsewhere - two task starts in a
  row, measured through the engine API of the manager (scale up, poll; drain, poll; scale back,
  activate), with no check of anything else.
The difference is swarmctl's own cost: reads, waits' polling, Python start-up.

usage: python -m bench.maintain [--sizes 4 6] [--repeat 3] [--smoke]      (root; builds its own lab)
       --smoke: the smallest run (4 hosts, once), to check the benchmark itself works
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker

from swarmctl_lab import hosts as labhosts
from swarmctl_lab import images

LAB_DIR = Path(".swarmctl/bench-maintain-lab")
STACK = """services:
  web:
    image: swarmctl-lab/probe:py3
    command: [python3, -m, http.server, "8080"]
    healthcheck:
      test: [CMD, python3, -c, "import socket; socket.create_connection(('127.0.0.1', 8080), 2)"]
      interval: 2s
      timeout: 3s
      retries: 3
      start_period: 10s
    deploy:
      replicas: {replicas}
"""
SERVICE = "bench_web"


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        sys.exit(f"{shlex.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def timed(argv: list[str]) -> float:
    t0 = time.monotonic()
    run(argv)
    return time.monotonic() - t0


def running(api: docker.APIClient, avoid: str = "") -> int:
    tasks = api.tasks(filters={"service": SERVICE, "desired-state": "running"})
    return sum(1 for t in tasks if t["Status"]["State"] == "running" and t.get("NodeID") != avoid)


def wait_running(api: docker.APIClient, count: int, avoid: str = "", timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while running(api, avoid) < count:
        if time.monotonic() > deadline:
            sys.exit(f"{SERVICE}: fewer than {count} tasks running after {timeout:g}s")
        time.sleep(0.1)


def write_spec(api: docker.APIClient, change: Callable[[dict[str, Any]], None]) -> None:
    """The service's own spec as the engine returns it, changed in place, written back (no field
    the SDK's helpers would leave out or rewrite: only the change itself reaches the tasks)."""
    svc = api.inspect_service(SERVICE)
    spec = svc["Spec"]
    change(spec)
    url = f"{api.base_url}/v1.41/services/{svc['ID']}/update"
    api.post(url, json=spec, params={"version": svc["Version"]["Index"]}).raise_for_status()


def scale(api: docker.APIClient, replicas: int) -> None:
    write_spec(api, lambda spec: spec["Mode"]["Replicated"].update(Replicas=replicas))


def rebalance(api: docker.APIClient, nodes: int) -> None:
    """A task on every node again (maintenance moved the maintained node's away): a forced update."""

    def force(spec: dict[str, Any]) -> None:
        spec["TaskTemplate"]["ForceUpdate"] = int(spec["TaskTemplate"].get("ForceUpdate", 0)) + 1

    write_spec(api, force)
    deadline = time.monotonic() + 300
    while True:
        tasks = api.tasks(filters={"service": SERVICE, "desired-state": "running"})
        on = {t["NodeID"] for t in tasks if t["Status"]["State"] == "running"}
        if (
            len(on) == nodes
            and running(api) == nodes
            and api.inspect_service(SERVICE).get("UpdateStatus", {}).get("State") in (None, "completed")
        ):
            return
        if time.monotonic() > deadline:
            sys.exit(f"{SERVICE}: not back to one task per node after 300s")
        time.sleep(0.5)


def set_availability(api: docker.APIClient, node_id: str, availability: str) -> None:
    node = api.inspect_node(node_id)
    spec = node["Spec"]
    spec["Availability"] = availability
    api.update_node(node_id, node["Version"]["Index"], spec)


def floor(api: docker.APIClient, node_id: str, replicas: int) -> float:
    """Swarm's own time for maintain's moves: an extra replica up, the drained slot up elsewhere."""
    t0 = time.monotonic()
    set_availability(api, node_id, "pause")
    scale(api, replicas + 1)
    wait_running(api, replicas, avoid=node_id)
    set_availability(api, node_id, "drain")
    wait_running(api, replicas + 1, avoid=node_id)
    took = time.monotonic() - t0
    scale(api, replicas)
    set_availability(api, node_id, "active")
    wait_running(api, replicas)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 6])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="4 hosts, one repeat")
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.repeat = [4], 1
    swarmctl = [sys.executable, "-m", "swarmctl"]
    rows = []
    try:
        for n in args.sizes:
            spec = labhosts.plan_lab(LAB_DIR, n, 1)

            def load(s: labhosts.LabSpec) -> dict[str, str]:
                images.load_into_hosts(s, images.ensure_bundle())
                return images.lab_vars()

            inventory = labhosts.bring_up(spec, prepare=load)
            inv = ["--inventory", str(inventory)]
            run([*swarmctl, "bootstrap", str(inventory)])
            with tempfile.TemporaryDirectory() as tmp:
                stack = Path(tmp) / "web.yml"
                stack.write_text(STACK.format(replicas=n))
                run([*swarmctl, "deploy", "bench", "-f", str(stack), "--no-verify", *inv])
            api = docker.APIClient(base_url=f"unix://{spec.docker_socket(spec.hosts[0])}", version="1.41")
            ids = {x["Description"]["Hostname"]: x["ID"] for x in api.nodes()}
            wait_running(api, n)
            workers = [h.name for h in spec.hosts[1:]]
            took, floors = [], []
            for i in range(args.repeat):
                host = workers[i % len(workers)]
                rebalance(api, n)  # one web task on every node, the maintained one included
                took.append(timed([*swarmctl, "maintain", host, *inv, "--", "true"]))
                rebalance(api, n)
                floors.append(floor(api, ids[host], n))
            api.close()
            rows.append((n, statistics.median(took), statistics.median(floors)))
            labhosts.teardown(LAB_DIR)
    finally:
        labhosts.teardown(LAB_DIR)

    print(f"maintain of one worker (`-- true`), wall time, median of {args.repeat} (seconds)")
    print(f"{'hosts':>5}  {'swarmctl maintain':>17}  {'floor (swarm alone)':>19}  {'overhead':>8}")
    for n, took_s, floor_s in rows:
        print(f"{n:>5}  {took_s:>17.1f}  {floor_s:>19.1f}  {took_s - floor_s:>8.1f}")


if __name__ == "__main__":
    main()
