"""``swarmctl host-keys``: the first contact with the inventory's hosts, done safely.

Read every host's SSH host key (a handshake, no login), show its fingerprint and whether the
inventory's known_hosts knows it, and - once the user confirmed them, or with fingerprints given
that match (checked on the host's console: ``ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub``) -
record the new ones in known_hosts, crash-safe. A key that differs from the recorded one is never
written: it is refused, loudly, with what to do if the host was reinstalled. So a user never has to
choose between ``host_key_policy: reject`` and trusting blindly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swarmctl.errors import InputError, message_of
from swarmctl.facts.hostkeys import (
    CHANGED,
    NEW,
    KnownKey,
    OfferedKey,
    expected_mismatch,
    judge,
    read_offered_key,
    recorded_keys,
)
from swarmctl.inventory import Inventory
from swarmctl.plan import Change, Plan, Report
from swarmctl.transport.ssh import add_known_hosts, fan_out


@dataclass
class HostKeysOutcome:
    report: Report
    keys: list[KnownKey] = field(default_factory=list)
    known_hosts: str = ""

    def json(self) -> dict[str, Any]:
        return {**self.report.json(), "known_hosts": self.known_hosts, "keys": [k.json() for k in self.keys]}


def plan_host_keys(keys: list[KnownKey], expect: Mapping[str, str], known_hosts: str) -> Plan:
    """Record the new keys; refuse the changed ones and those not matching a given fingerprint (pure)."""
    changes = tuple(
        Change("host-key", k.offered.host, "record", (k.offered.key_type,), f"{k.offered.fingerprint} in {known_hosts}")
        for k in keys
        if k.status == NEW and k.offered.host not in expected_mismatch(keys, expect)
    )
    blocked = {
        k.offered.host: (
            f"HOST KEY CHANGED: it offers {k.offered.key_type} {k.offered.fingerprint}, {known_hosts} has "
            f"{k.recorded}. Someone may be intercepting the connection: refused. If the host was reinstalled, "
            f"remove the old key (ssh-keygen -R {k.offered.name} -f {known_hosts}) and run this again"
        )
        for k in keys
        if k.status == CHANGED
    }
    blocked.update({h: f"{why}: refused (check the fingerprint on the host's console)"
                    for h, why in expected_mismatch(keys, expect).items()})  # fmt: skip
    return Plan(changes, (), blocked)


def host_keys(
    inventory: Inventory,
    expect: Mapping[str, str] | None = None,
    confirm: Callable[[list[KnownKey]], bool] | None = None,
    plan_only: bool = False,
) -> HostKeysOutcome:
    """Read every host's key, judge it against its known_hosts, and record the new ones once
    confirmed: every new key matched a fingerprint of ``expect`` (host -> SHA256:...), or
    ``confirm`` (shown the keys: the user's yes) said yes.

    Raises:
        InputError: ``expect`` names a host the inventory does not.
    """
    expect = dict(expect or {})
    unknown = sorted(set(expect) - {h.name for h in inventory.hosts})
    if unknown:
        raise InputError(f"--expect names hosts the inventory does not: {', '.join(unknown)}")
    read = fan_out(inventory.hosts, read_offered_key)
    failures = {n: message_of(o.error) for n, o in read.items() if o.error is not None}
    files: dict[Path, list[OfferedKey]] = {}
    for h in inventory.hosts:
        offered = read[h.name].value
        if offered is not None:
            files.setdefault(h.ssh.known_hosts, []).append(offered)
    keys = [k for path, offered in files.items() for k in judge(offered, recorded_keys(path))]
    shown = ", ".join(str(p) for p in files) or ", ".join(sorted({str(h.ssh.known_hosts) for h in inventory.hosts}))
    plan = plan_host_keys(keys, expect, shown)
    report = Report(plan=plan, failures={**failures, **plan.blocked})
    outcome = HostKeysOutcome(report, keys, shown)
    if plan_only or plan.empty:
        return outcome
    to_record = {c.name for c in plan.changes}
    new = [k for k in keys if k.offered.host in to_record]
    vouched = all(k.offered.host in expect for k in new)
    if not vouched and (confirm is None or not confirm(new)):
        report.warn(["nothing recorded: confirm the fingerprints (at the prompt, --yes, or --expect HOST=SHA256:...)"])
        return outcome
    by_host = {h.name: h.ssh.known_hosts for h in inventory.hosts}
    for path in files:
        lines = [k.offered.line for k in new if by_host[k.offered.host] == path]
        if lines:
            add_known_hosts(path, lines)
    for change in plan.changes:
        report.done(change)
    return outcome
