"""Files that never end (a link to /dev/zero) or never open (a FIFO nobody writes to), given where
swarmctl reads a user's file: refused as bad input naming the file, at once, never read forever or
waited on. Each read runs in a thread with a deadline, so that a regression fails instead of
hanging the test run."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench.images import tiny_archive
from swarmctl import secretstore as s
from swarmctl.compose.convert import convert_stack
from swarmctl.compose.loader import load_stack
from swarmctl.errors import InputError
from swarmctl.facts.images import read_archive
from swarmctl.files import read_regular
from swarmctl.ops.registry import docker_config_auths
from swarmctl.yamlfile import load_yaml
from tests.helpers import assert_no_traceback, swarmctl

KINDS = ["fifo", "dev-zero"]
WITHIN = 5.0  # seconds; each of these is refused in milliseconds


def make(path: Path, kind: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    return path


def outcome(read: Callable[[], Any]) -> dict[str, Any]:
    """What ``read`` returned ("value") or raised ("error"), within WITHIN seconds."""
    got: dict[str, Any] = {}

    def run() -> None:
        try:
            got["value"] = read()
        except BaseException as e:
            got["error"] = e

    t = threading.Thread(target=run, daemon=True)  # a read that never ends must not hold up the run
    t.start()
    t.join(WITHIN)
    assert not t.is_alive(), f"still reading after {WITHIN:g} s"
    return got


def refused(read: Callable[[], Any], path: Path) -> str:
    got = outcome(read)
    assert isinstance(got.get("error"), InputError), got
    message = str(got["error"])
    assert str(path) in message, message
    return message


@pytest.fixture
def key_env(tmp_path: Path) -> dict[str, str]:
    e = {s.KEY_FILE_ENV: str(tmp_path / "cfg" / "secrets.key")}
    s.create_key_file(e)
    return e


@pytest.mark.parametrize("kind", KINDS)
def test_s12_read_regular_refuses_what_is_not_a_regular_file(tmp_path: Path, kind: str) -> None:
    path = make(tmp_path / "special", kind)
    message = refused(lambda: read_regular(path, 1024), path)
    assert ("FIFO" if kind == "fifo" else "character device") in message and "not a regular file" in message
    (tmp_path / "dir").mkdir()
    assert "a directory, not a regular file" in refused(lambda: read_regular(tmp_path / "dir", 1024), tmp_path / "dir")
    assert "no such file" in refused(lambda: read_regular(tmp_path / "nowhere", 1024), tmp_path / "nowhere")


def test_s12_read_regular_refuses_a_file_larger_than_its_limit(tmp_path: Path) -> None:
    path = tmp_path / "ten"
    path.write_bytes(b"0123456789")
    assert read_regular(path, 10) == b"0123456789"
    assert "larger than 9 bytes: swarmctl reads notes of at most 9 bytes" in refused(
        lambda: read_regular(path, 9, "notes"), path
    )


@pytest.mark.parametrize("kind", KINDS)
def test_a_yaml_file_that_never_ends(tmp_path: Path, kind: str) -> None:
    path = make(tmp_path / "hosts.yml", kind)
    refused(lambda: load_yaml(path), path)


@pytest.mark.parametrize("kind", KINDS)
def test_a_dotenv_beside_the_stack_that_never_ends(tmp_path: Path, kind: str) -> None:
    stack = tmp_path / "stack.yml"
    stack.write_text("services:\n  app: {image: x}\n")
    dotenv = make(tmp_path / ".env", kind)
    refused(lambda: load_stack("st", [stack], {}), dotenv)


@pytest.mark.parametrize("kind", KINDS)
def test_an_env_file_that_never_ends(tmp_path: Path, kind: str) -> None:
    stack = tmp_path / "stack.yml"
    stack.write_text("services:\n  app: {image: x, env_file: ./app.env}\n")
    env_file = make(tmp_path / "app.env", kind)
    refused(lambda: load_stack("st", [stack], {}), env_file.resolve())  # named as the stack check resolved it


@pytest.mark.parametrize("section", ["secrets", "configs"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_secret_or_config_file_swapped_after_the_stack_check(
    tmp_path: Path, kind: str, section: str, key_env: dict[str, str]
) -> None:
    """The stack check refuses a `file:` that is not a regular file; the read itself refuses one put
    there afterwards (between `deploy`'s check and its read, the file is the user's)."""
    stack = tmp_path / "stack.yml"
    stack.write_text(f"services:\n  app: {{image: x, {section}: [one]}}\n{section}:\n  one: {{file: ./one.txt}}\n")
    (tmp_path / "one.txt").write_text("plain")
    config = load_stack("st", [stack], {})
    (tmp_path / "one.txt").unlink()
    make(tmp_path / "one.txt", kind)
    message = refused(lambda: convert_stack(config, s.KeySource(key_env)), stack)
    assert f"{section[:-1]} one: {tmp_path / 'one.txt'}: " in message and "not a regular file" in message


def test_a_plain_secret_file_larger_than_swarm_takes(tmp_path: Path, key_env: dict[str, str]) -> None:
    stack = tmp_path / "stack.yml"
    stack.write_text("services:\n  app: {image: x, secrets: [big]}\nsecrets:\n  big: {file: ./big.txt}\n")
    (tmp_path / "big.txt").write_bytes(b"x" * (s.MAX_SIZE + 1))
    message = refused(lambda: convert_stack(load_stack("st", [stack], {}), s.KeySource(key_env)), stack)
    assert f"larger than {s.MAX_SIZE} bytes, more than swarm takes" in message


@pytest.mark.parametrize("kind", KINDS)
def test_an_encrypted_secret_file_and_a_journal_that_never_end(
    tmp_path: Path, kind: str, key_env: dict[str, str]
) -> None:
    path = make(tmp_path / "secrets" / "token.enc", kind)
    refused(lambda: s.read_secret(path, s.load_key(key_env)), path)
    journal = make(tmp_path / "other" / s.JOURNAL, kind)
    refused(lambda: s.recover(journal.parent, key_env), journal)


@pytest.mark.parametrize("kind", KINDS)
def test_a_key_file_that_never_ends(tmp_path: Path, kind: str) -> None:
    path = make(tmp_path / "cfg" / "secrets.key", kind)
    refused(lambda: s.load_key({s.KEY_FILE_ENV: str(path)}), path)


@pytest.mark.parametrize("kind", KINDS)
def test_an_image_archive_that_never_ends(tmp_path: Path, kind: str) -> None:
    path = make(tmp_path / "app.tar", kind)
    refused(lambda: read_archive(path), path)
    assert outcome(lambda: read_archive(tiny_archive(tmp_path))).get("value") is not None  # a real one still reads


@pytest.mark.parametrize("kind", KINDS)
def test_a_docker_config_that_never_ends_gives_no_credentials(tmp_path: Path, kind: str) -> None:
    make(tmp_path / "config.json", kind)
    assert outcome(lambda: docker_config_auths({"DOCKER_CONFIG": str(tmp_path)})) == {"value": {}}


def one_line_exit_2(run_args: list[str], path: Path, env: dict[str, str] | None = None) -> str:
    t0 = time.monotonic()
    run = swarmctl(*run_args, env=env, timeout=30)
    assert run.rc == 2, str(run)
    assert_no_traceback(run)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}"), str(run)
    assert time.monotonic() - t0 < 10, str(run)
    return lines[0]


def test_deploy_of_a_stack_file_that_is_a_fifo(tmp_path: Path) -> None:
    (tmp_path / "hosts.yml").write_text("hosts:\n  m1: {address: 127.0.0.1, role: manager}\n")
    stack = make(tmp_path / "stack.yml", "fifo")
    line = one_line_exit_2(["deploy", "st", "-f", str(stack), "--plan", "-i", str(tmp_path / "hosts.yml")], stack)
    assert "a FIFO (named pipe), not a regular file" in line


def test_secrets_set_from_a_fifo(tmp_path: Path, key_env: dict[str, str]) -> None:
    fifo = make(tmp_path / "value", "fifo")
    line = one_line_exit_2(
        ["secrets", "set", "token", "--from-file", str(fifo), "--dir", str(tmp_path / "secrets")], fifo, key_env
    )
    assert "not a regular file" in line and not (tmp_path / "secrets" / "token.enc").exists()
