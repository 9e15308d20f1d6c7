"""Time from "quorum lost" to "verify passes": `swarmctl recover` on a lab of 3 managers and a worker.

Each round: the Kafka stack runs on a healthy swarm; two managers' engines stop, their swarm state
is wiped and they start empty (managers lost for good); the clock starts when the survivor
reports that the swarm has no leader. Timed: `swarmctl recover --yes` (new cluster, rejoins,
services running again), then `swarmctl verify kafka --wait` until it passes. Between rounds
the swarm is healthy again (that is what recover made).

usage: python -m bench.recover [--repeat 3] [--smoke]      (root; builds its own lab)
       --smoke: one round with a small stack instead of Kafka, to check the benchmark itself works
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import docker

from swarmctl_lab import hosts as labhosts
from swarmctl_lab import images

LAB_DIR = Path(".swarmctl/bench-recover-lab")
SMALL = """
services:
  web:
    image: ${PROBE_IMAGE}
    command: [python3, -m, http.server, "8080"]
    deploy: {replicas: 3, endpoint_mode: dnsrr}
    networks: [net]
    x-swarmctl: {check: tcp, port: 8080}
networks:
  net: {}
"""


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv[2:])} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc


def no_quorum(spec: labhosts.LabSpec, host: labhosts.LabHost) -> bool:
    try:
        with docker.APIClient(base_url=f"unix://{spec.docker_socket(host)}", version="1.41") as api:
            api.nodes()
        return False
    except docker.errors.APIError:
        return True


def lose_quorum(spec: labhosts.LabSpec) -> float:
    """Two managers lost for good; returns when the survivor has no leader (monotonic time)."""
    for host in spec.hosts[1:3]:
        script = "systemctl stop docker && rm -rf /var/lib/docker/swarm && systemctl start docker"
        proc = labhosts.host_exec(spec, host.name, ["sh", "-c", script])
        if proc.returncode != 0:
            sys.exit(f"could not wipe {host.name}: {proc.stderr.decode()}")
    deadline = time.monotonic() + 120
    while not no_quorum(spec, spec.hosts[0]):
        if time.monotonic() > deadline:
            sys.exit("the survivor still has a leader 120 s after two managers were lost")
        time.sleep(0.2)
    return time.monotonic()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="one round, a small stack instead of Kafka")
    args = parser.parse_args()
    if args.smoke:
        args.repeat = 1
    swarmctl = [sys.executable, "-m", "swarmctl"]
    rows = []
    try:
        spec = labhosts.plan_lab(LAB_DIR, 3 if args.smoke else 4, 3)

        def load(s: labhosts.LabSpec) -> dict[str, str]:
            images.load_into_hosts(s, images.ensure_bundle())
            return images.lab_vars()

        inventory = labhosts.bring_up(spec, prepare=load)
        inv = ["-i", str(inventory)]
        run([*swarmctl, "bootstrap", str(inventory)])
        if args.smoke:
            stack_file = spec.dir / "small.yml"
            stack_file.write_text(SMALL)
            stack = ["small", "-f", str(stack_file)]
        else:
            stack = ["kafka"]
        run([*swarmctl, "deploy", *stack, *inv])
        for _ in range(args.repeat):
            lost = lose_quorum(spec)
            run([*swarmctl, "recover", "--yes", *inv])
            recovered = time.monotonic()
            run([*swarmctl, "verify", stack[0], *inv, "--wait", "600"])
            rows.append((recovered - lost, time.monotonic() - lost))
    finally:
        labhosts.teardown(LAB_DIR)
    what = "a small stack (smoke)" if args.smoke else "the Kafka stack"
    print(f"swarmctl recover after 2 of 3 managers were lost, {what}; seconds from 'no leader'")
    print(f"{'round':>5}  {'recovered':>9}  {'verify passes':>13}")
    for i, (rec, ver) in enumerate(rows, 1):
        print(f"{i:>5}  {rec:>9.1f}  {ver:>13.1f}")
    if len(rows) > 1:
        print(f"median  {statistics.median(r[0] for r in rows):>8.1f}  {statistics.median(r[1] for r in rows):>13.1f}")


if __name__ == "__main__":
    main()
