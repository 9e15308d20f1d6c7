"""A multi-host lab on one Linux machine: each host a network + mount + UTS namespace with its own
hostname, sshd and dockerd, all on one bridge.

Everything a lab makes carries a name derived from its directory (a tag: 4 hex digits of a hash of
the path), so that labs in different directories run side by side (the test suite runs several at
once) and a lab left over from an earlier run in the same directory (crashed, killed, half torn
down) is found and removed by the next ``lab up`` or ``lab down`` there:

* bridge ``swl<tag>`` and, per host, veth ``swl<tag>-<host>`` and network namespace ``swl<tag>-<host>``;
* a /24 of its own, chosen from the tag among 192.168.64.0-192.168.191.0 that no interface of this
  machine (another lab's bridge included) is on;
* cgroup ``swarmctl-lab-<tag>/<host>`` holding every process of the host (sshd, dockerd,
  containerd, container processes via dockerd's ``cgroup-parent``), so teardown kills exactly those;
* iptables rules in the root namespace tagged with the comment ``swarmctl-lab-<tag>``;
* ``/run/swarmctl-labs/<tag>.json``: which directory the lab of that tag lives in (``lab down --all``).

Hosts get no default route: nothing they do can leave this machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from swarmctl.errors import InputError, PrerequisiteError, SwarmctlError, TimeoutExpired
from swarmctl.files import write_atomic
from swarmctl.plan import Notify, quiet
from swarmctl.secretstore import KeySource, create_key_file, write_secret
from swarmctl_lab import registry, systemd
from swarmctl_lab.cache import locked

log = logging.getLogger(__name__)

LOCAL_SBIN = "/usr/local/sbin"  # first on root's PATH (sshd's and sudo's): the lab's systemctl
NAME = "swl"  # + tag: bridge; + tag + "-": namespaces and interfaces (at most 15 characters)
CGROUP = "swarmctl-lab-"  # + tag
LABS_STATE = Path("/run/swarmctl-labs")  # <tag>.json: the directory of each lab on this machine
SUBNETS = range(64, 192)  # the third octet of the lab's 192.168.X.0/24
# what earlier swarmctl versions named their one lab: removed by `lab down --all`
LEGACY_BRIDGE, LEGACY_PREFIX, LEGACY_CGROUP = "swlab0", "swlab-", "swarmctl-lab"
LEGACY_STATE = Path("/run/swarmctl-lab.json")
FIRST_HOST_OCTET = 11
KAFKA_SLOTS = 3
MAX_HOSTS = 32

# command -> Debian package that provides it
REQUIRED_COMMANDS = {
    "ip": "iproute2",
    "nsenter": "util-linux",
    "unshare": "util-linux",
    "mount": "mount",
    "iptables": "iptables",
    "sshd": "openssh-server",
    "ssh-keygen": "openssh-client",
    "dockerd": "docker.io",
    "docker": "docker.io",  # docker-cli where the distribution packages the CLI apart (Debian 13+)
}


class LabError(SwarmctlError):
    pass


@dataclass(frozen=True)
class LabHost:
    name: str
    address: str
    role: str
    labels: dict[str, str]


def lab_tag(directory: Path) -> str:
    """The tag a lab's names carry: 4 hex digits of a hash of its directory's absolute path."""
    return hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:4]


@dataclass(frozen=True)
class LabSpec:
    dir: Path
    subnet: str
    hosts: tuple[LabHost, ...]
    kind: str = "netns"  # or "vm": real virtual machines (lab/vm.py)
    tag: str = ""  # lab_tag(dir); "" in a lab.json of an earlier version: derived again

    def __post_init__(self) -> None:
        if not self.tag:
            object.__setattr__(self, "tag", lab_tag(self.dir))

    @property
    def bridge(self) -> str:
        return f"{NAME}{self.tag}"

    @property
    def prefix(self) -> str:
        return f"{NAME}{self.tag}-"

    @property
    def cgroup(self) -> str:
        return f"{CGROUP}{self.tag}"

    @property
    def comment(self) -> str:
        """The comment on the lab's iptables rules."""
        return f"{CGROUP}{self.tag}"

    def netns(self, host: LabHost) -> str:
        return self.prefix + host.name

    def veth(self, host: LabHost) -> str:
        return self.prefix + host.name  # the root-namespace end (or a VM's tap): <= 15 chars up to lab99999

    @property
    def registry_netns(self) -> str:
        return self.prefix + "reg"

    @property
    def gateway(self) -> str:
        return str(next(ipaddress.ip_network(self.subnet).hosts()))

    @property
    def prefixlen(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen

    def host_dir(self, host: LabHost) -> Path:
        return self.dir / "hosts" / host.name

    def docker_socket(self, host: LabHost) -> Path:
        return self.host_dir(host) / "run" / "docker.sock"

    @property
    def inventory(self) -> Path:
        return self.dir / "hosts.yml"


def pick_subnet(tag: str, taken: Iterable[str]) -> str:
    """The lab's /24: the first of SUBNETS from the one the tag points at that overlaps none of
    ``taken`` (the networks this machine's interfaces are on) (pure)."""
    used = [ipaddress.ip_network(t, strict=False) for t in taken]
    start = int(tag, 16) % len(SUBNETS)
    for i in range(len(SUBNETS)):
        net = ipaddress.ip_network(f"192.168.{SUBNETS[(start + i) % len(SUBNETS)]}.0/24")
        if not any(net.overlaps(u) for u in used if u.version == 4):
            return str(net)
    raise LabError("no free 192.168.X.0/24 for the lab on this machine: remove some labs (`lab down --all`)")


def machine_networks(except_bridge: str = "") -> list[str]:
    """The IPv4 networks this machine's interfaces are on (but ``except_bridge``'s: a stale lab of
    the same directory, about to be removed)."""
    proc = _run(["ip", "-o", "-4", "addr", "show"], check=False)
    out = []
    for line in proc.stdout.decode().splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[1] != except_bridge:
            out.append(parts[3])
    return out


def reserve_subnet(tag: str, directory: Path) -> str:
    """A free /24 for the lab of ``tag``, recorded in its state file before the lock is let go.

    Labs made at the same moment (the test suite's workers) would otherwise pick the same subnet:
    neither's bridge exists yet when the other looks at this machine's interfaces. So the choice is
    made under one machine-wide lock, and the subnets other labs have recorded count as taken too.
    Without root (no lab can be made then: make_lab says so) it is only picked."""
    own = f"{tag}.json"
    if os.geteuid() != 0:
        return pick_subnet(tag, machine_networks(except_bridge=f"{NAME}{tag}"))
    with locked(LABS_STATE, "the choice of a lab subnet", timeout=60):
        taken = machine_networks(except_bridge=f"{NAME}{tag}")
        for state in LABS_STATE.glob("*.json"):
            if state.name != own:
                try:
                    taken.append(str(json.loads(state.read_text())["subnet"]))
                except (OSError, ValueError, KeyError, TypeError):
                    continue  # a state file being written or broken: teardown_all removes the latter
        subnet = pick_subnet(tag, taken)
        write_atomic(LABS_STATE / own, json.dumps({"dir": str(directory.resolve()), "subnet": subnet}), 0o644)
    return subnet


def plan_lab(directory: Path, hosts: int, managers: int, subnet: str | None = None, kind: str = "netns") -> LabSpec:
    """Names, addresses, roles and labels of a lab; its subnet one no interface here is on."""
    tag = lab_tag(directory)
    if not 1 <= hosts <= MAX_HOSTS:
        raise InputError(f"--hosts must be between 1 and {MAX_HOSTS}, not {hosts}")
    if not 1 <= managers <= hosts:
        raise InputError(f"--managers must be between 1 and the number of hosts ({hosts}), not {managers}")
    if subnet is None:
        subnet = reserve_subnet(tag, directory)
    try:
        if ipaddress.ip_network(subnet).version != 4:
            raise ValueError("not IPv4")
    except ValueError as e:
        raise InputError(f"--subnet {subnet!r} is not an IPv4 network such as 192.168.70.0/24 ({e})") from None
    net = ipaddress.ip_network(subnet)
    if net.num_addresses < FIRST_HOST_OCTET + hosts + 1:
        raise InputError(f"subnet {subnet} is too small for {hosts} hosts")
    out = []
    for i in range(1, hosts + 1):
        labels = {"kafka.slot": str(i)} if i <= KAFKA_SLOTS else {}
        out.append(
            LabHost(
                name=f"lab{i}",
                address=str(net.network_address + FIRST_HOST_OCTET - 1 + i),
                role="manager" if i <= managers else "worker",
                labels=labels,
            )
        )
    return LabSpec(dir=directory.resolve(), subnet=subnet, hosts=tuple(out), kind=kind, tag=tag)


# -- helpers -------------------------------------------------------------------------------------


def _run(argv: Sequence[str], check: bool = True, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    log.debug("lab: %s", shlex.join(argv))
    proc = subprocess.run(list(argv), input=input, capture_output=True)
    if check and proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip() or proc.stdout.decode(errors="replace").strip()
        raise LabError(f"`{shlex.join(argv)}` failed: {err}")
    return proc


def check_prerequisites() -> None:
    """Root and the commands the lab needs; a missing one is named with its Debian package."""
    if os.geteuid() != 0:
        raise PrerequisiteError("the lab needs root (network namespaces, bridges, mounts): run it as root")
    missing = {cmd: package_for(cmd) for cmd in REQUIRED_COMMANDS if not _which(cmd)}
    if missing:
        pkgs = " ".join(sorted(set(missing.values())))
        raise PrerequisiteError(f"missing {', '.join(missing)}: install them with `apt-get install {pkgs}`")


def package_for(cmd: str) -> str:
    """The Debian package that gives ``cmd`` on this machine.

    Debian 13 split the docker CLI out of docker.io into docker-cli (only recommended by docker.io):
    when this distribution has that package, it is the one that provides ``docker``.
    """
    if cmd == "docker" and _apt_knows("docker-cli"):
        return "docker-cli"
    return REQUIRED_COMMANDS[cmd]


def _apt_knows(package: str) -> bool:
    if not _which("apt-cache"):
        return False
    return subprocess.run(["apt-cache", "show", package], capture_output=True).returncode == 0


def _which(cmd: str) -> str | None:
    return shutil.which(cmd, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def _cgroup_roots(cgroup: str) -> list[Path]:
    """Where a lab's cgroup lives in each mounted hierarchy (v2: one; v1: every hierarchy)."""
    base = Path("/sys/fs/cgroup")
    if (base / "cgroup.controllers").exists():
        return [base / cgroup]
    roots = []
    for entry in sorted(base.iterdir()) if base.is_dir() else []:
        if entry.is_dir() and not entry.is_symlink() and (entry / "cgroup.procs").exists():
            roots.append(entry / cgroup)
    return roots


def tracking_root(cgroup: str) -> Path:
    """The hierarchy whose cgroup.procs lists every process of a lab (v1: pids if there is one)."""
    roots = _cgroup_roots(cgroup)
    if not roots:
        raise PrerequisiteError("no cgroup filesystem mounted at /sys/fs/cgroup")
    for r in roots:
        if r.parent.name == "pids":
            return r
    return roots[0]


def _walk_cgroups(root: Path) -> Iterator[Path]:
    """Cgroup directories under root, deepest first."""
    if not root.is_dir():
        return
    for dirpath, _dirs, _files in sorted(os.walk(root), key=lambda t: -t[0].count("/")):
        yield Path(dirpath)


def _cgroup_pids(root: Path) -> set[int]:
    pids: set[int] = set()
    for cg in _walk_cgroups(root):
        try:
            text = (cg / "cgroup.procs").read_text()
        except OSError:
            continue
        pids.update(int(p) for p in text.split())
    return pids


def _kill_cgroup(root: Path, deadline: float) -> None:
    while True:
        pids = _cgroup_pids(root)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise LabError(f"processes {sorted(pids)} in cgroup {root} survived SIGKILL")
        time.sleep(0.05)


def _remove_cgroups(cgroup: str) -> None:
    for root in _cgroup_roots(cgroup):
        for cg in _walk_cgroups(root):
            try:
                cg.rmdir()
            except OSError as e:
                log.debug("lab: rmdir %s: %s", cg, e)


def _iptables_rules(comment: str) -> list[list[str]]:
    """Root-namespace iptables rules tagged as a lab's, as `iptables -D` argument lists."""
    proc = _run(["iptables", "-w", "-S"], check=False)
    rules = []
    for line in proc.stdout.decode().splitlines():
        words = shlex.split(line)
        if line.startswith("-A ") and "--comment" in words and words[words.index("--comment") + 1] == comment:
            rules.append(["-D", *words[1:]])
    return rules


def _netns_list(prefix: str) -> list[str]:
    proc = _run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in proc.stdout.decode().splitlines() if line.startswith(prefix)]


def _link_exists(name: str) -> bool:
    return _run(["ip", "link", "show", name], check=False).returncode == 0


def _root_is_mountpoint() -> bool:
    """False inside a plain chroot, where runc's pivot_root cannot work."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            return any(line.split()[4] == "/" for line in f)
    except OSError:
        return True


# -- teardown ------------------------------------------------------------------------------------


def teardown(directory: Path, report: Notify = quiet, forget: bool = True) -> list[str]:
    """Remove every object of the lab in ``directory`` from this machine, and its data there.

    Labs in other directories are left alone. Safe to run any number of times and on half-made
    labs. Returns what was removed. ``forget=False`` keeps the lab's state file (its subnet stays
    reserved: make_lab removing a stale lab before making it anew).
    """
    tag = lab_tag(directory)
    removed = _remove_objects(f"{NAME}{tag}", f"{NAME}{tag}-", f"{CGROUP}{tag}", f"{CGROUP}{tag}")
    if _remove_lab_dir(directory.resolve()):
        removed.append(f"lab files in {directory.resolve()}")
    if forget:
        (LABS_STATE / f"{tag}.json").unlink(missing_ok=True)
    for item in removed:
        report(f"removed {item}")
    return removed


def teardown_all(report: Notify = quiet) -> list[str]:
    """Remove every lab on this machine (those of earlier swarmctl versions too), and their data."""
    removed: list[str] = []
    states = sorted(LABS_STATE.glob("*.json")) if LABS_STATE.is_dir() else []
    for state in states:
        try:
            directory = Path(json.loads(state.read_text())["dir"])
        except (OSError, ValueError, KeyError, TypeError):
            state.unlink(missing_ok=True)
            continue
        removed += teardown(directory)
    # labs whose state file is gone (/run cleared) still carry their names
    tags = {name[len(NAME) : len(NAME) + 4] for name in _links_named(NAME) if _is_tag(name[len(NAME) : len(NAME) + 4])}
    tags |= {p.name[len(CGROUP) :] for root in _cgroup_roots("") for p in _cgroup_dirs(root, CGROUP)}
    for tag in sorted(t for t in tags if _is_tag(t)):
        removed += _remove_objects(f"{NAME}{tag}", f"{NAME}{tag}-", f"{CGROUP}{tag}", f"{CGROUP}{tag}")
    legacy = _remove_objects(LEGACY_BRIDGE, LEGACY_PREFIX, LEGACY_CGROUP, LEGACY_CGROUP)
    if legacy:
        old = _read_legacy_state()
        if old is not None and _remove_lab_dir(old):
            legacy.append(f"lab files in {old}")
        removed += legacy
    LEGACY_STATE.unlink(missing_ok=True)
    for item in removed:
        report(f"removed {item}")
    return removed


def _is_tag(text: str) -> bool:
    return len(text) == 4 and all(c in "0123456789abcdef" for c in text)


def _cgroup_dirs(root: Path, prefix: str) -> list[Path]:
    parent = root if root.name else root.parent
    if not parent.is_dir():
        return []
    return [p for p in parent.iterdir() if p.is_dir() and p.name.startswith(prefix)]


def _remove_objects(bridge: str, prefix: str, cgroup: str, comment: str) -> list[str]:
    """A lab's processes (its cgroup), namespaces, links, bridge and iptables rules."""
    removed: list[str] = []
    deadline = time.monotonic() + 30
    tracking = tracking_root(cgroup) if Path("/sys/fs/cgroup").is_dir() else None
    if tracking is not None and tracking.is_dir():
        hosts = sorted(p.name for p in tracking.iterdir() if p.is_dir())
        _kill_cgroup(tracking, deadline)
        _remove_cgroups(cgroup)
        if hosts:
            removed.append(f"processes of {', '.join(hosts)}")
    for ns in _netns_list(prefix):
        _run(["ip", "netns", "delete", ns], check=False)
        removed.append(f"netns {ns}")
    for link in _links_named(prefix):
        _run(["ip", "link", "delete", link], check=False)
    if _link_exists(bridge):
        _run(["ip", "link", "delete", bridge], check=False)
        removed.append(f"bridge {bridge}")
    for rule in _iptables_rules(comment):
        _run(["iptables", "-w", *rule], check=False)
        removed.append("iptables rule")
    return removed


def _links_named(prefix: str) -> list[str]:
    proc = _run(["ip", "-o", "link", "show"], check=False)
    links = []
    for line in proc.stdout.decode().splitlines():
        parts = line.split(":", 2)
        if len(parts) > 1:
            name = parts[1].strip().split("@")[0]
            if name.startswith(prefix):
                links.append(name)
    return links


def _remove_lab_dir(d: Path) -> bool:
    """Remove a lab directory's contents, but only one that looks like a lab (has lab.json)."""
    marker = d / "lab.json"
    if not marker.is_file():
        return False
    for child in ("hosts", "hosts.yml", "known_hosts", "id_ed25519", "id_ed25519.pub", "registry", "secrets"):
        p = d / child
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    marker.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        d.rmdir()  # only when nothing else lives there
    return True


def _read_legacy_state() -> Path | None:
    try:
        return Path(str(json.loads(LEGACY_STATE.read_text())["dir"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


# -- bring-up ------------------------------------------------------------------------------------


def bring_up(
    spec: LabSpec,
    report: Notify = quiet,
    timeout: float = 90.0,
    prepare: Callable[[LabSpec], dict[str, str]] | None = None,
    with_registry: bool = False,
    start: Callable[[LabSpec], None] | None = None,
    seed: Path | None = None,
) -> Path:
    """Create the lab described by ``spec`` after removing any earlier one. Returns the inventory path.

    ``prepare`` runs once the hosts answer (e.g. to load images) and returns inventory ``vars``;
    ``with_registry``: also the lab's private registry (``lab/registry.py``); ``start`` makes the
    hosts and waits until they answer (default: network namespaces; lab/vm.py has VMs); ``seed``:
    the stored images each namespace host's engine starts with (images.seed_for).
    """
    check_prerequisites()
    teardown(spec.dir, report=lambda m: report(f"stale lab: {m}"), forget=False)
    spec.dir.mkdir(parents=True, exist_ok=True)
    write_atomic(LABS_STATE / f"{spec.tag}.json", json.dumps({"dir": str(spec.dir), "subnet": spec.subnet}), 0o644)
    write_atomic(
        spec.dir / "lab.json",
        json.dumps(
            {"subnet": spec.subnet, "kind": spec.kind, "tag": spec.tag, "hosts": [asdict(h) for h in spec.hosts]},
            indent=2,
        )
        + "\n",
        0o644,
    )
    try:
        _make_bridge(spec)
        _make_keys(spec)
        if start is not None:
            start(spec)
        else:
            procs = {host.name: _make_host(spec, host, seed) for host in spec.hosts}
            report(f"started {len(spec.hosts)} hosts on bridge {spec.bridge} ({spec.subnet})")
            _wait_ready(spec, procs, timeout)
        variables = prepare(spec) if prepare else {}
        lab_registry = _start_registry(spec, report) if with_registry else None
        _write_inventory(spec, variables, lab_registry)
    except BaseException:
        # a half-made lab is worse than none: the next command would trip over it
        teardown(spec.dir)
        raise
    return spec.inventory


def _start_registry(spec: LabSpec, report: Notify) -> registry.LabRegistry | None:
    """The lab's private registry (lab/registry.py) on the bridge, its password stored encrypted
    in DIR/secrets; None (with a note) where Debian's docker-registry cannot be fetched."""
    ip = str(ipaddress.ip_network(spec.subnet).network_address + registry.OCTET)
    try:
        registry.binary(report)
    except PrerequisiteError as e:
        report(f"no lab registry: {e}")
        return None
    netns = spec.registry_netns
    _run(["ip", "netns", "add", netns])
    _run(["ip", "link", "add", netns, "type", "veth", "peer", "name", "eth0", "netns", netns])
    _run(["ip", "link", "set", netns, "master", spec.bridge, "up"])
    inside = ["nsenter", f"--net=/run/netns/{netns}", "ip"]
    _run([*inside, "addr", "add", f"{ip}/{spec.prefixlen}", "dev", "eth0"])
    _run([*inside, "link", "set", "eth0", "up"])
    _run([*inside, "link", "set", "lo", "up"])
    procs = tracking_root(spec.cgroup) / "registry" / "daemons" / "cgroup.procs"
    found = registry.start(spec.dir / "registry", netns, ip, procs, report)
    keys = KeySource(os.environ).optional()
    if keys is None:
        try:
            path, keys = create_key_file(os.environ)
            report(f"created the secrets key {path} (for the lab registry's password; back it up like any key)")
        except InputError:  # another lab (side by side) made it meanwhile
            keys = KeySource(os.environ).required()
    write_secret(spec.dir / "secrets" / f"{registry.SECRET}.enc", found.password.encode(), keys)
    return found


def _make_bridge(spec: LabSpec) -> None:
    bridge = spec.bridge
    _run(["ip", "link", "add", bridge, "type", "bridge"])
    _run(["ip", "addr", "add", f"{spec.gateway}/{spec.prefixlen}", "dev", bridge])
    _run(["ip", "link", "set", bridge, "up"])
    tag = ["-m", "comment", "--comment", spec.comment]
    # With br_netfilter loaded, bridged traffic passes the FORWARD chain, whose policy is DROP
    # once any dockerd ran in the root namespace: let lab hosts talk to each other...
    _run(["iptables", "-w", "-I", "FORWARD", "-i", bridge, "-o", bridge, *tag, "-j", "ACCEPT"])
    # ...and never let their traffic be routed off this machine.
    _run(["iptables", "-w", "-I", "FORWARD", "-i", bridge, "!", "-o", bridge, *tag, "-j", "REJECT"])


def _make_keys(spec: LabSpec) -> None:
    key = spec.dir / "id_ed25519"
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "swarmctl-lab", "-f", str(key)])
    public = key.with_suffix(".pub").read_text()
    lines = []
    for host in spec.hosts:
        hd = spec.host_dir(host)
        etc_ssh = hd / "etc-ssh"
        etc_ssh.mkdir(parents=True, exist_ok=True)
        hostkey = etc_ssh / "ssh_host_ed25519_key"
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", host.name, "-f", str(hostkey)])
        kind, b64 = hostkey.with_suffix(".pub").read_text().split()[:2]
        lines.append(f"{host.address} {kind} {b64}\n")
        dot_ssh = hd / "root" / ".ssh"
        dot_ssh.mkdir(parents=True, mode=0o700, exist_ok=True)
        write_atomic(dot_ssh / "authorized_keys", public, 0o600)
    write_atomic(spec.dir / "known_hosts", "".join(lines), 0o644)


def _sshd_config(host: LabHost) -> str:
    # Paths as seen inside the host, where its own /etc/ssh, /root and /run are mounted. sshd
    # re-executes itself per connection and reads host keys and its log file again then.
    return "\n".join(
        [
            f"ListenAddress {host.address}",
            "Port 22",
            "HostKey /etc/ssh/ssh_host_ed25519_key",
            "PidFile /run/sshd.pid",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "AuthorizedKeysFile .ssh/authorized_keys",
            "Subsystem sftp internal-sftp",
            "",
        ]
    )


LAB_USER = "deploy"
LAB_UID = 4242


def _user_mounts(spec: LabSpec, host: LabHost) -> list[tuple[Path, str]]:
    """A non-root user `deploy` with passwordless sudo on each host, so the sudo path is real.

    The host gets its own copies of the account files (the machine's plus this user) and of
    /etc/sudoers.d and /home. Skipped when sudo is not installed on this machine.
    """
    if not _which("sudo") or not Path("/etc/sudoers.d").is_dir():
        return []
    hd = spec.host_dir(host)
    etc = hd / "etc-accounts"
    etc.mkdir(parents=True, exist_ok=True)
    home = hd / "home" / LAB_USER
    (home / ".ssh").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(spec.dir / "id_ed25519.pub", home / ".ssh" / "authorized_keys")
    for p in (home, home / ".ssh", home / ".ssh" / "authorized_keys"):
        os.chown(p, LAB_UID, LAB_UID)
    (home / ".ssh").chmod(0o700)
    (home / ".ssh" / "authorized_keys").chmod(0o600)
    extra = {
        "passwd": f"{LAB_USER}:x:{LAB_UID}:{LAB_UID}:swarmctl lab user:/home/{LAB_USER}:/bin/sh\n",
        "group": f"{LAB_USER}:x:{LAB_UID}:\n",
        # "*": no password, yet not locked (sshd without PAM refuses locked accounts)
        "shadow": f"{LAB_USER}:*:19000:0:99999:7:::\n",
    }
    mounts = []
    for name, line in extra.items():
        text = Path(f"/etc/{name}").read_text()
        write_atomic(
            etc / name, text + ("" if text.endswith("\n") else "\n") + line, 0o640 if name == "shadow" else 0o644
        )
        mounts.append((etc / name, f"/etc/{name}"))
    sudoers = hd / "etc-sudoers.d"
    sudoers.mkdir(exist_ok=True)
    write_atomic(sudoers / "swarmctl-lab", f"{LAB_USER} ALL=(ALL) NOPASSWD: ALL\n", 0o440)
    return [*mounts, (sudoers, "/etc/sudoers.d"), (hd / "home", "/home")]


def _package_roots() -> list[Path]:
    """Where this swarmctl and this lab are imported from (a clone's directories, or site-packages)."""
    import swarmctl

    return sorted({Path(swarmctl.__file__).resolve().parents[1], Path(__file__).resolve().parents[1]})


def _python_paths() -> list[Path]:
    """What the host's stand-in systemd needs to run this lab: the interpreter and the packages."""
    paths = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), *_package_roots()}
    # the venv's interpreter may be a link to yet another place
    paths.add(Path(sys.executable).resolve().parent.parent)
    return sorted(paths)


def _python_binds(home: Path) -> list[str]:
    """Mounts that keep the swarmctl interpreter and package visible once the host's /root covers /root.

    A Python under /root (pyenv, or a clone with its venv in root's home, as on a fresh machine) would
    vanish under the host's own home. Each such path is bound into the host's home at the same place
    before that home is bound, recursively, over /root. Nothing else of the machine's /root shows.
    """
    q = shlex.quote
    lines = []
    for path in _python_paths():
        if Path("/root") not in path.parents:
            continue
        target = home / path.relative_to("/root")
        target.mkdir(parents=True, exist_ok=True)
        lines.append(f"mount --bind {q(str(path))} {q(str(target))}")
    return lines


def _python_env() -> str:
    """``PYTHONPATH`` that makes ``-m swarmctl_lab...`` find this lab and swarmctl whoever runs it on the host."""
    return shlex.quote(":".join(str(p) for p in _package_roots()))


SEEDED = ("image", "overlay2")  # the parts of a data root that hold its stored images (images.keep_seed)


def copy_tree(source: Path, target: Path) -> None:
    """``source`` as ``target`` (which must not exist): hard links where the file system allows
    (no data copied; the engine replaces files rather than rewriting them), a copy otherwise."""
    for argv in (["cp", "-a", "-l", str(source), str(target)], ["cp", "-a", str(source), str(target)]):
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode == 0:
            return
        shutil.rmtree(target, ignore_errors=True)
    raise OSError(f"cp -a {source} {target}: {proc.stderr.strip()[:300]}")


def _make_host(spec: LabSpec, host: LabHost, seed: Path | None = None) -> subprocess.Popen[bytes]:
    """Start the host: its namespaces, sshd and dockerd (on a copy of ``seed``'s stored images,
    when given: see images.keep_seed)."""
    hd = spec.host_dir(host)
    for sub in ("run", "docker", "etc-docker", "log", "srv"):
        (hd / sub).mkdir(parents=True, exist_ok=True)
    if seed is not None and not any((hd / "docker").iterdir()):
        try:
            for sub in SEEDED:
                copy_tree(seed / sub, hd / "docker" / sub)
        except OSError as e:  # the images are loaded instead (images.load_into_hosts)
            log.warning("%s: the engine seed could not be copied (%s): its images are loaded instead", host.name, e)
            for sub in SEEDED:
                shutil.rmtree(hd / "docker" / sub, ignore_errors=True)
    # systemctl/journalctl for the host's docker unit (swarmctl_lab.systemd), first on its PATH
    systemd.write_commands(hd / "sbin", shlex.quote(sys.executable), _python_env())
    write_atomic(hd / "etc-ssh" / "sshd_config", _sshd_config(host), 0o644)
    write_atomic(
        hd / "etc-docker" / "daemon.json",
        json.dumps(
            {
                # container processes land in the host's cgroup, so teardown finds them
                "cgroup-parent": f"/{spec.cgroup}/{host.name}/containers",
                "shutdown-timeout": 5,
            },
            indent=2,
        )
        + "\n",
        0o644,
    )
    daemons = tracking_root(spec.cgroup) / host.name / "daemons"
    daemons.mkdir(parents=True, exist_ok=True)
    procs = daemons / "cgroup.procs"

    netns, veth = spec.netns(host), spec.veth(host)
    _run(["ip", "netns", "add", netns])
    _run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns])
    _run(["ip", "link", "set", veth, "master", spec.bridge, "up"])
    # nsenter rather than `ip -n`: that remounts / (make-rslave), which fails inside a chroot
    inside = ["nsenter", f"--net=/run/netns/{netns}", "ip"]
    _run([*inside, "addr", "add", f"{host.address}/{spec.prefixlen}", "dev", "eth0"])
    _run([*inside, "link", "set", "eth0", "up"])
    _run([*inside, "link", "set", "lo", "up"])

    for d in ("/var/lib/docker", "/etc/docker", "/srv", LOCAL_SBIN):
        Path(d).mkdir(parents=True, exist_ok=True)
    q = shlex.quote
    # The host's own directories, as on a separate machine. /root goes last: the lab directory
    # may live under it, and every source path must be resolved before it is covered.
    mounts = [(hd / "run", "/run")]
    if not os.path.islink("/var/run"):
        mounts.append((hd / "run", "/var/run"))
    mounts += [
        (hd / "docker", "/var/lib/docker"),
        # a place of its own for data moved off /var/lib/docker (a `data-root` elsewhere)
        (hd / "srv", "/srv"),
        (hd / "etc-docker", "/etc/docker"),
        (hd / "etc-ssh", "/etc/ssh"),
        (hd / "sbin", LOCAL_SBIN),
        *_user_mounts(spec, host),
        (hd / "root", "/root"),
    ]
    run_host = "\n".join(
        [
            *_python_binds(hd / "root"),
            *[f"mount --{'rbind' if dst == '/root' else 'bind'} {q(str(src))} {dst}" for src, dst in mounts],
            f"hostname {q(host.name)}",
            "mkdir -p /run/sshd",
            f"{q(_which('sshd') or '/usr/sbin/sshd')} -E /run/sshd.log",
            # dockerd under the stand-in for its systemd unit: `systemctl restart docker` works
            f"PYTHONPATH={_python_env()} exec {q(sys.executable)} -m swarmctl_lab.systemd serve dockerd",
        ]
    )
    propagation = "private"
    if not _root_is_mountpoint():
        # Inside a chroot "/" is not a mount point: its propagation cannot be changed (EINVAL), and
        # dockerd, runc and `docker exec` need one (see rootmount.py, which gives the host one).
        propagation = "unchanged"
        run_host = f"exec {q(sys.executable)} -m swarmctl_lab.rootmount sh -euc {q(run_host)}"
    script = f"set -eu\necho $$ > {q(str(procs))}\n{run_host}"
    argv = [
        "nsenter",
        f"--net=/run/netns/{netns}",
        "unshare",
        "--mount",
        "--uts",
        "--propagation",
        propagation,
        "sh",
        "-c",
        script,
    ]
    with open(hd / "log" / "host.log", "ab") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)


def _docker_ping(sock: Path) -> bool:
    if not sock.exists():
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(str(sock))
            s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return b"200 OK" in s.recv(256)
    except OSError:
        return False


def _tcp_open(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False


def _wait_ready(spec: LabSpec, procs: dict[str, subprocess.Popen[bytes]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = {h.name: h for h in spec.hosts}
    state: dict[str, str] = {}
    while pending:
        exited = [name for name in pending if procs[name].poll() is not None]
        if exited:
            details = [f"{n}: {_tail(spec.host_dir(pending[n]) / 'log' / 'host.log') or 'no output'}" for n in exited]
            logs = [f"{n}: {_tail(spec.host_dir(pending[n]) / 'run' / 'dockerd.log')}" for n in exited]
            raise LabError(
                "lab host failed to start: " + "; ".join(details + [x for x in logs if not x.endswith(": ")])
            )
        for name, host in list(pending.items()):
            docker_ok = _docker_ping(spec.docker_socket(host))
            ssh_ok = _tcp_open(host.address, 22)
            state[name] = f"dockerd {'up' if docker_ok else 'down'}, sshd {'up' if ssh_ok else 'down'}"
            if docker_ok and ssh_ok:
                del pending[name]
        if not pending:
            return
        if time.monotonic() > deadline:
            details = []
            for name, host in pending.items():
                tail = _tail(spec.host_dir(host) / "run" / "dockerd.log") or _tail(
                    spec.host_dir(host) / "log" / "host.log"
                )
                details.append(f"{name}: {state[name]}" + (f"; last log line: {tail}" if tail else ""))
            raise TimeoutExpired(f"lab hosts not ready after {timeout:g}s: " + "; ".join(details))
        time.sleep(0.2)


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


_KIND_WORDS = {"netns": "hosts in network namespaces", "vm": "virtual machines"}


def _write_inventory(
    spec: LabSpec, variables: dict[str, str], lab_registry: registry.LabRegistry | None = None
) -> None:
    lines = [
        f"# swarmctl lab: {len(spec.hosts)} {_KIND_WORDS.get(spec.kind, 'hosts')} on this machine.",
        f"# Remove them with: swarmctl lab down --dir {spec.dir}",
        "ssh:",
        "  user: root",
        "  identity_file: ./id_ed25519",
        "  known_hosts: ./known_hosts",
        "  host_key_policy: reject",
        *(["  api_timeout: 120  # TCG guests on a busy machine answer slowly"] if spec.kind == "vm" else []),
        "hosts:",
    ]
    for h in spec.hosts:
        labels = ", ".join(f"{k}: {json.dumps(v)}" for k, v in h.labels.items())
        extra = f", labels: {{{labels}}}" if labels else ""
        lines.append(f"  {h.name}: {{address: {h.address}, role: {h.role}{extra}}}")
    if variables:
        lines.append("vars:  # the lab's images, built locally and loaded into every host (no registry)")
        lines += [f"  {k}: {json.dumps(v)}" for k, v in sorted(variables.items())]  # strings, quoted
    if lab_registry is not None:
        ca = lab_registry.ca_file.relative_to(spec.dir)
        lines += [
            f"registries:  # the lab's registry: TLS (its own CA), htpasswd; password in secrets/{registry.SECRET}.enc",
            f"  {json.dumps(lab_registry.address)}: {{username: {lab_registry.username}, "
            f"password_secret: {registry.SECRET}, ca_file: ./{ca}}}",
        ]
    write_atomic(spec.inventory, "\n".join(lines) + "\n", 0o644)


# -- status and host access ----------------------------------------------------------------------


def load_spec(directory: Path) -> LabSpec:
    d = directory.resolve()
    try:
        data = json.loads((d / "lab.json").read_text())
        hosts = tuple(LabHost(**h) for h in data["hosts"])
        return LabSpec(
            dir=d, subnet=data["subnet"], hosts=hosts, kind=data.get("kind", "netns"), tag=data.get("tag", "")
        )
    except FileNotFoundError:
        raise LabError(f"no lab in {d} (run `swarmctl lab up` first)") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LabError(f"{d / 'lab.json'} is damaged ({e}); run `swarmctl lab down` and `lab up` again") from None


@dataclass(frozen=True)
class HostStatus:
    name: str
    address: str
    role: str
    netns: bool
    sshd: bool
    dockerd: bool


def host_status(spec: LabSpec) -> list[HostStatus]:
    """Each namespaced host's netns, sshd and dockerd (backend.py asks vm.py for a VM lab's)."""
    namespaces = set(_netns_list(spec.prefix))
    return [
        HostStatus(
            name=h.name,
            address=h.address,
            role=h.role,
            netns=spec.netns(h) in namespaces,
            sshd=_tcp_open(h.address, 22),
            dockerd=_docker_ping(spec.docker_socket(h)),
        )
        for h in spec.hosts
    ]


def host_cgroup_procs(spec: LabSpec, host: str) -> Path:
    """The cgroup.procs file of a lab host's daemons: a process written there is the host's, and
    `lab down` removes it with the rest."""
    return tracking_root(spec.cgroup) / host / "daemons" / "cgroup.procs"


def host_pid(spec: LabSpec, host: str) -> int:
    """A process inside the lab host, for nsenter: its first one (the docker unit's stand-in), which
    lives while the host's engine is stopped."""
    procs = host_cgroup_procs(spec, host)
    try:
        pids = [int(p) for p in procs.read_text().split()]
    except OSError:
        pids = []
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"swarmctl_lab.systemd" in cmdline and b"serve" in cmdline:
            return pid
    raise LabError(f"lab host {host} is not running")


def host_exec(
    spec: LabSpec, host: str, argv: Sequence[str], input: bytes | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run a command inside a lab host's network, mount and UTS namespaces (root side, no SSH)."""
    pid = host_pid(spec, host)
    return subprocess.run(
        ["nsenter", "-t", str(pid), "-n", "-m", "-u", "--root", "--wd=/", "--", *argv],
        input=input,
        capture_output=True,
        env={**os.environ, **(env or {})},
    )
