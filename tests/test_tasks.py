"""Remote functions, arguments and returns through the stock Ray client."""

import pytest


def test_handshake_and_is_initialized(ray_client):
    ray = ray_client
    assert ray.is_initialized()
    from ray.util.client import ray as client_ray

    info = client_ray.get_context().client_worker.connection_info()
    assert info["ray_version"] == ray.__version__
    assert info["num_clients"] >= 1
    import sys

    assert info["python_version"].split(".")[:2] == [str(v) for v in sys.version_info[:2]]


def test_remote_function_args_kwargs(ray_client):
    ray = ray_client

    @ray.remote
    def f(a, b=2, *, c=3):
        return a + b * c

    assert ray.get(f.remote(1)) == 7
    assert ray.get(f.remote(1, 3, c=4)) == 13
    assert ray.get([f.remote(i) for i in range(5)]) == [i + 6 for i in range(5)]


def test_num_returns(ray_client):
    ray = ray_client

    @ray.remote(num_returns=3)
    def three():
        return 1, "two", [3]

    a, b, c = three.remote()
    assert ray.get([a, b, c]) == [1, "two", [3]]

    @ray.remote(num_returns=0)
    def nothing():
        return None

    assert nothing.remote() is None

    @ray.remote
    def pair():
        return (1, 2)

    x, y = pair.options(num_returns=2).remote()
    assert ray.get(y) == 2
    assert ray.get(pair.remote()) == (1, 2)


def test_options_name_and_resources(ray_client):
    ray = ray_client

    @ray.remote
    def g(x):
        return x * 2

    assert ray.get(g.options(num_cpus=0.5, name="renamed").remote(21)) == 42


def test_put_get_roundtrip(ray_client):
    ray = ray_client
    import numpy as np

    values = [0, "s", b"bytes", {"k": [1, 2]}, np.arange(10), None]
    refs = [ray.put(v) for v in values]
    got = ray.get(refs)
    assert got[:3] == values[:3]
    assert got[3] == values[3]
    assert (got[4] == values[4]).all()
    assert got[5] is None
    assert ray.get(refs[1]) == "s"


def test_ref_args_resolved_top_level_nested_stay_refs(ray_client):
    ray = ray_client

    @ray.remote
    def inspect(a, nested):
        return (type(a).__name__, [type(x).__name__ for x in nested], ray.get(nested[0]))

    r = ray.put(41)
    top, nested, value = ray.get(inspect.remote(r, [r]))
    assert top == "int"
    assert nested == ["ClientObjectRef"]
    assert value == 41


def test_task_output_as_argument(ray_client):
    ray = ray_client

    @ray.remote
    def inc(x):
        return x + 1

    ref = inc.remote(0)
    for _ in range(5):
        ref = inc.remote(ref)
    assert ray.get(ref) == 6


def test_nested_tasks(ray_client):
    ray = ray_client

    @ray.remote
    def leaf(x):
        return x * 10

    @ray.remote
    def parent(n):
        return sum(ray.get([leaf.remote(i) for i in range(n)]))

    assert ray.get(parent.remote(4)) == 60
    # More nested tasks than CPUs must not deadlock.
    assert ray.get([parent.remote(3) for _ in range(6)]) == [30] * 6


def test_recursive_function(ray_client):
    ray = ray_client

    @ray.remote
    def fact(n):
        if n <= 1:
            return 1
        return n * ray.get(fact.remote(n - 1))

    assert ray.get(fact.remote(5)) == 120


def test_put_inside_task_returned_ref(ray_client):
    ray = ray_client

    @ray.remote
    def make():
        return [ray.put("inner")]

    (inner,) = ray.get(make.remote())
    assert ray.get(inner) == "inner"


def test_get_timeout(ray_client):
    ray = ray_client
    import time

    @ray.remote
    def slow():
        time.sleep(5)
        return 1

    ref = slow.remote()
    with pytest.raises(ray.exceptions.GetTimeoutError):
        ray.get(ref, timeout=0.5)
    ray.cancel(ref, force=True)


def test_wait(ray_client):
    ray = ray_client
    import time

    @ray.remote
    def sleep(t):
        time.sleep(t)
        return t

    fast = [sleep.remote(0) for _ in range(3)]
    slow = sleep.remote(10)
    ray.get(fast)
    ready, rest = ray.wait([slow] + fast, num_returns=2, timeout=5)
    assert ready == fast[:2]
    assert rest == [slow, fast[2]]
    ready, rest = ray.wait([slow], timeout=0)
    assert ready == [] and rest == [slow]
    ray.cancel(slow, force=True)


def test_async_get(ray_client):
    ray = ray_client
    import asyncio

    @ray.remote
    def f():
        return "async"

    assert f.remote().future().result(timeout=30) == "async"

    async def main():
        return await f.remote()

    assert asyncio.run(main()) == "async"
