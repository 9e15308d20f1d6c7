"""Day two: rotate (tokens, ca, unlock-key), unlock, backup, recover."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from swarmctl.cli.app import Obj, cli, common_options, json_option, load_inventory, plan_option
from swarmctl.cli.render import emit_json, notifier, render_warnings, say, show_plan, table


def _finish(report: Any, action: str, as_json: bool, done: str) -> None:
    """Render a report: JSON, or the warnings and one closing line; failures raise (exit 1)."""
    from swarmctl.errors import HostsFailed

    if as_json:
        emit_json(report.json())
    else:
        render_warnings(report.warnings)
        if not report.failures:
            say(done)
    if report.failures:
        raise HostsFailed(action, report.failures)


@cli.group()
def rotate() -> None:
    """Rotate join tokens, the root CA or the unlock key."""


@rotate.command("tokens")
@click.option("--worker", is_flag=True, help="Only the worker token.")
@click.option("--manager", is_flag=True, help="Only the manager token.")
@json_option("rotate")
@common_options
@click.pass_obj
def rotate_tokens(obj: Obj, worker: bool, manager: bool, as_json: bool) -> None:
    """New join tokens (both unless --worker or --manager). Joined nodes are not affected; the next
    bootstrap joins new hosts with the new token; the old one is refused. Tokens are never shown.

    \b
    Example: swarmctl rotate tokens --worker
    """
    from swarmctl.ops.rotate import rotate_tokens as run
    from swarmctl.transport.engine import Session

    with Session(load_inventory(obj)) as session:
        report = run(session, worker, manager, notify=notifier(as_json))
    _finish(report, "rotate tokens", as_json, f"rotated: {', '.join(c.name for c in report.changes)}")


@rotate.command("ca")
@click.option("--timeout", type=click.FloatRange(1, 3600), default=300, show_default=True,
              help="Seconds to wait for every node to follow.")  # fmt: skip
@json_option("rotate")
@common_options
@click.pass_obj
def rotate_ca(obj: Obj, timeout: float, as_json: bool) -> None:
    """A new root CA; waits (with progress) until every node holds a certificate from it and trusts
    only it. Exit 1 names the nodes that did not follow in time.

    \b
    Example: swarmctl rotate ca
    """
    from swarmctl.ops.rotate import rotate_ca as run
    from swarmctl.transport.engine import Session

    with Session(load_inventory(obj)) as session:
        report = run(session, notify=notifier(as_json), timeout=timeout)
    p = report.data["progress"]
    _finish(report, "rotate ca", as_json, f"root CA rotated: {p.certs}/{p.total} nodes hold a new certificate")


@rotate.command("unlock-key")
@json_option("rotate")
@common_options
@click.pass_obj
def rotate_unlock_key(obj: Obj, as_json: bool) -> None:
    """A new unlock key (autolock on). The old key stays stored, retired: a manager that was down
    during the rotation may still need it. Keys are never shown.

    \b
    Example: swarmctl rotate unlock-key
    """
    from swarmctl.ops.autolock import rotate_unlock_key as run
    from swarmctl.transport.engine import Session

    with Session(load_inventory(obj)) as session:
        report = run(session, notify=notifier(as_json))
    _finish(report, "rotate unlock-key", as_json, f"unlock key rotated; stored encrypted in {report.data['stored']}")


@cli.command()
@plan_option
@json_option("unlock")
@common_options
@click.pass_obj
def unlock(obj: Obj, plan_only: bool, as_json: bool) -> None:
    """Unlock every locked manager (autolock: a manager is locked after its engine restarts) with
    the unlock key stored encrypted in secrets/.

    \b
    Example: swarmctl unlock
    """
    from swarmctl.ops.autolock import unlock as run
    from swarmctl.transport.engine import Session

    with Session(load_inventory(obj)) as session:
        report = run(session, plan_only=plan_only, notify=notifier(as_json))
    if plan_only:
        _plan(report, as_json, "nothing to do: no inventory manager is locked")
        return
    locked = report.data["locked"]
    done = f"unlocked: {', '.join(locked)}" if locked else "nothing to do: no inventory manager is locked"
    _finish(report, "unlock", as_json, done)


def _plan(report: Any, as_json: bool, nothing: str) -> None:
    from swarmctl.errors import HostsFailed

    show_plan(report.plan, as_json, nothing, report.data)
    if report.plan.blocked:
        raise HostsFailed("plan", report.plan.blocked)


@cli.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="The archive to write.")
@click.option("--list", "list_file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Show a backup's manifest; change nothing.")  # fmt: skip
@click.option("--yes", is_flag=True, help="Accept that a swarm of one or two managers is unavailable meanwhile.")
@plan_option
@json_option("backup")
@common_options
@click.pass_obj
def backup(obj: Obj, output: Path | None, list_file: Path | None, yes: bool, plan_only: bool, as_json: bool) -> None:
    """Back up the swarm's raft state, encrypted with the secrets key, with a manifest.

    Taken from a manager that is not the leader, so quorum holds throughout (3 or more managers):
    its engine stops, its swarm state is archived, it starts and rejoins. Default file:
    swarm-backup-<swarm>-<time>.swarmctl here.

    \b
    Example: swarmctl backup -o swarm.backup; swarmctl backup --list swarm.backup
    """
    if list_file is not None:
        from swarmctl.ops.backup import read_manifest

        data = read_manifest(list_file)
        if as_json:
            emit_json({"manifest": data})
            return
        _render_manifest(data)
        return
    from swarmctl.ops.backup import backup as run
    from swarmctl.transport.engine import Session

    with Session(load_inventory(obj)) as session:
        report = run(session, output, yes=yes, plan_only=plan_only, notify=notifier(as_json))
    if plan_only:
        _plan(report, as_json, "nothing to do")
        return
    file = report.data.get("file", "")
    _finish(report, "backup", as_json, f"backup written: {file} ({report.data.get('bytes', 0)} bytes)")


def _render_manifest(data: dict[str, Any]) -> None:
    rows = []
    for key in ("swarm_id", "node_id", "host", "raft_index", "docker_version", "created", "managers", "autolock"):
        rows.append((key, str(data.get(key, ""))))
    for key in ("stacks", "services", "secrets", "configs", "networks"):
        values = data.get(key) or []
        rows.append((key, f"{len(values)}: {', '.join(values)}" if values else "0"))
    click.echo(table(rows, ("FIELD", "VALUE")))


@cli.command()
@click.option("--from-backup", "from_backup", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Restore this archive on the manager at the address it was taken at.")  # fmt: skip
@click.option("--yes", is_flag=True, help="Carry out the plan (without it only the plan is shown).")
@click.option("--timeout", type=click.FloatRange(1, 3600), default=600, show_default=True,
              help="Seconds to wait for the services to run again.")  # fmt: skip
@plan_option
@json_option("recover")
@common_options
@click.pass_obj
def recover(obj: Obj, from_backup: Path | None, yes: bool, timeout: float, plan_only: bool, as_json: bool) -> None:
    """Recover a swarm that lost its quorum (a majority of managers gone).

    The reachable manager with the most recent raft state (or, with --from-backup, the manager at
    the address the backup was taken at, with the archive restored) makes a new one-manager cluster of it
    (--force-new-cluster); every other host leaves the lost swarm and joins again with fresh
    tokens; then it waits until the services run. Shows the plan; runs it only with --yes.

    \b
    Example: swarmctl recover --plan; swarmctl recover --yes
    """
    from swarmctl.ops.recover import recover as run
    from swarmctl.transport.engine import Session

    with Session(load_inventory(obj)) as session:
        report = run(session, from_backup, plan_only=plan_only or not yes, notify=notifier(as_json),
                     converge_timeout=timeout)  # fmt: skip
    if plan_only or not yes:
        _plan(report, as_json, "nothing to do")
        if not plan_only and not as_json:
            say("nothing was changed: run again with --yes to carry out this plan")
        return
    _finish(report, "recover", as_json, f"recovered from {report.data['source']}: services run again")
