"""The lab Kafka image's entrypoint: run tansu and give it the broker id the stack asks for.

tansu (the Kafka-wire-compatible broker in the lab image) reports a fixed node id, 111, compiled
in. Stacks written for real Kafka set NODE_ID per broker (or the deprecated BROKER_ID; debezium's
rule: NODE_ID, else BROKER_ID, else 1), and clients and swarmctl's verifier expect to see it.
This shim listens where KAFKA_LISTENERS says, forwards every request to tansu on a loopback port
unchanged, and rewrites the node id in the responses that carry one (Metadata, FindCoordinator,
DescribeCluster). Everything else passes through byte for byte.

Runs inside the image (python3 standard library only); also imported by swarmctl's unit tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import struct
import subprocess
import sys
from typing import Any

TANSU_NODE_ID = 111
METADATA, FIND_COORDINATOR, API_VERSIONS, DESCRIBE_CLUSTER = 3, 10, 18, 60
# the highest versions this shim can rewrite; ApiVersions answers are capped to them
MAX_VERSIONS = {METADATA: 12, FIND_COORDINATOR: 5, DESCRIBE_CLUSTER: 1}


class Reader:
    def __init__(self, data: bytes, pos: int = 0):
        self.data = data
        self.pos = pos

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("truncated message")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def int8(self) -> int:
        return int(struct.unpack(">b", self.take(1))[0])

    def int16(self) -> int:
        return int(struct.unpack(">h", self.take(2))[0])

    def int32(self) -> int:
        return int(struct.unpack(">i", self.take(4))[0])

    def uvarint(self) -> int:
        shift = result = 0
        while True:
            b = self.take(1)[0]
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    def string(self, compact: bool) -> bytes | None:
        n = self.uvarint() - 1 if compact else self.int16()
        return None if n < 0 else self.take(n)

    def array_len(self, compact: bool) -> int:
        return self.uvarint() - 1 if compact else self.int32()

    def tagged(self) -> list[tuple[int, bytes]]:
        return [(self.uvarint(), self.take(self.uvarint())) for _ in range(self.uvarint())]


class Writer:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def raw(self, b: bytes) -> None:
        self.parts.append(b)

    def int8(self, v: int) -> None:
        self.raw(struct.pack(">b", v))

    def int16(self, v: int) -> None:
        self.raw(struct.pack(">h", v))

    def int32(self, v: int) -> None:
        self.raw(struct.pack(">i", v))

    def uvarint(self, v: int) -> None:
        out = bytearray()
        while True:
            b = v & 0x7F
            v >>= 7
            if v:
                out.append(b | 0x80)
            else:
                out.append(b)
                break
        self.raw(bytes(out))

    def string(self, s: bytes | None, compact: bool) -> None:
        if compact:
            self.uvarint(0 if s is None else len(s) + 1)
        else:
            self.int16(-1 if s is None else len(s))
        if s is not None:
            self.raw(s)

    def array_len(self, n: int, compact: bool) -> None:
        if compact:
            self.uvarint(n + 1)
        else:
            self.int32(n)

    def tagged(self, fields: list[tuple[int, bytes]]) -> None:
        self.uvarint(len(fields))
        for tag, value in fields:
            self.uvarint(tag)
            self.uvarint(len(value))
            self.raw(value)

    def bytes(self) -> bytes:
        return b"".join(self.parts)


def _id(value: int, node_id: int) -> int:
    return node_id if value == TANSU_NODE_ID else value


def _ids(r: Reader, w: Writer, compact: bool, node_id: int) -> None:
    n = r.array_len(compact)
    w.array_len(n, compact)
    for _ in range(max(n, 0)):
        w.int32(_id(r.int32(), node_id))


def rewrite_metadata(body: bytes, version: int, node_id: int) -> bytes:
    """Metadata response v0-v12 with every node id 111 replaced by ``node_id``."""
    flex = version >= 9
    r, w = Reader(body), Writer()
    if version >= 3:
        w.int32(r.int32())  # throttle_time_ms
    n = r.array_len(flex)
    w.array_len(n, flex)
    for _ in range(n):
        w.int32(_id(r.int32(), node_id))
        w.string(r.string(flex), flex)  # host
        w.int32(r.int32())  # port
        if version >= 1:
            w.string(r.string(flex), flex)  # rack
        if flex:
            w.tagged(r.tagged())
    if version >= 2:
        w.string(r.string(flex), flex)  # cluster_id
    if version >= 1:
        w.int32(_id(r.int32(), node_id))  # controller_id
    n = r.array_len(flex)
    w.array_len(n, flex)
    for _ in range(max(n, 0)):
        w.int16(r.int16())  # error_code
        w.string(r.string(flex), flex)  # name
        if version >= 10:
            w.raw(r.take(16))  # topic_id
        if version >= 1:
            w.int8(r.int8())  # is_internal
        p = r.array_len(flex)
        w.array_len(p, flex)
        for _ in range(max(p, 0)):
            w.int16(r.int16())  # error_code
            w.int32(r.int32())  # partition_index
            w.int32(_id(r.int32(), node_id))  # leader_id
            if version >= 7:
                w.int32(r.int32())  # leader_epoch
            _ids(r, w, flex, node_id)  # replica_nodes
            _ids(r, w, flex, node_id)  # isr_nodes
            if version >= 5:
                _ids(r, w, flex, node_id)  # offline_replicas
            if flex:
                w.tagged(r.tagged())
        if version >= 8:
            w.int32(r.int32())  # topic_authorized_operations
        if flex:
            w.tagged(r.tagged())
    if 8 <= version <= 10:
        w.int32(r.int32())  # cluster_authorized_operations
    if flex:
        w.tagged(r.tagged())
    w.raw(r.data[r.pos :])
    return w.bytes()


def rewrite_find_coordinator(body: bytes, version: int, node_id: int) -> bytes:
    flex = version >= 3
    r, w = Reader(body), Writer()
    if version >= 1:
        w.int32(r.int32())  # throttle_time_ms
    if version <= 3:
        w.int16(r.int16())  # error_code
        if version >= 1:
            w.string(r.string(flex), flex)  # error_message
        w.int32(_id(r.int32(), node_id))
        w.string(r.string(flex), flex)  # host
        w.int32(r.int32())  # port
    else:
        n = r.array_len(True)
        w.array_len(n, True)
        for _ in range(max(n, 0)):
            w.string(r.string(True), True)  # key
            w.int32(_id(r.int32(), node_id))
            w.string(r.string(True), True)  # host
            w.int32(r.int32())  # port
            w.int16(r.int16())  # error_code
            w.string(r.string(True), True)  # error_message
            w.tagged(r.tagged())
    if flex:
        w.tagged(r.tagged())
    w.raw(r.data[r.pos :])
    return w.bytes()


def rewrite_describe_cluster(body: bytes, version: int, node_id: int) -> bytes:
    r, w = Reader(body), Writer()
    w.int32(r.int32())  # throttle_time_ms
    w.int16(r.int16())  # error_code
    w.string(r.string(True), True)  # error_message
    if version >= 1:
        w.int8(r.int8())  # endpoint_type
    w.string(r.string(True), True)  # cluster_id
    w.int32(_id(r.int32(), node_id))  # controller_id
    n = r.array_len(True)
    w.array_len(n, True)
    for _ in range(max(n, 0)):
        w.int32(_id(r.int32(), node_id))
        w.string(r.string(True), True)  # host
        w.int32(r.int32())  # port
        w.string(r.string(True), True)  # rack
        w.tagged(r.tagged())
    w.int32(r.int32())  # cluster_authorized_operations
    w.tagged(r.tagged())
    w.raw(r.data[r.pos :])
    return w.bytes()


def cap_api_versions(body: bytes, version: int) -> bytes:
    """Lower the max versions of the APIs this shim rewrites to the ones it understands."""
    flex = version >= 3
    r, w = Reader(body), Writer()
    w.int16(r.int16())  # error_code
    n = r.array_len(flex)
    w.array_len(n, flex)
    for _ in range(max(n, 0)):
        key, low, high = r.int16(), r.int16(), r.int16()
        w.int16(key)
        w.int16(low)
        w.int16(min(high, MAX_VERSIONS.get(key, high)))
        if flex:
            w.tagged(r.tagged())
    w.raw(r.data[r.pos :])
    return w.bytes()


def _flexible_response_header(api_key: int, version: int) -> bool:
    # ApiVersions always answers with response header v0, so old clients can read it
    if api_key == API_VERSIONS:
        return False
    first_flexible = {METADATA: 9, FIND_COORDINATOR: 3, DESCRIBE_CLUSTER: 0}
    return api_key in first_flexible and version >= first_flexible[api_key]


def rewrite_response(api_key: int, version: int, frame: bytes, node_id: int) -> bytes:
    """One response frame (without its length prefix), rewritten when it carries node ids."""
    handlers: dict[int, Any] = {
        METADATA: rewrite_metadata,
        FIND_COORDINATOR: rewrite_find_coordinator,
        DESCRIBE_CLUSTER: rewrite_describe_cluster,
    }
    if api_key == API_VERSIONS:
        try:
            return frame[:4] + cap_api_versions(frame[4:], version)
        except ValueError:
            return frame
    if api_key not in handlers or version > MAX_VERSIONS[api_key]:
        return frame
    r = Reader(frame)
    r.int32()  # correlation_id
    header_tags = r.tagged() if _flexible_response_header(api_key, version) else None
    header_end = r.pos
    try:
        body = handlers[api_key](frame[header_end:], version, node_id)
    except ValueError:
        return frame  # not what this shim understands: pass it on untouched
    del header_tags
    return frame[:header_end] + body


async def _relay(
    client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, upstream: tuple[str, int], node_id: int
) -> None:
    try:
        up_r, up_w = await asyncio.open_connection(*upstream)
    except OSError:
        client_w.close()
        return
    pending: dict[int, tuple[int, int]] = {}

    async def requests() -> None:
        while True:
            size = await client_r.readexactly(4)
            frame = await client_r.readexactly(struct.unpack(">i", size)[0])
            api_key, version, correlation = struct.unpack(">hhi", frame[:8])
            pending[correlation] = (api_key, version)
            up_w.write(size + frame)
            await up_w.drain()

    async def responses() -> None:
        while True:
            size = await up_r.readexactly(4)
            frame = await up_r.readexactly(struct.unpack(">i", size)[0])
            correlation = struct.unpack(">i", frame[:4])[0]
            api_key, version = pending.pop(correlation, (-1, -1))
            frame = rewrite_response(api_key, version, frame, node_id)
            client_w.write(struct.pack(">i", len(frame)) + frame)
            await client_w.drain()

    tasks = [asyncio.create_task(requests()), asyncio.create_task(responses())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        for w in (client_w, up_w):
            w.close()


def _hostport(listeners: str, default_port: int) -> tuple[str, int]:
    first = listeners.split(",")[0].strip()
    hostport = first.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    return (host or "0.0.0.0"), int(port or default_port)


async def _serve(
    listen: tuple[str, int], upstream: tuple[str, int], node_id: int, broker: subprocess.Popen[bytes]
) -> int:
    server = await asyncio.start_server(lambda r, w: _relay(r, w, upstream, node_id), *listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    while not stop.is_set() and broker.poll() is None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.5)
    server.close()
    if broker.poll() is None:
        broker.terminate()
    return broker.wait() if not stop.is_set() else 0


def main() -> int:
    env = os.environ
    # the id rule of debezium's entrypoint: NODE_ID, else the deprecated BROKER_ID, else 1
    node_id = int(env.get("NODE_ID") or env.get("BROKER_ID") or "1")
    listen = _hostport(env.get("KAFKA_LISTENERS", "PLAINTEXT://0.0.0.0:9092"), 9092)
    advertised = _hostport(env.get("KAFKA_ADVERTISED_LISTENERS", f"PLAINTEXT://{os.uname().nodename}:9092"), 9092)
    upstream = ("127.0.0.1", int(env.get("TANSU_PORT", "19092")))
    cmd = [
        env.get("TANSU", "/usr/local/bin/tansu"),
        "broker",
        "--listener-url", f"tcp://{upstream[0]}:{upstream[1]}",
        "--advertised-listener-url", f"tcp://{advertised[0]}:{advertised[1]}",
        "--storage-engine", env.get("STORAGE_ENGINE", "memory://tansu/"),
        "--cluster-id", env.get("CLUSTER_ID", "swarmctl-lab"),
    ]  # fmt: skip
    where = f"listening on {listen[0]}:{listen[1]}, advertised {advertised[0]}:{advertised[1]}"
    print(f"kafka shim: broker id {node_id}, {where}", flush=True)
    broker = subprocess.Popen(cmd)
    return asyncio.run(_serve(listen, upstream, node_id, broker))


if __name__ == "__main__":
    sys.exit(main())
