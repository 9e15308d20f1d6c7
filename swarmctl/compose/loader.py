"""Stack files -> one checked, interpolated, merged :class:`StackConfig` (pure apart from reading files).

``swarmctl deploy NAME`` reads ``stacks/NAME/stack.yml`` (from ``./stacks``, then from the stacks
shipped with swarmctl); ``-f`` names the files instead, later ones overriding earlier ones.
Variables come from, highest first: the process environment, a ``.env`` beside the first file, the
inventory's ``vars``.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swarmctl.compose.interpolate import chain_lookup, interpolate, parse_dotenv
from swarmctl.compose.schema import FileChecker, FileContext, check_merged_service
from swarmctl.errors import InputError
from swarmctl.files import read_regular
from swarmctl.yamlfile import MAX_BYTES, load_yaml

STACK_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
SHIPPED_STACKS = Path(__file__).resolve().parent.parent / "stacks"


@dataclass(frozen=True)
class StackConfig:
    """A stack as its files describe it, in canonical form (see schema.py)."""

    name: str
    files: tuple[Path, ...]
    services: dict[str, dict[str, Any]]
    networks: dict[str, dict[str, Any]]
    volumes: dict[str, dict[str, Any]]
    secrets: dict[str, dict[str, Any]]
    configs: dict[str, dict[str, Any]]
    warnings: tuple[str, ...] = ()
    digest: str = ""  # sha256 of the files' bytes, in order: what a revision records (ops.history)


def check_stack_name(name: str) -> None:
    if not STACK_NAME_RE.match(name) or len(name) > 63:
        raise InputError(f"bad stack name {name!r}: use letters, digits, '_', '.' or '-' (at most 63)")


def stack_names(cwd: Path) -> list[str]:
    """The stacks that have files without ``-f``: ``./stacks/NAME/stack.yml``, then the shipped ones."""
    names: set[str] = set()
    for root in (cwd / "stacks", SHIPPED_STACKS):
        if root.is_dir():
            names.update(p.name for p in root.iterdir() if (p / "stack.yml").is_file())
    return sorted(names)


def find_stack_files(name: str, files: list[str], cwd: Path) -> list[Path]:
    """The files a deploy reads: ``-f`` files as given, else ``stacks/NAME/stack.yml`` (local, then shipped)."""
    check_stack_name(name)
    if files:
        return [shipped_file(f, cwd) for f in files]
    for root in (cwd / "stacks", SHIPPED_STACKS):
        candidate = root / name / "stack.yml"
        if candidate.is_file():
            return [candidate]
    shipped = (
        sorted(p.name for p in SHIPPED_STACKS.iterdir() if (p / "stack.yml").is_file())
        if SHIPPED_STACKS.is_dir()
        else []
    )
    hint = f" (shipped stacks: {', '.join(shipped)})" if shipped else ""
    raise InputError(
        f"no stack {name!r}: neither ./stacks/{name}/stack.yml nor a shipped stack exists{hint}; use -f FILE"
    )


def shipped_file(given: str, cwd: Path) -> Path:
    """A ``-f`` file as given (messages name it the way the user did) - or, when there is no such
    file here and it names one of the stacks swarmctl ships (``stacks/kafka/external.yml``), that
    one: the README's own examples work for a swarmctl installed with pip, away from a clone."""
    path = Path(given)
    if path.is_absolute() or (cwd / path).exists() or path.is_symlink():
        return path
    parts = path.parts
    if len(parts) >= 2 and parts[0] == "stacks":
        shipped = SHIPPED_STACKS.joinpath(*parts[1:])
        if shipped.is_file():
            return shipped
    return path


# kinds of value ``x-swarmctl.generate`` can make (ops.generated makes them)
GENERATE_KINDS = ("kafka-cluster-id",)
VARIABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def generated_variables(files: list[Path]) -> dict[str, str]:
    """VARIABLE -> KIND from the files' top-level ``x-swarmctl: {generate: {VARIABLE: KIND}}``:
    values swarmctl makes once per stack and keeps (later files override earlier ones).

    Raises:
        InputError: a malformed ``x-swarmctl`` or an unknown kind.
    """
    out: dict[str, str] = {}
    for f in files:
        raw = load_yaml(f)
        ext = raw.get("x-swarmctl") if isinstance(raw, Mapping) else None
        if ext is None:
            continue
        if not isinstance(ext, Mapping) or set(ext) - {"generate"}:
            raise InputError(f"{f}: x-swarmctl at the top of a stack file takes only `generate`")
        generate = ext.get("generate") or {}
        if not isinstance(generate, Mapping):
            raise InputError(f"{f}: x-swarmctl.generate must map VARIABLE: KIND")
        for var, kind in generate.items():
            if not VARIABLE_RE.match(str(var)):
                raise InputError(f"{f}: x-swarmctl.generate: {var!r} is not a variable name")
            if kind not in GENERATE_KINDS:
                raise InputError(
                    f"{f}: x-swarmctl.generate.{var}: unknown kind {kind!r} (known: {', '.join(GENERATE_KINDS)})"
                )
            out[str(var)] = str(kind)
    return out


def generated_placeholders(files: list[Path]) -> dict[str, str]:
    """A stand-in value for each generated variable: to check the files (or read what does not
    depend on those values, like images) without the swarm that keeps the real ones."""
    return {var: "generated" for var in generated_variables(files)}


def given_variables(files: list[Path], environ: Mapping[str, str], inventory_vars: Mapping[str, str]) -> set[str]:
    """The variables given a value (environment, ``.env`` beside the first file, inventory ``vars``)."""
    env_path = files[0].parent / ".env" if files else None
    dotenv = parse_dotenv(_read_utf8(env_path, ".env files"), str(env_path)) if env_path and env_path.exists() else {}
    return {k for source in (environ, dotenv, inventory_vars) for k, v in source.items() if v}


def load_stack(
    name: str,
    files: list[Path],
    environ: Mapping[str, str],
    inventory_vars: Mapping[str, str] | None = None,
) -> StackConfig:
    """Read, interpolate, check and merge the stack files.

    Raises:
        InputError: ``FILE:LINE: message`` for the first problem found.
    """
    check_stack_name(name)
    if not files:
        raise InputError("no stack files given")
    dotenv: dict[str, str] = {}
    env_path = files[0].parent / ".env"
    if env_path.exists():  # not is_file(): a .env that is a FIFO or a device is refused, not ignored
        dotenv = parse_dotenv(_read_utf8(env_path, ".env files"), str(env_path))
    lookup = chain_lookup(environ, dotenv, inventory_vars or {})
    warnings: list[str] = []
    unset: list[str] = []
    merged: dict[str, Any] | None = None
    digest = hashlib.sha256()
    for f in files:
        raw = load_yaml(f)
        content = read_regular(f, MAX_BYTES, "YAML files")
        digest.update(len(content).to_bytes(8, "big") + content)  # each file's length first: a|bc is not ab|c
        data = interpolate(raw, lookup, str(f), unset)
        ctx = FileContext(file=str(f), base_dir=f.resolve().parent, env=lookup, warnings=warnings)
        checked = FileChecker(ctx).check(data)
        for service in checked["services"].values():
            _resolve_environment(service, lookup)
        merged = checked if merged is None else merge_files(merged, checked)
    assert merged is not None
    for sname, service in merged["services"].items():
        check_merged_service(sname, service)
    for use in unset:
        warnings.append(f"{use} is not set: using an empty string")
    _check_references(merged)
    for sname, service in merged["services"].items():
        if "restart" in service:
            at = service["_at"]
            if "restart_policy" in service.get("deploy", {}):
                warnings.append(f"{at[0]}:{at[1]}: service {sname}: `restart` is ignored: deploy.restart_policy is set")
            else:
                warnings.append(
                    f"{at[0]}:{at[1]}: service {sname}: `restart` is not a swarm setting; it is used as "
                    "deploy.restart_policy (as docker stack deploy does): prefer deploy.restart_policy"
                )
    return StackConfig(
        name=name,
        files=tuple(files),
        services=merged["services"],
        networks=merged["networks"],
        volumes=merged["volumes"],
        secrets=merged["secrets"],
        configs=merged["configs"],
        warnings=tuple(dict.fromkeys(warnings)),
        digest="sha256:" + digest.hexdigest(),
    )


# -- environment -----------------------------------------------------------------------------------


def parse_env_file(path: Path, lookup: Any) -> dict[str, str | None]:
    """An ``env_file``, read as docker's opts.ParseEnvFile does: values are taken verbatim; a line
    with a name only takes the value from the environment and is dropped when there is none."""
    text = _read_utf8(path, "env_files")
    out: dict[str, str | None] = {}
    for number, raw in enumerate(text.lstrip("\ufeff").splitlines(), start=1):
        line = raw.lstrip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if re.search(r"\s", key):
            raise InputError(f"variable {key!r} contains whitespace", path, number)
        if not key:
            raise InputError("no variable name before '='", path, number)
        if sep:
            out[key] = value
        else:
            found = lookup(key)
            if found is not None:
                out[key] = found
    return out


def _read_utf8(path: Path, what: str) -> str:
    """A variables file's text: a regular file of at most a stack file's size (files.read_regular),
    in UTF-8."""
    try:
        return read_regular(path, MAX_BYTES, what).decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("not valid UTF-8", path) from None


def _resolve_environment(service: dict[str, Any], lookup: Any) -> None:
    """env_file first, environment over it; a name without a value takes it from the variables
    (docker/cli resolveEnvironment: also when the value is empty)."""
    env: dict[str, str | None] = {}
    sources: list[dict[str, str | None]] = [parse_env_file(Path(f), lookup) for f in service.get("env_file", [])]
    sources.append(service.get("environment", {}))
    for source in sources:
        for key, value in source.items():
            found = lookup(key)
            env[key] = found if (value is None or value == "") and found is not None else value
    if env or "environment" in service:
        service["environment"] = env
    service.pop("env_file", None)


# -- merging (later files override earlier ones) ---------------------------------------------------

_REPLACE = {"command", "entrypoint", "test"}
_MAPPINGS = {"environment", "labels", "sysctls", "options", "driver_opts"}


def merge_files(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge the normalized content of two files, as ``docker stack deploy -c a -c b`` does.

    Services merge field by field: scalars and command/entrypoint/healthcheck.test are replaced,
    mappings (environment, labels, ...) merge by key, ports merge by published port, secrets and
    configs by source, volumes by target, networks and ulimits by name, other lists append (without
    repeating an item). Networks, volumes, secrets and configs are replaced by name.
    """
    out = copy.deepcopy(base)
    for name, service in override["services"].items():
        if name in out["services"]:
            out["services"][name] = _merge_service(out["services"][name], service)
        else:
            out["services"][name] = copy.deepcopy(service)
    for section in ("networks", "volumes", "secrets", "configs"):
        out[section].update(copy.deepcopy(override[section]))
    if override.get("version"):
        out["version"] = override["version"]
    return out


def _merge_service(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if key == "_at":
            continue
        if key not in out:
            out[key] = copy.deepcopy(value)
        elif key == "ports":
            out[key] = _merge_keyed(out[key], value, _port_key, sort=lambda p: p.get("published", 0))
        elif key in ("secrets", "configs"):
            out[key] = _merge_keyed(out[key], value, lambda r: r["source"], sort=lambda r: r["source"])
        elif key == "volumes":
            out[key] = _merge_keyed(out[key], value, lambda v: v["target"])
        elif key == "ulimits":
            out[key] = {**out[key], **copy.deepcopy(value)}
        elif key == "networks":
            merged = dict(out[key])
            for net, cfg in value.items():
                merged[net] = {**merged.get(net, {}), **copy.deepcopy(cfg)}
            out[key] = merged
        elif key == "logging":
            out[key] = _merge_logging(out[key], value)
        else:
            out[key] = _merge_value(key, out[key], value)
    return out


def _merge_value(key: str, base: Any, over: Any) -> Any:
    if key in _REPLACE:
        return copy.deepcopy(over)
    if isinstance(base, dict) and isinstance(over, dict):
        if key in _MAPPINGS:
            return {**base, **over}
        merged = dict(base)
        for k, v in over.items():
            merged[k] = _merge_value(k, merged[k], v) if k in merged and k != "_lines" else copy.deepcopy(v)
        if "_lines" in base or "_lines" in over:
            merged["_lines"] = {**base.get("_lines", {}), **over.get("_lines", {})}
        return merged
    if isinstance(base, list) and isinstance(over, list):
        out = list(base)
        for item in over:
            if item not in out:
                out.append(copy.deepcopy(item))
        return out
    return copy.deepcopy(over)


def _port_key(p: dict[str, Any]) -> tuple[Any, ...]:
    if p.get("published"):
        return ("published", p["published"], p.get("protocol", "tcp"))
    return ("target", p["target"], p.get("protocol", "tcp"), p.get("mode", "ingress"))


def _merge_keyed(base: list[Any], over: list[Any], key: Any, sort: Any = None) -> list[Any]:
    merged = {key(item): item for item in base}
    for item in over:
        merged[key(item)] = copy.deepcopy(item)
    items = list(merged.values())
    return sorted(items, key=sort) if sort else items


def _merge_logging(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    b, o = base.get("driver", ""), over.get("driver", "")
    if b == o or not b or not o:
        return {"driver": b or o, "options": {**base.get("options", {}), **over.get("options", {})}}
    return copy.deepcopy(over)


# -- references ------------------------------------------------------------------------------------


def _check_references(config: dict[str, Any]) -> None:
    for sname, service in config["services"].items():
        for net, cfg in service.get("networks", {}).items():
            if net != "default" and net not in config["networks"]:
                f, line = cfg["_at"]
                raise InputError(
                    f"service {sname} uses network {net!r}, which is not defined under `networks:`", f, line
                )
        for kind in ("secrets", "configs"):
            for ref in service.get(kind, []):
                if ref["source"] not in config[kind]:
                    f, line = ref["_at"]
                    raise InputError(
                        f"service {sname} uses {kind[:-1]} {ref['source']!r}, which is not defined under `{kind}:`",
                        f,
                        line,
                    )
        for vol in service.get("volumes", []):
            if vol["type"] == "volume" and vol.get("source") and vol["source"] not in config["volumes"]:
                f, line = vol["_at"]
                raise InputError(
                    f"service {sname} uses volume {vol['source']!r}, which is not defined under `volumes:`", f, line
                )
