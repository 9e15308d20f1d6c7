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
from typing import Any

from swarmctl.compose.reference import check_image
from swarmctl.errors import HostError, InputError, PrerequisiteError, message_of
from swarmctl.facts.images import Archive, HostImages, host_images, read_archive
from swarmctl.files import open_regular
from swarmctl.inventory import Host
from swarmctl.plan import Change, Notify, Plan, Report, quiet
from swarmctl.transport.engine import Session

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
class HostPush:
    host: str
    load: tuple[Archive, ...]  # archives to stream in
    tag: tuple[tuple[str, str], ...]  # (image ID, name) to add without a transfer
    present: tuple[str, ...]  # names already there

    @property
    def bytes(self) -> int:
        return sum(a.size for a in self.load)


def plan_push(archives: list[Archive], hosts: Mapping[str, HostImages]) -> list[HostPush]:
    """Per host: the archives it must load (it lacks one of their images by ID), the names it only
    has to be given, the names it has (pure)."""
    out = []
    for name, have in hosts.items():
        load, tag, present = [], [], []
        for archive in archives:
            states = {img.id: have.state_of(img) for img in archive.images}
            if "load" in states.values():
                load.append(archive)
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
            out.append(Change("image", p.host, "load", tuple(a.refs), f"{a.label} ({_mb(a.size)})"))
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


def _push_one(session: Session, host: Host, push: HostPush, transfer: Transfer) -> dict[str, Any]:
    conn = session.pool.connection(host)
    offset = 0
    for archive in push.load:
        start = offset

        def sent(n: int, start: int = start) -> None:
            transfer.update(host.name, start, n)

        with open_regular(archive.path) as f:  # the file read_archive looked at may have been replaced
            res = conn.stream(["docker", "load"], f, on_bytes=sent, idle_timeout=LOAD_IDLE_TIMEOUT)
        res.check(f"docker load of {archive.label} failed")
        offset += archive.size
    engine = session.engine(host)
    for image_id, ref in push.tag:
        engine.tag_image(image_id, ref)
    after = host_images(engine.images())
    missing = [r for a in push.load for r, i in a.refs.items() if not after.has(r, i)]
    missing += [r for i, r in push.tag if not after.has(r, i)]
    if missing:
        raise HostError(host.name, f"after the load it still lacks {', '.join(missing)}")
    return {"bytes": push.bytes}


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
        {"result": loaded | tagged | present | failed, "bytes", "seconds"}.
    """
    listed = session.fan_out(lambda h: host_images(session.engine(h).images()), hosts)
    failures = {n: message_of(o.error) for n, o in listed.items() if o.error is not None}
    have = {h.name: listed[h.name].value for h in hosts if listed[h.name].value is not None}
    pushes = plan_push(archives, {n: v for n, v in have.items() if v is not None})
    plan = Plan(tuple(changes_of(pushes)), (), failures)
    report = Report(plan=plan, failures=dict(failures))
    summary: dict[str, dict[str, Any]] = {n: {"result": "failed", "bytes": 0, "seconds": 0.0} for n in failures}
    if plan_only:
        report.data["hosts"] = summary
        return report
    todo = [p for p in pushes if p.load or p.tag]
    for p in pushes:
        if not (p.load or p.tag):
            summary[p.host] = {"result": "present", "bytes": 0, "seconds": 0.0}
    transfer = Transfer({p.host: p.bytes for p in todo}, notify)
    t0 = time.monotonic()
    by_name = {p.host: p for p in todo}
    outcomes = session.fan_out(lambda h: _push_one(session, h, by_name[h.name], transfer),
                               [session.inventory.host(p.host) for p in todo])  # fmt: skip
    for p in todo:
        o = outcomes[p.host]
        if o.error is not None:
            report.failures[p.host] = message_of(o.error)
            summary[p.host] = {"result": "failed", "bytes": transfer.sent.get(p.host, 0), "seconds": o.seconds}
            continue
        for c in changes_of([p]):
            report.done(c, o.seconds)
        summary[p.host] = {"result": "loaded" if p.load else "tagged", "bytes": p.bytes,
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
