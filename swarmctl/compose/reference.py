"""Image references as the Docker API client normalises them before creating or updating a service.

The docker CLI's API client (moby's ``client/service_create.go``, ``imageWithTagString``) sends
every service image as ``reference.FamiliarString(reference.TagNameOnly(ParseNormalizedNamed(img)))``
(distribution/reference): the Docker Hub domain and ``library/`` prefix dropped, ``:latest`` added
to a name without a tag or digest. A reference it cannot parse is sent as written. swarmctl sends
the same string, so a service deployed by one tool does not look changed to the other.
"""

from __future__ import annotations

import re

from swarmctl.errors import InputError

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
MAX_NAME = 255  # distribution/reference's NameTotalLengthMax

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"^(?:({_DOMAIN})/)?({_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$", re.ASCII)  # Go's \w: ASCII only
_DIGEST = re.compile(r"^([A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*):([0-9a-fA-F]{32,})$")
_IDENTIFIER = re.compile(r"^[a-f0-9]{64}$")
_DIGEST_HEX = {"sha256": 64, "sha384": 96, "sha512": 128}


def _split_domain(name: str) -> tuple[str, str]:
    """``ubuntu`` -> (docker.io, library/ubuntu); ``host:5000/a/b`` -> (host:5000, a/b)."""
    first, sep, rest = name.partition("/")
    if not sep:
        return DEFAULT_DOMAIN, OFFICIAL_PREFIX + name
    if first == "localhost" or any(c in first for c in ".:") or first.lower() != first:
        domain, remote = (DEFAULT_DOMAIN if first == LEGACY_DOMAIN else first), rest
    else:
        domain, remote = DEFAULT_DOMAIN, name
    if domain == DEFAULT_DOMAIN and "/" not in remote:
        remote = OFFICIAL_PREFIX + remote
    return domain, remote


def check_image(image: str) -> None:
    """Refuse a reference that starts with '-': no reference docker parses does (a name, a domain
    and an image ID all start with a letter or digit), and on a command line such as `docker save`'s
    it would be read as an option (``--output=...``), not as an image.

    Raises:
        InputError: naming the reference.
    """
    if image.startswith("-"):
        raise InputError(f"bad image {image!r}: an image reference never starts with '-'")


def service_image(image: str) -> str:
    """The image string the Docker API client sends for a service (see the module docstring)."""
    if _IDENTIFIER.match(image):
        return image  # a bare image ID: not a name, sent as it is
    rest, at, digest = image.partition("@")
    # a ':' after the last '/' separates the tag; one before it belongs to a registry port
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    name, tag = (rest[:colon], rest[colon + 1 :]) if colon > slash else (rest, None)
    domain, remote = _split_domain(name)
    if remote.lower() != remote:
        return image  # repository names must be lower case: docker refuses to parse it
    full = f"{domain}/{remote}"
    m = _NAME.match(full)
    if m is None or len(full) > MAX_NAME:
        return image
    if tag is not None and not _TAG.match(tag):
        return image  # `app:` (an empty tag) included
    if at:
        d = _DIGEST.match(digest)
        if d is None or _DIGEST_HEX.get(d.group(1)) != len(d.group(2)):
            return image
    familiar = full
    if domain == DEFAULT_DOMAIN:
        # the familiar form: no Docker Hub domain, no `library/` for a one-level official name
        official = remote.startswith(OFFICIAL_PREFIX) and remote.count("/") == 1
        familiar = remote.removeprefix(OFFICIAL_PREFIX) if official else remote
    if tag is None and not digest:
        tag = DEFAULT_TAG
    return familiar + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


def registry_of(image: str) -> str:
    """The registry an image reference pulls from: ``host:5000/a/b:1`` -> host:5000, ``redis`` -> docker.io."""
    rest = image.partition("@")[0]
    slash, colon = rest.rfind("/"), rest.rfind(":")
    name = rest[:colon] if colon > slash else rest
    return _split_domain(name)[0]


def strip_digest(image: str) -> str:
    """``name:tag@sha256:...`` -> ``name:tag``."""
    return image.partition("@")[0]
