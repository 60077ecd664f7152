"""Native Ray across a pool over emulated WAN links: a head (1 CPU, region
r0) and three `--native` providers in regions r1/r2/r3, each joined through
its own graywan link (r1 20 ms RTT, r2 80 ms, r3 150 ms, 1% loss each way),
each with 2 CPUs, the custom resources prov=2 (Tune trials) and srv=1
(Serve replicas, one per provider) and one of its own (p_r1, ...).
r3 is outbound-only: no gossip port, no peer port; everything reaches it
over the QUIC connection it dialled. Stock drivers (`ray.init(address=...)`,
each in a fresh interpreter) run a Tune sweep whose trials all run on
providers while one provider is killed -9, then a Serve deployment with a
replica on each of two providers, answered through a handle and over HTTP
on the head's Serve port, while one of those providers is killed.

One cluster for the module; the tests run in file order: the Tune test kills
r1, the Serve test kills r2. Stock Ray has no WAN emulation, so this file
has no NATIVE_TARGET=ray variant (test_native_pool_libs.py is the
comparison on loopback)."""

import json
import os
import socket

import pytest
import ray  # noqa: F401  (puts the psutil Ray ships on sys.path)
import psutil

from conftest import WanLinks
from native_pool import NativePool, SecondNode

REGION = "ray.io/availability-region"
DEAD_AFTER = 15
LINKS = {
    "r1": "rtt=20ms,jitter=1ms,loss=0.01,bandwidth=200mbit,seed=1",
    "r2": "rtt=80ms,jitter=1ms,loss=0.01,bandwidth=200mbit,seed=2",
    "r3": "rtt=150ms,jitter=1ms,loss=0.01,bandwidth=200mbit,seed=3",
}
OUTBOUND_ONLY = "r3"

pytestmark = pytest.mark.skipif(os.environ.get("NATIVE_TARGET") == "ray", reason="no WAN emulation for stock Ray")

# What every driver program starts with: waits until all three providers'
# resources are in the cluster (minus the killed ones) and maps region to
# node id. NODES_OF(want) -> {"r1": id, ...}.
PRELUDE = """
import json, os, signal, time, ray
import psutil

def nodes_of(want):
    deadline = time.time() + 120
    while True:
        alive = [n for n in ray.nodes() if n["Alive"]]
        found = {r: n["NodeID"] for r in want for n in alive if n["Resources"].get("p_" + r)}
        if sorted(found) == sorted(want):
            return found
        assert time.time() < deadline, (want, ray.nodes())
        time.sleep(0.2)

def kill_node(tmp):
    # Like the machine going away: the provider, its raylet and workers,
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
"""


def check(head, source, timeout):
    """head.check, with what the driver printed when it runs out of time."""
    import subprocess

    try:
        return head.check(source, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        def tail(b):
            return (b or b"").decode(errors="replace")[-8000:] if isinstance(b, bytes) else (b or "")[-8000:]
        raise AssertionError("driver ran past %ds:\n%s\n%s\n--- head log tail ---\n%s" % (
            timeout, tail(e.stdout), tail(e.stderr), head.logs()[-4000:])) from None


@pytest.fixture(scope="module")
def wan(gray_bin, graywan_bin):
    head = NativePool(gray_bin, num_cpus=1, providers=True, extra=[
        "--region", "r0", "--dead-after", "%ds" % DEAD_AFTER, "--suspect-after", "3s"])
    links, providers = None, {}
    try:
        # The TCP proxies front the head's Ray Client port (for any ray://
        # worker of a provider); native traffic is all in the QUIC link.
        links = WanLinks(graywan_bin, head, ["name=%s,%s,tcp_target=127.0.0.1:%d" % (n, s, head.port)
                                             for n, s in LINKS.items()])
        for i, name in enumerate(LINKS):
            args = links.provider_args(name)
            extra = ["--region", name] + args["extra"]
            if name == OUTBOUND_ONLY:
                # No gossip and no peer listener: nothing dials this provider.
                extra = ["--region", name, "--head-client-address", links.links[name]["tcp"],
                         "--no-peer", "--gossip-port", "-1"]
            providers[name] = SecondNode(
                gray_bin, head, "quic", resources=json.dumps({"prov": 2, "srv": 1, "p_" + name: 1}),
                ports=head.native_ports + 32 * i, address=args["address"], extra=extra, wait=False)
        for p in providers.values():
            p.wait_joined(timeout=120)
        yield head, links, providers
    finally:
        for p in providers.values():
            p.stop()
        if links:
            links.stop()
        head.stop()


def listening(proc):
    """The local addresses proc listens on (TCP) or has bound (UDP)."""
    p = psutil.Process(proc.pid)
    out = []
    for c in p.net_connections(kind="inet"):
        if c.status == psutil.CONN_LISTEN or (c.type == socket.SOCK_DGRAM and not c.raddr):
            out.append(("tcp" if c.type == socket.SOCK_STREAM else "udp", c.laddr.ip, c.laddr.port))
    return out


def test_three_native_providers_alive_through_links(wan):
    head, links, providers = wan
    out = check(head, PRELUDE + """
ray.init(address=ADDRESS)
nodes = nodes_of(["r1", "r2", "r3"])
me = ray.get_runtime_context().get_node_id()
assert me not in nodes.values()
labels = {n["NodeID"]: n["Labels"].get("%s") for n in ray.nodes() if n["Alive"]}
assert ray.cluster_resources().get("prov") == 6, ray.cluster_resources()

@ray.remote(num_cpus=1)
def where(r):
    return r, ray.get_runtime_context().get_node_id()

got = ray.get([where.options(resources={"p_" + r: 1}).remote(r) for r in sorted(nodes)], timeout=120)
assert dict(got) == nodes, (got, nodes)
print(json.dumps({"nodes": nodes, "labels": labels}))
ray.shutdown()
""" % REGION, 180)
    info = json.loads(out.strip().splitlines()[-1])
    print(info)
    stats = links.stats()
    for name in LINKS:
        udp = stats[name]["udp"]
        assert udp["sessions"] >= 1, stats[name]
        assert udp["up"]["forwarded"] > 0 and udp["down"]["forwarded"] > 0, stats[name]
    # The outbound-only provider: no gossip crossed its link, and it serves
    # nothing on a UDP or TCP port other than on loopback for its own node.
    assert stats[OUTBOUND_ONLY]["gossip_udp"]["up"]["forwarded"] == 0, stats[OUTBOUND_ONLY]
    assert stats[OUTBOUND_ONLY]["gossip_udp"]["down"]["forwarded"] == 0, stats[OUTBOUND_ONLY]
    socks = listening(providers[OUTBOUND_ONLY].proc)
    print("outbound-only provider's sockets:", socks)
    # Its TCP listeners are the CONNECT proxy and the raylet on its pool
    # address, both loopback; its one UDP socket is the QUIC client's.
    assert all(ip.startswith("127.") for proto, ip, _ in socks if proto == "tcp"), socks


def test_tune_sweep_survives_a_provider_killed_mid_sweep(wan, tmp_path):
    """Six trials, one per provider CPU; each reports an iteration and waits
    for a go file. Once all six have reported, r1 is killed -9, then the go
    file appears: r1's trials are lost mid-run and Tune's FailureConfig reruns
    them on the other providers; every trial finishes all its iterations."""
    head, _, providers = wan
    go = str(tmp_path / "go")
    out = check(head, PRELUDE + """
import tempfile
from ray import tune
ray.init(address=ADDRESS)
nodes = nodes_of(["r1", "r2", "r3"])
victim = nodes["r1"]
GO = %r

class Killer(tune.Callback):
    reported = {}
    killed = False
    recovered = 0
    lost = 0
    def on_trial_recover(self, iteration, trials, trial, **info):
        Killer.recovered += 1
    def on_trial_result(self, iteration, trials, trial, result, **info):
        Killer.reported[trial.trial_id] = result["node"]
        if not Killer.killed and len(Killer.reported) == 6:
            Killer.killed = True
            Killer.lost = sum(n == victim for n in Killer.reported.values())
            Killer.placed = sorted(set(Killer.reported.values()))
            kill_node(%r)
            open(GO, "w").close()

def trainable(config):
    import os, time, ray
    from ray import tune
    node = ray.get_runtime_context().get_node_id()
    tune.report({"score": 0, "node": node})
    while not os.path.exists(config["go"]):
        time.sleep(0.1)
    for i in range(1, 4):
        tune.report({"score": config["x"] * i, "node": node})

t0 = time.time()
res = tune.Tuner(
    tune.with_resources(trainable, {"cpu": 1, "prov": 1}),
    param_space={"x": tune.grid_search([1, 2, 3, 4, 5, 6]), "go": GO},
    run_config=tune.RunConfig(storage_path=tempfile.mkdtemp(), callbacks=[Killer()],
                              failure_config=tune.FailureConfig(max_failures=3)),
).fit()
assert Killer.killed, "the sweep never had six trials running"
assert Killer.lost >= 1, ("no trial ran on the victim", Killer.reported, nodes)
assert Killer.recovered >= Killer.lost, (Killer.recovered, Killer.lost)
assert len(res) == 6 and not res.errors, res.errors
assert sorted(r.config["x"] for r in res) == [1, 2, 3, 4, 5, 6]
assert all(r.metrics["training_iteration"] == 4 for r in res), [r.metrics for r in res]
assert all(r.metrics["score"] == 3 * r.config["x"] for r in res), [r.metrics for r in res]
final = {r.metrics["node"] for r in res}
assert final <= {nodes["r2"], nodes["r3"]}, (final, nodes)
assert Killer.placed == sorted(nodes.values()), (Killer.placed, nodes)  # two trials on each provider
# The next test starts once the head has declared r1 dead (an actor leased
# to r1 in between waits on it: see the report of issue 15's WAN tests).
deadline = time.time() + 120
while [n["Alive"] for n in ray.nodes() if n["NodeID"] == victim] != [False]:
    assert time.time() < deadline, "r1 not declared dead"
    time.sleep(0.2)
print("trials lost with r1: %%d, retried: %%d, sweep %%.1fs" %% (Killer.lost, Killer.recovered, time.time() - t0))
ray.shutdown()
""" % (go, providers["r1"].tmp), 400)
    print(out)
    assert os.path.exists(go)


def test_serve_keeps_answering_when_a_replica_provider_dies(wan):
    """Two replicas, one on r2 and one on r3 (the outbound-only provider),
    HTTP through the head's proxy (ProxyLocation.HeadOnly); kill -9 r2: the
    handle and HTTP answer again, from r3, within a bounded time."""
    from conftest import free_port

    head, _, providers = wan
    port = free_port()
    out = check(head, PRELUDE + """
import urllib.request
from ray import serve
from ray.serve.config import ProxyLocation
ray.init(address=ADDRESS)
nodes = nodes_of(["r2", "r3"])
me = ray.get_runtime_context().get_node_id()
port = %d

# One replica per provider: each has srv=1 (the head has none, so
# max_replicas_per_node could put one there).
@serve.deployment(num_replicas=2, ray_actor_options={"num_cpus": 0, "resources": {"srv": 1}})
class Where:
    def __call__(self, request):
        return ray.get_runtime_context().get_node_id()

serve.start(proxy_location=ProxyLocation.HeadOnly, http_options={"host": "127.0.0.1", "port": port})
t0 = time.time()
from ray.serve.api import _run
handle = _run(Where.bind(), _blocking=False)  # serve.run, with a bounded wait
deadline = time.time() + 120
while serve.status().applications["default"].status != "RUNNING":
    assert time.time() < deadline, ("replicas not all running", serve.status())
    time.sleep(0.5)
print("deployed in %%.1fs" %% (time.time() - t0), flush=True)
fake = type("Request", (), {"query_params": {}})()

def http():
    return urllib.request.urlopen("http://127.0.0.1:%%d/" %% port, timeout=30).read().decode()

# Both replicas answer, each on its own provider, through the handle and
# through the head's HTTP proxy.
seen_handle, seen_http = set(), set()
deadline = time.time() + 120
while seen_handle != {nodes["r2"], nodes["r3"]} or seen_http != {nodes["r2"], nodes["r3"]}:
    assert time.time() < deadline, (seen_handle, seen_http, nodes)
    seen_handle.add(handle.remote(fake).result(timeout_s=60)); print("handle", seen_handle, flush=True)
    seen_http.add(http())
assert me not in seen_http

kill_node(%r)
killed = time.time()

def answers():
    try:
        return handle.remote(fake).result(timeout_s=10) == nodes["r3"] and http() == nodes["r3"]
    except Exception as e:
        print("while r2 is going:", type(e).__name__)
        return False

deadline = killed + 120
while not answers():
    assert time.time() < deadline, "Serve stopped answering after r2 died"
    time.sleep(0.2)
print("answering again %%.1fs after the kill" %% (time.time() - killed))
for _ in range(5):
    assert handle.remote(fake).result(timeout_s=30) == nodes["r3"]
    assert http() == nodes["r3"]
serve.shutdown()
ray.shutdown()
""" % (port, providers["r2"].tmp), 300)
    print(out)
