"""Cluster info, runtime context, internal KV, runtime_env and logs."""

import os
import subprocess
import sys

from conftest import run_client_script


def test_cluster_and_available_resources(ray_client):
    ray = ray_client
    total = ray.cluster_resources()
    assert total["CPU"] == 4
    assert total["memory"] > 0 and total["object_store_memory"] > 0
    assert any(k.startswith("node:") and k != "node:__internal_head__" for k in total)
    avail = ray.available_resources()
    assert 0 <= avail["CPU"] <= 4


def test_nodes(ray_client):
    ray = ray_client
    nodes = ray.nodes()
    assert len(nodes) == 1
    n = nodes[0]
    assert n["Alive"] is True
    assert len(bytes.fromhex(n["NodeID"])) == 28
    assert n["Resources"]["CPU"] == 4


def test_runtime_context(ray_client):
    ray = ray_client
    ctx = ray.get_runtime_context()
    job = ctx.get_job_id()
    assert len(bytes.fromhex(job)) == 4
    assert len(bytes.fromhex(ctx.get_node_id())) == 28
    assert ctx.namespace

    @ray.remote
    def inner():
        c = ray.get_runtime_context()
        return c.get_job_id(), c.namespace

    assert ray.get(inner.remote()) == (job, ctx.namespace)


def test_internal_kv(ray_client):
    from ray.experimental import internal_kv as kv

    assert kv._internal_kv_get(b"missing") is None
    assert kv._internal_kv_put(b"k1", b"v1") is False
    assert kv._internal_kv_put(b"k1", b"v2", overwrite=False) is True
    assert kv._internal_kv_get(b"k1") == b"v1"
    assert kv._internal_kv_put(b"k1", b"v3") is True
    assert kv._internal_kv_get(b"k1") == b"v3"
    assert kv._internal_kv_exists(b"k1")
    kv._internal_kv_put(b"k2", b"x", namespace=b"other")
    assert kv._internal_kv_get(b"k2") is None
    assert kv._internal_kv_get(b"k2", namespace=b"other") == b"x"
    kv._internal_kv_put(b"pre/a", b"1")
    kv._internal_kv_put(b"pre/b", b"2")
    assert sorted(kv._internal_kv_list(b"pre/")) == [b"pre/a", b"pre/b"]
    assert kv._internal_kv_del(b"pre/", del_by_prefix=True) == 2
    assert kv._internal_kv_del(b"k1") == 1
    assert not kv._internal_kv_exists(b"k1")


def test_runtime_env_env_vars(ray_client):
    ray = ray_client

    @ray.remote(runtime_env={"env_vars": {"GRAY_TEST_VAR": "hello"}})
    def read():
        return os.environ.get("GRAY_TEST_VAR")

    assert ray.get(read.remote()) == "hello"

    @ray.remote
    def read_plain():
        return os.environ.get("GRAY_TEST_VAR")

    assert ray.get(read_plain.remote()) is None


def test_working_dir(pool, tmp_path):
    (tmp_path / "mymod.py").write_text("VALUE = 'from working dir'\n")
    (tmp_path / "data.txt").write_text("payload")
    src = f"""
import os, ray
ray.init(os.environ["GRAY_ADDRESS"], runtime_env={{"working_dir": {str(tmp_path)!r}}})

@ray.remote
def f():
    import mymod
    return mymod.VALUE, open("data.txt").read()

print(ray.get(f.remote()))
"""
    out = run_client_script(pool, src)
    assert out.returncode == 0, out.stderr
    assert "('from working dir', 'payload')" in out.stdout


def test_worker_output_reaches_client(pool):
    src = """
import os, ray
ray.init(os.environ["GRAY_ADDRESS"])

@ray.remote
def talk():
    print("hello from the worker")
    import sys
    print("to stderr", file=sys.stderr)
    return 1

ray.get(talk.remote())
import time; time.sleep(1.0)
"""
    out = run_client_script(pool, src)
    assert out.returncode == 0, out.stderr
    assert "(talk pid=" in out.stdout
    assert "hello from the worker" in out.stdout
    assert "to stderr" in out.stderr


def test_two_clients_isolated(pool):
    src = """
import os, ray
ray.init(os.environ["GRAY_ADDRESS"], namespace=os.environ["NS"])
ref = ray.put(os.environ["NS"])
print("NS", ray.get_runtime_context().namespace, ray.get(ref), ref.hex())
"""
    a = run_client_script(pool, src, env={"NS": "alpha"})
    b = run_client_script(pool, src, env={"NS": "beta"})
    assert a.returncode == 0, a.stderr
    assert b.returncode == 0, b.stderr
    assert "NS alpha alpha" in a.stdout
    assert "NS beta beta" in b.stdout


def test_idle_client_survives_keepalive_pings(pool):
    """The stock client pings every 30 s even when idle; a server enforcing
    gRPC's default policy would answer the third ping with GOAWAY. Idle past
    that point and check the session still works."""
    src = """
import os, time, ray
ray.init(os.environ["GRAY_ADDRESS"])
ref = ray.put("before idle")
time.sleep(100)

@ray.remote
def after():
    return "after idle"

print(ray.get(ref), "/", ray.get(after.remote()))
"""
    out = run_client_script(pool, src, timeout=240)
    assert out.returncode == 0, out.stderr
    assert "before idle / after idle" in out.stdout
    assert "GOAWAY" not in out.stderr and "Attempting to reconnect" not in out.stderr
