"""The inventory's `engine:` and `registries:` blocks: daemon.json keys with their types, checked
before any connection; each mistake one FILE:LINE: message."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarmctl.daemon_config import KEYS, check
from swarmctl.errors import InputError
from swarmctl.inventory import Inventory, load_inventory

HOSTS = (
    "hosts:\n  m1: {address: 10.0.0.1, role: manager}\n  w1: {address: 10.0.0.2, role: worker, engine: {mtu: 1400}}\n"
)


def load(tmp_path: Path, text: str) -> Inventory:
    p = tmp_path / "hosts.yml"
    p.write_text(text + HOSTS)
    return load_inventory(p)


def error(tmp_path: Path, text: str) -> str:
    with pytest.raises(InputError) as e:
        load(tmp_path, text)
    msg = str(e.value)
    assert "\n" not in msg
    return msg.split(":", 1)[1]


def test_engine_keys_merge_per_host_and_insecure_registries_join_in(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("x")
    inv = load(
        tmp_path,
        "engine:\n  registry-mirrors: [https://mirror.example.com]\n  log-opts: {max-size: 10m, max-file: 3}\n"
        "  mtu: 1500\n  insecure-registries: [10.9.0.0/16]\n"
        "registries:\n  registry.lab:5000: {username: ci, password_secret: reg-pw, ca_file: ca.crt, insecure: true}\n",
    )
    m1, w1 = inv.hosts
    assert m1.engine["log-opts"] == {"max-size": "10m", "max-file": "3"}  # dockerd takes strings only
    assert m1.engine["mtu"] == 1500 and w1.engine["mtu"] == 1400  # the host's own wins, per key
    assert w1.engine["registry-mirrors"] == ["https://mirror.example.com"]
    assert m1.engine["insecure-registries"] == ["10.9.0.0/16", "registry.lab:5000"]
    reg = inv.registries["registry.lab:5000"]
    assert reg.has_credentials and reg.password_secret == "reg-pw" and reg.ca_file == tmp_path / "ca.crt"
    assert inv.engine_keys == {"registry-mirrors", "log-opts", "mtu", "insecure-registries"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("engine: {live-restore: true}", "swarm mode does not support live-restore"),
        ("engine: {registry-mirror: [https://m.example.com]}", "did you mean 'registry-mirrors'?"),
        ("engine: {registry-mirrors: [mirror.example.com]}", "is not a registry mirror URL"),
        ("engine: {registry-mirrors: https://m.example.com}", "must be a list, not a string"),
        ("engine: {insecure-registries: ['http://r:5000']}", "without a scheme"),
        ("engine: {log-opts: {max-size: true}}", "max-size: must be a string, not a boolean"),
        ("engine: {mtu: 20}", "must be from 68 to 65535, not 20"),
        ("engine: {dns: [8.8.8.x]}", "is not an IP address"),
        ("engine: {default-address-pools: [{base: 10.10.0.0/16}]}", "exactly `base`"),
        ("engine: {default-address-pools: [{base: 10.10.0.0/16, size: 8}]}", "must be from 16 to 32"),
        ("engine: {features: {buildkit: yes please}}", "buildkit: must be true or false"),
        ("engine: {metrics-addr: localhost}", "is not an address:port"),
        ("engine: {log-level: loud}", "must be one of debug, info"),
        ("engine: {max-concurrent-downloads: 0}", "must be from 1 to 1024"),
        ("registries: {'https://r.example.com': {}}", "no scheme"),
        ("registries: {r.example.com: {username: u}}", "username and password_secret go together"),
        ("registries: {r.example.com: {ca_file: nowhere.crt}}", "does not exist"),
        ("registries: {r.example.com: {insecure: yes please}}", "insecure must be true or false"),
        ("registries: {r.example.com: {token: x}}", "unknown key 'token'"),
    ],
)
def test_bad_engine_and_registry_settings(tmp_path: Path, text: str, message: str) -> None:
    got = error(tmp_path, text + "\n")
    assert message in got, got
    assert got.startswith("1:") or got.startswith("2:"), got  # the line of the offending key


def test_live_restore_false_is_fine_and_every_key_has_a_check() -> None:
    assert check("live-restore", False) is False
    samples = {"registry-mirrors": ["https://m.example.com"], "log-opts": {"max-size": "1m"}, "mtu": 1400}
    for key, value in samples.items():
        assert check(key, value) == value
    assert all(callable(fn) for fn in KEYS.values())


def test_only_a_failed_start_is_blamed_on_dockerd() -> None:
    from swarmctl.facts.engine_config import start_failure

    def _start_failure(line: str) -> bool:
        return bool(start_failure([line]))

    # dockerd's last words when it cannot start (its stderr, in the unit's journal)
    assert _start_failure("failed to start metrics server: listen tcp 0.0.0.0:22: bind: address already in use")
    assert _start_failure("failed to start daemon: error initializing graphdriver: driver not supported")
    assert _start_failure('time="..." level=fatal msg="unable to load the config"')
    assert _start_failure("unable to configure the docker daemon with file /etc/docker/daemon.json: invalid")
    # what a running engine logs says nothing about why it is not back (seen on the lab: this line
    # was reported as the reason a restarted manager was not back)
    assert not _start_failure(
        'time="..." level=error msg="handler for get /v1.41/nodes returned error: write unix '
        '/var/run/docker.sock->@: write: broken pipe"'
    )
    assert not _start_failure('time="..." level=error msg="fatal task error" error="failed to start container"')
