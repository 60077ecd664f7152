"""Ray Client fidelity (issue 17): behaviours where gray differed from a stock
Ray 2.60.0 head serving the same stock client."""

import os
import time

import pytest

from conftest import run_client_script


def test_wait_refuses_duplicate_refs(ray_client):
    """ray.wait's ValueError on the server reaches the client as the failed
    wait request, as with a stock head (item 8)."""
    ray = ray_client
    x = ray.put(1)
    y = ray.put(2)
    with pytest.raises(Exception, match="Client Wait request failed"):
        ray.wait([x, x])
    with pytest.raises(Exception, match="Client Wait request failed"):
        ray.wait([x, y], num_returns=3)
    with pytest.raises(Exception, match="Client Wait request failed"):
        ray.wait([x], num_returns=0)
    assert ray.wait([]) == ([], [])
    ready, rest = ray.wait([x, y], num_returns=2)
    assert sorted(ray.get(ready)) == [1, 2] and rest == []


LOG_LEVELS = """
import logging, os, time
import ray
from ray.util.client import ray as client_ray

ray.init(os.environ["GRAY_ADDRESS"])
records = []
client_ray.worker.log_client.log = lambda level, msg: records.append((level, msg))
client_ray.worker.log_client.set_logstream_level(logging.%s)
time.sleep(1)
x = ray.put("Foo")
assert ray.get(x) == "Foo"
deadline = time.time() + 10
while time.time() < deadline:
    mine = [(l, m) for l, m in records if x.id.hex() in m]
    if any("put" in m for _, m in mine) and any("get" in m for _, m in mine):
        break
    time.sleep(0.1)
print("LEVELS", sorted({l for l, _ in records}))
print("MINE", len([m for _, m in records if x.id.hex() in m]))
ray.shutdown()
"""


def test_server_log_records_follow_the_requested_level(pool):
    """Server log records reach the client's log stream at the level it set,
    as the stock server's handler on the "ray" logger sends them (item 7)."""
    out = run_client_script(pool, LOG_LEVELS % "DEBUG", timeout=60)
    assert out.returncode == 0, out.stderr
    levels = eval(out.stdout.split("LEVELS", 1)[1].splitlines()[0])
    assert 10 in levels, out.stdout
    assert int(out.stdout.split("MINE", 1)[1].split()[0]) >= 2, out.stdout
    # At INFO the server's debug records stay on the server.
    out = run_client_script(pool, LOG_LEVELS % "INFO", timeout=60)
    assert out.returncode == 0, out.stderr
    levels = eval(out.stdout.split("LEVELS", 1)[1].splitlines()[0])
    assert all(level >= 20 or level < 0 for level in levels), out.stdout
    assert "MINE 0" in out.stdout, out.stdout


def test_omp_num_threads_follows_num_cpus(ray_client):
    """Workers get OMP_NUM_THREADS from the CPUs of their task or actor unless
    the runtime_env sets it (item 9)."""
    ray = ray_client

    @ray.remote
    def omp():
        return os.environ.get("OMP_NUM_THREADS")

    @ray.remote
    class Actor:
        def omp(self):
            return os.environ.get("OMP_NUM_THREADS")

    assert ray.get(omp.remote()) == "1"
    assert ray.get(omp.options(num_cpus=2).remote()) == "2"
    assert ray.get(omp.options(num_cpus=3.5).remote()) == "3"
    assert ray.get(omp.options(num_cpus=0.5).remote()) == "1"
    pinned = omp.options(num_cpus=2, runtime_env={"env_vars": {"OMP_NUM_THREADS": "7"}})
    assert ray.get(pinned.remote()) == "7"
    assert ray.get(Actor.remote().omp.remote()) == "1"
    assert ray.get(Actor.options(num_cpus=2).remote().omp.remote()) == "2"
