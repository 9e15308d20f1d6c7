"""Service images normalised as docker's API client does (moby client imageWithTagString)."""

from __future__ import annotations

import pytest

from swarmctl.compose.reference import check_image, service_image
from swarmctl.errors import InputError

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("written", "sent"),
    [
        ("redis", "redis:latest"),
        ("redis:7", "redis:7"),
        ("docker.io/library/redis", "redis:latest"),
        ("index.docker.io/library/redis:7", "redis:7"),
        ("docker.io/redis", "redis:latest"),
        ("docker.io/foo/bar", "foo/bar:latest"),
        ("library/a/b", "library/a/b:latest"),  # only one-level official names lose library/
        ("localhost/app", "localhost/app:latest"),
        ("localhost:5000/foo", "localhost:5000/foo:latest"),
        ("registry.example.com:443/team/app", "registry.example.com:443/team/app:latest"),
        ("quay.io/debezium/kafka:3.1", "quay.io/debezium/kafka:3.1"),
        ("host:5000", "host:5000"),  # a familiar name with tag 5000, not a registry
        (f"redis@{DIGEST}", f"redis@{DIGEST}"),  # a digest needs no tag
        (f"docker.io/library/redis:7@{DIGEST}", f"redis:7@{DIGEST}"),
        ("Foo/bar:1", "Foo/bar:1"),  # an upper-case first part is a domain
    ],
)
def test_normalised_like_the_docker_client(written: str, sent: str) -> None:
    assert service_image(written) == sent


@pytest.mark.parametrize(
    "unparseable",
    [
        "Redis",  # repository names are lower case
        "docker.io/Library/redis",
        "registry.local/app:",  # an empty tag (an unset ${TAG})
        "redis@",
        "redis@sha256:abc",  # a digest too short for its algorithm
        "redis@md5:" + "0" * 32,  # an algorithm docker does not know
        "0123456789abcdef" * 4,  # an image ID, not a name
        "${X}",
        "a" * 250 + "/b" * 3,  # longer than 255 characters
    ],
)
def test_what_docker_cannot_parse_is_sent_as_written(unparseable: str) -> None:
    assert service_image(unparseable) == unparseable


@pytest.mark.parametrize("option", ["-x", "--output=/etc/passwd", "-"])
def test_s12_an_image_that_starts_with_a_dash_is_refused(option: str) -> None:
    """No reference docker parses starts with '-'; on a command line it would be an option."""
    with pytest.raises(InputError, match="starts with '-'"):
        check_image(option)
    check_image("busybox:1")
    check_image("a-b/c-d:e-f")  # dashes inside are fine
