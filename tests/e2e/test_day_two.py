"""Day two on the lab: join tokens and the root CA rotated, autolock and unlock, a backup, recovery
from lost quorum (from the surviving manager, and from the backup onto a lab made anew), and a
manager host replaced by a fresh one of the same name.

A swarm of 3 managers (lab1-3) and, from the token test on, a worker (lab4), with the Kafka stack
deployed. The tests build on each other in file order (one swarm's life); every state they need
is checked from outside swarmctl, through each host's own engine or files. The last one takes the
lab down and brings it up again (the tests after it start from `lab.reset()`, as they all do); it
stays in this module, so that the module's swarm and backup are the ones it recovers.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from cryptography import x509

from swarmctl.inventory import load_inventory
from swarmctl.ops.autolock import load_keys, store_path
from swarmctl.secretstore import load_key
from swarmctl_lab import hosts as labhosts
from tests.e2e.conftest import Lab
from tests.e2e.test_secrets import files_containing
from tests.helpers import Run, assert_no_traceback, swarmctl, wait_for

pytestmark = pytest.mark.churn

MANAGERS = {"lab1": "manager", "lab2": "manager", "lab3": "manager"}
ALL = {**MANAGERS, "lab4": "worker"}
MARKER = "day-two-marker"
ROOT = Path(__file__).resolve().parents[2]
FAST = ["-f", str(ROOT / "stacks/kafka/stack.yml"), "-f", str(ROOT / "tests/stacks/kafka-fast.yml")]


class DayTwo:
    def __init__(self, lab: Lab, d: Path):
        self.lab = lab
        self.dir = d
        self.inventory = d / "hosts.yml"
        self.outputs: list[Run] = []  # every command's output: searched for the unlock key
        self.trust_root = ""  # the swarm's root CA certificate when the backup was taken
        variables = load_inventory(lab.inventory).vars
        self.vars = "vars:\n" + "".join(f'  {k}: "{v}"\n' for k, v in variables.items())

    def write(self, roles: dict[str, str], swarm: str = "") -> Path:
        return self.lab.write_inventory(self.inventory, roles, top=self.vars + swarm)

    def run(self, *args: str, timeout: float = 900) -> Run:
        result = swarmctl(*args, "-i", str(self.inventory), timeout=timeout)
        assert_no_traceback(result)
        self.outputs.append(result)
        return result

    def api(self, name: str) -> docker.APIClient:
        return self.lab.docker(name)

    def leader(self) -> str:
        for name in MANAGERS:
            try:
                with self.api(name) as api:
                    nodes = api.nodes()
                return next(n["Description"]["Hostname"] for n in nodes if (n.get("ManagerStatus") or {}).get("Leader"))
            except (docker.errors.APIError, StopIteration):
                continue
        return ""

    def nodes(self) -> list[dict[str, Any]]:
        with self.api(self.leader() or "lab1") as api:
            return list(api.nodes())

    def engine(self, name: str, action: str) -> None:
        proc = labhosts.host_exec(self.lab.spec, name, ["systemctl", action, "docker"])
        assert proc.returncode == 0, proc.stderr.decode()

    def wipe(self, name: str, start: bool = True) -> None:
        """The host's engine stopped and its swarm state gone (a manager lost for good); started
        again empty unless ``start`` is False."""
        self.engine(name, "stop")
        proc = labhosts.host_exec(self.lab.spec, name, ["rm", "-rf", "/var/lib/docker/swarm"])
        assert proc.returncode == 0, proc.stderr.decode()
        if start:
            self.engine(name, "start")


def ready_managers(nodes: list[dict[str, Any]]) -> list[str]:
    return sorted(
        n["Description"]["Hostname"]
        for n in nodes
        if n["Spec"]["Role"] == "manager" and n["Status"]["State"] == "ready"
        and (n.get("ManagerStatus") or {}).get("Reachability") == "reachable"
    )  # fmt: skip


def quorum(day: DayTwo, name: str = "lab1") -> bool:
    try:
        with day.api(name) as api:
            api.nodes()
        return True
    except docker.errors.APIError:
        return False


def issuer(day: DayTwo, name: str) -> tuple[str, bytes]:
    """The issuer of a node's own TLS certificate, as its engine keeps it on disk."""
    path = day.lab.spec.host_dir(day.lab.host(name)) / "docker" / "swarm" / "certificates" / "swarm-node.crt"
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier or b""
    return cert.issuer.rfc4514_string(), aki


@pytest.fixture(scope="module")
def day(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DayTwo]:
    lab.fresh()  # recover's verify needs overlay gossip without stale peers of earlier swarms
    day = DayTwo(lab, tmp_path_factory.mktemp("day-two"))
    day.write(MANAGERS)
    assert day.run("bootstrap").rc == 0
    # the stack with the tests' short health intervals and monitor windows: these tests are about the
    # swarm's day two, test_kafka deploys the shipped stack as it is
    deployed = day.run("deploy", "kafka", *FAST, "--json")
    assert deployed.rc == 0, str(deployed)
    with day.api("lab1") as api:
        api.create_secret(MARKER, b"kept by the raft log")
    yield day


def test_rotated_worker_token_joins_new_hosts_and_the_old_one_is_refused(day: DayTwo) -> None:
    with day.api("lab1") as api:
        before = api.inspect_swarm()["JoinTokens"]
    run = day.run("rotate", "tokens", "--worker", "--json")
    assert run.rc == 0, str(run)
    assert [c["name"] for c in run.json()["changes"]] == ["worker join token"]
    with day.api("lab1") as api:
        after = api.inspect_swarm()["JoinTokens"]
    assert after["Worker"] != before["Worker"] and after["Manager"] == before["Manager"]
    assert before["Worker"] not in run.stdout + run.stderr and after["Worker"] not in run.stdout + run.stderr
    with day.api("lab4") as api, pytest.raises(docker.errors.APIError):
        api.join_swarm(
            [f"{day.lab.host('lab1').address}:2377"], before["Worker"], advertise_addr=day.lab.host("lab4").address
        )
    day.write(ALL)
    joined = day.run("bootstrap", "--json")
    assert joined.rc == 0, str(joined)
    assert ("join-worker", "lab4") in [(c["action"], c["name"]) for c in joined.json()["changes"]]
    assert {n["Description"]["Hostname"] for n in day.nodes() if n["Status"]["State"] == "ready"} == set(ALL)


def test_rotated_ca_issues_every_node_a_new_certificate_and_the_stack_stays_up(day: DayTwo) -> None:
    before = {n: issuer(day, n) for n in ALL}
    run = day.run("rotate", "ca", "--json", "--timeout", "120")
    assert run.rc == 0, str(run)
    progress = run.json()["progress"]
    assert progress["certificates"] == progress["total"] == 4 and not progress["in_progress"]
    after = wait_for("every node's certificate on disk to change", lambda: {n: issuer(day, n) for n in ALL},
                     lambda seen: all(seen[n][1] != before[n][1] for n in ALL), timeout=30)  # fmt: skip
    assert len({aki for _, aki in after.values()}) == 1  # one new issuer for all
    verify = day.run("verify", "kafka", "--wait", "60")
    assert verify.rc == 0, str(verify)


def test_autolock_locks_a_restarted_manager_and_unlock_brings_it_back(day: DayTwo) -> None:
    day.write(ALL, "swarm: {autolock: true}\n")
    on = day.run("bootstrap", "--json")
    assert on.rc == 0, str(on)
    store = store_path(load_inventory(day.inventory))
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    with day.api("lab1") as api:
        key = api.get_unlock_key()["UnlockKey"]
    assert load_keys(load_inventory(day.inventory), load_key(os.environ)).current == key

    day.engine("lab2", "restart")
    wait_for("lab2 to be locked", lambda: day.lab.swarm_state("lab2"), lambda s: s == "locked", timeout=60)
    status = day.run("status", "--json")
    assert status.rc == 0 and status.json()["locked"] == ["lab2"], str(status)
    planned = day.run("bootstrap", "--plan")
    assert planned.rc == 1 and "lab2 (locked: run `swarmctl unlock`)" in planned.stderr, str(planned)
    unlocked = day.run("unlock", "--json")
    assert unlocked.rc == 0 and unlocked.json()["locked"] == ["lab2"], str(unlocked)
    assert day.lab.swarm_state("lab2") == "active"
    assert "lab2" in wait_for("lab2 a reachable manager", lambda: ready_managers(day.nodes()), lambda m: "lab2" in m)

    rotated = day.run("rotate", "unlock-key", "--json")
    assert rotated.rc == 0, str(rotated)
    with day.api("lab1") as api:
        new = api.get_unlock_key()["UnlockKey"]
    stored = load_keys(load_inventory(day.inventory), load_key(os.environ))
    assert new != key and stored.current == new and key in stored.retired

    off = day.write(ALL, "swarm: {autolock: false}\n")
    assert day.run("bootstrap").rc == 0
    with day.api("lab1") as api:
        assert api.inspect_swarm()["Spec"]["EncryptionConfig"]["AutoLockManagers"] is False
    assert load_keys(load_inventory(off), load_key(os.environ)).retired[:2] == (new, key)  # retired, never dropped

    for secret in (key, new):
        for run in day.outputs:
            assert secret not in run.stdout + run.stderr, str(run)
        for root in (day.dir, day.lab.dir, Path.home() / ".config" / "swarmctl", Path.home() / ".local"):
            assert files_containing(root, secret.encode()) == []


@pytest.fixture(scope="module")
def backup_file(day: DayTwo) -> Path:
    leader = day.leader()
    with day.api(leader) as api:
        day.trust_root = api.inspect_swarm()["TLSInfo"]["TrustRoot"]
    path = day.dir / "swarm.backup"
    run = day.run("backup", "-o", str(path), "--json")
    assert run.rc == 0, str(run)
    manifest = run.json()["manifest"]
    assert manifest["host"] in MANAGERS and manifest["host"] != leader  # quorum held throughout
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    listed = swarmctl("backup", "--list", str(path), "--json")
    assert listed.rc == 0 and listed.json()["manifest"] == manifest, str(listed)
    assert manifest["stacks"] == ["kafka"] and MARKER in manifest["secrets"] and len(manifest["services"]) == 6
    assert manifest["raft_index"] > 0 and manifest["managers"] == 3
    back = wait_for("the backup's manager back", lambda: ready_managers(day.nodes()), lambda m: len(m) == 3)
    assert back == sorted(MANAGERS)
    return path


def assert_recovered(day: DayTwo, run: Run) -> None:
    nodes = day.nodes()
    assert ready_managers(nodes) == sorted(MANAGERS), str(run)
    assert sorted(n["Description"]["Hostname"] for n in nodes) == sorted(ALL), str(run)  # no stale node left
    with day.api(day.leader()) as api:
        services = {s["Spec"]["Name"] for s in api.services()}
        secrets = {s["Spec"]["Name"] for s in api.secrets()}
    assert {f"kafka_{s}" for s in ("kafka-1", "kafka-2", "kafka-3", "zookeeper-1", "zookeeper-2")} <= services
    assert MARKER in secrets
    verify = day.run("verify", "kafka", "--wait", "180")
    assert verify.rc == 0, str(verify)


def test_recover_from_the_surviving_manager_after_two_managers_are_lost(day: DayTwo, backup_file: Path) -> None:
    for name in ("lab2", "lab3"):
        day.wipe(name, start=False)  # engines stopped, swarm state wiped
    wait_for("lab1 to lose quorum", lambda: quorum(day), lambda q: not q, timeout=60)
    plan = day.run("recover", "--plan", "--json")
    assert plan.rc == 0, str(plan)
    steps = [(c["action"], c["name"]) for c in plan.json()["changes"]]
    assert steps == [("start", "lab2"), ("start", "lab3"), ("force-new-cluster", "lab1"), ("join-manager", "lab2"),
                     ("join-manager", "lab3"), ("wait", "services")]  # fmt: skip
    assert not quorum(day) and day.lab.dockerd_pid("lab2") == 0  # the plan changed nothing
    run = day.run("recover", "--yes", "--json")
    assert run.rc == 0, str(run)
    assert_recovered(day, run)


def test_a_replaced_manager_host_joins_and_its_stale_node_goes(day: DayTwo) -> None:
    with day.api("lab1") as api:
        old = next(n["ID"] for n in api.nodes() if n["Description"]["Hostname"] == "lab3")
    day.wipe("lab3")
    wait_for("lab3's old node down", lambda: {n["ID"]: n["Status"]["State"] for n in day.nodes()},
             lambda s: s.get(old) == "down", timeout=60)  # fmt: skip
    run = day.run("bootstrap", "--json")
    assert run.rc == 0, str(run)
    actions = [(c["action"], c["name"]) for c in run.json()["changes"]]
    assert actions.index(("remove", "lab3")) < actions.index(("join-manager", "lab3"))  # never above what carries
    nodes = day.nodes()
    assert ready_managers(nodes) == sorted(MANAGERS) and old not in {n["ID"] for n in nodes}
    assert len(nodes) == 4


def test_recover_from_the_backup_onto_a_lab_made_anew(day: DayTwo, backup_file: Path) -> None:
    lab = day.lab
    lab.remake()  # new machines at the old addresses (a backup is restored at the address it was taken at)
    assert all(lab.swarm_state(n) == "inactive" for n in ALL)
    run = day.run("recover", "--from-backup", str(backup_file), "--yes", "--json")
    assert run.rc == 0, str(run)
    manifest = swarmctl("backup", "--list", str(backup_file), "--json").json()["manifest"]
    assert run.json()["source"] == manifest["host"]  # restored where it was taken: same address
    assert manifest["ca_force_rotate"] == 1  # the module rotated the root CA once before the backup
    with day.api(manifest["host"]) as api:
        swarm = api.inspect_swarm()
    # the force-new-cluster kept the rotation count: no new rotation began, the root is the backup's
    assert swarm["Spec"]["CAConfig"].get("ForceRotate") == 1 and not swarm["RootRotationInProgress"], swarm
    assert swarm["TLSInfo"]["TrustRoot"] == day.trust_root and not any("rotating its root CA" in w for w in
                                                                       run.json()["warnings"])  # fmt: skip
    assert_recovered(day, run)
