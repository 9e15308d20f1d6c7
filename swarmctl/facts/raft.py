"""A manager's raft state on disk, where its own engine keeps it - also while that engine is stopped.

A running engine says where its state is (``docker info``: DockerRootDir). A stopped one cannot:
its data root is then read from what dockerd starts with - ``data-root`` in daemon.json (the key
swarmctl itself may set), else ``--data-root`` (or the old ``-g``/``--graph``) in the docker unit's
command line or ``/etc/default/docker`` - and ``/var/lib/docker`` is looked at as well, so that a
state left at the default (data moved by hand, the setting added later) is never taken for none.
A manager that looks empty here would be started as one without state, and a new cluster forced
on another: two swarms.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import json
import re
import shlex
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass

from swarmctl.errors import HostError
from swarmctl.transport.ssh import Connection

DEFAULT_ROOT = "/var/lib/docker"

# daemon.json (base64, one line), the docker unit's ExecStart lines, /etc/default/docker's options
_ROOTS_SCRIPT = r"""
if [ -r /etc/docker/daemon.json ]; then echo "json $(base64 < /etc/docker/daemon.json | tr -d '\n')"; fi
if command -v systemctl >/dev/null 2>&1; then
  systemctl cat docker 2>/dev/null | sed -n 's/^ExecStart=/unit /p'
fi
if [ -r /etc/default/docker ]; then sed -n 's/^[[:space:]]*DOCKER_OPTS=/default /p' /etc/default/docker; fi
"""

# for each directory given: its raft files, "ROOT<TAB>MTIME NAME" (a missing one lists nothing)
_RAFT_SCRIPT = r"""
for root in "$@"; do
  d="$root/swarm/raft"
  [ -d "$d" ] || continue
  find "$d" -type f \( -name '*.snap' -o -name '*.wal' \) -printf "$root\t%T@ %f\n"
done
"""

_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.(snap|wal)$")
_FLAG = re.compile(r"^(?:--data-root|--graph|-g)(?:=(.+))?$")


@dataclass(frozen=True)
class Raft:
    """How far a manager's raft log got: the newest snapshot's and WAL segment's index, then time."""

    snapshot: int = 0
    wal: int = 0
    mtime: float = 0.0

    @property
    def key(self) -> tuple[int, int, float]:
        return (self.snapshot, self.wal, self.mtime)

    def describe(self) -> str:
        return f"snapshot index {self.snapshot}, WAL from index {self.wal}"


def parse_raft(listing: str) -> Raft | None:
    """``find -printf '%T@ %f'`` of a raft directory -> Raft; None when it holds no raft file (pure)."""
    snap = wal = 0
    mtime = 0.0
    seen = False
    for line in listing.splitlines():
        stamp, _, name = line.strip().partition(" ")
        m = _NAME.match(name)
        if not m:
            continue
        seen = True
        index = int(m.group(2), 16)
        if m.group(3) == "snap":
            snap = max(snap, index)
        else:
            wal = max(wal, index)
        with contextlib.suppress(ValueError):
            mtime = max(mtime, float(stamp))
    return Raft(snap, wal, mtime) if seen else None


def parse_data_roots(output: str) -> list[str]:
    """What ``_ROOTS_SCRIPT`` printed -> the directories a stopped engine's state may be in, the one
    it is configured with first, ``/var/lib/docker`` last (pure). A daemon.json that cannot be read
    as JSON names nothing (dockerd would not start with it either)."""
    roots: list[str] = []
    for line in output.splitlines():
        kind, _, value = line.partition(" ")
        if kind == "json":
            try:
                config = json.loads(base64.b64decode(value) or b"{}")
            except ValueError:
                continue
            if isinstance(config, dict):
                for key in ("data-root", "graph"):
                    if isinstance(config.get(key), str) and config[key]:
                        roots.append(config[key])
        elif kind in ("unit", "default"):
            roots += _flag_roots(value.strip().strip("\"'"))
    roots.append(DEFAULT_ROOT)
    return list(dict.fromkeys(r.rstrip("/") or "/" for r in roots if r.startswith("/")))


def _flag_roots(command: str) -> list[str]:
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    out = []
    for i, word in enumerate(words):
        m = _FLAG.match(word)
        if not m:
            continue
        if m.group(1):
            out.append(m.group(1))
        elif i + 1 < len(words):
            out.append(words[i + 1])
    return out


def parse_raft_by_root(listing: str) -> dict[str, Raft]:
    """``_RAFT_SCRIPT``'s output -> data root -> its raft state, for the roots that hold one (pure)."""
    lines: dict[str, list[str]] = {}
    for line in listing.splitlines():
        root, sep, rest = line.partition("\t")
        if sep:
            lines.setdefault(root, []).append(rest)
    out = {}
    for root, found in lines.items():
        raft = parse_raft("\n".join(found))
        if raft is not None:
            out[root] = raft
    return out


def read_data_roots(conn: Connection) -> list[str]:
    """Where a host's (stopped) engine keeps its state, most likely first."""
    res = conn.run(["sh", "-c", _ROOTS_SCRIPT], timeout=30).check("read the engine's data root")
    return parse_data_roots(res.stdout)


def read_raft(conn: Connection, roots: Sequence[str]) -> tuple[str, Raft | None]:
    """The raft state under the first of ``roots`` that holds one: (that root, its Raft), else
    (the first root, None)."""
    res = conn.run(["sh", "-c", _RAFT_SCRIPT, "raft", *roots], timeout=30)
    found = parse_raft_by_root(res.check("read the raft state").stdout)
    for root in roots:
        if root in found:
            return root, found[root]
    if not roots:
        raise HostError(conn.host.name, "read the raft state: no data root to look in")
    return roots[0], None


# tar's own status, not the pipe's (POSIX sh has no pipefail, and base64 succeeds on a half
# archive): written on fd 3 into the command substitution, stdout goes on to base64 on fd 4
ARCHIVE_SCRIPT = r"""
root=$1
test -d "$root/swarm/raft" || { echo "no swarm state in $root/swarm" >&2; exit 3; }
{ status=$( { { tar -czf - -C "$root" swarm; echo "$?" >&3; } | base64 >&4; } 3>&1 ); } 4>&1
if [ "$status" != 0 ]; then echo "tar exited with status $status" >&2; exit 4; fi
"""


def read_state_archive(conn: Connection, root: str, timeout: float, max_bytes: int) -> bytes:
    """A stopped engine's swarm state, ``ROOT/swarm`` as a tar.gz (base64 on the wire), checked
    whole: tar's own exit status.

    Raises:
        HostError: no swarm state there, tar failed, or the archive came back damaged.
    """
    res = conn.run(["sh", "-c", ARCHIVE_SCRIPT, "archive", root], timeout=timeout, max_output=max_bytes)
    res.check("archive the swarm state")
    try:
        return base64.b64decode("".join(res.stdout.split()), validate=True)
    except (binascii.Error, ValueError):
        raise HostError(conn.host.name, "archive the swarm state: the archive came back damaged") from None


_RAFT_FILE = re.compile(r"^swarm/raft/[^/]+/[0-9a-f]{16}-[0-9a-f]{16}\.(wal|snap)$")


def archive_problem(archive: bytes) -> str:
    """What is wrong with a swarm state archive (tar.gz), "" when nothing is (pure): it holds only
    regular files and directories under ``swarm/`` (no links, devices or paths leaving it: a
    restore unpacks it as root into the data root), and the raft log (a WAL segment at least)."""
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            members = tar.getmembers()
    except (tarfile.TarError, OSError, EOFError) as e:
        return f"not a readable tar.gz archive ({e})"
    wal = False
    for m in members:
        name = m.name.removeprefix("./")
        parts = name.split("/")
        if name.startswith("/") or ".." in parts or parts[0] != "swarm":
            return f"it holds {m.name!r}, outside swarm/"
        if not (m.isreg() or m.isdir()):
            return f"it holds {m.name!r}, which is neither a regular file nor a directory"
        wal = wal or bool(m.isreg() and _RAFT_FILE.match(name) and name.endswith(".wal"))
    if not wal:
        return "it holds no raft log (swarm/raft/*/*.wal): the swarm state is incomplete"
    return ""
