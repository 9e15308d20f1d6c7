"""Parity with `docker stack deploy`: the same files must give the same specs.

Each case is deployed once with the docker CLI on a lab host (`docker stack deploy --resolve-image
never`, the reference) and once with `swarmctl deploy`, one after the other under the same stack
name; the resulting networks, secrets, configs and services are compared field by field. Ignored:
object IDs, versions and timestamps, subnets the engine allocated, VXLAN IDs, and swarmctl's own
`io.swarmctl.*` labels (a documented addition). Everything else must be identical.
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from swarmctl.lab import hosts as labhosts
from swarmctl.lab import images
from swarmctl.stack.deploy import diff_paths
from tests.e2e.conftest import Lab
from tests.helpers import swarmctl, wait_for

PARITY = Path(__file__).resolve().parents[1] / "stacks" / "parity"
STACK = "parity"
CASES = {
    "container": ["container.yml"],
    "deploy": ["deploy.yml"],
    "network": ["network.yml"],
    "storage": ["storage.yml"],
    "override": ["override-base.yml", "override.yml"],
}
# the docker CLI of the Docker Engine package on the lab hosts (20.10), not a newer one on PATH
REFERENCE_CLI = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else (shutil.which("docker") or "docker")


def _strip_ours(labels: dict[str, str] | None) -> dict[str, str]:
    return {k: v for k, v in (labels or {}).items() if not k.startswith("io.swarmctl.")}


def snapshot(lab: Lab, stack: str) -> dict[str, Any]:
    """Every object of the stack as the engine stores it, with run-specific values removed."""
    with lab.docker("lab1") as api:
        label = {"label": f"com.docker.stack.namespace={stack}"}
        nets = {n["Id"]: n for n in api.networks()}
        names = {i: n["Name"] for i, n in nets.items()}
        out: dict[str, Any] = {"networks": {}, "secrets": {}, "configs": {}, "services": {}}
        for n in api.networks(filters=label):
            options = {k: v for k, v in (n.get("Options") or {}).items() if "vxlanid" not in k}
            ipam = n.get("IPAM") or {}
            subnets = [c.get("Subnet") for c in ipam.get("Config") or [] if not c.get("Subnet", "").startswith("10.0.")]
            out["networks"][n["Name"]] = {
                "Driver": n["Driver"],
                "Scope": n["Scope"],
                "Internal": n["Internal"],
                "Attachable": n["Attachable"],
                "Ingress": n["Ingress"],
                "Options": options,
                "Labels": n.get("Labels"),
                "IPAM": {"Driver": ipam.get("Driver"), "Options": ipam.get("Options"), "Subnets": subnets},
            }
        for kind, listing in (("secrets", api.secrets), ("configs", api.configs)):
            for obj in listing(filters=label):
                spec = dict(obj["Spec"])
                spec["Labels"] = _strip_ours(spec.get("Labels"))
                if "Data" in spec:
                    spec["Data"] = base64.b64decode(spec["Data"]).decode(errors="replace")
                out[kind][spec["Name"]] = spec
        for svc in api.services(filters=label):
            spec = svc["Spec"]
            spec["Labels"] = _strip_ours(spec.get("Labels"))
            task = spec["TaskTemplate"]
            for net in task.get("Networks", []):
                net["Target"] = names.get(net["Target"], net["Target"])
            for ref in task["ContainerSpec"].get("Secrets", []):
                ref.pop("SecretID", None)
            for ref in task["ContainerSpec"].get("Configs", []):
                ref.pop("ConfigID", None)
            out["services"][spec["Name"]] = spec
    return out


def remove(stack: str, lab: Lab) -> None:
    run = swarmctl("rm", stack, "-i", str(lab.inventory))
    assert run.rc == 0, str(run)


def reference_deploy(lab: Lab, files: list[Path]) -> None:
    args = [REFERENCE_CLI, "stack", "deploy", "--resolve-image", "never"]
    for f in files:
        args += ["-c", str(f)]
    # the docker CLI reads ${VAR} from its environment only: give it the lab inventory's vars
    proc = labhosts.host_exec("lab1", [*args, STACK], env=images.lab_vars())
    assert proc.returncode == 0, proc.stderr.decode() + proc.stdout.decode()


@pytest.fixture(scope="module")
def externals(swarm: Lab) -> Iterator[Lab]:
    with swarm.docker("lab1") as api:
        api.create_network("parity-external", driver="overlay", attachable=True)
        api.create_secret("parity-external-secret", b"external")
    yield swarm
    with swarm.docker("lab1") as api:
        api.remove_network("parity-external")
        api.remove_secret("parity-external-secret")


@pytest.fixture(scope="module")
def parity_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The parity files where the lab hosts see them too: a lab host has its own /root and /home,
    so a checkout under /root is not visible to the docker CLI running there; /tmp is shared."""
    return Path(shutil.copytree(PARITY, tmp_path_factory.mktemp("parity") / "parity"))


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_specs_as_docker_stack_deploy(externals: Lab, parity_dir: Path, case: str) -> None:
    swarm = externals
    files = [parity_dir / f for f in CASES[case]]
    reference_deploy(swarm, files)
    try:
        theirs = snapshot(swarm, STACK)
    finally:
        remove(STACK, swarm)
    wait_for("the reference stack to be gone", lambda: snapshot(swarm, STACK)["networks"], lambda n: not n)

    args = ["deploy", STACK, "--no-wait", "-i", str(swarm.inventory)]
    for f in files:
        args += ["-f", str(f)]
    run = swarmctl(*args)
    assert run.rc == 0, str(run)
    try:
        ours = snapshot(swarm, STACK)
        # and a redeploy of the same files changes nothing
        again = swarmctl("deploy", STACK, "--plan", "--json", *args[3:])
        assert again.rc == 0 and again.json()["changes"] == [], str(again)
    finally:
        remove(STACK, swarm)

    assert set(ours["services"]) == set(theirs["services"])
    differences = []
    for kind in ("networks", "secrets", "configs", "services"):
        assert sorted(ours[kind]) == sorted(theirs[kind]), kind
        for name in theirs[kind]:
            for path in diff_paths(ours[kind][name], theirs[kind][name]):
                differences.append(f"{kind} {name} {path}")
    assert not differences, "\n".join(differences) + f"\nours: {ours}\ntheirs: {theirs}"
