"""Placement groups from the stock client (helpers run server-side)."""

import pytest


def test_placement_group_lifecycle(ray_client):
    ray = ray_client
    from ray.util.placement_group import (
        get_placement_group,
        placement_group,
        placement_group_table,
        remove_placement_group,
    )
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    before = ray.available_resources()["CPU"]
    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="PACK", name="test_pg")
    assert ray.get(pg.ready(), timeout=60) == pg
    assert pg.wait(10)
    assert ray.available_resources()["CPU"] == before - 2
    assert pg.bundle_specs == [{"CPU": 1}, {"CPU": 1}]
    entry = placement_group_table(pg)
    assert entry["state"] == "CREATED" and entry["strategy"] == "PACK"
    assert get_placement_group("test_pg") == pg

    @ray.remote(num_cpus=1)
    def where():
        return "ran"

    assert ray.get(where.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 1)).remote()) == "ran"

    @ray.remote(num_cpus=1)
    class InGroup:
        def ping(self):
            return "pong"

    a = InGroup.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 0)).remote()
    assert ray.get(a.ping.remote()) == "pong"

    remove_placement_group(pg)
    assert placement_group_table(pg)["state"] == "REMOVED"
    with pytest.raises(ValueError):
        get_placement_group("test_pg")


def test_infeasible_placement_group_stays_pending(ray_client):
    ray = ray_client
    from ray.util.placement_group import placement_group, remove_placement_group

    pg = placement_group([{"CPU": 1000}])
    assert pg.wait(1) is False
    ready, _ = ray.wait([pg.ready()], timeout=1)
    assert ready == []
    remove_placement_group(pg)


def test_bad_bundles_are_rejected(ray_client):
    from ray.util.placement_group import placement_group

    with pytest.raises(ValueError):
        placement_group([], strategy="PACK")
    with pytest.raises(ValueError):
        placement_group([{"CPU": 1}], strategy="NOT_A_STRATEGY")
