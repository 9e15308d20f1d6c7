"""lab: the built-in lab of hosts in network namespaces on this machine."""

from __future__ import annotations

from pathlib import Path

import click

from swarmctl.cli.app import cli, json_option
from swarmctl.cli.render import emit_json, say, table
from swarmctl.errors import ExitStatus, PrerequisiteError


@cli.group()
@click.pass_context
def lab(ctx: click.Context) -> None:
    """The built-in lab: N hosts in network namespaces on this machine (needs root)."""
    if ctx.resilient_parsing:  # shell completion: nothing to check
        return
    try:
        import swarmctl_lab  # noqa: F401
    except ImportError:
        raise PrerequisiteError(
            "the lab is not installed: it is a package of its own, swarmctl-lab (pip install 'swarmctl[lab]'; "
            "from a clone of swarmctl: pip install ./lab)"
        ) from None


_dir_option = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".swarmctl/lab"),
    show_default=True,
    help="Where the lab keeps its inventory, keys and host data.",
)


@lab.command("up")
@click.option("--hosts", "hosts", type=click.IntRange(1, 32), default=3, show_default=True, help="Number of hosts.")
@click.option("--managers", type=click.IntRange(1, 32), default=1, show_default=True, help="How many are managers.")
@click.option(
    "--vm",
    is_flag=True,
    help="Real virtual machines (qemu; KVM if it works here, else TCG) instead of network namespaces.",
)
@click.option("--subnet", metavar="CIDR", help="The lab's IPv4 subnet (default: a /24 no interface here is on).")
@_dir_option
def lab_up(hosts: int, managers: int, vm: bool, subnet: str | None, directory: Path) -> None:
    """Create the lab (removing an earlier one in DIR) and write DIR/hosts.yml. Labs in different
    directories run side by side, each on a bridge and subnet of its own.

    \b
    Example: swarmctl lab up --hosts 3, or swarmctl lab up --vm --hosts 3
    """
    from swarmctl_lab import hosts as labhosts
    from swarmctl_lab.backend import backend

    spec = labhosts.plan_lab(directory, hosts, managers, subnet=subnet, kind="vm" if vm else "netns")
    inventory = backend(spec.kind).bring_up(spec, report=say)
    kind = "VMs" if vm else "hosts"
    say(
        f"lab ready: {len(spec.hosts)} {kind} ({', '.join(h.name for h in spec.hosts)}) on {spec.bridge}, {spec.subnet}"
    )
    click.echo(str(inventory))


@lab.command("images")
@_dir_option
@click.option("--rebuild", is_flag=True, help="Build again even when a cached build exists.")
def lab_images(directory: Path, rebuild: bool) -> None:
    """Build the lab's images (cached) and load them into every lab host that lacks them.

    \b
    Example: swarmctl lab images
    """
    from swarmctl_lab import hosts as labhosts
    from swarmctl_lab import images
    from swarmctl_lab.backend import backend

    spec = labhosts.load_spec(directory)
    archive = images.ensure_bundle(report=say, rebuild=rebuild)
    backend(spec.kind).images(spec, archive, report=say)
    for ref, image_id in images.bundle_ids(archive).items():
        click.echo(f"{ref}  {image_id[:19]}")
    click.echo(f"archive: {archive}")


@lab.command("down")
@_dir_option
@click.option("--all", "everything", is_flag=True, help="Every lab on this machine, whatever its directory.")
def lab_down(directory: Path, everything: bool) -> None:
    """Remove the lab of DIR: processes, mounts, namespaces, bridge, iptables rules and its files.

    \b
    Example: swarmctl lab down, or swarmctl lab down --all
    """
    from swarmctl_lab import hosts as labhosts

    labhosts.check_prerequisites()
    removed = labhosts.teardown_all(report=say) if everything else labhosts.teardown(directory, report=say)
    say("lab removed" if removed else "no lab found: nothing to remove")


@lab.command("status")
@_dir_option
@json_option("lab")
def lab_status(directory: Path, as_json: bool) -> None:
    """Show the lab's hosts and whether their sshd and dockerd answer.

    \b
    Example: swarmctl lab status
    """
    from dataclasses import asdict

    from swarmctl_lab import hosts as labhosts
    from swarmctl_lab.backend import backend

    spec = labhosts.load_spec(directory)
    status = backend(spec.kind).status(spec)
    if as_json:
        emit_json({"inventory": str(spec.inventory), "bridge": spec.bridge, "subnet": spec.subnet,
                   "hosts": [asdict(s) for s in status]})  # fmt: skip
    else:
        up = {True: "up", False: "DOWN"}
        rows = [(s.name, s.address, s.role, up[s.netns], up[s.sshd], up[s.dockerd]) for s in status]
        click.echo(table(rows, ("HOST", "ADDRESS", "ROLE", "NETNS", "SSHD", "DOCKERD")))
        click.echo(f"inventory: {spec.inventory} (bridge {spec.bridge}, {spec.subnet})")
    if not all(s.netns and s.sshd and s.dockerd for s in status):
        raise SystemExit(ExitStatus.FAILURE)
