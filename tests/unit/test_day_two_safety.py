"""Day-two safety at unit level: which node a host is, recovery's judgement, backups that cannot be
half, restarts that cannot be forgotten, interrupts that cannot leave an engine stopped.

Each test is named after the scenario of issue 23 it covers (s1 ... s12). Node lists are the ones
recorded from the lab (3 managers, lab1 leading, a worker). Where a test needs hosts, a stand-in
answers only what the code under test asks (engines' info/nodes, a command run by the real local
shell instead of over SSH): SSH and dockerd cannot be part of a unit test; the lab proves the same
paths end to end (tests/e2e/test_safety.py).
"""

from __future__ import annotations

import copy
import io
import json
import os
import signal
import subprocess
import tarfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import MappingProxyType, SimpleNamespace
from typing import Any

import pytest

from swarmctl.errors import InputError, Refused, Unavailable, Unreachable
from swarmctl.facts import raft as facts_raft
from swarmctl.facts.engine_config import EngineFacts
from swarmctl.facts.host import advertise_address, advertise_mismatch
from swarmctl.facts.membership import Membership, parse_membership, refuse_shared_node_ids
from swarmctl.facts.nodes import node_view
from swarmctl.facts.raft import Raft, parse_data_roots, parse_raft_by_root, read_raft
from swarmctl.facts.recovery import HostState, RecoverState, read_recover
from swarmctl.facts.swarm import read_backup_state
from swarmctl.interrupts import finishing
from swarmctl.inventory import Host, Inventory, SSHSettings, load_inventory
from swarmctl.ops import backup as ops_backup
from swarmctl.ops import engine_config as ops_engine
from swarmctl.ops import recover as ops_recover
from swarmctl.ops.engine_config import EngineState, HostChange, plan_engine, quorum_refusal
from swarmctl.ops.recover import plan_recover
from swarmctl.transport.ssh import CommandResult, Outcome
from tests.unit.fakeengine import recorded

NODES = recorded("nodes")  # lab1 (leader), lab2, lab3: managers; lab4: worker
ID = {n["Description"]["Hostname"]: n["ID"] for n in NODES}


def views(nodes: list[dict[str, Any]] = NODES) -> list[Any]:
    return [node_view(n) for n in nodes]


def down(name: str) -> list[dict[str, Any]]:
    """The recorded nodes with one manager's node down and unreachable."""
    out = copy.deepcopy(NODES)
    for n in out:
        if n["Description"]["Hostname"] == name:
            n["Status"]["State"] = "down"
            n["ManagerStatus"]["Reachability"] = "unreachable"
    return out


# Inventory names that are not hostnames, addresses that are DNS names: what real inventories look like
NAMED = {"alpha": "lab2", "beta": "lab3", "gamma": "lab1", "delta": "lab4"}


def named_inventory(tmp_path: Path, engine: str = "") -> Inventory:
    lines = ["hosts:"]
    for name, hostname in NAMED.items():
        role = "worker" if hostname == "lab4" else "manager"
        lines.append(f"  {name}: {{address: {hostname}-{name}.swarm.example.test, role: {role}}}")
    (tmp_path / "hosts.yml").write_text("\n".join(lines) + "\n" + engine)
    return load_inventory(tmp_path / "hosts.yml")


def engine_facts(name: str, config: dict[str, Any] | None = None, pending: bool = False) -> EngineFacts:
    hostname = NAMED[name]
    manager = hostname != "lab4"
    return EngineFacts(name, config or {}, {}, {}, True, Membership("active", ID[hostname], "C", manager),
                       restart_pending=pending)  # fmt: skip


# -- s1: which node is this host ---------------------------------------------------------------------


def test_s1_engine_restarts_put_the_leader_last_by_its_node_id_not_its_name(tmp_path: Path) -> None:
    """gamma is lab1, the leader: it restarts last although no inventory name or address is a hostname."""
    inv = named_inventory(tmp_path, "engine: {log-opts: {max-size: 10m}}\n")
    state = EngineState({n: engine_facts(n) for n in NAMED}, {}, tuple(views()), {})
    planned = plan_engine(inv, state)
    assert [h.host for h in planned.restarts] == ["delta", "alpha", "beta", "gamma"]


def test_s1_a_manager_is_never_counted_among_the_others_it_leaves(tmp_path: Path) -> None:
    """lab3 down; restarting alpha (lab2) would leave only lab1 of 3 managers: refused. Matched by
    name or address, alpha found no node and counted lab2 among "the others" (2 of 3: allowed)."""
    nodes = views(down("lab3"))
    why = quorum_refusal(nodes, ID["lab2"], "alpha")
    assert why.startswith("refusing to restart the engine of alpha: of 3 managers only 1 others are reachable")
    assert quorum_refusal(views(), ID["lab2"], "alpha") == ""  # all up: allowed
    # a manager whose own engine named no node may be any of them: one reachable manager fewer
    assert quorum_refusal(views(), "", "alpha") == ""
    assert quorum_refusal(nodes, "", "alpha").startswith("refusing")


def test_s1_a_dns_name_address_advertises_the_ip_address_its_connection_reached(tmp_path: Path) -> None:
    inv = named_inventory(tmp_path)
    host = inv.host("alpha")
    conn = SimpleNamespace(transport=lambda: SimpleNamespace(getpeername=lambda: ("192.0.2.12", 22)))
    session: Any = SimpleNamespace(pool=SimpleNamespace(connection=lambda h: conn))
    assert advertise_address(session, host) == "192.0.2.12"
    explicit = Host("x", "x.example.test", "worker", MappingProxyType({}), None, SSHSettings(),
                    advertise_address="10.1.2.3")  # fmt: skip
    assert advertise_address(session, explicit) == "10.1.2.3"
    why = advertise_mismatch(host, "203.0.113.9", ["10.0.0.12", "127.0.0.1"])
    assert "not an address of the host (10.0.0.12, 127.0.0.1)" in why and "advertise_address" in why


def test_s1_the_inventory_takes_only_an_ip_address_to_advertise(tmp_path: Path) -> None:
    path = tmp_path / "hosts.yml"
    path.write_text("hosts:\n  a: {address: a.example.test, advertise_address: a.example.test, role: manager}\n")
    with pytest.raises(InputError, match="advertise_address must be an IP address"):
        load_inventory(path)
    path.write_text("hosts:\n  a: {address: a.example.test, advertise_address: 10.0.0.1, role: manager}\n"
                    "  b: {address: 10.0.0.1, role: worker}\n")  # fmt: skip
    with pytest.raises(InputError, match="already used by host 'a'"):
        load_inventory(path)


def test_s1_backup_chooses_its_manager_by_the_node_id_each_manager_reports(tmp_path: Path) -> None:
    inv = named_inventory(tmp_path)
    own = {name: ID[hostname] for name, hostname in NAMED.items()}

    def engine(host: Host) -> Any:
        info = {"Swarm": {"NodeID": own[host.name], "LocalNodeState": "active", "ControlAvailable": host.is_manager}}
        return SimpleNamespace(
            name=host.name, info=lambda: info, nodes=lambda: copy.deepcopy(NODES), services=lambda: [],
            inspect_swarm=lambda: {"ID": "S", "Version": {"Index": 1}}, objects=lambda kind: [],
            networks=lambda filters=None: [])  # fmt: skip

    def fan_out(fn: Callable[[Host], str], hosts: Sequence[Host]) -> dict[str, Outcome[str]]:
        return {h.name: Outcome(h.name, value=fn(h)) for h in hosts}

    session: Any = SimpleNamespace(inventory=inv, fan_out=fan_out, engine=engine, skipped={})
    state = read_backup_state(session)
    assert state.names == {ID[h]: n for n, h in NAMED.items() if h != "lab4"}
    planned = ops_backup.plan_backup(state)
    assert planned.host == "alpha" and planned.node.hostname == "lab2"  # not the leader (gamma)


# -- s2: two hosts, one node ID ----------------------------------------------------------------------


def test_s2_two_hosts_reporting_one_node_id_are_refused_before_any_engine_change(tmp_path: Path) -> None:
    inv = named_inventory(tmp_path, "engine: {log-opts: {max-size: 10m}}\n")
    facts = {n: engine_facts(n) for n in NAMED}
    facts["delta"] = EngineFacts("delta", {}, {}, {}, True, Membership("active", ID["lab1"]))  # a clone of lab1
    with pytest.raises(Refused, match="gamma and delta both report node"):
        plan_engine(inv, EngineState(facts, {}, tuple(views()), {}))
    with pytest.raises(Refused, match="Nothing was changed"):
        refuse_shared_node_ids({"a": "N1", "b": "N2", "c": "N1"})
    refuse_shared_node_ids({"a": "N1", "b": "", "c": ""})  # hosts outside a swarm share nothing


# -- s3: membership, one typed fact ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("swarm", "state", "member", "manager"),
    [
        ({}, "inactive", False, False),
        ({"LocalNodeState": "inactive", "NodeID": ""}, "inactive", False, False),
        ({"LocalNodeState": "pending", "NodeID": "N1"}, "pending", True, False),
        (
            {"LocalNodeState": "active", "NodeID": "N1", "ControlAvailable": True, "Cluster": {"ID": "C"}},
            "active",
            True,
            True,
        ),
        ({"LocalNodeState": "active", "NodeID": "N4", "ControlAvailable": False}, "active", True, False),
        ({"LocalNodeState": "locked", "NodeID": "", "ControlAvailable": False}, "locked", True, False),
        ({"LocalNodeState": "error", "Error": "manager stopped"}, "error", True, False),
        ({"LocalNodeState": "something new"}, "error", True, False),
    ],
)
def test_s3_membership_is_one_parse_of_the_engines_own_word(
    swarm: dict[str, Any], state: str, member: bool, manager: bool
) -> None:
    m = parse_membership({"Swarm": swarm} if swarm else {})
    assert (m.state, m.member, m.manager) == (state, member, manager)


def test_s3_no_module_but_facts_membership_parses_info_swarm() -> None:
    """One definition of "in a swarm": every other module asks facts.membership."""
    root = Path(__file__).resolve().parents[2] / "swarmctl"
    readers = sorted(
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if '"Swarm"' in p.read_text() and "lab" not in p.relative_to(root).parts
    )
    assert readers == ["facts/membership.py"]


# -- s4: recover looks where each host keeps its state -----------------------------------------------


class LocalShell:
    """Runs a host's command with this machine's own shell (the scripts' real sh, find and base64),
    inside a directory that stands for the host's root: what SSH would carry is not the subject."""

    def __init__(self, root: Path, name: str = "m1"):
        self.root = root
        self.host = SimpleNamespace(name=name)

    def run(self, argv: list[str], timeout: float = 30, **_: Any) -> CommandResult:
        argv = [a.replace("/etc/docker/daemon.json", str(self.root / "etc/docker/daemon.json")) for a in argv]
        argv = [*argv[:4], *[str(self.root) + a if a.startswith("/") else a for a in argv[4:]]]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env={"PATH": "/usr/bin:/bin"})
        out = proc.stdout.replace(str(self.root), "")
        return CommandResult(self.host.name, " ".join(argv), proc.returncode, out, proc.stderr)


def raft_files(root: Path, data_root: str) -> None:
    wal = root / data_root.lstrip("/") / "swarm/raft/wal-v3-encrypted"
    wal.mkdir(parents=True)
    (wal / "0000000000000000-0000000000000000.wal").write_bytes(b"raft")


def test_s4_a_stopped_engine_whose_data_root_moved_is_found_holding_raft_state(tmp_path: Path) -> None:
    (tmp_path / "etc/docker").mkdir(parents=True)
    (tmp_path / "etc/docker/daemon.json").write_text(json.dumps({"data-root": "/srv/docker"}))
    raft_files(tmp_path, "/srv/docker")
    shell: Any = LocalShell(tmp_path)
    roots = facts_raft.read_data_roots(shell)
    assert roots == ["/srv/docker", "/var/lib/docker"]
    root, raft = read_raft(shell, roots)
    assert root == "/srv/docker" and raft is not None and raft.wal == 0
    # looked for only under /var/lib/docker, the same manager held nothing
    assert read_raft(shell, ["/var/lib/docker"]) == ("/var/lib/docker", None)


def test_s4_data_roots_come_from_daemon_json_then_dockerds_flags() -> None:
    json_line = "json " + __import__("base64").b64encode(b'{"data-root": "/data/docker/"}').decode()
    assert parse_data_roots(json_line) == ["/data/docker", "/var/lib/docker"]
    assert parse_data_roots("unit /usr/sbin/dockerd -H fd:// --data-root=/srv/d\n") == ["/srv/d", "/var/lib/docker"]
    assert parse_data_roots('default "-g /old/graph --log-level warn"\n') == ["/old/graph", "/var/lib/docker"]
    assert parse_data_roots("json bm90IGpzb24=\n") == ["/var/lib/docker"]  # "not json": names nothing
    listing = "/srv/d\t1.0 0000000000000001-0000000000000010.wal\n/srv/d\t2.0 0000000000000001-0000000000000005.snap\n"
    assert parse_raft_by_root(listing) == {"/srv/d": Raft(5, 16, 2.0)}


class Swarm:
    """Hosts as recover reads them: each an engine (info, nodes) and a shell (raft listings)."""

    def __init__(self, inv: Inventory, states: dict[str, str], quorum_after: int = 0):
        self.inventory = inv
        self.states = states  # host -> LocalNodeState, or "stopped"
        self.quorum_after = quorum_after  # nodes() answers from this call on (0: never)
        self.asked = 0
        self.pool = SimpleNamespace(connection=lambda h: self.shell(h))

    def shell(self, host: Host | str) -> Any:
        name = host if isinstance(host, str) else host.name
        out = "" if self.states[name] == "inactive" else "/var/lib/docker\t1.0 0000000000000001-0000000000000001.wal\n"
        return SimpleNamespace(run=lambda argv, timeout=30: CommandResult(name, "sh", 0, out, ""))

    def engine(self, host: Host | str) -> Any:
        name = host if isinstance(host, str) else host.name
        state = self.states[name]

        def info() -> dict[str, Any]:
            if state == "stopped":
                raise Unreachable(name, "read engine info: connection refused")
            manager = state == "active" and self.inventory.host(name).is_manager
            return {"DockerRootDir": "/var/lib/docker",
                    "Swarm": {"LocalNodeState": state, "NodeID": f"N-{name}", "ControlAvailable": manager}}  # fmt: skip

        def nodes() -> list[dict[str, Any]]:
            self.asked += 1
            if self.quorum_after and self.asked >= self.quorum_after:
                return []
            raise Unavailable(name, "list swarm nodes: rpc error: The swarm does not have a leader")

        return SimpleNamespace(name=name, info=info, nodes=nodes)

    def fan_out(self, fn: Callable[[Host], Any], hosts: Sequence[Host] | None = None) -> dict[str, Outcome[Any]]:
        out: dict[str, Outcome[Any]] = {}
        for h in self.inventory.hosts if hosts is None else hosts:
            try:
                out[h.name] = Outcome(h.name, value=fn(h))
            except Unreachable as e:
                out[h.name] = Outcome(h.name, error=e)
        return out


def three(tmp_path: Path) -> Inventory:
    lines = ["hosts:", *[f"  m{i}: {{address: 10.0.0.{i}, role: manager}}" for i in (1, 2, 3)],
             "  w4: {address: 10.0.0.4, role: worker}"]  # fmt: skip
    (tmp_path / "hosts.yml").write_text("\n".join(lines) + "\n")
    return load_inventory(tmp_path / "hosts.yml")


def test_s4_quorum_is_checked_again_after_starting_engines_before_forcing(tmp_path: Path) -> None:
    """m2 and m3 stopped without raft state: started first. Once they run the swarm has its quorum
    back (say m2 held state after all): nothing is forced."""
    inv = three(tmp_path)
    swarm: Any = Swarm(inv, {"m1": "active", "m2": "inactive", "m3": "inactive", "w4": "active"})
    planned = plan_recover(read_recover(swarm, window=0))
    assert planned.forces and planned.source == "m1"
    swarm.quorum_after = swarm.asked + 1  # the started engines gave the quorum back
    why = ops_recover._changed(planned, swarm, None, 0.1)
    assert why.startswith("nothing was forced: once the stopped engines ran, the swarm has quorum")


# -- s5: locked or pending managers are not lost -----------------------------------------------------


SOME_RAFT = Raft(1, 1, 1.0)


def hs(name: str, state: str, raft: Raft | None = SOME_RAFT) -> HostState:
    return HostState(name, state, f"N{name}", state == "active", False, "/var/lib/docker", raft)


def test_s5_locked_managers_that_complete_a_majority_are_unlocked_never_forced(tmp_path: Path) -> None:
    inv = three(tmp_path)
    st = RecoverState(inv, {"m1": hs("m1", "active"), "m2": hs("m2", "locked"), "m3": hs("m3", "locked"),
                            "w4": hs("w4", "active", None)}, {}, "", 15.0)  # fmt: skip
    planned = plan_recover(st)
    assert not planned.forces and planned.relock == ("m2", "m3")
    assert [(c.action, c.name) for c in planned.plan.changes] == [("unlock", "m2"), ("unlock", "m3"),
                                                                  ("wait", "quorum")]  # fmt: skip
    with pytest.raises(Refused, match=r"once m2, m3 are unlocked \(`swarmctl unlock`\); restoring a backup"):
        plan_recover(st, {"swarm_id": "S", "address": "10.0.0.1"})


def test_s5_pending_managers_of_a_majority_are_waited_for_not_forced(tmp_path: Path) -> None:
    inv = three(tmp_path)
    st = RecoverState(inv, {"m1": hs("m1", "active"), "m2": hs("m2", "pending"), "m3": hs("m3", "inactive", None),
                            "w4": hs("w4", "active", None)}, {}, "", 15.0)  # fmt: skip
    with pytest.raises(Refused, match=r"a majority, yet none had quorum for 15s \(m2 still pending"):
        plan_recover(st)
    # a majority really gone: the survivor forces a new cluster
    gone = RecoverState(inv, {**st.hosts, "m2": hs("m2", "inactive", None)}, {}, "", 15.0)
    assert plan_recover(gone).source == "m1"


# -- s6: no quorum is watched, not sampled -----------------------------------------------------------


def test_s6_quorum_seen_once_while_watched_refuses_the_recovery(tmp_path: Path) -> None:
    inv = three(tmp_path)
    swarm: Any = Swarm(inv, {"m1": "active", "m2": "inactive", "m3": "inactive", "w4": "active"}, quorum_after=3)
    state = read_recover(swarm, window=5.0)
    assert state.quorum_seen == "m1"
    with pytest.raises(Refused, match="lists its nodes for a moment while watched"):
        plan_recover(state)


def test_s6_no_quorum_over_the_whole_window_is_believed(tmp_path: Path) -> None:
    inv = three(tmp_path)
    swarm: Any = Swarm(inv, {"m1": "active", "m2": "inactive", "m3": "inactive", "w4": "active"})
    t0 = time.monotonic()
    state = read_recover(swarm, window=1.5)
    assert time.monotonic() - t0 >= 1.5 and swarm.asked >= 3  # asked again over the window
    assert state.quorum_seen == "" and plan_recover(state).source == "m1"


# -- s9: a backup is whole or it is not written ------------------------------------------------------


def test_s9_a_tar_that_fails_halfway_fails_the_archive(tmp_path: Path) -> None:
    """POSIX sh has no pipefail: `tar | base64` under set -e took base64's status (0)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "tar").write_text("#!/bin/sh\nprintf 'half an archive'\nexit 2\n")
    (bin_dir / "tar").chmod(0o755)
    raft_files(tmp_path, "/root")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    script = facts_raft.ARCHIVE_SCRIPT
    proc = subprocess.run(["sh", "-c", script, "archive", str(tmp_path / "root")], capture_output=True, env=env)
    assert proc.returncode == 4 and b"tar exited with status 2" in proc.stderr
    ok = subprocess.run(["sh", "-c", script, "archive", str(tmp_path / "root")], capture_output=True,
                        env={"PATH": "/usr/bin:/bin"})  # fmt: skip
    assert ok.returncode == 0
    assert facts_raft.archive_problem(__import__("base64").b64decode(ok.stdout)) == ""


def archive(members: list[tuple[str, bytes | None, bytes]]) -> bytes:
    """A tar.gz of (name, data or None for a directory, type) members."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.SYMTYPE:
                info.linkname = "/etc/shadow"
            if data is not None and kind == tarfile.REGTYPE:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None and kind == tarfile.REGTYPE else None)
    return out.getvalue()


WAL = ("swarm/raft/wal-v3-encrypted/0000000000000000-0000000000000001.wal", b"x", tarfile.REGTYPE)


def test_s9_an_archive_without_the_raft_log_is_never_sealed() -> None:
    assert facts_raft.archive_problem(archive([("swarm", None, tarfile.DIRTYPE), WAL])) == ""
    no_raft = archive([("swarm", None, tarfile.DIRTYPE), ("swarm/state.json", b"{}", tarfile.REGTYPE)])
    assert "no raft log" in facts_raft.archive_problem(no_raft)
    assert "not a readable tar.gz" in facts_raft.archive_problem(b"half an archive")


# -- s10: autolock after an engine restart -----------------------------------------------------------


def test_s10_a_manager_back_locked_is_unlocked_with_the_stored_key_and_goes_on() -> None:
    state = {"local": "locked"}
    keys_tried: list[str] = []

    def unlock_swarm(key: str) -> None:
        keys_tried.append(key)
        if key != "SWMKEY-current":
            raise Unavailable("lab2", "unlock the swarm: invalid key")
        state["local"] = "active"

    engine = SimpleNamespace(
        name="lab2", unlock_swarm=unlock_swarm, nodes=lambda: copy.deepcopy(NODES), tasks=lambda filters=None: [],
        info=lambda: {"Swarm": {"LocalNodeState": state["local"], "NodeID": ID["lab2"],
                                "ControlAvailable": state["local"] == "active"}})  # fmt: skip
    session: Any = SimpleNamespace(engine=lambda name: engine)
    change = HostChange("lab2", None, None, (), (), True, in_swarm=True, manager=True, node_id=ID["lab2"])
    host: Any = SimpleNamespace(name="lab2")
    assert ops_engine._back(session, host, change, ["lab1"], ()) == "swarm state locked (autolock: no unlock key given)"
    assert ops_engine._back(session, host, change, ["lab1"], ["SWMKEY-retired", "SWMKEY-current"]) == ""
    assert keys_tried == ["SWMKEY-retired", "SWMKEY-current"] and state["local"] == "active"


def test_s10_an_engine_change_under_autolock_without_the_stored_key_is_refused_before_any_change(
    tmp_path: Path,
) -> None:
    inv = named_inventory(tmp_path, "engine: {log-opts: {max-size: 10m}}\n")
    state = EngineState({n: engine_facts(n) for n in NAMED}, {}, tuple(views()), {}, autolock=True,
                        unlock_keys="no secrets key: set SWARMCTL_SECRETS_KEY_FILE")  # fmt: skip
    planned = plan_engine(inv, state)
    assert [h.host for h in planned.restarts] == ["delta"]  # the worker: it does not lock
    assert "would come back locked" in planned.plan.blocked["gamma"]


# -- s12: the smaller ones ---------------------------------------------------------------------------


def test_s12_a_restart_left_pending_by_a_crash_is_planned_again(tmp_path: Path) -> None:
    """daemon.json already says what the inventory wants (written before a crash), the engine never
    restarted: the marker left on the host brings the restart back into the plan."""
    inv = named_inventory(tmp_path, "engine: {log-opts: {max-size: 10m}}\n")
    written = {"log-opts": {"max-size": "10m"}}
    facts = {n: engine_facts(n, written) for n in NAMED}
    assert plan_engine(inv, EngineState(facts, {}, tuple(views()), {})).restarts == []
    facts["alpha"] = engine_facts("alpha", written, pending=True)
    planned = plan_engine(inv, EngineState(facts, {}, tuple(views()), {}))
    assert [h.host for h in planned.restarts] == ["alpha"]
    assert "stopped before the restart" in planned.plan.changes[-1].detail


@pytest.mark.parametrize(
    ("member", "why"),
    [
        (("swarm/raft/link", None, tarfile.SYMTYPE), "neither a regular file nor a directory"),
        (("swarm/../../etc/cron.d/x", b"x", tarfile.REGTYPE), "outside swarm/"),
        (("/etc/passwd", b"x", tarfile.REGTYPE), "outside swarm/"),
        (("docker/containers/x", b"x", tarfile.REGTYPE), "outside swarm/"),
        (("swarm/dev", None, tarfile.CHRTYPE), "neither a regular file nor a directory"),
    ],
)
def test_s12_a_restore_takes_only_files_and_directories_under_swarm(member: Any, why: str) -> None:
    assert why in facts_raft.archive_problem(archive([WAL, member]))


def test_s12_a_second_ctrl_c_while_the_engine_starts_again_is_held_off() -> None:
    told: list[str] = []
    finished = []
    with pytest.raises(KeyboardInterrupt), finishing("starting the engine of lab2 again", told.append):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        finished.append(True)  # the step ran to its end
    assert finished == [True]
    assert told == ["interrupted: still starting the engine of lab2 again, so that it is not left half done"] * 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_s12_recover_refuses_a_backup_archive_with_anything_but_swarm_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = archive([WAL, ("swarm/raft/link", None, tarfile.SYMTYPE)])
    monkeypatch.setattr(ops_recover, "open_backup", lambda path, keys: ({"swarm_id": "S"}, bad))
    monkeypatch.setattr(ops_recover, "keyring", lambda: None)
    touched: list[str] = []

    def fan_out(*_: Any) -> dict[str, Any]:
        touched.append("read")
        return {}

    session: Any = SimpleNamespace(fan_out=fan_out)
    with pytest.raises(InputError, match="cannot be restored: it holds 'swarm/raft/link'"):
        ops_recover.recover(session, tmp_path / "b.swarmctl")
    assert touched == []  # refused before any host was read, let alone changed
