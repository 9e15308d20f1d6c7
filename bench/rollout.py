"""Rolling the 3 ZooKeeper members of the shipped Kafka stack, under a client write load.

Prints the total wall time of `swarmctl update` against what the stack's own settings make
unavoidable: for each member, its update_config delay and monitor window plus the time its new
task took to start (created -> running, healthcheck included). The ratio is swarmctl's overhead
(gates, probes, API round trips). Also: writes acknowledged, failed, the longest failure run, and
whether an acknowledged write was lost or two members were ever down at once.

usage: python -m bench.rollout [--members 3] [--smoke]   (root; builds its own 3-host lab; a few minutes)
       --smoke: one member with the test suite's short update windows (tests/stacks/kafka-fast.yml),
                to check the benchmark itself works; its ratio says nothing about the shipped settings
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import docker

from bench.zkload import ZkLoad
from swarmctl.spec import parse_time
from swarmctl_lab import hosts as labhosts
from swarmctl_lab import images

LAB_DIR = Path(".swarmctl/bench-lab")
ROOT = Path(__file__).resolve().parents[1]
RETAG = "swarmctl-lab/zookeeper:3.8-retag"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, choices=(1, 2, 3), default=3, help="ZooKeeper members to roll")
    parser.add_argument("--smoke", action="store_true", help="one member, short update windows")
    args = parser.parse_args()
    if args.smoke:
        args.members = 1
    spec = labhosts.plan_lab(LAB_DIR, 3, 1)

    def load(s: labhosts.LabSpec) -> dict[str, str]:
        images.load_into_hosts(s, images.ensure_bundle())
        return images.lab_vars()

    swarmctl = [sys.executable, "-m", "swarmctl"]
    try:
        inventory = labhosts.bring_up(spec, prepare=load)
        for h in spec.hosts:
            with docker.APIClient(base_url=f"unix://{spec.docker_socket(h)}", version="1.41") as api:
                api.tag("swarmctl-lab/zookeeper:3.8", "swarmctl-lab/zookeeper", "3.8-retag")
        subprocess.run([*swarmctl, "bootstrap", str(inventory)], check=True, capture_output=True)
        files = ["-f", str(ROOT / "stacks/kafka/stack.yml"), "-f", str(ROOT / "tests/stacks/kafka-zk-ports.yml")]
        if args.smoke:
            files += ["-f", str(ROOT / "tests/stacks/kafka-fast.yml")]
        subprocess.run([*swarmctl, "deploy", "kafka", *files, "-i", str(inventory), "--no-verify"], check=True,
                       capture_output=True)  # fmt: skip
        # converged tasks are not yet an ensemble: start from a healthy one, as an operator would
        subprocess.run([*swarmctl, "verify", "kafka", "--wait", "120", "-i", str(inventory)], check=True,
                       capture_output=True)  # fmt: skip
        members = [h.address for h in spec.hosts]
        argv = [*swarmctl, "update", "kafka", *(f"--image=zookeeper-{i}={RETAG}" for i in range(1, args.members + 1)),
                "-i", str(inventory), "--json"]  # fmt: skip
        with ZkLoad(members) as zk:
            t0 = time.monotonic()
            proc = subprocess.run(argv, capture_output=True, text=True)
            total = time.monotonic() - t0
        if proc.returncode != 0:
            sys.exit(f"update failed: {proc.stderr[-2000:]}")
        results = json.loads(proc.stdout)["services"]
        report = zk.report()
        floor = 0.0
        rows = []
        with docker.APIClient(base_url=f"unix://{spec.docker_socket(spec.hosts[0])}", version="1.41") as api:
            for r in results:
                svc = api.inspect_service(f"kafka_{r['name']}")
                cfg = svc["Spec"].get("UpdateConfig") or {}
                configured = (cfg.get("Delay", 0) + cfg.get("Monitor", 0)) / 1e9
                tasks = api.tasks(filters={"service": svc["ID"], "desired-state": "running"})
                new = max(tasks, key=lambda t: parse_time(t["CreatedAt"]))
                start = parse_time(new["Status"]["Timestamp"]) - parse_time(new["CreatedAt"])
                floor += configured + start
                rows.append((r["name"], r["seconds"], configured, start))
    finally:
        labhosts.teardown(LAB_DIR)

    windows = (
        "test update_config: delay 1s, monitor 4s" if args.smoke else "shipped update_config: delay 10s, monitor 30s"
    )
    print(f"rolling {args.members} ZooKeeper member(s) ({windows}), leader last")
    print(f"{'member':<13}{'seconds':>9}{'delay+monitor':>15}{'task start':>12}")
    for name, seconds, configured, start in rows:
        print(f"{name:<13}{seconds:>9.1f}{configured:>15.1f}{start:>12.1f}")
    print(
        f"total {total:.1f}s; floor (delays + monitors + task starts) {floor:.1f}s; overhead ratio {total / floor:.2f}"
    )
    print(f"writes every 200 ms: {report.acked} acknowledged, {report.failed} failed, longest failure run "
          f"{report.longest_failure:.1f}s, {len(report.missing)} acknowledged writes missing, "
          f"{len(report.quorum_lost)} samples of {report.samples} with quorum lost, "
          f"{report.leaderless:.1f}s sampled without a leader")  # fmt: skip
    print(f"longest window without a leader {report.longest_leaderless:.1f}s; windows: "
          + (", ".join(f"{w:.1f}s at +{t - t0:.0f}s" for t, w in report.windows) or "none"))  # fmt: skip


if __name__ == "__main__":
    main()
