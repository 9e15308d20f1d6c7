"""Secrets at rest: AES-256-GCM files bound to their name and key; the key file's permissions."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import os
import re
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from swarmctl import labels
from swarmctl import secretstore as s
from swarmctl.compose.convert import convert_stack
from swarmctl.compose.loader import load_stack
from swarmctl.errors import InputError, TimeoutExpired
from swarmctl.facts.stack import StackObjects
from swarmctl.ops.deploy import plan_stack, superseded_secrets
from tests.helpers import swarmctl


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = {s.KEY_FILE_ENV: str(tmp_path / "cfg" / "secrets.key")}
    s.create_key_file(e)
    return e


def test_round_trip_and_a_fresh_nonce_every_write(env: dict[str, str], tmp_path: Path) -> None:
    key = s.load_key(env)
    path = tmp_path / "secrets" / "db_password.enc"
    s.write_secret(path, b"hunter2\x00\xff", key)
    first = path.read_text()
    assert b"hunter2" not in path.read_bytes()
    assert s.read_secret(path, key) == b"hunter2\x00\xff"
    s.write_secret(path, b"hunter2\x00\xff", key)
    assert path.read_text() != first  # same value, new nonce: the files differ
    assert first.splitlines()[0] == "swarmctl-secret v1" and "name: db_password" in first
    assert f"key: {key.fingerprint}" in first


def test_key_file_is_0600_and_never_overwritten(env: dict[str, str]) -> None:
    path = Path(env[s.KEY_FILE_ENV])
    assert (path.stat().st_mode & 0o777) == 0o600
    ring = s.parse_keyring(path.read_text(), str(path))
    assert len(ring.current.raw) == 32 and ring.retired == ()
    with pytest.raises(InputError, match="refusing to overwrite"):
        s.create_key_file(env)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_a_key_file_others_can_read_is_refused(env: dict[str, str], mode: int) -> None:
    os.chmod(env[s.KEY_FILE_ENV], mode)
    with pytest.raises(InputError, match="readable by others"):
        s.load_key(env)


def test_key_from_the_environment_and_bad_keys(tmp_path: Path) -> None:
    raw = os.urandom(32)
    key = s.load_key({s.KEY_ENV: base64.b64encode(raw).decode()})
    assert key.current.raw == raw and key.source == s.KEY_ENV
    assert raw.hex() not in repr(key) and base64.b64encode(raw).decode() not in repr(key)
    with pytest.raises(InputError, match="not base64"):
        s.load_key({s.KEY_ENV: "not a key!"})
    with pytest.raises(InputError, match="16 bytes; it must be 32"):
        s.load_key({s.KEY_ENV: base64.b64encode(os.urandom(16)).decode()})
    with pytest.raises(InputError, match=r"no secrets key: set SWARMCTL_SECRETS_KEY"):
        s.load_key({s.KEY_FILE_ENV: str(tmp_path / "none")})


def encrypted(env: dict[str, str], tmp_path: Path, name: str = "token", value: bytes = b"v1") -> Path:
    path = tmp_path / f"{name}.enc"
    s.write_secret(path, value, s.load_key(env))
    return path


def test_a_flipped_byte_fails(env: dict[str, str], tmp_path: Path) -> None:
    path = encrypted(env, tmp_path)
    lines = path.read_text().splitlines()
    data = bytearray(base64.b64decode(lines[4].split(": ")[1]))
    data[0] ^= 1
    lines[4] = "data: " + base64.b64encode(bytes(data)).decode()
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"authentication failed - the file was modified"):
        s.read_secret(path, s.load_key(env))


def test_truncation_fails(env: dict[str, str], tmp_path: Path) -> None:
    path = encrypted(env, tmp_path)
    text = path.read_text()
    for cut in (text[:40], "\n".join(text.splitlines()[:4]), text[: len(text) - 8]):
        path.write_text(cut)
        with pytest.raises(InputError, match=r"truncated|damaged|authentication failed"):
            s.read_secret(path, s.load_key(env))


def test_another_key_fails(env: dict[str, str], tmp_path: Path) -> None:
    path = encrypted(env, tmp_path)
    other = s.load_key({s.KEY_ENV: base64.b64encode(os.urandom(32)).decode()})
    with pytest.raises(InputError, match=r"encrypted with key .*, which is neither the current key"):
        s.read_secret(path, other)


def test_a_file_renamed_to_another_secret_fails(env: dict[str, str], tmp_path: Path) -> None:
    path = encrypted(env, tmp_path, "api_token")
    moved = path.rename(tmp_path / "db_password.enc")
    with pytest.raises(InputError, match="holds secret 'api_token', not 'db_password'"):
        s.read_secret(moved, s.load_key(env))
    # editing the name line too does not help: the name is bound to the ciphertext
    moved.write_text(moved.read_text().replace("name: api_token", "name: db_password"))
    with pytest.raises(InputError, match="authentication failed"):
        s.read_secret(moved, s.load_key(env))


def test_unknown_format_version(env: dict[str, str], tmp_path: Path) -> None:
    path = encrypted(env, tmp_path)
    path.write_text(path.read_text().replace("swarmctl-secret v1", "swarmctl-secret v9"))
    with pytest.raises(InputError, match="unknown secret file format 'v9'"):
        s.read_secret(path, s.load_key(env))


def test_error_messages_never_carry_the_value(env: dict[str, str], tmp_path: Path) -> None:
    path = encrypted(env, tmp_path, value=b"PLAINTEXT-MARKER")
    path.write_text(path.read_text().replace("data: ", "data: A"))
    with pytest.raises(InputError) as e:
        s.read_secret(path, s.load_key(env))
    assert "PLAINTEXT-MARKER" not in str(e.value)


def test_rekey_all_or_nothing(env: dict[str, str], tmp_path: Path) -> None:
    d = tmp_path / "secrets"
    key = s.load_key(env)
    for name, value in (("a", b"1"), ("b", b"2")):
        s.write_secret(d / f"{name}.enc", value, key)
    before = {p.name: p.read_text() for p in d.iterdir()}
    done = s.rekey(d, env)
    ring = s.load_key(env)
    assert done.count == 2 and done.old != done.new == ring.fingerprint
    assert [k.fingerprint for k in ring.retired] == [done.old]  # retired, not deleted
    assert [s.read_secret(d / f"{n}.enc", ring) for n in "ab"] == [b"1", b"2"]
    assert {s.key_of((d / f"{n}.enc").read_text()) for n in "ab"} == {done.new}
    assert sorted(p.name for p in d.iterdir()) == ["a.enc", "b.enc"]  # no journal, no temporary file left
    # one file that does not decrypt: nothing changes at all
    (d / "c.enc").write_text(before["a.enc"].replace("name: a", "name: c"))
    snapshot = {p.name: p.read_text() for p in d.iterdir()}
    key_before = Path(env[s.KEY_FILE_ENV]).read_text()
    with pytest.raises(InputError):
        s.rekey(d, env)
    assert {p.name: p.read_text() for p in d.iterdir()} == snapshot
    assert Path(env[s.KEY_FILE_ENV]).read_text() == key_before


def test_two_directories_sharing_a_key_rekey_in_one_the_other_still_decrypts(
    env: dict[str, str], tmp_path: Path
) -> None:
    ring = s.load_key(env)
    s.write_secret(tmp_path / "one" / "a.enc", b"first project", ring)
    s.write_secret(tmp_path / "two" / "b.enc", b"second project", ring)
    s.rekey(tmp_path / "one", env)
    after = s.load_key(env)
    assert s.read_secret(tmp_path / "two" / "b.enc", after) == b"second project"  # through the retired key
    assert s.list_secrets(tmp_path / "two", after)[0].key == ring.fingerprint != after.fingerprint
    s.rekey(tmp_path / "two", env)
    final = s.load_key(env)
    assert len(final.retired) == 2
    assert s.read_secret(tmp_path / "one" / "a.enc", final) == b"first project"
    assert s.read_secret(tmp_path / "two" / "b.enc", final) == b"second project"


def test_a_key_file_of_an_older_swarmctl_is_a_keyring(tmp_path: Path) -> None:
    raw = os.urandom(32)
    path = tmp_path / "old.key"
    path.write_text(base64.b64encode(raw).decode() + "\n")
    path.chmod(0o600)
    ring = s.load_key({s.KEY_FILE_ENV: str(path)})
    assert ring.current.raw == raw and ring.retired == ()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving the key file to another user needs root")
def test_a_key_file_someone_else_owns_is_refused(env: dict[str, str]) -> None:
    os.chown(env[s.KEY_FILE_ENV], 65534, 65534)
    with pytest.raises(InputError, match="belongs to uid 65534"):
        s.load_key(env)


def test_listing_names_what_is_not_a_secret_file(env: dict[str, str], tmp_path: Path) -> None:
    d = tmp_path / "secrets"
    s.write_secret(d / "good.enc", b"x", s.load_key(env))
    (d / "x.enc").mkdir()
    (d / "gone.enc").symlink_to(tmp_path / "nowhere")
    listed = {x.name: x for x in s.list_secrets(d, s.load_key(env))}
    assert listed["good"].size == 1 and not listed["good"].problem
    assert "directory" in listed["x"].problem and "dangling" in listed["gone"].problem


def test_names_and_labels_cannot_be_checked_against_a_guess(env: dict[str, str]) -> None:
    ring = s.load_key(env)
    name = s.versioned_name("st_db", b"hunter2", ring)
    plain = hashlib.sha256(b"hunter2").hexdigest()
    assert plain[:12] not in name and name == s.versioned_name("st_db", b"hunter2", ring)
    assert plain not in ring.content_label(b"hunter2") and ring.content_label(b"hunter2").startswith("hmac-sha256:")
    other = s.load_key({s.KEY_ENV: base64.b64encode(os.urandom(32)).decode()})
    assert s.versioned_name("st_db", b"hunter2", other) != name  # keyed: another key, another name


def test_encrypted_secret_in_a_stack_is_versioned_by_content(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    s.write_secret(tmp_path / "secrets" / "db_password.enc", b"first", s.load_key(env))
    (tmp_path / "plain.txt").write_text("plain")
    stack = tmp_path / "stack.yml"
    stack.write_text(
        "services:\n  app:\n    image: x\n    secrets: [db_password, plain]\n"
        "secrets:\n  db_password: {file: ./secrets/db_password.enc}\n  plain: {file: ./plain.txt}\n"
    )
    desired = convert_stack(load_stack("st", [stack], {}, {}), s.KeySource(env))
    versioned = s.versioned_name("st_db_password", b"first", s.load_key(env))
    assert set(desired.secrets) == {versioned, "st_plain"}
    obj = desired.secrets[versioned]
    assert obj.data == b"first" and obj.spec["Labels"][labels.SECRET] == "db_password"
    refs = desired.services["st_app"]["TaskTemplate"]["ContainerSpec"]["Secrets"]
    assert {r["SecretName"]: r["File"]["Name"] for r in refs} == {versioned: "db_password", "st_plain": "plain"}
    # without a key the deploy stops before anything happens
    with pytest.raises(InputError, match="secret db_password is encrypted"):
        convert_stack(load_stack("st", [stack], {}, {}), None)

    # new content: a new name; the old version is neither desired nor pruned, and goes once unused
    s.write_secret(tmp_path / "secrets" / "db_password.enc", b"second", s.load_key(env))
    newer = convert_stack(load_stack("st", [stack], {}, {}), s.KeySource(env))
    assert s.versioned_name("st_db_password", b"second", s.load_key(env)) in newer.secrets
    assert "b'first'" not in repr(desired) and "b'plain'" not in repr(desired)  # no secret data in a repr
    old = {"ID": "old", "Spec": {"Name": versioned, "Labels": obj.spec["Labels"]}, "Version": {"Index": 1}}
    current = StackObjects(secrets={versioned: old})
    plan = plan_stack(newer, current, prune=True)
    assert ("secret", versioned, "remove") not in {(c.kind, c.name, c.action) for c in plan.changes}
    using = {"ID": "s1", "Spec": {"Name": "st_app", "TaskTemplate": {"ContainerSpec": {"Secrets": [
        {"SecretName": versioned}]}}}}  # fmt: skip
    assert superseded_secrets(newer, StackObjects(secrets={versioned: old}, services={"st_app": using})) == []
    assert superseded_secrets(newer, current) == [versioned]


REKEY_STEPS = ["journal", "keyring", "file:0", "file:1", "file:2"]


@pytest.mark.parametrize("step", REKEY_STEPS)
def test_a_rekey_killed_at_any_step_is_finished_or_undone_by_the_next_command(
    env: dict[str, str], tmp_path: Path, step: str
) -> None:
    """SIGKILL injected right after each step (SWARMCTL_TEST_CRASH): the next command finds a
    consistent state - one current key for every file, no journal - and every secret decrypts."""
    d = tmp_path / "secrets"
    values = {f"s{i}": f"value {i}".encode() for i in range(3)}
    for name, value in values.items():
        s.write_secret(d / f"{name}.enc", value, s.load_key(env))
    old = s.load_key(env).fingerprint
    killed = swarmctl("secrets", "rekey", "--dir", str(d), env={**env, s.CRASH_ENV: step})
    assert killed.rc == -9, str(killed)  # it really died there
    after = swarmctl("secrets", "list", "--dir", str(d), "--json", env=env)
    assert after.rc == 0, str(after)
    listed = after.json()
    assert {x["name"]: (x["bytes"], x["problem"]) for x in listed["secrets"]} == {n: (7, "") for n in values}
    assert {x["key"] for x in listed["secrets"]} == {listed["key"]}  # all or nothing
    assert (listed["key"] == old) == (step == "journal")  # undone before the keyring, finished after
    assert not (d / s.JOURNAL).exists()
    ring = s.load_key(env)
    assert {n: s.read_secret(d / f"{n}.enc", ring) for n in values} == values


def test_s11_two_rekeys_at_once_on_directories_sharing_a_keyring_keep_both_new_keys(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two rekeys race through the step between reading the keyring and writing it: the crash-point
    hook holds each one there until the other arrives too (for at most 1.5 s, so that a rekey that
    waits for the keyring's lock instead does not wait for nothing). Without the lock both read the
    same ring and the last writer drops the other's new key."""
    ring = s.load_key(env)
    dirs = {"one": tmp_path / "one", "two": tmp_path / "two"}
    for name, d in dirs.items():
        for i in range(3):
            s.write_secret(d / f"{name}{i}.enc", f"{name} {i}".encode(), ring)
    both_read = threading.Barrier(2, timeout=1.5)

    def meet(step: str) -> None:
        if step == "journal":
            with contextlib.suppress(threading.BrokenBarrierError):
                both_read.wait()

    monkeypatch.setattr(s, "_crash_point", meet)
    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(lambda d: s.rekey(d, env), dirs.values()))
    final = s.load_key(env)
    assert {r.new for r in done} <= {k.fingerprint for k in (final.current, *final.retired)}
    assert len({r.new for r in done}) == 2 and len(final.retired) == 2
    for name, d in dirs.items():
        assert {p.name: s.read_secret(p, final) for p in d.glob("*.enc")} == {
            f"{name}{i}.enc": f"{name} {i}".encode() for i in range(3)
        }


def test_s11_a_rekey_that_cannot_have_the_keyring_lock_in_time_names_it_and_changes_nothing(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "secrets"
    s.write_secret(d / "a.enc", b"1", s.load_key(env))
    before = {p: p.read_bytes() for p in (Path(env[s.KEY_FILE_ENV]), d / "a.enc")}
    lock = Path(env[s.KEY_FILE_ENV] + ".lock")
    monkeypatch.setattr(s, "LOCK_TIMEOUT", 0.3)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another swarmctl's rekey, as far as this one can tell
        t0 = time.monotonic()
        with pytest.raises(TimeoutExpired, match=re.escape(str(lock))):
            s.rekey(d, env)
        assert time.monotonic() - t0 < 2
    finally:
        os.close(fd)
    assert {p: p.read_bytes() for p in before} == before and not (d / s.JOURNAL).exists()


def test_s11_rekey_keeps_the_mode_of_each_file(env: dict[str, str], tmp_path: Path) -> None:
    """The autolock unlock-key store is written 0600; a rekey that rewrote it 0644 would let every
    local user read the (encrypted) unlock key."""
    d = tmp_path / "secrets"
    ring = s.load_key(env)
    s.write_secret(d / "shared.enc", b"x", ring)
    s.write_secret(d / "swarm-unlock-key.enc", b"y", ring)
    (d / "swarm-unlock-key.enc").chmod(0o600)
    (d / "shared.enc").chmod(0o640)
    s.rekey(d, env)
    assert stat.S_IMODE((d / "swarm-unlock-key.enc").stat().st_mode) == 0o600
    assert stat.S_IMODE((d / "shared.enc").stat().st_mode) == 0o640
    s.write_secret(d / "swarm-unlock-key.enc", b"z", s.load_key(env))  # a new value, the same mode
    assert stat.S_IMODE((d / "swarm-unlock-key.enc").stat().st_mode) == 0o600


def test_s11_a_rekey_finished_after_a_crash_keeps_the_mode_of_each_file(env: dict[str, str], tmp_path: Path) -> None:
    d = tmp_path / "secrets"
    ring = s.load_key(env)
    for i in range(2):
        s.write_secret(d / f"k{i}.enc", b"v", ring)
        (d / f"k{i}.enc").chmod(0o600)
    killed = swarmctl("secrets", "rekey", "--dir", str(d), env={**env, s.CRASH_ENV: "keyring"})
    assert killed.rc == -9, str(killed)  # the new key is in the ring, no file was re-encrypted yet
    assert "finished an interrupted rekey" in s.recover(d, env)
    new = s.load_key(env).fingerprint
    for i in range(2):
        assert s.key_of((d / f"k{i}.enc").read_text()) == new
        assert stat.S_IMODE((d / f"k{i}.enc").stat().st_mode) == 0o600
