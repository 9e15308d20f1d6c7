"""Rotation: join tokens and the cluster's root CA.

``rotate tokens``: new join tokens (worker, manager or both). Nodes already in the swarm are not
affected; the next ``bootstrap`` joins new hosts with the new token (it reads the tokens when it
joins), and swarm refuses the old one. Tokens are compared in memory and never shown.

``rotate ca``: a new root CA (``CAConfig.ForceRotate`` + 1, as ``docker swarm ca --rotate``),
then a wait, with progress, until every node holds a certificate issued by the new CA and trusts
only it, the swarm no longer reports a rotation in progress - or the deadline passes, and the
nodes that did not follow are named (by inventory host where one matches).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from swarmctl.errors import InputError, TimeoutExpired
from swarmctl.facts.membership import ca_rotations, find_manager
from swarmctl.facts.nodes import match_hosts, node_view
from swarmctl.plan import Change, Notify, Plan, Report, quiet
from swarmctl.transport.engine import Session
from swarmctl.wait import Pending, until

CA_TIMEOUT = 300.0
POLL = 1.0


def token_changes(worker: bool, manager: bool) -> list[Change]:
    """Which tokens to rotate (pure); both when neither is named."""
    if not worker and not manager:
        worker = manager = True
    return [Change("swarm", f"{role} join token", "rotate", (f"JoinTokens.{role.title()}",)) for role, on in
            (("worker", worker), ("manager", manager)) if on]  # fmt: skip


def rotate_tokens(session: Session, worker: bool = False, manager: bool = False, notify: Notify = quiet) -> Report:
    engine = find_manager(session)
    changes = token_changes(worker, manager)
    plan = Plan(tuple(changes))
    report = Report(plan=plan)
    swarm = engine.inspect_swarm()
    before = dict(swarm.get("JoinTokens") or {})
    rot_worker = any(c.name.startswith("worker") for c in changes)
    rot_manager = any(c.name.startswith("manager") for c in changes)
    engine.update_swarm(
        int((swarm.get("Version") or {}).get("Index", 0)),
        dict(swarm.get("Spec") or {}),
        rotate_worker_token=rot_worker,
        rotate_manager_token=rot_manager,
        what="rotate the join tokens",
    )
    after = dict(engine.inspect_swarm().get("JoinTokens") or {})
    for c in changes:
        role = "Worker" if c.name.startswith("worker") else "Manager"
        if after.get(role) and after.get(role) != before.get(role):
            report.done(c, notify=notify)
        else:
            report.failed(c, f"the swarm still reports the old {role.lower()} token", engine.name)
    return report


# -- CA rotation -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CAProgress:
    """How far a root rotation got (pure data from one swarm and node listing)."""

    total: int
    certs: int  # nodes whose certificate the desired CA issued
    roots: int  # nodes that trust the desired root
    in_progress: bool
    behind: tuple[str, ...]  # node IDs not there yet

    @property
    def done(self) -> bool:
        return self.certs == self.total and self.roots == self.total and not self.in_progress

    def json(self) -> dict[str, Any]:
        return {"total": self.total, "certificates": self.certs, "trust_roots": self.roots,
                "in_progress": self.in_progress}  # fmt: skip


def ca_progress(swarm: Mapping[str, Any], nodes: Sequence[Mapping[str, Any]]) -> CAProgress:
    """Nodes holding a certificate of the swarm's desired CA, and trusting its root (pure).

    The same test as the docker CLI's: the node's issuer subject and public key are the swarm's,
    its trust root is the swarm's, and the swarm reports no root rotation in progress.
    """
    want = swarm.get("TLSInfo") or {}
    certs = roots = 0
    behind = []
    for n in nodes:
        tls = (n.get("Description") or {}).get("TLSInfo") or {}
        cert_ok = tls.get("CertIssuerSubject") == want.get("CertIssuerSubject") and tls.get(
            "CertIssuerPublicKey"
        ) == want.get("CertIssuerPublicKey")
        root_ok = tls.get("TrustRoot") == want.get("TrustRoot")
        certs += cert_ok
        roots += root_ok
        if not (cert_ok and root_ok):
            behind.append(str(n.get("ID", "")))
    return CAProgress(len(nodes), certs, roots, bool(swarm.get("RootRotationInProgress")), tuple(behind))


def rotate_ca(session: Session, notify: Notify = quiet, timeout: float = CA_TIMEOUT) -> Report:
    """Rotate the root CA and wait until every node follows (exit 1 naming those that did not).

    Returns:
        A Report; ``data``: ``progress`` (the last CAProgress), ``trust_root`` digest changed.
    """
    if timeout <= 0:
        raise InputError("--timeout must be positive")
    engine = find_manager(session)
    swarm = engine.inspect_swarm()
    spec = dict(swarm.get("Spec") or {})
    ca = dict(spec.get("CAConfig") or {})
    ca["ForceRotate"] = ca_rotations(swarm) + 1
    spec["CAConfig"] = ca
    change = Change("swarm", engine.name, "rotate", ("CAConfig.ForceRotate",), "a new root CA")
    report = Report(plan=Plan((change,)))
    old_root = (swarm.get("TLSInfo") or {}).get("TrustRoot")
    engine.update_swarm(int((swarm.get("Version") or {}).get("Index", 0)), spec, what="rotate the root CA")
    seen: list[tuple[CAProgress, list[dict[str, Any]]]] = []

    def followed() -> CAProgress | Pending:
        swarm = engine.inspect_swarm()
        raw_nodes = engine.nodes()
        progress = ca_progress(swarm, raw_nodes)
        seen[:] = [(progress, raw_nodes)]
        rotated = (swarm.get("TLSInfo") or {}).get("TrustRoot") != old_root
        if rotated and progress.done:
            return progress
        of = progress.total
        return Pending(f"root CA rotation: certificates {progress.certs}/{of} nodes, trust roots {progress.roots}/{of}")

    try:
        progress = until("every node to follow the new root CA", followed, timeout, first=POLL, cap=POLL, retry=(),
                         on_wait=notify)  # fmt: skip
        report.done(change, notify=notify)
    except TimeoutExpired:
        progress, raw_nodes = seen[0]
        views = [node_view(n) for n in raw_nodes]
        names = {v.id: h for h, v in match_hosts(session.inventory.hosts, views).items()}
        labels = {v.id: names.get(v.id, v.label) for v in views}
        behind = ", ".join(sorted(f"{labels.get(i, i[:12])} ({_state(views, i)})" for i in progress.behind))
        behind = behind or "the swarm reports the rotation still in progress"
        why = f"not every node follows the new root CA after {timeout:g}s: {behind}"
        report.failed(change, why, engine.name)
        for i in progress.behind:
            report.failures[labels.get(i, i[:12])] = "did not get a certificate from the new root CA in time"
    report.data["progress"] = progress
    return report


def _state(views: list[Any], node_id: str) -> str:
    v = next((v for v in views if v.id == node_id), None)
    return f"node {v.state}" if v is not None else "gone"
