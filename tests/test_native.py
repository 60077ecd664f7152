"""Native Ray on a gray head: stock `ray.init(address="HOST:PORT")` drivers and
stock core workers (default_worker.py) on gray's GCS, raylet and plasma store.
Each driver runs in a fresh interpreter, as a user's program would."""

import os

import pytest

from native_pool import make_target


@pytest.fixture(scope="module")
def native(gray_bin):
    p = make_target(gray_bin)
    yield p
    p.stop()


def test_connect_and_cluster_resources(native):
    out = native.check("""
        import ray
        ctx = ray.init(address=ADDRESS)
        res = ray.cluster_resources()
        assert res.get("CPU") == 2, res
        nodes = ray.nodes()
        assert len(nodes) == 1 and nodes[0]["Alive"], nodes
        print("NODE", nodes[0]["NodeID"])
        ray.shutdown()
    """)
    assert "NODE" in out


def test_session_dir_layout(native):
    d = native.session_dir()
    assert os.path.basename(d).startswith("session_")
    for sub in ("logs", "sockets"):
        assert os.path.isdir(os.path.join(d, sub)), sub
    with open(os.path.join(native.tmp, "ray", "ray_current_cluster")) as f:
        # host:port of the GCS; the host is the node IP, as stock Ray writes it.
        assert f.read().split(":")[1] == native.address.split(":")[1]


def test_address_auto(native):
    # address="auto" reads ray_current_cluster under $RAY_TMPDIR/ray.
    native.check("""
        import ray
        ray.init(address="auto")
        assert ray.get(ray.put(41)) == 41
        ray.shutdown()
    """)


def test_put_get_small_and_large(native):
    native.check("""
        import numpy as np, ray
        ray.init(address=ADDRESS)
        assert ray.get(ray.put({"a": 1})) == {"a": 1}
        big = np.arange(10 * 1024 * 1024 // 8, dtype=np.int64)   # 10 MiB: plasma
        ref = ray.put(big)
        out = ray.get(ref)
        assert (out == big).all()
        ray.shutdown()
    """)


def test_tasks(native):
    native.check("""
        import numpy as np, ray
        ray.init(address=ADDRESS)

        @ray.remote
        def f(x):
            return x + 1

        assert ray.get(f.remote(1)) == 2
        assert ray.get([f.remote(i) for i in range(100)]) == list(range(1, 101))

        @ray.remote
        def big(n):
            return np.ones(n, dtype=np.uint8)

        @ray.remote
        def total(a):
            return int(a.sum())

        ref = big.remote(8 * 1024 * 1024)
        assert ray.get(total.remote(ref)) == 8 * 1024 * 1024

        @ray.remote
        def nested(n):
            return sum(ray.get([f.remote(i) for i in range(n)]))

        assert ray.get(nested.remote(10)) == sum(range(1, 11))
        ray.shutdown()
    """)


def test_actors(native):
    native.check("""
        import ray
        ray.init(address=ADDRESS)

        @ray.remote
        class Counter:
            def __init__(self, start):
                self.n = start
            def inc(self, k=1):
                self.n += k
                return self.n

        c = Counter.remote(10)
        assert ray.get(c.inc.remote(5)) == 15
        assert ray.get([c.inc.remote() for _ in range(10)])[-1] == 25

        named = Counter.options(name="ctr", namespace="shared", lifetime="detached").remote(0)
        assert ray.get(named.inc.remote()) == 1
        assert ray.get(ray.get_actor("ctr", namespace="shared").inc.remote()) == 2
        ray.kill(c)
        # ray.kill is fire-and-forget in stock Ray too (the core worker does
        # not wait for the GCS), so a call racing the kill may still run;
        # once the kill lands every call fails with RayActorError.
        import time
        deadline = time.monotonic() + 30
        while True:
            try:
                ray.get(c.inc.remote())
            except ray.exceptions.RayActorError as e:
                assert "ray.kill" in str(e), str(e)
                break
            if time.monotonic() > deadline:
                raise SystemExit("calls on a killed actor still succeed after 30 s")
        ray.shutdown()
    """)
    # A detached named actor outlives its driver.
    native.check("""
        import ray
        ray.init(address=ADDRESS)
        a = ray.get_actor("ctr", namespace="shared")
        assert ray.get(a.inc.remote()) == 3
        ray.kill(a)
        ray.shutdown()
    """)


def test_async_actor(native):
    native.check("""
        import asyncio, ray
        ray.init(address=ADDRESS)

        @ray.remote
        class A:
            async def slow(self, x):
                await asyncio.sleep(0.2)
                return x

        a = A.remote()
        assert ray.get([a.slow.remote(i) for i in range(20)]) == list(range(20))
        ray.shutdown()
    """)


def test_errors(native):
    native.check("""
        import ray
        ray.init(address=ADDRESS)

        class MyError(Exception):
            pass

        @ray.remote
        def boom():
            raise MyError("x")

        try:
            ray.get(boom.remote())
            raise SystemExit("no error")
        except MyError as e:
            # The cause's type and RayTaskError at once, as stock Ray raises it.
            assert isinstance(e, ray.exceptions.RayTaskError), type(e)
            assert "x" in str(e)

        class TwoArgs(Exception):
            def __init__(self, a, b):
                super().__init__(a)
                self.b = b

        @ray.remote
        def boom2():
            raise TwoArgs("x", 2)

        # An exception that cannot be rebuilt from its args: stock Ray gives
        # UnserializableException carrying the original text.
        try:
            ray.get(boom2.remote())
            raise SystemExit("no error")
        except ray.exceptions.UnserializableException as e:
            assert "TwoArgs" in str(e)

        @ray.remote
        def slow():
            import time; time.sleep(30)

        try:
            ray.get(slow.remote(), timeout=0.5)
            raise SystemExit("no timeout")
        except ray.exceptions.GetTimeoutError:
            pass
        ray.shutdown()
    """)


def test_wait_and_generators(native):
    native.check("""
        import ray
        ray.init(address=ADDRESS)

        @ray.remote
        def f(x):
            return x

        refs = [f.remote(i) for i in range(5)]
        ready, rest = ray.wait(refs, num_returns=5, timeout=60)
        assert len(ready) == 5 and not rest

        @ray.remote
        def gen(n):
            for i in range(n):
                yield i

        assert [ray.get(r) for r in gen.remote(5)] == list(range(5))

        @ray.remote(num_returns="dynamic")
        def dyn(n):
            for i in range(n):
                yield i

        inner = ray.get(dyn.remote(4))
        assert [ray.get(r) for r in inner] == list(range(4))
        ray.shutdown()
    """)


def test_runtime_context(native):
    native.check("""
        import ray
        ray.init(address=ADDRESS)
        node = ray.get_runtime_context().get_node_id()

        @ray.remote(num_cpus=1)
        def where():
            ctx = ray.get_runtime_context()
            return ctx.get_node_id(), ctx.get_task_id(), ctx.get_worker_id(), ctx.get_assigned_resources()

        n, task, worker, res = ray.get(where.remote())
        assert n == node and task and worker, (n, task, worker)
        assert res.get("CPU") == 1, res

        @ray.remote
        class A:
            def ids(self):
                return ray.get_runtime_context().get_actor_id()

        a = A.remote()
        assert ray.get(a.ids.remote()) == a._actor_id.hex()
        ray.shutdown()
    """)


def test_print_reaches_driver(native):
    out = native.run("""
        import ray
        ray.init(address=ADDRESS)

        @ray.remote
        def hello():
            print("hello-from-a-native-worker")
            return 1

        ray.get(hello.remote())
        import time; time.sleep(2)
        ray.shutdown()
    """)
    assert out.returncode == 0, out.stderr
    assert "hello-from-a-native-worker" in out.stdout + out.stderr


def test_worker_crash_and_retry(native):
    native.check("""
        import os, ray
        ray.init(address=ADDRESS)

        @ray.remote(max_retries=0)
        def die():
            os._exit(1)

        try:
            ray.get(die.remote())
            raise SystemExit("no error")
        except ray.exceptions.WorkerCrashedError:
            pass

        @ray.remote
        def ok():
            return "fine"

        assert ray.get(ok.remote()) == "fine"
        ray.shutdown()
    """)


def test_placement_groups(native):
    native.check("""
        import ray
        from ray.util.placement_group import placement_group, remove_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
        ray.init(address=ADDRESS)

        pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="PACK")
        assert pg.wait(timeout_seconds=60)

        @ray.remote(num_cpus=1)
        def where():
            return ray.get_runtime_context().get_assigned_resources()

        strat = PlacementGroupSchedulingStrategy(placement_group=pg, placement_group_bundle_index=1)
        res = ray.get(where.options(scheduling_strategy=strat).remote())
        assert res, res

        # Both CPUs are in the group: a plain task cannot run until it goes.
        ref = where.remote()
        ready, _ = ray.wait([ref], timeout=2)
        assert not ready
        remove_placement_group(pg)
        assert ray.get(ref, timeout=60)

        # Infeasible: pending, not an error.
        big = placement_group([{"CPU": 8}])
        assert not big.wait(timeout_seconds=2)
        remove_placement_group(big)
        ray.shutdown()
    """)


def test_cancel_and_retries(native):
    native.check("""
        import os, tempfile, time, ray
        ray.init(address=ADDRESS)

        @ray.remote
        def forever():
            time.sleep(600)

        ref = forever.remote()
        time.sleep(1)
        ray.cancel(ref, force=True)
        try:
            ray.get(ref, timeout=60)
            raise SystemExit("no error")
        except (ray.exceptions.TaskCancelledError, ray.exceptions.WorkerCrashedError):
            pass

        marker = tempfile.mktemp()

        @ray.remote(max_retries=2)
        def flaky(path):
            if not os.path.exists(path):
                open(path, "w").close()
                os._exit(1)
            return "second try"

        assert ray.get(flaky.remote(marker)) == "second try"

        # A call that meets the actor while it restarts may fail with
        # ActorUnavailableError unless it may be retried (Ray's semantics).
        @ray.remote(max_restarts=1, max_task_retries=1)
        class Phoenix:
            def pid(self):
                return os.getpid()
            def die(self, path):
                if not os.path.exists(path):
                    open(path, "w").close()
                    os._exit(1)
                return "restarted"

        p = Phoenix.remote()
        first = ray.get(p.pid.remote())
        assert ray.get(p.die.remote(tempfile.mktemp())) == "restarted"
        second = ray.get(p.pid.remote())
        assert second != first
        ray.shutdown()
    """)


def test_threaded_actor_and_handles(native):
    native.check("""
        import threading, time, ray
        ray.init(address=ADDRESS)

        @ray.remote(max_concurrency=4)
        class Gate:
            def __init__(self):
                self.n = 0
                self.lock = threading.Lock()
            def enter(self):
                with self.lock:
                    self.n += 1
                deadline = time.time() + 30
                while self.n < 4 and time.time() < deadline:
                    time.sleep(0.01)
                return self.n

        g = Gate.remote()
        assert min(ray.get([g.enter.remote() for _ in range(4)])) == 4

        @ray.remote
        class Store:
            def __init__(self):
                self.v = None
            def set(self, v):
                self.v = v
            def get(self):
                return self.v

        @ray.remote
        def use(handle):
            ray.get(handle.set.remote("from a task"))
            return ray.get(handle.get.remote())

        s = Store.remote()
        assert ray.get(use.remote(s)) == "from a task"
        ray.shutdown()
    """)


def test_two_drivers_at_once(native):
    prog = """
        import ray
        ray.init(address=ADDRESS)

        @ray.remote
        def sq(x):
            return x * x

        assert ray.get([sq.remote(i) for i in range(200)]) == [i * i for i in range(200)]
        print("job", ray.get_runtime_context().get_job_id())
        ray.shutdown()
    """
    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        outs = list(ex.map(lambda _: native.check(prog), range(2)))
    jobs = {line for o in outs for line in o.splitlines() if line.startswith("job")}
    assert len(jobs) == 2, outs


def test_timeline(native):
    native.check("""
        import json, tempfile, ray
        ray.init(address=ADDRESS)

        @ray.remote
        def f():
            return 1

        ray.get([f.remote() for _ in range(10)])
        import time; time.sleep(2)   # task events are flushed once a second
        path = tempfile.mktemp(suffix=".json")
        ray.timeline(filename=path)
        events = json.load(open(path))
        assert isinstance(events, list)
        ray.shutdown()
    """)


def _garbage_then_closed(path, payload):
    """Sends payload on a fresh connection to the unix socket at path and
    reports whether the server closed it (what a bad client must get)."""
    import socket
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    s.sendall(payload)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    finally:
        s.close()


@pytest.mark.skipif(os.environ.get("NATIVE_TARGET") == "ray", reason="probes gray's own sockets")
def test_malformed_local_messages_disconnect_only_the_sender(native):
    import struct
    sockets = os.path.join(native.session_dir(), "sockets")
    cookie = struct.pack("<q", 0x5241590000000000)
    # A wrong cookie on the raylet socket.
    assert _garbage_then_closed(os.path.join(sockets, "raylet"), b"\x01" * 64)
    # A RegisterClientRequest (type 1) whose flatbuffer is garbage.
    body = b"\xff" * 40
    assert _garbage_then_closed(os.path.join(sockets, "raylet"), cookie + struct.pack("<qQ", 1, len(body)) + body)
    # A PlasmaCreateRequest (type 1) whose flatbuffer is garbage, and a frame
    # that declares an absurd length.
    assert _garbage_then_closed(os.path.join(sockets, "plasma_store"), cookie + struct.pack("<qQ", 1, len(body)) + body)
    assert _garbage_then_closed(os.path.join(sockets, "plasma_store"), cookie + struct.pack("<qQ", 8, 1 << 40))
    # The node keeps serving everyone else.
    native.check("""
        import numpy as np, ray
        ray.init(address=ADDRESS)

        @ray.remote
        def f(a):
            return int(a.sum())

        assert ray.get(f.remote(np.ones(1 << 20, dtype=np.uint8))) == 1 << 20
        ray.shutdown()
    """)


def test_runtime_env_vars(native):
    native.check("""
        import os, ray
        ray.init(address=ADDRESS, runtime_env={"env_vars": {"JOB_LEVEL": "j"}})

        @ray.remote
        def env(name):
            return os.environ.get(name), os.getpid()

        assert ray.get(env.remote("JOB_LEVEL"))[0] == "j"
        val, pid1 = ray.get(env.options(runtime_env={"env_vars": {"TASK_LEVEL": "t"}}).remote("TASK_LEVEL"))
        assert val == "t"
        # Another env runs in another worker process; the plain one keeps none of it.
        assert ray.get(env.remote("TASK_LEVEL"))[0] is None

        @ray.remote(runtime_env={"env_vars": {"ACTOR_LEVEL": "a"}})
        class A:
            def get(self):
                return os.environ.get("ACTOR_LEVEL")

        assert ray.get(A.remote().get.remote()) == "a"

        # What gray cannot set up yet fails as a runtime env error, not a hang.
        try:
            ray.get(env.options(runtime_env={"pip": ["surely-not-a-package-xyz"]}).remote("X"), timeout=120)
            raise SystemExit("no error")
        except ray.exceptions.RuntimeEnvSetupError:
            pass
        ray.shutdown()
    """)


def test_runtime_env_working_dir(native):
    out = native.check("""
        import os, sys, tempfile, ray
        wd = tempfile.mkdtemp(prefix="wd")
        with open(os.path.join(wd, "wd_helper_mod.py"), "w") as f:
            f.write("VALUE = 'from working_dir'\\n")
        with open(os.path.join(wd, "data.txt"), "w") as f:
            f.write("hello")
        os.makedirs(os.path.join(wd, "sub"))
        with open(os.path.join(wd, "sub", "nested.txt"), "w") as f:
            f.write("nested")
        with open(os.path.join(wd, "skip.log"), "w") as f:
            f.write("excluded")
        ray.init(address=ADDRESS, runtime_env={"working_dir": wd, "excludes": ["*.log"]})

        @ray.remote
        def probe():
            import wd_helper_mod
            cwd = os.getcwd()
            return (wd_helper_mod.VALUE, sorted(os.listdir(cwd)), open("data.txt").read(),
                    open(os.path.join("sub", "nested.txt")).read(), cwd,
                    os.environ.get("PYTHONPATH", "").split(os.pathsep))

        val, listing, data, nested, cwd, pp = ray.get(probe.remote())
        assert val == "from working_dir", val
        assert listing == ["data.txt", "sub", "wd_helper_mod.py"], listing
        assert (data, nested) == ("hello", "nested")
        # The worker runs in the node's unpacked copy, not the driver's directory.
        assert cwd != wd and "/runtime_resources/working_dir_files/_ray_pkg_" in cwd, cwd
        assert pp[0] == cwd, pp

        @ray.remote
        class A:
            def where(self):
                import wd_helper_mod
                return os.getcwd(), wd_helper_mod.VALUE

        assert ray.get(A.remote().where.remote()) == (cwd, "from working_dir")
        print("CWD", cwd)
        ray.shutdown()
    """)
    assert "CWD" in out


def test_runtime_env_py_modules(native):
    native.check("""
        import os, tempfile, ray
        root = tempfile.mkdtemp(prefix="pm")
        pkg = os.path.join(root, "gray_pm_pkg")
        os.makedirs(os.path.join(pkg, "sub"))
        with open(os.path.join(pkg, "__init__.py"), "w") as f:
            f.write("from .inner import f\\n")
        with open(os.path.join(pkg, "inner.py"), "w") as f:
            f.write("def f():\\n    return 'pm-ok'\\n")
        with open(os.path.join(pkg, "sub", "__init__.py"), "w") as f:
            f.write("G = 7\\n")
        wd = tempfile.mkdtemp(prefix="wd")
        with open(os.path.join(wd, "wd_only_mod.py"), "w") as f:
            f.write("W = 1\\n")
        ray.init(address=ADDRESS, runtime_env={"py_modules": [pkg]})

        @ray.remote
        def use():
            import gray_pm_pkg, gray_pm_pkg.sub
            return gray_pm_pkg.f(), gray_pm_pkg.sub.G, gray_pm_pkg.__file__

        f, g, path = ray.get(use.remote())
        assert (f, g) == ("pm-ok", 7)
        assert "/runtime_resources/py_modules_files/_ray_pkg_" in path, path
        assert path.endswith(os.path.join("gray_pm_pkg", "__init__.py")), path
        ray.shutdown()

        # py_modules and working_dir together; an actor gets both too.
        ray.init(address=ADDRESS, runtime_env={"py_modules": [pkg], "working_dir": wd})

        @ray.remote
        class B:
            def both(self):
                import gray_pm_pkg, wd_only_mod
                pp = os.environ["PYTHONPATH"].split(os.pathsep)
                return (gray_pm_pkg.f(), wd_only_mod.W, os.path.exists("wd_only_mod.py"),
                        pp.index(os.getcwd()) > pp.index(os.path.dirname(os.path.dirname(gray_pm_pkg.__file__))))

        assert ray.get(B.remote().both.remote()) == ("pm-ok", 1, True, True)
        ray.shutdown()
    """)


def test_runtime_env_task_working_dir(native):
    native.check("""
        import os, tempfile, ray
        from ray._private.runtime_env.packaging import get_uri_for_directory, upload_package_if_needed
        dirs = []
        for tag in ("one", "two"):
            d = tempfile.mkdtemp(prefix="wd" + tag)
            with open(os.path.join(d, "which_dir_mod.py"), "w") as f:
                f.write("TAG = %r\\n" % tag)
            dirs.append(d)
        ray.init(address=ADDRESS)
        # Task and actor options take URIs: upload the directory as ray.init would.
        uri = get_uri_for_directory(dirs[0], include_gitignore=True)
        upload_package_if_needed(uri, tempfile.mkdtemp(), dirs[0], include_gitignore=True)
        assert uri.startswith("gcs://_ray_pkg_") and uri.endswith(".zip"), uri

        @ray.remote
        def tag():
            try:
                import which_dir_mod
            except ImportError:
                return None, os.getcwd()
            return which_dir_mod.TAG, os.getcwd()

        t1, cwd1 = ray.get(tag.options(runtime_env={"working_dir": uri}).remote())
        t2, cwd2 = ray.get(tag.options(runtime_env={"working_dir": "local://" + dirs[1]}).remote())
        assert (t1, t2) == ("one", "two"), (t1, t2)
        assert os.path.basename(cwd1) == uri[len("gcs://"):-len(".zip")], (cwd1, uri)
        assert cwd2 == dirs[1], cwd2
        # A task without one runs in a worker that has neither.
        t0, cwd0 = ray.get(tag.remote())
        assert t0 is None and cwd0 not in (cwd1, cwd2), (t0, cwd0)
        # The same working_dir again: the same unpacked copy.
        assert ray.get(tag.options(runtime_env={"working_dir": uri}).remote()) == ("one", cwd1)

        @ray.remote(runtime_env={"working_dir": uri})
        class C:
            def tag(self):
                import which_dir_mod
                return which_dir_mod.TAG, os.getcwd()
        assert ray.get(C.remote().tag.remote()) == ("one", cwd1)

        # Remote packages are not downloaded by gray: a runtime env error, not a hang.
        try:
            ray.get(tag.options(runtime_env={"working_dir": "https://127.0.0.1:1/nope.zip"}).remote(), timeout=120)
            raise SystemExit("no error")
        except ray.exceptions.RuntimeEnvSetupError as e:
            if os.environ.get("NATIVE_TARGET") != "ray":
                assert "working_dir" in str(e) and "https://" in str(e), str(e)
        ray.shutdown()
    """)


def test_worker_dying_with_plasma_buffers_releases_them(native):
    # A task maps a 64 MiB object from plasma (zero copy) and dies holding
    # it; once the driver drops its ref, the store must free it: the dead
    # worker's reference is released, nothing stays in use.
    native.check("""
        import os, time, grpc, numpy as np, ray
        from ray.core.generated import node_manager_pb2 as nm, node_manager_pb2_grpc as nmg
        ray.init(address=ADDRESS)
        node = ray.nodes()[0]
        stub = nmg.NodeManagerServiceStub(grpc.insecure_channel(
            "%s:%d" % (node["NodeManagerAddress"], node["NodeManagerPort"])))

        def used():
            return stub.GetNodeStats(nm.GetNodeStatsRequest(), timeout=30).store_stats.object_store_bytes_used

        base = used()
        ref = ray.put(np.ones(64 << 20, dtype=np.uint8))
        assert used() >= base + (64 << 20)

        @ray.remote(max_retries=0)
        def hold_and_die(arr):
            assert arr.nbytes == 64 << 20   # a view of the plasma buffer
            os._exit(1)

        try:
            ray.get(hold_and_die.remote(ref))
            raise SystemExit("no error")
        except ray.exceptions.WorkerCrashedError:
            pass
        del ref
        deadline = time.time() + 60
        while used() > base + (1 << 20) and time.time() < deadline:
            time.sleep(0.2)
        assert used() <= base + (1 << 20), (base, used())
        ray.shutdown()
    """)


def test_ray_status(native):
    # The stock `ray status` CLI against the GCS: nodes, usage, demands.
    out = native.check("""
        import os, subprocess, sys, time, ray
        ray.init(address=ADDRESS)

        @ray.remote(num_cpus=1)
        def busy():
            time.sleep(6)

        refs = [busy.remote() for _ in range(4)]   # 2 run, 2 wait
        cli = os.path.join(os.path.dirname(sys.executable), "ray")
        deadline = time.time() + 30
        while True:
            r = subprocess.run([cli, "status", "--address", ADDRESS], capture_output=True, text=True, timeout=60)
            if "2.0/2.0 CPU" in r.stdout or time.time() > deadline:
                break
            time.sleep(0.5)
        print(r.stdout)
        ray.get(refs)
        ray.shutdown()
    """)
    assert "Node status" in out and "2.0/2.0 CPU" in out, out
    assert "{'CPU': 1.0}" in out and "pending" in out, out


def test_wait_more_ready_than_asked(native):
    # Ten objects ready, two asked for: two ready, eight remaining (the
    # stock core worker aborts if its raylet reports more than it asked).
    native.check("""
        import ray
        ray.init(address=ADDRESS)
        refs = [ray.put(i) for i in range(10)]
        big = [ray.put(bytes(200 * 1024)) for _ in range(10)]   # in plasma
        for group in (refs, big, refs + big):
            ready, rest = ray.wait(group, num_returns=2, timeout=30)
            assert len(ready) == 2 and len(rest) == len(group) - 2, (len(ready), len(rest))
        ray.shutdown()
    """)


def test_finished_jobs_exports_are_dropped(native):
    # Each driver exports its actor classes to the KV; a finished job's go
    # (Ray's own test_actor_class_name counts them).
    prog = """
        import ray
        from ray.experimental.internal_kv import _internal_kv_list
        ray.init(address=ADDRESS)

        @ray.remote
        class Foo:
            def f(self):
                return 1

        assert ray.get(Foo.remote().f.remote()) == 1
        print("KEYS", len(_internal_kv_list(b"ActorClass", namespace=b"fun")))
        ray.shutdown()
    """
    counts = []
    for _ in range(3):
        out = native.check(prog)
        counts.append(int(out.split("KEYS")[1].split()[0]))
    assert counts == [1, 1, 1], counts
