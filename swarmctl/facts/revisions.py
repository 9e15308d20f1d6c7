"""A stack's revisions as the swarm keeps them: one swarm config per deploy, update or rollback.

Configs live in the raft store, so every manager - and every machine with the inventory - reads
the same history; they are immutable, and a name is taken once (so two deploys at the same moment
cannot both write revision 5: the second is told the name is in use and takes 6). Each is labelled
``io.swarmctl.history.stack`` and ``io.swarmctl.history.revision`` and never with the stack's
namespace label: ``deploy --prune``, ``swarmctl rm`` and ``docker stack rm`` pick objects by that
label and leave the history alone.

The data is gzip'd JSON (``encode`` / ``parse_revision``, the one format)::

    {"format": 1, "stack", "revision", "time", "who", "swarmctl", "command", "files_digest",
     "restores", "services": {full service name: its spec as the engine stored it}}

Specs are recorded as the engine stored them after the change (images pinned to digests where the
engine or swarmctl pinned them), with network IDs as names and secret/config IDs left out: a network
or secret made anew under the same name still matches.
"""

from __future__ import annotations

import base64
import binascii
import copy
import gzip
import hashlib
import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from swarmctl import labels
from swarmctl.transport.engine import Engine

FORMAT = 1
PREFIX = "swarmctl-history"
# swarmkit's rules for a config (manager/controlapi): a name of at most 64 of [a-zA-Z0-9-_.],
# starting and ending with a letter or digit; data shorter than MaxConfigSize: 500 KiB in the
# swarmkit of Docker 20.10, 1000 KiB in newer swarmkit - the smaller, so a revision fits every engine
MAX_NAME = 64
MAX_DATA = 500 * 1024


@dataclass(frozen=True)
class Revision:
    """One recorded state of a stack's services.

    Attributes:
        number: 1, 2, ... per stack, never reused while the stack has history.
        time: when it was recorded, RFC 3339 in UTC.
        who: ``user@host`` of the machine that ran the command.
        command: deploy | update | rollback.
        files_digest: ``sha256:...`` of the stack files (deploy; a rollback: its target's); "" for update.
        restores: the revision a rollback brought back; 0 otherwise.
        services: full service name -> spec (see ``record_spec``).
        config_id: the config that holds it ("" before it is written).
    """

    stack: str
    number: int
    time: str
    who: str
    swarmctl: str
    command: str
    files_digest: str = ""
    restores: int = 0
    services: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    config_id: str = ""

    def short(self, name: str) -> str:
        return name.removeprefix(f"{self.stack}_")

    def encode(self) -> bytes:
        """The config's data: gzip'd JSON (mtime 0: the same revision encodes to the same bytes)."""
        doc = {
            "format": FORMAT,
            "stack": self.stack,
            "revision": self.number,
            "time": self.time,
            "who": self.who,
            "swarmctl": self.swarmctl,
            "command": self.command,
            "files_digest": self.files_digest,
            "restores": self.restores,
            "services": {k: dict(v) for k, v in sorted(self.services.items())},
        }
        return gzip.compress(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode(), mtime=0)

    def config_body(self) -> dict[str, Any]:
        """The ConfigSpec that records it."""
        return {
            "Name": config_name(self.stack, self.number),
            "Labels": {labels.HISTORY_STACK: self.stack, labels.HISTORY_REVISION: str(self.number)},
            "Data": base64.b64encode(self.encode()).decode(),
        }


class UnreadableRevision(ValueError):
    """A config labelled as a revision whose data is not one (written by hand, or by a newer swarmctl)."""


def config_name(stack: str, number: int) -> str:
    """``swarmctl-history_<stack>_<n>``; a stack name too long for that is shortened and made unique
    by a hash of it (the labels, not the name, are what history is read by)."""
    name = f"{PREFIX}_{stack}_{number}"
    if len(name) <= MAX_NAME:
        return name
    tag = f"{hashlib.sha256(stack.encode()).hexdigest()[:12]}_{number}"
    return f"{PREFIX}_{stack[: MAX_NAME - len(PREFIX) - len(tag) - 3]}-{tag}"


def record_spec(spec: Mapping[str, Any], network_names: Mapping[str, str]) -> dict[str, Any]:
    """A service spec as a revision keeps it: network IDs as names, secret and config IDs left out
    (they are found again by name when the revision is rolled back to)."""
    out = copy.deepcopy(dict(spec))
    task = out.get("TaskTemplate") or {}
    for net in task.get("Networks") or []:
        net["Target"] = network_names.get(net.get("Target", ""), net.get("Target", ""))
    container = task.get("ContainerSpec") or {}
    for ref in container.get("Secrets") or []:
        ref.pop("SecretID", None)
    for ref in container.get("Configs") or []:
        ref.pop("ConfigID", None)
    return out


def _field(doc: Mapping[str, Any], key: str, kind: type) -> Any:
    value = doc.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise UnreadableRevision(f"{key}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def parse_revision(config: Mapping[str, Any]) -> Revision:
    """A revision from its config as the API lists it (pure).

    Raises:
        UnreadableRevision: why the config is not a revision this swarmctl can read.
    """
    spec = config.get("Spec") or {}
    try:
        data = gzip.decompress(base64.b64decode(spec.get("Data") or "", validate=True))
        doc = json.loads(data)
    except (binascii.Error, OSError, EOFError, zlib.error, ValueError) as e:
        raise UnreadableRevision(f"not gzip'd JSON ({e})") from None
    if not isinstance(doc, dict):
        raise UnreadableRevision("not a JSON object")
    if doc.get("format") != FORMAT:
        raise UnreadableRevision(f"format {doc.get('format')!r}, this swarmctl reads format {FORMAT}")
    services = _field(doc, "services", dict)
    if not all(isinstance(v, dict) for v in services.values()):
        raise UnreadableRevision("services: expected a spec for each")
    return Revision(
        stack=_field(doc, "stack", str),
        number=_field(doc, "revision", int),
        time=_field(doc, "time", str),
        who=_field(doc, "who", str),
        swarmctl=_field(doc, "swarmctl", str),
        command=_field(doc, "command", str),
        files_digest=_field(doc, "files_digest", str),
        restores=_field(doc, "restores", int),
        services=services,
        config_id=str(config.get("ID", "")),
    )


@dataclass(frozen=True)
class Revisions:
    """A stack's readable revisions, oldest first, and a warning for each config that was not one."""

    stack: str
    revisions: tuple[Revision, ...] = ()
    warnings: tuple[str, ...] = ()
    # every config labelled for the stack, readable or not: number -> config ID (what pruning removes)
    configs: Mapping[int, str] = field(default_factory=dict)

    @property
    def numbers(self) -> list[int]:
        return [r.number for r in self.revisions]

    @property
    def latest(self) -> Revision | None:
        return self.revisions[-1] if self.revisions else None

    def get(self, number: int) -> Revision | None:
        return next((r for r in self.revisions if r.number == number), None)


def parse_revisions(stack: str, configs: Sequence[Mapping[str, Any]]) -> Revisions:
    """The stack's revisions from the configs labelled with it (pure)."""
    found: dict[int, Revision] = {}
    warnings = []
    numbers: dict[int, str] = {}
    for config in configs:
        spec = config.get("Spec") or {}
        tags = spec.get("Labels") or {}
        if tags.get(labels.HISTORY_STACK) != stack:
            continue
        label = str(tags.get(labels.HISTORY_REVISION, ""))
        if label.isdigit():
            numbers[int(label)] = str(config.get("ID", ""))
        try:
            rev = parse_revision(config)
        except UnreadableRevision as e:
            warnings.append(f"config {spec.get('Name', config.get('ID', ''))} is not a readable revision: {e}")
            continue
        if rev.stack != stack or str(rev.number) != label:
            warnings.append(f"config {spec.get('Name')} records revision {rev.number} of {rev.stack}, not its labels'")
            continue
        found[rev.number] = rev
    return Revisions(stack, tuple(found[n] for n in sorted(found)), tuple(warnings), numbers)


def history_filter(stack: str) -> dict[str, list[str]]:
    return {"label": [f"{labels.HISTORY_STACK}={stack}"]}


def read_revisions(engine: Engine, stack: str) -> Revisions:
    """The stack's revisions as a manager has them (the configs list carries their data)."""
    return parse_revisions(stack, engine.objects("config", filters=history_filter(stack)))
