"""Every benchmark still starts: its module imports against the current code and parses --help.

The test command runs only the quick benchmarks in smoke mode (time budget); mypy checks every
benchmark against the code, and this catches what mypy cannot (imports at run time, argparse)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import BENCHMARKS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_starts(name: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout and "--smoke" in proc.stdout
