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


def start_head_and_provider(gray_bin):
    """A restartable native head (fixed ports) and one `--native` provider
    joined over QUIC."""
    head = FailoverHead(gray_bin)
    head.name = "gray"
    head.native_ports = 42000 + (hash(head.tmp) % 500) * 32
    head.start()
    head.address = head.native_address
    return head, SecondNode(gray_bin, head, "quic")


def test_native_detached_actor_on_provider_survives_head_kill9(gray_bin, capsys):
    head, prov = start_head_and_provider(gray_bin)
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


WORKERS = """
import ray
from ray._private.state import state
from ray.core.generated import gcs_pb2
ray.init(address=ADDRESS)
rows = [gcs_pb2.WorkerTableData.FromString(b) for b in state._connect_and_get_accessor().get_worker_table()]
print("workers=" + ",".join("%s:%s:%d:%d" % (w.worker_address.worker_id.hex(), w.worker_address.node_id.hex(),
                                              int(w.is_alive), w.exit_type) for w in rows))
"""

ON_PROVIDER = """
import sys, time
import ray
ray.init(address=ADDRESS, _node_ip_address=PROV_IP)
print("driver_node=" + ray.get_runtime_context().get_node_id(), flush=True)

@ray.remote(resources={"side": 1}, num_cpus=0)
class Acc:
    def __init__(self):
        self.n = 0
    def add(self, k):
        self.n += k
        return self.n

@ray.remote(resources={"side": 1}, num_cpus=0)
def square(x):
    return x * x

a = Acc.remote()
print("acc=%d" % ray.get(a.add.remote(5)), flush=True)
blob = ray.put(b"x" * (4 << 20))  # in the provider's plasma
print("READY", flush=True)
killed = float(sys.stdin.readline())  # wall clock of the kill -9; the head is back
print("acc=%d" % ray.get(a.add.remote(1), timeout=120), flush=True)
print("first_call_s=%.2f" % (time.time() - killed), flush=True)
print("blob=%d" % len(ray.get(blob, timeout=120)), flush=True)
print("square=%d" % ray.get(square.remote(7), timeout=120), flush=True)
print("new_task_s=%.2f" % (time.time() - killed), flush=True)
"""


def test_native_driver_on_provider_outlives_head_kill9(gray_bin, capsys):
    """A native driver attached to the provider's raylet (ray.init with the
    provider's node IP) keeps working across kill -9 + restart of the head:
    its actor on the provider keeps its state, its object in the provider's
    plasma stays gettable, it submits new tasks; the worker table the
    restarted GCS serves has the workers of before, those of the dead head
    node dead."""
    head, prov = start_head_and_provider(gray_bin)
    drv = None
    try:
        # A task on the head's own node, so that it has a worker to lose.
        head.run("""
import ray
ray.init(address=ADDRESS)
@ray.remote(num_cpus=0, resources={"node:__internal_head__": 0.01})
def f():
    return 1
assert ray.get(f.remote()) == 1
""")
        nodes = values(head.run("""
import ray
ray.init(address=ADDRESS)
for n in ray.nodes():
    if n["Alive"]:
        print("%s=%s" % ("prov" if n["Resources"].get("side") else "head", n["NodeID"] + "@" + n["NodeManagerAddress"]))
"""))
        prov_node, prov_ip = nodes["prov"].split("@")
        head_node, head_ip = nodes["head"].split("@")
        assert prov_ip != head_ip, nodes  # else the driver would pick the head's raylet
        drv, lines = head.background("PROV_IP = %r\n" % prov_ip + ON_PROVIDER, stdin=True)
        pre = values("".join(lines))
        assert pre["driver_node"] == prov_node, (pre, nodes)
        assert pre["acc"] == "5", pre
        workers_before = values(head.run(WORKERS))["workers"].split(",")

        killed = time.time()
        head.kill9()
        head.start()
        drv.stdin.write("%f\n" % killed)
        drv.stdin.flush()
        out, _ = drv.communicate(timeout=300)
        after = values(out)
        assert drv.returncode == 0, (out, head.logs()[-4000:])
        assert after["acc"] == "6", after
        assert after["blob"] == str(4 << 20), after
        assert after["square"] == "49", after

        rows = {r.split(":")[0]: r.split(":")[1:] for r in values(head.run(WORKERS))["workers"].split(",")}
        for r in workers_before:
            wid, node, _, _ = r.split(":")
            assert wid in rows, (wid, rows)
            if node == head_node:
                assert rows[wid][1] == "0", ("a worker of the dead head node is alive", rows[wid])
        assert any(r.split(":")[1] == head_node for r in workers_before), workers_before
        with capsys.disabled():
            print("\n[%s] kill -9 -> provider driver's first actor call %ss, first new task %ss; "
                  "%d workers before, %d after"
                  % (head.storage, after["first_call_s"], after["new_task_s"], len(workers_before), len(rows)))
    finally:
        if drv is not None and drv.poll() is None:
            drv.kill()
            drv.wait()
        prov.stop()
        head.stop()
