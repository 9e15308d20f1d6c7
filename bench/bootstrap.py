"""Bootstrap wall time on labs of 3 and 24 hosts: swarmctl vs Ansible vs a sequential shell script,
each from scratch and again with nothing to do (no-op), side by side in one run on one lab.

- swarmctl: `swarmctl bootstrap` (preflight, engine configuration, membership, labels).
- Ansible: bench/ansible/bootstrap.yml, community.docker's docker_swarm (init, join) and
  docker_node (labels), forks = hosts, pipelining, OpenSSH with the lab's key and known_hosts.
  Measured when `ansible-playbook` is found (--ansible PATH, else on PATH), with the Python next to
  it (which needs the docker SDK) as the hosts' interpreter: `pip install ansible docker`.
- script: `ssh host docker swarm ...` one host after the other (init, token, joins, labels).
- parallel ssh: the same commands, the joins all at once, then the labels all at once.
- engines alone: init, the managers' joins at once and then the workers' at once (the order
  swarmctl joins in: faster here than every join at once), each node's labels as soon as it
  joined, straight to each host's engine socket through connections opened before the clock
  starts (no SSH, no process started, nothing checked): the engines' own work, which no tool that
  joins hosts through their engines can go below on this machine.
Labs of fewer than 6 hosts have 1 manager, larger ones 3. Every run starts from hosts in no swarm
(the no-op runs: from the swarm the run before left), and once the machine is quiet: the lab's
engines share its cores, and after a bootstrap of 24 they stay busy for seconds (certificates,
gossip, the ingress network), which a controller on a machine of its own would not feel.

usage: python -m bench.bootstrap [--sizes 3 24] [--repeat 3] [--ansible PATH] [--smoke]   (root; own lab)
       --smoke: the smallest run (3 hosts, once, no Ansible), to check the benchmark itself works
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import docker

from swarmctl_lab import hosts as labhosts

LAB_DIR = Path(".swarmctl/bench-lab")
PLAYBOOK = Path(__file__).resolve().parent / "ansible" / "bootstrap.yml"


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


def cpu_busy(window: float = 0.5) -> float:
    """The share of this machine's CPU time spent busy over ``window`` seconds (/proc/stat)."""

    def snapshot() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
        return sum(ticks), ticks[3] + ticks[4]  # all, idle + iowait

    total0, idle0 = snapshot()
    time.sleep(window)
    total1, idle1 = snapshot()
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def quiet(limit: float = 0.25, timeout: float = 60.0) -> None:
    """Wait (at most ``timeout``) until the machine is less than ``limit`` busy."""
    deadline = time.monotonic() + timeout
    while cpu_busy() >= limit and time.monotonic() < deadline:
        pass


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    quiet()
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    elapsed = time.monotonic() - t0
    if proc.returncode != 0:
        sys.exit(f"{shlex.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return elapsed


def engines_alone(spec: labhosts.LabSpec) -> float:
    """Wall time of the engines' own work of a bootstrap (see the module's docstring)."""
    from concurrent.futures import ThreadPoolExecutor

    def client(h: labhosts.LabHost) -> docker.APIClient:
        api = docker.APIClient(base_url=f"unix://{spec.docker_socket(h)}", version="1.41", timeout=60)
        api.ping()  # the connection open before the clock starts
        return api

    first, rest = spec.hosts[0], spec.hosts[1:]
    with ThreadPoolExecutor(max_workers=len(spec.hosts) + 1) as ex:
        apis = dict(zip([h.name for h in spec.hosts], ex.map(client, spec.hosts), strict=True))
        # one connection to the manager for each host with labels to write
        managers = {h.name: client(first) for h in spec.hosts if h.labels}
        quiet()
        t0 = time.monotonic()
        lead = apis[first.name]
        lead.init_swarm(advertise_addr=first.address, listen_addr="0.0.0.0:2377")
        tokens = lead.inspect_swarm()["JoinTokens"]

        def label(h: labhosts.LabHost, node_id: str) -> None:
            if h.labels:
                api = managers[h.name]
                for attempt in range(3):  # a node's version moves with its status right after it joined
                    node = api.inspect_node(node_id)
                    spec_: Any = {**node["Spec"], "Labels": {**(node["Spec"].get("Labels") or {}), **h.labels}}
                    try:
                        api.update_node(node_id, node["Version"]["Index"], spec_)
                        return
                    except docker.errors.APIError as e:
                        if "out of sequence" not in str(e) or attempt == 2:
                            raise

        def join(h: labhosts.LabHost) -> None:
            api = apis[h.name]
            token = tokens["Manager" if h.role == "manager" else "Worker"]
            api.join_swarm([f"{first.address}:2377"], token, listen_addr="0.0.0.0:2377", advertise_addr=h.address)
            label(h, api.info()["Swarm"]["NodeID"])

        label(first, lead.info()["Swarm"]["NodeID"])
        list(ex.map(join, [h for h in rest if h.role == "manager"]))
        list(ex.map(join, [h for h in rest if h.role != "manager"]))
        elapsed = time.monotonic() - t0
    for api in (*apis.values(), *managers.values()):
        api.close()
    return elapsed


def shell_script(spec: labhosts.LabSpec, parallel: bool = False) -> str:
    """`ssh host docker swarm ...`: init, the tokens, every join, every label - one after the other,
    or (``parallel``) the joins all at once and then the labels all at once; nothing checked."""
    ssh = (
        f"ssh -q -o BatchMode=yes -o UserKnownHostsFile={spec.dir / 'known_hosts'} "
        f"-o StrictHostKeyChecking=yes -i {spec.dir / 'id_ed25519'} -l root"
    )
    bg = " &" if parallel else ""
    mgr = spec.hosts[0]
    lines = ["set -e", f"{ssh} {mgr.address} docker swarm init --advertise-addr {mgr.address} >/dev/null"]
    lines.append(f"WORKER=$({ssh} {mgr.address} docker swarm join-token -q worker)")
    lines.append(f"MANAGER=$({ssh} {mgr.address} docker swarm join-token -q manager)")
    for h in spec.hosts[1:]:
        token = "$MANAGER" if h.role == "manager" else "$WORKER"
        lines.append(
            f'{ssh} {h.address} docker swarm join --token "{token}" --advertise-addr {h.address} '
            f"{mgr.address}:2377 >/dev/null{bg}"
        )
    lines.append("wait" if parallel else "")
    for h in spec.hosts:
        for k, v in h.labels.items():
            lines.append(f"{ssh} {mgr.address} docker node update --label-add {k}={v} {h.name} >/dev/null{bg}")
    lines.append("wait" if parallel else "")
    return "\n".join(lines)


def ansible_inventory(spec: labhosts.LabSpec, python: Path) -> Path:
    """The lab as an Ansible inventory (YAML): managers (the first inits), workers, node labels."""
    ssh_args = f"-o UserKnownHostsFile={spec.dir / 'known_hosts'} -o StrictHostKeyChecking=yes"

    def group(role: str) -> dict[str, object]:
        return {"hosts": {h.name: {"ansible_host": h.address, **({"node_labels": h.labels} if h.labels else {})}
                          for h in spec.hosts if h.role == role}}  # fmt: skip

    inventory = {
        "all": {
            "vars": {
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(spec.dir / "id_ed25519"),
                "ansible_ssh_common_args": ssh_args,
                "ansible_python_interpreter": str(python),
            },
            "children": {"managers": group("manager"), "workers": group("worker")},
        }
    }
    path = spec.dir / "ansible-hosts.json"  # JSON is YAML
    path.write_text(json.dumps(inventory, indent=1))
    return path


def ansible_env(hosts: int) -> dict[str, str]:
    return {
        **os.environ,
        "ANSIBLE_FORKS": str(hosts),
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_NOCOLOR": "1",
    }


def managers_for(hosts: int) -> int:
    return 1 if hosts < 6 else 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3, 24])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--ansible", help="ansible-playbook to compare with (default: the one on PATH)")
    parser.add_argument("--smoke", action="store_true", help="3 hosts, one repeat, no Ansible")
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.repeat = [3], 1
    playbook_cmd = None if args.smoke else (args.ansible or shutil.which("ansible-playbook"))
    if playbook_cmd is None and not args.smoke:
        print("Ansible: no ansible-playbook found (pip install ansible docker; --ansible PATH): not compared")

    rows = []
    raw: dict[int, dict[str, list[float]]] = {}
    try:
        for n in args.sizes:
            spec = labhosts.plan_lab(LAB_DIR, n, managers_for(n))
            inventory = labhosts.bring_up(spec)
            cli = [sys.executable, "-m", "swarmctl", "bootstrap", str(inventory)]
            runs: dict[str, list[float]] = {
                k: [] for k in ("ours", "noop", "ansible", "ansible_noop", "script", "floor", "engines")
            }
            playbook = None
            if playbook_cmd is not None:
                python = Path(playbook_cmd).resolve().parent / "python"
                hosts_file = ansible_inventory(spec, python)
                playbook = [playbook_cmd, "-i", str(hosts_file), str(PLAYBOOK)]
            # one swarm made and taken apart before the clock runs: the first swarm on new engines
            # costs them more, and only the tool that went first paid it (at 24 hosts, swarmctl
            # 9.37 s in the first round, 6.03 and 5.05 after; the engines alone 3.29, 2.03, 2.33)
            engines_alone(spec)
            for _ in range(args.repeat):
                reset(spec)
                runs["ours"].append(timed(cli))
                runs["noop"].append(timed(cli))
                if playbook is not None:
                    reset(spec)
                    runs["ansible"].append(timed(playbook, ansible_env(n)))
                    runs["ansible_noop"].append(timed(playbook, ansible_env(n)))
                reset(spec)
                runs["script"].append(timed(["bash", "-c", shell_script(spec)]))
                reset(spec)
                runs["floor"].append(timed(["bash", "-c", shell_script(spec, parallel=True)]))
                reset(spec)
                runs["engines"].append(engines_alone(spec))
            reset(spec)
            rows.append((n, managers_for(n), {k: statistics.median(v) for k, v in runs.items() if v}))
            raw[n] = runs
    finally:
        labhosts.teardown(LAB_DIR)

    def cell(v: float | None, width: int) -> str:
        return f"{v:>{width}.2f}" if v is not None else f"{'-':>{width}}"

    print(
        f"bootstrap wall time, median of {args.repeat} (seconds; each includes its tool's start-up); "
        "parallel ssh: init, every join at once, every label at once, nothing checked; "
        "engines alone: the managers' joins, then the workers', straight to the engines' sockets, no SSH, "
        "nothing started"
    )
    for n, _, _ in rows:
        print(f"{n} hosts, every run: " + "; ".join(f"{k} " + " ".join(f"{v:.2f}" for v in raw[n][k])
                                                  for k in raw[n] if raw[n][k]))  # fmt: skip
    heads = ["hosts", "managers", "Ansible", "Ansible no-op", "swarmctl", "swarmctl no-op", "ssh script",
             "parallel ssh", "engines alone", "vs Ansible"]  # fmt: skip
    print("  ".join(f"{h:>{len(h)}}" for h in heads))
    for n, m, r in rows:
        ratio = f"{r['ansible'] / r['ours']:.2f}x" if "ansible" in r else "-"
        print(f"{n:>5}  {m:>8}  {cell(r.get('ansible'), 7)}  {cell(r.get('ansible_noop'), 13)}  {cell(r['ours'], 8)}  "
              f"{cell(r['noop'], 14)}  {cell(r['script'], 10)}  {cell(r['floor'], 12)}  "
              f"{cell(r.get('engines'), 13)}  {ratio:>10}")  # fmt: skip
    for n, _, r in rows:
        if "ansible" in r and "engines" in r:
            print(f"{n} hosts: a quarter of Ansible's time is {r['ansible'] / 4:.2f} s; the engines alone "
                  f"take {r['engines']:.2f} s, swarmctl {r['ours'] - r['engines']:.2f} s more")  # fmt: skip
    if len(rows) >= 2:
        first, last = rows[0][2], rows[-1][2]
        print(f"growth {rows[0][0]} -> {rows[-1][0]} hosts: swarmctl {last['ours'] / first['ours']:.2f}x, "
              f"no-op {last['noop'] / first['noop']:.2f}x, script {last['script'] / first['script']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
