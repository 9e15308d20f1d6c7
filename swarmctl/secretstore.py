"""Secrets encrypted at rest (AES-256-GCM), decrypted only in memory, versioned by content in swarm.

A secret file (convention ``secrets/<name>.enc``) is a few text lines, so it diffs cleanly in git::

    swarmctl-secret v1
    name: db_password
    key: 3f9c2a41d0b7e6a5
    nonce: <base64, 12 bytes, fresh on every write>
    data: <base64 of ciphertext + 16-byte tag>

The associated data binds the format version, the secret's name (the file's name without
``.enc``) and the key fingerprint: a file renamed to another secret's name, edited, truncated or
read with another key does not decrypt.

Keys are 32 random bytes, base64. They come from ``SWARMCTL_SECRETS_KEY`` (one key) or from a
**keyring** file (default ``~/.config/swarmctl/secrets.key``, only its owner may read it): the first
key encrypts, the ``retired`` ones still decrypt what they encrypted. A key is never deleted:
``rekey`` adds a new key, re-encrypts a directory and retires the old key, so other directories
sharing the keyring keep decrypting. rekey is all or nothing across crashes: a journal is written
first, every file is replaced crash-safe, and the next command that touches the directory finishes
(or, when the new key never reached the keyring, undoes) an interrupted rekey. The keyring is
locked (``flock`` of ``<key file>.lock``) from reading it to writing it, so two rekeys of directories
sharing it, at once, both keep their new key.

Nothing derived from a plaintext leaves the machine except the secret itself: swarm secret names
and the content label carry an HMAC of the content keyed by a key derived from the secrets key
(HKDF, for this use only), never a plain hash. Only key fingerprints are ever shown.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import signal
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from swarmctl.errors import InputError, PrerequisiteError, TimeoutExpired
from swarmctl.files import create_exclusive, open_regular, read_limited, read_regular, remove_durably, write_atomic
from swarmctl.wait import Pending, until

MAGIC = "swarmctl-secret"
FORMAT_VERSION = 1
KEY_ENV = "SWARMCTL_SECRETS_KEY"
KEY_FILE_ENV = "SWARMCTL_SECRETS_KEY_FILE"
DEFAULT_KEY_FILE = Path("~/.config/swarmctl/secrets.key")
SUFFIX = ".enc"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_SIZE = 500 * 1024  # swarm's own limit for a secret
KEYRING_HEADER = (
    "# swarmctl secrets keyring: the first key encrypts; `retired` keys only decrypt what they encrypted.\n"
    "# Never delete a line: files encrypted with a retired key need it.\n"
)
RETIRED = "retired"
DIGEST_SCHEME = "hmac-sha256:"  # the content label: keyed, so it cannot be checked against a guess
JOURNAL = ".swarmctl-rekey"
MAX_JOURNAL = 1024 * 1024  # the names of the files of one directory; more is not a journal swarmctl wrote
MAX_KEY_FILE = 64 * 1024  # a keyring line is 45 to 53 bytes: a thousand rekeys fit
LOCK_SUFFIX = ".lock"
# a rekey holds the keyring's lock for as long as it takes to re-encrypt one directory: a second or two
LOCK_TIMEOUT = 60.0
# fault injection for the crash tests of rekey: SIGKILL this process at the named step
CRASH_ENV = "SWARMCTL_TEST_CRASH"


@dataclass(frozen=True)
class SecretKey:
    raw: bytes = field(default=b"", repr=False)
    source: str = ""

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(b"swarmctl-secrets-key\0" + self.raw).hexdigest()[:16]

    def derive(self, purpose: str) -> bytes:
        """A key for one use only (HKDF-SHA256), so no use of the key leaks into another."""
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=f"swarmctl {purpose}".encode())
        return hkdf.derive(self.raw)

    def __repr__(self) -> str:  # never the key itself, not even in a traceback
        return f"SecretKey(fingerprint={self.fingerprint}, source={self.source})"


@dataclass(frozen=True)
class Keyring:
    """The current key (encrypts, names) and the retired ones (decrypt only)."""

    current: SecretKey
    retired: tuple[SecretKey, ...] = ()
    source: str = ""

    @property
    def fingerprint(self) -> str:
        return self.current.fingerprint

    def find(self, fingerprint: str) -> SecretKey | None:
        for k in (self.current, *self.retired):
            if k.fingerprint == fingerprint:
                return k
        return None

    def digest(self, plaintext: bytes) -> str:
        """The keyed content digest (HMAC-SHA256 under a key derived for it), hex."""
        return hmac.new(self.current.derive("secret digests v1"), plaintext, hashlib.sha256).hexdigest()

    def content_label(self, plaintext: bytes) -> str:
        return DIGEST_SCHEME + self.digest(plaintext)

    def text(self) -> str:
        lines = [base64.b64encode(self.current.raw).decode()]
        lines += [f"{RETIRED} {base64.b64encode(k.raw).decode()}" for k in self.retired]
        return KEYRING_HEADER + "\n".join(lines) + "\n"


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


def parse_keyring(text: str, source: str) -> Keyring:
    """A keyring file's text (a file with one bare key, as older swarmctl wrote, is a keyring too)."""
    keys: list[SecretKey] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        retired = word == RETIRED
        if keys and not retired:
            raise InputError(f"more than one current key (only the first line may be unmarked): line {number}", source)
        if not keys and retired:
            raise InputError(f"the first key is marked retired: line {number}", source)
        keys.append(_decode_key(rest if retired else line, f"{source}:{number}"))
    if not keys:
        raise InputError("no key in it", source)
    return Keyring(keys[0], tuple(keys[1:]), source)


def load_key(env: Mapping[str, str]) -> Keyring:
    """The keyring: SWARMCTL_SECRETS_KEY (one key), else the key file.

    Raises:
        InputError: no key, a malformed key, or a key file that someone else owns or others may read.
    """
    if env.get(KEY_ENV):
        return Keyring(_decode_key(env[KEY_ENV], KEY_ENV), (), KEY_ENV)
    path = key_file_path(env)
    try:
        f = open_regular(path)  # a FIFO or a link to /dev/zero is refused, not waited on or read forever
    except FileNotFoundError:
        raise _no_key(path) from None
    except OSError as e:
        raise InputError(f"cannot read the secrets key file {path}: {e.strerror}") from None
    with f:
        # checked on the open file, not the path: what is read is what was checked
        st = os.fstat(f.fileno())
        if st.st_uid != os.geteuid():
            raise InputError(f"refusing the secrets key file {path}: it belongs to uid {st.st_uid}, not to you")
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise InputError(
                f"refusing the secrets key file {path}: it is readable by others "
                f"(mode {stat.S_IMODE(st.st_mode):o}); run `chmod 600 {path}`"
            )
        text = read_limited(f, MAX_KEY_FILE, path, "key files").decode("ascii", errors="replace")
    return parse_keyring(text, str(path))


def _no_key(path: Path) -> InputError:
    return InputError(f"no secrets key: set {KEY_ENV}, or create a key file with `swarmctl secrets init` ({path})")


def load_key_if_any(env: Mapping[str, str]) -> Keyring | None:
    """The keyring when one is configured (for what works without one, too); None when there is none."""
    if not env.get(KEY_ENV) and not key_file_path(env).exists():
        return None
    return load_key(env)


class KeySource:
    """The keyring of one command, loaded once when first needed: required by encrypted secrets
    (``required``: raises when there is none), optional for what merely benefits from it."""

    def __init__(self, env: Mapping[str, str]):
        self.env = env
        self._keys: Keyring | None = None
        self._looked = False

    def required(self) -> Keyring:
        if self._keys is None:
            self._keys = load_key(self.env)
            self._looked = True
        return self._keys

    def optional(self) -> Keyring | None:
        if not self._looked:
            self._keys = load_key_if_any(self.env)
            self._looked = True
        return self._keys


def create_key_file(env: Mapping[str, str]) -> tuple[Path, Keyring]:
    """A new keyring with one random key (mode 0600); never overwrites one."""
    path = key_file_path(env)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    ring = Keyring(SecretKey(secrets.token_bytes(32), str(path)), (), str(path))
    try:
        create_exclusive(path, ring.text(), 0o600)
    except FileExistsError:
        raise InputError(
            f"{path} exists already: refusing to overwrite a key (it would lock out its secrets)"
        ) from None
    return path, ring


def check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise InputError(f"bad secret name {name!r}: use letters, digits, '_', '.' or '-' (at most 64)")


def _aad(name: str, fingerprint: str) -> bytes:
    return f"{MAGIC} v{FORMAT_VERSION}\0{name}\0{fingerprint}".encode()


def encrypt(name: str, plaintext: bytes, key: SecretKey) -> str:
    """The text of an encrypted secret file for ``plaintext`` (a fresh nonce every time)."""
    check_name(name)
    nonce = secrets.token_bytes(12)
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


def key_of(text: str) -> str:
    """The fingerprint a secret file names in its header ("?" when it names none)."""
    m = re.search(r"^key: (\S+)$", text, re.M)
    return m.group(1) if m else "?"


def decrypt(name: str, text: str, keys: Keyring, source: str) -> bytes:
    """The plaintext of an encrypted secret file, with the key its header names.

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
    key = keys.find(fields["key"])
    if key is None:
        raise InputError(
            f"encrypted with key {fields['key']}, which is neither the current key ({keys.fingerprint}) nor a "
            f"retired one in {keys.source}",
            source,
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


MAX_FILE = 2 * MAX_SIZE  # a secret file: base64 of at most MAX_SIZE bytes and a short header


def _read_text(path: Path) -> str:
    try:
        return read_regular(path, MAX_FILE, "secret files").decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("not a swarmctl secret file (not UTF-8 text)", path) from None


def _mode_of(path: Path) -> int:
    """The permission bits a file has (0644, as a new secret file gets, when there is none): a file
    written anew keeps them, so the autolock unlock-key store (0600) never becomes readable by all."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return 0o644


def read_secret(path: Path, keys: Keyring, env: Mapping[str, str] | None = None) -> bytes:
    """Decrypt one secret file (an interrupted rekey of its directory is finished first)."""
    if env is not None:
        recover(path.parent, env)
    return decrypt(name_of(path), _read_text(path), keys, str(path))


def write_secret(path: Path, plaintext: bytes, keys: Keyring) -> None:
    """Encrypt with the current key and write crash-safe (the plaintext never touches the disk)."""
    if len(plaintext) > MAX_SIZE:
        raise InputError(f"a secret holds at most {MAX_SIZE} bytes (swarm's limit); this one has {len(plaintext)}")
    write_atomic(path, encrypt(name_of(path), plaintext, keys.current), _mode_of(path))


def versioned_name(base: str, plaintext: bytes, keys: Keyring) -> str:
    """``<base>_<first 12 hex of the keyed digest>``: new content, new swarm secret; a name that
    cannot be checked against a guessed value without the key."""
    return f"{base}_{keys.digest(plaintext)[:12]}"


def legacy_versioned_name(base: str, plaintext: bytes) -> str:
    """The name older swarmctl gave (the unsalted sha256 of the content): recognised, never given."""
    return f"{base}_{hashlib.sha256(plaintext).hexdigest()[:12]}"


@dataclass(frozen=True)
class Listed:
    name: str
    path: Path
    size: int  # plaintext bytes; -1 when it could not be read
    key: str  # fingerprint the file names
    problem: str = ""  # why it is not a usable secret file


def list_secrets(directory: Path, keys: Keyring | None) -> list[Listed]:
    """Every ``*.enc`` in directory; sizes need the key. Entries that are not secret files are
    listed with the problem (a directory, a dangling link, unreadable), not fatal."""
    out = []
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        problem = ""
        if path.is_symlink() and not path.exists():
            problem = "a dangling symbolic link"
        elif path.is_dir():
            problem = "a directory, not a secret file"
        elif not path.is_file():
            problem = "not a regular file"
        if problem:
            out.append(Listed(name_of(path), path, -1, "?", problem))
            continue
        try:
            text = _read_text(path)
            size = len(decrypt(name_of(path), text, keys, str(path))) if keys is not None else -1
        except InputError as e:
            out.append(Listed(name_of(path), path, -1, "?", e.message))
            continue
        out.append(Listed(name_of(path), path, size, key_of(text)))
    return out


# -- rekey: all or nothing, across crashes ---------------------------------------------------------


def _crash_point(step: str) -> None:
    if os.environ.get(CRASH_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class Rekeyed:
    old: str  # fingerprints
    new: str
    count: int
    source: str


@contextlib.contextmanager
def _keyring_lock(env: Mapping[str, str]) -> Iterator[Path]:
    """Hold the keyring's lock for the block: an exclusive ``flock`` of ``<key file>.lock``.

    rekey reads the ring, adds its key and writes the ring back; two at once (directories sharing
    the ring) would each write their own ring and the last would drop the other's new key, and with
    it every secret encrypted under that key. The lock is a file of its own beside the key file
    (the key file is replaced on every write, and a lock on a replaced file locks nothing), never
    removed; the kernel releases it when its holder exits, however it exits.

    Raises:
        TimeoutExpired: another process held it for LOCK_TIMEOUT seconds; names the lock file.
    """
    path = key_file_path(env)
    lock = path.with_name(path.name + LOCK_SUFFIX)
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except FileNotFoundError:
        raise _no_key(path) from None
    except OSError as e:
        raise InputError(f"cannot open the secrets keyring's lock file {lock}: {e.strerror}") from None
    try:
        _wait_for_lock(fd, lock, path)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for the error of whoever waits
        yield lock
    finally:
        os.close(fd)  # releases the lock


def _wait_for_lock(fd: int, lock: Path, path: Path) -> None:
    """Take the flock of ``fd``, asking again with a growing pause until LOCK_TIMEOUT (a blocking
    flock could not be given a deadline, nor be interrupted by Ctrl-C on every platform)."""

    def taken() -> bool | Pending:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return Pending("held")
        except OSError as e:
            raise PrerequisiteError(f"cannot lock {lock}, the secrets keyring's lock: {e.strerror}") from None

    def late(_: str) -> TimeoutExpired:
        return TimeoutExpired(
            f"the secrets keyring {path} is being changed by another swarmctl ({_holder(lock)} holds {lock}), "
            f"which did not finish within {LOCK_TIMEOUT:g} s: run this again once it has"
        )

    until(f"the lock of {path}", taken, LOCK_TIMEOUT, first=0.01, cap=0.5, retry=(), error=late)


def _holder(lock: Path) -> str:
    try:
        pid = read_regular(lock, 32, "lock files").decode("ascii").strip()
    except (InputError, UnicodeDecodeError):
        pid = ""
    return f"process {pid}" if pid.isdigit() else "a process"


def recover(directory: Path, env: Mapping[str, str]) -> str:
    """Finish (or undo) a rekey of ``directory`` that was interrupted; returns what was done, or "".

    The journal names the old and new keys and the files. If the new key reached the keyring, the
    files still under another key are re-encrypted with the current one; if not, no file was
    touched and the journal is dropped. The keyring's lock is held meanwhile: a rekey still running
    holds it too, and its journal is not an interrupted one.
    """
    if not os.path.lexists(directory / JOURNAL):
        return ""
    if env.get(KEY_ENV):
        return _recover(directory, env)  # no key file to change, nor one a rekey can be changing
    with _keyring_lock(env):
        return _recover(directory, env)


def _recover(directory: Path, env: Mapping[str, str]) -> str:
    """recover, with the keyring's lock held (or no keyring file)."""
    journal = directory / JOURNAL
    try:
        with open_regular(journal) as f:
            raw = read_limited(f, MAX_JOURNAL, journal, "rekey journals")
        data = json.loads(raw)
        new, files = str(data["new"]), [str(f) for f in data["files"]]
    except FileNotFoundError:
        return ""  # finished by the rekey whose lock this waited for
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(
            f"an interrupted rekey left a damaged journal ({e}); restore {directory} from git", journal
        ) from None
    keys = load_key(env)
    if keys.find(new) is None:
        remove_durably(journal)
        return f"an interrupted rekey of {directory} had changed nothing: undone"
    # the new key is in the ring: current, or retired since by a rekey of another directory
    done = 0
    for name in files:
        path = directory / name
        text = _read_text(path)
        if key_of(text) != keys.fingerprint:
            plain = decrypt(name_of(path), text, keys, str(path))
            write_atomic(path, encrypt(name_of(path), plain, keys.current), _mode_of(path))
            done += 1
    remove_durably(journal)
    return (
        f"finished an interrupted rekey of {directory} (key {keys.fingerprint}): "
        f"{done} of {len(files)} files re-encrypted now"
    )


def rekey(directory: Path, env: Mapping[str, str]) -> Rekeyed:
    """Re-encrypt every secret of ``directory`` under a new key; the old key is retired, not deleted.

    Every file is decrypted first (nothing changes if one fails). Then a journal is written, the
    keyring gains the new key (the old one retired), each file is replaced (keeping its mode), and
    the journal goes. A crash or Ctrl-C anywhere leaves a state that decrypts, and ``recover``
    completes it. The keyring's lock is held throughout, from reading the ring to the last file.
    """
    if env.get(KEY_ENV):
        raise InputError(
            f"rekey writes the new key to the key file; unset {KEY_ENV} (the key comes from the environment)"
        )
    with _keyring_lock(env):
        _recover(directory, env)
        keys = load_key(env)
        path = key_file_path(env)
        files = sorted(p for p in directory.glob(f"*{SUFFIX}") if p.is_file())
        plain = {p: read_secret(p, keys) for p in files}
        new = SecretKey(secrets.token_bytes(32), str(path))
        journal = {"version": 1, "old": keys.fingerprint, "new": new.fingerprint, "files": [p.name for p in files]}
        try:
            write_atomic(directory / JOURNAL, json.dumps(journal, indent=1) + "\n", 0o600)
            _crash_point("journal")
            write_atomic(path, Keyring(new, (keys.current, *keys.retired), str(path)).text(), 0o600)
            _crash_point("keyring")
            for i, (p, data) in enumerate(plain.items()):
                write_atomic(p, encrypt(name_of(p), data, new), _mode_of(p))
                _crash_point(f"file:{i}")
            remove_durably(directory / JOURNAL)
        except BaseException:
            # Ctrl-C, a full disk...: complete what can be completed, or undo what changed nothing
            _recover(directory, env)
            raise
    return Rekeyed(keys.fingerprint, new.fingerprint, len(files), str(path))
