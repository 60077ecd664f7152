"""GPU resources, assignment and isolation, on go-nvml's mock DGX H100
(8 GPUs) so that CI needs no GPU. The real-GPU path is checked separately."""

import json
import os
import subprocess
import urllib.request

import pytest

from conftest import Pool, Provider, run_client_script


@pytest.fixture(scope="module")
def gpu_pool(gray_bin):
    p = Pool(gray_bin, num_cpus=8, extra=["--gpu-mock", "dgxh100", "--prestart-workers", "1"])
    yield p
    p.stop()


@pytest.fixture(scope="module")
def gpu_ray(gpu_pool):
    import ray

    ray.init("ray://" + gpu_pool.address)
    try:
        yield ray
    finally:
        ray.shutdown()


def test_gpu_resources_from_inventory(gpu_ray):
    ray = gpu_ray
    res = ray.cluster_resources()
    assert res["GPU"] == 8
    assert res["accelerator_type:H100"] == 1
    assert ray.nodes()[0]["Resources"]["GPU"] == 8


def test_cuda_visible_devices_per_task(gpu_ray):
    ray = gpu_ray

    @ray.remote(num_gpus=1)
    def one():
        return os.environ.get("CUDA_VISIBLE_DEVICES"), ray.get_gpu_ids()

    @ray.remote(num_gpus=2)
    def two():
        return os.environ.get("CUDA_VISIBLE_DEVICES"), ray.get_gpu_ids()

    @ray.remote
    def none():
        return os.environ.get("CUDA_VISIBLE_DEVICES"), ray.get_gpu_ids()

    visible, ids = ray.get(one.remote())
    assert ids == [int(visible)] and 0 <= ids[0] < 8
    visible, ids = ray.get(two.remote())
    assert len(ids) == 2 and visible == ",".join(map(str, ids))
    assert ray.get(none.remote()) == ("", [])


def test_concurrent_whole_gpus_are_disjoint(gpu_ray):
    ray = gpu_ray
    import time

    @ray.remote(num_gpus=1)
    def hold():
        time.sleep(1.0)
        return ray.get_gpu_ids()[0]

    ids = ray.get([hold.remote() for _ in range(4)])
    assert len(set(ids)) == 4


def test_fractional_gpus_pack(gpu_ray):
    ray = gpu_ray
    import time

    @ray.remote(num_gpus=0.25)
    def quarter():
        time.sleep(1.0)
        return ray.get_gpu_ids()

    ids = ray.get([quarter.remote() for _ in range(4)])
    assert all(len(i) == 1 for i in ids)
    assert len({i[0] for i in ids}) == 1  # four quarters share one GPU


def test_gpu_actor_and_accelerator_type(gpu_ray):
    ray = gpu_ray

    @ray.remote(num_gpus=1, accelerator_type="H100")
    class Trainer:
        def gpus(self):
            return ray.get_gpu_ids(), os.environ["CUDA_VISIBLE_DEVICES"]

    t = Trainer.remote()
    ids, visible = ray.get(t.gpus.remote())
    assert len(ids) == 1 and visible == str(ids[0])

    @ray.remote(num_gpus=1, accelerator_type="A100")
    def wrong_model():
        return "ran"

    ref = wrong_model.remote()
    ready, _ = ray.wait([ref], timeout=2)
    assert ready == []  # no A100 here: the task stays pending, as in Ray
    ray.cancel(ref)


def test_gpu_metrics_for_prometheus(gpu_pool):
    import urllib.request

    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % gpu_pool.status_port, timeout=10) as r:
        text = r.read().decode()
    total = [line for line in text.splitlines() if line.startswith("gray_gpu_memory_total_bytes{")]
    used = [line for line in text.splitlines() if line.startswith("gray_gpu_memory_used_bytes{")]
    assert len(total) == 8 and len(used) == 8, text
    assert all('model="H100"' in line for line in total)
    assert 'gray_nodes{state="ALIVE"} 1' in text
    assert 'resource="GPU"' in text


def test_provider_gpus_reach_client_status_and_metrics(gray_bin):
    """A provider's (mock) GPUs, sampled live, as the stock client, `gray
    status` and /metrics see them through the head."""
    head = Pool(gray_bin, num_cpus=1, extra=["--prestart-workers", "0"])
    provider = None
    try:
        provider = Provider(gray_bin, head, num_cpus=2, extra=["--gpu-mock", "dgxh100", "--gpu-sample-interval", "100ms"])
        # A fresh interpreter: this module's pool keeps its own client.
        proc = run_client_script(head, """
import os, ray
ray.init(os.environ["GRAY_ADDRESS"])
res = ray.cluster_resources()
assert res["GPU"] == 8 and res["accelerator_type:H100"] == 1, res
node = [n for n in ray.nodes() if n["Resources"].get("GPU")][0]
assert node["NodeID"].startswith(%r), node

@ray.remote(num_gpus=1)
def visible():
    return os.environ["CUDA_VISIBLE_DEVICES"], ray.get_runtime_context().get_node_id()

dev, node_id = ray.get(visible.remote())
assert 0 <= int(dev) < 8 and node_id == node["NodeID"], (dev, node_id)
print("ok")
""" % provider.node_prefix)
        assert proc.returncode == 0 and "ok" in proc.stdout, proc.stdout + proc.stderr

        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % head.status_port, timeout=10) as r:
            text = r.read().decode()
        lines = [line for line in text.splitlines() if line.startswith("gray_gpu_memory_total_bytes{")]
        assert len(lines) == 8 and all('node="%s' % provider.node_prefix in line for line in lines), text
        assert len([line for line in text.splitlines() if line.startswith("gray_gpu_withdrawn{") and line.endswith(" 0")]) == 8

        st = json.loads(subprocess.run([gray_bin, "status", "--address", "127.0.0.1:%d" % head.status_port, "--json"],
                                       check=True, capture_output=True, text=True).stdout)
        prov = [n for n in st["nodes"] if n["node_id"].startswith(provider.node_prefix)][0]
        assert prov["gpus"] == "8xH100" and len(prov["gpu_devices"]) == 8
        out = subprocess.run([gray_bin, "status", "--address", "127.0.0.1:%d" % head.status_port],
                             check=True, capture_output=True, text=True).stdout
        assert out.count("GPU ") >= 8 and "H100" in out, out
    finally:
        if provider:
            provider.stop()
        head.stop()
