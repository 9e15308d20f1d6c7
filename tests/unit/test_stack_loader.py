"""Stack file checking: every kind of mistake is one FILE:LINE: message, before anything runs."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from swarmctl.compose.loader import find_stack_files, load_stack
from swarmctl.errors import InputError
from tests.helpers import swarmctl


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None, *more: str) -> object:
    files = []
    for i, body in enumerate((text, *more)):
        f = tmp_path / f"stack{i}.yml"
        f.write_text(textwrap.dedent(body))
        files.append(f)
    return load_stack("s", files, env or {}, {})


def error(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(InputError) as e:
        load(tmp_path, text, env)
    msg = str(e.value)
    assert "\n" not in msg
    prefix = f"{tmp_path / 'stack0.yml'}:"
    assert msg.startswith(prefix), msg
    return msg[len(prefix) :]


OK = "services:\n  web:\n    image: nginx\n"


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("", 1, "the stack file is empty"),
        ("services: [\n", 2, "invalid YAML"),
        ("version: '2.1'\n" + OK, 1, "unsupported compose file version '2.1'"),
        ("services:\n  web:\n    imgae: nginx\n", 3, "unknown key 'imgae' (did you mean 'image'?)"),
        (
            "services:\n  web:\n    image: nginx\n    mem_limit: 1g\n",
            4,
            "'mem_limit' is not supported: set resource limits",
        ),
        ("services:\n  web:\n    command: x\n", 2, "has no `image`"),
        ("services:\n  web:\n    image: nginx\n  web:\n    image: x\n", 4, "duplicate key 'web'"),
        (OK + "    deploy:\n      replicas: lots\n", 5, "deploy.replicas: must be an integer, not 'lots'"),
        (OK + "    deploy:\n      replicas: '3'\n", 5, "deploy.replicas: must be an integer, not '3'"),
        (OK + "    deploy:\n      replicas: -1\n", 5, "must be at least 0"),
        (
            OK + "    deploy:\n      mode: global\n      replicas: 2\n",
            6,
            "replicas can only be used with mode replicated",
        ),
        (OK + "    deploy:\n      mode: daemon\n", 5, "mode: must be one of replicated, global"),
        (OK + "    deploy:\n      update_config: {delay: 10}\n", 5, "delay: must be a duration such as 10s"),
        (OK + "    deploy:\n      update_config:\n        delay: 10x\n", 6, "bad duration '10x'"),
        (OK + "    deploy:\n      update_config:\n        order: first\n", 6, "order: must be one of start-first"),
        (OK + "    deploy:\n      resources:\n        limits:\n          memory: 10q\n", 7, "bad size '10q'"),
        (OK + "    deploy:\n      resources:\n        limits:\n          cpus: fast\n", 7, "must be a number of CPUs"),
        (
            OK + "    deploy:\n      placement:\n        constraints:\n          - node.rol == worker\n",
            7,
            "unknown constraint key 'node.rol'",
        ),
        (
            OK + "    deploy:\n      placement:\n        constraints: ['node.role = worker']\n",
            6,
            "bad constraint 'node.role = worker'",
        ),
        (
            OK + "    deploy:\n      placement:\n        constraints: ['node.role == boss']\n",
            6,
            "node.role is manager or worker",
        ),
        (OK + "    ports:\n      - '80000:80'\n", 5, "bad published port '80000'"),
        (OK + "    ports:\n      - 'eighty'\n", 5, "bad container port 'eighty'"),
        (OK + "    ports:\n      - '8000-8001:80'\n", 5, "ranges differ in length"),
        (OK + "    ports:\n      - published: 80\n", 5, "needs `target`"),
        (
            OK + "    ports: ['80:80']\n    deploy: {endpoint_mode: dnsrr}\n",
            4,
            "needs endpoint_mode vip; with dnsrr publish it in `mode: host`",
        ),
        (OK + "    networks: [back]\n", 4, "uses network 'back', which is not defined under `networks:`"),
        (OK + "    secrets: [pw]\n", 4, "uses secret 'pw', which is not defined under `secrets:`"),
        (OK + "    configs:\n      - source: cfg\n", 5, "uses config 'cfg', which is not defined"),
        (OK + "    volumes: ['data:/data']\n", 4, "uses volume 'data', which is not defined"),
        (OK + "    volumes: ['a:b:c:d']\n", 4, "too many colons"),
        (OK + "    volumes:\n      - type: bind\n        target: /x\n", 5, "a bind mount needs a source"),
        (
            OK + "    volumes:\n      - type: tmpfs\n        target: /x\n        bind: {propagation: shared}\n",
            5,
            "bind options do not apply to a tmpfs mount",
        ),
        (OK + "secrets:\n  pw:\n    file: ./missing.txt\n", 6, "secrets.pw.file: ./missing.txt does not exist"),
        (OK + "secrets:\n  pw:\n    labels: {a: b}\n", 5, "secrets.pw: needs `file` (or `external: true`)"),
        (
            OK + "networks:\n  back:\n    external: true\n    driver: overlay\n",
            7,
            "external objects cannot set 'driver'",
        ),
        (OK + "networks:\n  back:\n    ipam:\n      config:\n        - subnet: 10.0.0.0/33\n", 8, "bad subnet"),
        (OK + "    healthcheck: {test: 'true', disable: true}\n", 4, "test and disable cannot be set at the same time"),
        (OK + "    ulimits:\n      nofile: {soft: 1}\n", 5, "needs both soft and hard"),
        (OK + "    environment: 3\n", 4, "must be a mapping or a list"),
        (OK + "    tty: 'yes'\n", 4, "tty: must be true or false"),
        (OK + "    restart: sometimes\n", 4, "restart: must be no, always, unless-stopped or on-failure[:N]"),
        ("services:\n  'bad name':\n    image: x\n", 2, "bad service name 'bad name'"),
        (
            "services:\n  web:\n    image: ${IMAGE:?set IMAGE to the image to run}\n",
            3,
            "required variable IMAGE is missing a value: set IMAGE",
        ),
        ("services:\n  web:\n    image: 'a${'\n", 3, "invalid interpolation format"),
        (OK + "volumes:\n  data:\n    driver_opts: [1]\n", 6, "driver_opts"),
    ],
)
def test_bad_stack_files(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    msg = error(tmp_path, text)
    assert msg.startswith(f"{line}: "), msg
    assert fragment in msg, msg


def test_interpolated_values_are_cast_where_numbers_are_expected(tmp_path: Path) -> None:
    config = load(tmp_path, OK + "    read_only: ${RO}\n    deploy:\n      replicas: ${N}\n", {"RO": "yes", "N": "4"})
    web = config.services["web"]  # type: ignore[attr-defined]
    assert web["read_only"] is True and web["deploy"]["replicas"] == 4


def test_ignored_keys_are_named_in_a_warning(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        OK + "    build: .\n    depends_on: [db]\n    container_name: w\n    links: [db]\n    restart: always\n",
    )
    warnings = " | ".join(config.warnings)  # type: ignore[attr-defined]
    assert "ignoring build, container_name, depends_on, links" in warnings
    assert "`restart` is not a swarm setting" in warnings


def test_unset_variable_warns_with_file_and_line_and_becomes_empty(tmp_path: Path) -> None:
    config = load(tmp_path, "services:\n  web:\n    image: nginx\n    hostname: web${SUFFIX}\n")
    assert config.services["web"]["hostname"] == "web"  # type: ignore[attr-defined]
    assert f"{tmp_path / 'stack0.yml'}:4: variable SUFFIX is not set: using an empty string" in config.warnings  # type: ignore[attr-defined]


def test_an_unset_variable_that_empties_an_image_tag_is_an_error_at_its_line(tmp_path: Path) -> None:
    msg = error(tmp_path, "services:\n  web:\n    image: nginx:${TAG}\n")
    assert msg.startswith("3: ") and "'nginx:' has an empty tag or digest; a variable in it may be unset" in msg


def test_variables_precedence_environment_then_dotenv_then_inventory(tmp_path: Path) -> None:
    (tmp_path / "stack.yml").write_text("services:\n  web:\n    image: ${A}-${B}-${C}\n")
    (tmp_path / ".env").write_text("A=dotenv\nB=dotenv\n")
    config = load_stack("s", [tmp_path / "stack.yml"], {"A": "env"}, {"A": "vars", "B": "vars", "C": "vars"})
    assert config.services["web"]["image"] == "env-dotenv-vars"


def test_env_file_and_environment(tmp_path: Path) -> None:
    (tmp_path / "app.env").write_text("# comment\nA=from file  \nB=file\nFROM_ENV\nNOT_SET\n")
    config = load(
        tmp_path,
        OK + "    env_file: app.env\n    environment: {B: inline, C: ''}\n",
        {"FROM_ENV": "environment", "C": "filled"},
    )
    env = config.services["web"]["environment"]  # type: ignore[attr-defined]
    # values verbatim (trailing spaces too); a bare name takes the environment's value or is dropped;
    # an empty value is filled from the environment, as docker does
    assert env == {"A": "from file  ", "B": "inline", "FROM_ENV": "environment", "C": "filled"}


def test_stack_lookup_local_then_shipped(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no stack 'nope'"):
        find_stack_files("nope", [], tmp_path)
    (tmp_path / "stacks" / "mine").mkdir(parents=True)
    (tmp_path / "stacks" / "mine" / "stack.yml").write_text(OK)
    assert find_stack_files("mine", [], tmp_path) == [tmp_path / "stacks" / "mine" / "stack.yml"]
    assert find_stack_files("mine", ["x.yml"], tmp_path) == [Path("x.yml")]
    with pytest.raises(InputError, match="bad stack name"):
        find_stack_files("no spaces", [], tmp_path)


def test_cli_rejects_a_bad_stack_before_connecting(tmp_path: Path) -> None:
    # the inventory points at a closed local port: had swarmctl connected, the error would differ
    (tmp_path / "hosts.yml").write_text("hosts:\n  m: {address: 127.0.0.1, role: manager, ssh: {port: 1}}\n")
    (tmp_path / "bad.yml").write_text(OK + "    deploy:\n      replicas: many\n")
    run = swarmctl("deploy", "web", "-f", "bad.yml", "-i", "hosts.yml", cwd=tmp_path)
    assert run.rc == 2, str(run)
    assert run.stderr.strip() == "error: bad.yml:5: services.web.deploy.replicas: must be an integer, not 'many'"
