"""Compose file format 3.x, as ``docker stack deploy`` accepts it: check one file and normalize it.

Every value is checked against the format (types, known keys, units) and brought to one canonical
shape, so that merging and conversion deal with one form only:

* ``environment``/``labels``/``sysctls``: dicts; ``command``/``entrypoint``: lists (shell-split);
* ``ports``: long form dicts (short syntax expanded as docker does, ranges included);
* ``volumes``: long form dicts (short syntax parsed as docker's ParseVolume does);
* durations: nanoseconds; sizes: bytes; CPUs: nano-CPUs.

Each reference to a top-level object (network, volume, secret, config) keeps ``(file, line)`` under
the key ``"_at"`` so that a dangling reference is reported where it was written.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from swarmctl.compose.interpolate import Interpolated, Lookup
from swarmctl.errors import InputError
from swarmctl.yamlfile import LineDict, LineList, suggest, type_name

SERVICE_KEYS = (
    "build", "cap_add", "cap_drop", "cgroup_parent", "cgroupns_mode", "command", "configs", "container_name",
    "credential_spec", "depends_on", "deploy", "devices", "dns", "dns_search", "domainname", "entrypoint",
    "env_file", "environment", "expose", "external_links", "extra_hosts", "healthcheck", "hostname", "image",
    "init", "ipc", "isolation", "labels", "links", "logging", "mac_address", "network_mode", "networks",
    "oom_score_adj", "pid", "ports", "privileged", "read_only", "restart", "secrets", "security_opt", "shm_size",
    "stdin_open", "stop_grace_period", "stop_signal", "sysctls", "tmpfs", "tty", "ulimits", "user", "userns_mode",
    "volumes", "working_dir",
)  # fmt: skip

# Accepted by the format, but a swarm service has no such setting: docker stack deploy ignores them.
IGNORED_KEYS = (
    "build", "cgroup_parent", "cgroupns_mode", "container_name", "depends_on", "devices", "domainname", "expose",
    "external_links", "ipc", "links", "mac_address", "network_mode", "pid", "privileged", "security_opt",
    "shm_size", "tmpfs", "userns_mode",
)  # fmt: skip

# Not part of format 3 at all; docker's own advice for each.
FORBIDDEN_KEYS = {
    "extends": "swarm stacks have no `extends`: repeat the settings, or give them in a second -f file that "
    "overrides the first",
    "volume_driver": "define a volume in the top-level `volumes` with its driver and reference it instead",
    "volumes_from": "share a volume by defining it in the top-level `volumes` and referencing it from each service",
    "cpu_quota": "set resource limits with deploy.resources",
    "cpu_shares": "set resource limits with deploy.resources",
    "cpuset": "set resource limits with deploy.resources",
    "mem_limit": "set resource limits with deploy.resources",
    "memswap_limit": "set resource limits with deploy.resources",
}

DEPLOY_KEYS = (
    "endpoint_mode", "labels", "mode", "placement", "replicas", "resources", "restart_policy", "rollback_config",
    "update_config",
)  # fmt: skip
UPDATE_KEYS = ("delay", "failure_action", "max_failure_ratio", "monitor", "order", "parallelism")
RESTART_KEYS = ("condition", "delay", "max_attempts", "window")
PLACEMENT_KEYS = ("constraints", "max_replicas_per_node", "preferences")
HEALTH_KEYS = ("disable", "interval", "retries", "start_interval", "start_period", "test", "timeout")
NETWORK_KEYS = ("attachable", "driver", "driver_opts", "external", "internal", "ipam", "labels", "name")
VOLUME_KEYS = ("driver", "driver_opts", "external", "labels", "name")
SECRET_KEYS = ("driver", "driver_opts", "external", "file", "labels", "name", "template_driver")
CONFIG_KEYS = ("external", "file", "labels", "name", "template_driver")
TOP_KEYS = ("version", "services", "networks", "volumes", "secrets", "configs")

MODES = ("replicated", "global", "replicated-job", "global-job")
CHECKS = ("kafka", "kafka-controller", "zookeeper", "tcp")
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_OBJECT_NAME_RE = re.compile(r"^[a-zA-Z0-9._-]+$")
_CONSTRAINT_RE = re.compile(r"^\s*([A-Za-z0-9_.\-/]+)\s*(==|!=)\s*(\S.*?)\s*$")
_CONSTRAINT_KEYS = ("node.id", "node.hostname", "node.role", "node.platform.os", "node.platform.arch")
_DURATION_RE = re.compile(r"^([0-9]*(\.[0-9]*)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1, "us": 10**3, "µs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$")
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}
PROPAGATIONS = ("rprivate", "private", "rshared", "shared", "rslave", "slave")


@dataclass
class FileContext:
    """What checking one file needs besides its content."""

    file: str
    base_dir: Path
    env: Lookup  # for env_file entries without a value and `~` in bind paths
    warnings: list[str] = field(default_factory=list)


class FileChecker:
    """Check and normalize one compose file (already interpolated)."""

    def __init__(self, ctx: FileContext):
        self.ctx = ctx

    # -- primitives ------------------------------------------------------------------------------

    def error(self, path: str, message: str, line: int | None) -> InputError:
        return InputError(f"{path}: {message}" if path else message, self.ctx.file, line)

    def at(self, line: int) -> tuple[str, int]:
        return (self.ctx.file, line)

    def mapping(self, value: Any, path: str, line: int) -> LineDict:
        if not isinstance(value, dict):
            raise self.error(path, f"must be a mapping, not {type_name(value)}", line)
        if isinstance(value, LineDict):
            return value
        d = LineDict(value)
        d.line = line
        return d

    def keys(self, d: LineDict, allowed: tuple[str, ...], path: str, extensions: bool = False) -> None:
        for key in d:
            if not isinstance(key, str):
                raise self.error(path, f"keys must be strings, not {key!r}", d.line_of(key))
            if key in allowed or (extensions and key.startswith("x-")):
                continue
            raise self.error(path, f"unknown key {key!r}{suggest(key, allowed)}", d.line_of(key))

    def string(self, value: Any, path: str, line: int, numbers: bool = False) -> str:
        if isinstance(value, str):
            return str(value)
        if numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise self.error(path, f"must be a string, not {type_name(value)}", line)

    def image(self, value: Any, path: str, line: int) -> str:
        """An image reference: a string, not empty, not starting with '-', no empty tag or digest
        (``nginx:${TAG}`` with TAG unset gives ``nginx:``, which no registry serves)."""
        image = self.string(value, path, line)
        problem = ""
        if not image.strip():
            problem = "is empty"
        elif image.startswith("-"):
            problem = "starts with '-': an image reference never does"
        elif image.endswith((":", "@")) or image[-8:] == "@sha256:":
            problem = "has an empty tag or digest"
        if problem:
            unset = "; a variable in it may be unset" if isinstance(value, Interpolated) else ""
            raise self.error(path, f"{image!r} {problem}{unset}", line)
        return image

    def integer(self, value: Any, path: str, line: int, minimum: int | None = None) -> int:
        result: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            result = value
        elif isinstance(value, Interpolated) and re.fullmatch(r"[+-]?\d+", value.strip()):
            result = int(value)
        if result is None:
            raise self.error(path, f"must be an integer, not {value!r}", line)
        if minimum is not None and result < minimum:
            raise self.error(path, f"must be at least {minimum}, not {result}", line)
        return result

    def number(self, value: Any, path: str, line: int) -> float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, Interpolated):
            try:
                return float(value)
            except ValueError:
                pass
        raise self.error(path, f"must be a number, not {value!r}", line)

    def boolean(self, value: Any, path: str, line: int) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, Interpolated):
            low = value.strip().lower()
            if low in ("y", "yes", "true", "on"):
                return True
            if low in ("n", "no", "false", "off"):
                return False
        raise self.error(path, f"must be true or false, not {value!r}", line)

    def choice(self, value: Any, choices: tuple[str, ...], path: str, line: int) -> str:
        text = self.string(value, path, line)
        if text not in choices:
            raise self.error(path, f"must be one of {', '.join(choices)}, not {text!r}{suggest(text, choices)}", line)
        return text

    def duration(self, value: Any, path: str, line: int) -> int:
        """Go duration syntax (``1m30s``, ``500ms``) -> nanoseconds."""
        if not isinstance(value, str):
            raise self.error(path, f"must be a duration such as 10s or 1m30s, not {value!r}", line)
        text = value.strip()
        ns = parse_duration(text)
        if ns is None:
            raise self.error(
                path, f"bad duration {text!r}: use a number with a unit (ns, us, ms, s, m, h), e.g. 1m30s", line
            )
        return ns

    def size(self, value: Any, path: str, line: int) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 0:
                raise self.error(path, "must not be negative", line)
            return value
        if isinstance(value, str):
            parsed = parse_size(value.strip())
            if parsed is not None:
                return parsed
        raise self.error(path, f"bad size {value!r}: use bytes or a number with a unit (k, m, g), e.g. 512m", line)

    def str_list(self, value: Any, path: str, line: int, single: bool = False, numbers: bool = False) -> list[str]:
        if single and isinstance(value, str):
            return [str(value)]
        if not isinstance(value, list):
            what = "a string or a list of strings" if single else "a list of strings"
            raise self.error(path, f"must be {what}, not {type_name(value)}", line)
        lines = value.item_lines if isinstance(value, LineList) else []
        return [
            self.string(v, f"{path}[{i}]", lines[i] if i < len(lines) else line, numbers=numbers)
            for i, v in enumerate(value)
        ]

    def mapping_or_list(
        self, value: Any, path: str, line: int, sep: str = "=", allow_nil: bool = False
    ) -> dict[str, str | None]:
        """``{k: v}`` or ``["k=v", ...]`` -> dict; values become strings (None only if allow_nil)."""
        out: dict[str, str | None] = {}
        if isinstance(value, dict):
            d = self.mapping(value, path, line)
            for k, v in d.items():
                if not isinstance(k, str):
                    raise self.error(path, f"keys must be strings, not {k!r}", d.line_of(k))
                if v is None:
                    out[k] = None if allow_nil else ""
                elif isinstance(v, (str, int, float, bool)):
                    out[k] = _scalar_text(v)
                else:
                    raise self.error(f"{path}.{k}", f"must be a string or a number, not {type_name(v)}", d.line_of(k))
            return out
        if isinstance(value, list):
            items = self.str_list(value, path, line, numbers=True)
            for item in items:
                k, s, v = item.partition(sep)
                if s:
                    out[k] = v
                else:
                    out[k] = None if allow_nil else ""
            return out
        raise self.error(path, f"must be a mapping or a list of 'KEY{sep}VALUE' strings, not {type_name(value)}", line)

    # -- the file ------------------------------------------------------------------------------------

    def check(self, data: Any) -> dict[str, Any]:
        if data is None:
            raise self.error("", "the stack file is empty (expected `services:`)", 1)
        top = self.mapping(data, "", 1)
        if "name" in top:
            raise self.error(
                "the stack file",
                "`name:` is not read: the stack's name is the one given to deploy (`swarmctl deploy NAME`); remove it",
                top.line_of("name"),
            )
        self.keys(top, TOP_KEYS, "the stack file", extensions=True)
        version = top.get("version")
        if version is not None:
            text = _scalar_text(version) if isinstance(version, (str, int, float)) else None
            if text is None or not re.fullmatch(r"3(\.\d+)?", text):
                raise self.error(
                    "version",
                    f"unsupported compose file version {version!r}: swarm stacks need version 3.x",
                    top.line_of("version"),
                )
        out: dict[str, Any] = {"version": _scalar_text(version) if version is not None else "", "services": {}}
        if "services" in top and top["services"] is not None:
            services = self.mapping(top["services"], "services", top.line_of("services"))
            for name, spec in services.items():
                line = services.line_of(name)
                if not isinstance(name, str) or not _NAME_RE.match(name):
                    raise self.error("services", f"bad service name {name!r}: use letters, digits, '_', '.', '-'", line)
                out["services"][name] = self.service(name, spec, line)
        for section, checker in (
            ("networks", self.network),
            ("volumes", self.volume),
            ("secrets", self.secret),
            ("configs", self.config),
        ):
            out[section] = {}
            if section in top and top[section] is not None:
                d = self.mapping(top[section], section, top.line_of(section))
                for name, spec in d.items():
                    line = d.line_of(name)
                    if not isinstance(name, str) or not _OBJECT_NAME_RE.match(name):
                        raise self.error(section, f"bad name {name!r}: use letters, digits, '_', '.', '-'", line)
                    out[section][name] = checker(name, spec, line)
        return out

    # -- services ------------------------------------------------------------------------------------

    def service(self, name: str, spec: Any, line: int) -> dict[str, Any]:
        path = f"services.{name}"
        if spec is None:
            raise self.error(path, "is empty: a service needs at least `image`", line)
        d = self.mapping(spec, path, line)
        for key in d:
            if key in FORBIDDEN_KEYS:
                raise self.error(path, f"{key!r} is not supported: {FORBIDDEN_KEYS[key]}", d.line_of(key))
        self.keys(d, SERVICE_KEYS, path, extensions=True)
        s: dict[str, Any] = {"_at": self.at(line)}
        ignored = sorted(k for k in d if k in IGNORED_KEYS)
        if ignored:
            self.ctx.warnings.append(
                f"{self.ctx.file}:{line}: service {name}: ignoring {', '.join(ignored)} (swarm services have no such "
                "setting; docker stack deploy ignores them too)"
            )

        def ln(key: str) -> int:
            return d.line_of(key)

        for key, value in d.items():
            if key == "x-swarmctl":
                s[key] = self.swarmctl_extension(value, f"{path}.{key}", ln(key))
                continue
            if key.startswith("x-") or key in IGNORED_KEYS:
                continue
            p = f"{path}.{key}"
            k = ln(key)
            if key == "image":
                s[key] = self.image(value, p, k)
            elif key in ("hostname", "user", "working_dir", "stop_signal", "isolation"):
                s[key] = self.string(value, p, k)
            elif key == "restart":
                s[key] = self.restart(value, p, k)
            elif key in ("command", "entrypoint"):
                s[key] = self.command(value, p, k)
            elif key in ("init", "tty", "stdin_open", "read_only"):
                s[key] = self.boolean(value, p, k)
            elif key in ("cap_add", "cap_drop"):
                s[key] = self.str_list(value, p, k)
            elif key in ("dns", "dns_search"):
                s[key] = self.str_list(value, p, k, single=True)
            elif key == "env_file":
                s[key] = [str(_resolve(self.ctx.base_dir, f)) for f in self.str_list(value, p, k, single=True)]
            elif key == "environment":
                s[key] = self.mapping_or_list(value, p, k, allow_nil=True)
            elif key == "labels" or key == "sysctls":
                s[key] = self.mapping_or_list(value, p, k)
            elif key == "extra_hosts":
                s[key] = self.extra_hosts(value, p, k)
            elif key == "stop_grace_period":
                s[key] = self.duration(value, p, k)
            elif key == "oom_score_adj":
                s[key] = self.integer(value, p, k)
            elif key == "deploy":
                s[key] = self.deploy(value, p, k)
            elif key == "ports":
                s[key] = self.ports(value, p, k)
            elif key == "networks":
                s[key] = self.service_networks(value, p, k)
            elif key == "volumes":
                s[key] = self.service_volumes(value, p, k)
            elif key in ("secrets", "configs"):
                s[key] = self.file_refs(value, p, k)
            elif key == "healthcheck":
                s[key] = self.healthcheck(value, p, k)
            elif key == "logging":
                s[key] = self.logging(value, p, k)
            elif key == "ulimits":
                s[key] = self.ulimits(value, p, k)
            elif key == "credential_spec":
                cd = self.mapping(value, p, k)
                self.keys(cd, ("config", "file", "registry"), p)
                s[key] = {ck: self.string(cv, f"{p}.{ck}", cd.line_of(ck)) for ck, cv in cd.items()}
        return s

    def swarmctl_extension(self, value: Any, path: str, line: int) -> dict[str, Any]:
        """``x-swarmctl``: how verify checks a service and how updates roll it (see README)."""
        d = self.mapping(value, path, line)
        self.keys(d, ("check", "port", "rollout", "standalone"), path)
        out: dict[str, Any] = {}
        if "standalone" in d:
            # Kafka brokers that do not form one cluster, by declaration (the lab's, for one)
            out["standalone"] = self.boolean(d["standalone"], f"{path}.standalone", d.line_of("standalone"))
        if "check" in d:
            out["check"] = self.choice(d["check"], CHECKS, f"{path}.check", d.line_of("check"))
        if "port" in d:
            out["port"] = self.integer(d["port"], f"{path}.port", d.line_of("port"), minimum=1)
            _check_port(out["port"], self, f"{path}.port", d.line_of("port"))
        if "rollout" in d:
            rd = self.mapping(d["rollout"], f"{path}.rollout", d.line_of("rollout"))
            self.keys(rd, ("group", "order"), f"{path}.rollout")
            rollout: dict[str, Any] = {}
            if "group" in rd:
                rollout["group"] = self.string(rd["group"], f"{path}.rollout.group", rd.line_of("group"))
            if "order" in rd:
                rollout["order"] = self.integer(rd["order"], f"{path}.rollout.order", rd.line_of("order"))
            out["rollout"] = rollout
        if out.get("check") in CHECKS and "port" not in out:
            out["port"] = {"kafka": 9092, "kafka-controller": 9093, "zookeeper": 2181}.get(out["check"], 0) or None
            if out["port"] is None:
                raise self.error(path, "check: tcp needs a port", line)
        return out

    def restart(self, value: Any, path: str, line: int) -> str:
        text = self.string(value, path, line)
        if not re.fullmatch(r"no|always|unless-stopped|on-failure(:\d+)?", text):
            raise self.error(path, f"must be no, always, unless-stopped or on-failure[:N], not {text!r}", line)
        return text

    def command(self, value: Any, path: str, line: int) -> list[str]:
        if isinstance(value, str):
            try:
                return shlex.split(value)
            except ValueError as e:
                raise self.error(path, f"cannot split into words: {e}", line) from None
        return self.str_list(value, path, line, numbers=True)

    def extra_hosts(self, value: Any, path: str, line: int) -> list[str]:
        if isinstance(value, dict):
            hosts = self.mapping_or_list(value, path, line)
            return sorted(f"{h}:{ip}" for h, ip in hosts.items())
        items = self.str_list(value, path, line)
        for item in items:
            if ":" not in item:
                raise self.error(path, f"{item!r} must be HOST:IP", line)
        return items

    def deploy(self, value: Any, path: str, line: int) -> dict[str, Any]:
        d = self.mapping(value, path, line)
        self.keys(d, DEPLOY_KEYS, path)
        out: dict[str, Any] = {"_lines": dict(d.key_lines)}
        for key, v in d.items():
            p, k = f"{path}.{key}", d.line_of(key)
            if key == "mode":
                out[key] = self.choice(v, MODES, p, k)
            elif key == "replicas":
                out[key] = self.integer(v, p, k, minimum=0)
            elif key == "labels":
                out[key] = self.mapping_or_list(v, p, k)
            elif key in ("update_config", "rollback_config"):
                out[key] = self.update_config(v, p, k)
            elif key == "resources":
                out[key] = self.resources(v, p, k)
            elif key == "restart_policy":
                rd = self.mapping(v, p, k)
                self.keys(rd, RESTART_KEYS, p)
                r: dict[str, Any] = {}
                for rk, rv in rd.items():
                    rp, rl = f"{p}.{rk}", rd.line_of(rk)
                    if rk == "condition":
                        r[rk] = self.choice(rv, ("none", "on-failure", "any"), rp, rl)
                    elif rk == "max_attempts":
                        r[rk] = self.integer(rv, rp, rl, minimum=0)
                    else:
                        r[rk] = self.duration(rv, rp, rl)
                out[key] = r
            elif key == "placement":
                out[key] = self.placement(v, p, k)
            elif key == "endpoint_mode":
                out[key] = self.choice(v, ("vip", "dnsrr"), p, k)
        return out

    def update_config(self, value: Any, path: str, line: int) -> dict[str, Any]:
        d = self.mapping(value, path, line)
        self.keys(d, UPDATE_KEYS, path)
        out: dict[str, Any] = {}
        for key, v in d.items():
            p, k = f"{path}.{key}", d.line_of(key)
            if key == "parallelism":
                out[key] = self.integer(v, p, k, minimum=0)
            elif key in ("delay", "monitor"):
                out[key] = self.duration(v, p, k)
            elif key == "failure_action":
                out[key] = self.choice(v, ("continue", "rollback", "pause"), p, k)
            elif key == "max_failure_ratio":
                out[key] = self.number(v, p, k)
            elif key == "order":
                out[key] = self.choice(v, ("start-first", "stop-first"), p, k)
        return out

    def resources(self, value: Any, path: str, line: int) -> dict[str, Any]:
        d = self.mapping(value, path, line)
        self.keys(d, ("limits", "reservations"), path)
        out: dict[str, Any] = {}
        for key, v in d.items():
            p, k = f"{path}.{key}", d.line_of(key)
            rd = self.mapping(v, p, k)
            allowed = ("cpus", "memory", "pids") if key == "limits" else ("cpus", "memory", "generic_resources")
            self.keys(rd, allowed, p)
            r: dict[str, Any] = {}
            for rk, rv in rd.items():
                rp, rl = f"{p}.{rk}", rd.line_of(rk)
                if rk == "cpus":
                    r[rk] = self.cpus(rv, rp, rl)
                elif rk == "memory":
                    r[rk] = self.size(rv, rp, rl)
                    if isinstance(rv, int) and not isinstance(rv, bool) and 0 < rv < 4 << 20:
                        # compose reads a bare number as bytes; nobody means a limit of a few KiB
                        self.ctx.warnings.append(
                            f"{self.ctx.file}:{rl}: {rp}: {rv} is {rv} bytes (a bare number is bytes): "
                            f"did you mean {rv}M? write the unit (512M, 1G) to say so"
                        )
                elif rk == "pids":
                    r[rk] = self.integer(rv, rp, rl, minimum=0)
                elif rk == "generic_resources":
                    r[rk] = self.generic_resources(rv, rp, rl)
            out[key] = r
        return out

    def cpus(self, value: Any, path: str, line: int) -> int:
        text = _scalar_text(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else None
        try:
            amount = Decimal(text) if text is not None else None
        except InvalidOperation:
            amount = None
        if amount is None or amount < 0:
            raise self.error(path, f"must be a number of CPUs such as 0.5, not {value!r}", line)
        nano = amount * 10**9
        if nano != nano.to_integral_value():
            raise self.error(path, f"{text} is too precise (at most 9 decimals)", line)
        return int(nano)

    def generic_resources(self, value: Any, path: str, line: int) -> list[dict[str, Any]]:
        if not isinstance(value, list):
            raise self.error(path, f"must be a list, not {type_name(value)}", line)
        out = []
        for i, item in enumerate(value):
            p = f"{path}[{i}]"
            il = value.line_of(i) if isinstance(value, LineList) else line
            d = self.mapping(item, p, il)
            self.keys(d, ("discrete_resource_spec",), p)
            spec = self.mapping(d.get("discrete_resource_spec"), f"{p}.discrete_resource_spec", il)
            self.keys(spec, ("kind", "value"), f"{p}.discrete_resource_spec")
            out.append(
                {
                    "kind": self.string(spec.get("kind"), f"{p}.discrete_resource_spec.kind", spec.line_of("kind")),
                    "value": self.integer(
                        spec.get("value"), f"{p}.discrete_resource_spec.value", spec.line_of("value")
                    ),
                }
            )
        return out

    def placement(self, value: Any, path: str, line: int) -> dict[str, Any]:
        d = self.mapping(value, path, line)
        self.keys(d, PLACEMENT_KEYS, path)
        out: dict[str, Any] = {}
        if "constraints" in d:
            k = d.line_of("constraints")
            constraints = self.str_list(d["constraints"], f"{path}.constraints", k)
            lines = d["constraints"].item_lines if isinstance(d["constraints"], LineList) else []
            for i, c in enumerate(constraints):
                self.constraint(c, f"{path}.constraints[{i}]", lines[i] if i < len(lines) else k)
            out["constraints"] = constraints
        if "preferences" in d:
            k = d.line_of("preferences")
            prefs = d["preferences"]
            if not isinstance(prefs, list):
                raise self.error(f"{path}.preferences", f"must be a list, not {type_name(prefs)}", k)
            out["preferences"] = []
            for i, pref in enumerate(prefs):
                pp = f"{path}.preferences[{i}]"
                pd = self.mapping(pref, pp, prefs.line_of(i) if isinstance(prefs, LineList) else k)
                self.keys(pd, ("spread",), pp)
                out["preferences"].append(
                    {"spread": self.string(pd.get("spread"), f"{pp}.spread", pd.line_of("spread"))}
                )
        if "max_replicas_per_node" in d:
            out["max_replicas_per_node"] = self.integer(
                d["max_replicas_per_node"], f"{path}.max_replicas_per_node", d.line_of("max_replicas_per_node"), 0
            )
        return out

    def constraint(self, text: str, path: str, line: int) -> None:
        m = _CONSTRAINT_RE.match(text)
        if not m:
            raise self.error(path, f"bad constraint {text!r}: use KEY==VALUE or KEY!=VALUE", line)
        key, _, value = m.groups()
        if not (key in _CONSTRAINT_KEYS or re.fullmatch(r"(node|engine)\.labels\.\S+", key)):
            known = ", ".join(_CONSTRAINT_KEYS) + ", node.labels.<name>, engine.labels.<name>"
            raise self.error(path, f"unknown constraint key {key!r} (known: {known})", line)
        if key == "node.role" and value not in ("manager", "worker"):
            raise self.error(path, f"node.role is manager or worker, not {value!r}", line)

    def ports(self, value: Any, path: str, line: int) -> list[dict[str, Any]]:
        if not isinstance(value, list):
            raise self.error(path, f"must be a list, not {type_name(value)}", line)
        out: list[dict[str, Any]] = []
        for i, item in enumerate(value):
            p = f"{path}[{i}]"
            il = value.line_of(i) if isinstance(value, LineList) else line
            if isinstance(item, dict):
                d = self.mapping(item, p, il)
                self.keys(d, ("mode", "target", "published", "protocol"), p)
                if "target" not in d:
                    raise self.error(p, "needs `target` (the container port)", il)
                port: dict[str, Any] = {"target": self.integer(d["target"], f"{p}.target", d.line_of("target"), 1)}
                if "published" in d:
                    port["published"] = self.integer(d["published"], f"{p}.published", d.line_of("published"), 0)
                if "protocol" in d:
                    port["protocol"] = self.choice(d["protocol"], ("tcp", "udp", "sctp"), f"{p}.protocol", il)
                if "mode" in d:
                    port["mode"] = self.choice(d["mode"], ("ingress", "host"), f"{p}.mode", il)
                _check_port(port["target"], self, f"{p}.target", il)
                port["_at"] = self.at(il)
                out.append(port)
            elif isinstance(item, (int, str)) and not isinstance(item, bool):
                for port in self.short_port(str(item), p, il):
                    port["_at"] = self.at(il)
                    out.append(port)
            else:
                raise self.error(p, f"must be a port such as 8080:80 or a mapping, not {type_name(item)}", il)
        return out

    def short_port(self, text: str, path: str, line: int) -> list[dict[str, Any]]:
        """``[IP:][HOST[-HOST]:]CONTAINER[-CONTAINER][/PROTO]``, expanded like docker's nat.ParsePortSpecs."""
        spec, _, proto = text.partition("/")
        proto = proto or "tcp"
        if proto not in ("tcp", "udp", "sctp"):
            raise self.error(path, f"bad protocol {proto!r} in {text!r} (tcp, udp or sctp)", line)
        parts = spec.rsplit(":", 2)
        if len(parts) == 3:
            ip, host, container = parts
            self.ctx.warnings.append(
                f"{self.ctx.file}:{line}: {path}: ignoring the address in {text!r}: the service listens on every "
                "address (as with docker stack deploy)"
            )
            del ip
        elif len(parts) == 2:
            host, container = parts
        else:
            host, container = "", parts[0]
        c_range = _port_range(container)
        if c_range is None:
            raise self.error(path, f"bad container port {container!r} in {text!r}", line)
        if host == "":
            return [{"target": c, "published": 0, "protocol": proto, "mode": "ingress"} for c in c_range]
        h_range = _port_range(host)
        if h_range is None:
            raise self.error(path, f"bad published port {host!r} in {text!r}", line)
        if len(h_range) != len(c_range):
            raise self.error(path, f"{text!r}: published and container port ranges differ in length", line)
        return [
            {"target": c, "published": h, "protocol": proto, "mode": "ingress"}
            for h, c in zip(h_range, c_range, strict=True)
        ]

    def service_networks(self, value: Any, path: str, line: int) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        if isinstance(value, list):
            names = self.str_list(value, path, line)
            for i, n in enumerate(names):
                out[n] = {"_at": self.at(value.line_of(i) if isinstance(value, LineList) else line)}
            return out
        d = self.mapping(value, path, line)
        for n, cfg in d.items():
            p, k = f"{path}.{n}", d.line_of(n)
            entry: dict[str, Any] = {"_at": self.at(k)}
            if cfg is not None:
                cd = self.mapping(cfg, p, k)
                self.keys(cd, ("aliases", "driver_opts", "ipv4_address", "ipv6_address"), p)
                if "aliases" in cd:
                    entry["aliases"] = self.str_list(cd["aliases"], f"{p}.aliases", cd.line_of("aliases"))
                if "driver_opts" in cd:
                    entry["driver_opts"] = self.options(
                        cd["driver_opts"], f"{p}.driver_opts", cd.line_of("driver_opts")
                    )
                for addr in ("ipv4_address", "ipv6_address"):
                    if addr in cd:
                        self.string(cd[addr], f"{p}.{addr}", cd.line_of(addr))
                        self.ctx.warnings.append(
                            f"{self.ctx.file}:{cd.line_of(addr)}: {p}.{addr} is ignored: swarm assigns task addresses"
                        )
            out[str(n)] = entry
        return out

    def service_volumes(self, value: Any, path: str, line: int) -> list[dict[str, Any]]:
        if not isinstance(value, list):
            raise self.error(path, f"must be a list, not {type_name(value)}", line)
        out = []
        for i, item in enumerate(value):
            p = f"{path}[{i}]"
            il = value.line_of(i) if isinstance(value, LineList) else line
            if isinstance(item, str):
                vol = self.short_volume(str(item), p, il)
            else:
                d = self.mapping(item, p, il)
                self.keys(d, ("type", "source", "target", "read_only", "consistency", "bind", "volume", "tmpfs"), p)
                if "type" not in d:
                    raise self.error(p, "needs `type` (volume, bind, tmpfs or npipe)", il)
                vol = {"type": self.choice(d["type"], ("volume", "bind", "tmpfs", "npipe"), f"{p}.type", il)}
                for key in ("source", "target", "consistency"):
                    if key in d:
                        vol[key] = self.string(d[key], f"{p}.{key}", d.line_of(key))
                if "read_only" in d:
                    vol["read_only"] = self.boolean(d["read_only"], f"{p}.read_only", d.line_of("read_only"))
                if "bind" in d:
                    bd = self.mapping(d["bind"], f"{p}.bind", d.line_of("bind"))
                    self.keys(bd, ("propagation",), f"{p}.bind")
                    vol["bind"] = {}
                    if "propagation" in bd:
                        vol["bind"]["propagation"] = self.choice(
                            bd["propagation"], PROPAGATIONS, f"{p}.bind.propagation", bd.line_of("propagation")
                        )
                if "volume" in d:
                    vd = self.mapping(d["volume"], f"{p}.volume", d.line_of("volume"))
                    self.keys(vd, ("nocopy",), f"{p}.volume")
                    vol["volume"] = {}
                    if "nocopy" in vd:
                        vol["volume"]["nocopy"] = self.boolean(vd["nocopy"], f"{p}.volume.nocopy", vd.line_of("nocopy"))
                if "tmpfs" in d:
                    td = self.mapping(d["tmpfs"], f"{p}.tmpfs", d.line_of("tmpfs"))
                    self.keys(td, ("size",), f"{p}.tmpfs")
                    vol["tmpfs"] = {}
                    if "size" in td:
                        vol["tmpfs"]["size"] = self.size(td["size"], f"{p}.tmpfs.size", td.line_of("size"))
            if not vol.get("target"):
                raise self.error(p, "needs a target path inside the container", il)
            self.check_volume(vol, p, il)
            if vol["type"] == "bind":
                vol["source"] = self.bind_source(vol["source"])
            vol["_at"] = self.at(il)
            out.append(vol)
        return out

    def short_volume(self, text: str, path: str, line: int) -> dict[str, Any]:
        """docker's ParseVolume: ``[SOURCE:]TARGET[:OPTIONS]``; a source starting with . / or ~ is a bind."""
        if not text:
            raise self.error(path, "empty volume", line)
        parts = text.split(":")
        if any(p == "" for p in parts):
            raise self.error(path, f"bad volume {text!r}: empty part between colons", line)
        if len(parts) > 3:
            raise self.error(path, f"bad volume {text!r}: too many colons", line)
        vol: dict[str, Any] = {}
        if len(parts) == 1:
            vol["target"] = parts[0]
        else:
            vol["source"], vol["target"] = parts[0], parts[1]
        if len(parts) == 3:
            for option in parts[2].split(","):
                if option == "ro":
                    vol["read_only"] = True
                elif option == "rw":
                    vol["read_only"] = False
                elif option == "nocopy":
                    vol["volume"] = {"nocopy": True}
                elif option in PROPAGATIONS:
                    vol["bind"] = {"propagation": option}
                elif option in ("z", "Z", "consistent", "cached", "delegated"):
                    pass  # accepted and ignored, as docker does
                else:
                    raise self.error(path, f"unknown volume option {option!r} in {text!r}", line)
        source = vol.get("source", "")
        vol["type"] = "bind" if source[:1] in (".", "/", "~") else "volume"
        return vol

    def check_volume(self, vol: dict[str, Any], path: str, line: int) -> None:
        kind = vol["type"]
        allowed = {"volume": ("volume",), "bind": ("bind",), "tmpfs": ("tmpfs",), "npipe": ("bind",)}[kind]
        for option in ("volume", "bind", "tmpfs"):
            if option in vol and option not in allowed:
                raise self.error(path, f"{option} options do not apply to a {kind} mount", line)
        if kind in ("bind", "npipe") and not vol.get("source"):
            raise self.error(path, f"a {kind} mount needs a source", line)
        if kind == "tmpfs" and vol.get("source"):
            raise self.error(path, "a tmpfs mount has no source", line)

    def bind_source(self, source: str) -> str:
        if source.startswith("~"):
            home = self.ctx.env("HOME")
            if home:
                source = home + source[1:]
        if source.startswith("/"):
            return source
        return str(_resolve(self.ctx.base_dir, source))

    def file_refs(self, value: Any, path: str, line: int) -> list[dict[str, Any]]:
        if not isinstance(value, list):
            raise self.error(path, f"must be a list, not {type_name(value)}", line)
        out = []
        for i, item in enumerate(value):
            p = f"{path}[{i}]"
            il = value.line_of(i) if isinstance(value, LineList) else line
            if isinstance(item, str):
                ref: dict[str, Any] = {"source": str(item)}
            else:
                d = self.mapping(item, p, il)
                self.keys(d, ("source", "target", "uid", "gid", "mode"), p)
                if "source" not in d:
                    raise self.error(p, "needs `source`", il)
                ref = {"source": self.string(d["source"], f"{p}.source", d.line_of("source"))}
                for key in ("target", "uid", "gid"):
                    if key in d:
                        ref[key] = self.string(d[key], f"{p}.{key}", d.line_of(key), numbers=key != "target")
                if "mode" in d:
                    ref["mode"] = self.integer(d["mode"], f"{p}.mode", d.line_of("mode"), minimum=0)
            ref["_at"] = self.at(il)
            out.append(ref)
        return out

    def healthcheck(self, value: Any, path: str, line: int) -> dict[str, Any]:
        d = self.mapping(value, path, line)
        self.keys(d, HEALTH_KEYS, path)
        out: dict[str, Any] = {}
        for key, v in d.items():
            p, k = f"{path}.{key}", d.line_of(key)
            if key == "test":
                if isinstance(v, str):
                    out[key] = ["CMD-SHELL", str(v)]
                else:
                    test = self.str_list(v, p, k)
                    if test and test[0] not in ("CMD", "CMD-SHELL", "NONE"):
                        raise self.error(p, f"a test list starts with CMD, CMD-SHELL or NONE, not {test[0]!r}", k)
                    out[key] = test
            elif key == "retries":
                out[key] = self.integer(v, p, k, minimum=0)
            elif key == "disable":
                out[key] = self.boolean(v, p, k)
            else:
                out[key] = self.duration(v, p, k)
        if out.get("disable") and out.get("test"):
            raise self.error(path, "test and disable cannot be set at the same time", line)
        return out

    def logging(self, value: Any, path: str, line: int) -> dict[str, Any]:
        d = self.mapping(value, path, line)
        self.keys(d, ("driver", "options"), path)
        out: dict[str, Any] = {}
        if "driver" in d:
            out["driver"] = self.string(d["driver"], f"{path}.driver", d.line_of("driver"))
        if "options" in d:
            opts = self.mapping_or_list(d["options"], f"{path}.options", d.line_of("options"))
            out["options"] = {k: v or "" for k, v in opts.items()}
        return out

    def ulimits(self, value: Any, path: str, line: int) -> dict[str, dict[str, int]]:
        d = self.mapping(value, path, line)
        out = {}
        for name, v in d.items():
            p, k = f"{path}.{name}", d.line_of(name)
            if isinstance(v, dict):
                ud = self.mapping(v, p, k)
                self.keys(ud, ("soft", "hard"), p)
                if "soft" not in ud or "hard" not in ud:
                    raise self.error(p, "needs both soft and hard", k)
                out[str(name)] = {
                    "soft": self.integer(ud["soft"], f"{p}.soft", ud.line_of("soft")),
                    "hard": self.integer(ud["hard"], f"{p}.hard", ud.line_of("hard")),
                }
            else:
                single = self.integer(v, p, k)
                out[str(name)] = {"soft": single, "hard": single}
        return out

    # -- top-level objects ---------------------------------------------------------------------------

    def external(self, d: LineDict, path: str) -> tuple[bool, str]:
        """``external: true`` or the deprecated ``external: {name: x}`` -> (external, legacy name)."""
        v = d.get("external")
        k = d.line_of("external")
        if isinstance(v, dict):
            ed = self.mapping(v, f"{path}.external", k)
            self.keys(ed, ("name",), f"{path}.external")
            return True, self.string(ed.get("name", ""), f"{path}.external.name", k)
        return (self.boolean(v, f"{path}.external", k) if "external" in d else False), ""

    def common_object(
        self, kind: str, name: str, spec: Any, line: int, allowed: tuple[str, ...]
    ) -> tuple[dict[str, Any], LineDict]:
        path = f"{kind}.{name}"
        d = self.mapping(spec if spec is not None else LineDict(), path, line)
        self.keys(d, allowed, path, extensions=True)
        out: dict[str, Any] = {"_at": self.at(line)}
        external, legacy = self.external(d, path)
        if "name" in d:
            out["name"] = self.string(d["name"], f"{path}.name", d.line_of("name"))
            if legacy:
                raise self.error(path, "external.name and name conflict; use name only", d.line_of("name"))
        if external:
            out["external"] = True
            out["name"] = out.get("name") or legacy or name
            for key in ("driver", "driver_opts", "labels", "file", "ipam", "internal", "attachable", "template_driver"):
                if key in d:
                    raise self.error(path, f"external objects cannot set {key!r} (they exist already)", d.line_of(key))
        if "labels" in d:
            out["labels"] = {
                k: v or "" for k, v in self.mapping_or_list(d["labels"], f"{path}.labels", d.line_of("labels")).items()
            }
        if "driver" in d:
            out["driver"] = self.string(d["driver"], f"{path}.driver", d.line_of("driver"))
        if "driver_opts" in d:
            out["driver_opts"] = self.options(d["driver_opts"], f"{path}.driver_opts", d.line_of("driver_opts"))
        return out, d

    def options(self, value: Any, path: str, line: int) -> dict[str, str]:
        """A mapping of option names to string (or number) values, such as driver_opts."""
        self.mapping(value, path, line)
        return {k: v or "" for k, v in self.mapping_or_list(value, path, line).items()}

    def network(self, name: str, spec: Any, line: int) -> dict[str, Any]:
        out, d = self.common_object("networks", name, spec, line, NETWORK_KEYS)
        path = f"networks.{name}"
        for key in ("internal", "attachable"):
            if key in d:
                out[key] = self.boolean(d[key], f"{path}.{key}", d.line_of(key))
        if "ipam" in d:
            ipd = self.mapping(d["ipam"], f"{path}.ipam", d.line_of("ipam"))
            self.keys(ipd, ("driver", "config"), f"{path}.ipam")
            ipam: dict[str, Any] = {}
            if "driver" in ipd:
                ipam["driver"] = self.string(ipd["driver"], f"{path}.ipam.driver", ipd.line_of("driver"))
            if "config" in ipd:
                cfgs = ipd["config"]
                if not isinstance(cfgs, list):
                    raise self.error(f"{path}.ipam.config", "must be a list", ipd.line_of("config"))
                ipam["config"] = []
                for i, c in enumerate(cfgs):
                    cp = f"{path}.ipam.config[{i}]"
                    cd = self.mapping(c, cp, cfgs.line_of(i) if isinstance(cfgs, LineList) else line)
                    self.keys(cd, ("subnet",), cp)
                    ipam["config"].append(
                        {"subnet": self.subnet(cd.get("subnet"), f"{cp}.subnet", cd.line_of("subnet"))}
                    )
            out["ipam"] = ipam
        return out

    def subnet(self, value: Any, path: str, line: int) -> str:
        import ipaddress

        text = self.string(value, path, line)
        try:
            ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise self.error(path, f"bad subnet {text!r}: use CIDR notation such as 10.10.0.0/24", line) from None
        return text

    def volume(self, name: str, spec: Any, line: int) -> dict[str, Any]:
        out, _ = self.common_object("volumes", name, spec, line, VOLUME_KEYS)
        return out

    def secret(self, name: str, spec: Any, line: int) -> dict[str, Any]:
        return self.file_object("secrets", name, spec, line, SECRET_KEYS)

    def config(self, name: str, spec: Any, line: int) -> dict[str, Any]:
        return self.file_object("configs", name, spec, line, CONFIG_KEYS)

    def file_object(self, kind: str, name: str, spec: Any, line: int, allowed: tuple[str, ...]) -> dict[str, Any]:
        path = f"{kind}.{name}"
        if spec is None:
            raise self.error(path, "needs `file` (or `external: true`)", line)
        out, d = self.common_object(kind, name, spec, line, allowed)
        if "template_driver" in d:
            out["template_driver"] = self.string(
                d["template_driver"], f"{path}.template_driver", d.line_of("template_driver")
            )
        if out.get("external"):
            return out
        if "driver" in out:
            if "file" in d:
                raise self.error(path, "driver and file conflict; use one", d.line_of("file"))
            return out
        if "file" not in d:
            raise self.error(path, "needs `file` (or `external: true`)", line)
        rel = self.string(d["file"], f"{path}.file", d.line_of("file"))
        f = _resolve(self.ctx.base_dir, rel)
        if not f.is_file():
            raise self.error(f"{path}.file", f"{rel} does not exist ({f})", d.line_of("file"))
        out["file"] = str(f)
        return out


def check_merged_service(name: str, s: dict[str, Any]) -> None:
    """Checks that need the whole service, after every file was merged (an override may be partial)."""
    file, line = s["_at"]
    path = f"services.{name}"
    if "image" not in s:
        raise InputError(f"{path}: has no `image` (swarm services run images; `build` is not supported)", file, line)
    deploy = s.get("deploy") or {}
    mode = deploy.get("mode", "replicated")
    if "replicas" in deploy and mode in ("global", "global-job"):
        raise InputError(
            f"{path}.deploy.replicas: replicas can only be used with mode replicated or replicated-job, not {mode}",
            file,
            deploy["_lines"].get("replicas", line),
        )
    if deploy.get("endpoint_mode") == "dnsrr":
        for port in s.get("ports", []):
            if port.get("mode", "ingress") != "host" and port.get("published"):
                raise InputError(
                    f"{path}.ports: port {port['published']}:{port['target']} is published through the ingress "
                    "routing mesh, which needs endpoint_mode vip; with dnsrr publish it in `mode: host`",
                    *port["_at"],
                )


# -- helpers ---------------------------------------------------------------------------------------


def _scalar_text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return repr(v)  # 3.0 stays "3.0" as in YAML text; docker prints floats the same way
    return str(v)


def _resolve(base: Path, path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def _port_range(text: str) -> list[int] | None:
    m = re.fullmatch(r"(\d+)(?:-(\d+))?", text)
    if not m:
        return None
    start = int(m.group(1))
    end = int(m.group(2) or start)
    if not (0 < start <= end <= 65535):
        return None
    return list(range(start, end + 1))


def _check_port(port: int, checker: FileChecker, path: str, line: int) -> None:
    if not 0 < port <= 65535:
        raise checker.error(path, f"port {port} is out of range (1-65535)", line)


def parse_duration(text: str) -> int | None:
    """Go's time.ParseDuration, to nanoseconds; None when the text is not a duration."""
    if text in ("0", "+0", "-0"):
        return 0
    sign = 1
    if text[:1] in "+-":
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    if not text:
        return None
    total = Decimal(0)
    while text:
        m = _DURATION_RE.match(text)
        if not m or m.group(1) in ("", "."):
            return None
        total += Decimal(m.group(1)) * _DURATION_UNITS[m.group(3)]
        text = text[m.end() :]
    return sign * int(total)


def parse_size(text: str) -> int | None:
    """docker's units.RAMInBytes: ``512m``, ``1.5g``, ``100kb`` (binary multiples)."""
    m = _SIZE_RE.match(text)
    if not m:
        return None
    try:
        amount = Decimal(m.group(1))
    except InvalidOperation:
        return None
    return int(amount * _SIZE_UNITS[(m.group(2) or "").lower()])
