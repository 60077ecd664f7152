"""ray:// sessions on native workers: a head started with
--ray-client-sessions=native serves each stock `ray.init("ray://...")`
session with its own stock Ray Client server process (as stock Ray's
proxier does), whose driver joins the head's native GCS, so tasks run in
stock core workers. CLIENT_TARGET=ray runs the same tests against a stock
`ray start --head` and its proxier."""

import os
import subprocess
import sys
import textwrap

import pytest

from conftest import wait_for
from native_pool import NativePool, StockRay


@pytest.fixture(scope="module")
def head(gray_bin):
    if os.environ.get("CLIENT_TARGET") == "ray":
        h = StockRay(gray_bin)
        h.client_address = "127.0.0.1:%d" % h.client_port
    else:
        h = NativePool(gray_bin, extra=("--ray-client-sessions=native",))
        h.client_address = "127.0.0.1:%d" % h.port
    yield h
    h.stop()


def run(head, source, timeout=300, env=None):
    e = dict(head.env, GRAY_CLIENT=head.client_address, GRAY_NATIVE_ADDRESS=head.address)
    if env:
        e.update(env)
    prog = "import os\nCLIENT = 'ray://' + os.environ['GRAY_CLIENT']\n" + textwrap.dedent(source)
    return subprocess.Popen([sys.executable, "-c", prog], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=e)


def check(head, source, timeout=300, env=None):
    p = run(head, source, timeout, env)
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, f"client failed ({p.returncode}):\n{out}\n{err}\n--- head log ---\n{head.logs()[-6000:]}"
    return out


def specific_servers(head):
    """Pids of this head's per-session Ray Client servers."""
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"--mode=specific-server" in argv and ("--address=" + head.address).encode() in argv:
            pids.append(int(pid))
    return pids


def test_tasks_actors_objects_on_native_nodes(head):
    out = check(head, """
        import ray
        ray.init(CLIENT)
        @ray.remote
        def f(x):
            return x * 2, ray.get_runtime_context().get_node_id()
        res = ray.get([f.remote(i) for i in range(4)])
        assert [r[0] for r in res] == [0, 2, 4, 6], res
        node_ids = {n["NodeID"] for n in ray.nodes()}
        assert {r[1] for r in res} <= node_ids, (res, node_ids)

        @ray.remote
        class Counter:
            def __init__(self):
                self.n = 0
            def inc(self, k):
                self.n += k
                return self.n
        c = Counter.remote()
        assert ray.get([c.inc.remote(1) for _ in range(3)]) == [1, 2, 3]

        ref = ray.put({"a": 41})
        ready, rest = ray.wait([ref, f.remote(5)], num_returns=2, timeout=60)
        assert len(ready) == 2 and not rest
        assert ray.get(ref)["a"] == 41
        print("NODES", sorted({r[1] for r in res}))
        ray.shutdown()
    """)
    # The task's node is a node of the native GCS (as a native driver sees it).
    nodes = subprocess.run([sys.executable, "-c", "import ray, os\nray.init(address=os.environ['A'])\n"
                            "print(' '.join(n['NodeID'] for n in ray.nodes()))"],
                           capture_output=True, text=True, timeout=120, env=dict(head.env, A=head.address))
    assert nodes.returncode == 0, nodes.stderr
    task_nodes = eval(out.split("NODES", 1)[1].strip())
    assert set(task_nodes) <= set(nodes.stdout.split()), (task_nodes, nodes.stdout)


def test_tune_grid_from_client(head):
    check(head, """
        import tempfile, ray
        from ray import tune
        ray.init(CLIENT)

        def trainable(config):
            for i in range(3):
                tune.report({"score": config["x"] * i})

        res = tune.Tuner(
            trainable, param_space={"x": tune.grid_search([1, 2, 3])},
            run_config=tune.RunConfig(storage_path=tempfile.mkdtemp()),
        ).fit()
        assert len(res) == 3 and not res.errors, res.errors
        assert res.get_best_result(metric="score", mode="max").config["x"] == 3
        ray.shutdown()
    """)


def test_data_inside_a_task(head):
    check(head, """
        import ray
        ray.init(CLIENT)

        @ray.remote
        def pipeline():
            import ray.data
            return ray.data.range(100).map(lambda r: {"x": r["id"] + 1}).take(5)

        assert [r["x"] for r in ray.get(pipeline.remote())] == [1, 2, 3, 4, 5]
        ray.shutdown()
    """)


def test_concurrent_sessions_are_separate_jobs(head, tmp_path):
    done = tmp_path / "done"
    first = run(head, """
        import os, time, ray
        ray.init(CLIENT, namespace="alpha")
        ctx = ray.get_runtime_context()
        @ray.remote
        class Named:
            def ping(self):
                return "pong"
        a = Named.options(name="shared", lifetime=None).remote()
        assert ray.get(a.ping.remote()) == "pong"
        print("JOB", ctx.get_job_id(), ctx.namespace, flush=True)
        while not os.path.exists(os.environ["DONE"]):
            time.sleep(0.1)
        ray.shutdown()
    """, env={"DONE": str(done)})
    line = first.stdout.readline()
    assert line.startswith("JOB"), (line, first.stderr.read() if first.poll() is not None else "")
    try:
        out = check(head, """
            import ray
            ray.init(CLIENT)
            ctx = ray.get_runtime_context()
            try:
                ray.get_actor("shared")
                seen = True
            except ValueError:
                seen = False
            assert ray.get_actor("shared", namespace="alpha") is not None
            print("JOB", ctx.get_job_id(), ctx.namespace, seen)
            ray.shutdown()
        """)
    finally:
        done.touch()
    first.communicate(timeout=120)
    assert first.returncode == 0
    job1, ns1 = line.split()[1:3]
    job2, ns2, seen = out.split("JOB", 1)[1].split()
    assert job1 != job2 and ns1 == "alpha" and ns2 != "alpha" and seen == "False", (line, out)


def test_disconnect_stops_the_session_server_and_reconnect_works(head):
    for _ in range(2):
        check(head, """
            import ray
            ray.init(CLIENT)
            assert ray.get(ray.put(7)) == 7
            ray.shutdown()
        """)
        wait_for(lambda: not specific_servers(head), timeout=120)


def test_serve_handle_from_client(head):
    check(head, """
        import ray
        from ray import serve
        ray.init(CLIENT)

        @serve.deployment
        class Hello:
            def __call__(self, name):
                return "hello " + name

        handle = serve.run(Hello.bind(), route_prefix=None)
        assert handle.remote("client").result() == "hello client"
        serve.shutdown()
        ray.shutdown()
    """)


@pytest.mark.skipif(os.environ.get("CLIENT_TARGET") == "ray", reason="gray's head shutdown")
def test_head_shutdown_stops_open_sessions_servers(gray_bin, tmp_path):
    h = NativePool(gray_bin, extra=("--ray-client-sessions=native",))
    h.client_address = "127.0.0.1:%d" % h.port
    client = None
    try:
        client = run(h, """
            import os, time, ray
            ray.init(CLIENT)
            assert ray.get(ray.put(1)) == 1
            print("UP", flush=True)
            time.sleep(600)
        """)
        assert client.stdout.readline().startswith("UP")
        pids = wait_for(lambda: specific_servers(h), timeout=60)
    finally:
        h.stop()
        if client is not None:
            client.kill()
            client.wait()
    wait_for(lambda: not any(os.path.exists("/proc/%d/cmdline" % p) and open("/proc/%d/cmdline" % p, "rb").read()
                             for p in pids), timeout=60)
