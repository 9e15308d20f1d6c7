"""Host maintenance: maintain, drain, activate."""

from __future__ import annotations

from typing import Any

import click

from swarmctl.cli.app import Obj, cli, common_options, json_option, load_inventory, plan_option
from swarmctl.cli.app import probe_image as image_for_probes
from swarmctl.cli.render import emit_json, notifier, render_warnings, say, show_plan


def _services(values: tuple[str, ...]) -> list[str]:
    """--allow-down a,b --allow-down c -> [a, b, c]."""
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def _finish(verb: str, report: Any, as_json: bool) -> None:
    from swarmctl.errors import HostsFailed

    if as_json:
        emit_json(report.json())
    else:
        render_warnings(report.warnings)
        for done in report.data.get("hosts", []):
            if done.state != "untouched":
                say(f"{done.host}: {done.state}" + (f" after {done.seconds:.0f}s" if done.seconds else ""))
    if report.failures:
        raise HostsFailed(verb, report.failures)


class _WithCommand(click.Command):
    """HOST... [-- CMD...]: what follows ``--`` is the command, kept apart before click parses the
    rest (click would mix it into HOST...)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            at = args.index("--")
            ctx.meta[_COMMAND] = args[at + 1 :]
            args = args[:at]
        return super().parse_args(ctx, args)


_COMMAND = "swarmctl.maintain.command"


@cli.command("maintain", cls=_WithCommand)
@click.argument("hosts", nargs=-1, required=True, metavar="HOST... [-- CMD...]")
@click.option("--restart-engine", is_flag=True, help="Restart each host's Docker Engine while its tasks are away.")
@click.option("--reboot", is_flag=True, help="Reboot each host while its tasks are away, and wait for it.")
@click.option("--allow-down", "allow_down", multiple=True, metavar="SERVICE,...",
              help="Services only the host can run (pinned to it), taken down for its maintenance; their "
              "application checks must pass before and after.")  # fmt: skip
@click.option("--probe-image", metavar="IMAGE", help="Image with python3 for the application checks.")
@plan_option
@json_option("maintain")
@common_options
@click.pass_obj
def maintain(
    obj: Obj,
    hosts: tuple[str, ...],
    restart_engine: bool,
    reboot: bool,
    allow_down: tuple[str, ...],
    probe_image: str | None,
    plan_only: bool,
    as_json: bool,
) -> None:
    """Maintain hosts one at a time without losing a replica; run CMD on each while its tasks are away.

    Per host (workers first, managers after, the leader last): pause the node; start replacements
    of its replicated tasks elsewhere first (scale up, wait until they run healthy); drain; scale
    back; run CMD over SSH, restart the engine or reboot; wait until the node is Ready (a manager
    reachable and unlocked); set it active; wait until every service runs all its tasks and the
    application checks of the services it took down pass. Then the next host.

    \b
    Examples:
      swarmctl maintain lab2 --plan
      swarmctl maintain lab2 lab3 -- sh -c 'apt-get update && apt-get -y upgrade'
      swarmctl maintain lab2 --allow-down kafka_kafka-2,kafka_zookeeper-2 --restart-engine
    """
    from swarmctl.errors import InputError
    from swarmctl.ops.maintain import Work

    names = list(hosts)
    command = list(click.get_current_context().meta.get(_COMMAND) or [])
    if _COMMAND in click.get_current_context().meta and not command:
        raise InputError("-- with no command after it: give the command to run on each host, or leave out --")
    if restart_engine and reboot:
        raise InputError("--restart-engine and --reboot: a reboot restarts the engine too; give one")
    _maintain(obj, "maintain", names, Work(tuple(command), restart_engine, reboot), allow_down, probe_image,
              plan_only, as_json)  # fmt: skip


def _maintain(obj: Obj, verb: str, hosts: list[str], work: Any, allow_down: tuple[str, ...], probe_image: str | None,
              plan_only: bool, as_json: bool) -> None:  # fmt: skip
    """maintain and drain: one operation, ``work`` says what is done to each host."""
    from swarmctl.ops.maintain import maintain as run_maintain
    from swarmctl.transport.engine import Session

    inv = load_inventory(obj, quiet=True)
    image = image_for_probes(inv, probe_image)
    with Session(inv) as session:
        report = run_maintain(session, hosts, work, _services(allow_down), plan_only, image, notifier(as_json), verb)
    if plan_only:
        show_plan(report.plan, as_json, "nothing to do", {"hosts": report.data["hosts"]})
        return
    _finish(verb, report, as_json)


@cli.command("drain")
@click.argument("hosts", nargs=-1, required=True, metavar="HOST...")
@click.option("--allow-down", "allow_down", multiple=True, metavar="SERVICE,...",
              help="Services only these hosts can run, taken down with them.")  # fmt: skip
@click.option("--probe-image", metavar="IMAGE", help="Image with python3 for the application checks.")
@plan_option
@json_option("maintain")
@common_options
@click.pass_obj
def drain(
    obj: Obj, hosts: tuple[str, ...], allow_down: tuple[str, ...], probe_image: str | None, plan_only: bool,
    as_json: bool,
) -> None:  # fmt: skip
    """Drain hosts with their replacements started first: no replicated service runs short.

    Like maintain without the maintenance: the hosts are left drained (`swarmctl activate HOST`
    brings them back).

    \b
    Example: swarmctl drain lab3
    """
    from swarmctl.ops.maintain import Work

    _maintain(obj, "drain", list(hosts), Work(activate=False), allow_down, probe_image, plan_only, as_json)


@cli.command("activate")
@click.argument("hosts", nargs=-1, required=True, metavar="HOST...")
@plan_option
@json_option("maintain")
@common_options
@click.pass_obj
def activate(obj: Obj, hosts: tuple[str, ...], plan_only: bool, as_json: bool) -> None:
    """Set hosts active again and wait until every service runs all its tasks.

    \b
    Example: swarmctl activate lab3
    """
    from swarmctl.ops.maintain import activate as run_activate
    from swarmctl.transport.engine import Session

    inv = load_inventory(obj, quiet=True)
    with Session(inv) as session:
        report = run_activate(session, list(hosts), plan_only, notifier(as_json))
    if plan_only:
        show_plan(report.plan, as_json, "nothing to do: active already", {"hosts": report.data["hosts"]})
        return
    _finish("activate", report, as_json)
