"""The vocabulary every operation speaks: Change -> Plan -> Result -> Report.

An operation (``swarmctl.ops``) reads facts, plans - a pure function - a :class:`Plan` of
:class:`Change` s, applies it, and returns a :class:`Report`: a :class:`Result` per change, the
warnings, and every host that failed and why. ``--plan`` renders the Plan, ``--json`` the Report;
both have one shape for every verb::

    {"changes": [{"kind", "name", "action", "fields", "detail"}], "warnings": [...],
     "failures": [{"host", "error"}], ...the verb's own facts}

Progress on the way is reported through one callback type, :data:`Notify` (a line for the user).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from swarmctl.errors import message_of

Notify = Callable[[str], None]


def quiet(_: str) -> None:
    """A Notify that says nothing (``--json``, tests)."""


@dataclass(frozen=True)
class Change:
    """One thing an operation does (or, in a plan, would do) to one node, host or swarm object.

    Attributes:
        kind: node | swarm | network | secret | config | service
        name: the inventory host (node, swarm) or the object's full name
        action: create | update | remove | init | leave | join-manager | join-worker | promote |
            demote | label | unlabel | availability
        fields: the spec paths it changes (``Labels.kafka.slot``, ``TaskTemplate.ContainerSpec.Image``)
        detail: what it means, in words (``kafka.slot=1``, ``as worker``)
    """

    kind: str
    name: str
    action: str
    fields: tuple[str, ...] = ()
    detail: str = ""

    def describe(self) -> str:
        """``update service app_web (TaskTemplate.ContainerSpec.Image)``, ``label node lab1 (kafka.slot=1)``."""
        extra = self.detail or ", ".join(self.fields)
        return f"{self.action} {self.kind} {self.name}" + (f" ({extra})" if extra else "")

    def json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "action": self.action,
            "fields": list(self.fields),
            "detail": self.detail,
        }


def failures_json(failures: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"host": h, "error": e} for h, e in sorted(failures.items())]


@dataclass(frozen=True)
class Plan:
    """What an operation would do, in apply order, and what it already knows it cannot do.

    Attributes:
        blocked: host or object -> why nothing will be done to it (found while reading facts:
            unreachable, failed preflight, refused by a safety rule).
    """

    changes: tuple[Change, ...] = ()
    warnings: tuple[str, ...] = ()
    blocked: Mapping[str, str] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.changes

    def json(self) -> dict[str, Any]:
        return {
            "changes": [c.json() for c in self.changes],
            "warnings": list(self.warnings),
            "failures": failures_json(self.blocked),
        }


DONE = "done"
FAILED = "failed"
NOT_STARTED = "not started"
ROLLED_BACK = "rolled back"


@dataclass(frozen=True)
class Result:
    """What applying one Change did: done | failed | not started | rolled back."""

    change: Change
    status: str = DONE
    detail: str = ""
    seconds: float = 0.0


@dataclass
class Report:
    """What an operation did: the plan it followed, a Result per change, warnings and failures.

    ``data`` holds the verb's own facts (services' progress, verify's checks), merged into its JSON.
    """

    plan: Plan = field(default_factory=Plan)
    results: list[Result] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def changes(self) -> list[Change]:
        """The changes that were made."""
        return [r.change for r in self.results if r.status == DONE]

    def done(self, change: Change, seconds: float = 0.0, notify: Notify = quiet) -> None:
        self.results.append(Result(change, DONE, seconds=seconds))
        notify(change.describe())

    def failed(self, change: Change, why: str, host: str | None = None) -> None:
        self.results.append(Result(change, FAILED, why))
        self.failures[host or change.name] = why

    def record(self, change: Change, error: BaseException | None, seconds: float = 0.0, host: str | None = None,
               notify: Notify = quiet) -> None:  # fmt: skip
        """``done`` or ``failed`` (with the error's text), by how applying the change ended."""
        if error is None:
            self.done(change, seconds, notify)
        else:
            self.failed(change, message_of(error), host)

    def in_plan_order(self) -> None:
        """The results in the order of the plan's changes, those it does not name after them as they
        came: work done in parallel ends in any order, and a report reads as its plan did."""
        at: dict[Change, int] = {}
        for i, c in enumerate(self.plan.changes):
            at.setdefault(c, i)
        self.results.sort(key=lambda r: at.get(r.change, len(self.plan.changes)))

    def warn(self, messages: Iterable[str]) -> None:
        for m in messages:
            if m not in self.warnings:
                self.warnings.append(m)

    def json(self) -> dict[str, Any]:
        return {
            "changes": [c.json() for c in self.changes],
            "warnings": list(self.warnings),
            "failures": failures_json(self.failures),
            **{k: jsonable(v) for k, v in self.data.items()},
        }


def jsonable(value: Any) -> Any:
    """Values of ``Report.data`` as JSON: objects with a ``json()`` method give theirs."""
    if hasattr(value, "json") and callable(value.json):
        return value.json()
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value
