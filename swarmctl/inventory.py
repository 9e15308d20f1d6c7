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
      w2:   {address: w2.example.com, advertise_address: 10.0.1.13, role: worker}   # see below
    vars:
      KAFKA_IMAGE: quay.io/debezium/kafka:3.1
    engine:                         # daemon.json keys for every host (a host's own `engine:` wins per key)
      registry-mirrors: [https://mirror.example.com]
      log-opts: {max-size: 10m, max-file: "3"}
    registries:                     # private registries: credentials (an encrypted secret), CA, insecure
      registry.example.com:5000: {username: ci, password_secret: registry-password, ca_file: ./ca.crt}
    swarm:                          # swarm-wide settings
      autolock: true                # lock managers (bootstrap); the unlock key is kept encrypted in secrets/
      history_limit: 10             # revisions of each stack kept in the swarm (deploy, update, rollback)

``address`` is how swarmctl reaches the host over SSH: an IP address or a DNS name. The swarm needs
an IP address for each node (the other nodes reach it there): ``advertise_address`` when given,
else ``address`` when it is one, else the address the name led swarmctl's SSH connection to -
checked, before anything changes, to be an address of the host itself.
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

from swarmctl import daemon_config
from swarmctl.errors import InputError
from swarmctl.files import write_atomic
from swarmctl.yamlfile import LineDict, load_yaml, suggest, type_name

ROLES = ("manager", "worker")
AVAILABILITIES = ("active", "pause", "drain")
HOST_KEY_POLICIES = ("reject", "accept-new")
MAX_TIMEOUT = 600  # seconds: every wait has a deadline, and a deadline of hours is none

TOP_KEYS = ("ssh", "hosts", "vars", "engine", "registries", "swarm")
SWARM_KEYS = ("autolock", "history_limit")
HISTORY_LIMIT = 10  # revisions kept per stack unless swarm.history_limit says otherwise
MAX_HISTORY_LIMIT = 100  # each revision is a config in the raft store, which every manager holds
SSH_KEYS = ("user", "port", "identity_file", "known_hosts", "host_key_policy", "sudo", "connect_timeout", "api_timeout")
HOST_KEYS = ("address", "advertise_address", "role", "labels", "availability", "ssh", "engine")
REGISTRY_KEYS = ("username", "password_secret", "ca_file", "insecure")

_NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,62})$")
_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?$")
_USER_RE = re.compile(r"^[a-z_][a-z0-9_.-]*\$?$", re.IGNORECASE)
_VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# a registry as image references name it: host[:port] (a dot, a colon or "localhost" makes it one)
_REGISTRY_RE = re.compile(
    r"^(localhost|[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+|[A-Za-z0-9-]+(?=:)|\[[0-9A-Fa-f:]+\])(:\d{1,5})?$"
)


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
    # the most one Docker Engine API call over this connection may take, whole (slow hosts: raise it)
    api_timeout: float = 30.0


@dataclass(frozen=True)
class Registry:
    """A private registry: its credentials (the password an encrypted secret's name), CA, trust."""

    host: str  # as image references name it: registry.example.com:5000
    username: str = ""
    password_secret: str = ""  # the name of a secret in the inventory's secrets directory
    ca_file: Path | None = None
    insecure: bool = False
    line: int = 0

    @property
    def has_credentials(self) -> bool:
        return bool(self.username and self.password_secret)


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    role: str
    labels: Mapping[str, str]
    availability: str | None  # None: leave the node's availability as it is
    ssh: SSHSettings
    line: int = 0  # where the host is defined, for later error messages
    # daemon.json keys swarmctl owns on this host: the inventory's `engine:`, the host's own over
    # it, and the registries marked insecure added to insecure-registries
    engine: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    advertise_address: str = ""  # the IP address the swarm knows it by; "" to find it (facts.host)

    @property
    def is_manager(self) -> bool:
        return self.role == "manager"

    @property
    def ip_address(self) -> str:
        """The IP address the inventory gives for it (advertise_address, else an IP ``address``), "" for none."""
        if self.advertise_address:
            return self.advertise_address
        return self.address if is_ip(self.address) else ""


@dataclass(frozen=True)
class Inventory:
    path: Path
    hosts: tuple[Host, ...]
    vars: Mapping[str, str]
    warnings: tuple[str, ...] = ()
    registries: Mapping[str, Registry] = field(default_factory=lambda: MappingProxyType({}))
    # daemon.json keys the inventory names anywhere (with `engine:` blocks or insecure registries)
    engine_keys: frozenset[str] = frozenset()
    autolock: bool | None = None  # swarm.autolock; None: leave the swarm's setting as it is
    history_limit: int = HISTORY_LIMIT  # swarm.history_limit: revisions kept per stack

    @property
    def secrets_dir(self) -> Path:
        """Where the inventory's encrypted secrets live (registry passwords, the unlock key)."""
        return self.path.resolve().parent / "secrets"

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

        engine = self.engine(top["engine"], "engine", top.line_of("engine")) if "engine" in top else {}
        registries = self.registries(top["registries"], top.line_of("registries")) if "registries" in top else {}
        insecure = [r.host for r in registries.values() if r.insecure]
        if insecure:
            engine["insecure-registries"] = list(dict.fromkeys([*engine.get("insecure-registries", []), *insecure]))

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
            host = self.host(name, spec, line, defaults, ssh_block, engine)
            key = host.address.lower()
            if key in addresses:
                raise self.error(
                    f"host {host.name!r}: address {host.address} is already used by host {addresses[key]!r}", line
                )
            addresses[key] = host.name
            if host.ip_address and host.ip_address != host.address:
                ip = host.ip_address.lower()
                if ip in addresses and addresses[ip] != host.name:
                    raise self.error(
                        f"host {host.name!r}: advertise_address {host.ip_address} is already used by host "
                        f"{addresses[ip]!r}",
                        line,
                    )
                addresses[ip] = host.name
            hosts.append(host)

        managers = [h for h in hosts if h.is_manager]
        if not managers:
            raise self.error("no manager: at least one host needs `role: manager`", hosts_line)

        variables = self.variables(top.get("vars"), top.line_of("vars")) if "vars" in top else {}
        autolock, history_limit = self.swarm_settings(top.get("swarm"), top.line_of("swarm"))

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
            registries=MappingProxyType(registries),
            engine_keys=frozenset(k for h in hosts for k in h.engine),
            autolock=autolock,
            history_limit=history_limit,
        )

    def swarm_settings(self, value: Any, line: int) -> tuple[bool | None, int]:
        """The `swarm:` block: ``autolock`` (a boolean; None when not given) and ``history_limit``
        (revisions kept per stack, 2..MAX_HISTORY_LIMIT: one fewer than 2 leaves nothing to roll back to)."""
        if value is None:
            return None, HISTORY_LIMIT
        block = self.mapping(value, "swarm", line)
        self.check_keys(block, SWARM_KEYS, "swarm")
        autolock = block.get("autolock")
        if "autolock" in block and not isinstance(autolock, bool):
            raise self.error(
                f"swarm.autolock: expected true or false, got {type_name(autolock)}", block.line_of("autolock")
            )
        limit = block.get("history_limit", HISTORY_LIMIT)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 2 <= limit <= MAX_HISTORY_LIMIT:
            raise self.error(
                f"swarm.history_limit: expected a whole number from 2 to {MAX_HISTORY_LIMIT} (revisions kept per "
                f"stack), got {limit!r}",
                block.line_of("history_limit"),
            )
        return autolock, limit

    def engine(self, value: Any, where: str, line: int) -> dict[str, Any]:
        """An `engine:` block: daemon.json keys, each checked for its type (daemon_config)."""
        if value is None:
            return {}
        block = self.mapping(value, where, line)
        out: dict[str, Any] = {}
        for key, val in block.items():
            kline = block.line_of(key)
            if not isinstance(key, str) or key not in daemon_config.KEYS:
                raise self.error(
                    f"{where}: {key!r} is not a daemon.json key swarmctl manages"
                    + suggest(str(key), tuple(daemon_config.KEYS), list_all=True),
                    kline,
                )
            try:
                out[key] = daemon_config.check(key, val)
            except ValueError as e:
                raise self.error(f"{where}.{key}: {e}", kline) from None
        return out

    def registries(self, value: Any, line: int) -> dict[str, Registry]:
        if value is None:
            return {}
        block = self.mapping(value, "registries", line)
        out: dict[str, Registry] = {}
        for host, spec in block.items():
            rline = block.line_of(host)
            if not isinstance(host, str) or not _REGISTRY_RE.match(host):
                raise self.error(
                    f"registries: {host!r} is not a registry host as image names give it (host[:port], no scheme)",
                    rline,
                )
            where = f"registries.{host}"
            spec = self.mapping(spec if spec is not None else {}, where, rline)
            self.check_keys(spec, REGISTRY_KEYS, where)
            values: dict[str, Any] = {}
            for key in ("username", "password_secret"):
                if key in spec:
                    v = spec[key]
                    if not isinstance(v, str) or not v.strip():
                        raise self.error(f"{where}.{key} must be a string, not {type_name(v)}", spec.line_of(key))
                    values[key] = v
            if ("username" in values) != ("password_secret" in values):
                raise self.error(
                    f"{where}: username and password_secret go together (the password is the secret of that name "
                    "in secrets/: `swarmctl secrets set NAME`)",
                    rline,
                )
            if "ca_file" in spec:
                values["ca_file"] = self.existing_file(spec, "ca_file", where)
            if "insecure" in spec:
                if not isinstance(spec["insecure"], bool):
                    raise self.error(f"{where}.insecure must be true or false", spec.line_of("insecure"))
                values["insecure"] = spec["insecure"]
            out[host] = Registry(host=host, line=rline, **values)
        return out

    def host(
        self,
        name: Any,
        spec: Any,
        line: int,
        defaults: SSHSettings,
        ssh_block: LineDict | None,
        engine: Mapping[str, Any] | None = None,
    ) -> Host:
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
        advertise = spec.get("advertise_address", "")
        if "advertise_address" in spec and (not isinstance(advertise, str) or not is_ip(advertise)):
            raise self.error(
                f"host {name!r}: advertise_address must be an IP address of the host, not {advertise!r} (the "
                "swarm refuses names: the other nodes reach this one at that address)",
                spec.line_of("advertise_address"),
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
        merged = dict(engine or {})
        if "engine" in spec:
            merged.update(self.engine(spec["engine"], f"host {name!r} engine", spec.line_of("engine")))
        return Host(
            name=name,
            address=address,
            role=role,
            labels=MappingProxyType(labels),
            availability=availability,
            ssh=ssh,
            line=line,
            engine=MappingProxyType(merged),
            advertise_address=advertise,
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
        for key in ("connect_timeout", "api_timeout"):
            if key not in block:
                continue
            t = block[key]
            if (
                isinstance(t, bool)
                or not isinstance(t, (int, float))
                or not math.isfinite(t)
                or not 0 < t <= MAX_TIMEOUT
            ):
                raise self.error(
                    f"{where}: {key} must be a number of seconds above 0 and at most {MAX_TIMEOUT}, not {t!r}",
                    block.line_of(key),
                )
            values[key] = float(t)
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


def is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
        return True
    except ValueError:
        return False


def _valid_address(address: str) -> bool:
    if is_ip(address):
        return True
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
