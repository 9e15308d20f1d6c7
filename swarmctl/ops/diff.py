"""diff: what differs between the repository and the swarm, changing nothing - the drift a hand
edit (``docker service update``, ``docker node update``) leaves, in the terms of the commands that
would undo it.

The repository's side is what ``bootstrap --prune`` and ``deploy --prune`` would make true: the
inventory (engine keys, membership, roles, labels, availability) and each stack's files (secrets
by their content version, images as the files name them). Both planners run in plan mode, so a
drift is exactly a change one of them would make; reading is all that happens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from swarmctl.compose.reference import strip_digest
from swarmctl.errors import HostError, InputError, SwarmctlError
from swarmctl.facts.membership import find_manager
from swarmctl.facts.services import read_services
from swarmctl.ops.bootstrap import bootstrap
from swarmctl.ops.deploy import DesiredStack, current_images, deploy_stack, read, wanted_images
from swarmctl.ops.ps import stacks_of
from swarmctl.plan import Change, Plan, failures_json
from swarmctl.transport.engine import Session

EXIT_DRIFT = 3  # --exit-code: the swarm differs from the repository (terraform plan -detailed-exitcode's 2)


@dataclass(frozen=True)
class Drift:
    """The swarm against the repository: what ``bootstrap`` and each stack's ``deploy`` would change."""

    inventory: str
    swarm: Plan  # bootstrap --prune's plan
    stacks: Mapping[str, Plan]  # stack -> deploy --prune's plan
    extra: tuple[str, ...] = ()  # stacks on the swarm that the repository has no files for
    unread: Mapping[str, str] = field(default_factory=dict)  # host or stack -> why it could not be read

    @property
    def drifted(self) -> bool:
        return bool(self.swarm.changes or self.extra or any(p.changes for p in self.stacks.values()))

    def changes(self) -> list[tuple[str, Change]]:
        """Every difference, with the command that would undo it."""
        out = [(f"swarmctl bootstrap {self.inventory} --prune", c) for c in self.swarm.changes]
        for name, plan in sorted(self.stacks.items()):
            out += [(f"swarmctl deploy {name} --prune", c) for c in plan.changes]
        return out

    def json(self) -> dict[str, Any]:
        return {
            "drift": self.drifted,
            "differences": [{**c.json(), "undone_by": by} for by, c in self.changes()],
            "extra_stacks": list(self.extra),
            "warnings": [*self.swarm.warnings, *(w for p in self.stacks.values() for w in p.warnings)],
            "failures": failures_json(self.unread),
        }


def extra_stacks(on_swarm: Iterable[str], known: Iterable[str], named: Sequence[str]) -> list[str]:
    """Stacks that run on the swarm without files in the repository (pure): only when no stack was
    named - naming stacks narrows the question to them."""
    return [] if named else sorted(set(on_swarm) - set(known))


def image_drift(
    wanted: Mapping[str, tuple[str, str]], current: Mapping[str, tuple[str, str]], planned: Iterable[Change]
) -> list[Change]:
    """Services whose image was changed by hand (pure): deploy keeps the image a service runs while
    its file's image is unchanged (to keep its digest pin), so its plan does not show a hand-set
    tag; here the running image, without its digest, must be the one the files name.

    ``wanted``: service -> (image as sent, the file's image); ``current``: service -> (image in its
    spec, the file's image it was deployed from); ``planned``: the deploy plan's changes."""
    touched = {c.name for c in planned if "TaskTemplate.ContainerSpec.Image" in c.fields or c.action != "update"}
    out = []
    for service, (image, _file_image) in sorted(wanted.items()):
        running = current.get(service, ("", ""))[0]
        if running and service not in touched and strip_digest(running) != strip_digest(image):
            out.append(Change("service", service, "update", ("TaskTemplate.ContainerSpec.Image",),
                              f"{strip_digest(running)} -> {strip_digest(image)}"))  # fmt: skip
    return out


def read_drift(
    session: Session,
    stacks: Sequence[str],
    desired_of: Callable[[str], DesiredStack],
    known: Sequence[str],
) -> Drift:
    """Plan bootstrap and every stack's deploy against the swarm, applying nothing.

    ``stacks``: the stacks named (none: every stack on the swarm that ``known`` - the stacks with
    files - has); ``desired_of``: a stack's files, loaded and converted.
    """
    unread: dict[str, str] = {}
    outcome = bootstrap(session, prune=True, plan_only=True)
    unread.update({h: str(getattr(e, "message", e)) for h, e in outcome.report.failures.items()})
    engine = find_manager(session)
    on_swarm = stacks_of(read_services(engine))
    names = list(stacks) or [s for s in on_swarm if s in known]
    plans: dict[str, Plan] = {}
    for name in names:
        desired = desired_of(name)
        try:
            plan = deploy_stack(engine, desired, prune=True, plan_only=True, resolve_image="never").plan
            hand = image_drift(wanted_images(desired), current_images(read(engine, desired)), plan.changes)
        except InputError:
            raise
        except HostError as e:
            unread[name] = e.message
            continue
        except SwarmctlError as e:
            unread[name] = str(e)
            continue
        plans[name] = Plan(tuple([*plan.changes, *hand]), plan.warnings, plan.blocked)
    return Drift(str(session.inventory.path), outcome.report.plan, plans,
                 tuple(extra_stacks(on_swarm, known, stacks)), unread)  # fmt: skip
