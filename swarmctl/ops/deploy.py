"""Deploy a stack: read what the swarm has -> plan (pure) -> apply -> wait for convergence; and rm.

Unlike ``docker stack deploy``, an unchanged object is not written at all (a redeploy restarts
nothing and bumps no version), changes swarm cannot apply in place are refused before anything
is touched, ``prune`` covers networks, secrets and configs too, updates of existing services roll
one at a time behind the rollout gates (``ops.update``), and a rollback is a failure.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from swarmctl import labels
from swarmctl.compose.convert import DesiredStack, FileObject
from swarmctl.converge import DEFAULT_TIMEOUT, OnProgress, no_progress, wait_converged, write_service
from swarmctl.errors import ClusterError, HostError, HostsFailed, InputError, Interrupted, NotFound, TimeoutExpired
from swarmctl.facts.membership import find_manager, identify
from swarmctl.facts.nodes import NodeView, placement_allows, read_nodes
from swarmctl.facts.services import stack_filter
from swarmctl.facts.stack import StackObjects, Wanted, read_objects
from swarmctl.ops.history import Recording, record
from swarmctl.ops.images import push_images
from swarmctl.ops.images import sources as image_sources
from swarmctl.ops.registry import (
    Credentials,
    ImageChoice,
    check_logins,
    choose_images,
    load_credentials,
    resolve_images,
)
from swarmctl.ops.update import AppGates, Gates, Step, roll_out
from swarmctl.ops.verify import verify_stack
from swarmctl.plan import DONE, Change, Notify, Plan, Report, Result, quiet
from swarmctl.secretstore import DIGEST_SCHEME
from swarmctl.spec import changed_fields
from swarmctl.transport.engine import Engine, Session
from swarmctl.wait import Pending, until

log = logging.getLogger(__name__)

IMAGE_FIELD = "TaskTemplate.ContainerSpec.Image"

REMOVE_TIMEOUT = 120.0
POLL = 0.5
# tasks in these states may still hold a network or secret
LIVE_TASK_STATES = ("new", "pending", "assigned", "accepted", "preparing", "ready", "starting", "running")


def wanted(desired: DesiredStack) -> Wanted:
    return Wanted(
        networks=frozenset(desired.networks),
        external_networks=frozenset(desired.external_networks),
        secrets=frozenset(desired.secrets),
        external_secrets=frozenset(desired.external_secrets),
        configs=frozenset(desired.configs),
        external_configs=frozenset(desired.external_configs),
    )


def read(engine: Engine, desired: DesiredStack) -> StackObjects:
    return read_objects(engine, desired.name, wanted(desired))


# -- planning (pure) -------------------------------------------------------------------------------


def object_ids(current: StackObjects) -> dict[str, str]:
    """``secret:NAME`` / ``config:NAME`` -> ID of every secret and config the swarm has for the stack."""
    ids = {}
    for kind in ("secret", "config"):
        for name, have in current.of_kind(kind).items():
            ids[f"{kind}:{name}"] = have["ID"]
    return ids


def spec_to_send(
    desired: Mapping[str, Any],
    current: Mapping[str, Any] | None,
    ids: Mapping[str, str],
    image: str | None = None,
) -> dict[str, Any]:
    """The spec to send: secret/config IDs filled in; for an existing service its ForceUpdate and,
    when the stack file's image is unchanged, its (possibly digest-pinned) image kept - as docker does.

    ``image``: the image chosen for it (``ops.registry.choose_images``), which then wins."""
    spec = copy.deepcopy(dict(desired))
    container = spec["TaskTemplate"]["ContainerSpec"]
    for ref in container.get("Secrets", []):
        ref["SecretID"] = ids.get("secret:" + ref["SecretName"], "")
    for ref in container.get("Configs", []):
        ref["ConfigID"] = ids.get("config:" + ref["ConfigName"], "")
    cred = container.get("Privileges", {}).get("CredentialSpec") or {}
    if "Config" in cred:
        cred["Config"] = ids.get("config:" + cred["Config"], cred["Config"])
    if current is not None:
        cspec = current["Spec"]
        spec["TaskTemplate"]["ForceUpdate"] = cspec.get("TaskTemplate", {}).get("ForceUpdate", 0)
        # docker compares the file's image (the label) with the label of the running service
        if spec["Labels"].get(labels.IMAGE) == (cspec.get("Labels") or {}).get(labels.IMAGE):
            container["Image"] = cspec["TaskTemplate"]["ContainerSpec"]["Image"]
    if image is not None:
        container["Image"] = image
    return spec


@dataclass(frozen=True)
class ObjectStep:
    """A secret or config created (``new``) or relabelled."""

    change: Change
    kind: str  # secret | config: the API's object kind
    new: bool


@dataclass(frozen=True)
class ServiceStep:
    """A service created (``new``) or updated (through the rollout, one at a time)."""

    change: Change
    new: bool


@dataclass(frozen=True)
class StackPlan:
    """A stack's changes as typed steps, in apply order: networks created, secrets and configs,
    services, removals (--prune); ``plan`` is the Plan they make (what --plan shows)."""

    networks: tuple[Change, ...] = ()
    objects: tuple[ObjectStep, ...] = ()
    services: tuple[ServiceStep, ...] = ()
    removals: tuple[Change, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def plan(self) -> Plan:
        changes = (*self.networks, *(o.change for o in self.objects), *(s.change for s in self.services))
        return Plan((*changes, *self.removals), self.warnings)

    @property
    def changes(self) -> tuple[Change, ...]:
        return self.plan.changes

    @property
    def updates(self) -> list[Change]:
        return [s.change for s in self.services if not s.new]

    def json(self) -> dict[str, Any]:
        return self.plan.json()


def plan_stack(
    desired: DesiredStack, current: StackObjects, prune: bool = False, choice: ImageChoice | None = None
) -> StackPlan:
    """What to create, update and remove, in apply order (pure).

    ``choice``: the images chosen for the services (pinned to digests or not), shown where pinned.

    Raises:
        InputError: a change swarm cannot make in place, or a missing external object; says what to do.
    """
    if current.missing_external:
        raise InputError(
            "declared external but not found on the swarm: "
            + ", ".join(current.missing_external)
            + " (create it first, e.g. `docker network create -d overlay NAME`)"
        )
    problems: list[str] = []
    networks: list[Change] = []
    objects: list[ObjectStep] = []
    for name in sorted(current.foreign_networks):
        problems.append(f"network {name} exists but is not part of stack {desired.name}: remove or rename it")
    for name, body in sorted(desired.networks.items()):
        have = current.networks.get(name)
        if have is None:
            if name not in current.foreign_networks:
                networks.append(Change("network", name, "create"))
            continue
        fields = _network_differences(body, have)
        if fields:
            problems.append(
                f"network {name} differs in {', '.join(fields)}, which swarm cannot change on an existing network: "
                f"remove the stack (`swarmctl rm {desired.name}`) and deploy again, or give the network a new name"
            )
    for kind, asked in (("secret", desired.secrets), ("config", desired.configs)):
        have_map = current.of_kind(kind)
        for name, obj in sorted(asked.items()):
            have = have_map.get(name)
            if have is None:
                objects.append(ObjectStep(Change(kind, name, "create"), kind, new=True))
            elif _data_changed(kind, obj, have):
                hint = " or keep it encrypted in secrets/, where swarmctl versions it by content"
                problems.append(
                    f"{kind} {name} has new content, but swarm {kind}s are immutable: give it a new name "
                    f"(`name: {name}_v2` in the stack file)" + (hint if kind == "secret" else "")
                )
            elif (have["Spec"].get("Labels") or {}) != _wanted_labels(obj, have):
                objects.append(ObjectStep(Change(kind, name, "update", ("Labels",)), kind, new=False))
    if problems:
        raise InputError("; ".join(problems))

    ids = object_ids(current)
    images = choice.images if choice else {}
    pins = choice.pins if choice else {}
    services: list[ServiceStep] = []
    for name, spec in sorted(desired.services.items()):
        have = current.services.get(name)
        if have is None:
            services.append(ServiceStep(Change("service", name, "create", detail=pins.get(name, "")), new=True))
            continue
        fields = changed_fields(spec_to_send(spec, have, ids, images.get(name)), have["Spec"], current.network_names)
        if fields:
            pin = pins.get(name, "") if IMAGE_FIELD in fields else ""
            detail = f"{', '.join(fields)}; {pin}" if pin else ""
            services.append(ServiceStep(Change("service", name, "update", tuple(fields), detail), new=False))
    removals = _prunable(desired, current) if prune else []
    warnings = [
        f"secret {name} was named by an unsalted hash of its content (an older swarmctl), which lets anyone who "
        "can inspect the swarm check a guess: it is deployed once more under a keyed name (its services restart "
        "once) and the old one is removed"
        for name in legacy_versioned(current)
    ]
    warnings += list(choice.warnings) if choice else []
    return StackPlan(
        tuple(networks), tuple(objects), tuple(services), tuple(removals), tuple(desired.warnings) + tuple(warnings)
    )


def _prunable(desired: DesiredStack, current: StackObjects) -> list[Change]:
    out = []
    for kind, wanted_names in (
        ("service", set(desired.services)),
        ("network", set(desired.networks)),
        ("secret", set(desired.secrets) | set(desired.external_secrets)),
        ("config", set(desired.configs) | set(desired.external_configs)),
    ):
        for name, existing in sorted(current.of_kind(kind).items()):
            owner = existing if kind == "network" else existing.get("Spec", {})
            tags = owner.get("Labels") or {}
            if name in wanted_names or tags.get(labels.NAMESPACE) != desired.name:
                continue
            if kind == "secret" and tags.get(labels.SECRET) in _versioned_bases(desired):
                continue  # an earlier version: removed once the services moved off it
            out.append(Change(kind, name, "remove"))
    return out


def _versioned_bases(desired: DesiredStack) -> set[str]:
    return {o.spec["Labels"][labels.SECRET] for o in desired.secrets.values() if labels.SECRET in o.spec["Labels"]}


def superseded_secrets(desired: DesiredStack, current: StackObjects) -> list[str]:
    """Earlier versions of the stack's versioned secrets that no service uses any more (pure)."""
    bases = _versioned_bases(desired)
    in_use = current.secrets_in_use()
    out = []
    for name, s in sorted(current.secrets.items()):
        tags = s["Spec"].get("Labels") or {}
        if (
            tags.get(labels.NAMESPACE) == desired.name
            and tags.get(labels.SECRET) in bases
            and name not in desired.secrets
            and name not in in_use
        ):
            out.append(name)
    return out


def _network_differences(body: Mapping[str, Any], have: Mapping[str, Any]) -> list[str]:
    fields = []
    if (body.get("Driver") or "overlay") != have.get("Driver"):
        fields.append("driver")
    if (body.get("Options") or {}) != {
        k: v
        for k, v in (have.get("Options") or {}).items()
        if not k.startswith("com.docker.network.driver.overlay.vxlanid")
    }:
        fields.append("driver_opts")
    if bool(body.get("Internal")) != bool(have.get("Internal")):
        fields.append("internal")
    if bool(body.get("Attachable")) != bool(have.get("Attachable")):
        fields.append("attachable")
    wanted_subnets = sorted(c["Subnet"] for c in (body.get("IPAM") or {}).get("Config", []))
    have_subnets = sorted(c.get("Subnet", "") for c in ((have.get("IPAM") or {}).get("Config") or []))
    if wanted_subnets and wanted_subnets != have_subnets:
        fields.append("ipam")
    if (body.get("Labels") or {}) != (have.get("Labels") or {}):
        fields.append("labels")
    return fields


def _data_changed(kind: str, obj: FileObject, have: Mapping[str, Any]) -> bool:
    if kind == "config":
        data = base64.b64decode(have["Spec"].get("Data") or b"")
        return data != obj.data
    digest = (have["Spec"].get("Labels") or {}).get(labels.DIGEST)
    if digest is None:
        return False  # made by docker stack deploy, or without a secrets key: it cannot be compared
    if digest.startswith(DIGEST_SCHEME):
        return obj.digest is not None and digest != DIGEST_SCHEME + obj.digest
    # an older swarmctl's plain sha256: compared once, then replaced by the keyed label
    return hashlib.sha256(obj.data).hexdigest() != digest


def _wanted_labels(obj: FileObject, have: Mapping[str, Any]) -> dict[str, str]:
    """The labels to give an existing secret/config; without a key the content label it has is kept."""
    wanted = dict(obj.spec["Labels"])
    current = have["Spec"].get("Labels") or {}
    if labels.DIGEST not in wanted and str(current.get(labels.DIGEST, "")).startswith(DIGEST_SCHEME):
        wanted[labels.DIGEST] = current[labels.DIGEST]
    return wanted


def legacy_versioned(current: StackObjects) -> list[str]:
    """The stack's content-versioned secrets named by an older swarmctl's unsalted hash (pure)."""
    return sorted(
        name
        for name, s in current.secrets.items()
        if labels.SECRET in (s["Spec"].get("Labels") or {})
        and not str((s["Spec"].get("Labels") or {}).get(labels.DIGEST, "")).startswith(DIGEST_SCHEME)
    )


# -- apply -----------------------------------------------------------------------------------------


def apply_plan(
    engine: Engine,
    desired: DesiredStack,
    current: StackObjects,
    planned: StackPlan,
    report: Report,
    notify: Notify = quiet,
    update_services: bool = True,
    choice: ImageChoice | None = None,
) -> tuple[dict[str, float], dict[str, str]]:
    """Make the changes, in dependency order; each one done becomes a Result in ``report``.

    Args:
        update_services: False leaves service updates to the caller (the rollout engine).
        choice: the services' images and the registry credentials sent with them.

    Returns:
        service name -> the engine's UpdatedAt of our write (0 for a creation), for every service
        created or updated (an update status that started before that is not ours); and the
        ``secret:NAME``/``config:NAME`` -> ID map including the objects created just now.
    """
    ids = object_ids(current)
    for c in planned.networks:
        engine.create_network(desired.networks[c.name])
        report.done(c, notify=notify)
    for step in planned.objects:
        c, kind = step.change, step.kind
        wanted = (desired.secrets if kind == "secret" else desired.configs)[c.name]
        if step.new:
            ids[f"{kind}:{c.name}"] = engine.create_object(kind, wanted.body())["ID"]
        else:
            have = current.of_kind(kind)[c.name]
            spec = {**have["Spec"], "Labels": _wanted_labels(wanted, have)}
            engine.update_object(kind, have["ID"], have["Version"]["Index"], spec, what=c.name)
        report.done(c, notify=notify)
    written: dict[str, float] = {}
    for service in planned.services:
        c = service.change
        if not service.new and not update_services:
            continue
        # IDs of secrets/configs created just now are known only here
        image = choice.images.get(c.name) if choice else None
        spec = spec_to_send(desired.services[c.name], current.services.get(c.name), ids, image)
        auth = choice.auth(spec["TaskTemplate"]["ContainerSpec"]["Image"]) if choice else None
        if service.new:
            warnings = engine.create_service(spec, registry_auth=auth).get("Warnings") or []
            written[c.name] = 0.0
        else:
            written[c.name], warnings = write_service(
                engine, current.services[c.name]["ID"], spec, what=c.name, registry_auth=auth
            )
        for w in warnings:
            if "could not be accessed on a registry to record its digest" not in w:
                report.warn([f"{c.name}: {w}"])
        report.done(c, notify=notify)
    if planned.removals:
        _remove(engine, current, list(planned.removals), report, notify)
    return written, ids


def _remove(
    engine: Engine, current: StackObjects, removals: list[Change], report: Report, notify: Notify,
    timeout: float = REMOVE_TIMEOUT,
) -> None:  # fmt: skip
    services = [c for c in removals if c.kind == "service"]
    for c in services:
        engine.remove_service(current.services[c.name]["ID"], what=c.name)
        report.done(c, notify=notify)
    if services:
        _wait_tasks_gone(engine, [current.services[c.name]["ID"] for c in services], timeout)
    for c in removals:
        if c.kind != "service":
            obj = current.of_kind(c.kind)[c.name]
            _retry_remove(engine, c.kind, str(obj.get("ID") or obj.get("Id")), c.name, timeout)
            report.done(c, notify=notify)


def _remove_object(engine: Engine, kind: str, ident: str, name: str) -> None:
    if kind == "network":
        engine.remove_network(ident, what=name)
    else:
        engine.remove_object(kind, ident, what=name)


def _retry_remove(engine: Engine, kind: str, ident: str, name: str, timeout: float) -> None:
    """Removing a network or secret fails while a task still uses it: retry until it goes or time runs out."""
    last: list[HostError] = []

    def removed() -> bool | Pending:
        try:
            _remove_object(engine, kind, ident, name)
        except NotFound:
            pass
        except HostError as e:
            log.debug("remove %s %s: %s; retrying", kind, name, e)
            last[:] = [e]
            return Pending(e.message)
        return True

    until(f"{kind} {name} to go", removed, timeout, first=POLL, cap=POLL, retry=(), error=lambda _: last[0])


def _wait_tasks_gone(engine: Engine, service_ids: list[str], timeout: float) -> None:
    """Wait until no task of the removed services runs (their containers hold networks and secrets)."""
    ids = set(service_ids)

    def gone() -> bool | Pending:
        # all tasks, filtered here: a filter on a removed service's ID is an error, not an empty list
        left = [t for t in engine.tasks()
                if t.get("ServiceID") in ids and t.get("Status", {}).get("State") in LIVE_TASK_STATES]  # fmt: skip
        return Pending(f"{len(left)} tasks") if left else True

    def late(seen: str) -> TimeoutExpired:
        return TimeoutExpired(f"{seen} of removed services still running after {timeout:g}s")

    until("the removed services' tasks to stop", gone, timeout, first=POLL, cap=POLL, retry=(), error=late)


def remove_superseded(engine: Engine, desired: DesiredStack, report: Report, notify: Notify) -> list[str]:
    """After the services converged: remove earlier versions of versioned secrets nothing uses."""
    current = read(engine, desired)
    removed = []
    for name in superseded_secrets(desired, current):
        _retry_remove(engine, "secret", current.secrets[name]["ID"], name, REMOVE_TIMEOUT)
        report.done(Change("secret", name, "remove", detail="superseded"), notify=notify)
        removed.append(name)
    return removed


# -- the operations ----------------------------------------------------------------------------------


def deploy_stack(
    engine: Engine,
    desired: DesiredStack,
    *,
    prune: bool = False,
    plan_only: bool = False,
    wait: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    notify: Notify = quiet,
    on_progress: OnProgress = no_progress,
    gates: Gates | None = None,
    credentials: Credentials | None = None,
    resolve_image: str = "always",
    history_limit: int | None = None,
) -> Report:
    """Plan and (unless ``plan_only``) apply a stack, then wait for it to converge.

    Updates of existing services go through the rollout engine: one service at a time, behind
    health and application gates, unless ``wait`` is off. Images are chosen (pinned to their
    digests) per ``resolve_image`` before planning, so the plan shows what is sent. With
    ``history_limit``, a deploy that changed the stack is recorded as its next revision once applied
    (``ops.history``; that many kept); a failed one records nothing.

    Returns:
        A Report; after applying, ``data`` has ``services`` (Progress of each), ``converged``,
        ``seconds``, ``revision`` (recorded, or None) and, when services were rolled, ``rollout``
        (StepResult of each).
    """
    t0 = time.monotonic()
    current = read(engine, desired)
    creds = credentials or Credentials()
    choice = choose_images(wanted_images(desired), current_images(current), resolve_image,
                           lambda images: resolve_images(engine, images, creds), creds)  # fmt: skip
    planned = plan_stack(desired, current, prune, choice)
    report = Report(plan=planned.plan, warnings=list(planned.warnings))
    if plan_only:
        return report
    try:
        _apply_and_wait(engine, desired, current, planned, report, wait, timeout, notify, on_progress, gates, t0,
                        choice)  # fmt: skip
    except KeyboardInterrupt:
        done = ", ".join(c.describe() for c in report.changes) or "nothing"
        raise Interrupted(
            f"interrupted; done before: {done}. What was written stays, and swarm goes on converging it: "
            f"`swarmctl deploy {desired.name} --plan` shows what is left"
        ) from None
    if history_limit is not None:
        recording = Recording("deploy", desired.digest, keep=history_limit)
        record(engine, desired.name, report, recording, changed=bool(report.changes), notify=notify)
    return report


def _apply_and_wait(
    engine: Engine,
    desired: DesiredStack,
    current: StackObjects,
    planned: StackPlan,
    report: Report,
    wait: bool,
    timeout: float,
    notify: Notify,
    on_progress: OnProgress,
    gates: Gates | None,
    t0: float,
    choice: ImageChoice,
) -> Report:
    written, ids = apply_plan(engine, desired, current, planned, report, notify, update_services=not wait,
                              choice=choice)  # fmt: skip
    progress = {}
    if wait:
        updates = planned.updates
        steps = []
        for c in updates:
            spec = spec_to_send(desired.services[c.name], current.services[c.name], ids, choice.images.get(c.name))
            auth = choice.auth(spec["TaskTemplate"]["ContainerSpec"]["Image"])
            steps.append(Step(c.name, c.name.removeprefix(f"{desired.name}_"), current.services[c.name], spec,
                              c.fields, auth))  # fmt: skip
        rolled = roll_out(engine, steps, gates, timeout, notify, on_progress)
        for c in updates:
            report.results.append(Result(c, DONE))
        if rolled:
            report.data["rollout"] = rolled
        if desired.services:
            progress = wait_converged(engine, sorted(desired.services), written, timeout, on_progress)
        if _versioned_bases(desired):
            remove_superseded(engine, desired, report, notify)
    report.data["services"] = list(progress.values())
    report.data["converged"] = bool(progress) and all(p.state == "converged" for p in progress.values())
    report.data["seconds"] = round(time.monotonic() - t0, 2)
    return report


def wanted_images(desired: DesiredStack) -> dict[str, tuple[str, str]]:
    """service -> (image the converted spec sends, the stack file's image)."""
    return {
        name: (spec["TaskTemplate"]["ContainerSpec"]["Image"], (spec.get("Labels") or {}).get(labels.IMAGE, ""))
        for name, spec in desired.services.items()
    }


def current_images(current: StackObjects) -> dict[str, tuple[str, str]]:
    """service -> (image in its spec now, the file's image it was deployed from)."""
    return {
        name: (
            svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"],
            (svc["Spec"].get("Labels") or {}).get(labels.IMAGE, ""),
        )
        for name, svc in current.services.items()
    }


def image_hosts(desired: DesiredStack, hosts: Mapping[str, NodeView]) -> dict[str, list[str]]:
    """image -> the inventory hosts whose node the stack's placement allows it on (pure)."""
    out: dict[str, list[str]] = {}
    for spec in desired.services.values():
        image = spec["TaskTemplate"]["ContainerSpec"]["Image"]
        constraints = (spec["TaskTemplate"].get("Placement") or {}).get("Constraints") or []
        allowed = [name for name, node in hosts.items() if placement_allows(constraints, node)]
        out[image] = sorted(set(out.get(image, [])) | set(allowed))
    return out


def push_for_stack(session: Session, engine: Engine, desired: DesiredStack, notify: Notify) -> Report:
    """``deploy --push-images``: the stack's images from the local engine to the hosts that may run them.

    Raises:
        HostsFailed: a host could not be given its images (nothing of the stack was changed yet).
    """
    by_host = identify(session, read_nodes(engine))
    groups: dict[tuple[str, ...], list[str]] = {}
    for image, allowed in image_hosts(desired, by_host).items():
        if allowed:
            groups.setdefault(tuple(allowed), []).append(image)
    last = Report()
    summary: dict[str, Any] = {}
    for names, images in sorted(groups.items()):
        notify(f"pushing {', '.join(sorted(images))} to {', '.join(names)}")
        with image_sources(sorted(images)) as archives:
            last = push_images(session, archives, [session.inventory.host(h) for h in names], notify=notify)
        if last.failures:
            raise HostsFailed("deploy --push-images", last.failures)
        summary.update(last.data.get("hosts", {}))
    last.data["hosts"] = summary
    return last


def remove_stack(engine: Engine, stack: str, notify: Notify = quiet, timeout: float = REMOVE_TIMEOUT) -> Report:
    """Remove every object labelled with the stack; wait until its tasks and networks are gone."""
    current = read_objects(engine, stack)
    if not any((current.services, current.networks, current.secrets, current.configs)):
        raise ClusterError(f"no stack {stack!r} on this swarm (nothing is labelled {labels.NAMESPACE}={stack})")
    empty = DesiredStack(stack, {}, [], {}, {}, {})
    planned = plan_stack(empty, current, prune=True)
    report = Report(plan=planned.plan)
    _remove(engine, current, list(planned.removals), report, notify, timeout)

    def gone() -> bool | Pending:
        left = [n["Name"] for n in engine.networks(filters=stack_filter(stack))]
        return Pending(", ".join(left)) if left else True

    until(f"the networks of {stack} to go", gone, timeout, first=POLL, cap=POLL, retry=(),
          error=lambda seen: TimeoutExpired(f"networks still present after {timeout:g}s: {seen}"))  # fmt: skip
    return report


def deploy_and_verify(
    session: Session,
    desired: DesiredStack,
    *,
    probe_image: str,
    verify: bool = True,
    verify_wait: float = 30.0,
    prune: bool = False,
    plan_only: bool = False,
    wait: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    notify: Notify = quiet,
    on_progress: OnProgress = no_progress,
    resolve_image: str = "always",
    push: bool = False,
) -> Report:
    """The deploy operation: ``deploy_stack`` through the first answering manager, its updates
    gated by the stack's application checks, then (once converged) ``verify`` from every node.

    Registry credentials for the stack's images are loaded and checked (a login each) first: a
    rejected one stops it before anything changed. ``push``: first copy the stack's images from
    the local engine to the hosts its placement allows that lack them (``ops.images``).

    Returns:
        deploy_stack's Report; with verify, ``data["verify"]`` is verify's Report.
    """
    engine = find_manager(session)
    gates = AppGates(engine, desired.name, probe_image)
    credentials = load_credentials(session.inventory, [i for i, _ in wanted_images(desired).values()])
    check_logins(engine, credentials)
    pushed = push_for_stack(session, engine, desired, notify) if push and not plan_only else None
    report = deploy_stack(engine, desired, prune=prune, plan_only=plan_only, wait=wait, timeout=timeout,
                          notify=notify, on_progress=on_progress, gates=gates, credentials=credentials,
                          resolve_image=resolve_image, history_limit=session.inventory.history_limit)  # fmt: skip
    if pushed is not None:
        report.data["pushed"] = pushed.data.get("hosts", {})
    if verify and not plan_only and report.data.get("services"):
        count, seconds = len(report.data["services"]), report.data["seconds"]
        notify(f"stack {desired.name}: {count} services converged in {seconds:.1f}s; verifying")
        report.data["verify"] = verify_stack(session, desired.name, probe_image, wait=verify_wait, notify=notify)
    return report
