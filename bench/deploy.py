"""Deploy wall time to convergence: swarmctl vs `docker stack deploy --detach=false`, same lab, same stack.

A 6-service stack (12 tasks with healthchecks; --services N for another size) is deployed onto a
fresh 3-host lab by each tool in turn, removed in between. Also timed: a no-op redeploy of the unchanged stack by each.
`docker stack deploy --detach=false` needs a docker CLI >= 26; with an older one the baseline is
`docker stack deploy` followed by polling `docker service ls` until every replica runs (what a
script would do), and the table says so.

usage: python -m bench.deploy [--repeat 3] [--services 6] [--smoke]      (root; builds its own lab)
       --smoke: the smallest run (2 services, once), to check the benchmark itself works
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from swarmctl_lab import hosts as labhosts
from swarmctl_lab import images

LAB_DIR = Path(".swarmctl/bench-lab")
STACK = "bench"
SERVICE = """
  svc{i}:
    image: ${{PROBE_IMAGE}}
    command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]
    healthcheck: {{test: [CMD, "true"], interval: 1s, timeout: 1s}}
    deploy:
      replicas: 2
"""


def newer_cli() -> str | None:
    """A docker CLI on this machine whose `stack deploy` can wait (--detach=false, CLI 26+), if any."""
    for cli in ("/usr/local/bin/docker", shutil.which("docker"), "/usr/bin/docker"):
        if not cli or not os.path.isfile(cli):
            continue
        if "--detach" in subprocess.run([cli, "stack", "deploy", "--help"], capture_output=True, text=True).stdout:
            return cli
    return None


def timed(argv: list[str], host_side: bool = False) -> float:
    t0 = time.monotonic()
    proc = (
        labhosts.host_exec(labhosts.load_spec(LAB_DIR), "lab1", argv, env=images.lab_vars())
        if host_side
        else subprocess.run(argv, capture_output=True)
    )
    elapsed = time.monotonic() - t0
    if proc.returncode != 0:
        sys.exit(f"{argv} failed: {proc.stderr.decode() if isinstance(proc.stderr, bytes) else proc.stderr}")
    return elapsed


def wait_running(cli: str) -> None:
    while True:
        out = (
            labhosts.host_exec(
                labhosts.load_spec(LAB_DIR),
                "lab1",
                [
                    cli,
                    "service",
                    "ls",
                    "--filter",
                    f"label=com.docker.stack.namespace={STACK}",
                    "--format",
                    "{{.Replicas}}",
                ],
            )
            .stdout.decode()
            .split()
        )
        if out and all(r.split("/")[0] == r.split("/")[1].split(" ")[0] for r in out):
            return
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--services", type=int, default=6)
    parser.add_argument("--smoke", action="store_true", help="2 services, one repeat")
    args = parser.parse_args()
    if args.smoke:
        args.services, args.repeat = 2, 1
    spec = labhosts.plan_lab(LAB_DIR, 3, 1)

    def load(s: labhosts.LabSpec) -> dict[str, str]:
        images.load_into_hosts(s, images.ensure_bundle())
        return images.lab_vars()

    inventory = labhosts.bring_up(spec, prepare=load)
    stack_file = spec.dir / "bench-stack.yml"
    stack_file.write_text("services:" + "".join(SERVICE.format(i=i) for i in range(1, args.services + 1)))
    swarmctl = [sys.executable, "-m", "swarmctl"]
    cli = newer_cli()
    results: dict[str, list[float]] = {"swarmctl": [], "swarmctl no-op": [], "docker": [], "docker no-op": []}
    try:
        timed([*swarmctl, "bootstrap", str(inventory)])
        for _ in range(args.repeat):
            results["swarmctl"].append(timed([*swarmctl, "deploy", STACK, "-f", str(stack_file), "-i", str(inventory)]))
            results["swarmctl no-op"].append(
                timed([*swarmctl, "deploy", STACK, "-f", str(stack_file), "-i", str(inventory)])
            )
            timed([*swarmctl, "rm", STACK, "-i", str(inventory)])
            if cli:
                argv = [
                    cli,
                    "stack",
                    "deploy",
                    "--detach=false",
                    "--resolve-image",
                    "never",
                    "-c",
                    str(stack_file),
                    STACK,
                ]
                results["docker"].append(timed(argv, host_side=True))
                results["docker no-op"].append(timed(argv, host_side=True))
            else:
                argv = ["docker", "stack", "deploy", "--resolve-image", "never", "-c", str(stack_file), STACK]
                t0 = time.monotonic()
                timed(argv, host_side=True)
                wait_running("docker")
                results["docker"].append(time.monotonic() - t0)
                results["docker no-op"].append(timed(argv, host_side=True))
            timed([*swarmctl, "rm", STACK, "-i", str(inventory)])
    finally:
        labhosts.teardown(LAB_DIR)

    baseline = f"{cli} stack deploy --detach=false" if cli else "docker stack deploy + polling service ls"
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"{args.services} services x 2 replicas with healthchecks on a 3-host lab, median of {args.repeat} (seconds)")
    print(f"{'':28}{'deploy to convergence':>22}{'no-op redeploy':>16}")
    print(f"{'swarmctl deploy':28}{med['swarmctl']:>22.2f}{med['swarmctl no-op']:>16.2f}")
    print(f"{baseline[:27]:28}{med['docker']:>22.2f}{med['docker no-op']:>16.2f}")
    deploy_ratio = med["swarmctl"] / med["docker"]
    noop_ratio = med["swarmctl no-op"] / med["docker no-op"]
    print(f"ratio swarmctl/docker: deploy {deploy_ratio:.2f}, no-op {noop_ratio:.2f}")
    print(f"baseline: {baseline}")


if __name__ == "__main__":
    main()
