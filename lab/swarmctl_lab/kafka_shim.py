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
import time
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


# -- KRaft: the controller stand-in ------------------------------------------------------------
#
# A KRaft controller's part that swarmctl sees: ApiVersions and DescribeQuorum (API 55) on the
# controller listener. The controllers of one stack exchange their state every PEER_EVERY seconds
# (a lab-private request, LAB_PEER) and agree on a leader: the voter up the longest among those
# heard from lately - so the leader moves when its task restarts, and only then, as in Kafka. Only
# the leader answers DescribeQuorum; the others answer NOT_LEADER_OR_FOLLOWER, as Kafka's do. Its
# metadata log grows 10 records a second; a follower is caught up when it heard from the leader
# in the last PEER_TIMEOUT. A controller started with SWARMCTL_LAB_LAG=1 never catches up (what
# the rollout's "left behind" gate is tested with). Brokers announce themselves to the voters the
# same way and are listed as observers.

DESCRIBE_QUORUM = 55
LAB_PEER = 32001  # lab-private API key: one stand-in's state, in the request and in the answer
NOT_LEADER_OR_FOLLOWER, UNSUPPORTED_VERSION = 6, 35
CONTROLLER_APIS = {API_VERSIONS: (0, 3), DESCRIBE_QUORUM: (0, 1)}
PEER_EVERY = 0.5
PEER_TIMEOUT = 3.0  # a voter not heard from in this long is gone (Kafka: 2 s fetch timeout, 1 s election)
ELECTION_GRACE = 2.0  # a controller that just started hears from its peers before it elects
OBSERVER_TIMEOUT = 5.0
CONTROLLER, BROKER = 0, 1
PEER_STATE = struct.Struct(">ibqqqiiq")


def parse_voters(value: str) -> dict[int, tuple[str, int]]:
    """``1@controller-1:9093,2@...`` (controller.quorum.voters) -> {1: ("controller-1", 9093)}."""
    out = {}
    for item in value.split(","):
        ident, _, hostport = item.strip().partition("@")
        host, _, port = hostport.rpartition(":")
        if ident.strip().isdigit() and host and port.isdigit():
            out[int(ident)] = (host.strip("[]"), int(port))
    return out


def log_offset(now: float) -> int:
    return int(now * 10)


def ms(t: float) -> int:
    return int(t * 1000)


class PeerState:
    """What one stand-in says of itself (LAB_PEER)."""

    def __init__(self, node_id: int, role: int, started: int, leo: int, caught_up: int, leader: int, epoch: int,
                 hw: int) -> None:  # fmt: skip
        self.node_id, self.role, self.started, self.leo = node_id, role, started, leo
        self.caught_up, self.leader, self.epoch, self.hw = caught_up, leader, epoch, hw
        self.seen = 0.0  # when it was heard from (local clock)

    def pack(self) -> bytes:
        return PEER_STATE.pack(self.node_id, self.role, self.started, self.leo, self.caught_up, self.leader,
                               self.epoch, self.hw)  # fmt: skip

    @classmethod
    def unpack(cls, data: bytes) -> PeerState:
        return cls(*PEER_STATE.unpack(data[: PEER_STATE.size]))


class Quorum:
    """One controller's view of the quorum (pure: every method takes the time)."""

    def __init__(self, node_id: int, voters: dict[int, tuple[str, int]], started: float, lagging: bool = False):
        self.node_id, self.voters, self.started, self.lagging = node_id, voters, started, lagging
        self.peers: dict[int, PeerState] = {}
        self.epoch = 0
        self.leader_hw = -1
        self.caught_up = -1.0  # when it last heard from the leader (or, leading, now)
        self._leader: int | None = None

    def learn(self, state: PeerState, now: float) -> None:
        state.seen = now
        self.peers[state.node_id] = state
        if state.role == CONTROLLER and state.leader == state.node_id:
            self.epoch = max(self.epoch, state.epoch)
            if self.leader(now) == state.node_id and not self.lagging:
                self.leader_hw, self.caught_up = state.hw, now

    def live_voters(self, now: float) -> dict[int, float]:
        """Voters heard from lately (and this one) -> when they started (s)."""
        out = {self.node_id: self.started} if self.node_id in self.voters else {}
        for ident, p in self.peers.items():
            if ident in self.voters and p.role == CONTROLLER and now - p.seen <= PEER_TIMEOUT:
                out[ident] = p.started / 1000
        return out

    def leader(self, now: float) -> int | None:
        """The voter up the longest among the live ones; None before this one has heard its peers,
        or without a majority."""
        if now - self.started < ELECTION_GRACE:
            return None
        live = self.live_voters(now)
        if len(live) <= len(self.voters) // 2:
            return None
        leader = min(live, key=lambda i: (live[i], i))
        if leader != self._leader:
            self._leader = leader
            if leader == self.node_id:
                self.epoch += 1
        return leader

    def state(self, now: float) -> PeerState:
        leader = self.leader(now)
        leading = leader == self.node_id
        if leading:
            leo, caught_up, hw = log_offset(now), ms(now), log_offset(now)
        elif self.lagging:
            leo, caught_up, hw = log_offset(self.started) - 1000, -1, -1
        else:
            leo, caught_up, hw = self.leader_hw, ms(self.caught_up) if self.caught_up > 0 else -1, -1
        return PeerState(self.node_id, CONTROLLER, ms(self.started), leo, caught_up,
                         -1 if leader is None else leader, self.epoch, hw)  # fmt: skip

    def describe(self, version: int, now: float) -> tuple[int, int, int, int, list[tuple[int, int, int, int]],
                                                           list[tuple[int, int, int, int]]]:  # fmt: skip
        """(error, leader, epoch, high watermark, voters, observers); voters and observers as
        (id, log end offset, last fetch ms, last caught up ms), as the leader sees them."""
        leader = self.leader(now)
        if leader != self.node_id:
            return NOT_LEADER_OR_FOLLOWER, -1 if leader is None else leader, self.epoch, -1, [], []
        hw = log_offset(now)
        voters = []
        for ident in sorted(self.voters):
            p = self.peers.get(ident)
            if ident == self.node_id:
                voters.append((ident, hw, ms(now), ms(now)))
            elif p is None:
                voters.append((ident, -1, -1, -1))
            else:
                voters.append((ident, p.leo, ms(p.seen), p.caught_up))
        observers = [
            (p.node_id, hw, ms(p.seen), ms(p.seen))
            for p in sorted(self.peers.values(), key=lambda p: p.node_id)
            if p.role == BROKER and now - p.seen <= OBSERVER_TIMEOUT and p.node_id not in self.voters
        ]
        return 0, leader, self.epoch, hw, voters, observers


def request_header(frame: bytes, flexible: bool) -> tuple[int, int, int, int]:
    """(api key, version, correlation id, where the body starts) of a request frame."""
    r = Reader(frame)
    api_key, version, correlation = r.int16(), r.int16(), r.int32()
    r.string(False)  # client id: never compact
    if flexible:
        r.tagged()
    return api_key, version, correlation, r.pos


def api_versions_answer(version: int, apis: dict[int, tuple[int, int]]) -> bytes:
    """ApiVersions response body; an unknown version gets v0's layout with UNSUPPORTED_VERSION."""
    error = 0 if version <= 3 else UNSUPPORTED_VERSION
    flex = version == 3
    w = Writer()
    w.int16(error)
    w.array_len(len(apis), flex)
    for key, (low, high) in sorted(apis.items()):
        w.int16(key)
        w.int16(low)
        w.int16(high)
        if flex:
            w.tagged([])
    if 1 <= version <= 3:
        w.int32(0)  # throttle_time_ms
    if flex:
        w.tagged([])
    return w.bytes()


def describe_quorum_answer(version: int, quorum: Quorum, now: float) -> bytes:
    """DescribeQuorum response body, v0 or v1 (flexible), for partition 0 of __cluster_metadata."""
    error, leader, epoch, hw, voters, observers = quorum.describe(version, now)
    w = Writer()
    w.int16(0)  # error_code
    w.array_len(1, True)
    w.string(b"__cluster_metadata", True)
    w.array_len(1, True)
    w.int32(0)  # partition_index
    w.int16(error)
    w.int32(leader)
    w.int32(epoch)
    w.raw(struct.pack(">q", hw))
    for replicas in (voters, observers):
        w.array_len(len(replicas), True)
        for ident, leo, fetched, caught_up in replicas:
            w.int32(ident)
            w.raw(struct.pack(">q", leo))
            if version >= 1:
                w.raw(struct.pack(">qq", fetched, caught_up))
            w.tagged([])
    w.tagged([])  # partition
    w.tagged([])  # topic
    w.tagged([])
    return w.bytes()


def controller_answer(frame: bytes, quorum: Quorum, now: float) -> bytes | None:
    """The response frame (without its size) to one request frame; None: close the connection."""
    api_key, version = struct.unpack(">hh", frame[:4])
    if api_key == API_VERSIONS:
        _, _, correlation, _ = request_header(frame, flexible=version >= 3)
        return struct.pack(">i", correlation) + api_versions_answer(version, CONTROLLER_APIS)
    if api_key == DESCRIBE_QUORUM and version <= CONTROLLER_APIS[DESCRIBE_QUORUM][1]:
        _, _, correlation, _ = request_header(frame, flexible=True)
        return struct.pack(">i", correlation) + b"\x00" + describe_quorum_answer(version, quorum, now)
    if api_key == LAB_PEER:
        _, _, correlation, pos = request_header(frame, flexible=False)
        quorum.learn(PeerState.unpack(frame[pos:]), now)
        return struct.pack(">i", correlation) + quorum.state(now).pack()
    return None  # a controller serves nothing else here (Kafka's would answer more)


async def _exchange(host: str, port: int, state: bytes, timeout: float) -> bytes:
    """One LAB_PEER round trip: our state out, theirs back."""
    r, w = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        client = b"swarmctl-lab"
        frame = struct.pack(">hhih", LAB_PEER, 0, 1, len(client)) + client + state
        w.write(struct.pack(">i", len(frame)) + frame)
        await w.drain()
        size = struct.unpack(">i", await asyncio.wait_for(r.readexactly(4), timeout))[0]
        answer = await asyncio.wait_for(r.readexactly(size), timeout)
        return answer[4:]
    finally:
        w.close()


async def _announce(voters: dict[int, tuple[str, int]], own: int, state: Any, learn: Any) -> None:
    """Every PEER_EVERY: send our state to each other voter, learn theirs."""

    async def one(host: str, port: int) -> None:
        with contextlib.suppress(OSError, ValueError, struct.error, asyncio.TimeoutError, asyncio.IncompleteReadError):
            learn(PeerState.unpack(await _exchange(host, port, state().pack(), PEER_EVERY * 2)))

    while True:
        await asyncio.gather(*(one(h, p) for i, (h, p) in sorted(voters.items()) if i != own))
        await asyncio.sleep(PEER_EVERY)


async def _controller_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter, quorum: Quorum) -> None:
    try:
        while True:
            size = struct.unpack(">i", await r.readexactly(4))[0]
            answer = controller_answer(await r.readexactly(size), quorum, time.time())
            if answer is None:
                break
            w.write(struct.pack(">i", len(answer)) + answer)
            await w.drain()
    except (OSError, ValueError, struct.error, asyncio.IncompleteReadError, asyncio.CancelledError):
        pass
    finally:
        w.close()


async def _serve_controller(listen: tuple[str, int], quorum: Quorum) -> int:
    server = await asyncio.start_server(lambda r, w: _controller_conn(r, w, quorum), *listen)
    peers = asyncio.create_task(
        _announce(quorum.voters, quorum.node_id, lambda: quorum.state(time.time()),
                  lambda s: quorum.learn(s, time.time()))
    )  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    last = None
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.5)
        leader = quorum.leader(time.time())
        if leader != last:
            print(f"kraft stand-in: leader {leader} (epoch {quorum.epoch})", flush=True)
            last = leader
    peers.cancel()
    server.close()
    return 0


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
    listen: tuple[str, int],
    upstream: tuple[str, int],
    node_id: int,
    broker: subprocess.Popen[bytes],
    voters: dict[int, tuple[str, int]],
) -> int:
    server = await asyncio.start_server(lambda r, w: _relay(r, w, upstream, node_id), *listen)
    started = ms(time.time())
    announce = None
    if voters:  # a KRaft broker: the controllers list it as an observer
        own = PeerState(node_id, BROKER, started, 0, 0, -1, 0, 0)
        announce = asyncio.create_task(_announce(voters, node_id, lambda: own, lambda _: None))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    while not stop.is_set() and broker.poll() is None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.5)
    if announce is not None:
        announce.cancel()
    server.close()
    if broker.poll() is None:
        broker.terminate()
    return broker.wait() if not stop.is_set() else 0


def node_id_of(env: Any) -> int:
    """debezium's rule (NODE_ID, else the deprecated BROKER_ID), then the official image's
    KAFKA_NODE_ID (KAFKA_BROKER_ID); else 1."""
    for key in ("NODE_ID", "BROKER_ID", "KAFKA_NODE_ID", "KAFKA_BROKER_ID"):
        if str(env.get(key, "")).strip():
            return int(env[key])
    return 1


def roles_of(env: Any) -> set[str]:
    """KAFKA_PROCESS_ROLES (the official image), else debezium's NODE_ROLE; empty: ZooKeeper mode."""
    value = str(env.get("KAFKA_PROCESS_ROLES") or env.get("NODE_ROLE") or "").strip().lower()
    if value == "combined":
        return {"broker", "controller"}
    return {r.strip() for r in value.split(",") if r.strip()}


def main() -> int:
    env = os.environ
    node_id = node_id_of(env)
    roles = roles_of(env)
    voters = parse_voters(env.get("KAFKA_CONTROLLER_QUORUM_VOTERS", ""))
    if "controller" in roles and "broker" not in roles:
        listen = _hostport(env.get("KAFKA_LISTENERS", "CONTROLLER://0.0.0.0:9093"), 9093)
        lagging = env.get("SWARMCTL_LAB_LAG", "") == "1"
        print(f"kraft stand-in: controller {node_id} of voters {sorted(voters)}, listening on {listen[0]}:{listen[1]}"
              + (" (made to lag)" if lagging else ""), flush=True)  # fmt: skip
        return asyncio.run(_serve_controller(listen, Quorum(node_id, voters, time.time(), lagging)))
    if "controller" in roles:
        print("kafka shim: combined mode is not stood in for: this node serves as a broker only", flush=True)
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
    print(f"kafka shim: broker id {node_id}, {where}" + (f", observer of voters {sorted(voters)}" if voters else ""),
          flush=True)  # fmt: skip
    broker = subprocess.Popen(cmd)
    return asyncio.run(_serve(listen, upstream, node_id, broker, voters))


if __name__ == "__main__":
    sys.exit(main())
