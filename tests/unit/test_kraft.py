"""KRaft: the lab's controller stand-in, the probe's DescribeQuorum, the quorum judges, and the
rollout's order and gates under KRaft - all without a host.

The stand-in's answers are read by the probe's own parser over a real socket; the same path runs
end to end in tests/e2e/test_kraft.py.
"""

from __future__ import annotations

import importlib.util
import socket
import struct
import threading
from pathlib import Path
from typing import Any

import pytest

from swarmctl.checks import kafka, kraft
from swarmctl.facts.stack import ServiceInfo
from swarmctl.ops.update import AppGates
from swarmctl_lab.kafka_shim import (
    ELECTION_GRACE,
    PEER_TIMEOUT,
    Quorum,
    controller_answer,
    node_id_of,
    parse_voters,
    roles_of,
)
from tests.unit.fakeengine import FakeEngine

ROOT = Path(__file__).resolve().parents[2]
VOTERS = parse_voters("101@controller-1:9093,102@controller-2:9093,103@controller-3:9093")


def probe_script() -> Any:
    spec = importlib.util.spec_from_file_location("probe_script", ROOT / "swarmctl/checks/probe_script.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def three(now: float, lagging: int = 0) -> dict[int, Quorum]:
    """Three stand-ins started one second apart (101 first), each having heard the others."""
    nodes = {i: Quorum(i, VOTERS, now - 10 + (i - 101), lagging=i == lagging) for i in VOTERS}
    exchange(nodes, now)
    return nodes


def exchange(nodes: dict[int, Quorum], now: float) -> None:
    for _ in range(2):  # twice: a follower hears the leader's high watermark after it elected
        for a in nodes.values():
            for b in nodes.values():
                if a is not b:
                    b.learn(a.state(now), now)


def test_voters_roles_and_ids_are_read_as_the_images_read_them() -> None:
    assert VOTERS == {101: ("controller-1", 9093), 102: ("controller-2", 9093), 103: ("controller-3", 9093)}
    assert roles_of({"KAFKA_PROCESS_ROLES": "controller"}) == {"controller"}
    assert roles_of({"NODE_ROLE": "combined"}) == {"broker", "controller"}
    assert roles_of({}) == set()
    assert node_id_of({"KAFKA_NODE_ID": "102"}) == 102 and node_id_of({"NODE_ID": "2", "KAFKA_NODE_ID": "9"}) == 2


def test_the_stand_ins_agree_on_the_oldest_voter_and_only_it_answers() -> None:
    now = 1000.0
    nodes = three(now)
    assert {q.leader(now) for q in nodes.values()} == {101}
    error, leader, _, _, voters, _ = nodes[101].describe(1, now)
    assert (error, leader) == (0, 101) and [v[0] for v in voters] == [101, 102, 103]
    assert all(v[3] > 0 for v in voters)  # every voter caught up
    for follower in (102, 103):
        assert nodes[follower].describe(1, now)[:2] == (kraft.NOT_LEADER_OR_FOLLOWER, 101)


def test_the_leader_moves_when_its_task_restarts_and_not_when_a_follower_does() -> None:
    now = 1000.0
    nodes = three(now)
    nodes[102] = Quorum(102, VOTERS, now)  # a follower restarted: the newest now
    later = now + ELECTION_GRACE + 0.1
    exchange(nodes, later)
    assert {q.leader(later) for q in nodes.values()} == {101}
    nodes[101] = Quorum(101, VOTERS, later)  # the leader restarted
    nodes[103].peers[101].seen = later - PEER_TIMEOUT - 1  # ...and was gone a while
    nodes[102].peers[101].seen = later - PEER_TIMEOUT - 1
    after = later + ELECTION_GRACE + 0.1
    exchange(nodes, after)
    assert {q.leader(after) for q in nodes.values()} == {103}  # up the longest of the three now
    assert nodes[103].epoch > nodes[101].epoch - 1


def test_a_stand_in_made_to_lag_never_catches_up() -> None:
    now = 1000.0
    nodes = three(now, lagging=102)
    voters = {v[0]: v for v in nodes[101].describe(1, now)[4]}
    assert voters[102][3] == -1 and voters[103][3] > 0


def serve_once(nodes: dict[int, Quorum], node: int, now: float) -> int:
    """A socket answering one request with the stand-in's controller_answer; returns its port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def answer() -> None:
        conn, _ = server.accept()
        with conn, server:
            size = struct.unpack(">i", conn.recv(4, socket.MSG_WAITALL))[0]
            reply = controller_answer(conn.recv(size, socket.MSG_WAITALL), nodes[node], now)
            assert reply is not None
            conn.sendall(struct.pack(">i", len(reply)) + reply)

    threading.Thread(target=answer, daemon=True).start()
    return int(server.getsockname()[1])


def test_the_probe_reads_describe_quorum_from_the_leader_and_a_follower() -> None:
    now = 1000.0
    nodes = three(now, lagging=103)
    probe = probe_script()
    lead = probe.quorum("127.0.0.1", serve_once(nodes, 101, now))
    assert lead["top_error"] == 0 and lead["error_code"] == 0 and lead["leader"] == 101
    assert [v["id"] for v in lead["voters"]] == [101, 102, 103]
    assert lead["voters"][2]["last_caught_up"] == -1
    follower = probe.quorum("127.0.0.1", serve_once(nodes, 102, now))
    assert (follower["error_code"], follower["leader"]) == (kraft.NOT_LEADER_OR_FOLLOWER, 101)
    view = kraft.quorum_view({"controller-1": lead, "controller-2": follower, "controller-3": {"error": "timeout"}})
    ids = {"controller-1": 101, "controller-2": 102, "controller-3": 103}
    assert kraft.judge_leader(view, ids).ok and view.leader == 101
    assert kraft.judge_voters(view, ids).ok
    assert kraft.judge_voter(view, 102, 2000).ok
    lagging = kraft.judge_voter(view, 103, 2000)
    assert not lagging.ok and "never caught up" in lagging.got
    assert view.unanswered == {"controller-3": "timeout"}


# -- judges --------------------------------------------------------------------------------------------


def leader_answer(leader: int, voters: dict[int, int], observers: tuple[int, ...] = ()) -> dict[str, Any]:
    """DescribeQuorum as the probe reports it: voters id -> last caught-up ms (-1: never)."""
    return {
        "top_error": 0, "partition": 0, "error_code": 0, "leader": leader, "epoch": 4, "high_watermark": 500,
        "voters": [{"id": i, "log_end_offset": 500, "last_fetch": t, "last_caught_up": t} for i, t in voters.items()],
        "observers": [{"id": i, "log_end_offset": 500, "last_fetch": 1, "last_caught_up": 1} for i in observers],
    }  # fmt: skip


FOLLOWER = {"top_error": 0, "partition": 0, "error_code": 6, "leader": 101, "epoch": 4, "high_watermark": -1,
            "voters": [], "observers": []}  # fmt: skip
IDS = {"controller-1": 101, "controller-2": 102, "controller-3": 103}


def test_two_controllers_answering_as_leader_are_split_quorums() -> None:
    view = kraft.quorum_view({
        "controller-1": leader_answer(101, {101: 10_000}),
        "controller-2": leader_answer(102, {102: 10_000}),
        "controller-3": FOLLOWER,
    })  # fmt: skip
    v = kraft.judge_leader(view, IDS)
    assert not v.ok and "split quorums" in v.detail
    assert not kraft.judge_voters(kraft.quorum_view({"controller-1": leader_answer(101, {101: 1})}), IDS).ok


def test_no_leader_is_no_quorum() -> None:
    view = kraft.quorum_view({s: FOLLOWER | {"leader": -1} for s in IDS})
    v = kraft.judge_leader(view, IDS)
    assert not v.ok and "no quorum" in v.detail


def test_observers_must_include_every_broker() -> None:
    view = kraft.quorum_view({"controller-1": leader_answer(101, {101: 1, 102: 1, 103: 1}, (1, 2))})
    v = kraft.judge_observers(view, {"kafka-1": 1, "kafka-2": 2, "kafka-3": 3})
    assert not v.ok and v.detail == "not fetching the metadata log: 3"


@pytest.mark.parametrize(
    ("caught_up", "stopping", "safe"),
    [
        ({101: 10_000, 102: 9_500, 103: 9_900}, 102, True),  # the other two are caught up: a majority
        ({101: 10_000, 102: 9_500, 103: 5_000}, 102, False),  # 103 is 5 s behind: only the leader left
        ({101: 10_000, 102: 9_500, 103: -1}, 101, False),  # stopping the leader with one never caught up
        ({101: 10_000, 102: 9_500, 103: 9_000}, 101, True),
    ],
)
def test_a_voter_may_stop_only_while_the_others_caught_up_are_a_majority(
    caught_up: dict[int, int], stopping: int, safe: bool
) -> None:
    view = kraft.quorum_view({"controller-1": leader_answer(101, caught_up)})
    ok, seen = kraft.can_stop(view, stopping, 2000)
    assert ok is safe, seen


def test_a_broker_may_stop_only_while_every_partition_keeps_min_isr() -> None:
    md = {"brokers": [], "controller": 1, "topics": [{"name": "orders", "partitions": [
        {"index": 0, "leader": 1, "replicas": [1, 2, 3], "isr": [1, 2, 3]},
        {"index": 1, "leader": 2, "replicas": [1, 2, 3], "isr": [1, 2]},
        {"index": 2, "leader": 3, "replicas": [3], "isr": [3]},
    ]}]}  # fmt: skip
    assert kafka.would_fall_below(md, 3, 2) == []
    assert kafka.would_fall_below(md, 1, 2) == ["orders/1"]  # isr [1, 2] without 1 is [2]
    assert kafka.min_insync({"KAFKA_MIN_INSYNC_REPLICAS": "2"}) == 2 and kafka.min_insync({}) == 1


def test_kraft_is_told_by_the_environment_or_by_describe_quorum_in_api_versions() -> None:
    assert kraft.kraft({"KAFKA_PROCESS_ROLES": "broker"}) and kraft.kraft({"NODE_ROLE": "combined"})
    assert not kraft.kraft({"ZOOKEEPER_CONNECT": "zookeeper-1:2181"})
    assert kraft.kraft({}, [18, 3, 55]) and not kraft.kraft({}, [18, 3])
    assert kafka.broker_id({"KAFKA_NODE_ID": "4"}) == 4 and kafka.broker_id({"NODE_ID": "2", "KAFKA_NODE_ID": "9"}) == 2


# -- who goes last -------------------------------------------------------------------------------------


class RecordedGates(AppGates):
    """AppGates whose probe answers come from a dict (what the lab's probes answered, by shape)."""

    def __init__(self, services: dict[str, ServiceInfo], result: dict[str, Any]):
        super().__init__(engine=FakeEngine(), stack="s", probe_image="")
        self.services = services
        self.result = result

    def refresh(self) -> None:
        pass

    def _probe(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return self.result


def service(short: str, check: str, port: int, env: dict[str, str]) -> ServiceInfo:
    return ServiceInfo(name=f"s_{short}", short=short, mode="dnsrr", networks={}, vips={}, task_ips={}, task_nodes=[],
                       check=check, port=port, env=env, desired=1)  # fmt: skip


def brokers_answer(controller: int, keys: list[int]) -> dict[str, Any]:
    md = {"brokers": [{"id": i, "host": f"kafka-{i}", "port": 9092} for i in (1, 2, 3)], "controller": controller,
          "topics": []}  # fmt: skip
    return {f"kafka-{i}:9092": {"api_versions": {"error_code": 0, "keys": keys}, "metadata": md} for i in (1, 2, 3)}


def test_under_kraft_the_active_controller_goes_last_and_metadatas_controller_means_nothing() -> None:
    services = {f"controller-{i}": service(f"controller-{i}", "kafka-controller", 9093,
                                           {"KAFKA_NODE_ID": str(100 + i), "KAFKA_PROCESS_ROLES": "controller"})
                for i in (1, 2, 3)}  # fmt: skip
    services |= {f"kafka-{i}": service(f"kafka-{i}", "kafka", 9092, {"KAFKA_NODE_ID": str(i)}) for i in (1, 2, 3)}
    quorum = {"controller-1:9093": FOLLOWER | {"leader": 102}, "controller-3:9093": FOLLOWER | {"leader": 102},
              "controller-2:9093": leader_answer(102, {101: 1, 102: 1, 103: 1})}  # fmt: skip
    # Metadata names broker 2 as "controller" (under KRaft: a random live broker); its ApiVersions lists 55
    gates = RecordedGates(services, {"kafka": brokers_answer(2, [18, 3, 55]), "quorum": quorum, "zookeeper": {}})
    assert gates.goes_last() == {"controller-2"}


def test_on_zookeeper_metadatas_controller_goes_last() -> None:
    services = {f"kafka-{i}": service(f"kafka-{i}", "kafka", 9092, {"NODE_ID": str(i)}) for i in (1, 2, 3)}
    gates = RecordedGates(services, {"kafka": brokers_answer(2, [18, 3]), "quorum": {}, "zookeeper": {}})
    assert gates.goes_last() == {"kafka-2"}
