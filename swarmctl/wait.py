"""The one way swarmctl waits: poll with a deadline and backoff, keep what was seen last, say it on timeout.

A wait written by hand forgets one of these sooner or later (a deadline, the last thing seen for
the error, a poll that hammers a loaded manager). ``until`` does all of them::

    def ready() -> Node | Pending:
        node = read_node(engine, node_id)
        return node if node.ready else Pending(f"node {node.state}")

    node = until("lab2 to be ready", ready, timeout=120)

The check returns its result when done, or a :class:`Pending` saying what it saw. Errors in
``retry`` (by default every HostError: an engine restarting, a manager between leaders) are what
was seen, and the check is asked again. Ctrl-C interrupts the sleep at once (KeyboardInterrupt
propagates): a wait never outlives the user's patience.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from swarmctl.errors import HostError, TimeoutExpired, message_of

T = TypeVar("T")

FIRST = 0.25  # seconds before the second look: most waits end within a second or two
CAP = 2.0  # the longest pause between looks: a loaded manager is asked at most every 2 s
ERROR_PAUSE = 1.0  # at least this long after an answer that was an error (no leader, a store timing out)


@dataclass(frozen=True)
class Pending:
    """Not yet; ``seen`` says what the check saw (it ends the timeout's message). ``moving``:
    something changed since the last look - look again soon rather than backing off."""

    seen: str
    moving: bool = False


def until(
    what: str,
    check: Callable[[], T | Pending],
    timeout: float,
    *,
    first: float = FIRST,
    cap: float = CAP,
    retry: tuple[type[BaseException], ...] = (HostError,),
    error: Callable[[str], BaseException] | None = None,
    on_wait: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Ask ``check`` until it returns a result (anything but a Pending), for at most ``timeout`` seconds.

    Args:
        what: the thing waited for, as the timeout's message names it ("lab2 to be back").
        first, cap: the pause after the first look, doubled after each look up to ``cap``.
        retry: errors that mean "not yet" rather than "failed"; their text is what was seen.
        error: builds the exception raised on timeout from what was seen last (default: a
            TimeoutExpired "timed out after Ns waiting for WHAT (last seen: SEEN)").
        on_wait: told what was seen each time it changes (progress for the user).

    Raises:
        TimeoutExpired, or ``error``'s exception.
    """
    deadline = clock() + timeout
    pause = first
    seen = "nothing yet"
    told = ""
    while True:
        failed = False
        try:
            result = check()
        except retry as e:
            result = Pending(message_of(e))
            failed = True
        if not isinstance(result, Pending):
            return result
        seen = result.seen or seen
        if on_wait is not None and seen != told:
            on_wait(seen)
            told = seen
        left = deadline - clock()
        if left <= 0:
            if error is not None:
                raise error(seen)
            raise TimeoutExpired(f"timed out after {timeout:g}s waiting for {what} (last seen: {seen})")
        pause = first if result.moving else pause
        if failed:  # an engine that could not answer is given a moment (up to ERROR_PAUSE) before the next ask
            pause = max(pause, min(ERROR_PAUSE, cap))
        sleep(min(pause, left))
        pause = min(pause * 2, cap)


def seen_within(
    check: Callable[[], bool],
    window: float,
    *,
    first: float = FIRST,
    cap: float = CAP,
    retry: tuple[type[BaseException], ...] = (HostError,),
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Whether ``check`` held at least once over ``window`` seconds (asked until it does). One
    sample says little where the answer flickers: a swarm between leaders has no quorum for a moment."""

    def held() -> bool | Pending:
        return True if check() else Pending("no")

    try:
        return until("", held, window, first=first, cap=cap, retry=retry, clock=clock, sleep=sleep)
    except TimeoutExpired:
        return False
