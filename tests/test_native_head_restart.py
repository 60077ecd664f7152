"""kill -9 of the head with a `--native` provider joined: the restarted head
(same state dir, same ports) loads the native GCS's actor, job and node
tables, the provider's raylet is recognised as the same node, and a
detached named native actor living there keeps running: a new stock native
driver finds it by name and calls it with its in-memory state intact. An
actor that lived on the head's own native node (which died with the head)
is reported dead, not hung."""

import time

from conftest import wait_for
from native_pool import SecondNode
from test_head_failover import FailoverHead
from test_head_restart import values

BEFORE = """
import ray
ray.init(address=ADDRESS)

@ray.remote(resources={"side": 1}, num_cpus=0)
class Counter:
    def __init__(self):
        self.n = 0
    def incr(self):
        self.n += 1
        return self.n
    def node(self):
        return ray.get_runtime_context().get_node_id()

@ray.remote(num_cpus=0, max_restarts=0)
class OnHead:
    def ping(self):
        return "pong"

c = Counter.options(name="ftc", namespace="ft", lifetime="detached").remote()
for _ in range(3):
    n = ray.get(c.incr.remote())
print("count=%d" % n)
print("actor_node=" + ray.get(c.node.remote()))
h = OnHead.options(name="fth", namespace="ft", lifetime="detached",
                   resources={"node:__internal_head__": 0.01}).remote()
print("head_actor=" + ray.get(h.ping.remote()))
"""

NODES = """
import ray
ray.init(address=ADDRESS)
alive = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
print("alive=" + ",".join(alive))
"""

AFTER = """
import ray
ray.init(address=ADDRESS)
c = ray.get_actor("ftc", namespace="ft")
print("count=%d" % ray.get(c.incr.remote(), timeout=120))
print("actor_node=" + ray.get(c.node.remote(), timeout=60))

@ray.remote(resources={"side": 1}, num_cpus=0)
def where():
    return ray.get_runtime_context().get_node_id()

print("task_node=" + ray.get(where.remote(), timeout=120))
"""

HEAD_ACTOR = """
import ray
ray.init(address=ADDRESS)
try:
    h = ray.get_actor("fth", namespace="ft")
except ValueError:
    print("head_actor=gone")
else:
    try:
        ray.get(h.ping.remote(), timeout=120)
        print("head_actor=answered")
    except ray.exceptions.ActorUnavailableError:
        # Unreachable, perhaps restarting: ask again until the GCS says.
        import time
        while True:
            try:
                ray.get(h.ping.remote(), timeout=120)
                print("head_actor=answered")
                break
            except ray.exceptions.ActorUnavailableError:
                time.sleep(0.5)
            except ray.exceptions.RayActorError as e:
                print("head_actor=" + type(e).__name__)
                break
    except ray.exceptions.RayActorError as e:
        print("head_actor=" + type(e).__name__)
"""


def test_native_detached_actor_on_provider_survives_head_kill9(gray_bin, capsys):
    head = FailoverHead(gray_bin)
    head.name = "gray"
    head.native_ports = 42000 + (hash(head.tmp) % 500) * 32
    head.start()
    head.address = head.native_address
    prov = SecondNode(gray_bin, head, "quic")
    try:
        before = values(head.run(BEFORE))
        assert before["count"] == "3", before
        assert before["head_actor"] == "pong", before
        prov_node = before["actor_node"]

        t0 = time.monotonic()
        head.kill9()
        head.start()
        up = time.monotonic() - t0

        # The provider's raylet is back in the node table (same node id) and
        # answers the restarted GCS.
        def provider_back():
            return prov_node in values(head.run(NODES)).get("alive", "")

        wait_for(provider_back, timeout=90, every=0.5)
        back = time.monotonic() - t0

        after = values(head.run(AFTER, timeout=300))
        called = time.monotonic() - t0
        after.update(values(head.run(HEAD_ACTOR, timeout=300)))
        assert after["count"] == "4", (after, head.logs()[-4000:])
        assert after["actor_node"] == prov_node, (before, after)
        assert after["task_node"] == prov_node, (before, after)
        # The head's own native node died with the head: its actor
        # (max_restarts=0) is dead, not hung (the restarted GCS marks the
        # old head node DEAD as it starts).
        assert after["head_actor"] in ("ActorDiedError", "gone"), after
        with capsys.disabled():
            print("\n[%s] kill -9 -> head serving %.2fs; -> provider node back %.2fs; "
                  "-> first actor call done (new native driver) %.2fs; head-node actor: %s"
                  % (head.storage, up, back, called, after["head_actor"]))
    finally:
        prov.stop()
        head.stop()
