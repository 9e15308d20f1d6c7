"""Inventory validation: every kind of mistake gives one FILE:LINE: message."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from swarmctl.errors import InputError
from swarmctl.inventory import load_inventory, remember_inventory, resolve_inventory_path

GOOD = """\
ssh:
  user: root
  port: 22
  identity_file: ./id_ed25519
  known_hosts: ./known_hosts
  host_key_policy: reject
hosts:
  mgr1: {address: 10.0.0.11, role: manager, labels: {kafka.slot: "1"}}
  w1:   {address: 10.0.0.12, role: worker, labels: {kafka.slot: "2"}, availability: active}
  w2:
    address: w2.example.internal
    role: worker
    ssh: {user: deploy, port: 2222}
vars:
  KAFKA_IMAGE: quay.io/debezium/kafka:3.1
"""


def write(tmp_path: Path, text: str, key: bool = True) -> Path:
    if key:
        (tmp_path / "id_ed25519").write_text("not really a key\n")
    p = tmp_path / "hosts.yml"
    p.write_text(textwrap.dedent(text))
    return p


def error_of(tmp_path: Path, text: str, key: bool = True) -> str:
    p = write(tmp_path, text, key)
    with pytest.raises(InputError) as e:
        load_inventory(p)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"{p}:")
    return msg[len(str(p)) + 1 :]


def test_good_inventory(tmp_path: Path) -> None:
    inv = load_inventory(write(tmp_path, GOOD))
    assert [h.name for h in inv.hosts] == ["mgr1", "w1", "w2"]
    mgr1, w1, w2 = inv.hosts
    assert mgr1.is_manager and not w1.is_manager
    assert dict(mgr1.labels) == {"kafka.slot": "1"}
    assert w1.availability == "active" and mgr1.availability is None
    assert mgr1.ssh.identity_file == tmp_path / "id_ed25519"
    assert mgr1.ssh.known_hosts == tmp_path / "known_hosts"
    assert mgr1.ssh.sudo is False
    # a host's ssh block overrides the defaults, keeps the rest, and a non-root user means sudo
    assert (w2.ssh.user, w2.ssh.port, w2.ssh.identity_file) == ("deploy", 2222, tmp_path / "id_ed25519")
    assert w2.ssh.sudo is True
    assert dict(inv.vars) == {"KAFKA_IMAGE": "quay.io/debezium/kafka:3.1"}
    assert inv.warnings == ()


def test_defaults_without_ssh_block(tmp_path: Path) -> None:
    inv = load_inventory(write(tmp_path, "hosts:\n  m: {address: 10.0.0.1, role: manager}\n", key=False))
    s = inv.hosts[0].ssh
    assert (s.user, s.port, s.identity_file, s.host_key_policy) == ("root", 22, None, "reject")
    assert s.known_hosts == Path.home() / ".ssh" / "known_hosts"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "1: the inventory is empty"),
        ("hosts: [\n", "2: invalid YAML"),
        ("- a\n- b\n", "1: the inventory must be a mapping, not a list"),
        ("hosts:\n", "1: 'hosts' is empty"),
        ("ssh: {user: root}\n", "1: missing required key 'hosts'"),
        (
            "hosst:\n  m: {address: 10.0.0.1, role: manager}\n",
            "1: unknown key 'hosst' in the inventory (did you mean 'hosts'?)",
        ),
        (
            "hosts:\n  m: {address: 10.0.0.1, role: manager}\n  m: {address: 10.0.0.2, role: worker}\n",
            "3: duplicate key 'm' (first defined on line 2)",
        ),
        (
            "hosts:\n  a: {address: 10.0.0.1, role: manager}\n  b: {address: 10.0.0.1, role: worker}\n",
            "3: host 'b': address 10.0.0.1 is already used by host 'a'",
        ),
        ("hosts:\n  a: {address: 10.0.0.1, role: worker}\n", "1: no manager"),
        (
            "hosts:\n  a: {address: 10.0.0.1, role: boss}\n",
            "2: host 'a': role must be one of manager, worker, not 'boss'",
        ),
        ("hosts:\n  a: {address: 10.0.0.1}\n", "2: host 'a' is missing required key 'role'"),
        ("hosts:\n  a:\n    role: manager\n", "3: host 'a' is missing required key 'address'"),
        ("hosts:\n  a: {address: [1], role: manager}\n", "2: host 'a': address must be an IP address or a DNS name"),
        ("hosts:\n  a: {address: 'no spaces', role: manager}\n", "2: host 'a': address must be an IP address"),
        (
            "hosts:\n  a: {address: 10.0.0.1, role: manager, adress: x}\n",
            "2: unknown key 'adress' in host 'a' (did you mean 'address'?)",
        ),
        (
            "hosts:\n  a: {address: 10.0.0.1, role: manager, availability: off}\n",
            "2: host 'a': availability must be one of active, pause, drain, not False",
        ),
        ("hosts:\n  a: {address: 10.0.0.1, role: manager}\n  b:\n", "3: host 'b' has no settings"),
        ("hosts:\n  'bad name': {address: 10.0.0.1, role: manager}\n", "2: bad host name 'bad name'"),
        (
            "ssh:\n  port: 70000\nhosts:\n  a: {address: 10.0.0.1, role: manager}\n",
            "2: ssh: port must be a number from 1 to 65535",
        ),
        ("ssh:\n  port: '22'\nhosts:\n  a: {address: 10.0.0.1, role: manager}\n", "2: ssh: port must be a number"),
        (
            "ssh:\n  host_key_policy: accept\nhosts:\n  a: {address: 10.0.0.1, role: manager}\n",
            "2: ssh: host_key_policy must be one of reject, accept-new, not 'accept' (did you mean 'accept-new'?)",
        ),
        (
            "ssh:\n  identity_file: ./missing\nhosts:\n  a: {address: 10.0.0.1, role: manager}\n",
            "2: ssh: identity_file ./missing does not exist",
        ),
        (
            "ssh:\n  usr: root\nhosts:\n  a: {address: 10.0.0.1, role: manager}\n",
            "2: unknown key 'usr' in ssh (did you mean 'user'?)",
        ),
        (
            "hosts:\n  a:\n    address: 10.0.0.1\n    role: manager\n    labels:\n      'bad key': x\n",
            "6: host 'a': bad label key 'bad key'",
        ),
        (
            "hosts:\n  a:\n    address: 10.0.0.1\n    role: manager\n    labels:\n      ssd: yes\n",
            "6: host 'a': label 'ssd' must be a string, not a boolean (quote it)",
        ),
        (
            "hosts:\n  a:\n    address: 10.0.0.1\n    role: manager\n    labels: [x]\n",
            "5: host 'a' labels must be a mapping",
        ),
        (
            "hosts:\n  a: {address: 10.0.0.1, role: manager, ssh: {port: 0}}\n",
            "2: host 'a' ssh: port must be a number from 1 to 65535, not 0",
        ),
        ("hosts:\n  a: {address: 10.0.0.1, role: manager}\nvars:\n  1X: y\n", "4: bad variable name '1X'"),
        ("hosts:\n  a: {address: 10.0.0.1, role: manager}\nvars:\n  X: [1]\n", "4: variable 'X' must be a string"),
    ],
)
def test_errors_name_file_line_and_problem(tmp_path: Path, text: str, expected: str) -> None:
    msg = error_of(tmp_path, text)
    line, _, rest = expected.partition(": ")
    assert msg.startswith(f"{line}: "), msg
    assert rest in msg, msg


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        load_inventory(tmp_path / "nope.yml")


def test_even_number_of_managers_warns_about_quorum(tmp_path: Path) -> None:
    inv = load_inventory(
        write(tmp_path, "hosts:\n  a: {address: 10.0.0.1, role: manager}\n  b: {address: 10.0.0.2, role: manager}\n")
    )
    assert len(inv.warnings) == 1
    assert "2 managers" in inv.warnings[0] and "majority" in inv.warnings[0]


def test_numeric_label_values_become_strings(tmp_path: Path) -> None:
    inv = load_inventory(write(tmp_path, "hosts:\n  a: {address: 10.0.0.1, role: manager, labels: {slot: 1}}\n"))
    assert dict(inv.hosts[0].labels) == {"slot": "1"}


def test_inventory_precedence(tmp_path: Path) -> None:
    env = {"SWARMCTL_INVENTORY": "/from/env.yml"}
    assert resolve_inventory_path("/explicit.yml", env, tmp_path) == Path("/explicit.yml")
    assert resolve_inventory_path(None, env, tmp_path) == Path("/from/env.yml")
    with pytest.raises(InputError, match="no inventory"):
        resolve_inventory_path(None, {}, tmp_path)
    inv = write(tmp_path, GOOD)
    remember_inventory(inv, tmp_path)
    assert resolve_inventory_path(None, {}, tmp_path) == inv.resolve()
    assert resolve_inventory_path(None, env, tmp_path) == Path("/from/env.yml")


def test_api_timeout_bounds_each_engine_call_and_a_host_may_raise_it(tmp_path: Path) -> None:
    from swarmctl.transport.engine import Session

    inv = load_inventory(write(tmp_path, """
        ssh: {identity_file: ./id_ed25519, api_timeout: 45}
        hosts:
          m1: {address: 10.0.0.1, role: manager}
          slow: {address: 10.0.0.2, role: worker, ssh: {api_timeout: 120}}
        """))  # fmt: skip
    assert [h.ssh.api_timeout for h in inv.hosts] == [45.0, 120.0]
    with Session(inv) as session:
        assert [session.engine(h).timeout for h in inv.hosts] == [45.0, 120.0]
    assert "api_timeout must be a number of seconds above 0" in error_of(tmp_path, """
        ssh: {api_timeout: 0}
        hosts:
          m1: {address: 10.0.0.1, role: manager}
        """)  # fmt: skip
