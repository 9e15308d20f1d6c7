"""Images where no public registry is reachable, on the lab: its private registry (Debian's
docker-registry, TLS with the lab's CA, htpasswd), credentials sent with every service write so
that every node can pull, tags pinned to digests, a rejected login stopping deploy before any
change; and images copied to hosts over SSH when there is no registry at all.

The session swarm (lab1 manager, lab2-4 workers) was bootstrapped from the lab inventory, whose
`registries:` entry makes bootstrap install the registry's CA on every host.
"""

from __future__ import annotations

import ipaddress
import json
import os
import textwrap
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from swarmctl.secretstore import KeySource, read_secret
from swarmctl_lab import hosts as labhosts
from swarmctl_lab import registry as labregistry
from tests.e2e.conftest import Lab
from tests.helpers import assert_no_traceback, swarmctl, wait_for


def registry_address(lab: Lab) -> str:
    """The lab registry's host:port: .5 of the lab's own subnet."""
    return f"{ipaddress.ip_network(lab.spec.subnet).network_address + labregistry.OCTET}:{labregistry.PORT}"


def web(lab: Lab) -> str:
    return f"{registry_address(lab)}/swarmctl/web:1"


ROLES = {"lab1": "manager", "lab2": "worker", "lab3": "worker", "lab4": "worker"}


def on(lab: Lab, host: str, *argv: str, stdin: bytes | None = None) -> str:
    """The docker CLI (or anything) on a lab host, as an operator there would run it."""
    proc = labhosts.host_exec(lab.spec, host, list(argv), input=stdin)
    assert proc.returncode == 0, f"{argv} on {host}: {proc.stderr.decode()}"
    return proc.stdout.decode()


def probe_image(lab: Lab) -> str:
    with lab.docker("lab1") as api:
        return next(t for i in api.images() for t in i.get("RepoTags") or [] if t.startswith("swarmctl-lab/probe"))


SCHEMA = json.loads(resources.files("swarmctl").joinpath("schemas/output.json").read_text())


def new_image(lab: Lab, host: str, ref: str, marker: str) -> str:
    """An image that no host has (the probe image plus a file): committed on ``host``; its ID."""
    name = f"swarmctl-mk-{marker}"
    on(lab, host, "docker", "run", "--name", name, probe_image(lab), "sh", "-c", f"echo {marker} > /marker")
    on(lab, host, "docker", "commit", name, ref)
    on(lab, host, "docker", "rm", name)
    return on(lab, host, "docker", "image", "inspect", "--format", "{{.Id}}", ref).strip()


def holders(lab: Lab, image_id: str) -> list[str]:
    found = []
    for name in lab.names:
        with lab.docker(name) as api:
            if any(i["Id"] == image_id for i in api.images()):
                found.append(name)
    return found


def remove_everywhere(lab: Lab, image_id: str) -> None:
    for name in lab.names:
        with lab.docker(name) as api:
            for i in api.images():
                if i["Id"] == image_id:
                    api.remove_image(image_id, force=True)


SLEEP = "import signal, time; signal.signal(signal.SIGTERM, lambda *a: exit(0)); time.sleep(1e9)"


def stack_file(tmp: Path, image: str, constraint: str = "") -> Path:
    text = textwrap.dedent(
        f"""\
        services:
          web:
            image: {image}
            command: [python3, -c, "{SLEEP}"]
            deploy:
              mode: global
        """
    )
    if constraint:
        text += f'      placement: {{constraints: ["{constraint}"]}}\n'
    path = tmp / "web.yml"
    path.write_text(text)
    return path


def running_nodes(lab: Lab, service: str) -> set[str]:
    with lab.docker("lab1") as api:
        names = {n["ID"]: n["Description"]["Hostname"] for n in api.nodes()}
        tasks = api.tasks(filters={"service": service, "desired-state": "running"})
    return {names[t["NodeID"]] for t in tasks if t["Status"]["State"] == "running"}


@pytest.fixture(scope="module")
def in_registry(swarm: Lab) -> Iterator[tuple[Lab, str, str]]:
    """The web image pushed to the lab registry from lab1 (docker login with the lab's password), then
    removed from lab1: no node has it."""
    lab = swarm
    password = read_secret(lab.dir / "secrets" / f"{labregistry.SECRET}.enc", KeySource(os.environ).required())
    image_id = new_image(lab, "lab1", web(lab), "v1")
    on(
        lab,
        "lab1",
        "docker",
        "login",
        registry_address(lab),
        "-u",
        labregistry.USER,
        "--password-stdin",
        stdin=password,
    )
    on(lab, "lab1", "docker", "push", web(lab))
    on(lab, "lab1", "docker", "logout", registry_address(lab))
    remove_everywhere(lab, image_id)
    assert holders(lab, image_id) == []
    yield lab, image_id, password.decode()
    swarmctl("rm", "regweb", "-i", str(lab.inventory))
    remove_everywhere(lab, image_id)


def test_a_private_image_deploys_on_every_node_pinned_to_its_digest(
    in_registry: tuple[Lab, str, str], tmp_path: Path
) -> None:
    lab, image_id, password = in_registry
    ref = web(lab)
    stack = stack_file(tmp_path, ref)
    inv = str(lab.inventory)
    plan = swarmctl("deploy", "regweb", "-f", str(stack), "-i", inv, "--plan", "--json")
    assert plan.rc == 0, str(plan)
    (create,) = [c for c in plan.json()["changes"] if c["kind"] == "service"]
    assert create["detail"].startswith(f"{ref} -> sha256:"), create  # the plan shows tag -> digest

    run = swarmctl("deploy", "regweb", "-f", str(stack), "-i", inv, "--no-verify", timeout=600)
    assert run.rc == 0, str(run)
    assert running_nodes(lab, "regweb_web") == set(lab.names)  # every node pulled it with the credentials
    with lab.docker("lab1") as api:
        image = api.inspect_service("regweb_web")["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
    assert image.startswith(f"{ref}@sha256:"), image
    assert sorted(holders(lab, image_id)) == sorted(lab.names)
    assert password not in plan.stdout + run.stdout + run.stderr  # the credentials never show

    again = swarmctl("deploy", "regweb", "-f", str(stack), "-i", inv, "--plan")
    assert again.rc == 0 and again.stdout.startswith("no changes"), str(again)  # same digest: nothing to write


def test_a_rejected_login_stops_deploy_before_anything_changes(
    in_registry: tuple[Lab, str, str], tmp_path: Path
) -> None:
    lab, _, _ = in_registry
    address, ref = registry_address(lab), web(lab)
    top = (
        f'registries:\n  "{address}": {{username: {labregistry.USER}, password_secret: wrong, '
        f"ca_file: {lab.dir / 'registry' / labregistry.CA_FILE}}}\n"
    )
    inv = lab.write_inventory(tmp_path / "hosts.yml", ROLES, top=top)
    (tmp_path / "secrets").mkdir()
    made = swarmctl("secrets", "set", "wrong", "--dir", str(tmp_path / "secrets"), input="not-the-password")
    assert made.rc == 0, str(made)
    run = swarmctl("deploy", "regbad", "-f", str(stack_file(tmp_path, ref)), "-i", str(inv), timeout=300)
    assert run.rc == 1, str(run)
    assert_no_traceback(run)
    (line,) = [x for x in run.stderr.splitlines() if x.startswith("error:")]
    assert f"registry {address} rejected the login" in line and "nothing was changed" in line, line
    assert "not-the-password" not in run.stdout + run.stderr
    with lab.docker("lab1") as api:
        assert not api.services(filters={"label": "com.docker.stack.namespace=regbad"})


def test_images_pushed_over_ssh_without_a_registry(swarm: Lab, tmp_path: Path) -> None:
    lab = swarm
    ref = "swarmctl-e2e/pushed:1"
    image_id = new_image(lab, "lab4", ref, "pushed")
    archive = tmp_path / "pushed.tar"
    on(lab, "lab4", "docker", "save", "--output", str(archive), ref)  # /tmp is this machine's: the file is here
    remove_everywhere(lab, image_id)
    inv = str(lab.inventory)
    try:
        plan = swarmctl("images", "push", str(archive), "--hosts", "lab1,lab2,lab3", "-i", inv, "--plan")
        assert plan.rc == 0 and plan.stdout.count("1 of ") == 3, str(plan)  # "(1 of N layers, X MB)" per host
        planned = swarmctl("images", "push", str(archive), "--hosts", "lab1,lab2,lab3", "-i", inv, "--plan", "--json")
        jsonschema.validate(planned.json(), {**SCHEMA, "$ref": "#/$defs/images"})
        assert {r["result"] for r in planned.json()["hosts"].values()} == {"load"}, planned.json()
        run = swarmctl("images", "push", str(archive), "--hosts", "lab1,lab2,lab3", "-i", inv, "--json", timeout=600)
        assert run.rc == 0, str(run)
        jsonschema.validate(run.json(), {**SCHEMA, "$ref": "#/$defs/images"})
        hosts = run.json()["hosts"]
        assert {h: r["result"] for h, r in hosts.items()} == {h: "loaded" for h in ("lab1", "lab2", "lab3")}
        # issue 28: the hosts have the probe image's layers, so only the committed layer (one small
        # file) went, with the config and manifest: not the archive's 400-odd MB, to any host
        size = archive.stat().st_size
        assert size > 100_000_000 and all(r["layers"] == 1 and r["bytes"] < 1_000_000 for r in hosts.values()), hosts
        assert sorted(holders(lab, image_id)) == ["lab1", "lab2", "lab3"]
        again = swarmctl("images", "push", str(archive), "--hosts", "lab1,lab2,lab3", "-i", inv, "--json")
        assert again.rc == 0, str(again)
        assert {r["result"] for r in again.json()["hosts"].values()} == {"present"}
        assert sum(r["bytes"] for r in again.json()["hosts"].values()) == 0  # nothing sent the second time
        listed = swarmctl("images", "ls", "pushed", "-f", str(stack_file(tmp_path, ref)), "-i", inv, "--json")
        ids = {r["host"]: r["id"] for r in listed.json()["images"]}
        assert ids == {"lab1": image_id, "lab2": image_id, "lab3": image_id, "lab4": ""}, ids

        stack = stack_file(tmp_path, ref, "node.hostname != lab4")
        deploy = swarmctl("deploy", "pushed", "-f", str(stack), "-i", inv, "--resolve-image", "never", "--no-verify",
                          timeout=600)  # fmt: skip
        assert deploy.rc == 0, str(deploy)
        wait_for("a task on lab1-3", lambda: running_nodes(lab, "pushed_web"), lambda s: s == {"lab1", "lab2", "lab3"})
    finally:
        swarmctl("rm", "pushed", "-i", inv)
        remove_everywhere(lab, image_id)


def test_deploy_pushes_the_local_engines_images_where_placement_allows(swarm: Lab, tmp_path: Path) -> None:
    """`deploy --push-images` with lab4's engine as "the local engine" (DOCKER_HOST): the image
    goes to the hosts the stack's placement allows (lab2, lab3), not elsewhere."""
    lab = swarm
    ref = "swarmctl-e2e/local:1"
    image_id = new_image(lab, "lab4", ref, "local")
    stack = stack_file(tmp_path, ref, "node.labels.kafka.slot != 1")  # lab2, lab3 (lab4 has no slot: != 1 too)
    env = {"DOCKER_HOST": f"unix://{lab.spec.docker_socket(lab.host('lab4'))}"}
    inv = str(lab.inventory)
    try:
        run = swarmctl("deploy", "local", "-f", str(stack), "-i", inv, "--push-images", "--resolve-image", "never",
                       "--no-verify", "--json", env=env, timeout=600)  # fmt: skip
        assert run.rc == 0, str(run)
        pushed = run.json()["pushed"]
        assert {h: r["result"] for h, r in pushed.items()} == {"lab2": "loaded", "lab3": "loaded", "lab4": "present"}
        assert sorted(holders(lab, image_id)) == ["lab2", "lab3", "lab4"]  # not lab1: placement keeps it off
        wait_for("tasks on lab2-4", lambda: running_nodes(lab, "local_web"), lambda s: s == {"lab2", "lab3", "lab4"})
    finally:
        swarmctl("rm", "local", "-i", inv)
        remove_everywhere(lab, image_id)
