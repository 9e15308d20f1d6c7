"""Images: what a ``docker save`` archive holds, and what each host's engine has (parsed once)."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swarmctl.errors import InputError
from swarmctl.files import open_regular


@dataclass(frozen=True)
class ArchivedLayer:
    member: str  # the file in the archive (manifest.json's Layers entry)
    diff_id: str  # sha256 of the uncompressed layer tar (the config's rootfs.diff_ids)
    chain_id: str  # the layer with every layer below it: what an engine's layer store is keyed by


@dataclass(frozen=True)
class ArchivedImage:
    id: str  # sha256:<hex of its config>
    refs: tuple[str, ...]  # the names it carries (RepoTags); may be none
    layers: tuple[ArchivedLayer, ...] = ()  # bottom first; () when the archive cannot be sent in part


@dataclass(frozen=True)
class Member:
    """Where a file of a plain (uncompressed) tar lies: its headers from ``offset``, its data up to
    ``end`` (padded to the tar block); ``link``: the member a symbolic or hard link points at."""

    offset: int
    end: int
    link: str = ""

    @property
    def size(self) -> int:
        return self.end - self.offset


@dataclass(frozen=True)
class Archive:
    """A ``docker save`` archive (plain or compressed tar) and the images in it. ``members``: for a
    plain tar, every file and where it lies (so that only some layers can be sent); empty for a
    compressed one (sent whole)."""

    path: Path
    size: int
    images: tuple[ArchivedImage, ...]
    members: Mapping[str, Member] = field(default_factory=dict)

    @property
    def refs(self) -> dict[str, str]:
        """name -> image ID, for every name in the archive."""
        return {ref: img.id for img in self.images for ref in img.refs}

    @property
    def label(self) -> str:
        return ", ".join(self.refs) or self.path.name


def _config_id(config: str) -> str:
    """``<hex>.json`` (docker's layout) or ``blobs/sha256/<hex>`` (OCI layout) -> ``sha256:<hex>``."""
    name = config.rsplit("/", 1)[-1].removesuffix(".json")
    return f"sha256:{name}"


def chain_ids(diff_ids: Iterable[str]) -> tuple[str, ...]:
    """The chain ID of each layer, bottom first (pure): the first is its diff ID, each next one
    sha256 of "<chain below> <diff ID>" - how an engine's layer store names a layer stack."""
    out: list[str] = []
    for diff in diff_ids:
        out.append(diff if not out else "sha256:" + hashlib.sha256(f"{out[-1]} {diff}".encode()).hexdigest())
    return tuple(out)


TAR_BLOCK = 512


def _members(tar: tarfile.TarFile) -> dict[str, Member]:
    """Where each file lies; {} (the archive is sent whole) when one is not a plain file,
    directory or link (a sparse file's stored size is not its size)."""
    out = {}
    for info in tar.getmembers():
        if info.issparse() or not (info.isreg() or info.isdir() or info.issym() or info.islnk()):
            return {}
        end = info.offset_data + -(-info.size // TAR_BLOCK) * TAR_BLOCK if info.isreg() else info.offset_data
        link = ""
        if info.issym():
            link = os.path.normpath(os.path.join(os.path.dirname(info.name), info.linkname))
        elif info.islnk():
            link = info.linkname
        out[info.name] = Member(info.offset, end, link)
    return out


def _layers(tar: tarfile.TarFile, entry: Mapping[str, Any]) -> tuple[ArchivedLayer, ...]:
    """The image's layers from its config's diff IDs and manifest.json's Layers (same order); ()
    when they do not pair up (the image is then always sent whole)."""
    paths = entry.get("Layers")
    member = tar.extractfile(str(entry["Config"]))
    if member is None or not isinstance(paths, list):
        return ()
    diff_ids = (json.load(member).get("rootfs") or {}).get("diff_ids")
    if not isinstance(diff_ids, list) or len(diff_ids) != len(paths) or not all(isinstance(p, str) for p in paths):
        return ()
    return tuple(
        ArchivedLayer(p, str(d), c) for p, d, c in zip(paths, diff_ids, chain_ids(map(str, diff_ids)), strict=True)
    )


def read_archive(path: Path) -> Archive:
    """The images of a ``docker save`` archive (its manifest.json).

    The archive is opened with files.open_regular: a FIFO or a link to /dev/zero given as an archive
    is refused, not waited on or read forever. Its size is not limited (images are gigabytes).

    Raises:
        InputError: not a regular file, or not a readable tar with a docker manifest.
    """
    try:
        with open_regular(path) as f, tarfile.open(fileobj=f, mode="r:*") as tar:
            size = os.fstat(f.fileno()).st_size
            member = tar.extractfile("manifest.json")
            if member is None:
                raise KeyError("manifest.json")
            manifest = json.load(member)
            plain = tar.fileobj is f  # not decompressed: its files can be read in place
            members = _members(tar) if plain else {}
            layers: list[tuple[ArchivedLayer, ...]] = []
            for entry in manifest if plain and isinstance(manifest, list) else ():
                try:
                    layers.append(_layers(tar, entry) if isinstance(entry, dict) and "Config" in entry else ())
                except (KeyError, ValueError, AttributeError):
                    layers.append(())  # sent whole
    except FileNotFoundError:
        raise InputError("no such file", path) from None
    except KeyError:
        raise InputError("not an image archive: it has no manifest.json (make one with `docker save -o FILE IMAGE`)",
                         path) from None  # fmt: skip
    except (OSError, tarfile.TarError, ValueError) as e:
        raise InputError(f"not a readable image archive ({e})", path) from None
    if not isinstance(manifest, list) or not manifest:
        raise InputError("its manifest.json lists no image", path)
    images: list[ArchivedImage] = []
    for i, entry in enumerate(manifest):
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
            raise InputError("its manifest.json is not docker's (an entry without Config)", path)
        parts = layers[i] if layers else ()  # one per manifest entry for a plain tar, none otherwise
        images.append(ArchivedImage(_config_id(entry["Config"]), tuple(entry.get("RepoTags") or ()), parts))
    return Archive(path, size, tuple(images), members)


@dataclass(frozen=True)
class HostImages:
    """What one engine has: image IDs, and which ID each name points to; ``chains``: the layer
    stacks (chain IDs) its images are made of; ``partial``: whether its ``docker load`` takes an
    archive without the layers it has (the classic image store; not containerd's)."""

    ids: frozenset[str]
    refs: Mapping[str, str]  # name -> image ID
    chains: frozenset[str] = frozenset()
    partial: bool = False

    def has(self, ref: str, image_id: str) -> bool:
        return self.refs.get(ref) == image_id

    def state_of(self, image: ArchivedImage) -> str:
        """present (every name at this ID) | tag (the ID is there, some name is not) | load."""
        if image.id not in self.ids:
            return "load"
        return "present" if all(self.has(r, image.id) for r in image.refs) else "tag"


def host_images(
    listing: Iterable[Mapping[str, Any]],
    inspected: Iterable[Mapping[str, Any]] = (),
    info: Mapping[str, Any] | None = None,
) -> HostImages:
    """From ``GET /images/json``; with ``inspected`` (``GET /images/{id}/json`` of each) the layer
    stacks the engine has, and with ``GET /info`` whether a partial archive loads there."""
    ids, refs = set(), {}
    for img in listing:
        ids.add(str(img["Id"]))
        for tag in img.get("RepoTags") or ():
            if tag != "<none>:<none>":
                refs[str(tag)] = str(img["Id"])
    chains: set[str] = set()
    for img in inspected:
        layers = (img.get("RootFS") or {}).get("Layers") or []
        chains.update(chain_ids(str(d) for d in layers))
    return HostImages(frozenset(ids), refs, frozenset(chains), info is not None and classic_store(info))


def classic_store(info: Mapping[str, Any]) -> bool:
    """Whether the engine keeps images in its classic (graph driver) store, whose ``docker load``
    skips every layer whose chain it has without opening its file (moby image/tarexport/load.go,
    20.10 to 28). The containerd image store (``driver-type io.containerd.snapshotter.v1`` in
    DriverStatus) imports every file manifest.json names: it is sent whole archives."""
    status = info.get("DriverStatus") or []
    return not any(
        isinstance(pair, list) and len(pair) == 2 and "containerd.snapshotter" in str(pair[1]) for pair in status
    )
