"""A stack's history: every deploy, update and rollback that changed it records a revision in the
swarm (facts.revisions); ``swarmctl history`` lists them and what changed between them.

Recording happens after the change was applied and converged; a command that failed records
nothing (what it rolled back is as the last revision says; what it had already changed is not,
and ``swarmctl diff`` shows it). A run that changed nothing records nothing either, unless the stack
has no revision yet (a stack deployed before swarmctl kept history gets its first one). The
newest ``swarm.history_limit`` revisions (inventory; 10 by default) are kept, older ones removed.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from swarmctl import __version__
from swarmctl.errors import Conflict, EngineError, NotFound
from swarmctl.facts.revisions import MAX_DATA, Revision, Revisions, read_revisions, record_spec
from swarmctl.facts.services import read_services
from swarmctl.inventory import HISTORY_LIMIT
from swarmctl.plan import Change, Notify, Report, quiet
from swarmctl.spec import changed_fields
from swarmctl.transport.engine import Engine

log = logging.getLogger(__name__)

IMAGE = "TaskTemplate.ContainerSpec.Image"
ENV = "TaskTemplate.ContainerSpec.Env"
IMAGE_LABEL = "Labels.com.docker.stack.image"
CREATE_ATTEMPTS = 5  # another deploy took the number: take the next one


def who() -> str:
    """``user@host`` of this machine, as a revision names who made it."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container's): its number
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- what changed between two revisions (pure) ------------------------------------------------------


def _env(spec: Mapping[str, Any]) -> dict[str, str]:
    items = ((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Env") or []
    return dict(str(i).partition("=")[::2] for i in items)


def _image(spec: Mapping[str, Any]) -> str:
    return str(((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Image", ""))


def _shown_image(image: str) -> str:
    name, _, digest = image.partition("@")
    return f"{name}@{digest.removeprefix('sha256:')[:12]}" if digest else name


def describe_fields(old: Mapping[str, Any], new: Mapping[str, Any], fields: tuple[str, ...]) -> str:
    """An update in words: the image (``a -> b``), the variables (``+K=V``, ``-K``, ``K=a -> b``),
    then the other fields by name (pure)."""
    parts = []
    if IMAGE in fields:
        a, b = _image(old), _image(new)
        same_name = a.partition("@")[0] == b.partition("@")[0]
        parts.append(f"image {_shown_image(a) if same_name else a.partition('@')[0]} -> "
                     f"{_shown_image(b) if same_name else b.partition('@')[0]}")  # fmt: skip
    if ENV in fields:
        a_env, b_env = _env(old), _env(new)
        env = [f"+{k}={b_env[k]}" for k in sorted(set(b_env) - set(a_env))]
        env += [f"-{k}" for k in sorted(set(a_env) - set(b_env))]
        env += [f"{k}={a_env[k]} -> {b_env[k]}" for k in sorted(set(a_env) & set(b_env)) if a_env[k] != b_env[k]]
        parts.append("env " + ", ".join(env))
    shown = {IMAGE, ENV} | ({IMAGE_LABEL} if IMAGE in fields else set())
    others = [f for f in fields if f not in shown]
    if others:
        parts.append(", ".join(others))
    return "; ".join(parts)


def compare(older: Revision | None, newer: Revision) -> list[Change]:
    """What ``newer`` changed in the stack's services since ``older`` (pure): services created,
    removed, and updated with their changed fields. ``older`` None: every service is created."""
    before = dict(older.services) if older is not None else {}
    out = []
    for name in sorted(set(before) | set(newer.services)):
        short = newer.short(name)
        if name not in before:
            out.append(Change("service", short, "create", detail=_image(newer.services[name]).partition("@")[0]))
        elif name not in newer.services:
            out.append(Change("service", short, "remove"))
        else:
            fields = tuple(changed_fields(newer.services[name], before[name], {}))
            if fields:
                out.append(Change("service", short, "update", fields,
                                  describe_fields(before[name], newer.services[name], fields)))  # fmt: skip
    return out


@dataclass(frozen=True)
class Entry:
    """A revision as ``history`` shows it: its facts and what it changed since the one before it."""

    revision: Revision
    compared_with: int | None  # the revision before it, when still kept (or None: the first, or pruned)
    differences: tuple[Change, ...]

    def json(self) -> dict[str, Any]:
        r = self.revision
        return {
            "revision": r.number,
            "time": r.time,
            "who": r.who,
            "swarmctl": r.swarmctl,
            "command": r.command,
            "files_digest": r.files_digest,
            "restores": r.restores or None,
            "services": sorted(r.short(n) for n in r.services),
            "compared_with": self.compared_with,
            "differences": [c.json() for c in self.differences],
        }


def history_entries(revisions: Revisions) -> list[Entry]:
    """Each kept revision with what it changed since the one before it (pure). The oldest kept one
    is compared with nothing when its predecessor was pruned (its differences are then unknown)."""
    out = []
    previous: Revision | None = None
    for r in revisions.revisions:
        if previous is not None and previous.number == r.number - 1:
            out.append(Entry(r, previous.number, tuple(compare(previous, r))))
        elif r.number == 1:
            out.append(Entry(r, None, tuple(compare(None, r))))
        else:
            out.append(Entry(r, None, ()))
        previous = r
    return out


def read_history(engine: Engine, stack: str) -> tuple[list[Entry], list[str]]:
    """The stack's revisions, oldest first, and warnings about configs that are not readable revisions."""
    revisions = read_revisions(engine, stack)
    return history_entries(revisions), list(revisions.warnings)


# -- recording ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    """What recording did: the revision written (None: none), the ones pruned, and warnings."""

    revision: Revision | None
    pruned: tuple[int, ...] = ()
    warnings: tuple[str, ...] = ()


def current_revision(
    engine: Engine, stack: str, number: int, command: str, files_digest: str, restores: int
) -> Revision:
    """The stack's services as the engine has them now, as revision ``number``."""
    names = {n["Id"]: n["Name"] for n in engine.networks()}
    services = {svc["Spec"]["Name"]: record_spec(svc["Spec"], names) for svc in read_services(engine, stack)}
    return Revision(stack, number, now(), who(), __version__, command, files_digest, restores, services)


def prunable(numbers: list[int], keep: int) -> list[int]:
    """The revisions beyond the newest ``keep`` (pure)."""
    return sorted(numbers)[:-keep] if len(numbers) > keep else []


def record_revision(
    engine: Engine,
    stack: str,
    command: str,
    *,
    changed: bool = True,
    files_digest: str = "",
    restores: int = 0,
    keep: int = HISTORY_LIMIT,
    notify: Notify = quiet,
) -> Recorded:
    """Record the stack's services as its next revision, then remove revisions beyond ``keep``.

    ``changed``: whether the command changed the stack; when not, a revision is recorded only if the
    stack has none yet. The change was made already, so recording never fails the command: what went
    wrong is a warning (the history then lacks this revision, and says nothing false).
    """
    try:
        existing = read_revisions(engine, stack)
        if not changed and existing.revisions:
            return Recorded(None)
        number = max([*existing.configs, 0]) + 1
        revision = current_revision(engine, stack, number, command, files_digest, restores)
        size = len(revision.encode())
        if size >= MAX_DATA:
            return Recorded(None, warnings=(
                f"revision {number} of stack {stack} not recorded: its services' specs are {size // 1024} KiB "
                f"compressed, and a swarm config holds less than {MAX_DATA // 1024} KiB",))  # fmt: skip
        for _ in range(CREATE_ATTEMPTS):
            try:
                created = engine.create_object("config", revision.config_body())
                break
            except Conflict:  # another swarmctl recorded this number a moment ago
                number += 1
                revision = replace(revision, number=number)
        else:
            return Recorded(None, warnings=(f"revision of stack {stack} not recorded: revision numbers kept being "
                                            "taken by other runs",))  # fmt: skip
        revision = replace(revision, config_id=str(created.get("ID", "")))
        notify(f"recorded revision {number} of stack {stack}")
    except EngineError as e:
        return Recorded(None, warnings=(f"revision of stack {stack} not recorded: {e}",))
    configs = {**existing.configs, number: revision.config_id}
    pruned, warnings = [], []
    for old in prunable(list(configs), keep):
        try:
            engine.remove_object("config", configs[old], what=f"revision {old} of {stack}")
        except NotFound:
            pass  # another run pruned it first
        except EngineError as e:
            warnings.append(f"revision {old} of stack {stack} not removed (history_limit {keep}): {e}")
            continue
        pruned.append(old)
    if pruned:
        log.info("stack %s: removed revisions %s (history_limit %d)", stack, pruned, keep)
    return Recorded(revision, tuple(pruned), tuple(warnings))


@dataclass(frozen=True)
class Recording:
    """What a command's revision records beyond the services, and how many revisions to keep."""

    command: str  # deploy | update | rollback
    files_digest: str = ""
    restores: int = 0
    keep: int = HISTORY_LIMIT


def record(
    engine: Engine, stack: str, report: Report, recording: Recording, changed: bool, notify: Notify = quiet
) -> Recorded:
    """``record_revision`` for an operation's Report: ``data["revision"]`` the number recorded (None:
    none), its warnings among the report's."""
    done = record_revision(engine, stack, recording.command, changed=changed, files_digest=recording.files_digest,
                           restores=recording.restores, keep=recording.keep, notify=notify)  # fmt: skip
    report.data["revision"] = done.revision.number if done.revision is not None else None
    report.warn(done.warnings)
    return done
