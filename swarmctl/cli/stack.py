"""deploy, update, verify and rm: stacks."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from swarmctl.cli.app import Obj, cli, common_options, json_option, load_inventory, plan_option, probe_image
from swarmctl.cli.render import (
    emit_json,
    failed_summary,
    notifier,
    progress_callback,
    render_checks,
    render_warnings,
    say,
    show_plan,
    table,
)
from swarmctl.errors import ClusterError, InputError

VERIFY_AFTER_DEPLOY = 30.0  # names take a moment to reach every node's DNS after the tasks run


_probe_image_option = click.option(
    "--probe-image", metavar="IMAGE", help="Image with python3 for the probes (default: PROBE_IMAGE var)."
)


_resolve_image_option = click.option(
    "--resolve-image",
    type=click.Choice(["always", "changed", "never"]),
    default="always",
    show_default=True,
    help="Pin images to the digest their registry gives for the tag: always, only for changed images, "
    "or never (images present on the hosts only).",
)


@cli.command()
@click.argument("name")
@click.option("-f", "--file", "files", multiple=True, metavar="FILE", help="Stack file (repeat: later files override).")
@plan_option
@click.option("--no-wait", is_flag=True, help="Do not wait for the services to converge.")
@click.option("--prune", is_flag=True, help="Remove services, networks, secrets and configs the files no longer have.")
@click.option("--timeout", type=click.FloatRange(min=1), default=300, show_default=True, help="Seconds to wait.")
@click.option("--no-verify", is_flag=True, help="Do not run `swarmctl verify` after the stack converged.")
@click.option(
    "--verify-wait", type=click.FloatRange(min=0), default=VERIFY_AFTER_DEPLOY, show_default=True,
    help="Seconds verify keeps checking again while checks fail (names reach every node's DNS a moment "
    "after the tasks run; a round on slow hosts can take longer than the default).",
)  # fmt: skip
@_probe_image_option
@_resolve_image_option
@click.option(
    "--push-images", "push", is_flag=True,
    help="First copy the stack's images from the local engine to the hosts its placement allows (no registry).",
)  # fmt: skip
@json_option("deploy")
@common_options
@click.pass_obj
def deploy(
    obj: Obj,
    name: str,
    files: tuple[str, ...],
    plan_only: bool,
    no_wait: bool,
    prune: bool,
    timeout: float,
    no_verify: bool,
    verify_wait: float,
    probe_image: str | None,
    resolve_image: str,
    push: bool,
    as_json: bool,
) -> None:
    """Deploy stack NAME (stacks/NAME/stack.yml, or the -f files) and wait until it converged.

    \b
    Example: swarmctl deploy web -f web.yml --plan
    """
    from swarmctl.compose.convert import convert_stack
    from swarmctl.compose.loader import find_stack_files, generated_placeholders, load_stack
    from swarmctl.facts.membership import find_manager
    from swarmctl.ops.deploy import deploy_and_verify
    from swarmctl.ops.generated import load_generated
    from swarmctl.secretstore import KeySource
    from swarmctl.transport.engine import Session

    inv = load_inventory(obj)
    paths = find_stack_files(name, list(files), Path.cwd())
    # checked before any connection (generated variables stand in): bad input changes nothing
    placeholders = generated_placeholders(paths)
    config = load_stack(name, paths, os.environ, {**placeholders, **inv.vars})
    render_warnings(config.warnings)
    desired = convert_stack(config, KeySource(os.environ))
    from swarmctl.ops.update import RolloutFailed

    image = _image(inv, probe_image)
    with Session(inv) as session:
        if placeholders:  # the values kept in the swarm (made and kept by the first deploy)
            config, generated = load_generated(lambda: find_manager(session), name, paths, os.environ, inv.vars,
                                               keep=not plan_only, notify=notifier(as_json))  # fmt: skip
            desired = convert_stack(config, KeySource(os.environ))
        try:
            report = deploy_and_verify(
                session,
                desired,
                prune=prune,
                plan_only=plan_only,
                wait=not no_wait,
                timeout=timeout,
                probe_image=image,
                verify=not no_verify,
                verify_wait=verify_wait,
                notify=notifier(as_json),
                on_progress=progress_callback(as_json),
                resolve_image=resolve_image,
                push=push,
            )
        except RolloutFailed as e:  # an update of the stack failed or was interrupted
            render_rollout(e.results, as_json, error=str(e))
            raise
    if plan_only:
        if placeholders and generated.new:
            report.plan = replace(report.plan, changes=(*generated.changes(name), *report.plan.changes))
        show_plan(report.plan, as_json, f"no changes: stack {name} matches its files")
        return
    verified = report.data.get("verify")
    if as_json:
        emit_json(report.json())
    else:
        render_warnings(report.warnings)
        if not report.plan.changes:
            say(f"no changes: stack {name} matches its files")
        if verified is not None:
            render_checks(name, verified.data["checks"], verified.data["seconds"], verified.data["rounds"])
        elif report.data.get("services"):
            say(f"stack {name}: {len(report.data['services'])} services converged in {report.data['seconds']:.1f}s")
    if verified is not None and not verified.data["ok"]:
        summary = "" if as_json else f": {failed_summary(verified.data['checks'])}"
        raise ClusterError(f"stack {name} converged but verify failed{summary}")


def _image(inv: Any, explicit: str | None) -> str:
    return probe_image(inv, explicit)


@cli.command()
@click.argument("name")
@_probe_image_option
@click.option(
    "--wait", "wait", type=click.FloatRange(min=0), default=0, show_default=True,
    help="Check again for up to SECONDS until every check passes.",
)  # fmt: skip
@click.option(
    "--produce", is_flag=True,
    help="Also write a message with acks=all through each Kafka broker and read it back through the others "
    "(on a topic made for it, with the stack's replication factor, removed afterwards).",
)  # fmt: skip
@json_option("verify")
@common_options
@click.pass_obj
def verify(obj: Obj, name: str, probe_image: str | None, wait: float, produce: bool, as_json: bool) -> None:
    """Check stack NAME from inside its overlay networks on every node: DNS, VIPs, ZooKeeper, Kafka.

    \b
    Example: swarmctl verify kafka --produce
    """
    from swarmctl.compose.loader import check_stack_name
    from swarmctl.ops.verify import verify_stack
    from swarmctl.transport.engine import Session

    check_stack_name(name)
    inv = load_inventory(obj)
    with Session(inv) as session:
        report = verify_stack(session, name, _image(inv, probe_image), wait=wait, notify=say, produce=produce)
    checks = report.data["checks"]
    if as_json:
        emit_json(report.json())
    else:
        render_checks(name, checks, report.data["seconds"], report.data["rounds"])
    if not report.data["ok"]:
        raise ClusterError(f"verify {name} failed: {failed_summary(checks)}")


@cli.command("rm")
@click.argument("name")
@click.option("--timeout", type=click.FloatRange(min=1), default=120, show_default=True, help="Seconds to wait.")
@common_options
@click.pass_obj
def rm(obj: Obj, name: str, timeout: float) -> None:
    """Remove stack NAME (services, networks, secrets, configs) and wait until its networks are gone.

    \b
    Example: swarmctl rm web
    """
    from swarmctl.compose.loader import check_stack_name
    from swarmctl.facts.membership import find_manager
    from swarmctl.ops.deploy import remove_stack
    from swarmctl.transport.engine import Session

    check_stack_name(name)
    inv = load_inventory(obj)
    with Session(inv) as session:
        report = remove_stack(find_manager(session), name, notify=say, timeout=timeout)
    say(f"stack {name} removed ({len(report.changes)} objects)")


def _pairs(values: tuple[str, ...], sep: str, what: str) -> list[tuple[str, str]]:
    out = []
    for v in values:
        left, found, right = v.partition(sep)
        if not found or not left or not right:
            raise InputError(f"bad {what} {v!r}: expected {what.upper().replace(' ', '')}")
        out.append((left, right))
    return out


def _env_map(envs: tuple[str, ...]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for service, assignment in _pairs(envs, ":", "service:key=value"):
        key, _, value = assignment.partition("=")
        if not key or "=" not in assignment:
            raise InputError(f"bad --env {service}:{assignment}: expected SERVICE:KEY=VALUE")
        out.setdefault(service, {})[key] = value
    return out


@cli.command()
@click.argument("name")
@click.argument("services", nargs=-1, metavar="[SERVICE]...")
@click.option("--image", "images", multiple=True, metavar="SERVICE=IMAGE", help="New image for a service (repeat).")
@click.option("--env", "envs", multiple=True, metavar="SERVICE:KEY=VALUE", help="Set a variable (repeat).")
@click.option("--force", is_flag=True, help="Restart the SERVICEs (all of the stack's if none) in place.")
@plan_option
@click.option("--timeout", type=click.FloatRange(min=1), default=300, show_default=True, help="Seconds per service.")
@click.option("--probe-image", metavar="IMAGE", help="Image with python3 for the application gates.")
@_resolve_image_option
@json_option("update")
@common_options
@click.pass_obj
def update(
    obj: Obj,
    name: str,
    services: tuple[str, ...],
    images: tuple[str, ...],
    envs: tuple[str, ...],
    force: bool,
    plan_only: bool,
    timeout: float,
    probe_image: str | None,
    resolve_image: str,
    as_json: bool,
) -> None:
    """Roll changes into stack NAME's services one at a time, behind health and application gates.

    SERVICE is the name in the stack file (zookeeper-1). --image and --env change the running
    services; --force restarts them (to roll a changed stack file, run deploy: its updates go the
    same way). On a failure the failing service is rolled back and the rest is left as it was.

    \b
    Example: swarmctl update kafka --image zookeeper-1=quay.io/debezium/zookeeper:3.1.3.Final
    """
    from swarmctl.compose.loader import check_stack_name
    from swarmctl.facts.membership import find_manager
    from swarmctl.ops.update import AppGates, RolloutFailed, update_stack
    from swarmctl.transport.engine import Session

    check_stack_name(name)
    image_map = dict(_pairs(images, "=", "service=image"))
    env_map = _env_map(envs)
    inv = load_inventory(obj)
    with Session(inv) as session:
        engine = find_manager(session)
        try:
            report = update_stack(
                engine,
                name,
                list(services),
                image_map,
                env_map,
                force,
                AppGates(engine, name, _image(inv, probe_image)),
                timeout,
                plan_only=plan_only,
                notify=notifier(as_json),
                on_progress=progress_callback(as_json),
                inventory=inv,
                resolve_image=resolve_image,
                history_limit=inv.history_limit,
            )
        except RolloutFailed as e:  # failed or interrupted: what was done, rolled back, not started
            render_rollout(e.results, as_json, error=str(e))
            raise
    if plan_only:
        show_plan(report.plan, as_json, f"nothing to update in stack {name}")
        return
    if as_json:
        emit_json(report.json())
        return
    render_warnings(report.warnings)
    if not report.plan.changes:
        click.echo(f"nothing to update in stack {name}: the services already have those images and variables", err=True)
    else:
        render_rollout(report.data["services"], as_json)


def render_rollout(results: list[Any], as_json: bool, error: str = "") -> None:
    """Each service of a rollout: from, to, result (updated, rolled back, failed, not started), time."""
    if as_json:
        emit_json({"services": [r.json() for r in results], "error": error})
        return
    rows = [(r.name, r.from_, r.to, r.result, f"{r.seconds:.1f}s") for r in results]
    click.echo(table(rows, ("SERVICE", "FROM", "TO", "RESULT", "TIME")))
    for r in results:
        if r.detail and r.result != "updated":
            click.echo(f"  {r.name}: {r.detail}")


# -- history and rollback ------------------------------------------------------------------------


@cli.command("history")
@click.argument("name")
@json_option("history")
@common_options
@click.pass_obj
def history(obj: Obj, name: str, as_json: bool) -> None:
    """List the revisions of stack NAME and what changed between them.

    Every deploy, update and rollback that changed the stack records a revision in the swarm (a
    config, readable from every manager): when, by whom, with which swarmctl and stack files, and
    the services' specs. The newest swarm.history_limit (inventory; 10) are kept.

    \b
    Example: swarmctl history web
    """
    from swarmctl.compose.loader import check_stack_name
    from swarmctl.facts.membership import find_manager
    from swarmctl.ops.history import read_history
    from swarmctl.transport.engine import Session

    check_stack_name(name)
    inv = load_inventory(obj)
    with Session(inv) as session:
        entries, warnings = read_history(find_manager(session), name)
    if as_json:
        emit_json({"warnings": warnings, "stack": name, "history_limit": inv.history_limit,
                   "revisions": [e.json() for e in entries]})  # fmt: skip
        return
    render_warnings(warnings)
    if not entries:
        click.echo(f"no revisions of stack {name} (deploy, update and rollback record them)")
        return
    rows = []
    for e in entries:
        r = e.revision
        command = f"rollback to {r.restores}" if r.restores else r.command
        files = r.files_digest.removeprefix("sha256:")[:12] or "-"
        rows.append((str(r.number), r.time, r.who, command, r.swarmctl, files, str(len(r.services))))
    click.echo(table(rows, ("REV", "TIME", "BY", "COMMAND", "SWARMCTL", "FILES", "SERVICES")))
    changes = [(str(e.revision.number), c.describe()) for e in entries for c in e.differences]
    changes += [(str(e.revision.number), "(the revision before it is no longer kept)")
                for e in entries if e.compared_with is None and e.revision.number > 1]  # fmt: skip
    if changes:
        click.echo("")
        click.echo(table(sorted(changes, key=lambda c: int(c[0])), ("REV", "CHANGED")))


@cli.command("rollback")
@click.argument("name")
@click.argument("revision", required=False, type=click.IntRange(min=1))
@plan_option
@click.option("--timeout", type=click.FloatRange(min=1), default=300, show_default=True, help="Seconds per service.")
@click.option("--probe-image", metavar="IMAGE", help="Image with python3 for the application gates.")
@json_option("rollback")
@common_options
@click.pass_obj
def rollback(
    obj: Obj, name: str, revision: int | None, plan_only: bool, timeout: float, probe_image: str | None, as_json: bool
) -> None:
    """Roll stack NAME's services back to REVISION (default: the one before the latest).

    The revision's service specs are rolled out as `update` does - one service at a time, behind
    health and application gates, a failing one rolled back - and the result is recorded as a new
    revision. Networks, secrets and configs are not changed. See `swarmctl history NAME`.

    \b
    Example: swarmctl rollback web --plan
    """
    from swarmctl.compose.loader import check_stack_name
    from swarmctl.facts.membership import find_manager
    from swarmctl.ops.rollback import rollback_stack
    from swarmctl.ops.update import AppGates, RolloutFailed
    from swarmctl.transport.engine import Session

    check_stack_name(name)
    inv = load_inventory(obj)
    with Session(inv) as session:
        engine = find_manager(session)
        try:
            report = rollback_stack(
                engine,
                name,
                revision,
                AppGates(engine, name, _image(inv, probe_image)),
                timeout,
                plan_only=plan_only,
                notify=notifier(as_json),
                on_progress=progress_callback(as_json),
                inventory=inv,
                history_limit=inv.history_limit,
            )
        except RolloutFailed as e:  # failed or interrupted: what was done, rolled back, not started
            render_rollout(e.results, as_json, error=str(e))
            raise
    target = report.data["target"]
    nothing = f"nothing to roll back: the services of stack {name} already match revision {target}"
    if plan_only:
        show_plan(report.plan, as_json, nothing, {"stack": name, "target": target})
        return
    if as_json:
        emit_json(report.json())
        return
    render_warnings(report.warnings)
    if not report.plan.changes:
        click.echo(nothing, err=True)
        return
    render_rollout(report.data["services"], as_json)
    recorded = report.data.get("revision")
    say(f"stack {name} rolled back to revision {target}" + (f"; recorded as revision {recorded}" if recorded else ""))
