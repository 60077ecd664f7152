"""Native-mode workloads, run as a stock driver: ray.init(address=ADDRESS).

    python bench/native_workload.py HOST:PORT [--json out.json] [--scale 1.0]

Prints and writes a list of {"name", "value", "unit"}; higher is better.
"""

import argparse
import json
import time

import numpy as np
import ray


def timed(fn, n):
    t = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("address")
    ap.add_argument("--json")
    ap.add_argument("--scale", type=float, default=1.0)
    a = ap.parse_args()
    ray.init(address=a.address, logging_level="ERROR")
    s = a.scale

    @ray.remote
    def nop():
        return None

    @ray.remote
    class Actor:
        def f(self):
            return None

    ray.get([nop.remote() for _ in range(200)])  # warm the worker pool
    out = []

    n = int(2000 * s)
    out.append({"name": "tasks (submit and get, per s)", "unit": "1/s",
                "value": timed(lambda: ray.get([nop.remote() for _ in range(n)]), n)})

    n = int(300 * s)
    def one_by_one():
        for _ in range(n):
            ray.get(nop.remote())
    out.append({"name": "task round trips (sequential, per s)", "unit": "1/s", "value": timed(one_by_one, n)})

    actor = Actor.remote()
    ray.get(actor.f.remote())
    n = int(1000 * s)
    def sync_calls():
        for _ in range(n):
            ray.get(actor.f.remote())
    out.append({"name": "actor calls sync (per s)", "unit": "1/s", "value": timed(sync_calls, n)})
    n = int(5000 * s)
    out.append({"name": "actor calls async batch (per s)", "unit": "1/s",
                "value": timed(lambda: ray.get([actor.f.remote() for _ in range(n)]), n)})

    n = int(2000 * s)
    out.append({"name": "put calls small (per s)", "unit": "1/s",
                "value": timed(lambda: [ray.put(i) for i in range(n)], n)})

    arr = np.ones(100 * 1024 * 1024, dtype=np.uint8)
    reps = max(1, int(10 * s))
    refs = []
    def puts():
        for _ in range(reps):
            refs.append(ray.put(arr))
    gb = reps * arr.nbytes / 1e9
    out.append({"name": "put 100 MB (GB/s)", "unit": "GB/s", "value": timed(puts, gb)})
    def gets():
        for r in refs:
            x = ray.get(r)
            assert x.nbytes == arr.nbytes
    out.append({"name": "get 100 MB from plasma (GB/s)", "unit": "GB/s", "value": timed(gets, gb)})
    del refs

    @ray.remote
    def produce():
        return np.ones(100 * 1024 * 1024, dtype=np.uint8)
    reps = max(1, int(5 * s))
    def task_returns():
        for _ in range(reps):
            assert ray.get(produce.remote()).nbytes == 100 * 1024 * 1024
    out.append({"name": "task returning 100 MB (GB/s)", "unit": "GB/s", "value": timed(task_returns, reps * 0.1048576)})

    ray.shutdown()
    for r in out:
        print("%-40s %12.2f %s" % (r["name"], r["value"], r["unit"]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f)


if __name__ == "__main__":
    main()
