"""``swarmctl init [DIR]``: a project directory for your own hosts, written once, never over anything.

It writes a commented ``hosts.yml`` for three hosts (the first a manager; ``kafka.slot`` 1..3, the
labels the shipped Kafka stack places its members by; no autolock, which would need a secrets key
first), with the SSH key it finds in ``~/.ssh`` and a ``known_hosts`` of the project's own (filled
by ``swarmctl host-keys``), and a ``.gitignore`` for what must not be committed. It asks for
nothing it can find itself: only the hosts' addresses, which nothing here can know.
"""

from __future__ import annotations

import getpass
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from swarmctl.errors import InputError
from swarmctl.files import create_exclusive
from swarmctl.inventory import is_ip
from swarmctl.plan import Change, Plan, Report

PLACEHOLDERS = ("192.0.2.11", "192.0.2.12", "192.0.2.13")  # TEST-NET-1 (RFC 5737): never a real host
KEY_NAMES = ("id_ed25519", "id_ecdsa", "id_rsa")

GITIGNORE = """\
# swarmctl: what must not be committed (secrets/ and known_hosts are meant to be)
# this directory's state: the last inventory, local labs
.swarmctl/
# swarm backups: encrypted, but large and per cluster
swarm-backup-*.swarmctl
# a secrets keyring kept here by mistake: it decrypts secrets/
*.key
"""


@dataclass(frozen=True)
class InitFile:
    path: Path
    text: str
    mode: int
    change: Change


def find_identity(home: Path) -> Path | None:
    """The SSH key a user has (the first of ed25519, ecdsa, rsa in ~/.ssh), or None."""
    for name in KEY_NAMES:
        key = home / ".ssh" / name
        if key.is_file():
            return key
    return None


def inventory_text(addresses: Sequence[str], user: str, identity: Path | None) -> str:
    """A commented inventory for three hosts (pure)."""
    placeholder = tuple(addresses) == PLACEHOLDERS
    key_line = (
        f"  identity_file: {identity}      # found in ~/.ssh; the hosts need its .pub in authorized_keys"
        if identity is not None
        else "  # identity_file: ~/.ssh/id_ed25519   # none found: the SSH agent's keys are offered"
    )
    replace = "   # <- replace with your hosts' addresses (IP or DNS name)" if placeholder else ""
    lines = [
        "# swarmctl inventory: the hosts swarmctl bootstraps and deploys to (README: Inventory).",
        "# Each host needs Docker Engine with its CLI, sshd, and your SSH key:",
        "#   Debian 12: apt-get install docker.io          Debian 13: apt-get install docker.io docker-cli",
        f"#   ssh-copy-id {user}@ADDRESS",
        "# Next: swarmctl host-keys (check and record the hosts' SSH keys), swarmctl bootstrap --plan",
        "ssh:",
        f"  user: {user}" + ("" if user == "root" else "                    # not root: commands run through sudo -n"),
        key_line,
        "  known_hosts: ./known_hosts   # this project's own; written by `swarmctl host-keys`",
        "hosts:                        # the first manager initializes the swarm; kafka.slot places Kafka",
    ]
    for i, address in enumerate(addresses, 1):
        role = "manager" if i == 1 else "worker"
        lines.append(f'  node{i}: {{address: {address}, role: {role}, labels: {{kafka.slot: "{i}"}}}}'
                     + (replace if i == 1 else ""))  # fmt: skip
    lines += [
        "# swarm:",
        "#   autolock: true             # lock managers at rest; needs `swarmctl secrets init` first",
    ]
    return "\n".join(lines) + "\n"


def plan_init(
    directory: Path, addresses: Sequence[str], user: str, identity: Path | None
) -> tuple[Plan, list[InitFile]]:
    """The files init writes, and those it leaves (already there) (pure but for looking at them).

    Raises:
        InputError: not three addresses, or a bad one.
    """
    addresses = list(addresses) or list(PLACEHOLDERS)
    if len(addresses) != 3:
        raise InputError(f"--hosts takes 3 addresses (one manager, two workers), not {len(addresses)}")
    for a in addresses:
        if not (is_ip(a) or (a and all(part.isalnum() or "-" in part for part in a.split(".")))):
            raise InputError(f"--hosts: {a!r} is not an IP address or a DNS name")
        if is_ip(a) and ipaddress.ip_address(a).is_unspecified:
            raise InputError(f"--hosts: {a} is no host's address")
    wanted = [
        (directory / "hosts.yml", inventory_text(addresses, user, identity), 0o644, "the inventory: 3 hosts"),
        (directory / ".gitignore", GITIGNORE, 0o644, "what must not be committed"),
    ]
    files, warnings = [], []
    for path, text, mode, what in wanted:
        if path.exists() or path.is_symlink():
            warnings.append(f"{path} exists: left as it is")
            continue
        files.append(InitFile(path, text, mode, Change("file", str(path), "create", detail=what)))
    if not files:
        raise InputError(f"{directory} already has hosts.yml and .gitignore: nothing to write (init never overwrites)")
    return Plan(tuple(f.change for f in files), tuple(warnings)), files


def init(directory: Path, addresses: Sequence[str] = (), plan_only: bool = False) -> Report:
    """Write the project's files (each created only if absent: never over anything)."""
    identity = find_identity(Path.home())
    plan, files = plan_init(directory, addresses, getpass.getuser(), identity)
    report = Report(plan=plan, warnings=list(plan.warnings))
    if plan_only:
        return report
    for f in files:
        try:
            create_exclusive(f.path, f.text, f.mode)
        except FileExistsError:
            report.warn([f"{f.path} appeared meanwhile: left as it is"])
            continue
        report.done(f.change)
    return report
