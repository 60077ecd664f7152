"""kill -9 of the head with a provider joined: the restarted head (same
state, same ports) recognises the provider when it reconnects and
re-attaches what it still runs. A detached named actor placed on the
provider keeps its in-memory state (a new ray:// client finds it by name
and its counter goes on from 3 to 4), and a detached placement group comes
back with its bundle reserved on the same node, and runs tasks; with the
default bbolt store and with Redis."""

import os
import time

import pytest

from conftest import Provider, free_port, wait_for
from test_head_restart import Head, redis_url, values  # noqa: F401 (redis_url is a fixture)


class FailoverHead(Head):
    """A Head whose provider port is fixed too, so that providers find the
    restarted head where the old one was."""

    def __init__(self, gray_bin, storage=None):
        super().__init__(gray_bin, storage)
        self.node_port = free_port()
        i = self.cmd.index("--node-port")
        self.cmd[i + 1] = str(self.node_port)
        # A short grace period keeps a test that fails quick; reconnecting
        # providers come back well within it.
        self.cmd += ["--dead-after", "60s"]

    def start(self):
        super().start()
        self.node_address = "127.0.0.1:%d" % self.node_port
        with open(os.path.join(self.state_dir, "join-token")) as f:
            self.token = f.read().strip()

    def status(self):
        import subprocess

        r = subprocess.run([self.cmd[0], "status", "--address", self.client_address.replace("ray://", "")],
                           capture_output=True, text=True, timeout=30, env=self.env)
        return r.stdout + r.stderr


BEFORE = """
import ray
from ray.util.placement_group import placement_group
ray.init(CLIENT)

@ray.remote(resources={"ftnode": 1})
class Counter:
    def __init__(self):
        self.n = 0
    def incr(self):
        self.n += 1
        return self.n
    def node(self):
        return ray.get_runtime_context().get_node_id()

c = Counter.options(name="ctr", namespace="ft", lifetime="detached", max_restarts=0).remote()
for _ in range(3):
    n = ray.get(c.incr.remote())
print("count=%d" % n)
print("actor_node=" + ray.get(c.node.remote()))
pg = placement_group([{"ftnode": 1}], name="ftpg", lifetime="detached")
assert pg.wait(60)
print("pg=" + pg.id.hex())
print("pg_node=" + ray.util.placement_group_table(pg)["bundles_to_node_id"][0])
"""

AFTER = """
import ray
from ray.util.placement_group import get_placement_group, placement_group_table
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
ray.init(CLIENT)
c = ray.get_actor("ctr", namespace="ft")
print("count=%d" % ray.get(c.incr.remote()))
print("actor_node=" + ray.get(c.node.remote()))
pg = get_placement_group("ftpg")
entry = placement_group_table(pg)
print("pg=" + entry["placement_group_id"])
print("pg_state=" + entry["state"])
print("pg_node=" + entry["bundles_to_node_id"][0])

@ray.remote(num_cpus=0, resources={"ftnode": 1})
def where():
    return ray.get_runtime_context().get_node_id()

print("task_node=" + ray.get(where.options(
    scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=0)).remote(), timeout=120))
"""


def check_failover(head, capsys):
    head.start()
    prov = Provider(head.cmd[0], head, num_cpus=2, extra=["--resources", '{"ftnode": 2}'])
    try:
        before = values(head.run(BEFORE))
        assert before["count"] == "3", before
        assert before["actor_node"].startswith(prov.node_prefix), (before, prov.node_prefix)
        assert before["pg_node"] == before["actor_node"], before

        t0 = time.monotonic()
        head.kill9()
        head.start()
        up = time.monotonic() - t0
        # The provider reconnects by itself: the restarted head logs it.
        wait_for(lambda: "provider reconnected after a head restart" in head.logs(), timeout=60, every=0.05)
        reconnected = time.monotonic() - t0

        after = values(head.run(AFTER))
        called = time.monotonic() - t0
        assert after["count"] == "4", (after, head.logs()[-4000:])
        assert after["actor_node"] == before["actor_node"], (before, after)
        assert after["pg"] == before["pg"], (before, after)
        assert after["pg_state"] == "CREATED", after
        assert after["pg_node"] == before["pg_node"], (before, after)
        assert after["task_node"] == before["pg_node"], (before, after)
        with capsys.disabled():
            print("\n[%s] kill -9 -> head serving %.2fs; -> provider reconnected %.2fs; "
                  "-> first actor call done (new client) %.2fs" % (head.storage, up, reconnected, called))
    finally:
        prov.stop()


def test_failover_reattaches_provider_actor_and_pg_bolt(gray_bin, capsys):
    head = FailoverHead(gray_bin)
    try:
        check_failover(head, capsys)
    finally:
        head.stop()


def test_failover_reattaches_provider_actor_and_pg_redis(gray_bin, capsys, redis_url):  # noqa: F811
    head = FailoverHead(gray_bin, storage=redis_url)
    try:
        check_failover(head, capsys)
    finally:
        head.stop()
