"""Private registries: credentials for the images a stack runs, a login checked before anything
changes, and tags resolved to digests so every node runs the same bytes.

Credentials come from the inventory's ``registries:`` (the password an encrypted secret in the
``secrets/`` directory beside the inventory), else from the user's docker CLI configuration
(``~/.docker/config.json``, or ``$DOCKER_CONFIG``; plain ``auths`` entries - credential helpers
are not run). They travel only as the ``X-Registry-Auth`` header of the API requests that need
them (service create/update, distribution lookups, the login check), the way ``docker stack
deploy --with-registry-auth`` sends them: never in output, logs, argv or ``--json``.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from swarmctl.compose.reference import registry_of, strip_digest
from swarmctl.errors import EngineError, InputError, NotFound, RegistryError, Unauthorized
from swarmctl.files import open_regular, read_limited
from swarmctl.inventory import Inventory
from swarmctl.secretstore import KeySource, read_secret
from swarmctl.transport.engine import Engine

log = logging.getLogger(__name__)

RESOLVE_MODES = ("always", "changed", "never")
DOCKER_HUB = "docker.io"
MAX_DOCKER_CONFIG = 4 * 1024 * 1024  # the docker CLI's config.json: kilobytes, even with many registries
# the docker CLI keeps Docker Hub's credentials under its v1 index address
HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")


@dataclass(frozen=True)
class Credential:
    registry: str
    username: str
    password: str = field(repr=False)
    source: str  # where it came from, for messages: "the inventory" | "~/.docker/config.json"

    def auth(self) -> dict[str, str]:
        address = "https://index.docker.io/v1/" if self.registry == DOCKER_HUB else self.registry
        return {"username": self.username, "password": self.password, "serveraddress": address}

    def header(self) -> str:
        """The X-Registry-Auth value (base64url JSON, as the docker CLI encodes it)."""
        return base64.urlsafe_b64encode(json.dumps(self.auth()).encode()).decode()


@dataclass(frozen=True)
class Credentials:
    by_registry: Mapping[str, Credential] = field(default_factory=dict)

    def for_image(self, image: str) -> Credential | None:
        return self.by_registry.get(registry_of(image))

    def header(self, image: str) -> str | None:
        c = self.for_image(image)
        return c.header() if c else None


def docker_config_auths(env: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """registry -> (username, password) from the docker CLI's config file (plain ``auths`` only)."""
    base = (
        Path(env["DOCKER_CONFIG"]) if env.get("DOCKER_CONFIG") else Path(env.get("HOME", "~")).expanduser() / ".docker"
    )
    path = base / "config.json"
    try:
        with open_regular(path) as f:  # a FIFO or a link to /dev/zero is refused, not waited on or read forever
            data = json.loads(read_limited(f, MAX_DOCKER_CONFIG, path, "docker config files"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, InputError) as e:
        log.warning("%s: not read (%s): no registry credentials from it", path, e)
        return {}
    out = {}
    for key, entry in (data.get("auths") or {}).items():
        if not isinstance(entry, dict) or not entry.get("auth"):
            continue
        try:
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            continue
        registry = DOCKER_HUB if key in HUB_KEYS else key.removeprefix("https://").removeprefix("http://").rstrip("/")
        out[registry] = (user, password)
    return out


def load_credentials(inventory: Inventory, images: Iterable[str], env: Mapping[str, str] | None = None) -> Credentials:
    """Credentials for the registries of ``images`` (only those: a stack of public images needs no key).

    Raises:
        InputError: a registry's password secret is missing or cannot be decrypted.
    """
    env = os.environ if env is None else env
    registries = {registry_of(i) for i in images}
    found: dict[str, Credential] = {}
    keys = KeySource(env)
    directory = inventory.secrets_dir
    for name in sorted(registries):
        reg = inventory.registries.get(name)
        if reg is None or not reg.has_credentials:
            continue
        path = directory / f"{reg.password_secret}.enc"
        if not path.exists():
            raise InputError(
                f"registries.{name}.password_secret: no secret {reg.password_secret!r} in {directory} "
                f"(create it with `swarmctl secrets set {reg.password_secret} --dir {directory}`)",
                inventory.path,
                reg.line,
            )
        password = read_secret(path, keys.required(), env).decode("utf-8")
        found[name] = Credential(name, reg.username, password, "the inventory")
    missing = registries - set(found)
    if missing:
        config = docker_config_auths(env)
        for name in sorted(missing):
            if name in config:
                user, password = config[name]
                found[name] = Credential(name, user, password, "~/.docker/config.json")
    return Credentials(found)


def check_logins(engine: Engine, creds: Credentials) -> None:
    """Log in to each registry through the manager's engine: a rejected login stops the command
    here, before anything changed (one line naming the registry)."""
    for name, c in sorted(creds.by_registry.items()):
        try:
            engine.login(c.auth())
        except Unauthorized as e:
            raise RegistryError(
                f"registry {name} rejected the login of {c.username!r} (credentials from {c.source}): "
                f"{_reason(e)}; nothing was changed"
            ) from None
        except EngineError as e:
            raise RegistryError(f"cannot log in to registry {name}: {_reason(e)}; nothing was changed") from None


def _reason(e: EngineError) -> str:
    return e.message.split(": ", 1)[-1]


def _innermost(e: EngineError) -> str:
    """The cause at the end of a Go error chain ("Get ...: dial tcp: lookup ...: connect: network is
    unreachable" -> "network is unreachable")."""
    return e.message.rsplit(": ", 1)[-1].strip() or _reason(e)


@dataclass(frozen=True)
class Resolved:
    image: str  # what to put in the spec: name:tag@digest, or the tag as it was
    digest: str = ""
    warning: str = ""


def resolve_image(engine: Engine, image: str, creds: Credentials) -> Resolved:
    """The image pinned to the digest its registry gives for the tag, through the manager's engine
    (as ``docker stack deploy --resolve-image always`` does); unpinned, with a warning, when no
    registry answers for it (an image only present on the hosts)."""
    if "@" in image:
        return Resolved(image, image.rpartition("@")[2])
    if _never_pulled(engine, image):
        # built or loaded here (docker load, `images push`, the lab's images): no registry has it
        # to ask, and saying so on every deploy would only teach users to ignore warnings
        return Resolved(image)
    try:
        found = engine.distribution(image, creds.header(image))
    except Unauthorized as e:
        raise RegistryError(
            f"registry {registry_of(image)} refused {image}: {_reason(e)}; nothing was changed"
        ) from None
    except (NotFound, EngineError) as e:
        return Resolved(
            image,
            warning=f"image {image} could not be accessed on a registry to record its digest ({registry_of(image)}: "
            f"{_innermost(e)}): each node will access it independently, possibly running different versions of it",
        )
    digest = str((found.get("Descriptor") or {}).get("digest", ""))
    if not digest:
        return Resolved(image, warning=f"image {image}: its registry gave no digest; not pinned")
    return Resolved(f"{image}@{digest}", digest)


def _never_pulled(engine: Engine, image: str) -> bool:
    """The manager has the image, and it never came from a registry (no repo digest: it was built or
    loaded here)."""
    try:
        found = engine.inspect_image(image)
    except EngineError:
        return False
    return not found.get("RepoDigests")


def resolve_images(engine: Engine, images: Mapping[str, str], creds: Credentials) -> dict[str, Resolved]:
    """service -> its image resolved (``resolve_image``); each distinct image looked up once, in parallel."""
    todo: dict[str, list[str]] = {}
    for service, image in images.items():
        todo.setdefault(image, []).append(service)
    if not todo:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(todo))) as pool:
        found = dict(zip(todo, pool.map(lambda i: resolve_image(engine, i, creds), todo), strict=True))
    return {s: found[image] for image, services in todo.items() for s in services}


def short_digest(digest: str) -> str:
    algo, _, hexa = digest.partition(":")
    return f"{algo}:{hexa[:12]}" if hexa else digest


@dataclass(frozen=True)
class ImageChoice:
    """The image each service's spec carries, and what the plan says about it."""

    images: Mapping[str, str]  # service -> image to send
    pins: Mapping[str, str]  # service -> "tag -> sha256:..." for images pinned by this run
    warnings: tuple[str, ...] = ()
    credentials: Credentials = field(default_factory=Credentials, repr=False)

    def auth(self, image: str) -> str | None:
        """The X-Registry-Auth to send with a service of this image (None: none needed)."""
        return self.credentials.header(image)


def choose_images(
    wanted: Mapping[str, tuple[str, str]],
    current: Mapping[str, tuple[str, str]],
    mode: str,
    resolve: Callable[[Mapping[str, str]], Mapping[str, Resolved]],
    creds: Credentials | None = None,
) -> ImageChoice:
    """The image to send for each service, docker's way (``docker stack deploy --resolve-image``):

    * ``always``: the file's tag resolved to its digest now (a moved tag rolls the service);
    * ``changed``: resolved only when the file's image differs from the one the service was
      deployed from (``com.docker.stack.image``), else the image the service runs is kept;
    * ``never``: as written, or the image the service runs when the file's is unchanged.

    ``wanted``: service -> (image to send, the file's image); ``current``: service -> (image in
    its spec, the file's image it was deployed from); ``resolve``: service -> image to look up ->
    what the registries said (``resolve_images``). An image no registry answers for is sent
    unpinned (kept as the service runs it when unchanged), with docker's warning. Pure but for
    ``resolve``.
    """
    if mode not in RESOLVE_MODES:
        raise InputError(f"--resolve-image must be one of {', '.join(RESOLVE_MODES)}, not {mode!r}")
    images: dict[str, str] = {}
    lookup: dict[str, str] = {}
    for service, (image, file_image) in wanted.items():
        running, deployed_from = current.get(service, ("", ""))
        unchanged = bool(running) and deployed_from == file_image
        if mode == "always" or (mode == "changed" and not unchanged):
            lookup[service] = image
        else:
            images[service] = running if unchanged else image
    resolved = resolve(lookup) if lookup else {}
    pins: dict[str, str] = {}
    warnings: list[str] = []
    for service, r in resolved.items():
        running, deployed_from = current.get(service, ("", ""))
        unchanged = bool(running) and deployed_from == wanted[service][1]
        if r.digest:
            images[service] = r.image
            if r.image != running:
                pins[service] = f"{strip_digest(r.image)} -> {short_digest(r.digest)}"
        else:
            images[service] = running if unchanged else r.image
            if r.warning and r.warning not in warnings:
                warnings.append(r.warning)
    return ImageChoice(images, pins, tuple(warnings), creds or Credentials())
