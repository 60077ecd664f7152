"""Placement groups across nodes: a head without CPUs and three providers
(separate processes joined over QUIC), driven by the stock Ray client."""

import time

import pytest

from conftest import Pool, Provider, connected, wait_for


@pytest.fixture(scope="module")
def pg_cluster(gray_bin):
    # Liveness tuned for the last test (a provider dies) yet lenient to a
    # loaded machine.
    head = Pool(gray_bin, num_cpus=0, extra=["--dead-after", "10s", "--suspect-after", "4s"])
    providers = []
    try:
        for i in range(3):
            providers.append(Provider(gray_bin, head, num_cpus=2, region="r%d" % (i + 1)))
        yield head, providers
    finally:
        for p in providers:
            p.stop()
        head.stop()


@pytest.fixture
def ray(pg_cluster):
    yield from connected(pg_cluster[0])


def provider_ids(ray, providers):
    out = set()
    for p in providers:
        ids = [n["NodeID"] for n in ray.nodes() if n["NodeID"].startswith(p.node_prefix) and n["Alive"]]
        assert len(ids) == 1, ray.nodes()
        out.add(ids[0])
    return out


def full(ray):
    return ray.available_resources().get("CPU") == ray.cluster_resources()["CPU"]


def test_strict_spread_puts_bundles_on_distinct_providers(ray, pg_cluster):
    from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    _, providers = pg_cluster
    wait_for(lambda: full(ray))
    pg = placement_group([{"CPU": 1}] * 3, strategy="STRICT_SPREAD")
    assert ray.get(pg.ready(), timeout=60) == pg
    entry = placement_group_table(pg)
    assert entry["state"] == "CREATED"
    nodes = entry["bundles_to_node_id"]
    assert sorted(nodes) == [0, 1, 2]
    assert set(nodes.values()) == provider_ids(ray, providers)
    wait_for(lambda: ray.available_resources().get("CPU") == 3)

    @ray.remote(num_cpus=1)
    def where():
        return ray.get_runtime_context().get_node_id()

    for i in range(3):
        st = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i)
        assert ray.get(where.options(scheduling_strategy=st).remote(), timeout=60) == nodes[i]

    @ray.remote(num_cpus=1)
    class InBundle:
        def node(self):
            return ray.get_runtime_context().get_node_id()

    a = InBundle.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 2)).remote()
    assert ray.get(a.node.remote(), timeout=60) == nodes[2]

    remove_placement_group(pg)
    assert placement_group_table(pg)["state"] == "REMOVED"
    # Like Ray, the group's actors die with it.
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(a.node.remote(), timeout=60)
    wait_for(lambda: full(ray))


def test_strict_pack_puts_bundles_on_one_provider(ray, pg_cluster):
    from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    _, providers = pg_cluster
    wait_for(lambda: full(ray))
    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_PACK")
    assert pg.wait(60)
    nodes = placement_group_table(pg)["bundles_to_node_id"]
    assert len(set(nodes.values())) == 1
    assert nodes[0] in provider_ids(ray, providers)

    @ray.remote(num_cpus=1)
    def where():
        return ray.get_runtime_context().get_node_id()

    # Any bundle (index -1) runs on the group's node.
    got = ray.get(where.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg)).remote(), timeout=60)
    assert got == nodes[0]
    remove_placement_group(pg)
    wait_for(lambda: full(ray))


def test_infeasible_strict_spread_stays_pending(ray, pg_cluster):
    from ray.exceptions import GetTimeoutError
    from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group

    wait_for(lambda: full(ray))
    pg = placement_group([{"CPU": 1}] * 4, strategy="STRICT_SPREAD")
    with pytest.raises(GetTimeoutError):
        ray.get(pg.ready(), timeout=2)
    entry = placement_group_table(pg)
    assert entry["state"] == "PENDING"
    assert entry["bundles_to_node_id"] == {}
    assert full(ray)
    remove_placement_group(pg)
    assert placement_group_table(pg)["state"] == "REMOVED"


def test_remove_frees_every_provider(ray, pg_cluster):
    from ray.util.placement_group import placement_group, remove_placement_group

    wait_for(lambda: full(ray))
    total = ray.cluster_resources()["CPU"]
    pg = placement_group([{"CPU": 2}] * 3, strategy="SPREAD")
    assert pg.wait(60)
    wait_for(lambda: ray.available_resources().get("CPU", 0) == total - 6)
    remove_placement_group(pg)
    wait_for(lambda: full(ray))
    assert ray.available_resources()["CPU"] == total


def test_finished_job_releases_its_groups(pg_cluster):
    import ray

    head, _ = pg_cluster
    ray.init("ray://" + head.address)
    try:
        from ray.util.placement_group import placement_group

        wait_for(lambda: full(ray))
        total = ray.cluster_resources()["CPU"]
        pg = placement_group([{"CPU": 1}] * 3, strategy="SPREAD")
        assert pg.wait(60)
        detached = placement_group([{"CPU": 1}], lifetime="detached", name="keeps")
        assert detached.wait(60)
    finally:
        ray.shutdown()
    ray.init("ray://" + head.address)
    try:
        from ray.util.placement_group import get_placement_group, remove_placement_group

        # The job's group went with it; the detached one stays.
        wait_for(lambda: ray.available_resources().get("CPU") == total - 1)
        remove_placement_group(get_placement_group("keeps"))
        wait_for(lambda: full(ray))
    finally:
        ray.shutdown()


def test_dead_provider_bundle_is_placed_again(ray, gray_bin, pg_cluster):
    """Runs last: it kills a provider (and starts a replacement)."""
    from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group

    head, providers = pg_cluster
    wait_for(lambda: full(ray))
    pg = placement_group([{"CPU": 1}] * 2, strategy="STRICT_SPREAD")
    assert pg.wait(60)
    before = placement_group_table(pg)["bundles_to_node_id"]
    victim = next(p for p in providers if before[0].startswith(p.node_prefix))
    victim.kill()
    providers.remove(victim)

    def moved():
        entry = placement_group_table(pg)
        nodes = entry["bundles_to_node_id"]
        return entry["state"] == "CREATED" and 0 in nodes and nodes[0] != before[0]

    wait_for(moved, timeout=90)
    nodes = placement_group_table(pg)["bundles_to_node_id"]
    assert nodes[1] == before[1] and nodes[0] != nodes[1]
    remove_placement_group(pg)
    providers.append(Provider(gray_bin, head, num_cpus=2, region="r4"))
