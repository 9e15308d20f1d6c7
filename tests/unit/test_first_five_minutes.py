"""The defects a new user met in the first five minutes (issue 25), each as a test: the real command
line against an inventory whose host does not answer (a port on 127.0.0.1 nothing listens on),
stack files with a mistake in them, and the secrets commands."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from swarmctl.cli import render
from swarmctl.errors import NotFound
from swarmctl.ops.registry import Credentials, resolve_image
from tests.unit.fakeengine import FakeEngine

KEY = {"SWARMCTL_SECRETS_KEY": base64.b64encode(b"s" * 32).decode()}


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None, stdin: str = "") -> subprocess.CompletedProcess[str]:
    base = {"PATH": "/usr/bin:/bin", "HOME": str(cwd)}
    return subprocess.run([sys.executable, "-m", "swarmctl", *args], capture_output=True, text=True, cwd=cwd,
                          env={**base, **(env or {})}, input=stdin, timeout=120)  # fmt: skip


def unreachable(tmp_path: Path, managers: int = 1) -> Path:
    hosts = "".join(f"  m{i}: {{address: 127.0.0.{i}, role: manager}}\n" for i in range(1, managers + 1))
    path = tmp_path / "hosts.yml"
    path.write_text(f"ssh: {{known_hosts: ./known_hosts, port: 1, connect_timeout: 2}}\nhosts:\n{hosts}")
    return path


def test_bootstrap_plan_with_every_host_unreachable_does_not_say_nothing_to_do(tmp_path: Path) -> None:
    run = cli("bootstrap", str(unreachable(tmp_path)), "--plan", cwd=tmp_path)
    assert run.returncode == 1 and "nothing to do" not in run.stdout + run.stderr
    assert "m1" in run.stderr


def test_an_unreachable_manager_is_not_told_to_bootstrap_first(tmp_path: Path) -> None:
    run = cli("status", "-i", str(unreachable(tmp_path)), cwd=tmp_path)
    assert run.returncode == 1 and "Connection refused" in run.stderr, run.stderr
    assert "bootstrap` first" not in run.stderr and "bring the managers that did not answer back" in run.stderr


def test_images_ls_with_a_host_unreachable_exits_1_naming_it(tmp_path: Path) -> None:
    run = cli("images", "ls", "kafka", "-i", str(unreachable(tmp_path)), cwd=tmp_path)
    assert run.returncode == 1 and "images ls failed on 1 host: m1" in run.stderr


def test_two_different_inventories_are_refused(tmp_path: Path) -> None:
    a = unreachable(tmp_path)
    b = tmp_path / "b.yml"
    b.write_text(a.read_text())
    run = cli("bootstrap", str(a), "-i", str(b), "--plan", cwd=tmp_path)
    assert run.returncode == 2 and "two inventories given" in run.stderr
    same = cli("bootstrap", str(a), "-i", str(a), "--plan", cwd=tmp_path)
    assert "two inventories" not in same.stderr


def test_an_even_number_of_managers_warns_once(tmp_path: Path) -> None:
    run = cli("bootstrap", str(unreachable(tmp_path, managers=2)), "--plan", cwd=tmp_path)
    assert run.stderr.count("2 managers: raft needs a majority") == 1, run.stderr


def stack(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "s.yml").write_text(text)
    return cli("deploy", "s", "-f", str(tmp_path / "s.yml"), "-i", str(unreachable(tmp_path)), "--plan",
               cwd=tmp_path)  # fmt: skip


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "services:\n  web:\n    image: nginx:${TAG}\n",
            "s.yml:3: services.web.image: 'nginx:' has an empty tag or digest; a variable in it may be unset",
        ),
        (
            "services:\n  web:\n    image: nginx\n    extends: {service: base}\n",
            "s.yml:4: services.web: 'extends' is not supported: swarm stacks have no `extends`",
        ),
        (
            "name: shop\nservices:\n  web:\n    image: nginx\n",
            "s.yml:1: the stack file: `name:` is not read: the stack's name is the one given to deploy",
        ),
        (
            "services:\n  web:\n\timage: nginx\n",
            "s.yml:3: invalid YAML: found character '\\t' that cannot start any "
            "token: YAML indents with spaces, never tabs",
        ),
    ],
)
def test_stack_file_mistakes_are_one_line_with_file_line_and_a_hint(tmp_path: Path, text: str, expected: str) -> None:
    run = stack(tmp_path, text)
    assert run.returncode == 2 and expected in run.stderr and run.stderr.count("\n") == 1, run.stderr
    assert "is not supported: `extends` is not supported" not in run.stderr  # said once, not twice


def test_a_memory_limit_without_a_unit_is_named_as_bytes(tmp_path: Path) -> None:
    run = stack(tmp_path, "services:\n  web:\n    image: nginx\n    deploy:\n      resources:\n"
                          "        limits: {memory: 512}\n")  # fmt: skip
    assert "s.yml:6: services.web.deploy.resources.limits.memory: 512 is 512 bytes" in run.stderr
    assert "did you mean 512M?" in run.stderr


def test_update_help_does_not_offer_files_and_examples_keep_their_lines(tmp_path: Path) -> None:
    update = cli("update", "--help", cwd=tmp_path).stdout
    assert "Without files" not in update and "-f" not in update.split("Options:")[1].split()
    host_keys = cli("host-keys", "--help", cwd=tmp_path).stdout
    assert "\n  Example: swarmctl host-keys\n" in host_keys  # as written, not re-wrapped


@pytest.mark.parametrize(("env", "tty", "expected"), [({}, True, True), ({"NO_COLOR": "1"}, True, False),
                                                     ({"TERM": "dumb"}, True, False), ({}, False, False)])  # fmt: skip
def test_colours_only_on_a_terminal_without_no_color_or_a_dumb_term(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], tty: bool, expected: bool
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty)
    assert render.colors() is expected


def test_secrets_show_of_a_missing_name_says_so_even_into_a_pipe(tmp_path: Path) -> None:
    run = cli("secrets", "show", "nope", "--dir", str(tmp_path / "secrets"), cwd=tmp_path, env=KEY)
    assert run.returncode == 2 and "no secret 'nope'" in run.stderr and "pipe" not in run.stderr


def test_secrets_list_names_a_file_it_cannot_decrypt_and_exits_1(tmp_path: Path) -> None:
    d = tmp_path / "secrets"
    assert cli("secrets", "set", "good", "--dir", str(d), cwd=tmp_path, env=KEY, stdin="v").returncode == 0
    other = {"SWARMCTL_SECRETS_KEY": base64.b64encode(b"o" * 32).decode()}
    assert cli("secrets", "set", "foreign", "--dir", str(d), cwd=tmp_path, env=other, stdin="v").returncode == 0
    run = cli("secrets", "list", "--dir", str(d), cwd=tmp_path, env=KEY)
    assert run.returncode == 1 and "foreign" in run.stdout and "good" in run.stdout
    assert "foreign.enc" in run.stderr


def test_secrets_set_from_a_file_says_it_kept_the_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "pw.txt").write_text("hunter2\n")
    run = cli("secrets", "set", "pw", "--from-file", str(tmp_path / "pw.txt"), "--dir", str(tmp_path / "s"),
              cwd=tmp_path, env=KEY)  # fmt: skip
    assert run.returncode == 0 and "ends with the newline" in run.stderr and "hunter2" not in run.stderr


class _Local(FakeEngine):
    """A manager that has the image from `docker load` (no repo digest) and no registry to ask."""

    asked: list[str]

    def inspect_image(self, ref: str) -> dict[str, Any]:
        if ref != "swarmctl-lab/probe:py3":
            raise NotFound(self.name, f"inspect image {ref}: no such image")
        return {"Id": "sha256:" + "a" * 64, "RepoTags": [ref], "RepoDigests": []}

    def distribution(self, image: str, registry_auth: str | None = None) -> dict[str, Any]:
        self.asked.append(image)
        raise NotFound(self.name, f"look up {image} on its registry: network is unreachable")


def test_an_image_loaded_here_is_not_looked_up_on_a_registry_nor_warned_about() -> None:
    engine = _Local()
    engine.asked = []
    local = resolve_image(engine, "swarmctl-lab/probe:py3", Credentials())
    assert local.image == "swarmctl-lab/probe:py3" and not local.warning and engine.asked == []
    remote = resolve_image(engine, "quay.io/debezium/kafka:3.1", Credentials())
    assert "could not be accessed on a registry" in remote.warning and engine.asked == ["quay.io/debezium/kafka:3.1"]


def test_every_option_in_help_is_in_the_readme() -> None:
    """What --help offers, the README documents: each command's heading, and each of its options."""
    import click

    from swarmctl.cli import cli as root

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = []

    def walk(command: click.Command, path: list[str]) -> None:
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(sub, [*path, name])
            return
        if f"swarmctl {' '.join(path)}" not in readme and f"`{path[-1]}" not in readme:
            missing.append(" ".join(path))
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("--") and opt not in ("--help",) and opt not in readme:
                    missing.append(f"{' '.join(path)} {opt}")

    walk(root, [])
    for opt in ("--version", "-vv"):
        if opt not in readme:
            missing.append(opt)
    assert missing == []
