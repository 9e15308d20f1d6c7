"""Convergence judged from recorded services and tasks, and the rollout engine's order, gates,
failure and rollback paths over a fake engine replaying recorded API responses (tests/recorded).

The same paths against a real swarm: tests/e2e/test_update.py and test_deploy.py.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest

from swarmctl.converge import assess, wait_converged
from swarmctl.errors import Busy, TimeoutExpired, Unavailable
from swarmctl.facts.nodes import node_view
from swarmctl.ops.update import RolloutFailed, RolloutInterrupted, Step, roll_out
from swarmctl.spec import parse_time
from tests.unit.fakeengine import FakeEngine, FakeGates, FakeService, recorded

CONVERGENCE = recorded("convergence")


@pytest.mark.parametrize("case", sorted(CONVERGENCE))
def test_convergence_of_recorded_services(case: str) -> None:
    rec = CONVERGENCE[case]
    written = rec["written_at"]
    written_at = parse_time(written) if isinstance(written, str) else written
    p = assess(rec["service"], rec["tasks"], written_at, parse_time(rec["since"]), parse_time(rec["now"]), {}, ())
    assert p.state == rec["expect"], (p, [t["Status"]["State"] for t in rec["tasks"]])
    if p.state == "failed":
        assert "exit" in p.message or "paused" in p.message  # the task error or swarm's reason, in words


def test_running_tasks_inside_the_monitor_window_are_not_converged_yet() -> None:
    rec = CONVERGENCE["running"]
    started = max(parse_time(t["Status"]["Timestamp"]) for t in rec["tasks"])
    p = assess(rec["service"], rec["tasks"], None, parse_time(rec["since"]), started + 1, {}, ())
    assert p.state == "updating" and "watching" in p.message


def test_an_update_status_from_before_our_write_is_not_ours() -> None:
    rec = CONVERGENCE["rolled-back"]
    # a rollback that started before this run wrote the service says nothing about our write
    late = parse_time(rec["service"]["UpdateStatus"]["StartedAt"]) + 60
    p = assess(rec["service"], rec["tasks"], late, parse_time(rec["since"]), parse_time(rec["now"]), {}, ())
    assert p.state != "rolled back"


GLOBAL = recorded("global")


def global_case(name: str, **placement: Any) -> tuple[dict[str, Any], list[dict[str, Any]], float, float]:
    rec = GLOBAL[name]
    svc = copy.deepcopy(rec["service"])
    if placement:
        svc["Spec"]["TaskTemplate"]["Placement"] = placement
    return svc, rec["tasks"], parse_time(GLOBAL["since"]), parse_time(rec["now"])


def test_a_new_global_service_without_tasks_waits_for_them_while_a_node_may_run_it() -> None:
    nodes = [node_view(n) for n in GLOBAL["nodes"]]
    # recorded: constrained to a label no node has, no task and DesiredTasks 0 - converged
    svc, tasks, since, now = global_case("nowhere")
    assert tasks == [] and svc["ServiceStatus"]["DesiredTasks"] == 0
    assert assess(svc, tasks, 0.0, since, now, {}, nodes).state == "converged"
    # the same listing without the constraint: what a global service created a moment ago shows
    # until swarm made its tasks (a moment no recording catches on purpose)
    svc, tasks, since, now = global_case("nowhere", Constraints=[])
    p = assess(svc, tasks, 0.0, since, now, {}, nodes)
    assert (p.state, p.message) == ("updating", "waiting for swarm to create its tasks")
    # a constraint some node meets, as swarm compares it (without case); written by an update too
    svc, tasks, since, now = global_case("nowhere", Constraints=["node.role==Manager"])
    assert assess(svc, tasks, 0.0, since, now, {}, nodes).state == "updating"
    assert assess(svc, tasks, now - 1, since, now, {}, nodes).state == "updating"
    # not created by this run: its DesiredTasks is swarm's word
    assert assess(svc, tasks, None, since, now, {}, nodes).state == "converged"
    # no node ready and active: nothing to wait for
    drained = [dataclasses.replace(n, availability="drain") for n in nodes]
    assert assess(svc, tasks, 0.0, since, now, {}, drained).state == "converged"
    svc, tasks, since, now = global_case("everywhere")
    p = assess(svc, tasks, 0.0, since, now, {}, nodes)
    assert (p.state, p.running, p.desired) == ("converged", len(nodes), len(nodes))


ZK = {"io.swarmctl.check": "zookeeper", "io.swarmctl.rollout.group": "zookeeper", "io.swarmctl.rollout.order": "1"}
KAFKA = {"io.swarmctl.check": "kafka", "io.swarmctl.rollout.group": "kafka", "io.swarmctl.rollout.order": "2"}


def steps_for(engine: FakeEngine, command: list[str] | None = None) -> list[Step]:
    good = command or recorded("rollout")["updated"]["command"]
    out = []
    for svc in engine.services():
        spec = {**svc["Spec"], "TaskTemplate": {**svc["Spec"]["TaskTemplate"]}}
        spec["TaskTemplate"]["ContainerSpec"] = {**spec["TaskTemplate"]["ContainerSpec"], "Command": good}
        name = svc["Spec"]["Name"]
        out.append(Step(name, name.removeprefix("kafka_"), svc, spec, ("TaskTemplate.ContainerSpec.Command",)))
    return out


def stack(outcomes: dict[str, str] | None = None) -> FakeEngine:
    outcomes = outcomes or {}
    members: list[tuple[str, dict[str, str], str]] = []
    for i in (1, 2, 3):
        members.append((f"kafka_zookeeper-{i}", ZK, outcomes.get(f"zookeeper-{i}", "ok")))
    for i in (1, 2):
        members.append((f"kafka_kafka-{i}", KAFKA, outcomes.get(f"kafka-{i}", "ok")))
    return FakeEngine.rollout(members)


def test_one_at_a_time_in_stack_order_leader_and_controller_last_behind_the_gates() -> None:
    engine = stack()
    gates = FakeGates(last={"zookeeper-2", "kafka-1"})
    results = roll_out(engine, steps_for(engine), gates, timeout=30)
    order = ["zookeeper-1", "zookeeper-3", "zookeeper-2", "kafka-2", "kafka-1"]
    assert [r.name for r in results] == order and all(r.result == "updated" for r in results)
    assert engine.writes == [(f"kafka_{n}", "update") for n in order]
    # each service's application gate passed before the next service was written
    assert [e for e in gates.events if e.startswith("gate")] == [f"gate {n}" for n in order]


def test_a_failed_update_stops_the_rollout_and_leaves_the_rest_untouched() -> None:
    engine = stack({"zookeeper-3": "fail"})
    with pytest.raises(RolloutFailed) as e:
        roll_out(engine, steps_for(engine), FakeGates(last={"zookeeper-2"}), timeout=30)
    by_name = {r.name: r.result for r in e.value.results}
    assert by_name == {"zookeeper-1": "updated", "zookeeper-3": "rolled back", "zookeeper-2": "not started",
                       "kafka-1": "not started", "kafka-2": "not started"}  # fmt: skip
    assert "rolled back by swarm" in str(e.value) and "left as they were: zookeeper-2, kafka-1, kafka-2" in str(e.value)
    assert [w for w, _ in engine.writes] == ["kafka_zookeeper-1", "kafka_zookeeper-3"]  # swarm rolled back itself


def test_an_application_gate_that_never_passes_rolls_the_service_back_explicitly() -> None:
    engine = stack()
    gates = FakeGates(failing={"zookeeper-1"})
    with pytest.raises(RolloutFailed) as e:
        roll_out(engine, steps_for(engine), gates, timeout=30)
    first = e.value.results[0]
    assert (first.name, first.result) == ("zookeeper-1", "rolled back")
    assert "application check of zookeeper-1 did not pass" in first.detail
    assert engine.writes == [("kafka_zookeeper-1", "update"), ("kafka_zookeeper-1", "rollback")]
    assert "spec differs" not in first.detail  # back on the spec it had before


def test_nothing_starts_while_the_application_is_unhealthy() -> None:
    engine = stack()
    with pytest.raises(RolloutFailed) as e:
        roll_out(engine, steps_for(engine), FakeGates(unhealthy_before={"kafka-2"}), timeout=30)
    assert "not starting: kafka-2 is not healthy" in str(e.value) and engine.writes == []
    assert {r.result for r in e.value.results} == {"not started"}


def test_without_gates_every_step_still_waits_for_convergence() -> None:
    engine = stack()
    results = roll_out(engine, steps_for(engine)[:2], None, timeout=30)
    assert [r.result for r in results] == ["updated", "updated"]


class InterruptingGates(FakeGates):
    """Gates whose wait for one service is where the operator presses Ctrl-C."""

    def __init__(self, at: str):
        super().__init__()
        self.at = at

    def wait(self, short: str, timeout: float) -> str:
        if short == self.at:
            raise KeyboardInterrupt
        return super().wait(short, timeout)


def test_ctrl_c_after_swarm_completed_an_update_leaves_it_updated_and_reports() -> None:
    engine = stack()
    with pytest.raises(RolloutInterrupted) as e:
        roll_out(engine, steps_for(engine), InterruptingGates("zookeeper-2"), timeout=30)
    assert e.value.exit_status == 130
    by_name = {r.name: (r.result, r.detail) for r in e.value.results}
    assert by_name["zookeeper-1"][0] == "updated"
    assert by_name["zookeeper-2"] == ("updated", "interrupted after swarm completed its update: left updated")
    assert {by_name[n][0] for n in ("zookeeper-3", "kafka-1", "kafka-2")} == {"not started"}
    assert "updated: zookeeper-1, zookeeper-2; not started: zookeeper-3, kafka-1, kafka-2" in str(e.value)
    assert [n for n, _ in engine.writes] == ["kafka_zookeeper-1", "kafka_zookeeper-2"]  # the rest untouched


class MomentarilyUnanswering(FakeEngine):
    """A manager that fails its first polls the way a loaded or leaderless swarm does."""

    failures: list[Exception]

    def services(self, filters: Any = None, status: bool = False) -> list[Any]:
        if self.failures:
            raise self.failures.pop(0)
        return super().services(filters, status)


def unanswering(failures: list[Exception]) -> MomentarilyUnanswering:
    engine = MomentarilyUnanswering()
    engine.services_by_id = FakeEngine.rollout([("kafka_zookeeper-1", ZK, "ok")]).services_by_id
    engine.failures = failures
    return engine


def test_a_convergence_wait_asks_again_when_the_manager_cannot_answer_for_a_moment() -> None:
    busy = Busy("lab1", "list services: rpc error: code = DeadlineExceeded desc = context deadline exceeded")
    leaderless = Unavailable("lab1", "list services: The swarm does not have a leader")
    engine = unanswering([busy, leaderless])
    progress = wait_converged(engine, ["kafka_zookeeper-1"], {}, timeout=30, poll=0)
    assert progress["kafka_zookeeper-1"].state == "converged" and engine.failures == []


def test_a_manager_that_never_answers_ends_the_wait_at_its_deadline_naming_why() -> None:
    never: list[Exception] = [
        Busy("lab1", "list services: rpc error: code = DeadlineExceeded desc = context deadline exceeded")
    ] * 100
    with pytest.raises(TimeoutExpired) as e:
        wait_converged(unanswering(never), ["kafka_zookeeper-1"], {}, timeout=1.5, poll=0)
    assert "not converged after 1.5s" in str(e.value) and "DeadlineExceeded" in str(e.value)


class CountingEngine(FakeEngine):
    calls: list[str]

    def services(self, filters: Any = None, status: bool = False) -> list[Any]:
        self.calls.append("services")
        return super().services(filters, status)

    def tasks(self, filters: Any = None) -> list[dict[str, Any]]:
        self.calls.append("tasks")
        return super().tasks(filters)


def test_a_long_wait_asks_the_manager_less_often_while_nothing_changes() -> None:
    rec = CONVERGENCE["starting"]  # a task that stays pending: nothing changes
    engine = CountingEngine()
    engine.services_by_id = {rec["service"]["ID"]: FakeService({"before": rec})}
    engine.calls = []
    with pytest.raises(TimeoutExpired):
        wait_converged(engine, [rec["service"]["Spec"]["Name"]], {}, timeout=3, poll=0.1, max_poll=1.0)
    polls = engine.calls.count("services")
    # one task listing per poll, and backing off: polls every 0.1 s would be 30
    assert engine.calls.count("tasks") == polls, engine.calls
    assert 4 <= polls <= 12, polls


def test_each_member_waits_until_it_is_safe_to_stop_before_it_is_written() -> None:
    engine = stack()
    gates = FakeGates(last={"zookeeper-2"})
    roll_out(engine, steps_for(engine), gates, timeout=30)
    order = ["zookeeper-1", "zookeeper-3", "zookeeper-2", "kafka-1", "kafka-2"]
    asked = [e for e in gates.events if e.startswith(("ready", "gate"))]
    assert asked == [x for n in order for x in (f"ready {n}", f"gate {n}")]


def test_a_member_never_safe_to_stop_stops_the_rollout_before_it_is_changed() -> None:
    engine = stack()
    gates = FakeGates(last={"zookeeper-2"}, unsafe={"zookeeper-3"})
    with pytest.raises(RolloutFailed) as e:
        roll_out(engine, steps_for(engine), gates, timeout=30)
    by_name = {r.name: r.result for r in e.value.results}
    assert by_name == {"zookeeper-1": "updated", "zookeeper-3": "failed", "zookeeper-2": "not started",
                       "kafka-1": "not started", "kafka-2": "not started"}  # fmt: skip
    assert str(e.value).startswith("not updating zookeeper-3: zookeeper-3 was not safe to stop")
    assert "already updated: zookeeper-1" in str(e.value)
    assert engine.writes == [("kafka_zookeeper-1", "update")]  # zookeeper-3 never written, nothing after it
