"""The command line's contract for bad input: one line, exit 2, no traceback, nothing touched."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import assert_no_traceback, swarmctl


def one_error_line(run_stderr: str) -> str:
    lines = [line for line in run_stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run_stderr
    assert lines[0].startswith("error: "), run_stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["frobnicate"], "No such command 'frobnicate'"),
        (["bootstrap", "--bogus"], "No such option '--bogus'"),
        (["lab", "up", "--hosts", "0"], "--hosts"),
        (["lab", "up", "--hosts", "3", "--managers", "4"], "--managers must be between 1 and the number of hosts"),
    ],
)
def test_usage_errors(args: list[str], expected: str, tmp_path: Path) -> None:
    run = swarmctl(*args, cwd=tmp_path)
    assert run.rc == 2, str(run)
    assert_no_traceback(run)
    assert expected in one_error_line(run.stderr)


def test_missing_inventory_file(tmp_path: Path) -> None:
    run = swarmctl("bootstrap", "nope.yml", cwd=tmp_path)
    assert run.rc == 2, str(run)
    assert one_error_line(run.stderr) == "error: nope.yml: no such file"


def test_bad_inventory_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "hosts.yml").write_text("hosts:\n  a: {address: 10.0.0.1, role: captain}\n")
    run = swarmctl("bootstrap", "hosts.yml", cwd=tmp_path)
    assert run.rc == 2, str(run)
    assert one_error_line(run.stderr).startswith("error: hosts.yml:2: host 'a': role must be one of")


def test_no_inventory_anywhere(tmp_path: Path) -> None:
    run = swarmctl("status", cwd=tmp_path)
    assert run.rc == 2, str(run)
    assert "no inventory: pass -i FILE" in one_error_line(run.stderr)


def test_inventory_from_environment_and_option_after_subcommand(tmp_path: Path) -> None:
    (tmp_path / "bad.yml").write_text("hosts: {}\n")
    env_run = swarmctl("status", cwd=tmp_path, env={"SWARMCTL_INVENTORY": str(tmp_path / "bad.yml")})
    assert env_run.rc == 2 and "bad.yml:1: 'hosts' is empty" in env_run.stderr, str(env_run)
    opt_run = swarmctl("status", "-i", str(tmp_path / "bad.yml"), cwd=tmp_path)
    assert opt_run.rc == 2 and "bad.yml:1: 'hosts' is empty" in opt_run.stderr, str(opt_run)


def test_even_managers_warning_is_printed(tmp_path: Path) -> None:
    # two managers on loopback ports where nothing listens: the inventory is valid, the warning
    # comes before any connection, and the connections are refused at once (nothing leaves the machine)
    (tmp_path / "hosts.yml").write_text(
        "ssh: {port: 9, connect_timeout: 2}\n"
        "hosts:\n  a: {address: 127.0.0.1, role: manager}\n  b: {address: 127.0.0.2, role: manager}\n"
    )
    run = swarmctl("status", "-i", "hosts.yml", cwd=tmp_path)
    assert "warning: hosts.yml: 2 managers: raft needs a majority (2)" in run.stderr, str(run)
    assert "use an odd number" in run.stderr
    assert run.rc == 1 and "no reachable swarm manager" in run.stderr, str(run)


def test_lab_needs_root_and_says_so(tmp_path: Path) -> None:
    import os
    import shutil
    import subprocess
    import sys

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root to drop to an unprivileged user")
    tmp_path.chmod(0o777)
    # uid 65534, keeping only the right to read (a checkout under /root, mode 0700, stays importable)
    proc = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=+dac_read_search",
            "--ambient-caps=+dac_read_search",
            sys.executable,
            "-m",
            "swarmctl",
            "lab",
            "up",
            "--dir",
            str(tmp_path / "lab"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == "error: the lab needs root (network namespaces, bridges, mounts): run it as root"
