"""Placement groups for the gray worker runtime.

The stock client runs ray.util.placement_group's helpers as tasks on the
server (client_mode_wrap). In a gray worker they would recurse into client
mode or reach for Ray's core worker, so the runtime swaps in these versions,
which ask the raylet over the worker socket.
"""


def overrides(rt):
    """Implementations of ray.util.placement_group's client-mode helpers
    backed by the gray raylet."""
    if getattr(rt, "_override_table", None) is not None:
        return rt._override_table
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup

    mod = "ray.util.placement_group"

    def make(info):
        return PlacementGroup(PlacementGroupID(bytes.fromhex(info["id"])), bundle_cache=info["bundles"])

    def placement_group(bundles, strategy="PACK", name="", lifetime=None, _soft_target_node_id=None,
                        bundle_label_selector=None, topology_strategy=None):
        if strategy is None:
            strategy = "PACK"
        if not isinstance(bundles, list) or not bundles:
            raise ValueError("The placement group `bundles` argument must be a non-empty list of dicts.")
        for b in bundles:
            if not isinstance(b, dict) or not b or any(v < 0 for v in b.values()) or all(v == 0 for v in b.values()):
                raise ValueError("Bundles must be non-empty dicts of non-negative resources, got %r" % (b,))
        if strategy not in ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"):
            raise ValueError("Invalid placement group strategy %s" % strategy)
        if lifetime not in (None, "detached"):
            raise ValueError("Placement group `lifetime` argument must be either `None` or 'detached'")
        info = rt.rpc("pg_create", bundles=[{k: float(v) for k, v in b.items()} for b in bundles],
                      strategy=strategy, name=name or "", detached=lifetime == "detached")
        return make(info)

    def remove_placement_group(placement_group):
        rt.rpc("pg_remove", id=placement_group.id.hex())

    def get_placement_group(placement_group_name):
        if not placement_group_name:
            raise ValueError("Please supply a non-empty value to get_placement_group")
        info = rt.rpc("pg_get", name=placement_group_name)
        if info is None:
            raise ValueError("Failed to look up placement group with name: %s" % placement_group_name)
        return make(info)

    def placement_group_table(placement_group=None):
        table = rt.rpc("pg_table", id=placement_group.id.hex() if placement_group is not None else "")
        for entry in table.values():
            entry["bundles"] = {int(k): v for k, v in entry["bundles"].items()}
            entry["bundles_to_node_id"] = {int(k): v for k, v in entry["bundles_to_node_id"].items()}
        if placement_group is not None:
            return table.get(placement_group.id.hex(), {})
        return table

    def _call_placement_group_ready(pg_id, timeout_seconds):
        return bool(rt.rpc("pg_wait", id=pg_id.hex(), timeout=float(timeout_seconds)))

    def _get_bundle_cache(pg_id):
        entry = placement_group_table(PlacementGroup(pg_id))
        return list(entry.get("bundles", {}).values())

    import ray as _ray

    @_ray.remote(num_cpus=0)
    def _wait_ready(pg):
        # Runs in another worker: reach its runtime through __main__ so the
        # pickled function captures nothing.
        import sys as _sys

        _sys.modules["__main__"]._RUNTIME.rpc("pg_wait", id=pg.id.hex(), timeout=-1.0)
        return pg

    def _call_placement_group_ready_async(pg):
        return _wait_ready.remote(pg)

    rt._override_table = {
        (mod, "placement_group"): placement_group,
        (mod, "remove_placement_group"): remove_placement_group,
        (mod, "get_placement_group"): get_placement_group,
        (mod, "placement_group_table"): placement_group_table,
        (mod, "_call_placement_group_ready"): _call_placement_group_ready,
        (mod, "_call_placement_group_ready_async"): _call_placement_group_ready_async,
        (mod, "_get_bundle_cache"): _get_bundle_cache,
    }
    return rt._override_table
