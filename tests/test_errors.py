"""Errors reach the client as the exception types stock Ray raises."""

import os
import signal

import pytest


def test_task_exception_types(ray_client):
    ray = ray_client

    @ray.remote
    def boom():
        return 1 / 0

    ref = boom.remote()
    with pytest.raises(ZeroDivisionError):
        ray.get(ref)
    with pytest.raises(ray.exceptions.RayTaskError) as info:
        ray.get(ref)
    text = str(info.value)
    assert "ZeroDivisionError" in text
    assert "boom" in text
    assert "Traceback" in text or "line" in text


def test_custom_exception_and_dependent_task(ray_client):
    ray = ray_client

    class MyError(Exception):
        pass

    @ray.remote
    def fail():
        raise MyError("custom message")

    @ray.remote
    def use(x):
        return x

    with pytest.raises(MyError, match="custom message"):
        ray.get(use.remote(fail.remote()))


def test_async_get_error(ray_client):
    ray = ray_client

    @ray.remote
    def boom():
        raise ValueError("async boom")

    with pytest.raises(ValueError, match="async boom"):
        boom.remote().future().result(timeout=30)


def test_bad_pickle_argument_keeps_server_up(ray_client):
    ray = ray_client

    class Unloadable:
        def __reduce__(self):
            return (os.path.join, ("a", 1))  # join("a", 1) raises TypeError on load

    @ray.remote
    def f(x):
        return "loaded"

    with pytest.raises(Exception):
        ray.get(f.remote(Unloadable()), timeout=60)

    @ray.remote
    def ok():
        return "still serving"

    assert ray.get(ok.remote()) == "still serving"


def test_unknown_object_id(ray_client):
    ray = ray_client
    from ray.util.client.common import ClientObjectRef

    bogus = ClientObjectRef(b"\x01" * 28)
    with pytest.raises(ValueError, match="not found"):
        ray.get(bogus, timeout=5)


def test_retry_when_worker_dies(ray_client, tmp_path):
    ray = ray_client
    marker = str(tmp_path / "died-once")

    @ray.remote(max_retries=2)
    def die_once(path):
        if not os.path.exists(path):
            open(path, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return "recovered"

    assert ray.get(die_once.remote(marker)) == "recovered"

    @ray.remote(max_retries=0)
    def always_die():
        os.kill(os.getpid(), signal.SIGKILL)

    with pytest.raises(ray.exceptions.WorkerCrashedError):
        ray.get(always_die.remote())


def test_retry_exceptions(ray_client, tmp_path):
    ray = ray_client
    counter = str(tmp_path / "count")

    @ray.remote(max_retries=3, retry_exceptions=True)
    def flaky(path):
        n = int(open(path).read()) if os.path.exists(path) else 0
        with open(path, "w") as f:
            f.write(str(n + 1))
        if n < 2:
            raise RuntimeError("flaky %d" % n)
        return n

    assert ray.get(flaky.remote(counter)) == 2

    @ray.remote(max_retries=3)
    def no_retry(path):
        with open(path, "a") as f:
            f.write("x")
        raise RuntimeError("once")

    once = str(tmp_path / "once")
    with pytest.raises(RuntimeError):
        ray.get(no_retry.remote(once))
    assert open(once).read() == "x"


def test_cancel_queued_and_running(ray_client):
    ray = ray_client
    import time

    @ray.remote
    def sleeper():
        time.sleep(30)
        return "finished"

    running = sleeper.remote()
    time.sleep(1.0)
    ray.cancel(running)
    with pytest.raises((ray.exceptions.TaskCancelledError, ray.exceptions.RayTaskError)):
        ray.get(running, timeout=20)

    @ray.remote(num_cpus=4)
    def hog():
        time.sleep(30)

    blocker = hog.remote()
    queued = sleeper.remote()
    ray.cancel(queued)
    with pytest.raises(ray.exceptions.TaskCancelledError):
        ray.get(queued, timeout=20)
    ray.cancel(blocker, force=True)
    with pytest.raises(ray.exceptions.TaskCancelledError):
        ray.get(blocker, timeout=20)
