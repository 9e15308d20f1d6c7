"""The placement picture: nodes as columns, their tasks as boxes coloured by state - in the
terminal (``ps --grid``) and as one self-contained HTML page (``ps --html FILE``).

The page has no external script, font or image, so it works opened from disk, offline, and on a
phone (the columns wrap). Its elements carry data attributes (``data-host``, ``data-task``,
``data-state``) so that a test - or a script - reads the picture from the DOM.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence

import click

from swarmctl.facts.tasks import TaskView, parse_time
from swarmctl.ops.ps import Column, Placement

# state -> colour (terminal, and the page's CSS class)
GOOD, STARTING, BAD, DONE = "green", "yellow", "red", "bright_black"
_COLOUR = {"running": GOOD, "complete": DONE, "shutdown": DONE, "remove": DONE, "orphaned": BAD,
           "failed": BAD, "rejected": BAD}  # fmt: skip


def colour(task: TaskView) -> str:
    if task.state == "running" and task.desired != "running":
        return DONE  # on its way out
    return _COLOUR.get(task.state, STARTING)


def ago(since: str, now_ns: int | None = None) -> str:
    """``2026-12-05T20:01:02.5Z`` -> ``3m ago`` (this machine's clock against the engine's)."""
    then = parse_time(since)
    if then is None:
        return "-"
    seconds = max(0, ((now_ns if now_ns is not None else time.time_ns()) - then) // 1_000_000_000)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def node_line(col: Column) -> str:
    if col.node is None:
        return "swarm has no node for them yet"
    role = "leader" if col.node.leader else col.node.role
    return " ".join([role, *col.marks]) if col.marks else role


# -- terminal ------------------------------------------------------------------------------------


def grid(placement: Placement, cols: Sequence[Column], width: int, color: bool) -> str:
    """Columns side by side, as many as fit in ``width``, then the next row of columns."""
    cell = 24
    per_row = max(1, (width + 2) // (cell + 2))
    blocks = []
    for start in range(0, len(cols), per_row):
        chunk = cols[start : start + per_row]
        lines: list[list[tuple[str, str]]] = []  # per column: (text, colour)
        for col in chunk:
            bad = col.node is None or bool(col.marks)
            out = [(_fit(col.host or "(no node)", cell), BAD if bad and col.node is not None else ""),
                   (_fit(node_line(col), cell), BAD if bad and col.node is not None else DONE),
                   ("-" * cell, DONE)]  # fmt: skip
            group = ""
            for t in col.tasks:
                if t.stack != group and not placement.stack:
                    out.append((_fit(f"[{t.stack or 'no stack'}]", cell), DONE))
                    group = t.stack
                text = f"{t.name} {t.state}" if t.state != "running" else t.name
                out.append((_fit(text, cell), colour(t)))
            if not col.tasks:
                out.append((_fit("(no tasks)", cell), DONE))
            lines.append(out)
        height = max(len(c) for c in lines)
        for row in range(height):
            parts = []
            for c in lines:
                text, fg = c[row] if row < len(c) else ("", "")
                padded = text.ljust(cell)
                parts.append(click.style(padded, fg=fg) if color and fg else padded)
            blocks.append("  ".join(parts).rstrip())
        blocks.append("")
    return "\n".join(blocks).rstrip("\n")


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


# -- the page ------------------------------------------------------------------------------------

_CSS = """
:root { color-scheme: light dark; --ok: #1a7f37; --wait: #9a6700; --bad: #cf222e; --done: #6e7781; }
body { font: 14px/1.4 system-ui, sans-serif; margin: 1rem; }
h1 { font-size: 1.1rem; margin: 0 0 .25rem; }
p.meta { margin: 0 0 1rem; color: var(--done); }
main { display: flex; flex-wrap: wrap; gap: .75rem; align-items: flex-start; }
section.node { flex: 1 1 14rem; max-width: 22rem; border: 2px solid var(--done); border-radius: .5rem;
  padding: .5rem; }
section.node.down { border-color: var(--bad); border-style: dashed; opacity: .8; }
section.node header { font-weight: 600; }
section.node header small { display: block; font-weight: 400; color: var(--done); }
section.node.down header small, section.node.paused header small,
section.node.drain header small { color: var(--bad); }
h2 { font-size: .8rem; margin: .5rem 0 .25rem; color: var(--done); text-transform: uppercase; }
div.task { border-left: .4rem solid var(--wait); padding: .2rem .4rem; margin: .25rem 0;
  background: rgba(127,127,127,.08); border-radius: .25rem; overflow-wrap: anywhere; }
div.task small { display: block; color: var(--done); }
div.task.green { border-color: var(--ok); } div.task.red { border-color: var(--bad); }
div.task.bright_black { border-color: var(--done); opacity: .7; }
p.empty { color: var(--done); font-style: italic; }
"""


def page(placement: Placement, cols: Sequence[Column], refresh: float = 0, now_ns: int | None = None) -> str:
    """The picture as one HTML document; ``refresh``: seconds after which the browser reloads it."""
    e = html.escape
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime((now_ns or time.time_ns()) / 1e9))
    title = f"swarm: {placement.stack}" if placement.stack else "swarm"
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta http-equiv="refresh" content="{refresh:g}">' if refresh else "",
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f'<p class="meta">as {e(placement.manager)} saw it at {e(stamp)}; {len(placement.tasks)} tasks on '
        f"{len(placement.nodes)} nodes</p>",
        "<main>",
    ]
    for col in cols:
        classes = " ".join(["node", *col.marks])
        if col.node is not None and col.node.state != "ready" and "down" not in col.marks:
            classes += " down"
        state, availability = (col.node.state, col.node.availability) if col.node else ("", "")
        parts.append(
            f'<section class="{e(classes)}" data-host="{e(col.host)}" data-state="{e(state)}" '
            f'data-availability="{e(availability)}">'
            f"<header>{e(col.host or 'not placed yet')}<small>{e(node_line(col))}</small></header>"
        )
        group = None
        for t in col.tasks:
            key = f"{t.stack}/{t.short}" if t.stack else t.short
            if key != group:
                parts.append(f"<h2>{e(key)}</h2>")
                group = key
            detail = f"{t.state} {ago(t.since, now_ns)}" + (f" - {t.error}" if t.error else "")
            image = t.image + (f"@{t.short_digest}" if t.digest else "")
            parts.append(
                f'<div class="task {colour(t)}" data-task="{e(t.name)}" data-service="{e(t.short)}" '
                f'data-stack="{e(t.stack)}" data-state="{e(t.state)}" title="{e(t.id)}">{e(t.name)}'
                f"<small>{e(detail)}</small><small>{e(image)}</small></div>"
            )
        if not col.tasks:
            parts.append('<p class="empty">no tasks</p>')
        parts.append("</section>")
    parts += ["</main></body></html>", ""]
    return "\n".join(p for p in parts if p)
