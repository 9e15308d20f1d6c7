"""A stack as the swarm has it: its objects (what a deploy compares with) and its running shape
(services, tasks, addresses, networks and nodes: what verify and the rollout gates look at)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from swarmctl import labels
from swarmctl.errors import ClusterError
from swarmctl.facts.nodes import NodeView, read_nodes
from swarmctl.facts.services import desired_tasks, is_job, is_running, read_services, stack_filter, task_state
from swarmctl.transport.engine import Engine

# -- the objects a deploy compares with -------------------------------------------------------------


@dataclass(frozen=True)
class Wanted:
    """The names a stack's files ask for, so that reading the swarm can also check the externals."""

    networks: frozenset[str] = frozenset()
    external_networks: frozenset[str] = frozenset()
    secrets: frozenset[str] = frozenset()
    external_secrets: frozenset[str] = frozenset()
    configs: frozenset[str] = frozenset()
    external_configs: frozenset[str] = frozenset()


@dataclass
class StackObjects:
    """The stack's objects as the swarm has them (raw API dicts), by name."""

    networks: dict[str, dict[str, Any]] = field(default_factory=dict)
    secrets: dict[str, dict[str, Any]] = field(default_factory=dict)
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    foreign_networks: dict[str, dict[str, Any]] = field(default_factory=dict)  # same name, other owner
    missing_external: list[str] = field(default_factory=list)
    network_names: dict[str, str] = field(default_factory=dict)  # every network's ID -> name

    def of_kind(self, kind: str) -> dict[str, dict[str, Any]]:
        return {"network": self.networks, "secret": self.secrets, "config": self.configs, "service": self.services}[
            kind
        ]

    def secrets_in_use(self) -> set[str]:
        """Secrets the stack's services refer to."""
        return {
            ref["SecretName"]
            for svc in self.services.values()
            for ref in svc["Spec"]["TaskTemplate"]["ContainerSpec"].get("Secrets") or []
        }


def read_objects(engine: Engine, stack: str, wanted: Wanted = Wanted()) -> StackObjects:
    """The stack's networks, secrets, configs and services on the swarm, and checks of externals."""
    cur = StackObjects()
    everything = {n["Name"]: n for n in engine.networks()}
    cur.network_names = {n["Id"]: name for name, n in everything.items()}
    for name, n in everything.items():
        if (n.get("Labels") or {}).get(labels.NAMESPACE) == stack:
            cur.networks[name] = n
    for name in wanted.networks - set(cur.networks):
        if name in everything:
            cur.foreign_networks[name] = everything[name]
    for name in sorted(wanted.external_networks):
        net = everything.get(name)
        if net is None:
            cur.missing_external.append(f"network {name}")
        elif net.get("Scope") != "swarm":
            cur.missing_external.append(f"network {name} (scope {net.get('Scope')}, not swarm)")
    for kind, have, external, asked in (
        ("secret", cur.secrets, wanted.external_secrets, wanted.secrets),
        ("config", cur.configs, wanted.external_configs, wanted.configs),
    ):
        for obj in engine.objects(kind, filters=stack_filter(stack)):
            have[obj["Spec"]["Name"]] = obj
        if not (external or asked):
            continue
        # external objects, and objects of this stack made by another tool without the label
        everyone = {o["Spec"]["Name"]: o for o in engine.objects(kind)}
        for name in sorted(external):
            if name not in everyone:
                cur.missing_external.append(f"{kind} {name}")
            else:
                have.setdefault(name, everyone[name])
        for name in sorted(asked):
            if name in everyone:
                have.setdefault(name, everyone[name])
    for svc in read_services(engine, stack):
        cur.services[svc["Spec"]["Name"]] = svc
    return cur


# -- the running shape verify and the gates look at -------------------------------------------------


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
    standalone: bool = False  # x-swarmctl.standalone: a broker declared not to form a cluster


@dataclass(frozen=True)
class NetworkInfo:
    id: str
    name: str
    attachable: bool


@dataclass
class StackView:
    stack: str
    services: list[ServiceInfo]
    networks: dict[str, NetworkInfo]
    nodes: dict[str, NodeView]
    owners: dict[str, str] = field(default_factory=dict)  # task IP (any task, old ones too) -> node ID

    def service(self, short: str) -> ServiceInfo | None:
        return next((s for s in self.services if s.short == short), None)


def _strip(addr: str) -> str:
    return addr.split("/", 1)[0]


def environment(spec: Mapping[str, Any]) -> dict[str, str]:
    """A service's container environment as a mapping."""
    env = {}
    for item in spec["TaskTemplate"]["ContainerSpec"].get("Env") or []:
        k, _, v = item.partition("=")
        env[k] = v
    return env


def check_port(spec: Mapping[str, Any]) -> int | None:
    """The port of the service's application check: ``x-swarmctl.port``, else its first published target."""
    port = (spec.get("Labels") or {}).get(labels.PORT)
    if port is None:
        ports = (spec.get("EndpointSpec") or {}).get("Ports") or []
        port = ports[0]["TargetPort"] if ports else None
    return int(port) if port else None


def _service_info(
    stack: str, svc: Mapping[str, Any], tasks: Iterable[Mapping[str, Any]], owners: dict[str, str]
) -> ServiceInfo:
    spec = svc["Spec"]
    attach = {n["Target"]: list(n.get("Aliases") or []) for n in spec["TaskTemplate"].get("Networks") or []}
    vips = {v["NetworkID"]: _strip(v["Addr"]) for v in (svc.get("Endpoint") or {}).get("VirtualIPs") or []}
    tasks = list(tasks)
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
        if task_state(t) == "complete":
            completed += 1
        if not is_running(t):
            continue
        task_nodes.append(t.get("NodeID", ""))
        for nid, ip in addresses:
            if nid in task_ips:
                task_ips[nid].append(ip)
    return ServiceInfo(
        name=spec["Name"],
        short=spec["Name"].removeprefix(f"{stack}_"),
        mode=(spec.get("EndpointSpec") or {}).get("Mode") or "vip",
        networks=attach,
        vips=vips,
        task_ips={k: sorted(v) for k, v in task_ips.items()},
        task_nodes=task_nodes,
        check=(spec.get("Labels") or {}).get(labels.CHECK, ""),
        port=check_port(spec),
        env=environment(spec),
        desired=desired_tasks(svc, tasks),
        job=is_job(spec),
        completed=completed,
        standalone=(spec.get("Labels") or {}).get(labels.STANDALONE) == "true",
    )


def observe(engine: Engine, stack: str) -> StackView:
    """The stack's services, tasks, networks and the swarm's nodes, as the manager reports them.

    Raises:
        ClusterError: no service of the stack exists.
    """
    raw_services = read_services(engine, stack)
    if not raw_services:
        raise ClusterError(f"no stack {stack!r} on this swarm (no service is labelled {labels.NAMESPACE}={stack})")
    nets = {n["Id"]: n for n in engine.networks()}
    nodes = {n.id: n for n in read_nodes(engine)}
    services = []
    networks: dict[str, NetworkInfo] = {}
    owners: dict[str, str] = {}
    for svc in raw_services:
        tasks = engine.tasks(filters={"service": [svc["ID"]]})
        info = _service_info(stack, svc, tasks, owners)
        for nid in info.networks:
            raw = nets.get(nid, {})
            networks[nid] = NetworkInfo(nid, raw.get("Name", nid), bool(raw.get("Attachable")))
        services.append(info)
    services.sort(key=lambda s: s.name)
    return StackView(stack, services, networks, nodes, owners)
