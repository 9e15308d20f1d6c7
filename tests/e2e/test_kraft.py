"""The KRaft stack (3 controllers, 3 brokers) on the lab: deploy, verify through the controller
quorum, a cluster ID kept across deploys, and update in KRaft's order behind its gates.

The lab cannot run Apache Kafka: each controller is the lab image's KRaft stand-in (it answers
ApiVersions and DescribeQuorum, elects the voter up the longest, and can be made to lag with
SWARMCTL_LAB_LAG=1); each broker is tansu behind the shim, announcing itself to the controllers as
an observer. What the stand-in proves and what it does not is in the README ("The KRaft stack").
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Lab
from tests.helpers import Run, swarmctl, wait_for

ROOT = Path(__file__).resolve().parents[2]
STACK = "kafka-kraft"
FILES = ["-f", str(ROOT / "stacks/kafka-kraft/stack.yml"), "-f", str(ROOT / "tests/stacks/kafka-kraft-fast.yml")]
IMAGE = "swarmctl-lab/kafka:tansu-0.6"
NEXT = "swarmctl-lab/kafka:kraft-next"
CONTROLLERS = [f"controller-{i}" for i in (1, 2, 3)]
BROKERS = [f"kafka-{i}" for i in (1, 2, 3)]
CLUSTER_ID_CONFIG = f"swarmctl-generated_{STACK}_KAFKA_CLUSTER_ID"


@pytest.fixture(scope="module")
def kraft(swarm: Lab) -> Iterator[Lab]:
    for name in swarm.names:
        with swarm.docker(name) as api:
            api.tag(IMAGE, "swarmctl-lab/kafka", "kraft-next")
    run = swarmctl("deploy", STACK, *FILES, "-i", str(swarm.inventory), "--json", timeout=900)
    assert run.rc == 0, str(run)
    assert run.json()["verify"]["ok"] is True, str(run)
    yield swarm
    swarmctl("rm", STACK, "-i", str(swarm.inventory))


def verify(lab: Lab) -> Run:
    return swarmctl("verify", STACK, "-i", str(lab.inventory), "--json", timeout=400)


def checks(run: Run) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in run.json()["checks"]}


def leader(lab: Lab) -> str:
    got = checks(verify(lab))["kraft quorum leader"]["got"]
    found = re.match(r"(controller-\d) \(node \d+\)$", got)
    assert found, got
    return found.group(1)


def cluster_id(lab: Lab) -> tuple[str, str]:
    """(the kept config's ID, the cluster ID it holds)."""
    with lab.docker("lab1") as api:
        (config,) = api.configs(filters={"name": CLUSTER_ID_CONFIG})
    return config["ID"], base64.b64decode(config["Spec"]["Data"]).decode()


def service_env(lab: Lab, short: str) -> dict[str, str]:
    with lab.docker("lab1") as api:
        spec = api.inspect_service(f"{STACK}_{short}")["Spec"]
    return dict(e.split("=", 1) for e in spec["TaskTemplate"]["ContainerSpec"].get("Env") or [])


def running_tasks(lab: Lab, short: str) -> set[str]:
    with lab.docker("lab1") as api:
        return {t["ID"] for t in api.tasks(filters={"service": f"{STACK}_{short}", "desired-state": "running"})}


def test_verify_shows_one_leader_every_voter_caught_up_and_the_brokers_as_observers(kraft: Lab) -> None:
    run = verify(kraft)
    assert run.rc == 0, str(run)
    by_name = checks(run)
    lead = by_name["kraft quorum leader"]
    assert lead["ok"] and re.fullmatch(r"controller-\d \(node 10\d\)", lead["got"]), lead
    assert by_name["kraft quorum voters"]["got"] == "voters [101, 102, 103]"
    for i in (1, 2, 3):
        voter = by_name[f"kraft voter controller-{i} (node {100 + i})"]
        assert voter["ok"] and ("leader" in voter["got"] or "follower" in voter["got"]), voter
        assert by_name[f"kraft controller-{i} DescribeQuorum"]["ok"]
    observers = by_name["kraft quorum observers"]
    assert observers["ok"] and observers["got"] == "observers [1, 2, 3]", observers
    for i in (1, 2, 3):
        assert by_name[f"kafka kafka-{i} at kafka-{i}:9092"]["ok"]
    human = swarmctl("verify", STACK, "-i", str(kraft.inventory))
    assert human.rc == 0 and "kraft quorum leader" in human.stderr + human.stdout, str(human)


def test_the_cluster_id_is_generated_once_and_every_node_and_redeploy_keeps_it(kraft: Lab) -> None:
    config_id, value = cluster_id(kraft)
    assert len(value) == 22
    assert {service_env(kraft, s)["CLUSTER_ID"] for s in CONTROLLERS + BROKERS} == {value}
    again = swarmctl("deploy", STACK, *FILES, "-i", str(kraft.inventory), "--plan", "--json")
    assert again.rc == 0 and again.json()["changes"] == [], str(again)
    assert cluster_id(kraft) == (config_id, value)


def test_update_restarts_follower_controllers_then_the_leader_then_brokers_one_at_a_time(kraft: Lab) -> None:
    lead = leader(kraft)
    followers = sorted(c for c in CONTROLLERS if c != lead)
    before = {s: running_tasks(kraft, s) for s in CONTROLLERS + BROKERS}
    images = [f"--image={s}={NEXT}" for s in CONTROLLERS + BROKERS]
    run = swarmctl("update", STACK, *images, "--resolve-image", "never", "--timeout", "120", "-i",
                   str(kraft.inventory), timeout=900)  # fmt: skip
    assert run.rc == 0, str(run)
    lines = run.stderr.splitlines()
    order = [m.group(1) for line in lines if (m := re.search(rf"update service {STACK}_(\S+) ", line))]
    assert order == [*followers, lead, *BROKERS], "\n".join(lines)
    for s in order:  # each gate said what it saw, before and after
        assert any(line.startswith(f"{s}: safe to stop (") for line in lines), s
        assert any(line.startswith(f"{s}: application check passed (") for line in lines), s
    assert any("caught up without node" in line for line in lines)
    after = {s: running_tasks(kraft, s) for s in order}
    assert all(after[s] and not after[s] & before[s] for s in order)  # each one restarted
    assert verify(kraft).rc == 0


def test_a_controller_left_behind_stops_the_roll_naming_it_and_nothing_after_it_restarts(kraft: Lab) -> None:
    lead = leader(kraft)
    first, second = sorted(c for c in CONTROLLERS if c != lead)
    untouched = [second, lead, *BROKERS]
    before = {s: running_tasks(kraft, s) for s in untouched}
    images = [f"--image={s}={IMAGE}" for s in CONTROLLERS + BROKERS]
    run = swarmctl("update", STACK, *images, "--env", f"{first}:SWARMCTL_LAB_LAG=1", "--resolve-image", "never",
                   "--timeout", "30", "-i", str(kraft.inventory), timeout=900)  # fmt: skip
    assert run.rc == 1, str(run)
    error = run.stderr.strip().splitlines()[-1]
    assert f"update of {first} failed" in error and "never caught up" in error, error
    assert f"{first} rolled back" in error
    assert {s: running_tasks(kraft, s) for s in untouched} == before  # nothing after it restarted
    assert "SWARMCTL_LAB_LAG" not in service_env(kraft, first)  # rolled back to its spec before
    wait_for("the quorum whole again", lambda: verify(kraft), lambda r: r.rc == 0, timeout=120, every=2)
