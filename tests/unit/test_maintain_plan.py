"""maintain, drain and activate: the plan from a state (nodes, services, tasks shaped like the
engine's) - which services move first, which only the host can run, the order of hosts - pure, no
root. The apply (replacements first, no replica lost, engines restarted one at a time) is proven
end to end on the lab by tests/e2e/test_maintain.py; the streamed command output here against the
in-process SSH server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from swarmctl.errors import InputError, Refused
from swarmctl.facts.nodes import node_view
from swarmctl.inventory import Inventory, load_inventory
from swarmctl.ops.maintain import MaintainState, Work, plan_activate, plan_maintain, shares_on
from swarmctl.transport.ssh import Connection
from tests.unit.sshserver import ssh_server
from tests.unit.test_ssh_host_keys import lab_host


def inventory(tmp_path: Path) -> Inventory:
    path = tmp_path / "hosts.yml"
    path.write_text(
        "hosts:\n"
        + "".join(
            f"  lab{i}: {{address: 10.0.0.{i}, role: {'manager' if i == 1 else 'worker'}}}\n" for i in (1, 2, 3, 4)
        )
    )
    return load_inventory(path)


def node(i: int, role: str = "worker", availability: str = "active", state: str = "ready", **labels: str) -> Any:
    return node_view({
        "ID": f"n{i}", "Version": {"Index": 10 + i}, "Description": {"Hostname": f"lab{i}"},
        "Spec": {"Role": role, "Availability": availability, "Labels": dict(labels)},
        "Status": {"State": state, "Addr": f"10.0.0.{i}"},
        "ManagerStatus": {"Leader": True, "Reachability": "reachable"} if role == "manager" else {},
    })  # fmt: skip


def service(sid: str, name: str, replicas: int | None = 1, constraints: tuple[str, ...] = (), max_per_node: int = 0,
            check: str = "") -> dict[str, Any]:  # fmt: skip
    placement: dict[str, Any] = {"Constraints": list(constraints)}
    if max_per_node:
        placement["MaxReplicas"] = max_per_node
    labels = {"com.docker.stack.namespace": name.split("_")[0]} if "_" in name else {}
    if check:
        labels["io.swarmctl.check"] = check
    mode: dict[str, Any] = {"Replicated": {"Replicas": replicas}} if replicas is not None else {"Global": {}}
    template = {"ContainerSpec": {"Image": "img"}, "Placement": placement}
    return {"ID": sid, "Spec": {"Name": name, "Labels": labels, "Mode": mode, "TaskTemplate": template}}


def task(sid: str, node_id: str, state: str = "running") -> dict[str, Any]:
    return {"ID": f"t-{sid}-{node_id}", "ServiceID": sid, "NodeID": node_id, "DesiredState": "running",
            "Status": {"State": state}}  # fmt: skip


NODES = (node(1, "manager"), node(2, **{"kafka.slot": "2"}), node(3, **{"kafka.slot": "3"}), node(4))
WEB = service("web", "app_web", 4)
ZK2 = service("zk2", "kafka_zookeeper-2", 1, ("node.labels.kafka.slot == 2",), check="zookeeper")
KAFKA2 = service("k2", "kafka_kafka-2", 1, ("node.labels.kafka.slot == 2",), check="kafka")
AGENT = service("agent", "ops_agent", None)
TASKS = tuple([task("web", f"n{i}") for i in (1, 2, 3, 4)] + [task("zk2", "n2"), task("k2", "n2")]
              + [task("agent", f"n{i}") for i in (1, 2, 3, 4)])  # fmt: skip


def state(services: tuple[dict[str, Any], ...] = (WEB, ZK2, KAFKA2, AGENT), tasks: tuple[Any, ...] = TASKS,
          nodes: tuple[Any, ...] = NODES, unreachable: dict[str, str] | None = None) -> MaintainState:  # fmt: skip
    return MaintainState({f"lab{i}": f"n{i}" for i in (1, 2, 3, 4)}, unreachable or {}, nodes, services, tasks)


def steps(plan: Any) -> list[tuple[str, str, str]]:
    return [(c.action, c.name, c.detail) for c in plan.plan.changes]


def test_replacements_start_elsewhere_before_the_drain_and_the_count_goes_back_after(tmp_path: Path) -> None:
    planned = plan_maintain(inventory(tmp_path), ["lab4"], state(), Work(("true",)))
    assert steps(planned) == [
        ("availability", "lab4", "pause: no new tasks"),
        ("scale", "app_web", "4 -> 5: started elsewhere first"),
        ("availability", "lab4", "drain: its tasks stop"),
        ("scale", "app_web", "5 -> 4"),
        ("run", "lab4", "true"),
        ("wait", "lab4", "until Ready"),
        ("availability", "lab4", "active"),
        ("wait", "services", "until every service runs all its tasks"),
    ]
    # a global service runs one task per node: it stops with the drain and is not scaled
    (host,) = planned.hosts
    assert [s.service for s in host.moved] == ["app_web"] and [s.mode for s in host.shares] == ["replicated", "global"]


def test_a_task_still_starting_on_the_host_is_replaced_first_like_a_running_one(tmp_path: Path) -> None:
    # seen on a loaded lab: a web task "starting" on lab2 at plan time (its healthcheck not yet
    # passed) counted as none, so the drain took it with no replacement started first
    others = tuple(t for t in TASKS if t["ID"] != "t-web-n4")
    tasks = (*others, task("web", "n4", "starting"))
    planned = plan_maintain(inventory(tmp_path), ["lab4"], state(tasks=tasks), Work(("true",)))
    assert ("scale", "app_web", "4 -> 5: started elsewhere first") in steps(planned)
    # one that already ended (desired shutdown) or failed is no task of the node's to replace
    ended = (*others, task("web", "n4", "failed"))
    assert not plan_maintain(inventory(tmp_path), ["lab4"], state(tasks=ended), Work(("true",))).hosts[0].moved


def test_services_only_the_host_can_run_are_named_and_refused_unless_allowed_down(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    with pytest.raises(InputError) as refused:
        plan_maintain(inv, ["lab2"], state(), Work())
    message = str(refused.value)
    assert "kafka_kafka-2 (only lab2 can run it (node.labels.kafka.slot == 2))" in message
    assert "kafka_zookeeper-2" in message and "--allow-down" in message
    planned = plan_maintain(inv, ["lab2"], state(), Work(restart_engine=True), ["kafka_kafka-2", "kafka_zookeeper-2"])
    got = steps(planned)
    # the application checks pass before anything goes down (their probe cannot attach to a paused
    # node), and again once the host is back
    assert got[:3] == [("check", "kafka_kafka-2", "kafka check before lab2 goes down"),
                       ("check", "kafka_zookeeper-2", "zookeeper check before lab2 goes down"),
                       ("availability", "lab2", "pause: no new tasks")]  # fmt: skip
    assert got.index(("check", "kafka_kafka-2", "kafka check before lab2 goes down")) < got.index(
        ("availability", "lab2", "drain: its tasks stop")
    )
    assert got[-2:] == [("check", "kafka_kafka-2", "kafka check after lab2 is back"),
                        ("check", "kafka_zookeeper-2", "zookeeper check after lab2 is back")]  # fmt: skip
    assert ("restart-engine", "lab2", "systemctl restart docker") in got
    with pytest.raises(InputError, match=r"no such service.*kafka_kafka-2"):
        plan_maintain(inv, ["lab2"], state(), Work(), ["kafka_kafka2"])


def test_max_replicas_per_node_without_room_elsewhere_counts_as_pinned() -> None:
    spread = service("s", "app_spread", 4, max_per_node=1)
    tasks = tuple(task("s", f"n{i}") for i in (1, 2, 3, 4))
    (share,) = shares_on(NODES[3], state((spread,), tasks))
    assert share.stays == "at most 1 per node on the 3 other nodes that may run it: no room for 4"
    roomy = service("s", "app_spread", 3, max_per_node=1)
    (share,) = shares_on(NODES[3], state((roomy,), tasks[1:]))
    assert share.stays == ""


def test_down_and_drained_nodes_take_no_replacement() -> None:
    nodes = (node(1, "manager"), node(2, state="down"), node(3, availability="drain"), node(4))
    only = service("s", "app_one", 1)
    (share,) = shares_on(nodes[3], state((only,), (task("s", "n4"),), nodes))
    assert share.stays == "" and share.on_node == 1  # lab1, the manager, may run it
    worker_only = service("s", "app_one", 1, ("node.role == worker",))
    (share,) = shares_on(nodes[3], state((worker_only,), (task("s", "n4"),), nodes))
    assert share.stays.startswith("only lab4 can run it")


def test_draining_several_hosts_never_counts_one_of_them_as_room_for_the_other(tmp_path: Path) -> None:
    worker_only = service("s", "app_w", 2, ("node.role == worker",))
    st = state((worker_only,), (task("s", "n3"), task("s", "n4")))
    with pytest.raises(InputError, match="app_w"):
        plan_maintain(inventory(tmp_path), ["lab3", "lab4", "lab2"], st, Work(activate=False), verb="drain")
    planned = plan_maintain(inventory(tmp_path), ["lab3", "lab4"], st, Work(activate=False), verb="drain")
    assert [h.host for h in planned.hosts] == ["lab3", "lab4"] and not planned.hosts[0].down


def test_workers_go_first_then_managers_with_the_leader_last(tmp_path: Path) -> None:
    nodes = (node(1, "manager"), node(2), node(3), node(4))
    follower = node_view({"ID": "n2", "Version": {"Index": 1}, "Description": {"Hostname": "lab2"},
                          "Spec": {"Role": "manager", "Availability": "active"}, "Status": {"State": "ready"},
                          "ManagerStatus": {"Reachability": "reachable"}})  # fmt: skip
    planned = plan_maintain(inventory(tmp_path), ["lab1", "lab2", "lab3", "lab4"],
                            state((), (), (nodes[0], follower, nodes[2], nodes[3])), Work())  # fmt: skip
    assert [h.host for h in planned.hosts] == ["lab3", "lab4", "lab2", "lab1"]


def test_a_host_that_cannot_be_asked_or_is_not_in_the_inventory_is_refused_before_anything(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    with pytest.raises(Refused, match=r"refusing to maintain lab3: it cannot be asked which node it is \(timed out\)"):
        plan_maintain(inv, ["lab3"], state(unreachable={"lab3": "timed out"}), Work())
    with pytest.raises(InputError, match="lab9: not a host of the inventory"):
        plan_maintain(inv, ["lab9"], state(), Work())
    outside = MaintainState({"lab1": "n1", "lab2": ""}, {}, NODES, (), ())
    with pytest.raises(Refused, match="not a node of this swarm"):
        plan_maintain(inv, ["lab2"], outside, Work())


def test_activate_flips_only_what_is_not_active_and_then_waits(tmp_path: Path) -> None:
    nodes = (node(1, "manager"), node(2, availability="drain"), node(3), node(4, availability="pause"))
    planned = plan_activate(inventory(tmp_path), ["lab2", "lab3", "lab4"], state((), (), nodes))
    assert [(c.action, c.name, c.detail) for c in planned.plan.changes] == [
        ("availability", "lab2", "active"),
        ("availability", "lab4", "active"),
        ("wait", "services", "until every service runs all its tasks"),
    ]
    assert plan_activate(inventory(tmp_path), ["lab3"], state()).plan.empty


def test_the_maintenance_commands_output_is_told_line_by_line_as_it_comes(tmp_path: Path) -> None:
    import paramiko

    def two_lines(channel: paramiko.Channel, command: bytes) -> None:
        channel.sendall(b"upgrading\npart")
        channel.sendall_stderr(b"warn: x\n")
        channel.sendall(b"ial end")
        channel.send_exit_status(3)
        channel.shutdown_write()

    with ssh_server(tmp_path, command=two_lines) as server:
        host = lab_host(server.port, server.client_key_file, tmp_path / "known_hosts", "accept-new")
        told: list[str] = []
        with Connection(host) as c:
            result = c.run(["apt-get", "upgrade"], timeout=10, on_line=told.append)
    assert result.rc == 3 and result.stdout == "upgrading\npartial end"
    assert sorted(told) == sorted(["upgrading", "partial end", "warn: x"])
