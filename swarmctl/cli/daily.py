"""Day to day on a running swarm: ps (and its picture), logs, exec."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from swarmctl.cli.app import Obj, cli, common_options, json_option, load_inventory
from swarmctl.cli.render import emit_json, say, table, warn


def _stdout_colors() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


@cli.command("ps")
@click.argument("stack", required=False, default="")
@click.argument("services", nargs=-1, metavar="[SERVICE...]")
@click.option("--node", "host", metavar="HOST", help="Only the tasks on this inventory host.")
@click.option("--all", "history", is_flag=True, help="Every task swarm keeps, not just each slot's current one.")
@click.option("--grid", is_flag=True, help="The placement picture: nodes as columns, their tasks in them.")
@click.option("--html", "html_file", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the placement picture as one self-contained HTML page.")  # fmt: skip
@click.option("--watch", type=click.FloatRange(min=1), metavar="S", help="Read again every S seconds until Ctrl-C.")
@json_option("ps")
@common_options
@click.pass_obj
def ps(
    obj: Obj,
    stack: str,
    services: tuple[str, ...],
    host: str | None,
    history: bool,
    grid: bool,
    html_file: Path | None,
    watch: float | None,
    as_json: bool,
) -> None:
    """Show where every task runs: one row per task, on which inventory host, since when.

    Each slot's current task by default (the one swarm wants running; a failing one with its last
    error); --all for the history. SERVICE is a name in the stack (zookeeper-1) or a full one.

    \b
    Examples:
      swarmctl ps kafka
      swarmctl ps kafka zookeeper-1 --all
      swarmctl ps --grid                    nodes as columns, tasks coloured by state
      swarmctl ps --html swarm.html --watch 5
    """
    from swarmctl.cli import picture
    from swarmctl.files import write_atomic
    from swarmctl.ops.ps import columns, read_placement
    from swarmctl.transport.engine import Session

    if as_json and watch:
        from swarmctl.errors import InputError

        raise InputError("--json and --watch: --json prints one document; leave out --watch")
    inv = load_inventory(obj)
    with Session(inv) as session:
        first = True
        while True:
            try:
                placement = read_placement(session, stack, services, host or "", history)
            except Exception as e:
                if first or not watch or not _transient(e):
                    raise
                warn(f"{e} (trying again in {watch:g}s)")
                time.sleep(watch)
                continue
            first = False
            if html_file is not None:
                write_atomic(html_file, picture.page(placement, columns(placement), refresh=watch or 0))
            if as_json:
                emit_json(placement.json())
                return
            if watch and sys.stdout.isatty():
                click.echo("\x1b[H\x1b[2J", nl=False)
            for h, why in sorted(placement.skipped.items()):
                warn(f"{h}: skipped ({why}); the swarm as {placement.manager} sees it")
            if grid:
                width = shutil.get_terminal_size((120, 24)).columns
                click.echo(picture.grid(placement, columns(placement), width, _stdout_colors()),
                           color=_stdout_colors())  # fmt: skip
            elif html_file is None or watch is None:
                _ps_table(placement)
            if html_file is not None:
                say(f"wrote {html_file}" + (f" (every {watch:g}s; Ctrl-C to stop)" if watch else ""))
            if not watch:
                return
            time.sleep(watch)


def _transient(e: Exception) -> bool:
    from swarmctl.errors import HostError, InputError, SwarmctlError

    return isinstance(e, (HostError, SwarmctlError)) and not isinstance(e, InputError)


def _ps_table(placement: Any) -> None:
    from swarmctl.cli.picture import ago

    if not placement.tasks:
        click.echo(f"no tasks in stack {placement.stack}" if placement.stack else "no tasks")
        return
    rows = []
    for t in placement.tasks:
        name = t.name if placement.stack else (t.service + (f".{t.slot}" if t.slot else ""))
        state = t.state if t.desired == t.state or t.desired == "running" else f"{t.state} (-> {t.desired})"
        image = t.image + (f"@{t.short_digest}" if t.digest else "")
        rows.append((name, placement.host_of(t) or "-", state, ago(t.since), t.spec, image, t.error or "-"))
    click.echo(table(rows, ("TASK", "HOST", "STATE", "SINCE", "SPEC", "IMAGE", "ERROR")))


# -- logs ----------------------------------------------------------------------------------------

_PALETTE = ("cyan", "magenta", "blue", "yellow", "green", "bright_cyan", "bright_magenta", "bright_blue")


@cli.command("logs")
@click.argument("stack")
@click.argument("services", nargs=-1, metavar="[SERVICE...]")
@click.option("-f", "--follow", is_flag=True, help="Keep printing; a lost node is named, and read again when back.")
@click.option("--since", metavar="DURATION|TIME", help="Only lines since then: 10m, 1h30m, 2026-12-05T10:00:00Z.")
@click.option("--tail", default="all", show_default=True, metavar="N", help="The last N lines of each task (or all).")
@click.option("-t", "--timestamps", is_flag=True, help="Show each line's time.")
@click.option("--json", "as_json", is_flag=True,
              help='One JSON object per line: {"time","service","slot","host","stream","line"}; the last '
              "line is the result (schema: swarmctl/schemas/output.json, $defs/logs).")  # fmt: skip
@common_options
@click.pass_obj
def logs(
    obj: Obj,
    stack: str,
    services: tuple[str, ...],
    follow: bool,
    since: str | None,
    tail: str,
    timestamps: bool,
    as_json: bool,
) -> None:
    """Print the logs of a stack's tasks, read on each task's node over SSH and merged by time.

    Each line is prefixed service.slot@host. A node that cannot be read is named; with -f the
    others go on, and the lost node is read again when it answers. Ctrl-C stops.

    \b
    Examples:
      swarmctl logs kafka zookeeper-1 --tail 5
      swarmctl logs kafka -f --since 10m
    """
    from swarmctl.errors import HostsFailed
    from swarmctl.ops import logs as oplogs
    from swarmctl.ops.ps import read_placement
    from swarmctl.transport.engine import Session

    tail = oplogs.check_tail(tail)
    since = oplogs.check_since(since) if since else ""
    inv = load_inventory(obj)
    color = _stdout_colors() and not as_json
    colours: dict[str, str] = {}
    width = [0]

    def emit(line: Any) -> None:
        if as_json:
            sys.stdout.write(json.dumps(line.json(), separators=(",", ":")) + "\n")
        else:
            label = line.source.label
            width[0] = max(width[0], len(label))
            prefix = label.ljust(width[0])
            if color:
                fg = colours.setdefault(label, _PALETTE[len(colours) % len(_PALETTE)])
                prefix = click.style(prefix, fg=fg)
            stamp = f"{line.time} " if timestamps and line.time else ""
            sys.stdout.write(f"{stamp}{prefix} | {line.text}\n")
        sys.stdout.flush()

    with Session(inv) as session:
        placement = read_placement(session, stack, services, history=True)
        chosen = oplogs.sources(placement)
        unread = oplogs.outside(placement)
        if unread:
            warn(f"not read: {', '.join(unread)} (on nodes the inventory does not name; add them to read their logs)")
        width[0] = max((len(s.label) for s in chosen), default=0)
        if not follow:
            lines, failed = oplogs.read(session, chosen, tail, since)
            for line in lines:
                emit(line)
            if failed:
                raise HostsFailed("logs", failed)
            return
        if not chosen:
            say(f"no task of {stack} has a container yet; waiting for one (Ctrl-C to stop)")
        oplogs.follow(
            session,
            placement,
            lambda: read_placement(session, stack, services, history=True),
            emit,
            lambda message: say(message),
            tail,
            since,
        )


# -- exec ----------------------------------------------------------------------------------------


@cli.command("exec")
@click.argument("stack")
@click.argument("service")
@click.argument("cmd", nargs=-1, required=True, metavar="-- CMD...")
@click.option("--slot", type=click.IntRange(min=1), metavar="N", help="The task of slot N.")
@click.option("--node", "host", metavar="HOST", help="The task on this inventory host (global services).")
@click.option("-i", "--interactive", is_flag=True, help="Send stdin to the command.")
@click.option("-t", "--tty", is_flag=True, help="A pseudo-terminal (this terminal in raw mode, its size passed on).")
@click.option("-u", "--user", default="", metavar="USER", help="Run as USER (name or uid[:gid]).")
@click.option("-w", "--workdir", default="", metavar="DIR", help="Run in DIR inside the container.")
@click.option("-e", "--env", multiple=True, metavar="KEY=VALUE", help="Set a variable (repeatable).")
@common_options(short_inventory=False)
@click.pass_obj
def exec_(
    obj: Obj,
    stack: str,
    service: str,
    cmd: tuple[str, ...],
    slot: int | None,
    host: str | None,
    interactive: bool,
    tty: bool,
    user: str,
    workdir: str,
    env: tuple[str, ...],
) -> int:
    """Run a command inside a service's running task, on whichever node runs it.

    Finds the task (the only one, or the one --slot/--node names), goes to its node over SSH and
    runs CMD in its container. The exit status is CMD's.

    \b
    Examples:
      swarmctl exec kafka zookeeper-1 -- hostname
      swarmctl exec kafka kafka-2 -it -- bash
    """
    from swarmctl.errors import InputError
    from swarmctl.ops import exec as opexec
    from swarmctl.transport.engine import Session

    if slot is not None and host:
        raise InputError("--slot and --node: name the task one way")
    for e in env:
        if "=" not in e or e.startswith("="):
            raise InputError(f"-e {e!r}: give KEY=VALUE")
    if tty and not os.isatty(0):
        raise InputError("-t needs a terminal on stdin (leave out -t, or run it from a terminal)")
    inv = load_inventory(obj)
    if host and host not in {h.name for h in inv.hosts}:
        from swarmctl.ops.ps import node_of_host

        node_of_host(host, inv, {})  # raises: not an inventory host, with close matches
    with Session(inv) as session:
        target = opexec.find(session, stack, service, slot, host or "")
        argv = opexec.command(target, cmd, interactive, tty, user, workdir, env)
        if not tty:
            return opexec.run(session, target, argv, 0 if interactive else None, 1, 2)
        with _raw_terminal() as resized:
            size = os.get_terminal_size(0)
            pty = (os.environ.get("TERM", "xterm"), size.columns, size.lines)
            return opexec.run(session, target, argv, 0 if interactive else None, 1, 2, pty, resized)


@contextlib.contextmanager
def _raw_terminal() -> Iterator[Any]:
    """This terminal in raw mode (every key goes to the remote one, Ctrl-C too), restored after;
    yields a poll of its size: the new (columns, rows) after a resize, else None."""
    import termios
    import tty as ttymod

    changed = [False]

    def on_winch(_signum: int, _frame: Any) -> None:
        changed[0] = True

    def resized() -> tuple[int, int] | None:
        if not changed[0]:
            return None
        changed[0] = False
        size = os.get_terminal_size(0)
        return size.columns, size.lines

    saved = termios.tcgetattr(0)
    previous = signal.signal(signal.SIGWINCH, on_winch)
    try:
        ttymod.setraw(0)
        yield resized
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)
        signal.signal(signal.SIGWINCH, previous)


# -- diff ----------------------------------------------------------------------------------------


@cli.command("diff")
@click.argument("stacks", nargs=-1, metavar="[STACK...]")
@click.option("-f", "--file", "files", multiple=True, metavar="FILE",
              help="The stack file of the one STACK named (repeat: later files override).")  # fmt: skip
@click.option("--exit-code", is_flag=True,
              help="Exit 3 when the swarm differs from the repository; 0 when not, 1 when it could not be "
              "read, 2 on bad input.")  # fmt: skip
@json_option("diff")
@common_options
@click.pass_obj
def diff(obj: Obj, stacks: tuple[str, ...], files: tuple[str, ...], exit_code: bool, as_json: bool) -> int:
    """Show what differs between the repository and the swarm, changing nothing.

    The repository: the inventory (engine keys, membership, roles, labels, availability) and the
    stacks' files (secrets by version). Each difference is named with the command that would undo
    it. Without STACK: every stack on the swarm that has files here (./stacks/NAME, or shipped).

    \b
    Examples:
      swarmctl diff
      swarmctl diff kafka --exit-code      in CI: 3 when someone changed the swarm by hand
    """
    from swarmctl.compose.convert import convert_stack
    from swarmctl.compose.loader import find_stack_files, stack_names
    from swarmctl.errors import HostsFailed, InputError
    from swarmctl.facts.membership import find_manager
    from swarmctl.ops.diff import EXIT_DRIFT, read_drift
    from swarmctl.ops.generated import load_generated
    from swarmctl.secretstore import KeySource
    from swarmctl.transport.engine import Session

    if files and len(stacks) != 1:
        raise InputError("-f names the files of one stack: name exactly one STACK with it")
    inv = load_inventory(obj, quiet=True)
    cwd = Path.cwd()
    for name in stacks:
        find_stack_files(name, list(files), cwd)  # bad input before any connection

    with Session(inv) as session:

        def desired_of(name: str) -> Any:
            paths = find_stack_files(name, list(files), cwd)  # with the values the stack's deploys kept
            config, _ = load_generated(lambda: find_manager(session), name, paths, os.environ, inv.vars, keep=False)
            return convert_stack(config, KeySource(os.environ))

        drift = read_drift(session, list(stacks), desired_of, stack_names(cwd))
    if as_json:
        emit_json(drift.json())
    else:
        for w in drift.json()["warnings"]:
            warn(w)
        rows = [(c.describe(), by) for by, c in drift.changes()]
        rows += [(f"stack {s} runs on the swarm", "no files here: swarmctl rm " + s) for s in drift.extra]
        if rows:
            click.echo(table(rows, ("DIFFERS", "UNDONE BY")))
        else:
            checked = ", ".join(sorted(drift.stacks)) or "no stack"
            click.echo(f"no drift: the swarm matches {inv.path} and the files of {checked}")
    if drift.unread:
        raise HostsFailed("diff", dict(drift.unread))
    return EXIT_DRIFT if exit_code and drift.drifted else 0
