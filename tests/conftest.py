"""Shared pytest setup. End-to-end fixtures live in tests/e2e/conftest.py."""

from __future__ import annotations

import signal


def pytest_configure() -> None:
    # A shell starts background jobs with SIGINT ignored, and an ignored signal stays ignored in
    # every child: the commands the tests interrupt with SIGINT (as a user's Ctrl-C) would never
    # see it. Give the test run, and so its children, the ordinary disposition.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
