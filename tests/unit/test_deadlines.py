"""Every wait has a deadline: a host that stops answering is named within connect_timeout, and
Ctrl-C ends a command within 2 s whatever a host is doing (real SSH servers on 127.0.0.1)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swarmctl.errors import SSHError
from swarmctl.transport.ssh import Connection
from tests.unit.sshserver import ssh_server
from tests.unit.test_ssh_host_keys import lab_host


def test_a_host_that_stops_answering_channel_requests_is_given_up_on(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    with ssh_server(tmp_path, hang_channels=True) as server:
        host = lab_host(server.port, server.client_key_file, known, "accept-new")
        host = type(host)(**{**host.__dict__, "ssh": type(host.ssh)(**{**host.ssh.__dict__, "connect_timeout": 1.0})})
        t0 = time.monotonic()
        with pytest.raises(SSHError) as e:
            Connection(host).run(["true"], timeout=60)
        assert time.monotonic() - t0 < 1.0 + 2.0, "waited past connect_timeout"
    assert e.value.host == "h1" and "channel" in e.value.message


def test_a_silent_host_is_named_within_connect_timeout(tmp_path: Path) -> None:
    with ssh_server(tmp_path, silent=True) as server:
        host = lab_host(server.port, server.client_key_file, tmp_path / "known_hosts")
        host = type(host)(**{**host.__dict__, "ssh": type(host.ssh)(**{**host.ssh.__dict__, "connect_timeout": 1.0})})
        t0 = time.monotonic()
        with pytest.raises(SSHError) as e:
            Connection(host).run(["true"])
        assert time.monotonic() - t0 < 1.0 + 2.0
    assert "cannot connect" in e.value.message


@pytest.mark.parametrize("mode", ["silent", "hang_channels"])
def test_ctrl_c_ends_the_command_within_two_seconds(tmp_path: Path, mode: str) -> None:
    with ssh_server(tmp_path, **{mode: True}) as server:
        inv = tmp_path / "hosts.yml"
        inv.write_text(
            f"ssh: {{port: {server.port}, identity_file: {server.client_key_file}, known_hosts: {tmp_path}/kh,"
            " host_key_policy: accept-new, connect_timeout: 60}\n"
            "hosts:\n  m1: {address: 127.0.0.1, role: manager}\n  w1: {address: 127.0.0.2, role: worker}\n"
        )
        # bootstrap: preflight in parallel on both hosts, each one stuck on the server
        proc = subprocess.Popen(
            [sys.executable, "-m", "swarmctl", "bootstrap", str(inv)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={k: v for k, v in os.environ.items() if k != "SWARMCTL_INVENTORY"},
        )
        time.sleep(1.0)  # let it get stuck (a test of Ctrl-C needs a command that is waiting)
        assert proc.poll() is None, proc.communicate()
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=10)
        finally:
            proc.kill()
        took = time.monotonic() - t0
    assert proc.returncode == 130, err
    assert took < 2.0, f"took {took:.1f}s to stop after SIGINT"
    assert "Traceback" not in err and "interrupted" in err
