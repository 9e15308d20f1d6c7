"""swarmctl.wait.until, the one way swarmctl waits: a fake clock, so the deadline, the backoff and
what the timeout says are exact."""

from __future__ import annotations

import pytest

from swarmctl.errors import HostError, TimeoutExpired
from swarmctl.wait import Pending, seen_within, until


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 3))
        self.now += seconds


def test_a_result_ends_the_wait_at_once() -> None:
    clock = Clock()
    assert until("x", lambda: 42, 10, clock=clock, sleep=clock.sleep) == 42
    assert clock.slept == []


def test_pending_is_asked_again_backing_off_to_the_cap_and_the_timeout_says_what_was_seen() -> None:
    clock = Clock()
    asked = []

    def check() -> int | Pending:
        asked.append(clock.now)
        return Pending(f"look {len(asked)}")

    with pytest.raises(TimeoutExpired, match=r"timed out after 10s waiting for lab2 \(last seen: look \d+\)"):
        until("lab2", check, 10, first=0.25, cap=2.0, clock=clock, sleep=clock.sleep)
    assert clock.slept[:5] == [0.25, 0.5, 1.0, 2.0, 2.0]
    assert clock.now == pytest.approx(10)  # never past the deadline


def test_something_moving_is_looked_at_again_soon() -> None:
    clock = Clock()
    answers = iter([Pending("a"), Pending("a"), Pending("b", moving=True), "done"])
    assert until("x", lambda: next(answers), 10, first=0.25, cap=2, clock=clock, sleep=clock.sleep) == "done"
    assert clock.slept == [0.25, 0.5, 0.25]


def test_errors_to_retry_are_what_was_seen_and_get_a_moment_others_end_the_wait() -> None:
    clock = Clock()
    errors = iter([HostError("lab1", "no leader"), HostError("lab1", "no leader")])

    def check() -> str:
        err = next(errors, None)
        if err is not None:
            raise err
        return "ok"

    assert until("x", check, 10, first=0.1, clock=clock, sleep=clock.sleep) == "ok"
    assert clock.slept == [1.0, 2.0]  # an engine that could not answer is not asked again at once
    with pytest.raises(HostError):
        until("x", lambda: (_ for _ in ()).throw(HostError("h", "refused")), 10, retry=(), clock=clock,
              sleep=clock.sleep)  # fmt: skip


def test_a_caller_names_its_own_timeout() -> None:
    clock = Clock()
    with pytest.raises(HostError, match="lab3: not back: swarm state locked"):
        until("x", lambda: Pending("swarm state locked"), 1, clock=clock, sleep=clock.sleep,
              error=lambda seen: HostError("lab3", f"not back: {seen}"))  # fmt: skip


def test_on_wait_is_told_each_change_once() -> None:
    clock = Clock()
    told: list[str] = []
    answers = iter([Pending("a"), Pending("a"), Pending("b"), 1])
    until("x", lambda: next(answers), 10, on_wait=told.append, clock=clock, sleep=clock.sleep)
    assert told == ["a", "b"]


def test_seen_within_a_window_holds_if_it_held_once() -> None:
    clock = Clock()
    answers = iter([False, False, True])
    assert seen_within(lambda: next(answers), 5, clock=clock, sleep=clock.sleep)
    clock = Clock()
    assert not seen_within(lambda: False, 5, clock=clock, sleep=clock.sleep)
    assert clock.now == pytest.approx(5)
