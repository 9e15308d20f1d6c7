"""The Kafka/ZooKeeper stack on the lab, and `swarmctl verify` telling healthy from broken.

Runs on the session lab (4 hosts, kafka.slot 1-3 on lab1-3) with the lab's images: ZooKeeper from
Debian's packages, the tansu broker behind its NODE_ID shim, the python3 probe.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from swarmctl_lab import hosts as labhosts
from tests.e2e.conftest import Lab
from tests.helpers import assert_no_traceback, swarmctl, wait_for


@pytest.fixture(scope="module")
def kafka(swarm: Lab) -> Iterator[Lab]:
    lab = swarm
    run = swarmctl("deploy", "kafka", "-i", str(lab.inventory), "--json", timeout=900)
    assert run.rc == 0, str(run)
    data = run.json()
    assert data["converged"] is True
    assert data["verify"]["ok"] is True
    yield lab
    swarmctl("rm", "kafka", "-i", str(lab.inventory))


def verify(lab: Lab, stack: str = "kafka", *extra: str) -> Any:
    return swarmctl("verify", stack, "-i", str(lab.inventory), "--json", *extra, timeout=400)


def probes_left(lab: Lab) -> list[str]:
    left = []
    for name in lab.names:
        with lab.docker(name) as api:
            left += [
                f"{name}:{c['Names'][0]}" for c in api.containers(all=True, filters={"label": "io.swarmctl.probe"})
            ]
    return left


def test_kafka_deploys_and_verifies_on_every_node(kafka: Lab) -> None:
    run = verify(kafka)
    assert run.rc == 0, str(run)
    checks = run.json()["checks"]
    by_name: dict[str, list[dict[str, Any]]] = {}
    for c in checks:
        by_name.setdefault(c["name"], []).append(c)
    # DNS from every node that runs a task (lab1-3) and the manager (lab1); lab4 runs nothing
    nodes = {c["node"] for c in checks if c["name"].startswith("dns ")}
    assert nodes == {"lab1", "lab2", "lab3"}
    for name in ("zookeeper-1", "tasks.zookeeper-2", "kafka_kafka-3", "tasks.kafka_kafka-1"):
        rows = by_name[f"dns {name} on kafka_kafka"]
        assert len(rows) == 3 and all(r["ok"] for r in rows)
        # dnsrr: the name resolves to the task's own address, the same on every node
        assert len({r["got"] for r in rows}) == 1 and rows[0]["got"].startswith("10.")
    assert by_name["zookeeper ensemble"][0]["ok"]
    assert by_name["zookeeper ensemble"][0]["got"].startswith("leader: zookeeper-")
    for i in (1, 2, 3):
        row = by_name[f"kafka kafka-{i} at kafka-{i}:9092"][0]
        assert row["ok"] and row["got"] == f"ApiVersions error 0, broker id {i}"
    for i in (1, 2, 3):  # the lab's brokers are standalone on purpose, and say so
        row = by_name[f"kafka kafka-{i} cluster"][0]
        assert row["ok"] and row["got"] == f"brokers [{i}]" and row["detail"] == "standalone by declaration"
    assert probes_left(kafka) == []

    human = swarmctl("verify", "kafka", "-i", str(kafka.inventory))
    assert human.rc == 0 and "0 failed" in human.stderr, str(human)


def test_a_killed_zookeeper_task_is_reported_until_swarm_replaced_it(kafka: Lab) -> None:
    with kafka.docker("lab2") as api:
        (victim,) = api.containers(filters={"label": "com.docker.swarm.service.name=kafka_zookeeper-2"})
        api.kill(victim["Id"])
    broken = wait_for("verify to notice", lambda: verify(kafka), lambda r: r.rc == 1, timeout=60, every=0.5)
    assert_no_traceback(broken)
    failed = [c for c in broken.json()["checks"] if not c["ok"]]
    assert any("zookeeper-2" in c["name"] for c in failed), failed
    healed = verify(kafka, "kafka", "--wait", "240")
    assert healed.rc == 0, str(healed)
    assert probes_left(kafka) == []


def test_verify_produce_writes_and_reads_back_through_every_broker(kafka: Lab) -> None:
    run = verify(kafka, "kafka", "--produce")
    assert run.rc == 0, str(run)
    produced = {c["name"]: c for c in run.json()["checks"] if c["name"].endswith(" produce")}
    assert sorted(produced) == [f"kafka kafka-{i} produce" for i in (1, 2, 3)]
    for i in (1, 2, 3):
        row = produced[f"kafka kafka-{i} produce"]
        assert row["ok"] and row["got"].endswith("read back via itself"), row
        assert row["detail"] == "standalone by declaration"
    assert not any(c["name"] == "kafka verify topic removed" for c in run.json()["checks"])
    assert probes_left(kafka) == []


def test_brokers_not_declared_standalone_fail_verify_by_name(kafka: Lab) -> None:
    """Without the lab's declaration its brokers are what they are, three one-broker clusters:
    verify (and --produce) must fail, naming each broker, where it used to pass them."""
    inv = str(kafka.inventory)
    # the services as a stack without the declaration leaves them (a deploy of one would not get
    # this far: its rollout gate refuses the brokers, as verify does, and rolls back)
    for i in (1, 2, 3):  # with the docker CLI on the manager, as an operator would
        cmd = ["docker", "service", "update", "--detach", "--label-rm", "io.swarmctl.standalone", f"kafka_kafka-{i}"]
        proc = labhosts.host_exec(kafka.spec, "lab1", cmd)
        assert proc.returncode == 0, proc.stderr.decode()
    cluster_checks = [f"kafka kafka-{i} cluster" for i in (1, 2, 3)]

    def failing(run: Any) -> list[str]:
        return sorted(c["name"] for c in run.json()["checks"] if not c["ok"]) if run.rc == 1 else []

    try:
        # the CLI's update may restart the tasks (it re-resolves the image): wait until they run
        run = wait_for("only the brokers' cluster checks to fail", lambda: verify(kafka),
                       lambda r: failing(r) == cluster_checks, timeout=180, every=2)  # fmt: skip
        assert_no_traceback(run)
        bad = {c["name"]: c for c in run.json()["checks"] if not c["ok"]}
        assert all("lists only itself: not one cluster" in c["detail"] for c in bad.values())
        human = swarmctl("verify", "kafka", "-i", inv, "--produce", timeout=400)
        assert human.rc == 1, str(human)
        assert_no_traceback(human)
        out = human.stdout + human.stderr
        for i in (1, 2, 3):
            assert f"kafka kafka-{i} cluster" in out and f"kafka kafka-{i} produce" in out, out
        assert "verify kafka failed: kafka kafka-1 cluster" in human.stderr, str(human)
    finally:
        # put the declaration back the same way (a deploy would refuse to start: its gate finds the
        # brokers unhealthy before the update, as they are without it)
        for i in (1, 2, 3):
            labhosts.host_exec(kafka.spec, "lab1", ["docker", "service", "update", "--detach", "--label-add",
                                        "io.swarmctl.standalone=true", f"kafka_kafka-{i}"])  # fmt: skip
    assert verify(kafka, "kafka", "--wait", "180").rc == 0


DNS_STACK = """
services:
  spread:
    image: ${PROBE_IMAGE}
    command: [python3, -c, "import signal, time; signal.signal(signal.SIGTERM, lambda *a: exit(0)); time.sleep(1e9)"]
    deploy:
      replicas: 2
      endpoint_mode: dnsrr
      placement: {constraints: [node.hostname != lab3]}
    networks: [net]
  web:
    image: ${PROBE_IMAGE}
    command: [python3, -m, http.server, "8080"]
    deploy:
      replicas: 1
      placement: {constraints: [node.hostname == lab3]}
    networks: [net]
    x-swarmctl: {check: tcp, port: 8080}
networks:
  net: {attachable: true}
"""


@pytest.fixture(scope="module")
def dnstest(kafka: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    f = tmp_path_factory.mktemp("dnstest") / "stack.yml"
    f.write_text(textwrap.dedent(DNS_STACK))
    run = swarmctl("deploy", "dnstest", "-f", str(f), "-i", str(kafka.inventory), "--no-verify", timeout=400)
    assert run.rc == 0, str(run)
    yield kafka
    swarmctl("rm", "dnstest", "-i", str(kafka.inventory))


def test_vip_names_resolve_to_the_vip_and_the_silent_vip_is_explained(dnstest: Lab) -> None:
    run = verify(dnstest, "dnstest")
    assert run.rc == 1, str(run)  # this lab's kernel has no IPVS: the VIP carries no traffic
    checks = run.json()["checks"]
    with dnstest.docker("lab1") as api:
        (svc,) = api.services(filters={"name": "dnstest_web"})
        vip = svc["Endpoint"]["VirtualIPs"][0]["Addr"].split("/")[0]
    web = [c for c in checks if c["name"] == "dns web on dnstest_net"]
    assert web and all(c["ok"] and c["got"] == vip for c in web)
    vips = [c for c in checks if c["name"].startswith("vip web ")]
    assert vips and all(not c["ok"] for c in vips)
    assert all("kernel has no IPVS" in c["detail"] and "does not answer but a task does" in c["detail"] for c in vips)
    # dnsrr: names resolve to exactly the running tasks' addresses
    spread = [c for c in checks if c["name"] == "dns spread on dnstest_net"]
    assert spread and all(c["ok"] and len(c["got"].split(", ")) == 2 for c in spread)
    assert probes_left(dnstest) == []


def test_a_node_cut_off_from_gossip_is_named(dnstest: Lab, tmp_path: Path) -> None:
    rules = [["INPUT", "-p", proto, "--dport", "7946", "-j", "DROP"] for proto in ("tcp", "udp")]
    rules += [["OUTPUT", "-p", proto, "--dport", "7946", "-j", "DROP"] for proto in ("tcp", "udp")]
    for rule in rules:
        assert labhosts.host_exec(dnstest.spec, "lab3", ["iptables", "-w", "-I", *rule]).returncode == 0
    try:
        with dnstest.docker("lab1") as api:
            (svc,) = api.services(filters={"name": "dnstest_spread"})
            before = svc["Spec"]
            before["TaskTemplate"]["ForceUpdate"] = before["TaskTemplate"].get("ForceUpdate", 0) + 1
            api.update_service(
                svc["ID"],
                svc["Version"]["Index"],
                task_template=before["TaskTemplate"],
                name=before["Name"],
                labels=before["Labels"],
                mode=before["Mode"],
                endpoint_spec=before.get("EndpointSpec"),
                networks=None,
            )

        def gossip_named(run: Any) -> bool:
            return run.rc == 1 and any(
                c["node"] == "lab3" and not c["ok"] and "suspect gossip trouble (7946/tcp+udp) on lab3" in c["detail"]
                for c in run.json()["checks"]
            )

        run = wait_for("verify to name lab3", lambda: verify(dnstest, "dnstest"), gossip_named, timeout=120, every=2)
        failed = [c for c in run.json()["checks"] if not c["ok"] and c["name"].startswith("dns ")]
        # lab3 sees the moved tasks stale; the others do not see lab3's task: all of it points at lab3
        assert any(c["node"] == "lab3" and "spread" in c["name"] for c in failed), failed
        assert all("suspect gossip trouble (7946/tcp+udp) on lab3" in c["detail"] for c in failed), failed
    finally:
        for rule in rules:
            labhosts.host_exec(dnstest.spec, "lab3", ["iptables", "-w", "-D", *rule])
