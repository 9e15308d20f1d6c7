"""Hostile YAML is bad input: bombs and absurd values give one line `FILE:LINE: message` and exit 2
within 2 s, and nothing is contacted. The command line runs in this process (``cli.main``, as the
``swarmctl`` script calls it), to keep the unit tier fast; one case goes through a real process."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from swarmctl.cli import main
from tests.helpers import Run, assert_no_traceback, swarmctl

LAUGHS = "\n".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *[f"{n}: &{n} [{','.join(['*' + p] * 9)}]" for p, n in zip("abcdefgh", "bcdefghi", strict=True)],
        "hosts: *i",
    ]
)
MERGES = "\n".join(
    [
        "x0: &x0 {k0: 0, k1: 1, k2: 2, k3: 3}",
        *[f"x{i}: &x{i} {{<<: [*x{i - 1}], a: *x{i - 1}, b: *x{i - 1}, c: *x{i - 1}}}" for i in range(1, 18)],
        "hosts: *x17",
    ]
)
BOMBS = {
    "billion-laughs": (LAUGHS, "expand to more than"),
    "merge-keys": (MERGES, "expand to more than"),
    "nested-brackets": ("hosts: " + "[" * 5000 + "]" * 5000 + "\n", "nested more than 64 levels deep"),
    "huge": ("hosts:\n" + "# padding\n" * 120_000, "swarmctl reads YAML files of at most"),
}


def one_line_error(run: Run, file: Path, within: float, seconds: float) -> str:
    assert run.rc == 2, str(run)
    assert_no_traceback(run)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {file}"), str(run)
    assert seconds < within, f"took {seconds:.1f}s"
    assert len(lines[0]) < 400
    return lines[0]


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> Run:
    rc = main(list(args))
    out = capsys.readouterr()
    return Run(list(args), rc, out.out, out.err)


def test_a_bomb_through_a_real_process(tmp_path: Path) -> None:
    inv = tmp_path / "hosts.yml"
    inv.write_text(LAUGHS)
    t0 = time.monotonic()
    run = swarmctl("bootstrap", str(inv), "--plan")
    assert "expand to more than" in one_line_error(run, inv, 2.0 + 1.0, time.monotonic() - t0)  # +1 s start-up


@pytest.mark.parametrize("case", sorted(BOMBS))
def test_inventory_bombs_are_refused_quickly(tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    text, expected = BOMBS[case]
    inv = tmp_path / "hosts.yml"
    inv.write_text(text)
    assert len(text.encode()) < 1100 or case in ("huge", "nested-brackets")  # the expansion bombs are small
    t0 = time.monotonic()
    run = run_cli(capsys, "bootstrap", str(inv), "--plan")
    assert expected in one_line_error(run, inv, 2.0, time.monotonic() - t0)


@pytest.mark.parametrize("case", ["billion-laughs", "merge-keys", "nested-brackets"])
def test_stack_file_bombs_are_refused_quickly(tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    text, expected = BOMBS[case]
    (tmp_path / "hosts.yml").write_text("hosts:\n  m1: {address: 127.0.0.1, role: manager}\n")
    stack = tmp_path / "stack.yml"
    stack.write_text(text.replace("hosts:", "services:"))
    t0 = time.monotonic()
    run = run_cli(capsys, "deploy", "st", "-f", str(stack), "--plan", "-i", str(tmp_path / "hosts.yml"))
    assert expected in one_line_error(run, stack, 2.0, time.monotonic() - t0)


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "0", "1e9"])
def test_timeouts_must_be_finite_positive_seconds(
    tmp_path: Path, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    inv = tmp_path / "hosts.yml"
    inv.write_text(f"ssh: {{connect_timeout: {value}}}\nhosts:\n  m1: {{address: 127.0.0.1, role: manager}}\n")
    t0 = time.monotonic()
    run = run_cli(capsys, "status", "-i", str(inv))
    line = one_line_error(run, inv, 2.0, time.monotonic() - t0)
    assert ":1: ssh: connect_timeout must be a number of seconds above 0 and at most 600" in line


def test_a_long_value_is_named_not_repeated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv = tmp_path / "hosts.yml"
    inv.write_text("hosts:\n  m1: {address: 127.0.0.1, role: " + "x" * 5000 + "}\n")
    run = run_cli(capsys, "status", "-i", str(inv))
    line = one_line_error(run, inv, 5.0, 0)
    assert "role must be one of" in line and "x" * 100 not in line
