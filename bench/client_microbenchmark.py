"""The Ray Client microbenchmark workloads (same definitions as
ray._private.ray_client_microbenchmark), run against any ray:// address.

    python bench/client_microbenchmark.py ray://127.0.0.1:10001 [--filter NAME] [--json OUT]

Each metric: 1 s warm-up, then ROUNDS rounds of ROUND_S seconds; the value is
multiplier * calls / elapsed per round, reported as mean and standard deviation,
exactly like Ray's timeit helper (minus its 10 s idle sleep before each metric).
"""

import argparse
import json
import sys
import time

import numpy as np

ROUNDS = 4
ROUND_S = 2.0


def timeit(name, fn, multiplier=1, progress=None):
    start = time.perf_counter()
    count = 0
    while time.perf_counter() - start < 1:
        fn()
        count += 1
    step = count // 10 + 1
    stats = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        count = 0
        while time.perf_counter() - start < ROUND_S:
            for _ in range(step):
                fn()
            count += step
        stats.append(multiplier * count / (time.perf_counter() - start))
        if progress:
            progress()
    return name, float(np.mean(stats)), float(np.std(stats))


def bench_get_calls(ray):
    value = ray.put(0)
    yield "client: get calls", lambda: ray.get(value), 1


def bench_put_calls(ray):
    yield "client: put calls", lambda: ray.put(0), 1


def bench_put_large(ray):
    arr = np.zeros(100 * 1024 * 1024, dtype=np.int64)
    yield "client: put gigabytes", lambda: ray.put(arr), 8 * 0.1


def bench_remote_put_calls(ray):
    @ray.remote
    def do_put_small():
        for _ in range(100):
            ray.put(0)

    yield "client: tasks and put batch", lambda: ray.get([do_put_small.remote() for _ in range(10)]), 1000


def bench_tasks_and_get_batch(ray):
    @ray.remote
    def small_value():
        return b"ok"

    yield "client: tasks and get batch", lambda: ray.get([small_value.remote() for _ in range(1000)]), 1


def bench_simple_actor(ray):
    @ray.remote(num_cpus=0)
    class Actor:
        def small_value(self):
            return b"ok"

    a = Actor.remote()
    yield "client: 1:1 actor calls sync", lambda: ray.get(a.small_value.remote()), 1
    yield "client: 1:1 actor calls async", lambda: ray.get([a.small_value.remote() for _ in range(1000)]), 1000
    c = Actor.options(max_concurrency=16).remote()
    yield "client: 1:1 actor calls concurrent", lambda: ray.get([c.small_value.remote() for _ in range(1000)]), 1000


def latency(name, fn, n=300):
    """Round-trip latency percentiles of fn in milliseconds (lower is better)."""
    for _ in range(20):
        fn()
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    return [
        {"name": name + " p50 (ms)", "mean": samples[len(samples) // 2], "sd": 0.0, "lower_is_better": True},
        {"name": name + " p99 (ms)", "mean": samples[int(len(samples) * 0.99) - 1], "sd": 0.0, "lower_is_better": True},
    ]


def bench_task_latency(ray):
    @ray.remote
    def noop():
        return None

    yield "latency: task round trip", lambda: ray.get(noop.remote()), "latency"


BENCHES = [
    bench_get_calls,
    bench_put_calls,
    bench_put_large,
    bench_remote_put_calls,
    bench_tasks_and_get_batch,
    bench_simple_actor,
    bench_task_latency,
]


def run(address, name_filter=None, log=print):
    import ray

    ray.init(address, logging_level="WARNING")
    results = []
    try:
        for bench in BENCHES:
            try:
                for name, fn, mult in bench(ray):
                    if name_filter and name_filter not in name:
                        continue
                    try:
                        if mult == "latency":
                            for r in latency(name, fn):
                                log("%s %.3f" % (r["name"], r["mean"]))
                                results.append(r)
                            continue
                        r = timeit(name, fn, mult)
                        log("%s per second %.2f +- %.2f" % r)
                        results.append({"name": r[0], "mean": r[1], "sd": r[2]})
                    except Exception as e:  # noqa: BLE001 - report and go on
                        log("%s FAILED: %r" % (name, e))
                        results.append({"name": name, "error": repr(e)})
            except Exception as e:  # noqa: BLE001
                log("%s setup FAILED: %r" % (bench.__name__, e))
    finally:
        ray.shutdown()
    return results


def main():
    p = argparse.ArgumentParser()
    p.add_argument("address")
    p.add_argument("--filter")
    p.add_argument("--json")
    a = p.parse_args()
    results = run(a.address, a.filter, log=lambda s: print(s, flush=True))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
