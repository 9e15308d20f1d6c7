"""The shipped Kafka stack held to the contract of the images it runs in production.

The lab cannot run Apache Kafka, so what the real images do with the stack is checked here, by
reading. The facts below are taken from the images' own sources - debezium/container-images at
commit 07fabf0541b948a0da58e4d8d0092d4e44696399 (the 3.1 line: Kafka 3.9.0, ZooKeeper 3.8.4, uid
1001): kafka/3.1/{Dockerfile,docker-entrypoint.sh,log4j.properties} and
zookeeper/3.1/{Dockerfile,docker-entrypoint.sh} - and from Kafka 3.9's broker configuration
classes (org.apache.kafka.server.config.ZkConfigs, ReplicationConfigs, ServerLogConfigs,
ControlledShutdownConfigs, org.apache.kafka.network.SocketServerConfigs, the group coordinator and
transaction log configs), as listed in the Kafka 3.9 documentation's "Broker Configs".
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from swarmctl.compose.loader import load_stack

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "stacks" / "kafka" / "stack.yml"
EXTERNAL = ROOT / "stacks" / "kafka" / "external.yml"
ENV = {f"KAFKA_EXTERNAL_HOST_{i}": f"10.0.0.{i}" for i in (1, 2, 3)}

# kafka/3.1/docker-entrypoint.sh reads these (besides KAFKA_*)
KAFKA_ENTRYPOINT_READS = {
    "NODE_ID", "BROKER_ID", "CLUSTER_ID", "NODE_ROLE", "ZOOKEEPER_CONNECT", "HEAP_OPTS", "ADVERTISED_PORT",
    "HOST_NAME", "PORT", "CONTROLLER_PORT", "ADVERTISED_HOST_NAME", "JMXAUTH", "JMXSSL", "JMXPORT", "JMXHOST",
    "LOG_LEVEL", "CREATE_TOPICS", "KAFKA_BROKER",
}  # fmt: skip
# ... and overwrites these KAFKA_* itself: a value the stack gives them is lost
KAFKA_ENTRYPOINT_OVERWRITES = {
    "KAFKA_ZOOKEEPER_CONNECT", "KAFKA_NODE_ID", "KAFKA_BROKER_ID", "KAFKA_LOG_DIRS", "KAFKA_LOG4J_OPTS",
}  # fmt: skip
# KAFKA_* read by Kafka's own scripts (kafka-server-start.sh, kafka-run-class.sh), not broker properties
# (the entrypoint also writes them into server.properties, where Kafka ignores them with a warning)
KAFKA_SCRIPT_VARS = {
    "KAFKA_HEAP_OPTS", "KAFKA_OPTS", "KAFKA_JVM_PERFORMANCE_OPTS", "KAFKA_GC_LOG_OPTS", "KAFKA_JMX_OPTS",
}  # fmt: skip
# the entrypoint's rule for every other KAFKA_*: drop the prefix, lower case, "_" -> "."
SKIPPED_BY_ENTRYPOINT = {"KAFKA_VERSION", "KAFKA_HOME", "KAFKA_LOG4J_OPTS", "KAFKA_JMX_OPTS"}

# zookeeper/3.1/docker-entrypoint.sh reads these
ZOOKEEPER_ENTRYPOINT_READS = {"SERVER_ID", "SERVER_COUNT", "JVMFLAGS", "LOG_LEVEL", "JMXPORT", "JMXHOST"}
# ... and the process it execs reads these: glibc's resolver (the image is glibc-based, fedora-minimal)
ZOOKEEPER_PROCESS_READS = {"RES_OPTIONS"}

# Kafka 3.9 broker configuration names (Kafka documentation 3.9, "Broker Configs"; ZooKeeper mode)
BROKER_CONFIGS_3_9 = {
    # ZkConfigs (zookeeper.session.timeout.ms defaults to 18000)
    "zookeeper.connect", "zookeeper.session.timeout.ms", "zookeeper.connection.timeout.ms", "zookeeper.set.acl",
    "zookeeper.max.in.flight.requests", "zookeeper.ssl.client.enable", "zookeeper.clientCnxnSocket",
    # ReplicationConfigs
    "controller.socket.timeout.ms", "default.replication.factor", "replica.lag.time.max.ms",
    "replica.socket.timeout.ms", "replica.socket.receive.buffer.bytes", "replica.fetch.max.bytes",
    "replica.fetch.wait.max.ms", "replica.fetch.min.bytes", "replica.fetch.backoff.ms",
    "replica.fetch.response.max.bytes", "num.replica.fetchers", "replica.high.watermark.checkpoint.interval.ms",
    "fetch.purgatory.purge.interval.requests", "producer.purgatory.purge.interval.requests",
    "delete.records.purgatory.purge.interval.requests", "leader.imbalance.per.broker.percentage",
    "leader.imbalance.check.interval.seconds", "unclean.leader.election.enable", "inter.broker.protocol.version",
    "security.inter.broker.protocol", "inter.broker.listener.name", "replica.selector.class",
    "auto.leader.rebalance.enable",
    # SocketServerConfigs
    "listeners", "advertised.listeners", "listener.security.protocol.map", "socket.send.buffer.bytes",
    "socket.receive.buffer.bytes", "socket.request.max.bytes", "max.connections", "max.connections.per.ip",
    "connections.max.idle.ms", "num.network.threads",
    # ControlledShutdownConfigs
    "controlled.shutdown.enable", "controlled.shutdown.max.retries", "controlled.shutdown.retry.backoff.ms",
    # ServerLogConfigs and topic-level synonyms
    "num.partitions", "log.dirs", "log.dir", "log.segment.bytes", "log.roll.hours", "log.retention.hours",
    "log.retention.minutes", "log.retention.ms", "log.retention.bytes", "log.retention.check.interval.ms",
    "log.cleanup.policy", "log.cleaner.enable", "log.flush.interval.messages", "log.flush.interval.ms",
    "log.message.timestamp.type", "min.insync.replicas", "compression.type", "message.max.bytes",
    "num.recovery.threads.per.data.dir", "auto.create.topics.enable",
    # server, group coordinator and transaction log configs
    "broker.id", "broker.rack", "delete.topic.enable", "num.io.threads", "background.threads",
    "offsets.topic.replication.factor", "offsets.topic.num.partitions", "offsets.retention.minutes",
    "group.initial.rebalance.delay.ms", "group.min.session.timeout.ms", "group.max.session.timeout.ms",
    "transaction.state.log.replication.factor", "transaction.state.log.min.isr",
    "transaction.state.log.num.partitions",
}  # fmt: skip
ZK_SESSION_TIMEOUT_MS_DEFAULT = 18000

# the images' volumes (their Dockerfiles' VOLUME) and the debezium 3.1 tags (3.1, 3.1.N.Final, latest)
KAFKA_VOLUMES = {"/kafka/data", "/kafka/logs", "/kafka/config"}
ZOOKEEPER_VOLUMES = {"/zookeeper/data", "/zookeeper/txns", "/zookeeper/conf"}
PUBLISHED_TAG = re.compile(r"^(3\.1|3\.1\.\d+\.Final|latest)$")


def services(*files: Path) -> dict[str, dict[str, Any]]:
    return load_stack("kafka", list(files), ENV, {}).services


def property_name(variable: str) -> str:
    return variable.removeprefix("KAFKA_").lower().replace("_", ".")


def contract_problems(service: str, env: dict[str, Any]) -> list[str]:
    """What in a broker's environment the debezium image would not do what the stack means."""
    problems = []
    for var in sorted(env):
        if var in KAFKA_ENTRYPOINT_OVERWRITES:
            problems.append(f"{service}: {var} is overwritten by the image's entrypoint")
        elif var.startswith("KAFKA_") and var not in KAFKA_SCRIPT_VARS | SKIPPED_BY_ENTRYPOINT:
            if property_name(var) not in BROKER_CONFIGS_3_9:
                problems.append(f"{service}: {var} becomes {property_name(var)!r}, not a Kafka 3.9 broker config")
        elif not var.startswith("KAFKA_") and var not in KAFKA_ENTRYPOINT_READS:
            problems.append(f"{service}: the image does not read {var}")
    return problems


BROKERS = [f"kafka-{i}" for i in (1, 2, 3)]
MEMBERS = [f"zookeeper-{i}" for i in (1, 2, 3)]


@pytest.mark.parametrize("files", [[STACK], [STACK, EXTERNAL]], ids=["stack", "stack+external"])
def test_every_broker_variable_is_one_the_image_reads(files: list[Path]) -> None:
    found = services(*files)
    problems = [p for b in BROKERS for p in contract_problems(b, found[b]["environment"])]
    assert problems == []
    for m in MEMBERS:
        assert set(found[m]["environment"]) <= ZOOKEEPER_ENTRYPOINT_READS | ZOOKEEPER_PROCESS_READS, m


def test_a_misspelt_variable_is_caught() -> None:
    env = dict(services(STACK)["kafka-1"]["environment"])
    env["KAFKA_MIN_INSYNC_REPLICA"] = "2"  # min.insync.replicas, misspelt
    env["KAFKA_BROKER_ID"] = "9"
    env["HEAPOPTS"] = "-Xmx1g"
    assert contract_problems("kafka-1", env) == [
        "kafka-1: the image does not read HEAPOPTS",
        "kafka-1: KAFKA_BROKER_ID is overwritten by the image's entrypoint",
        "kafka-1: KAFKA_MIN_INSYNC_REPLICA becomes 'min.insync.replica', not a Kafka 3.9 broker config",
    ]


def test_heap_ids_and_timing_follow_the_image_and_kafka() -> None:
    for name in BROKERS:
        s = services(STACK)[name]
        env = s["environment"]
        # HEAP_OPTS does nothing on the image (its sed misses the indented line): KAFKA_HEAP_OPTS works
        assert "HEAP_OPTS" not in env and env["KAFKA_HEAP_OPTS"].startswith("-Xms")
        # NODE_ID, not the deprecated BROKER_ID (which the image reads only without NODE_ID, with a warning)
        assert env["NODE_ID"] == name[-1] and "BROKER_ID" not in env
        # a restarted broker must wait out its old ZooKeeper session, or it fails "already registered"
        session_ms = int(env.get("KAFKA_ZOOKEEPER_SESSION_TIMEOUT_MS", ZK_SESSION_TIMEOUT_MS_DEFAULT))
        delay_ns = s["deploy"]["restart_policy"]["delay"]
        assert delay_ns > session_ms * 10**6, (name, delay_ns, session_ms)
        # the health check gives a log recovery minutes before the task is killed
        health = s["healthcheck"]
        budget = health["start_period"] + health["retries"] * health["interval"]
        assert health["start_period"] >= 5 * 60 * 10**9 and budget >= 10 * 60 * 10**9


def test_data_and_logs_where_the_image_keeps_them_and_logs_bounded() -> None:
    found = services(STACK)
    for name in BROKERS:
        mounts = {m["target"]: m for m in found[name]["volumes"]}
        assert mounts["/kafka/data"]["type"] == "volume" and set(mounts) <= KAFKA_VOLUMES
        # log4j rolls /kafka/logs hourly and never deletes: a size-capped tmpfs, not a growing volume
        assert mounts["/kafka/logs"]["type"] == "tmpfs" and mounts["/kafka/logs"]["tmpfs"]["size"] > 0
    for name in [*BROKERS, *MEMBERS]:
        log = found[name]["logging"]
        assert log["driver"] == "json-file" and log["options"]["max-size"] and log["options"]["max-file"]
    for name in MEMBERS:
        targets = {m["target"] for m in found[name]["volumes"]}
        assert targets == {"/zookeeper/data", "/zookeeper/txns"} and targets <= ZOOKEEPER_VOLUMES


def test_default_images_are_published_tags_of_the_zookeeper_line() -> None:
    for name, s in services(STACK).items():
        repo, _, tag = s["image"].rpartition(":")
        assert repo in ("quay.io/debezium/kafka", "quay.io/debezium/zookeeper"), name
        assert PUBLISHED_TAG.match(tag), f"{name}: {tag} is not a published 3.1 tag"


def test_a_restarting_member_is_looked_up_again_fast() -> None:
    # a stopped member's dnsrr name resolves nowhere until its new task runs; where no upstream DNS
    # answers, glibc's default (2 attempts x 5 s) and Java's 10 s negative cache each held up an
    # election by 10 s (measured on the lab: the leader's restart left no leader for 10.7 s, 2.8 s with 1 s x 2)
    for m in MEMBERS:
        env = services(STACK)[m]["environment"]
        options = dict(o.split(":") for o in env["RES_OPTIONS"].split())
        assert int(options["timeout"]) * int(options["attempts"]) <= 4, m
        assert "-Dsun.net.inetaddr.negative.ttl=1" in env["JVMFLAGS"].split(), m
        # ... and its new address is found at once (Java's default keeps an answer for 30 s: the
        # other members asked its old address, and an election during a roll waited 27 s)
        assert "-Dsun.net.inetaddr.ttl=1" in env["JVMFLAGS"].split(), m
