"""A stack's history: the revision format (a config recorded from the lab parses), what changed
between revisions, the rollback plan (revisions in -> steps or a one-line refusal out), and recording
against the fake engine's configs (numbering, the limit, history surviving `rm` and `deploy --prune`)."""

from __future__ import annotations

import base64
import copy
import gzip
from pathlib import Path
from typing import Any

import pytest

from swarmctl import labels
from swarmctl.errors import InputError
from swarmctl.facts.revisions import (
    MAX_NAME,
    Revision,
    Revisions,
    UnreadableRevision,
    config_name,
    parse_revision,
    parse_revisions,
    read_revisions,
    record_spec,
)
from swarmctl.facts.stack import read_objects
from swarmctl.inventory import load_inventory
from swarmctl.ops.history import compare, history_entries, prunable, record_revision
from swarmctl.ops.rollback import plan_rollback
from swarmctl.ops.update import update_stack
from tests.unit.fakeengine import FakeEngine, FakeGates, recorded

STACK = "web"


def spec(
    image: str = "swarmctl-lab/probe:py3", env: tuple[str, ...] = ("COLOR=blue",), force: int = 0
) -> dict[str, Any]:
    return {
        "Name": "web_app",
        "Labels": {labels.NAMESPACE: STACK, labels.IMAGE: image.split("@")[0]},
        "TaskTemplate": {
            "ContainerSpec": {"Image": image, "Env": list(env), "Secrets": [{"SecretName": "web_token"}]},
            "Networks": [{"Target": "web_default", "Aliases": ["app"]}],
            "ForceUpdate": force,
        },
        "Mode": {"Replicated": {"Replicas": 2}},
    }


def revision(number: int, services: dict[str, dict[str, Any]], command: str = "deploy") -> Revision:
    return Revision(STACK, number, f"2026-12-05T10:00:0{number}Z", "ops@desk", "0.1.0", command, "sha256:ab",
                    services=services)  # fmt: skip


def service(name: str, s: dict[str, Any], ident: str = "svc1") -> dict[str, Any]:
    live = copy.deepcopy(s)
    live["Name"] = name
    live["TaskTemplate"]["Networks"] = [{"Target": "net0001", "Aliases": ["app"]}]  # the engine keeps IDs
    live["TaskTemplate"]["ContainerSpec"]["Secrets"] = [{"SecretName": "web_token", "SecretID": "sec1"}]
    return {"ID": ident, "Version": {"Index": 10}, "Spec": live}


NETWORKS = {"net0001": "web_default"}
IDS = {"secret:web_token": "sec1"}


# -- the format ---------------------------------------------------------------------------------


def test_a_config_recorded_from_the_lab_parses() -> None:
    """tests/recorded/revisions.json: revisions 1 and 2 of a stack deployed on the lab (v1, then v2 with
    another image tag and COLOR changed), as `GET /configs` listed them."""
    configs = recorded("revisions")["configs"]
    revs = parse_revisions(STACK, configs)
    assert revs.numbers == [1, 2] and not revs.warnings
    first, second = revs.revisions
    assert first.command == "deploy" and first.files_digest.startswith("sha256:") and first.who
    assert sorted(first.services) == ["web_app", "web_side"]
    assert labels.NAMESPACE not in configs[0]["Spec"]["Labels"]  # what rm and deploy --prune pick by
    assert configs[0]["Spec"]["Name"] == "swarmctl-history_web_1"
    [change] = compare(first, second)
    assert (change.name, change.action) == ("app", "update")
    assert set(change.fields) == {
        "Labels.com.docker.stack.image",
        "TaskTemplate.ContainerSpec.Env",
        "TaskTemplate.ContainerSpec.Image",
    }
    assert change.detail == "image swarmctl-lab/probe:py3 -> swarmctl-lab/probe:py3-v2; env COLOR=blue -> green"


def test_encode_and_parse_round_trip() -> None:
    rev = revision(3, {"web_app": spec()}, "rollback")
    body = rev.config_body()
    assert body["Labels"] == {labels.HISTORY_STACK: STACK, labels.HISTORY_REVISION: "3"}
    back = parse_revision({"ID": "cfg1", "Spec": body})
    assert back == Revision(**{**rev.__dict__, "config_id": "cfg1"})
    assert rev.encode() == rev.encode()  # no timestamp in the gzip header


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"not base64!", "not gzip'd JSON"),
        (base64.b64encode(b"plain"), "not gzip'd JSON"),
        (base64.b64encode(gzip.compress(b"[1]", mtime=0)), "not a JSON object"),
        (base64.b64encode(gzip.compress(b'{"format": 2}', mtime=0)), "format 2"),
        (base64.b64encode(gzip.compress(b'{"format": 1, "services": {}, "stack": 7}', mtime=0)), "stack: expected str"),
    ],
)
def test_a_config_that_is_not_a_revision_is_named_not_fatal(data: bytes, why: str) -> None:
    config = {"ID": "x", "Spec": {"Name": "swarmctl-history_web_9", "Data": data.decode(),
                                  "Labels": {labels.HISTORY_STACK: STACK, labels.HISTORY_REVISION: "9"}}}  # fmt: skip
    with pytest.raises(UnreadableRevision, match=why):
        parse_revision(config)
    good = revision(1, {"web_app": spec()}).config_body()
    revs = parse_revisions(STACK, [config, {"ID": "y", "Spec": good}])
    assert revs.numbers == [1] and revs.configs == {9: "x", 1: "y"}
    assert "swarmctl-history_web_9 is not a readable revision" in revs.warnings[0]


def test_config_names_fit_swarm_rules() -> None:
    assert config_name("web", 12) == "swarmctl-history_web_12"
    long = "s" * 63
    a, b = config_name(long, 7), config_name(long[:-1] + "t", 7)
    assert len(a) <= MAX_NAME and a.endswith("_7") and a != b


def test_a_recorded_spec_keeps_network_names_and_drops_object_ids() -> None:
    live = service("web_app", spec())["Spec"]
    kept = record_spec(live, NETWORKS)
    assert kept["TaskTemplate"]["Networks"] == [{"Target": "web_default", "Aliases": ["app"]}]
    assert kept["TaskTemplate"]["ContainerSpec"]["Secrets"] == [{"SecretName": "web_token"}]
    assert live["TaskTemplate"]["Networks"][0]["Target"] == "net0001"  # the input is left alone


# -- what changed between revisions ------------------------------------------------------------------


def test_differences_per_service() -> None:
    one = revision(1, {"web_app": spec(), "web_old": spec()})
    two = revision(2, {"web_app": spec("swarmctl-lab/probe:v2", ("COLOR=green", "NEW=1")), "web_new": spec()})
    changes = {c.name: c for c in compare(one, two)}
    assert {n: c.action for n, c in changes.items()} == {"app": "update", "new": "create", "old": "remove"}
    assert (
        changes["app"].detail
        == "image swarmctl-lab/probe:py3 -> swarmctl-lab/probe:v2; env +NEW=1, COLOR=blue -> green"
    )
    same_tag = revision(3, {"web_app": spec("swarmctl-lab/probe:v2@sha256:" + "c" * 64, ("COLOR=green", "NEW=1"))})
    pinned = {c.name: c for c in compare(two, same_tag)}["app"]
    assert pinned.detail == "image swarmctl-lab/probe:v2 -> swarmctl-lab/probe:v2@cccccccccccc"
    forced = {c.name: c for c in compare(one, revision(2, {"web_app": spec(force=1), "web_old": spec()}))}["app"]
    assert forced.fields == ("TaskTemplate.ForceUpdate",)


def test_history_compares_each_revision_with_the_one_before_while_it_is_kept() -> None:
    revs = Revisions(STACK, (revision(4, {"web_app": spec()}), revision(5, {"web_app": spec(env=("COLOR=red",))})))
    first, second = history_entries(revs)
    assert first.compared_with is None and first.differences == ()  # revision 3 is no longer kept
    assert second.compared_with == 4 and second.differences[0].detail == "env COLOR=blue -> red"
    assert [
        c.action for c in history_entries(Revisions(STACK, (revision(1, {"web_app": spec()}),)))[0].differences
    ] == ["create"]


def test_prunable_keeps_the_newest() -> None:
    assert prunable([3, 1, 2, 5, 4], 3) == [1, 2]
    assert prunable([1, 2], 10) == []


# -- the rollback plan --------------------------------------------------------------------------------


def history_of(*revs: Revision) -> Revisions:
    return Revisions(STACK, tuple(revs), configs={r.number: f"cfg{r.number}" for r in revs})


V1 = revision(1, {"web_app": spec()})
V2 = revision(2, {"web_app": spec("swarmctl-lab/probe:v2", ("COLOR=green",))})


def test_rollback_defaults_to_the_revision_before_the_latest_and_restores_its_spec() -> None:
    current = {"web_app": service("web_app", spec("swarmctl-lab/probe:v2", ("COLOR=green",), force=3))}
    planned = plan_rollback(history_of(V1, V2), None, current, IDS, NETWORKS)
    assert planned.target.number == 1
    [step] = planned.steps
    assert step.short == "app"
    assert set(step.fields) == {"Labels.com.docker.stack.image", "TaskTemplate.ContainerSpec.Env",
                                "TaskTemplate.ContainerSpec.Image"}  # fmt: skip
    sent = step.spec["TaskTemplate"]
    assert sent["ContainerSpec"]["Image"] == "swarmctl-lab/probe:py3" and sent["ContainerSpec"]["Env"] == ["COLOR=blue"]
    assert sent["ForceUpdate"] == 3  # restored, not restarted on top
    assert sent["Networks"][0]["Target"] == "net0001" and sent["ContainerSpec"]["Secrets"][0]["SecretID"] == "sec1"
    # once there: nothing to do
    back = {"web_app": service("web_app", spec(force=3))}
    assert plan_rollback(history_of(V1, V2), 1, back, IDS, NETWORKS).steps == ()


@pytest.mark.parametrize(
    ("revs", "number", "current", "message"),
    [
        ((V1, V2), 7, {"web_app"}, "stack web has no revision 7 (its revisions: 1, 2)"),
        ((), None, {"web_app"}, "stack web has no recorded revisions"),
        ((V1,), None, {"web_app"}, "stack web has only revision 1: nothing before it"),
        ((V1, V2), 1, set(), "revision 1 of stack web has services that no longer exist: app (rollback changes "
                             "existing services; deploy them first); its revisions: 1, 2"),
    ],
)  # fmt: skip
def test_a_rollback_that_cannot_be_is_one_line_naming_the_revisions(
    revs: tuple[Revision, ...], number: int | None, current: set[str], message: str
) -> None:
    live = {n: service(n, spec()) for n in current}
    with pytest.raises(InputError) as e:
        plan_rollback(history_of(*revs), number, live, IDS, NETWORKS)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
    assert e.value.exit_status == 2


def test_a_rollback_needing_a_secret_that_is_gone_is_refused() -> None:
    current = {"web_app": service("web_app", spec("swarmctl-lab/probe:v2"))}
    with pytest.raises(InputError, match="uses secret web_token, which no longer exist"):
        plan_rollback(history_of(V1, V2), 1, current, {}, NETWORKS)


def test_services_the_revision_lacks_are_left_alone_with_a_warning() -> None:
    current = {"web_app": service("web_app", spec()), "web_extra": service("web_extra", spec(), "svc2")}
    planned = plan_rollback(history_of(V1, V2), 1, current, IDS, NETWORKS)
    assert [s.short for s in planned.steps] == [] and "left as they are: extra" in planned.warnings[0]


# -- recording (the fake engine keeps configs as swarm does) -------------------------------------------


def rollout_engine() -> FakeEngine:
    return FakeEngine.rollout([("web_app", {labels.NAMESPACE: STACK}, "ok")])


def test_recording_numbers_revisions_keeps_the_limit_and_skips_unchanged_runs() -> None:
    engine = rollout_engine()
    first = record_revision(engine, STACK, "deploy", files_digest="sha256:ab", keep=3)
    assert first.revision is not None and first.revision.number == 1
    assert record_revision(engine, STACK, "deploy", changed=False, keep=3).revision is None  # nothing changed
    for _ in range(4):
        record_revision(engine, STACK, "update", keep=3)
    revs = read_revisions(engine, STACK)
    assert revs.numbers == [3, 4, 5]
    assert revs.revisions[-1].command == "update" and revs.revisions[0].who.count("@") == 1
    assert sorted(revs.revisions[-1].services) == ["web_app"]
    # another run took the next number a moment before: this one takes the one after
    engine.create_object("config", revision(6, {}).config_body())
    assert record_revision(engine, STACK, "update", keep=3).revision.number == 7  # type: ignore[union-attr]


def test_history_is_not_part_of_the_stack_that_rm_and_prune_remove() -> None:
    engine = rollout_engine()
    record_revision(engine, STACK, "deploy")
    assert read_objects(engine, STACK).configs == {}  # deploy --prune and rm pick by the namespace label
    assert read_revisions(engine, STACK).numbers == [1]


def test_a_revision_too_large_for_a_config_is_not_recorded_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("swarmctl.ops.history.MAX_DATA", 100)
    engine = rollout_engine()
    done = record_revision(engine, STACK, "deploy")
    assert done.revision is None and engine.config_store == {}
    assert "a swarm config holds less than 0 KiB" in done.warnings[0] and "not recorded" in done.warnings[0]


def test_an_update_records_a_revision_once_rolled_out() -> None:
    engine = rollout_engine()
    report = update_stack(engine, STACK, ["app"], {}, {}, True, FakeGates(), 60, history_limit=10)
    assert report.data["revision"] == 1
    [rev] = read_revisions(engine, STACK).revisions
    assert rev.command == "update" and rev.files_digest == ""
    plan = update_stack(engine, STACK, ["app"], {}, {}, True, FakeGates(), 60, plan_only=True, history_limit=10)
    assert "revision" not in plan.data and read_revisions(engine, STACK).numbers == [1]  # a plan records nothing


def test_the_limit_is_an_inventory_setting(tmp_path: Path) -> None:
    hosts = "hosts:\n  m: {address: 10.0.0.1, role: manager}\n"
    (tmp_path / "a.yml").write_text(hosts)
    assert load_inventory(tmp_path / "a.yml").history_limit == 10
    (tmp_path / "b.yml").write_text(hosts + "swarm: {history_limit: 25}\n")
    assert load_inventory(tmp_path / "b.yml").history_limit == 25
    (tmp_path / "c.yml").write_text(hosts + "swarm: {history_limit: 1}\n")
    with pytest.raises(InputError, match=r"c.yml:3: swarm.history_limit: expected a whole number from 2 to 100"):
        load_inventory(tmp_path / "c.yml")
