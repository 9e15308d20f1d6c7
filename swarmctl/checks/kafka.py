"""Kafka: each broker answers ApiVersions and Metadata at its advertised address with its id; a
cluster's brokers see each other and no partition is under-replicated."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from swarmctl.checks import Verdict

DEFAULT_PORT = 9092
# where a broker's id comes from: debezium's kafka image (its entrypoint: NODE_ID, else the
# deprecated BROKER_ID, else 1; it overwrites KAFKA_NODE_ID and KAFKA_BROKER_ID), then the official
# apache/kafka image (KAFKA_NODE_ID becomes node.id; KAFKA_BROKER_ID, broker.id, its older name)
ID_VARIABLES = ("NODE_ID", "BROKER_ID", "KAFKA_NODE_ID", "KAFKA_BROKER_ID")
DEFAULT_ID = 1


def advertised(env: Mapping[str, str], name: str, port: int | None) -> tuple[str, int]:
    """A broker's advertised address (first listener of KAFKA_ADVERTISED_LISTENERS), else its name."""
    value = env.get("KAFKA_ADVERTISED_LISTENERS", "")
    if value:
        first = value.split(",")[0].split("://", 1)[-1]
        host, _, p = first.rpartition(":")
        if host and p.isdigit():
            return host, int(p)
    return name, port or DEFAULT_PORT


def node_id(env: Mapping[str, str]) -> int | None:
    """The node id this environment sets (the first of ID_VARIABLES given); None: none, or not a number."""
    for key in ID_VARIABLES:
        value = str(env.get(key, "")).strip()
        if value:
            return int(value) if value.lstrip("-").isdigit() else None
    return None


def broker_id(env: Mapping[str, str]) -> int:
    """The id the broker of this environment registers with (the image's rule: see ID_VARIABLES)."""
    found = node_id(env)
    return DEFAULT_ID if found is None else found


def replication_factor(envs: Iterable[Mapping[str, str]]) -> int:
    """The replication factor the brokers give new topics (KAFKA_DEFAULT_REPLICATION_FACTOR, the
    highest when they differ; Kafka's default is 1)."""
    factors = [env.get("KAFKA_DEFAULT_REPLICATION_FACTOR", "").strip() for env in envs]
    return max((int(f) for f in factors if f.isdigit()), default=1)


def judge_produce(found: Mapping[str, Any] | None, standalone: bool, own: int) -> Verdict:
    """A message produced with acks=all through this broker was read back through every other
    broker (through itself when standalone)."""
    if found is None:
        return Verdict(False, "produced and read back", "no result")
    if "error" in found:
        return Verdict(False, "produced and read back", "error", str(found["error"]))
    read = dict(found.get("read") or {})
    bad = {where: how for where, how in read.items() if how != "ok"}
    via = "itself" if standalone else ", ".join(sorted(read)) or "(no other broker)"
    got = f"offset {found.get('produced')} in partition {found.get('partition')}, read back via " + (
        "itself" if standalone and not bad else (", ".join(f"{w}: {h}" for w, h in sorted(read.items())) or "nothing")
    )
    notes = []
    if bad:
        notes.append("not read back via " + ", ".join(sorted(bad)))
    if found.get("leader") not in (None, own):
        notes.append(f"it leads no partition of the verify topic: the write went to broker {found.get('leader')}")
    if standalone:
        notes.append("standalone by declaration")
    ok = bool(read) and not bad
    return Verdict(ok, f"acks=all write (replication {found.get('replication')}) read back via {via}", got,
                   "; ".join(notes))  # fmt: skip


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


def judge_sees(seen_ids: set[int], wanted: set[int], standalone: bool, own: int) -> Verdict:
    """What one broker's metadata lists: every expected broker of the cluster - or, for a broker
    declared standalone, itself."""
    want = {own} if standalone else wanted
    ok = want <= seen_ids
    detail = ""
    if not ok and seen_ids == {own} and not standalone:
        detail = (
            "it lists only itself: not one cluster (brokers that are standalone on purpose, like the lab's, "
            "are declared so with x-swarmctl.standalone)"
        )
    elif not ok:
        detail = f"missing brokers {sorted(want - seen_ids)}: split cluster, or brokers not registered in ZooKeeper"
    return Verdict(ok, f"brokers {sorted(want)}", f"brokers {sorted(seen_ids)}", detail)


def min_insync(env: Mapping[str, str]) -> int:
    """The brokers' min.insync.replicas (KAFKA_MIN_INSYNC_REPLICAS; Kafka's default 1). A topic's own
    min.insync.replicas is not in its metadata: topics that set a higher one are not seen here."""
    value = str(env.get("KAFKA_MIN_INSYNC_REPLICAS", "")).strip()
    return int(value) if value.isdigit() else 1


def would_fall_below(metadata: Mapping[str, Any], broker: int, least: int) -> list[str]:
    """``topic/partition`` of each partition that would have fewer than ``least`` in-sync replicas
    with ``broker`` stopped (partitions with one replica cannot stay available and are not counted)."""
    return [
        f"{t['name']}/{p['index']}"
        for t in metadata["topics"]
        for p in t["partitions"]
        if len(p["replicas"]) > 1 and len([r for r in p["isr"] if r != broker]) < least
    ]
