"""Actors through the stock client: creation, methods, concurrency, names,
lifetimes and fault tolerance."""

import os
import signal
import time

import pytest

from conftest import run_client_script


def test_actor_args_options_and_num_returns(ray_client):
    ray = ray_client

    @ray.remote
    class Counter:
        def __init__(self, start, step=1):
            self.n = start
            self.step = step

        def inc(self):
            self.n += self.step
            return self.n

        @ray.method(num_returns=2)
        def pair(self):
            return self.n, -self.n

        def pid(self):
            return os.getpid()

    c = Counter.options(num_cpus=1, max_concurrency=1).remote(10, step=2)
    # Calls from one caller run in submission order.
    assert ray.get([c.inc.remote() for _ in range(20)]) == list(range(12, 51, 2))
    a, b = c.pair.remote()
    assert ray.get([a, b]) == [50, -50]
    x, y, z = c.inc.options(num_returns=1).remote(), c.pid.remote(), c.pid.remote()
    assert ray.get(x) == 52
    assert ray.get(y) == ray.get(z) != os.getpid()


def test_actor_handles_in_tasks_and_actors(ray_client):
    ray = ray_client

    @ray.remote
    class Store:
        def __init__(self):
            self.items = []

        def add(self, x):
            self.items.append(x)
            return len(self.items)

        def all(self):
            return list(self.items)

    @ray.remote
    def producer(store, i):
        return ray.get(store.add.remote(i))

    @ray.remote
    class Forwarder:
        def __init__(self, store):
            self.store = store

        def forward(self, x):
            return ray.get(self.store.add.remote(x))

    s = Store.remote()
    ray.get([producer.remote(s, i) for i in range(4)])
    f = Forwarder.remote(s)
    assert ray.get(f.forward.remote("via actor")) == 5
    assert sorted(map(str, ray.get(s.all.remote()))) == sorted(["0", "1", "2", "3", "via actor"])


def test_actor_with_object_ref_arguments(ray_client):
    ray = ray_client

    @ray.remote
    class Adder:
        def __init__(self, base):
            self.base = base

        def add(self, x):
            return self.base + x

    @ray.remote
    def seven():
        return 7

    a = Adder.remote(ray.put(100))
    assert ray.get(a.add.remote(seven.remote())) == 107


def test_threaded_actor_runs_concurrently(ray_client):
    ray = ray_client

    @ray.remote(max_concurrency=4)
    class Sleeper:
        def nap(self):
            time.sleep(1.0)
            return time.time()

    s = Sleeper.remote()
    ray.get(s.nap.remote())  # started
    t0 = time.time()
    ray.get([s.nap.remote() for _ in range(4)])
    assert time.time() - t0 < 3.5  # sequentially this takes 4 s


def test_async_actor(ray_client):
    ray = ray_client

    @ray.remote
    class AsyncActor:
        def __init__(self):
            self.active = 0
            self.peak = 0

        async def work(self, x):
            import asyncio

            self.active += 1
            self.peak = max(self.peak, self.active)
            await asyncio.sleep(0.3)
            self.active -= 1
            return x * 2

        async def peak_concurrency(self):
            return self.peak

    a = AsyncActor.remote()
    assert ray.get([a.work.remote(i) for i in range(10)]) == [i * 2 for i in range(10)]
    assert ray.get(a.peak_concurrency.remote()) > 1

    limited = AsyncActor.options(max_concurrency=1).remote()
    ray.get([limited.work.remote(i) for i in range(3)])
    assert ray.get(limited.peak_concurrency.remote()) == 1


def test_actor_method_error(ray_client):
    ray = ray_client

    @ray.remote
    class Bad:
        def fail(self):
            raise KeyError("missing")

        def ok(self):
            return "ok"

    b = Bad.remote()
    with pytest.raises(KeyError):
        ray.get(b.fail.remote())
    with pytest.raises(ray.exceptions.RayTaskError):
        ray.get(b.fail.remote())
    assert ray.get(b.ok.remote()) == "ok"  # the actor survives a method error


def test_constructor_error_kills_actor(ray_client):
    ray = ray_client

    @ray.remote
    class Broken:
        def __init__(self):
            raise RuntimeError("cannot construct")

        def f(self):
            return 1

    b = Broken.remote()
    with pytest.raises(ray.exceptions.RayActorError) as info:
        ray.get(b.f.remote(), timeout=60)
    assert "cannot construct" in str(info.value)


def test_named_actor_get_and_list(ray_client, pool):
    ray = ray_client

    @ray.remote
    class Named:
        def hello(self):
            return "hi"

    n = Named.options(name="greeter", namespace="actors_ns").remote()
    assert ray.get(n.hello.remote()) == "hi"
    h = ray.get_actor("greeter", namespace="actors_ns")
    assert ray.get(h.hello.remote()) == "hi"
    listed = ray.util.list_named_actors(all_namespaces=True)
    assert {"name": "greeter", "namespace": "actors_ns"} in listed
    with pytest.raises(ValueError):
        ray.get_actor("no-such-actor")
    with pytest.raises(ValueError, match="already taken"):
        # The client returns the handle at once; the error surfaces on use.
        dup = Named.options(name="greeter", namespace="actors_ns").remote()
        ray.get(dup.hello.remote())
    same = Named.options(name="greeter", namespace="actors_ns", get_if_exists=True).remote()
    assert ray.get(same.hello.remote()) == "hi"

    # Another client session finds it too.
    out = run_client_script(pool, """
import os, ray
ray.init(os.environ["GRAY_ADDRESS"])
h = ray.get_actor("greeter", namespace="actors_ns")
print("GOT", ray.get(h.hello.remote()))
""")
    assert out.returncode == 0, out.stderr
    assert "GOT hi" in out.stdout


def test_kill_actor(ray_client):
    ray = ray_client

    @ray.remote
    class Victim:
        def ping(self):
            return "pong"

    v = Victim.remote()
    assert ray.get(v.ping.remote()) == "pong"
    ray.kill(v)
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(v.ping.remote(), timeout=30)


def test_actor_restart_and_task_retries(ray_client, tmp_path):
    ray = ray_client

    @ray.remote(max_restarts=1, max_task_retries=1)
    class Phoenix:
        def __init__(self, path):
            with open(path, "a") as f:
                f.write("init\n")

        def die_once(self, marker):
            if not os.path.exists(marker):
                open(marker, "w").close()
                os.kill(os.getpid(), signal.SIGKILL)
            return "survived"

        def pid(self):
            return os.getpid()

    log = str(tmp_path / "inits")
    p = Phoenix.remote(log)
    first = ray.get(p.pid.remote())
    # The call kills the worker; the actor restarts (its constructor runs
    # again) and max_task_retries=1 re-runs the call on the new incarnation.
    assert ray.get(p.die_once.remote(str(tmp_path / "died")), timeout=120) == "survived"
    assert ray.get(p.pid.remote()) != first
    assert open(log).read().count("init") == 2

    @ray.remote(max_restarts=0)
    class Mortal:
        def die(self):
            os.kill(os.getpid(), signal.SIGKILL)

        def ping(self):
            return 1

    m = Mortal.remote()
    assert ray.get(m.ping.remote()) == 1
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(m.die.remote(), timeout=30)
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(m.ping.remote(), timeout=30)


def test_lifetimes_across_sessions(pool):
    create = """
import os, ray
ray.init(os.environ["GRAY_ADDRESS"], namespace="life")

@ray.remote
class Keeper:
    def value(self):
        return "alive"

d = Keeper.options(name="detached_one", lifetime="detached").remote()
n = Keeper.options(name="session_one").remote()
print(ray.get([d.value.remote(), n.value.remote()]))
"""
    out = run_client_script(pool, create)
    assert out.returncode == 0, out.stderr
    check = """
import os, time, ray
ray.init(os.environ["GRAY_ADDRESS"], namespace="life")
print("DETACHED", ray.get(ray.get_actor("detached_one").value.remote()))
deadline = time.time() + 30
while time.time() < deadline:
    try:
        ray.get_actor("session_one")
        time.sleep(0.2)
    except ValueError:
        print("SESSION ACTOR GONE")
        break
ray.kill(ray.get_actor("detached_one"))
"""
    out = run_client_script(pool, check)
    assert out.returncode == 0, out.stderr
    assert "DETACHED alive" in out.stdout
    assert "SESSION ACTOR GONE" in out.stdout


def test_released_handle_kills_actor(ray_client):
    ray = ray_client
    import gc

    @ray.remote
    class Temp:
        def pid(self):
            return os.getpid()

    t = Temp.options(name="temp_actor").remote()
    pid = ray.get(t.pid.remote())
    del t
    gc.collect()
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
            time.sleep(0.1)
        except ProcessLookupError:
            break
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_actor_pool_and_queue(ray_client):
    ray = ray_client
    from ray.util import ActorPool
    from ray.util.queue import Queue

    @ray.remote
    class Doubler:
        def double(self, x):
            return 2 * x

    pool = ActorPool([Doubler.remote(), Doubler.remote()])
    assert sorted(pool.map_unordered(lambda a, v: a.double.remote(v), range(6))) == [0, 2, 4, 6, 8, 10]

    q = Queue(maxsize=10)

    @ray.remote
    def fill(queue, n):
        for i in range(n):
            queue.put(i)
        return n

    ray.get(fill.remote(q, 5))
    assert [q.get(timeout=10) for _ in range(5)] == list(range(5))
    assert q.empty()


def test_concurrency_groups(ray_client):
    ray = ray_client
    import threading

    @ray.remote(concurrency_groups={"io": 2, "compute": 1})
    class Grouped:
        def __init__(self):
            self.lock = threading.Lock()
            self.active = {"io": 0, "compute": 0}
            self.peak = {"io": 0, "compute": 0}

        def _enter(self, g):
            with self.lock:
                self.active[g] += 1
                self.peak[g] = max(self.peak[g], self.active[g])

        def _leave(self, g):
            with self.lock:
                self.active[g] -= 1

        @ray.method(concurrency_group="io")
        def io(self):
            self._enter("io")
            time.sleep(0.3)
            self._leave("io")

        @ray.method(concurrency_group="compute")
        def compute(self):
            self._enter("compute")
            time.sleep(0.2)
            self._leave("compute")

        def peaks(self):
            return self.peak

    g = Grouped.remote()
    ray.get([g.io.remote() for _ in range(4)] + [g.compute.remote() for _ in range(3)])
    assert ray.get(g.peaks.remote()) == {"io": 2, "compute": 1}


def test_actor_keeps_refs_and_handles_the_client_dropped(ray_client):
    ray = ray_client
    import gc

    @ray.remote
    class Holder:
        def __init__(self):
            self.refs = []

        def keep(self, wrapped):
            self.refs.append(wrapped[0])  # a nested ref stays a ref
            return len(self.refs)

        def read(self):
            return ray.get(self.refs)

    @ray.remote
    class Pinger:
        def ping(self):
            return "pong"

    @ray.remote
    class Owner:
        def __init__(self, pinger):
            self.pinger = pinger

        def ping(self):
            return ray.get(self.pinger.ping.remote())

    h = Holder.remote()
    ref = ray.put("kept by the actor")
    ray.get(h.keep.remote([ref]))
    p = Pinger.remote()
    o = Owner.remote(p)
    assert ray.get(o.ping.remote()) == "pong"
    del ref, p
    gc.collect()
    time.sleep(1.0)  # give the releases time to reach the pool
    # The actor still holds the object, and Owner still holds Pinger's handle.
    assert ray.get(h.read.remote()) == ["kept by the actor"]
    assert ray.get(o.ping.remote()) == "pong"
