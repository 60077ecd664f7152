"""gray's native GCS (`gray native-gcs`) driven by the stock ray==2.60.0
wheel's own GCS clients: ray._raylet.GcsClient, GcsLogSubscriber and
GcsErrorSubscriber (C++ clients inside _raylet.so), plus the wheel's
generated gRPC stubs for the raylet-side calls (RegisterNode, AddJob)."""

import os
import subprocess
import tempfile
import time

import grpc
import pytest

from ray._raylet import GcsClient, GcsErrorSubscriber, GcsLogSubscriber, JobID, NodeID
from ray.core.generated import gcs_pb2, gcs_service_pb2, gcs_service_pb2_grpc, common_pb2

from conftest import stop_process


@pytest.fixture
def native_gcs(gray_bin):
    log = tempfile.NamedTemporaryFile(prefix="gray-native-gcs-", suffix=".log", delete=False)
    proc = subprocess.Popen(
        [gray_bin, "native-gcs", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=log, text=True,
    )
    line = proc.stdout.readline()
    if not line.startswith("GCS_ADDRESS="):
        stop_process(proc)
        raise RuntimeError("native-gcs did not start:\n" + open(log.name).read())
    fields = dict(f.split("=", 1) for f in line.split())
    try:
        yield fields["GCS_ADDRESS"], fields["CLUSTER_ID"]
    finally:
        stop_process(proc)
        if os.environ.get("GRAY_KEEP_LOGS") is None:
            os.unlink(log.name)


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
