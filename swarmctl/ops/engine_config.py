"""Engine configuration: the daemon.json keys the inventory names, on every host, and engine
restarts that never cost the swarm its managers' majority. read -> plan (pure) -> apply.

swarmctl owns only the keys the inventory names (``engine:``, a host's own ``engine:`` over it,
registries marked insecure): it merges them into the host's /etc/docker/daemon.json, keeps every
other key, and records what it set in /etc/docker/daemon.swarmctl.json, so that a key the
inventory drops is removed again - unless someone changed it by hand since (then it is left, with
a warning). Registry CA files go to /etc/docker/certs.d/<registry>/ca.crt (read per pull: no
restart).

A changed daemon.json takes an engine restart (``systemctl restart docker``). Hosts that are not
swarm nodes restart first (the first alone, the rest together); then swarm workers, then managers,
the leader last, one at a time: a manager restarts only while the others that are reachable still
make a majority, and the next host waits until the restarted one is back - engine answering, node
Ready, a manager reachable again, its tasks running. An engine that does not come back gets its
previous daemon.json again and is restarted once more; the run stops there, naming the host and
dockerd's own error.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from swarmctl import daemon_config
from swarmctl.errors import HostError, InputError, TimeoutExpired, message_of
from swarmctl.facts.engine_config import CERTS, CONFIG, OWNED, PENDING, EngineFacts, dockerd_start_error
from swarmctl.facts.membership import read_membership, refuse_shared_node_ids
from swarmctl.facts.nodes import NodeView, nodes_of, read_nodes
from swarmctl.files import read_regular
from swarmctl.inventory import Host, Inventory, majority
from swarmctl.ops.autolock import stored_keys, unlock_with
from swarmctl.plan import Change, Notify, Plan, Report, quiet
from swarmctl.transport.engine import Engine, Session
from swarmctl.wait import Pending, until
from swarmctl.yamlfile import suggest

log = logging.getLogger(__name__)

PREVIOUS = "/etc/docker/daemon.json.swarmctl-previous"  # daemon.json before the change being applied
MAX_CA = 1 << 20  # a CA bundle: kilobytes
RESTART_TIMEOUT = 180.0  # seconds for `systemctl restart docker`
BACK_TIMEOUT = 120.0  # seconds for a restarted host to be back (engine, node, tasks)
SETTLE_TIMEOUT = 60.0  # seconds for a majority of the other managers to be seen before a manager restarts
POLL = 1.0

# The previous daemon.json back in place (or none, when there was none), then the engine restarted.
_RESTORE_SCRIPT = r"""
if [ -e "$1" ]; then mv -f "$1" "$2"; else rm -f "$2"; fi
sync
"""

# Before daemon.json is written: the previous one kept for a restore, the restart marked pending.
_BACKUP_SCRIPT = r"""
if [ -e "$1" ]; then cp -p "$1" "$2"; else rm -f "$2"; fi
: > "$3"
sync
"""


# -- read ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineState:
    facts: Mapping[str, EngineFacts]
    blocked: Mapping[str, str]
    nodes: tuple[NodeView, ...] | None  # the swarm's nodes, from a manager of it (None: no swarm)
    ca_files: Mapping[str, tuple[str, Path]]  # registry -> (sha256, local CA file)
    autolock: bool = False  # the swarm locks its managers: a restarted one comes back locked
    unlock_keys: str = ""  # why the stored unlock keys cannot be read ("" when they can, or need not be)


def registry_cas(inv: Inventory) -> dict[str, tuple[str, Path]]:
    """The inventory's registry CA files: registry -> (sha256, local file)."""
    cas: dict[str, tuple[str, Path]] = {}
    for reg in inv.registries.values():
        if reg.ca_file is not None:
            ca = read_regular(reg.ca_file, MAX_CA, "CA files")
            cas[reg.host] = (hashlib.sha256(ca).hexdigest(), reg.ca_file)
    return cas


def engine_state(
    facts: Mapping[str, EngineFacts],
    blocked: Mapping[str, str],
    nodes: tuple[NodeView, ...] | None,
    ca_files: Mapping[str, tuple[str, Path]],
    autolock: bool,
    inv: Inventory,
) -> EngineState:
    """What the engines' plan needs, from the hosts' reads (facts.host.read_host); the stored
    unlock keys are tried when the swarm locks its managers (a restarted one needs them).

    Raises:
        Refused: two hosts report the same node ID (nothing can be told apart, nothing is changed).
    """
    refuse_shared_node_ids({n: f.node_id for n, f in facts.items()})
    unlock_keys = ""
    if autolock:
        try:
            stored_keys(inv)
        except InputError as e:
            unlock_keys = e.message
    return EngineState(dict(facts), dict(blocked), nodes, dict(ca_files), autolock, unlock_keys)


# -- plan (pure) -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostChange:
    """What changes on one host."""

    host: str
    config: Mapping[str, Any] | None  # the daemon.json to write; None: leave it
    owned: Mapping[str, Any] | None  # swarmctl's record to write; None: leave it
    cas: tuple[str, ...]  # registries whose CA file is installed
    changes: tuple[Change, ...]
    restart: bool
    in_swarm: bool = False
    manager: bool = False
    node_id: str = ""  # the node its own engine reports ("" outside a swarm, or when it could not say)


@dataclass
class EngineOutcome:
    """What applying the engines' plan did: its report, whether a failure stopped the run (later
    hosts untouched), and the hosts whose engine restarted (their membership is read again)."""

    report: Report
    stopped: bool = False
    restarted: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class EnginePlan:
    hosts: tuple[HostChange, ...]  # in apply order (restarts: see restart_order)
    plan: Plan

    @property
    def restarts(self) -> list[HostChange]:
        return [h for h in self.hosts if h.restart]


def _show(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def plan_host(
    host: Host, facts: EngineFacts, ca_files: Mapping[str, tuple[str, Path]], force: bool
) -> tuple[HostChange, list[str]]:
    """The daemon.json, record and CA files one host gets, and warnings (pure).

    Raises:
        ValueError: an unsafe key would change on a swarm node without ``force``, or the log driver
            is not one the engine has (the message says why).
    """
    driver = host.engine.get("log-driver")
    if driver is not None and facts.log_drivers and driver not in facts.log_drivers:
        # dockerd starts with it (it looks a driver up only for log-opts), then no container starts
        raise ValueError(
            f"log-driver {driver!r} is not one of this engine's logging drivers"
            f"{suggest(str(driver), facts.log_drivers, list_all=True)}: fix the name, or install the plugin first "
            "(docker plugin install)"
        )
    current = dict(facts.config or {})
    new = dict(current)
    changes: list[Change] = []
    warnings: list[str] = []
    for key, value in host.engine.items():
        if current.get(key) != value:
            before = _show(current[key]) if key in current else "(unset)"
            changes.append(Change("engine", host.name, "set", (key,), f"{key}: {before} -> {_show(value)}"))
            new[key] = value
    for key, value in facts.owned.items():
        if key in host.engine:
            continue
        if key not in current:
            continue
        if current[key] != value:
            warnings.append(
                f"{host.name}: {key} in daemon.json was changed by hand since swarmctl set it: left as it is"
            )
            continue
        changes.append(Change("engine", host.name, "remove", (key,), f"{key}: no longer in the inventory"))
        del new[key]
    unsafe = [c.fields[0] for c in changes if c.fields and c.fields[0] in daemon_config.UNSAFE]
    if unsafe and facts.in_swarm and not force:
        key = unsafe[0]
        raise ValueError(
            f"changing {key} on a swarm node needs --force: {daemon_config.UNSAFE[key]} (take the node out of "
            "the swarm first, or run with --force)"
        )
    owned = {k: v for k, v in host.engine.items()}
    cas = []
    for registry, (digest, path) in sorted(ca_files.items()):
        if facts.cas.get(registry, "") != digest:
            cas.append(registry)
            target = f"{CERTS}/{registry}/ca.crt"
            changes.append(Change("engine", host.name, "install", (target,), f"CA of {registry} from {path.name}"))
    restart = new != current or facts.restart_pending
    if new != current:
        changes.append(Change("engine", host.name, "restart", (), "dockerd, for the new daemon.json"))
    elif restart:
        changes.append(Change("engine", host.name, "restart", (), "dockerd: an earlier run changed its daemon.json "
                              "and stopped before the restart"))  # fmt: skip
    return HostChange(
        host=host.name,
        config=new if restart else None,
        owned=owned if owned != dict(facts.owned) or restart else None,
        cas=tuple(cas),
        changes=tuple(changes),
        restart=restart,
        in_swarm=facts.in_swarm,
        manager=facts.manager,
        node_id=facts.node_id,
    ), warnings


def restart_order(changes: Iterable[HostChange], nodes: Iterable[NodeView] | None) -> list[HostChange]:
    """Hosts that are not swarm nodes first, then workers, then managers with the leader last (pure).
    The leader is the node whose ID its host's own engine reported, never one found by name."""
    leader = {n.id for n in nodes or () if n.leader}
    ordered = list(changes)

    def rank(h: HostChange) -> int:
        if not h.in_swarm:
            return 0
        if not h.manager:
            return 1
        return 3 if h.node_id in leader else 2

    return sorted(ordered, key=rank)  # stable: inventory order within a rank


def plan_engine(inventory: Inventory, state: EngineState, force: bool = False) -> EnginePlan:
    """Everything engine configuration would do, in apply order (pure).

    Raises:
        Refused: two hosts report the same node ID.
    """
    refuse_shared_node_ids({name: f.node_id for name, f in state.facts.items()})
    blocked = dict(state.blocked)
    warnings: list[str] = []
    hosts: list[HostChange] = []
    nodes = nodes_of({name: f.node_id for name, f in state.facts.items()}, state.nodes or ())
    for host in inventory.hosts:
        f = state.facts.get(host.name)
        if f is None:
            continue
        node = nodes.get(host.name)
        try:
            change, host_warnings = plan_host(host, f, state.ca_files, force)
        except ValueError as e:
            blocked[host.name] = str(e)
            continue
        if f.in_swarm and not f.manager and (node.is_manager if node is not None else host.is_manager):
            # a manager that cannot say so itself now (not active): the swarm's node list can; one
            # that names no node of the list is taken at the inventory's word (the quorum rule then
            # holds for it: restarting a worker as a manager costs a wait, the reverse a quorum)
            change = replace(change, manager=True)
        warnings += host_warnings
        if change.restart and not f.systemctl:
            blocked[host.name] = "its daemon.json changes, and dockerd is restarted with systemctl, which it lacks"
            continue
        if change.restart and change.manager and state.autolock and state.unlock_keys:
            blocked[host.name] = (
                "its daemon.json changes, and the swarm locks its managers (autolock): its engine would come back "
                f"locked, and swarmctl unlocks it with the stored unlock key, which it cannot read: {state.unlock_keys}"
            )
            continue
        if change.restart and f.in_swarm and f.membership.state != "active":
            warnings.append(f"{host.name}: its swarm state is {f.membership.state}: restarted as a swarm member, alone")
        if change.changes or change.owned is not None:
            hosts.append(change)
    ordered = restart_order(hosts, state.nodes)
    managers = [n for n in state.nodes or () if n.is_manager]
    if len(managers) == 1 and any(h.restart and h.manager for h in ordered):
        warnings.append(
            f"the swarm has a single manager ({managers[0].label}): its control plane is down while that "
            "engine restarts (running tasks go on); three managers keep it up"
        )
    changes = tuple(c for h in ordered for c in h.changes)
    return EnginePlan(tuple(ordered), Plan(changes, tuple(warnings), blocked))


# -- apply -----------------------------------------------------------------------------------------


def _write_files(
    session: Session, host: Host, change: HostChange, ca_files: Mapping[str, tuple[str, Path]], record: bool = True
) -> None:
    """CA files, then daemon.json (the previous one kept for a restore, the restart marked pending
    first), then - unless ``record`` is off, for a host whose restart must succeed first - swarmctl's
    record of what it set."""
    conn = session.pool.connection(host)
    for registry in change.cas:
        conn.put(read_regular(ca_files[registry][1], MAX_CA, "CA files"), f"{CERTS}/{registry}/ca.crt", 0o644)
    if change.config is not None:
        conn.run(["sh", "-c", _BACKUP_SCRIPT, "backup", CONFIG, PREVIOUS, PENDING]).check(
            "keep the previous daemon.json"
        )
        conn.put((json.dumps(change.config, indent=2, sort_keys=True) + "\n").encode(), CONFIG, 0o644)
    if record:
        _write_record(session, host, change)


def _write_record(session: Session, host: Host, change: HostChange) -> None:
    """What swarmctl set, once the engine runs with it; the pending restart is done."""
    conn = session.pool.connection(host)
    if change.owned is not None:
        record = {"keys": dict(change.owned), "comment": "daemon.json keys swarmctl set (from the inventory)"}
        conn.put((json.dumps(record, indent=2, sort_keys=True) + "\n").encode(), OWNED, 0o644)
    if change.restart:
        conn.run(["sh", "-c", 'rm -f "$1"; sync', "done", PENDING]).check("clear the pending restart")


def systemctl_docker(
    session: Session, host: Host, action: str, timeout: float = RESTART_TIMEOUT, what: str = ""
) -> None:
    """``systemctl ACTION docker`` on the host (start | stop | restart). The host's API channels are
    dropped first: they end with the engine, and the next call opens new ones."""
    session.forget_engine(host)
    conn = session.pool.connection(host)
    conn.run(["systemctl", action, "docker"], timeout=timeout).check(what or f"{action} the engine")


def wait_back(
    session: Session,
    host: Host,
    change: HostChange,
    others: list[str],
    timeout: float = BACK_TIMEOUT,
    unlock_keys: Sequence[str] = (),
) -> None:
    """Poll until the restarted host is back: engine answering; for a swarm node, Ready (and, for a
    manager, reachable) as another manager sees it, and every task it should run running. A manager
    that comes back locked (autolock) is unlocked with ``unlock_keys`` (the stored ones, current first).

    Raises:
        HostError: not back within ``timeout``, with what was seen last.
    """

    def back() -> bool | Pending:
        seen = _back(session, host, change, others, unlock_keys)
        return Pending(seen) if seen else True

    def late(seen: str) -> HostError:
        return HostError(host.name, f"not back {timeout:g}s after its engine restarted: {seen}")

    until(f"{host.name} to be back", back, timeout, first=POLL, cap=POLL, error=late)


def _back(session: Session, host: Host, change: HostChange, others: list[str], unlock_keys: Sequence[str]) -> str:
    """What keeps the host from being back ("" when it is)."""
    engine = session.engine(host)
    own = read_membership(engine)
    if not change.in_swarm:
        return ""
    if own.locked and unlock_keys:
        unlock_with(engine, list(unlock_keys))
        own = read_membership(engine)
    if not own.active:
        return f"swarm state {own.state}" + (" (autolock: no unlock key given)" if own.locked else "")
    viewer = _viewer(session, others) or (engine if change.manager and own.control_available else None)
    if viewer is None:
        return "no other manager answers"
    nodes = {n.id: n for n in read_nodes(viewer)}
    node = nodes.get(own.node_id)
    if node is None:
        return "not listed by the managers"
    if not node.ready:
        return f"node {node.state}"
    if change.manager and node.reachability != "reachable":
        return f"manager {node.reachability or 'unknown'}"
    tasks = viewer.tasks({"node": [own.node_id], "desired-state": ["running"]})
    waiting = [t for t in tasks if (t.get("Status") or {}).get("State") != "running"]
    if waiting:
        return f"{len(waiting)} of its {len(tasks)} tasks not running yet"
    return ""


def _viewer(session: Session, names: list[str]) -> Engine | None:
    for name in names:
        try:
            engine = session.engine(name)
            if read_membership(engine).manager:
                return engine
        except HostError:
            continue
    return None


def _majority_refusal(session: Session, managers: list[str], change: HostChange, timeout: float, notify: Notify) -> str:
    """Why the engine of manager ``change.host`` may not restart now ("" when it may), as the other
    managers see the swarm (or, when none answers, as this one does). A leader change (the previous
    restart may have been the leader's) puts every node in state "unknown" until its agent reports
    to the new leader, a few seconds: a majority not seen yet is asked again until ``timeout``, and
    only then refused."""
    name = change.host
    last = [""]

    def allowed() -> bool | Pending:
        viewer = _viewer(session, [m for m in managers if m != name] + [name])
        why = f"refusing to restart the engine of {name}: no manager answers to tell the swarm's state"
        if viewer is not None:
            try:
                why = quorum_refusal(read_nodes(viewer), change.node_id, name)
            except HostError as e:  # between leaders: asked again
                why = f"refusing to restart the engine of {name}: the managers cannot list the swarm ({e.message})"
        last[0] = why
        return Pending(why) if why else True

    told: list[bool] = []

    def tell(_: str) -> None:
        if not told:
            notify(f"waiting for a majority of the other managers to be seen ready before restarting {name}")
            told.append(True)

    try:
        until(f"a majority of the other managers before restarting {name}", allowed, timeout, first=POLL,
              cap=POLL, on_wait=tell)  # fmt: skip
    except TimeoutExpired:
        return f"{last[0]} (waited {timeout:g}s for them)"
    return ""


def quorum_refusal(nodes: list[NodeView], node_id: str, name: str) -> str:
    """Why restarting the manager whose own engine reports ``node_id`` would cost the swarm its
    majority now ("" when it would not) (pure). A manager that named no node of the list may be any
    of them: one reachable manager fewer is counted, never one more. ``name`` is how it is named."""
    managers = [n for n in nodes if n.is_manager]
    if len(managers) <= 1:
        return ""
    reachable = [n for n in managers if n.ready and n.reachability == "reachable"]
    others = len([n for n in reachable if n.id != node_id])
    if node_id not in {n.id for n in managers}:
        others = max(0, len(reachable) - 1)
    if others >= majority(len(managers)):
        return ""
    return (
        f"refusing to restart the engine of {name}: of {len(managers)} managers only {others} others "
        f"are reachable, fewer than a majority ({majority(len(managers))}) while it restarts: bring the others "
        "back first"
    )


def apply_engine(
    session: Session,
    planned: EnginePlan,
    ca_files: Mapping[str, tuple[str, Path]],
    notify: Notify = quiet,
    back_timeout: float = BACK_TIMEOUT,
    settle_timeout: float = SETTLE_TIMEOUT,
    unlock_keys: Sequence[str] = (),
) -> EngineOutcome:
    """Write and restart as planned; stops at the first host that fails to come back. A manager
    that comes back locked (autolock) is unlocked with ``unlock_keys``.
    """
    inv = session.inventory
    report = Report(plan=planned.plan, warnings=list(planned.plan.warnings), failures=dict(planned.plan.blocked))
    outcome = EngineOutcome(report)
    quiet_hosts = [h for h in planned.hosts if not h.restart]
    outcomes = session.fan_out(
        lambda h: _write_files(session, h, _change_of(planned, h.name), ca_files),
        [inv.host(h.host) for h in quiet_hosts],
    )
    for change in quiet_hosts:
        o = outcomes[change.host]
        if o.error is not None:
            report.failures[change.host] = message_of(o.error)
        else:
            for c in change.changes:
                report.done(c, notify=notify)

    managers = [h.name for h in inv.managers]
    restarts = planned.restarts
    outside = [h for h in restarts if not h.in_swarm]
    members = [h for h in restarts if h.in_swarm]
    # hosts outside a swarm: the first alone (a bad setting stops the run there), then the rest together
    batches: list[list[HostChange]] = [[h] for h in outside[:1]] + ([outside[1:]] if outside[1:] else [])
    batches += [[h] for h in members]
    for i, batch in enumerate(batches):
        for change in batch:
            if change.manager and change.in_swarm:
                why = _majority_refusal(session, managers, change, settle_timeout, notify)
                if why:
                    report.failures[change.host] = why
                    _stop(outcome, batches[i:], change.host)
                    return outcome

        def one(host: Host) -> None:
            change = _change_of(planned, host.name)
            _write_files(session, host, change, ca_files, record=False)
            others = [m for m in managers if m != host.name]
            try:
                systemctl_docker(session, host, "restart")
                wait_back(session, host, change, others, back_timeout, unlock_keys)
            except HostError as e:
                raise HostError(host.name, _restore(session, host, change, e, back_timeout, unlock_keys)) from None
            _write_record(session, host, change)  # only once the new daemon.json is known to work

        notify("restarting the engine of " + ", ".join(c.host for c in batch))
        outcomes = session.fan_out(one, [inv.host(c.host) for c in batch])
        outcome.restarted += [c.host for c in batch]  # failed or not: its engine was restarted
        failed = False
        for change in batch:
            o = outcomes[change.host]
            if o.error is not None:
                report.failures[change.host] = message_of(o.error)
                failed = True
            else:
                for c in change.changes:
                    report.done(c, o.seconds, notify=notify)
        if failed:
            _stop(outcome, batches[i + 1 :], next(c.host for c in batch if outcomes[c.host].error is not None))
            return outcome
    return outcome


def _change_of(planned: EnginePlan, name: str) -> HostChange:
    return next(h for h in planned.hosts if h.host == name)


def _restore(
    session: Session, host: Host, change: HostChange, error: HostError, timeout: float, unlock_keys: Sequence[str]
) -> str:
    """Put the previous daemon.json back and restart once more; the failure, in words."""
    failed_start = dockerd_start_error(session, host)
    why = f"{error.message} (dockerd: {failed_start})" if failed_start else error.message
    conn = session.pool.connection(host)
    others = [m.name for m in session.inventory.managers if m.name != host.name]
    try:
        conn.run(["sh", "-c", _RESTORE_SCRIPT, "restore", PREVIOUS, CONFIG]).check("restore the previous daemon.json")
        systemctl_docker(session, host, "restart")
        wait_back(session, host, change, others, timeout, unlock_keys)
        # the engine runs with the daemon.json it had: nothing is pending (the next run plans again)
        conn.run(["sh", "-c", 'rm -f "$1"; sync', "done", PENDING]).check("clear the pending restart")
        back = "its previous daemon.json was restored and the engine runs again"
    except HostError as e:
        back = f"restoring its previous daemon.json did not bring the engine back either ({e.message})"
    return f"the engine did not come back with the new daemon.json: {why}; {back}"


def _stop(outcome: EngineOutcome, rest: list[list[HostChange]], failed: str) -> None:
    outcome.stopped = True
    for batch in rest:
        for change in batch:
            if change.host != failed and change.host not in outcome.report.failures:
                outcome.report.failures[change.host] = f"not changed: the run stopped at {failed}"


def unlock_keys_for(planned: EnginePlan, state: EngineState, inv: Inventory) -> list[str]:
    """The stored unlock keys when a manager restarts under autolock (it comes back locked), read
    before any change; [] when none is needed."""
    locks = state.autolock and any(h.manager for h in planned.restarts)
    return stored_keys(inv) if locks else []
