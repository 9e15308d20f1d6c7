"""ps: where every task runs - read the nodes, services and tasks once from a manager, then select
and lay them out (pure) for the table, the terminal grid and the HTML page.

Each node is named by its inventory host. A table needs a name, not proof: a node is matched to a
host by its advertised address, then by hostname (``facts.nodes.match_hosts``); nothing here changes
the swarm. ``exec`` and ``logs`` go to a task's host and name the container by its ID there, which
no other host has.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from swarmctl import labels
from swarmctl.errors import InputError
from swarmctl.facts.membership import find_manager
from swarmctl.facts.nodes import NodeView, match_hosts, read_nodes
from swarmctl.facts.services import read_services
from swarmctl.facts.tasks import TaskView, current, read_tasks, task_views
from swarmctl.inventory import Inventory
from swarmctl.transport.engine import Session


@dataclass(frozen=True)
class Placed:
    """A task and the inventory host it runs on: what `logs` reads and `exec` runs in."""

    task: TaskView
    host: str

    @property
    def label(self) -> str:
        """``service.slot@host``: how logs prefixes its lines and exec names its task."""
        return f"{self.task.name}@{self.host}"


@dataclass(frozen=True)
class Placement:
    """Nodes and tasks as one manager saw them at one moment."""

    manager: str  # the inventory host that answered
    nodes: tuple[NodeView, ...]  # inventory order, then nodes the inventory does not name
    names: Mapping[str, str]  # node ID -> inventory host
    tasks: tuple[TaskView, ...]  # the selected tasks, by service and slot, newest first
    stack: str  # "" for every stack
    skipped: Mapping[str, str] = field(default_factory=dict)

    def host_of(self, task: TaskView) -> str:
        """The inventory host a task runs on; a node outside the inventory by its hostname."""
        if not task.node_id:
            return ""
        if task.node_id in self.names:
            return self.names[task.node_id]
        node = next((n for n in self.nodes if n.id == task.node_id), None)
        return node.label if node else task.node_id[:12]

    def json(self) -> dict[str, Any]:
        return {
            "manager": self.manager,
            "stack": self.stack,
            "nodes": [node_json(n, self.names.get(n.id, "")) for n in self.nodes],
            "tasks": [task_json(t, self.host_of(t)) for t in self.tasks],
            "skipped": [{"host": h, "error": e} for h, e in sorted(self.skipped.items())],
        }


def node_json(n: NodeView, host: str) -> dict[str, Any]:
    return {"host": host, "id": n.id, "hostname": n.hostname, "role": n.role, "leader": n.leader,
            "availability": n.availability, "state": n.state}  # fmt: skip


def task_json(t: TaskView, host: str) -> dict[str, Any]:
    return {
        "id": t.id,
        "stack": t.stack,
        "service": t.short,
        "slot": t.slot or None,
        "host": host,
        "node_id": t.node_id,
        "desired": t.desired,
        "state": t.state,
        "since": t.since,
        "error": t.error,
        "image": t.image,
        "digest": t.digest,
        "container_id": t.container_id,
        "spec": t.spec,
    }


# -- choosing what to show (pure) ----------------------------------------------------------------


def stacks_of(services: Iterable[Mapping[str, Any]]) -> list[str]:
    return sorted({str(((s.get("Spec") or {}).get("Labels") or {}).get(labels.NAMESPACE, "")) for s in services} - {""})


def _close(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.5)
    if close:
        return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"
    return f" (there are: {', '.join(choices)})" if choices and len(choices) <= 12 else ""


def pick_services(services: Sequence[Mapping[str, Any]], stack: str, wanted: Sequence[str]) -> list[Mapping[str, Any]]:
    """The services of ``stack`` (every service when ""), narrowed to ``wanted`` - each given by its
    name in the stack (``zookeeper-1``) or its full name (``kafka_zookeeper-1``) (pure).

    Raises:
        InputError: an unknown stack or service, with the close matches.
    """
    if stack:
        stacks = stacks_of(services)
        if stack not in stacks:
            raise InputError(f"no stack {stack!r} on this swarm{_close(stack, stacks)}")
        services = [s for s in services if ((s.get("Spec") or {}).get("Labels") or {}).get(labels.NAMESPACE) == stack]
    if not wanted:
        return list(services)
    full = {str((s.get("Spec") or {}).get("Name", "")): s for s in services}
    short = {name.removeprefix(f"{stack}_") if stack else name: s for name, s in full.items()}
    out: list[Mapping[str, Any]] = []
    for w in wanted:
        s = short.get(w) or full.get(w)
        if s is None:
            where = f"in stack {stack!r}" if stack else "on this swarm"
            raise InputError(f"no service {w!r} {where}{_close(w, sorted(short))}")
        if s not in out:
            out.append(s)
    return out


def node_of_host(host: str, inventory: Inventory, names: Mapping[str, str]) -> str:
    """The node ID of inventory host ``host`` (``names``: node ID -> host) (pure).

    Raises:
        InputError: not an inventory host (with close matches), or no swarm node is that host.
    """
    hosts = [h.name for h in inventory.hosts]
    if host not in hosts:
        raise InputError(f"no host {host!r} in {inventory.path}{_close(host, hosts)}")
    for node_id, name in names.items():
        if name == host:
            return node_id
    raise InputError(f"{host} is not a node of this swarm (run `swarmctl status` to see the nodes)")


def select(tasks: Sequence[TaskView], node_id: str = "", history: bool = False) -> list[TaskView]:
    """The rows of ``ps`` (pure): each slot's task that counts now (the one swarm wants running,
    else its newest), or with ``history`` every task; on ``node_id`` only when given."""
    rows = list(tasks) if history else current(tasks)
    return [t for t in rows if not node_id or t.node_id == node_id]


def order_nodes(nodes: Iterable[NodeView], names: Mapping[str, str], inventory: Inventory) -> list[NodeView]:
    """Nodes in inventory order, then the ones the inventory does not name by hostname (pure)."""
    rank = {h.name: i for i, h in enumerate(inventory.hosts)}
    return sorted(nodes, key=lambda n: (rank.get(names.get(n.id, ""), len(rank)), n.hostname))


def read_placement(
    session: Session, stack: str = "", services: Sequence[str] = (), host: str = "", history: bool = False
) -> Placement:
    """Nodes and the selected tasks, as the first answering manager sees them: three reads."""
    engine = find_manager(session)
    every = read_services(engine)
    chosen = pick_services(every, stack, services)
    nodes = read_nodes(engine)
    names = {n.id: h for h, n in match_hosts(session.inventory.hosts, nodes).items()}
    node_id = node_of_host(host, session.inventory, names) if host else ""
    tasks = task_views(read_tasks(engine, chosen if (stack or services) else None), every)
    return Placement(
        manager=engine.name,
        nodes=tuple(order_nodes(nodes, names, session.inventory)),
        names=names,
        tasks=tuple(select(tasks, node_id, history)),
        stack=stack,
        skipped=dict(session.skipped),
    )


# -- the picture (pure) --------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """One node of the picture, with its tasks grouped by stack and service."""

    host: str  # the inventory host, else the node's hostname; "" for tasks on no node yet
    node: NodeView | None
    tasks: tuple[TaskView, ...]

    @property
    def marks(self) -> list[str]:
        """What is wrong with the node, in words: down, drained, paused."""
        if self.node is None:
            return ["unassigned"]
        out = [] if self.node.state == "ready" else [self.node.state]
        if self.node.availability != "active":
            out.append(self.node.availability)
        return out


def columns(placement: Placement) -> list[Column]:
    """The placement picture: one column per node, every node even without tasks, then a column
    for tasks swarm has not placed yet (pure). A column's tasks are by stack, service, slot."""
    by_node: dict[str, list[TaskView]] = {}
    for t in placement.tasks:
        by_node.setdefault(t.node_id, []).append(t)
    out = []
    for n in placement.nodes:
        tasks = sorted(by_node.pop(n.id, []), key=lambda t: (t.stack, t.short, t.slot))
        out.append(Column(placement.names.get(n.id, n.label), n, tuple(tasks)))
    rest = [t for ts in by_node.values() for t in ts]  # no node yet, or a node swarm no longer lists
    if rest:
        out.append(Column("", None, tuple(sorted(rest, key=lambda t: (t.stack, t.short, t.slot)))))
    return out
