"""The first five minutes: `swarmctl init` writes a project that loads and never overwrites, and
`swarmctl host-keys` records a host's SSH key only once its fingerprint is confirmed - against a
real SSH server in this process (127.0.0.1), whose key changes are refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from swarmctl.inventory import load_inventory
from swarmctl.transport.ssh import fingerprint
from tests.unit.sshserver import other_host_key, ssh_server


def cli(*args: str, cwd: Path | None = None, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "swarmctl", *args], capture_output=True, text=True, cwd=cwd,
                          input=stdin, timeout=60)  # fmt: skip


def test_init_writes_a_project_that_loads_and_never_overwrites(tmp_path: Path) -> None:
    run = cli("init", str(tmp_path / "c"), "--hosts", "10.9.0.11,10.9.0.12,n3.example.test")
    assert run.returncode == 0, run.stderr
    inv = load_inventory(tmp_path / "c" / "hosts.yml")
    assert [(h.name, h.address, h.role, dict(h.labels)) for h in inv.hosts] == [
        ("node1", "10.9.0.11", "manager", {"kafka.slot": "1"}),
        ("node2", "10.9.0.12", "worker", {"kafka.slot": "2"}),
        ("node3", "n3.example.test", "worker", {"kafka.slot": "3"}),
    ]
    assert inv.autolock is None and inv.hosts[0].ssh.known_hosts == tmp_path / "c" / "known_hosts"
    gitignore = (tmp_path / "c" / ".gitignore").read_text()
    assert ".swarmctl/" in gitignore.splitlines() and "secrets/" not in gitignore.splitlines()
    assert "swarmctl host-keys" in run.stderr and "ssh-copy-id" in run.stderr  # the next steps
    before = (tmp_path / "c" / "hosts.yml").read_text()
    again = cli("init", str(tmp_path / "c"), "--hosts", "10.9.0.21,10.9.0.22,10.9.0.23")
    assert again.returncode == 2 and "never overwrites" in again.stderr
    assert (tmp_path / "c" / "hosts.yml").read_text() == before
    assert cli("init", str(tmp_path / "d"), "--hosts", "10.9.0.1,10.9.0.2").returncode == 2  # 3 hosts


def inventory(tmp_path: Path, port: int, key: Path) -> Path:
    path = tmp_path / "hosts.yml"
    path.write_text(
        "ssh:\n"
        f"  identity_file: {key}\n  known_hosts: ./known_hosts\n  port: {port}\n  connect_timeout: 5\n"
        "hosts:\n  h1: {address: 127.0.0.1, role: manager}\n"
    )
    return path


def test_host_keys_records_a_key_only_once_confirmed(tmp_path: Path) -> None:
    with ssh_server(tmp_path) as server:
        inv = inventory(tmp_path, server.port, server.client_key_file)
        fp = fingerprint(server.host_key)
        unconfirmed = cli("host-keys", "-i", str(inv))  # no terminal: nobody to ask
        assert unconfirmed.returncode == 1 and fp in unconfirmed.stderr and "new" in unconfirmed.stderr
        assert not (tmp_path / "known_hosts").exists()
        wrong = cli("host-keys", "-i", str(inv), "--expect", "h1=SHA256:notthisone")
        assert wrong.returncode == 1 and "not the SHA256:notthisone given for it" in wrong.stderr
        assert not (tmp_path / "known_hosts").exists()
        right = cli("host-keys", "-i", str(inv), "--expect", f"h1={fp}", "--json")
        assert right.returncode == 0, right.stderr
        data = json.loads(right.stdout)
        assert [(c["name"], c["action"]) for c in data["changes"]] == [("h1", "record")]
        assert data["keys"][0]["fingerprint"] == fp and data["keys"][0]["status"] == "new"
        line = (tmp_path / "known_hosts").read_text().strip()
        assert line == f"[127.0.0.1]:{server.port} ssh-ed25519 {server.host_key.get_base64()}"
        assert (tmp_path / "known_hosts").stat().st_mode & 0o777 == 0o600
        known = cli("host-keys", "-i", str(inv))
        assert known.returncode == 0 and "every host's key is known" in known.stderr
        # and a strict connection now trusts it
        status = cli("bootstrap", str(inv), "--plan")
        assert "unknown host key" not in status.stderr


def test_a_changed_host_key_is_refused_and_never_written(tmp_path: Path) -> None:
    old = other_host_key(tmp_path)
    with ssh_server(tmp_path) as server:
        inv = inventory(tmp_path, server.port, server.client_key_file)
        (tmp_path / "known_hosts").write_text(f"[127.0.0.1]:{server.port} {old.get_name()} {old.get_base64()}\n")
        before = (tmp_path / "known_hosts").read_text()
        run = cli("host-keys", "-i", str(inv), "--yes")
    assert run.returncode == 1 and "HOST KEY CHANGED" in run.stderr and "ssh-keygen -R" in run.stderr
    assert (tmp_path / "known_hosts").read_text() == before


def test_an_unreachable_host_is_named(tmp_path: Path) -> None:
    inv = tmp_path / "hosts.yml"
    inv.write_text("ssh: {known_hosts: ./known_hosts, port: 1, connect_timeout: 2}\n"
                   "hosts:\n  h1: {address: 127.0.0.1, role: manager}\n")  # fmt: skip
    run = cli("host-keys", "-i", str(inv))
    assert run.returncode == 1 and "h1 (cannot connect to 127.0.0.1:1" in run.stderr


@pytest.mark.parametrize("bad", ["h1", "h1=md5:xx", "=SHA256:x"])
def test_expect_must_name_a_host_and_a_sha256_fingerprint(tmp_path: Path, bad: str) -> None:
    inv = tmp_path / "hosts.yml"
    inv.write_text("hosts:\n  h1: {address: 127.0.0.1, role: manager}\n")
    run = cli("host-keys", "-i", str(inv), "--expect", bad)
    assert run.returncode == 2 and "Traceback" not in run.stderr
