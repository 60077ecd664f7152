"""The raylet's Python worker pool: prestart, reuse, idle reaping and
replacement of crashed workers, observed through the status endpoint."""

import collections
import json
import os
import signal
import time
import urllib.request

import pytest

from conftest import Pool, Provider, wait_for


@pytest.fixture(scope="module")
def reaping_pool(gray_bin):
    p = Pool(gray_bin, num_cpus=3, extra=["--prestart-workers", "1", "--idle-worker-timeout", "1s"])
    yield p
    p.stop()


def workers(pool):
    url = "http://127.0.0.1:%d/api/gray/status" % pool.status_port
    with urllib.request.urlopen(url) as r:
        return [w for w in json.load(r)["workers"] or [] if not w["dedicated"]]


def test_prestart_reuse_reap_and_replace(reaping_pool):
    import ray

    pool = reaping_pool
    first = wait_for(lambda: [w for w in workers(pool) if w["idle"]])
    assert first and len(first) == 1  # one prestarted worker

    ray.init("ray://" + pool.address)
    try:

        @ray.remote
        def pid():
            return os.getpid()

        # Sequential tasks reuse the warm worker.
        assert {ray.get(pid.remote()) for _ in range(5)} == {first[0]["pid"]}

        @ray.remote
        def busy():
            time.sleep(1.5)
            return os.getpid()

        pids = set(ray.get([busy.remote() for _ in range(3)]))
        assert len(pids) == 3  # the pool grew to run three at once
        # Surplus idle workers are reaped back to the prestart count.
        assert wait_for(lambda: len(workers(pool)) == 1)

        # A crashed idle worker is replaced.
        (survivor,) = workers(pool)
        os.kill(survivor["pid"], signal.SIGKILL)
        replaced = wait_for(lambda: [w for w in workers(pool) if w["idle"] and w["pid"] != survivor["pid"]])
        assert replaced
        assert ray.get(pid.remote()) == replaced[0]["pid"]
    finally:
        ray.shutdown()


def test_back_to_back_tasks_reuse_one_worker(gray_bin):
    """A 1-CPU provider running a burst of tasks uses its one warm worker for
    all of them: the worker is back in the pool before the CPU is free for
    the next task (else the next task could find no idle worker and start a
    new Python process, a second of CPU, for nothing)."""
    import ray

    head = Pool(gray_bin, num_cpus=0)
    provider = None
    try:
        provider = Provider(gray_bin, head, num_cpus=1)
        ray.init("ray://" + head.address)
        try:
            deadline = time.time() + 60
            while ray.cluster_resources().get("CPU", 0) < 1 and time.time() < deadline:
                time.sleep(0.1)

            @ray.remote(num_cpus=1)
            def pid(i):
                return os.getpid()

            pids = collections.Counter(ray.get([pid.remote(i) for i in range(2000)]))
            assert len(pids) == 1, pids
        finally:
            ray.shutdown()
    finally:
        if provider:
            provider.stop()
        head.stop()
