"""Bootstrap wall time on labs of 3 and 6 hosts: swarmctl vs a sequential shell script.

The script baseline does what a hand-written script does: `ssh host docker swarm ...` one host
after the other (init, read the token, join each worker, label each node), with OpenSSH, the
same key and the same known_hosts. Both start from hosts that are in no swarm.

usage: python -m bench.bootstrap [--sizes 3 6] [--repeat 3] [--smoke]      (root; builds its own lab)
       --smoke: the smallest run (3 hosts, once), to check the benchmark itself works
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import docker

from swarmctl_lab import hosts as labhosts

LAB_DIR = Path(".swarmctl/bench-lab")


def reset(spec: labhosts.LabSpec) -> None:
    """Every host leaves its swarm (workers first, in parallel), like fresh machines."""
    from concurrent.futures import ThreadPoolExecutor

    def state(h: labhosts.LabHost) -> tuple[str, bool]:
        with docker.APIClient(base_url=f"unix://{spec.docker_socket(h)}", version="1.41") as api:
            s = api.info()["Swarm"]
            return s["LocalNodeState"], bool(s.get("ControlAvailable"))

    def leave(h: labhosts.LabHost) -> None:
        with docker.APIClient(base_url=f"unix://{spec.docker_socket(h)}", version="1.41") as api:
            api.leave_swarm(force=True)

    states = {h.name: state(h) for h in spec.hosts}
    for managers in (False, True):
        batch = [h for h in spec.hosts if states[h.name][0] != "inactive" and states[h.name][1] == managers]
        with ThreadPoolExecutor(max_workers=8) as ex:
            list(ex.map(leave, batch))


def timed(argv: list[str]) -> float:
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True)
    elapsed = time.monotonic() - t0
    if proc.returncode != 0:
        sys.exit(f"{shlex.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return elapsed


def shell_script(spec: labhosts.LabSpec) -> str:
    ssh = (
        f"ssh -q -o BatchMode=yes -o UserKnownHostsFile={spec.dir / 'known_hosts'} "
        f"-o StrictHostKeyChecking=yes -i {spec.dir / 'id_ed25519'} -l root"
    )
    mgr = spec.hosts[0]
    lines = ["set -e", f"{ssh} {mgr.address} docker swarm init --advertise-addr {mgr.address} >/dev/null"]
    lines.append(f"TOKEN=$({ssh} {mgr.address} docker swarm join-token -q worker)")
    for h in spec.hosts[1:]:
        lines.append(
            f'{ssh} {h.address} docker swarm join --token "$TOKEN" --advertise-addr {h.address} '
            f"{mgr.address}:2377 >/dev/null"
        )
    for h in spec.hosts:
        for k, v in h.labels.items():
            lines.append(f"{ssh} {mgr.address} docker node update --label-add {k}={v} {h.name} >/dev/null")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3, 6])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="3 hosts, one repeat")
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.repeat = [3], 1

    rows = []
    try:
        for n in args.sizes:
            spec = labhosts.plan_lab(LAB_DIR, n, 1)
            inventory = labhosts.bring_up(spec)
            cli = [sys.executable, "-m", "swarmctl", "bootstrap", str(inventory)]
            ours, script, noop = [], [], []
            for _ in range(args.repeat):
                reset(spec)
                ours.append(timed(cli))
                noop.append(timed(cli))
                reset(spec)
                script.append(timed(["bash", "-c", shell_script(spec)]))
            reset(spec)
            rows.append((n, statistics.median(ours), statistics.median(noop), statistics.median(script)))
    finally:
        labhosts.teardown(LAB_DIR)

    print(f"bootstrap wall time, median of {args.repeat} (seconds; includes Python start-up of the CLI)")
    print(f"{'hosts':>5}  {'swarmctl':>9}  {'no-op rerun':>11}  {'sequential ssh script':>21}  {'speed-up':>8}")
    for n, ours_s, noop_s, script_s in rows:
        print(f"{n:>5}  {ours_s:>9.2f}  {noop_s:>11.2f}  {script_s:>21.2f}  {script_s / ours_s:>7.2f}x")
    if len(rows) >= 2:
        print(
            f"growth {rows[0][0]} -> {rows[-1][0]} hosts: swarmctl {rows[-1][1] / rows[0][1]:.2f}x, "
            f"script {rows[-1][3] / rows[0][3]:.2f}x"
        )


if __name__ == "__main__":
    main()
