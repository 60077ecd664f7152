"""Native Ray across nodes: a stock driver on the head, stock core workers on
a second node that joined the head's GCS (`gray native-node`, the trusted-LAN
join, as `ray start --address` does). Leases spill back to the node that has
the resources, objects move between the nodes' plasma stores. With
NATIVE_TARGET=ray the same tests run on stock Ray (a head and a second
`ray start --address` node)."""

import os

import pytest

from native_pool import SecondNode, make_target


@pytest.fixture(scope="module", params=["lan", "quic"])
def cluster(gray_bin, request):
    if request.param == "quic" and os.environ.get("NATIVE_TARGET") == "ray":
        pytest.skip("stock Ray has no QUIC providers: the lan run is its comparison")
    head = make_target(gray_bin, num_cpus=1, providers=request.param == "quic")
    node = SecondNode(gray_bin, head, request.param)
    head.check("""
        import ray, time
        ray.init(address=ADDRESS)
        deadline = time.time() + 60
        while ray.cluster_resources().get("side") != 3:
            assert time.time() < deadline, ray.cluster_resources()
            time.sleep(0.1)
        ray.shutdown()
    """)
    yield head
    node.stop()
    head.stop()


def test_two_nodes_and_their_resources(cluster):
    cluster.check("""
        import ray
        ray.init(address=ADDRESS)
        nodes = [n for n in ray.nodes() if n["Alive"]]
        assert len(nodes) == 2, nodes
        res = ray.cluster_resources()
        assert res["CPU"] == 3 and res["side"] == 3, res
    """)


def test_task_spills_to_the_node_with_the_resource(cluster):
    cluster.check("""
        import ray
        ray.init(address=ADDRESS)
        head = ray.get_runtime_context().get_node_id()

        @ray.remote(resources={"side": 1})
        def where():
            return ray.get_runtime_context().get_node_id()

        nodes = set(ray.get([where.remote() for _ in range(6)]))
        assert len(nodes) == 1 and head not in nodes, (head, nodes)
    """)


def test_cpu_tasks_use_both_nodes(cluster):
    cluster.check("""
        import ray
        ray.init(address=ADDRESS)

        @ray.remote
        class Gate:
            def __init__(self): self.n = 0
            def arrive(self): self.n += 1
            def count(self): return self.n

        gate = Gate.options(num_cpus=0).remote()

        @ray.remote(num_cpus=1)
        def hold(gate, want):
            import time
            ray.get(gate.arrive.remote())
            # Every task holds its CPU until all of them run at once: that
            # only happens if the 3 CPUs of both nodes are used.
            while ray.get(gate.count.remote()) < want:
                time.sleep(0.05)
            return ray.get_runtime_context().get_node_id()

        nodes = ray.get([hold.remote(gate, 3) for _ in range(3)], timeout=90)
        assert len(set(nodes)) == 2, nodes
    """)


def test_actor_on_the_other_node(cluster):
    cluster.check("""
        import ray
        ray.init(address=ADDRESS)
        head = ray.get_runtime_context().get_node_id()

        @ray.remote(resources={"side": 1})
        class Counter:
            def __init__(self): self.n = 0
            def inc(self):
                self.n += 1
                return self.n, ray.get_runtime_context().get_node_id()

        c = Counter.remote()
        assert [ray.get(c.inc.remote())[0] for _ in range(5)] == [1, 2, 3, 4, 5]
        assert ray.get(c.inc.remote())[1] != head
        named = Counter.options(name="far", namespace="mn", lifetime="detached").remote()
        ray.get(named.inc.remote())
        assert ray.get(ray.get_actor("far", namespace="mn").inc.remote())[0] == 2
        ray.kill(named)
    """)


def test_nested_tasks_from_the_other_node(cluster):
    cluster.check("""
        import ray
        ray.init(address=ADDRESS)
        head = ray.get_runtime_context().get_node_id()

        @ray.remote(num_cpus=1)
        def on_head():
            return ray.get_runtime_context().get_node_id()

        @ray.remote(resources={"side": 1}, num_cpus=0)
        def outer(head):
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
            there = ray.get_runtime_context().get_node_id()
            back = on_head.options(scheduling_strategy=NodeAffinitySchedulingStrategy(head, soft=False)).remote()
            return there, ray.get(back)

        there, back = ray.get(outer.remote(head), timeout=60)
        assert there != head and back == head, (there, back, head)
    """)


def test_large_objects_cross_nodes_both_ways(cluster):
    cluster.check("""
        import numpy as np, ray
        ray.init(address=ADDRESS)

        @ray.remote(resources={"side": 1})
        def make(n):
            return np.arange(n, dtype=np.int64)

        @ray.remote(resources={"side": 1})
        def total(a):
            return int(a.sum())

        n = 4 * 1024 * 1024  # 32 MiB: in plasma, not inlined
        out = ray.get(make.remote(n), timeout=60)        # there -> here
        assert out.shape == (n,) and int(out[-1]) == n - 1
        ref = ray.put(np.ones(n, dtype=np.int64))
        assert ray.get(total.remote(ref), timeout=60) == n   # here -> there
        # And a plasma object made there, used there by another task.
        assert ray.get(total.remote(make.remote(n)), timeout=60) == n * (n - 1) // 2
    """)


def test_wait_on_remote_objects(cluster):
    cluster.check("""
        import numpy as np, ray
        ray.init(address=ADDRESS)

        @ray.remote(resources={"side": 1})
        def make(i):
            return np.full(1024 * 1024, i, dtype=np.int64)

        refs = [make.remote(i) for i in range(4)]
        ready, rest = ray.wait(refs, num_returns=4, timeout=60)
        assert len(ready) == 4 and not rest
        assert [int(ray.get(r)[0]) for r in refs] == [0, 1, 2, 3]
    """)


def test_provider_lost_fails_its_actor_and_the_pool_goes_on(gray_bin):
    """kill -9 of a provider hosting native work: its actor's calls raise
    RayActorError (ActorDiedError), its node is marked dead, and new work
    runs on the head."""
    if os.environ.get("NATIVE_TARGET") == "ray":
        pytest.skip("QUIC providers are gray's")
    head = make_target(gray_bin, num_cpus=1, providers=True)
    node = SecondNode(gray_bin, head, "quic")
    try:
        head.check("""
            import os, signal, time, ray
            ray.init(address=ADDRESS)
            deadline = time.time() + 60
            while ray.cluster_resources().get("side") != 3:
                assert time.time() < deadline, ray.cluster_resources()
                time.sleep(0.1)

            @ray.remote(resources={"side": 1}, max_restarts=0)
            class Far:
                def ping(self):
                    return ray.get_runtime_context().get_node_id()

            far = Far.remote()
            there = ray.get(far.ping.remote(), timeout=60)
            os.kill(PROVIDER_PID, signal.SIGKILL)
            try:
                for _ in range(600):
                    ray.get(far.ping.remote(), timeout=60)
                    time.sleep(0.1)
                raise AssertionError("the actor kept answering")
            except ray.exceptions.RayActorError as e:
                print("actor error:", type(e).__name__)
            deadline = time.time() + 90
            while any(n["NodeID"] == there and n["Alive"] for n in ray.nodes()):
                assert time.time() < deadline, "the provider's node is still alive"
                time.sleep(0.2)

            @ray.remote
            def here():
                return ray.get_runtime_context().get_node_id()

            assert ray.get(here.remote(), timeout=60) != there
        """.replace("PROVIDER_PID", str(node.proc.pid)), timeout=240)
    finally:
        node.stop()
        head.stop()
