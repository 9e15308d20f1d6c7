"""The Engine's HTTP over an SSH channel, with the channel replaced by a socket pair whose other end
is an HTTP server in this process speaking the Docker API's shapes.

What this pins: requests travel through docker-py's APIClient and adapter as swarmctl mounts them
(a docker-py release that changes that fails here, not on a user's cluster), bodies go out exactly
as built, filters are encoded as the API wants, every HTTP failure becomes its typed error, and
every call is bounded as a whole: in time (an engine that trickles, one that froze) and in bytes.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from swarmctl.errors import (
    Busy,
    Conflict,
    EngineError,
    HostError,
    ImageNotFound,
    NotFound,
    SocketRefused,
    Unavailable,
    Unreachable,
)
from swarmctl.facts.host import engine_info
from swarmctl.inventory import Host, Inventory, SSHSettings
from swarmctl.transport import engine as transport_engine
from swarmctl.transport.engine import API_VERSION, ENGINE_SOCKET, MAX_RESPONSE, DockerEngine, Session
from swarmctl.transport.ssh import DEFAULT_PARALLEL, CommandResult, Connection
from tests.unit.sshserver import ssh_server
from tests.unit.test_ssh_host_keys import lab_host

Seen = list[tuple[str, str, dict[str, list[str]], Any]]


LEAVE_TIMEOUTS = [0]  # how many of the next leaves dockerd's 15-s stop runs out on


class FakeDockerAPI(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: Seen
    frozen: frozenset[str] = frozenset()  # paths read and never answered (dockerd SIGSTOPped)

    def log_message(self, *args: Any) -> None:
        pass

    def handle(self) -> None:
        with contextlib.suppress(OSError):  # the client closed its channel (between requests, or mid-answer)
            super().handle()

    def finish(self) -> None:
        with contextlib.suppress(OSError):  # the last flush, to a client that has gone
            super().finish()

    def _answer(self, status: int, body: Any, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.seen.append((method, url.path, parse_qs(url.query), body))
        path = url.path.removeprefix(f"/v{API_VERSION}")
        if path in self.frozen:
            self.rfile.read(1)  # no answer: until the client gives up and closes its end
            return None
        if path == "/version":
            return self._answer(200, {"Version": "20.10.24", "ApiVersion": "1.41"})
        if path == "/info":
            return self._answer(
                200, {"ServerVersion": "20.10.24", "Name": "h1", "Swarm": {"LocalNodeState": "inactive"}}
            )
        if path == "/services" and method == "GET":
            return self._answer(200, [{"ID": "s1", "Spec": {"Name": "web"}}])
        if path == "/services/missing":
            return self._answer(404, {"message": "service missing not found"})
        if path == "/nodes/n2/update":  # a node whose version moved on (it came back Ready) twice
            if NODE_CONFLICTS[0] > 0:
                NODE_CONFLICTS[0] -= 1
                return self._answer(500, {"message": "rpc error: code = Unknown desc = update out of sequence"})
            return self._answer(200, b"", "text/plain")
        if path.endswith("/update"):
            return self._answer(409, {"message": "update out of sequence"})
        if path == "/nodes" and NODE_CONFLICTS[1]:
            NODE_CONFLICTS[1] += 1
            return self._answer(200, [{"ID": "n2", "Version": {"Index": 40 + NODE_CONFLICTS[1]}, "Spec": {}}])
        if path == "/containers/create":
            return self._answer(404, {"message": "No such image: python:3-alpine"})
        if path == "/nodes":
            return self._answer(503, {"message": "This node is not a swarm manager."})
        if path == "/tasks":  # what Engine 20.10 and 26 answer when swarmkit's store times out
            return self._answer(500, {"message": "rpc error: code = DeadlineExceeded desc = context deadline exceeded"})
        if path == "/swarm/leave":  # dockerd's answer when its swarm node takes more than 15 s to stop
            if LEAVE_TIMEOUTS[0] > 0:
                LEAVE_TIMEOUTS[0] -= 1
                return self._answer(500, {"message": "context deadline exceeded"})
            return self._answer(200, b"", "text/plain")
        if path == "/containers/c1/json":
            return self._answer(200, {"Id": "c1", "Config": {"Tty": False}})
        if path == "/containers/c1/logs":
            frame = b"hello from the probe\n"
            return self._answer(200, struct.pack(">BxxxL", 1, len(frame)) + frame, "application/vnd.docker.raw-stream")
        return self._answer(500, {"message": f"unexpected {method} {path}"})

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_DELETE(self) -> None:
        self._route("DELETE")


class OldDockerAPI(FakeDockerAPI):
    """Docker Engine 19.03 (API 1.40): every versioned call refused, as moby's version middleware
    refuses a client newer than it, with the message moby writes; `/version` unversioned answers."""

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        self.seen.append((method, url.path, parse_qs(url.query), None))
        if url.path == "/version":
            return self._answer(200, {"Version": "19.03.15", "ApiVersion": "1.40"})
        message = f"client version {API_VERSION} is too new. Maximum supported API version is 1.40"
        return self._answer(400, {"message": message})


class TricklingDockerAPI(FakeDockerAPI):
    """An engine that answers a byte every 30 ms: each read well within the call's timeout, the
    whole answer not."""

    def _answer(self, status: int, body: Any, content_type: str = "application/json") -> None:
        data = json.dumps(body).encode()
        head = f"HTTP/1.1 {status} OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(data)}\r\n\r\n"
        raw = head.encode() + data
        for i in range(len(raw)):
            try:
                self.wfile.write(raw[i : i + 1])
            except OSError:
                return  # the client gave up
            time.sleep(0.03)


class FloodingDockerAPI(FakeDockerAPI):
    """An engine whose every answer is 3 MiB long (a broken or hostile engine's endless answer)."""

    def _answer(self, status: int, body: Any, content_type: str = "application/json") -> None:
        with contextlib.suppress(OSError):  # the client stopped reading
            super()._answer(status, {"Pad": "x" * (3 << 20)}, content_type)


class SocketPairConnection:
    """Stands in for transport.ssh.Connection: each channel to the engine's socket, and each
    `docker system dial-stdio` channel, is one end of a socket pair whose other end is served by
    FakeDockerAPI (no SSH server is involved here; tests/unit/test_ssh_host_keys.py runs one).
    ``refuse``: sshd refuses the socket. ``opened`` records each channel's way (``socket``,
    ``dial-stdio``, ``refused``); ``runs`` counts the commands run besides (the docker CLI asked
    why a channel broke)."""

    def __init__(
        self,
        host: Host,
        seen: Seen,
        api: type[FakeDockerAPI] = FakeDockerAPI,
        frozen: frozenset[str] = frozenset(),
        refuse: bool = False,
    ):
        self.host = host
        self.seen = seen
        self.api = api
        self.frozen = frozen
        self.refuse = refuse
        self.opened: list[str] = []
        self.runs = 0

    @property
    def channels(self) -> int:
        return sum(way != "refused" for way in self.opened)

    def open_socket(self, path: str) -> socket.socket:
        assert path == ENGINE_SOCKET
        if self.refuse:
            self.opened.append("refused")
            raise SocketRefused(self.host.name, f"its SSH server would not open {path}: open failed")
        return self._served("socket")

    def open_channel(self, argv: Any, sudo: bool | None = None) -> socket.socket:
        assert list(argv) == ["docker", "system", "dial-stdio"]
        return self._served("dial-stdio")

    def _served(self, way: str) -> socket.socket:
        ours, theirs = socket.socketpair()
        handler = type("Handler", (self.api,), {"seen": self.seen, "frozen": self.frozen})
        threading.Thread(target=handler, args=(theirs, ("fake", 0), None), daemon=True).start()
        self.opened.append(way)
        return ours

    def run(self, argv: Any, **kwargs: Any) -> CommandResult:
        self.runs += 1
        return CommandResult(self.host.name, "docker version", 0, "20.10.24\n", "")


HOST = Host("h1", "10.0.0.1", "manager", MappingProxyType({}), None, SSHSettings())


@pytest.fixture
def engine() -> Iterator[tuple[DockerEngine, Seen, SocketPairConnection]]:
    host = HOST
    seen: Seen = []
    conn = SocketPairConnection(host, seen)
    e = DockerEngine(host, conn, timeout=5)
    yield e, seen, conn
    e.close()


def test_requests_go_out_as_built_and_answers_come_back(
    engine: tuple[DockerEngine, Seen, SocketPairConnection],
) -> None:
    e, seen, _ = engine
    assert e.version()["Version"] == "20.10.24"
    assert e.services(filters={"label": ["com.docker.stack.namespace=st"]}, status=True)[0]["ID"] == "s1"
    method, path, query, _ = seen[-1]
    assert (method, path) == ("GET", f"/v{API_VERSION}/services")
    assert json.loads(query["filters"][0]) == {"label": ["com.docker.stack.namespace=st"]}
    assert query["status"] == ["1"]
    assert seen[0][1] == "/version"  # unversioned: an older engine still says what it is


def test_http_failures_become_typed_errors_naming_host_and_action(
    engine: tuple[DockerEngine, Seen, SocketPairConnection],
) -> None:
    e, seen, _ = engine
    with pytest.raises(NotFound) as nf:
        e.inspect_service("missing")
    assert nf.value.host == "h1" and "inspect service missing: service missing not found" in nf.value.message
    spec = {"Name": "web", "Labels": {"a": "b"}, "TaskTemplate": {"ContainerSpec": {"Image": "x:1"}}}
    with pytest.raises(Conflict):
        e.update_service("s1", 7, spec)
    method, path, query, body = seen[-1]
    assert (method, path, query["version"], body) == ("POST", f"/v{API_VERSION}/services/s1/update", ["7"], spec)
    with pytest.raises(ImageNotFound):
        e.run_container("python:3-alpine", ["python3"], "net", {"l": "v"}, "probe")
    with pytest.raises(Unavailable) as un:
        e.nodes()
    assert isinstance(un.value, EngineError) and "not a swarm manager" in un.value.message
    # a store that timed out is Busy: worth asking again, and not a lost quorum (not Unavailable)
    with pytest.raises(Busy) as busy:
        e.tasks()
    assert not isinstance(busy.value, Unavailable) and "list tasks: rpc error" in busy.value.message


def test_a_leave_whose_node_stop_ran_out_of_time_is_asked_again(
    engine: tuple[DockerEngine, Seen, SocketPairConnection],
) -> None:
    e, seen, _ = engine
    LEAVE_TIMEOUTS[0] = 2
    e.leave_swarm(force=True)
    leaves = [q for m, p, q, _ in seen if p.endswith("/swarm/leave")]
    assert leaves == [{"force": ["1"]}] * 3
    LEAVE_TIMEOUTS[0] = 5  # the node never stops: after three asks the engine's answer is the error
    with pytest.raises(EngineError) as err:
        e.leave_swarm(force=True)
    assert err.value.host == "h1" and "leave the swarm: context deadline exceeded" in err.value.message
    assert len([p for _, p, _, _ in seen if p.endswith("/swarm/leave")]) == 6
    LEAVE_TIMEOUTS[0] = 0


NODE_CONFLICTS = [0, 0]  # conflicts left to answer; /nodes answered (its count, 0: not a manager)


def test_a_node_update_out_of_sequence_is_written_again_at_the_nodes_current_version(
    engine: tuple[DockerEngine, Seen, SocketPairConnection],
) -> None:
    e, seen, _ = engine
    NODE_CONFLICTS[:] = [2, 1]
    try:
        e.update_node("n2", 7, {"Role": "worker"}, what="lab2")
        versions = [q["version"] for m, p, q, _ in seen if p.endswith("/nodes/n2/update")]
        assert versions == [["7"], ["42"], ["43"]]  # each time at the version the managers list
        NODE_CONFLICTS[:] = [5, 1]  # it keeps moving: after three writes the engine's answer is the error
        with pytest.raises(EngineError) as err:
            e.update_node("n2", 7, {"Role": "worker"}, what="lab2")
        assert "update node lab2" in err.value.message and "out of sequence" in err.value.message
    finally:
        NODE_CONFLICTS[:] = [0, 0]


def test_container_output_is_demultiplexed_by_the_sdk(engine: tuple[DockerEngine, Seen, SocketPairConnection]) -> None:
    e, _, _ = engine
    assert e.container_output("c1") == b"hello from the probe\n"


def test_s7_an_engine_that_trickles_its_answer_is_given_up_on_at_the_calls_timeout() -> None:
    # each byte comes within the timeout: a timeout per socket read would wait for the whole answer
    conn = SocketPairConnection(HOST, [], TricklingDockerAPI)
    e = DockerEngine(HOST, conn, timeout=1)
    t0 = time.monotonic()
    try:
        with pytest.raises(Unreachable) as err:
            e.version()
    finally:
        e.close()
    took = time.monotonic() - t0
    assert 1.0 <= took < 1.0 + 1.5, f"took {took:.1f}s"
    assert err.value.host == "h1" and "read engine version: Docker Engine did not answer in time" in err.value.message
    assert conn.runs == 0  # a hung engine is not diagnosed with the docker CLI: that would only wait again


def test_s7_an_engine_answer_over_the_byte_cap_is_refused() -> None:
    conn = SocketPairConnection(HOST, [], FloodingDockerAPI)
    e = DockerEngine(HOST, conn, timeout=5, max_response=1 << 20)
    try:
        with pytest.raises(EngineError) as err:
            e.info()
    finally:
        e.close()
    assert MAX_RESPONSE == 256 << 20  # the default cap
    assert not isinstance(err.value, Unreachable)
    assert err.value.host == "h1"
    assert err.value.message == "read engine info: the Docker Engine's answer ran over 1 MiB; not read"


def test_api_channels_go_to_the_engines_socket_and_a_sudo_host_through_dial_stdio() -> None:
    direct = SocketPairConnection(HOST, [])
    e = DockerEngine(HOST, direct, timeout=5)
    try:
        assert e.version()["Version"] == "20.10.24" and e.services()[0]["ID"] == "s1"
    finally:
        e.close()
    assert direct.opened == ["socket"]  # kept alive: one channel for both calls

    sudo = Host("h1", "10.0.0.1", "manager", MappingProxyType({}), None, SSHSettings(user="deploy", sudo=True))
    through = SocketPairConnection(sudo, [])
    e = DockerEngine(sudo, through, timeout=5)
    try:
        assert e.version()["Version"] == "20.10.24"
    finally:
        e.close()
    assert through.opened == ["dial-stdio"]  # the user may not open the socket: never tried


def test_a_refused_socket_sends_channels_through_dial_stdio_until_it_is_tried_again() -> None:
    conn = SocketPairConnection(HOST, [], refuse=True)
    e = DockerEngine(HOST, conn, timeout=5)
    try:
        assert e.version()["Version"] == "20.10.24"  # sshd refused the socket: dial-stdio answered
    finally:
        e.close()
    now = [1000.0]
    route = transport_engine._EngineRoute(conn, clock=lambda: now[0])  # how each new channel of a pool opens
    route.open().close()
    route.open().close()
    assert conn.opened == ["refused", "dial-stdio", "refused", "dial-stdio", "dial-stdio"]  # not asked again at once
    now[0] += transport_engine.DIRECT_RETRY
    conn.refuse = False  # the engine is back (a restart), or sshd's forwarding was turned on
    route.open().close()
    assert conn.opened[5:] == ["socket"]


def test_a_frozen_engine_is_waited_for_once_per_command() -> None:
    # dockerd SIGSTOPped: its socket accepts, nothing answers. A command asks it more than once
    # (bootstrap: the witness's info, then the read's): each waiting out its own timeout named the
    # engine only after twice the timeout
    conn = SocketPairConnection(HOST, [], frozen=frozenset({"/info", "/version"}))
    e = DockerEngine(HOST, conn, timeout=2)
    try:
        t0 = time.monotonic()
        with pytest.raises(Unreachable) as first:
            e.info()
        t1 = time.monotonic()
        with pytest.raises(Unreachable) as second:
            e.version()
        t2 = time.monotonic()
    finally:
        e.close()
    assert 1.5 <= t1 - t0 < 2.0 + 1.5, f"the first call took {t1 - t0:.1f}s"
    assert t2 - t1 < 1.0, f"the second call took {t2 - t1:.1f}s"
    assert "read engine info: Docker Engine did not answer in time" in first.value.message
    assert second.value.host == "h1" and second.value.message == (
        "read engine version: Docker Engine did not answer in time earlier in this command (read engine info); "
        "not asked again"
    )
    assert conn.channels == 1 and conn.runs == 0  # the second call was not sent, nor diagnosed


def test_a_container_wait_that_runs_out_leaves_the_engine_asked_again() -> None:
    # the engine holds a wait's answer until the container exits: its timeout says nothing of the engine
    conn = SocketPairConnection(HOST, [], frozen=frozenset({"/containers/c1/wait"}))
    e = DockerEngine(HOST, conn, timeout=5)
    try:
        with pytest.raises(Unreachable):
            e.wait_container("c1", timeout=1)
        assert e.version()["Version"] == "20.10.24"
    finally:
        e.close()


def test_an_engine_restart_gets_an_engine_that_asks_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # Session.forget_engine (after `systemctl restart docker`) drops the Engine that saw the timeout
    conn = SocketPairConnection(HOST, [], frozen=frozenset({"/info"}))
    with Session(Inventory(Path("hosts.yml"), (HOST,), MappingProxyType({}))) as session:
        monkeypatch.setattr(session.pool, "connection", lambda host: conn)
        before = session.engine("h1")
        before.timeout = 1
        with pytest.raises(Unreachable):
            before.info()
        with pytest.raises(Unreachable, match="earlier in this command"):
            before.version()
        session.forget_engine("h1")
        after = session.engine("h1")
        assert after is not before and after.version()["Version"] == "20.10.24"


def test_the_engine_is_read_and_its_version_checked_in_one_call() -> None:
    seen: Seen = []
    engine = DockerEngine(HOST, SocketPairConnection(HOST, seen))
    info = engine_info(engine)
    assert info["ServerVersion"] == "20.10.24" and info["Name"] == "h1"
    assert [(m, p) for m, p, _, _ in seen] == [("GET", f"/v{API_VERSION}/info")]


def test_an_engine_older_than_the_api_is_named_with_its_version() -> None:
    seen: Seen = []
    engine = DockerEngine(HOST, SocketPairConnection(HOST, seen, api=OldDockerAPI))
    with pytest.raises(HostError) as err:
        engine_info(engine)
    assert err.value.message == "Docker Engine 19.03.15 is too old: swarmctl needs 20.10 or newer"
    assert [p for _, p, _, _ in seen] == [f"/v{API_VERSION}/info", "/version"]


def test_an_engine_from_before_docker_17_06_is_named_with_its_version() -> None:
    # their refusal of a newer client was worded otherwise (RHEL 7's docker 1.13.1 still runs)
    class Older(OldDockerAPI):
        def _answer(self, status: int, body: Any, content_type: str = "application/json") -> None:
            if status == 200:
                body = {"Version": "1.13.1", "ApiVersion": "1.26"}
            else:
                body = {"message": "client is newer than server (client API version: 1.41, server API version: 1.26)"}
            super()._answer(status, body, content_type)

    engine = DockerEngine(HOST, SocketPairConnection(HOST, [], api=Older))
    with pytest.raises(HostError) as err:
        engine_info(engine)
    assert err.value.message == "Docker Engine 1.13.1 is too old: swarmctl needs 20.10 or newer"


def test_an_info_refused_for_another_reason_than_age_is_said_as_it_was() -> None:
    # an engine that calls the client too new while its version is recent enough: not an age
    # problem, so its own words stand (and nothing claims it is too old)
    class Contrary(OldDockerAPI):
        def _answer(self, status: int, body: Any, content_type: str = "application/json") -> None:
            super()._answer(status, {**body, "Version": "24.0.7"} if status == 200 else body, content_type)

    engine = DockerEngine(HOST, SocketPairConnection(HOST, [], api=Contrary))
    with pytest.raises(EngineError, match="is too new") as err:
        engine_info(engine)
    assert "too old" not in err.value.message


def test_a_session_works_on_every_host_of_a_few_dozen_at_once() -> None:
    # Each of 32 hosts waits until all 32 are being worked on: a session that took them in waves
    # (16 at a time, as the CLI's sessions did) breaks the barrier. No host is connected to.
    hosts = tuple(replace(HOST, name=f"h{i}", address=f"10.0.0.{i + 1}") for i in range(DEFAULT_PARALLEL))
    together = threading.Barrier(len(hosts), timeout=5)
    with Session(Inventory(Path("hosts.yml"), hosts, MappingProxyType({}))) as session:
        outcomes = session.fan_out(lambda host: together.wait())
    assert len(hosts) == 32 and all(o.ok for o in outcomes.values()), outcomes


@contextlib.contextmanager
def engine_over_ssh(tmp_path: Path, timeout: float, **server: Any) -> Iterator[DockerEngine]:
    """A DockerEngine over a real SSH connection to an SSH server in this process (``server``: what
    it serves, as ``ssh_server`` takes it), closed with the block."""
    with ssh_server(tmp_path, **server) as running:
        host = lab_host(running.port, running.client_key_file, tmp_path / "known_hosts", "accept-new")
        with Connection(host) as c:
            e = DockerEngine(host, c, timeout=timeout)
            try:
                yield e
            finally:
                e.close()


def test_a_frozen_engine_over_a_real_ssh_channel_is_waited_for_once_per_command(tmp_path: Path) -> None:
    # the same over paramiko's channel, as in production: an SSH server in this process runs the
    # fake engine as its `docker system dial-stdio` (it refuses the socket channel)
    api = type("Handler", (FakeDockerAPI,), {"seen": [], "frozen": frozenset({"/info"})})
    with engine_over_ssh(tmp_path, 2, command=lambda channel, command: api(channel, ("fake", 0), None)) as e:
        assert e.version()["Version"] == "20.10.24"
        t0 = time.monotonic()
        with pytest.raises(Unreachable) as first:
            e.info()
        t1 = time.monotonic()
        with pytest.raises(Unreachable) as second:
            e.version()
        t2 = time.monotonic()
    assert 1.5 <= t1 - t0 < 2.0 + 1.5, f"the first call took {t1 - t0:.1f}s"
    assert t2 - t1 < 1.0, f"the second call took {t2 - t1:.1f}s"
    assert "read engine info: Docker Engine did not answer in time" in first.value.message
    assert "read engine version: Docker Engine did not answer in time earlier in this command" in second.value.message


def test_the_engine_over_a_real_ssh_channel_to_its_socket(tmp_path: Path) -> None:
    # paramiko's own server opens the socket channel this paramiko build opens (swarmctl writes that
    # channel's open request itself); OpenSSH's parse of it is proven on the lab
    # (tests/e2e/test_bootstrap.py). Exec requests answer "ok": an engine asked through dial-stdio fails
    seen: Seen = []
    api = type("Handler", (FakeDockerAPI,), {"seen": seen})
    with engine_over_ssh(tmp_path, 5, unix_socket=lambda channel, _: api(channel, ("fake", 0), None)) as e:
        assert e.version()["Version"] == "20.10.24"
        assert e.services()[0]["ID"] == "s1"
    assert [path for _, path, _, _ in seen] == ["/version", f"/v{API_VERSION}/services"]


def test_a_socket_refused_by_the_ssh_server_is_a_typed_error_and_the_connection_goes_on(tmp_path: Path) -> None:
    with ssh_server(tmp_path, output=b"still here\n") as server:
        host = lab_host(server.port, server.client_key_file, tmp_path / "known_hosts", "accept-new")
        with Connection(host) as c:
            with pytest.raises(SocketRefused) as refused:
                c.open_socket(ENGINE_SOCKET)
            assert refused.value.host == "h1"
            assert refused.value.message == f"its SSH server would not open {ENGINE_SOCKET}: Connect failed"
            assert c.run(["true"]).stdout == "still here\n"
