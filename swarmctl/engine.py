"""The Docker SDK over swarmctl's own SSH connections, and Docker API error translation.

docker-py's ``ssh://`` support reads ``~/.ssh/config`` and ``~/.ssh/known_hosts`` only. swarmctl's
inventory has its own identity file, port, known_hosts and sudo, so the SDK's HTTP requests run over
a channel of the host's existing paramiko connection executing ``docker system dial-stdio`` (the
same mechanism the docker CLI uses for ``DOCKER_HOST=ssh://``).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import docker
import docker.errors
import requests
import urllib3
import urllib3.connection
import urllib3.connectionpool
from docker.transport.basehttpadapter import BaseHTTPAdapter

from swarmctl.errors import ClusterError, EngineError, HostError, SwarmctlError
from swarmctl.inventory import Host, Inventory
from swarmctl.ssh import Connection, Outcome, Pool

log = logging.getLogger(__name__)
# urllib3 logs request lines at DEBUG; request bodies (join tokens, secret data) are never logged,
# but keep the transport quiet so -v output stays about swarmctl
logging.getLogger("urllib3").setLevel(logging.WARNING)

# The API version swarmctl speaks: Docker Engine 20.10's. Newer engines serve it unchanged, so
# specs mean the same thing on every supported engine.
API_VERSION = "1.41"
MIN_ENGINE = (20, 10)
_POOL_SIZE = 4

T = TypeVar("T")


class _DialStdioConnection(urllib3.connection.HTTPConnection):
    def __init__(self, ssh: Connection, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._ssh = ssh

    def connect(self) -> None:
        channel = self._ssh.open_channel(["docker", "system", "dial-stdio"])
        if isinstance(self.timeout, (int, float)):
            channel.settimeout(self.timeout)
        self.sock = channel


class _DialStdioPool(urllib3.connectionpool.HTTPConnectionPool):
    def __init__(self, ssh: Connection, timeout: float):
        super().__init__("localhost", timeout=timeout, maxsize=_POOL_SIZE)
        self._ssh = ssh
        self._channel_timeout = timeout

    def _new_conn(self) -> _DialStdioConnection:
        return _DialStdioConnection(self._ssh, self._channel_timeout)


class _DialStdioAdapter(BaseHTTPAdapter):
    def __init__(self, ssh: Connection, timeout: float):
        super().__init__()
        self._pool = _DialStdioPool(ssh, timeout)

    def get_connection(self, url: str | bytes, proxies: Any = None) -> _DialStdioPool:
        return self._pool

    def close(self) -> None:
        super().close()
        self._pool.close()


class _SSHAPIClient(docker.APIClient):
    """docker.APIClient whose requests travel over an existing SSH connection."""

    def __init__(self, ssh: Connection, timeout: float):
        # The placeholder socket is never opened: its adapter is replaced before any request.
        super().__init__(base_url="unix:///nonexistent/swarmctl.sock", version=API_VERSION, timeout=int(timeout))
        for adapter in self.adapters.values():
            adapter.close()
        self.adapters.clear()
        self._custom_adapter = _DialStdioAdapter(ssh, timeout)
        self.mount("http+docker://ssh", self._custom_adapter)
        # docker-py picks the raw-socket code path for attach/exec streams by this prefix
        self.base_url = "http+docker://ssh"


def explain(e: BaseException) -> str:
    """The useful part of a Docker API error."""
    if isinstance(e, docker.errors.APIError):
        text = e.explanation if isinstance(e.explanation, str) and e.explanation else str(e)
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        return text.strip()
    return str(e).strip() or type(e).__name__


@contextmanager
def translate(host: str, action: str) -> Iterator[None]:
    """Turn Docker SDK and transport errors into an EngineError naming the host and the action."""
    try:
        yield
    except SwarmctlError:
        raise
    except docker.errors.APIError as e:
        raise EngineError(host, f"{action}: {explain(e)}") from e
    except requests.exceptions.RequestException as e:
        raise EngineError(host, f"{action}: Docker Engine did not answer over SSH ({_short(e)})") from e
    except docker.errors.DockerException as e:
        raise EngineError(host, f"{action}: {explain(e)}") from e
    except (OSError, urllib3.exceptions.HTTPError) as e:
        raise EngineError(host, f"{action}: connection to the Docker Engine failed ({_short(e)})") from e


def _short(e: BaseException) -> str:
    text = str(e)
    # requests nests the whole urllib3 retry story; the innermost reason is what a user needs
    m = re.search(r"\(Caused by [A-Za-z]+\((.*)\)\)$", text)
    return (m.group(1) if m else text)[:200]


def missing_cli_message(package: str, has_engine: bool) -> str:
    """Why a host without the docker CLI cannot be used, and what to install there (pure)."""
    why = "swarmctl reaches the engine through `docker system dial-stdio`, which needs the docker CLI"
    if package == "docker-ce-cli":
        fix = "install docker-ce-cli (Docker's own packages)"
    elif package == "docker-cli":
        fix = "install docker-cli (Debian 13+ packages the CLI apart from docker.io, which only recommends it)"
    elif has_engine:
        fix = "install the docker CLI (docker-cli on Debian 13+, docker-ce-cli with Docker's own packages)"
    else:
        fix = "install Docker Engine and its CLI (docker.io + docker-cli on Debian 13+, or docker-ce + docker-ce-cli)"
    return f"no docker CLI on the host: {why}; {fix}"


class Engine:
    """The Docker Engine of one host, reached over its SSH connection."""

    def __init__(self, host: Host, ssh: Connection, timeout: float = 60.0):
        self.host = host
        self.ssh = ssh
        self.api = _SSHAPIClient(ssh, timeout)

    @property
    def name(self) -> str:
        return self.host.name

    def call(self, action: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call an APIClient method; errors name this host and ``action``."""
        try:
            with translate(self.name, action):
                return fn(*args, **kwargs)
        except EngineError as e:
            if isinstance(e.__cause__, (requests.exceptions.ConnectionError, urllib3.exceptions.HTTPError)):
                reason = self._diagnose()
                if reason:
                    raise EngineError(self.name, f"{action}: {reason}") from e
            raise

    def _diagnose(self) -> str:
        """Why the API channel broke, in the docker CLI's words (its stderr is not ours to read)."""
        try:
            res = self.ssh.run(["docker", "version", "--format", "{{.Server.Version}}"], timeout=15)
        except SwarmctlError:
            return ""
        if res.ok:
            return ""
        if res.rc == 127:  # the shell found no `docker`: dial-stdio cannot have worked either
            return missing_cli_message("", has_engine=True)
        lines = (res.stderr.strip() or res.stdout.strip()).splitlines()
        reason = lines[-1] if lines else f"docker exited with status {res.rc}"
        if "permission denied" in reason.lower() and not self.host.ssh.sudo:
            reason += f" (user {self.host.ssh.user} may not use Docker: add it to the docker group or set `sudo: true`)"
        return reason

    def info(self) -> dict[str, Any]:
        return self.call("read engine info", self.api.info)

    def request(
        self,
        action: str,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """A raw Docker API call with a JSON body, for specs sent exactly as built (no SDK reshaping).

        ``path`` is a format string whose ``{}`` fields are filled (quoted) from ``params['_args']``.
        """
        params = dict(params or {})
        args = params.pop("_args", ())
        api: Any = self.api  # docker-py's request helpers are not in its type stubs
        url = api._url(path, *args)
        kwargs: dict[str, Any] = {"params": params}
        if timeout is not None:
            kwargs["timeout"] = timeout

        def send() -> Any:
            if method == "GET":
                response = api._get(url, **kwargs)
            elif method == "DELETE":
                response = api._delete(url, **kwargs)
            else:
                response = api._post_json(url, data=body, **kwargs)
            is_json = response.headers.get("Content-Type", "").startswith("application/json")
            return api._result(response, json=is_json)

        return self.call(action, send)

    def close(self) -> None:
        self.api.close()


def parse_engine_version(text: str) -> tuple[int, ...]:
    """``20.10.24+dfsg1`` -> (20, 10, 24); unparseable parts count as 0."""
    parts = []
    for piece in re.split(r"[.+~-]", text)[:3]:
        parts.append(int(piece) if piece.isdigit() else 0)
    return tuple(parts)


class Session:
    """Everything one swarmctl command talks to: an SSH connection and an Engine per host, lazily."""

    def __init__(self, inventory: Inventory, parallel: int = 16):
        self.inventory = inventory
        self.pool = Pool(inventory.hosts, parallel)
        self._engines: dict[str, Engine] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def engine(self, host: Host | str) -> Engine:
        h = self.inventory.host(host) if isinstance(host, str) else host
        with self._lock:
            engine = self._engines.get(h.name)
            if engine is None:
                engine = self._engines[h.name] = Engine(h, self.pool.connection(h))
            return engine

    def fan_out(self, fn: Callable[[Host], T], hosts: Iterable[Host] | None = None) -> dict[str, Outcome[T]]:
        return self.pool.fan_out(self.inventory.hosts if hosts is None else hosts, fn)

    def manager(self) -> Engine:
        """The first inventory manager whose engine is an active swarm manager.

        Raises:
            ClusterError: no manager answered; says what each one said.
        """
        reasons = []
        for host in self.inventory.managers:
            try:
                engine = self.engine(host)
                swarm = engine.info().get("Swarm") or {}
            except HostError as e:
                reasons.append(f"{host.name}: {e.message}")
                continue
            if swarm.get("ControlAvailable"):
                return engine
            state = swarm.get("LocalNodeState") or "unknown"
            reasons.append(f"{host.name}: not a swarm manager (swarm state {state})")
        raise ClusterError("no reachable swarm manager (" + "; ".join(reasons) + "); run `swarmctl bootstrap` first")

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()
        self.pool.close()
