"""Day-two planning, pure: rotation progress, autolock and the unlock-key store, the backup's host
and archive, recovery's source and steps. No hosts involved; the lab proves the rest
(tests/e2e/test_day_two.py)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from swarmctl.errors import InputError, Refused
from swarmctl.facts.nodes import NodeView
from swarmctl.facts.raft import Raft, parse_raft
from swarmctl.facts.recovery import HostState, RecoverState
from swarmctl.facts.swarm import BackupState
from swarmctl.inventory import Host, Inventory, SSHSettings, load_inventory
from swarmctl.ops.autolock import (
    AutolockState,
    LockState,
    UnlockKeys,
    load_keys,
    plan_autolock,
    plan_unlock,
    read_autolock,
    save_keys,
)
from swarmctl.ops.backup import manifest, open_backup, plan_backup, read_manifest, seal
from swarmctl.ops.recover import STUCK_AFTER, plan_recover, restore_target, untaken
from swarmctl.ops.rotate import ca_progress, token_changes
from swarmctl.secretstore import Keyring, KeySource, SecretKey
from tests.unit.fakeengine import FakeEngine


def host(name: str, role: str) -> Host:
    return Host(name, f"10.0.0.{name[-1]}", role, MappingProxyType({}), None, SSHSettings())


INV = Inventory(
    Path("hosts.yml"),
    (host("m1", "manager"), host("m2", "manager"), host("m3", "manager"), host("w4", "worker")),
    MappingProxyType({}),
)
KEYS = Keyring(SecretKey(b"k" * 32, "test"), (), "test")


def node(
    i: str, role: str = "manager", leader: bool = False, state: str = "ready", reach: str = "reachable"
) -> NodeView:
    reach = reach if role == "manager" else ""
    spec = {"Role": role, "Availability": "active", "Labels": {}}
    return NodeView(f"N{i}", f"m{i}" if role == "manager" else f"w{i}", role, "active", {}, state,
                    f"10.0.0.{i}", leader, reach, "20.10.24", 9, spec)  # fmt: skip


# -- rotation --------------------------------------------------------------------------------------


def test_tokens_both_unless_one_is_named() -> None:
    assert [c.name for c in token_changes(False, False)] == ["worker join token", "manager join token"]
    assert [c.name for c in token_changes(True, False)] == ["worker join token"]
    assert [c.fields for c in token_changes(False, True)] == [("JoinTokens.Manager",)]


def tls(subject: str, key: str, root: str) -> dict[str, str]:
    return {"CertIssuerSubject": subject, "CertIssuerPublicKey": key, "TrustRoot": root}


def test_ca_progress_counts_certificates_and_roots_as_the_docker_cli_does() -> None:
    swarm = {"TLSInfo": tls("new", "K2", "ROOT2"), "RootRotationInProgress": True}
    nodes = [
        {"ID": "a", "Description": {"TLSInfo": tls("new", "K2", "ROOT2")}},
        {"ID": "b", "Description": {"TLSInfo": tls("new", "K2", "ROOT1")}},  # new cert, old trust root
        {"ID": "c", "Description": {"TLSInfo": tls("old", "K1", "ROOT1")}},
    ]
    p = ca_progress(swarm, nodes)
    assert (p.total, p.certs, p.roots, p.behind, p.done) == (3, 2, 1, ("b", "c"), False)
    done = ca_progress({**swarm, "RootRotationInProgress": False}, nodes[:1])
    assert done.done
    # every node there, but the swarm still rotating: not done
    assert not ca_progress(swarm, nodes[:1]).done


# -- autolock --------------------------------------------------------------------------------------


def test_unlock_keys_are_retired_never_dropped() -> None:
    store = UnlockKeys().with_current("SWMKEY-1-a", "S").with_current("SWMKEY-1-b", "")
    assert store.current == "SWMKEY-1-b" and store.retired == ("SWMKEY-1-a",) and store.swarm_id == "S"
    assert store.with_current("SWMKEY-1-b", "").retired == ("SWMKEY-1-a",)  # the same key: nothing moves
    off = store.retire_current()
    assert off.current == "" and off.retired == ("SWMKEY-1-b", "SWMKEY-1-a") and off.all() == list(off.retired)
    assert "SWMKEY" not in repr(store) and "SWMKEY" not in str(store)


def test_the_store_is_encrypted_and_0600(tmp_path: Path) -> None:
    inv = Inventory(tmp_path / "hosts.yml", INV.hosts, INV.vars)
    path = save_keys(inv, KEYS, UnlockKeys("S", "SWMKEY-1-secret", ("SWMKEY-1-old",)))
    assert path == tmp_path / "secrets" / "swarm-unlock-key.enc"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert b"SWMKEY" not in path.read_bytes()
    assert load_keys(inv, KEYS).all() == ["SWMKEY-1-secret", "SWMKEY-1-old"]
    other = Keyring(SecretKey(b"o" * 32, "other"), (), "other")
    with pytest.raises(InputError):
        load_keys(inv, other)


def state(enabled: bool, stored: bool = True) -> AutolockState:
    return AutolockState("S", 5, {}, enabled, stored)


def test_autolock_plan_follows_the_inventory_and_keeps_the_key_stored() -> None:
    def plan(wanted: bool | None, st: AutolockState) -> list[tuple[str, str]]:
        return [(c.action, c.detail) for c in plan_autolock(wanted, st, "m1")]

    assert plan(None, state(False)) == []
    assert plan(False, state(False)) == []
    assert plan(True, state(False)) == [("update", "autolock on"), ("store", "the swarm's unlock key, encrypted")]
    assert plan(True, state(True)) == []
    assert plan(True, state(True, stored=False)) == [("store", "the swarm's unlock key, encrypted")]
    assert plan(None, state(True, stored=False)) == [("store", "the swarm's unlock key, encrypted")]  # rotated by hand
    assert plan(False, state(True)) == [("update", "autolock off")]


def test_unlock_plan_names_every_locked_manager() -> None:
    plan = plan_unlock(LockState(("m2", "m3"), {"m1": "active", "m2": "locked", "m3": "locked"}, {"w4": "x"}))
    assert [(c.action, c.name) for c in plan.changes] == [("unlock", "m2"), ("unlock", "m3")]
    assert dict(plan.blocked) == {"w4": "x"}


def test_inventory_swarm_autolock(tmp_path: Path) -> None:
    p = tmp_path / "hosts.yml"
    p.write_text("hosts:\n  a: {address: 10.0.0.1, role: manager}\nswarm: {autolock: true}\n")
    assert load_inventory(p).autolock is True
    p.write_text("hosts:\n  a: {address: 10.0.0.1, role: manager}\n")
    assert load_inventory(p).autolock is None
    p.write_text("hosts:\n  a: {address: 10.0.0.1, role: manager}\nswarm: {autolock: 'yes'}\n")
    with pytest.raises(InputError, match=r"swarm\.autolock: expected true or false"):
        load_inventory(p)


# -- backup ----------------------------------------------------------------------------------------


def backup_state(nodes: list[NodeView]) -> BackupState:
    names = {n.id: n.hostname for n in nodes}
    spec = {"EncryptionConfig": {"AutoLockManagers": False}, "CAConfig": {"ForceRotate": 2}}
    swarm = {"ID": "SWARM1234567890", "Spec": spec}
    services = ({"Spec": {"Name": "kafka_zk", "Labels": {"com.docker.stack.namespace": "kafka"}}},
                {"Spec": {"Name": "loose", "Labels": {}}})  # fmt: skip
    return BackupState(INV, "m1", swarm, tuple(nodes), names, services, ("pw",), (), ("kafka_net",), 42)


def test_backup_is_taken_from_a_manager_that_is_not_the_leader() -> None:
    st = backup_state([node("1", leader=True), node("2"), node("3"), node("4", "worker")])
    planned = plan_backup(st)
    assert planned.host == "m2" and not planned.unavailable and planned.plan.warnings == ()
    assert [c.action for c in planned.plan.changes] == ["stop", "archive", "start"]


def test_backup_skips_a_manager_whose_stop_would_cost_the_quorum() -> None:
    # m3 is down: stopping m2 would leave 1 of 3: the swarm would be unavailable
    st = backup_state([node("1", leader=True), node("2"), node("3", state="down", reach="unreachable")])
    with pytest.raises(Refused, match="--yes"):
        plan_backup(st)
    forced = plan_backup(st, yes=True)
    assert forced.unavailable and forced.host == "m2" and "unavailable" in forced.plan.warnings[0]


def test_a_single_manager_needs_yes() -> None:
    st = backup_state([node("1", leader=True)])
    with pytest.raises(Refused, match="unavailable while it is copied"):
        plan_backup(st)
    assert plan_backup(st, yes=True).host == "m1"


def test_backup_archive_round_trip_and_tampering(tmp_path: Path) -> None:
    st = backup_state([node("1", leader=True), node("2"), node("3")])
    data = manifest(st, st.nodes[1], "m2", "20.10.24", datetime(2026, 12, 2, 1, 2, 3, tzinfo=timezone.utc))
    assert data["stacks"] == ["kafka"] and data["services"] == ["kafka_zk", "loose"] and data["raft_index"] == 42
    assert data["ca_force_rotate"] == 2  # the swarm's CAConfig.ForceRotate
    assert (data["swarm_id"], data["node_id"], data["address"], data["created"]) == (
        "SWARM1234567890", "N2", "10.0.0.2", "2026-12-02T01:02:03Z")  # fmt: skip
    path = tmp_path / "b.swarmctl"
    path.write_text(seal(data, b"\x1f\x8b tar.gz bytes", KEYS))
    assert b"tar.gz bytes" not in path.read_bytes()
    assert read_manifest(path) == data
    assert open_backup(path, KEYS) == (data, b"\x1f\x8b tar.gz bytes")
    # a changed manifest fails the restore: it is bound to the archive's encryption
    text = path.read_text().replace('"raft_index":42', '"raft_index":43')
    path.write_text(text)
    with pytest.raises(InputError, match="authentication failed"):
        open_backup(path, KEYS)
    path.write_text("hello\n")
    with pytest.raises(InputError, match="not a swarmctl backup"):
        read_manifest(path)


# -- recover ---------------------------------------------------------------------------------------


def test_parse_raft_finds_the_newest_snapshot_and_wal() -> None:
    listing = (
        "1700000000.5 0000000000000002-0000000000000fa3.snap\n"
        "1700000100.0 0000000000000000-0000000000000000.wal\n"
        "1700000200.0 0000000000000001-0000000000001000.wal\n"
        "1700000300.0 something-else\n"
    )
    raft = parse_raft(listing)
    assert raft == Raft(0xFA3, 0x1000, 1700000200.0)
    assert parse_raft("") is None


def hs(
    name: str, state: str = "active", manager: bool = True, quorum: bool = False, raft: Raft | None = None
) -> HostState:
    return HostState(
        name, state, f"N{name[-1]}" if state != "inactive" else "", manager, quorum, "/var/lib/docker", raft
    )


def recover_state(hosts: dict[str, HostState], unreachable: dict[str, str] | None = None) -> RecoverState:
    return RecoverState(INV, hosts, unreachable or {})


def steps(plan: Any) -> list[tuple[str, str]]:
    return [(c.action, c.name) for c in plan.plan.changes]


def test_recover_from_the_manager_with_the_newest_raft_state() -> None:
    st = recover_state({
        "m1": hs("m1", raft=Raft(100, 200, 5.0)),
        "m2": hs("m2", "error", manager=False, raft=Raft(100, 300, 1.0)),  # newest WAL: the source
        "m3": hs("m3", "inactive", manager=False),  # wiped
        "w4": hs("w4", manager=False),
    })  # fmt: skip
    planned = plan_recover(st)
    assert planned.source == "m2"
    assert steps(planned) == [("force-new-cluster", "m2"), ("leave", "m1"), ("join-manager", "m1"),
                              ("join-manager", "m3"), ("wait", "services")]  # fmt: skip
    assert planned.leave == ("m1",) and planned.join == (("m1", "manager"), ("m3", "manager"))
    assert planned.kept is None  # a survivor's cluster settings cannot be read without a quorum


def test_recover_refuses_with_quorum_unreachable_managers_or_no_state() -> None:
    with pytest.raises(Refused, match="has quorum"):
        plan_recover(recover_state({"m1": hs("m1", quorum=True, raft=Raft(1, 1, 1))}))
    with pytest.raises(Refused, match="cannot be reached: m3"):
        plan_recover(recover_state({"m1": hs("m1", raft=Raft(1, 1, 1))}, {"m3": "ssh: timed out"}))
    with pytest.raises(Refused, match="--from-backup"):
        plan_recover(recover_state({n: hs(n, "inactive", manager=False) for n in ("m1", "m2", "m3", "w4")}))
    # an unreachable worker is only left alone
    planned = plan_recover(recover_state({"m1": hs("m1", raft=Raft(1, 1, 1)), "m2": hs("m2", "inactive"),
                                          "m3": hs("m3", "inactive")}, {"w4": "down"}))  # fmt: skip
    assert planned.source == "m1" and "w4: unreachable" in planned.plan.warnings[0]


def test_stopped_engines_are_started_first_unless_they_hold_raft_state() -> None:
    st = recover_state({"m1": hs("m1", raft=Raft(5, 5, 5)), "m2": hs("m2", "stopped", manager=False),
                        "m3": hs("m3", "stopped", manager=False), "w4": hs("w4", manager=False)})  # fmt: skip
    planned = plan_recover(st)
    assert steps(planned)[:3] == [("start", "m2"), ("start", "m3"), ("force-new-cluster", "m1")]
    assert planned.start == ("m2", "m3") and planned.leave == ()
    holding = recover_state({**st.hosts, "m2": hs("m2", "stopped", manager=False, raft=Raft(9, 9, 9))})
    with pytest.raises(Refused, match="m2 is stopped, and it holds raft state: start it first"):
        plan_recover(holding)


def test_recover_from_a_backup_restores_where_it_was_taken() -> None:
    fresh = {n: hs(n, "inactive", manager=False) for n in ("m1", "m2", "m3", "w4")}
    backup = {"swarm_id": "SWARM1234567890", "raft_index": 42, "host": "m2", "address": "10.0.0.2", "autolock": False}
    planned = plan_recover(recover_state(fresh), backup)
    assert planned.source == "m2" and planned.restore
    assert steps(planned) == [("stop", "m2"), ("restore", "m2"), ("start", "m2"), ("force-new-cluster", "m2"),
                              ("join-manager", "m1"), ("join-manager", "m3"), ("join-worker", "w4"),
                              ("wait", "services")]  # fmt: skip
    # the force-new-cluster keeps the cluster's autolock, and its root CA where the backup says
    # its rotation count (a backup of an earlier release does not: the rotation it then starts is
    # waited out by the joins)
    assert planned.kept == {"EncryptionConfig": {"AutoLockManagers": False}}
    locked = plan_recover(recover_state(fresh), {**backup, "autolock": True, "ca_force_rotate": 1})
    assert ("unlock", "m2") in steps(locked)
    assert locked.kept == {"EncryptionConfig": {"AutoLockManagers": True}, "CAConfig": {"ForceRotate": 1}}
    with pytest.raises(Refused, match="no inventory manager has that address"):
        restore_target(INV, {**backup, "address": "10.9.9.9"}, {})
    assert restore_target(INV, {"host": "m3"}, {}) == "m3"  # a manifest without an address: by name


def test_recover_plan_json_has_the_shape_of_every_plan() -> None:
    fresh = {n: hs(n, "inactive", manager=False) for n in ("m1", "m2", "m3", "w4")}
    backup = {"swarm_id": "S", "raft_index": 1, "address": "10.0.0.1"}
    data = plan_recover(recover_state(fresh), backup).plan.json()
    assert set(data) == {"changes", "warnings", "failures"} and json.loads(json.dumps(data)) == data


class _SwarmOnly(FakeEngine):
    """An engine that answers only what read_autolock asks."""

    def __init__(self, autolock: bool):
        super().__init__()
        self.autolock = autolock

    def inspect_swarm(self) -> dict[str, Any]:
        return {"ID": "S", "Version": {"Index": 3}, "Spec": {"EncryptionConfig": {"AutoLockManagers": self.autolock}}}

    def unlock_key(self) -> str:
        return "SWMKEY-1-x"


def test_the_secrets_key_is_read_only_when_autolock_is_on(tmp_path: Path) -> None:
    bad = tmp_path / "secrets.key"
    bad.write_text("not a key\n")
    bad.chmod(0o644)  # load_key refuses it: readable by others
    source = KeySource({"SWARMCTL_SECRETS_KEY_FILE": str(bad)})
    inv = Inventory(tmp_path / "hosts.yml", INV.hosts, INV.vars)
    off = read_autolock(_SwarmOnly(False), inv, source)
    assert not off.enabled and off.key_stored  # the key file was not touched
    with pytest.raises(InputError, match="readable by others"):
        read_autolock(_SwarmOnly(True), inv, source)


def test_a_task_the_forced_node_never_takes_up_is_named_once_it_stayed_assigned_long_enough() -> None:
    def task(tid: str, state: str) -> dict[str, Any]:
        return {"ID": tid, "Status": {"State": state}}

    seen: dict[str, float] = {}
    assert untaken([task("a", "assigned"), task("b", "running")], seen, 100.0) == []
    assert untaken([task("a", "assigned")], seen, 100.0 + STUCK_AFTER - 1) == []
    assert untaken([task("a", "assigned"), task("c", "assigned")], seen, 100.0 + STUCK_AFTER) == ["a"]
    # taken up meanwhile: forgotten, and a later "assigned" of the same ID counts from then
    assert untaken([task("a", "preparing"), task("c", "assigned")], seen, 100.0 + STUCK_AFTER + 1) == []
    assert untaken([task("a", "assigned")], seen, 100.0 + STUCK_AFTER + 2) == []
    assert seen == {"a": 100.0 + STUCK_AFTER + 2}
