"""Host maintenance without losing a replica: maintain, drain and activate. read -> plan (pure) -> apply.

``docker node update --availability drain`` stops the node's tasks at once and starts their
replacements after (docker/docs#9917): every replicated service with a task there runs one short
until the replacement is up. Here the replacements come first, one host at a time:

1. pause the node (swarm places nothing new on it), once the application checks of what only it
   can run passed (below);
2. scale each replicated service that runs tasks there up by the node's share, and wait until the
   extra tasks run (healthy, where the service has a healthcheck) elsewhere;
3. drain the node, wait until its tasks stopped and their slots run elsewhere again, then scale
   the services back: the running count never falls below the desired count;
4. (maintain) run the command, restart the engine or reboot, wait until the node is Ready - a
   manager reachable and unlocked - set it active, wait until every service runs all its tasks
   and the application checks of the stacks whose services it carried pass again.

A service that only this node can run (a placement constraint such as ``node.labels.kafka.slot ==
2``, or ``max_replicas_per_node`` with no room elsewhere) cannot get a replacement: it is named and
refused unless ``--allow-down`` names it, and then the application gates of ``update`` (ZooKeeper
quorum, Kafka brokers and under-replicated partitions) must pass before the node goes down and
again after it is back. Hosts go workers first, then managers, the leader last; a manager only
while the other managers that are reachable make a majority without it.

Interrupted (Ctrl-C) or failed midway: the scale-ups are undone, the node is left paused or
drained as reported, and the message says how to bring it back (``swarmctl activate HOST``).
"""

from __future__ import annotations

import contextlib
import shlex
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from swarmctl import labels
from swarmctl.converge import wait_services_running
from swarmctl.errors import ClusterError, HostError, InputError, Interrupted, Refused, SwarmctlError, message_of
from swarmctl.facts.membership import autolock_on, read_membership
from swarmctl.facts.nodes import NodeView, placement_allows, read_nodes
from swarmctl.facts.services import is_running, mode_of, read_services
from swarmctl.interrupts import finishing
from swarmctl.inventory import Host, Inventory
from swarmctl.ops.autolock import stored_keys
from swarmctl.ops.engine_config import HostChange, quorum_refusal, systemctl_docker, wait_back
from swarmctl.ops.update import AppGates
from swarmctl.plan import DONE, FAILED, NOT_STARTED, Change, Notify, Plan, Report, Result, quiet
from swarmctl.transport.engine import Engine, Session
from swarmctl.wait import Pending, until
from swarmctl.yamlfile import suggest

MOVE_TIMEOUT = 300.0  # seconds for the replacements to run elsewhere (image pulls, healthchecks)
BACK_TIMEOUT = 300.0  # seconds for a host to be back after its engine restarted or it rebooted
CMD_TIMEOUT = 3600.0  # seconds for the maintenance command (an upgrade may take long)
GATE_TIMEOUT = 300.0  # seconds for the application checks to pass again
POLL = 1.0

PAUSE, DRAIN, ACTIVE = "pause", "drain", "active"


# -- read ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MaintainState:
    """What maintenance is planned from: the swarm as a manager lists it, and which node each
    inventory host's own engine says it is."""

    node_ids: Mapping[str, str]  # inventory host -> the node ID its engine reports ("" outside a swarm)
    unreachable: Mapping[str, str]  # inventory host -> why it could not be asked
    nodes: tuple[NodeView, ...]
    services: tuple[Mapping[str, Any], ...]  # as listed with status
    tasks: tuple[Mapping[str, Any], ...]  # every task that should run
    autolock: bool = False


def read_state(session: Session) -> tuple[MaintainState, Engine]:
    """Every inventory host's own node ID, then the swarm from a manager that answers.

    Raises:
        ClusterError: no manager of the inventory answers.
    """
    inv = session.inventory
    asked = session.fan_out(lambda h: read_membership(session.engine(h)))
    node_ids: dict[str, str] = {}
    unreachable: dict[str, str] = {}
    viewer: Engine | None = None
    for host in inv.hosts:
        o = asked[host.name]
        if o.error is not None:
            unreachable[host.name] = message_of(o.error)
            continue
        assert o.value is not None
        node_ids[host.name] = o.value.node_id if o.value.active else ""
        if viewer is None and o.value.active and o.value.control_available:
            viewer = session.engine(host)
    if viewer is None:
        why = "; ".join(f"{h}: {e}" for h, e in sorted(unreachable.items()))
        raise ClusterError("no manager of the inventory answers as part of a swarm" + (f" ({why})" if why else ""))
    services = read_services(viewer)
    tasks = viewer.tasks({"desired-state": ["running"]})
    autolock = autolock_on(viewer.inspect_swarm())
    state = MaintainState(node_ids, unreachable, tuple(read_nodes(viewer)), tuple(services), tuple(tasks), autolock)
    return state, viewer


# -- plan (pure) -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Share:
    """One service's running tasks on the node being maintained."""

    service: str  # full name
    service_id: str
    mode: str  # replicated | global
    replicas: int  # its replica count now (replicated)
    on_node: int  # its tasks on the node that run or are on their way to (assigned .. running)
    stack: str
    check: str  # its application check (x-swarmctl.check), "" for none
    stays: str  # why no replacement can run elsewhere ("" when one can)


@dataclass(frozen=True)
class HostSteps:
    """What happens to one host, in order."""

    host: str
    node_id: str
    manager: bool
    leader: bool
    availability: str  # before
    shares: tuple[Share, ...]
    changes: tuple[Change, ...]

    @property
    def moved(self) -> list[Share]:
        return [s for s in self.shares if s.mode == "replicated" and not s.stays]

    @property
    def down(self) -> list[Share]:
        """Services that are down while the host is: the pinned ones (--allow-down)."""
        return [s for s in self.shares if s.mode == "replicated" and s.stays]

    @property
    def gated(self) -> list[Share]:
        return [s for s in self.down if s.check]


@dataclass(frozen=True)
class MaintainPlan:
    hosts: tuple[HostSteps, ...]  # in apply order
    plan: Plan


@dataclass(frozen=True)
class Work:
    """What is done to each host after its tasks moved away (maintain; drain does none of it)."""

    command: tuple[str, ...] = ()
    restart_engine: bool = False
    reboot: bool = False
    activate: bool = True  # maintain ends with the node active; drain leaves it drained


def _placement(spec: Mapping[str, Any]) -> tuple[list[str], int]:
    placement = (spec.get("TaskTemplate") or {}).get("Placement") or {}
    return list(placement.get("Constraints") or []), int(placement.get("MaxReplicas") or 0)


def shares_on(node: NodeView, state: MaintainState, leaving: Iterable[str] = ()) -> list[Share]:
    """The services that run tasks on ``node``, and whether each could run them elsewhere (pure).

    Elsewhere: a node that is ready, active, not ``leaving`` (being maintained too) and that the
    service's placement constraints allow; with ``max_replicas_per_node``, enough of them for all
    its replicas."""
    gone = set(leaving) | {node.id}
    others = [n for n in state.nodes if n.id not in gone and n.ready and n.availability == ACTIVE]
    running: dict[str, int] = {}
    for t in state.tasks:
        # a task still starting there stops with the drain too: it is replaced first like a running one
        if t.get("NodeID") == node.id and t.get("DesiredState") == "running" and _live(t):
            running[str(t.get("ServiceID", ""))] = running.get(str(t.get("ServiceID", "")), 0) + 1
    out = []
    for svc in state.services:
        sid = str(svc.get("ID", ""))
        if sid not in running:
            continue
        spec = svc.get("Spec") or {}
        mode = mode_of(spec)
        if mode.endswith("-job"):
            continue  # a job's task ends on its own; nothing to replace
        constraints, most = _placement(spec)
        fit = [n for n in others if placement_allows(constraints, n)]
        replicas = (
            int(((spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas", 1)) if mode == "replicated" else 0
        )
        stays = ""
        if mode == "replicated":
            if not fit:
                shown = " and ".join(constraints) if constraints else "its placement"
                stays = f"only {node.label} can run it ({shown})"
            elif most and most * len(fit) < replicas:
                stays = f"at most {most} per node on the {len(fit)} other nodes that may run it: no room for {replicas}"
        svc_labels = spec.get("Labels") or {}
        out.append(
            Share(
                service=str(spec.get("Name", sid)),
                service_id=sid,
                mode=mode,
                replicas=replicas,
                on_node=running[sid],
                stack=str(svc_labels.get(labels.NAMESPACE, "")),
                check=str(svc_labels.get(labels.CHECK, "")),
                stays=stays,
            )
        )
    return sorted(out, key=lambda s: s.service)


def host_order(hosts: Sequence[str], state: MaintainState) -> list[str]:
    """Workers first, then managers, the leader last; inventory order within each (pure)."""
    by_id = {n.id: n for n in state.nodes}

    def rank(name: str) -> int:
        node = by_id.get(state.node_ids.get(name, ""))
        if node is None or not node.is_manager:
            return 0
        return 2 if node.leader else 1

    return sorted(hosts, key=rank)


def _inventory_hosts(inv: Inventory, hosts: Sequence[str]) -> list[str]:
    """``hosts`` once each, in order; InputError (with close matches) for a name the inventory lacks."""
    names = sorted(h.name for h in inv.hosts)
    for h in hosts:
        if h not in names:
            raise InputError(f"{h}: not a host of the inventory {inv.path}{suggest(h, names)}")
    return list(dict.fromkeys(hosts))


def plan_maintain(
    inv: Inventory,
    hosts: Sequence[str],
    state: MaintainState,
    work: Work,
    allow_down: Iterable[str] = (),
    verb: str = "maintain",
) -> MaintainPlan:
    """The steps for each host, in order (pure).

    Raises:
        InputError: a host not in the inventory, a service that only one of the hosts can run and
            ``allow_down`` does not name (naming them all), an ``allow_down`` that names no service.
        Refused: a host that cannot be asked, or that is not a node of this swarm.
    """
    wanted = _inventory_hosts(inv, hosts)
    for h in wanted:
        if h in state.unreachable:
            raise Refused(f"refusing to {verb} {h}: it cannot be asked which node it is ({state.unreachable[h]}); "
                          "bring it back or remove it from the swarm with `swarmctl bootstrap --prune`")  # fmt: skip
    by_id = {n.id: n for n in state.nodes}
    missing = [h for h in wanted if state.node_ids.get(h, "") not in by_id]
    if missing:
        raise Refused(f"refusing to {verb} {', '.join(missing)}: not a node of this swarm (its engine names no node "
                      "the managers list); run `swarmctl bootstrap` first")  # fmt: skip
    allowed = set(allow_down)
    known = {str((s.get("Spec") or {}).get("Name", "")) for s in state.services}
    unknown = sorted(allowed - known)
    if unknown:
        raise InputError(f"--allow-down {unknown[0]}: no such service{suggest(unknown[0], sorted(known))}")
    ordered = host_order(wanted, state)
    leaving = [state.node_ids[h] for h in wanted] if not work.activate else []
    steps: list[HostSteps] = []
    pinned: list[str] = []
    warnings: list[str] = []
    for h in ordered:
        node = by_id[state.node_ids[h]]
        # a drain of several hosts leaves them all drained: none may take the others' tasks
        shares = shares_on(node, state, [i for i in leaving if i != node.id])
        pinned += [f"{s.service} ({s.stays})" for s in shares if s.stays and s.service not in allowed]
        steps.append(_host_steps(h, node, shares, work))
    if pinned:
        raise InputError(
            f"refusing to {verb} {', '.join(ordered)}: no other node can run "
            + "; ".join(dict.fromkeys(pinned))
            + ": name them with --allow-down SERVICE,... to take them down for the maintenance (their application "
            "checks must pass before and after), or change their placement"
        )
    down = [n for n in state.nodes if n.id not in {state.node_ids[h] for h in wanted} and not n.ready]
    if down:
        warnings.append("already down: " + ", ".join(n.label for n in down) + " (fewer nodes to take the tasks)")
    changes = tuple(c for s in steps for c in s.changes)
    return MaintainPlan(tuple(steps), Plan(changes, tuple(warnings)))


def _host_steps(host: str, node: NodeView, shares: list[Share], work: Work) -> HostSteps:
    changes: list[Change] = []
    steps = HostSteps(host, node.id, node.is_manager, node.leader, node.availability, tuple(shares), ())
    # the checks first: their probe attaches to the stack's network, which a paused node refuses
    for s in steps.gated:
        changes.append(Change("service", s.service, "check", (), f"{s.check} check before {host} goes down"))
    if node.availability != PAUSE:
        changes.append(Change("node", host, "availability", ("Availability",), "pause: no new tasks"))
    for s in steps.moved:
        changes.append(Change("service", s.service, "scale", ("Mode.Replicated.Replicas",),
                              f"{s.replicas} -> {s.replicas + s.on_node}: started elsewhere first"))  # fmt: skip
    changes.append(Change("node", host, "availability", ("Availability",), "drain: its tasks stop"))
    for s in steps.moved:
        changes.append(Change("service", s.service, "scale", ("Mode.Replicated.Replicas",),
                              f"{s.replicas + s.on_node} -> {s.replicas}"))  # fmt: skip
    for s in steps.down:
        changes.append(Change("service", s.service, "down", (), f"while {host} is maintained (--allow-down)"))
    if work.command:
        changes.append(Change("host", host, "run", (), shlex.join(work.command)))
    if work.restart_engine:
        changes.append(Change("host", host, "restart-engine", (), "systemctl restart docker"))
    if work.reboot:
        changes.append(Change("host", host, "reboot", (), "systemctl reboot, then wait for it"))
    if work.activate:
        back = "Ready" + (", reachable" if node.is_manager else "")
        changes.append(Change("node", host, "wait", (), f"until {back}"))
        changes.append(Change("node", host, "availability", ("Availability",), "active"))
        changes.append(Change("swarm", "services", "wait", (), "until every service runs all its tasks"))
        for s in steps.gated:
            changes.append(Change("service", s.service, "check", (), f"{s.check} check after {host} is back"))
    return HostSteps(host, node.id, node.is_manager, node.leader, node.availability, tuple(shares), tuple(changes))


def plan_activate(inv: Inventory, hosts: Sequence[str], state: MaintainState) -> MaintainPlan:
    """Set each host's node active, then wait until every service runs all its tasks (pure)."""
    by_id = {n.id: n for n in state.nodes}
    steps = []
    for h in _inventory_hosts(inv, hosts):
        if h in state.unreachable:
            raise Refused(f"refusing to activate {h}: it cannot be asked which node it is ({state.unreachable[h]})")
        node = by_id.get(state.node_ids.get(h, ""))
        if node is None:
            raise Refused(f"refusing to activate {h}: not a node of this swarm; run `swarmctl bootstrap` first")
        flip = Change("node", h, "availability", ("Availability",), "active")
        own: tuple[Change, ...] = () if node.availability == ACTIVE else (flip,)
        steps.append(HostSteps(h, node.id, node.is_manager, node.leader, node.availability, (), own))
    changes = [c for s in steps for c in s.changes]
    if changes:
        changes.append(Change("swarm", "services", "wait", (), "until every service runs all its tasks"))
    return MaintainPlan(tuple(steps), Plan(tuple(changes)))


# -- apply ----------------------------------------------------------------------------------------


class GateSet:
    """The application gates of ``update`` (ZooKeeper quorum, Kafka brokers and under-replicated
    partitions), for the stacks whose checked services go down with a host."""

    def __init__(self, engine: Engine, probe_image: str, stacks: Iterable[str]):
        self.gates = {s: AppGates(engine, s, probe_image) for s in dict.fromkeys(stacks)}
        for g in self.gates.values():
            g.refresh()

    def use(self, engine: Engine) -> None:
        """Ask through ``engine`` from now on (the manager asked before may be the one restarted)."""
        for g in self.gates.values():
            g.engine = engine

    def check(self, stack: str, service: str) -> tuple[bool, str]:
        try:
            return self.gates[stack].check(service.removeprefix(f"{stack}_"))
        except (HostError, ClusterError) as e:
            return False, message_of(e)

    def wait(self, stack: str, service: str, timeout: float) -> str:
        return self.gates[stack].wait(service.removeprefix(f"{stack}_"), timeout)


@dataclass
class HostDone:
    """How one host's maintenance went."""

    host: str
    state: str = "untouched"  # untouched | paused | drained | active
    seconds: float = 0.0
    scaled_back: bool = True

    def json(self) -> dict[str, Any]:
        return {"host": self.host, "state": self.state, "seconds": round(self.seconds, 1)}


@dataclass
class Maintenance:
    """Applies a MaintainPlan host by host; ``report`` says what was done."""

    session: Session
    planned: MaintainPlan
    work: Work
    probe_image: str = ""
    notify: Notify = quiet
    move_timeout: float = MOVE_TIMEOUT
    back_timeout: float = BACK_TIMEOUT
    command_timeout: float = CMD_TIMEOUT
    gate_timeout: float = GATE_TIMEOUT
    unlock_keys: Sequence[str] = ()
    allow_down: frozenset[str] = frozenset()
    verb: str = "maintain"
    report: Report = field(init=False)
    done: list[HostDone] = field(init=False)
    _scaled: dict[str, int] = field(init=False, default_factory=dict)  # service ID -> replicas to restore

    def __post_init__(self) -> None:
        self.report = Report(plan=self.planned.plan, warnings=list(self.planned.plan.warnings))
        self.done = [HostDone(h.host) for h in self.planned.hosts]
        self.report.data["hosts"] = self.done

    # engines ------------------------------------------------------------------------------------

    def viewer(self, besides: str = "") -> Engine:
        """A manager that answers, another than ``besides`` when one does."""
        inv = self.session.inventory
        names = [h.name for h in inv.managers if h.name != besides] + ([besides] if besides else [])
        for name in names:
            try:
                engine = self.session.engine(name)
                if read_membership(engine).control_available:
                    return engine
            except HostError:
                continue
        raise ClusterError("no manager of the inventory answers")

    def set_availability(self, engine: Engine, node_id: str, availability: str, host: str) -> None:
        raw = next((n for n in engine.nodes() if n["ID"] == node_id), None)
        if raw is None:
            raise ClusterError(f"{host}: its node {node_id[:12]} is no longer listed by the managers")
        spec = dict(raw.get("Spec") or {})
        if spec.get("Availability") == availability:
            return
        spec["Availability"] = availability
        engine.update_node(node_id, int(raw["Version"]["Index"]), spec, what=f"set {host} {availability}")

    def scale(self, engine: Engine, service_id: str, replicas: int) -> None:
        svc = engine.inspect_service(service_id)
        spec = dict(svc["Spec"])
        mode = dict(spec.get("Mode") or {})
        if int((mode.get("Replicated") or {}).get("Replicas", 1)) == replicas:
            return
        mode["Replicated"] = {**(mode.get("Replicated") or {}), "Replicas": replicas}
        spec["Mode"] = mode
        engine.update_service(service_id, int(svc["Version"]["Index"]), spec, what=f"scale {spec.get('Name')}")

    def undo_scaling(self, engine: Engine) -> None:
        """Every service scaled up by this run back to its replica count (Ctrl-C held off meanwhile)."""
        with finishing("scaling the services back", self.notify):
            for sid, replicas in list(self._scaled.items()):
                self.scale(engine, sid, replicas)
                del self._scaled[sid]

    # waits --------------------------------------------------------------------------------------

    def wait_running(self, engine: Engine, want: Mapping[str, int], avoid: str, what: str) -> None:
        """Until each service (ID -> count) runs at least that many tasks on nodes other than ``avoid``."""

        def enough() -> bool | Pending:
            tasks = engine.tasks({"service": list(want), "desired-state": ["running"]})
            short = []
            for sid, count in want.items():
                have = sum(1 for t in tasks if t.get("ServiceID") == sid and is_running(t) and t.get("NodeID") != avoid)
                if have < count:
                    why = _waiting(tasks, sid)
                    short.append(f"{self._names.get(sid, sid[:12])} {have}/{count}" + (f" ({why})" if why else ""))
            return Pending(", ".join(short)) if short else True

        until(what, enough, self.move_timeout, first=POLL / 2, cap=POLL)

    def wait_empty(self, engine: Engine, node_id: str, host: str) -> None:
        """Until the node runs no task any more (a drained node's tasks stop)."""

        def empty() -> bool | Pending:
            left = [t for t in engine.tasks({"node": [node_id]}) if _live(t)]
            return Pending(f"{len(left)} tasks still on {host}") if left else True

        until(f"the tasks on {host} to stop", empty, self.move_timeout, first=POLL / 2, cap=POLL)

    @property
    def _names(self) -> dict[str, str]:
        return {s.service_id: s.service for h in self.planned.hosts for s in h.shares}

    # the run ------------------------------------------------------------------------------------

    def run(self) -> Report:
        """Each host in turn, from the facts as they are at its turn: the hosts before it moved
        tasks around, so its share of each service is read again (not taken from the plan)."""
        inv = self.session.inventory
        current: HostDone | None = None
        left: Iterator[Change] = iter(())
        at = -1
        try:
            for i, (planned, done) in enumerate(zip(self.planned.hosts, self.done, strict=True)):
                current, at = done, i
                started = time.monotonic()
                steps = planned if i == 0 else self.again(planned)
                left = iter(steps.changes)
                self._one(inv.host(steps.host), steps, done, left)
                done.seconds = time.monotonic() - started
        except KeyboardInterrupt:
            self._stop_scaling(current)
            raise Interrupted(self._left("interrupted", current)) from None
        except SwarmctlError as e:
            self._stop_scaling(current)
            host = current.host if current else "swarm"
            self.report.failures[host] = self._left(message_of(e), current)
        later = [c for h in self.planned.hosts[at + 1 :] for c in h.changes]
        for c in [*left, *later]:
            self.report.results.append(Result(c, NOT_STARTED))
        return self.report

    def again(self, planned: HostSteps) -> HostSteps:
        """One host's steps planned anew from the swarm as it is now.

        Raises:
            Refused: a service only this host can run now (the hosts before it moved tasks onto
                it) that --allow-down does not name.
        """
        state, _ = read_state(self.session)
        node = next((n for n in state.nodes if n.id == planned.node_id), None)
        if node is None:
            raise ClusterError(f"{planned.host}: its node {planned.node_id[:12]} is no longer listed by the managers")
        leaving = [h.node_id for h in self.planned.hosts if h.node_id != node.id] if not self.work.activate else []
        shares = shares_on(node, state, leaving)
        pinned = [f"{s.service} ({s.stays})" for s in shares if s.stays and s.service not in self.allow_down]
        if pinned:
            raise Refused(f"refusing to {self.verb} {planned.host}: no other node can run {'; '.join(pinned)} now: "
                          "name them with --allow-down, or change their placement")  # fmt: skip
        return _host_steps(planned.host, node, shares, self.work)

    def _stop_scaling(self, current: HostDone | None) -> None:
        if not self._scaled:
            return
        try:
            self.undo_scaling(self.viewer(current.host if current else ""))
        except SwarmctlError as e:
            self.report.warnings.append(f"could not scale back {', '.join(self._scaled)}: {message_of(e)}")

    def _left(self, why: str, current: HostDone | None) -> str:
        if current is None or current.state in ("untouched", ACTIVE):
            return why
        return (f"{why}; {current.host} is left {current.state}: `swarmctl activate {current.host}` "
                "brings it back once it is fine")  # fmt: skip

    def _step(self, changes: Iterable[Change], seconds: float = 0.0) -> Change:
        c = next(iter(changes))
        self.report.results.append(Result(c, DONE, seconds=seconds))
        self.notify(c.describe())
        return c

    def _one(self, host: Host, steps: HostSteps, done: HostDone, changes: Iterable[Change]) -> None:
        it = iter(changes)
        engine = self.viewer(host.name)
        if steps.manager and (self.work.restart_engine or self.work.reboot or self.work.command):
            why = quorum_refusal(read_nodes(engine), steps.node_id, host.name)
            if why:
                raise Refused(why.replace("restart the engine of", "take down"))
        gates = GateSet(engine, self.probe_image, [s.stack for s in steps.gated]) if steps.gated else None
        for s in steps.gated:
            assert gates is not None
            ok, seen = gates.check(s.stack, s.service)
            if not ok:
                raise Refused(f"refusing to take {s.service} down: its {s.check} check does not pass now ({seen}); "
                              "it would not survive the maintenance")  # fmt: skip
            self._step(it)
        if steps.availability != PAUSE:
            self.set_availability(engine, steps.node_id, PAUSE, host.name)
            done.state = "paused"
            self._step(it)
        moved = steps.moved
        for s in moved:
            self._scaled[s.service_id] = s.replicas
            self.scale(engine, s.service_id, s.replicas + s.on_node)
            self._step(it)
        if moved:
            self.wait_running(engine, {s.service_id: s.replicas for s in moved}, steps.node_id,
                              f"the replacements of {host.name}'s tasks to run elsewhere")  # fmt: skip
        self.set_availability(engine, steps.node_id, DRAIN, host.name)
        done.state = "drained"
        self._step(it)
        self.wait_empty(engine, steps.node_id, host.name)
        if moved:
            # the drained slots start again elsewhere: scaled back only once they run, so that the
            # scale-down never takes a running task while a replacement is still starting
            self.wait_running(engine, {s.service_id: s.replicas + s.on_node for s in moved}, steps.node_id,
                              f"every slot of {host.name}'s services to run elsewhere")  # fmt: skip
        for s in moved:
            self.scale(engine, s.service_id, s.replicas)
            del self._scaled[s.service_id]
            self._step(it)
        for _ in steps.down:
            self._step(it)
        if self.work.command:
            started = time.monotonic()
            self._run_command(host)
            self._step(it, time.monotonic() - started)
        change = HostChange(host.name, None, None, (), (), True, in_swarm=True, manager=steps.manager,
                            node_id=steps.node_id)  # fmt: skip
        others = [m.name for m in self.session.inventory.managers if m.name != host.name]
        if self.work.restart_engine:
            started = time.monotonic()
            with finishing(f"restarting the engine of {host.name}", self.notify):
                systemctl_docker(self.session, host, "restart")
            self._step(it, time.monotonic() - started)
        if self.work.reboot:
            started = time.monotonic()
            self._reboot(host)
            self._step(it, time.monotonic() - started)
        if not self.work.activate:
            return
        started = time.monotonic()
        wait_back(self.session, host, change, others, self.back_timeout, self.unlock_keys)
        self._step(it, time.monotonic() - started)
        engine = self.viewer(host.name)
        self.set_availability(engine, steps.node_id, ACTIVE, host.name)
        done.state = ACTIVE
        self._step(it)
        started = time.monotonic()
        wait_services_running(engine, self.back_timeout, self.notify)
        self._step(it, time.monotonic() - started)
        for s in steps.gated:
            assert gates is not None
            started = time.monotonic()
            gates.use(engine)
            gates.wait(s.stack, s.service, self.gate_timeout)
            self._step(it, time.monotonic() - started)

    def _run_command(self, host: Host) -> None:
        conn = self.session.pool.connection(host)
        result = conn.run(list(self.work.command), timeout=self.command_timeout,
                          on_line=lambda line: self.notify(f"{host.name}| {line}"))  # fmt: skip
        if not result.ok:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or [""]
            raise HostError(host.name, f"the maintenance command exited {result.rc}: {tail[0]}".rstrip(": "))

    def _reboot(self, host: Host) -> None:
        """``systemctl reboot``, then wait until the host answers over SSH with another boot ID."""
        conn = self.session.pool.connection(host)
        boot = conn.run(["cat", "/proc/sys/kernel/random/boot_id"], timeout=30).check("read the boot ID").stdout.strip()
        self.session.forget_engine(host)
        with contextlib.suppress(HostError):  # the connection may end before the command's answer does
            conn.run(["systemctl", "reboot"], timeout=30)
        conn.close()

        def rebooted() -> bool | Pending:
            now = conn.run(["cat", "/proc/sys/kernel/random/boot_id"], timeout=10).check("read the boot ID")
            return True if now.stdout.strip() != boot else Pending("still the boot before the reboot")

        def late(seen: str) -> HostError:
            return HostError(host.name, f"not back over SSH {self.back_timeout:g}s after the reboot: {seen}")

        until(f"{host.name} to come back from its reboot", rebooted, self.back_timeout, first=2.0, cap=5.0,
              error=late)  # fmt: skip


def _live(task: Mapping[str, Any]) -> bool:
    state = str((task.get("Status") or {}).get("State", ""))
    return state in ("assigned", "accepted", "preparing", "ready", "starting", "running")


def _waiting(tasks: Iterable[Mapping[str, Any]], service_id: str) -> str:
    """The newest not-running task's state and error, for a timeout's message."""
    mine = [t for t in tasks if t.get("ServiceID") == service_id and not is_running(t)]
    if not mine:
        return ""
    t = max(mine, key=lambda t: str((t.get("Status") or {}).get("Timestamp", "")))
    st = t.get("Status") or {}
    return f"{st.get('State')}: {st.get('Err') or st.get('Message', '')}".rstrip(": ")


def maintain(
    session: Session,
    hosts: Sequence[str],
    work: Work,
    allow_down: Iterable[str] = (),
    plan_only: bool = False,
    probe_image: str = "",
    notify: Notify = quiet,
    verb: str = "maintain",
) -> Report:
    """maintain (and drain, with ``Work(activate=False)``): read, plan, apply host by host.

    Returns:
        A Report: a Result per change (not started after a failure), ``failures`` naming the host
        that stopped the run and the state it is left in, ``data["hosts"]``: HostDone per host.

    Raises:
        InputError / Refused before anything changed; Interrupted (Ctrl-C) after the scale-ups were undone.
    """
    allow = list(allow_down)
    state, _ = read_state(session)
    planned = plan_maintain(session.inventory, hosts, state, work, allow, verb)
    if plan_only:
        return Report(plan=planned.plan, warnings=list(planned.plan.warnings),
                      data={"hosts": [HostDone(h.host, "untouched") for h in planned.hosts]})  # fmt: skip
    managers_go_down = any(h.manager for h in planned.hosts) and (work.restart_engine or work.reboot)
    keys = stored_keys(session.inventory) if state.autolock and managers_go_down else []
    run = Maintenance(session, planned, work, probe_image, notify, unlock_keys=keys, allow_down=frozenset(allow),
                      verb=verb)  # fmt: skip
    return run.run()


def activate(session: Session, hosts: Sequence[str], plan_only: bool = False, notify: Notify = quiet,
             timeout: float = BACK_TIMEOUT) -> Report:  # fmt: skip
    """Set each host's node active, then wait until every service runs all its tasks."""
    state, engine = read_state(session)
    planned = plan_activate(session.inventory, hosts, state)
    report = Report(plan=planned.plan, data={"hosts": [HostDone(h.host, h.availability) for h in planned.hosts]})
    if plan_only or planned.plan.empty:
        return report
    run = Maintenance(session, planned, Work(), notify=notify)
    changes = iter(planned.plan.changes)
    for steps, done in zip(planned.hosts, report.data["hosts"], strict=True):
        if steps.changes:
            run.set_availability(engine, steps.node_id, ACTIVE, steps.host)
            done.state = ACTIVE
            report.done(next(changes), notify=notify)
    wait = next(changes)
    try:
        wait_services_running(engine, timeout, notify)
        report.done(wait, notify=notify)
    except SwarmctlError as e:
        report.results.append(Result(wait, FAILED, message_of(e)))
        report.failures["services"] = message_of(e)
    return report
