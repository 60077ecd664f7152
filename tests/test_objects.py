"""Large objects, chunking, reference release and reconnects."""

import socket
import threading
import time

import pytest


def test_large_put_get_chunked(ray_client):
    ray = ray_client
    import numpy as np

    arr = np.arange(40 * 1024 * 1024 // 8, dtype=np.int64)  # 40 MiB: 8+ chunks
    ref = ray.put(arr)
    back = ray.get(ref)
    assert back.shape == arr.shape and (back == arr).all()

    @ray.remote
    def total(a):
        return int(a.sum()), a.nbytes

    assert ray.get(total.remote(ref)) == (int(arr.sum()), arr.nbytes)

    @ray.remote
    def make(n):
        return np.ones(n, dtype=np.uint8)

    big = ray.get(make.remote(12 * 1024 * 1024))
    assert big.nbytes == 12 * 1024 * 1024 and big.sum() == big.nbytes


@pytest.mark.skipif("not config.getoption('--run-huge', default=False)")
def test_gigabyte_put_get(ray_client):
    ray = ray_client
    import numpy as np

    arr = np.ones(1024 * 1024 * 1024 // 8, dtype=np.int64)
    ref = ray.put(arr)
    del arr
    back = ray.get(ref)
    assert back.nbytes == 1024 * 1024 * 1024 and int(back[-1]) == 1


def _status(pool):
    import json
    import urllib.request

    with urllib.request.urlopen("http://127.0.0.1:%d/api/gray/status" % pool.status_port) as r:
        return json.load(r)


def test_release_frees_objects(ray_client, pool):
    ray = ray_client
    import gc

    before = _status(pool)["object_bytes"]
    refs = [ray.put(b"x" * (1 << 20)) for _ in range(8)]
    assert _status(pool)["object_bytes"] >= before + 8 * (1 << 20)
    del refs
    gc.collect()
    deadline = time.time() + 10
    while time.time() < deadline and _status(pool)["object_bytes"] > before + (1 << 20):
        time.sleep(0.1)
    assert _status(pool)["object_bytes"] <= before + (1 << 20)


class Proxy:
    """A TCP proxy whose connections the test can cut."""

    def __init__(self, target_port):
        self.target = ("127.0.0.1", target_port)
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        self.conns = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            u = socket.create_connection(self.target)
            with self.lock:
                self.conns += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while True:
                d = a.recv(1 << 16)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def close(self):
        self.ls.close()
        self.cut()


def test_reconnect_loses_nothing(pool):
    import ray

    proxy = Proxy(pool.port)
    ray.init("ray://127.0.0.1:%d" % proxy.port)
    try:

        @ray.remote
        def slow_square(x):
            time.sleep(0.5)
            return x * x

        refs = [slow_square.remote(i) for i in range(8)]
        kept = ray.put("kept across reconnect")
        time.sleep(0.2)
        proxy.cut()
        more = [slow_square.remote(i) for i in range(8, 12)]
        assert ray.get(refs + more, timeout=120) == [i * i for i in range(12)]
        assert ray.get(kept) == "kept across reconnect"
    finally:
        ray.shutdown()
        proxy.close()


@pytest.fixture(scope="module")
def small_pool(gray_bin):
    from conftest import Pool

    p = Pool(gray_bin, num_cpus=1, extra=["--object-store-memory", str(32 << 20), "--prestart-workers", "0", "--no-spill"])
    yield p
    p.stop()


@pytest.fixture(scope="module")
def spilling_pool(gray_bin):
    from conftest import Pool

    p = Pool(gray_bin, num_cpus=1, extra=["--object-store-memory", str(32 << 20), "--prestart-workers", "0"])
    yield p
    p.stop()


def test_full_store_spills_to_disk(spilling_pool):
    """Objects beyond the store's memory spill to disk and come back
    intact, as in Ray; memory use stays within the store's capacity."""
    import hashlib

    import ray

    ray.init("ray://" + spilling_pool.address)
    try:
        values = [bytes([i]) * (12 << 20) for i in range(6)]  # 72 MiB into a 32 MiB store
        refs = [ray.put(v) for v in values]
        st = _status(spilling_pool)
        assert st["spilled_bytes"] > 0 and st["object_bytes"] <= 32 << 20
        big = ray.put(b"q" * (48 << 20))  # larger than the whole store
        for v, r in zip(values, refs):
            assert hashlib.sha256(ray.get(r)).digest() == hashlib.sha256(v).digest()

        @ray.remote
        def size(x):
            return len(x)

        assert ray.get(size.remote(big)) == 48 << 20
        assert _status(spilling_pool)["object_bytes"] <= 32 << 20
        del refs, big
    finally:
        ray.shutdown()


def test_object_store_full_is_a_clear_error(small_pool):
    import ray

    ray.init("ray://" + small_pool.address)
    try:
        with pytest.raises(ray.exceptions.ObjectStoreFullError):
            ray.put(b"x" * (48 << 20))
        # The server keeps serving and lost nothing.
        small = ray.put("small")
        assert ray.get(small) == "small"
    finally:
        ray.shutdown()


def _wait_bytes(pool, at_most, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if _status(pool)["object_bytes"] <= at_most:
            return True
        time.sleep(0.1)
    return False


def test_shutdown_and_disconnect_release_session_objects(small_pool):
    from conftest import run_client_script

    before = _status(small_pool)["object_bytes"]
    src = """
import os, ray
ray.init(os.environ["GRAY_ADDRESS"])
refs = [ray.put(b"y" * (4 << 20)) for _ in range(3)]
print("PUT", flush=True)
if os.environ.get("HARD_EXIT"):
    os._exit(0)  # no ray.shutdown(): the server cleans up after the grace period
ray.shutdown()
"""
    out = run_client_script(small_pool, src)
    assert out.returncode == 0 and "PUT" in out.stdout, out.stderr
    assert _wait_bytes(small_pool, before)
    out = run_client_script(small_pool, src, env={"HARD_EXIT": "1", "RAY_CLIENT_RECONNECT_GRACE_PERIOD": "1"})
    assert "PUT" in out.stdout, out.stderr
    assert _wait_bytes(small_pool, before)
