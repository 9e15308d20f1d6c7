"""A real SSH server in this process on 127.0.0.1 (paramiko's server side), for the unit tier.

It accepts public-key authentication with one client key, runs ``exec`` requests by answering
with a fixed output (or by a handler standing in for the command: one that never reads its stdin,
one that echoes it, one that floods its stdout), serves channels to a Unix socket of the host
(``direct-streamlocal@openssh.com``) by a handler when given one and refuses them otherwise, and
can be made to stop answering after the TCP handshake (a hung host). Nothing leaves the machine:
it listens on loopback only.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

# a command, as the server runs it: given its channel (stdin, stdout, exit status) and command line
Command = Callable[[paramiko.Channel, bytes], None]


def never_reads(channel: paramiko.Channel, command: bytes) -> None:
    """A command that never reads its stdin and never ends (a host whose disk stalled a ``cat >
    file``): once the channel's window is full the client can send nothing more."""
    while not channel.closed:
        time.sleep(0.05)


def echoes(channel: paramiko.Channel, command: bytes) -> None:
    """``cat``: writes back what it reads as it reads it, so it stops reading while its output is
    not taken."""
    try:
        while data := channel.recv(65536):
            channel.sendall(data)
        channel.send_exit_status(0)
        channel.shutdown_write()
    except (OSError, EOFError, paramiko.SSHException):
        pass  # the client closed the channel, or the connection


def floods(total: int, stopped: threading.Event | None = None) -> Command:
    """A command that writes ``total`` bytes to its stdout as fast as it is taken (``yes | head``);
    ``stopped`` is set once it stops writing (done, or its channel closed)."""

    def run(channel: paramiko.Channel, command: bytes) -> None:
        line = b"y\n" * 32768
        sent = 0
        try:
            while sent < total:
                channel.sendall(line)
                sent += len(line)
            channel.send_exit_status(0)
            channel.shutdown_write()
        except (OSError, EOFError, paramiko.SSHException):
            pass  # the client closed the channel, or the connection
        finally:
            if stopped is not None:
                stopped.set()

    return run


class _Server(paramiko.ServerInterface):
    def __init__(
        self,
        client_key: paramiko.PKey,
        output: bytes,
        hang: threading.Event | None = None,
        command: Command | None = None,
        unix_socket: Command | None = None,
    ):
        self.client_key = client_key
        self.output = output
        self.hang = hang  # set: channel requests are never answered (a host that stopped)
        self.command = command
        self.unix_socket = unix_socket
        self.socket_channels: set[int] = set()  # IDs of the socket channels opened, for serve_sockets

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        return paramiko.common.AUTH_SUCCESSFUL if key == self.client_key else paramiko.common.AUTH_FAILED

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if self.hang is not None:
            self.hang.wait(60)  # holds the server's transport thread: nothing more is answered
        if kind == "direct-streamlocal@openssh.com" and self.unix_socket is not None:
            self.socket_channels.add(chanid)
            return paramiko.common.OPEN_SUCCEEDED
        if kind == "session":
            return paramiko.common.OPEN_SUCCEEDED
        # OpenSSH's answer to a socket it will not open (AllowStreamLocalForwarding no, no socket)
        return paramiko.common.OPEN_FAILED_CONNECT_FAILED

    def serve_sockets(self, transport: paramiko.Transport) -> None:
        """Run the socket handler on each socket channel opened (paramiko hands a server every
        channel it opened, in order, through accept)."""
        assert self.unix_socket is not None
        while transport.is_active():
            channel = transport.accept(0.2)
            if channel is not None and channel.get_id() in self.socket_channels:
                threading.Thread(target=self.unix_socket, args=(channel, b""), daemon=True).start()

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        if self.command is not None:
            threading.Thread(target=self.command, args=(channel, command), daemon=True).start()
            return True

        def answer() -> None:
            # paramiko replies to the exec request after this method returns: closing the channel
            # before that reply would fail the request, so the client closes it once it has the status
            channel.sendall(self.output)
            channel.send_exit_status(0)

        threading.Thread(target=answer, daemon=True).start()
        return True


@dataclass
class SSHServer:
    port: int
    host_key: paramiko.PKey
    client_key_file: Path
    connections: int = 0
    transports: list[paramiko.Transport] = field(default_factory=list)


@contextmanager
def ssh_server(
    tmp: Path,
    host_key: paramiko.PKey | None = None,
    output: bytes = b"ok\n",
    hang_channels: bool = False,
    silent: bool = False,
    command: Command | None = None,
    unix_socket: Command | None = None,
) -> Iterator[SSHServer]:
    """Serve SSH on 127.0.0.1 (a free port) until the block ends.

    hang_channels: authenticate, then never answer a channel request. silent: accept TCP
    connections and never say a word (not even the SSH banner), like a frozen sshd. command: what
    every exec request runs, instead of answering ``output``. unix_socket: what serves every channel to
    a Unix socket (none: they are refused).
    """
    host_key = host_key or paramiko.Ed25519Key.from_private_key_file(str(_new_key(tmp, "host")))
    client_file = _new_key(tmp, "client")
    client_key = paramiko.Ed25519Key.from_private_key_file(str(client_file))
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    server = SSHServer(listener.getsockname()[1], host_key, client_file)
    stop = threading.Event()
    released = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            server.connections += 1
            if silent:
                held.append(sock)
                continue
            t = paramiko.Transport(sock)
            t.add_server_key(host_key)
            server.transports.append(t)
            handler = _Server(client_key, output, released if hang_channels else None, command, unix_socket)
            try:
                t.start_server(server=handler)
            except (paramiko.SSHException, EOFError, OSError):
                continue
            if unix_socket is not None:
                threading.Thread(target=handler.serve_sockets, args=(t,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        released.set()
        for held_sock in held:
            held_sock.close()
        listener.close()
        for t in server.transports:
            t.close()
        thread.join(timeout=2)


def _new_key(tmp: Path, name: str) -> Path:
    """An ed25519 key written in OpenSSH format (paramiko cannot generate ed25519: use cryptography)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = tmp / f"{name}_ed25519"
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
            )
        )
        path.chmod(0o600)
    return path


def other_host_key(tmp: Path) -> paramiko.PKey:
    return paramiko.Ed25519Key.from_private_key_file(str(_new_key(tmp, "otherhost")))
