"""exec: a command inside a service's running task - the task found from a manager (pure choice,
``choose``), then ``docker exec`` on that task's node over its SSH connection, the container named
by its ID (which no other node has: a node taken for the wrong host fails, it never runs elsewhere).

``docker service exec`` does not exist (moby/moby#27552); peers that offer it run an agent on every
node. This needs nothing on the hosts but the docker CLI bootstrap already requires.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import replace

from swarmctl.errors import ClusterError, InputError
from swarmctl.facts.tasks import TaskView
from swarmctl.ops.ps import Placed, Placement, read_placement, select
from swarmctl.transport.engine import Session


def choose(placement: Placement, every: Sequence[TaskView], slot: int | None = None, host: str = "") -> Placed:
    """The one running task to exec into (pure). ``placement``: the service's tasks as ``ps``
    selects them (each slot's current one); ``every``: all of them, to tell a slot that does not
    exist from one that does not run.

    Raises:
        InputError: a slot the service never had, or several running tasks and none named.
        ClusterError: no running task where asked (with the states the tasks are in).
    """
    tasks = list(placement.tasks)
    service = tasks[0].short if tasks else (every[0].short if every else "the service")
    if slot is not None:
        slots = sorted({t.slot for t in every if t.slot})
        if not slots:
            raise InputError(f"{service} is a global service: its tasks have no slots; name a node with --node HOST")
        if slot not in slots:
            raise InputError(f"{service} has no slot {slot} (its slots: {', '.join(map(str, slots))})")
        tasks = [t for t in tasks if t.slot == slot]
    if host:
        tasks = [t for t in tasks if placement.host_of(t) == host]
    running = [t for t in tasks if t.running and t.container_id]
    where = (f" slot {slot}" if slot is not None else "") + (f" on {host}" if host else "")
    if not running:
        states = ", ".join(f"{t.name}@{placement.host_of(t) or '-'} {t.state}" + (f" ({t.error})" if t.error else "")
                           for t in tasks) or "none"  # fmt: skip
        raise ClusterError(f"no running task of {service}{where} (its tasks: {states})")
    if len(running) > 1:
        names = ", ".join(f"{t.name}@{placement.host_of(t)}" for t in running)
        raise InputError(f"{service} has {len(running)} running tasks ({names}): name one with --slot N or --node HOST")
    task = running[0]
    if task.node_id not in placement.names:
        raise ClusterError(
            f"{task.name} runs on node {placement.host_of(task)}, which the inventory does not name: swarmctl reaches "
            "a node only as an inventory host (add it, or name another task with --slot/--node)"
        )
    return Placed(task, placement.names[task.node_id])


def find(session: Session, stack: str, service: str, slot: int | None = None, host: str = "") -> Placed:
    """The running task to exec into, as a manager sees it now. Meanwhile, the connections to the
    hosts are opened (the exec needs one of them next)."""
    for h in session.inventory.hosts:
        threading.Thread(target=_warm, args=(session, h.name), daemon=True, name=f"connect {h.name}").start()
    every = read_placement(session, stack, [service], history=True)
    return choose(replace(every, tasks=tuple(select(every.tasks))), every.tasks, slot, host)


def _warm(session: Session, host: str) -> None:
    try:
        session.pool.connection(host).transport()
    except Exception:  # the exec's own connect names what went wrong, on the host it needs
        return


def command(
    target: Placed,
    cmd: Sequence[str],
    interactive: bool = False,
    tty: bool = False,
    user: str = "",
    workdir: str = "",
    env: Sequence[str] = (),
) -> list[str]:
    """The ``docker exec`` line run on the task's host (pure)."""
    out = ["docker", "exec"]
    if interactive:
        out.append("-i")
    if tty:
        out.append("-t")
    if user:
        out += ["-u", user]
    if workdir:
        out += ["-w", workdir]
    for e in env:
        out += ["-e", e]
    return [*out, target.task.container_id, *cmd]


def run(
    session: Session,
    target: Placed,
    argv: list[str],
    stdin: int | None,
    stdout: int,
    stderr: int,
    pty: tuple[str, int, int] | None = None,
    resized: Callable[[], tuple[int, int] | None] | None = None,
) -> int:
    """Run it on the task's host; the command's exit status."""
    return session.pool.connection(target.host).interact(argv, stdin, stdout, stderr, pty, resized)
