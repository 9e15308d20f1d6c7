"""Each host's SSH host key, as its sshd offers it to a client that has not authenticated, and what
the inventory's known_hosts says of it: known, new, or CHANGED.

Read without logging in (an SSH handshake only): this is the first contact, where swarmctl's usual
connection would refuse the unknown key. The key is the one a later connection negotiates (same
client, same preferences), so that it matches what is recorded.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import paramiko

from swarmctl.errors import SSHError
from swarmctl.inventory import Host
from swarmctl.transport.ssh import fingerprint, known_hosts_name

KNOWN = "known"
NEW = "new"
CHANGED = "CHANGED"


@dataclass(frozen=True)
class OfferedKey:
    """One host's key as its sshd offered it."""

    host: str
    name: str  # its known_hosts name: ADDRESS, or [ADDRESS]:PORT
    key_type: str  # ssh-ed25519, ecdsa-sha2-nistp256, ssh-rsa...
    base64: str
    fingerprint: str  # SHA256:...

    @property
    def line(self) -> str:
        return f"{self.name} {self.key_type} {self.base64}"


@dataclass(frozen=True)
class KnownKey:
    """A host's key and what known_hosts says of it."""

    offered: OfferedKey
    status: str  # known | new | CHANGED
    recorded: str = ""  # CHANGED: the fingerprint known_hosts has

    def json(self) -> dict[str, str]:
        o = self.offered
        return {"host": o.host, "name": o.name, "type": o.key_type, "fingerprint": o.fingerprint,
                "status": self.status, "recorded": self.recorded}  # fmt: skip


def read_offered_key(host: Host) -> OfferedKey:
    """The key the host's sshd offers (a handshake, no authentication), within connect_timeout.

    Raises:
        SSHError: the host cannot be reached, or offers no key in time.
    """
    s = host.ssh
    where = f"{host.address}:{s.port}"
    try:
        sock = socket.create_connection((host.address, s.port), timeout=s.connect_timeout)
    except OSError as e:
        raise SSHError(host.name, f"cannot connect to {where}: {e.strerror or e}") from None
    transport = paramiko.Transport(sock)
    try:
        transport.banner_timeout = s.connect_timeout
        transport.start_client(timeout=s.connect_timeout)
        key = transport.get_remote_server_key()
    except (paramiko.SSHException, EOFError, OSError) as e:
        raise SSHError(host.name, f"no SSH host key from {where}: {e or type(e).__name__}") from None
    finally:
        transport.close()
    return OfferedKey(host.name, known_hosts_name(host.address, s.port), key.get_name(), key.get_base64(),
                      fingerprint(key))  # fmt: skip


def recorded_keys(path: Path) -> paramiko.HostKeys:
    """The known_hosts file's keys (none when there is no file)."""
    keys = paramiko.HostKeys()
    if path.is_file():
        keys.load(str(path))
    return keys


def judge(offered: Iterable[OfferedKey], recorded: paramiko.HostKeys) -> list[KnownKey]:
    """Known, new or CHANGED, for each offered key (pure: the recorded keys given)."""
    out = []
    for o in offered:
        have: Mapping[str, paramiko.PKey] = recorded.lookup(o.name) or {}
        if o.key_type in have:
            same = have[o.key_type].get_base64() == o.base64
            out.append(KnownKey(o, KNOWN) if same else KnownKey(o, CHANGED, fingerprint(have[o.key_type])))
        elif have:  # a key of another type is recorded: this one may be a new one, or an impostor's
            other = next(iter(have.values()))
            out.append(KnownKey(o, CHANGED, f"{other.get_name()} {fingerprint(other)}"))
        else:
            out.append(KnownKey(o, NEW))
    return out


def expected_mismatch(keys: Iterable[KnownKey], expect: Mapping[str, str]) -> dict[str, str]:
    """Hosts whose new key is not the fingerprint given for them (``expect``: host -> SHA256:...) (pure)."""
    return {
        k.offered.host: f"offers {k.offered.fingerprint}, not the {expect[k.offered.host]} given for it"
        for k in keys
        if k.offered.host in expect and k.offered.fingerprint != expect[k.offered.host]
    }
