"""The Engine's HTTP over an SSH channel, with the channel replaced by a socket pair whose other end
is an HTTP server in this process speaking the Docker API's shapes.

What this pins: requests travel through docker-py's APIClient and adapter as swarmctl mounts them
(a docker-py release that changes that fails here, not on a user's cluster), bodies go out exactly
as built, filters are encoded as the API wants, and every HTTP failure becomes its typed error.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from swarmctl.errors import Busy, Conflict, EngineError, ImageNotFound, NotFound, Unavailable
from swarmctl.inventory import Host, SSHSettings
from swarmctl.transport.engine import API_VERSION, Engine
from swarmctl.transport.ssh import CommandResult

Seen = list[tuple[str, str, dict[str, list[str]], Any]]


LEAVE_TIMEOUTS = [0]  # how many of the next leaves dockerd's 15-s stop runs out on


class FakeDockerAPI(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: Seen

    def log_message(self, *args: Any) -> None:
        pass

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
        if path == "/version":
            return self._answer(200, {"Version": "20.10.24", "ApiVersion": "1.41"})
        if path == "/services" and method == "GET":
            return self._answer(200, [{"ID": "s1", "Spec": {"Name": "web"}}])
        if path == "/services/missing":
            return self._answer(404, {"message": "service missing not found"})
        if path.endswith("/update"):
            return self._answer(409, {"message": "update out of sequence"})
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


class SocketPairConnection:
    """Stands in for transport.ssh.Connection: each `docker system dial-stdio` channel is one end
    of a socket pair whose other end is served by FakeDockerAPI (no SSH server is involved here;
    tests/unit/test_ssh_host_keys.py runs one)."""

    def __init__(self, host: Host, seen: Seen):
        self.host = host
        self.seen = seen
        self.channels = 0

    def open_channel(self, argv: Any, sudo: bool | None = None) -> socket.socket:
        assert list(argv) == ["docker", "system", "dial-stdio"]
        ours, theirs = socket.socketpair()
        handler = type("Handler", (FakeDockerAPI,), {"seen": self.seen})
        threading.Thread(target=handler, args=(theirs, ("fake", 0), None), daemon=True).start()
        self.channels += 1
        return ours

    def run(self, argv: Any, **kwargs: Any) -> CommandResult:
        return CommandResult(self.host.name, "docker version", 0, "20.10.24\n", "")


@pytest.fixture
def engine() -> Iterator[tuple[Engine, Seen, SocketPairConnection]]:
    host = Host("h1", "10.0.0.1", "manager", MappingProxyType({}), None, SSHSettings())
    seen: Seen = []
    conn = SocketPairConnection(host, seen)
    e = Engine(host, conn, timeout=5)  # type: ignore[arg-type]
    yield e, seen, conn
    e.close()


def test_requests_go_out_as_built_and_answers_come_back(engine: tuple[Engine, Seen, SocketPairConnection]) -> None:
    e, seen, _ = engine
    assert e.version()["Version"] == "20.10.24"
    assert e.services(filters={"label": ["com.docker.stack.namespace=st"]}, status=True)[0]["ID"] == "s1"
    method, path, query, _ = seen[-1]
    assert (method, path) == ("GET", f"/v{API_VERSION}/services")
    assert json.loads(query["filters"][0]) == {"label": ["com.docker.stack.namespace=st"]}
    assert query["status"] == ["1"]
    assert seen[0][1] == "/version"  # unversioned: an older engine still says what it is


def test_http_failures_become_typed_errors_naming_host_and_action(
    engine: tuple[Engine, Seen, SocketPairConnection],
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
    engine: tuple[Engine, Seen, SocketPairConnection],
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


def test_container_output_is_demultiplexed_by_the_sdk(engine: tuple[Engine, Seen, SocketPairConnection]) -> None:
    e, _, _ = engine
    assert e.container_output("c1") == b"hello from the probe\n"
