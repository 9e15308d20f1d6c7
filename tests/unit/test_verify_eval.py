"""verify's judgement from probe answers (pure: no swarm involved)."""

from __future__ import annotations

import dataclasses
from typing import Any

from swarmctl.checks import kafka
from swarmctl.checks.probe import ProduceCheck
from swarmctl.facts.nodes import NodeView
from swarmctl.facts.stack import NetworkInfo, ServiceInfo, StackView
from swarmctl.ops.verify import evaluate, names_on, plan_probes, plan_produce

NET = "n1"


def svc(
    short: str,
    ips: list[str],
    nodes: list[str],
    mode: str = "dnsrr",
    check: str = "",
    port: int | None = None,
    env: dict[str, str] | None = None,
    vip: str = "",
    desired: int | None = None,
) -> ServiceInfo:
    return ServiceInfo(
        name=f"st_{short}",
        short=short,
        mode=mode,
        networks={NET: [short]},
        vips={NET: vip} if vip else {},
        task_ips={NET: ips},
        task_nodes=nodes,
        check=check,
        port=port,
        env=env or {},
        desired=len(nodes) if desired is None else desired,
    )


def lab_node(i: int) -> NodeView:
    role = "manager" if i == 1 else "worker"
    return NodeView(f"N{i}", f"lab{i}", role, "active", {}, "ready", f"192.168.77.1{i}", i == 1, "", "20.10", 1, {})


NODES = {f"N{i}": lab_node(i) for i in (1, 2, 3)}


def view(*services: ServiceInfo, attachable: bool = True, owners: dict[str, str] | None = None) -> StackView:
    return StackView("st", list(services), {NET: NetworkInfo(NET, "st_net", attachable)}, dict(NODES), owners or {})


def answers(
    v: StackView, override: dict[tuple[str, str], Any] | None = None, **extra: Any
) -> dict[tuple[str, str], Any]:
    """Every probe answering exactly what the API says, except where overridden."""
    out = {}
    for plan in plan_probes(v):
        dns = {}
        for name, want in names_on(v, NET).items():
            dns[name] = {"ips": want} if want else {"error": "timeout"}
        for (node, name), value in (override or {}).items():
            if node == plan.node_id:
                dns[name] = value
        out[(plan.node_id, NET)] = {
            "dns": dns,
            "tcp": extra.get("tcp", {}),
            "zookeeper": extra.get("zookeeper", {}),
            "kafka": extra.get("kafka", {}),
        }
    return out


def failed(checks: list[Any]) -> list[Any]:
    return [c for c in checks if not c.ok]


def test_everything_as_reported_passes() -> None:
    v = view(svc("a", ["10.0.0.5", "10.0.0.6"], ["N2", "N3"]), svc("b", ["10.0.0.7"], ["N2"]))
    checks = evaluate(v, answers(v))
    assert checks and not failed(checks)
    nodes = {c.node for c in checks if c.name.startswith("dns ")}
    assert nodes == {"lab1", "lab2", "lab3"}  # task nodes and the manager


def test_wrong_task_ips_fail_with_expected_and_got() -> None:
    v = view(svc("a", ["10.0.0.5", "10.0.0.6"], ["N2", "N3"]))
    checks = evaluate(v, answers(v, {("N2", "tasks.a"): {"ips": ["10.0.0.5"]}}))
    (bad,) = failed(checks)
    assert (bad.name, bad.node, bad.expected, bad.got) == (
        "dns tasks.a on st_net",
        "lab2",
        "10.0.0.5, 10.0.0.6",
        "10.0.0.5",
    )


def test_missing_tasks_fail() -> None:
    v = view(svc("a", [], [], desired=1))
    bad = failed(evaluate(v, answers(v)))
    assert [c.name for c in bad] == ["tasks a"] and bad[0].got == "0 running"


def test_silent_vip_is_explained_by_missing_ipvs() -> None:
    v = view(svc("web", ["10.0.0.9"], ["N2"], mode="vip", vip="10.0.0.2", port=80))
    tcp = {"10.0.0.2:80": {"result": "timeout"}, "10.0.0.9:80": {"result": "open"}}
    res = answers(v, {(n, name): {"ips": ["10.0.0.2"]} for n in NODES for name in ("web", "st_web")}, tcp=tcp)
    bad = failed(evaluate(v, res, no_ipvs={"lab1", "lab2"}))
    assert {c.node for c in bad} == {"lab1", "lab2"}
    assert all(c.name.startswith("vip web 10.0.0.2:80") and "kernel has no IPVS" in c.detail for c in bad)
    ok = evaluate(v, res, no_ipvs=set())
    assert all("load balancer is broken" in c.detail for c in failed(ok))


def test_a_node_cut_off_from_gossip_is_named() -> None:
    owners = {"10.0.0.5": "N1", "10.0.0.6": "N2", "10.0.0.4": "N1", "10.0.0.8": "N3"}
    v = view(svc("a", ["10.0.0.5", "10.0.0.6"], ["N1", "N2"]), svc("b", ["10.0.0.8"], ["N3"]), owners=owners)
    # lab3 still sees an old task of a; lab1 and lab2 do not see b's task on lab3
    override: dict[tuple[str, str], dict[str, Any]] = {("N3", "tasks.a"): {"ips": ["10.0.0.4", "10.0.0.6"]}}
    override.update({(n, "tasks.b"): {"error": "timeout"} for n in ("N1", "N2")})
    bad = failed(evaluate(v, answers(v, override)))
    assert {c.node for c in bad} == {"lab1", "lab2", "lab3"}
    assert all("suspect gossip trouble (7946/tcp+udp) on lab3" in c.detail for c in bad)


def test_one_disagreement_does_not_blame_a_side() -> None:
    v = view(
        svc("a", ["10.0.0.5"], ["N1"]), svc("b", ["10.0.0.6"], ["N2"]), owners={"10.0.0.5": "N1", "10.0.0.6": "N2"}
    )
    bad = failed(evaluate(v, answers(v, {("N2", "tasks.a"): {"ips": []}})))
    assert bad and not any("gossip" in c.detail for c in bad)


def test_zookeeper_ensemble() -> None:
    members = [svc(f"zookeeper-{i}", [f"10.0.0.{i}"], [f"N{i}"], check="zookeeper", port=2181) for i in (1, 2, 3)]
    v = view(*members)
    good = {f"zookeeper-{i}:2181": {"mode": m} for i, m in ((1, "follower"), (2, "leader"), (3, "follower"))}
    assert not failed(evaluate(v, answers(v, zookeeper=good)))
    split = {**good, "zookeeper-3:2181": {"mode": "leader"}}
    (bad,) = failed(evaluate(v, answers(v, zookeeper=split)))
    assert bad.name == "zookeeper ensemble" and bad.got == "leader: zookeeper-2, zookeeper-3; followers: zookeeper-1"
    down = {**good, "zookeeper-1:2181": {"error": "timed out"}}
    names = [c.name for c in failed(evaluate(v, answers(v, zookeeper=down)))]
    assert names == ["zookeeper zookeeper-1 srvr", "zookeeper ensemble"]


def broker(i: int, standalone: bool = False, id_var: str = "NODE_ID") -> ServiceInfo:
    env = {id_var: str(i), "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://kafka-{i}:9092"}
    info = svc(f"kafka-{i}", [f"10.0.1.{i}"], [f"N{i}"], check="kafka", port=9092, env=env)
    return dataclasses.replace(info, standalone=standalone)


def metadata(ids: list[int], own: int, partitions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "api_versions": {"error_code": 0, "apis": 40},
        "metadata": {
            "brokers": [{"id": i, "host": f"kafka-{i}", "port": 9092} for i in ids]
            if len(ids) > 1
            else [{"id": own, "host": f"kafka-{ids[0]}", "port": 9092}],
            "controller": ids[0],
            "topics": [{"name": "t", "partitions": partitions or []}],
        },
    }


def test_kafka_cluster_and_under_replication() -> None:
    v = view(*(broker(i) for i in (1, 2, 3)))
    healthy = [{"index": 0, "replicas": [1, 2, 3], "isr": [3, 1, 2]}]
    res = answers(v, kafka={f"kafka-{i}:9092": metadata([1, 2, 3], i, healthy) for i in (1, 2, 3)})
    assert not failed(evaluate(v, res))
    lagging = [{"index": 0, "replicas": [1, 2, 3], "isr": [1, 2]}]
    res = answers(v, kafka={f"kafka-{i}:9092": metadata([1, 2, 3], i, lagging) for i in (1, 2, 3)})
    (bad,) = failed(evaluate(v, res))
    assert bad.name == "kafka under-replicated partitions" and bad.got == "1" and "t/0" in bad.detail


def test_brokers_that_each_list_only_themselves_fail_unless_declared_standalone() -> None:
    alone = {f"kafka-{i}:9092": metadata([i], i) for i in (1, 2, 3)}
    v = view(*(broker(i) for i in (1, 2, 3)))
    bad = failed(evaluate(v, answers(v, kafka=alone)))
    assert {c.name for c in bad} == {f"kafka kafka-{i} cluster" for i in (1, 2, 3)}
    assert "lists only itself: not one cluster" in bad[0].detail and "x-swarmctl.standalone" in bad[0].detail
    declared = view(*(broker(i, standalone=True) for i in (1, 2, 3)))
    checks = evaluate(declared, answers(declared, kafka=alone))
    assert not failed(checks)
    assert all(c.detail == "standalone by declaration" for c in checks if c.name.endswith(" cluster"))
    assert not any("under-replicated" in c.name for c in checks)  # nothing to replicate alone


def test_a_broker_that_misses_expected_brokers_is_named() -> None:
    v = view(*(broker(i) for i in (1, 2, 3)))
    split = {f"kafka-{i}:9092": metadata([1, 2, 3], i) for i in (1, 2)} | {"kafka-3:9092": metadata([3, 4], 3)}
    (bad,) = failed(evaluate(v, answers(v, kafka=split)))
    assert (
        bad.name == "kafka kafka-3 cluster"
        and bad.expected == "brokers [1, 2, 3]"
        and "missing brokers [1, 2]" in bad.detail
    )


def test_wrong_ids_and_the_images_id_rule() -> None:
    v = view(*(broker(i, standalone=True) for i in (1, 2, 3)))
    res = answers(v, kafka={f"kafka-{i}:9092": metadata([i], 111) for i in (1, 2, 3)})
    bad = [c for c in failed(evaluate(v, res)) if " at " in c.name]
    assert {c.name for c in bad} == {f"kafka kafka-{i} at kafka-{i}:9092" for i in (1, 2, 3)}
    assert bad[0].expected == "ApiVersions ok, broker id 1" and bad[0].got.endswith("broker id 111")
    # debezium's entrypoint: NODE_ID, else the deprecated BROKER_ID, else 1
    assert kafka.broker_id({"NODE_ID": "7", "BROKER_ID": "3"}) == 7
    assert kafka.broker_id({"BROKER_ID": "3"}) == 3 and kafka.broker_id({}) == 1


def test_a_network_that_cannot_be_joined_is_skipped_not_passed_silently() -> None:
    v = view(svc("a", ["10.0.0.5"], ["N2"]), attachable=False)
    checks = evaluate(v, {})
    (skip,) = [c for c in checks if c.skipped]
    assert "not attachable" in skip.detail and "attachable: true" in skip.detail


def produced(i: int, readers: dict[str, str], leader: int | None = None) -> dict[str, Any]:
    return {"produced": 0, "partition": i - 1, "leader": leader or i, "replication": 3, "read": readers}


def test_produce_is_planned_once_with_the_stacks_replication_factor() -> None:
    brokers = [broker(i) for i in (1, 2, 3)]
    brokers[0] = dataclasses.replace(brokers[0], env={**brokers[0].env, "KAFKA_DEFAULT_REPLICATION_FACTOR": "3"})
    v = view(*brokers)
    plans = plan_probes(v, "swarmctl-verify-1-ab")
    (with_produce,) = [p for p in plans if p.produce]
    assert with_produce.node_id == plans[0].node_id
    assert with_produce.produce == ProduceCheck(
        [("kafka-1", 9092, 1), ("kafka-2", 9092, 2), ("kafka-3", 9092, 3)], "swarmctl-verify-1-ab", 3, False
    )
    assert not any(p.produce for p in plan_probes(v))  # only when asked
    assert kafka.replication_factor([{}]) == 1  # Kafka's default.replication.factor
    mixed = view(broker(1, standalone=True), broker(2))
    assert plan_produce(mixed, NET, "t") == ProduceCheck([("kafka-1", 9092, 1), ("kafka-2", 9092, 2)], "t", 1, False)


def test_produce_results_are_judged_per_broker() -> None:
    v = view(*(broker(i) for i in (1, 2, 3)))
    others = {i: {f"kafka-{j}:9092": "ok" for j in (1, 2, 3) if j != i} for i in (1, 2, 3)}
    res = answers(v)
    first = next(iter(res))
    res[first]["produce"] = {
        "topic": "swarmctl-verify-1-ab",
        "brokers": {
            "kafka-1:9092": produced(1, others[1]),
            "kafka-2:9092": produced(2, {**others[2], "kafka-3:9092": "error: fetch answered NOT_LEADER_OR_FOLLOWER"}),
            "kafka-3:9092": {"error": "produce (acks=all) answered NOT_ENOUGH_REPLICAS"},
        },
        "cleanup": "",
        "swept": [],
    }
    checks = {c.name: c for c in evaluate(v, res) if c.name.endswith(" produce")}
    assert checks["kafka kafka-1 produce"].ok
    assert (
        checks["kafka kafka-1 produce"].expected
        == "acks=all write (replication 3) read back via kafka-2:9092, kafka-3:9092"
    )
    bad2 = checks["kafka kafka-2 produce"]
    assert not bad2.ok and bad2.detail == "not read back via kafka-3:9092" and "NOT_LEADER" in bad2.got
    bad3 = checks["kafka kafka-3 produce"]
    assert not bad3.ok and "NOT_ENOUGH_REPLICAS" in bad3.detail


def test_produce_on_standalone_brokers_and_a_topic_left_behind() -> None:
    v = view(*(broker(i, standalone=True) for i in (1, 2)))
    res = answers(v)
    first = next(iter(res))
    res[first]["produce"] = {
        "topic": "t",
        "brokers": {f"kafka-{i}:9092": {**produced(i, {f"kafka-{i}:9092": "ok"}), "partition": 0} for i in (1, 2)},
        "cleanup": "removing t via kafka-2:9092: error 41",
        "swept": [],
    }
    checks = [c for c in evaluate(v, res) if "produce" in c.name or "topic" in c.name]
    assert [c.ok for c in checks] == [True, True, False]
    assert all(c.detail == "standalone by declaration" for c in checks[:2])
    assert checks[0].got == "offset 0 in partition 0, read back via itself"
    assert checks[2].name == "kafka verify topic removed" and "kafka-topics.sh --delete" in checks[2].detail
    # a broker the probe never got to is a failure, not a pass
    res[first]["produce"]["brokers"].pop("kafka-2:9092")
    bad = [c.name for c in failed(evaluate(v, res)) if "produce" in c.name or "topic" in c.name]
    assert bad == ["kafka kafka-2 produce", "kafka verify topic removed"]
