"""Host-key policies against a real SSH server in this process (127.0.0.1): unknown keys under
reject and accept-new, and a changed key, which is refused under every policy."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

import paramiko
import pytest

from swarmctl.errors import HostKeyError
from swarmctl.inventory import Host, SSHSettings
from swarmctl.transport.ssh import Connection, fingerprint
from tests.unit.sshserver import other_host_key, ssh_server


def lab_host(port: int, key: Path, known_hosts: Path, policy: str = "reject") -> Host:
    settings = SSHSettings(
        user="root", port=port, identity_file=key, known_hosts=known_hosts, host_key_policy=policy, connect_timeout=5
    )
    return Host("h1", "127.0.0.1", "manager", MappingProxyType({}), None, settings)


def test_unknown_key_is_refused_under_reject_with_its_fingerprint(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    with ssh_server(tmp_path) as server, pytest.raises(HostKeyError) as e:
        Connection(lab_host(server.port, server.client_key_file, known)).run(["true"])
    assert "unknown host key" in e.value.message and fingerprint(server.host_key) in e.value.message
    assert "accept-new" in e.value.message  # says what to do instead
    assert not known.exists()  # nothing was recorded


def test_accept_new_records_the_key_and_a_strict_connection_then_works(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    with ssh_server(tmp_path, output=b"hello\n") as server:
        with Connection(lab_host(server.port, server.client_key_file, known, "accept-new")) as c:
            assert c.run(["echo", "hello"]).stdout == "hello\n"
        line = known.read_text().strip()
        assert line.startswith(f"[127.0.0.1]:{server.port} ssh-ed25519 ")
        assert line.split()[2] == server.host_key.get_base64()
        with Connection(lab_host(server.port, server.client_key_file, known, "reject")) as c:
            assert c.run(["echo", "hello"]).ok


def test_a_hashed_known_hosts_entry_is_found_and_the_file_is_read_again_once_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `ssh-keygen -H` hashes the names; the file is parsed once while it stays the same file
    loads: list[str] = []
    load = paramiko.HostKeys.load

    def counted(self: paramiko.HostKeys, path: str) -> None:
        loads.append(path)
        load(self, path)

    monkeypatch.setattr(paramiko.HostKeys, "load", counted)
    known = tmp_path / "known_hosts"
    with ssh_server(tmp_path, output=b"hello\n") as server:
        name = f"[127.0.0.1]:{server.port}"
        known.write_text(f"{paramiko.HostKeys.hash_host(name)} ssh-ed25519 {other_host_key(tmp_path).get_base64()}\n")
        for _ in range(2):
            with pytest.raises(HostKeyError, match="HOST KEY CHANGED"):
                Connection(lab_host(server.port, server.client_key_file, known)).run(["true"])
        assert len(loads) == 1  # two connections, one parse
        # rewritten in place (a longer file: its size tells it apart within one mtime tick)
        line = f"{paramiko.HostKeys.hash_host(name)} ssh-ed25519 {server.host_key.get_base64()}"
        known.write_text(f"# rewritten\n{line}\n")
        with Connection(lab_host(server.port, server.client_key_file, known)) as c:
            assert c.run(["echo", "hello"]).stdout == "hello\n"
        assert len(loads) == 2


@pytest.mark.parametrize("policy", ["reject", "accept-new"])
def test_changed_key_is_refused_loudly_under_every_policy(tmp_path: Path, policy: str) -> None:
    known = tmp_path / "known_hosts"
    old = other_host_key(tmp_path)
    with ssh_server(tmp_path) as server:
        known.write_text(f"[127.0.0.1]:{server.port} {old.get_name()} {old.get_base64()}\n")
        before = known.read_text()
        with (
            pytest.raises(HostKeyError) as e,
            Connection(lab_host(server.port, server.client_key_file, known, policy)) as c,
        ):
            c.run(["true"])
    message = e.value.message
    assert "HOST KEY CHANGED" in message and "man-in-the-middle" in message
    assert fingerprint(old) in message and fingerprint(server.host_key) in message
    assert f"ssh-keygen -R [127.0.0.1]:{server.port}" in message
    assert known.read_text() == before  # the old key is kept: the user decides
