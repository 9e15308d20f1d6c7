"""Rendering: one way to show a plan, a report, a table, progress and errors, for every command.

Progress and notes go to stderr, results to stdout; with ``--json`` stdout carries only JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import click


def say(message: str) -> None:
    """Progress and notes go to stderr, so stdout stays clean for results and --json."""
    click.echo(message, err=True)


def colors() -> bool:
    """Colours on stderr: a terminal, and neither NO_COLOR (https://no-color.org) nor TERM=dumb."""
    return sys.stderr.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def _style(text: str, color: str) -> str:
    return click.style(text, fg=color, bold=True) if colors() else text


def warn(message: str) -> None:
    click.echo(_style("warning: ", "yellow") + message, err=True, color=colors())


def error_line(message: str) -> None:
    # one line, always: multi-line messages are joined so scripts can grep them
    text = " ".join(message.split("\n"))
    click.echo(_style("error: ", "red") + text, err=True, color=colors())


class JsonOut:
    """The one JSON document of a ``--json`` command: a command sets its result here (emit_json),
    and the entry point prints it once it knows how the command ended - on success and on failure
    alike, with the envelope every document has (swarmctl/schemas/output.json)."""

    def __init__(self) -> None:
        self.document: dict[str, Any] | None = None


JSON = JsonOut()


def emit_json(data: Any) -> None:
    """The command's result for ``--json`` (printed by the entry point, with the envelope)."""
    JSON.document = dict(data)


def json_document(status: int, error: str = "", failures: Any = None) -> dict[str, Any]:
    """The envelope around the command's result: ok, exit_status, error, changes, warnings,
    failures (``failures``: host -> why, from an error that names hosts), then the command's keys."""
    doc = dict(JSON.document or {})
    out: dict[str, Any] = {
        "ok": status == 0,
        "exit_status": int(status),
        "error": error or str(doc.pop("error", "") or ""),
        "changes": doc.pop("changes", []),
        "warnings": doc.pop("warnings", []),
        "failures": doc.pop("failures", []),
    }
    if failures and not out["failures"]:
        out["failures"] = [{"host": h, "error": str(getattr(e, "message", e))} for h, e in sorted(failures.items())]
    doc.pop("ok", None)  # verify's own "ok" is the command's: all checks passed
    return {**out, **doc}


def print_json(document: dict[str, Any], one_line: bool = False) -> None:
    """The document; ``one_line`` for commands whose --json is JSON lines (``logs``): the result is
    then their last line."""
    if one_line:
        click.echo(json.dumps(document, separators=(",", ":")))
    else:
        click.echo(json.dumps(document, indent=2, sort_keys=False))


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    cells = [list(header)] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def notifier(as_json: bool) -> Any:
    """The Notify of a command: progress lines on stderr, none with --json."""
    return (lambda _: None) if as_json else say


def render_plan(plan: Any, nothing: str) -> None:
    """A plan (``swarmctl.plan.Plan``) for ``--plan``: one change per line on stdout, then what is
    blocked and the warnings on stderr; ``nothing`` when it changes nothing."""
    for i, c in enumerate(plan.changes, 1):
        click.echo(f"{i}. {c.describe()}")
    if not plan.changes:
        click.echo(nothing)
    for host, why in sorted(plan.blocked.items()):
        warn(f"{host}: left alone: {why}")
    for w in plan.warnings:
        warn(w)


def show_plan(plan: Any, as_json: bool, nothing: str, facts: Any = None) -> None:
    """``--plan``: the plan as JSON (``--json``; with the command's own ``facts``, the keys its
    help promises) or rendered (``render_plan``)."""
    if as_json:
        from swarmctl.plan import jsonable

        emit_json({**plan.json(), **{k: jsonable(v) for k, v in dict(facts or {}).items()}})
    else:
        render_plan(plan, nothing)


def render_warnings(warnings: Iterable[str]) -> None:
    for w in warnings:
        warn(w)


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
        return max(40, shutil.get_terminal_size((120, 20)).columns - 1)


def progress_callback(as_json: bool) -> Any:
    return (lambda _: None) if as_json else ProgressView().update


def failed_summary(checks: Sequence[Any]) -> str:
    failed = [c for c in checks if not c.ok]
    first = failed[0]
    where = f" on {first.node}" if first.node else ""
    more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
    return f"{first.name}{where}: expected {first.expected}, got {first.got}{more}"


def render_checks(stack: str, checks: Sequence[Any], seconds: float, rounds: int) -> None:
    """verify's checks: failures one per row; passing DNS checks folded into one row per node and network."""
    rows = []
    folded: dict[tuple[str, str], int] = {}
    for c in checks:
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
    for c in checks:
        if c.detail and (not c.ok or c.skipped or "standalone" in c.detail):
            click.echo(f"  {c.name}{' on ' + c.node if c.node else ''}: {c.detail}")
    failed = sum(1 for c in checks if not c.ok)
    say(
        f"verify {stack}: {len(checks)} checks, {failed} failed "
        f"({seconds:.1f}s, {rounds} round{'s' if rounds > 1 else ''})"
    )
