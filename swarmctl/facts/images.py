"""Images: what a ``docker save`` archive holds, and what each host's engine has (parsed once)."""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swarmctl.errors import InputError
from swarmctl.files import open_regular


@dataclass(frozen=True)
class ArchivedImage:
    id: str  # sha256:<hex of its config>
    refs: tuple[str, ...]  # the names it carries (RepoTags); may be none


@dataclass(frozen=True)
class Archive:
    """A ``docker save`` archive (plain or compressed tar) and the images in it."""

    path: Path
    size: int
    images: tuple[ArchivedImage, ...]

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
    except FileNotFoundError:
        raise InputError("no such file", path) from None
    except KeyError:
        raise InputError("not an image archive: it has no manifest.json (make one with `docker save -o FILE IMAGE`)",
                         path) from None  # fmt: skip
    except (OSError, tarfile.TarError, ValueError) as e:
        raise InputError(f"not a readable image archive ({e})", path) from None
    if not isinstance(manifest, list) or not manifest:
        raise InputError("its manifest.json lists no image", path)
    images = []
    for entry in manifest:
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
            raise InputError("its manifest.json is not docker's (an entry without Config)", path)
        images.append(ArchivedImage(_config_id(entry["Config"]), tuple(entry.get("RepoTags") or ())))
    return Archive(path, size, tuple(images))


@dataclass(frozen=True)
class HostImages:
    """What one engine has: image IDs, and which ID each name points to."""

    ids: frozenset[str]
    refs: Mapping[str, str]  # name -> image ID

    def has(self, ref: str, image_id: str) -> bool:
        return self.refs.get(ref) == image_id

    def state_of(self, image: ArchivedImage) -> str:
        """present (every name at this ID) | tag (the ID is there, some name is not) | load."""
        if image.id not in self.ids:
            return "load"
        return "present" if all(self.has(r, image.id) for r in image.refs) else "tag"


def host_images(listing: Iterable[Mapping[str, Any]]) -> HostImages:
    """From ``GET /images/json``."""
    ids, refs = set(), {}
    for img in listing:
        ids.add(str(img["Id"]))
        for tag in img.get("RepoTags") or ():
            if tag != "<none>:<none>":
                refs[str(tag)] = str(img["Id"])
    return HostImages(frozenset(ids), refs)
