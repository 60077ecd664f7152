"""gray's native GCS (`gray native-gcs`) driven by the stock ray==2.60.0
wheel's own GCS clients: ray._raylet.GcsClient, GcsLogSubscriber and
GcsErrorSubscriber (C++ clients inside _raylet.so), plus the wheel's
generated gRPC stubs for the raylet-side calls (RegisterNode, AddJob)."""

import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import grpc
import pytest

from ray._raylet import GcsClient, GcsErrorSubscriber, GcsLogSubscriber, JobID, NodeID
from ray.core.generated import gcs_pb2, gcs_service_pb2, gcs_service_pb2_grpc, common_pb2

from conftest import stop_process


def start_native_gcs(gray_bin, listen, *extra):
    log = tempfile.NamedTemporaryFile(prefix="gray-native-gcs-", suffix=".log", delete=False)
    proc = subprocess.Popen(
        [gray_bin, "native-gcs", "--listen", listen, *extra],
        stdout=subprocess.PIPE, stderr=log, text=True,
    )
    line = proc.stdout.readline()
    if not line.startswith("GCS_ADDRESS="):
        stop_process(proc)
        raise RuntimeError("native-gcs did not start:\n" + open(log.name).read())
    fields = dict(f.split("=", 1) for f in line.split())
    return proc, log.name, fields["GCS_ADDRESS"], fields["CLUSTER_ID"]


@pytest.fixture
def native_gcs(gray_bin):
    proc, log, address, cluster_id = start_native_gcs(gray_bin, "127.0.0.1:0")
    try:
        yield address, cluster_id
    finally:
        stop_process(proc)
        if os.environ.get("GRAY_KEEP_LOGS") is None:
            os.unlink(log)


def metadata(cluster_id):
    return (("ray_cluster_id", cluster_id),)


def register_node(address, cluster_id, node_id, ip, port, head, resources):
    with grpc.insecure_channel(address) as ch:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(ch)
        info = gcs_pb2.GcsNodeInfo(
            node_id=node_id, node_manager_address=ip, node_manager_port=port,
            object_manager_port=port + 1, node_name=ip, is_head_node=head,
            raylet_socket_name="/tmp/x/raylet", object_store_socket_name="/tmp/x/plasma",
            temp_dir="/tmp/x", session_dir="/tmp/x/session", resources_total=resources,
        )
        reply = stub.RegisterNode(gcs_service_pb2.RegisterNodeRequest(node_info=info),
                                  metadata=metadata(cluster_id), timeout=10)
        assert reply.status.code == 0


def test_cluster_id_and_kv(native_gcs):
    address, cluster_id = native_gcs
    client = GcsClient(address=address, cluster_id=cluster_id)
    assert client.cluster_id.hex() == cluster_id
    assert client.internal_kv_put(b"session_name", b"session_x", True, b"session") == 1
    assert client.internal_kv_put(b"session_name", b"other", False, b"session") == 0
    assert client.internal_kv_get(b"session_name", b"session") == b"session_x"
    assert client.internal_kv_get(b"nope", b"session") is None
    assert client.internal_kv_exists(b"session_name", b"session")
    assert not client.internal_kv_exists(b"session_name", b"fun")
    client.internal_kv_put(b"RemoteFunction:01:a", b"1", True, b"fun")
    client.internal_kv_put(b"RemoteFunction:01:b", b"2", True, b"fun")
    assert sorted(client.internal_kv_keys(b"RemoteFunction:", b"fun")) == [
        b"RemoteFunction:01:a", b"RemoteFunction:01:b"]
    assert client.internal_kv_multi_get([b"RemoteFunction:01:a", b"zz"], b"fun") == {
        b"RemoteFunction:01:a": b"1"}
    assert client.internal_kv_del(b"RemoteFunction:", True, b"fun") == 2
    assert client.internal_kv_keys(b"", b"fun") == []


def test_nodes_jobs_and_liveness(native_gcs):
    address, cluster_id = native_gcs
    client = GcsClient(address=address, cluster_id=cluster_id)
    head, other = os.urandom(28), os.urandom(28)
    register_node(address, cluster_id, head, "127.0.0.1", 14500, True, {"CPU": 2.0})
    register_node(address, cluster_id, other, "127.0.0.2", 14510, False, {"CPU": 1.0, "GPU": 1.0})

    nodes = client.get_all_node_info(timeout=10)
    assert len(nodes) == 2
    selector = gcs_service_pb2.GetAllNodeInfoRequest.NodeSelector(node_id=other)
    only = client.get_all_node_info(timeout=10, node_selectors=[selector],
                                    state_filter=gcs_pb2.GcsNodeInfo.GcsNodeState.ALIVE)
    assert len(only) == 1
    info = list(only.values())[0]
    assert info.node_manager_address == "127.0.0.2"
    assert info.resources_total["GPU"] == 1.0
    assert client.check_alive([NodeID(head), NodeID(os.urandom(28))], 10) == [True, False]

    # The raylet registers the job (AddJob) after the driver announces itself.
    job_id = JobID.from_int(1)
    with grpc.insecure_channel(address) as ch:
        jobs = gcs_service_pb2_grpc.JobInfoGcsServiceStub(ch)
        assert jobs.GetNextJobID(gcs_service_pb2.GetNextJobIDRequest(), timeout=10).job_id == 1
        data = gcs_pb2.JobTableData(
            job_id=job_id.binary(), driver_pid=1234, driver_ip_address="127.0.0.1",
            entrypoint="python driver.py",
            driver_address=common_pb2.Address(ip_address="127.0.0.1", port=5555),
            config=common_pb2.JobConfig(ray_namespace="ns1"),
        )
        assert jobs.AddJob(gcs_service_pb2.AddJobRequest(data=data), timeout=10).status.code == 0
        got = client.get_all_job_info(timeout=10)
        assert len(got) == 1
        job = list(got.values())[0]
        assert job.driver_pid == 1234 and not job.is_dead and job.config.ray_namespace == "ns1"
        jobs.MarkJobFinished(gcs_service_pb2.MarkJobFinishedRequest(job_id=job_id.binary()), timeout=10)
        job = list(client.get_all_job_info(timeout=10).values())[0]
        assert job.is_dead and job.end_time > 0

        nodes_stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(ch)
        nodes_stub.UnregisterNode(gcs_service_pb2.UnregisterNodeRequest(node_id=other), timeout=10)
    alive = client.get_all_node_info(timeout=10, state_filter=gcs_pb2.GcsNodeInfo.GcsNodeState.ALIVE)
    assert len(alive) == 1 and list(alive.values())[0].node_id == head
    assert client.check_alive([NodeID(other)], 10) == [False]


def test_log_and_error_pubsub(native_gcs):
    address, cluster_id = native_gcs
    client = GcsClient(address=address, cluster_id=cluster_id)
    logs = GcsLogSubscriber(address=address)
    logs.subscribe()
    errors = GcsErrorSubscriber(address=address)
    errors.subscribe()
    client.publish_logs({"ip": "127.0.0.1", "pid": "77", "job": "01000000", "is_err": False,
                         "lines": ["hello from a worker"], "actor_name": "", "task_name": "f"})
    deadline = time.time() + 20
    got = None
    while time.time() < deadline and not got:
        got = logs.poll(timeout=deadline - time.time())
    assert got and got["lines"] == ["hello from a worker"] and got["pid"] == "77"

    job = JobID.from_int(1)
    client.publish_error(job.hex().encode(), "test_error", "something broke", job, 10)
    deadline = time.time() + 20
    err = None
    while time.time() < deadline and not err:
        _, err = errors.poll(timeout=deadline - time.time())
    assert err and err["type"] == "test_error" and "something broke" in err["error_message"]
    logs.close()
    errors.close()


def test_cluster_state_for_autoscaler(native_gcs):
    address, cluster_id = native_gcs
    client = GcsClient(address=address, cluster_id=cluster_id)
    register_node(address, cluster_id, os.urandom(28), "127.0.0.1", 14520, True, {"CPU": 3.0})
    from ray.core.generated import autoscaler_pb2
    state = autoscaler_pb2.GetClusterResourceStateReply()
    state.ParseFromString(client.get_cluster_resource_state())
    nodes = state.cluster_resource_state.node_states
    assert len(nodes) == 1 and nodes[0].total_resources["CPU"] == 3.0


DRIVER = textwrap.dedent("""
    import sys, ray
    ray.init(address=sys.argv[1])
    def say(*args):
        # One write per line: workers' log lines stream into this stdout
        # from another thread, and print() writes its arguments one by one.
        sys.stdout.write(" ".join(map(str, args)) + "\\n")
        sys.stdout.flush()

    @ray.remote
    def f(x):
        print("hello from task", x)
        return x * 2

    say("task", ray.get(f.remote(21), timeout=60))

    @ray.remote
    class Counter:
        def __init__(self, n):
            self.n = n
        def inc(self, k):
            self.n += k
            return self.n

    a = Counter.options(name="ctr").remote(10)
    say("actor", ray.get(a.inc.remote(5), timeout=60))
    say("get_actor", ray.get(ray.get_actor("ctr").inc.remote(1), timeout=60))
    say("cpus", ray.cluster_resources().get("CPU"))
    ray.kill(a)
    # A call racing the kill may still run; the next ones fail.
    for _ in range(100):
        try:
            ray.get(a.inc.remote(1), timeout=30)
        except ray.exceptions.RayActorError as e:
            say("killed", type(e).__name__)
            break

    @ray.remote
    class Bad:
        def __init__(self):
            raise ValueError("boom")
        def m(self):
            return 1

    try:
        ray.get(Bad.remote().m.remote(), timeout=30)
    except ray.exceptions.RayActorError as e:
        say("creation", "creation task" in str(e))
    ray.shutdown()
""")


DRIVER2 = textwrap.dedent("""
    import os, sys, time, ray
    from ray.util.placement_group import placement_group, remove_placement_group, placement_group_table
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
    ray.init(address=sys.argv[1], namespace="t")
    def say(*args):
        # One write per line: workers' log lines stream into this stdout
        # from another thread, and print() writes its arguments one by one.
        sys.stdout.write(" ".join(map(str, args)) + "\\n")
        sys.stdout.flush()

    pg = placement_group([{"CPU": 1}], strategy="PACK")
    ray.get(pg.ready(), timeout=60)
    say("pg", placement_group_table(pg)["state"])

    @ray.remote(num_cpus=1)
    class A:
        def pid(self):
            return os.getpid()
        def die(self):
            os._exit(1)

    a = A.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, 0)).remote()
    say("pg actor", ray.get(a.pid.remote(), timeout=60) > 0)
    ray.kill(a)
    remove_placement_group(pg)
    deadline = time.time() + 20
    while placement_group_table(pg)["state"] != "REMOVED" and time.time() < deadline:
        time.sleep(0.1)
    say("pg", placement_group_table(pg)["state"])

    r = A.options(max_restarts=1, num_cpus=0).remote()
    p1 = ray.get(r.pid.remote(), timeout=60)
    r.die.remote()
    deadline = time.time() + 60
    while True:
        try:
            p2 = ray.get(r.pid.remote(), timeout=60)
            break
        except ray.exceptions.RayActorError:
            assert time.time() < deadline
            time.sleep(0.2)
    say("restarted", p1 != p2)

    d = A.options(name="keeper", lifetime="detached", num_cpus=0).remote()
    ray.get(d.pid.remote(), timeout=60)
    tmp = A.options(num_cpus=0).remote()
    tid = tmp._actor_id.hex()
    ray.get(tmp.pid.remote(), timeout=60)
    del tmp
    deadline = time.time() + 30
    while ray._private.state.state.actor_table(tid)["State"] != "DEAD" and time.time() < deadline:
        time.sleep(0.1)
    say("out of scope", ray._private.state.state.actor_table(tid)["State"])
    ray.shutdown()

    ray.init(address=sys.argv[1], namespace="t")
    say("detached survives", ray.get(ray.get_actor("keeper").pid.remote(), timeout=60) > 0)
    ray.kill(ray.get_actor("keeper"))
    ray.shutdown()
""")


class StockCluster:
    """gray's GCS (`gray native-gcs`) with stock raylets joined to it by
    `ray start --address`, each in its own process group."""

    def __init__(self, gray_bin, tmp_path, *gcs_flags):
        from ray._private.services import get_node_ip_address
        self.ip = get_node_ip_address()  # drivers dial the GCS at this address
        self.tmp = tmp_path
        self.gcs, self.log, listen, self.cluster_id = start_native_gcs(gray_bin, "0.0.0.0:0", *gcs_flags)
        self.address = "%s:%s" % (self.ip, listen.rsplit(":", 1)[1])
        self.raylets = []
        self.env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
        # What a stock head would have written: the session name, the
        # cluster metadata and a head node record (temp/session dirs).
        self.client = GcsClient(address=self.address, cluster_id=self.cluster_id)
        self.client.internal_kv_put(b"session_name", b"session_graytest", True, b"session")
        self.client.internal_kv_put(b"CLUSTER_METADATA", json.dumps({
            "ray_version": "2.60.0", "python_version": platform.python_version(),
            "ray_init_cluster": False}).encode(), True, b"cluster")
        temp = str(tmp_path / "t")
        with grpc.insecure_channel(self.address) as ch:
            gcs_service_pb2_grpc.NodeInfoGcsServiceStub(ch).RegisterNode(
                gcs_service_pb2.RegisterNodeRequest(node_info=gcs_pb2.GcsNodeInfo(
                    node_id=os.urandom(28), node_manager_address=self.ip, node_manager_port=1,
                    is_head_node=True, temp_dir=temp, session_dir=temp + "/session_graytest",
                    resources_total={"head": 1.0})), timeout=10)

    def add_raylet(self, resources, num_cpus=1):
        """Starts a stock raylet with resources (a dict that must be unique
        to it) and waits until it registered; returns its process."""
        ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
        logf = str(self.tmp / ("raystart-%d.log" % len(self.raylets)))
        proc = subprocess.Popen(
            [ray_cli, "start", "--address=" + self.address, "--num-cpus=%d" % num_cpus,
             "--resources=" + json.dumps(resources), "--block", "--disable-usage-stats"],
            stdout=open(logf, "w"), stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.raylets.append(proc)
        key = next(iter(resources))
        deadline = time.time() + 90
        while time.time() < deadline:
            alive = self.client.get_all_node_info(timeout=10, state_filter=gcs_pb2.GcsNodeInfo.GcsNodeState.ALIVE)
            for n in alive.values():
                if n.resources_total.get(key) == resources[key]:
                    return proc, n.node_id.hex()
            assert proc.poll() is None, open(logf).read()
            time.sleep(0.5)
        raise AssertionError("the stock raylet did not register:\n" + open(logf).read())

    def run(self, program, timeout=300):
        out = subprocess.run([sys.executable, "-c", program, self.address], capture_output=True, text=True,
                             timeout=timeout, env=self.env)
        report = out.stdout + out.stderr + "\n--- gcs log ---\n" + open(self.log).read()[-8000:]
        assert out.returncode == 0, report
        return out.stdout + out.stderr, report

    @staticmethod
    def kill(proc, sig=signal.SIGTERM):
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def close(self):
        for proc in self.raylets:
            self.kill(proc)
        stop_process(self.gcs)
        if os.environ.get("GRAY_KEEP_LOGS") is None:
            os.unlink(self.log)


stock_only = pytest.mark.skipif(os.environ.get("GRAY_SKIP_STOCK_RAYLET") is not None,
                                reason="GRAY_SKIP_STOCK_RAYLET set")


@stock_only
def test_stock_raylet_and_driver_on_native_gcs(gray_bin, tmp_path):
    """The stock raylet (`ray start --address`) and stock drivers run tasks,
    actors, placement groups, restarts, out-of-scope and detached actors
    with gray's GCS as their only GCS. (Another process running `ray stop`
    on this machine kills the stock raylet and fails this test.)"""
    c = StockCluster(gray_bin, tmp_path)
    try:
        c.add_raylet({"one": 1.0}, num_cpus=2)
        text, report = c.run(DRIVER)
        # Worker prints reach the same stdout and may share a line with ours.
        for want in ("task 42", "actor 15", "get_actor 16", "cpus 2.0", "killed ActorDiedError", "creation True"):
            assert want in text, report
        assert "hello from task 21" in text, report  # a worker's print, via the log channel

        text, report = c.run(DRIVER2)
        for want in ("pg CREATED", "pg actor True", "pg REMOVED", "restarted True", "out of scope DEAD",
                     "detached survives True"):
            assert want in text, report
    finally:
        c.close()


NODE_DEATH_DRIVER = textwrap.dedent("""
    import os, sys, time, ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    ray.init(address=sys.argv[1])
    def say(*args):
        # One write per line: workers' log lines stream into this stdout
        # from another thread, and print() writes its arguments one by one.
        sys.stdout.write(" ".join(map(str, args)) + "\\n")
        sys.stdout.flush()
    me = ray.get_runtime_context().get_node_id()
    other = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeID"] != me and n["Resources"].get("r")][0]

    @ray.remote(num_cpus=0, resources={"r": 1}, max_restarts=1)
    class A:
        def where(self):
            return ray.get_runtime_context().get_node_id()

    a = A.options(scheduling_strategy=NodeAffinitySchedulingStrategy(other, soft=True)).remote()
    say("placed on other", ray.get(a.where.remote(), timeout=60) == other)
    say("VICTIM", other)
    sys.stdin.readline()  # the test kills that node, then writes a line
    deadline = time.time() + 90
    while True:
        try:
            if ray.get(a.where.remote(), timeout=60) == me:
                say("restarted on the driver's node")
                break
        except ray.exceptions.RayActorError:
            assert time.time() < deadline, "the actor did not come back"
            time.sleep(0.2)
    ray.shutdown()
""")


@stock_only
def test_stock_raylet_killed_actor_restarts_on_the_other(gray_bin, tmp_path):
    """Two stock raylets; the one hosting an actor is SIGKILLed. The GCS
    notices the silent raylet (GetResourceLoad polls), publishes it DEAD and
    restarts the actor (max_restarts=1) on the other node."""
    c = StockCluster(gray_bin, tmp_path, "--node-dead-after", "2s")
    try:
        procs = {}
        for name in ("x", "y"):
            proc, node_id = c.add_raylet({name: 1.0, "r": 1.0})
            procs[node_id] = proc
        driver = subprocess.Popen([sys.executable, "-c", NODE_DEATH_DRIVER, c.address], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=c.env)
        out = []
        try:
            for line in driver.stdout:
                out.append(line)
                if line.startswith("VICTIM "):
                    c.kill(procs[line.split()[1]], signal.SIGKILL)
                    driver.stdin.write("go\n")
                    driver.stdin.flush()
            driver.wait(timeout=120)
        finally:
            if driver.poll() is None:
                driver.kill()
        text = "".join(out)
        report = text + "\n--- gcs log ---\n" + open(c.log).read()[-8000:]
        assert driver.returncode == 0, report
        assert "placed on other True" in text and "restarted on the driver's node" in text, report
        assert "node dead" in open(c.log).read(), report
    finally:
        c.close()
