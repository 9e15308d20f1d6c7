"""Images without a registry: ``docker save`` archives (or images of the local engine) copied to
the hosts over their SSH connections, and which host has which image. read -> plan (pure) -> apply.

An archive is streamed into ``docker load`` on each host (nothing is copied to the host's disk
first), hosts in parallel, and only to hosts that lack one of its images by ID; a host that has
the image under another name only gets the name (a tag, no transfer). Images named instead of
archives are saved from the local engine (``docker save``, following ``DOCKER_HOST``) into one
temporary archive (mode 0600, removed afterwards) first.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

from swarmctl.compose.reference import check_image
from swarmctl.errors import HostError, InputError, NotFound, PrerequisiteError, message_of
from swarmctl.facts.images import Archive, HostImages, host_images, read_archive
from swarmctl.files import open_regular
from swarmctl.inventory import Host
from swarmctl.plan import Change, Notify, Plan, Report, quiet
from swarmctl.transport.engine import Engine, Session
from swarmctl.transport.ssh import CommandResult

log = logging.getLogger(__name__)

LOAD_IDLE_TIMEOUT = 300.0  # a host may take this long without taking data (dockerd unpacking a layer)
PROGRESS_STEP = 0.25  # report each host's transfer at every quarter


# -- sources ---------------------------------------------------------------------------------------


def split_sources(args: Iterable[str]) -> tuple[list[Path], list[str]]:
    """Archive paths and image names among ``images push`` arguments. Image names have slashes
    too (``registry:5000/team/app:1``): a path is an existing file, or spelt as one."""
    paths, names = [], []
    for arg in args:
        path = Path(arg).expanduser()
        if path.is_file() or arg.startswith(("/", "./", "../", "~")) or arg.endswith((".tar", ".tar.gz", ".tgz")):
            paths.append(path)
        else:
            names.append(arg)
    return paths, names


@contextlib.contextmanager
def sources(args: Iterable[str]) -> Iterator[list[Archive]]:
    """The archives to push: files as given, image names saved from the local engine into one
    temporary archive (removed on the way out).

    Raises:
        InputError: an unreadable archive, or an image the local engine does not have.
        PrerequisiteError: image names without a docker CLI on this machine.
    """
    paths, names = split_sources(args)
    archives = [read_archive(p) for p in paths]
    if not names:
        yield archives
        return
    tmp = Path(tempfile.mkdtemp(prefix="swarmctl-images-"))  # 0700
    try:
        out = tmp / "images.tar"
        save_local(names, out)
        yield [*archives, read_archive(out)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_local(names: list[str], out: Path) -> None:
    """``docker save`` of the local engine (DOCKER_HOST and the CLI's context are honoured).

    Names come from stack files and the command line: each is checked to be no option, and ``--``
    ends the options before them all the same.

    Raises:
        InputError: a name that starts with '-', or an image the local engine does not have.
    """
    for name in names:
        check_image(name)
    cli = shutil.which("docker")
    if cli is None:
        raise PrerequisiteError(
            "pushing images by name needs the docker CLI and an engine on this machine: save them elsewhere with "
            "`docker save -o FILE IMAGE...` and push the archive"
        )
    argv = [cli, "save", "--output", str(out), "--", *names]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        lines = (proc.stderr.strip() or "docker save failed").splitlines()
        raise InputError(f"cannot save {', '.join(names)} from the local engine: {lines[-1]}")
    os.chmod(out, 0o600)


# -- read and plan (pure) --------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """One archive streamed into a host's ``docker load``: whole (``members`` None, ``why`` says
    why), or only its files the host needs - every file but the layers the host already has."""

    archive: Archive
    members: tuple[str, ...] | None
    layers: int  # layer files sent
    of: int  # layer files of the images the host lacks
    bytes: int
    why: str = ""

    @property
    def detail(self) -> str:
        if self.members is None:
            return f"{self.archive.label} ({_mb(self.bytes)}{', whole: ' + self.why if self.why else ''})"
        return f"{self.archive.label} ({self.layers} of {self.of} layers, {_mb(self.bytes)})"


@dataclass(frozen=True)
class HostPush:
    host: str
    load: tuple[Load, ...]  # archives to stream in
    tag: tuple[tuple[str, str], ...]  # (image ID, name) to add without a transfer
    present: tuple[str, ...]  # names already there

    @property
    def bytes(self) -> int:
        return sum(a.bytes for a in self.load)

    @property
    def layers(self) -> int:
        return sum(a.layers for a in self.load)

    @property
    def of(self) -> int:
        return sum(a.of for a in self.load)


TAR_END = 1024  # two zero blocks end a tar
MISSING_FILE = "no such file or directory"  # a partial load that needed a layer it was not sent


def plan_load(archive: Archive, have: HostImages) -> Load:
    """What of ``archive`` the host needs (pure).

    An engine with the classic image store loads an archive whose manifest.json names layer files
    that are not in it, as long as it has those layers: it looks each layer up by its chain ID
    before it opens its file (moby image/tarexport/load.go, 20.10 to 28). A chain ID covers the
    layers below too, so from the first layer the host lacks, every layer above it is sent. Sent
    whole: a compressed archive (its files cannot be read in place), an image whose layers do not
    pair with its config, and any archive for an engine on the containerd image store (which
    imports every file manifest.json names)."""
    loading = [img for img in archive.images if have.state_of(img) == "load"]
    every = {layer.member for img in loading for layer in img.layers}

    def whole(why: str) -> Load:
        return Load(archive, None, len(every), len(every), archive.size, why)

    if not archive.members:
        return whole("a compressed archive")
    if not have.partial:
        return whole("the host's engine keeps images in containerd")
    if any(not img.layers for img in loading):
        return whole("an image whose layers do not match its config")
    layer_files = {layer.member for img in archive.images for layer in img.layers}
    needed: set[str] = set()
    for img in loading:
        first = next((i for i, layer in enumerate(img.layers) if layer.chain_id not in have.chains), len(img.layers))
        needed.update(layer.member for layer in img.layers[first:])
    keep = {name for name in archive.members if name not in layer_files or name in needed}
    links = {archive.members[name].link for name in keep if archive.members[name].link}  # a link's file too
    keep |= {name for name in links if name in archive.members}
    members = tuple(name for name in archive.members if name in keep)
    size = sum(archive.members[name].size for name in members) + TAR_END
    return Load(archive, members, len(keep & every), len(every), size)


def plan_push(archives: list[Archive], hosts: Mapping[str, HostImages]) -> list[HostPush]:
    """Per host: the archives it must load (it lacks one of their images by ID) and what of each,
    the names it only has to be given, the names it has (pure)."""
    out = []
    for name, have in hosts.items():
        load, tag, present = [], [], []
        for archive in archives:
            states = {img.id: have.state_of(img) for img in archive.images}
            if "load" in states.values():
                load.append(plan_load(archive, have))
                continue
            for img in archive.images:
                for ref in img.refs:
                    (present.append(ref) if have.has(ref, img.id) else tag.append((img.id, ref)))
        out.append(HostPush(name, tuple(load), tuple(tag), tuple(present)))
    return out


def changes_of(pushes: list[HostPush]) -> list[Change]:
    out = []
    for p in pushes:
        for a in p.load:
            out.append(Change("image", p.host, "load", tuple(a.archive.refs), a.detail))
        for image_id, ref in p.tag:
            out.append(Change("image", p.host, "tag", (ref,), f"{ref} -> {image_id[:19]} (already there)"))
    return out


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


# -- apply -----------------------------------------------------------------------------------------


@dataclass
class Transfer:
    """Bytes sent to each host so far, reported at every quarter."""

    totals: Mapping[str, int]
    notify: Notify = quiet
    sent: dict[str, int] = field(default_factory=dict)
    marks: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def update(self, host: str, offset: int, sent: int) -> None:
        with self.lock:
            self.sent[host] = offset + sent
            total = self.totals.get(host) or 1
            share = self.sent[host] / total
            if share >= self.marks.get(host, 0.0) + PROGRESS_STEP or self.sent[host] >= total:
                self.marks[host] = share
                self.notify(f"{host}: {_mb(self.sent[host])} of {_mb(total)} ({share:.0%})")


class ArchiveSlice(io.RawIOBase):
    """The files ``members`` of a plain tar, read in place, as a tar of their own: each file's
    headers and data as they lie in the archive, then the two zero blocks that end a tar."""

    def __init__(self, f: BinaryIO, archive: Archive, members: tuple[str, ...]):
        self._f = f
        # (where in the archive, how many bytes); where None: zeros
        self._parts: list[tuple[int | None, int]] = [
            (archive.members[m].offset, archive.members[m].size) for m in members
        ] + [(None, TAR_END)]

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while self._parts and self._parts[0][1] == 0:
            self._parts.pop(0)
        if not self._parts or not len(view):
            return 0
        at, left = self._parts[0]
        n = min(len(view), left)
        if at is None:
            view[:n] = bytes(n)
        else:
            self._f.seek(at)
            data = self._f.read(n)
            if len(data) != n:
                raise OSError(f"{self._f.name}: ended inside a file it listed (was it replaced?)")
            view[:n] = data
            at += n
        self._parts[0] = (at, left - n)
        return n


def _push_one(session: Session, host: Host, push: HostPush, transfer: Transfer) -> dict[str, Any]:
    conn = session.pool.connection(host)
    offset = 0
    whole_again = []
    for load in push.load:
        start = offset

        def sent(n: int, start: int = start) -> None:
            transfer.update(host.name, start, n)

        def stream(load: Load, members: tuple[str, ...] | None) -> CommandResult:
            with open_regular(load.archive.path) as f:  # the file read_archive looked at may have been replaced
                source = f if members is None else cast(BinaryIO, ArchiveSlice(f, load.archive, members))
                return conn.stream(["docker", "load"], source, on_bytes=sent, idle_timeout=LOAD_IDLE_TIMEOUT)

        res = stream(load, load.members)
        if not res.ok and load.members is not None and MISSING_FILE in res.stderr:
            # a layer the host had is gone since it was asked (an image removed in between): whole
            log.info("%s: the partial load of %s failed (%s): sending it whole", host.name, load.archive.label,
                     res.stderr.strip()[-200:])  # fmt: skip
            whole_again.append(load.archive.label)
            res = stream(load, None)
        res.check(f"docker load of {load.archive.label} failed")
        offset += load.bytes
    engine = session.engine(host)
    for image_id, ref in push.tag:
        engine.tag_image(image_id, ref)
    after = host_images(engine.images())
    missing = [r for a in push.load for r, i in a.archive.refs.items() if not after.has(r, i)]
    missing += [r for i, r in push.tag if not after.has(r, i)]
    if missing:
        raise HostError(host.name, f"after the load it still lacks {', '.join(missing)}")
    return {"bytes": push.bytes, "whole_again": whole_again}


def read_host(engine: Engine, archives: list[Archive]) -> HostImages:
    """What the host's engine has; the layers of its images only when it lacks one of the
    archives' images (one inspect per image it has)."""
    listing = engine.images()
    have = host_images(listing)
    if all(img.id in have.ids for a in archives for img in a.images):
        return have
    inspected = []
    for img in listing:
        try:
            inspected.append(engine.inspect_image(str(img["Id"])))
        except NotFound:
            continue  # removed since the listing: its layers count as missing
    return host_images(listing, inspected, engine.info())


def push_images(
    session: Session,
    archives: list[Archive],
    hosts: list[Host],
    plan_only: bool = False,
    notify: Notify = quiet,
) -> Report:
    """Copy the archives' images to ``hosts`` that lack them, in parallel.

    Returns:
        A Report (a Change per load or tag; failures by host); ``data["hosts"]``: host ->
        {"result": loaded | tagged | present | failed, "bytes" (sent), "layers" (layer files sent),
        "of" (layer files of the images it lacked), "whole_again" (archives whose partial load
        failed and that were sent whole), "seconds"}; with ``plan_only``: load | tag | present,
        and the bytes and layers it would send.
    """
    listed = session.fan_out(lambda h: read_host(session.engine(h), archives), hosts)
    failures = {n: message_of(o.error) for n, o in listed.items() if o.error is not None}
    have = {h.name: listed[h.name].value for h in hosts if listed[h.name].value is not None}
    pushes = plan_push(archives, {n: v for n, v in have.items() if v is not None})
    plan = Plan(tuple(changes_of(pushes)), (), failures)
    report = Report(plan=plan, failures=dict(failures))
    summary: dict[str, dict[str, Any]] = {n: {"result": "failed", "bytes": 0, "layers": 0, "of": 0, "seconds": 0.0}
                                          for n in failures}  # fmt: skip
    if plan_only:
        for p in pushes:
            summary[p.host] = {"result": "load" if p.load else "tag" if p.tag else "present", "bytes": p.bytes,
                               "layers": p.layers, "of": p.of}  # fmt: skip
        report.data["hosts"] = summary
        return report
    todo = [p for p in pushes if p.load or p.tag]
    for p in pushes:
        if not (p.load or p.tag):
            summary[p.host] = {"result": "present", "bytes": 0, "layers": 0, "of": 0, "seconds": 0.0}
    transfer = Transfer({p.host: p.bytes for p in todo}, notify)
    t0 = time.monotonic()
    by_name = {p.host: p for p in todo}
    outcomes = session.fan_out(lambda h: _push_one(session, h, by_name[h.name], transfer),
                               [session.inventory.host(p.host) for p in todo])  # fmt: skip
    for p in todo:
        o = outcomes[p.host]
        if o.error is not None:
            report.failures[p.host] = message_of(o.error)
            summary[p.host] = {"result": "failed", "bytes": transfer.sent.get(p.host, 0), "layers": 0, "of": 0,
                               "seconds": o.seconds}  # fmt: skip
            continue
        for c in changes_of([p]):
            report.done(c, o.seconds)
        summary[p.host] = {"result": "loaded" if p.load else "tagged", "bytes": transfer.sent.get(p.host, 0),
                           "layers": p.layers, "of": p.of,
                           "whole_again": o.value["whole_again"] if o.value else [],
                           "seconds": round(o.seconds, 2)}  # fmt: skip
    report.data["hosts"] = summary
    report.data["seconds"] = round(time.monotonic() - t0, 2)
    return report


# -- which host has which image -------------------------------------------------------------------


@dataclass(frozen=True)
class ImageRow:
    image: str
    host: str
    id: str  # "" when the host lacks it; "?" when the host could not be asked

    def json(self) -> dict[str, str]:
        return {"image": self.image, "host": self.host, "id": self.id}


def list_images(session: Session, images: list[str], hosts: list[Host]) -> tuple[list[ImageRow], dict[str, str]]:
    """For each image (by name), the ID each host has for it; and the hosts that could not be asked."""
    listed = session.fan_out(lambda h: host_images(session.engine(h).images()), hosts)
    failures = {name: message_of(o.error) for name, o in listed.items() if o.error is not None}
    rows = []
    for image in images:
        for h in hosts:
            o = listed[h.name]
            if o.value is None:
                rows.append(ImageRow(image, h.name, "?"))
                continue
            rows.append(ImageRow(image, h.name, o.value.refs.get(image, "")))
    return rows, failures


def hosts_named(session: Session, names: Iterable[str]) -> list[Host]:
    """Inventory hosts by name (all of them for none).

    Raises:
        InputError: a name the inventory does not have.
    """
    inv = session.inventory
    wanted = [n for n in names if n]
    unknown = [n for n in wanted if n not in {h.name for h in inv.hosts}]
    if unknown:
        raise InputError(
            f"no host {', '.join(unknown)} in {inv.path} (its hosts: {', '.join(h.name for h in inv.hosts)})"
        )
    return [inv.host(n) for n in wanted] if wanted else list(inv.hosts)
