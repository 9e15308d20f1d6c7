"""Bootstrap planning from observed state (pure: no hosts involved)."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType, SimpleNamespace
from typing import Any

from swarmctl.errors import HostError
from swarmctl.facts.host import HostFacts, ahead_targets, port_targets, probe_all, probe_peers
from swarmctl.facts.membership import Membership
from swarmctl.facts.nodes import NodeView
from swarmctl.facts.witness import SwarmWitness
from swarmctl.inventory import Host, Inventory, SSHSettings
from swarmctl.ops import bootstrap as bootstrap_ops
from swarmctl.ops.bootstrap import duplicate_hostnames, plan_membership, plan_nodes, ready_members, write_batches
from swarmctl.plan import Change, Plan, Report, quiet
from swarmctl.transport.ssh import Outcome
from swarmctl.wait import Pending
from tests.unit.fakeengine import FakeEngine


def host(name: str, role: str, labels: dict[str, str] | None = None, availability: str | None = None) -> Host:
    n = int(name[-1])
    return Host(name, f"10.0.0.{n}", role, MappingProxyType(labels or {}), availability, SSHSettings())


INV = Inventory(
    Path("hosts.yml"),
    (host("m1", "manager", {"slot": "1"}), host("m2", "manager"), host("m3", "manager"), host("w4", "worker")),
    MappingProxyType({}),
)


def facts(name: str, state: str = "inactive", node: str = "", cluster: str = "", manager: bool = False) -> HostFacts:
    return HostFacts(
        name=name,
        engine_version="20.10.24",
        hostname=name,
        membership=Membership(state, node, cluster, manager),
        ipvs="yes",
        esp="yes",
        can_probe_ports=True,
    )


def node(
    id: str,
    hostname: str,
    role: str = "worker",
    labels: dict[str, str] | None = None,
    availability: str = "active",
    state: str = "ready",
) -> NodeView:
    spec = {"Role": role, "Availability": availability, "Labels": dict(labels or {})}
    return NodeView(id, hostname, role, availability, dict(labels or {}), state, "", False, "", "20.10", 7, spec)


def members(nodes: list[NodeView], **ids: str) -> dict[str, NodeView]:
    by_id = {n.id: n for n in nodes}
    return {h: by_id[i] for h, i in ids.items()}


def test_fresh_hosts_init_first_manager_and_join_the_rest() -> None:
    f = {n: facts(n) for n in ("m1", "m2", "m3", "w4")}
    plan = plan_membership(INV, f, None)
    assert plan.anchor == plan.init == "m1"
    assert plan.join == (("m2", "manager"), ("m3", "manager"), ("w4", "worker"))
    assert plan.leave == () and plan.members == () and dict(plan.errors) == {}


def test_existing_swarm_only_new_host_joins() -> None:
    f = {
        "m1": facts("m1", "active", "N1", "C", manager=True),
        "m2": facts("m2", "active", "N2", "C", manager=True),
        "m3": facts("m3", "active", "N3", "C", manager=True),
        "w4": facts("w4"),
    }
    plan = plan_membership(INV, f, frozenset({"N1", "N2", "N3"}))
    assert plan.init is None and plan.anchor == "m1"
    assert plan.join == (("w4", "worker"),)
    assert plan.members == ("m1", "m2", "m3")


def test_anchor_is_first_manager_that_runs_the_swarm() -> None:
    f = {"m1": facts("m1"), "m2": facts("m2", "active", "N2", "C", manager=True), "m3": facts("m3"), "w4": facts("w4")}
    plan = plan_membership(INV, f, frozenset({"N2"}))
    assert plan.anchor == "m2" and plan.init is None
    assert [h for h, _ in plan.join] == ["m1", "m3", "w4"]


def test_host_in_another_swarm_is_an_error_unless_forced() -> None:
    f = {n: facts(n, "active", f"N{n[-1]}", "C", manager=True) for n in ("m1", "m2", "m3")}
    f["w4"] = facts("w4", "active", "X9", "")
    plan = plan_membership(INV, f, frozenset({"N1", "N2", "N3"}))
    assert "already in another swarm" in plan.errors["w4"] and "--force" in plan.errors["w4"]
    assert "w4" not in dict(plan.join)
    forced = plan_membership(INV, f, frozenset({"N1", "N2", "N3"}), force=True)
    assert "w4" in forced.leave and ("w4", "worker") in forced.join and not forced.errors


def test_no_new_swarm_beside_one_whose_managers_cannot_be_reached() -> None:
    # the case: m1 is a worker of a swarm, its managers are not reachable: no init
    f = {"m1": facts("m1", "active", "Y1", ""), "m3": facts("m3"), "w4": facts("w4", "active", "Y4", "")}
    plan = plan_membership(INV, f, None)
    assert plan.anchor is None and plan.init is None and plan.join == ()
    assert all("refusing to initialize a new swarm" in why or "another swarm" in why for why in plan.errors.values())
    assert set(plan.errors) == {"m1", "m3", "w4"}
    # a fresh first manager beside a stranded worker: refused too
    g = {n: facts(n) for n in ("m1", "m2", "m3")} | {"w4": facts("w4", "active", "Y4", "")}
    assert plan_membership(INV, g, None).init is None
    assert plan_membership(INV, g, None, force=True).init == "m1"  # proof given: every host reachable, --force


def test_first_manager_in_another_swarm_blocks_init_and_names_everyone() -> None:
    f = {n: facts(n) for n in ("m2", "m3", "w4")}
    f["m1"] = facts("m1", "active", "Y", "OTHER", manager=False)
    plan = plan_membership(INV, f, None)
    assert plan.anchor is None
    assert "another swarm" in plan.errors["m1"]
    assert all("cannot be initialized" in plan.errors[n] for n in ("m2", "m3", "w4"))
    forced = plan_membership(INV, f, None, force=True)
    assert forced.init == "m1" and forced.leave == ("m1",)


def test_unreachable_first_manager_blocks_init() -> None:
    f = {n: facts(n) for n in ("m2", "m3", "w4")}
    plan = plan_membership(INV, f, None)
    assert plan.anchor is None and set(plan.errors) == {"m2", "m3", "w4"}
    assert "m1 failed preflight" in plan.errors["w4"]


def test_half_done_join_is_redone_without_force() -> None:
    f = {
        "m1": facts("m1", "active", "N1", "C", manager=True),
        "m2": facts("m2", "pending"),
        "m3": facts("m3", "error"),
        "w4": facts("w4", "locked"),
    }
    plan = plan_membership(INV, f, frozenset({"N1"}))
    assert plan.leave == ("m2", "m3")
    assert dict(plan.join) == {"m2": "manager", "m3": "manager"}
    assert "locked" in plan.errors["w4"]


def test_node_plan_labels_roles_availability_in_safe_order() -> None:
    inv = Inventory(
        Path("hosts.yml"),
        (host("m1", "manager", {"slot": "1"}), host("m2", "worker"), host("m3", "manager", availability="drain")),
        MappingProxyType({}),
    )
    nodes = [
        node("N1", "m1", "manager", {"slot": "1"}),
        node("N2", "m2", "manager", {"old": "x"}),
        node("N3", "m3", "worker"),
    ]
    plan = plan_nodes(inv, members(nodes, m1="N1", m2="N2", m3="N3"), nodes)
    # m1 already matches: no update. m3 is promoted before m2 is demoted.
    assert [u.host for u in plan.updates] == ["m3", "m2"]
    m3, m2 = plan.updates
    assert m3.spec["Role"] == "manager" and m3.spec["Availability"] == "drain"
    assert [c.action for c in m3.changes] == ["promote", "availability"]
    assert m2.spec["Role"] == "worker" and m2.spec["Labels"] == {"old": "x"}  # labels kept without prune
    assert m2.version == 7
    assert plan.removals == () and plan.warnings == ()


def test_role_changes_are_written_one_at_a_time_in_order_the_other_updates_together() -> None:
    inv = Inventory(
        Path("hosts.yml"),
        (host("m1", "manager", {"slot": "1"}), host("m2", "worker", {"slot": "2"}), host("m3", "manager"),
         host("w4", "worker", {"slot": "4"}), host("w5", "worker", availability="drain")),
        MappingProxyType({}),
    )  # fmt: skip
    nodes = [node("N1", "m1", "manager"), node("N2", "m2", "manager"), node("N3", "m3", "worker"),
             node("N4", "w4"), node("N5", "w5"), node("X", "stray", "manager")]  # fmt: skip
    plan = plan_nodes(inv, members(nodes, m1="N1", m2="N2", m3="N3", w4="N4", w5="N5"), nodes, prune=True)
    batches = [[u.host for u in b] for b in write_batches(plan)]
    # the promotion alone first, the labels and availability of m1, w4 and w5 at once, then each
    # demotion alone (m2, and the stray manager pruned)
    assert batches == [["m3"], ["m1", "w4", "w5"], ["m2"], ["stray"]]
    assert write_batches(plan_nodes(inv, members(nodes[:1], m1="N1"), nodes[:1])) == [[plan.updates[1]]]


class NodeWrites(FakeEngine):
    """The swarm's nodes as the anchor lists them, and the node writes made through it, in order."""

    def __init__(self, nodes: list[NodeView]) -> None:
        raw = [{"ID": n.id, "Description": {"Hostname": n.hostname}, "Spec": dict(n.spec),
                "Status": {"State": n.state}, "Version": {"Index": n.version}} for n in nodes]  # fmt: skip
        super().__init__(node_list=raw)
        self.done: list[tuple[str, str]] = []

    def update_node(self, node_id: str, version: int, spec: Mapping[str, Any], what: str = "") -> None:
        self.done.append(("update", node_id))

    def remove_node(self, node_id: str, force: bool = False, what: str = "") -> None:
        self.done.append(("remove", node_id))


def test_prune_drains_each_stray_worker_alone_and_writes_the_hosts_labels_together() -> None:
    # two Ready strays (workers: each drained, then removed) beside two inventory hosts' labels:
    # the strays' names are no inventory host's (one is even an inventory host's hostname)
    inv = Inventory(Path("hosts.yml"), (host("m1", "manager", {"slot": "1"}), host("w4", "worker", {"slot": "4"})),
                    MappingProxyType({}))  # fmt: skip
    nodes = [node("N1", "m1", "manager"), node("N4", "w4"), node("S1", "stray1"), node("S2", "w4")]
    plan = plan_nodes(inv, members(nodes, m1="N1", w4="N4"), nodes, prune=True)
    assert [[u.node_id for u in b] for b in write_batches(plan)] == [["N1", "N4"], ["S1"], ["S2"]]
    anchor = NodeWrites(nodes)
    state = bootstrap_ops.BootstrapState(inv, {}, frozenset({"m1", "w4"}), {}, tuple(nodes))
    report = Report()
    bootstrap_ops.apply_nodes(anchor, state, {"m1": "N1", "w4": "N4"}, True, report, quiet)
    assert report.failures == {}
    assert sorted(anchor.done[:2]) == [("update", "N1"), ("update", "N4")]  # together, in any order
    assert anchor.done[2:] == [("update", "S1"), ("update", "S2"), ("remove", "S1"), ("remove", "S2")]
    assert [(c.name, c.action) for c in (r.change for r in report.results)] == [
        ("m1", "label"), ("w4", "label"), ("stray1", "availability"), ("w4", "availability"),
        ("stray1", "remove"), ("w4", "remove")]  # fmt: skip


class FailingWrites(NodeWrites):
    def update_node(self, node_id: str, version: int, spec: Mapping[str, Any], what: str = "") -> None:
        raise HostError("m1", "update node: rpc error: code = Unknown desc = update out of sequence")


def test_a_node_just_made_is_settled_at_once_unless_it_wants_a_role_change() -> None:
    """Each host's labels and availability are written as soon as its node exists (while the
    others still join); a role change, or a write that fails, is left to the node phase."""
    inv = Inventory(Path("hosts.yml"), (host("m1", "manager", {"slot": "1"}), host("m2", "manager", {"zone": "a"}),
                    host("w4", "worker", {"zone": "b"}, "drain")), MappingProxyType({}))  # fmt: skip
    nodes = [node("N1", "m1", "manager"), node("N2", "m2", "worker"), node("N4", "w4")]
    anchor = NodeWrites(nodes)
    labelled = bootstrap_ops.settle(anchor, inv, "m1", "N1")
    assert [(c.name, c.action, c.detail) for c in labelled] == [("m1", "label", "slot=1")]
    drained = bootstrap_ops.settle(anchor, inv, "w4", "N4")
    assert [(c.action, c.detail) for c in drained] == [("label", "zone=b"), ("availability", "drain")]
    assert anchor.done == [("update", "N1"), ("update", "N4")]
    # m2's node is a worker: its promotion waits for the node phase (promotions first, in order)
    assert bootstrap_ops.settle(anchor, inv, "m2", "N2") == () and len(anchor.done) == 2
    assert bootstrap_ops.settle(FailingWrites(nodes), inv, "m1", "N1") == ()
    assert bootstrap_ops.settle(anchor, inv, "m1", "GONE") == ()  # not listed (NotFound)


def test_a_report_lists_what_was_done_in_the_plan_s_order() -> None:
    """A joined node's labels are written while other hosts still join: the report lists them
    where the plan has them (so --json after --plan reads the same), anything unplanned after."""
    join, lab2, lab3 = (Change("node", "lab3", "join-worker"), Change("node", "lab2", "availability"),
                        Change("node", "lab3", "label", (), "kafka.slot=3"))  # fmt: skip
    report = Report(plan=Plan((join, lab2, lab3)))
    unplanned = Change("node", "lab9", "label")
    for c in (join, lab3, unplanned, lab2):
        report.done(c)
    report.in_plan_order()
    assert report.changes == [join, lab2, lab3, unplanned]


def test_node_plan_is_empty_when_everything_matches() -> None:
    nodes = [
        node("N1", "m1", "manager", {"slot": "1"}),
        node("N2", "m2", "manager"),
        node("N3", "m3", "manager"),
        node("N4", "w4"),
    ]
    plan = plan_nodes(INV, members(nodes, m1="N1", m2="N2", m3="N3", w4="N4"), nodes)
    assert plan.updates == () and plan.removals == () and plan.warnings == ()


def test_extra_nodes_warned_or_pruned() -> None:
    nodes = [
        node("N1", "m1", "manager", {"slot": "1", "extra": "y"}),
        node("OLD", "m1", "worker", state="down"),
        node("X", "stray", "manager"),
    ]
    plan = plan_nodes(INV, members(nodes, m1="N1"), nodes)
    # OLD is down and has m1's hostname while m1 is N1: stale, removed without --prune; X is a stranger
    assert len(plan.warnings) == 1 and "stray" in plan.warnings[0] and "--prune" in plan.warnings[0]
    assert [n.id for n in plan.removals] == ["OLD"] and plan.stale == {"OLD": "m1"} and plan.updates == ()
    assert "stale node OLD (down): m1 is another node now" in plan.changes[-1].describe()
    # while an inventory host cannot be checked, nothing is removed, stale or not
    careful = plan_nodes(INV, members(nodes, m1="N1"), nodes, stale_ok=False)
    assert careful.removals == () and careful.updates == () and len(careful.warnings) == 2
    pruned = plan_nodes(INV, members(nodes, m1="N1"), nodes, prune=True)
    assert {n.id for n in pruned.removals} == {"OLD", "X"}
    by_host = {u.node_id: u for u in pruned.updates}
    assert by_host["N1"].spec["Labels"] == {"slot": "1"}  # unlabel extra
    assert by_host["X"].spec["Role"] == "worker" and by_host["X"].spec["Availability"] == "drain"
    assert "OLD" not in by_host  # a down worker needs no drain or demotion before removal


def test_duplicate_hostnames_blame_the_later_host() -> None:
    f = {"m1": facts("m1"), "m2": facts("m2"), "w4": facts("w4")}
    f["w4"] = HostFacts(**{**f["w4"].__dict__, "hostname": "m1"})
    errors = duplicate_hostnames(INV, f)
    assert list(errors) == ["w4"] and "also the hostname of m1" in errors["w4"]


def test_port_targets_managers_2377_everyone_7946() -> None:
    addresses = {h.name: h.address for h in INV.hosts}
    targets = [(p.name, port) for p, _, port in port_targets(INV.hosts[3], INV.hosts, addresses)]
    assert targets == [("m1", 2377), ("m1", 7946), ("m2", 2377), ("m2", 7946), ("m3", 2377), ("m3", 7946)]
    assert ("m1", 7946) not in [(p.name, port) for p, _, port in port_targets(INV.hosts[0], INV.hosts, addresses)]


def test_probes_made_during_the_read_are_judged_as_probes_made_after_it() -> None:
    """A first bootstrap's hosts probe every swarm port of the others in their read's round trip
    (ahead_targets); probe_all then judges each host on the targets probe_peers gives it, from
    those results, and asks over SSH only a host whose read left one out."""
    ahead = ahead_targets(INV.hosts)
    assert ahead is not None and ahead["w4"] == [(a, p) for _, a, p in port_targets(INV.hosts[3], INV.hosts, {
        h.name: h.address for h in INV.hosts})]  # fmt: skip
    named = replace(INV, hosts=(*INV.hosts[:3], replace(INV.hosts[3], address="w4.example")))
    assert ahead_targets(named.hosts) is None  # its address is known once it is read
    hostfacts = {h.name: replace(facts(h.name), advertise=h.address) for h in INV.hosts}
    asked: list[str] = []

    class Pool:
        def connection(self, host: Host) -> Any:
            asked.append(host.name)
            ran = SimpleNamespace(stdout="10.0.0.1 2377 open\n10.0.0.1 7946 open\n", check=lambda what: None)
            return SimpleNamespace(run=lambda argv, timeout: ran)

    def fan_out(fn: Any, hosts: list[Host]) -> dict[str, Outcome[Any]]:
        return {h.name: Outcome(h.name, fn(h)) for h in hosts}

    session: Any = SimpleNamespace(pool=Pool(), fan_out=fan_out)
    seen = {n: {(a, str(p)): "open" for a, p in targets} for n, targets in ahead.items()}
    seen["m2"][("10.0.0.4", "7946")] = "timeout"  # towards w4: a newcomer, so it counts
    seen["m3"][("10.0.0.2", "7946")] = "timeout"  # towards m2: both members, not looked at
    del seen["w4"][("10.0.0.2", "2377")]  # w4's read left one out: w4 is probed again
    out = probe_all(session, INV.hosts, hostfacts, frozenset({"m1", "m2", "m3"}), seen)
    assert asked == ["w4"]
    failures = {n: [(p.target, p.port) for p in o.value.port_failures()] for n, o in out.items() if o.value}
    assert failures == {"m1": [], "m2": [("w4", 7946)], "m3": [], "w4": [("m2", 2377), ("m2", 7946), ("m3", 2377),
                        ("m3", 7946)]}  # fmt: skip
    m1 = out["m1"].value
    assert m1 is not None and [(p.target, p.port) for p in m1.probes] == [("w4", 7946)]  # a member: newcomers only


def test_port_targets_are_the_addresses_the_peers_advertise() -> None:
    """A DNS name in the inventory may resolve only on the machine running swarmctl: a host probes
    its peers at the IP addresses they advertise, and leaves out the peers that did not answer."""
    addresses = {"m1": "192.0.2.1", "m2": "192.0.2.2", "w4": "192.0.2.4"}
    targets = port_targets(INV.hosts[3], INV.hosts, addresses)
    assert [(p.name, a, port) for p, a, port in targets] == [
        ("m1", "192.0.2.1", 2377),
        ("m1", "192.0.2.1", 7946),
        ("m2", "192.0.2.2", 2377),
        ("m2", "192.0.2.2", 7946),
    ]


def reachable(n: NodeView) -> NodeView:
    return replace(n, reachability="reachable")


def test_ready_members_need_no_port_probes_among_themselves() -> None:
    """Issue 28: a bootstrap with nothing to do probes no port (the swarm proves its members'
    ports); a host about to join, or to change its role, is probed towards everyone and everyone
    towards it, as in a first bootstrap."""
    nodes = [reachable(node(f"n{i}", f"m{i}", "manager")) for i in (1, 2, 3)] + [node("n4", "w4")]
    hostfacts = {f"{n.hostname}": facts(n.hostname, "active", n.id, "c", n.is_manager) for n in nodes}
    everyone = ready_members(INV, hostfacts, nodes)
    assert everyone == {"m1", "m2", "m3", "w4"}
    assert all(peers == [] for peers in probe_peers(INV.hosts, everyone).values())
    # w4 not yet in the swarm: it probes everyone, and everyone probes it, only it
    fresh = {**hostfacts, "w4": facts("w4")}
    joining = ready_members(INV, fresh, nodes[:3])
    assert joining == {"m1", "m2", "m3"}
    peers = probe_peers(INV.hosts, joining)
    assert [p.name for p in peers["w4"]] == ["m1", "m2", "m3", "w4"]
    assert all([p.name for p in peers[m]] == ["w4"] for m in ("m1", "m2", "m3"))
    # a down node, a node in another role than the inventory's (about to be promoted), no swarm
    down = [*nodes[:3], node("n4", "w4", state="down")]
    assert ready_members(INV, hostfacts, down) == {"m1", "m2", "m3"}
    promoted = [*nodes[:2], node("n3", "m3", "worker"), nodes[3]]
    assert ready_members(INV, hostfacts, promoted) == {"m1", "m2", "w4"}
    # a Ready manager the other managers cannot reach is probed as a newcomer is
    cut_off = [*nodes[:2], replace(nodes[2], reachability="unreachable"), nodes[3]]
    assert ready_members(INV, hostfacts, cut_off) == {"m1", "m2", "w4"}
    assert ready_members(INV, hostfacts, None) == frozenset()
    assert probe_peers(INV.hosts, frozenset())["m1"] == list(INV.hosts)


def test_a_join_token_the_new_leader_s_ca_refuses_for_a_moment_is_asked_again(monkeypatch: Any) -> None:
    """Seen in a suite run on Debian 12 (Docker 20.10): right after recover's force-new-cluster
    from a backup, joins with the token the new leader had just reported were refused ("A valid
    join token is necessary to join this cluster"). And seen in CI: a root CA rotation that the
    force-new-cluster started ended while the hosts joined, and their tokens carried the old root's
    digest (the joining engine: "remote CA does not match fingerprint"; its TLS handshake:
    "certificate signed by unknown authority"). The join is tried again with the token asked again,
    within a deadline; a CA mismatch while the swarm's token stays the same and no rotation runs
    (a token of another swarm), and any other refusal, fail at once."""
    monkeypatch.setattr(bootstrap_ops, "until", lambda what, check, timeout, **kw: _first_result(check))

    class Anchor:
        def __init__(self, tokens: list[str], rotating: bool = False) -> None:
            self.tokens, self.rotating = iter(tokens), rotating

        def inspect_swarm(self) -> dict[str, Any]:
            tokens = {"Worker": next(self.tokens), "Manager": "SWMTKN-1-m"}
            return {"JoinTokens": tokens, "RootRotationInProgress": self.rotating}

    class Joining:
        def __init__(self, refusals: list[str]):
            self.refusals, self.used = refusals, list[str]()

        def join_swarm(self, remotes: list[str], token: str, advertise: str, listen: str) -> None:
            self.used.append(token)
            if self.refusals:
                raise HostError("w4", "join the swarm: " + self.refusals.pop(0))

    def run(engine: Joining, anchor: Anchor) -> dict[str, Outcome[bootstrap_ops.Joined]]:
        session = SimpleNamespace(inventory=INV, engine=lambda h: engine)
        monkeypatch.setattr(bootstrap_ops, "_node_id", lambda e: "n4")
        plan = bootstrap_ops.MembershipPlan("m1", None, (), (("w4", "worker"),), ("m1",))
        step = bootstrap_ops.JoinStep("w4", "worker", Change("node", "w4", "join-worker"))
        calls = threading.BoundedSemaphore(bootstrap_ops.NODE_WRITERS)
        return bootstrap_ops._join(session, anchor, plan, [step], {}, calls)  # type: ignore[arg-type]

    refused = f"rpc error: code = InvalidArgument desc = {bootstrap_ops.TOKEN_NOT_TAKEN}"
    fingerprint = "remote CA does not match fingerprint. Expected: 689be0def583"
    handshake = ('rpc error: code = Unavailable desc = connection error: desc = "transport: authentication handshake '
                 'failed: x509: certificate signed by unknown authority"')  # fmt: skip
    changed = ["SWMTKN-1-a", "SWMTKN-1-b"]
    for refusal in (refused, fingerprint, handshake):
        once = Joining([refusal])
        assert run(once, Anchor(changed))["w4"].value == bootstrap_ops.Joined("n4"), refusal
        assert once.used == changed
    # the token unchanged: retried while a rotation runs, else the mismatch is said at once
    rotating = Joining([fingerprint])
    assert run(rotating, Anchor(["SWMTKN-1-a"] * 2, rotating=True))["w4"].value == bootstrap_ops.Joined("n4")
    for refusal in (fingerprint, "rpc error: some other refusal"):
        other = Joining([refusal])
        failed = run(other, Anchor(["SWMTKN-1-a"] * 2))["w4"].error
        assert isinstance(failed, HostError) and refusal in failed.message and len(other.used) == 1


def test_the_managers_join_first_and_a_stuck_one_does_not_hold_the_workers(monkeypatch: Any) -> None:
    # the order, with engines that only record when each join ran (the engines' side of it is
    # proven on the lab: bench.bootstrap, tests/e2e/test_bootstrap.py)
    monkeypatch.setattr(bootstrap_ops, "until", lambda what, check, timeout, **kw: _first_result(check))
    monkeypatch.setattr(bootstrap_ops, "_node_id", lambda e: f"node-{e.name}")
    monkeypatch.setattr(bootstrap_ops, "MANAGERS_AHEAD", 0.5)
    inv = Inventory(Path("hosts.yml"), (*INV.hosts, host("w5", "worker")), MappingProxyType({}))
    spans: dict[str, tuple[float, float]] = {}
    release = threading.Event()

    class Engine:
        def __init__(self, name: str, stuck: bool = False) -> None:
            self.name, self.stuck = name, stuck

        def join_swarm(self, remotes: list[str], token: str, advertise: str, listen: str) -> None:
            t0 = time.monotonic()
            if self.stuck:
                release.wait(10)  # a manager's join that takes long (a token asked again, a slow raft)
            else:
                time.sleep(0.05)
            spans[self.name] = (t0, time.monotonic())

    class Anchor:
        def inspect_swarm(self) -> dict[str, Any]:
            return {"JoinTokens": {"Worker": "SWMTKN-1-w", "Manager": "SWMTKN-1-m"}}

    def run(stuck: str = "") -> dict[str, Outcome[bootstrap_ops.Joined]]:
        spans.clear()
        engines = {h.name: Engine(h.name, h.name == stuck) for h in inv.hosts}
        session = SimpleNamespace(inventory=inv, engine=lambda h: engines[h.name])
        roles = (("m2", "manager"), ("m3", "manager"), ("w4", "worker"), ("w5", "worker"))
        plan = bootstrap_ops.MembershipPlan("m1", None, (), roles, ("m1",))
        steps = [bootstrap_ops.JoinStep(n, r, Change("node", n, f"join-{r}")) for n, r in roles]
        calls = threading.BoundedSemaphore(bootstrap_ops.NODE_WRITERS)
        return bootstrap_ops._join(session, Anchor(), plan, steps, {}, calls)  # type: ignore[arg-type]

    joined = run()
    assert all(o.ok for o in joined.values()) and set(joined) == {"m2", "m3", "w4", "w5"}
    assert max(spans[m][1] for m in ("m2", "m3")) <= min(spans[w][0] for w in ("w4", "w5")), spans
    t0 = time.monotonic()
    threading.Timer(1.5, release.set).start()
    joined = run(stuck="m3")
    assert all(o.ok for o in joined.values()), joined
    assert min(spans[w][0] for w in ("w4", "w5")) - t0 < 1.0, "the workers waited for the stuck manager"
    assert spans["m3"][1] - t0 >= 1.4  # and the stuck one was still waited for, to the end


def _first_result(check: Any) -> Any:
    for _ in range(5):
        seen = check()
        if not isinstance(seen, Pending):
            return seen
    raise AssertionError("never joined")


def test_the_swarm_proves_a_noop_only_when_it_vouches_for_this_inventory_and_every_node_matches() -> None:
    mark = bootstrap_ops.fingerprint(INV, {})

    def at(n: NodeView, addr: str, reach: str = "reachable") -> NodeView:
        return replace(n, addr=addr, reachability=reach if n.is_manager else "")

    nodes = (at(node("N1", "m1", "manager", {"slot": "1"}), "10.0.0.1"), at(node("N2", "m2", "manager"), "10.0.0.2"),
             at(node("N3", "m3", "manager"), "10.0.0.3"), at(node("N4", "w4"), "10.0.0.4"))  # fmt: skip
    ids = {"m1": "N1", "m2": "N2", "m3": "N3", "w4": "N4"}
    seen = SwarmWitness("m1", "N1", nodes, bootstrap_ops.record(mark, ids), False)
    assert bootstrap_ops.witnessed(INV, seen, mark) == ""
    # what is not proven is left to the full read of every host
    others = {
        "no record": replace(seen, stamp=""),
        "another inventory's record": replace(
            seen, stamp=bootstrap_ops.record(bootstrap_ops.fingerprint(INV, {"r.example": "ab"}), ids)
        ),
        # w4 rebuilt at its address and joined by hand: another node, its engine never configured
        "another node at a host's address": replace(seen, nodes=(*nodes[:3], replace(nodes[3], id="N9"))),
        "a node down": replace(seen, nodes=(*nodes[:3], replace(nodes[3], state="down"))),
        "an unreachable manager": replace(
            seen, nodes=(nodes[0], replace(nodes[1], reachability="unreachable"), *nodes[2:])
        ),
        "a label missing": replace(seen, nodes=(replace(nodes[0], labels={}), *nodes[1:])),
        "a worker where a manager should be": replace(
            seen, nodes=(*nodes[:2], replace(nodes[2], role="worker"), nodes[3])
        ),
        "a node more": replace(seen, nodes=(*nodes, at(node("N5", "x5"), "10.0.0.5"))),
        "a node at another address": replace(seen, nodes=(*nodes[:3], at(node("N4", "w4"), "10.0.0.9"))),
        "the manager read is another node": replace(seen, own_id="N2"),
        "autolock to turn off": replace(seen, autolock=True),
    }
    inv_off = replace(INV, autolock=False)
    for what, witness in others.items():
        inv = inv_off if what == "autolock to turn off" else INV
        mark_for = bootstrap_ops.fingerprint(inv, {})
        stamp = bootstrap_ops.record(mark_for, ids) if witness.stamp == seen.stamp else witness.stamp
        assert bootstrap_ops.witnessed(inv, replace(witness, stamp=stamp), mark_for) != "", what
    # an autolocked inventory's unlock key is always checked on the hosts
    locked = replace(INV, autolock=True)
    mark_locked = bootstrap_ops.fingerprint(locked, {})
    stamp_locked = bootstrap_ops.record(mark_locked, ids)
    assert bootstrap_ops.witnessed(locked, replace(seen, stamp=stamp_locked, autolock=True), mark_locked) != ""


def test_the_fingerprint_changes_with_everything_a_bootstrap_makes_true() -> None:
    base = bootstrap_ops.fingerprint(INV, {})
    changed = [
        replace(INV, hosts=(host("m1", "manager", {"slot": "2"}), *INV.hosts[1:])),
        replace(INV, hosts=(*INV.hosts[:3], host("w4", "worker", availability="drain"))),
        replace(INV, hosts=(*INV.hosts[:3], replace(INV.hosts[3], engine=MappingProxyType({"debug": True})))),
        replace(INV, hosts=(*INV.hosts[:3], replace(INV.hosts[3], address="10.0.0.44"))),
        replace(INV, hosts=INV.hosts[:3]),
        replace(INV, autolock=False),
    ]
    marks = {bootstrap_ops.fingerprint(inv, {}) for inv in changed} | {bootstrap_ops.fingerprint(INV, {"r": "ab"})}
    assert base not in marks and len(marks) == len(changed) + 1
    assert bootstrap_ops.fingerprint(INV, {}) == base  # and it is the same for the same inventory
