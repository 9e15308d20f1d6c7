"""Record what swarmctl's fact commands print on real lab hosts, as fixtures for the unit tier
(pyinfra style: the command, its output, and the fact swarmctl makes of it).

    python -m tests.recorded.facts      (root; builds and removes its own lab; about 2 minutes)

Writes ``tests/unit/facts/<fact>-<case>.json``: ``{"fact", "about", "command", "output", "expected"}``.
``expected`` is what the parse gave when recorded; review the diff after a re-record (a changed
fact is a changed meaning). tests/unit/test_facts.py replays every file through the same parse.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import docker

from swarmctl.facts import engine_config, host, raft
from swarmctl.facts.membership import parse_membership
from swarmctl_lab import hosts as labhosts

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "unit" / "facts"
LAB_DIR = Path(".swarmctl/record-facts-lab")


def save(fact: str, case: str, about: str, command: list[str] | str, output: str, expected: Any) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    data = {"fact": fact, "about": about, "command": command, "output": output, "expected": expected}
    (OUT / f"{fact}-{case}.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def on(spec: labhosts.LabSpec, name: str, argv: list[str]) -> str:
    proc = labhosts.host_exec(spec, name, argv)
    if proc.returncode != 0:
        sys.exit(f"{argv[:3]} on {name} failed: {proc.stderr.decode()[-500:]}")
    return proc.stdout.decode()


def api(spec: labhosts.LabSpec, name: str) -> docker.APIClient:
    h = next(x for x in spec.hosts if x.name == name)
    return docker.APIClient(base_url=f"unix://{spec.docker_socket(h)}", version="1.41")


def info_case(spec: labhosts.LabSpec, name: str, case: str, about: str) -> None:
    with api(spec, name) as a:
        info = a.info()
    swarm = {"Swarm": info.get("Swarm")}
    save("membership", case, about, "GET /info (Swarm)", json.dumps(swarm, sort_keys=True),
         parse_membership(swarm).json())  # fmt: skip


def main() -> None:
    spec = labhosts.plan_lab(LAB_DIR, 3, 1)
    try:
        inventory = labhosts.bring_up(spec)
        # lab1 manager, lab2 worker, lab3 outside any swarm
        with api(spec, "lab1") as a:
            a.init_swarm(advertise_addr=spec.hosts[0].address, listen_addr="0.0.0.0:2377")
            token = a.inspect_swarm()["JoinTokens"]["Worker"]
        with api(spec, "lab2") as a:
            a.join_swarm([f"{spec.hosts[0].address}:2377"], token, advertise_addr=spec.hosts[1].address)
        info_case(spec, "lab1", "manager", "an active manager of a one-manager swarm")
        info_case(spec, "lab2", "worker", "an active worker")
        info_case(spec, "lab3", "inactive", "an engine in no swarm")

        script = ["sh", "-c", engine_config.READ_SCRIPT, "read", "registry.lab:5000"]
        out = on(spec, "lab1", script)
        save("engine_config", "lab-defaults", "the lab's own daemon.json, no record, no CA, no pending restart",
             script, out, _jsonable(engine_config.parse_config_read(out)))  # fmt: skip
        record = '{"keys": {"log-opts": {"max-size": "10m"}}}'
        on(spec, "lab3", ["sh", "-c", f"echo '{record}' > {engine_config.OWNED}; : > {engine_config.PENDING}"])
        out = on(spec, "lab3", script)
        save("engine_config", "record-and-pending", "swarmctl's record of what it set, a restart left pending",
             script, out, _jsonable(engine_config.parse_config_read(out)))  # fmt: skip

        roots = ["sh", "-c", raft._ROOTS_SCRIPT]
        out = on(spec, "lab1", roots)
        save("data_roots", "default", "daemon.json without data-root: the default only", roots, out,
             raft.parse_data_roots(out))  # fmt: skip
        on(spec, "lab3", ["sh", "-c", 'echo \'{"data-root": "/srv/docker"}\' > /etc/docker/daemon.json'])
        out = on(spec, "lab3", roots)
        save("data_roots", "moved", "data-root in daemon.json: looked at first, the default after it", roots, out,
             raft.parse_data_roots(out))  # fmt: skip
        listing = ["sh", "-c", raft._RAFT_SCRIPT, "raft", "/srv/docker", "/var/lib/docker"]
        time.sleep(1)  # a WAL segment and a snapshot time apart from the start
        out = on(spec, "lab1", listing)
        save("raft", "manager", "a manager's raft directory (under the default root; /srv/docker has none)",
             listing, out, {r: vars(v) for r, v in raft.parse_raft_by_root(out).items()})  # fmt: skip

        facts = ["sh", "-c", host._FACTS_SCRIPT]
        out = on(spec, "lab1", facts)
        save("host", "lab-host", "a lab host: docker CLI and engine, bash, timeout, kernel features, addresses",
             facts, out, host.parse_facts_script(out))  # fmt: skip
        probes = ["bash", "-c", host._PORTS_SCRIPT, "probe", spec.hosts[0].address, "2377",
                  spec.hosts[2].address, "7946", spec.hosts[0].address, "7946"]  # fmt: skip
        out = on(spec, "lab2", probes)
        save("ports", "lab", "from a worker: the manager's 2377 open, 7946 open; lab3's 7946 refused (no swarm)",
             probes, out, {f"{a} {p}": r for (a, p), r in host.parse_ports(out).items()})  # fmt: skip

        # autolock: the manager restarted comes back locked
        with api(spec, "lab1") as a:
            sw = a.inspect_swarm()
            a.update_swarm(version=sw["Version"]["Index"], swarm_spec={**sw["Spec"], "EncryptionConfig":
                           {"AutoLockManagers": True}})  # fmt: skip
            key = a.get_unlock_key()["UnlockKey"]
        on(spec, "lab1", ["systemctl", "restart", "docker"])
        info_case(spec, "lab1", "locked", "a manager restarted under autolock, before its unlock")
        with api(spec, "lab1") as a:
            a.unlock_swarm(key)
        del inventory
    finally:
        labhosts.teardown(LAB_DIR)
        subprocess.run(["true"])


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: vars(o) if hasattr(o, "__dict__") else str(o)))


if __name__ == "__main__":
    main()
