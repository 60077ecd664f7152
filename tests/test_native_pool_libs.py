"""Ray's libraries across the pool in native mode: a head with 1 CPU and a
provider that joined over QUIC with `--native` (2 CPUs, custom resource
side=3), stock drivers via `ray.init(address=...)`. Tune trials, Serve
replicas and Train workers ask for the provider's resource, so they run in
stock core workers on the provider; the Serve HTTP request goes to the head's
proxy and reaches a replica on the provider. With NATIVE_TARGET=ray the same
tests run on stock Ray (a head and a second `ray start --address` node)."""

import os

import pytest

from conftest import free_port
from native_pool import SecondNode, make_target

# Waits for the pool's side resource and prints the node id that holds it.
WAIT_SIDE = """
import time, ray
def side_node(want=3, key="side"):
    deadline = time.time() + 60
    while ray.cluster_resources().get(key) != want:
        assert time.time() < deadline, ray.cluster_resources()
        time.sleep(0.1)
    return [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get(key)]
"""


def stock():
    return os.environ.get("NATIVE_TARGET") == "ray"


@pytest.fixture(scope="module")
def pool(gray_bin):
    head = make_target(gray_bin, num_cpus=1, providers=True)
    node = SecondNode(gray_bin, head, "lan" if stock() else "quic")
    head.check(WAIT_SIDE + """
ray.init(address=ADDRESS)
side_node()
ray.shutdown()
""")
    yield head
    node.stop()
    head.stop()


def test_tune_trials_run_on_the_provider(pool):
    pool.check(WAIT_SIDE + """
import tempfile
from ray import tune
from ray.tune.schedulers import ASHAScheduler
ray.init(address=ADDRESS)
[provider] = side_node()
head = ray.get_runtime_context().get_node_id()

def trainable(config):
    import ray
    node = ray.get_runtime_context().get_node_id()
    for i in range(4):
        tune.report({"score": config["x"] * i, "node": node})

res = tune.Tuner(
    tune.with_resources(trainable, {"cpu": 1, "side": 1}),
    param_space={"x": tune.grid_search([1, 2, 3, 4])},
    tune_config=tune.TuneConfig(scheduler=ASHAScheduler(metric="score", mode="max", max_t=4)),
    run_config=tune.RunConfig(storage_path=tempfile.mkdtemp()),
).fit()
assert len(res) == 4 and not res.errors, res.errors
nodes = {r.metrics["node"] for r in res}
assert nodes == {provider} and provider != head, (nodes, provider, head)
assert res.get_best_result(metric="score", mode="max").config["x"] == 4
ray.shutdown()
""", timeout=300)


@pytest.mark.parametrize("location", ["HeadOnly", "EveryNode"])
def test_serve_replicas_on_the_provider_http_through_the_head(pool, location):
    # HeadOnly: one proxy, on the head, whose port is the pool's Serve
    # ingress; the replicas it routes to are on the provider. EveryNode
    # (Serve's default) also starts a proxy on the provider, the node with
    # the replicas; on this one machine it shares the head's port, so the
    # requests reach either proxy, and both must route them.
    port = free_port()
    pool.check(WAIT_SIDE + """
import urllib.request
from ray import serve
from ray.serve.config import ProxyLocation
ray.init(address=ADDRESS)
[provider] = side_node()
head = ray.get_runtime_context().get_node_id()
port = %d

@serve.deployment(num_replicas=2, ray_actor_options={"num_cpus": 0, "resources": {"side": 1}})
class Where:
    def __call__(self, request):
        name = request.query_params.get("name", "?")
        return "%%s %%s" %% (name, ray.get_runtime_context().get_node_id())

serve.start(proxy_location=ProxyLocation.%s, http_options={"host": "127.0.0.1", "port": port})
handle = serve.run(Where.bind())
fake = type("Request", (), {"query_params": {"name": "handle"}})()
assert handle.remote(fake).result() == "handle " + provider
for _ in range(8):
    body = urllib.request.urlopen("http://127.0.0.1:%%d/?name=web" %% port, timeout=60).read().decode()
    assert body == "web " + provider, (body, provider, head)
serve.shutdown()
ray.shutdown()
""" % (port, location), timeout=300)


def test_serve_handle_inside_a_provider_actor(pool):
    # What a proxy on the provider (ProxyLocation.EveryNode) or a model
    # composition with replicas there does: a handle made on the provider.
    port = free_port()
    pool.check(WAIT_SIDE + """
from ray import serve
ray.init(address=ADDRESS)
[provider] = side_node()

@serve.deployment(ray_actor_options={"num_cpus": 0, "resources": {"side": 1}})
class Where:
    def __call__(self, x):
        return ray.get_runtime_context().get_node_id()

serve.start(http_options={"host": "127.0.0.1", "port": %d})
serve.run(Where.bind())

@ray.remote(num_cpus=0, resources={"side": 1})
class Caller:
    def call(self):
        return serve.get_deployment_handle("Where", "default").remote(1).result(timeout_s=30)

assert ray.get(Caller.remote().call.remote(), timeout=90) == provider
serve.shutdown()
ray.shutdown()
""" % port, timeout=300)


def test_serve_max_replicas_per_node_spreads_replicas(pool):
    # max_replicas_per_node asks for Ray's implicit per-node resource
    # (node:__internal_implicit_resource_<app>:<deployment>, one unit on
    # every node, never offered): with 1 per node and 2 replicas, one runs
    # on each of the pool's two nodes, and a third deployment's replica
    # still fits (each deployment has its own unit).
    port = free_port()
    pool.check(WAIT_SIDE + """
from ray import serve
ray.init(address=ADDRESS)
[provider] = side_node()
head = ray.get_runtime_context().get_node_id()

@serve.deployment(num_replicas=2, max_replicas_per_node=1, ray_actor_options={"num_cpus": 0})
class Where:
    def __init__(self):
        self.node = ray.get_runtime_context().get_node_id()
    def __call__(self, x):
        return self.node

@serve.deployment(max_replicas_per_node=1, ray_actor_options={"num_cpus": 0})
class Other:
    def __call__(self, x):
        return ray.get_runtime_context().get_node_id()

serve.start(http_options={"host": "127.0.0.1", "port": %d})
handle = serve.run(Where.bind(), name="spread", route_prefix="/spread")
other = serve.run(Other.bind(), name="other", route_prefix="/other")
nodes = set()
deadline = time.time() + 60
while nodes != {head, provider}:
    assert time.time() < deadline, nodes
    nodes.add(handle.remote(1).result(timeout_s=30))
assert other.remote(1).result(timeout_s=30) in (head, provider)
serve.shutdown()
ray.shutdown()
""" % port, timeout=300)


def test_train_workers_on_the_provider(pool):
    pool.check(WAIT_SIDE + """
import os, tempfile, ray.train
from ray.train import ScalingConfig, RunConfig
from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer
ray.init(address=ADDRESS)
[provider] = side_node()
out = tempfile.mkdtemp()

def loop(config):
    ctx = ray.train.get_context()
    with open("%s/rank-%d" % (config["out"], ctx.get_world_rank()), "w") as f:
        f.write("%d %s" % (ctx.get_world_size(), ray.get_runtime_context().get_node_id()))
    ray.train.report({"rank": ctx.get_world_rank()})

r = DataParallelTrainer(loop, train_loop_config={"out": out},
                        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1, "side": 1}),
                        run_config=RunConfig(storage_path=tempfile.mkdtemp())).fit()
assert r.error is None, r.error
assert sorted(os.listdir(out)) == ["rank-0", "rank-1"], os.listdir(out)
for rank in (0, 1):
    assert open("%s/rank-%d" % (out, rank)).read() == "2 " + provider
ray.shutdown()
""", timeout=300)


def test_tune_survives_a_provider_killed_mid_sweep(gray_bin):
    """Two providers with the side resource; kill -9 of the first (and its
    workers) once a trial on it has reported: Tune's own retries
    (FailureConfig(max_failures=...)) finish every trial on the other."""
    head = make_target(gray_bin, num_cpus=1, providers=True)
    kind = "lan" if stock() else "quic"
    a = b = None
    try:
        a = SecondNode(gray_bin, head, kind, resources='{"side": 3, "pa": 1}')
        b = SecondNode(gray_bin, head, kind, resources='{"side": 3, "pb": 1}',
                       ports=getattr(head, "native_ports", 0) + 32)
        out = head.check(WAIT_SIDE + """
import os, tempfile, psutil, signal
from ray import tune
ray.init(address=ADDRESS)
side_node(want=6)
[victim] = side_node(want=1, key="pa")
[survivor] = side_node(want=1, key="pb")

def kill_node(tmp):
    # Like the machine going away: the node's processes and its workers,
    # SIGKILL, all at once.
    procs = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if p.pid != os.getpid() and any(tmp in arg for arg in p.info["cmdline"] or []):
                procs += [p] + p.children(recursive=True)
        except psutil.Error:
            pass
    assert procs, tmp
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass

class Killer(tune.Callback):
    killed = False
    recovered = 0
    def on_trial_recover(self, iteration, trials, trial, **info):
        Killer.recovered += 1
    def on_trial_result(self, iteration, trials, trial, result, **info):
        if not Killer.killed and result.get("node") == victim:
            Killer.killed = True
            kill_node(VICTIM_TMP)

def trainable(config):
    import time, ray
    node = ray.get_runtime_context().get_node_id()
    for i in range(6):
        tune.report({"score": config["x"] * i, "node": node})
        time.sleep(0.5)

res = tune.Tuner(
    tune.with_resources(trainable, {"cpu": 1, "side": 1}),
    param_space={"x": tune.grid_search([1, 2, 3, 4])},
    run_config=tune.RunConfig(storage_path=tempfile.mkdtemp(), callbacks=[Killer()],
                              failure_config=tune.FailureConfig(max_failures=3)),
).fit()
assert Killer.killed, "no trial ran on the victim"
assert Killer.recovered >= 1, "no trial was retried"
print("trials retried:", Killer.recovered)
assert len(res) == 4 and not res.errors, res.errors
assert sorted(r.config["x"] for r in res) == [1, 2, 3, 4]
assert all(r.metrics["training_iteration"] == 6 for r in res), [r.metrics for r in res]
assert {r.metrics["node"] for r in res} == {survivor}, [r.metrics["node"] for r in res]
print("ok")
ray.shutdown()
""".replace("VICTIM_TMP", repr(a.tmp)), timeout=400)
        print(out)
    finally:
        for n in (b, a):
            if n is not None:
                n.stop()
        head.stop()
