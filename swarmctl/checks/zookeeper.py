"""ZooKeeper: each member answers ``srvr``; an ensemble has one leader and the rest followers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from swarmctl.checks import Verdict

SERVING = ("leader", "follower", "standalone")
DEFAULT_PORT = 2181


def member_mode(result: Mapping[str, Any], name: str, port: int) -> str:
    """What a probe saw of one member: its mode (``Mode:`` of ``srvr``), else the error."""
    answer = (result.get("zookeeper") or {}).get(f"{name}:{port}", {})
    return str(answer.get("mode") or answer.get("error", "no answer"))


def judge_member(mode: str) -> Verdict:
    return Verdict(mode in SERVING, "leader, follower or standalone", mode)


def _names(names: Sequence[str]) -> str:
    return ", ".join(names) if names else "(none)"


def in_mode(modes: Mapping[str, str], mode: str) -> list[str]:
    return [n for n, m in modes.items() if m == mode]


def judge_ensemble(modes: Mapping[str, str]) -> Verdict:
    """The ensemble of these members (member -> mode) is serving: one leader, the rest followers
    (a lone member: standalone)."""
    leaders, followers = in_mode(modes, "leader"), in_mode(modes, "follower")
    standalone = len(modes) == 1 and next(iter(modes.values())) == "standalone"
    ok = standalone or (len(leaders) == 1 and len(followers) == len(modes) - 1)
    got = f"leader: {_names(leaders)}; followers: {_names(followers)}"
    others = {n: m for n, m in modes.items() if m not in ("leader", "follower")}
    if others:
        got += "; " + ", ".join(f"{n}: {m}" for n, m in sorted(others.items()))
    expected = "standalone" if len(modes) == 1 else f"1 leader, {len(modes) - 1} followers"
    return Verdict(ok, expected, got)


def leader(modes: Mapping[str, str]) -> str | None:
    leaders = in_mode(modes, "leader")
    return leaders[0] if len(leaders) == 1 else None
