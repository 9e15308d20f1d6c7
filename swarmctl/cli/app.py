"""The command group, its shared options, and the entry point that turns errors into one line.

Command modules (``cli.swarm``, ``cli.stack``, ``cli.secrets``, ``cli.lab``) each parse their
arguments, call one operation and render its result (``cli.render``). Operations are imported
inside the commands, so that ``swarmctl --help`` does not load the Docker SDK and paramiko.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

import click

from swarmctl import __version__
from swarmctl.cli.render import error_line, json_document, print_json, warn
from swarmctl.errors import ExitStatus, SwarmctlError

DEBUG_LOG = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "swarmctl" / "debug.log"


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


def common_options(fn: Any = None, *, short_inventory: bool = True) -> Any:
    """-i and -v are accepted after the subcommand too: `swarmctl status -i hosts.yml`. A command
    whose own -i means something else (exec's interactive, as docker's) takes only --inventory."""

    def wrap(fn: Any) -> Any:
        names = ["-i", "--inventory"] if short_inventory else ["--inventory"]
        fn = click.option(*names, "inventory_option", metavar="FILE", expose_value=False,
                          callback=_set_inventory, help="Inventory (hosts.yml).")(fn)  # fmt: skip
        fn = click.option("-v", "--verbose", count=True, expose_value=False, callback=_add_verbosity,
                          help="More detail.")(fn)  # fmt: skip
        return fn

    return wrap(fn) if fn is not None else wrap


def json_option(schema: str) -> Any:
    """``--json``: one JSON document on stdout, on success and on failure (``schema``: its
    definition in swarmctl/schemas/output.json)."""
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        help=f"Print one JSON document on stdout, also on failure, and nothing else there "
        f"(schema: swarmctl/schemas/output.json, $defs/{schema}).",
    )


def plan_option(fn: Any) -> Any:
    return click.option("--plan", "plan_only", is_flag=True, help="Show what would change; change nothing.")(fn)


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def load_inventory(obj: Obj, explicit: str | None = None, quiet: bool = False) -> Any:
    """The inventory of this command (its warnings shown once: here, unless ``quiet`` because
    the operation reports them itself)."""
    from swarmctl.inventory import load_inventory as load

    path = Path(explicit) if explicit else obj.inventory_path()
    inv = load(path)
    if not quiet:
        for w in inv.warnings:
            warn(f"{path}: {w}")
    return inv


def probe_image(inv: Any, explicit: str | None) -> str:
    from swarmctl.checks.probe import DEFAULT_IMAGE

    return explicit or os.environ.get("PROBE_IMAGE") or inv.vars.get("PROBE_IMAGE") or DEFAULT_IMAGE


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM stops a command the way Ctrl-C does: leaving a known state


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; map expected errors to one line and an exit status, bugs to a logged traceback.
    With --json, exactly one JSON document on stdout however the command ended."""
    signal.signal(signal.SIGTERM, _terminate)
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in args[: args.index("--")] if "--" in args else "--json" in args
    status, error, failures = _run(args)
    if as_json:
        print_json(json_document(status, error, failures), one_line=_command(args) in JSON_LINES)
    return status


def run() -> None:
    """The ``swarmctl`` program: main, then exit without the interpreter's last collection. That
    took 1.8-2.0 s of wall time after a bootstrap of 24 hosts had printed its result (their engines
    busy settling, bench.bootstrap); the work is done by then (connections closed, files written
    and synced), so what it made is not collected again.

    paramiko imports invoke, for `Match exec` in an OpenSSH client config, which swarmctl never
    reads (hosts.yml carries every SSH setting); without it, paramiko says `Match exec` needs it.
    Its import (asyncio and unittest.mock with it) was 50 ms of every command's start: a sixth of
    a no-op bootstrap's wall time. It is kept out of this process unless something imported it."""
    sys.modules.setdefault("invoke", None)  # type: ignore[arg-type]
    status = main()
    gc.freeze()
    raise SystemExit(status)


JSON_LINES = {"logs"}  # commands whose --json is one object per line; the result is the last line


def _command(args: list[str]) -> str:
    """The subcommand named in ``args`` (the first word that is not an option or -i's value)."""
    skip = False
    for a in args:
        if skip:
            skip = False
        elif a in ("-i", "--inventory"):
            skip = True
        elif not a.startswith("-"):
            return a
    return ""


def _run(args: list[str]) -> tuple[int, str, Any]:
    """The command's exit status, and its error in one line ("" when none) with the hosts it names."""
    try:
        rv = cli.main(args=args, prog_name="swarmctl", standalone_mode=False)
        return (int(rv) if isinstance(rv, int) else ExitStatus.OK), "", None
    except click.exceptions.NoArgsIsHelpError as e:
        click.echo(e.ctx.get_help() if e.ctx else str(e), err=True)
        return ExitStatus.USAGE, "no command given", None
    except click.UsageError as e:
        hint = f" (see `{e.ctx.command_path} --help`)" if e.ctx else ""
        message = f"{e.format_message()}{hint}"
        error_line(message)
        return ExitStatus.USAGE, message, None
    except click.exceptions.Exit as e:
        return e.exit_code, "", None
    except (click.Abort, KeyboardInterrupt):
        error_line("interrupted")
        return ExitStatus.INTERRUPTED, "interrupted", None
    except SwarmctlError as e:
        error_line(str(e))
        return e.exit_status, " ".join(str(e).split()), getattr(e, "failures", None)
    except SystemExit as e:
        return (e.code if isinstance(e.code, int) else ExitStatus.FAILURE), "", None
    except Exception as e:  # a bug: keep the traceback out of the user's face, but keep it
        message = f"internal error: {type(e).__name__}: {e}; {_save_traceback()}"
        error_line(message)
        return ExitStatus.INTERNAL, message, None


def _save_traceback() -> str:
    try:
        DEBUG_LOG.parent.mkdir(parents=True, exist_ok=True)
        with open(DEBUG_LOG, "a", encoding="utf-8") as f:
            f.write(traceback.format_exc() + "\n")
        return f"the traceback is in {DEBUG_LOG}; please report it"
    except OSError:
        return "please report it with the command you ran"
