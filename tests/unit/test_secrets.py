"""Secrets at rest: AES-256-GCM files bound to their name and key; the key file's permissions."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from swarmctl import labels
from swarmctl import secrets as s
from swarmctl.compose.convert import convert_stack
from swarmctl.compose.loader import load_stack
from swarmctl.errors import InputError
from swarmctl.facts.stack import StackObjects
from swarmctl.ops.deploy import plan_stack, superseded_secrets


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
    assert len(base64.b64decode(path.read_text())) == 32
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
    assert key.raw == raw and key.source == s.KEY_ENV
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
    with pytest.raises(InputError, match=r"encrypted with key .* but the key in use"):
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
    old, new, count = s.rekey(d, env)
    assert count == 2 and old.fingerprint != new.fingerprint
    assert s.load_key(env).fingerprint == new.fingerprint
    assert [s.read_secret(d / f"{n}.enc", new) for n in "ab"] == [b"1", b"2"]
    assert sorted(p.name for p in d.iterdir()) == ["a.enc", "b.enc"]  # nothing left over
    # one file that does not decrypt: nothing changes at all
    (d / "c.enc").write_text(before["a.enc"])
    snapshot = {p.name: p.read_text() for p in d.iterdir()}
    key_before = Path(env[s.KEY_FILE_ENV]).read_text()
    with pytest.raises(InputError):
        s.rekey(d, env)
    assert {p.name: p.read_text() for p in d.iterdir()} == snapshot
    assert Path(env[s.KEY_FILE_ENV]).read_text() == key_before


def test_encrypted_secret_in_a_stack_is_versioned_by_content(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    s.write_secret(tmp_path / "secrets" / "db_password.enc", b"first", s.load_key(env))
    (tmp_path / "plain.txt").write_text("plain")
    stack = tmp_path / "stack.yml"
    stack.write_text(
        "services:\n  app:\n    image: x\n    secrets: [db_password, plain]\n"
        "secrets:\n  db_password: {file: ./secrets/db_password.enc}\n  plain: {file: ./plain.txt}\n"
    )
    desired = convert_stack(load_stack("st", [stack], {}, {}), secrets_key=lambda: s.load_key(env))
    versioned = s.versioned_name("st_db_password", b"first")
    assert set(desired.secrets) == {versioned, "st_plain"}
    obj = desired.secrets[versioned]
    assert obj.data == b"first" and obj.spec["Labels"][labels.SECRET] == "db_password"
    refs = desired.services["st_app"]["TaskTemplate"]["ContainerSpec"]["Secrets"]
    assert {r["SecretName"]: r["File"]["Name"] for r in refs} == {versioned: "db_password", "st_plain": "plain"}
    # without a key the deploy stops before anything happens
    with pytest.raises(InputError, match="secret db_password is encrypted"):
        convert_stack(load_stack("st", [stack], {}, {}), secrets_key=None)

    # new content: a new name; the old version is neither desired nor pruned, and goes once unused
    s.write_secret(tmp_path / "secrets" / "db_password.enc", b"second", s.load_key(env))
    newer = convert_stack(load_stack("st", [stack], {}, {}), secrets_key=lambda: s.load_key(env))
    assert s.versioned_name("st_db_password", b"second") in newer.secrets
    old = {"ID": "old", "Spec": {"Name": versioned, "Labels": obj.spec["Labels"]}, "Version": {"Index": 1}}
    current = StackObjects(secrets={versioned: old})
    plan = plan_stack(newer, current, prune=True)
    assert ("secret", versioned, "remove") not in {(c.kind, c.name, c.action) for c in plan.changes}
    using = {"ID": "s1", "Spec": {"Name": "st_app", "TaskTemplate": {"ContainerSpec": {"Secrets": [
        {"SecretName": versioned}]}}}}  # fmt: skip
    assert superseded_secrets(newer, StackObjects(secrets={versioned: old}, services={"st_app": using})) == []
    assert superseded_secrets(newer, current) == [versioned]
