"""kill -9 of the head with a provider joined: the restarted head (same
state, same ports) recognises the provider when it reconnects and
re-attaches what it still runs. A detached named actor placed on the
provider keeps its in-memory state (a new ray:// client finds it by name
and its counter goes on from 3 to 4), and a detached placement group comes
back with its bundle reserved on the same node, and runs tasks; with the
default bbolt store and with Redis."""

import os
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import Provider, stable_port, wait_for
from test_head_restart import Head, redis_url, values  # noqa: F401 (redis_url is a fixture)


class FailoverHead(Head):
    """A Head whose provider port is fixed too, so that providers find the
    restarted head where the old one was."""

    def __init__(self, gray_bin, storage=None, dead_after="60s", extra=()):
        super().__init__(gray_bin, storage)
        self.node_port = stable_port()
        i = self.cmd.index("--node-port")
        self.cmd[i + 1] = str(self.node_port)
        # The grace period a provider known from before the restart has to
        # reconnect.
        self.cmd += ["--dead-after", dead_after, *extra]

    def start(self):
        super().start()
        self.node_address = "127.0.0.1:%d" % self.node_port
        with open(os.path.join(self.state_dir, "join-token")) as f:
            self.token = f.read().strip()

    def client(self, source, env=None):
        """Starts a ray:// driver in the background (it may outlive the
        head it talks to); returns the process. env: variables added to
        the head's environment (a token, say)."""
        prog = "CLIENT = %r\n" % self.client_address + textwrap.dedent(source)
        return subprocess.Popen([sys.executable, "-c", prog], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=dict(self.env, **(env or {})))


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


# A task on the provider that is running when the head dies: it records
# each start in a file the test shares with the provider's workers, and
# finishes once the test lets it.
RUNNING = """
import os, time, ray
ray.init(CLIENT)

@ray.remote(num_cpus=0, resources={"ftnode": 1})
class Owned:  # not detached: it dies with this driver's session
    def ping(self):
        return "pong"

owned = Owned.remote()
assert ray.get(owned.ping.remote()) == "pong"

@ray.remote(num_cpus=0, resources={"ftnode": 1}, max_retries=3)
def slow(path):
    with open(os.path.join(path, "runs"), "a") as f:
        f.write("start\\n")
    while not os.path.exists(os.path.join(path, "go")):
        time.sleep(0.05)
    with open(os.path.join(path, "runs"), "a") as f:
        f.write("end\\n")
    return 1

print(ray.get(slow.remote(SHARED)))
"""

AFTER_RUNNING = """
import ray
ray.init(CLIENT)

@ray.remote(num_cpus=0, resources={"ftnode": 1})
def ok():
    return "fine"

print("after=" + ray.get(ok.remote(), timeout=120))
"""


def lines(path):
    try:
        with open(path) as f:
            return f.read().split()
    except FileNotFoundError:
        return []


def test_task_running_across_restart_finishes_once(gray_bin, tmp_path):
    """A task running on a provider when the head is killed keeps running
    there and finishes once; the restarted head does not run it again (its
    caller's session is gone, so its result is dropped) and the provider
    goes on taking work. The driver's non-detached actor there is killed."""
    head = FailoverHead(gray_bin)
    try:
        head.start()
        prov = Provider(head.cmd[0], head, num_cpus=2, extra=["--resources", '{"ftnode": 2}'])
        shared = tmp_path / "shared"
        shared.mkdir()
        runs = str(shared / "runs")
        driver = head.client("SHARED = %r\n" % str(shared) + RUNNING)
        try:
            wait_for(lambda: lines(runs) == ["start"], timeout=120, every=0.05)
            head.kill9()
            head.start()
            wait_for(lambda: "provider reconnected after a head restart" in head.logs(), timeout=60, every=0.05)
            (shared / "go").write_text("")
            wait_for(lambda: lines(runs) == ["start", "end"], timeout=60, every=0.05)
            assert values(head.run(AFTER_RUNNING))["after"] == "fine"
            # Still once: nothing ran it again meanwhile.
            assert lines(runs) == ["start", "end"], lines(runs)
            assert "running_tasks=1" in head.logs(), head.logs()[-3000:]
            # The driver's own actor is killed: its session is gone.
            wait_for(lambda: "killing an actor the restarted head does not know" in head.logs(), timeout=60)
            wait_for(lambda: "live_actors=1" in head.logs(), timeout=60)
        finally:
            driver.kill()
            driver.wait()
            prov.stop()
    finally:
        head.stop()


# Detached actors on the head itself and on a provider that will not come
# back; one of the head's may restart.
LOST_BEFORE = """
import ray
ray.init(CLIENT)

@ray.remote
class Counter:
    def __init__(self):
        self.n = 0
    def incr(self):
        self.n += 1
        return self.n

opts = dict(namespace="ft", lifetime="detached")
a1 = Counter.options(name="head1", resources={"headres": 1}, max_restarts=1, **opts).remote()
a2 = Counter.options(name="head0", resources={"headres": 1}, max_restarts=0, **opts).remote()
p1 = Counter.options(name="prov0", resources={"ftnode": 1}, max_restarts=0, **opts).remote()
for a in (a1, a2, p1):
    for _ in range(3):
        n = ray.get(a.incr.remote())
print("counts=%d" % n)
"""

LOST_AFTER = """
import ray
ray.init(CLIENT)
# Known, waiting for its provider to come back within the grace period:
# a call waits, then fails as Ray fails calls to a dead actor. (On a slow
# machine the grace period may be over before this client is up: then the
# actor is dead already and its name free.)
try:
    p1 = ray.get_actor("prov0", namespace="ft")
    try:
        ray.get(p1.incr.remote(), timeout=120)
        print("prov0=answered")
    except ray.exceptions.RayActorError as e:
        print("prov0=" + type(e).__name__)
except ValueError:
    print("prov0=ActorDiedError")
try:
    ray.get_actor("prov0", namespace="ft")
    print("prov0_after=found")
except ValueError:
    print("prov0_after=gone")
a1 = ray.get_actor("head1", namespace="ft")
print("head1=%d" % ray.get(a1.incr.remote(), timeout=120))
try:
    ray.get_actor("head0", namespace="ft")
    print("head0=found")
except ValueError:
    print("head0=gone")
"""


def test_actors_of_the_head_and_of_a_provider_that_does_not_return(gray_bin):
    """The head's own detached actors die with its process: one with
    restarts left comes back (fresh state), one without is gone. An actor
    on a provider that does not reconnect within --dead-after is handled
    as on any dead node: calls made meanwhile fail with ActorDiedError."""
    head = FailoverHead(gray_bin, dead_after="10s", extra=["--resources", '{"headres": 2}'])
    try:
        head.start()
        prov = Provider(head.cmd[0], head, num_cpus=2, extra=["--resources", '{"ftnode": 2}'])
        try:
            assert values(head.run(LOST_BEFORE))["counts"] == "3"
            head.kill9()
            prov.kill()
            head.start()
            after = values(head.run(LOST_AFTER))
        finally:
            prov.stop()
        assert after == {"head1": "1", "head0": "gone", "prov0": "ActorDiedError", "prov0_after": "gone"}, (
            after, head.logs()[-4000:])
        assert "node dead" in head.logs()
    finally:
        head.stop()
