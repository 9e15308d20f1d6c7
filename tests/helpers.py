"""Helpers shared by the test tiers: run the real CLI, poll with deadlines."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class Run:
    args: list[str]
    rc: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def __str__(self) -> str:
        return f"swarmctl {' '.join(self.args)} -> {self.rc}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def swarmctl(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    input: str | None = None,
    timeout: float = 600,
) -> Run:
    """Run the real command line in a subprocess, as a user would."""
    full_env = {k: v for k, v in os.environ.items() if k != "SWARMCTL_INVENTORY"}
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "swarmctl", *args],
        cwd=cwd,
        env=full_env,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Run(list(args), proc.returncode, proc.stdout, proc.stderr)


def wait_for(what: str, probe: Callable[[], T], ok: Callable[[T], bool], timeout: float = 60, every: float = 0.5) -> T:
    """Poll ``probe`` until ``ok(value)``; on timeout fail with the last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last seen: {value!r}")
        time.sleep(every)


def edit_node(api: Any, hostname: str, edit: Callable[[dict[str, Any]], None], attempts: int = 10) -> None:
    """A hand edit of the node ``hostname``'s spec through ``api`` (a docker.APIClient), as
    ``docker node update`` makes it: read, ``edit`` the spec, write at the version read. Read and
    written again when swarm moved the node's version in between ("update out of sequence": its
    status or description changed), which a node that joined a moment ago does."""
    for attempt in range(attempts):
        node = next(n for n in api.nodes() if n["Description"]["Hostname"] == hostname)
        spec = node["Spec"]
        edit(spec)
        try:
            api.update_node(node["ID"], node["Version"]["Index"], spec)
            return
        except Exception as e:  # docker.errors.APIError; tests.helpers does not import docker
            if "out of sequence" not in str(e) or attempt == attempts - 1:
                raise
            time.sleep(0.2)


def assert_no_traceback(run: Run) -> None:
    assert "Traceback" not in run.stderr and "Traceback" not in run.stdout, str(run)


@contextmanager
def running_lab(directory: Path, *up_args: str, timeout: float = 600) -> Iterator[Path]:
    """`swarmctl lab up UP_ARGS --dir DIRECTORY` for the block, then `lab down` and the directory
    removed (both kept with SWARMCTL_KEEP_LAB=1, to look at a failure)."""
    up = swarmctl("lab", "up", *up_args, "--dir", str(directory), timeout=timeout)
    assert up.rc == 0, str(up)
    try:
        yield directory
    finally:
        if os.environ.get("SWARMCTL_KEEP_LAB") != "1":
            down = swarmctl("lab", "down", "--dir", str(directory))
            assert down.rc == 0, str(down)
            shutil.rmtree(directory, ignore_errors=True)
