"""SSH: lazy paramiko connections, host-key policy, run()/put(), parallel fan-out.

One connection per host, opened on first use and reused for every command and every Docker API
call of a swarmctl invocation. Host keys are checked against the inventory's known_hosts file:
``reject`` refuses unknown keys, ``accept-new`` records a first-seen key, and a *changed* key is
always refused, loudly. ``~/.ssh/config`` is never read.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import logging
import os
import queue
import select
import shlex
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Generic, TypeVar

import paramiko

from swarmctl.errors import HostError, HostKeyError, SocketRefused, SSHError, SwarmctlError
from swarmctl.files import write_atomic
from swarmctl.inventory import Host

log = logging.getLogger(__name__)
# paramiko logs every channel at DEBUG, and at ERROR (with tracebacks, from its own threads) the
# failures swarmctl reports itself in one line naming the host: keep it quiet
logging.getLogger("paramiko").setLevel(logging.CRITICAL)

# Hosts worked on at once. 32: a swarm of a few dozen hosts is read in one wave (at 24 lab hosts,
# reading every host took 1.07-1.18 s with 32, 1.25-1.32 s with 16, whose second wave waited)
DEFAULT_PARALLEL = 32
EOF_GRACE = 2.0  # seconds to wait for the output's EOF once the exit status came
# The most a command's stdout and stderr together may bring back (run(), stream()): it is held in
# memory, then decoded to text (a second copy). The reads swarmctl makes answer in a few hundred KiB
# at most (host facts, a journal's last 40 lines, the raft state's listing); 16 MiB leaves them ample
# room and bounds what a host flooding its output costs (without a cap one grew the client by
# 900 MiB in 8 s). A caller that downloads (backup's archive) passes its own cap.
MAX_OUTPUT = 16 << 20
_SEND_CHUNK = 32 * 1024  # one SSH packet of stdin at a time: output is read between any two
_RECV_CHUNK = 64 * 1024
_KNOWN_HOSTS_LOCK = threading.Lock()

T = TypeVar("T")


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style fingerprint: ``SHA256:base64`` without padding."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def known_hosts_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


_PARSED: dict[Path, tuple[tuple[int, int, int], paramiko.HostKeys]] = {}  # known_hosts files, parsed
_PARSED_LOCK = threading.Lock()


def known_keys(path: Path, name: str) -> dict[str, paramiko.PKey]:
    """The keys a known_hosts file holds for ``name`` (known_hosts_name), by key type. The file is
    parsed once for as long as it stays the same file (inode, size, mtime; add_known_hosts drops
    it): a fan-out to 24 hosts parsed it 24 times, and each connection looked its host up in all
    of it, a few dozen times.

    Raises:
        OSError, paramiko.SSHException: it cannot be read.
    """
    st = path.stat()
    stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
    with _PARSED_LOCK:
        cached = _PARSED.get(path)
        if cached is None or cached[0] != stamp:
            keys = paramiko.HostKeys()
            keys.load(str(path))
            cached = _PARSED[path] = (stamp, keys)
    return dict(cached[1].lookup(name) or {})


@dataclass(frozen=True)
class CommandResult:
    """What a remote command did. ``command`` is the argv as run (never carries secrets)."""

    host: str
    command: str
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def check(self, action: str) -> CommandResult:
        """Return self when the command succeeded, else raise a HostError naming the action."""
        if self.ok:
            return self
        detail = (self.stderr.strip() or self.stdout.strip()).splitlines()
        last = detail[-1] if detail else "no output"
        raise HostError(self.host, f"{action}: {last} (exit status {self.rc})")


class _RejectUnknown(paramiko.MissingHostKeyPolicy):
    def __init__(self, host: Host):
        self.host = host

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise HostKeyError(
            self.host.name,
            f"unknown host key for {hostname} ({key.get_name()} {fingerprint(key)}); it is not in "
            f"{self.host.ssh.known_hosts}. Check the fingerprint on the host (ssh-keygen -lf "
            "/etc/ssh/ssh_host_*_key.pub) and add it, or set `host_key_policy: accept-new` to trust first use",
        )


def add_known_hosts(path: Path, lines: Sequence[str]) -> None:
    """Append known_hosts lines, crash-safe: read, add, replace (its mode kept, 0600 for a new file),
    under a lock of its directory that keeps other swarmctl processes (and threads) out."""
    with _PARSED_LOCK:
        _PARSED.pop(path, None)
    with _KNOWN_HOSTS_LOCK:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                text = path.read_text(encoding="utf-8")
                mode = stat.S_IMODE(path.stat().st_mode)
            except FileNotFoundError:
                text, mode = "", 0o600
            if text and not text.endswith("\n"):
                text += "\n"
            write_atomic(path, text + "".join(line + "\n" for line in lines), mode)
        finally:
            os.close(fd)


class _AcceptNew(paramiko.MissingHostKeyPolicy):
    """Record a first-seen key in the inventory's known_hosts (like OpenSSH's accept-new)."""

    def __init__(self, host: Host):
        self.host = host

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        path = self.host.ssh.known_hosts
        add_known_hosts(path, [f"{hostname} {key.get_name()} {key.get_base64()}"])
        client.get_host_keys().add(hostname, key.get_name(), key)
        log.warning("%s: recorded new host key %s %s in %s", self.host.name, key.get_name(), fingerprint(key), path)


class Connection:
    """A lazy SSH connection to one host; a context manager."""

    def __init__(self, host: Host):
        self.host = host
        self._client: paramiko.SSHClient | None = None
        self._connecting: paramiko.SSHClient | None = None  # while a connect is under way
        self._closed = False
        self._lock = threading.Lock()
        self._early: Exception | None = None  # connect_early's failure, for the next transport()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        t = self._client.get_transport() if self._client else None
        return bool(t and t.is_active())

    def transport(self) -> paramiko.Transport:
        """The open transport, connecting first when needed.

        Raises:
            SSHError, HostKeyError: naming the host and what went wrong.
        """
        with self._lock:
            if self._closed:
                raise SSHError(self.host.name, "the connection was closed (interrupted)")
            if self._early is not None:  # an early connect failed: its error, not a second wait
                early, self._early = self._early, None
                raise early
            if not self.connected:
                self._client = self._opened(self._connect())
            assert self._client is not None
            t = self._client.get_transport()
            assert t is not None
            return t

    def connect_early(self) -> None:
        """Connect now (meant for a thread of its own, while the command prepares): the next
        transport() has this connection, or raises this attempt's error (once: a later call
        connects again) - the command's first use of a host that does not answer waits once."""
        with self._lock:
            if self._closed or self.connected:
                return
            try:
                self._client = self._opened(self._connect())
            except Exception as e:  # raised where the connection is used, in the command's thread
                self._early = e

    def _opened(self, client: paramiko.SSHClient) -> paramiko.SSHClient:
        """A client just connected, unless close() came meanwhile: then it is closed too."""
        if self._closed:
            client.close()
            raise SSHError(self.host.name, "the connection was closed (interrupted)")
        return client

    def _connect(self) -> paramiko.SSHClient:
        h, s = self.host, self.host.ssh
        client = paramiko.SSHClient()
        if s.known_hosts.is_file():
            name = known_hosts_name(h.address, s.port)  # the name paramiko looks the host up by
            try:
                for kind, key in known_keys(s.known_hosts, name).items():
                    client.get_host_keys().add(name, kind, key)
            except (OSError, paramiko.SSHException) as e:
                raise SSHError(h.name, f"cannot read known_hosts {s.known_hosts}: {e}") from e
        client.set_missing_host_key_policy(_AcceptNew(h) if s.host_key_policy == "accept-new" else _RejectUnknown(h))
        where = f"{s.user}@{h.address}:{s.port}"
        t0 = time.monotonic()
        self._connecting = client
        try:
            client.connect(
                h.address,
                port=s.port,
                username=s.user,
                key_filename=str(s.identity_file) if s.identity_file else None,
                # an inventory that names a key uses that key alone: the agent's keys are not
                # offered to every host
                allow_agent=s.identity_file is None,
                look_for_keys=s.identity_file is None,
                timeout=s.connect_timeout,
                banner_timeout=s.connect_timeout,
                auth_timeout=s.connect_timeout,
            )
        except HostKeyError:
            client.close()
            raise
        except paramiko.BadHostKeyException as e:
            client.close()
            raise HostKeyError(
                h.name,
                f"HOST KEY CHANGED for {h.address}: {s.known_hosts} has {e.expected_key.get_name()} "
                f"{fingerprint(e.expected_key)} but the host offered {e.key.get_name()} {fingerprint(e.key)}. "
                "Someone may be intercepting the connection (man-in-the-middle). Refusing to connect; if the "
                f"host was reinstalled, remove the old key with: ssh-keygen -R {known_hosts_name(h.address, s.port)} "
                f"-f {s.known_hosts}",
            ) from None
        except paramiko.AuthenticationException as e:
            client.close()
            tried = f"key {s.identity_file}" if s.identity_file else "the agent and ~/.ssh/id_* keys"
            raise SSHError(h.name, f"authentication failed for {where} (tried {tried}): {e}") from None
        except TimeoutError:
            client.close()
            raise SSHError(h.name, f"cannot connect to {where}: timed out after {s.connect_timeout:g}s") from None
        except paramiko.ssh_exception.NoValidConnectionsError as e:
            client.close()
            reasons = {_reason(err) for err in e.errors.values()}
            raise SSHError(h.name, f"cannot connect to {where}: {', '.join(sorted(reasons))}") from None
        except (OSError, paramiko.SSHException, EOFError) as e:
            client.close()
            if time.monotonic() - t0 >= s.connect_timeout:
                # paramiko's handshake wait ends at the deadline without an error of its own, and the
                # next step then fails obscurely ("No existing session"): say what happened
                raise SSHError(
                    h.name,
                    f"cannot connect to {where}: timed out after {s.connect_timeout:g}s (the host accepted the "
                    "connection but its SSH server did not answer)",
                ) from None
            raise SSHError(h.name, f"cannot connect to {where}: {e or type(e).__name__}") from None
        finally:
            self._connecting = None
        t = client.get_transport()
        if t is not None:
            t.set_keepalive(15)
            # many small request/response exchanges (channel opens, API calls): without NODELAY
            # each waits out the peer's delayed ACK (~40 ms)
            with contextlib.suppress(OSError, AttributeError):
                t.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[union-attr]
        log.debug("%s: connected to %s in %.2fs", h.name, where, time.monotonic() - t0)
        return client

    def wrap(self, argv: Sequence[str] | str, sudo: bool | None = None) -> str:
        """The remote command line for argv (quoted), run through sudo when the host needs it."""
        command = argv if isinstance(argv, str) else shlex.join(argv)
        if self.host.ssh.sudo if sudo is None else sudo:
            command = "sudo -n -- sh -c " + shlex.quote(command)
        return command

    def open_channel(
        self, argv: Sequence[str] | str, sudo: bool | None = None, pty: tuple[str, int, int] | None = None
    ) -> paramiko.Channel:
        """Start a command and return its channel (stdin/stdout as a byte stream); with ``pty``
        (terminal type, columns, rows) on a pseudo-terminal of the host.

        Opening the channel and starting the command each get ``connect_timeout``: a host that
        stops answering is given up on, never waited for (paramiko's own waits have no deadline).
        """
        command = self.wrap(argv, sudo)
        limit = self.host.ssh.connect_timeout
        try:
            channel = self.transport().open_session(timeout=limit)
        except (paramiko.SSHException, EOFError, OSError) as e:
            raise SSHError(self.host.name, f"cannot open a channel: {e or type(e).__name__}") from e
        # exec_command waits for the host's reply without a deadline: closing the channel ends that wait
        watchdog = threading.Timer(limit, channel.close)
        watchdog.daemon = True
        watchdog.start()
        try:
            if pty is not None:
                channel.get_pty(term=pty[0], width=pty[1], height=pty[2])
            channel.exec_command(command)
        except (paramiko.SSHException, EOFError, OSError) as e:
            if not watchdog.is_alive():
                raise SSHError(self.host.name, f"the host did not start a command within {limit:g}s") from e
            raise SSHError(self.host.name, f"cannot start a command: {e or type(e).__name__}") from e
        finally:
            watchdog.cancel()
        return channel

    def open_socket(self, path: str) -> paramiko.Channel:
        """A channel to the Unix socket ``path`` of the host, connected by the host's SSH server as
        the SSH user (OpenSSH's ``direct-streamlocal@openssh.com``, the channel ``ssh -L
        port:/path`` opens): one round trip and no process started on the host. Its answer waits
        at most ``connect_timeout``.

        Raises:
            SocketRefused: the server would not open it.
            SSHError: the connection failed, or the server did not answer in time.
        """
        limit = self.host.ssh.connect_timeout
        transport = self.transport()
        try:
            return _open_streamlocal(transport, path, limit)
        except paramiko.ChannelException as e:
            raise SocketRefused(self.host.name, f"its SSH server would not open {path}: {e.text or 'refused'}") from e
        except (paramiko.SSHException, EOFError, OSError) as e:
            raise SSHError(self.host.name, f"cannot open a channel to {path}: {e or type(e).__name__}") from e

    def run(
        self,
        argv: Sequence[str] | str,
        *,
        input: bytes | None = None,
        timeout: float = 60.0,
        sudo: bool | None = None,
        max_output: int = MAX_OUTPUT,
        on_line: Callable[[str], None] | None = None,
    ) -> CommandResult:
        """Run a command and collect its output (``on_line`` is also told each line of it, stdout
        and stderr, as it comes).

        ``argv`` as a list is quoted with shlex; a string is a shell script the caller wrote
        (never with user data concatenated in). ``input`` goes to stdin and never to argv.

        ``timeout`` bounds the whole call, sending ``input`` included: a host that stops reading
        its stdin is given up on like one that stops answering. The input goes out as the channel's
        window allows, with the output read between any two packets: a command that writes while
        it reads (``cat``) would otherwise fill its output window, stop reading, and hold both ends
        for ever. ``max_output`` caps stdout and stderr together (see MAX_OUTPUT).

        Raises:
            SSHError: the connection failed; HostError: the command ran over ``timeout``, or its
            output over ``max_output`` (its channel is then closed).
        """
        shown = argv if isinstance(argv, str) else shlex.join(argv)
        data = input or b""
        channel = self.open_channel(argv, sudo)
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        sent = 0
        told = [0, 0]  # bytes of stdout, stderr passed to on_line

        def tell(final: bool = False) -> None:
            for i, buf in enumerate((out, err)):
                end = len(buf) if final else buf.rfind(b"\n", told[i]) + 1
                if on_line is not None and end > told[i]:
                    for line in bytes(buf[told[i] : end]).decode("utf-8", "replace").splitlines():
                        on_line(line)
                told[i] = max(told[i], end)

        try:
            if not data:
                channel.shutdown_write()
            fd = channel.fileno()
            exited_at = 0.0
            while True:
                self._read_ready(channel, out, err, max_output, shown)
                tell()
                if sent < len(data) and (channel.closed or channel.exit_status_ready()):
                    data = data[:sent]  # the command ended before its input did: its output says why
                left = deadline - time.monotonic()
                if left <= 0:
                    took = f" (it took {sent} of the {len(data)} bytes of its input)" if sent < len(data) else ""
                    raise HostError(self.host.name, f"timed out after {timeout:g}s running: {_summary(shown)}{took}")
                if sent < len(data):
                    # paramiko's send waits for window on a condition the host's window adjust
                    # wakes: a short timeout returns to reading the output meanwhile
                    channel.settimeout(min(left, 0.1))
                    with contextlib.suppress(TimeoutError):
                        sent += channel.send(data[sent : sent + _SEND_CHUNK])
                        if sent == len(data):
                            channel.shutdown_write()
                    continue
                drained = not channel.recv_ready() and not channel.recv_stderr_ready()
                if channel.closed and drained:
                    break
                if channel.exit_status_ready() and drained:
                    # sshd may send the exit status before the last of the output: read on until
                    # the output's EOF, or a short grace (a daemon the command left may hold it open)
                    exited_at = exited_at or time.monotonic()
                    if channel.eof_received or time.monotonic() - exited_at > EOF_GRACE:
                        break
                select.select([fd], [], [], min(left, 0.1 if exited_at else 1.0))
            rc = channel.recv_exit_status() if channel.exit_status_ready() else -1
            tell(final=True)
        except (OSError, paramiko.SSHException, EOFError) as e:
            raise SSHError(self.host.name, f"connection lost running {_summary(shown)}: {e}") from e
        finally:
            channel.close()
        return CommandResult(
            self.host.name,
            shown,
            rc,
            out.decode("utf-8", "replace"),
            err.decode("utf-8", "replace"),
        )

    def _read_ready(self, channel: paramiko.Channel, out: bytearray, err: bytearray, cap: int, shown: str) -> None:
        """Take the output that has come, up to ``cap`` bytes of stdout and stderr together.

        The cap is checked at every read: a host that floods keeps data ready faster than it is
        taken, so a loop that drains until nothing is ready would never end (nor see a deadline).

        Raises:
            HostError: naming the command and the cap; the caller closes the channel.
        """
        while True:
            if channel.recv_ready():
                out += channel.recv(_RECV_CHUNK)
            elif channel.recv_stderr_ready():
                err += channel.recv_stderr(_RECV_CHUNK)
            else:
                return
            if len(out) + len(err) > cap:
                raise HostError(
                    self.host.name,
                    f"the output of {_summary(shown)} ran over {human_size(cap)} (max_output); its channel was closed",
                )

    def stream(
        self,
        argv: Sequence[str],
        source: BinaryIO,
        *,
        on_bytes: Callable[[int], None] | None = None,
        idle_timeout: float = 120.0,
        sudo: bool | None = None,
        chunk: int = 256 * 1024,
        max_output: int = MAX_OUTPUT,
    ) -> CommandResult:
        """Run a command with ``source`` streamed to its stdin (no copy of it on the host's disk).

        ``on_bytes`` is told how many bytes went out so far; the command's output is collected,
        up to ``max_output`` bytes (see MAX_OUTPUT).
        ``idle_timeout``: the longest the host may take without accepting data or finishing.

        Raises:
            SSHError: the connection failed; HostError: the host stopped taking data or answering,
            or the output ran over ``max_output`` (its channel is then closed).
        """
        shown = shlex.join(argv)
        channel = self.open_channel(argv, sudo)
        out, err = bytearray(), bytearray()
        sent = 0
        channel.settimeout(idle_timeout)
        try:
            while True:
                data = source.read(chunk)
                if not data:
                    break
                try:
                    channel.sendall(data)
                except TimeoutError:
                    raise HostError(self.host.name, f"took no data for {idle_timeout:g}s: {_summary(shown)}") from None
                sent += len(data)
                self._read_ready(channel, out, err, max_output, shown)
                if on_bytes is not None:
                    on_bytes(sent)
                if channel.exit_status_ready():
                    break  # the command ended before its input did: its output says why
            channel.shutdown_write()
            deadline = time.monotonic() + idle_timeout
            while not (channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready()):
                if channel.closed and not channel.recv_ready() and not channel.recv_stderr_ready():
                    break
                self._read_ready(channel, out, err, max_output, shown)
                if time.monotonic() > deadline:
                    raise HostError(self.host.name, f"no answer {idle_timeout:g}s after its input: {_summary(shown)}")
                select.select([channel.fileno()], [], [], 1.0)
            rc = channel.recv_exit_status() if channel.exit_status_ready() else -1
        except (OSError, paramiko.SSHException, EOFError) as e:
            raise SSHError(self.host.name, f"connection lost running {_summary(shown)}: {e}") from e
        finally:
            channel.close()
        return CommandResult(self.host.name, shown, rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))

    def interact(
        self,
        argv: Sequence[str],
        stdin: int | None,
        stdout: int,
        stderr: int,
        pty: tuple[str, int, int] | None = None,
        resized: Callable[[], tuple[int, int] | None] | None = None,
    ) -> int:
        """Run a command wired to this process's file descriptors, as ``ssh -t`` would: its output
        written to ``stdout``/``stderr`` as it comes, ``stdin`` (when given) sent until its end;
        with ``pty``, on a pseudo-terminal whose size follows ``resized()`` (polled: the new
        columns and rows, or None). Returns the command's exit status.

        No deadline but the connection's: an interactive command runs as long as its user wants.

        Raises:
            SSHError: the connection failed or was lost.
        """
        shown = shlex.join(argv)
        channel = self.open_channel(argv, pty=pty)
        try:
            if stdin is None:
                channel.shutdown_write()
            while True:
                if resized is not None:
                    size = resized()
                    if size is not None:
                        channel.resize_pty(width=size[0], height=size[1])
                watch: list[Any] = [channel] + ([stdin] if stdin is not None else [])
                ready, _, _ = select.select(watch, [], [], 0.2)
                if stdin is not None and stdin in ready:
                    data = os.read(stdin, 65536)
                    if data:
                        channel.sendall(data)
                    else:
                        stdin = None
                        channel.shutdown_write()
                while channel.recv_ready():
                    _write_all(stdout, channel.recv(65536))
                while channel.recv_stderr_ready():
                    _write_all(stderr, channel.recv_stderr(65536))
                if (channel.exit_status_ready() or channel.closed) and not (
                    channel.recv_ready() or channel.recv_stderr_ready()
                ):
                    if channel.eof_received or channel.closed:
                        break
                    select.select([channel], [], [], EOF_GRACE)
                    if not (channel.recv_ready() or channel.recv_stderr_ready()):
                        break
            if not channel.exit_status_ready():
                raise SSHError(self.host.name, f"connection lost running {_summary(shown)}")
            return channel.recv_exit_status()
        except (OSError, paramiko.SSHException, EOFError) as e:
            raise SSHError(self.host.name, f"connection lost running {_summary(shown)}: {e}") from e
        finally:
            channel.close()

    def put(self, data: bytes, path: str, mode: int = 0o600, timeout: float = 60.0) -> None:
        """Write ``data`` to ``path`` on the host, crash-safe (through stdin, never argv): a new
        temporary file beside it (mktemp: O_EXCL, 0600), its final mode, synced, renamed over it,
        the directory synced. Missing parent directories are made (0755)."""
        argv = ["sh", "-c", _PUT_SCRIPT, "put", path, f"{mode:o}"]
        self.run(argv, input=data, timeout=timeout).check(f"write {path}")

    def close(self) -> None:
        """Close the connection - and abort one under way: it never waits for a host (Ctrl-C)."""
        self._closed = True
        for client in (self._connecting, self._client):
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
        self._client = None


_PUT_SCRIPT = r"""
set -e
dir=$(dirname "$1")
mkdir -p -m 755 "$dir"
tmp=$(mktemp "$dir/.swarmctl.XXXXXXXX")
trap 'rm -f "$tmp"' EXIT
cat > "$tmp"
chmod "$2" "$tmp"
sync "$tmp" 2>/dev/null || sync
mv -f "$tmp" "$1"
trap - EXIT
sync "$dir" 2>/dev/null || sync
"""


_STREAMLOCAL = "direct-streamlocal@openssh.com"


def _open_streamlocal(transport: paramiko.Transport, path: str, timeout: float) -> paramiko.Channel:
    """Open a ``direct-streamlocal@openssh.com`` channel (OpenSSH's PROTOCOL 2.4: the socket's
    path, a reserved string, a reserved uint32; OpenSSH drops the connection on any other layout).

    paramiko's ``Transport.open_channel`` writes the extra fields of the channel types it knows
    (session, direct-tcpip, forwarded-tcpip, x11) and no others, so this is its body for this type,
    over the same Transport internals (unchanged from paramiko 2 to 5). A paramiko without them is
    answered as a server's refusal would be: the caller has another way.

    Raises:
        paramiko.ChannelException: refused, by the server or by this paramiko.
        paramiko.SSHException: the connection ended, or no answer within ``timeout``.
    """
    t: Any = transport
    try:
        with t.lock:
            window = t._sanitize_window_size(None)
            packet = t._sanitize_packet_size(None)
            chanid = t._next_channel()
            m = paramiko.Message()
            m.add_byte(paramiko.common.cMSG_CHANNEL_OPEN)
            m.add_string(_STREAMLOCAL)
            m.add_int(chanid)
            m.add_int(window)
            m.add_int(packet)
            m.add_string(path)
            m.add_string("")
            m.add_int(0)
            channel: Any = paramiko.Channel(chanid)
            t._channels.put(chanid, channel)
            t.channel_events[chanid] = answered = threading.Event()
            t.channels_seen[chanid] = True
            channel._set_transport(t)
            channel._set_window(window, packet)
    except AttributeError as e:
        raise paramiko.ChannelException(
            paramiko.common.OPEN_FAILED_UNKNOWN_CHANNEL_TYPE, f"paramiko {paramiko.__version__} cannot open it ({e})"
        ) from None
    t._send_user_message(m)
    deadline = time.monotonic() + timeout
    while not answered.wait(0.1):  # a closed connection (Ctrl-C) ends the wait within 0.1 s
        if not t.active:
            break
        if time.monotonic() >= deadline:
            # an answer may still come: a channel opened late is closed then, not left open on
            # the host (paramiko forgets a channel nobody holds, and its open would stay open)
            threading.Thread(target=_close_if_opened, args=(t, chanid, answered, channel), daemon=True).start()
            raise paramiko.SSHException(f"no answer within {timeout:g}s")
    if not t.active:  # the connection ended: every channel waiting was dropped with it
        raise t.get_exception() or paramiko.SSHException("the connection closed")
    opened: paramiko.Channel | None = t._channels.get(chanid)
    if opened is None:
        raise t.get_exception() or paramiko.ChannelException(paramiko.common.OPEN_FAILED_CONNECT_FAILED, "open failed")
    return opened


def _close_if_opened(t: Any, chanid: int, answered: threading.Event, channel: paramiko.Channel) -> None:
    if answered.wait(60) and t._channels.get(chanid) is channel:
        channel.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _reason(err: BaseException) -> str:
    errno = getattr(err, "errno", None)
    return os.strerror(errno) if errno else str(err)


def _summary(command: str, limit: int = 80) -> str:
    return command if len(command) <= limit else command[: limit - 3] + "..."


def human_size(n: int) -> str:
    """A byte count as people read it: ``16 MiB``, ``512 KiB``, ``100 bytes``."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):g} {unit}"
    return f"{n} bytes"


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """One host's result of a fan-out: a value or an error, never both."""

    host: str
    value: T | None = None
    error: BaseException | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def fan_out(
    items: Iterable[Host],
    fn: Callable[[Host], T],
    parallel: int = DEFAULT_PARALLEL,
) -> dict[str, Outcome[T]]:
    """Run ``fn(host)`` for every host, at most ``parallel`` at a time.

    Failures are values: every expected error (SwarmctlError) is caught into its host's
    Outcome. Unexpected exceptions propagate - they are bugs, not host failures.
    """
    hosts = list(items)
    results: dict[str, Outcome[T]] = {}
    if not hosts:
        return results

    def one(host: Host) -> Outcome[T]:
        t0 = time.monotonic()
        try:
            return Outcome(host.name, value=fn(host), seconds=time.monotonic() - t0)
        except SwarmctlError as e:
            return Outcome(host.name, error=e, seconds=time.monotonic() - t0)

    # Daemon threads and a main thread that waits in short, interruptible steps: Ctrl-C ends the
    # command at once, whatever a host is doing (a ThreadPoolExecutor would join hung workers).
    todo: queue.Queue[Host] = queue.Queue()
    for h in hosts:
        todo.put(h)
    done: queue.Queue[Outcome[T] | BaseException] = queue.Queue()

    def worker() -> None:
        while True:
            try:
                host = todo.get_nowait()
            except queue.Empty:
                return
            try:
                done.put(one(host))
            except BaseException as e:  # a bug: handed to the main thread, which raises it
                done.put(e)

    for i in range(max(1, min(parallel, len(hosts)))):
        threading.Thread(target=worker, name=f"swarmctl-{i}", daemon=True).start()
    while len(results) < len(hosts):
        try:
            item = done.get(timeout=0.2)
        except queue.Empty:
            continue
        if isinstance(item, BaseException):
            raise item
        results[item.host] = item
    return {h.name: results[h.name] for h in hosts}


class Started(Generic[T]):
    """A call started in a thread of its own, its outcome taken later (``result``): work beside
    other work (one host's engine read beside its script; a node's labels beside the joins). The
    call's own deadlines bound it; a daemon thread, so Ctrl-C is never held up by it."""

    def __init__(self, fn: Callable[[], T], name: str = "started"):
        self._done = threading.Event()
        self._outcome: tuple[T | None, BaseException | None] = (None, None)
        threading.Thread(target=self._run, args=(fn,), name=name, daemon=True).start()

    def _run(self, fn: Callable[[], T]) -> None:
        try:
            self._outcome = (fn(), None)
        except BaseException as e:  # taken with the result, in the caller's thread
            self._outcome = (None, e)
        finally:
            self._done.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Whether the call has ended, waiting for it at most ``timeout`` seconds (None: until it has)."""
        return self._done.wait(timeout)

    def result(self) -> T:
        """The call's value, or its exception raised here."""
        self._done.wait()
        value, error = self._outcome
        if error is not None:
            raise error
        return value  # type: ignore[return-value]


class Pool:
    """The connections of one swarmctl invocation: one per host, opened lazily, closed together."""

    def __init__(self, hosts: Iterable[Host], parallel: int = DEFAULT_PARALLEL):
        self.parallel = parallel
        self._connections = {h.name: Connection(h) for h in hosts}

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connection(self, host: Host | str) -> Connection:
        name = host if isinstance(host, str) else host.name
        return self._connections[name]

    def fan_out(self, hosts: Iterable[Host], fn: Callable[[Host], T]) -> dict[str, Outcome[T]]:
        return fan_out(hosts, fn, self.parallel)

    def close(self) -> None:
        for c in self._connections.values():
            c.close()
