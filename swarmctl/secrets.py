"""Secrets encrypted at rest (AES-256-GCM), decrypted only in memory, versioned by content in swarm.

A secret file (convention ``secrets/<name>.enc``) is a few text lines, so it diffs cleanly in git::

    swarmctl-secret v1
    name: db_password
    key: 3f9c2a41d0b7e6a5
    nonce: <base64, 12 bytes, fresh on every write>
    data: <base64 of ciphertext + 16-byte tag>

The associated data binds the format version, the secret's name (the file's name without
``.enc``) and the key fingerprint: a file renamed to another secret's name, edited, truncated or
read with another key does not decrypt. The key is 32 random bytes, base64, from
``SWARMCTL_SECRETS_KEY`` or a key file (default ``~/.config/swarmctl/secrets.key``) that only its
owner may read. Only the key's fingerprint is ever shown.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import secrets as random
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from swarmctl.errors import InputError

MAGIC = "swarmctl-secret"
FORMAT_VERSION = 1
KEY_ENV = "SWARMCTL_SECRETS_KEY"
KEY_FILE_ENV = "SWARMCTL_SECRETS_KEY_FILE"
DEFAULT_KEY_FILE = Path("~/.config/swarmctl/secrets.key")
SUFFIX = ".enc"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_SIZE = 500 * 1024  # swarm's own limit for a secret


@dataclass(frozen=True)
class SecretKey:
    raw: bytes = b""
    source: str = ""

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(b"swarmctl-secrets-key\0" + self.raw).hexdigest()[:16]

    def __repr__(self) -> str:  # never the key itself, not even in a traceback
        return f"SecretKey(fingerprint={self.fingerprint}, source={self.source})"


def key_file_path(env: Mapping[str, str]) -> Path:
    return Path(os.path.expanduser(env.get(KEY_FILE_ENV) or str(DEFAULT_KEY_FILE)))


def _decode_key(text: str, source: str) -> SecretKey:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"the secrets key in {source} is not base64") from None
    if len(raw) != 32:
        raise InputError(f"the secrets key in {source} is {len(raw)} bytes; it must be 32 (AES-256)")
    return SecretKey(raw, source)


def load_key(env: Mapping[str, str]) -> SecretKey:
    """The key from SWARMCTL_SECRETS_KEY, else from the key file.

    Raises:
        InputError: no key, a malformed key, or a key file others may read.
    """
    if env.get(KEY_ENV):
        return _decode_key(env[KEY_ENV], KEY_ENV)
    path = key_file_path(env)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InputError(
            f"no secrets key: set {KEY_ENV}, or create a key file with `swarmctl secrets init` ({path})"
        ) from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InputError(
            f"refusing the secrets key file {path}: it is readable by others (mode {stat.S_IMODE(st.st_mode):o}); "
            f"run `chmod 600 {path}`"
        )
    return _decode_key(path.read_text(encoding="ascii", errors="replace"), str(path))


def create_key_file(env: Mapping[str, str]) -> tuple[Path, SecretKey]:
    """A new random key in the key file (mode 0600); never overwrites one."""
    path = key_file_path(env)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = SecretKey(random.token_bytes(32), str(path))
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise InputError(
            f"{path} exists already: refusing to overwrite a key (it would lock out its secrets)"
        ) from None
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(base64.b64encode(key.raw).decode() + "\n")
    return path, key


def check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise InputError(f"bad secret name {name!r}: use letters, digits, '_', '.' or '-' (at most 64)")


def _aad(name: str, fingerprint: str) -> bytes:
    return f"{MAGIC} v{FORMAT_VERSION}\0{name}\0{fingerprint}".encode()


def encrypt(name: str, plaintext: bytes, key: SecretKey) -> str:
    """The text of an encrypted secret file for ``plaintext`` (a fresh nonce every time)."""
    check_name(name)
    nonce = random.token_bytes(12)
    sealed = AESGCM(key.raw).encrypt(nonce, plaintext, _aad(name, key.fingerprint))
    return (
        f"{MAGIC} v{FORMAT_VERSION}\n"
        f"name: {name}\n"
        f"key: {key.fingerprint}\n"
        f"nonce: {base64.b64encode(nonce).decode()}\n"
        f"data: {base64.b64encode(sealed).decode()}\n"
    )


def is_encrypted(data: bytes) -> bool:
    return data.startswith(MAGIC.encode() + b" ")


def decrypt(name: str, text: str, key: SecretKey, source: str) -> bytes:
    """The plaintext of an encrypted secret file.

    Raises:
        InputError: naming the file and what is wrong - never the content.
    """
    lines = text.splitlines()
    if not lines or not lines[0].startswith(MAGIC + " "):
        raise InputError("not a swarmctl secret file", source)
    version = lines[0][len(MAGIC) + 1 :].strip()
    if version != f"v{FORMAT_VERSION}":
        raise InputError(f"unknown secret file format {version!r} (this swarmctl reads v{FORMAT_VERSION})", source)
    fields = {}
    for number, line in enumerate(lines[1:], start=2):
        k, sep, v = line.partition(": ")
        if not sep:
            raise InputError("damaged or truncated secret file: expected `field: value`", source, number)
        fields[k] = v.strip()
    missing = [f for f in ("name", "key", "nonce", "data") if f not in fields]
    if missing:
        raise InputError(f"damaged or truncated secret file: no {', '.join(missing)}", source)
    if fields["key"] != key.fingerprint:
        raise InputError(
            f"encrypted with key {fields['key']}, but the key in use ({key.source}) is {key.fingerprint}", source
        )
    try:
        nonce = base64.b64decode(fields["nonce"], validate=True)
        sealed = base64.b64decode(fields["data"], validate=True)
    except (binascii.Error, ValueError):
        raise InputError("damaged or truncated secret file: bad base64", source) from None
    if len(nonce) != 12 or len(sealed) < 16:
        raise InputError("damaged or truncated secret file", source)
    try:
        return AESGCM(key.raw).decrypt(nonce, sealed, _aad(name, key.fingerprint))
    except InvalidTag:
        hint = (
            f"it holds secret {fields['name']!r}, not {name!r} (renamed?)"
            if fields["name"] != name
            else ("the file was modified or damaged")
        )
        raise InputError(f"cannot decrypt: authentication failed - {hint}", source) from None


def name_of(path: Path) -> str:
    """The secret name a file is bound to: its file name without ``.enc``."""
    return path.name[: -len(SUFFIX)] if path.name.endswith(SUFFIX) else path.name


def read_secret(path: Path, key: SecretKey) -> bytes:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("no such secret file", path) from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read: {e}", path) from None
    return decrypt(name_of(path), text, key, str(path))


def write_secret(path: Path, plaintext: bytes, key: SecretKey) -> None:
    """Encrypt and write atomically (the plaintext never touches the disk)."""
    if len(plaintext) > MAX_SIZE:
        raise InputError(f"a secret holds at most {MAX_SIZE} bytes (swarm's limit); this one has {len(plaintext)}")
    text = encrypt(name_of(path), plaintext, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def versioned_name(base: str, plaintext: bytes) -> str:
    """``<base>_<first 12 hex of sha256(plaintext)>``: new content, new swarm secret."""
    return f"{base}_{hashlib.sha256(plaintext).hexdigest()[:12]}"


@dataclass(frozen=True)
class Listed:
    name: str
    path: Path
    size: int  # plaintext bytes
    key: str  # fingerprint the file names


def list_secrets(directory: Path, key: SecretKey | None) -> list[Listed]:
    """Every ``*.enc`` in directory; sizes need the key (a file it cannot open is an error)."""
    out = []
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        text = path.read_text(encoding="utf-8", errors="replace")
        m = re.search(r"^key: (\S+)$", text, re.M)
        fingerprint = m.group(1) if m else "?"
        size = len(decrypt(name_of(path), text, key, str(path))) if key is not None else -1
        out.append(Listed(name_of(path), path, size, fingerprint))
    return out


def rekey(directory: Path, env: Mapping[str, str]) -> tuple[SecretKey, SecretKey, int]:
    """Re-encrypt every secret under a new key, all or nothing. Returns (old, new, count).

    Every file is decrypted first (nothing changes if one fails); then the new files and the new
    key are written beside the old ones and renamed into place; a failure while renaming puts the
    old ones back.
    """
    old = load_key(env)
    if env.get(KEY_ENV):
        raise InputError(
            f"rekey writes the new key to the key file; unset {KEY_ENV} (the key comes from the environment)"
        )
    path = key_file_path(env)
    files = sorted(directory.glob(f"*{SUFFIX}"))
    plain = {p: read_secret(p, old) for p in files}
    new = SecretKey(random.token_bytes(32), str(path))
    staged: list[tuple[Path, Path]] = []
    for p, data in plain.items():
        tmp = p.with_name(p.name + ".rekey")
        tmp.write_text(encrypt(name_of(p), data, new), encoding="utf-8")
        staged.append((tmp, p))
    key_tmp = path.with_name(path.name + ".rekey")
    fd = os.open(key_tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(base64.b64encode(new.raw).decode() + "\n")
    backups: list[tuple[Path, Path]] = []
    try:
        for tmp, target in [*staged, (key_tmp, path)]:
            backup = target.with_name(target.name + ".pre-rekey")
            os.link(target, backup)
            backups.append((backup, target))
            tmp.replace(target)
    except OSError:
        for backup, target in backups:
            backup.replace(target)
        for tmp, _ in [*staged, (key_tmp, path)]:
            tmp.unlink(missing_ok=True)
        raise
    for backup, _ in backups:
        backup.unlink(missing_ok=True)
    return old, new, len(files)
