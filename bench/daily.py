"""ps, logs and exec wall time on labs of 3, 6 and 24 hosts, against what an operator types today.

On each lab: bootstrap, then a global service (one task per node, a line a second on its stdout).
Measured, each the median of --repeat runs of the real command line (Python start-up included):
- `swarmctl ps STACK --json`, and `ssh MANAGER docker stack ps STACK` (OpenSSH, same key);
- `swarmctl logs STACK -f --tail 1`: time until its first line;
- `swarmctl exec STACK SERVICE --node HOST -- true`: the round trip to the command's exit, and
  `ssh HOST docker exec CONTAINER true` for a container whose node the operator already knows.

usage: python -m bench.daily [--sizes 3 6 24] [--repeat 5] [--smoke]      (root; builds its own lab)
       --smoke: the smallest run (3 hosts, once), to check the benchmark itself works
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from swarmctl_lab import hosts as labhosts
from swarmctl_lab import images

LAB_DIR = Path(".swarmctl/bench-daily-lab")
STACK = """services:
  ticker:
    image: swarmctl-lab/probe:py3
    command: [sh, -c, "while true; do date; sleep 1; done"]
    deploy:
      mode: global
"""


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        sys.exit(f"{shlex.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def timed(argv: list[str]) -> float:
    t0 = time.monotonic()
    run(argv)
    return time.monotonic() - t0


def first_line(argv: list[str]) -> float:
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        if not proc.stdout.readline():
            sys.exit(f"{shlex.join(argv)} printed nothing")
        return time.monotonic() - t0
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3, 6, 24])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="3 hosts, one repeat")
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.repeat = [3], 1
    swarmctl = [sys.executable, "-m", "swarmctl"]
    rows = []
    try:
        for n in args.sizes:
            spec = labhosts.plan_lab(LAB_DIR, n, 1)

            def load(s: labhosts.LabSpec) -> dict[str, str]:
                images.load_into_hosts(s, images.ensure_bundle())  # the ticker's image on every host
                return images.lab_vars()

            inventory = labhosts.bring_up(spec, prepare=load)
            inv = ["--inventory", str(inventory)]
            run([*swarmctl, "bootstrap", str(inventory)])
            with tempfile.TemporaryDirectory() as tmp:
                stack = Path(tmp) / "ticker.yml"
                stack.write_text(STACK)
                run([*swarmctl, "deploy", "bench", "-f", str(stack), "--no-verify", *inv])
            ssh = ["ssh", "-q", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={spec.dir / 'known_hosts'}",
                   "-o", "StrictHostKeyChecking=yes", "-i", str(spec.dir / "id_ed25519"), "-l", "root"]  # fmt: skip
            manager, last = spec.hosts[0], spec.hosts[-1]
            tasks = json.loads(run([*swarmctl, "ps", "bench", "--json", *inv]).stdout)["tasks"]
            container = next(t["container_id"] for t in tasks if t["host"] == last.name)
            ps = [timed([*swarmctl, "ps", "bench", "--json", *inv]) for _ in range(args.repeat)]
            stack_ps = [timed([*ssh, manager.address, "docker", "stack", "ps", "bench"]) for _ in range(args.repeat)]
            logs = [first_line([*swarmctl, "logs", "bench", "-f", "--tail", "1", *inv]) for _ in range(args.repeat)]
            exe = [timed([*swarmctl, "exec", "bench", "ticker", "--node", last.name, *inv, "--", "true"])
                   for _ in range(args.repeat)]  # fmt: skip
            by_hand = [timed([*ssh, last.address, "docker", "exec", container, "true"]) for _ in range(args.repeat)]
            rows.append((n, *(statistics.median(x) for x in (ps, stack_ps, logs, exe, by_hand))))
            labhosts.teardown(LAB_DIR)
    finally:
        labhosts.teardown(LAB_DIR)

    print(f"day-to-day commands, wall time, median of {args.repeat} (seconds; swarmctl's include Python start-up)")
    print(f"{'hosts':>5}  {'ps':>6}  {'ssh docker stack ps':>19}  {'logs -f 1st line':>16}  {'exec':>6}  "
          f"{'ssh docker exec':>15}")  # fmt: skip
    for n, ps_s, stack_s, logs_s, exec_s, hand_s in rows:
        print(f"{n:>5}  {ps_s:>6.2f}  {stack_s:>19.2f}  {logs_s:>16.2f}  {exec_s:>6.2f}  {hand_s:>15.2f}")
    if len(rows) >= 2:
        print(f"ps growth {rows[0][0]} -> {rows[-1][0]} hosts: {rows[-1][1] / rows[0][1]:.2f}x")


if __name__ == "__main__":
    main()
