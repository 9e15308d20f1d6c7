"""The VM lab's pure parts (lab/vm.py): identity disks, qemu command lines, cache keys, the
accelerator choice. Booting the VMs is the e2e VM tier's (tests/e2e/test_vm.py)."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from swarmctl_lab import hosts as labhosts
from swarmctl_lab import images as labimages
from swarmctl_lab import vm


@pytest.fixture
def spec(tmp_path: Path) -> labhosts.LabSpec:
    s = labhosts.plan_lab(tmp_path / "lab", 3, 1, subnet="192.168.77.0/24", kind="vm")
    for h in s.hosts:
        ssh = s.host_dir(h) / "etc-ssh"
        ssh.mkdir(parents=True)
        (ssh / "ssh_host_ed25519_key").write_text(f"PRIVATE {h.name}\n")
        (ssh / "ssh_host_ed25519_key.pub").write_text(f"ssh-ed25519 PUBLIC {h.name}\n")
        dot = s.host_dir(h) / "root" / ".ssh"
        dot.mkdir(parents=True)
        (dot / "authorized_keys").write_text("ssh-ed25519 LABKEY swarmctl-lab\n")
    return s


def test_identity_disk_carries_each_vms_own_name_address_and_keys(spec: labhosts.LabSpec) -> None:
    host = spec.hosts[1]
    with tarfile.open(fileobj=io.BytesIO(vm.identity_tar(spec, host))) as tar:
        members = {m.name: m for m in tar.getmembers()}
        read = {name: tar.extractfile(m).read().decode() for name, m in members.items()}  # type: ignore[union-attr]
    assert read["etc/hostname"] == "lab2\n"
    assert read["etc/swarmctl-lab.env"] == "LAB_ADDRESS=192.168.77.12/24\n"
    assert read["etc/ssh/ssh_host_ed25519_key"] == "PRIVATE lab2\n"
    assert members["etc/ssh/ssh_host_ed25519_key"].mode == 0o600
    assert members["root/.ssh/authorized_keys"].mode == 0o600
    assert all(m.uid == 0 and m.gid == 0 for m in members.values())
    # the same inputs give the same bytes (no timestamps), a different host different ones
    assert vm.identity_tar(spec, host) == vm.identity_tar(spec, host)
    assert vm.identity_tar(spec, spec.hosts[0]) != vm.identity_tar(spec, host)


def test_qemu_command_line_per_accelerator(spec: labhosts.LabSpec, tmp_path: Path) -> None:
    base = vm.BaseImage(tmp_path / "base")
    host = spec.hosts[0]
    tcg = vm.qemu_argv(spec, host, base, "tcg")
    kvm = vm.qemu_argv(spec, host, base, "kvm")
    assert tcg[tcg.index("-accel") + 1].startswith("tcg") and "max" in tcg
    assert kvm[kvm.index("-accel") + 1] == "kvm" and "host" in kvm
    joined = " ".join(tcg)
    assert f"ifname={spec.veth(host)}" in joined and "script=no" in joined  # a tap on the lab bridge, no helper
    assert f"mac={vm.mac_address(host)}" in joined
    assert f"file={spec.host_dir(host) / 'identity.tar'},format=raw,if=virtio,readonly=on" in joined
    assert "root=/dev/vda" in joined and "-no-reboot" in tcg
    assert "user" not in tcg[tcg.index("-netdev") + 1]  # no user-mode network: nothing leaves the machine


def test_mac_addresses_differ_per_host(spec: labhosts.LabSpec) -> None:
    macs = [vm.mac_address(h) for h in spec.hosts]
    assert len(set(macs)) == len(macs)
    assert all(m.startswith("52:54:00:") for m in macs)


def test_root_image_cache_key_follows_recipe_mirror_and_bundle(tmp_path: Path) -> None:
    bundle = tmp_path / "lab-images-aaaa.tar"
    key = vm.RECIPE.key("http://m/debian", bundle)
    assert key == vm.Recipe().key("http://m/debian", bundle)
    assert key != vm.Recipe(packages=(*vm.RECIPE.packages, "curl")).key("http://m/debian", bundle)
    assert key != vm.RECIPE.key("http://other/debian", bundle)
    assert key != vm.RECIPE.key("http://m/debian", tmp_path / "lab-images-bbbb.tar")


def test_image_files_mask_no_ssh_host_key_and_enable_identity(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc" / "ssh").mkdir(parents=True)
    (root / "etc" / "ssh" / "ssh_host_rsa_key").write_text("baked in")
    vm._customize(root, vm.RECIPE)
    assert not list((root / "etc" / "ssh").glob("ssh_host_*"))
    unit = root / "etc/systemd/system/multi-user.target.wants/swarmctl-identity.service"
    assert unit.is_symlink()
    assert (root / "etc/systemd/system/apt-daily.timer").readlink() == Path("/dev/null")
    assert (root / "usr/local/sbin/swarmctl-identity").stat().st_mode & 0o111
    assert "HostKey /etc/ssh/ssh_host_ed25519_key" in (root / "etc/ssh/sshd_config").read_text()


def test_accelerator_choice_is_cached_and_can_be_forced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = vm.BaseImage(tmp_path / "base")
    base.dir.mkdir()
    base.kernel.write_bytes(b"kernel")
    monkeypatch.setattr(vm, "CACHE", tmp_path / "cache")
    monkeypatch.delenv("SWARMCTL_VM_ACCEL", raising=False)
    probes: list[int] = []
    monkeypatch.setattr(vm, "_accel_key", lambda b: "k1")

    def probe(b: vm.BaseImage) -> bool:
        probes.append(1)
        return False

    monkeypatch.setattr(vm, "_kvm_boots", probe)
    said: list[str] = []
    assert vm.choose_accel(base, said.append) == "tcg"
    assert vm.choose_accel(base, said.append) == "tcg"
    assert probes == [1]  # probed once, then read from the cache
    assert json.loads((tmp_path / "cache" / "accel.json").read_text()) == {"k1": "tcg"}
    assert "TCG" in said[0]
    monkeypatch.setenv("SWARMCTL_VM_ACCEL", "kvm")
    assert vm.choose_accel(base) == "kvm"


def test_vm_lab_inventory_and_spec_round_trip(spec: labhosts.LabSpec) -> None:
    spec.dir.mkdir(parents=True, exist_ok=True)
    (spec.dir / "lab.json").write_text(
        json.dumps({"subnet": spec.subnet, "kind": "vm", "hosts": [h.__dict__ for h in spec.hosts]})
    )
    assert labhosts.load_spec(spec.dir).kind == "vm"
    labhosts._write_inventory(spec, {})
    assert spec.inventory.read_text().startswith("# swarmctl lab: 3 virtual machines on this machine.")


def test_labs_in_different_directories_have_names_and_subnets_of_their_own(tmp_path: Path) -> None:
    """Labs side by side (the test suite runs one per worker): every name a lab makes on this
    machine carries its directory's tag, and its /24 is one no interface here is on."""
    a = labhosts.plan_lab(tmp_path / "a", 32, 3, subnet="192.168.70.0/24")
    b = labhosts.plan_lab(tmp_path / "b", 32, 3, subnet="192.168.71.0/24")
    assert a.tag != b.tag and a.tag == labhosts.lab_tag(tmp_path / "a" / ".." / "a")  # by absolute path
    names_a = {a.bridge, a.registry_netns, *(a.veth(h) for h in a.hosts), a.cgroup, a.comment}
    names_b = {b.bridge, b.registry_netns, *(b.veth(h) for h in b.hosts), b.cgroup, b.comment}
    assert not names_a & names_b
    assert max(len(n) for n in (a.bridge, a.registry_netns, *(a.veth(h) for h in a.hosts))) <= 15  # IFNAMSIZ - 1
    tag = "0000"  # points at 192.168.64.0/24
    assert labhosts.pick_subnet(tag, []) == "192.168.64.0/24"
    taken = ["127.0.0.1/8", "192.168.64.1/24", "192.168.65.7/24", "10.0.0.5/8"]  # two labs' bridges, a LAN
    assert labhosts.pick_subnet(tag, taken) == "192.168.66.0/24"
    assert labhosts.pick_subnet(tag, [*taken, "fe80::1/64"]) == "192.168.66.0/24"  # v6 never in the way
    with pytest.raises(labhosts.LabError, match="no free"):
        labhosts.pick_subnet(tag, ["192.168.1.2/16"])  # a LAN over all of 192.168


def test_labs_planned_at_the_same_moment_get_subnets_of_their_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen in a suite run: two workers' labs whose tags point at the same /24 planned at once both
    took it (neither bridge existed yet), and one lab's registry answered for the other's. The choice
    is made under one lock and recorded, so four labs planned at once from threads (each taking the
    lock through its own open file, as processes do) all differ. Root is faked: the state directory
    is a temporary one, and no interface is made."""
    monkeypatch.setattr(labhosts, "LABS_STATE", tmp_path / "state")
    monkeypatch.setattr(labhosts.os, "geteuid", lambda: 0)
    monkeypatch.setattr(labhosts, "machine_networks", lambda except_bridge="": ["127.0.0.1/8"])
    # directories whose tags all point at the same first choice
    first = labhosts.pick_subnet(labhosts.lab_tag(tmp_path / "lab0"), [])
    dirs = [
        d
        for d in (tmp_path / f"lab{i}" for i in range(20000))
        if labhosts.pick_subnet(labhosts.lab_tag(d), []) == first
    ][:4]
    assert len(dirs) == 4
    start = threading.Barrier(len(dirs))

    def plan(d: Path) -> str:
        start.wait()
        return labhosts.plan_lab(d, 3, 1).subnet

    with ThreadPoolExecutor(len(dirs)) as pool:
        subnets = list(pool.map(plan, dirs))
    assert len(set(subnets)) == len(dirs), subnets
    recorded = {json.loads(f.read_text())["subnet"] for f in (tmp_path / "state").glob("*.json")}
    assert recorded == set(subnets)
    # planning a lab again in its own directory keeps its subnet (its own record is not in its way)
    assert labhosts.plan_lab(dirs[3], 3, 1).subnet == subnets[3]


class _Proc:
    """A qemu process as _wait_booted sees it: running (None) or exited (its status)."""

    def __init__(self, status: int | None):
        self.status = status

    def poll(self) -> int | None:
        return self.status


def test_a_vm_whose_kernel_dies_while_booting_is_booted_once_more(
    spec: labhosts.LabSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the lab's TCG guests have been seen to die in their first hundredth of a second: a trace on the
    # console, then the exit -no-reboot makes of the panic
    for h in spec.hosts:
        spec.host_dir(h).mkdir(parents=True, exist_ok=True)
    lab3 = spec.hosts[2]
    (spec.host_dir(lab3) / "console.log").write_text("[    0.008000]  </TASK>\n")
    monkeypatch.setattr(labhosts, "_tcp_open", lambda address, port: True)
    monkeypatch.setattr(vm, "ssh", lambda *a, **k: subprocess.CompletedProcess([], 0, "active\n", ""))
    said: list[str] = []
    procs: dict[str, Any] = {h.name: _Proc(None) for h in spec.hosts}
    procs["lab3"] = _Proc(1)

    def alive(_: Any) -> Any:
        return _Proc(None)

    def dead(_: Any) -> Any:
        return _Proc(1)

    vm._wait_booted(spec, procs, 30, relaunch=alive, report=said.append)
    assert len(said) == 1 and said[0].startswith("VM lab3 died while booting ([    0.008000]  </TASK>)")
    assert (spec.host_dir(lab3) / "console.died-at-boot.log").exists()
    # a second death is the error, with the console
    procs = {h.name: _Proc(None) for h in spec.hosts}
    procs["lab3"] = _Proc(1)
    with pytest.raises(vm.VmError, match="VM lab3 exited while booting"):
        vm._wait_booted(spec, procs, 30, relaunch=dead, report=said.append)


def test_the_engine_seed_keeps_only_stored_images_and_later_hosts_share_its_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The seed (images.keep_seed) takes a data root's image/ and overlay2/ only - never its
    engine-id, network state or containers - and only for the lab's own bundle in the cache. A
    later host's copy shares the seed's files (hard links: nothing copied) yet is its own tree: a
    file the engine replaces in one (write to a temporary file, rename) stays as it was in the other."""
    cache = tmp_path / "cache"
    monkeypatch.setattr(labimages, "CACHE", cache)
    root = tmp_path / "host1-docker"
    for rel, text in {
        "image/overlay2/repositories.json": "{}",
        "overlay2/abc/diff/etc/hostname": "layer",
        "engine-id": "one engine",
        "network/files/local-kv.db": "state",
        "containers/x/config.v2.json": "{}",
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    elsewhere = tmp_path / "bench.tar"
    labimages.keep_seed(root, elsewhere)
    assert labimages.seed_for(elsewhere) is None  # a bench's archive gets none
    bundle = cache / "lab-images-0123.tar"
    assert labimages.seed_for(bundle) is None
    labimages.keep_seed(root, bundle)  # an engine that has run a container is no seed
    assert labimages.seed_for(bundle) is None
    (root / "containers/x/config.v2.json").unlink()
    (root / "containers/x").rmdir()
    labimages.keep_seed(root, bundle)
    seed = labimages.seed_for(bundle)
    assert seed is not None and sorted(p.name for p in seed.iterdir()) == ["image", "overlay2"]
    host2 = tmp_path / "host2-docker"
    host2.mkdir()
    labhosts.copy_tree(seed / "overlay2", host2 / "overlay2")
    labhosts.copy_tree(seed / "image", host2 / "image")
    layer = host2 / "overlay2/abc/diff/etc/hostname"
    assert (
        layer.read_text() == "layer" and layer.stat().st_ino == (seed / "overlay2/abc/diff/etc/hostname").stat().st_ino
    )
    repos = host2 / "image/overlay2/repositories.json"
    (repos.parent / "tmp").write_text('{"tagged": 1}')
    (repos.parent / "tmp").rename(repos)
    assert (seed / "image/overlay2/repositories.json").read_text() == "{}"
    with pytest.raises(OSError, match="cp -a"):
        labhosts.copy_tree(tmp_path / "missing", tmp_path / "nowhere")
