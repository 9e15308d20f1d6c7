"""Encrypted secrets through a real deploy: what containers read, rotation, and where plaintext is not."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets as random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Lab
from tests.helpers import Run, swarmctl, wait_for

STACK = """
services:
  reader:
    image: ${PROBE_IMAGE}
    command: [python3, -c, "import signal, time; signal.signal(signal.SIGTERM, lambda *a: exit(0)); time.sleep(1e9)"]
    secrets: [token]
    deploy:
      replicas: 2
      update_config: {parallelism: 1, delay: 1s, monitor: 2s}
secrets:
  token:
    file: ./secrets/token.enc
"""


class CmdlineWatch:
    """Samples every process's command line while a deploy runs, looking for a value."""

    def __init__(self, needle: bytes):
        self.needle = needle
        self.seen: list[str] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if self.needle in cmdline:
                    self.seen.append(cmdline.replace(b"\0", b" ").decode(errors="replace")[:200])
            self.samples += 1
            self._stop.wait(0.02)

    def __enter__(self) -> CmdlineWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def files_containing(root: Path, needle: bytes) -> list[str]:
    """Files under root holding the value; Docker's image layers (static, large) are skipped."""
    hits = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "overlay2"]
        for f in filenames:
            p = Path(dirpath) / f
            try:
                if p.is_symlink() or not p.is_file() or p.stat().st_size > 64 * 1024 * 1024:
                    continue
                if needle in p.read_bytes():
                    hits.append(str(p))
            except OSError:
                continue
    return hits


@pytest.fixture
def project(swarm: Lab, tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    (tmp_path / "stack.yml").write_text(STACK)
    env = {"SWARMCTL_SECRETS_KEY": base64.b64encode(os.urandom(32)).decode()}
    yield tmp_path, env
    swarmctl("rm", "sec", "-i", str(swarm.inventory))


def set_secret(project: Path, env: dict[str, str], value: bytes) -> None:
    run = swarmctl("secrets", "set", "token", cwd=project, env=env, input=value.decode())
    assert run.rc == 0, str(run)
    assert value.decode() not in run.stdout + run.stderr


def deploy(swarm: Lab, project: Path, env: dict[str, str], *extra: str) -> Run:
    return swarmctl(
        "deploy", "sec", "-f", "stack.yml", "-i", str(swarm.inventory), *extra, cwd=project, env=env, timeout=400
    )


def read_in_containers(swarm: Lab) -> set[bytes]:
    seen = set()
    for name in swarm.names:
        with swarm.docker(name) as api:
            for c in api.containers(filters={"label": "com.docker.swarm.service.name=sec_reader"}):
                ex = api.exec_create(c["Id"], ["cat", "/run/secrets/token"])
                seen.add(api.exec_start(ex["Id"]))
    return seen


def swarm_secrets(swarm: Lab) -> dict[str, dict[str, Any]]:
    with swarm.docker("lab1") as api:
        return {x["Spec"]["Name"]: x for x in api.secrets(filters={"label": "com.docker.stack.namespace=sec"})}


def test_encrypted_secret_deploy_rotate_and_no_plaintext_anywhere(
    swarm: Lab, project: tuple[Path, dict[str, str]]
) -> None:
    directory, env = project
    first = random.token_hex(16).encode()
    set_secret(directory, env, first)
    assert first not in (directory / "secrets" / "token.enc").read_bytes()

    with CmdlineWatch(first) as watch:
        run = deploy(swarm, directory, env)
    assert run.rc == 0, str(run)
    assert watch.samples > 10 and watch.seen == []
    assert first.decode() not in run.stdout + run.stderr
    assert read_in_containers(swarm) == {first}
    (v1,) = swarm_secrets(swarm)
    assert v1.startswith("sec_token_") and swarm_secrets(swarm)[v1]["Spec"]["Labels"]["io.swarmctl.secret"] == "token"
    # on disk: nowhere under the temp dirs (the lab hosts' swarm state included) and not in the project
    for root in {Path("/tmp"), directory}:
        assert files_containing(root, first) == []

    unchanged = deploy(swarm, directory, env, "--json")
    assert unchanged.rc == 0 and unchanged.json()["changes"] == [], str(unchanged)
    assert list(swarm_secrets(swarm)) == [v1]

    second = random.token_hex(16).encode()
    set_secret(directory, env, second)
    with CmdlineWatch(second) as watch:
        rotated = deploy(swarm, directory, env)
    assert rotated.rc == 0, str(rotated)
    assert watch.seen == [] and second.decode() not in rotated.stdout + rotated.stderr
    assert f"remove secret {v1} (superseded)" in rotated.stderr
    wait_for("containers to read the new value", lambda: read_in_containers(swarm), lambda s: s == {second})
    (v2,) = swarm_secrets(swarm)
    assert v2 != v1 and v2.startswith("sec_token_")


def test_bad_secret_files_change_nothing(swarm: Lab, project: tuple[Path, dict[str, str]]) -> None:
    directory, env = project
    set_secret(directory, env, b"original")
    assert deploy(swarm, directory, env).rc == 0
    before = {n: s["Version"]["Index"] for n, s in swarm_secrets(swarm).items()}
    with swarm.docker("lab1") as api:
        service_version = api.inspect_service("sec_reader")["Version"]["Index"]
    path = directory / "secrets" / "token.enc"
    good = path.read_text()

    def expect(run: Run, fragment: str) -> None:
        assert run.rc == 2, str(run)
        lines = [line for line in run.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and fragment in lines[0], str(run)

    other_key = {"SWARMCTL_SECRETS_KEY": base64.b64encode(os.urandom(32)).decode()}
    expect(deploy(swarm, directory, other_key), "which is neither the current key")
    lines = good.splitlines()
    data = bytearray(base64.b64decode(lines[4].split(": ", 1)[1]))
    data[-1] ^= 0x01  # one flipped bit in the tag
    lines[4] = "data: " + base64.b64encode(bytes(data)).decode()
    path.write_text("\n".join(lines) + "\n")
    expect(deploy(swarm, directory, env), "cannot decrypt: authentication failed")
    path.write_text(good[: len(good) // 2])
    expect(deploy(swarm, directory, env), "truncated")
    path.write_text(good.replace("swarmctl-secret v1", "swarmctl-secret v2"))
    expect(deploy(swarm, directory, env), "unknown secret file format 'v2'")
    path.write_text(good)
    expect(deploy(swarm, directory, {"SWARMCTL_SECRETS_KEY_FILE": str(directory / "no-such-key")}), "no secrets key")

    assert {n: s["Version"]["Index"] for n, s in swarm_secrets(swarm).items()} == before
    with swarm.docker("lab1") as api:
        assert api.inspect_service("sec_reader")["Version"]["Index"] == service_version


def test_no_name_or_label_lets_a_plaintext_be_checked(swarm: Lab, project: tuple[Path, dict[str, str]]) -> None:
    """A weak value, encrypted and plain: neither its unsalted sha256 nor any prefix of it appears in
    what `docker secret inspect` and `docker service inspect` show."""
    directory, env = project
    weak = b"hunter2"
    set_secret(directory, env, weak)
    (directory / "plain.txt").write_bytes(weak)
    stack = STACK.replace("secrets: [token]", "secrets: [token, plain]") + "  plain:\n    file: ./plain.txt\n"
    (directory / "stack.yml").write_text(stack)
    run = deploy(swarm, directory, env)
    assert run.rc == 0, str(run)
    digest = hashlib.sha256(weak).hexdigest()
    with swarm.docker("lab1") as api:
        shown = json.dumps([api.inspect_secret(x["ID"]) for x in swarm_secrets(swarm).values()])
        shown += json.dumps(api.inspect_service("sec_reader"))
    assert len(swarm_secrets(swarm)) == 2 and "hmac-sha256:" in shown
    assert digest[:12] not in shown and digest[:8] not in shown  # not even the start of it
    again = deploy(swarm, directory, env, "--json")
    assert again.rc == 0 and again.json()["changes"] == [], str(again)  # keyed, and still stable


def test_a_secret_named_by_an_older_swarmctl_moves_to_a_keyed_name_once(
    swarm: Lab, project: tuple[Path, dict[str, str]]
) -> None:
    directory, env = project
    value = random.token_hex(8).encode()
    set_secret(directory, env, value)
    # the stack as an older swarmctl left it: the secret named and labelled by the plain sha256
    legacy = f"sec_token_{hashlib.sha256(value).hexdigest()[:12]}"
    tags = {"com.docker.stack.namespace": "sec", "io.swarmctl.secret": "token",
            "io.swarmctl.digest": hashlib.sha256(value).hexdigest()}  # fmt: skip
    with swarm.docker("lab1") as api:
        sid = api.create_secret(legacy, value, labels=tags)["ID"]
    run = deploy(swarm, directory, env)  # creates the service on the keyed name, with a warning
    assert run.rc == 0, str(run)
    assert f"secret {legacy} was named by an unsalted hash" in run.stderr, str(run)
    names = list(swarm_secrets(swarm))
    assert legacy not in names and len(names) == 1 and names[0].startswith("sec_token_"), names
    with swarm.docker("lab1") as api:
        assert sid not in {x["ID"] for x in api.secrets()}  # the old one is gone (superseded)
    assert read_in_containers(swarm) == {value}
    again = deploy(swarm, directory, env, "--json")
    assert again.rc == 0 and again.json()["changes"] == [], str(again)
    # no word of the old name again (the lab's images, in no registry, get docker's unpinned warning)
    assert not [w for w in again.json()["warnings"] if "unsalted" in w or "secret" in w], str(again)
