"""A host's engine configuration as it is now: daemon.json, swarmctl's record of what it set, the
registry CA files installed, whether systemctl is there, a restart left pending - one round trip.

The command (``READ_SCRIPT``) and its pure parse (``parse_config_read``) are apart, so the parse is
tested from recorded outputs without a host (tests/unit/facts/).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from swarmctl.errors import SwarmctlError
from swarmctl.facts.membership import OUTSIDE, Membership, parse_membership
from swarmctl.inventory import Host
from swarmctl.transport.engine import Session

CONFIG = "/etc/docker/daemon.json"
OWNED = "/etc/docker/daemon.swarmctl.json"  # the keys swarmctl set, and their values
# Written before daemon.json changes, removed once the engine runs with it: a run that died between
# the two (a crash, Ctrl-C, a lost connection) leaves it, and the next run restarts the engine even
# though daemon.json already says what the inventory wants.
PENDING = "/etc/docker/daemon.swarmctl-restart-pending"
CERTS = "/etc/docker/certs.d"

# One round trip per host: daemon.json, swarmctl's record, installed CA digests (registry names
# are arguments, never interpolated), whether systemctl is there, a pending restart.
READ_SCRIPT = r"""
for f in /etc/docker/daemon.json /etc/docker/daemon.swarmctl.json; do
  if [ -e "$f" ]; then printf '%s ' "$f"; base64 < "$f" | tr -d '\n'; echo; else echo "$f -"; fi
done
for r in "$@"; do
  f="/etc/docker/certs.d/$r/ca.crt"
  if [ -e "$f" ]; then echo "ca $r $(sha256sum < "$f" | cut -d' ' -f1)"; else echo "ca $r -"; fi
done
if command -v systemctl >/dev/null 2>&1; then echo "systemctl yes"; else echo "systemctl no"; fi
if [ -e /etc/docker/daemon.swarmctl-restart-pending ]; then echo "pending yes"; else echo "pending no"; fi
"""


@dataclass(frozen=True)
class ConfigFiles:
    """What READ_SCRIPT found on a host."""

    config: Mapping[str, Any] | None  # daemon.json; None: there is none
    owned: Mapping[str, Any]  # the keys swarmctl set there, with the values it set
    cas: Mapping[str, str]  # registry -> sha256 of its installed ca.crt ("" when none)
    systemctl: bool
    restart_pending: bool = False


@dataclass(frozen=True)
class EngineFacts:
    """What one host's engine configuration is now."""

    host: str
    config: Mapping[str, Any] | None  # daemon.json; None: there is none
    owned: Mapping[str, Any]  # the keys swarmctl set there, with the values it set
    cas: Mapping[str, str]  # registry -> sha256 of its installed ca.crt ("" when none)
    systemctl: bool
    membership: Membership = OUTSIDE  # the engine's own word on its swarm
    log_drivers: tuple[str, ...] = ()  # the engine's logging drivers (`docker info`); () when unknown
    restart_pending: bool = False  # an earlier run changed daemon.json and did not restart the engine

    @property
    def node_id(self) -> str:
        return self.membership.node_id

    @property
    def in_swarm(self) -> bool:
        return self.membership.member

    @property
    def manager(self) -> bool:
        return self.membership.manager


def _decode(value: str, path: str) -> Mapping[str, Any] | None:
    if value == "-":
        return None
    try:
        data = json.loads(base64.b64decode(value) or b"{}")
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON ({e}): fix it by hand first") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object: fix it by hand first")
    return data


def parse_config_read(output: str) -> ConfigFiles:
    """READ_SCRIPT's output -> ConfigFiles (pure).

    Raises:
        ValueError: daemon.json or the record is not a JSON object (the message says which).
    """
    files: dict[str, Mapping[str, Any] | None] = {}
    cas: dict[str, str] = {}
    systemctl = pending = False
    for line in output.splitlines():
        parts = line.split(" ")
        if parts[0] == "ca" and len(parts) == 3:
            cas[parts[1]] = "" if parts[2] == "-" else parts[2]
        elif parts[0] == "systemctl" and len(parts) == 2:
            systemctl = parts[1] == "yes"
        elif parts[0] == "pending" and len(parts) == 2:
            pending = parts[1] == "yes"
        elif len(parts) == 2 and parts[0] in (CONFIG, OWNED):
            files[parts[0]] = _decode(parts[1], parts[0])
    owned = files.get(OWNED) or {}
    return ConfigFiles(files.get(CONFIG), dict(owned.get("keys") or {}), cas, systemctl, pending)


def engine_facts(host: str, files: ConfigFiles, info: Mapping[str, Any]) -> EngineFacts:
    """The config files and ``docker info`` -> EngineFacts (pure)."""
    plugins = info.get("Plugins") or {}
    return EngineFacts(
        host=host,
        config=files.config,
        owned=files.owned,
        cas=files.cas,
        systemctl=files.systemctl,
        membership=parse_membership(info),
        log_drivers=tuple(str(d) for d in plugins.get("Log") or ()),
        restart_pending=files.restart_pending,
    )


# dockerd's last words: its unit's journal, else the unit's status (a host without journald)
_JOURNAL = ["journalctl", "-u", "docker.service", "-n", "40", "--no-pager", "-o", "cat"]
_STATUS = ["systemctl", "status", "docker", "--no-pager", "-n", "40"]


def start_failure(lines: Iterable[str]) -> str:
    """dockerd's line saying why it could not start, the newest first; "" when there is none (pure).

    A failed start is a fatal line, its configuration refused, or its last words on stderr
    ("failed to start daemon: ...", "failed to start metrics server: ...", without the level= of
    its running log, where "failed to start" may be about a container)."""
    for line in reversed(list(lines)):
        low = line.lower()
        if (
            "level=fatal" in low
            or "unable to configure the docker daemon" in low
            or ("failed to start" in low and "level=" not in low)
        ):
            return line.strip()[-300:]
    return ""


def dockerd_start_error(session: Session, host: Host) -> str:
    """Why dockerd could not start on the host, in its own words ("" when it did not say)."""
    conn = session.pool.connection(host)
    try:
        res = conn.run(_JOURNAL, timeout=30)
        lines = res.stdout.splitlines() if res.ok else []
        if not lines:
            res = conn.run(_STATUS, timeout=30)
            lines = (res.stdout + res.stderr).splitlines()
    except SwarmctlError:
        return ""
    return start_failure(lines)
