"""Rolling updates that keep stateful services serving: one service at a time, behind gates.

``docker stack deploy`` updates every changed service at once: one image bump restarts all three
brokers together. Here each changed service is updated alone (its own update_config applies
within it), then two gates must pass before the next one starts:

1. health: every task of the service runs (healthy where it has a healthcheck) for its monitor
   window, and swarm did not pause or roll the update back;
2. application (``x-swarmctl.check``, kept as the label ``io.swarmctl.check``): ZooKeeper - the
   member answers ``srvr`` and the ensemble has one leader and the rest followers; Kafka - the
   broker answers at its advertised name with its id and, on a real cluster, nothing is
   under-replicated; tcp - the port takes connections.

Order comes from the stack (``x-swarmctl.rollout: {group, order}``): lower ``order`` first; within
a group of ZooKeeper members the leader goes last, within Kafka brokers the controller goes last.
Nothing is hard-coded by service name. On a failure the rollout stops, the failing service is
rolled back (by swarm per its failure_action, or explicitly), the rest is left as it was, and the
report says which service, the task error, what was rolled back and what was not touched.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from swarmctl import labels
from swarmctl.checks import kafka, kraft, tcp, zookeeper
from swarmctl.checks.probe import ProbePlan, run_probe
from swarmctl.compose.reference import service_image
from swarmctl.converge import OnProgress, last_task_error, no_progress, wait_converged, write_service
from swarmctl.errors import (
    ClusterError,
    EngineError,
    ExitStatus,
    HostError,
    InputError,
    SwarmctlError,
    TimeoutExpired,
)
from swarmctl.facts.services import read_services
from swarmctl.facts.stack import ServiceInfo, observe
from swarmctl.inventory import Inventory
from swarmctl.ops.history import Recording, record
from swarmctl.ops.registry import check_logins, load_credentials, resolve_images, short_digest
from swarmctl.plan import DONE, FAILED, NOT_STARTED, ROLLED_BACK, Change, Notify, Plan, Report, Result, quiet
from swarmctl.spec import changed_fields
from swarmctl.transport.engine import Engine
from swarmctl.wait import Pending, until

log = logging.getLogger(__name__)

GATE_POLL = 1.0
ROLLBACK_POLL = 0.5  # an interrupted rollout exits soon after its rollback finished


@dataclass(frozen=True)
class Step:
    """One service to update: its current state and the spec it gets."""

    name: str  # full service name
    short: str
    current: Mapping[str, Any]  # the service as the API lists it
    spec: Mapping[str, Any]  # the spec to send
    fields: tuple[str, ...]
    registry_auth: str | None = field(default=None, repr=False)  # X-Registry-Auth for its image

    @property
    def labels(self) -> Mapping[str, str]:
        return self.current["Spec"].get("Labels") or {}

    @property
    def check(self) -> str:
        return self.labels.get(labels.CHECK, "")

    @property
    def group(self) -> str:
        return self.labels.get(labels.GROUP, "")

    @property
    def order(self) -> int:
        value = self.labels.get(labels.ORDER, "0")
        return int(value) if value.lstrip("-").isdigit() else 0

    def image_from(self) -> str:
        return str(self.current["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]).split("@")[0]

    def image_to(self) -> str:
        return str(self.spec["TaskTemplate"]["ContainerSpec"]["Image"]).split("@")[0]

    def change(self, last: bool = False) -> Change:
        detail = f"{self.image_from()} -> {self.image_to()}" if self.image_from() != self.image_to() else ""
        pinned = str(self.spec["TaskTemplate"]["ContainerSpec"]["Image"]).partition("@")[2]
        if detail and pinned:
            detail += f" ({short_digest(pinned)})"
        if last:
            detail = (detail + "; " if detail else "") + "goes last"
        return Change("service", self.short, "update", self.fields or ("TaskTemplate.ForceUpdate",), detail)


@dataclass
class StepResult:
    name: str
    from_: str
    to: str
    result: str = NOT_STARTED  # updated | rolled back | failed | not started
    seconds: float = 0.0
    detail: str = ""

    def json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "from": self.from_,
            "to": self.to,
            "result": self.result,
            "seconds": round(self.seconds, 1),
            "detail": self.detail,
        }


UPDATED = "updated"


class RolloutFailed(ClusterError):
    def __init__(self, message: str, results: list[StepResult]):
        self.results = results
        super().__init__(message)


class RolloutInterrupted(RolloutFailed):
    """Ctrl-C or SIGTERM during a rollout: the service being changed was rolled back (or, its update
    already complete, left updated); the results say what was done, rolled back and not started."""

    exit_status = ExitStatus.INTERRUPTED


def _summary(results: list[StepResult]) -> str:
    parts = []
    for label, kind in (("updated", UPDATED), ("rolled back", ROLLED_BACK), ("failed", FAILED),
                        ("not started", NOT_STARTED)):  # fmt: skip
        names = [r.name for r in results if r.result == kind]
        if names:
            parts.append(f"{label}: {', '.join(names)}")
    return "; ".join(parts)


# -- planning (pure) -------------------------------------------------------------------------------


def plan_order(steps: list[Step], last: set[str]) -> list[Step]:
    """Order: x-swarmctl rollout order, then group; within a group the members in ``last``
    (ZooKeeper leader, Kafka controller) after the others; then by name (pure)."""
    return sorted(steps, key=lambda s: (s.order, s.group, s.short in last, s.short))


def plan_update(
    stack: str,
    current: Mapping[str, Mapping[str, Any]],
    services: list[str],
    images: Mapping[str, str],
    env: Mapping[str, Mapping[str, str]],
    force: bool,
) -> list[Step]:
    """The steps of `swarmctl update` from the running services (pure).

    Args:
        current: full service name -> the service as the API lists it.
        services: short names to act on (all of the stack's when empty and --force).
        images, env: short name -> new image / variables to set.

    Raises:
        InputError: an unknown service, or nothing asked for.
    """
    by_short = {name.removeprefix(f"{stack}_"): name for name in current}
    named = list(dict.fromkeys([*services, *images, *env]))
    unknown = [n for n in named if n not in by_short]
    if unknown:
        known = ", ".join(sorted(by_short)) or "none"
        raise InputError(f"no service {', '.join(unknown)} in stack {stack} (its services: {known})")
    if not named and not force:
        raise InputError("nothing to update: name --image SERVICE=IMAGE, --env SERVICE:KEY=VALUE or --force")
    targets = named or sorted(by_short)
    steps = []
    for short in targets:
        svc = current[by_short[short]]
        spec = copy.deepcopy(dict(svc["Spec"]))
        container = spec["TaskTemplate"]["ContainerSpec"]
        if short in images:
            container["Image"] = service_image(images[short])
            # so that a later deploy of the unchanged stack file brings the file's image back
            spec.setdefault("Labels", {})[labels.IMAGE] = images[short]
        if short in env:
            variables = dict(item.partition("=")[::2] for item in container.get("Env") or [])
            variables.update(env[short])
            container["Env"] = sorted(f"{k}={v}" for k, v in variables.items())
        if force and (not services or short in services):
            spec["TaskTemplate"]["ForceUpdate"] = int(spec["TaskTemplate"].get("ForceUpdate", 0)) + 1
        fields = tuple(changed_fields(spec, svc["Spec"], {}))
        if fields:
            steps.append(Step(svc["Spec"]["Name"], short, svc, spec, fields))
    return steps  # empty when the services already have those images and variables: nothing to do


# -- application gates --------------------------------------------------------------------------------


class Gates(Protocol):
    """The application gates a rollout asks before and after each step (AppGates: probes inside
    the stack's network; the unit tier's scripted FakeGates)."""

    def refresh(self) -> None: ...

    def goes_last(self) -> set[str]: ...

    def check(self, short: str) -> tuple[bool, str]: ...

    def wait(self, short: str, timeout: float) -> str: ...

    def safe_to_stop(self, short: str, timeout: float) -> str: ...


@dataclass
class AppGates:
    """Application checks run from a probe on a manager's node, inside the stack's network."""

    engine: Engine
    stack: str
    probe_image: str
    services: dict[str, ServiceInfo] = field(default_factory=dict)

    def refresh(self) -> None:
        self.services = {s.short: s for s in observe(self.engine, self.stack).services}

    def _network(self, shorts: list[str]) -> str | None:
        counts: dict[str, int] = {}
        for short in shorts:
            s = self.services.get(short)
            if s is None:
                continue
            for nid in s.networks:
                counts[nid] = counts.get(nid, 0) + 1
        if not counts:
            return None
        raw = {n["Id"]: n for n in self.engine.networks()}
        for nid, _ in sorted(counts.items(), key=lambda kv: -kv[1]):
            net = raw.get(nid)
            if net and net.get("Attachable"):
                return str(net["Name"])
        return None

    def _advertised(self, short: str) -> tuple[str, int]:
        s = self.services[short]
        return kafka.advertised(s.env, s.short, s.port)

    def _probe(
        self,
        zk: list[str] | None = None,
        brokers: list[str] | None = None,
        ports: list[str] | None = None,
        controllers: list[str] | None = None,
    ) -> dict[str, Any]:
        zk, brokers, ports, controllers = zk or [], brokers or [], ports or [], controllers or []
        shorts = [*zk, *brokers, *ports, *controllers]
        network = self._network(shorts)
        if network is None:
            raise ClusterError(f"cannot check {', '.join(shorts)}: none of their networks is attachable")
        plan = ProbePlan(
            node_id="",
            network_id="",
            tcp=[(s, self.services[s].port or 0) for s in ports],
            zookeeper=[(s, self.services[s].port or zookeeper.DEFAULT_PORT) for s in zk],
            kafka=[self._advertised(s) for s in brokers],
            quorum=[(s, self.services[s].port or kraft.DEFAULT_PORT) for s in controllers],
        )
        return run_probe(self.engine, self.stack, network, plan, self.probe_image)

    def _node_ids(self, check: str) -> dict[str, int]:
        ids = {s: kafka.node_id(self.services[s].env) for s in self.members(check)}
        return {s: i for s, i in ids.items() if i is not None}

    def _quorum(self, result: dict[str, Any] | None = None) -> kraft.QuorumView:
        """The KRaft quorum as the stack's controllers answer DescribeQuorum."""
        controllers = self.members("kafka-controller")
        result = result if result is not None else self._probe(controllers=controllers)
        return kraft.quorum_view({s: kraft.answer(result, s, self.services[s].port) for s in controllers})

    def _fetch_timeout_ms(self) -> int:
        envs = [self.services[s].env for s in self.members("kafka-controller")]
        return max((kraft.fetch_timeout_ms(e) for e in envs), default=kraft.FETCH_TIMEOUT_MS)

    def members(self, check: str) -> list[str]:
        return sorted(s.short for s in self.services.values() if s.check == check and s.port)

    def _modes(self, result: dict[str, Any], zk: list[str]) -> dict[str, str]:
        return {m: zookeeper.member_mode(result, m, self.services[m].port or zookeeper.DEFAULT_PORT) for m in zk}

    def goes_last(self) -> set[str]:
        """The ZooKeeper leader, the active KRaft controller (DescribeQuorum's leader) and, on a
        ZooKeeper-mode Kafka, the controller broker (Metadata's controller), right now."""
        last: set[str] = set()
        zk, brokers, controllers = self.members("zookeeper"), self.members("kafka"), self.members("kafka-controller")
        if not zk and not brokers and not controllers:
            return last
        result = self._probe(zk=zk, brokers=brokers, controllers=controllers)
        lead = zookeeper.leader(self._modes(result, zk))
        if lead:
            last.add(lead)
        ids = {**self._node_ids("kafka"), **self._node_ids("kafka-controller")}
        active = self._quorum(result).leader if controllers else None
        last.update(s for s, i in ids.items() if active is not None and i == active)
        answers = {s: kafka.broker_answer(result, *self._advertised(s)) for s in brokers}
        keys = [k for a in answers.values() for k in (a.get("api_versions") or {}).get("keys", [])]
        if any(kraft.kraft(self.services[s].env) for s in brokers) or kraft.kraft({}, keys):
            # under KRaft, Metadata's controller is a random live broker: only DescribeQuorum's
            # leader (a broker in combined mode) goes last
            return last
        controller_ids = {a["metadata"]["controller"] for a in answers.values() if a.get("metadata")}
        for s in brokers:
            if len(controller_ids) == 1 and kafka.broker_id(self.services[s].env) in controller_ids:
                last.add(s)
        return last

    def check(self, short: str) -> tuple[bool, str]:
        """Whether the application around ``short`` is healthy; and what was seen."""
        s = self.services.get(short)
        if s is None or not s.check:
            return True, "no application check"
        if s.check == "zookeeper":
            zk = self.members("zookeeper")
            modes = self._modes(self._probe(zk=zk), zk)
            ok = zookeeper.judge_member(modes.get(short, "no answer")).ok and zookeeper.judge_ensemble(modes).ok
            return ok, ", ".join(f"{m}: {mode}" for m, mode in sorted(modes.items()))
        if s.check == "kafka-controller":
            return self._controller_check(short)
        if s.check == "kafka":
            host, port = self._advertised(short)
            found = kafka.broker_answer(self._probe(brokers=self.members("kafka")), host, port)
            want = kafka.broker_id(s.env)
            v = kafka.judge_broker(found, host, port, want)
            if not v.ok:
                return False, f"{short} at {host}:{port}: {v.got}" + (f" ({v.detail})" if v.detail else "")
            md = found["metadata"]
            wanted = {kafka.broker_id(self.services[b].env) for b in self.members("kafka")}
            sees = kafka.judge_sees(kafka.registered(md), wanted, s.standalone, want)
            if not sees.ok:
                return False, f"{short} sees {sees.got}, expected {sees.expected}" + (
                    f" ({sees.detail})" if sees.detail else ""
                )
            replication = kafka.judge_replication(md)
            if not s.standalone and not replication.ok:
                return False, f"{replication.got} partitions {replication.detail}"
            return True, f"broker {want} answers" + (" (standalone by declaration)" if s.standalone else "")
        seen = tcp.answer(self._probe(ports=[short]), short, s.port or 0)
        return tcp.judge_port(seen).ok, f"{short}:{s.port} {seen}"

    def _controller_check(self, short: str) -> tuple[bool, str]:
        """The quorum has one leader and ``short`` is a voter caught up with it."""
        view, ids = self._quorum(), self._node_ids("kafka-controller")
        if short in view.unanswered:
            return False, f"{short}: {view.unanswered[short]}"
        lead = kraft.judge_leader(view, ids)
        if not lead.ok:
            return False, f"quorum leader: {lead.got}" + (f" ({lead.detail})" if lead.detail else "")
        me = ids.get(short)
        if me is None:
            return False, f"{short}: no node id in its environment"
        voter = kraft.judge_voter(view, me, self._fetch_timeout_ms())
        leader = next((s for s, i in ids.items() if i == view.leader), str(view.leader))
        seen = f"{short} (node {me}): {voter.got}; leader {leader}, epoch {view.epoch}"
        return voter.ok, seen + (f" ({voter.detail})" if not voter.ok and voter.detail else "")

    def ready_to_stop(self, short: str) -> tuple[bool, str]:
        """Whether ``short`` may go down now: a KRaft controller only while the other voters caught
        up form a majority; a broker only while no partition would fall below min.insync.replicas."""
        s = self.services.get(short)
        if s is None or s.check not in ("kafka-controller", "kafka"):
            return True, "no gate before it stops"
        if s.check == "kafka-controller":
            ids = self._node_ids("kafka-controller")
            if short not in ids:
                return False, f"{short}: no node id in its environment"
            return kraft.can_stop(self._quorum(), ids[short], self._fetch_timeout_ms())
        if s.standalone:
            return True, "standalone by declaration: no partition has another replica"
        host, port = self._advertised(short)
        found = kafka.broker_answer(self._probe(brokers=self.members("kafka")), host, port)
        if "metadata" not in found:
            return False, f"{short} at {host}:{port}: {found.get('error', 'no answer')}"
        me, least = kafka.broker_id(s.env), kafka.min_insync(s.env)
        below = kafka.would_fall_below(found["metadata"], me, least)
        if below:
            return (
                False,
                f"stopping broker {me} leaves {len(below)} partitions below min.insync.replicas "
                f"{least}: {', '.join(below[:5])}",
            )
        return True, f"every partition keeps {least}+ in-sync replicas without broker {me}"

    def safe_to_stop(self, short: str, timeout: float) -> str:
        """Poll ``ready_to_stop`` until it holds; TimeoutExpired with what was seen last."""
        return self._poll(f"{short} to be safe to stop", lambda: self.ready_to_stop(short), timeout,
                          f"{short} was not safe to stop within {timeout:g}s")  # fmt: skip

    def wait(self, short: str, timeout: float) -> str:
        """Poll the application gate until it passes; TimeoutExpired with what was seen last."""
        return self._poll(f"the application check of {short}", lambda: self.check(short), timeout,
                          f"application check of {short} did not pass in {timeout:g}s")  # fmt: skip

    @staticmethod
    def _poll(what: str, judge: Callable[[], tuple[bool, str]], timeout: float, late: str) -> str:
        """Ask ``judge`` every GATE_POLL until it holds (a host or cluster error counts as "not yet");
        TimeoutExpired ``late: <what was seen last>``."""

        def holds() -> str | Pending:
            try:
                ok, seen = judge()
            except (HostError, ClusterError) as e:
                ok, seen = False, str(e)
            return seen if ok else Pending(seen)

        return until(what, holds, timeout, first=GATE_POLL, cap=GATE_POLL, retry=(),
                     error=lambda seen: TimeoutExpired(f"{late}: {seen}"))  # fmt: skip


# -- the rollout ----------------------------------------------------------------------------------------


def _roll_back(engine: Engine, step: Step, notify: Notify, timeout: float) -> str:
    """Bring the service back to the spec it had before this rollout."""
    svc = engine.inspect_service(step.current["ID"])
    state = (svc.get("UpdateStatus") or {}).get("State", "")
    if state == "rollback_completed":
        return "rolled back by swarm (failure_action rollback)"
    if state != "rollback_started":
        notify(f"{step.short}: rolling back")
        try:
            # swarm's own rollback (rollback_config applies) when it kept the spec before ours
            write_service(engine, step.current["ID"], svc.get("PreviousSpec") or step.current["Spec"],
                          rollback=bool(svc.get("PreviousSpec")), what=step.name,
                          registry_auth=step.registry_auth)  # fmt: skip
        except EngineError as e:
            # "does not have a previous spec": swarm finished a rollback of its own a moment ago, or
            # (Docker 20.10) kept no previous spec: write the spec from before this rollout instead
            if "previous spec" not in str(e):
                raise
            write_service(engine, step.current["ID"], step.current["Spec"], what=step.name,
                          registry_auth=step.registry_auth)  # fmt: skip
    last = [""]

    def settled() -> str | Pending:
        svc = engine.inspect_service(step.current["ID"])
        state = last[0] = (svc.get("UpdateStatus") or {}).get("State", "")
        if state == "completed" and not changed_fields(svc["Spec"], step.current["Spec"], {}):
            return "rolled back (its spec from before written again)"
        if state in ("rollback_completed", "rollback_paused") or state == "":
            back = not changed_fields(svc["Spec"], step.current["Spec"], {})
            return "rolled back" + ("" if back else f" (swarm says {state or 'done'}; the spec differs from before)")
        return Pending(state)

    try:
        return until(f"the rollback of {step.short}", settled, timeout, first=ROLLBACK_POLL, cap=ROLLBACK_POLL,
                     retry=())  # fmt: skip
    except TimeoutExpired:
        return f"rollback still {last[0]} after {timeout:g}s"


def _interrupted(engine: Engine, step: Step, result: StepResult, notify: Notify, timeout: float) -> None:
    """Leave the service being changed in a known state after Ctrl-C: rolled back, or - when swarm
    had already completed its update - updated. A second Ctrl-C gives up waiting for the rollback."""
    try:
        svc = engine.inspect_service(step.current["ID"])
        if not changed_fields(svc["Spec"], step.current["Spec"], {}):
            result.detail = "interrupted before its update was written: left as it was"
            return
        state = (svc.get("UpdateStatus") or {}).get("State", "")
        if state == "completed":
            result.result = UPDATED
            result.detail = "interrupted after swarm completed its update: left updated"
            return
        notify(f"interrupted: rolling {step.short} back (Ctrl-C again to stop waiting)")
        rolled = _roll_back(engine, step, notify, timeout)
        result.result = ROLLED_BACK if rolled.startswith("rolled back") else FAILED
        result.detail = f"interrupted during its update; {rolled}"
    except KeyboardInterrupt:
        result.result = FAILED
        result.detail = "interrupted twice: its rollback was asked for but not waited for (see `docker service ps`)"
    except SwarmctlError as e:
        result.result = FAILED
        result.detail = f"interrupted during its update; the rollback failed: {e}"


def prepare(steps: list[Step], gates: Gates | None) -> tuple[list[Step], set[str]]:
    """Order the steps (asking the gates who goes last) after checking the application is healthy.

    Raises:
        RolloutFailed: a service with an application check is unhealthy before anything changed.
    """
    last: set[str] = set()
    if gates is not None and steps:
        gates.refresh()
        if any(s.check for s in steps):
            last = gates.goes_last()
            for s in steps:
                if s.check:
                    ok, seen = gates.check(s.short)
                    if not ok:
                        raise RolloutFailed(
                            f"not starting: {s.short} is not healthy before the update ({seen}); nothing was changed",
                            [StepResult(x.short, x.image_from(), x.image_to()) for x in steps],
                        )
    return plan_order(steps, last), last


def roll_out(
    engine: Engine,
    steps: list[Step],
    gates: Gates | None,
    timeout: float,
    notify: Notify = quiet,
    on_progress: OnProgress = no_progress,
) -> list[StepResult]:
    """Update ``steps`` one at a time behind the gates; raise RolloutFailed at the first failure."""
    if not steps:
        return []
    ordered, _ = prepare(steps, gates)
    results = [StepResult(s.short, s.image_from(), s.image_to()) for s in ordered]
    for step, result in zip(ordered, results, strict=True):
        t0 = time.monotonic()
        if gates is not None and step.check:
            try:
                gates.refresh()
                notify(f"{step.short}: safe to stop ({gates.safe_to_stop(step.short, timeout)})")
            except KeyboardInterrupt:
                result.detail = "interrupted before it was changed: left as it was"
                raise RolloutInterrupted(f"interrupted: {_summary(results)}", results) from None
            except SwarmctlError as e:
                result.result = FAILED
                result.detail = f"not changed: {e}"
                done = [r.name for r in results if r.result == UPDATED]
                untouched = [r.name for r in results if r.result == NOT_STARTED]
                raise RolloutFailed(
                    f"not updating {step.short}: {e}"
                    + (f"; already updated: {', '.join(done)}" if done else "")
                    + (f"; left as they were: {', '.join(untouched)}" if untouched else ""),
                    results,
                ) from e
        notify(f"update service {step.name} ({', '.join(step.fields) or 'forced restart'})")
        try:
            written, _ = write_service(engine, step.current["ID"], step.spec, what=step.name,
                                       registry_auth=step.registry_auth)  # fmt: skip
            wait_converged(engine, [step.name], {step.name: written}, timeout, on_progress)
            if gates is not None and step.check:
                gates.refresh()
                seen = gates.wait(step.short, timeout)
                notify(f"{step.short}: application check passed ({seen})")
        except KeyboardInterrupt:
            result.seconds = time.monotonic() - t0
            _interrupted(engine, step, result, notify, timeout)
            raise RolloutInterrupted(f"interrupted: {_summary(results)}", results) from None
        except SwarmctlError as e:
            result.seconds = time.monotonic() - t0
            error = last_task_error(engine, step.current["ID"])
            rolled = _roll_back(engine, step, notify, timeout)
            result.result = ROLLED_BACK if rolled.startswith("rolled back") else FAILED
            result.detail = f"{e}" + (f"; last task error: {error}" if error else "") + f"; {rolled}"
            untouched = [r.name for r in results if r.result == NOT_STARTED]
            done = [r.name for r in results if r.result == UPDATED]
            raise RolloutFailed(
                f"update of {step.short} failed: {e}"
                + (f" (last task error: {error})" if error else "")
                + f"; {step.short} {rolled}"
                + (f"; already updated: {', '.join(done)}" if done else "")
                + (f"; left as they were: {', '.join(untouched)}" if untouched else ""),
                results,
            ) from e
        result.result = UPDATED
        result.seconds = time.monotonic() - t0
        notify(f"{step.short}: updated in {result.seconds:.1f}s")
    return results


def with_registries(engine: Engine, steps: list[Step], inventory: Inventory, mode: str) -> list[Step]:
    """The steps with their images pinned (those ``--image`` changes) and their registry credentials.

    Raises:
        RegistryError: a registry refused the login or the image; nothing was changed.
    """

    def image(step: Step) -> str:
        return str(step.spec["TaskTemplate"]["ContainerSpec"]["Image"])

    creds = load_credentials(inventory, [image(s) for s in steps])
    check_logins(engine, creds)
    changed = {s.name: image(s) for s in steps if s.image_to() != s.image_from() and "@" not in image(s)}
    resolved = resolve_images(engine, changed, creds) if mode != "never" else {}
    out = []
    for s in steps:
        spec = s.spec
        r = resolved.get(s.name)
        if r is not None and r.digest:
            spec = copy.deepcopy(dict(s.spec))
            spec["TaskTemplate"]["ContainerSpec"]["Image"] = r.image
        elif r is not None and r.warning:
            log.warning("%s", r.warning)
        out.append(
            replace(s, spec=spec, registry_auth=creds.header(str(spec["TaskTemplate"]["ContainerSpec"]["Image"])))
        )
    return out


def read_stack_services(engine: Engine, stack: str) -> dict[str, dict[str, Any]]:
    """The stack's services by full name.

    Raises:
        ClusterError: the stack has none.
    """
    current = {svc["Spec"]["Name"]: svc for svc in read_services(engine, stack)}
    if not current:
        raise ClusterError(f"no stack {stack!r} on this swarm")
    return current


def update_stack(
    engine: Engine,
    stack: str,
    services: list[str],
    images: Mapping[str, str],
    env: Mapping[str, Mapping[str, str]],
    force: bool,
    gates: Gates | None,
    timeout: float,
    plan_only: bool = False,
    notify: Notify = quiet,
    on_progress: OnProgress = no_progress,
    inventory: Inventory | None = None,
    resolve_image: str = "always",
    history_limit: int | None = None,
) -> Report:
    """The update operation: read the stack's services, plan the steps (pure), order them, roll them out.

    With ``inventory``, registry credentials for the services' images are loaded from it (or the
    docker CLI's config), checked with a login first, and sent with each write; new images
    (``--image``) are pinned to their digests per ``resolve_image``. With ``history_limit``, a
    rollout that changed the stack is recorded as its next revision (``ops.history``; that many kept).

    Returns:
        A Report whose plan lists the updates in rollout order; unless ``plan_only``, a Result
        per step, ``data["services"]`` (StepResult per service) and ``data["revision"]`` (the
        revision recorded, or None).

    Raises:
        InputError: unknown services or nothing asked for; RolloutFailed: see ``roll_out``.
    """
    steps = plan_update(stack, read_stack_services(engine, stack), services, images, env, force)
    if inventory is not None:
        steps = with_registries(engine, steps, inventory, resolve_image)
    report = apply_steps(engine, steps, gates, timeout, plan_only, notify, on_progress)
    if history_limit is not None and not plan_only:
        record(engine, stack, report, Recording("update", keep=history_limit), changed=bool(steps), notify=notify)
    return report


def apply_steps(
    engine: Engine,
    steps: list[Step],
    gates: Gates | None,
    timeout: float,
    plan_only: bool = False,
    notify: Notify = quiet,
    on_progress: OnProgress = no_progress,
) -> Report:
    """Order the steps and roll them out (update's and rollback's one way to change services).

    Returns:
        A Report whose plan lists the updates in rollout order; unless ``plan_only``, a Result
        per step and ``data["services"]`` (StepResult per service).

    Raises:
        RolloutFailed: see ``roll_out``.
    """
    if plan_only:
        last: set[str] = set()
        if gates is not None:
            gates.refresh()
            if any(s.check for s in steps):
                last = gates.goes_last()
        ordered = plan_order(steps, last)
        return Report(plan=Plan(tuple(s.change(s.short in last) for s in ordered)))
    if not steps:  # a run again of an update that is done: idempotent, like deploy
        return Report(plan=Plan(()), data={"services": []})
    results = roll_out(engine, steps, gates, timeout, notify, on_progress)
    by_short = {s.short: s for s in steps}
    report = Report(plan=Plan(tuple(by_short[r.name].change() for r in results)), data={"services": results})
    for r in results:
        report.results.append(Result(by_short[r.name].change(), DONE, r.detail, r.seconds))
    return report
