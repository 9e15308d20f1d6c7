"""`swarmctl bootstrap` and `status` against real namespaced hosts (sshd + dockerd + swarm)."""

from __future__ import annotations

import ipaddress
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import paramiko
import pytest

from swarmctl.errors import SocketRefused
from swarmctl.inventory import Host, load_inventory
from swarmctl.transport.engine import ENGINE_SOCKET, DockerEngine
from swarmctl.transport.ssh import Connection
from swarmctl_lab import hosts as labhosts
from tests.e2e.conftest import Lab
from tests.helpers import assert_no_traceback, edit_node, swarmctl, wait_for

# these tests make and unmake swarms all the time: they run after the stack tests (see conftest)
pytestmark = pytest.mark.churn

THREE = {"lab1": "manager", "lab2": "worker", "lab3": "worker"}


def nodes_by_hostname(lab: Lab) -> dict[str, dict]:
    with lab.docker("lab1") as api:
        return {n["Description"]["Hostname"]: n for n in api.nodes()}


def test_bootstrap_three_hosts_then_rerun_is_a_noop(lab: Lab, tmp_path: Path) -> None:
    lab.reset()
    inv = lab.write_inventory(tmp_path / "hosts.yml", THREE)
    first = swarmctl("bootstrap", str(inv), "--json", cwd=tmp_path)
    assert first.rc == 0, str(first)
    actions = {(c["name"], c["action"]) for c in first.json()["changes"]}
    assert {("lab1", "init"), ("lab2", "join-worker"), ("lab3", "join-worker")} <= actions
    assert {("lab1", "label"), ("lab2", "label"), ("lab3", "label")} <= actions
    assert any("IPVS" in w for w in first.json()["warnings"])  # this lab's kernel has no ip_vs

    nodes = nodes_by_hostname(lab)
    assert set(nodes) == {"lab1", "lab2", "lab3"}
    assert nodes["lab1"]["Spec"]["Role"] == "manager" and nodes["lab1"]["ManagerStatus"]["Leader"]
    assert nodes["lab2"]["Spec"]["Role"] == "worker"
    assert {h: n["Spec"]["Labels"] for h, n in nodes.items()} == {
        "lab1": {"kafka.slot": "1"},
        "lab2": {"kafka.slot": "2"},
        "lab3": {"kafka.slot": "3"},
    }
    assert all(n["Status"]["State"] == "ready" for n in nodes.values())
    versions = {h: n["Version"]["Index"] for h, n in nodes.items()}

    # no -i: the inventory last bootstrapped in this directory is used
    again = swarmctl("bootstrap", "--json", cwd=tmp_path)
    assert again.rc == 0, str(again)
    assert again.json()["changes"] == []
    human = swarmctl("bootstrap", cwd=tmp_path)
    assert human.rc == 0 and "nothing to do" in human.stderr, str(human)
    # a no-op run wrote nothing: every node object is at the version it had
    assert {h: n["Version"]["Index"] for h, n in nodes_by_hostname(lab).items()} == versions

    with lab.docker("lab1") as api:
        tokens = api.inspect_swarm()["JoinTokens"]
    for run in (first, again, human):
        for token in tokens.values():
            assert token not in run.stdout and token not in run.stderr


def test_a_noop_the_swarm_proves_reads_one_manager_and_what_changed_sends_it_back_to_every_host(
    lab: Lab, tmp_path: Path
) -> None:
    lab.reset()
    inv = lab.write_inventory(tmp_path / "hosts.yml", THREE)
    assert swarmctl("bootstrap", str(inv), cwd=tmp_path).rc == 0
    with lab.docker("lab1") as api:
        assert api.inspect_swarm()["Spec"]["Labels"].get("io.swarmctl.bootstrap")  # the record of this run
    # nothing changed: the swarm read through lab1 proves it, and lab2, lab3 are not asked
    with lab.frozen_sshd("lab2"), lab.frozen_sshd("lab3"):  # asked, they would never answer
        noop = swarmctl("bootstrap", str(inv), "-v", "--json", cwd=tmp_path, timeout=60)
    assert noop.rc == 0 and noop.json()["changes"] == [], str(noop)
    assert "as the swarm read through lab1 proves" in noop.stderr, noop.stderr
    # a label taken off by hand: the swarm no longer proves it, every host is read and it goes back
    with lab.docker("lab1") as api:
        edit_node(api, "lab2", lambda spec: spec.update(Labels={}))
    healed = swarmctl("bootstrap", str(inv), "-v", "--json", cwd=tmp_path)
    assert healed.rc == 0, str(healed)
    assert [(c["name"], c["action"]) for c in healed.json()["changes"]] == [("lab2", "label")]
    assert "every host is read: nodes to update" in healed.stderr, healed.stderr
    # a host whose engine is down is no Ready node: read, and named
    assert labhosts.host_exec(lab.spec, "lab3", ["systemctl", "stop", "docker"]).returncode == 0
    try:
        wait_for("lab3 down", lambda: nodes_by_hostname(lab)["lab3"]["Status"]["State"], lambda s: s == "down",
                 timeout=60)  # fmt: skip
        down = swarmctl("bootstrap", str(inv), "--json", cwd=tmp_path)
        assert down.rc == 1 and {f["host"] for f in down.json()["failures"]} == {"lab3"}, str(down)
    finally:
        assert labhosts.host_exec(lab.spec, "lab3", ["systemctl", "start", "docker"]).returncode == 0


def test_added_host_is_the_only_change(lab: Lab, tmp_path: Path) -> None:
    lab.reset()
    three = swarmctl("bootstrap", str(lab.write_inventory(tmp_path / "three.yml", THREE)), cwd=tmp_path)
    assert three.rc == 0, str(three)
    four = lab.write_inventory(tmp_path / "four.yml", {**THREE, "lab4": "worker"})
    run = swarmctl("bootstrap", str(four), "--json", cwd=tmp_path)
    assert run.rc == 0, str(run)
    assert run.json()["changes"] == [
        {"kind": "node", "name": "lab4", "action": "join-worker", "fields": [], "detail": "as worker"}
    ]
    assert set(nodes_by_hostname(lab)) == {"lab1", "lab2", "lab3", "lab4"}


def test_unreachable_host_is_named_and_the_others_are_bootstrapped(lab: Lab, tmp_path: Path) -> None:
    lab.reset()
    # .99 is on the lab bridge's subnet but no host answers there: a machine that is down
    down = ipaddress.ip_network(lab.spec.subnet).network_address + 99
    ghost = f"  ghost: {{address: {down}, role: worker, ssh: {{connect_timeout: 3}}}}"
    inv = lab.write_inventory(tmp_path / "hosts.yml", THREE, extra_hosts=ghost)
    run = swarmctl("bootstrap", str(inv), "--json", cwd=tmp_path)
    assert run.rc == 1, str(run)
    assert_no_traceback(run)
    failures = run.json()["failures"]
    assert [f["host"] for f in failures] == ["ghost"]
    assert "cannot connect" in failures[0]["error"]
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("error: bootstrap failed on 1 host: ghost (cannot connect"), last
    assert set(nodes_by_hostname(lab)) == {"lab1", "lab2", "lab3"}


def _replace_key(known_hosts: Path, address: str, tmp_path: Path) -> Path:
    other = tmp_path / "otherkey"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kind, b64 = other.with_suffix(".pub").read_text().split()[:2]
    lines = [
        (f"{address} {kind} {b64}" if line.split()[0] == address else line)
        for line in known_hosts.read_text().splitlines()
    ]
    out = tmp_path / "known_hosts"
    out.write_text("\n".join(lines) + "\n")
    return out


def test_changed_host_key_is_refused_loudly(lab: Lab, tmp_path: Path) -> None:
    lab.reset()
    known = _replace_key(lab.dir / "known_hosts", lab.host("lab2").address, tmp_path)
    inv = lab.write_inventory(tmp_path / "hosts.yml", THREE, ssh={"known_hosts": str(known)})
    run = swarmctl("bootstrap", str(inv), cwd=tmp_path)
    assert run.rc == 1, str(run)
    assert "lab2 (HOST KEY CHANGED" in run.stderr and "man-in-the-middle" in run.stderr, str(run)
    assert lab.swarm_state("lab2") == "inactive"  # nothing was done on the host we could not trust
    assert lab.swarm_state("lab3") == "active"


def test_unknown_host_key_rejected_by_default_recorded_with_accept_new(lab: Lab, tmp_path: Path) -> None:
    lab.reset()
    known = tmp_path / "known_hosts"
    lab3 = lab.host("lab3").address
    known.write_text(
        "".join(
            line + "\n"
            for line in (lab.dir / "known_hosts").read_text().splitlines()
            if not line.startswith(lab3 + " ")
        )
    )
    inv = lab.write_inventory(tmp_path / "hosts.yml", THREE, ssh={"known_hosts": str(known)})
    rejected = swarmctl("bootstrap", str(inv), cwd=tmp_path)
    assert rejected.rc == 1, str(rejected)
    assert "lab3 (unknown host key" in rejected.stderr, str(rejected)
    assert lab3 not in known.read_text()

    inv2 = lab.write_inventory(
        tmp_path / "accept.yml", THREE, ssh={"known_hosts": str(known), "host_key_policy": "accept-new"}
    )
    accepted = swarmctl("bootstrap", str(inv2), cwd=tmp_path)
    assert accepted.rc == 0, str(accepted)
    assert any(line.startswith(lab3 + " ssh-ed25519 ") for line in known.read_text().splitlines())
    # the recorded key is the real one: a strict run now succeeds
    strict = swarmctl("bootstrap", str(inv), "--json", cwd=tmp_path)
    assert strict.rc == 0 and strict.json()["changes"] == [], str(strict)


def test_host_in_another_swarm_needs_force(lab: Lab, tmp_path: Path) -> None:
    lab.reset()
    with lab.docker("lab4") as api:
        api.init_swarm(advertise_addr=lab.host("lab4").address)
    inv = lab.write_inventory(tmp_path / "hosts.yml", {"lab1": "manager", "lab4": "worker"})
    refused = swarmctl("bootstrap", str(inv), cwd=tmp_path)
    assert refused.rc == 1, str(refused)
    assert "lab4 (already in another swarm" in refused.stderr and "--force" in refused.stderr
    assert set(nodes_by_hostname(lab)) == {"lab1"}

    forced = swarmctl("bootstrap", str(inv), "--force", "--json", cwd=tmp_path)
    assert forced.rc == 0, str(forced)
    assert ("lab4", "leave") in {(c["name"], c["action"]) for c in forced.json()["changes"]}
    assert set(nodes_by_hostname(lab)) == {"lab1", "lab4"}


def test_roles_availability_and_prune(lab: Lab, tmp_path: Path) -> None:
    lab.reset()
    all4 = {"lab1": "manager", "lab2": "manager", "lab3": "manager", "lab4": "worker"}
    run = swarmctl("bootstrap", str(lab.write_inventory(tmp_path / "a.yml", all4)), cwd=tmp_path)
    assert run.rc == 0, str(run)
    assert sum(n["Spec"]["Role"] == "manager" for n in nodes_by_hostname(lab).values()) == 3

    # lab3 becomes a drained worker; lab4 leaves the inventory
    text = lab.write_inventory(tmp_path / "b.yml", {"lab1": "manager", "lab2": "manager", "lab3": "worker"}).read_text()
    b = tmp_path / "b.yml"
    b.write_text(text.replace("role: worker,", "role: worker, availability: drain,"))
    run = swarmctl("bootstrap", str(b), "--json", cwd=tmp_path)
    assert run.rc == 0, str(run)
    assert {(c["name"], c["action"]) for c in run.json()["changes"]} == {("lab3", "demote"), ("lab3", "availability")}
    assert any("lab4" in w and "--prune" in w for w in run.json()["warnings"])
    nodes = nodes_by_hostname(lab)
    assert nodes["lab3"]["Spec"]["Role"] == "worker" and nodes["lab3"]["Spec"]["Availability"] == "drain"
    assert "lab4" in nodes  # left alone without --prune

    pruned = swarmctl("bootstrap", str(b), "--prune", "--json", cwd=tmp_path)
    assert pruned.rc == 0, str(pruned)
    assert ("lab4", "remove") in {(c["name"], c["action"]) for c in pruned.json()["changes"]}
    assert set(nodes_by_hostname(lab)) == {"lab1", "lab2", "lab3"}


def test_status(lab: Lab, tmp_path: Path) -> None:
    lab.reset()
    inv = lab.write_inventory(tmp_path / "hosts.yml", THREE)
    assert swarmctl("bootstrap", str(inv), cwd=tmp_path).rc == 0
    st = swarmctl("status", "--json", cwd=tmp_path)
    assert st.rc == 0, str(st)
    data = st.json()
    nodes = {n["hostname"]: n for n in data["nodes"]}
    assert set(nodes) == {"lab1", "lab2", "lab3"}
    assert nodes["lab1"]["role"] == "manager" and nodes["lab1"]["leader"] is True
    assert nodes["lab2"]["role"] == "worker" and nodes["lab2"]["leader"] is False
    assert all(n["state"] == "ready" and n["availability"] == "active" for n in nodes.values())
    assert nodes["lab3"]["labels"] == {"kafka.slot": "3"} and nodes["lab3"]["name"] == "lab3"
    assert data["services"] == []

    with lab.docker("lab1") as api:
        api.create_service(
            {"ContainerSpec": {"Image": "swarmctl-test/none:1", "Command": ["true"]}},
            name="status-probe",
            mode={"Replicated": {"Replicas": 0}},
        )
    try:
        human = swarmctl("status", cwd=tmp_path)
        assert human.rc == 0, str(human)
        assert "lab1" in human.stdout and "manager (leader)" in human.stdout
        assert "status-probe" in human.stdout and "0/0" in human.stdout
    finally:
        with lab.docker("lab1") as api:
            api.remove_service("status-probe")


def test_non_root_user_through_sudo(lab: Lab, tmp_path: Path) -> None:
    lab.reset()
    # every lab host has a user `deploy` with passwordless sudo and the lab's key
    inv = lab.write_inventory(tmp_path / "hosts.yml", THREE, ssh={"user": "deploy"})
    run = swarmctl("bootstrap", str(inv), cwd=tmp_path)
    assert run.rc == 0, str(run)
    assert set(nodes_by_hostname(lab)) == {"lab1", "lab2", "lab3"}

    without = lab.write_inventory(tmp_path / "nosudo.yml", THREE, ssh={"user": "deploy", "sudo": "false"})
    denied = swarmctl("status", "-i", str(without), cwd=tmp_path)
    assert denied.rc == 1, str(denied)
    assert_no_traceback(denied)
    assert "permission denied" in denied.stderr and "set `sudo: true`" in denied.stderr, str(denied)


class Recorded(Connection):
    """A host's SSH connection that records the commands whose channels it opens."""

    def __init__(self, host: Host) -> None:
        super().__init__(host)
        self.commands: list[str] = []

    def open_channel(
        self, argv: Sequence[str] | str, sudo: bool | None = None, pty: tuple[str, int, int] | None = None
    ) -> paramiko.Channel:
        self.commands.append(self.wrap(argv, sudo))
        return super().open_channel(argv, sudo, pty)


def test_api_channels_open_the_engines_socket_through_openssh_and_fall_back(lab: Lab, tmp_path: Path) -> None:
    # swarmctl writes the socket channel's open request itself (paramiko does not know that channel
    # type): OpenSSH drops the whole connection on a request it cannot parse, so the connection
    # going on after each answer proves the request's layout
    root = load_inventory(lab.write_inventory(tmp_path / "root.yml", {"lab1": "manager"})).hosts[0]
    c = Recorded(root)
    with c:
        channel = c.open_socket(ENGINE_SOCKET)
        channel.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n")
        assert channel.recv(64).startswith(b"HTTP/1.1 200 OK"), "the engine answers on the socket's channel"
        channel.close()
        with pytest.raises(SocketRefused) as absent:
            c.open_socket("/run/swarmctl-test-absent.sock")
        assert absent.value.host == "lab1" and "would not open /run/swarmctl-test-absent.sock" in absent.value.message
        assert c.run(["true"]).ok
        c.commands.clear()
        engine = DockerEngine(root, c)
        try:
            assert engine.info()["Name"] == "lab1" and engine.version()["Version"]
        finally:
            engine.close()
        assert c.commands == [], "no command was started for the engine's channels"

    deploy = {"user": "deploy", "sudo": "false"}
    user = load_inventory(lab.write_inventory(tmp_path / "user.yml", {"lab1": "manager"}, ssh=deploy)).hosts[0]
    c = Recorded(user)
    with c:
        with pytest.raises(SocketRefused):  # not in the docker group: sshd may not open the socket
            c.open_socket(ENGINE_SOCKET)
        assert c.run(["true"]).ok

    sudo = load_inventory(lab.write_inventory(tmp_path / "sudo.yml", {"lab1": "manager"}, ssh={"user": "deploy"}))
    c = Recorded(sudo.hosts[0])
    with c:
        engine = DockerEngine(sudo.hosts[0], c)
        try:
            assert engine.info()["Name"] == "lab1"
        finally:
            engine.close()
        assert c.commands == ["sudo -n -- sh -c 'docker system dial-stdio'"]


def test_blocked_swarm_port_fails_preflight_for_the_hosts_behind_it(lab: Lab, tmp_path: Path) -> None:
    lab.reset()
    rule = ["INPUT", "-p", "tcp", "--dport", "2377", "-j", "DROP"]
    assert labhosts.host_exec(lab.spec, "lab1", ["iptables", "-w", "-I", *rule]).returncode == 0
    try:
        inv = lab.write_inventory(tmp_path / "hosts.yml", THREE)
        run = swarmctl("bootstrap", str(inv), "--json", cwd=tmp_path)
        assert run.rc == 1, str(run)
        failures = {f["host"]: f["error"] for f in run.json()["failures"]}
        assert set(failures) == {"lab2", "lab3"}
        for error in failures.values():
            assert f"cannot reach lab1 ({lab.host('lab1').address}) port 2377/tcp: timeout" in error
        # nothing was attempted on the hosts that failed preflight
        assert lab.swarm_state("lab2") == lab.swarm_state("lab3") == "inactive"
    finally:
        assert labhosts.host_exec(lab.spec, "lab1", ["iptables", "-w", "-D", *rule]).returncode == 0
    healed = swarmctl("bootstrap", str(inv), cwd=tmp_path)
    assert healed.rc == 0, str(healed)
    assert set(nodes_by_hostname(lab)) == {"lab1", "lab2", "lab3"}


def test_host_without_the_docker_cli_fails_alone_with_the_reason(lab: Lab, tmp_path: Path) -> None:
    lab.reset()
    inv = lab.write_inventory(tmp_path / "hosts.yml", THREE)
    with lab.without_command("lab3", "docker", tmp_path):
        run = swarmctl("bootstrap", str(inv), "--json", cwd=tmp_path)
        assert run.rc == 1, str(run)
        assert_no_traceback(run)
        failures = {f["host"]: f["error"] for f in run.json()["failures"]}
        assert set(failures) == {"lab3"}, str(run)
        assert "no docker CLI on the host" in failures["lab3"] and "dial-stdio" in failures["lab3"]
        assert "docker-cli" in failures["lab3"] and "\n" not in failures["lab3"]
        # the others were bootstrapped; nothing ran on lab3 beyond reading its facts
        assert set(nodes_by_hostname(lab)) == {"lab1", "lab2"}
        assert lab.swarm_state("lab3") == "inactive"
    healed = swarmctl("bootstrap", str(inv), cwd=tmp_path)
    assert healed.rc == 0, str(healed)
    assert set(nodes_by_hostname(lab)) == {"lab1", "lab2", "lab3"}


def swarm_snapshot(lab: Lab) -> dict[str, object]:
    """Everything bootstrap could change: each host's swarm state, each node's role, availability,
    labels and version."""
    nodes = {
        h: (n["ID"], n["Spec"]["Role"], n["Spec"]["Availability"], n["Spec"].get("Labels"), n["Version"]["Index"])
        for h, n in nodes_by_hostname(lab).items()
    }
    return {"states": {name: lab.swarm_state(name) for name in lab.names}, "nodes": nodes}


def test_plan_changes_nothing_and_apply_then_does_what_it_showed(lab: Lab, tmp_path: Path) -> None:
    lab.reset()
    start = swarmctl("bootstrap", str(lab.write_inventory(tmp_path / "two.yml", {"lab1": "manager", "lab2": "worker"})))
    assert start.rc == 0, str(start)
    # lab3 joins, lab2 is drained and loses the label the new inventory does not give it (--prune)
    text = lab.write_inventory(tmp_path / "three.yml", THREE).read_text()
    inv = tmp_path / "three.yml"
    lab2 = lab.host("lab2").address
    old = f'lab2: {{address: {lab2}, role: worker, labels: {{kafka.slot: "2"}}}}'
    assert old in text
    inv.write_text(text.replace(old, f"lab2: {{address: {lab2}, role: worker, availability: drain, labels: {{}}}}"))
    before = swarm_snapshot(lab)

    plan = swarmctl("bootstrap", str(inv), "--plan", "--json", "--prune", cwd=tmp_path)
    assert plan.rc == 0, str(plan)
    planned = plan.json()["changes"]
    assert {(c["name"], c["action"]) for c in planned} == {
        ("lab3", "join-worker"),
        ("lab3", "label"),
        ("lab2", "availability"),
        ("lab2", "unlabel"),
    }, planned
    human = swarmctl("bootstrap", str(inv), "--plan", "--prune", cwd=tmp_path)
    assert human.rc == 0 and "1. join-worker node lab3 (as worker)" in human.stdout, str(human)
    assert swarm_snapshot(lab) == before  # nothing changed: same states, nodes, versions
    assert not (tmp_path / ".swarmctl").exists()  # a plan does not even remember the inventory

    applied = swarmctl("bootstrap", str(inv), "--json", "--prune", cwd=tmp_path)
    assert applied.rc == 0, str(applied)
    assert applied.json()["changes"] == planned
    nodes = nodes_by_hostname(lab)
    assert nodes["lab2"]["Spec"]["Availability"] == "drain" and not nodes["lab2"]["Spec"].get("Labels")
    assert nodes["lab3"]["Spec"]["Labels"] == {"kafka.slot": "3"}
    again = swarmctl("bootstrap", str(inv), "--plan", "--json", "--prune", cwd=tmp_path)
    assert again.rc == 0 and again.json()["changes"] == [], str(again)


ALL4 = {"lab1": "manager", "lab2": "manager", "lab3": "manager", "lab4": "worker"}


def forget_record(lab: Lab) -> None:
    """The swarm's record of the last bootstrap removed: the next run reads every host."""
    with lab.docker("lab1") as api:
        swarm = api.inspect_swarm()
        spec = swarm["Spec"]
        spec["Labels"] = {k: v for k, v in (spec.get("Labels") or {}).items() if k != "io.swarmctl.bootstrap"}
        api.update_swarm(swarm["Version"]["Index"], spec)


def test_prune_and_force_refuse_while_a_manager_cannot_be_reached(lab: Lab, tmp_path: Path) -> None:
    lab.reset()
    inv = lab.write_inventory(tmp_path / "hosts.yml", ALL4, ssh={"connect_timeout": "5"})
    assert swarmctl("bootstrap", str(inv), cwd=tmp_path).rc == 0
    before = lab.node_table()
    lab.stop_sshd("lab3")
    try:
        for flag in ("--prune", "--force"):
            run = swarmctl("bootstrap", str(inv), flag, cwd=tmp_path)
            assert run.rc == 1, str(run)
            assert_no_traceback(run)
            assert f"refusing {flag} while inventory hosts cannot be checked: lab3 (cannot connect" in run.stderr
            assert "take them out of the inventory, or run without" in run.stderr  # what to do instead
            assert lab.node_table() == before  # same IDs, roles, availability: nothing was done
        # without them: the swarm vouches for this inventory and lab3's node is Ready, so the swarm
        # proves there is nothing to do (lab3 is not asked)
        proven = swarmctl("bootstrap", str(inv), "-v", "--json", cwd=tmp_path)
        assert proven.rc == 0 and proven.json()["changes"] == [], str(proven)
        assert "as the swarm read through lab1 proves" in proven.stderr and lab.node_table() == before
        # without that record every host is read: the others are bootstrapped, lab3 is named and its
        # node left alone, not pruned
        forget_record(lab)
        plain = swarmctl("bootstrap", str(inv), "--json", cwd=tmp_path)
        assert plain.rc == 1 and [f["host"] for f in plain.json()["failures"]] == ["lab3"], str(plain)
        assert plain.json()["changes"] == [] and lab.node_table() == before
    finally:
        lab.start_sshd("lab3")


def test_s8_a_frozen_sshd_is_named_within_connect_timeout_and_the_others_are_done(lab: Lab, tmp_path: Path) -> None:
    lab.reset()
    inv = lab.write_inventory(tmp_path / "hosts.yml", ALL4, ssh={"connect_timeout": "5"})
    assert swarmctl("bootstrap", str(inv), cwd=tmp_path).rc == 0
    # the inventory now wants a label on lab4: the change the others must still get
    labelled = tmp_path / "labelled.yml"
    labelled.write_text(inv.read_text().replace("role: worker, labels: {}", 'role: worker, labels: {zone: "b"}'))
    with lab.frozen_sshd("lab1"):
        t0 = time.monotonic()
        st = swarmctl("status", "-i", str(labelled), "--json", timeout=60)
        took = time.monotonic() - t0
        assert st.rc == 0 and took < 5 + 30, (took, str(st))
        assert st.json()["manager"] == "lab2" and st.json()["skipped"][0]["host"] == "lab1", str(st)
        t0 = time.monotonic()
        boot = swarmctl("bootstrap", str(labelled), "--json", cwd=tmp_path, timeout=120)
        took = time.monotonic() - t0
    assert boot.rc == 1 and took < 5 + 30, (took, str(boot))
    failures = {f["host"]: f["error"] for f in boot.json()["failures"]}
    assert list(failures) == ["lab1"] and "timed out" in failures["lab1"], str(boot)
    assert ("lab4", "label") in {(c["name"], c["action"]) for c in boot.json()["changes"]}
    with lab.docker("lab2") as api:
        nodes = {n["Description"]["Hostname"]: n for n in api.nodes()}
    assert nodes["lab4"]["Spec"]["Labels"] == {"zone": "b"}
