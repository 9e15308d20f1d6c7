"""Parity with `docker stack deploy`: the same files must give the same specs.

Each case is deployed once with a docker CLI on a lab host (`docker stack deploy --resolve-image
never`, the reference) and once with `swarmctl deploy`, one after the other under the same stack
name; the resulting networks, secrets, configs and services are compared field by field. Ignored:
object IDs, versions and timestamps, subnets the engine allocated, VXLAN IDs, and swarmctl's own
`io.swarmctl.*` labels (a documented addition). Everything else must be identical. Every docker CLI
the machine has is a reference: the distribution's and a newer one first on PATH; swarm jobs only
with a CLI that knows them (23+), golden files cover them otherwise.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from swarmctl.spec import diff_paths
from swarmctl_lab import hosts as labhosts
from swarmctl_lab import images
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
# stack files docker's CLI reads only from this version on (swarm jobs came to `docker stack deploy` in 23.0)
NEWER_CASES = {"jobs": (["jobs.yml"], (23, 0))}


def cli_version(cli: str) -> tuple[int, ...]:
    """``Docker version 20.10.24+dfsg1, build 297e128`` -> (20, 10, 24)."""
    out = subprocess.run([cli, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"version (\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(x) for x in m.groups()) if m else (0, 0, 0)


def reference_clis() -> list[str]:
    """Every distinct docker CLI on this machine: the distribution's (/usr/bin/docker: 20.10 on Debian 12,
    26 on Debian 13) and the one first on PATH, when that is another."""
    found: dict[str, str] = {}
    for cli in ("/usr/bin/docker", shutil.which("docker")):
        if cli and os.path.isfile(cli):
            found.setdefault(os.path.realpath(cli), cli)
    return list(found.values())


def parity_params() -> list[Any]:
    params = []
    for cli in reference_clis():
        version = cli_version(cli)
        label = f"cli{'.'.join(map(str, version[:2]))}"
        params += [pytest.param(cli, case, files, id=f"{label}-{case}") for case, files in sorted(CASES.items())]
        for case, (files, since) in sorted(NEWER_CASES.items()):
            if version[:2] >= since:
                params.append(pytest.param(cli, case, files, id=f"{label}-{case}"))
    return params


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


def reference_deploy(lab: Lab, cli: str, files: list[Path]) -> None:
    args = [cli, "stack", "deploy", "--resolve-image", "never"]
    for f in files:
        args += ["-c", str(f)]
    # the docker CLI reads ${VAR} from its environment only: give it the lab inventory's vars
    proc = labhosts.host_exec(lab.spec, "lab1", [*args, STACK], env=images.lab_vars())
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


@pytest.mark.parametrize(("cli", "case", "names"), parity_params())
def test_same_specs_as_docker_stack_deploy(
    externals: Lab, parity_dir: Path, cli: str, case: str, names: list[str]
) -> None:
    swarm = externals
    files = [parity_dir / f for f in names]
    reference_deploy(swarm, cli, files)
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
