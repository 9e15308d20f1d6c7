"""Roll a stack back to a recorded revision (ops.history): the revision's service specs, written
through the same plan and gated, one-at-a-time rollout as ``update`` (ops.update), then recorded as
a new revision.

Only services are rolled back: networks, secrets and configs are not versioned by a revision (swarm
cannot change them in place; a secret or config the revision's services use must still exist under
its name). Services the stack has now but the revision lacks are left as they are (named in a
warning); a revision with services the stack no longer has is refused - rollback changes existing
services, it does not create them.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from swarmctl.converge import OnProgress, no_progress
from swarmctl.errors import InputError
from swarmctl.facts.revisions import Revision, Revisions, read_revisions
from swarmctl.facts.services import read_services
from swarmctl.inventory import Inventory
from swarmctl.ops.history import Recording, describe_fields, record
from swarmctl.ops.update import Gates, Step, apply_steps, with_registries
from swarmctl.plan import Change, Notify, Plan, Report, quiet
from swarmctl.spec import changed_fields
from swarmctl.transport.engine import Engine


@dataclass(frozen=True)
class RollbackPlan:
    """The revision to return to, the services to update (in no order yet), and what is left alone."""

    target: Revision
    steps: tuple[Step, ...]
    warnings: tuple[str, ...] = ()


def _listing(revisions: Revisions) -> str:
    return ", ".join(map(str, revisions.numbers)) or "none"


def choose_target(revisions: Revisions, number: int | None) -> Revision:
    """The revision named, or by default the one before the latest (pure).

    Raises:
        InputError: no history, no such revision, or nothing before the latest - naming the revisions kept.
    """
    stack = revisions.stack
    if not revisions.revisions:
        raise InputError(f"stack {stack} has no recorded revisions (deploy, update and rollback record them; "
                         f"`swarmctl history {stack}`)")  # fmt: skip
    if number is None:
        if len(revisions.revisions) < 2:
            raise InputError(f"stack {stack} has only revision {revisions.numbers[0]}: nothing before it to roll "
                             "back to")  # fmt: skip
        return revisions.revisions[-2]
    found = revisions.get(number)
    if found is None:
        raise InputError(f"stack {stack} has no revision {number} (its revisions: {_listing(revisions)})")
    return found


def spec_to_restore(
    recorded: Mapping[str, Any], current: Mapping[str, Any], ids: Mapping[str, str], networks: Mapping[str, str]
) -> dict[str, Any]:
    """A recorded spec to write over the service as it is now: networks by their current IDs,
    secret and config IDs found by name, and the current ForceUpdate kept (the revision's spec is
    restored, not a forced restart on top of it)."""
    spec = copy.deepcopy(dict(recorded))
    task = spec.setdefault("TaskTemplate", {})
    task["ForceUpdate"] = (current["Spec"].get("TaskTemplate") or {}).get("ForceUpdate", 0)
    for net in task.get("Networks") or []:
        net["Target"] = networks.get(net["Target"], net["Target"])
    container = task.get("ContainerSpec") or {}
    for ref in container.get("Secrets") or []:
        ref["SecretID"] = ids.get("secret:" + ref["SecretName"], "")
    for ref in container.get("Configs") or []:
        ref["ConfigID"] = ids.get("config:" + ref["ConfigName"], "")
    return spec


def plan_rollback(
    revisions: Revisions,
    number: int | None,
    current: Mapping[str, Mapping[str, Any]],
    ids: Mapping[str, str],
    network_names: Mapping[str, str],
) -> RollbackPlan:
    """The steps that bring the stack's services back to a revision (pure).

    Args:
        current: full service name -> the service as the API lists it (the stack's services now).
        ids: ``secret:NAME`` / ``config:NAME`` -> ID of every secret and config on the swarm.
        network_names: every network's ID -> name.

    Raises:
        InputError: see ``choose_target``; or the revision has services the stack no longer has,
            or uses secrets or configs that are gone - nothing is changed.
    """
    target = choose_target(revisions, number)
    stack = revisions.stack
    gone = sorted(target.short(n) for n in target.services if n not in current)
    if gone:
        raise InputError(
            f"revision {target.number} of stack {stack} has services that no longer exist: {', '.join(gone)} "
            f"(rollback changes existing services; deploy them first); its revisions: {_listing(revisions)}"
        )
    missing = sorted(
        {
            f"{kind} {ref[f'{kind.capitalize()}Name']}"
            for spec in target.services.values()
            for kind in ("secret", "config")
            for ref in ((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get(f"{kind.capitalize()}s") or []
            if f"{kind}:{ref[f'{kind.capitalize()}Name']}" not in ids
        }
    )
    if missing:
        raise InputError(
            f"revision {target.number} of stack {stack} uses {', '.join(missing)}, which no longer exist "
            f"(create them again under those names first); its revisions: {_listing(revisions)}"
        )
    by_name = {name: ident for ident, name in network_names.items()}
    steps = []
    for name in sorted(target.services):
        svc = current[name]
        spec = spec_to_restore(target.services[name], svc, ids, by_name)
        fields = tuple(changed_fields(spec, svc["Spec"], network_names))
        if fields:
            steps.append(Step(name, target.short(name), svc, spec, fields))
    extra = sorted(target.short(n) for n in current if n not in target.services)
    warnings = []
    if extra:
        warnings.append(f"left as they are: {', '.join(extra)} (not in revision {target.number}; "
                        "`swarmctl deploy --prune` removes services the stack files no longer have)")  # fmt: skip
    return RollbackPlan(target, tuple(steps), tuple(warnings))


def object_ids(engine: Engine) -> dict[str, str]:
    """``secret:NAME`` / ``config:NAME`` -> ID of every secret and config on the swarm."""
    return {f"{kind}:{o['Spec']['Name']}": str(o["ID"]) for kind in ("secret", "config") for o in engine.objects(kind)}


def _in_words(change: Change, steps: list[Step]) -> Change:
    """A step's change with what it restores in words (image and variables, as history shows them)."""
    step = next((s for s in steps if s.short == change.name), None)
    if step is None:
        return change
    words = describe_fields(step.current["Spec"], step.spec, step.fields)
    last = "; goes last" if change.detail.endswith("goes last") else ""
    return replace(change, detail=words + last)


def rollback_stack(
    engine: Engine,
    stack: str,
    number: int | None,
    gates: Gates | None,
    timeout: float,
    *,
    plan_only: bool = False,
    notify: Notify = quiet,
    on_progress: OnProgress = no_progress,
    inventory: Inventory | None = None,
    history_limit: int | None = None,
) -> Report:
    """The rollback operation: read the revisions and the services, plan (pure), roll out as
    ``update`` does, then record the result as the next revision (``history_limit`` kept).

    With ``inventory``, registry credentials for the images are loaded, checked with a login, and
    sent with each write; the recorded images are sent as recorded (pinned where they were).

    Returns:
        A Report (update's shape) with ``data``: ``stack``, ``target`` (the revision restored) and,
        once applied, ``services`` (StepResult each) and ``revision`` (the one recorded, or None).

    Raises:
        InputError: see ``plan_rollback``; RolloutFailed: see ``ops.update.roll_out`` (nothing recorded).
    """
    revisions = read_revisions(engine, stack)
    current = {svc["Spec"]["Name"]: svc for svc in read_services(engine, stack)}
    networks = {n["Id"]: n["Name"] for n in engine.networks()}
    planned = plan_rollback(revisions, number, current, object_ids(engine), networks)
    steps = list(planned.steps)
    if inventory is not None and steps:
        steps = with_registries(engine, steps, inventory, "never")
    report = apply_steps(engine, steps, gates, timeout, plan_only, notify, on_progress)
    warnings = [*revisions.warnings, *planned.warnings]
    report.plan = Plan(tuple(_in_words(c, steps) for c in report.plan.changes), tuple(warnings))
    report.results = [replace(r, change=_in_words(r.change, steps)) for r in report.results]
    report.warn(warnings)
    report.data.update({"stack": stack, "target": planned.target.number})
    if not plan_only:
        report.data.setdefault("revision", None)
        if history_limit is not None and steps:
            recording = Recording("rollback", planned.target.files_digest, planned.target.number, history_limit)
            record(engine, stack, report, recording, changed=True, notify=notify)
    return report
