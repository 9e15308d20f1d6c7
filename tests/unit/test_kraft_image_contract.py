"""The shipped KRaft stack held to the contract of the image it runs in production, apache/kafka 4.1.

The lab cannot run Apache Kafka, so what the real image does with the stack is checked here, by
reading. The facts are taken from the image's own sources - Apache Kafka's docker/ folder at 4.1
(docker/jvm/Dockerfile, docker/resources/common-scripts/{run,configure,configureDefaults},
docker/jvm/launch) and core/src/main/scala/kafka/docker/KafkaDockerWrapper.scala - and from
Kafka 4.1's configuration definitions and KafkaConfig's KRaft checks (the notes and their file and
line citations are summarised in the README, "The KRaft stack").
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from swarmctl.compose.loader import load_stack

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "stacks" / "kafka-kraft" / "stack.yml"
EXTERNAL = ROOT / "stacks" / "kafka-kraft" / "external.yml"
ENV = {"KAFKA_CLUSTER_ID": "q1Sh-9_DQb2cdZ7cHlp0vw", **{f"KAFKA_EXTERNAL_HOST_{i}": f"10.0.0.{i}" for i in (1, 2, 3)}}

# KafkaDockerWrapper.getServerConfigsFromEnv: KAFKA_* except these become server properties
EXCLUDED = {
    "KAFKA_VERSION", "KAFKA_HEAP_OPTS", "KAFKA_LOG4J_OPTS", "KAFKA_OPTS", "KAFKA_JMX_OPTS",
    "KAFKA_JVM_PERFORMANCE_OPTS", "KAFKA_GC_LOG_OPTS", "KAFKA_LOG4J_ROOT_LOGLEVEL", "KAFKA_LOG4J_LOGGERS",
    "KAFKA_TOOLS_LOG4J_LOGLEVEL", "KAFKA_JMX_HOSTNAME",
}  # fmt: skip
# the image's scripts read these besides KAFKA_* (configureDefaults/configure/launch, bash-config)
IMAGE_READS = {"CLUSTER_ID", "TRACE", "USE_SYSTEM_CA_CERTS"}
# Kafka 4.1 server configuration names the stack may use (KRaft mode; ZooKeeper's are gone in 4.0)
CONFIGS_4_1 = {
    "node.id", "process.roles", "listeners", "advertised.listeners", "controller.listener.names",
    "listener.security.protocol.map", "inter.broker.listener.name", "controller.quorum.voters",
    "controller.quorum.fetch.timeout.ms", "controller.quorum.election.timeout.ms", "log.dirs",
    "default.replication.factor", "num.partitions", "min.insync.replicas", "offsets.topic.replication.factor",
    "transaction.state.log.replication.factor", "transaction.state.log.min.isr",
    "share.coordinator.state.topic.replication.factor", "share.coordinator.state.topic.min.isr",
    "unclean.leader.election.enable", "auto.create.topics.enable", "broker.session.timeout.ms",
    "broker.heartbeat.interval.ms", "group.initial.rebalance.delay.ms", "log.retention.hours", "log.segment.bytes",
    "auto.leader.rebalance.enable",
}  # fmt: skip
REPLICATION = (
    "KAFKA_DEFAULT_REPLICATION_FACTOR",
    "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
    "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
    "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR",
)
MIN_ISR = (
    "KAFKA_MIN_INSYNC_REPLICAS",
    "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR",
)


def services(*files: Path) -> dict[str, dict[str, Any]]:
    return load_stack("kafka-kraft", list(files), ENV, {}).services


def property_name(variable: str) -> str:
    """The image's rule: prefix dropped, lower-cased, '_' -> '.', then '...' -> '-' and '..' -> '_'."""
    return variable.removeprefix("KAFKA_").lower().replace("_", ".").replace("...", "-").replace("..", "_")


def listener_names(value: str) -> list[str]:
    return [item.split("://", 1)[0].strip() for item in value.split(",") if item.strip()]


def voters(value: str) -> dict[int, str]:
    out = {}
    for item in value.split(","):
        ident, _, hostport = item.partition("@")
        out[int(ident)] = hostport
    return out


def problems(found: dict[str, dict[str, Any]]) -> list[str]:
    """What in the stack the image or Kafka would not do as the stack means."""
    out = []
    envs = {name: {k: str(v) for k, v in s["environment"].items()} for name, s in found.items()}
    for name, env in sorted(envs.items()):
        for var in sorted(env):
            if var.startswith("KAFKA_") and var not in EXCLUDED and property_name(var) not in CONFIGS_4_1:
                out.append(f"{name}: {var} becomes {property_name(var)!r}, not a Kafka 4.1 configuration")
            elif not var.startswith("KAFKA_") and var not in IMAGE_READS:
                out.append(f"{name}: the image does not read {var}")
        roles = env.get("KAFKA_PROCESS_ROLES", "")
        if roles not in ("controller", "broker"):
            out.append(f"{name}: KAFKA_PROCESS_ROLES {roles!r}: dedicated controllers and brokers only")
        logs = env.get("KAFKA_LOG_DIRS", "")
        volumes = {v["target"]: v for v in found[name].get("volumes", [])}
        for d in logs.split(",") if logs else ["(unset: /tmp/kafka-logs)"]:
            v = volumes.get(d)
            if v is None or v.get("type") != "volume" or not v.get("source"):
                out.append(f"{name}: log directory {d} is not on a named volume")
        node = env.get("KAFKA_NODE_ID", "")
        quorum = voters(env.get("KAFKA_CONTROLLER_QUORUM_VOTERS", "") or "0@")
        if roles == "controller":
            if "KAFKA_ADVERTISED_LISTENERS" in env:
                out.append(f"{name}: the image exits on KAFKA_ADVERTISED_LISTENERS on a controller")
            if not node.isdigit() or int(node) not in quorum:
                out.append(f"{name}: node id {node} is not among the voters")
            elif quorum[int(node)].split(":")[0] != name:
                out.append(f"{name}: voter {node} is {quorum[int(node)]}, not this service")
        if roles == "broker":
            if node.isdigit() and int(node) in quorum:
                out.append(f"{name}: a broker's node id {node} must not be a voter")
            controller_names = set(listener_names(env.get("KAFKA_CONTROLLER_LISTENER_NAMES", "").replace(",", "://,")))
            if controller_names & set(listener_names(env.get("KAFKA_LISTENERS", ""))):
                out.append(f"{name}: a broker's listeners name a controller listener")
            inter = env.get("KAFKA_INTER_BROKER_LISTENER_NAME", "")
            if inter not in listener_names(env.get("KAFKA_ADVERTISED_LISTENERS", "")):
                out.append(f"{name}: inter-broker listener {inter!r} is not advertised")
            for var in REPLICATION:
                if int(env.get(var, "1")) < 3:
                    out.append(f"{name}: {var} {env.get(var, '(default 1)')} is below 3")
            for var in MIN_ISR:
                if int(env.get(var, "1")) < 2:
                    out.append(f"{name}: {var} {env.get(var, '(default 1)')} is below 2")
        elif int(env.get(REPLICATION[0], "1")) < 3:  # the controllers create topics: their default counts
            out.append(f"{name}: {REPLICATION[0]} {env.get(REPLICATION[0], '(default 1)')} is below 3")
    for var in ("KAFKA_CONTROLLER_QUORUM_VOTERS", "CLUSTER_ID", "KAFKA_CONTROLLER_LISTENER_NAMES"):
        values = {env.get(var, "") for env in envs.values()}
        if len(values) != 1 or "" in values:
            out.append(f"{var} differs between nodes: {sorted(values)}")
    maps = {name: dict(m.split(":", 1) for m in env.get("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "").split(",") if m)
            for name, env in envs.items()}  # fmt: skip
    controller_protocols = {m.get("CONTROLLER", "") for m in maps.values()}
    if len(controller_protocols) != 1 or "" in controller_protocols:
        out.append(f"the CONTROLLER listener's protocol differs between nodes: {sorted(controller_protocols)}")
    ids = [env.get("KAFKA_NODE_ID", "") for env in envs.values()]
    if len(set(ids)) != len(ids):
        out.append(f"node ids repeat: {sorted(ids)}")
    return out


@pytest.mark.parametrize("files", [[STACK], [STACK, EXTERNAL]], ids=["stack", "stack+external"])
def test_the_shipped_stack_keeps_the_images_and_kafkas_contract(files: list[Path]) -> None:
    found = services(*files)
    assert sorted(found) == ["controller-1", "controller-2", "controller-3", "kafka-1", "kafka-2", "kafka-3"]
    assert problems(found) == []


def mutated(change: Any) -> list[str]:
    found = copy.deepcopy(services(STACK))
    change(found)
    return problems(found)


def test_a_misspelt_or_unknown_variable_is_caught() -> None:
    def misspell(found: dict[str, Any]) -> None:
        found["kafka-2"]["environment"]["KAFKA_MIN_INSYNC_REPLICA"] = "2"
        found["controller-1"]["environment"]["HEAP_OPTS"] = "-Xmx1g"

    assert mutated(misspell) == [
        "controller-1: the image does not read HEAP_OPTS",
        "kafka-2: KAFKA_MIN_INSYNC_REPLICA becomes 'min.insync.replica', not a Kafka 4.1 configuration",
    ]


def test_a_log_directory_off_the_volume_is_caught() -> None:
    def move(found: dict[str, Any]) -> None:
        found["kafka-3"]["environment"]["KAFKA_LOG_DIRS"] = "/tmp/kraft-combined-logs"

    assert mutated(move) == ["kafka-3: log directory /tmp/kraft-combined-logs is not on a named volume"]


def test_a_replication_factor_below_3_is_caught() -> None:
    def lower(found: dict[str, Any]) -> None:
        found["kafka-1"]["environment"]["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] = "1"

    assert mutated(lower) == ["kafka-1: KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR 1 is below 3"]


def test_a_quorum_written_differently_on_two_nodes_is_caught() -> None:
    def rewrite(found: dict[str, Any]) -> None:
        found["kafka-2"]["environment"]["KAFKA_CONTROLLER_QUORUM_VOTERS"] = "101@controller-1:9093"

    assert any(p.startswith("KAFKA_CONTROLLER_QUORUM_VOTERS differs between nodes") for p in mutated(rewrite))


def test_advertised_listeners_on_a_controller_are_caught() -> None:
    def advertise(found: dict[str, Any]) -> None:
        found["controller-2"]["environment"]["KAFKA_ADVERTISED_LISTENERS"] = "CONTROLLER://controller-2:9093"

    assert mutated(advertise) == ["controller-2: the image exits on KAFKA_ADVERTISED_LISTENERS on a controller"]


def test_the_image_rule_for_dots_underscores_and_dashes() -> None:
    assert property_name("KAFKA_LOG_DIRS") == "log.dirs"
    assert property_name("KAFKA_ABC__DEF") == "abc_def" and property_name("KAFKA_ABC___DEF") == "abc-def"


def test_shape_restart_and_grace_fit_kraft() -> None:
    for name, s in services(STACK).items():
        assert s["deploy"]["replicas"] == 1 and s["deploy"]["endpoint_mode"] == "dnsrr", name
        assert s["deploy"]["update_config"]["order"] == "stop-first", name
        slot = name[-1]
        assert s["deploy"]["placement"]["constraints"] == [f"node.labels.kafka.slot == {slot}"], name
        # healthchecks test the local process only: a TCP connect to its own listener
        assert s["healthcheck"]["test"][-1].startswith("exec 3<>/dev/tcp/127.0.0.1/"), name
        grace = s["stop_grace_period"]
        assert grace >= (120 if name.startswith("kafka-") else 30) * 10**9, name
