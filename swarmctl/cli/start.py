"""The first five minutes on your own hosts: init (a project directory) and host-keys (the first
contact with each host's SSH key, done safely)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from swarmctl.cli.app import Obj, cli, common_options, json_option, load_inventory, plan_option
from swarmctl.cli.render import emit_json, render_warnings, say, show_plan, table


@cli.command()
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path), default=Path("."))
@click.option("--hosts", "addresses", metavar="A,B,C", default="",
              help="The three hosts' addresses (IP or DNS name), the first the manager.")  # fmt: skip
@plan_option
@json_option("init")
def init(directory: Path, addresses: str, plan_only: bool, as_json: bool) -> None:
    """Write a commented hosts.yml for 3 hosts (one manager, kafka.slot 1..3) and a .gitignore in
    DIRECTORY (default: here), then say what to do next. Never overwrites a file.

    \b
    Example: swarmctl init mycluster --hosts 10.0.0.11,10.0.0.12,10.0.0.13
    """
    from swarmctl.ops.init import init as run

    hosts = [a.strip() for a in addresses.split(",") if a.strip()]
    report = run(directory, hosts, plan_only=plan_only)
    if plan_only:
        show_plan(report.plan, as_json, "nothing to write")
        return
    if as_json:
        emit_json(report.json())
        return
    render_warnings(report.warnings)
    for c in report.changes:
        say(f"wrote {c.name} ({c.detail})")
    inv = directory / "hosts.yml"
    placeholders = not hosts
    say("")
    say("Next steps:")
    steps = [
        *([f"put your hosts' addresses in {inv} (it has placeholders)"] if placeholders else []),
        "on each host: Docker Engine and its CLI (Debian 12: apt-get install docker.io; Debian 13: "
        "apt-get install docker.io docker-cli) and your SSH key (ssh-copy-id root@HOST)",
        f"swarmctl host-keys -i {inv}            # check each host's SSH key fingerprint, record it",
        f"swarmctl bootstrap {inv} --plan; swarmctl bootstrap {inv}",
        "swarmctl deploy kafka --plan; swarmctl deploy kafka; swarmctl verify kafka",
    ]
    for i, step in enumerate(steps, 1):
        say(f"  {i}. {step}")


@cli.command("host-keys")
@click.option("--yes", is_flag=True, help="Record the new keys without asking (you checked them another way).")
@click.option("--expect", "expected", multiple=True, metavar="HOST=SHA256:...",
              help="The fingerprint a host must offer (from its console); matching new keys are recorded.")  # fmt: skip
@plan_option
@json_option("host-keys")
@common_options
@click.pass_obj
def host_keys(obj: Obj, yes: bool, expected: tuple[str, ...], plan_only: bool, as_json: bool) -> None:
    """Read each host's SSH host key (no login), show its fingerprint and whether known_hosts knows
    it, and record the new ones once confirmed: at the prompt, with --yes, or with --expect
    fingerprints that match. A key that differs from the recorded one is refused, never written.

    \b
    Example: swarmctl host-keys
             swarmctl host-keys --expect node1=SHA256:abc... --expect node2=SHA256:def...
    """
    from swarmctl.errors import HostsFailed, InputError
    from swarmctl.ops.hostkeys import host_keys as run

    expect = {}
    for item in expected:
        host, sep, fp = item.partition("=")
        if not sep or not host or not fp.startswith("SHA256:"):
            raise InputError(f"--expect {item!r}: give HOST=SHA256:... (ssh-keygen -lf on the host prints it)")
        expect[host] = fp
    inv = load_inventory(obj)
    shown: list[bool] = []

    def show(keys: list[Any]) -> None:
        rows = [(k.offered.host, k.offered.name, k.offered.key_type, k.offered.fingerprint, k.status) for k in keys]
        click.echo(table(rows, ("HOST", "AS", "TYPE", "FINGERPRINT", "STATUS")), err=True)
        shown.append(True)

    def confirm(keys: list[Any]) -> bool:
        if not as_json:
            show(keys)
        if yes:
            return True
        if as_json or not sys.stdin.isatty():
            return False
        return click.confirm(f"Record these {len(keys)} new host keys in known_hosts?", default=False, err=True)

    outcome = run(inv, expect, confirm=confirm, plan_only=plan_only)
    report = outcome.report
    if as_json:
        emit_json(outcome.json())
    else:
        if not shown:
            show(outcome.keys)
        render_warnings(report.warnings)
        if report.changes:
            say(f"recorded {len(report.changes)} host keys in {outcome.known_hosts}")
        elif not report.failures and not report.plan.changes:
            say(f"every host's key is known in {outcome.known_hosts}")
    if report.failures:
        raise HostsFailed("host-keys", report.failures)
    if report.plan.changes and not report.changes and not plan_only:
        raise SystemExit(1)  # new keys, not confirmed: nothing recorded (the warning says how)
