"""TCP: a port takes connections; a VIP that does not while its tasks do is explained."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from swarmctl.checks import Verdict


def answer(result: Mapping[str, Any], address: str, port: int) -> str:
    """What a probe saw connecting to address:port: open | refused | timeout | ... | not tried."""
    return str((result.get("tcp") or {}).get(f"{address}:{port}", {}).get("result", "not tried"))


def judge_port(seen: str) -> Verdict:
    return Verdict(seen == "open", "open", seen)


def judge_vip(vip_seen: str, task_seen: str | None, task_ip: str, port: int, host: str, no_ipvs: bool) -> Verdict:
    """A service VIP answers on ``port``; when it does not, say why.

    Args:
        task_seen: what connecting to one of its tasks directly gave (None: it has no running task).
        no_ipvs: the probing node's kernel has no IPVS, which VIPs need.
    """
    ok = vip_seen == "open"
    detail = ""
    if not ok and task_seen == "open":
        if no_ipvs:
            detail = (
                f"the VIP does not answer but a task does ({task_ip}:{port}): {host}'s kernel has no IPVS "
                "(ip_vs), which swarm VIPs need; use endpoint_mode: dnsrr or tasks.<service> names"
            )
        else:
            detail = f"the VIP does not answer but a task does ({task_ip}:{port}): the VIP's load balancer is broken"
    elif not ok and task_seen is None:
        detail = "no running task behind the VIP"
    elif not ok:
        detail = f"the tasks do not answer on {port} either ({task_seen})"
    return Verdict(ok, "open", vip_seen, detail)
