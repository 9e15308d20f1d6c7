"""Pure parts of image distribution and private registries: what an archive holds, who needs
which image, where placement allows a service, credentials and the --resolve-image choice.
The registry and the transfers themselves run on the lab (tests/e2e/test_registry.py)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from bench.images import tiny_archive
from swarmctl.compose.reference import registry_of, strip_digest
from swarmctl.errors import EngineError, InputError
from swarmctl.facts.images import host_images, read_archive
from swarmctl.facts.nodes import NodeView, node_view, placement_allows
from swarmctl.ops.images import ArchiveSlice, changes_of, plan_load, plan_push, save_local, split_sources
from swarmctl.ops.registry import Credential, Credentials, Resolved, choose_images, docker_config_auths, resolve_image
from tests.unit.fakeengine import FakeEngine


def test_an_archive_and_what_each_host_needs(tmp_path: Path) -> None:
    archive = read_archive(tiny_archive(tmp_path))
    ((ref, image_id),) = archive.refs.items()
    assert ref == "bench/tiny:1" and image_id.startswith("sha256:") and archive.size > 10_000
    hosts = {
        "fresh": host_images([]),
        "has-it": host_images([{"Id": image_id, "RepoTags": [ref]}]),
        "other-name": host_images([{"Id": image_id, "RepoTags": ["mirror/tiny:1"]}]),
    }
    pushes = {p.host: p for p in plan_push([archive], hosts)}
    assert [a.archive.path for a in pushes["fresh"].load] == [archive.path] and pushes["fresh"].bytes == archive.size
    assert pushes["has-it"].present == (ref,) and not pushes["has-it"].load
    assert pushes["other-name"].tag == ((image_id, ref),) and not pushes["other-name"].load  # no transfer
    actions = [(c.name, c.action) for c in changes_of(list(pushes.values()))]
    assert actions == [("fresh", "load"), ("other-name", "tag")]


def test_not_an_archive(tmp_path: Path) -> None:
    (tmp_path / "x.tar").write_bytes(b"hello")
    with pytest.raises(InputError, match="not a readable image archive"):
        read_archive(tmp_path / "x.tar")
    with pytest.raises(InputError, match="no such file"):
        read_archive(tmp_path / "missing.tar")


def node(hostname: str, role: str = "worker", **labels: str) -> NodeView:
    description = {"Hostname": hostname, "Platform": {"OS": "linux", "Architecture": "x86_64"},
                   "Engine": {"Labels": {"disk": "ssd"} if hostname == "lab4" else {}}}  # fmt: skip
    return node_view({"ID": f"id-{hostname}", "Spec": {"Role": role, "Labels": labels}, "Description": description,
                      "Status": {"Addr": "192.168.77.1" + hostname[-1]}})  # fmt: skip


def test_placement_as_swarm_reads_it() -> None:
    lab1, lab4 = node("lab1", "manager", **{"kafka.slot": "1"}), node("lab4")
    assert placement_allows(["node.labels.kafka.slot == 1"], lab1) and not placement_allows(
        ["node.labels.kafka.slot==1"], lab4
    )
    assert placement_allows(["node.labels.kafka.slot != 1"], lab4)  # a missing label is "not 1"
    assert not placement_allows(["node.role == worker"], lab1) and placement_allows(["node.hostname != lab1"], lab4)
    # as swarmkit's constraint.NodeMatches: values without case, engine labels, platform, node.ip
    assert placement_allows(["node.hostname==LAB4", "node.role==Worker", "NODE.PLATFORM.OS==Linux"], lab4)
    assert placement_allows(["engine.labels.disk == ssd", "node.platform.arch == x86_64"], lab4)
    assert not placement_allows(["engine.labels.disk == ssd"], lab1)
    assert placement_allows(["engine.labels.disk != ssd"], lab1)
    assert placement_allows(["node.ip == 192.168.77.14"], lab4)
    assert not placement_allows(["node.ip == 192.168.77.11"], lab4)
    assert placement_allows(["node.ip == 192.168.77.0/24"], lab1)
    assert not placement_allows(["node.ip != 192.168.77.0/24"], lab1)
    # tested on Status.Addr as the node reports it: a manager that reports 0.0.0.0 is in no subnet
    manager = node_view({"ID": "m", "Spec": {"Role": "manager"}, "Status": {"Addr": "0.0.0.0"},
                         "ManagerStatus": {"Addr": "192.168.77.11:2377"}})  # fmt: skip
    assert manager.addr == "192.168.77.11" and not placement_allows(["node.ip == 192.168.77.0/24"], manager)
    # a malformed address, an unknown key or no operator: swarm places nowhere
    for c in (
        "node.ip == 192.168.77.x",
        "node.ip != nonsense",
        "node.ip == 192.168.77.0/255.255.255.0",
        "node.color == red",
        "node.labels.a",
    ):
        assert not placement_allows([c], lab1), c


def test_registries_of_image_names_and_docker_config_credentials(tmp_path: Path) -> None:
    assert registry_of("redis") == "docker.io" and registry_of("library/redis:7") == "docker.io"
    assert registry_of("192.168.77.5:5000/swarmctl/web:1@sha256:" + "a" * 64) == "192.168.77.5:5000"
    assert registry_of("localhost/app") == "localhost" and registry_of("quay.io/debezium/kafka:3.1") == "quay.io"
    assert strip_digest("a/b:1@sha256:" + "0" * 64) == "a/b:1"
    auth = base64.b64encode(b"ci:s3cret").decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {"https://index.docker.io/v1/": {"auth": auth},
                                                               "reg.example.com:5000": {"auth": auth}}}))  # fmt: skip
    found = docker_config_auths({"DOCKER_CONFIG": str(tmp_path)})
    assert found == {"docker.io": ("ci", "s3cret"), "reg.example.com:5000": ("ci", "s3cret")}
    c = Credential("reg.example.com:5000", "ci", "s3cret", "test")
    assert json.loads(base64.urlsafe_b64decode(c.header())) == {"username": "ci", "password": "s3cret",
                                                                "serveraddress": "reg.example.com:5000"}  # fmt: skip
    assert "s3cret" not in repr(c)


DIGEST = "sha256:" + "b" * 64


def resolver(answers: dict[str, Resolved], asked: list[str]) -> Callable[[Mapping[str, str]], dict[str, Resolved]]:
    def resolve(images: Mapping[str, str]) -> dict[str, Resolved]:
        asked.extend(sorted(images.values()))
        return {s: answers[i] for s, i in images.items()}

    return resolve


@pytest.mark.parametrize(
    ("mode", "asked", "image"),
    [
        ("always", ["reg/app:2"], f"reg/app:2@{DIGEST}"),  # looked up every time
        ("changed", ["reg/app:2"], f"reg/app:2@{DIGEST}"),  # the file's image changed: looked up
        ("never", [], "reg/app:2"),  # as written
    ],
)
def test_resolve_image_modes_when_the_file_changed(mode: str, asked: list[str], image: str) -> None:
    seen: list[str] = []
    answers = {"reg/app:2": Resolved(f"reg/app:2@{DIGEST}", DIGEST)}
    choice = choose_images({"app": ("reg/app:2", "reg/app:2")}, {"app": ("reg/app:1@sha256:" + "c" * 64, "reg/app:1")},
                           mode, resolver(answers, seen))  # fmt: skip
    assert seen == asked and choice.images["app"] == image
    assert choice.pins == ({"app": "reg/app:2 -> sha256:bbbbbbbbbbbb"} if asked else {})


def test_an_unchanged_image_keeps_its_pin_and_an_unreachable_registry_warns() -> None:
    running = f"reg/app:1@{DIGEST}"
    for mode in ("changed", "never"):
        choice = choose_images({"app": ("reg/app:1", "reg/app:1")}, {"app": (running, "reg/app:1")}, mode,
                               resolver({}, []))  # fmt: skip
        assert choice.images["app"] == running and not choice.pins
    lost = Resolved("local/app:1", warning="image local/app:1 could not be accessed on a registry to record its digest")
    choice = choose_images({"app": ("local/app:1", "local/app:1"), "new": ("local/app:1", "local/app:1")},
                           {"app": ("local/app:1", "local/app:1")}, "always",
                           resolver({"local/app:1": lost}, []))  # fmt: skip
    assert choice.images == {"app": "local/app:1", "new": "local/app:1"} and choice.warnings == (lost.warning,)
    with pytest.raises(InputError, match="--resolve-image must be one of"):
        choose_images({}, {}, "sometimes", resolver({}, []))


def test_push_arguments_are_archives_or_image_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "team").mkdir()
    (tmp_path / "team" / "app").write_bytes(b"")  # an existing file wins, slashes or not
    paths, names = split_sources(
        ["registry.example:5000/team/web:1", "team/app", "./x", "/abs/y", "z.tar", "busybox", "a/b.tgz"]
    )
    assert [str(p) for p in paths] == ["team/app", "x", "/abs/y", "z.tar", "a/b.tgz"]
    assert names == ["registry.example:5000/team/web:1", "busybox"]


class _NoRegistry(FakeEngine):
    """An engine's answer to GET /distribution when the manager cannot reach the registry (the
    message as dockerd 20.10 gave it on the lab, whose hosts have no route out)."""

    def distribution(self, image: str, registry_auth: str | None = None) -> dict[str, Any]:
        raise EngineError(
            "lab1",
            f'look up {image} on its registry: Get "https://registry-1.docker.io/v2/": dial tcp: lookup '
            "registry-1.docker.io on 10.255.255.53:53: dial udp 10.255.255.53:53: connect: network is unreachable",
        )


def test_an_image_no_registry_answers_for_is_sent_unpinned_with_the_short_reason() -> None:
    got = resolve_image(_NoRegistry(), "swarmctl-lab/probe:py3", Credentials())
    assert got.image == "swarmctl-lab/probe:py3" and not got.digest
    assert "(docker.io: network is unreachable)" in got.warning and "10.255.255.53" not in got.warning


@pytest.fixture
def fake_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `docker` on PATH that records its arguments and writes an empty archive (this machine has
    no docker CLI and engine to save from; the argv is what is under test)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "docker"
    script.write_text(
        '#!/bin/sh\nprintf "%s\\n" "$@" > "$(dirname "$0")/argv"\n'
        'while [ "$1" != "--output" ]; do shift; done; : > "$2"\n'
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir / "argv"


def test_image_names_reach_docker_save_after_the_end_of_its_options(tmp_path: Path, fake_docker: Path) -> None:
    save_local(["busybox:1", "reg.example:5000/team/web:2"], tmp_path / "out.tar")
    argv = fake_docker.read_text().splitlines()
    assert argv == ["save", "--output", str(tmp_path / "out.tar"), "--", "busybox:1", "reg.example:5000/team/web:2"]


@pytest.mark.parametrize("name", ["--output=/etc/passwd", "-q", "-"])
def test_an_image_name_that_reads_as_an_option_is_refused(tmp_path: Path, fake_docker: Path, name: str) -> None:
    with pytest.raises(InputError, match="starts with '-'"):
        save_local(["busybox", name], tmp_path / "out.tar")
    assert not fake_docker.exists()  # docker never ran


def _layer(text: str) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        data = text.encode() * 500
        info = tarfile.TarInfo(f"{text}.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _save_format(path: Path, images: dict[str, list[str]], links: dict[str, str] | None = None) -> dict[str, str]:
    """A `docker save` (20.10 layout) archive of ``images`` (name -> its layers' texts, bottom first);
    ``links``: layer texts whose file is a symbolic link to another text's file (same content), as
    docker writes a layer that two images share. Returns name -> image ID."""
    links = links or {}
    layers = {t: _layer(links.get(t, t)) for ts in images.values() for t in ts}
    manifest, files, ids = [], {}, {}
    for name, texts in images.items():
        diff_ids = [f"sha256:{hashlib.sha256(layers[t]).hexdigest()}" for t in texts]
        config = json.dumps(
            {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}}
        )
        image_id = hashlib.sha256(config.encode()).hexdigest()
        files[f"{image_id}.json"] = config.encode()
        manifest.append({"Config": f"{image_id}.json", "RepoTags": [name], "Layers": [f"{t}/layer.tar" for t in texts]})
        ids[name] = f"sha256:{image_id}"
    with tarfile.open(path, "w") as tar:
        for t, data in layers.items():
            info = tarfile.TarInfo(f"{t}/layer.tar")
            if t in links:
                info.type, info.linkname = tarfile.SYMTYPE, f"../{links[t]}/layer.tar"
                tar.addfile(info)
                continue
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, data in [*files.items(), ("manifest.json", json.dumps(manifest).encode())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return ids


def test_a_host_with_the_base_layers_is_sent_only_the_layers_above_them(tmp_path: Path) -> None:
    """Issue 28: from the first layer the host lacks (by chain ID: the layer with all below it)
    upwards, plus the configs and manifest.json; nothing of the layers it has."""
    base_ids = _save_format(tmp_path / "base.tar", {"app/base:1": ["os", "runtime"]})
    ids = _save_format(tmp_path / "app.tar", {"app/web:2": ["os", "runtime", "code"]})
    archive = read_archive(tmp_path / "app.tar")
    (image,) = archive.images
    assert [layer.member for layer in image.layers] == ["os/layer.tar", "runtime/layer.tar", "code/layer.tar"]
    assert image.layers[0].chain_id == image.layers[0].diff_id != image.layers[1].chain_id
    base = read_archive(tmp_path / "base.tar").images[0]
    classic = {"DriverStatus": [["Backing Filesystem", "extfs"]]}
    has_base = host_images(
        [{"Id": base_ids["app/base:1"], "RepoTags": ["app/base:1"]}],
        [{"Id": base.id, "RootFS": {"Layers": [layer.diff_id for layer in base.layers]}}],
        classic,
    )
    fresh = host_images([], [], classic)
    containerd = host_images([], [], {"DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]]})
    loads = {name: plan_load(archive, have) for name, have in
             {"has-base": has_base, "fresh": fresh, "containerd": containerd}.items()}  # fmt: skip
    assert loads["has-base"].members is not None and (loads["has-base"].layers, loads["has-base"].of) == (1, 3)
    assert "code/layer.tar" in loads["has-base"].members
    assert not {"os/layer.tar", "runtime/layer.tar"} & set(loads["has-base"].members)
    assert {"manifest.json", f"{ids['app/web:2'].removeprefix('sha256:')}.json"} <= set(loads["has-base"].members)
    assert loads["has-base"].bytes < archive.size - 2 * 6000 and "1 of 3 layers" in loads["has-base"].detail
    assert (loads["fresh"].layers, loads["fresh"].of) == (3, 3)
    assert loads["containerd"].members is None and loads["containerd"].bytes == archive.size
    assert "containerd" in loads["containerd"].detail

    # the slice is a tar of exactly those files, byte for byte, and as long as planned
    with open(archive.path, "rb") as f:
        sliced = ArchiveSlice(f, archive, loads["has-base"].members).read()
    assert len(sliced) == loads["has-base"].bytes
    with tarfile.open(fileobj=io.BytesIO(sliced)) as part, tarfile.open(archive.path) as whole:
        assert part.getnames() == list(loads["has-base"].members)
        for name in part.getnames():
            assert part.extractfile(name).read() == whole.extractfile(name).read()  # type: ignore[union-attr]

    # a layer above one the host lacks is sent though the host has it elsewhere: chains, not diff IDs
    mixed = host_images([{"Id": "sha256:" + "1" * 64}], [{"RootFS": {"Layers": [image.layers[1].diff_id]}}], classic)
    assert plan_load(archive, mixed).layers == 3

    # a compressed archive is sent whole
    with open(tmp_path / "app.tar", "rb") as src, gzip.open(tmp_path / "app.tar.gz", "wb") as dst:
        dst.write(src.read())
    gz = read_archive(tmp_path / "app.tar.gz")
    assert gz.images[0].id == image.id and plan_load(gz, has_base).members is None


def test_a_layer_kept_as_a_link_to_another_layer_s_file_takes_that_file_along(tmp_path: Path) -> None:
    # b's bottom layer has x's content, and docker save wrote it as a link to x's file
    _save_format(tmp_path / "two.tar", {"a:1": ["base", "x"], "b:1": ["xx", "y"]}, links={"xx": "x"})
    archive = read_archive(tmp_path / "two.tar")
    assert archive.members["xx/layer.tar"].link == "x/layer.tar"
    a = archive.images[0]
    has_a = host_images(
        [{"Id": a.id}], [{"RootFS": {"Layers": [layer.diff_id for layer in a.layers]}}], {"DriverStatus": []}
    )
    load = plan_load(archive, has_a)  # x is there, but only above base: b's bottom is another chain
    assert load.members is not None and {"xx/layer.tar", "x/layer.tar", "y/layer.tar"} <= set(load.members)
    assert "base/layer.tar" not in load.members and (load.layers, load.of) == (2, 2)  # x: a file, not a layer of b
