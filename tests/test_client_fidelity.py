"""Ray Client fidelity (issue 17): behaviours where gray differed from a stock
Ray 2.60.0 head serving the same stock client."""

import os
import time

import pytest

from conftest import run_client_script


def test_wait_refuses_duplicate_refs(ray_client):
    """ray.wait's ValueError on the server reaches the client as the failed
    wait request, as with a stock head (item 8)."""
    ray = ray_client
    x = ray.put(1)
    y = ray.put(2)
    with pytest.raises(Exception, match="Client Wait request failed"):
        ray.wait([x, x])
    with pytest.raises(Exception, match="Client Wait request failed"):
        ray.wait([x, y], num_returns=3)
    with pytest.raises(Exception, match="Client Wait request failed"):
        ray.wait([x], num_returns=0)
    assert ray.wait([]) == ([], [])
    ready, rest = ray.wait([x, y], num_returns=2)
    assert sorted(ray.get(ready)) == [1, 2] and rest == []


LOG_LEVELS = """
import logging, os, time
import ray
from ray.util.client import ray as client_ray

ray.init(os.environ["GRAY_ADDRESS"])
records = []
client_ray.worker.log_client.log = lambda level, msg: records.append((level, msg))
client_ray.worker.log_client.set_logstream_level(logging.%s)
time.sleep(1)
x = ray.put("Foo")
assert ray.get(x) == "Foo"
deadline = time.time() + 10
while time.time() < deadline:
    mine = [(l, m) for l, m in records if x.id.hex() in m]
    if any("put" in m for _, m in mine) and any("get" in m for _, m in mine):
        break
    time.sleep(0.1)
print("LEVELS", sorted({l for l, _ in records}))
print("MINE", len([m for _, m in records if x.id.hex() in m]))
ray.shutdown()
"""


def test_server_log_records_follow_the_requested_level(pool):
    """Server log records reach the client's log stream at the level it set,
    as the stock server's handler on the "ray" logger sends them (item 7)."""
    out = run_client_script(pool, LOG_LEVELS % "DEBUG", timeout=60)
    assert out.returncode == 0, out.stderr
    levels = eval(out.stdout.split("LEVELS", 1)[1].splitlines()[0])
    assert 10 in levels, out.stdout
    assert int(out.stdout.split("MINE", 1)[1].split()[0]) >= 2, out.stdout
    # At INFO the server's debug records stay on the server.
    out = run_client_script(pool, LOG_LEVELS % "INFO", timeout=60)
    assert out.returncode == 0, out.stderr
    levels = eval(out.stdout.split("LEVELS", 1)[1].splitlines()[0])
    assert all(level >= 20 or level < 0 for level in levels), out.stdout
    assert "MINE 0" in out.stdout, out.stdout


def test_omp_num_threads_follows_num_cpus(ray_client):
    """Workers get OMP_NUM_THREADS from the CPUs of their task or actor unless
    the runtime_env sets it (item 9)."""
    ray = ray_client

    @ray.remote
    def omp():
        return os.environ.get("OMP_NUM_THREADS")

    @ray.remote
    class Actor:
        def omp(self):
            return os.environ.get("OMP_NUM_THREADS")

    assert ray.get(omp.remote()) == "1"
    assert ray.get(omp.options(num_cpus=2).remote()) == "2"
    assert ray.get(omp.options(num_cpus=3.5).remote()) == "3"
    assert ray.get(omp.options(num_cpus=0.5).remote()) == "1"
    pinned = omp.options(num_cpus=2, runtime_env={"env_vars": {"OMP_NUM_THREADS": "7"}})
    assert ray.get(pinned.remote()) == "7"
    assert ray.get(Actor.remote().omp.remote()) == "1"
    assert ray.get(Actor.options(num_cpus=2).remote().omp.remote()) == "2"


class CountingProxy:
    """A TCP proxy in front of the pool that cuts every connection once, when
    armed and that many bytes have gone to the client."""

    def __init__(self, target_port):
        import socket
        import threading

        self.target = ("127.0.0.1", target_port)
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        self.lock = threading.Lock()
        self.conns, self.down, self.cut_at, self.cuts = [], 0, None, 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import socket
        import threading

        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            u = socket.create_connection(self.target)
            with self.lock:
                self.conns += [c, u]
            threading.Thread(target=self._pipe, args=(c, u, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(u, c, True), daemon=True).start()

    def _pipe(self, a, b, down):
        try:
            while True:
                d = a.recv(1 << 16)
                if not d:
                    break
                b.sendall(d)
                if down:
                    with self.lock:
                        self.down += len(d)
                        fire = self.cut_at is not None and self.down >= self.cut_at
                        if fire:
                            self.cut_at = None
                    if fire:
                        self.cut()
        except OSError:
            pass

    def arm(self, after_bytes):
        with self.lock:
            self.cut_at = self.down + after_bytes

    def cut(self):
        import socket

        with self.lock:
            conns, self.conns = self.conns, []
            self.cuts += 1
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def close(self):
        self.ls.close()
        self.cut()


def test_async_get_resumes_after_reconnect(pool):
    """A reconnect in the middle of a large async get resumes at the first
    chunk the client lacks (item 4)."""
    import hashlib

    import ray

    proxy = CountingProxy(pool.port)
    ray.init("ray://127.0.0.1:%d" % proxy.port)
    try:
        value = bytes(range(256)) * (320 << 12)  # 320 MiB: 64 chunks
        ref = ray.put(value)
        proxy.arm(1 << 16)
        fut = ref.future()
        got = fut.result(timeout=180)
        assert proxy.cuts >= 1
        assert len(got) == len(value)
        assert hashlib.sha256(got).digest() == hashlib.sha256(value).digest()
        assert ray.get(ray.put("after")) == "after"
    finally:
        ray.shutdown()
        proxy.close()


def test_temporary_argument_refs_are_kept_from_submission(ray_client):
    """A ref the client drops right after passing it stays alive for the call
    it was passed to, even while the call waits for its actor (item 5)."""
    ray = ray_client

    @ray.remote
    class Slow:
        def __init__(self, delay):
            time.sleep(delay)

        def add(self, x, y=0):
            return x + y

    @ray.remote
    def g(x):
        time.sleep(0.5)
        return x

    @ray.remote
    class Holder:
        def __init__(self, x):
            self.x = x

        def get(self):
            return self.x

    a = Slow.remote(2)
    r1 = a.add.remote(g.remote(41), 1)
    r2 = a.add.remote(ray.put(10), y=ray.put(5))
    assert ray.get([r1, r2], timeout=60) == [42, 15]
    h = Holder.remote(g.remote("created"))
    assert ray.get(h.get.remote(), timeout=60) == "created"


def test_actor_outlives_its_last_handle_while_held(ray_client):
    """An actor whose last client handle is dropped lives on while calls to it
    are pending, while a task or actor it was passed to runs, and when a task
    created and returned it, as in Ray (item 1)."""
    ray = ray_client

    @ray.remote
    class Echo:
        def ping(self):
            return "pong"

        def slow(self, delay):
            time.sleep(delay)
            return "done"

    @ray.remote
    def after(delay):
        time.sleep(delay)
        return delay

    @ray.remote
    def use(handle, _):
        return ray.get(handle.ping.remote())

    @ray.remote
    class User:
        def __init__(self, handle, _):
            self.handle = handle

        def use(self):
            return ray.get(self.handle.ping.remote())

        def use_arg(self, handle, _):
            return ray.get(handle.ping.remote())

    @ray.remote
    def make():
        return Echo.remote()

    @ray.remote
    def make_many(n):
        return {"actors": [Echo.remote() for _ in range(n)]}

    # Calls in flight.
    a = Echo.remote()
    ray.get(a.ping.remote())
    pending = [a.slow.remote(1), a.ping.remote()]
    del a
    assert ray.get(pending, timeout=60) == ["done", "pong"]

    # A call to an actor that is not ready yet.
    a = Echo.remote()
    pending = a.ping.remote()
    del a
    assert ray.get(pending, timeout=60) == "pong"

    # Passed into a task that starts only after the handle was dropped.
    a = Echo.remote()
    t = use.remote(a, after.remote(1))
    del a
    assert ray.get(t, timeout=60) == "pong"

    # Passed into an actor's constructor and into a method call.
    a = Echo.remote()
    u = User.remote(a, after.remote(1))
    del a
    assert ray.get(u.use.remote(), timeout=60) == "pong"
    a = Echo.remote()
    r = u.use_arg.remote(a, after.remote(1))
    del a
    assert ray.get(r, timeout=60) == "pong"

    # Created inside a task and returned.
    h = ray.get(make.remote(), timeout=60)
    assert ray.get(h.ping.remote(), timeout=60) == "pong"
    many = ray.get(make_many.remote(2), timeout=60)["actors"]
    assert ray.get([x.ping.remote() for x in many], timeout=60) == ["pong", "pong"]


def test_actor_dies_once_nothing_holds_it(ray_client):
    """The holds above end: once the last handle is gone and nothing is
    pending, a non-detached actor is killed."""
    ray = ray_client

    @ray.remote
    class Echo:
        def pid(self):
            return os.getpid()

    @ray.remote
    def make():
        return Echo.remote()

    def dies(pid):
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.1)
        return False

    a = Echo.remote()
    pid = ray.get(a.pid.remote())
    del a
    assert dies(pid)
    h = ray.get(make.remote())
    pid = ray.get(h.pid.remote())
    del h
    assert dies(pid)


@pytest.mark.parametrize("how", ["exit_actor", "__ray_terminate__", "ray.kill"])
def test_graceful_actor_exit_runs_atexit_handlers(ray_client, tmp_path, how):
    """exit_actor() and __ray_terminate__ end an actor gracefully: its atexit
    handlers run, callers see it dead, it is not restarted; ray.kill does not
    run them (item 3)."""
    ray = ray_client
    path = str(tmp_path / "atexit.txt")

    @ray.remote(max_restarts=1)
    class Exiter:
        def __init__(self, path):
            import atexit

            def bye():
                with open(path, "w") as f:
                    f.write("bye")

            atexit.register(bye)

        def ready(self):
            return os.getpid()

        def exit(self):
            ray.actor.exit_actor()
            return "not reached"

    a = Exiter.remote(path)
    ray.get(a.ready.remote())
    if how == "exit_actor":
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(a.exit.remote(), timeout=60)
    elif how == "__ray_terminate__":
        ray.wait([a.__ray_terminate__.remote()], timeout=60)
    else:
        ray.kill(a)
    deadline = time.time() + 20
    while how != "ray.kill" and time.time() < deadline and not os.path.exists(path):
        time.sleep(0.1)
    assert os.path.exists(path) == (how != "ray.kill")
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(a.ready.remote(), timeout=60)


FOREIGN = """
import json, os
import ray
from ray.util.client.common import ClientActorHandle, ClientActorRef, ClientObjectRef

ray.init(os.environ["GRAY_ADDRESS"])
oid, aid = bytes.fromhex(os.environ["OID"]), bytes.fromhex(os.environ["AID"])
res = {}


def attempt(name, fn):
    try:
        fn()
        res[name] = "ok"
    except Exception as e:
        res[name] = "%s: %s" % (type(e).__name__, str(e)[:200])


@ray.remote
def ident(x):
    return x


attempt("get", lambda: ray.get(ClientObjectRef(oid), timeout=10))
attempt("future", lambda: ClientObjectRef(oid).future().result(timeout=10))
attempt("wait", lambda: ray.wait([ClientObjectRef(oid)], timeout=1))
attempt("arg", lambda: ray.get(ident.remote(ClientObjectRef(oid)), timeout=30))
attempt("nested", lambda: ray.get(ident.remote([ClientObjectRef(oid)]), timeout=30))
handle = ClientActorHandle(ClientActorRef(aid))
attempt("call", lambda: ray.get(handle.ping.remote(), timeout=30))
mine = ray.put("mine")
res["own"] = ray.get(ident.remote(mine), timeout=30)
print("RESULT" + json.dumps(res))
ray.shutdown()
"""


def test_sessions_cannot_use_each_others_objects_or_actors(ray_client, pool):
    """A session that names another session's object or actor by id is
    refused with the stock server's errors (item 2)."""
    import json

    ray = ray_client

    @ray.remote
    class Echo:
        def ping(self):
            return "pong"

    secret = ray.put("secret")
    actor = Echo.remote()
    assert ray.get(actor.ping.remote()) == "pong"
    out = run_client_script(
        pool, FOREIGN, timeout=120, env={"OID": secret.id.hex(), "AID": actor._actor_id.hex()}
    )
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.split("RESULT", 1)[1].splitlines()[0])
    assert res["get"].startswith("ValueError") and "not found for client" in res["get"], res
    assert res["future"].startswith("ValueError") and "not found for client" in res["future"], res
    assert res["wait"].startswith("Exception: Client Wait request failed"), res
    assert res["arg"] != "ok" and res["nested"] != "ok", res
    assert "doesn't have a handle" in res["call"], res
    assert res["own"] == "mine"
    # The owner still uses both.
    assert ray.get(secret) == "secret" and ray.get(actor.ping.remote()) == "pong"


def test_put_of_a_value_that_cannot_load_fails(ray_client):
    """ray.put raises what loading the value raises, as the stock server
    loads every put (item 6); the session keeps working."""
    ray = ray_client

    class DeserializationFailure:
        def __getstate__(self):
            return ""

        def __setstate__(self, state):
            raise ZeroDivisionError

    class Fine:
        def __init__(self):
            self.x = 7

    with pytest.raises(ZeroDivisionError):
        ray.put(DeserializationFailure())
    assert ray.get(ray.put(100)) == 100
    assert ray.get(ray.put(Fine())).x == 7
