"""The lab's stand-in for systemd's docker unit: start waits for the engine's socket and fails in
systemd's words when the engine exits first; stop, restart, status and journalctl as an operator
types them. The "engine" here is a small program that answers /_ping on a unix socket (the real
dockerd runs under the stand-in in every lab host; the e2e tests restart it there).
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from swarmctl_lab import systemd

FAKE_ENGINE = r"""
import os, socket, sys
path, fail = sys.argv[1], sys.argv[2] == "fail"
print("time=now level=info msg=\"starting up\"", flush=True)
if fail:
    print("failed to start daemon: logger: no log driver named 'no-such-driver' is registered", flush=True)
    sys.exit(1)
if os.path.exists(path):
    os.unlink(path)
s = socket.socket(socket.AF_UNIX); s.bind(path); s.listen(4)
while True:
    c, _ = s.accept(); c.recv(256); c.sendall(b"HTTP/1.0 200 OK\r\n\r\nOK"); c.close()
"""


def unit(tmp_path: Path, mode: str = "ok") -> systemd.Unit:
    script = tmp_path / "engine.py"
    script.write_text(FAKE_ENGINE)
    sock = tmp_path / "docker.sock"
    return systemd.Unit([sys.executable, str(script), str(sock), mode], log=str(tmp_path / "dockerd.log"),
                        docker_socket=str(sock))  # fmt: skip


def test_start_stop_restart_status(tmp_path: Path) -> None:
    u = unit(tmp_path)
    try:
        assert u.handle(["start", "docker"]) == (0, "")
        assert systemd.engine_answers(u.docker_socket)
        first = u.proc.pid if u.proc else 0
        rc, text = u.handle(["status", "docker.service", "--no-pager"])
        assert rc == 0 and "Active: active (running)" in text and f"Main PID: {first}" in text
        assert u.handle(["restart", "docker"])[0] == 0 and u.proc is not None and u.proc.pid != first
        assert u.handle(["is-active", "docker"]) == (0, "active")
        assert u.handle(["stop", "docker"]) == (0, "")
        rc, text = u.handle(["status", "docker"])
        assert rc == 3 and "Active:" in text and "running" not in text
        assert u.handle(["reload", "docker"])[0] == 2 and u.handle(["start", "nginx"])[0] == 5
    finally:
        u.stop()


def test_an_engine_that_exits_at_start_fails_the_start_and_its_log_says_why(tmp_path: Path) -> None:
    u = unit(tmp_path, "fail")
    rc, text = u.handle(["start", "docker"])
    assert rc == 1 and "docker.service failed because the control process exited with error code" in text
    assert u.handle(["is-active", "docker"]) == (3, "failed")
    rc, log = u.handle(["journalctl", "-u", "docker.service", "-n", "5", "--no-pager", "-o", "cat"])
    assert rc == 0 and log.splitlines()[-1].startswith("failed to start daemon: logger: no log driver")


def test_the_commands_reach_the_unit_over_its_socket(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    u = unit(tmp_path)
    path = str(tmp_path / "unit.sock")
    threading.Thread(target=systemd.answer_forever, args=(u, systemd.listen(path)), daemon=True).start()
    try:
        assert systemd.client(["start", "docker"], path) == 0
        assert systemd.client(["is-active", "docker"], path) == 0
        assert capsys.readouterr().out.strip() == "active"
    finally:
        u.stop()
    assert systemd.client(["status", "docker"], str(tmp_path / "none.sock")) == 1  # no unit: a clear message
    assert "stand-in is not running" in capsys.readouterr().err
