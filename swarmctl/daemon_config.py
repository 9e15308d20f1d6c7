"""The daemon.json keys an inventory's ``engine:`` block may set, with their types (pure).

Each check takes a value as YAML gave it and returns the value to write into daemon.json, or
raises ValueError with the reason (the inventory adds file and line). Only keys listed here are
accepted: a typo must not become a directive that stops dockerd from starting.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from swarmctl.yamlfile import type_name

# swarm mode refuses to run with live-restore (dockerd: "--live-restore daemon configuration is
# incompatible with swarm mode")
REFUSED = {
    "live-restore": 'swarm mode does not support live-restore (dockerd: "--live-restore daemon configuration is '
    'incompatible with swarm mode")',
}

# changing these on a node that already runs moves or hides its state: images, containers and the
# swarm's own state (under data-root) - bootstrap wants --force for them
UNSAFE = {
    "data-root": "the engine then starts on an empty data root: its images, containers and swarm state stay behind",
    "storage-driver": "images and containers of the old storage driver become invisible to the engine",
    "userns-remap": "the engine then uses a separate data root: its images, containers and swarm state stay behind",
}

LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")
_LOG_DRIVER_RE = re.compile(r"^[a-z0-9][a-z0-9_./:-]*$")
_HOST_PORT_RE = re.compile(r"^[A-Za-z0-9.-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:]+\](:\d{1,5})?$")


def _string(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be a string, not {type_name(value)}")
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {type_name(value)}")
    return value


def _integer(low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be a whole number, not {type_name(value)}")
        if not low <= value <= high:
            raise ValueError(f"must be from {low} to {high}, not {value}")
        return value

    return check


def _list(item: Callable[[Any], Any]) -> Callable[[Any], list[Any]]:
    def check(value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise ValueError(f"must be a list, not {type_name(value)}")
        out = []
        for i, v in enumerate(value):
            try:
                out.append(item(v))
            except ValueError as e:
                raise ValueError(f"item {i + 1}: {e}") from None
        return out

    return check


def mirror_url(value: Any) -> str:
    text = _string(value)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{text!r} is not a registry mirror URL (https://host[:port])")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{text!r}: a registry mirror is a scheme, host and port only (no path)")
    return text


def registry_or_cidr(value: Any) -> str:
    text = _string(value)
    if "://" in text:
        raise ValueError(f"{text!r}: an insecure registry is host[:port] or a CIDR, without a scheme")
    try:
        ipaddress.ip_network(text, strict=False)
        if "/" in text:
            return text
    except ValueError:
        pass
    if not _HOST_PORT_RE.match(text):
        raise ValueError(f"{text!r} is neither host[:port] nor a CIDR")
    return text


def ip_address(value: Any) -> str:
    text = _string(value)
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None
    return text


def host_port(value: Any) -> str:
    text = _string(value)
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535 or not host:
        raise ValueError(f"{text!r} is not an address:port")
    return text


def log_driver(value: Any) -> str:
    text = _string(value)
    if not _LOG_DRIVER_RE.match(text):
        raise ValueError(f"{text!r} is not a log driver name")
    return text


def _mapping(value: Any, convert: Callable[[Any], Any], expected: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"must be a mapping, not {type_name(value)}")
    out = {}
    for k, v in value.items():
        if not isinstance(k, str):
            raise ValueError(f"key {k!r} must be a string")
        converted = convert(v)
        if converted is None:
            raise ValueError(f"{k}: must be {expected}, not {type_name(v)}")
        out[k] = converted
    return out


def string_map(value: Any) -> dict[str, str]:
    """log-opts: dockerd takes strings only ("max-file": "3"); numbers are written as strings."""
    return _mapping(
        value, lambda v: None if isinstance(v, bool) or not isinstance(v, (str, int)) else str(v), "a string"
    )


def bool_map(value: Any) -> dict[str, bool]:
    return _mapping(value, lambda v: v if isinstance(v, bool) else None, "true or false")


def address_pool(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) != {"base", "size"}:
        raise ValueError("must be a mapping with exactly `base` (a CIDR) and `size` (a prefix length)")
    try:
        net = ipaddress.ip_network(_string(value["base"]))
    except ValueError as e:
        raise ValueError(f"base: {e}") from None
    size = _integer(net.prefixlen, net.max_prefixlen)(value["size"])
    return {"base": str(net), "size": size}


def log_level(value: Any) -> str:
    text = _string(value)
    if text not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}, not {text!r}")
    return text


def engine_label(value: Any) -> str:
    text = _string(value)
    if "=" not in text or text.startswith("="):
        raise ValueError(f"{text!r} is not key=value")
    return text


KEYS: Mapping[str, Callable[[Any], Any]] = {
    "registry-mirrors": _list(mirror_url),
    "insecure-registries": _list(registry_or_cidr),
    "log-driver": log_driver,
    "log-opts": string_map,
    "log-level": log_level,
    "default-address-pools": _list(address_pool),
    "max-concurrent-downloads": _integer(1, 1024),
    "max-concurrent-uploads": _integer(1, 1024),
    "max-download-attempts": _integer(1, 1024),
    "dns": _list(ip_address),
    "dns-search": _list(_string),
    "mtu": _integer(68, 65535),
    "metrics-addr": host_port,
    "features": bool_map,
    "labels": _list(engine_label),
    "debug": _boolean,
    "experimental": _boolean,
    "shutdown-timeout": _integer(0, 3600),
    "live-restore": _boolean,
    "data-root": _string,
    "storage-driver": _string,
    "userns-remap": _string,
}


def check(key: str, value: Any) -> Any:
    """The daemon.json value of ``key`` (ValueError: why it cannot be written)."""
    if key in REFUSED and value is not False:
        raise ValueError(REFUSED[key])
    return KEYS[key](value)
