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
from dataclasses import dataclass, field
from typing import Any

from swarmctl.engine import Engine
from swarmctl.errors import ClusterError, HostError, InputError, SwarmctlError, TimeoutExpired
from swarmctl.stack.convert import CHECK_LABEL, GROUP_LABEL, IMAGE_LABEL, ORDER_LABEL
from swarmctl.stack.deploy import Progress, Report, _parse_time, comparable, diff_paths, wait_converged
from swarmctl.stack.reference import service_image
from swarmctl.verify import ProbePlan, ServiceInfo, advertised, broker_id, observe, probe_script, run_probe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Step:
    """One service to update: its current state and the spec it gets."""

    name: str  # full service name
    short: str
    current: Mapping[str, Any]  # the service as the API lists it
    spec: Mapping[str, Any]  # the spec to send
    fields: tuple[str, ...]

    @property
    def labels(self) -> Mapping[str, str]:
        return self.current["Spec"].get("Labels") or {}

    @property
    def check(self) -> str:
        return self.labels.get(CHECK_LABEL, "")

    @property
    def group(self) -> str:
        return self.labels.get(GROUP_LABEL, "")

    @property
    def order(self) -> int:
        value = self.labels.get(ORDER_LABEL, "0")
        return int(value) if value.lstrip("-").isdigit() else 0

    def image_from(self) -> str:
        return str(self.current["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]).split("@")[0]

    def image_to(self) -> str:
        return str(self.spec["TaskTemplate"]["ContainerSpec"]["Image"]).split("@")[0]


@dataclass
class StepResult:
    name: str
    from_: str
    to: str
    result: str = "not started"  # updated | rolled back | failed | not started
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


class RolloutFailed(ClusterError):
    def __init__(self, message: str, results: list[StepResult]):
        self.results = results
        super().__init__(message)


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
        InputError: an unknown service, or nothing to do.
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
            spec.setdefault("Labels", {})[IMAGE_LABEL] = images[short]
        if short in env:
            variables = dict(item.partition("=")[::2] for item in container.get("Env") or [])
            variables.update(env[short])
            container["Env"] = sorted(f"{k}={v}" for k, v in variables.items())
        if force and (not services or short in services):
            spec["TaskTemplate"]["ForceUpdate"] = int(spec["TaskTemplate"].get("ForceUpdate", 0)) + 1
        fields = tuple(diff_paths(comparable(spec, {}), comparable(svc["Spec"], {})))
        if fields:
            steps.append(Step(svc["Spec"]["Name"], short, svc, spec, fields))
    if not steps:
        raise InputError("nothing to update: the services already have that image and those variables")
    return steps


# -- application gates --------------------------------------------------------------------------------


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
        view_nets: dict[str, int] = {}
        for short in shorts:
            s = self.services.get(short)
            if s is None:
                continue
            for nid in s.networks:
                view_nets[nid] = view_nets.get(nid, 0) + 1
        if not view_nets:
            return None
        raw = {n["Id"]: n for n in self.engine.call("list networks", self.engine.api.networks)}
        for nid, _ in sorted(view_nets.items(), key=lambda kv: -kv[1]):
            net = raw.get(nid)
            if net and net.get("Attachable"):
                return str(net["Name"])
        return None

    def _probe(
        self, zookeeper: list[str] | None = None, kafka: list[str] | None = None, tcp: list[str] | None = None
    ) -> dict[str, Any]:
        zookeeper, kafka, tcp = zookeeper or [], kafka or [], tcp or []
        shorts = [*zookeeper, *kafka, *tcp]
        network = self._network(shorts)
        if network is None:
            raise ClusterError(f"cannot check {', '.join(shorts)}: none of their networks is attachable")
        plan = ProbePlan(
            node_id="",
            network_id="",
            dns=[],
            tcp=[(s, self.services[s].port or 0) for s in tcp],
            zookeeper=[(s, self.services[s].port or 2181) for s in zookeeper],
            kafka=[advertised(self.services[s]) for s in kafka],
        )
        return run_probe(self.engine, self.stack, network, plan, self.probe_image, probe_script())

    def members(self, check: str) -> list[str]:
        return sorted(s.short for s in self.services.values() if s.check == check and s.port)

    def goes_last(self) -> set[str]:
        """The ZooKeeper leader and the Kafka controller, right now."""
        last: set[str] = set()
        zk, brokers = self.members("zookeeper"), self.members("kafka")
        if not zk and not brokers:
            return last
        result = self._probe(zookeeper=zk, kafka=brokers)
        for s in zk:
            if result["zookeeper"].get(f"{s}:{self.services[s].port}", {}).get("mode") == "leader":
                last.add(s)
        controllers = set()
        for s in brokers:
            md = result["kafka"].get("{}:{}".format(*advertised(self.services[s])), {}).get("metadata")
            if md:
                controllers.add(md["controller"])
        for s in brokers:
            if broker_id(self.services[s]) in controllers and len(controllers) == 1:
                last.add(s)
        return last

    def check(self, short: str) -> tuple[bool, str]:
        """Whether the application around ``short`` is healthy; and what was seen."""
        s = self.services.get(short)
        if s is None or not s.check:
            return True, "no application check"
        if s.check == "zookeeper":
            zk = self.members("zookeeper")
            result = self._probe(zookeeper=zk)
            modes = {m: result["zookeeper"].get(f"{m}:{self.services[m].port}", {}) for m in zk}
            seen = {m: r.get("mode") or r.get("error", "no answer") for m, r in modes.items()}
            leaders = [m for m, mode in seen.items() if mode == "leader"]
            followers = [m for m, mode in seen.items() if mode == "follower"]
            ok = seen.get(short) in ("leader", "follower", "standalone") and (
                (len(leaders) == 1 and len(followers) == len(zk) - 1) or (len(zk) == 1 and seen[short] == "standalone")
            )
            return ok, ", ".join(f"{m}: {mode}" for m, mode in sorted(seen.items()))
        if s.check == "kafka":
            brokers = self.members("kafka")
            result = self._probe(kafka=brokers)
            host, port = advertised(s)
            mine = result["kafka"].get(f"{host}:{port}", {})
            md = mine.get("metadata")
            if not md:
                return False, f"{short} at {host}:{port}: {mine.get('error', 'no answer')}"
            ids = {b["id"] for b in md["brokers"] if b["host"] == host and b["port"] == port}
            want = broker_id(s)
            if want is not None and ids != {want}:
                return False, f"{short} answers with broker id {sorted(ids)}, expected {want}"
            registered = {b["id"] for b in md["brokers"]}
            under = [
                f"{t['name']}/{p['index']}"
                for t in md["topics"]
                for p in t["partitions"]
                if sorted(p["isr"]) != sorted(p["replicas"])
            ]
            if len(registered) > 1 and under:
                return False, f"{len(under)} under-replicated partitions ({', '.join(under[:5])})"
            return True, f"broker {want} answers" + ("" if len(registered) > 1 else " (standalone)")
        result = self._probe(tcp=[short])
        r = result["tcp"].get(f"{short}:{s.port}", {})
        return r.get("result") == "open", f"{short}:{s.port} {r.get('result', 'not tried')}"

    def wait(self, short: str, timeout: float) -> str:
        """Poll the application gate until it passes; TimeoutExpired with what was seen last."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                ok, seen = self.check(short)
            except (HostError, ClusterError) as e:
                ok, seen = False, str(e)
            if ok:
                return seen
            if time.monotonic() > deadline:
                raise TimeoutExpired(f"application check of {short} did not pass in {timeout:g}s: {seen}")
            time.sleep(1)


# -- the rollout ----------------------------------------------------------------------------------------


def _update(engine: Engine, step: Step, spec: Mapping[str, Any], rollback: bool = False) -> float:
    current = engine.call(f"inspect service {step.name}", engine.api.inspect_service, step.current["ID"])
    params: dict[str, Any] = {"_args": (current["ID"],), "version": current["Version"]["Index"]}
    if rollback:
        params["rollback"] = "previous"
    engine.request(
        f"{'roll back' if rollback else 'update'} service {step.name}",
        "POST",
        "/services/{0}/update",
        dict(spec),
        params=params,
    )
    after = engine.call(f"inspect service {step.name}", engine.api.inspect_service, current["ID"])
    return _parse_time(after.get("UpdatedAt"))


def _last_task_error(engine: Engine, service_id: str) -> str:
    tasks = engine.call("list tasks", engine.api.tasks, filters={"service": service_id})
    failed = [t for t in tasks if (t.get("Status") or {}).get("State") in ("failed", "rejected", "complete")]
    failed.sort(key=lambda t: _parse_time((t.get("Status") or {}).get("Timestamp")))
    if not failed:
        return ""
    st = failed[-1]["Status"]
    return f"{st.get('State')}: {st.get('Err') or st.get('Message', '')}".strip()


def _roll_back(engine: Engine, step: Step, report: Report, timeout: float) -> str:
    """Bring the service back to the spec it had before this rollout."""
    svc = engine.call(f"inspect service {step.name}", engine.api.inspect_service, step.current["ID"])
    state = (svc.get("UpdateStatus") or {}).get("State", "")
    if state == "rollback_completed":
        return "rolled back by swarm (failure_action rollback)"
    if state != "rollback_started":
        report(f"{step.short}: rolling back")
        _update(engine, step, svc.get("PreviousSpec") or step.current["Spec"], rollback=True)
    deadline = time.monotonic() + timeout
    while True:
        svc = engine.call(f"inspect service {step.name}", engine.api.inspect_service, step.current["ID"])
        state = (svc.get("UpdateStatus") or {}).get("State", "")
        if state in ("rollback_completed", "rollback_paused") or state == "":
            back = not diff_paths(comparable(svc["Spec"], {}), comparable(step.current["Spec"], {}))
            return "rolled back" + ("" if back else f" (swarm says {state or 'done'}; the spec differs from before)")
        if time.monotonic() > deadline:
            return f"rollback still {state} after {timeout:g}s"
        time.sleep(1)


def roll_out(
    engine: Engine,
    steps: list[Step],
    gates: AppGates | None,
    timeout: float,
    report: Report = lambda _: None,
    on_progress: Callable[[Progress], None] = lambda p: None,
    on_start: Callable[[list[Step]], None] = lambda steps: None,
) -> list[StepResult]:
    """Update ``steps`` one at a time behind the gates; raise RolloutFailed at the first failure."""
    if not steps:
        return []
    last: set[str] = set()
    if gates is not None:
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
    ordered = plan_order(steps, last)
    on_start(ordered)
    results = [StepResult(s.short, s.image_from(), s.image_to()) for s in ordered]
    for step, result in zip(ordered, results, strict=True):
        t0 = time.monotonic()
        report(f"update service {step.name} ({', '.join(step.fields) or 'forced restart'})")
        try:
            written = _update(engine, step, step.spec)
            wait_converged(engine, [step.name], {step.name: written}, timeout, on_progress)
            if gates is not None and step.check:
                gates.refresh()
                seen = gates.wait(step.short, timeout)
                report(f"{step.short}: application check passed ({seen})")
        except SwarmctlError as e:
            result.seconds = time.monotonic() - t0
            error = _last_task_error(engine, step.current["ID"])
            rolled = _roll_back(engine, step, report, timeout)
            result.result = "rolled back" if rolled.startswith("rolled back") else "failed"
            result.detail = f"{e}" + (f"; last task error: {error}" if error else "") + f"; {rolled}"
            untouched = [r.name for r in results if r.result == "not started"]
            done = [r.name for r in results if r.result == "updated"]
            raise RolloutFailed(
                f"update of {step.short} failed: {e}"
                + (f" (last task error: {error})" if error else "")
                + f"; {step.short} {rolled}"
                + (f"; already updated: {', '.join(done)}" if done else "")
                + (f"; left as they were: {', '.join(untouched)}" if untouched else ""),
                results,
            ) from e
        result.result = "updated"
        result.seconds = time.monotonic() - t0
        report(f"{step.short}: updated in {result.seconds:.1f}s")
    return results
