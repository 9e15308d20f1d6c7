"""Verify a deployed stack from inside its overlay networks, on every node that matters.

For each of the stack's networks, on every node that runs its tasks and on every manager, a probe
container (any image with python3) joins the network and asks Docker's embedded DNS (127.0.0.11):

* ``<svc>`` and ``<stack>_<svc>`` (and other aliases) resolve to the VIP the API reports (vip mode)
  or to exactly the running task IPs (dnsrr); ``tasks.<svc>`` to exactly the running task IPs;
* a VIP takes a TCP connection on the service's port; when it does not while the tasks do, the
  report says why (a kernel without IPVS, the case on this project's lab);
* a node whose answers differ from the others' is named, with gossip (7946) as the suspect.

Application checks (``x-swarmctl.check`` of the stack file, kept as the service label
``io.swarmctl.check``): ZooKeeper members answer ``srvr`` with one leader and the rest followers;
Kafka brokers answer ApiVersions and Metadata at their advertised name with their broker id, and
on a real cluster list each other with nothing under-replicated.

Everything here reads; probes are removed in all cases (and leftovers of a crashed run first).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any

from swarmctl.engine import Engine, Session
from swarmctl.errors import ClusterError, HostError
from swarmctl.inventory import Host
from swarmctl.stack.convert import CHECK_LABEL, NAMESPACE_LABEL, PORT_LABEL

log = logging.getLogger(__name__)

PROBE_LABEL = "io.swarmctl.probe"
DEFAULT_PROBE_IMAGE = "python:3-alpine"
PROBE_TIMEOUT = 90


@dataclass(frozen=True)
class Check:
    name: str
    node: str
    ok: bool
    expected: str = ""
    got: str = ""
    detail: str = ""
    skipped: bool = False


@dataclass(frozen=True)
class ServiceInfo:
    name: str  # full name, <stack>_<svc>
    short: str
    mode: str  # vip | dnsrr
    networks: dict[str, list[str]]  # network ID -> aliases
    vips: dict[str, str]  # network ID -> VIP address
    task_ips: dict[str, list[str]]  # network ID -> running task IPs
    task_nodes: list[str]  # node IDs of running tasks
    check: str
    port: int | None
    env: dict[str, str]
    desired: int
    job: bool = False
    completed: int = 0  # tasks of a job that ran to completion


@dataclass(frozen=True)
class NetworkInfo:
    id: str
    name: str
    attachable: bool


@dataclass(frozen=True)
class NodeInfo:
    id: str
    hostname: str
    addr: str
    role: str
    ready: bool


@dataclass
class StackView:
    stack: str
    services: list[ServiceInfo]
    networks: dict[str, NetworkInfo]
    nodes: dict[str, NodeInfo]
    owners: dict[str, str] = field(default_factory=dict)  # task IP (any task, old ones too) -> node ID


def _strip(addr: str) -> str:
    return addr.split("/", 1)[0]


def observe(engine: Engine, stack: str) -> StackView:
    """The stack's services, tasks, networks and the swarm's nodes, as the manager reports them."""
    api = engine.api
    label = {"label": [f"{NAMESPACE_LABEL}={stack}"]}
    raw_services = engine.call("list services", api.services, filters=label, status=True)
    if not raw_services:
        raise ClusterError(f"no stack {stack!r} on this swarm (no service is labelled {NAMESPACE_LABEL}={stack})")
    nets = {n["Id"]: n for n in engine.call("list networks", api.networks)}
    nodes = {}
    for n in engine.call("list nodes", api.nodes):
        status = n.get("Status") or {}
        addr = status.get("Addr", "")
        if addr in ("", "0.0.0.0") and n.get("ManagerStatus"):
            addr = n["ManagerStatus"].get("Addr", "").rsplit(":", 1)[0]
        nodes[n["ID"]] = NodeInfo(
            n["ID"],
            (n.get("Description") or {}).get("Hostname", ""),
            addr,
            (n.get("Spec") or {}).get("Role", "worker"),
            status.get("State") == "ready",
        )
    services = []
    networks: dict[str, NetworkInfo] = {}
    owners: dict[str, str] = {}
    for svc in raw_services:
        spec = svc["Spec"]
        labels = spec.get("Labels") or {}
        attach = {n["Target"]: list(n.get("Aliases") or []) for n in spec["TaskTemplate"].get("Networks") or []}
        for nid in attach:
            raw = nets.get(nid, {})
            networks[nid] = NetworkInfo(nid, raw.get("Name", nid), bool(raw.get("Attachable")))
        vips = {v["NetworkID"]: _strip(v["Addr"]) for v in (svc.get("Endpoint") or {}).get("VirtualIPs") or []}
        tasks = engine.call(f"list tasks of {spec['Name']}", api.tasks, filters={"service": svc["ID"]})
        task_ips: dict[str, list[str]] = {nid: [] for nid in attach}
        task_nodes = []
        completed = 0
        for t in tasks:
            addresses = [
                (na["Network"]["ID"], _strip(a))
                for na in t.get("NetworksAttachments") or []
                for a in na.get("Addresses") or []
            ]
            for _, ip in addresses:
                owners[ip] = t.get("NodeID", "")  # old tasks too: a stale answer names its node
            if (t.get("Status") or {}).get("State") == "complete":
                completed += 1
            if t.get("DesiredState") != "running" or (t.get("Status") or {}).get("State") != "running":
                continue
            task_nodes.append(t.get("NodeID", ""))
            for nid, ip in addresses:
                if nid in task_ips:
                    task_ips[nid].append(ip)
        env = {}
        for item in spec["TaskTemplate"]["ContainerSpec"].get("Env") or []:
            k, _, v = item.partition("=")
            env[k] = v
        mode = (spec.get("EndpointSpec") or {}).get("Mode") or "vip"
        port = labels.get(PORT_LABEL)
        if port is None:
            ports = (spec.get("EndpointSpec") or {}).get("Ports") or []
            port = ports[0]["TargetPort"] if ports else None
        m = spec.get("Mode") or {}
        job = "ReplicatedJob" in m or "GlobalJob" in m
        if "Replicated" in m:
            desired = int(m["Replicated"].get("Replicas", 1))
        elif "ReplicatedJob" in m:
            desired = int(m["ReplicatedJob"].get("TotalCompletions") or 1)
        else:
            desired = int((svc.get("ServiceStatus") or {}).get("DesiredTasks", len(task_nodes)))
        services.append(
            ServiceInfo(
                name=spec["Name"],
                short=spec["Name"].removeprefix(f"{stack}_"),
                mode=mode,
                networks=attach,
                vips=vips,
                task_ips={k: sorted(v) for k, v in task_ips.items()},
                task_nodes=task_nodes,
                check=labels.get(CHECK_LABEL, ""),
                port=int(port) if port else None,
                env=env,
                desired=desired,
                job=job,
                completed=completed,
            )
        )
    services.sort(key=lambda s: s.name)
    return StackView(stack, services, networks, nodes, owners)


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


def app_targets(view: StackView, network_id: str) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """ZooKeeper members and Kafka brokers to ask, by the names clients use."""
    zk, kafka = [], []
    for s in view.services:
        if network_id not in s.networks or not s.port:
            continue
        if s.check == "zookeeper":
            zk.append((s.short, s.port))
        elif s.check == "kafka":
            kafka.append(advertised(s))
    return zk, kafka


def advertised(s: ServiceInfo) -> tuple[str, int]:
    """A broker's advertised address (first listener of KAFKA_ADVERTISED_LISTENERS), else its name."""
    value = s.env.get("KAFKA_ADVERTISED_LISTENERS", "")
    if value:
        first = value.split(",")[0].split("://", 1)[-1]
        host, _, port = first.rpartition(":")
        if host and port.isdigit():
            return host, int(port)
    return s.short, s.port or 9092


def broker_id(s: ServiceInfo) -> int | None:
    for key in ("BROKER_ID", "KAFKA_BROKER_ID", "NODE_ID", "KAFKA_NODE_ID"):
        if s.env.get(key, "").lstrip("-").isdigit():
            return int(s.env[key])
    return None


@dataclass(frozen=True)
class ProbePlan:
    node_id: str
    network_id: str
    dns: list[str]
    tcp: list[tuple[str, int]]
    zookeeper: list[tuple[str, int]]
    kafka: list[tuple[str, int]]

    def json(self) -> str:
        return json.dumps({"dns": self.dns, "tcp": self.tcp, "zookeeper": self.zookeeper, "kafka": self.kafka})


def plan_probes(view: StackView) -> list[ProbePlan]:
    """One probe per (node, attachable network); application checks from the first node only (pure)."""
    plans = []
    nodes = probe_nodes(view)
    for nid, net in sorted(view.networks.items(), key=lambda kv: kv[1].name):
        if not net.attachable:
            continue
        names = names_on(view, nid)
        tcp: list[tuple[str, int]] = []
        for s in view.services:
            if nid in s.networks and s.mode == "vip" and s.port and s.vips.get(nid):
                tcp.append((s.vips[nid], s.port))
                if s.task_ips.get(nid):
                    tcp.append((s.task_ips[nid][0], s.port))
        zk, kafka = app_targets(view, nid)
        for i, node in enumerate(nodes):
            plans.append(ProbePlan(node, nid, sorted(names), tcp, zk if i == 0 else [], kafka if i == 0 else []))
    return plans


# -- evaluation (pure) -----------------------------------------------------------------------------


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
        per_node = {node: results.get((node, nid)) for node in probe_nodes(view)}
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
        first = per_node.get(probe_nodes(view)[0]) if probe_nodes(view) else None
        if isinstance(first, Mapping):
            checks += _zookeeper_checks(view, nid, first)
            checks += _kafka_checks(view, nid, first)
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
    tcp = result.get("tcp", {})
    for s in view.services:
        vip = s.vips.get(nid)
        if nid not in s.networks or s.mode != "vip" or not s.port or not vip:
            continue
        r = tcp.get(f"{vip}:{s.port}", {})
        task_ip = (s.task_ips.get(nid) or [""])[0]
        task_r = tcp.get(f"{task_ip}:{s.port}", {}) if task_ip else {}
        ok = r.get("result") == "open"
        detail = ""
        if not ok and task_r.get("result") == "open":
            if host in no_ipvs:
                detail = (
                    f"the VIP does not answer but a task does ({task_ip}:{s.port}): {host}'s kernel has no IPVS "
                    "(ip_vs), which swarm VIPs need; use endpoint_mode: dnsrr or tasks.<service> names"
                )
            else:
                detail = (
                    f"the VIP does not answer but a task does ({task_ip}:{s.port}): the VIP's load balancer is broken"
                )
        elif not ok and not s.task_ips.get(nid):
            detail = "no running task behind the VIP"
        elif not ok:
            detail = f"the tasks do not answer on {s.port} either ({task_r.get('result', 'not tried')})"
        out.append(
            Check(f"vip {s.short} {vip}:{s.port} on {net.name}", host, ok, "open", r.get("result", "not tried"), detail)
        )
    return out


def _zookeeper_checks(view: StackView, nid: str, result: Mapping[str, Any]) -> list[Check]:
    members = [s for s in view.services if s.check == "zookeeper" and nid in s.networks and s.port]
    if not members:
        return []
    out = []
    modes = {}
    for s in members:
        r = result.get("zookeeper", {}).get(f"{s.short}:{s.port}", {})
        mode = r.get("mode")
        modes[s.short] = mode or "no answer"
        out.append(
            Check(
                f"zookeeper {s.short} srvr",
                "",
                bool(mode) and mode in ("leader", "follower", "standalone"),
                "leader, follower or standalone",
                mode or r.get("error", "no answer"),
            )
        )
    leaders = [n for n, m in modes.items() if m == "leader"]
    followers = [n for n, m in modes.items() if m == "follower"]
    standalone = len(members) == 1 and modes[members[0].short] == "standalone"
    ok = standalone or (len(leaders) == 1 and len(followers) == len(members) - 1)
    got = f"leader: {_fmt(leaders)}; followers: {_fmt(followers)}"
    others = {n: m for n, m in modes.items() if m not in ("leader", "follower")}
    if others:
        got += "; " + ", ".join(f"{n}: {m}" for n, m in sorted(others.items()))
    expected = "standalone" if len(members) == 1 else f"1 leader, {len(members) - 1} followers"
    out.append(Check("zookeeper ensemble", "", ok, expected, got))
    return out


def _kafka_checks(view: StackView, nid: str, result: Mapping[str, Any]) -> list[Check]:
    brokers = [s for s in view.services if s.check == "kafka" and nid in s.networks and s.port]
    if not brokers:
        return []
    out = []
    expected_ids = {b.short: broker_id(b) for b in brokers}
    seen_ids: dict[str, set[int]] = {}
    under: set[str] = set()
    for s in brokers:
        host, port = advertised(s)
        r = result.get("kafka", {}).get(f"{host}:{port}", {})
        want = expected_ids[s.short]
        if "metadata" not in r:
            out.append(
                Check(f"kafka {s.short} at {host}:{port}", "", False, f"broker id {want}", r.get("error", "no answer"))
            )
            continue
        md = r["metadata"]
        me = [b for b in md["brokers"] if b["host"] == host and b["port"] == port]
        got_id = me[0]["id"] if me else None
        ok = (
            r.get("api_versions", {}).get("error_code") == 0 and got_id is not None and (want is None or got_id == want)
        )
        detail = "" if me else f"no broker in its own metadata advertises {host}:{port}"
        out.append(
            Check(
                f"kafka {s.short} at {host}:{port}",
                "",
                ok,
                f"ApiVersions ok, broker id {want}",
                f"ApiVersions error {r['api_versions']['error_code']}, broker id {got_id}",
                detail,
            )
        )
        seen_ids[s.short] = {b["id"] for b in md["brokers"]}
        for t in md["topics"]:
            for p in t["partitions"]:
                if sorted(p["isr"]) != sorted(p["replicas"]):
                    under.add(f"{t['name']}/{p['index']}")
    wanted = {i for i in expected_ids.values() if i is not None}
    if seen_ids and all(len(ids) == 1 for ids in seen_ids.values()) and len(brokers) > 1:
        out.append(
            Check(
                "kafka cluster",
                "",
                True,
                f"brokers {sorted(wanted)}",
                "each broker lists only itself",
                "standalone brokers, not one cluster (the lab's tansu broker does not form clusters)",
            )
        )
    elif seen_ids:
        union = set().union(*seen_ids.values())
        out.append(
            Check("kafka cluster brokers", "", wanted <= union, f"brokers {sorted(wanted)}", f"brokers {sorted(union)}")
        )
        out.append(
            Check(
                "kafka under-replicated partitions",
                "",
                not under,
                "0",
                str(len(under)),
                ("under-replicated: " + ", ".join(sorted(under)[:10])) if under else "",
            )
        )
    return out


# -- running probes --------------------------------------------------------------------------------


def probe_script() -> str:
    return resources.files("swarmctl").joinpath("probe_script.py").read_text(encoding="utf-8")


def run_probe(engine: Engine, stack: str, network: str, plan: ProbePlan, image: str, script: str) -> dict[str, Any]:
    """Run one probe container on ``engine``'s node, attached to ``network``; always removed."""
    api = engine.api
    name = f"swarmctl-probe-{stack}-{uuid.uuid4().hex[:8]}"
    config = api.create_host_config(network_mode=network)
    try:
        created = engine.call(
            f"start a probe on {network}",
            api.create_container,
            image,
            command=["python3", "-c", script, plan.json()],
            host_config=config,
            labels={PROBE_LABEL: stack},
            name=name,
        )
    except HostError as e:
        if "No such image" in e.message or "not found" in e.message.lower():
            raise HostError(
                engine.name,
                f"the probe image {image} is not on this node: load it there, or set PROBE_IMAGE "
                "(inventory vars) to an image with python3 that the node has",
            ) from e
        raise
    cid = created["Id"]
    try:
        engine.call("start the probe", api.start, cid)
        status = engine.call("wait for the probe", api.wait, cid, timeout=PROBE_TIMEOUT)
        out: bytes = engine.call("read the probe's output", api.logs, cid, stdout=True, stderr=False)  # type: ignore[assignment]
        if status.get("StatusCode") != 0:
            err: bytes = engine.call("read the probe's errors", api.logs, cid, stdout=False, stderr=True)  # type: ignore[assignment]
            raise HostError(engine.name, f"the probe failed ({status.get('StatusCode')}): {err.decode()[-300:]}")
        return dict(json.loads(out.decode().strip().splitlines()[-1]))
    finally:
        try:
            engine.call("remove the probe", api.remove_container, cid, force=True)
        except HostError as e:
            log.warning("%s: could not remove probe %s: %s", engine.name, name, e.message)


def sweep_probes(engine: Engine) -> int:
    """Remove probe containers a crashed run left behind on this node."""
    left = engine.call("list probes", engine.api.containers, all=True, filters={"label": PROBE_LABEL})
    for c in left:
        engine.call("remove an old probe", engine.api.remove_container, c["Id"], force=True)
    return len(left)


@dataclass
class VerifyResult:
    stack: str
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0
    rounds: int = 0

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def json(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [asdict(c) for c in self.checks]}


def host_for_node(node: NodeInfo, hosts: Iterable[Host]) -> Host | None:
    hosts = list(hosts)
    for h in hosts:
        if h.address == node.addr:
            return h
    for h in hosts:
        if h.name == node.hostname:
            return h
    return None


def verify_stack(
    session: Session,
    stack: str,
    probe_image: str,
    wait: float = 0.0,
    report: Callable[[str], None] = lambda _: None,
) -> VerifyResult:
    """Run every check once; with ``wait`` > 0, again (every few seconds) until all pass or time is up."""
    from swarmctl.preflight import read_facts

    t0 = time.monotonic()
    manager = session.manager()
    script = probe_script()
    result = VerifyResult(stack)
    ipvs: dict[str, bool] = {}
    swept: set[str] = set()
    deadline = t0 + wait
    while True:
        result.rounds += 1
        view = observe(manager, stack)
        plans = plan_probes(view)
        node_ids = sorted({p.node_id for p in plans})
        hosts = {nid: host_for_node(view.nodes[nid], session.inventory.hosts) for nid in node_ids}
        outcomes: dict[tuple[str, str], Mapping[str, Any] | str] = {}

        def run_node(
            host: Host, plans: list[ProbePlan] = plans, hosts: dict[str, Host | None] = hosts, view: StackView = view
        ) -> dict[tuple[str, str], Mapping[str, Any] | str]:
            engine = session.engine(host)
            if host.name not in swept:
                sweep_probes(engine)
                swept.add(host.name)
            out: dict[tuple[str, str], Mapping[str, Any] | str] = {}
            for plan in plans:
                planned = hosts.get(plan.node_id)
                if planned is None or planned.name != host.name:
                    continue
                net = view.networks[plan.network_id].name
                try:
                    out[(plan.node_id, plan.network_id)] = run_probe(engine, stack, net, plan, probe_image, script)
                except HostError as e:
                    out[(plan.node_id, plan.network_id)] = e.message
            if host.name not in ipvs:
                try:
                    ipvs[host.name] = read_facts(session, host).ipvs != "no"
                except HostError:
                    ipvs[host.name] = True
            return out

        known = {h.name: h for h in hosts.values() if h is not None}
        for name, outcome in session.fan_out(run_node, list(known.values())).items():
            if outcome.value is not None:
                outcomes.update(outcome.value)
            else:
                for plan in plans:
                    h = hosts.get(plan.node_id)
                    if h is not None and h.name == name:
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
        result.checks = evaluate(view, outcomes, no_ipvs)
        if result.ok or time.monotonic() > deadline:
            break
        failing = [c for c in result.checks if not c.ok]
        report(f"{len(failing)} checks failing (e.g. {failing[0].name}: got {failing[0].got}); checking again")
        time.sleep(2)
    result.seconds = time.monotonic() - t0
    return result
