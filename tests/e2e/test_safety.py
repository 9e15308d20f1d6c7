"""Day-two safety on the lab: a host's node is the one its own engine names, restarts never cost
the majority, autolocked managers come back unlocked, recovery looks where each host keeps its
state, and a frozen engine is named in time.

The inventory is the kind real ones are: hosts addressed by DNS names (entries this test adds to
this machine's /etc/hosts, and its own known_hosts under those names), inventory names that are
not the hosts' hostnames, 3 managers and a worker. The unit tier covers the same scenarios one by
one (tests/unit/test_day_two_safety.py).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarmctl_lab import hosts as labhosts
from tests.e2e.conftest import Lab
from tests.e2e.test_engine import MajorityWatch
from tests.helpers import Run, assert_no_traceback, swarmctl, wait_for

pytestmark = pytest.mark.churn

# inventory name -> the lab host it is (whose hostname is the lab's name, not this one)
NAMED = {"alpha": "lab2", "beta": "lab3", "gamma": "lab1", "delta": "lab4"}
ROLES = {"alpha": "manager", "beta": "manager", "gamma": "manager", "delta": "worker"}
DOMAIN = "safety.swarmctl.test"
HOSTS_MARK = "# swarmctl e2e test_safety"
CONNECT_TIMEOUT = 5


def dns(name: str) -> str:
    return f"{name}.{DOMAIN}"


def drop_hosts_entries() -> None:
    path = Path("/etc/hosts")
    if not path.exists():  # a minimal root may have none: the test's lines are then the only ones
        return
    kept = [line for line in path.read_text().splitlines(keepends=True) if HOSTS_MARK not in line]
    path.write_text("".join(kept))


class Named:
    """The lab seen through a DNS-named inventory."""

    def __init__(self, lab: Lab, d: Path):
        self.lab = lab
        self.dir = d
        self.inventory = d / "hosts.yml"
        self.env = {"SWARMCTL_SECRETS_KEY": base64.b64encode(os.urandom(32)).decode()}

    def write(self, top: str = "", labels: dict[str, str] | None = None) -> Path:
        lines = [
            *top.splitlines(),
            "ssh:",
            f"  identity_file: {self.lab.dir / 'id_ed25519'}",
            f"  known_hosts: {self.dir / 'known_hosts'}",
            f"  connect_timeout: {CONNECT_TIMEOUT}",
            "hosts:",
        ]
        for name, role in ROLES.items():
            label = (labels or {}).get(name, "")
            lines.append(f"  {name}: {{address: {dns(name)}, role: {role}, labels: {{{label}}}}}")
        self.inventory.write_text("\n".join(lines) + "\n")
        return self.inventory

    def run(self, *args: str, timeout: float = 900) -> Run:
        result = swarmctl(*args, "-i", str(self.inventory), env=self.env, timeout=timeout)
        assert_no_traceback(result)
        return result

    def engine(self, name: str, action: str) -> None:
        proc = labhosts.host_exec(self.lab.spec, NAMED[name], ["systemctl", action, "docker"])
        assert proc.returncode == 0, proc.stderr.decode()

    def nodes(self, via: str = "lab1") -> dict[str, dict[str, str]]:
        """hostname -> state, reachability, leader, address, as one manager's engine lists them."""
        with self.lab.docker(via) as api:
            return {
                n["Description"]["Hostname"]: {
                    "state": n["Status"]["State"],
                    "addr": n["Status"]["Addr"],
                    "reach": (n.get("ManagerStatus") or {}).get("Reachability", ""),
                    "leader": "yes" if (n.get("ManagerStatus") or {}).get("Leader") else "",
                }
                for n in api.nodes()
            }

    def leader(self) -> str:
        """The inventory name of the leader."""
        for via in ("lab1", "lab2", "lab3"):
            try:
                hostname = next(h for h, n in self.nodes(via).items() if n["leader"])
            except Exception:  # that engine restarting, or between leaders
                continue
            return next(name for name, lab_name in NAMED.items() if lab_name == hostname)
        raise AssertionError("no manager names a leader")

    def pids(self) -> dict[str, int]:
        return {name: self.lab.dockerd_pid(lab_name) for name, lab_name in NAMED.items()}


def restarted(run: Run) -> list[str]:
    return [line.split("restarting the engine of ")[1] for line in run.stderr.splitlines() if "restarting the" in line]


@pytest.fixture(scope="module")
def named(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Named]:
    lab.fresh()  # 3 managers whose engines restart: see test_engine's three_managers
    drop_hosts_entries()  # a run killed before its teardown left them
    with open("/etc/hosts", "a") as f:
        for name, lab_name in NAMED.items():
            f.write(f"{lab.host(lab_name).address} {dns(name)} {HOSTS_MARK}\n")
    original = {n: lab.daemon_json(n) for n in lab.names}
    day = Named(lab, tmp_path_factory.mktemp("safety"))
    # known_hosts under the names the inventory uses (as `ssh-keyscan NAME` would record them)
    by_address = {
        line.split()[0]: line.split(None, 1)[1] for line in (lab.dir / "known_hosts").read_text().splitlines()
    }
    (day.dir / "known_hosts").write_text(
        "".join(f"{dns(name)} {by_address[lab.host(lab_name).address]}\n" for name, lab_name in NAMED.items())
    )
    try:
        yield day
    finally:
        drop_hosts_entries()
        for name in lab.names:  # the lab's own engine configuration back, whatever a test left
            labhosts.host_exec(lab.spec, name, ["systemctl", "stop", "docker"])
            path = lab.spec.host_dir(lab.host(name)) / "etc-docker"
            (path / "daemon.json").write_text(json.dumps(original[name], indent=2) + "\n")
            for leftover in (
                "daemon.swarmctl.json",
                "daemon.swarmctl-restart-pending",
                "daemon.json.swarmctl-previous",
            ):
                (path / leftover).unlink(missing_ok=True)
            labhosts.host_exec(lab.spec, name, ["rm", "-rf", "/srv/docker"])
            labhosts.host_exec(lab.spec, name, ["systemctl", "start", "docker"])
        wait_for(
            "every engine back", lambda: [lab.swarm_state(n) for n in lab.names], lambda s: len(s) == 4, timeout=120
        )
        lab.reset()


@pytest.fixture(scope="module")
def swarm(named: Named) -> Named:
    named.write()
    run = named.run("bootstrap", "--json")
    assert run.rc == 0, str(run)
    return named


def test_an_inventory_of_dns_names_bootstraps_with_ip_addresses(swarm: Named) -> None:
    nodes = swarm.nodes()
    assert {h: n["addr"] for h, n in nodes.items()} == {h: swarm.lab.host(h).address for h in NAMED.values()}
    assert sorted(h for h, n in nodes.items() if n["reach"] == "reachable") == ["lab1", "lab2", "lab3"]
    again = swarm.run("bootstrap")
    assert again.rc == 0 and "nothing to do" in again.stderr, str(again)


def test_s8_a_frozen_engine_is_named_within_connect_timeout_and_35s(swarm: Named) -> None:
    pid = swarm.lab.dockerd_pid("lab4")
    swarm.write(labels={"alpha": 'zone: "a"'})  # the change the others must still get
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        run = swarm.run("bootstrap", "--json", timeout=300)
        took = time.monotonic() - t0
    finally:
        os.kill(pid, signal.SIGCONT)
    print(f"bootstrap with delta's engine frozen: named after {took:.1f}s")
    assert run.rc == 1 and took < CONNECT_TIMEOUT + 35, (took, str(run))
    failures = {f["host"]: f["error"] for f in run.json()["failures"]}
    assert list(failures) == ["delta"] and "in time" in failures["delta"], str(run)
    assert ("alpha", "label") in {(c["name"], c["action"]) for c in run.json()["changes"]}
    swarm.write()
    assert swarm.run("bootstrap").rc == 0  # the label goes again: the next tests start as the fixture left it


def test_with_a_manager_down_no_other_manager_restarts_and_the_leader_goes_last(swarm: Named) -> None:
    swarm.engine("beta", "stop")
    wait_for("lab3 seen down", lambda: swarm.nodes()["lab3"], lambda n: n["reach"] == "unreachable", timeout=60)
    before = swarm.pids()
    inv = swarm.write("engine:\n  log-opts: {max-size: 11m}\n")
    assert inv.exists()
    refused = swarm.run("bootstrap", "--json")
    assert refused.rc == 1, str(refused)
    failures = {f["host"]: f["error"] for f in refused.json()["failures"]}
    first = next(n for n in ("alpha", "gamma") if "refusing to restart" in failures.get(n, ""))
    assert "of 3 managers only 1 others are reachable" in failures[first], failures
    assert "beta" in failures  # its engine does not answer: named, left alone
    after = swarm.pids()
    assert after["alpha"] == before["alpha"] and after["gamma"] == before["gamma"], (before, after)
    assert "lab1" in swarm.nodes("lab1")  # `docker node ls` still answers: the quorum held

    swarm.engine("beta", "start")
    wait_for("lab3 a reachable manager", lambda: swarm.nodes()["lab3"], lambda n: n["reach"] == "reachable",
             timeout=120)  # fmt: skip
    leader = swarm.leader()
    with MajorityWatch(swarm.lab) as watch:
        rolled = swarm.run("bootstrap")
    assert rolled.rc == 0, str(rolled)
    watch.assert_majority()
    order = restarted(rolled)
    assert sorted(order) == ["alpha", "beta", "gamma"] and order[-1] == leader, (leader, rolled.stderr)


def test_under_autolock_an_engine_change_rolls_and_unlocks_every_manager(swarm: Named) -> None:
    swarm.write("swarm: {autolock: true}\nengine:\n  log-opts: {max-size: 11m}\n")
    on = swarm.run("bootstrap")
    assert on.rc == 0, str(on)
    before = swarm.pids()
    swarm.write("swarm: {autolock: true}\nengine:\n  log-opts: {max-size: 12m}\n")
    with MajorityWatch(swarm.lab) as watch:
        rolled = swarm.run("bootstrap")
    assert rolled.rc == 0, str(rolled)
    watch.assert_majority()
    after = swarm.pids()
    assert all(after[n] != before[n] for n in NAMED), (before, after)
    assert sorted(restarted(rolled)) == sorted(NAMED)
    for lab_name in ("lab1", "lab2", "lab3"):
        assert swarm.lab.swarm_state(lab_name) == "active", lab_name
    # each manager ends reachable; a manager just restarted (the leader goes last) lists the others
    # as it last heard of them until their next heartbeat: wait for its view to settle
    wait_for(
        "every manager reachable as lab1 lists them",
        lambda: swarm.nodes(),
        lambda nodes: sorted(h for h, n in nodes.items() if n["reach"] == "reachable") == ["lab1", "lab2", "lab3"],
        timeout=60,
    )
    off = swarm.write("swarm: {autolock: false}\nengine:\n  log-opts: {max-size: 12m}\n")
    assert off.exists() and swarm.run("bootstrap").rc == 0


def test_recover_never_forces_while_a_stopped_manager_holds_raft_state_under_a_moved_data_root(
    named: Named,
) -> None:
    named.lab.reset()
    named.write("engine:\n  data-root: /srv/docker\n")
    boot = named.run("bootstrap")
    assert boot.rc == 0, str(boot)
    assert labhosts.host_exec(named.lab.spec, "lab3", ["test", "-d", "/srv/docker/swarm/raft"]).returncode == 0
    # two managers lost: both engines stopped, beta's state kept, gamma's gone
    for name in ("beta", "gamma"):
        named.engine(name, "stop")
    assert labhosts.host_exec(named.lab.spec, "lab1", ["rm", "-rf", "/srv/docker/swarm"]).returncode == 0

    def quorum() -> bool:
        try:
            with named.lab.docker("lab2") as api:
                api.nodes()
            return True
        except Exception:
            return False

    wait_for("alpha to lose its quorum", quorum, lambda q: not q, timeout=60)
    plan = named.run("recover", "--plan", "--json")
    assert plan.rc == 1, str(plan)
    assert "the engine of beta is stopped, and it holds raft state" in plan.stderr, str(plan)
    assert "/srv/docker/swarm/raft" in plan.stderr
    assert named.lab.dockerd_pid("lab3") == 0 and not quorum()  # the plan changed nothing
