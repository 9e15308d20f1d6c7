"""Lab hosts as real virtual machines (``swarmctl lab up --vm``): their own kernels, so IPVS (service
VIPs, the ingress routing mesh) and IPsec ESP (encrypted overlays) work, which the namespace lab's
shared kernel lacks here.

* One root image per recipe, built by mmdebstrap from the machine's Debian mirror, written into an
  ext4 disk (``mkfs.ext4 -d``), and cached under ``~/.cache/swarmctl/vm``: rebuilt only when the
  recipe (packages and the files below) changes. The kernel and initrd are booted directly.
* The lab's image bundle is loaded into that image when it is built, by the image's own dockerd
  run chrooted on this machine (native speed: under TCG the same ``docker load`` took ten minutes
  for three VMs). The cache key includes the bundle's, so new lab images mean a new root image.
* Each VM boots a copy-on-write overlay of it (``qemu-img create -b``) and a small read-only disk
  with its identity (a tar: hostname, address, SSH host key, authorized key), unpacked at boot
  before sshd and dockerd start. Nothing reaches the VM over a network it could leave by.
* VMs sit on the lab's bridge through tap devices (``swl<tag>-<host>``), with the same
  addresses, keys and known_hosts; their qemu processes live in the lab's cgroup, so ``lab down``
  removes them like any lab host.
* KVM when it works on this machine (a short probe boot, cached per host kernel, CPU and qemu);
  TCG otherwise. Here KVM guests stop right after "Decompressing" (the virtual CPU lacks features
  the Debian kernel needs), so TCG it is, and TCG is slow: about a minute to boot.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import platform
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from swarmctl.errors import PrerequisiteError, TimeoutExpired
from swarmctl.files import write_atomic
from swarmctl.plan import Notify, quiet
from swarmctl_lab import hosts as labhosts
from swarmctl_lab.hosts import LabError, LabHost, LabSpec

log = logging.getLogger(__name__)

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "swarmctl" / "vm"
QEMU = "qemu-system-x86_64"
# command -> Debian package
VM_COMMANDS = {QEMU: "qemu-system-x86", "qemu-img": "qemu-utils", "mkfs.ext4": "e2fsprogs", "mmdebstrap": "mmdebstrap"}
DISK_SIZE = "8G"  # sparse: the base holds ~1 GB, each overlay what its VM writes
MEMORY_MB = 2048  # a ZooKeeper member, a broker and dockerd, with room (the stack's heaps are 512 MB)
# One vCPU each. Under TCG every vCPU is a host thread; measured here (2 cores, 3 VMs): with 2
# vCPUs a boot took about 4 min and, with two stacks deploying, agents missed their heartbeats and
# tasks sat in "starting" for 20 minutes; with 1 the boot takes about 2.5 min and the stacks
# converge (a guest with 2 vCPUs waits on IPIs and spinlocks held by a descheduled vCPU thread).
VCPUS = 1
ROOT_BUILD_TIMEOUT = 1200.0  # mmdebstrap of the root image: about 90 s here from a nearby mirror
BOOT_TIMEOUT = 420.0  # TCG on a loaded 2-core machine: boots take 1-3 minutes
ACCELS = ("kvm", "tcg")

IDENTITY_SCRIPT = """#!/bin/sh
# The lab VM's identity, from the read-only disk swarmctl made for it (/dev/vdb: a tar).
set -eu
tar -x -f /dev/vdb -C /
hostname "$(cat /etc/hostname)"
. /etc/swarmctl-lab.env
ip link set lo up
ip link set eth0 up
ip address add "$LAB_ADDRESS" dev eth0
"""

IDENTITY_UNIT = """[Unit]
Description=swarmctl lab identity (hostname, address, SSH keys) from its config disk
DefaultDependencies=no
Requires=dev-vdb.device
After=dev-vdb.device local-fs.target
Before=network-pre.target ssh.service docker.service containerd.service
Wants=network-pre.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/swarmctl-identity

[Install]
WantedBy=multi-user.target
"""

SSHD_CONFIG = """# swarmctl lab VM: keys only, the host key from the identity disk
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
MaxSessions 64
MaxStartups 64:30:128
Subsystem sftp internal-sftp
"""

# dockerd's own default otherwise; a bounded stop keeps `systemctl restart docker` quick
DAEMON_JSON = json.dumps({"shutdown-timeout": 5}, indent=2) + "\n"


class VmError(LabError):
    pass


@dataclass(frozen=True)
class Recipe:
    """What goes into the VM root image. A change here (or to the files) gives a new cache key."""

    suite: str = "bookworm"
    packages: tuple[str, ...] = (
        "linux-image-amd64",
        "systemd-sysv",
        "udev",
        "kmod",
        "openssh-server",
        "docker.io",
        "apparmor",  # dockerd loads its docker-default profile: the Debian kernel has AppArmor on
        "iproute2",
        "iptables",
        "ca-certificates",
        "procps",
        "python3",
        "tar",
    )
    version: str = "1"

    def files(self) -> dict[str, tuple[str, int]]:
        """path in the image -> (content, mode)."""
        return {
            "/usr/local/sbin/swarmctl-identity": (IDENTITY_SCRIPT, 0o755),
            "/etc/systemd/system/swarmctl-identity.service": (IDENTITY_UNIT, 0o644),
            "/etc/ssh/sshd_config": (SSHD_CONFIG, 0o644),
            "/etc/docker/daemon.json": (DAEMON_JSON, 0o644),
            "/etc/fstab": ("/dev/vda / ext4 rw,errors=remount-ro 0 1\n", 0o644),
            "/etc/hostname": ("swarmctl-vm\n", 0o644),
            "/etc/modules-load.d/swarmctl-lab.conf": ("ip_vs\nesp4\nxfrm_user\nbr_netfilter\noverlay\n", 0o644),
        }

    def key(self, mirror: str, bundle: Path) -> str:
        data = json.dumps(
            [self.suite, self.packages, self.version, mirror, sorted(self.files().items()), MASKED, bundle.name]
        )
        return hashlib.sha256(data.encode()).hexdigest()[:16]


RECIPE = Recipe()
# units a lab VM does not need, masked: each costs seconds of boot under TCG
MASKED = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "fstrim.timer",
    "getty@tty1.service",
    "serial-getty@ttyS0.service",
    "systemd-logind.service",
    "getty-static.service",
    "e2scrub_reap.service",
    "systemd-binfmt.service",
)


@dataclass(frozen=True)
class BaseImage:
    dir: Path

    @property
    def disk(self) -> Path:
        return self.dir / "root.raw"

    @property
    def kernel(self) -> Path:
        return self.dir / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.dir / "initrd.img"

    def complete(self) -> bool:
        return all(p.is_file() for p in (self.disk, self.kernel, self.initrd, self.dir / "done"))


def check_prerequisites() -> None:
    missing = {cmd: pkg for cmd, pkg in VM_COMMANDS.items() if not labhosts._which(cmd)}
    if missing:
        pkgs = " ".join(sorted(set(missing.values())))
        raise PrerequisiteError(f"the VM lab needs {', '.join(missing)}: install them with `apt-get install {pkgs}`")
    if not Path("/dev/net/tun").exists():
        raise PrerequisiteError("the VM lab needs /dev/net/tun (tap devices): `modprobe tun`")


def _run(argv: list[str], what: str, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise TimeoutExpired(f"{what} did not finish within {timeout:g}s") from None
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-3:]
        raise VmError(f"{what} failed ({proc.returncode}): {' | '.join(tail)}")
    return proc


# -- the base image -------------------------------------------------------------------------------


def _building(recipe: Recipe) -> str:
    return f"building the VM root image (Debian {recipe.suite}, {len(recipe.packages)} packages) with mmdebstrap"


def base_image(mirror: str, bundle: Path, recipe: Recipe = RECIPE) -> BaseImage:
    """Where the root image of ``recipe`` with ``bundle`` baked in is cached (whether built or not)."""
    return BaseImage(CACHE / f"base-{recipe.suite}-{recipe.key(mirror, bundle)}")


class RootBuild:
    """The VM root's mmdebstrap, started in the background (``lab up --vm`` builds the lab images
    meanwhile: on a cold cache the two take about 40 s and 90 s). A build that is cancelled (an
    error elsewhere, Ctrl-C) gets SIGTERM, on which mmdebstrap unmounts what it mounted; it runs in
    a mount namespace of its own where "/" is a mount point (not inside a plain chroot, where the
    propagation of "/" cannot be changed), and its work directory is removed only when no mount is
    left under it."""

    def __init__(self, mirror: str, recipe: Recipe = RECIPE):
        CACHE.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="build-", dir=CACHE))
        self.root = self.work / "root"
        self._log = open(self.work / "mmdebstrap.log", "wb")  # noqa: SIM115 - closed by close()
        self._proc: subprocess.Popen[bytes] | None = None
        propagation = "private" if labhosts._root_is_mountpoint() else "unchanged"
        argv = [
            "unshare", "--mount", "--propagation", propagation,
            "mmdebstrap",
            "--quiet",
            "--variant=minbase",
            '--aptopt=APT::Install-Recommends "false"',
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--dpkgopt=path-include=/usr/share/locale/locale.alias",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--include=" + ",".join(recipe.packages),
            recipe.suite,
            str(self.root),
            mirror,
        ]  # fmt: skip
        try:
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
            )
        except OSError as e:
            self.close()
            raise VmError(f"mmdebstrap of the VM root image could not start: {e}") from None

    def wait(self) -> Path:
        """The root directory once mmdebstrap finished; VmError with its last lines when it failed."""
        assert self._proc is not None, "RootBuild.wait after close"
        try:
            rc = self._proc.wait(timeout=ROOT_BUILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise TimeoutExpired(
                f"mmdebstrap of the VM root image did not finish within {ROOT_BUILD_TIMEOUT:g}s "
                "(a slow or unreachable Debian mirror?)"
            ) from None
        if rc != 0:
            self._log.flush()
            tail = (self.work / "mmdebstrap.log").read_text(errors="replace").strip().splitlines()[-3:]
            raise VmError(f"mmdebstrap of the VM root image failed ({rc}): {' | '.join(tail)}")
        return self.root

    def close(self) -> None:
        """Stop mmdebstrap if it still runs and remove the work directory (idempotent)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
        self._log.close()
        mounted = _mounts_under(self.work)
        if mounted:
            log.warning("left %s in place: %s still mounted there", self.work, ", ".join(mounted))
            return
        shutil.rmtree(self.work, ignore_errors=True)


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` in this mount namespace."""
    prefix = str(path.resolve())
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            points = [line.split()[4] for line in f]
    except OSError:
        return []
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]


def ensure_base(
    mirror: str,
    bundle: Path,
    report: Notify = quiet,
    rebuild: bool = False,
    recipe: Recipe = RECIPE,
    build: RootBuild | None = None,
) -> BaseImage:
    """The cached VM root image for ``recipe`` with the lab images in ``bundle`` loaded, built first
    when missing (about 2 minutes); ``build``: its mmdebstrap, already started."""
    base = base_image(mirror, bundle, recipe)
    if rebuild and base.dir.exists():
        shutil.rmtree(base.dir)
    if base.complete():
        if build is not None:
            build.close()
        return base
    if build is None:
        report(_building(recipe))
        build = RootBuild(mirror, recipe)
    try:
        root = build.wait()
        _customize(root, recipe)
        report("loading the lab images into the VM root image")
        _bake_images(root, bundle)
        out = build.work / "out"
        out.mkdir()
        kernels = sorted((root / "boot").glob("vmlinuz-*"))
        initrds = sorted((root / "boot").glob("initrd.img-*"))
        if not kernels or not initrds:
            raise VmError("the VM root image has no kernel or initrd in /boot (linux-image-amd64 missing?)")
        shutil.copyfile(kernels[-1], out / "vmlinuz")
        shutil.copyfile(initrds[-1], out / "initrd.img")
        _run(
            ["mkfs.ext4", "-q", "-F", "-L", "swarmctl-root", "-d", str(root), str(out / "root.raw"), DISK_SIZE],
            "mkfs.ext4",
        )
        shutil.rmtree(root)
        write_atomic(
            out / "done", json.dumps({"recipe": recipe.key(mirror, bundle), "kernel": kernels[-1].name}) + "\n"
        )
        if base.dir.exists():
            shutil.rmtree(base.dir)
        out.rename(base.dir)
    finally:
        build.close()
    for old in CACHE.glob(f"base-{recipe.suite}-*"):
        if old != base.dir:
            shutil.rmtree(old, ignore_errors=True)
    return base


def _customize(root: Path, recipe: Recipe) -> None:
    for path, (content, mode) in recipe.files().items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
        target.chmod(mode)
    # every VM gets its own host key from its identity disk: none may be baked into the image
    for key in (root / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()
    for unit in MASKED:
        masked = root / "etc" / "systemd" / "system" / unit
        masked.unlink(missing_ok=True)
        masked.symlink_to("/dev/null")
    wants = root / "etc" / "systemd" / "system" / "multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "swarmctl-identity.service"
    if not link.is_symlink():
        link.symlink_to("/etc/systemd/system/swarmctl-identity.service")
    (root / "etc" / "machine-id").write_text("")  # systemd makes one per boot
    for d in ("root/.ssh", "var/lib/docker"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "root" / ".ssh").chmod(0o700)


def _bake_images(root: Path, bundle: Path, timeout: float = 600.0) -> None:
    """``docker load`` the bundle into the root image's /var/lib/docker with the image's own dockerd,
    chrooted, in a private mount and PID namespace (its mounts and processes end with it)."""
    q = shlex.quote
    sock = "unix:///run/docker.sock"
    script = f"""set -eu
R={q(str(root))}
mount --bind "$R" "$R"  # dockerd remounts its / (chrootarchive): it must be a mount point
mount --rbind /dev "$R/dev"; mount -t proc proc "$R/proc"; mount --rbind /sys "$R/sys"
mount -t tmpfs tmpfs "$R/run"; mount -t tmpfs tmpfs "$R/tmp"
: > "$R/tmp/bundle.tar"; mount --bind {q(str(bundle))} "$R/tmp/bundle.tar"
chroot "$R" dockerd -H {sock} --bridge=none --iptables=false --storage-driver=overlay2 >"$R/run/dockerd.log" 2>&1 &
dockerd=$!
i=0
until chroot "$R" docker -H {sock} version >/dev/null 2>&1; do
  i=$((i+1)); [ $i -lt 600 ] || {{ tail -5 "$R/run/dockerd.log" >&2; exit 1; }}; sleep 0.1
done
chroot "$R" docker -H {sock} load -q -i /tmp/bundle.tar
kill "$dockerd"
wait "$dockerd" || true  # it exits 0 or 143 on SIGTERM
"""
    propagation = "private" if labhosts._root_is_mountpoint() else "unchanged"
    _run(
        ["unshare", "--mount", "--pid", "--fork", f"--propagation={propagation}", "sh", "-c", script],
        "loading the lab images into the VM root image",
        timeout,
    )
    # per-engine identity must not be shared by every VM made from this image
    for leftover in ("etc/docker/key.json", "var/lib/docker/engine-id", "var/lib/docker/network"):
        p = root / leftover
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)


# -- KVM or TCG -----------------------------------------------------------------------------------


def _accel_key(base: BaseImage) -> str:
    try:
        cpu = next(
            (line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), ""
        )
    except OSError:
        cpu = ""
    qemu = subprocess.run([QEMU, "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    data = json.dumps([platform.release(), cpu, qemu, base.kernel.stat().st_size])
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def choose_accel(base: BaseImage, report: Notify = quiet) -> str:
    """ "kvm" when a probe boot of the VM kernel under KVM gets as far as the kernel's own messages,
    else "tcg". The answer is cached per host kernel, CPU model, qemu and guest kernel."""
    forced = os.environ.get("SWARMCTL_VM_ACCEL")
    if forced in ACCELS:
        return forced
    cache = CACHE / "accel.json"
    key = _accel_key(base)
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and known.get(key) in ACCELS:
        return str(known[key])
    accel = "kvm" if _kvm_boots(base) else "tcg"
    report(f"KVM probe: {'the kernel boots under KVM' if accel == 'kvm' else 'no KVM here; TCG (slow) it is'}")
    write_atomic(cache, json.dumps({**(known if isinstance(known, dict) else {}), key: accel}) + "\n")
    return accel


def _kvm_boots(base: BaseImage, timeout: float = 20.0) -> bool:
    """Boot the kernel with no root disk: a working guest prints its banner and panics ("VFS: Unable
    to mount root"), which -no-reboot turns into an exit; a stuck one prints nothing after
    "Booting the kernel"."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    with tempfile.TemporaryDirectory() as tmp:
        console = Path(tmp) / "console"
        argv = [
            QEMU, "-accel", "kvm", "-cpu", "host", "-m", "256", "-nodefaults", "-display", "none",
            "-no-reboot", "-serial", f"file:{console}", "-kernel", str(base.kernel),
            "-append", "console=ttyS0 panic=-1",
        ]  # fmt: skip
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                text = console.read_text(errors="replace") if console.exists() else ""
                if "Linux version" in text:
                    return True
                if proc.poll() is not None:
                    return "Linux version" in (console.read_text(errors="replace") if console.exists() else "")
                time.sleep(0.2)
            return False
        finally:
            proc.kill()
            proc.wait()


# -- the machines ---------------------------------------------------------------------------------


def mac_address(host: LabHost) -> str:
    octets = [int(x) for x in host.address.split(".")]
    return "52:54:00:{:02x}:{:02x}:{:02x}".format(*octets[1:])


def identity_tar(spec: LabSpec, host: LabHost) -> bytes:
    """The identity disk of one VM: hostname, address, SSH host key and the lab's authorized key."""
    hd = spec.host_dir(host)
    files = {
        "etc/hostname": (f"{host.name}\n".encode(), 0o644),
        "etc/hosts": (f"127.0.0.1 localhost\n{host.address} {host.name}\n".encode(), 0o644),
        "etc/swarmctl-lab.env": (f"LAB_ADDRESS={host.address}/{spec.prefixlen}\n".encode(), 0o644),
        "etc/ssh/ssh_host_ed25519_key": ((hd / "etc-ssh" / "ssh_host_ed25519_key").read_bytes(), 0o600),
        "etc/ssh/ssh_host_ed25519_key.pub": ((hd / "etc-ssh" / "ssh_host_ed25519_key.pub").read_bytes(), 0o644),
        "root/.ssh/authorized_keys": ((hd / "root" / ".ssh" / "authorized_keys").read_bytes(), 0o600),
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def qemu_argv(spec: LabSpec, host: LabHost, base: BaseImage, accel: str) -> list[str]:
    hd = spec.host_dir(host)
    cpu = ["-accel", "kvm", "-cpu", "host"] if accel == "kvm" else ["-accel", "tcg,thread=multi", "-cpu", "max"]
    return [
        QEMU, "-name", host.name, *cpu, "-m", str(MEMORY_MB), "-smp", str(VCPUS),
        "-nodefaults", "-display", "none", "-no-reboot", "-serial", f"file:{hd / 'console.log'}",
        "-kernel", str(base.kernel), "-initrd", str(base.initrd),
        # no AppArmor (its service took 14 s of a TCG boot, and dockerd loads its profile through
        # apparmor_parser) and no speculation mitigations (retpolines cost emulated cycles): the
        # lab VMs are there for their kernels' IPVS and ESP. 3 VMs booted on 148 CPU-s, not 166-196.
        "-append", "root=/dev/vda rw console=ttyS0 net.ifnames=0 panic=-1 quiet mitigations=off apparmor=0",
        "-drive", f"file={hd / 'disk.qcow2'},format=qcow2,if=virtio,cache=unsafe",
        "-drive", f"file={hd / 'identity.tar'},format=raw,if=virtio,readonly=on",
        "-netdev", f"tap,id=net0,ifname={spec.veth(host)},script=no,downscript=no",
        "-device", f"virtio-net-pci,netdev=net0,mac={mac_address(host)}",
        "-device", "virtio-rng-pci",
    ]  # fmt: skip


def start_vms(
    spec: LabSpec,
    bundle: Path,
    report: Notify = quiet,
    timeout: float = BOOT_TIMEOUT,
    build: RootBuild | None = None,
    mirror: str | None = None,
) -> str:
    """Boot every host of ``spec`` as a VM on the lab bridge and wait until sshd and dockerd answer
    in each. Returns the accelerator used. (``bring_up`` checked the prerequisites.) ``build``: the
    root image's mmdebstrap, started from ``mirror``."""
    base = ensure_base(mirror or _mirror(), bundle, report, build=build)
    accel = choose_accel(base, report)
    procs = {}
    for host in spec.hosts:
        hd = spec.host_dir(host)
        hd.mkdir(parents=True, exist_ok=True)
        disk = hd / "disk.qcow2"
        disk.unlink(missing_ok=True)
        _run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base.disk), "-F", "raw", str(disk)],
            f"qemu-img create for {host.name}",
        )
        write_atomic(hd / "identity.tar", identity_tar(spec, host), 0o600)
        labhosts._run(["ip", "tuntap", "add", "dev", spec.veth(host), "mode", "tap"])
        labhosts._run(["ip", "link", "set", spec.veth(host), "master", spec.bridge, "up"])
        procs[host.name] = _launch(spec, host, base, accel)
    speed = "KVM" if accel == "kvm" else "TCG, no KVM: a boot takes a minute or more"
    report(f"booting {len(spec.hosts)} VMs on bridge {spec.bridge} ({spec.subnet}; {speed})")
    _wait_booted(spec, procs, timeout, relaunch=lambda h: _launch(spec, h, base, accel), report=report)
    return accel


def _launch(spec: LabSpec, host: LabHost, base: BaseImage, accel: str) -> subprocess.Popen[bytes]:
    """Start the host's qemu in the host's cgroup (so that `lab down` finds it)."""
    hd = spec.host_dir(host)
    daemons = labhosts.tracking_root(spec.cgroup) / host.name / "daemons"
    daemons.mkdir(parents=True, exist_ok=True)
    script = f'echo $$ > {shlex.quote(str(daemons / "cgroup.procs"))}\nexec "$@"'
    (hd / "log").mkdir(exist_ok=True)
    with open(hd / "log" / "qemu.log", "ab") as out:
        return subprocess.Popen(
            ["sh", "-c", script, "qemu", *qemu_argv(spec, host, base, accel)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )


def bring_up(spec: LabSpec, report: Notify = quiet, with_registry: bool = True) -> Path:
    """``lab up --vm``: the lab of ``spec`` as VMs, with the lab images (and registry). Returns the
    inventory path."""
    from swarmctl_lab import images

    check_prerequisites()
    mirror = _mirror()
    build = None
    if not base_image(mirror, images.bundle_path(mirror)).complete():
        report(_building(RECIPE) + ", in the background")
        build = RootBuild(mirror)
    try:
        bundle = images.ensure_bundle(report=report)

        def boot(s: LabSpec) -> None:
            start_vms(s, bundle, report=report, build=build, mirror=mirror)

        def have_images(s: LabSpec) -> dict[str, str]:
            check_images(s, images.bundle_ids(bundle))
            return images.lab_vars()

        return labhosts.bring_up(spec, report=report, prepare=have_images, with_registry=with_registry, start=boot)
    finally:
        if build is not None:
            build.close()  # used (and closed) by the boot, or never reached it


def _mirror() -> str:
    from swarmctl_lab import images

    return images.debian_mirror()


def ssh_argv(spec: LabSpec, host: LabHost, command: str, connect_timeout: int = 5) -> list[str]:
    """ssh to a lab VM as root with the lab's key and known_hosts (host keys checked)."""
    return [
        "ssh", "-q", "-i", str(spec.dir / "id_ed25519"),
        "-o", f"UserKnownHostsFile={spec.dir / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout}", "-o", "ServerAliveInterval=10",
        f"root@{host.address}", command,
    ]  # fmt: skip


def ssh(spec: LabSpec, host: LabHost, command: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(ssh_argv(spec, host, command), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess([], 124, "", f"no answer within {timeout:g}s")


def _wait_booted(
    spec: LabSpec,
    procs: dict[str, subprocess.Popen[bytes]],
    timeout: float,
    relaunch: Callable[[LabHost], subprocess.Popen[bytes]] | None = None,
    report: Notify = quiet,
) -> None:
    """Wait until sshd and dockerd answer in every VM. A VM whose kernel dies while booting (seen
    under TCG: a trace in its first hundredth of a second, then the exit -no-reboot makes of the
    panic) is booted once more, said so, its console kept; a second death is the error."""
    deadline = time.monotonic() + timeout
    pending = {h.name: h for h in spec.hosts}
    seen: dict[str, str] = dict.fromkeys(pending, "booting")
    relaunched: set[str] = set()
    while pending:
        for name, host in list(pending.items()):
            if procs[name].poll() is not None:
                console = _console_tail(spec, host)
                if relaunch is None or name in relaunched:
                    raise VmError(f"VM {name} exited while booting: {console}")
                relaunched.add(name)
                hd = spec.host_dir(host)
                with contextlib.suppress(OSError):
                    (hd / "console.log").rename(hd / "console.died-at-boot.log")
                report(f"VM {name} died while booting ({console.splitlines()[-1] if console else 'no output'}); "
                       f"booting it again (its console: {hd / 'console.died-at-boot.log'})")  # fmt: skip
                procs[name] = relaunch(host)
                continue
            if not labhosts._tcp_open(host.address, 22):
                continue
            proc = ssh(spec, host, "systemctl is-active docker", timeout=20)
            seen[name] = f"sshd up, docker {proc.stdout.strip() or 'not answering'}"
            if proc.returncode == 0:
                del pending[name]
        if not pending:
            return
        if time.monotonic() > deadline:
            details = [f"{n}: {seen[n]}; console: {_console_tail(spec, h)}" for n, h in pending.items()]
            raise TimeoutExpired(f"lab VMs not ready after {timeout:g}s: " + "; ".join(details))
        time.sleep(1)


def _console_tail(spec: LabSpec, host: LabHost) -> str:
    return labhosts._tail(spec.host_dir(host) / "console.log") or "no console output"


def check_images(spec: LabSpec, wanted: dict[str, str]) -> None:
    """Every VM has the lab images (loaded into its root image when that was built), by ID."""
    refs = " ".join(shlex.quote(r) for r in wanted)

    def one(host: LabHost) -> str | None:
        got = ssh(spec, host, f"docker image inspect --format '{{{{.Id}}}}' {refs}", timeout=60)
        ids = dict(zip(wanted, got.stdout.split(), strict=False))
        wrong = [ref for ref in wanted if ids.get(ref) != wanted[ref]]
        return f"{host.name}: {', '.join(wrong)}" if wrong else None

    with ThreadPoolExecutor(max_workers=len(spec.hosts)) as ex:
        failures = [f for f in ex.map(one, spec.hosts) if f]
    if failures:
        raise VmError(
            "lab images missing or different in the VMs (" + "; ".join(failures) + "): they are loaded into the "
            "VM root image when it is built; run `swarmctl lab down`, then `swarmctl lab up --vm` (a changed "
            "image bundle gives a new root image)"
        )


def running(spec: LabSpec, host: LabHost) -> bool:
    """Whether the VM's qemu still runs (it is in the lab's cgroup)."""
    try:
        pids = labhosts.host_cgroup_procs(spec, host.name).read_text().split()
    except OSError:
        return False
    return bool(pids)


def host_status(spec: LabSpec) -> list[labhosts.HostStatus]:
    """Per VM: qemu running (reported as its ``netns``), sshd open, dockerd active (over SSH)."""

    def one(host: LabHost) -> labhosts.HostStatus:
        sshd = labhosts._tcp_open(host.address, 22)
        dockerd = sshd and ssh(spec, host, "systemctl is-active docker", timeout=20).returncode == 0
        return labhosts.HostStatus(host.name, host.address, host.role, running(spec, host), sshd, dockerd)

    with ThreadPoolExecutor(max_workers=len(spec.hosts)) as ex:
        return list(ex.map(one, spec.hosts))
