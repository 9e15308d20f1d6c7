"""`swarmctl verify` wall time on labs of 3 and 6 hosts (it must grow far slower than the host count).

The stack: a global service (a task on every host, so every host is probed), two dnsrr services
and a vip-mode one on one attachable overlay network. Timed: the whole CLI, median of --repeat
runs. On this lab's kernel the vip-mode service's VIP check fails (no IPVS): verify exits 1, which
the benchmark expects; the number of checks is printed next to the time.

With --vm the labs are virtual machines (`lab up --vm`, TCG here): their kernels have IPVS, so
the VIP check passes and verify must exit 0.

usage: python -m bench.verify [--sizes 3 6] [--repeat 3] [--smoke] [--vm]  (root; builds its own labs)
       --smoke: the smallest run (3 hosts, once), to check the benchmark itself works
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from swarmctl_lab import hosts as labhosts
from swarmctl_lab import images, vm

LAB_DIR = Path(".swarmctl/bench-lab")
STACK = """
services:
  everywhere:
    image: ${PROBE_IMAGE}
    command: [python3, -c, "import signal, time; signal.signal(signal.SIGTERM, lambda *a: exit(0)); time.sleep(1e9)"]
    deploy: {mode: global, endpoint_mode: dnsrr}
    networks: [net]
  a:
    image: ${PROBE_IMAGE}
    command: [python3, -c, "import signal, time; signal.signal(signal.SIGTERM, lambda *a: exit(0)); time.sleep(1e9)"]
    deploy: {replicas: 2, endpoint_mode: dnsrr}
    networks: [net]
  b:
    image: ${PROBE_IMAGE}
    command: [python3, -m, http.server, "8080"]
    deploy: {replicas: 2}
    networks: [net]
    x-swarmctl: {check: tcp, port: 8080}
networks:
  net: {attachable: true}
"""


def run(argv: list[str], ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode not in ok:
        sys.exit(f"{argv} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3, 6])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="3 hosts, one repeat")
    parser.add_argument("--vm", action="store_true", help="virtual machines instead of namespaces")
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.repeat = [3], 1
    swarmctl = [sys.executable, "-m", "swarmctl"]
    rows = []
    try:
        for n in args.sizes:
            spec = labhosts.plan_lab(LAB_DIR, n, 1, kind="vm" if args.vm else "netns")

            def load(s: labhosts.LabSpec) -> dict[str, str]:
                images.load_into_hosts(s, images.ensure_bundle())
                return images.lab_vars()

            t_up = time.monotonic()
            inventory = vm.bring_up(spec, with_registry=False) if args.vm else labhosts.bring_up(spec, prepare=load)
            up_seconds = time.monotonic() - t_up
            stack = spec.dir / "verify-bench.yml"
            stack.write_text(STACK)
            run([*swarmctl, "bootstrap", str(inventory)])
            run([*swarmctl, "deploy", "vb", "-f", str(stack), "-i", str(inventory), "--no-verify"])
            times, checks = [], 0
            for _ in range(args.repeat):
                t0 = time.monotonic()
                # VIPs carry traffic only where the kernel has IPVS: on the VMs verify must pass
                proc = run([*swarmctl, "verify", "vb", "-i", str(inventory), "--json"], ok=(0,) if args.vm else (0, 1))
                times.append(time.monotonic() - t0)
                checks = len(json.loads(proc.stdout)["checks"])
            rows.append((n, statistics.median(times), checks))
            print(f"{n} {'VMs' if args.vm else 'hosts'}: lab up {up_seconds:.0f}s", file=sys.stderr)
            labhosts.teardown(LAB_DIR)
    finally:
        labhosts.teardown(LAB_DIR)
    kind = "VMs (TCG or KVM), verify passing" if args.vm else "namespace hosts (no IPVS: the VIP check fails)"
    print(f"swarmctl verify on {kind}, median of {args.repeat} (seconds, CLI start-up included)")
    print(f"{'hosts':>5}  {'seconds':>8}  {'checks':>7}")
    for n, t, c in rows:
        print(f"{n:>5}  {t:>8.2f}  {c:>7}")
    if len(rows) >= 2:
        print(
            f"growth {rows[0][0]} -> {rows[-1][0]} hosts: {rows[-1][1] / rows[0][1]:.2f}x time for "
            f"{rows[-1][2] / rows[0][2]:.2f}x checks"
        )


if __name__ == "__main__":
    main()
