"""Shared pytest setup. End-to-end fixtures live in tests/e2e/conftest.py."""

from __future__ import annotations

import signal

import pytest


def pytest_configure() -> None:
    # A shell starts background jobs with SIGINT ignored, and an ignored signal stays ignored in
    # every child: the commands the tests interrupt with SIGINT (as a user's Ctrl-C) would never
    # see it. Give the test run, and so its children, the ordinary disposition.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


# Where the suite's wall time goes: each module's first start and last stop on its worker, printed
# at the end of the run. tests/e2e/conftest.py's ORDER is chosen from these lines.
_spans: dict[tuple[str, str], list[float]] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    worker = getattr(getattr(report, "node", None), "gateway", None)
    key = (worker.id if worker is not None else "main", report.nodeid.split("::")[0])
    span = _spans.setdefault(key, [report.start, report.stop])
    span[0], span[1] = min(span[0], report.start), max(span[1], report.stop)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _spans:
        return
    t0 = min(start for start, _ in _spans.values())
    terminalreporter.section("module timeline (seconds from the first test)")
    rows = sorted(_spans.items(), key=lambda kv: (kv[0][0], kv[1][0]))
    unit: dict[str, list[float]] = {}
    for (worker, module), (start, stop) in rows:
        if "/e2e/" not in module:
            span = unit.setdefault(worker, [start, stop])
            span[0], span[1] = min(span[0], start), max(span[1], stop)
            continue
        terminalreporter.write_line(f"{worker:>5} {start - t0:7.0f} {stop - t0:7.0f} {stop - start:6.0f}  {module}")
    for worker, (start, stop) in sorted(unit.items()):
        terminalreporter.write_line(f"{worker:>5} {start - t0:7.0f} {stop - t0:7.0f} {stop - start:6.0f}  (unit tier)")
