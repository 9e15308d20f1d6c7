"""Recovery when the swarm lost its quorum: one manager made a new cluster of its raft state, the
rest of the inventory brought back around it.

The order of operations (docker's disaster-recovery procedure, done on the right host):

1. Read (``read_recover``): every inventory host's swarm state in parallel; on each manager, how
   far its raft log got (the newest snapshot and WAL segment index under ``<data-root>/swarm/raft``,
   then their time) and whether it can list the swarm's nodes (quorum).
2. Plan (``plan_recover``, pure) - refused when any manager still has quorum (nothing to recover),
   when an inventory manager cannot be reached (it may hold newer state, and would come back as a
   second swarm), or when no reachable manager holds swarm state and no backup is given:
   - the source: the reachable manager with the most recent raft state; with ``--from-backup``
     the inventory manager at the address the backup was taken at (``restore_target``: swarm
     state cannot move to another address), whose engine is stopped, whose swarm state is moved
     aside (never deleted) and replaced by the archive's, and started again;
   - unlock it when it is locked (autolock), with the stored keys;
   - ``--force-new-cluster`` there: a one-manager swarm with every service, secret, config and
     network of that state;
   - every other host that still has swarm state leaves it (it belongs to the lost cluster);
   - bootstrap: the other hosts join with fresh tokens, after their stale nodes are removed
     (never below a majority), roles and labels as the inventory says;
   - wait until every service runs its tasks again.
3. Apply, in that order; nothing runs without the plan shown and ``--yes``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swarmctl.converge import wait_services_running
from swarmctl.errors import HostError, InputError, Refused, TimeoutExpired
from swarmctl.facts.host import SWARM_PORT, advertise_address
from swarmctl.facts.membership import ACTIVE, INACTIVE, LOCKED, PENDING, autolock_on, read_membership
from swarmctl.facts.raft import DEFAULT_ROOT, archive_problem
from swarmctl.facts.recovery import QUORUM_WINDOW, STOPPED, RecoverState, read_recover
from swarmctl.facts.services import read_services
from swarmctl.facts.tasks import task_views
from swarmctl.interrupts import finishing
from swarmctl.inventory import Host, Inventory, majority
from swarmctl.ops.autolock import keyring, stored_keys, unlock_with, wait_active
from swarmctl.ops.backup import STOP_TIMEOUT, open_backup
from swarmctl.ops.bootstrap import bootstrap
from swarmctl.ops.engine_config import BACK_TIMEOUT, HostChange, systemctl_docker, wait_back
from swarmctl.plan import FAILED, NOT_STARTED, Change, Notify, Plan, Report, Result, quiet
from swarmctl.transport.engine import Engine, Session
from swarmctl.wait import Pending, until

log = logging.getLogger(__name__)

SETTLE_TIMEOUT = 90.0  # the new cluster answering, the restored engine back
CONVERGE_TIMEOUT = 600.0
POLL = 1.0
# Docker 20.10 was seen, after --force-new-cluster, with the forced node's agent taking up none of
# the tasks given to it (they stay "assigned" until the timeout; 1 recover in ~10 on a loaded lab,
# docker/for-linux#495 names the same node's stuck networking). An engine restart starts it clean;
# it is done only when that is seen, since an unconditional restart was seen to cost more than it
# mended (task names resolving nowhere, a task left pending).
STUCK_AFTER = 90.0
RESTART_WHY = (
    "its agent took up none of its tasks for {:g} s after the forced new cluster ({}): a restart "
    "starts it clean (docker/for-linux#495)"
)

_RESTORE_SCRIPT = r"""
set -e
root=$1
mkdir -p "$root"
cd "$root"
if [ -e swarm ]; then mv swarm "swarm.before-restore-$(date +%Y%m%dT%H%M%S)"; fi
umask 077
tar -xzf - -C "$root" swarm
test -d "$root/swarm/raft"
"""


# -- plan (pure) -----------------------------------------------------------------------------------


def restore_target(inventory: Inventory, backup: Mapping[str, Any], addresses: Mapping[str, str]) -> str:
    """The inventory manager a backup can be restored on: the one at the address the backup was
    taken at (pure). Swarm state names its manager's address in the raft membership, and
    ``--force-new-cluster`` keeps it (docker/docs#7931, docker/for-linux#523): restored anywhere
    else, joins are sent to the old address. ``addresses``: host -> the address it advertises.

    Raises:
        Refused: no inventory manager has that address.
    """
    address = str(backup.get("address", ""))
    for host in inventory.managers:
        mine = addresses.get(host.name, host.address)
        if (address and address in (mine, host.address)) or (not address and host.name == backup.get("host")):
            return host.name
    where = f"{address} ({backup.get('host', '?')})" if address else f"host {backup.get('host', '?')}"
    raise Refused(
        f"the backup was taken on {where}, and no inventory manager has that address: swarm state can only be "
        "restored on a host at the address it was taken at (its raft membership names it, and "
        "--force-new-cluster keeps it): give a manager that address, or name it in the inventory"
    )


@dataclass(frozen=True)
class RecoverPlan:
    source: str  # the manager the new cluster is made on ("" when unlocking brings the quorum back)
    restore: bool  # from a backup archive
    unlock: bool
    leave: tuple[str, ...]
    join: tuple[tuple[str, str], ...]  # (host, role) that bootstrap joins
    plan: Plan
    start: tuple[str, ...] = ()  # hosts whose engine is started first (stopped, no swarm state)
    relock: tuple[str, ...] = ()  # locked managers whose unlock may give the quorum back: nothing forced
    kept: Mapping[str, Any] | None = None  # the swarm settings the force-new-cluster carries (``kept_settings``)

    @property
    def forces(self) -> bool:
        return bool(self.source)


def kept_settings(backup: Mapping[str, Any] | None, unlock: bool) -> dict[str, Any] | None:
    """The swarm settings a force-new-cluster request must carry to keep the cluster's (pure).

    The engine writes its init request's ``CAConfig.ForceRotate`` and ``EncryptionConfig.
    AutoLockManagers`` into the cluster even when forcing (moby's MergeSwarmSpecToGRPC), and docker
    sends 0 and false: a cluster whose root CA was ever rotated starts another rotation (whose end
    changes the join tokens while the other hosts join) and autolock is turned off. A backup says
    both (``ca_force_rotate`` since this release); a survivor's cluster cannot be read without a
    quorum, so only autolock is known, when the manager was locked. None: nothing is known.
    """
    if backup is not None:
        kept: dict[str, Any] = {"EncryptionConfig": {"AutoLockManagers": bool(backup.get("autolock"))}}
        if "ca_force_rotate" in backup:
            kept["CAConfig"] = {"ForceRotate": int(backup["ca_force_rotate"])}
        return kept
    return {"EncryptionConfig": {"AutoLockManagers": True}} if unlock else None


ALIVE = (ACTIVE, PENDING, LOCKED)  # managers that still take part in their swarm, or may again by themselves


def plan_recover(
    state: RecoverState, backup: Mapping[str, Any] | None = None, addresses: Mapping[str, str] | None = None
) -> RecoverPlan:
    """What recovery will do, to which host, in order (pure). A new cluster is forced only when a
    majority of the inventory's managers is really gone: managers that are only locked (autolock,
    after a power cut) are unlocked instead, and pending ones are waited for.

    Args:
        backup: the manifest of ``--from-backup``'s archive, or None (recover from a survivor).
        addresses: inventory host -> the address it advertises (default: its inventory address).

    Raises:
        Refused: the swarm still has quorum (or had it while watched); an inventory manager cannot
            be reached; a stopped manager holds raft state; a majority of managers is still there;
            no state to recover from.
    """
    inv = state.inventory
    with_quorum = sorted(n for n, h in state.hosts.items() if h.quorum)
    if state.quorum_seen and not with_quorum:
        with_quorum = [state.quorum_seen]
    if with_quorum:
        what = "restoring a backup would replace it" if backup else "there is nothing to recover"
        when = " for a moment while watched" if not any(h.quorum for h in state.hosts.values()) else ""
        raise Refused(
            f"the swarm has quorum ({', '.join(with_quorum)} lists its nodes{when}): {what}. To replace lost or "
            "broken hosts, run `swarmctl bootstrap`; to restore a backup, make the hosts leave the swarm first"
        )
    lost = [m.name for m in inv.managers if m.name in state.unreachable]
    if lost:
        why = "; ".join(f"{n} ({state.unreachable[n]})" for n in lost)
        raise Refused(
            f"refusing to recover while inventory managers cannot be reached: {why}. Each may hold newer raft state "
            "and would come back as a second swarm: bring it back (its engine may stay stopped), or take it out "
            "of the inventory if it is gone for good"
        )
    warnings = [
        f"{n}: unreachable ({why}): left alone; run bootstrap once it answers"
        for n, why in sorted(state.unreachable.items())
    ]
    holding = sorted(n for n, h in state.hosts.items() if h.state == STOPPED and h.raft is not None)
    if holding:
        where = ", ".join(f"{n}: {state.hosts[n].root}/swarm/raft" for n in holding)
        raise Refused(
            f"the engine of {', '.join(holding)} is stopped, and it holds raft state: start it first "
            "(`systemctl start docker`): the swarm may regain its quorum by itself; run recover again if it does not "
            f"(raft state found at {where})"
        )
    managers = [m.name for m in inv.managers]
    alive = [n for n in managers if (h := state.hosts.get(n)) is not None and h.state in ALIVE]
    locked = [n for n in alive if state.hosts[n].state == LOCKED]
    need = majority(len(managers))
    if len(alive) >= need:
        if backup is not None:
            once = f" once {', '.join(locked)} {'is' if len(locked) == 1 else 'are'} unlocked (`swarmctl unlock`)"
            raise Refused(
                f"{len(alive)} of the {len(managers)} inventory managers are still in the swarm ({', '.join(alive)}): "
                "a majority, so the swarm can regain its quorum by itself"
                + (once if locked else "")
                + "; restoring a backup would discard it. Make every host leave the swarm first to restore anyway"
            )
        if not locked:
            pending = [n for n in alive if state.hosts[n].state == PENDING]
            raise Refused(
                f"{len(alive)} of the {len(managers)} inventory managers are still in the swarm ({', '.join(alive)}), "
                f"a majority, yet none had quorum for {state.window:g}s"
                + (f" ({', '.join(pending)} still pending: starting or electing)" if pending else "")
                + ": they may still be electing a leader, or cannot reach each other on 2377/tcp. Wait and run "
                "`swarmctl recover --plan` again; forcing a new cluster now would split the swarm"
            )
        changes = [Change("node", n, "unlock", detail="with the stored unlock key: it takes part again")
                   for n in locked]  # fmt: skip
        changes.append(Change("swarm", "quorum", "wait", detail=f"until a manager lists the nodes (a majority of "
                              f"{len(managers)} is there once unlocked): no new cluster is forced"))  # fmt: skip
        return RecoverPlan("", False, True, (), (), Plan(tuple(changes), tuple(warnings)), (), tuple(locked))
    stopped = [h.name for h in inv.hosts if (s := state.hosts.get(h.name)) is not None and s.state == STOPPED]
    if backup is not None:
        source = restore_target(inv, backup, addresses or {})
        detail = f"swarm {str(backup.get('swarm_id', ''))[:12]} at raft index {backup.get('raft_index')}"
        restore = [
            Change("node", source, "stop", detail="its engine: systemctl stop docker"),
            Change("node", source, "restore", detail=f"the backup's swarm state, {detail}; its own moved aside"),
            Change("node", source, "start", detail="its engine"),
        ]
        unlock = bool(backup.get("autolock"))
    else:
        candidates = [(h.raft.key, -i, m.name) for i, m in enumerate(inv.managers)
                      if (h := state.hosts.get(m.name)) is not None and h.raft is not None]  # fmt: skip
        if not candidates:
            raise Refused(
                "no reachable inventory manager holds swarm state to recover from: restore a backup with "
                "`swarmctl recover --from-backup FILE`"
            )
        source = max(candidates)[2]
        raft = state.hosts[source].raft
        assert raft is not None
        detail = f"the most recent raft state ({raft.describe()})"
        restore = []
        unlock = state.hosts[source].state == LOCKED
    changes = [Change("node", n, "start", detail="its engine (no swarm state on it)") for n in stopped]
    changes += restore
    if unlock:
        changes.append(Change("node", source, "unlock", detail="with the stored unlock key"))
    changes.append(Change("swarm", source, "force-new-cluster", detail=f"a one-manager swarm of {detail}"))
    leave = []
    join = []
    for host in inv.hosts:
        h = state.hosts.get(host.name)
        if host.name == source or h is None:
            continue
        # a worker still in the swarm reconnects to the new cluster by itself; any other state
        # belongs to the lost cluster (or to a backup's past)
        keeps = not host.is_manager and h.state == ACTIVE and backup is None
        if h.state not in (INACTIVE, STOPPED) and not keeps:
            leave.append(host.name)
            changes.append(Change("swarm", host.name, "leave", detail="its state of the lost swarm (force)"))
        if not keeps:
            join.append((host.name, host.role))
    for name, role in join:
        changes.append(Change("node", name, f"join-{role}", detail=f"as {role} with a fresh token, its stale "
                              "node removed first (bootstrap)"))  # fmt: skip
    changes.append(Change("swarm", "services", "wait", detail="until every service runs its tasks again"))
    return RecoverPlan(source, backup is not None, unlock, tuple(leave), tuple(join),
                       Plan(tuple(changes), tuple(warnings)), tuple(stopped),
                       kept=kept_settings(backup, unlock))  # fmt: skip


# -- apply -----------------------------------------------------------------------------------------


def recover(
    session: Session,
    from_backup: Path | None = None,
    plan_only: bool = False,
    notify: Notify = quiet,
    converge_timeout: float = CONVERGE_TIMEOUT,
    window: float = QUORUM_WINDOW,
) -> Report:
    """Plan and (unless ``plan_only``) carry out the recovery. When engines are started first, the
    swarm is read and planned again before anything is forced: a started manager may have given
    the quorum back, or hold newer state.

    Returns:
        A Report; ``data``: ``source`` ("" when unlocking brought the quorum back), ``services``
        (name -> running/desired after the wait).
    """
    manifest = archive = None
    if from_backup is not None:
        manifest, archive = open_backup(from_backup, keyring())  # authenticated before anything changes
        problem = archive_problem(archive)
        if problem:
            raise InputError(f"the backup's archive cannot be restored: {problem}", from_backup)
    state = read_recover(session, window)
    addresses = _addresses(session, state)
    planned = plan_recover(state, manifest, addresses)
    report = Report(plan=planned.plan, warnings=list(planned.plan.warnings))
    report.data["source"] = planned.source
    if plan_only:
        return report
    inv = session.inventory
    changes = iter(planned.plan.changes)
    candidates = stored_keys(inv) if planned.unlock else []  # read before anything changes

    if not planned.forces:
        return _unlock_quorum(session, planned, candidates, report, changes, notify)

    def start(h: Host) -> None:
        systemctl_docker(session, h, "start", STOP_TIMEOUT)
        _wait_engine(session, h)

    started = session.fan_out(start, [inv.host(n) for n in planned.start])
    for name in planned.start:
        report.record(next(changes), started[name].error, host=name, notify=notify)
    if planned.start:
        # an engine just started may hold what was not seen while it was stopped: look again
        why = _changed(planned, session, manifest, window)
        if why:
            report.failures["recover"] = why
            return report
    host = inv.host(planned.source)
    if archive is not None:
        _restore(session, host, state.hosts[host.name].root or DEFAULT_ROOT, archive, notify)
        for _ in range(3):
            report.done(next(changes), notify=notify)
    engine = session.engine(host)
    if planned.unlock:
        if read_membership(engine).locked:
            unlock_with(engine, candidates)
            wait_active(engine, SETTLE_TIMEOUT)
        report.done(next(changes), notify=notify)
    engine.init_swarm(advertise_address(session, host), f"0.0.0.0:{SWARM_PORT}", force_new_cluster=True,
                      spec=planned.kept)  # fmt: skip
    _wait_quorum(engine, SETTLE_TIMEOUT)
    report.done(next(changes), notify=notify)
    try:
        if engine.inspect_swarm().get("RootRotationInProgress"):
            known = "CAConfig" in (planned.kept or {})
            report.warn([ROTATING.format(planned.source, "" if known else UNKNOWN_COUNT)])
    except HostError as e:  # only a warning depends on it: the recovery goes on
        log.debug("%s: the swarm not read after the force: %s", planned.source, e.message)

    def leave(h: Host) -> None:
        session.engine(h).leave_swarm(force=True)

    left = session.fan_out(leave, [inv.host(n) for n in planned.leave])
    for name in planned.leave:
        report.record(next(changes), left[name].error, host=name, notify=notify)

    joined = bootstrap(session, notify=notify, witness=False).report
    report.warn(joined.warnings)
    report.failures.update(joined.failures)
    report.results += joined.results
    wait = planned.plan.changes[-1]
    if joined.failures:
        report.results.append(Result(wait, NOT_STARTED, "the hosts did not all join"))
        return report
    deadline = time.monotonic() + converge_timeout
    engine = session.engine(host)
    watch = _Untaken(engine, read_membership(engine).node_id)
    try:
        try:
            report.data["services"] = wait_services_running(engine, converge_timeout, notify, watch)
        except _Stuck as stuck:
            _restart_source(session, host, watch.node_id, candidates, stuck, report, notify)
            rest = max(deadline - time.monotonic(), SETTLE_TIMEOUT)
            report.data["services"] = wait_services_running(session.engine(host), rest, notify)
        report.done(wait, notify=notify)
    except TimeoutExpired as e:
        report.failed(wait, str(e), "services")
    return report


ROTATING = (
    "{}: the new cluster is rotating its root CA{}: the rotation ends by itself once every node holds a "
    "certificate of the new root; a join that meets its end is retried with the new join token"
)
UNKNOWN_COUNT = (
    " (a force-new-cluster starts one when the cluster's root CA was rotated before and its rotation count is "
    "not known: recovery from a survivor, or a backup of an earlier release)"
)


class _Stuck(Exception):
    def __init__(self, tasks: list[str]) -> None:
        super().__init__(", ".join(tasks))
        self.tasks = tasks


def untaken(tasks: Sequence[Mapping[str, Any]], first_seen: dict[str, float], now: float) -> list[str]:
    """IDs of the tasks still "assigned" (the node's agent never took them up) for STUCK_AFTER
    seconds of this clock (pure but for ``first_seen``, which it keeps: task ID -> first seen)."""
    assigned = {str(t.get("ID", "")) for t in tasks if (t.get("Status") or {}).get("State") == "assigned"}
    for gone in set(first_seen) - assigned:
        del first_seen[gone]
    for tid in assigned:
        first_seen.setdefault(tid, now)
    return sorted(tid for tid in assigned if now - first_seen[tid] >= STUCK_AFTER)


class _Untaken:
    """The services wait's stall test: raises _Stuck once a task given to the forced node has stayed
    "assigned" for STUCK_AFTER seconds (see RESTART_WHY)."""

    def __init__(self, engine: Engine, node_id: str) -> None:
        self.engine, self.node_id, self.first_seen = engine, node_id, dict[str, float]()

    def __call__(self) -> None:
        tasks = self.engine.tasks({"node": [self.node_id], "desired-state": ["running"]})
        stuck = untaken(tasks, self.first_seen, time.monotonic())
        if stuck:
            services = read_services(self.engine)
            by_id = {str(t.get("ID", "")): t for t in tasks}
            raise _Stuck([v.name for v in task_views([by_id[i] for i in stuck], services)])


def _restart_source(session: Session, host: Host, node_id: str, candidates: list[str], stuck: _Stuck,
                    report: Report, notify: Notify) -> None:  # fmt: skip
    """The forced manager's engine restarted (the joined managers keep the quorum meanwhile) and
    waited for: its node Ready and reachable (unlocked with the stored keys under autolock).
    Reported as a change of its own; a restart that fails is said and the wait goes on."""
    change = Change("node", host.name, "restart-engine", detail=RESTART_WHY.format(STUCK_AFTER, stuck))
    try:
        autolock = autolock_on(session.engine(host).inspect_swarm())
        keys = candidates or (stored_keys(session.inventory) if autolock else [])
        notify(f"restarting the engine of {host.name}: {change.detail}")
        with finishing(f"restarting the engine of {host.name}", notify):
            systemctl_docker(session, host, "restart", STOP_TIMEOUT)
        others = [m.name for m in session.inventory.managers if m.name != host.name]
        back = HostChange(host.name, None, None, (), (), True, in_swarm=True, manager=True, node_id=node_id)
        wait_back(session, host, back, others, BACK_TIMEOUT, keys)
        report.done(change, notify=notify)
    except (HostError, InputError) as e:
        report.results.append(Result(change, FAILED, str(e)))
        report.warn([f"{host.name}: its engine was restarted for tasks its agent did not take up ({stuck}): {e}"])


def _addresses(session: Session, state: RecoverState) -> dict[str, str]:
    """The address each reachable manager advertises (a backup names its manager by it)."""
    out = {}
    for host in session.inventory.managers:
        if host.name in state.hosts:
            try:
                out[host.name] = advertise_address(session, host)
            except HostError:
                continue
    return out


def _changed(planned: RecoverPlan, session: Session, manifest: Mapping[str, Any] | None, window: float) -> str:
    """Why the recovery must not go on once the stopped engines run ("" when it may): the plan made
    from the swarm as it is now is no longer the one being carried out."""
    try:
        state = read_recover(session, window)
        again = plan_recover(state, manifest, _addresses(session, state))
    except Refused as e:
        return f"nothing was forced: once the stopped engines ran, {e}"
    if again.source != planned.source or again.relock:
        now = f"force a new cluster on {again.source}" if again.forces else "unlock " + ", ".join(again.relock)
        return (
            f"nothing was forced: once the stopped engines ran, the plan became: {now}. Run `swarmctl recover "
            "--plan` again and check it"
        )
    return ""


def _unlock_quorum(
    session: Session, planned: RecoverPlan, keys: list[str], report: Report, changes: Any, notify: Notify
) -> Report:
    """Unlock the locked managers, then wait for the swarm's own quorum: nothing is forced."""
    inv = session.inventory

    def unlock(h: Host) -> None:
        engine = session.engine(h)
        if read_membership(engine).locked:
            unlock_with(engine, keys)

    done = session.fan_out(unlock, [inv.host(n) for n in planned.relock])
    for name in planned.relock:
        report.record(next(changes), done[name].error, done[name].seconds, host=name, notify=notify)
    wait = next(changes)
    if report.failures:
        report.results.append(Result(wait, NOT_STARTED, "not every locked manager was unlocked"))
        return report
    managers = [m.name for m in inv.managers]

    def quorum() -> str | Pending:
        for name in managers:
            try:
                session.engine(name).nodes()
                return name
            except HostError as e:
                seen = f"{name}: {e.message}"
        return Pending(seen)

    try:
        until("a manager to list the nodes after the unlock", quorum, SETTLE_TIMEOUT, first=POLL, cap=POLL)
        report.done(wait, notify=notify)
    except TimeoutExpired as e:
        report.failed(wait, f"{e}: run `swarmctl recover --plan` again", "quorum")
    return report


def _restore(session: Session, host: Host, root: str, archive: bytes, notify: Notify) -> None:
    conn = session.pool.connection(host)
    try:
        systemctl_docker(session, host, "stop", STOP_TIMEOUT)
        conn.run(["sh", "-c", _RESTORE_SCRIPT, "restore", root], input=archive, timeout=STOP_TIMEOUT).check(
            "restore the backup's swarm state"
        )
    finally:
        with finishing(f"starting the engine of {host.name} again", notify):
            systemctl_docker(session, host, "start", STOP_TIMEOUT)
    _wait_engine(session, host)


def _wait_engine(session: Session, host: Host) -> None:
    def answers() -> bool:
        session.engine(host).info()
        return True

    def late(seen: str) -> HostError:
        return HostError(host.name, f"the engine does not answer after its start: {seen}")

    until(f"the engine of {host.name}", answers, SETTLE_TIMEOUT, first=POLL, cap=POLL, error=late)


def _wait_quorum(engine: Engine, timeout: float) -> None:
    def lists() -> bool:
        engine.nodes()
        return True

    until(f"the new cluster on {engine.name} to answer", lists, timeout, first=POLL, cap=POLL)
