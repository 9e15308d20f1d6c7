"""Every wait has a deadline: a host that stops answering is named within connect_timeout, one that
stops reading a command's input within the command's timeout, and Ctrl-C ends a command within 2 s
whatever a host is doing (real SSH servers on 127.0.0.1)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from swarmctl.errors import HostError, SSHError
from swarmctl.transport.ssh import Connection, Started
from tests.unit.sshserver import echoes, never_reads, ssh_server
from tests.unit.test_ssh_host_keys import lab_host

T = TypeVar("T")


def within(seconds: float, fn: Callable[[], T]) -> T:
    """``fn()``'s result (or its error), failing the test when it takes over ``seconds``: a call that
    blocks for ever fails here instead of hanging the test run (its thread is left behind, stuck
    until the server closes)."""
    result: list[T] = []
    error: list[BaseException] = []

    def call() -> None:
        try:
            result.append(fn())
        except BaseException as e:
            error.append(e)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds:g}s"
    if error:
        raise error[0]
    return result[0]


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


def test_a_host_that_does_not_answer_a_socket_channel_is_given_up_on(tmp_path: Path) -> None:
    # the engine's socket, opened through the host's sshd: the same deadline as a command's channel
    with ssh_server(tmp_path, hang_channels=True) as server:
        host = lab_host(server.port, server.client_key_file, tmp_path / "known_hosts", "accept-new")
        host = type(host)(**{**host.__dict__, "ssh": type(host.ssh)(**{**host.ssh.__dict__, "connect_timeout": 1.0})})
        t0 = time.monotonic()
        with pytest.raises(SSHError) as e:
            within(10, lambda: Connection(host).open_socket("/var/run/docker.sock"))
        assert time.monotonic() - t0 < 1.0 + 2.0, "waited past connect_timeout"
    assert (
        e.value.host == "h1" and e.value.message == "cannot open a channel to /var/run/docker.sock: no answer within 1s"
    )


def test_a_silent_host_is_named_within_connect_timeout(tmp_path: Path) -> None:
    with ssh_server(tmp_path, silent=True) as server:
        host = lab_host(server.port, server.client_key_file, tmp_path / "known_hosts")
        host = type(host)(**{**host.__dict__, "ssh": type(host.ssh)(**{**host.ssh.__dict__, "connect_timeout": 1.0})})
        t0 = time.monotonic()
        with pytest.raises(SSHError) as e:
            Connection(host).run(["true"])
        assert time.monotonic() - t0 < 1.0 + 2.0
    assert "cannot connect" in e.value.message


def test_a_silent_host_connected_to_early_is_waited_for_once(tmp_path: Path) -> None:
    # bootstrap's CLI opens the first manager's connection while it imports the rest: when that
    # attempt fails, the command's first use of the connection says so at once, without a second
    # wait of connect_timeout
    with ssh_server(tmp_path, silent=True) as server:
        host = lab_host(server.port, server.client_key_file, tmp_path / "known_hosts")
        host = type(host)(**{**host.__dict__, "ssh": type(host.ssh)(**{**host.ssh.__dict__, "connect_timeout": 1.0})})
        conn = Connection(host)
        early = threading.Thread(target=conn.connect_early, daemon=True)
        early.start()
        deadline = time.monotonic() + 5
        while server.connections < 1 and time.monotonic() < deadline:  # the early attempt under way
            time.sleep(0.01)
        with pytest.raises(SSHError, match="cannot connect"):
            within(5, conn.transport)  # waits for the early attempt, and takes its error
        assert server.connections == 1, "a second connect"
        early.join(1)
        with pytest.raises(SSHError, match="cannot connect"):  # asked again, it tries again
            within(5, conn.transport)
        assert server.connections == 2


def test_an_early_connection_is_the_one_the_command_uses(tmp_path: Path) -> None:
    with ssh_server(tmp_path, output=b"hello\n") as server:
        conn = Connection(lab_host(server.port, server.client_key_file, tmp_path / "known_hosts", "accept-new"))
        with conn:
            conn.connect_early()
            assert conn.connected and server.connections == 1  # connected before the command asks
            transport = conn.transport()
            assert conn.run(["echo", "hello"]).stdout == "hello\n" and conn.transport() is transport
        assert server.connections == 1


@pytest.mark.parametrize("mode", ["silent", "hang_channels"])
def test_ctrl_c_ends_the_command_within_two_seconds(tmp_path: Path, mode: str) -> None:
    with ssh_server(tmp_path, silent=mode == "silent", hang_channels=mode == "hang_channels") as server:
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


def test_s7_run_input_to_a_host_that_stops_reading_is_bounded(tmp_path: Path) -> None:
    # a restore's archive or a put() to a host whose command never reads: past the channel's
    # window (2 MiB) nothing more can be sent, and the wait for window is the command's to bound
    data = b"x" * (8 << 20)
    with ssh_server(tmp_path, command=never_reads) as server:
        host = lab_host(server.port, server.client_key_file, tmp_path / "known_hosts", "accept-new")
        with Connection(host) as c:
            t0 = time.monotonic()
            with pytest.raises(HostError) as e:
                within(1.0 + 5.0, lambda: c.run(["sh", "-c", "cat > /srv/restore.tar"], input=data, timeout=1.0))
            took = time.monotonic() - t0
    assert took < 1.0 + 2.0, f"took {took:.1f}s"
    assert e.value.host == "h1" and "timed out after 1s running: sh -c 'cat > /srv/restore.tar'" in e.value.message
    assert f"of the {len(data)} bytes of its input" in e.value.message


def test_s7_run_input_to_a_command_that_writes_while_it_reads_does_not_deadlock(tmp_path: Path) -> None:
    # `cat` stops reading while its output is not taken: sending all the input before reading any
    # output would hold both ends for ever
    data = bytes(range(32, 127)) * ((6 << 20) // 95)  # 6 MiB, past both windows (2 MiB each)
    with ssh_server(tmp_path, command=echoes) as server:
        host = lab_host(server.port, server.client_key_file, tmp_path / "known_hosts", "accept-new")
        with Connection(host) as c:
            res = within(15.0, lambda: c.run(["cat"], input=data, timeout=10.0))
    assert res.ok and res.stdout.encode() == data


def test_work_started_beside_other_work_gives_its_value_or_raises_its_error_in_the_caller() -> None:
    # the call waits for the caller to go on: run in the caller's thread, it would wait out its 5 s
    # and give False
    gate = threading.Event()
    started = Started(lambda: gate.wait(5) and "read", "beside")
    gate.set()
    assert started.result() == "read"

    def fails() -> str:
        raise HostError("h1", "engine did not answer")

    with pytest.raises(HostError, match="engine did not answer"):
        Started(fails).result()
