"""Backup of the swarm's raft state, encrypted, with a manifest; read back by ``recover --from-backup``.

The order of operations (what the docker documentation asks for by hand):

1. Read (pure facts): the managers as the swarm sees them, the swarm's ID, objects and versions.
2. Plan (``plan_backup``, pure): the manager to take the copy from - one that is not the leader
   and whose stop keeps a majority of managers reachable, so quorum holds throughout. With no such
   manager (one or two managers) the swarm is unavailable while the engine is stopped: refused
   unless ``--yes``.
3. Apply: stop that engine (``systemctl stop docker``: raft files are only consistent at rest),
   archive ``<data-root>/swarm``, start the engine again - whatever happened - and wait until it is
   a reachable manager again.
4. The archive (tar.gz) is encrypted with the secrets key (raft holds the swarm's secrets and
   configs, and the node's TLS key) and written crash-safe, mode 0600, after a one-line manifest:
   swarm ID, node ID, raft index, Docker version, time, and the stacks, services, secrets, configs
   and networks it holds. The manifest is plaintext (``backup --list`` reads it without the key)
   and authenticated: the encryption binds it, so a changed manifest fails the restore.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from swarmctl import __version__, labels
from swarmctl.errors import HostError, InputError, Refused
from swarmctl.facts.daemon import read_daemon_info
from swarmctl.facts.membership import autolock_on, ca_rotations
from swarmctl.facts.nodes import NodeView
from swarmctl.facts.raft import archive_problem, read_state_archive
from swarmctl.facts.swarm import BackupState, read_backup_state
from swarmctl.files import read_regular, write_atomic
from swarmctl.interrupts import finishing
from swarmctl.inventory import majority
from swarmctl.ops.autolock import keyring, stored_keys
from swarmctl.ops.engine_config import BACK_TIMEOUT, HostChange, quorum_refusal, systemctl_docker, wait_back
from swarmctl.plan import Change, Notify, Plan, Report, quiet
from swarmctl.secretstore import Keyring, decrypt, encrypt
from swarmctl.transport.engine import Session

MAGIC = "swarmctl-backup v1"
STOP_TIMEOUT = 120.0
ARCHIVE_TIMEOUT = 300.0
MAX_ARCHIVE = 1 << 30  # what a raft directory of a few dozen hosts can be, and then some
MAX_DOWNLOAD = MAX_ARCHIVE * 4 // 3 + (1 << 20)  # the archive in base64, with its line breaks


# -- plan (pure) -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupPlan:
    host: str  # the inventory manager whose engine is stopped
    node: NodeView
    unavailable: bool  # the swarm has no quorum while it is stopped
    plan: Plan


def plan_backup(state: BackupState, yes: bool = False) -> BackupPlan:
    """The manager to copy from, and the steps (pure).

    Raises:
        Refused: no inventory manager is a ready swarm manager; or stopping any of them costs the
            swarm its quorum and ``yes`` is not given.
    """
    managers = [n for n in state.nodes if n.is_manager and n.id in state.names]
    ready = [n for n in managers if n.ready and n.reachability == "reachable"]
    order = {h.name: i for i, h in enumerate(state.inventory.managers)}
    ready.sort(key=lambda n: (n.leader, order.get(state.names[n.id], 99)))
    if not ready:
        raise Refused("no inventory manager is a ready, reachable swarm manager: nothing to back up from")
    safe = [n for n in ready if not n.leader and not quorum_refusal(list(state.nodes), n.id, n.label)]
    node = safe[0] if safe else ready[0]
    unavailable = not safe
    all_managers = [n for n in state.nodes if n.is_manager]
    if unavailable and not yes:
        raise Refused(
            f"the swarm has {len(all_managers)} manager{'s' if len(all_managers) != 1 else ''} "
            f"({len(ready)} reachable): stopping one for the backup leaves fewer than a majority "
            f"({majority(len(all_managers))}), so the swarm is unavailable while it is copied (no deploys, "
            "updates or rescheduling; running tasks keep running): run again with --yes to accept that, "
            "or add managers (3 or more) first"
        )
    host = state.names[node.id]
    warnings = (f"the swarm is unavailable while {host}'s engine is stopped for the backup",) if unavailable else ()
    changes = (
        Change("node", host, "stop", detail="its engine: systemctl stop docker"),
        Change("node", host, "archive", detail="its swarm state: raft log, certificates"),
        Change("node", host, "start", detail="its engine, and wait until it is a reachable manager again"),
    )
    return BackupPlan(host, node, unavailable, Plan(changes, warnings))


def manifest(state: BackupState, node: NodeView, host: str, engine_version: str, now: datetime) -> dict[str, Any]:
    """The manifest the archive carries (pure)."""
    stacks = sorted({str((s["Spec"].get("Labels") or {}).get(labels.NAMESPACE)) for s in state.services
                     if (s["Spec"].get("Labels") or {}).get(labels.NAMESPACE)})  # fmt: skip
    return {
        "format": MAGIC,
        "swarmctl": __version__,
        "created": now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "swarm_id": str(state.swarm.get("ID", "")),
        "node_id": node.id,
        "host": host,
        "hostname": node.hostname,
        "address": node.addr,
        "raft_index": state.raft_index,
        "docker_version": engine_version,
        "managers": sum(1 for n in state.nodes if n.is_manager),
        "autolock": autolock_on(state.swarm),
        # a forced cluster made from this backup is given the same (else it rotates its root CA)
        "ca_force_rotate": ca_rotations(state.swarm),
        "stacks": stacks,
        "services": sorted(str(s["Spec"]["Name"]) for s in state.services),
        "secrets": list(state.secrets),
        "configs": list(state.configs),
        "networks": list(state.networks),
    }


# -- the archive file ------------------------------------------------------------------------------


def _sealed_name(manifest_line: str) -> str:
    return "swarm-backup-" + hashlib.sha256(manifest_line.encode()).hexdigest()[:32]


def seal(manifest_data: Mapping[str, Any], archive: bytes, keys: Keyring) -> str:
    """The backup file's text: magic, manifest, the archive encrypted and bound to the manifest."""
    line = json.dumps(dict(manifest_data), sort_keys=True, separators=(",", ":"))
    return f"{MAGIC}\nmanifest: {line}\n" + encrypt(_sealed_name(line), archive, keys.current)


def _split(text: str, source: str) -> tuple[str, str]:
    head, _, rest = text.partition("\n")
    if head != MAGIC:
        raise InputError("not a swarmctl backup (no `swarmctl-backup v1` header)", source)
    line, _, body = rest.partition("\n")
    if not line.startswith("manifest: "):
        raise InputError("damaged backup: no manifest line", source)
    return line[len("manifest: ") :], body


def _read(path: Path) -> str:
    if not path.exists() and not path.is_symlink():
        raise InputError("no such backup file", path)
    try:
        return read_regular(path, 2 * MAX_ARCHIVE, "backups").decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("not a swarmctl backup (not text)", path) from None


def _parse_manifest(line: str, source: str) -> dict[str, Any]:
    try:
        data = json.loads(line)
    except ValueError:
        raise InputError("damaged backup: the manifest is not JSON", source) from None
    if not isinstance(data, dict) or not data.get("swarm_id"):
        raise InputError("damaged backup: the manifest names no swarm", source)
    return data


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of a backup file (no key needed; ``open_backup`` authenticates it)."""
    line, _ = _split(_read(path), str(path))
    return _parse_manifest(line, str(path))


def open_backup(path: Path, keys: Keyring) -> tuple[dict[str, Any], bytes]:
    """The manifest and the archive (tar.gz) of a backup file, authenticated and decrypted in memory.

    Raises:
        InputError: not a backup, damaged, modified, or encrypted with a key not in the keyring.
    """
    text = _read(path)
    line, body = _split(text, str(path))
    data = _parse_manifest(line, str(path))
    archive = decrypt(_sealed_name(line), body, keys, str(path))
    return data, archive


def default_output(swarm_id: str, now: datetime) -> Path:
    return Path(f"swarm-backup-{swarm_id[:12]}-{now.astimezone(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}.swarmctl")


# -- apply -----------------------------------------------------------------------------------------


def backup(
    session: Session,
    output: Path | None = None,
    yes: bool = False,
    plan_only: bool = False,
    notify: Notify = quiet,
    back_timeout: float = BACK_TIMEOUT,
) -> Report:
    """Copy one manager's swarm state into an encrypted archive; its engine runs again afterwards
    (a second Ctrl-C while it starts again is held off: it is never left stopped).

    Returns:
        A Report; ``data``: ``file``, ``manifest``, ``bytes``, ``seconds_stopped``.
    """
    keys = keyring()  # before anything stops: without a key there is nothing to encrypt with
    state = read_backup_state(session)
    planned = plan_backup(state, yes)
    report = Report(plan=planned.plan, warnings=list(planned.plan.warnings))
    if plan_only:
        return report
    # autolock: the manager comes back locked, and is unlocked with the stored key (read now)
    unlock_keys = stored_keys(session.inventory) if autolock_on(state.swarm) else []
    host = session.inventory.host(planned.host)
    engine = session.engine(host)
    daemon = read_daemon_info(engine)
    now = datetime.now(timezone.utc)
    data = manifest(state, planned.node, host.name, daemon.version, now)
    path = output or default_output(data["swarm_id"], now)
    stop, archive_step, start = planned.plan.changes
    conn = session.pool.connection(host)
    stopped_at = time.monotonic()
    archive = b""
    failure: HostError | None = None
    try:
        # inside the try: an engine stopped here is started again, even on Ctrl-C
        systemctl_docker(session, host, "stop", STOP_TIMEOUT)
        report.done(stop, notify=notify)
        archive = read_state_archive(conn, daemon.root, ARCHIVE_TIMEOUT, MAX_DOWNLOAD)
        problem = archive_problem(archive)
        if problem:
            raise HostError(host.name, f"archive the swarm state: {problem}: nothing was written")
        report.done(archive_step, notify=notify)
    except HostError as e:
        failure = e
        report.failed(archive_step, e.message, host.name)
    finally:
        # the engine runs again whatever happened above, a second Ctrl-C included
        with finishing(f"starting the engine of {host.name} again", notify):
            systemctl_docker(session, host, "start", STOP_TIMEOUT, "start the engine again")
    others = [m.name for m in session.inventory.managers if m.name != host.name]
    change = HostChange(host.name, None, None, (), (), True, in_swarm=True, manager=True, node_id=planned.node.id)
    wait_back(session, host, change, others, back_timeout, unlock_keys)
    report.done(start, notify=notify)
    report.data["seconds_stopped"] = round(time.monotonic() - stopped_at, 1)
    if failure is not None:
        return report
    data["archive_sha256"] = hashlib.sha256(archive).hexdigest()
    data["archive_bytes"] = len(archive)
    write_atomic(path, seal(data, archive, keys), 0o600)
    report.data.update(file=str(path), manifest=data, bytes=path.stat().st_size)
    return report
