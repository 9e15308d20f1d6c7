"""The shipped Vagrantfile is valid and its inventory matches it.

No VM can boot here (no hypervisor), so `vagrant validate --ignore-provider` checks the file
itself; the inventory is compared with the machines it defines.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def validate(directory: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("vagrant") is None:
        pytest.skip("vagrant is not installed (scripts/setup --test installs it: apt-get install vagrant)")
    return subprocess.run(
        ["vagrant", "validate", "--ignore-provider"], cwd=directory, capture_output=True, text=True, timeout=120
    )


def test_vagrantfile_validates() -> None:
    proc = validate(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "validated successfully" in proc.stdout


def test_a_broken_vagrantfile_does_not_validate(tmp_path: Path) -> None:
    broken = (ROOT / "Vagrantfile").read_text().replace('config.vm.box = "debian/bookworm64"', "config.vm.bogus = 1")
    (tmp_path / "Vagrantfile").write_text(broken)
    proc = validate(tmp_path)
    assert proc.returncode != 0


def test_inventory_matches_the_vagrant_machines() -> None:
    text = (ROOT / "Vagrantfile").read_text()
    machines = dict(re.findall(r'\{ name: "([^"]+)",\s*ip: "([^"]+)" \}', text))
    assert len(machines) == 3
    assert 'config.vm.box = "debian/bookworm64"' in text and "docker.io" in text
    for inventory, provider in (("vagrant.yml", "virtualbox"), ("vagrant-libvirt.yml", "libvirt")):
        assert f'config.vm.provider "{provider}"' in text
        inv = yaml.safe_load((ROOT / "examples" / inventory).read_text())
        assert {name: h["address"] for name, h in inv["hosts"].items()} == machines
        assert [h["role"] for h in inv["hosts"].values()] == ["manager", "worker", "worker"]
        for name, h in inv["hosts"].items():
            assert h["ssh"]["identity_file"] == f"../.vagrant/machines/{name}/{provider}/private_key"


def test_vagrant_vms_hold_a_zookeeper_member_and_a_broker() -> None:
    """Each slot host runs one ZooKeeper member (default heap 1 GB) and one broker (512 MB heap)."""
    text = (ROOT / "Vagrantfile").read_text()
    memory = int(re.search(r"MEMORY_MB = (\d+)", text).group(1))  # type: ignore[union-attr]
    assert text.count("memory = MEMORY_MB") == 2
    stack = (ROOT / "stacks" / "kafka" / "stack.yml").read_text()
    broker_heap = int(re.search(r"KAFKA_HEAP_OPTS:-.*-Xmx(\d+)m", stack).group(1))  # type: ignore[union-attr]
    assert memory >= 1024 + broker_heap + 1024  # ZooKeeper, the broker, and the OS with dockerd


def test_vagrant_state_is_not_committed() -> None:
    tracked = subprocess.run(["git", "ls-files", ".vagrant"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    assert tracked.stdout == ""
    assert ".vagrant/" in (ROOT / ".gitignore").read_text().split()
