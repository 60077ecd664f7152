"""A pool over emulated WAN links: a head (region r0) and three providers in
regions r1/r2/r3, each joined through its own graywan link (UDP proxy in
front of the head's QUIC node port, TCP proxy in front of its Ray Client port
for the provider's workers; gossip sent to the provider through a proxy pair
it advertises): r1 20 ms RTT, r2 80 ms, r3 150 ms, all with 1%
loss each way. Driven by the stock Ray client, which talks to the head
directly (the driver sits in r0).

One cluster for the module; the tests run in file order and the last one
kills a provider."""

import hashlib
import os
import time

import pytest

from conftest import Pool, Provider, WanLinks, connected, node_of, wait_for

REGION = "ray.io/availability-region"
DEAD_AFTER = 30
LINKS = {
    "r1": "rtt=20ms,jitter=1ms,loss=0.01,bandwidth=200mbit,seed=1",
    "r2": "rtt=80ms,jitter=1ms,loss=0.01,bandwidth=200mbit,seed=2",
    "r3": "rtt=150ms,jitter=1ms,loss=0.01,bandwidth=200mbit,seed=3",
}


@pytest.fixture(scope="module")
def wan(gray_bin, graywan_bin):
    head = Pool(gray_bin, num_cpus=1, extra=[
        "--region", "r0", "--dead-after", "%ds" % DEAD_AFTER, "--suspect-after", "3s"])
    links, providers = None, {}
    try:
        links = WanLinks(graywan_bin, head, ["name=%s,%s" % (n, s) for n, s in LINKS.items()])
        for name in LINKS:
            providers[name] = Provider(gray_bin, head, num_cpus=2, region=name, **links.provider_args(name))
        yield head, links, providers
    finally:
        for p in providers.values():
            p.stop()
        if links:
            links.stop()
        head.stop()


@pytest.fixture
def ray(wan):
    yield from connected(wan[0])


def in_region(name):
    return {"label_selector": {REGION: name}}


def read_lines(path):
    try:
        with open(path) as f:
            return f.read().split()
    except FileNotFoundError:
        return []


def test_pool_joined_through_links(ray, wan):
    _, links, providers = wan
    nodes = [n for n in ray.nodes() if n["Alive"]]
    assert sorted(n["Labels"][REGION] for n in nodes) == ["r0", "r1", "r2", "r3"]
    for p in providers.values():
        node_of(ray, p)
    stats = links.stats()
    for name in LINKS:
        udp = stats[name]["udp"]
        assert udp["sessions"] >= 1, stats[name]  # the provider's QUIC connection(s)
        assert udp["up"]["forwarded"] > 0 and udp["down"]["forwarded"] > 0
    # The prestarted workers' Ray Client connections come through the TCP proxies.
    wait_for(lambda: all(s["tcp"]["up"]["forwarded_bytes"] > 0 for s in links.stats().values()), timeout=60)
    # The head's gossip probes of each provider cross its link too.
    wait_for(lambda: all(s["gossip_udp"]["up"]["forwarded"] > 0 for s in links.stats().values()), timeout=60)


def test_pinned_tasks_objects_and_actors(ray, wan):
    """Tasks pinned to each region by label; an 8 MiB argument reaches each
    region intact and a 4 MiB result comes back intact; an actor in r3
    answers ordered calls. The transfers run concurrently: over 1% loss a
    single QUIC connection moves well under 1 MiB/s (see bench/wan.py)."""
    _, _, providers = wan

    @ray.remote
    def square(x):
        return x * x, ray.get_runtime_context().get_node_id()

    @ray.remote
    def digest(blob):
        return hashlib.sha256(blob).hexdigest(), len(blob), ray.get_runtime_context().get_node_id()

    @ray.remote
    def produce(seed, n):
        block = hashlib.sha256(seed.encode()).digest()
        return (block * (n // len(block) + 1))[:n]

    @ray.remote
    class Counter:
        def __init__(self):
            self.n = 0

        def add(self, k):
            self.n += k
            return self.n, ray.get_runtime_context().get_node_id()

    names = sorted(providers)
    nodes = {n: node_of(ray, providers[n]) for n in names}
    t0 = time.time()
    assert ray.get([square.options(**in_region(n)).remote(i) for i, n in enumerate(names)], timeout=60) == [
        (i * i, nodes[n]) for i, n in enumerate(names)
    ]
    print("pinned tasks: %.1fs" % (time.time() - t0))

    t0 = time.time()
    arg = os.urandom(8 << 20)
    ref = ray.put(arg)
    digests = [digest.options(**in_region(n)).remote(ref) for n in names]
    blobs = [produce.options(**in_region(n)).remote(n, 4 << 20) for n in names]
    counter = Counter.options(**in_region("r3")).remote()
    calls = [counter.add.remote(1) for _ in range(20)]

    out = ray.get(calls, timeout=150)
    assert [k for k, _ in out] == list(range(1, 21))
    assert {w for _, w in out} == {nodes["r3"]}
    print("actor in r3, 20 ordered calls: %.1fs" % (time.time() - t0))
    want = hashlib.sha256(arg).hexdigest()
    assert ray.get(digests, timeout=150) == [(want, 8 << 20, nodes[n]) for n in names]
    print("8 MiB to each region: %.1fs" % (time.time() - t0))
    for n, value in zip(names, ray.get(blobs, timeout=150)):
        assert len(value) == 4 << 20
        assert hashlib.sha256(value).digest() == hashlib.sha256(expected_blob(n, 4 << 20)).digest(), n
    print("and 4 MiB back from each: %.1fs" % (time.time() - t0))
    ray.kill(counter)


def expected_blob(seed, n):
    block = hashlib.sha256(seed.encode()).digest()
    return (block * (n // len(block) + 1))[:n]


def test_partition_r2_suspect_not_dead_nothing_lost(ray, wan, tmp_path):
    """Cut r2's link (UDP and TCP) for 20 s while it runs 5-second tasks
    with max_retries=0: r2 may turn SUSPECT but never dead, every task
    finishes exactly once with the right result, and r2 gets work again
    after the heal."""
    _, links, providers = wan
    r2 = node_of(ray, providers["r2"])
    log = str(tmp_path / "runs")  # shared with the sandboxed workers

    @ray.remote(max_retries=0)
    def slow(i, path):
        with open(path, "a") as f:
            f.write("start-%d\n" % i)
        time.sleep(5)
        with open(path, "a") as f:
            f.write("end-%d\n" % i)
        return i * 10, ray.get_runtime_context().get_node_id()

    refs = [slow.options(**in_region("r2")).remote(i, log) for i in range(3)]
    # Both of r2's CPUs are busy (the third task waits for one) before the cut.
    wait_for(lambda: sum(x.startswith("start-") for x in read_lines(log)) >= 2, timeout=60)

    links.partition("r2")
    states = []
    t0 = time.time()
    try:
        while time.time() - t0 < 20:
            node = [n for n in ray.nodes() if n["NodeID"] == r2][0]
            states.append(node["State"])
            assert node["Alive"], "r2 declared dead %.1fs into the partition: %s" % (time.time() - t0, node)
            time.sleep(1)
    finally:
        stats = links.heal("r2")
        healed = time.time()
    assert stats["udp"]["up"]["dropped_partition"] > 0, stats  # the cut was real
    assert stats["gossip_udp"]["up"]["dropped_partition"] > 0, stats  # gossip included
    print("r2 states during the partition:", states)

    results = ray.get(refs, timeout=90)
    assert results == [(i * 10, r2) for i in range(3)]
    print("results %.1fs after the heal" % (time.time() - healed))
    runs = read_lines(log)
    assert sorted(runs) == sorted(["start-%d" % i for i in range(3)] + ["end-%d" % i for i in range(3)]), runs
    for _ in range(5):  # and it stays alive after the heal
        assert [n["Alive"] for n in ray.nodes() if n["NodeID"] == r2] == [True]
        time.sleep(0.2)
    wait_for(lambda: [n["State"] for n in ray.nodes() if n["NodeID"] == r2] == ["ALIVE"], timeout=30)
    print("r2 ALIVE again %.1fs after the heal" % (time.time() - healed))

    @ray.remote
    def where():
        return ray.get_runtime_context().get_node_id()

    assert ray.get(where.options(**in_region("r2")).remote(), timeout=60) == r2


def test_killed_provider_work_recovered(ray, wan, tmp_path):
    """kill -9 r1's provider while it runs tasks with max_retries=2: every
    result arrives, the lost ones rerun elsewhere once r1 is declared dead."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    _, _, providers = wan
    victim = providers["r1"]
    r1 = node_of(ray, victim)
    log = str(tmp_path / "runs")  # shared with the sandboxed workers

    @ray.remote(max_retries=2)
    def work(i, path):
        node = ray.get_runtime_context().get_node_id()
        with open(path, "a") as f:
            f.write("%d@%s\n" % (i, node))
        time.sleep(3)
        return i + 100, node

    soft = NodeAffinitySchedulingStrategy(node_id=r1, soft=True)
    refs = [work.options(scheduling_strategy=soft).remote(i, log) for i in range(4)]
    wait_for(lambda: sum(x.endswith("@" + r1) for x in read_lines(log)) >= 2, timeout=60)
    victim.kill()
    killed = time.time()

    results = ray.get(refs, timeout=DEAD_AFTER + 90)
    assert sorted(i for i, _ in results) == [100, 101, 102, 103]
    rerun = [n for _, n in results if n != r1]
    assert rerun, "no task was recovered on another node: %s" % results
    print("recovered %d tasks %.1fs after the kill" % (len(rerun), time.time() - killed))
    wait_for(lambda: [n["Alive"] for n in ray.nodes() if n["NodeID"] == r1] == [False], timeout=30)
