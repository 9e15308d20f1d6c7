"""Images for the lab, built without a registry or a Docker daemon, and loaded into every lab host.

An image here is a ``docker save`` archive written directly: one layer (a root filesystem tar),
an image config and a manifest. The same recipe gives the same bytes, hence the same image ID on
every host; archives are cached under ``~/.cache/swarmctl/images`` keyed by a hash of the recipe,
so a rebuild happens only when the recipe (or what it packs) changes.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors

from swarmctl.errors import PrerequisiteError, SwarmctlError
from swarmctl.lab.hosts import LabSpec

log = logging.getLogger(__name__)

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "swarmctl" / "images"
CREATED = "2024-01-01T00:00:00Z"  # fixed, so the same recipe gives the same image ID
Report = Callable[[str], None]


class ImageError(SwarmctlError):
    pass


@dataclass(frozen=True)
class Recipe:
    """How to make one image: a root filesystem writer plus the image config."""

    ref: str  # repository:tag
    version: str  # bump to force a rebuild when the build steps change
    write_rootfs: Callable[[tarfile.TarFile], None]
    config: dict[str, Any]
    inputs: tuple[Path, ...] = ()  # files whose content the rootfs packs (part of the cache key)
    var: str = ""  # the inventory variable that names this image in the lab
    needs: dict[str, str] = field(default_factory=dict)  # file on this machine -> Debian package

    def key(self) -> str:
        h = hashlib.sha256()
        h.update(json.dumps([self.ref, self.version, self.config], sort_keys=True).encode())
        for p in self.inputs:
            h.update(p.read_bytes() if p.is_file() else b"missing")
        return h.hexdigest()[:16]

    def archive(self) -> Path:
        return CACHE / f"{self.ref.replace('/', '_').replace(':', '_')}-{self.key()}.tar"


def _add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    tar.addfile(info)


def _add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def _add_symlink(tar: tarfile.TarFile, name: str, target: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    info.mode = 0o777
    tar.addfile(info)


BUSYBOX = Path("/bin/busybox")
BUSYBOX_APPLETS = (
    "sh", "ash", "cat", "echo", "ls", "mkdir", "rm", "sleep", "nslookup", "nc", "ping", "hostname", "ip", "grep",
    "sed", "awk", "head", "tail", "wc", "cut", "tr", "date", "env", "id", "ps", "kill", "true", "false", "test",
    "timeout", "printf", "sort", "uniq", "seq", "touch", "xargs", "tee", "dd", "od", "hexdump", "base64", "md5sum",
    "sha256sum", "mount", "df", "du", "find", "stat", "basename", "dirname", "readlink", "expr",
)  # fmt: skip


def _probe_rootfs(tar: tarfile.TarFile) -> None:
    if not BUSYBOX.is_file():
        raise PrerequisiteError(
            "no /bin/busybox for the lab's probe image: install it with `apt-get install busybox-static`"
        )
    for d in ("bin", "etc", "tmp", "root", "run", "var", "proc", "sys", "dev"):
        _add_dir(tar, d, 0o1777 if d == "tmp" else 0o755)
    _add_file(tar, "bin/busybox", BUSYBOX.read_bytes(), 0o755)
    for applet in BUSYBOX_APPLETS:
        _add_symlink(tar, f"bin/{applet}", "busybox")
    _add_file(tar, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    _add_file(tar, "etc/group", b"root:x:0:\nnogroup:x:65534:\n")


PROBE = Recipe(
    ref="swarmctl-lab/probe:1",
    version="1",
    write_rootfs=_probe_rootfs,
    config={"Env": ["PATH=/bin"], "Cmd": ["sh"]},
    inputs=(BUSYBOX,),
    var="PROBE_IMAGE",
    needs={str(BUSYBOX): "busybox-static"},
)

RECIPES: dict[str, Recipe] = {"probe": PROBE}


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_archive(recipe: Recipe, out: Path) -> str:
    """Build the ``docker save`` archive of ``recipe`` at ``out``; returns the image ID."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        layer = Path(tmp) / "layer.tar"
        with tarfile.open(layer, "w", format=tarfile.GNU_FORMAT) as tar:
            recipe.write_rootfs(tar)
        diff_id = "sha256:" + _sha256_file(layer)
        config = {
            "architecture": "amd64" if os.uname().machine in ("x86_64", "amd64") else os.uname().machine,
            "os": "linux",
            "created": CREATED,
            "config": recipe.config,
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": CREATED, "created_by": f"swarmctl lab recipe {recipe.ref} v{recipe.version}"}],
        }
        config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
        image_id = hashlib.sha256(config_bytes).hexdigest()
        layer_dir = diff_id.split(":", 1)[1]
        manifest = [{"Config": f"{image_id}.json", "RepoTags": [recipe.ref], "Layers": [f"{layer_dir}/layer.tar"]}]
        partial = Path(tmp) / "image.tar"
        with tarfile.open(partial, "w", format=tarfile.GNU_FORMAT) as tar:
            _add_dir(tar, layer_dir)
            _add_file(tar, f"{layer_dir}/VERSION", b"1.0")
            tar.add(layer, arcname=f"{layer_dir}/layer.tar")
            _add_file(tar, f"{image_id}.json", config_bytes)
            _add_file(tar, "manifest.json", json.dumps(manifest).encode())
            repo, _, tag = recipe.ref.rpartition(":")
            _add_file(tar, "repositories", json.dumps({repo: {tag: layer_dir}}).encode())
        os.replace(partial, out)
    return "sha256:" + image_id


def image_id_of(archive: Path) -> str:
    with tarfile.open(archive) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        manifest = json.load(member)
    return "sha256:" + manifest[0]["Config"].removesuffix(".json")


def ensure_built(recipe: Recipe, report: Report = lambda _: None) -> Path:
    """The cached archive for ``recipe``, built first when missing."""
    for path, package in recipe.needs.items():
        if not Path(path).exists():
            raise PrerequisiteError(
                f"the lab image {recipe.ref} needs {path}: install it with `apt-get install {package}`"
            )
    archive = recipe.archive()
    if archive.is_file():
        return archive
    report(f"building image {recipe.ref}")
    write_archive(recipe, archive)
    for old in archive.parent.glob(archive.name.rsplit("-", 1)[0] + "-*.tar"):
        if old != archive:
            old.unlink(missing_ok=True)  # superseded builds of the same image
    return archive


def load_into_hosts(spec: LabSpec, archives: list[Path], report: Report = lambda _: None) -> dict[str, list[str]]:
    """Load each archive into every lab host that lacks that exact image; returns host -> refs loaded."""
    wanted = [(a, image_id_of(a), _ref_of(a)) for a in archives]

    def one(host_name: str) -> list[str]:
        host = next(h for h in spec.hosts if h.name == host_name)
        loaded = []
        with docker.APIClient(base_url=f"unix://{spec.docker_socket(host)}", version="1.41", timeout=600) as api:
            for archive, image_id, ref in wanted:
                try:
                    if api.inspect_image(ref)["Id"] == image_id:
                        continue
                except docker.errors.NotFound:
                    pass
                with open(archive, "rb") as f:
                    for _ in api.load_image(f):
                        pass
                if api.inspect_image(ref)["Id"] != image_id:
                    raise ImageError(f"{host_name}: loading {ref} did not give image {image_id[:19]}")
                loaded.append(ref)
        return loaded

    names = [h.name for h in spec.hosts]
    with ThreadPoolExecutor(max_workers=len(names)) as ex:
        results = dict(zip(names, ex.map(one, names), strict=True))
    for name, refs in results.items():
        if refs:
            report(f"{name}: loaded {', '.join(refs)}")
    return results


def _ref_of(archive: Path) -> str:
    with tarfile.open(archive) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        return str(json.load(member)[0]["RepoTags"][0])


def iter_recipes(names: list[str] | None = None) -> Iterator[Recipe]:
    for name, recipe in RECIPES.items():
        if not names or name in names:
            yield recipe


def lab_vars() -> dict[str, str]:
    """Inventory variables that point stack files at the lab images."""
    return {r.var: r.ref for r in RECIPES.values() if r.var}


def clean_cache() -> None:
    shutil.rmtree(CACHE, ignore_errors=True)
