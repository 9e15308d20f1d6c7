"""images push and ls: images where no registry serves them."""

from __future__ import annotations

import os
from pathlib import Path

import click

from swarmctl.cli.app import Obj, cli, common_options, json_option, load_inventory, plan_option
from swarmctl.cli.render import emit_json, notifier, say, show_plan, table


@cli.group()
def images() -> None:
    """Images without a registry: copy them to the hosts over SSH, see which host has which."""


@images.command("push")
@click.argument("sources", nargs=-1, required=True, metavar="IMAGE|ARCHIVE...")
@click.option("--hosts", "host_list", metavar="H,...", default="", help="Only these inventory hosts (default: all).")
@plan_option
@json_option("images")
@common_options
@click.pass_obj
def images_push(obj: Obj, sources: tuple[str, ...], host_list: str, plan_only: bool, as_json: bool) -> None:
    """Copy images (docker save archives, or images of the local engine) to the hosts that lack them.

    Streamed into `docker load` over each host's SSH connection, hosts in parallel; a host that
    already has an image by ID is skipped (or only given the name).

    \b
    Example: swarmctl images push app.tar --hosts w1,w2
    """
    from swarmctl.errors import HostsFailed
    from swarmctl.ops.images import hosts_named, push_images
    from swarmctl.ops.images import sources as open_sources
    from swarmctl.transport.engine import Session

    inv = load_inventory(obj)
    with open_sources(sources) as archives, Session(inv) as session:
        hosts = hosts_named(session, host_list.split(","))
        report = push_images(session, archives, hosts, plan_only=plan_only, notify=notifier(as_json))
    if plan_only:
        show_plan(report.plan, as_json, "nothing to push: every host has every image", report.data)
    elif as_json:
        emit_json(report.json())
    else:
        rows = []
        for host, r in sorted(report.data["hosts"].items()):
            rows.append((host, r["result"], f"{r['bytes'] / 1e6:.1f} MB", f"{r['seconds']:.1f}s"))
        click.echo(table(rows, ("HOST", "RESULT", "SENT", "TIME")))
        if "seconds" in report.data:
            say(f"pushed in {report.data['seconds']:.1f}s")
    if report.failures:
        raise HostsFailed("images push", report.failures)


@images.command("ls")
@click.argument("name")
@click.option("-f", "--file", "files", multiple=True, metavar="FILE", help="Stack file (repeat: later files override).")
@json_option("images")
@common_options
@click.pass_obj
def images_ls(obj: Obj, name: str, files: tuple[str, ...], as_json: bool) -> None:
    """Which host has which image ID, for the images of stack NAME (its files, as deploy reads them).

    \b
    Example: swarmctl images ls kafka
    """
    from swarmctl.compose.convert import convert_stack
    from swarmctl.compose.loader import find_stack_files, generated_placeholders, load_stack
    from swarmctl.errors import HostsFailed
    from swarmctl.ops.images import list_images
    from swarmctl.secretstore import KeySource
    from swarmctl.transport.engine import Session

    inv = load_inventory(obj)
    paths = find_stack_files(name, list(files), Path.cwd())
    # generated variables (a cluster ID) do not name images: their stand-ins will do here
    config = load_stack(name, paths, os.environ, {**generated_placeholders(paths), **inv.vars})
    desired = convert_stack(config, KeySource(os.environ))
    wanted = sorted({s["TaskTemplate"]["ContainerSpec"]["Image"] for s in desired.services.values()})
    with Session(inv) as session:
        rows, failures = list_images(session, wanted, list(inv.hosts))
    if as_json:
        emit_json({"images": [r.json() for r in rows]})
    else:
        shown = [(r.image, r.host, r.id[7:19] if r.id.startswith("sha256:") else (r.id or "missing")) for r in rows]
        click.echo(table(shown, ("IMAGE", "HOST", "ID")))
    if failures:  # "?" in the table: those hosts could not be asked
        raise HostsFailed("images ls", failures)
