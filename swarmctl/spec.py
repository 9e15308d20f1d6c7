"""Service specs as swarmctl compares them: what a deploy must write, and what the engine merely fills in.

The engine stores a spec with its own defaults filled in and empty values dropped; a spec swarmctl
built has neither. ``comparable`` brings both to one form, so an unchanged service compares equal
and a redeploy writes nothing; ``diff_paths`` names what differs.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any


def normalize(value: Any) -> Any:
    """Drop empty values (None, "", 0, False, [], {}) as the engine's JSON omits them."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            nv = normalize(v)
            if nv in (None, "", 0, False, [], {}) and not (nv == 0 and k == "Replicas"):
                continue
            out[k] = nv
        return out
    if isinstance(value, list):
        return [normalize(v) for v in value]
    return value


def diff_paths(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two normalized specs differ (lists compare whole)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += diff_paths(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else key)
        return out
    return [] if a == b else [prefix or "."]


def comparable_task(task: Mapping[str, Any], network_names: Mapping[str, str]) -> Any:
    """A TaskSpec as compared: normalized, network IDs as names, engine-side defaults dropped."""
    t = normalize(copy.deepcopy(dict(task)))
    if t.get("Runtime") == "container":
        del t["Runtime"]
    container = t.get("ContainerSpec", {})
    if container.get("Isolation") == "default":
        del container["Isolation"]
    nets = t.get("Networks", [])
    for n in nets:
        n["Target"] = network_names.get(n["Target"], n["Target"])
    if nets:
        t["Networks"] = sorted(nets, key=lambda n: n["Target"])
    return normalize(t)


def comparable(spec: Mapping[str, Any], network_names: Mapping[str, str]) -> Any:
    """A service spec as compared for changes: normalized, engine-side defaults dropped."""
    raw = copy.deepcopy(dict(spec))
    replicated = (raw.get("Mode") or {}).get("Replicated")
    if replicated is not None and replicated.get("Replicas") is None:
        replicated["Replicas"] = 1  # the engine stores the default replica count
    job = (raw.get("Mode") or {}).get("ReplicatedJob")
    if job is not None:
        # and a job's defaults: one at a time, as many completions as may run at once
        job.setdefault("MaxConcurrent", 1)
        job.setdefault("TotalCompletions", job["MaxConcurrent"])
    s = normalize(raw)
    if "TaskTemplate" in s:
        s["TaskTemplate"] = comparable_task(s["TaskTemplate"], network_names)
    for key in ("UpdateConfig", "RollbackConfig"):
        cfg = s.get(key, {})
        # the engine stores enums: an unset failure action or order comes back as its default
        if cfg.get("FailureAction") == "pause":
            del cfg["FailureAction"]
        if cfg.get("Order") == "stop-first":
            del cfg["Order"]
    endpoint = s.get("EndpointSpec", {})
    if endpoint.get("Mode") == "vip":
        del endpoint["Mode"]
    for port in endpoint.get("Ports", []):
        if port.get("PublishMode") == "ingress":
            del port["PublishMode"]
        if port.get("Protocol") == "tcp":
            del port["Protocol"]
    if not endpoint and "EndpointSpec" in s:
        del s["EndpointSpec"]
    return normalize(s)


def parse_time(text: str | None) -> float:
    """An RFC 3339 time of the engine (``2024-05-01T10:00:00.123456789Z``) as a Unix timestamp; 0 for none."""
    if not text:
        return 0.0
    # Docker prints RFC 3339 with nanoseconds; Python parses microseconds
    main, _, frac = text.rstrip("Z").partition(".")
    frac = (frac[:6] if frac else "0").ljust(6, "0")
    tz = timezone.utc
    stamp = datetime.strptime(main[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=tz)
    return stamp.timestamp() + int(frac) / 1e6


def task_runs_spec(task: Mapping[str, Any], service: Mapping[str, Any]) -> bool:
    """Whether a task runs the service's current spec (an update replaces the others)."""
    return bool(
        comparable_task(task.get("Spec", {}), {}) == comparable_task(service["Spec"].get("TaskTemplate", {}), {})
    )


def changed_fields(new: Mapping[str, Any], old: Mapping[str, Any], network_names: Mapping[str, str]) -> list[str]:
    """The paths where writing ``new`` over a service whose spec is ``old`` would change something."""
    return diff_paths(comparable(new, network_names), comparable(old, network_names))
