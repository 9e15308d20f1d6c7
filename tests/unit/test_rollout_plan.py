"""Rollout order and `swarmctl update` planning (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from swarmctl.errors import InputError
from swarmctl.ops.update import Step, plan_order, plan_update


def service(
    short: str, image: str = "img:1", env: list[str] | None = None, labels: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "ID": f"id-{short}",
        "Version": {"Index": 5},
        "Spec": {
            "Name": f"st_{short}",
            "Labels": {"com.docker.stack.namespace": "st", "com.docker.stack.image": image, **(labels or {})},
            "TaskTemplate": {"ContainerSpec": {"Image": image, "Env": env or []}, "ForceUpdate": 0},
            "Mode": {"Replicated": {"Replicas": 1}},
        },
    }


ZK = {"io.swarmctl.check": "zookeeper", "io.swarmctl.rollout.group": "zookeeper", "io.swarmctl.rollout.order": "1"}
KAFKA = {"io.swarmctl.check": "kafka", "io.swarmctl.rollout.group": "kafka", "io.swarmctl.rollout.order": "2"}
CURRENT = {
    **{f"st_zookeeper-{i}": service(f"zookeeper-{i}", labels=ZK) for i in (1, 2, 3)},
    **{f"st_kafka-{i}": service(f"kafka-{i}", labels=KAFKA) for i in (1, 2, 3)},
    "st_web": service("web"),
}


def step(short: str) -> Step:
    svc = CURRENT[f"st_{short}"]
    return Step(svc["Spec"]["Name"], short, svc, svc["Spec"], ())


def test_order_follows_the_stack_and_the_application() -> None:
    steps = [step(n) for n in ("kafka-2", "zookeeper-3", "web", "kafka-1", "zookeeper-1", "zookeeper-2", "kafka-3")]
    ordered = plan_order(steps, last={"zookeeper-1", "kafka-2"})
    assert [s.short for s in ordered] == [
        "web",  # order 0 (no x-swarmctl rollout)
        "zookeeper-2",
        "zookeeper-3",
        "zookeeper-1",  # the ZooKeeper leader: last of its group
        "kafka-1",
        "kafka-3",
        "kafka-2",  # the Kafka controller: last of its group
    ]


def test_update_image_env_and_force() -> None:
    steps = plan_update("st", CURRENT, [], {"zookeeper-1": "img:2"}, {"kafka-2": {"A": "1"}}, force=False)
    by = {s.short: s for s in steps}
    assert set(by) == {"zookeeper-1", "kafka-2"}
    zk = by["zookeeper-1"]
    assert zk.spec["TaskTemplate"]["ContainerSpec"]["Image"] == "img:2"
    assert zk.spec["Labels"]["com.docker.stack.image"] == "img:2"
    assert zk.fields == ("Labels.com.docker.stack.image", "TaskTemplate.ContainerSpec.Image")
    assert CURRENT["st_zookeeper-1"]["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == "img:1"  # not mutated
    assert by["kafka-2"].spec["TaskTemplate"]["ContainerSpec"]["Env"] == ["A=1"]

    forced = plan_update("st", CURRENT, ["web"], {}, {}, force=True)
    assert [s.short for s in forced] == ["web"] and forced[0].fields == ("TaskTemplate.ForceUpdate",)
    assert len(plan_update("st", CURRENT, [], {}, {}, force=True)) == len(CURRENT)


@pytest.mark.parametrize(
    ("services", "images", "message"),
    [
        (["nope"], {}, "no service nope in stack st"),
        ([], {}, "nothing to update: name --image"),
    ],
)
def test_update_errors(services: list[str], images: dict[str, str], message: str) -> None:
    with pytest.raises(InputError, match=message):
        plan_update("st", CURRENT, services, images, {}, force=False)


def test_an_update_already_done_plans_nothing_and_is_no_error() -> None:
    assert plan_update("st", CURRENT, [], {"web": "img:1"}, {}, force=False) == []
