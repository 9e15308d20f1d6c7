"""lab: the built-in lab of hosts in network namespaces on this machine."""

from __future__ import annotations

from pathlib import Path

import click

from swarmctl.cli.app import cli
from swarmctl.cli.render import emit_json, say, table
from swarmctl.errors import ExitStatus


@cli.group()
def lab() -> None:
    """The built-in lab: N hosts in network namespaces on this machine (needs root)."""


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
@_dir_option
def lab_up(hosts: int, managers: int, vm: bool, directory: Path) -> None:
    """Create the lab (removing any earlier one) and write DIR/hosts.yml.

    Example: swarmctl lab up --hosts 3, or swarmctl lab up --vm --hosts 3
    """
    from swarmctl.lab import hosts as labhosts
    from swarmctl.lab import images

    spec = labhosts.plan_lab(directory, hosts, managers, kind="vm" if vm else "netns")
    if vm:
        from swarmctl.lab import vm as labvm

        inventory = labvm.bring_up(spec, report=say)
    else:

        def load_images(spec: labhosts.LabSpec) -> dict[str, str]:
            images.load_into_hosts(spec, images.ensure_bundle(report=say), report=say)
            return images.lab_vars()

        inventory = labhosts.bring_up(spec, report=say, prepare=load_images, with_registry=True)
    kind = "VMs" if vm else "hosts"
    say(f"lab ready: {len(spec.hosts)} {kind} ({', '.join(h.name for h in spec.hosts)})")
    click.echo(str(inventory))


@lab.command("images")
@_dir_option
@click.option("--rebuild", is_flag=True, help="Build again even when a cached build exists.")
def lab_images(directory: Path, rebuild: bool) -> None:
    """Build the lab's images (cached) and load them into every lab host that lacks them.

    Example: swarmctl lab images
    """
    from swarmctl.lab import hosts as labhosts
    from swarmctl.lab import images

    spec = labhosts.load_spec(directory)
    archive = images.ensure_bundle(report=say, rebuild=rebuild)
    ids = images.bundle_ids(archive)
    if spec.kind == "vm":
        from swarmctl.lab import vm as labvm

        labvm.check_images(spec, ids)  # baked into the VMs' root image
    else:
        images.load_into_hosts(spec, archive, report=say)
    for ref, image_id in ids.items():
        click.echo(f"{ref}  {image_id[:19]}")
    click.echo(f"archive: {archive}")


@lab.command("down")
@_dir_option
def lab_down(directory: Path) -> None:
    """Remove the lab: processes, mounts, namespaces, bridge, iptables rules and its files.

    Example: swarmctl lab down
    """
    from swarmctl.lab import hosts as labhosts

    labhosts.check_prerequisites()
    removed = labhosts.teardown(directory, report=say)
    say("lab removed" if removed else "no lab found: nothing to remove")


@lab.command("status")
@_dir_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def lab_status(directory: Path, as_json: bool) -> None:
    """Show the lab's hosts and whether their sshd and dockerd answer.

    Example: swarmctl lab status
    """
    from dataclasses import asdict

    from swarmctl.lab import hosts as labhosts

    spec = labhosts.load_spec(directory)
    status = labhosts.host_status(spec)
    if as_json:
        emit_json({"inventory": str(spec.inventory), "hosts": [asdict(s) for s in status]})
    else:
        up = {True: "up", False: "DOWN"}
        rows = [(s.name, s.address, s.role, up[s.netns], up[s.sshd], up[s.dockerd]) for s in status]
        click.echo(table(rows, ("HOST", "ADDRESS", "ROLE", "NETNS", "SSHD", "DOCKERD")))
        click.echo(f"inventory: {spec.inventory}")
    if not all(s.netns and s.sshd and s.dockerd for s in status):
        raise SystemExit(ExitStatus.FAILURE)
