"""State API (`ray list/get/summary`, ray.util.state), `ray status` and
`gray status` against a gray head that serves both ray:// and native Ray,
driven by the stock 2.60.0 CLI and SDK. The head's State API lives on its
status port; the tools find it through RAY_API_SERVER_ADDRESS."""

import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest
import requests

from conftest import free_port, stop_process
from native_pool import NativePool

RAY = os.path.join(os.path.dirname(sys.executable), "ray")

CLIENT = textwrap.dedent(
    """
    import sys, ray
    from ray.util.placement_group import placement_group
    ray.init(sys.argv[1])

    @ray.remote
    def square(x):
        return x * x

    @ray.remote
    def boom():
        raise ValueError("boom")

    @ray.remote
    class Counter:
        def __init__(self):
            self.n = 0
        def incr(self):
            self.n += 1
            return self.n

    assert ray.get([square.remote(i) for i in range(3)]) == [0, 1, 4]
    try:
        ray.get(boom.remote())
    except Exception:
        pass
    c = Counter.options(name="state_counter").remote()
    assert ray.get(c.incr.remote()) == 1
    pg = placement_group([{"CPU": 0.1}], name="state_pg")
    ray.get(pg.ready())
    kept = ray.put(b"x" * 100000)
    print("READY", flush=True)
    sys.stdin.readline()
    """
)

NATIVE = textwrap.dedent(
    """
    import os, sys, ray
    ray.init(address=sys.argv[1])

    @ray.remote
    def native_square(x):
        return x * x

    @ray.remote
    class NativeActor:
        def ping(self):
            return os.getpid()

    assert ray.get([native_square.remote(i) for i in range(3)]) == [0, 1, 4]
    a = NativeActor.options(name="state_native_actor").remote()
    ray.get(a.ping.remote())
    big = ray.put(b"y" * (2 << 20))
    print("READY", os.getpid(), flush=True)
    sys.stdin.readline()
    """
)

PENDING = textwrap.dedent(
    """
    import sys, time, ray
    ray.init(address=sys.argv[1])

    @ray.remote(num_cpus=1)
    def hold():
        time.sleep(3600)

    refs = [hold.remote() for _ in range(4)]
    print("READY", flush=True)
    sys.stdin.readline()
    """
)


class Program:
    """A driver program that runs until told to end (a line on stdin)."""

    def __init__(self, source, arg, env):
        self.err = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", source, arg], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.err, text=True, env=env,
        )
        seen = []
        while True:
            line = self.proc.stdout.readline()
            if line.startswith("READY"):
                self.ready_line = line
                return
            if not line:  # it exited before it was ready
                self.proc.wait()
                self.err.seek(0)
                raise RuntimeError("driver failed:\n" + "".join(seen) + self.err.read())
            seen.append(line)

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                stop_process(self.proc)


@pytest.fixture(scope="module")
def head(gray_bin):
    status_port = free_port()
    p = NativePool(gray_bin, num_cpus=2, extra=("--status-port", str(status_port)))
    p.api = "http://127.0.0.1:%d" % status_port
    p.status_port = status_port
    p.client_address = "ray://127.0.0.1:%d" % p.port
    p.env["RAY_API_SERVER_ADDRESS"] = p.api
    programs = [
        Program(CLIENT, p.client_address, p.env),
        Program(NATIVE, p.address, p.env),
    ]
    p.native_driver_pid = int(programs[1].ready_line.split()[1])
    yield p
    for prog in programs:
        prog.stop()
    p.stop()


def ray_cli(head, *args, check=True):
    r = subprocess.run([RAY, *args], capture_output=True, text=True, timeout=120, env=head.env)
    if check:
        assert r.returncode == 0, f"ray {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r


def ray_list(head, resource, *args):
    out = ray_cli(head, "list", resource, "--format", "json", *args).stdout
    return json.loads(out[out.index("["):])


def poll(fn, what, timeout=60):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def by(rows, key, value):
    return [r for r in rows if r.get(key) == value]


def test_list_nodes_both_worlds(head):
    nodes = ray_list(head, "nodes")
    assert len(nodes) == 1, nodes  # the head: one node id in both worlds
    assert {n["state"] for n in nodes} == {"ALIVE"}
    assert all(n["resources_total"]["CPU"] == 2 for n in nodes)
    assert sorted(n["node_id"] for n in nodes) == [n["node_id"] for n in nodes]
    # Filters: a bool column converts its value; only one row is asked for.
    heads = ray_list(head, "nodes", "--filter", "is_head_node=True", "--limit", "1")
    assert len(heads) == 1


def test_ray_client_actors_tasks_and_get(head):
    actors = by(ray_list(head, "actors"), "name", "state_counter")
    assert len(actors) == 1, actors
    a = actors[0]
    assert a["class_name"] == "Counter" and a["state"] == "ALIVE"
    os.kill(a["pid"], 0)  # a live process on this machine
    # Case-insensitive string filter and int conversion of pid.
    assert by(ray_list(head, "actors", "--filter", "state=alive", "--filter", "pid=%d" % a["pid"]), "actor_id", a["actor_id"])
    assert not by(ray_list(head, "actors", "--filter", "class_name!=counter"), "actor_id", a["actor_id"])

    out = ray_cli(head, "get", "actors", a["actor_id"]).stdout
    assert a["actor_id"] in out and "num_restarts" in out and "is_detached" in out

    def finished():
        tasks = ray_list(head, "tasks", "--filter", "job_id=%s" % a["job_id"])
        squares = [t for t in tasks if t["func_or_class_name"] == "square" and t["state"] == "FINISHED"]
        boom = [t for t in tasks if t["name"] == "boom" and t["state"] == "FAILED"]
        return (squares, boom, tasks) if len(squares) == 3 and boom else None

    squares, boom, tasks = poll(finished, "ray:// tasks to end")
    assert boom[0]["error_type"] == "TASK_EXECUTION_EXCEPTION"
    incr = [t for t in tasks if t["func_or_class_name"] == "Counter.incr"]
    assert incr and incr[0]["type"] == "ACTOR_TASK" and incr[0]["actor_id"] == a["actor_id"]
    assert [t for t in tasks if t["type"] == "ACTOR_CREATION_TASK" and t["actor_id"] == a["actor_id"]]

    detail = ray_list(head, "tasks", "--detail", "--filter", "task_id=%s" % squares[0]["task_id"])
    assert len(detail) == 1 and detail[0]["creation_time_ms"] and detail[0]["end_time_ms"] >= detail[0]["creation_time_ms"]
    assert detail[0]["required_resources"] == {"CPU": 1.0}


def test_ray_client_jobs_pgs_objects_workers(head):
    jobs = ray_list(head, "jobs")
    running = [j for j in jobs if j["type"] == "DRIVER" and j["status"] == "RUNNING"]
    assert len(running) >= 2, jobs  # the ray:// session and the native driver
    pgs = by(ray_list(head, "placement-groups", "--detail"), "name", "state_pg")
    assert len(pgs) == 1 and pgs[0]["state"] == "CREATED"
    assert pgs[0]["bundles"][0]["unit_resources"] == {"CPU": 0.1}
    from ray.util.state import list_objects

    objects = list_objects(address=head.api)  # raw sizes (the CLI shows them for people)
    assert [o for o in objects if 100000 <= o.object_size < 101000 and o.type == "DRIVER" and o.reference_type == "LOCAL_REFERENCE"], objects
    assert any(o["object_size"].endswith(" KiB") for o in ray_list(head, "objects"))
    workers = ray_list(head, "workers")
    assert workers and all(w["is_alive"] for w in workers)
    for w in workers:
        os.kill(w["pid"], 0)


def test_native_rows_through_the_sdk(head):
    from ray.util.state import get_actor, list_actors, list_jobs, list_objects, list_tasks

    addr = head.api

    def done():
        rows = list_tasks(address=addr, filters=[("func_or_class_name", "=", "native_square")], detail=True)
        return rows if len(rows) == 3 and all(t.state == "FINISHED" for t in rows) else None

    rows = poll(done, "native tasks to finish")
    assert all(t.node_id and t.worker_id and t.type == "NORMAL_TASK" for t in rows)
    assert all(t.creation_time_ms <= t.end_time_ms for t in rows)
    actors = list_actors(address=addr, filters=[("name", "=", "state_native_actor")])
    assert len(actors) == 1 and actors[0].state == "ALIVE" and actors[0].class_name == "NativeActor"
    got = get_actor(actors[0].actor_id, address=addr)
    assert got.actor_id == actors[0].actor_id and got.is_detached is False
    jobs = [j for j in list_jobs(address=addr) if j.driver_info and j.driver_info.pid == str(head.native_driver_pid)]
    assert len(jobs) == 1 and jobs[0].status == "RUNNING" and jobs[0].type == "DRIVER"
    big = [o for o in list_objects(address=addr) if 2 << 20 <= o.object_size < (2 << 20) + 4096]
    assert len(big) == 1 and big[0].type == "DRIVER" and big[0].pid == head.native_driver_pid


def test_summaries(head):
    out = ray_cli(head, "summary", "tasks").stdout
    assert re.search(r"square\s+FINISHED: 3\s+NORMAL_TASK", out), out
    assert re.search(r"native_square\s+FINISHED: 3\s+NORMAL_TASK", out), out
    assert re.search(r"boom\s+FAILED: 1", out), out
    out = ray_cli(head, "summary", "actors").stdout
    assert re.search(r"Counter\s+ALIVE: 1", out) and re.search(r"NativeActor\s+ALIVE: 1", out), out
    out = ray_cli(head, "summary", "objects").stdout
    assert "total_objects" in out and "disabled" in out, out


def test_bad_queries_get_errors_and_the_server_keeps_serving(head):
    # is_detached is a column, but not a filterable one: the server says 400.
    r = ray_cli(head, "list", "actors", "--filter", "is_detached=True", check=False)
    assert r.returncode != 0 and "is not supported" in (r.stdout + r.stderr)
    r = requests.get(head.api + "/api/v0/actors", params={"limit": 10001}, timeout=30)
    assert r.status_code == 400 and r.json()["result"] is False and "10000" in r.json()["msg"]
    r = requests.get(head.api + "/api/v0/tasks", params={"filter_keys": "attempt_number", "filter_predicates": "=", "filter_values": "x"}, timeout=30)
    assert r.status_code == 400 and "int" in r.json()["msg"]
    r = requests.get(head.api + "/api/v0/bogus", timeout=30)
    assert r.status_code == 404 and r.json()["result"] is False
    r = requests.get(head.api + "/api/v0/nodes", params={"limit": 10000}, timeout=30)
    body = r.json()
    assert r.status_code == 200 and body["result"] is True and body["msg"] == ""
    assert set(body["data"]["result"]) == {"total", "num_after_truncation", "num_filtered", "result", "partial_failure_warning", "warnings"}
    assert len(ray_list(head, "nodes")) == 1


def test_ray_status_and_gray_status_show_pending_demands(head, gray_bin):
    prog = Program(PENDING, head.address, head.env)
    try:
        # The ray:// program's placement group holds 0.1 of the head's two
        # CPUs (one ledger for both worlds): one hold() runs, three wait.
        def pending():
            r = ray_cli(head, "status", "--address", head.address, check=False)
            return r.stdout if "{'CPU': 1.0}: 3+ pending tasks/actors" in r.stdout else None

        out = poll(pending, "ray status to show the pending demand")
        assert re.search(r"1\.1/2\.0 CPU", out), out
        assert re.search(r"GiB memory", out), out

        def gray_pending():
            r = subprocess.run([gray_bin, "status", "--address", "127.0.0.1:%d" % head.status_port],
                               capture_output=True, text=True, timeout=30)
            return r.stdout if "{'CPU': 1.0}: 3 pending tasks/actors (native)" in r.stdout else None

        out = poll(gray_pending, "gray status to show the pending demand")
        assert re.search(r"memory\s+\S+ \S?B / \d+\.\d\d GiB", out), out
        assert "e+" not in out, out
        tasks = ray_list(head, "tasks", "--filter", "func_or_class_name=hold")
        assert {t["state"] for t in tasks} >= {"RUNNING"}, tasks
    finally:
        prog.stop()
