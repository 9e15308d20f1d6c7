"""Kafka: each broker answers ApiVersions and Metadata at its advertised address with its id; a
cluster's brokers see each other and no partition is under-replicated."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from swarmctl.checks import Verdict

DEFAULT_PORT = 9092
# where a broker's id comes from, in the order the stack's image reads them
ID_VARIABLES = ("BROKER_ID", "KAFKA_BROKER_ID", "NODE_ID", "KAFKA_NODE_ID")


def advertised(env: Mapping[str, str], name: str, port: int | None) -> tuple[str, int]:
    """A broker's advertised address (first listener of KAFKA_ADVERTISED_LISTENERS), else its name."""
    value = env.get("KAFKA_ADVERTISED_LISTENERS", "")
    if value:
        first = value.split(",")[0].split("://", 1)[-1]
        host, _, p = first.rpartition(":")
        if host and p.isdigit():
            return host, int(p)
    return name, port or DEFAULT_PORT


def broker_id(env: Mapping[str, str]) -> int | None:
    for key in ID_VARIABLES:
        if env.get(key, "").lstrip("-").isdigit():
            return int(env[key])
    return None


def broker_answer(result: Mapping[str, Any], host: str, port: int) -> Mapping[str, Any]:
    """What a probe saw of the broker at host:port."""
    return dict((result.get("kafka") or {}).get(f"{host}:{port}", {}))


def under_replicated(metadata: Mapping[str, Any]) -> list[str]:
    """``topic/partition`` of every partition whose in-sync replicas are fewer than its replicas."""
    return [
        f"{t['name']}/{p['index']}"
        for t in metadata["topics"]
        for p in t["partitions"]
        if sorted(p["isr"]) != sorted(p["replicas"])
    ]


def registered(metadata: Mapping[str, Any]) -> set[int]:
    return {b["id"] for b in metadata["brokers"]}


def judge_broker(found: Mapping[str, Any], host: str, port: int, want: int | None) -> Verdict:
    """The broker answered at its advertised address, with its own id in its metadata."""
    if "metadata" not in found:
        return Verdict(False, f"broker id {want}", str(found.get("error", "no answer")))
    me = [b for b in found["metadata"]["brokers"] if b["host"] == host and b["port"] == port]
    got = me[0]["id"] if me else None
    code = (found.get("api_versions") or {}).get("error_code")
    ok = code == 0 and got is not None and (want is None or got == want)
    detail = "" if me else f"no broker in its own metadata advertises {host}:{port}"
    return Verdict(ok, f"ApiVersions ok, broker id {want}", f"ApiVersions error {code}, broker id {got}", detail)


def judge_replication(metadata: Mapping[str, Any]) -> Verdict:
    """No partition is under-replicated."""
    under = under_replicated(metadata)
    detail = ("under-replicated: " + ", ".join(sorted(under)[:10])) if under else ""
    return Verdict(not under, "0", str(len(under)), detail)


def is_standalone(seen: Mapping[str, set[int]]) -> bool:
    """Several brokers that each list only themselves: not one cluster."""
    return len(seen) > 1 and all(len(ids) == 1 for ids in seen.values())


def judge_members(seen: Mapping[str, set[int]], wanted: set[int]) -> Verdict:
    """Every expected broker id is registered with the cluster the brokers see."""
    union = set().union(*seen.values()) if seen else set()
    return Verdict(wanted <= union, f"brokers {sorted(wanted)}", f"brokers {sorted(union)}")
