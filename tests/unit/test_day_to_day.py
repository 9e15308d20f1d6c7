"""ps, logs and exec: the pure parts - which tasks, which containers, which task to exec into, the
picture, the merge by time - from task lists shaped like the engine's (tests/recorded/placement.json
was recorded on the lab: the Kafka stack on 3 hosts). The same is proven end to end on the lab by
tests/e2e/test_day_to_day.py; exec's wiring of stdin, output and exit status runs here against the
in-process SSH server.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from swarmctl.cli.picture import ago, grid, page
from swarmctl.errors import ClusterError, InputError
from swarmctl.facts.nodes import node_view
from swarmctl.facts.tasks import parse_time, spec_of, task_views
from swarmctl.inventory import load_inventory
from swarmctl.ops import exec as opexec
from swarmctl.ops import logs as oplogs
from swarmctl.ops.ps import Placed, Placement, columns, pick_services, select
from swarmctl.transport.ssh import Connection
from tests.unit.sshserver import ssh_server
from tests.unit.test_ssh_host_keys import lab_host

RECORDED = Path(__file__).resolve().parents[1] / "recorded" / "placement.json"


def service(
    sid: str, name: str, stack: str = "kafka", replicas: int | None = 1, image: str = "img:1"
) -> dict[str, Any]:
    mode: dict[str, Any] = {"Replicated": {"Replicas": replicas}} if replicas is not None else {"Global": {}}
    return {"ID": sid, "Spec": {"Name": f"{stack}_{name}" if stack else name, "Mode": mode,
                                "Labels": {"com.docker.stack.namespace": stack} if stack else {},
                                "TaskTemplate": {"ContainerSpec": {"Image": image}}}}  # fmt: skip


def task(
    tid: str, sid: str, slot: int, node: str, state: str = "running", desired: str = "running",
    created: str = "2026-12-05T10:00:00.000000001Z", container: str = "", err: str = "", image: str = "img:1",
) -> dict[str, Any]:  # fmt: skip
    status: dict[str, Any] = {"State": state, "Timestamp": created, "Message": state}
    if err:
        status["Err"] = err
    if container or state in ("running", "failed", "complete", "shutdown"):
        status["ContainerStatus"] = {"ContainerID": container or f"c-{tid}", "ExitCode": 0}
    return {"ID": tid, "ServiceID": sid, "Slot": slot, "NodeID": node, "DesiredState": desired, "CreatedAt": created,
            "Status": status, "Spec": {"ContainerSpec": {"Image": image}}}  # fmt: skip


def nodes() -> list[dict[str, Any]]:
    def node(nid: str, host: str, role: str, state: str = "ready", availability: str = "active") -> dict[str, Any]:
        leader = {"Leader": True} if role == "manager" else {}
        return {"ID": nid, "Description": {"Hostname": host}, "Spec": {"Role": role, "Availability": availability},
                "Status": {"State": state, "Addr": ""}, "ManagerStatus": leader}  # fmt: skip

    return [node("n1", "lab1", "manager"), node("n2", "lab2", "worker"), node("n3", "lab3", "worker", "down")]


def placement(tasks: list[dict[str, Any]], services: list[dict[str, Any]], stack: str = "kafka",
              history: bool = True) -> Placement:  # fmt: skip
    views = task_views(tasks, services)
    return Placement("lab1", tuple(node_view(n) for n in nodes()), {"n1": "lab1", "n2": "lab2", "n3": "lab3"},
                     tuple(select(views, history=history)), stack)  # fmt: skip


SERVICES = [service("s1", "zookeeper-1"), service("s2", "kafka", replicas=2), service("s3", "agent", replicas=None)]


# -- facts ---------------------------------------------------------------------------------------


def test_engine_times_are_read_to_the_nanosecond_and_offsets_count() -> None:
    a = parse_time("2026-12-05T10:00:00.000000001Z")
    b = parse_time("2026-12-05T10:00:00.000000002Z")
    assert a is not None and b is not None and b - a == 1
    assert parse_time("2026-12-05T11:00:00+01:00") == parse_time("2026-12-05T10:00:00Z")
    assert parse_time("2026-12-05T10:00:00.5Z") == parse_time("2026-12-05T10:00:00Z") + 500_000_000  # type: ignore[operator]
    assert parse_time("yesterday") is None and parse_time("2026-13-45T10:00:00Z") is None


def test_a_task_knows_whether_it_runs_the_current_or_the_previous_spec() -> None:
    svc = {**service("s1", "x", image="img:2"), "PreviousSpec": {"TaskTemplate": {"ContainerSpec": {"Image": "img:1"}}}}
    assert spec_of({"ContainerSpec": {"Image": "img:2"}}, svc) == "current"
    assert spec_of({"ContainerSpec": {"Image": "img:1"}}, svc) == "previous"
    assert spec_of({"ContainerSpec": {"Image": "img:0"}}, svc) == "older"


def test_ps_shows_each_slots_current_task_and_with_all_its_history() -> None:
    tasks = [
        task("old", "s1", 1, "n1", "shutdown", "shutdown", "2026-12-05T09:00:00Z"),
        task("new", "s1", 1, "n1", created="2026-12-05T10:00:00Z"),
        task("k1", "s2", 1, "n2"),
        task("k2", "s2", 2, "n3", "failed", "running", err="task: non-zero exit (1)"),
        task("g1", "s3", 0, "n1"),
        task("g2", "s3", 0, "n2"),
    ]
    now = placement(tasks, SERVICES, history=False)
    assert [(t.id, t.name, now.host_of(t)) for t in now.tasks] == [
        ("g1", "agent", "lab1"), ("g2", "agent", "lab2"), ("k1", "kafka.1", "lab2"), ("k2", "kafka.2", "lab3"),
        ("new", "zookeeper-1.1", "lab1"),
    ]  # fmt: skip
    assert now.tasks[3].error == "task: non-zero exit (1)"
    every = placement(tasks, SERVICES, history=True)
    assert [t.id for t in every.tasks if t.short == "zookeeper-1"] == ["new", "old"]  # newest first
    assert {t["service"] for t in every.json()["tasks"]} == {"agent", "kafka", "zookeeper-1"}


def test_ps_names_an_unknown_stack_or_service_with_the_close_matches() -> None:
    with pytest.raises(InputError, match=r"no stack 'kafak' on this swarm \(did you mean 'kafka'\?\)"):
        pick_services(SERVICES, "kafak", [])
    with pytest.raises(InputError, match=r"no service 'zookeeper1' in stack 'kafka' \(did you mean 'zookeeper-1'"):
        pick_services(SERVICES, "kafka", ["zookeeper1"])
    assert [s["ID"] for s in pick_services(SERVICES, "kafka", ["kafka", "kafka_zookeeper-1"])] == ["s2", "s1"]


def test_ps_on_a_recorded_kafka_stack_places_six_tasks_on_three_hosts() -> None:
    rec = json.loads(RECORDED.read_text())
    inv_nodes = [node_view(n) for n in rec["nodes"]]
    names = {n.id: n.hostname for n in inv_nodes}  # the lab's hosts are named as their hostnames
    views = task_views(rec["tasks"], rec["services"])
    p = Placement("lab1", tuple(inv_nodes), names, tuple(select(views)), "kafka")
    got = sorted((t.name, p.host_of(t)) for t in p.tasks)
    assert got == sorted((row[0], row[1]) for row in rec["expect"]), got
    assert all(t.running and t.container_id and t.spec == "current" for t in p.tasks)
    assert sorted(len(c.tasks) for c in columns(p)) == [2, 2, 2]


# -- the picture ---------------------------------------------------------------------------------


def test_the_picture_puts_each_task_in_its_nodes_column_and_marks_a_down_node() -> None:
    p = placement([task("a", "s1", 1, "n1"), task("b", "s2", 1, "n3"), task("c", "s2", 2, "", "pending")], SERVICES,
                  history=False)  # fmt: skip
    cols = columns(p)
    assert [(c.host, [t.name for t in c.tasks], c.marks) for c in cols] == [
        ("lab1", ["zookeeper-1.1"], []), ("lab2", [], []), ("lab3", ["kafka.1"], ["down"]),
        ("", ["kafka.2"], ["unassigned"]),
    ]  # fmt: skip
    html = page(p, cols, refresh=5)
    assert '<section class="node down" data-host="lab3" data-state="down"' in html
    assert 'data-task="zookeeper-1.1"' in html and '<meta http-equiv="refresh" content="5">' in html
    assert "<script" not in html and "http://" not in html and "https://" not in html  # self-contained
    text = grid(p, cols, 120, color=False)
    assert text.splitlines()[0].split() == ["lab1", "lab2", "lab3", "(no", "node)"]
    assert "kafka.2 pending" in text


def test_ago_reads_like_a_person() -> None:
    now = parse_time("2026-12-05T10:00:00Z")
    assert ago("2026-12-05T09:59:30Z", now) == "30s ago"
    assert ago("2026-12-05T07:00:00Z", now) == "3h ago" and ago("bad", now) == "-"


# -- logs ----------------------------------------------------------------------------------------


def test_logs_read_each_slots_newest_container_preferring_the_running_one() -> None:
    tasks = [
        task("r", "s1", 1, "n1", created="2026-12-05T10:00:00Z"),
        task("f", "s1", 1, "n1", "failed", "shutdown", created="2026-12-05T10:05:00Z"),  # newer, not wanted
        task("p", "s2", 1, "n2", "preparing", created="2026-12-05T10:05:00Z"),  # no container yet
        task("x", "s2", 1, "n2", "failed", "shutdown", created="2026-12-05T10:04:00Z"),  # its last attempt
    ]
    chosen = oplogs.sources(placement(tasks, SERVICES))
    assert [(s.label, s.task.id) for s in chosen] == [("kafka.1@lab2", "x"), ("zookeeper-1.1@lab1", "r")]


def line(src: Placed, raw: str) -> oplogs.LogLine:
    ns, stamp, text = oplogs.split(raw)
    return oplogs.LogLine(ns, stamp, src, "stdout", text)


def test_logs_merge_by_the_engines_nanoseconds_and_keep_untimed_lines_in_place() -> None:
    p = placement([task("a", "s1", 1, "n1"), task("b", "s2", 1, "n2")], SERVICES)
    a, b = oplogs.sources(p)
    lines = [line(a, "2026-12-05T10:00:00.000000003Z a2"), line(a, "continued"),
             line(b, "2026-12-05T10:00:00.000000001Z b1"), line(b, "2026-12-05T10:00:00.000000004Z b2")]  # fmt: skip
    assert [x.text for x in oplogs.merged(lines)] == ["b1", "a2", "continued", "b2"]
    assert lines[0].json() == {"time": "2026-12-05T10:00:00.000000003Z", "service": "kafka", "slot": 1,
                               "host": "lab2", "stream": "stdout", "line": "a2"}  # fmt: skip


def test_logs_options_are_checked_before_anything_is_read() -> None:
    for good in ("10m", "1h30m", "2026-12-05T10:00:00Z", "2026-12-05", "1733392800.5"):
        assert oplogs.check_since(good) == good
    for bad in ("ten minutes", "10 m", "-5m", "2026-12-05T10:00:00Z; rm -rf /"):
        with pytest.raises(InputError, match="--since"):
            oplogs.check_since(bad)
    assert oplogs.check_tail("5") == "5" and oplogs.check_tail("all") == "all"
    with pytest.raises(InputError, match="--tail"):
        oplogs.check_tail("-5")
    assert oplogs.argv("c1", "5", "10m", follow=True) == ["docker", "logs", "--timestamps", "--tail", "5",
                                                          "--since", "10m", "--follow", "c1"]  # fmt: skip
    # a follow resumed after a lost node: one nanosecond after the last line seen (since is inclusive)
    second = parse_time("2026-12-05T10:00:01Z")
    assert second is not None
    assert oplogs.next_since("2026-12-05T10:00:00.999999999Z") == f"{second // 10**9}.000000000"


# -- exec ----------------------------------------------------------------------------------------


def test_exec_chooses_the_one_running_task_or_says_exactly_why_not() -> None:
    tasks = [task("k1", "s2", 1, "n2"), task("k2", "s2", 2, "n3"), task("z", "s1", 1, "n1", "failed", "running",
             err="starting container failed: no such image")]  # fmt: skip
    kafka = [t for t in task_views(tasks, SERVICES) if t.short == "kafka"]
    zk = [t for t in task_views(tasks, SERVICES) if t.short == "zookeeper-1"]
    p_kafka = Placement("lab1", (), {"n2": "lab2", "n3": "lab3"}, tuple(kafka), "kafka")
    assert opexec.choose(p_kafka, kafka, slot=2).label == "kafka.2@lab3"
    assert opexec.choose(p_kafka, kafka, host="lab2").label == "kafka.1@lab2"
    with pytest.raises(InputError, match=r"kafka has 2 running tasks \(kafka.1@lab2, kafka.2@lab3\): name one"):
        opexec.choose(p_kafka, kafka)
    with pytest.raises(InputError, match=r"kafka has no slot 7 \(its slots: 1, 2\)"):
        opexec.choose(p_kafka, kafka, slot=7)
    p_zk = Placement("lab1", (), {"n1": "lab1"}, tuple(zk), "kafka")
    with pytest.raises(ClusterError, match=r"no running task of zookeeper-1 \(its tasks: zookeeper-1.1@lab1 failed "
                                           r"\(starting container failed: no such image\)\)"):  # fmt: skip
        opexec.choose(p_zk, zk)
    target = opexec.choose(p_kafka, kafka, slot=1)
    assert opexec.command(target, ["sh", "-c", "exit 3"], interactive=True, tty=True, user="1000", workdir="/tmp",
                          env=["A=1"]) == ["docker", "exec", "-i", "-t", "-u", "1000", "-w", "/tmp", "-e", "A=1",
                                           "c-k1", "sh", "-c", "exit 3"]  # fmt: skip


def stdin_then_exit_3(channel: Any, command: bytes) -> None:
    """A command that writes its stdin back upper-cased, a line on stderr, and exits 3."""
    data = b""
    while chunk := channel.recv(65536):
        data += chunk
    channel.sendall(data.upper())
    channel.sendall_stderr(b"to stderr\n")
    channel.send_exit_status(3)
    channel.shutdown_write()
    channel.close()


def test_exec_streams_stdin_and_output_and_passes_on_the_exit_status(tmp_path: Path) -> None:
    with ssh_server(tmp_path, command=stdin_then_exit_3) as server:
        host = lab_host(server.port, server.client_key_file, tmp_path / "known_hosts", "accept-new")
        r_in, w_in = os.pipe()
        r_out, w_out = os.pipe()
        r_err, w_err = os.pipe()
        os.write(w_in, b"hello\n")
        os.close(w_in)
        with Connection(host) as c:
            rc = c.interact(["docker", "exec", "-i", "c1", "cat"], r_in, w_out, w_err)
        os.close(w_out)
        os.close(w_err)
        assert rc == 3
        assert os.read(r_out, 1024) == b"HELLO\n" and os.read(r_err, 1024) == b"to stderr\n"


def test_exec_checks_its_input_before_asking_any_host(tmp_path: Path) -> None:
    inv = tmp_path / "hosts.yml"
    inv.write_text(
        "ssh: {port: 1, connect_timeout: 1, known_hosts: ./kh}\nhosts:\n  m1: {address: 127.0.0.1, role: manager}\n"
    )
    from click.testing import CliRunner

    from swarmctl.cli.app import cli

    for args, message in (
        (["--slot", "1", "--node", "m1"], "--slot and --node: name the task one way"),
        (["-e", "NOEQUALS"], "-e 'NOEQUALS': give KEY=VALUE"),
        (["--node", "m2"], "no host 'm2' in"),
    ):
        res = CliRunner().invoke(cli, ["--inventory", str(inv), "exec", "kafka", "zk", *args, "--", "true"])
        assert res.exit_code != 0 and message in str(res.exception), (args, res.output, res.exception)
    assert load_inventory(inv).hosts[0].name == "m1"


# -- logs -f across a node that is lost and comes back (the in-process SSH server as the node) ----


class Node:
    """The node's side: `docker logs` and `docker version` as its docker CLI would answer them, with
    an engine that can be stopped (its log stream then ends with an error) and started again."""

    def __init__(self) -> None:
        import threading

        self.down = threading.Event()
        self.commands: list[str] = []

    def __call__(self, channel: Any, command: bytes) -> None:
        line = command.decode()
        self.commands.append(line)
        try:
            if line.startswith("docker version"):
                if self.down.is_set():
                    channel.sendall_stderr(b"Cannot connect to the Docker daemon at unix:///var/run/docker.sock\n")
                    channel.send_exit_status(1)
                else:
                    channel.sendall(b"20.10.24\n")
                    channel.send_exit_status(0)
            elif "--since" not in line:  # the first follow: one line, then the engine stops
                channel.sendall(b"2026-12-05T10:00:00.000000001Z first\n")
                self.down.wait(30)
                channel.sendall_stderr(b"error from daemon in stream: unexpected EOF\n")
                channel.send_exit_status(1)
            else:  # resumed after the last line seen
                channel.sendall(b"2026-12-05T10:00:05Z second\n")
                while not channel.closed:
                    import time

                    time.sleep(0.05)
                return
            channel.shutdown_write()  # the client closes the channel once it has the status
        except (OSError, EOFError):
            pass


def test_logs_follow_names_a_lost_node_once_and_resumes_after_its_last_line(tmp_path: Path) -> None:
    import threading
    import time

    from swarmctl.inventory import Inventory
    from swarmctl.transport.engine import Session

    node = Node()
    with ssh_server(tmp_path, command=node) as server:
        host = lab_host(server.port, server.client_key_file, tmp_path / "known_hosts", "accept-new")
        p = Placement("h1", (), {"n3": "h1"}, tuple(task_views([task("t", "s1", 1, "n3", container="c1")], SERVICES)),
                      "kafka")  # fmt: skip
        lines: list[str] = []
        told: list[str] = []
        stop = threading.Event()
        with Session(Inventory(tmp_path / "hosts.yml", (host,), {})) as session:
            args = (session, p, lambda: p, lambda x: lines.append(x.text), told.append)
            t = threading.Thread(target=oplogs.follow, args=args, kwargs={"stop": stop}, daemon=True)
            t.start()
            deadline = time.monotonic() + 30
            while "first" not in lines and time.monotonic() < deadline:
                time.sleep(0.05)
            node.down.set()  # the engine stops: its stream ends in an error, and it does not answer
            while not any("lost" in x for x in told) and time.monotonic() < deadline:
                time.sleep(0.05)
            node.down.clear()  # started again
            while "second" not in lines and time.monotonic() < deadline:
                time.sleep(0.05)
            stop.set()
            t.join(5)
    assert lines == ["first", "second"], (lines, told, node.commands)
    assert [x.split(" (")[0] for x in told] == ["h1: lost", "h1: back; following it again"], told
    assert "Cannot connect to the Docker daemon" in told[0]
    resumed = [c for c in node.commands if "--since" in c]
    first = parse_time("2026-12-05T10:00:00Z")
    assert first is not None
    assert resumed == [f"docker logs --timestamps --since {first // 10**9}.000000002 --follow c1"], node.commands


def test_the_services_filled_in_defaults_do_not_make_a_task_older() -> None:
    svc = service("s1", "x")
    svc["Spec"]["TaskTemplate"] = {**svc["Spec"]["TaskTemplate"], "Runtime": "container", "ForceUpdate": 0}
    assert spec_of({"ContainerSpec": {"Image": "img:1"}}, svc) == "current"  # as the engine shows them
    assert spec_of({"ContainerSpec": {"Image": "img:1"}, "ForceUpdate": 1}, svc) == "older"


def test_a_task_on_a_node_outside_the_inventory_is_named_not_reached() -> None:
    p = placement([task("a", "s1", 1, "n1"), task("b", "s2", 1, "n9")], SERVICES, history=False)
    assert [s.label for s in oplogs.sources(p)] == ["zookeeper-1.1@lab1"]
    assert oplogs.outside(p) == ["kafka.1@n9"]
    kafka = [t for t in p.tasks if t.short == "kafka"]
    with pytest.raises(ClusterError, match=r"kafka\.1 runs on node n9, which the inventory does not name"):
        opexec.choose(Placement("lab1", (), p.names, tuple(kafka), "kafka"), kafka)


# -- diff ----------------------------------------------------------------------------------------


def test_a_hand_set_image_is_drift_though_deploy_would_keep_its_pin() -> None:
    from swarmctl.ops.diff import Drift, extra_stacks, image_drift
    from swarmctl.plan import Change, Plan

    wanted = {"s_app": ("app:1", "app:1"), "s_db": ("db:2", "db:2"), "s_new": ("new:1", "new:1")}
    current = {"s_app": ("app:1@sha256:" + "a" * 64, "app:1"), "s_db": ("db:3@sha256:" + "b" * 64, "db:2")}
    hand = image_drift(wanted, current, [Change("service", "s_new", "create")])
    assert [c.describe() for c in hand] == ["update service s_db (db:3 -> db:2)"]
    assert extra_stacks(["kafka", "web"], ["kafka"], []) == ["web"] and extra_stacks(["web"], [], ["kafka"]) == []
    d = Drift("hosts.yml", Plan(), {"s": Plan(tuple(hand))})
    assert d.drifted and d.json()["differences"][0]["undone_by"] == "swarmctl deploy s --prune"
    assert not Drift("hosts.yml", Plan(), {"s": Plan()}).drifted
