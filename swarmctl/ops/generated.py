"""Variables a stack generates once and keeps: ``x-swarmctl: {generate: {VARIABLE: KIND}}`` at the
top of a stack file (the KRaft stack's ``KAFKA_CLUSTER_ID``).

read (``facts.generated``) -> plan (pure: the kept value, else the one given, else a new one) ->
apply (keep the new ones as swarm configs, before any service uses them). A value given in the
environment, ``.env`` or the inventory's ``vars`` wins over a kept one (and is not kept).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from swarmctl.compose.loader import StackConfig, generated_variables, given_variables, load_stack
from swarmctl.errors import Conflict
from swarmctl.facts.generated import config_body, config_name, read_generated
from swarmctl.plan import Change, Notify, quiet
from swarmctl.transport.engine import Engine


def kafka_cluster_id() -> str:
    """What ``kafka-storage.sh random-uuid`` prints: 16 random bytes, URL-safe base64 without padding
    (Kafka's Uuid.randomUuid, which also never begins with '-')."""
    while True:
        value = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
        if not value.startswith("-"):
            return value


KINDS: dict[str, Callable[[], str]] = {"kafka-cluster-id": kafka_cluster_id}


@dataclass(frozen=True)
class Generated:
    """The values to interpolate, and the ones to keep (new this time)."""

    values: dict[str, str] = field(default_factory=dict)
    new: dict[str, str] = field(default_factory=dict)
    given: tuple[str, ...] = ()

    def changes(self, stack: str) -> list[Change]:
        return [
            Change("config", config_name(stack, var), "create", (), f"generated {var}, kept for every later deploy")
            for var in sorted(self.new)
        ]


def plan_generated(
    wanted: Mapping[str, str],
    kept: Mapping[str, str],
    given: Collection[str],
    make: Mapping[str, Callable[[], str]] = KINDS,
) -> Generated:
    """Each wanted VARIABLE (-> KIND): given, else kept, else new (pure but for ``make``)."""
    values, new, named = {}, {}, []
    for var, kind in sorted(wanted.items()):
        if var in given:
            named.append(var)
        elif kept.get(var):
            values[var] = kept[var]
        else:
            values[var] = new[var] = make[kind]()
    return Generated(values, new, tuple(named))


def resolve_generated(
    engine: Engine, stack: str, wanted: Mapping[str, str], given: Collection[str], keep: bool, notify: Notify = quiet
) -> Generated:
    """The stack's generated variables; with ``keep``, new ones are kept before returning. When two
    deploys generate at once, the first kept value wins and the other uses it."""
    if not wanted:
        return Generated()
    planned = plan_generated(wanted, read_generated(engine, stack), given)
    if not keep or not planned.new:
        return planned
    values = dict(planned.values)
    for var, value in sorted(planned.new.items()):
        try:
            engine.create_object("config", config_body(stack, var, value))
            notify(f"generated {var} for stack {stack} (kept as config {config_name(stack, var)})")
        except Conflict:  # another deploy kept one a moment ago: use it
            values[var] = read_generated(engine, stack)[var]
    return Generated(values, planned.new, planned.given)


def load_generated(
    engine: Callable[[], Engine],
    stack: str,
    files: list[Path],
    environ: Mapping[str, str],
    inventory_vars: Mapping[str, str],
    keep: bool,
    notify: Notify = quiet,
) -> tuple[StackConfig, Generated]:
    """The stack's files loaded with its generated variables (``engine``: the manager to read and
    keep them through, asked for only when the files generate any). A caller that keeps (deploy)
    loads the files with ``generated_placeholders`` first, before connecting: nothing is kept for
    files that fail to load."""
    wanted = generated_variables(files)
    if not wanted:
        return load_stack(stack, files, environ, inventory_vars), Generated()
    given = given_variables(files, environ, inventory_vars)
    generated = resolve_generated(engine(), stack, wanted, given, keep, notify)
    return load_stack(stack, files, environ, {**generated.values, **inventory_vars}), generated
