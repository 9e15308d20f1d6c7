"""bootstrap and status."""

from __future__ import annotations

from pathlib import Path

import click

from swarmctl.cli.app import Obj, cli, common_options, json_option, load_inventory, plan_option
from swarmctl.cli.render import emit_json, notifier, render_warnings, say, show_plan, table, warn


@cli.command()
@click.argument("inventory", required=False, metavar="[INVENTORY]")
@click.option(
    "--force",
    is_flag=True,
    help="Make hosts that are in another swarm leave it and join this one; allow changing data-root, "
    "storage-driver or userns-remap on swarm nodes.",
)
@click.option("--prune", is_flag=True, help="Remove nodes and node labels the inventory does not name.")
@plan_option
@json_option("bootstrap")
@common_options
@click.pass_obj
def bootstrap(obj: Obj, inventory: str | None, force: bool, prune: bool, plan_only: bool, as_json: bool) -> None:
    """Create or converge the swarm described by INVENTORY (hosts.yml).

    Preflight on every host, init on the first manager, join the other managers and then the
    workers in parallel, apply roles, labels and availability. Running it again changes nothing.
    --plan shows what it would do.

    \b
    Example: swarmctl bootstrap hosts.yml --plan
    """
    import threading

    from swarmctl.errors import HostsFailed
    from swarmctl.inventory import remember_inventory
    from swarmctl.transport.ssh import Pool

    if inventory and obj.inventory and Path(inventory).resolve() != Path(obj.inventory).resolve():
        from swarmctl.errors import InputError

        raise InputError(
            f"two inventories given: {inventory} and -i {obj.inventory}: name one (the argument or -i, not both)"
        )
    inv = load_inventory(obj, inventory, quiet=True)  # its warnings are the plan's (they are in --json)
    # bootstrap asks its first manager first (a no-op's witness; every host on a first bootstrap):
    # that connection opens while the rest of swarmctl is imported (a tenth of a second)
    pool = Pool(inv.hosts)
    first = pool.connection(inv.managers[0])
    threading.Thread(target=first.connect_early, name=f"connect {first.host.name}", daemon=True).start()
    try:
        from swarmctl.ops.bootstrap import bootstrap as run_bootstrap
        from swarmctl.transport.engine import Session
    except BaseException:
        pool.close()
        raise

    with Session(inv, pool=pool) as session:
        done = run_bootstrap(session, force=force, prune=prune, plan_only=plan_only, notify=notifier(as_json))
    report = done.report
    if plan_only:
        # "nothing to do" only when every host could be asked: a host that could not be is no match
        nothing = (f"nothing to do: the swarm already matches {inv.path}" if not report.failures
                   else "nothing can be planned for the hosts that were not checked (below)")  # fmt: skip
        show_plan(report.plan, as_json, nothing, {"swarm_ready": done.swarm_ready, "nodes": done.nodes})
        if report.failures:
            raise HostsFailed("bootstrap --plan", report.failures)
        return
    if done.swarm_ready:
        remember_inventory(inv.path, Path.cwd())
    if as_json:
        emit_json(done.json())
    else:
        render_warnings(report.warnings)
        if done.swarm_ready and not report.failures:
            if report.changes:
                say(f"swarm ready: {done.nodes} nodes, {len(report.changes)} changes")
            else:
                say(f"nothing to do: the swarm already matches {inv.path} ({done.nodes} nodes)")
    if report.failures:
        raise HostsFailed("bootstrap", report.failures)


@cli.command()
@json_option("status")
@common_options
@click.pass_obj
def status(obj: Obj, as_json: bool) -> None:
    """Show the swarm's nodes and services (running/desired tasks).

    \b
    Example: swarmctl status
    """
    from swarmctl.ops.status import read_status
    from swarmctl.transport.engine import Session

    inv = load_inventory(obj)
    with Session(inv) as session:
        st = read_status(session)
    if as_json:
        emit_json(st.json())
        return
    for host, why in sorted(st.skipped.items()):
        warn(f"{host}: skipped ({why}); the swarm as {st.manager} sees it")
    for host in st.locked:
        warn(f"{host}: locked: run `swarmctl unlock`")
    rows = []
    for n in st.nodes:
        role = n.role + (" (leader)" if n.leader else "")
        labels = ",".join(f"{k}={v}" for k, v in sorted(n.labels.items())) or "-"
        name = st.names.get(n.id, "-")
        state = "locked" if name in st.locked else n.state
        rows.append((name, n.hostname, role, state, n.availability, n.engine_version, labels))
    click.echo(table(rows, ("NAME", "HOSTNAME", "ROLE", "STATE", "AVAILABILITY", "ENGINE", "LABELS")))
    click.echo()
    if st.services:
        srows = [(s.name, s.mode, f"{s.running}/{s.desired}", s.image) for s in st.services]
        click.echo(table(srows, ("SERVICE", "MODE", "TASKS", "IMAGE")))
    else:
        click.echo("no services")
