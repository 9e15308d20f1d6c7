"""hosts.yml -> frozen, validated dataclasses.

Everything is checked before any connection is made; each mistake is reported as one
``FILE:LINE: message``. The format::

    ssh:                            # defaults; any host may override them in its own `ssh:` block
      user: root
      port: 22
      identity_file: ./id_ed25519   # relative paths are relative to the inventory file
      known_hosts: ./known_hosts    # default ~/.ssh/known_hosts
      host_key_policy: reject       # reject (default) | accept-new
    hosts:
      mgr1: {address: 10.0.0.11, role: manager, labels: {kafka.slot: "1"}}
      w1:   {address: 10.0.0.12, role: worker, availability: active}
    vars:
      KAFKA_IMAGE: quay.io/debezium/kafka:3.1
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from swarmctl.errors import InputError
from swarmctl.files import write_atomic
from swarmctl.yamlfile import LineDict, load_yaml, suggest, type_name

ROLES = ("manager", "worker")
AVAILABILITIES = ("active", "pause", "drain")
HOST_KEY_POLICIES = ("reject", "accept-new")
MAX_TIMEOUT = 600  # seconds: every wait has a deadline, and a deadline of hours is none

TOP_KEYS = ("ssh", "hosts", "vars")
SSH_KEYS = ("user", "port", "identity_file", "known_hosts", "host_key_policy", "sudo", "connect_timeout")
HOST_KEYS = ("address", "role", "labels", "availability", "ssh")

_NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,62})$")
_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?$")
_USER_RE = re.compile(r"^[a-z_][a-z0-9_.-]*\$?$", re.IGNORECASE)
_VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class SSHSettings:
    """How to reach a host over SSH. Defaults are documented in the module docstring."""

    user: str = "root"
    port: int = 22
    identity_file: Path | None = None  # None: the agent and ~/.ssh/id_* keys
    known_hosts: Path = field(default_factory=lambda: Path.home() / ".ssh" / "known_hosts")
    host_key_policy: str = "reject"
    sudo: bool = False  # run privileged commands through `sudo -n` (default: user is not root)
    connect_timeout: float = 10.0


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    role: str
    labels: Mapping[str, str]
    availability: str | None  # None: leave the node's availability as it is
    ssh: SSHSettings
    line: int = 0  # where the host is defined, for later error messages

    @property
    def is_manager(self) -> bool:
        return self.role == "manager"


@dataclass(frozen=True)
class Inventory:
    path: Path
    hosts: tuple[Host, ...]
    vars: Mapping[str, str]
    warnings: tuple[str, ...] = ()

    @property
    def managers(self) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if h.is_manager)

    @property
    def workers(self) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if not h.is_manager)

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)


def majority(managers: int) -> int:
    """How many of ``managers`` raft needs to agree."""
    return managers // 2 + 1


def load_inventory(path: str | Path) -> Inventory:
    """Load and validate an inventory file.

    Raises:
        InputError: with the file and line of the first problem found.
    """
    p = Path(path)
    data = load_yaml(p)
    return _Validator(p).inventory(data)


class _Validator:
    def __init__(self, path: Path):
        self.path = path
        self.base = path.resolve().parent

    def error(self, message: str, line: int | None) -> InputError:
        return InputError(message, self.path, line)

    def check_keys(self, data: LineDict, allowed: tuple[str, ...], where: str) -> None:
        for key in data:
            if key not in allowed:
                raise self.error(
                    f"unknown key {key!r} in {where}" + suggest(str(key), allowed, list_all=True), data.line_of(key)
                )

    def mapping(self, value: Any, what: str, line: int) -> LineDict:
        if not isinstance(value, dict):
            raise self.error(f"{what} must be a mapping, not {type_name(value)}", line)
        return value if isinstance(value, LineDict) else LineDict(value)

    def inventory(self, data: Any) -> Inventory:
        if data is None:
            raise self.error("the inventory is empty (expected `hosts:` with at least one manager)", 1)
        top = self.mapping(data, "the inventory", 1)
        self.check_keys(top, TOP_KEYS, "the inventory")
        if "hosts" not in top:
            raise self.error("missing required key 'hosts'", top.line or 1)

        defaults = SSHSettings()
        ssh_block: LineDict | None = None
        if "ssh" in top:
            ssh_block = self.mapping(top["ssh"], "ssh", top.line_of("ssh"))
            defaults = self.ssh_settings(ssh_block, SSHSettings(), "ssh")

        hosts_data = top["hosts"]
        hosts_line = top.line_of("hosts")
        if hosts_data is None or (isinstance(hosts_data, dict) and not hosts_data):
            raise self.error("'hosts' is empty: list at least one manager", hosts_line)
        hosts_map = self.mapping(hosts_data, "hosts", hosts_line)

        hosts: list[Host] = []
        addresses: dict[str, str] = {}
        for name, spec in hosts_map.items():
            line = hosts_map.line_of(name)
            host = self.host(name, spec, line, defaults, ssh_block)
            key = host.address.lower()
            if key in addresses:
                raise self.error(
                    f"host {host.name!r}: address {host.address} is already used by host {addresses[key]!r}", line
                )
            addresses[key] = host.name
            hosts.append(host)

        managers = [h for h in hosts if h.is_manager]
        if not managers:
            raise self.error("no manager: at least one host needs `role: manager`", hosts_line)

        variables = self.variables(top.get("vars"), top.line_of("vars")) if "vars" in top else {}

        warnings = []
        if len(managers) % 2 == 0:
            warnings.append(
                f"{len(managers)} managers: raft needs a majority ({majority(len(managers))}) to agree, so an even "
                f"number tolerates no more failures than {len(managers) - 1} managers would; use an odd number"
            )
        return Inventory(
            path=self.path,
            hosts=tuple(hosts),
            vars=MappingProxyType(variables),
            warnings=tuple(warnings),
        )

    def host(self, name: Any, spec: Any, line: int, defaults: SSHSettings, ssh_block: LineDict | None) -> Host:
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise self.error(
                f"bad host name {name!r}: use letters, digits, '.', '_' or '-' (at most 63, starting with a "
                "letter or digit)",
                line,
            )
        if spec is None:
            raise self.error(f"host {name!r} has no settings: it needs at least `address` and `role`", line)
        spec = self.mapping(spec, f"host {name!r}", line)
        self.check_keys(spec, HOST_KEYS, f"host {name!r}")
        for required in ("address", "role"):
            if required not in spec:
                raise self.error(f"host {name!r} is missing required key {required!r}", spec.line or line)

        address = spec["address"]
        if not isinstance(address, str) or not _valid_address(address):
            raise self.error(
                f"host {name!r}: address must be an IP address or a DNS name, not {address!r}",
                spec.line_of("address"),
            )
        role = spec["role"]
        if role not in ROLES:
            raise self.error(
                f"host {name!r}: role must be one of {', '.join(ROLES)}, not {role!r}", spec.line_of("role")
            )
        availability = spec.get("availability")
        if "availability" in spec and availability not in AVAILABILITIES:
            raise self.error(
                f"host {name!r}: availability must be one of {', '.join(AVAILABILITIES)}, not {availability!r}",
                spec.line_of("availability"),
            )
        labels = self.labels(spec.get("labels"), name, spec.line_of("labels")) if "labels" in spec else {}

        ssh = defaults
        if "ssh" in spec:
            block = self.mapping(spec["ssh"], f"host {name!r} ssh", spec.line_of("ssh"))
            ssh = self.ssh_settings(block, defaults, f"host {name!r} ssh", inherited=ssh_block)
        return Host(
            name=name,
            address=address,
            role=role,
            labels=MappingProxyType(labels),
            availability=availability,
            ssh=ssh,
            line=line,
        )

    def labels(self, value: Any, host: str, line: int) -> dict[str, str]:
        if value is None:
            return {}
        labels = self.mapping(value, f"host {host!r} labels", line)
        out: dict[str, str] = {}
        for key, val in labels.items():
            kline = labels.line_of(key)
            if not isinstance(key, str) or not _LABEL_KEY_RE.match(key):
                raise self.error(
                    f"host {host!r}: bad label key {key!r}: use letters, digits, '.', '-', '_' or '/'", kline
                )
            if isinstance(val, bool) or not isinstance(val, (str, int)):
                hint = " (quote it)" if isinstance(val, (bool, float)) else ""
                raise self.error(f"host {host!r}: label {key!r} must be a string, not {type_name(val)}{hint}", kline)
            out[key] = str(val)
        return out

    def variables(self, value: Any, line: int) -> dict[str, str]:
        if value is None:
            return {}
        variables = self.mapping(value, "vars", line)
        out: dict[str, str] = {}
        for key, val in variables.items():
            vline = variables.line_of(key)
            if not isinstance(key, str) or not _VAR_RE.match(key):
                raise self.error(f"bad variable name {key!r}: use letters, digits and '_'", vline)
            if isinstance(val, bool) or not isinstance(val, (str, int, float)):
                raise self.error(f"variable {key!r} must be a string, not {type_name(val)}", vline)
            out[key] = str(val)
        return out

    def ssh_settings(
        self, block: LineDict, base: SSHSettings, where: str, inherited: LineDict | None = None
    ) -> SSHSettings:
        self.check_keys(block, SSH_KEYS, where)
        values: dict[str, Any] = {}
        if "user" in block:
            user = block["user"]
            if not isinstance(user, str) or not _USER_RE.match(user):
                raise self.error(f"{where}: user must be a user name, not {user!r}", block.line_of("user"))
            values["user"] = user
        if "port" in block:
            port = block["port"]
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                raise self.error(f"{where}: port must be a number from 1 to 65535, not {port!r}", block.line_of("port"))
            values["port"] = port
        if "identity_file" in block:
            values["identity_file"] = self.existing_file(block, "identity_file", where)
        if "known_hosts" in block:
            values["known_hosts"] = self.path_value(block, "known_hosts", where)
        if "host_key_policy" in block:
            policy = block["host_key_policy"]
            if policy not in HOST_KEY_POLICIES:
                raise self.error(
                    f"{where}: host_key_policy must be one of {', '.join(HOST_KEY_POLICIES)}, not {policy!r}"
                    + (suggest(policy, HOST_KEY_POLICIES, list_all=True) if isinstance(policy, str) else ""),
                    block.line_of("host_key_policy"),
                )
            values["host_key_policy"] = policy
        if "sudo" in block:
            if not isinstance(block["sudo"], bool):
                raise self.error(f"{where}: sudo must be true or false", block.line_of("sudo"))
            values["sudo"] = block["sudo"]
        if "connect_timeout" in block:
            t = block["connect_timeout"]
            if (
                isinstance(t, bool)
                or not isinstance(t, (int, float))
                or not math.isfinite(t)
                or not 0 < t <= MAX_TIMEOUT
            ):
                raise self.error(
                    f"{where}: connect_timeout must be a number of seconds above 0 and at most {MAX_TIMEOUT}, "
                    f"not {t!r}",
                    block.line_of("connect_timeout"),
                )
            values["connect_timeout"] = float(t)
        settings = SSHSettings(**{**base.__dict__, **values})
        explicit_sudo = "sudo" in block or (inherited is not None and "sudo" in inherited)
        if not explicit_sudo:
            settings = SSHSettings(**{**settings.__dict__, "sudo": settings.user != "root"})
        return settings

    def path_value(self, block: LineDict, key: str, where: str) -> Path:
        value = block[key]
        if not isinstance(value, str) or not value.strip():
            raise self.error(f"{where}: {key} must be a file path, not {type_name(value)}", block.line_of(key))
        p = Path(os.path.expanduser(value))
        return p if p.is_absolute() else self.base / p

    def existing_file(self, block: LineDict, key: str, where: str) -> Path:
        p = self.path_value(block, key, where)
        if not p.is_file():
            raise self.error(f"{where}: {key} {block[key]} does not exist ({p})", block.line_of(key))
        return p


def _valid_address(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
        return True
    except ValueError:
        return bool(_HOSTNAME_RE.match(address)) and not address.replace(".", "").isdigit()


# -- which inventory a command uses -------------------------------------------------------------

STATE_DIR = ".swarmctl"
LAST_INVENTORY = "last-inventory"


def resolve_inventory_path(explicit: str | None, env: Mapping[str, str], cwd: Path) -> Path:
    """Pick the inventory: ``-i`` first, then ``SWARMCTL_INVENTORY``, then the last one bootstrapped here.

    Raises:
        InputError: when none of the three names one.
    """
    if explicit:
        return Path(explicit)
    if env.get("SWARMCTL_INVENTORY"):
        return Path(env["SWARMCTL_INVENTORY"])
    remembered = cwd / STATE_DIR / LAST_INVENTORY
    try:
        text = remembered.read_text(encoding="utf-8").strip()
    except OSError:
        text = ""
    if text:
        return Path(text)
    raise InputError(
        "no inventory: pass -i FILE, set SWARMCTL_INVENTORY, or run `swarmctl bootstrap FILE` in this directory first"
    )


def remember_inventory(path: Path, cwd: Path) -> None:
    """Record the inventory just bootstrapped so later commands in ``cwd`` need no ``-i``."""
    write_atomic(cwd / STATE_DIR / LAST_INVENTORY, str(path.resolve()) + "\n", 0o644)
