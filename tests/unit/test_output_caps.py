"""A command's output is capped: a host that floods stdout is named, its channel closed, and the
client keeps what it read so far and no more (a real SSH server on 127.0.0.1)."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import pytest

from swarmctl.errors import HostError
from swarmctl.transport.ssh import MAX_OUTPUT, Connection
from tests.unit.sshserver import floods, ssh_server
from tests.unit.test_deadlines import within
from tests.unit.test_ssh_host_keys import lab_host


def test_s7_run_output_of_a_host_that_floods_stdout_is_capped_by_default(tmp_path: Path) -> None:
    # more than the default cap, then an ordinary exit: without the cap all of it is kept
    with ssh_server(tmp_path, command=floods(MAX_OUTPUT + (8 << 20))) as server:
        host = lab_host(server.port, server.client_key_file, tmp_path / "known_hosts", "accept-new")
        with Connection(host) as c, pytest.raises(HostError) as e:
            within(30.0, lambda: c.run(["yes"], timeout=25.0))
    assert MAX_OUTPUT == 16 << 20
    assert e.value.host == "h1"
    assert e.value.message == "the output of yes ran over 16 MiB (max_output); its channel was closed"


def test_s7_run_output_over_a_callers_cap_closes_the_channel(tmp_path: Path) -> None:
    stopped = threading.Event()
    with ssh_server(tmp_path, command=floods(1 << 40, stopped)) as server:
        host = lab_host(server.port, server.client_key_file, tmp_path / "known_hosts", "accept-new")
        with Connection(host) as c:
            t0 = time.monotonic()
            with pytest.raises(HostError) as e:
                within(10.0, lambda: c.run(["cat", "/dev/zero"], max_output=1 << 20, timeout=60.0))
            assert time.monotonic() - t0 < 5.0  # named at the cap, not at the timeout
            # its channel was closed, with the connection still open: the host's command stopped
            assert stopped.wait(5.0), "the flooding command was left writing"
    assert "the output of cat /dev/zero ran over 1 MiB (max_output)" in e.value.message


def test_s7_stream_output_of_a_host_that_floods_stdout_is_capped(tmp_path: Path) -> None:
    with ssh_server(tmp_path, command=floods(MAX_OUTPUT + (8 << 20))) as server:
        host = lab_host(server.port, server.client_key_file, tmp_path / "known_hosts", "accept-new")
        with Connection(host) as c, pytest.raises(HostError) as e:
            within(30.0, lambda: c.stream(["docker", "load"], io.BytesIO(b"image"), idle_timeout=25.0))
        with Connection(host) as c, pytest.raises(HostError) as small:
            within(10.0, lambda: c.stream(["docker", "load"], io.BytesIO(b"image"), max_output=1 << 20))
    assert e.value.host == "h1" and "the output of docker load ran over 16 MiB (max_output)" in e.value.message
    assert "the output of docker load ran over 1 MiB (max_output)" in small.value.message
