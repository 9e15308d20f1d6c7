"""ps, logs and exec on the lab: the Kafka stack on the shared swarm (kafka.slot 1-3 on lab1-3),
compared with what each node's own engine says; the picture read back from headless Chromium's
rendered DOM; logs -f across a node whose engine stops and starts again.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from swarmctl_lab import hosts as labhosts
from tests.e2e.conftest import Lab
from tests.helpers import swarmctl, wait_for

ARTIFACTS = Path(os.environ.get("SWARMCTL_ARTIFACTS", Path(__file__).resolve().parents[2] / "artifacts"))
CHROMIUM = next((c for c in ("chromium-headless-shell", "chromium") if shutil.which(c)), "")


@pytest.fixture(scope="module")
def kafka(swarm: Lab, _shared_swarm: dict[str, str]) -> Iterator[Lab]:
    run = swarmctl("deploy", "kafka", "-i", str(swarm.inventory), "--json", timeout=900)
    assert run.rc == 0, str(run)
    yield swarm
    swarmctl("rm", "kafka", "-i", str(swarm.inventory))
    # an engine of this swarm was stopped and started: the next module that needs the shared swarm
    # gets it made anew, on a lab made anew (see tests/e2e/conftest.py on overlay gossip)
    _shared_swarm.pop("id", None)
    swarm.torn_down += 1


def ps(lab: Lab, *args: str) -> Any:
    run = swarmctl("ps", *args, "-i", str(lab.inventory), "--json")
    assert run.rc == 0, str(run)
    return run.json()


def task_containers(lab: Lab, name: str) -> dict[str, str]:
    """What the node itself runs: swarm task ID -> container ID, from its own engine."""
    with lab.docker(name) as api:
        return {c["Labels"]["com.docker.swarm.task.id"]: c["Id"]
                for c in api.containers(filters={"label": "com.docker.stack.namespace=kafka"})}  # fmt: skip


def test_ps_lists_the_six_tasks_on_the_hosts_their_engines_run_them(kafka: Lab) -> None:
    doc = ps(kafka, "kafka")
    tasks = doc["tasks"]
    assert sorted(f"{t['service']}.{t['slot']}" for t in tasks) == sorted(
        f"{s}-{i}.1" for s in ("kafka", "zookeeper") for i in (1, 2, 3))  # fmt: skip
    for name in ("lab1", "lab2", "lab3", "lab4"):
        on_node = task_containers(kafka, name)
        listed = {t["id"]: t["container_id"] for t in tasks if t["host"] == name}
        assert listed == on_node, name
    assert {t["host"] for t in tasks if t["service"].endswith("-1")} == {"lab1"}  # kafka.slot 1
    assert all(t["state"] == "running" and t["spec"] == "current" for t in tasks)
    human = swarmctl("ps", "kafka", "-i", str(kafka.inventory))
    assert human.rc == 0 and human.stdout.splitlines()[0].split()[:3] == ["TASK", "HOST", "STATE"], str(human)
    assert "zookeeper-2.1  lab2" in human.stdout


def test_logs_tail_prints_that_tasks_last_lines_prefixed(kafka: Lab) -> None:
    (task,) = [t for t in ps(kafka, "kafka", "zookeeper-1")["tasks"]]
    seen: list[str] = []
    # ZooKeeper logs a line of its own for every healthcheck (each 10 s): an attempt counts only when
    # the engine's own tail, read after swarmctl's reads, is still our five lines (logs only grow, so
    # nothing came between); otherwise write new marks and read again
    for _ in range(4):
        mark = f"tail-mark-{time.time_ns()}"
        marks = [f"{mark}-{i}" for i in range(1, 6)]
        # lines of our own on the container's stdout (its PID 1's), so that the last five are known
        ex = swarmctl("exec", "kafka", "zookeeper-1", "--inventory", str(kafka.inventory), "--", "sh", "-c",
                      f"for i in 0 1 2 3 4 5; do echo {mark}-$i > /proc/1/fd/1; done")  # fmt: skip
        assert ex.rc == 0, str(ex)
        run = swarmctl("logs", "kafka", "zookeeper-1", "--tail", "5", "-i", str(kafka.inventory))
        jl = swarmctl("logs", "kafka", "zookeeper-1", "--tail", "1", "--json", "-i", str(kafka.inventory))
        with kafka.docker("lab1") as api:
            own = api.logs(task["container_id"], tail=5).decode().splitlines()
        if own == marks:
            break
        seen = own
    else:
        pytest.fail(f"the engine's tail never held only the test's lines; last seen: {seen}")
    assert run.rc == 0, str(run)
    assert run.stdout.splitlines() == [f"zookeeper-1.1@lab1 | {m}" for m in marks], run.stdout
    assert jl.rc == 0, str(jl)
    first, last = [json.loads(x) for x in jl.stdout.splitlines()]
    assert (
        first["line"] == f"{mark}-5" and first["host"] == "lab1" and first["slot"] == 1 and first["stream"] == "stdout"
    )
    assert last["ok"] is True and last["exit_status"] == 0


def test_exec_runs_in_the_tasks_container_and_passes_its_exit_status_on(kafka: Lab) -> None:
    inv = ["--inventory", str(kafka.inventory)]
    three = swarmctl("exec", "kafka", "zookeeper-2", *inv, "--", "sh", "-c", "exit 3")
    assert three.rc == 3, str(three)
    (task,) = ps(kafka, "kafka", "zookeeper-2")["tasks"]
    ident = swarmctl("exec", "kafka", "zookeeper-2", *inv, "--", "cat", "/etc/hostname")
    assert ident.rc == 0, str(ident)
    assert task["host"] == "lab2" and task_containers(kafka, "lab2")[task["id"]] == task["container_id"]
    with kafka.docker("lab2") as api:
        hostname = api.inspect_container(task["container_id"])["Config"]["Hostname"]
    assert ident.stdout.splitlines()[-1] == hostname
    # a full TTY under a pseudo-terminal (script), its exit status passed on
    script = subprocess.run(
        ["script", "-qec", f"{sys.executable} -m swarmctl exec -it kafka zookeeper-2 --inventory {kafka.inventory}"
         " -- sh -c 'tty; stty size; exit 4'", "/dev/null"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert script.returncode == 4, script.stdout + script.stderr
    assert "/dev/pts/" in script.stdout, script.stdout
    # stdin streamed with -i
    line = [sys.executable, "-m", "swarmctl", "exec", "-i", "kafka", "zookeeper-2", *inv, "--", "wc", "-l"]
    piped = subprocess.run(line, input="a\nb\nc\n", capture_output=True, text=True, timeout=60)
    assert piped.returncode == 0 and piped.stdout.strip() == "3", piped


def test_bad_input_and_an_unreachable_node_are_one_line_each(kafka: Lab, tmp_path: Path) -> None:
    inv = ["--inventory", str(kafka.inventory)]

    def fails(rc: int, text: str, *args: str) -> None:
        run = swarmctl(*args)
        assert run.rc == rc and text in run.stderr and len(run.stderr.strip().splitlines()) == 1, str(run)
        assert "Traceback" not in run.stderr

    fails(
        2, "no stack 'kafak' on this swarm (did you mean 'kafka'?)", "exec", "kafak", "zookeeper-1", *inv, "--", "true"
    )
    fails(2, "no service 'zookeeper' in stack 'kafka' (did you mean", "exec", "kafka", "zookeeper", *inv, "--", "true")
    fails(
        2, "zookeeper-1 has no slot 4 (its slots: 1)", "exec", "kafka", "zookeeper-1", "--slot", "4", *inv, "--", "true"
    )
    fails(2, "no service 'zookeper-1' in stack 'kafka'", "logs", "kafka", "zookeper-1", *inv)
    fails(2, "no host 'lab9'", "ps", "kafka", "--node", "lab9", *inv)
    # a service swarm cannot place: its task is pending, and exec says so
    stack = tmp_path / "nowhere.yml"
    stack.write_text("services:\n  idle:\n    image: swarmctl-lab/probe:py3\n    command: [sleep, infinity]\n"
                     "    deploy:\n      placement:\n        constraints: [node.labels.nowhere == yes]\n")  # fmt: skip
    dep = swarmctl("deploy", "nowhere", "-f", str(stack), "--no-wait", "--no-verify", *inv)
    assert dep.rc == 0, str(dep)
    try:
        wait_for("the pending task", lambda: ps(kafka, "nowhere")["tasks"], lambda ts: len(ts) == 1, timeout=60)
        fails(1, "no running task of idle (its tasks: idle.1@- pending", "exec", "nowhere", "idle", *inv, "--", "true")
    finally:
        swarmctl("rm", "nowhere", *inv)
    # the task's node cannot be reached over SSH: named
    kafka.stop_sshd("lab3")
    try:
        fails(1, "lab3", "exec", "kafka", "zookeeper-3", *inv, "--", "true")
    finally:
        kafka.start_sshd("lab3")


class _Columns(HTMLParser):
    """The rendered page's columns: host -> (classes, tasks)."""

    def __init__(self) -> None:
        super().__init__()
        self.hosts: dict[str, tuple[str, list[str]]] = {}
        self._host = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section":
            self._host = a.get("data-host") or ""
            self.hosts[self._host] = (a.get("class") or "", [])
        elif tag == "div" and a.get("data-task"):
            self.hosts[self._host][1].append(a["data-task"] or "")


def rendered(lab: Lab, page: Path, shot: str) -> dict[str, tuple[str, list[str]]]:
    """The page as headless Chromium rendered it (its DOM after load), and a screenshot kept."""
    assert CHROMIUM, "no chromium-headless-shell (scripts/setup --test installs it)"
    flags = [CHROMIUM, "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files"]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0 and "<section" in dom.stdout, dom.stderr[-2000:]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    subprocess.run([*flags, f"--screenshot={ARTIFACTS / shot}", "--window-size=1000,700", page.as_uri()],
                   capture_output=True, timeout=120, check=True)  # fmt: skip
    parser = _Columns()
    parser.feed(dom.stdout)
    return parser.hosts


class Follower:
    """`swarmctl logs kafka -f` running, its lines and messages collected as they come."""

    def __init__(self, lab: Lab):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "swarmctl", "logs", "kafka", "-f", "--tail", "1", "-i", str(lab.inventory)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.out: list[str] = []
        self.err: list[str] = []
        for stream, into in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._collect, args=(stream, into), daemon=True).start()

    @staticmethod
    def _collect(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def saw(self, text: str, prefix: str = "", timeout: float = 60) -> None:
        def seen(lines: list[str]) -> bool:
            return any(x.startswith(prefix) and x.endswith(text) for x in lines)

        wait_for(f"{prefix}{text!r} from logs -f", lambda: list(self.out), seen, timeout=timeout)

    def said(self, text: str, timeout: float = 90) -> None:
        wait_for(f"{text!r} on logs -f's stderr", lambda: list(self.err), lambda lines: any(text in x for x in lines),
                 timeout=timeout)  # fmt: skip


def mark(lab: Lab, service: str, text: str) -> None:
    run = swarmctl(
        "exec", "kafka", service, "--inventory", str(lab.inventory), "--", "sh", "-c", f"echo {text} > /proc/1/fd/1"
    )
    assert run.rc == 0, str(run)


def test_the_picture_and_logs_follow_through_a_node_whose_engine_stops(kafka: Lab, tmp_path: Path) -> None:
    page = tmp_path / "swarm.html"
    made = swarmctl("ps", "kafka", "--html", str(page), "-i", str(kafka.inventory))
    assert made.rc == 0, str(made)
    hosts = rendered(kafka, page, "ps-kafka.png")
    tasks = ps(kafka, "kafka")["tasks"]
    for name in ("lab1", "lab2", "lab3"):
        want = sorted(f"{t['service']}.{t['slot']}" for t in tasks if t["host"] == name)
        assert sorted(hosts[name][1]) == want and len(want) == 2, (name, hosts)
    assert hosts["lab4"][1] == [] and "down" not in hosts["lab3"][0]

    # --watch rewrites the page (which reloads itself) until Ctrl-C
    watched = tmp_path / "watched.html"
    argv = [
        sys.executable,
        "-m",
        "swarmctl",
        "ps",
        "kafka",
        "--html",
        str(watched),
        "--watch",
        "1",
        "-i",
        str(kafka.inventory),
    ]
    watch = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        first = wait_for("the watched page", lambda: watched.stat().st_mtime_ns if watched.exists() else 0, bool)
        wait_for("the page rewritten", lambda: watched.stat().st_mtime_ns, lambda m: m != first, timeout=30)
        assert '<meta http-equiv="refresh" content="1">' in watched.read_text()
        watch.send_signal(signal.SIGINT)
        assert watch.wait(timeout=5) == 130
    finally:
        if watch.poll() is None:
            watch.kill()

    logs = Follower(kafka)
    try:
        logs.saw("", "zookeeper-3.1@lab3 ")  # the tail of every task, lab3's among them
        labhosts.host_exec(kafka.spec, "lab3", ["systemctl", "stop", "docker"])
        logs.said("lab3: lost")
        mark(kafka, "zookeeper-1", "after-lab3-stopped")
        logs.saw("after-lab3-stopped", "zookeeper-1.1@lab1 ")  # the others go on
        wait_for("lab3 down", lambda: ps(kafka)["nodes"], lambda ns: any(n["host"] == "lab3" and n["state"] == "down"
                                                                         for n in ns), timeout=120)  # fmt: skip
        again = swarmctl("ps", "kafka", "--html", str(page), "-i", str(kafka.inventory))
        assert again.rc == 0, str(again)
        assert "down" in rendered(kafka, page, "ps-kafka-lab3-down.png")["lab3"][0].split()

        labhosts.host_exec(kafka.spec, "lab3", ["systemctl", "start", "docker"])
        logs.said("lab3: back")
        wait_for("zookeeper-3 running on lab3 again", lambda: ps(kafka, "kafka", "zookeeper-3")["tasks"],
                 lambda ts: any(t["host"] == "lab3" and t["state"] == "running" for t in ts), timeout=180)  # fmt: skip

        def marked_and_read() -> list[str]:
            mark(kafka, "zookeeper-3", "lab3-is-back")  # a new container's log is read from its start
            return list(logs.out)

        wait_for("logs -f to follow the new zookeeper-3", marked_and_read,
                 lambda lines: any(x.startswith("zookeeper-3.1@lab3 ") and x.endswith("lab3-is-back") for x in lines),
                 timeout=60, every=2)  # fmt: skip
        assert sum("lab3: lost" in x for x in logs.err) == 1, logs.err  # named once
        t0 = time.monotonic()
        logs.proc.send_signal(signal.SIGINT)
        assert logs.proc.wait(timeout=5) == 130 and time.monotonic() - t0 < 2.0
    finally:
        if logs.proc.poll() is None:
            logs.proc.kill()
        labhosts.host_exec(kafka.spec, "lab3", ["systemctl", "start", "docker"])
        wait_for("lab3 ready", lambda: ps(kafka)["nodes"], lambda ns: any(n["host"] == "lab3" and n["state"] == "ready"
                                                                          for n in ns), timeout=120)  # fmt: skip
