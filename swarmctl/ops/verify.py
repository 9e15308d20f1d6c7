"""Verify a deployed stack from inside its overlay networks, on every node that matters.

read (``facts.stack.observe``) -> plan the probes (pure) -> run them -> judge (pure, ``checks``).

For each of the stack's networks, on every node that runs its tasks and on every manager, a probe
container (any image with python3) joins the network and asks Docker's embedded DNS (127.0.0.11):

* ``<svc>`` and ``<stack>_<svc>`` (and other aliases) resolve to the VIP the API reports (vip mode)
  or to exactly the running task IPs (dnsrr); ``tasks.<svc>`` to exactly the running task IPs;
* a VIP takes a TCP connection on the service's port; when it does not while the tasks do, the
  report says why (a kernel without IPVS, the case on this project's lab);
* a node whose answers differ from the others' is named, with gossip (7946) as the suspect.

Application checks (``x-swarmctl.check``, kept as the label ``io.swarmctl.check``) are judged by
``swarmctl.checks``: ZooKeeper members serving with one leader, Kafka brokers answering at their
advertised name with their id, seeing every expected broker (unless declared standalone with
``x-swarmctl.standalone``) with nothing under-replicated. With ``produce``, a message written with
acks=all through each broker is read back through every other one, on a topic made for it.
Everything else here reads; probes are removed in all cases (and leftovers of a crashed run first).
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from swarmctl.checks import kafka, kraft, tcp, zookeeper
from swarmctl.checks.probe import ProbePlan, ProduceCheck, run_probe, sweep_probes
from swarmctl.errors import HostError, TimeoutExpired
from swarmctl.facts.host import read_facts
from swarmctl.facts.membership import find_manager, own_node_ids
from swarmctl.facts.nodes import match_hosts
from swarmctl.facts.stack import NetworkInfo, StackView, observe
from swarmctl.inventory import Host
from swarmctl.plan import Notify, Report, quiet
from swarmctl.transport.engine import Session
from swarmctl.wait import Pending, until

log = logging.getLogger(__name__)

ROUND_PAUSE = 2.0  # between rounds of `--wait`


@dataclass(frozen=True)
class Check:
    name: str
    node: str
    ok: bool
    expected: str = ""
    got: str = ""
    detail: str = ""
    skipped: bool = False

    def json(self) -> dict[str, Any]:
        return asdict(self)


# -- planning (pure) -------------------------------------------------------------------------------


def probe_nodes(view: StackView) -> list[str]:
    """Nodes that run the stack's tasks, and the managers: node IDs, sorted by hostname."""
    ids = {n for s in view.services for n in s.task_nodes}
    ids |= {n.id for n in view.nodes.values() if n.role == "manager" and n.ready}
    return sorted((i for i in ids if i in view.nodes), key=lambda i: view.nodes[i].hostname)


def names_on(view: StackView, network_id: str) -> dict[str, list[str] | None]:
    """Each name to resolve on a network -> the IPs it must resolve to (None: the VIP is unknown)."""
    out: dict[str, list[str] | None] = {}
    for s in view.services:
        if network_id not in s.networks:
            continue
        ips = s.task_ips.get(network_id, [])
        if s.mode == "dnsrr":
            direct: list[str] | None = ips
        else:
            vip = s.vips.get(network_id)
            direct = [vip] if vip else None
        for name in dict.fromkeys([s.short, s.name, *s.networks[network_id]]):
            out[name] = direct
        out[f"tasks.{s.short}"] = ips
        out[f"tasks.{s.name}"] = ips
    return out


def app_targets(
    view: StackView, network_id: str
) -> tuple[list[tuple[str, int]], list[tuple[str, int]], list[tuple[str, int]]]:
    """ZooKeeper members, Kafka brokers and KRaft controllers to ask, by the names clients use."""
    zk, brokers, controllers = [], [], []
    for s in view.services:
        if network_id not in s.networks or not s.port:
            continue
        if s.check == "zookeeper":
            zk.append((s.short, s.port))
        elif s.check == "kafka":
            brokers.append(kafka.advertised(s.env, s.short, s.port))
        elif s.check == "kafka-controller":
            controllers.append((s.short, s.port))
    return zk, brokers, controllers


def plan_produce(view: StackView, network_id: str, topic: str) -> ProduceCheck | None:
    """``--produce`` through the stack's brokers on one network (None: no brokers there) (pure).

    Brokers are treated as standalone only when every one of them is declared so."""
    brokers = [s for s in view.services if s.check == "kafka" and network_id in s.networks and s.port]
    if not brokers:
        return None
    return ProduceCheck(
        brokers=[(*kafka.advertised(b.env, b.short, b.port), kafka.broker_id(b.env)) for b in brokers],
        topic=topic,
        replication=kafka.replication_factor(b.env for b in brokers),
        standalone=all(b.standalone for b in brokers),
    )


def plan_probes(view: StackView, produce_topic: str = "") -> list[ProbePlan]:
    """One probe per (node, attachable network); application checks from the first node only (pure).

    Args:
        produce_topic: run ``--produce`` on a topic of this name (from the first probe of the first
            network with brokers).
    """
    plans = []
    nodes = probe_nodes(view)
    produce: ProduceCheck | None = None
    for nid, net in sorted(view.networks.items(), key=lambda kv: kv[1].name):
        if not net.attachable:
            continue
        names = names_on(view, nid)
        targets: list[tuple[str, int]] = []
        for s in view.services:
            if nid in s.networks and s.mode == "vip" and s.port and s.vips.get(nid):
                targets.append((s.vips[nid], s.port))
                if s.task_ips.get(nid):
                    targets.append((s.task_ips[nid][0], s.port))
        zk, brokers, controllers = app_targets(view, nid)
        if produce_topic and produce is None:
            produce = plan_produce(view, nid, produce_topic)
            here = produce
        else:
            here = None
        for i, node in enumerate(nodes):
            first = i == 0
            plans.append(
                ProbePlan(
                    node, nid, sorted(names), targets, zk if first else [], brokers if first else [],
                    here if first else None, controllers if first else [],
                )
            )  # fmt: skip
    return plans


def verify_topic(now: float, token: str) -> str:
    """The name of a ``--produce`` topic: its creation time lets a later run remove it if a killed
    run left it behind."""
    return f"swarmctl-verify-{int(now)}-{token}"


# -- judging (pure) --------------------------------------------------------------------------------


def _fmt(ips: Iterable[str] | None) -> str:
    return ", ".join(ips) if ips else "(none)"


def _got(answer: Mapping[str, Any]) -> tuple[list[str] | None, str]:
    if "ips" in answer:
        return list(answer["ips"]), _fmt(answer["ips"])
    return None, str(answer.get("error", "no answer"))


def evaluate(
    view: StackView,
    results: Mapping[tuple[str, str], Mapping[str, Any] | str],
    no_ipvs: Iterable[str] = (),
) -> list[Check]:
    """Checks from probe results ({(node_id, network_id): result or error text}) (pure).

    Args:
        no_ipvs: hostnames whose kernel lacks IPVS (explains a silent VIP).
    """
    checks: list[Check] = []
    no_ipvs = set(no_ipvs)
    for s in view.services:
        if s.job:
            done = s.completed >= s.desired if s.desired else s.completed > 0
            checks.append(
                Check(f"job {s.short}", "", done, f"{s.desired or 'every node'} complete", f"{s.completed} complete")
            )
            continue
        running = len(s.task_nodes)
        checks.append(
            Check(
                f"tasks {s.short}",
                "",
                running == s.desired,
                f"{s.desired} running",
                f"{running} running",
                "" if running == s.desired else "the service is not converged: see `docker service ps " + s.name + "`",
            )
        )
    for nid, net in sorted(view.networks.items(), key=lambda kv: kv[1].name):
        if not net.attachable:
            checks.append(
                Check(
                    f"network {net.name}",
                    "",
                    True,
                    detail="not attachable: verify cannot join it (set `attachable: true` to verify it)",
                    skipped=True,
                )
            )
            continue
        expected = names_on(view, nid)
        probed = probe_nodes(view)
        per_node = {node: results.get((node, nid)) for node in probed}
        dns_rows: list[tuple[str, str, bool, str, str, list[str] | None]] = []
        for node_id, result in per_node.items():
            if not isinstance(result, Mapping):
                continue
            for name, want in sorted(expected.items()):
                ips, text = _got(result["dns"].get(name, {}))
                if want is None:
                    ok = ips is not None and len(ips) == 1
                    wanted = "the service VIP"
                elif not want:
                    ok = not ips
                    wanted = "(none: no running task)"
                else:
                    ok = ips is not None and sorted(ips) == sorted(want)
                    wanted = _fmt(want)
                dns_rows.append((node_id, name, ok, wanted, text, None if ips is None else ips))
        suspect = gossip_suspect(view, expected, dns_rows)
        for node_id, result in per_node.items():
            host = view.nodes[node_id].hostname
            if not isinstance(result, Mapping):
                checks.append(Check(f"probe on {net.name}", host, False, "a probe result", "none", str(result)))
                continue
            for row_node, name, ok, wanted, text, ips in dns_rows:
                if row_node != node_id:
                    continue
                detail = ""
                if not ok and suspect:
                    detail = (
                        f"nodes disagree about tasks on {suspect} and what {suspect} sees of the others: "
                        f"suspect gossip trouble (7946/tcp+udp) on {suspect}"
                    )
                elif not ok and ips is None and text == "timeout":
                    detail = "no answer from the embedded DNS (127.0.0.11)"
                checks.append(Check(f"dns {name} on {net.name}", host, ok, wanted, text, detail))
            checks += _vip_checks(view, nid, net, host, result, no_ipvs)
        first = per_node.get(probed[0]) if probed else None
        if isinstance(first, Mapping):
            checks += _zookeeper_checks(view, nid, first)
            checks += _kraft_checks(view, nid, first)
            checks += _kafka_checks(view, nid, first)
            if "produce" in first:
                checks += _produce_checks(view, nid, first["produce"])
    return checks


def gossip_suspect(
    view: StackView,
    expected: Mapping[str, list[str] | None],
    rows: Iterable[tuple[str, str, bool, str, str, list[str] | None]],
) -> str:
    """The one node in every disagreement between an observer and the node of a task it sees wrong.

    Embedded DNS learns about tasks on other nodes through gossip (7946): a node cut off from it
    sees others' tasks stale, and the others do not see its tasks. Returns its hostname, or "".
    """
    pairs: list[set[str]] = []
    for observer, name, ok, _wanted, _text, ips in rows:
        want = expected.get(name)
        if ok or not want:
            continue
        involved = (set(want) ^ set(ips or [])) if ips is not None else set(want)
        owners = {view.owners.get(ip, "") for ip in involved} - {"", observer}
        if owners:
            pairs.append({observer} | owners)
    if not pairs:
        return ""
    common = set.intersection(*pairs)
    if len(common) != 1:
        return ""  # one observer and one owner, or no node in common: cannot tell which side is cut off
    (suspect,) = common
    node = view.nodes.get(suspect)
    return node.hostname if node else ""


def _vip_checks(
    view: StackView, nid: str, net: NetworkInfo, host: str, result: Mapping[str, Any], no_ipvs: set[str]
) -> list[Check]:
    out = []
    for s in view.services:
        vip = s.vips.get(nid)
        if nid not in s.networks or s.mode != "vip" or not s.port or not vip:
            continue
        task_ip = (s.task_ips.get(nid) or [""])[0]
        task_seen = tcp.answer(result, task_ip, s.port) if task_ip else None
        v = tcp.judge_vip(tcp.answer(result, vip, s.port), task_seen, task_ip, s.port, host, host in no_ipvs)
        out.append(Check(f"vip {s.short} {vip}:{s.port} on {net.name}", host, v.ok, v.expected, v.got, v.detail))
    return out


def _zookeeper_checks(view: StackView, nid: str, result: Mapping[str, Any]) -> list[Check]:
    members = [s for s in view.services if s.check == "zookeeper" and nid in s.networks and s.port]
    if not members:
        return []
    out = []
    modes = {s.short: zookeeper.member_mode(result, s.short, s.port or zookeeper.DEFAULT_PORT) for s in members}
    for s in members:
        v = zookeeper.judge_member(modes[s.short])
        out.append(Check(f"zookeeper {s.short} srvr", "", v.ok, v.expected, v.got))
    v = zookeeper.judge_ensemble(modes)
    out.append(Check("zookeeper ensemble", "", v.ok, v.expected, v.got))
    return out


def _kraft_checks(view: StackView, nid: str, result: Mapping[str, Any]) -> list[Check]:
    """The KRaft quorum, from DescribeQuorum asked of every controller: one leader that the others
    name too, the voters exactly the stack's controllers, each caught up, the brokers observers."""
    controllers = [s for s in view.services if s.check == "kafka-controller" and nid in s.networks and s.port]
    if not controllers:
        return []
    ids = {s.short: i for s in controllers if (i := kafka.node_id(s.env)) is not None}
    view_q = kraft.quorum_view({s.short: kraft.answer(result, s.short, s.port) for s in controllers})
    bound = max(kraft.fetch_timeout_ms(s.env) for s in controllers)
    out = []
    for s in controllers:
        if s.short in view_q.unanswered:
            out.append(Check(f"kraft {s.short} DescribeQuorum", "", False, "an answer", view_q.unanswered[s.short]))
        else:
            role = "leader" if s.short in view_q.leaders_claimed else "follower"
            out.append(Check(f"kraft {s.short} DescribeQuorum", "", True, "an answer", f"answers as {role}"))
    v = kraft.judge_leader(view_q, ids)
    out.append(Check("kraft quorum leader", "", v.ok, v.expected, v.got, v.detail))
    if view_q.leader is None:
        return out
    v = kraft.judge_voters(view_q, ids)
    out.append(Check("kraft quorum voters", "", v.ok, v.expected, v.got, v.detail))
    names = {i: short for short, i in ids.items()}
    for voter in sorted(view_q.voters):
        v = kraft.judge_voter(view_q, voter, bound)
        out.append(Check(f"kraft voter {names.get(voter, voter)} (node {voter})", "", v.ok, v.expected, v.got,
                         v.detail))  # fmt: skip
    brokers = {s.short: kafka.broker_id(s.env) for s in view.services if s.check == "kafka" and nid in s.networks}
    if brokers:
        v = kraft.judge_observers(view_q, brokers)
        out.append(Check("kraft quorum observers", "", v.ok, v.expected, v.got, v.detail))
    return out


def _kafka_checks(view: StackView, nid: str, result: Mapping[str, Any]) -> list[Check]:
    """Each broker answers at its advertised address with its id and sees the expected brokers; a
    cluster has nothing under-replicated. Brokers that each list only themselves pass only when
    the stack declares them standalone (x-swarmctl.standalone)."""
    brokers = [s for s in view.services if s.check == "kafka" and nid in s.networks and s.port]
    if not brokers:
        return []
    out = []
    expected = {b.short: kafka.broker_id(b.env) for b in brokers}
    wanted = set(expected.values())
    seen: dict[str, set[int]] = {}
    under: set[str] = set()
    for s in brokers:
        host, port = kafka.advertised(s.env, s.short, s.port)
        found = kafka.broker_answer(result, host, port)
        v = kafka.judge_broker(found, host, port, expected[s.short])
        out.append(Check(f"kafka {s.short} at {host}:{port}", "", v.ok, v.expected, v.got, v.detail))
        if "metadata" not in found:
            continue
        seen[s.short] = kafka.registered(found["metadata"])
        sees = kafka.judge_sees(seen[s.short], wanted, s.standalone, expected[s.short])
        detail = sees.detail or ("standalone by declaration" if s.standalone else "")
        out.append(Check(f"kafka {s.short} cluster", "", sees.ok, sees.expected, sees.got, detail))
        if not s.standalone:
            under.update(kafka.under_replicated(found["metadata"]))
    if any(not b.standalone and b.short in seen for b in brokers):
        detail = ("under-replicated: " + ", ".join(sorted(under)[:10])) if under else ""
        out.append(Check("kafka under-replicated partitions", "", not under, "0", str(len(under)), detail))
    return out


def _produce_checks(view: StackView, nid: str, produced: Mapping[str, Any]) -> list[Check]:
    out = []
    results = produced.get("brokers") or {}
    for s in view.services:
        if s.check != "kafka" or nid not in s.networks or not s.port:
            continue
        host, port = kafka.advertised(s.env, s.short, s.port)
        v = kafka.judge_produce(results.get(f"{host}:{port}"), s.standalone, kafka.broker_id(s.env))
        out.append(Check(f"kafka {s.short} produce", "", v.ok, v.expected, v.got, v.detail))
    if produced.get("cleanup"):
        out.append(
            Check(
                "kafka verify topic removed", "", False, f"{produced.get('topic')} removed", "still there",
                f"{produced['cleanup']}: remove it with kafka-topics.sh --delete (a later --produce removes it "
                "after 10 minutes)",
            )
        )  # fmt: skip
    for name in produced.get("swept") or []:
        log.info("removed the verify topic %s, left by an earlier run", name)
    return out


# -- running it ------------------------------------------------------------------------------------


def all_ok(checks: Iterable[Check]) -> bool:
    return all(c.ok for c in checks)


def verify_stack(
    session: Session, stack: str, probe_image: str, wait: float = 0.0, notify: Notify = quiet, produce: bool = False
) -> Report:
    """Run every check once; with ``wait`` > 0, again (every few seconds) until all pass or time is up.

    ``produce``: also write through every Kafka broker and read back (``verify --produce``), on a
    topic made for each round and removed afterwards.

    Returns:
        A Report whose ``data`` has ``ok``, ``checks`` (list of Check), ``seconds`` and ``rounds``.
    """
    t0 = time.monotonic()
    manager = find_manager(session)
    checks: list[Check] = []
    ipvs: dict[str, bool] = {}
    swept: set[str] = set()
    rounds = 0
    own_ids = own_node_ids(session)  # which host is which node: its own engine says

    def one_round() -> list[Check]:
        nonlocal rounds
        rounds += 1
        view = observe(manager, stack)
        plans = plan_probes(view, verify_topic(time.time(), uuid.uuid4().hex[:8]) if produce else "")
        node_ids = sorted({p.node_id for p in plans})
        by_host = match_hosts(session.inventory.hosts, [view.nodes[n] for n in node_ids], known_ids=own_ids)
        hosts: dict[str, Host | None] = {nid: None for nid in node_ids}
        for name, node in by_host.items():
            hosts[node.id] = session.inventory.host(name)
        outcomes: dict[tuple[str, str], Mapping[str, Any] | str] = {}

        def run_node(
            host: Host, plans: list[ProbePlan] = plans, view: StackView = view, by_host: dict[str, Any] = by_host
        ) -> dict[Any, Any]:
            engine = session.engine(host)
            if host.name not in swept:
                sweep_probes(engine)
                swept.add(host.name)
            out: dict[tuple[str, str], Mapping[str, Any] | str] = {}
            for plan in plans:
                if by_host.get(host.name) is None or by_host[host.name].id != plan.node_id:
                    continue
                net = view.networks[plan.network_id].name
                try:
                    out[(plan.node_id, plan.network_id)] = run_probe(engine, stack, net, plan, probe_image)
                except HostError as e:
                    out[(plan.node_id, plan.network_id)] = e.message
            if host.name not in ipvs:
                try:
                    ipvs[host.name] = read_facts(session, host).ipvs != "no"
                except HostError:
                    ipvs[host.name] = True
            return out

        known = [session.inventory.host(name) for name in by_host]
        for name, outcome in session.fan_out(run_node, known).items():
            if outcome.value is not None:
                outcomes.update(outcome.value)
            else:
                for plan in plans:
                    if plan.node_id == by_host[name].id:
                        outcomes[(plan.node_id, plan.network_id)] = str(outcome.error)
        for nid in node_ids:
            if hosts[nid] is None:
                node = view.nodes[nid]
                for plan in plans:
                    if plan.node_id == nid:
                        outcomes[(nid, plan.network_id)] = (
                            f"node {node.hostname} ({node.addr}) is not in the inventory: it cannot be probed"
                        )
        no_ipvs = {view.nodes[nid].hostname for nid, h in hosts.items() if h is not None and not ipvs.get(h.name, True)}
        found = evaluate(view, outcomes, no_ipvs)
        if produce and not any(p.produce for p in plans):
            found.append(
                Check(
                    "kafka produce", "", True, skipped=True,
                    detail="no Kafka brokers here (services with x-swarmctl.check: kafka on an attachable network)",
                )
            )  # fmt: skip
        return found

    def passed() -> list[Check] | Pending:
        nonlocal checks
        checks = one_round()
        if all_ok(checks):
            return checks
        failing = [c for c in checks if not c.ok]
        return Pending(f"{len(failing)} checks failing (e.g. {failing[0].name}: got {failing[0].got}); checking again")

    with contextlib.suppress(TimeoutExpired):  # out of time: the last round's checks say what failed
        until("every check to pass", passed, wait, first=ROUND_PAUSE, cap=ROUND_PAUSE, retry=(), on_wait=notify)
    seconds = round(time.monotonic() - t0, 2)
    return Report(data={"ok": all_ok(checks), "checks": checks, "seconds": seconds, "rounds": rounds})
