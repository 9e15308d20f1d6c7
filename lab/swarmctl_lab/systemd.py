"""A stand-in for systemd's docker unit inside each lab host: ``systemctl start|stop|restart|status
docker`` and ``journalctl -u docker``, so swarmctl restarts a lab host's engine with the command it
uses on a real host, and tests stop and start an engine the way an operator would.

Each lab host's first process is ``python -m swarmctl_lab.systemd serve``: it starts dockerd (its
output appended to /run/dockerd.log, the host's own /run) and answers the ``systemctl`` and
``journalctl`` commands that the lab puts first on the host's PATH (/usr/local/sbin) over a unix
socket in /run. It keeps dockerd's life the way docker.service does (Type=notify): ``start``
returns once the engine answers on /var/run/docker.sock, and fails, with systemd's words, when
dockerd exits first; ``stop`` sends SIGTERM and waits (SIGKILL after TimeoutStopSec). It does not
restart a dockerd that exits by itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from swarmctl.files import write_atomic

SOCKET = "/run/swarmctl-lab-systemd.sock"
LOG = "/run/dockerd.log"
DOCKER_SOCKET = "/var/run/docker.sock"
UNITS = ("docker", "docker.service")
START_TIMEOUT = 60.0  # docker.service: TimeoutStartSec (systemd's default 90 s; the lab is small)
STOP_TIMEOUT = 30.0
COMMANDS = ("start", "stop", "restart", "status", "is-active")


def engine_answers(path: str = DOCKER_SOCKET) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(path)
            s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return b"200 OK" in s.recv(256)
    except OSError:
        return False


def tail(path: str, lines: int) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 256 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return text.splitlines()[-lines:] if lines > 0 else []


class Unit:
    """dockerd, kept as docker.service keeps it."""

    def __init__(self, argv: Sequence[str], log: str = LOG, docker_socket: str = DOCKER_SOCKET):
        self.argv = list(argv)
        self.log = log
        self.docker_socket = docker_socket
        self.proc: subprocess.Popen[bytes] | None = None
        self.since = 0.0
        self.result = "success"  # of the last start: success | exit-code | timeout
        self.lock = threading.Lock()

    def active(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> tuple[int, str]:
        if self.active():
            return 0, ""
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        self.since = time.time()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.result = "exit-code"
                return 1, (
                    "Job for docker.service failed because the control process exited with error code.\n"
                    'See "systemctl status docker.service" and "journalctl -xeu docker.service" for details.'
                )
            if engine_answers(self.docker_socket):
                self.result = "success"
                return 0, ""
            time.sleep(0.1)
        self.result = "timeout"
        self._kill()
        return 1, "Job for docker.service failed because a timeout was exceeded."

    def stop(self) -> tuple[int, str]:
        if not self.active():
            return 0, ""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._kill()
        return 0, ""

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def status(self) -> tuple[int, str]:
        when = time.strftime("%a %Y-%m-%d %H:%M:%S UTC", time.gmtime(self.since)) if self.since else ""
        if self.active():
            assert self.proc is not None
            state = f"active (running) since {when}"
            pid = f"   Main PID: {self.proc.pid} (dockerd)"
        elif self.proc is not None:
            code = self.proc.returncode
            why = "exit-code" if code else "success"
            state = f"failed (Result: {why})" if code else "inactive (dead)"
            pid = f"    Process: {self.proc.pid} ExecStart=dockerd (code=exited, status={code})"
        else:
            state, pid = "inactive (dead)", ""
        head = [
            "● docker.service - Docker Application Container Engine (swarmctl lab stand-in)",
            "     Loaded: loaded (swarmctl_lab.systemd)",
            f"     Active: {state}",
        ]
        body = head + ([pid] if pid else []) + [""] + tail(self.log, 10)
        return (0 if self.active() else 3), "\n".join(body)

    def handle(self, argv: Sequence[str]) -> tuple[int, str]:
        """One command: ``systemctl VERB UNIT`` or ``journalctl -u UNIT [-n N]`` (argv without the program)."""
        with self.lock:
            if argv and argv[0] == "journalctl":
                return 0, "\n".join(tail(self.log, _lines(argv[1:])))
            args = [a for a in argv if not a.startswith("-")]
            if len(args) != 2 or args[0] not in COMMANDS:
                return 2, f"usage: systemctl {{{'|'.join(COMMANDS)}}} docker (the swarmctl lab's stand-in)"
            verb, unit = args
            if unit not in UNITS:
                return 5, f"Unit {unit}.service not found."
            if verb == "start":
                return self.start()
            if verb == "stop":
                return self.stop()
            if verb == "restart":
                self.stop()
                return self.start()
            if verb == "is-active":
                return (0, "active") if self.active() else (3, "failed" if self.result != "success" else "inactive")
            return self.status()


def _lines(args: Sequence[str]) -> int:
    for i, a in enumerate(args):
        if a in ("-n", "--lines") and i + 1 < len(args) and args[i + 1].isdigit():
            return int(args[i + 1])
        if a.startswith("--lines=") and a[8:].isdigit():
            return int(a[8:])
    return 10


def listen(path: str) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    os.chmod(path, 0o600)  # root's, like systemd's private socket
    server.listen(8)
    return server


def answer_forever(unit: Unit, server: socket.socket) -> None:
    while True:
        conn, _ = server.accept()
        threading.Thread(target=_answer, args=(unit, conn), daemon=True).start()


def serve(argv: Sequence[str], path: str = SOCKET) -> int:
    unit = Unit(argv)
    server = listen(path)

    def stop(*_: object) -> None:
        unit.stop()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    rc, message = unit.start()
    if rc:
        print(message, file=sys.stderr, flush=True)
    answer_forever(unit, server)
    return 0


def _answer(unit: Unit, conn: socket.socket) -> None:
    with conn:
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        rc, text = unit.handle(json.loads(data))
        conn.sendall(json.dumps({"rc": rc, "out": text}).encode())


def client(argv: Sequence[str], path: str = SOCKET) -> int:
    """``systemctl ...`` / ``journalctl ...`` as typed on the lab host: ask the unit, print, exit."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(path)
            s.sendall(json.dumps(list(argv)).encode() + b"\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError as e:
        print(f"Failed to connect to bus: {e} (the swarmctl lab's systemd stand-in is not running)", file=sys.stderr)
        return 1
    answer = json.loads(data)
    if answer["out"]:
        print(answer["out"], file=sys.stderr if answer["rc"] else sys.stdout)
    return int(answer["rc"])


def write_commands(directory: Path, python: str, pythonpath: str) -> None:
    """``systemctl`` and ``journalctl`` scripts in ``directory`` (put first on the lab host's PATH).

    ``python`` and ``pythonpath`` are shell-quoted already: the interpreter and this swarmctl's root.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("systemctl", "journalctl"):
        script = f'#!/bin/sh\nPYTHONPATH={pythonpath} exec {python} -m swarmctl_lab.systemd client {name} "$@"\n'
        write_atomic(directory / name, script, 0o755)


def main(argv: Sequence[str]) -> int:
    if len(argv) >= 1 and argv[0] == "serve":
        return serve(argv[1:] or ["dockerd"])
    if len(argv) >= 1 and argv[0] == "client":
        rest = list(argv[1:])
        if rest and rest[0] == "systemctl":
            rest = rest[1:]
        return client(rest)
    print("usage: python -m swarmctl_lab.systemd serve [DOCKERD ...] | client systemctl|journalctl", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
