"""Variables a stack generates once and keeps (x-swarmctl.generate): read from the files, planned
(given > kept > new), kept as swarm configs on a fake engine. End to end: tests/e2e/test_kraft.py."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from swarmctl import labels
from swarmctl.compose.loader import generated_variables
from swarmctl.errors import InputError
from swarmctl.facts.generated import config_body, config_name, parse_generated
from swarmctl.ops.generated import kafka_cluster_id, plan_generated

ROOT = Path(__file__).resolve().parents[2]
KINDS = {"kafka-cluster-id": lambda: "NEW"}


def test_the_kraft_stack_asks_for_a_kafka_cluster_id() -> None:
    assert generated_variables([ROOT / "stacks/kafka-kraft/stack.yml"]) == {"KAFKA_CLUSTER_ID": "kafka-cluster-id"}
    assert generated_variables([ROOT / "stacks/kafka/stack.yml"]) == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x-swarmctl: {generate: {ID: uuid}}\nservices: {}\n", "unknown kind 'uuid' (known: kafka-cluster-id)"),
        ("x-swarmctl: {generate: {'1ID': kafka-cluster-id}}\nservices: {}\n", "'1ID' is not a variable name"),
        ("x-swarmctl: {make: {}}\nservices: {}\n", "takes only `generate`"),
    ],
)
def test_a_malformed_generate_is_one_line_of_input_error(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "stack.yml"
    f.write_text(text)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        generated_variables([f])


def test_a_given_value_wins_a_kept_one_is_reused_and_only_a_missing_one_is_made() -> None:
    wanted = {"A": "kafka-cluster-id", "B": "kafka-cluster-id", "C": "kafka-cluster-id"}
    planned = plan_generated(wanted, kept={"B": "kept-b"}, given={"A"}, make=KINDS)
    assert planned.values == {"B": "kept-b", "C": "NEW"} and planned.new == {"C": "NEW"} and planned.given == ("A",)
    assert [c.name for c in planned.changes("kraft")] == ["swarmctl-generated_kraft_C"]


def test_kept_values_are_configs_labelled_with_their_stack_and_variable() -> None:
    body = config_body("kafka-kraft", "KAFKA_CLUSTER_ID", "abc")
    assert body["Name"] == "swarmctl-generated_kafka-kraft_KAFKA_CLUSTER_ID"
    listed = [{"ID": "1", "Spec": body}, {"ID": "2", "Spec": config_body("other", "KAFKA_CLUSTER_ID", "zzz")},
              {"ID": "3", "Spec": {**body, "Data": "not base64!"}}]  # fmt: skip
    assert parse_generated("kafka-kraft", listed) == {"KAFKA_CLUSTER_ID": "abc"}
    assert body["Labels"] == {labels.GENERATED_STACK: "kafka-kraft", labels.GENERATED_VARIABLE: "KAFKA_CLUSTER_ID"}
    long = config_name("s" * 60, "KAFKA_CLUSTER_ID")
    assert len(long) <= 64 and long != config_name("s" * 61, "KAFKA_CLUSTER_ID")


def test_a_kafka_cluster_id_is_what_kafka_storage_random_uuid_prints() -> None:
    for _ in range(200):
        value = kafka_cluster_id()
        assert len(value) == 22 and not value.startswith("-")
        assert len(base64.urlsafe_b64decode(value + "==")) == 16


def test_a_broken_stack_that_generates_is_refused_before_any_connection(tmp_path: Path) -> None:
    from tests.helpers import swarmctl

    # nothing listens on port 9 of loopback: had deploy connected (and kept a cluster ID), it would
    # say so; the file's error comes first, and alone
    (tmp_path / "hosts.yml").write_text(
        "ssh: {port: 9, connect_timeout: 2}\nhosts:\n  a: {address: 127.0.0.1, role: manager}\n"
    )
    (tmp_path / "stack.yml").write_text(
        "x-swarmctl: {generate: {KAFKA_CLUSTER_ID: kafka-cluster-id}}\n"
        "services:\n  a: {image: x, environment: {CLUSTER_ID: '${KAFKA_CLUSTER_ID}'}, replicas: 2}\n"
    )
    run = swarmctl("deploy", "k", "-f", "stack.yml", "-i", "hosts.yml", cwd=tmp_path)
    assert run.rc == 2 and "stack.yml:" in run.stderr and "replicas" in run.stderr, str(run)
    assert "Traceback" not in run.stderr and "127.0.0.1" not in run.stderr, str(run)
