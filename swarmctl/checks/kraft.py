"""KRaft: the controller quorum as DescribeQuorum (Kafka API 55) shows it, asked of each controller.

Only the active controller (the quorum's leader) answers with the quorum; the others answer
NOT_LEADER_OR_FOLLOWER. A voter is caught up when its last caught-up time is within the quorum's
fetch timeout of the leader's (Strimzi's KRaft roller judges it so); a majority of voters caught
up keeps the metadata log writable. Brokers fetch the log as observers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from swarmctl.checks import Verdict

DEFAULT_PORT = 9093
NOT_LEADER_OR_FOLLOWER = 6
# controller.quorum.fetch.timeout.ms, Kafka's default: a follower not caught up within it is behind
FETCH_TIMEOUT_MS = 2000
# a Kafka node is in KRaft mode when its environment names its roles or its quorum (the official
# image: KAFKA_PROCESS_ROLES; debezium 3.2+: NODE_ROLE) - or when its ApiVersions lists DescribeQuorum
KRAFT_VARIABLES = (
    "KAFKA_PROCESS_ROLES", "NODE_ROLE", "KAFKA_CONTROLLER_QUORUM_VOTERS", "KAFKA_CONTROLLER_QUORUM_BOOTSTRAP_SERVERS",
)  # fmt: skip
DESCRIBE_QUORUM = 55


def kraft(env: Mapping[str, str], api_keys: Iterable[int] = ()) -> bool:
    """Whether a Kafka node runs in KRaft mode: its environment says so, or it answers DescribeQuorum."""
    return any(str(env.get(k, "")).strip() for k in KRAFT_VARIABLES) or DESCRIBE_QUORUM in set(api_keys)


def fetch_timeout_ms(env: Mapping[str, str]) -> int:
    value = str(env.get("KAFKA_CONTROLLER_QUORUM_FETCH_TIMEOUT_MS", "")).strip()
    return int(value) if value.isdigit() else FETCH_TIMEOUT_MS


@dataclass(frozen=True)
class QuorumView:
    """The quorum as the one controller that answered as leader sees it."""

    leader: int | None  # node id of the active controller; None: no controller answered as leader
    epoch: int
    high_watermark: int
    voters: dict[int, Mapping[str, Any]]
    observers: dict[int, Mapping[str, Any]]
    leaders_claimed: dict[str, int]  # controller service -> the leader it answered as (itself)
    followers: dict[str, int]  # controller service -> the leader it names (-1: none) when not the leader
    unanswered: dict[str, str]  # controller service -> why it gave no quorum answer

    def lag_ms(self, voter: int) -> int | None:
        """How far behind the leader's last caught-up time the voter's is (None: never caught up)."""
        me, lead = self.voters.get(voter), self.voters.get(self.leader or -1)
        if me is None or lead is None or int(me.get("last_caught_up", -1)) < 0:
            return None
        return max(0, int(lead.get("last_caught_up", 0)) - int(me["last_caught_up"]))

    def caught_up(self, voter: int, bound_ms: int) -> bool:
        lag = self.lag_ms(voter)
        return lag is not None and lag <= bound_ms


def quorum_view(answers: Mapping[str, Mapping[str, Any]]) -> QuorumView:
    """Each controller's DescribeQuorum answer (service -> what the probe saw) -> the quorum (pure)."""
    claimed: dict[str, int] = {}
    followers: dict[str, int] = {}
    unanswered: dict[str, str] = {}
    best: Mapping[str, Any] = {}
    for service, a in sorted(answers.items()):
        if "error" in a:
            unanswered[service] = str(a["error"])
        elif a.get("top_error"):
            unanswered[service] = f"error {a['top_error']}"
        elif "partition" not in a:
            unanswered[service] = "no partition 0 of __cluster_metadata in its answer"
        elif int(a.get("error_code", 0)) == NOT_LEADER_OR_FOLLOWER:
            followers[service] = int(a.get("leader", -1))
        elif int(a.get("error_code", 0)):
            unanswered[service] = f"error {a['error_code']}"
        else:
            claimed[service] = int(a["leader"])
            best = a
    return QuorumView(
        leader=int(best["leader"]) if best else None,
        epoch=int(best.get("epoch", -1)) if best else -1,
        high_watermark=int(best.get("high_watermark", -1)) if best else -1,
        voters={int(v["id"]): v for v in best.get("voters", [])} if best else {},
        observers={int(o["id"]): o for o in best.get("observers", [])} if best else {},
        leaders_claimed=claimed,
        followers=followers,
        unanswered=unanswered,
    )


def judge_leader(view: QuorumView, ids: Mapping[str, int]) -> Verdict:
    """Exactly one controller answers as the leader, and it is one of the stack's controllers."""
    names = {i: s for s, i in ids.items()}
    claimed = sorted(set(view.leaders_claimed.values()))
    got = ", ".join(f"{names.get(i, i)} (node {i})" for i in claimed) or "none"
    if len(claimed) != 1:
        detail = (
            "more than one controller answers as leader: split quorums"
            if claimed
            else ("no controller answers as the active one: no quorum (a majority of voters must be up)")
        )
        return Verdict(False, "one active controller", got, detail)
    (lead,) = claimed
    disagree = sorted(s for s, i in view.followers.items() if i >= 0 and i != lead)
    if lead not in names:
        return Verdict(False, "one active controller", got, f"node {lead} is none of the stack's controllers")
    detail = f"epoch {view.epoch}" + (f"; {', '.join(disagree)} name another leader" if disagree else "")
    return Verdict(not disagree, "one active controller", got, detail)


def judge_voters(view: QuorumView, ids: Mapping[str, int]) -> Verdict:
    """The quorum's voters are exactly the stack's controllers (a quorum written the same everywhere)."""
    want, have = sorted(ids.values()), sorted(view.voters)
    detail = "" if want == have else "the voters differ from the stack's controllers: a quorum written differently?"
    return Verdict(want == have, f"voters {want}", f"voters {have}", detail)


def judge_voter(view: QuorumView, voter: int, bound_ms: int) -> Verdict:
    """One voter is caught up with the leader."""
    v = view.voters.get(voter)
    if v is None:
        return Verdict(False, f"caught up within {bound_ms} ms", "not a voter")
    lag = view.lag_ms(voter)
    offset_lag = view.high_watermark - int(v.get("log_end_offset", -1))
    role = "leader" if voter == view.leader else "follower"
    if lag is None:
        return Verdict(False, f"caught up within {bound_ms} ms", f"{role}, never caught up",
                       f"log end offset {v.get('log_end_offset')} of high watermark {view.high_watermark}")  # fmt: skip
    ok = lag <= bound_ms
    return Verdict(ok, f"caught up within {bound_ms} ms", f"{role}, {lag} ms behind ({offset_lag} records)",
                   "" if ok else "left behind: it does not follow the leader's metadata log")  # fmt: skip


def judge_observers(view: QuorumView, brokers: Mapping[str, int]) -> Verdict:
    """Every broker of the stack fetches the metadata log (listed as an observer)."""
    want = sorted(brokers.values())
    have = sorted(view.observers)
    missing = sorted(set(want) - set(have))
    detail = ("not fetching the metadata log: " + ", ".join(str(m) for m in missing)) if missing else ""
    return Verdict(not missing, f"observers ⊇ {want}", f"observers {have}", detail)


def majority(voters: int) -> int:
    return voters // 2 + 1


def can_stop(view: QuorumView, voter: int, bound_ms: int) -> tuple[bool, str]:
    """Whether ``voter`` may stop: the voters caught up without it still form a majority (pure)."""
    others = [v for v in sorted(view.voters) if v != voter and view.caught_up(v, bound_ms)]
    need = majority(len(view.voters))
    ok = view.leader is not None and len(others) >= need
    seen = f"caught up without node {voter}: {others or 'none'} (a majority is {need} of {len(view.voters)})"
    return ok, seen


def answer(result: Mapping[str, Any], service: str, port: int | None) -> Mapping[str, Any]:
    """What a probe saw of one controller's DescribeQuorum (asked at its service name)."""
    return dict((result.get("quorum") or {}).get(f"{service}:{port or DEFAULT_PORT}", {"error": "not asked"}))
