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

import contextlib
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swarmctl.errors import HostError, Refused, TimeoutExpired, Unavailable, Unreachable, message_of
from swarmctl.facts.host import SWARM_PORT
from swarmctl.facts.services import read_services, service_view
from swarmctl.inventory import Host, Inventory
from swarmctl.ops.autolock import keyring, stored_keys, unlock_with, wait_active
from swarmctl.ops.backup import STOP_TIMEOUT, open_backup
from swarmctl.ops.bootstrap import bootstrap
from swarmctl.ops.engine import systemctl_docker
from swarmctl.plan import NOT_STARTED, Change, Notify, Plan, Report, Result, quiet
from swarmctl.transport.engine import Engine, Session

DEFAULT_ROOT = "/var/lib/docker"  # where a stopped engine's state is looked for (its data-root cannot be asked)
SETTLE_TIMEOUT = 90.0  # the new cluster answering, the restored engine back
CONVERGE_TIMEOUT = 600.0
POLL = 1.0

_RAFT_SCRIPT = r"""
d="$1/swarm/raft"
[ -d "$d" ] || exit 0
find "$d" -type f \( -name '*.snap' -o -name '*.wal' \) -printf '%T@ %f\n'
"""

_RESTORE_SCRIPT = r"""
set -e
root=$1
mkdir -p "$root"
cd "$root"
if [ -e swarm ]; then mv swarm "swarm.before-restore-$(date +%Y%m%dT%H%M%S)"; fi
umask 077
tar -xzf - -C "$root"
test -d "$root/swarm/raft"
"""

_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.(snap|wal)$")


# -- read ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Raft:
    """How far a manager's raft log got: the newest snapshot's and WAL segment's index, then time."""

    snapshot: int = 0
    wal: int = 0
    mtime: float = 0.0

    @property
    def key(self) -> tuple[int, int, float]:
        return (self.snapshot, self.wal, self.mtime)

    def describe(self) -> str:
        return f"snapshot index {self.snapshot}, WAL from index {self.wal}"


def parse_raft(listing: str) -> Raft | None:
    """``find -printf '%T@ %f'`` of a raft directory -> Raft; None when it holds no raft file (pure)."""
    snap = wal = 0
    mtime = 0.0
    seen = False
    for line in listing.splitlines():
        stamp, _, name = line.strip().partition(" ")
        m = _NAME.match(name)
        if not m:
            continue
        seen = True
        index = int(m.group(2), 16)
        if m.group(3) == "snap":
            snap = max(snap, index)
        else:
            wal = max(wal, index)
        with contextlib.suppress(ValueError):
            mtime = max(mtime, float(stamp))
    return Raft(snap, wal, mtime) if seen else None


STOPPED = "stopped"  # the host answers over SSH, its engine does not


@dataclass(frozen=True)
class HostState:
    name: str
    state: str  # the engine's LocalNodeState (inactive | pending | active | error | locked), or stopped
    node_id: str
    manager: bool  # ControlAvailable
    quorum: bool  # it lists the swarm's nodes
    root: str  # DockerRootDir
    raft: Raft | None  # managers: their raft state on disk


@dataclass(frozen=True)
class RecoverState:
    inventory: Inventory
    hosts: Mapping[str, HostState]
    unreachable: Mapping[str, str]


def read_recover(session: Session) -> RecoverState:
    def one(host: Host) -> HostState:
        engine = session.engine(host)
        conn = session.pool.connection(host)
        try:
            info = engine.info()
        except Unreachable:
            # SSH answers (or this raises), the engine does not: a stopped engine, and its state on disk
            res = conn.run(["sh", "-c", _RAFT_SCRIPT, "raft", DEFAULT_ROOT], timeout=30).check("read the raft state")
            return HostState(host.name, STOPPED, "", False, False, DEFAULT_ROOT, parse_raft(res.stdout))
        swarm = info.get("Swarm") or {}
        root = str(info.get("DockerRootDir") or DEFAULT_ROOT)
        quorum = False
        if swarm.get("ControlAvailable"):
            try:
                engine.nodes()
                quorum = True
            except Unavailable:
                quorum = False
        raft = None
        if host.is_manager:
            res = conn.run(["sh", "-c", _RAFT_SCRIPT, "raft", root], timeout=30)
            raft = parse_raft(res.check("read the raft state").stdout)
        return HostState(
            host.name,
            str(swarm.get("LocalNodeState") or "inactive"),
            str(swarm.get("NodeID") or ""),
            bool(swarm.get("ControlAvailable")),
            quorum,
            root,
            raft,
        )

    seen = session.fan_out(one)
    hosts = {n: o.value for n, o in seen.items() if o.value is not None}
    unreachable = {n: message_of(o.error) for n, o in seen.items() if o.error}
    return RecoverState(session.inventory, hosts, unreachable)


# -- plan (pure) -----------------------------------------------------------------------------------


def restore_target(inventory: Inventory, backup: Mapping[str, Any]) -> str:
    """The inventory manager a backup can be restored on: the one at the address the backup was
    taken at (pure). Swarm state names its manager's address in the raft membership, and
    ``--force-new-cluster`` keeps it (docker/docs#7931, docker/for-linux#523): restored anywhere
    else, joins are sent to the old address.

    Raises:
        Refused: no inventory manager has that address.
    """
    address = str(backup.get("address", ""))
    for host in inventory.managers:
        if (address and host.address == address) or (not address and host.name == backup.get("host")):
            return host.name
    where = f"{address} ({backup.get('host', '?')})" if address else f"host {backup.get('host', '?')}"
    raise Refused(
        f"the backup was taken on {where}, and no inventory manager has that address: swarm state can only be "
        "restored on a host at the address it was taken at (its raft membership names it, and "
        "--force-new-cluster keeps it): give a manager that address, or name it in the inventory"
    )


@dataclass(frozen=True)
class RecoverPlan:
    source: str  # the manager the new cluster is made on
    restore: bool  # from a backup archive
    unlock: bool
    leave: tuple[str, ...]
    join: tuple[tuple[str, str], ...]  # (host, role) that bootstrap joins
    plan: Plan
    start: tuple[str, ...] = ()  # hosts whose engine is started first (stopped, no swarm state)


def plan_recover(state: RecoverState, backup: Mapping[str, Any] | None = None) -> RecoverPlan:
    """What recovery will do, to which host, in order (pure).

    Args:
        backup: the manifest of ``--from-backup``'s archive, or None (recover from a survivor).

    Raises:
        Refused: the swarm still has quorum; an inventory manager cannot be reached; no state to
            recover from.
    """
    inv = state.inventory
    with_quorum = sorted(n for n, h in state.hosts.items() if h.quorum)
    if with_quorum:
        what = "restoring a backup would replace it" if backup else "there is nothing to recover"
        raise Refused(
            f"the swarm has quorum ({', '.join(with_quorum)} lists its nodes): {what}. To replace lost or broken "
            "hosts, run `swarmctl bootstrap`; to restore a backup, make the hosts leave the swarm first"
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
        raise Refused(
            f"the engine of {', '.join(holding)} is stopped, and it holds raft state: start it first "
            "(`systemctl start docker`): the swarm may regain its quorum by itself; run recover again if it does not"
        )
    stopped = [h.name for h in inv.hosts if (s := state.hosts.get(h.name)) is not None and s.state == STOPPED]
    if backup is not None:
        source = restore_target(inv, backup)
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
        unlock = state.hosts[source].state == "locked"
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
        keeps = not host.is_manager and h.state == "active" and backup is None
        if h.state not in ("inactive", STOPPED) and not keeps:
            leave.append(host.name)
            changes.append(Change("swarm", host.name, "leave", detail="its state of the lost swarm (force)"))
        if not keeps:
            join.append((host.name, host.role))
    for name, role in join:
        changes.append(Change("node", name, f"join-{role}", detail=f"as {role} with a fresh token, its stale "
                              "node removed first (bootstrap)"))  # fmt: skip
    changes.append(Change("swarm", "services", "wait", detail="until every service runs its tasks again"))
    return RecoverPlan(source, backup is not None, unlock, tuple(leave), tuple(join),
                       Plan(tuple(changes), tuple(warnings)), tuple(stopped))  # fmt: skip


# -- apply -----------------------------------------------------------------------------------------


def recover(
    session: Session,
    from_backup: Path | None = None,
    plan_only: bool = False,
    notify: Notify = quiet,
    converge_timeout: float = CONVERGE_TIMEOUT,
) -> Report:
    """Plan and (unless ``plan_only``) carry out the recovery.

    Returns:
        A Report; ``data``: ``source``, ``services`` (name -> running/desired after the wait).
    """
    manifest = archive = None
    if from_backup is not None:
        manifest, archive = open_backup(from_backup, keyring())  # authenticated before anything changes
    state = read_recover(session)
    planned = plan_recover(state, manifest)
    report = Report(plan=planned.plan, warnings=list(planned.plan.warnings))
    report.data["source"] = planned.source
    if plan_only:
        return report
    inv = session.inventory
    host = inv.host(planned.source)
    changes = iter(planned.plan.changes)
    if planned.unlock:
        candidates = stored_keys(inv)  # read before anything changes

    def start(h: Host) -> None:
        systemctl_docker(session, h, "start", STOP_TIMEOUT)
        _wait_engine(session, h)

    started = session.fan_out(start, [inv.host(n) for n in planned.start])
    for name in planned.start:
        report.record(next(changes), started[name].error, host=name, notify=notify)
    if archive is not None:
        _restore(session, host, state.hosts[host.name].root, archive)
        for _ in range(3):
            report.done(next(changes), notify=notify)
    engine = session.engine(host)
    if planned.unlock:
        if _local_state(engine) == "locked":
            unlock_with(engine, candidates)
            wait_active(engine, SETTLE_TIMEOUT)
        report.done(next(changes), notify=notify)
    engine.init_swarm(host.address, f"0.0.0.0:{SWARM_PORT}", force_new_cluster=True)
    _wait_quorum(engine, SETTLE_TIMEOUT)
    report.done(next(changes), notify=notify)

    def leave(h: Host) -> None:
        session.engine(h).leave_swarm(force=True)

    left = session.fan_out(leave, [inv.host(n) for n in planned.leave])
    for name in planned.leave:
        report.record(next(changes), left[name].error, host=name, notify=notify)

    joined = bootstrap(session, notify=notify)
    report.warn(joined.warnings)
    report.failures.update(joined.failures)
    report.results += joined.results
    wait = planned.plan.changes[-1]
    if joined.failures:
        report.results.append(Result(wait, NOT_STARTED, "the hosts did not all join"))
        return report
    try:
        report.data["services"] = wait_services(engine, converge_timeout, notify)
        report.done(wait, notify=notify)
    except TimeoutExpired as e:
        report.failed(wait, str(e), "services")
    return report


def _restore(session: Session, host: Host, root: str, archive: bytes) -> None:
    conn = session.pool.connection(host)
    try:
        systemctl_docker(session, host, "stop", STOP_TIMEOUT)
        conn.run(["sh", "-c", _RESTORE_SCRIPT, "restore", root], input=archive, timeout=STOP_TIMEOUT).check(
            "restore the backup's swarm state"
        )
    finally:
        systemctl_docker(session, host, "start", STOP_TIMEOUT)
    _wait_engine(session, host)


def _wait_engine(session: Session, host: Host) -> None:
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        try:
            session.engine(host).info()
            return
        except HostError as e:
            if time.monotonic() > deadline:
                raise HostError(host.name, f"the engine does not answer after its start: {e.message}") from e
        time.sleep(POLL)


def _local_state(engine: Engine) -> str:
    return str((engine.info().get("Swarm") or {}).get("LocalNodeState") or "")


def _wait_quorum(engine: Engine, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            engine.nodes()
            return
        except HostError as e:
            if time.monotonic() > deadline:
                raise TimeoutExpired(
                    f"{engine.name}: the new cluster does not answer after {timeout:g}s ({e.message})"
                ) from None
        time.sleep(POLL)


def wait_services(engine: Engine, timeout: float, notify: Notify = quiet) -> dict[str, str]:
    """Poll until every replicated/global service runs as many tasks as it wants; name -> "running/desired"."""
    deadline = time.monotonic() + timeout
    shown = ""
    while True:
        views = [service_view(s) for s in read_services(engine)]
        counts = {v.name: f"{v.running}/{v.desired}" for v in views}
        behind = sorted(v.name for v in views if not v.mode.endswith("-job") and v.running < v.desired)
        line = f"services: {len(views) - len(behind)}/{len(views)} running all their tasks"
        if line != shown:
            notify(line)
            shown = line
        if not behind:
            return counts
        if time.monotonic() > deadline:
            raise TimeoutExpired(
                f"services not running all their tasks after {timeout:g}s: "
                + ", ".join(f"{n} ({counts[n]})" for n in behind)
            )
        time.sleep(POLL)
