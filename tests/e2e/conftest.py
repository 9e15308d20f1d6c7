"""The lab for end-to-end tests: real namespaced hosts with real sshd and dockerd.

One lab per test session (4 hosts, lab1 manager). Tests that need a particular swarm state
establish it themselves (``lab.reset()`` makes every host leave its swarm).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from swarmctl_lab import hosts as labhosts
from tests.helpers import running_lab, swarmctl, wait_for

LAB_HOSTS = 4


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)

    # The suite runs with pytest-xdist's --dist loadfile --no-loadscope-reorder: each module on one
    # worker, each worker with a lab of its own (made when its first module needs one), modules handed
    # out in ORDER, so on every worker in that order too. The order is chosen by measurement: the
    # longest namespace modules first (the suite ends when its longest worker does), the short
    # modules last, to fill the workers' ends. scripts/test runs the VM tier (beside the unit tier)
    # before all of them, alone: see there.
    #
    # What a module finds does not depend on what ran before it on its worker. Docker 20.10's overlay
    # gossip (networkdb/memberlist) keeps stale peers when a multi-manager swarm is torn down and
    # made again within seconds ("node ... is unknown to memberlist"), and embedded DNS on those
    # nodes then answers wrongly for a long while - verify reports exactly that. So the stack tests'
    # shared swarm is made on a lab where no swarm was torn down (the lab is made anew when one
    # was), and so is the day-two module's.
    def rank(item: pytest.Item) -> tuple[int, int]:
        path = Path(str(item.fspath))
        if path.parent.name != "e2e":
            return 2, 0
        return (0, ORDER.index(path.stem)) if path.stem in ORDER else (1, 0)

    items.sort(key=rank)


# measured on this 2-core machine (2026-12-06), seconds per module in scripts/test's phase 2 (4
# workers, the VM tier done; the CPU about half used): update 379, maintain 358, day_two 332,
# safety 255, kraft 224, kafka 215, stack_parity 182, deploy 176, bootstrap 170, registry 149,
# day_to_day 120, engine 82, quick_start 72, secrets 71, drift 57, history 57. Handed out longest
# first to whichever worker is free, 6 workers end within about 60 s of each other. (Before the
# VM tier ran apart, with the CPU saturated: update 480-600, day_two 470-530, maintain 440-560.)
ORDER = [
    "test_update",
    "test_maintain",
    "test_day_two",
    "test_safety",
    "test_kraft",
    "test_kafka",
    "test_stack_parity",
    "test_deploy",
    "test_bootstrap",
    "test_registry",
    "test_day_to_day",
    "test_engine",
    "test_quick_start",
    "test_secrets",
    "test_drift",
    "test_history",
    "test_vm",
]


@dataclass
class Lab:
    dir: Path
    spec: labhosts.LabSpec
    torn_down: int = 0  # swarms that reset() took apart since the lab was made

    def remake(self) -> None:
        """The lab made anew in its directory at the same addresses: new machines, no state, no
        gossip remembered from the swarms before (see pytest_collection_modifyitems). `lab up`
        removes the lab there first and keeps its subnet recorded meanwhile: a `lab down` first
        would let another worker's lab take the subnet in between."""
        up = swarmctl(
            "lab", "up", "--hosts", str(len(self.names)), "--subnet", self.spec.subnet, "--dir", str(self.dir),
            timeout=600,
        )  # fmt: skip
        assert up.rc == 0, str(up)
        self.spec = labhosts.load_spec(self.dir)
        self.torn_down = 0

    def fresh(self) -> None:
        """No host in a swarm, on a lab where no swarm was torn down (made anew if one was)."""
        self.reset()
        if self.torn_down:
            self.remake()

    @property
    def inventory(self) -> Path:
        return self.spec.inventory

    @property
    def names(self) -> list[str]:
        return [h.name for h in self.spec.hosts]

    def host(self, name: str) -> labhosts.LabHost:
        return next(h for h in self.spec.hosts if h.name == name)

    def docker(self, name: str) -> docker.APIClient:
        """Root-side access to a lab host's engine (its socket), for arranging and checking state."""
        return docker.APIClient(base_url=f"unix://{self.spec.docker_socket(self.host(name))}", version="1.41")

    def swarm_state(self, name: str) -> str:
        with self.docker(name) as api:
            return str(api.info()["Swarm"]["LocalNodeState"])

    def reset(self) -> None:
        """Every host leaves its swarm: the state of a fresh set of machines.

        Workers leave first: a worker whose managers are already gone waits for them before leaving.
        """
        states = {}
        for name in self.names:
            with self.docker(name) as api:
                swarm = api.info()["Swarm"]
                states[name] = (swarm["LocalNodeState"], bool(swarm.get("ControlAvailable")))

        def leave(name: str) -> None:
            # dockerd gives its swarm node 15 s to stop; on a loaded machine it may take longer and the
            # engine answers "context deadline exceeded" with the stop still under way: ask again, as
            # swarmctl's Engine.leave_swarm does
            with self.docker(name) as api:
                for attempt in range(3):
                    try:
                        api.leave_swarm(force=True)
                        return
                    except docker.errors.APIError as e:
                        if attempt == 2 or "context deadline exceeded" not in str(e):
                            raise

        # a worker's leave waits up to 5 s for its ingress sandbox to go: workers leave in parallel;
        # managers one at a time, so each leave is a clean raft membership change
        if any(state != "inactive" for state, _ in states.values()):
            self.torn_down += 1
        workers = [n for n in self.names if states[n][0] != "inactive" and not states[n][1]]
        try:
            with ThreadPoolExecutor(max_workers=len(self.names)) as ex:
                list(ex.map(leave, workers))
            for name in reversed([n for n in self.names if states[n][0] != "inactive" and states[n][1]]):
                leave(name)
        except docker.errors.APIError:
            # a swarm a failed test left broken (a manager whose node never stops within dockerd's
            # 15 s, three times over): the next test must not inherit it - new machines instead
            self.remake()

    @contextmanager
    def without_command(self, name: str, command: str, scratch: Path) -> Iterator[None]:
        """Hide ``command`` from one host's PATH, as on a host where its package is not installed.

        Inside that host's own mount namespace an empty file without execute permission is bound
        over every copy on the PATH; the other hosts and this machine keep theirs.
        """
        blank = scratch / f"no-{command}"
        blank.write_bytes(b"")
        blank.chmod(0o644)
        hidden = []
        try:
            for d in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"):
                target = f"{d}/{command}"
                if os.path.exists(target) and not os.path.islink(d):
                    proc = labhosts.host_exec(self.spec, name, ["mount", "--bind", str(blank), target])
                    assert proc.returncode == 0, proc.stderr.decode()
                    hidden.append(target)
            assert hidden, f"no {command} on this machine to hide"
            yield
        finally:
            for target in reversed(hidden):
                labhosts.host_exec(self.spec, name, ["umount", target])

    def dockerd_pid(self, name: str) -> int:
        """The host's dockerd, as its docker unit (the lab's systemd stand-in) reports it; 0 when stopped."""
        proc = labhosts.host_exec(self.spec, name, ["systemctl", "status", "docker"])
        for line in proc.stdout.decode().splitlines():
            if "Main PID:" in line:
                return int(line.split("Main PID:")[1].split()[0])
        return 0

    def daemon_json(self, name: str) -> dict[str, Any]:
        path = self.spec.host_dir(self.host(name)) / "etc-docker" / "daemon.json"
        return dict(json.loads(path.read_text())) if path.exists() else {}

    def sshd_pid(self, name: str) -> int:
        return int((self.spec.host_dir(self.host(name)) / "run" / "sshd.pid").read_text().split()[0])

    def stop_sshd(self, name: str) -> None:
        """The host's sshd stops (its master process: no new connection is accepted)."""
        os.kill(self.sshd_pid(name), signal.SIGTERM)
        wait_for(f"sshd of {name} to stop", lambda: labhosts.host_status(self.spec), lambda st: not next(
            h for h in st if h.name == name).sshd)  # fmt: skip

    def start_sshd(self, name: str) -> None:
        """Start the host's sshd again, in the host's cgroup (so that `lab down` finds it)."""
        procs = labhosts.host_cgroup_procs(self.spec, name)
        sshd = shutil.which("sshd", path="/usr/sbin:/usr/bin:/sbin") or "/usr/sbin/sshd"
        proc = labhosts.host_exec(self.spec, name, ["sh", "-c", f"echo $$ > {procs}; exec {sshd} -E /run/sshd.log"])
        assert proc.returncode == 0, proc.stderr.decode()
        wait_for(f"sshd of {name}", lambda: labhosts.host_status(self.spec), lambda st: next(
            h for h in st if h.name == name).sshd)  # fmt: skip

    @contextmanager
    def frozen_sshd(self, name: str) -> Iterator[None]:
        """The host's sshd frozen (SIGSTOP): connections are accepted by the kernel and never answered."""
        pid = self.sshd_pid(name)
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGCONT)

    def node_table(self) -> dict[str, tuple[str, str, str]]:
        """`docker node ls` on lab1: hostname -> (ID, role, availability)."""
        with self.docker("lab1") as api:
            return {
                n["Description"]["Hostname"]: (n["ID"], n["Spec"]["Role"], n["Spec"]["Availability"])
                for n in api.nodes()
            }

    def write_inventory(
        self,
        path: Path,
        hosts: dict[str, str],
        extra_hosts: str = "",
        ssh: dict[str, str] | None = None,
        top: str = "",
    ) -> Path:
        """An inventory for some lab hosts: {name: role}, using the lab's key and known_hosts;
        ``top``: more top-level YAML (``engine:``, ``registries:``, ``vars:``)."""
        settings = {"identity_file": str(self.dir / "id_ed25519"), "known_hosts": str(self.dir / "known_hosts")}
        settings.update(ssh or {})
        lines = [*top.splitlines(), "ssh:", *[f"  {k}: {v}" for k, v in settings.items()], "hosts:"]
        for name, role in hosts.items():
            h = self.host(name)
            labels = ", ".join(f'{k}: "{v}"' for k, v in h.labels.items())
            lines.append(f"  {name}: {{address: {h.address}, role: {role}, labels: {{{labels}}}}}")
        lines += [line for line in extra_hosts.splitlines() if line]
        path.write_text("\n".join(lines) + "\n")
        return path


@pytest.fixture(scope="session")
def _shared_swarm() -> dict[str, str]:
    return {}  # the cluster ID of the stack tests' swarm, once made


@pytest.fixture(scope="module")
def swarm(lab: Lab, _shared_swarm: dict[str, str]) -> Lab:
    """The lab's own inventory bootstrapped (lab1 manager, lab2-4 workers) for the stack tests: made
    once per lab, on a fresh one, and made again when a churning module ran since and took it away."""
    with lab.docker("lab1") as api:
        now = api.info()["Swarm"].get("Cluster", {}).get("ID", "")
    if now and now == _shared_swarm.get("id"):
        return lab
    lab.fresh()
    run = swarmctl("bootstrap", str(lab.inventory))
    assert run.rc == 0, str(run)
    with lab.docker("lab1") as api:
        _shared_swarm["id"] = str(api.inspect_swarm()["ID"])
    return lab


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.fail("end-to-end tests need root (the lab uses network namespaces); deselect them with -m 'not e2e'")
    with running_lab(tmp_path_factory.mktemp("lab"), "--hosts", str(LAB_HOSTS)) as directory:
        yield Lab(directory, labhosts.load_spec(directory))
