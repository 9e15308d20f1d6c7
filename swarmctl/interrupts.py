"""Steps that must not be left half done, whatever the user presses: Ctrl-C held off for their length.

Ctrl-C ends swarmctl within moments and leaves a known state - except in the few steps that bring
a host back from a state swarmctl put it in (an engine stopped for a backup is started again).
An interrupt there is told to the user ("still starting the engine of lab2: it is not left
stopped") and acted on once the step is done, instead of leaving the engine stopped.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType


@contextmanager
def finishing(what: str, tell: Callable[[str], None]) -> Iterator[None]:
    """Hold off SIGINT and SIGTERM while the block runs ``what`` (told to ``tell`` on each one);
    the interrupt is raised (KeyboardInterrupt) when the block ends, unless another exception ends it.

    Only the main thread receives signals: elsewhere the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pressed: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        pressed.append(signum)
        tell(f"interrupted: still {what}, so that it is not left half done")

    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if pressed:
        raise KeyboardInterrupt
