"""Autolock: the unlock key kept encrypted in the inventory's ``secrets/``, ``unlock``, ``rotate unlock-key``.

With autolock on, a manager whose engine restarts is *locked*: it holds the raft log's key
encrypted and needs the unlock key before it takes part again. swarmctl reads the key from the
swarm the moment autolock is turned on (or the key rotates) and keeps it, encrypted with the
secrets key, in ``secrets/swarm-unlock-key.enc``: in memory only otherwise, never printed or
logged, never in an argument or an error message. Keys are never forgotten, only retired: a
manager that was down while the key rotated still needs the old one, so ``unlock`` tries the
current key first and then the retired ones.

Each verb is read -> plan (pure) -> apply:

- ``plan_autolock`` / ``apply_autolock`` (used by bootstrap): the inventory's ``swarm.autolock``
  against the swarm's ``EncryptionConfig.AutoLockManagers``, and the stored key against the
  swarm's (a key rotated by hand is stored too).
- ``unlock``: every locked inventory manager, with the stored keys.
- ``rotate_unlock_key``: the current key stored first (if it is not), then rotated, then the new
  one stored with the old retired.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swarmctl.errors import EngineError, HostError, InputError, Refused
from swarmctl.facts.membership import LockState, autolock_on, find_manager, read_locks, read_membership
from swarmctl.files import read_regular, write_atomic
from swarmctl.inventory import Host, Inventory
from swarmctl.plan import Change, Notify, Plan, Report, quiet
from swarmctl.secretstore import Keyring, KeySource, decrypt, encrypt
from swarmctl.transport.engine import Engine, Session
from swarmctl.wait import Pending, until

STORE_NAME = "swarm-unlock-key"
MAX_STORE = 1 << 20  # a few keys, encrypted: kilobytes
UNLOCK_TIMEOUT = 60.0
POLL = 0.5


# -- the store -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnlockKeys:
    """The stored unlock keys of one swarm: ``current`` first, then the retired ones, newest first."""

    swarm_id: str = ""
    current: str = field(default="", repr=False)
    retired: tuple[str, ...] = field(default=(), repr=False)

    def all(self) -> list[str]:
        return [k for k in (self.current, *self.retired) if k]

    def with_current(self, key: str, swarm_id: str) -> UnlockKeys:
        """The store with ``key`` current and the previous current retired (never dropped) (pure)."""
        if key == self.current:
            return UnlockKeys(swarm_id or self.swarm_id, self.current, self.retired)
        retired = tuple(k for k in (self.current, *self.retired) if k and k != key)
        return UnlockKeys(swarm_id or self.swarm_id, key, retired)

    def retire_current(self) -> UnlockKeys:
        """Autolock off: the key is kept, retired (pure)."""
        if not self.current:
            return self
        return UnlockKeys(self.swarm_id, "", (self.current, *self.retired))

    def __repr__(self) -> str:  # never the keys, not even in a traceback
        current = "yes" if self.current else "no"
        return f"UnlockKeys(swarm_id={self.swarm_id!r}, current={current}, retired={len(self.retired)})"


def store_path(inventory: Inventory) -> Path:
    return inventory.secrets_dir / f"{STORE_NAME}.enc"


def load_keys(inventory: Inventory, keys: Keyring) -> UnlockKeys:
    """The stored unlock keys (an empty store when there is no file)."""
    path = store_path(inventory)
    if not path.exists() and not path.is_symlink():
        return UnlockKeys()
    try:
        text = read_regular(path, MAX_STORE, "unlock-key stores").decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("the stored unlock key is damaged (not text)", path) from None
    raw = decrypt(STORE_NAME, text, keys, str(path))
    try:
        data = json.loads(raw)
        return UnlockKeys(str(data.get("swarm", "")), str(data.get("current", "")), tuple(data.get("retired", [])))
    except (ValueError, AttributeError, TypeError):
        raise InputError("the stored unlock key is damaged (not the JSON swarmctl writes)", path) from None


def save_keys(inventory: Inventory, keys: Keyring, stored: UnlockKeys) -> Path:
    """Encrypt and write the store crash-safe, mode 0600; the plaintext stays in memory."""
    path = store_path(inventory)
    body = json.dumps({"swarm": stored.swarm_id, "current": stored.current, "retired": list(stored.retired)})
    write_atomic(path, encrypt(STORE_NAME, body.encode(), keys.current), 0o600)
    return path


def keyring(source: KeySource | None = None) -> Keyring:
    """The secrets key that encrypts the unlock key (from ``source``, else the environment's).

    Raises:
        InputError: there is none; says how to make one.
    """
    try:
        return (source or KeySource(os.environ)).required()
    except InputError as e:
        raise InputError(f"autolock keeps the unlock key encrypted with the secrets key: {e}") from None


# -- bootstrap's part: the inventory's setting and the stored key ------------------------------------


@dataclass(frozen=True)
class AutolockState:
    swarm_id: str
    version: int
    spec: Mapping[str, Any]
    enabled: bool
    key_stored: bool  # the swarm's current unlock key is the store's current one


def read_autolock(engine: Engine, inventory: Inventory, keys: KeySource) -> AutolockState:
    """The swarm's autolock setting, and whether the store holds its key; the secrets key is only
    loaded when autolock is on (without one, the store cannot be checked: taken as stored)."""
    swarm = engine.inspect_swarm()
    spec = dict(swarm.get("Spec") or {})
    enabled = autolock_on(swarm)
    stored = True
    ring = keys.optional() if enabled else None
    if ring is not None:
        stored = load_keys(inventory, ring).current == engine.unlock_key()
    return AutolockState(
        str(swarm.get("ID", "")), int((swarm.get("Version") or {}).get("Index", 0)), spec, enabled, stored
    )


def plan_autolock(wanted: bool | None, state: AutolockState, anchor: str) -> list[Change]:
    """Autolock on or off as the inventory says, and the key stored when it is on (pure)."""
    if wanted is None and not state.enabled:
        return []
    changes = []
    if wanted is not None and wanted != state.enabled:
        changes.append(
            Change(
                "swarm",
                anchor,
                "update",
                ("EncryptionConfig.AutoLockManagers",),
                f"autolock {'on' if wanted else 'off'}",
            )
        )
    on = state.enabled if wanted is None else wanted
    if on and (wanted != state.enabled or not state.key_stored):
        changes.append(Change("secret", STORE_NAME, "store", detail="the swarm's unlock key, encrypted"))
    return changes


def apply_autolock(
    engine: Engine,
    inventory: Inventory,
    keys: KeySource,
    state: AutolockState,
    changes: list[Change],
    report: Report,
    notify: Notify = quiet,
) -> None:
    """Apply ``plan_autolock``'s changes: the setting, then the key read and stored at once
    (autolock off without any secrets key: there is no store to retire the key in)."""
    for change in changes:
        try:
            if change.action == "update":
                on = change.detail.endswith("on")
                spec: dict[str, Any] = dict(state.spec)
                spec["EncryptionConfig"] = {**dict(spec.get("EncryptionConfig") or {}), "AutoLockManagers": on}
                engine.update_swarm(state.version, spec, what=f"turn autolock {'on' if on else 'off'}")
                ring = keys.optional()
                if not on and ring is not None:
                    stored = load_keys(inventory, ring)
                    if stored.current:
                        save_keys(inventory, ring, stored.retire_current())
            else:
                ring = keyring(keys)
                key = engine.unlock_key()
                if not key:
                    raise HostError(engine.name, "the swarm reports no unlock key although autolock is on")
                save_keys(inventory, ring, load_keys(inventory, ring).with_current(key, state.swarm_id))
        except HostError as e:
            report.failed(change, e.message, engine.name)
            return
        report.done(change, notify=notify)


# -- unlock ----------------------------------------------------------------------------------------


def plan_unlock(state: LockState) -> Plan:
    """One change per locked manager (pure)."""
    changes = tuple(Change("node", name, "unlock", detail="with the stored unlock key") for name in state.locked)
    return Plan(changes, (), dict(state.unreachable))


def unlock(
    session: Session, plan_only: bool = False, notify: Notify = quiet, timeout: float = UNLOCK_TIMEOUT
) -> Report:
    """Unlock every locked inventory manager with the stored keys (current first, then retired)."""
    state = read_locks(session)
    plan = plan_unlock(state)
    report = Report(plan=plan, failures=dict(plan.blocked))
    report.data["locked"] = list(state.locked)
    if plan_only or plan.empty:
        return report
    candidates = stored_keys(session.inventory)

    def one(host: Host) -> None:
        unlock_with(session.engine(host), candidates)
        wait_active(session.engine(host), timeout)

    done = session.fan_out(one, [session.inventory.host(n) for n in state.locked])
    for change in plan.changes:
        report.record(change, done[change.name].error, done[change.name].seconds, notify=notify)
    return report


def stored_keys(inventory: Inventory) -> list[str]:
    """Every stored unlock key, current first.

    Raises:
        InputError: none is stored (or there is no secrets key to read them with).
    """
    candidates = load_keys(inventory, keyring()).all()
    if not candidates:
        raise InputError(
            f"no unlock key is stored in {store_path(inventory)}: it is stored when bootstrap turns "
            "autolock on (inventory `swarm: {autolock: true}`); with the key at hand, run `docker swarm unlock` "
            "on each locked manager"
        )
    return candidates


def unlock_with(engine: Engine, candidates: list[str]) -> None:
    """Unlock one locked manager with the first of ``candidates`` that fits.

    Raises:
        HostError: none fits (the message never carries a key).
    """
    errors = []
    for key in candidates:
        try:
            engine.unlock_swarm(key)
            return
        except EngineError as e:
            errors.append(e.message)
    raise HostError(
        engine.name,
        f"none of the {len(candidates)} stored unlock keys unlocks it ({errors[-1]}); if its key was rotated "
        "outside swarmctl, unlock it by hand with that key",
    )


def wait_active(engine: Engine, timeout: float) -> None:
    """Poll until the engine is an active manager again (after an unlock)."""

    def active() -> bool | Pending:
        own = read_membership(engine)
        return True if own.manager else Pending(f"swarm state {own.state}")

    until(f"{engine.name}, unlocked, to be an active manager", active, timeout, first=POLL, cap=POLL)


# -- rotate unlock-key -----------------------------------------------------------------------------


def rotate_unlock_key(session: Session, notify: Notify = quiet, timeout: float = UNLOCK_TIMEOUT) -> Report:
    """A new unlock key; the old one is stored (retired) before it is rotated away.

    Raises:
        Refused: autolock is off.
    """
    inv = session.inventory
    source = KeySource(os.environ)
    keys = keyring(source)
    engine = find_manager(session)
    state = read_autolock(engine, inv, source)
    if not state.enabled:
        raise Refused(
            "autolock is off: there is no unlock key to rotate (turn it on with `swarm: {autolock: true}` in the "
            "inventory and `swarmctl bootstrap`)"
        )
    change = Change("swarm", engine.name, "rotate", ("UnlockKey",), "the unlock key; the old one is kept, retired")
    report = Report(plan=Plan((change,)))
    old = engine.unlock_key()
    stored = load_keys(inv, keys)
    if stored.current != old:
        stored = stored.with_current(old, state.swarm_id)
        save_keys(inv, keys, stored)  # the key in use now is never lost, whatever happens next
    engine.update_swarm(state.version, state.spec, rotate_unlock_key=True, what="rotate the unlock key")

    def rotated() -> str | Pending:
        new = engine.unlock_key()
        return new if new and new != old else Pending("the old unlock key")

    new = until("the swarm to report its new unlock key", rotated, timeout, first=POLL, cap=POLL)
    path = save_keys(inv, keys, stored.with_current(new, state.swarm_id))
    report.done(change, notify=notify)
    report.data.update(stored=str(path), retired=len(stored.all()))
    return report
