"""The lab's private registry: Debian's ``docker-registry`` (the reference distribution registry)
in a network namespace of its own on the lab bridge, served over TLS with a CA made for the lab
and htpasswd authentication - the setup of a private registry in production, on one machine.

The binary comes from the Debian package, downloaded and unpacked into the cache (installing the
package would start a registry on this machine's port 5000). The password is random, written
into the lab directory only as a secret encrypted with the user's secrets key
(``secrets/lab-registry.enc``), and the lab inventory gets the matching ``registries:`` entry.
Nothing leaves the machine: the registry listens on the lab's own subnet.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets as random
import shlex
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swarmctl.errors import PrerequisiteError, TimeoutExpired
from swarmctl.files import write_atomic
from swarmctl.plan import Notify, quiet
from swarmctl_lab.cache import locked

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "swarmctl" / "registry"
PACKAGE = "docker-registry"
PORT = 5000
OCTET = 5  # the registry's address on the lab subnet: .5 (the bridge is .1, hosts from .11)
USER = "swarmctl"
SECRET = "lab-registry"
CA_FILE = "registry-ca.crt"


@dataclass(frozen=True)
class LabRegistry:
    address: str  # host:port, as image names give it
    ca_file: Path
    username: str
    password: str

    def __repr__(self) -> str:  # never the password
        return f"LabRegistry({self.address}, user {self.username})"


def binary(report: Notify = quiet) -> Path:
    """Debian's docker-registry binary, unpacked into the cache on first use.

    Raises:
        PrerequisiteError: apt cannot download the package here.
    """
    found = sorted(CACHE.glob("*/usr/bin/docker-registry"))
    if found:
        return found[-1]
    with locked(CACHE, "the lab registry's binary"):
        found = sorted(CACHE.glob("*/usr/bin/docker-registry"))
        if found:  # another lab fetched it while this one waited
            return found[-1]
        return _fetch(report)


def _fetch(report: Notify) -> Path:
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise PrerequisiteError("the lab registry needs apt-get and dpkg-deb to fetch Debian's docker-registry")
    report("fetching Debian's docker-registry package for the lab registry")
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(["apt-get", "download", PACKAGE], cwd=tmp, capture_output=True, text=True, timeout=600)
        debs = sorted(Path(tmp).glob(f"{PACKAGE}_*.deb"))
        if proc.returncode != 0 or not debs:
            last = (proc.stderr.strip() or "no package downloaded").splitlines()[-1]
            raise PrerequisiteError(f"cannot download {PACKAGE} with apt ({last}): run `apt-get update` first")
        version = debs[0].name.removeprefix(f"{PACKAGE}_").removesuffix(".deb")
        target = CACHE / version
        staging = CACHE / f".{version}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(staging)], check=True, timeout=300)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    return target / "usr" / "bin" / "docker-registry"


def _usage(cert_sign: bool) -> Any:
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, key_cert_sign=cert_sign, crl_sign=cert_sign, encipher_only=False, decipher_only=False,
    )  # fmt: skip


def make_tls(directory: Path, ip: str) -> Path:
    """A CA for the lab and a server certificate for ``ip`` signed by it; returns the CA file."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "swarmctl lab registry CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    # Key identifiers and key usages as a strict verifier wants them (Python 3.13's default context
    # sets VERIFY_X509_STRICT: "Missing Authority Key Identifier" without them)
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ip)])).issuer_name(ca_name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    pem = serialization.Encoding.PEM
    private = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write_atomic(directory / "server.key", private.decode(), 0o600)
    write_atomic(directory / "server.crt", cert.public_bytes(pem).decode(), 0o644)
    ca_file = directory / CA_FILE
    write_atomic(ca_file, ca.public_bytes(pem).decode(), 0o644)
    return ca_file


def htpasswd_line(user: str, password: str) -> str:
    """A bcrypt htpasswd entry (the only kind the registry accepts)."""
    import bcrypt  # paramiko's own dependency

    return f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()}\n"


def config(directory: Path, ip: str) -> str:
    return "\n".join(
        [
            "version: 0.1",
            "log: {level: warn}",
            "storage:",
            f"  filesystem: {{rootdirectory: {directory / 'data'}}}",
            "  delete: {enabled: true}",
            "http:",
            f"  addr: {ip}:{PORT}",
            f"  tls: {{certificate: {directory / 'server.crt'}, key: {directory / 'server.key'}}}",
            "auth:",
            f"  htpasswd: {{realm: swarmctl-lab, path: {directory / 'htpasswd'}}}",
            "",
        ]
    )


def start(
    directory: Path, netns: str, ip: str, cgroup_procs: Path, report: Notify = quiet, timeout: float = 30.0
) -> LabRegistry:
    """Run the registry in ``netns`` (made and wired by the caller) with its processes in the
    lab's cgroup; wait until it answers TLS with its certificate.

    Raises:
        TimeoutExpired: it did not answer in time (its log's last line says why).
    """
    exe = binary(report)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "data").mkdir(exist_ok=True)
    ca_file = make_tls(directory, ip)
    password = random.token_urlsafe(24)
    write_atomic(directory / "htpasswd", htpasswd_line(USER, password), 0o600)
    write_atomic(directory / "config.yml", config(directory, ip), 0o644)
    cgroup_procs.parent.mkdir(parents=True, exist_ok=True)
    q = shlex.quote
    script = (
        f"echo $$ > {q(str(cgroup_procs))}; "
        f"exec nsenter --net=/run/netns/{q(netns)} {q(str(exe))} serve {q(str(directory / 'config.yml'))}"
    )
    with open(directory / "registry.log", "ab") as log:
        subprocess.Popen(["sh", "-c", script], stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + timeout
    context = ssl.create_default_context(cafile=str(ca_file))
    while True:
        try:
            with socket.create_connection((ip, PORT), timeout=1) as raw, context.wrap_socket(raw, server_hostname=ip):
                break
        except OSError as e:
            if time.monotonic() > deadline:
                lines = (directory / "registry.log").read_text(errors="replace").strip().splitlines()
                raise TimeoutExpired(
                    f"the lab registry did not answer on {ip}:{PORT} within {timeout:g}s ({e})"
                    + (f"; its log: {lines[-1][:300]}" if lines else "")
                ) from None
            time.sleep(0.2)
    report(f"lab registry on {ip}:{PORT} (TLS, user {USER})")
    return LabRegistry(f"{ip}:{PORT}", ca_file, USER, password)
