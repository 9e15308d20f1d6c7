"""The exception tree and exit statuses shared by every part of swarmctl.

Core code raises these; only the CLI turns them into one red line and an exit status.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import IntEnum
from pathlib import Path


class ExitStatus(IntEnum):
    OK = 0
    FAILURE = 1  # the operation ran and did not succeed (a host failed, a deploy rolled back, ...)
    USAGE = 2  # bad input: command line, inventory, stack file; nothing was changed
    INTERNAL = 70  # a bug in swarmctl (EX_SOFTWARE)
    INTERRUPTED = 130


class SwarmctlError(Exception):
    """Root of every error swarmctl expects and reports as one line."""

    exit_status: ExitStatus = ExitStatus.FAILURE


MAX_SHOWN = 80  # the longest quoted value an error message repeats back
_QUOTED = re.compile(r"""(['"])([^'"\n]{""" + str(MAX_SHOWN + 1) + r""",})\1""")


def clip_values(message: str) -> str:
    """Quoted values in a message, cut to MAX_SHOWN characters: a hostile or mistaken input of
    megabytes is named, not repeated."""
    return _QUOTED.sub(lambda m: f"{m.group(1)}{m.group(2)[: MAX_SHOWN - 3]}...{m.group(1)}", message)


class InputError(SwarmctlError):
    """Bad input, found before anything was changed. Renders as ``FILE:LINE: message``."""

    exit_status = ExitStatus.USAGE

    def __init__(self, message: str, file: str | Path | None = None, line: int | None = None):
        self.message = clip_values(message)
        self.file = str(file) if file is not None else None
        self.line = line
        super().__init__(self._render())

    def _render(self) -> str:
        if self.file is None:
            return self.message
        if self.line is None:
            return f"{self.file}: {self.message}"
        return f"{self.file}:{self.line}: {self.message}"


class PrerequisiteError(SwarmctlError):
    """This machine lacks something swarmctl needs (root, a package, a kernel feature)."""

    exit_status = ExitStatus.USAGE


class HostError(SwarmctlError):
    """Something failed on one host; the message names the host and the action."""

    def __init__(self, host: str, message: str):
        self.host = host
        self.message = message
        super().__init__(f"{host}: {message}")


class SSHError(HostError):
    """Could not connect or authenticate to a host."""


class HostKeyError(SSHError):
    """The host key is unknown (policy reject) or, worse, changed."""


class SocketRefused(SSHError):
    """The host's SSH server would not open a channel to a Unix socket of the host: its forwarding
    is off, the socket is absent or not the user's, or the server is not OpenSSH. OpenSSH gives
    every one of these the same answer ("open failed")."""


class EngineError(HostError):
    """The Docker Engine on a host refused or failed a request.

    Callers branch on the subclass (what happened), never on the message (how the engine put it).
    """


class NotFound(EngineError):
    """The object asked for does not exist (HTTP 404)."""


class ImageNotFound(NotFound):
    """The image is not on the host (and could not be pulled)."""


class Unauthorized(EngineError):
    """The engine (or the registry behind it) refused the credentials (HTTP 401)."""


class Conflict(EngineError):
    """The request conflicts with the object's state: a name in use, an outdated version (HTTP 409)."""


class Unavailable(EngineError):
    """The engine answered that it cannot serve this now: not a swarm manager, no quorum (HTTP 503)."""


class Busy(EngineError):
    """The manager answered that it ran out of time serving this (swarmkit's "rpc error: code =
    DeadlineExceeded", HTTP 500): its store is slow under load. Worth asking again; not proof of a
    lost quorum."""


class Unreachable(EngineError):
    """The engine did not answer: the SSH channel to its socket (or `docker system dial-stdio`) broke or timed out."""


def message_of(e: BaseException) -> str:
    """What went wrong, for a message that names the host apart: a HostError's own message, else the error's text."""
    return e.message if isinstance(e, HostError) else str(e)


class HostsFailed(SwarmctlError):
    """One aggregate error naming every host that failed and why."""

    def __init__(self, action: str, failures: Mapping[str, BaseException | str]):
        self.action = action
        self.failures = dict(failures)
        parts = []
        for host in sorted(self.failures):
            err = self.failures[host]
            text = err.message if isinstance(err, HostError) and err.host == host else str(err)
            parts.append(f"{host} ({text})")
        noun = "host" if len(parts) == 1 else "hosts"
        super().__init__(f"{action} failed on {len(parts)} {noun}: " + "; ".join(parts))


class ClusterError(SwarmctlError):
    """The swarm as a whole is not in a state the command can work with."""


class RegistryError(SwarmctlError):
    """A registry refused a login or an image lookup; raised before anything was changed."""


class Refused(ClusterError):
    """A safety rule stopped the operation before it changed anything; the message says what to do instead."""


class Interrupted(SwarmctlError):
    """Ctrl-C or SIGTERM after an operation changed something; the message says what it had done."""

    exit_status = ExitStatus.INTERRUPTED


class TimeoutExpired(SwarmctlError):
    """A wait with a deadline ran out; the message says what was seen last."""
