"""Command line: parse, call one core function, render. Nothing else lives here."""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from swarmctl import __version__
from swarmctl.errors import ClusterError, ExitStatus, SwarmctlError

log = logging.getLogger("swarmctl")

DEBUG_LOG = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "swarmctl" / "debug.log"


# -- rendering -----------------------------------------------------------------------------------


def say(message: str) -> None:
    """Progress and notes go to stderr, so stdout stays clean for results and --json."""
    click.echo(message, err=True)


def warn(message: str) -> None:
    click.echo(click.style("warning: ", fg="yellow", bold=True) + message, err=True)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    cells = [list(header)] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


# -- the command tree ----------------------------------------------------------------------------


class Obj:
    """Options of the top-level group, handed to every subcommand."""

    def __init__(self, inventory: str | None = None, verbose: int = 0):
        self.inventory = inventory
        self.verbose = verbose

    def inventory_path(self) -> Path:
        from swarmctl.inventory import resolve_inventory_path

        return resolve_inventory_path(self.inventory, os.environ, Path.cwd())


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "-i",
    "--inventory",
    metavar="FILE",
    help="Inventory (hosts.yml). Default: $SWARMCTL_INVENTORY, then the one last bootstrapped here.",
)
@click.option("-v", "--verbose", count=True, help="More detail on stderr (-vv: debug).")
@click.version_option(__version__, prog_name="swarmctl")
@click.pass_context
def cli(ctx: click.Context, inventory: str | None, verbose: int) -> None:
    """Stand up and run Docker Swarm clusters over SSH."""
    _setup_logging(verbose)
    ctx.obj = Obj(inventory, verbose)


def _set_inventory(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        ctx.ensure_object(Obj).inventory = value


def _add_verbosity(ctx: click.Context, _param: click.Parameter, value: int) -> None:
    if value:
        obj = ctx.ensure_object(Obj)
        obj.verbose += value
        _setup_logging(obj.verbose)


def common_options(fn: Any) -> Any:
    """-i and -v are accepted after the subcommand too: `swarmctl status -i hosts.yml`."""
    fn = click.option(
        "-i",
        "--inventory",
        "inventory_option",
        metavar="FILE",
        expose_value=False,
        callback=_set_inventory,
        help="Inventory (hosts.yml).",
    )(fn)
    fn = click.option("-v", "--verbose", count=True, expose_value=False, callback=_add_verbosity, help="More detail.")(
        fn
    )
    return fn


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def _load_inventory(obj: Obj, explicit: str | None = None) -> Any:
    from swarmctl.inventory import load_inventory

    path = Path(explicit) if explicit else obj.inventory_path()
    inv = load_inventory(path)
    for w in inv.warnings:
        warn(f"{path}: {w}")
    return inv


# -- bootstrap and status ------------------------------------------------------------------------


@cli.command()
@click.argument("inventory", required=False, metavar="[INVENTORY]")
@click.option("--force", is_flag=True, help="Make hosts that are in another swarm leave it and join this one.")
@click.option("--prune", is_flag=True, help="Remove nodes and node labels the inventory does not name.")
@click.option("--json", "as_json", is_flag=True, help="Print {changes, warnings, failures} as JSON.")
@common_options
@click.pass_obj
def bootstrap(obj: Obj, inventory: str | None, force: bool, prune: bool, as_json: bool) -> None:
    """Create or converge the swarm described by INVENTORY (hosts.yml).

    Preflight on every host, init on the first manager, join the rest in parallel, apply roles,
    labels and availability. Running it again changes nothing.

    Example: swarmctl bootstrap hosts.yml
    """
    from swarmctl.engine import Session
    from swarmctl.errors import HostsFailed
    from swarmctl.inventory import remember_inventory
    from swarmctl.swarm import bootstrap as run_bootstrap

    inv = _load_inventory(obj, inventory)
    report = (lambda host, msg: None) if as_json else (lambda host, msg: say(f"{host}: {msg}"))
    with Session(inv) as session:
        result = run_bootstrap(session, force=force, prune=prune, report=report)
    if result.swarm_ready:
        remember_inventory(inv.path, Path.cwd())
    if as_json:
        emit_json(
            {
                "changes": [{"host": c.host, "action": c.action, "detail": c.detail} for c in result.changes],
                "warnings": result.warnings,
                "failures": [{"host": h, "error": e} for h, e in sorted(result.failures.items())],
            }
        )
    else:
        for w in result.warnings:
            warn(w)
        if result.swarm_ready and not result.failures:
            if result.changes:
                say(f"swarm ready: {result.nodes} nodes, {len(result.changes)} changes")
            else:
                say(f"nothing to do: the swarm already matches {inv.path} ({result.nodes} nodes)")
    if result.failures:
        raise HostsFailed("bootstrap", result.failures)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print {nodes, services} as JSON.")
@common_options
@click.pass_obj
def status(obj: Obj, as_json: bool) -> None:
    """Show the swarm's nodes and services (running/desired tasks).

    Example: swarmctl status
    """
    from swarmctl.engine import Session
    from swarmctl.swarm import read_status

    inv = _load_inventory(obj)
    with Session(inv) as session:
        st = read_status(session)
    if as_json:
        emit_json(
            {
                "manager": st.manager,
                "nodes": [
                    {
                        "name": st.names.get(n.id, ""),
                        "id": n.id,
                        "hostname": n.hostname,
                        "address": n.addr,
                        "role": n.role,
                        "leader": n.leader,
                        "state": n.state,
                        "availability": n.availability,
                        "engine_version": n.engine_version,
                        "labels": dict(n.labels),
                    }
                    for n in st.nodes
                ],
                "services": [
                    {
                        "name": s.name,
                        "stack": s.stack,
                        "mode": s.mode,
                        "running": s.running,
                        "desired": s.desired,
                        "image": s.image,
                    }
                    for s in st.services
                ],
            }
        )
        return
    rows = []
    for n in st.nodes:
        role = n.role + (" (leader)" if n.leader else "")
        labels = ",".join(f"{k}={v}" for k, v in sorted(n.labels.items())) or "-"
        rows.append((st.names.get(n.id, "-"), n.hostname, role, n.state, n.availability, n.engine_version, labels))
    click.echo(table(rows, ("NAME", "HOSTNAME", "ROLE", "STATE", "AVAILABILITY", "ENGINE", "LABELS")))
    click.echo()
    if st.services:
        srows = [(s.name, s.mode, f"{s.running}/{s.desired}", s.image) for s in st.services]
        click.echo(table(srows, ("SERVICE", "MODE", "TASKS", "IMAGE")))
    else:
        click.echo("no services")


# -- stacks --------------------------------------------------------------------------------------


class ProgressView:
    """Per-service convergence: a live block on a terminal, one line per change otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.lines: dict[str, str] = {}
        self.drawn = 0

    def update(self, p: Any) -> None:
        text = f"{p.service}: {p.running}/{p.desired} {p.state}" + (f" - {p.message}" if p.message else "")
        if not self.tty:
            say(text)
            return
        self.lines[p.service] = text
        if self.drawn:
            click.echo(f"\x1b[{self.drawn}A", err=True, nl=False)
        for line in self.lines.values():
            click.echo("\x1b[2K" + line[: self._width()], err=True)
        self.drawn = len(self.lines)

    @staticmethod
    def _width() -> int:
        import shutil

        return max(40, shutil.get_terminal_size((120, 20)).columns - 1)


def _change_json(c: Any) -> dict[str, Any]:
    return {"kind": c.kind, "name": c.name, "action": c.action, "fields": list(c.fields)}


@cli.command()
@click.argument("name")
@click.option("-f", "--file", "files", multiple=True, metavar="FILE", help="Stack file (repeat: later files override).")
@click.option("--plan", "plan_only", is_flag=True, help="Show what would change; change nothing.")
@click.option("--no-wait", is_flag=True, help="Do not wait for the services to converge.")
@click.option("--prune", is_flag=True, help="Remove services, networks, secrets and configs the files no longer have.")
@click.option("--timeout", type=click.FloatRange(min=1), default=300, show_default=True, help="Seconds to wait.")
@click.option("--no-verify", is_flag=True, help="Do not run `swarmctl verify` after the stack converged.")
@click.option(
    "--probe-image", metavar="IMAGE", help="Image with python3 for verify's probes (default: PROBE_IMAGE var)."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
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
    probe_image: str | None,
    as_json: bool,
) -> None:
    """Deploy stack NAME (stacks/NAME/stack.yml, or the -f files) and wait until it converged.

    Example: swarmctl deploy web -f web.yml --plan
    """
    from swarmctl.engine import Session
    from swarmctl.stack.convert import convert_stack
    from swarmctl.stack.deploy import deploy_stack
    from swarmctl.stack.loader import find_stack_files, load_stack

    inv = _load_inventory(obj)
    paths = find_stack_files(name, list(files), Path.cwd())
    config = load_stack(name, paths, os.environ, inv.vars)
    for w in config.warnings:
        warn(w)
    desired = convert_stack(config, secrets_key=_key_loader())
    view = ProgressView()
    report = (lambda msg: None) if as_json else say
    with Session(inv) as session:
        from swarmctl.rollout import AppGates

        engine = session.manager()
        result = deploy_stack(
            engine,
            desired,
            prune=prune,
            plan_only=plan_only,
            wait=not no_wait,
            timeout=timeout,
            report=report,
            on_progress=(lambda p: None) if as_json else view.update,
            gates=AppGates(engine, name, _probe_image(inv, probe_image)),
        )
        verified = None
        if result.waited and not no_verify:
            from swarmctl.verify import verify_stack

            if not as_json:
                say(f"stack {name}: {len(result.progress)} services converged in {result.seconds:.1f}s; verifying")
            # names take a moment to reach every node's DNS after the tasks run: allow for it
            verified = verify_stack(session, name, _probe_image(inv, probe_image), wait=30, report=report)
    changes = [_change_json(c) for c in result.changes]
    if as_json:
        out: dict[str, Any] = {"changes": changes}
        if not plan_only:
            out["services"] = [
                {"name": p.service, "running": p.running, "desired": p.desired, "state": p.state}
                for p in result.progress.values()
            ]
            out["converged"] = result.waited and all(p.state == "converged" for p in result.progress.values())
            out["seconds"] = round(result.seconds, 2)
            if result.rollout:
                out["rollout"] = [r.json() for r in result.rollout]
            if verified is not None:
                out["verify"] = verified.json()
        emit_json(out)
        if verified is not None and not verified.ok:
            raise ClusterError(f"stack {name} converged but verify failed")
        return
    if plan_only:
        for c in result.changes:
            click.echo(c.describe())
        if not result.changes:
            click.echo(f"no changes: stack {name} matches its files")
        return
    if not result.changes:
        say(f"no changes: stack {name} matches its files")
    if verified is not None:
        _render_verify(verified)
        if not verified.ok:
            raise ClusterError(f"stack {name} converged but verify failed: {_failed_summary(verified)}")
    elif result.waited:
        say(f"stack {name}: {len(result.progress)} services converged in {result.seconds:.1f}s")


def _probe_image(inv: Any, explicit: str | None) -> str:
    from swarmctl.verify import DEFAULT_PROBE_IMAGE

    return explicit or os.environ.get("PROBE_IMAGE") or inv.vars.get("PROBE_IMAGE") or DEFAULT_PROBE_IMAGE


def _failed_summary(result: Any) -> str:
    failed = [c for c in result.checks if not c.ok]
    first = failed[0]
    where = f" on {first.node}" if first.node else ""
    more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
    return f"{first.name}{where}: expected {first.expected}, got {first.got}{more}"


def _render_verify(result: Any) -> None:
    """Failures one per row; passing DNS checks folded into one row per node and network."""
    rows = []
    folded: dict[tuple[str, str], int] = {}
    for c in result.checks:
        if c.ok and not c.skipped and c.name.startswith("dns "):
            key = (c.name.rsplit(" on ", 1)[-1], c.node)
            folded[key] = folded.get(key, 0) + 1
            continue
        mark = "skip" if c.skipped else ("ok" if c.ok else "FAIL")
        rows.append((mark, c.name, c.node or "-", c.expected, c.got))
    for (network, node), count in sorted(folded.items()):
        rows.append(("ok", f"dns: {count} names on {network}", node, "as the API reports", "same"))
    rows.sort(key=lambda r: (r[0] != "FAIL", r[1].startswith("dns") is False, r[1], r[2]))
    click.echo(table(rows, ("RESULT", "CHECK", "NODE", "EXPECTED", "GOT")))
    for c in result.checks:
        if c.detail and (not c.ok or c.skipped or "standalone" in c.detail):
            click.echo(f"  {c.name}{' on ' + c.node if c.node else ''}: {c.detail}")
    failed = sum(1 for c in result.checks if not c.ok)
    say(
        f"verify {result.stack}: {len(result.checks)} checks, {failed} failed "
        f"({result.seconds:.1f}s, {result.rounds} round{'s' if result.rounds > 1 else ''})"
    )


@cli.command()
@click.argument("name")
@click.option("--probe-image", metavar="IMAGE", help="Image with python3 for the probes (default: PROBE_IMAGE var).")
@click.option(
    "--wait", "wait", type=click.FloatRange(min=0), default=0, show_default=True,
    help="Check again for up to SECONDS until every check passes.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print {ok, checks} as JSON.")
@common_options
@click.pass_obj
def verify(obj: Obj, name: str, probe_image: str | None, wait: float, as_json: bool) -> None:
    """Check stack NAME from inside its overlay networks on every node: DNS, VIPs, ZooKeeper, Kafka.

    Example: swarmctl verify kafka
    """
    from swarmctl.engine import Session
    from swarmctl.stack.loader import check_stack_name
    from swarmctl.verify import verify_stack

    check_stack_name(name)
    inv = _load_inventory(obj)
    with Session(inv) as session:
        result = verify_stack(session, name, _probe_image(inv, probe_image), wait=wait, report=say)
    if as_json:
        emit_json(result.json())
    else:
        _render_verify(result)
    if not result.ok:
        raise ClusterError(f"verify {name} failed: {_failed_summary(result)}")


@cli.command("rm")
@click.argument("name")
@click.option("--timeout", type=click.FloatRange(min=1), default=120, show_default=True, help="Seconds to wait.")
@common_options
@click.pass_obj
def rm(obj: Obj, name: str, timeout: float) -> None:
    """Remove stack NAME (services, networks, secrets, configs) and wait until its networks are gone.

    Example: swarmctl rm web
    """
    from swarmctl.engine import Session
    from swarmctl.stack.deploy import remove_stack
    from swarmctl.stack.loader import check_stack_name

    check_stack_name(name)
    inv = _load_inventory(obj)
    with Session(inv) as session:
        removed = remove_stack(session.manager(), name, report=say, timeout=timeout)
    say(f"stack {name} removed ({len(removed)} objects)")


# -- update --------------------------------------------------------------------------------------


def _pairs(values: tuple[str, ...], sep: str, what: str) -> list[tuple[str, str]]:
    from swarmctl.errors import InputError

    out = []
    for v in values:
        left, found, right = v.partition(sep)
        if not found or not left or not right:
            raise InputError(f"bad {what} {v!r}: expected {what.upper().replace(' ', '')}")
        out.append((left, right))
    return out


@cli.command()
@click.argument("name")
@click.argument("services", nargs=-1, metavar="[SERVICE]...")
@click.option("--image", "images", multiple=True, metavar="SERVICE=IMAGE", help="New image for a service (repeat).")
@click.option("--env", "envs", multiple=True, metavar="SERVICE:KEY=VALUE", help="Set a variable (repeat).")
@click.option("--force", is_flag=True, help="Restart the SERVICEs (all of the stack's if none) in place.")
@click.option("--plan", "plan_only", is_flag=True, help="Show the order and the changes; change nothing.")
@click.option("--timeout", type=click.FloatRange(min=1), default=300, show_default=True, help="Seconds per service.")
@click.option("--probe-image", metavar="IMAGE", help="Image with python3 for the application gates.")
@click.option("--json", "as_json", is_flag=True, help="Print {services: [{name, from, to, result, seconds}]}.")
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
    as_json: bool,
) -> None:
    """Roll changes into stack NAME's services one at a time, behind health and application gates.

    SERVICE is the name in the stack file (zookeeper-1). Without files: --image and --env change the
    running services; --force restarts them. On a failure the failing service is rolled back and
    the rest is left as it was.

    Example: swarmctl update kafka --image zookeeper-1=quay.io/debezium/zookeeper:3.1.1
    """
    from swarmctl.engine import Session
    from swarmctl.rollout import AppGates, RolloutFailed, plan_order, plan_update, roll_out
    from swarmctl.stack.convert import NAMESPACE_LABEL
    from swarmctl.stack.loader import check_stack_name

    check_stack_name(name)
    image_map = dict(_pairs(images, "=", "service=image"))
    env_map: dict[str, dict[str, str]] = {}
    for service, assignment in _pairs(envs, ":", "service:key=value"):
        key, _, value = assignment.partition("=")
        if not key or "=" not in assignment:
            from swarmctl.errors import InputError

            raise InputError(f"bad --env {service}:{assignment}: expected SERVICE:KEY=VALUE")
        env_map.setdefault(service, {})[key] = value
    inv = _load_inventory(obj)
    view = ProgressView()
    with Session(inv) as session:
        engine = session.manager()
        listed = engine.call("list services", engine.api.services, filters={"label": [f"{NAMESPACE_LABEL}={name}"]})
        current = {svc["Spec"]["Name"]: svc for svc in listed}
        if not current:
            raise ClusterError(f"no stack {name!r} on this swarm")
        steps = plan_update(name, current, list(services), image_map, env_map, force)
        gates = AppGates(engine, name, _probe_image(inv, probe_image))
        if plan_only:
            gates.refresh()
            last = gates.goes_last() if any(s.check for s in steps) else set()
            ordered = plan_order(steps, last)
            if as_json:
                emit_json({"services": [{"name": s.short, "from": s.image_from(), "to": s.image_to(),
                                         "fields": list(s.fields)} for s in ordered]})  # fmt: skip
            else:
                for i, s in enumerate(ordered, 1):
                    click.echo(f"{i}. {s.short}: {', '.join(s.fields)}" + (" (goes last)" if s.short in last else ""))
            return
        try:
            results = roll_out(
                engine,
                steps,
                gates,
                timeout,
                report=(lambda m: None) if as_json else say,
                on_progress=(lambda p: None) if as_json else view.update,
            )
        except RolloutFailed as e:
            if as_json:
                emit_json({"services": [r.json() for r in e.results], "error": str(e)})
            raise
    if as_json:
        emit_json({"services": [r.json() for r in results]})
    else:
        rows = [(r.name, r.from_, r.to, r.result, f"{r.seconds:.1f}s") for r in results]
        click.echo(table(rows, ("SERVICE", "FROM", "TO", "RESULT", "TIME")))


# -- secrets -------------------------------------------------------------------------------------


def _key_loader() -> Any:
    """Loads the secrets key once, the first time an encrypted secret needs it."""
    from swarmctl.secrets import load_key

    cache: list[Any] = []

    def get() -> Any:
        if not cache:
            cache.append(load_key(os.environ))
        return cache[0]

    return get


@cli.group()
def secrets() -> None:
    """Secrets encrypted at rest (AES-256-GCM) in secrets/, decrypted only in memory."""


_secrets_dir = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("secrets"),
    show_default=True,
    help="Where the encrypted secret files live.",
)


@secrets.command("init")
def secrets_init() -> None:
    """Create a new random key file (mode 0600); never overwrites one.

    Example: swarmctl secrets init
    """
    from swarmctl.secrets import create_key_file

    path, key = create_key_file(os.environ)
    say(f"created {path} (key fingerprint {key.fingerprint})")
    say("back it up somewhere safe: without it the secrets cannot be decrypted")


@secrets.command("set")
@click.argument("name")
@click.option("--from-file", "from_file", type=click.Path(dir_okay=False, path_type=Path), help="Read the value here.")
@_secrets_dir
def secrets_set(name: str, from_file: Path | None, directory: Path) -> None:
    """Encrypt a value into DIR/NAME.enc, from --from-file or stdin (never from the command line).

    Example: swarmctl secrets set db_password < password.txt
    """
    from swarmctl.errors import InputError
    from swarmctl.secrets import SUFFIX, check_name, load_key, write_secret

    check_name(name)
    key = load_key(os.environ)
    if from_file is not None:
        try:
            value = from_file.read_bytes()
        except OSError as e:
            raise InputError(f"cannot read: {e.strerror or e}", from_file) from None
    elif sys.stdin.isatty():
        value = click.prompt(f"value of {name}", hide_input=True, confirmation_prompt=True, err=True).encode()
    else:
        value = sys.stdin.buffer.read()
    if not value:
        raise InputError("the value is empty")
    path = directory / f"{name}{SUFFIX}"
    write_secret(path, value, key)
    say(f"{path}: {len(value)} bytes, key {key.fingerprint}")


@secrets.command("list")
@_secrets_dir
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def secrets_list(directory: Path, as_json: bool) -> None:
    """Names and sizes of the secrets, and the key's fingerprint (never a value).

    Example: swarmctl secrets list
    """
    from swarmctl.secrets import list_secrets, load_key

    key = load_key(os.environ)
    listed = list_secrets(directory, key)
    if as_json:
        emit_json(
            {
                "key": key.fingerprint,
                "secrets": [{"name": x.name, "bytes": x.size, "file": str(x.path)} for x in listed],
            }
        )
        return
    rows = [(x.name, str(x.size), str(x.path)) for x in listed]
    click.echo(table(rows, ("NAME", "BYTES", "FILE")) if rows else f"no secrets in {directory}")
    click.echo(f"key: {key.fingerprint} ({key.source})")


@secrets.command("show")
@click.argument("name")
@click.option("--force", is_flag=True, help="Write the value even when stdout is not a terminal.")
@_secrets_dir
def secrets_show(name: str, force: bool, directory: Path) -> None:
    """Print a secret's value - only to a terminal, unless --force.

    Example: swarmctl secrets show db_password
    """
    from swarmctl.errors import InputError
    from swarmctl.secrets import SUFFIX, check_name, load_key, read_secret

    check_name(name)
    if not sys.stdout.isatty() and not force:
        raise InputError("refusing to write a secret to a pipe or a file; add --force if that is what you want")
    value = read_secret(directory / f"{name}{SUFFIX}", load_key(os.environ))
    sys.stdout.buffer.write(value)
    if sys.stdout.isatty() and not value.endswith(b"\n"):
        sys.stdout.buffer.write(b"\n")
    sys.stdout.flush()


@secrets.command("rekey")
@_secrets_dir
def secrets_rekey(directory: Path) -> None:
    """Re-encrypt every secret under a new key, all or nothing; the key file gets the new key.

    Example: swarmctl secrets rekey
    """
    from swarmctl.secrets import rekey

    old, new, count = rekey(directory, os.environ)
    say(f"re-encrypted {count} secrets in {directory}: key {old.fingerprint} -> {new.fingerprint} ({new.source})")


# -- lab -----------------------------------------------------------------------------------------


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
@_dir_option
def lab_up(hosts: int, managers: int, directory: Path) -> None:
    """Create the lab (removing any earlier one) and write DIR/hosts.yml.

    Example: swarmctl lab up --hosts 3
    """
    from swarmctl.lab import hosts as labhosts
    from swarmctl.lab import images

    def load_images(spec: labhosts.LabSpec) -> dict[str, str]:
        images.load_into_hosts(spec, images.ensure_bundle(report=say), report=say)
        return images.lab_vars()

    spec = labhosts.plan_lab(directory, hosts, managers)
    inventory = labhosts.bring_up(spec, report=say, prepare=load_images)
    say(f"lab ready: {len(spec.hosts)} hosts ({', '.join(h.name for h in spec.hosts)})")
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
    images.load_into_hosts(spec, archive, report=say)
    for ref, image_id in images.bundle_ids(archive).items():
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


# -- entry point ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; map expected errors to one line and an exit status, bugs to a logged traceback."""
    try:
        rv = cli.main(args=argv, prog_name="swarmctl", standalone_mode=False)
        return int(rv) if isinstance(rv, int) else ExitStatus.OK
    except click.exceptions.NoArgsIsHelpError as e:
        click.echo(e.ctx.get_help() if e.ctx else str(e), err=True)
        return ExitStatus.USAGE
    except click.UsageError as e:
        hint = f" (see `{e.ctx.command_path} --help`)" if e.ctx else ""
        _error(f"{e.format_message()}{hint}")
        return ExitStatus.USAGE
    except click.exceptions.Exit as e:
        return e.exit_code
    except (click.Abort, KeyboardInterrupt):
        _error("interrupted")
        return ExitStatus.INTERRUPTED
    except SwarmctlError as e:
        _error(str(e))
        return e.exit_status
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else ExitStatus.FAILURE
    except Exception as e:  # a bug: keep the traceback out of the user's face, but keep it
        _error(f"internal error: {type(e).__name__}: {e}; {_save_traceback()}")
        return ExitStatus.INTERNAL


def _error(message: str) -> None:
    # one line, always: multi-line messages are joined so scripts can grep them
    text = " ".join(message.split("\n"))
    click.echo(click.style("error: ", fg="red", bold=True) + text, err=True)


def _save_traceback() -> str:
    try:
        DEBUG_LOG.parent.mkdir(parents=True, exist_ok=True)
        with open(DEBUG_LOG, "a", encoding="utf-8") as f:
            f.write(traceback.format_exc() + "\n")
        return f"the traceback is in {DEBUG_LOG}; please report it"
    except OSError:
        return "please report it with the command you ran"
