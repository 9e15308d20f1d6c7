"""The Docker Engine of each host, over swarmctl's own SSH connections: typed calls, typed errors.

docker-py's ``ssh://`` support reads ``~/.ssh/config`` and ``~/.ssh/known_hosts`` only. swarmctl's
inventory has its own identity file, port, known_hosts and sudo, so the HTTP requests run over
channels of the host's existing paramiko connection: straight to the engine's socket, which the
host's sshd connects (``ssh -L`` to a socket), or, where that is refused or the host needs sudo,
through ``docker system dial-stdio`` (what the docker CLI runs for ``DOCKER_HOST=ssh://``).

Everything above this module calls :class:`Engine`'s methods, never docker-py: swarm specs travel
as the JSON swarmctl built (no SDK reshaping), and every failure is one of the typed errors of
``swarmctl.errors`` (``NotFound``, ``Conflict``, ``Unavailable``, ``Unreachable``...), which callers
branch on instead of matching message text. Only docker-py's public API is used.
"""

from __future__ import annotations

import io
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import docker
import docker.errors
import requests
import urllib3
import urllib3.connection
import urllib3.connectionpool
from docker.transport.basehttpadapter import BaseHTTPAdapter

from swarmctl.errors import (
    Busy,
    Conflict,
    EngineError,
    HostError,
    ImageNotFound,
    NotFound,
    SocketRefused,
    SwarmctlError,
    Unauthorized,
    Unavailable,
    Unreachable,
)
from swarmctl.inventory import Host, Inventory
from swarmctl.transport.ssh import DEFAULT_PARALLEL, CommandResult, Outcome, Pool, human_size

log = logging.getLogger(__name__)
# urllib3 logs request lines at DEBUG; request bodies (join tokens, secret data) are never logged,
# but keep the transport quiet so -v output stays about swarmctl
logging.getLogger("urllib3").setLevel(logging.WARNING)

# The API version swarmctl speaks: Docker Engine 20.10's. Newer engines serve it unchanged, so
# specs mean the same thing on every supported engine.
API_VERSION = "1.41"
MIN_ENGINE = (20, 10)
# An API call's whole time, request sent and answer read (not each socket read's: an engine sending
# a byte a second would keep one call alive for ever); a host whose engine does not answer in that
# time is named as failed
DEFAULT_TIMEOUT = 30.0
# The most one API answer may bring back: answers are read whole into memory, then parsed. The
# largest swarmctl reads are the task and service lists of a big swarm (a few KiB a task: tens of
# MiB for thousands of tasks); 256 MiB leaves them room and bounds what a broken or hostile engine
# that answers without end costs this process.
MAX_RESPONSE = 256 << 20
_POOL_SIZE = 4
# The engine's socket, where its API channels go first (unless the host needs sudo); after sshd
# refused it, channels go through `docker system dial-stdio` for this long before it is tried again
ENGINE_SOCKET = "/var/run/docker.sock"
DIRECT_RETRY = 10.0
_SEND_CHUNK = 32 * 1024  # an SSH packet: each send waits for the channel's window with what is left
_READ_BUFFER = 64 * 1024

T = TypeVar("T")
Filters = Mapping[str, Iterable[str]]


class _CallTimedOut(Exception):
    """An API call ran past its whole-call deadline. Not an OSError: urllib3 and requests pass it up
    untouched (no retry, no rewrapping as a connection error), for translate() to name."""

    def __init__(self, timeout: float):
        super().__init__(f"no complete answer within {timeout:g}s")
        self.timeout = timeout


class _AnswerTooLarge(Exception):
    """An API answer ran over its byte cap (passed up untouched, as _CallTimedOut)."""

    def __init__(self, limit: int):
        super().__init__(f"its answer ran over {human_size(limit)}")
        self.limit = limit


class SSHCommands(Protocol):
    """What an engine needs of its host's SSH connection (transport.ssh.Connection): a channel to
    the engine's socket, a channel running a command (``docker system dial-stdio``), and a
    command's result (the docker CLI asked why a channel broke). The unit tier's socket-pair
    stand-in implements it too."""

    host: Host

    def open_socket(self, path: str) -> Any: ...

    def open_channel(self, argv: Sequence[str] | str, sudo: bool | None = None) -> Any: ...

    def run(self, argv: Sequence[str] | str, *, timeout: float = ...) -> CommandResult: ...


class _CallBudget:
    """The limits of the API call under way on one API channel: a deadline for the whole
    call and a cap on the bytes of its answer. urllib3's timeout bounds each socket read alone."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.timeout = 0.0
        self.deadline = 0.0
        self.received = 0

    def start(self, timeout: float) -> None:
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.received = 0

    def left(self) -> float:
        """Seconds left of the call.

        Raises:
            _CallTimedOut: the call's deadline has passed.
        """
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _CallTimedOut(self.timeout)
        return left

    def count(self, n: int) -> None:
        self.received += n
        if self.received > self.max_bytes:
            raise _AnswerTooLarge(self.max_bytes)


class _BoundedChannel:
    """An API channel as http.client's socket: every send and read of it gets what is left of
    the call's deadline as its timeout, and every byte read counts against the answer's cap.

    The channel is a paramiko Channel (a socket in the unit tests); both have send, recv,
    settimeout, fileno and close, which is all this uses.
    """

    def __init__(self, channel: Any, budget: _CallBudget):
        self._channel = channel
        self._budget = budget

    def settimeout(self, timeout: float | None) -> None:
        """urllib3 sets its per-read timeout here; each send and read sets what is left of the
        call's own instead."""

    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        while view:
            self._channel.settimeout(self._budget.left())
            try:
                n = self._channel.send(bytes(view[:_SEND_CHUNK]))
            except TimeoutError:
                raise _CallTimedOut(self._budget.timeout) from None
            if not n:  # paramiko: the channel closed under the send
                raise BrokenPipeError("the API channel closed")
            view = view[n:]

    def recv(self, size: int) -> bytes:
        self._channel.settimeout(self._budget.left())
        try:
            data = bytes(self._channel.recv(size))
        except TimeoutError:
            raise _CallTimedOut(self._budget.timeout) from None
        self._budget.count(len(data))
        return data

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        """http.client's response file. Its own (not paramiko's ChannelFile, whose collection after
        a closed channel prints an ignored flush error with its traceback to stderr)."""
        return io.BufferedReader(_ChannelReader(self), _READ_BUFFER)

    def fileno(self) -> int:  # urllib3 polls it to see whether a pooled channel is still open
        return int(self._channel.fileno())

    def close(self) -> None:
        self._channel.close()


class _ChannelReader(io.RawIOBase):
    """The raw byte stream of a _BoundedChannel (closing it leaves the channel to http.client)."""

    def __init__(self, channel: _BoundedChannel):
        super().__init__()
        self._channel = channel

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._channel.recv(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _EngineRoute:
    """How one host's API channels reach its engine.

    Straight to the engine's socket where the host's sshd connects it: nothing is started on the
    host for a channel (24 lab hosts opening a channel and answering a ping at once: 8 ms each,
    against 210 ms through ``docker system dial-stdio``, whose docker CLI each channel starts).
    Through dial-stdio where the host needs sudo (the SSH user may not open the socket), and for
    ``DIRECT_RETRY`` seconds after sshd refused the socket: forwarding off, the socket absent (an
    engine restarting, or one listening elsewhere) or not the user's, which OpenSSH answers alike.
    """

    def __init__(self, ssh: SSHCommands, clock: Callable[[], float] = time.monotonic):
        self._ssh = ssh
        self._clock = clock
        self._refused_at: float | None = None
        self._lock = threading.Lock()

    def open(self) -> Any:
        if not self._ssh.host.ssh.sudo and self._direct_now():
            try:
                return self._ssh.open_socket(ENGINE_SOCKET)
            except SocketRefused as e:
                with self._lock:
                    self._refused_at = self._clock()
                log.debug("%s; through docker system dial-stdio", e)
        return self._ssh.open_channel(["docker", "system", "dial-stdio"])

    def _direct_now(self) -> bool:
        with self._lock:
            return self._refused_at is None or self._clock() - self._refused_at >= DIRECT_RETRY


class _ChannelConnection(urllib3.connection.HTTPConnection):
    def __init__(self, route: _EngineRoute, timeout: float, max_response: int):
        super().__init__("localhost", timeout=timeout)
        self._route = route
        self._default_timeout = timeout
        self._budget = _CallBudget(max_response)

    def connect(self) -> None:
        self.sock = _BoundedChannel(self._route.open(), self._budget)

    def request(self, *args: Any, **kwargs: Any) -> None:
        """A call's budget starts with its request (opening the channel included, when it opens
        one). urllib3 has just set ``timeout`` to the call's: requests' single number is both its
        connect and its read timeout."""
        timeout = self.timeout if isinstance(self.timeout, (int, float)) else self._default_timeout
        self._budget.start(float(timeout))
        super().request(*args, **kwargs)


class _ChannelPool(urllib3.connectionpool.HTTPConnectionPool):
    def __init__(self, ssh: SSHCommands, timeout: float, max_response: int):
        super().__init__("localhost", timeout=timeout, maxsize=_POOL_SIZE)
        self._route = _EngineRoute(ssh)
        self._channel_timeout = timeout
        self._max_response = max_response

    def _new_conn(self) -> _ChannelConnection:  # urllib3's documented extension point
        return _ChannelConnection(self._route, self._channel_timeout, self._max_response)


class _ChannelAdapter(BaseHTTPAdapter):
    def __init__(self, ssh: SSHCommands, timeout: float, max_response: int):
        super().__init__()
        self._pool = _ChannelPool(ssh, timeout, max_response)

    def get_connection(self, url: str | bytes, proxies: Any = None) -> _ChannelPool:
        return self._pool

    def close(self) -> None:
        super().close()
        self._pool.close()


_BASE_URL = "http+docker://ssh"


class _SSHAPIClient(docker.APIClient):
    """docker.APIClient whose requests travel over an existing SSH connection.

    It is built for a placeholder socket that is never opened; its adapters are replaced by one
    mounted (requests' public ``mount``) on the URL prefix every request of this client uses.
    """

    def __init__(self, ssh: SSHCommands, timeout: float, max_response: int):
        super().__init__(base_url="unix:///nonexistent/swarmctl.sock", version=API_VERSION, timeout=int(timeout))
        for adapter in self.adapters.values():
            adapter.close()
        self.adapters.clear()
        self.mount(_BASE_URL, _ChannelAdapter(ssh, timeout, max_response))
        self.base_url = _BASE_URL
        # no proxy variables or ~/.netrc for requests that travel over SSH: requests reads the
        # environment on every request otherwise (at 24 hosts, a tenth of a bootstrap's CPU here)
        self.trust_env = False


def explain(e: BaseException) -> str:
    """The useful part of a Docker API error."""
    if isinstance(e, docker.errors.APIError):
        text = e.explanation if isinstance(e.explanation, str) and e.explanation else str(e)
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        return text.strip()
    return str(e).strip() or type(e).__name__


_BY_STATUS: dict[int, type[EngineError]] = {401: Unauthorized, 404: NotFound, 409: Conflict, 503: Unavailable}


@contextmanager
def translate(host: str, action: str) -> Iterator[None]:
    """Turn Docker SDK and transport errors into the typed EngineError naming the host and the action."""
    try:
        yield
    except SwarmctlError:
        raise
    except docker.errors.ImageNotFound as e:
        raise ImageNotFound(host, f"{action}: {explain(e)}") from e
    except docker.errors.APIError as e:
        cls = _BY_STATUS.get(e.status_code or 0, EngineError)
        if "does not have a leader" in explain(e):  # 500 on Engine 20.10: no quorum is unavailability
            cls = Unavailable
        elif e.status_code == 500 and "code = DeadlineExceeded" in explain(e):  # swarmkit's store timed out
            cls = Busy
        raise cls(host, f"{action}: {explain(e)}{_hint(explain(e))}") from e
    except (requests.exceptions.Timeout, _CallTimedOut) as e:
        raise Unreachable(host, f"{action}: Docker Engine did not answer in time over SSH ({_short(e)})") from e
    except _AnswerTooLarge as e:
        raise EngineError(host, f"{action}: the Docker Engine's answer ran over {human_size(e.limit)}; not read") from e
    except requests.exceptions.RequestException as e:
        raise Unreachable(host, f"{action}: Docker Engine did not answer over SSH ({_short(e)})") from e
    except docker.errors.DockerException as e:
        raise EngineError(host, f"{action}: {explain(e)}") from e
    except (OSError, urllib3.exceptions.HTTPError) as e:
        raise Unreachable(host, f"{action}: connection to the Docker Engine failed ({_short(e)})") from e


def _timed_out(e: Unreachable) -> bool:
    """The engine did not answer in time (rather than the channel to it breaking)."""
    return isinstance(e.__cause__, (requests.exceptions.Timeout, _CallTimedOut))


_LEAVE_ASKS = 3


def _stop_timed_out(e: EngineError) -> bool:
    """The engine's own wait ran out (HTTP 500 "context deadline exceeded"), not a refusal."""
    return type(e) in (EngineError, Busy) and "context deadline exceeded" in e.message.lower()


def _hint(text: str) -> str:
    """What to do about the engine errors whose own words do not say."""
    lower = text.lower()
    if "does not have a leader" in lower or "lost quorum" in lower:
        return (
            " (the managers have no quorum: bring the stopped managers back; if a majority is gone for good, "
            "run `swarmctl recover`)"
        )
    if "swarm is encrypted and needs to be unlocked" in lower or "swarm is locked" in lower:
        return " (locked: run `swarmctl unlock`)"
    return ""


def _short(e: BaseException) -> str:
    text = str(e)
    # requests nests the whole urllib3 retry story; the innermost reason is what a user needs
    m = re.search(r"\(Caused by [A-Za-z]+\((.*)\)\)$", text)
    return (m.group(1) if m else text)[:200]


def missing_cli_message(package: str, has_engine: bool) -> str:
    """Why a host without the docker CLI cannot be used, and what to install there (pure)."""
    why = (
        "swarmctl needs it for `docker system dial-stdio`, its way to the engine where sshd does not forward "
        "the engine's socket"
    )
    if package == "docker-ce-cli":
        fix = "install docker-ce-cli (Docker's own packages)"
    elif package == "docker-cli":
        fix = "install docker-cli (Debian 13+ packages the CLI apart from docker.io, which only recommends it)"
    elif has_engine:
        fix = "install the docker CLI (docker-cli on Debian 13+, docker-ce-cli with Docker's own packages)"
    else:
        fix = "install Docker Engine and its CLI (docker.io + docker-cli on Debian 13+, or docker-ce + docker-ce-cli)"
    return f"no docker CLI on the host: {why}; {fix}"


def _auth(registry_auth: str | None) -> dict[str, str]:
    return {"X-Registry-Auth": registry_auth} if registry_auth else {}


def _filters(filters: Filters | None) -> dict[str, str]:
    """The API's ``filters`` query parameter: JSON of {name: [values]}."""
    if not filters:
        return {}
    return {"filters": json.dumps({k: [v] if isinstance(v, str) else list(v) for k, v in filters.items()})}


class Engine(Protocol):
    """What swarmctl asks of a Docker Engine: everything above the transport is written against
    this protocol, which ``DockerEngine`` (the real one, over SSH) and the unit tier's fakes
    (tests/unit/fakeengine.py, checked by mypy) both implement."""

    @property
    def name(self) -> str: ...

    def info(self) -> dict[str, Any]: ...

    def version(self) -> dict[str, Any]: ...

    def inspect_swarm(self) -> dict[str, Any]: ...

    def init_swarm(
        self,
        advertise_addr: str,
        listen_addr: str,
        force_new_cluster: bool = False,
        autolock: bool = False,
        spec: Mapping[str, Any] | None = None,
    ) -> str: ...

    def update_swarm(
        self,
        version: int,
        spec: Mapping[str, Any],
        rotate_worker_token: bool = False,
        rotate_manager_token: bool = False,
        rotate_unlock_key: bool = False,
        what: str = "update the swarm",
    ) -> None: ...

    def unlock_key(self) -> str: ...

    def unlock_swarm(self, key: str) -> None: ...

    def join_swarm(self, remote_addrs: list[str], token: str, advertise_addr: str, listen_addr: str) -> None: ...

    def leave_swarm(self, force: bool = False) -> None: ...

    def nodes(self) -> list[dict[str, Any]]: ...

    def inspect_node(self, node_id: str) -> dict[str, Any]: ...

    def update_node(self, node_id: str, version: int, spec: Mapping[str, Any], what: str = "") -> None: ...

    def remove_node(self, node_id: str, force: bool = False, what: str = "") -> None: ...

    def services(self, filters: Filters | None = None, status: bool = False) -> list[dict[str, Any]]: ...

    def inspect_service(self, ident: str) -> dict[str, Any]: ...

    def create_service(self, spec: Mapping[str, Any], registry_auth: str | None = None) -> dict[str, Any]: ...

    def update_service(
        self,
        ident: str,
        version: int,
        spec: Mapping[str, Any],
        rollback: bool = False,
        what: str = "",
        registry_auth: str | None = None,
    ) -> dict[str, Any]: ...

    def images(self) -> list[dict[str, Any]]: ...

    def inspect_image(self, ref: str) -> dict[str, Any]: ...

    def tag_image(self, image_id: str, ref: str) -> None: ...

    def login(self, auth: Mapping[str, str]) -> None: ...

    def distribution(self, image: str, registry_auth: str | None = None) -> dict[str, Any]: ...

    def remove_service(self, ident: str, what: str = "") -> None: ...

    def tasks(self, filters: Filters | None = None) -> list[dict[str, Any]]: ...

    def networks(self, filters: Filters | None = None) -> list[dict[str, Any]]: ...

    def create_network(self, body: Mapping[str, Any]) -> dict[str, Any]: ...

    def remove_network(self, ident: str, what: str = "") -> None: ...

    def objects(self, kind: str, filters: Filters | None = None) -> list[dict[str, Any]]: ...

    def create_object(self, kind: str, body: Mapping[str, Any]) -> dict[str, Any]: ...

    def update_object(self, kind: str, ident: str, version: int, spec: Mapping[str, Any], what: str = "") -> None: ...

    def remove_object(self, kind: str, ident: str, what: str = "") -> None: ...

    def containers(self, label: str) -> list[dict[str, Any]]: ...

    def run_container(
        self, image: str, command: list[str], network: str, labels: Mapping[str, str], name: str
    ) -> str: ...

    def wait_container(self, ident: str, timeout: float) -> int: ...

    def container_output(self, ident: str, stderr: bool = False) -> bytes: ...

    def remove_container(self, ident: str) -> None: ...

    def close(self) -> None: ...


class DockerEngine:
    """The Docker Engine of one host, reached over its SSH connection.

    ``timeout`` bounds each API call as a whole (see DEFAULT_TIMEOUT), ``max_response`` the bytes
    of each answer (see MAX_RESPONSE).
    """

    def __init__(
        self, host: Host, ssh: SSHCommands, timeout: float = DEFAULT_TIMEOUT, max_response: int = MAX_RESPONSE
    ):
        self.host = host
        self.ssh = ssh
        self.timeout = timeout
        self._api = _SSHAPIClient(ssh, timeout, max_response)
        self._silent_on = ""  # the first call the engine did not answer in time, once one timed out
        self._silent_lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.host.name

    def _call(self, action: str, fn: Callable[..., T], *args: Any, held: bool = False, **kwargs: Any) -> T:
        """Call an SDK method; errors name this host and ``action``.

        Once the engine did not answer a call in time, every later call of this Engine fails at
        once (Unreachable naming that first call) instead of waiting out its own timeout: a frozen
        engine (dockerd stopped, its socket still accepting) would otherwise cost a whole timeout
        per call, and bootstrap, which reads ``info``, then ``version`` and ``info`` again, named it
        only after 60 s. An engine restart drops its Engine (``Session.forget_engine``): the next
        one asks again. ``held``: the engine holds this answer until other work ends (a container's
        exit), so its timeout says nothing of the engine itself and marks nothing.
        """
        if self._silent_on:
            raise Unreachable(
                self.name,
                f"{action}: Docker Engine did not answer in time earlier in this command "
                f"({self._silent_on}); not asked again",
            )
        try:
            with translate(self.name, action):
                return fn(*args, **kwargs)
        except Unreachable as e:
            if _timed_out(e):
                if not held:
                    with self._silent_lock:
                        self._silent_on = self._silent_on or action
                raise  # a hung engine: asking the docker CLI would only wait again
            reason = self._diagnose()
            if reason:
                raise Unreachable(self.name, f"{action}: {reason}") from e
            raise

    def _diagnose(self) -> str:
        """Why the API channel broke, in the docker CLI's words (its stderr is not ours to read)."""
        try:
            res = self.ssh.run(["docker", "version", "--format", "{{.Server.Version}}"], timeout=15)
        except SwarmctlError:
            return ""
        if res.ok:
            return ""
        if res.rc == 127:  # the shell found no `docker` (which preflight requires: dial-stdio is its fallback)
            return missing_cli_message("", has_engine=True)
        lines = (res.stderr.strip() or res.stdout.strip()).splitlines()
        reason = lines[-1] if lines else f"docker exited with status {res.rc}"
        if "permission denied" in reason.lower() and not self.host.ssh.sudo:
            reason += f" (user {self.host.ssh.user} may not use Docker: add it to the docker group or set `sudo: true`)"
        return reason

    def _json(
        self,
        action: str,
        method: str,
        path: str,
        *args: str,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        versioned: bool = True,
        headers: Mapping[str, str] | None = None,
        safe: str = "",
        held: bool = False,
    ) -> Any:
        """One API request with a JSON body sent exactly as built; ``path``'s ``{}`` are filled,
        quoted (``safe``: characters left as they are, as ``/`` in an image name; ``held``: see
        ``_call``)."""
        prefix = f"{self._api.base_url}/v{API_VERSION}" if versioned else self._api.base_url
        url = prefix + path.format(*(quote(a, safe=safe) for a in args))
        data = None if body is None else json.dumps(body)
        headers = {**({"Content-Type": "application/json"} if data is not None else {}), **(headers or {})}

        def send() -> Any:
            response = self._api.request(
                method, url, data=data, params=dict(params or {}), headers=headers, timeout=timeout or self.timeout
            )
            try:
                response.raise_for_status()
            except requests.exceptions.HTTPError as e:
                docker.errors.create_api_error_from_http_exception(e)  # raises the typed docker error
            if response.headers.get("Content-Type", "").startswith("application/json"):
                return response.json()
            return response.text

        return self._call(action, send, held=held)

    # -- engine and swarm ------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        return dict(self._json("read engine info", "GET", "/info"))

    def version(self) -> dict[str, Any]:
        # unversioned: an engine older than API_VERSION must still say which version it is
        return dict(self._json("read engine version", "GET", "/version", versioned=False))

    def inspect_swarm(self) -> dict[str, Any]:
        return dict(self._json("read the swarm", "GET", "/swarm"))

    def init_swarm(
        self,
        advertise_addr: str,
        listen_addr: str,
        force_new_cluster: bool = False,
        autolock: bool = False,
        spec: Mapping[str, Any] | None = None,
    ) -> str:
        """Initialize a swarm here; ``force_new_cluster``: a one-manager swarm from this manager's raft state.
        ``spec``: swarm settings to write at once; the engine merges its non-zero fields into the
        cluster's, but always writes ``CAConfig.ForceRotate`` and ``EncryptionConfig.AutoLockManagers``
        (a forced cluster whose root CA was rotated starts another rotation when they are left 0)."""
        body: dict[str, Any] = {"AdvertiseAddr": advertise_addr, "ListenAddr": listen_addr}
        if spec:
            body["Spec"] = dict(spec)
        if force_new_cluster:
            body["ForceNewCluster"] = True
        if autolock:
            body["AutoLockManagers"] = True
        what = "force a new cluster from this manager's state" if force_new_cluster else "initialize the swarm"
        return str(self._json(what, "POST", "/swarm/init", body=body, timeout=2 * DEFAULT_TIMEOUT))

    def update_swarm(
        self,
        version: int,
        spec: Mapping[str, Any],
        rotate_worker_token: bool = False,
        rotate_manager_token: bool = False,
        rotate_unlock_key: bool = False,
        what: str = "update the swarm",
    ) -> None:
        params = {
            "version": version,
            "rotateWorkerToken": str(rotate_worker_token).lower(),
            "rotateManagerToken": str(rotate_manager_token).lower(),
            "rotateManagerUnlockKey": str(rotate_unlock_key).lower(),
        }
        self._json(what, "POST", "/swarm/update", body=dict(spec), params=params)

    def unlock_key(self) -> str:
        """The swarm's current unlock key ("" when autolock is off). Never log or print it."""
        return str((self._json("read the unlock key", "GET", "/swarm/unlockkey") or {}).get("UnlockKey") or "")

    def unlock_swarm(self, key: str) -> None:
        """Unlock this (locked) manager with ``key``; no error ever carries the key."""
        try:
            self._json("unlock the swarm", "POST", "/swarm/unlock", body={"UnlockKey": key})
        except HostError as e:
            raise type(e)(e.host, e.message.replace(key, "<unlock key>")) from None

    def join_swarm(self, remote_addrs: list[str], token: str, advertise_addr: str, listen_addr: str) -> None:
        body = {
            "RemoteAddrs": remote_addrs,
            "JoinToken": token,
            "AdvertiseAddr": advertise_addr,
            "ListenAddr": listen_addr,
        }
        try:
            # a join answers once the node is in: it may take longer than an ordinary call
            self._json("join the swarm", "POST", "/swarm/join", body=body, timeout=2 * DEFAULT_TIMEOUT)
        except HostError as e:
            # the engine's message should never carry the token, but make sure no error ever does
            raise type(e)(e.host, e.message.replace(token, "<join token>")) from None

    def leave_swarm(self, force: bool = False) -> None:
        """Leave the swarm. dockerd gives its swarm node 15 s to stop and, when the node takes longer
        (a loaded host), answers 500 "context deadline exceeded" with the node still stopping and the
        host still in the swarm; asking again waits on that same stop. Asked up to three times."""
        params = {"force": "1" if force else "0"}
        for attempt in range(1, _LEAVE_ASKS + 1):
            try:
                self._json("leave the swarm", "POST", "/swarm/leave", params=params, timeout=self.timeout + 20)
                return
            except EngineError as e:
                if attempt == _LEAVE_ASKS or not _stop_timed_out(e):
                    raise
                log.info("%s: its swarm node did not stop in dockerd's 15 s (%s); asking again", self.name, e.message)

    def nodes(self) -> list[dict[str, Any]]:
        return list(self._json("list swarm nodes", "GET", "/nodes"))

    def inspect_node(self, node_id: str) -> dict[str, Any]:
        return dict(self._json(f"read node {node_id[:12]}", "GET", "/nodes/{}", node_id))

    def update_node(self, node_id: str, version: int, spec: Mapping[str, Any], what: str = "") -> None:
        """Write a node's spec at ``version``. Swarm bumps a node's version when its status changes
        too (a node coming back Ready after a rejoin): "update out of sequence" is answered by
        writing the same spec at the node's current version, up to twice more."""
        for attempt in range(3):
            try:
                self._json(f"update node {what or node_id[:12]}", "POST", "/nodes/{}/update", node_id,
                           body=dict(spec), params={"version": version})  # fmt: skip
                return
            except EngineError as e:
                if "out of sequence" not in e.message or attempt == 2:
                    raise
                fresh = next((n for n in self.nodes() if n.get("ID") == node_id), None)
                if fresh is None:
                    raise
                version = int(fresh["Version"]["Index"])

    def remove_node(self, node_id: str, force: bool = False, what: str = "") -> None:
        self._json(f"remove node {what or node_id[:12]}", "DELETE", "/nodes/{}", node_id,
                   params={"force": "1" if force else "0"})  # fmt: skip

    # -- services and tasks ----------------------------------------------------------------------

    def services(self, filters: Filters | None = None, status: bool = False) -> list[dict[str, Any]]:
        params = {**_filters(filters), **({"status": "1"} if status else {})}
        return list(self._json("list services", "GET", "/services", params=params))

    def inspect_service(self, ident: str) -> dict[str, Any]:
        return dict(self._json(f"inspect service {ident}", "GET", "/services/{}", ident))

    def create_service(self, spec: Mapping[str, Any], registry_auth: str | None = None) -> dict[str, Any]:
        """Create a service; ``registry_auth`` (an X-Registry-Auth value) lets every node pull its image."""
        what = f"create service {spec.get('Name', '')}"
        return dict(self._json(what, "POST", "/services/create", body=dict(spec), headers=_auth(registry_auth)))

    def update_service(
        self,
        ident: str,
        version: int,
        spec: Mapping[str, Any],
        rollback: bool = False,
        what: str = "",
        registry_auth: str | None = None,
    ) -> dict[str, Any]:
        """Write a service spec (or ask swarm to roll back to the previous one); returns the answer."""
        params: dict[str, Any] = {"version": version}
        if rollback:
            params["rollback"] = "previous"
        verb = "roll back" if rollback else "update"
        answer = self._json(
            f"{verb} service {what or ident}",
            "POST",
            "/services/{}/update",
            ident,
            body=dict(spec),
            params=params,
            headers=_auth(registry_auth),
        )
        return dict(answer or {})

    # -- images ----------------------------------------------------------------------------------

    def images(self) -> list[dict[str, Any]]:
        return list(self._json("list images", "GET", "/images/json"))

    def inspect_image(self, ref: str) -> dict[str, Any]:
        return dict(self._json(f"inspect image {ref}", "GET", "/images/{}/json", ref, safe="/:@"))

    def tag_image(self, image_id: str, ref: str) -> None:
        """Give an image (by ID) the name ``ref`` (repo[:tag])."""
        slash, colon = ref.rfind("/"), ref.rfind(":")
        repo, tag = (ref[:colon], ref[colon + 1 :]) if colon > slash else (ref, "latest")
        self._json(f"tag {image_id[:19]} as {ref}", "POST", "/images/{}/tag", image_id,
                   params={"repo": repo, "tag": tag})  # fmt: skip

    # -- registries ------------------------------------------------------------------------------

    def login(self, auth: Mapping[str, str]) -> None:
        """Check credentials against a registry (POST /auth; the engine talks to the registry).

        Raises:
            Unauthorized: the registry refused them.
        """
        try:
            self._json(f"log in to {auth.get('serveraddress', '')}", "POST", "/auth", body=dict(auth))
        except Unauthorized:
            raise
        except EngineError as e:
            # Engine 20.10 answers a refused login with 500 and the registry's status in words
            # ("login attempt to https://.../v2/ failed with status: 401 Unauthorized")
            if "status: 401" in e.message:
                raise Unauthorized(e.host, e.message) from None
            raise

    def distribution(self, image: str, registry_auth: str | None = None) -> dict[str, Any]:
        """The registry's descriptor of an image (its digest), asked through this engine."""
        what = f"look up {image} on its registry"
        return dict(self._json(what, "GET", "/distribution/{}/json", image, headers=_auth(registry_auth), safe="/:@"))

    def remove_service(self, ident: str, what: str = "") -> None:
        self._json(f"remove service {what or ident}", "DELETE", "/services/{}", ident)

    def tasks(self, filters: Filters | None = None) -> list[dict[str, Any]]:
        return list(self._json("list tasks", "GET", "/tasks", params=_filters(filters)))

    # -- networks, secrets, configs --------------------------------------------------------------

    def networks(self, filters: Filters | None = None) -> list[dict[str, Any]]:
        return list(self._json("list networks", "GET", "/networks", params=_filters(filters)))

    def create_network(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self._json(f"create network {body.get('Name', '')}", "POST", "/networks/create", body=dict(body)))

    def remove_network(self, ident: str, what: str = "") -> None:
        self._json(f"remove network {what or ident}", "DELETE", "/networks/{}", ident)

    def objects(self, kind: str, filters: Filters | None = None) -> list[dict[str, Any]]:
        """Secrets or configs (``kind``: secret | config)."""
        return list(self._json(f"list {kind}s", "GET", f"/{kind}s", params=_filters(filters)))

    def create_object(self, kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self._json(f"create {kind} {body.get('Name', '')}", "POST", f"/{kind}s/create", body=dict(body)))

    def update_object(self, kind: str, ident: str, version: int, spec: Mapping[str, Any], what: str = "") -> None:
        self._json(f"update {kind} {what or ident}", "POST", f"/{kind}s/{{}}/update", ident,
                   body=dict(spec), params={"version": version})  # fmt: skip

    def remove_object(self, kind: str, ident: str, what: str = "") -> None:
        self._json(f"remove {kind} {what or ident}", "DELETE", f"/{kind}s/{{}}", ident)

    # -- containers (verify's probes) ------------------------------------------------------------

    def containers(self, label: str) -> list[dict[str, Any]]:
        return list(self._json("list containers", "GET", "/containers/json",
                               params={"all": "1", **_filters({"label": [label]})}))  # fmt: skip

    def run_container(self, image: str, command: list[str], network: str, labels: Mapping[str, str], name: str) -> str:
        """Create and start a container attached to ``network``; returns its ID."""
        body = {"Image": image, "Cmd": command, "Labels": dict(labels), "HostConfig": {"NetworkMode": network}}
        created = self._json(f"start a container on {network}", "POST", "/containers/create",
                             body=body, params={"name": name})  # fmt: skip
        ident = str(created["Id"])
        # the first container of an overlay on a node makes the node join that network (its
        # namespace, VXLAN, encryption keys): on a slow host that alone can take more than a call's
        # usual deadline
        self._json("start the container", "POST", "/containers/{}/start", ident, timeout=4 * DEFAULT_TIMEOUT)
        return ident

    def wait_container(self, ident: str, timeout: float) -> int:
        answer = self._json("wait for the container", "POST", "/containers/{}/wait", ident, timeout=timeout, held=True)
        return int(answer.get("StatusCode", -1))

    def container_output(self, ident: str, stderr: bool = False) -> bytes:
        """A finished container's stdout (or stderr), demultiplexed (docker-py's public logs())."""
        which = "errors" if stderr else "output"
        out = self._call(f"read the container's {which}", self._api.logs, ident, stdout=not stderr, stderr=stderr)
        return out if isinstance(out, bytes) else b""

    def remove_container(self, ident: str) -> None:
        self._json("remove the container", "DELETE", "/containers/{}", ident, params={"force": "1"})

    def close(self) -> None:
        self._api.close()


def parse_engine_version(text: str) -> tuple[int, ...]:
    """``20.10.24+dfsg1`` -> (20, 10, 24); unparseable parts count as 0."""
    parts = []
    for piece in re.split(r"[.+~-]", text)[:3]:
        parts.append(int(piece) if piece.isdigit() else 0)
    return tuple(parts)


class Session:
    """Everything one swarmctl command talks to: an SSH connection and an Engine per host, lazily."""

    def __init__(self, inventory: Inventory, parallel: int = DEFAULT_PARALLEL, pool: Pool | None = None):
        """``pool``: the inventory's connections, when some were opened before (it brings its own
        ``parallel``); else a new pool."""
        self.inventory = inventory
        self.pool = Pool(inventory.hosts, parallel) if pool is None else pool
        self._engines: dict[str, DockerEngine] = {}
        self._lock = threading.Lock()
        self.skipped: dict[str, str] = {}  # managers passed over by manager(), and why

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def engine(self, host: Host | str) -> DockerEngine:
        h = self.inventory.host(host) if isinstance(host, str) else host
        with self._lock:
            engine = self._engines.get(h.name)
            if engine is None:
                engine = self._engines[h.name] = DockerEngine(h, self.pool.connection(h), timeout=h.ssh.api_timeout)
            return engine

    def forget_engine(self, host: Host | str) -> None:
        """Drop a host's Engine (its API channels): the next call opens new ones (an engine restart)."""
        name = host if isinstance(host, str) else host.name
        with self._lock:
            engine = self._engines.pop(name, None)
        if engine is not None:
            engine.close()

    def fan_out(self, fn: Callable[[Host], T], hosts: Iterable[Host] | None = None) -> dict[str, Outcome[T]]:
        return self.pool.fan_out(self.inventory.hosts if hosts is None else hosts, fn)

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()
        self.pool.close()
